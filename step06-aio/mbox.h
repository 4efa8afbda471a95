/*
 * mbox.h - a mailbox (信箱) of closures (闭包) for an event-loop thread: the
 * only way another thread talks to it.
 *
 * A closure is a function and its argument, { fn, arg }: the C form of a
 * C++ lambda.  A lambda captures its variables by itself; in C the caller
 * packs whatever the call needs into a struct and passes a pointer to it as
 * arg (and fn frees it).  Any thread may post; the owner thread runs them,
 * in the order they were posted, from its event loop:
 *
 *   poster (any thread)                  owner (in epoll_wait)
 *   lock; push {fn, arg};
 *   if (the queue was empty)
 *       write(eventfd, 1)        ------> eventfd readable:
 *   unlock;
 *                                          read(eventfd)   (clears it)
 *                                          lock; swap the queue out; unlock
 *                                          run each closure, outside the lock
 *
 * New in step05, replacing step04's handoff queue and wake pipe.  In step06
 * a worker has no epoll loop: its ring reads the eventfd (a submitted read
 * that completes when someone rings), and then calls mbox_take().
 */
#ifndef LAB_MBOX_H
#define LAB_MBOX_H

#include "loop.h"

#include <pthread.h>
#include <stddef.h>

struct closure {
    void (*fn)(void *arg);
    void *arg;
};

struct mbox {
    pthread_mutex_t lock;
    struct closure *items; /* posted, not yet taken; guarded by lock */
    size_t len, cap;       /* guarded by lock */
    struct closure *spare; /* the owner's: swapped in under the lock */
    size_t spare_cap;
    int efd;            /* the eventfd */
    struct watch watch; /* efd in the owner's loop (mbox_init only) */
    pthread_t owner;    /* the thread that runs the closures */
};

/* Create a mailbox served by loop (call on loop's owner thread): a
 * nonblocking eventfd, watched by the loop.  Returns 0, or -1 with errno. */
int mbox_init(struct mbox *m, struct loop *loop);
/* Create a mailbox served by an io_uring (call on the owner thread): a
 * blocking eventfd, for the ring to read - io_uring answers a read of a
 * nonblocking fd with -EAGAIN instead of waiting.  Returns 0, or -1. */
int mbox_init_blocking(struct mbox *m);

/* Post fn(arg) to the owner; any thread.  Returns 0, or -1 (out of memory:
 * the closure was not posted, arg is still the caller's). */
int mbox_post(struct mbox *m, void (*fn)(void *arg), void *arg);

/* Run every closure posted so far (the owner thread; also called by the
 * loop when the eventfd is readable): clear the eventfd, then mbox_take().
 * Returns how many ran.  (mbox_init mailboxes only: it reads the eventfd.) */
size_t mbox_drain(struct mbox *m);
/* Swap the queue out and run it, without reading the eventfd: for an owner
 * whose ring has just read it (that read is what cleared it). */
size_t mbox_take(struct mbox *m);

/* Close the eventfd and free the mailbox.  Nothing may be posted any more,
 * and nothing may be left in it (the caller drained it). */
void mbox_destroy(struct mbox *m);

#endif
