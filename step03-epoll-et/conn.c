/*
 * conn.c - a connection under edge-triggered epoll (边缘触发).
 *
 * Edge-triggered means epoll reports a socket once when it *becomes*
 * readable (or writable), not again while it stays so.  Three rules follow,
 * and each has a test in tests/03-epoll.bats:
 *
 *   1. Drain: on EPOLLIN, read until read() says EAGAIN.  Bytes left in the
 *      socket get no second notification.  (EAGAIN is not "end of message":
 *      it only means "nothing more right now"; the frame decoder, not the
 *      read loop, knows where messages end.)
 *   2. But not forever: a per-turn read budget keeps one flooding client
 *      from starving the rest.  A connection stopped by its budget goes on
 *      the loop's ready list, because nothing else will bring it back.
 *   3. Backpressure: above CONN_HIGH_WATER bytes of unsent replies, stop
 *      reading; when the client has taken enough (below CONN_LOW_WATER),
 *      resume via the ready list, again because no edge will come for
 *      bytes already waiting in the socket.
 */
#include "conn.h"
#include "frame.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define EVENTS_BASE (EPOLLIN | EPOLLRDHUP | EPOLLET)

static void conn_on_event(struct watch *w, uint32_t events);

static void conn_destroy(struct watch *w)
{
    struct conn *c = (struct conn *)w;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Close now.  The memory goes after the current batch (see loop_release). */
static void conn_close(struct conn *c, const char *reason)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    log_debug("conn=%" PRIu64 " close reason=%s frames=%" PRIu64 " bytes_in=%" PRIu64
              " bytes_out=%" PRIu64,
              c->id, reason, c->frames, c->bytes_in, c->bytes_out);
    loop_release(c->ctx->loop, &c->watch, conn_destroy);
    close(c->watch.fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->ctx->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->ctx->open_conns--;
}

/* An I/O error on this connection: log it and close it, nothing else. */
static void conn_fail(struct conn *c, const char *op, int err)
{
    const char *reason = err == ECONNRESET || err == EPIPE ? "reset" : "error";
    log_msg("conn=%" PRIu64 " error=%s %s: %s", c->id, reason, op, strerror(err));
    conn_close(c, reason);
}

struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->watch.fd = fd;
    c->watch.on_event = conn_on_event;
    c->ctx = ctx;
    c->id = id;
    c->reason = "eof";
    /* The input ring must hold one whole frame plus one read; the output
     * ring the high-water mark plus the replies to one input ring. */
    size_t in_max = (size_t)FRAME_HEADER_LEN + ctx->max_frame + CONN_READ_BUDGET;
    buf_init(&c->in, ctx->pool, in_max * 2);
    buf_init(&c->out, ctx->pool, (CONN_HIGH_WATER + in_max) * 2);
    if (loop_add(ctx->loop, &c->watch, EVENTS_BASE) < 0) {
        log_msg("conn=%" PRIu64 " error=error epoll_ctl: %s", id, strerror(errno));
        close(fd);
        free(c);
        return NULL;
    }
    c->next = ctx->first;
    if (c->next)
        c->next->prev = c;
    ctx->first = c;
    ctx->open_conns++;
    return c;
}

/* Register EPOLLOUT only while replies are waiting for room in the socket. */
static void conn_want_write(struct conn *c, bool on)
{
    if (c->want_write == on)
        return;
    if (loop_modify(c->ctx->loop, &c->watch, EVENTS_BASE | (on ? EPOLLOUT : 0)) < 0) {
        conn_fail(c, "epoll_ctl", errno);
        return;
    }
    c->want_write = on;
}

/*
 * Write as much of c->out as the socket takes, with one sendmsg() per pass
 * over the ring's (at most) two segments.  sendmsg, not writev: only send
 * calls take MSG_NOSIGNAL, and a vanished peer must not raise SIGPIPE.
 */
static void conn_flush(struct conn *c)
{
    while (buf_len(&c->out) > 0) {
        struct iovec iov[2];
        struct msghdr msg = {.msg_iov = iov,
                             .msg_iovlen = (size_t)buf_data_iov(&c->out, iov)};
        ssize_t n = sendmsg(c->watch.fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_want_write(c, true); /* the socket is full: wait for room */
            return;
        }
        if (n < 0) {
            conn_fail(c, "write", errno);
            return;
        }
        buf_consume(&c->out, (size_t)n);
        c->bytes_out += (uint64_t)n;
    }
    conn_want_write(c, false);
}

/*
 * Decode every complete frame in c->in and queue its reply in c->out, until
 * the input runs out or the replies reach the high-water mark.  Returns -1
 * on a protocol error (or when a reply cannot be buffered).
 */
