/*
 * group.c - all-or-nothing checks over several limiters.
 *
 * Why ordered locking rather than decide-then-refund: see prs_group.h. In
 * short, a refund after time has moved is not exact, and in-between readers
 * see capacity that is about to come back. Here a check is:
 *
 *   1. take every distinct lock in ascending address order (`locks`, sorted
 *      once in prs_group_new; a lock-free limiter's word is swapped with a
 *      marker and its state kept in tat[] on the stack meanwhile);
 *   2. find each keyed member's state; for absent keys reserve room in their
 *      shard (evicting fresh keys that are not the group's own), then find the
 *      present ones again (a reservation may have moved them) and give the
 *      absent ones a fresh state in `scratch`;
 *   3. decide each distinct member once, in the caller's order, for n times
 *      the number of times it is listed, consuming, after saving a snapshot
 *      of its state (states up to SNAP bytes; larger ones are rolled back
 *      with algo->refund, exact here since nothing else ran in between); at
 *      the first denial restore every snapshot in reverse order, decide the
 *      restored members again without consuming (so their remaining is what
 *      is really left), and go on deciding the remaining members without
 *      consuming, to report the largest retry_after; the decision reports
 *      one member's limit, remaining and reset (pick_reported);
 *   4. admitted: insert the absent keys with their new states (room was
 *      reserved, key blocks allocated in step 2: this cannot fail);
 *   5. unlock in reverse order (a lock-free word gets its new state).
 *
 * Invariants: members[i].lock indexes locks[]; locks[] is sorted by address
 * with no duplicates; `first` is the lowest index with the same state (the
 * same limiter, or the same table and key) and only members with first == i
 * are decided, for n * mult (mult: how many members share that state, kept
 * on the first; a member listed twice takes 2n per request); the keyed members of one
 * table are contiguous in excl[] (excl_first, excl_count), which is what a
 * reservation must not evict.
 */
#include "group_internal.h"
#include "prs_group.h"
#include "prs_internal.h"
#include "prs_shm.h"

#include <stdalign.h>
#include <stdlib.h>

enum { KIND_NONE = 0, KIND_LIMITER = 1, KIND_KEYED = 2 };

#define SNAP 64            /* bytes of state snapshot kept on the stack */
#define STACK_SCRATCH 2048 /* absent keyed states on the stack up to this */

typedef struct gmember {
    prs_group_member m;  /* m.key points into g->keys */
    uint64_t h;          /* keyed: the key's hash in its table */
    uint32_t lock;       /* index into locks[] */
    uint32_t first;      /* first member with the same state (itself when distinct) */
    uint32_t mult;       /* on a first: how many members share its state (>= 1) */
    uint32_t excl_first; /* keyed: this table's keys in excl[] */
    uint32_t excl_count;
    size_t scratch_off;  /* keyed first: offset of its fresh state in scratch */
} gmember;

typedef struct glock {
    void *addr;          /* a prs__spinlock, or a lock-free prs_limiter */
    int word;            /* 1: addr is a lock-free limiter, its word the lock */
} glock;

struct prs_group {
    size_t n, nlocks;
    gmember *members;
    glock *locks;
    prs__keyref *excl;
    prs__shm_group *shm;     /* members placed in a region: shm_group.c decides */
    unsigned char *keys;     /* copies of the keys */
    size_t scratch_bytes;    /* fresh states of the distinct keyed members */
    prs_allocator alloc;
    /* consuming decisions that admitted / refused: every decision of the
     * group holds all its locks, so a relaxed load and store under them is
     * exact; read with relaxed loads */
    _Atomic uint64_t admitted, rejected;
};

/* ---- members ---------------------------------------------------------------- */

void prs_group_member_limiter(prs_group_member *m, prs_limiter *lim) {
    memset(m, 0, sizeof *m);
    if (!lim) return; /* left unfilled: prs_group_new refuses it */
    m->kind = KIND_LIMITER;
    m->algo = lim->algo;
    m->params = lim->params;
    m->obj = lim;
}

