/*
 * test_keyed.c - the per-key table: SipHash vectors, tables at explicit
 * times, the bound and eviction rules, a random run against a model (which
 * exercises backward-shift deletion), memory per key, threads with time
 * frozen, allocation failure.
 */
#include "prs_test.h"
#include "test_make.h"

#include "prs_gcra.h"
#include "prs_group.h"
#include "prs_keyed.h"
#include "prs_sliding_counter.h"
#include "prs_sliding_log.h"
#include "prs_token_bucket.h"

#include <pthread.h>
#include <stdatomic.h>

#define SEC PRS_NS_PER_SEC
#define MS PRS_NS_PER_MS




static int check(prs_keyed *t, const char *key, int64_t now, int64_t n, prs_decision *d) {
    ASSERT_OK(prs_keyed_check(t, key, strlen(key), now, n, d));
    return d->allowed;
}

TEST(keyed_siphash_vectors) {
    /* From the SipHash paper's appendix / reference implementation: key
     * 00 01 .. 0f, messages 00 01 .. (len-1). */
    uint8_t k[16], m[64];
    for (int i = 0; i < 16; i++) k[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++) m[i] = (uint8_t)i;
    ASSERT(prs_siphash(k, m, 0, 2, 4) == UINT64_C(0x726fdb47dd0e0e31));
    ASSERT(prs_siphash(k, m, 1, 2, 4) == UINT64_C(0x74f839c593dc67fd));
    ASSERT(prs_siphash(k, m, 15, 2, 4) == UINT64_C(0xa129ca6149be45e5));
    /* 1-3 differs from 2-4 and depends on every byte and on the length */
    ASSERT(prs_siphash(k, m, 15, 1, 3) != prs_siphash(k, m, 15, 2, 4));
    ASSERT(prs_siphash(k, m, 8, 1, 3) != prs_siphash(k, m, 9, 1, 3));
    uint8_t z[9] = {0};
    ASSERT(prs_siphash(k, z, 8, 1, 3) != prs_siphash(k, z, 9, 1, 3));
}

