/*
 * redis_limiter.c - rate limiters whose state lives in Redis, one Lua script
 * per algorithm (redis_scripts.c), plus local leases and all-or-nothing groups.
 *
 * Keys. A user key K (any bytes) is stored under
 *     <prefix>{K}:<s>            when K has no brace and is not empty
 *     <prefix>{T}K:<s>           otherwise, T = K's own hash tag if it has one
 *                                (the text between its first '{' and the next
 *                                '}', non-empty), else 16 hex digits of a fixed
 *                                hash of K
 * where <s> names the algorithm ("g", "t", "f", "c", "l"); each decision
 * touches that one key (the keyset below allows for two). The prefix may not
 * contain braces, so the first '{' is ours and every key a decision or a
 * group touches for one user key has the same hash tag: one Cluster slot. The
 * forms are unambiguous (the part after the tag holds a brace only in the
 * second form), so distinct user keys never share a Redis key. A user who
 * wants several keys in one slot (a group on Cluster) gives them the same
 * hash tag: "{acct42}user", "{acct42}global".
 *
 * Leases (gcra, token_bucket). `lmu` guards the table; it is held only for a
 * lookup and a few integer updates, never across I/O. An entry holds `left`
 * permits already taken from Redis, spendable until `expires_ns` (local
 * monotonic time). A check first spends from the entry; when it is empty,
 * expired or short, one script call gives back what is left and takes up to
 * `batch` new permits (at least n). Permits are consumed in Redis when taken,
 * so the shared limit is never exceeded; what a process holds unspent is the
 * under-admission (at most processes x batch), bounded in time by max_hold.
 * Concurrent takers for one key may both succeed; their permits add up and
 * keep the earlier expiry (never held longer than max_hold). The table holds
 * at most lease_max_keys entries; when it is full of live leases a new key's
 * extra permits lapse (given to nobody: under-admission only).
 *
 * Failure policies. When a call fails (connection, timeout, open circuit,
 * error reply), the limiter's on_backend_error decides here, not in a
 * binding: RAISE returns the status; ALLOW/DENY make a decision without I/O;
 * LOCAL asks the fallback (fb), under its lock when it has one. The built-in
 * fallback (`own`) is a prs_keyed table of in-process limiters of the same
 * algorithm sized at local_share of the limit, serialised by `fmu` so that a
 * group can peek several of its keys and then take from all with nobody in
 * between. A group's failure follows each member's policy, strictest first
 * (RAISE, DENY, LOCAL, ALLOW); its LOCAL members lock their distinct
 * fallbacks in ascending ctx order (no two groups can deadlock), peek each
 * (fallback, key) for the sum of its demand, then consume. Closed on
 * purpose, out of memory and invalid arguments are never turned into
 * decisions.
 *
 * Fork: a child drops the leases it inherited (parent and child spending the
 * same permits would over-admit) and re-makes its locks, once, like the pool;
 * the fallback's in-process states stay (they are this process's own).
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "prs_fixed_window.h"
#include "prs_gcra.h"
#include "prs_keyed.h"
#include "prs_algo.h"
#include "prs_redis_internal.h"
#include "prs_redis_ops.h"
#include "prs_sliding_counter.h"
#include "prs_sliding_log.h"
#include "prs_token_bucket.h"

#define MAX_PREFIX 1024
#define STACK_KEY 256

typedef struct lease {
    struct lease *next;
    uint64_t hash;
    int64_t left;        /* permits taken from Redis and not yet spent */
    int64_t expires_ns;  /* spendable before this (monotonic); then given back */
    int64_t denied_n;    /* Redis denied this many (0: no cached denial) ... */
    int64_t denied_until;/* ... until then: any n >= denied_n is denied locally */
    size_t keylen;
    unsigned char key[];
} lease;

struct prs_redis_limiter {
    prs_redis_backend *b;          /* not owned */
    prs_allocator alloc;
    int algorithm;
    int nkeys;                     /* Redis keys per decision (2: sliding_window_counter) */
    int64_t limit;                 /* burst or limit, for decisions */
    char *prefix;
    size_t prefix_len;
    char p1[32], p2[32];           /* the script's two parameters, %.17g */
    double window_us;              /* the window algorithms' window */
    double interval_us;            /* gcra, token_bucket: T, as the scripts read p1 */
    char ttl[24];                  /* sliding_window_log: its key's TTL (ms), ceil(W / 1000) + 1 */
    size_t p1len, p2len, ttllen;
    int check_script;              /* the specialised check script's slot, or -1 (redis_scripts.c) */
    int check_incr;                /* ... in its INCRBY form (then ARGV[3] is n * T) */
    int check_quarters;            /* ... in its quarter form (ARGV[3]: n * T in quarter us, on a real clock) */

    int64_t lease_batch;           /* 0: no leases */
    int64_t lease_max_hold_ns;
    int lease_max_keys;
    pthread_mutex_t lmu;           /* guards buckets[], nleases, every lease */
    lease **buckets;               /* [nbuckets], chained */
    size_t nbuckets;               /* a power of two */
    int nleases;
    uint64_t k0, k1;               /* per-limiter random hash seed */
    _Atomic uint64_t gen;          /* fork generation of the locks below */
    _Atomic int resetting;

    int policy;                    /* prs_redis_policy */
    prs_redis_fallback fb;         /* PRS_REDIS_LOCAL: the fallback asked */
    prs_keyed *own;                /* the fallback's table when the limiter made it */
    pthread_mutex_t fmu;           /* own: serialises its decisions (fb.lock) */
    _Atomic uint64_t fallbacks;    /* decisions its policy made because Redis failed */
};

/* Each Redis algorithm's row in the algorithm table (prs_algo.h), which names it. */
static const prs_algo_id algo_row[PRS_REDIS__ALGORITHM_COUNT] = {
    PRS_ALGO_ID_gcra, PRS_ALGO_ID_token_bucket, PRS_ALGO_ID_fixed_window,
    PRS_ALGO_ID_sliding_counter, PRS_ALGO_ID_sliding_log,
};
static const char algo_suffix[PRS_REDIS__ALGORITHM_COUNT] = {'g', 't', 'f', 'c', 'l'};

const char *prs_redis_algorithm_name(int algorithm) {
    return algorithm >= 0 && algorithm < PRS_REDIS__ALGORITHM_COUNT
               ? prs_algorithms[algo_row[algorithm]].redis_name
               : NULL;
}

int prs_redis_algorithm_from_name(const char *name) {
    const prs_algo_entry *e = prs_algo_by_redis_name(name);
    for (int i = 0; e && i < PRS_REDIS__ALGORITHM_COUNT; i++)
        if (&prs_algorithms[algo_row[i]] == e) return i;
    return -1;
}

static int uses_rate(int algorithm) {
    return algorithm == PRS_REDIS_GCRA || algorithm == PRS_REDIS_TOKEN_BUCKET;
}

static size_t fmt_i64(char *buf, int64_t v);

/* The policies' names, indexed by prs_redis_policy, NULL-terminated. */
static const char *const policy_names[] = {"raise", "allow", "deny", "local", NULL};

const char *prs_redis_policy_name(int policy) {
    return policy >= 0 && policy < PRS_REDIS__POLICY_COUNT ? policy_names[policy] : NULL;
}

int prs_redis_policy_from_name(const char *name) {
    int i = 0;
    while (name && policy_names[i] && strcmp(name, policy_names[i])) i++;
    return name && policy_names[i] ? i : -1;
}

int prs_redis_limiter_sizing(prs_redis_limiter_config *cfg, unsigned given, prs_config_error *why) {
    if (!cfg || !prs_redis_algorithm_name(cfg->algorithm)) return prs_config_fail(why, PRS_EINVAL, "algorithm", "is unknown");
    int rate_algo = uses_rate(cfg->algorithm);
    int rate = !!(given & PRS_REDIS_GIVEN_RATE), burst = !!(given & PRS_REDIS_GIVEN_BURST);
    int limit = !!(given & PRS_REDIS_GIVEN_LIMIT), window = !!(given & PRS_REDIS_GIVEN_WINDOW);
    const char *field = rate || burst ? "rate" : "limit";
    if (rate_algo && (rate || burst) && (limit || window))
        return prs_config_fail(why, PRS_EINVAL, field, "takes rate and burst, or limit and window, not both");
    if (!rate_algo && (rate || burst))
        return prs_config_fail(why, PRS_EINVAL, field,
                               "takes limit and window; rate and burst are for gcra and token_bucket");
    if (rate || burst) {
        if (!rate) return prs_config_fail(why, PRS_EINVAL, "rate", "needs both rate and burst (missing rate)");
        if (!burst) return prs_config_fail(why, PRS_EINVAL, "burst", "needs both rate and burst (missing burst)");
        cfg->from_window = 0;
        return PRS_OK;
    }
    if (!limit || !window)
        return prs_config_fail(why, PRS_EINVAL, limit ? "window" : "limit",
                               rate_algo ? "needs rate and burst (or limit and window)"
                                         : "needs both limit and window");
    cfg->from_window = rate_algo;
    return PRS_OK;
}

void prs_redis_limiter_config_init(prs_redis_limiter_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->algorithm = PRS_REDIS_GCRA;
    cfg->rate = 1.0;
    cfg->burst = 1;
    cfg->limit = 1;
    cfg->window_ns = PRS_NS_PER_SEC;
    cfg->key_prefix = "prs:";
    cfg->lease_max_keys = 4096;
    cfg->on_backend_error = PRS_REDIS_RAISE;
    cfg->local_max_keys = 10000;
}

#define MAX_COUNT (INT64_C(1) << 50)
#define HOUR_NS (3600 * PRS_NS_PER_SEC)
#define MAX_WINDOW_NS (10 * 366 * 86400 * PRS_NS_PER_SEC)
#define FAIL(status, field, reason) return prs_config_fail(why, status, field, reason)

/* rate and burst as the scripts see them: given, or from limit and window. */
static void sizing(const prs_redis_limiter_config *cfg, double *rate, int64_t *burst) {
    if (cfg->from_window) {
        *rate = (double)cfg->limit * 1e9 / (double)cfg->window_ns;
        *burst = cfg->limit;
    } else {
        *rate = cfg->rate;
        *burst = cfg->burst;
    }
}

static int check_window(const prs_redis_limiter_config *cfg, prs_config_error *why) {
    if (cfg->limit < 1) FAIL(PRS_EINVAL, "limit", "must be >= 1");
    if (cfg->limit > MAX_COUNT) FAIL(PRS_ERANGE, "limit", "must be <= 2**50");
    if (cfg->algorithm == PRS_REDIS_SLIDING_WINDOW_LOG && cfg->limit > 1000000)
        FAIL(PRS_ERANGE, "limit", "must be <= 1000000 for sliding_window_log (it keeps one entry per permit)");
    if (cfg->window_ns < PRS_NS_PER_US) FAIL(PRS_EINVAL, "window_ns", "must be >= 1 microsecond");
    if (cfg->window_ns > MAX_WINDOW_NS) FAIL(PRS_ERANGE, "window_ns", "must be <= 10 years");
    return PRS_OK;
}

