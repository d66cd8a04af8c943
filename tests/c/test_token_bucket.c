/*
 * test_token_bucket.c - the token bucket: tables at explicit times, exactness
 * of retry_after (by table and on random schedules against an integer
 * reference model), the fixed budget (refill_rate 0), extremes of time,
 * capacity and rate, configuration errors, allocation failure, threads with a
 * frozen clock, and the prs_algo_token_bucket descriptor.
 */
#include "prs_test.h"
#include "test_make.h"

#include "prs_algo.h"
#include "prs_token_bucket.h"

#include <float.h>
#include <pthread.h>
#include <stdatomic.h>

#define SEC PRS_NS_PER_SEC
#define MS PRS_NS_PER_MS

/* ---- helpers ------------------------------------------------------------ */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }


static prs_decision check(prs_token_bucket *tb, int64_t now, int64_t n) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(prs_token_bucket_check(tb, now, n, &d));
    return d;
}

static prs_decision peek(prs_token_bucket *tb, int64_t now, int64_t n) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(prs_token_bucket_peek(tb, now, n, &d));
    return d;
}

static void sane(const prs_decision *d, int64_t limit) {
    ASSERT(d->allowed == 0 || d->allowed == 1);
    ASSERT_EQ_I64(d->limit, limit);
    ASSERT_GE_I64(d->remaining, 0);
    ASSERT_LE_I64(d->remaining, limit);
    ASSERT_GE_I64(d->retry_after_ns, 0);
    ASSERT_GE_I64(d->reset_after_ns, 0);
    if (d->allowed) ASSERT_EQ_I64(d->retry_after_ns, 0);
    else ASSERT_GT_I64(d->retry_after_ns, 0);
}

/* Denied at t with retry r: denied at t + r - 1 (and between), admitted at
 * t + r. Peek only: the state is left as it was. */
