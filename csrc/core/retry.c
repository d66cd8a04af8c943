/*
 * retry.c - backoff delays, jitter, the "sleep or give up" step, and the
 * retry budget.
 *
 * The policy (struct prs_retry) is immutable after prs_retry_new() except for
 * its generator: one 64-bit SplitMix64 state advanced with an atomic fetch_add
 * of the golden gamma. A draw is therefore lock-free and wait-free, concurrent
 * draws never see the same state (each fetch_add returns a distinct Weyl
 * value), and a single thread reseeding and drawing gets a reproducible
 * sequence. Per-call state (attempt number, previous delay, deadline) belongs
 * to the caller's retry loop, so one policy serves any number of concurrent
 * loops without sharing anything but the generator.
 *
 * Delays are computed in double seconds because the reference formula is a
 * float formula: prs_retry_base_delay() is `min(base * pow(b, attempt), max)`,
 * the same pow() CPython's float.__pow__ calls, so results agree bit for bit.
 * Overflow cannot happen: pow() saturates to +inf, which the cap turns into
 * max_delay, and base_delay 0 short-cuts before 0 * inf could make a NaN.
 *
 * The budget keeps two counters per bucket (first attempts, retries) in a ring
 * of ceil(window) buckets of window/ceil(window) seconds, plus running sums
 * over the ring. Moving to a newer bucket clears the buckets it passes (at most
 * the ring's length, amortised O(1) per call); a time older than the newest
 * bucket is taken as the newest (time never runs backwards inside it). Guarded
 * by a spinlock held only around this arithmetic.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "prs_internal.h"
#include "prs_retry.h"

#if defined(__linux__)
#include <sys/random.h>
#endif

/* ---- jitter names ------------------------------------------------------- */

static const char *const jitter_names[PRS__JITTER_COUNT] = {
    "none", "full", "equal", "decorrelated", "proportional",
};

const char *prs_jitter_name(int jitter) {
    if (jitter < 0 || jitter >= PRS__JITTER_COUNT) return NULL;
    return jitter_names[jitter];
}

int prs_jitter_parse(const char *name, prs_jitter *out) {
    if (!name || !out) return PRS_EINVAL;
    for (int i = 0; i < PRS__JITTER_COUNT; i++) {
        if (strcmp(name, jitter_names[i]) == 0) {
            *out = (prs_jitter)i;
            return PRS_OK;
        }
    }
    return PRS_EINVAL;
}

/* ---- the generator ------------------------------------------------------ */

#define GOLDEN_GAMMA UINT64_C(0x9e3779b97f4a7c15)

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t prs_splitmix64_next(uint64_t *state) {
    *state += GOLDEN_GAMMA;
    return mix64(*state);
}

uint64_t prs_random_seed(void) {
    static _Atomic uint64_t counter;
    uint64_t extra = 0;
#if defined(__linux__)
    uint64_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) extra = r;
#endif
    uint64_t c = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    uint64_t s = (uint64_t)prs_monotonic_ns() ^ (uint64_t)(uintptr_t)&extra;
    s = mix64(s + c * GOLDEN_GAMMA);
    return mix64(s ^ extra);
}

/* ---- the policy --------------------------------------------------------- */

struct prs_retry {
    _Atomic uint64_t rng;     /* SplitMix64 state; the only mutable field */
    int64_t max_attempts;     /* >= 1 */
    double base_delay;        /* finite, >= 0 */
    double max_delay;         /* finite, >= base_delay */
    double exponential_base;  /* finite, >= 0 */
    int jitter;               /* a prs_jitter */
    double max_retry_after;   /* >= 0, may be +inf */
    int64_t max_retry_after_ns; /* the same in ns, saturated (PRS_NEVER for inf) */
    int has_seed;
    uint64_t seed;
    prs_allocator alloc;
};

