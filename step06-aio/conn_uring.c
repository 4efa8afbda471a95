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
 *   conn_start_recv(): at most one recv in flight, and none while too much
 *       is owed (backpressure).  -R pinned: into the input ring's free space
 *       (a recvmsg when it wraps around the end: two segments), at most
 *       CONN_READ_BUDGET bytes (fairness: every connection gets one read
 *       per round); lingering, into the worker's scratch buffer instead.
 *       -R provided: one multishot recv into the worker's buffer ring
 *       (pbuf.h), each buffer copied into the input ring and given back;
 *       -R legacy: the same, but a one-shot recv armed again each time;
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
#include "pbuf.h"

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
    if (c->recv_op.busy && !c->recv_cancelled) {
        ring_prep_cancel(ctx->ring, &c->cancel_recv_op, &c->recv_op);
        c->recv_cancelled = true;
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
    size_t pinned = ctx->pbuf == NULL ? sizeof(struct conn_recv_pinned) : 0;
    struct conn *c = calloc(1, sizeof(*c) + pinned);
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
 * A plain close() after a cut would not cut: with no unread input it queues
 * our FIN behind the replies the kernel holds - megabytes, for a client that
 * does not read - and the kernel goes on offering them from a socket the
 * server no longer sees.  A reset frees them at once, and the client learns
 * that it did not get everything (nginx: reset_timedout_connection).
 */
void conn_abort(struct conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
        log_msg("conn=%" PRIu64 " setsockopt(SO_LINGER): %s", c->id, strerror(errno));
}

/*
 * Submit a recv, unless one is in flight (or its cancel is: the cancel's
 * completion arms the next) or the connection must not read: open and not
 * paused by backpressure, not closed by the peer; or lingering and still
 * discarding.  -R provided: a multishot recv (below).  -R pinned, open:
 * into the free space of c->in, at most CONN_READ_BUDGET bytes, so one
 * flooding client gets one budget per round, like everyone else;
 * lingering: into the worker's scratch buffer - the bytes are thrown away,
 * so every lingering connection may share it, and c->in's bounds no longer
 * matter.
 */
static bool conn_wants_recv(const struct conn *c)
{
    bool open = c->state == CONN_OPEN && !c->read_paused && !c->peer_closed;
    bool discard = c->state == CONN_LINGERING && c->linger_left > 0;
    return open || discard;
}

static void conn_start_recv(struct conn *c)
{
    if (c->recv_op.busy || c->cancel_recv_op.busy || !conn_wants_recv(c))
        return;
    bool discard = c->state == CONN_LINGERING;
    const struct pbuf *p = c->ctx->pbuf;
    if (p != NULL) {
        /* -R provided: one multishot recv, armed until it ends or is
         * cancelled; the kernel takes a buffer from the worker's ring only
         * when bytes arrive, so an idle connection holds none.  -R legacy:
         * a one-shot recv from the same buffers, armed again after each. */
        if (p->legacy != NULL)
            ring_prep_recv_select(c->ctx->ring, &c->recv_op, c->fd, p->bgid, p->size);
        else
            ring_prep_recv_multishot(c->ctx->ring, &c->recv_op, c->fd, p->bgid);
        c->recv_cancelled = false;
        c->ops++;
        return;
    }
    struct conn_recv_pinned *r = c->pinned;
    int k = 1;
    if (discard) {
        size_t len =
            c->linger_left < CONN_SCRATCH_LEN ? c->linger_left : CONN_SCRATCH_LEN;
        r->iov[0] = (struct iovec){c->ctx->scratch, len};
    } else {
        if (buf_reserve(&c->in, conn_read_room(c)) < 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            conn_close(c, CONN_ERROR);
            return;
        }
        k = buf_space_iov(&c->in, r->iov);
        size_t room = 0;
        for (int i = 0; i < k; i++) {
            if (r->iov[i].iov_len > CONN_READ_BUDGET - room)
                r->iov[i].iov_len = CONN_READ_BUDGET - room;
            room += r->iov[i].iov_len;
        }
        if (k == 2 && r->iov[1].iov_len == 0)
            k = 1; /* the budget ends in the first segment */
        buf_pin(&c->in,
                BUF_PIN_SPACE); /* the kernel writes there until the completion */
    }
    r->scratch = discard;
    r->asked = r->iov[0].iov_len + (k == 2 ? r->iov[1].iov_len : 0);
    r->msg = (struct msghdr){.msg_iov = r->iov, .msg_iovlen = (size_t)k};
    struct io_uring_sqe *sqe =
        ring_prep_recv(c->ctx->ring, &c->recv_op, c->fd, &r->msg);
    /* The last recv emptied the socket, so this one would most likely find
     * it empty, fail inside the kernel and then arm a poll: arm it first. */
    if (r->drained && c->ctx->poll_first)
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

/* What a recv brought means: res bytes now in c->in's free space (or,
 * lingering, bytes to throw away), 0 at EOF, or -errno. */
static void conn_on_bytes(struct conn *c, int res)
{
    if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED &&
        res != -ENOBUFS) {
        conn_fail(c, "read", -res);
        return;
    }
    if (c->state == CONN_LINGERING) {
        /* Bytes to throw away (even those a recv into c->in brought, if it
         * was in flight when lingering began); 0 is EOF. */
        buf_trim(&c->in);
        if (res >= 0)
            conn_discarded(c, (size_t)res);
    } else if (res > 0) {
        conn_received(c, (size_t)res);
        if (c->ctx->pbuf == NULL)
            c->pinned->drained = (size_t)res < c->pinned->asked;
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

/* -R pinned: a recv completed: res bytes landed in c->in's free space (or
 * in the scratch buffer), or an error. */
static void conn_on_recv_pinned(struct conn *c, int res)
{
    struct conn_recv_pinned *r = c->pinned;
    bool scratch = r->scratch;
    if (!scratch)
        buf_unpin(&c->in);
    if (c->state == CONN_CLOSED)
        return; /* cancelled, or raced with the close: the bytes go with it */
    if (res > 0 && !scratch) {
        /* The kernel wrote these bytes after the system call that asked for
         * them returned: memcheck never saw the write. */
        size_t left = (size_t)res;
        for (size_t i = 0; i < r->msg.msg_iovlen && left > 0; i++) {
            size_t n = r->iov[i].iov_len < left ? r->iov[i].iov_len : left;
            VALGRIND_MAKE_MEM_DEFINED(r->iov[i].iov_base, n);
            left -= n;
        }
    }
    conn_on_bytes(c, res);
}

/*
 * Copy what fits of n bytes of a provided buffer into c->in's free space
 * (conn_received() counts them).  The ring grows as in the pinned path:
 * for what has arrived, up to its bound, and then only what the rounding
 * left.  Returns the bytes copied: 0, no room at all.
 *
 * Except for late bytes: the connection has stopped reading (backpressure,
 * draining) and its cancel is on the way, but the kernel filled these
 * buffers first.  They are the client's, already out of its socket: kept,
 * past the bound if need be.  How many can come is how much the kernel
 * receives before the cancel lands - one round of the worker's loop.
 */
static size_t conn_copy_in(struct conn *c, const uint8_t *src, size_t n)
{
    size_t bound = c->in.max_len;
    if (!conn_wants_recv(c))
        c->in.max_len = SIZE_MAX / 2; /* late bytes (above) */
    /* A large frame: room for all of it once a quarter has come, as
     * conn_read_room() says - not a doubling per buffer, each copying what
     * came before. */
    size_t room = conn_read_room(c);
    int ok = buf_reserve(&c->in, room > n ? room : n) == 0 ||
             buf_reserve(&c->in, n) == 0 || buf_reserve(&c->in, 1) == 0;
    c->in.max_len = bound;
    if (!ok)
        return 0;
    struct iovec iov[2];
    int k = buf_space_iov(&c->in, iov);
    size_t copied = 0;
    for (int i = 0; i < k && copied < n; i++) {
        size_t part = iov[i].iov_len < n - copied ? iov[i].iov_len : n - copied;
        memcpy(iov[i].iov_base, src + copied, part);
        copied += part;
    }
    return copied;
}

/* The bytes of one provided buffer, in as many pieces as c->in takes: each
 * piece decoded before the next, so a frame at the ring's bound (or a bad
 * header) is dealt with before more bytes need room.  Lingering: counted
 * and thrown away (none once it reads no more).  Draining: counted and
 * dropped - nothing will decode them. */
static void conn_take_bytes(struct conn *c, const uint8_t *src, size_t n)
{
    size_t off = 0;
    while (off < n && c->state != CONN_CLOSED) {
        if (c->state == CONN_LINGERING) {
            if (c->linger_left > 0)
                conn_on_bytes(c, (int)(n - off));
            return;
        }
        if (c->state == CONN_DRAINING) {
            c->bytes_in += n - off;
            return;
        }
        size_t got = conn_copy_in(c, src + off, n - off);
        if (got == 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            conn_close(c, CONN_ERROR);
            return;
        }
        conn_on_bytes(c, (int)got);
        off += got;
    }
}

/*
 * -R provided: one CQE of the multishot recv.  A buffer it names is copied
 * out (or, lingering, just counted) and given back at once, whatever the
 * connection's state: the ring is the worker's, and every connection
 * shares it.  IORING_CQE_F_MORE clear: the recv has ended (EOF, an error,
 * -ENOBUFS when the ring ran dry, or our cancel) and is armed again if the
 * connection still reads.  Still armed but the connection must stop reading
 * (backpressure, draining, the end of a linger): cancel it; what arrives
 * before the cancel lands is still decoded or counted.
 */
static void conn_on_recv_provided(struct conn *c, int res, unsigned flags)
{
    struct pbuf *p = c->ctx->pbuf;
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        const uint8_t *src = pbuf_at(p, bid);
        if (res > 0) {
            VALGRIND_MAKE_MEM_DEFINED(src, (size_t)res); /* the kernel wrote it */
            conn_take_bytes(c, src, (size_t)res);
        }
        pbuf_give_back(p, bid);
    } else if (res == -ENOBUFS) {
        /* The ring ran dry: the recv ended, and is armed again below.  The
         * ring grows first (once per batch of completions, however many
         * recvs ran dry in it), so the new recv finds buffers: with -R
         * legacy the provide's SQE goes ahead of the recv's. */
        c->ctx->nobufs++;
        pbuf_grow(p);
    }
    if (c->state == CONN_CLOSED)
        return;
    if (res <= 0)
        conn_on_bytes(c, res); /* EOF, the recv's end, or an error */
    if (c->state != CONN_CLOSED && c->recv_op.busy && !c->recv_cancelled &&
        !conn_wants_recv(c)) {
        ring_prep_cancel(c->ctx->ring, &c->cancel_recv_op, &c->recv_op);
        c->recv_cancelled = true;
        c->ops++;
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
    size_t asked = 0;
    for (size_t i = 0; i < c->send_msg.msg_iovlen; i++)
        asked += c->send_iov[i].iov_len;
    if (res > 0)
        conn_sent(c, (size_t)res);
    if (res < 0 || (size_t)res < asked)
        conn_send_blocked(c); /* a short send: the socket is full, bound the wait */
    conn_flush(c); /* the rest; and conn_after_send(): resume, or finish */
}

void conn_complete(struct ring_op *op, int res, unsigned flags)
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
    if (!(flags & IORING_CQE_F_MORE))
        c->ops--; /* a multishot recv that stays armed is still in flight */
    if (op->kind == RING_OP_RECV && c->ctx->pbuf != NULL)
        conn_on_recv_provided(c, res, flags);
    else if (op->kind == RING_OP_RECV)
        conn_on_recv_pinned(c, res);
    else if (op->kind == RING_OP_SEND)
        conn_on_send(c, res);
    else if (res == -EALREADY && c->state == CONN_CLOSED)
        /* The operation runs in one of the kernel's worker threads, blocked
         * in the socket, past cancelling: ending the socket stops it. */
        shutdown(c->fd, SHUT_RDWR);
    else if (op->kind == RING_OP_CANCEL_RECV && c->state != CONN_CLOSED)
        conn_start_recv(c); /* -R provided: it may read again since */
    if (c->state == CONN_CLOSED && c->ops == 0)
        conn_release(c);
}
