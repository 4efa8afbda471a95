/*
 * tests/unit/owner_test.c - the owner-thread checks of step04 and later: a
 * loop (loop.c) and a pool (pool.c) belong to the thread that created them,
 * and any other thread that uses one must stop the program at once, not
 * corrupt it quietly.  The checks are ENSURE() (log.h), not assert(): they
 * hold in a build with -DNDEBUG too.
 *
 *     cc -pthread -I step04-master-worker tests/unit/owner_test.c \
 *        step04-master-worker/{loop,pool,log}.c -o owner_test
 *
 *   owner_test loop        another thread calls loop_make_ready(): SIGABRT
 *   owner_test pool        another thread calls pool_get(): SIGABRT
 *   owner_test own-thread  the owner uses both: exits 0
 */
#include "loop.h"
#include "pool.h"
#include "check.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static struct loop loop;
static struct pool pool;
static struct watch watch = {.fd = -1};

static void *use_loop(void *arg)
{
    (void)arg;
    loop_make_ready(&loop, &watch); /* not our loop */
    return NULL;
}

static void *use_pool(void *arg)
{
    (void)arg;
    pool_put(&pool, pool_get(&pool)); /* not our pool */
    return NULL;
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: owner_test loop|pool|own-thread");
    CHECK(loop_init(&loop) == 0, "loop_init");
    CHECK(pool_init(&pool, 4) == 0, "pool_init");
    pthread_t t;
    if (strcmp(argv[1], "loop") == 0) {
        pthread_create(&t, NULL, use_loop, NULL);
        pthread_join(t, NULL);
    } else if (strcmp(argv[1], "pool") == 0) {
        pthread_create(&t, NULL, use_pool, NULL);
        pthread_join(t, NULL);
    } else if (strcmp(argv[1], "own-thread") == 0) {
        use_loop(NULL);
        use_pool(NULL);
    } else {
        return 2;
    }
    pool_destroy(&pool);
    loop_destroy(&loop);
    printf("ok %s\n", argv[1]);
    return 0;
}
