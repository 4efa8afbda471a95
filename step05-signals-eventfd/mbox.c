/*
 * mbox.c - the mailbox described in mbox.h.
 *
 * What this file teaches: waking a thread that sleeps in epoll_wait() with
 * an eventfd, and the two rules that make it lose no wakeup.
 *
 * An eventfd is one fd holding a 64-bit counter.  write() adds its 8-byte
 * value to the counter; read() returns the counter and resets it to 0 (read
 * and write must move exactly 8 bytes).  So one read clears any number of
 * posts: ten writes before the owner wakes cost it one read.  A pipe needs
 * two fds and a read per byte, and it fills up.  (EFD_SEMAPHORE would make
 * each read take 1 from the counter instead: one read per post.)
 *
 * Rule 1, the poster: write the eventfd only when it finds the queue empty.
 * If the queue already held closures, the poster of the first of them rang,
 * and the owner will take the whole queue, this closure included: ringing
 * again would only cost a system call per post under load.  And ring before
 * unlocking.  Ringing after the unlock looks cheaper (the owner, woken, does
 * not find the mutex still held), but between the unlock and the ring the
 * owner may take the closure, run it, finish, and close the eventfd - at
 * shutdown that is exactly what happens - and the late ring then writes to a
 * closed fd, or to whatever the kernel has since given that fd number.
 * ThreadSanitizer caught this lab doing it.  Under the lock, every ring for
 * what the owner takes is written before the owner can take it.
 *
 * Rule 2, the owner: read (clear) the eventfd *before* it takes the queue.
 * A post that lands after the take finds the queue empty and rings: the
 * owner wakes for it.  The other order loses a wakeup (丢失唤醒): take, then
 * a post finds the queue empty and rings, then the owner's read clears that
 * ring - and the closure waits in the queue, maybe forever.
 */
#include "mbox.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void mbox_on_event(struct watch *w, uint32_t events)
{
    (void)events;
    mbox_drain(container_of(w, struct mbox, watch));
}

int mbox_init(struct mbox *m, struct loop *loop)
{
    *m = (struct mbox){.loop = loop, .efd = -1};
    m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m->efd < 0 || pthread_mutex_init(&m->lock, NULL) != 0)
        return -1;
    /* Edge-triggered: each ring is one edge, and one read clears them all. */
    m->watch = (struct watch){.fd = m->efd, .on_event = mbox_on_event};
    return loop_add(loop, &m->watch, EPOLLIN | EPOLLET);
}

/* Ring the doorbell: add 1 to the counter.  8 bytes, or nothing. */
static void mbox_ring(struct mbox *m)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(m->efd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN would mean the counter is at its maximum (2^64 - 2): the owner
     * has a wakeup pending anyway. */
    if (n != (ssize_t)sizeof(one) && !(n < 0 && errno == EAGAIN))
        log_msg("mbox: eventfd write: %s", n < 0 ? strerror(errno) : "short write");
}

void mbox_post(struct mbox *m, struct closure *c)
{
    c->next = NULL;
    pthread_mutex_lock(&m->lock);
    bool was_empty = m->head == NULL;
    if (was_empty)
        m->head = c;
    else
        m->tail->next = c;
    m->tail = c;
    if (was_empty) /* rule 1: ring only for the first closure of a batch */
        mbox_ring(m);
    pthread_mutex_unlock(&m->lock);
}

size_t mbox_drain(struct mbox *m)
{
    ENSURE(loop_is_owner(m->loop), "only the owner thread runs its closures");
    /* Rule 2: clear the doorbell first, then take the queue. */
    uint64_t count;
    ssize_t n;
    do {
        n = read(m->efd, &count, sizeof(count));
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN)
        log_msg("mbox: eventfd read: %s", strerror(errno));

    pthread_mutex_lock(&m->lock);
    struct closure *c = m->head; /* O(1) under the lock: they run outside it */
    m->head = m->tail = NULL;
    pthread_mutex_unlock(&m->lock);

    size_t ran = 0;
    while (c != NULL) {
        struct closure *next = c->next; /* fn may free c */
        c->fn(c);                       /* and may post again, to us or anyone */
        c = next;
        ran++;
    }
    return ran;
}

void mbox_destroy(struct mbox *m)
{
    assert(m->head == NULL); /* everything posted was run */
    close(m->efd);           /* closing it also takes it out of the epoll set */
    pthread_mutex_destroy(&m->lock);
}
