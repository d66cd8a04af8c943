/*
 * prs_algo.h - limiter algorithms as descriptors over small, caller-owned
 * state, and the one table that lists them.
 *
 * An algorithm is only its descriptor: params, a state, and pure functions
 * over them. Where the state lives is the caller's business: a limiter object
 * (prs_limiter, limiter.c: params + one state + a lock, or a lock-free word),
 * a slot of a keyed table, a group's scratch. The caller serialises access to
 * each state (decide is not atomic); a descriptor may add a lock-free decision
 * for the limiter object (GCRA's compare-and-swap).
 *
 * PRS_ALGORITHMS is the algorithm table: the list of algorithms, their names,
 * the typed C API (prs_<c>_new ...), group members, the Python types and the
 * Redis name lookup all come from it. Adding an algorithm is its .c (the
 * descriptor prs_algo_<c>), its header (prs_<c>_config), one row here and its
 * tests.
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

struct prs_limiter;

typedef struct prs_algo {
    const char *name; /* the C name of its table row, e.g. "token_bucket" */
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
     * ignored) and makes params from it: PRS_OK, or PRS_EINVAL/PRS_ERANGE with
     * *why (when not NULL) naming the field and the reason (then `params` is
     * untouched). */
    int (*params_from_config)(const void *config, void *params, prs_config_error *why);
    /* The config (allocator NULL) that makes these params. */
    void (*config_from_params)(const void *params, void *config);
    /* Re-expresses at `now` a state kept under old_params as a state under
     * new_params, in new_state (state_size(new_params) bytes). new_state may be
     * `state` itself when both sizes are equal, else the two must not overlap.
     * What each algorithm keeps is documented at its prs_X_reconfigure. */
    void (*rebase)(const void *old_params, const void *state, const void *new_params,
                   void *new_state, int64_t now);

    /* ---- optional: a lock-free limiter object (NULL for spinlocked ones) ----
     * When set, the state is one int64 word (state_size 8) and a prs_limiter
     * of this algorithm decides without a lock: decide_lockfree reads the
     * params and the word consistently (the limiter's sequence counter) and
     * updates the word by compare-and-swap, waiting while the word holds
     * PRS__WORD_LOCKED (limiter_internal.h); every other access (reset, a
     * group) takes the word itself as the lock; it counts each consuming
     * decision (prs__limiter_count). reconfigure_lockfree changes
     * the params of such a limiter (validated new params) at now. */
    int (*decide_lockfree)(struct prs_limiter *lim, int64_t now, int64_t n, int consume,
                           prs_decision *d);
    void (*reconfigure_lockfree)(struct prs_limiter *lim, const void *new_params, int64_t now);
} prs_algo;

/* The algorithm table: X(c, Py, redis) per algorithm.
 *   c      its C name: prs_algo_<c>, prs_<c>_config, prs_<c>_new, ...
 *   Py     its Python class (pyresilience._core.<Py>)
 *   redis  the name of its Redis script ("" when there is none) */
#define PRS_ALGORITHMS(X)                                          \
    X(token_bucket, TokenBucket, "token_bucket")                   \
    X(gcra, GCRA, "gcra")                                          \
    X(leaky_bucket, LeakyBucket, "")                               \
    X(fixed_window, FixedWindow, "fixed_window")                   \
    X(sliding_log, SlidingWindowLog, "sliding_window_log")         \
    X(sliding_counter, SlidingWindowCounter, "sliding_window_counter")

#define PRS__ALGO_DECL(c, py, redis) extern const prs_algo prs_algo_##c;
PRS_ALGORITHMS(PRS__ALGO_DECL)
#undef PRS__ALGO_DECL

/* Each row's index: PRS_ALGO_ID_token_bucket, ... */
#define PRS__ALGO_ID(c, py, redis) PRS_ALGO_ID_##c,
typedef enum prs_algo_id { PRS_ALGORITHMS(PRS__ALGO_ID) PRS_ALGO__COUNT } prs_algo_id;
#undef PRS__ALGO_ID

typedef struct prs_algo_entry {
    const prs_algo *algo;
    const char *name;       /* the C name */
    const char *py_name;    /* the Python class name */
    const char *redis_name; /* "" when it has no Redis script */
} prs_algo_entry;

/* The table as data, indexed by prs_algo_id. */
extern const prs_algo_entry prs_algorithms[PRS_ALGO__COUNT];
/* The entry of `algo`, or NULL for a descriptor outside the table. */
const prs_algo_entry *prs_algo_entry_of(const prs_algo *algo);
/* The entry whose Redis script is named `name`, or NULL. */
const prs_algo_entry *prs_algo_by_redis_name(const char *name);
/* Validates an algorithm's config: PRS_OK, or PRS_EINVAL/PRS_ERANGE with *why
 * (may be NULL) naming the field and the reason. */
int prs_algo_validate(const prs_algo *algo, const void *config, prs_config_error *why);

#ifdef __cplusplus
}
#endif
#endif
