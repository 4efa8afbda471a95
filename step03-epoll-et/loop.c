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
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 256

int loop_init(struct loop *l)
{
    *l = (struct loop){0};
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -1 : 0;
}

void loop_destroy(struct loop *l)
{
    close(l->epfd);
}

int loop_add(struct loop *l, struct watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

int loop_modify(struct loop *l, struct watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void loop_make_ready(struct loop *l, struct watch *w)
{
    if (w->ready || w->released)
        return;
    w->ready = true;
    w->next_ready = NULL;
    if (l->ready_tail)
        l->ready_tail->next_ready = w;
    else
        l->ready_head = w;
    l->ready_tail = w;
}

void loop_release(struct loop *l, struct watch *w, void (*destroy)(struct watch *w))
{
    if (w->released)
        return;
    /* Removing the fd from epoll before close() is not strictly needed (close
     * removes it), but it keeps dup'ed fds from producing ghost events. */
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->released = true;
    w->destroy = destroy;
    w->next_released = l->released;
    l->released = w;
}

static void run_ready_list(struct loop *l)
{
    /* Take the list as it is now: a watch that puts itself back goes on a
     * fresh list and waits for the next turn, behind everyone's events. */
    struct watch *w = l->ready_head;
    l->ready_head = l->ready_tail = NULL;
    while (w) {
        struct watch *next = w->next_ready;
        w->ready = false;
        if (!w->released)
            w->on_event(w, 0);
        w = next;
    }
}

static void destroy_released(struct loop *l)
{
    while (l->released) {
        struct watch *w = l->released;
        l->released = w->next_released;
        /* It may still sit on the ready list: drop it from there first. */
        for (struct watch **p = &l->ready_head; w->ready && *p; p = &(*p)->next_ready) {
            if (*p == w) {
                *p = w->next_ready;
                break;
            }
        }
        if (w->ready && l->ready_tail == w) {
            l->ready_tail = NULL;
            for (struct watch *r = l->ready_head; r; r = r->next_ready)
                l->ready_tail = r;
        }
        w->destroy(w);
    }
}

void loop_run(struct loop *l)
{
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int timeout = l->ready_head ? 0 : -1;
        int n = epoll_wait(l->epfd, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue; /* a signal, or SIGSTOP/SIGCONT: not an error */
            log_msg("epoll_wait: %s", strerror(errno));
            return;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = events[i].data.ptr;
            if (!w->released) /* closed earlier in this batch: skip */
                w->on_event(w, events[i].events);
        }
        run_ready_list(l);
        destroy_released(l);
    }
}
