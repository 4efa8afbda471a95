/*
 * app.c - the application threads described in app.h.
 *
 * An application thread is not an event loop: it waits for jobs on a
 * condition variable, the classic producer-consumer queue.  It answers
 * through server_reply(), which posts the reply to the connection's worker
 * as a closure (worker.c): the app thread never touches a connection, a
 * buffer or a socket, so connections still have exactly one owner.
 *
 * The worker counts its jobs, and what they cost, from the moment it
 * submits one until the reply is back on its own thread: one thread owns the
 * count, so nothing about it can race.  A job whose connection closes before
 * any thread starts it is taken back out of the queue (app_cancel()) and
 * never run.
 *
 * New in step05.  Try it:  ./server -a 2 -b 200 -v, then tools/loadgen.
 */
#include "app.h"
#include "buffer.h"
#include "log.h"
#include "mbox.h"
#include "send.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct app_job {
    struct app_job *next;
    uint64_t id; /* the connection: an id, never a pointer */
    int worker;  /* its owner, who counts the job until the reply is back */
    size_t cost; /* app_job_cost(len): given back with the reply */
    size_t len;
    uint8_t frame[]; /* header and payload: the echo's reply is the frame */
};

/* What malloc() keeps beside each block (glibc: 8 to 16 bytes). */
#define APP_MALLOC_HEADER 16

size_t app_job_cost(size_t len)
{
    return sizeof(struct app_job) + len + APP_MALLOC_HEADER + server_reply_cost(len) +
           sizeof(struct closure);
}

static uint64_t app_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void app_simulate_work(uint32_t us, uint64_t stop_ns)
{
    uint64_t start = app_cpu_us();
    while (app_cpu_us() - start < us)
        if (stop_ns != 0 && conn_now_ns() >= stop_ns)
            return; /* the shutdown's deadline: answer now, unfinished */
}

static void *app_main(void *arg)
{
    struct app_thread *t = arg;
    char name[16];
    snprintf(name, sizeof(name), "app-%d", t->index);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        pthread_mutex_lock(&t->lock);
        while (t->head == NULL && !t->stopping)
            pthread_cond_wait(&t->ready, &t->lock);
        struct app_job *job = t->head;
        if (job != NULL) {
            t->head = job->next;
            if (t->head == NULL)
                t->tail = NULL;
        }
        pthread_mutex_unlock(&t->lock);
        if (job == NULL)
            return NULL; /* stopping, and nothing left */

        /* The work of building the reply.  For an echo the reply is the
         * frame itself; a real server would compute something here. */
        if (t->pool->work_us > 0)
            app_simulate_work(t->pool->work_us, atomic_load(&t->pool->stop_ns));
        if (server_reply(job->worker, job->id, job->cost, job->frame, job->len) < 0)
            log_msg("conn=%llu error=nomem: a reply was lost",
                    (unsigned long long)job->id);
        free(job);
    }
}

void app_start(struct app_pool *p, int n, uint32_t work_us)
{
    *p = (struct app_pool){.n = n, .work_us = work_us};
    atomic_init(&p->stop_ns, 0);
    p->threads =
        aligned_alloc(_Alignof(struct app_thread), (size_t)n * sizeof(*p->threads));
    if (p->threads == NULL)
        die("out of memory");
    for (int i = 0; i < n; i++) {
        struct app_thread *t = &p->threads[i];
        *t = (struct app_thread){.index = i, .pool = p};
        if (pthread_mutex_init(&t->lock, NULL) != 0 ||
            pthread_cond_init(&t->ready, NULL) != 0)
            die("cannot create app thread %d's queue", i);
        int rc = pthread_create(&t->thread, NULL, app_main, t);
        if (rc != 0)
            die("cannot start app thread %d: %s", i, strerror(rc));
    }
}

int app_submit(struct app_pool *p, int worker, uint64_t id, const struct buf *in,
               size_t len, size_t cost)
{
    struct app_job *job = malloc(sizeof(*job) + len);
    if (job == NULL)
        return -1;
    *job = (struct app_job){.id = id, .worker = worker, .cost = cost, .len = len};
    buf_peek(in, 0, job->frame, len); /* a copy: the ring may wrap, and change */
    /* By id: one connection, one app thread, one order. */
    struct app_thread *t = &p->threads[id % (uint64_t)p->n];
    pthread_mutex_lock(&t->lock);
    if (t->tail)
        t->tail->next = job;
    else
        t->head = job;
    t->tail = job;
    pthread_cond_signal(&t->ready);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

size_t app_cancel(struct app_pool *p, uint64_t id, size_t *cost)
{
    struct app_thread *t = &p->threads[id % (uint64_t)p->n];
    struct app_job *dropped = NULL;
    size_t n = 0;
    /* Unlink them under the lock (a walk of the queue: bounded by what the
     * worker's jobs may cost), free them outside it. */
    pthread_mutex_lock(&t->lock);
    struct app_job **link = &t->head, *last = NULL;
    while (*link != NULL) {
        struct app_job *job = *link;
        if (job->id == id) {
            *link = job->next;
            job->next = dropped;
            dropped = job;
        } else {
            last = job;
            link = &job->next;
        }
    }
    t->tail = last;
    pthread_mutex_unlock(&t->lock);
    while (dropped != NULL) {
        struct app_job *job = dropped;
        dropped = job->next;
        *cost += job->cost;
        n++;
        free(job);
    }
    return n;
}

void app_stop(struct app_pool *p)
{
    for (int i = 0; i < p->n; i++) {
        struct app_thread *t = &p->threads[i];
        pthread_mutex_lock(&t->lock);
        t->stopping = true;
        pthread_cond_signal(&t->ready);
        pthread_mutex_unlock(&t->lock);
    }
    for (int i = 0; i < p->n; i++) {
        pthread_join(p->threads[i].thread, NULL);
        pthread_mutex_destroy(&p->threads[i].lock);
        pthread_cond_destroy(&p->threads[i].ready);
    }
    free(p->threads);
}
