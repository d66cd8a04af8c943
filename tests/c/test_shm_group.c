/* test_shm_group.c - limiters placed in a region, reconfigured from another
 * process and grouped (all or nothing across processes), and the kill loops:
 * 1,000 SIGKILLs per kind of object, each followed by the invariants. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"
#include "test_shm_util.h"

#define NOW (5 * PRS_NS_PER_SEC)

#define region test_region

static prs_limiter *placed(prs_shm *r, const char *name, int algo, int64_t cap) {
    any_config c;
    const prs_algo *al = config_of(algo, cap, &c);
    prs_shm_place pl = {r, name};
    prs_limiter *lim = NULL;
    return prs_limiter_new_placed(al, &c, NULL, &pl, &lim, NULL) == PRS_OK ? lim : NULL;
}

/* Requests of 1 admissible now (a peek answers too: it takes a dead
 * holder's lock over). */
static int64_t remaining(prs_limiter *lim) {
    prs_decision d;
    if (prs_limiter_peek(lim, NOW, 1, &d)) return -1;
    return (int64_t)prs_limiter_available(lim, NOW);
}

/* Runs fn(arg) in a child process and waits for it: its exit status. */
static int in_child(void (*fn)(void *), void *arg) {
    pid_t pid = fork();
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

/* ---- reconfigure ------------------------------------------------------------- */

static void reconf_child(void *arg) {
    prs_limiter *lim = arg; /* inherited: the same mapping */
    prs_token_bucket_config c;
    prs_token_bucket_config_init(&c);
    c.capacity = 10;
    c.refill_rate = 0;
    if (prs_limiter_reconfigure(lim, &c, NOW, NULL)) _exit(2);
}

TEST(shm_reconfigure_seen_by_all) {
    prs_shm *r = region("rc", 0);
    ASSERT(r);
    prs_token_bucket_config c;
    prs_token_bucket_config_init(&c);
    c.capacity = 5;
    c.refill_rate = 0;
    prs_shm_place pl = {r, "tb"};
    prs_limiter *lim;
    ASSERT_OK(prs_limiter_new_placed(&prs_algo_token_bucket, &c, NULL, &pl, &lim, NULL));
    prs_decision d;
    ASSERT_OK(prs_limiter_check(lim, NOW, 2, &d)); /* 3 left of 5 */
    ASSERT_EQ(in_child(reconf_child, lim), 0);
    ASSERT_EQ(prs_token_bucket_capacity((prs_token_bucket *)lim), 10.0);
    ASSERT_OK(prs_limiter_peek(lim, NOW, 1, &d));
    ASSERT_EQ(d.limit, 10);
    ASSERT_EQ(remaining(lim), 3); /* a token bucket keeps its tokens */
    /* the stored configuration wins: opening with the old one names both */
    prs_limiter *old;
    prs_config_error why = {NULL, NULL};
    ASSERT_EQ(prs_limiter_new_placed(&prs_algo_token_bucket, &c, NULL, &pl, &old, &why), PRS_ESTATE);
    char msg[400];
    ASSERT_OK(prs_limiter_placed_mismatch(&prs_algo_token_bucket, &c, &pl, msg, sizeof msg));
    if (strcmp(msg, "exists as token_bucket(capacity=10, refill_rate=0), asked for "
                    "token_bucket(capacity=5, refill_rate=0)") != 0)
        PRS__FAIL("message: %s", msg);
    c.capacity = 10; /* the configuration in force opens it */
    ASSERT_OK(prs_limiter_new_placed(&prs_algo_token_bucket, &c, NULL, &pl, &old, NULL));
    ASSERT_EQ(remaining(old), 3);
    prs_limiter_free(old);
    /* a bad config is refused before anything changes */
    c.capacity = -1;
    ASSERT_EQ(prs_limiter_reconfigure(lim, &c, NOW, &why), PRS_EINVAL);
    ASSERT_EQ(remaining(lim), 3);
    prs_limiter_free(lim);
    prs_shm_close(r);
}

TEST(shm_reconfigure_every_algorithm) {
    prs_shm *r = region("rca", 8 << 20);
    ASSERT(r);
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        char name[8];
        snprintf(name, sizeof name, "a%d", i);
        prs_limiter *a = placed(r, name, i, 100), *b = placed(r, name, i, 100);
        ASSERT(a && b);
        prs_decision d;
        ASSERT_OK(prs_limiter_check(a, NOW, 10, &d));
        any_config c;
        const prs_algo *al = config_of(i, 100, &c);
        /* a longer window / a slower rate: the same limit of 100 */
        if (i == 0) c.tb.refill_rate = 0.5;
        else if (i == 1) c.gcra.rate = 0.5;
        else if (i == 2) c.lb.leak_rate = 0.5;
        else if (i == 3) c.fw.window_ns *= 2;
        else if (i == 4) c.sl.window_ns *= 2;
        else c.sc.window_ns *= 2;
        ASSERT_OK(prs_limiter_reconfigure(a, &c, NOW, NULL));
        any_config got;
        prs_limiter_config(b, &got); /* the other handle reads the new config */
        if (memcmp(&got, &c, 16) != 0)
            PRS__FAIL("%s: the other handle does not see the new config", al->name);
        ASSERT_EQ(remaining(b), 90);
        if (i == 4) { /* a sliding log's ring is sized at creation */
            c.sl.limit = 200;
            prs_config_error why = {NULL, NULL};
            ASSERT_EQ(prs_limiter_reconfigure(a, &c, NOW, &why), PRS_ENOTSUP);
            ASSERT(why.reason && strstr(why.reason, "shared memory"));
        }
        prs_limiter_free(a);
        prs_limiter_free(b);
    }
    prs_shm_close(r);
}

