/*
 * shm_group.c - a group (prs_group_new) whose members are limiters placed in
 * one shared-memory region: a request is taken from all of them or from none,
 * even when the process taking it is killed in the middle.
 *
 * Each member's block has its own pid lock and journal (shm_limiter.c); what
 * makes the members move together is a transaction record in the region's
 * group journal, an entry of its own (JOURNAL_NAME, made by the first group
 * that needs it) holding SLOTS slots:
 *
 *   owner   a pid lock: the process (thread) running a transaction in it
 *   status  IDLE, OPEN (members may be taken), COMMITTED (all were taken)
 *   off[]   the members' block offsets in the region, ascending
 *
 * A check (consume):
 *   1. take a free slot (or one whose owner died: reclaim it first, below);
 *      write off[] and n, then status = OPEN;
 *   2. take the members' locks in ascending offset (the same order in every
 *      process: offsets do not depend on where the region is mapped); journal
 *      each one: a spinlocked member's state is copied to its undo area and
 *      its `dirty` tagged PRS__J_GROUP + slot; a lock-free member's word is
 *      saved in undo_word, tagged, then swapped for PRS__WORD_LOCKED by a
 *      compare-and-swap (a lock-free decider may change it until then);
 *   3. decide each distinct member in the caller's order (a lock-free one on
 *      its word's copy), consuming until the first denial; then
 *   4a. admitted: every lock-free member's new word goes to redo_word, then
 *      status = COMMITTED (the commit point: one store), then each member is
 *      released (its word stored, its tag cleared);
 *   4b. denied: each member goes back to its undo copy, the members are
 *      peeked again for the report, tags cleared;
 *   5. status = IDLE, the member locks and the slot are released.
 *
 * A process killed anywhere leaves tagged members behind; whoever takes a
 * member's lock over (shm_limiter.c's recover) reads the slot's status: a
 * COMMITTED transaction's members keep their new states (a held word gets
 * redo_word), any other is undone. The slot itself stays with the dead
 * owner until someone needing a slot takes it over: that one first locks
 * (and so resolves) every member the slot lists, then sets it IDLE. Since a
 * slot is IDLE again only once none of its members carries its tag, a tag
 * always names the transaction that set it.
 *
 * Limits: the members of one group are in one region (the journal's); at
 * most SLOTS transactions run at once in a region (more wait for a slot);
 * like every pid lock, a dead owner's pid reused by a live process delays the
 * takeover until that process exits.
 */
#include "group_internal.h"
#include "limiter_internal.h"
#include "prs_group.h"
#include "shm_internal.h"

#include <stdalign.h>
#include <string.h>

#define JOURNAL_NAME ".prs-group-journal"
#define JOURNAL_KIND "group_journal"
#define JOURNAL_MAGIC 0x4a4e52475350525aull
#define SLOTS 64

enum { IDLE = 0, OPEN = 1, COMMITTED = 2 };

typedef struct jslot {
    prs__pidlock owner;
    _Atomic uint32_t status;
    uint32_t n;                            /* members listed in off[] */
    uint32_t pad;
    uint64_t off[PRS_GROUP_MAX_MEMBERS];   /* ascending block offsets */
    unsigned char pad2[48];
} jslot;
_Static_assert(sizeof(jslot) % 64 == 0, "slots on lines of their own");

typedef struct journal {
    uint64_t magic;
    uint64_t slots;
    unsigned char pad[48];
    jslot slot[SLOTS];
} journal;

struct prs__shm_group {
    prs_shm *region;                        /* referenced: the journal's mapping */
    journal *j;
    size_t n;                               /* members as listed */
    size_t nd;                              /* distinct members (locks) */
    prs_limiter *lim[PRS_GROUP_MAX_MEMBERS];   /* as listed */
    uint32_t first[PRS_GROUP_MAX_MEMBERS];     /* as group.c computed them */
    uint32_t mult[PRS_GROUP_MAX_MEMBERS];
    uint32_t order[PRS_GROUP_MAX_MEMBERS];     /* distinct members' indexes, ascending offset */
    uint64_t off[PRS_GROUP_MAX_MEMBERS];       /* ... and their offsets */
    prs_allocator alloc;
};

static void journal_init(void *ctx, void *block) {
    (void)ctx;
    journal *j = block;
    j->magic = JOURNAL_MAGIC;
    j->slots = SLOTS;
    for (int i = 0; i < SLOTS; i++) {
        atomic_init(&j->slot[i].owner.owner, 0);
        atomic_init(&j->slot[i].status, IDLE);
    }
}

/* The region's group journal (made when absent), or NULL (full, corrupt). */
static journal *journal_of(prs_shm *r) {
    void *blk = NULL;
    if (prs_shm_entry(r, JOURNAL_NAME, JOURNAL_KIND, NULL, 0, sizeof(journal), journal_init, NULL,
                      &blk, NULL, NULL, NULL) != PRS_OK)
        return NULL;
    journal *j = blk;
    return j->magic == JOURNAL_MAGIC && j->slots == SLOTS ? j : NULL;
}

