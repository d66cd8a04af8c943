/*
 * test_make.h - constructors shared by the C tests: a limiter or key table
 * made with the default allocator, asserting success (a failure fails the test).
 */
#ifndef PRS_TEST_MAKE_H
#define PRS_TEST_MAKE_H

#include "prs_test.h"

#include "prs_gcra.h"
#include "prs_keyed.h"
#include "prs_token_bucket.h"

static inline prs_token_bucket *make_tb(double capacity, double rate) {
    prs_token_bucket_config cfg;
    prs_token_bucket_config_init(&cfg);
    cfg.capacity = capacity;
    cfg.refill_rate = rate;
    prs_token_bucket *tb = NULL;
    ASSERT_OK(prs_token_bucket_new(&cfg, &tb));
    ASSERT(tb != NULL);
    return tb;
}

static inline prs_gcra *make_gcra(double rate, int64_t burst) {
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    cfg.rate = rate;
    cfg.burst = burst;
    prs_gcra *g = NULL;
    ASSERT_OK(prs_gcra_new(&cfg, &g));
    ASSERT(g != NULL);
    return g;
}

static inline prs_keyed *make_table(const prs_algo *algo, const void *params, int64_t max_keys) {
    prs_keyed_config cfg;
    prs_keyed_config_init(&cfg);
    cfg.algo = algo;
    cfg.params = params;
    cfg.max_keys = max_keys;
    prs_keyed *t = NULL;
    ASSERT_OK(prs_keyed_new(&cfg, &t));
    ASSERT(t != NULL);
    return t;
}

#endif /* PRS_TEST_MAKE_H */
