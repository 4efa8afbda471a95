/*
 * tests/unit/mbox_test.c - the mailbox (mbox.c) of step05 and later,
 * compiled against a step's own mbox.c, loop.c and log.c:
 *
 *     cc -pthread -I step05-signals-eventfd tests/unit/mbox_test.c \
 *        step05-signals-eventfd/{mbox,loop,log}.c -o mbox_test
 *
 *   mbox_test order      4 producer threads post 50,000 closures each while
 *                        the owner runs its event loop: each runs exactly once,
 *                        in its producer's order
 *   mbox_test ring-once  1,000 posts while the owner is busy ring the eventfd
 *                        once (the counter reads 1); after a drain, the next
 *                        post rings again
 */
#include "loop.h"
#include "mbox.h"
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PRODUCERS    4
#define PER_PRODUCER 50000

struct item {
    struct closure post; /* the node the mailbox links: posting allocates nothing */
    int producer;
    int seq;
};

static struct loop loop;
static struct mbox mbox;
static struct item items[PRODUCERS][PER_PRODUCER];
static int next_seq[PRODUCERS]; /* the owner's: what each producer sends next */
static long ran;

static void on_item(struct closure *c)
{
    const struct item *it = container_of(c, struct item, post);
    CHECK(it->seq == next_seq[it->producer], "producer %d: ran %d, expected %d",
          it->producer, it->seq, next_seq[it->producer]);
    next_seq[it->producer]++;
    if (++ran == (long)PRODUCERS * PER_PRODUCER)
        loop_stop(&loop);
}

static void *producer(void *arg)
{
    struct item *mine = arg;
    for (int i = 0; i < PER_PRODUCER; i++)
        mbox_post(&mbox, &mine[i].post);
    return NULL;
}

/* The alarm: the loop has slept with closures queued.  Only write() and
 * _exit() are safe in a signal handler. */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "mbox_test: a lost wakeup: after 60 s the owner still "
                              "sleeps in epoll_wait() with closures in its mailbox\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing else to do */
    }
    _exit(1);
}

static void test_order(void)
{
    pthread_t t[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        for (int i = 0; i < PER_PRODUCER; i++)
            items[p][i] = (struct item){.post.fn = on_item, .producer = p, .seq = i};
        pthread_create(&t[p], NULL, producer, items[p]);
    }
    signal(SIGALRM, on_alarm);
    alarm(60); /* a lost wakeup would leave the loop waiting forever */
    CHECK(loop_run(&loop) == 0, "loop_run failed");
    for (int p = 0; p < PRODUCERS; p++) {
        pthread_join(t[p], NULL);
        CHECK(next_seq[p] == PER_PRODUCER, "producer %d: %d of %d ran", p, next_seq[p],
              PER_PRODUCER);
    }
    CHECK(mbox_drain(&mbox) == 0, "closures ran twice, or after the last");
}

static int counted;
static struct closure counts[1001]; /* a node is in one mailbox at a time */

static void count(struct closure *c)
{
    (void)c;
    counted++;
}

static void *post_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        mbox_post(&mbox, &counts[i]);
    return NULL;
}

static void test_ring_once(void)
{
    int n;
    for (n = 0; n < 1001; n++)
        counts[n].fn = count;
    pthread_t t;
    pthread_create(&t, NULL, post_many, NULL); /* the owner is "busy": it waits */
    pthread_join(t, NULL);
    uint64_t counter = 0;
    CHECK(read(mbox.efd, &counter, sizeof(counter)) == sizeof(counter), "eventfd read");
    CHECK(counter == 1, "1000 posts to a busy owner rang %llu times, expected once",
          (unsigned long long)counter);
    n = (int)mbox_drain(&mbox);
    CHECK(n == 1000 && counted == 1000, "drained %d of 1000 (%d ran)", n, counted);
    mbox_post(&mbox, &counts[1000]);
    CHECK(read(mbox.efd, &counter, sizeof(counter)) == sizeof(counter) && counter == 1,
          "a post after a drain must ring again");
    mbox_drain(&mbox);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: mbox_test order|ring-once");
    CHECK(loop_init(&loop) == 0 && mbox_init(&mbox, &loop) == 0, "init");
    if (strcmp(argv[1], "order") == 0)
        test_order();
    else if (strcmp(argv[1], "ring-once") == 0)
        test_ring_once();
    else
        return 2;
    mbox_destroy(&mbox);
    loop_destroy(&loop);
    printf("ok %s\n", argv[1]);
    return 0;
}
