/*
 * breaker.c - the circuit breaker's state machine, windows and counters, in
 * process or placed in a shared-memory region.
 *
 * Workload. A breaker sits in front of every call to one dependency, so the
 * common case - CLOSED, the dependency healthy - must cost next to nothing:
 * admission is one atomic load of `word`, and recording an outcome is a few
 * dozen nanoseconds of arithmetic under a spinlock. OPEN and HALF_OPEN are rare
 * and take the lock for admission too.
 *
 * Placement. The state (prs__brk_state, breaker_internal.h: the word, last_now,
 * the lock and the variables under it) is reached through state_of(b): the
 * object's own `own`, or the block of a region entry (prs_breaker_new_placed;
 * shm_breaker.c) that every process maps, so all processes run this one state
 * machine on one state. The windows are reached through b->ring / b->buckets
 * the same way. What the placement decides is passed through b->shm (NULL in
 * process): the lock (lock()/unlock(): the spinlock, or the region's pid lock
 * opening a journalled change that a process taking the lock over from a dead
 * holder undoes), the journalling of the one window cell a push overwrites,
 * and the half-open trial slots (counted in process; named in a placed
 * breaker, each recording its process so a dead one's slot comes back).
 * Configuration is per object (b->cfg and what it implies), equal in every
 * process that opens a placed breaker (its block's configuration is matched
 * on open).
 *
 * State layout.
 *   word    epoch << 29 | gen << 5 | clean << 4 | mode << 2 | state. Written
 *           only with the lock held, read without it by the CLOSED fast path of
 *           acquire(), by the clean fast path of record() and by get_state().
 *           Every transition (and every manual state call) bumps the epoch, so a
 *           permit (epoch << 17 | slot << 1 | trial bit; slot 0 in process)
 *           names the state that admitted it.
 *   v       the variables, guarded by the lock.
 *   last_now  atomic, only ever raised; the stripes (in process) are atomic.
 *
 * The clean fast path (contention; in process only). In CLOSED, once a count
 * window is full of
 * plain successes (no failure, no slow call) and no failure is pending, one
 * more plain success changes nothing but two counters: the window stays full
 * of successes (the success it evicts is a success), the state cannot move, and
 * only `calls` and `consec_succ` grow by one. The lock holder marks that
 * condition with the word's `clean` bit, and record() then counts such a
 * success without the lock: a compare-and-swap on one of STRIPES counters, each
 * on its own cache line and picked by the calling thread's stack address, so
 * threads do not share a line. A stripe holds gen << 40 | count, and gen is
 * the word's: whoever takes the lock to change anything the clean condition
 * covers (a failure, a slow call, a transition, a reset) first leaves clean
 * (leave_clean: a new word without the bit and with gen + 1), then swaps every
 * stripe for (gen + 1) << 40 | 0 and adds what they held to calls and
 * consec_succ. A fast success whose compare-and-swap lands before that swap is
 * counted there, in order before the change; one that comes later finds a new
 * gen (or a changed value) and takes the lock like any other outcome. Exact:
 * every success is counted once, and none is counted in a state it was not
 * recorded in. Readers (metrics) add the stripes to the locked counters. A gen
 * is 24 bits: a thread stalled between its load and its compare-and-swap over
 * 16M changes of the clean condition (and a stripe back at its exact value)
 * is the one case that would count its success in the later phase. A placed
 * breaker never sets clean (its gen stays 0): every outcome takes the lock,
 * journalled.
 *
 * The window. The same sliding window runs in both modes (consecutive mode
 * uses it only for the metrics): a ring of the last window_size outcomes (one
 * byte each: bit 0 failure, bit 1 slow), or window_size per-second buckets for
 * a time window. Aggregates (w_calls, w_failures, w_slow) are kept up to date
 * on every push and eviction, so a decision never scans the window; a time
 * window rolls forward by clearing the buckets of the seconds that passed
 * (at most window_size of them; a jump of a whole window clears it at once).
 * The window is cleared whenever the breaker (re-)enters CLOSED through a
 * transition, so a recovered dependency starts from a clean slate. (A placed
 * breaker's recovery recounts the aggregates from the window itself, so a
 * roll or a clear cut short by a kill leaves them agreeing with it.)
 *
 * Time. now_ns is clamped to the largest time seen: a clock stepping back can
 * neither re-open a window's old seconds nor shorten the open timeout.
 *
 * Concurrency of half-open. `in_flight` counts trial calls admitted in the
 * current HALF_OPEN epoch and not yet recorded; acquire admits only while
 * in_flight < half_open_max, under the lock, so no crowd of callers released at
 * once can get more than half_open_max trials (across processes, for a placed
 * breaker). Outcomes of stale permits never touch in_flight, so a slot is
 * freed exactly once, by the call that took it.
 *
 * Outcomes without a permit. A caller that carries nothing between admission
 * and outcome (a binding's allow_request() / record_success() pair) is admitted
 * by acquire_untracked(): its trial slot is counted in `untracked` as well as in
 * `in_flight`. In HALF_OPEN an outcome recorded with PRS_BREAKER_NO_PERMIT is
 * the outcome of one of those trials when untracked > 0 (it frees one untracked
 * slot: in process matched by count, not identity; placed, one that this
 * process took), and a stray otherwise: counted in the
 * totals only, like a stale permit's, so it can neither free a slot some other
 * caller holds nor move the state. Hence 0 <= untracked <= in_flight <=
 * half_open_max at every instant.
 */