TEST(keyed_config) {
    prs_keyed_config c;
    prs_keyed_config_init(&c);
    ASSERT_EQ_I64(c.max_keys, 100000);
    ASSERT_STATUS(prs_keyed_config_validate(&c), PRS_EINVAL); /* no algo */
    prs_token_bucket *tb = make_tb(3, 1);
    c.algo = &prs_algo_token_bucket;
    c.params = prs_token_bucket_params(tb);
    ASSERT_OK(prs_keyed_config_validate(&c));
    c.max_keys = 0;
    ASSERT_STATUS(prs_keyed_config_validate(&c), PRS_EINVAL);
    c.max_keys = PRS_KEYED_MAX_KEYS + 1;
    ASSERT_STATUS(prs_keyed_config_validate(&c), PRS_EINVAL);
    prs_keyed *t = (prs_keyed *)&c;
    ASSERT_STATUS(prs_keyed_new(&c, &t), PRS_EINVAL);
    ASSERT(t == NULL);
    ASSERT_STATUS(prs_keyed_config_validate(NULL), PRS_EINVAL);
    c.max_keys = 10;
    c.params = NULL;
    ASSERT_STATUS(prs_keyed_config_validate(&c), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_new(&c, NULL), PRS_EINVAL);
    prs_keyed_free(NULL);

    c.params = prs_token_bucket_params(tb);
    ASSERT_OK(prs_keyed_new(&c, &t));
    prs_decision d;
    ASSERT_STATUS(prs_keyed_check(t, "a", 1, 0, 0, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_check(t, "a", 1, 0, 1, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_check(t, NULL, 1, 0, 1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_check(NULL, "a", 1, 0, 1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_peek(t, "a", 1, 0, -1, &d), PRS_EINVAL);
    ASSERT_STATUS(prs_keyed_reset_key(t, NULL, 2), PRS_EINVAL);
    ASSERT_OK(prs_keyed_check(t, NULL, 0, 0, 1, &d)); /* the empty key is a key */
    ASSERT(d.allowed);
    ASSERT_EQ_I64(prs_keyed_len(t), 1);
    ASSERT_EQ_I64(prs_keyed_max_keys(t), 10);
    ASSERT(prs_keyed_algo(t) == &prs_algo_token_bucket);
    prs_keyed_free(t);
    prs_token_bucket_free(tb);
}

TEST(keyed_token_bucket_table) {
    prs_token_bucket *tb = make_tb(3, 1); /* 3 tokens, 1/s */
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tb), 1000);
    prs_decision d;
    /* peeking an absent key stores nothing */
    ASSERT_OK(prs_keyed_peek(t, "alice", 5, 0, 1, &d));
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 2);
    ASSERT_EQ_I64(prs_keyed_len(t), 0);
    ASSERT(!prs_keyed_contains(t, "alice", 5, 0));
    ASSERT_NEAR(prs_keyed_available(t, "alice", 5, 0), 3.0, 1e-9);
    /* alice: 3 then denied for exactly 1 s */
    ASSERT(check(t, "alice", 0, 1, &d));
    ASSERT_EQ_I64(d.remaining, 2);
    ASSERT(check(t, "alice", 0, 2, &d));
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(t, "alice", 0, 1, &d));
    ASSERT_EQ_I64(d.retry_after_ns, SEC);
    ASSERT_EQ_I64(d.reset_after_ns, 3 * SEC);
    ASSERT_EQ_I64(d.limit, 3);
    ASSERT(!check(t, "alice", SEC - 1, 1, &d));
    ASSERT_EQ_I64(d.retry_after_ns, 1);
    ASSERT(prs_keyed_contains(t, "alice", 5, SEC - 1));
    /* bob is independent */
    ASSERT(check(t, "bob", SEC - 1, 3, &d));
    ASSERT_EQ_I64(prs_keyed_len(t), 2);
    /* n > capacity: never */
    ASSERT(!check(t, "carol", 0, 4, &d));
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(prs_keyed_len(t), 2); /* a denied new key is not stored */
    ASSERT(check(t, "alice", SEC, 1, &d));
    ASSERT_EQ_I64(d.remaining, 0);
    /* peek does not consume */
    ASSERT_OK(prs_keyed_peek(t, "alice", 5, 2 * SEC, 1, &d));
    ASSERT(d.allowed);
    ASSERT_OK(prs_keyed_peek(t, "alice", 5, 2 * SEC, 1, &d));
    ASSERT(d.allowed);
    ASSERT_NEAR(prs_keyed_available(t, "alice", 5, 2 * SEC), 1.0, 1e-9);
    /* fresh again after 3 s: not "contained" though still stored */
    ASSERT(!prs_keyed_contains(t, "alice", 5, 4 * SEC));
    /* reset one key */
    ASSERT_EQ_I64(prs_keyed_reset_key(t, "bob", 3), 1);
    ASSERT_EQ_I64(prs_keyed_reset_key(t, "bob", 3), 0);
    ASSERT(!prs_keyed_contains(t, "bob", 3, SEC));
    ASSERT(check(t, "bob", SEC, 3, &d));
    ASSERT_EQ_I64(prs_keyed_len(t), 2);
    prs_keyed_reset_all(t);
    ASSERT_EQ_I64(prs_keyed_len(t), 0);
    ASSERT(check(t, "bob", SEC, 3, &d));
    ASSERT_EQ_I64(prs_keyed_prune(t, 10 * SEC), 1);
    ASSERT_EQ_I64(prs_keyed_len(t), 0);
    prs_keyed_free(t);
    prs_token_bucket_free(tb);
}

TEST(keyed_long_keys) {
    prs_gcra *g = make_gcra(1.0, 2);
    prs_keyed *t = make_table(&prs_algo_gcra, prs_gcra_params(g), 1000);
    size_t base = prs_keyed_memory(t);
    char key[64];
    prs_decision d;
    for (int i = 0; i < 50; i++) { /* 18 (inline) .. 67 bytes */
        size_t len = 18 + (size_t)i % 40;
        memset(key, 'k', sizeof key);
        snprintf(key, sizeof key, "%02d", i);
        key[2] = 'x';
        ASSERT_OK(prs_keyed_check(t, key, len, 0, 2, &d));
        ASSERT(d.allowed);
        ASSERT_OK(prs_keyed_check(t, key, len, 0, 1, &d));
        ASSERT(!d.allowed);
        ASSERT(prs_keyed_contains(t, key, len, 0));
        ASSERT(!prs_keyed_contains(t, key, len - 1, 0)); /* a prefix is another key */
    }
    ASSERT_EQ_I64(prs_keyed_len(t), 50);
    ASSERT(prs_keyed_memory(t) > base);
    for (int i = 0; i < 50; i += 2) {
        size_t len = 18 + (size_t)i % 40;
        memset(key, 'k', sizeof key);
        snprintf(key, sizeof key, "%02d", i);
        key[2] = 'x';
        ASSERT_EQ_I64(prs_keyed_reset_key(t, key, len), 1);
    }
    ASSERT_EQ_I64(prs_keyed_len(t), 25);
    prs_keyed_reset_all(t);
    ASSERT_EQ_I64(prs_keyed_memory(t), base);
    prs_keyed_free(t);
    prs_gcra_free(g);
}

