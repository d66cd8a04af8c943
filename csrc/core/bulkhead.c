/*
 * bulkhead.c - a permit pool with a FIFO queue of waiters.
 *
 * State (all guarded by `mu`, held only around the bookkeeping below and by
 * pthread_cond_timedwait while a blocking waiter sleeps):
 *   active     permits held, 0 <= active <= max; includes permits handed to
 *              waiters that have not settled yet
 *   head/tail  the waiter queue, oldest first
 *   nwaiting   its length
 *   served     BLOCKING waiters handed a permit that have not settled yet
 *              (finish() unlinks them): what a fork leaves to ghost threads
 *
 * Invariant: nwaiting > 0  =>  active == max. A release while someone waits
 * hands the permit over (active unchanged) instead of freeing it, and a try
 * refuses while someone waits, so no arrival can overtake a waiter: service is
 * strictly first come, first served, whoever the waiters are (threads blocked in
 * prs_bulkhead_wait() or futures of an event loop).
 *
 * Waiters are caller-owned memory. The bulkhead touches a waiter only while it
 * is queued or being settled, always under `mu`; a BLOCKING waiter is signalled
 * under `mu` (its owner re-checks the state under `mu` before it returns, so it
 * can never free a waiter the signaller still uses). A NOTIFY waiter is handed
 * back through *woken; after that the bulkhead never touches it again.
 *
 * Statistics: `area` integrates active over time (ns * permits) at every
 * change; mean hold = area / released (Little's law), the basis of
 * prs_bulkhead_estimate_wait_ns(), which assumes the configured prior mean
 * hold until the first release (so a caller refused early still gets a
 * finite guess). `now` is clamped to the last time seen.
 *
 * Fork: prs_bulkhead_after_fork_child() rebuilds the mutex and settles every
 * BLOCKING waiter (a thread, which does not exist in the child) as a cancel
 * would: a queued one leaves the queue, a served one gives its permit back.
 * NOTIFY waiters stay: they belong to an event loop, which the child may keep
 * running (a thread-less loop that never runs again holds their places as it
 * would in the parent).
 *
 * Expected workload: millions of uncontended acquire/release pairs (one mutex
 * round trip each, no allocation), occasional queues of thousands of waiters.
 */
#include "prs_bulkhead.h"
#include "prs_internal.h"
#include "shm_internal.h" /* placed in a region: the permits are shm_bulkhead.c's */

#include <errno.h>
#include <time.h>

struct prs_bulkhead {
    pthread_mutex_t mu;
    int64_t max;                 /* immutable, 1..PRS_BULKHEAD_MAX */
    int64_t prior_hold_ns;       /* immutable, >= 1: mean hold before any release */
    struct prs__shm_bh *shm;     /* placed in a region (see "placed" at the end); in the
                                    mutex's cache line: every call reads it first */
    int64_t active;              /* 0..max */
    prs_bulkhead_waiter *head;   /* oldest waiter, or NULL */
    prs_bulkhead_waiter *tail;   /* newest waiter, or NULL */
    int64_t nwaiting;            /* length of the queue */
    prs_bulkhead_waiter *served; /* served, unsettled BLOCKING waiters (any order) */
    uint64_t next_ticket;
    int64_t acquired, released, rejected, cancelled;
    int64_t waited;              /* callers that joined the queue */
    double area;                 /* integral of active dt, permit*ns */
    int64_t last_ns;             /* INT64_MIN until the first timed call */
    prs_allocator alloc;
    prs_shm *region;             /* placed: referenced */
};

/* The placed forms (end of file). */
static int placed_try(prs_bulkhead *b, int count_rejection, int *acquired);
static int placed_acquire(prs_bulkhead *b, prs_bulkhead_waiter *w, int *outcome);
static int placed_wait(prs_bulkhead *b, prs_bulkhead_waiter *w, int64_t deadline_ns);
static int placed_finish(prs_bulkhead *b, prs_bulkhead_waiter *w, int mode, int *outcome);
static void placed_stats(prs_bulkhead *b, prs_bulkhead_stats *s);

