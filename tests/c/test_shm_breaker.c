/* test_shm_breaker.c - a circuit breaker placed in a shared-memory region:
 * one state for every handle and process, exact half-open trials across
 * processes, a dead trial's slot coming back, both window kinds and failure
 * modes, the mismatch wording, and SIGKILL at random instants. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"
#include "breaker_internal.h"
#include "test_shm_util.h"

#define S (PRS_NS_PER_SEC)

static prs_shm *open_region(const char *name) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    c.size = 4 << 20;
    prs_shm *r = NULL;
    return prs_shm_open(name, &c, &r, NULL) ? NULL : r;
}

static prs_breaker *placed(prs_shm *r, const char *name, const prs_breaker_config *cfg) {
    prs_shm_place pl = {r, name};
    prs_breaker *b = NULL;
    int rc = prs_breaker_new_placed(cfg, &pl, &b, NULL);
    if (rc) PRS__FAIL("prs_breaker_new_placed: %s", prs_strerror(rc));
    return b;
}

static int admit(prs_breaker *b, int64_t now, prs_breaker_permit *p) {
    prs_breaker_decision d;
    ASSERT_OK(prs_breaker_acquire(b, now, &d));
    if (p) *p = d.permit;
    return d.allowed;
}

/* Two handles on one name are one breaker: what one records the other obeys. */
TEST(shm_breaker_one_state) {
    prs_shm *r = open_region("b1");
    ASSERT(r);
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 3;
    cfg.open_timeout_ns = 10 * S;
    prs_breaker *a = placed(r, "dep", &cfg), *b = placed(r, "dep", &cfg);
    ASSERT(prs_breaker_shared(a));
    prs_breaker_permit p;
    for (int i = 0; i < 3; i++) {
        ASSERT(admit(i % 2 ? a : b, S, &p));
        ASSERT_OK(prs_breaker_record(i % 2 ? a : b, S, p, PRS_BREAKER_FAILURE, 0, NULL));
    }
    ASSERT_EQ(prs_breaker_get_state(a), PRS_BREAKER_OPEN);
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_OPEN);
    prs_breaker_decision d;
    ASSERT_OK(prs_breaker_acquire(b, 5 * S, &d));
    ASSERT_EQ(d.allowed, 0);
    ASSERT_EQ(d.retry_after_ns, 6 * S);
    /* after the timeout: half-open, success_threshold (2) trials */
    prs_breaker_permit t1, t2;
    ASSERT_OK(prs_breaker_acquire(a, 11 * S, &d));
    ASSERT(d.allowed && d.transition.happened && d.transition.to == PRS_BREAKER_HALF_OPEN);
    t1 = d.permit;
    ASSERT(admit(b, 11 * S, &t2));
    ASSERT(!admit(a, 11 * S, NULL)); /* full */
    prs_breaker_metrics m;
    prs_breaker_get_metrics(b, 11 * S, &m);
    ASSERT_EQ(m.half_open_in_flight, 2);
    ASSERT_EQ(m.failures, 3);
    ASSERT_EQ(m.rejected, 2);
    prs_breaker_transition tr;
    ASSERT_OK(prs_breaker_record(b, 12 * S, t2, PRS_BREAKER_SUCCESS, 0, &tr));
    ASSERT_EQ(tr.happened, 0);
    ASSERT_OK(prs_breaker_record(a, 12 * S, t1, PRS_BREAKER_SUCCESS, 0, &tr));
    ASSERT(tr.happened && tr.to == PRS_BREAKER_CLOSED);
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_CLOSED);
    /* a stale permit counts in the totals only */
    ASSERT_OK(prs_breaker_record(a, 12 * S, t1, PRS_BREAKER_FAILURE, 0, &tr));
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_CLOSED);
    /* manual states and untracked trials */
    prs_breaker_half_open(a, 13 * S, NULL);
    ASSERT_OK(prs_breaker_acquire_untracked(b, 13 * S, &d));
    ASSERT(d.allowed && d.permit == PRS_BREAKER_NO_PERMIT);
    prs_breaker_get_metrics(a, 13 * S, &m);
    ASSERT_EQ(m.half_open_untracked, 1);
    ASSERT_OK(prs_breaker_record(a, 13 * S, PRS_BREAKER_NO_PERMIT, PRS_BREAKER_IGNORED, 0, NULL));
    ASSERT_OK(prs_breaker_record(b, 13 * S, PRS_BREAKER_NO_PERMIT, PRS_BREAKER_IGNORED, 0, NULL));
    prs_breaker_get_metrics(a, 13 * S, &m);
    ASSERT_EQ(m.half_open_untracked, 0);
    ASSERT_EQ(m.half_open_in_flight, 0);
    prs_breaker_force_open(b, 14 * S, NULL);
    ASSERT_OK(prs_breaker_acquire(a, 1000 * S, &d));
    ASSERT_EQ(d.retry_after_ns, PRS_NEVER);
    prs_breaker_disable(a, 14 * S, NULL);
    ASSERT_EQ(prs_breaker_get_mode(b), PRS_BREAKER_DISABLED);
    prs_breaker_reset(b, 15 * S, NULL);
    prs_breaker_get_metrics(a, 15 * S, &m);
    ASSERT_EQ(m.calls, 0);
    ASSERT_EQ(m.state, PRS_BREAKER_CLOSED);
    ASSERT_OK(prs__shm_brk_check(a, r, "dep"));
    prs_breaker_free(a);
    prs_breaker_free(b);
    prs_shm_close(r);
}

