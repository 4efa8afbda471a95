/*
 * fuzz/ring_fuzz.c - libFuzzer harness for step03's ring buffer (buffer.c)
 * and its protocol (conn.c: decode, reply, read room, backpressure,
 * half-close), the code every later step copies.  The harness is the
 * protocol's transport: it links conn.c without conn_epoll.c and provides
 * conn_close(), conn_flush(), conn_read_again() and conn_waiting() itself.
 * Each input is used twice:
 *
 * 1. As a list of ring operations, checked against a model (a plain array
 *    holding the same bytes): append, consume, reserve-then-fill through
 *    buf_space_iov() (what readv does), and reading back through buf_peek()
 *    and buf_data_iov() (what sendmsg does).  Sizes come from the input, so
 *    the data wraps around the end of the ring, grows it and empties it.
 *
 * 2. As a recipe for a stream of frames, fed to a connection as a transport
 *    would: room made with conn_read_room() (told how much is "waiting in
 *    the socket", a number from the input), bytes delivered in chunks whose
 *    sizes come from the input (conn_received), frames decoded after each
 *    (conn_process_frames), replies taken out in random amounts (partial
 *    sends: conn_sent, conn_after_send), then a half-close (conn_drain).
 *    What comes out must be exactly the frames that went in, up to the first
 *    one longer than max_frame, which must be reported as a protocol error
 *    and nothing after it; reading must pause above the high-water mark and
 *    resume below the low one; the input ring must never grow for more than
 *    what has arrived; the connection must close, once, for the right
 *    reason.
 *
 *       bytes 0-1   max_frame (big-endian, 0..65535)
 *       then        [len hi][len lo][seed] records: a payload of len bytes
 *                   generated from seed (so a short input makes a long stream)
 *
 * Run:  make fuzz FUZZ_SECONDS=30        (needs clang with libFuzzer)
 */
#include "buffer.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "ring_fuzz: check failed: %s (line %d)\n", #cond,          \
                    __LINE__);                                                         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* log.c replaced: conn.c's log lines are counted, not printed (a protocol
 * error in every other input would drown the fuzzer's own output). */
bool log_verbose = false;
static int protocol_errors;

void log_msg(const char *fmt, ...)
{
    if (strstr(fmt, "error=protocol") != NULL)
        protocol_errors++;
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    abort();
}

static struct pool pool;

/* The transport, as the harness plays it. */
static struct {
    int closes;              /* conn_close() calls */
    enum conn_reason reason; /* ... and the reason given */
    int resumes;             /* conn_read_again() calls */
    size_t waiting;          /* what conn_waiting() says is in the socket */
} io;

void conn_close(struct conn *c, enum conn_reason reason)
{
    if (c->state == CONN_CLOSED)
        return;
    conn_end(c, reason);
    io.closes++;
    io.reason = reason;
}

void conn_flush(struct conn *c)
{
    /* Nothing to write to: the harness sends in send_some().  The protocol
     * still hears that a flush happened. */
    conn_after_send(c);
}

void conn_read_again(struct conn *c)
{
    (void)c;
    io.resumes++;
}

size_t conn_waiting(const struct conn *c)
{
    (void)c;
    return io.waiting;
}