int prs_redis_limiter_config_check(const prs_redis_limiter_config *cfg, prs_config_error *why) {
    if (!cfg) FAIL(PRS_EINVAL, NULL, "no config");
    if (!prs_redis_algorithm_name(cfg->algorithm))
        FAIL(PRS_EINVAL, "algorithm",
             "must be one of 'gcra', 'token_bucket', 'fixed_window', 'sliding_window_counter', "
             "'sliding_window_log'");
    int rc;
    if (uses_rate(cfg->algorithm)) {
        if (cfg->from_window && (rc = check_window(cfg, why))) return rc;
        double rate;
        int64_t burst;
        sizing(cfg, &rate, &burst);
        if (!isfinite(rate) || !(rate > 0.0)) FAIL(PRS_EINVAL, "rate", "must be a finite number > 0");
        if (rate < 1e-9 || rate > 1e12) FAIL(PRS_ERANGE, "rate", "must be between 1e-9 and 1e12 per second");
        if (burst < 1) FAIL(PRS_EINVAL, "burst", "must be >= 1");
        if (burst > MAX_COUNT) FAIL(PRS_ERANGE, "burst", "must be <= 2**50");
        if (cfg->lease_batch < 0) FAIL(PRS_EINVAL, "lease_batch", "must be >= 0");
        if (cfg->lease_batch > burst) FAIL(PRS_EINVAL, "lease_batch", "must not exceed burst (batch <= burst)");
        if (cfg->lease_batch > 0) {
            if (cfg->lease_max_hold_ns <= 0) FAIL(PRS_EINVAL, "lease_max_hold_ns", "must be > 0");
            if (cfg->lease_max_hold_ns > HOUR_NS) FAIL(PRS_ERANGE, "lease_max_hold_ns", "must be <= 3600 seconds");
            if (cfg->lease_max_keys < 1 || cfg->lease_max_keys > (1 << 24))
                FAIL(PRS_EINVAL, "lease_max_keys", "must be between 1 and 2**24");
        }
    } else {
        if ((rc = check_window(cfg, why))) return rc;
        if (cfg->lease_batch != 0) FAIL(PRS_EINVAL, "lease_batch", "works only with gcra and token_bucket");
    }
    const char *p = cfg->key_prefix ? cfg->key_prefix : "";
    if (strlen(p) > MAX_PREFIX) FAIL(PRS_EINVAL, "key_prefix", "must be at most 1024 bytes");
    if (strchr(p, '{') || strchr(p, '}'))
        FAIL(PRS_EINVAL, "key_prefix", "must not contain '{' or '}' (the limiter owns the hash tag)");
    if (!prs_redis_policy_name(cfg->on_backend_error))
        FAIL(PRS_EINVAL, "on_backend_error", "must be 'raise', 'allow', 'deny' or 'local'");
    if (cfg->local_share != 0.0) {
        if (!(cfg->local_share > 0.0 && cfg->local_share <= 1.0))
            FAIL(PRS_EINVAL, "local_share", "must be in (0, 1]");
        if (cfg->on_backend_error != PRS_REDIS_LOCAL)
            FAIL(PRS_EINVAL, "local_share", "is only used with on_backend_error='local'");
    }
    if (cfg->on_backend_error == PRS_REDIS_LOCAL) {
        if (cfg->fallback && !cfg->fallback->decide) FAIL(PRS_EINVAL, "fallback", "needs a decide function");
        if (cfg->fallback && !cfg->fallback->lock != !cfg->fallback->unlock)
            FAIL(PRS_EINVAL, "fallback", "needs both lock and unlock, or neither");
        if (!cfg->fallback && (cfg->local_max_keys < 1 || cfg->local_max_keys > PRS_KEYED_MAX_KEYS))
            FAIL(PRS_EINVAL, "local_max_keys", "must be between 1 and 2**31");
    }
    return PRS_OK;
}

int prs_redis_limiter_config_validate(const prs_redis_limiter_config *cfg) {
    prs_config_error why = {NULL, NULL};
    int rc = prs_redis_limiter_config_check(cfg, &why);
    if (rc) prs_redis__set_error("%s %s", why.field ? why.field : "config", why.reason);
    return rc;
}

/* ---- the built-in local fallback --------------------------------------------- */

static int own_decide(void *ctx, const void *key, size_t keylen, int64_t n, int consume, prs_decision *d) {
    prs_keyed *t = ((prs_redis_limiter *)ctx)->own;
    int64_t now = prs_monotonic_ns();
    return consume ? prs_keyed_check(t, key, keylen, now, n, d) : prs_keyed_peek(t, key, keylen, now, n, d);
}
static void own_lock(void *ctx) { pthread_mutex_lock(&((prs_redis_limiter *)ctx)->fmu); }
static void own_unlock(void *ctx) { pthread_mutex_unlock(&((prs_redis_limiter *)ctx)->fmu); }

/* Shares of a count, at least 1. */
static int64_t share_of(int64_t v, double share) {
    double s = floor((double)v * share);
    return s < 1 ? 1 : (int64_t)s;
}

/* The keyed table of in-process limiters: the algorithm of the limiter with
 * local_share of its size. PRS_OK, PRS_ENOMEM. */
static int own_fallback_new(prs_redis_limiter *l, const prs_redis_limiter_config *cfg) {
    double share = cfg->local_share > 0 ? cfg->local_share : 1.0, rate;
    int64_t burst;
    sizing(cfg, &rate, &burst);
    union {
        prs_gcra_config g;
        prs_token_bucket_config t;
        prs_fixed_window_config f;
        prs_sliding_counter_config c;
        prs_sliding_log_config s;
    } c;
    const prs_algo *algo = prs_algorithms[algo_row[cfg->algorithm]].algo;
    /* the window algorithms' configs: the same two fields */
#define WINDOW_CONFIG(x, init)                          \
    do {                                                \
        init(&(x));                                     \
        (x).limit = share_of(cfg->limit, share);        \
        (x).window_ns = cfg->window_ns;                 \
    } while (0)
    switch (cfg->algorithm) {
    case PRS_REDIS_GCRA:
        prs_gcra_config_init(&c.g);
        c.g.rate = rate * share;
        c.g.burst = share_of(burst, share);
        break;
    case PRS_REDIS_TOKEN_BUCKET:
        prs_token_bucket_config_init(&c.t);
        c.t.capacity = (double)share_of(burst, share);
        c.t.refill_rate = rate * share;
        break;
    case PRS_REDIS_FIXED_WINDOW: WINDOW_CONFIG(c.f, prs_fixed_window_config_init); break;
    case PRS_REDIS_SLIDING_WINDOW_COUNTER: WINDOW_CONFIG(c.c, prs_sliding_counter_config_init); break;
    default: WINDOW_CONFIG(c.s, prs_sliding_log_config_init); break;
    }
#undef WINDOW_CONFIG
    _Alignas(max_align_t) unsigned char params[PRS_ALGO_MAX_CONFIG * 2];
    if (algo->params_size > sizeof params) return PRS_ENOMEM;
    int rc = algo->params_from_config(&c, params, NULL);
    if (rc) return rc; /* cannot happen: the shares of a valid config are valid */
    prs_keyed_config kc;
    prs_keyed_config_init(&kc);
    kc.algo = algo;
    kc.params = params;
    kc.max_keys = cfg->local_max_keys;
    kc.allocator = &l->alloc;
    rc = prs_keyed_new(&kc, &l->own);
    if (rc) return rc;
    if (pthread_mutex_init(&l->fmu, NULL)) {
        prs_keyed_free(l->own);
        l->own = NULL;
        return PRS_ENOMEM;
    }
    l->fb.decide = own_decide;
    l->fb.lock = own_lock;
    l->fb.unlock = own_unlock;
    l->fb.ctx = l;
    return PRS_OK;
}

static uint64_t random_u64(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        uint64_t r;
        if (fread(&r, sizeof r, 1, f) == 1) x ^= r;
        fclose(f);
    }
    return x;
}

static void limiter_free(prs_redis_limiter *l);

int prs_redis_limiter_new(prs_redis_backend *b, const prs_redis_limiter_config *cfg, prs_redis_limiter **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!b) return PRS_EINVAL;
    int rc = prs_redis_limiter_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_redis_limiter *l = prs__calloc(a, 1, sizeof *l);
    if (!l) return PRS_ENOMEM;
    l->alloc = *a;
    const char *p = cfg->key_prefix ? cfg->key_prefix : "";
    l->prefix_len = strlen(p);
    l->prefix = prs__malloc(a, l->prefix_len + 1);
    if (!l->prefix) { limiter_free(l); return PRS_ENOMEM; }
    memcpy(l->prefix, p, l->prefix_len + 1);
    l->b = b;
    l->algorithm = cfg->algorithm;
    l->nkeys = cfg->algorithm == PRS_REDIS_SLIDING_WINDOW_COUNTER ? 2 : 1;
    double rate;
    int64_t burst;
    sizing(cfg, &rate, &burst);
    /* The scripts' two parameters: what each algorithm's script reads. */
    if (uses_rate(cfg->algorithm)) {
        /* The token bucket is GCRA's state (redis_scripts.c): the time its
         * bucket is full again, T = 1/rate, burst = capacity. */
        l->limit = burst;
        snprintf(l->p1, sizeof l->p1, "%.17g", 1e6 / rate);
        snprintf(l->p2, sizeof l->p2, "%lld", (long long)burst);
        l->interval_us = strtod(l->p1, NULL);
        l->check_script = prs_redis__check_script(cfg->algorithm, l->interval_us, burst, 0);
        l->check_incr = l->check_script >= 0 && prs_redis__bucket_incr(l->interval_us, burst);
        l->check_quarters = l->check_script >= 0 && !l->check_incr;
    } else {
        l->limit = cfg->limit;
        snprintf(l->p1, sizeof l->p1, "%lld", (long long)cfg->limit);
        snprintf(l->p2, sizeof l->p2, "%.17g", (double)cfg->window_ns / 1e3);
        l->window_us = (double)cfg->window_ns / 1e3;
        l->ttllen = fmt_i64(l->ttl, (int64_t)ceil(l->window_us / 1000) + 1);
        l->check_script = cfg->algorithm != PRS_REDIS_SLIDING_WINDOW_LOG ? -1
            : prs_redis__check_script(cfg->algorithm, l->window_us, cfg->limit,
                                      (int64_t)ceil(l->window_us / 1000) + 1);
    }
    l->p1len = strlen(l->p1);
    l->p2len = strlen(l->p2);
    l->lease_batch = cfg->lease_batch;
    l->lease_max_hold_ns = cfg->lease_max_hold_ns;
    l->lease_max_keys = cfg->lease_max_keys;
    prs_redis__fork_init();
    atomic_init(&l->gen, prs_redis__fork_gen());
    atomic_init(&l->resetting, 0);
    if (l->lease_batch > 0) {
        size_t nb = 16;
        while (nb < (size_t)l->lease_max_keys) nb <<= 1;
        l->buckets = prs__calloc(a, nb, sizeof *l->buckets);
        if (!l->buckets) { limiter_free(l); return PRS_ENOMEM; }
        if (pthread_mutex_init(&l->lmu, NULL)) {
            prs__free(a, l->buckets);
            l->buckets = NULL;
            limiter_free(l);
            return PRS_ENOMEM;
        }
        l->nbuckets = nb;
        l->k0 = random_u64();
        l->k1 = random_u64();
    }
    l->policy = cfg->on_backend_error;
    if (l->policy == PRS_REDIS_LOCAL) {
        if (cfg->fallback) {
            l->fb = *cfg->fallback;
        } else if ((rc = own_fallback_new(l, cfg))) {
            limiter_free(l);
            return rc;
        }
    }
    *out = l;
    return PRS_OK;
}

static void drop_all_leases(prs_redis_limiter *l) {
    for (size_t i = 0; i < l->nbuckets; i++) {
        lease *e = l->buckets[i];
        while (e) { lease *nx = e->next; prs__free(&l->alloc, e); e = nx; }
        l->buckets[i] = NULL;
    }
    l->nleases = 0;
}

static void limiter_free(prs_redis_limiter *l) {
    prs_allocator a = l->alloc;
    if (l->buckets) {
        drop_all_leases(l);
        pthread_mutex_destroy(&l->lmu);
        prs__free(&a, l->buckets);
    }
    if (l->own) {
        prs_keyed_free(l->own);
        pthread_mutex_destroy(&l->fmu);
    }
    prs__free(&a, l->prefix);
    prs__free(&a, l);
}

void prs_redis_limiter_free(prs_redis_limiter *l) {
    if (l) limiter_free(l);
}

/* ---- keys ------------------------------------------------------------------ */

/* The hash tag Redis would use for K alone: [*off, *off + *len) when K has a
 * non-empty one. */
static int own_tag(const unsigned char *k, size_t n, size_t *off, size_t *len) {
    const unsigned char *o = memchr(k, '{', n);
    if (!o) return 0;
    size_t s = (size_t)(o - k) + 1;
    const unsigned char *c = memchr(k + s, '}', n - s);
    if (!c || (size_t)(c - k) == s) return 0;
    *off = s;
    *len = (size_t)(c - k) - s;
    return 1;
}

/* Writes the Redis key of (key, suffix) into buf (cap bytes) and returns its
 * length (which may exceed cap: then nothing useful was written). */
static size_t make_key(const prs_redis_limiter *l, const unsigned char *key, size_t n, char sfx,
                       const char *extra, size_t extralen, char *buf, size_t cap) {
    int plain = n > 0 && !memchr(key, '{', n) && !memchr(key, '}', n);
    char hex[17];
    const unsigned char *tag;
    size_t taglen, off = 0;
    if (plain) {
        tag = key;
        taglen = n;
    } else if (own_tag(key, n, &off, &taglen)) {
        tag = key + off;
    } else {
        uint64_t h = prs_redis__siphash(key, n, 0x7072735f72656469ull, 0x735f6b65795f7461ull);
        static const char digits[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) hex[i] = digits[(h >> (60 - 4 * i)) & 15];
        tag = (const unsigned char *)hex;
        taglen = 16;
    }
    size_t total = l->prefix_len + 1 + taglen + 1 + (plain ? 0 : n) + 2 + extralen;
    if (total > cap) return total;
    char *p = buf;
    memcpy(p, l->prefix, l->prefix_len); p += l->prefix_len;
    *p++ = '{';
    memcpy(p, tag, taglen); p += taglen;
    *p++ = '}';
    if (!plain) { memcpy(p, key, n); p += n; }
    *p++ = ':';
    *p++ = sfx;
    if (extralen) memcpy(p, extra, extralen);
    return total;
}

