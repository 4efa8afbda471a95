/*
 * tests/unit/uring_test.c - the io_uring wrapper (ring.c) of step06,
 * compiled against the step's own ring.c:
 *
 *     cc -I step06-aio tests/unit/uring_test.c step06-aio/ring.c -o uring_test
 *
 *   uring_test full-sq  24 NOPs through an 8-entry submission queue:
 *                       ring_get_sqe() submits when the queue is full, and
 *                       every NOP completes once, with its own user_data
 *   uring_test cq-wrap  40 rounds of 4 NOPs through a 4-entry ring: the
 *                       completion queue's head and tail wrap around its
 *                       8 slots again and again; nothing lost or repeated
 *   uring_test probe    NOP and RECVMSG are supported; opcode 255 is not
 *
 * Exit 77 (skipped) where io_uring is not available.
 */
#include "ring.h"
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static struct ring r;

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
    CHECK(argc == 2, "usage: uring_test full-sq|cq-wrap|probe");
    unsigned entries = strcmp(argv[1], "full-sq") == 0 ? 8 : 4;
    int ret = ring_init(&r, entries, 0);
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
    else
        return 2;
    ring_exit(&r);
    printf("ok %s\n", argv[1]);
    return 0;
}
