/*
 * prs_sliding_counter.h - the sliding window counter: two counters over
 * windows aligned like the fixed window's ([k*w, (k+1)*w)); the previous
 * window's count is weighted by how much of it the sliding window
 * (now - w, now] still overlaps. At e ns into the current window a request of
 * weight n is admitted iff
 *
 *     prev * (w - e) / w + cur + n <= limit
 *
 * evaluated exactly in integers (prev * (w - e) + (cur + n) * w <= limit * w,
 * 128-bit). O(1) state: 24 bytes.
 *
 * Bound (the approximation): at most `limit` units in each aligned window
 * (the estimate is never below cur). In any interval of length w that
 * straddles a boundary, at most limit + prev * x units, x being the fraction
 * of the interval inside the later window: always fewer than 2 * limit, and
 * (up to rounding) the sliding log's count when the previous window's units
 * were spread evenly over it. Units bunched at the end of a window are under-weighted;
 * use the sliding log when the bound must be exact.
 *
 * Exactness of retry_after: the estimate never grows while nothing is
 * admitted, so a denial's retry_after is the first nanosecond at which the
 * inequality holds (computed in integers): denied before it, admitted at it.
 */
#ifndef PRS_SLIDING_COUNTER_H
#define PRS_SLIDING_COUNTER_H

#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_sliding_counter_config {
    int64_t limit;                   /* units per sliding window, >= 1 */
    int64_t window_ns;               /* window length, >= 1 ns */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_sliding_counter_config;

/* Defaults: limit 1, window 1 s, default allocator. */
void prs_sliding_counter_config_init(prs_sliding_counter_config *cfg);

/* prs_sliding_counter (a prs_limiter) and its functions: PRS_LIMITER_TYPED_API
 * (prs_limiter.h). What they mean for this algorithm: */
PRS_LIMITER_TYPED_API(sliding_counter)
/* PRS_OK or PRS_EINVAL (NULL, limit < 1, window_ns < 1). */

/* Makes an empty limiter in *out; on error *out is NULL and nothing is
 * allocated: PRS_EINVAL (see validate), PRS_ENOMEM. */

/* Asks for n (>= 1) at now_ns; counts it only when allowed. Thread-safe.
 * n > limit: denied with retry_after_ns == PRS_NEVER. A now_ns in a window
 * earlier than the one last counted is taken as the start of that one (the
 * most restrictive instant of it). PRS_OK with *d filled, or PRS_EINVAL. */
/* The same decision without counting. */
/* Back to empty windows. */
/* limit minus the weighted estimate at now_ns, in [0, limit]. */

/* Changes limit and window_ns of a live limiter at now_ns (cfg's allocator is
 * ignored). Thread-safe: a concurrent decision sees the old or the new params,
 * never a mix. What is kept: with the same window length, both counters (a
 * lowered limit admits nothing until the weighted count falls below it); with
 * a new length, the weighted count in force at now_ns, rounded up, becomes the
 * count of the new-aligned window holding now_ns. PRS_OK, or the error
 * prs_sliding_counter_config_validate gives (PRS_EINVAL, also for a NULL sc):
 * then nothing changed. */

int64_t prs_sliding_counter_limit(const prs_sliding_counter *sc);
int64_t prs_sliding_counter_window_ns(const prs_sliding_counter *sc);

#ifdef __cplusplus
}
#endif
#endif