size_t prs_redis_limiter_redis_key(const prs_redis_limiter *l, const void *key, size_t keylen, char *buf,
                                   size_t cap) {
    return make_key(l, key, keylen, algo_suffix[l->algorithm], NULL, 0, buf, cap);
}

/* Keys of one decision, in caller-provided small buffers or on the heap. */
typedef struct keyset {
    char *k[2];
    size_t len[2];
    char small[2][STACK_KEY];
    int heap[2];
} keyset;

static size_t fmt_i64(char *buf, int64_t v);

/* The fixed window's counter for the window holding now_us: the value is a
 * 53-bit signed field (BITFIELD i53 at offset 0, 7 bytes) that starts at
 * FW_TOP - limit, so that INCRBY with OVERFLOW FAIL refuses exactly the
 * increments that would take the count past the limit. One key per window
 * (and limit: the start value depends on it), named by the window's index;
 * it lives until the window's end. */
#define FW_TOP ((INT64_C(1) << 52) - 1)

static int64_t fw_index(const prs_redis_limiter *l, int64_t now_us) {
    return (int64_t)floor((double)now_us / l->window_us);
}

/* "<index>/<limit>" of the window holding now_us, into buf (>= 48 bytes). */
static size_t fw_extra(const prs_redis_limiter *l, int64_t now_us, char *buf) {
    size_t len = fmt_i64(buf, fw_index(l, now_us));
    buf[len++] = '/';
    return len + fmt_i64(buf + len, l->limit);
}

/* The Redis keys of one decision at now_us (< 0: the window algorithms'
 * stems, without a window: enough for the hash slot). The sliding window
 * counter keeps one counter per window too: this window's and the one
 * before, "<index>" each. */
static int keyset_make(const prs_redis_limiter *l, const void *key, size_t n, int64_t now_us, keyset *ks) {
    for (int i = 0; i < l->nkeys; i++) {
        char extra[48];
        size_t extralen = 0;
        if (now_us >= 0 && l->algorithm == PRS_REDIS_FIXED_WINDOW) extralen = fw_extra(l, now_us, extra);
        if (now_us >= 0 && l->algorithm == PRS_REDIS_SLIDING_WINDOW_COUNTER)
            extralen = fmt_i64(extra, fw_index(l, now_us) - i);
        char sfx = algo_suffix[l->algorithm];
        size_t need = make_key(l, key, n, sfx, extra, extralen, ks->small[i], STACK_KEY);
        ks->heap[i] = need > STACK_KEY;
        if (ks->heap[i]) {
            ks->k[i] = prs__malloc(&l->alloc, need);
            if (!ks->k[i]) {
                if (i == 1 && ks->heap[0]) prs__free(&l->alloc, ks->k[0]);
                prs_redis__set_error("out of memory");
                return PRS_ENOMEM;
            }
            make_key(l, key, n, sfx, extra, extralen, ks->k[i], need);
        } else {
            ks->k[i] = ks->small[i];
        }
        ks->len[i] = need;
    }
    return PRS_OK;
}

static void keyset_free(const prs_redis_limiter *l, keyset *ks) {
    for (int i = 0; i < l->nkeys; i++)
        if (ks->heap[i]) prs__free(&l->alloc, ks->k[i]);
}

/* CRC16-CCITT (XMODEM), the Cluster's key hash. */
static uint16_t crc16(const unsigned char *p, size_t n) {
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++) crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int prs_redis_key_slot(const void *key, size_t len) {
    size_t off, tl;
    if (own_tag(key, len, &off, &tl)) return crc16((const unsigned char *)key + off, tl) & 16383;
    return crc16(key, len) & 16383;
}

int prs_redis_group_slot(size_t count, const prs_redis_member *m) {
    int slot = -1;
    for (size_t i = 0; i < count; i++) {
        if (!m || !m[i].limiter || (!m[i].key && m[i].keylen)) return -1;
        keyset ks;
        if (keyset_make(m[i].limiter, m[i].key ? m[i].key : "", m[i].keylen, -1, &ks)) return -1;
        int s = prs_redis_key_slot(ks.k[0], ks.len[0]);
        keyset_free(m[i].limiter, &ks);
        if (slot >= 0 && s != slot) return -1;
        slot = s;
    }
    return slot;
}

int prs_redis_group_members_check(size_t count, const prs_redis_member *m, size_t *bad) {
    *bad = 0;
    if (count < 1 || count > PRS_REDIS_GROUP_MAX || !m) return PRS_ERANGE;
    for (size_t i = 0; i < count; i++)
        if (!m[i].limiter || m[i].limiter->b != m[0].limiter->b) {
            *bad = i;
            prs_redis__set_error("members[%zu] uses another RedisBackend: a group runs one script on one server",
                                 i);
            return PRS_EINVAL;
        }
    if (prs_redis_backend_is_cluster(m[0].limiter->b) && prs_redis_group_slot(count, m) < 0) {
        *bad = count;
        prs_redis__set_error("a group on a Redis Cluster needs every member's key in one hash slot: give the keys "
                             "a common hash tag, e.g. '{acct42}user' and '{acct42}global'");
        return PRS_EINVAL;
    }
    return PRS_OK;
}

/* ---- calls ------------------------------------------------------------------ */

/* One decision's commands: an EVALSHA, or for the fixed window MULTI, SET
 * NX (the window's start value and TTL), BITFIELD (the conditional
 * increment), EXEC; or a GET (its peek). */
typedef struct call {
    const char *argv[24];
    size_t lens[24];
    char nbuf[6][24];
    char cut[40];                  /* the sliding log's check: now - W, %.17g */
    unsigned char start[7];        /* the fixed window's start value (FW_TOP - limit as i53) */
    keyset ks;
    prs_redis__cmd cmds[4];
    size_t ncmds;
    char kind;                     /* 's' script, 'q' check script, 'x' fixed window increment, 'g' fixed window GET */
    char mode;
    int64_t n;
    double wend_us;                /* the fixed window: time left in the window */
} call;

/* Decimal of v into buf (>= 21 bytes), NUL-terminated; returns the length.
 * (snprintf costs more than the rest of building a command.) */
static size_t fmt_i64(char *buf, int64_t v) {
    char tmp[24];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t i = 0, n = 0;
    do { tmp[i++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) buf[n++] = '-';
    while (i) buf[n++] = tmp[--i];
    buf[n] = '\0';
    return n;
}

/* The fixed window's commands for one decision (see FW_TOP): a check is
 * MULTI / SET key start NX PX ttl / BITFIELD key OVERFLOW FAIL INCRBY i53 0 n
 * GET i53 0 / EXEC, exact without a script (a refused increment changes
 * nothing); a peek, or an n beyond the limit, is a GET. */
static void fw_commands(prs_redis_limiter *l, call *c, int64_t now_us) {
    double idx = floor((double)now_us / l->window_us);
    c->wend_us = (idx + 1) * l->window_us - (double)now_us;
    size_t i = 0;
    if (c->mode != 'c' || c->n > l->limit) {
        c->kind = 'g';
        c->argv[0] = "GET"; c->lens[0] = 3;
        c->argv[1] = c->ks.k[0]; c->lens[1] = c->ks.len[0];
        c->cmds[0] = (prs_redis__cmd){2, c->argv, c->lens, -1, 0, 0};
        c->ncmds = 1;
        return;
    }
    c->kind = 'x';
    uint64_t raw = (uint64_t)(FW_TOP - l->limit) << 3; /* 53 bits, most significant first */
    for (int b = 0; b < 7; b++) c->start[b] = (unsigned char)(raw >> (8 * (6 - b)));
    static const char *const bf[] = {"BITFIELD", NULL, "OVERFLOW", "FAIL", "INCRBY", "i53", "0", NULL,
                                     "GET", "i53", "0"};
    c->argv[i] = "MULTI"; c->lens[i++] = 5;
    c->cmds[0] = (prs_redis__cmd){1, &c->argv[0], &c->lens[0], -1, 0, 0};
    c->argv[i] = "SET"; c->lens[i++] = 3;
    c->argv[i] = c->ks.k[0]; c->lens[i++] = c->ks.len[0];
    c->argv[i] = (const char *)c->start; c->lens[i++] = 7;
    c->argv[i] = "NX"; c->lens[i++] = 2;
    c->argv[i] = "PX"; c->lens[i++] = 2;
    c->argv[i] = c->nbuf[0]; c->lens[i++] = fmt_i64(c->nbuf[0], (int64_t)ceil(c->wend_us / 1000) + 1);
    c->cmds[1] = (prs_redis__cmd){6, &c->argv[1], &c->lens[1], -1, 0, 0};
    size_t at = i;
    for (size_t k = 0; k < 11; k++, i++) {
        c->argv[i] = k == 1 ? c->ks.k[0] : k == 7 ? c->nbuf[1] : bf[k];
        c->lens[i] = k == 1 ? c->ks.len[0] : k == 7 ? fmt_i64(c->nbuf[1], c->n) : strlen(bf[k]);
    }
    c->cmds[2] = (prs_redis__cmd){11, &c->argv[at], &c->lens[at], -1, 0, 0};
    c->argv[i] = "EXEC"; c->lens[i] = 4;
    c->cmds[3] = (prs_redis__cmd){1, &c->argv[i], &c->lens[i], -1, 0, 0};
    c->ncmds = 4;
}

/* Prepares one decision's commands. mode: 'c', 'p', 'l'. now_us < 0: Redis's
 * clock (the backend's estimate: the scripts never call TIME). */
static int call_init(prs_redis_limiter *l, call *c, const void *key, size_t keylen, char mode, int64_t n,
                     int64_t want, int64_t give, int64_t now_us) {
    if (now_us < 0) now_us = prs_redis__now_us(l->b);
    int rc = keyset_make(l, key, keylen, now_us, &c->ks);
    if (rc) return rc;
    c->mode = mode;
    c->n = n;
    int slot = prs_redis_key_slot(c->ks.k[0], c->ks.len[0]); /* every key of a decision: one hash tag */
    if (l->algorithm == PRS_REDIS_FIXED_WINDOW) {
        fw_commands(l, c, now_us);
        for (size_t k = 0; k < c->ncmds; k++) c->cmds[k].slot = slot;
        c->cmds[0].nblock = (int)c->ncmds;
        return PRS_OK;
    }
    static char nk[3][2] = {"0", "1", "2"};
    int i = 0;
    if (mode == 'c' && l->algorithm != PRS_REDIS_SLIDING_WINDOW_COUNTER) {
        /* a plain check: the check-only scripts (redis_scripts.c) */
        int log = l->algorithm == PRS_REDIS_SLIDING_WINDOW_LOG, own = l->check_script >= 0;
        if (l->check_incr && n > l->limit) own = 0; /* no n * T to send: the generic script denies it */
        const prs_redis__script *s = &prs_redis__scripts()[own ? l->check_script
                                                          : log ? PRS_REDIS__SCRIPT_LOG_CHECK
                                                                : PRS_REDIS__SCRIPT_BUCKET_CHECK];
        c->argv[i] = "EVALSHA"; c->lens[i++] = 7;
        c->argv[i] = s->sha; c->lens[i++] = 40;
        c->argv[i] = nk[1]; c->lens[i++] = 1;
        c->argv[i] = c->ks.k[0]; c->lens[i++] = c->ks.len[0];
        c->argv[i] = c->nbuf[0]; c->lens[i++] = fmt_i64(c->nbuf[0], now_us);
        c->argv[i] = c->nbuf[1]; c->lens[i++] = fmt_i64(c->nbuf[1], n);
        if (own && l->check_incr) {
            c->argv[i] = c->nbuf[2]; c->lens[i++] = fmt_i64(c->nbuf[2], n * (int64_t)l->interval_us);
        }
        /* between 2^50 and 2^51 us every double is a whole number of quarter
         * microseconds: the state (in quarters) moves by one INCRBY of n * T
         * in quarters, rounded (redis_scripts.c, LUA_BUCKET_QUARTER_BODY) */
        double x4 = (double)n * l->interval_us * 4;
        if (own && l->check_quarters && n <= l->limit && now_us >= INT64_C(1) << 50 &&
            now_us < INT64_C(1) << 51 && x4 < 4e18) {
            c->argv[i] = c->nbuf[2]; c->lens[i++] = fmt_i64(c->nbuf[2], (int64_t)llrint(x4));
        }
        if (log) {
            c->argv[i] = c->cut;
            c->lens[i++] = (size_t)snprintf(c->cut, sizeof c->cut, "%.17g", (double)now_us - l->window_us);
        }
        if (!own) { /* the generic script: the parameters too */
            c->argv[i] = l->p1; c->lens[i++] = l->p1len;
            c->argv[i] = l->p2; c->lens[i++] = l->p2len;
            if (log) { c->argv[i] = l->ttl; c->lens[i++] = l->ttllen; }
        }
        c->cmds[0] = (prs_redis__cmd){i, c->argv, c->lens, (int)(s - prs_redis__scripts()), slot, 1};
        c->ncmds = 1;
        c->kind = 'q';
        return PRS_OK;
    }
    const prs_redis__script *s = &prs_redis__scripts()[l->algorithm];
    static const char modes[3][2] = {"c", "p", "l"};
    c->argv[i] = "EVALSHA"; c->lens[i++] = 7;
    c->argv[i] = s->sha; c->lens[i++] = 40;
    c->argv[i] = nk[l->nkeys]; c->lens[i++] = 1;
    for (int k = 0; k < l->nkeys; k++) { c->argv[i] = c->ks.k[k]; c->lens[i++] = c->ks.len[k]; }
    c->argv[i] = c->nbuf[0]; c->lens[i++] = fmt_i64(c->nbuf[0], now_us);
    c->argv[i] = modes[mode == 'c' ? 0 : mode == 'p' ? 1 : 2]; c->lens[i++] = 1;
    c->argv[i] = c->nbuf[1]; c->lens[i++] = fmt_i64(c->nbuf[1], n);
    c->argv[i] = c->nbuf[2]; c->lens[i++] = fmt_i64(c->nbuf[2], want < 0 ? 0 : want);
    c->argv[i] = c->nbuf[3]; c->lens[i++] = fmt_i64(c->nbuf[3], give < 0 ? 0 : give);
    c->argv[i] = l->p1; c->lens[i++] = l->p1len;
    c->argv[i] = l->p2; c->lens[i++] = l->p2len;
    c->cmds[0] = (prs_redis__cmd){i, c->argv, c->lens, l->algorithm, slot, 1};
    c->ncmds = 1;
    c->kind = 's';
    return PRS_OK;
}

static int64_t us_to_ns(double us) {
    if (us < 0) return PRS_NEVER;
    return prs__ceil_to_i64(us * 1e3);
}

static int reply_error(const redisReply *r) {
    if (r->type == REDIS_REPLY_ERROR) {
        prs_redis__set_error("redis: %.200s", r->str ? r->str : "error");
        return PRS_EBACKEND;
    }
    prs_redis__set_error("redis: unexpected reply type %d", r->type);
    return PRS_EPROTO;
}

/* Reads a decision string "allowed limit remaining retry_us reset_us granted". */
static int parse_decision(const redisReply *r, prs_decision *d, int64_t *granted) {
    if (r->type != REDIS_REPLY_STRING || !r->str) return reply_error(r);
    const char *p = r->str;
    char *end;
    long long v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = strtoll(p, &end, 10);
        if (end == p) goto bad;
        p = end;
    }
    double retry = strtod(p, &end);
    if (end == p) goto bad;
    p = end;
    double reset = strtod(p, &end);
    if (end == p) goto bad;
    p = end;
    long long g = strtoll(p, &end, 10);
    if (end == p) goto bad;
    d->allowed = v[0] != 0;
    d->limit = v[1];
    d->remaining = v[2] < 0 ? 0 : v[2];
    d->retry_after_ns = d->allowed ? 0 : us_to_ns(retry);
    d->reset_after_ns = reset < 0 ? 0 : us_to_ns(reset);
    if (granted) *granted = g;
    return PRS_OK;
bad:
    prs_redis__set_error("redis: malformed script reply %.60s", r->str);
    return PRS_EPROTO;
}

