/*
 * gcra.c - the Generic Cell Rate Algorithm, lock-free.
 *
 * State: one atomic int64, `tat`, the theoretical arrival time: the instant at
 * which the limiter would be empty again if no more requests came. A request
 * of weight n at `now` would move it to next = max(tat, now) + n*T, where T is
 * the emission interval (ns per request). It is admitted when the limiter
 * would hold no more than the tolerance: next - now <= tol, tol = burst * T.
 * INT64_MIN means "never used" (full).
 *
 * Why it is exact: a denial at `now` means tat >= now and tat + n*T - now > tol,
 * so retry_after = tat + n*T - tol - now; at now + retry_after the same formula
 * gives exactly tol (admitted), and at any earlier instant more than tol.
 *
 * Clock going backwards: max(tat, now) keeps the later time, and an earlier
 * `now` only makes next - now larger. GCRA cannot mint capacity from it.
 *
 * Saturation: when max(tat, now) + n*T would pass INT64_MAX the request is
 * denied with retry_after PRS_NEVER (conservative: never over-admit).
 *
 * Concurrency: a GCRA limiter object (prs_limiter, limiter.c) keeps the tat
 * in its lock-free word; decide_lockfree below is a compare-and-swap loop: a
 * lost race reloads `tat` and decides again. No lock, no allocation after
 * prs_gcra_new(). A limiter group (group.c), a reset and a reconfiguration
 * take the word itself as a lock (PRS__WORD_LOCKED, limiter_internal.h) for
 * the few nanoseconds they need; every decision waits while it sees that
 * value. A keyed slot or a group's scratch holds a plain int64 tat, decided by
 * the descriptor's plain decide under the container's lock.
 *
 * Reconfiguration (reconfigure_lockfree) takes the word the same way, so it is
 * serialised with groups, and changes the params under a sequence counter
 * (`seq`, odd while writing, and only while the word is locked): a decision
 * reads the params (atomic field loads) and the tat between two equal even
 * `seq` values, so the pair it decides on is consistent - the tat was stored
 * under those params - and never a mix of two configs. It then stores a new tat that re-expresses what is
 * consumed: at `now` the limiter holds tat - now ns of the old schedule, i.e.
 * (tat - now) / T_old requests; the new tat is now + ceil((tat - now) * T_new /
 * T_old), so the consumed requests are kept (rounded up: never a minted
 * request) and only the burst and the refill pace change. A tat at or before
 * now (nothing consumed) stays there. The stored value always differs from the
 * replaced one (at worst by 1 ns, in the conservative direction when
 * something is consumed), so a decision holding the old pair fails its
 * compare-and-swap and decides again on the new one; a config flipped back
 * and forth that brings the word back to the value it read brings the params
 * back too, so its pair is still right. Limit of that argument: a decision
 * stalled between its read and its CAS while the word comes back to the very
 * value it read under *different* params (three or more configs, and that
 * exact nanosecond) would apply its older params once.
 */
#include "limiter_internal.h"
#include "prs_gcra.h"

#include <stdalign.h>

/* The params of prs_algo_gcra; in a limiter object written only by
 * reconfigure_lockfree (holding the word, under `seq`), read as a copy
 * consistent under `seq` (prs__seq_params_load), field by field atomically. */
typedef struct gcra_params {
    int64_t interval_ns;   /* T >= 1, ceil(1e9 / rate) */
    int64_t tolerance_ns;  /* burst * T, no overflow (validated) */
    int64_t burst;         /* >= 1 */
    double rate;           /* as configured */
} gcra_params;

void prs_gcra_config_init(prs_gcra_config *cfg) {
    cfg->rate = 1.0;
    cfg->burst = 1;
    cfg->allocator = NULL;
}

static int64_t interval_for(double rate) { return prs__max64(1, prs__ceil_to_i64(1e9 / rate)); }

/* Validates cfg and fills *p: PRS_OK or the validation error with *why (*p untouched). */
static int params_make(const prs_gcra_config *cfg, gcra_params *p, prs_config_error *why) {
    if (!isfinite(cfg->rate) || cfg->rate <= 0.0)
        return prs_config_fail(why, PRS_EINVAL, "rate", "must be a finite number > 0");
    if (cfg->rate < 1e-9) return prs_config_fail(why, PRS_ERANGE, "rate", "must be >= 1e-9 per second");
    if (cfg->burst < 1) return prs_config_fail(why, PRS_EINVAL, "burst", "must be >= 1");
    int64_t t = interval_for(cfg->rate), tol;
    if (t == INT64_MAX || __builtin_mul_overflow(t, cfg->burst, &tol))
        return prs_config_fail(why, PRS_ERANGE, "burst",
                               "is too large for this rate (burst / rate must fit in 292 years "
                               "of nanoseconds)");
    p->rate = cfg->rate;
    p->burst = cfg->burst;
    p->interval_ns = interval_for(cfg->rate);
    p->tolerance_ns = p->interval_ns * cfg->burst;
    return PRS_OK;
}

