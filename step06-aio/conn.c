/*
 * conn.c - a connection served by completions (完成式 I/O) from io_uring.
 *
 * What this step teaches: readiness (epoll: "you may read now") against
 * completion (io_uring: "I have read it for you").  Under epoll the worker
 * was told a socket was readable and called readv() until EAGAIN; here it
 * submits a recv into the input ring's free space and is told, later, how
 * many bytes the kernel put there.  Everything else - framing, replies,
 * backpressure, half-close, app threads, the lingering close, the shutdown -
 * keeps its meaning, but it is driven by completions:
 *
 *   conn_start_recv(): at most one recv in flight, into the input ring's
 *       free space (a recvmsg when it wraps around the end: two segments),
 *       at most CONN_READ_BUDGET bytes (fairness: every connection gets one
 *       read per round), and none while too much is owed (backpressure);
 *   conn_start_send(): at most one send in flight, of the output ring's
 *       data (a sendmsg when it wraps); a partial send completes with fewer
 *       bytes, and the rest goes in the next one;
 *   conn_pump(): after every completion, decode, reply, send, read again.
 *
 * Buffer lifetime, the hard part: from submission to completion the kernel
 * holds the address of the ring's memory.  So a ring with an operation in
 * flight is pinned (buffer.h): it may not grow, move, or go back to the
 * pool (asserted).  And a connection is freed only when it has no operation
 * in flight: closing cancels them (IORING_OP_ASYNC_CANCEL) and waits for
 * every completion, the cancels' included.
 *
 * valgrind cannot see the kernel fill a buffer long after the system call
 * that asked for it, so received bytes look uninitialised to memcheck; the
 * recv completion marks them defined (VALGRIND_MAKE_MEM_DEFINED), as pool.c
 * marks its blocks.
 */
#include "conn.h"
#include "app.h"
#include "frame.h"
#include "log.h"
#include "net.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
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

static const char *const reason_names[] = {
    [CONN_EOF] = "eof",           [CONN_EOF_MID_FRAME] = "eof-mid-frame",
    [CONN_PROTOCOL] = "protocol", [CONN_RESET] = "reset",
    [CONN_ERROR] = "error",       [CONN_IDLE] = "idle",
    [CONN_SHUTDOWN] = "shutdown", [CONN_CUT] = "cut",
};

uint64_t conn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* a + b, or SIZE_MAX if that does not fit: buffer bounds stay meaningful
 * for any -m even where size_t is 32 bits wide. */
static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* Replies owed: queued here (in the ring, or parked behind a send), and
 * still being built at application threads. */
static size_t conn_owed(const struct conn *c)
{
    return buf_len(&c->out) + c->parked_bytes + c->inflight;
}

/* -i: note traffic (only when idle timeouts are on: a clock read is cheap,
 * not free). */
static void conn_touch(struct conn *c)
{
    if (c->ctx->idle_ns > 0)
        c->last_active_ns = conn_now_ns();
}

/* Is this the worker that owns the connection?  (STYLE rule 8.) */
static bool conn_on_owner(const struct conn *c)
{
    return pthread_equal(c->ctx->owner, pthread_self()) != 0;
}

/* The memory goes only when the kernel has returned every operation. */
static void conn_free_if_done(struct conn *c)
{
    if (c->state != CONN_CLOSED || c->ops > 0)
        return;
    struct conn_ctx *ctx = c->ctx;
    close(c->fd); /* after the completions: the fd number stays ours till then */
    buf_free(&c->in);
    buf_free(&c->out);
    while (c->parked != NULL) {
        struct parked *p = c->parked;
        c->parked = p->next;
        free(p);
    }
    free(c);
    ctx->closing--;
    if (ctx->first == NULL && ctx->closing == 0 && ctx->on_empty != NULL)
        ctx->on_empty(ctx);
}

/* Submit a cancel for op, whose completion the connection still awaits. */
static void conn_cancel(struct conn *c, struct ring_op *op, struct ring_op *cancel)
{
    if (cancel->busy)
        return; /* the shutdown's cancel is still on its way: one is enough */
    struct io_uring_sqe *sqe = ring_get_sqe(c->ctx->ring, cancel);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = (uint64_t)(uintptr_t)op; /* cancel by user_data */
    c->ops++;
}

