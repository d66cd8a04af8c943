/*
 * test_gcra.c - the GCRA limiter: tables at explicit times, exactness of
 * retry_after (by table and on random schedules against a reference model),
 * extremes of time and rate, configuration errors, allocation failure,
 * threads with a frozen clock, and the prs_algo_gcra descriptor.
 */
#include "prs_test.h"
#include "test_make.h"

#include "prs_algo.h"
#include "prs_gcra.h"

#include <float.h>
#include <pthread.h>
#include <stdatomic.h>

#define SEC PRS_NS_PER_SEC
#define MS PRS_NS_PER_MS

/* ---- helpers ------------------------------------------------------------ */


static prs_decision check(prs_gcra *g, int64_t now, int64_t n) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(prs_gcra_check(g, now, n, &d));
    return d;
}

static prs_decision peek(prs_gcra *g, int64_t now, int64_t n) {
    prs_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(prs_gcra_peek(g, now, n, &d));
    return d;
}

/* Asserts the shape every decision has, whatever the state. */
static void sane(const prs_decision *d, int64_t burst) {
    ASSERT(d->allowed == 0 || d->allowed == 1);
    ASSERT_EQ_I64(d->limit, burst);
    ASSERT_GE_I64(d->remaining, 0);
    ASSERT_LE_I64(d->remaining, burst);
    ASSERT_GE_I64(d->retry_after_ns, 0);
    ASSERT_GE_I64(d->reset_after_ns, 0);
    if (d->allowed) ASSERT_EQ_I64(d->retry_after_ns, 0);
    else ASSERT_GT_I64(d->retry_after_ns, 0);
}

/* A denial at t with retry r: denied at t + r - 1 (and a few points in
 * between), admitted at t + r. Peek only: the state is left as it was. */