static void assert_exact(prs_token_bucket *tb, int64_t t, int64_t n, int64_t r) {
    ASSERT_GT_I64(r, 0);
    ASSERT(r != PRS_NEVER);
    int64_t end;
    ASSERT(!__builtin_add_overflow(t, r, &end));
    ASSERT(!peek(tb, t, n).allowed);
    ASSERT(!peek(tb, t + r / 2, n).allowed);
    ASSERT(!peek(tb, t + r - 1, n).allowed);
    if (!peek(tb, t + r, n).allowed)
        PRS__FAIL("denied at t=%" PRId64 " + retry_after %" PRId64 " (n %" PRId64 ")", t, r, n);
    if (end < INT64_MAX) ASSERT(peek(tb, t + r + 1, n).allowed);
    ASSERT_EQ_I64(peek(tb, t + r - 1, n).retry_after_ns, 1);
    ASSERT_EQ_I64(peek(tb, t + r / 2, n).retry_after_ns, r - r / 2);
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}
static int64_t rng_range(uint64_t *s, int64_t lo, int64_t hi) { /* [lo, hi] */
    return lo + (int64_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* ---- configuration ------------------------------------------------------ */

TEST(tb_config_defaults) {
    prs_token_bucket_config cfg;
    memset(&cfg, 0x5A, sizeof cfg);
    prs_token_bucket_config_init(&cfg);
    ASSERT_NEAR(cfg.capacity, 1.0, 0);
    ASSERT_NEAR(cfg.refill_rate, 1.0, 0);
    ASSERT(cfg.allocator == NULL);
    ASSERT_OK(prs_token_bucket_config_validate(&cfg));
    prs_token_bucket *tb = NULL;
    ASSERT_OK(prs_token_bucket_new(&cfg, &tb));
    ASSERT_NEAR(prs_token_bucket_capacity(tb), 1.0, 0);
    ASSERT_NEAR(prs_token_bucket_refill_rate(tb), 1.0, 0);
    prs_token_bucket_free(tb);
}

TEST(tb_config_validation) {
    static const struct { double capacity, rate; int want; } rows[] = {
        {NAN, 1, PRS_EINVAL},
        {-NAN, 1, PRS_EINVAL},
        {INFINITY, 1, PRS_EINVAL},
        {-INFINITY, 1, PRS_EINVAL},
        {0.0, 1, PRS_EINVAL},
        {-0.0, 1, PRS_EINVAL},
        {-1.0, 1, PRS_EINVAL},
        {-DBL_MIN, 1, PRS_EINVAL},
        {1, NAN, PRS_EINVAL},
        {1, INFINITY, PRS_EINVAL},
        {1, -INFINITY, PRS_EINVAL},
        {1, -1.0, PRS_EINVAL},
        {1, -1e-300, PRS_EINVAL},
        {NAN, 1e300, PRS_EINVAL}, /* invalid beats out of range */
        {1e16, NAN, PRS_EINVAL},
        /* the range */
        {1e15, 1, PRS_OK},
        {1e15 + 0.125, 1, PRS_ERANGE},
        {1e16, 1, PRS_ERANGE},
        {DBL_MAX, 1, PRS_ERANGE},
        {1, 1e15, PRS_OK},
        {1, 1.0000000000000002e15, PRS_ERANGE},
        {1, 1e300, PRS_ERANGE},
        {1e15, 1e15, PRS_OK},
        /* small but valid */
        {1, 0.0, PRS_OK},         /* a fixed budget */
        {1, -0.0, PRS_OK},        /* -0.0 is not negative */
        {0.5, 1, PRS_OK},         /* can never admit 1, but a valid bucket */
        {DBL_MIN, 1, PRS_OK},
        {1, 1e-9, PRS_OK},
        {1, 5e-324, PRS_OK},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_token_bucket_config cfg;
        prs_token_bucket_config_init(&cfg);
        cfg.capacity = rows[i].capacity;
        cfg.refill_rate = rows[i].rate;
        int rc = prs_token_bucket_config_validate(&cfg);
        if (rc != rows[i].want)
            PRS__FAIL("row %zu (capacity %g rate %g): %s, expected %s", i, rows[i].capacity,
                      rows[i].rate, prs_err_name(rc), prs_err_name(rows[i].want));
        prs_token_bucket *tb = (prs_token_bucket *)&cfg; /* new must clear it on error */
        ASSERT_STATUS(prs_token_bucket_new(&cfg, &tb), rows[i].want);
        if (rows[i].want == PRS_OK) {
            ASSERT(tb != NULL);
            prs_decision d = check(tb, 0, 1);
            ASSERT_EQ_I64(d.allowed, rows[i].capacity >= 1.0);
            prs_token_bucket_free(tb);
        } else {
            ASSERT(tb == NULL);
        }
    }
    ASSERT_STATUS(prs_token_bucket_config_validate(NULL), PRS_EINVAL);
    prs_token_bucket *tb = (prs_token_bucket *)&tb;
    ASSERT_STATUS(prs_token_bucket_new(NULL, &tb), PRS_EINVAL);
    ASSERT(tb == NULL);
    prs_token_bucket_config cfg;
    prs_token_bucket_config_init(&cfg);
    ASSERT_STATUS(prs_token_bucket_new(&cfg, NULL), PRS_EINVAL);
}

TEST(tb_free_null_and_bad_arguments) {
    prs_token_bucket_free(NULL);
    prs_token_bucket_reset(NULL);
    ASSERT_NEAR(prs_token_bucket_available(NULL, 0), 0.0, 0);
    prs_token_bucket *tb = make_tb(3, 1);
    prs_decision d;
    ASSERT_STATUS(prs_token_bucket_check(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_peek(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_check(tb, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_peek(tb, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_check(tb, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_check(tb, 0, -1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_check(tb, 0, INT64_MIN, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_peek(tb, 0, 0, &d), PRS_EINVAL);
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 3.0, 0);
    prs_token_bucket_free(tb);
}

static int make_with(const prs_allocator *a, void **obj) {
    prs_token_bucket_config cfg;
    prs_token_bucket_config_init(&cfg);
    cfg.capacity = 10;
    cfg.refill_rate = 100;
    cfg.allocator = a;
    prs_token_bucket *tb = (prs_token_bucket *)obj; /* garbage: new must overwrite it */
    int rc = prs_token_bucket_new(&cfg, &tb);
    *obj = tb;
    if (rc == PRS_OK) {
        prs_decision d;
        ASSERT_OK(prs_token_bucket_check(tb, 0, 10, &d));
        ASSERT(d.allowed);
    }
    return rc;
}
static void destroy(void *obj) { prs_token_bucket_free(obj); }

TEST(tb_alloc_failure) {
    prs_test_alloc_failures(make_with, destroy);
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, -1);
    prs_token_bucket_config cfg;
    prs_token_bucket_config_init(&cfg);
    cfg.allocator = &ta.base;
    cfg.capacity = 0;
    prs_token_bucket *tb;
    ASSERT_STATUS(prs_token_bucket_new(&cfg, &tb), PRS_EINVAL);
    ASSERT_EQ_I64(ta.calls, 0);
}

/* ---- tables at explicit times ------------------------------------------- */

TEST(tb_table_full_exhaust_refill) {
    const int64_t T = 100 * MS, t0 = 1000 * SEC; /* 10 tokens/s: one per 100 ms */
    prs_token_bucket *tb = make_tb(5, 10);

    /* Starts full. */
    ASSERT_NEAR(prs_token_bucket_available(tb, t0), 5.0, 0);
    prs_decision d = peek(tb, t0, 1);
    sane(&d, 5);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 4);
    ASSERT_EQ_I64(d.reset_after_ns, T);
    ASSERT(peek(tb, t0, 5).allowed);

    for (int k = 1; k <= 5; k++) {
        d = check(tb, t0, 1);
        sane(&d, 5);
        ASSERT(d.allowed);
        ASSERT_EQ_I64(d.remaining, 5 - k);
        ASSERT_EQ_I64(d.reset_after_ns, k * T);
        ASSERT_NEAR(prs_token_bucket_available(tb, t0), 5.0 - k, 1e-12);
    }
    d = check(tb, t0, 1);
    sane(&d, 5);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.retry_after_ns, T);
    ASSERT_EQ_I64(d.reset_after_ns, 5 * T);
    assert_exact(tb, t0, 1, T);
    ASSERT_EQ_I64(peek(tb, t0, 2).retry_after_ns, 2 * T);
    ASSERT_EQ_I64(peek(tb, t0, 5).retry_after_ns, 5 * T);
    assert_exact(tb, t0, 5, 5 * T);

    d = check(tb, t0 + T, 1);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, 5 * T);
    ASSERT(!check(tb, t0 + T, 1).allowed);

    /* Partial refill: half an interval is half a token. */
    const int64_t t1 = t0 + T + T / 2;
    ASSERT_NEAR(prs_token_bucket_available(tb, t1), 0.5, 1e-9);
    d = check(tb, t1, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.retry_after_ns, T / 2);
    ASSERT_EQ_I64(d.reset_after_ns, 5 * T - T / 2);
    assert_exact(tb, t1, 1, T / 2);

    const int64_t t2 = t0 + 3 * T;
    ASSERT_NEAR(prs_token_bucket_available(tb, t2), 2.0, 1e-9);
    ASSERT_EQ_I64(peek(tb, t2, 3).retry_after_ns, T);
    d = check(tb, t2, 2);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(tb, t2, 1).allowed);

    /* A long idle time refills to capacity and no further. */
    const int64_t t3 = t0 + 3600 * SEC;
    ASSERT_NEAR(prs_token_bucket_available(tb, t3), 5.0, 0);
    d = check(tb, t3, 5);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(tb, t3, 1).allowed);
    prs_token_bucket_free(tb);
}

TEST(tb_peek_does_not_consume) {
    const int64_t t0 = 50 * SEC;
    prs_token_bucket *tb = make_tb(3, 2);
    for (int i = 0; i < 1000; i++) {
        prs_decision d = peek(tb, t0, 1 + i % 3);
        ASSERT(d.allowed);
        ASSERT_EQ_I64(d.remaining, 3 - (1 + i % 3));
    }
    ASSERT_NEAR(prs_token_bucket_available(tb, t0), 3.0, 0);
    ASSERT(check(tb, t0, 3).allowed);
    prs_decision d1 = peek(tb, t0, 1), d2 = peek(tb, t0, 1);
    ASSERT(!d1.allowed);
    ASSERT_EQ_I64(d1.retry_after_ns, d2.retry_after_ns);
    ASSERT_EQ_I64(d1.reset_after_ns, d2.reset_after_ns);
    ASSERT_NEAR(prs_token_bucket_available(tb, t0), 0.0, 0);
    prs_token_bucket_free(tb);
}

TEST(tb_reset) {
    const int64_t t0 = 7 * SEC;
    prs_token_bucket *tb = make_tb(4, 1);
    ASSERT(check(tb, t0, 4).allowed);
    ASSERT(!check(tb, t0, 1).allowed);
    prs_token_bucket_reset(tb);
    ASSERT_NEAR(prs_token_bucket_available(tb, t0), 4.0, 0);
    prs_decision d = check(tb, t0, 4);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(tb, t0, 1).allowed);
    prs_token_bucket_reset(tb);
    ASSERT(check(tb, 0, 4).allowed); /* full even at an earlier instant */
    prs_token_bucket_reset(tb);
    prs_token_bucket_reset(tb);
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 4.0, 0);
    prs_token_bucket_free(tb);
}