/* Close now: no more submissions; the memory goes after the last completion. */
static void conn_close(struct conn *c, enum conn_reason reason)
{
    if (c->state == CONN_CLOSED)
        return;
    struct conn_ctx *ctx = c->ctx;
    c->state = CONN_CLOSED;
    log_debug("conn=%" PRIu64 " close reason=%s frames=%" PRIu64 " bytes_in=%" PRIu64
              " bytes_out=%" PRIu64,
              c->id, reason_names[reason], c->frames, c->bytes_in, c->bytes_out);
    ctx->stats.frames += c->frames;
    ctx->stats.bytes_in += c->bytes_in;
    ctx->stats.bytes_out += c->bytes_out;
    if (c->deadline_ns != 0)
        ctx->lingering--;
    idmap_remove(&ctx->ids, c->id); /* replies still on their way are dropped */
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctx->closing++; /* until conn_free_if_done() */
    /* The kernel may be waiting to receive into our ring, or sending from
     * it: cancel both; their completions (and the cancels') free us. */
    if (c->recv_op.busy)
        conn_cancel(c, &c->recv_op, &c->cancel_recv_op);
    if (c->send_op.busy)
        conn_cancel(c, &c->send_op, &c->cancel_send_op);
    /* Not freed here: the callers up the stack still hold c.  Every entry
     * point (a completion, a delivery, a tick, the shutdown) frees it on
     * its way out, once nothing is in flight (conn_free_if_done). */
}

/* An I/O error on this connection: log it and close it, nothing else. */
static void conn_fail(struct conn *c, const char *op, int err)
{
    enum conn_reason reason =
        err == ECONNRESET || err == EPIPE ? CONN_RESET : CONN_ERROR;
    log_msg("conn=%" PRIu64 " error=%s %s: %s", c->id, reason_names[reason], op,
            strerror(err));
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

static void conn_pump(struct conn *c);

struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id)
{
    assert(pthread_equal(ctx->owner, pthread_self())); /* opened by its owner */
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL || idmap_put(&ctx->ids, id, c) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", id);
        free(c);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->ctx = ctx;
    c->id = id;
    c->reason = CONN_EOF;
    c->recv_op.kind = RING_OP_RECV;
    c->send_op.kind = RING_OP_SEND;
    c->cancel_recv_op.kind = RING_OP_CANCEL_RECV;
    c->cancel_send_op.kind = RING_OP_CANCEL_SEND;
    conn_touch(c);
    ctx->stats.conns++;
    conn_log_open(c);
    /* Replies are complete messages: send them now, not after Nagle's wait
     * for an ACK (notes/step02-framing.md).  A failure costs latency only. */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        log_msg("conn=%" PRIu64 " setsockopt(TCP_NODELAY): %s", id, strerror(errno));
    /* Bounds, not allocations: the input ring never holds more than one
     * incomplete frame when it grows; the output ring the high-water mark
     * plus one reply.  Memory is taken only as bytes arrive. */
    size_t frame_max = add_sat(FRAME_HEADER_LEN, ctx->max_frame);
    buf_init(&c->in, ctx->pool, frame_max);
    buf_init(&c->out, ctx->pool, add_sat(CONN_HIGH_WATER, frame_max));
    c->next = ctx->first;
    if (c->next)
        c->next->prev = c;
    ctx->first = c;
    conn_pump(c); /* the first recv */
    if (c->state == CONN_CLOSED) {
        conn_free_if_done(c);
        return NULL;
    }
    return c;
}

/* Look at the frame at the front of c->in (its header may wrap around the
 * end of the ring, so it is copied out; nothing is consumed). */
static enum frame_result conn_peek_frame(const struct conn *c, uint32_t *len)
{
    uint8_t hdr[FRAME_HEADER_LEN];
    size_t avail = buf_len(&c->in);
    buf_peek(&c->in, 0, hdr, avail < sizeof(hdr) ? avail : sizeof(hdr));
    return frame_decode(hdr, avail, c->ctx->max_frame, len);
}

/*
 * -b: make this reply cost `us` microseconds of this thread's CPU, as if
 * building it took real work (a lookup, a render).  Thread CPU time, not the
 * wall clock: a thread that is preempted halfway has not done the work.
 */
static void conn_simulate_work(uint32_t us)
{
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000 +
                 (now.tv_nsec - start.tv_nsec) / 1000 <
             (long)us);
}

