/*
 * breaker.c - the circuit breaker's state machine, windows and counters.
 *
 * Workload. A breaker sits in front of every call to one dependency, so the
 * common case - CLOSED, the dependency healthy - must cost next to nothing:
 * admission is one atomic load of `word`, and recording an outcome is a few
 * dozen nanoseconds of arithmetic under a spinlock. OPEN and HALF_OPEN are rare
 * and take the lock for admission too.
 *
 * State layout.
 *   word    epoch << 29 | gen << 5 | clean << 4 | mode << 2 | state. Written
 *           only with `lock` held, read without it by the CLOSED fast path of
 *           acquire(), by the clean fast path of record() and by get_state().
 *           Every transition (and every manual state call) bumps the epoch, so a
 *           permit (epoch << 1 | trial-slot bit) names the state that admitted it.
 *   Everything else below `lock` is guarded by it, except last_now (atomic,
 *   only ever raised) and the stripes.
 *
 * The clean fast path (contention). In CLOSED, once a count window is full of
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
 * is the one case that would count its success in the later phase.
 *
 * The window. The same sliding window runs in both modes (consecutive mode
 * uses it only for the metrics): a ring of the last window_size outcomes (one
 * byte each: bit 0 failure, bit 1 slow), or window_size per-second buckets for
 * a time window. Aggregates (w_calls, w_failures, w_slow) are kept up to date
 * on every push and eviction, so a decision never scans the window; a time
 * window rolls forward by clearing the buckets of the seconds that passed
 * (at most window_size of them; a jump of a whole window clears it at once).
 * The window is cleared whenever the breaker (re-)enters CLOSED through a
 * transition, so a recovered dependency starts from a clean slate.
 *
 * Time. now_ns is clamped to the largest time seen: a clock stepping back can
 * neither re-open a window's old seconds nor shorten the open timeout.
 *
 * Concurrency of half-open. `in_flight` counts trial calls admitted in the
 * current HALF_OPEN epoch and not yet recorded; acquire admits only while
 * in_flight < half_open_max, under the lock, so no crowd of callers released at
 * once can get more than half_open_max trials. Outcomes of stale permits never
 * touch in_flight, so a slot is freed exactly once, by the call that took it.
 *
 * Outcomes without a permit. A caller that carries nothing between admission
 * and outcome (a binding's allow_request() / record_success() pair) is admitted
 * by acquire_untracked(): its trial slot is counted in `untracked` as well as in
 * `in_flight`. In HALF_OPEN an outcome recorded with PRS_BREAKER_NO_PERMIT is
 * the outcome of one of those trials when untracked > 0 (it frees one untracked
 * slot: matched by count, not identity), and a stray otherwise: counted in the
 * totals only, like a stale permit's, so it can neither free a slot some other
 * caller holds nor move the state. Hence 0 <= untracked <= in_flight <=
 * half_open_max at every instant.
 */
#include "prs_breaker.h"
#include "prs_internal.h"
#include "shm_internal.h" /* a breaker placed in a region: shm_breaker.c decides */

#define W_STATE(w) ((prs_breaker_state)((w) & 3u))
#define W_MODE(w) ((prs_breaker_mode)(((w) >> 2) & 3u))
#define W_CLEAN ((uint64_t)1 << 4)
#define W_GEN_SHIFT 5
#define W_GEN_MASK ((UINT64_C(1) << 24) - 1)
#define W_GEN(w) (((w) >> W_GEN_SHIFT) & W_GEN_MASK)
#define W_EPOCH(w) ((w) >> 29)
#define W_MAKE(epoch, mode, state) (((uint64_t)(epoch) << 29) | ((uint64_t)(mode) << 2) | (uint64_t)(state))

/* A stripe: gen << 40 | count (see "the clean fast path"). */
#define STRIPES 32
#define S_COUNT_MASK ((UINT64_C(1) << 40) - 1)
#define S_GEN(v) ((v) >> 40)
#define LINE 64
typedef struct stripe {
    _Alignas(LINE) _Atomic uint64_t v;
} stripe;

