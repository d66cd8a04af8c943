/*
 * test_limiter.c - the one limiter (prs_limiter.h): the algorithm table, the
 * generic object over every row, validation reasons, wait steps and the
 * blocking acquire (on a fake clock: no sleeping), state moves on
 * reconfiguration next to a group, allocation failures.
 */
#include "prs_test.h"

#include "prs_fixed_window.h"
#include "prs_gcra.h"
#include "prs_group.h"
#include "prs_leaky_bucket.h"
#include "prs_limiter.h"
#include "prs_sliding_counter.h"
#include "prs_sliding_log.h"
#include "prs_token_bucket.h"

#define SEC PRS_NS_PER_SEC
#define MS PRS_NS_PER_MS

/* A config of limit 4 per second (or the algorithm's nearest) for each row. */
typedef union any_config {
    prs_token_bucket_config tb;
    prs_gcra_config gcra;
    prs_leaky_bucket_config lb;
    prs_fixed_window_config fw;
    prs_sliding_log_config sl;
    prs_sliding_counter_config sc;
} any_config;

static void config_for(prs_algo_id id, any_config *c) {
    switch (id) {
    case PRS_ALGO_ID_token_bucket:
        prs_token_bucket_config_init(&c->tb);
        c->tb.capacity = 4;
        c->tb.refill_rate = 4;
        break;
    case PRS_ALGO_ID_gcra:
        prs_gcra_config_init(&c->gcra);
        c->gcra.rate = 4;
        c->gcra.burst = 4;
        break;
    case PRS_ALGO_ID_leaky_bucket:
        prs_leaky_bucket_config_init(&c->lb);
        c->lb.capacity = 4;
        c->lb.leak_rate = 4;
        break;
    case PRS_ALGO_ID_fixed_window:
        prs_fixed_window_config_init(&c->fw);
        c->fw.limit = 4;
        break;
    case PRS_ALGO_ID_sliding_log:
        prs_sliding_log_config_init(&c->sl);
        c->sl.limit = 4;
        break;
    case PRS_ALGO_ID_sliding_counter:
        prs_sliding_counter_config_init(&c->sc);
        c->sc.limit = 4;
        break;
    default: ASSERT(!"a row without a test config"); break;
    }
}

static prs_limiter *make(prs_algo_id id) {
    any_config c;
    config_for(id, &c);
    prs_limiter *lim = NULL;
    ASSERT_OK(prs_limiter_new(prs_algorithms[id].algo, &c, NULL, &lim, NULL));
    return lim;
}

TEST(limiter_table) {
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        const prs_algo_entry *e = &prs_algorithms[i];
        ASSERT(e->algo != NULL);
        ASSERT_STREQ(e->name, e->algo->name);
        ASSERT(e->py_name[0] != '\0');
        ASSERT(prs_algo_entry_of(e->algo) == e);
        if (e->redis_name[0]) ASSERT(prs_algo_by_redis_name(e->redis_name) == e);
    }
    ASSERT(prs_algo_by_redis_name("gcra") == &prs_algorithms[PRS_ALGO_ID_gcra]);
    ASSERT(prs_algo_by_redis_name("sliding_window_log") == &prs_algorithms[PRS_ALGO_ID_sliding_log]);
    ASSERT(prs_algo_by_redis_name("") == NULL);
    ASSERT(prs_algo_by_redis_name(NULL) == NULL);
    ASSERT(prs_algo_by_redis_name("leaky_bucket") == NULL); /* no Redis script */
    ASSERT(prs_algo_entry_of(NULL) == NULL);
}