/*
 * The reply to the complete frame of len payload bytes at the front of
 * c->in: a fresh header and the payload, side by side in c->out, so they
 * leave in one send.  The one place a reply is made.  With -a, the frame
 * goes to an application thread instead, and its reply's bytes count as
 * owed (c->inflight) until they come back through conn_deliver().
 * Returns 0, 1 when it must wait (c->out is pinned by a send and has no
 * room: the frame stays, and is answered after that send), -1 out of memory.
 */
static int conn_reply(struct conn *c, uint32_t len)
{
    struct conn_ctx *ctx = c->ctx;
    size_t frame = FRAME_HEADER_LEN + (size_t)len; /* cannot wrap: it is in c->in */
    if (ctx->apps != NULL) {
        /* The frame is its own echo: the same header, the same payload. */
        if (app_submit(ctx->apps, ctx->worker, c->id, &c->in, frame) < 0)
            return -1;
        c->inflight += frame;
        return 0;
    }
    if (c->out.pinned && buf_room(&c->out) < frame)
        return 1;
    if (ctx->work_us > 0)
        conn_simulate_work(ctx->work_us);
    uint8_t hdr[FRAME_HEADER_LEN];
    frame_write_header(hdr, len);
    if (buf_reserve(&c->out, frame) < 0 || buf_append(&c->out, hdr, sizeof(hdr)) < 0 ||
        buf_append_from(&c->out, &c->in, FRAME_HEADER_LEN, len) < 0)
        return -1;
    return 0;
}

/* Decode and answer frames while the replies owed stay within limit. */
static int conn_decode(struct conn *c, size_t limit)
{
    c->decode_waits = false;
    while (conn_owed(c) <= limit) {
        uint32_t len;
        enum frame_result r = conn_peek_frame(c, &len);
        if (r == FRAME_INCOMPLETE)
            return 0;
        if (r == FRAME_TOO_LARGE) {
            log_msg("conn=%" PRIu64 " error=protocol len=%" PRIu32 " max=%" PRIu32,
                    c->id, len, c->ctx->max_frame);
            c->reason = CONN_PROTOCOL;
            return -1;
        }
        int rc = conn_reply(c, len);
        if (rc > 0) {
            c->decode_waits = true; /* resumed by that send's completion */
            return 0;
        }
        log_debug("conn=%" PRIu64 " frame len=%" PRIu32, c->id, len);
        if (rc < 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            c->reason = CONN_ERROR;
            return -1;
        }
        buf_consume(&c->in, FRAME_HEADER_LEN + (size_t)len);
        c->frames++;
    }
    return 0;
}

int conn_process_frames(struct conn *c)
{
    return conn_decode(c, CONN_HIGH_WATER);
}

/*
 * How much room to make in c->in before the next read.  One byte, normally:
 * an empty ring then takes one pool block, and a read fills what is free.
 * When the frame at the front is larger than the free space, grow for what
 * has actually arrived of it - in the ring, and waiting in the socket
 * (FIONREAD) - never for what the header merely promises: 4 bytes can claim
 * 4 GiB, and a thousand such headers would reserve terabytes.  Once a
 * quarter of the frame has arrived, make room for all of it: one growth per
 * large frame instead of one per doubling, each copying what came before,
 * and still memory in proportion to what the client really sent.
 */
static size_t conn_read_room(const struct conn *c)
{
    uint32_t len;
    size_t avail = buf_len(&c->in);
    if (avail < FRAME_HEADER_LEN || conn_peek_frame(c, &len) != FRAME_INCOMPLETE)
        return 1;
    size_t missing = len - (avail - FRAME_HEADER_LEN); /* > 0: incomplete */
    if (missing <= c->in.cap - avail)
        return 1;
    int waiting = 0;
    if (ioctl(c->fd, FIONREAD, &waiting) < 0 || waiting <= 0)
        return 1;
    size_t arrived = avail + (size_t)waiting;
    if (arrived > len / 4) /* more than a quarter of the frame is here */
        return missing;
    return (size_t)waiting < missing ? (size_t)waiting : missing;
}

/*
 * Fill sqe for a recv or send on fd of the segments msg lists: one segment
 * (the common case) as IORING_OP_RECV/SEND of that buffer, two (the data
 * wraps around the ring's end) as RECVMSG/SENDMSG of the msghdr, which the
 * kernel must copy in and check first - about 3 % of the CPU when every
 * operation paid it.
 */
