/*
 * worker_mail.c - how the other threads reach a worker (see worker.h): by
 * posting it a closure.
 *
 * What this file teaches: a worker thread only ever runs its own event
 * loop, and every other thread talks to it through its mailbox (mbox.c).
 * New connections (worker_hand_off), replies built by application threads
 * (send.c), and the order to shut down (worker_shutdown_all) all arrive
 * there; step04's handoff queue and wake pipe are gone.  Which worker to
 * post to, any thread can tell from a connection's id (worker_of).
 *
 * Shutting down (优雅退出), per worker:
 *
 *   running --shutdown closure--> stopping: no more reads; answer what was
 *                                 read; flush; close (or linger) each
 *        every connection closed and the reply  |  the -g deadline (timer):
 *        to every job back from the app threads |  cut what is still open
 *                                               v
 *                                 done: leave the loop (step06: once the
 *                                 ring has returned every operation), run
 *                                 the last closures, free, tell the acceptor
 *
 * The worker knows when its jobs are all answered without asking anyone:
 * it counts each one out when it submits it, and back in when its reply
 * reaches this thread (conn_deliver) or it is dropped from an app queue
 * (app_cancel) - both on this thread.
 *
 * New in step05.
 */
#include "worker.h"
#include "linger.h"
#include "log.h"

#include <stdlib.h>
#include <unistd.h>

static struct worker_set *the_set; /* for worker_of(): set once at start */

void worker_register(struct worker_set *set)
{
    the_set = set;
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

int worker_count(void)
{
    return the_set->n;
}

/* An accepted connection on its way to its worker. */
struct handoff {
    struct closure post; /* its node in the worker's mailbox */
    struct worker *w;
    int fd;
    uint64_t id;
};

/* On the worker: the acceptor's hand-off arrived. */
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

/* On the worker: the acceptor's order to stop arrived. */
static void worker_on_shutdown(struct closure *c)
{
    struct worker *w = container_of(c, struct worker, shutdown_post);
    worker_stop_accepting(w); /* reuseport: what waits in its backlog first */
    w->stopping = true;
    w->ctx.stop_ns = w->deadline_ns; /* -b work on this thread stops there */
    conn_shutdown_all(&w->ctx);
    /* Every connection of this worker now drains: from here on it is the
     * shutdown, not the client, that closes them (tests wait for this). */
    log_debug("worker=%d shutdown: reading stopped, answering what is owed", w->index);
    worker_timer(w, true); /* for the deadline */
    worker_check_done(w);
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
