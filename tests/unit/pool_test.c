/*
 * tests/unit/pool_test.c - unit tests for the fixed-block pool (pool.c) of
 * step03 and later, compiled against a step's own pool.c (see ring_test.c).
 *
 *   pool_test reuse     a returned block is handed out again
 *   pool_test bounded   the pool keeps at most max_free returned blocks
 *   pool_test uaf       touches a block after returning it: memcheck (or
 *                       ASan) must report it; without either it just exits 0
 */
#include "pool.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct pool p;
    CHECK(argc == 2, "usage: pool_test reuse|bounded|uaf");
    CHECK(pool_init(&p, 4) == 0, "pool_init");
    if (strcmp(argv[1], "reuse") == 0) {
        void *a = pool_get(&p);
        CHECK(a != NULL && p.in_use == 1, "in_use %zu", p.in_use);
        memset(a, 0xab, POOL_BLOCK); /* the whole block is usable */
        pool_put(&p, a);
        CHECK(p.in_use == 0 && p.nfree == 1, "in_use %zu nfree %zu", p.in_use, p.nfree);
        void *b = pool_get(&p);
        CHECK(b == a, "the returned block should be reused (got a different one)");
        pool_put(&p, b);
    } else if (strcmp(argv[1], "bounded") == 0) {
        void *blocks[10];
        for (int i = 0; i < 10; i++)
            blocks[i] = pool_get(&p);
        CHECK(p.in_use == 10, "in_use %zu", p.in_use);
        for (int i = 0; i < 10; i++)
            pool_put(&p, blocks[i]);
        CHECK(p.nfree == 4, "the free list must stop at max_free 4, holds %zu",
              p.nfree);
        CHECK(p.in_use == 0, "in_use %zu", p.in_use);
    } else if (strcmp(argv[1], "uaf") == 0) {
        char *a = pool_get(&p);
        a[0] = 1;
        pool_put(&p, a);
        volatile char c = a[100]; /* use after free: must be reported */
        (void)c;
    } else {
        return 2;
    }
    pool_destroy(&p);
    printf("ok %s\n", argv[1]);
    return 0;
}