TEST(tb_n_above_capacity_never) {
    const int64_t t0 = SEC;
    prs_token_bucket *tb = make_tb(10, 1000);
    const int64_t ns[] = {11, 12, 1000, INT64_MAX / 2, INT64_MAX};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        prs_decision d = check(tb, t0, ns[i]);
        sane(&d, 10);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
        ASSERT_EQ_I64(d.remaining, 10);
        ASSERT_EQ_I64(d.reset_after_ns, 0);
        ASSERT_EQ_I64(peek(tb, t0, ns[i]).retry_after_ns, PRS_NEVER);
    }
    ASSERT(check(tb, t0, 10).allowed);
    prs_decision d = check(tb, t0, 11);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, 10 * MS);
    ASSERT_EQ_I64(check(tb, t0 + 3600 * SEC, 11).retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);

    /* A fractional capacity: 2.5 admits 2 at once, then half a token is left;
     * n = 3 never fits. */
    tb = make_tb(2.5, 1);
    d = check(tb, t0, 2);
    sane(&d, 2);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_NEAR(prs_token_bucket_available(tb, t0), 0.5, 0);
    d = check(tb, t0, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, SEC / 2);
    assert_exact(tb, t0, 1, SEC / 2);
    ASSERT_EQ_I64(check(tb, t0, 3).retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);

    /* Below one token: nothing is ever admitted. */
    tb = make_tb(0.5, 1);
    d = check(tb, t0, 1);
    sane(&d, 0);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);
}

TEST(tb_fixed_budget_rate_zero) {
    const int64_t t0 = 5 * SEC;
    prs_token_bucket *tb = make_tb(5, 0);
    for (int k = 1; k <= 5; k++) {
        prs_decision d = check(tb, t0 + k * SEC, 1);
        sane(&d, 5);
        ASSERT(d.allowed);
        ASSERT_EQ_I64(d.remaining, 5 - k);
        ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER); /* never refills */
    }
    const int64_t later[] = {t0 + 6 * SEC, t0 + 3600 * SEC, INT64_MAX / 2, INT64_MAX};
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++) {
        prs_decision d = check(tb, later[i], 1);
        sane(&d, 5);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
        ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
        ASSERT_EQ_I64(d.remaining, 0);
        ASSERT_NEAR(prs_token_bucket_available(tb, later[i]), 0.0, 0);
    }
    prs_token_bucket_reset(tb);
    ASSERT(check(tb, INT64_MAX, 5).allowed);
    ASSERT_EQ_I64(check(tb, 0, 1).retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);

    /* A fresh fixed budget reports itself full. */
    tb = make_tb(3.5, 0);
    prs_decision d = peek(tb, 0, 1);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
    ASSERT(check(tb, 0, 3).allowed);
    ASSERT_NEAR(prs_token_bucket_available(tb, SEC), 0.5, 0);
    ASSERT_EQ_I64(check(tb, SEC, 1).retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);
}

