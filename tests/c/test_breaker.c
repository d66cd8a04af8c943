/*
 * test_breaker.c - the circuit breaker: tables at explicit times for both modes
 * and every transition, count and time windows rolling over, slow calls, manual
 * states, permits across transitions, configuration errors, allocation failure,
 * and real threads (a crowd at half-open; exact counts under contention).
 */
#include "prs_test.h"

#include "prs_breaker.h"

#include <pthread.h>
#include <stdatomic.h>

#define SEC PRS_NS_PER_SEC
#define MS PRS_NS_PER_MS

enum { C = PRS_BREAKER_CLOSED, O = PRS_BREAKER_OPEN, H = PRS_BREAKER_HALF_OPEN };
enum { S = PRS_BREAKER_SUCCESS, F = PRS_BREAKER_FAILURE, I = PRS_BREAKER_IGNORED };

/* ---- helpers ------------------------------------------------------------ */

static prs_breaker *make(const prs_breaker_config *cfg) {
    prs_breaker *b = NULL;
    ASSERT_OK(prs_breaker_new(cfg, &b));
    ASSERT(b != NULL);
    ASSERT_EQ(prs_breaker_get_state(b), C);
    return b;
}

static prs_breaker *make_consecutive(int64_t fails, int64_t succ, int64_t timeout_ns) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = fails;
    cfg.success_threshold = succ;
    cfg.open_timeout_ns = timeout_ns;
    return make(&cfg);
}

static prs_breaker_decision acquire(prs_breaker *b, int64_t now) {
    prs_breaker_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(prs_breaker_acquire(b, now, &d));
    ASSERT(d.allowed == 0 || d.allowed == 1);
    if (d.allowed) {
        ASSERT_EQ_I64(d.retry_after_ns, 0);
        ASSERT(d.permit != PRS_BREAKER_NO_PERMIT);
    } else {
        ASSERT(d.permit == PRS_BREAKER_NO_PERMIT);
        ASSERT_GE_I64(d.retry_after_ns, 0);
    }
    return d;
}

static prs_breaker_decision acquire_untracked(prs_breaker *b, int64_t now) {
    prs_breaker_decision d;
    memset(&d, 0xCD, sizeof d);
    ASSERT_OK(prs_breaker_acquire_untracked(b, now, &d));
    ASSERT(d.allowed == 0 || d.allowed == 1);
    ASSERT(d.permit == PRS_BREAKER_NO_PERMIT);
    if (d.allowed) ASSERT_EQ_I64(d.retry_after_ns, 0);
    return d;
}

static prs_breaker_transition record(prs_breaker *b, int64_t now, prs_breaker_permit p, int outcome,
                                     int64_t duration) {
    prs_breaker_transition tr;
    memset(&tr, 0xCD, sizeof tr);
    ASSERT_OK(prs_breaker_record(b, now, p, (prs_breaker_outcome)outcome, duration, &tr));
    ASSERT(tr.happened == 0 || tr.happened == 1);
    return tr;
}

/* One admitted call at `now` with `outcome`; returns the transition it caused. */
static prs_breaker_transition call(prs_breaker *b, int64_t now, int outcome) {
    prs_breaker_decision d = acquire(b, now);
    ASSERT(d.allowed);
    return record(b, now, d.permit, outcome, 0);
}

static prs_breaker_metrics metrics(prs_breaker *b, int64_t now) {
    prs_breaker_metrics m;
    prs_breaker_get_metrics(b, now, &m);
    ASSERT_GE_I64(m.window_calls, m.window_failures);
    ASSERT_GE_I64(m.window_calls, m.window_slow_calls);
    ASSERT_GE_I64(m.calls, m.failures);
    return m;
}

#define ASSERT_TR(tr, f, t)                                                  \
    do {                                                                     \
        prs_breaker_transition tr__ = (tr);                                  \
        ASSERT_EQ(tr__.happened, 1);                                         \
        ASSERT_EQ(tr__.from, f);                                             \
        ASSERT_EQ(tr__.to, t);                                               \
    } while (0)
#define ASSERT_NO_TR(tr) ASSERT_EQ((tr).happened, 0)

/* ---- configuration --------------------------------------------------------- */

