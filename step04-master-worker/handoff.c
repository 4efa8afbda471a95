/*
 * handoff.c - the handoff queue and its wake pipe (see handoff.h).
 *
 * What this file teaches: how one thread gives work to another that sleeps
 * in epoll_wait(), and the order of two steps that decides whether a wakeup
 * can be lost (丢失唤醒).  Two ways to use it (-D):
 *
 *   rr      one queue and one pipe per worker (edge-triggered).  The wake
 *           handler drains the pipe, swaps the whole queue out under the lock
 *           (muduo's swap-under-lock), and opens the connections outside it.
 *   shared  one queue for all workers, one pipe in every worker's epoll with
 *           EPOLLEXCLUSIVE (level-triggered).  Every byte is one connection:
 *           a worker that reads a byte pops one.  Whichever worker is idle
 *           takes the next connection; EPOLLEXCLUSIVE wakes one sleeping
 *           worker per byte instead of all of them (the thundering herd,
 *           惊群).
 *
 * New in step04.
 */
#include "handoff.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * shared: a connection is popped by whoever reads its byte, so every queued
 * connection's byte must be in the pipe; a byte the pipe refuses (EAGAIN) is
 * a connection nobody will ever pop.  How many one-byte writes a pipe takes
 * is less than its size: it is a ring of page-sized buffers, small writes
 * are appended to the last buffer only while it has room, and a buffer the
 * reader has partly consumed keeps its slot until it is empty.  At worst the
 * buffer being read holds one byte and every other is full: a 64 KiB pipe
 * (16 pages of 4 KiB) always takes 15 * 4096 + 1 = 61,441 bytes, not 65,536.
 * So a shared queue is never longer than that.
 */
static size_t pipe_bytes_always_taken(int fd)
{
    long page = sysconf(_SC_PAGESIZE);
    int size = fcntl(fd, F_GETPIPE_SZ);
    if (page <= 0 || size < page)
        return 1;
    return (size_t)size - (size_t)page + 1;
}

int handoff_queue_init(struct handoff_queue *q, size_t cap, bool shared)
{
    *q = (struct handoff_queue){.cap = cap, .wake_read = -1, .wake_write = -1};
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    q->wake_read = fds[0];
    q->wake_write = fds[1];
    if (shared && q->cap > pipe_bytes_always_taken(q->wake_write))
        q->cap = pipe_bytes_always_taken(q->wake_write);
    q->items = calloc(q->cap, sizeof(*q->items));
    if (q->items == NULL)
        return -1;
    return pthread_mutex_init(&q->lock, NULL) == 0 ? 0 : -1;
}

int handoff_push(struct handoff_queue *q, int fd, uint64_t id)
{
    pthread_mutex_lock(&q->lock);
    bool full = q->len == q->cap;
    if (!full) {
        q->items[(q->head + q->len) % q->cap] = (struct handoff){fd, id};
        q->len++;
    }
    pthread_mutex_unlock(&q->lock);
    if (full)
        return -1;
    /* Wake the consumer - after the unlock, so it does not wake only to
     * block on the mutex we still hold. */
    char token = 1;
    ssize_t n;
    do {
        n = write(q->wake_write, &token, 1);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full of wakeups nobody has read yet.  For an rr
     * queue that is fine: its worker takes the whole queue on the next one.
     * A shared queue is kept short enough that it cannot happen (above). */
    if (n < 0 && errno != EAGAIN)
        log_msg("conn=%" PRIu64 " wake pipe: %s", id, strerror(errno));
    return 0;
}

/* Read the pipe until EAGAIN: it is edge-triggered, so bytes left behind
 * would bring no new edge. */
static void handoff_drain_pipe(struct handoff_queue *q)
{
    char buf[256];
    ssize_t n;
    do {
        n = read(q->wake_read, buf, sizeof(buf));
    } while (n > 0 || (n < 0 && errno == EINTR));
    if (n < 0 && errno != EAGAIN)
        log_msg("wake pipe: %s", strerror(errno));
}

/*
 * The order matters.  Drain first: a handoff that lands after the swap wrote
 * its byte after our drain, so a new edge brings us back for it.  (Swap
 * first, and a handoff between swap and drain would leave its connection in
 * the queue with its byte eaten: stranded until the next connection
 * arrives.  tests/slowpipe.c holds that window open for a test.)
 */
void handoff_take_all(struct handoff_queue *q, struct handoff **spare,
                      void (*take)(void *arg, int fd, uint64_t id), void *arg)
{
    handoff_drain_pipe(q);

    pthread_mutex_lock(&q->lock);
    struct handoff *items = q->items;
    size_t head = q->head, len = q->len;
    q->items = *spare; /* O(1) under the lock: no copying, no conn_open() */
    q->head = q->len = 0;
    pthread_mutex_unlock(&q->lock);

    *spare = items;
    for (size_t i = 0; i < len; i++) {
        const struct handoff *h = &items[(head + i) % q->cap];
        take(arg, h->fd, h->id);
    }
}

/*
 * One byte, one connection.  The pipe is level-triggered: while bytes
 * remain, epoll_wait() reports it again, to this worker or another.  A read
 * that finds nothing means another worker was faster: a wasted wake-up,
 * which is what EPOLLEXCLUSIVE keeps rare.
 */
bool handoff_take_one(struct handoff_queue *q, struct handoff *h)
{
    char token;
    ssize_t n;
    do {
        n = read(q->wake_read, &token, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        return false; /* EAGAIN: another worker took this one */

    pthread_mutex_lock(&q->lock);
    /* Every byte was written after its connection was queued, and only one
     * reader gets each byte: there is a connection for us. */
    ENSURE(q->len > 0, "a wake byte always has its connection in the queue");
    *h = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    pthread_mutex_unlock(&q->lock);
    return true;
}
