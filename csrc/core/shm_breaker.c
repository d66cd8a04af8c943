/*
 * shm_breaker.c - a circuit breaker placed in a shared-memory region
 * (prs_breaker_new_placed, prs_shm.h): the state machine of breaker.c on a
 * block that every process maps, with the same decisions. breaker.c's public
 * functions dispatch here when the breaker is placed.
 *
 * Block: the params (fixed at creation), the state word (epoch << 4 | mode
 * << 2 | state: read without a lock by the CLOSED fast path, as in-process),
 * a pid lock (shm_internal.h) around everything else, the variables (`v`),
 * their undo copy, the half-open trial slots and the window (a ring of one
 * byte per outcome, or per-second buckets).
 *
 * Trial slots. Each admitted half-open trial takes a slot that records its
 * process (prs__self_token(): pid and start time); a tracked permit names
 * its slot (epoch << 17 | slot << 1 | 1), an untracked trial is a slot with
 * PRS__TOKEN_FLAG, freed by a permit-less outcome of the same process. When
 * half-open is full, an admission looks for slots of dead processes at most
 * every PRS__REAP_INTERVAL_NS (by the callers' now) and frees them (as
 * neither success nor failure), so a trial slot of a killed process comes
 * back within that interval of the next admission that needs it.
 *
 * Crash safety. Every change is journalled: the variables and the word are
 * copied to `undo`, and the one window cell a push overwrites, before
 * `dirty` is set; whoever takes the lock over from a dead holder finds
 * `dirty` and restores them, then recounts what can be recounted from the
 * storage itself (the window's aggregates, after a roll that was cut short;
 * in_flight and untracked from the slots), so the counts always agree with
 * what they count. The clean fast path of breaker.c (striped success
 * counters) is not used here: every outcome takes the lock.
 */
#include "prs_breaker.h"
#include "shm_internal.h"

#include <stdio.h>

#define SB_MAGIC UINT64_C(0x50525342524b0001)
#define SW_STATE(w) ((prs_breaker_state)((w) & 3u))
#define SW_MODE(w) ((prs_breaker_mode)(((w) >> 2) & 3u))
#define SW_EPOCH(w) ((w) >> 4)
#define SW_MAKE(e, m, s) ((uint64_t)(e) << 4 | (uint64_t)(m) << 2 | (uint64_t)(s))
#define P_EPOCH_MASK ((UINT64_C(1) << 46) - 1)
#define P_MAKE(e, slot, trial) (((e) & P_EPOCH_MASK) << 17 | (uint64_t)(slot) << 1 | (uint64_t)(trial))
#define P_EPOCH(p) ((p) >> 17)
#define P_SLOT(p) ((int64_t)(((p) >> 1) & 0xffffu))
#define MAX_SLOTS 65536
#define OUT_FAIL 1u
#define OUT_SLOW 2u

typedef struct sb_bucket {
    int64_t calls, failures, slow;
} sb_bucket;

typedef struct sb_vars {
    uint64_t word; /* the word as it was (undo only) */
    int64_t opened_at, consec_fail, consec_succ, in_flight, untracked;
    int64_t calls, failures, slow_calls, rejected, ignored;
    int64_t w_calls, w_failures, w_slow, ring_n, ring_head, head_sec;
} sb_vars;

/* What a later opener must match: the effective configuration. */
typedef struct sb_conf {
    int64_t failure_threshold, success_threshold, open_timeout_ns, half_open_max;
    double failure_rate, slow_rate;
    int64_t slow_call_ns, window_type, window_size, minimum_calls;
} sb_conf;

struct prs__shm_brk {
    uint64_t magic;
    sb_conf c;
    int64_t min_calls, rate_mode;
    uint64_t slots_off, win_off, length;
    _Alignas(64) _Atomic uint64_t word;
    _Atomic int64_t last_now;
    _Alignas(64) prs__pidlock lock;
    _Atomic uint32_t dirty;
    int64_t next_reap;   /* a full half-open looks for dead trials from then */
    int64_t undo_cell;   /* the window cell a push overwrote, -1 none */
    sb_bucket undo_bucket;
    uint8_t undo_byte;
    sb_vars v, undo;
};