/* A table of 4 keys (one shard) full of limited keys denies a new key with
 * retry_after = when the first of them becomes fresh, and never resets one. */
TEST(keyed_full_of_limited_keys) {
    prs_token_bucket *tb = make_tb(2, 1); /* fresh again 2 s after emptying */
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tb), 4);
    prs_decision d;
    ASSERT(check(t, "k0", 0, 2, &d));          /* fresh at 2 s */
    ASSERT(check(t, "k1", 0, 2, &d));          /* 2 s */
    ASSERT(check(t, "k2", 500 * MS, 1, &d));   /* fresh at 1.5 s */
    ASSERT(check(t, "k3", 0, 2, &d));          /* 2 s */
    ASSERT_EQ_I64(prs_keyed_len(t), 4);
    ASSERT(!check(t, "new", SEC, 1, &d));
    ASSERT_EQ_I64(d.retry_after_ns, 500 * MS);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT(!check(t, "new", SEC + 100 * MS, 1, &d)); /* the cached hint */
    ASSERT_EQ_I64(d.retry_after_ns, 400 * MS);
    ASSERT_OK(prs_keyed_peek(t, "new", 3, SEC, 1, &d));
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(prs_keyed_len(t), 4);
    /* the limited keys kept their state */
    ASSERT(!check(t, "k0", SEC + 100 * MS, 2, &d));
    ASSERT_EQ_I64(d.retry_after_ns, 900 * MS);
    /* at 1.5 s k2 is fresh: the new key takes its place */
    ASSERT(check(t, "new", 1500 * MS, 1, &d));
    ASSERT_EQ_I64(prs_keyed_len(t), 4);
    ASSERT(!check(t, "k0", 1500 * MS, 2, &d)); /* still limited, still held */
    ASSERT_EQ_I64(d.retry_after_ns, 500 * MS);
    /* a reset frees a slot at once */
    ASSERT(!check(t, "other", 1500 * MS, 1, &d));
    ASSERT_EQ_I64(prs_keyed_reset_key(t, "k1", 2), 1);
    ASSERT(check(t, "other", 1500 * MS, 1, &d));
    prs_keyed_free(t);
    prs_token_bucket_free(tb);

    /* refill 0: nothing ever frees, retry_after is PRS_NEVER */
    tb = make_tb(1, 0);
    t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tb), 1);
    ASSERT(check(t, "a", 0, 1, &d));
    ASSERT(!check(t, "b", 0, 1, &d));
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT(!check(t, "b", 100 * SEC, 1, &d));
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    prs_keyed_free(t);
    prs_token_bucket_free(tb);
}

/* 1M distinct keys through max_keys = 100k, time moving 2 us per key: the
 * table stays bounded and a victim that is still limited keeps its state. */
