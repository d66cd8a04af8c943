/*
 * shm_limiter.c - a limiter placed in a shared-memory region (prs_shm.h):
 * the same descriptors decide, on a state that lives in the region.
 *
 * The region holds a prs__shm_lim block (limiter_internal.h): a pid lock, a
 * `dirty` word, the lock-free word, the params, the state and an undo copy.
 * Each process has its own prs_limiter whose params point into the block and
 * whose `wordp`/`seqp` are the block's, so GCRA's compare-and-swap runs
 * unchanged (and holds no lock: a process killed in it leaves either the old
 * or the new word). A spinlocked algorithm decides under the pid lock, in
 * place, journalled: the bytes the decision may overwrite while they are live
 * (undo_size: the whole state, or a sliding log's 32-byte header, since its
 * new entries go to free slots of the ring) are copied to the undo area, then
 * `dirty` is set, the descriptor decides, `dirty` is cleared. Whoever takes the
 * lock over from a dead holder finds `dirty` set when that holder died inside
 * a decision and copies the undo area back: the state as it was before that
 * decision. (A sliding log restored so may hold, in slots that had expired,
 * the dead decision's time instead: entries that count a little longer, never
 * an admission the limit forbids.)
 *
 * Reconfiguration (prs_limiter_reconfigure on a placed limiter) runs under the
 * same lock with a journal of its own (PRS__J_RECONF): the params' undo copy,
 * the state's (as a decision's; or the word's), then the change; a lock-free limiter's
 * word stays PRS__WORD_LOCKED until the new params and tat are in place, so a
 * holder that dies with the word held is undone (old params, old word), and
 * one that died after storing the new word had finished. The params live in
 * the block only: every process decides on the new ones from its next call,
 * and a process that opens the name compares its config with the params in
 * force (not those the entry was made with): the stored configuration wins.
 * A sliding log keeps its limit in a region (its ring is sized at creation).
 *
 * A lock-free decision that finds the word held (PRS__WORD_LOCKED) or the
 * params odd for long pokes the lock (prs__shm_limiter_poke): a dead holder's
 * lock is taken over and its work undone, so a kill never wedges the word.
 */
#include "limiter_internal.h"
#include "shm_internal.h"

#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#define A16(x) (((x) + 15) & ~(size_t)15)

static unsigned char *shm_params(prs__shm_lim *s) { return (unsigned char *)s + sizeof *s; }
static unsigned char *shm_params_undo(prs__shm_lim *s) { return shm_params(s) + A16(s->params_size); }
static unsigned char *shm_state(prs__shm_lim *s) { return shm_params_undo(s) + A16(s->params_size); }
static unsigned char *shm_undo(prs__shm_lim *s) { return shm_state(s) + A16(s->state_size); }
unsigned char *prs__shm_lim_state(prs__shm_lim *s) { return shm_state(s); }
unsigned char *prs__shm_lim_undo(prs__shm_lim *s) { return shm_undo(s); }

/* The block's bytes: header, params and their undo copy, state and its undo
 * copy (usz: the bytes of the state a decision or a reconfiguration may
 * overwrite while they are live; a sliding log keeps its limit in a region,
 * and a reconfiguration that keeps the limit leaves its ring untouched). */
static size_t block_len(size_t psz, size_t ssz, size_t usz) {
    return sizeof(prs__shm_lim) + 2 * A16(psz) + A16(ssz) + A16(usz);
}

static size_t undo_bytes(const prs_algo *algo, size_t ssz) {
    return algo == &prs_algo_sliding_log && ssz >= prs__sliding_log_undo_bytes
               ? prs__sliding_log_undo_bytes : ssz;
}

typedef struct init_ctx {
    const prs_algo *algo;
    const unsigned char *params;
    size_t psz, ssz, usz;
} init_ctx;

