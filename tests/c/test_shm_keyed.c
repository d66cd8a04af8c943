/* test_shm_keyed.c - keyed tables placed in a region: exact per key across
 * processes for every algorithm, the bound and eviction, long keys, a
 * configuration mismatch, and 1,000 SIGKILLs in the middle of inserts and
 * evictions. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"
#include "test_shm_util.h"

#define NOW (5 * PRS_NS_PER_SEC)

#define region test_region

/* A keyed table of algorithm i (each key admits `cap` at a frozen instant). */
static prs_keyed *table(prs_shm *r, const char *name, int i, int64_t cap, int64_t max_keys) {
    static prs_limiter *tmpl[PRS_ALGO__COUNT];
    any_config c;
    const prs_algo *al = config_of(i, cap, &c);
    prs_limiter_free(tmpl[i]);
    if (prs_limiter_new(al, &c, NULL, &tmpl[i], NULL)) return NULL;
    prs_keyed_config kc;
    prs_keyed_config_init(&kc);
    kc.algo = al;
    kc.params = prs_limiter_params(tmpl[i]);
    kc.max_keys = max_keys;
    prs_shm_place pl = {r, name};
    prs_keyed *t = NULL;
    return prs_keyed_new_placed(&kc, &pl, &t, NULL) == PRS_OK ? t : NULL;
}

TEST(shm_keyed_exact_per_key_across_processes) {
    enum { P = 4, CAP = 50, KEYS = 5, TRIES = 150 };
    prs_shm *r = region("kx", 4 << 20);
    ASSERT(r);
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        char name[8];
        snprintf(name, sizeof name, "t%d", i);
        prs_keyed *t = table(r, name, i, CAP, 1000);
        ASSERT(t);
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        for (int k = 0; k < P; k++) {
            if (fork() == 0) {
                prs_shm *rr = region("kx", 0);
                prs_keyed *tt = rr ? table(rr, name, i, CAP, 1000) : NULL;
                if (!tt) _exit(2);
                int got[KEYS] = {0};
                prs_decision d;
                for (int n = 0; n < TRIES; n++) {
                    for (int key = 0; key < KEYS; key++) {
                        char kb[48];
                        /* key 4 is longer than the inline 32 bytes: kept as its digest */
                        int len = snprintf(kb, sizeof kb, key == 4 ? "a-key-longer-than-thirty-two-bytes-%d"
                                                                   : "k%d", key);
                        if (prs_keyed_check(tt, kb, (size_t)len, NOW, 1, &d)) _exit(3);
                        got[key] += d.allowed;
                    }
                }
                if (write(fds[1], got, sizeof got) != sizeof got) _exit(4);
                _exit(0);
            }
        }
        int total[KEYS] = {0};
        for (int k = 0; k < P; k++) {
            int got[KEYS], status;
            ASSERT_EQ(read(fds[0], got, sizeof got), (ssize_t)sizeof got);
            for (int key = 0; key < KEYS; key++) total[key] += got[key];
            ASSERT(wait(&status) > 0);
            ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        close(fds[0]);
        close(fds[1]);
        for (int key = 0; key < KEYS; key++)
            if (total[key] != CAP) PRS__FAIL("%s: key %d admitted %d, capacity %d", name, key,
                                             total[key], CAP);
        ASSERT_EQ(prs_keyed_len(t), KEYS);
        ASSERT(prs_keyed_contains(t, "k0", 2, NOW));
        ASSERT_EQ(prs_keyed_reset_key(t, "k0", 2), 1);
        ASSERT_EQ(prs_keyed_len(t), KEYS - 1);
        ASSERT_EQ(prs_keyed_available(t, "k0", 2, NOW), (double)CAP);
        prs_keyed_reset_all(t);
        ASSERT_EQ(prs_keyed_len(t), 0);
        prs_keyed_free(t);
    }
    prs_shm_close(r);
}

