/*
 * tools/hist.c - the log-linear histogram described in hist.h.
 *
 * Bucket layout, for SUB = 64:
 *
 *     value            bucket
 *     0 .. 127         0 .. 127        (exact)
 *     128 .. 255       128 .. 191      (width 2)
 *     256 .. 511       192 .. 255      (width 4)
 *     2^k .. 2^(k+1)-1 (k-5)*64 ..     (width 2^(k-6))
 */
#include "hist.h"

#include <string.h>

static unsigned bucket_of(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63 - (unsigned)__builtin_clzll(v); /* v >= 128: msb >= 7 */
    unsigned shift = msb - 6;                         /* v >> shift in [64, 128) */
    unsigned b = (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* The largest value that lands in bucket b. */
static uint64_t bucket_top(unsigned b)
{
    if (b < 2 * HIST_SUB)
        return b;
    unsigned shift = b / HIST_SUB - 1;
    uint64_t base = (uint64_t)(HIST_SUB + b % HIST_SUB) << shift;
    return base + ((uint64_t)1 << shift) - 1;
}

void hist_record(struct hist *h, uint64_t ns)
{
    h->count[bucket_of(ns)]++;
    h->total++;
    if (ns > h->max)
        h->max = ns;
}

void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->count[i] += from->count[i];
    into->total += from->total;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->total == 0)
        return 0;
    /* The rank of the value at quantile q, counting from 1. */
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

uint64_t hist_count_at_least(const struct hist *h, uint64_t ns)
{
    uint64_t n = 0;
    for (unsigned i = bucket_of(ns); i < HIST_BUCKETS; i++)
        n += h->count[i];
    return n;
}