/* The byte at position i of the stream generated from seed. */
static uint8_t gen(uint8_t seed, size_t i)
{
    return (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

/* A growable byte array: the model of a ring, and the expected replies. */
struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void bytes_push(struct bytes *b, const uint8_t *src, size_t n)
{
    if (n == 0)
        return;
    if (b->cap - b->len < n) {
        while (b->cap - b->len < n)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p != NULL);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* The ring holds exactly what the model holds, seen both ways. */
static void check_same(const struct buf *r, const struct bytes *m, uint8_t *scratch)
{
    CHECK(buf_len(r) == m->len);
    if (m->len == 0)
        return;
    buf_peek(r, 0, scratch, m->len);
    CHECK(memcmp(scratch, m->p, m->len) == 0);
    struct iovec iov[2];
    int k = buf_data_iov(r, iov);
    size_t off = 0;
    for (int i = 0; i < k; i++) {
        CHECK(memcmp(iov[i].iov_base, m->p + off, iov[i].iov_len) == 0);
        off += iov[i].iov_len;
    }
    CHECK(off == m->len);
    CHECK(r->cap == 0 || (r->cap & (r->cap - 1)) == 0);
}

#define RING_MAX   (64u << 10) /* four pool blocks: growth, wrap and shrink */
#define STREAM_MAX (1u << 20)  /* bytes of frames per input: keeps runs fast */

static void fuzz_ring(const uint8_t *data, size_t size)
{
    struct buf r;
    buf_init(&r, &pool, RING_MAX);
    struct bytes model = {0};
    uint8_t *scratch = malloc(RING_MAX + 1);
    uint8_t *chunk = malloc(RING_MAX);
    CHECK(scratch && chunk);
    size_t counter = 0; /* position in the generated stream */
    for (size_t i = 0; i + 2 < size; i += 3) {
        size_t n = ((size_t)data[i + 1] << 8 | data[i + 2]) % (RING_MAX / 2) + 1;
        switch (data[i] % 4) {
        case 0: /* append */
            for (size_t j = 0; j < n; j++)
                chunk[j] = gen(0, counter + j);
            if (buf_append(&r, chunk, n) == 0) {
                bytes_push(&model, chunk, n);
                counter += n;
            } else {
                CHECK(model.len + n > RING_MAX); /* only the bound may refuse */
            }
            break;
        case 1: /* consume */
            n = n % (model.len + 1);
            buf_consume(&r, n);
            if (n > 0)
                memmove(model.p, model.p + n, model.len - n);
            model.len -= n;
            break;
        case 2: { /* reserve, then fill the free space the way readv() would */
            if (buf_reserve(&r, n) != 0) {
                CHECK(model.len + n > RING_MAX);
                break;
            }
            struct iovec iov[2];
            int k = buf_space_iov(&r, iov);
            size_t filled = 0;
            for (int s = 0; s < k && filled < n; s++) {
                size_t take = iov[s].iov_len < n - filled ? iov[s].iov_len : n - filled;
                for (size_t j = 0; j < take; j++)
                    ((uint8_t *)iov[s].iov_base)[j] = gen(0, counter + filled + j);
                filled += take;
            }
            CHECK(filled == n); /* reserve(n) promised room for n */
            buf_produce(&r, n);
            for (size_t j = 0; j < n; j++)
                chunk[j] = gen(0, counter + j);
            bytes_push(&model, chunk, n);
            counter += n;
            break;
        }
        case 3: /* a read that found nothing */
            buf_trim(&r);
            break;
        }
        check_same(&r, &model, scratch);
    }
    buf_free(&r);
    free(model.p);
    free(scratch);
    free(chunk);
}

/* Append a frame (header + generated payload) to a byte array. */
static void push_frame(struct bytes *b, uint32_t len, uint8_t seed)
{
    uint8_t hdr[FRAME_HEADER_LEN];
    frame_write_header(hdr, len);
    bytes_push(b, hdr, sizeof(hdr));
    uint8_t payload[256];
    for (uint32_t done = 0; done < len;) {
        uint32_t n =
            len - done < sizeof(payload) ? len - done : (uint32_t)sizeof(payload);
        for (uint32_t j = 0; j < n; j++)
            payload[j] = gen(seed, done + j);
        bytes_push(b, payload, n);
        done += n;
    }
}

/* A partial send: take fraction/255 of the queued replies out of c->out
 * (at least one byte when `progress` is asked for), as a transport whose
 * write took that much. */
static void send_some(struct conn *c, struct bytes *got, unsigned fraction,
                      bool progress, uint8_t *scratch)
{
    size_t n = buf_len(&c->out) * fraction / 255;
    if (progress && n == 0 && buf_len(&c->out) > 0)
        n = 1;
    buf_peek(&c->out, 0, scratch, n);
    bytes_push(got, scratch, n);
    bool paused = c->read_paused;
    int resumes = io.resumes;
    conn_sent(c, n);
    conn_after_send(c);
    /* Backpressure lifts below the low-water mark, and only there. */
    if (paused && c->state == CONN_OPEN) {
        bool below = buf_len(&c->out) < CONN_LOW_WATER;
        CHECK(c->read_paused == !below && (io.resumes > resumes) == below);
    }
}

static void fuzz_conn(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    uint32_t max_frame = (uint32_t)data[0] << 8 | data[1];
    struct bytes stream = {0}, expect = {0}, got = {0};
    bool too_large = false;
    size_t whole = 0;      /* bytes of the whole frames before the first bad one */
    size_t last_at = 0;    /* where the last frame starts in the stream */
    size_t last_reply = 0; /* expect.len before its reply */
    for (size_t i = 2; i + 2 < size && stream.len < STREAM_MAX; i += 3) {
        uint32_t len = (uint32_t)data[i] << 8 | data[i + 1];
        last_at = stream.len;
        push_frame(&stream, len, data[i + 2]);
        if (len > max_frame)
            too_large = true;
        if (!too_large) { /* the replies: every frame before the first bad one */
            last_reply = expect.len;
            push_frame(&expect, len, data[i + 2]);
            whole = stream.len;
        }
    }
    /* Half the inputs lose their last byte: the last frame is partial, and
     * its reply is not owed (EOF mid-frame). */
    bool cut_short = !too_large && stream.len > 0 && data[size - 1] & 1;
    if (cut_short) {
        stream.len--;
        expect.len = last_reply;
        whole = last_at;
    }

    struct conn_ctx ctx = {.pool = &pool, .max_frame = max_frame};
    struct conn c = {0};
    conn_init(&c, &ctx, 1);
    CHECK(ctx.first == &c);
    io = (__typeof__(io)){0};
    protocol_errors = 0;
    int rc = 0;
    size_t off = 0, k = 0;
    uint8_t *scratch = malloc(CONN_HIGH_WATER + 2 * (FRAME_HEADER_LEN + 65536));
    CHECK(scratch != NULL);
    for (;;) {
        /* A read, as the transport does one: only while reading is not
         * paused, into the room conn_read_room() asked for. */
        if (off < stream.len && !c.read_paused) {
            /* What is "waiting in the socket": some or all of the rest. */
            io.waiting = (stream.len - off) * data[k++ % size] / 255;
            size_t arrived = buf_len(&c.in) + io.waiting, cap = c.in.cap;
            CHECK(buf_reserve(&c.in, conn_read_room(&c)) == 0);
            /* Growth only for what has arrived (at most the whole frame once
             * a quarter of it is here), never for what a header promises. */
            CHECK(c.in.cap == cap || c.in.cap <= POOL_BLOCK ||
                  c.in.cap < 10 * (arrived + FRAME_HEADER_LEN));
            /* 1..256 bytes for a short stream, up to 64 KiB for a long
             * one: every split is tried, and a run takes few iterations. */
            size_t chunk = ((size_t)data[k++ % size] + 1) * (stream.len / 4096 + 1);
            size_t room = c.in.cap - buf_len(&c.in);
            CHECK(room >= 1); /* conn_read_room() is at least one byte */
            if (chunk > room)
                chunk = room;
            if (chunk > stream.len - off)
                chunk = stream.len - off;
            struct iovec iov[2];
            int n = buf_space_iov(&c.in, iov);
            size_t copied = 0;
            for (int s = 0; s < n && copied < chunk; s++) {
                size_t take =
                    iov[s].iov_len < chunk - copied ? iov[s].iov_len : chunk - copied;
                memcpy(iov[s].iov_base, stream.p + off + copied, take);
                copied += take;
            }
            conn_received(&c, chunk);
            off += chunk;
        }
        rc = conn_process_frames(&c);
        if (rc < 0)
            break;
        /* Paused above the high-water mark; unpaused only below the low. */
        CHECK(c.read_paused || buf_len(&c.out) <= CONN_HIGH_WATER);
        CHECK(!c.read_paused || buf_len(&c.out) >= CONN_LOW_WATER);
        if (off == stream.len && buf_len(&c.out) == 0)
            break; /* everything sent; what is left in c->in is no whole frame */
        /* A partial send.  Once every byte is in, or while reading is
         * paused, nothing else can move: send something. */
        bool stuck = off == stream.len || c.read_paused;
        send_some(&c, &got, data[k++ % size], stuck, scratch);
    }
    /* The end: a protocol error, or the peer's half-close after its last
     * byte.  Either way the connection drains - every reply owed goes out -
     * and closes once, with the reason. */
    if (rc == 0)
        c.peer_closed = true;
    conn_drain(&c);
    while (c.state != CONN_CLOSED) {
        CHECK(c.state == CONN_DRAINING && buf_len(&c.out) > 0);
        send_some(&c, &got, data[k++ % size], true, scratch);
    }
    CHECK(io.closes == 1 && ctx.first == NULL);
    CHECK(got.len == expect.len);
    CHECK(got.len == 0 || memcmp(got.p, expect.p, got.len) == 0);
    if (rc < 0) { /* only a frame over the limit may stop the connection */
        CHECK(too_large && c.reason == CONN_PROTOCOL && protocol_errors == 1);
        CHECK(io.reason == CONN_PROTOCOL);
    } else {
        CHECK(!too_large && protocol_errors == 0);
        CHECK(buf_len(&c.in) == stream.len - whole); /* only a partial frame is left */
        CHECK(io.reason == (cut_short ? CONN_EOF_MID_FRAME : CONN_EOF));
    }
    buf_free(&c.in);
    buf_free(&c.out);
    free(stream.p);
    free(expect.p);
    free(got.p);
    free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (pool.free_blocks == NULL)
        CHECK(pool_init(&pool, 8) == 0);
    fuzz_ring(data, size);
    fuzz_conn(data, size);
    CHECK(pool.in_use == 0); /* every block went back */
    return 0;
}
