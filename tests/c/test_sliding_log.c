/*
 * test_sliding_log.c - the exact sliding window log: a table at explicit
 * times, weighted requests, a clock going backwards, saturation, configuration
 * errors, allocation failure, threads with a frozen clock, random schedules
 * against a brute-force model (and the exact bound), and the
 * prs_algo_sliding_log descriptor.
 */
#include "test_limiter_family.h"

#include "prs_sliding_log.h"

#define SEC LF_SEC
#define MS LF_MS

static prs_sliding_log *make_sl(int64_t limit, int64_t window_ns) {
    prs_sliding_log_config cfg;
    prs_sliding_log_config_init(&cfg);
    cfg.limit = limit;
    cfg.window_ns = window_ns;
    prs_sliding_log *sl = NULL;
    ASSERT_OK(prs_sliding_log_new(&cfg, &sl));
    ASSERT(sl != NULL);
    return sl;
}

static const lf_ops SL = {&prs_algo_sliding_log};

TEST(sliding_log_config) {
    prs_sliding_log_config cfg;
    prs_sliding_log_config_init(&cfg);
    ASSERT_EQ_I64(cfg.limit, 1);
    ASSERT_EQ_I64(cfg.window_ns, SEC);
    ASSERT(cfg.allocator == NULL);
    ASSERT_OK(prs_sliding_log_config_validate(&cfg));
    ASSERT_STATUS(prs_sliding_log_config_validate(NULL), PRS_EINVAL);
    prs_sliding_log *sl = (prs_sliding_log *)&cfg;
    cfg.limit = 0;
    ASSERT_STATUS(prs_sliding_log_new(&cfg, &sl), PRS_EINVAL);
    ASSERT(sl == NULL);
    cfg.limit = PRS_SLIDING_LOG_MAX_LIMIT + 1;
    ASSERT_STATUS(prs_sliding_log_new(&cfg, &sl), PRS_ERANGE);
    ASSERT(sl == NULL);
    cfg.limit = INT64_MAX;
    ASSERT_STATUS(prs_sliding_log_config_validate(&cfg), PRS_ERANGE);
    cfg.limit = 2;
    cfg.window_ns = 0;
    ASSERT_STATUS(prs_sliding_log_config_validate(&cfg), PRS_EINVAL);
    cfg.window_ns = INT64_MIN;
    ASSERT_STATUS(prs_sliding_log_config_validate(&cfg), PRS_EINVAL);
    ASSERT_STATUS(prs_sliding_log_new(NULL, &sl), PRS_EINVAL);
    cfg.window_ns = 1;
    ASSERT_STATUS(prs_sliding_log_new(&cfg, NULL), PRS_EINVAL);
    sl = make_sl(3, SEC);
    prs_decision d;
    ASSERT_STATUS(prs_sliding_log_check(sl, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_sliding_log_check(sl, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_sliding_log_peek(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_EQ_I64(prs_sliding_log_limit(sl), 3);
    ASSERT_EQ_I64(prs_sliding_log_window_ns(sl), SEC);
    prs_sliding_log_free(sl);
    prs_sliding_log_free(NULL);
    prs_sliding_log_reset(NULL);
}

TEST(sliding_log_table) {
    prs_sliding_log *sl = make_sl(3, 10 * SEC);
    static const struct { int64_t t_ms, n; int allowed; int64_t remaining, retry_ms, reset_ms; } rows[] = {
        {0, 1, 1, 2, 0, 10000},
        {1000, 1, 1, 1, 0, 10000},
        {2000, 1, 1, 0, 0, 10000},
        {3000, 1, 0, 0, 7000, 9000},  /* the entry at 0 leaves at 10 s */
        {3000, 2, 0, 0, 8000, 9000},  /* two must leave: the one at 1 s leaves at 11 s */
        {3000, 4, 0, 0, -1, 9000},    /* n > limit: never */
        {9999, 1, 0, 0, 1, 2001},
        {10000, 1, 1, 0, 0, 10000},
        {10500, 1, 0, 0, 500, 9500},
        {30000, 3, 1, 0, 0, 10000},   /* weighted: 3 slots at once */
        {39999, 1, 0, 0, 1, 1},
        {40000, 2, 1, 1, 0, 10000},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_decision d = lf_check(&SL, sl, rows[i].t_ms * MS, rows[i].n);
        lf_sane(&d, 3);
        ASSERT_EQ_I64(d.allowed, rows[i].allowed);
        ASSERT_EQ_I64(d.remaining, rows[i].remaining);
        ASSERT_EQ_I64(d.retry_after_ns, rows[i].retry_ms < 0 ? PRS_NEVER : rows[i].retry_ms * MS);
        ASSERT_EQ_I64(d.reset_after_ns, rows[i].reset_ms * MS);
    }
    ASSERT_NEAR(prs_sliding_log_available(sl, 45 * SEC), 1.0, 0);
    ASSERT_NEAR(prs_sliding_log_available(sl, 50 * SEC), 3.0, 0);
    for (int i = 0; i < 10; i++) ASSERT(lf_peek(&SL, sl, 45 * SEC, 1).allowed);
    prs_sliding_log_reset(sl);
    ASSERT_NEAR(prs_sliding_log_available(sl, 45 * SEC), 3.0, 0);
    ASSERT(lf_check(&SL, sl, 45 * SEC, 3).allowed);
    prs_sliding_log_free(sl);
}

TEST(sliding_log_clock_backwards) {
    prs_sliding_log *sl = make_sl(2, SEC);
    ASSERT(lf_check(&SL, sl, 5 * SEC, 2).allowed);
    prs_decision d = lf_check(&SL, sl, 4 * SEC, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 2 * SEC); /* leaves at 6 s on this clock */
    ASSERT(!lf_check(&SL, sl, 6 * SEC - 1, 1).allowed);
    ASSERT(lf_check(&SL, sl, 10 * SEC, 2).allowed);
    /* back to 9 s: taken as 10 s, the entries of 10 s still count */
    d = lf_check(&SL, sl, 9 * SEC, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 2 * SEC);
    ASSERT(!lf_check(&SL, sl, INT64_MIN, 1).allowed);
    prs_sliding_log_free(sl);
}

TEST(sliding_log_saturation) {
    prs_sliding_log *sl = make_sl(1, INT64_MAX);
    ASSERT(lf_check(&SL, sl, 5, 1).allowed);
    prs_decision d = lf_check(&SL, sl, INT64_MAX, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
    prs_sliding_log_free(sl);
    sl = make_sl(2, SEC);
    ASSERT(lf_check(&SL, sl, INT64_MIN, 2).allowed);
    d = lf_check(&SL, sl, INT64_MIN, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    ASSERT(lf_check(&SL, sl, INT64_MAX, 2).allowed);
    ASSERT(!lf_check(&SL, sl, INT64_MAX, 1).allowed);
    prs_sliding_log_free(sl);
}

static int make_for_alloc(const prs_allocator *a, void **obj) {
    prs_sliding_log_config cfg;
    prs_sliding_log_config_init(&cfg);
    cfg.limit = 100;
    cfg.allocator = a;
    return prs_sliding_log_new(&cfg, (prs_sliding_log **)obj);
}
static void destroy_for_alloc(void *obj) { prs_sliding_log_free(obj); }

TEST(sliding_log_alloc_failure) { prs_test_alloc_failures(make_for_alloc, destroy_for_alloc); }

TEST(sliding_log_threads_frozen_clock) {
    prs_sliding_log *sl = make_sl(1000, SEC);
    ASSERT_EQ_I64(lf_hammer(&SL, sl, 5 * SEC, 4, 20000), 1000);
    ASSERT_EQ_I64(lf_hammer(&SL, sl, 6 * SEC - 1, 4, 20000), 0);
    ASSERT_EQ_I64(lf_hammer(&SL, sl, 6 * SEC, 2, 20000), 1000);
    prs_sliding_log_free(sl);
}

/* Random schedules (the ring wraps many times) vs a brute-force model, then the
 * exact bound: every [t, t + w) holds at most `limit` admitted units. */
TEST(sliding_log_random_vs_model) {
    enum { STEPS = 3000 };
    static int64_t at[STEPS], w8[STEPS];
    uint64_t seed = 0xA0761D6478BD642Fu;
    for (int round = 0; round < 6; round++) {
        int64_t limit = lf_range(&seed, 1, 12), w = lf_range(&seed, 1, 50) * 100;
        prs_sliding_log *sl = make_sl(limit, w);
        int k = 0;
        int64_t t = lf_range(&seed, -100000, 100000);
        for (int i = 0; i < STEPS; i++) {
            t += lf_range(&seed, 0, w / 4);
            int64_t n = lf_range(&seed, 1, limit / 2 + 1), used = 0;
            for (int j = 0; j < k; j++) if (at[j] > t - w) used += w8[j];
            prs_decision d = lf_check(&SL, sl, t, n);
            lf_sane(&d, limit);
            ASSERT_EQ_I64(d.allowed, used + n <= limit);
            ASSERT_EQ_I64(d.remaining, limit - used - (d.allowed ? n : 0));
            if (d.allowed) { at[k] = t; w8[k] = n; k++; }
        }
        ASSERT_GT_I64(k, 20);
        for (int i = 0; i < k; i++) {
            int64_t sum = 0;
            for (int j = i; j < k && at[j] < at[i] + w; j++) sum += w8[j];
            ASSERT_LE_I64(sum, limit);
        }
        prs_sliding_log_free(sl);
    }
}

TEST(sliding_log_descriptor) {
    ASSERT_STREQ(prs_algo_sliding_log.name, "sliding_log");
    prs_sliding_log *sl = make_sl(7, 300 * MS);
    ASSERT_EQ_I64(prs_algo_sliding_log.state_size(prs_sliding_log_params(sl)), 32 + 8 * 7);
    lf_object_matches_descriptor(&SL, sl, 4, 100 * MS, 4242, 5000, 1);
    prs_sliding_log_free(sl);
    sl = make_sl(4, SEC);
    lf_state s;
    lf_state_make(&s, &prs_algo_sliding_log, prs_sliding_log_params(sl));
    ASSERT(s.algo->is_fresh(s.params, s.buf, 0));
    ASSERT(lf_sdecide(&s, SEC, 1, 1).allowed);
    ASSERT(lf_sdecide(&s, 1500 * MS, 2, 1).allowed);
    ASSERT(!s.algo->is_fresh(s.params, s.buf, 2 * SEC));
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 2 * SEC - 1), 1.0, 0);
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 2 * SEC), 2.0, 0); /* the one of 1 s left */
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 2400 * MS), 2.0, 0);
    ASSERT(s.algo->is_fresh(s.params, s.buf, 2500 * MS));
    s.algo->refund(s.params, s.buf, 1500 * MS, 2); /* the two newest go */
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 1500 * MS), 3.0, 0);
    ASSERT(s.algo->is_fresh(s.params, s.buf, 2 * SEC));
    s.algo->refund(s.params, s.buf, 1500 * MS, 100);
    ASSERT(s.algo->is_fresh(s.params, s.buf, 0));
    ASSERT_STATUS(s.algo->decide(s.params, s.buf, 0, 0, 1, &(prs_decision){0}), PRS_EINVAL);
    lf_state_free(&s);
    prs_sliding_log_free(sl);
}
