/*
 * prs_breaker.h - a circuit breaker: closed / open / half-open.
 *
 * CLOSED lets calls through and watches their outcomes. It opens either after
 * `failure_threshold` consecutive failures (consecutive mode, the default), or,
 * in rate mode (a failure or slow-call rate threshold is set), when a sliding
 * window holding at least `minimum_calls` outcomes shows a failure rate or a
 * slow-call rate at or above its threshold. OPEN rejects every call until
 * `open_timeout_ns` has passed since it opened; the next admission request then
 * moves it to HALF_OPEN, which admits at most `half_open_max_calls` trial calls
 * at once: `success_threshold` successes close it, any failure re-opens it
 * (and so does a slow trial call when a slow-call rate threshold is set).
 *
 * Permits. Every admitted call gets a permit (an opaque 64-bit token) that its
 * outcome is recorded with. A permit carries the breaker's epoch, which every
 * transition bumps: an outcome of a call admitted before a transition counts in
 * the totals but never drives the new state (a slow call admitted while CLOSED
 * cannot close a HALF_OPEN breaker or free a trial slot it never took).
 * PRS_BREAKER_NO_PERMIT records an outcome without a permit (custom
 * integrations that carry nothing from admission to outcome). Such callers are
 * admitted with prs_breaker_acquire_untracked(), which counts the HALF_OPEN
 * trial slots they take. An outcome without a permit counts for the state in
 * CLOSED; in HALF_OPEN it is the outcome of an untracked trial when one is
 * outstanding (it frees that slot: outcomes are matched by count, not by
 * identity), else a stray, counted in the totals only: it never frees a slot
 * it does not hold (another caller's trial) and never moves the state; in
 * OPEN it only counts in the totals.
 *
 * Transitions are decisions reported to the caller (prs_breaker_transition), so
 * a binding can notify listeners after the call, with no lock held. Every call
 * reports at most one transition.
 *
 * Manual states: open() (opens now; the timeout runs as usual), close(),
 * half_open(), reset() (closed, all counters cleared), force_open() (open,
 * never times out, until another manual state call) and disable() (always
 * admits, still counts, never transitions on outcomes).
 *
 * Thread-safe. A CLOSED (or disabled) breaker admits with one atomic load.
 */
#ifndef PRS_BREAKER_H
#define PRS_BREAKER_H

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_breaker prs_breaker;

typedef enum prs_breaker_state {
    PRS_BREAKER_CLOSED = 0,
    PRS_BREAKER_OPEN = 1,
    PRS_BREAKER_HALF_OPEN = 2
} prs_breaker_state;

typedef enum prs_breaker_mode {
    PRS_BREAKER_NORMAL = 0,      /* the state machine runs */
    PRS_BREAKER_FORCED_OPEN = 1, /* OPEN until a manual state call; never times out */
    PRS_BREAKER_DISABLED = 2     /* reported CLOSED; admits everything; counts; never trips */
} prs_breaker_mode;

typedef enum prs_breaker_window {
    PRS_BREAKER_WINDOW_COUNT = 0, /* the last window_size recorded outcomes */
    PRS_BREAKER_WINDOW_TIME = 1   /* the last window_size seconds, per-second buckets */
} prs_breaker_window;

typedef enum prs_breaker_outcome {
    PRS_BREAKER_SUCCESS = 0,
    PRS_BREAKER_FAILURE = 1,
    PRS_BREAKER_IGNORED = 2 /* counts as neither; frees a half-open trial slot */
} prs_breaker_outcome;

#define PRS_BREAKER_MAX_COUNT_WINDOW INT64_C(16777216) /* outcomes */
#define PRS_BREAKER_MAX_TIME_WINDOW  INT64_C(86400)    /* seconds */