static void conn_prep_io(struct io_uring_sqe *sqe, int fd, struct msghdr *msg,
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
    }
}

/*
 * Submit a recv into the free space of c->in - at most CONN_READ_BUDGET
 * bytes, so one flooding client gets one budget per round, like everyone
 * else - unless one is in flight, or the connection must not read: closed,
 * draining (unless lingering, which reads to discard), paused by
 * backpressure, or the peer has closed.
 */
static void conn_start_recv(struct conn *c)
{
    if (c->recv_op.busy || c->state == CONN_CLOSED || c->peer_closed)
        return;
    /* Not while complete frames wait for room in c->out either: reading on
     * would pile input up past the ring's bound. */
    if (!c->lingering && (c->state != CONN_OPEN || c->read_paused || c->decode_waits))
        return;
    size_t want = c->lingering ? 1 : conn_read_room(c);
    if (buf_reserve(&c->in, want) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", c->id);
        conn_close(c, CONN_ERROR);
        return;
    }
    int k = buf_space_iov(&c->in, c->recv_iov);
    size_t room = 0;
    for (int i = 0; i < k; i++) {
        if (c->recv_iov[i].iov_len > CONN_READ_BUDGET - room)
            c->recv_iov[i].iov_len = CONN_READ_BUDGET - room;
        room += c->recv_iov[i].iov_len;
    }
    if (k == 2 && c->recv_iov[1].iov_len == 0)
        k = 1; /* the budget ends in the first segment: a plain RECV will do */
    c->recv_asked = room;
    c->recv_msg = (struct msghdr){.msg_iov = c->recv_iov, .msg_iovlen = (size_t)k};
    struct io_uring_sqe *sqe = ring_get_sqe(c->ctx->ring, &c->recv_op);
    conn_prep_io(sqe, c->fd, &c->recv_msg, IORING_OP_RECV, IORING_OP_RECVMSG);
    /* The last recv emptied the socket, so this one would most likely find
     * it empty, fail inside the kernel and then arm a poll: arm it first. */
    if (c->recv_drained && c->ctx->poll_first)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    buf_pin(&c->in); /* the kernel writes there until the completion */
    c->ops++;
}

/* Submit a send of c->out's data, unless one is in flight.
 * MSG_NOSIGNAL: a vanished peer is an error, not a SIGPIPE. */
static void conn_start_send(struct conn *c)
{
    if (c->send_op.busy || c->state == CONN_CLOSED || buf_len(&c->out) == 0)
        return;
    int k = buf_data_iov(&c->out, c->send_iov);
    c->send_msg = (struct msghdr){.msg_iov = c->send_iov, .msg_iovlen = (size_t)k};
    struct io_uring_sqe *sqe = ring_get_sqe(c->ctx->ring, &c->send_op);
    conn_prep_io(sqe, c->fd, &c->send_msg, IORING_OP_SEND, IORING_OP_SENDMSG);
    sqe->msg_flags = MSG_NOSIGNAL;
    buf_pin(&c->out); /* the kernel reads there until the completion */
    c->ops++;
}

/* Count the connection toward the timer: it must close by deadline. */
static void conn_set_deadline(struct conn *c, uint64_t deadline_ns)
{
    if (c->deadline_ns == 0)
        c->ctx->lingering++;
    c->deadline_ns = deadline_ns;
    if (c->ctx->wake_timer != NULL)
        c->ctx->wake_timer(c->ctx);
}

/*
 * Every reply owed has been handed to the kernel.  A peer that closed its
 * side gets our close at once.  A peer that may still be sending gets a
 * lingering close (延迟关闭): our FIN (shutdown(SHUT_WR)) after the replies,
 * then we read and discard its input until it closes too (EOF), or
 * CONN_LINGER_BYTES, or (conn_tick) the deadline.  Closing with unread input
 * would make the kernel send a reset and throw away replies not yet sent.
 */
static void conn_finish(struct conn *c)
{
    if (c->peer_closed) {
        conn_close(c, c->reason);
        return;
    }
    if (c->lingering)
        return;
    c->lingering = true;
    c->linger_left = CONN_LINGER_BYTES;
    if (c->deadline_ns == 0)
        conn_set_deadline(c, conn_now_ns() + CONN_LINGER_NS);
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_fail(c, "shutdown", errno);
        return;
    }
    conn_start_recv(c); /* the discarding read */
}