/* The same generic calls on every row of the table. */
TEST(limiter_every_algorithm) {
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        prs_limiter *lim = make((prs_algo_id)i);
        prs_decision d;
        ASSERT(prs_limiter_algo(lim) == prs_algorithms[i].algo);
        ASSERT_OK(prs_limiter_peek(lim, 0, 4, &d));
        ASSERT_EQ(d.allowed, 1);
        ASSERT_OK(prs_limiter_check(lim, 0, 4, &d));
        ASSERT_EQ(d.allowed, 1);
        ASSERT_OK(prs_limiter_check(lim, 0, 1, &d));
        ASSERT_EQ(d.allowed, 0);
        ASSERT_GT_I64(d.retry_after_ns, 0);
        ASSERT_OK(prs_limiter_check(lim, 0, 5, &d)); /* above the limit: never */
        ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
        ASSERT_STATUS(prs_limiter_check(lim, 0, 0, &d), PRS_EINVAL);
        ASSERT_STATUS(prs_limiter_check(NULL, 0, 1, &d), PRS_EINVAL);
        ASSERT_NEAR(prs_limiter_available(lim, 0), 0.0, 1e-9);
        prs_limiter_reset(lim);
        ASSERT_NEAR(prs_limiter_available(lim, 0), 4.0, 1e-9);
        /* the config round-trips, and a bad one changes nothing */
        any_config c, back;
        config_for((prs_algo_id)i, &c);
        prs_limiter_config(lim, &back);
        ASSERT_EQ(prs_algo_validate(prs_algorithms[i].algo, &back, NULL), PRS_OK);
        memset(&c, 0xFF, sizeof c); /* NaNs and negative counts */
        prs_config_error why = {NULL, NULL};
        int rc = prs_limiter_reconfigure(lim, &c, 0, &why);
        ASSERT(rc == PRS_EINVAL || rc == PRS_ERANGE);
        ASSERT(why.field != NULL && why.reason != NULL);
        ASSERT_NEAR(prs_limiter_available(lim, 0), 4.0, 1e-9);
        prs_limiter_free(lim);
    }
    prs_limiter_free(NULL);
}

TEST(limiter_validation_says_which_field) {
    prs_token_bucket_config tb;
    prs_token_bucket_config_init(&tb);
    tb.capacity = -1;
    prs_config_error why = {NULL, NULL};
    prs_limiter *lim = (prs_limiter *)0x1;
    ASSERT_STATUS(prs_limiter_new(&prs_algo_token_bucket, &tb, NULL, &lim, &why), PRS_EINVAL);
    ASSERT(lim == NULL);
    ASSERT_STREQ(why.field, "capacity");
    ASSERT_STATUS(prs_token_bucket_config_validate_why(&tb, NULL), PRS_EINVAL);
    tb.capacity = 1;
    tb.refill_rate = 2e15;
    ASSERT_STATUS(prs_token_bucket_config_validate_why(&tb, &why), PRS_ERANGE);
    ASSERT_STREQ(why.field, "refill_rate");
    prs_gcra_config g;
    prs_gcra_config_init(&g);
    g.rate = 1e-10;
    ASSERT_STATUS(prs_gcra_config_validate_why(&g, &why), PRS_ERANGE);
    ASSERT_STREQ(why.field, "rate");
    g.rate = 1e-9;
    g.burst = INT64_MAX;
    ASSERT_STATUS(prs_gcra_config_validate_why(&g, &why), PRS_ERANGE);
    ASSERT_STREQ(why.field, "burst");
    prs_sliding_log_config sl;
    prs_sliding_log_config_init(&sl);
    sl.window_ns = 0;
    ASSERT_STATUS(prs_sliding_log_config_validate_why(&sl, &why), PRS_EINVAL);
    ASSERT_STREQ(why.field, "window_ns");
    ASSERT_STATUS(prs_algo_validate(&prs_algo_gcra, NULL, NULL), PRS_EINVAL);
}

TEST(limiter_wait_decide_table) {
    static const struct {
        int allowed;
        int64_t retry, now, deadline;
        prs_wait_verdict want;
        int64_t wake;
    } rows[] = {
        {1, 0, 5, PRS_NEVER, PRS_WAIT_ADMITTED, 0},
        {0, 10, 5, PRS_NEVER, PRS_WAIT_SLEEP, 15},
        {0, 10, 5, 15, PRS_WAIT_SLEEP, 15},          /* admission at the deadline: wait */
        {0, 10, 5, 14, PRS_WAIT_TIMEOUT, 0},         /* one ns beyond it: give up now */
        {0, PRS_NEVER, 5, PRS_NEVER, PRS_WAIT_NEVER, 0},
        {0, INT64_MAX - 1, 5, PRS_NEVER, PRS_WAIT_NEVER, 0}, /* past 2^63 ns */
        {0, 10, INT64_MAX - 20, PRS_NEVER, PRS_WAIT_SLEEP, INT64_MAX - 10},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_decision d = {rows[i].allowed, 1, 0, rows[i].retry, 0};
        int64_t wake = -1;
        ASSERT_EQ(prs_wait_decide(&d, rows[i].now, rows[i].deadline, &wake), rows[i].want);
        if (rows[i].want == PRS_WAIT_SLEEP) ASSERT_EQ_I64(wake, rows[i].wake);
    }
}

