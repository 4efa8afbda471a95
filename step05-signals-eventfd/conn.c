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
 *      reading; as soon as a write takes the queue below CONN_LOW_WATER -
 *      whichever write that is - resume via the ready list, again because
 *      no edge will come for bytes already waiting in the socket.
 *
 * A connection lives on one worker thread, from conn_open() to its
 * destruction; the entry points assert it.
 *
 * New in step05: a connection has an id that other threads send to
 * (conn_deliver()); with -a its replies are built by application threads,
 * and the bytes they still owe count toward the high-water mark; a protocol
 * error or a shutdown ends with a lingering close; -i closes idle
 * connections; a graceful shutdown drains every connection.
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
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_BASE (EPOLLIN | EPOLLRDHUP | EPOLLET)

static const char *const reason_names[] = {
    [CONN_EOF] = "eof",           [CONN_EOF_MID_FRAME] = "eof-mid-frame",
    [CONN_PROTOCOL] = "protocol", [CONN_RESET] = "reset",
    [CONN_ERROR] = "error",       [CONN_IDLE] = "idle",
    [CONN_SHUTDOWN] = "shutdown", [CONN_CUT] = "cut",
};

static void conn_on_event(struct watch *w, uint32_t events);

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

/* Replies owed: queued here, and still being built at application threads. */
static size_t conn_owed(const struct conn *c)
{
    return buf_len(&c->out) + c->inflight;
}

/* -i: note traffic (only when idle timeouts are on: a clock read is cheap,
 * not free). */
static void conn_touch(struct conn *c)
{
    if (c->ctx->idle_ns > 0)
        c->last_active_ns = conn_now_ns();
}

static void conn_destroy(struct watch *w)
{
    struct conn *c = container_of(w, struct conn, watch);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Close now.  The memory goes after the current batch (see loop_release). */
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
    loop_release(ctx->loop, &c->watch, conn_destroy);
    close(c->watch.fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (ctx->first == NULL && ctx->on_empty != NULL)
        ctx->on_empty(ctx);
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
    if (getpeername(c->watch.fd, (struct sockaddr *)&peer, &len) == 0)
        net_format_addr((struct sockaddr *)&peer, name, sizeof(name));
    log_msg("conn=%" PRIu64 " open worker=%d peer=%s", c->id, c->ctx->worker, name);
}

struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id)
{
    assert(loop_is_owner(ctx->loop)); /* opened on the worker that owns it */
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL || idmap_put(&ctx->ids, id, c) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", id);
        free(c);
        close(fd);
        return NULL;
    }
    c->watch.fd = fd;
    c->watch.on_event = conn_on_event;
    c->ctx = ctx;
    c->id = id;
    c->reason = CONN_EOF;
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
    if (loop_add(ctx->loop, &c->watch, EVENTS_BASE) < 0) {
        log_msg("conn=%" PRIu64 " error=error epoll_ctl: %s", id, strerror(errno));
        idmap_remove(&ctx->ids, id);
        close(fd);
        free(c);
        return NULL;
    }
    c->next = ctx->first;
    if (c->next)
        c->next->prev = c;
    ctx->first = c;
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
 * Backpressure lifts wherever the output shrinks, not only on EPOLLOUT: a
 * direct write may send everything at once, and then no EPOLLOUT will ever
 * come.  (muduo does the same in its write path.)  The bytes the client
 * sent meanwhile sit in the socket, and no edge will announce them: so the
 * connection goes on the ready list.
 */
static void conn_maybe_resume(struct conn *c)
{
    if (c->state == CONN_OPEN && c->read_paused && conn_owed(c) < CONN_LOW_WATER) {
        c->read_paused = false;
        loop_make_ready(c->ctx->loop, &c->watch);
    }
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
            conn_maybe_resume(c);
            return;
        }
        if (n < 0) {
            conn_fail(c, "write", errno);
            return;
        }
        buf_consume(&c->out, (size_t)n);
        c->bytes_out += (uint64_t)n;
        conn_touch(c);
    }
    conn_want_write(c, false);
    conn_maybe_resume(c);
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
 * leave in one write.  The one place a reply is made.  With -a, the frame
 * goes to an application thread instead, and its reply's bytes count as
 * owed (c->inflight) until they come back through conn_deliver().
 * Returns -1 out of memory.
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
        log_debug("conn=%" PRIu64 " frame len=%" PRIu32, c->id, len);
        if (conn_reply(c, len) < 0) {
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
    if (ioctl(c->watch.fd, FIONREAD, &waiting) < 0 || waiting <= 0)
        return 1;
    size_t arrived = avail + (size_t)waiting;
    if (arrived > len / 4) /* more than a quarter of the frame is here */
        return missing;
    return (size_t)waiting < missing ? (size_t)waiting : missing;
}

