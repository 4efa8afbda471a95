/*
 * ring.h - io_uring (异步 I/O 环) on the raw system calls: io_uring_setup(),
 * io_uring_enter(), io_uring_register() and mmap(), no liburing.
 *
 * Two rings shared with the kernel, each a power-of-two array with a head
 * and a tail that only grow:
 *
 *   submission queue (SQ): we fill entries (SQEs) at the tail, the kernel
 *       takes them from the head.  We publish a new tail with a release
 *       store, so the kernel sees the SQEs' contents before the tail;
 *       we read the head with an acquire load.
 *   completion queue (CQ): the kernel posts results (CQEs) at the tail, we
 *       take them from the head.  We read the tail with an acquire load, so
 *       we see each CQE's contents written before it; we publish the head
 *       we have consumed with a release store, so the kernel may reuse them.
 *
 * Each SQE carries a 64-bit user_data that comes back in its CQE.  Here it is
 * always a pointer to a struct ring_op - an operation record embedded in
 * whatever started the operation (a connection's recv, its send, a worker's
 * mailbox read).  The record's kind says what it is embedded in, and
 * container_of() gets from the record to its owner:
 *
 *   user_data = (uintptr_t)&conn->recv_op   ->  kind RING_OP_RECV, owner a conn
 *
 * The liburing call each function corresponds to is named beside it.
 * Needs Linux 5.6 (IORING_OP_SEND/RECV, probe); uses 6.1 features if present.
 *
 * A full SQ never fails and never spins: SQEs the kernel cannot take yet
 * wait in a backlog in user space (see ring_get_sqe()).
 */
#ifndef LAB_RING_H
#define LAB_RING_H

#include <linux/io_uring.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The struct that embeds `member` at address ptr (as in loop.h): how a
 * completion's operation record leads back to its connection or worker. */
#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* What an operation record is embedded in (see user_data above). */
enum ring_op_kind {
    RING_OP_RECV,          /* a connection's recv (or recvmsg) */
    RING_OP_SEND,          /* a connection's send (or sendmsg) */
    RING_OP_CANCEL_RECV,   /* a connection's cancel of its recv */
    RING_OP_CANCEL_SEND,   /* a connection's cancel of its send */
    RING_OP_MBOX,          /* a worker's read of its mailbox eventfd */
    RING_OP_TIMER,         /* a worker's read of its timerfd */
    RING_OP_CANCEL_MBOX,   /* a worker's cancel of its mailbox read, at the end */
    RING_OP_CANCEL_TIMER,  /* a worker's cancel of its timer read, at the end */
    RING_OP_LISTEN,        /* -D reuseport: a worker's poll of its listening socket */
    RING_OP_CANCEL_LISTEN, /* ... and its cancel, at the shutdown */
    RING_OP_PROVIDE,       /* -R legacy: a worker handing buffers to the kernel */
};

struct ring_op {
    uint8_t kind; /* enum ring_op_kind, in a byte: a connection has four */
    bool busy;    /* submitted, its completion not yet seen */
};

struct ring {
    int fd;
    unsigned features; /* IORING_FEAT_* the kernel reported */
    /* submission queue, shared with the kernel */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned sq_entries;
    struct io_uring_sqe *sqes;
    unsigned sqe_tail; /* SQEs handed out so far (not yet all submitted) */
    /* completion queue, shared with the kernel */
    unsigned *cq_head, *cq_tail, *cq_mask;
    unsigned cq_entries;
    struct io_uring_cqe *cqes;
    /* the mappings, to unmap */
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len, sqes_len;
    bool wait_in_poll; /* under valgrind: see ring_submit_and_wait() */
    /* SQEs handed out while the SQ was full and the kernel would take none
     * (-EBUSY): moved into the SQ, in order, as room appears */
    struct io_uring_sqe *backlog;
    unsigned backlog_len, backlog_cap;
};

/* io_uring_queue_init_params(): a ring of sq_entries SQEs and cq_entries
 * CQEs (IORING_SETUP_CQSIZE; 0: the kernel's default, twice sq_entries), with
 * more IORING_SETUP_* flags.  Returns 0, or -errno (ENOSYS: no io_uring in
 * this kernel; EPERM: disabled by sysctl or forbidden by seccomp; EINVAL: a
 * flag it lacks). */
int ring_init(struct ring *r, unsigned sq_entries, unsigned cq_entries, unsigned flags);
/* io_uring_queue_exit() */
void ring_exit(struct ring *r);