void prs_retry_config_init(prs_retry_config *cfg) {
    cfg->max_attempts = 3;
    cfg->base_delay = 1.0;
    cfg->max_delay = 60.0;
    cfg->exponential_base = 2.0;
    cfg->jitter = PRS_JITTER_PROPORTIONAL;
    cfg->max_retry_after = PRS_RETRY_DEFAULT_MAX_RETRY_AFTER;
    cfg->has_seed = 0;
    cfg->seed = 0;
    cfg->allocator = NULL;
}

int prs_retry_config_check(const prs_retry_config *cfg, prs_config_error *why) {
    if (!cfg) return prs_config_fail(why, PRS_EINVAL, NULL, "is NULL");
    if (cfg->max_attempts < 1) return prs_config_fail(why, PRS_EINVAL, "max_attempts", "must be >= 1");
    if (!isfinite(cfg->base_delay) || cfg->base_delay < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "base_delay", "must be finite and >= 0");
    if (!isfinite(cfg->max_delay) || cfg->max_delay < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "max_delay", "must be finite and >= 0");
    if (cfg->max_delay < cfg->base_delay)
        return prs_config_fail(why, PRS_EINVAL, "max_delay", "must be >= base_delay");
    if (!isfinite(cfg->exponential_base) || cfg->exponential_base < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "exponential_base", "must be finite and >= 0");
    if (cfg->jitter < 0 || cfg->jitter >= PRS__JITTER_COUNT)
        return prs_config_fail(why, PRS_EINVAL, "jitter", "must be a prs_jitter");
    if (isnan(cfg->max_retry_after) || cfg->max_retry_after < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "max_retry_after", "must be >= 0");
    return PRS_OK;
}

int prs_retry_config_validate(const prs_retry_config *cfg) { return prs_retry_config_check(cfg, NULL); }

int prs_retry_new(const prs_retry_config *cfg, prs_retry **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_retry_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_retry *r = prs__malloc(a, sizeof *r);
    if (!r) return PRS_ENOMEM;
    r->max_attempts = cfg->max_attempts;
    r->base_delay = cfg->base_delay;
    r->max_delay = cfg->max_delay;
    r->exponential_base = cfg->exponential_base;
    r->jitter = cfg->jitter;
    r->max_retry_after = cfg->max_retry_after;
    r->max_retry_after_ns = prs_seconds_to_ns(cfg->max_retry_after);
    r->has_seed = cfg->has_seed != 0;
    r->seed = r->has_seed ? cfg->seed : prs_random_seed();
    atomic_init(&r->rng, r->seed);
    r->alloc = *a;
    *out = r;
    return PRS_OK;
}

void prs_retry_free(prs_retry *r) {
    if (r) prs__free_self(r, &r->alloc);
}

void prs_retry_get_config(const prs_retry *r, prs_retry_config *cfg) {
    cfg->max_attempts = r->max_attempts;
    cfg->base_delay = r->base_delay;
    cfg->max_delay = r->max_delay;
    cfg->exponential_base = r->exponential_base;
    cfg->jitter = r->jitter;
    cfg->max_retry_after = r->max_retry_after;
    cfg->has_seed = r->has_seed;
    cfg->seed = r->seed;
    cfg->allocator = NULL;
}

int64_t prs_retry_max_attempts(const prs_retry *r) { return r->max_attempts; }

uint64_t prs_retry_next_u64(prs_retry *r) {
    uint64_t s = atomic_fetch_add_explicit(&r->rng, GOLDEN_GAMMA, memory_order_relaxed);
    return mix64(s + GOLDEN_GAMMA);
}

double prs_retry_uniform(prs_retry *r) { return prs_unit_from_u64(prs_retry_next_u64(r)); }

void prs_retry_seed(prs_retry *r, uint64_t seed) {
    atomic_store_explicit(&r->rng, seed, memory_order_relaxed);
}

double prs_retry_base_delay(const prs_retry *r, int64_t attempt) {
    if (r->base_delay == 0.0) return 0.0;          /* 0 * inf would be NaN */
    if (attempt < 0) attempt = 0;
    double d = r->base_delay * pow(r->exponential_base, (double)attempt);
    if (!(d <= r->max_delay)) d = r->max_delay;     /* also catches +inf */
    return d;
}