/* Capacity left at `now` given tat, in ns of tolerance (0..tol). */
static int64_t slack_ns(const gcra_params *p, int64_t tat, int64_t now) {
    int64_t used = tat == INT64_MIN ? 0 : prs__max64(0, prs__sat_sub(tat, now));
    return prs__max64(0, p->tolerance_ns - prs__min64(used, p->tolerance_ns));
}

static void fill_denied(const gcra_params *p, int64_t tat, int64_t now, int64_t retry, prs_decision *d) {
    d->allowed = 0;
    d->limit = p->burst;
    d->remaining = slack_ns(p, tat, now) / p->interval_ns;
    d->retry_after_ns = retry;
    d->reset_after_ns = tat == INT64_MIN ? 0 : prs__max64(0, prs__sat_sub(tat, now));
}

/* The decision for n at now given tat == seen; when allowed, *next is the tat
 * after consuming. Pure: the caller stores *next (CAS or plain store). */
static int eval(const gcra_params *p, int64_t seen, int64_t now, int64_t n, int consume,
                int64_t *next, prs_decision *d) {
    if (n > p->burst) {
        fill_denied(p, seen, now, PRS_NEVER, d);
        return 0;
    }
    int64_t inc = n * p->interval_ns; /* n <= burst: no overflow */
    int64_t base = seen == INT64_MIN ? now : prs__max64(seen, now);
    if (__builtin_add_overflow(base, inc, next)) {
        fill_denied(p, seen, now, PRS_NEVER, d);
        return 0;
    }
    int64_t ahead; /* >= inc > 0 */
    if (__builtin_sub_overflow(*next, now, &ahead)) {
        /* tat near INT64_MAX, now near INT64_MIN: the wait is beyond int64 ns.
         * A saturated `ahead` would give a finite retry_after that is wrong. */
        fill_denied(p, seen, now, PRS_NEVER, d);
        return 0;
    }
    if (ahead > p->tolerance_ns) {
        fill_denied(p, seen, now, ahead - p->tolerance_ns, d);
        return 0;
    }
    d->allowed = 1;
    d->limit = p->burst;
    d->retry_after_ns = 0;
    /* peek reports the decision check would make: the state after this request
     * (as the token bucket does), for remaining and reset_after alike. */
    d->remaining = consume & PRS__DECIDE_BARE ? 0 : (p->tolerance_ns - ahead) / p->interval_ns;
    d->reset_after_ns = ahead;
    return 1;
}

