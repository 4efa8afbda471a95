/*
 * ring.c - the io_uring wrapper described in ring.h.
 *
 * What this file teaches: the submission and completion rings as shared
 * memory, and the memory ordering that makes them work without locks.  The
 * kernel is "the other thread": it reads what we write to the SQ, we read
 * what it writes to the CQ, and the head/tail indexes are the only
 * synchronisation - so they are accessed with C11 atomics (acquire on the
 * index the other side writes, release on the one we write).
 *
 * New in step06.  Try it through the server, or the unit test:
 *     cc -I step06-aio tests/unit/uring_test.c step06-aio/ring.c -o uring_test
 */
#include "ring.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Valgrind's client-request header, when installed (it comes with the
 * valgrind package): RUNNING_ON_VALGRIND is 1 under valgrind, 0 otherwise,
 * and costs a few instructions.  See ring_submit_and_wait(). */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* glibc has no wrappers for these (liburing's job); the raw system calls. */
static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                              unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL,
                        0);
}

static int sys_io_uring_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
{
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
}

/* The indexes shared with the kernel, read and written as atomics. */
static unsigned load_acquire(const unsigned *p)
{
    return atomic_load_explicit((const _Atomic unsigned *)p, memory_order_acquire);
}

static void store_release(unsigned *p, unsigned v)
{
    atomic_store_explicit((_Atomic unsigned *)p, v, memory_order_release);
}

#define RING_PTR(base, off) ((void *)((char *)(base) + (off)))

int ring_init(struct ring *r, unsigned entries, unsigned flags)
{
    *r = (struct ring){.fd = -1};
    /* Under valgrind we wait in poll() (see ring_submit_and_wait()), and a
     * DEFER_TASKRUN ring does not wake a poller: its completions wait for
     * the next io_uring_enter(), which would never come. */
    r->wait_in_poll = RUNNING_ON_VALGRIND != 0;
    if (r->wait_in_poll)
        flags &= ~IORING_SETUP_DEFER_TASKRUN;
    struct io_uring_params p = {.flags = flags};
    int fd = sys_io_uring_setup(entries, &p);
    if (fd < 0)
        return -errno;
    r->fd = fd;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;

    /* Two mappings for the rings (one if the kernel can: SINGLE_MMAP), one
     * for the SQE array.  The offsets inside come from the kernel. */
    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_map_len > r->sq_map_len)
            r->sq_map_len = r->cq_map_len;
        r->cq_map_len = r->sq_map_len;
    }
    r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED)
        goto fail;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED)
            goto fail;
    }
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;

    r->sq_head = RING_PTR(r->sq_map, p.sq_off.head);
    r->sq_tail = RING_PTR(r->sq_map, p.sq_off.tail);
    r->sq_mask = RING_PTR(r->sq_map, p.sq_off.ring_mask);
    r->sq_array = RING_PTR(r->sq_map, p.sq_off.array);
    r->cq_head = RING_PTR(r->cq_map, p.cq_off.head);
    r->cq_tail = RING_PTR(r->cq_map, p.cq_off.tail);
    r->cq_mask = RING_PTR(r->cq_map, p.cq_off.ring_mask);
    r->cqes = RING_PTR(r->cq_map, p.cq_off.cqes);
    /* The SQ is an array of indexes into the SQEs; we always use SQE i at
     * slot i, so fill it once. */
    for (unsigned i = 0; i < r->sq_entries; i++)
        r->sq_array[i] = i;
    r->sqe_tail = *r->sq_tail;
    return 0;
fail:;
    int err = errno;
    ring_exit(r);
    return -err;
}

void ring_exit(struct ring *r)
{
    if (r->sqes != NULL && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_len);
    if (r->cq_map != NULL && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map != NULL && r->sq_map != MAP_FAILED)
        munmap(r->sq_map, r->sq_map_len);
    if (r->fd >= 0)
        close(r->fd);
    *r = (struct ring){.fd = -1};
}

