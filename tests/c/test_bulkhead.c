/* test_bulkhead.c - the permit pool: tables, FIFO hand-over, finish modes,
 * hold estimates, real threads (time frozen), allocation failure, fork. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "prs_bulkhead.h"
#include "prs_test.h"
#include "test_waiters.h"

static prs_bulkhead *make(int64_t max) {
    prs_bulkhead_config cfg;
    prs_bulkhead_config_init(&cfg);
    cfg.max_concurrent = max;
    prs_bulkhead *b = NULL;
    ASSERT_OK(prs_bulkhead_new(&cfg, &b));
    return b;
}

TEST(bulkhead_config) {
    static const struct { int64_t max; int want; } rows[] = {
        {1, PRS_OK}, {64, PRS_OK}, {PRS_BULKHEAD_MAX, PRS_OK},
        {0, PRS_EINVAL}, {-5, PRS_EINVAL}, {PRS_BULKHEAD_MAX + 1, PRS_ERANGE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_bulkhead_config cfg;
        prs_bulkhead_config_init(&cfg);
        cfg.max_concurrent = rows[i].max;
        ASSERT_STATUS(prs_bulkhead_config_validate(&cfg), rows[i].want);
        prs_bulkhead *b = (prs_bulkhead *)&cfg;
        ASSERT_STATUS(prs_bulkhead_new(&cfg, &b), rows[i].want);
        ASSERT(rows[i].want == PRS_OK ? b != NULL : b == NULL);
        prs_bulkhead_free(b);
    }
    ASSERT_STATUS(prs_bulkhead_config_validate(NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_bulkhead_new(NULL, NULL), PRS_EINVAL);
    prs_bulkhead_free(NULL);
    prs_bulkhead_config cfg;
    prs_bulkhead_config_init(&cfg);
    ASSERT_EQ_I64(cfg.prior_hold_ns, PRS_BULKHEAD_PRIOR_HOLD_NS);
    cfg.prior_hold_ns = 0;
    ASSERT_STATUS(prs_bulkhead_config_validate(&cfg), PRS_EINVAL);
    cfg.prior_hold_ns = -1;
    ASSERT_STATUS(prs_bulkhead_config_validate(&cfg), PRS_EINVAL);
    cfg.prior_hold_ns = INT64_MAX;
    ASSERT_OK(prs_bulkhead_config_validate(&cfg));
}

/* A refused config says which field broke which rule (the binding words its
 * ValueError from it); NULL `why` is allowed. */