#define OUT_FAIL 1u
#define OUT_SLOW 2u

typedef struct tw_bucket {
    int64_t calls, failures, slow;
} tw_bucket;

struct prs_breaker {
    /* ---- read by every call: the word and what never changes ---- */
    _Atomic uint64_t word;      /* see above; written under lock */
    struct prs__shm_brk *shm;   /* placed in a region: shm_breaker.c holds the state */
    prs_shm *region;            /* then referenced */
    prs_breaker_config cfg;     /* allocator field NULL */
    int64_t half_open_max;      /* >= 1 */
    int64_t min_calls;          /* effective minimum_calls */
    int rate_mode;              /* a failure or slow-call rate threshold is set */
    prs_allocator alloc;
    void *block;                /* what the allocator returned (this struct is aligned in it) */

    /* largest now_ns seen; INT64_MIN before any. Only ever raised (cas_max). */
    _Alignas(LINE) _Atomic int64_t last_now;

    /* ---- guarded by lock ---- */
    _Alignas(LINE) prs__spinlock lock;
    int64_t opened_at;          /* OPEN: when it (last) opened */
    int64_t consec_fail;        /* CLOSED: failures since the last success */
    int64_t consec_succ;        /* CLOSED: successes since the last failure;
                                   HALF_OPEN: trial successes in this epoch */
    int64_t in_flight;          /* HALF_OPEN: 0 <= in_flight <= half_open_max; else 0 */
    int64_t untracked;          /* HALF_OPEN: the part of in_flight admitted by
                                   acquire_untracked(); 0 <= untracked <= in_flight */
    int64_t calls, failures, slow_calls, rejected, ignored; /* totals */

    int64_t w_calls, w_failures, w_slow;  /* window aggregates, 0 <= w_failures <= w_calls */
    uint8_t *ring;              /* count window: window_size bytes */
    int64_t ring_n;             /* outcomes in the ring, <= window_size (== w_calls) */
    int64_t ring_head;          /* next slot to write */
    tw_bucket *buckets;         /* time window: window_size buckets, second s at s mod size */
    int64_t head_sec;           /* newest second the time window covers; INT64_MIN: empty */

    /* ---- the clean fast path's counters (see above) ---- */
    stripe stripes[STRIPES];
};

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

int prs_breaker_new(const prs_breaker_config *cfg, prs_breaker **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_breaker_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    void *block = prs__calloc(a, 1, sizeof(prs_breaker) + LINE - 1);
    if (!block) return PRS_ENOMEM;
    prs_breaker *b = (prs_breaker *)(((uintptr_t)block + LINE - 1) & ~(uintptr_t)(LINE - 1));
    b->block = block;
    size_t n = (size_t)cfg->window_size;
    if (cfg->window_type == PRS_BREAKER_WINDOW_COUNT)
        b->ring = prs__calloc(a, n, 1);
    else
        b->buckets = prs__calloc(a, n, sizeof(tw_bucket));
    if (!b->ring && !b->buckets) {
        prs__free(a, block);
        return PRS_ENOMEM;
    }
    atomic_init(&b->word, W_MAKE(0, PRS_BREAKER_NORMAL, PRS_BREAKER_CLOSED));
    prs__spin_init(&b->lock);
    atomic_init(&b->last_now, INT64_MIN);
    for (int i = 0; i < STRIPES; i++) atomic_init(&b->stripes[i].v, 0);
    b->head_sec = INT64_MIN;
    b->cfg = *cfg;
    b->cfg.allocator = NULL;
    b->half_open_max = cfg->half_open_max_calls ? cfg->half_open_max_calls : cfg->success_threshold;
    b->min_calls = cfg->minimum_calls;
    if (cfg->window_type == PRS_BREAKER_WINDOW_COUNT && b->min_calls > cfg->window_size)
        b->min_calls = cfg->window_size;
    b->rate_mode = cfg->failure_rate_threshold > 0.0 || cfg->slow_call_rate_threshold > 0.0;
    b->alloc = *a;
    *out = b;
    return PRS_OK;
}

