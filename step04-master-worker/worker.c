/*
 * worker.c - worker threads (see worker.h).
 *
 * What this file teaches: a thread per core, each running step03's event
 * loop on its own connections, with its own pool, fed new connections by
 * the acceptor through a handoff queue and a wake pipe (handoff.c) - or,
 * with -D reuseport, accepting them itself, from a listening socket of its
 * own (accept.c), with no acceptor in between.
 *
 * New in step04.  Try it:  ./server -w 2 -v  and watch "open worker=N".
 */
#include "worker.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void worker_open(void *arg, int fd, uint64_t id)
{
    struct worker *w = arg;
    conn_open(&w->ctx, fd, id);
}

/* The wake pipe is readable: take what the acceptor queued (handoff.c). */
static void worker_on_wake(struct watch *wake, uint32_t events)
{
    struct worker *w = container_of(wake, struct worker, wake);
    (void)events;
    struct handoff h;
    if (w->mode == DISPATCH_RR)
        handoff_take_all(w->queue, &w->spare, worker_open, w);
    else if (handoff_take_one(w->queue, &h))
        conn_open(&w->ctx, h.fd, h.id);
}

/* -D reuseport: a connection the kernel gave this worker's own socket.  Its
 * id comes from a counter all the workers share - one atomic add per
 * connection, never per message - so ids still count connections in the
 * order they were accepted, as the acceptor's do. */
static void worker_on_accept(struct acceptor *a, int fd)
{
    struct worker *w = container_of(a, struct worker, acceptor);
    conn_open(&w->ctx, fd, atomic_fetch_add(w->next_id, 1));
}

/* The thread ---------------------------------------------------------------- */

static void worker_init_loop(struct worker *w)
{
    if (loop_init(&w->loop) < 0 || pool_init(&w->pool, 256) < 0)
        die("worker %d: cannot create its event loop: %s", w->index, strerror(errno));
    w->ctx.loop = &w->loop;
    w->ctx.pool = &w->pool;
    w->ctx.worker = w->index;
    if (w->mode == DISPATCH_REUSEPORT) {
        if (acceptor_start(&w->acceptor, &w->loop, w->listen_fd,
                           SOCK_NONBLOCK | SOCK_CLOEXEC, worker_on_accept) < 0)
            die("worker %d: cannot watch its listening socket: %s", w->index,
                strerror(errno));
        return;
    }
    /* rr: edge-triggered, the handler drains the pipe.  shared: level-
     * triggered, a byte per visit, and EPOLLEXCLUSIVE against the herd. */
    uint32_t events = EPOLLIN | EPOLLET;
    w->wake = (struct watch){.fd = w->queue->wake_read, .on_event = worker_on_wake};
    if (w->mode == DISPATCH_SHARED) {
        events = EPOLLIN | EPOLLEXCLUSIVE;
    } else {
        w->spare = calloc(w->queue->cap, sizeof(*w->spare));
        if (w->spare == NULL)
            die("worker %d: out of memory", w->index);
    }
    if (loop_add(&w->loop, &w->wake, events) < 0)
        die("worker %d: cannot watch its wake pipe: %s", w->index, strerror(errno));
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* A name for top -H, perf and gdb ("worker-3"); at most 15 characters. */
    char name[16];
    snprintf(name, sizeof(name), "worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    /* The loop and the pool are created here, on this thread: they are
     * its own, and their ownership checks hold them to it. */
    worker_init_loop(w);
    pthread_barrier_wait(w->started);
    loop_run(&w->loop); /* returns only if epoll_wait() fails for good */
    die("worker %d: event loop stopped", w->index);
}

void worker_start_all(struct worker_set *set, int n, enum dispatch mode,
                      struct handoff_queue *queues, const int *listeners,
                      const struct conn_ctx *proto)
{
    static pthread_barrier_t started;
    set->n = n;
    /* aligned_alloc: struct worker is _Alignas(64); calloc promises only 16. */
    set->workers =
        aligned_alloc(_Alignof(struct worker), (size_t)n * sizeof(*set->workers));
    if (set->workers == NULL)
        die("out of memory");
    memset(set->workers, 0, (size_t)n * sizeof(*set->workers));
    atomic_init(&set->next_id, 1);
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        struct worker *w = &set->workers[i];
        w->index = i;
        w->mode = mode;
        if (mode == DISPATCH_REUSEPORT) {
            w->listen_fd = listeners[i];
            w->next_id = &set->next_id;
        } else {
            w->queue = mode == DISPATCH_SHARED ? &queues[0] : &queues[i];
        }
        w->ctx = *proto;
        w->started = &started;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0)
            die("cannot start worker %d: %s", i, strerror(rc));
    }
    pthread_barrier_wait(&started); /* every worker is in its loop */
}