/* ---- groups ----------------------------------------------------------------------- */

static prs_group *group_of(prs_limiter **lims, size_t n) {
    prs_group_member m[PRS_GROUP_MAX_MEMBERS];
    for (size_t i = 0; i < n; i++) prs_group_member_limiter(&m[i], lims[i]);
    prs_group *g = NULL;
    return prs_group_new(m, n, NULL, &g) == PRS_OK ? g : NULL;
}

TEST(shm_group_basics) {
    prs_shm *r = region("gb", 0), *r2 = region("gb2", 0);
    ASSERT(r && r2);
    prs_limiter *lims[3] = {placed(r, "tb", 0, 3), placed(r, "fw", 3, 5), placed(r, "gcra", 1, 4)};
    ASSERT(lims[0] && lims[1] && lims[2]);
    prs_group *g = group_of(lims, 3);
    ASSERT(g);
    prs_decision d;
    int by = -2;
    for (int k = 0; k < 3; k++) {
        ASSERT_OK(prs_group_check(g, NOW, 1, &d, &by));
        ASSERT_EQ(d.allowed, 1);
    }
    ASSERT_OK(prs_group_check(g, NOW, 1, &d, &by));
    ASSERT_EQ(d.allowed, 0);
    ASSERT_EQ(by, 0);
    ASSERT_EQ(remaining(lims[1]), 2); /* nothing taken from the others on a denial */
    ASSERT_EQ(remaining(lims[2]), 1);
    ASSERT_OK(prs_group_peek(g, NOW, 1, &d, &by));
    ASSERT_EQ(d.allowed, 0);
    ASSERT_EQ(d.remaining, 0);
    /* another handle of the same entry is the same member (listed twice: 2n) */
    prs_limiter *fw2 = placed(r, "fw", 3, 5);
    prs_limiter *dup[2] = {lims[1], fw2};
    prs_group *g2 = group_of(dup, 2);
    ASSERT(g2);
    ASSERT_OK(prs_group_check(g2, NOW, 1, &d, &by));
    ASSERT_EQ(d.allowed, 1);
    ASSERT_EQ(remaining(lims[1]), 0);
    prs_group_free(g2);
    /* members of another region, or in-process members, are refused */
    prs_limiter *other = placed(r2, "tb", 0, 3), *local;
    prs_token_bucket_config tb;
    prs_token_bucket_config_init(&tb);
    ASSERT_OK(prs_limiter_new(&prs_algo_token_bucket, &tb, NULL, &local, NULL));
    prs_group_member m[2];
    prs_group_member_limiter(&m[0], lims[0]);
    prs_group_member_limiter(&m[1], other);
    prs_group *bad;
    ASSERT_EQ(prs_group_new(m, 2, NULL, &bad), PRS_ENOTSUP);
    prs_group_member_limiter(&m[1], local);
    ASSERT_EQ(prs_group_new(m, 2, NULL, &bad), PRS_ENOTSUP);
    prs_group_free(g);
    for (int i = 0; i < 3; i++) prs_limiter_free(lims[i]);
    prs_limiter_free(fw2);
    prs_limiter_free(other);
    prs_limiter_free(local);
    prs_shm_close(r);
    prs_shm_close(r2);
}