#include "breaker_internal.h"

#define W_STATE(w) PRS__BRK_STATE_OF(w)
#define W_MODE(w) PRS__BRK_MODE_OF(w)
#define W_CLEAN ((uint64_t)1 << 4)
#define W_GEN_SHIFT 5
#define W_GEN_MASK ((UINT64_C(1) << 24) - 1)
#define W_GEN(w) (((w) >> W_GEN_SHIFT) & W_GEN_MASK)
#define W_EPOCH(w) ((w) >> 29)
#define W_MAKE(epoch, mode, state) (((uint64_t)(epoch) << 29) | ((uint64_t)(mode) << 2) | (uint64_t)(state))

/* A permit: epoch << 17 | slot << 1 | trial (the epoch is the word's 35 bits). */
#define P_MAKE(epoch, slot, trial) ((uint64_t)(epoch) << 17 | (uint64_t)(slot) << 1 | (uint64_t)(trial))
#define P_EPOCH(p) ((p) >> 17)
#define P_SLOT(p) ((int64_t)(((p) >> 1) & 0xffffu))

/* A stripe: gen << 40 | count (see "the clean fast path"). */
#define STRIPES 32
#define S_COUNT_MASK ((UINT64_C(1) << 40) - 1)
#define S_GEN(v) ((v) >> 40)
#define LINE 64
typedef struct stripe {
    _Alignas(LINE) _Atomic uint64_t v;
} stripe;

struct prs_breaker {
    /* ---- read by every call: where the state is, and what never changes ---- */
    uint8_t *ring;              /* count window: window_size bytes (else NULL) */
    prs__brk_bucket *buckets;   /* time window: window_size buckets, second s at s mod size */
    prs__shm_brk *shm;          /* placed: the block (lock, journal, trial slots); else NULL */
    int64_t half_open_max;      /* >= 1 */
    int64_t min_calls;          /* effective minimum_calls */
    int rate_mode;              /* a failure or slow-call rate threshold is set */
    prs_breaker_config cfg;     /* allocator field NULL */
    prs_shm *region;            /* placed: referenced */
    prs_allocator alloc;
    void *block;                /* what the allocator returned (this struct is aligned in it) */

    /* ---- the clean fast path's counters (see above; in process only) ---- */
    stripe stripes[STRIPES];

    /* ---- the state in process (unused when placed) ---- */
    prs__brk_state own;
};

/* The state: the object's own, or the region's block's. In process the
 * word is read straight from the object (no pointer to follow first). */
static inline prs__brk_state *state_of(const prs_breaker *b) {
    return __builtin_expect(b->shm == NULL, 1) ? (prs__brk_state *)&b->own : &b->shm->st;
}

void prs_breaker_config_init(prs_breaker_config *cfg) {
    cfg->failure_threshold = 5;
    cfg->success_threshold = 2;
    cfg->open_timeout_ns = 30 * PRS_NS_PER_SEC;
    cfg->half_open_max_calls = 0;
    cfg->failure_rate_threshold = 0.0;
    cfg->slow_call_rate_threshold = 0.0;
    cfg->slow_call_ns = 0;
    cfg->window_type = PRS_BREAKER_WINDOW_COUNT;
    cfg->window_size = 100;
    cfg->minimum_calls = 10;
    cfg->allocator = NULL;
}

static int rate_ok(double r) { return r == 0.0 || (r > 0.0 && r <= 1.0); } /* NaN fails */

int prs_breaker_config_check(const prs_breaker_config *cfg, prs_config_error *why) {
    if (!cfg) return prs_config_fail(why, PRS_EINVAL, NULL, "is NULL");
    if (cfg->failure_threshold < 1)
        return prs_config_fail(why, PRS_EINVAL, "failure_threshold", "must be >= 1");
    if (cfg->success_threshold < 1)
        return prs_config_fail(why, PRS_EINVAL, "success_threshold", "must be >= 1");
    if (cfg->open_timeout_ns < 0)
        return prs_config_fail(why, PRS_EINVAL, "open_timeout_ns", "must be >= 0");
    if (cfg->half_open_max_calls < 0)
        return prs_config_fail(why, PRS_EINVAL, "half_open_max_calls", "must be >= 0");
    if (!rate_ok(cfg->failure_rate_threshold))
        return prs_config_fail(why, PRS_EINVAL, "failure_rate_threshold",
                               "must be in (0, 1] (a fraction, not a percentage)");
    if (!rate_ok(cfg->slow_call_rate_threshold))
        return prs_config_fail(why, PRS_EINVAL, "slow_call_rate_threshold",
                               "must be in (0, 1] (a fraction, not a percentage)");
    if (cfg->slow_call_ns < 0)
        return prs_config_fail(why, PRS_EINVAL, "slow_call_ns", "must be > 0");
    if (cfg->slow_call_rate_threshold > 0.0 && cfg->slow_call_ns == 0)
        return prs_config_fail(why, PRS_EINVAL, "slow_call_ns",
                               "must be set (the duration from which a call is slow) when "
                               "slow_call_rate_threshold is");
    if (cfg->window_size < 1) return prs_config_fail(why, PRS_EINVAL, "window_size", "must be >= 1");
    if (cfg->minimum_calls < 1)
        return prs_config_fail(why, PRS_EINVAL, "minimum_calls", "must be >= 1");
    if (cfg->window_type == PRS_BREAKER_WINDOW_COUNT) {
        if (cfg->window_size > PRS_BREAKER_MAX_COUNT_WINDOW)
            return prs_config_fail(why, PRS_ERANGE, "window_size",
                                   "must be <= 16777216 (outcomes) for a count window");
    } else if (cfg->window_type == PRS_BREAKER_WINDOW_TIME) {
        if (cfg->window_size > PRS_BREAKER_MAX_TIME_WINDOW)
            return prs_config_fail(why, PRS_ERANGE, "window_size",
                                   "must be <= 86400 (seconds) for a time window");
    } else {
        return prs_config_fail(why, PRS_EINVAL, "window_type", "must be a prs_breaker_window");
    }
    return PRS_OK;
}