TEST(bulkhead_config_why) {
    static const struct { int64_t max, prior; int want; const char *field, *reason; } rows[] = {
        {0, 1, PRS_EINVAL, "max_concurrent", "must be between 1 and 1000000000"},
        {PRS_BULKHEAD_MAX + 1, 1, PRS_ERANGE, "max_concurrent", "must be between 1 and 1000000000"},
        {2, 0, PRS_EINVAL, "prior_hold_ns", "must be >= 1"},
        {0, 0, PRS_EINVAL, "max_concurrent", "must be between 1 and 1000000000"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_bulkhead_config cfg;
        prs_bulkhead_config_init(&cfg);
        cfg.max_concurrent = rows[i].max;
        cfg.prior_hold_ns = rows[i].prior;
        prs_config_error why = {NULL, NULL};
        ASSERT_STATUS(prs_bulkhead_config_check(&cfg, &why), rows[i].want);
        ASSERT_STREQ(why.field, rows[i].field);
        ASSERT_STREQ(why.reason, rows[i].reason);
        ASSERT_STATUS(prs_bulkhead_config_check(&cfg, NULL), rows[i].want);
    }
    prs_bulkhead_config cfg;
    prs_bulkhead_config_init(&cfg);
    prs_config_error why = {NULL, NULL};
    ASSERT_OK(prs_bulkhead_config_check(&cfg, &why));
    ASSERT(why.field == NULL && why.reason == NULL); /* untouched on success */
    ASSERT_STATUS(prs_bulkhead_config_check(NULL, &why), PRS_EINVAL);
}

TEST(bulkhead_try_release_table) {
    prs_bulkhead *b = make(3);
    /* op: 't' try (expect got), 'r' release (expect status), then active/available */
    static const struct { char op; int want; int64_t active; } rows[] = {
        {'t', 1, 1}, {'t', 1, 2}, {'t', 1, 3}, {'t', 0, 3}, {'r', PRS_OK, 2},
        {'t', 1, 3}, {'r', PRS_OK, 2}, {'r', PRS_OK, 1}, {'r', PRS_OK, 0},
        {'r', PRS_ESTATE, 0}, {'t', 1, 1}, {'r', PRS_OK, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (rows[i].op == 't') {
            int got = -1;
            ASSERT_OK(prs_bulkhead_try_acquire(b, (int64_t)i, 1, &got));
            ASSERT_EQ(got, rows[i].want);
        } else {
            ASSERT_STATUS(prs_bulkhead_release(b, (int64_t)i, NULL), rows[i].want);
        }
        prs_bulkhead_stats s;
        prs_bulkhead_stats_get(b, &s);
        ASSERT_EQ(s.active, rows[i].active);
        ASSERT_EQ(s.available, 3 - rows[i].active);
    }
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.acquired_total, 5);
    ASSERT_EQ(s.released_total, 5);
    ASSERT_EQ(s.rejected_total, 1);
    ASSERT_EQ(s.waiting, 0);
    prs_bulkhead_free(b);
}

TEST(bulkhead_fifo_handover) {
    prs_bulkhead *b = make(2);
    int got, outcome;
    prs_bulkhead_waiter w[4];
    for (int i = 0; i < 4; i++) ASSERT_OK(prs_bulkhead_waiter_init(&w[i], 0, NULL));
    ASSERT_OK(prs_bulkhead_acquire(b, 0, &w[0], &outcome));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    ASSERT_OK(prs_bulkhead_try_acquire(b, 0, 0, &got));
    ASSERT_EQ(got, 1);
    for (int i = 1; i < 4; i++) {
        ASSERT_OK(prs_bulkhead_acquire(b, 0, &w[i], &outcome));
        ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
        ASSERT_EQ(prs_bulkhead_waiter_state(b, &w[i]), PRS_WAITER_WAITING);
    }
    ASSERT_STATUS(prs_bulkhead_acquire(b, 0, &w[1], &outcome), PRS_EINVAL); /* already queued */
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.waiting, 3);
    /* a release hands the permit to the oldest waiter; nobody can overtake */
    prs_bulkhead_waiter *woken = NULL;
    ASSERT_OK(prs_bulkhead_release(b, 10, &woken));
    ASSERT(woken == &w[1]);
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &w[1]), PRS_WAITER_GRANTED);
    ASSERT_OK(prs_bulkhead_try_acquire(b, 10, 0, &got));
    ASSERT_EQ(got, 0);
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.active, 2);
    ASSERT_EQ(s.waiting, 2);
    /* w[1] keeps its permit */
    ASSERT_OK(prs_bulkhead_finish(b, &w[1], PRS_BULKHEAD_FINISH_ACCEPT, 10, &outcome, &woken));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    ASSERT(woken == NULL);
    /* w[3] gives up while queued (timeout: counted as rejected) */
    ASSERT_OK(prs_bulkhead_finish(b, &w[3], PRS_BULKHEAD_FINISH_ACCEPT, 10, &outcome, &woken));
    ASSERT_EQ(outcome, PRS_BULKHEAD_REJECTED);
    /* next release goes to w[2], which cancels: the permit moves on (nobody) */
    ASSERT_OK(prs_bulkhead_release(b, 20, &woken));
    ASSERT(woken == &w[2]);
    ASSERT_OK(prs_bulkhead_finish(b, &w[2], PRS_BULKHEAD_FINISH_CANCEL, 20, &outcome, &woken));
    ASSERT_EQ(outcome, PRS_BULKHEAD_RETURNED);
    ASSERT(woken == NULL);
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.active, 1);
    ASSERT_EQ(s.waiting, 0);
    ASSERT_EQ(s.rejected_total, 1);
    ASSERT_EQ(s.cancelled_total, 1);
    ASSERT_OK(prs_bulkhead_release(b, 30, &woken));
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 2);
    ASSERT_EQ(s.acquired_total, s.released_total);
    /* finishing an idle waiter changes nothing */
    ASSERT_OK(prs_bulkhead_finish(b, &w[0], PRS_BULKHEAD_FINISH_CANCEL, 30, &outcome, &woken));
    ASSERT_EQ(outcome, PRS_BULKHEAD_CANCELLED);
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 2);
    for (int i = 0; i < 4; i++) prs_bulkhead_waiter_destroy(&w[i]);
    prs_bulkhead_free(b);
}

