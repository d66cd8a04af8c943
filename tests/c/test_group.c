/*
 * test_group.c - all-or-nothing groups: tables at explicit times, the most
 * restrictive member's decision, keyed members (present, absent, table full),
 * the same member twice, big keyed states (refund path), every plain algorithm
 * as a member, threads mixing group and plain calls in opposite member orders
 * with time frozen, allocation failure, bad input.
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

#define SEC PRS_NS_PER_SEC
#define MS PRS_NS_PER_MS




static int gcheck(prs_group *g, int64_t now, int64_t n, prs_decision *d, int *by) {
    ASSERT_OK(prs_group_check(g, now, n, d, by));
    return d->allowed;
}

TEST(group_table) {
    prs_token_bucket *tb = make_tb(5, 1);
    prs_gcra *gc = make_gcra(1, 3);
    prs_group_member m[2];
    prs_group_member_token_bucket(&m[0], tb);
    prs_group_member_gcra(&m[1], gc);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    ASSERT_EQ_I64(prs_group_size(g), 2);
    prs_decision d;
    int by = 7;
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, -1);
    ASSERT_EQ_I64(d.remaining, 2); /* gcra: 2 left, token bucket: 4 */
    ASSERT_EQ_I64(d.limit, 3);
    ASSERT_EQ_I64(d.retry_after_ns, 0);
    ASSERT(gcheck(g, 0, 2, &d, &by));
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, 3 * SEC);
    ASSERT(!gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    /* the denial took nothing from the token bucket: 2 left */
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 2.0, 1e-9);
    /* peek changes nothing */
    ASSERT_OK(prs_group_peek(g, SEC, 1, &d, &by));
    ASSERT(d.allowed);
    ASSERT_OK(prs_group_peek(g, SEC, 1, &d, &by));
    ASSERT(d.allowed);
    ASSERT(gcheck(g, SEC, 1, &d, &by));
    ASSERT(!gcheck(g, SEC, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);
    /* drain the bucket by itself: now the bucket (index 0) denies first */
    ASSERT_OK(prs_token_bucket_check(tb, SEC, 2, &d));
    ASSERT(d.allowed);
    ASSERT(!gcheck(g, 2 * SEC, 2, &d, &by));
    ASSERT_EQ_I64(by, 0);
    /* the largest retry_after over the members: bucket has 1, needs 2 -> 1 s;
     * gcra needs 2 at 2 s: tat 4 s + 2 s - 3 s = 3 s -> 1 s */
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    ASSERT_NEAR(prs_group_available(g, 2 * SEC), 1.0, 1e-9);
    prs_group_reset(g);
    ASSERT_NEAR(prs_group_available(g, 2 * SEC), 3.0, 1e-9);
    ASSERT(gcheck(g, 2 * SEC, 3, &d, &by));
    /* n beyond every capacity: never */
    ASSERT(!gcheck(g, 2 * SEC, 9, &d, &by));
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(by, 0);
    prs_group_free(g);
    prs_group_free(NULL);
    prs_token_bucket_free(tb);
    prs_gcra_free(gc);
}

TEST(group_keyed_members) {
    prs_token_bucket *global = make_tb(10, 0);
    prs_token_bucket *tmpl = make_tb(2, 0);
    prs_keyed *users = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 1000);
    prs_group_member m[2];
    prs_group_member_token_bucket(&m[0], global);
    prs_group_member_keyed(&m[1], users, "u1", 2);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    prs_decision d;
    int by;
    ASSERT_OK(prs_group_peek(g, 0, 1, &d, &by)); /* peeking stores no key */
    ASSERT_EQ_I64(prs_keyed_len(users), 0);
    ASSERT(gcheck(g, 0, 1, &d, &by)); /* absent key: inserted on admission */
    ASSERT_EQ_I64(prs_keyed_len(users), 1);
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT(!gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_NEAR(prs_token_bucket_available(global, 0), 8.0, 1e-9);
    /* the same key outside the group sees the group's consumption */
    ASSERT_OK(prs_keyed_check(users, "u1", 2, 0, 1, &d));
    ASSERT(!d.allowed);
    /* a denied absent key is not stored */
    prs_group_member_keyed(&m[1], users, "u2", 2);
    prs_group *g2;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g2));
    ASSERT(!gcheck(g2, 0, 3, &d, &by));
    ASSERT_EQ_I64(by, 1);
    ASSERT_EQ_I64(prs_keyed_len(users), 1);
    prs_group_reset(g);
    ASSERT_EQ_I64(prs_keyed_len(users), 0);
    ASSERT_NEAR(prs_token_bucket_available(global, 0), 10.0, 1e-9);
    prs_group_free(g);
    prs_group_free(g2);
    prs_keyed_free(users);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(global);
}

