/*
 * prs_internal.h - helpers shared by the core's .c files; not installed.
 * Saturating int64 arithmetic, allocation through a prs_allocator, and a
 * tiny spinlock for state that does not fit one atomic word.
 */
#ifndef PRS_INTERNAL_H
#define PRS_INTERNAL_H

#include "prs_common.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* ---- saturating arithmetic (never wraps) ------------------------------ */

static inline int64_t prs__min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t prs__max64(int64_t a, int64_t b) { return a > b ? a : b; }

static inline int64_t prs__sat_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}
static inline int64_t prs__sat_sub(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}
static inline int64_t prs__sat_mul(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return ((a < 0) != (b < 0)) ? INT64_MIN : INT64_MAX;
    return r;
}
/* A non-negative double to int64 rounding up, saturating at INT64_MAX (NaN -> INT64_MAX). */
static inline int64_t prs__ceil_to_i64(double x) {
    if (!(x < 9.2233720368547748e18)) return INT64_MAX;
    if (x <= 0.0) return 0;
    int64_t t = (int64_t)x; /* truncation == floor for x >= 0; no libm call */
    return (double)t < x ? t + 1 : t;
}
/* A non-negative double to int64 rounding down, saturating. */
static inline int64_t prs__floor_to_i64(double x) {
    if (!(x < 9.2233720368547748e18)) return INT64_MAX;
    if (x <= 0.0) return 0;
    return (int64_t)x; /* truncation == floor for x >= 0 */
}

/* ---- allocation ------------------------------------------------------- */

static inline const prs_allocator *prs__alloc_or_default(const prs_allocator *a) {
    return a ? a : prs_default_allocator();
}
static inline void *prs__malloc(const prs_allocator *a, size_t size) {
    return a->malloc_fn(a->ctx, size);
}
static inline void *prs__calloc(const prs_allocator *a, size_t nmemb, size_t size) {
    return a->calloc_fn(a->ctx, nmemb, size);
}
static inline void *prs__realloc(const prs_allocator *a, void *p, size_t size) {
    return a->realloc_fn(a->ctx, p, size);
}
static inline void prs__free(const prs_allocator *a, void *p) {
    if (p) a->free_fn(a->ctx, p);
}
/* Frees p, an object holding its own allocator `own` (copied out first). */
static inline void prs__free_self(void *p, const prs_allocator *own) {
    prs_allocator a = *own;
    prs__free(&a, p);
}

/* ---- backoff ---------------------------------------------------------- *
 * What every contended path does after it lost a race (a held spinlock, a
 * failed compare-and-swap, a held mutex): wait a randomised, exponentially
 * growing while WITHOUT touching the contended cache line, then look again.
 * The thread that won keeps the line in its own cache and runs its next
 * operations at single-thread speed, instead of the line bouncing between
 * cores on every operation (the collapse measured in bench/thread_scaling.c:
 * a plain test-and-test-and-set lock hands the lock, and the line, to the
 * other core at every release). The wait grows from PRS__BACKOFF_MIN to
 * PRS__BACKOFF_MAX cycles (x86: time-stamp counter cycles, elsewhere pause
 * instructions) within a call, and from call to call while the thread keeps
 * meeting contention on the same object (a thread-local level, reset after a
 * quiet while or on another object: a brief collision on one of many keyed
 * shards must not cost a long wait), so a
 * thread that lost stays away long enough for the winner's run to pay off;
 * after a few rounds at the cap it also yields the CPU, so a holder that was
 * preempted gets to run. Unfair by design: throughput first, and the cap
 * bounds how long one waiter stays behind (about 12 us per round at 2.6 GHz). */
typedef struct prs__backoff {
    uint32_t limit;  /* current cap of one wait */
    uint32_t rounds; /* waits done at the cap */
    uint32_t rng;    /* xorshift32 state; 0 until the first wait */
    const void *on;  /* what is contended (a lock, a word): the thread's memory
                        of contention is kept per object */
} prs__backoff;
#define PRS__BACKOFF_ON(obj) {0, 0, 0, (obj)}
#define PRS__BACKOFF_MIN 128u
#define PRS__BACKOFF_MAX 32768u

void prs__backoff_wait(prs__backoff *b); /* common.c */

/* ---- spinlock --------------------------------------------------------- *
 * Held only around a few dozen nanoseconds of arithmetic, never around a call
 * out, a sleep or I/O. Uncontended: one atomic exchange + one release store.
 * Contended (prs__spin_lock_slow): back off (above) without reading the lock,
 * then test, then test-and-set. The lock word sits wherever its owner put it:
 * the objects keep it away from the fields every caller reads (padding). */
typedef struct { atomic_int v; } prs__spinlock;
#define PRS__SPINLOCK_INIT { 0 }

void prs__spin_yield(unsigned spins); /* common.c: pause or sched_yield */
void prs__spin_lock_slow(prs__spinlock *l); /* common.c */