/* ---- lifecycle ----------------------------------------------------------- */

void prs_bulkhead_config_init(prs_bulkhead_config *cfg) {
    cfg->max_concurrent = 1;
    cfg->prior_hold_ns = PRS_BULKHEAD_PRIOR_HOLD_NS;
    cfg->allocator = NULL;
}

int prs_bulkhead_config_check(const prs_bulkhead_config *cfg, prs_config_error *why) {
    if (!cfg) return prs_config_fail(why, PRS_EINVAL, NULL, "no config");
    if (cfg->max_concurrent < 1)
        return prs_config_fail(why, PRS_EINVAL, "max_concurrent", "must be between 1 and 1000000000");
    if (cfg->prior_hold_ns < 1) return prs_config_fail(why, PRS_EINVAL, "prior_hold_ns", "must be >= 1");
    if (cfg->max_concurrent > PRS_BULKHEAD_MAX)
        return prs_config_fail(why, PRS_ERANGE, "max_concurrent", "must be between 1 and 1000000000");
    return PRS_OK;
}

int prs_bulkhead_config_validate(const prs_bulkhead_config *cfg) {
    return prs_bulkhead_config_check(cfg, NULL);
}

int prs_bulkhead_new(const prs_bulkhead_config *cfg, prs_bulkhead **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_bulkhead_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_bulkhead *b = prs__calloc(a, 1, sizeof *b);
    if (!b) return PRS_ENOMEM;
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        prs__free(a, b);
        return PRS_ENOMEM;
    }
    b->alloc = *a;
    b->max = cfg->max_concurrent;
    b->prior_hold_ns = cfg->prior_hold_ns;
    b->last_ns = INT64_MIN;
    *out = b;
    return PRS_OK;
}

void prs_bulkhead_free(prs_bulkhead *b) {
    if (!b) return;
    assert(b->head == NULL && b->served == NULL);
    prs__shm_unref(b->region);
    pthread_mutex_destroy(&b->mu);
    prs_allocator a = b->alloc;
    prs__free(&a, b);
}

int prs_bulkhead_waiter_init(prs_bulkhead_waiter *w, int blocking, void *data) {
    if (!w) return PRS_EINVAL;
    memset(w, 0, sizeof *w);
    w->state = PRS_WAITER_IDLE;
    w->data = data;
    return prs__waiter_cond_init(&w->cond, blocking, &w->blocking);
}

void prs_bulkhead_waiter_destroy(prs_bulkhead_waiter *w) {
    if (!w) return;
    assert(w->state != PRS_WAITER_WAITING);
    prs__waiter_cond_destroy(&w->cond, &w->blocking);
}

