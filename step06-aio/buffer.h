/*
 * buffer.h - a ring buffer (环形缓冲区) for one direction of one connection.
 *
 * The capacity is a power of two, so an index wraps with a mask instead of
 * a division.  head and tail are free-running byte counters: they only ever
 * grow, the number of buffered bytes is simply tail - head, and "full" and
 * "empty" can never be confused (the classic head == tail ambiguity).
 *
 *   not wrapped:
 *     0          head & mask         tail & mask           cap
 *     |   free    |####### data ########|        free        |
 *
 *   wrapped (the data runs off the end and continues at 0):
 *     0          tail & mask         head & mask           cap
 *     |## data 2 ##|       free         |####### data 1 ######|
 *
 *   invariants: cap == 0 or cap is a power of two;
 *               0 <= tail - head <= cap;  data == NULL iff cap == 0
 *
 * So the data (and the free space) is at most two contiguous segments, and
 * one readv()/writev() with two iovecs moves all of it: no byte loops, no
 * compaction.  An empty buffer gives its memory back (to the pool when it is
 * one pool block), so an idle connection holds none.  Growth doubles the
 * capacity; buf_reserve() refuses to grow past max_len bytes held, the bound
 * fixed at buf_init().
 */
#ifndef LAB_BUFFER_H
#define LAB_BUFFER_H

#include "pool.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * New in step06: while an io_uring operation uses a buffer, the kernel holds
 * its address - from the submission until the completion, on another CPU.
 * The buffer is pinned for that time, in one of two ways:
 *
 *   BUF_PIN_SPACE  a recv writes into the free space: the memory may not
 *                  move or go at all (buf_reserve() refuses, loudly: the
 *                  kernel would write into memory we have left).
 *   BUF_PIN_DATA   a send reads the data: those bytes must stay where they
 *                  are and unchanged until the completion.  Appending is
 *                  fine (it writes free space), and so is growing: the data
 *                  is copied to new memory, and the old block - the one the
 *                  kernel reads - is kept until buf_unpin(), like a deferred
 *                  free.  The send completes with bytes of the old copy,
 *                  which are the same bytes at the front of the new one.
 */
enum buf_pin { BUF_UNPINNED, BUF_PIN_SPACE, BUF_PIN_DATA };

struct buf {
    uint8_t *data;
    size_t cap;     /* 0 or a power of two */
    size_t head;    /* counter of the first buffered byte */
    size_t tail;    /* counter one past the last buffered byte */
    size_t max_len; /* buf_reserve() never makes room for more bytes than this */
    struct pool *pool;
    enum buf_pin pin;   /* what the kernel does with this memory (step06) */
    uint8_t *retired;   /* BUF_PIN_DATA: the block the kernel still reads, after */
    size_t retired_cap; /* the ring grew into new memory; freed at buf_unpin() */
};

void buf_init(struct buf *b, struct pool *pool, size_t max_len);
void buf_free(struct buf *b);

static inline size_t buf_len(const struct buf *b)
{
    return b->tail - b->head;
}

/* Make room for at least n more bytes.  Returns 0, or -1 when that would
 * mean holding more than max_len bytes, when no power-of-two capacity that
 * large fits in a size_t, or when memory runs out.  Safe for any n. */
int buf_reserve(struct buf *b, size_t n);

/* The free space as at most two iovecs, for readv(); returns the count. */
int buf_space_iov(const struct buf *b, struct iovec iov[2]);
/* The buffered bytes as at most two iovecs, for writev(); returns the count. */
int buf_data_iov(const struct buf *b, struct iovec iov[2]);

/* n bytes were written into the free space: make them buffered. */
void buf_produce(struct buf *b, size_t n);
/* Drop n bytes from the front.  An emptied buffer releases its memory. */
void buf_consume(struct buf *b, size_t n);
/* Release the memory of an empty buffer that reserved room it never used
 * (a read that found nothing).  No effect on a buffer holding data, or on
 * one a recv is writing into (BUF_PIN_SPACE). */
void buf_trim(struct buf *b);

/* Pin the buffer for one operation (step06: see enum buf_pin); unpin it
 * when the operation's completion arrives. */
void buf_pin(struct buf *b, enum buf_pin how);
void buf_unpin(struct buf *b);

/* Copy n bytes starting off bytes past the front into dst (handles wrap). */
void buf_peek(const struct buf *b, size_t off, void *dst, size_t n);
/* Append n bytes.  Returns 0, or -1 as buf_reserve(). */
int buf_append(struct buf *b, const void *src, size_t n);
/* Append n bytes of src, starting off bytes past its front. */
int buf_append_from(struct buf *b, const struct buf *src, size_t off, size_t n);

#endif