TEST(keyed_million_keys_bounded) {
    prs_gcra *g = make_gcra(1.0, 3); /* T = 1 s, burst 3 */
    prs_keyed *t = make_table(&prs_algo_gcra, prs_gcra_params(g), 100000);
    prs_decision d;
    ASSERT(check(t, "victim", 0, 3, &d)); /* tat = 3 s */
    char key[32];
    int64_t admitted = 0, denied = 0, now = 0;
    for (int i = 0; i < 1000000; i++) {
        now = (int64_t)i * 2000;
        int len = snprintf(key, sizeof key, "client-%d", i);
        ASSERT_OK(prs_keyed_check(t, key, (size_t)len, now, 1, &d));
        if (d.allowed) admitted++;
        else {
            denied++;
            ASSERT(d.retry_after_ns > 0 && d.retry_after_ns <= SEC);
        }
        if ((i & 0xffff) == 0) ASSERT_LE_I64(prs_keyed_len(t), 100000);
    }
    ASSERT_LE_I64(prs_keyed_len(t), 100000);
    ASSERT_GT_I64(denied, 0);
    ASSERT_GT_I64(admitted, 100000);
    ASSERT_LE_I64(prs_keyed_memory(t), 100000 * 64);
    /* the victim: 2 s in, its tat is still 3 s (a fresh key would have 2 left
     * after this one; the victim has 0) */
    ASSERT_OK(prs_keyed_peek(t, "victim", 6, now, 1, &d));
    ASSERT(d.allowed);
    ASSERT_EQ_I64(d.remaining, 0);
    ASSERT_EQ_I64(d.reset_after_ns, 4 * SEC - now); /* peek reports what check would leave */
    ASSERT(prs_keyed_contains(t, "victim", 6, now));
    prs_keyed_free(t);
    prs_gcra_free(g);
}

static void fill_and_measure(const prs_algo *algo, const void *params, int64_t max_keys,
                             double *bytes_per_key) {
    prs_keyed *t = make_table(algo, params, max_keys);
    char key[32];
    prs_decision d;
    for (int64_t i = 0; i < max_keys; i++) {
        int len = snprintf(key, sizeof key, "user:%" PRId64, i);
        ASSERT_OK(prs_keyed_check(t, key, (size_t)len, 0, 1, &d));
    }
    int64_t held = prs_keyed_len(t);
    ASSERT_GT_I64(held, max_keys * 97 / 100); /* per-shard bounds: a few % refused */
    *bytes_per_key = (double)prs_keyed_memory(t) / (double)held;
    prs_keyed_free(t);
}

TEST(keyed_memory_per_key) {
    prs_token_bucket *tb = make_tb(10, 1);
    prs_sliding_counter_config sc;
    prs_sliding_counter_config_init(&sc);
    sc.limit = 10;
    sc.window_ns = SEC;
    prs_sliding_counter *c;
    ASSERT_OK(prs_sliding_counter_new(&sc, &c));
    prs_gcra *g = make_gcra(10, 10);
    double tbb, scb, gb;
    fill_and_measure(&prs_algo_token_bucket, prs_token_bucket_params(tb), 1000000, &tbb);
    fill_and_measure(&prs_algo_sliding_counter, prs_sliding_counter_params(c), 1000000, &scb);
    fill_and_measure(&prs_algo_gcra, prs_gcra_params(g), 1000000, &gb);
    printf("  bytes per key at 1M keys: gcra %.1f, token_bucket %.1f, sliding_counter(24 B) %.1f\n",
           gb, tbb, scb);
    ASSERT(tbb <= 64.0);
    ASSERT(scb <= 64.0);
    ASSERT(gb <= 64.0);
    prs_token_bucket_free(tb);
    prs_sliding_counter_free(c);
    prs_gcra_free(g);
}

/* Random operations against a model. Token bucket capacity 1, refill 0: a
 * key that consumed is limited forever, so nothing is ever evicted and the
 * table must behave exactly like a bounded set (one shard: max_keys < 512). */
TEST(keyed_random_vs_model) {
    prs_token_bucket *tb = make_tb(1, 0);
    prs_keyed *t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tb), 64);
    unsigned char held[300] = {0};
    int nheld = 0;
    uint64_t x = 12345;
    char key[40];
    prs_decision d;
    for (int step = 0; step < 200000; step++) {
        x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
        int k = (int)((x >> 33) % 300);
        int op = (int)((x >> 20) % 4);
        /* short and long keys */
        int len = snprintf(key, sizeof key, k % 3 ? "k%d" : "a-much-longer-key-number-%d", k);
        if (op == 0) {
            int r = prs_keyed_reset_key(t, key, (size_t)len);
            ASSERT_EQ_I64(r, held[k]);
            if (held[k]) { held[k] = 0; nheld--; }
        } else if (op == 1) {
            ASSERT_EQ_I64(prs_keyed_contains(t, key, (size_t)len, 0), held[k]);
        } else {
            ASSERT_OK(prs_keyed_check(t, key, (size_t)len, 0, 1, &d));
            if (held[k]) {
                ASSERT(!d.allowed);
            } else if (nheld < 64) {
                ASSERT(d.allowed);
                held[k] = 1;
                nheld++;
            } else {
                ASSERT(!d.allowed);
                ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
            }
        }
        ASSERT_EQ_I64(prs_keyed_len(t), nheld);
    }
    prs_keyed_free(t);
    prs_token_bucket_free(tb);
}

