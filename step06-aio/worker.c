/*
 * worker.c - worker threads (see worker.h).
 *
 * What this file teaches: a thread that only ever runs its own completion
 * loop, and that every other thread reaches by posting it a closure.  New
 * connections, replies built by application threads, and the order to shut
 * down all arrive in its mailbox (mbox.c).  In step06 the loop is an
 * io_uring: the worker submits operations - a recv and a send per
 * connection, a read of its mailbox's eventfd, a read of its timerfd - and
 * one io_uring_enter() waits until some of them complete.
 *
 *   for (;;) {
 *       io_uring_enter(submit the new SQEs, wait for >= 1 CQE)
 *       for each CQE: op = (struct ring_op *)cqe->user_data;
 *           recv/send/cancel -> conn_complete()    mailbox read -> mbox_take()
 *           timer read -> deadlines                 (and submit the next ones)
 *       free the connections whose last completion came (conn_free_closed)
 *   }
 *
 * Shutting down (优雅退出), per worker:
 *
 *   running --shutdown closure--> stopping: no more reads; answer what was
 *                                 read; flush; close (or linger) each
 *        every connection closed and the reply  |  the -g deadline (timer):
 *        to every job back from the app threads |  cut what is still open
 *                                               v
 *                                 done: cancel its own mailbox and timer
 *                                 reads; when the ring has returned every
 *                                 operation, leave the loop, run the last
 *                                 closures, free, tell the acceptor
 *
 * The worker knows when its jobs are all answered without asking anyone:
 * it counts each one out when it submits it, and back in when its reply
 * reaches this thread (conn_deliver) or it is dropped from an app queue
 * (app_cancel) - both on this thread.
 */
#include "worker.h"
#include "linger.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* The timer's tick while anything needs it: the precision of -i, of the
 * lingering bound and of the -g deadline (exercise: one deadline per
 * connection, in a timer wheel or a heap, instead of a scan per tick). */
#define WORKER_TICK_NS 100000000 /* 100 ms */

static struct worker_set *the_set; /* for worker_of(): set once at start */

/* An accepted connection on its way to its worker. */
struct handoff {
    struct closure post; /* its node in the worker's mailbox */
    struct worker *w;
    int fd;
    uint64_t id;
};

static void worker_timer(struct worker *w, bool on)
{
    if (w->timer_on == on)
        return;
    struct itimerspec its = {0}; /* all zero: disarm */
    if (on)
        its.it_value.tv_nsec = its.it_interval.tv_nsec = WORKER_TICK_NS;
    if (timerfd_settime(w->timer_fd, 0, &its, NULL) < 0)
        log_msg("worker=%d timerfd_settime: %s", w->index, strerror(errno));
    w->timer_on = on;
}

/* A read of one of the worker's own 8-byte fds (the mailbox's eventfd, the
 * timerfd), completed by the ring when the fd has something to say. */
static void worker_read(struct worker *w, struct ring_op *op, int fd, uint64_t *value)
{
    ring_prep_read(&w->ring, op, fd, value, sizeof(*value));
    w->own_ops++;
}

static void worker_cancel(struct worker *w, struct ring_op *op, struct ring_op *cancel)
{
    ring_prep_cancel(&w->ring, cancel, op);
    w->own_ops++;
}

/* Stopping, and nothing left: no connection (closed ones count until their
 * last completion: they still point into the pool we are about to
 * destroy), no job at an app thread (its reply is sure to come: posting
 * it cannot fail).  Then take back the ring's last operations: the mailbox
 * and timer reads. */