static void assert_exact(prs_gcra *g, int64_t t, int64_t n, int64_t r) {
    ASSERT_GT_I64(r, 0);
    ASSERT(r != PRS_NEVER);
    ASSERT(!peek(g, t, n).allowed);
    ASSERT(!peek(g, t + r / 2, n).allowed);
    ASSERT(!peek(g, t + r - 1, n).allowed);
    prs_decision at = peek(g, t + r, n);
    ASSERT(at.allowed);
    ASSERT(peek(g, t + r + 1, n).allowed);
    /* retry_after counts down one for one while waiting. */
    ASSERT_EQ_I64(peek(g, t + r - 1, n).retry_after_ns, 1);
    ASSERT_EQ_I64(peek(g, t + r / 2, n).retry_after_ns, r - r / 2);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

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

TEST(gcra_config_defaults) {
    prs_gcra_config cfg;
    memset(&cfg, 0x5A, sizeof cfg);
    prs_gcra_config_init(&cfg);
    ASSERT_NEAR(cfg.rate, 1.0, 0);
    ASSERT_EQ_I64(cfg.burst, 1);
    ASSERT(cfg.allocator == NULL);
    ASSERT_OK(prs_gcra_config_validate(&cfg));
    prs_gcra *g = NULL;
    ASSERT_OK(prs_gcra_new(&cfg, &g));
    ASSERT_NEAR(prs_gcra_rate(g), 1.0, 0);
    ASSERT_EQ_I64(prs_gcra_burst(g), 1);
    ASSERT_EQ_I64(prs_gcra_interval_ns(g), SEC);
    prs_gcra_free(g);
}

TEST(gcra_config_validation) {
    static const struct { double rate; int64_t burst; int want; } rows[] = {
        {NAN, 1, PRS_EINVAL},
        {-NAN, 1, PRS_EINVAL},
        {INFINITY, 1, PRS_EINVAL},
        {-INFINITY, 1, PRS_EINVAL},
        {0.0, 1, PRS_EINVAL},
        {-0.0, 1, PRS_EINVAL},
        {-1.0, 1, PRS_EINVAL},
        {-1e-9, 1, PRS_EINVAL},
        {1.0, 0, PRS_EINVAL},
        {1.0, -1, PRS_EINVAL},
        {1.0, INT64_MIN, PRS_EINVAL},
        {NAN, 0, PRS_EINVAL},
        /* the range: burst * interval must fit int64 nanoseconds */
        {1e-9, 9, PRS_OK},            /* T = 1e18 ns, tolerance 9e18 */
        {1e-9, 10, PRS_ERANGE},       /* 1e19 ns overflows */
        {1e-10, 1, PRS_ERANGE},       /* T alone overflows */
        {5e-324, 1, PRS_ERANGE},
        {1.0, 9223372036, PRS_OK},    /* 9223372036 s */
        {1.0, 9223372037, PRS_ERANGE},
        {1e9, INT64_MAX, PRS_OK},     /* T = 1 ns */
        {5e8, INT64_MAX, PRS_ERANGE}, /* T = 2 ns */
        {1e3, 1000000000000000, PRS_ERANGE}, /* burst 1e15 at T = 1 ms */
        {1e9, 1000000000000000, PRS_OK},
        {1e15, 1, PRS_OK},            /* above 1e9/s: T = 1 ns */
        {1e300, 1000, PRS_OK},
        {DBL_MIN, 1, PRS_ERANGE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_gcra_config cfg;
        prs_gcra_config_init(&cfg);
        cfg.rate = rows[i].rate;
        cfg.burst = rows[i].burst;
        int rc = prs_gcra_config_validate(&cfg);
        if (rc != rows[i].want)
            PRS__FAIL("row %zu (rate %g burst %" PRId64 "): %s, expected %s", i, rows[i].rate,
                      rows[i].burst, prs_err_name(rc), prs_err_name(rows[i].want));
        prs_gcra *g = (prs_gcra *)&cfg; /* not NULL: new must clear it on error */
        ASSERT_STATUS(prs_gcra_new(&cfg, &g), rows[i].want);
        if (rows[i].want == PRS_OK) {
            ASSERT(g != NULL);
            prs_decision d = check(g, 0, 1);
            ASSERT(d.allowed);
            prs_gcra_free(g);
        } else {
            ASSERT(g == NULL);
        }
    }
    ASSERT_STATUS(prs_gcra_config_validate(NULL), PRS_EINVAL);
    prs_gcra *g = (prs_gcra *)&g;
    ASSERT_STATUS(prs_gcra_new(NULL, &g), PRS_EINVAL);
    ASSERT(g == NULL);
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    ASSERT_STATUS(prs_gcra_new(&cfg, NULL), PRS_EINVAL);
}

TEST(gcra_interval_resolution) {
    static const struct { double rate; int64_t interval; } rows[] = {
        {1e-9, INT64_C(1000000000000000000)},
        {1e-3, INT64_C(1000000000000)},
        {0.5, 2 * SEC},
        {1.0, SEC},
        {3.0, 333333334}, /* rounded up: never faster than asked */
        {7.0, 142857143},
        {10.0, 100 * MS},
        {1000.0, MS},
        {1e6, 1000},
        {3e8, 4},
        {1e9, 1},
        {1e12, 1}, /* above 1e9/s behaves as 1e9/s */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_gcra *g = make_gcra(rows[i].rate, 1);
        ASSERT_EQ_I64(prs_gcra_interval_ns(g), rows[i].interval);
        ASSERT_NEAR(prs_gcra_rate(g), rows[i].rate, 0);
        prs_gcra_free(g);
    }
}

TEST(gcra_free_null_and_bad_arguments) {
    prs_gcra_free(NULL);
    prs_gcra_reset(NULL);
    ASSERT_NEAR(prs_gcra_available(NULL, 0), 0.0, 0);
    prs_gcra *g = make_gcra(10, 3);
    prs_decision d;
    ASSERT_STATUS(prs_gcra_check(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_peek(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_check(g, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_peek(g, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_check(g, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_check(g, 0, -1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_check(g, 0, INT64_MIN, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_gcra_peek(g, 0, 0, &d), PRS_EINVAL);
    /* Errors consumed nothing. */
    ASSERT_NEAR(prs_gcra_available(g, 0), 3.0, 0);
    prs_gcra_free(g);
}


static int make_with(const prs_allocator *a, void **obj) {
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    cfg.rate = 100;
    cfg.burst = 10;
    cfg.allocator = a;
    prs_gcra *g = (prs_gcra *)obj; /* garbage on purpose: new must overwrite it */
    int rc = prs_gcra_new(&cfg, &g);
    *obj = g;
    if (rc == PRS_OK) { /* the object works with the injected allocator */
        prs_decision d;
        ASSERT_OK(prs_gcra_check(g, 0, 10, &d));
        ASSERT(d.allowed);
    }
    return rc;
}
static void destroy(void *obj) { prs_gcra_free(obj); }

TEST(gcra_alloc_failure) {
    prs_test_alloc_failures(make_with, destroy);
    /* An invalid config fails before allocating anything. */
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, -1);
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    cfg.allocator = &ta.base;
    cfg.burst = 0;
    prs_gcra *g;
    ASSERT_STATUS(prs_gcra_new(&cfg, &g), PRS_EINVAL);
    ASSERT_EQ_I64(ta.calls, 0);
}

/* ---- tables at explicit times ------------------------------------------- */

TEST(gcra_table_full_exhaust_refill) {
    const int64_t T = 100 * MS, t0 = 1000 * SEC;
    prs_gcra *g = make_gcra(10, 5);
    ASSERT_EQ_I64(prs_gcra_interval_ns(g), T);

    /* Starts full. */
    ASSERT_NEAR(prs_gcra_available(g, t0), 5.0, 0);
    prs_decision d = peek(g, t0, 1);
    sane(&d, 5);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 4);
    ASSERT_EQ_I64(d.reset_after_ns, T); /* as check would say */
    ASSERT(peek(g, t0, 5).allowed);
    ASSERT_EQ_I64(peek(g, t0, 5).reset_after_ns, 5 * T);
    ASSERT_EQ_I64(peek(g, t0, 5).remaining, 0);

    /* Exhaust: five admitted at the same instant. */
    for (int k = 1; k <= 5; k++) {
        d = check(g, t0, 1);
        sane(&d, 5);
        ASSERT(d.allowed);
        ASSERT_EQ_I64(d.remaining, 5 - k);
        ASSERT_EQ_I64(d.reset_after_ns, k * T);
        ASSERT_NEAR(prs_gcra_available(g, t0), 5.0 - k, 1e-12);
    }
    d = check(g, t0, 1);
    sane(&d, 5);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.retry_after_ns, T);
    ASSERT_EQ_I64(d.reset_after_ns, 5 * T);
    assert_exact(g, t0, 1, T);
    ASSERT_EQ_I64(peek(g, t0, 2).retry_after_ns, 2 * T);
    ASSERT_EQ_I64(peek(g, t0, 5).retry_after_ns, 5 * T);
    assert_exact(g, t0, 5, 5 * T);

    /* Exactly one interval later, exactly one more. */
    d = check(g, t0 + T, 1);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, 5 * T);
    ASSERT(!check(g, t0 + T, 1).allowed);

    /* Partial refill: half an interval is half a request. */
    const int64_t t1 = t0 + T + T / 2;
    ASSERT_NEAR(prs_gcra_available(g, t1), 0.5, 1e-12);
    d = check(g, t1, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, T / 2);
    ASSERT_EQ_I64(d.reset_after_ns, 5 * T - T / 2);
    assert_exact(g, t1, 1, T / 2);

    /* Three intervals after the last admission: two whole ones back. */
    const int64_t t2 = t0 + 3 * T;
    ASSERT_NEAR(prs_gcra_available(g, t2), 2.0, 1e-12);
    ASSERT_EQ_I64(peek(g, t2, 3).retry_after_ns, T);
    d = check(g, t2, 2);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(g, t2, 1).allowed);

    /* A long idle time refills to the burst and no further. */
    const int64_t t3 = t0 + 3600 * SEC;
    ASSERT_NEAR(prs_gcra_available(g, t3), 5.0, 0);
    d = check(g, t3, 5);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(g, t3, 1).allowed);
    prs_gcra_free(g);
}

TEST(gcra_peek_does_not_consume) {
    const int64_t t0 = 50 * SEC;
    prs_gcra *g = make_gcra(2, 3);
    for (int i = 0; i < 1000; i++) {
        prs_decision d = peek(g, t0, 1 + i % 3);
        ASSERT(d.allowed);
        ASSERT_EQ_I64(d.remaining, 3 - (1 + i % 3));
    }
    ASSERT_NEAR(prs_gcra_available(g, t0), 3.0, 0);
    ASSERT(check(g, t0, 3).allowed);
    prs_decision d1 = peek(g, t0, 1), d2 = peek(g, t0, 1);
    ASSERT(!d1.allowed);
    ASSERT_EQ_I64(d1.retry_after_ns, d2.retry_after_ns);
    ASSERT_EQ_I64(d1.reset_after_ns, d2.reset_after_ns);
    ASSERT_NEAR(prs_gcra_available(g, t0), 0.0, 0);
    prs_gcra_free(g);
}

TEST(gcra_reset) {
    const int64_t t0 = 7 * SEC;
    prs_gcra *g = make_gcra(1, 4);
    ASSERT(check(g, t0, 4).allowed);
    ASSERT(!check(g, t0, 1).allowed);
    prs_gcra_reset(g);
    ASSERT_NEAR(prs_gcra_available(g, t0), 4.0, 0);
    prs_decision d = check(g, t0, 4);
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(g, t0, 1).allowed);
    /* After a reset the limiter is full even at an earlier instant. */
    prs_gcra_reset(g);
    ASSERT(check(g, 0, 4).allowed);
    prs_gcra_reset(g);
    prs_gcra_reset(g);
    ASSERT_NEAR(prs_gcra_available(g, 0), 4.0, 0);
    prs_gcra_free(g);
}

TEST(gcra_n_above_burst_never) {
    const int64_t t0 = SEC;
    prs_gcra *g = make_gcra(1000, 10);
    const int64_t ns[] = {11, 12, 1000, INT64_MAX / 2, INT64_MAX};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        prs_decision d = check(g, t0, ns[i]);
        sane(&d, 10);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
        ASSERT_EQ_I64(d.remaining, 10);
        ASSERT_EQ_I64(d.reset_after_ns, 0);
        d = peek(g, t0, ns[i]);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    }
    /* Nothing was consumed; n == burst is fine. */
    ASSERT(check(g, t0, 10).allowed);
    prs_decision d = check(g, t0, 11);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, 10 * MS);
    /* Still never, even much later. */
    ASSERT_EQ_I64(check(g, t0 + 3600 * SEC, 11).retry_after_ns, PRS_NEVER);
    prs_gcra_free(g);
}

