/*
 * worker.c - worker threads (see worker.h).
 *
 * What this file teaches: a thread per core, each running step03's event
 * loop on its own connections, with its own pool, fed new connections by
 * the acceptor through its mailbox (mbox.c; what the other threads post is
 * in worker_mail.c) - or, with -D reuseport, accepting them itself, from a
 * listening socket of its own (accept.c), with no acceptor in between.
 *
 * New in step05: the mailbox, and a timerfd - a timer that is an fd, so it
 * is one more event in the loop - that drives the shutdown deadline, the
 * idle timeout and the lingering closes.
 */
#include "worker.h"
#include "linger.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* The timer's tick while anything needs it: the precision of -i, of the
 * lingering bound and of the -g deadline (exercise: one deadline per
 * connection, in a timer wheel or a heap, instead of a scan per tick). */
#define WORKER_TICK_NS 100000000 /* 100 ms */

void worker_timer(struct worker *w, bool on)
{
    if (w->timer_on == on)
        return;
    struct itimerspec its = {0}; /* all zero: disarm */
    if (on)
        its.it_value.tv_nsec = its.it_interval.tv_nsec = WORKER_TICK_NS;
    if (timerfd_settime(w->timer.fd, 0, &its, NULL) < 0)
        log_msg("worker=%d timerfd_settime: %s", w->index, strerror(errno));
    w->timer_on = on;
}

/* Stopping, and nothing left: no connection, no job at an app thread (its
 * reply is sure to come: posting it cannot fail). */
void worker_check_done(struct worker *w)
{
    if (!w->stopping || w->done || w->ctx.first != NULL || w->ctx.jobs > 0)
        return;
    w->done = true;
    worker_timer(w, false);
    loop_stop(&w->loop); /* after this turn; worker_main cleans up */
}

/* conn.c: a connection closed, or a job came back. */
static void worker_maybe_done(struct conn_ctx *ctx)
{
    worker_check_done(container_of(ctx, struct worker, ctx));
}

/* conn.c: a connection needs the timer (-i, or a lingering close). */
static void worker_wake_timer(struct conn_ctx *ctx)
{
    worker_timer(container_of(ctx, struct worker, ctx), true);
}

static void worker_on_timer(struct watch *t, uint32_t events)
{
    struct worker *w = container_of(t, struct worker, timer);
    (void)events;
    uint64_t expirations;
    if (read(t->fd, &expirations, sizeof(expirations)) != sizeof(expirations) &&
        errno != EAGAIN)
        log_msg("worker=%d timerfd read: %s", w->index, strerror(errno));
    uint64_t now = conn_now_ns();
    /* The deadline holds whatever is left: connections still owed data are
     * cut (and their queued jobs dropped); a job being worked on stops at
     * the deadline by itself (conn_simulate_work), and its reply is dropped. */
    if (w->stopping && now >= w->deadline_ns)
        conn_cut_all(&w->ctx);
    bool needed = conn_tick(&w->ctx, now);
    worker_timer(w, needed || (w->stopping && !w->done));
}

/* -D reuseport: a connection the kernel gave this worker's own socket.  Its
 * id names this worker, as the acceptor's do (server_dispatch()): w + 1,
 * w + 1 + n, ...  So ids no longer count connections in accept order. */
static void worker_on_accept(struct acceptor *a, int fd)
{
    struct worker *w = container_of(a, struct worker, acceptor);
    uint64_t id = w->next_seq++ * (uint64_t)worker_count() + (uint64_t)w->index + 1;
    if (conn_open(&w->ctx, fd, id) != NULL && w->ctx.idle_ns > 0)
        worker_timer(w, true);
}

/*
 * Closing a listening socket resets every connection still in its backlog:
 * their handshakes are complete, their clients may have sent a request, and
 * nobody would ever tell them why.  So accept them first: they close like
 * every other connection at the shutdown (linger.c), with nothing read from
 * them and so nothing owed - a FIN, not a reset.  Only a handshake that
 * completes between the last accept4() and close() is still reset
 * (notes/step05-signals-eventfd.md).
 */
void worker_stop_accepting(struct worker *w)
{
    if (w->acceptor.watch.fd < 0)
        return;
    acceptor_accept_all(&w->acceptor);
    loop_release(&w->loop, &w->acceptor.watch, NULL);
    close(w->acceptor.watch.fd);
    w->acceptor.watch.fd = -1;
}

/* The thread ---------------------------------------------------------------- */

static void worker_init_loop(struct worker *w)
{
    if (loop_init(&w->loop) < 0 || pool_init(&w->pool, 256) < 0 ||
        mbox_init(&w->mbox, &w->loop) < 0)
        die("worker %d: cannot create its event loop: %s", w->index, strerror(errno));
    w->ctx.loop = &w->loop;
    w->ctx.pool = &w->pool;
    w->ctx.worker = w->index;
    w->ctx.maybe_done = worker_maybe_done;
    w->ctx.wake_timer = worker_wake_timer;
    idmap_init(&w->ctx.ids);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    w->timer = (struct watch){.fd = tfd, .on_event = worker_on_timer};
    if (tfd < 0 || loop_add(&w->loop, &w->timer, EPOLLIN) < 0)
        die("worker %d: cannot create its timer: %s", w->index, strerror(errno));
    if (w->acceptor.watch.fd >= 0 &&
        acceptor_start(&w->acceptor, &w->loop, w->acceptor.watch.fd,
                       SOCK_NONBLOCK | SOCK_CLOEXEC, worker_on_accept) < 0)
        die("worker %d: cannot watch its listening socket: %s", w->index,
            strerror(errno));
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* A name for top -H, perf and gdb ("worker-3"); at most 15 characters. */
    char name[16];
    snprintf(name, sizeof(name), "worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    /* The loop, the pool and the mailbox are created here, on this thread:
     * they are its own, and their ownership checks hold them to it. */
    worker_init_loop(w);
    pthread_barrier_wait(w->started);
    if (loop_run(&w->loop) < 0)
        die("worker %d: event loop stopped", w->index);

    /* Done.  Closures posted after the last check may still be in the
     * mailbox (server_send() replies for connections that are gone): run
     * them, outside any other closure. */
    mbox_drain(&w->mbox);
    mbox_destroy(&w->mbox);
    close(w->timer.fd);
    if (w->acceptor.spare_fd >= 0)
        close(w->acceptor.spare_fd);
    idmap_free(&w->ctx.ids);
    pool_destroy(&w->pool);
    loop_destroy(&w->loop);
    w->on_done(w->index);
    return NULL;
}

void worker_start_all(struct worker_set *set, int n, const struct conn_ctx *proto,
                      const int *listeners, void (*on_done)(int index))
{
    static pthread_barrier_t started;
    set->n = n;
    /* aligned_alloc: struct worker is _Alignas(64); calloc promises only 16. */
    set->workers =
        aligned_alloc(_Alignof(struct worker), (size_t)n * sizeof(*set->workers));
    if (set->workers == NULL)
        die("out of memory");
    memset(set->workers, 0, (size_t)n * sizeof(*set->workers));
    worker_register(set); /* for worker_of() */
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        struct worker *w = &set->workers[i];
        w->index = i;
        w->ctx = *proto;
        w->on_done = on_done;
        w->started = &started;
        w->acceptor.watch.fd = listeners != NULL ? listeners[i] : -1;
        w->acceptor.spare_fd = -1;
        atomic_init(&w->pending, 0);
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0)
            die("cannot start worker %d: %s", i, strerror(rc));
    }
    pthread_barrier_wait(&started); /* every worker is in its loop */
}