TEST(bulkhead_cancel_granted_passes_on) {
    prs_bulkhead *b = make(1);
    int got, outcome;
    prs_bulkhead_waiter a, c;
    prs_bulkhead_waiter_init(&a, 0, NULL);
    prs_bulkhead_waiter_init(&c, 0, NULL);
    ASSERT_OK(prs_bulkhead_try_acquire(b, 0, 0, &got));
    prs_bulkhead_acquire(b, 0, &a, &outcome);
    prs_bulkhead_acquire(b, 0, &c, &outcome);
    prs_bulkhead_waiter *woken;
    prs_bulkhead_release(b, 5, &woken);
    ASSERT(woken == &a);
    ASSERT_OK(prs_bulkhead_finish(b, &a, PRS_BULKHEAD_FINISH_CANCEL, 5, &outcome, &woken));
    ASSERT_EQ(outcome, PRS_BULKHEAD_RETURNED);
    ASSERT(woken == &c); /* the permit a gave back went straight to c */
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &c), PRS_WAITER_GRANTED);
    ASSERT_OK(prs_bulkhead_finish(b, &c, PRS_BULKHEAD_FINISH_ACCEPT, 5, &outcome, &woken));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    prs_bulkhead_release(b, 6, &woken);
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 1);
    ASSERT_EQ(s.acquired_total, 2);
    ASSERT_EQ(s.released_total, 2);
    prs_bulkhead_free(b);
}

TEST(bulkhead_estimate) {
    prs_bulkhead *b = make(2);
    int got;
    ASSERT_EQ(prs_bulkhead_estimate_wait_ns(b, 0), 0); /* free */
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    /* full, no hold observed yet: the prior mean hold (1 s) * 1 / 2 */
    ASSERT_EQ_I64(prs_bulkhead_estimate_wait_ns(b, 0), PRS_BULKHEAD_PRIOR_HOLD_NS / 2);
    prs_bulkhead_stats s0;
    prs_bulkhead_stats_get(b, &s0);
    ASSERT_EQ(s0.avg_hold_ns, -1); /* the statistics report only what was observed */
    prs_bulkhead_release(b, 100, NULL);                 /* area 200, 1 release */
    prs_bulkhead_try_acquire(b, 100, 0, &got);
    prs_bulkhead_release(b, 300, NULL);                 /* area 200+400, 2 releases */
    prs_bulkhead_try_acquire(b, 300, 0, &got);
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.avg_hold_ns, 300);
    /* full, nobody waiting: 300 * 1 / 2 */
    ASSERT_EQ(prs_bulkhead_estimate_wait_ns(b, 300), 150);
    /* time going backwards changes nothing */
    ASSERT_EQ(prs_bulkhead_estimate_wait_ns(b, 10), 150);
    prs_bulkhead_free(b);
}

/* The prior: the estimate before the first release, from a configured mean
 * hold, scaled like an observed one; a returned (cancelled) hand-over is no
 * observation. */