/* Stop reading; send what is owed; then finish (close, or linger). */
static void conn_drain(struct conn *c)
{
    if (c->state == CONN_OPEN)
        c->state = CONN_DRAINING;
    if (c->peer_closed && buf_len(&c->in) > 0 && c->reason == CONN_EOF) {
        log_msg("conn=%" PRIu64 " error=eof-mid-frame dropped=%zu", c->id,
                buf_len(&c->in));
        c->reason = CONN_EOF_MID_FRAME;
    }
    conn_pump(c);
}

/* A protocol error: the earlier replies still go out, within a bound. */
static void conn_protocol_error(struct conn *c)
{
    conn_set_deadline(c, conn_now_ns() + CONN_LINGER_NS);
    conn_drain(c);
}

/* Replies parked while the output ring was pinned: into it, in order. */
static void conn_unpark(struct conn *c)
{
    while (c->parked != NULL &&
           !(c->out.pinned && buf_room(&c->out) < c->parked->len)) {
        struct parked *p = c->parked;
        if (buf_append(&c->out, p->bytes, p->len) < 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            conn_close(c, CONN_ERROR);
            return;
        }
        c->parked = p->next;
        if (c->parked == NULL)
            c->parked_tail = NULL;
        c->parked_bytes -= p->len;
        free(p);
    }
}

/*
 * After every completion (and every delivered reply): answer what can be
 * answered, send, and read again if allowed - or, draining, finish once
 * nothing is owed.
 */
static void conn_pump(struct conn *c)
{
    conn_unpark(c);
    if (c->state == CONN_OPEN && conn_process_frames(c) < 0) {
        conn_protocol_error(c);
        return;
    }
    /* Draining (a shutdown), every whole frame already read is still owed a
     * reply; those whose replies found the pinned output ring full wait for
     * a send's completion, which brings us here. */
    if (c->state == CONN_DRAINING && c->decode_waits && conn_decode(c, SIZE_MAX) < 0) {
        conn_protocol_error(c);
        return;
    }
    if (c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_OPEN && c->peer_closed) {
        conn_drain(c);
        return;
    }
    /* Backpressure (背压): no recv while too much is owed; read again once
     * the queue is below the low-water mark. */
    if (conn_owed(c) > CONN_HIGH_WATER)
        c->read_paused = true;
    else if (c->read_paused && conn_owed(c) < CONN_LOW_WATER)
        c->read_paused = false;
    conn_start_send(c);
    if (c->state == CONN_DRAINING && !c->lingering && conn_owed(c) == 0 &&
        c->parked == NULL && !c->send_op.busy) {
        conn_finish(c);
        return;
    }
    conn_start_recv(c);
}

/* A recv completed: res bytes landed in c->in's free space (or an error). */
static void conn_on_recv(struct conn *c, int res)
{
    buf_unpin(&c->in);
    if (c->state == CONN_CLOSED)
        return; /* cancelled, or raced with the close: the bytes go with it */
    if (res > 0) {
        /* The kernel wrote these bytes after the system call that asked for
         * them returned: memcheck never saw the write. */
        size_t left = (size_t)res;
        for (int i = 0; i < (int)c->recv_msg.msg_iovlen && left > 0; i++) {
            size_t n = c->recv_iov[i].iov_len < left ? c->recv_iov[i].iov_len : left;
            VALGRIND_MAKE_MEM_DEFINED(c->recv_iov[i].iov_base, n);
            left -= n;
        }
        conn_touch(c);
        if (c->lingering) { /* discarding: count it and throw it away */
            if ((size_t)res >= c->linger_left) {
                conn_close(c, c->reason);
                return;
            }
            c->linger_left -= (size_t)res;
            buf_trim(&c->in);
            conn_start_recv(c);
            return;
        }
        buf_produce(&c->in, (size_t)res);
        c->bytes_in += (uint64_t)res;
        c->recv_drained = (size_t)res < c->recv_asked;
    } else if (res == 0) {
        buf_trim(&c->in);
        if (c->lingering) {
            conn_close(c, c->reason); /* the peer closed too: done */
            return;
        }
        c->peer_closed = true; /* EOF or half-close: decode what is left */
    } else if (res == -EINTR || res == -EAGAIN || res == -ECANCELED) {
        buf_trim(&c->in); /* nothing came (or the shutdown cancelled it) */
    } else {
        conn_fail(c, "read", -res);
        return;
    }
    conn_pump(c);
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
    if (res > 0) {
        buf_consume(&c->out, (size_t)res);
        c->bytes_out += (uint64_t)res;
        conn_touch(c);
    }
    conn_pump(c);
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
    assert(conn_on_owner(c)); /* no connection is touched by two threads */
    c->ops--;
    if (op->kind == RING_OP_RECV)
        conn_on_recv(c, res);
    else if (op->kind == RING_OP_SEND)
        conn_on_send(c, res);
    else if (res == -EALREADY && c->state == CONN_CLOSED)
        /* The operation runs in one of the kernel's worker threads, blocked
         * in the socket, past cancelling: ending the socket stops it. */
        shutdown(c->fd, SHUT_RDWR);
    conn_free_if_done(c);
}

