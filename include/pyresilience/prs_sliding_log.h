/*
 * prs_sliding_log.h - an exact sliding-window limiter: at most `limit` units
 * in any interval of `window_ns` nanoseconds. It keeps the time of every
 * admitted unit in a ring of `limit` int64 timestamps (a request of weight n
 * takes n slots), so memory is O(limit): 32 + 8 * limit bytes of state.
 *
 * Bound: a unit admitted at t counts against every request in [t, t + w);
 * for every half-open interval [a, a + w) at most `limit` units are admitted
 * in it. Exact, not approximate.
 *
 * Exactness of retry_after: when denied, retry_after is the instant the
 * oldest unit that must leave does leave (its time + w): denied before it,
 * admitted at it (with nothing admitted in between).
 */
#ifndef PRS_SLIDING_LOG_H
#define PRS_SLIDING_LOG_H

#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest limit accepted (a ring of 2^27 timestamps is 1 GiB). */
#define PRS_SLIDING_LOG_MAX_LIMIT (INT64_C(1) << 27)

typedef struct prs_sliding_log_config {
    int64_t limit;                   /* units per window, 1..PRS_SLIDING_LOG_MAX_LIMIT */
    int64_t window_ns;               /* window length, >= 1 ns */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_sliding_log_config;

/* Defaults: limit 1, window 1 s, default allocator. */
void prs_sliding_log_config_init(prs_sliding_log_config *cfg);

/* prs_sliding_log (a prs_limiter) and its functions: PRS_LIMITER_TYPED_API
 * (prs_limiter.h). What they mean for this algorithm: */
PRS_LIMITER_TYPED_API(sliding_log)
/* PRS_OK, PRS_EINVAL (NULL, limit < 1, window_ns < 1) or PRS_ERANGE
 * (limit > PRS_SLIDING_LOG_MAX_LIMIT). */

/* Makes an empty log in *out (one allocation of about 8 * limit bytes); on
 * error *out is NULL and nothing is allocated: PRS_EINVAL/PRS_ERANGE (see
 * validate), PRS_ENOMEM. */

/* Asks for n (>= 1) at now_ns; records it only when allowed. Thread-safe.
 * n > limit: denied with retry_after_ns == PRS_NEVER. A now_ns earlier than one
 * already seen is taken as that one. Cost: O(n) to record, amortized O(1) to
 * forget expired entries. PRS_OK with *d filled, or PRS_EINVAL (n < 1, NULL). */
/* The same decision without recording. Like check, it may drop expired entries
 * and remember now_ns as seen (neither changes any decision). The descriptor's
 * decide(consume=0) does the same to its state. */
/* Forgets everything. */
/* Units admissible at now_ns, in [0, limit]. */

/* Changes limit and window_ns of a live log (cfg's allocator is ignored; the
 * log's own allocator is used). Thread-safe: a concurrent decision sees the
 * old or the new params, never a mix. What is kept: the admission times. The
 * new window applies to them as they are; a new limit L keeps the newest
 * min(count, L) of them (exactly the ones any decision under L can still wait
 * for), so a limit lowered below the count admits nothing until enough of
 * them expire. now_ns is unused (timestamps are absolute), taken for the
 * shape every reconfigure shares. A new limit moves the ring to a separate
 * allocation of 32 + 8 * limit bytes, made before the lock is taken; the cost
 * is O(limit) under the lock. PRS_OK, or the error prs_sliding_log_config_validate
 * gives (PRS_EINVAL, PRS_ERANGE; PRS_EINVAL for a NULL sl), or PRS_ENOMEM:
 * then nothing changed. */

int64_t prs_sliding_log_limit(const prs_sliding_log *sl);
int64_t prs_sliding_log_window_ns(const prs_sliding_log *sl);
/* The descriptor's state_size(params) is 32 + 8 * limit bytes. */

#ifdef __cplusplus
}
#endif
#endif