/* The decision of a limiter object: a compare-and-swap on its word. */
static int decide_lockfree(prs_limiter *lim, int64_t now, int64_t n, int consume, prs_decision *d) {
    int64_t seen, next;
    const gcra_params *live = lim->params;
    gcra_params p;
    unsigned spins = 0;
    prs__backoff bo = PRS__BACKOFF_ON(lim);
    for (;;) {
        /* A consistent pair: the params and the tat read between two equal
         * even `seq` values (a reconfiguration holds the word locked while
         * `seq` is odd, so this tat was stored under these params). */
        uint64_t v = atomic_load_explicit(lim->seqp, memory_order_acquire);
        if (v & 1) {
            prs__spin_yield(++spins);
            if (lim->shm && (spins & 1023) == 0) prs__shm_limiter_poke(lim); /* a dead holder? */
            continue;
        }
        p.interval_ns = __atomic_load_n(&live->interval_ns, __ATOMIC_RELAXED);
        p.tolerance_ns = __atomic_load_n(&live->tolerance_ns, __ATOMIC_RELAXED);
        p.burst = __atomic_load_n(&live->burst, __ATOMIC_RELAXED);
        __atomic_load(&live->rate, &p.rate, __ATOMIC_RELAXED);
        seen = atomic_load_explicit(lim->wordp, memory_order_acquire);
        atomic_thread_fence(memory_order_acquire);
        if (seen == PRS__WORD_LOCKED || atomic_load_explicit(lim->seqp, memory_order_relaxed) != v) {
            prs__spin_yield(++spins); /* a group or a reconfiguration holds the word */
            if (lim->shm && (spins & 1023) == 0) prs__shm_limiter_poke(lim); /* a dead holder? */
            continue;
        }
        if (!eval(&p, seen, now, n, consume, &next, d) || !consume) break;
        if (next == PRS__WORD_LOCKED) next++; /* one ns later: never the lock value */
        if (atomic_compare_exchange_weak_explicit(lim->wordp, &seen, next, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
        /* lost the race: back off without touching the word (the winner keeps
         * its line and goes on at full speed), then decide again from a fresh
         * consistent pair */
        prs__backoff_wait(&bo);
    }
    if (consume) prs__limiter_count(lim, d->allowed);
    return PRS_OK;
}

/* The tat that keeps, under np, what tat consumes under op at now (see the
 * essay). Pure; INT64_MIN and tats at or before now are returned as they are. */
static int64_t rebase_tat(const gcra_params *op, int64_t tat, const gcra_params *np, int64_t now) {
    if (tat == INT64_MIN || tat <= now) return tat;
    __extension__ typedef __int128 i128;
    i128 ahead = (i128)tat - (i128)now; /* > 0 */
    i128 scaled = (ahead * np->interval_ns + op->interval_ns - 1) / op->interval_ns;
    i128 r = (i128)now + scaled;
    return r > INT64_MAX ? INT64_MAX : (int64_t)r;
}

/* Changes the params of a limiter object (see the essay). */
static void reconfigure_lockfree(prs_limiter *lim, const void *new_params, int64_t now) {
    const gcra_params *np = new_params;
    gcra_params *live = lim->params;
    int64_t tat = prs__word_lock(lim); /* serialised with groups and other reconfigurations */
    int64_t next = rebase_tat(live, tat, np, now);
    if (next == tat) { /* never store the replaced value (see the essay) */
        if (tat == INT64_MIN) next = INT64_MIN + 2;                  /* still long past */
        else if (tat <= now) next = tat - 1 == PRS__WORD_LOCKED ? INT64_MIN : tat - 1;
        else next = tat < INT64_MAX ? tat + 1 : tat - 1;             /* 1 ns more consumed */
    }
    uint64_t v = atomic_load_explicit(lim->seqp, memory_order_relaxed);
    atomic_store_explicit(lim->seqp, v + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    __atomic_store_n(&live->interval_ns, np->interval_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&live->tolerance_ns, np->tolerance_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&live->burst, np->burst, __ATOMIC_RELAXED);
    __atomic_store(&live->rate, &np->rate, __ATOMIC_RELAXED);
    atomic_store_explicit(lim->seqp, v + 2, memory_order_release);
    prs__word_unlock(lim, next);
}

PRS__LIMITER_GETTER(gcra, double, rate, rate)
PRS__LIMITER_GETTER(gcra, int64_t, burst, burst)
int64_t prs_gcra_interval_ns(const prs_gcra *g) {
    gcra_params p;
    prs__seq_params_load((const prs_limiter *)g, &p);
    return p.interval_ns;
}

/* ---- the descriptor: state is one int64 tat ---------------------------- */

PRS__ALGO_FIXED_STATE(int64_t)
static void algo_state_init(const void *params, void *state) { (void)params; *(int64_t *)state = INT64_MIN; }
static int algo_decide(const void *params, void *state, int64_t now, int64_t n, int consume,
                       prs_decision *d) {
    if (!params || !state || !d || n < 1) return PRS_EINVAL;
    int64_t next;
    if (eval(params, *(int64_t *)state, now, n, consume, &next, d) && consume) *(int64_t *)state = next;
    return PRS_OK;
}
static void algo_refund(const void *params, void *state, int64_t now, int64_t n) {
    const gcra_params *p = params;
    int64_t *tat = state;
    if (*tat == INT64_MIN || n < 1) return;
    int64_t back = prs__sat_mul(n, p->interval_ns);
    int64_t t = prs__sat_sub(*tat, back);
    *tat = t <= now ? INT64_MIN : t;
}
static int algo_is_fresh(const void *params, const void *state, int64_t now) {
    int64_t tat = *(const int64_t *)state;
    (void)params;
    return tat == INT64_MIN || tat <= now;
}
static double algo_available(const void *params, const void *state, int64_t now) {
    const gcra_params *p = params;
    return (double)slack_ns(p, *(const int64_t *)state, now) / (double)p->interval_ns;
}

PRS__ALGO_PARAMS_BY(params_make)
PRS__ALGO_CONFIG_FROM(gcra_params, prs_gcra_config, rate, rate, burst, burst)
static void algo_rebase(const void *old_params, const void *state, const void *new_params,
                        void *new_state, int64_t now) {
    *(int64_t *)new_state = rebase_tat(old_params, *(const int64_t *)state, new_params, now);
}

PRS__ALGO_DESCRIPTOR(gcra, gcra_params, decide_lockfree, reconfigure_lockfree)

PRS__LIMITER_TYPED_IMPL(gcra)
