/*
 * app.c - the application threads described in app.h.
 *
 * An application thread is not an event loop: it waits for jobs on a
 * condition variable, the classic producer-consumer queue.  It answers
 * through server_send(), which posts the reply to the connection's worker as
 * a closure (worker.c): the app thread never touches a connection, a buffer
 * or a socket, so connections still have exactly one owner.
 *
 * New in step05.  Try it:  ./server -a 2 -b 200 -v, then tools/loadgen.
 */
#include "app.h"
#include "buffer.h"
#include "log.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct app_job {
    struct app_job *next;
    uint64_t id; /* the connection: an id, never a pointer */
    int worker;  /* its owner, to tell when its jobs are all answered */
    size_t len;
    uint8_t frame[]; /* header and payload: the echo's reply is the frame */
};

/* -b: burn us microseconds of this thread's CPU (see conn.c). */
static void app_simulate_work(uint32_t us)
{
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000 +
                 (now.tv_nsec - start.tv_nsec) / 1000 <
             (long)us);
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
        if (t->pool->work_us > 0 && !atomic_load(&t->pool->cut))
            app_simulate_work(t->pool->work_us);
        if (server_send(job->id, job->frame, job->len) < 0)
            log_msg("conn=%llu error=nomem: a reply was lost",
                    (unsigned long long)job->id);
        worker_job_done(job->worker);
        free(job);
    }
}

void app_start(struct app_pool *p, int n, uint32_t work_us)
{
    *p = (struct app_pool){.n = n, .work_us = work_us};
    atomic_init(&p->cut, false);
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
               size_t len)
{
    struct app_job *job = malloc(sizeof(*job) + len);
    if (job == NULL)
        return -1;
    *job = (struct app_job){.id = id, .worker = worker, .len = len};
    buf_peek(in, 0, job->frame, len); /* a copy: the ring may wrap, and change */
    worker_job_started(worker);
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