TEST(gcra_backwards_clock_creates_nothing) {
    const int64_t T = 100 * MS, t0 = 10 * SEC;
    prs_gcra *g = make_gcra(10, 5);
    ASSERT(check(g, t0, 5).allowed);
    /* Earlier instants: nothing available, and the wait counts from there. */
    const int64_t back[] = {t0 - 1, t0 - T, t0 - 5 * SEC, 0, -100 * SEC};
    for (size_t i = 0; i < sizeof back / sizeof back[0]; i++) {
        ASSERT_NEAR(prs_gcra_available(g, back[i]), 0.0, 0);
        prs_decision d = check(g, back[i], 1);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, t0 + T - back[i]);
        assert_exact(g, back[i], 1, t0 + T - back[i]);
    }
    ASSERT(!check(g, t0 + T - 1, 1).allowed);
    ASSERT(check(g, t0 + T, 1).allowed);
    ASSERT(!check(g, t0 + T, 1).allowed);
    ASSERT(!check(g, t0, 1).allowed);
    prs_gcra_free(g);
}

TEST(gcra_backwards_clock_random_bound) {
    /* Whatever order the instants come in, the admitted count over them is at
     * most burst + (latest - earliest) / T. */
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int round = 0; round < 50; round++) {
        const int64_t burst = rng_range(&seed, 1, 20);
        prs_gcra *g = make_gcra(1e9 / (double)(rng_range(&seed, 1, 1000) * MS), burst);
        const int64_t T = prs_gcra_interval_ns(g); /* the ms asked, or 1 ns more */
        int64_t lo = INT64_MAX, hi = INT64_MIN, admitted = 0, frontier = 1000 * SEC;
        for (int i = 0; i < 2000; i++) {
            int64_t now = frontier - rng_range(&seed, 0, 20 * T);
            if (rng_range(&seed, 0, 3) == 0) frontier += rng_range(&seed, 0, T);
            int64_t n = rng_range(&seed, 1, burst);
            prs_decision d = check(g, now, n);
            sane(&d, burst);
            if (d.allowed) {
                admitted += n;
                lo = min64(lo, now);
                hi = max64(hi, now);
            }
        }
        ASSERT_GT_I64(admitted, 0);
        ASSERT_LE_I64(admitted, burst + (hi - lo) / T);
        prs_gcra_free(g);
    }
}