static uint64_t *slots_of(prs__shm_brk *s) { return (uint64_t *)((char *)s + s->slots_off); }
static uint8_t *ring_of(prs__shm_brk *s) { return (uint8_t *)s + s->win_off; }
static sb_bucket *buckets_of(prs__shm_brk *s) { return (sb_bucket *)((char *)s + s->win_off); }
static int is_ring(const prs__shm_brk *s) { return s->c.window_type == PRS_BREAKER_WINDOW_COUNT; }

/* ---- placing ---------------------------------------------------------------- */

static void conf_of(const prs_breaker_config *cfg, sb_conf *c) {
    memset(c, 0, sizeof *c);
    c->failure_threshold = cfg->failure_threshold;
    c->success_threshold = cfg->success_threshold;
    c->open_timeout_ns = cfg->open_timeout_ns;
    c->half_open_max = cfg->half_open_max_calls ? cfg->half_open_max_calls : cfg->success_threshold;
    c->failure_rate = cfg->failure_rate_threshold;
    c->slow_rate = cfg->slow_call_rate_threshold;
    c->slow_call_ns = cfg->slow_call_ns;
    c->window_type = cfg->window_type;
    c->window_size = cfg->window_size;
    c->minimum_calls = cfg->minimum_calls;
}

static size_t a64(size_t x) { return (x + 63) & ~(size_t)63; }

static void brk_init(void *ctx, void *block) {
    const sb_conf *c = ctx;
    prs__shm_brk *s = block;
    s->magic = SB_MAGIC;
    s->c = *c;
    s->min_calls = c->minimum_calls;
    if (c->window_type == PRS_BREAKER_WINDOW_COUNT && s->min_calls > c->window_size)
        s->min_calls = c->window_size;
    s->rate_mode = c->failure_rate > 0.0 || c->slow_rate > 0.0;
    s->slots_off = a64(sizeof *s);
    s->win_off = s->slots_off + a64((size_t)c->half_open_max * sizeof(uint64_t));
    size_t win = c->window_type == PRS_BREAKER_WINDOW_COUNT
                     ? (size_t)c->window_size : (size_t)c->window_size * sizeof(sb_bucket);
    s->length = s->win_off + a64(win);
    atomic_init(&s->word, SW_MAKE(0, PRS_BREAKER_NORMAL, PRS_BREAKER_CLOSED));
    atomic_init(&s->last_now, INT64_MIN);
    atomic_init(&s->lock.owner, 0);
    atomic_init(&s->dirty, 0);
    s->v.head_sec = INT64_MIN;
    s->undo_cell = -1;
}

int prs__shm_brk_place(const prs_breaker_config *cfg, const prs_shm_place *place,
                       prs__shm_brk **out) {
    sb_conf c;
    conf_of(cfg, &c);
    if (c.half_open_max > MAX_SLOTS) return PRS_ERANGE;
    size_t win = c.window_type == PRS_BREAKER_WINDOW_COUNT
                     ? (size_t)c.window_size : (size_t)c.window_size * sizeof(sb_bucket);
    size_t len = a64(sizeof(prs__shm_brk)) + a64((size_t)c.half_open_max * sizeof(uint64_t)) + a64(win);
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, "circuit_breaker", &c, sizeof c, len,
                           brk_init, &c, &blk, NULL, NULL, NULL);
    if (rc) return rc;
    prs__shm_brk *s = blk;
    if (s->magic != SB_MAGIC || memcmp(&s->c, &c, sizeof c) != 0 || s->length != len ||
        s->slots_off != a64(sizeof *s))
        return PRS_EPROTO;
    *out = s;
    return PRS_OK;
}

/* ---- the lock and the journal ---------------------------------------------- */

