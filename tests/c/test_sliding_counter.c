/*
 * test_sliding_counter.c - the sliding window counter: a table at explicit
 * times, a clock going backwards, saturation, configuration errors,
 * allocation failure, threads with a frozen clock, random schedules against
 * an integer model with the documented approximation bounds, and the
 * prs_algo_sliding_counter descriptor.
 */
#include "test_limiter_family.h"

#include "prs_sliding_counter.h"

#define SEC LF_SEC
#define MS LF_MS

static prs_sliding_counter *make_sc(int64_t limit, int64_t window_ns) {
    prs_sliding_counter_config cfg;
    prs_sliding_counter_config_init(&cfg);
    cfg.limit = limit;
    cfg.window_ns = window_ns;
    prs_sliding_counter *sc = NULL;
    ASSERT_OK(prs_sliding_counter_new(&cfg, &sc));
    ASSERT(sc != NULL);
    return sc;
}

static const lf_ops SC = {&prs_algo_sliding_counter};

TEST(sliding_counter_config) {
    prs_sliding_counter_config cfg;
    prs_sliding_counter_config_init(&cfg);
    ASSERT_EQ_I64(cfg.limit, 1);
    ASSERT_EQ_I64(cfg.window_ns, SEC);
    ASSERT(cfg.allocator == NULL);
    ASSERT_OK(prs_sliding_counter_config_validate(&cfg));
    ASSERT_STATUS(prs_sliding_counter_config_validate(NULL), PRS_EINVAL);
    prs_sliding_counter *sc = (prs_sliding_counter *)&cfg;
    cfg.limit = 0;
    ASSERT_STATUS(prs_sliding_counter_new(&cfg, &sc), PRS_EINVAL);
    ASSERT(sc == NULL);
    cfg.limit = 1;
    cfg.window_ns = 0;
    ASSERT_STATUS(prs_sliding_counter_config_validate(&cfg), PRS_EINVAL);
    cfg.window_ns = INT64_MAX;
    cfg.limit = INT64_MAX;
    ASSERT_OK(prs_sliding_counter_config_validate(&cfg));
    ASSERT_STATUS(prs_sliding_counter_new(&cfg, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_sliding_counter_new(NULL, &sc), PRS_EINVAL);
    sc = make_sc(3, SEC);
    prs_decision d;
    ASSERT_STATUS(prs_sliding_counter_check(sc, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_sliding_counter_check(sc, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_sliding_counter_peek(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_EQ_I64(prs_sliding_counter_limit(sc), 3);
    ASSERT_EQ_I64(prs_sliding_counter_window_ns(sc), SEC);
    prs_sliding_counter_free(sc);
    prs_sliding_counter_free(NULL);
    prs_sliding_counter_reset(NULL);
}

TEST(sliding_counter_table) {
    prs_sliding_counter *sc = make_sc(10, 10 * SEC);
    static const struct { int64_t t_ms, n; int allowed; int64_t remaining, retry_ms, reset_ms; } rows[] = {
        {10000, 5, 1, 5, 0, 20000},  /* window [10 s, 20 s) */
        {15000, 5, 1, 0, 0, 15000},
        {15000, 1, 0, 0, 6000, 15000}, /* next window, 1 s in: 10 * 9/10 + 1 <= 10 */
        {20999, 1, 0, 0, 1, 9001},     /* fresh at 30 s, when prev stops counting */
        {21000, 1, 1, 0, 0, 19000},
        {22000, 2, 0, 1, 1000, 18000}, /* 10 * 8/10 + 3 > 10 until 23 s */
        {23000, 2, 1, 0, 0, 17000},
        {35000, 4, 1, 4, 0, 15000},    /* prev 3 weighted 1/2 + 4 */
        {100000, 11, 0, 10, -1, 0},    /* n > limit: never */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_decision d = lf_check(&SC, sc, rows[i].t_ms * MS, rows[i].n);
        lf_sane(&d, 10);
        ASSERT_EQ_I64(d.allowed, rows[i].allowed);
        ASSERT_EQ_I64(d.remaining, rows[i].remaining);
        ASSERT_EQ_I64(d.retry_after_ns, rows[i].retry_ms < 0 ? PRS_NEVER : rows[i].retry_ms * MS);
        ASSERT_EQ_I64(d.reset_after_ns, rows[i].reset_ms * MS);
    }
    sc = (prs_sliding_counter_reset(sc), sc);
    ASSERT_NEAR(prs_sliding_counter_available(sc, 0), 10.0, 0);
    ASSERT(lf_check(&SC, sc, 5 * SEC, 10).allowed);
    ASSERT_NEAR(prs_sliding_counter_available(sc, 12500 * MS), 2.5, 1e-9); /* 10 * 3/4 */
    for (int i = 0; i < 10; i++) ASSERT(lf_peek(&SC, sc, 12500 * MS, 2).allowed);
    ASSERT(!lf_peek(&SC, sc, 12500 * MS, 3).allowed);
    prs_sliding_counter_free(sc);
}

TEST(sliding_counter_clock_backwards) {
    prs_sliding_counter *sc = make_sc(2, SEC);
    ASSERT(lf_check(&SC, sc, 5500 * MS, 2).allowed);
    prs_decision d = lf_check(&SC, sc, 4200 * MS, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 2300 * MS); /* 6.5 s: 2 * 1/2 + 1 <= 2 */
    ASSERT(!lf_check(&SC, sc, 6500 * MS - 1, 1).allowed);
    ASSERT(!lf_check(&SC, sc, INT64_MIN, 1).allowed);
    ASSERT(lf_check(&SC, sc, 6500 * MS, 1).allowed);
    /* back into the window just counted: its start, the most restrictive instant */
    d = lf_check(&SC, sc, 5999 * MS, 1);
    ASSERT(!d.allowed);
    prs_sliding_counter_free(sc);
}

TEST(sliding_counter_saturation) {
    prs_sliding_counter *sc = make_sc(1, INT64_MAX);
    ASSERT(lf_check(&SC, sc, 1, 1).allowed);
    prs_decision d = lf_check(&SC, sc, 2, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
    d = lf_check(&SC, sc, INT64_MAX, 1); /* the next window: prev weighs fully */
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    prs_sliding_counter_free(sc);
    sc = make_sc(INT64_MAX, SEC);
    ASSERT(lf_check(&SC, sc, 0, INT64_MAX).allowed);
    d = lf_check(&SC, sc, SEC / 2, 1);
    ASSERT(!d.allowed);
    lf_sane(&d, INT64_MAX);
    ASSERT(lf_check(&SC, sc, 2 * SEC, INT64_MAX).allowed);
    prs_sliding_counter_free(sc);
}

static int make_for_alloc(const prs_allocator *a, void **obj) {
    prs_sliding_counter_config cfg;
    prs_sliding_counter_config_init(&cfg);
    cfg.allocator = a;
    return prs_sliding_counter_new(&cfg, (prs_sliding_counter **)obj);
}
static void destroy_for_alloc(void *obj) { prs_sliding_counter_free(obj); }

TEST(sliding_counter_alloc_failure) { prs_test_alloc_failures(make_for_alloc, destroy_for_alloc); }

TEST(sliding_counter_threads_frozen_clock) {
    prs_sliding_counter *sc = make_sc(1000, SEC);
    ASSERT_EQ_I64(lf_hammer(&SC, sc, 5 * SEC, 4, 20000), 1000);
    ASSERT_EQ_I64(lf_hammer(&SC, sc, 6 * SEC - 1, 4, 20000), 0);
    ASSERT_EQ_I64(lf_hammer(&SC, sc, 6 * SEC + 500 * MS, 2, 20000), 500);
    prs_sliding_counter_free(sc);
}

static int64_t floor_align(int64_t t, int64_t w) { return t - (((t % w) + w) % w); }

/* Random schedules vs an integer model of the estimate, then the documented
 * approximation: <= limit per aligned window; in [a, a + w) with B the first
 * boundary after a, at most limit + prev * (a + w - B) / w (< 2 * limit). */
TEST(sliding_counter_random_vs_model) {
    enum { STEPS = 3000 };
    static int64_t at[STEPS], w8[STEPS];
    uint64_t seed = 0xE7037ED1A0B428DBu;
    for (int round = 0; round < 6; round++) {
        int64_t limit = lf_range(&seed, 1, 12), w = lf_range(&seed, 1, 50) * 100;
        prs_sliding_counter *sc = make_sc(limit, w);
        int k = 0;
        int64_t t = lf_range(&seed, -100000, 100000);
        for (int i = 0; i < STEPS; i++) {
            t += lf_range(&seed, 0, w / 3);
            int64_t n = lf_range(&seed, 1, limit / 2 + 1), cur = 0, prev = 0, s = floor_align(t, w);
            for (int j = 0; j < k; j++) {
                if (at[j] >= s) cur += w8[j];
                else if (at[j] >= s - w) prev += w8[j];
            }
            prs_decision d = lf_check(&SC, sc, t, n);
            lf_sane(&d, limit);
            int want = n <= limit && prev * (w - (t - s)) + (cur + n) * w <= limit * w;
            ASSERT_EQ_I64(d.allowed, want);
            if (d.allowed) { at[k] = t; w8[k] = n; k++; }
        }
        ASSERT_GT_I64(k, 20);
        for (int i = 0; i < k; i++) {
            int64_t a = at[i], b = floor_align(a, w) + w, sum = 0, prev = 0, win = 0;
            for (int j = 0; j < k; j++) {
                if (at[j] >= a && at[j] < a + w) sum += w8[j];
                if (at[j] >= b - w && at[j] < b) prev += w8[j];
                if (floor_align(at[j], w) == floor_align(a, w)) win += w8[j];
            }
            ASSERT_LE_I64(win, limit);
            ASSERT_LE_I64((sum - limit) * w, prev * (a + w - b));
            ASSERT_LT_I64(sum, 2 * limit);
        }
        prs_sliding_counter_free(sc);
    }
}

TEST(sliding_counter_descriptor) {
    ASSERT_STREQ(prs_algo_sliding_counter.name, "sliding_counter");
    prs_sliding_counter *sc = make_sc(6, 300 * MS);
    ASSERT_LE_I64(prs_algo_sliding_counter.state_size(prs_sliding_counter_params(sc)), PRS_ALGO_MAX_INLINE_STATE);
    lf_object_matches_descriptor(&SC, sc, 4, 100 * MS, 99, 5000, 1);
    prs_sliding_counter_free(sc);
    sc = make_sc(4, SEC);
    lf_state s;
    lf_state_make(&s, &prs_algo_sliding_counter, prs_sliding_counter_params(sc));
    ASSERT(s.algo->is_fresh(s.params, s.buf, 0));
    ASSERT(lf_sdecide(&s, 1500 * MS, 2, 1).allowed);
    ASSERT(!s.algo->is_fresh(s.params, s.buf, 2500 * MS));
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 2500 * MS), 3.0, 1e-9);
    ASSERT(s.algo->is_fresh(s.params, s.buf, 3 * SEC));
    s.algo->refund(s.params, s.buf, 1500 * MS, 1);
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 1500 * MS), 3.0, 1e-9);
    s.algo->refund(s.params, s.buf, 1500 * MS, 100);
    ASSERT(s.algo->is_fresh(s.params, s.buf, 1500 * MS));
    ASSERT_STATUS(s.algo->decide(s.params, s.buf, 0, 0, 1, &(prs_decision){0}), PRS_EINVAL);
    lf_state_free(&s);
    prs_sliding_counter_free(sc);
}
