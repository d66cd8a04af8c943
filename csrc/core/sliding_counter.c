/*
 * sliding_counter.c - the sliding window counter (two aligned counters).
 *
 * State (24 bytes, guarded by `lock`):
 *   start   the start of the current window (a multiple of w)
 *   cur     units admitted in [start, start + w), 0 <= cur <= limit
 *   prev    units admitted in [start - w, start), 0 <= prev <= limit
 *   cur == prev == 0 means "nothing remembered" (start is then meaningless).
 *
 * At now, with ws = floor(now / w) * w, the state seen is: (start, cur, prev)
 * when ws == start; (ws, 0, cur) when ws == start + w; (ws, 0, 0) later; and
 * (start, cur, prev) at e = 0 when ws < start (a clock going backwards sees the
 * most restrictive instant of the remembered window, never a fresh one).
 * With e = now - start, a request of weight n is admitted iff
 *     prev * (w - e) + (cur + n) * w <= limit * w          (128-bit integers)
 *
 * retry_after, exact to the ns (the left side only falls as time passes):
 *   - cur + n <= limit: the first e' with prev * (w - e') <= X,
 *     X = (limit - cur - n) * w, is e' = w - floor(X / prev);
 *   - cur + n > limit: not in this window; in the next one prev' = cur, and
 *     e' = w - floor((limit - n) * w / cur) into it (e' = w: the window after,
 *     where both counters are 0).
 *
 * Saturation: instants whose window end passes INT64_MAX give PRS_NEVER.
 *
 * Reconfiguration (prs_sliding_counter_reconfigure, and a keyed table's
 * through the descriptor's rebase), under the lock: with the same window
 * length both counters are kept as they are (a lowered limit below them
 * admits nothing until the weighted count falls under it). With a new length
 * the weighted count in force at `now`, ceil(prev * (w - e) / w) + cur, is
 * carried whole into the new-aligned window holding now as its `cur` (prev 0):
 * never less than what the old windows still counted. cur may then exceed
 * the limit until that window is over.
 */
#include "limiter_internal.h"
#include "prs_sliding_counter.h"

__extension__ typedef __int128 i128;

/* The params of prs_algo_sliding_counter. */
typedef prs__window_params sc_params;

typedef struct sc_state {
    int64_t start;      /* current window start; meaningless when cur == prev == 0 */
    int64_t cur;        /* 0..limit */
    int64_t prev;       /* 0..limit */
} sc_state;

PRS__WINDOW_CONFIG_INIT(sliding_counter)

static void state_init(sc_state *s) {
    s->start = 0;
    s->cur = 0;
    s->prev = 0;
}

/* The state as seen at now: window start, counters, and e in [0, w). */
typedef struct sc_view {
    int64_t start, cur, prev, e;
} sc_view;

static sc_view view_at(const sc_params *p, const sc_state *s, int64_t now) {
    int64_t w = p->window_ns, ws = prs__align_down(now, w), gap;
    sc_view v = {ws, 0, 0, prs__sat_sub(now, ws)};
    if (s->cur == 0 && s->prev == 0) return v;
    if (ws <= s->start) {
        v.start = s->start;
        v.cur = s->cur;
        v.prev = s->prev;
        v.e = ws == s->start ? now - ws : 0;
    } else if (!__builtin_sub_overflow(ws, s->start, &gap) && gap == w) {
        v.prev = s->cur;
    }
    return v;
}

/* Weight-1 units admissible on top of `cur` in view v. */
static int64_t room(const sc_params *p, const sc_view *v, int64_t cur) {
    i128 w = p->window_ns;
    i128 num = (i128)p->limit * w - (i128)v->prev * (w - v->e);
    if (num <= 0) return 0;
    i128 r = num / w - cur;
    return r > 0 ? (int64_t)r : 0;
}