static int conn_process_frames(struct conn *c)
{
    while (buf_len(&c->out) <= CONN_HIGH_WATER) {
        uint8_t hdr[FRAME_HEADER_LEN];
        size_t avail = buf_len(&c->in);
        /* Copy the header out: it may wrap around the end of the ring. */
        buf_peek(&c->in, 0, hdr, avail < sizeof(hdr) ? avail : sizeof(hdr));
        uint32_t len;
        enum frame_result r = frame_decode(hdr, avail, c->ctx->max_frame, &len);
        if (r == FRAME_INCOMPLETE)
            return 0;
        if (r == FRAME_TOO_LARGE) {
            log_msg("conn=%" PRIu64 " error=protocol len=%" PRIu32 " max=%" PRIu32,
                    c->id, len, c->ctx->max_frame);
            c->reason = "protocol";
            return -1;
        }
        log_debug("conn=%" PRIu64 " frame len=%" PRIu32, c->id, len);
        frame_write_header(hdr, len);
        if (buf_reserve(&c->out, sizeof(hdr) + len) < 0 ||
            buf_append(&c->out, hdr, sizeof(hdr)) < 0 ||
            buf_append_from(&c->out, &c->in, FRAME_HEADER_LEN, len) < 0) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            c->reason = "error";
            return -1;
        }
        buf_consume(&c->in, FRAME_HEADER_LEN + (size_t)len);
        c->frames++;
    }
    return 0;
}

/*
 * One readv() into the free space of c->in, at most `budget` bytes.
 * Returns bytes read, 0 at EOF, -1 with errno (EAGAIN: drained).
 */
static ssize_t conn_read_once(struct conn *c, size_t budget)
{
    /* Ask for one byte of room, not a whole budget: an empty ring then takes
     * one pool block.  But when the header of a larger frame is already in,
     * make room for the whole frame at once, not by repeated doubling. */
    size_t want = 1, avail = buf_len(&c->in);
    if (avail >= FRAME_HEADER_LEN) {
        uint8_t hdr[FRAME_HEADER_LEN];
        uint32_t len;
        buf_peek(&c->in, 0, hdr, sizeof(hdr));
        if (frame_decode(hdr, avail, c->ctx->max_frame, &len) == FRAME_INCOMPLETE)
            want = FRAME_HEADER_LEN + (size_t)len - avail;
    }
    if (buf_reserve(&c->in, want) < 0) {
        errno = ENOMEM;
        return -1;
    }
    struct iovec iov[2];
    int k = buf_space_iov(&c->in, iov);
    size_t room = 0;
    for (int i = 0; i < k; i++) {
        if (iov[i].iov_len > budget - room)
            iov[i].iov_len = budget - room;
        room += iov[i].iov_len;
    }
    ssize_t n;
    do {
        n = readv(c->watch.fd, iov, k);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        buf_produce(&c->in, (size_t)n);
        c->bytes_in += (uint64_t)n;
    } else {
        int saved = errno;
        buf_trim(&c->in); /* nothing came: an idle connection keeps no block */
        errno = saved;
    }
    return n;
}

/* Stop reading; send what is owed; close once it is all sent. */
static void conn_drain(struct conn *c)
{
    if (c->state == CONN_OPEN)
        c->state = CONN_DRAINING;
    if (c->peer_closed && buf_len(&c->in) > 0 && strcmp(c->reason, "eof") == 0) {
        log_msg("conn=%" PRIu64 " error=eof-mid-frame dropped=%zu", c->id,
                buf_len(&c->in));
        c->reason = "eof-mid-frame";
    }
    conn_flush(c);
    if (c->state == CONN_DRAINING && buf_len(&c->out) == 0)
        conn_close(c, c->reason);
}

/*
 * Readable (or a ready-list visit): decode what is buffered, then read and
 * decode until EAGAIN, EOF, the budget, or the high-water mark stops us.
 */
static void conn_on_readable(struct conn *c)
{
    size_t budget = CONN_READ_BUDGET;
    for (;;) {
        if (conn_process_frames(c) < 0) {
            conn_drain(c); /* protocol error: earlier replies still go out */
            return;
        }
        if (buf_len(&c->out) > CONN_HIGH_WATER) {
            c->read_paused = true; /* resumed from conn_on_writable() */
            break;
        }
        if (c->peer_closed)
            break;
        if (budget == 0) {
            loop_make_ready(c->ctx->loop, &c->watch); /* more may be waiting */
            break;
        }
        ssize_t n = conn_read_once(c, budget);
        if (n > 0) {
            budget -= (size_t)n;
            continue;
        }
        if (n == 0) {
            c->peer_closed = true; /* EOF or half-close: decode what is left */
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break; /* drained: the next edge will bring us back */
        if (errno == ENOMEM) {
            log_msg("conn=%" PRIu64 " error=nomem", c->id);
            conn_close(c, "error");
        } else {
            conn_fail(c, "read", errno);
        }
        return;
    }
    if (c->peer_closed) {
        conn_drain(c);
        return;
    }
    /* Write directly when nothing is queued; while EPOLLOUT is pending the
     * socket is full and a write now would only return EAGAIN. */
    if (!c->want_write)
        conn_flush(c);
}

static void conn_on_writable(struct conn *c)
{
    conn_flush(c);
    if (c->state != CONN_OPEN) {
        if (c->state == CONN_DRAINING && buf_len(&c->out) == 0)
            conn_close(c, c->reason);
        return;
    }
    if (c->read_paused && buf_len(&c->out) < CONN_LOW_WATER) {
        c->read_paused = false;
        loop_make_ready(c->ctx->loop, &c->watch);
    }
}

static void conn_on_event(struct watch *w, uint32_t events)
{
    struct conn *c = (struct conn *)w;
    if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        conn_fail(c, "socket", err ? err : ECONNRESET);
        return;
    }
    if (c->state == CONN_OPEN && !c->read_paused &&
        (events == 0 || (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))))
        conn_on_readable(c);
    if (c->state != CONN_CLOSED && (events & EPOLLOUT))
        conn_on_writable(c);
}