/* P processes, each with its own handles, take from one group: exactly the
 * smallest member's capacity is admitted, and every member gave the same. */
TEST(shm_group_exact_across_processes) {
    enum { P = 4, TRIES = 3000, CAP = 5000 };
    prs_shm *r = region("gx", 0);
    ASSERT(r);
    prs_limiter *lims[3] = {placed(r, "tb", 0, CAP), placed(r, "sc", 5, CAP + 100),
                            placed(r, "gcra", 1, CAP + 200)};
    ASSERT(lims[0] && lims[1] && lims[2]);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    for (int k = 0; k < P; k++) {
        if (fork() == 0) {
            prs_shm *rr = region("gx", 0);
            prs_limiter *l[3] = {placed(rr, "tb", 0, CAP), placed(rr, "sc", 5, CAP + 100),
                                 placed(rr, "gcra", 1, CAP + 200)};
            prs_group *g = l[0] && l[1] && l[2] ? group_of(l, 3) : NULL;
            if (!g) _exit(2);
            int got = 0;
            prs_decision d;
            for (int t = 0; t < TRIES; t++) {
                if (prs_group_check(g, NOW, 1, &d, NULL)) _exit(3);
                got += d.allowed;
            }
            if (write(fds[1], &got, sizeof got) != sizeof got) _exit(4);
            _exit(0);
        }
    }
    ASSERT_EQ(children_sum(fds, P, 1), CAP);
    ASSERT_EQ(remaining(lims[0]), 0);
    ASSERT_EQ(remaining(lims[1]), 100);
    ASSERT_EQ(remaining(lims[2]), 200);
    for (int i = 0; i < 3; i++) prs_limiter_free(lims[i]);
    prs_shm_close(r);
}

/* ---- kill loops ------------------------------------------------------------------------ */

#define KILLS 1000

/* Forks a child running body(arg) forever, kills it after a short random
 * while (mid-operation: the child works from its first instant, on the
 * inherited mapping), and reaps it. */
static void kill_one(void (*body)(void *), void *arg, unsigned *seed) {
    pid_t pid = fork();
    if (pid == 0) {
        for (;;) body(arg);
    }
    usleep((useconds_t)(rand_r(seed) % 150));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void body_check(void *arg) {
    prs_decision d;
    prs_limiter_check(arg, NOW, 1, &d);
}

/* Every algorithm: after each kill the limiter answers, what is left never
 * grows at a frozen instant (no decision is lost into an admission), and it
 * is never negative; a reset (under the same lock) refills it when spent. */
TEST(shm_kill_loop_limiters) {
    enum { CAP = 200000 };
    prs_shm *r = region("kl", 16 << 20);
    ASSERT(r);
    unsigned seed = 12345;
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        char name[8];
        snprintf(name, sizeof name, "k%d", i);
        prs_limiter *lim = placed(r, name, i, CAP);
        ASSERT(lim);
        int64_t last = remaining(lim);
        ASSERT_EQ(last, CAP);
        for (int k = 0; k < KILLS; k++) {
            kill_one(body_check, lim, &seed);
            int64_t now_left = remaining(lim);
            if (now_left < 0 || now_left > last)
                PRS__FAIL("%s: kill %d: %lld left after %lld", prs_limiter_algo(lim)->name, k,
                          (long long)now_left, (long long)last);
            last = now_left;
            if (last == 0) {
                prs_limiter_reset(lim);
                last = remaining(lim);
                ASSERT_EQ(last, CAP);
            }
        }
        prs_limiter_free(lim);
    }
    prs_shm_close(r);
}