static void state_decide(const sc_params *p, sc_state *s, int64_t now, int64_t n, int consume,
                         prs_decision *d) {
    sc_view v = view_at(p, s, now);
    int64_t w = p->window_ns, after = v.cur;
    d->limit = p->limit;
    if (n > p->limit) {
        d->allowed = 0;
        d->retry_after_ns = PRS_NEVER;
    } else if (n > p->limit - v.cur) {
        /* Not in this window (v.cur > 0 here): e' into the next one. */
        i128 x = (i128)(p->limit - n) * w;
        int64_t e2 = w - (int64_t)(x / v.cur);
        int64_t off;
        d->allowed = 0;
        d->retry_after_ns =
            __builtin_add_overflow(w, e2, &off) ? PRS_NEVER : prs__ns_until(v.start, off, now);
    } else {
        i128 lhs = (i128)v.prev * (w - v.e) + (i128)(v.cur + n) * w;
        if (lhs <= (i128)p->limit * w) {
            d->allowed = 1;
            d->retry_after_ns = 0;
            after = v.cur + n;
            if (consume) {
                s->start = v.start;
                s->cur = after;
                s->prev = v.prev;
            }
        } else {
            /* v.prev > 0 here: the first e' with prev * (w - e') <= X. */
            i128 x = (i128)(p->limit - v.cur - n) * w;
            int64_t e2 = w - (int64_t)(x / v.prev);
            d->allowed = 0;
            d->retry_after_ns = prs__ns_until(v.start, e2, now);
        }
    }
    d->remaining = room(p, &v, after);
    if (after > 0) {
        int64_t off;
        d->reset_after_ns =
            __builtin_add_overflow(w, w, &off) ? PRS_NEVER : prs__ns_until(v.start, off, now);
    } else {
        d->reset_after_ns = v.prev > 0 ? prs__ns_until(v.start, w, now) : 0;
    }
}

static double avail(const sc_params *p, const sc_state *s, int64_t now) {
    sc_view v = view_at(p, s, now);
    double w = (double)p->window_ns;
    double est = (double)v.prev * ((w - (double)v.e) / w) + (double)v.cur;
    double a = (double)p->limit - est;
    return a > 0.0 ? a : 0.0;
}

/* The state s (under op) at now, expressed under np (see the essay). */
static void rebase(const sc_params *op, const sc_state *s, const sc_params *np, sc_state *out,
                   int64_t now) {
    if (np->window_ns == op->window_ns) {
        *out = *s;
        return;
    }
    sc_view v = view_at(op, s, now);
    i128 w = op->window_ns;
    i128 est = (i128)v.cur + ((i128)v.prev * (w - v.e) + w - 1) / w;
    sc_state r = {0, 0, 0};
    if (est > 0) {
        /* a now behind the remembered window counts as that window's start */
        r.start = prs__align_down(prs__max64(now, v.start), np->window_ns);
        r.cur = est > INT64_MAX ? INT64_MAX : (int64_t)est;
    }
    *out = r;
}

PRS__WINDOW_GETTERS(sliding_counter)

/* ---- the descriptor: state is sc_state (24 bytes) ---------------------- */

PRS__ALGO_FIXED_STATE(sc_state)
PRS__ALGO_STATE_INIT_BY(state_init)
PRS__ALGO_DECIDE_BY(state_decide)
/* Gives back from the remembered current window (which becomes `prev` in the
 * next one, so this is right there too; further on it no longer counts). */
static void algo_refund(const void *params, void *state, int64_t now, int64_t n) {
    sc_state *s = state;
    (void)params;
    (void)now;
    if (n < 1) return;
    s->cur = n >= s->cur ? 0 : s->cur - n;
}
static int algo_is_fresh(const void *params, const void *state, int64_t now) {
    sc_view v = view_at(params, state, now);
    return v.cur == 0 && v.prev == 0;
}
PRS__ALGO_AVAILABLE_BY(avail)

PRS__WINDOW_CONFIG_FNS(prs_sliding_counter_config, INT64_MAX, "")
PRS__ALGO_REBASE_BY(rebase)

PRS__ALGO_DESCRIPTOR(sliding_counter, sc_params, NULL, NULL)

PRS__LIMITER_TYPED_IMPL(sliding_counter)