TEST(breaker_config) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    ASSERT_EQ(cfg.failure_threshold, 5);
    ASSERT_EQ(cfg.success_threshold, 2);
    ASSERT_EQ(cfg.open_timeout_ns, 30 * SEC);
    ASSERT_OK(prs_breaker_config_validate(&cfg));
    ASSERT_STATUS(prs_breaker_config_validate(NULL), PRS_EINVAL);

    struct { int field; double value; int want; } bad[] = {
        {0, 0, PRS_EINVAL}, {0, -1, PRS_EINVAL}, {1, 0, PRS_EINVAL}, {2, -1, PRS_EINVAL},
        {3, -1, PRS_EINVAL}, {4, NAN, PRS_EINVAL}, {4, 1.5, PRS_EINVAL}, {4, -0.1, PRS_EINVAL},
        {5, NAN, PRS_EINVAL}, {5, 2.0, PRS_EINVAL}, {6, -1, PRS_EINVAL}, {7, 2, PRS_EINVAL},
        {8, 0, PRS_EINVAL}, {8, 16777217.0, PRS_ERANGE}, {9, 0, PRS_EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prs_breaker_config_init(&cfg);
        switch (bad[i].field) {
        case 0: cfg.failure_threshold = (int64_t)bad[i].value; break;
        case 1: cfg.success_threshold = (int64_t)bad[i].value; break;
        case 2: cfg.open_timeout_ns = (int64_t)bad[i].value; break;
        case 3: cfg.half_open_max_calls = (int64_t)bad[i].value; break;
        case 4: cfg.failure_rate_threshold = bad[i].value; break;
        case 5: cfg.slow_call_rate_threshold = bad[i].value; cfg.slow_call_ns = SEC; break;
        case 6: cfg.slow_call_ns = (int64_t)bad[i].value; break;
        case 7: cfg.window_type = (int)bad[i].value; break;
        case 8: cfg.window_size = (int64_t)bad[i].value; break;
        case 9: cfg.minimum_calls = (int64_t)bad[i].value; break;
        }
        ASSERT_STATUS(prs_breaker_config_validate(&cfg), bad[i].want);
        prs_breaker *b = (prs_breaker *)&cfg;
        ASSERT_STATUS(prs_breaker_new(&cfg, &b), bad[i].want);
        ASSERT(b == NULL);
    }
    /* a slow-call rate needs a slow-call duration */
    prs_breaker_config_init(&cfg);
    cfg.slow_call_rate_threshold = 0.5;
    ASSERT_STATUS(prs_breaker_config_validate(&cfg), PRS_EINVAL);
    /* a time window is bounded in seconds */
    prs_breaker_config_init(&cfg);
    cfg.window_type = PRS_BREAKER_WINDOW_TIME;
    cfg.window_size = PRS_BREAKER_MAX_TIME_WINDOW;
    ASSERT_OK(prs_breaker_config_validate(&cfg));
    cfg.window_size++;
    ASSERT_STATUS(prs_breaker_config_validate(&cfg), PRS_ERANGE);
    /* edges that are valid */
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = 1.0;
    cfg.open_timeout_ns = 0;
    ASSERT_OK(prs_breaker_config_validate(&cfg));
    cfg.open_timeout_ns = PRS_NEVER;
    ASSERT_OK(prs_breaker_config_validate(&cfg));
    ASSERT_STATUS(prs_breaker_new(&cfg, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_breaker_acquire(NULL, 0, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_breaker_acquire_untracked(NULL, 0, NULL), PRS_EINVAL);
    ASSERT_STATUS(prs_breaker_record(NULL, 0, 0, PRS_BREAKER_SUCCESS, 0, NULL), PRS_EINVAL);
    prs_breaker_free(NULL);
    ASSERT_STREQ(prs_breaker_state_name(C), "closed");
    ASSERT_STREQ(prs_breaker_state_name(O), "open");
    ASSERT_STREQ(prs_breaker_state_name(H), "half_open");
    ASSERT_STREQ(prs_breaker_state_name(7), "unknown");
    ASSERT_STREQ(prs_breaker_mode_name(PRS_BREAKER_NORMAL), "normal");
    ASSERT_STREQ(prs_breaker_mode_name(PRS_BREAKER_FORCED_OPEN), "forced_open");
    ASSERT_STREQ(prs_breaker_mode_name(PRS_BREAKER_DISABLED), "disabled");
    ASSERT_STREQ(prs_breaker_mode_name(7), "unknown");
}

TEST(breaker_bad_outcome) {
    prs_breaker *b = make_consecutive(1, 1, SEC);
    prs_breaker_decision d = acquire(b, 0);
    ASSERT_STATUS(prs_breaker_record(b, 0, d.permit, (prs_breaker_outcome)7, 0, NULL), PRS_EINVAL);
    ASSERT_EQ(metrics(b, 0).calls, 0);
    prs_breaker_free(b);
}

/* ---- consecutive mode: the reference design ----------------------------------- */

TEST(breaker_consecutive_table) {
    /* failure_threshold 3, success_threshold 2, timeout 10 s, half_open_max = 2 */
    prs_breaker *b = make_consecutive(3, 2, 10 * SEC);
    struct { int64_t t; int op; int allowed; int state_after; int from, to; } rows[] = {
        /* op: S/F/I = an admitted call with that outcome; 9 = acquire only */
        {0 * SEC, F, 1, C, -1, -1},
        {1 * SEC, F, 1, C, -1, -1},
        {2 * SEC, S, 1, C, -1, -1}, /* a success resets the count */
        {3 * SEC, F, 1, C, -1, -1},
        {4 * SEC, F, 1, C, -1, -1},
        {5 * SEC, I, 1, C, -1, -1}, /* ignored: neither */
        {6 * SEC, F, 1, O, C, O},   /* third consecutive: open at 6 s */
        {7 * SEC, 9, 0, O, -1, -1},
        {16 * SEC - 1, 9, 0, O, -1, -1},
        {16 * SEC, S, 1, H, O, H},  /* timeout passed: half-open, first trial ok */
        {17 * SEC, F, 1, O, H, O},  /* a trial failure re-opens, timer restarts */
        {26 * SEC, 9, 0, O, -1, -1},
        {27 * SEC, S, 1, H, O, H},
        {28 * SEC, S, 1, C, H, C},  /* second success closes */
        {29 * SEC, F, 1, C, -1, -1},
        {30 * SEC, F, 1, C, -1, -1},
        {31 * SEC, F, 1, O, C, O},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_breaker_decision d = acquire(b, rows[i].t);
        ASSERT_EQ(d.allowed, rows[i].allowed);
        prs_breaker_transition tr = d.transition;
        if (d.allowed && rows[i].op != 9) {
            prs_breaker_transition r = record(b, rows[i].t, d.permit, rows[i].op, 0);
            if (r.happened) {
                ASSERT(!tr.happened);
                tr = r;
            }
        }
        if (rows[i].from >= 0) ASSERT_TR(tr, rows[i].from, rows[i].to);
        else ASSERT_NO_TR(tr);
        ASSERT_EQ(prs_breaker_get_state(b), rows[i].state_after);
    }
    prs_breaker_metrics m = metrics(b, 31 * SEC);
    ASSERT_EQ(m.state, O);
    ASSERT_EQ(m.calls, 13);     /* S/F outcomes recorded, the ignored one excluded */
    ASSERT_EQ(m.failures, 9);
    ASSERT_EQ(m.ignored, 1);
    ASSERT_EQ(m.rejected, 3);
    ASSERT_EQ(m.consecutive_failures, 3);
    ASSERT_EQ(m.retry_after_ns, 10 * SEC);
    ASSERT_EQ(metrics(b, 35 * SEC).retry_after_ns, 6 * SEC);
    prs_breaker_free(b);
}

TEST(breaker_retry_after_counts_down) {
    prs_breaker *b = make_consecutive(1, 1, 10 * SEC);
    ASSERT_TR(call(b, 100, F), C, O);
    ASSERT_EQ(acquire(b, 100).retry_after_ns, 10 * SEC);
    ASSERT_EQ(acquire(b, 100 + 3 * SEC).retry_after_ns, 7 * SEC);
    ASSERT_EQ(acquire(b, 100 + 10 * SEC - 1).retry_after_ns, 1);
    /* the state stays OPEN past the timeout until the next acquire */
    ASSERT_EQ(metrics(b, 100 + 20 * SEC).retry_after_ns, 0);
    ASSERT_EQ(prs_breaker_get_state(b), O);
    prs_breaker_decision d = acquire(b, 100 + 20 * SEC);
    ASSERT(d.allowed);
    ASSERT_TR(d.transition, O, H);
    ASSERT_TR(record(b, 100 + 20 * SEC, d.permit, S, 0), H, C);
    prs_breaker_free(b);
}

TEST(breaker_zero_and_infinite_timeout) {
    prs_breaker *b = make_consecutive(1, 1, 0);
    ASSERT_TR(call(b, 5, F), C, O);
    prs_breaker_decision d = acquire(b, 5); /* a zero timeout half-opens at once */
    ASSERT(d.allowed);
    ASSERT_TR(d.transition, O, H);
    prs_breaker_free(b);

    b = make_consecutive(1, 1, PRS_NEVER);
    ASSERT_TR(call(b, 0, F), C, O);
    d = acquire(b, INT64_MAX);
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(metrics(b, INT64_MAX).retry_after_ns, PRS_NEVER);
    prs_breaker_half_open(b, INT64_MAX, NULL); /* only a manual call leaves */
    ASSERT_EQ(prs_breaker_get_state(b), H);
    prs_breaker_free(b);
}

/* ---- half-open admission ---------------------------------------------------- */

TEST(breaker_half_open_admission) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 1;
    cfg.success_threshold = 3;
    cfg.half_open_max_calls = 2;
    cfg.open_timeout_ns = SEC;
    prs_breaker *b = make(&cfg);
    ASSERT_TR(call(b, 0, F), C, O);
    prs_breaker_decision a = acquire(b, SEC), c = acquire(b, SEC), x = acquire(b, SEC);
    ASSERT(a.allowed && c.allowed && !x.allowed);
    ASSERT_TR(a.transition, O, H);
    ASSERT_NO_TR(c.transition);
    ASSERT_EQ(x.retry_after_ns, 0);
    ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 2);
    /* an ignored trial frees its slot without counting */
    ASSERT_NO_TR(record(b, SEC, a.permit, I, 0));
    ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 1);
    prs_breaker_decision y = acquire(b, SEC);
    ASSERT(y.allowed);
    ASSERT(!acquire(b, SEC).allowed);
    /* successes free slots; the third closes */
    ASSERT_NO_TR(record(b, SEC, c.permit, S, 0));
    ASSERT_NO_TR(record(b, SEC, y.permit, S, 0));
    ASSERT_EQ(metrics(b, SEC).consecutive_successes, 2);
    prs_breaker_decision z = acquire(b, SEC);
    ASSERT(z.allowed);
    ASSERT_TR(record(b, SEC, z.permit, S, 0), H, C);
    prs_breaker_metrics m = metrics(b, SEC);
    ASSERT_EQ(m.half_open_in_flight, 0);
    ASSERT_EQ(m.rejected, 2);
    ASSERT_EQ(m.consecutive_successes, 0);
    prs_breaker_free(b);
}