/* A table full of limited keys denies the group; no member gives anything. */
TEST(group_keyed_table_full) {
    prs_token_bucket *global = make_tb(10, 0);
    prs_token_bucket *tmpl = make_tb(1, 1);
    prs_keyed *users = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 2);
    prs_decision d;
    ASSERT_OK(prs_keyed_check(users, "a", 1, 0, 1, &d));
    ASSERT_OK(prs_keyed_check(users, "b", 1, 300 * MS, 1, &d));
    prs_group_member m[2];
    prs_group_member_token_bucket(&m[0], global);
    prs_group_member_keyed(&m[1], users, "c", 1);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    int by;
    ASSERT(!gcheck(g, 500 * MS, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);
    ASSERT_EQ_I64(d.retry_after_ns, 500 * MS); /* "a" is fresh at 1 s */
    ASSERT_NEAR(prs_token_bucket_available(global, 0), 10.0, 1e-9);
    ASSERT_OK(prs_group_peek(g, 500 * MS, 1, &d, &by));
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(by, 1);
    /* at 1 s "a" is fresh: evicted for "c" */
    ASSERT(gcheck(g, SEC, 1, &d, &by));
    ASSERT_EQ_I64(prs_keyed_len(users), 2);
    ASSERT(prs_keyed_contains(users, "c", 1, SEC));
    ASSERT(prs_keyed_contains(users, "b", 1, SEC));
    ASSERT_NEAR(prs_token_bucket_available(global, 0), 9.0, 1e-9);
    prs_group_free(g);

    /* two new keys of one group and one free slot: denied, nothing taken */
    prs_keyed_reset_all(users);
    ASSERT_OK(prs_keyed_check(users, "a", 1, 0, 1, &d));
    prs_group_member m3[3];
    prs_group_member_token_bucket(&m3[0], global);
    prs_group_member_keyed(&m3[1], users, "x", 1);
    prs_group_member_keyed(&m3[2], users, "y", 1);
    ASSERT_OK(prs_group_new(m3, 3, NULL, &g));
    ASSERT(!gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    ASSERT_EQ_I64(prs_keyed_len(users), 1);
    ASSERT(gcheck(g, SEC, 1, &d, &by)); /* "a" fresh: evicted, both fit */
    ASSERT_EQ_I64(prs_keyed_len(users), 2);
    ASSERT(!prs_keyed_contains(users, "a", 1, SEC));
    prs_group_free(g);
    prs_keyed_free(users);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(global);
}

TEST(group_same_member_twice) {
    prs_token_bucket *tb = make_tb(4, 0);
    prs_token_bucket *tmpl = make_tb(3, 0);
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 100);
    prs_group_member m[4];
    prs_group_member_token_bucket(&m[0], tb);
    prs_group_member_keyed(&m[1], t, "k", 1);
    prs_group_member_token_bucket(&m[2], tb);
    prs_group_member_keyed(&m[3], t, "k", 1);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 4, NULL, &g));
    prs_decision d;
    int by;
    /* each check takes 2 from the bucket and 2 from key k (capacity 3) */
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(d.remaining, 0); /* key k: 1 left, 2 per request */
    ASSERT_EQ_I64(d.limit, 1);     /* key k: capacity 3, 2 per request */
    ASSERT(!gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);          /* key k's first appearance */
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER); /* a fixed budget: never refills */
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 2.0, 1e-9);
    ASSERT_NEAR(prs_keyed_available(t, "k", 1, 0), 1.0, 1e-9);
    prs_group_free(g);
    prs_keyed_free(t);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(tb);
}

/* A keyed sliding log (state bigger than the snapshot buffer): a denial is
 * rolled back with algo->refund. */
TEST(group_big_state_rollback) {
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = 50;
    c.window_ns = SEC;
    prs_sliding_log *sl;
    ASSERT_OK(prs_sliding_log_new(&c, &sl));
    prs_keyed *t = make_table(&prs_algo_sliding_log, prs_sliding_log_params(sl), 100);
    prs_gcra *gc = make_gcra(1, 2);
    prs_group_member m[2];
    prs_group_member_keyed(&m[0], t, "a", 1);
    prs_group_member_gcra(&m[1], gc);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    prs_decision d;
    int by;
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT(!gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, 1);
    ASSERT_NEAR(prs_keyed_available(t, "a", 1, 0), 48.0, 1e-9);
    prs_group_free(g);
    prs_gcra_free(gc);
    prs_keyed_free(t);
    prs_sliding_log_free(sl);
}