static void recount(prs__shm_brk *s) {
    sb_vars *v = &s->v;
    v->w_calls = v->w_failures = v->w_slow = 0;
    int64_t size = s->c.window_size;
    if (is_ring(s)) {
        if (v->ring_n < 0 || v->ring_n > size) v->ring_n = 0;
        if (v->ring_head < 0 || v->ring_head >= size) v->ring_head = 0;
        uint8_t *r = ring_of(s);
        for (int64_t i = 0; i < v->ring_n; i++) {
            uint8_t b = r[(v->ring_head - 1 - i + size) % size];
            v->w_calls++;
            v->w_failures += (b & OUT_FAIL) != 0;
            v->w_slow += (b & OUT_SLOW) != 0;
        }
    } else {
        sb_bucket *k = buckets_of(s);
        for (int64_t i = 0; i < size; i++) {
            v->w_calls += k[i].calls;
            v->w_failures += k[i].failures;
            v->w_slow += k[i].slow;
        }
    }
    uint64_t *sl = slots_of(s);
    v->in_flight = v->untracked = 0;
    for (int64_t i = 0; i < s->c.half_open_max; i++) {
        v->in_flight += sl[i] != 0;
        v->untracked += (sl[i] & PRS__TOKEN_FLAG) != 0;
    }
}

/* A dead holder's change undone (lock held). */
static void recover(prs__shm_brk *s) {
    s->v = s->undo;
    atomic_store_explicit(&s->word, s->undo.word, memory_order_release);
    if (s->undo_cell >= 0 && s->undo_cell < s->c.window_size) {
        if (is_ring(s))
            ring_of(s)[s->undo_cell] = s->undo_byte;
        else
            buckets_of(s)[s->undo_cell] = s->undo_bucket;
    }
    recount(s);
    atomic_store_explicit(&s->dirty, 0, memory_order_release);
}

/* Locks and opens a journalled change. */
static void begin(prs__shm_brk *s) {
    prs__pidlock_lock(&s->lock);
    if (__builtin_expect(atomic_load_explicit(&s->dirty, memory_order_acquire) != 0, 0)) recover(s);
    s->undo = s->v;
    s->undo.word = atomic_load_explicit(&s->word, memory_order_relaxed);
    s->undo_cell = -1;
    atomic_store_explicit(&s->dirty, 1, memory_order_release);
}

static void end(prs__shm_brk *s) {
    atomic_store_explicit(&s->dirty, 0, memory_order_release);
    prs__pidlock_unlock(&s->lock);
}

/* ---- helpers (lock held) ------------------------------------------------------ */

static int64_t clamp_now(prs__shm_brk *s, int64_t now) {
    int64_t seen = atomic_load_explicit(&s->last_now, memory_order_relaxed);
    if (now > seen) {
        atomic_store_explicit(&s->last_now, now, memory_order_relaxed); /* only under the lock */
        return now;
    }
    return seen;
}

static int64_t floor_div(int64_t a, int64_t d) {
    int64_t q = a / d;
    return (a % d != 0 && a < 0) ? q - 1 : q;
}
static int64_t floor_mod(int64_t a, int64_t d) {
    int64_t r = a % d;
    return r < 0 ? r + d : r;
}

static void window_clear(prs__shm_brk *s) {
    s->v.w_calls = s->v.w_failures = s->v.w_slow = 0;
    s->v.ring_n = s->v.ring_head = 0;
    if (!is_ring(s)) {
        memset(buckets_of(s), 0, (size_t)s->c.window_size * sizeof(sb_bucket));
        s->v.head_sec = INT64_MIN;
    }
}

static void window_roll(prs__shm_brk *s, int64_t now) {
    if (is_ring(s)) return;
    sb_vars *v = &s->v;
    int64_t sec = floor_div(now, PRS_NS_PER_SEC), size = s->c.window_size;
    if (v->head_sec == INT64_MIN) {
        v->head_sec = sec;
        return;
    }
    if (sec <= v->head_sec) return;
    sb_bucket *k = buckets_of(s);
    if (sec - v->head_sec >= size) {
        memset(k, 0, (size_t)size * sizeof(sb_bucket));
        v->w_calls = v->w_failures = v->w_slow = 0;
    } else {
        for (int64_t t = v->head_sec + 1; t <= sec; t++) {
            sb_bucket *b = &k[floor_mod(t, size)];
            v->w_calls -= b->calls;
            v->w_failures -= b->failures;
            v->w_slow -= b->slow;
            b->calls = b->failures = b->slow = 0;
        }
    }
    v->head_sec = sec;
}

