/*
 * shm_breaker.c - what a circuit breaker placed in a shared-memory region
 * (prs_breaker_new_placed, prs_shm.h) has of its own: its block, the journal
 * that makes its changes crash-safe, and its half-open trial slots.
 * breaker.c runs the state machine on the block's state (breaker_internal.h)
 * exactly as on an in-process breaker's, calling here where the placement
 * decides.
 *
 * Block: the magic, the configuration (fixed at creation; a later opener must
 * match it), the offsets, the journal, the state (the word, read without a
 * lock by the CLOSED fast path as in process; last_now; the pid lock and the
 * variables under it), then the trial slots and the window (a ring of one
 * byte per outcome, or per-second buckets).
 *
 * Trial slots. Each admitted half-open trial takes a slot that records its
 * process (prs__self_token(): pid and start time); a tracked permit names
 * its slot, an untracked trial is a slot with PRS__TOKEN_FLAG, freed by a
 * permit-less outcome of the same process. When half-open is full, an
 * admission looks for slots of dead processes at most every
 * PRS__REAP_INTERVAL_NS (by the callers' now) and frees them (as neither
 * success nor failure), so a trial slot of a killed process comes back within
 * that interval of the next admission that needs it.
 *
 * Crash safety. Every change is journalled (prs__shm_brk_begin): the
 * variables and the word are copied to the undo area, and the one window cell
 * a push overwrites, before `dirty` is set; whoever takes the lock over from a
 * dead holder finds `dirty` and restores them, then recounts what can be
 * recounted from the storage itself (the window's aggregates, after a roll
 * or a clear that was cut short; in_flight and untracked from the slots, all
 * freed when the state restored is not HALF_OPEN), so the counts always
 * agree with what they count. The clean fast path of
 * breaker.c (striped success counters) is not used here: every outcome takes
 * the lock.
 */
#include "breaker_internal.h"

#include <stdio.h>

#define SB_MAGIC UINT64_C(0x50525342524b0002) /* 2: the state of breaker_internal.h */
#define MAX_SLOTS 65536

static uint64_t *slots_of(prs__shm_brk *s) { return (uint64_t *)((char *)s + s->slots_off); }
static uint8_t *ring_of(prs__shm_brk *s) { return (uint8_t *)s + s->win_off; }
static prs__brk_bucket *buckets_of(prs__shm_brk *s) { return (prs__brk_bucket *)((char *)s + s->win_off); }
static int is_ring(const prs__shm_brk *s) { return s->c.window_type == PRS_BREAKER_WINDOW_COUNT; }

/* ---- placing ---------------------------------------------------------------- */