/* ---- threads: groups in both member orders + plain calls, time frozen ---- */

#define NTHREADS 8
#define PER_THREAD 20000

typedef struct {
    prs_token_bucket *a; /* capacity 1000 */
    prs_gcra *b;         /* burst 500 */
    prs_keyed *k;        /* key "k": capacity 800 */
    prs_group *g1, *g2;  /* (a, b, k) and (k, b, a) */
    atomic_long group_ok, a_ok, b_ok, errors;
} mt_ctx;

static mt_ctx mt;

static void *mt_worker(void *arg) {
    long id = (long)(intptr_t)arg;
    prs_decision d;
    for (int i = 0; i < PER_THREAD; i++) {
        int rc;
        if (id < 4) {
            int by;
            rc = prs_group_check((i + id) & 1 ? mt.g1 : mt.g2, 1000, 1, &d, &by);
            if (d.allowed) atomic_fetch_add(&mt.group_ok, 1);
        } else if (id < 6) {
            rc = prs_token_bucket_check(mt.a, 1000, 1, &d);
            if (d.allowed) atomic_fetch_add(&mt.a_ok, 1);
        } else {
            rc = prs_gcra_check(mt.b, 1000, 1, &d);
            if (d.allowed) atomic_fetch_add(&mt.b_ok, 1);
        }
        if (rc) atomic_fetch_add(&mt.errors, 1);
    }
    return NULL;
}

TEST(group_threads_exact) {
    mt.a = make_tb(1000, 0);
    mt.b = make_gcra(1, 500);
    prs_token_bucket *tmpl = make_tb(800, 0);
    mt.k = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 1000);
    prs_group_member m[3];
    prs_group_member_token_bucket(&m[0], mt.a);
    prs_group_member_gcra(&m[1], mt.b);
    prs_group_member_keyed(&m[2], mt.k, "k", 1);
    ASSERT_OK(prs_group_new(m, 3, NULL, &mt.g1));
    prs_group_member r[3] = {m[2], m[1], m[0]};
    ASSERT_OK(prs_group_new(r, 3, NULL, &mt.g2));
    pthread_t th[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, mt_worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    long G = atomic_load(&mt.group_ok);
    ASSERT_EQ_I64(atomic_load(&mt.errors), 0);
    /* every member admitted exactly its capacity, counting group and plain calls */
    ASSERT_EQ_I64(G + atomic_load(&mt.a_ok), 1000);
    ASSERT_EQ_I64(G + atomic_load(&mt.b_ok), 500);
    ASSERT_LE_I64(G, 500);
    ASSERT_NEAR(prs_keyed_available(mt.k, "k", 1, 1000), (double)(800 - G), 1e-9);
    prs_decision d;
    ASSERT_OK(prs_token_bucket_peek(mt.a, 1000, 1, &d));
    ASSERT(!d.allowed);
    ASSERT_OK(prs_gcra_peek(mt.b, 1000, 1, &d));
    ASSERT(!d.allowed);
    prs_group_free(mt.g1);
    prs_group_free(mt.g2);
    prs_keyed_free(mt.k);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(mt.a);
    prs_gcra_free(mt.b);
}

/* ---- every plain algorithm as a member ---------------------------------------- */

static prs_leaky_bucket *lb_new(double cap, double leak) {
    prs_leaky_bucket_config c;
    prs_leaky_bucket_config_init(&c);
    c.capacity = cap;
    c.leak_rate = leak;
    prs_leaky_bucket *lb;
    ASSERT_OK(prs_leaky_bucket_new(&c, &lb));
    return lb;
}

static prs_fixed_window *fw_new(int64_t limit, int64_t window_ns) {
    prs_fixed_window_config c;
    prs_fixed_window_config_init(&c);
    c.limit = limit;
    c.window_ns = window_ns;
    prs_fixed_window *fw;
    ASSERT_OK(prs_fixed_window_new(&c, &fw));
    return fw;
}

static prs_sliding_log *sl_new(int64_t limit, int64_t window_ns) {
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = limit;
    c.window_ns = window_ns;
    prs_sliding_log *sl;
    ASSERT_OK(prs_sliding_log_new(&c, &sl));
    return sl;
}

static prs_sliding_counter *sc_new(int64_t limit, int64_t window_ns) {
    prs_sliding_counter_config c;
    prs_sliding_counter_config_init(&c);
    c.limit = limit;
    c.window_ns = window_ns;
    prs_sliding_counter *sc;
    ASSERT_OK(prs_sliding_counter_new(&c, &sc));
    return sc;
}