static void window_push(prs__shm_brk *s, int64_t now, unsigned flags) {
    sb_vars *v = &s->v;
    int64_t fail = (flags & OUT_FAIL) != 0, slow = (flags & OUT_SLOW) != 0, size = s->c.window_size;
    if (is_ring(s)) {
        uint8_t *r = ring_of(s);
        s->undo_cell = v->ring_head;
        s->undo_byte = r[v->ring_head];
        if (v->ring_n == size) {
            unsigned old = r[v->ring_head];
            v->w_calls--;
            v->w_failures -= (old & OUT_FAIL) != 0;
            v->w_slow -= (old & OUT_SLOW) != 0;
        } else {
            v->ring_n++;
        }
        r[v->ring_head] = (uint8_t)flags;
        if (++v->ring_head == size) v->ring_head = 0;
    } else {
        window_roll(s, now);
        int64_t i = floor_mod(v->head_sec, size);
        sb_bucket *k = &buckets_of(s)[i];
        s->undo_cell = i;
        s->undo_bucket = *k;
        k->calls++;
        k->failures += fail;
        k->slow += slow;
    }
    v->w_calls++;
    v->w_failures += fail;
    v->w_slow += slow;
}

static double rate_of(int64_t part, int64_t whole) {
    return whole > 0 ? (double)part / (double)whole : 0.0;
}

static int window_trips(const prs__shm_brk *s) {
    if (s->v.w_calls < s->min_calls) return 0;
    if (s->c.failure_rate > 0.0 && rate_of(s->v.w_failures, s->v.w_calls) >= s->c.failure_rate) return 1;
    if (s->c.slow_rate > 0.0 && rate_of(s->v.w_slow, s->v.w_calls) >= s->c.slow_rate) return 1;
    return 0;
}

static void clear_slots(prs__shm_brk *s) {
    memset(slots_of(s), 0, (size_t)s->c.half_open_max * sizeof(uint64_t));
    s->v.in_flight = s->v.untracked = 0;
}

static void set_state(prs__shm_brk *s, prs_breaker_state to, prs_breaker_mode mode,
                      prs_breaker_transition *tr) {
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    prs_breaker_state from = SW_STATE(w);
    atomic_store_explicit(&s->word, SW_MAKE(SW_EPOCH(w) + 1, mode, to), memory_order_release);
    clear_slots(s); /* every trial of the old epoch is over */
    if (tr) {
        tr->happened = from != to;
        tr->from = from;
        tr->to = to;
    }
}

static void enter_open(prs__shm_brk *s, int64_t now, prs_breaker_mode mode, prs_breaker_transition *tr) {
    set_state(s, PRS_BREAKER_OPEN, mode, tr);
    s->v.opened_at = now;
    s->v.consec_succ = 0;
}

static void enter_half_open(prs__shm_brk *s, prs_breaker_transition *tr) {
    set_state(s, PRS_BREAKER_HALF_OPEN, PRS_BREAKER_NORMAL, tr);
    s->v.consec_succ = s->v.consec_fail = 0;
}

static void enter_closed(prs__shm_brk *s, prs_breaker_mode mode, int clear, prs_breaker_transition *tr) {
    set_state(s, PRS_BREAKER_CLOSED, mode, tr);
    if (clear) {
        window_clear(s);
        s->v.consec_succ = s->v.consec_fail = 0;
    }
}

static int64_t open_retry_after(const prs__shm_brk *s, uint64_t w, int64_t now) {
    if (SW_MODE(w) == PRS_BREAKER_FORCED_OPEN || s->c.open_timeout_ns == PRS_NEVER) return PRS_NEVER;
    int64_t at = prs__sat_add(s->v.opened_at, s->c.open_timeout_ns);
    return at > now ? prs__sat_sub(at, now) : 0;
}

