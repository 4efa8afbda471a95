/*
 * conn_uring.c - the transport (传输) of a connection, on completions (完成式
 * I/O) from io_uring.  conn.c and linger.c - what the bytes mean, what is
 * owed, how a connection ends - are step05's, unchanged; this file replaces
 * conn_epoll.c.
 *
 * What this step teaches: readiness (epoll: "you may read now") against
 * completion (io_uring: "I have read it for you").  Under epoll the worker
 * was told a socket was readable and called readv() until EAGAIN; here it
 * submits a recv into the input ring's free space and is told, later, how
 * many bytes the kernel put there:
 *
 *   conn_start_recv(): at most one recv in flight, into the input ring's
 *       free space (a recvmsg when it wraps around the end: two segments),
 *       at most CONN_READ_BUDGET bytes (fairness: every connection gets one
 *       read per round), and none while too much is owed (backpressure);
 *       lingering, into the worker's scratch buffer instead;
 *   conn_flush(): at most one send in flight, of the output ring's data (a
 *       sendmsg when it wraps); a partial send completes with fewer bytes,
 *       and the rest goes in the next one;
 *   after every completion: tell the protocol, then send and read again.
 *
 * Buffer lifetime, the hard part: from submission to completion the kernel
 * holds the address of the ring's memory.  So a ring with an operation in
 * flight is pinned (buffer.h): a recv's ring may not move at all, a send's
 * may grow, but its old memory is kept until the send completes.  And a
 * connection is freed only when it has no operation in flight: closing
 * cancels them (IORING_OP_ASYNC_CANCEL) and waits for every completion, the
 * cancels' included.
 *
 * valgrind cannot see the kernel fill a buffer long after the system call
 * that asked for it, so received bytes look uninitialised to memcheck; the
 * recv completion marks them defined (VALGRIND_MAKE_MEM_DEFINED), as pool.c
 * marks its blocks.
 */
#include "conn.h"
#include "linger.h"
#include "log.h"
#include "net.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define CONN_HAVE_VALGRIND 1
#endif
#endif
#ifndef CONN_HAVE_VALGRIND
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

static void conn_start_recv(struct conn *c);

/* Is this the worker that owns the connection?  Only it may touch it. */
static bool conn_on_owner(const struct conn *c)
{
    return pthread_equal(c->ctx->owner, pthread_self()) != 0;
}

/* Every completion is back: free it after this batch (conn_free_closed).
 * Once: the last completion and the close may both get here. */
static void conn_release(struct conn *c)
{
    if (c->released)
        return;
    c->released = true;
    c->next_released = c->ctx->released;
    c->ctx->released = c;
}

void conn_free_closed(struct conn_ctx *ctx)
{
    if (ctx->released == NULL)
        return;
    while (ctx->released != NULL) {
        struct conn *c = ctx->released;
        ctx->released = c->next_released;
        close(c->fd); /* only now: the fd number stays ours until the last CQE */
        buf_free(&c->in);
        buf_free(&c->out);
        free(c);
        ctx->closing--;
    }
    if (ctx->maybe_done != NULL)
        ctx->maybe_done(ctx);
}

/* Close now: no more submissions; the memory goes after the last completion. */
void conn_close(struct conn *c, enum conn_reason reason)
{
    if (c->state == CONN_CLOSED)
        return;
    struct conn_ctx *ctx = c->ctx;
    ctx->closing++; /* until conn_free_closed(): the worker waits for it */
    conn_end(c, reason);
    /* The kernel may be waiting to receive into our ring, or sending from
     * it: cancel both; their completions (and the cancels') free us. */
    if (c->recv_op.busy) {
        ring_prep_cancel(ctx->ring, &c->cancel_recv_op, &c->recv_op);
        c->ops++;
    }
    if (c->send_op.busy) {
        ring_prep_cancel(ctx->ring, &c->cancel_send_op, &c->send_op);
        c->ops++;
    }
    if (c->ops == 0)
        conn_release(c);
}

/* An I/O error on this connection: log it and close it, nothing else. */
static void conn_fail(struct conn *c, const char *op, int err)
{
    enum conn_reason reason =
        err == ECONNRESET || err == EPIPE ? CONN_RESET : CONN_ERROR;
    log_msg("conn=%" PRIu64 " error=%s %s: %s", c->id,
            reason == CONN_RESET ? "reset" : "error", op, strerror(err));
    conn_close(c, reason);
}

/* The -v open line.  The peer's address is asked for only when it is
 * printed: the hot path (no -v) does not pay a getpeername() per accept. */