void prs_group_member_keyed(prs_group_member *m, prs_keyed *t, const void *key, size_t key_len) {
    memset(m, 0, sizeof *m);
    m->kind = KIND_KEYED;
    m->algo = prs_keyed_algo(t);
    m->params = prs_keyed_params(t);
    m->obj = t;
    m->key = key ? key : "";
    m->key_len = key_len;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void *lock_addr(const gmember *gm) {
    if (gm->m.kind == KIND_KEYED) return prs__keyed_lock(gm->m.obj, gm->h);
    prs_limiter *lim = gm->m.obj;
    return prs__limiter_lockfree(lim) ? (void *)lim : (void *)&lim->lock;
}

static int cmp_lock(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const glock *)a)->addr, y = (uintptr_t)((const glock *)b)->addr;
    return x < y ? -1 : x > y;
}

int prs_group_new(const prs_group_member *members, size_t n, const prs_allocator *allocator,
                  prs_group **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!members || n < 1 || n > PRS_GROUP_MAX_MEMBERS) return PRS_EINVAL;
    size_t key_bytes = 0, nshared = 0;
    for (size_t i = 0; i < n; i++) {
        const prs_group_member *m = &members[i];
        if (m->kind < KIND_LIMITER || m->kind > KIND_KEYED || !m->algo || !m->params || !m->obj)
            return PRS_EINVAL;
        if (m->kind == KIND_LIMITER && ((const prs_limiter *)m->obj)->shm) nshared++;
        if (m->kind == KIND_KEYED) {
            if (prs_keyed_shared(m->obj)) return PRS_ENOTSUP; /* its keys are the region's */
            if (!m->key && m->key_len) return PRS_EINVAL;
            if (m->key_len > SIZE_MAX / 2 - key_bytes) return PRS_ENOMEM;
            key_bytes += m->key_len;
        }
    }
    if (nshared && nshared != n) return PRS_ENOTSUP; /* shared and in-process mixed */
    const prs_allocator *a = prs__alloc_or_default(allocator);
    prs_group *g = prs__calloc(a, 1, sizeof *g);
    if (!g) return PRS_ENOMEM;
    g->alloc = *a;
    g->n = n;
    g->members = prs__calloc(a, n, sizeof *g->members);
    g->locks = prs__calloc(a, n, sizeof *g->locks);
    g->excl = prs__calloc(a, n, sizeof *g->excl);
    g->keys = prs__malloc(a, key_bytes ? key_bytes : 1);
    if (!g->members || !g->locks || !g->excl || !g->keys) {
        prs_group_free(g);
        return PRS_ENOMEM;
    }
    size_t koff = 0;
    for (size_t i = 0; i < n; i++) {
        gmember *gm = &g->members[i];
        gm->m = members[i];
        gm->first = (uint32_t)i;
        gm->mult = 1;
        if (gm->m.kind != KIND_KEYED) {
            for (size_t j = 0; j < i; j++) {
                const gmember *o = &g->members[j];
                if (o->m.kind == gm->m.kind &&
                    (o->m.obj == gm->m.obj || (nshared && prs__shm_same_state(o->m.obj, gm->m.obj)))) {
                    gm->first = (uint32_t)j;
                    break;
                }
            }
            if (gm->first != i) g->members[gm->first].mult++;
            continue;
        }
        if (gm->m.key_len) memcpy(g->keys + koff, gm->m.key, gm->m.key_len);
        gm->m.key = g->keys + koff;
        koff += gm->m.key_len;
        gm->h = prs__keyed_hash(gm->m.obj, gm->m.key, gm->m.key_len);
        for (size_t j = 0; j < i; j++) {
            const gmember *o = &g->members[j];
            if (o->m.kind == KIND_KEYED && o->m.obj == gm->m.obj && o->m.key_len == gm->m.key_len &&
                memcmp(o->m.key, gm->m.key, gm->m.key_len) == 0) {
                gm->first = (uint32_t)j;
                g->members[j].mult++;
                break;
            }
        }
    }
    if (nshared) { /* every member placed: their locks are the region's */
        prs_limiter *lims[PRS_GROUP_MAX_MEMBERS];
        uint32_t first[PRS_GROUP_MAX_MEMBERS], mult[PRS_GROUP_MAX_MEMBERS];
        for (size_t i = 0; i < n; i++) {
            lims[i] = g->members[i].m.obj;
            first[i] = g->members[i].first;
            mult[i] = g->members[i].mult;
        }
        int rc = prs__shm_group_new(lims, first, mult, n, a, &g->shm);
        if (rc) {
            prs_group_free(g);
            return rc;
        }
        *out = g;
        return PRS_OK;
    }
    /* excl[]: the distinct keys of each table, contiguous per table */
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        gmember *gm = &g->members[i];
        if (gm->m.kind != KIND_KEYED) continue;
        size_t j;
        for (j = 0; j < i; j++)
            if (g->members[j].m.kind == KIND_KEYED && g->members[j].m.obj == gm->m.obj) break;
        if (j < i) { /* table seen: share its run */
            gm->excl_first = g->members[j].excl_first;
            gm->excl_count = g->members[j].excl_count;
            continue;
        }
        gm->excl_first = (uint32_t)ne;
        for (size_t k = i; k < n; k++) {
            gmember *o = &g->members[k];
            if (o->m.kind != KIND_KEYED || o->m.obj != gm->m.obj || o->first != k) continue;
            g->excl[ne].key = o->m.key;
            g->excl[ne].len = o->m.key_len;
            g->excl[ne].h = o->h;
            ne++;
        }
        gm->excl_count = (uint32_t)(ne - gm->excl_first);
    }
    /* scratch: one fresh state per distinct keyed member */
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        gmember *gm = &g->members[i];
        if (gm->m.kind != KIND_KEYED || gm->first != i) continue;
        gm->scratch_off = off;
        off += (prs__keyed_state_size(gm->m.obj) + 15) & ~(size_t)15;
    }
    g->scratch_bytes = off;
    /* locks[]: distinct, ascending */
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        void *addr = lock_addr(&g->members[i]);
        size_t j;
        for (j = 0; j < nl && g->locks[j].addr != addr; j++) {}
        if (j == nl) {
            g->locks[nl].addr = addr;
            g->locks[nl].word = g->members[i].m.kind == KIND_LIMITER &&
                                prs__limiter_lockfree(g->members[i].m.obj);
            nl++;
        }
    }
    qsort(g->locks, nl, sizeof *g->locks, cmp_lock);
    g->nlocks = nl;
    for (size_t i = 0; i < n; i++) {
        void *addr = lock_addr(&g->members[i]);
        for (size_t j = 0; j < nl; j++)
            if (g->locks[j].addr == addr) g->members[i].lock = (uint32_t)j;
    }
    *out = g;
    return PRS_OK;
}

