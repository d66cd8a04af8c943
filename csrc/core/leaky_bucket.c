/*
 * leaky_bucket.c - a leaky bucket as a meter, with real-valued levels.
 *
 * State (guarded by `lock`, held only around the arithmetic below):
 *   level   the level at time `last` (0 <= level <= capacity)
 *   last    the time of the last admitted request; INT64_MIN: never used (empty)
 *
 * The level at now is max(0, level - (now - last) * leak_rate). Decision at
 * now for n: the excess level + n - capacity (when > 0) must drain first; it
 * becomes an integer number of nanoseconds `need` = ceil(excess * (1e9 / rate))
 * and the request is admitted iff now - last >= need. Denials change nothing,
 * so the verdict and retry_after = last + need - now come from one integer: a
 * request denied at t is denied before t + retry_after and admitted at
 * t + retry_after. This is the token bucket mirrored (room = capacity - level);
 * it is a separate module because its parameters, its start (empty, i.e. a full
 * burst is available) and its is_fresh test (level 0) read as a meter.
 *
 * Clock going backwards: elapsed time is max(0, now - last), so an earlier now
 * drains nothing, and `last` only moves forward.
 *
 * Reconfiguration (prs_leaky_bucket_reconfigure, and a keyed table's through
 * the descriptor's rebase): under the lock the level is drained to `now` at
 * the old rate and `last` becomes now; the level is kept as it is, even above
 * a lowered capacity (then nothing is admitted until it drains below
 * capacity - n at the new rate: a lowered capacity never frees room, a raised
 * one adds room at once). So 0 <= level, and level <= capacity except after
 * a lowering, until the next admission.
 *
 * Range: capacity and leak_rate up to 1e15 (doubles hold such levels exactly
 * to the unit); every nanosecond result saturates at PRS_NEVER.
 *
 * Workload: one check per request, a few dozen nanoseconds under an
 * uncontended spinlock; no allocation after prs_leaky_bucket_new().
 */
#include "limiter_internal.h"
#include "prs_leaky_bucket.h"

#define PRS_LB_MAX 1e15

/* The params of prs_algo_leaky_bucket. */
typedef struct lb_params {
    double capacity;     /* (0, 1e15] */
    double rate;         /* (0, 1e15] units drained per second */
    double ns_per_unit;  /* 1e9 / rate: every "ns to drain" goes through it (no division) */
    double per_ns;       /* rate / 1e9: units drained per ns */
} lb_params;

/* The mutable state (16 bytes): what a keyed table keeps per key. */
typedef struct lb_state {
    double level;     /* at time `last`, 0 <= level <= capacity */
    int64_t last;     /* INT64_MIN = unused (empty) */
} lb_state;

void prs_leaky_bucket_config_init(prs_leaky_bucket_config *cfg) {
    cfg->capacity = 1.0;
    cfg->leak_rate = 1.0;
    cfg->allocator = NULL;
}

static void state_init(const lb_params *p, lb_state *s) {
    (void)p;
    s->level = 0.0;
    s->last = INT64_MIN;
}

/* Validates cfg and fills *p: PRS_OK or the validation error with *why (*p untouched). */
static int params_make(const prs_leaky_bucket_config *cfg, lb_params *p, prs_config_error *why) {
    if (!isfinite(cfg->capacity) || cfg->capacity <= 0.0)
        return prs_config_fail(why, PRS_EINVAL, "capacity", "must be a finite number > 0");
    if (!isfinite(cfg->leak_rate) || cfg->leak_rate <= 0.0)
        return prs_config_fail(why, PRS_EINVAL, "leak_rate", "must be a finite number > 0");
    if (cfg->capacity > PRS_LB_MAX)
        return prs_config_fail(why, PRS_ERANGE, "capacity", "must be <= 1e15");
    if (cfg->leak_rate > PRS_LB_MAX)
        return prs_config_fail(why, PRS_ERANGE, "leak_rate", "must be <= 1e15");
    p->capacity = cfg->capacity;
    p->rate = cfg->leak_rate;
    p->ns_per_unit = 1e9 / cfg->leak_rate;
    p->per_ns = cfg->leak_rate / 1e9;
    return PRS_OK;
}

/* ns to drain `amount` (> 0). */
static int64_t ns_for(const lb_params *p, double amount) {
    return prs__ceil_to_i64(amount * p->ns_per_unit);
}

/* Saturating: more than 2^63 ns between two decisions reads as PRS_NEVER. */
static int64_t elapsed_since(const lb_state *s, int64_t now) {
    return (s->last != INT64_MIN && now > s->last) ? prs__sat_sub(now, s->last) : 0;
}

/* The level `elapsed` ns after `last`. */
static double level_after(const lb_params *p, const lb_state *s, int64_t elapsed) {
    double l = s->level - (double)elapsed * p->per_ns;
    return l > 0.0 ? l : 0.0;
}

/* ns of draining state s needs (from s->last) before n fits; 0 if it fits at
 * once, PRS_NEVER if it never does within int64 ns.
 * level - (capacity - n), not level + n - capacity: for whole capacity and n
 * the parenthesis is exact, so n == capacity needs exactly the drain time of
 * the level, which is what reset_after reports. */
