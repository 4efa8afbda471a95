/*
 * tools/hist.h - a log-linear latency histogram (对数线性直方图), in the
 * spirit of HdrHistogram.
 *
 * Values are nanoseconds.  Below 128 ns every value has its own bucket; above
 * that each power-of-two range [2^k, 2^(k+1)) is split into 64 equal
 * buckets, so a recorded value is known to within 1/64 (1.6 %) whatever its
 * size: 25 us to within 0.4 us, 2 s to within 31 ms.  Recording is an index
 * computation and an increment: cheap enough for every message.
 */
#ifndef LAB_HIST_H
#define LAB_HIST_H

#include <stdint.h>

#define HIST_SUB     64 /* buckets per power of two */
#define HIST_BUCKETS (HIST_SUB * 64)

struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
};

void hist_record(struct hist *h, uint64_t ns);
void hist_merge(struct hist *into, const struct hist *from);
/* The value (ns) at quantile q in [0, 1]: the upper edge of its bucket. */
uint64_t hist_quantile(const struct hist *h, double q);
/* How many recorded values are >= ns. */
uint64_t hist_count_at_least(const struct hist *h, uint64_t ns);

#endif
