/*
 * test_fixed_window.c - the fixed window: a table at explicit times, window
 * alignment (also for negative instants), a clock going backwards, saturation
 * near INT64_MAX, configuration errors, allocation failure, threads with a
 * frozen clock, a random schedule against a brute-force model (with the
 * documented bounds), and the prs_algo_fixed_window descriptor.
 */
#include "test_limiter_family.h"

#include "prs_fixed_window.h"

#define SEC LF_SEC
#define MS LF_MS

static prs_fixed_window *make_fw(int64_t limit, int64_t window_ns) {
    prs_fixed_window_config cfg;
    prs_fixed_window_config_init(&cfg);
    cfg.limit = limit;
    cfg.window_ns = window_ns;
    prs_fixed_window *fw = NULL;
    ASSERT_OK(prs_fixed_window_new(&cfg, &fw));
    ASSERT(fw != NULL);
    return fw;
}

static const lf_ops FW = {&prs_algo_fixed_window};

TEST(fixed_window_config) {
    prs_fixed_window_config cfg;
    prs_fixed_window_config_init(&cfg);
    ASSERT_EQ_I64(cfg.limit, 1);
    ASSERT_EQ_I64(cfg.window_ns, SEC);
    ASSERT(cfg.allocator == NULL);
    ASSERT_OK(prs_fixed_window_config_validate(&cfg));
    ASSERT_STATUS(prs_fixed_window_config_validate(NULL), PRS_EINVAL);
    prs_fixed_window *fw = (prs_fixed_window *)&cfg;
    cfg.limit = 0;
    ASSERT_STATUS(prs_fixed_window_new(&cfg, &fw), PRS_EINVAL);
    ASSERT(fw == NULL);
    cfg.limit = -5;
    ASSERT_STATUS(prs_fixed_window_config_validate(&cfg), PRS_EINVAL);
    cfg.limit = 3;
    cfg.window_ns = 0;
    ASSERT_STATUS(prs_fixed_window_config_validate(&cfg), PRS_EINVAL);
    cfg.window_ns = -1;
    ASSERT_STATUS(prs_fixed_window_config_validate(&cfg), PRS_EINVAL);
    cfg.window_ns = INT64_MAX;
    cfg.limit = INT64_MAX;
    ASSERT_OK(prs_fixed_window_config_validate(&cfg));
    ASSERT_STATUS(prs_fixed_window_new(&cfg, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_fixed_window_new(NULL, &fw), PRS_EINVAL);
    fw = make_fw(3, SEC);
    prs_decision d;
    ASSERT_STATUS(prs_fixed_window_check(fw, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_fixed_window_check(fw, 0, -1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_fixed_window_check(fw, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_fixed_window_peek(NULL, 0, 1, &d), PRS_EINVAL);
    ASSERT_EQ_I64(prs_fixed_window_limit(fw), 3);
    ASSERT_EQ_I64(prs_fixed_window_window_ns(fw), SEC);
    prs_fixed_window_free(fw);
    prs_fixed_window_free(NULL);
    prs_fixed_window_reset(NULL);
}

TEST(fixed_window_table) {
    prs_fixed_window *fw = make_fw(3, 10 * SEC);
    static const struct { int64_t t_ms, n; int allowed; int64_t remaining, retry_ms, reset_ms; } rows[] = {
        {12000, 1, 1, 2, 0, 8000},  /* window [10 s, 20 s) */
        {12500, 2, 1, 0, 0, 7500},
        {13000, 1, 0, 0, 7000, 7000},
        {19999, 1, 0, 0, 1, 1},
        {20000, 3, 1, 0, 0, 10000}, /* a fresh window: the whole limit at once */
        {29999, 1, 0, 0, 1, 1},
        {30000, 4, 0, 3, -1, 0},    /* n > limit: never */
        {30000, 2, 1, 1, 0, 10000},
        {55000, 1, 1, 2, 0, 5000},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_decision d = lf_check(&FW, fw, rows[i].t_ms * MS, rows[i].n);
        lf_sane(&d, 3);
        ASSERT_EQ_I64(d.allowed, rows[i].allowed);
        ASSERT_EQ_I64(d.remaining, rows[i].remaining);
        ASSERT_EQ_I64(d.retry_after_ns, rows[i].retry_ms < 0 ? PRS_NEVER : rows[i].retry_ms * MS);
        ASSERT_EQ_I64(d.reset_after_ns, rows[i].reset_ms * MS);
    }
    ASSERT_NEAR(prs_fixed_window_available(fw, 56 * SEC), 2.0, 0);
    ASSERT_NEAR(prs_fixed_window_available(fw, 60 * SEC), 3.0, 0);
    /* peek never counts */
    for (int i = 0; i < 10; i++) ASSERT(lf_peek(&FW, fw, 57 * SEC, 2).allowed);
    prs_fixed_window_reset(fw);
    ASSERT_NEAR(prs_fixed_window_available(fw, 56 * SEC), 3.0, 0);
    prs_fixed_window_free(fw);
}

TEST(fixed_window_alignment_and_boundary_burst) {
    prs_fixed_window *fw = make_fw(5, 1000);
    /* negative instants align by floor: [-1000, 0) is one window */
    ASSERT(lf_check(&FW, fw, -1000, 5).allowed);
    prs_decision d = lf_check(&FW, fw, -1, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 1);
    ASSERT(lf_check(&FW, fw, 0, 5).allowed);
    /* the documented 2*limit across a boundary */
    prs_fixed_window_reset(fw);
    ASSERT(lf_check(&FW, fw, 999, 5).allowed);
    ASSERT(lf_check(&FW, fw, 1000, 5).allowed);
    ASSERT(!lf_check(&FW, fw, 1001, 1).allowed);
    prs_fixed_window_free(fw);
}

TEST(fixed_window_clock_backwards) {
    prs_fixed_window *fw = make_fw(2, SEC);
    ASSERT(lf_check(&FW, fw, 5 * SEC, 2).allowed);
    /* back into an earlier window: still the count of the later one */
    prs_decision d = lf_check(&FW, fw, 3 * SEC + 500 * MS, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, 2500 * MS); /* until the end of [5 s, 6 s) */
    ASSERT(!lf_check(&FW, fw, 0, 1).allowed);
    ASSERT(!lf_check(&FW, fw, INT64_MIN, 1).allowed);
    ASSERT(lf_check(&FW, fw, 6 * SEC, 1).allowed);
    prs_fixed_window_free(fw);
}

TEST(fixed_window_saturation) {
    prs_fixed_window *fw = make_fw(INT64_MAX, INT64_MAX);
    ASSERT(lf_check(&FW, fw, INT64_MAX - 1, INT64_MAX - 1).allowed);
    /* INT64_MAX is a multiple of the window: a new window starts there */
    prs_decision d = lf_check(&FW, fw, INT64_MAX, 2);
    ASSERT(d.allowed);
    d = lf_check(&FW, fw, INT64_MAX, INT64_MAX);
    lf_sane(&d, INT64_MAX);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER); /* [INT64_MAX, ...) never ends */
    prs_fixed_window_free(fw);
    fw = make_fw(1, 3 * SEC);
    ASSERT(lf_check(&FW, fw, INT64_MAX - 1, 1).allowed);
    d = lf_check(&FW, fw, INT64_MAX, 1);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER); /* the last window never ends */
    ASSERT_EQ_I64(d.reset_after_ns, PRS_NEVER);
    ASSERT(lf_check(&FW, fw, INT64_MIN, 1).allowed == 0);
    prs_fixed_window_free(fw);
    fw = make_fw(1, 8); /* INT64_MIN is a multiple of 8 */
    ASSERT(lf_check(&FW, fw, INT64_MIN, 1).allowed);
    ASSERT(!lf_check(&FW, fw, INT64_MIN + 1, 1).allowed);
    prs_fixed_window_free(fw);
}

static int make_for_alloc(const prs_allocator *a, void **obj) {
    prs_fixed_window_config cfg;
    prs_fixed_window_config_init(&cfg);
    cfg.allocator = a;
    return prs_fixed_window_new(&cfg, (prs_fixed_window **)obj);
}
static void destroy_for_alloc(void *obj) { prs_fixed_window_free(obj); }

TEST(fixed_window_alloc_failure) { prs_test_alloc_failures(make_for_alloc, destroy_for_alloc); }

TEST(fixed_window_threads_frozen_clock) {
    prs_fixed_window *fw = make_fw(1000, SEC);
    ASSERT_EQ_I64(lf_hammer(&FW, fw, 5 * SEC, 4, 20000), 1000);
    ASSERT_EQ_I64(lf_hammer(&FW, fw, 5 * SEC + 999 * MS, 4, 20000), 0);
    ASSERT_EQ_I64(lf_hammer(&FW, fw, 6 * SEC, 2, 20000), 1000);
    prs_fixed_window_free(fw);
}

/* Random schedule vs a brute-force model: admitted iff the units admitted in the
 * aligned window of t plus n fit; then the bounds of the header. */
TEST(fixed_window_random_vs_model) {
    enum { STEPS = 3000 };
    static int64_t at[STEPS], w8[STEPS];
    uint64_t seed = 0x9E3779B97F4A7C15u;
    for (int round = 0; round < 6; round++) {
        int64_t limit = lf_range(&seed, 1, 12), w = lf_range(&seed, 1, 50) * 100;
        prs_fixed_window *fw = make_fw(limit, w);
        int k = 0;
        int64_t t = lf_range(&seed, -100000, 100000);
        for (int i = 0; i < STEPS; i++) {
            t += lf_range(&seed, 0, w / 3);
            int64_t n = lf_range(&seed, 1, limit + 1), used = 0, ws = t - (((t % w) + w) % w);
            for (int j = 0; j < k; j++) if (at[j] >= ws) used += w8[j];
            prs_decision d = lf_check(&FW, fw, t, n);
            lf_sane(&d, limit);
            ASSERT_EQ_I64(d.allowed, used + n <= limit);
            if (d.allowed) { at[k] = t; w8[k] = n; k++; }
        }
        for (int i = 0; i < k; i++) { /* any interval [at_i, at_i + w): <= 2 * limit */
            int64_t sum = 0;
            for (int j = i; j < k && at[j] < at[i] + w; j++) sum += w8[j];
            ASSERT_LE_I64(sum, 2 * limit);
        }
        prs_fixed_window_free(fw);
    }
}

TEST(fixed_window_descriptor) {
    ASSERT_STREQ(prs_algo_fixed_window.name, "fixed_window");
    prs_fixed_window *fw = make_fw(4, 250 * MS);
    ASSERT_LE_I64(prs_algo_fixed_window.state_size(prs_fixed_window_params(fw)), PRS_ALGO_MAX_INLINE_STATE);
    lf_object_matches_descriptor(&FW, fw, 5, 100 * MS, 12345, 4000, 1);
    lf_state s;
    lf_state_make(&s, &prs_algo_fixed_window, prs_fixed_window_params(fw));
    ASSERT(s.algo->is_fresh(s.params, s.buf, 0));
    ASSERT(lf_sdecide(&s, 100 * MS, 3, 1).allowed);
    ASSERT(!s.algo->is_fresh(s.params, s.buf, 200 * MS));
    ASSERT(s.algo->is_fresh(s.params, s.buf, 250 * MS));
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 200 * MS), 1.0, 0);
    s.algo->refund(s.params, s.buf, 200 * MS, 2);
    ASSERT_NEAR(s.algo->available(s.params, s.buf, 200 * MS), 3.0, 0);
    s.algo->refund(s.params, s.buf, 200 * MS, 100);
    ASSERT(s.algo->is_fresh(s.params, s.buf, 200 * MS));
    ASSERT_STATUS(s.algo->decide(s.params, s.buf, 0, 0, 1, &(prs_decision){0}), PRS_EINVAL);
    lf_state_free(&s);
    prs_fixed_window_free(fw);
}
