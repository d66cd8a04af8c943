/*
 * test_retry.c - the backoff policy, its jitter strategies and generator, the
 * "sleep or give up" step, and the retry budget: tables at explicit times,
 * bounds, threads, allocation failure.
 */
#include "prs_test.h"
#include "prs_retry.h"

#include <pthread.h>
#include <stdint.h>

static prs_retry *make_policy(int64_t max_attempts, double base, double maxd, double expb,
                              int jitter, uint64_t seed) {
    prs_retry_config c;
    prs_retry_config_init(&c);
    c.max_attempts = max_attempts;
    c.base_delay = base;
    c.max_delay = maxd;
    c.exponential_base = expb;
    c.jitter = jitter;
    c.has_seed = 1;
    c.seed = seed;
    prs_retry *r = NULL;
    ASSERT_OK(prs_retry_new(&c, &r));
    return r;
}

static prs_retry_budget *make_budget(double ratio, double floor_ps, double window) {
    prs_retry_budget_config c;
    prs_retry_budget_config_init(&c);
    c.ratio = ratio;
    c.min_retries_per_second = floor_ps;
    c.window = window;
    prs_retry_budget *b = NULL;
    ASSERT_OK(prs_retry_budget_new(&c, &b));
    return b;
}

#define S(x) ((int64_t)((x) * 1e9))

/* ---- names, generator -------------------------------------------------- */

TEST(retry_jitter_names) {
    const char *names[] = {"none", "full", "equal", "decorrelated", "proportional"};
    for (int i = 0; i < 5; i++) {
        prs_jitter j;
        ASSERT_OK(prs_jitter_parse(names[i], &j));
        ASSERT_EQ(j, i);
        ASSERT_STREQ(prs_jitter_name(i), names[i]);
    }
    prs_jitter j;
    ASSERT_STATUS(prs_jitter_parse("exponential", &j), PRS_EINVAL);
    ASSERT_STATUS(prs_jitter_parse("", &j), PRS_EINVAL);
    ASSERT_STATUS(prs_jitter_parse(NULL, &j), PRS_EINVAL);
    ASSERT(prs_jitter_name(-1) == NULL);
    ASSERT(prs_jitter_name(PRS__JITTER_COUNT) == NULL);
}

TEST(retry_splitmix64_vectors) {
    /* The published SplitMix64 outputs for seed 0. */
    uint64_t s = 0;
    ASSERT(prs_splitmix64_next(&s) == UINT64_C(0xe220a8397b1dcdaf));
    ASSERT(prs_splitmix64_next(&s) == UINT64_C(0x6e789e6aa1b965f4));
    ASSERT(prs_splitmix64_next(&s) == UINT64_C(0x06c45d188009454f));
    /* The policy's atomic generator draws the same sequence. */
    prs_retry *r = make_policy(3, 1, 60, 2, PRS_JITTER_FULL, 0);
    uint64_t t = 0;
    for (int i = 0; i < 1000; i++) ASSERT(prs_retry_next_u64(r) == prs_splitmix64_next(&t));
    prs_retry_seed(r, 0);
    ASSERT(prs_retry_next_u64(r) == UINT64_C(0xe220a8397b1dcdaf));
    ASSERT(prs_unit_from_u64(0) == 0.0);
    ASSERT(prs_unit_from_u64(UINT64_MAX) < 1.0);
    prs_retry_free(r);
    ASSERT(prs_random_seed() != prs_random_seed());
}

TEST(retry_seed_reproducible) {
    prs_retry *a = make_policy(10, 0.5, 30, 2, PRS_JITTER_PROPORTIONAL, 42);
    prs_retry *b = make_policy(10, 0.5, 30, 2, PRS_JITTER_PROPORTIONAL, 42);
    prs_retry *c = make_policy(10, 0.5, 30, 2, PRS_JITTER_PROPORTIONAL, 43);
    int same_as_c = 0;
    for (int i = 0; i < 100; i++) {
        double x = prs_retry_delay(a, i % 8, 0), y = prs_retry_delay(b, i % 8, 0);
        ASSERT(x == y);
        same_as_c += x == prs_retry_delay(c, i % 8, 0);
    }
    ASSERT_LT_I64(same_as_c, 5);
    /* Unseeded policies differ. */
    prs_retry_config cfg;
    prs_retry_config_init(&cfg);
    prs_retry *u1, *u2;
    ASSERT_OK(prs_retry_new(&cfg, &u1));
    ASSERT_OK(prs_retry_new(&cfg, &u2));
    ASSERT(prs_retry_next_u64(u1) != prs_retry_next_u64(u2));
    prs_retry_free(a); prs_retry_free(b); prs_retry_free(c); prs_retry_free(u1); prs_retry_free(u2);
}

/* ---- config ------------------------------------------------------------- */

