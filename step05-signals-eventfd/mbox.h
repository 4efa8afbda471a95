/*
 * mbox.h - a mailbox (信箱) of closures (闭包) for an event-loop thread: the
 * only way another thread talks to it.
 *
 * A closure is a function and its argument: the C form of a C++ lambda.  A
 * lambda captures its variables by itself; in C the poster packs whatever
 * the call needs into a record, and the record carries its own mailbox
 * node, struct closure (an intrusive list, 侵入式链表).  fn gets the node
 * back, and container_of() the record.  So posting only links the node: it
 * allocates nothing and cannot fail - the memory a message needs was taken
 * when the record was made, by a thread that could still say no.  Any
 * thread may post; the owner thread runs them, in the order they were
 * posted, from its event loop:
 *
 *   poster (any thread)                  owner (in epoll_wait)
 *   lock; link the node at the tail;
 *   if (the queue was empty)
 *       write(eventfd, 1)        ------> eventfd readable:
 *   unlock;
 *                                          read(eventfd)   (clears it)
 *                                          lock; take the list; unlock
 *                                          run each closure, outside the lock
 *
 * New in step05, replacing step04's handoff queue and wake pipe.
 */
#ifndef LAB_MBOX_H
#define LAB_MBOX_H

#include "loop.h"

#include <pthread.h>
#include <stddef.h>

/* Embedded in whatever record is posted.  fn(c) runs on the owner thread,
 * and may free the record (the node goes with it). */
struct closure {
    struct closure *next; /* guarded by the mailbox's lock once posted */
    void (*fn)(struct closure *c);
};

struct mbox {
    pthread_mutex_t lock;
    struct closure *head, *tail; /* posted, not yet taken; guarded by lock */
    int efd;                     /* the eventfd: EFD_NONBLOCK | EFD_CLOEXEC */
    struct watch watch;          /* efd in the owner's loop */
    struct loop *loop;           /* the owner's loop */
};

/* Create a mailbox served by loop (call on loop's owner thread).  Returns 0,
 * or -1 with errno. */
int mbox_init(struct mbox *m, struct loop *loop);

/* Post c (its fn set) to the owner; any thread.  Cannot fail.  c belongs to
 * the mailbox until fn(c) runs. */
void mbox_post(struct mbox *m, struct closure *c);

/* Run every closure posted so far (the owner thread; also called by the
 * loop when the eventfd is readable).  Returns how many ran. */
size_t mbox_drain(struct mbox *m);

/* Close the eventfd and free the mailbox.  Nothing may be posted any more,
 * and nothing may be left in it (the caller drained it). */
void mbox_destroy(struct mbox *m);

#endif
