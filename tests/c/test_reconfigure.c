/*
 * test_reconfigure.c - changing the params of live limiters: each algorithm's
 * prs_X_reconfigure and prs_keyed_reconfigure.
 *
 * Tables at explicit times (what is kept, the new params applied from `now`,
 * exact retry_after), validation that changes nothing, allocation failure,
 * groups over reconfigured members, and real threads deciding with time
 * frozen while another thread flips the config: never more admitted than the
 * largest limit, and exactly that limit once the config settles on it.
 */
#include "prs_test.h"
#include "test_make.h"

#include "prs_fixed_window.h"
#include "prs_gcra.h"
#include "prs_group.h"
#include "prs_keyed.h"
#include "prs_leaky_bucket.h"
#include "prs_sliding_counter.h"
#include "prs_sliding_log.h"
#include "prs_token_bucket.h"

#include <pthread.h>
#include <stdatomic.h>

#define MS PRS_NS_PER_MS
#define SEC PRS_NS_PER_SEC

static prs_decision D;

/* check n at t: expect allowed (retry 0) or denied with exactly `retry` ns. */
#define CHECK_OK(fn, obj, t, n)                                              \
    do {                                                                     \
        ASSERT_OK(fn(obj, t, n, &D));                                        \
        if (!D.allowed) PRS__FAIL("denied at %lld for n=%lld (retry %lld)",   \
                                  (long long)(t), (long long)(n),            \
                                  (long long)D.retry_after_ns);              \
    } while (0)
#define CHECK_NO(fn, obj, t, n, retry)                                       \
    do {                                                                     \
        ASSERT_OK(fn(obj, t, n, &D));                                        \
        ASSERT_EQ_I64(D.allowed, 0);                                         \
        ASSERT_EQ_I64(D.retry_after_ns, retry);                              \
    } while (0)

static prs_token_bucket_config tb_cfg(double cap, double rate) {
    prs_token_bucket_config c;
    prs_token_bucket_config_init(&c);
    c.capacity = cap;
    c.refill_rate = rate;
    return c;
}
static prs_gcra_config gcra_cfg(double rate, int64_t burst) {
    prs_gcra_config c;
    prs_gcra_config_init(&c);
    c.rate = rate;
    c.burst = burst;
    return c;
}
static prs_leaky_bucket_config lb_cfg(double cap, double rate) {
    prs_leaky_bucket_config c;
    prs_leaky_bucket_config_init(&c);
    c.capacity = cap;
    c.leak_rate = rate;
    return c;
}
static prs_fixed_window_config fw_cfg(int64_t limit, int64_t w) {
    prs_fixed_window_config c;
    prs_fixed_window_config_init(&c);
    c.limit = limit;
    c.window_ns = w;
    return c;
}
static prs_sliding_log_config sl_cfg(int64_t limit, int64_t w) {
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = limit;
    c.window_ns = w;
    return c;
}
static prs_sliding_counter_config sc_cfg(int64_t limit, int64_t w) {
    prs_sliding_counter_config c;
    prs_sliding_counter_config_init(&c);
    c.limit = limit;
    c.window_ns = w;
    return c;
}
static prs_leaky_bucket *make_lb(double cap, double rate) {
    prs_leaky_bucket_config c = lb_cfg(cap, rate);
    prs_leaky_bucket *o;
    ASSERT_OK(prs_leaky_bucket_new(&c, &o));
    return o;
}
static prs_fixed_window *make_fw(int64_t limit, int64_t w) {
    prs_fixed_window_config c = fw_cfg(limit, w);
    prs_fixed_window *o;
    ASSERT_OK(prs_fixed_window_new(&c, &o));
    return o;
}
static prs_sliding_log *make_sl(int64_t limit, int64_t w) {
    prs_sliding_log_config c = sl_cfg(limit, w);
    prs_sliding_log *o;
    ASSERT_OK(prs_sliding_log_new(&c, &o));
    return o;
}
static prs_sliding_counter *make_sc(int64_t limit, int64_t w) {
    prs_sliding_counter_config c = sc_cfg(limit, w);
    prs_sliding_counter *o;
    ASSERT_OK(prs_sliding_counter_new(&c, &o));
    return o;
}

/* ---- token bucket ------------------------------------------------------------ */