TEST(tb_backwards_clock_creates_nothing) {
    const int64_t T = 100 * MS, t0 = 10 * SEC;
    prs_token_bucket *tb = make_tb(5, 10);
    ASSERT(check(tb, t0, 5).allowed);
    /* Earlier instants: no tokens, and the wait is counted from the instant
     * asked about, so it is still exact. */
    const int64_t back[] = {t0 - 1, t0 - T, t0 - 5 * SEC, 0, -100 * SEC};
    for (size_t i = 0; i < sizeof back / sizeof back[0]; i++) {
        ASSERT_NEAR(prs_token_bucket_available(tb, back[i]), 0.0, 0);
        prs_decision d = check(tb, back[i], 1);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, t0 + T - back[i]);
        assert_exact(tb, back[i], 1, d.retry_after_ns);
    }
    ASSERT(!check(tb, t0 + T - 1, 1).allowed);
    ASSERT(check(tb, t0 + T, 1).allowed);
    ASSERT(!check(tb, t0 + T, 1).allowed);
    ASSERT(!check(tb, t0, 1).allowed);

    /* Tokens taken at an earlier instant are still taken: a request at a past
     * time spends from the bucket as it is, never from an older, fuller one. */
    prs_token_bucket_reset(tb);
    ASSERT(check(tb, t0, 2).allowed);      /* 3 left at t0 */
    ASSERT(check(tb, t0 - SEC, 3).allowed); /* spends those 3 */
    ASSERT(!check(tb, t0, 1).allowed);
    ASSERT_NEAR(prs_token_bucket_available(tb, t0), 0.0, 0);
    ASSERT_EQ_I64(peek(tb, t0, 1).retry_after_ns, T);
    prs_token_bucket_free(tb);
}

TEST(tb_backwards_clock_random_bound) {
    /* Whatever order the instants come in, admitted <= capacity + (latest -
     * earliest) * rate. */
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int round = 0; round < 50; round++) {
        const int64_t cap = rng_range(&seed, 1, 20);
        const double rate = (double)rng_range(&seed, 1, 2000) / 2.0;
        prs_token_bucket *tb = make_tb((double)cap, rate);
        const int64_t per = (int64_t)(1e9 / rate);
        int64_t lo = INT64_MAX, hi = INT64_MIN, admitted = 0, frontier = 1000 * SEC;
        for (int i = 0; i < 2000; i++) {
            int64_t now = frontier - rng_range(&seed, 0, 20 * per);
            if (rng_range(&seed, 0, 3) == 0) frontier += rng_range(&seed, 0, per);
            int64_t n = rng_range(&seed, 1, cap);
            prs_decision d = check(tb, now, n);
            sane(&d, cap);
            if (d.allowed) {
                admitted += n;
                lo = min64(lo, now);
                hi = max64(hi, now);
            }
        }
        ASSERT_GT_I64(admitted, 0);
        ASSERT((double)admitted <= (double)cap + (double)(hi - lo) * rate / 1e9 + 1e-6);
        prs_token_bucket_free(tb);
    }
}

/* ---- extremes ----------------------------------------------------------- */

TEST(tb_saturation_capacity_and_rate_1e15) {
    const int64_t t0 = 100 * SEC, big = INT64_C(1000000000000000);
    prs_token_bucket *tb = make_tb(1e15, 1e15); /* 1e6 tokens per ns */
    prs_decision d = check(tb, t0, big);
    sane(&d, big);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, SEC);
    d = check(tb, t0, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 1);
    assert_exact(tb, t0, 1, 1);
    ASSERT_EQ_I64(peek(tb, t0, big).retry_after_ns, SEC);
    assert_exact(tb, t0, big, SEC);
    ASSERT_EQ_I64(check(tb, t0, big + 1).retry_after_ns, PRS_NEVER);
    d = check(tb, t0 + 1, 1000000);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(check(tb, t0 + SEC + 1, big).allowed);
    /* Huge elapsed times: capped at capacity, no overflow. */
    ASSERT_NEAR(prs_token_bucket_available(tb, INT64_MAX), 1e15, 0);
    ASSERT(check(tb, INT64_MAX, big).allowed);
    prs_token_bucket_free(tb);

    /* Capacity 1e15 with a slow refill: the wait for a full refill is huge
     * but finite, and saturates instead of wrapping. */
    tb = make_tb(1e15, 1e-3);
    ASSERT(check(tb, t0, big).allowed);
    d = check(tb, t0, big);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER); /* 1e27 ns: beyond int64 */
    ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
    d = check(tb, t0, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, INT64_C(1000) * SEC);
    assert_exact(tb, t0, 1, d.retry_after_ns);
    prs_token_bucket_free(tb);
}

