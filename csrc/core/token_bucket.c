/*
 * token_bucket.c - a token bucket with real-valued tokens.
 *
 * State (a prs_limiter's, guarded by its lock; or a keyed slot; 16 bytes):
 *   tokens  tokens in the bucket at time `last` (0 <= tokens <= capacity)
 *   last    the time of the last admitted request; INT64_MIN: never used (full)
 *
 * Decision at `now` for n tokens: now is clamped to `last` (a clock going
 * backwards never creates tokens). The deficit n - tokens becomes an integer
 * number of nanoseconds `need` = ceil(deficit * 1e9 / rate); the request is
 * admitted iff now - last >= need. Denials change nothing, so both the verdict
 * and retry_after = need - (now - last) come from one integer: a request denied
 * at t is denied before t + retry_after and admitted at t + retry_after.
 *
 * Reconfiguration (the descriptor's rebase, for a limiter object and a keyed
 * table alike): under the state's lock, the state is first brought to
 * `now` under the old params (the refill earned so far at the old rate), then
 * the tokens are capped at the new capacity and `last` becomes now; the new
 * params apply from there on. Tokens are never added: a never-used bucket
 * keeps its old capacity's worth (a raised capacity fills at the new rate).
 *
 * Range: capacity and rate up to 1e15 (doubles hold such token counts exactly
 * to the unit); elapsed times up to INT64_MAX ns multiply without overflow in
 * double, and every ns result saturates at PRS_NEVER.
 */
#include "limiter_internal.h"
#include "prs_token_bucket.h"

#define PRS_TB_MAX 1e15

/* The params of prs_algo_token_bucket. */
typedef struct tb_params {
    double capacity;      /* (0, 1e15] */
    double rate;          /* [0, 1e15] tokens per second */
    double per_ns;        /* rate / 1e9: tokens per ns */
    double ns_per_token;  /* 1e9 / rate; +inf when rate is 0 */
    int64_t limit;        /* floor(capacity), for decisions */
} tb_params;

/* The mutable state (16 bytes): what a keyed table keeps per key. */
typedef struct tb_state {
    double tokens;    /* at time `last`, 0 <= tokens <= capacity */
    int64_t last;     /* INT64_MIN = unused (full) */
} tb_state;

void prs_token_bucket_config_init(prs_token_bucket_config *cfg) {
    cfg->capacity = 1.0;
    cfg->refill_rate = 1.0;
    cfg->allocator = NULL;
}

/* Validates cfg and fills *p: PRS_OK or the validation error with *why (*p untouched). */
static int params_make(const prs_token_bucket_config *cfg, tb_params *p, prs_config_error *why) {
    if (!isfinite(cfg->capacity) || cfg->capacity <= 0.0)
        return prs_config_fail(why, PRS_EINVAL, "capacity", "must be a finite number > 0");
    if (!isfinite(cfg->refill_rate) || cfg->refill_rate < 0.0)
        return prs_config_fail(why, PRS_EINVAL, "refill_rate", "must be a finite number >= 0");
    if (cfg->capacity > PRS_TB_MAX)
        return prs_config_fail(why, PRS_ERANGE, "capacity", "must be <= 1e15");
    if (cfg->refill_rate > PRS_TB_MAX)
        return prs_config_fail(why, PRS_ERANGE, "refill_rate", "must be <= 1e15");
    p->capacity = cfg->capacity;
    p->rate = cfg->refill_rate;
    p->per_ns = cfg->refill_rate / 1e9;
    p->limit = prs__floor_to_i64(cfg->capacity);
    p->ns_per_token = cfg->refill_rate > 0.0 ? 1e9 / cfg->refill_rate : INFINITY;
    return PRS_OK;
}

/* ns to accumulate `deficit` tokens (deficit > 0); PRS_NEVER when rate is 0. */
static int64_t ns_for(const tb_params *p, double deficit) {
    return prs__ceil_to_i64(deficit * p->ns_per_token); /* inf -> PRS_NEVER */
}

static int64_t elapsed_since(const tb_state *s, int64_t now) {
    /* saturating: a span past INT64_MAX ns (far past to far future) must not wrap */
    return (s->last != INT64_MIN && now > s->last) ? prs__sat_sub(now, s->last) : 0;
}

/* The wait from `now` until last + need, when the refill covers the request.
 * Counted from `now` itself, not from `now` clamped to `last`, so it stays
 * exact after the clock stepped back; PRS_NEVER past INT64_MAX. */
