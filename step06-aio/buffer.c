/*
 * buffer.c - the ring buffer drawn in buffer.h.
 *
 * A pitfall this layout rules out: a common sample of this kind of server
 * takes the 4-byte length out of its ring to look at it, finds the frame
 * incomplete, and writes the 4 bytes back - with an ordinary write, which
 * appends at the *tail*, behind the bytes that follow them, so the stream is
 * scrambled.  Here nothing is taken out of a ring to look at it: buf_peek()
 * copies the header out and leaves the ring untouched until the whole frame
 * is there.
 */
#include "buffer.h"
#include "log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define BUF_INVARIANTS(b)                                                              \
    assert(((b)->cap & ((b)->cap - 1)) == 0 && (b)->tail - (b)->head <= (b)->cap &&    \
           ((b)->data == NULL) == ((b)->cap == 0))

void buf_init(struct buf *b, struct pool *pool, size_t max_len)
{
    *b = (struct buf){.pool = pool, .max_len = max_len};
}

/* Free a block of the ring: to the pool when it is a pool block. */
static void buf_free_block(struct buf *b, uint8_t *data, size_t cap)
{
    if (cap == POOL_BLOCK)
        pool_put(b->pool, data);
    else
        free(data);
}

/* Give the memory back - or, while a send reads it, keep it until
 * buf_unpin(): the kernel still holds its address. */
static void buf_release(struct buf *b)
{
    ENSURE(b->pin != BUF_PIN_SPACE, "a recv writes into this memory: it cannot go");
    if (b->pin == BUF_PIN_DATA && b->retired == NULL) {
        b->retired = b->data; /* the block the send reads */
        b->retired_cap = b->cap;
    } else {
        buf_free_block(b, b->data, b->cap);
    }
    b->data = NULL;
    b->cap = 0;
    b->head = b->tail = 0;
}

void buf_free(struct buf *b)
{
    if (b->data)
        buf_release(b);
}

/* The smallest power-of-two capacity (at least one pool block) that holds
 * need bytes, or 0 when none fits in a size_t. */
static size_t capacity_for(size_t need)
{
    size_t cap = POOL_BLOCK;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return 0; /* doubling again would wrap to 0 and loop forever */
        cap *= 2;
    }
    return cap;
}

int buf_reserve(struct buf *b, size_t n)
{
    BUF_INVARIANTS(b);
    size_t len = buf_len(b);
    if (b->cap - len >= n)
        return 0;
    /* Check the bound before adding: len + n itself may wrap around.  (len
     * may exceed max_len: a read fills whatever room the rounding left.) */
    if (len > b->max_len || n > b->max_len - len)
        return -1;
    size_t cap = capacity_for(len + n);
    if (cap == 0)
        return -1;
    ENSURE(b->pin != BUF_PIN_SPACE, "growing would move the memory a recv writes into");
    uint8_t *data = cap == POOL_BLOCK ? pool_get(b->pool) : malloc(cap);
    if (data == NULL)
        return -1;
    /* Unwrap into the new memory: the data starts at 0 again. */
    buf_peek(b, 0, data, len);
    if (b->data)
        buf_release(b);
    b->data = data;
    b->cap = cap;
    b->head = 0;
    b->tail = len;
    return 0;
}

/* Up to two segments of the ring starting at counter `from`, n bytes long. */
static int segments(const struct buf *b, size_t from, size_t n, struct iovec iov[2])
{
    if (n == 0)
        return 0;
    size_t start = from & (b->cap - 1);
    size_t first = b->cap - start < n ? b->cap - start : n;
    iov[0] = (struct iovec){b->data + start, first};
    if (first == n)
        return 1;
    iov[1] = (struct iovec){b->data, n - first};
    return 2;
}

int buf_space_iov(const struct buf *b, struct iovec iov[2])
{
    BUF_INVARIANTS(b);
    return segments(b, b->tail, b->cap - buf_len(b), iov);
}

int buf_data_iov(const struct buf *b, struct iovec iov[2])
{
    BUF_INVARIANTS(b);
    return segments(b, b->head, buf_len(b), iov);
}

void buf_produce(struct buf *b, size_t n)
{
    assert(n <= b->cap - buf_len(b));
    b->tail += n;
}

void buf_consume(struct buf *b, size_t n)
{
    assert(n <= buf_len(b));
    b->head += n;
    buf_trim(b); /* empty: an idle connection holds no buffer */
}

void buf_trim(struct buf *b)
{
    /* A recv in flight writes into the free space: keep it until then. */
    if (b->head == b->tail && b->data && b->pin != BUF_PIN_SPACE)
        buf_release(b);
}

void buf_pin(struct buf *b, enum buf_pin how)
{
    ENSURE(b->pin == BUF_UNPINNED, "one operation at a time uses a buffer");
    b->pin = how;
}

void buf_unpin(struct buf *b)
{
    ENSURE(b->pin != BUF_UNPINNED, "only a pinned buffer is unpinned");
    b->pin = BUF_UNPINNED;
    if (b->retired != NULL) { /* the completion came: the kernel let go of it */
        buf_free_block(b, b->retired, b->retired_cap);
        b->retired = NULL;
    }
}

void buf_peek(const struct buf *b, size_t off, void *dst, size_t n)
{
    assert(off + n <= buf_len(b));
    struct iovec iov[2];
    int k = segments(b, b->head + off, n, iov);
    uint8_t *d = dst;
    for (int i = 0; i < k; i++) {
        memcpy(d, iov[i].iov_base, iov[i].iov_len);
        d += iov[i].iov_len;
    }
}

int buf_append(struct buf *b, const void *src, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    struct iovec iov[2];
    int k = segments(b, b->tail, n, iov);
    const uint8_t *s = src;
    for (int i = 0; i < k; i++) {
        memcpy(iov[i].iov_base, s, iov[i].iov_len);
        s += iov[i].iov_len;
    }
    b->tail += n;
    return 0;
}

int buf_append_from(struct buf *b, const struct buf *src, size_t off, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    struct iovec from[2];
    int k = segments(src, src->head + off, n, from);
    for (int i = 0; i < k; i++) {
        /* Each source segment may itself wrap in the destination. */
        buf_append(b, from[i].iov_base, from[i].iov_len);
    }
    return 0;
}