TEST(tb_saturation_near_int64_max) {
    const int64_t near = INT64_MAX - 2 * SEC - SEC / 2;
    prs_token_bucket *tb = make_tb(3, 1);
    ASSERT(check(tb, near, 3).allowed);
    prs_decision d = check(tb, near, 1);
    sane(&d, 3);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    assert_exact(tb, near, 1, SEC);
    ASSERT(check(tb, near + 2 * SEC, 2).allowed);
    /* 0.5 s left before the end of time: a second token is never reachable. */
    d = check(tb, near + 2 * SEC, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_NEAR(prs_token_bucket_available(tb, INT64_MAX), 0.5, 1e-6);
    prs_token_bucket_reset(tb);
    d = check(tb, INT64_MAX, 3);
    sane(&d, 3);
    ASSERT(d.allowed);
    d = check(tb, INT64_MAX, 1);
    sane(&d, 3);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);
}

TEST(tb_saturation_near_int64_min) {
    prs_token_bucket *tb = make_tb(2, 1);
    prs_decision d = check(tb, INT64_MIN, 1);
    sane(&d, 2);
    ASSERT(d.allowed);
    ASSERT(check(tb, INT64_MIN, 1).allowed);
    d = check(tb, INT64_MIN, 1);
    ASSERT(!d.allowed);
    ASSERT_GT_I64(d.retry_after_ns, 0);
    ASSERT(d.retry_after_ns != PRS_NEVER);
    /* The bucket refills from there (it is not stuck), exactly. */
    assert_exact(tb, INT64_MIN, 1, d.retry_after_ns);
    ASSERT(check(tb, INT64_MIN + d.retry_after_ns, 1).allowed);
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 2.0, 0);
    ASSERT(check(tb, 0, 2).allowed);
    prs_token_bucket_free(tb);

    tb = make_tb(1, 1);
    ASSERT(check(tb, INT64_MIN, 1).allowed);
    ASSERT(check(tb, INT64_MIN + 2 * SEC, 1).allowed);
    prs_token_bucket_free(tb);
}

TEST(tb_clock_span_beyond_int64) {
    /* From the far past to the far future in one step: elapsed times beyond
     * INT64_MAX saturate (UBSan checks there is no signed overflow). */
    prs_token_bucket *tb = make_tb(5, 1);
    const int64_t early = INT64_MIN + 1, late = INT64_MAX - SEC;
    ASSERT(check(tb, early, 5).allowed);
    ASSERT_NEAR(prs_token_bucket_available(tb, late), 5.0, 0);
    prs_decision d = check(tb, late, 5);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    prs_token_bucket_free(tb);

    tb = make_tb(5, 1);
    ASSERT(check(tb, -INT64_C(5000000000000000000), 5).allowed);
    ASSERT(check(tb, INT64_C(5000000000000000000), 5).allowed);
    prs_token_bucket_free(tb);

    /* Admitted near the end of time, asked near its start: the wait is beyond
     * int64 ns, so never (not a finite, wrong wait). */
    tb = make_tb(2, 1);
    ASSERT(check(tb, late, 2).allowed);
    const int64_t back[] = {INT64_MIN, INT64_MIN + 5, -SEC};
    for (size_t i = 0; i < sizeof back / sizeof back[0]; i++) {
        d = check(tb, back[i], 1);
        sane(&d, 2);
        ASSERT(!d.allowed);
        if (d.retry_after_ns != PRS_NEVER) assert_exact(tb, back[i], 1, d.retry_after_ns);
    }
    prs_token_bucket_free(tb);
}

TEST(tb_rates_1e_minus9_to_1e9) {
    const double rates[] = {1e-9, 3e-9, 1e-6, 1e-3, 0.3, 1, 7, 1000, 123456.7, 1e6, 3e8, 1e9, 1e12, 1e15};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        for (int64_t cap = 1; cap <= 8; cap *= 2) {
            prs_token_bucket *tb = make_tb((double)cap, rates[i]);
            const int64_t t0 = 1000 * SEC;
            const double per = 1e9 / rates[i]; /* ns per token */
            prs_decision d = check(tb, t0, cap);
            ASSERT(d.allowed);
            d = check(tb, t0, 1);
            ASSERT(!d.allowed);
            /* the wait for one token is 1e9/rate ns, rounded up */
            ASSERT((double)d.retry_after_ns >= per * (1 - 1e-12));
            ASSERT((double)d.retry_after_ns <= per * (1 + 1e-12) + 1.0);
            assert_exact(tb, t0, 1, d.retry_after_ns);
            /* Steady state: each request admitted exactly when it says. */
            int64_t t = t0;
            for (int k = 0; k < 20; k++) {
                /* above 1e9/s more than one token comes back per ns: drain */
                for (int64_t j = 0; (d = check(tb, t, 1)).allowed; j++) ASSERT_LT_I64(j, cap);
                if (d.retry_after_ns > INT64_MAX - t) break; /* past the end of time */
                t += d.retry_after_ns;
                ASSERT(!check(tb, t - 1, 1).allowed);
                if (!check(tb, t, 1).allowed)
                    PRS__FAIL("rate %g cap %" PRId64 " step %d: denied at its retry time", rates[i], cap, k);
            }
            prs_token_bucket_free(tb);
        }
    }
}

/* ---- randomized against an integer reference model ---------------------- */

/* Reference: a token bucket kept in integer nanoseconds of refill (T ns per
 * token, C tokens), written independently of token_bucket.c. `level` is the
 * refill held at `last` (INT64_MIN: never used, full). A request is admitted
 * iff the refill at `now` covers n*T. Wait = (last + n*T - level) - now. */
typedef struct model {
    int64_t T, C, level, last;
} model;

typedef struct mdecision {
    prs_decision d;
    int64_t have, need; /* ns of refill held at now, and needed */
} mdecision;