double prs_retry_delay(prs_retry *r, int64_t attempt, double previous) {
    double d, u;
    switch (r->jitter) {
    case PRS_JITTER_FULL:
        return prs_retry_uniform(r) * prs_retry_base_delay(r, attempt);
    case PRS_JITTER_EQUAL:
        d = prs_retry_base_delay(r, attempt) * 0.5;
        return d + prs_retry_uniform(r) * d;
    case PRS_JITTER_DECORRELATED: {
        double lo = r->base_delay;
        double prev = (previous > 0.0) ? previous : lo;   /* NaN -> lo */
        if (prev > r->max_delay) prev = r->max_delay;
        double hi = prev * 3.0;                          /* finite: prev <= max_delay */
        if (hi < lo) hi = lo;
        d = lo + prs_retry_uniform(r) * (hi - lo);
        return d < r->max_delay ? d : r->max_delay;
    }
    case PRS_JITTER_PROPORTIONAL:
        d = prs_retry_base_delay(r, attempt);
        u = prs_retry_uniform(r);
        d = d + (u - 0.5) * d;
        return d > 0.0 ? d : 0.0;
    case PRS_JITTER_NONE:
    default:
        return prs_retry_base_delay(r, attempt);
    }
}

int prs_retry_next(prs_retry *r, int64_t attempt, double previous, int64_t retry_after_ns,
                   int64_t remaining_ns, prs_retry_step *out) {
    if (!r || !out) return PRS_EINVAL;
    out->delay = 0.0;
    out->delay_ns = 0;
    if (attempt < 0) attempt = 0;
    if (attempt >= r->max_attempts - 1) {
        out->verdict = PRS_RETRY_GIVE_UP_ATTEMPTS;
        return PRS_OK;
    }
    double delay = prs_retry_delay(r, attempt, previous);
    int64_t delay_ns = prs_seconds_to_ns(delay);
    if (retry_after_ns >= 0) {
        /* The server's Retry-After is a floor: max_delay caps our own backoff,
         * never the server's ask. Too long to wait: give up now. */
        if (retry_after_ns == PRS_NEVER ||
            (remaining_ns != PRS_NEVER && retry_after_ns > remaining_ns)) {
            out->verdict = PRS_RETRY_GIVE_UP_RETRY_AFTER;
            return PRS_OK;
        }
        if (r->max_retry_after_ns != PRS_NEVER && retry_after_ns > r->max_retry_after_ns) {
            out->verdict = PRS_RETRY_GIVE_UP_RETRY_AFTER_LIMIT;
            return PRS_OK;
        }
        if (retry_after_ns > delay_ns) {
            delay_ns = retry_after_ns;
            delay = (double)retry_after_ns / 1e9;
        }
    }
    if (remaining_ns != PRS_NEVER && delay_ns >= remaining_ns) {
        out->verdict = PRS_RETRY_GIVE_UP_DEADLINE;
        return PRS_OK;
    }
    out->verdict = PRS_RETRY_SLEEP;
    out->delay = delay;
    out->delay_ns = delay_ns;
    return PRS_OK;
}

/* ---- the retry budget --------------------------------------------------- */

#define BUDGET_MAX_WINDOW 3600.0
#define BUDGET_MIN_WINDOW 1e-3
#define BUDGET_MAX_RATIO 1e6
#define BUDGET_MAX_FLOOR 1e9

typedef struct budget_bucket {
    int64_t attempts;  /* first attempts deposited in this bucket, >= 0 */
    int64_t retries;   /* retries allowed in this bucket, >= 0 */
} budget_bucket;

