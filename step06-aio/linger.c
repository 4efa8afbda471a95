/*
 * linger.c - how a connection ends without losing the replies it is owed:
 * the lingering close (延迟关闭), the bounds that keep it from lasting for
 * ever, and the graceful shutdown (优雅退出) of every connection.
 *
 * The trap: close() on a socket whose peer has sent bytes we have not read
 * makes the kernel answer with a reset (RST) - and throw away everything
 * still in the socket's send queue: replies we handed to the kernel, that
 * the client has not received yet.  On loopback they usually crossed
 * already; on a real network, or with a client that reads slowly, they are
 * lost.  So a connection that ends while its peer may still be sending:
 *
 *   1. sends every reply it owes (DRAINING), then shutdown(SHUT_WR): our
 *      FIN goes after the replies;
 *   2. reads and throws away what the peer still sends (LINGERING), until
 *      the peer closes too - then close() is safe: nothing is unread;
 *   3. if the peer goes on sending (past CONN_LINGER_BYTES or
 *      CONN_LINGER_NS), stops reading, and waits until the kernel's send
 *      queue is empty (SIOCOUTQ 0: every reply acknowledged by the peer's
 *      TCP) before it closes.  A reset then loses nothing.
 *
 * Every wait for the client has a bound: a connection whose replies wait
 * for room in its socket, that stopped reading for backpressure, or is
 * draining or lingering, and makes no progress for
 * -t seconds (its client does not read: the kernel's send queue does not
 * shrink) is cut; with -i, so is one whose client leaves replies unread
 * (never closed as idle while anything is owed); at a shutdown the -g
 * deadline cuts every connection still owed data.  A wait
 * for the server's own application threads is not the client's stall: it
 * is bounded by the worker's job budget, and by -g.  A connection closed
 * with data owed - in the server or in the kernel - is counted as cut,
 * never as delivered.
 *
 * New in step05.  Try it: tests/05-signals-eventfd.bats, "lingering close".
 */
#include "linger.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t conn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* -i: note traffic (only when idle timeouts are on: a clock read is cheap,
 * not free). */
void conn_touch(struct conn *c)
{
    if (c->ctx->idle_ns > 0)
        c->last_active_ns = conn_now_ns();
}

void conn_set_deadline(struct conn *c, uint64_t deadline_ns)
{
    if (c->deadline_ns == 0 && deadline_ns != 0)
        c->ctx->timed++;
    else if (c->deadline_ns != 0 && deadline_ns == 0)
        c->ctx->timed--;
    c->deadline_ns = deadline_ns;
    if (deadline_ns != 0 && c->ctx->wake_timer != NULL)
        c->ctx->wake_timer(c->ctx);
}

void conn_stall_start(struct conn *c, uint64_t now_ns)
{
    c->unsent = conn_unsent(c);
    conn_set_deadline(c, now_ns + c->ctx->stall_ns);
}

/*
 * Replies wait in c->out because the socket is full: the client has not
 * read what the kernel holds.  Not only a paused connection needs the
 * bound: a client that sends a few megabytes and then neither reads nor
 * sends leaves the server below its high-water mark - reading, never
 * paused - with c->out full of replies, for ever.  So the bound starts at
 * the first send the socket cut short, measured from a full send queue;
 * every byte sent restarts it (conn_sent), and it ends once the client has
 * caught up: nothing in c->out, nothing in the kernel's send queue
 * (conn_after_send(), or the tick).  Ending it as soon as c->out is empty
 * would let go of a client that stops once the kernel has taken the rest.
 */
void conn_send_blocked(struct conn *c)
{
    if (c->state == CONN_OPEN && c->deadline_ns == 0 && !c->ctx->stopping)
        conn_stall_start(c, conn_now_ns());
}

/* Close a connection that is still owed data (unsent: what the kernel
 * holds), and say why. */
static void conn_cut(struct conn *c, size_t unsent, const char *why)
{
    c->ctx->stats.cut++;
    log_msg("conn=%" PRIu64 " error=cut owed=%zu unsent=%zu: %s", c->id, conn_owed(c),
            unsent, why);
    if (unsent > 0)
        conn_abort(c); /* what the kernel holds goes too: a reset */
    conn_close(c, CONN_CUT);
}

static void conn_cut_stalled(struct conn *c, size_t unsent)
{
    char why[64];
    snprintf(why, sizeof(why), "no progress for %" PRIu64 " s (-t)",
             c->ctx->stall_ns / 1000000000u);
    conn_cut(c, unsent, why);
}

/*
 * The stall bound of an open connection (paused by backpressure, or with
 * replies unread at an -i tick) or of a draining one: -t seconds since
 * it started, or since the last byte went to the kernel.  Progress is the
 * client's reading, and that shows in the kernel's send queue: smaller than
 * when the bound started, the client reads (a slow reader may drain the
 * queue for many seconds before the socket is writable again and we send
 * another byte).  Replies waiting, in c->out or in the kernel, and a queue
 * that did not shrink: the client stopped reading, cut.  Nothing waiting
 * for the client - all it is owed is at the application threads - is the
 * server's own wait, never a stall.
 */
static void conn_stall_tick(struct conn *c, uint64_t now_ns)
{
    size_t unsent = conn_unsent(c);
    if (buf_len(&c->out) > 0 || unsent > 0) {
        if (unsent < c->unsent)
            conn_stall_start(c, now_ns); /* the client reads: more time */
        else
            conn_cut_stalled(c, unsent);
    } else if (c->state == CONN_OPEN && !c->read_paused) {
        conn_set_deadline(c, 0); /* every reply delivered: back to -i */
    } else {
        conn_stall_start(c, now_ns); /* the server's wait: on */
    }
}