TEST(breaker_default_half_open_max_is_success_threshold) {
    prs_breaker *b = make_consecutive(1, 4, SEC);
    ASSERT_TR(call(b, 0, F), C, O);
    for (int i = 0; i < 4; i++) ASSERT(acquire(b, SEC).allowed);
    ASSERT(!acquire(b, SEC).allowed);
    prs_breaker_free(b);
}

TEST(breaker_stale_permits) {
    prs_breaker *b = make_consecutive(1, 1, SEC);
    prs_breaker_decision slow = acquire(b, 0); /* admitted while closed, runs long */
    ASSERT(slow.allowed);
    ASSERT_TR(call(b, 0, F), C, O);
    prs_breaker_decision trial = acquire(b, SEC);
    ASSERT(trial.allowed);
    ASSERT_TR(trial.transition, O, H);
    ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 1);
    /* the old call's success neither closes nor frees the trial's slot */
    ASSERT_NO_TR(record(b, SEC, slow.permit, S, 0));
    ASSERT_EQ(prs_breaker_get_state(b), H);
    ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 1);
    ASSERT(!acquire(b, SEC).allowed);
    /* nor does an old failure re-open */
    prs_breaker_decision slow2 = slow;
    ASSERT_NO_TR(record(b, SEC, slow2.permit, F, 0));
    ASSERT_EQ(prs_breaker_get_state(b), H);
    /* the totals count both */
    ASSERT_EQ(metrics(b, SEC).calls, 3);
    ASSERT_TR(record(b, SEC, trial.permit, S, 0), H, C);
    /* a trial's outcome after a re-open is stale too */
    ASSERT_TR(call(b, 2 * SEC, F), C, O);
    prs_breaker_decision t1 = acquire(b, 3 * SEC);
    ASSERT(t1.allowed);
    prs_breaker_open(b, 3 * SEC, NULL);
    ASSERT_NO_TR(record(b, 3 * SEC, t1.permit, S, 0));
    ASSERT_EQ(prs_breaker_get_state(b), O);
    prs_breaker_free(b);
}

TEST(breaker_no_permit_records) {
    prs_breaker *b = make_consecutive(2, 2, SEC);
    ASSERT_NO_TR(record(b, 0, PRS_BREAKER_NO_PERMIT, F, 0));
    ASSERT_TR(record(b, 0, PRS_BREAKER_NO_PERMIT, F, 0), C, O);
    /* while open, outcomes only count */
    ASSERT_NO_TR(record(b, 0, PRS_BREAKER_NO_PERMIT, S, 0));
    ASSERT_EQ(prs_breaker_get_state(b), O);
    ASSERT_EQ(metrics(b, 0).calls, 3);
    /* half-open: a record without a permit frees an untracked slot */
    ASSERT(acquire_untracked(b, SEC).allowed);
    ASSERT(acquire_untracked(b, SEC).allowed);
    ASSERT(!acquire_untracked(b, SEC).allowed);
    ASSERT_EQ(metrics(b, SEC).half_open_untracked, 2);
    ASSERT_NO_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, S, 0));
    ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 1);
    ASSERT_EQ(metrics(b, SEC).half_open_untracked, 1);
    ASSERT_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, S, 0), H, C);
    ASSERT_EQ(metrics(b, SEC).half_open_untracked, 0);
    /* without an untracked slot taken, a record is a stray: totals only */
    prs_breaker_half_open(b, SEC, NULL);
    int64_t calls = metrics(b, SEC).calls;
    ASSERT_NO_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, I, 0));
    ASSERT_NO_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, F, 0));
    ASSERT_NO_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, S, 0));
    ASSERT_NO_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, S, 0));
    prs_breaker_metrics m = metrics(b, SEC);
    ASSERT_EQ(m.state, H);
    ASSERT_EQ(m.half_open_in_flight, 0);
    ASSERT_EQ(m.consecutive_successes, 0);
    ASSERT_EQ(m.calls, calls + 3);
    ASSERT_EQ(m.failures, 3);
    prs_breaker_free(b);
}

/* A stray outcome (no permit, no untracked admission) in HALF_OPEN never frees
 * the slot of a trial that holds one, so no second trial is admitted and the
 * trial's own outcome cannot drive in_flight below zero. */
TEST(breaker_stray_record_keeps_trial_slot) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 1;
    cfg.success_threshold = 2;
    cfg.half_open_max_calls = 1;
    cfg.open_timeout_ns = SEC;
    for (int stray = S; stray <= I; stray++) {
        prs_breaker *b = make(&cfg);
        ASSERT_TR(call(b, 0, F), C, O);
        prs_breaker_decision trial = acquire(b, SEC);
        ASSERT(trial.allowed);
        ASSERT_TR(trial.transition, O, H);
        /* a stray success does not close, a stray failure does not re-open */
        ASSERT_NO_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, stray, 0));
        ASSERT_EQ(prs_breaker_get_state(b), H);
        ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 1);
        ASSERT(!acquire(b, SEC).allowed);           /* the one slot is still the trial's */
        ASSERT(!acquire_untracked(b, SEC).allowed);
        ASSERT_NO_TR(record(b, SEC, trial.permit, S, 0));
        ASSERT_EQ(metrics(b, SEC).half_open_in_flight, 0);
        ASSERT_EQ(metrics(b, SEC).consecutive_successes, 1);
        /* an untracked trial, then a tracked one's permit: each frees its own */
        prs_breaker_decision u = acquire_untracked(b, SEC);
        ASSERT(u.allowed);
        ASSERT(u.permit == PRS_BREAKER_NO_PERMIT);
        ASSERT(!acquire(b, SEC).allowed);
        ASSERT_TR(record(b, SEC, PRS_BREAKER_NO_PERMIT, S, 0), H, C);
        prs_breaker_metrics m = metrics(b, SEC);
        ASSERT_EQ(m.half_open_in_flight, 0);
        ASSERT_EQ(m.half_open_untracked, 0);
        prs_breaker_free(b);
    }
}

/* Untracked admissions of an older half-open epoch are forgotten by the
 * transition: their late outcomes are strays in the next one. */
TEST(breaker_untracked_across_transitions) {
    prs_breaker *b = make_consecutive(1, 1, SEC);
    ASSERT_TR(call(b, 0, F), C, O);
    prs_breaker_decision u = acquire_untracked(b, SEC);
    ASSERT(u.allowed);
    ASSERT_TR(u.transition, O, H);
    prs_breaker_open(b, SEC, NULL);
    ASSERT_EQ(metrics(b, SEC).half_open_untracked, 0);
    prs_breaker_decision t = acquire(b, 2 * SEC);
    ASSERT(t.allowed);
    ASSERT_TR(t.transition, O, H);
    ASSERT_NO_TR(record(b, 2 * SEC, PRS_BREAKER_NO_PERMIT, S, 0)); /* the old one's, late */
    ASSERT_EQ(metrics(b, 2 * SEC).half_open_in_flight, 1);
    ASSERT_TR(record(b, 2 * SEC, t.permit, S, 0), H, C);
    /* CLOSED: untracked admissions take nothing and their outcomes count */
    prs_breaker_decision c = acquire_untracked(b, 3 * SEC);
    ASSERT(c.allowed && c.permit == PRS_BREAKER_NO_PERMIT);
    ASSERT_TR(record(b, 3 * SEC, PRS_BREAKER_NO_PERMIT, F, 0), C, O);
    prs_breaker_free(b);
}