TEST(reconf_tb_table) {
    prs_token_bucket *tb = make_tb(10, 1);
    CHECK_OK(prs_token_bucket_check, tb, 0, 8); /* 2 left */
    /* at 1 s: 3 tokens earned at the OLD rate, kept under capacity 5 */
    prs_token_bucket_config c = tb_cfg(5, 10);
    ASSERT_OK(prs_token_bucket_reconfigure(tb, &c, 1 * SEC));
    ASSERT_EQ_I64(prs_token_bucket_capacity(tb), 5);
    ASSERT_NEAR(prs_token_bucket_refill_rate(tb), 10, 0);
    ASSERT_NEAR(prs_token_bucket_available(tb, 1 * SEC), 3, 1e-9);
    CHECK_OK(prs_token_bucket_check, tb, 1 * SEC, 3);
    CHECK_NO(prs_token_bucket_check, tb, 1 * SEC, 1, 100 * MS); /* new rate: 10/s */
    CHECK_OK(prs_token_bucket_check, tb, 1 * SEC + 100 * MS, 1);
    ASSERT_EQ_I64(D.limit, 5);
    /* full at 5, lowered to 2: tokens capped */
    c = tb_cfg(2, 10);
    ASSERT_OK(prs_token_bucket_reconfigure(tb, &c, 10 * SEC));
    CHECK_OK(prs_token_bucket_check, tb, 10 * SEC, 2);
    CHECK_NO(prs_token_bucket_check, tb, 10 * SEC, 1, 100 * MS);
    CHECK_NO(prs_token_bucket_check, tb, 10 * SEC, 3, PRS_NEVER); /* above the new capacity */
    prs_token_bucket_free(tb);
}

TEST(reconf_tb_old_rate_until_now_no_minting) {
    prs_token_bucket *tb = make_tb(10, 1);
    CHECK_OK(prs_token_bucket_check, tb, 0, 10);
    /* 2 s at 1/s = 2 tokens: a rate raised at 2 s does not apply backwards */
    prs_token_bucket_config c = tb_cfg(10, 1000);
    ASSERT_OK(prs_token_bucket_reconfigure(tb, &c, 2 * SEC));
    CHECK_NO(prs_token_bucket_check, tb, 2 * SEC, 3, 1 * MS);
    /* a never-used bucket raised to 20 keeps its 10 and refills at the new rate */
    prs_token_bucket *fresh = make_tb(10, 1);
    c = tb_cfg(20, 10);
    ASSERT_OK(prs_token_bucket_reconfigure(fresh, &c, 5 * SEC));
    ASSERT_NEAR(prs_token_bucket_available(fresh, 5 * SEC), 10, 0);
    CHECK_NO(prs_token_bucket_check, fresh, 5 * SEC, 11, 100 * MS);
    ASSERT_NEAR(prs_token_bucket_available(fresh, 6 * SEC), 20, 0);
    /* to a fixed budget and back: nothing earned while the rate was 0 */
    c = tb_cfg(20, 0);
    CHECK_OK(prs_token_bucket_check, fresh, 6 * SEC, 20);
    ASSERT_OK(prs_token_bucket_reconfigure(fresh, &c, 6 * SEC));
    CHECK_NO(prs_token_bucket_check, fresh, 100 * SEC, 1, PRS_NEVER);
    c = tb_cfg(20, 1);
    ASSERT_OK(prs_token_bucket_reconfigure(fresh, &c, 100 * SEC));
    CHECK_NO(prs_token_bucket_check, fresh, 100 * SEC, 1, 1 * SEC);
    prs_token_bucket_free(tb);
    prs_token_bucket_free(fresh);
}

TEST(reconf_tb_clock_behind_last) {
    prs_token_bucket *tb = make_tb(10, 1);
    CHECK_OK(prs_token_bucket_check, tb, 5 * SEC, 10);
    prs_token_bucket_config c = tb_cfg(10, 2);
    ASSERT_OK(prs_token_bucket_reconfigure(tb, &c, 1 * SEC)); /* behind: no refill, no error */
    CHECK_NO(prs_token_bucket_check, tb, 5 * SEC, 1, 500 * MS);
    prs_token_bucket_free(tb);
}

/* ---- GCRA -------------------------------------------------------------------------- */

TEST(reconf_gcra_table_consumed_kept) {
    prs_gcra *g = make_gcra(10, 10); /* T = 100 ms */
    CHECK_OK(prs_gcra_check, g, 0, 6);  /* 6 consumed: tat = 600 ms */
    prs_gcra_config c = gcra_cfg(100, 5); /* T = 10 ms, burst 5 < 6 consumed */
    ASSERT_OK(prs_gcra_reconfigure(g, &c, 0));
    ASSERT_NEAR(prs_gcra_rate(g), 100, 0);
    ASSERT_EQ_I64(prs_gcra_burst(g), 5);
    ASSERT_EQ_I64(prs_gcra_interval_ns(g), 10 * MS);
    /* 6 consumed = 60 ms on the new schedule; one more needs 70 <= 50: 20 ms */
    CHECK_NO(prs_gcra_check, g, 0, 1, 20 * MS);
    CHECK_NO(prs_gcra_check, g, 19 * MS, 1, 1 * MS);
    CHECK_OK(prs_gcra_check, g, 20 * MS, 1);
    ASSERT_EQ_I64(D.limit, 5);
    ASSERT_EQ_I64(D.remaining, 0);
    /* raised burst at the same rate: consumed stays, room appears at once */
    c = gcra_cfg(100, 50);
    ASSERT_OK(prs_gcra_reconfigure(g, &c, 20 * MS));
    CHECK_OK(prs_gcra_check, g, 20 * MS, 44); /* 5 consumed + 44 = 49 <= 50 (+1 ns) */
    CHECK_NO(prs_gcra_check, g, 20 * MS, 2, 10 * MS + 1);
    prs_gcra_free(g);
}

