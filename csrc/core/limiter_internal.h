/*
 * limiter_internal.h - the layout of a prs_limiter, for limiter.c, the
 * algorithms with a lock-free decide (gcra.c) and groups (group.c); not
 * installed (no prs_ prefix, so `make headers` leaves it out).
 */
#ifndef PRS_LIMITER_INTERNAL_H
#define PRS_LIMITER_INTERNAL_H

#include "counter_internal.h"
#include "prs_internal.h"
#include "prs_limiter.h"

/* The value the word of a lock-free limiter holds while someone holds it as
 * a lock (a group, a reset, a reconfiguration). Never a real state: an
 * algorithm computing it stores the next value instead (for GCRA's tat, one
 * nanosecond later: conservative). */
#define PRS__WORD_LOCKED (INT64_MIN + 1)

/* Two cache lines apart: what every decision only reads (the descriptor, the
 * params' address, the sequence counter) and what decisions write (the lock,
 * the word). A write to the lock or the word then never evicts the other
 * callers' copy of the read-mostly line; the params follow the struct on a
 * line of their own (limiter.c aligns the allocation to PRS__LINE). */
#define PRS__LINE 64
struct prs_limiter {
    /* ---- read by every decision, written only by a reconfiguration ---- */
    /* Lock-free algorithms: even while the params are stable, odd while a
     * reconfiguration (holding the word) writes them. */
    _Atomic uint64_t seq;
    const prs_algo *algo;
    void *params;        /* algo->params_size bytes after this struct */
    void *state;         /* spinlocked: state_size(params) bytes, inline after the
                            params or own_state; lock-free: &word */
    void *own_state;     /* a state block of its own once a reconfiguration changed
                            the state's size; NULL while the inline one serves */
    void *block;         /* what the allocator returned (this struct is aligned in it) */
    prs_allocator alloc;
    /* Where the lock-free word and `seq` live: this object's own fields, or
     * the shared block (`shm`) of a limiter placed in a region (shm_limiter.c:
     * then `region` is referenced, params point into it, `state` is NULL and
     * the decisions go through the block's pid lock and double buffer). */
    _Atomic int64_t *wordp;
    _Atomic uint64_t *seqp;
    struct prs__shm_lim *shm;
    struct prs_shm *region;
    /* ---- written by decisions ---- */
    /* Spinlocked algorithms: guards `state`, the params and `own_state`. */
    _Alignas(PRS__LINE) prs__spinlock lock;
    /* Lock-free algorithms: the state, or PRS__WORD_LOCKED while held. */
    _Atomic int64_t word;
    /* Spinlocked algorithms in this process: the consuming decisions that
     * admitted / refused, written under `lock` (a relaxed load and store on
     * the line the lock already owns), read with relaxed loads. */
    _Atomic uint64_t admitted, rejected;
    /* Lock-free algorithms and limiters placed in a region: the same two
     * counts (PRS__LIM_ADMITTED, PRS__LIM_REJECTED), striped per thread: no
     * lock to count under, and no line every caller writes. */
    prs__stripes counts;
};
#define PRS__LIM_ADMITTED 0
#define PRS__LIM_REJECTED 1

/* The shared part of a limiter placed in a region: position-independent (no
 * pointer), followed by the params (params_size, 16-byte aligned), their undo
 * copy (a reconfiguration's journal), the state (state_size: 0 for a
 * lock-free algorithm, whose state is `word`) and its undo copy (undo_size:
 * the bytes of the state a decision or a reconfiguration overwrites while
 * they are live; shm_limiter.c). */
#define PRS__SHM_LIM_MAGIC 0x4c4d4c5350525333ull
typedef struct prs__shm_lim {
    _Atomic int32_t lock;     /* a prs__pidlock: 0 or the holder's pid */
    _Atomic uint32_t dirty;   /* what a holder is writing (PRS__J_*): how to undo it */
    _Atomic int64_t word;     /* lock-free algorithms' state */
    _Atomic uint64_t seq;     /* even while the params are stable (a reconfiguration) */
    uint64_t magic;
    uint64_t params_size, state_size, undo_size;
    unsigned char pad[8];
    /* ---- journal words (under `lock`) ---- */
    int64_t undo_word;        /* `word` before a reconfiguration or a group took it */
    int64_t redo_word;        /* a group's new `word`, once its transaction commits */
    unsigned char pad2[48];
} prs__shm_lim;
_Static_assert(sizeof(prs__shm_lim) == 128, "two lines");