/* An admitted check's one-integer reply (redis_scripts.c, the check
 * scripts): the sliding log's remaining; the bucket's 4 * reset_after_us,
 * from which remaining follows as the script computed it. */
static int check_reply(const prs_redis_limiter *l, const call *c, long long v, prs_decision *d,
                       int64_t *granted) {
    if (v < 0) {
        prs_redis__set_error("redis: malformed script reply %lld", v);
        return PRS_EPROTO;
    }
    d->allowed = 1;
    d->limit = l->limit;
    d->retry_after_ns = 0;
    if (l->algorithm == PRS_REDIS_SLIDING_WINDOW_LOG) {
        d->remaining = v;
        d->reset_after_ns = us_to_ns(l->window_us);
    } else {
        double reset = (double)v / 4.0;
        double rem = floor((double)l->limit - reset / l->interval_us + 1e-9);
        d->remaining = rem < 0 ? 0 : (int64_t)rem;
        d->reset_after_ns = us_to_ns(reset);
    }
    if (granted) *granted = c->n;
    return PRS_OK;
}

/* The fixed window's decision from its count (after the increment when
 * admitted) and whether the increment went through. */
static void fw_decide(const prs_redis_limiter *l, const call *c, int64_t count, int admitted, prs_decision *d) {
    int64_t wend = us_to_ns(c->wend_us), lim = l->limit;
    d->limit = lim;
    d->reset_after_ns = count > 0 ? wend : 0;
    d->retry_after_ns = 0;
    if (admitted) {
        d->allowed = 1;
        d->remaining = lim - count;
        d->reset_after_ns = wend;
        return;
    }
    int fits = c->mode == 'p' && c->n <= lim && count + c->n <= lim;
    d->allowed = fits;
    d->remaining = prs__max64(0, lim - count - (fits ? c->n : 0));
    if (!fits) d->retry_after_ns = c->n > lim ? PRS_NEVER : wend;
}

/* The decision in a call's replies (replies[0..c->ncmds)). */
static int call_parse(const prs_redis_limiter *l, const call *c, redisReply *const *replies, prs_decision *d,
                      int64_t *granted) {
    if (c->kind == 's' || (c->kind == 'q' && replies[0]->type != REDIS_REPLY_INTEGER))
        return parse_decision(replies[0], d, granted);
    if (c->kind == 'q') return check_reply(l, c, replies[0]->integer, d, granted);
    int64_t start = FW_TOP - l->limit;
    if (granted) *granted = 0;
    if (c->kind == 'g') {
        const redisReply *r = replies[0];
        if (r->type == REDIS_REPLY_NIL) { fw_decide(l, c, 0, 0, d); return PRS_OK; }
        if (r->type != REDIS_REPLY_STRING || r->len < 7) return reply_error(r);
        uint64_t raw = 0;
        for (int b = 0; b < 7; b++) raw = raw << 8 | (unsigned char)r->str[b];
        fw_decide(l, c, (int64_t)(raw >> 3) - start, 0, d);
        return PRS_OK;
    }
    const redisReply *r = replies[3];
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return reply_error(r);
    const redisReply *bf = r->element[1];
    if (bf->type != REDIS_REPLY_ARRAY || bf->elements != 2 || bf->element[1]->type != REDIS_REPLY_INTEGER)
        return reply_error(bf->type == REDIS_REPLY_ERROR ? bf : r);
    int admitted = bf->element[0]->type == REDIS_REPLY_INTEGER;
    fw_decide(l, c, bf->element[1]->integer - start, admitted, d);
    if (granted && admitted) *granted = c->n;
    return PRS_OK;
}

static int run_one(prs_redis_limiter *l, const void *key, size_t keylen, char mode, int64_t n, int64_t want,
                   int64_t give, int64_t now_us, prs_decision *d, int64_t *granted) {
    call c;
    int rc = call_init(l, &c, key, keylen, mode, n, want, give, now_us);
    if (rc) return rc;
    redisReply *r[4] = {NULL, NULL, NULL, NULL};
    rc = prs_redis__roundtrip(l->b, c.ncmds, c.cmds, r);
    keyset_free(l, &c.ks);
    if (rc) return rc;
    rc = call_parse(l, &c, r, d, granted);
    for (size_t i = 0; i < c.ncmds; i++) freeReplyObject(r[i]);
    return rc;
}

/* ---- leases ------------------------------------------------------------------ */

/* In a forked child: re-make the locks (another thread of the parent may
 * have held one) and drop the inherited leases (the parent keeps spending
 * those; we must not). The fallback's in-process states are kept: they are
 * this process's own, like any in-process limiter's. */
static void limiter_reinit(void *ctx) {
    prs_redis_limiter *l = ctx;
    if (l->buckets) {
        pthread_mutex_init(&l->lmu, NULL);
        drop_all_leases(l);
    }
    if (l->own) pthread_mutex_init(&l->fmu, NULL);
}

static void locks_after_fork(prs_redis_limiter *l) {
    prs_redis__after_fork(&l->gen, &l->resetting, limiter_reinit, l);
}