typedef struct prs_breaker_config {
    int64_t failure_threshold;       /* >= 1; consecutive mode */
    int64_t success_threshold;       /* >= 1; half-open successes that close */
    int64_t open_timeout_ns;         /* >= 0; PRS_NEVER: only a manual call leaves OPEN */
    int64_t half_open_max_calls;     /* >= 0; 0: success_threshold */
    double failure_rate_threshold;   /* 0: off; else (0, 1]: rate mode */
    double slow_call_rate_threshold; /* 0: off; else (0, 1]: rate mode; needs slow_call_ns */
    int64_t slow_call_ns;            /* 0: no call is slow; else > 0: a call lasting
                                        at least this long is slow */
    int window_type;                 /* prs_breaker_window */
    int64_t window_size;             /* >= 1; <= PRS_BREAKER_MAX_{COUNT,TIME}_WINDOW */
    int64_t minimum_calls;           /* >= 1; a count window uses min(this, window_size) */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_breaker_config;

/* An admission's permit; pass it back to prs_breaker_record(). */
typedef uint64_t prs_breaker_permit;
#define PRS_BREAKER_NO_PERMIT UINT64_MAX

typedef struct prs_breaker_transition {
    int happened;           /* 1 when this call changed the state */
    prs_breaker_state from; /* valid when happened */
    prs_breaker_state to;
} prs_breaker_transition;

typedef struct prs_breaker_decision {
    int allowed;                       /* 1 admitted, 0 rejected */
    prs_breaker_permit permit;         /* when allowed */
    int64_t retry_after_ns;            /* when rejected: until a trial call may be
                                          admitted (0 when half-open is full: as soon as
                                          a trial ends; PRS_NEVER when forced open) */
    prs_breaker_transition transition; /* OPEN -> HALF_OPEN happens here */
} prs_breaker_decision;

typedef struct prs_breaker_metrics {
    prs_breaker_state state;
    prs_breaker_mode mode;
    int64_t consecutive_failures;   /* CLOSED: since the last success */
    int64_t consecutive_successes;  /* CLOSED: since the last failure; HALF_OPEN: trials */
    int64_t calls;                  /* recorded successes + failures (totals since
                                       creation or reset) */
    int64_t failures;
    int64_t slow_calls;
    int64_t rejected;
    int64_t ignored;
    int64_t window_calls;           /* over the current window */
    int64_t window_failures;
    int64_t window_slow_calls;
    double failure_rate;            /* window_failures / window_calls (0 when empty) */
    double slow_call_rate;
    int64_t retry_after_ns;         /* OPEN: until half-open (PRS_NEVER when forced);
                                       else 0 */
    int64_t half_open_in_flight;    /* trial calls running */
    int64_t half_open_untracked;    /* of which admitted by acquire_untracked() */
} prs_breaker_metrics;

/* Defaults: the reference design - failure_threshold 5, success_threshold 2,
 * timeout 30 s, consecutive mode, a count window of 100, minimum_calls 10. */
void prs_breaker_config_init(prs_breaker_config *cfg);
/* PRS_OK, PRS_EINVAL (a value outside its range, NaN, a slow-call rate without
 * slow_call_ns, unknown window type) or PRS_ERANGE (window_size too large). */
int prs_breaker_config_validate(const prs_breaker_config *cfg);
/* The same, telling in *why (when not NULL) which field failed and why. */
int prs_breaker_config_check(const prs_breaker_config *cfg, prs_config_error *why);

/* A CLOSED breaker in *out; on error *out is NULL and nothing is allocated. */
int prs_breaker_new(const prs_breaker_config *cfg, prs_breaker **out);
void prs_breaker_free(prs_breaker *b); /* NULL-safe */

/* Asks to run one call at now_ns. Never fails on a valid breaker (PRS_EINVAL
 * for NULL arguments). A rejection counts in `rejected`. */
int prs_breaker_acquire(prs_breaker *b, int64_t now_ns, prs_breaker_decision *d);

/* As prs_breaker_acquire(), for a caller that will record the outcome with
 * PRS_BREAKER_NO_PERMIT: d->permit is PRS_BREAKER_NO_PERMIT even when allowed,
 * and a HALF_OPEN trial slot taken so is counted as untracked, to be freed by
 * an outcome recorded without a permit. */
int prs_breaker_acquire_untracked(prs_breaker *b, int64_t now_ns, prs_breaker_decision *d);

/* The fast path alone: when the breaker is CLOSED (or disabled), stores a permit
 * in *permit and returns 1 without reading any time; else returns 0 and the
 * caller reads its clock and calls prs_breaker_acquire(). */
int prs_breaker_try_acquire_closed(const prs_breaker *b, prs_breaker_permit *permit);

/* 1 when recording `outcome` may depend on now_ns; 0 when it never does
 * (successes and ignored outcomes in consecutive mode with a count window), so
 * a caller may pass any now_ns (e.g. INT64_MIN, which is taken as the latest
 * time seen) and skip reading its clock. */
int prs_breaker_outcome_needs_time(const prs_breaker *b, prs_breaker_outcome outcome);

/* Records the outcome of a call admitted with `permit` (or
 * PRS_BREAKER_NO_PERMIT: see "Permits" above), that lasted duration_ns (slow-call detection; < 0 is
 * taken as 0). `tr` (may be NULL) tells the transition it caused. PRS_EINVAL for
 * NULL b or an unknown outcome. */
int prs_breaker_record(prs_breaker *b, int64_t now_ns, prs_breaker_permit permit,
                       prs_breaker_outcome outcome, int64_t duration_ns,
                       prs_breaker_transition *tr);

/* Manual states; `tr` (may be NULL) tells the transition. Each invalidates the
 * permits given so far. reset() also clears the totals. */
void prs_breaker_open(prs_breaker *b, int64_t now_ns, prs_breaker_transition *tr);
void prs_breaker_close(prs_breaker *b, int64_t now_ns, prs_breaker_transition *tr);
void prs_breaker_half_open(prs_breaker *b, int64_t now_ns, prs_breaker_transition *tr);
void prs_breaker_reset(prs_breaker *b, int64_t now_ns, prs_breaker_transition *tr);
void prs_breaker_force_open(prs_breaker *b, int64_t now_ns, prs_breaker_transition *tr);
void prs_breaker_disable(prs_breaker *b, int64_t now_ns, prs_breaker_transition *tr);

/* The current state (one atomic load; OPEN stays OPEN past its timeout until the
 * next acquire moves it to HALF_OPEN). */
prs_breaker_state prs_breaker_get_state(const prs_breaker *b);
prs_breaker_mode prs_breaker_get_mode(const prs_breaker *b);
/* A consistent snapshot at now_ns (a time window is rolled to now_ns). */
void prs_breaker_get_metrics(prs_breaker *b, int64_t now_ns, prs_breaker_metrics *m);
/* The configuration it was made with (allocator NULL). */
void prs_breaker_get_config(const prs_breaker *b, prs_breaker_config *cfg);

/* "closed", "open", "half_open" ("unknown" otherwise). */
const char *prs_breaker_state_name(int state);
/* "normal", "forced_open", "disabled"; "unknown" for any other value. */
const char *prs_breaker_mode_name(int mode);

#ifdef __cplusplus
}
#endif
#endif /* PRS_BREAKER_H */