/* Publish the SQEs handed out since the last call (a release store of the
 * tail, after their contents) and say how many the kernel has yet to take:
 * all published ones, not only the new.  io_uring_enter() may take fewer
 * than it is given (out of memory for a request: -EAGAIN), and what it left
 * must go with the next call, or it would wait in the ring for ever. */
static unsigned ring_flush_sq(struct ring *r)
{
    store_release(r->sq_tail, r->sqe_tail);
    return r->sqe_tail - load_acquire(r->sq_head);
}

/*
 * Under valgrind, wait in poll() instead of in io_uring_enter().  Valgrind
 * runs one thread at a time, and lets another run only while a thread is in
 * a system call it knows may block.  Valgrind 3.19 does not count
 * io_uring_enter() as one, so a worker waiting in it would hold every other
 * thread - the acceptor, the signal thread, the other workers - until a
 * completion arrived, and none can arrive: the process hangs.  poll() is
 * known to block, and the ring's fd is readable when completions are
 * waiting (not with DEFER_TASKRUN: ring_init() drops it).  Up to three
 * system calls where one would do, so only under valgrind.
 */
static int ring_wait_in_poll(struct ring *r, unsigned n, unsigned wait_nr)
{
    if (n > 0 && sys_io_uring_enter(r->fd, n, 0, 0) < 0)
        return -errno;
    unsigned ready = load_acquire(r->cq_tail) - *r->cq_head;
    if (ready >= wait_nr)
        return 0;
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
    if (poll(&pfd, 1, -1) < 0)
        return -errno;
    /* Now runs the deferred work and reaps without blocking for long. */
    return sys_io_uring_enter(r->fd, 0, 0, IORING_ENTER_GETEVENTS) < 0 ? -errno : 0;
}

int ring_submit_and_wait(struct ring *r, unsigned wait_nr)
{
    unsigned n = ring_flush_sq(r);
    if (n == 0 && wait_nr == 0)
        return 0;
    if (wait_nr > 0 && r->wait_in_poll)
        return ring_wait_in_poll(r, n, wait_nr);
    int ret =
        sys_io_uring_enter(r->fd, n, wait_nr, wait_nr ? IORING_ENTER_GETEVENTS : 0);
    return ret < 0 ? -errno : 0;
}

struct io_uring_sqe *ring_get_sqe(struct ring *r, struct ring_op *op)
{
    /* Full: submit what is there.  Without SQPOLL the kernel takes every
     * published SQE inside io_uring_enter(), so room is made at once. */
    while (r->sqe_tail - load_acquire(r->sq_head) >= r->sq_entries) {
        int ret = ring_submit_and_wait(r, 0);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            abort(); /* the ring itself is broken: nothing sensible to do */
    }
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & *r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof(*sqe));
    sqe->user_data = (uint64_t)(uintptr_t)op;
    assert(!op->busy); /* one operation per record at a time */
    op->busy = true;
    return sqe;
}

struct io_uring_cqe *ring_peek_cqe(struct ring *r)
{
    unsigned head = *r->cq_head; /* only we write it */
    if (head == load_acquire(r->cq_tail))
        return NULL;
    return &r->cqes[head & *r->cq_mask];
}

void ring_cqe_seen(struct ring *r)
{
    store_release(r->cq_head, *r->cq_head + 1);
}

int ring_probe(struct ring *r, const uint8_t *ops, int n, uint8_t *missing)
{
    size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, len);
    if (probe == NULL)
        return -ENOMEM;
    if (sys_io_uring_register(r->fd, IORING_REGISTER_PROBE, probe, 256) < 0) {
        int err = errno;
        free(probe);
        return -err;
    }
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        if (ops[i] > probe->last_op ||
            !(probe->ops[ops[i]].flags & IO_URING_OP_SUPPORTED)) {
            *missing = ops[i];
            ok = 0;
        }
    }
    free(probe);
    return ok;
}