static int64_t need_for(const lb_params *p, const lb_state *s, int64_t n) {
    double excess = s->level - (p->capacity - (double)n);
    return excess > 0.0 ? ns_for(p, excess) : 0;
}

static int fits(const lb_params *p, const lb_state *s, int64_t elapsed, int64_t n) {
    int64_t need = need_for(p, s, n);
    return need != PRS_NEVER && elapsed >= need;
}

/* The largest m <= floor(capacity) with fits(m): what `remaining` reports, by
 * the same test the decisions use (a float guess, then corrected). */
static int64_t admissible(const lb_params *p, const lb_state *s, int64_t elapsed) {
    int64_t cap = prs__floor_to_i64(p->capacity);
    int64_t m = prs__min64(cap, prs__floor_to_i64(p->capacity - level_after(p, s, elapsed)));
    while (m > 0 && !fits(p, s, elapsed, m)) m--;
    while (m < cap && fits(p, s, elapsed, m + 1)) m++;
    return m;
}

static void state_decide(const lb_params *p, lb_state *s, int64_t now, int64_t n, int consume,
                         prs_decision *d) {
    int64_t elapsed = elapsed_since(s, now);
    lb_state post = *s; /* the state remaining/reset_after describe */
    d->limit = prs__floor_to_i64(p->capacity);
    int64_t need = (double)n > p->capacity ? PRS_NEVER : need_for(p, s, n);
    if (need != PRS_NEVER && elapsed >= need) {
        d->allowed = 1;
        d->retry_after_ns = 0;
        post.level = level_after(p, s, elapsed) + (double)n;
        if (post.level > p->capacity) post.level = p->capacity; /* rounding at the boundary */
        if (post.last == INT64_MIN || now > post.last) post.last = now;
        if (consume) *s = post;
    } else {
        /* need > elapsed >= 0, so s->last != INT64_MIN (an empty bucket has no excess) */
        int64_t at;
        d->allowed = 0;
        d->retry_after_ns = (need == PRS_NEVER || __builtin_add_overflow(s->last, need, &at))
                                ? PRS_NEVER
                                : prs__sat_sub(at, now);
    }
    d->remaining = admissible(p, &post, elapsed_since(&post, now));
    /* back to empty at post.last + the drain time of post.level (the instant at
     * which check(floor(capacity)) is admitted, for a whole capacity) */
    if (post.level <= 0.0 || post.last == INT64_MIN) {
        d->reset_after_ns = 0;
    } else {
        int64_t drain = ns_for(p, post.level), at;
        d->reset_after_ns = (drain == PRS_NEVER || __builtin_add_overflow(post.last, drain, &at))
                                ? PRS_NEVER
                                : prs__max64(0, prs__sat_sub(at, now));
    }
}

static double level_of(const void *params, const void *state, int64_t now) {
    const lb_state *s = state;
    return level_after(params, s, elapsed_since(s, now));
}

double prs_leaky_bucket_level(prs_leaky_bucket *lb, int64_t now_ns) {
    return prs__limiter_read((prs_limiter *)lb, now_ns, level_of);
}

/* The state s (under op) drained to now, then kept under np (see the essay). */
static void rebase(const lb_params *op, const lb_state *s, const lb_params *np, lb_state *out,
                   int64_t now) {
    (void)np;
    lb_state r = *s;
    if (s->last != INT64_MIN) {
        r.level = level_after(op, s, elapsed_since(s, now));
        r.last = prs__max64(now, s->last);
    }
    *out = r;
}

PRS__LIMITER_GETTER(leaky_bucket, double, capacity, capacity)
PRS__LIMITER_GETTER(leaky_bucket, double, leak_rate, leak_rate)
/* ---- the descriptor: state is lb_state (16 bytes) ---------------------- */

PRS__ALGO_FIXED_STATE(lb_state)
static void algo_state_init(const void *params, void *state) { state_init(params, state); }
PRS__ALGO_DECIDE_BY(state_decide)
static void algo_refund(const void *params, void *state, int64_t now, int64_t n) {
    lb_state *s = state;
    (void)params;
    (void)now;
    if (n < 1 || s->last == INT64_MIN) return;
    double l = s->level - (double)n;
    s->level = l > 0.0 ? l : 0.0;
}
static int algo_is_fresh(const void *params, const void *state, int64_t now) {
    const lb_state *s = state;
    return s->last == INT64_MIN || level_after(params, s, elapsed_since(s, now)) <= 0.0;
}
static double algo_available(const void *params, const void *state, int64_t now) {
    const lb_params *p = params;
    const lb_state *s = state;
    double room = p->capacity - level_after(p, s, elapsed_since(s, now));
    return room > 0.0 ? room : 0.0;
}

PRS__ALGO_PARAMS_BY(params_make)
PRS__ALGO_CONFIG_FROM(lb_params, prs_leaky_bucket_config, capacity, capacity, leak_rate, rate)
PRS__ALGO_REBASE_BY(rebase)

PRS__ALGO_DESCRIPTOR(leaky_bucket, lb_params, NULL, NULL)

PRS__LIMITER_TYPED_IMPL(leaky_bucket)
