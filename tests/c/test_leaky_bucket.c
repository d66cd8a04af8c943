/*
 * test_leaky_bucket.c - the leaky bucket meter: a table at explicit times,
 * pacing, a clock going backwards, extremes, configuration errors, allocation
 * failure, threads with a frozen clock, the bound on random schedules, and
 * the prs_algo_leaky_bucket descriptor.
 */
#include "test_limiter_family.h"

#include "prs_leaky_bucket.h"

#define SEC LF_SEC
#define MS LF_MS

static prs_leaky_bucket *make_lb(double capacity, double rate) {
    prs_leaky_bucket_config cfg;
    prs_leaky_bucket_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.leak_rate = rate;
    prs_leaky_bucket *lb = NULL;
    ASSERT_OK(prs_leaky_bucket_new(&cfg, &lb));
    ASSERT(lb != NULL);
    return lb;
}

static const lf_ops LB = {&prs_algo_leaky_bucket};

TEST(leaky_bucket_config) {
    prs_leaky_bucket_config cfg;
    prs_leaky_bucket_config_init(&cfg);
    ASSERT_NEAR(cfg.capacity, 1.0, 0);
    ASSERT_NEAR(cfg.leak_rate, 1.0, 0);
    ASSERT(cfg.allocator == NULL);
    ASSERT_OK(prs_leaky_bucket_config_validate(&cfg));
    ASSERT_STATUS(prs_leaky_bucket_config_validate(NULL), PRS_EINVAL);
    const double bad[] = {0.0, -1.0, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prs_leaky_bucket_config_init(&cfg);
        cfg.capacity = bad[i];
        prs_leaky_bucket *lb = (prs_leaky_bucket *)&cfg;
        ASSERT_STATUS(prs_leaky_bucket_new(&cfg, &lb), PRS_EINVAL);
        ASSERT(lb == NULL);
        prs_leaky_bucket_config_init(&cfg);
        cfg.leak_rate = bad[i];
        ASSERT_STATUS(prs_leaky_bucket_config_validate(&cfg), PRS_EINVAL);
    }
    prs_leaky_bucket_config_init(&cfg);
    cfg.capacity = 2e15;
    ASSERT_STATUS(prs_leaky_bucket_config_validate(&cfg), PRS_ERANGE);
    cfg.capacity = 1e15;
    cfg.leak_rate = 2e15;
    ASSERT_STATUS(prs_leaky_bucket_config_validate(&cfg), PRS_ERANGE);
    cfg.leak_rate = 1e15;
    ASSERT_OK(prs_leaky_bucket_config_validate(&cfg));
    ASSERT_STATUS(prs_leaky_bucket_new(&cfg, NULL), PRS_EINVAL);
    prs_leaky_bucket *lb = make_lb(2.5, 0.5);
    ASSERT_NEAR(prs_leaky_bucket_capacity(lb), 2.5, 0);
    ASSERT_NEAR(prs_leaky_bucket_leak_rate(lb), 0.5, 0);
    prs_decision d;
    ASSERT_STATUS(prs_leaky_bucket_check(lb, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_leaky_bucket_check(lb, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_leaky_bucket_peek(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT(lf_check(&LB, lb, 0, 2).allowed);
    ASSERT_EQ_I64(lf_peek(&LB, lb, 0, 1).limit, 2); /* floor(capacity) */
    prs_leaky_bucket_free(lb);
    prs_leaky_bucket_free(NULL);
    prs_leaky_bucket_reset(NULL);
}

TEST(leaky_bucket_table) {
    prs_leaky_bucket *lb = make_lb(3, 1); /* drains 1 unit per second */
    static const struct { int64_t t_ms, n; int allowed; int64_t remaining, retry_ms, reset_ms; } rows[] = {
        {0, 1, 1, 2, 0, 1000},
        {0, 2, 1, 0, 0, 3000},
        {0, 1, 0, 0, 1000, 3000},
        {500, 1, 0, 0, 500, 2500},
        {999, 1, 0, 0, 1, 2001},
        {1000, 1, 1, 0, 0, 3000},
        {1000, 4, 0, 0, -1, 3000}, /* n > capacity: never */
        {2500, 1, 1, 0, 0, 2500},  /* level 1.5 + 1 = 2.5: room 0.5 */
        {10000, 3, 1, 0, 0, 3000},
        {20000, 1, 1, 2, 0, 1000},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_decision d = lf_check(&LB, lb, rows[i].t_ms * MS, rows[i].n);
        lf_sane(&d, 3);
        ASSERT_EQ_I64(d.allowed, rows[i].allowed);
        ASSERT_EQ_I64(d.remaining, rows[i].remaining);
        ASSERT_EQ_I64(d.retry_after_ns, rows[i].retry_ms < 0 ? PRS_NEVER : rows[i].retry_ms * MS);
        ASSERT_EQ_I64(d.reset_after_ns, rows[i].reset_ms * MS);
    }
    ASSERT_NEAR(prs_leaky_bucket_level(lb, 20500 * MS), 0.5, 1e-12);
    ASSERT_NEAR(prs_leaky_bucket_available(lb, 20500 * MS), 2.5, 1e-12);
    for (int i = 0; i < 10; i++) ASSERT(lf_peek(&LB, lb, 20500 * MS, 2).allowed); /* peek never fills */
    prs_leaky_bucket_reset(lb);
    ASSERT_NEAR(prs_leaky_bucket_available(lb, 20500 * MS), 3.0, 0);
    prs_leaky_bucket_free(lb);
}

/* Found by the Python property test: reset_after must come from the stored
 * level by the same integer rule as the decisions (not from a drained float). */
TEST(leaky_bucket_reset_after_is_exact) {
    prs_leaky_bucket *lb = make_lb(2, 2000.03400057801);
    lf_state s;
    lf_state_make(&s, &prs_algo_leaky_bucket, prs_leaky_bucket_params(lb));
    int64_t t = 1000000000000;
    ASSERT(lf_sdecide(&s, t, 1, 1).allowed);
    ASSERT(lf_sdecide(&s, t + 30495, 1, 1).allowed);
    prs_decision d = lf_sdecide(&s, t + 30496, 1, 1);
    ASSERT(!d.allowed);
    lf_assert_consistent(&s, t + 30496, &d, 1);
    lf_state_free(&s);
    prs_leaky_bucket_free(lb);
}

TEST(leaky_bucket_paces_at_leak_rate) {
    prs_leaky_bucket *lb = make_lb(1, 10); /* one every 100 ms */
    int64_t t = 7 * SEC;
    for (int i = 0; i < 50; i++) {
        prs_decision d = lf_check(&LB, lb, t, 1);
        ASSERT(d.allowed);
        d = lf_check(&LB, lb, t, 1);
        ASSERT(!d.allowed);
        ASSERT_EQ_I64(d.retry_after_ns, 100 * MS);
        t += d.retry_after_ns;
    }
    prs_leaky_bucket_free(lb);
}

TEST(leaky_bucket_clock_backwards) {
    prs_leaky_bucket *lb = make_lb(2, 1);
    ASSERT(lf_check(&LB, lb, 10 * SEC, 2).allowed);
    prs_decision d = lf_check(&LB, lb, 5 * SEC, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 6 * SEC); /* admitted at 11 s on this clock */
    ASSERT(!lf_check(&LB, lb, INT64_MIN, 1).allowed);
    ASSERT(!lf_check(&LB, lb, 11 * SEC - 1, 1).allowed);
    ASSERT(lf_check(&LB, lb, 11 * SEC, 1).allowed);
    prs_leaky_bucket_free(lb);
}

TEST(leaky_bucket_extremes) {
    prs_leaky_bucket *lb = make_lb(1, 1e-300); /* drains in more than INT64_MAX ns */
    ASSERT(lf_check(&LB, lb, 0, 1).allowed);
    prs_decision d = lf_check(&LB, lb, INT64_MAX, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
    prs_leaky_bucket_free(lb);
    lb = make_lb(1e15, 1e15);
    ASSERT(lf_check(&LB, lb, INT64_MAX - 1, INT64_MAX).allowed == 0); /* n > capacity */
    ASSERT(lf_check(&LB, lb, INT64_MAX - 1, 1000000000000000).allowed);
    d = lf_check(&LB, lb, INT64_MAX - 1, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 1); /* 1 unit drains in 1e-6 ns: rounded up to 1 ns */
    ASSERT(lf_check(&LB, lb, INT64_MAX, 1).allowed);
    prs_leaky_bucket_free(lb);
    lb = make_lb(5, 1);
    ASSERT(lf_check(&LB, lb, INT64_MAX, 5).allowed);
    d = lf_check(&LB, lb, INT64_MAX, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER); /* past INT64_MAX: never on this clock */
    prs_leaky_bucket_free(lb);
}

static int make_for_alloc(const prs_allocator *a, void **obj) {
    prs_leaky_bucket_config cfg;
    prs_leaky_bucket_config_init(&cfg);
    cfg.allocator = a;
    return prs_leaky_bucket_new(&cfg, (prs_leaky_bucket **)obj);
}
static void destroy_for_alloc(void *obj) { prs_leaky_bucket_free(obj); }

TEST(leaky_bucket_alloc_failure) { prs_test_alloc_failures(make_for_alloc, destroy_for_alloc); }

TEST(leaky_bucket_threads_frozen_clock) {
    prs_leaky_bucket *lb = make_lb(1000, 5);
    ASSERT_EQ_I64(lf_hammer(&LB, lb, 3 * SEC, 4, 20000), 1000);
    ASSERT_EQ_I64(lf_hammer(&LB, lb, 3 * SEC + 199 * MS, 4, 20000), 0);
    ASSERT_EQ_I64(lf_hammer(&LB, lb, 4 * SEC, 2, 20000), 5);
    prs_leaky_bucket_free(lb);
}

/* The bound of the header: in any [t_i, t_j], admitted <= capacity + rate * T. */
TEST(leaky_bucket_random_bound) {
    enum { STEPS = 2500 };
    static int64_t at[STEPS], w8[STEPS];
    uint64_t seed = 0xD1B54A32D192ED03u;
    for (int round = 0; round < 6; round++) {
        double capacity = (double)lf_range(&seed, 1, 20) / (round % 2 ? 1.0 : 4.0) + 1;
        double rate = (double)lf_range(&seed, 1, 1000) / 10.0;
        prs_leaky_bucket *lb = make_lb(capacity, rate);
        int k = 0;
        int64_t t = lf_range(&seed, 0, 1000000);
        for (int i = 0; i < STEPS; i++) {
            t += lf_range(&seed, 0, (int64_t)(2e9 / rate));
            int64_t n = lf_range(&seed, 1, (int64_t)capacity + 1);
            prs_decision d = lf_check(&LB, lb, t, n);
            lf_sane(&d, (int64_t)capacity);
            if (d.allowed) { at[k] = t; w8[k] = n; k++; }
        }
        ASSERT_GT_I64(k, STEPS / 10);
        for (int i = 0; i < k; i++) {
            int64_t sum = 0;
            for (int j = i; j < k; j++) {
                sum += w8[j];
                double bound = capacity + rate * (double)(at[j] - at[i]) / 1e9;
                ASSERT((double)sum <= bound + 1e-6);
                if ((double)sum < bound - 4 * capacity) break; /* later j cannot fail */
            }
        }
        prs_leaky_bucket_free(lb);
    }
}

TEST(leaky_bucket_descriptor) {
    ASSERT_STREQ(prs_algo_leaky_bucket.name, "leaky_bucket");
    prs_leaky_bucket *lb = make_lb(4.5, 3.25);
    ASSERT_LE_I64(prs_algo_leaky_bucket.state_size(prs_leaky_bucket_params(lb)), PRS_ALGO_MAX_INLINE_STATE);
    lf_object_matches_descriptor(&LB, lb, 5, 700 * MS, 777, 4000, 0); /* 4.5: no exact reset */
    prs_leaky_bucket_free(lb);
    lb = make_lb(5, 2000.034000578);
    lf_object_matches_descriptor(&LB, lb, 5, 2 * MS, 778, 4000, 1);
    prs_leaky_bucket_free(lb);
    uint64_t seed = 780;
    for (int i = 0; i < 40; i++) { /* whole capacities, odd rates: rounding edges */
        double cap = (double)lf_range(&seed, 1, 8);
        double rate = (double)lf_range(&seed, 1000, 10000000) + (double)lf_range(&seed, 0, 999) / 997.0;
        lb = make_lb(cap, rate);
        int64_t max_dt = (int64_t)(2e9 * cap / rate) + 2;
        lf_object_matches_descriptor(&LB, lb, (int64_t)cap, max_dt, seed + (uint64_t)i, 600, 1);
        prs_leaky_bucket_free(lb);
    }
    lb = make_lb(4, 2);
    lf_state s;
    lf_state_make(&s, &prs_algo_leaky_bucket, prs_leaky_bucket_params(lb));
    ASSERT(s.algo->is_fresh(s.params, s.buf, 0));
    ASSERT(lf_sdecide(&s, SEC, 3, 1).allowed);
    ASSERT(!s.algo->is_fresh(s.params, s.buf, 2 * SEC));
    ASSERT(s.algo->is_fresh(s.params, s.buf, 2500 * MS));
    ASSERT_NEAR(s.algo->available(s.params, s.buf, SEC), 1.0, 1e-12);
    s.algo->refund(s.params, s.buf, SEC, 2);
    ASSERT_NEAR(s.algo->available(s.params, s.buf, SEC), 3.0, 1e-12);
    s.algo->refund(s.params, s.buf, SEC, 100);
    ASSERT(s.algo->is_fresh(s.params, s.buf, SEC));
    ASSERT_STATUS(s.algo->decide(s.params, s.buf, 0, 0, 1, &(prs_decision){0}), PRS_EINVAL);
    lf_state_free(&s);
    prs_leaky_bucket_free(lb);
}

/* More than 2^63 ns between two decisions (a request near INT64_MIN, the next
 * near INT64_MAX): the elapsed time saturates, the bucket reads as drained,
 * and the request is admitted (was a signed overflow: denied with a negative
 * retry_after). The keyed/group descriptor path agrees. */
TEST(leaky_bucket_elapsed_beyond_int64) {
    prs_leaky_bucket *lb = make_lb(5, 1);
    prs_decision d;
    ASSERT_OK(prs_leaky_bucket_check(lb, INT64_MIN + 10, 5, &d));
    ASSERT(d.allowed);
    ASSERT_OK(prs_leaky_bucket_peek(lb, INT64_MAX - 10, 5, &d));
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 0);
    ASSERT_OK(prs_leaky_bucket_check(lb, INT64_MAX - 10, 5, &d));
    ASSERT(d.allowed);
    ASSERT_OK(prs_leaky_bucket_check(lb, INT64_MAX - 10, 1, &d));
    ASSERT(!d.allowed);
    ASSERT_GE_I64(d.retry_after_ns, 0);
    ASSERT_NEAR(prs_leaky_bucket_level(lb, INT64_MAX), 5.0, 1e-6);

    const prs_algo *al = &prs_algo_leaky_bucket;
    const void *params = prs_leaky_bucket_params(lb);
    unsigned char st[64];
    ASSERT_LE_I64((int64_t)al->state_size(params), (int64_t)sizeof st);
    al->state_init(params, st);
    ASSERT_OK(al->decide(params, st, INT64_MIN + 1, 5, 1, &d));
    ASSERT(d.allowed);
    ASSERT(al->is_fresh(params, st, INT64_MAX));
    ASSERT_NEAR(al->available(params, st, INT64_MAX), 5.0, 1e-9);
    ASSERT_OK(al->decide(params, st, INT64_MAX, 5, 1, &d));
    ASSERT(d.allowed);
    prs_leaky_bucket_free(lb);
}