void prs_group_free(prs_group *g) {
    if (!g) return;
    prs_allocator a = g->alloc;
    prs__shm_group_free(g->shm);
    prs__free(&a, g->members);
    prs__free(&a, g->locks);
    prs__free(&a, g->excl);
    prs__free(&a, g->keys);
    prs__free(&a, g);
}

size_t prs_group_size(const prs_group *g) { return g ? g->n : 0; }

/* ---- deciding --------------------------------------------------------------------- */

static void lock_all(prs_group *g, int64_t *tat) {
    for (size_t j = 0; j < g->nlocks; j++) {
        if (g->locks[j].word) tat[j] = prs__word_lock(g->locks[j].addr);
        else prs__spin_lock(g->locks[j].addr);
    }
}

static void unlock_all(prs_group *g, const int64_t *tat) {
    for (size_t j = g->nlocks; j-- > 0;) {
        if (g->locks[j].word) prs__word_unlock(g->locks[j].addr, tat[j]);
        else prs__spin_unlock(g->locks[j].addr);
    }
}

static size_t state_size_of(const gmember *gm) {
    if (gm->m.kind == KIND_KEYED) return prs__keyed_state_size(gm->m.obj);
    return gm->m.algo->state_size(gm->m.params);
}

/* Restores, in reverse order, every member before `upto` that took its
 * demand (snapshots, or algo->refund for states larger than SNAP). */
static void roll_back(prs_group *g, void *const *state, unsigned char (*snap)[SNAP],
                      unsigned char *took, size_t upto, int64_t now, int64_t n) {
    for (size_t j = upto; j-- > 0;) {
        if (!took[j]) continue;
        const gmember *o = &g->members[j];
        size_t sz = state_size_of(o);
        if (sz <= SNAP) memcpy(state[j], snap[j], sz);
        else o->m.algo->refund(o->m.params, state[j], now, prs__sat_mul(n, (int64_t)o->mult));
        took[j] = 0;
    }
}