static void conn_log_open(const struct conn *c)
{
    if (!log_verbose)
        return;
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    char name[NET_ADDR_LEN] = "?";
    if (getpeername(c->fd, (struct sockaddr *)&peer, &len) == 0)
        net_format_addr((struct sockaddr *)&peer, name, sizeof(name));
    log_msg("conn=%" PRIu64 " open worker=%d peer=%s", c->id, c->ctx->worker, name);
}

struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id)
{
    ENSURE(pthread_equal(ctx->owner, pthread_self()),
           "a connection is opened by the worker that owns it");
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL || conn_init(c, ctx, id) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", id);
        free(c);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->recv_op.kind = RING_OP_RECV;
    c->send_op.kind = RING_OP_SEND;
    c->cancel_recv_op.kind = RING_OP_CANCEL_RECV;
    c->cancel_send_op.kind = RING_OP_CANCEL_SEND;
    conn_log_open(c);
    /* Replies are complete messages: send them now, not after Nagle's wait
     * for an ACK (notes/step02-framing.md).  A failure costs latency only. */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        log_msg("conn=%" PRIu64 " setsockopt(TCP_NODELAY): %s", id, strerror(errno));
    conn_start_recv(c); /* the first recv */
    return c->state == CONN_CLOSED ? NULL : c;
}

size_t conn_waiting(const struct conn *c)
{
    int waiting = 0;
    if (ioctl(c->fd, FIONREAD, &waiting) < 0 || waiting < 0)
        return 0;
    return (size_t)waiting;
}

size_t conn_unsent(const struct conn *c)
{
    int unsent = 0;
    if (ioctl(c->fd, SIOCOUTQ, &unsent) < 0 || unsent < 0)
        return 0; /* nothing to wait for that we could see */
    return (size_t)unsent;
}

int conn_shut_wr(struct conn *c)
{
    return shutdown(c->fd, SHUT_WR);
}

/*
 * Submit a recv, unless one is in flight or the connection must not read.
 * Open (and not paused by backpressure, not closed by the peer): into the
 * free space of c->in, at most CONN_READ_BUDGET bytes, so one flooding
 * client gets one budget per round, like everyone else.  Lingering (and
 * still discarding): into the worker's scratch buffer - the bytes are
 * thrown away, so every lingering connection may share it, and c->in's
 * bounds no longer matter.
 */
static void conn_start_recv(struct conn *c)
{
    if (c->recv_op.busy)
        return;
    bool open = c->state == CONN_OPEN && !c->read_paused && !c->peer_closed;
    bool discard = c->state == CONN_LINGERING && c->linger_left > 0;
    if (!open && !discard)
        return;
    int k = 1;
    if (discard) {
        size_t len =
            c->linger_left < CONN_SCRATCH_LEN ? c->linger_left : CONN_SCRATCH_LEN;
        c->recv_iov[0] = (struct iovec){c->ctx->scratch, len};
    } else {
        if (buf_reserve(&c->in, conn_read_room(c)) < 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            conn_close(c, CONN_ERROR);
            return;
        }
        k = buf_space_iov(&c->in, c->recv_iov);
        size_t room = 0;
        for (int i = 0; i < k; i++) {
            if (c->recv_iov[i].iov_len > CONN_READ_BUDGET - room)
                c->recv_iov[i].iov_len = CONN_READ_BUDGET - room;
            room += c->recv_iov[i].iov_len;
        }
        if (k == 2 && c->recv_iov[1].iov_len == 0)
            k = 1; /* the budget ends in the first segment */
        buf_pin(&c->in,
                BUF_PIN_SPACE); /* the kernel writes there until the completion */
    }
    c->recv_scratch = discard;
    c->recv_asked = c->recv_iov[0].iov_len + (k == 2 ? c->recv_iov[1].iov_len : 0);
    c->recv_msg = (struct msghdr){.msg_iov = c->recv_iov, .msg_iovlen = (size_t)k};
    struct io_uring_sqe *sqe =
        ring_prep_recv(c->ctx->ring, &c->recv_op, c->fd, &c->recv_msg);
    /* The last recv emptied the socket, so this one would most likely find
     * it empty, fail inside the kernel and then arm a poll: arm it first. */
    if (c->recv_drained && c->ctx->poll_first)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    c->ops++;
}

void conn_read_again(struct conn *c)
{
    /* Whole frames may already wait in c->in (decoding stopped at the
     * high-water mark): decode them now - no recv completion will come for
     * bytes that are already here. */
    if (c->state == CONN_OPEN && conn_process_frames(c) < 0) {
        conn_drain(c); /* a protocol error: earlier replies still go out */
        return;
    }
    if (c->state == CONN_OPEN && c->peer_closed) {
        conn_drain(c);
        return;
    }
    if (c->state == CONN_OPEN)
        conn_flush(c);
    conn_start_recv(c);
}