static int64_t wait_from(const tb_state *s, int64_t need, int64_t now) {
    int64_t from = s->last == INT64_MIN ? now : s->last, at, wait;
    if (need == PRS_NEVER || __builtin_add_overflow(from, need, &at) ||
        __builtin_sub_overflow(at, now, &wait))
        return PRS_NEVER;
    return wait;
}

/* Tokens at `elapsed` ns after `last`, capped. */
static double tokens_after(const tb_params *p, const tb_state *s, int64_t elapsed) {
    double t = s->tokens + (double)elapsed * p->per_ns;
    return t < p->capacity ? t : p->capacity;
}

static void state_decide(const tb_params *p, tb_state *s, int64_t now, int64_t n, int consume,
                         prs_decision *d) {
    int64_t elapsed = elapsed_since(s, now);
    double have = tokens_after(p, s, elapsed), left = have;
    d->limit = p->limit;
    if ((double)n > p->capacity) {
        d->allowed = 0;
        d->retry_after_ns = PRS_NEVER;
    } else {
        double deficit = (double)n - s->tokens;
        int64_t need = deficit > 0.0 ? ns_for(p, deficit) : 0;
        if (need != PRS_NEVER && elapsed >= need) { /* PRS_NEVER: no elapsed time is enough */
            d->allowed = 1;
            d->retry_after_ns = 0;
            left = have - (double)n;
            if (left < 0.0) left = 0.0; /* rounding at the boundary */
            if (consume) {
                /* INT64_MIN marks "never used": an admission at that very
                 * instant is recorded 1 ns later (1 ns less refill, never more). */
                int64_t at = now == INT64_MIN ? INT64_MIN + 1 : now;
                s->tokens = left;
                if (s->last == INT64_MIN || at > s->last) s->last = at;
            }
        } else {
            d->allowed = 0;
            d->retry_after_ns = wait_from(s, need, now);
        }
    }
    d->remaining = prs__floor_to_i64(left);
    d->reset_after_ns = left >= p->capacity ? 0 : ns_for(p, p->capacity - left);
}

/* The state s (under op) brought to now, then expressed under np. */
static void rebase(const tb_params *op, const tb_state *s, const tb_params *np, tb_state *out,
                   int64_t now) {
    tb_state r;
    if (s->last == INT64_MIN) { /* never used: full at the old capacity */
        r.tokens = op->capacity;
        r.last = now == INT64_MIN ? INT64_MIN + 1 : now;
    } else {
        r.tokens = tokens_after(op, s, elapsed_since(s, now));
        r.last = prs__max64(now, s->last);
    }
    if (r.tokens > np->capacity) r.tokens = np->capacity;
    *out = r;
}

PRS__LIMITER_GETTER(token_bucket, double, capacity, capacity)
PRS__LIMITER_GETTER(token_bucket, double, refill_rate, refill_rate)

/* ---- the descriptor: state is tb_state (16 bytes) ---------------------- */

PRS__ALGO_FIXED_STATE(tb_state)
static void algo_state_init(const void *params, void *state) {
    tb_state *s = state;
    s->tokens = ((const tb_params *)params)->capacity;
    s->last = INT64_MIN;
}
PRS__ALGO_DECIDE_BY(state_decide)
static void algo_refund(const void *params, void *state, int64_t now, int64_t n) {
    const tb_params *p = params;
    tb_state *s = state;
    if (n < 1 || s->last == INT64_MIN) return;
    double t = s->tokens + (double)n;
    s->tokens = t < p->capacity ? t : p->capacity;
}
static int algo_is_fresh(const void *params, const void *state, int64_t now) {
    const tb_state *s = state;
    const tb_params *p = params;
    return s->last == INT64_MIN || tokens_after(p, s, elapsed_since(s, now)) >= p->capacity;
}
static double algo_available(const void *params, const void *state, int64_t now) {
    const tb_state *s = state;
    return tokens_after(params, s, elapsed_since(s, now));
}

PRS__ALGO_PARAMS_BY(params_make)
PRS__ALGO_CONFIG_FROM(tb_params, prs_token_bucket_config, capacity, capacity, refill_rate, rate)
PRS__ALGO_REBASE_BY(rebase)

PRS__ALGO_DESCRIPTOR(token_bucket, tb_params, NULL, NULL)

PRS__LIMITER_TYPED_IMPL(token_bucket)
