/*
 * worker.c - worker threads and the handoff queue (see worker.h).
 *
 * What this file teaches: how one thread gives work to another thread that
 * sleeps in epoll_wait().  A condition variable cannot wake it (epoll_wait
 * waits on file descriptors, not on condition variables), so the acceptor
 * writes a byte to a pipe the worker watches: the pipe turns "there is work
 * in your queue" into an fd event.  Two ways to use it (-D):
 *
 *   rr      one queue and one pipe per worker (edge-triggered).  The wake
 *           handler drains the pipe, swaps the whole queue out under the lock
 *           (muduo's swap-under-lock), and opens the connections outside it.
 *   shared  one queue for all workers, one pipe in every worker's epoll with
 *           EPOLLEXCLUSIVE (level-triggered).  Every byte is one connection:
 *           a worker that reads a byte pops one.  Whichever worker is idle
 *           takes the next connection; EPOLLEXCLUSIVE wakes one sleeping
 *           worker per byte instead of all of them (the thundering herd,
 *           惊群).
 *
 * New in step04.  Try it:  ./server -w 2 -v  and watch "open worker=N".
 */
#include "worker.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

int handoff_queue_init(struct handoff_queue *q, size_t cap)
{
    *q = (struct handoff_queue){.cap = cap};
    int fds[2];
    q->items = calloc(cap, sizeof(*q->items));
    if (q->items == NULL || pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    q->wake_read = fds[0];
    q->wake_write = fds[1];
    /* shared: one byte per queued connection must always fit in the pipe,
     * or a byte (a wakeup) could be lost.  A pipe holds 64 KiB by default;
     * make sure, and shrink the queue if the system gave us less. */
    int pipe_size = fcntl(q->wake_write, F_GETPIPE_SZ);
    if (pipe_size > 0 && (size_t)pipe_size < q->cap)
        q->cap = (size_t)pipe_size;
    return pthread_mutex_init(&q->lock, NULL) == 0 ? 0 : -1;
}

int handoff_push(struct handoff_queue *q, int fd, uint64_t id)
{
    pthread_mutex_lock(&q->lock);
    bool full = q->len == q->cap;
    if (!full) {
        q->items[(q->head + q->len) % q->cap] = (struct handoff){fd, id};
        q->len++;
    }
    pthread_mutex_unlock(&q->lock);
    if (full)
        return -1;
    /* Wake the consumer - after the unlock, so it does not wake only to
     * block on the mutex we still hold. */
    char token = 1;
    ssize_t n;
    do {
        n = write(q->wake_write, &token, 1);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full of wakeups nobody has read yet.  For an rr
     * queue that is fine (its worker takes the whole queue on the next one);
     * a shared queue is never longer than the pipe (handoff_queue_init). */
    if (n < 0 && errno != EAGAIN)
        log_msg("conn=%" PRIu64 " wake pipe: %s", id, strerror(errno));
    return 0;
}

/* Read the pipe until EAGAIN: it is edge-triggered, so bytes left behind
 * would bring no new edge. */
static void worker_drain_pipe(struct worker *w)
{
    char buf[256];
    ssize_t n;
    do {
        n = read(w->wake.fd, buf, sizeof(buf));
    } while (n > 0 || (n < 0 && errno == EINTR));
    if (n < 0 && errno != EAGAIN)
        log_msg("worker=%d wake pipe: %s", w->index, strerror(errno));
}

/*
 * rr: drain the pipe, then swap the queue out under the lock and open the
 * connections outside it.  The order matters.  Drain first: a handoff that
 * lands after the swap wrote its byte after our drain, so a new edge brings
 * us back for it.  (Swap first, and a handoff between swap and drain would
 * leave its connection in the queue with its byte eaten: stranded until the
 * next connection arrives.)
 */
static void worker_on_wake_rr(struct watch *wake, uint32_t events)
{
    struct worker *w = container_of(wake, struct worker, wake);
    struct handoff_queue *q = w->queue;
    (void)events;
    worker_drain_pipe(w);

    pthread_mutex_lock(&q->lock);
    struct handoff *items = q->items;
    size_t head = q->head, len = q->len;
    q->items = w->spare; /* O(1) under the lock: no copying, no conn_open() */
    q->head = q->len = 0;
    pthread_mutex_unlock(&q->lock);

    w->spare = items;
    for (size_t i = 0; i < len; i++) {
        const struct handoff *h = &items[(head + i) % q->cap];
        conn_open(&w->ctx, h->fd, h->id);
    }
}

/*
 * shared: one byte, one connection.  The pipe is level-triggered: while
 * bytes remain, epoll_wait() reports it again, to this worker or another.
 * A read that finds nothing means another worker was faster: a wasted
 * wake-up, which is what EPOLLEXCLUSIVE keeps rare.
 */
static void worker_on_wake_shared(struct watch *wake, uint32_t events)
{
    struct worker *w = container_of(wake, struct worker, wake);
    struct handoff_queue *q = w->queue;
    (void)events;
    char token;
    ssize_t n;
    do {
        n = read(w->wake.fd, &token, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        return; /* EAGAIN: another worker took this one */

    pthread_mutex_lock(&q->lock);
    /* Every byte was written after its connection was queued, and only one
     * reader gets each byte: there is a connection for us. */
    assert(q->len > 0);
    struct handoff h = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    pthread_mutex_unlock(&q->lock);

    conn_open(&w->ctx, h.fd, h.id);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* A name for top -H, perf and gdb ("worker-3"); at most 15 characters. */
    char name[16];
    snprintf(name, sizeof(name), "worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    /* The loop and the pool are created here, on this thread: they are
     * its own, and their assertions hold them to it. */
    if (loop_init(&w->loop) < 0 || pool_init(&w->pool, 256) < 0)
        die("worker %d: cannot create its event loop: %s", w->index, strerror(errno));
    w->ctx.loop = &w->loop;
    w->ctx.pool = &w->pool;
    w->ctx.worker = w->index;
    uint32_t events = EPOLLIN | EPOLLET;
    w->wake = (struct watch){.fd = w->queue->wake_read, .on_event = worker_on_wake_rr};
    if (w->mode == DISPATCH_SHARED) {
        events = EPOLLIN | EPOLLEXCLUSIVE;
        w->wake.on_event = worker_on_wake_shared;
    } else {
        w->spare = calloc(w->queue->cap, sizeof(*w->spare));
        if (w->spare == NULL)
            die("worker %d: out of memory", w->index);
    }
    if (loop_add(&w->loop, &w->wake, events) < 0)
        die("worker %d: cannot watch its wake pipe: %s", w->index, strerror(errno));
    pthread_barrier_wait(w->started);
    loop_run(&w->loop); /* returns only if epoll_wait() fails for good */
    die("worker %d: event loop stopped", w->index);
}

void worker_start_all(struct worker *ws, int n, enum dispatch mode,
                      struct handoff_queue *queues, const struct conn_ctx *proto)
{
    static pthread_barrier_t started;
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        struct worker *w = &ws[i];
        w->index = i;
        w->mode = mode;
        w->queue = mode == DISPATCH_SHARED ? &queues[0] : &queues[i];
        w->ctx = *proto;
        w->started = &started;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0)
            die("cannot start worker %d: %s", i, strerror(rc));
    }
    pthread_barrier_wait(&started); /* every worker is in its loop */
}