void conn_flush(struct conn *c)
{
    if (!c->send_op.busy && buf_len(&c->out) > 0) {
        int k = buf_data_iov(&c->out, c->send_iov);
        c->send_msg = (struct msghdr){.msg_iov = c->send_iov, .msg_iovlen = (size_t)k};
        /* MSG_NOSIGNAL: a vanished peer is an error, not a SIGPIPE. */
        ring_prep_send(c->ctx->ring, &c->send_op, c->fd, &c->send_msg, MSG_NOSIGNAL);
        buf_pin(&c->out,
                BUF_PIN_DATA); /* the kernel reads there until the completion */
        c->ops++;
    }
    conn_after_send(c);
}

/* A recv completed: res bytes landed in c->in's free space (or in the
 * scratch buffer), or an error. */
static void conn_on_recv(struct conn *c, int res)
{
    bool scratch = c->recv_scratch;
    if (!scratch)
        buf_unpin(&c->in);
    if (c->state == CONN_CLOSED)
        return; /* cancelled, or raced with the close: the bytes go with it */
    if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED) {
        conn_fail(c, "read", -res);
        return;
    }
    if (res > 0 && !scratch) {
        /* The kernel wrote these bytes after the system call that asked for
         * them returned: memcheck never saw the write. */
        size_t left = (size_t)res;
        for (size_t i = 0; i < c->recv_msg.msg_iovlen && left > 0; i++) {
            size_t n = c->recv_iov[i].iov_len < left ? c->recv_iov[i].iov_len : left;
            VALGRIND_MAKE_MEM_DEFINED(c->recv_iov[i].iov_base, n);
            left -= n;
        }
    }
    if (c->state == CONN_LINGERING) {
        /* Bytes to throw away (even those a recv into c->in brought, if it
         * was in flight when lingering began); 0 is EOF. */
        buf_trim(&c->in);
        if (res >= 0)
            conn_discarded(c, (size_t)res);
    } else if (res > 0) {
        conn_received(c, (size_t)res);
        c->recv_drained = (size_t)res < c->recv_asked;
        if (c->state == CONN_OPEN && conn_process_frames(c) < 0)
            conn_drain(c); /* a protocol error: earlier replies still go out */
    } else {
        buf_trim(&c->in); /* nothing came: an idle connection keeps no block */
        if (res == 0)
            c->peer_closed = true; /* EOF or half-close: decode what is left */
        if (c->state == CONN_OPEN && conn_process_frames(c) < 0)
            conn_drain(c);
    }
    if (c->state == CONN_OPEN && c->peer_closed)
        conn_drain(c);
    if (c->state != CONN_CLOSED) {
        conn_flush(c);
        conn_start_recv(c);
    }
}

/* A send completed: res bytes of c->out left (fewer than asked: a partial
 * send, and the rest goes in the next one). */
static void conn_on_send(struct conn *c, int res)
{
    buf_unpin(&c->out);
    if (c->state == CONN_CLOSED)
        return;
    if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED) {
        conn_fail(c, "write", -res);
        return;
    }
    if (res > 0)
        conn_sent(c, (size_t)res);
    conn_flush(c); /* the rest; and conn_after_send(): resume, or finish */
}

void conn_complete(struct ring_op *op, int res)
{
    struct conn *c;
    switch (op->kind) {
    case RING_OP_RECV:
        c = container_of(op, struct conn, recv_op);
        break;
    case RING_OP_SEND:
        c = container_of(op, struct conn, send_op);
        break;
    case RING_OP_CANCEL_RECV:
        c = container_of(op, struct conn, cancel_recv_op);
        break;
    case RING_OP_CANCEL_SEND:
        c = container_of(op, struct conn, cancel_send_op);
        break;
    default:
        abort();
    }
    ENSURE(conn_on_owner(c), "no connection is touched by two threads");
    c->ops--;
    if (op->kind == RING_OP_RECV)
        conn_on_recv(c, res);
    else if (op->kind == RING_OP_SEND)
        conn_on_send(c, res);
    else if (res == -EALREADY && c->state == CONN_CLOSED)
        /* The operation runs in one of the kernel's worker threads, blocked
         * in the socket, past cancelling: ending the socket stops it. */
        shutdown(c->fd, SHUT_RDWR);
    if (c->state == CONN_CLOSED && c->ops == 0)
        conn_release(c);
}