/* A fake clock: sleeping moves it to the wake time and counts the sleeps. */
typedef struct fake_clock {
    int64_t now;
    int sleeps;
} fake_clock;
static int64_t fake_now(void *ctx) { return ((fake_clock *)ctx)->now; }
static void fake_sleep(void *ctx, int64_t wake) {
    fake_clock *c = ctx;
    if (wake > c->now) c->now = wake;
    c->sleeps++;
}

TEST(limiter_acquire_blocking_fake_clock) {
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    cfg.rate = 10;
    cfg.burst = 1;
    prs_gcra *g;
    ASSERT_OK(prs_gcra_new(&cfg, &g));
    prs_limiter *lim = prs_gcra_limiter(g);
    fake_clock fc = {0, 0};
    prs_clock clock = {fake_now, fake_sleep, &fc};
    prs_decision d;
    ASSERT_OK(prs_limiter_acquire_blocking(lim, 1, PRS_NEVER, &clock, &d));
    ASSERT_EQ(fc.sleeps, 0);
    ASSERT_OK(prs_limiter_acquire_blocking(lim, 1, PRS_NEVER, &clock, &d));
    ASSERT_EQ(fc.sleeps, 1);
    ASSERT_EQ_I64(fc.now, 100 * MS); /* exactly the admission instant */
    /* a deadline before the admission: at once, nothing taken */
    ASSERT_STATUS(prs_limiter_acquire_blocking(lim, 1, fc.now + 50 * MS, &clock, &d), PRS_ETIMEDOUT);
    ASSERT_EQ(fc.sleeps, 1);
    ASSERT_EQ_I64(d.retry_after_ns, 100 * MS);
    ASSERT_OK(prs_limiter_peek(lim, fc.now + 100 * MS, 1, &d));
    ASSERT_EQ(d.allowed, 1);
    /* above the burst: never, whatever the deadline */
    ASSERT_STATUS(prs_limiter_acquire_blocking(lim, 2, PRS_NEVER, &clock, &d), PRS_ENEVER);
    ASSERT_STATUS(prs_limiter_acquire_blocking(lim, 0, PRS_NEVER, &clock, &d), PRS_EINVAL);
    prs_gcra_free(g);

    /* a spent budget that does not refill: never */
    prs_token_bucket_config tc;
    prs_token_bucket_config_init(&tc);
    tc.capacity = 2;
    tc.refill_rate = 0;
    prs_limiter *tb;
    ASSERT_OK(prs_limiter_new(&prs_algo_token_bucket, &tc, NULL, &tb, NULL));
    ASSERT_OK(prs_limiter_acquire_blocking(tb, 2, PRS_NEVER, &clock, NULL));
    ASSERT_STATUS(prs_limiter_acquire_blocking(tb, 1, PRS_NEVER, &clock, NULL), PRS_ENEVER);
    prs_limiter_free(tb);
}

TEST(limiter_acquire_blocking_monotonic) {
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    cfg.rate = 1000;
    cfg.burst = 1;
    prs_limiter *lim;
    ASSERT_OK(prs_limiter_new(&prs_algo_gcra, &cfg, NULL, &lim, NULL));
    int64_t deadline = prs_monotonic_ns() + 10 * SEC;
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_limiter_acquire_blocking(lim, 1, deadline, NULL, NULL));
    ASSERT_STATUS(prs_limiter_acquire_blocking(lim, 1, prs_monotonic_ns() - 1, NULL, NULL),
                  PRS_ETIMEDOUT);
    prs_limiter_free(lim);
}

