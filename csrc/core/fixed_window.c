/*
 * fixed_window.c - a counter per aligned window.
 *
 * State (16 bytes, guarded by `lock`):
 *   start   the start of the window `count` belongs to (a multiple of w)
 *   count   units admitted in that window, 0 <= count <= limit;
 *           count == 0 means "nothing remembered" (start is then meaningless)
 *
 * Decision at now for n: the window of now is floor(now / w) * w. If it is
 * after `start`, the count starts again at 0; if it is `start` or earlier (a
 * clock going backwards), the remembered count applies. Admitted iff
 * count + n <= limit. A denial's retry_after is the end of that window minus
 * now; there the count is 0 and n <= limit is admitted, and any earlier
 * instant still sees the same count: exact.
 *
 * Saturation: a window whose end would pass INT64_MAX never ends (retry_after
 * and reset_after PRS_NEVER); the window start of an instant near INT64_MIN
 * saturates at INT64_MIN. Nothing wraps.
 *
 * Concurrency: a spinlock around a handful of integer operations.
 *
 * Reconfiguration (prs_fixed_window_reconfigure, and a keyed table's through
 * the descriptor's rebase), under the lock: the count of the window in force
 * at `now` is kept. With the same window length it stays on its window; with a
 * new length it is carried into the new-aligned window holding now (the units
 * admitted there still count until that window ends). A count above a lowered
 * limit is kept too (count <= limit then holds again from the next window):
 * nothing is admitted until the window moves on.
 */
#include "limiter_internal.h"
#include "prs_fixed_window.h"

/* The params of prs_algo_fixed_window. */
typedef prs__window_params fw_params;

typedef struct fw_state {
    int64_t start;      /* window start of `count`; meaningless when count == 0 */
    int64_t count;      /* 0..limit (above it after a lowering reconfigure) */
} fw_state;

PRS__WINDOW_CONFIG_INIT(fixed_window)

static void state_init(fw_state *s) {
    s->start = 0;
    s->count = 0;
}

/* The window in force at now and its count (clamped to the remembered one). */
static void current(const fw_params *p, const fw_state *s, int64_t now, int64_t *start,
                    int64_t *count) {
    int64_t ws = prs__align_down(now, p->window_ns);
    if (s->count > 0 && ws <= s->start) {
        *start = s->start;
        *count = s->count;
    } else {
        *start = ws;
        *count = 0;
    }
}

static void state_decide(const fw_params *p, fw_state *s, int64_t now, int64_t n, int consume,
                         prs_decision *d) {
    int64_t start, count;
    current(p, s, now, &start, &count);
    int64_t after = count;
    d->limit = p->limit;
    if (n > p->limit) {
        d->allowed = 0;
        d->retry_after_ns = PRS_NEVER;
    } else if (n <= p->limit - count) {
        d->allowed = 1;
        d->retry_after_ns = 0;
        after = count + n;
        if (consume) {
            s->start = start;
            s->count = after;
        }
    } else {
        d->allowed = 0;
        d->retry_after_ns = prs__ns_until(start, p->window_ns, now);
    }
    d->remaining = prs__max64(0, p->limit - after);
    d->reset_after_ns = after == 0 ? 0 : prs__ns_until(start, p->window_ns, now);
}

static double avail(const fw_params *p, const fw_state *s, int64_t now) {
    int64_t start, count;
    current(p, s, now, &start, &count);
    return count < p->limit ? (double)(p->limit - count) : 0.0;
}

/* The state s (under op) as seen at now, expressed under np (see the essay). */
static void rebase(const fw_params *op, const fw_state *s, const fw_params *np, fw_state *out,
                   int64_t now) {
    int64_t start, count;
    current(op, s, now, &start, &count);
    fw_state r = {start, count};
    /* a now behind the remembered window counts as that window's start */
    if (count == 0) r.start = 0;
    else if (np->window_ns != op->window_ns)
        r.start = prs__align_down(prs__max64(now, start), np->window_ns);
    *out = r;
}

PRS__WINDOW_GETTERS(fixed_window)

/* ---- the descriptor: state is fw_state (16 bytes) ---------------------- */

PRS__ALGO_FIXED_STATE(fw_state)
PRS__ALGO_STATE_INIT_BY(state_init)
PRS__ALGO_DECIDE_BY(state_decide)
/* Only the window still in force can give back; a past window is gone. */
static void algo_refund(const void *params, void *state, int64_t now, int64_t n) {
    const fw_params *p = params;
    fw_state *s = state;
    if (n < 1 || s->count == 0 || prs__align_down(now, p->window_ns) > s->start) return;
    s->count = n >= s->count ? 0 : s->count - n;
}
static int algo_is_fresh(const void *params, const void *state, int64_t now) {
    const fw_params *p = params;
    const fw_state *s = state;
    return s->count == 0 || prs__align_down(now, p->window_ns) > s->start;
}
PRS__ALGO_AVAILABLE_BY(avail)

PRS__WINDOW_CONFIG_FNS(prs_fixed_window_config, INT64_MAX, "")
PRS__ALGO_REBASE_BY(rebase)

PRS__ALGO_DESCRIPTOR(fixed_window, fw_params, NULL, NULL)

PRS__LIMITER_TYPED_IMPL(fixed_window)