/* ---- rate mode: count window ---------------------------------------------- */

static prs_breaker *make_rate(int type, int64_t size, int64_t min_calls, double frt) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = frt;
    cfg.window_type = type;
    cfg.window_size = size;
    cfg.minimum_calls = min_calls;
    cfg.failure_threshold = 1; /* ignored in rate mode */
    cfg.open_timeout_ns = 10 * SEC;
    return make(&cfg);
}

TEST(breaker_rate_count_window) {
    prs_breaker *b = make_rate(PRS_BREAKER_WINDOW_COUNT, 10, 4, 0.5);
    /* below minimum_calls nothing trips, whatever the rate */
    ASSERT_NO_TR(call(b, 0, F));
    ASSERT_NO_TR(call(b, 0, F));
    ASSERT_NO_TR(call(b, 0, F));
    ASSERT_NEAR(metrics(b, 0).failure_rate, 1.0, 0);
    prs_breaker_close(b, 0, NULL); /* clears the window */
    ASSERT_EQ(metrics(b, 0).window_calls, 0);
    /* S S S S S S S S F F : rate 0.2, full window */
    int seq[] = {S, S, S, S, S, S, S, S, F, F};
    for (int i = 0; i < 10; i++) ASSERT_NO_TR(call(b, i, seq[i]));
    prs_breaker_metrics m = metrics(b, 10);
    ASSERT_EQ(m.window_calls, 10);
    ASSERT_EQ(m.window_failures, 2);
    ASSERT_NEAR(m.failure_rate, 0.2, 1e-12);
    /* each failure evicts a success: 3/10, 4/10, then 5/10 trips */
    ASSERT_NO_TR(call(b, 11, F));
    ASSERT_NO_TR(call(b, 12, F));
    ASSERT_TR(call(b, 13, F), C, O);
    ASSERT_EQ(metrics(b, 13).window_failures, 5);
    prs_breaker_free(b);

    /* rolling over evicts old failures: F F F then many S keeps it closed */
    b = make_rate(PRS_BREAKER_WINDOW_COUNT, 5, 5, 0.6);
    int seq2[] = {F, F, S, S, S, F, S, F, S, F, F, F};
    int64_t fails_in_window[12], expect_trip[12];
    /* the expected window after each call, from a direct count */
    for (int i = 0; i < 12; i++) {
        int lo = i - 4 < 0 ? 0 : i - 4, n = i - lo + 1, f = 0;
        for (int j = lo; j <= i; j++) f += seq2[j] == F;
        fails_in_window[i] = f;
        expect_trip[i] = n >= 5 && (double)f / n >= 0.6;
    }
    for (int i = 0; i < 12; i++) {
        prs_breaker_transition tr = call(b, i, seq2[i]);
        ASSERT_EQ(metrics(b, i).window_failures, fails_in_window[i]);
        if (expect_trip[i]) {
            ASSERT_TR(tr, C, O);
            break;
        }
        ASSERT_NO_TR(tr);
    }
    ASSERT_EQ(prs_breaker_get_state(b), O);
    prs_breaker_free(b);
}

TEST(breaker_rate_minimum_above_window) {
    /* a count window of 3 with minimum_calls 10 uses 3 */
    prs_breaker *b = make_rate(PRS_BREAKER_WINDOW_COUNT, 3, 10, 1.0);
    ASSERT_NO_TR(call(b, 0, F));
    ASSERT_NO_TR(call(b, 0, F));
    ASSERT_TR(call(b, 0, F), C, O);
    prs_breaker_free(b);
}

TEST(breaker_rate_half_open_closes_clean) {
    prs_breaker *b = make_rate(PRS_BREAKER_WINDOW_COUNT, 4, 4, 0.5);
    for (int i = 0; i < 4; i++) call(b, 0, F);
    ASSERT_EQ(prs_breaker_get_state(b), O);
    prs_breaker_decision d = acquire(b, 10 * SEC);
    ASSERT_TR(d.transition, O, H);
    ASSERT_NO_TR(record(b, 10 * SEC, d.permit, S, 0));
    ASSERT_TR(call(b, 10 * SEC, S), H, C);
    prs_breaker_metrics m = metrics(b, 10 * SEC);
    ASSERT_EQ(m.window_calls, 0); /* the window starts clean */
    ASSERT_NEAR(m.failure_rate, 0.0, 0);
    ASSERT_NO_TR(call(b, 11 * SEC, F));
    prs_breaker_free(b);
}

/* ---- rate mode: time window ---------------------------------------------- */

TEST(breaker_rate_time_window) {
    prs_breaker *b = make_rate(PRS_BREAKER_WINDOW_TIME, 10, 10, 0.5);
    /* t = 0 s: 4 failures (below minimum); 5 successes over seconds 1..5 */
    for (int i = 0; i < 4; i++) ASSERT_NO_TR(call(b, 0, F));
    for (int s = 1; s <= 5; s++) ASSERT_NO_TR(call(b, s * SEC + 500 * MS, S));
    prs_breaker_metrics m = metrics(b, 5 * SEC);
    ASSERT_EQ(m.window_calls, 9);
    ASSERT_EQ(m.window_failures, 4);
    /* at 9.999 s second 0 is still in; at 10 s it rolls out */
    ASSERT_EQ(metrics(b, 10 * SEC - 1).window_failures, 4);
    m = metrics(b, 10 * SEC);
    ASSERT_EQ(m.window_failures, 0);
    ASSERT_EQ(m.window_calls, 5);
    /* two failures at 10.5 s: 2/7; two more: 4/9 (below minimum_calls); one more: 5/10 trips */
    ASSERT_NO_TR(call(b, 10 * SEC + 500 * MS, F));
    ASSERT_NO_TR(call(b, 10 * SEC + 500 * MS, F));
    ASSERT_NO_TR(call(b, 10 * SEC + 600 * MS, F));
    ASSERT_NO_TR(call(b, 10 * SEC + 600 * MS, F));
    ASSERT_NEAR(metrics(b, 10 * SEC + 600 * MS).failure_rate, 4.0 / 9.0, 1e-12);
    ASSERT_TR(call(b, 10 * SEC + 700 * MS, F), C, O);
    /* a whole window later everything has rolled out */
    ASSERT_EQ(metrics(b, 100 * SEC).window_calls, 0);
    prs_breaker_free(b);

    /* seconds rolled one at a time vs. a jump give the same window */
    b = make_rate(PRS_BREAKER_WINDOW_TIME, 3, 1000, 1.0);
    for (int64_t s = 0; s < 20; s++) {
        for (int64_t k = 0; k <= s % 4; k++) call(b, s * SEC + k, (k & 1) ? F : S);
        /* the window holds seconds s-2..s */
        int64_t want = 0, wantf = 0;
        for (int64_t q = s - 2; q <= s; q++) {
            if (q < 0) continue;
            want += q % 4 + 1;
            for (int64_t k = 0; k <= q % 4; k++) wantf += (k & 1);
        }
        prs_breaker_metrics mm = metrics(b, s * SEC + 10);
        ASSERT_EQ(mm.window_calls, want);
        ASSERT_EQ(mm.window_failures, wantf);
    }
    ASSERT_EQ(metrics(b, 21 * SEC).window_calls, 4); /* only second 19 left */
    ASSERT_EQ(metrics(b, 22 * SEC).window_calls, 0);
    prs_breaker_free(b);
}