/* `dirty` values: nothing pending; a decision or reset (undo: undo_size bytes
 * of the state); a reconfiguration (undo: the params, the state, the word);
 * PRS__J_GROUP + slot: a group's transaction in that slot of the region's
 * group journal (shm_group.c), kept when the slot committed, else undone. */
enum { PRS__J_NONE = 0, PRS__J_DECIDE = 1, PRS__J_RECONF = 2, PRS__J_GROUP = 16 };

/* sliding_log.c: the bytes of its state a decision overwrites while live (its
 * header; appended entries go to free slots of the ring). */
extern const size_t prs__sliding_log_undo_bytes;

/* shm_limiter.c: a placed limiter's decide, reset and read. */
int prs__shm_limiter_decide(prs_limiter *lim, int64_t now, int64_t n, int consume,
                            prs_decision *d);
void prs__shm_limiter_reset(prs_limiter *lim);
double prs__shm_limiter_read(prs_limiter *lim, int64_t now,
                             double (*fn)(const void *params, const void *state, int64_t now));
void prs__shm_limiter_release(prs_limiter *lim);
int prs__shm_limiter_reconfigure(prs_limiter *lim, const void *new_params, int64_t now,
                                 prs_config_error *why);
void prs__shm_limiter_config(const prs_limiter *lim, void *params_out);
/* A lock-free decision that finds the word held for long asks whether its
 * holder died (and if so undoes what it was doing); cheap when alive. */
void prs__shm_limiter_poke(prs_limiter *lim);
/* The pid lock of the block with recovery (shm_limiter.c, for shm_group.c):
 * whatever a dead holder left half-done is undone or finished. */
void prs__shm_lim_lock(struct prs__shm_lim *s, struct prs_shm *region);
void prs__shm_lim_unlock(struct prs__shm_lim *s);
unsigned char *prs__shm_lim_state(struct prs__shm_lim *s);
unsigned char *prs__shm_lim_undo(struct prs__shm_lim *s);

/* A decide's `consume` with this bit too: the caller reads only d->allowed (a
 * descriptor may leave the other fields unset). Every descriptor's decide
 * takes `consume` as a truth value; a limiter object passes the bit to
 * lock-free descriptors only, a group (prs_group_allow) to every member. */
#define PRS__DECIDE_BARE 2

/* Counts one consuming decision of a lock-free or placed limiter (striped:
 * no lock, no shared line). */
static inline void prs__limiter_count(prs_limiter *lim, int allowed) {
    prs__stripes_add(&lim->counts, allowed ? PRS__LIM_ADMITTED : PRS__LIM_REJECTED, 1);
}

static inline int prs__limiter_lockfree(const prs_limiter *lim) {
    return lim->algo->decide_lockfree != NULL;
}

/* Lock-free limiters: takes the word (waiting while someone else holds it)
 * and returns the state it held; prs__word_unlock stores the new state. */
int64_t prs__word_lock(prs_limiter *lim);
void prs__word_unlock(prs_limiter *lim, int64_t state);
/* The word, waiting while it is held. */
int64_t prs__word_load(prs_limiter *lim);
/* A copy of the params consistent under `seq` (lock-free limiters), word by
 * word with atomic loads; the params' size is a multiple of 8. */
void prs__seq_params_load(const prs_limiter *lim, void *out);

/* Runs fn on a consistent (params, state) of lim at now: a reading that is
 * not one of the descriptor's (e.g. a leaky bucket's level). */
double prs__limiter_read(prs_limiter *lim, int64_t now,
                         double (*fn)(const void *params, const void *state, int64_t now));

/* ---- the window algorithms' params (fixed window, sliding log, sliding counter) */

typedef struct prs__window_params {
    int64_t limit;      /* 1..the algorithm's largest */
    int64_t window_ns;  /* >= 1 */
} prs__window_params;

/* Defines prs_<c>_config_init of a window algorithm: 1 per second. */
#define PRS__WINDOW_CONFIG_INIT(c)                                                            \
    void prs_##c##_config_init(prs_##c##_config *cfg) {                                       \
        cfg->limit = 1;                                                                       \
        cfg->window_ns = PRS_NS_PER_SEC;                                                      \
        cfg->allocator = NULL;                                                                \
    }