TEST(bulkhead_estimate_prior) {
    prs_bulkhead_config cfg;
    prs_bulkhead_config_init(&cfg);
    cfg.max_concurrent = 4;
    cfg.prior_hold_ns = 2000;
    prs_bulkhead *b = NULL;
    ASSERT_OK(prs_bulkhead_new(&cfg, &b));
    int got, outcome;
    for (int i = 0; i < 4; i++) prs_bulkhead_try_acquire(b, 0, 0, &got);
    ASSERT_EQ_I64(prs_bulkhead_estimate_wait_ns(b, 0), 500); /* 2000 * 1 / 4 */
    prs_bulkhead_waiter w1, w2;
    prs_bulkhead_waiter_init(&w1, 0, NULL);
    prs_bulkhead_waiter_init(&w2, 0, NULL);
    prs_bulkhead_acquire(b, 0, &w1, &outcome);
    prs_bulkhead_acquire(b, 0, &w2, &outcome);
    ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
    ASSERT_EQ_I64(prs_bulkhead_estimate_wait_ns(b, 10), 1500); /* 2000 * 3 / 4 */
    prs_bulkhead_waiter *woken = NULL;
    prs_bulkhead_finish(b, &w2, PRS_BULKHEAD_FINISH_CANCEL, 10, &outcome, &woken);
    prs_bulkhead_finish(b, &w1, PRS_BULKHEAD_FINISH_CANCEL, 10, &outcome, &woken);
    ASSERT_EQ_I64(prs_bulkhead_estimate_wait_ns(b, 10), 500);
    /* one hold of 100 observed: the estimate follows it from now on */
    prs_bulkhead_release(b, 100, NULL);
    prs_bulkhead_try_acquire(b, 100, 0, &got);
    ASSERT_EQ_I64(prs_bulkhead_estimate_wait_ns(b, 100), 100); /* area 400 / 1 * 1 / 4 */
    for (int i = 0; i < 4; i++) prs_bulkhead_release(b, 100, NULL);
    prs_bulkhead_waiter_destroy(&w1);
    prs_bulkhead_waiter_destroy(&w2);
    prs_bulkhead_free(b);
    /* a huge prior saturates instead of overflowing */
    cfg.prior_hold_ns = INT64_MAX;
    cfg.max_concurrent = 1;
    ASSERT_OK(prs_bulkhead_new(&cfg, &b));
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    ASSERT_EQ_I64(prs_bulkhead_estimate_wait_ns(b, 0), INT64_MAX);
    prs_bulkhead_release(b, 0, NULL);
    prs_bulkhead_free(b);
}

TEST(bulkhead_blocking_timeout) {
    prs_bulkhead *b = make(1);
    ASSERT_OK(prs_bulkhead_acquire_blocking(b, 0));            /* free: no wait */
    ASSERT_STATUS(prs_bulkhead_acquire_blocking(b, 0), PRS_ETIMEDOUT); /* past deadline */
    ASSERT_STATUS(prs_bulkhead_acquire_blocking(b, prs_monotonic_ns() + 2 * PRS_NS_PER_MS),
                  PRS_ETIMEDOUT);
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.rejected_total, 2);
    ASSERT_EQ(s.waiting, 0);
    ASSERT_EQ(s.active, 1);
    ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    prs_bulkhead_free(b);
}

/* ---- threads, time frozen at 0 ------------------------------------------ */

typedef struct {
    prs_bulkhead *b;
    atomic_int inside;
    atomic_int max_inside;
    int iters;
} th_ctx;

static void *worker(void *arg) {
    th_ctx *c = arg;
    for (int i = 0; i < c->iters; i++) {
        if (prs_bulkhead_acquire_blocking(c->b, PRS_NEVER) != PRS_OK) abort();
        int now = atomic_fetch_add(&c->inside, 1) + 1;
        int seen = atomic_load(&c->max_inside);
        while (now > seen && !atomic_compare_exchange_weak(&c->max_inside, &seen, now)) {}
        atomic_fetch_sub(&c->inside, 1);
        if (prs_bulkhead_release(c->b, 0, NULL) != PRS_OK) abort();
    }
    return NULL;
}

TEST(bulkhead_threads_exact) {
    th_ctx c;
    c.b = make(3);
    atomic_init(&c.inside, 0);
    atomic_init(&c.max_inside, 0);
    c.iters = 20000;
    pthread_t t[8];
    for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, &c);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(c.b, &s);
    ASSERT_LE_I64(atomic_load(&c.max_inside), 3);
    ASSERT_EQ(s.available, 3);
    ASSERT_EQ(s.waiting, 0);
    ASSERT_EQ(s.acquired_total, 8 * 20000);
    ASSERT_EQ(s.released_total, 8 * 20000);
    ASSERT_EQ(s.rejected_total, 0);
    prs_bulkhead_free(c.b);
}

typedef struct {
    prs_bulkhead *b;
    prs_bulkhead_waiter w;
    int rc;
} blocked_ctx;

static void *blocked_waiter(void *arg) {
    blocked_ctx *c = arg;
    c->rc = prs_bulkhead_wait(c->b, &c->w, PRS_NEVER);
    return NULL;
}