TEST(breaker_time_window_negative_times) {
    prs_breaker *b = make_rate(PRS_BREAKER_WINDOW_TIME, 2, 1, 1.0);
    ASSERT_NO_TR(call(b, -5 * SEC - 1, S)); /* second -6 */
    ASSERT_EQ(metrics(b, -5 * SEC).window_calls, 1); /* second -5: -6 still in */
    ASSERT_EQ(metrics(b, -4 * SEC).window_calls, 0);
    prs_breaker_free(b);
}

TEST(breaker_clock_backwards) {
    prs_breaker *b = make_consecutive(1, 1, 10 * SEC);
    ASSERT_TR(call(b, 100 * SEC, F), C, O);
    /* an earlier time is taken as the latest seen: still 10 s to wait */
    prs_breaker_decision d = acquire(b, 50 * SEC);
    ASSERT(!d.allowed);
    ASSERT_EQ(d.retry_after_ns, 10 * SEC);
    ASSERT(acquire(b, 110 * SEC).allowed);
    prs_breaker_free(b);

    b = make_rate(PRS_BREAKER_WINDOW_TIME, 5, 100, 1.0);
    call(b, 100 * SEC, F);
    call(b, 3 * SEC, F); /* lands in second 100 */
    ASSERT_EQ(metrics(b, 104 * SEC).window_failures, 2);
    ASSERT_EQ(metrics(b, 105 * SEC).window_failures, 0);
    prs_breaker_free(b);
}

/* ---- slow calls -------------------------------------------------------------- */

TEST(breaker_slow_calls) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.slow_call_ns = SEC;
    cfg.slow_call_rate_threshold = 0.5;
    cfg.window_size = 4;
    cfg.minimum_calls = 4;
    cfg.open_timeout_ns = 10 * SEC;
    prs_breaker *b = make(&cfg);
    prs_breaker_decision d;
    /* fast, slow (exactly the limit), fast: 1/3, below minimum */
    d = acquire(b, 0); ASSERT_NO_TR(record(b, 0, d.permit, S, SEC - 1));
    d = acquire(b, 0); ASSERT_NO_TR(record(b, 0, d.permit, S, SEC));
    d = acquire(b, 0); ASSERT_NO_TR(record(b, 0, d.permit, S, 0));
    prs_breaker_metrics m = metrics(b, 0);
    ASSERT_EQ(m.slow_calls, 1);
    ASSERT_EQ(m.window_slow_calls, 1);
    ASSERT_EQ(m.failures, 0);
    /* a slow failure counts in both rates: 2/4 slow trips */
    d = acquire(b, 0);
    ASSERT_TR(record(b, 0, d.permit, F, 5 * SEC), C, O);
    m = metrics(b, 0);
    ASSERT_NEAR(m.slow_call_rate, 0.5, 0);
    ASSERT_NEAR(m.failure_rate, 0.0 + 0.25, 0);
    /* half-open: a slow trial counts as a failure */
    d = acquire(b, 10 * SEC);
    ASSERT_TR(d.transition, O, H);
    ASSERT_TR(record(b, 10 * SEC, d.permit, S, 2 * SEC), H, O);
    /* fast trials close */
    d = acquire(b, 20 * SEC);
    ASSERT_NO_TR(record(b, 20 * SEC, d.permit, S, 1));
    d = acquire(b, 20 * SEC);
    ASSERT_TR(record(b, 20 * SEC, d.permit, S, 1), H, C);
    /* ignored calls are never slow */
    d = acquire(b, 21 * SEC);
    ASSERT_NO_TR(record(b, 21 * SEC, d.permit, I, 100 * SEC));
    ASSERT_EQ(metrics(b, 21 * SEC).slow_calls, 3);
    prs_breaker_free(b);
}

TEST(breaker_slow_calls_counted_in_consecutive_mode) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.slow_call_ns = 100 * MS;
    cfg.failure_threshold = 2;
    prs_breaker *b = make(&cfg);
    for (int i = 0; i < 10; i++) {
        prs_breaker_decision d = acquire(b, i);
        ASSERT_NO_TR(record(b, i, d.permit, S, SEC)); /* slow successes never trip */
    }
    prs_breaker_metrics m = metrics(b, 10);
    ASSERT_EQ(m.slow_calls, 10);
    ASSERT_NEAR(m.slow_call_rate, 1.0, 0);
    ASSERT_EQ(m.state, C);
    prs_breaker_free(b);
}

TEST(breaker_failure_and_slow_thresholds_together) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = 0.5;
    cfg.slow_call_rate_threshold = 1.0;
    cfg.slow_call_ns = SEC;
    cfg.window_size = 2;
    cfg.minimum_calls = 2;
    prs_breaker *b = make(&cfg);
    prs_breaker_decision d = acquire(b, 0);
    ASSERT_NO_TR(record(b, 0, d.permit, S, SEC));
    d = acquire(b, 0);
    ASSERT_TR(record(b, 0, d.permit, S, SEC), C, O); /* 2/2 slow */
    prs_breaker_close(b, 0, NULL);
    ASSERT_NO_TR(call(b, 0, S));
    ASSERT_TR(call(b, 0, F), C, O); /* 1/2 failed */
    prs_breaker_free(b);
}

/* ---- manual states -------------------------------------------------------------- */

TEST(breaker_manual_states) {
    prs_breaker *b = make_consecutive(2, 1, 10 * SEC);
    prs_breaker_transition tr;
    call(b, 0, F);
    ASSERT_EQ(metrics(b, 0).consecutive_failures, 1);

    prs_breaker_open(b, SEC, &tr);
    ASSERT_TR(tr, C, O);
    ASSERT_EQ(prs_breaker_get_mode(b), PRS_BREAKER_NORMAL);
    ASSERT(!acquire(b, 5 * SEC).allowed);
    prs_breaker_open(b, 5 * SEC, &tr); /* again: restarts the timer, no transition */
    ASSERT_NO_TR(tr);
    ASSERT_EQ(acquire(b, 5 * SEC).retry_after_ns, 10 * SEC);
    ASSERT_TR(acquire(b, 15 * SEC).transition, O, H); /* the timeout runs as usual */

    prs_breaker_close(b, 16 * SEC, &tr);
    ASSERT_TR(tr, H, C);
    ASSERT_EQ(metrics(b, 16 * SEC).consecutive_failures, 0);
    prs_breaker_close(b, 16 * SEC, &tr);
    ASSERT_NO_TR(tr);

    prs_breaker_half_open(b, 17 * SEC, &tr);
    ASSERT_TR(tr, C, H);
    ASSERT_TR(call(b, 17 * SEC, S), H, C);

    prs_breaker_force_open(b, 18 * SEC, &tr);
    ASSERT_TR(tr, C, O);
    ASSERT_EQ(prs_breaker_get_mode(b), PRS_BREAKER_FORCED_OPEN);
    prs_breaker_decision d = acquire(b, 1000 * SEC); /* never times out */
    ASSERT(!d.allowed);
    ASSERT_EQ_I64(d.retry_after_ns, PRS_NEVER);
    ASSERT_EQ_I64(metrics(b, 1000 * SEC).retry_after_ns, PRS_NEVER);

    prs_breaker_disable(b, 1001 * SEC, &tr);
    ASSERT_TR(tr, O, C);
    ASSERT_EQ(prs_breaker_get_mode(b), PRS_BREAKER_DISABLED);
    for (int i = 0; i < 10; i++) ASSERT_NO_TR(call(b, 1001 * SEC, F)); /* counts, never trips */
    prs_breaker_metrics m = metrics(b, 1001 * SEC);
    ASSERT_EQ(m.consecutive_failures, 10);
    ASSERT_EQ(m.state, C);
    ASSERT_EQ(m.mode, PRS_BREAKER_DISABLED);
    ASSERT_GT_I64(m.calls, 10);
    ASSERT_EQ(m.rejected, 3);

    prs_breaker_reset(b, 1002 * SEC, &tr);
    ASSERT_NO_TR(tr); /* closed already */
    m = metrics(b, 1002 * SEC);
    ASSERT_EQ(m.mode, PRS_BREAKER_NORMAL);
    ASSERT_EQ(m.calls, 0);
    ASSERT_EQ(m.failures, 0);
    ASSERT_EQ(m.rejected, 0);
    ASSERT_EQ(m.consecutive_failures, 0);
    ASSERT_EQ(m.window_calls, 0);
    call(b, 1003 * SEC, F);
    ASSERT_TR(call(b, 1003 * SEC, F), C, O); /* back to normal operation */
    prs_breaker_reset(b, 1004 * SEC, &tr);
    ASSERT_TR(tr, O, C);
    prs_breaker_free(b);
}

