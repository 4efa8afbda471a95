/*
 * tests/unit/loop_test.c - unit tests for the event loop's ready list and
 * deferred destruction (loop.c) of step03 and later, compiled against a
 * step's own loop.c and log.c:
 *
 *     cc -pthread -I step03-epoll-et tests/unit/loop_test.c \
 *        step03-epoll-et/loop.c step03-epoll-et/log.c -o loop_test
 *     ./loop_test storm
 *
 *   storm             a close storm: 200,000 watches queued on the ready list
 *                     for the next turn are all released in this one.  Each
 *                     is destroyed exactly once and never called.  Taking a
 *                     watch off the ready list must be O(1): a scan of the
 *                     list per destroyed watch is O(n^2), minutes here, and
 *                     the alarm turns that into a failure.
 *   release-in-turn   two watches on the ready list; the first one's callback
 *                     releases the second: the second must not be called.
 */
#include "loop.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct probe {
    struct watch watch;
    int called, destroyed;
};

static struct loop loop;
static struct probe *probes;
static size_t nprobes;

static void probe_called(struct watch *w, uint32_t events)
{
    (void)events;
    container_of(w, struct probe, watch)->called++;
}

static void probe_destroy(struct watch *w)
{
    container_of(w, struct probe, watch)->destroyed++;
}

static void init_probes(size_t n)
{
    nprobes = n;
    probes = calloc(n, sizeof(*probes));
    CHECK(probes != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) /* fd -1: never in epoll, only on the list */
        probes[i].watch = (struct watch){.fd = -1, .on_event = probe_called};
}

/* The trigger: an eventfd that is readable at once, so the first turn has
 * one event whose callback sets the scene. */
static struct watch trigger;

static void start_trigger(watch_fn fn)
{
    trigger = (struct watch){.fd = eventfd(1, EFD_CLOEXEC), .on_event = fn};
    CHECK(trigger.fd >= 0, "eventfd");
    CHECK(loop_add(&loop, &trigger, EPOLLIN) == 0, "loop_add");
}

/*
 * storm: a watch run from the ready list (the closer) queues every probe for
 * the next turn, then closes them all - as when a shutdown, or a flood of
 * resets, closes connections that were waiting for another turn.  The probes
 * are still on the ready list when they are destroyed.
 */
static struct watch closer;

static void close_all(struct watch *w, uint32_t events)
{
    (void)w, (void)events;
    for (size_t i = 0; i < nprobes; i++)
        loop_make_ready(&loop, &probes[i].watch);
    for (size_t i = 0; i < nprobes; i++)
        loop_release(&loop, &probes[i].watch, probe_destroy);
    loop_stop(&loop);
}

static void queue_closer(struct watch *w, uint32_t events)
{
    (void)w, (void)events;
    loop_make_ready(&loop, &closer);
}

static void test_storm(void)
{
    alarm(20); /* O(n) takes milliseconds (seconds under valgrind) */
    init_probes(200000);
    closer = (struct watch){.fd = -1, .on_event = close_all};
    start_trigger(queue_closer);
    CHECK(loop_run(&loop) == 0, "loop_run failed");
    for (size_t i = 0; i < nprobes; i++) {
        CHECK(probes[i].called == 0, "released watch %zu was called", i);
        CHECK(probes[i].destroyed == 1, "watch %zu destroyed %d times", i,
              probes[i].destroyed);
    }
    alarm(0);
}

/* release-in-turn: probe 0 releases probe 1 when it runs from the ready list. */
static void release_next(struct watch *w, uint32_t events)
{
    (void)events;
    container_of(w, struct probe, watch)->called++;
    loop_release(&loop, &probes[1].watch, probe_destroy);
    loop_stop(&loop);
}

static void make_both_ready(struct watch *w, uint32_t events)
{
    (void)w, (void)events;
    loop_make_ready(&loop, &probes[0].watch);
    loop_make_ready(&loop, &probes[1].watch);
}

static void test_release_in_turn(void)
{
    init_probes(2);
    probes[0].watch.on_event = release_next;
    start_trigger(make_both_ready);
    CHECK(loop_run(&loop) == 0, "loop_run failed");
    CHECK(probes[0].called == 1, "probe 0 called %d times", probes[0].called);
    CHECK(probes[1].called == 0, "a watch released earlier in the turn was called");
    CHECK(probes[1].destroyed == 1, "probe 1 destroyed %d times", probes[1].destroyed);
    CHECK(probes[0].destroyed == 0, "probe 0 was destroyed but never released");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: loop_test storm|release-in-turn\n");
        return 2;
    }
    CHECK(loop_init(&loop) == 0, "loop_init");
    if (strcmp(argv[1], "storm") == 0)
        test_storm();
    else if (strcmp(argv[1], "release-in-turn") == 0)
        test_release_in_turn();
    else
        return 2;
    close(trigger.fd);
    loop_destroy(&loop);
    free(probes);
    printf("ok %s\n", argv[1]);
    return 0;
}