/* The start of the aligned window of width w (>= 1) holding `now` (floor
 * division, saturating). */
static inline int64_t prs__align_down(int64_t now, int64_t w) {
    int64_t mod = now % w;
    if (mod < 0) mod += w;
    return prs__sat_sub(now, mod);
}

/* ns from now until start + off (>= 0), or PRS_NEVER if start + off passes
 * INT64_MAX (a window's end, an entry's expiry). */
static inline int64_t prs__ns_until(int64_t start, int64_t off, int64_t now) {
    int64_t at;
    if (__builtin_add_overflow(start, off, &at)) return PRS_NEVER;
    return prs__max64(0, prs__sat_sub(at, now));
}

/* Validates limit (1..max_limit; above: max_reason) and window_ns (>= 1) and
 * fills *p: PRS_OK, or PRS_EINVAL/PRS_ERANGE with *why (*p untouched). */
int prs__window_params_make(int64_t limit, int64_t window_ns, int64_t max_limit,
                            const char *max_reason, prs__window_params *p, prs_config_error *why);

/* The descriptor's params_from_config / config_from_params of a window
 * algorithm whose config type `cfg` is {limit, window_ns, allocator}. */
#define PRS__WINDOW_CONFIG_FNS(cfg, max_limit, max_reason)                                    \
    static int algo_params_from_config(const void *config, void *params,                      \
                                       prs_config_error *why) {                               \
        const cfg *c = config;                                                                \
        return prs__window_params_make(c->limit, c->window_ns, max_limit, max_reason, params, \
                                       why);                                                  \
    }                                                                                         \
    PRS__ALGO_CONFIG_FROM(prs__window_params, cfg, limit, limit, window_ns, window_ns)

/* ---- the descriptor glue (each algorithm file, under its descriptor) ----
 * The algorithm file writes its logic over typed params/state; these define
 * the void-pointer adapters the prs_algo table calls. They expand in the file
 * itself, so the compiler inlines the typed function into the adapter (the
 * decide adapter is on the hot path). */

/* algo_state_size: a fixed-size state of type `st`. */
#define PRS__ALGO_FIXED_STATE(st)                                                             \
    static size_t algo_state_size(const void *params) {                                       \
        (void)params;                                                                         \
        return sizeof(st);                                                                    \
    }

/* algo_state_init over `fn(s)` (a fresh state that needs no params). */
#define PRS__ALGO_STATE_INIT_BY(fn)                                                           \
    static void algo_state_init(const void *params, void *state) {                            \
        (void)params;                                                                         \
        fn(state);                                                                            \
    }

/* algo_available over `fn(p, s, now)`. */
#define PRS__ALGO_AVAILABLE_BY(fn)                                                            \
    static double algo_available(const void *params, const void *state, int64_t now) {       \
        return fn(params, state, now);                                                        \
    }

/* algo_config_from_params: the config type `cfg` (with cfg##_init) whose
 * fields f1 and f2 are the params' (of type `pt`) fields p1 and p2. */
#define PRS__ALGO_CONFIG_FROM(pt, cfg, f1, p1, f2, p2)                                        \
    static void algo_config_from_params(const void *params, void *config) {                   \
        const pt *p = params;                                                                 \
        cfg *c = config;                                                                      \
        cfg##_init(c);                                                                        \
        c->f1 = p->p1;                                                                        \
        c->f2 = p->p2;                                                                        \
    }

/* algo_decide over `fn(p, s, now, n, consume, d)` (void: it always decides). */
#define PRS__ALGO_DECIDE_BY(fn)                                                               \
    static int algo_decide(const void *params, void *state, int64_t now, int64_t n,           \
                           int consume, prs_decision *d) {                                    \
        if (!params || !state || !d || n < 1) return PRS_EINVAL;                              \
        fn(params, state, now, n, consume, d);                                                \
        return PRS_OK;                                                                        \
    }

/* algo_rebase over `fn(op, s, np, out, now)`. */
#define PRS__ALGO_REBASE_BY(fn)                                                               \
    static void algo_rebase(const void *old_params, const void *state,                        \
                            const void *new_params, void *new_state, int64_t now) {           \
        fn(old_params, state, new_params, new_state, now);                                    \
    }