static void block_init(void *ctx, void *block) {
    const init_ctx *c = ctx;
    prs__shm_lim *s = block;
    atomic_init(&s->lock, 0);
    atomic_init(&s->dirty, 0);
    atomic_init(&s->seq, 0);
    s->magic = PRS__SHM_LIM_MAGIC;
    s->params_size = c->psz;
    s->state_size = c->ssz;
    s->undo_size = c->usz;
    s->undo_word = s->redo_word = 0;
    memcpy(shm_params(s), c->params, c->psz);
    if (c->algo->decide_lockfree) {
        int64_t w;
        c->algo->state_init(c->params, &w);
        atomic_init(&s->word, w);
    } else {
        atomic_init(&s->word, 0);
        c->algo->state_init(c->params, shm_state(s));
    }
}

/* The params of `config` as bytes (zeroed first, so equal configs compare equal). */
static int params_of(const prs_algo *algo, const void *config, unsigned char *p,
                     prs_config_error *why) {
    memset(p, 0, PRS_ALGO_MAX_CONFIG);
    int rc = prs_algo_validate(algo, config, why);
    if (rc) return rc;
    algo->params_from_config(config, p, NULL);
    return PRS_OK;
}

int prs_limiter_new_placed(const prs_algo *algo, const void *config,
                           const prs_allocator *allocator, const prs_shm_place *place,
                           prs_limiter **out, prs_config_error *why) {
    if (!place) return prs_limiter_new(algo, config, allocator, out, why);
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!algo) return prs_config_fail(why, PRS_EINVAL, NULL, "no algorithm");
    if (!place->region) return prs_config_fail(why, PRS_EINVAL, NULL, "no region");
    if (prs_shm_name_check(place->name))
        return prs_config_fail(why, PRS_EINVAL, "name",
                               "must be 1..63 bytes without '/', '..' or control characters");
    alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
    int rc = params_of(algo, config, p, why);
    if (rc) return rc;
    int lockfree = algo->decide_lockfree != NULL;
    size_t psz = algo->params_size, ssz = lockfree ? 0 : algo->state_size(p);
    if (ssz > ((size_t)1 << 40)) return PRS_EFULL;
    size_t usz = undo_bytes(algo, ssz);
    size_t len = block_len(psz, ssz, usz);
    const prs_allocator *a = prs__alloc_or_default(allocator);
    /* the process's own object first: nothing is placed when it cannot be made */
    void *mem = prs__malloc(a, sizeof(prs_limiter) + PRS__LINE - 1);
    if (!mem) return PRS_ENOMEM;
    init_ctx ctx = {algo, p, psz, ssz, usz};
    void *blk = NULL;
    int created = 0;
    /* the entry is found by kind; its params in force are compared below */
    rc = prs_shm_entry(place->region, place->name, algo->name, NULL, 0, len, block_init, &ctx,
                       &blk, &created, NULL, NULL);
    prs__shm_lim *s = blk;
    if (rc == PRS_OK && (s->magic != PRS__SHM_LIM_MAGIC || s->params_size != psz ||
                         s->state_size != ssz || s->undo_size != usz))
        rc = PRS_EPROTO; /* the entry's kind matched but its block does not */
    if (rc == PRS_OK && !created) {
        prs__shm_lim_lock(s, place->region);
        if (memcmp(shm_params(s), p, psz) != 0) rc = PRS_ESTATE;
        prs__shm_lim_unlock(s);
    }
    if (rc) {
        prs__free(a, mem);
        if (rc == PRS_ESTATE)
            return prs_config_fail(why, rc, NULL,
                                   "exists in the region with another configuration");
        return rc;
    }
    prs_limiter *lim =
        (prs_limiter *)(((uintptr_t)mem + PRS__LINE - 1) & ~(uintptr_t)(PRS__LINE - 1));
    memset(lim, 0, sizeof *lim);
    lim->block = mem;
    prs__spin_init(&lim->lock);
    atomic_init(&lim->admitted, 0);
    atomic_init(&lim->rejected, 0);
    prs__stripes_init(&lim->counts);
    atomic_init(&lim->seq, 0);
    atomic_init(&lim->word, 0);
    lim->algo = algo;
    lim->alloc = *a;
    lim->params = shm_params(s);
    lim->state = NULL;
    lim->own_state = NULL;
    lim->wordp = &s->word;
    lim->seqp = &s->seq;
    lim->shm = s;
    lim->region = place->region;
    prs__shm_ref(place->region);
    *out = lim;
    return PRS_OK;
}

