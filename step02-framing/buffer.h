/*
 * buffer.h - a growable byte buffer for one connection's input (and the
 * replies built from it).  Layout, in the style of muduo's Buffer:
 *
 *     data                start               end                 cap
 *      |   consumed (free)  |   readable bytes  |   writable space   |
 *      +--------------------+-------------------+--------------------+
 *
 *     invariant: 0 <= start <= end <= cap
 *
 * Bytes are appended at end (a read lands there) and consumed from start (a
 * decoded frame leaves from there).  When the writable space runs short the
 * readable bytes are first slid back to the front; only if that is not enough
 * does the buffer grow.  step03 replaces this with a ring buffer.
 */
#ifndef LAB_BUFFER_H
#define LAB_BUFFER_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t start; /* first readable byte */
    size_t end;   /* one past the last readable byte */
    size_t cap;   /* bytes allocated at data */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);

static inline size_t buf_len(const struct buf *b)
{
    return b->end - b->start;
}
static inline uint8_t *buf_peek(const struct buf *b)
{
    return b->data + b->start;
}
static inline uint8_t *buf_tail(const struct buf *b)
{
    return b->data + b->end;
}
static inline size_t buf_space(const struct buf *b)
{
    return b->cap - b->end;
}

/* Make at least n bytes writable at buf_tail().  Returns 0, or -1 (ENOMEM). */
int buf_reserve(struct buf *b, size_t n);
/* n bytes were written at buf_tail(): make them readable. */
void buf_produce(struct buf *b, size_t n);
/* Drop n readable bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Copy len bytes in at the end.  Returns 0, or -1 (ENOMEM). */
int buf_append(struct buf *b, const void *src, size_t len);

#endif
