/*
 * test_limiter_family.h - helpers shared by the C tests of the leaky bucket,
 * fixed window, sliding log and sliding counter (test_leaky_bucket.c, ...).
 *
 * Each limiter is a prs_limiter (its typed handle converts), so the same
 * checks run on all four through the one limiter API: decision sanity, exactness of retry_after (on a copy of a
 * descriptor state, so probing the future never disturbs the run), threads
 * with a frozen clock, and "the object and its descriptor decide alike".
 */
#ifndef TEST_LIMITER_FAMILY_H
#define TEST_LIMITER_FAMILY_H

#include "prs_test.h"

#include "prs_algo.h"
#include "prs_limiter.h"

#include <pthread.h>
#include <stdatomic.h>

#define LF_SEC PRS_NS_PER_SEC
#define LF_MS PRS_NS_PER_MS

/* Which algorithm a test drives; the object is any typed handle of it. */
typedef struct lf_ops {
    const prs_algo *algo;
} lf_ops;

static inline prs_decision lf_check(const lf_ops *o, void *obj, int64_t now, int64_t n) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    (void)o;
    ASSERT_OK(prs_limiter_check(obj, now, n, &d));
    return d;
}

static inline prs_decision lf_peek(const lf_ops *o, void *obj, int64_t now, int64_t n) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    (void)o;
    ASSERT_OK(prs_limiter_peek(obj, now, n, &d));
    return d;
}

/* The shape every decision has, whatever the state. */
static inline void lf_sane(const prs_decision *d, int64_t limit) {
    ASSERT(d->allowed == 0 || d->allowed == 1);
    ASSERT_EQ_I64(d->limit, limit);
    ASSERT_GE_I64(d->remaining, 0);
    ASSERT_LE_I64(d->remaining, limit);
    ASSERT_GE_I64(d->retry_after_ns, 0);
    ASSERT_GE_I64(d->reset_after_ns, 0);
    if (d->allowed) ASSERT_EQ_I64(d->retry_after_ns, 0);
    else ASSERT_GT_I64(d->retry_after_ns, 0);
}

/* ---- a descriptor state on the heap ------------------------------------ */

typedef struct lf_state {
    const prs_algo *algo;
    const void *params;
    size_t size;
    void *buf;
} lf_state;

static inline void lf_state_make(lf_state *s, const prs_algo *algo, const void *params) {
    s->algo = algo;
    s->params = params;
    s->size = algo->state_size(params);
    s->buf = malloc(s->size);
    ASSERT(s->buf != NULL);
    algo->state_init(params, s->buf);
}
static inline void lf_state_free(lf_state *s) { free(s->buf); s->buf = NULL; }

static inline prs_decision lf_sdecide(lf_state *s, int64_t now, int64_t n, int consume) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(s->algo->decide(s->params, s->buf, now, n, consume, &d));
    return d;
}

/* Decides on a throwaway copy of the state (probing the future is harmless). */
static inline prs_decision lf_sprobe(const lf_state *s, int64_t now, int64_t n) {
    void *copy = malloc(s->size);
    ASSERT(copy != NULL);
    memcpy(copy, s->buf, s->size);
    prs_decision d;
    ASSERT_OK(s->algo->decide(s->params, copy, now, n, 0, &d));
    free(copy);
    return d;
}

/* A denial at t with retry r: denied at t + r - 1 and t + r/2, admitted at t + r. */
static inline void lf_assert_exact(const lf_state *s, int64_t t, int64_t n, int64_t r) {
    ASSERT_GT_I64(r, 0);
    ASSERT(r != PRS_NEVER);
    ASSERT(!lf_sprobe(s, t + r - 1, n).allowed);
    ASSERT(!lf_sprobe(s, t + r / 2, n).allowed);
    ASSERT(lf_sprobe(s, t + r, n).allowed);
    ASSERT_EQ_I64(lf_sprobe(s, t + r - 1, n).retry_after_ns, 1);
}

/* The fields of d (just decided at now, consuming) describe the state left:
 * exactly d->remaining more units fit at now, and after reset_after the whole
 * limit fits again (not one ns earlier when `exact_reset`). */
