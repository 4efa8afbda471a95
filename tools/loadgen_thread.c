/*
 * tools/loadgen_thread.c - one load-generator thread: its share of the
 * connections, its epoll loop, the closed and open loops, and when a run is
 * over (done, drained, or stalled).  One connection's work is in
 * loadgen_conn.c; --churn's in loadgen_churn.c.
 */
#include "loadgen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_NS (5 * 1000000000ull)  /* replies still due after the window */
#define STALL_NS (10 * 1000000000ull) /* no reply at all for this long: give up */

/* ---- the thread --------------------------------------------------------- */

int lg_thread_init(struct lg_thread *t, const struct lg_options *o,
                   const struct tool_addr *addr, long first_id, long n)
{
    memset(t, 0, sizeof(*t));
    t->opt = o;
    t->addr = addr;
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (t->epfd < 0) {
        fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
        return -1;
    }
    t->conns = calloc((size_t)n, sizeof(*t->conns));
    if (t->conns == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return -1;
    }
    for (; t->nconns < n; t->nconns++)
        if (lg_conn_init(t, &t->conns[t->nconns], (uint32_t)(first_id + t->nconns)))
            return -1;
    return 0;
}

/* Open loop: queue every frame whose time has come. */
static void lg_thread_send_due(struct lg_thread *t, uint64_t now)
{
    const struct lg_options *o = t->opt;
    double per_ns = (double)o->rate * (double)t->nconns / (double)o->conns / 1e9;
    while (t->next_due <= now && t->next_due < t->measure_to) {
        struct lg_conn *c = &t->conns[t->scheduled % (uint64_t)t->nconns];
        if (!c->dead) {
            if (c->sent - c->received >= (uint64_t)o->depth)
                return; /* held back by -d: the schedule falls behind */
            if (t->next_due >= t->measure_from)
                hist_record(&t->lag, now - t->next_due);
            lg_conn_queue_frame(t, c, t->next_due);
            lg_conn_flush(t, c);
        }
        t->scheduled++;
        t->next_due = t->t0 + (uint64_t)((double)t->scheduled / per_ns);
    }
}

/* Every connection has failed (a server that shut down closes them all):
 * nothing can arrive any more. */
static bool lg_thread_all_dead(const struct lg_thread *t)
{
    for (long i = 0; i < t->nconns; i++)
        if (!t->conns[i].dead)
            return false;
    return t->nconns > 0 && !t->opt->churn;
}

static bool lg_thread_all_done(const struct lg_thread *t)
{
    for (long i = 0; i < t->nconns; i++) {
        const struct lg_conn *c = &t->conns[i];
        if (!c->dead && (c->received < c->sent ||
                         (t->opt->per_conn && c->sent < (uint64_t)t->opt->per_conn)))
            return false;
    }
    return true;
}

/* Closed loop: top this connection up to -d frames in flight, then send. */
static void lg_thread_top_up(struct lg_thread *t, struct lg_conn *c, uint64_t now)
{
    while (lg_conn_may_send(t, c, now))
        lg_conn_queue_frame(t, c, now);
    lg_conn_flush(t, c);
}

/* Is the run over: all done, drained too long, or stalled? */
static bool lg_thread_finished(struct lg_thread *t, uint64_t now)
{
    const struct lg_options *o = t->opt;
    bool window_over = !o->per_conn && now >= t->measure_to;
    if ((window_over || o->per_conn) && lg_thread_all_done(t))
        return true;
    if (lg_thread_all_dead(t)) {
        /* The run ended early: lg_collect() says how long it lasted. */
        t->all_failed = t->last_failure;
        return true;
    }
    if (window_over && now >= t->measure_to + DRAIN_NS) {
        for (long i = 0; i < t->nconns; i++) {
            struct lg_conn *c = &t->conns[i];
            if (!c->dead && c->received < c->sent)
                lg_conn_fail(t, c,
                             "%" PRIu64 " replies still missing %llu s after the run",
                             c->sent - c->received, DRAIN_NS / 1000000000ull);
        }
        return true;
    }
    if (now - t->last_reply > STALL_NS) {
        fprintf(stderr, "loadgen: no reply for %llu s: the server is stuck\n",
                STALL_NS / 1000000000ull);
        t->errors++;
        return true;
    }
    return false;
}

/*
 * Wait for events until the next frame is due (open loop) or 50 ms at most.
 * Returns the number of events, 0 after EINTR, or -1 when epoll fails.
 */
static int lg_thread_wait(struct lg_thread *t, struct epoll_event *evs, int max,
                          uint64_t now)
{
    const struct lg_options *o = t->opt;
    uint64_t wake = now + 50000000u;
    if (o->rate && t->next_due < wake && t->next_due < t->measure_to)
        wake = t->next_due > now ? t->next_due : now;
    struct timespec ts = {.tv_sec = (time_t)((wake - now) / 1000000000u),
                          .tv_nsec = (long)((wake - now) % 1000000000u)};
    int n = epoll_pwait2(t->epfd, evs, max, &ts, NULL);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n < 0) {
        fprintf(stderr, "loadgen: epoll_pwait2: %s\n", strerror(errno));
        t->errors++;
    }
    return n;
}

static void lg_thread_event(struct lg_thread *t, struct lg_conn *c, uint32_t events)
{
    if (c->dead)
        return;
    if (t->opt->churn) {
        lg_churn_event(t, c, events);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        lg_conn_read(t, c);
    if (c->dead)
        return;
    if (!t->opt->rate) /* closed loop: one new frame per reply */
        lg_thread_top_up(t, c, tool_now_ns());
    else
        lg_conn_flush(t, c);
}

void lg_thread_run(struct lg_thread *t)
{
    const struct lg_options *o = t->opt;
    uint64_t now = tool_now_ns();
    t->next_due = t->t0;
    t->last_reply = now;
    if (o->churn)
        lg_churn_start(t, now);
    else if (!o->rate)
        for (long i = 0; i < t->nconns; i++)
            lg_thread_top_up(t, &t->conns[i], now);
    struct epoll_event evs[256];
    for (;;) {
        now = tool_now_ns();
        if (o->rate)
            lg_thread_send_due(t, now);
        if (lg_thread_finished(t, now))
            break;
        int n = lg_thread_wait(t, evs, 256, now);
        if (n < 0)
            break;
        for (int i = 0; i < n; i++)
            lg_thread_event(t, evs[i].data.ptr, evs[i].events);
    }
    if (!o->per_conn)
        for (long i = 0; i < t->nconns; i++)
            if (!t->conns[i].dead && t->conns[i].received == 0)
                lg_conn_fail(t, &t->conns[i], "short run: never served");
}

void lg_thread_free(struct lg_thread *t)
{
    for (long i = 0; i < t->nconns; i++)
        lg_conn_free(&t->conns[i]);
    free(t->conns);
    if (t->epfd >= 0)
        close(t->epfd);
}