/* The group's limit, remaining and reset_after come from one member: the most
 * restrictive (least remaining, ties by the longest reset_after, then the
 * first listed), its limit and remaining divided by how many times it is
 * listed (a request takes that many times n from it). retry_after is the
 * longest any member asks. *max_n: the largest n the group can ever admit
 * (the smallest such limit). Returns the reported member's index. */
static int pick_reported(const prs_group *g, const prs_decision *dec, prs_decision *agg,
                         int64_t *max_n) {
    int best = -1;
    int64_t best_rem = 0, best_reset = 0, retry = 0, mn = INT64_MAX, best_lim = 0;
    for (size_t i = 0; i < g->n; i++) {
        const gmember *gm = &g->members[i];
        if (gm->first != i) continue;
        int64_t k = (int64_t)gm->mult;
        int64_t lim = dec[i].limit / k, rem = dec[i].remaining / k;
        if (lim < mn) mn = lim;
        if (dec[i].retry_after_ns > retry) retry = dec[i].retry_after_ns;
        if (best < 0 || rem < best_rem ||
            (rem == best_rem && dec[i].reset_after_ns > best_reset)) {
            best = (int)i;
            best_rem = rem;
            best_lim = lim;
            best_reset = dec[i].reset_after_ns;
        }
    }
    agg->allowed = 0;
    agg->limit = best_lim;
    agg->remaining = best_rem;
    agg->reset_after_ns = best_reset;
    agg->retry_after_ns = retry;
    *max_n = mn;
    return best;
}

/* The group's decision from its members' (dec[i] of each first i). */
static inline void report(const prs_group *g, const prs_decision *dec, int all, int first_denied,
                          prs_decision *out, prs_group_info *info) {
    prs_decision agg;
    int64_t max_n;
    int reported = pick_reported(g, dec, &agg, &max_n);
    agg.allowed = all;
    if (all) agg.retry_after_ns = 0;
    *out = agg;
    if (info) {
        info->denied_by = first_denied;
        info->reported = reported;
        info->max_n = max_n;
    }
}

/* how: consume (0 or 1), with PRS__DECIDE_BARE when only out->allowed is
 * read (allow()): no member's decision is assembled into a report, none is
 * decided again to report what is left, and descriptors may skip the fields. */
