/*
 * worker.h - the worker threads (工作线程) of the master-worker server (主从
 * Reactor): each owns an event loop, a buffer pool and its connections, and
 * takes new connections from a handoff queue (handoff.h) that the acceptor
 * fills.  After the handoff a connection belongs to one worker for the rest
 * of its life: no locks on the hot path, because nothing on it is shared.
 */
#ifndef LAB_WORKER_H
#define LAB_WORKER_H

#include "accept.h"
#include "conn.h"
#include "handoff.h"
#include "loop.h"
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Connections a queue holds before the acceptor must turn them away. */
#define WORKER_QUEUE_MAX 1024

/* How the acceptor hands connections to workers (-D). */
enum dispatch {
    DISPATCH_RR,        /* one queue and one wake pipe per worker, round-robin */
    DISPATCH_SHARED,    /* one queue for all; one pipe in every worker's epoll */
    DISPATCH_REUSEPORT, /* no acceptor: a listening socket per worker, on one
                         * port (SO_REUSEPORT), and the kernel picks */
};

/*
 * One worker.  _Alignas(64): the workers sit side by side in an array, and
 * each thread writes its own all the time (its loop, its counters); on a
 * shared 64-byte cache line those writes would bounce the line between cores
 * (false sharing, 伪共享) although no data is shared.
 */
struct worker {
    _Alignas(64) int index;
    pthread_t thread;
    enum dispatch mode;
    struct handoff_queue *queue; /* its own (rr), or the shared one */
    struct handoff *spare;       /* rr: the empty array swapped in under the lock */
    struct loop loop;
    struct pool pool;
    struct conn_ctx ctx;
    struct watch wake;             /* the wake pipe's read end, in this worker's loop */
    int listen_fd;                 /* reuseport: its own listening socket */
    struct acceptor acceptor;      /* reuseport: listen_fd in this worker's loop */
    atomic_uint_fast64_t *next_id; /* reuseport: the set's, for every worker */
    pthread_barrier_t *started;
};

/* The whole set, for the acceptor. */
struct worker_set {
    struct worker *workers;
    int n;
    atomic_uint_fast64_t next_id; /* reuseport: the next connection's id */
};

/*
 * Start n workers (dies on failure: a startup error); proto: the settings
 * every connection context starts from.  queues: n per-worker queues for
 * DISPATCH_RR, or one for DISPATCH_SHARED; for DISPATCH_REUSEPORT none, and
 * listeners[i] is worker i's listening socket instead.  Returns once every
 * worker runs its loop.
 */
void worker_start_all(struct worker_set *set, int n, enum dispatch mode,
                      struct handoff_queue *queues, const int *listeners,
                      const struct conn_ctx *proto);

#endif
