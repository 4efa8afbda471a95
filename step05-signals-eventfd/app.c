/*
 * app.c - the application threads described in app.h.
 *
 * An application thread is not an event loop: it waits for jobs on a
 * condition variable, the classic producer-consumer queue.  A job is the
 * record of its own reply (struct reply, send.h): the worker makes it, with
 * a copy of the frame, and the app thread builds the reply in it and posts
 * it back with reply_post() (send.c) to the connection's worker.  The app
 * thread never touches a connection, a buffer or a socket, so connections
 * still have exactly one owner - and it allocates nothing, so the way back
 * cannot fail.
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
#include "conn.h"
#include "log.h"
#include "send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t app_job_cost(size_t len)
{
    return reply_cost(len);
}

/* A job waits in its app thread's queue on the node that then links it into
 * the worker's mailbox: it is in one queue at a time. */
static struct reply *job_of(struct closure *node)
{
    return container_of(node, struct reply, post);
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
        struct closure *node = t->head;
        if (node != NULL) {
            t->head = node->next;
            if (t->head == NULL)
                t->tail = NULL;
        }
        pthread_mutex_unlock(&t->lock);
        if (node == NULL)
            return NULL; /* stopping, and nothing left */

        /* The work of building the reply, in place.  For an echo the reply
         * is the frame itself; a real server would compute something here. */
        if (t->pool->work_us > 0)
            conn_simulate_work(t->pool->work_us, atomic_load(&t->pool->stop_ns));
        reply_post(job_of(node));
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

int app_submit(struct app_pool *p, uint64_t id, const struct buf *in, size_t len,
               size_t cost)
{
    struct reply *job = reply_new(id, len);
    if (job == NULL)
        return -1;
    job->cost = cost;
    buf_peek(in, 0, job->bytes, len); /* a copy: the ring may wrap, and change */
    job->post.next = NULL;
    /* By id: one connection, one app thread, one order. */
    struct app_thread *t = &p->threads[id % (uint64_t)p->n];
    pthread_mutex_lock(&t->lock);
    if (t->tail)
        t->tail->next = &job->post;
    else
        t->head = &job->post;
    t->tail = &job->post;
    pthread_cond_signal(&t->ready);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

size_t app_cancel(struct app_pool *p, uint64_t id, size_t *cost)
{
    struct app_thread *t = &p->threads[id % (uint64_t)p->n];
    struct closure *dropped = NULL;
    size_t n = 0;
    /* Unlink them under the lock (a walk of the queue: bounded by what the
     * worker's jobs may cost), free them outside it. */
    pthread_mutex_lock(&t->lock);
    struct closure **link = &t->head, *last = NULL;
    while (*link != NULL) {
        struct closure *node = *link;
        if (job_of(node)->id == id) {
            *link = node->next;
            node->next = dropped;
            dropped = node;
        } else {
            last = node;
            link = &node->next;
        }
    }
    t->tail = last;
    pthread_mutex_unlock(&t->lock);
    while (dropped != NULL) {
        struct reply *job = job_of(dropped);
        dropped = dropped->next;
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