int prs_limiter_shared(const prs_limiter *lim) { return lim && lim->shm != NULL; }

void prs__shm_limiter_release(prs_limiter *lim) {
    prs_shm *r = lim->region;
    lim->region = NULL;
    lim->shm = NULL;
    prs__shm_unref(r);
}

/* Undoes (or finishes) what a holder of s's lock that died was writing:
 * called with the lock held, `dirty` saying what it was (PRS__J_*). */
static void recover(prs__shm_lim *s, prs_shm *region) {
    uint32_t t = atomic_load_explicit(&s->dirty, memory_order_acquire);
    if (__builtin_expect(t == PRS__J_NONE, 1)) return;
    int lockfree = s->state_size == 0;
    int64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    if (t == PRS__J_DECIDE) {
        memcpy(shm_state(s), shm_undo(s), (size_t)s->undo_size);
    } else if (t == PRS__J_RECONF) {
        if (!lockfree || w == PRS__WORD_LOCKED) { /* unfinished: the old params and state */
            uint64_t v = atomic_load_explicit(&s->seq, memory_order_relaxed);
            if (!(v & 1)) atomic_store_explicit(&s->seq, ++v, memory_order_relaxed);
            atomic_thread_fence(memory_order_release);
            for (size_t i = 0; i < s->params_size; i++)
                __atomic_store_n(shm_params(s) + i, shm_params_undo(s)[i], __ATOMIC_RELAXED);
            atomic_store_explicit(&s->seq, v + 1, memory_order_release);
            if (lockfree) atomic_store_explicit(&s->word, s->undo_word, memory_order_release);
            else memcpy(shm_state(s), shm_undo(s), (size_t)s->undo_size);
        }
    } else if (t >= PRS__J_GROUP) {
        int done = prs__shm_group_committed(region, t - PRS__J_GROUP);
        if (lockfree && w == PRS__WORD_LOCKED)
            atomic_store_explicit(&s->word, done ? s->redo_word : s->undo_word,
                                  memory_order_release);
        else if (!lockfree && !done)
            memcpy(shm_state(s), shm_undo(s), (size_t)s->undo_size);
    }
    atomic_store_explicit(&s->dirty, PRS__J_NONE, memory_order_release);
}

/* Takes the block's lock; a dead holder's unfinished work is undone. */
void prs__shm_lim_lock(prs__shm_lim *s, prs_shm *region) {
    prs__pidlock_lock((prs__pidlock *)(void *)&s->lock);
    recover(s, region);
}
void prs__shm_lim_unlock(prs__shm_lim *s) { prs__pidlock_unlock((prs__pidlock *)(void *)&s->lock); }
#define shm_lock(s) prs__shm_lim_lock((s), lim->region)
#define shm_unlock(s) prs__shm_lim_unlock(s)

void prs__shm_limiter_poke(prs_limiter *lim) {
    prs__shm_lim *s = lim->shm;
    if (!prs__pidlock_trylock((prs__pidlock *)(void *)&s->lock, prs__self_pid())) return;
    recover(s, lim->region);
    shm_unlock(s);
}

/* Opens a journalled write of the state (shm_lock held). */
static void journal_begin(prs__shm_lim *s) {
    memcpy(shm_undo(s), shm_state(s), (size_t)s->undo_size);
    atomic_store_explicit(&s->dirty, PRS__J_DECIDE, memory_order_release);
}
static void journal_end(prs__shm_lim *s) { atomic_store_explicit(&s->dirty, 0, memory_order_release); }