int prs__shm_group_committed(prs_shm *region, uint32_t slot) {
    journal *j = region ? journal_of(region) : NULL;
    if (!j || slot >= SLOTS) return 0;
    return atomic_load_explicit(&j->slot[slot].status, memory_order_acquire) == COMMITTED;
}

static uint64_t offset_of(const prs_limiter *lim) {
    return (uint64_t)((unsigned char *)lim->shm - prs__shm_base(lim->region));
}

int prs__shm_same_state(const prs_limiter *a, const prs_limiter *b) {
    return a->shm && b->shm && offset_of(a) == offset_of(b) &&
           strcmp(prs_shm_path(a->region), prs_shm_path(b->region)) == 0;
}

/* ---- lifecycle ------------------------------------------------------------ */

int prs__shm_group_new(prs_limiter *const *lims, const uint32_t *first, const uint32_t *mult,
                       size_t n, const prs_allocator *a, prs__shm_group **out) {
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!lims[i]->shm) return PRS_ENOTSUP; /* shared and in-process members mixed */
        if (strcmp(prs_shm_path(lims[i]->region), prs_shm_path(lims[0]->region)) != 0)
            return PRS_ENOTSUP; /* members of several regions */
    }
    prs__shm_group *sg = prs__calloc(a, 1, sizeof *sg);
    if (!sg) return PRS_ENOMEM;
    sg->alloc = *a;
    sg->region = lims[0]->region;
    sg->j = journal_of(sg->region);
    if (!sg->j) {
        prs__free(a, sg);
        return PRS_EFULL;
    }
    prs__shm_ref(sg->region);
    sg->n = n;
    for (size_t i = 0; i < n; i++) {
        sg->lim[i] = lims[i];
        sg->first[i] = first[i];
        sg->mult[i] = mult[i];
        if (first[i] != i) continue;
        /* insert into order[] by offset */
        uint64_t off = offset_of(lims[i]);
        size_t k = sg->nd++;
        while (k > 0 && sg->off[k - 1] > off) {
            sg->off[k] = sg->off[k - 1];
            sg->order[k] = sg->order[k - 1];
            k--;
        }
        sg->off[k] = off;
        sg->order[k] = (uint32_t)i;
    }
    *out = sg;
    return PRS_OK;
}

void prs__shm_group_free(prs__shm_group *sg) {
    if (!sg) return;
    prs_allocator a = sg->alloc;
    prs__shm_unref(sg->region);
    prs__free(&a, sg);
}

/* ---- slots ------------------------------------------------------------------ */

/* Resolves a slot taken over from a dead owner: every member it lists is
 * locked (which undoes or keeps its tagged state by the slot's status). */
static void reclaim(prs__shm_group *sg, jslot *sl) {
    if (atomic_load_explicit(&sl->status, memory_order_acquire) == IDLE) return;
    unsigned char *base = prs__shm_base(sg->region);
    size_t size = prs_shm_size(sg->region);
    uint32_t n = sl->n < PRS_GROUP_MAX_MEMBERS ? sl->n : PRS_GROUP_MAX_MEMBERS;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = sl->off[i];
        if (off % 64 || off > size - sizeof(prs__shm_lim)) continue;
        prs__shm_lim *s = (prs__shm_lim *)(void *)(base + off);
        if (s->magic != PRS__SHM_LIM_MAGIC) continue;
        prs__shm_lim_lock(s, sg->region);
        prs__shm_lim_unlock(s);
    }
    atomic_store_explicit(&sl->status, IDLE, memory_order_release);
}

static _Atomic unsigned slot_hint;