TEST(reconf_gcra_fresh_stays_full_and_round_trip_mints_nothing) {
    prs_gcra *g = make_gcra(10, 10);
    prs_gcra_config c = gcra_cfg(1, 3);
    ASSERT_OK(prs_gcra_reconfigure(g, &c, 7 * SEC));
    CHECK_OK(prs_gcra_check, g, 7 * SEC, 3); /* a full (new) burst at once */
    CHECK_NO(prs_gcra_check, g, 7 * SEC, 1, 1 * SEC);
    /* 3 consumed; up to 7 rate changes back and forth: never fewer consumed */
    for (int i = 0; i < 7; i++) {
        c = gcra_cfg(i % 2 ? 1 : 3, 3);
        ASSERT_OK(prs_gcra_reconfigure(g, &c, 7 * SEC));
    }
    /* now rate 3/s: 3 consumed, the next fits once one has drained */
    ASSERT_OK(prs_gcra_peek(g, 7 * SEC, 1, &D));
    ASSERT_EQ_I64(D.allowed, 0);
    ASSERT_GE_I64(D.retry_after_ns, 333333334);
    prs_gcra_free(g);
}

/* ---- leaky bucket ------------------------------------------------------------------ */

TEST(reconf_lb_table_level_kept) {
    prs_leaky_bucket *lb = make_lb(10, 1);
    CHECK_OK(prs_leaky_bucket_check, lb, 0, 10);
    /* at 2 s the level is 8 (old rate); capacity 5 < 8, leak 10/s */
    prs_leaky_bucket_config c = lb_cfg(5, 10);
    ASSERT_OK(prs_leaky_bucket_reconfigure(lb, &c, 2 * SEC));
    ASSERT_NEAR(prs_leaky_bucket_level(lb, 2 * SEC), 8, 1e-9);
    CHECK_NO(prs_leaky_bucket_check, lb, 2 * SEC, 1, 400 * MS); /* 8 -> 4 at 10/s */
    ASSERT_EQ_I64(D.remaining, 0);
    CHECK_OK(prs_leaky_bucket_check, lb, 2 * SEC + 400 * MS, 1);
    ASSERT_EQ_I64(D.limit, 5);
    /* raised: room at once */
    c = lb_cfg(50, 10);
    ASSERT_OK(prs_leaky_bucket_reconfigure(lb, &c, 2 * SEC + 400 * MS));
    CHECK_OK(prs_leaky_bucket_check, lb, 2 * SEC + 400 * MS, 45);
    CHECK_NO(prs_leaky_bucket_check, lb, 2 * SEC + 400 * MS, 1, 100 * MS);
    prs_leaky_bucket_free(lb);
}

/* ---- fixed window ------------------------------------------------------------------ */

TEST(reconf_fw_table_count_kept) {
    prs_fixed_window *fw = make_fw(10, SEC);
    CHECK_OK(prs_fixed_window_check, fw, 500 * MS, 8);
    prs_fixed_window_config c = fw_cfg(5, SEC); /* below the count */
    ASSERT_OK(prs_fixed_window_reconfigure(fw, &c, 500 * MS));
    CHECK_NO(prs_fixed_window_check, fw, 500 * MS, 1, 500 * MS);
    ASSERT_EQ_I64(D.remaining, 0);
    ASSERT_NEAR(prs_fixed_window_available(fw, 600 * MS), 0, 0);
    CHECK_OK(prs_fixed_window_check, fw, 1 * SEC, 5); /* the window moved on */
    CHECK_NO(prs_fixed_window_check, fw, 1 * SEC, 1, 1 * SEC);
    c = fw_cfg(20, SEC); /* raised: 5 counted, 15 more */
    ASSERT_OK(prs_fixed_window_reconfigure(fw, &c, 1 * SEC + 1));
    CHECK_OK(prs_fixed_window_check, fw, 1 * SEC + 2, 15);
    CHECK_NO(prs_fixed_window_check, fw, 1 * SEC + 2, 1, SEC - 2);
    prs_fixed_window_free(fw);
}

TEST(reconf_fw_new_window_carries_count) {
    prs_fixed_window *fw = make_fw(10, SEC);
    CHECK_OK(prs_fixed_window_check, fw, 1200 * MS, 4);
    prs_fixed_window_config c = fw_cfg(10, 10 * SEC);
    ASSERT_OK(prs_fixed_window_reconfigure(fw, &c, 1500 * MS));
    /* the 4 now count in [0, 10 s) */
    CHECK_NO(prs_fixed_window_check, fw, 1500 * MS, 7, 8500 * MS);
    CHECK_OK(prs_fixed_window_check, fw, 1500 * MS, 6);
    CHECK_NO(prs_fixed_window_check, fw, 9 * SEC, 1, 1 * SEC);
    CHECK_OK(prs_fixed_window_check, fw, 10 * SEC, 10);
    prs_fixed_window_free(fw);
}