static mdecision model_eval(const model *m, int64_t now, int64_t n) {
    mdecision r;
    memset(&r, 0, sizeof r);
    const int64_t full = m->C * m->T;
    const int64_t elapsed = m->last == INT64_MIN || now <= m->last ? 0 : now - m->last;
    r.have = m->last == INT64_MIN ? full : min64(full, m->level + elapsed);
    r.need = n * m->T;
    r.d.limit = m->C;
    if (n > m->C) {
        r.d.retry_after_ns = PRS_NEVER;
        r.d.remaining = r.have / m->T;
        r.d.reset_after_ns = full - r.have;
        return r;
    }
    int64_t left = r.have;
    if (r.have >= r.need) {
        r.d.allowed = 1;
        left = r.have - r.need;
    } else {
        r.d.retry_after_ns = m->last + (r.need - m->level) - now;
    }
    r.d.remaining = left / m->T;
    r.d.reset_after_ns = full - left;
    return r;
}

static void model_apply(model *m, int64_t now, int64_t n, int64_t have) {
    m->level = have >= n * m->T ? have - n * m->T : 0;
    if (m->last == INT64_MIN || now > m->last) m->last = now;
}

#define NEAR_NS 2 /* the float bucket may differ from the integer one by this much (ns) */

TEST(tb_random_vs_model_and_exactness) {
    uint64_t seed = 0xD1B54A32D192ED03u;
    /* rates whose ns-per-token is a whole number */
    const double rates[] = {1e-3, 0.5, 1, 2, 4, 5, 10, 1000, 1e6, 5e8, 1e9};
    int exact_checks = 0, near_boundary = 0, compared = 0;
    for (int round = 0; round < 60; round++) {
        const double rate = rates[rng_range(&seed, 0, sizeof rates / sizeof rates[0] - 1)];
        const int64_t cap = rng_range(&seed, 1, 12);
        prs_token_bucket *tb = make_tb((double)cap, rate);
        model m = {(int64_t)(1e9 / rate + 0.5), cap, 0, INT64_MIN};
        const int64_t T = m.T;
        /* 1 and 2 ns per token are exact in binary floating point: no margin */
        const int64_t margin = T <= 2 ? 0 : NEAR_NS;
        int64_t now = rng_range(&seed, -1000000, 1000000) * SEC;
        for (int step = 0; step < 3000; step++) {
            switch (rng_range(&seed, 0, 7)) {
            case 0: break;
            case 1: now += rng_range(&seed, 0, T); break;
            case 2: now += rng_range(&seed, 0, cap * T); break;
            case 3: now += rng_range(&seed, 0, 3 * cap * T); break;
            case 4: now -= rng_range(&seed, 0, 2 * T); break; /* clock steps back */
            default: now += T; break;
            }
            int64_t n = rng_range(&seed, 0, 15) == 0 ? cap + 1 : rng_range(&seed, 1, cap);
            int op = (int)rng_range(&seed, 0, 99);
            if (op == 0) {
                prs_token_bucket_reset(tb);
                m.last = INT64_MIN;
                continue;
            }
            const int consume = op >= 25;
            mdecision want = model_eval(&m, now, n);
            const prs_decision before = peek(tb, now, n);
            prs_decision got = consume ? check(tb, now, n) : peek(tb, now, n);
            sane(&got, cap);
            ASSERT_EQ_I64(got.allowed, before.allowed); /* peek says what check does */
            ASSERT_EQ_I64(got.retry_after_ns, before.retry_after_ns);
            ASSERT_EQ_I64(got.remaining, before.remaining);
            ASSERT_EQ_I64(got.reset_after_ns, before.reset_after_ns);
            ASSERT_NEAR(prs_token_bucket_available(tb, now) * (double)T,
                        (double)(consume && got.allowed ? want.have - want.need : want.have),
                        NEAR_NS + 1e-9 * (double)(cap * T));

            const int on_edge = n <= cap && margin > 0 && llabs(want.have - want.need) <= margin;
            if (on_edge) {
                near_boundary++; /* follow the bucket's verdict */
            } else {
                compared++;
                if (got.allowed != want.d.allowed)
                    PRS__FAIL("round %d step %d: allowed %d, model %d (have %" PRId64 " need %" PRId64 ")",
                              round, step, got.allowed, want.d.allowed, want.have, want.need);
                if (!got.allowed) {
                    if (want.d.retry_after_ns == PRS_NEVER) ASSERT_EQ_I64(got.retry_after_ns, PRS_NEVER);
                    else ASSERT_LE_I64(llabs(got.retry_after_ns - want.d.retry_after_ns), NEAR_NS);
                }
            }
            if (got.allowed == want.d.allowed) {
                ASSERT_LE_I64(llabs(got.remaining - want.d.remaining), 1);
                if (want.d.reset_after_ns == 0) ASSERT_LE_I64(got.reset_after_ns, NEAR_NS);
                else ASSERT_LE_I64(llabs(got.reset_after_ns - want.d.reset_after_ns), NEAR_NS);
            }
            if (consume && got.allowed) model_apply(&m, now, n, want.have);
            if (!got.allowed && got.retry_after_ns != PRS_NEVER) {
                assert_exact(tb, now, n, got.retry_after_ns);
                exact_checks++;
            }
        }
        prs_token_bucket_free(tb);
    }
    ASSERT_GT_I64(exact_checks, 1000);
    ASSERT_GT_I64(compared, 10 * near_boundary);
}

