/*
 * tests/unit/uring_test.c - the io_uring wrapper (ring.c) of step06,
 * compiled against the step's own ring.c (and log.c, for die()); the
 * linker's --wrap=syscall lets a case make io_uring_enter() refuse:
 *
 *     cc -I step06-aio -Wl,--wrap=syscall tests/unit/uring_test.c \
 *        step06-aio/ring.c step06-aio/log.c -o uring_test
 *
 *   uring_test full-sq  24 NOPs through an 8-entry submission queue:
 *                       ring_get_sqe() submits when the queue is full, and
 *                       every NOP completes once, with its own user_data
 *   uring_test cq-wrap  40 rounds of 4 NOPs through a 4-entry ring: the
 *                       completion queue's head and tail wrap around its
 *                       8 slots again and again; nothing lost or repeated
 *   uring_test probe    NOP and RECVMSG are supported; opcode 255 is not
 *   uring_test busy     the SQ is full and io_uring_enter() takes nothing
 *                       (-EBUSY, as kernels before 5.19 answer while a CQ
 *                       overflow cannot be flushed): ring_get_sqe() must
 *                       neither spin nor overrun; 24 NOPs through 8 entries
 *                       all complete once the kernel takes them again
 *   uring_test backlog-sleep
 *                       8 reads of an empty pipe fill the SQ while the
 *                       kernel refuses, and a NOP waits in the backlog;
 *                       the kernel takes them again: waiting for one
 *                       completion, as the worker does, must submit the
 *                       NOP first (else it waits for the reads for ever)
 *
 * Exit 77 (skipped) where io_uring is not available.
 */
#include "ring.h"
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct ring r;

/* io_uring_enter() calls that submit, answered -EBUSY without entering the
 * kernel: how many are left to refuse (the busy case sets it). */
static int refuse_submissions;
static int refused;

long __real_syscall(long number, ...);

long __wrap_syscall(long number, ...)
{
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == __NR_io_uring_enter && a[1] > 0 && refuse_submissions > 0) {
        refuse_submissions--;
        refused++;
        errno = EBUSY;
        return -1;
    }
    return __real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* Submit count NOPs, each with its own record; wait for them all. */
static void nops(struct ring_op *ops, int count, int *seen)
{
    for (int i = 0; i < count; i++) {
        struct io_uring_sqe *sqe = ring_get_sqe(&r, &ops[i]);
        sqe->opcode = IORING_OP_NOP;
    }
    int got = 0;
    while (got < count) {
        CHECK(ring_submit_and_wait(&r, 1) == 0, "io_uring_enter failed");
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&r)) != NULL) {
            struct ring_op *op = (struct ring_op *)(uintptr_t)cqe->user_data;
            CHECK(op >= ops && op < ops + count, "a completion for an op never sent");
            CHECK(cqe->res == 0, "NOP result %d", cqe->res);
            CHECK(op->busy, "op %d completed twice", (int)(op - ops));
            op->busy = false;
            seen[op - ops]++;
            ring_cqe_seen(&r);
            got++;
        }
    }
}

static void test_full_sq(void)
{
    CHECK(r.sq_entries == 8, "expected an 8-entry SQ, got %u", r.sq_entries);
    struct ring_op ops[24] = {0};
    int seen[24] = {0};
    nops(ops, 24, seen);
    for (int i = 0; i < 24; i++)
        CHECK(seen[i] == 1, "NOP %d completed %d times", i, seen[i]);
}

static void test_cq_wrap(void)
{
    unsigned start = *r.cq_head;
    for (int round = 0; round < 40; round++) {
        struct ring_op ops[4] = {0};
        int seen[4] = {0};
        nops(ops, 4, seen);
        for (int i = 0; i < 4; i++)
            CHECK(seen[i] == 1, "round %d: NOP %d completed %d times", round, i,
                  seen[i]);
    }
    CHECK(*r.cq_head - start == 160, "the CQ head moved %u, expected 160",
          *r.cq_head - start);
    CHECK(160 > 2 * r.cq_entries, "not enough rounds to wrap a %u-entry CQ",
          r.cq_entries);
}

/* Submit and reap until each of the n ops (all busy) has completed, exactly
 * once, with result res. */
static void reap_each_once(struct ring_op *ops, int n, int res)
{
    for (int got = 0; got < n;) {
        CHECK(ring_submit_and_wait(&r, 1) == 0, "io_uring_enter failed");
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&r)) != NULL) {
            struct ring_op *op = (struct ring_op *)(uintptr_t)cqe->user_data;
            CHECK(op >= ops && op < ops + n, "a completion for an op never sent");
            CHECK(op->busy, "op %d completed twice", (int)(op - ops));
            CHECK(cqe->res == res, "op %d: result %d, expected %d", (int)(op - ops),
                  cqe->res, res);
            op->busy = false;
            ring_cqe_seen(&r);
            got++;
        }
    }
}

