/*
 * loop.c - the event loop described in loop.h.
 *
 * One turn of the loop:
 *   1. epoll_wait(): block (-1) if nothing is on the ready list, else just
 *      poll (0), so a connection on the ready list is served again at once
 *      but still after everyone else that has events;
 *   2. call every watch named in the batch;
 *   3. call every watch that was on the ready list when the turn began;
 *   4. destroy the watches released during the turn.
 */
#include "loop.h"
#include "log.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 256

static void link_init(struct link *head)
{
    head->prev = head->next = head;
}

static bool link_empty(const struct link *head)
{
    return head->next == head;
}

static void link_append(struct link *head, struct link *k)
{
    k->prev = head->prev;
    k->next = head;
    head->prev->next = k;
    head->prev = k;
}

static void link_remove(struct link *k)
{
    k->prev->next = k->next;
    k->next->prev = k->prev;
    k->prev = k->next = k;
}

int loop_init(struct loop *l)
{
    *l = (struct loop){.owner = pthread_self()};
    link_init(&l->ready);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -1 : 0;
}

void loop_destroy(struct loop *l)
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    close(l->epfd);
}

int loop_add(struct loop *l, struct watch *w, uint32_t events)
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

int loop_modify(struct loop *l, struct watch *w, uint32_t events)
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void loop_make_ready(struct loop *l, struct watch *w)
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    if (w->ready || w->released)
        return;
    w->ready = true;
    link_append(&l->ready, &w->ready_link);
}

void loop_release(struct loop *l, struct watch *w, void (*destroy)(struct watch *w))
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    if (w->released)
        return;
    /* Removing the fd from epoll before close() is not strictly needed (close
     * removes it), but it keeps dup'ed fds from producing ghost events. */
    if (epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL) < 0 && errno != ENOENT &&
        errno != EBADF)
        log_msg("epoll_ctl(DEL, fd=%d): %s", w->fd, strerror(errno));
    /* Off the ready list now, in O(1): a close storm of thousands of
     * connections must not scan a list once per connection. */
    if (w->ready) {
        link_remove(&w->ready_link);
        w->ready = false;
    }
    w->released = true;
    w->destroy = destroy;
    w->next_released = l->released;
    l->released = w;
}

void loop_stop(struct loop *l)
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    l->stop = true;
}

static void run_ready_list(struct loop *l)
{
    /* Take the list as it is now: a watch that puts itself back goes on the
     * emptied list and waits for the next turn, behind everyone's events.
     * Splice it onto a local sentinel; a watch released meanwhile unlinks
     * itself from whichever list it is on. */
    struct link batch;
    link_init(&batch);
    if (!link_empty(&l->ready)) {
        batch.next = l->ready.next;
        batch.prev = l->ready.prev;
        batch.next->prev = batch.prev->next = &batch;
        link_init(&l->ready);
    }
    while (!link_empty(&batch)) {
        struct watch *w = container_of(batch.next, struct watch, ready_link);
        link_remove(&w->ready_link);
        w->ready = false;
        w->on_event(w, 0);
    }
}

static void destroy_released(struct loop *l)
{
    while (l->released) {
        struct watch *w = l->released;
        l->released = w->next_released;
        if (w->destroy != NULL) /* NULL: its owner frees it (a listener, a mailbox) */
            w->destroy(w);
    }
}

int loop_run(struct loop *l)
{
    ENSURE(loop_is_owner(l), "only the owner thread uses its loop");
    struct epoll_event events[MAX_EVENTS];
    while (!l->stop) {
        int timeout = link_empty(&l->ready) ? -1 : 0;
        int n = epoll_wait(l->epfd, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue; /* a signal, or SIGSTOP/SIGCONT: not an error */
            log_msg("epoll_wait: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = events[i].data.ptr;
            if (!w->released) /* closed earlier in this batch: skip */
                w->on_event(w, events[i].events);
        }
        run_ready_list(l);
        destroy_released(l);
    }
    return 0;
}