/* ---- threads -------------------------------------------------------------- */

typedef struct hammer {
    prs_token_bucket *tb;
    pthread_barrier_t *start;
    int64_t n, iters, admitted;
    _Atomic int64_t *clock; /* NULL: frozen at `now` */
    int64_t now, step, lo, hi;
} hammer;

static void *hammer_run(void *arg) {
    hammer *h = arg;
    pthread_barrier_wait(h->start);
    h->lo = INT64_MAX;
    h->hi = INT64_MIN;
    for (int64_t i = 0; i < h->iters; i++) {
        int64_t now = h->clock ? atomic_fetch_add(h->clock, h->step) : h->now;
        prs_decision d;
        if (prs_token_bucket_check(h->tb, now, h->n, &d) != PRS_OK) abort();
        if (d.allowed) {
            h->admitted += h->n;
            if (now < h->lo) h->lo = now;
            if (now > h->hi) h->hi = now;
        }
    }
    return NULL;
}

static int64_t run_hammer(prs_token_bucket *tb, int nthreads, int64_t n, int64_t iters,
                          _Atomic int64_t *clock, int64_t now, int64_t step, int64_t *lo, int64_t *hi) {
    pthread_barrier_t start;
    pthread_t tid[8];
    hammer h[8];
    ASSERT(nthreads <= 8);
    ASSERT_EQ_I64(pthread_barrier_init(&start, NULL, (unsigned)nthreads), 0);
    for (int i = 0; i < nthreads; i++) {
        h[i] = (hammer){tb, &start, n, iters, 0, clock, now, step, 0, 0};
        ASSERT_EQ_I64(pthread_create(&tid[i], NULL, hammer_run, &h[i]), 0);
    }
    int64_t total = 0;
    if (lo) *lo = INT64_MAX;
    if (hi) *hi = INT64_MIN;
    for (int i = 0; i < nthreads; i++) {
        ASSERT_EQ_I64(pthread_join(tid[i], NULL), 0);
        total += h[i].admitted;
        if (lo && h[i].admitted) *lo = min64(*lo, h[i].lo);
        if (hi && h[i].admitted) *hi = max64(*hi, h[i].hi);
    }
    pthread_barrier_destroy(&start);
    return total;
}

TEST(tb_threads_frozen_admit_exactly_capacity) {
    for (int round = 0; round < 5; round++) {
        prs_token_bucket *tb = make_tb(1000, 1);
        ASSERT_EQ_I64(run_hammer(tb, 4, 1, 20000, NULL, 5 * SEC, 0, NULL, NULL), 1000);
        ASSERT_NEAR(prs_token_bucket_available(tb, 5 * SEC), 0.0, 0);
        prs_token_bucket_free(tb);
        tb = make_tb(1000, 1);
        ASSERT_EQ_I64(run_hammer(tb, 4, 3, 20000, NULL, 5 * SEC, 0, NULL, NULL), 999);
        ASSERT_NEAR(prs_token_bucket_available(tb, 5 * SEC), 1.0, 0);
        prs_token_bucket_free(tb);
        /* a fixed budget, with a frozen clock or not */
        tb = make_tb(1000, 0);
        ASSERT_EQ_I64(run_hammer(tb, 4, 1, 20000, NULL, 5 * SEC, 0, NULL, NULL), 1000);
        prs_token_bucket_free(tb);
    }
}

TEST(tb_threads_moving_clock_bound) {
    prs_token_bucket *tb = make_tb(50, 1000); /* one token per ms */
    _Atomic int64_t clock = 100 * SEC;
    int64_t lo, hi;
    int64_t admitted = run_hammer(tb, 4, 1, 50000, &clock, 0, 10 * PRS_NS_PER_US, &lo, &hi);
    ASSERT_GT_I64(admitted, 50);
    ASSERT((double)admitted <= 50.0 + (double)(hi - lo) / (double)MS + 1e-6);
    prs_token_bucket_free(tb);
}

/* ---- the prs_algo descriptor ---------------------------------------------- */

static void assert_same(const prs_decision *a, const prs_decision *b, int step) {
    if (a->allowed != b->allowed || a->limit != b->limit || a->remaining != b->remaining ||
        a->retry_after_ns != b->retry_after_ns || a->reset_after_ns != b->reset_after_ns)
        PRS__FAIL("step %d: got {allowed %d limit %" PRId64 " remaining %" PRId64
                  " retry %" PRId64 " reset %" PRId64 "}, expected {%d %" PRId64 " %" PRId64
                  " %" PRId64 " %" PRId64 "}",
                  step, a->allowed, a->limit, a->remaining, a->retry_after_ns, a->reset_after_ns,
                  b->allowed, b->limit, b->remaining, b->retry_after_ns, b->reset_after_ns);
}

