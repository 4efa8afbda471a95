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
 * -R legacy, for kernels without multishot recv (6.0) but not older than
 * 5.18: the same buffers and group, handed over one operation at a time
 * (IORING_OP_PROVIDE_BUFFERS, 5.7), and read by one-shot recvs.  Not older
 * than 5.18, because before it a recv picks its buffer when it is issued and
 * keeps it while it waits for bytes, and a cancelled one loses it for good;
 * 5.18 gives the buffer back when the recv must wait (io_kbuf_recycle()).
 * Giving a buffer back is an SQE now, not a store: it reaches the kernel at
 * the worker's next io_uring_enter().
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
    bool ran_dry;                 /* a recv found no buffer in this batch */
    unsigned added;               /* ... and how many pbuf_grow() lent then */
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
/* A recv found no buffer (-ENOBUFS): lend `step` more at once, up to max -
 * before that recv is armed again, so it finds them - unless the ring grew
 * already in this batch of completions (ran_dry; the worker clears it after
 * the batch).  Returns how many it lent. */
unsigned pbuf_grow(struct pbuf *p);
/* Unregister (before ring_exit(), or with it) and free. */
void pbuf_free(struct pbuf *p, struct ring *r);
/* The memory of buffer bid, which a CQE named. */
uint8_t *pbuf_at(const struct pbuf *p, unsigned bid);
/* Lend buffer bid to the kernel again. */
void pbuf_give_back(struct pbuf *p, unsigned bid);
/* -R legacy: a provide completed with res: below 0, -errno, the buffers are
 * lost to the group, and the server exits.  (0 or more is success; kernels
 * before 5.19 count the buffers added, and a count short of what was asked,
 * under memory pressure, is not seen here: the shared record does not know
 * what was asked, and the group merely holds fewer.) */
void pbuf_on_provided(int res);

#endif