int prs_bulkhead_waiter_state(prs_bulkhead *b, const prs_bulkhead_waiter *w) {
    prs__mutex_lock(&b->mu);
    int s = w->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

/* ---- internals (mu held) ------------------------------------------------- */

static void advance(prs_bulkhead *b, int64_t now) {
    if (b->last_ns != INT64_MIN && now > b->last_ns)
        b->area += (double)b->active * (double)(now - b->last_ns);
    if (b->last_ns == INT64_MIN || now > b->last_ns) b->last_ns = now;
}

static void unlink_waiter(prs_bulkhead *b, prs_bulkhead_waiter *w) {
    if (w->prev) w->prev->next = w->next; else b->head = w->next;
    if (w->next) w->next->prev = w->prev; else b->tail = w->prev;
    w->prev = w->next = NULL;
    b->nwaiting--;
}

static void served_push(prs_bulkhead *b, prs_bulkhead_waiter *w) {
    w->prev = NULL;
    w->next = b->served;
    if (b->served) b->served->prev = w;
    b->served = w;
}

static void served_unlink(prs_bulkhead *b, prs_bulkhead_waiter *w) {
    if (w->prev) w->prev->next = w->next; else b->served = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* A permit is free (active was just decremented, or one is given back): hand
 * it to the oldest waiter if any. Returns the served NOTIFY waiter, or NULL. */
static prs_bulkhead_waiter *hand_over(prs_bulkhead *b) {
    prs_bulkhead_waiter *w = b->head;
    if (!w) return NULL;
    assert(b->active < b->max);
    unlink_waiter(b, w);
    b->active++;
    b->acquired++;
    w->state = PRS_WAITER_GRANTED;
    if (w->blocking) {
        served_push(b, w);
        pthread_cond_signal(&w->cond);
        return NULL;
    }
    return w;
}

/* ---- operations ----------------------------------------------------------- */

int prs_bulkhead_try_acquire(prs_bulkhead *b, int64_t now_ns, int count_rejection, int *acquired) {
    if (!b || !acquired) return PRS_EINVAL;
    if (b->shm) return placed_try(b, count_rejection, acquired);
    prs__mutex_lock(&b->mu);
    advance(b, now_ns);
    if (b->active < b->max && b->nwaiting == 0) {
        b->active++;
        b->acquired++;
        *acquired = 1;
    } else {
        if (count_rejection) b->rejected++;
        *acquired = 0;
    }
    pthread_mutex_unlock(&b->mu);
    return PRS_OK;
}

int prs_bulkhead_acquire(prs_bulkhead *b, int64_t now_ns, prs_bulkhead_waiter *w, int *outcome) {
    if (!b || !w || !outcome || w->state == PRS_WAITER_WAITING) return PRS_EINVAL;
    if (b->shm) return placed_acquire(b, w, outcome);
    prs__mutex_lock(&b->mu);
    advance(b, now_ns);
    if (b->active < b->max && b->nwaiting == 0) {
        b->active++;
        b->acquired++;
        w->state = PRS_WAITER_IDLE;
        *outcome = PRS_BULKHEAD_ACQUIRED;
    } else {
        w->state = PRS_WAITER_WAITING;
        w->ticket = b->next_ticket++;
        w->next = NULL;
        w->prev = b->tail;
        if (b->tail) b->tail->next = w; else b->head = w;
        b->tail = w;
        b->nwaiting++;
        b->waited++;
        *outcome = PRS_BULKHEAD_WAITING;
    }
    pthread_mutex_unlock(&b->mu);
    return PRS_OK;
}

int prs_bulkhead_release(prs_bulkhead *b, int64_t now_ns, prs_bulkhead_waiter **woken) {
    if (woken) *woken = NULL;
    if (!b) return PRS_EINVAL;
    if (b->shm) {
        if (prs__shm_bh_unclaim(b->shm)) return PRS_ESTATE;
        prs__shm_bh_count(b->shm, 1, 1);
        return PRS_OK;
    }
    prs__mutex_lock(&b->mu);
    if (b->active <= 0) {
        pthread_mutex_unlock(&b->mu);
        return PRS_ESTATE;
    }
    advance(b, now_ns);
    b->active--;
    b->released++;
    prs_bulkhead_waiter *w = hand_over(b);
    pthread_mutex_unlock(&b->mu);
    assert(w == NULL || woken != NULL);
    if (woken) *woken = w;
    return PRS_OK;
}

int prs_bulkhead_wait(prs_bulkhead *b, prs_bulkhead_waiter *w, int64_t deadline_ns) {
    if (b && w && b->shm) return placed_wait(b, w, deadline_ns);
    if (!b || !w || !w->blocking) return PRS_EINVAL;
    return prs__cond_wait_while(&w->cond, &b->mu, &w->state, PRS_WAITER_WAITING, deadline_ns);
}

int prs_bulkhead_finish(prs_bulkhead *b, prs_bulkhead_waiter *w, int mode, int64_t now_ns,
                        int *outcome, prs_bulkhead_waiter **woken) {
    if (woken) *woken = NULL;
    if (!b || !w || !outcome) return PRS_EINVAL;
    if (mode != PRS_BULKHEAD_FINISH_ACCEPT && mode != PRS_BULKHEAD_FINISH_CANCEL) return PRS_EINVAL;
    if (b->shm) return placed_finish(b, w, mode, outcome);
    prs_bulkhead_waiter *next = NULL;
    prs__mutex_lock(&b->mu);
    advance(b, now_ns);
    if (w->state == PRS_WAITER_WAITING) {
        unlink_waiter(b, w);
        if (mode == PRS_BULKHEAD_FINISH_ACCEPT) {
            b->rejected++;
            *outcome = PRS_BULKHEAD_REJECTED;
        } else {
            b->cancelled++;
            *outcome = PRS_BULKHEAD_CANCELLED;
        }
    } else if (w->state == PRS_WAITER_GRANTED) {
        if (w->blocking) served_unlink(b, w);
        if (mode == PRS_BULKHEAD_FINISH_ACCEPT) {
            *outcome = PRS_BULKHEAD_ACQUIRED;
        } else {
            /* Handed a permit it will not use: not a completed hold, so it
             * leaves the hold statistics alone (acquired/released both undone). */
            b->active--;
            b->acquired--;
            b->cancelled++;
            next = hand_over(b);
            *outcome = PRS_BULKHEAD_RETURNED;
        }
    } else {
        *outcome = PRS_BULKHEAD_CANCELLED;
    }
    w->state = PRS_WAITER_IDLE;
    pthread_mutex_unlock(&b->mu);
    assert(next == NULL || woken != NULL);
    if (woken) *woken = next;
    return PRS_OK;
}

void prs_bulkhead_note_rejected(prs_bulkhead *b) {
    if (!b) return;
    if (b->shm) {
        prs__shm_bh_count(b->shm, 2, 1);
        return;
    }
    prs__mutex_lock(&b->mu);
    b->rejected++;
    pthread_mutex_unlock(&b->mu);
}

int prs_bulkhead_acquire_blocking(prs_bulkhead *b, int64_t deadline_ns) {
    if (!b) return PRS_EINVAL;
    int got = 0, outcome;
    prs_bulkhead_try_acquire(b, prs_monotonic_ns(), 0, &got);
    if (got) return PRS_OK;
    prs_bulkhead_waiter w;
    int rc = prs_bulkhead_waiter_init(&w, 1, NULL);
    if (rc) return rc;
    prs_bulkhead_acquire(b, prs_monotonic_ns(), &w, &outcome);
    if (outcome == PRS_BULKHEAD_WAITING) {
        prs_bulkhead_wait(b, &w, deadline_ns);
        prs_bulkhead_finish(b, &w, PRS_BULKHEAD_FINISH_ACCEPT, prs_monotonic_ns(), &outcome, NULL);
    }
    prs_bulkhead_waiter_destroy(&w);
    return outcome == PRS_BULKHEAD_ACQUIRED ? PRS_OK : PRS_ETIMEDOUT;
}

int prs_bulkhead_after_fork_child(prs_bulkhead *b, prs_bulkhead_waiter **woken) {
    if (woken) *woken = NULL;
    if (!b) return PRS_EINVAL;
    /* The parent's mutex may have been held by a thread that is gone: make a
     * new one (no other thread runs, so nothing else can be using it). */
    memset(&b->mu, 0, sizeof b->mu);
    if (pthread_mutex_init(&b->mu, NULL) != 0) return PRS_ENOMEM;
    if (b->shm) { /* no queue: the parent's waiters were its threads' own */
        b->nwaiting = 0;
        return PRS_OK;
    }
    prs__mutex_lock(&b->mu);
    /* Queued threads leave the queue, as finish(CANCEL) would (counted
     * cancelled); nobody is woken: their condition variables are the parent's. */
    prs_bulkhead_waiter *w = b->head;
    while (w) {
        prs_bulkhead_waiter *next = w->next;
        if (w->blocking) {
            unlink_waiter(b, w);
            w->state = PRS_WAITER_IDLE;
            b->cancelled++;
        }
        w = next;
    }
    /* Threads handed a permit give it back, as finish(CANCEL) would; it goes
     * to the oldest NOTIFY waiter left, if any. */
    prs_bulkhead_waiter *first = NULL, **tail = &first;
    while (b->served) {
        w = b->served;
        served_unlink(b, w);
        w->state = PRS_WAITER_IDLE;
        b->active--;
        b->acquired--;
        b->cancelled++;
        prs_bulkhead_waiter *n = hand_over(b);
        if (n) {
            n->next = NULL;
            *tail = n;
            tail = &n->next;
        }
    }
    pthread_mutex_unlock(&b->mu);
    assert(first == NULL || woken != NULL);
    if (woken) *woken = first;
    return PRS_OK;
}

void prs_bulkhead_stats_get(prs_bulkhead *b, prs_bulkhead_stats *s) {
    if (b->shm) {
        placed_stats(b, s);
        return;
    }
    prs__mutex_lock(&b->mu);
    s->max_concurrent = b->max;
    s->active = b->active;
    s->available = b->max - b->active;
    s->waiting = b->nwaiting;
    s->acquired_total = b->acquired;
    s->released_total = b->released;
    s->rejected_total = b->rejected;
    s->cancelled_total = b->cancelled;
    s->avg_hold_ns = b->released > 0 ? prs__ceil_to_i64(b->area / (double)b->released) : -1;
    s->waited_total = b->waited;
    s->held_ns_total = prs__floor_to_i64(b->area);
    pthread_mutex_unlock(&b->mu);
}

int64_t prs_bulkhead_max_concurrent(const prs_bulkhead *b) { return b->max; }

int64_t prs_bulkhead_estimate_wait_ns(prs_bulkhead *b, int64_t now_ns) {
    int64_t est;
    if (b->shm) {
        prs__mutex_lock(&b->mu);
        int64_t waiting = b->nwaiting;
        pthread_mutex_unlock(&b->mu);
        if (prs__shm_bh_active(b->shm) < b->max && waiting == 0) return 0;
        return prs__ceil_to_i64((double)b->prior_hold_ns * (double)(waiting + 1) / (double)b->max);
    }
    prs__mutex_lock(&b->mu);
    advance(b, now_ns);
    if (b->active < b->max && b->nwaiting == 0) {
        est = 0;
    } else {
        /* observed mean hold once a permit came back; the prior until then */
        double hold = b->released > 0 ? b->area / (double)b->released : (double)b->prior_hold_ns;
        est = prs__ceil_to_i64(hold * (double)(b->nwaiting + 1) / (double)b->max);
    }
    pthread_mutex_unlock(&b->mu);
    return est;
}

/* ---- placed in a shared-memory region (prs_shm.h; shm_bulkhead.c) ------------------
 * The permits are the region's slots; this object keeps only its waiters'
 * states (no queue: a waiter takes a permit in prs_bulkhead_wait, which
 * sleeps on the region's futex word) and counts them in nwaiting (under mu). */

int prs_bulkhead_new_placed(const prs_bulkhead_config *cfg, const prs_shm_place *place,
                            prs_bulkhead **out, prs_config_error *why) {
    int rc = prs_bulkhead_config_check(cfg, why);
    if (rc || !place) return rc ? rc : prs_bulkhead_new(cfg, out);
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!place->region) return prs_config_fail(why, PRS_EINVAL, NULL, "no region");
    if (prs_shm_name_check(place->name))
        return prs_config_fail(why, PRS_EINVAL, "name",
                               "must be 1..63 bytes without '/', '..' or control characters");
    if (cfg->max_concurrent > PRS_SHM_BULKHEAD_MAX)
        return prs_config_fail(why, PRS_ERANGE, "max_concurrent", "must be <= 65536 in a region");
    prs_bulkhead *b = NULL;
    rc = prs_bulkhead_new(cfg, &b);
    if (rc) return rc;
    rc = prs__shm_bh_place(cfg, place, &b->shm);
    if (rc) {
        prs_bulkhead_free(b);
        if (rc == PRS_ESTATE)
            return prs_config_fail(why, rc, NULL, "exists in the region with another configuration");
        return rc;
    }
    b->region = place->region;
    prs__shm_ref(place->region);
    *out = b;
    return PRS_OK;
}

int prs_bulkhead_shared(const prs_bulkhead *b) { return b && b->shm != NULL; }

int prs_bulkhead_reap(prs_bulkhead *b) { return b && b->shm ? prs__shm_bh_reap(b->shm) : 0; }

static int placed_try(prs_bulkhead *b, int count_rejection, int *acquired) {
    *acquired = prs__shm_bh_claim(b->shm);
    if (*acquired || count_rejection) prs__shm_bh_count(b->shm, *acquired ? 0 : 2, 1);
    return PRS_OK;
}

static int placed_acquire(prs_bulkhead *b, prs_bulkhead_waiter *w, int *outcome) {
    if (prs__shm_bh_claim(b->shm)) {
        prs__shm_bh_count(b->shm, 0, 1);
        w->state = PRS_WAITER_IDLE;
        *outcome = PRS_BULKHEAD_ACQUIRED;
        return PRS_OK;
    }
    prs__mutex_lock(&b->mu);
    w->state = PRS_WAITER_WAITING;
    b->nwaiting++;
    pthread_mutex_unlock(&b->mu);
    *outcome = PRS_BULKHEAD_WAITING;
    return PRS_OK;
}

/* Takes a permit for a WAITING waiter when one is free: 1 when it is served. */
static int placed_serve(prs_bulkhead *b, prs_bulkhead_waiter *w) {
    int served = 0;
    prs__mutex_lock(&b->mu);
    if (w->state != PRS_WAITER_WAITING) {
        served = 1;
    } else if (prs__shm_bh_claim(b->shm)) {
        prs__shm_bh_count(b->shm, 0, 1);
        w->state = PRS_WAITER_GRANTED;
        b->nwaiting--;
        served = 1;
    }
    pthread_mutex_unlock(&b->mu);
    return served;
}

static int placed_wait(prs_bulkhead *b, prs_bulkhead_waiter *w, int64_t deadline_ns) {
    for (;;) {
        if (placed_serve(b, w)) return PRS_OK;
        if (deadline_ns != PRS_NEVER && prs_monotonic_ns() >= deadline_ns) return PRS_ETIMEDOUT;
        prs__shm_bh_sleep(b->shm, deadline_ns);
    }
}

static int placed_finish(prs_bulkhead *b, prs_bulkhead_waiter *w, int mode, int *outcome) {
    prs__mutex_lock(&b->mu);
    int state = w->state;
    if (state == PRS_WAITER_WAITING) b->nwaiting--;
    w->state = PRS_WAITER_IDLE;
    pthread_mutex_unlock(&b->mu);
    if (state == PRS_WAITER_WAITING) {
        int cancel = mode == PRS_BULKHEAD_FINISH_CANCEL;
        prs__shm_bh_count(b->shm, cancel ? 3 : 2, 1);
        *outcome = cancel ? PRS_BULKHEAD_CANCELLED : PRS_BULKHEAD_REJECTED;
    } else if (state == PRS_WAITER_GRANTED) {
        if (mode == PRS_BULKHEAD_FINISH_ACCEPT) {
            *outcome = PRS_BULKHEAD_ACQUIRED;
        } else {
            prs__shm_bh_unclaim(b->shm);
            prs__shm_bh_count(b->shm, 0, -1);
            prs__shm_bh_count(b->shm, 3, 1);
            *outcome = PRS_BULKHEAD_RETURNED;
        }
    } else {
        *outcome = PRS_BULKHEAD_CANCELLED;
    }
    return PRS_OK;
}

static void placed_stats(prs_bulkhead *b, prs_bulkhead_stats *s) {
    prs__mutex_lock(&b->mu);
    s->waiting = b->nwaiting;
    pthread_mutex_unlock(&b->mu);
    s->max_concurrent = b->max;
    s->active = prs__shm_bh_active(b->shm);
    s->available = b->max - s->active;
    s->acquired_total = prs__shm_bh_counter(b->shm, 0);
    s->released_total = prs__shm_bh_counter(b->shm, 1);
    s->rejected_total = prs__shm_bh_counter(b->shm, 2);
    s->cancelled_total = prs__shm_bh_counter(b->shm, 3);
    s->avg_hold_ns = -1;
}