/* Rate mode on a count window and on a time window, slow calls included. */
TEST(shm_breaker_rate_windows) {
    prs_shm *r = open_region("b2");
    ASSERT(r);
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = 0.5;
    cfg.window_size = 4;
    cfg.minimum_calls = 4;
    prs_breaker *b = placed(r, "count", &cfg);
    prs_breaker_permit p;
    for (int i = 0; i < 3; i++) {
        ASSERT(admit(b, S, &p));
        ASSERT_OK(prs_breaker_record(b, S, p, i == 0 ? PRS_BREAKER_FAILURE : PRS_BREAKER_SUCCESS, 0, NULL));
    }
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_CLOSED);
    ASSERT(admit(b, S, &p));
    ASSERT_OK(prs_breaker_record(b, S, p, PRS_BREAKER_FAILURE, 0, NULL));
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_OPEN); /* 2 of 4 */
    ASSERT_OK(prs__shm_brk_check(b, r, "count"));
    prs_breaker_free(b);

    prs_breaker_config_init(&cfg);
    cfg.window_type = PRS_BREAKER_WINDOW_TIME;
    cfg.window_size = 2;
    cfg.minimum_calls = 2;
    cfg.slow_call_rate_threshold = 1.0;
    cfg.slow_call_ns = S / 10;
    b = placed(r, "time", &cfg);
    ASSERT_EQ(prs_breaker_outcome_needs_time(b, PRS_BREAKER_SUCCESS), 1);
    ASSERT(admit(b, 10 * S, &p));
    ASSERT_OK(prs_breaker_record(b, 10 * S, p, PRS_BREAKER_SUCCESS, S, NULL)); /* slow */
    ASSERT(admit(b, 13 * S, &p));
    ASSERT_OK(prs_breaker_record(b, 13 * S, p, PRS_BREAKER_SUCCESS, S, NULL)); /* the first expired */
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_CLOSED);
    ASSERT(admit(b, 13 * S, &p));
    ASSERT_OK(prs_breaker_record(b, 13 * S + 1, p, PRS_BREAKER_SUCCESS, S, NULL));
    ASSERT_EQ(prs_breaker_get_state(b), PRS_BREAKER_OPEN);
    prs_breaker_metrics m;
    prs_breaker_get_metrics(b, 13 * S, &m);
    ASSERT_EQ(m.window_slow_calls, 2);
    prs_breaker_get_metrics(b, 20 * S, &m);
    ASSERT_EQ(m.window_calls, 0);
    ASSERT_OK(prs__shm_brk_check(b, r, "time"));
    prs_breaker_free(b);
    prs_shm_close(r);
}