static lease *lease_find(prs_redis_limiter *l, uint64_t h, const void *key, size_t n, lease ***slot) {
    lease **pp = &l->buckets[h & (l->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        lease *e = *pp;
        if (e->hash == h && e->keylen == n && !memcmp(e->key, key, n)) {
            if (slot) *slot = pp;
            return e;
        }
    }
    if (slot) *slot = pp;
    return NULL;
}

/* Frees one lease that holds nothing usable (empty or expired); 1 if one was freed. */
static int lease_evict_one(prs_redis_limiter *l, int64_t now) {
    for (size_t i = 0; i < l->nbuckets; i++) {
        for (lease **pp = &l->buckets[i]; *pp; pp = &(*pp)->next) {
            lease *e = *pp;
            if (e->left == 0 || now >= e->expires_ns) {
                *pp = e->next;
                prs__free(&l->alloc, e);
                l->nleases--;
                return 1;
            }
        }
    }
    return 0;
}

/* Adds `extra` permits to key's lease (creating it). Caller holds lmu.
 * Returns the permits stored (0 when the table is full of live leases). */
static int64_t lease_add(prs_redis_limiter *l, uint64_t h, const void *key, size_t n, int64_t extra, int64_t now) {
    lease **slot;
    lease *e = lease_find(l, h, key, n, &slot);
    if (!e) {
        if (l->nleases >= l->lease_max_keys && !lease_evict_one(l, now)) return 0;
        e = prs__malloc(&l->alloc, sizeof *e + n);
        if (!e) return 0;
        lease_find(l, h, key, n, &slot); /* eviction may have changed the chain */
        e->next = NULL;
        e->hash = h;
        e->left = 0;
        e->expires_ns = 0;
        e->denied_n = 0;
        e->denied_until = 0;
        e->keylen = n;
        memcpy(e->key, key, n);
        *slot = e;
        l->nleases++;
    }
    int64_t until = prs__sat_add(now, l->lease_max_hold_ns);
    e->denied_n = 0;
    if (e->left <= 0 || now >= e->expires_ns) {
        e->left = extra;
        e->expires_ns = until;
    } else {
        e->left = prs__sat_add(e->left, extra);
        if (until < e->expires_ns) e->expires_ns = until;
    }
    return extra;
}

/* The local half of a leased check: PRS_OK with *d when the lease (or a
 * cached denial) decides, else PRS_EAGAIN with what the round trip asks for
 * (*want) and gives back (*give), *h and *now for lease_end. */
static int lease_begin(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n, prs_decision *d,
                       int local_only, int64_t *want, int64_t *give, uint64_t *h, int64_t *now) {
    locks_after_fork(l);
    *now = prs_monotonic_ns();
    *h = prs_redis__siphash(key, keylen, l->k0, l->k1);
    *give = 0;
    pthread_mutex_lock(&l->lmu);
    lease *e = lease_find(l, *h, key, keylen, NULL);
    if (e && e->denied_n && e->left == 0 && n >= e->denied_n && *now < e->denied_until) {
        /* Redis said no until then (its retry_after is exact when nobody gives
         * permits back): deny without a round trip. Under-admission only. */
        d->allowed = 0;
        d->limit = l->limit;
        d->remaining = 0;
        d->retry_after_ns = e->denied_until - *now;
        d->reset_after_ns = 0;
        pthread_mutex_unlock(&l->lmu);
        return PRS_OK;
    }
    if (e && e->left > 0) {
        if (*now < e->expires_ns && e->left >= n) {
            e->left -= n;
            d->allowed = 1;
            d->limit = l->limit;
            d->remaining = e->left;
            d->retry_after_ns = 0;
            d->reset_after_ns = 0;
            pthread_mutex_unlock(&l->lmu);
            return PRS_OK;
        }
        if (!local_only) {
            *give = e->left; /* expired or short: give it back with this round trip */
            e->left = 0;
        }
    }
    pthread_mutex_unlock(&l->lmu);
    *want = l->lease_batch > n ? l->lease_batch : n;
    return PRS_EAGAIN;
}

/* The other half, after the round trip decided *d and granted `granted`. */
static void lease_end(prs_redis_limiter *l, uint64_t h, const void *key, size_t keylen, int64_t n, int64_t now,
                      prs_decision *d, int64_t granted) {
    if (!d->allowed) {
        if (d->retry_after_ns != PRS_NEVER) {
            pthread_mutex_lock(&l->lmu);
            lease *f = lease_find(l, h, key, keylen, NULL);
            if (!f) { lease_add(l, h, key, keylen, 0, now); f = lease_find(l, h, key, keylen, NULL); }
            if (f && f->left == 0) {
                f->denied_n = n;
                f->denied_until = prs__sat_add(now, d->retry_after_ns);
            }
            pthread_mutex_unlock(&l->lmu);
        }
        return;
    }
    if (granted <= n) return;
    pthread_mutex_lock(&l->lmu);
    int64_t kept = lease_add(l, h, key, keylen, granted - n, now);
    pthread_mutex_unlock(&l->lmu);
    d->remaining = prs__sat_add(d->remaining, kept);
}

/* local_only: return PRS_EAGAIN instead of making a round trip. */
static int lease_check(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n, prs_decision *d,
                       int local_only) {
    int64_t want, give, now, granted = 0;
    uint64_t h;
    int rc = lease_begin(l, key, keylen, n, d, local_only, &want, &give, &h, &now);
    if (rc != PRS_EAGAIN || local_only) return rc;
    rc = run_one(l, key, keylen, 'l', n, want, give, -1, d, &granted);
    if (rc) return rc;
    lease_end(l, h, key, keylen, n, now, d, granted);
    return PRS_OK;
}

/* Detaches every lease (a forked child's first: see locks_after_fork) and
 * returns those with permits left, *count of them; frees the others. */
static lease *leases_detach(prs_redis_limiter *l, size_t *count) {
    locks_after_fork(l);
    pthread_mutex_lock(&l->lmu);
    lease *list = NULL;
    *count = 0;
    for (size_t i = 0; i < l->nbuckets; i++) {
        lease *e = l->buckets[i];
        l->buckets[i] = NULL;
        while (e) {
            lease *nx = e->next;
            if (e->left > 0) { e->next = list; list = e; (*count)++; }
            else prs__free(&l->alloc, e);
            e = nx;
        }
    }
    l->nleases = 0;
    pthread_mutex_unlock(&l->lmu);
    return list;
}

/* Drops key's lease, if any (a reset). */
static void lease_drop(prs_redis_limiter *l, const void *key, size_t keylen) {
    if (!l->buckets) return;
    locks_after_fork(l);
    uint64_t h = prs_redis__siphash(key, keylen, l->k0, l->k1);
    pthread_mutex_lock(&l->lmu);
    lease **slot;
    lease *e = lease_find(l, h, key, keylen, &slot);
    if (e) { *slot = e->next; prs__free(&l->alloc, e); l->nleases--; }
    pthread_mutex_unlock(&l->lmu);
}

static int release_leases(prs_redis_limiter *l) {
    /* Detach every lease with permits left, then give them back pipelined. */
    size_t count;
    lease *list = leases_detach(l, &count);
    if (!count) return PRS_OK;
    int rc = PRS_OK;
    call *calls = prs__calloc(&l->alloc, count, sizeof *calls);
    prs_redis__cmd *cmds = prs__calloc(&l->alloc, count, sizeof *cmds);
    redisReply **replies = prs__calloc(&l->alloc, count, sizeof *replies);
    size_t made = 0;
    if (!calls || !cmds || !replies) rc = PRS_ENOMEM;
    for (lease *e = list; e && rc == PRS_OK; e = e->next, made++) {
        rc = call_init(l, &calls[made], e->key, e->keylen, 'l', 0, 0, e->left, -1);
        if (rc == PRS_OK) cmds[made] = calls[made].cmds[0]; /* leases: gcra, token_bucket: one script call */
        else break;
    }
    if (rc == PRS_OK) {
        rc = prs_redis__roundtrip(l->b, count, cmds, replies);
        if (rc == PRS_OK)
            for (size_t i = 0; i < count; i++) freeReplyObject(replies[i]);
    }
    for (size_t i = 0; calls && i < made; i++) keyset_free(l, &calls[i].ks);
    prs__free(&l->alloc, calls);
    prs__free(&l->alloc, cmds);
    prs__free(&l->alloc, replies);
    while (list) { lease *nx = list->next; prs__free(&l->alloc, list); list = nx; }
    return rc;
}

/* ---- failure policies ----------------------------------------------------- */

/* Failures that no policy turns into a decision. */
static int policy_exempt(int rc) {
    return rc == PRS_ENOMEM || rc == PRS_EINVAL || rc == PRS_EBACKENDCLOSED;
}

/* ALLOW and DENY (no I/O, nothing consumed): ALLOW admits any n the limit
 * could ever admit, DENY denies with a retry after PRS_REDIS_DENY_RETRY_NS;
 * an n above the limit is never admitted. */
static void static_decision(const prs_redis_limiter *l, int64_t n, prs_decision *d) {
    d->allowed = l->policy == PRS_REDIS_ALLOW && n <= l->limit;
    d->limit = l->limit;
    d->remaining = 0;
    d->retry_after_ns = d->allowed ? 0 : (n > l->limit ? PRS_NEVER : PRS_REDIS_DENY_RETRY_NS);
    d->reset_after_ns = 0;
}

static void fb_lock(prs_redis_limiter *l) {
    locks_after_fork(l);
    if (l->fb.lock) l->fb.lock(l->fb.ctx);
}
static void fb_unlock(prs_redis_limiter *l) {
    if (l->fb.unlock) l->fb.unlock(l->fb.ctx);
}

/* What the limiter's policy makes of rc for (key, n): PRS_OK with *d, or a
 * status. consume: 1 check, 0 peek. */
static int apply_policy(prs_redis_limiter *l, int rc, const void *key, size_t keylen, int64_t n, int consume,
                        prs_decision *d) {
    if (rc == PRS_OK || policy_exempt(rc)) return rc;
    if (l->policy != PRS_REDIS_RAISE) atomic_fetch_add_explicit(&l->fallbacks, 1, memory_order_relaxed);
    switch (l->policy) {
    case PRS_REDIS_ALLOW:
    case PRS_REDIS_DENY:
        static_decision(l, n, d);
        return PRS_OK;
    case PRS_REDIS_LOCAL:
        fb_lock(l);
        rc = l->fb.decide(l->fb.ctx, key, keylen, n, consume, d);
        fb_unlock(l);
        return rc;
    default:
        return rc;
    }
}

/* ---- the public calls -------------------------------------------------------- */

uint64_t prs_redis_limiter_fallbacks(const prs_redis_limiter *l) {
    return l ? atomic_load_explicit(&l->fallbacks, memory_order_relaxed) : 0;
}

int prs_redis_limiter_release_leases(prs_redis_limiter *l) {
    if (!l || !l->buckets) return PRS_OK;
    int rc = release_leases(l);
    return l->policy == PRS_REDIS_RAISE ? rc : PRS_OK;
}

int prs_redis_limiter_check(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n, prs_decision *d) {
    if (!l || !d || (!key && keylen) || n < 1) return PRS_EINVAL;
    if (!key) key = "";
    int rc;
    if (l->lease_batch > 0 && n <= l->limit) rc = lease_check(l, key, keylen, n, d, 0);
    else rc = run_one(l, key, keylen, 'c', n, 0, 0, -1, d, NULL);
    return apply_policy(l, rc, key, keylen, n, 1, d);
}

int prs_redis_limiter_check_local(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n,
                                  prs_decision *d) {
    if (!l || !d || (!key && keylen) || n < 1) return PRS_EINVAL;
    if (l->lease_batch <= 0 || n > l->limit) return PRS_EAGAIN;
    return lease_check(l, key ? key : "", keylen, n, d, 1);
}

int prs_redis_limiter_peek(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n, prs_decision *d) {
    if (!l || !d || (!key && keylen) || n < 1) return PRS_EINVAL;
    if (!key) key = "";
    int rc = run_one(l, key, keylen, 'p', n, 0, 0, -1, d, NULL);
    return apply_policy(l, rc, key, keylen, n, 0, d);
}

int prs_redis_limiter_check_at(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n, int64_t now_us,
                               prs_decision *d) {
    if (!l || !d || (!key && keylen) || n < 1 || now_us < 0) return PRS_EINVAL;
    if (!key) key = "";
    int rc = run_one(l, key, keylen, 'c', n, 0, 0, now_us, d, NULL);
    return apply_policy(l, rc, key, keylen, n, 1, d);
}

/* A reset's one command: DEL of the key's Redis keys (the fixed window: this
 * window's, by Redis's clock), shared by the blocking call and its op. */
typedef struct reset_cmd {
    keyset ks;
    const char *argv[3];
    size_t lens[3];
    prs_redis__cmd cmd;
} reset_cmd;

static int reset_init(prs_redis_limiter *l, const void *key, size_t keylen, reset_cmd *r) {
    int rc = keyset_make(l, key, keylen, prs_redis__now_us(l->b), &r->ks);
    if (rc) return rc;
    r->argv[0] = "DEL"; r->lens[0] = 3;
    for (int i = 0; i < l->nkeys; i++) { r->argv[1 + i] = r->ks.k[i]; r->lens[1 + i] = r->ks.len[i]; }
    r->cmd = (prs_redis__cmd){1 + l->nkeys, r->argv, r->lens, -1, prs_redis_key_slot(r->ks.k[0], r->ks.len[0]), 1};
    return PRS_OK;
}

/* The reset's reply: PRS_OK unless Redis refused. */
static int reset_parse(const redisReply *r) {
    return r->type == REDIS_REPLY_ERROR ? reply_error(r) : PRS_OK;
}

int prs_redis_limiter_reset(prs_redis_limiter *l, const void *key, size_t keylen) {
    if (!l || (!key && keylen)) return PRS_EINVAL;
    if (!key) key = "";
    lease_drop(l, key, keylen);
    reset_cmd rq;
    int rc = reset_init(l, key, keylen, &rq);
    if (rc) return rc;
    redisReply *r = NULL;
    rc = prs_redis__roundtrip(l->b, 1, &rq.cmd, &r);
    keyset_free(l, &rq.ks);
    if (rc) return rc;
    rc = reset_parse(r);
    freeReplyObject(r);
    return rc;
}

int prs_redis_limiter_call(prs_redis_limiter *l, int kind, const void *key, size_t keylen, int64_t n,
                           int64_t now_us, prs_decision *d) {
    switch (kind) {
    case PRS_REDIS_OP_CHECK:
        return now_us >= 0 ? prs_redis_limiter_check_at(l, key, keylen, n, now_us, d)
                           : prs_redis_limiter_check(l, key, keylen, n, d);
    case PRS_REDIS_OP_PEEK: return prs_redis_limiter_peek(l, key, keylen, n, d);
    case PRS_REDIS_OP_RESET: return prs_redis_limiter_reset(l, key, keylen);
    default: return PRS_EINVAL;
    }
}

int prs_redis_limiter_check_many(prs_redis_limiter *l, size_t count, const prs_redis_request *reqs,
                                 prs_decision *d, int *status) {
    if (!l || (count && (!reqs || !d || !status))) return PRS_EINVAL;
    if (count == 0) return PRS_OK;
    for (size_t i = 0; i < count; i++)
        if (reqs[i].n < 1 || (!reqs[i].key && reqs[i].keylen)) return PRS_EINVAL;
    call *calls = prs__calloc(&l->alloc, count, sizeof *calls);
    prs_redis__cmd *cmds = prs__calloc(&l->alloc, 4 * count, sizeof *cmds);
    redisReply **replies = prs__calloc(&l->alloc, 4 * count, sizeof *replies);
    int rc = (!calls || !cmds || !replies) ? PRS_ENOMEM : PRS_OK;
    size_t made = 0, ncmds = 0;
    int64_t now_us = prs_redis__now_us(l->b);
    for (; rc == PRS_OK && made < count; made++) {
        rc = call_init(l, &calls[made], reqs[made].key ? reqs[made].key : "", reqs[made].keylen, 'c',
                       reqs[made].n, 0, 0, now_us);
        if (rc) break;
        for (size_t k = 0; k < calls[made].ncmds; k++) cmds[ncmds++] = calls[made].cmds[k];
    }
    if (rc == PRS_OK) rc = prs_redis__roundtrip(l->b, ncmds, cmds, replies);
    int first = PRS_OK;
    for (size_t i = 0, at = 0; i < count; i++) {
        if (rc) {
            status[i] = rc;
        } else {
            status[i] = call_parse(l, &calls[i], &replies[at], &d[i], NULL);
            for (size_t k = 0; k < calls[i].ncmds; k++) freeReplyObject(replies[at + k]);
            at += calls[i].ncmds;
        }
        status[i] = apply_policy(l, status[i], reqs[i].key ? reqs[i].key : "", reqs[i].keylen, reqs[i].n, 1, &d[i]);
        if (status[i] && first == PRS_OK) first = status[i];
    }
    for (size_t i = 0; calls && i < made; i++) keyset_free(l, &calls[i].ks);
    prs__free(&l->alloc, calls);
    prs__free(&l->alloc, cmds);
    prs__free(&l->alloc, replies);
    return first;
}

/* ---- groups ------------------------------------------------------------------ */

/* A group's one EVALSHA: its arguments and the buffers they point into. */
typedef struct group_cmd {
    const prs_allocator *a;
    size_t count, made;
    const prs_redis_member *m;
    const char **argv;
    size_t *lens;
    keyset *ks;
    char (*nums)[24];
    char mstr[24];
    prs_redis__cmd cmd;
} group_cmd;

static void group_cmd_free(group_cmd *g) {
    for (size_t k = 0; k < g->made; k++) keyset_free(g->m[k].limiter, &g->ks[k]);
    if (!g->a) return;
    prs__free(g->a, g->argv);
    prs__free(g->a, g->lens);
    prs__free(g->a, g->ks);
    prs__free(g->a, g->nums);
}

static int group_cmd_init(size_t count, const prs_redis_member *m, int64_t now_us, group_cmd *g) {
    memset(g, 0, sizeof *g);
    if (!count || !m || count > 10000) return PRS_EINVAL;
    prs_redis_backend *b = m[0].limiter ? m[0].limiter->b : NULL;
    if (!b) return PRS_EINVAL;
    if (now_us < 0) now_us = prs_redis__now_us(b); /* one time for every member (and its keys) */
    if (prs_redis_backend_is_cluster(b) && prs_redis_group_slot(count, m) < 0) {
        prs_redis__set_error("a group on a Redis Cluster needs every member's key in one hash slot: give the "
                             "keys a common hash tag, e.g. '{acct42}user' and '{acct42}global'");
        return PRS_EINVAL;
    }
    size_t nkeys = 0;
    for (size_t i = 0; i < count; i++) {
        if (!m[i].limiter || m[i].n < 1 || (!m[i].key && m[i].keylen)) return PRS_EINVAL;
        if (m[i].limiter->b != b) {
            prs_redis__set_error("every member of a group must use the same backend");
            return PRS_EINVAL;
        }
        nkeys += (size_t)m[i].limiter->nkeys;
    }
    const prs_allocator *a = g->a = prs_redis__backend_alloc(b);
    g->count = count;
    g->m = m;
    size_t argc = 3 + nkeys + 2 + 4 * count;
    g->argv = prs__calloc(a, argc, sizeof *g->argv);
    g->lens = prs__calloc(a, argc, sizeof *g->lens);
    g->ks = prs__calloc(a, count, sizeof *g->ks);
    g->nums = prs__calloc(a, count + 2, 24);
    int rc = (!g->argv || !g->lens || !g->ks || !g->nums) ? PRS_ENOMEM : PRS_OK;
    for (; rc == PRS_OK && g->made < count; g->made++) {
        rc = keyset_make(m[g->made].limiter, m[g->made].key ? m[g->made].key : "", m[g->made].keylen, now_us,
                         &g->ks[g->made]);
        if (rc) break;
    }
    if (rc) { group_cmd_free(g); return rc; }
    const prs_redis__script *s = &prs_redis__scripts()[PRS_REDIS__SCRIPT_GROUP];
    static const char *const algo_digit[] = {"0", "1", "2", "3", "4"};
    const char **argv = g->argv;
    size_t *lens = g->lens, i = 0;
    char (*nums)[24] = g->nums;
    argv[i] = "EVALSHA"; lens[i++] = 7;
    argv[i] = s->sha; lens[i++] = 40;
    argv[i] = nums[count]; lens[i++] = fmt_i64(nums[count], (int64_t)nkeys);
    for (size_t k = 0; k < count; k++)
        for (int j = 0; j < m[k].limiter->nkeys; j++) { argv[i] = g->ks[k].k[j]; lens[i++] = g->ks[k].len[j]; }
    argv[i] = nums[count + 1];
    lens[i++] = fmt_i64(nums[count + 1], now_us);
    argv[i] = g->mstr; lens[i++] = fmt_i64(g->mstr, (int64_t)count);
    for (size_t k = 0; k < count; k++) {
        const prs_redis_limiter *l = m[k].limiter;
        argv[i] = algo_digit[l->algorithm]; lens[i++] = 1;
        argv[i] = nums[k]; lens[i++] = fmt_i64(nums[k], m[k].n);
        argv[i] = l->p1; lens[i++] = l->p1len;
        argv[i] = l->p2; lens[i++] = l->p2len;
    }
    g->cmd.argc = (int)i;
    g->cmd.argv = argv;
    g->cmd.argvlen = lens;
    g->cmd.script = PRS_REDIS__SCRIPT_GROUP;
    g->cmd.slot = prs_redis_key_slot(g->ks[0].k[0], g->ks[0].len[0]);
    g->cmd.nblock = 1;
    return PRS_OK;
}

/* The group script's reply: the denying member and each member's decision. */
static int group_parse(size_t count, const redisReply *r, prs_decision *d, int *denied_by) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 + count || r->element[0]->type != REDIS_REPLY_INTEGER)
        return reply_error(r);
    long long denied = r->element[0]->integer;
    *denied_by = (int)denied;
    prs_decision best, cur;
    int have = 0;
    for (size_t k = 0; k < count; k++) {
        int rc = parse_decision(r->element[1 + k], &cur, NULL);
        if (rc) return rc;
        int better;
        if (!have) better = 1;
        else if (denied >= 0) better = !cur.allowed && (best.allowed || cur.retry_after_ns > best.retry_after_ns);
        else better = cur.remaining < best.remaining;
        int64_t reset = have ? prs__max64(best.reset_after_ns, cur.reset_after_ns) : cur.reset_after_ns;
        if (better) best = cur;
        best.reset_after_ns = reset;
        have = 1;
    }
    best.allowed = denied < 0;
    if (best.allowed) best.retry_after_ns = 0;
    *d = best;
    return PRS_OK;
}

