/*
 * worker.h - the worker threads (工作线程) of the master-worker server (主从
 * Reactor): each owns an event loop, a buffer pool and its connections, and
 * a mailbox (mbox.c) through which every other thread talks to it.
 *
 *   any thread                               worker thread N
 *   mbox_post(worker N, closure)   ---->     eventfd readable: run it
 *     acceptor:  open {fd, id}                 conn_open()
 *     app thread: a reply for id               conn_deliver(): id -> conn
 *     acceptor:  shut down by a deadline       conn_shutdown_all()
 *
 * A connection's id says which worker owns it: worker = (id - 1) % workers.
 * So any thread can send to a connection knowing only its id.
 *
 * With -D reuseport there is no acceptor to post "open": each worker has a
 * listening socket of its own on the port (SO_REUSEPORT) and accepts from
 * it in its own loop (accept.c), choosing ids the same way.
 *
 * step06: a worker runs an io_uring completion loop instead of an epoll
 * loop.  Its mailbox's eventfd and its timerfd are read by ring operations
 * too (and, with -D reuseport, its listening socket polled), so one
 * io_uring_enter() waits for everything.
 */
#ifndef LAB_WORKER_H
#define LAB_WORKER_H

#include "accept.h"
#include "app.h"
#include "conn.h"
#include "mbox.h"
#include "pbuf.h"
#include "pool.h"
#include "ring.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* New connections posted to one worker and not yet opened, before the
 * acceptor turns more away (step04's queue bound, kept without the queue). */
#define WORKER_PENDING_MAX 1024

/* -R: where a recv's bytes land. */
enum worker_recv {
    WORKER_RECV_DEFAULT,  /* the first of provided, legacy, pinned the kernel has */
    WORKER_RECV_PINNED,   /* a buffer of the connection's, held by each recv */
    WORKER_RECV_PROVIDED, /* the worker's buffer ring, and multishot recv */
    WORKER_RECV_LEGACY,   /* the same buffers, handed over by operations (5.18) */
};

/* What io_uring offers here: worker_check_uring() finds it, before any
 * worker starts. */
struct worker_uring {
    unsigned ring_flags; /* IORING_SETUP_* for each worker's ring */
    bool poll_first;     /* IORING_RECVSEND_POLL_FIRST (Linux 5.19) */
    enum worker_recv recv; /* -R as it runs here: pinned, provided or legacy */
};

/* -R provided, legacy: each worker's buffers: 64 buffers of a page to start
 * with, 64 more each time it runs dry, up to 1,024 (4 MiB). */
#define WORKER_PBUF_MAX  1024
#define WORKER_PBUF_SIZE 4096
#define WORKER_PBUF_STEP 64

/* The ring per worker: a full SQ is submitted and reused (or its overflow
 * waits in the backlog, ring.c), so it need not hold every operation; the
 * CQ holds a few completions per connection before the kernel must keep the
 * rest aside (IORING_FEAT_NODROP) until we make room. */
#define WORKER_SQ_ENTRIES 256
#define WORKER_CQ_ENTRIES 4096

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
    bool leave_loop;      /* done, and the ring has returned its own operations */
    uint64_t deadline_ns; /* the -g deadline, once stopping */
    /* the worker's own operations on its ring, and their 8-byte buffers */
    struct ring_op mbox_op, timer_op, cancel_mbox_op, cancel_timer_op;
    struct ring_op listen_op, cancel_listen_op; /* reuseport: its socket's poll */
    bool listen_retry; /* reuseport: accepting failed; poll again at the next tick */
    uint64_t mbox_value, timer_value;
    unsigned own_ops;          /* of those, submitted and not yet completed */
    struct worker_uring uring; /* its ring's flags and features */
    struct pbuf pbuf;          /* -R provided or legacy: its buffers */
    atomic_size_t pending;     /* connections posted, not yet opened */
    struct acceptor acceptor;  /* reuseport: its own listening socket (fd -1: none) */
    uint64_t next_seq;         /* reuseport: ids it has given (as server.c's) */
    struct closure shutdown_post; /* the acceptor's order to stop: posted once */
    struct closure done_post;     /* ... and our answer, to the acceptor */
    pthread_barrier_t *started;
    void (*on_done)(int index); /* called (on this thread) once it has stopped */
};

/* The whole set, for the acceptor. */
struct worker_set {
    struct worker *workers;
    int n;
};

/* Can this machine run the workers?  A ring with the cheapest flags that
 * work, NODROP, and every operation the workers use: exits 1 saying what
 * is missing if not (worker.c). */
struct worker_uring worker_check_uring(enum worker_recv recv);

/*
 * Start n workers (dies on failure: a startup error); proto: the settings
 * every connection context starts from; uring: the ring flags and features.
 * on_done(index) runs on a worker's own thread after it has stopped, to tell
 * the acceptor.  listeners: NULL, or (-D reuseport) worker i's own listening
 * socket in listeners[i].
 */
void worker_start_all(struct worker_set *set, int n, const struct conn_ctx *proto,
                      const struct worker_uring *uring, const int *listeners,
                      void (*on_done)(int index));

/* ---- worker_mail.c: what the other threads post to a worker ---------- */

/* On the acceptor: give connection {fd, id} to the worker that id names.
 * Returns 0, or -1 when that worker already has WORKER_PENDING_MAX waiting
 * (the caller still owns fd). */
int worker_hand_off(struct worker *w, int fd, uint64_t id);

/* On the acceptor: every worker answers what it owes, closes its
 * connections, and stops, by deadline_ns (CLOCK_MONOTONIC) at the latest. */
void worker_shutdown_all(struct worker_set *set, uint64_t deadline_ns);

/* Join every worker thread (after all are done) and copy each one's
 * counters into stats[0..n). */
void worker_join_all(struct worker_set *set, struct conn_stats *stats);
/* Free the workers (after the application threads have stopped: they post
 * to the workers' mailboxes). */
void worker_free_all(struct worker_set *set);

/* The worker that owns connection id (from any thread: an id names its
 * worker), worker number index, and how many there are. */
struct worker *worker_of(uint64_t id);
struct worker *worker_at(int index);
int worker_count(void);

/* ---- between worker.c and worker_mail.c ------------------------------ */

/* Make worker_of() and worker_at() answer for set: worker_start_all(), on
 * the main thread, before any worker starts.  The other two run on the
 * worker's own thread. */
void worker_register(struct worker_set *set);
/* Tick the timerfd (every 100 ms, WORKER_TICK_NS), or stop it. */
void worker_timer(struct worker *w, bool on);
/* Stopping, and nothing left: leave the loop (once the ring has returned
 * the worker's own operations). */
void worker_check_done(struct worker *w);
/* At the shutdown, before anything else (reuseport): accept what waits in
 * the worker's own backlog, then close its listening socket. */
void worker_stop_accepting(struct worker *w);

#endif