static void test_busy(void)
{
    CHECK(r.sq_entries == 8, "expected an 8-entry SQ, got %u", r.sq_entries);
    struct ring_op ops[24] = {0};
    /* A ring_get_sqe() that retries until the kernel takes something spins
     * here for ever: the alarm ends it. */
    alarm(10);
    refuse_submissions = 1000000;
    for (int i = 0; i < 24; i++) {
        struct io_uring_sqe *sqe = ring_get_sqe(&r, &ops[i]);
        sqe->opcode = IORING_OP_NOP;
    }
    CHECK(refused > 0 && refused < 100,
          "the kernel refused %d submissions: expected a few, not a spin", refused);
    refuse_submissions = 0; /* it takes them again: every NOP completes once */
    reap_each_once(ops, 24, 0);
    alarm(0);
}

/* The alarm: ring_submit_and_wait() went to sleep with the NOP still in
 * the backlog.  Only write() and _exit() are safe in a signal handler. */
static void on_backlog_alarm(int sig)
{
    (void)sig;
    static const char msg[] =
        "uring_test backlog-sleep: still waiting after 10 s: ring_submit_and_wait() "
        "slept on the SQ's reads of an empty pipe while the NOP waited in the "
        "backlog, never submitted\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing else to do */
    }
    _exit(1);
}

static void test_backlog_sleep(void)
{
    CHECK(r.sq_entries == 8, "expected an 8-entry SQ, got %u", r.sq_entries);
    int pipefd[2];
    CHECK(pipe(pipefd) == 0, "pipe: %s", strerror(errno));
    /* 8 reads that complete only when we write (quiet sockets, in the
     * server), in the SQ while the kernel refuses; the NOP after them (the
     * mailbox read) finds the SQ full and goes to the backlog. */
    struct ring_op reads[8] = {0}, nop = {0};
    char bytes[8];
    refuse_submissions = 1000000;
    for (int i = 0; i < 8; i++)
        ring_prep_read(&r, &reads[i], pipefd[0], &bytes[i], 1);
    ring_get_sqe(&r, &nop)->opcode = IORING_OP_NOP;
    CHECK(refused > 0, "the kernel was never asked to take the full SQ");
    CHECK(r.backlog_len == 1, "expected the NOP in the backlog, found %u SQEs there",
          r.backlog_len);
    /* While it refuses, a wait returns at once, for the caller to reap. */
    signal(SIGALRM, on_backlog_alarm);
    alarm(10);
    int ret = ring_submit_and_wait(&r, 1);
    CHECK(ret == -EBUSY, "a refused submission returned %d, expected -EBUSY", ret);
    CHECK(r.backlog_len == 1, "the refusal lost the backlog: %u SQEs", r.backlog_len);
    refuse_submissions = 0;

    while (nop.busy) {
        CHECK(ring_submit_and_wait(&r, 1) == 0, "io_uring_enter failed");
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&r)) != NULL) {
            CHECK(cqe->user_data == (uintptr_t)&nop,
                  "a read of the empty pipe completed (res %d) before the NOP",
                  cqe->res);
            CHECK(cqe->res == 0, "NOP result %d", cqe->res);
            nop.busy = false;
            ring_cqe_seen(&r);
        }
    }
    CHECK(r.backlog_len == 0, "%u SQEs still in the backlog", r.backlog_len);

    /* Every read went in too, once: a byte each completes them all. */
    CHECK(write(pipefd[1], "abcdefgh", 8) == 8, "write to the pipe: %s",
          strerror(errno));
    reap_each_once(reads, 8, 1);
    alarm(0);
    close(pipefd[0]);
    close(pipefd[1]);
}

static void test_probe(void)
{
    static const uint8_t good[] = {IORING_OP_NOP, IORING_OP_RECVMSG};
    static const uint8_t bad[] = {IORING_OP_NOP, 255};
    uint8_t missing = 0;
    CHECK(ring_probe(&r, good, 2, &missing) == 1,
          "NOP and RECVMSG should be supported");
    CHECK(ring_probe(&r, bad, 2, &missing) == 0 && missing == 255,
          "opcode 255 should be missing (got %u)", missing);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: uring_test full-sq|cq-wrap|probe|busy|backlog-sleep");
    unsigned entries = strcmp(argv[1], "cq-wrap") == 0 ? 4 : 8;
    int ret = ring_init(&r, entries, 0, 0);
    if (ret < 0) {
        printf("skip: io_uring is not available: %s\n", strerror(-ret));
        return 77;
    }
    if (strcmp(argv[1], "full-sq") == 0)
        test_full_sq();
    else if (strcmp(argv[1], "cq-wrap") == 0)
        test_cq_wrap();
    else if (strcmp(argv[1], "probe") == 0)
        test_probe();
    else if (strcmp(argv[1], "busy") == 0)
        test_busy();
    else if (strcmp(argv[1], "backlog-sleep") == 0)
        test_backlog_sleep();
    else
        return 2;
    ring_exit(&r);
    printf("ok %s\n", argv[1]);
    return 0;
}