TEST(shm_breaker_mismatch) {
    prs_shm *r = open_region("b3");
    ASSERT(r);
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    prs_breaker *b = placed(r, "dep", &cfg);
    prs_breaker_config other = cfg;
    other.failure_threshold = 9;
    prs_shm_place pl = {r, "dep"};
    prs_breaker *c = NULL;
    prs_config_error why;
    ASSERT_EQ(prs_breaker_new_placed(&other, &pl, &c, &why), PRS_ESTATE);
    ASSERT(c == NULL);
    char msg[1024];
    ASSERT_OK(prs_breaker_placed_mismatch(&other, &pl, msg, sizeof msg));
    ASSERT(strstr(msg, "exists as circuit_breaker(failure_threshold=5,"));
    ASSERT(strstr(msg, "asked for circuit_breaker(failure_threshold=9,"));
    ASSERT_EQ(prs_breaker_placed_mismatch(&cfg, &pl, msg, sizeof msg), PRS_EINVAL);
    /* a bulkhead under a breaker's name */
    prs_bulkhead_config bc;
    prs_bulkhead_config_init(&bc);
    prs_bulkhead *bh = NULL;
    ASSERT_EQ(prs_bulkhead_new_placed(&bc, &pl, &bh, NULL), PRS_ESTATE);
    ASSERT_OK(prs_bulkhead_placed_mismatch(&bc, &pl, msg, sizeof msg));
    ASSERT(strstr(msg, "exists as circuit_breaker(...)"));
    /* bad input */
    prs_shm_place bad = {r, "a/b"};
    ASSERT_EQ(prs_breaker_new_placed(&cfg, &bad, &c, NULL), PRS_EINVAL);
    cfg.failure_threshold = 0;
    ASSERT_EQ(prs_breaker_new_placed(&cfg, &pl, &c, &why), PRS_EINVAL);
    ASSERT_STREQ(why.field, "failure_threshold");
    prs_breaker_free(b);
    prs_shm_close(r);
}

/* The block of the placed breaker `name` of r (its entry's config as
 * stored). */
static prs__shm_brk *block_of(prs_shm *r, const char *name) {
    _Alignas(16) unsigned char conf[PRS_SHM_CONFIG_MAX];
    unsigned char none = 0;
    void *blk = NULL;
    ASSERT_EQ(prs_shm_entry(r, name, "circuit_breaker", &none, 1, 1, NULL, NULL, &blk, NULL, NULL,
                            conf),
              PRS_ESTATE);
    ASSERT_OK(prs_shm_entry(r, name, "circuit_breaker", conf, sizeof(prs__brk_conf), 1, NULL, NULL,
                            &blk, NULL, NULL, NULL));
    return blk;
}

/* A block in the layout of the builds before the one state machine (magic 1:
 * a word of epoch << 4) is refused, never misread. */
TEST(shm_breaker_refuses_the_older_layout) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    prs_shm *r = open_region("b5");
    ASSERT(r);
    prs_breaker_free(placed(r, "dep", &cfg)); /* the entry stays */
    prs__shm_brk *s = block_of(r, "dep");
    uint64_t magic = s->magic;
    s->magic = UINT64_C(0x50525342524b0001);
    prs_shm_place pl = {r, "dep"};
    prs_breaker *c = NULL;
    ASSERT_EQ(prs_breaker_new_placed(&cfg, &pl, &c, NULL), PRS_EPROTO);
    ASSERT(c == NULL);
    s->magic = magic;
    prs_breaker_free(placed(r, "dep", &cfg));
    prs_shm_close(r);
}

/* A child makes one real change (admits, or records a failure, at now), then
 * dies as if killed just before closing it: the lock still its own, the
 * journal open. */
