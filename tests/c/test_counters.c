/*
 * test_counters.c - event counters kept in the core: prs_counters (striped
 * per thread), a limiter's admitted/rejected (in the lock for spinlocked
 * algorithms, striped for GCRA), a keyed table's and a group's; each exact
 * with more threads than stripes.
 */
#include "prs_test.h"

#include "pyresilience.h"

#include <pthread.h>

#define THREADS 12 /* more than the stripes (8): the shared line is used too */
#define CALLS 20000

TEST(counters_basics) {
    prs_counters *c = NULL;
    ASSERT_EQ(prs_counters_new(0, NULL, &c), PRS_EINVAL);
    ASSERT_EQ(prs_counters_new(PRS_COUNTERS_MAX + 1, NULL, &c), PRS_EINVAL);
    ASSERT_OK(prs_counters_new(11, NULL, &c));
    ASSERT_EQ(prs_counters_size(c), 11);
    prs_counters_add(c, 0, 2);
    prs_counters_add(c, 10, 5);
    prs_counters_add(c, 11, 7); /* out of range: ignored */
    ASSERT_EQ(prs_counters_get(c, 0), 2);
    ASSERT_EQ(prs_counters_get(c, 10), 5);
    ASSERT_EQ(prs_counters_get(c, 11), 0);
    prs_counters_free(c);
    prs_counters_free(NULL);
}

static int make_counters(const prs_allocator *a, void **obj) {
    return prs_counters_new(9, a, (prs_counters **)obj);
}
static void destroy_counters(void *obj) { prs_counters_free(obj); }

TEST(counters_alloc_failure) { prs_test_alloc_failures(make_counters, destroy_counters); }

static void *add_main(void *arg) {
    for (int i = 0; i < CALLS; i++) prs_counters_add(arg, (size_t)(i % 3), 1);
    return NULL;
}

TEST(counters_exact_under_threads) {
    prs_counters *c = NULL;
    ASSERT_OK(prs_counters_new(3, NULL, &c));
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) ASSERT_EQ(pthread_create(&th[i], NULL, add_main, c), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    uint64_t sum = 0;
    for (size_t i = 0; i < 3; i++) sum += prs_counters_get(c, i);
    ASSERT_EQ(sum, (uint64_t)THREADS * CALLS);
    /* threads that exited gave their stripes back: a new one counts too */
    pthread_t again;
    ASSERT_EQ(pthread_create(&again, NULL, add_main, c), 0);
    pthread_join(again, NULL);
    sum = 0;
    for (size_t i = 0; i < 3; i++) sum += prs_counters_get(c, i);
    ASSERT_EQ(sum, (uint64_t)(THREADS + 1) * CALLS);
    prs_counters_free(c);
}

typedef struct {
    prs_limiter *lim;
    prs_keyed *keyed;
    prs_group *group;
    long admitted, rejected;
} hammer;

static void *decide_main(void *arg) {
    hammer *h = arg;
    for (int i = 0; i < CALLS; i++) {
        prs_decision d;
        int rc = h->lim     ? prs_limiter_check(h->lim, 0, 1, &d)
                 : h->keyed ? prs_keyed_check(h->keyed, "k", 1, 0, 1, &d)
                            : prs_group_check(h->group, 0, 1, &d, NULL);
        if (rc) abort();
        if (d.allowed) h->admitted++;
        else h->rejected++;
    }
    return NULL;
}

/* Each of THREADS threads decides CALLS times on what `proto` names; the
 * counts equal the decisions seen. */
static void run_hammer(hammer proto, uint64_t *admitted, uint64_t *rejected) {
    hammer h[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = proto;
        ASSERT_EQ(pthread_create(&th[i], NULL, decide_main, &h[i]), 0);
    }
    *admitted = *rejected = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        *admitted += (uint64_t)h[i].admitted;
        *rejected += (uint64_t)h[i].rejected;
    }
    ASSERT_EQ(*admitted + *rejected, (uint64_t)THREADS * CALLS);
}

/* A GCRA and a token bucket of `burst` (refilling `rate` a second: GCRA's rate
 * must be > 0) into *gcra, *tb and lims[]. */
static int two_limiters(int64_t burst, double rate, prs_gcra **gcra, prs_token_bucket **tb,
                        prs_limiter *lims[2]) {
    prs_gcra_config g;
    prs_gcra_config_init(&g);
    g.rate = rate > 0 ? rate : 1;
    g.burst = burst;
    prs_token_bucket_config t;
    prs_token_bucket_config_init(&t);
    t.capacity = (double)burst;
    t.refill_rate = rate;
    if (prs_gcra_new(&g, gcra) || prs_token_bucket_new(&t, tb)) return -1;
    lims[0] = prs_gcra_limiter(*gcra);
    lims[1] = prs_token_bucket_limiter(*tb);
    return 0;
}