struct prs_retry_budget {
    prs__spinlock lock;       /* guards everything below up to `n` */
    int64_t head;             /* epoch (now / width, floored) of the newest bucket;
                                 INT64_MIN: nothing recorded since new/reset */
    int64_t sum_attempts;     /* == sum of buckets[].attempts */
    int64_t sum_retries;      /* == sum of buckets[].retries */
    int64_t total_attempts, total_allowed, total_denied; /* lifetime, never reset but by reset() */
    budget_bucket *buckets;   /* n of them; epoch e lives at e mod n */
    /* immutable */
    int64_t n;                /* ceil(window), in [1, 3600] */
    int64_t width_ns;         /* ceil(window_ns / n) >= 1 */
    double ratio, floor_per_s, window_s;
    double reserve;           /* floor_per_s * window_s */
    prs_allocator alloc;
};

void prs_retry_budget_config_init(prs_retry_budget_config *cfg) {
    cfg->ratio = 0.1;
    cfg->min_retries_per_second = 10.0;
    cfg->window = 10.0;
    cfg->allocator = NULL;
}

int prs_retry_budget_config_check(const prs_retry_budget_config *cfg, prs_config_error *why) {
    if (!cfg) return prs_config_fail(why, PRS_EINVAL, NULL, "is NULL");
    if (!isfinite(cfg->ratio) || cfg->ratio < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "ratio", "must be finite and >= 0");
    if (!isfinite(cfg->min_retries_per_second) || cfg->min_retries_per_second < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "min_retries_per_second", "must be finite and >= 0");
    if (!isfinite(cfg->window) || cfg->window <= 0.0)
        return prs_config_fail(why, PRS_EINVAL, "window", "must be finite and > 0");
    if (cfg->ratio > BUDGET_MAX_RATIO) return prs_config_fail(why, PRS_ERANGE, "ratio", "must be <= 1e6");
    if (cfg->min_retries_per_second > BUDGET_MAX_FLOOR)
        return prs_config_fail(why, PRS_ERANGE, "min_retries_per_second", "must be <= 1e9");
    if (cfg->window < BUDGET_MIN_WINDOW || cfg->window > BUDGET_MAX_WINDOW)
        return prs_config_fail(why, PRS_ERANGE, "window", "must be between 0.001 and 3600 seconds");
    return PRS_OK;
}

int prs_retry_budget_config_validate(const prs_retry_budget_config *cfg) {
    return prs_retry_budget_config_check(cfg, NULL);
}

int prs_retry_budget_new(const prs_retry_budget_config *cfg, prs_retry_budget **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_retry_budget_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    int64_t n = (int64_t)ceil(cfg->window);
    if (n < 1) n = 1;
    prs_retry_budget *b = prs__malloc(a, sizeof *b);
    if (!b) return PRS_ENOMEM;
    b->buckets = prs__calloc(a, (size_t)n, sizeof *b->buckets);
    if (!b->buckets) {
        prs__free(a, b);
        return PRS_ENOMEM;
    }
    prs__spin_init(&b->lock);
    b->head = INT64_MIN;
    b->sum_attempts = b->sum_retries = 0;
    b->total_attempts = b->total_allowed = b->total_denied = 0;
    b->n = n;
    int64_t window_ns = prs_seconds_to_ns(cfg->window);
    b->width_ns = (window_ns + n - 1) / n;
    if (b->width_ns < 1) b->width_ns = 1;
    b->ratio = cfg->ratio;
    b->floor_per_s = cfg->min_retries_per_second;
    b->window_s = cfg->window;
    b->reserve = cfg->min_retries_per_second * cfg->window;
    b->alloc = *a;
    *out = b;
    return PRS_OK;
}

void prs_retry_budget_free(prs_retry_budget *b) {
    if (!b) return;
    prs_allocator a = b->alloc;
    prs__free(&a, b->buckets);
    prs__free(&a, b);
}

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}
static inline int64_t ring_index(int64_t epoch, int64_t n) {
    int64_t i = epoch % n;
    return i < 0 ? i + n : i;
}

