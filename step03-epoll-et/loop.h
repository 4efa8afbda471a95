/*
 * loop.h - a tiny epoll event loop (事件循环), the Reactor (反应堆) of this
 * step, in the spirit of Redis' ae.c and muduo's EventLoop/Channel.
 *
 * Anything with an fd embeds a struct watch and says what to call when the
 * fd is ready.  Besides epoll's events the loop keeps a ready list (就绪
 * 队列): watches to call again before the next epoll_wait() blocks.  Under
 * edge-triggered epoll that is the only way back for a connection that
 * stopped reading while bytes were still waiting in its socket (its read
 * budget ran out, or backpressure lifted): no new edge will come for them.
 *
 * A watch that dies during a batch is released, not freed: later events in
 * the same batch may still name it, so it is destroyed after the batch.
 */
#ifndef LAB_LOOP_H
#define LAB_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct watch;
/* events: epoll bits (EPOLLIN, EPOLLOUT, ...), or 0 for a ready-list visit. */
typedef void (*watch_fn)(struct watch *w, uint32_t events);

struct watch {
    int fd;
    watch_fn on_event;
    bool ready;    /* on the ready list */
    bool released; /* dead: no more calls; destroy() after the batch */
    struct watch *next_ready;
    struct watch *next_released;
    void (*destroy)(struct watch *w);
};

struct loop {
    int epfd;
    struct watch *ready_head, *ready_tail;
    struct watch *released;
};

int loop_init(struct loop *l);
void loop_destroy(struct loop *l);
int loop_add(struct loop *l, struct watch *w, uint32_t events);
int loop_modify(struct loop *l, struct watch *w, uint32_t events);
/* Call w->on_event(w, 0) before the next epoll_wait() blocks. */
void loop_make_ready(struct loop *l, struct watch *w);
/* w is dead: stop watching its fd now, call destroy(w) after this batch. */
void loop_release(struct loop *l, struct watch *w, void (*destroy)(struct watch *w));
/* Run forever.  Returns only if epoll_wait() fails for good. */
void loop_run(struct loop *l);

#endif