int prs_breaker_config_validate(const prs_breaker_config *cfg) {
    return prs_breaker_config_check(cfg, NULL);
}

void prs__brk_state_init(prs__brk_state *st) {
    memset(st, 0, sizeof *st); /* unlocked, clean of a journal, every count 0 */
    atomic_init(&st->word, W_MAKE(0, PRS_BREAKER_NORMAL, PRS_BREAKER_CLOSED));
    atomic_init(&st->last_now, INT64_MIN);
    st->v.head_sec = INT64_MIN;
}

/* The object both placements share (the state and windows not yet attached):
 * NULL when the allocator fails. */
static prs_breaker *object_new(const prs_breaker_config *cfg, const prs_allocator *a) {
    void *block = prs__calloc(a, 1, sizeof(prs_breaker) + LINE - 1);
    if (!block) return NULL;
    prs_breaker *b = (prs_breaker *)(((uintptr_t)block + LINE - 1) & ~(uintptr_t)(LINE - 1));
    b->block = block;
    b->cfg = *cfg;
    b->cfg.allocator = NULL;
    b->half_open_max = cfg->half_open_max_calls ? cfg->half_open_max_calls : cfg->success_threshold;
    b->min_calls = cfg->minimum_calls;
    if (cfg->window_type == PRS_BREAKER_WINDOW_COUNT && b->min_calls > cfg->window_size)
        b->min_calls = cfg->window_size;
    b->rate_mode = cfg->failure_rate_threshold > 0.0 || cfg->slow_call_rate_threshold > 0.0;
    b->alloc = *a;
    for (int i = 0; i < STRIPES; i++) atomic_init(&b->stripes[i].v, 0);
    return b;
}

/* Points the object at its window: `window` holds window_size cells. */
static void attach_window(prs_breaker *b, void *window) {
    if (b->cfg.window_type == PRS_BREAKER_WINDOW_COUNT)
        b->ring = window;
    else
        b->buckets = window;
}

int prs_breaker_new(const prs_breaker_config *cfg, prs_breaker **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_breaker_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_breaker *b = object_new(cfg, a);
    if (!b) return PRS_ENOMEM;
    size_t n = (size_t)cfg->window_size;
    void *window = cfg->window_type == PRS_BREAKER_WINDOW_COUNT ? prs__calloc(a, n, 1)
                                                               : prs__calloc(a, n, sizeof(prs__brk_bucket));
    if (!window) {
        prs__free(a, b->block);
        return PRS_ENOMEM;
    }
    attach_window(b, window);
    prs__brk_state_init(&b->own);
    *out = b;
    return PRS_OK;
}

void prs_breaker_free(prs_breaker *b) {
    if (!b) return;
    prs_allocator a = b->alloc;
    if (b->shm) {
        prs__shm_unref(b->region); /* the window is the region's */
    } else {
        prs__free(&a, b->ring);
        prs__free(&a, b->buckets);
    }
    prs__free(&a, b->block);
}

/* ---- what the placement decides ------------------------------------------- */

/* What a locked operation works on, resolved once before it takes the lock
 * (b->shm never changes after construction) and passed to the helpers: the
 * object, its state (state_of(b)) and its placement (b->shm, NULL in process).
 * Passed by value so that the helpers, inlined, keep the pointers in
 * registers across the lock's atomics instead of re-deriving them. */
typedef struct held {
    prs_breaker *b;
    prs__brk_state *st;
    prs__shm_brk *shm;
} held;

static inline held held_of(prs_breaker *b) {
    prs__shm_brk *shm = b->shm;
    return (held){b, __builtin_expect(shm == NULL, 1) ? &b->own : &shm->st, shm};
}

static inline void lock(held h) {
    if (__builtin_expect(h.shm != NULL, 0))
        prs__shm_brk_begin(h.shm);
    else
        prs__spin_lock(&h.st->lock.spin);
}

static inline void unlock(held h) {
    if (__builtin_expect(h.shm != NULL, 0))
        prs__shm_brk_end(h.shm);
    else
        prs__spin_unlock(&h.st->lock.spin);
}


