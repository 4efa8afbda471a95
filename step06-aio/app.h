/*
 * app.h - application threads (应用线程, -a N): where replies are built when
 * building one is real work, so the I/O threads (the workers) never stall.
 *
 *   worker (owns the connection)          app thread (id % N)
 *   a complete frame: copy it into a job,
 *   the record of its reply
 *   inflight += what the job costs  ---->  pop the job, do the work (-b),
 *                                          build the reply in it;
 *                                          reply_post(job) --------------+
 *   mailbox: find connection id   <------------------------------------- +
 *   (gone? drop and count it); queue the reply; inflight -= its cost
 *
 * One connection's frames always go to the same app thread (chosen by id),
 * which handles its jobs in order, and posts their replies in order to one
 * mailbox: replies keep each connection's order without any sequence number.
 * A job carries a copy of the frame and the connection's id, never a
 * pointer to the connection: the connection may close while the job waits.
 */
#ifndef LAB_APP_H
#define LAB_APP_H

#include "mbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct app_thread {
    _Alignas(64) int index;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t ready;        /* a job arrived, or the pool is stopping */
    struct closure *head, *tail; /* the jobs (struct reply); guarded by lock */
    bool stopping;               /* guarded by lock */
    struct app_pool *pool;
};

struct app_pool {
    struct app_thread *threads;
    int n;
    uint32_t work_us;         /* -b: the work each reply costs */
    _Atomic uint64_t stop_ns; /* the -g deadline (CLOCK_MONOTONIC), once set:
                               * work stops there, replies go out at once */
};

/* Start n application threads (dies on failure: a startup error). */
void app_start(struct app_pool *p, int n, uint32_t work_us);

struct buf;

/*
 * What a job for a frame of len bytes costs the server until its reply is
 * back on the worker: its record (which becomes the reply) with the copy of
 * the frame, and malloc's header.  Backpressure counts this, not len: an
 * empty frame is 4 bytes on the wire and about 70 here.
 */
size_t app_job_cost(size_t len);

/*
 * Hand the frame at the front of in (header and payload, len bytes) of
 * connection id to its application thread, as a copy in the record of its
 * reply; cost (app_job_cost(len)) comes back with the reply.  Returns 0, or
 * -1 out of memory - the only way a job can fail: once submitted, its reply
 * reaches the worker.
 */
int app_submit(struct app_pool *p, uint64_t id, const struct buf *in, size_t len,
               size_t cost);

/* On the worker, when connection id closes: drop its jobs that no thread has
 * started (nobody will read their replies).  Returns how many, and adds
 * what they cost to *cost. */
size_t app_cancel(struct app_pool *p, uint64_t id, size_t *cost);

/* After every worker has stopped: let the threads finish (their queues are
 * empty by then), join them, free everything. */
void app_stop(struct app_pool *p);

#endif