void conn_deliver(struct conn_ctx *ctx, uint64_t id, const void *bytes, size_t len)
{
    struct conn *c = idmap_get(&ctx->ids, id);
    if (c == NULL || c->lingering) {
        ctx->stats.dropped_sends++; /* it closed meanwhile: nobody to tell */
        return;
    }
    c->inflight -= len < c->inflight ? len : c->inflight;
    if (c->parked != NULL || (c->out.pinned && buf_room(&c->out) < len)) {
        /* A send holds the ring, and it is full: wait behind it, in order. */
        struct parked *p = malloc(sizeof(*p) + len);
        if (p == NULL) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            conn_close(c, CONN_ERROR);
            conn_free_if_done(c);
            return;
        }
        *p = (struct parked){.len = len};
        memcpy(p->bytes, bytes, len);
        if (c->parked_tail)
            c->parked_tail->next = p;
        else
            c->parked = p;
        c->parked_tail = p;
        c->parked_bytes += len;
    } else if (buf_append(&c->out, bytes, len) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", c->id);
        conn_close(c, CONN_ERROR);
    }
    conn_pump(c);
    conn_free_if_done(c);
}

void conn_shutdown_all(struct conn_ctx *ctx)
{
    struct conn *next;
    for (struct conn *c = ctx->first; c != NULL; c = next) {
        next = c->next; /* c may close (and leave the list) right here */
        if (c->state != CONN_OPEN)
            continue; /* already draining: it finishes on its own */
        if (c->reason == CONN_EOF)
            c->reason = CONN_SHUTDOWN;
        /* Stop reading: a recv in flight is cancelled (its bytes, if any
         * arrive first, are not owed a reply: they came after the stop). */
        if (c->recv_op.busy)
            conn_cancel(c, &c->recv_op, &c->cancel_recv_op);
        /* Every complete frame already read is owed a reply, high water or
         * not: memory stays bounded by what the ring holds. */
        if (conn_decode(c, SIZE_MAX) < 0)
            conn_protocol_error(c);
        else
            conn_drain(c);
        conn_free_if_done(c);
    }
}

void conn_cut_all(struct conn_ctx *ctx)
{
    while (ctx->first != NULL) {
        struct conn *c = ctx->first;
        if (conn_owed(c) > 0) {
            ctx->stats.cut++;
            log_msg("conn=%" PRIu64 " error=cut owed=%zu: the shutdown deadline passed",
                    c->id, conn_owed(c));
            conn_close(c, CONN_CUT);
        } else {
            conn_close(c, c->reason); /* lingering: everything was sent */
        }
        conn_free_if_done(c);
    }
}

bool conn_tick(struct conn_ctx *ctx, uint64_t now_ns)
{
    struct conn *next;
    for (struct conn *c = ctx->first; c != NULL; c = next) {
        next = c->next;
        if (c->deadline_ns != 0 && now_ns >= c->deadline_ns) {
            conn_close(c, c->reason); /* lingering (or draining) too long */
        } else if (ctx->idle_ns > 0 && c->state == CONN_OPEN &&
                   now_ns - c->last_active_ns >= ctx->idle_ns) {
            log_debug("conn=%" PRIu64 " idle for %" PRIu64 " ms", c->id,
                      (now_ns - c->last_active_ns) / 1000000);
            conn_close(c, CONN_IDLE);
        }
        conn_free_if_done(c);
    }
    return ctx->lingering > 0 || (ctx->idle_ns > 0 && ctx->first != NULL);
}