/* Takes a half-open trial slot (lock held): its index (0 in process, where
 * slots are counted, not named), or -1 when half_open_max are taken. */
static int64_t take_slot(held h, int64_t now, int untracked) {
    prs__brk_vars *v = &h.st->v;
    int64_t slot = 0;
    if (h.shm)
        slot = prs__shm_brk_claim(h.shm, now, untracked);
    else if (v->in_flight >= h.b->half_open_max)
        slot = -1;
    if (slot >= 0) {
        v->in_flight++;
        v->untracked += untracked;
        assert(v->untracked <= v->in_flight && v->in_flight <= h.b->half_open_max);
    }
    return slot;
}

/* Frees the trial slot a HALF_OPEN outcome of this epoch holds (lock held): 1,
 * or 0 when it holds none (a stray: it counts in the totals only). */
static int free_slot(held h, prs_breaker_permit permit) {
    prs__brk_vars *v = &h.st->v;
    int untracked = permit == PRS_BREAKER_NO_PERMIT;
    if (h.shm) {
        if (!untracked && !(permit & 1u)) return 0;
        if (!prs__shm_brk_release(h.shm, untracked ? -1 : P_SLOT(permit))) return 0;
    } else if (untracked && v->untracked == 0) {
        return 0;
    }
    /* a current HALF_OPEN permit always holds a slot (its bit 0 is set) */
    assert(untracked || (permit & 1u));
    v->in_flight--;
    v->untracked -= untracked;
    assert(v->in_flight >= 0 && v->untracked >= 0 && v->untracked <= v->in_flight);
    return 1;
}

/* ---- helpers (lock held) ------------------------------------------------ */

/* Raises last_now to now (never lowers it: the clean fast path raises it
 * without the lock) and returns the clamped now. */
static int64_t clamp_now(prs__brk_state *st, int64_t now) {
    int64_t seen = atomic_load_explicit(&st->last_now, memory_order_relaxed);
    while (now > seen) {
        if (atomic_compare_exchange_weak_explicit(&st->last_now, &seen, now, memory_order_relaxed,
                                                  memory_order_relaxed))
            return now;
    }
    return seen;
}

/* The sum of the stripes: plain successes counted by the clean fast path and
 * not yet folded into calls and consec_succ (0 while not clean). */
static int64_t stripes_sum(prs_breaker *b) {
    int64_t n = 0;
    for (int i = 0; i < STRIPES; i++)
        n += (int64_t)(atomic_load_explicit(&b->stripes[i].v, memory_order_relaxed) & S_COUNT_MASK);
    return n;
}

/* Lock held, before changing anything the clean condition covers: a new word
 * without the clean bit and with the next gen, then the stripes folded into
 * the counters (see "the clean fast path"). */
static __attribute__((noinline, cold)) void leave_clean_fold(held h, uint64_t w) {
    prs__brk_state *st = h.st;
    prs_breaker *b = h.b;
    uint64_t gen = (W_GEN(w) + 1) & W_GEN_MASK;
    w = (w & ~(W_CLEAN | (W_GEN_MASK << W_GEN_SHIFT))) | gen << W_GEN_SHIFT;
    atomic_store_explicit(&st->word, w, memory_order_seq_cst);
    int64_t folded = 0;
    for (int i = 0; i < STRIPES; i++) {
        uint64_t v = atomic_exchange_explicit(&b->stripes[i].v, gen << 40, memory_order_acq_rel);
        assert(S_GEN(v) == ((gen - 1) & W_GEN_MASK));
        folded += (int64_t)(v & S_COUNT_MASK);
    }
    st->v.calls += folded;
    st->v.consec_succ += folded;
}

/* The clean bit's check inline (every locked outcome passes here), the
 * leaving out of line. */
static inline void leave_clean(held h) {
    uint64_t w = atomic_load_explicit(&h.st->word, memory_order_relaxed);
    if (__builtin_expect((w & W_CLEAN) != 0, 0)) leave_clean_fold(h, w);
}

/* Lock held, in CLOSED after an outcome: sets the clean bit when one more plain
 * success could change nothing but the counters (in process, count window). */
static void maybe_enter_clean(held h) {
    /* what never changes first: a time window or a placed breaker is never clean */
    if (!h.b->ring || __builtin_expect(h.shm != NULL, 0)) return;
    prs__brk_state *st = h.st;
    prs_breaker *b = h.b;
    uint64_t w = atomic_load_explicit(&st->word, memory_order_relaxed);
    if ((w & W_CLEAN) || W_STATE(w) != PRS_BREAKER_CLOSED) return;
    if (st->v.ring_n != b->cfg.window_size || st->v.w_failures != 0 || st->v.w_slow != 0 ||
        st->v.consec_fail != 0)
        return;
    atomic_store_explicit(&st->word, w | W_CLEAN, memory_order_release);
}

/* The thread's stripe: its stack address, hashed (threads' stacks are far
 * apart; one thread's frames stay within one 64 KiB block most of the time). */
static inline stripe *my_stripe(prs_breaker *b) {
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0) >> 16;
    return &b->stripes[(uint32_t)(sp * UINT64_C(0x9E3779B97F4A7C15) >> 59) % STRIPES];
}