/* Frees the trial slots of dead processes (lock held): how many. */
static int reap(prs__shm_brk *s) {
    uint64_t *sl = slots_of(s);
    int n = 0;
    for (int64_t i = 0; i < s->c.half_open_max; i++) {
        uint64_t t = sl[i];
        if (t && prs__token_dead(t)) {
            sl[i] = 0;
            s->v.in_flight--;
            s->v.untracked -= (t & PRS__TOKEN_FLAG) != 0;
            n++;
        }
    }
    return n;
}

/* ---- operations ------------------------------------------------------------------ */

int prs__shm_brk_closed(prs__shm_brk *s, uint64_t *permit) {
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    if (SW_STATE(w) != PRS_BREAKER_CLOSED) return 0;
    *permit = P_MAKE(SW_EPOCH(w), 0, 0);
    return 1;
}

int prs__shm_brk_admit(prs__shm_brk *s, int64_t now, prs_breaker_decision *d, int untracked) {
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    d->transition.happened = 0;
    d->transition.from = d->transition.to = SW_STATE(w);
    d->retry_after_ns = 0;
    if (SW_STATE(w) == PRS_BREAKER_CLOSED) { /* lock-free, as in-process */
        d->allowed = 1;
        d->permit = untracked ? PRS_BREAKER_NO_PERMIT : P_MAKE(SW_EPOCH(w), 0, 0);
        return PRS_OK;
    }
    uint64_t me = prs__self_token();
    begin(s);
    now = clamp_now(s, now);
    w = atomic_load_explicit(&s->word, memory_order_relaxed);
    d->allowed = 0;
    d->permit = PRS_BREAKER_NO_PERMIT;
    if (SW_STATE(w) == PRS_BREAKER_OPEN) {
        int64_t retry = open_retry_after(s, w, now);
        if (retry > 0) {
            s->v.rejected++;
            d->retry_after_ns = retry;
            end(s);
            return PRS_OK;
        }
        enter_half_open(s, &d->transition);
        w = atomic_load_explicit(&s->word, memory_order_relaxed);
    }
    if (SW_STATE(w) == PRS_BREAKER_HALF_OPEN) {
        if (s->v.in_flight >= s->c.half_open_max && now >= s->next_reap) {
            reap(s);
            s->next_reap = prs__sat_add(now, PRS__REAP_INTERVAL_NS);
        }
        int64_t slot = -1;
        if (s->v.in_flight < s->c.half_open_max) {
            uint64_t *sl = slots_of(s);
            for (int64_t i = 0; i < s->c.half_open_max; i++)
                if (sl[i] == 0) {
                    slot = i;
                    break;
                }
        }
        if (slot >= 0) {
            slots_of(s)[slot] = untracked ? me | PRS__TOKEN_FLAG : me;
            s->v.in_flight++;
            s->v.untracked += untracked;
            d->allowed = 1;
            d->permit = untracked ? PRS_BREAKER_NO_PERMIT : P_MAKE(SW_EPOCH(w), slot, 1);
        } else {
            s->v.rejected++;
        }
    } else {
        d->allowed = 1;
        d->permit = untracked ? PRS_BREAKER_NO_PERMIT : P_MAKE(SW_EPOCH(w), 0, 0);
    }
    end(s);
    return PRS_OK;
}

