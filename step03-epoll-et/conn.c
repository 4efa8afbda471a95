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
 */
#include "conn.h"
#include "frame.h"
#include "log.h"

#include <inttypes.h>
#include <stdlib.h>

static const char *const reason_names[] = {
    [CONN_EOF] = "eof",           [CONN_EOF_MID_FRAME] = "eof-mid-frame",
    [CONN_PROTOCOL] = "protocol", [CONN_RESET] = "reset",
    [CONN_ERROR] = "error",
};

/* a + b, or SIZE_MAX if that does not fit: buffer bounds stay meaningful
 * for any -m even where size_t is 32 bits wide. */
static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

void conn_init(struct conn *c, struct conn_ctx *ctx, uint64_t id)
{
    c->ctx = ctx;
    c->id = id;
    c->state = CONN_OPEN;
    c->reason = CONN_EOF;
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
}

void conn_end(struct conn *c, enum conn_reason reason)
{
    struct conn_ctx *ctx = c->ctx;
    c->state = CONN_CLOSED;
    log_debug("conn=%" PRIu64 " close reason=%s frames=%" PRIu64 " bytes_in=%" PRIu64
              " bytes_out=%" PRIu64,
              c->id, reason_names[reason], c->frames, c->bytes_in, c->bytes_out);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->first = c->next;
    if (c->next)
        c->next->prev = c->prev;
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
 * The reply to the complete frame of len payload bytes at the front of
 * c->in: a fresh header and the payload, side by side in c->out, so they
 * leave in one write.  The one place a reply is made (step05 hands the
 * frame to an application thread from here).  Returns -1 out of memory.
 */
static int conn_reply(struct conn *c, uint32_t len)
{
    uint8_t hdr[FRAME_HEADER_LEN];
    frame_write_header(hdr, len);
    /* FRAME_HEADER_LEN + len cannot wrap: the whole frame is in c->in. */
    if (buf_reserve(&c->out, FRAME_HEADER_LEN + (size_t)len) < 0 ||
        buf_append(&c->out, hdr, sizeof(hdr)) < 0 ||
        buf_append_from(&c->out, &c->in, FRAME_HEADER_LEN, len) < 0)
        return -1;
    return 0;
}

int conn_process_frames(struct conn *c)
{
    while (buf_len(&c->out) <= CONN_HIGH_WATER) {
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
    c->read_paused = true; /* above the high-water mark: conn_after_send() lifts it */
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
}

void conn_sent(struct conn *c, size_t n)
{
    buf_consume(&c->out, n);
    c->bytes_out += n;
}

void conn_after_send(struct conn *c)
{
    /* Wherever the output shrinks, not only on EPOLLOUT: a direct write
     * may send everything at once, and then no EPOLLOUT will ever come.
     * (muduo lifts it in its write path too.) */
    if (c->state == CONN_OPEN && c->read_paused && buf_len(&c->out) < CONN_LOW_WATER) {
        c->read_paused = false;
        conn_read_again(c);
    } else if (c->state == CONN_DRAINING && buf_len(&c->out) == 0) {
        conn_close(c, c->reason);
    }
}

void conn_drain(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->state = CONN_DRAINING;
    if (c->peer_closed && buf_len(&c->in) > 0 && c->reason == CONN_EOF) {
        log_msg("conn=%" PRIu64 " error=eof-mid-frame dropped=%zu", c->id,
                buf_len(&c->in));
        c->reason = CONN_EOF_MID_FRAME;
    }
    conn_flush(c); /* and conn_after_send() closes once nothing is owed */
}
