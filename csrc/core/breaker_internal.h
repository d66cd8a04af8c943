/*
 * breaker_internal.h - the circuit breaker's state, shared by its two
 * placements (not installed). breaker.c runs the one state machine on a
 * prs__brk_state reached through a pointer: the state lives in the
 * prs_breaker itself, or in a block of a shared-memory region
 * (shm_breaker.c: the block, its journal and its half-open trial slots).
 * What differs by placement is the lock (a spinlock, or the region's pid
 * lock with an undo journal), the journalling of a window cell, and how a
 * half-open trial holds its slot (counted, or named in a slot that records
 * its process).
 */
#ifndef PRS_BREAKER_INTERNAL_H
#define PRS_BREAKER_INTERNAL_H

#include "prs_breaker.h"
#include "shm_internal.h"

/* The state and mode in a word (breaker.c: "State layout"). */
#define PRS__BRK_STATE_OF(w) ((prs_breaker_state)((w) & 3u))
#define PRS__BRK_MODE_OF(w) ((prs_breaker_mode)(((w) >> 2) & 3u))

/* A count window's cell: one outcome. */
#define PRS__BRK_FAIL 1u
#define PRS__BRK_SLOW 2u

/* One second of a time window. */
typedef struct prs__brk_bucket {
    int64_t calls, failures, slow;
} prs__brk_bucket;

/* The variables, guarded by the placement's lock. A placed breaker copies
 * them whole to its journal before every change. */
typedef struct prs__brk_vars {
    int64_t opened_at;   /* OPEN: when it (last) opened */
    int64_t consec_fail; /* CLOSED: failures since the last success */
    int64_t consec_succ; /* CLOSED: successes since the last failure;
                            HALF_OPEN: trial successes in this epoch */
    int64_t in_flight;   /* HALF_OPEN: trial slots taken, 0 <= in_flight <= half_open_max; else 0 */
    int64_t untracked;   /* HALF_OPEN: the part of in_flight admitted by
                            acquire_untracked(); 0 <= untracked <= in_flight */
    int64_t calls, failures, slow_calls, rejected, ignored; /* totals */
    int64_t w_calls, w_failures, w_slow; /* window aggregates, 0 <= w_failures <= w_calls */
    int64_t ring_n;    /* count window: outcomes in the ring, <= window_size (== w_calls) */
    int64_t ring_head; /* count window: next cell to write */
    int64_t head_sec;  /* time window: newest second it covers; INT64_MIN: empty */
} prs__brk_vars;

/* The state (breaker.c's essay: "State layout"). */
typedef struct prs__brk_state {
    /* read by every call; written only with the lock held */
    _Alignas(64) _Atomic uint64_t word;
    /* largest now_ns seen; INT64_MIN before any. Only ever raised. */
    _Alignas(64) _Atomic int64_t last_now;
    /* the placement's lock (0 is free for both): a spinlock in process, the
     * holder's pid in a region (taken over from a dead holder) */
    _Alignas(64) union {
        prs__spinlock spin;
        prs__pidlock pid;
    } lock;
    _Atomic uint32_t dirty; /* placed: a journalled change is under way */
    prs__brk_vars v;        /* guarded by lock */
} prs__brk_state;

/* A fresh state: CLOSED, NORMAL, epoch 0, empty windows, unlocked. */
void prs__brk_state_init(prs__brk_state *st);

/* The effective configuration of a placed breaker: what a later opener must
 * match (compared as bytes: no padding). */
typedef struct prs__brk_conf {
    int64_t failure_threshold, success_threshold, open_timeout_ns, half_open_max;
    double failure_rate, slow_rate;
    int64_t slow_call_ns, window_type, window_size, minimum_calls;
} prs__brk_conf;
_Static_assert(sizeof(prs__brk_conf) == 10 * sizeof(int64_t), "no padding");

/* ---- the block of a breaker placed in a region (shm_breaker.c) ---------- */

typedef struct prs__shm_brk prs__shm_brk;
struct prs__shm_brk {
    uint64_t magic;
    prs__brk_conf c;
    uint64_t slots_off, win_off, length; /* from the block's start */
    int64_t next_reap;   /* guarded by the lock: a full half-open looks for dead trials from then */
    /* the journal, guarded by the lock: the word and variables as they were
     * before the change under way, and the one window cell it overwrote */
    uint64_t undo_word;
    int64_t undo_cell;   /* -1: none */
    prs__brk_bucket undo_bucket;
    uint8_t undo_byte;
    prs__brk_vars undo;
    prs__brk_state st;
};

/* Restores what a dead holder's change overwrote (lock held, dirty set). */
void prs__shm_brk_recover(prs__shm_brk *s);

/* Takes the pid lock and opens a journalled change. */
static inline void prs__shm_brk_begin(prs__shm_brk *s) {
    prs__pidlock_lock(&s->st.lock.pid);
    if (__builtin_expect(atomic_load_explicit(&s->st.dirty, memory_order_acquire) != 0, 0))
        prs__shm_brk_recover(s);
    s->undo = s->st.v;
    s->undo_word = atomic_load_explicit(&s->st.word, memory_order_relaxed);
    s->undo_cell = -1;
    atomic_store_explicit(&s->st.dirty, 1, memory_order_release);
}

/* Closes the change and releases the lock. */
static inline void prs__shm_brk_end(prs__shm_brk *s) {
    atomic_store_explicit(&s->st.dirty, 0, memory_order_release);
    prs__pidlock_unlock(&s->st.lock.pid);
}

/* Journals window cell i (its bytes as they are) before a push overwrites
 * it (lock held): a count window's byte, or a time window's bucket. Inline:
 * every placed outcome journals one. */
static inline void prs__shm_brk_journal_byte(prs__shm_brk *s, int64_t i, uint8_t byte) {
    s->undo_cell = i;
    s->undo_byte = byte;
}
static inline void prs__shm_brk_journal_bucket(prs__shm_brk *s, int64_t i, const prs__brk_bucket *k) {
    s->undo_cell = i;
    s->undo_bucket = *k;
}

/* The half-open trial slots (lock held; in_flight and untracked are the
 * caller's to count). claim: a free slot marked with this process (and
 * PRS__TOKEN_FLAG when untracked), after freeing dead holders' slots when
 * in_flight is at half_open_max and a look is due; its index, or -1 when
 * none is free. release: frees the slot a tracked permit names (slot >= 0)
 * or this process's untracked slot (slot -1); 1 when this process held it,
 * 0 when not (a stray, or a slot freed meanwhile). clear: frees them all. */
int64_t prs__shm_brk_claim(prs__shm_brk *s, int64_t now, int untracked);
int prs__shm_brk_release(prs__shm_brk *s, int64_t slot);
void prs__shm_brk_clear(prs__shm_brk *s);
/* Frees the slots of dead processes (lock held): how many. */
int prs__shm_brk_reap(prs__shm_brk *s);

/* The block `place` names, made (first opener) or opened: PRS_ERANGE when
 * half_open_max_calls is over 65536; else prs_shm_entry's errors. */
int prs__shm_brk_place(const prs_breaker_config *cfg, const prs_shm_place *place,
                       prs__shm_brk **out);

/* Tests: PRS_OK when the placed breaker `name` of r keeps its invariants (its
 * aggregates equal what its window and slots hold, states in range). */
int prs__shm_brk_check(prs_breaker *b, prs_shm *r, const char *name);

#endif /* PRS_BREAKER_INTERNAL_H */
