/*
 * prs_bulkhead.h - a bulkhead: a pool of `max_concurrent` permits with a FIFO
 * queue of waiters. A permit freed while someone waits is handed to the oldest
 * waiter directly, so waiters are served first come, first served and a caller
 * arriving later never overtakes them.
 *
 * The core never blocks except in prs_bulkhead_wait()/prs_bulkhead_acquire_blocking()
 * (for C users and for bindings that have released their interpreter lock):
 *
 *   prs_bulkhead_try_acquire()   take a permit now, or not
 *   prs_bulkhead_acquire()       take a permit now, or enqueue a caller-owned waiter
 *   prs_bulkhead_wait()          block until the waiter is served or a deadline
 *   prs_bulkhead_finish()        settle a waiter: keep the permit it was handed,
 *                                or leave the queue / give the permit back
 *   prs_bulkhead_release()       give a permit back (to the oldest waiter if any)
 *
 * Waiters are intrusive (the caller embeds a prs_bulkhead_waiter) so waiting
 * allocates nothing. A BLOCKING waiter owns a condition variable that the
 * serving thread signals; a NOTIFY waiter (an event-loop future, say) is
 * returned to the thread that served it, which wakes it its own way after the
 * call returns (no lock is held then).
 *
 * Time: now_ns feeds the hold-time statistics only (Little's law: the integral
 * of active permits over time divided by completed holds), from which
 * prs_bulkhead_estimate_wait_ns() guesses when a permit may free; before the
 * first hold has completed it assumes a mean hold of `prior_hold_ns`.
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds (prs_monotonic_ns()).
 */
#ifndef PRS_BULKHEAD_H
#define PRS_BULKHEAD_H

#include <pthread.h>

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_bulkhead prs_bulkhead;

#define PRS_BULKHEAD_MAX INT64_C(1000000000) /* max_concurrent bound */
/* The mean hold assumed until one has been observed: one second. */
#define PRS_BULKHEAD_PRIOR_HOLD_NS INT64_C(1000000000)