static void die_inside(prs_breaker *b, prs__shm_brk *s, int64_t now, int fail) {
    pid_t pid = fork();
    if (pid == 0) {
        prs_breaker_permit p;
        if (admit(b, now, &p) && fail) prs_breaker_record(b, now, p, PRS_BREAKER_FAILURE, 0, NULL);
        atomic_store(&s->st.lock.pid.owner, (int32_t)getpid());
        atomic_store(&s->st.dirty, 1u);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
}

/* The next locker undoes a dead holder's change whole: the state, the
 * variables, the window cell and the trial slots are as before it. */
TEST(shm_breaker_dead_holders_change_undone) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 2;
    cfg.open_timeout_ns = S;
    prs_shm *r = open_region("b6");
    ASSERT(r);
    prs_breaker *b = placed(r, "dep", &cfg);
    prs__shm_brk *s = block_of(r, "dep");
    prs_breaker_permit p;
    ASSERT(admit(b, 0, &p));
    ASSERT_OK(prs_breaker_record(b, 0, p, PRS_BREAKER_FAILURE, 0, NULL));
    die_inside(b, s, 0, 1); /* the failure that opened it */
    ASSERT_OK(prs__shm_brk_check(b, r, "dep"));
    prs_breaker_metrics m;
    prs_breaker_get_metrics(b, 0, &m);
    ASSERT_EQ(m.state, PRS_BREAKER_CLOSED);
    ASSERT_EQ(m.consecutive_failures, 1);
    ASSERT_EQ(m.window_failures, 1);
    prs_breaker_open(b, 0, NULL);
    die_inside(b, s, 2 * S, 0); /* the admission that went half-open and took a trial slot */
    ASSERT_OK(prs__shm_brk_check(b, r, "dep"));
    prs_breaker_get_metrics(b, 2 * S, &m);
    ASSERT_EQ(m.state, PRS_BREAKER_OPEN);
    ASSERT_EQ(m.half_open_in_flight, 0);
    ASSERT(admit(b, 2 * S, NULL) && admit(b, 2 * S, NULL) && !admit(b, 2 * S, NULL));
    prs_breaker_free(b);
    prs_shm_close(r);
}

/* P processes ask for trials at once in half-open: exactly half_open_max
 * are admitted among them all. Then the holders are killed: their slots come
 * back at the next full admission once the reap interval is due (or at once
 * with prs_breaker_reap), and never while a holder lives. */
TEST(shm_breaker_exact_trials_and_dead_holders) {
    enum { P = 6, TRIES = 50, MAXC = 3 };
    prs_shm *r = open_region("b4");
    ASSERT(r);
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.half_open_max_calls = MAXC;
    cfg.success_threshold = 10;
    prs_breaker *b = placed(r, "dep", &cfg);
    int64_t t = S;
    for (int round = 0; round < 4; round++) {
        prs_breaker_half_open(b, t, NULL);
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        pid_t pids[P];
        for (int k = 0; k < P; k++) {
            pids[k] = fork();
            if (pids[k] == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
                int got = 0;
                for (int i = 0; i < TRIES; i++) got += admit(b, t, NULL);
                if (write(fds[1], &got, sizeof got) != sizeof got) _exit(3);
                for (;;) pause(); /* hold the slots until killed */
            }
        }
        ASSERT_EQ(children_sum(fds, P, 0), MAXC);
        prs_breaker_metrics m;
        prs_breaker_get_metrics(b, t, &m);
        ASSERT_EQ(m.half_open_in_flight, MAXC);
        ASSERT(!admit(b, t + 10 * S, NULL)); /* full, and every holder alive */
        ASSERT_EQ(prs_breaker_reap(b), 0);
        for (int k = 0; k < P; k++) {
            kill(pids[k], SIGKILL);
            waitpid(pids[k], NULL, 0);
        }
        if (round % 2) {
            ASSERT_EQ(prs_breaker_reap(b), MAXC);
            ASSERT(admit(b, t + 10 * S, NULL));
        } else {
            /* the reap interval has passed since the last look: the next
             * admission frees the dead slots and takes one */
            ASSERT(admit(b, t + 20 * S, NULL));
        }
        prs_breaker_get_metrics(b, t + 20 * S, &m);
        ASSERT_EQ(m.half_open_in_flight, 1);
        ASSERT_OK(prs__shm_brk_check(b, r, "dep"));
        t += 100 * S;
    }
    prs_breaker_free(b);
    prs_shm_close(r);
}