static int group_run(size_t count, const prs_redis_member *m, int64_t now_us, prs_decision *d,
                     int *denied_by) {
    if (!d || !denied_by) return PRS_EINVAL;
    group_cmd g;
    int rc = group_cmd_init(count, m, now_us, &g);
    if (rc) return rc;
    redisReply *r = NULL;
    rc = prs_redis__roundtrip(m[0].limiter->b, 1, &g.cmd, &r);
    if (rc == PRS_OK) {
        rc = group_parse(count, r, d, denied_by);
        freeReplyObject(r);
    }
    group_cmd_free(&g);
    return rc;
}

/* Among two admitting decisions, is `a` the more restrictive? Less remaining;
 * on a tie, the longer reset. */
static int more_restrictive(const prs_decision *a, const prs_decision *b) {
    return a->remaining < b->remaining || (a->remaining == b->remaining && a->reset_after_ns > b->reset_after_ns);
}

/* Do members i and j ask one fallback state (the same fallback, the same key)? */
static int same_local(const prs_redis_member *i, const prs_redis_member *j) {
    return i->limiter->fb.ctx == j->limiter->fb.ctx && i->limiter->fb.decide == j->limiter->fb.decide &&
           i->keylen == j->keylen && (i->keylen == 0 || !memcmp(i->key, j->key, i->keylen));
}

/* The LOCAL members (idx[0..nlocal)) all or nothing: every distinct fallback
 * locked in ascending ctx order (locks[] is scratch room for nlocal), each
 * (fallback, key) peeked for the sum of what the group asks of it, then each
 * member's n taken. Folds the admitting decisions into *best (*have), or
 * sets *denied and *d to the first denial. */
static int group_local(const prs_redis_member *m, const size_t *idx, size_t nlocal, prs_redis_limiter **locks,
                       prs_decision *best, int *have, prs_decision *d, int *denied) {
    size_t nlocks = 0;
    for (size_t j = 0; j < nlocal; j++) {
        prs_redis_limiter *l = m[idx[j]].limiter;
        size_t at = 0;
        while (at < nlocks && (uintptr_t)locks[at]->fb.ctx < (uintptr_t)l->fb.ctx) at++;
        if (at < nlocks && locks[at]->fb.ctx == l->fb.ctx) continue;
        memmove(&locks[at + 1], &locks[at], (nlocks - at) * sizeof *locks);
        locks[at] = l;
        nlocks++;
    }
    for (size_t j = 0; j < nlocks; j++) fb_lock(locks[j]);
    int rc = PRS_OK;
    *denied = -1;
    for (size_t j = 0; j < nlocal && rc == PRS_OK && *denied < 0; j++) {
        const prs_redis_member *mj = &m[idx[j]];
        int first = 1;
        int64_t total = 0;
        for (size_t k = 0; k < nlocal && first; k++) {
            if (!same_local(mj, &m[idx[k]])) continue;
            if (k < j) first = 0;
            else total = prs__sat_add(total, m[idx[k]].n);
        }
        if (!first) continue;
        prs_decision pd;
        rc = mj->limiter->fb.decide(mj->limiter->fb.ctx, mj->key ? mj->key : "", mj->keylen, total, 0, &pd);
        if (rc == PRS_OK && !pd.allowed) {
            *d = pd;
            *denied = (int)idx[j];
        }
    }
    for (size_t j = 0; j < nlocal && rc == PRS_OK && *denied < 0; j++) {
        const prs_redis_member *mj = &m[idx[j]];
        prs_decision md;
        rc = mj->limiter->fb.decide(mj->limiter->fb.ctx, mj->key ? mj->key : "", mj->keylen, mj->n, 1, &md);
        if (rc == PRS_OK && (!*have || more_restrictive(&md, best))) *best = md;
        *have = 1;
    }
    for (size_t j = nlocks; j-- > 0;) fb_unlock(locks[j]);
    return rc;
}

/* What the members' policies make of a failed group call (see prs_redis.h). */
static int group_policy(size_t count, const prs_redis_member *m, int rc, prs_decision *d, int *denied_by) {
    if (policy_exempt(rc)) return rc;
    size_t nlocal = 0;
    for (size_t i = 0; i < count; i++) {
        if (m[i].limiter->policy == PRS_REDIS_RAISE) return rc;
        nlocal += m[i].limiter->policy == PRS_REDIS_LOCAL;
    }
    for (size_t i = 0; i < count; i++)
        atomic_fetch_add_explicit(&m[i].limiter->fallbacks, 1, memory_order_relaxed);
    prs_decision best = {0}, denial = {0};
    int have = 0, denied = -1;
    for (size_t i = 0; i < count; i++) {
        if (m[i].limiter->policy == PRS_REDIS_LOCAL) continue;
        prs_decision md;
        static_decision(m[i].limiter, m[i].n, &md);
        if (!md.allowed) {
            if (denied < 0 || md.retry_after_ns > denial.retry_after_ns) { denial = md; denied = (int)i; }
        } else if (!have || more_restrictive(&md, &best)) {
            best = md;
            have = 1;
        }
    }
    if (denied < 0 && nlocal) {
        const prs_allocator *a = prs_redis__backend_alloc(m[0].limiter->b);
        size_t *idx = prs__calloc(a, nlocal, sizeof *idx);
        prs_redis_limiter **locks = prs__calloc(a, nlocal, sizeof *locks);
        rc = idx && locks ? PRS_OK : PRS_ENOMEM;
        if (rc == PRS_OK) {
            size_t j = 0;
            for (size_t i = 0; i < count; i++)
                if (m[i].limiter->policy == PRS_REDIS_LOCAL) idx[j++] = i;
            rc = group_local(m, idx, nlocal, locks, &best, &have, &denial, &denied);
        }
        prs__free(a, idx);
        prs__free(a, locks);
        if (rc) return rc;
    }
    if (denied >= 0) {
        *d = denial;
        d->allowed = 0;
    } else {
        *d = best;
        d->allowed = 1;
        d->retry_after_ns = 0;
    }
    *denied_by = denied;
    return PRS_OK;
}

int prs_redis_group_check(size_t count, const prs_redis_member *m, int64_t now_us, prs_decision *d,
                          int *denied_by) {
    int rc = group_run(count, m, now_us, d, denied_by);
    if (rc == PRS_OK || rc == PRS_EINVAL) return rc;
    return group_policy(count, m, rc, d, denied_by);
}

/* ---- sans-I/O ops (prs_redis_ops.h) ------------------------------------------- */

/* An op is built by the blocking calls' own builders (call_init, reset_init,
 * group_cmd_init) and finished by their own parsers (call_parse, reset_parse,
 * group_parse): only the I/O differs. A decision may take several commands
 * (the fixed window's MULTI ... EXEC): calls[i] knows how many. */
struct prs_redis_op {
    int kind;                  /* 'c' check, 'p' peek, 'l' leased check, 'r' reset, 'm' many, 'g' group, 'h' */
    int finished;
    prs_redis_limiter *l;      /* single calls, many, give-back */
    const prs_allocator *a;
    size_t ncmds, maxcmds;     /* commands (one reply each) sent; room in off[] and scripts[] */
    size_t ndec;               /* limiter ops: decisions, calls[0..ndec) and reqs[0..ndec) */
    call *calls;               /* what call_parse reads (their keys are freed once written) */
    prs_redis_request *reqs;   /* keys copied into keys (apply_policy's) */
    prs_redis_member *m;       /* [count] group: keys copied into keys */
    size_t count;
    int *scripts;              /* [ncmds] each command's script slot, or -1 */
    int64_t lnow;              /* leased check: lease_end's arguments */
    uint64_t h;
    char *keys;
    char *req;                 /* the commands, RESP */
    size_t reqlen, reqcap, *off; /* command i is req[off[i] .. off[i+1]) */
    char *eval;                /* the last prs_redis_op_eval */
    /* Driving its transport (prs_redis_op_step): per command [maxcmds] */
    prs_redis_backend *b;
    int *slot, *nblock;        /* its keys' slot; > 1: first of a MULTI ... EXEC block */
    int *node, *hops;          /* the node that answered it; a block's redirects so far */
    char *evaled;              /* 1: sent again as EVAL already; 2: last sent after ASKING */
    redisReply **got;          /* its reply (prs_redis_op_put) */
    struct op_send *sends;     /* this step's [nsends] (room for ncmds + 1) */
    prs_redis_send *pub;
    size_t nsends, due;        /* replies of this step not yet put */
    int routed;                /* the commands were sent (else the next step sends them) */
    int reasked;               /* Sentinel: sent again after a READONLY reply */
};