TEST(breaker_disable_from_closed_keeps_counts) {
    prs_breaker *b = make_rate(PRS_BREAKER_WINDOW_COUNT, 10, 1, 1.0);
    call(b, 0, S);
    prs_breaker_transition tr;
    prs_breaker_disable(b, 0, &tr);
    ASSERT_NO_TR(tr);
    call(b, 0, F);
    call(b, 0, F);
    prs_breaker_metrics m = metrics(b, 0);
    ASSERT_EQ(m.window_calls, 3);
    ASSERT_EQ(m.state, C);
    prs_breaker_close(b, 0, &tr); /* back to normal, clean window */
    ASSERT_NO_TR(tr);
    ASSERT_EQ(prs_breaker_get_mode(b), PRS_BREAKER_NORMAL);
    ASSERT_TR(call(b, 0, F), C, O);
    prs_breaker_free(b);
}

TEST(breaker_get_config) {
    prs_breaker_config cfg, got;
    prs_breaker_config_init(&cfg);
    cfg.window_type = PRS_BREAKER_WINDOW_TIME;
    cfg.window_size = 60;
    cfg.failure_rate_threshold = 0.25;
    prs_breaker *b = make(&cfg);
    prs_breaker_get_config(b, &got);
    ASSERT_EQ(got.window_type, PRS_BREAKER_WINDOW_TIME);
    ASSERT_EQ(got.window_size, 60);
    ASSERT_NEAR(got.failure_rate_threshold, 0.25, 0);
    ASSERT(got.allocator == NULL);
    prs_breaker_free(b);
}

/* ---- allocation failure ----------------------------------------------------- */

static int make_count(const prs_allocator *a, void **obj) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.allocator = a;
    return prs_breaker_new(&cfg, (prs_breaker **)obj);
}
static int make_time(const prs_allocator *a, void **obj) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.window_type = PRS_BREAKER_WINDOW_TIME;
    cfg.window_size = 60;
    cfg.allocator = a;
    return prs_breaker_new(&cfg, (prs_breaker **)obj);
}
static void destroy(void *obj) {
    prs_breaker *b = obj;
    call(b, 0, F); /* usable */
    prs_breaker_free(b);
}

TEST(breaker_alloc_failure) {
    prs_test_alloc_failures(make_count, destroy);
    prs_test_alloc_failures(make_time, destroy);
}

/* ---- threads ------------------------------------------------------------------ */

#define CROWD 64

typedef struct {
    prs_breaker *b;
    pthread_barrier_t *bar;
    int64_t now;
    atomic_int *admitted;
    atomic_int *transitions;
    prs_breaker_permit permit;
    int allowed;
} crowd_arg;

static void *crowd_main(void *p) {
    crowd_arg *a = p;
    pthread_barrier_wait(a->bar);
    prs_breaker_decision d;
    if (prs_breaker_acquire(a->b, a->now, &d) != PRS_OK) abort();
    a->allowed = d.allowed;
    a->permit = d.permit;
    if (d.allowed) atomic_fetch_add(a->admitted, 1);
    if (d.transition.happened) atomic_fetch_add(a->transitions, 1);
    return NULL;
}

TEST(breaker_threads_half_open_crowd) {
    for (int64_t max = 1; max <= 5; max += 2) {
        for (int round = 0; round < 5; round++) {
            prs_breaker_config cfg;
            prs_breaker_config_init(&cfg);
            cfg.failure_threshold = 1;
            cfg.success_threshold = 1;
            cfg.half_open_max_calls = max;
            cfg.open_timeout_ns = SEC;
            prs_breaker *b = make(&cfg);
            ASSERT_TR(call(b, 0, F), C, O);
            pthread_barrier_t bar;
            pthread_barrier_init(&bar, NULL, CROWD);
            atomic_int admitted = 0, transitions = 0;
            pthread_t th[CROWD];
            crowd_arg args[CROWD];
            for (int i = 0; i < CROWD; i++) {
                args[i] = (crowd_arg){b, &bar, SEC + i, &admitted, &transitions, 0, 0};
                ASSERT_EQ(pthread_create(&th[i], NULL, crowd_main, &args[i]), 0);
            }
            for (int i = 0; i < CROWD; i++) pthread_join(th[i], NULL);
            pthread_barrier_destroy(&bar);
            ASSERT_EQ(atomic_load(&admitted), max);
            ASSERT_EQ(atomic_load(&transitions), 1); /* exactly one OPEN -> HALF_OPEN */
            prs_breaker_metrics m = metrics(b, 2 * SEC);
            ASSERT_EQ(m.half_open_in_flight, max);
            ASSERT_EQ(m.rejected, CROWD - max);
            /* the admitted trials finish: the first success closes */
            int closed = 0;
            for (int i = 0; i < CROWD; i++) {
                if (!args[i].allowed) continue;
                prs_breaker_transition tr = record(b, 2 * SEC, args[i].permit, S, 0);
                closed += tr.happened;
            }
            ASSERT_EQ(closed, 1);
            ASSERT_EQ(prs_breaker_get_state(b), C);
            prs_breaker_free(b);
        }
    }
}

#define RECORDERS 8
#define PER_THREAD 100000

typedef struct {
    prs_breaker *b;
    int id;
    atomic_int *opened;
} rec_arg;

static void *recorder_main(void *p) {
    rec_arg *a = p;
    for (int i = 0; i < PER_THREAD; i++) {
        prs_breaker_decision d;
        int64_t now = (int64_t)i * MS;
        if (prs_breaker_acquire(a->b, now, &d) != PRS_OK) abort();
        int outcome = (i % 7 == 0) ? F : (i % 11 == 0) ? I : S;
        prs_breaker_transition tr;
        if (prs_breaker_record(a->b, now, d.allowed ? d.permit : PRS_BREAKER_NO_PERMIT,
                               (prs_breaker_outcome)outcome, (i % 5 == 0) ? SEC : 0, &tr) != PRS_OK)
            abort();
        if (tr.happened) atomic_fetch_add(a->opened, 1);
    }
    return NULL;
}

