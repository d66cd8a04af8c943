/*
 * sliding_log.c - the exact sliding window: a ring of admission times.
 *
 * State (guarded by `lock`): a 32-byte header followed by a ring of `limit`
 * int64 timestamps.
 *   last    the latest instant seen (INT64_MIN: none); earlier instants are
 *           taken as `last`, so a clock going backwards never un-expires
 *           nothing and never frees a slot
 *   head    index of the oldest entry, 0 <= head < limit
 *   count   entries in the ring, 0 <= count <= limit; entry i (0 = oldest) is
 *           ring[(head + i) % limit]; entries are non-decreasing in i
 * An entry e is live at t while t < e + w; it expires at e + w (when t - w
 * is below INT64_MIN nothing has expired: no saturation there).
 *
 * Decision at now for n: t = max(now, last); expired entries (e <= t - w) are
 * dropped from the head (amortized O(1): each entry is written once and
 * dropped once); admitted iff count + n <= limit, and then n copies of t are
 * appended. When denied, k = count + n - limit entries must expire first; the
 * k-th oldest, e_k, leaves at e_k + w, so retry_after = e_k + w - now, exact
 * (entries only leave in order, and nothing else changes the count).
 *
 * Dropping expired entries and moving `last` forward happen on peek too: they
 * change no decision, now or later.
 *
 * The same code serves the prs_algo descriptor: its state is this header and
 * ring, laid out contiguously (state_size = 32 + 8 * limit), unless the params
 * name an external ring (below).
 *
 * Reconfiguration (prs_sliding_log_reconfigure, and a keyed table's through
 * the descriptor's rebase), under the lock: the timestamps are kept; a new
 * window applies to them as they are (each entry expires at its time + the
 * new window); a new limit L' keeps the newest min(count, L') entries in the
 * ring and counts the others in `dropped`. That loses no decision under L':
 * a request needs count + n - L' of the oldest entries gone, i.e. waits for
 * entry count - L' + n - 1 (0 = oldest), which is among the newest L'; the
 * dropped older ones leave first, and as soon as any entry expires every
 * dropped one has too (dropped goes back to 0). A limit raised again while
 * dropped > 0 brings them back first, as copies of the oldest kept entry
 * (later than their real times: never an admission the limit forbids). The
 * ring is re-packed (oldest at index 0), O(limit) under the lock.
 *
 * Where the ring lives. A prs_sliding_log object is allocated with an inline
 * ring of `inline_cap` entries (the limit it was made with) after its header;
 * a limit raised above inline_cap moves the ring to a separate allocation of
 * `limit` entries, named by params.ring (NULL: inline). The header stays where
 * it is, so a group keeps its pointer to the state; with an external ring the
 * descriptor's state_size is the 32-byte header alone, which is all a group
 * needs to snapshot (entries past `count` are free). Keyed tables always use
 * inline rings (their params are made from a config: ring NULL) and re-lay
 * their slots when the size changes (keyed.c).
 */
#include "limiter_internal.h"
#include "prs_sliding_log.h"

/* The params of prs_algo_sliding_log. */
typedef prs__window_params sl_params;

typedef struct sl_hdr {
    int64_t last;       /* latest instant seen; INT64_MIN: none */
    int64_t head;       /* 0..limit-1 */
    int64_t count;      /* 0..limit */
    int64_t dropped;    /* entries older than the ring's oldest that a lowered limit
                           left out, still counted as live; > 0 only while
                           count == limit, 0 again once any entry expires */
    /* followed by int64_t ring[limit] */
} sl_hdr;

const size_t prs__sliding_log_undo_bytes = sizeof(sl_hdr);

static int64_t *ring_of(sl_hdr *h) { return (int64_t *)(h + 1); }
static const int64_t *cring_of(const sl_hdr *h) { return (const int64_t *)(h + 1); }

/* The i-th oldest entry (0 <= i < count). */
static int64_t entry(const sl_params *p, const sl_hdr *h, int64_t i) {
    int64_t k = h->head + i;
    if (k >= p->limit) k -= p->limit;
    return cring_of(h)[k];
}

static size_t state_bytes(const sl_params *p) {
    return sizeof(sl_hdr) + (size_t)p->limit * sizeof(int64_t);
}

static void state_init(sl_hdr *h) {
    h->last = INT64_MIN;
    h->head = 0;
    h->count = 0;
    h->dropped = 0;
}

PRS__WINDOW_CONFIG_INIT(sliding_log)