/* Appends one command in RESP to op->req. */
/* Room for `need` more bytes after the `len` in *buf (capacity *cap). */
static int buf_room(const prs_allocator *a, char **buf, size_t len, size_t *cap, size_t need) {
    if (len + need <= *cap) return PRS_OK;
    size_t nc = *cap ? *cap * 2 : 256;
    while (nc < len + need) nc *= 2;
    char *nb = prs__malloc(a, nc);
    if (!nb) return PRS_ENOMEM;
    if (len) memcpy(nb, *buf, len);
    prs__free(a, *buf);
    *buf = nb;
    *cap = nc;
    return PRS_OK;
}

static int resp_append(prs_redis_op *op, const prs_redis__cmd *cmd) {
    if (op->ncmds >= op->maxcmds) return PRS_EINVAL; /* cannot happen: sized by the builders' maximum */
    size_t need = 24;
    for (int i = 0; i < cmd->argc; i++) need += cmd->argvlen[i] + 28;
    if (buf_room(op->a, &op->req, op->reqlen, &op->reqcap, need)) return PRS_ENOMEM;
    char *p = op->req + op->reqlen;
    *p++ = '*';
    p += fmt_i64(p, cmd->argc);
    *p++ = '\r'; *p++ = '\n';
    for (int i = 0; i < cmd->argc; i++) {
        size_t len = cmd->argvlen[i];
        *p++ = '$';
        p += fmt_i64(p, (int64_t)len);
        *p++ = '\r'; *p++ = '\n';
        if (len) memcpy(p, cmd->argv[i], len);
        p += len;
        *p++ = '\r'; *p++ = '\n';
    }
    op->reqlen = (size_t)(p - op->req);
    op->scripts[op->ncmds] = cmd->script;
    op->slot[op->ncmds] = cmd->slot;
    op->nblock[op->ncmds] = cmd->nblock;
    op->off[++op->ncmds] = op->reqlen;
    return PRS_OK;
}

/* Builds decision i of a limiter op with call_init and writes its commands. */
static int op_add_call(prs_redis_op *op, size_t i, char mode, int64_t n, int64_t want, int64_t give,
                       int64_t now_us) {
    prs_redis_limiter *l = op->l;
    call *c = &op->calls[i];
    int rc = call_init(l, c, op->reqs[i].key, op->reqs[i].keylen, mode, n, want, give, now_us);
    if (rc) return rc;
    for (size_t k = 0; k < c->ncmds && rc == PRS_OK; k++) rc = resp_append(op, &c->cmds[k]);
    keyset_free(l, &c->ks);
    op->ndec = i + 1;
    return rc;
}

/* ndec decisions of up to 4 commands each (a group: ndec 1, one command). */
static prs_redis_op *op_alloc(const prs_allocator *a, int kind, size_t ndec, size_t keybytes, int with_calls) {
    prs_redis_op *op = prs__calloc(a, 1, sizeof *op);
    if (!op) return NULL;
    op->a = a;
    op->kind = kind;
    op->maxcmds = 4 * ndec;
    op->off = prs__calloc(a, op->maxcmds + 1, sizeof *op->off);
    op->scripts = prs__calloc(a, op->maxcmds, sizeof *op->scripts);
    op->slot = prs__calloc(a, 4 * op->maxcmds, sizeof *op->slot); /* slot, nblock, node, hops */
    op->evaled = prs__calloc(a, op->maxcmds, 1);
    op->got = prs__calloc(a, op->maxcmds, sizeof *op->got);
    op->keys = prs__malloc(a, keybytes ? keybytes : 1);
    if (with_calls) {
        op->calls = prs__calloc(a, ndec, sizeof *op->calls);
        op->reqs = prs__calloc(a, ndec, sizeof *op->reqs);
    }
    if (op->slot) {
        op->nblock = op->slot + op->maxcmds;
        op->node = op->nblock + op->maxcmds;
        op->hops = op->node + op->maxcmds;
    }
    if (!op->off || !op->scripts || !op->slot || !op->evaled || !op->got || !op->keys ||
        (with_calls && (!op->calls || !op->reqs))) {
        prs_redis_op_free(op);
        return NULL;
    }
    return op;
}

static void sends_clear(prs_redis_op *op);

void prs_redis_op_free(prs_redis_op *op) {
    if (!op) return;
    const prs_allocator *a = op->a;
    sends_clear(op);
    prs__free(a, op->sends);
    prs__free(a, op->pub);
    for (size_t i = 0; op->got && i < op->ncmds; i++)
        if (op->got[i]) freeReplyObject(op->got[i]);
    prs__free(a, op->got);
    prs__free(a, op->slot);
    prs__free(a, op->evaled);
    prs__free(a, op->calls);
    prs__free(a, op->reqs);
    prs__free(a, op->m);
    prs__free(a, op->keys);
    prs__free(a, op->req);
    prs__free(a, op->off);
    prs__free(a, op->scripts);
    prs__free(a, op->eval);
    prs__free(a, op);
}

int prs_redis_op_limiter_new(prs_redis_limiter *l, int kind, const void *key, size_t keylen, int64_t n,
                             int64_t now_us, prs_redis_op **out, prs_decision *d) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!l || !d || (!key && keylen) || (kind != 'r' && n < 1) || (kind != 'c' && kind != 'p' && kind != 'r'))
        return PRS_EINVAL;
    int rc;
    if (!key) key = "";
    int64_t want = 0, give = 0, lnow = 0;
    uint64_t h = 0;
    int mode = kind;
    if (kind == 'c' && now_us < 0 && l->lease_batch > 0 && n <= l->limit) {
        rc = lease_begin(l, key, keylen, n, d, 0, &want, &give, &h, &lnow);
        if (rc != PRS_EAGAIN) return rc;
        mode = 'l';
    }
    if (kind == 'r') lease_drop(l, key, keylen); /* as prs_redis_limiter_reset does */
    prs_redis_op *op = op_alloc(&l->alloc, mode, 1, keylen, 1);
    if (!op) return PRS_ENOMEM;
    op->l = l;
    op->b = l->b;
    op->h = h;
    op->lnow = lnow;
    if (keylen) memcpy(op->keys, key, keylen);
    op->reqs[0].key = op->keys;
    op->reqs[0].keylen = keylen;
    op->reqs[0].n = n;
    if (kind == 'r') {
        reset_cmd rq;
        if ((rc = reset_init(l, key, keylen, &rq)) == PRS_OK) {
            rc = resp_append(op, &rq.cmd);
            keyset_free(l, &rq.ks);
        }
    } else {
        rc = op_add_call(op, 0, (char)mode, n, want, give, now_us);
    }
    if (rc) { prs_redis_op_free(op); return rc; }
    *out = op;
    return PRS_OK;
}

int prs_redis_op_many_new(prs_redis_limiter *l, size_t count, const prs_redis_request *reqs, prs_redis_op **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!l || !count || !reqs || count > SIZE_MAX / 8) return PRS_EINVAL;
    int rc = PRS_OK;
    size_t keybytes = 0;
    for (size_t i = 0; i < count; i++) {
        if (reqs[i].n < 1 || (!reqs[i].key && reqs[i].keylen)) return PRS_EINVAL;
        keybytes += reqs[i].keylen;
    }
    prs_redis_op *op = op_alloc(&l->alloc, 'm', count, keybytes, 1);
    if (!op) return PRS_ENOMEM;
    op->l = l;
    op->b = l->b;
    size_t at = 0;
    int64_t now_us = prs_redis__now_us(l->b); /* one time for every request, as check_many */
    for (size_t i = 0; i < count && rc == PRS_OK; i++) {
        if (reqs[i].keylen) memcpy(op->keys + at, reqs[i].key, reqs[i].keylen);
        op->reqs[i].key = op->keys + at;
        op->reqs[i].keylen = reqs[i].keylen;
        op->reqs[i].n = reqs[i].n;
        at += reqs[i].keylen;
        rc = op_add_call(op, i, 'c', reqs[i].n, 0, 0, now_us);
    }
    if (rc) { prs_redis_op_free(op); return rc; }
    *out = op;
    return PRS_OK;
}

int prs_redis_op_group_new(size_t count, const prs_redis_member *m, int64_t now_us, prs_redis_op **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    group_cmd g;
    int rc = group_cmd_init(count, m, now_us, &g);
    if (rc) return rc;
    size_t keybytes = 0;
    for (size_t i = 0; i < count; i++) keybytes += m[i].keylen;
    prs_redis_op *op = op_alloc(g.a, 'g', 1, keybytes, 0);
    if (op) op->m = prs__calloc(op->a, count, sizeof *op->m);
    rc = op && op->m ? resp_append(op, &g.cmd) : PRS_ENOMEM;
    group_cmd_free(&g);
    if (rc) { prs_redis_op_free(op); return rc; }
    op->count = count;
    op->b = m[0].limiter->b;
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        op->m[i] = m[i];
        if (m[i].keylen) memcpy(op->keys + at, m[i].key, m[i].keylen);
        op->m[i].key = op->keys + at;
        at += m[i].keylen;
    }
    *out = op;
    return PRS_OK;
}

const char *prs_redis_op_request(const prs_redis_op *op, size_t *len) {
    *len = op->reqlen;
    return op->req;
}

size_t prs_redis_op_ncmds(const prs_redis_op *op) { return op->ncmds; }
size_t prs_redis_op_decisions(const prs_redis_op *op) { return op->kind == 'm' ? op->ndec : 1; }

/* Skips one RESP bulk string header+payload at p ("$<n>\r\n<n bytes>\r\n"). */
static const char *skip_bulk(const char *p) {
    int64_t n = 0;
    p++;
    while (*p != '\r') n = n * 10 + (*p++ - '0');
    return p + 2 + n + 2;
}

int prs_redis__resp_eval(const prs_allocator *a, const char *cmd, size_t len, const prs_redis__script *s,
                         char **out, size_t *outlen) {
    const char *end = cmd + len;
    const char *args = (const char *)memchr(cmd, '\n', len) + 1; /* after "*N\r\n" */
    const char *rest = skip_bulk(skip_bulk(args));     /* after EVALSHA and the sha */
    size_t head = (size_t)(args - cmd), tail = (size_t)(end - rest);
    char num[24];
    size_t nl = fmt_i64(num, (int64_t)s->len);
    size_t total = head + 10 + 1 + nl + 2 + s->len + 2 + tail;
    char *e = prs__malloc(a, total);
    if (!e) return PRS_ENOMEM;
    char *p = e;
    memcpy(p, cmd, head); p += head;
    memcpy(p, "$4\r\nEVAL\r\n", 10); p += 10;
    *p++ = '$';
    memcpy(p, num, nl); p += nl;
    *p++ = '\r'; *p++ = '\n';
    memcpy(p, s->body, s->len); p += s->len;
    *p++ = '\r'; *p++ = '\n';
    memcpy(p, rest, tail);
    *out = e;
    *outlen = total;
    return PRS_OK;
}

/* Command i as EVAL with its script's body, in a new buffer *out. */
static int eval_of(prs_redis_op *op, size_t i, char **out, size_t *len) {
    if (i >= op->ncmds || op->scripts[i] < 0) return PRS_EINVAL;
    return prs_redis__resp_eval(op->a, op->req + op->off[i], op->off[i + 1] - op->off[i],
                                &prs_redis__scripts()[op->scripts[i]], out, len);
}

int prs_redis_op_eval(prs_redis_op *op, size_t i, const char **buf, size_t *len) {
    if (!op) return PRS_EINVAL;
    char *e;
    int rc = eval_of(op, i, &e, len);
    if (rc) return rc;
    prs__free(op->a, op->eval);
    op->eval = e;
    *buf = e;
    return PRS_OK;
}

/* One send of a step: the bytes for one node and what each reply answers. */
typedef struct op_send {
    char *buf;                 /* owned; NULL: the op's whole request */
    size_t len, cap;
    int *want;                 /* [n] the command each reply answers; -1 ASKING's, -2 CLUSTER SLOTS' */
    size_t n, got;
    int node;
} op_send;