static void run_recorders(prs_breaker *b, atomic_int *opened) {
    pthread_t th[RECORDERS];
    rec_arg args[RECORDERS];
    for (int i = 0; i < RECORDERS; i++) {
        args[i] = (rec_arg){b, i, opened};
        ASSERT_EQ(pthread_create(&th[i], NULL, recorder_main, &args[i]), 0);
    }
    for (int i = 0; i < RECORDERS; i++) pthread_join(th[i], NULL);
}

TEST(breaker_threads_exact_counts) {
    int64_t fails = 0, ignored = 0, slow = 0, calls = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        int outcome = (i % 7 == 0) ? F : (i % 11 == 0) ? I : S;
        if (outcome == I) { ignored++; continue; }
        calls++;
        fails += outcome == F;
        slow += i % 5 == 0;
    }
    /* consecutive mode that never trips, and a time-window rate mode that never trips */
    for (int kind = 0; kind < 2; kind++) {
        prs_breaker_config cfg;
        prs_breaker_config_init(&cfg);
        cfg.slow_call_ns = SEC;
        cfg.failure_threshold = INT64_MAX;
        if (kind == 1) {
            cfg.failure_rate_threshold = 1.0;
            cfg.window_type = PRS_BREAKER_WINDOW_TIME;
            cfg.window_size = 3600;
        }
        prs_breaker *b = make(&cfg);
        atomic_int opened = 0;
        run_recorders(b, &opened);
        prs_breaker_metrics m = metrics(b, 0);
        ASSERT_EQ(atomic_load(&opened), 0);
        ASSERT_EQ(m.calls, RECORDERS * calls);
        ASSERT_EQ(m.failures, RECORDERS * fails);
        ASSERT_EQ(m.ignored, RECORDERS * ignored);
        ASSERT_EQ(m.slow_calls, RECORDERS * slow);
        ASSERT_EQ(m.rejected, 0);
        if (kind == 1) { /* 100 s of calls all inside the hour */
            ASSERT_EQ(m.window_calls, RECORDERS * calls);
            ASSERT_EQ(m.window_failures, RECORDERS * fails);
        }
        prs_breaker_free(b);
    }
    /* a breaker that trips and recovers all the time keeps its invariants */
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 3;
    cfg.success_threshold = 2;
    cfg.open_timeout_ns = 10 * MS;
    prs_breaker *b = make(&cfg);
    atomic_int transitions = 0;
    run_recorders(b, &transitions);
    prs_breaker_metrics m = metrics(b, PER_THREAD * MS);
    ASSERT_EQ(m.calls + m.ignored, (int64_t)RECORDERS * PER_THREAD);
    ASSERT_GE_I64(m.half_open_in_flight, 0);
    ASSERT_LE_I64(m.half_open_in_flight, 2);
    prs_breaker_free(b);
}

/* Threads in HALF_OPEN mixing tracked trials (permits), untracked trials and
 * stray outcomes. A stray never frees a tracked trial's slot, so the tracked
 * trials running at once never exceed half_open_max_calls (an untracked trial's
 * slot may be taken by a stray: outcomes without a permit are matched by count,
 * they carry no identity), and the counts end exact: nothing in flight. */
#define MIXERS 6
#define MIX_ROUNDS 20000
#define MIX_MAX 2

typedef struct {
    prs_breaker *b;
    int id;
    atomic_int *running;
    atomic_int *over;
} mix_arg;

static void *mixer_main(void *p) {
    mix_arg *a = p;
    for (int i = 0; i < MIX_ROUNDS; i++) {
        int kind = (i + a->id) % 3;
        int outcome = (i % 5 == 0) ? I : S;
        prs_breaker_decision d;
        if (kind == 2) { /* a stray: no admission */
            if (prs_breaker_record(a->b, 0, PRS_BREAKER_NO_PERMIT, (prs_breaker_outcome)outcome, 0,
                                   NULL) != PRS_OK)
                abort();
            continue;
        }
        int rc = kind == 0 ? prs_breaker_acquire(a->b, 0, &d) : prs_breaker_acquire_untracked(a->b, 0, &d);
        if (rc != PRS_OK) abort();
        if (!d.allowed) continue;
        if (kind == 0) {
            if (atomic_fetch_add(a->running, 1) + 1 > MIX_MAX) atomic_fetch_add(a->over, 1);
            atomic_fetch_sub(a->running, 1);
        }
        if (prs_breaker_record(a->b, 0, d.permit, (prs_breaker_outcome)outcome, 0, NULL) != PRS_OK)
            abort();
    }
    return NULL;
}

TEST(breaker_threads_stray_records_half_open) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.success_threshold = INT64_MAX; /* stays half-open */
    cfg.half_open_max_calls = MIX_MAX;
    prs_breaker *b = make(&cfg);
    prs_breaker_half_open(b, 0, NULL);
    atomic_int running = 0, over = 0;
    pthread_t th[MIXERS];
    mix_arg args[MIXERS];
    for (int i = 0; i < MIXERS; i++) {
        args[i] = (mix_arg){b, i, &running, &over};
        ASSERT_EQ(pthread_create(&th[i], NULL, mixer_main, &args[i]), 0);
    }
    for (int i = 0; i < MIXERS; i++) pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&over), 0);
    prs_breaker_metrics m = metrics(b, 0);
    ASSERT_EQ(m.state, H);
    ASSERT_EQ(m.half_open_in_flight, 0);
    ASSERT_EQ(m.half_open_untracked, 0);
    prs_breaker_free(b);
}

/* ---- the binding's fast path ---------------------------------------------------- */

TEST(breaker_fast_path_helpers) {
    prs_breaker *b = make_consecutive(2, 1, 10 * SEC);
    prs_breaker_permit p = 12345;
    ASSERT_EQ(prs_breaker_try_acquire_closed(b, &p), 1);
    ASSERT(p != 12345 && (p & 1u) == 0);
    ASSERT_EQ(prs_breaker_outcome_needs_time(b, PRS_BREAKER_SUCCESS), 0);
    ASSERT_EQ(prs_breaker_outcome_needs_time(b, PRS_BREAKER_IGNORED), 0);
    ASSERT_EQ(prs_breaker_outcome_needs_time(b, PRS_BREAKER_FAILURE), 1);
    /* a success without a time keeps the breaker exact */
    ASSERT_NO_TR(record(b, INT64_MIN, p, S, 0));
    call(b, 5 * SEC, F);
    ASSERT_TR(call(b, 5 * SEC, F), C, O);
    ASSERT_EQ(prs_breaker_try_acquire_closed(b, &p), 0);
    prs_breaker_decision d = acquire(b, 15 * SEC);
    ASSERT(d.allowed);
    ASSERT_TR(record(b, INT64_MIN, d.permit, S, 0), H, C);
    ASSERT_EQ(metrics(b, INT64_MIN).retry_after_ns, 0);
    prs_breaker_free(b);

    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = 0.5;
    b = make(&cfg);
    ASSERT_EQ(prs_breaker_outcome_needs_time(b, PRS_BREAKER_SUCCESS), 1);
    prs_breaker_free(b);
    prs_breaker_config_init(&cfg);
    cfg.window_type = PRS_BREAKER_WINDOW_TIME;
    b = make(&cfg);
    ASSERT_EQ(prs_breaker_outcome_needs_time(b, PRS_BREAKER_SUCCESS), 1);
    prs_breaker_free(b);
}

/* ---- the clean fast path (successes counted without the lock) -------------- */