int prs__shm_limiter_decide(prs_limiter *lim, int64_t now, int64_t n, int consume,
                            prs_decision *d) {
    prs__shm_lim *s = lim->shm;
    shm_lock(s);
    journal_begin(s);
    int rc = lim->algo->decide(lim->params, shm_state(s), now, n, consume, d);
    journal_end(s);
    shm_unlock(s);
    return rc;
}

void prs__shm_limiter_reset(prs_limiter *lim) {
    prs__shm_lim *s = lim->shm;
    shm_lock(s); /* the word too: a group or a reconfiguration may hold it */
    if (prs__limiter_lockfree(lim)) { /* one store */
        int64_t w;
        lim->algo->state_init(shm_params(s), &w);
        if (w == PRS__WORD_LOCKED) w++;
        atomic_store_explicit(&s->word, w, memory_order_release);
    } else {
        journal_begin(s); /* (a sliding log's state_init writes its header only) */
        lim->algo->state_init(lim->params, shm_state(s));
        journal_end(s);
    }
    shm_unlock(s);
}

double prs__shm_limiter_read(prs_limiter *lim, int64_t now,
                             double (*fn)(const void *params, const void *state, int64_t now)) {
    prs__shm_lim *s = lim->shm;
    if (prs__limiter_lockfree(lim)) {
        alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
        int64_t w = prs__word_load(lim);
        prs__seq_params_load(lim, p);
        return fn(p, &w, now);
    }
    shm_lock(s);
    double r = fn(lim->params, shm_state(s), now);
    shm_unlock(s);
    return r;
}

void prs__shm_limiter_config(const prs_limiter *lim, void *params_out) {
    prs__shm_lim *s = lim->shm;
    shm_lock(s);
    memcpy(params_out, shm_params(s), (size_t)s->params_size);
    shm_unlock(s);
}

int prs__shm_limiter_reconfigure(prs_limiter *lim, const void *np, int64_t now,
                                 prs_config_error *why) {
    prs__shm_lim *s = lim->shm;
    const prs_algo *al = lim->algo;
    int lockfree = prs__limiter_lockfree(lim);
    if (!lockfree && al->state_size(np) != s->state_size)
        return prs_config_fail(why, PRS_ENOTSUP, "limit",
                               "cannot change for a sliding log in shared memory (its ring is "
                               "sized when the entry is made)");
    size_t psz = (size_t)s->params_size;
    shm_lock(s);
    memcpy(shm_params_undo(s), shm_params(s), psz);
    if (lockfree) s->undo_word = atomic_load_explicit(&s->word, memory_order_relaxed);
    else memcpy(shm_undo(s), shm_state(s), (size_t)s->undo_size);
    atomic_store_explicit(&s->dirty, PRS__J_RECONF, memory_order_release);
    if (lockfree) { /* word held (never by another: we hold the lock), params under seq */
        al->reconfigure_lockfree(lim, np, now);
    } else {
        al->rebase(shm_params(s), shm_state(s), np, shm_state(s), now);
        memcpy(shm_params(s), np, psz);
    }
    atomic_store_explicit(&s->dirty, PRS__J_NONE, memory_order_release);
    shm_unlock(s);
    return PRS_OK;
}

/* ---- wording a mismatch ------------------------------------------------------ */

/* Every algorithm's config starts with two 8-byte fields (int64 or double). */
static const struct {
    const char *algo, *f1, *f2;
    char t1, t2; /* 'd' double, 'i' int64 */
} FIELDS[] = {
    {"token_bucket", "capacity", "refill_rate", 'd', 'd'},
    {"gcra", "rate", "burst", 'd', 'i'},
    {"leaky_bucket", "capacity", "leak_rate", 'd', 'd'},
    {"fixed_window", "limit", "window_ns", 'i', 'i'},
    {"sliding_log", "limit", "window_ns", 'i', 'i'},
    {"sliding_counter", "limit", "window_ns", 'i', 'i'},
};