TEST(shm_keyed_bound_and_eviction) {
    prs_shm *r = region("kb", 0);
    ASSERT(r);
    prs_keyed *t = table(r, "t", 3, 2, 16); /* fixed window: 2 per 1000 s, 16 keys: one bucket */
    ASSERT(t);
    ASSERT_EQ(prs_keyed_max_keys(t), 16);
    prs_decision d;
    char kb[16];
    for (int k = 0; k < 16; k++) {
        int len = snprintf(kb, sizeof kb, "k%d", k);
        ASSERT_OK(prs_keyed_check(t, kb, (size_t)len, NOW, 1, &d));
        ASSERT_EQ(d.allowed, 1);
    }
    ASSERT_EQ(prs_keyed_len(t), 16);
    /* full of limited keys: a new key is denied until one is fresh again */
    ASSERT_OK(prs_keyed_check(t, "new", 3, NOW, 1, &d));
    ASSERT_EQ(d.allowed, 0);
    ASSERT(d.retry_after_ns > 0 && d.retry_after_ns <= 1000 * PRS_NS_PER_SEC);
    ASSERT_EQ(prs_keyed_len(t), 16);
    /* a peek of an absent key stores nothing */
    ASSERT_OK(prs_keyed_peek(t, "other", 5, NOW, 1, &d));
    ASSERT_EQ(prs_keyed_len(t), 16);
    /* the window ends: every key is fresh and is evicted for a new one */
    int64_t later = NOW + d.reset_after_ns + 1000 * PRS_NS_PER_SEC;
    ASSERT_OK(prs_keyed_check(t, "new", 3, later, 1, &d));
    ASSERT_EQ(d.allowed, 1);
    ASSERT_EQ(prs_keyed_len(t), 16);
    ASSERT(prs_keyed_contains(t, "new", 3, later));
    ASSERT_EQ(prs_keyed_prune(t, later), 15);
    ASSERT_EQ(prs_keyed_len(t), 1);
    /* a million distinct keys stay within max_keys, in memory fixed at creation */
    prs_keyed *big = table(r, "big", 0, 1, 1000);
    ASSERT(big);
    size_t mem = prs_keyed_memory(big);
    for (int k = 0; k < 1000000; k++) {
        int len = snprintf(kb, sizeof kb, "%d", k);
        prs_keyed_check(big, kb, (size_t)len, NOW, 1, &d);
    }
    ASSERT(prs_keyed_len(big) <= 1000);
    ASSERT(prs_keyed_len(big) > 900);
    ASSERT_EQ(prs_keyed_memory(big), mem);
    /* reconfiguring, or grouping a key, is refused */
    prs_fixed_window_config fw;
    prs_fixed_window_config_init(&fw);
    prs_config_error why = {NULL, NULL};
    ASSERT_EQ(prs_keyed_reconfigure_why(t, &fw, NOW, &why), PRS_ENOTSUP);
    prs_group_member m;
    prs_group_member_keyed(&m, t, "a", 1);
    prs_group *g;
    ASSERT_EQ(prs_group_new(&m, 1, NULL, &g), PRS_ENOTSUP);
    prs_keyed_free(big);
    prs_keyed_free(t);
    prs_shm_close(r);
}