/* algo_params_from_config over `fn(cfg, p, why)`. */
#define PRS__ALGO_PARAMS_BY(fn)                                                               \
    static int algo_params_from_config(const void *config, void *params,                      \
                                       prs_config_error *why) {                               \
        return fn(config, params, why);                                                       \
    }

/* `const prs_algo prs_algo_<c>` from the file's algo_* functions; params of
 * type `pt`; lockfree/lockfree_reconf NULL for a spinlocked algorithm. */
#define PRS__ALGO_DESCRIPTOR(c, pt, lockfree, lockfree_reconf)                                \
    const prs_algo prs_algo_##c = {                                                           \
        #c, algo_state_size, algo_state_init, algo_decide, algo_refund, algo_is_fresh,        \
        algo_available, sizeof(pt), algo_params_from_config, algo_config_from_params,         \
        algo_rebase, lockfree, lockfree_reconf,                                               \
    };

/* Defines `type prs_<c>_<name>(const prs_<c> *x)`: a config field of the
 * params in force (read consistently). */
#define PRS__LIMITER_GETTER(c, type, name, field)                                             \
    type prs_##c##_##name(const prs_##c *x) {                                                 \
        prs_##c##_config cfg;                                                                 \
        prs_limiter_config((const prs_limiter *)x, &cfg);                                     \
        return cfg.field;                                                                     \
    }

/* The getters of a window algorithm: prs_<c>_limit and prs_<c>_window_ns. */
#define PRS__WINDOW_GETTERS(c)                                                                \
    PRS__LIMITER_GETTER(c, int64_t, limit, limit)                                             \
    PRS__LIMITER_GETTER(c, int64_t, window_ns, window_ns)

/* Defines the typed API (PRS_LIMITER_TYPED_API) of table row c. */
#define PRS__LIMITER_TYPED_IMPL(c)                                                            \
    int prs_##c##_config_validate_why(const prs_##c##_config *cfg, prs_config_error *why) {   \
        return prs_algo_validate(&prs_algo_##c, cfg, why);                                    \
    }                                                                                         \
    int prs_##c##_config_validate(const prs_##c##_config *cfg) {                              \
        return prs_algo_validate(&prs_algo_##c, cfg, NULL);                                   \
    }                                                                                         \
    int prs_##c##_new(const prs_##c##_config *cfg, prs_##c **out) {                           \
        if (!out) return PRS_EINVAL;                                                          \
        prs_limiter *lim = NULL;                                                              \
        int rc = prs_limiter_new(&prs_algo_##c, cfg, cfg ? cfg->allocator : NULL, &lim, NULL); \
        *out = (prs_##c *)lim;                                                                \
        return rc;                                                                            \
    }                                                                                         \
    void prs_##c##_free(prs_##c *x) { prs_limiter_free((prs_limiter *)x); }                   \
    int prs_##c##_check(prs_##c *x, int64_t now_ns, int64_t n, prs_decision *d) {             \
        return prs_limiter_decide((prs_limiter *)x, now_ns, n, 1, d);                         \
    }                                                                                         \
    int prs_##c##_peek(prs_##c *x, int64_t now_ns, int64_t n, prs_decision *d) {              \
        return prs_limiter_decide((prs_limiter *)x, now_ns, n, 0, d);                         \
    }                                                                                         \
    void prs_##c##_reset(prs_##c *x) { prs_limiter_reset((prs_limiter *)x); }                 \
    double prs_##c##_available(prs_##c *x, int64_t now_ns) {                                  \
        return prs_limiter_available((prs_limiter *)x, now_ns);                               \
    }                                                                                         \
    int prs_##c##_reconfigure(prs_##c *x, const prs_##c##_config *cfg, int64_t now_ns) {      \
        return prs_limiter_reconfigure((prs_limiter *)x, cfg, now_ns, NULL);                  \
    }                                                                                         \
    const void *prs_##c##_params(const prs_##c *x) {                                          \
        return prs_limiter_params((const prs_limiter *)x);                                    \
    }                                                                                         \
    prs_limiter *prs_##c##_limiter(prs_##c *x) { return (prs_limiter *)x; }

#endif /* PRS_LIMITER_INTERNAL_H */