TEST(bulkhead_threads_fifo_blocking) {
    prs_bulkhead *b = make(1);
    int got, outcome;
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    blocked_ctx c[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        c[i].b = b;
        ASSERT_OK(prs_bulkhead_waiter_init(&c[i].w, 1, NULL));
        ASSERT_OK(prs_bulkhead_acquire(b, 0, &c[i].w, &outcome)); /* queued in order 0,1,2 */
        ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
        pthread_create(&t[i], NULL, blocked_waiter, &c[i]);
    }
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(prs_bulkhead_release(b, 0, NULL)); /* to c[i], in order */
        pthread_join(t[i], NULL);
        ASSERT_OK(c[i].rc);
        ASSERT_OK(prs_bulkhead_finish(b, &c[i].w, PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
        ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
        for (int j = i + 1; j < 3; j++)
            ASSERT_EQ(prs_bulkhead_waiter_state(b, &c[j].w), PRS_WAITER_WAITING);
        prs_bulkhead_waiter_destroy(&c[i].w);
    }
    ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 1);
    prs_bulkhead_free(b);
}

static int make_bh(const prs_allocator *a, void **obj) {
    prs_bulkhead_config cfg;
    prs_bulkhead_config_init(&cfg);
    cfg.max_concurrent = 4;
    cfg.allocator = a;
    return prs_bulkhead_new(&cfg, (prs_bulkhead **)obj);
}
static void destroy_bh(void *obj) { prs_bulkhead_free(obj); }

TEST(bulkhead_alloc_failure) { prs_test_alloc_failures(make_bh, destroy_bh); }

/* ---- fork ------------------------------------------------------------------ */

/* After fork: in one process the logic alone (waiters with no thread behind
 * them stand for the parent's threads). Queue [X, N1, Y, N2] (X, Y blocking,
 * N NOTIFY), X served: X's permit goes to N1, Y leaves, N2 stays queued. */
TEST(bulkhead_after_fork_logic) {
    prs_bulkhead *b = make(2);
    int got, outcome;
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    prs_bulkhead_waiter x, y, n1, n2;
    ASSERT_OK(prs_bulkhead_waiter_init(&x, 1, NULL));
    ASSERT_OK(prs_bulkhead_waiter_init(&y, 1, NULL));
    ASSERT_OK(prs_bulkhead_waiter_init(&n1, 0, NULL));
    ASSERT_OK(prs_bulkhead_waiter_init(&n2, 0, NULL));
    prs_bulkhead_waiter *order[4] = {&x, &n1, &y, &n2};
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(prs_bulkhead_acquire(b, 0, order[i], &outcome));
        ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
    }
    prs_bulkhead_waiter *woken = &x;
    ASSERT_OK(prs_bulkhead_release(b, 0, &woken)); /* to x (blocking: not returned) */
    ASSERT(woken == NULL);
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &x), PRS_WAITER_GRANTED);

    ASSERT_OK(prs_bulkhead_after_fork_child(b, &woken));
    ASSERT(woken == &n1 && n1.next == NULL);
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &x), PRS_WAITER_IDLE);
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &y), PRS_WAITER_IDLE);
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &n1), PRS_WAITER_GRANTED);
    ASSERT_EQ(prs_bulkhead_waiter_state(b, &n2), PRS_WAITER_WAITING);
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.active, 2);    /* one held by the caller, one handed to n1 */
    ASSERT_EQ(s.waiting, 1);   /* n2 */
    ASSERT_EQ(s.acquired_total, 3); /* 2 direct + n1 (x's hand-over undone) */
    ASSERT_EQ(s.released_total, 1);
    ASSERT_EQ(s.cancelled_total, 2); /* x gave back, y left */
    /* Settling the ghosts later (as the binding's frames never will) is harmless. */
    ASSERT_OK(prs_bulkhead_finish(b, &x, PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_CANCELLED);
    ASSERT_OK(prs_bulkhead_finish(b, &n1, PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    ASSERT_OK(prs_bulkhead_release(b, 0, &woken)); /* to n2 */
    ASSERT(woken == &n2);
    ASSERT_OK(prs_bulkhead_finish(b, &n2, PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    ASSERT_OK(prs_bulkhead_release(b, 0, &woken));
    ASSERT_OK(prs_bulkhead_release(b, 0, &woken));
    ASSERT_STATUS(prs_bulkhead_release(b, 0, &woken), PRS_ESTATE);
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 2);
    ASSERT_EQ(s.acquired_total, s.released_total);
    /* Nothing queued or served: a no-op. */
    ASSERT_OK(prs_bulkhead_after_fork_child(b, &woken));
    ASSERT(woken == NULL);
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 2);
    ASSERT_STATUS(prs_bulkhead_after_fork_child(NULL, &woken), PRS_EINVAL);
    prs_bulkhead_waiter *all[4] = {&x, &y, &n1, &n2};
    for (int i = 0; i < 4; i++) prs_bulkhead_waiter_destroy(all[i]);
    prs_bulkhead_free(b);
}

static int wait_fn(void *b, void *w, int64_t deadline_ns) { return prs_bulkhead_wait(b, w, deadline_ns); }

static void touch(void *b) {
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
}

/* The child's side: repair, then every permit works and the counters add up. */
static void fork_child_checks(void *obj) {
    prs_bulkhead *b = obj;
    prs_bulkhead_waiter *woken = NULL;
    ASSERT_OK(prs_bulkhead_after_fork_child(b, &woken));
    ASSERT(woken == NULL);
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.active, 2);          /* what the forking thread holds */
    ASSERT_EQ(s.available, 1);       /* the permit handed to `a` came back */
    ASSERT_EQ(s.waiting, 0);         /* `q` left */
    ASSERT_EQ(s.acquired_total, 3);
    ASSERT_EQ(s.released_total, 1);
    ASSERT_EQ(s.cancelled_total, 2);
    int got;
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    ASSERT_EQ(got, 1);
    prs_bulkhead_try_acquire(b, 0, 0, &got);
    ASSERT_EQ(got, 0);
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    ASSERT_STATUS(prs_bulkhead_release(b, 0, NULL), PRS_ESTATE);
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_bulkhead_acquire_blocking(b, prs_monotonic_ns() + PRS_NS_PER_SEC));
    ASSERT_STATUS(prs_bulkhead_acquire_blocking(b, prs_monotonic_ns() + PRS_NS_PER_MS), PRS_ETIMEDOUT);
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 3);
    ASSERT_EQ(s.waiting, 0);
    ASSERT_EQ(s.acquired_total, 7);
    ASSERT_EQ(s.released_total, 7);
    ASSERT_EQ(s.rejected_total, 1);
}