/* Children hammer one placed breaker (admit, record successes and failures,
 * slow calls, manual transitions, metrics) and are SIGKILLed at random
 * instants: afterwards the breaker answers, its invariants hold (window
 * aggregates equal the window, trial slots equal in_flight) and it still
 * runs its state machine exactly. */
static void kill_loop(prs_breaker_config *cfg, const char *name, int rounds) {
    prs_shm *r = open_region(name);
    ASSERT(r);
    prs_breaker *b = placed(r, "dep", cfg);
    unsigned seed = 12345;
    for (int k = 0; k < rounds; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            unsigned x = (unsigned)getpid();
            int64_t now = S;
            for (;;) {
                x = x * 1103515245u + 12345u;
                now += (x >> 8) % (S / 50);
                prs_breaker_decision d;
                prs_breaker_acquire(b, now, &d);
                int op = (x >> 16) % 64;
                if (d.allowed)
                    prs_breaker_record(b, now, d.permit, op < 20 ? PRS_BREAKER_FAILURE
                                       : op < 60 ? PRS_BREAKER_SUCCESS : PRS_BREAKER_IGNORED,
                                       (x >> 4) % 3 == 0 ? S : 0, NULL);
                if (op == 63) prs_breaker_half_open(b, now, NULL);
                if (op == 62) {
                    prs_breaker_acquire_untracked(b, now, &d);
                }
                if (op == 61) {
                    prs_breaker_metrics m;
                    prs_breaker_get_metrics(b, now, &m);
                }
            }
        }
        seed = seed * 1103515245u + 12345u;
        usleep((useconds_t)(100 + (seed >> 8) % 1500));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (k % 16 == 0) ASSERT_OK(prs__shm_brk_check(b, r, "dep"));
    }
    ASSERT_OK(prs__shm_brk_check(b, r, "dep"));
    prs_breaker_reap(b);
    prs_breaker_metrics m;
    prs_breaker_get_metrics(b, 1000000 * S, &m);
    ASSERT(m.half_open_in_flight == 0 || m.state == PRS_BREAKER_HALF_OPEN);
    ASSERT(m.window_failures <= m.window_calls);
    /* still exact: reset, then failure_threshold failures open it */
    prs_breaker_reset(b, 1000000 * S, NULL);
    prs_breaker_half_open(b, 1000000 * S, NULL);
    int got = 0;
    for (int i = 0; i < 100; i++) got += admit(b, 1000000 * S, NULL);
    ASSERT_EQ(got, cfg->half_open_max_calls ? cfg->half_open_max_calls : cfg->success_threshold);
    ASSERT_OK(prs__shm_brk_check(b, r, "dep"));
    prs_breaker_free(b);
    prs_shm_close(r);
}

TEST(shm_breaker_kill_loop_count_window) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = 0.5;
    cfg.slow_call_rate_threshold = 0.9;
    cfg.slow_call_ns = S / 2;
    cfg.window_size = 20;
    cfg.minimum_calls = 5;
    cfg.open_timeout_ns = S / 10;
    cfg.half_open_max_calls = 4;
    kill_loop(&cfg, "kc", 340);
}

TEST(shm_breaker_kill_loop_time_window) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.window_type = PRS_BREAKER_WINDOW_TIME;
    cfg.failure_rate_threshold = 0.6;
    cfg.window_size = 5;
    cfg.minimum_calls = 5;
    cfg.open_timeout_ns = S / 10;
    kill_loop(&cfg, "kt", 340);
}

TEST(shm_breaker_kill_loop_consecutive) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 3;
    cfg.open_timeout_ns = S / 20;
    cfg.half_open_max_calls = 2;
    kill_loop(&cfg, "kn", 340);
}
