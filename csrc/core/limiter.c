/*
 * limiter.c - the one limiter object over the algorithm descriptors, the
 * algorithm table as data, and the wait steps.
 *
 * Layout: one allocation holds the struct (aligned to a cache line inside
 * it: its read-mostly line and its written line apart, limiter_internal.h),
 * the params (params_size bytes, from the next line) and, for spinlocked
 * algorithms, the state (state_size(params) bytes). A
 * reconfiguration that changes the state's size (a sliding log's ring) moves
 * the state to a block of its own (own_state), allocated before the lock is
 * taken; `state` always names the live one, and a group resolves it under the
 * lock on each decision, so nothing keeps a stale pointer.
 *
 * Concurrency, two kinds chosen by the descriptor:
 *   - spinlocked: `lock` is held around the descriptor's decide (a few dozen
 *     ns of arithmetic), reset, available and reconfigure; the params change
 *     only under it.
 *   - lock-free (decide_lockfree set: GCRA): the state is the atomic `word`;
 *     decisions are the descriptor's compare-and-swap loop; reset, groups and
 *     reconfiguration take the word itself as a lock (PRS__WORD_LOCKED), and a
 *     reconfiguration writes the params under the sequence counter `seq`, so a
 *     decision reads params and word as one consistent pair (see gcra.c).
 * Either way the same descriptor functions decide: where the state lives (this
 * object, a keyed slot, a group's scratch) is the caller's parameter.
 *
 * Waits: prs_wait_decide turns one decision into a step (admitted, sleep
 * until, timeout, never); every blocking form - prs_limiter_acquire_blocking
 * here, the Python binding's sync and async waits - loops over it.
 */
#include "limiter_internal.h"

#include <stdalign.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)
#define HEADER sizeof(prs_limiter) /* a multiple of PRS__LINE */

/* ---- the table ----------------------------------------------------------- */

#define ENTRY(c, py, redis) {&prs_algo_##c, #c, #py, redis},
const prs_algo_entry prs_algorithms[PRS_ALGO__COUNT] = {PRS_ALGORITHMS(ENTRY)};
#undef ENTRY

const prs_algo_entry *prs_algo_entry_of(const prs_algo *algo) {
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (prs_algorithms[i].algo == algo) return &prs_algorithms[i];
    return NULL;
}

const prs_algo_entry *prs_algo_by_redis_name(const char *name) {
    for (int i = 0; name && *name && i < PRS_ALGO__COUNT; i++)
        if (strcmp(prs_algorithms[i].redis_name, name) == 0) return &prs_algorithms[i];
    return NULL;
}

int prs_algo_validate(const prs_algo *algo, const void *config, prs_config_error *why) {
    alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
    if (!algo || !config) return prs_config_fail(why, PRS_EINVAL, NULL, "no config");
    assert(algo->params_size <= sizeof p);
    return algo->params_from_config(config, p, why);
}

int prs__window_params_make(int64_t limit, int64_t window_ns, int64_t max_limit,
                            const char *max_reason, prs__window_params *p, prs_config_error *why) {
    if (limit < 1) return prs_config_fail(why, PRS_EINVAL, "limit", "must be >= 1");
    if (limit > max_limit) return prs_config_fail(why, PRS_ERANGE, "limit", max_reason);
    if (window_ns < 1)
        return prs_config_fail(why, PRS_EINVAL, "window_ns", "must be > 0 (at least 1 ns)");
    p->limit = limit;
    p->window_ns = window_ns;
    return PRS_OK;
}

/* ---- the lock-free word -------------------------------------------------- */

int64_t prs__word_load(prs_limiter *lim) {
    unsigned spins = 0;
    int64_t v;
    while ((v = atomic_load_explicit(lim->wordp, memory_order_acquire)) == PRS__WORD_LOCKED) {
        prs__spin_yield(++spins);
        if (lim->shm && (spins & 1023) == 0) prs__shm_limiter_poke(lim); /* a dead holder? */
    }
    return v;
}