/* A plain success counted without the lock while clean: 1 if it was, 0 if
 * the caller must take the lock. */
static int record_clean_success(prs_breaker *b, int64_t now, prs_breaker_permit permit) {
    prs__brk_state *st = state_of(b);
    uint64_t w = atomic_load_explicit(&st->word, memory_order_acquire);
    if (!(w & W_CLEAN)) return 0;
    if (permit != PRS_BREAKER_NO_PERMIT && permit != P_MAKE(W_EPOCH(w), 0, 0)) return 0;
    stripe *s = my_stripe(b);
    uint64_t v = atomic_load_explicit(&s->v, memory_order_relaxed);
    if (S_GEN(v) != W_GEN(w) || (v & S_COUNT_MASK) == S_COUNT_MASK) return 0;
    clamp_now(st, now); /* first: a failure after this success opens no earlier */
    return atomic_compare_exchange_strong_explicit(&s->v, &v, v + 1, memory_order_relaxed,
                                                   memory_order_relaxed);
}

static int64_t floor_div(int64_t a, int64_t d) {
    int64_t q = a / d;
    return (a % d != 0 && a < 0) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t d) {
    int64_t r = a % d;
    return r < 0 ? r + d : r;
}

static void window_clear(held h) {
    prs_breaker *b = h.b;
    prs__brk_vars *v = &h.st->v;
    v->w_calls = v->w_failures = v->w_slow = 0;
    if (b->ring) {
        v->ring_n = 0;
        v->ring_head = 0;
    } else {
        memset(b->buckets, 0, (size_t)b->cfg.window_size * sizeof(prs__brk_bucket));
        v->head_sec = INT64_MIN;
    }
}

/* Moves a time window forward to second `sec` > head_sec (never backwards:
 * now is clamped). */
static void window_roll_to(held h, int64_t sec) {
    prs_breaker *b = h.b;
    prs__brk_vars *v = &h.st->v;
    int64_t size = b->cfg.window_size;
    if (v->head_sec == INT64_MIN) {
        v->head_sec = sec;
        return;
    }
    if (sec <= v->head_sec) return;
    if (sec - v->head_sec >= size) {
        memset(b->buckets, 0, (size_t)size * sizeof(prs__brk_bucket));
        v->w_calls = v->w_failures = v->w_slow = 0;
    } else {
        for (int64_t s = v->head_sec + 1; s <= sec; s++) {
            prs__brk_bucket *k = &b->buckets[floor_mod(s, size)];
            v->w_calls -= k->calls;
            v->w_failures -= k->failures;
            v->w_slow -= k->slow;
            k->calls = k->failures = k->slow = 0;
        }
    }
    v->head_sec = sec;
}

/* Moves a time window forward to now's second: inline, the common case
 * (still in the newest second) is one comparison. head_sec INT64_MIN (empty)
 * is below every second. */
static inline void window_roll(held h, int64_t now) {
    if (!h.b->buckets) return;
    int64_t sec = floor_div(now, PRS_NS_PER_SEC);
    if (sec > h.st->v.head_sec) window_roll_to(h, sec);
}

static void window_push(held h, int64_t now, unsigned flags) {
    prs_breaker *b = h.b;
    prs__brk_vars *v = &h.st->v;
    int64_t fail = (flags & PRS__BRK_FAIL) != 0, slow = (flags & PRS__BRK_SLOW) != 0;
    if (b->ring) {
        int64_t size = b->cfg.window_size;
        if (__builtin_expect(h.shm != NULL, 0)) /* placed: journal the cell first */
            prs__shm_brk_journal_byte(h.shm, v->ring_head, b->ring[v->ring_head]);
        if (v->ring_n == size) {
            unsigned old = b->ring[v->ring_head];
            v->w_calls--;
            v->w_failures -= (old & PRS__BRK_FAIL) != 0;
            v->w_slow -= (old & PRS__BRK_SLOW) != 0;
        } else {
            v->ring_n++;
        }
        b->ring[v->ring_head] = (uint8_t)flags;
        if (++v->ring_head == size) v->ring_head = 0;
    } else {
        window_roll(h, now);
        int64_t i = floor_mod(v->head_sec, b->cfg.window_size);
        prs__brk_bucket *k = &b->buckets[i];
        if (__builtin_expect(h.shm != NULL, 0)) prs__shm_brk_journal_bucket(h.shm, i, k);
        k->calls++;
        k->failures += fail;
        k->slow += slow;
    }
    v->w_calls++;
    v->w_failures += fail;
    v->w_slow += slow;
    assert(v->w_failures >= 0 && v->w_failures <= v->w_calls && v->w_slow <= v->w_calls);
}

static double rate_of(int64_t part, int64_t whole) {
    return whole > 0 ? (double)part / (double)whole : 0.0;
}

static int window_trips(held h) {
    const prs_breaker *b = h.b;
    const prs__brk_vars *v = &h.st->v;
    if (v->w_calls < b->min_calls) return 0;
    double frt = b->cfg.failure_rate_threshold, srt = b->cfg.slow_call_rate_threshold;
    if (frt > 0.0 && rate_of(v->w_failures, v->w_calls) >= frt) return 1;
    if (srt > 0.0 && rate_of(v->w_slow, v->w_calls) >= srt) return 1;
    return 0;
}