static inline void prs__spin_lock(prs__spinlock *l) {
    if (__builtin_expect(!atomic_exchange_explicit(&l->v, 1, memory_order_acquire), 1)) return;
    prs__spin_lock_slow(l);
}
static inline void prs__spin_unlock(prs__spinlock *l) {
    atomic_store_explicit(&l->v, 0, memory_order_release);
}
static inline void prs__spin_init(prs__spinlock *l) { atomic_init(&l->v, 0); }

/* ---- condition variables on the monotonic clock (common.c) ------------ */

#include <pthread.h>

/* pthread_mutex_lock with the same backoff as the spinlock: while the mutex
 * is held, back off (not touching it) and try again; after a while block in
 * pthread_mutex_lock. The mutex stays an ordinary pthread mutex, so condition
 * variables wait on it as before. Uncontended it costs what
 * pthread_mutex_lock does (common.c: how it tells a held mutex). */
void prs__mutex_lock(pthread_mutex_t *m); /* common.c */

/* pthread_cond_init with CLOCK_MONOTONIC: PRS_OK, PRS_ENOMEM or PRS_EAGAIN. */
int prs__cond_init_monotonic(pthread_cond_t *c);
/* A waiter's condition variable: blocking=1 makes it (*is_blocking = 1 on
 * success; PRS_ENOMEM/PRS_EAGAIN otherwise), blocking=0 leaves it unmade. */
int prs__waiter_cond_init(pthread_cond_t *c, int blocking, int *is_blocking);
/* Destroys it if it was made; *is_blocking = 0. */
void prs__waiter_cond_destroy(pthread_cond_t *c, int *is_blocking);
/* One wait on `c` (mutex `mu` held) until deadline_ns, absolute on
 * prs_monotonic_ns() (PRS_NEVER: untimed). Spurious wakeups happen: callers
 * loop on their predicate. Returns 1 when the deadline has passed, else 0. */
int prs__cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, int64_t deadline_ns);
/* The wait of every intrusive BLOCKING waiter: takes `mu`, sleeps on `c` while
 * *state (guarded by `mu`) equals `waiting`, until deadline_ns (PRS_NEVER: no
 * limit), releases `mu`. PRS_OK once *state changed, PRS_ETIMEDOUT when it
 * still equals `waiting` at the deadline. Touches nothing but *state. */
int prs__cond_wait_while(pthread_cond_t *c, pthread_mutex_t *mu, const int *state, int waiting,
                         int64_t deadline_ns);

/* ---- an atomic int64 time ----------------------------------------------- */

/* Adds ns to *t, saturating instead of wrapping; concurrent adds each count. */
static inline void prs__atomic_sat_add(_Atomic int64_t *t, int64_t ns) {
    int64_t seen = atomic_load_explicit(t, memory_order_acquire);
    while (!atomic_compare_exchange_weak_explicit(t, &seen, prs__sat_add(seen, ns),
                                                  memory_order_acq_rel, memory_order_acquire)) {
    }
}
/* Raises *t to v (never lowers it). */
static inline void prs__atomic_raise(_Atomic int64_t *t, int64_t v) {
    int64_t seen = atomic_load_explicit(t, memory_order_acquire);
    while (seen < v && !atomic_compare_exchange_weak_explicit(t, &seen, v, memory_order_acq_rel,
                                                             memory_order_acquire)) {
    }
}

/* 1 when a validator's `reason` names config field `field` (as a whole
 * identifier: "must be >= base_delay" names base_delay, not delay). */
int prs_config_mentions(const char *reason, const char *field);

/* ---- deadlines of calls (deadline.c) ---------------------------------- */

/* A thread-local variable read on a hot path: in the initial-exec model
 * where the C library allows it (one load, no __tls_get_addr call; static TLS
 * is scarce, so only a few words). */
#if defined(__GLIBC__) && defined(__GNUC__)
#define PRS_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define PRS_TLS_FAST
#endif

/* The sooner of `deadline` and now + ns (ns < 0: no limit of its own). */
static inline int64_t prs_deadline_within(int64_t deadline, int64_t now, int64_t ns) {
    return ns < 0 ? deadline : prs__min64(deadline, prs__sat_add(now, ns));
}
/* A wait's timeout (PRS_NEVER: none) capped at what is left before the
 * absolute `deadline` (PRS_NEVER: none) at `now`; never negative. */
static inline int64_t prs_deadline_cap(int64_t deadline, int64_t now, int64_t timeout_ns) {
    if (deadline == PRS_NEVER) return timeout_ns;
    int64_t left = prs__max64(prs__sat_sub(deadline, now), 0);
    return timeout_ns == PRS_NEVER ? left : prs__min64(left, timeout_ns);
}

/* This thread's deadline frames: push gives the frame's index for pop (-1:
 * all PRS_DEADLINE_FRAMES taken, or no memory); pop returns the frame's key
 * (the caller's to release); prs_deadline_of is the sooner of `deadline` and
 * the frames of `key`; prs_deadline_any says whether there is a frame. */
#define PRS_DEADLINE_FRAMES 32
int prs_deadline_push(void *key, int64_t deadline);
void *prs_deadline_pop(int i);
int prs_deadline_any(void);
int64_t prs_deadline_of(const void *key, int64_t deadline);

#endif /* PRS_INTERNAL_H */