/* prs_limiter_allow: the yes/no of a check, taking and counting the same. */
TEST(limiter_allow_is_a_counted_check) {
    prs_gcra *gcra = NULL;
    prs_token_bucket *tb = NULL;
    prs_limiter *lims[2];
    ASSERT_EQ(two_limiters(2, 1, &gcra, &tb, lims), 0);
    for (int k = 0; k < 2; k++) {
        prs_decision d;
        ASSERT_EQ(prs_limiter_allow(lims[k], 0, 1), 1);
        ASSERT_EQ(prs_limiter_allow(lims[k], 0, 1), 1);
        ASSERT_EQ(prs_limiter_allow(lims[k], 0, 1), 0);
        ASSERT_EQ(prs_limiter_allow(lims[k], 0, 3), 0); /* above the limit: never */
        ASSERT_EQ(prs_limiter_allow(lims[k], 0, 0), PRS_EINVAL);
        ASSERT_EQ(prs_limiter_admitted(lims[k]), 2);
        ASSERT_EQ(prs_limiter_rejected(lims[k]), 2);
        ASSERT_OK(prs_limiter_check(lims[k], 1000000000, 1, &d)); /* one refilled */
        ASSERT_EQ(d.allowed, 1);
        ASSERT_EQ(d.remaining, 0);
        ASSERT_EQ(prs_limiter_allow(lims[k], 1000000000, 1), 0);
    }
    ASSERT_EQ(prs_limiter_allow(NULL, 0, 1), PRS_EINVAL);
    prs_gcra_free(gcra);
    prs_token_bucket_free(tb);
}

/* prs_group_allow: the yes/no of a group check, all or nothing, counted the same. */
TEST(group_allow_is_a_counted_check) {
    prs_gcra *gcra = NULL;
    prs_token_bucket *tb = NULL;
    prs_limiter *lims[2];
    ASSERT_EQ(two_limiters(4, 1, &gcra, &tb, lims), 0);
    prs_group_member m[3];
    prs_group_member_limiter(&m[0], lims[0]);
    prs_group_member_limiter(&m[1], lims[1]);
    prs_group_member_limiter(&m[2], lims[1]); /* listed twice: asked for 2n */
    prs_group *g = NULL;
    ASSERT_OK(prs_group_new(m, 3, NULL, &g));
    prs_decision d;
    ASSERT_EQ(prs_group_allow(g, 0, 1), 1);
    ASSERT_EQ(prs_group_allow(g, 0, 1), 1);
    ASSERT_EQ(prs_group_allow(g, 0, 1), 0); /* the bucket is empty: the GCRA keeps its 2 */
    ASSERT_OK(prs_limiter_peek(lims[0], 0, 2, &d));
    ASSERT_EQ(d.allowed, 1);
    ASSERT_EQ(prs_group_allow(g, 0, 3), 0); /* above what the group can ever admit */
    ASSERT_EQ(prs_group_allow(g, 0, 0), PRS_EINVAL);
    ASSERT_EQ(prs_group_allow(NULL, 0, 1), PRS_EINVAL);
    ASSERT_EQ(prs_group_admitted(g), 2);
    ASSERT_EQ(prs_group_rejected(g), 2);
    ASSERT_OK(prs_group_check(g, 2000000000, 1, &d, NULL)); /* 2 refilled in the bucket */
    ASSERT_EQ(d.allowed, 1);
    ASSERT_EQ(d.remaining, 0);
    ASSERT_EQ(prs_group_allow(g, 2000000000, 1), 0);
    prs_group_free(g);
    prs_gcra_free(gcra);
    prs_token_bucket_free(tb);
}

TEST(limiter_counts_exact_under_threads) {
    prs_gcra *gcra = NULL;
    prs_token_bucket *tb = NULL;
    prs_limiter *lims[2];
    ASSERT_EQ(two_limiters(50000, 0, &gcra, &tb, lims), 0);
    for (int k = 0; k < 2; k++) {
        uint64_t a, r;
        prs_decision d;
        ASSERT_OK(prs_limiter_peek(lims[k], 0, 1, &d)); /* a peek is not counted */
        run_hammer((hammer){lims[k], NULL, NULL, 0, 0}, &a, &r);
        ASSERT_EQ(a, 50000);
        ASSERT_EQ(prs_limiter_admitted(lims[k]), a);
        ASSERT_EQ(prs_limiter_rejected(lims[k]), r);
    }
    ASSERT_EQ(prs_limiter_admitted(NULL), 0);

    prs_keyed_config kc;
    prs_keyed_config_init(&kc);
    kc.algo = &prs_algo_token_bucket;
    kc.params = prs_token_bucket_params(tb);
    prs_keyed *keyed = NULL;
    ASSERT_OK(prs_keyed_new(&kc, &keyed));
    uint64_t a, r;
    run_hammer((hammer){NULL, keyed, NULL, 0, 0}, &a, &r);
    ASSERT_EQ(a, 50000);
    ASSERT_EQ(prs_keyed_admitted(keyed), a);
    ASSERT_EQ(prs_keyed_rejected(keyed), r);

    prs_group_member m[2];
    prs_group_member_limiter(&m[0], prs_gcra_limiter(gcra));
    prs_group_member_keyed(&m[1], keyed, "other", 5);
    prs_gcra_reset(gcra);
    prs_group *group = NULL;
    ASSERT_OK(prs_group_new(m, 2, NULL, &group));
    uint64_t before = prs_limiter_admitted(prs_gcra_limiter(gcra));
    run_hammer((hammer){NULL, NULL, group, 0, 0}, &a, &r);
    ASSERT_EQ(a, 50000);
    ASSERT_EQ(prs_group_admitted(group), a);
    ASSERT_EQ(prs_group_rejected(group), r);
    ASSERT_EQ(prs_limiter_admitted(prs_gcra_limiter(gcra)), before); /* the group's own */
    prs_group_free(group);
    prs_keyed_free(keyed);
    prs_token_bucket_free(tb);
    prs_gcra_free(gcra);
}