typedef struct prs_bulkhead_config {
    int64_t max_concurrent;          /* 1 .. PRS_BULKHEAD_MAX */
    int64_t prior_hold_ns;           /* >= 1: the mean hold the wait estimate assumes
                                        before the first release */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_bulkhead_config;

/* A waiter, embedded by the caller. Fields other than `data` are private to
 * the bulkhead; read the state with prs_bulkhead_waiter_state(). */
typedef struct prs_bulkhead_waiter {
    struct prs_bulkhead_waiter *prev, *next; /* queue links (guarded by the bulkhead) */
    int state;                               /* PRS_WAITER_* (guarded by the bulkhead) */
    int blocking;                            /* 1: `cond` is initialised */
    uint64_t ticket;                         /* arrival order, for diagnostics */
    pthread_cond_t cond;                     /* blocking waiters only */
    void *data;                              /* the caller's */
} prs_bulkhead_waiter;

/* Waiter states. */
enum {
    PRS_WAITER_IDLE = 0,    /* not queued (initialised, or settled) */
    PRS_WAITER_WAITING = 1, /* queued */
    PRS_WAITER_GRANTED = 2, /* served: it holds what it waited for */
    PRS_WAITER_CLOSED = 3   /* woken because the object was closed (queues) */
};

/* Outcomes of acquire/finish. */
enum {
    PRS_BULKHEAD_ACQUIRED = 1,  /* the caller holds a permit */
    PRS_BULKHEAD_WAITING = 2,   /* the waiter was queued */
    PRS_BULKHEAD_REJECTED = 3,  /* no permit: a timeout (counted in rejected) */
    PRS_BULKHEAD_CANCELLED = 4, /* no permit: left the queue (or was not queued) */
    PRS_BULKHEAD_RETURNED = 5   /* no permit: it had been handed one and gave it back */
};

/* finish() modes. */
enum {
    PRS_BULKHEAD_FINISH_ACCEPT = 0, /* keep a permit handed meanwhile; else a timeout */
    PRS_BULKHEAD_FINISH_CANCEL = 1  /* nothing may be kept: a handed permit goes back */
};

typedef struct prs_bulkhead_stats {
    int64_t max_concurrent;
    int64_t active;          /* permits held (including handed to waiters) */
    int64_t available;       /* max_concurrent - active */
    int64_t waiting;         /* queued waiters */
    int64_t acquired_total;  /* permits taken, directly or by waiting */
    int64_t released_total;  /* permits given back */
    int64_t rejected_total;  /* timeouts and fast failures */
    int64_t cancelled_total; /* waits cancelled (including handed permits given back) */
    int64_t avg_hold_ns;     /* mean time a permit is held; -1 before the first release */
    int64_t waited_total;    /* callers that had to queue for a permit (whatever came of it) */
    int64_t held_ns_total;   /* permit-nanoseconds held, up to the last timed call (the
                                integral of active over time: the sum of every hold) */
} prs_bulkhead_stats;

/* Defaults: max_concurrent 1, prior_hold_ns PRS_BULKHEAD_PRIOR_HOLD_NS,
 * default allocator. */
void prs_bulkhead_config_init(prs_bulkhead_config *cfg);
/* PRS_OK, PRS_EINVAL (NULL, max_concurrent < 1 or prior_hold_ns < 1),
 * PRS_ERANGE (max_concurrent > PRS_BULKHEAD_MAX); on error *why (when not
 * NULL) names the field and the rule it broke. */
int prs_bulkhead_config_check(const prs_bulkhead_config *cfg, prs_config_error *why);
/* prs_bulkhead_config_check(cfg, NULL). */
int prs_bulkhead_config_validate(const prs_bulkhead_config *cfg);
/* A bulkhead with every permit free in *out; on error *out is NULL and
 * nothing is allocated (PRS_ENOMEM, PRS_EINVAL, PRS_ERANGE). */
int prs_bulkhead_new(const prs_bulkhead_config *cfg, prs_bulkhead **out);
/* NULL-safe. No waiter may be queued any more. */
void prs_bulkhead_free(prs_bulkhead *b);

/* Prepares a waiter. blocking=1 initialises its condition variable (on
 * CLOCK_MONOTONIC) so prs_bulkhead_wait() can be used: PRS_ENOMEM/PRS_EAGAIN
 * when the system refuses. Destroy it with prs_bulkhead_waiter_destroy() once
 * it is settled (IDLE). */
int prs_bulkhead_waiter_init(prs_bulkhead_waiter *w, int blocking, void *data);
void prs_bulkhead_waiter_destroy(prs_bulkhead_waiter *w);
/* The state (PRS_WAITER_*); a snapshot unless the caller serialises. */
int prs_bulkhead_waiter_state(prs_bulkhead *b, const prs_bulkhead_waiter *w);

/* Takes a permit when one is free and nobody waits: *acquired = 1, else 0
 * (counted as a rejection when count_rejection). PRS_OK or PRS_EINVAL. */
int prs_bulkhead_try_acquire(prs_bulkhead *b, int64_t now_ns, int count_rejection, int *acquired);
/* Takes a permit (*outcome = ACQUIRED) or queues `w` (WAITING; w must be
 * IDLE). PRS_OK or PRS_EINVAL. */
int prs_bulkhead_acquire(prs_bulkhead *b, int64_t now_ns, prs_bulkhead_waiter *w, int *outcome);
/* Gives a permit back. If a waiter is queued the permit goes to it; a NOTIFY
 * waiter served so is stored in *woken (else *woken = NULL; woken may be NULL
 * only if the caller never queues NOTIFY waiters). PRS_OK, or PRS_ESTATE when
 * no permit is held (nothing changes). */
int prs_bulkhead_release(prs_bulkhead *b, int64_t now_ns, prs_bulkhead_waiter **woken);
/* Blocks until `w` (a queued BLOCKING waiter) is no longer WAITING or until
 * deadline_ns (absolute monotonic; PRS_NEVER: no limit). PRS_OK when served,
 * PRS_ETIMEDOUT when still queued (it stays queued: call again or finish).
 * Never touches anything but the bulkhead and w. */
int prs_bulkhead_wait(prs_bulkhead *b, prs_bulkhead_waiter *w, int64_t deadline_ns);
/* Settles a waiter (any state) and leaves it IDLE. *outcome:
 *   ACCEPT: ACQUIRED if it was served, else REJECTED (it leaves the queue; counted).
 *   CANCEL: CANCELLED if it was still queued (or IDLE); RETURNED if it had been
 *           served: the permit goes back (to the next waiter, stored in *woken
 *           as for release()).
 * REJECTED and CANCELLED mean the waiter was queued until this call: whoever
 * tracks "the bulkhead holds this waiter" lets go here; after ACQUIRED or
 * RETURNED, the thread that served it (release's *woken) did.
 * PRS_OK or PRS_EINVAL. */
int prs_bulkhead_finish(prs_bulkhead *b, prs_bulkhead_waiter *w, int mode, int64_t now_ns,
                        int *outcome, prs_bulkhead_waiter **woken);
/* Counts a rejection decided by the caller (e.g. a fast failure). */
void prs_bulkhead_note_rejected(prs_bulkhead *b);

/* For C users: takes a permit, waiting until deadline_ns (absolute monotonic,
 * PRS_NEVER: forever) on a waiter of its own. PRS_OK (acquired), PRS_ETIMEDOUT
 * (rejected, counted), PRS_ENOMEM/PRS_EAGAIN (no condition variable). */
int prs_bulkhead_acquire_blocking(prs_bulkhead *b, int64_t deadline_ns);

/* Fork. A child process inherits the bulkhead as the forking thread saw it:
 * its mutex possibly held by a thread that does not exist there, and queued or
 * just-served waiters of such threads. Call this in the CHILD only, right
 * after fork() and before any other use, while it runs a single thread. It
 * makes a new mutex and settles every BLOCKING waiter as finish(CANCEL) would,
 * without waking any: a queued one leaves the queue (counted cancelled), one
 * that was handed a permit but had not settled gives it back (to the oldest
 * waiter left). NOTIFY waiters are kept: they belong to an event loop that the
 * child may keep running; those served by a permit given back here come back
 * in *woken, linked by `next` (woken may be NULL only if the caller never
 * queues NOTIFY waiters). Permits held by threads that had settled (or never
 * waited) stay held: the child cannot tell them from its own.
 * Precondition: at the fork no other thread was inside a bulkhead call other
 * than prs_bulkhead_wait() (which only sleeps and reads), else the state may be
 * torn. The Python binding calls this from an os.register_at_fork() hook (its
 * other calls run under the GIL, which fork holds); C users call it
 * themselves, e.g. from a pthread_atfork() child handler.
 * PRS_OK, PRS_EINVAL, PRS_ENOMEM (no mutex: the bulkhead is unusable). */
int prs_bulkhead_after_fork_child(prs_bulkhead *b, prs_bulkhead_waiter **woken);

void prs_bulkhead_stats_get(prs_bulkhead *b, prs_bulkhead_stats *s);
int64_t prs_bulkhead_max_concurrent(const prs_bulkhead *b);
/* A guess of how long a new arrival would wait for a permit at now_ns: 0 when
 * one is free, else mean hold * (waiting + 1) / max_concurrent, where the mean
 * hold is the observed one (avg_hold_ns) once a permit has been released, and
 * the configured prior_hold_ns before that. Always >= 0 (saturated at
 * INT64_MAX). */
int64_t prs_bulkhead_estimate_wait_ns(prs_bulkhead *b, int64_t now_ns);

#ifdef __cplusplus
}
#endif
#endif
