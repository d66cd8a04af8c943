/*
 * test_common.c - what every module leans on: the status list and its
 * strings, seconds -> nanoseconds conversion, the monotonic clock, the
 * default allocator.
 */
#include "prs_test.h"

#include <limits.h>
#include <stdint.h>

/* ---- status codes ------------------------------------------------------ */

TEST(common_strerror_every_code) {
    int count = 0;
#define XX(name, value, msg)                                                 \
    ASSERT_EQ_I64(PRS_##name, value);                                        \
    ASSERT_STREQ(prs_strerror(PRS_##name), msg);                             \
    ASSERT_STREQ(prs_err_name(PRS_##name), "PRS_" #name);                    \
    count++;
    PRS_ERRNO_MAP(XX)
#undef XX
    ASSERT_EQ_I64(count, 16);
    ASSERT_STREQ(prs_strerror(PRS_OK), "success");
    ASSERT_STREQ(prs_err_name(PRS_EINVAL), "PRS_EINVAL");
    ASSERT_STREQ(prs_err_name(PRS_ENEVER), "PRS_ENEVER");
    ASSERT_STREQ(prs_err_name(PRS_EBACKENDCLOSED), "PRS_EBACKENDCLOSED");
}

TEST(common_status_codes_stable_and_distinct) {
    /* Numbers never move: the codes still in use keep theirs, and the ones
     * that went out of use leave a hole that reads as unknown. */
    ASSERT_EQ_I64(PRS_ENOTSUP, -10);
    ASSERT_EQ_I64(PRS_EBACKEND, -11);
    ASSERT_EQ_I64(PRS_ESTATE, -14);
    ASSERT_EQ_I64(PRS_ECONN, -16);
    ASSERT_EQ_I64(PRS_ENEVER, -17);
    ASSERT_EQ_I64(PRS_EBACKENDCLOSED, -18);
    const int retired[] = {-9, -13, -15};
    for (size_t i = 0; i < sizeof retired / sizeof retired[0]; i++) {
        ASSERT_STREQ(prs_err_name(retired[i]), "PRS_UNKNOWN");
        ASSERT_STREQ(prs_strerror(retired[i]), "unknown status");
    }
    /* Every listed code is in (PRS__STATUS_MIN, 0] and has a name of its own. */
    int codes[] = {
#define XX(name, value, msg) value,
        PRS_ERRNO_MAP(XX)
#undef XX
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        ASSERT(codes[i] <= 0 && codes[i] > PRS__STATUS_MIN);
        for (size_t j = i + 1; j < n; j++) {
            ASSERT(codes[i] != codes[j]);
            ASSERT(strcmp(prs_err_name(codes[i]), prs_err_name(codes[j])) != 0);
        }
    }
}

TEST(common_strerror_unknown) {
    const int unknown[] = {1, 2, 100, PRS__STATUS_MIN, PRS__STATUS_MIN - 1, -1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ASSERT_STREQ(prs_strerror(unknown[i]), "unknown status");
        ASSERT_STREQ(prs_err_name(unknown[i]), "PRS_UNKNOWN");
    }
}

/* ---- seconds to nanoseconds -------------------------------------------- */

TEST(common_seconds_to_ns_exact) {
    ASSERT_EQ_I64(prs_seconds_to_ns(0.0), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(-0.0), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(1.0), PRS_NS_PER_SEC);
    ASSERT_EQ_I64(prs_seconds_to_ns(-1.0), -PRS_NS_PER_SEC);
    ASSERT_EQ_I64(prs_seconds_to_ns(0.5), 500000000);
    ASSERT_EQ_I64(prs_seconds_to_ns(0.1), 100000000);
    ASSERT_EQ_I64(prs_seconds_to_ns(0.001), PRS_NS_PER_MS);
    ASSERT_EQ_I64(prs_seconds_to_ns(1e-6), PRS_NS_PER_US);
    ASSERT_EQ_I64(prs_seconds_to_ns(1e-9), 1);
    ASSERT_EQ_I64(prs_seconds_to_ns(86400.0), INT64_C(86400) * PRS_NS_PER_SEC);
    ASSERT_EQ_I64(prs_seconds_to_ns(1e9), INT64_C(1000000000) * PRS_NS_PER_SEC);
}

TEST(common_seconds_to_ns_rounds_to_nearest) {
    ASSERT_EQ_I64(prs_seconds_to_ns(0.4e-9), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(0.6e-9), 1);
    ASSERT_EQ_I64(prs_seconds_to_ns(1.4e-9), 1);
    ASSERT_EQ_I64(prs_seconds_to_ns(1.6e-9), 2);
    ASSERT_EQ_I64(prs_seconds_to_ns(-0.4e-9), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(-0.6e-9), -1);
    ASSERT_EQ_I64(prs_seconds_to_ns(-1.6e-9), -2);
    ASSERT_EQ_I64(prs_seconds_to_ns(2.5e-9), 3); /* 2.5000000000000004: up */
    ASSERT_EQ_I64(prs_seconds_to_ns(1e-12), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(5e-324), 0); /* smallest subnormal */
}

TEST(common_seconds_to_ns_saturates) {
    ASSERT_EQ_I64(prs_seconds_to_ns(NAN), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(-NAN), 0);
    ASSERT_EQ_I64(prs_seconds_to_ns(INFINITY), INT64_MAX);
    ASSERT_EQ_I64(prs_seconds_to_ns(-INFINITY), INT64_MIN);
    ASSERT_EQ_I64(prs_seconds_to_ns(1e300), INT64_MAX);
    ASSERT_EQ_I64(prs_seconds_to_ns(-1e300), INT64_MIN);
    ASSERT_EQ_I64(prs_seconds_to_ns(1e10), INT64_MAX);
    ASSERT_EQ_I64(prs_seconds_to_ns(-1e10), INT64_MIN);
    /* 2^63 ns exactly is one past INT64_MAX: saturates. */
    ASSERT_EQ_I64(prs_seconds_to_ns(9223372036.854775808), INT64_MAX);
    ASSERT_EQ_I64(prs_seconds_to_ns(-9223372036.854775808), INT64_MIN);
    /* Just inside the range: a finite value, positive and below the limit,
     * converted without undefined behaviour (UBSan checks the cast). */
    int64_t big = prs_seconds_to_ns(9223372036.0);
    ASSERT_GT_I64(big, INT64_C(9223372035) * PRS_NS_PER_SEC);
    ASSERT_LT_I64(big, INT64_MAX);
    int64_t small = prs_seconds_to_ns(-9223372036.0);
    ASSERT_LT_I64(small, INT64_C(-9223372035) * PRS_NS_PER_SEC);
    ASSERT_GT_I64(small, INT64_MIN);
    /* Monotone and odd over a sweep of magnitudes (1e-12 s .. 1e11 s). */
    int64_t prev = -1;
    for (double m = 1e-12; m < 1e11; m *= 3.0) {
        int64_t ns = prs_seconds_to_ns(m);
        ASSERT_GE_I64(ns, prev);
        ASSERT_EQ_I64(prs_seconds_to_ns(-m), ns == INT64_MAX ? INT64_MIN : -ns);
        prev = ns;
    }
    ASSERT_EQ_I64(prev, INT64_MAX);
}

/* ---- the clock ---------------------------------------------------------- */

TEST(common_monotonic_non_decreasing) {
    int64_t prev = prs_monotonic_ns();
    ASSERT_GT_I64(prev, 0);
    for (int i = 0; i < 100000; i++) {
        int64_t now = prs_monotonic_ns();
        ASSERT_GE_I64(now, prev);
        prev = now;
    }
}

TEST(common_sleep_ns_waits) {
    int64_t t0 = prs_monotonic_ns();
    prs_sleep_ns(2 * PRS_NS_PER_MS);
    int64_t t1 = prs_monotonic_ns();
    /* A lower bound only (behaviour, not timing): the sleep is at least as long
     * as asked. Zero and negative durations return at once. */
    ASSERT_GE_I64(t1 - t0, 2 * PRS_NS_PER_MS);
    prs_sleep_ns(0);
    prs_sleep_ns(-1);
    prs_sleep_ns(INT64_MIN);
}

/* ---- the default allocator ---------------------------------------------- */

TEST(common_default_allocator) {
    const prs_allocator *a = prs_default_allocator();
    ASSERT(a != NULL);
    ASSERT(a == prs_default_allocator());
    ASSERT(a->malloc_fn && a->calloc_fn && a->realloc_fn && a->free_fn);

    unsigned char *p = a->malloc_fn(a->ctx, 64);
    ASSERT(p != NULL);
    memset(p, 0xAB, 64);
    p = a->realloc_fn(a->ctx, p, 4096);
    ASSERT(p != NULL);
    ASSERT_EQ_I64(p[63], 0xAB);
    a->free_fn(a->ctx, p);
    a->free_fn(a->ctx, NULL); /* NULL-safe */

    unsigned char *z = a->calloc_fn(a->ctx, 16, 8);
    ASSERT(z != NULL);
    for (int i = 0; i < 128; i++) ASSERT_EQ_I64(z[i], 0);
    a->free_fn(a->ctx, z);

    /* Zero sizes still give a block that can be freed. */
    void *m0 = a->malloc_fn(a->ctx, 0);
    void *c0 = a->calloc_fn(a->ctx, 0, 8);
    void *c1 = a->calloc_fn(a->ctx, 8, 0);
    ASSERT(m0 && c0 && c1);
    a->free_fn(a->ctx, m0);
    a->free_fn(a->ctx, c0);
    a->free_fn(a->ctx, c1);
}

TEST(common_default_calloc_overflow) {
    const prs_allocator *a = prs_default_allocator();
    ASSERT(a->calloc_fn(a->ctx, SIZE_MAX, 2) == NULL);
    ASSERT(a->calloc_fn(a->ctx, 2, SIZE_MAX) == NULL);
    ASSERT(a->calloc_fn(a->ctx, SIZE_MAX / 2 + 1, 2) == NULL);
    ASSERT(a->calloc_fn(a->ctx, (SIZE_MAX >> 16) + 1, (size_t)1 << 16) == NULL);
}

/* ---- the test allocator itself (the harness other tests trust) ---------- */

TEST(common_test_alloc_counts_and_fails) {
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, 2);
    void *a = ta.base.malloc_fn(ta.base.ctx, 8);
    void *b = ta.base.calloc_fn(ta.base.ctx, 2, 8);
    ASSERT(a && b);
    ASSERT_EQ_I64(ta.live, 2);
    ASSERT(ta.base.malloc_fn(ta.base.ctx, 8) == NULL);
    ASSERT(ta.base.realloc_fn(ta.base.ctx, NULL, 8) == NULL);
    ASSERT_EQ_I64(ta.live, 2);
    ta.base.free_fn(ta.base.ctx, a);
    ta.base.free_fn(ta.base.ctx, b);
    ta.base.free_fn(ta.base.ctx, NULL);
    ASSERT_EQ_I64(ta.live, 0);

    prs_test_alloc never;
    prs_test_alloc_init(&never, -1);
    void *r = never.base.realloc_fn(never.base.ctx, NULL, 8);
    r = never.base.realloc_fn(never.base.ctx, r, 64);
    ASSERT(r != NULL);
    ASSERT_EQ_I64(never.live, 1);
    never.base.free_fn(never.base.ctx, r);
    ASSERT_EQ_I64(never.live, 0);
    ASSERT(never.base.calloc_fn(never.base.ctx, SIZE_MAX, 2) == NULL);
}

/* Each row: a decision, then its headers' values (-1: left out), in the
 * order Limit, Remaining, Reset, Retry-After. */
TEST(common_decision_headers) {
    static const struct { prs_decision d; int64_t want[4]; } rows[] = {
        {{1, 10, 9, 0, 1}, {10, 9, 1, -1}},                            /* 1 ns resets in 1 s */
        {{0, 10, -2, 1500 * PRS_NS_PER_MS, 2 * PRS_NS_PER_SEC}, {10, 0, 2, 2}},
        {{0, 5, 0, PRS_NEVER, 3 * PRS_NS_PER_SEC}, {5, 0, -1, -1}},   /* never: no Reset either */
        {{1, 5, 4, 0, PRS_NEVER}, {5, 4, -1, -1}},
        {{0, 5, 0, PRS_NS_PER_SEC, PRS_NEVER}, {5, 0, -1, 1}},
    };
    static const char *const names[] = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                                        "Retry-After"};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *name[PRS_DECISION_HEADERS_MAX];
        int64_t value[PRS_DECISION_HEADERS_MAX];
        int n = prs_decision_headers(&rows[i].d, name, value), k = 0;
        for (int j = 0; j < 4; j++) {
            if (rows[i].want[j] < 0) continue;
            ASSERT(k < n);
            ASSERT_STREQ(name[k], names[j]);
            ASSERT(value[k] == rows[i].want[j]);
            k++;
        }
        ASSERT(k == n);
    }
}

/* ---- the core's locks under contention (prs_internal.h) ------------------ *
 * More threads than CPUs hammer one spinlock and one backoff mutex guarding
 * plain (non-atomic) counters: every slow-path branch (backoff, yield, block)
 * runs, and mutual exclusion must hold exactly (TSan checks the ordering). */
#include "prs_internal.h"

#include <pthread.h>

#define LOCK_THREADS 8
#define LOCK_ROUNDS 200000

typedef struct {
    prs__spinlock spin;
    pthread_mutex_t mu;
    int64_t spin_count, mu_count; /* plain: guarded by the locks */
    int64_t spin_inside, mu_inside, overlap;
} lock_shared;

static void *lock_main(void *p) {
    lock_shared *s = p;
    for (int i = 0; i < LOCK_ROUNDS; i++) {
        prs__spin_lock(&s->spin);
        if (s->spin_inside++) s->overlap++;
        s->spin_count++;
        s->spin_inside--;
        prs__spin_unlock(&s->spin);
        if (i % 4 == 0) {
            prs__mutex_lock(&s->mu);
            if (s->mu_inside++) s->overlap++;
            s->mu_count++;
            s->mu_inside--;
            pthread_mutex_unlock(&s->mu);
        }
    }
    return NULL;
}

TEST(common_locks_exclusive_under_contention) {
    static lock_shared s;
    prs__spin_init(&s.spin);
    ASSERT_EQ(pthread_mutex_init(&s.mu, NULL), 0);
    pthread_t th[LOCK_THREADS];
    for (int i = 0; i < LOCK_THREADS; i++) ASSERT_EQ(pthread_create(&th[i], NULL, lock_main, &s), 0);
    for (int i = 0; i < LOCK_THREADS; i++) pthread_join(th[i], NULL);
    ASSERT_EQ(s.spin_count, (int64_t)LOCK_THREADS * LOCK_ROUNDS);
    ASSERT_EQ(s.mu_count, (int64_t)LOCK_THREADS * (LOCK_ROUNDS / 4));
    ASSERT_EQ(s.overlap, 0);
    pthread_mutex_destroy(&s.mu);
}

TEST(common_backoff_grows_and_is_bounded) {
    static int obj, other;
    prs__backoff b = PRS__BACKOFF_ON(&obj);
    prs__backoff_wait(&b);
    ASSERT_GE_I64(b.limit, 2 * PRS__BACKOFF_MIN);
    ASSERT_LE_I64(b.limit, PRS__BACKOFF_MAX);
    for (int i = 0; i < 40; i++) prs__backoff_wait(&b);
    ASSERT_EQ(b.limit, PRS__BACKOFF_MAX);
    ASSERT_GT_I64(b.rounds, 0);
    /* contention met again at once: the next call starts higher than the first */
    uint32_t first = 0;
    for (int call = 0; call < 3; call++) {
        prs__backoff c = PRS__BACKOFF_ON(&obj);
        prs__backoff_wait(&c);
        if (call == 0) first = c.limit;
        else ASSERT_GT_I64(c.limit, first);
    }
    /* contention on another object starts from the bottom */
    prs__backoff d = PRS__BACKOFF_ON(&other);
    prs__backoff_wait(&d);
    ASSERT_EQ(d.limit, 2 * PRS__BACKOFF_MIN);
}

/* ---- internal helpers the binding leans on ------------------------------- */

TEST(common_atomic_time) {
    _Atomic int64_t t = 10;
    prs__atomic_sat_add(&t, 5);
    ASSERT_EQ_I64(atomic_load(&t), 15);
    prs__atomic_sat_add(&t, INT64_MAX); /* saturates, never wraps */
    ASSERT_EQ_I64(atomic_load(&t), INT64_MAX);
    atomic_store(&t, 10);
    prs__atomic_raise(&t, 7); /* never lowered */
    ASSERT_EQ_I64(atomic_load(&t), 10);
    prs__atomic_raise(&t, 12);
    ASSERT_EQ_I64(atomic_load(&t), 12);
}

TEST(common_config_mentions_whole_identifiers) {
    ASSERT(prs_config_mentions("must be >= base_delay", "base_delay"));
    ASSERT(!prs_config_mentions("must be >= base_delay", "delay"));
    ASSERT(!prs_config_mentions("must be >= base_delay", "base"));
    ASSERT(prs_config_mentions("limit must be <= burst (x)", "burst"));
    ASSERT(!prs_config_mentions("must be > 0", "capacity"));
    ASSERT(!prs_config_mentions("anything", ""));
}