/* -i: no traffic for that long.  Idle only if nothing is owed.  Replies the
 * client has not read yet (in c->out, or in the kernel) make it not idle
 * but a question for the stall bound: does it still read?  Replies the
 * application threads are still building are the server's wait. */
static void conn_idle_tick(struct conn *c, uint64_t now_ns)
{
    uint64_t ms = (now_ns - c->last_active_ns) / 1000000;
    if (buf_len(&c->out) > 0 || conn_unsent(c) > 0) {
        log_debug("conn=%" PRIu64 " no traffic for %" PRIu64
                  " ms, but replies unread: the stall bound decides",
                  c->id, ms);
        conn_stall_start(c, now_ns);
    } else if (c->inflight == 0) {
        log_debug("conn=%" PRIu64 " idle for %" PRIu64 " ms", c->id, ms);
        conn_close(c, CONN_IDLE);
    }
}

void conn_finish(struct conn *c)
{
    if (c->peer_closed) {
        /* Nothing more will come, and everything that came was read: no
         * reset.  The kernel delivers the rest of the replies on its own. */
        conn_close(c, c->reason);
        return;
    }
    c->state = CONN_LINGERING;
    c->linger_left = CONN_LINGER_BYTES;
    c->unsent = SIZE_MAX;
    conn_set_deadline(c, conn_now_ns() + CONN_LINGER_NS);
    /* What is left of the input (a partial frame, bytes after a bad
     * header) is never answered now. */
    buf_consume(&c->in, buf_len(&c->in));
    if (conn_shut_wr(c) < 0) {
        log_msg("conn=%" PRIu64 " error=error shutdown: %s", c->id, strerror(errno));
        conn_close(c, CONN_ERROR);
        return;
    }
    log_debug("conn=%" PRIu64
              " linger: every reply sent, then our FIN; discarding input",
              c->id);
    conn_read_again(c); /* the discarding reads */
}

/* Reading no more: the connection closes once the kernel has delivered
 * every reply (checked now, and on every tick). */
static void conn_stop_discarding(struct conn *c, uint64_t now_ns)
{
    c->linger_left = 0;
    conn_set_deadline(c, now_ns + c->ctx->stall_ns);
    size_t unsent = conn_unsent(c);
    log_debug("conn=%" PRIu64 " linger: reading no more; closing once the peer has "
              "%zu bytes",
              c->id, unsent);
    if (unsent == 0)
        conn_close(c, c->reason);
    else
        c->unsent = unsent;
}

void conn_discarded(struct conn *c, size_t n)
{
    if (n == 0) {
        conn_close(c, c->reason); /* EOF: the peer closed too, nothing is unread */
        return;
    }
    conn_touch(c);
    if (n < c->linger_left)
        c->linger_left -= n;
    else
        conn_stop_discarding(c, conn_now_ns()); /* enough: it may never stop */
}

/* A tick for a lingering connection. */
static void conn_linger_tick(struct conn *c, uint64_t now_ns)
{
    if (c->linger_left > 0) {
        if (now_ns >= c->deadline_ns)
            conn_stop_discarding(c, now_ns);
        return;
    }
    size_t unsent = conn_unsent(c);
    if (unsent == 0) {
        conn_close(c, c->reason); /* every reply acknowledged: a reset loses nothing */
    } else if (unsent < c->unsent) {
        c->unsent = unsent; /* the client reads: give it more time */
        conn_set_deadline(c, now_ns + c->ctx->stall_ns);
    } else if (now_ns >= c->deadline_ns && !c->ctx->stopping) {
        conn_cut_stalled(c, unsent);
    }
}

void conn_shutdown_all(struct conn_ctx *ctx)
{
    ctx->stopping = true;
    struct conn *next;
    for (struct conn *c = ctx->first; c != NULL; c = next) {
        next = c->next; /* c may close (and leave the list) right here */
        if (c->state != CONN_LINGERING)
            conn_set_deadline(c, 0); /* -g bounds it now, not the stall */
        if (c->state != CONN_OPEN)
            continue; /* already ending */
        if (c->reason == CONN_EOF)
            c->reason = CONN_SHUTDOWN;
        /* Every complete frame already read is owed a reply, high water or
         * not: memory stays bounded by what the ring holds.  A bad frame
         * among them sets c->reason; the replies before it still go out. */
        (void)conn_decode(c, SIZE_MAX);
        conn_drain(c);
    }
}

void conn_cut_all(struct conn_ctx *ctx)
{
    while (ctx->first != NULL) {
        struct conn *c = ctx->first;
        size_t unsent = conn_unsent(c);
        if (conn_owed(c) > 0 || unsent > 0)
            conn_cut(c, unsent, "the shutdown deadline passed");
        else
            conn_close(c, c->reason); /* everything was delivered */
    }
}

bool conn_tick(struct conn_ctx *ctx, uint64_t now_ns)
{
    struct conn *next;
    for (struct conn *c = ctx->first; c != NULL; c = next) {
        next = c->next;
        if (c->state == CONN_LINGERING) {
            conn_linger_tick(c, now_ns);
        } else if (c->deadline_ns != 0) {
            if (now_ns >= c->deadline_ns)
                conn_stall_tick(c, now_ns); /* open and paused, or draining */
        } else if (ctx->idle_ns > 0 && c->state == CONN_OPEN &&
                   now_ns - c->last_active_ns >= ctx->idle_ns) {
            conn_idle_tick(c, now_ns);
        }
    }
    return ctx->timed > 0 || (ctx->idle_ns > 0 && ctx->first != NULL);
}