/* ---- extremes ----------------------------------------------------------- */

TEST(gcra_saturation_near_int64_max) {
    /* T = 1 s, 2.5 s before the end of time: two fit, the third would put the
     * arrival time past INT64_MAX and is never admitted (no wrap-around). */
    const int64_t near = INT64_MAX - 2 * SEC - SEC / 2;
    prs_gcra *g = make_gcra(1, 3);
    ASSERT(check(g, near, 1).allowed);
    ASSERT(check(g, near, 1).allowed);
    prs_decision d = check(g, near, 1);
    sane(&d, 3);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    d = check(g, INT64_MAX, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_GE_I64(prs_gcra_available(g, INT64_MAX), 0.0);
    ASSERT_LE_I64(prs_gcra_available(g, INT64_MAX), 3.0);
    /* A fresh limiter at the very last instant: nothing fits before the end. */
    prs_gcra_reset(g);
    d = check(g, INT64_MAX, 1);
    sane(&d, 3);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_NEAR(prs_gcra_available(g, INT64_MAX), 3.0, 0);
    prs_gcra_free(g);

    /* T = 1 ns: the limiter works normally right up to the end. */
    g = make_gcra(1e9, 100);
    const int64_t t = INT64_MAX - 1000;
    ASSERT(check(g, t, 100).allowed);
    d = check(g, t, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 1);
    assert_exact(g, t, 1, 1);
    assert_exact(g, t, 100, 100);
    ASSERT(check(g, t + 1, 1).allowed);
    ASSERT(check(g, INT64_MAX - 1, 1).allowed); /* tat reaches INT64_MAX - 1 + 1 */
    ASSERT_EQ_I64(check(g, INT64_MAX, 1).retry_after_ns, PRS_NEVER);
    prs_gcra_free(g);
}

TEST(gcra_saturation_near_int64_min) {
    prs_gcra *g = make_gcra(1, 2);
    prs_decision d = check(g, INT64_MIN, 1);
    sane(&d, 2);
    ASSERT(d.allowed);
    ASSERT(check(g, INT64_MIN, 1).allowed);
    d = check(g, INT64_MIN, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    assert_exact(g, INT64_MIN, 1, SEC);
    ASSERT_NEAR(prs_gcra_available(g, 0), 2.0, 0);
    ASSERT(check(g, INT64_MIN + SEC, 1).allowed);
    /* From the far past to the far future in one step. */
    ASSERT_NEAR(prs_gcra_available(g, INT64_MAX - 10 * SEC), 2.0, 0);
    ASSERT(check(g, INT64_MAX - 10 * SEC, 2).allowed);
    prs_gcra_free(g);
}

TEST(gcra_clock_span_beyond_int64) {
    /* The arrival time sits near INT64_MAX and a request comes at a time near
     * INT64_MIN: the true wait is beyond int64 nanoseconds. It must not be
     * reported as a finite wait that then fails (exactness), nor wrap. */
    prs_gcra *g = make_gcra(1, 2);
    const int64_t late = INT64_MAX - 10 * SEC;
    ASSERT(check(g, late, 2).allowed);
    const int64_t early[] = {INT64_MIN, INT64_MIN + 5, -SEC, -1000 * SEC};
    for (size_t i = 0; i < sizeof early / sizeof early[0]; i++) {
        prs_decision d = check(g, early[i], 1);
        sane(&d, 2);
        ASSERT(!d.allowed);
        ASSERT_NEAR(prs_gcra_available(g, early[i]), 0.0, 0);
        if (d.retry_after_ns != PRS_NEVER) {
            /* finite: then the instant it names is representable and exact */
            int64_t at;
            ASSERT(!__builtin_add_overflow(early[i], d.retry_after_ns, &at));
            assert_exact(g, early[i], 1, d.retry_after_ns);
        }
    }
    prs_gcra_free(g);
}

TEST(gcra_rates_1e_minus9_to_1e9) {
    const double rates[] = {1e-9, 3e-9, 1e-6, 1e-3, 0.3, 1, 7, 1000, 123456.7, 1e6, 3e8, 1e9};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        for (int64_t burst = 1; burst <= 8; burst *= 2) {
            prs_gcra *g = make_gcra(rates[i], burst);
            const int64_t T = prs_gcra_interval_ns(g), t0 = 1000 * SEC;
            /* never faster than asked, and less than 1 ns slower per request */
            ASSERT((double)T >= 1e9 / rates[i] * (1.0 - 1e-15));
            ASSERT((double)T < 1e9 / rates[i] * (1.0 + 1e-15) + 1.0);
            prs_decision d = check(g, t0, burst);
            ASSERT(d.allowed);
            ASSERT_EQ_I64(d.reset_after_ns, burst * T);
            d = check(g, t0, 1);
            ASSERT(!d.allowed);
            ASSERT_EQ_I64(d.retry_after_ns, T);
            assert_exact(g, t0, 1, T);
            /* Steady state: one per interval, exactly. */
            const int64_t kmax = min64(20, (INT64_MAX - t0) / T - burst - 1); /* tat stays burst*T ahead */
            ASSERT_GE_I64(kmax, 0);
            for (int64_t k = 1; k <= kmax; k++) {
                const int64_t t = t0 + k * T;
                ASSERT(!check(g, t - 1, 1).allowed);
                if (!check(g, t, 1).allowed)
                    PRS__FAIL("rate %g burst %" PRId64 " k %" PRId64, rates[i], burst, k);
                ASSERT(!check(g, t, 1).allowed);
            }
            prs_gcra_free(g);
        }
    }
}

/* ---- randomized against a reference model ------------------------------- */

/* The reference: the textbook GCRA over an int64 arrival time, written
 * independently of gcra.c (no shared code), with every case spelled out. */
typedef struct model {
    int64_t T, burst, tat; /* tat: INT64_MIN = never used */
} model;

static prs_decision model_decide(model *m, int64_t now, int64_t n, int consume) {
    prs_decision d = {0, m->burst, 0, 0, 0};
    const int64_t tol = m->burst * m->T;
    const int64_t level = m->tat == INT64_MIN || m->tat <= now ? 0 : m->tat - now; /* ns owed */
    const int64_t free_ns = level >= tol ? 0 : tol - level;
    if (n > m->burst) {
        d.remaining = free_ns / m->T;
        d.retry_after_ns = PRS_NEVER;
        d.reset_after_ns = level;
        return d;
    }
    if (level + n * m->T <= tol) {
        d.allowed = 1;
        d.remaining = (free_ns - n * m->T) / m->T;
        d.reset_after_ns = level + n * m->T; /* peek too: the state check would leave */
        if (consume) m->tat = now + level + n * m->T;
    } else {
        d.remaining = free_ns / m->T;
        d.retry_after_ns = level + n * m->T - tol;
        d.reset_after_ns = level;
    }
    return d;
}

static void assert_same(const prs_decision *a, const prs_decision *b, int step) {
    if (a->allowed != b->allowed || a->limit != b->limit || a->remaining != b->remaining ||
        a->retry_after_ns != b->retry_after_ns || a->reset_after_ns != b->reset_after_ns)
        PRS__FAIL("step %d: got {allowed %d limit %" PRId64 " remaining %" PRId64
                  " retry %" PRId64 " reset %" PRId64 "}, expected {%d %" PRId64 " %" PRId64
                  " %" PRId64 " %" PRId64 "}",
                  step, a->allowed, a->limit, a->remaining, a->retry_after_ns, a->reset_after_ns,
                  b->allowed, b->limit, b->remaining, b->retry_after_ns, b->reset_after_ns);
}

TEST(gcra_random_vs_model_and_exactness) {
    uint64_t seed = 0xD1B54A32D192ED03u;
    const double rates[] = {1e-3, 0.5, 1, 3, 10, 1000, 7777, 1e6, 1e9};
    int exact_checks = 0;
    for (int round = 0; round < 60; round++) {
        const double rate = rates[rng_range(&seed, 0, sizeof rates / sizeof rates[0] - 1)];
        const int64_t burst = rng_range(&seed, 1, 12);
        prs_gcra *g = make_gcra(rate, burst);
        model m = {prs_gcra_interval_ns(g), burst, INT64_MIN};
        const int64_t T = m.T;
        int64_t now = rng_range(&seed, -1000000, 1000000) * SEC;
        for (int step = 0; step < 3000; step++) {
            switch (rng_range(&seed, 0, 7)) {
            case 0: break;                                          /* same instant */
            case 1: now += rng_range(&seed, 0, T); break;           /* within an interval */
            case 2: now += rng_range(&seed, 0, burst * T); break;
            case 3: now += rng_range(&seed, 0, 3 * burst * T); break;
            case 4: now -= rng_range(&seed, 0, 2 * T); break;       /* clock steps back */
            default: now += T; break;
            }
            int64_t n = rng_range(&seed, 0, 15) == 0 ? burst + 1 : rng_range(&seed, 1, burst);
            int op = (int)rng_range(&seed, 0, 99);
            if (op == 0) {
                prs_gcra_reset(g);
                m.tat = INT64_MIN;
                continue;
            }
            int consume = op >= 25;
            prs_decision want = model_decide(&m, now, n, consume);
            const prs_decision before = peek(g, now, n);
            prs_decision got = consume ? check(g, now, n) : peek(g, now, n);
            sane(&got, burst);
            assert_same(&got, &want, step);
            assert_same(&before, &got, step); /* peek says what check then does */
            ASSERT_NEAR(prs_gcra_available(g, now),
                        (double)(burst * T - (m.tat == INT64_MIN || m.tat <= now ? 0
                                              : min64(m.tat - now, burst * T))) / (double)T,
                        1e-9 * (double)burst);
            if (!got.allowed && got.retry_after_ns != PRS_NEVER) {
                assert_exact(g, now, n, got.retry_after_ns);
                exact_checks++;
            }
        }
        prs_gcra_free(g);
    }
    ASSERT_GT_I64(exact_checks, 1000);
}

/* ---- threads ------------------------------------------------------------- */

typedef struct hammer {
    prs_gcra *g;
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
        if (prs_gcra_check(h->g, now, h->n, &d) != PRS_OK) abort();
        if (d.allowed) {
            h->admitted += h->n;
            if (now < h->lo) h->lo = now;
            if (now > h->hi) h->hi = now;
        }
    }
    return NULL;
}

