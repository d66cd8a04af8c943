/*
 * common.c - status strings, the default allocator, the monotonic clock and
 * sleeping. Everything here is stateless and thread-safe.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "prs_internal.h"

#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

const char *prs_strerror(int status) {
    switch (status) {
#define PRS__XX(name, value, msg) case PRS_##name: return msg;
        PRS_ERRNO_MAP(PRS__XX)
#undef PRS__XX
    default: return "unknown status";
    }
}

const char *prs_err_name(int status) {
    switch (status) {
#define PRS__XX(name, value, msg) case PRS_##name: return "PRS_" #name;
        PRS_ERRNO_MAP(PRS__XX)
#undef PRS__XX
    default: return "PRS_UNKNOWN";
    }
}

int prs_config_mentions(const char *reason, const char *field) {
    size_t n = strlen(field);
    for (const char *at = strstr(reason, field); n && at; at = strstr(at + 1, field)) {
        int before = at > reason && (isalnum((unsigned char)at[-1]) || at[-1] == '_');
        int after = isalnum((unsigned char)at[n]) || at[n] == '_';
        if (!before && !after) return 1;
    }
    return 0;
}

static void *default_malloc(void *ctx, size_t size) { (void)ctx; return malloc(size ? size : 1); }
static void *default_calloc(void *ctx, size_t nmemb, size_t size) {
    (void)ctx;
    if (size && nmemb > SIZE_MAX / size) return NULL;
    return calloc(nmemb ? nmemb : 1, size ? size : 1);
}
static void *default_realloc(void *ctx, void *p, size_t size) { (void)ctx; return realloc(p, size ? size : 1); }
static void default_free(void *ctx, void *p) { (void)ctx; free(p); }

static const prs_allocator default_allocator = {
    default_malloc, default_calloc, default_realloc, default_free, NULL,
};

const prs_allocator *prs_default_allocator(void) { return &default_allocator; }

int64_t prs_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * PRS_NS_PER_SEC + ts.tv_nsec;
}

void prs_sleep_ns(int64_t ns) {
    if (ns <= 0) return;
    struct timespec req, rem;
    req.tv_sec = (time_t)(ns / PRS_NS_PER_SEC);
    req.tv_nsec = (long)(ns % PRS_NS_PER_SEC);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR) req = rem;
}

int64_t prs_seconds_to_ns(double seconds) {
    if (seconds != seconds) return 0;
    double ns = seconds * 1e9;
    if (ns >= 9.2233720368547758e18) return INT64_MAX;
    if (ns <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)llround(ns);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#if defined(__x86_64__) || defined(__i386__)
static inline uint64_t cycles_now(void) { return __rdtsc(); }
#else
static inline uint64_t cycles_now(void) { return (uint64_t)prs_monotonic_ns(); }
#endif

/* The calling thread's memory of contention: where its last contended call
 * started waiting, and when. A thread that keeps meeting contention starts
 * each wait higher (doubling up to the cap), so losers stay away long enough
 * for the winner's run to pay off; a thread that met none for a while
 * (PRS__BACKOFF_QUIET cycles) starts again from the bottom. Touched only on
 * the slow path. */
#define PRS__BACKOFF_QUIET (UINT64_C(1) << 20)
static _Thread_local uint32_t bo_level;
static _Thread_local uint64_t bo_last;
static _Thread_local const void *bo_on;

void prs__backoff_wait(prs__backoff *b) {
    if (b->limit == 0) {
        uint64_t now = cycles_now();
        uint32_t level = bo_level;
        if (level == 0 || bo_on != b->on || now - bo_last > PRS__BACKOFF_QUIET)
            level = PRS__BACKOFF_MIN;
        else if (level < PRS__BACKOFF_MAX)
            level *= 2;
        bo_level = level;
        bo_last = now;
        bo_on = b->on;
        b->limit = level;
        /* a per-wait seed: the backoff lives on the waiting thread's stack */
        uint32_t s = (uint32_t)((uintptr_t)b >> 4) * 2654435761u ^ (uint32_t)now;
        b->rng = s ? s : 1u;
    }
    uint32_t x = b->rng; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b->rng = x;
    uint32_t wait = b->limit / 2 + x % (b->limit / 2 + 1); /* in [limit/2, limit] */
#if defined(__x86_64__) || defined(__i386__)
    uint64_t start = cycles_now();
    while (cycles_now() - start < wait) cpu_relax();
#else
    for (uint32_t i = 0; i < wait / 16; i++) cpu_relax();
#endif
    if (b->limit < PRS__BACKOFF_MAX) {
        b->limit *= 2;
    } else if (++b->rounds >= 4) {
        sched_yield(); /* a holder preempted on this CPU runs */
    }
}

