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
/* Every algorithm's config struct (prs_X_config) fits in this many bytes. */
#define PRS_ALGO_MAX_CONFIG 128

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

    /* ---- changing the params of live states (prs_keyed_reconfigure; each
     * object's prs_X_reconfigure runs the same code on its own state) ---- */
    /* Bytes of a params block. */
    size_t params_size;
    /* Validates `config` (the algorithm's prs_X_config; its allocator is
     * ignored) and makes params from it: PRS_OK, or the error code
     * prs_X_config_validate gives (then `params` is untouched). */
    int (*params_from_config)(const void *config, void *params);
    /* The config (allocator NULL) that makes these params. */
    void (*config_from_params)(const void *params, void *config);
    /* Re-expresses at `now` a state kept under old_params as a state under
     * new_params, in new_state (state_size(new_params) bytes). new_state may be
     * `state` itself when both sizes are equal, else the two must not overlap.
     * What each algorithm keeps is documented at its prs_X_reconfigure. */
    void (*rebase)(const void *old_params, const void *state, const void *new_params,
                   void *new_state, int64_t now);
} prs_algo;

extern const prs_algo prs_algo_gcra;
extern const prs_algo prs_algo_token_bucket;
extern const prs_algo prs_algo_leaky_bucket, prs_algo_fixed_window, prs_algo_sliding_log,
    prs_algo_sliding_counter;

#ifdef __cplusplus
}
#endif
#endif