/* The six plain algorithms and a key, one group; the sliding log's state (8
 * slots: 88 bytes) is larger than the snapshot buffer, so its rollback goes
 * through refund. */
typedef struct six {
    prs_token_bucket *tb;
    prs_gcra *gc;
    prs_leaky_bucket *lb;
    prs_fixed_window *fw;
    prs_sliding_log *sl;
    prs_sliding_counter *sc;
    prs_token_bucket *tmpl;
    prs_keyed *k;
} six;

/* What each member of a six has at `now`: tb gc lb fw sl sc key "u". */
static void six_avail(six *s, int64_t now, double out[7]) {
    out[0] = prs_token_bucket_available(s->tb, now);
    out[1] = prs_gcra_available(s->gc, now);
    out[2] = prs_leaky_bucket_available(s->lb, now);
    out[3] = prs_fixed_window_available(s->fw, now);
    out[4] = prs_sliding_log_available(s->sl, now);
    out[5] = prs_sliding_counter_available(s->sc, now);
    out[6] = prs_keyed_available(s->k, "u", 1, now);
}

static void assert_avail(six *s, int64_t now, const double want[7]) {
    double got[7];
    six_avail(s, now, got);
    for (int i = 0; i < 7; i++) ASSERT_NEAR(got[i], want[i], 1e-9);
}

TEST(group_all_algorithms) {
    six s;
    s.tb = make_tb(5, 1);
    s.gc = make_gcra(1, 4);
    s.lb = lb_new(6, 1);
    s.fw = fw_new(3, 10 * SEC);
    s.sl = sl_new(8, 10 * SEC);
    s.sc = sc_new(7, 10 * SEC);
    s.tmpl = make_tb(10, 0);
    s.k = make_table(&prs_algo_token_bucket, prs_token_bucket_params(s.tmpl), 100);
    prs_group_member m[7];
    prs_group_member_token_bucket(&m[0], s.tb);
    prs_group_member_gcra(&m[1], s.gc);
    prs_group_member_leaky_bucket(&m[2], s.lb);
    prs_group_member_fixed_window(&m[3], s.fw);
    prs_group_member_sliding_log(&m[4], s.sl);
    prs_group_member_sliding_counter(&m[5], s.sc);
    prs_group_member_keyed(&m[6], s.k, "u", 1);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 7, NULL, &g));
    ASSERT_EQ_I64(prs_group_size(g), 7);
    prs_decision d;
    int by = 7;
    ASSERT_NEAR(prs_group_available(g, 0), 3.0, 1e-9); /* the fixed window's 3 */
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, -1);
    ASSERT_EQ_I64(d.remaining, 2); /* fixed window: 3 - 1 */
    ASSERT_EQ_I64(d.limit, 3);
    ASSERT(gcheck(g, 0, 2, &d, &by));
    /* one member's numbers, the most restrictive: the full fixed window (not
     * the key, which never refills but has 7 left) */
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.limit, 3);
    ASSERT_EQ_I64(d.reset_after_ns, 10 * SEC);
    /* the fixed window is full: member 3 denies, until its window ends */
    ASSERT(!gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(by, 3);
    ASSERT_EQ_I64(d.retry_after_ns, 10 * SEC);
    ASSERT_OK(prs_group_peek(g, 0, 1, &d, &by));
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(by, 3);
    /* 3 taken from every member, nothing by the denials */
    const double after3[7] = {2, 1, 3, 0, 5, 4, 7};
    assert_avail(&s, 0, after3);

    /* 10 s: a new window; the counter still weighs the previous 3 at e = 0 */
    ASSERT(gcheck(g, 10 * SEC, 3, &d, &by));
    ASSERT_EQ_I64(d.remaining, 0);
    const double at10[7] = {2, 1, 3, 0, 5, 1, 4};
    assert_avail(&s, 10 * SEC, at10);

    /* 20 s: drain the key by itself; now the last member denies and every
     * other one, the sliding log through refund, gives back what it took */
    ASSERT_OK(prs_keyed_check(s.k, "u", 1, 20 * SEC, 4, &d));
    ASSERT(d.allowed);
    const double at20[7] = {5, 4, 6, 3, 8, 4, 0};
    assert_avail(&s, 20 * SEC, at20);
    ASSERT(!gcheck(g, 20 * SEC, 2, &d, &by));
    ASSERT_EQ_I64(by, 6);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER); /* the key never refills */
    assert_avail(&s, 20 * SEC, at20);
    ASSERT_EQ_I64(prs_sliding_log_available(s.sl, 20 * SEC), 8);
    ASSERT(!gcheck(g, 20 * SEC, 1, &d, &by));
    ASSERT_EQ_I64(by, 6);
    assert_avail(&s, 20 * SEC, at20);

    /* reset: every member fresh */
    prs_group_reset(g);
    const double fresh[7] = {5, 4, 6, 3, 8, 7, 10};
    assert_avail(&s, 20 * SEC, fresh);
    /* n beyond the fixed window's limit: never */
    ASSERT(!gcheck(g, 20 * SEC, 4, &d, &by));
    ASSERT_EQ_I64(by, 3);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    assert_avail(&s, 20 * SEC, fresh);
    prs_group_free(g);

    /* the reverse order: the same decisions, denied_by counted in this order */
    prs_group_member r[7];
    for (int i = 0; i < 7; i++) r[i] = m[6 - i];
    ASSERT_OK(prs_group_new(r, 7, NULL, &g));
    ASSERT(gcheck(g, 20 * SEC, 3, &d, &by));
    ASSERT(!gcheck(g, 20 * SEC, 1, &d, &by));
    ASSERT_EQ_I64(by, 3); /* the fixed window is in the middle either way */
    const double rev[7] = {2, 1, 3, 0, 5, 4, 7};
    assert_avail(&s, 20 * SEC, rev);
    prs_group_free(g);

    prs_keyed_free(s.k);
    prs_token_bucket_free(s.tmpl);
    prs_token_bucket_free(s.tb);
    prs_gcra_free(s.gc);
    prs_leaky_bucket_free(s.lb);
    prs_fixed_window_free(s.fw);
    prs_sliding_log_free(s.sl);
    prs_sliding_counter_free(s.sc);
}