void prs__spin_lock_slow(prs__spinlock *l) {
    prs__backoff b = PRS__BACKOFF_ON(l);
    for (;;) {
        prs__backoff_wait(&b);
        if (!atomic_load_explicit(&l->v, memory_order_relaxed) &&
            !atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
            return;
    }
}

/* Blocking in the kernel makes every later unlock a futex wake (a system call
 * on the holder's path: the collapse of a plain mutex under contention), so
 * it is the last resort: after ~64 backoff rounds (a few hundred microseconds,
 * yielding the CPU at the cap), i.e. when the holder was preempted. */
static void __attribute__((noinline)) mutex_lock_slow(pthread_mutex_t *m) {
    prs__backoff b = PRS__BACKOFF_ON(m);
    for (int i = 0; i < 64; i++) {
        prs__backoff_wait(&b);
#if defined(__GLIBC__)
        if (__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) != 0) continue;
#endif
        if (pthread_mutex_trylock(m) == 0) return;
    }
    pthread_mutex_lock(m);
}

/* glibc records the holder's thread id in __owner (plain stores: 0 again
 * before the unlock's atomic exchange), for every mutex type. Peeking at it
 * costs nothing; peeking at the lock word itself stalls ~4 ns right after
 * the unlock's locked instruction, and pthread_mutex_trylock costs more than
 * pthread_mutex_lock. The peek is a hint: a mutex taken between it and the
 * lock makes this call block as a plain pthread_mutex_lock would. */
void prs__mutex_lock(pthread_mutex_t *m) {
#if defined(__GLIBC__)
    if (__builtin_expect(__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) == 0, 1)) {
        pthread_mutex_lock(m);
        return;
    }
#else
    if (__builtin_expect(pthread_mutex_trylock(m) == 0, 1)) return;
#endif
    mutex_lock_slow(m);
}

void prs__spin_yield(unsigned spins) {
    if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    } else {
        sched_yield();
    }
}

/* One attribute object for every condition variable, made once:
 * pthread_cond_init with it is then a few stores. */
static pthread_condattr_t cond_attr;
static int cond_attr_rc = -1;
static pthread_once_t cond_attr_once = PTHREAD_ONCE_INIT;

static void cond_attr_make(void) {
    if (pthread_condattr_init(&cond_attr) != 0) return;
    if (pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC) != 0) return;
    cond_attr_rc = 0;
}

int prs__cond_init_monotonic(pthread_cond_t *c) {
    pthread_once(&cond_attr_once, cond_attr_make);
    if (cond_attr_rc != 0) return PRS_EAGAIN;
    int rc = pthread_cond_init(c, &cond_attr);
    if (rc == ENOMEM) return PRS_ENOMEM;
    return rc == 0 ? PRS_OK : PRS_EAGAIN;
}

int prs__waiter_cond_init(pthread_cond_t *c, int blocking, int *is_blocking) {
    *is_blocking = 0;
    if (!blocking) return PRS_OK;
    int rc = prs__cond_init_monotonic(c);
    if (rc == PRS_OK) *is_blocking = 1;
    return rc;
}

void prs__waiter_cond_destroy(pthread_cond_t *c, int *is_blocking) {
    if (*is_blocking) pthread_cond_destroy(c);
    *is_blocking = 0;
}

int prs__cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, int64_t deadline_ns) {
    if (deadline_ns == PRS_NEVER) {
        pthread_cond_wait(c, mu);
        return 0;
    }
    if (deadline_ns <= prs_monotonic_ns()) return 1;
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ns / PRS_NS_PER_SEC);
    ts.tv_nsec = (long)(deadline_ns % PRS_NS_PER_SEC);
    return pthread_cond_timedwait(c, mu, &ts) == ETIMEDOUT;
}

int prs__cond_wait_while(pthread_cond_t *c, pthread_mutex_t *mu, const int *state, int waiting,
                         int64_t deadline_ns) {
    int rc = PRS_OK;
    pthread_mutex_lock(mu);
    while (*state == waiting) {
        if (prs__cond_wait_until(c, mu, deadline_ns)) {
            if (*state == waiting) rc = PRS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(mu);
    return rc;
}

/* ---- decisions ---------------------------------------------------------- */

/* Whole seconds, rounded up: ceil(ns / 1e9) without float error. */
static int64_t ceil_seconds(int64_t ns) {
    return ns <= 0 ? 0 : ns / PRS_NS_PER_SEC + (ns % PRS_NS_PER_SEC != 0);
}

static void header(const char **name, int64_t *value, int *n, const char *h, int64_t v) {
    name[*n] = h;
    value[(*n)++] = v;
}

int prs_decision_headers(const prs_decision *d, const char *name[PRS_DECISION_HEADERS_MAX],
                         int64_t value[PRS_DECISION_HEADERS_MAX]) {
    /* PRS_NEVER is no number of seconds: a request that can never be admitted
     * gets no Retry-After and no Reset rather than one 292 years away */
    int never = !d->allowed && d->retry_after_ns == PRS_NEVER, n = 0;
    header(name, value, &n, "X-RateLimit-Limit", d->limit);
    header(name, value, &n, "X-RateLimit-Remaining", d->remaining < 0 ? 0 : d->remaining);
    if (!never && d->reset_after_ns != PRS_NEVER)
        header(name, value, &n, "X-RateLimit-Reset", ceil_seconds(d->reset_after_ns));
    if (!d->allowed && !never) header(name, value, &n, "Retry-After", ceil_seconds(d->retry_after_ns));
    return n;
}
