/*
 * handoff.h - how the acceptor gives a worker a connection: a queue of
 * {fd, id} behind a mutex, and a wake pipe (唤醒管道) in the worker's epoll.
 *
 *   acceptor thread                         worker thread
 *   accept4() -> fd, id                     epoll_wait() on its own loop
 *   handoff_push():                         wake pipe readable:
 *     lock; push {fd, id}; unlock   ---->     handoff_take_all(): drain the
 *     write 1 byte to the pipe                pipe, then lock; swap the
 *                                             queue out; unlock; open each
 *
 * A condition variable cannot wake a thread that sleeps in epoll_wait():
 * epoll waits on file descriptors.  The pipe turns "there is work in your
 * queue" into an fd event.
 *
 * The queue is the only thing the two threads touch, and it has a mutex.
 * After the handoff a connection belongs to one worker for the rest of its
 * life: no locks on the hot path, because nothing on it is shared.
 */
#ifndef LAB_HANDOFF_H
#define LAB_HANDOFF_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An accepted connection on its way to a worker. */
struct handoff {
    int fd;
    uint64_t id;
};

/*
 * A queue of handoffs and the pipe that wakes its consumer(s).  items is
 * circular: the entries are items[(head + i) % cap] for i < len.  Everything
 * but the pipe's fds is guarded by lock.  _Alignas(64): the queues sit side
 * by side in an array, and the acceptor and each worker write their own all
 * the time; sharing a 64-byte cache line would bounce it between cores
 * (false sharing, 伪共享) although no data is shared.
 */
struct handoff_queue {
    _Alignas(64) pthread_mutex_t lock;
    struct handoff *items;
    size_t head, len, cap;
    int wake_read, wake_write; /* the wake pipe, both ends nonblocking */
};

/* A queue for at most cap handoffs, with its wake pipe.  shared: consumed a
 * connection per byte by several workers (-D shared), which bounds cap by
 * what the pipe can always hold (handoff.c).  -1 with errno on failure. */
int handoff_queue_init(struct handoff_queue *q, size_t cap, bool shared);

/* On the acceptor: queue {fd, id} and wake the consumer.  Returns 0, or -1
 * when the queue is full (the caller still owns fd). */
int handoff_push(struct handoff_queue *q, int fd, uint64_t id);

/* On the worker (-D rr), its wake pipe readable: empty the pipe, swap the
 * queue with *spare (an array of q->cap entries, kept by the worker), and
 * call take(arg, fd, id) for each connection, outside the lock. */
void handoff_take_all(struct handoff_queue *q, struct handoff **spare,
                      void (*take)(void *arg, int fd, uint64_t id), void *arg);

/* On a worker (-D shared), the pipe readable: read one byte and, if this
 * worker got it, pop one connection into *h.  Returns false when another
 * worker was faster. */
bool handoff_take_one(struct handoff_queue *q, struct handoff *h);

#endif
