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
 * New in step06.  Try it through the server, or the unit test (its header
 * lists the cases):
 *     cc -I step06-aio -Wl,--wrap=syscall tests/unit/uring_test.c \
 *        step06-aio/ring.c step06-aio/log.c -o uring_test
 */
#include "ring.h"
#include "log.h"

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

int ring_init(struct ring *r, unsigned sq_entries, unsigned cq_entries, unsigned flags)
{
    *r = (struct ring){.fd = -1};
    /* Under valgrind we wait in poll() (see ring_submit_and_wait()), and a
     * DEFER_TASKRUN ring does not wake a poller: its completions wait for
     * the next io_uring_enter(), which would never come. */
    r->wait_in_poll = RUNNING_ON_VALGRIND != 0;
    if (r->wait_in_poll)
        flags &= ~IORING_SETUP_DEFER_TASKRUN;
    struct io_uring_params p = {.flags = flags};
    if (cq_entries > 0) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    int fd = sys_io_uring_setup(sq_entries, &p);
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
    free(r->backlog);
    *r = (struct ring){.fd = -1};
}

static bool ring_sq_full(const struct ring *r)
{
    return r->sqe_tail - load_acquire(r->sq_head) >= r->sq_entries;
}

/* The next slot of the SQ (the caller knows it is not full). */
static struct io_uring_sqe *ring_next_slot(struct ring *r)
{
    return &r->sqes[r->sqe_tail++ & *r->sq_mask];
}

/* Publish the SQEs handed out since the last call (a release store of the
 * tail, after their contents) and say how many the kernel has yet to take:
 * all published ones, not only the new.  io_uring_enter() may take fewer
 * than it is given (out of memory for a request: -EAGAIN), and what it left
 * must go with the next call, or it would wait in the ring for ever.  SQEs
 * waiting in the backlog move into the SQ first, as far as there is room. */
static unsigned ring_flush_sq(struct ring *r)
{
    unsigned moved = 0;
    while (moved < r->backlog_len && !ring_sq_full(r))
        *ring_next_slot(r) = r->backlog[moved++];
    if (moved > 0) {
        memmove(r->backlog, r->backlog + moved,
                (r->backlog_len - moved) * sizeof(*r->backlog));
        r->backlog_len -= moved;
    }
    store_release(r->sq_tail, r->sqe_tail);
    return r->sqe_tail - load_acquire(r->sq_head);
}

/*
 * Under valgrind, wait in poll() instead of in io_uring_enter().  Valgrind
 * runs one thread at a time, and lets another run only while a thread is in
 * a system call it knows may block.  Valgrind 3.19 does not count
 * io_uring_enter() as one, so a worker waiting in it would hold every other
 * thread - the acceptor, the application threads, the other workers - until a
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

/*
 * The kernel took none of the SQEs (err: -EBUSY, a CQ overflow it cannot
 * flush yet; -EAGAIN, no memory for a request): the caller reaps and calls
 * again.  -EBUSY means the CQ is full, so the caller has completions to
 * reap and each retry makes room.  Not so -EAGAIN: with nothing to reap the
 * caller would come straight back, for as long as memory is short.  So a
 * caller that meant to wait first waits a little for a completion - the
 * ring's fd is readable when there is one (not with DEFER_TASKRUN: then the
 * millisecond runs out) - but not for ever: nothing may be in flight that
 * can complete.
 */
static int ring_refused(struct ring *r, int err, unsigned wait_nr)
{
    if (wait_nr > 0 && (err == -EAGAIN || err == -EBUSY) && ring_peek_cqe(r) == NULL) {
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        (void)poll(&pfd, 1, 1); /* EINTR or a timeout: the caller retries anyway */
    }
    return err;
}

/*
 * Never wait while the backlog holds SQEs.  The SQ is full then, and what
 * is in it may never complete (recvs on quiet sockets): a wait for a
 * completion, with the mailbox read still in the backlog, would never end.
 * So while there is a backlog, submit without waiting (the kernel takes
 * every SQE it can at once), move the next ones into the room that makes,
 * and only when all are in the SQ submit the rest and wait.  Each round
 * submits at least one SQE, so the loop ends; a round that submits none is
 * a refusal, for the caller to reap and come back.
 */
int ring_submit_and_wait(struct ring *r, unsigned wait_nr)
{
    unsigned n = ring_flush_sq(r);
    while (r->backlog_len > 0) {
        int ret = sys_io_uring_enter(r->fd, n, 0, 0);
        if (ret <= 0)
            return ring_refused(r, ret < 0 ? -errno : -EAGAIN, wait_nr);
        n = ring_flush_sq(r);
    }
    if (n == 0 && wait_nr == 0)
        return 0;
    if (wait_nr > 0 && r->wait_in_poll)
        return ring_wait_in_poll(r, n, wait_nr);
    int ret =
        sys_io_uring_enter(r->fd, n, wait_nr, wait_nr ? IORING_ENTER_GETEVENTS : 0);
    return ret < 0 ? ring_refused(r, -errno, wait_nr) : 0;
}

/* One more SQE at the end of the backlog (the array may move: the SQE is
 * filled before the next call into the ring). */