int64_t prs__word_lock(prs_limiter *lim) {
    int64_t seen = prs__word_load(lim);
    for (;;) {
        if (seen == PRS__WORD_LOCKED) {
            seen = prs__word_load(lim);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(lim->wordp, &seen, PRS__WORD_LOCKED,
                                                  memory_order_acquire, memory_order_acquire))
            return seen;
    }
}

void prs__word_unlock(prs_limiter *lim, int64_t state) {
    if (state == PRS__WORD_LOCKED) state++;
    atomic_store_explicit(lim->wordp, state, memory_order_release);
}

void prs__seq_params_load(const prs_limiter *lim, void *out) {
    size_t words = lim->algo->params_size / sizeof(uint64_t);
    const uint64_t *src = lim->params;
    uint64_t *dst = out;
    unsigned spins = 0;
    for (;;) {
        uint64_t v = atomic_load_explicit(lim->seqp, memory_order_acquire);
        if (!(v & 1)) {
            for (size_t i = 0; i < words; i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(lim->seqp, memory_order_relaxed) == v) return;
        }
        prs__spin_yield(++spins);
        if (lim->shm && (spins & 1023) == 0) prs__shm_limiter_poke((prs_limiter *)lim);
    }
}

/* ---- lifecycle ------------------------------------------------------------- */

int prs_limiter_new(const prs_algo *algo, const void *config, const prs_allocator *allocator,
                    prs_limiter **out, prs_config_error *why) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!algo) return prs_config_fail(why, PRS_EINVAL, NULL, "no algorithm");
    alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
    int rc = prs_algo_validate(algo, config, why);
    if (rc) return rc;
    algo->params_from_config(config, p, NULL);
    int lockfree = algo->decide_lockfree != NULL;
    size_t ssz = lockfree ? 0 : algo->state_size(p);
    size_t psz = ALIGN16(algo->params_size);
    if (ssz > SIZE_MAX - HEADER - psz - PRS__LINE) return PRS_ENOMEM;
    const prs_allocator *a = prs__alloc_or_default(allocator);
    void *block = prs__malloc(a, HEADER + psz + ssz + PRS__LINE - 1);
    if (!block) return PRS_ENOMEM;
    prs_limiter *lim =
        (prs_limiter *)(((uintptr_t)block + PRS__LINE - 1) & ~(uintptr_t)(PRS__LINE - 1));
    lim->block = block;
    prs__spin_init(&lim->lock);
    atomic_init(&lim->admitted, 0);
    atomic_init(&lim->rejected, 0);
    prs__stripes_init(&lim->counts);
    lim->wordp = &lim->word;
    lim->seqp = &lim->seq;
    lim->shm = NULL;
    lim->region = NULL;
    atomic_init(lim->seqp, 0);
    lim->algo = algo;
    lim->alloc = *a;
    lim->params = (unsigned char *)lim + HEADER;
    memcpy(lim->params, p, algo->params_size);
    lim->own_state = NULL;
    if (lockfree) {
        int64_t w;
        algo->state_init(p, &w);
        atomic_init(lim->wordp, w);
        lim->state = NULL;
    } else {
        atomic_init(lim->wordp, 0);
        lim->state = (unsigned char *)lim->params + psz;
        algo->state_init(p, lim->state);
    }
    *out = lim;
    return PRS_OK;
}

void prs_limiter_free(prs_limiter *lim) {
    if (!lim) return;
    prs_allocator a = lim->alloc;
    if (lim->region) prs__shm_limiter_release(lim);
    prs__free(&a, lim->own_state);
    prs__free(&a, lim->block);
}

const prs_algo *prs_limiter_algo(const prs_limiter *lim) { return lim ? lim->algo : NULL; }
const void *prs_limiter_params(const prs_limiter *lim) { return lim ? lim->params : NULL; }

/* ---- deciding ---------------------------------------------------------------- */