/* Stores a new word (epoch + 1) and reports the transition, if the state
 * changed. Every trial of the old epoch is over: its slots are freed. */
static void set_state(held h, prs_breaker_state to, prs_breaker_mode mode,
                      prs_breaker_transition *tr) {
    leave_clean(h);
    prs__brk_state *st = h.st;
    uint64_t w = atomic_load_explicit(&st->word, memory_order_relaxed);
    prs_breaker_state from = W_STATE(w);
    atomic_store_explicit(&st->word,
                          W_MAKE(W_EPOCH(w) + 1, mode, to) | (w & (W_GEN_MASK << W_GEN_SHIFT)),
                          memory_order_release);
    st->v.in_flight = st->v.untracked = 0;
    if (h.shm) prs__shm_brk_clear(h.shm);
    if (tr) {
        tr->happened = from != to;
        tr->from = from;
        tr->to = to;
    }
}

static void enter_open(held h, int64_t now, prs_breaker_mode mode, prs_breaker_transition *tr) {
    set_state(h, PRS_BREAKER_OPEN, mode, tr);
    h.st->v.opened_at = now;
    h.st->v.consec_succ = 0;
}

static void enter_half_open(held h, prs_breaker_transition *tr) {
    set_state(h, PRS_BREAKER_HALF_OPEN, PRS_BREAKER_NORMAL, tr);
    h.st->v.consec_succ = 0;
    h.st->v.consec_fail = 0;
}

static void enter_closed(held h, prs_breaker_mode mode, int clear, prs_breaker_transition *tr) {
    set_state(h, PRS_BREAKER_CLOSED, mode, tr);
    if (clear) {
        window_clear(h);
        h.st->v.consec_succ = 0;
        h.st->v.consec_fail = 0;
    }
}

static int64_t open_retry_after(held h, uint64_t w, int64_t now) {
    const prs_breaker *b = h.b;
    if (W_MODE(w) == PRS_BREAKER_FORCED_OPEN || b->cfg.open_timeout_ns == PRS_NEVER)
        return PRS_NEVER;
    int64_t at = prs__sat_add(h.st->v.opened_at, b->cfg.open_timeout_ns);
    return at > now ? prs__sat_sub(at, now) : 0;
}

static void no_transition(prs_breaker_transition *tr) {
    if (tr) {
        tr->happened = 0;
        tr->from = tr->to = PRS_BREAKER_CLOSED;
    }
}

/* ---- admission ----------------------------------------------------------- */

/* acquire() and acquire_untracked(): an untracked admission gets no permit
 * (NO_PERMIT) and its trial slot counts in `untracked`. */
static int admit(prs_breaker *b, int64_t now, prs_breaker_decision *d, int untracked) {
    if (!b || !d) return PRS_EINVAL;
    held h = held_of(b);
    prs__brk_state *st = h.st;
    uint64_t w = atomic_load_explicit(&st->word, memory_order_acquire);
    d->transition.happened = 0;
    d->transition.from = d->transition.to = W_STATE(w);
    d->retry_after_ns = 0;
    if (W_STATE(w) == PRS_BREAKER_CLOSED) { /* fast path, also DISABLED (always CLOSED) */
        d->allowed = 1;
        d->permit = untracked ? PRS_BREAKER_NO_PERMIT : P_MAKE(W_EPOCH(w), 0, 0);
        return PRS_OK;
    }
    lock(h);
    now = clamp_now(st, now);
    w = atomic_load_explicit(&st->word, memory_order_relaxed);
    d->allowed = 0;
    d->permit = PRS_BREAKER_NO_PERMIT;
    if (W_STATE(w) == PRS_BREAKER_OPEN) {
        int64_t retry = open_retry_after(h, w, now);
        if (retry > 0) {
            st->v.rejected++;
            unlock(h);
            d->retry_after_ns = retry;
            d->transition.from = d->transition.to = PRS_BREAKER_OPEN;
            return PRS_OK;
        }
        enter_half_open(h, &d->transition);
        w = atomic_load_explicit(&st->word, memory_order_relaxed);
    }
    if (W_STATE(w) == PRS_BREAKER_HALF_OPEN) {
        int64_t slot = take_slot(h, now, untracked);
        if (slot >= 0) {
            d->allowed = 1;
            d->permit = untracked ? PRS_BREAKER_NO_PERMIT : P_MAKE(W_EPOCH(w), slot, 1);
        } else {
            st->v.rejected++;
        }
    } else { /* closed since the fast path looked */
        d->allowed = 1;
        d->permit = untracked ? PRS_BREAKER_NO_PERMIT : P_MAKE(W_EPOCH(w), 0, 0);
    }
    unlock(h);
    return PRS_OK;
}

int prs_breaker_acquire(prs_breaker *b, int64_t now, prs_breaker_decision *d) {
    return admit(b, now, d, 0);
}

int prs_breaker_acquire_untracked(prs_breaker *b, int64_t now, prs_breaker_decision *d) {
    return admit(b, now, d, 1);
}

