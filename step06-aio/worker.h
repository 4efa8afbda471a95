/*
 * worker.h - the worker threads (工作线程) of the master-worker server (主从
 * Reactor): each owns an event loop, a buffer pool, its connections, and a
 * mailbox (mbox.c) through which every other thread talks to it.
 *
 *   any thread                               worker thread N
 *   mbox_post(worker N, fn, arg)   ---->     eventfd readable: run fn(arg)
 *     acceptor:  open {fd, id}                 conn_open()
 *     app thread: a reply for id               conn_deliver(): id -> conn
 *     acceptor:  shut down by a deadline       conn_shutdown_all()
 *
 * A connection's id says which worker owns it: worker = (id - 1) % workers.
 * So any thread can send to a connection knowing only its id.
 *
 * step06: a worker runs an io_uring completion loop instead of an epoll
 * loop.  Its mailbox's eventfd and its timerfd are read by ring operations
 * too, so one io_uring_enter() waits for everything.
 */
#ifndef LAB_WORKER_H
#define LAB_WORKER_H

#include "app.h"
#include "conn.h"
#include "mbox.h"
#include "pool.h"
#include "ring.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* New connections waiting for one worker before the acceptor turns them
 * away (as step04's queue). */
#define WORKER_QUEUE_MAX 1024

/*
 * One worker.  _Alignas(64): the workers sit side by side in an array, and
 * each thread writes its own all the time (its loop, its counters); on a
 * shared 64-byte cache line those writes would bounce the line between cores
 * (false sharing, 伪共享) although no data is shared.
 */
struct worker {
    _Alignas(64) int index;
    pthread_t thread;
    struct ring ring;
    struct pool pool;
    struct conn_ctx ctx;
    struct mbox mbox;     /* its eventfd is read by mbox_op */
    int timer_fd;         /* a timerfd: shutdown deadline, -i, lingering closes */
    bool timer_on;        /* the timerfd ticks */
    bool stopping;        /* shutting down (only this thread reads it) */
    bool done;            /* every connection and job finished */
    bool exit;            /* done, and the ring has returned its own operations */
    uint64_t deadline_ns; /* the -g deadline, once stopping */
    /* the worker's own operations on its ring, and their 8-byte buffers */
    struct ring_op mbox_op, timer_op, cancel_mbox_op, cancel_timer_op;
    uint64_t mbox_value, timer_value;
    unsigned own_ops; /* of those, submitted and not yet completed */
    /* Frames at application threads, not yet answered.  Under one mutex
     * with the flag that says the worker is waiting for them to reach 0:
     * see worker_job_done(). */
    pthread_mutex_t jobs_lock;
    size_t jobs_out;       /* guarded by jobs_lock */
    bool jobs_watch;       /* guarded by jobs_lock: stopping, tell me at 0 */
    atomic_size_t pending; /* connections posted, not yet opened */
    unsigned ring_flags;   /* IORING_SETUP_* for its ring */
    pthread_barrier_t *started;
    void (*on_done)(int index); /* called (on this thread) once it has stopped */
};

/* The whole set, for the acceptor and for server_send(). */
struct worker_set {
    struct worker *workers;
    int n;
};

/*
 * Start n workers (dies on failure: a startup error); proto: the settings
 * every connection context starts from; ring_flags: IORING_SETUP_* for
 * each worker's ring (server.c found which this kernel takes).
 * on_done(index) runs on a worker's own thread after it has stopped, to tell
 * the acceptor.
 */
void worker_start_all(struct worker_set *set, int n, const struct conn_ctx *proto,
                      unsigned ring_flags, void (*on_done)(int index));

/* The ring size per worker: room for a recv and a send per connection is
 * not needed - a full submission queue is submitted and reused. */
#define WORKER_RING_ENTRIES 256

/* On the acceptor: give connection {fd, id} to the worker that id names.
 * Returns 0, or -1 when that worker already has WORKER_QUEUE_MAX waiting
 * (the caller still owns fd). */
int worker_hand_off(struct worker *w, int fd, uint64_t id);

/* On the acceptor: every worker answers what it owes, closes its
 * connections, and stops, by deadline_ns (CLOCK_MONOTONIC) at the latest. */
void worker_shutdown_all(struct worker_set *set, uint64_t deadline_ns);

/* Join every worker thread (after all are done) and copy each one's
 * counters into stats[0..n). */
void worker_join_all(struct worker_set *set, struct conn_stats *stats);
/* Free the workers: after the application threads have stopped, because
 * an app thread may still be returning from worker_job_done(). */
void worker_free_all(struct worker_set *set);

/*
 * Send len bytes (whole reply frames) to connection id, from any thread.
 * Posted to the connection's worker, which queues them - or drops them, and
 * counts them, if the connection has closed meanwhile: an id is never
 * reused, so the bytes can never reach another client.  Returns 0, or -1
 * out of memory.
 */
int server_send(uint64_t id, const void *bytes, size_t len);

/* A frame of one of worker index's connections went to an application
 * thread (on the worker), and an application thread has answered one (on
 * that thread). */
void worker_job_started(int index);
void worker_job_done(int index);

#endif