static int64_t run_hammer(prs_gcra *g, int nthreads, int64_t n, int64_t iters, _Atomic int64_t *clock,
                          int64_t now, int64_t step, int64_t *lo, int64_t *hi) {
    pthread_barrier_t start;
    pthread_t tid[8];
    hammer h[8];
    ASSERT(nthreads <= 8);
    ASSERT_EQ_I64(pthread_barrier_init(&start, NULL, (unsigned)nthreads), 0);
    for (int i = 0; i < nthreads; i++) {
        h[i] = (hammer){g, &start, n, iters, 0, clock, now, step, 0, 0};
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

TEST(gcra_threads_frozen_admit_exactly_burst) {
    for (int round = 0; round < 5; round++) {
        prs_gcra *g = make_gcra(1, 1000);
        ASSERT_EQ_I64(run_hammer(g, 4, 1, 20000, NULL, 5 * SEC, 0, NULL, NULL), 1000);
        ASSERT_NEAR(prs_gcra_available(g, 5 * SEC), 0.0, 0);
        prs_gcra_free(g);
        /* weight 3: 333 requests fit in 1000 */
        g = make_gcra(1, 1000);
        ASSERT_EQ_I64(run_hammer(g, 4, 3, 20000, NULL, 5 * SEC, 0, NULL, NULL), 999);
        ASSERT_NEAR(prs_gcra_available(g, 5 * SEC), 1.0, 0);
        prs_gcra_free(g);
    }
}

TEST(gcra_threads_moving_clock_bound) {
    /* Threads read a shared clock and race: each one's `now` may be behind
     * another's by the time it reaches the limiter (a clock stepping back).
     * Admitted stays within burst + (latest - earliest) / T. */
    prs_gcra *g = make_gcra(1000, 50); /* T = 1 ms */
    _Atomic int64_t clock = 100 * SEC;
    int64_t lo, hi;
    int64_t admitted = run_hammer(g, 4, 1, 50000, &clock, 0, 10 * PRS_NS_PER_US, &lo, &hi);
    ASSERT_GT_I64(admitted, 50);
    ASSERT_LE_I64(admitted, 50 + (hi - lo) / MS);
    prs_gcra_free(g);
}

/* ---- the prs_algo descriptor ---------------------------------------------- */

TEST(gcra_algo_descriptor_agrees_with_object) {
    const prs_algo *a = &prs_algo_gcra;
    ASSERT_STREQ(a->name, "gcra");
    uint64_t seed = 0x243F6A8885A308D3u;
    for (int round = 0; round < 40; round++) {
        const int64_t burst = rng_range(&seed, 1, 10);
        const double rate = (double)rng_range(&seed, 1, 5000) / 10.0;
        prs_gcra *obj = make_gcra(rate, burst);
        prs_gcra *tmpl = make_gcra(rate, burst);
        const void *params = prs_gcra_params(tmpl);
        ASSERT(params != NULL);
        const size_t size = a->state_size(params);
        ASSERT(size > 0 && size <= PRS_ALGO_MAX_INLINE_STATE);
        _Alignas(16) unsigned char state[PRS_ALGO_MAX_INLINE_STATE];
        memset(state, 0xEE, sizeof state);
        a->state_init(params, state);
        const int64_t T = prs_gcra_interval_ns(obj);
        int64_t now = rng_range(&seed, 0, 1000) * SEC;
        for (int step = 0; step < 2000; step++) {
            now += rng_range(&seed, -T, 2 * T);
            const int64_t n = rng_range(&seed, 1, burst + 1);
            const int consume = rng_range(&seed, 0, 3) != 0;
            prs_decision want = consume ? check(obj, now, n) : peek(obj, now, n), got;
            ASSERT_OK(a->decide(params, state, now, n, consume, &got));
            assert_same(&got, &want, step);
            ASSERT_NEAR(a->available(params, state, now), prs_gcra_available(obj, now), 0);
            ASSERT_EQ_I64(a->is_fresh(params, state, now), prs_gcra_available(obj, now) == (double)burst);
        }
        prs_decision d;
        ASSERT_STATUS(a->decide(params, state, now, 0, 1, &d), PRS_EINVAL);
        ASSERT_STATUS(a->decide(NULL, state, now, 1, 1, &d), PRS_EINVAL);
        ASSERT_STATUS(a->decide(params, NULL, now, 1, 1, &d), PRS_EINVAL);
        ASSERT_STATUS(a->decide(params, state, now, 1, 1, NULL), PRS_EINVAL);
        prs_gcra_free(obj);
        prs_gcra_free(tmpl);
    }
}

TEST(gcra_algo_refund_and_is_fresh) {
    const prs_algo *a = &prs_algo_gcra;
    prs_gcra *tmpl = make_gcra(10, 5); /* T = 100 ms */
    const void *p = prs_gcra_params(tmpl);
    const int64_t T = 100 * MS, t0 = 20 * SEC;
    _Alignas(16) unsigned char s[PRS_ALGO_MAX_INLINE_STATE];
    a->state_init(p, s);
    prs_decision d;

    /* Fresh at every instant, before any use. */
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT(a->is_fresh(p, s, INT64_MIN));
    ASSERT(a->is_fresh(p, s, INT64_MAX));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);
    a->refund(p, s, t0, 3); /* refund on a fresh state: still fresh, no more than full */
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);

    /* One taken: not fresh until one interval has passed. */
    ASSERT_OK(a->decide(p, s, t0, 1, 1, &d));
    ASSERT(d.allowed);
    ASSERT(!a->is_fresh(p, s, t0));
    ASSERT(!a->is_fresh(p, s, t0 + T - 1));
    ASSERT(a->is_fresh(p, s, t0 + T));
    /* Refunded: fresh again at once. */
    a->refund(p, s, t0, 1);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);

    /* Take 4, give back 1: 2 left; give back more than taken: full, not more. */
    ASSERT_OK(a->decide(p, s, t0, 4, 1, &d));
    ASSERT(d.allowed);
    ASSERT_NEAR(a->available(p, s, t0), 1.0, 1e-12);
    a->refund(p, s, t0, 1);
    ASSERT_NEAR(a->available(p, s, t0), 2.0, 1e-12);
    ASSERT(!a->is_fresh(p, s, t0));
    a->refund(p, s, t0, 0);  /* ignored */
    a->refund(p, s, t0, -5); /* ignored */
    ASSERT_NEAR(a->available(p, s, t0), 2.0, 1e-12);
    a->refund(p, s, t0, 100);
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_OK(a->decide(p, s, t0, 5, 1, &d));
    ASSERT(d.allowed);
    ASSERT_OK(a->decide(p, s, t0, 1, 1, &d));
    ASSERT(!d.allowed);

    /* A refund of a huge n saturates instead of wrapping. */
    a->refund(p, s, t0, INT64_MAX);
    ASSERT(a->is_fresh(p, s, t0));
    ASSERT_NEAR(a->available(p, s, t0), 5.0, 0);

    /* Refund after time has partly refilled: capped at full. */
    ASSERT_OK(a->decide(p, s, t0, 2, 1, &d));
    ASSERT(d.allowed);
    a->refund(p, s, t0 + T, 2);
    ASSERT(a->is_fresh(p, s, t0 + T));
    ASSERT_NEAR(a->available(p, s, t0 + T), 5.0, 0);
    prs_gcra_free(tmpl);
}