TEST(reconf_windows_clock_behind_keeps_the_count) {
    prs_fixed_window *fw = make_fw(10, SEC);
    CHECK_OK(prs_fixed_window_check, fw, 5200 * MS, 4);
    prs_fixed_window_config c = fw_cfg(10, 2 * SEC);
    ASSERT_OK(prs_fixed_window_reconfigure(fw, &c, 1 * SEC)); /* a now behind the window */
    CHECK_NO(prs_fixed_window_check, fw, 5500 * MS, 7, 500 * MS); /* counted in [4 s, 6 s) */
    CHECK_OK(prs_fixed_window_check, fw, 5500 * MS, 6);
    prs_fixed_window_free(fw);
    prs_sliding_counter *sc = make_sc(10, SEC);
    CHECK_OK(prs_sliding_counter_check, sc, 5200 * MS, 4);
    prs_sliding_counter_config sc_c = sc_cfg(10, 2 * SEC);
    ASSERT_OK(prs_sliding_counter_reconfigure(sc, &sc_c, 1 * SEC));
    ASSERT_OK(prs_sliding_counter_check(sc, 5500 * MS, 7, &D));
    ASSERT_EQ_I64(D.allowed, 0);
    CHECK_OK(prs_sliding_counter_check, sc, 5500 * MS, 6);
    prs_sliding_counter_free(sc);
}

/* ---- sliding log ------------------------------------------------------------------- */

TEST(reconf_sl_table_lower_raise) {
    prs_sliding_log *sl = make_sl(5, SEC);
    for (int i = 0; i < 5; i++) CHECK_OK(prs_sliding_log_check, sl, i * 100 * MS, 1);
    prs_sliding_log_config c = sl_cfg(3, SEC);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 450 * MS));
    /* 5 live, limit 3: the third oldest (200 ms) must leave: at 1.2 s */
    CHECK_NO(prs_sliding_log_check, sl, 450 * MS, 1, 750 * MS);
    ASSERT_EQ_I64(D.limit, 3);
    /* raised above the ring the log was made with: an external ring; the two
     * left out come back (as 200 ms copies), so 5 are still counted */
    c = sl_cfg(8, SEC);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 450 * MS));
    CHECK_OK(prs_sliding_log_check, sl, 450 * MS, 3);
    CHECK_NO(prs_sliding_log_check, sl, 450 * MS, 1, 750 * MS); /* copies leave at 1.2 s */
    CHECK_NO(prs_sliding_log_check, sl, 450 * MS, 9, PRS_NEVER);
    /* back to 2 (into the inline ring): newest 2 kept, the rest counted */
    c = sl_cfg(2, SEC);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 500 * MS));
    CHECK_NO(prs_sliding_log_check, sl, 500 * MS, 1, 950 * MS); /* 450 ms entries */
    CHECK_OK(prs_sliding_log_check, sl, 1450 * MS, 2);
    /* a new window applies to the times as they are */
    c = sl_cfg(2, 2 * SEC);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 1450 * MS));
    CHECK_NO(prs_sliding_log_check, sl, 1450 * MS, 1, 2 * SEC);
    prs_sliding_log_free(sl);
}

TEST(reconf_sl_wrapped_ring_in_place) {
    prs_sliding_log *sl = make_sl(4, 10);
    for (int i = 0; i < 4; i++) CHECK_OK(prs_sliding_log_check, sl, i, 1);
    CHECK_OK(prs_sliding_log_check, sl, 10, 1); /* 0 expired: ring wrapped, head 1 */
    prs_sliding_log_config c = sl_cfg(3, 10);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 10)); /* keeps 2, 3, 10 */
    CHECK_NO(prs_sliding_log_check, sl, 10, 1, 2);
    CHECK_OK(prs_sliding_log_check, sl, 12, 1);
    CHECK_NO(prs_sliding_log_check, sl, 12, 1, 1);
    c = sl_cfg(4, 10); /* 3, 10, 12 within the inline ring */
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 12));
    CHECK_OK(prs_sliding_log_check, sl, 12, 1);
    CHECK_NO(prs_sliding_log_check, sl, 12, 1, 1); /* 3 leaves at 13 */
    /* lowered to 2 (12, 12 kept, 2 counted), raised in place: the two come
     * back as copies of 12 (later than 3 and 10: conservative) */
    c = sl_cfg(2, 10);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 12));
    c = sl_cfg(4, 10);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 12));
    CHECK_NO(prs_sliding_log_check, sl, 12, 1, 10);
    CHECK_OK(prs_sliding_log_check, sl, 22, 4);
    prs_sliding_log_free(sl);
}

/* ---- sliding counter ----------------------------------------------------------------- */