int prs__shm_brk_record(prs__shm_brk *s, int64_t now, uint64_t permit, int outcome,
                        int64_t duration_ns, prs_breaker_transition *tr) {
    int slow = outcome != PRS_BREAKER_IGNORED && s->c.slow_call_ns > 0 && duration_ns >= s->c.slow_call_ns;
    int fail = outcome == PRS_BREAKER_FAILURE;
    uint64_t me = prs__self_token();
    begin(s);
    now = clamp_now(s, now);
    sb_vars *v = &s->v;
    if (outcome == PRS_BREAKER_IGNORED) {
        v->ignored++;
    } else {
        v->calls++;
        v->failures += fail;
        v->slow_calls += slow;
    }
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    prs_breaker_state state = SW_STATE(w);
    if (permit != PRS_BREAKER_NO_PERMIT && P_EPOCH(permit) != (SW_EPOCH(w) & P_EPOCH_MASK)) {
        end(s); /* stale: admitted before a transition */
        return PRS_OK;
    }
    if (state == PRS_BREAKER_CLOSED) {
        if (outcome != PRS_BREAKER_IGNORED) {
            window_push(s, now, (fail ? OUT_FAIL : 0u) | (slow ? OUT_SLOW : 0u));
            if (fail) {
                v->consec_fail++;
                v->consec_succ = 0;
            } else {
                v->consec_succ++;
                v->consec_fail = 0;
            }
            if (SW_MODE(w) == PRS_BREAKER_NORMAL &&
                (s->rate_mode ? window_trips(s) : v->consec_fail >= s->c.failure_threshold))
                enter_open(s, now, PRS_BREAKER_NORMAL, tr);
        }
    } else if (state == PRS_BREAKER_HALF_OPEN) {
        uint64_t *sl = slots_of(s);
        int64_t slot = -1;
        if (permit == PRS_BREAKER_NO_PERMIT) {
            for (int64_t i = 0; i < s->c.half_open_max; i++)
                if (sl[i] == (me | PRS__TOKEN_FLAG)) {
                    slot = i;
                    break;
                }
        } else if ((permit & 1u) && P_SLOT(permit) < s->c.half_open_max && sl[P_SLOT(permit)] == me) {
            slot = P_SLOT(permit);
        }
        if (slot < 0) { /* a stray, or a slot freed meanwhile: it holds none */
            end(s);
            return PRS_OK;
        }
        v->untracked -= (sl[slot] & PRS__TOKEN_FLAG) != 0;
        sl[slot] = 0;
        v->in_flight--;
        if (outcome == PRS_BREAKER_IGNORED) {
            /* neither: the slot is free again */
        } else if (fail || (slow && s->c.slow_rate > 0.0)) {
            enter_open(s, now, PRS_BREAKER_NORMAL, tr);
        } else if (++v->consec_succ >= s->c.success_threshold) {
            enter_closed(s, PRS_BREAKER_NORMAL, 1, tr);
        }
    }
    end(s);
    return PRS_OK;
}

void prs__shm_brk_manual(prs__shm_brk *s, int64_t now, int op, prs_breaker_transition *tr) {
    begin(s);
    now = clamp_now(s, now);
    switch (op) {
    case 0: enter_open(s, now, PRS_BREAKER_NORMAL, tr); break;
    case 1: enter_open(s, now, PRS_BREAKER_FORCED_OPEN, tr); break;
    case 2: enter_half_open(s, tr); break;
    case 3:
    case 4:
        enter_closed(s, PRS_BREAKER_NORMAL, 1, tr);
        if (op == 4) s->v.calls = s->v.failures = s->v.slow_calls = s->v.rejected = s->v.ignored = 0;
        break;
    default: {
        uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
        enter_closed(s, PRS_BREAKER_DISABLED, SW_STATE(w) != PRS_BREAKER_CLOSED, tr);
        break;
    }
    }
    end(s);
}

uint64_t prs__shm_brk_word(const prs__shm_brk *s) {
    return atomic_load_explicit(&((prs__shm_brk *)s)->word, memory_order_acquire) & 15u;
}

void prs__shm_brk_metrics(prs__shm_brk *s, int64_t now, prs_breaker_metrics *m) {
    begin(s);
    now = clamp_now(s, now);
    window_roll(s, now);
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    const sb_vars *v = &s->v;
    m->state = SW_STATE(w);
    m->mode = SW_MODE(w);
    m->consecutive_failures = v->consec_fail;
    m->consecutive_successes = v->consec_succ;
    m->calls = v->calls;
    m->failures = v->failures;
    m->slow_calls = v->slow_calls;
    m->rejected = v->rejected;
    m->ignored = v->ignored;
    m->window_calls = v->w_calls;
    m->window_failures = v->w_failures;
    m->window_slow_calls = v->w_slow;
    m->failure_rate = rate_of(v->w_failures, v->w_calls);
    m->slow_call_rate = rate_of(v->w_slow, v->w_calls);
    m->retry_after_ns = m->state == PRS_BREAKER_OPEN ? open_retry_after(s, w, now) : 0;
    m->half_open_in_flight = v->in_flight;
    m->half_open_untracked = v->untracked;
    end(s);
}

