/*
 * buffer.c - the growable input buffer described in buffer.h.
 *
 * Memory is bounded by its user, not here.  The server asks for 64 KiB of
 * room before every read, and it holds less than one frame when it asks
 * (complete frames are consumed as soon as they are decoded): less than
 * FRAME_HEADER_LEN + max_frame bytes.  Growth doubles the capacity from
 * 4 KiB until the room fits, so the capacity stays below
 * 2 x (FRAME_HEADER_LEN + max_frame + 64 KiB), whatever the peer sends - a
 * fresh connection's first read already makes it 64 KiB, and one byte of a
 * partial frame makes it 128 KiB.  It never shrinks (step03's ring does).
 */
#include "buffer.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b)
{
    *b = (struct buf){0};
}

void buf_free(struct buf *b)
{
    free(b->data);
    *b = (struct buf){0};
}

int buf_reserve(struct buf *b, size_t n)
{
    assert(b->start <= b->end && b->end <= b->cap);
    if (buf_space(b) >= n)
        return 0;
    size_t used = buf_len(b);
    if (b->start + buf_space(b) >= n) {
        /* Enough room if we slide the readable bytes to the front. */
        memmove(b->data, buf_peek(b), used);
        b->start = 0;
        b->end = used;
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - used < n)
        cap *= 2;
    uint8_t *data = malloc(cap);
    if (data == NULL)
        return -1;
    if (used > 0)
        memcpy(data, buf_peek(b), used);
    free(b->data);
    b->data = data;
    b->start = 0;
    b->end = used;
    b->cap = cap;
    return 0;
}

void buf_produce(struct buf *b, size_t n)
{
    assert(n <= buf_space(b));
    b->end += n;
}

void buf_consume(struct buf *b, size_t n)
{
    assert(n <= buf_len(b));
    b->start += n;
    if (b->start == b->end)
        b->start = b->end = 0; /* empty: the next read starts at the front */
}

int buf_append(struct buf *b, const void *src, size_t len)
{
    if (buf_reserve(b, len) < 0)
        return -1;
    memcpy(buf_tail(b), src, len);
    buf_produce(b, len);
    return 0;
}