TEST(reconf_sc_table) {
    prs_sliding_counter *sc = make_sc(10, SEC);
    CHECK_OK(prs_sliding_counter_check, sc, 500 * MS, 8);
    prs_sliding_counter_config c = sc_cfg(4, SEC);
    ASSERT_OK(prs_sliding_counter_reconfigure(sc, &c, 500 * MS));
    /* next window: prev 8, 8 * (1 - e) <= 3 at e = 625 ms */
    CHECK_NO(prs_sliding_counter_check, sc, 500 * MS, 1, 1125 * MS);
    CHECK_OK(prs_sliding_counter_check, sc, 1625 * MS, 1);
    ASSERT_EQ_I64(D.limit, 4);
    prs_sliding_counter_free(sc);

    sc = make_sc(10, SEC);
    CHECK_OK(prs_sliding_counter_check, sc, 250 * MS, 6);
    c = sc_cfg(10, 2 * SEC); /* new window: the 6 count in [0, 2 s) */
    ASSERT_OK(prs_sliding_counter_reconfigure(sc, &c, 500 * MS));
    /* not in [0, 2 s): in the next one, prev 6: e' = 2 s - floor(5 * 2 s / 6) */
    CHECK_NO(prs_sliding_counter_check, sc, 500 * MS, 5, 2 * SEC + 333333334 - 500 * MS);
    CHECK_OK(prs_sliding_counter_check, sc, 500 * MS, 4);
    prs_sliding_counter_free(sc);
}

/* ---- validation: all or nothing ----------------------------------------------------- */

TEST(reconf_bad_config_changes_nothing) {
    prs_token_bucket *tb = make_tb(10, 1);
    prs_token_bucket_config tc = tb_cfg(-1, 1);
    ASSERT_STATUS(prs_token_bucket_reconfigure(tb, &tc, 0), PRS_EINVAL);
    tc = tb_cfg(5, NAN);
    ASSERT_STATUS(prs_token_bucket_reconfigure(tb, &tc, 0), PRS_EINVAL);
    tc = tb_cfg(5, 2e15);
    ASSERT_STATUS(prs_token_bucket_reconfigure(tb, &tc, 0), PRS_ERANGE);
    ASSERT_STATUS(prs_token_bucket_reconfigure(NULL, &tc, 0), PRS_EINVAL);
    ASSERT_STATUS(prs_token_bucket_reconfigure(tb, NULL, 0), PRS_EINVAL);
    ASSERT_NEAR(prs_token_bucket_capacity(tb), 10, 0);
    CHECK_OK(prs_token_bucket_check, tb, 0, 10);

    prs_gcra *g = make_gcra(10, 10);
    prs_gcra_config gc = gcra_cfg(10, 0);
    ASSERT_STATUS(prs_gcra_reconfigure(g, &gc, 0), PRS_EINVAL);
    gc = gcra_cfg(1e-9, INT64_MAX / 2);
    ASSERT_STATUS(prs_gcra_reconfigure(g, &gc, 0), PRS_ERANGE);
    ASSERT_EQ_I64(prs_gcra_burst(g), 10);
    CHECK_OK(prs_gcra_check, g, 0, 10);

    prs_leaky_bucket *lb = make_lb(10, 1);
    prs_leaky_bucket_config lc = lb_cfg(10, 0);
    ASSERT_STATUS(prs_leaky_bucket_reconfigure(lb, &lc, 0), PRS_EINVAL);
    CHECK_OK(prs_leaky_bucket_check, lb, 0, 10);

    prs_fixed_window *fw = make_fw(10, SEC);
    prs_fixed_window_config fc = fw_cfg(0, SEC);
    ASSERT_STATUS(prs_fixed_window_reconfigure(fw, &fc, 0), PRS_EINVAL);
    fc = fw_cfg(5, 0);
    ASSERT_STATUS(prs_fixed_window_reconfigure(fw, &fc, 0), PRS_EINVAL);
    CHECK_OK(prs_fixed_window_check, fw, 0, 10);

    prs_sliding_log *sl = make_sl(10, SEC);
    prs_sliding_log_config sc = sl_cfg(PRS_SLIDING_LOG_MAX_LIMIT + 1, SEC);
    ASSERT_STATUS(prs_sliding_log_reconfigure(sl, &sc, 0), PRS_ERANGE);
    CHECK_OK(prs_sliding_log_check, sl, 0, 10);

    prs_sliding_counter *sco = make_sc(10, SEC);
    prs_sliding_counter_config cc = sc_cfg(-3, SEC);
    ASSERT_STATUS(prs_sliding_counter_reconfigure(sco, &cc, 0), PRS_EINVAL);
    CHECK_OK(prs_sliding_counter_check, sco, 0, 10);

    prs_token_bucket_free(tb);
    prs_gcra_free(g);
    prs_leaky_bucket_free(lb);
    prs_fixed_window_free(fw);
    prs_sliding_log_free(sl);
    prs_sliding_counter_free(sco);
}

TEST(reconf_sl_alloc_failure_changes_nothing) {
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, -1);
    prs_sliding_log_config c = sl_cfg(3, SEC);
    c.allocator = &ta.base;
    prs_sliding_log *sl;
    ASSERT_OK(prs_sliding_log_new(&c, &sl));
    CHECK_OK(prs_sliding_log_check, sl, 0, 3);
    ta.fail_after = ta.calls;
    c = sl_cfg(100, SEC);
    ASSERT_STATUS(prs_sliding_log_reconfigure(sl, &c, 0), PRS_ENOMEM);
    ASSERT_EQ_I64(prs_sliding_log_limit(sl), 3);
    CHECK_NO(prs_sliding_log_check, sl, 0, 1, SEC);
    ta.fail_after = -1;
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 0));
    CHECK_OK(prs_sliding_log_check, sl, 0, 97);
    c = sl_cfg(2, SEC); /* frees the external ring */
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 0));
    prs_sliding_log_free(sl);
    ASSERT_EQ_I64(ta.live, 0);
}

