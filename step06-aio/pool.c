/*
 * pool.c - the fixed-block pool described in pool.h.
 *
 * The free list is an array of pointers outside the blocks, so a block on
 * the list can be marked wholly inaccessible: memcheck then reports any
 * read or write of it (see tests/unit/pool_test.c, case "uaf").
 */
#include "pool.h"
#include "log.h"

#include <assert.h>
#include <stdlib.h>

/* Tell memcheck and ASan which blocks are off limits, when they are there. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define POOL_HAVE_VALGRIND 1
#endif
#endif
#ifndef POOL_HAVE_VALGRIND
#define VALGRIND_MAKE_MEM_NOACCESS(p, n)  ((void)(p), (void)(n))
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

int pool_init(struct pool *p, size_t max_free)
{
    *p = (struct pool){.max_free = max_free, .owner = pthread_self()};
    p->free_blocks = calloc(max_free ? max_free : 1, sizeof(*p->free_blocks));
    return p->free_blocks ? 0 : -1;
}

void pool_destroy(struct pool *p)
{
    ENSURE(pthread_equal(p->owner, pthread_self()),
           "one pool per thread: only its owner uses it");
    assert(p->in_use == 0); /* a block still out is a leak in the caller */
    for (size_t i = 0; i < p->nfree; i++) {
        UNPOISON(p->free_blocks[i], POOL_BLOCK);
        free(p->free_blocks[i]);
    }
    free(p->free_blocks);
    *p = (struct pool){0};
}

void *pool_get(struct pool *p)
{
    ENSURE(pthread_equal(p->owner, pthread_self()),
           "one pool per thread: only its owner uses it");
    void *b;
    if (p->nfree > 0) {
        b = p->free_blocks[--p->nfree];
        UNPOISON(b, POOL_BLOCK);
        VALGRIND_MAKE_MEM_UNDEFINED(b, POOL_BLOCK); /* like fresh malloc memory */
    } else {
        b = malloc(POOL_BLOCK);
        if (b == NULL)
            return NULL;
    }
    p->in_use++;
    return b;
}

void pool_put(struct pool *p, void *block)
{
    ENSURE(pthread_equal(p->owner, pthread_self()),
           "one pool per thread: only its owner uses it");
    assert(block != NULL && p->in_use > 0);
    p->in_use--;
    if (p->nfree == p->max_free) {
        free(block); /* keep the free list bounded */
        return;
    }
    VALGRIND_MAKE_MEM_NOACCESS(block, POOL_BLOCK);
    POISON(block, POOL_BLOCK);
    p->free_blocks[p->nfree++] = block;
}