/* A plain sliding log listed twice with a big state, and a small one (state
 * within the snapshot buffer) listed twice: each check takes 2 from each. */
TEST(group_plain_sliding_log_twice) {
    prs_sliding_log *big = sl_new(20, SEC), *small = sl_new(5, SEC);
    prs_leaky_bucket *lb = lb_new(100, 1);
    prs_group_member m[5];
    prs_group_member_sliding_log(&m[0], big);
    prs_group_member_sliding_log(&m[1], small);
    prs_group_member_sliding_log(&m[2], big);
    prs_group_member_sliding_log(&m[3], small);
    prs_group_member_leaky_bucket(&m[4], lb);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 5, NULL, &g));
    prs_decision d;
    int by;
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT(gcheck(g, 100, 1, &d, &by));
    /* the small log has 1 left, and a request takes 2 from it: 0 more requests */
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.limit, 2);
    ASSERT(!gcheck(g, 200, 1, &d, &by));
    ASSERT_EQ_I64(by, 1); /* the small log's first appearance */
    ASSERT_EQ_I64(d.retry_after_ns, SEC - 200); /* the small log's oldest entry */
    ASSERT_NEAR(prs_sliding_log_available(big, 200), 16.0, 1e-9);
    ASSERT_NEAR(prs_sliding_log_available(small, 200), 1.0, 1e-9);
    ASSERT_NEAR(prs_leaky_bucket_level(lb, 0), 2.0, 1e-6);
    /* the oldest entries expire at 1 s: the slots come back in order */
    ASSERT(gcheck(g, SEC, 1, &d, &by));
    ASSERT(!gcheck(g, SEC, 1, &d, &by));
    ASSERT(gcheck(g, SEC + 100, 1, &d, &by));
    prs_group_free(g);
    prs_sliding_log_free(big);
    prs_sliding_log_free(small);
    prs_leaky_bucket_free(lb);
}

/* ---- threads: the six algorithms + a key, groups in both orders and plain
 * calls on every limiter, time frozen ---------------------------------------- */

#define ALL_PLAIN 6

typedef struct {
    six s;
    prs_group *g1, *g2;
    atomic_long group_ok, plain_ok[ALL_PLAIN], errors;
} mt6_ctx;

static mt6_ctx mt6;
static const int64_t mt6_limit[ALL_PLAIN] = {1000, 500, 700, 900, 600, 800};
#define MT6_KEY 400
#define MT6_NOW (5 * SEC + 1000)

static int mt6_plain(int which, prs_decision *d) {
    switch (which) {
    case 0: return prs_token_bucket_check(mt6.s.tb, MT6_NOW, 1, d);
    case 1: return prs_gcra_check(mt6.s.gc, MT6_NOW, 1, d);
    case 2: return prs_leaky_bucket_check(mt6.s.lb, MT6_NOW, 1, d);
    case 3: return prs_fixed_window_check(mt6.s.fw, MT6_NOW, 1, d);
    case 4: return prs_sliding_log_check(mt6.s.sl, MT6_NOW, 1, d);
    default: return prs_sliding_counter_check(mt6.s.sc, MT6_NOW, 1, d);
    }
}

