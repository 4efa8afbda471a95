/*
 * tools/loadgen_conn.c - one load-generator connection: its byte queues, the
 * payload pattern, sending frames, and the check of every reply.  The
 * thread's loop (loadgen_thread.c) and --churn (loadgen_churn.c) drive it.
 */
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MESSAGES 5 /* error lines printed per thread */

/* ---- byte queues -------------------------------------------------------- */

static void lg_bytes_reserve(struct lg_bytes *b, size_t n)
{
    if (b->cap - b->off - b->len >= n)
        return;
    if (b->off > 0) { /* slide the live bytes to the front first */
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->cap - b->len >= n)
            return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    b->data = realloc(b->data, cap);
    if (b->data == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(1);
    }
    b->cap = cap;
}

static void lg_bytes_consume(struct lg_bytes *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

/* ---- the payload pattern ------------------------------------------------ */

/* The 16-byte stamp: connection id, sequence number, and a check word. */
static void lg_stamp_make(uint8_t stamp[LG_STAMP], uint32_t id, uint64_t seq)
{
    uint32_t check = ~id ^ (uint32_t)(seq * 2654435761u);
    for (int i = 0; i < 4; i++)
        stamp[i] = (uint8_t)(id >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        stamp[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        stamp[12 + i] = (uint8_t)(check >> (24 - 8 * i));
}

static uint64_t lg_stamp_field(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- errors ------------------------------------------------------------- */

void lg_conn_fail(struct lg_thread *t, struct lg_conn *c, const char *fmt, ...)
{
    if (t->errors++ < MAX_MESSAGES) {
        t->shown++;
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "loadgen: connection %" PRIu32 ": ", c->id);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
    c->dead = true;
    t->last_failure = tool_now_ns();
    c->connecting = false;
    if (c->fd >= 0)
        close(c->fd); /* closing also takes it out of the epoll set */
    c->fd = -1;
}

/* ---- sending ------------------------------------------------------------ */

/* Queue frame number c->sent, stamped, and remember when it was due. */
void lg_conn_queue_frame(struct lg_thread *t, struct lg_conn *c, uint64_t due)
{
    size_t size = (size_t)t->opt->size;
    lg_bytes_reserve(&c->out, TOOL_HEADER + size);
    uint8_t *p = c->out.data + c->out.off + c->out.len;
    tool_put_header(p, (uint32_t)size);
    uint8_t stamp[LG_STAMP];
    lg_stamp_make(stamp, c->id, c->sent);
    memcpy(p + TOOL_HEADER, stamp, size < LG_STAMP ? size : LG_STAMP);
    if (size > LG_STAMP)
        memcpy(p + TOOL_HEADER + LG_STAMP, c->block + LG_STAMP, size - LG_STAMP);
    c->out.len += TOOL_HEADER + size;
    c->sent_at[c->sent % (uint64_t)t->opt->depth] = due;
    c->sent++;
}

static void lg_conn_want_out(struct lg_thread *t, struct lg_conn *c, bool on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        lg_conn_fail(t, c, "epoll_ctl: %s", strerror(errno));
        return;
    }
    c->want_out = on;
}

void lg_conn_flush(struct lg_thread *t, struct lg_conn *c)
{
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            lg_conn_fail(t, c, "send: %s after %" PRIu64 " replies", strerror(errno),
                         c->received);
            return;
        }
        lg_bytes_consume(&c->out, (size_t)n);
    }
    lg_conn_want_out(t, c, c->out.len > 0);
}

/* Closed loop (and churn): may this connection send another frame now? */
bool lg_conn_may_send(const struct lg_thread *t, const struct lg_conn *c, uint64_t now)
{
    const struct lg_options *o = t->opt;
    if (c->sent - c->received >= (uint64_t)o->depth)
        return false;
    if (o->per_conn)
        return c->sent < (uint64_t)o->per_conn;
    return now < t->measure_to;
}

/* ---- receiving ---------------------------------------------------------- */

/* The stamp differs: say how, as precisely as the stamp allows. */
static void lg_conn_fail_stamp(struct lg_thread *t, struct lg_conn *c, const uint8_t *p,
                               size_t n)
{
    if (n >= 12 && lg_stamp_field(p, 4) != c->id)
        lg_conn_fail(t, c,
                     "reply %" PRIu64 " carries connection %" PRIu64
                     "'s payload (replies crossed between connections)",
                     c->received, lg_stamp_field(p, 4));
    else if (n >= 12 && lg_stamp_field(p + 4, 8) != c->received)
        lg_conn_fail(t, c,
                     "reply out of order: expected sequence %" PRIu64 ", got %" PRIu64,
                     c->received, lg_stamp_field(p + 4, 8));
    else
        lg_conn_fail(t, c, "reply %" PRIu64 " corrupted in its first %zu bytes",
                     c->received, n);
}

/* Check one reply payload against what frame c->received carried. */
static bool lg_conn_check_reply(struct lg_thread *t, struct lg_conn *c,
                                const uint8_t *p, size_t len)
{
    size_t size = (size_t)t->opt->size;
    if (len != size) {
        lg_conn_fail(t, c, "reply %" PRIu64 " has %zu bytes, sent %zu", c->received,
                     len, size);
        return false;
    }
    uint8_t stamp[LG_STAMP];
    lg_stamp_make(stamp, c->id, c->received);
    size_t n = size < LG_STAMP ? size : LG_STAMP;
    if (memcmp(p, stamp, n) != 0) {
        lg_conn_fail_stamp(t, c, p, n);
        return false;
    }
    if (size > LG_STAMP &&
        memcmp(p + LG_STAMP, c->block + LG_STAMP, size - LG_STAMP) != 0) {
        size_t at = LG_STAMP;
        while (p[at] == c->block[at])
            at++;
        lg_conn_fail(t, c, "reply %" PRIu64 " corrupted: byte %zu differs", c->received,
                     at);
        return false;
    }
    return true;
}

/* Parse and check every complete reply in c->in. */
static void lg_conn_parse(struct lg_thread *t, struct lg_conn *c, uint64_t now)
{
    while (c->in.len >= TOOL_HEADER) {
        const uint8_t *h = c->in.data + c->in.off;
        size_t len = tool_get_header(h);
        if (len > (size_t)t->opt->size) {
            lg_conn_fail(t, c, "reply header declares %zu bytes, sent %ld", len,
                         t->opt->size);
            return;
        }
        if (c->in.len - TOOL_HEADER < len)
            return;
        if (c->received >= c->sent) {
            lg_conn_fail(t, c, "a reply arrived that was never asked for");
            return;
        }
        if (!lg_conn_check_reply(t, c, h + TOOL_HEADER, len))
            return;
        uint64_t due = c->sent_at[c->received % (uint64_t)t->opt->depth];
        if (now >= t->measure_from && now < t->measure_to) {
            hist_record(&t->latency, now > due ? now - due : 0);
            t->measured++;
        }
        c->received++;
        t->last_reply = now;
        lg_bytes_consume(&c->in, TOOL_HEADER + len);
    }
}

void lg_conn_read(struct lg_thread *t, struct lg_conn *c)
{
    for (;;) {
        lg_bytes_reserve(&c->in, 65536);
        ssize_t n = read(c->fd, c->in.data + c->in.off + c->in.len,
                         c->in.cap - c->in.off - c->in.len);
        if (n > 0) {
            c->in.len += (size_t)n;
            lg_conn_parse(t, c, tool_now_ns());
            if (c->dead)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n == 0)
            t->server_eof++;
        lg_conn_fail(t, c, "%s by the server after %" PRIu64 " of %" PRIu64 " replies",
                     n == 0 ? "closed" : strerror(errno), c->received, c->sent);
        return;
    }
}

/* ---- life cycle --------------------------------------------------------- */

/* Set up one connection: its payload block and, unless churning, its socket. */
int lg_conn_init(struct lg_thread *t, struct lg_conn *c, uint32_t id)
{
    const struct lg_options *o = t->opt;
    c->id = id;
    c->fd = -1;
    c->sent_at = calloc((size_t)o->depth, sizeof(*c->sent_at));
    c->block = malloc((size_t)o->size + 1);
    if (c->sent_at == NULL || c->block == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return -1;
    }
    tool_fill_random(c->block, (size_t)o->size, tool_now_ns() ^ ((uint64_t)id << 32));
    if (o->churn)
        return 0; /* lg_churn_start() connects */
    c->fd = tool_connect("loadgen", o->host, o->port, NULL);
    if (c->fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

void lg_conn_free(struct lg_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->sent_at);
    free(c->block);
    free(c->out.data);
    free(c->in.data);
}
