/*
 * conn.c - the protocol (协议) of one connection: what its bytes mean and
 * what the server owes it, with no system call in sight.
 *
 * The transport (conn_epoll.c; in step06 conn_uring.c) moves bytes and
 * reports: "n bytes arrived" (conn_received), "n bytes left" (conn_sent),
 * "the peer closed".  This file decides what follows: which replies to
 * make, when to stop reading (backpressure), and when a connection is done.
 * Keeping the two apart is what lets fuzz/ring_fuzz.c drive the protocol
 * with every possible split of the stream, and lets step06 replace the
 * transport while this file stays.
 *
 * Two rules live here:
 *
 *   1. Backpressure (背压): above CONN_HIGH_WATER bytes of unsent replies,
 *      stop reading (read_paused); as soon as a write takes them below
 *      CONN_LOW_WATER - whichever write that is - read again.  The transport
 *      must then read at once (conn_read_again), not wait to be told: the
 *      bytes the client sent meanwhile are already in the socket, and
 *      nothing new will announce them.
 *   2. Half-close (半关闭): a peer that stops sending is still owed every
 *      reply.  Draining reads nothing more, sends what is owed, then closes.
 *
 * New in step04: -b makes each reply cost CPU time.
 *
 * New in step05: ids that other threads send to (send.c); with -a the
 * replies are built by application threads, and what their jobs cost counts
 * as owed, per connection and per worker (rule 1 again: the work in flight
 * is memory too); a connection that ends goes through linger.c.
 */
#include "conn.h"
#include "app.h"
#include "frame.h"
#include "linger.h"
#include "log.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

static const char *const reason_names[] = {
    [CONN_EOF] = "eof",           [CONN_EOF_MID_FRAME] = "eof-mid-frame",
    [CONN_PROTOCOL] = "protocol", [CONN_RESET] = "reset",
    [CONN_ERROR] = "error",       [CONN_IDLE] = "idle",
    [CONN_SHUTDOWN] = "shutdown", [CONN_CUT] = "cut",
};

/* a + b, or SIZE_MAX if that does not fit: buffer bounds stay meaningful
 * for any -m even where size_t is 32 bits wide. */
static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* Read again after backpressure.  Replies still waiting for the socket keep
 * the stall bound, started afresh: the queue it measures is the one now. */
static void conn_resume(struct conn *c)
{
    c->read_paused = false;
    if (buf_len(&c->out) > 0)
        conn_stall_start(c, conn_now_ns());
    else
        conn_set_deadline(c, 0);
    conn_read_again(c);
}

/* n jobs that cost `cost` are no longer at the application threads (their
 * replies came back, or they were dropped).  Below the low-water mark, every
 * connection that stopped reading for the worker's jobs may read again. */
void conn_jobs_returned(struct conn_ctx *ctx, size_t n, size_t cost)
{
    ctx->jobs -= n;
    ctx->jobs_cost -= cost;
    if (!ctx->jobs_paused || ctx->jobs_cost >= CONN_JOBS_LOW)
        return;
    ctx->jobs_paused = false;
    struct conn *next;
    for (struct conn *c = ctx->first; c != NULL; c = next) {
        next = c->next; /* reading again may close c (step06 decodes at once) */
        if (c->state == CONN_OPEN && c->read_paused && conn_owed(c) < CONN_LOW_WATER)
            conn_resume(c);
    }
}

int conn_init(struct conn *c, struct conn_ctx *ctx, uint64_t id)
{
    if (idmap_put(&ctx->ids, id, c) < 0)
        return -1;
    c->ctx = ctx;
    c->id = id;
    c->state = CONN_OPEN;
    c->reason = CONN_EOF;
    conn_touch(c);
    ctx->stats.conns++;
    /* Bounds, not allocations: the input ring never holds more than one
     * incomplete frame when it grows; the output ring the high-water mark
     * plus one reply.  Memory is taken only as bytes arrive. */
    size_t frame_max = add_sat(FRAME_HEADER_LEN, ctx->max_frame);
    buf_init(&c->in, ctx->pool, frame_max);
    buf_init(&c->out, ctx->pool, add_sat(CONN_HIGH_WATER, frame_max));
    c->prev = NULL;
    c->next = ctx->first;
    if (c->next)
        c->next->prev = c;
    ctx->first = c;
    return 0;
}

void conn_end(struct conn *c, enum conn_reason reason)
{
    struct conn_ctx *ctx = c->ctx;
    c->state = CONN_CLOSED;
    log_debug("conn=%" PRIu64 " close reason=%s frames=%" PRIu64 " bytes_in=%" PRIu64
              " bytes_out=%" PRIu64,
              c->id, reason_names[reason], c->frames, c->bytes_in, c->bytes_out);
    ctx->stats.frames += c->frames;
    ctx->stats.bytes_in += c->bytes_in;
    ctx->stats.bytes_out += c->bytes_out;
    conn_set_deadline(c, 0);
    idmap_remove(&ctx->ids, c->id); /* replies still on their way are dropped */
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->inflight > 0) {
        /* Nobody will read these replies: drop the jobs not yet started.
         * The one being worked on (and replies already posted) come back
         * and are dropped in conn_deliver(); until then they still count
         * against the worker's budget. */
        size_t cost = 0, n = app_cancel(ctx->apps, c->id, &cost);
        ctx->stats.dropped_jobs += n;
        conn_jobs_returned(ctx, n, cost);
    }
    if (ctx->maybe_done != NULL)
        ctx->maybe_done(ctx);
}

size_t conn_owed(const struct conn *c)
{
    return buf_len(&c->out) + c->inflight;
}

