/*
 * pbuf.h - provided buffers (提供缓冲区): a ring of buffers a worker lends
 * the kernel, so a recv needs no buffer of its own until bytes arrive
 * (IORING_REGISTER_PBUF_RING, Linux 5.19).
 *
 *   worker                                  kernel
 *   pbuf_init(): COUNT buffers of SIZE       register the ring, group bgid
 *   recv, multishot, "pick from bgid"  -->   bytes arrive: take the buffer at
 *                                            the head, fill it, post a CQE
 *   CQE: res bytes in buffer bid       <--   (IORING_CQE_F_BUFFER, bid)
 *   copy them out, pbuf_give_back(bid) -->   the buffer is at the tail again
 *
 * The kernel owns a buffer from the moment it takes it until we give it
 * back; we give each back as soon as its bytes are copied, so the ring runs
 * dry (a recv completes with -ENOBUFS) only when more bytes arrive at once
 * than it holds - and then it grows (pbuf_grow()).  It starts small: the
 * kernel takes its buffers in turn, so every buffer lent is soon memory in
 * use, and a server with few connections talking at once needs few.
 * -R legacy, for kernels 5.7-5.18, which have no buffer rings: the same
 * buffers and group, handed over one operation at a time instead
 * (IORING_OP_PROVIDE_BUFFERS), and read by one-shot recvs (multishot needs
 * 6.0).  Giving a buffer back is then an SQE, not a store: it reaches the
 * kernel at the worker's next io_uring_enter().
 *
 * New in step06 (-R provided, -R legacy).
 */
#ifndef LAB_PBUF_H
#define LAB_PBUF_H

#include "ring.h"

#include <stdbool.h>
#include <stdint.h>

struct pbuf {
    struct io_uring_buf_ring *br; /* shared with the kernel: entries, tail */
    struct ring *legacy;          /* -R legacy: the ring provides go through */
    struct ring_op provide_op;    /* ... and the record every provide shares */
    uint8_t *mem;                 /* room for max buffers of size bytes */
    unsigned max, size;           /* max: a power of two */
    unsigned lent;                /* buffers 0..lent-1 are the ring's */
    unsigned step;                /* how many to lend at a time */
    bool ran_dry;                 /* a recv ended with -ENOBUFS: grow */
    uint16_t tail;                /* entries published so far (wraps) */
    uint16_t bgid;                /* the group id recvs name */
};

/* Register a ring of up to max buffers of size bytes with r, as group bgid,
 * and lend it the first `step` of them (the memory of the others is only
 * reserved: untouched pages cost nothing).  Returns 0, or -errno (EINVAL:
 * this kernel has no buffer rings).  legacy: no ring to register; every
 * lending is an IORING_OP_PROVIDE_BUFFERS submitted to r. */
int pbuf_init(struct pbuf *p, struct ring *r, uint16_t bgid, unsigned max,
              unsigned size, unsigned step, bool legacy);
/* The ring ran dry: lend it `step` more buffers, up to max, and clear
 * ran_dry.  Returns how many (0: it has them all already). */
unsigned pbuf_grow(struct pbuf *p);
/* Unregister (before ring_exit(), or with it) and free. */
void pbuf_free(struct pbuf *p, struct ring *r);
/* The memory of buffer bid, which a CQE named. */
uint8_t *pbuf_at(const struct pbuf *p, unsigned bid);
/* Lend buffer bid to the kernel again. */
void pbuf_give_back(struct pbuf *p, unsigned bid);
/* -R legacy: a provide completed with res (0 or more: the kernel took the
 * buffers; below 0, -errno: they are lost to the group, and it exits). */
void pbuf_on_provided(int res);

#endif