/* Moves the window to now (lock held); returns the newest bucket. */
static budget_bucket *budget_advance(prs_retry_budget *b, int64_t now) {
    int64_t e = floor_div(now, b->width_ns);
    if (b->head == INT64_MIN) {
        b->head = e;
    } else if (e > b->head) {
        uint64_t gap = (uint64_t)e - (uint64_t)b->head;
        if (gap >= (uint64_t)b->n) {
            memset(b->buckets, 0, (size_t)b->n * sizeof *b->buckets);
            b->sum_attempts = b->sum_retries = 0;
        } else {
            for (uint64_t k = 1; k <= gap; k++) {
                budget_bucket *bk = &b->buckets[ring_index(b->head + (int64_t)k, b->n)];
                b->sum_attempts -= bk->attempts;
                b->sum_retries -= bk->retries;
                bk->attempts = bk->retries = 0;
            }
        }
        b->head = e;
    }
    /* e <= head: a time at or before the newest bucket counts in the newest. */
    assert(b->sum_attempts >= 0 && b->sum_retries >= 0);
    return &b->buckets[ring_index(b->head, b->n)];
}

static double budget_allowance(const prs_retry_budget *b) {
    return b->ratio * (double)b->sum_attempts + b->reserve;
}

int prs_retry_budget_deposit(prs_retry_budget *b, int64_t now_ns) {
    if (!b) return PRS_EINVAL;
    prs__spin_lock(&b->lock);
    budget_bucket *bk = budget_advance(b, now_ns);
    if (bk->attempts < INT64_MAX && b->sum_attempts < INT64_MAX) {
        bk->attempts++;
        b->sum_attempts++;
    }
    if (b->total_attempts < INT64_MAX) b->total_attempts++;
    prs__spin_unlock(&b->lock);
    return PRS_OK;
}

int prs_retry_budget_withdraw(prs_retry_budget *b, int64_t now_ns, int *allowed) {
    if (!b || !allowed) return PRS_EINVAL;
    prs__spin_lock(&b->lock);
    budget_bucket *bk = budget_advance(b, now_ns);
    double allowance = budget_allowance(b);
    /* A relative epsilon so that e.g. 0.1 * 30 == 3.0000000000000004 and
     * 0.7 * 10 == 6.999999999999999 both grant the retry the arithmetic means. */
    double need = (double)b->sum_retries + 1.0;
    int ok = need <= allowance + 1e-9 * (allowance > 1.0 ? allowance : 1.0);
    if (ok) {
        bk->retries++;
        b->sum_retries++;
        if (b->total_allowed < INT64_MAX) b->total_allowed++;
    } else if (b->total_denied < INT64_MAX) {
        b->total_denied++;
    }
    prs__spin_unlock(&b->lock);
    *allowed = ok;
    return PRS_OK;
}

int prs_retry_budget_metrics_get(prs_retry_budget *b, int64_t now_ns, prs_retry_budget_metrics *m) {
    if (!b || !m) return PRS_EINVAL;
    prs__spin_lock(&b->lock);
    budget_advance(b, now_ns);
    m->attempts = b->total_attempts;
    m->retries_allowed = b->total_allowed;
    m->retries_denied = b->total_denied;
    m->window_attempts = b->sum_attempts;
    m->window_retries = b->sum_retries;
    double avail = budget_allowance(b) - (double)b->sum_retries;
    m->available = avail > 0.0 ? avail : 0.0;
    prs__spin_unlock(&b->lock);
    return PRS_OK;
}

void prs_retry_budget_reset(prs_retry_budget *b) {
    if (!b) return;
    prs__spin_lock(&b->lock);
    memset(b->buckets, 0, (size_t)b->n * sizeof *b->buckets);
    b->head = INT64_MIN;
    b->sum_attempts = b->sum_retries = 0;
    b->total_attempts = b->total_allowed = b->total_denied = 0;
    prs__spin_unlock(&b->lock);
}

double prs_retry_budget_ratio(const prs_retry_budget *b) { return b->ratio; }
double prs_retry_budget_min_per_second(const prs_retry_budget *b) { return b->floor_per_s; }
double prs_retry_budget_window(const prs_retry_budget *b) { return b->window_s; }
int64_t prs_retry_budget_buckets(const prs_retry_budget *b) { return b->n; }
