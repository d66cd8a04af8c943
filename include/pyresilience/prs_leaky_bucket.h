/*
 * prs_leaky_bucket.h - a leaky bucket used as a meter: a level that each
 * admitted request of weight n raises by n, draining continuously at
 * `leak_rate` units per second; a request is admitted when level + n <=
 * capacity. Starts empty.
 *
 * Bound: in any interval of length T (seconds) it admits at most
 * capacity + leak_rate * T units (the level starts at >= 0, rises by what is
 * admitted, and never exceeds capacity). A caller that waits retry_after before
 * each request is paced at exactly leak_rate once the first `capacity` units
 * have gone through.
 *
 * Exactness: a request denied at t with retry_after r is denied at every
 * t' in [t, t + r) and admitted at t + r (with nothing admitted in between):
 * the verdict and r come from the same integer "nanoseconds of draining
 * needed" value, as in the token bucket.
 */
#ifndef PRS_LEAKY_BUCKET_H
#define PRS_LEAKY_BUCKET_H

#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_leaky_bucket_config {
    double capacity;                 /* finite, > 0, <= 1e15 */
    double leak_rate;                /* units per second, finite, > 0, <= 1e15 */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_leaky_bucket_config;

/* Defaults: capacity 1, leak_rate 1/s, default allocator. */
void prs_leaky_bucket_config_init(prs_leaky_bucket_config *cfg);

/* prs_leaky_bucket (a prs_limiter) and its functions: PRS_LIMITER_TYPED_API
 * (prs_limiter.h). What they mean for this algorithm: */
PRS_LIMITER_TYPED_API(leaky_bucket)
/* PRS_OK, PRS_EINVAL (NULL, capacity or leak_rate not finite or <= 0),
 * PRS_ERANGE (capacity or leak_rate above 1e15). */

/* Makes an empty bucket in *out; on error *out is NULL and nothing is allocated:
 * PRS_EINVAL/PRS_ERANGE (see validate), PRS_ENOMEM. */

/* Asks for n (>= 1) at now_ns; raises the level only when allowed. Thread-safe.
 * n > capacity: denied with retry_after_ns == PRS_NEVER. A now_ns earlier than
 * one already seen drains nothing. PRS_OK with *d filled, or PRS_EINVAL
 * (n < 1, NULL arguments). */
/* The same decision without changing anything. */
/* Back to empty. */
/* Room left at now_ns (capacity - level), in [0, capacity]. */
/* The level at now_ns, in [0, capacity]. */
double prs_leaky_bucket_level(prs_leaky_bucket *lb, int64_t now_ns);

/* Changes capacity and leak_rate of a live bucket at now_ns (cfg's allocator
 * is ignored). Thread-safe: a concurrent decision sees the old or the new
 * params, never a mix. What is kept: the level at now_ns (drained at the old
 * rate up to now_ns), as it is - above a lowered capacity too, which then
 * admits nothing until the level drains at the new rate; from now_ns on it
 * drains at the new rate. PRS_OK, or the error prs_leaky_bucket_config_validate
 * gives (PRS_EINVAL, PRS_ERANGE; PRS_EINVAL for a NULL lb): then nothing changed. */

double prs_leaky_bucket_capacity(const prs_leaky_bucket *lb);
double prs_leaky_bucket_leak_rate(const prs_leaky_bucket *lb);

#ifdef __cplusplus
}
#endif
#endif
