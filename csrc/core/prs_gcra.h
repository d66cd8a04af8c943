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

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_gcra prs_gcra;

typedef struct prs_gcra_config {
    double rate;                     /* requests per second, finite, > 0 (>= 1e-9) */
    int64_t burst;                   /* requests admissible at once, >= 1 */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_gcra_config;

/* Defaults: rate 1/s, burst 1, default allocator. */
void prs_gcra_config_init(prs_gcra_config *cfg);
/* PRS_OK, or PRS_EINVAL (rate not finite or <= 0, burst < 1),
 * PRS_ERANGE (burst * interval overflows int64 nanoseconds). */
int prs_gcra_config_validate(const prs_gcra_config *cfg);

/* Makes a full limiter in *out. On error *out is NULL and nothing is allocated:
 * PRS_EINVAL/PRS_ERANGE (see validate), PRS_ENOMEM. */
int prs_gcra_new(const prs_gcra_config *cfg, prs_gcra **out);
void prs_gcra_free(prs_gcra *g); /* NULL-safe */

/* Asks for n (>= 1) at now_ns; consumes only when allowed. Thread-safe.
 * n > burst: denied with retry_after_ns == PRS_NEVER.
 * PRS_OK with *d filled, or PRS_EINVAL (n < 1, NULL arguments). */
int prs_gcra_check(prs_gcra *g, int64_t now_ns, int64_t n, prs_decision *d);
/* The same decision without consuming. */
int prs_gcra_peek(prs_gcra *g, int64_t now_ns, int64_t n, prs_decision *d);
/* Back to full. */
void prs_gcra_reset(prs_gcra *g);
/* Requests of weight 1 admissible at now_ns, as a real number in [0, burst]. */
double prs_gcra_available(const prs_gcra *g, int64_t now_ns);

/* Changes rate and burst of a live limiter at now_ns (cfg's allocator is
 * ignored). Thread-safe and lock-free for deciders: a concurrent decision
 * uses the old or the new params whole. What is kept: the requests already
 * consumed at now_ns, (tat - now) / T_old, re-expressed on the new emission
 * interval (rounded up, so no request is minted); the new burst applies to
 * them, so a burst lowered below what is consumed denies until it drains at
 * the new rate. A limiter with nothing consumed stays full. now_ns is the
 * current time: the consumed amount is measured from it.
 * PRS_OK, or the error prs_gcra_config_validate gives (PRS_EINVAL,
 * PRS_ERANGE; PRS_EINVAL for a NULL g): then nothing changed. */
int prs_gcra_reconfigure(prs_gcra *g, const prs_gcra_config *cfg, int64_t now_ns);

double prs_gcra_rate(const prs_gcra *g);
int64_t prs_gcra_burst(const prs_gcra *g);
int64_t prs_gcra_interval_ns(const prs_gcra *g);
/* This limiter's params for prs_algo_gcra (prs_algo.h); valid while g lives. */
const void *prs_gcra_params(const prs_gcra *g);

#ifdef __cplusplus
}
#endif
#endif
