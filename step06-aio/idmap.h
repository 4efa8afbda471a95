/*
 * idmap.h - connection id -> connection, for one worker.
 *
 * Why ids and not fds: the kernel hands a closed connection's fd number to
 * the next connection it accepts.  A reply computed for connection 7 on fd
 * 12, delivered "to fd 12" after 7 closed, would go to a stranger.  Ids are
 * never reused, so a reply for a closed connection finds nothing here and is
 * dropped (and counted) instead.
 *
 * An open-addressing hash table with linear probing (开放寻址): the keys live
 * in one array, a lookup is a hash and a short scan, and removal shifts the
 * following entries back so no tombstones pile up.  Key 0 marks a free slot
 * (ids start at 1).  One per worker, used only by that worker: no lock.
 */
#ifndef LAB_IDMAP_H
#define LAB_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap {
    uint64_t *keys; /* 0: free */
    void **values;
    size_t cap; /* a power of two; at most half full */
    size_t len;
};

void idmap_init(struct idmap *m);
void idmap_free(struct idmap *m);
/* Add id -> value (id not present, id != 0).  Returns 0, or -1 out of memory. */
int idmap_put(struct idmap *m, uint64_t id, void *value);
/* The value for id, or NULL. */
void *idmap_get(const struct idmap *m, uint64_t id);
/* Remove id (if present). */
void idmap_remove(struct idmap *m, uint64_t id);

#endif