/*
 * One readv() into the free space of c->in, at most `budget` bytes.
 * Returns bytes read, 0 at EOF, -1 with errno (EAGAIN: drained).
 */
static ssize_t conn_read_once(struct conn *c, size_t budget)
{
    if (buf_reserve(&c->in, conn_read_room(c)) < 0) {
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
        conn_touch(c);
    } else {
        int saved = errno;
        buf_trim(&c->in); /* nothing came: an idle connection keeps no block */
        errno = saved;
    }
    return n;
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
 * Lingering close (延迟关闭): read and throw away what the peer still
 * sends, until it closes (EOF), or CONN_LINGER_BYTES, or (conn_tick) the
 * deadline.  Closing with unread input would make the kernel send a reset
 * and throw away replies not yet transmitted.
 */
static void conn_discard(struct conn *c)
{
    uint8_t sink[16384];
    for (;;) {
        ssize_t n = read(c->watch.fd, sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* wait for more, or for EOF */
        if (n <= 0 || (size_t)n >= c->linger_left) {
            conn_close(c, c->reason); /* EOF, an error, or enough */
            return;
        }
        c->linger_left -= (size_t)n;
    }
}

/*
 * Every reply owed has been handed to the kernel.  A peer that closed its
 * side gets our close at once.  A peer that may still be sending gets a
 * lingering close: our FIN (shutdown(SHUT_WR)) after the replies, then we
 * discard its input until it closes too.
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
    if (shutdown(c->watch.fd, SHUT_WR) < 0) {
        conn_fail(c, "shutdown", errno);
        return;
    }
    conn_discard(c);
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
    conn_flush(c);
    if (c->state == CONN_DRAINING && conn_owed(c) == 0)
        conn_finish(c);
}

/* A protocol error: the earlier replies still go out, within a bound. */
static void conn_protocol_error(struct conn *c)
{
    conn_set_deadline(c, conn_now_ns() + CONN_LINGER_NS);
    conn_drain(c);
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
            conn_protocol_error(c);
            return;
        }
        if (conn_owed(c) > CONN_HIGH_WATER) {
            c->read_paused = true; /* conn_maybe_resume() lifts it */
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
            conn_close(c, CONN_ERROR);
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
    if (c->state == CONN_DRAINING && !c->lingering && conn_owed(c) == 0)
        conn_finish(c);
}

static void conn_on_event(struct watch *w, uint32_t events)
{
    struct conn *c = container_of(w, struct conn, watch);
    assert(loop_is_owner(c->ctx->loop)); /* no connection is touched by two threads */
    if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        conn_fail(c, "socket", err ? err : ECONNRESET);
        return;
    }
    bool readable = events == 0 || (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP));
    if (c->state == CONN_OPEN && !c->read_paused && readable)
        conn_on_readable(c);
    else if (c->lingering && readable)
        conn_discard(c);
    if (c->state != CONN_CLOSED && (events & EPOLLOUT))
        conn_on_writable(c);
}

void conn_deliver(struct conn_ctx *ctx, uint64_t id, const void *bytes, size_t len)
{
    struct conn *c = idmap_get(&ctx->ids, id);
    if (c == NULL || c->lingering) {
        ctx->stats.dropped_sends++; /* it closed meanwhile: nobody to tell */
        return;
    }
    c->inflight -= len < c->inflight ? len : c->inflight;
    if (buf_append(&c->out, bytes, len) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", c->id);
        conn_close(c, CONN_ERROR);
        return;
    }
    if (!c->want_write)
        conn_flush(c);
    if (c->state == CONN_DRAINING && conn_owed(c) == 0)
        conn_finish(c);
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
        /* Every complete frame already read is owed a reply, high water or
         * not: memory stays bounded by what the ring holds. */
        if (conn_decode(c, SIZE_MAX) < 0) {
            conn_protocol_error(c);
            continue;
        }
        conn_drain(c);
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
    }
    return ctx->lingering > 0 || (ctx->idle_ns > 0 && ctx->first != NULL);
}