/* Sliding log keeps a big state per key (32 + 8 * limit): decided on the heap. */
TEST(keyed_big_state) {
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = 100;
    c.window_ns = SEC;
    prs_sliding_log *sl;
    ASSERT_OK(prs_sliding_log_new(&c, &sl));
    prs_keyed *t = make_table(&prs_algo_sliding_log, prs_sliding_log_params(sl), 100);
    prs_decision d;
    for (int i = 0; i < 100; i++) ASSERT(check(t, "x", i * MS, 1, &d));
    ASSERT(!check(t, "x", 100 * MS, 1, &d));
    ASSERT_EQ_I64(d.retry_after_ns, 900 * MS);
    ASSERT(check(t, "x", SEC, 1, &d));
    ASSERT(check(t, "y", SEC, 100, &d));
    ASSERT_EQ_I64(prs_keyed_len(t), 2);
    prs_keyed_free(t);
    prs_sliding_log_free(sl);
}

/* ---- threads, time frozen: each key admits exactly its capacity ---------- */

#define NKEYS 16
#define NTHREADS 8
#define PER_THREAD 20000

typedef struct {
    prs_keyed *t;
    atomic_long admitted[NKEYS];
    atomic_int failures;
} mt_ctx;

static void *mt_worker(void *arg) {
    mt_ctx *c = arg;
    char key[16];
    prs_decision d;
    uint64_t x = (uint64_t)(uintptr_t)&d;
    for (int i = 0; i < PER_THREAD; i++) {
        x = x * UINT64_C(6364136223846793005) + 1;
        int k = (int)((x >> 33) % NKEYS);
        int len = snprintf(key, sizeof key, "key%d", k);
        if (prs_keyed_check(c->t, key, (size_t)len, 1000, 1, &d) != PRS_OK) atomic_fetch_add(&c->failures, 1);
        if (d.allowed) atomic_fetch_add(&c->admitted[k], 1);
    }
    return NULL;
}

TEST(keyed_threads_exact) {
    prs_token_bucket *tb = make_tb(1000, 0);
    static mt_ctx c;
    memset(&c, 0, sizeof c);
    c.t = make_table(&prs_algo_token_bucket, prs_token_bucket_params(tb), 1000);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) ASSERT_EQ(pthread_create(&th[i], NULL, mt_worker, &c), 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    ASSERT_EQ_I64(atomic_load(&c.failures), 0);
    for (int k = 0; k < NKEYS; k++) ASSERT_EQ_I64(atomic_load(&c.admitted[k]), 1000);
    prs_keyed_free(c.t);
    prs_token_bucket_free(tb);
}

/* ---- threads churning keys: growth, eviction, deletion, prune, groups ------ */

typedef struct {
    prs_keyed *t;
    int id;
    atomic_long errors;
} churn_ctx;

static churn_ctx churn;

static void *churn_worker(void *arg) {
    long id = (long)(intptr_t)arg;
    char key[48];
    prs_decision d;
    uint64_t x = (uint64_t)id * 7919 + 1;
    for (int i = 0; i < 30000; i++) {
        x = x * UINT64_C(6364136223846793005) + 1;
        int64_t now = (int64_t)i * 50 * PRS_NS_PER_US; /* 1.5 s per thread */
        int k = (int)((x >> 33) % 5000);
        int len = snprintf(key, sizeof key, k & 1 ? "t%ld-%d" : "thread-%ld-a-long-key-%d", id & 1, k);
        int op = (int)((x >> 20) % 16);
        int rc = PRS_OK;
        if (op == 0) rc = prs_keyed_reset_key(churn.t, key, (size_t)len) < 0;
        else if (op == 1) (void)prs_keyed_contains(churn.t, key, (size_t)len, now);
        else if (op == 2 && i % 1000 == 0) (void)prs_keyed_prune(churn.t, now);
        else if (op == 3) rc = prs_keyed_peek(churn.t, key, (size_t)len, now, 1, &d);
        else if (op == 4) { /* a group of two keys of this table, made per call */
            char key2[48];
            int len2 = snprintf(key2, sizeof key2, "t%ld-%d", id & 1, (int)((x >> 40) % 5000));
            prs_group_member m[2];
            prs_group_member_keyed(&m[0], churn.t, key, (size_t)len);
            prs_group_member_keyed(&m[1], churn.t, key2, (size_t)len2);
            prs_group *grp;
            rc = prs_group_new(m, 2, NULL, &grp);
            if (!rc) rc = prs_group_check(grp, now, 1, &d, NULL);
            prs_group_free(grp);
        }
        else rc = prs_keyed_check(churn.t, key, (size_t)len, now, 1, &d);
        if (rc) atomic_fetch_add(&churn.errors, 1);
        if (prs_keyed_len(churn.t) > 3000) atomic_fetch_add(&churn.errors, 1);
    }
    return NULL;
}