TEST(shm_keyed_mismatch) {
    prs_shm *r = region("km", 0);
    ASSERT(r);
    prs_keyed *t = table(r, "t", 0, 10, 100);
    ASSERT(t);
    prs_keyed *u = table(r, "t", 0, 10, 100); /* the same config opens it */
    ASSERT(u);
    prs_decision d;
    ASSERT_OK(prs_keyed_check(t, "x", 1, NOW, 4, &d));
    ASSERT_EQ(prs_keyed_available(u, "x", 1, NOW), 6.0);
    ASSERT(table(r, "t", 0, 10, 200) == NULL); /* max_keys differs */
    ASSERT(table(r, "t", 0, 20, 100) == NULL); /* params differ */
    ASSERT(table(r, "t", 1, 10, 100) == NULL); /* algorithm differs */
    prs_token_bucket_config tb;
    prs_token_bucket_config_init(&tb);
    tb.capacity = 20;
    tb.refill_rate = 1;
    prs_limiter *tmpl;
    ASSERT_OK(prs_limiter_new(&prs_algo_token_bucket, &tb, NULL, &tmpl, NULL));
    prs_keyed_config kc;
    prs_keyed_config_init(&kc);
    kc.algo = &prs_algo_token_bucket;
    kc.params = prs_limiter_params(tmpl);
    kc.max_keys = 100;
    prs_shm_place pl = {r, "t"};
    prs_keyed *bad;
    ASSERT_EQ(prs_keyed_new_placed(&kc, &pl, &bad, NULL), PRS_ESTATE);
    char msg[400];
    ASSERT_OK(prs_keyed_placed_mismatch(&kc, &pl, msg, sizeof msg));
    if (strcmp(msg, "exists as keyed token_bucket(capacity=10, refill_rate=1) with max_keys=100, "
                    "asked for keyed token_bucket(capacity=20, refill_rate=1) with max_keys=100") != 0)
        PRS__FAIL("message: %s", msg);
    prs_limiter_free(tmpl);
    prs_keyed_free(t);
    prs_keyed_free(u);
    prs_shm_close(r);
}

/* ---- the kill loop ----------------------------------------------------------------- */

enum { KSPACE = 200 };

static void churn(prs_keyed *t, unsigned *seed) {
    char kb[48];
    prs_decision d;
    unsigned k = (unsigned)rand_r(seed) % KSPACE;
    int len = snprintf(kb, sizeof kb, k % 7 ? "key%u" : "a-long-key-that-is-kept-as-a-digest-%u", k);
    prs_keyed_check(t, kb, (size_t)len, NOW, 1, &d);
    if (k % 13 == 0) prs_keyed_reset_key(t, kb, (size_t)len);
}

/* Children churn 200 keys through a table of 64 (inserts, evictions of fresh
 * keys, forgets), killed at random: after each kill the table answers, holds
 * at most max_keys, its count equals the keys it contains (no key is half
 * inserted or half forgotten), and a hot key's budget never comes back. */
TEST(shm_keyed_kill_loop) {
    enum { KILLS = 1000, MAXK = 64, CAP = 1000000 };
    prs_shm *r = region("kk", 0);
    ASSERT(r);
    for (int a = 0; a < 2; a++) { /* a token bucket (spinlocked) and a GCRA */
        prs_keyed *t = table(r, a ? "g" : "tb", a, CAP, MAXK);
        ASSERT(t);
        prs_decision d;
        ASSERT_OK(prs_keyed_check(t, "hot", 3, NOW, 1, &d));
        double hot = prs_keyed_available(t, "hot", 3, NOW);
        unsigned seed = 99;
        for (int k = 0; k < KILLS; k++) {
            pid_t pid = fork();
            if (pid == 0) {
                unsigned s = (unsigned)k * 2654435761u;
                for (;;) {
                    churn(t, &s);
                    prs_keyed_check(t, "hot", 3, NOW, 1, &d);
                }
            }
            usleep((useconds_t)(rand_r(&seed) % 150));
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            int64_t len = prs_keyed_len(t);
            int64_t held = 0;
            for (unsigned key = 0; key < KSPACE; key++) {
                char kb[48];
                int l = snprintf(kb, sizeof kb, key % 7 ? "key%u" : "a-long-key-that-is-kept-as-a-digest-%u",
                                 key);
                held += prs_keyed_contains(t, kb, (size_t)l, NOW);
            }
            held += prs_keyed_contains(t, "hot", 3, NOW);
            if (len != held || len > MAXK)
                PRS__FAIL("kill %d: len %lld, %lld keys held, max_keys %d", k, (long long)len,
                          (long long)held, MAXK);
            double now_hot = prs_keyed_available(t, "hot", 3, NOW);
            if (now_hot > hot) PRS__FAIL("kill %d: the hot key went from %g to %g", k, hot, now_hot);
            hot = now_hot;
        }
        prs_keyed_free(t);
    }
    prs_shm_close(r);
}