TEST(tb_algo_descriptor_agrees_with_object) {
    const prs_algo *a = &prs_algo_token_bucket;
    ASSERT_STREQ(a->name, "token_bucket");
    uint64_t seed = 0x243F6A8885A308D3u;
    for (int round = 0; round < 40; round++) {
        const double cap = (double)rng_range(&seed, 1, 40) / 4.0 + 0.5;
        const double rate = round % 7 == 0 ? 0.0 : (double)rng_range(&seed, 1, 5000) / 10.0;
        prs_token_bucket *obj = make_tb(cap, rate);
        prs_token_bucket *tmpl = make_tb(cap, rate);
        const void *params = prs_token_bucket_params(tmpl);
        ASSERT(params != NULL);
        const size_t size = a->state_size(params);
        ASSERT(size > 0 && size <= PRS_ALGO_MAX_INLINE_STATE);
        _Alignas(16) unsigned char state[PRS_ALGO_MAX_INLINE_STATE];
        memset(state, 0xEE, sizeof state);
        a->state_init(params, state);
        const int64_t per = rate > 0 ? (int64_t)(1e9 / rate) : SEC;
        int64_t now = rng_range(&seed, 0, 1000) * SEC;
        for (int step = 0; step < 2000; step++) {
            now += rng_range(&seed, -per, 2 * per);
            const int64_t n = rng_range(&seed, 1, (int64_t)cap + 1);
            const int consume = rng_range(&seed, 0, 3) != 0;
            prs_decision want = consume ? check(obj, now, n) : peek(obj, now, n), got;
            ASSERT_OK(a->decide(params, state, now, n, consume, &got));
            assert_same(&got, &want, step);
            const double avail = prs_token_bucket_available(obj, now);
            ASSERT_NEAR(a->available(params, state, now), avail, 0);
            ASSERT_EQ_I64(a->is_fresh(params, state, now), avail >= cap);
        }
        prs_decision d;
        ASSERT_STATUS(a->decide(params, state, now, 0, 1, &d), PRS_EINVAL);
        ASSERT_STATUS(a->decide(NULL, state, now, 1, 1, &d), PRS_EINVAL);
        ASSERT_STATUS(a->decide(params, NULL, now, 1, 1, &d), PRS_EINVAL);
        ASSERT_STATUS(a->decide(params, state, now, 1, 1, NULL), PRS_EINVAL);
        prs_token_bucket_free(obj);
        prs_token_bucket_free(tmpl);
    }
}

TEST(tb_algo_refund_and_is_fresh) {
    const prs_algo *a = &prs_algo_token_bucket;
    prs_token_bucket *tmpl = make_tb(5, 10); /* one token per 100 ms */
    const void *p = prs_token_bucket_params(tmpl);
    const int64_t T = 100 * MS, t0 = 20 * SEC;
    _Alignas(16) unsigned char s[PRS_ALGO_MAX_INLINE_STATE];
    a->state_init(p, s);
    prs_decision d;

    ASSERT(a->is_fresh(p, s, t0));
    ASSERT(a->is_fresh(p, s, INT64_MIN));
    ASSERT(a->is_fresh(p, s, INT64_MAX));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);
    a->refund(p, s, t0, 3);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);

    ASSERT_OK(a->decide(p, s, t0, 1, 1, &d));
    ASSERT(d.allowed);
    ASSERT(!a->is_fresh(p, s, t0));
    ASSERT(!a->is_fresh(p, s, t0 + T - 1));
    ASSERT(a->is_fresh(p, s, t0 + T));
    a->refund(p, s, t0, 1);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);

    ASSERT_OK(a->decide(p, s, t0, 4, 1, &d));
    ASSERT(d.allowed);
    ASSERT_NEAR(a->available(p, s, t0), 1.0, 1e-12);
    a->refund(p, s, t0, 1);
    ASSERT_NEAR(a->available(p, s, t0), 2.0, 1e-12);
    ASSERT(!a->is_fresh(p, s, t0));
    a->refund(p, s, t0, 0);
    a->refund(p, s, t0, -5);
    ASSERT_NEAR(a->available(p, s, t0), 2.0, 1e-12);
    a->refund(p, s, t0, 100);
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_OK(a->decide(p, s, t0, 5, 1, &d));
    ASSERT(d.allowed);
    ASSERT_OK(a->decide(p, s, t0, 1, 1, &d));
    ASSERT(!d.allowed);
    a->refund(p, s, t0, INT64_MAX);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);

    /* Refund after a partial refill: capped at full. */
    ASSERT_OK(a->decide(p, s, t0, 2, 1, &d));
    ASSERT(d.allowed);
    a->refund(p, s, t0 + T, 2);
    ASSERT(a->is_fresh(p, s, t0 + T));
    ASSERT_NEAR(a->available(p, s, t0 + T), 5.0, 0);

    /* A fixed budget: fresh only until first used, and refund gives back. */
    prs_token_bucket *fixed = make_tb(3, 0);
    const void *fp = prs_token_bucket_params(fixed);
    a->state_init(fp, s);
    ASSERT(a->is_fresh(fp, s, t0));
    ASSERT_OK(a->decide(fp, s, t0, 1, 1, &d));
    ASSERT(!a->is_fresh(fp, s, INT64_MAX));
    a->refund(fp, s, t0, 1);
    ASSERT(a->is_fresh(fp, s, t0));
    prs_token_bucket_free(fixed);
    prs_token_bucket_free(tmpl);
}

/* A fixed budget spent at the start of time stays spent at its end: the
 * "never" wait (PRS_NEVER) is not reached by a saturated elapsed time. */
TEST(tb_fixed_budget_never_reached_by_saturated_elapsed) {
    prs_token_bucket *tb = make_tb(2, 0);
    ASSERT(check(tb, INT64_MIN + 1, 2).allowed);
    prs_decision d = check(tb, INT64_MAX, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    prs_token_bucket_free(tb);
}