typedef struct group_ctx {
    prs_group *g;
    prs_limiter *lims[3];
} group_ctx;

static void body_group(void *arg) {
    group_ctx *c = arg;
    prs_decision d;
    prs_group_check(c->g, NOW, 1, &d, NULL);
    prs_limiter_check(c->lims[2], NOW, 1, &d); /* a lock-free member alone too */
}

/* A group of a token bucket, a sliding log and a GCRA (equal capacities),
 * checked by a process killed at random: after each kill the members have
 * given the same amount to the group (a lone GCRA check is counted apart). */
TEST(shm_kill_loop_group) {
    enum { CAP = 1000000 };
    prs_shm *r = region("kg", 32 << 20);
    ASSERT(r);
    group_ctx c = {NULL, {placed(r, "tb", 0, CAP), placed(r, "sl", 4, CAP), placed(r, "gcra", 1, CAP)}};
    ASSERT(c.lims[0] && c.lims[1] && c.lims[2]);
    c.g = group_of(c.lims, 2);
    prs_group *g3 = group_of(c.lims, 3);
    ASSERT(c.g && g3);
    unsigned seed = 777;
    prs_group *gs[2] = {c.g, g3};
    for (int k = 0; k < KILLS; k++) {
        c.g = gs[k & 1];
        kill_one(body_group, &c, &seed);
        int64_t a = remaining(c.lims[0]), b = remaining(c.lims[1]);
        if (a != b || a < 0) PRS__FAIL("kill %d: the members drifted: %lld vs %lld", k,
                                       (long long)a, (long long)b);
        prs_decision d;
        ASSERT_OK(prs_group_peek(g3, NOW, 1, &d, NULL)); /* every member answers */
        ASSERT(remaining(c.lims[2]) >= 0);
    }
    prs_group_free(gs[0]);
    prs_group_free(gs[1]);
    for (int i = 0; i < 3; i++) prs_limiter_free(c.lims[i]);
    prs_shm_close(r);
}

static void reconf_body(void *arg) {
    prs_limiter *lim = arg;
    static int flip;
    prs_gcra_config c;
    prs_gcra_config_init(&c);
    c.rate = (flip ^= 1) ? 1 : 2;
    c.burst = 1000000;
    prs_limiter_reconfigure(lim, &c, NOW, NULL);
    prs_decision d;
    prs_limiter_check(lim, NOW, 1, &d);
}

static void reconf_tb_body(void *arg) {
    prs_limiter *lim = arg;
    static int flip;
    prs_token_bucket_config c;
    prs_token_bucket_config_init(&c);
    c.capacity = 1000000;
    c.refill_rate = (flip ^= 1) ? 1 : 2;
    prs_limiter_reconfigure(lim, &c, NOW, NULL);
    prs_decision d;
    prs_limiter_check(lim, NOW, 1, &d);
}

/* A process killed while it reconfigures (and checks): the limiter answers,
 * its config is one of the two, and a lock-free word is never left held. */
TEST(shm_kill_loop_reconfigure) {
    prs_shm *r = region("kr", 0);
    ASSERT(r);
    prs_limiter *g = placed(r, "g", 1, 1000000), *t = placed(r, "t", 0, 1000000);
    ASSERT(g && t);
    unsigned seed = 4242;
    for (int k = 0; k < KILLS; k++) {
        prs_limiter *lim = k & 1 ? t : g;
        kill_one(k & 1 ? reconf_tb_body : reconf_body, lim, &seed);
        int64_t left = remaining(lim); /* answers: takes over a dead holder */
        ASSERT(left >= 0);
        double rate = k & 1 ? prs_token_bucket_refill_rate((prs_token_bucket *)t)
                            : prs_gcra_rate((prs_gcra *)g);
        if (rate != 1.0 && rate != 2.0) PRS__FAIL("kill %d: rate %g", k, rate);
        prs_decision d;
        ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
    }
    prs_limiter_free(g);
    prs_limiter_free(t);
    prs_shm_close(r);
}
