/*
 * loop.h - a tiny epoll event loop (事件循环), the Reactor (反应堆) of this
 * step, in the spirit of Redis' ae.c and muduo's EventLoop/Channel.
 *
 * Anything with an fd embeds a struct watch and says what to call when the
 * fd is ready; the callback gets the watch back and finds its own struct with
 * container_of().  Besides epoll's events the loop keeps a ready list (就绪
 * 队列): watches to call again before the next epoll_wait() blocks.  Under
 * edge-triggered epoll that is the only way back for a connection that
 * stopped reading while bytes were still waiting in its socket (its read
 * budget ran out, or backpressure lifted): no new edge will come for them.
 * (This ready list is the loop's own, in user space.  The kernel keeps a
 * "ready list" of its own inside every epoll instance - the sockets that
 * epoll_wait() will report - and the two are unrelated.)
 *
 * A watch that dies during a batch is released, not freed: later events in
 * the same batch may still name it, so it is destroyed after the batch.
 *
 * New in step04: one loop per thread.  A loop belongs to the thread that
 * created it (its owner); every entry point checks it runs there (ENSURE in
 * log.h: on in every build, unlike assert), and so do
 * the connections and the pool that live on that loop.  Nothing here is
 * locked: nothing here is shared.
 */
#ifndef LAB_LOOP_H
#define LAB_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The struct that embeds `member` at address ptr: how a callback that is
 * handed a struct watch finds its connection (or its server). */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* A link in a circular doubly linked list with a sentinel (as the Linux
 * kernel's list_head): unlinking needs no list head and no search, so a
 * watch leaves the ready list in O(1) whichever list it is on. */
struct link {
    struct link *prev, *next;
};

struct watch;
/* events: epoll bits (EPOLLIN, EPOLLOUT, ...), or 0 for a ready-list visit. */
typedef void (*watch_fn)(struct watch *w, uint32_t events);

struct watch {
    int fd;
    watch_fn on_event;
    bool ready;             /* on a ready list (ready_link is linked) */
    bool released;          /* dead: no more calls; destroy() after the batch */
    struct link ready_link; /* in the loop's ready list */
    struct watch *next_released;
    void (*destroy)(struct watch *w);
};

struct loop {
    int epfd;
    pthread_t owner;   /* the thread that created it: the only one that may use it */
    bool stop;         /* set by loop_stop(): loop_run() returns after the turn */
    struct link ready; /* sentinel of the ready list */
    struct watch *released;
};

/* Create the loop, owned by the calling thread. */
int loop_init(struct loop *l);
void loop_destroy(struct loop *l);
int loop_add(struct loop *l, struct watch *w, uint32_t events);
int loop_modify(struct loop *l, struct watch *w, uint32_t events);
/* Call w->on_event(w, 0) before the next epoll_wait() blocks. */
void loop_make_ready(struct loop *l, struct watch *w);
/* w is dead: stop watching its fd now, call destroy(w) after this batch
 * (destroy may be NULL). */
void loop_release(struct loop *l, struct watch *w, void (*destroy)(struct watch *w));
/* True on the loop's owner thread: what the ownership checks test (a rule
 * that holds in every build says which thread may touch what). */
static inline bool loop_is_owner(const struct loop *l)
{
    return pthread_equal(l->owner, pthread_self()) != 0;
}

/* Make loop_run() return once the current turn is over. */
void loop_stop(struct loop *l);
/* Run until loop_stop().  Returns 0 then, or -1 if epoll_wait() fails for good. */
int loop_run(struct loop *l);

#endif