/* Number of entries expired at t (e <= t - w), by binary search (entries sorted). */
static int64_t expired_at(const sl_params *p, const sl_hdr *h, int64_t t) {
    int64_t cutoff, lo = 0, hi = h->count;
    if (__builtin_sub_overflow(t, p->window_ns, &cutoff)) return 0; /* t - w < any instant */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (entry(p, h, mid) <= cutoff) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void state_decide(const sl_params *p, sl_hdr *h, int64_t now, int64_t n, int consume,
                         prs_decision *d) {
    int64_t t = prs__max64(now, h->last), cutoff;
    int64_t *ring = ring_of(h);
    h->last = t;
    if (!__builtin_sub_overflow(t, p->window_ns, &cutoff)) { /* else nothing can have expired */
        int64_t before = h->count;
        while (h->count > 0 && ring[h->head] <= cutoff) { /* drop expired entries */
            if (++h->head == p->limit) h->head = 0;
            h->count--;
        }
        if (h->count < before) h->dropped = 0; /* older than what just expired */
    }
    if (h->count == 0) h->head = 0;
    int64_t after = h->count;
    d->limit = p->limit;
    if (n > p->limit) {
        d->allowed = 0;
        d->retry_after_ns = PRS_NEVER;
    } else if (n <= p->limit - h->count) {
        d->allowed = 1;
        d->retry_after_ns = 0;
        after = h->count + n;
        if (consume) {
            int64_t k = h->head + h->count;
            if (k >= p->limit) k -= p->limit;
            for (int64_t i = 0; i < n; i++) {
                ring[k] = t;
                if (++k == p->limit) k = 0;
            }
            h->count = after;
        }
    } else {
        d->allowed = 0;
        d->retry_after_ns =
            prs__ns_until(entry(p, h, h->count + n - p->limit - 1), p->window_ns, now);
    }
    d->remaining = p->limit - after;
    if (after == 0) d->reset_after_ns = 0;
    else if (after > h->count) /* the newest would be t */
        d->reset_after_ns = prs__ns_until(t, p->window_ns, now);
    else d->reset_after_ns = prs__ns_until(entry(p, h, h->count - 1), p->window_ns, now);
}

static double avail(const sl_params *p, const sl_hdr *h, int64_t now) {
    int64_t t = prs__max64(now, h->last);
    return (double)(p->limit - (h->count - expired_at(p, h, t)));
}

/* How a repack to new_limit splits h: `drop` oldest entries leave the ring
 * (counted in dropped), `kept` stay, `phantom` dropped ones come back as
 * copies of the oldest entry (a later time than theirs: conservative). */
typedef struct sl_repack {
    int64_t kept, drop, phantom, e0;
} sl_repack;

static sl_repack plan_repack(const sl_params *op, const sl_hdr *h, int64_t new_limit) {
    sl_repack r;
    r.kept = prs__min64(h->count, new_limit);
    r.drop = h->count - r.kept;
    r.phantom = prs__min64(h->dropped, new_limit - r.kept); /* 0 when drop > 0 */
    r.e0 = h->count > 0 ? entry(op, h, 0) : 0;
    return r;
}

static void finish_repack(const sl_hdr *h, const sl_repack *r, sl_hdr *out) {
    int64_t last = h->last, dropped = h->dropped;
    out->last = last;
    out->head = 0;
    out->count = r->phantom + r->kept;
    out->dropped = dropped - r->phantom + r->drop;
}

/* Keeps the newest min(count, new_limit) entries of h (under op), oldest
 * first, in `dst` (which must not overlap op's ring), after as many phantoms
 * as fit; h's header is rewritten to match in `out` (may be h itself). */
static void repack_into(const sl_params *op, const sl_hdr *h, int64_t new_limit, int64_t *dst,
                        sl_hdr *out) {
    sl_repack r = plan_repack(op, h, new_limit);
    for (int64_t i = 0; i < r.phantom; i++) dst[i] = r.e0;
    for (int64_t i = 0; i < r.kept; i++) dst[r.phantom + i] = entry(op, h, r.drop + i);
    finish_repack(h, &r, out);
}

PRS__WINDOW_GETTERS(sliding_log)

/* ---- the descriptor: state is sl_hdr + ring (32 + 8 * limit bytes) ----- */

static size_t algo_state_size(const void *params) { return state_bytes(params); }
PRS__ALGO_STATE_INIT_BY(state_init)
PRS__ALGO_DECIDE_BY(state_decide)
/* Forgets the n newest entries (what a group rolling back just admitted). */
static void algo_refund(const void *params, void *state, int64_t now, int64_t n) {
    sl_hdr *h = state;
    (void)params;
    (void)now;
    if (n < 1) return;
    h->count = n >= h->count ? 0 : h->count - n;
    if (h->count == 0) h->head = 0;
}
static int algo_is_fresh(const void *params, const void *state, int64_t now) {
    const sl_params *p = params;
    const sl_hdr *h = state;
    if (h->count == 0) return 1;
    int64_t t = prs__max64(now, h->last), cutoff;
    if (__builtin_sub_overflow(t, p->window_ns, &cutoff)) return 0;
    return entry(p, h, h->count - 1) <= cutoff;
}
PRS__ALGO_AVAILABLE_BY(avail)

PRS__WINDOW_CONFIG_FNS(prs_sliding_log_config, PRS_SLIDING_LOG_MAX_LIMIT, "must be <= 2**27")
/* Inline rings on both sides (keyed tables). Equal limits: the same bytes. */
static void algo_rebase(const void *old_params, const void *state, const void *new_params,
                        void *new_state, int64_t now) {
    const sl_params *op = old_params, *np = new_params;
    (void)now;
    if (np->limit == op->limit) {
        if (new_state != state) memcpy(new_state, state, state_bytes(op));
        return;
    }
    repack_into(op, state, np->limit, (int64_t *)((sl_hdr *)new_state + 1), new_state);
}

PRS__ALGO_DESCRIPTOR(sliding_log, sl_params, NULL, NULL)

PRS__LIMITER_TYPED_IMPL(sliding_log)