int prs_breaker_try_acquire_closed(const prs_breaker *b, prs_breaker_permit *permit) {
    uint64_t w = atomic_load_explicit(&state_of(b)->word, memory_order_acquire);
    if (W_STATE(w) != PRS_BREAKER_CLOSED) return 0;
    *permit = P_MAKE(W_EPOCH(w), 0, 0);
    return 1;
}

/* ---- outcomes ------------------------------------------------------------- */

int prs_breaker_outcome_needs_time(const prs_breaker *b, prs_breaker_outcome outcome) {
    /* A success never trips a consecutive-mode breaker, a half-open success
     * closes without a time, and a count window ignores time. */
    return outcome == PRS_BREAKER_FAILURE || b->rate_mode || b->buckets != NULL;
}

int prs_breaker_record(prs_breaker *b, int64_t now, prs_breaker_permit permit,
                       prs_breaker_outcome outcome, int64_t duration_ns,
                       prs_breaker_transition *tr) {
    no_transition(tr);
    if (!b) return PRS_EINVAL;
    if (outcome != PRS_BREAKER_SUCCESS && outcome != PRS_BREAKER_FAILURE &&
        outcome != PRS_BREAKER_IGNORED)
        return PRS_EINVAL;
    int slow = outcome != PRS_BREAKER_IGNORED && b->cfg.slow_call_ns > 0 &&
               duration_ns >= b->cfg.slow_call_ns;
    int fail = outcome == PRS_BREAKER_FAILURE;
    if (outcome == PRS_BREAKER_SUCCESS && !slow && record_clean_success(b, now, permit))
        return PRS_OK;

    held h = held_of(b);
    prs__brk_state *st = h.st;
    prs__brk_vars *v = &st->v;
    lock(h);
    now = clamp_now(st, now);
    if (outcome == PRS_BREAKER_IGNORED) {
        v->ignored++;
    } else {
        v->calls++;
        v->failures += fail;
        v->slow_calls += slow;
    }
    uint64_t w = atomic_load_explicit(&st->word, memory_order_relaxed);
    prs_breaker_state state = W_STATE(w);
    if (permit != PRS_BREAKER_NO_PERMIT && P_EPOCH(permit) != W_EPOCH(w)) {
        unlock(h); /* stale: admitted before a transition */
        return PRS_OK;
    }
    if (state == PRS_BREAKER_CLOSED) {
        if (outcome != PRS_BREAKER_IGNORED) {
            leave_clean(h);
            window_push(h, now, (fail ? PRS__BRK_FAIL : 0u) | (slow ? PRS__BRK_SLOW : 0u));
            if (fail) {
                v->consec_fail++;
                v->consec_succ = 0;
            } else {
                v->consec_succ++;
                v->consec_fail = 0;
            }
            if (W_MODE(w) == PRS_BREAKER_NORMAL &&
                (b->rate_mode ? window_trips(h) : v->consec_fail >= b->cfg.failure_threshold))
                enter_open(h, now, PRS_BREAKER_NORMAL, tr);
            else
                maybe_enter_clean(h);
        }
    } else if (state == PRS_BREAKER_HALF_OPEN && free_slot(h, permit)) {
        if (outcome == PRS_BREAKER_IGNORED) {
            /* neither: the slot is free again */
        } else if (fail || (slow && b->cfg.slow_call_rate_threshold > 0.0)) {
            enter_open(h, now, PRS_BREAKER_NORMAL, tr);
        } else if (++v->consec_succ >= b->cfg.success_threshold) {
            enter_closed(h, PRS_BREAKER_NORMAL, 1, tr);
        }
    }
    /* OPEN, or a stray in HALF_OPEN: an outcome that holds no slot only
     * counts in the totals. */
    unlock(h);
    return PRS_OK;
}

/* ---- manual states ---------------------------------------------------------- */

/* The manual transitions, one function: under the lock, at now (clamped). */
typedef enum manual_op { M_OPEN, M_FORCE_OPEN, M_HALF_OPEN, M_CLOSE, M_RESET, M_DISABLE } manual_op;

static void manual(prs_breaker *b, int64_t now, manual_op op, prs_breaker_transition *tr) {
    no_transition(tr);
    if (!b) return;
    held h = held_of(b);
    lock(h);
    now = clamp_now(h.st, now);
    prs__brk_vars *v = &h.st->v;
    switch (op) {
    case M_OPEN:
        enter_open(h, now, PRS_BREAKER_NORMAL, tr);
        break;
    case M_FORCE_OPEN:
        enter_open(h, now, PRS_BREAKER_FORCED_OPEN, tr);
        break;
    case M_HALF_OPEN:
        enter_half_open(h, tr);
        break;
    case M_CLOSE:
    case M_RESET:
        enter_closed(h, PRS_BREAKER_NORMAL, 1, tr);
        if (op == M_RESET) v->calls = v->failures = v->slow_calls = v->rejected = v->ignored = 0;
        break;
    case M_DISABLE: {
        uint64_t w = atomic_load_explicit(&h.st->word, memory_order_relaxed);
        /* from CLOSED the window and counts go on; from elsewhere start clean */
        enter_closed(h, PRS_BREAKER_DISABLED, W_STATE(w) != PRS_BREAKER_CLOSED, tr);
        break;
    }
    }
    unlock(h);
}

