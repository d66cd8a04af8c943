/*
 * common.c - status strings, the default allocator, the monotonic clock and
 * sleeping. Everything here is stateless and thread-safe.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "prs_internal.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

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
