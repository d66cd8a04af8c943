/*
 * prs_algo.h - limiter algorithms as descriptors over small, caller-owned state.
 *
 * A limiter object (prs_gcra, prs_token_bucket, ...) is params + one state +
 * its own synchronisation. Containers that keep many states - a keyed table,
 * a group - use the same algorithm through this descriptor: the params come
 * from a template object (prs_X_params()), the state lives in the container,
 * and the container serialises access to each state (decide is not atomic).
 *
 * Every algorithm's state is plain old data, at most PRS_ALGO_MAX_INLINE_STATE
 * bytes unless state_size() says otherwise (the sliding log keeps a ring).
 */
#ifndef PRS_ALGO_H
#define PRS_ALGO_H

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PRS_ALGO_MAX_INLINE_STATE 24

typedef struct prs_algo {
    const char *name;
    /* Bytes of state for these params (a constant for most algorithms). */
    size_t (*state_size)(const void *params);
    /* A fresh state: full bucket / empty window. */
    void (*state_init)(const void *params, void *state);
    /* Decide for n at now; when consume and allowed, update state. Same contract
     * as prs_X_check/peek. Caller holds exclusive access to `state`. */
    int (*decide)(const void *params, void *state, int64_t now, int64_t n, int consume,
                  prs_decision *d);
    /* Give back n that this state admitted at or before now (a group rolling
     * back). Best effort, never exceeds a fresh state. */
    void (*refund)(const void *params, void *state, int64_t now, int64_t n);
    /* 1 if at `now` the state is indistinguishable from a fresh one (evictable). */
    int (*is_fresh)(const void *params, const void *state, int64_t now);
    /* Requests of weight 1 admissible at now. */
    double (*available)(const void *params, const void *state, int64_t now);
} prs_algo;

extern const prs_algo prs_algo_gcra;
extern const prs_algo prs_algo_token_bucket;
extern const prs_algo prs_algo_leaky_bucket, prs_algo_fixed_window, prs_algo_sliding_log,
    prs_algo_sliding_counter;

#ifdef __cplusplus
}
#endif
#endif