/* Once the count window is full of plain successes, successes are counted in
 * striped counters; every reading and every change after them must see them
 * exactly as if each had taken the lock. */
TEST(breaker_clean_fast_path_counts_exactly) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_threshold = 3;
    cfg.window_size = 4;
    cfg.slow_call_ns = SEC;
    prs_breaker *b = make(&cfg);
    for (int i = 0; i < 10; i++) ASSERT_NO_TR(call(b, i, S));
    prs_breaker_metrics m = metrics(b, 10);
    ASSERT_EQ(m.calls, 10);
    ASSERT_EQ(m.consecutive_successes, 10);
    ASSERT_EQ(m.window_calls, 4);
    ASSERT_EQ(m.window_failures, 0);
    /* a slow success leaves the clean path: counted in the window */
    ASSERT_NO_TR(record(b, 11, PRS_BREAKER_NO_PERMIT, S, SEC));
    m = metrics(b, 11);
    ASSERT_EQ(m.calls, 11);
    ASSERT_EQ(m.slow_calls, 1);
    ASSERT_EQ(m.window_slow_calls, 1);
    ASSERT_EQ(m.consecutive_successes, 11);
    /* four plain successes push the slow one out: clean again */
    for (int i = 0; i < 6; i++) ASSERT_NO_TR(call(b, 12, S));
    m = metrics(b, 12);
    ASSERT_EQ(m.calls, 17);
    ASSERT_EQ(m.window_slow_calls, 0);
    ASSERT_EQ(m.consecutive_successes, 17);
    /* a failure resets the run of successes and counts everything before it */
    ASSERT_NO_TR(call(b, 13, F));
    m = metrics(b, 13);
    ASSERT_EQ(m.calls, 18);
    ASSERT_EQ(m.failures, 1);
    ASSERT_EQ(m.consecutive_successes, 0);
    ASSERT_EQ(m.consecutive_failures, 1);
    ASSERT_EQ(m.window_failures, 1);
    ASSERT_NO_TR(call(b, 14, S));
    ASSERT_NO_TR(call(b, 15, F));
    ASSERT_NO_TR(call(b, 16, F));
    ASSERT_TR(call(b, 17, F), C, O);
    /* stale permits of the closed epoch count in the totals only */
    m = metrics(b, 17);
    ASSERT_EQ(m.calls, 22);
    prs_breaker_close(b, 18, NULL);
    for (int i = 0; i < 8; i++) ASSERT_NO_TR(call(b, 19, S));
    ASSERT_EQ(metrics(b, 19).consecutive_successes, 8);
    /* reset clears what the fast path counted too */
    prs_breaker_reset(b, 20, NULL);
    m = metrics(b, 20);
    ASSERT_EQ(m.calls, 0);
    ASSERT_EQ(m.consecutive_successes, 0);
    ASSERT_EQ(m.window_calls, 0);
    /* a permit from before a transition is stale even while clean */
    prs_breaker_permit old;
    ASSERT_EQ(prs_breaker_try_acquire_closed(b, &old), 1);
    for (int i = 0; i < 8; i++) ASSERT_NO_TR(call(b, 21, S));
    prs_breaker_open(b, 22, NULL);
    prs_breaker_close(b, 23, NULL);
    for (int i = 0; i < 8; i++) ASSERT_NO_TR(call(b, 24, S));
    ASSERT_NO_TR(record(b, 25, old, F, 0));
    m = metrics(b, 25);
    ASSERT_EQ(m.consecutive_failures, 0); /* stale: not a failure of this epoch */
    ASSERT_EQ(m.consecutive_successes, 8);
    ASSERT_EQ(m.calls, 17);
    prs_breaker_free(b);
}

/* Failure-rate mode: the window that trips is the same as without the fast
 * path (a window of 4, minimum 4, 50%: two failures after a clean run). */
TEST(breaker_clean_fast_path_rate_window) {
    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    cfg.failure_rate_threshold = 0.5;
    cfg.window_size = 4;
    cfg.minimum_calls = 4;
    prs_breaker *b = make(&cfg);
    for (int i = 0; i < 20; i++) ASSERT_NO_TR(call(b, i, S));
    ASSERT_NO_TR(call(b, 20, F));
    ASSERT_EQ(metrics(b, 20).failure_rate, 0.25);
    ASSERT_TR(call(b, 21, F), C, O);
    ASSERT_EQ(metrics(b, 21).calls, 22);
    prs_breaker_free(b);
}

/* Threads recording successes on the clean path while one of them records
 * failures (which leave it and fold the stripes): every outcome counted
 * once, the window consistent, and the run of successes exact afterwards. */
#define CLEAN_THREADS 8
#define CLEAN_PER_THREAD 50000
#define CLEAN_FAIL_EVERY 997

typedef struct {
    prs_breaker *b;
    int id;
    int64_t fails;
} clean_arg;

static void *clean_main(void *p) {
    clean_arg *a = p;
    for (int i = 0; i < CLEAN_PER_THREAD; i++) {
        prs_breaker_permit permit;
        if (!prs_breaker_try_acquire_closed(a->b, &permit)) abort();
        int fail = a->id == 0 && i % CLEAN_FAIL_EVERY == 0;
        if (prs_breaker_record(a->b, fail ? i : INT64_MIN, permit,
                               fail ? PRS_BREAKER_FAILURE : PRS_BREAKER_SUCCESS, 0, NULL) != PRS_OK)
            abort();
        a->fails += fail;
    }
    return NULL;
}

TEST(breaker_threads_clean_fast_path_exact) {
    for (int kind = 0; kind < 2; kind++) {
        prs_breaker_config cfg;
        prs_breaker_config_init(&cfg);
        cfg.window_size = 16;
        cfg.failure_threshold = INT64_MAX;
        if (kind == 1) { /* rate mode: one failure per 997 of one thread never reaches 90% */
            cfg.failure_rate_threshold = 0.9;
            cfg.minimum_calls = 16;
        }
        prs_breaker *b = make(&cfg);
        pthread_t th[CLEAN_THREADS];
        clean_arg args[CLEAN_THREADS];
        for (int i = 0; i < CLEAN_THREADS; i++) {
            args[i] = (clean_arg){b, i, 0};
            ASSERT_EQ(pthread_create(&th[i], NULL, clean_main, &args[i]), 0);
        }
        for (int i = 0; i < CLEAN_THREADS; i++) pthread_join(th[i], NULL);
        int64_t fails = args[0].fails;
        prs_breaker_metrics m = metrics(b, 0);
        ASSERT_EQ(m.state, C);
        ASSERT_EQ(m.calls, (int64_t)CLEAN_THREADS * CLEAN_PER_THREAD);
        ASSERT_EQ(m.failures, fails);
        ASSERT_EQ(m.window_calls, 16);
        ASSERT_LE_I64(m.consecutive_successes, m.calls);
        /* afterwards, alone: a failure, then 40 successes, counted exactly */
        ASSERT_NO_TR(call(b, 1, F));
        for (int i = 0; i < 40; i++) ASSERT_NO_TR(call(b, 1, S));
        m = metrics(b, 1);
        ASSERT_EQ(m.calls, (int64_t)CLEAN_THREADS * CLEAN_PER_THREAD + 41);
        ASSERT_EQ(m.failures, fails + 1);
        ASSERT_EQ(m.consecutive_successes, 40);
        ASSERT_EQ(m.consecutive_failures, 0);
        ASSERT_EQ(m.window_failures, 0);
        prs_breaker_free(b);
    }
}