static struct io_uring_sqe *ring_backlog_push(struct ring *r)
{
    if (r->backlog_len == r->backlog_cap) {
        unsigned cap = r->backlog_cap ? 2 * r->backlog_cap : r->sq_entries;
        struct io_uring_sqe *b = realloc(r->backlog, cap * sizeof(*b));
        if (b == NULL)
            die("io_uring: no memory for the SQ backlog");
        r->backlog = b;
        r->backlog_cap = cap;
    }
    return &r->backlog[r->backlog_len++];
}

/* ring_get_sqe() without the record's bookkeeping. */
static struct io_uring_sqe *ring_take_sqe(struct ring *r, struct ring_op *op)
{
    /* Full: submit what is there.  Without SQPOLL the kernel takes every
     * published SQE inside io_uring_enter(), so room is made at once -
     * unless it refuses them all: on kernels before 5.19 it does while
     * completions it kept aside (a CQ overflow) cannot be flushed, -EBUSY,
     * and only reaping the CQ - our caller's loop - makes room.  Retrying
     * here would spin for ever; the SQE waits in the backlog instead, and
     * once there is a backlog, every SQE joins it, to keep their order. */
    if (r->backlog_len == 0 && ring_sq_full(r)) {
        int ret = ring_submit_and_wait(r, 0);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            die("io_uring_enter: %s", strerror(-ret)); /* the ring itself is broken */
    }
    struct io_uring_sqe *sqe = r->backlog_len == 0 && !ring_sq_full(r)
                                   ? ring_next_slot(r)
                                   : ring_backlog_push(r);
    memset(sqe, 0, sizeof(*sqe));
    sqe->user_data = (uint64_t)(uintptr_t)op;
    return sqe;
}

struct io_uring_sqe *ring_get_sqe(struct ring *r, struct ring_op *op)
{
    ENSURE(!op->busy, "one operation per record at a time");
    struct io_uring_sqe *sqe = ring_take_sqe(r, op);
    op->busy = true;
    return sqe;
}

/* One segment as a plain RECV/SEND of that buffer; two as RECVMSG/SENDMSG
 * of the msghdr (the data wraps around the ring's end). */
static void ring_prep_io(struct io_uring_sqe *sqe, int fd, struct msghdr *msg,
                         uint8_t one_op, uint8_t msg_op)
{
    sqe->fd = fd;
    if (msg->msg_iovlen == 1) {
        sqe->opcode = one_op;
        size_t len = msg->msg_iov[0].iov_len;
        sqe->addr = (uint64_t)(uintptr_t)msg->msg_iov[0].iov_base;
        sqe->len = len < (1u << 30) ? (uint32_t)len : 1u << 30; /* res is an int */
    } else {
        sqe->opcode = msg_op;
        sqe->addr = (uint64_t)(uintptr_t)msg;
        sqe->len = 1; /* one msghdr */
    }
}

struct io_uring_sqe *ring_prep_recv(struct ring *r, struct ring_op *op, int fd,
                                    struct msghdr *msg)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    ring_prep_io(sqe, fd, msg, IORING_OP_RECV, IORING_OP_RECVMSG);
    return sqe;
}

struct io_uring_sqe *ring_prep_send(struct ring *r, struct ring_op *op, int fd,
                                    struct msghdr *msg, unsigned msg_flags)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    ring_prep_io(sqe, fd, msg, IORING_OP_SEND, IORING_OP_SENDMSG);
    sqe->msg_flags = msg_flags;
    return sqe;
}

struct io_uring_sqe *ring_prep_recv_multishot(struct ring *r, struct ring_op *op,
                                              int fd, uint16_t bgid)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT; /* len 0: the buffer's size */
    sqe->buf_group = bgid;
    return sqe;
}

struct io_uring_sqe *ring_prep_recv_select(struct ring *r, struct ring_op *op, int fd,
                                           uint16_t bgid, unsigned len)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->len = len; /* at most min(len, the buffer's size); 0 reads nothing */
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
    return sqe;
}

struct io_uring_sqe *ring_prep_provide(struct ring *r, struct ring_op *op, void *addr,
                                       unsigned len, unsigned n, uint16_t bgid,
                                       unsigned bid)
{
    struct io_uring_sqe *sqe = ring_take_sqe(r, op);
    sqe->opcode = IORING_OP_PROVIDE_BUFFERS;
    sqe->fd = (int)n; /* how many buffers */
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->len = len; /* each one's size */
    sqe->off = bid; /* the first one's id */
    sqe->buf_group = bgid;
    return sqe;
}

struct io_uring_sqe *ring_prep_read(struct ring *r, struct ring_op *op, int fd,
                                    void *buf, unsigned len)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    sqe->opcode = IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    return sqe;
}

struct io_uring_sqe *ring_prep_poll(struct ring *r, struct ring_op *op, int fd)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = POLLIN;
    return sqe;
}

struct io_uring_sqe *ring_prep_cancel(struct ring *r, struct ring_op *op,
                                      struct ring_op *target)
{
    struct io_uring_sqe *sqe = ring_get_sqe(r, op);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = (uint64_t)(uintptr_t)target; /* by user_data */
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

int ring_register(struct ring *r, unsigned opcode, void *arg, unsigned nr_args)
{
    return sys_io_uring_register(r->fd, opcode, arg, nr_args) < 0 ? -errno : 0;
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
