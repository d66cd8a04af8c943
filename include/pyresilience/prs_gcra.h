/*
 * prs_gcra.h - the Generic Cell Rate Algorithm: `rate` requests per second
 * with up to `burst` admissible at once. Lock-free: the whole state is one
 * 64-bit theoretical arrival time (TAT) updated by compare-and-swap.
 *
 * Resolution: the emission interval is 1e9/rate rounded UP to a whole
 * nanosecond, so the limiter never admits more than `rate`; the effective rate
 * is 1e9 / ceil(1e9 / rate) (exact when 1e9/rate is a whole number of ns).
 * Rates above 1e9/s behave as 1e9/s; use the token bucket for those.
 */
#ifndef PRS_GCRA_H
#define PRS_GCRA_H

#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_gcra_config {
    double rate;                     /* requests per second, finite, >= 1e-9 */
    int64_t burst;                   /* requests admissible at once, >= 1 */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_gcra_config;

/* Defaults: rate 1/s, burst 1, default allocator. */
void prs_gcra_config_init(prs_gcra_config *cfg);

/* prs_gcra (a prs_limiter, lock-free) and its functions, as prs_limiter.h
 * describes them:
 *   validate: PRS_EINVAL (rate not finite or <= 0, burst < 1), PRS_ERANGE
 *     (rate below 1e-9, burst * interval overflows int64 nanoseconds);
 *   check/peek: n > burst: denied with retry_after_ns == PRS_NEVER;
 *   available: requests of weight 1 admissible, a real number in [0, burst];
 *   reconfigure: rate and burst change at now_ns; lock-free for deciders (a
 *     concurrent decision uses the old or the new params whole). What is
 *     kept: the requests already consumed at now_ns, (tat - now) / T_old,
 *     re-expressed on the new emission interval (rounded up, so no request is
 *     minted); the new burst applies to them, so a burst lowered below what is
 *     consumed denies until it drains at the new rate. A limiter with nothing
 *     consumed stays full. */
PRS_LIMITER_TYPED_API(gcra)

double prs_gcra_rate(const prs_gcra *g);
int64_t prs_gcra_burst(const prs_gcra *g);
int64_t prs_gcra_interval_ns(const prs_gcra *g);

#ifdef __cplusplus
}
#endif
#endif