int prs__shm_brk_reap(prs__shm_brk *s) {
    begin(s);
    int n = reap(s);
    end(s);
    return n;
}

/* ---- wording a mismatch ---------------------------------------------------------- */

static void describe_conf(char *out, size_t cap, const sb_conf *c) {
    char timeout[40];
    if (c->open_timeout_ns == PRS_NEVER)
        snprintf(timeout, sizeof timeout, "inf");
    else
        snprintf(timeout, sizeof timeout, "%.9g", (double)c->open_timeout_ns / 1e9);
    snprintf(out, cap,
             "circuit_breaker(failure_threshold=%lld, success_threshold=%lld, timeout_seconds=%s, "
             "half_open_max_calls=%lld, failure_rate_threshold=%.17g, "
             "slow_call_rate_threshold=%.17g, slow_call_duration=%.9g, window_type=%s, "
             "window_size=%lld, minimum_calls=%lld)",
             (long long)c->failure_threshold, (long long)c->success_threshold, timeout,
             (long long)c->half_open_max, c->failure_rate, c->slow_rate,
             (double)c->slow_call_ns / 1e9, c->window_type == PRS_BREAKER_WINDOW_COUNT ? "count" : "time",
             (long long)c->window_size, (long long)c->minimum_calls);
}

int prs_breaker_placed_mismatch(const prs_breaker_config *cfg, const prs_shm_place *place,
                                char *buf, size_t cap) {
    if (!cfg || !place || !place->region || !buf || cap == 0) return PRS_EINVAL;
    sb_conf want;
    conf_of(cfg, &want);
    _Alignas(16) unsigned char found[PRS_SHM_CONFIG_MAX];
    char kind[PRS_SHM_KIND_MAX + 1];
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, "circuit_breaker", &want, sizeof want, 1,
                           NULL, NULL, &blk, NULL, kind, found);
    if (rc != PRS_ESTATE) return PRS_EINVAL;
    char have[400], asked[400];
    if (strcmp(kind, "circuit_breaker") == 0) {
        sb_conf h;
        memcpy(&h, found, sizeof h);
        describe_conf(have, sizeof have, &h);
    } else {
        snprintf(have, sizeof have, "%s(...)", kind);
    }
    describe_conf(asked, sizeof asked, &want);
    snprintf(buf, cap, "exists as %s, asked for %s", have, asked);
    return PRS_OK;
}

/* ---- for tests: the invariants, checked under the lock ------------------------------ */

int prs__shm_brk_check(prs_breaker *b, prs_shm *r, const char *name) {
    prs_breaker_config cfg;
    prs_breaker_get_config(b, &cfg);
    sb_conf c;
    conf_of(&cfg, &c);
    void *blk = NULL;
    int rc = prs_shm_entry(r, name, "circuit_breaker", &c, sizeof c, 1, NULL, NULL, &blk, NULL,
                           NULL, NULL);
    if (rc) return rc;
    prs__shm_brk *s = blk;
    begin(s);
    sb_vars v = s->v;
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    recount(s); /* what the storage holds */
    int ok = v.w_calls == s->v.w_calls && v.w_failures == s->v.w_failures &&
             v.w_slow == s->v.w_slow && v.in_flight == s->v.in_flight &&
             v.untracked == s->v.untracked && SW_STATE(w) <= PRS_BREAKER_HALF_OPEN &&
             SW_MODE(w) <= PRS_BREAKER_DISABLED && v.w_failures <= v.w_calls &&
             v.w_calls <= (is_ring(s) ? c.window_size : INT64_MAX) && v.in_flight <= c.half_open_max &&
             (SW_STATE(w) == PRS_BREAKER_HALF_OPEN || v.in_flight == 0) && v.calls >= 0 &&
             v.failures <= v.calls;
    s->v = v;
    end(s);
    return ok ? PRS_OK : PRS_EPROTO;
}
