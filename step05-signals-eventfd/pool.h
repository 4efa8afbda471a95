/*
 * pool.h - a fixed-block memory pool (内存池) for connection buffers.
 *
 * Every buffer starts life as one POOL_BLOCK-sized block.  A buffer that
 * empties hands its block back, so an idle connection holds no buffer memory
 * at all; the pool keeps up to max_free returned blocks for the next buffer
 * that needs one, so a busy server stops calling malloc() per message, and
 * frees the rest, so a burst does not pin memory forever.
 *
 * Blocks on the free list are poisoned for memcheck (and ASan): touching a
 * block after pool_put() is reported as an invalid access, exactly like a
 * use-after-free of malloc'd memory.  Pools hide such bugs otherwise.
 *
 * One pool per thread: it has no lock.  It belongs to the thread that
 * created it, and every call checks it runs there (new in step04).
 */
#ifndef LAB_POOL_H
#define LAB_POOL_H

#include <pthread.h>
#include <stddef.h>

#define POOL_BLOCK 16384 /* bytes per block: one buffer's first capacity */

struct pool {
    void **free_blocks; /* stack of returned blocks, at most max_free */
    size_t nfree, max_free;
    size_t in_use;   /* blocks handed out and not yet returned */
    pthread_t owner; /* the thread that created it: the only one that may use it */
};

/* Create the pool, owned by the calling thread. */
int pool_init(struct pool *p, size_t max_free);
/* Free every block on the free list.  All blocks must have been returned. */
void pool_destroy(struct pool *p);
/* A POOL_BLOCK-byte block, contents undefined; NULL when memory runs out. */
void *pool_get(struct pool *p);
/* Return a block that came from pool_get(). */
void pool_put(struct pool *p, void *block);

#endif