TEST(limiter_wait_step) {
    prs_limiter *lim = make(PRS_ALGO_ID_fixed_window);
    prs_decision d;
    int64_t wake = -1;
    ASSERT_EQ(prs_limiter_wait_step(lim, 0, 4, PRS_NEVER, &d, &wake), PRS_WAIT_ADMITTED);
    ASSERT_EQ(prs_limiter_wait_step(lim, 0, 1, PRS_NEVER, &d, &wake), PRS_WAIT_SLEEP);
    ASSERT_EQ_I64(wake, SEC);
    ASSERT_EQ(prs_limiter_wait_step(lim, 0, 1, SEC - 1, &d, &wake), PRS_WAIT_TIMEOUT);
    ASSERT_EQ(prs_limiter_wait_step(lim, 0, 5, PRS_NEVER, &d, &wake), PRS_WAIT_NEVER);
    ASSERT_EQ(prs_limiter_wait_step(lim, 0, 0, PRS_NEVER, &d, &wake), PRS_EINVAL);
    prs_limiter_free(lim);
}

/* A reconfiguration that changes the state's size moves the state; a group
 * holding the limiter finds it under the lock each time. */
TEST(limiter_state_moves_next_to_group) {
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = 3;
    prs_sliding_log *sl;
    ASSERT_OK(prs_sliding_log_new(&c, &sl));
    prs_group_member m[2];
    prs_group_member_sliding_log(&m[0], sl);
    prs_limiter *other = make(PRS_ALGO_ID_gcra);
    prs_group_member_limiter(&m[1], other);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    prs_decision d;
    ASSERT_OK(prs_group_check(g, 0, 2, &d, NULL));
    ASSERT_EQ(d.allowed, 1);
    c.limit = 6;
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 0));
    ASSERT_EQ_I64(prs_sliding_log_limit(sl), 6);
    ASSERT_OK(prs_group_check(g, 0, 2, &d, NULL)); /* 4 of 6 in the log, 4 of 4 in the GCRA */
    ASSERT_EQ(d.allowed, 1);
    ASSERT_NEAR(prs_sliding_log_available(sl, 0), 2.0, 1e-9);
    c.limit = 2; /* below the count: the newest 2 kept, the others counted */
    ASSERT_OK(prs_sliding_log_reconfigure(sl, &c, 0));
    ASSERT_OK(prs_group_peek(g, 0, 1, &d, NULL));
    ASSERT_EQ(d.allowed, 0);
    ASSERT_OK(prs_group_check(g, SEC, 1, &d, NULL));
    ASSERT_EQ(d.allowed, 1);
    prs_group_free(g);
    prs_limiter_free(other);
    prs_sliding_log_free(sl);

    prs_group_member bad;
    prs_group_member_limiter(&bad, NULL);
    ASSERT_STATUS(prs_group_new(&bad, 1, NULL, &g), PRS_EINVAL);
}

TEST(limiter_reconfigure_enomem_changes_nothing) {
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, 1); /* the limiter itself, then nothing */
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = 2;
    prs_limiter *lim;
    ASSERT_OK(prs_limiter_new(&prs_algo_sliding_log, &c, &ta.base, &lim, NULL));
    prs_decision d;
    ASSERT_OK(prs_limiter_check(lim, 0, 2, &d));
    c.limit = 8;
    ASSERT_STATUS(prs_limiter_reconfigure(lim, &c, 0, NULL), PRS_ENOMEM);
    prs_sliding_log_config now;
    prs_limiter_config(lim, &now);
    ASSERT_EQ_I64(now.limit, 2);
    ASSERT_OK(prs_limiter_peek(lim, 0, 1, &d));
    ASSERT_EQ(d.allowed, 0);
    prs_limiter_free(lim);
    ASSERT_EQ(ta.live, 0);
}

static int make_log(const prs_allocator *a, void **obj) {
    any_config c;
    config_for(PRS_ALGO_ID_sliding_log, &c);
    prs_limiter *lim = NULL;
    int rc = prs_limiter_new(&prs_algo_sliding_log, &c.sl, a, &lim, NULL);
    *obj = lim;
    return rc;
}
static void destroy(void *obj) { prs_limiter_free(obj); }

TEST(limiter_alloc_failures) {
    prs_test_alloc_failures(make_log, destroy);
}