static void conf_of(const prs_breaker_config *cfg, prs__brk_conf *c) {
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

/* The window's bytes. */
static size_t window_len(const prs__brk_conf *c) {
    return c->window_type == PRS_BREAKER_WINDOW_COUNT ? (size_t)c->window_size
                                                      : (size_t)c->window_size * sizeof(prs__brk_bucket);
}

static void brk_init(void *ctx, void *block) {
    const prs__brk_conf *c = ctx;
    prs__shm_brk *s = block;
    s->magic = SB_MAGIC;
    s->c = *c;
    s->slots_off = a64(sizeof *s);
    s->win_off = s->slots_off + a64((size_t)c->half_open_max * sizeof(uint64_t));
    s->length = s->win_off + a64(window_len(c));
    s->undo_cell = -1;
    prs__brk_state_init(&s->st);
}

int prs__shm_brk_place(const prs_breaker_config *cfg, const prs_shm_place *place,
                       prs__shm_brk **out) {
    prs__brk_conf c;
    conf_of(cfg, &c);
    if (c.half_open_max > MAX_SLOTS) return PRS_ERANGE;
    size_t len = a64(sizeof(prs__shm_brk)) + a64((size_t)c.half_open_max * sizeof(uint64_t)) +
                 a64(window_len(&c));
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

/* ---- the journal -------------------------------------------------------------- */

/* The aggregates from the window, in_flight and untracked from the slots. */
static void recount(prs__shm_brk *s) {
    prs__brk_vars *v = &s->st.v;
    v->w_calls = v->w_failures = v->w_slow = 0;
    int64_t size = s->c.window_size;
    if (is_ring(s)) {
        if (v->ring_n < 0 || v->ring_n > size) v->ring_n = 0;
        if (v->ring_head < 0 || v->ring_head >= size) v->ring_head = 0;
        uint8_t *r = ring_of(s);
        for (int64_t i = 0; i < v->ring_n; i++) {
            uint8_t b = r[(v->ring_head - 1 - i + size) % size];
            v->w_calls++;
            v->w_failures += (b & PRS__BRK_FAIL) != 0;
            v->w_slow += (b & PRS__BRK_SLOW) != 0;
        }
    } else {
        prs__brk_bucket *k = buckets_of(s);
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

void prs__shm_brk_recover(prs__shm_brk *s) {
    s->st.v = s->undo;
    atomic_store_explicit(&s->st.word, s->undo_word, memory_order_release);
    if (s->undo_cell >= 0 && s->undo_cell < s->c.window_size) {
        if (is_ring(s))
            ring_of(s)[s->undo_cell] = s->undo_byte;
        else
            buckets_of(s)[s->undo_cell] = s->undo_bucket;
    }
    /* trial slots are held in HALF_OPEN only: an admission that went
     * half-open and took one is undone to a state that holds none */
    if (PRS__BRK_STATE_OF(s->undo_word) != PRS_BREAKER_HALF_OPEN) prs__shm_brk_clear(s);
    recount(s);
    atomic_store_explicit(&s->st.dirty, 0, memory_order_release);
}

/* ---- trial slots (lock held) ----------------------------------------------------- */

int prs__shm_brk_reap(prs__shm_brk *s) {
    uint64_t *sl = slots_of(s);
    prs__brk_vars *v = &s->st.v;
    int n = 0;
    for (int64_t i = 0; i < s->c.half_open_max; i++) {
        uint64_t t = sl[i];
        if (t && prs__token_dead(t)) {
            sl[i] = 0;
            v->in_flight--;
            v->untracked -= (t & PRS__TOKEN_FLAG) != 0;
            n++;
        }
    }
    return n;
}

int64_t prs__shm_brk_claim(prs__shm_brk *s, int64_t now, int untracked) {
    int64_t max = s->c.half_open_max;
    if (s->st.v.in_flight >= max && now >= s->next_reap) {
        prs__shm_brk_reap(s);
        s->next_reap = prs__sat_add(now, PRS__REAP_INTERVAL_NS);
    }
    if (s->st.v.in_flight >= max) return -1;
    uint64_t *sl = slots_of(s);
    for (int64_t i = 0; i < max; i++)
        if (sl[i] == 0) {
            sl[i] = untracked ? prs__self_token() | PRS__TOKEN_FLAG : prs__self_token();
            return i;
        }
    return -1;
}

int prs__shm_brk_release(prs__shm_brk *s, int64_t slot) {
    uint64_t *sl = slots_of(s), me = prs__self_token();
    if (slot < 0) {
        for (int64_t i = 0; i < s->c.half_open_max && slot < 0; i++)
            if (sl[i] == (me | PRS__TOKEN_FLAG)) slot = i;
    } else if (slot >= s->c.half_open_max || sl[slot] != me) {
        slot = -1;
    }
    if (slot < 0) return 0;
    sl[slot] = 0;
    return 1;
}

void prs__shm_brk_clear(prs__shm_brk *s) {
    memset(slots_of(s), 0, (size_t)s->c.half_open_max * sizeof(uint64_t));
}

/* ---- wording a mismatch ---------------------------------------------------------- */

static void describe_conf(char *out, size_t cap, const prs__brk_conf *c) {
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
    prs__brk_conf want;
    conf_of(cfg, &want);
    _Alignas(16) unsigned char found[PRS_SHM_CONFIG_MAX];
    char kind[PRS_SHM_KIND_MAX + 1];
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, "circuit_breaker", &want, sizeof want, 1,
                           NULL, NULL, &blk, NULL, kind, found);
    if (rc != PRS_ESTATE) return PRS_EINVAL;
    char have[400], asked[400];
    if (strcmp(kind, "circuit_breaker") == 0) {
        prs__brk_conf h;
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
    prs__brk_conf c;
    conf_of(&cfg, &c);
    void *blk = NULL;
    int rc = prs_shm_entry(r, name, "circuit_breaker", &c, sizeof c, 1, NULL, NULL, &blk, NULL,
                           NULL, NULL);
    if (rc) return rc;
    prs__shm_brk *s = blk;
    prs__shm_brk_begin(s);
    prs__brk_vars v = s->st.v;
    uint64_t w = atomic_load_explicit(&s->st.word, memory_order_relaxed);
    prs_breaker_state state = PRS__BRK_STATE_OF(w);
    prs_breaker_mode mode = PRS__BRK_MODE_OF(w);
    recount(s); /* what the storage holds */
    int ok = v.w_calls == s->st.v.w_calls && v.w_failures == s->st.v.w_failures &&
             v.w_slow == s->st.v.w_slow && v.in_flight == s->st.v.in_flight &&
             v.untracked == s->st.v.untracked && state <= PRS_BREAKER_HALF_OPEN &&
             mode <= PRS_BREAKER_DISABLED && v.w_failures <= v.w_calls &&
             v.w_calls <= (is_ring(s) ? c.window_size : INT64_MAX) && v.in_flight <= c.half_open_max &&
             (state == PRS_BREAKER_HALF_OPEN || v.in_flight == 0) && v.calls >= 0 &&
             v.failures <= v.calls;
    s->st.v = v;
    prs__shm_brk_end(s);
    return ok ? PRS_OK : PRS_EPROTO;
}