TEST(retry_config_validate) {
    prs_retry_config c;
    prs_retry_config_init(&c);
    ASSERT_EQ(c.max_attempts, 3);
    ASSERT(c.base_delay == 1.0 && c.max_delay == 60.0 && c.exponential_base == 2.0);
    ASSERT_EQ(c.jitter, PRS_JITTER_PROPORTIONAL);
    ASSERT_OK(prs_retry_config_validate(&c));
    struct { int64_t att; double base, maxd, expb; int jitter; int want; } rows[] = {
        {1, 0, 0, 0, PRS_JITTER_NONE, PRS_OK},
        {1000000, 1, 1, 1, PRS_JITTER_DECORRELATED, PRS_OK},
        {0, 1, 60, 2, 0, PRS_EINVAL},
        {-5, 1, 60, 2, 0, PRS_EINVAL},
        {3, -1, 60, 2, 0, PRS_EINVAL},
        {3, NAN, 60, 2, 0, PRS_EINVAL},
        {3, INFINITY, INFINITY, 2, 0, PRS_EINVAL},
        {3, 1, NAN, 2, 0, PRS_EINVAL},
        {3, 1, INFINITY, 2, 0, PRS_EINVAL},
        {3, 2, 1, 2, 0, PRS_EINVAL},             /* max_delay < base_delay */
        {3, 1, 60, -2, 0, PRS_EINVAL},
        {3, 1, 60, NAN, 0, PRS_EINVAL},
        {3, 1, 60, INFINITY, 0, PRS_EINVAL},
        {3, 1, 60, 2, -1, PRS_EINVAL},
        {3, 1, 60, 2, PRS__JITTER_COUNT, PRS_EINVAL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        c.max_attempts = rows[i].att;
        c.base_delay = rows[i].base;
        c.max_delay = rows[i].maxd;
        c.exponential_base = rows[i].expb;
        c.jitter = rows[i].jitter;
        ASSERT_STATUS(prs_retry_config_validate(&c), rows[i].want);
        prs_retry *r = (prs_retry *)&c; /* poison: must become NULL on error */
        int rc = prs_retry_new(&c, &r);
        ASSERT_STATUS(rc, rows[i].want);
        if (rc) ASSERT(r == NULL);
        prs_retry_free(r);
    }
    ASSERT_STATUS(prs_retry_config_validate(NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_retry_new(NULL, NULL), PRS_EINVAL);

    /* max_retry_after: default 300 s; >= 0, +inf allowed (no limit). */
    prs_retry_config_init(&c);
    ASSERT(c.max_retry_after == PRS_RETRY_DEFAULT_MAX_RETRY_AFTER && c.max_retry_after == 300.0);
    double mra[] = {0.0, 1e-9, 300.0, 1e300, INFINITY, -1e-9, -INFINITY, NAN};
    int mra_want[] = {PRS_OK, PRS_OK, PRS_OK, PRS_OK, PRS_OK, PRS_EINVAL, PRS_EINVAL, PRS_EINVAL};
    for (size_t i = 0; i < sizeof mra / sizeof mra[0]; i++) {
        c.max_retry_after = mra[i];
        ASSERT_STATUS(prs_retry_config_validate(&c), mra_want[i]);
        prs_retry *r = NULL;
        ASSERT_STATUS(prs_retry_new(&c, &r), mra_want[i]);
        if (r) {
            prs_retry_config back;
            prs_retry_get_config(r, &back);
            ASSERT(back.max_retry_after == mra[i]);
        }
        prs_retry_free(r);
    }
}

/* ---- the formula -------------------------------------------------------- */

TEST(retry_base_delay_table) {
    prs_retry *r = make_policy(3, 1.0, 60.0, 2.0, PRS_JITTER_NONE, 1);
    double want[] = {1, 2, 4, 8, 16, 32, 60, 60, 60};
    for (int i = 0; i < 9; i++) ASSERT(prs_retry_base_delay(r, i) == want[i]);
    ASSERT(prs_retry_base_delay(r, 1000000) == 60.0);
    ASSERT(prs_retry_base_delay(r, INT64_MAX) == 60.0);
    ASSERT(prs_retry_base_delay(r, -3) == 1.0);
    /* jitter none: the delay is the formula. */
    for (int i = 0; i < 9; i++) ASSERT(prs_retry_delay(r, i, 0) == want[i]);
    prs_retry_free(r);

    /* The exact float expression, for awkward values. */
    double bases[] = {0.1, 0.01, 0.3, 1e-9};
    double exps[] = {1.5, 3.0, 2.0, 10.0, 0.5, 1.1};
    for (int b = 0; b < 4; b++) {
        for (int e = 0; e < 6; e++) {
            r = make_policy(3, bases[b], 1e6, exps[e], PRS_JITTER_NONE, 1);
            for (int64_t a = 0; a < 200; a++) {
                double f = bases[b] * pow(exps[e], (double)a);
                if (f > 1e6) f = 1e6;
                ASSERT(prs_retry_base_delay(r, a) == f);
            }
            prs_retry_free(r);
        }
    }
}

TEST(retry_base_delay_edge_bases) {
    /* exponential_base 0: base_delay, then 0 (0 ** 0 == 1). */
    prs_retry *r = make_policy(3, 2.0, 60.0, 0.0, PRS_JITTER_NONE, 1);
    ASSERT(prs_retry_base_delay(r, 0) == 2.0);
    ASSERT(prs_retry_base_delay(r, 1) == 0.0);
    ASSERT(prs_retry_base_delay(r, 1000000) == 0.0);
    prs_retry_free(r);
    /* exponential_base 1: constant, for every attempt. */
    r = make_policy(3, 2.5, 60.0, 1.0, PRS_JITTER_NONE, 1);
    ASSERT(prs_retry_base_delay(r, 0) == 2.5);
    ASSERT(prs_retry_base_delay(r, 1000000) == 2.5);
    ASSERT(prs_retry_base_delay(r, INT64_MAX) == 2.5);
    prs_retry_free(r);
    /* base_delay 0 with a huge exponent: 0, never NaN. */
    r = make_policy(3, 0.0, 0.0, 10.0, PRS_JITTER_NONE, 1);
    ASSERT(prs_retry_base_delay(r, 1000000) == 0.0);
    prs_retry_free(r);
    r = make_policy(3, 0.0, 5.0, 10.0, PRS_JITTER_PROPORTIONAL, 1);
    for (int i = 0; i < 100; i++) ASSERT(prs_retry_delay(r, 1000000, 0) == 0.0);
    prs_retry_free(r);
    /* A base below 1 decays to 0 without underflow trouble. */
    r = make_policy(3, 1.0, 1.0, 0.5, PRS_JITTER_NONE, 1);
    ASSERT(prs_retry_base_delay(r, 2) == 0.25);
    ASSERT(prs_retry_base_delay(r, 1000000) == 0.0);
    prs_retry_free(r);
    /* Huge base, tiny max: capped at once. */
    r = make_policy(3, 1e-300, 1e-300, 1e300, PRS_JITTER_NONE, 1);
    ASSERT(prs_retry_base_delay(r, 1000000) == 1e-300);
    prs_retry_free(r);
}

/* ---- jitter bounds and moments ------------------------------------------ */

TEST(retry_jitter_bounds) {
    const int N = 100000;
    for (int j = 0; j < PRS__JITTER_COUNT; j++) {
        prs_retry *r = make_policy(10, 0.5, 20.0, 2.0, j, 1234 + j);
        for (int64_t attempt = 0; attempt < 8; attempt++) {
            double d = prs_retry_base_delay(r, attempt);
            double sum = 0, lo = INFINITY, hi = -INFINITY;
            for (int i = 0; i < N; i++) {
                double prev = 0.5 * (double)(attempt + 1);
                double x = prs_retry_delay(r, attempt, prev);
                ASSERT(isfinite(x) && x >= 0.0);
                switch (j) {
                case PRS_JITTER_NONE: ASSERT(x == d); break;
                case PRS_JITTER_FULL: ASSERT(x >= 0.0 && x <= d); break;
                case PRS_JITTER_EQUAL: ASSERT(x >= d / 2 && x <= d); break;
                case PRS_JITTER_PROPORTIONAL: ASSERT(x >= d / 2 && x <= 1.5 * d); break;
                case PRS_JITTER_DECORRELATED: {
                    double top = 3 * prev < 20.0 ? 3 * prev : 20.0;
                    ASSERT(x >= 0.5 && x <= top);
                    break;
                }
                }
                sum += x;
                if (x < lo) lo = x;
                if (x > hi) hi = x;
            }
            double mean = sum / N, want = d;
            if (j == PRS_JITTER_FULL) want = d / 2;
            if (j == PRS_JITTER_EQUAL) want = 0.75 * d;
            if (j == PRS_JITTER_DECORRELATED) {
                double prev = 0.5 * (double)(attempt + 1), top = 3 * prev;
                want = top <= 20.0 ? (0.5 + top) / 2 : -1; /* capped: skip the mean */
            }
            if (want >= 0) ASSERT_NEAR(mean, want, 0.01 * (d > 1 ? d : 1) + 0.02 * want);
            if (j != PRS_JITTER_NONE && d > 0) ASSERT(hi > lo);
        }
        prs_retry_free(r);
    }
}

TEST(retry_decorrelated_chain) {
    /* Each delay is in [base, min(max, 3 * previous)]; the chain never passes max. */
    prs_retry *r = make_policy(100, 0.1, 5.0, 2.0, PRS_JITTER_DECORRELATED, 7);
    for (int run = 0; run < 1000; run++) {
        double prev = 0;
        for (int a = 0; a < 50; a++) {
            double x = prs_retry_delay(r, a, prev);
            double top = (prev > 0 ? prev : 0.1) * 3;
            ASSERT(x >= 0.1 && x <= (top < 5.0 ? top : 5.0));
            prev = x;
        }
    }
    /* NaN / negative / huge previous are handled. */
    ASSERT(prs_retry_delay(r, 0, NAN) <= 0.3);
    ASSERT(prs_retry_delay(r, 0, -1.0) <= 0.3);
    ASSERT(prs_retry_delay(r, 0, INFINITY) <= 5.0);
    ASSERT(prs_retry_delay(r, 0, 1e308) <= 5.0);
    prs_retry_free(r);
    /* base 0: stays 0. */
    r = make_policy(100, 0.0, 5.0, 2.0, PRS_JITTER_DECORRELATED, 7);
    ASSERT(prs_retry_delay(r, 0, 0) == 0.0);
    prs_retry_free(r);
}

/* ---- the step ------------------------------------------------------------ */

TEST(retry_next_table) {
    prs_retry *r = make_policy(4, 1.0, 10.0, 2.0, PRS_JITTER_NONE, 1);
    prs_retry_step s;
    struct { int64_t attempt; int64_t retry_after, remaining; int verdict; double delay; } rows[] = {
        /* attempts: 0, 1, 2 may retry; 3 is the last of 4 */
        {0, -1, PRS_NEVER, PRS_RETRY_SLEEP, 1.0},
        {1, -1, PRS_NEVER, PRS_RETRY_SLEEP, 2.0},
        {2, -1, PRS_NEVER, PRS_RETRY_SLEEP, 4.0},
        {3, -1, PRS_NEVER, PRS_RETRY_GIVE_UP_ATTEMPTS, 0},
        {99, -1, PRS_NEVER, PRS_RETRY_GIVE_UP_ATTEMPTS, 0},
        {-1, -1, PRS_NEVER, PRS_RETRY_SLEEP, 1.0},
        /* deadline: never sleep to or past it */
        {2, -1, S(4.000000001), PRS_RETRY_SLEEP, 4.0},
        {2, -1, S(4.0), PRS_RETRY_GIVE_UP_DEADLINE, 0},
        {2, -1, S(3.0), PRS_RETRY_GIVE_UP_DEADLINE, 0},
        {0, -1, 0, PRS_RETRY_GIVE_UP_DEADLINE, 0},
        {0, -1, -5, PRS_RETRY_GIVE_UP_DEADLINE, 0},
        /* Retry-After: a floor, never shortened by max_delay (10 s) */
        {0, S(3.0), PRS_NEVER, PRS_RETRY_SLEEP, 3.0},
        {2, S(3.0), PRS_NEVER, PRS_RETRY_SLEEP, 4.0},
        {0, S(30.0), PRS_NEVER, PRS_RETRY_SLEEP, 30.0},
        {0, S(300.0), PRS_NEVER, PRS_RETRY_SLEEP, 300.0},
        /* ... up to max_retry_after (300 s by default), then give up at once */
        {0, S(300.0) + 1, PRS_NEVER, PRS_RETRY_GIVE_UP_RETRY_AFTER_LIMIT, 0},
        {0, S(3600.0), S(7200.0), PRS_RETRY_GIVE_UP_RETRY_AFTER_LIMIT, 0},
        {0, 0, PRS_NEVER, PRS_RETRY_SLEEP, 1.0},
        {0, PRS_NEVER, PRS_NEVER, PRS_RETRY_GIVE_UP_RETRY_AFTER, 0},
        /* ... and past the remaining deadline: give up at once */
        {0, S(30.0), S(20.0), PRS_RETRY_GIVE_UP_RETRY_AFTER, 0},
        {0, S(30.0), S(40.0), PRS_RETRY_SLEEP, 30.0},
        {0, S(30.0), S(30.0), PRS_RETRY_GIVE_UP_DEADLINE, 0},
        {0, S(3.0), S(3.0), PRS_RETRY_GIVE_UP_DEADLINE, 0},
        {3, S(1.0), PRS_NEVER, PRS_RETRY_GIVE_UP_ATTEMPTS, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        ASSERT_OK(prs_retry_next(r, rows[i].attempt, 0, rows[i].retry_after, rows[i].remaining, &s));
        if (s.verdict != rows[i].verdict || s.delay != rows[i].delay)
            PRS__FAIL("row %zu: verdict %d delay %g, want %d %g", i, s.verdict, s.delay,
                      rows[i].verdict, rows[i].delay);
        ASSERT_EQ_I64(s.delay_ns, S(rows[i].delay));
    }
    ASSERT_STATUS(prs_retry_next(NULL, 0, 0, -1, PRS_NEVER, &s), PRS_EINVAL);
    ASSERT_STATUS(prs_retry_next(r, 0, 0, -1, PRS_NEVER, NULL), PRS_EINVAL);
    prs_retry_free(r);

    /* max_retry_after = 0: any positive Retry-After gives up; +inf: none does
     * (but PRS_NEVER still does). Odd ns values are kept exactly. */
    prs_retry_config c;
    prs_retry_config_init(&c);
    c.max_attempts = 4;
    c.jitter = PRS_JITTER_NONE;
    c.max_delay = 10.0;
    c.max_retry_after = 0.0;
    ASSERT_OK(prs_retry_new(&c, &r));
    ASSERT_OK(prs_retry_next(r, 0, 0, 1, PRS_NEVER, &s));
    ASSERT_EQ(s.verdict, PRS_RETRY_GIVE_UP_RETRY_AFTER_LIMIT);
    ASSERT_OK(prs_retry_next(r, 0, 0, 0, PRS_NEVER, &s));
    ASSERT_EQ(s.verdict, PRS_RETRY_SLEEP);
    ASSERT_EQ_I64(s.delay_ns, S(1.0));
    prs_retry_free(r);
    c.max_retry_after = INFINITY;
    ASSERT_OK(prs_retry_new(&c, &r));
    ASSERT_OK(prs_retry_next(r, 0, 0, PRS_NEVER - 1, PRS_NEVER, &s));
    ASSERT_EQ(s.verdict, PRS_RETRY_SLEEP);
    ASSERT_EQ_I64(s.delay_ns, PRS_NEVER - 1);
    ASSERT_OK(prs_retry_next(r, 0, 0, PRS_NEVER, PRS_NEVER, &s));
    ASSERT_EQ(s.verdict, PRS_RETRY_GIVE_UP_RETRY_AFTER);
    ASSERT_OK(prs_retry_next(r, 0, 0, S(12.5) + 7, PRS_NEVER, &s));
    ASSERT_EQ(s.verdict, PRS_RETRY_SLEEP);
    ASSERT_EQ_I64(s.delay_ns, S(12.5) + 7);
    prs_retry_free(r);

    /* One attempt in all: never retries. */
    r = make_policy(1, 1.0, 10.0, 2.0, PRS_JITTER_NONE, 1);
    ASSERT_OK(prs_retry_next(r, 0, 0, -1, PRS_NEVER, &s));
    ASSERT_EQ(s.verdict, PRS_RETRY_GIVE_UP_ATTEMPTS);
    prs_retry_free(r);

    /* Huge attempt counts stay capped. */
    r = make_policy(INT64_MAX, 1.0, 10.0, 2.0, PRS_JITTER_PROPORTIONAL, 1);
    for (int64_t a = 999990; a < 1000010; a++) {
        ASSERT_OK(prs_retry_next(r, a, 0, -1, PRS_NEVER, &s));
        ASSERT_EQ(s.verdict, PRS_RETRY_SLEEP);
        ASSERT(s.delay >= 5.0 && s.delay <= 15.0);
    }
    prs_retry_free(r);
}

/* ---- threads on one generator ------------------------------------------ */

#define GEN_THREADS 4
#define GEN_DRAWS 50000

static prs_retry *gen_shared;
static uint64_t gen_out[GEN_THREADS][GEN_DRAWS];

static void *gen_worker(void *arg) {
    uint64_t *out = arg;
    for (int i = 0; i < GEN_DRAWS; i++) out[i] = prs_retry_next_u64(gen_shared);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

TEST(retry_generator_threads) {
    /* Concurrent draws are exactly the sequential sequence, shared out: none
     * lost, none duplicated. */
    gen_shared = make_policy(3, 1, 60, 2, PRS_JITTER_FULL, 99);
    pthread_t th[GEN_THREADS];
    for (int t = 0; t < GEN_THREADS; t++) ASSERT_EQ(pthread_create(&th[t], NULL, gen_worker, gen_out[t]), 0);
    for (int t = 0; t < GEN_THREADS; t++) pthread_join(th[t], NULL);
    static uint64_t all[GEN_THREADS * GEN_DRAWS], want[GEN_THREADS * GEN_DRAWS];
    memcpy(all, gen_out, sizeof all);
    uint64_t s = 99;
    for (int i = 0; i < GEN_THREADS * GEN_DRAWS; i++) want[i] = prs_splitmix64_next(&s);
    qsort(all, GEN_THREADS * GEN_DRAWS, sizeof all[0], cmp_u64);
    qsort(want, GEN_THREADS * GEN_DRAWS, sizeof want[0], cmp_u64);
    ASSERT(memcmp(all, want, sizeof all) == 0);
    prs_retry_free(gen_shared);
}

/* ---- the budget ----------------------------------------------------------- */

TEST(retry_budget_config) {
    prs_retry_budget_config c;
    prs_retry_budget_config_init(&c);
    ASSERT(c.ratio == 0.1 && c.min_retries_per_second == 10.0 && c.window == 10.0);
    ASSERT_OK(prs_retry_budget_config_validate(&c));
    struct { double ratio, floor_ps, window; int want; } rows[] = {
        {0, 0, 1, PRS_OK},
        {1e6, 1e9, 3600, PRS_OK},
        {0.5, 1, 0.001, PRS_OK},
        {-0.1, 10, 10, PRS_EINVAL},
        {NAN, 10, 10, PRS_EINVAL},
        {INFINITY, 10, 10, PRS_EINVAL},
        {0.1, -1, 10, PRS_EINVAL},
        {0.1, NAN, 10, PRS_EINVAL},
        {0.1, 10, 0, PRS_EINVAL},
        {0.1, 10, -1, PRS_EINVAL},
        {0.1, 10, NAN, PRS_EINVAL},
        {0.1, 10, INFINITY, PRS_EINVAL},
        {2e6, 10, 10, PRS_ERANGE},
        {0.1, 2e9, 10, PRS_ERANGE},
        {0.1, 10, 3601, PRS_ERANGE},
        {0.1, 10, 1e-4, PRS_ERANGE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        c.ratio = rows[i].ratio;
        c.min_retries_per_second = rows[i].floor_ps;
        c.window = rows[i].window;
        ASSERT_STATUS(prs_retry_budget_config_validate(&c), rows[i].want);
        prs_retry_budget *b = (prs_retry_budget *)&c;
        int rc = prs_retry_budget_new(&c, &b);
        ASSERT_STATUS(rc, rows[i].want);
        if (rc) ASSERT(b == NULL);
        prs_retry_budget_free(b);
    }
    prs_retry_budget *b = make_budget(0.1, 10, 2.5);
    ASSERT_EQ(prs_retry_budget_buckets(b), 3);
    ASSERT(prs_retry_budget_window(b) == 2.5);
    ASSERT(prs_retry_budget_ratio(b) == 0.1);
    ASSERT(prs_retry_budget_min_per_second(b) == 10.0);
    prs_retry_budget_free(b);
    ASSERT_STATUS(prs_retry_budget_deposit(NULL, 0), PRS_EINVAL);
    int ok;
    ASSERT_STATUS(prs_retry_budget_withdraw(NULL, 0, &ok), PRS_EINVAL);
    prs_retry_budget_free(NULL);
    prs_retry_budget_reset(NULL);
}

enum { DEP, WD_OK, WD_NO, CHECK };

typedef struct budget_row {
    double t;          /* seconds */
    int op;            /* DEP x count, WD_OK/WD_NO x count, CHECK */
    int count;
    int64_t win_att, win_ret; /* for CHECK */
} budget_row;

static void run_budget_table(prs_retry_budget *b, const budget_row *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const budget_row *r = &rows[i];
        int64_t now = S(r->t);
        if (r->op == DEP) {
            for (int k = 0; k < r->count; k++) ASSERT_OK(prs_retry_budget_deposit(b, now));
        } else if (r->op == WD_OK || r->op == WD_NO) {
            for (int k = 0; k < r->count; k++) {
                int ok = -1;
                ASSERT_OK(prs_retry_budget_withdraw(b, now, &ok));
                if (ok != (r->op == WD_OK))
                    PRS__FAIL("row %zu (t=%g) withdrawal %d: got %d", i, r->t, k, ok);
            }
        } else {
            prs_retry_budget_metrics m;
            ASSERT_OK(prs_retry_budget_metrics_get(b, now, &m));
            if (m.window_attempts != r->win_att || m.window_retries != r->win_ret)
                PRS__FAIL("row %zu (t=%g): window %" PRId64 "/%" PRId64 ", want %" PRId64 "/%" PRId64,
                          i, r->t, m.window_attempts, m.window_retries, r->win_att, r->win_ret);
        }
    }
}

TEST(retry_budget_ratio_table) {
    /* ratio 0.1, no floor, window 10 s (10 buckets of 1 s). */
    prs_retry_budget *b = make_budget(0.1, 0.0, 10.0);
    const budget_row rows[] = {
        {0.0, WD_NO, 1, 0, 0},          /* nothing deposited: nothing to spend */
        {0.0, DEP, 10, 0, 0},
        {0.0, WD_OK, 1, 0, 0},          /* 0.1 * 10 = 1 */
        {0.0, WD_NO, 1, 0, 0},
        {5.0, DEP, 10, 0, 0},
        {5.0, CHECK, 0, 20, 1},
        {5.0, WD_OK, 1, 0, 0},          /* 0.1 * 20 = 2 */
        {5.0, WD_NO, 3, 0, 0},
        {9.999, CHECK, 0, 20, 2},
        {10.0, CHECK, 0, 10, 1},        /* the t=0 bucket left the window */
        {10.0, WD_NO, 1, 0, 0},         /* 1 retry still in, allowance 1 */
        {15.0, CHECK, 0, 0, 0},         /* all gone */
        {15.0, WD_NO, 1, 0, 0},
        {15.0, DEP, 30, 0, 0},
        {15.0, WD_OK, 3, 0, 0},         /* 0.1 * 30 = 3.0000000000000004 */
        {15.0, WD_NO, 1, 0, 0},
        {3.0, DEP, 10, 0, 0},           /* a time in the past counts as the newest */
        {15.5, CHECK, 0, 40, 3},
        {15.0, WD_OK, 1, 0, 0},
        {1000.0, CHECK, 0, 0, 0},       /* a jump of many windows */
    };
    run_budget_table(b, rows, sizeof rows / sizeof rows[0]);
    prs_retry_budget_metrics m;
    ASSERT_OK(prs_retry_budget_metrics_get(b, S(1000), &m));
    ASSERT_EQ(m.attempts, 60);
    ASSERT_EQ(m.retries_allowed, 6);
    ASSERT_EQ(m.retries_denied, 8);
    ASSERT(m.available == 0.0);
    prs_retry_budget_reset(b);
    ASSERT_OK(prs_retry_budget_metrics_get(b, S(0), &m));
    ASSERT_EQ(m.attempts, 0);
    ASSERT_EQ(m.retries_allowed + m.retries_denied, 0);
    prs_retry_budget_free(b);
}

TEST(retry_budget_floor_table) {
    /* ratio 0, a floor of 1 retry/s over 10 s: 10 retries per window. */
    prs_retry_budget *b = make_budget(0.0, 1.0, 10.0);
    const budget_row rows[] = {
        {0.0, WD_OK, 4, 0, 0},
        {3.0, WD_OK, 6, 0, 0},
        {3.0, WD_NO, 2, 0, 0},
        {9.9, WD_NO, 1, 0, 0},
        {10.0, CHECK, 0, 0, 6},         /* the 4 at t=0 left */
        {10.0, WD_OK, 4, 0, 0},
        {10.0, WD_NO, 1, 0, 0},
        {13.0, WD_OK, 6, 0, 0},
        {13.0, WD_NO, 1, 0, 0},
    };
    run_budget_table(b, rows, sizeof rows / sizeof rows[0]);
    prs_retry_budget_metrics m;
    ASSERT_OK(prs_retry_budget_metrics_get(b, S(13), &m));
    ASSERT_NEAR(m.available, 0.0, 1e-9);
    ASSERT_OK(prs_retry_budget_metrics_get(b, S(100), &m));
    ASSERT_NEAR(m.available, 10.0, 1e-9);
    prs_retry_budget_free(b);

    /* ratio and floor together: 0.5 x 4 + 2/s x 1 s = 4. */
    b = make_budget(0.5, 2.0, 1.0);
    const budget_row rows2[] = {
        {0.0, DEP, 4, 0, 0},
        {0.0, WD_OK, 4, 0, 0},
        {0.5, WD_NO, 1, 0, 0},
        {1.0, WD_OK, 2, 0, 0},          /* new window: the floor alone */
        {1.0, WD_NO, 1, 0, 0},
    };
    run_budget_table(b, rows2, sizeof rows2 / sizeof rows2[0]);
    prs_retry_budget_free(b);
}

TEST(retry_budget_fractional_window) {
    /* window 2.5 s: 3 buckets of 0.833333334 s. */
    prs_retry_budget *b = make_budget(1.0, 0.0, 2.5);
    const budget_row rows[] = {
        {0.0, DEP, 1, 0, 0},
        {0.9, DEP, 1, 0, 0},            /* epoch 1 */
        {1.7, DEP, 1, 0, 0},            /* epoch 2 */
        {1.7, CHECK, 0, 3, 0},
        {2.51, CHECK, 0, 2, 0},         /* epoch 3: epoch 0 left */
        {2.51, WD_OK, 2, 0, 0},
        {2.51, WD_NO, 1, 0, 0},
        {5.1, CHECK, 0, 0, 0},
    };
    run_budget_table(b, rows, sizeof rows / sizeof rows[0]);
    prs_retry_budget_free(b);
}

TEST(retry_budget_negative_times) {
    prs_retry_budget *b = make_budget(1.0, 0.0, 2.0);
    const budget_row rows[] = {
        {-5.0, DEP, 2, 0, 0},
        {-4.5, CHECK, 0, 2, 0},
        {-3.0, CHECK, 0, 0, 0},
        {-3.0, DEP, 1, 0, 0},
        {-2.5, WD_OK, 1, 0, 0},
        {-2.5, WD_NO, 1, 0, 0},
    };
    run_budget_table(b, rows, sizeof rows / sizeof rows[0]);
    /* From INT64_MIN + 1 to INT64_MAX: no overflow. */
    ASSERT_OK(prs_retry_budget_deposit(b, INT64_MIN + 1));
    ASSERT_OK(prs_retry_budget_deposit(b, INT64_MAX));
    prs_retry_budget_metrics m;
    ASSERT_OK(prs_retry_budget_metrics_get(b, INT64_MAX, &m));
    ASSERT_EQ(m.window_attempts, 1);
    prs_retry_budget_free(b);
}

TEST(retry_budget_failure_storm_bound) {
    /* 100% failure, every request retries until denied: within one window,
     * total attempts <= (1 + ratio) * requests + floor * window. */
    double ratio = 0.2, floor_ps = 3.0, window = 10.0;
    prs_retry_budget *b = make_budget(ratio, floor_ps, window);
    int64_t requests = 0, attempts = 0;
    for (int i = 0; i < 5000; i++) {
        int64_t now = (int64_t)i * S(window) / 5000;
        ASSERT_OK(prs_retry_budget_deposit(b, now));
        requests++;
        attempts++;
        for (int k = 0; k < 5; k++) {
            int ok;
            ASSERT_OK(prs_retry_budget_withdraw(b, now, &ok));
            if (!ok) break;
            attempts++;
        }
    }
    ASSERT_LE_I64(attempts, (int64_t)((1 + ratio) * requests + floor_ps * window));
    ASSERT_GE_I64(attempts, (int64_t)((1 + ratio) * requests)); /* and it did retry */
    prs_retry_budget_free(b);
}

#define BT_THREADS 4
#define BT_OPS 2000
static prs_retry_budget *bt_budget;
static int bt_allowed[BT_THREADS];

static void *bt_deposit(void *arg) {
    (void)arg;
    for (int i = 0; i < BT_OPS; i++) prs_retry_budget_deposit(bt_budget, S(1));
    return NULL;
}
static void *bt_withdraw(void *arg) {
    int *count = arg;
    for (int i = 0; i < BT_OPS; i++) {
        int ok;
        prs_retry_budget_withdraw(bt_budget, S(1), &ok);
        *count += ok;
    }
    return NULL;
}

TEST(retry_budget_threads) {
    bt_budget = make_budget(0.1, 5.0, 10.0);
    pthread_t th[BT_THREADS];
    for (int t = 0; t < BT_THREADS; t++) ASSERT_EQ(pthread_create(&th[t], NULL, bt_deposit, NULL), 0);
    for (int t = 0; t < BT_THREADS; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < BT_THREADS; t++)
        ASSERT_EQ(pthread_create(&th[t], NULL, bt_withdraw, &bt_allowed[t]), 0);
    for (int t = 0; t < BT_THREADS; t++) pthread_join(th[t], NULL);
    int total = 0;
    for (int t = 0; t < BT_THREADS; t++) total += bt_allowed[t];
    ASSERT_EQ(total, 800 + 50); /* 0.1 x 8000 + 5/s x 10 s, exactly */
    prs_retry_budget_metrics m;
    ASSERT_OK(prs_retry_budget_metrics_get(bt_budget, S(1), &m));
    ASSERT_EQ(m.attempts, BT_THREADS * BT_OPS);
    ASSERT_EQ(m.retries_allowed, 850);
    ASSERT_EQ(m.retries_denied, BT_THREADS * BT_OPS - 850);
    prs_retry_budget_free(bt_budget);
}

/* ---- allocation failure -------------------------------------------------- */

static int make_retry(const prs_allocator *a, void **obj) {
    prs_retry_config c;
    prs_retry_config_init(&c);
    c.allocator = a;
    return prs_retry_new(&c, (prs_retry **)obj);
}
static void destroy_retry(void *obj) { prs_retry_free(obj); }

static int make_budget_alloc(const prs_allocator *a, void **obj) {
    prs_retry_budget_config c;
    prs_retry_budget_config_init(&c);
    c.window = 60;
    c.allocator = a;
    return prs_retry_budget_new(&c, (prs_retry_budget **)obj);
}
static void destroy_budget(void *obj) { prs_retry_budget_free(obj); }

TEST(retry_alloc_failures) {
    prs_test_alloc_failures(make_retry, destroy_retry);
    prs_test_alloc_failures(make_budget_alloc, destroy_budget);
}
