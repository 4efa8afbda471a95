/*
 * app.h - application threads (应用线程, -a N): where replies are built when
 * building one is real work, so the I/O threads (the workers) never stall.
 *
 *   worker (owns the connection)          app thread (id % N)
 *   a complete frame: copy it into a job
 *   inflight += its reply's size   ---->  pop the job, do the work (-b)
 *                                         server_send(id, reply)   --+
 *   mailbox: find connection id   <--------------------------------- +
 *   (gone? drop and count it); queue the reply; inflight -= its size
 *
 * One connection's frames always go to the same app thread (chosen by id),
 * which handles its jobs in order, and posts their replies in order to one
 * mailbox: replies keep each connection's order without any sequence number.
 * A job carries a copy of the frame and the connection's id, never a
 * pointer to the connection: the connection may close while the job waits.
 */
#ifndef LAB_APP_H
#define LAB_APP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct app_job;

struct app_thread {
    _Alignas(64) int index;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t ready;        /* a job arrived, or the pool is stopping */
    struct app_job *head, *tail; /* guarded by lock */
    bool stopping;               /* guarded by lock */
    struct app_pool *pool;
};

struct app_pool {
    struct app_thread *threads;
    int n;
    uint32_t work_us; /* -b: the work each reply costs */
    atomic_bool cut;  /* the -g deadline passed: skip the work, just answer */
};

/* Start n application threads (dies on failure: a startup error). */
void app_start(struct app_pool *p, int n, uint32_t work_us);

struct buf;

/*
 * Hand the frame at the front of in (header and payload, len bytes) of
 * connection id to its application thread, as a copy; worker is the
 * connection's owner (it counts the job: worker_job_started()).  Returns 0,
 * or -1 out of memory.
 */
int app_submit(struct app_pool *p, int worker, uint64_t id, const struct buf *in,
               size_t len);

/* After every worker has stopped: let the threads finish (their queues are
 * empty by then), join them, free everything. */
void app_stop(struct app_pool *p);

#endif