static void sends_clear(prs_redis_op *op) {
    for (size_t i = 0; i < op->nsends; i++) {
        prs__free(op->a, op->sends[i].buf);
        prs__free(op->a, op->sends[i].want);
    }
    op->nsends = 0;
    op->due = 0;
}

/* This step's send to `node` (added when new). */
static op_send *send_to(prs_redis_op *op, int node) {
    for (size_t i = 0; i < op->nsends; i++)
        if (op->sends[i].node == node) return &op->sends[i];
    op_send *s = &op->sends[op->nsends];
    memset(s, 0, sizeof *s);
    s->node = node;
    if (!(s->want = prs__calloc(op->a, 2 * op->ncmds + 1, sizeof *s->want))) return NULL;
    op->nsends++;
    return s;
}

/* Appends bytes answered by one reply (for command `want`) to send s. */
static int send_add(prs_redis_op *op, op_send *s, const char *p, size_t len, int want) {
    if (buf_room(op->a, &s->buf, s->len, &s->cap, len)) return PRS_ENOMEM;
    memcpy(s->buf + s->len, p, len);
    s->len += len;
    s->want[s->n++] = want;
    op->due++;
    return PRS_OK;
}

static size_t op_block(const prs_redis_op *op, size_t i) {
    size_t k = op->nblock[i] > 1 ? (size_t)op->nblock[i] : 1;
    return k <= op->ncmds - i ? k : op->ncmds - i;
}

/* Commands [i, i + k) to `node`, after ASKING when ask. */
static int send_block(prs_redis_op *op, int node, int ask, size_t i, size_t k) {
    op_send *s = send_to(op, node);
    if (!s) return PRS_ENOMEM;
    int rc = ask ? send_add(op, s, "*1\r\n$6\r\nASKING\r\n", 16, -1) : PRS_OK;
    for (size_t j = i; j < i + k && rc == PRS_OK; j++) {
        op->evaled[j] = (char)((op->evaled[j] & 1) | (ask ? 2 : 0));
        rc = send_add(op, s, op->req + op->off[j], op->off[j + 1] - op->off[j], (int)j);
    }
    return rc;
}

static int is_noscript(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR && r->str && !strncmp(r->str, "NOSCRIPT", 8);
}

/* The next step's sends: the commands, or what their replies ask for again. */
static int step_sends(prs_redis_op *op, prs_redis__cluster *c) {
    int rc = PRS_OK;
    if (op->routed && c && prs_redis__cluster_sentinel(c) && !op->reasked) {
        int readonly = 0;
        for (size_t i = 0; i < op->ncmds; i++) readonly |= prs_redis__is_readonly(op->got[i]);
        if (readonly) { /* the master turned replica (a failover): nothing written; ask, send it all again */
            prs_redis__cluster_invalidate(c);
            op->reasked = 1;
            op->routed = 0;
            op->hops[0] = 0;
        }
    }
    if (!op->routed && c && prs_redis__cluster_stale(c) && !op->hops[0]) {
        op->hops[0] = -1; /* asked once per op: a failure routes to the first node, redirects followed */
        int node;
        const char *q;
        size_t qlen;
        prs_redis__cluster_map_query(c, &node, &q, &qlen);
        op_send *s = send_to(op, node);
        return s ? send_add(op, s, q, qlen, -2) : PRS_ENOMEM;
    }
    if (!op->routed && c && prs_redis__cluster_sentinel(c) && prs_redis__cluster_stale(c)) {
        prs_redis__set_error("redis: no sentinel named a master");
        return PRS_ECONN;
    }
    if (!op->routed) {
        op->routed = 1;
        op->hops[0] = 0;
        if (!c) { /* one server: the request as it is */
            op_send *s = send_to(op, 0);
            if (!s) return PRS_ENOMEM;
            for (size_t i = 0; i < op->ncmds; i++) s->want[i] = (int)i;
            s->n = op->due = op->ncmds;
            return PRS_OK;
        }
        for (size_t i = 0; i < op->ncmds && rc == PRS_OK; i += op_block(op, i))
            rc = send_block(op, prs_redis__cluster_route(c, op->slot[i]), 0, i, op_block(op, i));
        return rc;
    }
    for (size_t i = 0; i < op->ncmds && rc == PRS_OK; i += op_block(op, i)) {
        size_t k = op_block(op, i);
        int kind = 0, target = 0;
        for (size_t j = i; c && j < i + k && !kind; j++) kind = prs_redis__cluster_redirect(c, op->got[j], &target);
        if (kind && op->hops[i] < PRS_REDIS_MAX_REDIRECTS) {
            op->hops[i]++;
            rc = send_block(op, target, kind == 2, i, k);
            continue;
        }
        for (size_t j = i; j < i + k && rc == PRS_OK; j++) {
            if (!is_noscript(op->got[j]) || op->scripts[j] < 0 || (op->evaled[j] & 1)) continue;
            op->evaled[j] |= 1;
            char *e;
            size_t len;
            op_send *s = send_to(op, op->node[j]);
            if (s && (op->evaled[j] & 2)) /* a slot half-migrated: the node answers it after ASKING only */
                rc = send_add(op, s, "*1\r\n$6\r\nASKING\r\n", 16, -1);
            if (rc == PRS_OK) rc = s ? eval_of(op, j, &e, &len) : PRS_ENOMEM;
            if (rc == PRS_OK) {
                rc = send_add(op, s, e, len, (int)j);
                prs__free(op->a, e);
            }
        }
    }
    return rc;
}

int prs_redis_op_step(prs_redis_op *op, const prs_redis_send **sends, size_t *count) {
    if (!op || !sends || !count || op->finished || op->due) return PRS_EINVAL;
    sends_clear(op);
    if (!op->sends) {
        op->sends = prs__calloc(op->a, op->ncmds + 1, sizeof *op->sends);
        op->pub = prs__calloc(op->a, op->ncmds + 1, sizeof *op->pub);
        if (!op->sends || !op->pub) return PRS_ENOMEM;
    }
    int rc = step_sends(op, prs_redis__backend_cluster(op->b));
    if (rc) {
        sends_clear(op);
        return rc;
    }
    for (size_t i = 0; i < op->nsends; i++) {
        const op_send *s = &op->sends[i];
        op->pub[i] = (prs_redis_send){s->node, s->buf ? s->buf : op->req, s->buf ? s->len : op->reqlen, s->n};
    }
    *sends = op->pub;
    *count = op->nsends;
    return PRS_OK;
}

int prs_redis_op_put(prs_redis_op *op, size_t i, redisReply *r) {
    if (!op || i >= op->nsends || op->sends[i].got >= op->sends[i].n) {
        if (r) freeReplyObject(r);
        return PRS_EINVAL;
    }
    op_send *s = &op->sends[i];
    int want = s->want[s->got++];
    op->due--;
    if (want == -2) (void)prs_redis__cluster_apply(prs_redis__backend_cluster(op->b), r, s->node);
    if (want < 0) {
        freeReplyObject(r);
    } else {
        if (op->got[want]) freeReplyObject(op->got[want]);
        op->got[want] = r;
        op->node[want] = s->node;
    }
    return op->due == 0;
}

int prs_redis_op_finish(prs_redis_op *op, int rc, redisReply *const *replies, prs_decision *d, int *status,
                        int *denied_by) {
    if (!op || op->finished || !d) return PRS_EINVAL;
    op->finished = 1;
    if (rc == PRS_OK && !replies) { /* its own, put by its transport */
        for (size_t i = 0; i < op->ncmds && rc == PRS_OK; i++)
            if (!op->got[i] || op->due) {
                prs_redis__set_error("redis: the op's replies are not all in");
                rc = PRS_EPROTO;
            }
        replies = op->got;
    }
    prs_redis_limiter *l = op->l;
    switch (op->kind) {
    case 'g':
        if (!denied_by) return PRS_EINVAL;
        if (rc == PRS_OK) rc = group_parse(op->count, replies[0], d, denied_by);
        return rc == PRS_OK ? rc : group_policy(op->count, op->m, rc, d, denied_by);
    case 'r':
        return rc == PRS_OK ? reset_parse(replies[0]) : rc;
    case 'h': /* leases given back: a failure matters only under RAISE (the permits lapse) */
        return l->policy == PRS_REDIS_RAISE ? rc : PRS_OK;
    case 'm': {
        if (!status) return PRS_EINVAL;
        int first = PRS_OK;
        for (size_t i = 0, at = 0; i < op->ndec; i++) {
            const prs_redis_request *q = &op->reqs[i];
            status[i] = rc ? rc : call_parse(l, &op->calls[i], &replies[at], &d[i], NULL);
            at += op->calls[i].ncmds;
            status[i] = apply_policy(l, status[i], q->key, q->keylen, q->n, 1, &d[i]);
            if (status[i] && first == PRS_OK) first = status[i];
        }
        return first;
    }
    default: {
        const prs_redis_request *q = &op->reqs[0];
        int64_t granted = 0;
        if (rc == PRS_OK) rc = call_parse(l, &op->calls[0], replies, d, op->kind == 'l' ? &granted : NULL);
        if (rc == PRS_OK && op->kind == 'l') lease_end(l, op->h, q->key, q->keylen, q->n, op->lnow, d, granted);
        return apply_policy(l, rc, q->key, q->keylen, q->n, op->kind != 'p', d);
    }
    }
}

/* A command of the op's request, as the pool sends it (prs_redis__cmd, argc 0). */
typedef struct resp_cmd {
    const char *p;
    size_t len;
} resp_cmd;

int prs_redis_op_run(prs_redis_op *op, prs_decision *d, int *status, int *denied_by) {
    if (!op || op->finished || op->sends) return PRS_EINVAL; /* finished, or stepped */
    size_t n = op->ncmds;
    prs_redis__cmd small[4], *cmds = n <= 4 ? small : prs__calloc(op->a, n, sizeof *cmds + sizeof(resp_cmd));
    resp_cmd small_raw[4], *raw = cmds == small ? small_raw : cmds ? (resp_cmd *)(cmds + n) : NULL;
    int rc = cmds ? PRS_OK : PRS_ENOMEM;
    for (size_t i = 0; rc == PRS_OK && i < n; i++) {
        raw[i] = (resp_cmd){op->req + op->off[i], op->off[i + 1] - op->off[i]};
        cmds[i] = (prs_redis__cmd){0, &raw[i].p, &raw[i].len, op->scripts[i], op->slot[i], op->nblock[i]};
    }
    if (rc == PRS_OK) rc = prs_redis__roundtrip(op->b, n, cmds, op->got);
    if (cmds != small) prs__free(op->a, cmds);
    return prs_redis_op_finish(op, rc, op->got, d, status, denied_by);
}

prs_redis_backend *prs_redis_limiter_backend(const prs_redis_limiter *l) { return l->b; }
int prs_redis_op_kind(const prs_redis_op *op) { return op->kind; }

int prs_redis_op_release_new(prs_redis_limiter *l, prs_redis_op **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!l) return PRS_EINVAL;
    if (!l->buckets) return PRS_OK;
    int rc = PRS_OK;
    size_t count;
    lease *list = leases_detach(l, &count); /* as release_leases */
    prs_redis_op *op = count ? op_alloc(&l->alloc, 'h', count, 0, 1) : NULL;
    if (count && !op) rc = PRS_ENOMEM;
    if (op) {
        op->l = l;
        op->b = l->b;
    }
    size_t i = 0;
    for (lease *e = list; e && rc == PRS_OK; e = e->next, i++) {
        op->reqs[i].key = (const char *)e->key; /* read by call_init only, before the lease is freed */
        op->reqs[i].keylen = e->keylen;
        rc = op_add_call(op, i, 'l', 0, 0, e->left, -1);
        op->reqs[i].key = NULL;
        op->reqs[i].keylen = 0;
    }
    while (list) { lease *nx = list->next; prs__free(&l->alloc, list); list = nx; }
    if (rc) { prs_redis_op_free(op); return rc; }
    *out = op;
    return PRS_OK;
}

int prs_redis_op_kind_from_name(const char *name) {
    static const struct { const char *name; int kind; } kinds[] = {
        {"check", PRS_REDIS_OP_CHECK}, {"peek", PRS_REDIS_OP_PEEK}, {"reset", PRS_REDIS_OP_RESET}};
    for (size_t i = 0; name && i < sizeof kinds / sizeof *kinds; i++)
        if (!strcmp(name, kinds[i].name)) return kinds[i].kind;
    return 0;
}

int prs_redis_transport_status(const char *name) {
    static const int failures[] = {PRS_ECONN, PRS_ETIMEDOUT, PRS_EPROTO, PRS_EBACKEND, PRS_EBACKENDCLOSED};
    for (size_t i = 0; name && i < sizeof failures / sizeof *failures; i++)
        if (!strcmp(name, prs_err_name(failures[i]) + 4)) return failures[i]; /* after "PRS_" */
    return PRS_OK;
}