/* ---- keyed tables ---------------------------------------------------------------------- */

TEST(reconf_keyed_tb_every_key) {
    prs_token_bucket *tmpl = make_tb(10, 1);
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 1000);
    prs_token_bucket_free(tmpl); /* the table keeps its own params */
    const char *lk = "a key longer than eighteen bytes";
    ASSERT_OK(prs_keyed_check(t, "a", 1, 0, 2, &D));   /* 8 left */
    ASSERT_OK(prs_keyed_check(t, "b", 1, 0, 9, &D));   /* 1 left */
    ASSERT_OK(prs_keyed_check(t, lk, strlen(lk), 0, 10, &D));
    prs_token_bucket_config c = tb_cfg(4, 2);
    ASSERT_OK(prs_keyed_reconfigure(t, &c, 0));
    ASSERT_NEAR(prs_keyed_available(t, "a", 1, 0), 4, 0);   /* capped */
    ASSERT_NEAR(prs_keyed_available(t, "b", 1, 0), 1, 0);   /* kept */
    ASSERT_NEAR(prs_keyed_available(t, lk, strlen(lk), 0), 0, 0);
    ASSERT_NEAR(prs_keyed_available(t, "new", 3, 0), 4, 0); /* fresh under the new params */
    ASSERT_OK(prs_keyed_check(t, lk, strlen(lk), 0, 1, &D));
    ASSERT_EQ_I64(D.allowed, 0);
    ASSERT_EQ_I64(D.retry_after_ns, 500 * MS); /* new rate 2/s */
    ASSERT_EQ_I64(D.limit, 4);
    ASSERT_EQ_I64(prs_keyed_len(t), 3);
    /* bad config: nothing changes */
    c = tb_cfg(0, 2);
    ASSERT_STATUS(prs_keyed_reconfigure(t, &c, 0), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_reconfigure(NULL, &c, 0), PRS_EINVAL);
    ASSERT_NEAR(prs_keyed_available(t, "b", 1, 0), 1, 0);
    prs_keyed_free(t);
}

TEST(reconf_keyed_sliding_log_relays_slots) {
    prs_sliding_log *tmpl = make_sl(3, SEC);
    prs_keyed *t = make_table(&prs_algo_sliding_log, prs_sliding_log_params(tmpl), 5000);
    char key[64];
    for (int i = 0; i < 300; i++) {
        int len = snprintf(key, sizeof key, i % 2 ? "k%d" : "a long key number %d for the heap", i);
        ASSERT_OK(prs_keyed_check(t, key, (size_t)len, i * MS, 1 + i % 3, &D));
        ASSERT(D.allowed);
    }
    prs_sliding_log_config c = sl_cfg(40, SEC); /* larger states: every slot re-laid */
    ASSERT_OK(prs_keyed_reconfigure(t, &c, 300 * MS));
    ASSERT_EQ_I64(prs_keyed_len(t), 300);
    for (int i = 0; i < 300; i++) {
        int len = snprintf(key, sizeof key, i % 2 ? "k%d" : "a long key number %d for the heap", i);
        ASSERT_NEAR(prs_keyed_available(t, key, (size_t)len, 300 * MS), 40 - (1 + i % 3), 0);
    }
    ASSERT_OK(prs_keyed_check(t, "k1", 2, 300 * MS, 38, &D));
    ASSERT(D.allowed);
    ASSERT_OK(prs_keyed_check(t, "k1", 2, 300 * MS, 2, &D));
    ASSERT_EQ_I64(D.retry_after_ns, 1 * SEC + 1 * MS - 300 * MS); /* k1 admitted at 1 ms */
    c = sl_cfg(2, SEC); /* smaller again: counted entries still deny */
    ASSERT_OK(prs_keyed_reconfigure(t, &c, 300 * MS));
    ASSERT_OK(prs_keyed_check(t, "k1", 2, 300 * MS, 1, &D));
    ASSERT_EQ_I64(D.allowed, 0);
    ASSERT_EQ_I64(D.retry_after_ns, 1 * SEC); /* the newest two were at 300 ms */
    prs_keyed_free(t);
    prs_sliding_log_free(tmpl);
}

