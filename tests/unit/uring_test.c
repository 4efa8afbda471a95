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

static void test_busy(void)
{
    CHECK(r.sq_entries == 8, "expected an 8-entry SQ, got %u", r.sq_entries);
    struct ring_op ops[24] = {0};
    int seen[24] = {0};
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
    int got = 0;
    while (got < 24) {
        CHECK(ring_submit_and_wait(&r, 1) == 0, "io_uring_enter failed");
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&r)) != NULL) {
            struct ring_op *op = (struct ring_op *)(uintptr_t)cqe->user_data;
            CHECK(op >= ops && op < ops + 24, "a completion for an op never sent");
            CHECK(op->busy, "op %d completed twice", (int)(op - ops));
            op->busy = false;
            seen[op - ops]++;
            ring_cqe_seen(&r);
            got++;
        }
    }
    for (int i = 0; i < 24; i++)
        CHECK(seen[i] == 1, "NOP %d completed %d times", i, seen[i]);
    alarm(0);
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
    CHECK(argc == 2, "usage: uring_test full-sq|cq-wrap|probe|busy");
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
    else
        return 2;
    ring_exit(&r);
    printf("ok %s\n", argv[1]);
    return 0;
}