static void *mt6_worker(void *arg) {
    long id = (long)(intptr_t)arg;
    prs_decision d;
    for (int i = 0; i < PER_THREAD; i++) {
        int rc;
        if (id < 4) {
            int by;
            rc = prs_group_check((i + id) & 1 ? mt6.g1 : mt6.g2, MT6_NOW, 1, &d, &by);
            if (d.allowed) atomic_fetch_add(&mt6.group_ok, 1);
        } else {
            int which = (int)((i + id) % ALL_PLAIN);
            rc = mt6_plain(which, &d);
            if (d.allowed) atomic_fetch_add(&mt6.plain_ok[which], 1);
        }
        if (rc) atomic_fetch_add(&mt6.errors, 1);
    }
    return NULL;
}

TEST(group_threads_all_algorithms_exact) {
    memset(&mt6, 0, sizeof mt6);
    mt6.s.tb = make_tb((double)mt6_limit[0], 0);
    mt6.s.gc = make_gcra(1, mt6_limit[1]);
    mt6.s.lb = lb_new((double)mt6_limit[2], 1);
    mt6.s.fw = fw_new(mt6_limit[3], 10 * SEC);
    mt6.s.sl = sl_new(mt6_limit[4], 10 * SEC); /* refund path */
    mt6.s.sc = sc_new(mt6_limit[5], 10 * SEC);
    mt6.s.tmpl = make_tb(MT6_KEY, 0);
    mt6.s.k = make_table(&prs_algo_token_bucket, prs_token_bucket_params(mt6.s.tmpl), 1000);
    prs_group_member m[7];
    prs_group_member_token_bucket(&m[0], mt6.s.tb);
    prs_group_member_gcra(&m[1], mt6.s.gc);
    prs_group_member_leaky_bucket(&m[2], mt6.s.lb);
    prs_group_member_fixed_window(&m[3], mt6.s.fw);
    prs_group_member_sliding_log(&m[4], mt6.s.sl);
    prs_group_member_sliding_counter(&m[5], mt6.s.sc);
    prs_group_member_keyed(&m[6], mt6.s.k, "u", 1);
    ASSERT_OK(prs_group_new(m, 7, NULL, &mt6.g1));
    prs_group_member r[7];
    for (int i = 0; i < 7; i++) r[i] = m[6 - i];
    ASSERT_OK(prs_group_new(r, 7, NULL, &mt6.g2));
    pthread_t th[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, mt6_worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    long G = atomic_load(&mt6.group_ok);
    ASSERT_EQ_I64(atomic_load(&mt6.errors), 0);
    ASSERT_LE_I64(G, MT6_KEY);
    /* every member admitted exactly its limit, counting group and plain calls */
    for (int i = 0; i < ALL_PLAIN; i++) ASSERT_EQ_I64(G + atomic_load(&mt6.plain_ok[i]), mt6_limit[i]);
    ASSERT_NEAR(prs_keyed_available(mt6.s.k, "u", 1, MT6_NOW), (double)(MT6_KEY - G), 1e-9);
    prs_decision d;
    for (int i = 0; i < ALL_PLAIN; i++) {
        ASSERT_OK(mt6_plain(i, &d));
        ASSERT(!d.allowed);
    }
    int by;
    ASSERT(!gcheck(mt6.g1, MT6_NOW, 1, &d, &by));
    prs_group_free(mt6.g1);
    prs_group_free(mt6.g2);
    prs_keyed_free(mt6.s.k);
    prs_token_bucket_free(mt6.s.tmpl);
    prs_token_bucket_free(mt6.s.tb);
    prs_gcra_free(mt6.s.gc);
    prs_leaky_bucket_free(mt6.s.lb);
    prs_fixed_window_free(mt6.s.fw);
    prs_sliding_log_free(mt6.s.sl);
    prs_sliding_counter_free(mt6.s.sc);
}

/* ---- allocation failure and bad input -------------------------------------- */

static prs_group_member alloc_members[2];

static int make_group(const prs_allocator *a, void **obj) {
    return prs_group_new(alloc_members, 2, a, (prs_group **)obj);
}
static void destroy_group(void *obj) { prs_group_free(obj); }

TEST(group_alloc_failure) {
    prs_token_bucket *tb = make_tb(1, 1);
    prs_token_bucket *tmpl = make_tb(1, 1);
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 10);
    prs_group_member_token_bucket(&alloc_members[0], tb);
    prs_group_member_keyed(&alloc_members[1], t, "a long key, longer than the inline bytes", 40);
    prs_test_alloc_failures(make_group, destroy_group);
    prs_keyed_free(t);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(tb);
}