static inline void lf_assert_consistent(const lf_state *s, int64_t now, const prs_decision *d,
                                        int exact_reset) {
    if (d->remaining > 0) ASSERT(lf_sprobe(s, now, d->remaining).allowed);
    ASSERT(!lf_sprobe(s, now, d->remaining + 1).allowed);
    if (d->reset_after_ns == PRS_NEVER) return;
    ASSERT(lf_sprobe(s, now + d->reset_after_ns, d->limit).allowed);
    if (exact_reset && d->reset_after_ns > 0)
        ASSERT(!lf_sprobe(s, now + d->reset_after_ns - 1, d->limit).allowed);
}

/* ---- random numbers ----------------------------------------------------- */

static inline uint64_t lf_rng(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}
static inline int64_t lf_range(uint64_t *s, int64_t lo, int64_t hi) { /* [lo, hi] */
    return lo + (int64_t)(lf_rng(s) % (uint64_t)(hi - lo + 1));
}

/* ---- the object and its descriptor decide alike -------------------------- */

/* Runs the same random schedule (monotone time, some steps back) on the object
 * and on a descriptor state made from its params; decisions must be equal.
 * Every denial is checked for exactness on the descriptor state, and every
 * decision's remaining/reset_after against the state it leaves. */
static inline void lf_object_matches_descriptor(const lf_ops *o, void *obj, int64_t max_n,
                                                int64_t max_dt, uint64_t seed, int steps,
                                                int exact_reset) {
    lf_state s;
    ASSERT(prs_limiter_algo(obj) == o->algo);
    lf_state_make(&s, o->algo, prs_limiter_params(obj));
    int64_t t = 1000 * LF_SEC;
    for (int i = 0; i < steps; i++) {
        t += lf_range(&seed, 0, max_dt);
        int64_t now = (lf_range(&seed, 0, 9) == 0) ? t - lf_range(&seed, 0, max_dt) : t;
        int64_t n = lf_range(&seed, 1, max_n);
        prs_decision a = lf_check(o, obj, now, n);
        prs_decision pk = lf_sprobe(&s, now, n);
        prs_decision b = lf_sdecide(&s, now, n, 1);
        ASSERT_EQ_I64(a.allowed, b.allowed);
        ASSERT_EQ_I64(pk.allowed, b.allowed);
        ASSERT_EQ_I64(pk.retry_after_ns, b.retry_after_ns);
        ASSERT_EQ_I64(a.remaining, b.remaining);
        ASSERT_EQ_I64(a.retry_after_ns, b.retry_after_ns);
        ASSERT_EQ_I64(a.reset_after_ns, b.reset_after_ns);
        ASSERT_NEAR(prs_limiter_available(obj, now), s.algo->available(s.params, s.buf, now), 1e-6);
        lf_sane(&a, a.limit);
        if (!b.allowed && b.retry_after_ns != PRS_NEVER && now == t)
            lf_assert_exact(&s, now, n, b.retry_after_ns);
        if (now == t) lf_assert_consistent(&s, now, &b, exact_reset);
    }
    lf_state_free(&s);
}

/* ---- threads with a frozen clock ---------------------------------------- */

typedef struct lf_thread_arg {
    const lf_ops *o;
    void *obj;
    int64_t now;
    int iters;
    atomic_long *admitted;
    atomic_int *go;
} lf_thread_arg;

static void *lf_thread_main(void *p) {
    lf_thread_arg *a = p;
    while (!atomic_load(a->go)) {}
    long mine = 0;
    for (int i = 0; i < a->iters; i++) {
        prs_decision d;
        if (prs_limiter_check(a->obj, a->now, 1, &d) == PRS_OK && d.allowed) mine++;
    }
    atomic_fetch_add(a->admitted, mine);
    return NULL;
}

/* nthreads x iters checks of weight 1 at a frozen `now`: returns how many
 * were admitted. */
static inline long lf_hammer(const lf_ops *o, void *obj, int64_t now, int nthreads, int iters) {
    pthread_t th[16];
    lf_thread_arg args[16];
    atomic_long admitted = 0;
    atomic_int go = 0;
    ASSERT(nthreads <= 16);
    for (int i = 0; i < nthreads; i++) {
        args[i] = (lf_thread_arg){o, obj, now, iters, &admitted, &go};
        ASSERT_EQ_I64(pthread_create(&th[i], NULL, lf_thread_main, &args[i]), 0);
    }
    atomic_store(&go, 1);
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    return atomic_load(&admitted);
}

#endif /* TEST_LIMITER_FAMILY_H */