TEST(reconf_keyed_alloc_failure_changes_nothing) {
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, -1);
    prs_sliding_log *tmpl = make_sl(3, SEC);
    prs_keyed_config kc;
    prs_keyed_config_init(&kc);
    kc.algo = &prs_algo_sliding_log;
    kc.params = prs_sliding_log_params(tmpl);
    kc.max_keys = 5000;
    kc.allocator = &ta.base;
    prs_keyed *t;
    ASSERT_OK(prs_keyed_new(&kc, &t));
    char key[16];
    for (int i = 0; i < 600; i++) {
        int len = snprintf(key, sizeof key, "k%d", i);
        ASSERT_OK(prs_keyed_check(t, key, (size_t)len, 0, 1, &D));
    }
    prs_sliding_log_config c = sl_cfg(10, SEC);
    for (long k = 0;; k++) { /* fail each allocation in turn */
        ta.fail_after = ta.calls + k;
        int rc = prs_keyed_reconfigure(t, &c, 0);
        ta.fail_after = -1;
        if (rc == PRS_OK) break;
        ASSERT_STATUS(rc, PRS_ENOMEM);
        ASSERT_NEAR(prs_keyed_available(t, "k7", 2, 0), 2, 0); /* still limit 3 */
        ASSERT(k < 200);
    }
    ASSERT_NEAR(prs_keyed_available(t, "k7", 2, 0), 9, 0);
    prs_keyed_free(t);
    prs_sliding_log_free(tmpl);
    ASSERT_EQ_I64(ta.live, 0);
}

/* ---- groups keep working over reconfigured members ------------------------------------ */

TEST(reconf_group_members) {
    prs_sliding_log *sl = make_sl(2, SEC);
    prs_gcra *g = make_gcra(10, 5);
    prs_sliding_log *tmpl = make_sl(2, SEC);
    prs_keyed *t = make_table(&prs_algo_sliding_log, prs_sliding_log_params(tmpl), 100);
    prs_group_member m[3];
    prs_group_member_sliding_log(&m[0], sl);
    prs_group_member_gcra(&m[1], g);
    prs_group_member_keyed(&m[2], t, "user", 4);
    prs_group *grp;
    ASSERT_OK(prs_group_new(m, 3, NULL, &grp));
    int by;
    ASSERT_OK(prs_group_check(grp, 0, 2, &D, &by));
    ASSERT(D.allowed);
    ASSERT_OK(prs_group_check(grp, 0, 1, &D, &by));
    ASSERT_EQ_I64(D.allowed, 0);
    /* every member raised: the log moves to an external ring, the table's
     * states grow past the group's first scratch */
    prs_sliding_log_config c = sl_cfg(400, SEC);
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 0));
    ASSERT_OK(prs_keyed_reconfigure(t, &c, 0));
    prs_gcra_config gc = gcra_cfg(1000, 500);
    ASSERT_OK(prs_gcra_reconfigure(g, &gc, 0));
    ASSERT_OK(prs_group_check(grp, 0, 3, &D, &by));
    ASSERT(D.allowed);
    /* a key absent from the table, decided in the group's scratch */
    prs_group_member m2[2];
    prs_group_member_sliding_log(&m2[0], sl);
    prs_group *grp2;
    prs_keyed *t2 = make_table(&prs_algo_sliding_log, prs_sliding_log_params(tmpl), 100);
    prs_group_member_keyed(&m2[1], t2, "other", 5);
    ASSERT_OK(prs_group_new(m2, 2, NULL, &grp2));
    c = sl_cfg(300, SEC); /* 32 + 8 * 300 bytes: more than the group's stack scratch */
    ASSERT_OK(prs_keyed_reconfigure(t2, &c, 0));
    ASSERT_OK(prs_group_check(grp2, 0, 250, &D, &by)); /* the log has 395 left */
    ASSERT(D.allowed);
    ASSERT_NEAR(prs_keyed_available(t2, "other", 5, 0), 50, 0);
    /* a group rollback over the external ring keeps the log right */
    ASSERT_OK(prs_group_check(grp2, 0, 100, &D, &by)); /* the key has 50: denied */
    ASSERT_EQ_I64(D.allowed, 0);
    ASSERT_NEAR(prs_sliding_log_available(sl, 0), 400 - 5 - 250, 0);
    prs_group_free(grp);
    prs_group_free(grp2);
    prs_keyed_free(t);
    prs_keyed_free(t2);
    prs_sliding_log_free(sl);
    prs_sliding_log_free(tmpl);
    prs_gcra_free(g);
}

/* ---- threads: deciders while a thread flips the config, time frozen ------------------ */

typedef int (*check_fn)(void *obj, int64_t now, int64_t n, prs_decision *d);
typedef int (*reconf_fn)(void *obj, int which, int64_t now); /* which: 0 = big, 1 = small */

typedef struct race {
    void *obj;
    check_fn check;
    reconf_fn reconf;
    atomic_int stop;
    atomic_long admitted;
} race;

static void *decider(void *arg) {
    race *r = arg;
    prs_decision d;
    while (!atomic_load(&r->stop)) {
        if (r->check(r->obj, 0, 1, &d) != PRS_OK) abort();
        if (d.allowed) atomic_fetch_add(&r->admitted, 1);
    }
    return NULL;
}

/* Four deciders and one reconfigurer flipping between limit 100 and 50, time
 * frozen at 0; then the big config and a final drain. Never more than 100
 * admitted; `exact`: exactly 100 (the count is kept whole). */