/* Fork while one thread is blocked in prs_bulkhead_wait() (1 ms slices: it
 * keeps taking the lock), another was just handed a permit and has not
 * settled, and a third takes and drops the lock nonstop: the child may inherit
 * the lock held. Forked 20 times; each child repairs and checks exactly. */
TEST(bulkhead_fork_child) {
    prs_bulkhead *b = make(3);
    int got, outcome;
    for (int i = 0; i < 3; i++) prs_bulkhead_try_acquire(b, 0, 0, &got);
    prs_bulkhead_waiter ws[2];
    waiter_thread a, q;
    waiter_thread *cs[2] = {&a, &q};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(prs_bulkhead_waiter_init(&ws[i], 1, NULL));
        ASSERT_OK(prs_bulkhead_acquire(b, 0, &ws[i], &outcome));
        ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
        waiter_thread_start(cs[i], &t[i], wait_fn, b, &ws[i]);
    }
    ASSERT_OK(prs_bulkhead_release(b, 0, NULL)); /* handed to a */
    waiter_thread_until_served(&a);
    fork_rounds(b, touch, fork_child_checks, 20);
    /* The parent is untouched: a settles its permit, q is served by it. */
    waiter_thread_stop(&a, t[0]);
    ASSERT_OK(prs_bulkhead_finish(b, &ws[0], PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    ASSERT_OK(prs_bulkhead_release(b, 0, NULL)); /* a's permit, to q */
    waiter_thread_until_served(&q);
    waiter_thread_stop(&q, t[1]);
    ASSERT_OK(prs_bulkhead_finish(b, &ws[1], PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    ASSERT_EQ(s.available, 3);
    ASSERT_EQ(s.acquired_total, 5);
    ASSERT_EQ(s.released_total, 5);
    for (int i = 0; i < 2; i++) prs_bulkhead_waiter_destroy(&ws[i]);
    prs_bulkhead_free(b);
}