/* A new key that cannot be stored (no memory) fails the group check with
 * PRS_ENOMEM and takes nothing from any member. */
TEST(group_enomem_takes_nothing) {
    prs_token_bucket *tb = make_tb(5, 0);
    prs_token_bucket *tmpl = make_tb(3, 0);
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, -1);
    prs_keyed_config c;
    prs_keyed_config_init(&c);
    c.algo = &prs_algo_token_bucket;
    c.params = prs_token_bucket_params(tmpl);
    c.max_keys = 10;
    c.allocator = &ta.base;
    prs_keyed *t;
    ASSERT_OK(prs_keyed_new(&c, &t));
    const char *lk = "a key longer than the eighteen inline bytes";
    prs_group_member m[2];
    prs_group_member_token_bucket(&m[0], tb);
    prs_group_member_keyed(&m[1], t, lk, strlen(lk));
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    prs_decision d;
    for (long extra = 0; extra < 2; extra++) { /* the slot array, then the key block */
        ta.fail_after = ta.calls + extra;
        ASSERT_STATUS(prs_group_check(g, 0, 1, &d, NULL), PRS_ENOMEM);
        ASSERT_NEAR(prs_token_bucket_available(tb, 0), 5.0, 1e-9);
        ASSERT_EQ_I64(prs_keyed_len(t), 0);
    }
    ta.fail_after = -1;
    ASSERT(gcheck(g, 0, 1, &d, NULL));
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 4.0, 1e-9);
    ASSERT_EQ_I64(prs_keyed_len(t), 1);
    prs_group_free(g);
    prs_keyed_free(t);
    ASSERT_EQ_I64(ta.live, 0);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(tb);
}

TEST(group_bad_input) {
    prs_token_bucket *tb = make_tb(1, 1);
    prs_group_member m[PRS_GROUP_MAX_MEMBERS + 1];
    for (int i = 0; i <= PRS_GROUP_MAX_MEMBERS; i++) prs_group_member_token_bucket(&m[i], tb);
    prs_group *g = (prs_group *)m;
    ASSERT_STATUS(prs_group_new(m, 0, NULL, &g), PRS_EINVAL);
    ASSERT(g == NULL);
    ASSERT_STATUS(prs_group_new(m, PRS_GROUP_MAX_MEMBERS + 1, NULL, &g), PRS_EINVAL);
    ASSERT_STATUS(prs_group_new(NULL, 1, NULL, &g), PRS_EINVAL);
    ASSERT_STATUS(prs_group_new(m, 1, NULL, NULL), PRS_EINVAL);
    prs_group_member bad;
    memset(&bad, 0, sizeof bad);
    ASSERT_STATUS(prs_group_new(&bad, 1, NULL, &g), PRS_EINVAL);
    ASSERT_OK(prs_group_new(m, PRS_GROUP_MAX_MEMBERS, NULL, &g));
    prs_decision d;
    ASSERT_STATUS(prs_group_check(g, 0, 0, &d, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_group_check(g, 0, 1, NULL, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_group_check(NULL, 0, 1, &d, NULL), PRS_EINVAL);
    ASSERT_OK(prs_group_check(g, 0, 1, &d, NULL)); /* 32 x the same bucket of 1 */
    ASSERT(!d.allowed);
    prs_group_free(g);
    prs_token_bucket_free(tb);
}

/* ---- the reported member, duplicates counted once per appearance ---------- */

/* limit, remaining and reset_after come from one member, the most restrictive:
 * a GCRA (burst 100) with 95 spent beside a fresh token bucket of 20 reports
 * the GCRA's 100 / 4 / 9.6 s, not a mix (20 / 4 / 9.6 s). */
TEST(group_decision_is_one_members) {
    prs_gcra *gc = make_gcra(10, 100);
    prs_token_bucket *tb = make_tb(20, 10);
    prs_decision d;
    ASSERT_OK(prs_gcra_check(gc, 0, 95, &d));
    ASSERT(d.allowed);
    for (int order = 0; order < 2; order++) {
        prs_group_member m[2];
        prs_group_member_gcra(&m[order], gc);
        prs_group_member_token_bucket(&m[1 - order], tb);
        prs_group *g;
        ASSERT_OK(prs_group_new(m, 2, NULL, &g));
        prs_group_info info;
        ASSERT_OK(prs_group_decide(g, 0, 1, 0, &d, &info));
        ASSERT(d.allowed);
        ASSERT_EQ_I64(info.reported, order);
        ASSERT_EQ_I64(info.denied_by, -1);
        ASSERT_EQ_I64(info.max_n, 20);
        ASSERT_EQ_I64(d.limit, 100);
        ASSERT_EQ_I64(d.remaining, 4);
        ASSERT_EQ_I64(d.reset_after_ns, 9600 * MS);
        ASSERT_EQ_I64(d.retry_after_ns, 0);
        prs_group_free(g);
    }
    /* ties on remaining go to the longest reset: a (6, 1/s) with 1 spent and
     * b (5, 0.25/s) both have 4 left after a request; b refills last */
    prs_token_bucket *a = make_tb(6, 1), *b = make_tb(5, 0.25);
    ASSERT_OK(prs_token_bucket_check(a, 0, 1, &d));
    prs_group_member m[2];
    prs_group_member_token_bucket(&m[0], a);
    prs_group_member_token_bucket(&m[1], b);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 2, NULL, &g));
    int by;
    ASSERT(gcheck(g, 0, 1, &d, &by));
    ASSERT_EQ_I64(d.remaining, 4);
    ASSERT_EQ_I64(d.limit, 5);
    ASSERT_EQ_I64(d.reset_after_ns, 4 * SEC);
    /* denied: retry_after is the longest any member asks; the numbers are
     * still one member's, as they are after the denial (nothing taken) */
    ASSERT(!gcheck(g, 0, 5, &d, &by));
    ASSERT_EQ_I64(by, 0);
    ASSERT_EQ_I64(d.retry_after_ns, 4 * SEC); /* b: 1 token at 0.25/s */
    ASSERT_EQ_I64(d.remaining, 4);
    ASSERT_EQ_I64(d.limit, 5);
    ASSERT_NEAR(prs_token_bucket_available(a, 0), 4.0, 1e-9);
    prs_group_free(g);
    prs_token_bucket_free(a);
    prs_token_bucket_free(b);
    prs_token_bucket_free(tb);
    prs_gcra_free(gc);
}