/* Too much owed: by this connection, or by the worker's jobs. */
static bool conn_over_budget(const struct conn *c)
{
    return conn_owed(c) > CONN_HIGH_WATER || c->ctx->jobs_paused;
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
 * From step05 it stops early at stop_ns (CLOCK_MONOTONIC; 0: none), so a
 * shutdown's -g deadline holds, and application threads call it too.
 */
void conn_simulate_work(uint32_t us, uint64_t stop_ns)
{
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do {
        if (stop_ns != 0 && conn_now_ns() >= stop_ns)
            return; /* the shutdown's deadline: answer now, unfinished */
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000 +
                 (now.tv_nsec - start.tv_nsec) / 1000 <
             (long)us);
}

/*
 * The reply to the complete frame of len payload bytes at the front of
 * c->in: a fresh header and the payload, side by side in c->out, so they
 * leave in one write.  The one place a reply is made (step05 hands the
 * frame to an application thread from here).  Returns -1 out of memory.
 * With -a, what that job costs counts as owed (c->inflight) until its
 * reply comes back through conn_deliver().
 */
static int conn_reply(struct conn *c, uint32_t len)
{
    struct conn_ctx *ctx = c->ctx;
    if (ctx->apps != NULL) {
        /* The frame is its own echo: the same header, the same payload. */
        size_t frame = FRAME_HEADER_LEN + (size_t)len; /* it is in c->in */
        size_t cost = app_job_cost(frame);
        if (app_submit(ctx->apps, c->id, &c->in, frame, cost) < 0)
            return -1;
        c->inflight += cost;
        ctx->jobs++;
        ctx->jobs_cost += cost;
        if (ctx->jobs_cost > CONN_JOBS_HIGH)
            ctx->jobs_paused = true; /* every connection stops reading */
        return 0;
    }
    if (c->ctx->work_us > 0)
        conn_simulate_work(c->ctx->work_us, c->ctx->stop_ns);
    uint8_t hdr[FRAME_HEADER_LEN];
    frame_write_header(hdr, len);
    /* FRAME_HEADER_LEN + len cannot wrap: the whole frame is in c->in. */
    if (buf_reserve(&c->out, FRAME_HEADER_LEN + (size_t)len) < 0 ||
        buf_append(&c->out, hdr, sizeof(hdr)) < 0 ||
        buf_append_from(&c->out, &c->in, FRAME_HEADER_LEN, len) < 0)
        return -1;
    return 0;
}

int conn_decode(struct conn *c, size_t limit)
{
    while (conn_owed(c) <= limit && (limit == SIZE_MAX || !c->ctx->jobs_paused)) {
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
    if (conn_decode(c, CONN_HIGH_WATER) < 0)
        return -1;
    if (conn_over_budget(c) && !c->read_paused) {
        c->read_paused = true; /* conn_after_send() lifts it */
        if (!c->ctx->stopping)
            conn_stall_start(c, conn_now_ns());
    }
    return 0;
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
size_t conn_read_room(const struct conn *c)
{
    uint32_t len;
    size_t avail = buf_len(&c->in);
    if (avail < FRAME_HEADER_LEN || conn_peek_frame(c, &len) != FRAME_INCOMPLETE)
        return 1;
    size_t missing = len - (avail - FRAME_HEADER_LEN); /* > 0: incomplete */
    if (missing <= c->in.cap - avail)
        return 1;
    size_t waiting = conn_waiting(c);
    if (waiting == 0)
        return 1;
    size_t arrived = avail + waiting;
    if (arrived > len / 4) /* more than a quarter of the frame is here */
        return missing;
    return waiting < missing ? waiting : missing;
}

void conn_received(struct conn *c, size_t n)
{
    buf_produce(&c->in, n);
    c->bytes_in += n;
    conn_touch(c);
}

void conn_sent(struct conn *c, size_t n)
{
    buf_consume(&c->out, n);
    c->bytes_out += n;
    conn_touch(c);
    /* Progress: the stall bound of a paused or draining connection moves. */
    if (n > 0 && c->deadline_ns != 0 && c->state != CONN_LINGERING && !c->ctx->stopping)
        conn_stall_start(c, conn_now_ns());
}

void conn_after_send(struct conn *c)
{
    /* Wherever the output shrinks, not only on EPOLLOUT: a direct write
     * may send everything at once, and then no EPOLLOUT will ever come.
     * (muduo lifts it in its write path too.) */
    if (c->state == CONN_OPEN && c->read_paused && !c->ctx->jobs_paused &&
        conn_owed(c) < CONN_LOW_WATER) {
        conn_resume(c);
    } else if (c->state == CONN_DRAINING && conn_owed(c) == 0) {
        conn_finish(c);
    } else if (c->state == CONN_OPEN && !c->read_paused && c->deadline_ns != 0 &&
               buf_len(&c->out) == 0 && conn_unsent(c) == 0) {
        conn_set_deadline(c, 0); /* the client has every reply: the bound ends */
    }
}

void conn_drain(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->state = CONN_DRAINING;
    if (!c->ctx->stopping) /* at a shutdown, -g is the bound */
        conn_stall_start(c, conn_now_ns());
    if (c->peer_closed && buf_len(&c->in) > 0 && c->reason == CONN_EOF) {
        log_msg("conn=%" PRIu64 " error=eof-mid-frame dropped=%zu", c->id,
                buf_len(&c->in));
        c->reason = CONN_EOF_MID_FRAME;
    }
    conn_flush(c); /* and conn_after_send() finishes once nothing is owed */
}
