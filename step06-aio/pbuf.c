/*
 * pbuf.c - provided buffers (see pbuf.h).
 *
 * What this file teaches: completion I/O needs the buffer when the
 * operation is submitted, readiness I/O only when data arrives - so a
 * completion server that gives every connection a recv buffer pays for it
 * on every idle connection.  A buffer ring turns that around: one pool of
 * buffers per worker, which the kernel picks from when bytes arrive.
 *
 * The ring itself is an array of struct io_uring_buf {addr, len, bid} in
 * memory we allocate, page-aligned; the kernel reads entries from its head,
 * we write them at the tail and publish the tail with a release store (the
 * same rule as the SQ's tail, ring.c).  The tail lives in the first
 * entry's resv field (struct io_uring_buf_ring).
 *
 * New in step06.
 */
#include "pbuf.h"

#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void pbuf_put(struct pbuf *p, unsigned bid)
{
    struct io_uring_buf *b = &p->br->bufs[p->tail & (p->max - 1)];
    b->addr = (uint64_t)(uintptr_t)pbuf_at(p, bid);
    b->len = p->size;
    b->bid = (uint16_t)bid;
    p->tail++;
}

static void pbuf_publish(struct pbuf *p)
{
    atomic_store_explicit((_Atomic uint16_t *)&p->br->tail, p->tail,
                          memory_order_release);
}

/* -R legacy: lend the kernel buffers bid..bid+n-1, which lie side by side. */
static void pbuf_provide(struct pbuf *p, unsigned bid, unsigned n)
{
    ring_prep_provide(p->legacy, &p->provide_op, pbuf_at(p, bid), p->size, n, p->bgid,
                      bid);
}

/* Lend the kernel `step` more buffers, up to max; returns how many. */
static unsigned pbuf_lend(struct pbuf *p)
{
    unsigned added = 0;
    if (p->legacy != NULL) {
        added = p->max - p->lent < p->step ? p->max - p->lent : p->step;
        if (added > 0)
            pbuf_provide(p, p->lent, added); /* one SQE for them all */
        p->lent += added;
        return added;
    }
    for (; added < p->step && p->lent < p->max; added++)
        pbuf_put(p, p->lent++);
    if (added > 0)
        pbuf_publish(p);
    return added;
}

int pbuf_init(struct pbuf *p, struct ring *r, uint16_t bgid, unsigned max,
              unsigned size, unsigned step, bool legacy)
{
    *p = (struct pbuf){.max = max, .size = size, .step = step, .bgid = bgid};
    if (legacy) {
        p->legacy = r;
        p->provide_op.kind = RING_OP_PROVIDE;
        p->mem = malloc((size_t)max * size);
        if (p->mem == NULL)
            return -ENOMEM;
        pbuf_lend(p);
        return 0;
    }
    size_t ring_len = (size_t)max * sizeof(struct io_uring_buf);
    /* The kernel pins the ring's pages; mmap() gives page-aligned memory. */
    void *br = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
    if (br == MAP_FAILED)
        return -errno;
    p->br = br;
    p->mem = malloc((size_t)max * size);
    if (p->mem == NULL) {
        munmap(br, ring_len);
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = max, .bgid = bgid};
    int ret = ring_register(r, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (ret < 0) {
        free(p->mem);
        munmap(br, ring_len);
        p->br = NULL;
        p->mem = NULL;
        return ret;
    }
    pbuf_lend(p);
    return 0;
}

unsigned pbuf_grow(struct pbuf *p)
{
    if (p->ran_dry)
        return 0; /* once per batch, however many recvs found it empty */
    p->ran_dry = true;
    p->added = pbuf_lend(p);
    return p->added;
}

void pbuf_free(struct pbuf *p, struct ring *r)
{
    if (p->legacy != NULL) {
        /* The kernel keeps only the buffers' addresses, and no recv will
         * use them now: ring_exit() forgets them. */
        free(p->mem);
        p->mem = NULL;
        p->legacy = NULL;
        return;
    }
    if (p->br == NULL)
        return;
    struct io_uring_buf_reg reg = {.bgid = p->bgid};
    (void)ring_register(r, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    munmap(p->br, (size_t)p->max * sizeof(struct io_uring_buf));
    free(p->mem);
    p->br = NULL;
    p->mem = NULL;
}

uint8_t *pbuf_at(const struct pbuf *p, unsigned bid)
{
    return p->mem + (size_t)bid * p->size;
}

void pbuf_give_back(struct pbuf *p, unsigned bid)
{
    if (p->legacy != NULL) {
        pbuf_provide(p, bid, 1);
        return;
    }
    pbuf_put(p, bid);
    pbuf_publish(p);
}

void pbuf_on_provided(int res)
{
    /* A provide fails on a bug of ours (a bad id or group) or when the
     * kernel has no memory for its records of the buffers (-ENOMEM).
     * Either way the group has lost them for good, and once it has lent
     * all it may, recvs would spin on -ENOBUFS: say so and stop. */
    if (res < 0)
        die("io_uring: IORING_OP_PROVIDE_BUFFERS: %s", strerror(-res));
}