static int decide(prs_group *g, int64_t now, int64_t n, int how, prs_decision *out,
                  prs_group_info *info) {
    if (!g || !out || n < 1) return PRS_EINVAL;
    int consume = how & 1, bare = how & PRS__DECIDE_BARE;
    if (g->shm) {
        prs_decision sdec[PRS_GROUP_MAX_MEMBERS];
        int all, fd, rc = prs__shm_group_decide(g->shm, now, n, consume, sdec, &all, &fd);
        if (rc == PRS_OK && bare) out->allowed = all;
        else if (rc == PRS_OK) report(g, sdec, all, fd, out, info);
        return rc;
    }
    size_t cnt = g->n;
    int64_t tat[PRS_GROUP_MAX_MEMBERS];
    void *state[PRS_GROUP_MAX_MEMBERS];
    void *block[PRS_GROUP_MAX_MEMBERS];
    int64_t full[PRS_GROUP_MAX_MEMBERS]; /* -1, or a table-full retry_after */
    unsigned char absent[PRS_GROUP_MAX_MEMBERS];
    unsigned char took[PRS_GROUP_MAX_MEMBERS];
    prs_decision dec[PRS_GROUP_MAX_MEMBERS];
    alignas(16) unsigned char snap[PRS_GROUP_MAX_MEMBERS][SNAP];
    alignas(16) unsigned char stack_scratch[STACK_SCRATCH];
    unsigned char *scratch = stack_scratch;
    if (g->scratch_bytes > STACK_SCRATCH) {
        scratch = prs__malloc(&g->alloc, g->scratch_bytes);
        if (!scratch) return PRS_ENOMEM;
    }
    int rc = PRS_OK;
    for (size_t i = 0; i < cnt; i++) {
        block[i] = NULL;
        full[i] = -1;
        absent[i] = 0;
    }

    lock_all(g, tat);

    /* 2. resolve states; reserve room for absent keys */
    int any_absent = 0;
    for (size_t i = 0; i < cnt; i++) {
        gmember *gm = &g->members[i];
        if (gm->m.kind == KIND_LIMITER) {
            prs_limiter *lim = gm->m.obj; /* its state, found under its lock */
            state[i] = g->locks[gm->lock].word ? (void *)&tat[gm->lock] : lim->state;
        }
        else if (gm->first == i) {
            state[i] = prs__keyed_find_locked(gm->m.obj, gm->h, gm->m.key, gm->m.key_len);
            absent[i] = state[i] == NULL;
            any_absent |= absent[i];
        }
    }
    if (any_absent) {
        /* one reservation per shard (members sharing a lock share the shard) */
        for (size_t i = 0; i < cnt; i++) {
            gmember *gm = &g->members[i];
            if (!absent[i] || full[i] != -1) continue;
            int done = 0;
            for (size_t k = 0; k < i; k++)
                if (absent[k] && g->members[k].lock == gm->lock) done = 1;
            if (done) continue;
            uint32_t need = 0;
            for (size_t k = i; k < cnt; k++)
                if (absent[k] && g->members[k].lock == gm->lock) need++;
            int64_t retry;
            int r = prs__keyed_room_locked(gm->m.obj, gm->h, need, now, g->excl + gm->excl_first,
                                           gm->excl_count, consume, &retry);
            if (r == PRS_EFULL) {
                for (size_t k = i; k < cnt; k++)
                    if (absent[k] && g->members[k].lock == gm->lock) full[k] = retry;
            } else if (r) {
                rc = r;
                goto unlock;
            }
        }
        /* A table reconfigured since the group was made may hold larger states
         * (prs_keyed_reconfigure): lay the scratch out for today's sizes, which
         * cannot change while we hold the tables' shard locks. */
        size_t soff[PRS_GROUP_MAX_MEMBERS], sneed = 0;
        for (size_t i = 0; i < cnt; i++) {
            gmember *gm = &g->members[i];
            if (gm->m.kind != KIND_KEYED || gm->first != i) continue;
            soff[i] = sneed;
            sneed += (prs__keyed_state_size(gm->m.obj) + 15) & ~(size_t)15;
        }
        if (sneed > (scratch == stack_scratch ? (size_t)STACK_SCRATCH : g->scratch_bytes)) {
            unsigned char *bigger = prs__malloc(&g->alloc, sneed); /* rare: under the locks */
            if (!bigger) {
                rc = PRS_ENOMEM;
                goto unlock;
            }
            if (scratch != stack_scratch) prs__free(&g->alloc, scratch);
            scratch = bigger;
        }
        for (size_t i = 0; i < cnt; i++) {
            gmember *gm = &g->members[i];
            if (gm->m.kind != KIND_KEYED || gm->first != i) continue;
            if (absent[i]) {
                state[i] = scratch + soff[i];
                gm->m.algo->state_init(gm->m.params, state[i]);
                if (consume && full[i] == -1) {
                    rc = prs__keyed_key_block(gm->m.obj, gm->m.key, gm->m.key_len, &block[i]);
                    if (rc) goto unlock;
                }
            } else { /* a reservation may have moved it */
                state[i] = prs__keyed_find_locked(gm->m.obj, gm->h, gm->m.key, gm->m.key_len);
            }
        }
    }
    for (size_t i = 0; i < cnt; i++) {
        gmember *gm = &g->members[i];
        if (gm->m.kind == KIND_KEYED && gm->first != i) {
            state[i] = state[gm->first];
            full[i] = full[gm->first];
        }
    }

    /* 3. decide each distinct member, in the caller's order */
    int all = 1, first_denied = -1;
    for (size_t i = 0; i < cnt; i++) took[i] = 0;
    for (size_t i = 0; i < cnt; i++) {
        gmember *gm = &g->members[i];
        if (gm->first != i) continue;
        const prs_algo *al = gm->m.algo;
        int64_t demand = prs__sat_mul(n, (int64_t)gm->mult);
        int take = all && consume && full[i] == -1;
        if (take && state_size_of(gm) <= SNAP) memcpy(snap[i], state[i], state_size_of(gm));
        rc = al->decide(gm->m.params, state[i], now, demand, take | bare, &dec[i]);
        if (rc) { /* cannot happen with validated members; undo what was taken */
            roll_back(g, state, snap, took, i, now, n);
            goto unlock;
        }
        took[i] = (unsigned char)(take && dec[i].allowed);
        if (full[i] != -1 && dec[i].allowed) { /* its table has no room for it */
            dec[i].allowed = 0;
            dec[i].remaining = 0;
            dec[i].retry_after_ns = full[i];
        }
        if (!dec[i].allowed && all) {
            all = 0;
            first_denied = (int)i;
            if (consume) { /* give back, then report what is really left */
                roll_back(g, state, snap, took, i, now, n);
                for (size_t j = 0; !bare && j < i; j++) {
                    const gmember *o = &g->members[j];
                    if (o->first != j || full[j] != -1) continue;
                    rc = o->m.algo->decide(o->m.params, state[j], now,
                                           prs__sat_mul(n, (int64_t)o->mult), 0, &dec[j]);
                    if (rc) goto unlock;
                }
            }
        }
    }
    if (bare) out->allowed = all;
    else report(g, dec, all, first_denied, out, info);

    /* 4. commit the new keys */
    if (all && consume) {
        for (size_t i = 0; i < cnt; i++) {
            gmember *gm = &g->members[i];
            if (!absent[i]) continue;
            prs__keyed_insert_locked(gm->m.obj, gm->h, gm->m.key, gm->m.key_len, block[i], state[i]);
            block[i] = NULL;
        }
    }

unlock:
    if (consume && rc == PRS_OK) {
        _Atomic uint64_t *c = out->allowed ? &g->admitted : &g->rejected;
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
    unlock_all(g, tat);
    for (size_t i = 0; i < cnt; i++)
        if (block[i]) prs__keyed_free_block(g->members[i].m.obj, block[i]);
    if (scratch != stack_scratch) prs__free(&g->alloc, scratch);
    return rc;
}

int prs_group_decide(prs_group *g, int64_t now, int64_t n, int consume, prs_decision *out,
                     prs_group_info *info) {
    return decide(g, now, n, consume != 0, out, info);
}

int prs_group_allow(prs_group *g, int64_t now_ns, int64_t n) {
    prs_decision d;
    int rc = decide(g, now_ns, n, 1 | PRS__DECIDE_BARE, &d, NULL);
    return rc ? rc : d.allowed;
}

uint64_t prs_group_admitted(const prs_group *g) {
    return g ? atomic_load_explicit(&g->admitted, memory_order_relaxed) : 0;
}

uint64_t prs_group_rejected(const prs_group *g) {
    return g ? atomic_load_explicit(&g->rejected, memory_order_relaxed) : 0;
}

static int decide_by(prs_group *g, int64_t now, int64_t n, int consume, prs_decision *d,
                     int *denied_by) {
    prs_group_info info;
    int rc = prs_group_decide(g, now, n, consume, d, &info);
    if (rc == PRS_OK && denied_by) *denied_by = info.denied_by;
    return rc;
}

int prs_group_check(prs_group *g, int64_t now_ns, int64_t n, prs_decision *d, int *denied_by) {
    return decide_by(g, now_ns, n, 1, d, denied_by);
}

int prs_group_peek(prs_group *g, int64_t now_ns, int64_t n, prs_decision *d, int *denied_by) {
    return decide_by(g, now_ns, n, 0, d, denied_by);
}

void prs_group_reset(prs_group *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n; i++) {
        gmember *gm = &g->members[i];
        if (gm->m.kind == KIND_LIMITER) prs_limiter_reset(gm->m.obj);
        else prs_keyed_reset_key(gm->m.obj, gm->m.key, gm->m.key_len);
    }
}

double prs_group_available(prs_group *g, int64_t now_ns) {
    if (!g) return 0.0;
    double best = 0.0;
    for (size_t i = 0; i < g->n; i++) {
        gmember *gm = &g->members[i];
        if (gm->first != i) continue; /* counted with its first appearance */
        double a = gm->m.kind == KIND_LIMITER
                       ? prs_limiter_available(gm->m.obj, now_ns)
                       : prs_keyed_available(gm->m.obj, gm->m.key, gm->m.key_len, now_ns);
        a /= (double)gm->mult; /* a request takes mult times n from it */
        if (i == 0 || a < best) best = a;
    }
    return best;
}