/* io_uring_get_sqe(): the next free SQE, zeroed, its user_data set to op
 * (marked busy).  When the SQ is full it submits what is there first, and
 * if the kernel takes nothing (a CQ overflow it cannot flush: -EBUSY) the
 * SQE goes to the backlog, submitted by a later call: it never fails.  Fill
 * it before the next call into the ring. */
struct io_uring_sqe *ring_get_sqe(struct ring *r, struct ring_op *op);

/* The operations the lab submits, prepared as liburing's io_uring_prep_*()
 * would; each takes an SQE for op and returns it (for extra flags). */
/* recv into the segments msg lists: IORING_OP_RECV for one (the common
 * case), RECVMSG for two, which the kernel must copy in and check first. */
struct io_uring_sqe *ring_prep_recv(struct ring *r, struct ring_op *op, int fd,
                                    struct msghdr *msg);
/* send from the segments msg lists, with msg_flags: SEND or SENDMSG. */
struct io_uring_sqe *ring_prep_send(struct ring *r, struct ring_op *op, int fd,
                                    struct msghdr *msg, unsigned msg_flags);
/* a multishot recv (IORING_RECV_MULTISHOT, Linux 6.0) into buffers the
 * kernel picks from group bgid (pbuf.h): one CQE per arrival, each naming
 * its buffer, IORING_CQE_F_MORE while it stays armed. */
struct io_uring_sqe *ring_prep_recv_multishot(struct ring *r, struct ring_op *op,
                                              int fd, uint16_t bgid);
/* -R legacy (Linux 5.7): a one-shot recv of at most len bytes into a buffer
 * the kernel picks from group bgid, named by the CQE as above. */
struct io_uring_sqe *ring_prep_recv_select(struct ring *r, struct ring_op *op, int fd,
                                           uint16_t bgid, unsigned len);
/* -R legacy: hand group bgid the n buffers of len bytes at addr, addr + len,
 * ..., as ids bid, bid + 1, ... (IORING_OP_PROVIDE_BUFFERS).  Many may be
 * in flight on one record, which is never marked busy: its completion only
 * says whether the kernel took them. */
struct io_uring_sqe *ring_prep_provide(struct ring *r, struct ring_op *op, void *addr,
                                       unsigned len, unsigned n, uint16_t bgid,
                                       unsigned bid);
/* read len bytes of fd into buf (the worker's eventfd and timerfd). */
struct io_uring_sqe *ring_prep_read(struct ring *r, struct ring_op *op, int fd,
                                    void *buf, unsigned len);
/* complete once fd is readable: a one-shot IORING_OP_POLL_ADD, readiness
 * asked of a completion ring (a worker's listening socket, -D reuseport). */
struct io_uring_sqe *ring_prep_poll(struct ring *r, struct ring_op *op, int fd);
/* cancel the operation target (IORING_OP_ASYNC_CANCEL, by its user_data);
 * the cancel is an operation of its own, recorded in op. */
struct io_uring_sqe *ring_prep_cancel(struct ring *r, struct ring_op *op,
                                      struct ring_op *target);

/* io_uring_submit_and_wait(): hand the kernel every SQE it has not taken,
 * those in the backlog too, and wait until at least wait_nr completions
 * are ready; it never waits with SQEs left in the backlog.  Returns 0, or
 * -errno: EINTR when a signal interrupted the wait, EBUSY or EAGAIN when
 * the kernel took none of the SQEs: reap what is there and call again.
 * Under valgrind it may return with fewer ready: the caller loops anyway. */
int ring_submit_and_wait(struct ring *r, unsigned wait_nr);

/* io_uring_peek_cqe(): the oldest completion not yet seen, or NULL. */
struct io_uring_cqe *ring_peek_cqe(struct ring *r);
/* io_uring_cqe_seen(): done with the CQE ring_peek_cqe() returned. */
void ring_cqe_seen(struct ring *r);

/* io_uring_get_probe() + io_uring_opcode_supported(): is every opcode in
 * ops[0..n) supported?  If not, *missing is the first that is not.  Returns
 * 1, 0, or -errno. */
int ring_probe(struct ring *r, const uint8_t *ops, int n, uint8_t *missing);
/* io_uring_register(): 0 or -errno. */
int ring_register(struct ring *r, unsigned opcode, void *arg, unsigned nr_args);

#endif