static void run_race(const char *name, void *obj, check_fn check, reconf_fn reconf, int exact) {
    race r;
    r.obj = obj;
    r.check = check;
    r.reconf = reconf;
    atomic_init(&r.stop, 0);
    atomic_init(&r.admitted, 0);
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) ASSERT_EQ_I64(pthread_create(&tid[i], NULL, decider, &r), 0);
    for (int i = 0; i < 4000; i++) ASSERT_OK(reconf(obj, i & 1, 0));
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(tid[i], NULL);
    ASSERT_OK(reconf(obj, 0, 0));
    prs_decision d;
    for (;;) {
        ASSERT_OK(check(obj, 0, 1, &d));
        if (!d.allowed) break;
        atomic_fetch_add(&r.admitted, 1);
    }
    long got = atomic_load(&r.admitted);
    if (got > 100 || (exact && got != 100)) fprintf(stderr, "  %s: %ld admitted\n", name, got);
    ASSERT_LE_I64(got, 100);
    if (exact) ASSERT_EQ_I64(got, 100);
}

static int64_t lim(int which) { return which ? 50 : 100; }

static int tb_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_token_bucket_check(o, t, n, d); }
static int tb_rc(void *o, int w, int64_t t) { prs_token_bucket_config c = tb_cfg((double)lim(w), 0); return prs_token_bucket_reconfigure(o, &c, t); }
static int gc_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_gcra_check(o, t, n, d); }
static int gc_rc(void *o, int w, int64_t t) { prs_gcra_config c = gcra_cfg(1e-3, lim(w)); return prs_gcra_reconfigure(o, &c, t); }
static int gr_rc(void *o, int w, int64_t t) { prs_gcra_config c = gcra_cfg(w ? 2e-3 : 1e-3, lim(w)); return prs_gcra_reconfigure(o, &c, t); }
static int lb_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_leaky_bucket_check(o, t, n, d); }
static int lb_rc(void *o, int w, int64_t t) { prs_leaky_bucket_config c = lb_cfg((double)lim(w), 1e-3); return prs_leaky_bucket_reconfigure(o, &c, t); }
static int fw_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_fixed_window_check(o, t, n, d); }
static int fw_rc(void *o, int w, int64_t t) { prs_fixed_window_config c = fw_cfg(lim(w), SEC); return prs_fixed_window_reconfigure(o, &c, t); }
static int sl_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_sliding_log_check(o, t, n, d); }
static int sl_rc(void *o, int w, int64_t t) { prs_sliding_log_config c = sl_cfg(w ? 50 : 100, SEC); return prs_sliding_log_reconfigure(o, &c, t); }
static int sc_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_sliding_counter_check(o, t, n, d); }
static int sc_rc(void *o, int w, int64_t t) { prs_sliding_counter_config c = sc_cfg(lim(w), SEC); return prs_sliding_counter_reconfigure(o, &c, t); }
static int ky_chk(void *o, int64_t t, int64_t n, prs_decision *d) { return prs_keyed_check(o, "k", 1, t, n, d); }
static int ky_rc(void *o, int w, int64_t t) { prs_sliding_log_config c = sl_cfg(lim(w), SEC); return prs_keyed_reconfigure(o, &c, t); }

TEST(reconf_threads_no_over_admission) {
    prs_token_bucket *tb = make_tb(100, 0);
    run_race("token_bucket", tb, tb_chk, tb_rc, 0); /* tokens are capped when lowered: <= 100 */
    prs_token_bucket_free(tb);
    prs_gcra *g = make_gcra(1e-3, 100);
    run_race("gcra burst", g, gc_chk, gc_rc, 0); /* each flip may cost 1 ns of schedule: <= 100 */
    prs_gcra_free(g);
    g = make_gcra(1e-3, 100); /* rate and burst flipped: consumed re-expressed each time */
    run_race("gcra rate+burst", g, gc_chk, gr_rc, 0);
    prs_gcra_free(g);
    prs_leaky_bucket *lb = make_lb(100, 1e-3);
    run_race("leaky_bucket", lb, lb_chk, lb_rc, 1);
    prs_leaky_bucket_free(lb);
    prs_fixed_window *fw = make_fw(100, SEC);
    run_race("fixed_window", fw, fw_chk, fw_rc, 1);
    prs_fixed_window_free(fw);
    prs_sliding_log *sl = make_sl(60, SEC); /* 100 lives in an external ring */
    run_race("sliding_log", sl, sl_chk, sl_rc, 1);
    prs_sliding_log_free(sl);
    prs_sliding_counter *sc = make_sc(100, SEC);
    run_race("sliding_counter", sc, sc_chk, sc_rc, 1);
    prs_sliding_counter_free(sc);
    prs_sliding_log *tmpl = make_sl(100, SEC);
    prs_keyed *t = make_table(&prs_algo_sliding_log, prs_sliding_log_params(tmpl), 100);
    run_race("keyed sliding_log", t, ky_chk, ky_rc, 1);
    prs_keyed_free(t);
    prs_sliding_log_free(tmpl);
}