/* A limiter listed twice is asked for 2n: peek and check agree, a request it
 * can never hold is denied forever (never a finite retry_after), and max_n
 * says so. */
TEST(group_duplicate_counted_per_appearance) {
    prs_token_bucket *tb = make_tb(3, 1);
    prs_token_bucket *tmpl = make_tb(5, 0);
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tmpl), 10);
    prs_group_member m[4];
    prs_group_member_token_bucket(&m[0], tb);
    prs_group_member_token_bucket(&m[1], tb);
    prs_group_member_keyed(&m[2], t, "k", 1);
    prs_group_member_keyed(&m[3], t, "k", 1);
    prs_group *g;
    ASSERT_OK(prs_group_new(m, 4, NULL, &g));
    ASSERT_NEAR(prs_group_available(g, 0), 1.5, 1e-9); /* the bucket's 3, 2 per request */
    prs_decision p, d;
    prs_group_info info;
    /* n = 2: 4 from a bucket of 3 - never, by peek and by check alike */
    ASSERT_OK(prs_group_decide(g, 0, 2, 0, &p, &info));
    ASSERT(!p.allowed);
    ASSERT_EQ_I64(p.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(info.denied_by, 0);
    ASSERT_EQ_I64(info.max_n, 1);
    ASSERT_OK(prs_group_decide(g, 0, 2, 1, &d, &info));
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 3.0, 1e-9);
    /* n = 1 takes 2 from the bucket and 2 from key k; peek agrees each time */
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(prs_group_peek(g, 0, 1, &p, NULL));
        ASSERT_OK(prs_group_check(g, 0, 1, &d, NULL));
        ASSERT_EQ_I64(p.allowed, d.allowed);
        ASSERT_EQ_I64(p.retry_after_ns, d.retry_after_ns);
        ASSERT_EQ_I64(d.allowed, i == 0);
    }
    /* the bucket has 1 left: 2 needs 1 s more */
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    ASSERT_NEAR(prs_token_bucket_available(tb, 0), 1.0, 1e-9);
    ASSERT_NEAR(prs_keyed_available(t, "k", 1, 0), 3.0, 1e-9);
    ASSERT(gcheck(g, SEC, 1, &d, NULL));
    /* key k: 1 left of a budget that never refills, 2 per request: never */
    ASSERT_OK(prs_group_peek(g, 10 * SEC, 1, &p, NULL));
    ASSERT(!p.allowed);
    ASSERT_EQ_I64(p.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(p.remaining, 0);
    prs_group_free(g);
    prs_keyed_free(t);
    prs_token_bucket_free(tmpl);
    prs_token_bucket_free(tb);
}