void prs_breaker_free(prs_breaker *b) {
    if (!b) return;
    prs__shm_unref(b->region);
    prs_allocator a = b->alloc;
    prs__free(&a, b->ring);
    prs__free(&a, b->buckets);
    prs__free(&a, b->block);
}

/* ---- helpers (lock held) ------------------------------------------------ */

/* Raises last_now to now (never lowers it: the clean fast path raises it
 * without the lock) and returns the clamped now. */
static int64_t clamp_now(prs_breaker *b, int64_t now) {
    int64_t seen = atomic_load_explicit(&b->last_now, memory_order_relaxed);
    while (now > seen) {
        if (atomic_compare_exchange_weak_explicit(&b->last_now, &seen, now, memory_order_relaxed,
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
static void leave_clean(prs_breaker *b) {
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    if (!(w & W_CLEAN)) return;
    uint64_t gen = (W_GEN(w) + 1) & W_GEN_MASK;
    w = (w & ~(W_CLEAN | (W_GEN_MASK << W_GEN_SHIFT))) | gen << W_GEN_SHIFT;
    atomic_store_explicit(&b->word, w, memory_order_seq_cst);
    int64_t folded = 0;
    for (int i = 0; i < STRIPES; i++) {
        uint64_t v = atomic_exchange_explicit(&b->stripes[i].v, gen << 40, memory_order_acq_rel);
        assert(S_GEN(v) == ((gen - 1) & W_GEN_MASK));
        folded += (int64_t)(v & S_COUNT_MASK);
    }
    b->calls += folded;
    b->consec_succ += folded;
}

/* Lock held, in CLOSED after an outcome: sets the clean bit when one more plain
 * success could change nothing but the counters. */
static void maybe_enter_clean(prs_breaker *b) {
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    if ((w & W_CLEAN) || W_STATE(w) != PRS_BREAKER_CLOSED || !b->ring) return;
    if (b->ring_n != b->cfg.window_size || b->w_failures != 0 || b->w_slow != 0 ||
        b->consec_fail != 0)
        return;
    atomic_store_explicit(&b->word, w | W_CLEAN, memory_order_release);
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
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    if (!(w & W_CLEAN)) return 0;
    if (permit != PRS_BREAKER_NO_PERMIT && permit != W_EPOCH(w) << 1) return 0;
    stripe *s = my_stripe(b);
    uint64_t v = atomic_load_explicit(&s->v, memory_order_relaxed);
    if (S_GEN(v) != W_GEN(w) || (v & S_COUNT_MASK) == S_COUNT_MASK) return 0;
    clamp_now(b, now); /* first: a failure after this success opens no earlier */
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

static void window_clear(prs_breaker *b) {
    b->w_calls = b->w_failures = b->w_slow = 0;
    if (b->ring) {
        b->ring_n = 0;
        b->ring_head = 0;
    } else {
        memset(b->buckets, 0, (size_t)b->cfg.window_size * sizeof(tw_bucket));
        b->head_sec = INT64_MIN;
    }
}

/* Moves a time window forward to second `sec` (never backwards: now is clamped). */
static void window_roll(prs_breaker *b, int64_t now) {
    if (!b->buckets) return;
    int64_t sec = floor_div(now, PRS_NS_PER_SEC), size = b->cfg.window_size;
    if (b->head_sec == INT64_MIN) {
        b->head_sec = sec;
        return;
    }
    if (sec <= b->head_sec) return;
    if (sec - b->head_sec >= size) {
        memset(b->buckets, 0, (size_t)size * sizeof(tw_bucket));
        b->w_calls = b->w_failures = b->w_slow = 0;
    } else {
        for (int64_t s = b->head_sec + 1; s <= sec; s++) {
            tw_bucket *k = &b->buckets[floor_mod(s, size)];
            b->w_calls -= k->calls;
            b->w_failures -= k->failures;
            b->w_slow -= k->slow;
            k->calls = k->failures = k->slow = 0;
        }
    }
    b->head_sec = sec;
}

static void window_push(prs_breaker *b, int64_t now, unsigned flags) {
    int64_t fail = (flags & OUT_FAIL) != 0, slow = (flags & OUT_SLOW) != 0;
    if (b->ring) {
        int64_t size = b->cfg.window_size;
        if (b->ring_n == size) {
            unsigned old = b->ring[b->ring_head];
            b->w_calls--;
            b->w_failures -= (old & OUT_FAIL) != 0;
            b->w_slow -= (old & OUT_SLOW) != 0;
        } else {
            b->ring_n++;
        }
        b->ring[b->ring_head] = (uint8_t)flags;
        if (++b->ring_head == size) b->ring_head = 0;
    } else {
        window_roll(b, now);
        tw_bucket *k = &b->buckets[floor_mod(b->head_sec, b->cfg.window_size)];
        k->calls++;
        k->failures += fail;
        k->slow += slow;
    }
    b->w_calls++;
    b->w_failures += fail;
    b->w_slow += slow;
    assert(b->w_failures >= 0 && b->w_failures <= b->w_calls && b->w_slow <= b->w_calls);
}

static double rate_of(int64_t part, int64_t whole) {
    return whole > 0 ? (double)part / (double)whole : 0.0;
}

static int window_trips(const prs_breaker *b) {
    if (b->w_calls < b->min_calls) return 0;
    double frt = b->cfg.failure_rate_threshold, srt = b->cfg.slow_call_rate_threshold;
    if (frt > 0.0 && rate_of(b->w_failures, b->w_calls) >= frt) return 1;
    if (srt > 0.0 && rate_of(b->w_slow, b->w_calls) >= srt) return 1;
    return 0;
}

/* Stores a new word (epoch + 1) and reports the transition, if the state changed. */
static void set_state(prs_breaker *b, prs_breaker_state to, prs_breaker_mode mode,
                      prs_breaker_transition *tr) {
    leave_clean(b);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    prs_breaker_state from = W_STATE(w);
    atomic_store_explicit(&b->word,
                          W_MAKE(W_EPOCH(w) + 1, mode, to) | (w & (W_GEN_MASK << W_GEN_SHIFT)),
                          memory_order_release);
    if (to != PRS_BREAKER_HALF_OPEN) b->in_flight = b->untracked = 0;
    if (tr) {
        tr->happened = from != to;
        tr->from = from;
        tr->to = to;
    }
}

static void enter_open(prs_breaker *b, int64_t now, prs_breaker_mode mode,
                       prs_breaker_transition *tr) {
    set_state(b, PRS_BREAKER_OPEN, mode, tr);
    b->opened_at = now;
    b->consec_succ = 0;
}

static void enter_half_open(prs_breaker *b, prs_breaker_transition *tr) {
    set_state(b, PRS_BREAKER_HALF_OPEN, PRS_BREAKER_NORMAL, tr);
    b->in_flight = b->untracked = 0;
    b->consec_succ = 0;
    b->consec_fail = 0;
}

static void enter_closed(prs_breaker *b, prs_breaker_mode mode, int clear,
                         prs_breaker_transition *tr) {
    set_state(b, PRS_BREAKER_CLOSED, mode, tr);
    if (clear) {
        window_clear(b);
        b->consec_succ = 0;
        b->consec_fail = 0;
    }
}

static int64_t open_retry_after(const prs_breaker *b, uint64_t w, int64_t now) {
    if (W_MODE(w) == PRS_BREAKER_FORCED_OPEN || b->cfg.open_timeout_ns == PRS_NEVER)
        return PRS_NEVER;
    int64_t at = prs__sat_add(b->opened_at, b->cfg.open_timeout_ns);
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
    if (__builtin_expect(b->shm != NULL, 0)) return prs__shm_brk_admit(b->shm, now, d, untracked);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    d->transition.happened = 0;
    d->transition.from = d->transition.to = W_STATE(w);
    if (W_STATE(w) == PRS_BREAKER_CLOSED) { /* fast path, also DISABLED (always CLOSED) */
        d->allowed = 1;
        d->permit = untracked ? PRS_BREAKER_NO_PERMIT : W_EPOCH(w) << 1;
        d->retry_after_ns = 0;
        return PRS_OK;
    }
    prs__spin_lock(&b->lock);
    now = clamp_now(b, now);
    w = atomic_load_explicit(&b->word, memory_order_relaxed);
    if (W_STATE(w) == PRS_BREAKER_OPEN) {
        int64_t retry = open_retry_after(b, w, now);
        if (retry > 0) {
            b->rejected++;
            prs__spin_unlock(&b->lock);
            d->allowed = 0;
            d->permit = PRS_BREAKER_NO_PERMIT;
            d->retry_after_ns = retry;
            d->transition.from = d->transition.to = PRS_BREAKER_OPEN;
            return PRS_OK;
        }
        enter_half_open(b, &d->transition);
        w = atomic_load_explicit(&b->word, memory_order_relaxed);
    }
    if (W_STATE(w) == PRS_BREAKER_HALF_OPEN) {
        if (b->in_flight < b->half_open_max) {
            b->in_flight++;
            b->untracked += untracked;
            assert(b->untracked <= b->in_flight);
            d->allowed = 1;
            d->permit = untracked ? PRS_BREAKER_NO_PERMIT : (W_EPOCH(w) << 1) | 1u;
            d->retry_after_ns = 0;
        } else {
            b->rejected++;
            d->allowed = 0;
            d->permit = PRS_BREAKER_NO_PERMIT;
            d->retry_after_ns = 0;
        }
    } else { /* closed since the fast path looked */
        d->allowed = 1;
        d->permit = untracked ? PRS_BREAKER_NO_PERMIT : W_EPOCH(w) << 1;
        d->retry_after_ns = 0;
    }
    prs__spin_unlock(&b->lock);
    return PRS_OK;
}

int prs_breaker_acquire(prs_breaker *b, int64_t now, prs_breaker_decision *d) {
    return admit(b, now, d, 0);
}

int prs_breaker_acquire_untracked(prs_breaker *b, int64_t now, prs_breaker_decision *d) {
    return admit(b, now, d, 1);
}

int prs_breaker_try_acquire_closed(const prs_breaker *b, prs_breaker_permit *permit) {
    if (__builtin_expect(b->shm != NULL, 0)) return prs__shm_brk_closed(b->shm, permit);
    uint64_t w = atomic_load_explicit(&((prs_breaker *)b)->word, memory_order_acquire);
    if (W_STATE(w) != PRS_BREAKER_CLOSED) return 0;
    *permit = W_EPOCH(w) << 1;
    return 1;
}

/* ---- outcomes ------------------------------------------------------------- */

int prs_breaker_outcome_needs_time(const prs_breaker *b, prs_breaker_outcome outcome) {
    /* A success never trips a consecutive-mode breaker, a half-open success
     * closes without a time, and a count window ignores time. */
    return outcome == PRS_BREAKER_FAILURE || b->rate_mode || b->buckets != NULL ||
           (b->shm && b->cfg.window_type == PRS_BREAKER_WINDOW_TIME);
}

int prs_breaker_record(prs_breaker *b, int64_t now, prs_breaker_permit permit,
                       prs_breaker_outcome outcome, int64_t duration_ns,
                       prs_breaker_transition *tr) {
    no_transition(tr);
    if (!b) return PRS_EINVAL;
    if (outcome != PRS_BREAKER_SUCCESS && outcome != PRS_BREAKER_FAILURE &&
        outcome != PRS_BREAKER_IGNORED)
        return PRS_EINVAL;
    if (b->shm) return prs__shm_brk_record(b->shm, now, permit, outcome, duration_ns, tr);
    int slow = outcome != PRS_BREAKER_IGNORED && b->cfg.slow_call_ns > 0 &&
               duration_ns >= b->cfg.slow_call_ns;
    int fail = outcome == PRS_BREAKER_FAILURE;
    if (outcome == PRS_BREAKER_SUCCESS && !slow && record_clean_success(b, now, permit))
        return PRS_OK;

    prs__spin_lock(&b->lock);
    now = clamp_now(b, now);
    if (outcome == PRS_BREAKER_IGNORED) {
        b->ignored++;
    } else {
        b->calls++;
        b->failures += fail;
        b->slow_calls += slow;
    }
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    prs_breaker_state state = W_STATE(w);
    if (permit != PRS_BREAKER_NO_PERMIT && (permit >> 1) != W_EPOCH(w)) {
        prs__spin_unlock(&b->lock); /* stale: admitted before a transition */
        return PRS_OK;
    }
    if (state == PRS_BREAKER_CLOSED) {
        if (outcome != PRS_BREAKER_IGNORED) {
            leave_clean(b);
            window_push(b, now, (fail ? OUT_FAIL : 0u) | (slow ? OUT_SLOW : 0u));
            if (fail) {
                b->consec_fail++;
                b->consec_succ = 0;
            } else {
                b->consec_succ++;
                b->consec_fail = 0;
            }
            if (W_MODE(w) == PRS_BREAKER_NORMAL &&
                (b->rate_mode ? window_trips(b) : b->consec_fail >= b->cfg.failure_threshold))
                enter_open(b, now, PRS_BREAKER_NORMAL, tr);
            else
                maybe_enter_clean(b);
        }
    } else if (state == PRS_BREAKER_HALF_OPEN) {
        if (permit == PRS_BREAKER_NO_PERMIT) {
            if (b->untracked == 0) { /* a stray: it holds no slot, so it is no trial */
                prs__spin_unlock(&b->lock);
                return PRS_OK;
            }
            b->untracked--;
        }
        /* a current HALF_OPEN permit always holds a slot (its bit 0 is set) */
        assert(permit == PRS_BREAKER_NO_PERMIT || (permit & 1u));
        b->in_flight--;
        assert(b->in_flight >= 0 && b->untracked <= b->in_flight);
        if (outcome == PRS_BREAKER_IGNORED) {
            /* neither: the slot is free again */
        } else if (fail || (slow && b->cfg.slow_call_rate_threshold > 0.0)) {
            enter_open(b, now, PRS_BREAKER_NORMAL, tr);
        } else if (++b->consec_succ >= b->cfg.success_threshold) {
            enter_closed(b, PRS_BREAKER_NORMAL, 1, tr);
        }
    }
    /* OPEN: an outcome without a permit only counts in the totals. */
    prs__spin_unlock(&b->lock);
    return PRS_OK;
}

/* ---- manual states ---------------------------------------------------------- */

/* The manual transitions, one function: under the lock, at now (clamped). */
typedef enum manual_op { M_OPEN, M_FORCE_OPEN, M_HALF_OPEN, M_CLOSE, M_RESET, M_DISABLE } manual_op;

static void manual(prs_breaker *b, int64_t now, manual_op op, prs_breaker_transition *tr) {
    no_transition(tr);
    if (!b) return;
    if (b->shm) {
        prs__shm_brk_manual(b->shm, now, (int)op, tr);
        return;
    }
    prs__spin_lock(&b->lock);
    now = clamp_now(b, now);
    switch (op) {
    case M_OPEN:
        enter_open(b, now, PRS_BREAKER_NORMAL, tr);
        break;
    case M_FORCE_OPEN:
        enter_open(b, now, PRS_BREAKER_FORCED_OPEN, tr);
        break;
    case M_HALF_OPEN:
        enter_half_open(b, tr);
        break;
    case M_CLOSE:
    case M_RESET:
        enter_closed(b, PRS_BREAKER_NORMAL, 1, tr);
        if (op == M_RESET) b->calls = b->failures = b->slow_calls = b->rejected = b->ignored = 0;
        break;
    case M_DISABLE: {
        uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
        /* from CLOSED the window and counts go on; from elsewhere start clean */
        enter_closed(b, PRS_BREAKER_DISABLED, W_STATE(w) != PRS_BREAKER_CLOSED, tr);
        break;
    }
    }
    prs__spin_unlock(&b->lock);
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
    if (b->shm) return (prs_breaker_state)(prs__shm_brk_word(b->shm) & 3u);
    return W_STATE(atomic_load_explicit(&((prs_breaker *)b)->word, memory_order_acquire));
}

prs_breaker_mode prs_breaker_get_mode(const prs_breaker *b) {
    if (b->shm) return (prs_breaker_mode)(prs__shm_brk_word(b->shm) >> 2);
    return W_MODE(atomic_load_explicit(&((prs_breaker *)b)->word, memory_order_acquire));
}

void prs_breaker_get_metrics(prs_breaker *b, int64_t now, prs_breaker_metrics *m) {
    memset(m, 0, sizeof *m);
    if (!b) return;
    if (b->shm) {
        prs__shm_brk_metrics(b->shm, now, m);
        return;
    }
    prs__spin_lock(&b->lock);
    now = clamp_now(b, now);
    window_roll(b, now);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    m->state = W_STATE(w);
    m->mode = W_MODE(w);
    int64_t fast = stripes_sum(b);
    m->consecutive_failures = b->consec_fail;
    m->consecutive_successes = b->consec_succ + fast;
    m->calls = b->calls + fast;
    m->failures = b->failures;
    m->slow_calls = b->slow_calls;
    m->rejected = b->rejected;
    m->ignored = b->ignored;
    m->window_calls = b->w_calls;
    m->window_failures = b->w_failures;
    m->window_slow_calls = b->w_slow;
    m->failure_rate = rate_of(b->w_failures, b->w_calls);
    m->slow_call_rate = rate_of(b->w_slow, b->w_calls);
    m->retry_after_ns = m->state == PRS_BREAKER_OPEN ? open_retry_after(b, w, now) : 0;
    m->half_open_in_flight = b->in_flight;
    m->half_open_untracked = b->untracked;
    prs__spin_unlock(&b->lock);
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
    void *block = prs__calloc(a, 1, sizeof(prs_breaker) + LINE - 1);
    if (!block) return PRS_ENOMEM;
    struct prs__shm_brk *s = NULL;
    rc = prs__shm_brk_place(cfg, place, &s);
    if (rc) {
        prs__free(a, block);
        if (rc == PRS_ESTATE)
            return prs_config_fail(why, rc, NULL, "exists in the region with another configuration");
        if (rc == PRS_ERANGE)
            return prs_config_fail(why, rc, "half_open_max_calls", "must be <= 65536 in a region");
        return rc;
    }
    prs_breaker *b = (prs_breaker *)(((uintptr_t)block + LINE - 1) & ~(uintptr_t)(LINE - 1));
    b->block = block;
    b->cfg = *cfg;
    b->cfg.allocator = NULL;
    b->half_open_max = cfg->half_open_max_calls ? cfg->half_open_max_calls : cfg->success_threshold;
    b->rate_mode = cfg->failure_rate_threshold > 0.0 || cfg->slow_call_rate_threshold > 0.0;
    b->alloc = *a;
    b->shm = s;
    b->region = place->region;
    prs__shm_ref(place->region);
    *out = b;
    return PRS_OK;
}

int prs_breaker_shared(const prs_breaker *b) { return b && b->shm != NULL; }

int prs_breaker_reap(prs_breaker *b) { return b && b->shm ? prs__shm_brk_reap(b->shm) : 0; }