TEST(keyed_threads_churn) {
    prs_gcra *g = make_gcra(1.0, 2);
    churn.t = make_table(&prs_algo_gcra, prs_gcra_params(g), 3000);
    atomic_store(&churn.errors, 0);
    pthread_t th[4];
    for (long i = 0; i < 4; i++) ASSERT_EQ(pthread_create(&th[i], NULL, churn_worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    ASSERT_EQ_I64(atomic_load(&churn.errors), 0);
    ASSERT_LE_I64(prs_keyed_len(churn.t), 3000);
    prs_keyed_free(churn.t);
    prs_gcra_free(g);
}

/* ---- allocation failure --------------------------------------------------- */

static prs_token_bucket *alloc_tb;

static int make_keyed(const prs_allocator *a, void **obj) {
    prs_keyed_config c;
    prs_keyed_config_init(&c);
    c.algo = &prs_algo_token_bucket;
    c.params = prs_token_bucket_params(alloc_tb);
    c.max_keys = 100000;
    c.allocator = a;
    return prs_keyed_new(&c, (prs_keyed **)obj);
}
static void destroy_keyed(void *obj) { prs_keyed_free(obj); }

TEST(keyed_alloc_failure) {
    alloc_tb = make_tb(1, 0);
    prs_test_alloc_failures(make_keyed, destroy_keyed);

    /* a table whose allocator fails after creation: a new key cannot be
     * stored -> PRS_ENOMEM, nothing consumed, nothing stored */
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, -1);
    prs_keyed *t;
    ASSERT_OK(make_keyed(&ta.base, (void **)&t));
    ta.fail_after = ta.calls; /* every further allocation fails */
    prs_decision d;
    ASSERT_STATUS(prs_keyed_check(t, "short", 5, 0, 1, &d), PRS_ENOMEM);
    ASSERT_EQ_I64(prs_keyed_len(t), 0);
    ta.fail_after = ta.calls + 1; /* the slot array, not the long key */
    const char *lk = "a key longer than eighteen bytes";
    ASSERT_STATUS(prs_keyed_check(t, lk, strlen(lk), 0, 1, &d), PRS_ENOMEM);
    ASSERT_EQ_I64(prs_keyed_len(t), 0);
    ta.fail_after = -1;
    ASSERT_OK(prs_keyed_check(t, lk, strlen(lk), 0, 1, &d));
    ASSERT(d.allowed); /* the failed attempts took nothing */
    ASSERT_OK(prs_keyed_check(t, "short", 5, 0, 1, &d));
    ASSERT(d.allowed);
    /* growth fails: the keys already held keep working */
    ta.fail_after = ta.calls;
    char key[16];
    int64_t stored = 2, enomem = 0;
    for (int i = 0; i < 200; i++) {
        int len = snprintf(key, sizeof key, "g%d", i);
        int rc = prs_keyed_check(t, key, (size_t)len, 0, 1, &d);
        if (rc == PRS_ENOMEM) enomem++;
        else { ASSERT_OK(rc); stored++; }
    }
    ASSERT_GT_I64(enomem, 0);
    ASSERT_EQ_I64(prs_keyed_len(t), stored);
    ASSERT_OK(prs_keyed_check(t, "short", 5, 0, 1, &d));
    ASSERT(!d.allowed);
    prs_keyed_free(t);
    ASSERT_EQ_I64(ta.live, 0);
    prs_token_bucket_free(alloc_tb);
}
