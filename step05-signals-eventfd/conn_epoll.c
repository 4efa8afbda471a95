/*
 * conn_epoll.c - the transport (传输) of a connection: nonblocking sockets
 * under edge-triggered epoll (边缘触发).  conn.c says what the bytes mean;
 * this file only moves them.
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
 *   3. Write directly; register EPOLLOUT only while replies wait for room
 *      in the socket, and take it away once they are sent (a socket with
 *      room is writable all the time: a level we do not want to hear).
 *
 * New in step04: a connection lives on one worker thread, from conn_open()
 * to its destruction; the entry points check it.  The open line names the
 * worker.
 *
 * New in step05: a lingering connection reads to throw its input away
 * (conn_discard); conn_unsent() and conn_shut_wr() for linger.c.
 */
#include "conn.h"
#include "linger.h"
#include "log.h"
#include "net.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/socket.h>
#include <unistd.h>

#define EVENTS_BASE (EPOLLIN | EPOLLRDHUP | EPOLLET)

static void conn_on_event(struct watch *w, uint32_t events);

static void conn_destroy(struct watch *w)
{
    struct conn *c = container_of(w, struct conn, watch);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Close now.  The memory goes after the current batch (see loop_release). */
void conn_close(struct conn *c, enum conn_reason reason)
{
    if (c->state == CONN_CLOSED)
        return;
    conn_end(c, reason);
    loop_release(c->ctx->loop, &c->watch, conn_destroy);
    close(c->watch.fd);
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
    if (getpeername(c->watch.fd, (struct sockaddr *)&peer, &len) == 0)
        net_format_addr((struct sockaddr *)&peer, name, sizeof(name));
    log_msg("conn=%" PRIu64 " open worker=%d peer=%s", c->id, c->ctx->worker, name);
}

struct conn *conn_open(struct conn_ctx *ctx, int fd, uint64_t id)
{
    ENSURE(loop_is_owner(ctx->loop),
           "a connection is opened by the worker that owns it");
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        log_msg("conn=%" PRIu64 " error=nomem", id);
        close(fd);
        return NULL;
    }
    c->watch.fd = fd;
    c->watch.on_event = conn_on_event;
    if (conn_init(c, ctx, id) < 0) {
        log_msg("conn=%" PRIu64 " error=nomem", id);
        close(fd);
        free(c);
        return NULL;
    }
    conn_log_open(c);
    /* Replies are complete messages: send them now, not after Nagle's wait
     * for an ACK (notes/step02-framing.md).  A failure costs latency only. */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        log_msg("conn=%" PRIu64 " setsockopt(TCP_NODELAY): %s", id, strerror(errno));
    if (loop_add(ctx->loop, &c->watch, EVENTS_BASE) < 0) {
        log_msg("conn=%" PRIu64 " error=error epoll_ctl: %s", id, strerror(errno));
        conn_end(c, CONN_ERROR); /* never watched: nothing to release */
        close(fd);
        free(c);
        return NULL;
    }
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
static void conn_write(struct conn *c)
{
    while (buf_len(&c->out) > 0) {
        struct iovec iov[2];
        struct msghdr msg = {.msg_iov = iov,
                             .msg_iovlen = (size_t)buf_data_iov(&c->out, iov)};
        ssize_t n = sendmsg(c->watch.fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_send_blocked(c); /* the client has not read: bound the wait */
            break; /* the socket is full: wait for room (below) */
        }
        if (n < 0) {
            conn_fail(c, "write", errno);
            return;
        }
        conn_sent(c, (size_t)n);
    }
    conn_want_write(c, buf_len(&c->out) > 0);
    if (c->state != CONN_CLOSED)
        conn_after_send(c);
}

void conn_flush(struct conn *c)
{
    /* Write directly when nothing is queued.  While EPOLLOUT is registered
     * the socket is full, and a write now would only return EAGAIN: the
     * event will bring us back (conn_write). */
    if (c->want_write)
        conn_after_send(c);
    else
        conn_write(c);
}

void conn_read_again(struct conn *c)
{
    loop_make_ready(c->ctx->loop, &c->watch);
}

size_t conn_waiting(const struct conn *c)
{
    int waiting = 0;
    if (ioctl(c->watch.fd, FIONREAD, &waiting) < 0 || waiting < 0)
        return 0;
    return (size_t)waiting;
}

size_t conn_unsent(const struct conn *c)
{
    int unsent = 0;
    if (ioctl(c->watch.fd, SIOCOUTQ, &unsent) < 0 || unsent < 0)
        return 0; /* nothing to wait for that we could see */
    return (size_t)unsent;
}

int conn_shut_wr(struct conn *c)
{
    return shutdown(c->watch.fd, SHUT_WR);
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
    if (setsockopt(c->watch.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
        log_msg("conn=%" PRIu64 " setsockopt(SO_LINGER): %s", c->id, strerror(errno));
}

/* Lingering: read and throw away what the peer still sends, until EOF or
 * EAGAIN, or until linger.c says enough (linger_left drops to 0). */
static void conn_discard(struct conn *c)
{
    uint8_t sink[16384];
    while (c->state == CONN_LINGERING && c->linger_left > 0) {
        ssize_t n = read(c->watch.fd, sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* wait for more, or for EOF */
        if (n < 0) {
            conn_fail(c, "read", errno);
            return;
        }
        conn_discarded(c, (size_t)n);
    }
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
        conn_received(c, (size_t)n);
    } else {
        int saved = errno;
        buf_trim(&c->in); /* nothing came: an idle connection keeps no block */
        errno = saved;
    }
    return n;
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
        if (c->read_paused || c->peer_closed)
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
    if (c->peer_closed)
        conn_drain(c);
    else
        conn_flush(c);
}

static void conn_on_event(struct watch *w, uint32_t events)
{
    struct conn *c = container_of(w, struct conn, watch);
    ENSURE(loop_is_owner(c->ctx->loop), "no connection is touched by two threads");
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
    else if (c->state == CONN_LINGERING && readable)
        conn_discard(c);
    if (c->state != CONN_CLOSED && (events & EPOLLOUT))
        conn_write(c);
}