static void field_text(char *out, size_t cap, char t, const unsigned char *at) {
    if (t == 'd') {
        double v;
        memcpy(&v, at, sizeof v);
        snprintf(out, cap, "%.17g", v);
    } else {
        int64_t v;
        memcpy(&v, at, sizeof v);
        snprintf(out, cap, "%lld", (long long)v);
    }
}

/* "<kind>(f1=v1, f2=v2)" for the params p of kind (the algorithm of that name). */
void prs__shm_describe(char *out, size_t cap, const char *kind, const void *p) {
    const prs_algo *al = NULL;
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (strcmp(prs_algorithms[i].algo->name, kind) == 0) al = prs_algorithms[i].algo;
    for (size_t i = 0; al && i < sizeof FIELDS / sizeof *FIELDS; i++) {
        if (strcmp(FIELDS[i].algo, kind) != 0) continue;
        alignas(16) unsigned char cfg[PRS_ALGO_MAX_CONFIG];
        al->config_from_params(p, cfg);
        char a[40], b[40];
        field_text(a, sizeof a, FIELDS[i].t1, cfg);
        field_text(b, sizeof b, FIELDS[i].t2, cfg + 8);
        snprintf(out, cap, "%s(%s=%s, %s=%s)", kind, FIELDS[i].f1, a, FIELDS[i].f2, b);
        return;
    }
    snprintf(out, cap, "%s(...)", kind);
}

/* The params in force of the limiter entry `name` of kind `kind`, into out:
 * 1 when found (a limiter block), else 0. */
static int live_params(prs_shm *r, const char *name, const char *kind, unsigned char *out) {
    void *blk = NULL;
    if (prs_shm_entry(r, name, kind, NULL, 0, 1, NULL, NULL, &blk, NULL, NULL, NULL)) return 0;
    prs__shm_lim *s = blk;
    if (s->magic != PRS__SHM_LIM_MAGIC || s->params_size > PRS_SHM_CONFIG_MAX) return 0;
    memset(out, 0, PRS_SHM_CONFIG_MAX);
    prs__shm_lim_lock(s, r);
    memcpy(out, shm_params(s), (size_t)s->params_size);
    prs__shm_lim_unlock(s);
    return 1;
}

int prs_limiter_placed_mismatch(const prs_algo *algo, const void *config,
                                const prs_shm_place *place, char *buf, size_t cap) {
    if (!algo || !place || !place->region || !buf || cap == 0) return PRS_EINVAL;
    alignas(16) unsigned char p[PRS_ALGO_MAX_CONFIG];
    alignas(16) unsigned char found[PRS_SHM_CONFIG_MAX];
    char kind[PRS_SHM_KIND_MAX + 1];
    if (params_of(algo, config, p, NULL)) return PRS_EINVAL;
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, algo->name, NULL, 0, 1, NULL, NULL, &blk,
                           NULL, kind, found);
    if (rc == PRS_OK) { /* the same algorithm: its params in force */
        snprintf(kind, sizeof kind, "%s", algo->name);
        if (!live_params(place->region, place->name, kind, found) ||
            memcmp(found, p, algo->params_size) == 0)
            return PRS_EINVAL;
    } else if (rc == PRS_ESTATE) { /* another kind: a limiter's params in force, if it is one */
        if (!live_params(place->region, place->name, kind, found)) found[0] = 0xff;
    } else {
        return PRS_EINVAL;
    }
    char have[160], want[160];
    prs__shm_describe(have, sizeof have, kind, found);
    prs__shm_describe(want, sizeof want, algo->name, p);
    snprintf(buf, cap, "exists as %s, asked for %s", have, want);
    return PRS_OK;
}