static uint32_t slot_take(prs__shm_group *sg) {
    int32_t me = prs__self_pid();
    unsigned start = atomic_fetch_add_explicit(&slot_hint, 1, memory_order_relaxed);
    for (unsigned spins = 0;; spins++) {
        for (unsigned k = 0; k < SLOTS; k++) { /* a free one */
            uint32_t i = (start + k) % SLOTS;
            int32_t zero = 0;
            if (atomic_load_explicit(&sg->j->slot[i].owner.owner, memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong_explicit(&sg->j->slot[i].owner.owner, &zero, me,
                                                        memory_order_acquire, memory_order_relaxed)) {
                reclaim(sg, &sg->j->slot[i]); /* (IDLE unless its owner died in step 5) */
                return i;
            }
        }
        if ((spins & 15) == 15) { /* one of a dead owner */
            for (uint32_t i = 0; i < SLOTS; i++) {
                if (prs__pidlock_trylock(&sg->j->slot[i].owner, me)) {
                    reclaim(sg, &sg->j->slot[i]);
                    return i;
                }
            }
        }
        prs__spin_yield(spins);
    }
}

/* ---- deciding ----------------------------------------------------------------- */

/* Takes member k (a distinct one) into the transaction of `tag` (its lock held). */
static void journal_member(prs_limiter *lim, uint32_t tag, int64_t *word) {
    prs__shm_lim *s = lim->shm;
    if (!prs__limiter_lockfree(lim)) {
        memcpy(prs__shm_lim_undo(s), prs__shm_lim_state(s), (size_t)s->undo_size);
        atomic_store_explicit(&s->dirty, tag, memory_order_release);
        return;
    }
    int64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    for (;;) { /* undo_word always holds what the word held before it was taken */
        s->undo_word = w;
        atomic_store_explicit(&s->dirty, tag, memory_order_release);
        if (atomic_compare_exchange_weak_explicit(&s->word, &w, PRS__WORD_LOCKED,
                                                  memory_order_acq_rel, memory_order_acquire))
            break;
    }
    *word = w;
}

static void *state_of(prs_limiter *lim, int64_t *word) {
    return prs__limiter_lockfree(lim) ? (void *)word : (void *)prs__shm_lim_state(lim->shm);
}

int prs__shm_group_decide(prs__shm_group *sg, int64_t now, int64_t n, int consume,
                          prs_decision *dec, int *all_out, int *first_denied) {
    int64_t word[PRS_GROUP_MAX_MEMBERS];
    int all = 1, fd = -1, rc = PRS_OK;
    uint32_t slot = 0;
    if (consume) {
        slot = slot_take(sg);
        jslot *sl = &sg->j->slot[slot];
        sl->n = (uint32_t)sg->nd;
        for (size_t k = 0; k < sg->nd; k++) sl->off[k] = sg->off[k];
        atomic_store_explicit(&sl->status, OPEN, memory_order_release);
    }
    for (size_t k = 0; k < sg->nd; k++) {
        prs_limiter *lim = sg->lim[sg->order[k]];
        prs__shm_lim_lock(lim->shm, lim->region);
        if (consume) {
            journal_member(lim, PRS__J_GROUP + slot, &word[sg->order[k]]);
        } else if (prs__limiter_lockfree(lim)) { /* never held: we hold its lock */
            word[sg->order[k]] = atomic_load_explicit(&lim->shm->word, memory_order_acquire);
        } else { /* a peek writes nothing, but journal it as a decision would */
            prs__shm_lim *s = lim->shm;
            memcpy(prs__shm_lim_undo(s), prs__shm_lim_state(s), (size_t)s->undo_size);
            atomic_store_explicit(&s->dirty, PRS__J_DECIDE, memory_order_release);
        }
    }
    /* decide in the caller's order, consuming until the first denial */
    for (size_t i = 0; i < sg->n; i++) {
        if (sg->first[i] != i) continue;
        prs_limiter *lim = sg->lim[i];
        int64_t demand = prs__sat_mul(n, (int64_t)sg->mult[i]);
        int r = lim->algo->decide(lim->params, state_of(lim, &word[i]), now, demand,
                                  consume && all, &dec[i]);
        if (r && !rc) rc = r;
        if (!dec[i].allowed && all) {
            all = 0;
            fd = (int)i;
        }
    }
    if (rc) all = 0;
    if (consume) {
        jslot *sl = &sg->j->slot[slot];
        if (all) {
            for (size_t i = 0; i < sg->n; i++) {
                if (sg->first[i] != i || !prs__limiter_lockfree(sg->lim[i])) continue;
                if (word[i] == PRS__WORD_LOCKED) word[i]++;
                sg->lim[i]->shm->redo_word = word[i];
            }
            atomic_store_explicit(&sl->status, COMMITTED, memory_order_release);
        }
        for (size_t i = 0; i < sg->n; i++) {
            if (sg->first[i] != i) continue;
            prs_limiter *lim = sg->lim[i];
            prs__shm_lim *s = lim->shm;
            if (!all) { /* back to the undo copies, then what is really left */
                if (prs__limiter_lockfree(lim)) word[i] = s->undo_word;
                else memcpy(prs__shm_lim_state(s), prs__shm_lim_undo(s), (size_t)s->undo_size);
                int r = lim->algo->decide(lim->params, state_of(lim, &word[i]), now,
                                          prs__sat_mul(n, (int64_t)sg->mult[i]), 0, &dec[i]);
                if (r && !rc) rc = r;
            }
            if (prs__limiter_lockfree(lim))
                atomic_store_explicit(&s->word, word[i], memory_order_release);
            atomic_store_explicit(&s->dirty, PRS__J_NONE, memory_order_release);
        }
        atomic_store_explicit(&sl->status, IDLE, memory_order_release);
    } else {
        for (size_t k = 0; k < sg->nd; k++)
            atomic_store_explicit(&sg->lim[sg->order[k]]->shm->dirty, PRS__J_NONE,
                                  memory_order_release);
    }
    for (size_t k = sg->nd; k-- > 0;) prs__shm_lim_unlock(sg->lim[sg->order[k]]->shm);
    if (consume) prs__pidlock_unlock(&sg->j->slot[slot].owner);
    *all_out = all;
    *first_denied = fd;
    return rc;
}