/* Defines prs_breaker_<name>(b, now, tr): the manual transition `op`. */
#define MANUAL_TRANSITION(name, op)                                                           \
    void prs_breaker_##name(prs_breaker *b, int64_t now, prs_breaker_transition *tr) {        \
        manual(b, now, op, tr);                                                               \
    }

MANUAL_TRANSITION(open, M_OPEN)
MANUAL_TRANSITION(force_open, M_FORCE_OPEN)
MANUAL_TRANSITION(half_open, M_HALF_OPEN)
MANUAL_TRANSITION(close, M_CLOSE)
MANUAL_TRANSITION(reset, M_RESET)
MANUAL_TRANSITION(disable, M_DISABLE)

/* ---- reading ----------------------------------------------------------------- */

prs_breaker_state prs_breaker_get_state(const prs_breaker *b) {
    return W_STATE(atomic_load_explicit(&state_of(b)->word, memory_order_acquire));
}

prs_breaker_mode prs_breaker_get_mode(const prs_breaker *b) {
    return W_MODE(atomic_load_explicit(&state_of(b)->word, memory_order_acquire));
}

void prs_breaker_get_metrics(prs_breaker *b, int64_t now, prs_breaker_metrics *m) {
    memset(m, 0, sizeof *m);
    if (!b) return;
    held h = held_of(b);
    prs__brk_state *st = h.st;
    const prs__brk_vars *v = &st->v;
    lock(h);
    now = clamp_now(st, now);
    window_roll(h, now);
    uint64_t w = atomic_load_explicit(&st->word, memory_order_relaxed);
    int64_t fast = stripes_sum(b);
    *m = (prs_breaker_metrics){
        .state = W_STATE(w),
        .mode = W_MODE(w),
        .consecutive_failures = v->consec_fail,
        .consecutive_successes = v->consec_succ + fast,
        .calls = v->calls + fast,
        .failures = v->failures,
        .slow_calls = v->slow_calls,
        .rejected = v->rejected,
        .ignored = v->ignored,
        .window_calls = v->w_calls,
        .window_failures = v->w_failures,
        .window_slow_calls = v->w_slow,
        .failure_rate = rate_of(v->w_failures, v->w_calls),
        .slow_call_rate = rate_of(v->w_slow, v->w_calls),
        .retry_after_ns = W_STATE(w) == PRS_BREAKER_OPEN ? open_retry_after(h, w, now) : 0,
        .half_open_in_flight = v->in_flight,
        .half_open_untracked = v->untracked,
    };
    unlock(h);
}

void prs_breaker_get_config(const prs_breaker *b, prs_breaker_config *cfg) {
    *cfg = b->cfg;
}

const char *prs_breaker_mode_name(int mode) {
    switch (mode) {
    case PRS_BREAKER_NORMAL: return "normal";
    case PRS_BREAKER_FORCED_OPEN: return "forced_open";
    case PRS_BREAKER_DISABLED: return "disabled";
    default: return "unknown";
    }
}

const char *prs_breaker_state_name(int state) {
    switch (state) {
    case PRS_BREAKER_CLOSED: return "closed";
    case PRS_BREAKER_OPEN: return "open";
    case PRS_BREAKER_HALF_OPEN: return "half_open";
    default: return "unknown";
    }
}

/* ---- placed in a shared-memory region (prs_shm.h; shm_breaker.c) ------------------ */

int prs_breaker_new_placed(const prs_breaker_config *cfg, const prs_shm_place *place,
                           prs_breaker **out, prs_config_error *why) {
    if (!place) {
        int rc = prs_breaker_config_check(cfg, why);
        return rc ? rc : prs_breaker_new(cfg, out);
    }
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_breaker_config_check(cfg, why);
    if (rc) return rc;
    if (!place->region) return prs_config_fail(why, PRS_EINVAL, NULL, "no region");
    if (prs_shm_name_check(place->name))
        return prs_config_fail(why, PRS_EINVAL, "name",
                               "must be 1..63 bytes without '/', '..' or control characters");
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_breaker *b = object_new(cfg, a);
    if (!b) return PRS_ENOMEM;
    prs__shm_brk *s = NULL;
    rc = prs__shm_brk_place(cfg, place, &s);
    if (rc) {
        prs__free(a, b->block);
        if (rc == PRS_ESTATE)
            return prs_config_fail(why, rc, NULL, "exists in the region with another configuration");
        if (rc == PRS_ERANGE)
            return prs_config_fail(why, rc, "half_open_max_calls", "must be <= 65536 in a region");
        return rc;
    }
    attach_window(b, (unsigned char *)s + s->win_off);
    b->shm = s;
    b->region = place->region;
    prs__shm_ref(place->region);
    *out = b;
    return PRS_OK;
}

int prs_breaker_shared(const prs_breaker *b) { return b && b->shm != NULL; }

int prs_breaker_reap(prs_breaker *b) {
    if (!b || !b->shm) return 0;
    held h = held_of(b);
    lock(h);
    int n = prs__shm_brk_reap(h.shm);
    unlock(h);
    return n;
}
