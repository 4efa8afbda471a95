/*
 * tools/loadgen_worker.c - one load-generator thread: its connections, its
 * epoll loop, the payload pattern and the check of every reply.
 */
#include "common.h"
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_NS     (5 * 1000000000ull)  /* replies still due after the window */
#define STALL_NS     (10 * 1000000000ull) /* no reply at all for this long: give up */
#define MAX_MESSAGES 5                    /* error lines printed per thread */

/* ---- byte queues -------------------------------------------------------- */

static void bytes_reserve(struct lg_bytes *b, size_t n)
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

static void bytes_consume(struct lg_bytes *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

/* ---- the payload pattern ------------------------------------------------ */

/* The 16-byte stamp: connection id, sequence number, and a check word. */
static void make_stamp(uint8_t stamp[LG_STAMP], uint32_t id, uint64_t seq)
{
    uint32_t check = ~id ^ (uint32_t)(seq * 2654435761u);
    for (int i = 0; i < 4; i++)
        stamp[i] = (uint8_t)(id >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        stamp[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        stamp[12 + i] = (uint8_t)(check >> (24 - 8 * i));
}

static uint64_t stamp_field(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- errors ------------------------------------------------------------- */

static void conn_fail(struct worker *w, struct lg_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(struct worker *w, struct lg_conn *c, const char *fmt, ...)
{
    if (w->errors++ < MAX_MESSAGES) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "loadgen: connection %" PRIu32 ": ", c->id);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
    c->dead = true;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* ---- sending ------------------------------------------------------------ */

/* Queue frame number c->sent, stamped, and remember when it was due. */
static void queue_frame(struct worker *w, struct lg_conn *c, uint64_t due)
{
    size_t size = (size_t)w->opt->size;
    bytes_reserve(&c->out, 4 + size);
    uint8_t *p = c->out.data + c->out.off + c->out.len;
    p[0] = (uint8_t)(size >> 24);
    p[1] = (uint8_t)(size >> 16);
    p[2] = (uint8_t)(size >> 8);
    p[3] = (uint8_t)size;
    uint8_t stamp[LG_STAMP];
    make_stamp(stamp, c->id, c->sent);
    memcpy(p + 4, stamp, size < LG_STAMP ? size : LG_STAMP);
    if (size > LG_STAMP)
        memcpy(p + 4 + LG_STAMP, c->block + LG_STAMP, size - LG_STAMP);
    c->out.len += 4 + size;
    c->sent_at[c->sent % (uint64_t)w->opt->depth] = due;
    c->sent++;
}

static void want_out(struct worker *w, struct lg_conn *c, bool on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

static void conn_flush(struct worker *w, struct lg_conn *c)
{
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            conn_fail(w, c, "send: %s after %" PRIu64 " replies", strerror(errno),
                      c->received);
            return;
        }
        bytes_consume(&c->out, (size_t)n);
    }
    want_out(w, c, c->out.len > 0);
}

/* Closed loop: may this connection send another frame now? */
static bool may_send_more(const struct worker *w, const struct lg_conn *c, uint64_t now)
{
    const struct options *o = w->opt;
    if (c->sent - c->received >= (uint64_t)o->depth)
        return false;
    if (o->per_conn)
        return c->sent < (uint64_t)o->per_conn;
    return now < w->measure_to;
}

/* ---- receiving ---------------------------------------------------------- */

/* Check one reply payload against what frame c->received carried. */
static bool check_reply(struct worker *w, struct lg_conn *c, const uint8_t *p,
                        size_t len)
{
    size_t size = (size_t)w->opt->size;
    if (len != size) {
        conn_fail(w, c, "reply %" PRIu64 " has %zu bytes, sent %zu", c->received, len,
                  size);
        return false;
    }
    uint8_t stamp[LG_STAMP];
    make_stamp(stamp, c->id, c->received);
    size_t n = size < LG_STAMP ? size : LG_STAMP;
    if (memcmp(p, stamp, n) != 0) {
        if (n >= 12 && stamp_field(p, 4) != c->id)
            conn_fail(w, c,
                      "reply %" PRIu64 " carries connection %" PRIu64
                      "'s payload (replies crossed between connections)",
                      c->received, stamp_field(p, 4));
        else if (n >= 12 && stamp_field(p + 4, 8) != c->received)
            conn_fail(w, c,
                      "reply out of order: expected sequence %" PRIu64 ", got %" PRIu64,
                      c->received, stamp_field(p + 4, 8));
        else
            conn_fail(w, c, "reply %" PRIu64 " corrupted in its first %zu bytes",
                      c->received, n);
        return false;
    }
    if (size > LG_STAMP &&
        memcmp(p + LG_STAMP, c->block + LG_STAMP, size - LG_STAMP) != 0) {
        size_t at = LG_STAMP;
        while (p[at] == c->block[at])
            at++;
        conn_fail(w, c, "reply %" PRIu64 " corrupted: byte %zu differs", c->received,
                  at);
        return false;
    }
    return true;
}

/* Parse and check every complete reply in c->in. */
static void conn_parse(struct worker *w, struct lg_conn *c, uint64_t now)
{
    while (c->in.len >= 4) {
        const uint8_t *h = c->in.data + c->in.off;
        size_t len = (size_t)stamp_field(h, 4);
        if (len > (size_t)w->opt->size) {
            conn_fail(w, c, "reply header declares %zu bytes, sent %ld", len,
                      w->opt->size);
            return;
        }
        if (c->in.len - 4 < len)
            return;
        if (c->received >= c->sent) {
            conn_fail(w, c, "a reply arrived that was never asked for");
            return;
        }
        if (!check_reply(w, c, h + 4, len))
            return;
        uint64_t due = c->sent_at[c->received % (uint64_t)w->opt->depth];
        if (now >= w->measure_from && now < w->measure_to) {
            hist_record(&w->latency, now > due ? now - due : 0);
            w->measured++;
        }
        c->received++;
        w->last_reply = now;
        bytes_consume(&c->in, 4 + len);
    }
}

static void conn_read(struct worker *w, struct lg_conn *c)
{
    for (;;) {
        bytes_reserve(&c->in, 65536);
        ssize_t n = read(c->fd, c->in.data + c->in.off + c->in.len,
                         c->in.cap - c->in.off - c->in.len);
        if (n > 0) {
            c->in.len += (size_t)n;
            conn_parse(w, c, now_ns());
            if (c->dead)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        conn_fail(w, c, "%s by the server after %" PRIu64 " of %" PRIu64 " replies",
                  n == 0 ? "closed" : strerror(errno), c->received, c->sent);
        return;
    }
}

/* ---- the thread --------------------------------------------------------- */

int worker_init(struct worker *w, const struct options *o, long first_id, long n)
{
    memset(w, 0, sizeof(*w));
    w->opt = o;
    w->nconns = n;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->conns = calloc((size_t)n, sizeof(*w->conns));
    if (w->epfd < 0 || w->conns == NULL) {
        fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
        return -1;
    }
    for (long i = 0; i < n; i++) {
        struct lg_conn *c = &w->conns[i];
        c->id = (uint32_t)(first_id + i);
        c->fd = tool_connect("loadgen", o->host, o->port);
        if (c->fd < 0)
            return -1;
        c->sent_at = calloc((size_t)o->depth, sizeof(*c->sent_at));
        c->block = malloc((size_t)o->size + 1);
        if (c->sent_at == NULL || c->block == NULL) {
            fprintf(stderr, "loadgen: out of memory\n");
            return -1;
        }
        tool_fill_random(c->block, (size_t)o->size, now_ns() ^ ((uint64_t)c->id << 32));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
    return 0;
}

/* Open loop: queue every frame whose time has come. */
static void send_due(struct worker *w, uint64_t now)
{
    const struct options *o = w->opt;
    double per_ns = (double)o->rate * (double)w->nconns / (double)o->conns / 1e9;
    while (w->next_due <= now && w->next_due < w->measure_to) {
        struct lg_conn *c = &w->conns[w->scheduled % (uint64_t)w->nconns];
        if (!c->dead) {
            if (c->sent - c->received >= (uint64_t)o->depth)
                return; /* held back by -d: the schedule falls behind */
            if (w->next_due >= w->measure_from)
                hist_record(&w->lag, now - w->next_due);
            queue_frame(w, c, w->next_due);
            conn_flush(w, c);
        }
        w->scheduled++;
        w->next_due = w->t0 + (uint64_t)((double)w->scheduled / per_ns);
    }
}

static bool all_done(const struct worker *w)
{
    for (long i = 0; i < w->nconns; i++) {
        const struct lg_conn *c = &w->conns[i];
        if (!c->dead && (c->received < c->sent ||
                         (w->opt->per_conn && c->sent < (uint64_t)w->opt->per_conn)))
            return false;
    }
    return true;
}

void worker_run(struct worker *w)
{
    const struct options *o = w->opt;
    uint64_t now = now_ns();
    w->next_due = w->t0;
    w->last_reply = now;
    if (!o->rate) {
        for (long i = 0; i < w->nconns; i++) {
            struct lg_conn *c = &w->conns[i];
            while (may_send_more(w, c, now))
                queue_frame(w, c, now);
            conn_flush(w, c);
        }
    }
    struct epoll_event evs[256];
    for (;;) {
        now = now_ns();
        if (o->rate)
            send_due(w, now);
        bool window_over = !o->per_conn && now >= w->measure_to;
        if ((window_over || o->per_conn) && all_done(w))
            break;
        if (window_over && now >= w->measure_to + DRAIN_NS) {
            for (long i = 0; i < w->nconns; i++)
                if (!w->conns[i].dead && w->conns[i].received < w->conns[i].sent)
                    conn_fail(w, &w->conns[i],
                              "%" PRIu64 " replies still missing %llu s "
                              "after the run",
                              w->conns[i].sent - w->conns[i].received,
                              DRAIN_NS / 1000000000ull);
            break;
        }
        if (now - w->last_reply > STALL_NS) {
            fprintf(stderr, "loadgen: no reply for %llu s: the server is stuck\n",
                    STALL_NS / 1000000000ull);
            w->errors++;
            break;
        }
        /* Sleep until the next frame is due (open loop) or 50 ms at most. */
        uint64_t wake = now + 50000000u;
        if (o->rate && w->next_due < wake && w->next_due < w->measure_to)
            wake = w->next_due > now ? w->next_due : now;
        struct timespec ts = {.tv_sec = (time_t)((wake - now) / 1000000000u),
                              .tv_nsec = (long)((wake - now) % 1000000000u)};
        int n = epoll_pwait2(w->epfd, evs, 256, &ts, NULL);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "loadgen: epoll_pwait2: %s\n", strerror(errno));
            w->errors++;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct lg_conn *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_read(w, c);
            if (c->dead)
                continue;
            if (!o->rate) { /* closed loop: one new frame per reply */
                uint64_t t = now_ns();
                while (may_send_more(w, c, t))
                    queue_frame(w, c, t);
            }
            conn_flush(w, c);
        }
    }
    if (!o->per_conn)
        for (long i = 0; i < w->nconns; i++)
            if (!w->conns[i].dead && w->conns[i].received == 0)
                conn_fail(w, &w->conns[i], "short run: never served");
}

void worker_free(struct worker *w)
{
    for (long i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        free(c->sent_at);
        free(c->block);
        free(c->out.data);
        free(c->in.data);
    }
    free(w->conns);
    if (w->epfd >= 0)
        close(w->epfd);
}