/* consume: 0, 1, or 1 | PRS__DECIDE_BARE (seen by a lock-free descriptor only). */
static inline int decide(prs_limiter *lim, int64_t now, int64_t n, int consume, prs_decision *d) {
    if (!lim || !d || n < 1) return PRS_EINVAL;
    const prs_algo *al = lim->algo;
    int rc;
    if (al->decide_lockfree) /* counts its own consuming decisions: a tail call */
        return al->decide_lockfree(lim, now, n, consume, d);
    if (__builtin_expect(lim->shm != NULL, 0)) {
        consume &= 1;
        rc = prs__shm_limiter_decide(lim, now, n, consume, d);
        if (consume && rc == PRS_OK) prs__limiter_count(lim, d->allowed);
        return rc;
    }
    consume &= 1;
    prs__spin_lock(&lim->lock);
    rc = al->decide(lim->params, lim->state, now, n, consume, d);
    if (consume && rc == PRS_OK) { /* the lock makes load + store exact */
        _Atomic uint64_t *c = d->allowed ? &lim->admitted : &lim->rejected;
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
    prs__spin_unlock(&lim->lock);
    return rc;
}

int prs_limiter_decide(prs_limiter *lim, int64_t now, int64_t n, int consume, prs_decision *d) {
    return decide(lim, now, n, consume != 0, d);
}

int prs_limiter_allow(prs_limiter *lim, int64_t now, int64_t n) {
    prs_decision d;
    int rc = decide(lim, now, n, 1 | PRS__DECIDE_BARE, &d);
    return rc ? rc : d.allowed;
}

uint64_t prs_limiter_admitted(const prs_limiter *lim) {
    if (!lim) return 0;
    return atomic_load_explicit(&lim->admitted, memory_order_relaxed) +
           prs__stripes_get(&lim->counts, PRS__LIM_ADMITTED);
}

uint64_t prs_limiter_rejected(const prs_limiter *lim) {
    if (!lim) return 0;
    return atomic_load_explicit(&lim->rejected, memory_order_relaxed) +
           prs__stripes_get(&lim->counts, PRS__LIM_REJECTED);
}

int prs_limiter_check(prs_limiter *lim, int64_t now_ns, int64_t n, prs_decision *d) {
    return prs_limiter_decide(lim, now_ns, n, 1, d);
}

int prs_limiter_peek(prs_limiter *lim, int64_t now_ns, int64_t n, prs_decision *d) {
    return prs_limiter_decide(lim, now_ns, n, 0, d);
}

void prs_limiter_reset(prs_limiter *lim) {
    if (!lim) return;
    if (lim->shm) {
        prs__shm_limiter_reset(lim);
        return;
    }
    if (prs__limiter_lockfree(lim)) {
        int64_t w = prs__word_lock(lim); /* the params are stable while we hold it */
        lim->algo->state_init(lim->params, &w);
        prs__word_unlock(lim, w);
        return;
    }
    prs__spin_lock(&lim->lock);
    lim->algo->state_init(lim->params, lim->state);
    prs__spin_unlock(&lim->lock);
}

double prs__limiter_read(prs_limiter *lim, int64_t now,
                         double (*fn)(const void *params, const void *state, int64_t now)) {
    if (!lim) return 0.0;
    if (lim->shm) return prs__shm_limiter_read(lim, now, fn);
    if (prs__limiter_lockfree(lim)) {
        alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
        int64_t w = prs__word_load(lim);
        prs__seq_params_load(lim, p);
        return fn(p, &w, now);
    }
    prs__spin_lock(&lim->lock);
    double r = fn(lim->params, lim->state, now);
    prs__spin_unlock(&lim->lock);
    return r;
}

double prs_limiter_available(prs_limiter *lim, int64_t now_ns) {
    return lim ? prs__limiter_read(lim, now_ns, lim->algo->available) : 0.0;
}

void prs_limiter_config(const prs_limiter *lim, void *config) {
    prs_limiter *l = (prs_limiter *)lim;
    if (l->shm) { /* the params in force in the region */
        alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
        prs__shm_limiter_config(l, p);
        l->algo->config_from_params(p, config);
        return;
    }
    if (prs__limiter_lockfree(l)) {
        alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
        prs__seq_params_load(l, p);
        l->algo->config_from_params(p, config);
        return;
    }
    prs__spin_lock(&l->lock);
    l->algo->config_from_params(l->params, config);
    prs__spin_unlock(&l->lock);
}

int prs_limiter_reconfigure(prs_limiter *lim, const void *config, int64_t now_ns,
                            prs_config_error *why) {
    if (!lim) return PRS_EINVAL;
    const prs_algo *al = lim->algo;
    alignas(16) unsigned char np[PRS_ALGO_MAX_CONFIG];
    int rc = prs_algo_validate(al, config, why);
    if (rc) return rc;
    al->params_from_config(config, np, NULL);
    if (lim->shm) return prs__shm_limiter_reconfigure(lim, np, now_ns, why); /* every process */
    if (al->reconfigure_lockfree) {
        al->reconfigure_lockfree(lim, np, now_ns);
        return PRS_OK;
    }
    size_t nsz = al->state_size(np);
    void *block = NULL;
    for (;;) {
        prs__spin_lock(&lim->lock);
        size_t osz = al->state_size(lim->params);
        if (osz == nsz) {
            al->rebase(lim->params, lim->state, np, lim->state, now_ns);
        } else if (block) { /* into a block of the new size, allocated unlocked */
            al->rebase(lim->params, lim->state, np, block, now_ns);
            void *old = lim->own_state;
            lim->own_state = lim->state = block;
            block = old;
        } else {
            prs__spin_unlock(&lim->lock);
            block = prs__malloc(&lim->alloc, nsz);
            if (!block) return PRS_ENOMEM;
            continue; /* the size may have changed meanwhile: look again */
        }
        memcpy(lim->params, np, al->params_size);
        prs__spin_unlock(&lim->lock);
        prs__free(&lim->alloc, block);
        return PRS_OK;
    }
}

/* ---- waiting ------------------------------------------------------------------- */

prs_wait_verdict prs_wait_decide(const prs_decision *d, int64_t now_ns, int64_t deadline_ns,
                                 int64_t *wake_ns) {
    if (d->allowed) return PRS_WAIT_ADMITTED;
    if (d->retry_after_ns == PRS_NEVER) return PRS_WAIT_NEVER;
    int64_t wake = prs__sat_add(now_ns, d->retry_after_ns);
    if (wake == INT64_MAX) return PRS_WAIT_NEVER; /* no instant of this clock admits it */
    if (wake > deadline_ns) return PRS_WAIT_TIMEOUT;
    *wake_ns = wake;
    return PRS_WAIT_SLEEP;
}

int prs_limiter_wait_step(prs_limiter *lim, int64_t now_ns, int64_t n, int64_t deadline_ns,
                          prs_decision *d, int64_t *wake_ns) {
    int rc = prs_limiter_check(lim, now_ns, n, d);
    if (rc) return rc;
    return (int)prs_wait_decide(d, now_ns, deadline_ns, wake_ns);
}

int prs_limiter_acquire_blocking(prs_limiter *lim, int64_t n, int64_t deadline_ns,
                                 const prs_clock *clock, prs_decision *d) {
    prs_decision local;
    if (!d) d = &local;
    for (;;) {
        int64_t now = clock ? clock->now_ns(clock->ctx) : prs_monotonic_ns(), wake = 0;
        int v = prs_limiter_wait_step(lim, now, n, deadline_ns, d, &wake);
        switch (v) {
        case PRS_WAIT_ADMITTED: return PRS_OK;
        case PRS_WAIT_TIMEOUT: return PRS_ETIMEDOUT;
        case PRS_WAIT_NEVER: return PRS_ENEVER;
        case PRS_WAIT_SLEEP:
            if (clock) clock->sleep_until(clock->ctx, wake);
            else prs_sleep_ns(wake - now);
            break;
        default: return v; /* a status */
        }
    }
}