static void worker_check_done(struct worker *w)
{
    if (!w->stopping || w->done || w->ctx.first != NULL || w->ctx.closing > 0 ||
        w->ctx.jobs > 0)
        return;
    w->done = true;
    worker_timer(w, false);
    if (w->mbox_op.busy)
        worker_cancel(w, &w->mbox_op, &w->cancel_mbox_op);
    if (w->timer_op.busy)
        worker_cancel(w, &w->timer_op, &w->cancel_timer_op);
    w->leave_loop = w->own_ops == 0;
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

static void worker_on_timer(struct worker *w, int res)
{
    if (res < 0 && res != -ECANCELED && res != -EINTR)
        log_msg("worker=%d timerfd read: %s", w->index, strerror(-res));
    if (!w->done)
        worker_read(w, &w->timer_op, w->timer_fd, &w->timer_value);
    if (res != sizeof(w->timer_value))
        return;
    uint64_t now = conn_now_ns();
    /* The deadline holds whatever is left: connections still owed data are
     * cut (and their queued jobs dropped); a job being worked on stops at
     * the deadline by itself (app_simulate_work), and its reply is dropped. */
    if (w->stopping && now >= w->deadline_ns)
        conn_cut_all(&w->ctx);
    bool needed = conn_tick(&w->ctx, now);
    worker_timer(w, needed || (w->stopping && !w->done));
}

/* The mailbox's eventfd was read (that read cleared it: rule 2 of mbox.c):
 * take the queue, then read it again. */
static void worker_on_mbox(struct worker *w, int res)
{
    if (res < 0 && res != -ECANCELED && res != -EINTR)
        log_msg("worker=%d mailbox read: %s", w->index, strerror(-res));
    if (!w->done)
        worker_read(w, &w->mbox_op, w->mbox.efd, &w->mbox_value);
    mbox_take(&w->mbox);
}

/* One completion: whose operation it was, from the record user_data
 * points at. */
static void worker_complete(struct worker *w, struct ring_op *op, int res)
{
    op->busy = false;
    switch (op->kind) {
    case RING_OP_MBOX:
        w->own_ops--;
        worker_on_mbox(w, res);
        break;
    case RING_OP_TIMER:
        w->own_ops--;
        worker_on_timer(w, res);
        break;
    case RING_OP_CANCEL_MBOX:
    case RING_OP_CANCEL_TIMER:
        w->own_ops--;
        break;
    default:
        conn_complete(op, res); /* one of a connection's */
        break;
    }
    if (w->done && w->own_ops == 0)
        w->leave_loop = true;
}

/* The completion loop. */
static void worker_run(struct worker *w)
{
    while (!w->leave_loop) {
        /* -EBUSY: completions overflowed the CQ (the kernel keeps them:
         * IORING_FEAT_NODROP) and wait for room; -EAGAIN: no memory for a
         * request just now.  Either way, reap what is there and go again.
         * Anything else (-EBADR: a completion was lost) cannot be undone. */
        int ret = ring_submit_and_wait(&w->ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
            die("worker %d: io_uring_enter: %s", w->index, strerror(-ret));
        struct io_uring_cqe *cqe;
        while ((cqe = ring_peek_cqe(&w->ring)) != NULL) {
            struct ring_op *op = (struct ring_op *)(uintptr_t)cqe->user_data;
            int res = cqe->res;
            ring_cqe_seen(&w->ring); /* free the slot before we submit more */
            worker_complete(w, op, res);
        }
        conn_free_closed(&w->ctx); /* no completion of this batch names them now */
    }
}

/* Closures the other threads post -------------------------------------- */

static void worker_on_open(struct closure *c)
{
    struct handoff *h = container_of(c, struct handoff, post);
    struct worker *w = h->w;
    atomic_fetch_sub(&w->pending, 1);
    if (w->stopping) /* cannot happen: the acceptor stops before it says so */
        close(h->fd);
    else if (conn_open(&w->ctx, h->fd, h->id) != NULL && w->ctx.idle_ns > 0)
        worker_timer(w, true);
    free(h);
}

static void worker_on_shutdown(struct closure *c)
{
    struct worker *w = container_of(c, struct worker, shutdown_post);
    w->stopping = true;
    w->ctx.stop_ns = w->deadline_ns; /* -b work on this thread stops there */
    conn_shutdown_all(&w->ctx);
    /* Every connection of this worker now drains: from here on it is the
     * shutdown, not the client, that closes them (tests wait for this). */
    log_debug("worker=%d shutdown: reading stopped, answering what is owed", w->index);
    worker_timer(w, true); /* for the deadline */
    worker_check_done(w);
}

int worker_hand_off(struct worker *w, int fd, uint64_t id)
{
    if (atomic_load(&w->pending) >= WORKER_PENDING_MAX)
        return -1; /* stuck: it has not opened the last 1,024 yet */
    struct handoff *h = malloc(sizeof(*h));
    if (h == NULL)
        return -1;
    *h = (struct handoff){.post.fn = worker_on_open, .w = w, .fd = fd, .id = id};
    atomic_fetch_add(&w->pending, 1);
    mbox_post(&w->mbox, &h->post);
    return 0;
}

struct worker *worker_of(uint64_t id)
{
    ENSURE(id != 0, "ids start at 1");
    return &the_set->workers[(id - 1) % (uint64_t)the_set->n];
}

struct worker *worker_at(int index)
{
    return &the_set->workers[index];
}

void worker_shutdown_all(struct worker_set *set, uint64_t deadline_ns)
{
    for (int i = 0; i < set->n; i++) {
        struct worker *w = &set->workers[i];
        /* Written before the post: the mailbox's mutex orders it before the
         * closure that reads it. */
        w->deadline_ns = deadline_ns;
        w->shutdown_post.fn = worker_on_shutdown;
        mbox_post(&w->mbox, &w->shutdown_post);
    }
}

/* The thread ---------------------------------------------------------------- */

static void worker_init_ring(struct worker *w)
{
    int ret =
        ring_init(&w->ring, WORKER_SQ_ENTRIES, WORKER_CQ_ENTRIES, w->uring.ring_flags);
    if (ret < 0)
        die("worker %d: io_uring_setup: %s", w->index, strerror(-ret));
    w->ctx.scratch = malloc(CONN_SCRATCH_LEN);
    if (w->ctx.scratch == NULL || pool_init(&w->pool, 256) < 0 ||
        mbox_init_blocking(&w->mbox) < 0)
        die("worker %d: cannot create its mailbox: %s", w->index, strerror(errno));
    w->ctx.ring = &w->ring;
    w->ctx.poll_first = w->uring.poll_first;
    w->ctx.pool = &w->pool;
    w->ctx.owner = pthread_self();
    w->ctx.worker = w->index;
    w->ctx.maybe_done = worker_maybe_done;
    w->ctx.wake_timer = worker_wake_timer;
    idmap_init(&w->ctx.ids);
    /* Blocking: the ring's read waits on it (see mbox_init_blocking()). */
    w->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (w->timer_fd < 0)
        die("worker %d: cannot create its timer: %s", w->index, strerror(errno));
    w->mbox_op.kind = RING_OP_MBOX;
    w->timer_op.kind = RING_OP_TIMER;
    w->cancel_mbox_op.kind = RING_OP_CANCEL_MBOX;
    w->cancel_timer_op.kind = RING_OP_CANCEL_TIMER;
    worker_read(w, &w->mbox_op, w->mbox.efd, &w->mbox_value);
    worker_read(w, &w->timer_op, w->timer_fd, &w->timer_value);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* A name for top -H, perf and gdb ("worker-3"); at most 15 characters. */
    char name[16];
    snprintf(name, sizeof(name), "worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    /* The ring, the pool and the mailbox are created here, on this thread:
     * they are its own (IORING_SETUP_SINGLE_ISSUER holds the ring to it). */
    worker_init_ring(w);
    pthread_barrier_wait(w->started);
    worker_run(w);

    /* Done, and the ring has returned every operation.  Closures posted
     * after the last check may still be in the mailbox (server_send()
     * replies for connections that are gone): run them. */
    mbox_take(&w->mbox);
    mbox_destroy(&w->mbox);
    close(w->timer_fd);
    free(w->ctx.scratch);
    idmap_free(&w->ctx.ids);
    pool_destroy(&w->pool);
    ring_exit(&w->ring);
    w->on_done(w->index);
    return NULL;
}

void worker_start_all(struct worker_set *set, int n, const struct conn_ctx *proto,
                      const struct worker_uring *uring, void (*on_done)(int index))
{
    static pthread_barrier_t started;
    set->n = n;
    /* aligned_alloc: struct worker is _Alignas(64); calloc promises only 16. */
    set->workers =
        aligned_alloc(_Alignof(struct worker), (size_t)n * sizeof(*set->workers));
    if (set->workers == NULL)
        die("out of memory");
    memset(set->workers, 0, (size_t)n * sizeof(*set->workers));
    the_set = set;
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        struct worker *w = &set->workers[i];
        w->index = i;
        w->ctx = *proto;
        w->uring = *uring;
        w->on_done = on_done;
        w->started = &started;
        atomic_init(&w->pending, 0);
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0)
            die("cannot start worker %d: %s", i, strerror(rc));
    }
    pthread_barrier_wait(&started); /* every worker is in its loop */
}

void worker_join_all(struct worker_set *set, struct conn_stats *stats)
{
    for (int i = 0; i < set->n; i++) {
        pthread_join(set->workers[i].thread, NULL);
        stats[i] = set->workers[i].ctx.stats; /* joined: its writes are visible */
    }
}

void worker_free_all(struct worker_set *set)
{
    free(set->workers);
    set->workers = NULL;
}
