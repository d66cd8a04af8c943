/*
 * prs_fixed_window.h - a fixed-window counter: at most `limit` units per
 * window of `window_ns` nanoseconds, windows aligned to multiples of
 * window_ns on the caller's clock ([k*w, (k+1)*w)).
 *
 * Bound: at most `limit` units are admitted in each aligned window. An
 * interval of length window_ns that straddles a boundary can see up to
 * 2*limit (the end of one window and the start of the next): that is the
 * price of O(1) state; use the sliding log (exact) or the sliding counter
 * (approximate, smoother) when it matters.
 *
 * Exactness: a denial's retry_after is the time to the next window, where the
 * count starts at 0: the request is denied before it and admitted at it.
 */
#ifndef PRS_FIXED_WINDOW_H
#define PRS_FIXED_WINDOW_H

#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_fixed_window_config {
    int64_t limit;                   /* units per window, >= 1 */
    int64_t window_ns;               /* window length, >= 1 ns */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_fixed_window_config;

/* Defaults: limit 1, window 1 s, default allocator. */
void prs_fixed_window_config_init(prs_fixed_window_config *cfg);

/* prs_fixed_window (a prs_limiter) and its functions: PRS_LIMITER_TYPED_API
 * (prs_limiter.h). What they mean for this algorithm: */
PRS_LIMITER_TYPED_API(fixed_window)
/* PRS_OK or PRS_EINVAL (NULL, limit < 1, window_ns < 1). */

/* Makes an empty limiter in *out; on error *out is NULL and nothing is
 * allocated: PRS_EINVAL (see validate), PRS_ENOMEM. */

/* Asks for n (>= 1) at now_ns; counts it only when allowed. Thread-safe.
 * n > limit: denied with retry_after_ns == PRS_NEVER. A now_ns in a window
 * earlier than the one last counted is taken as that one (a clock going
 * backwards never opens a fresh window). PRS_OK with *d filled, or PRS_EINVAL
 * (n < 1, NULL arguments). */
/* The same decision without counting. */
/* Back to an empty window. */
/* Units still admissible in the window of now_ns, in [0, limit]. */

/* Changes limit and window_ns of a live limiter at now_ns (cfg's allocator is
 * ignored). Thread-safe: a concurrent decision sees the old or the new params,
 * never a mix. What is kept: the count of the window in force at now_ns. With
 * an unchanged window length it stays on that window; with a new length it is
 * carried into the new-aligned window holding now_ns (until that one ends).
 * A count at or above a lowered limit admits nothing until the window moves
 * on. PRS_OK, or the error prs_fixed_window_config_validate gives (PRS_EINVAL,
 * also for a NULL fw): then nothing changed. */

int64_t prs_fixed_window_limit(const prs_fixed_window *fw);
int64_t prs_fixed_window_window_ns(const prs_fixed_window *fw);

#ifdef __cplusplus
}
#endif
#endif
