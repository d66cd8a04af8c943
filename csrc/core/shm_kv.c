/*
 * shm_kv.c - a bounded key/value area in a shared-memory region
 * (prs_shm_kv.h): the idempotency records that worker processes share.
 *
 * Layout of the area (one entry of the region, kind "idem_kv", its config
 * {max_keys, max_key_bytes, max_value_bytes} checked by every opener):
 *   kv_head                    the lock, the wake-up word, counts, the journal
 *   uint64_t index[slots]      open addressing, linear probing; slots is the
 *                              power of two >= 4 x max_keys; an entry is
 *                              0 (empty), TOMB (deleted) or
 *                              (hash >> 32) << 32 | (record + 1)
 *   uint32_t freel[max_keys]   the stack of free records, freel[0..free_top)
 *   records[max_keys]          kv_rec, the key (max_key_bytes), the value
 *                              (max_value_bytes): rec_size bytes each
 * A record's room is fixed: the area never allocates, never fragments, and
 * its size is known when the region is sized (prs_shm_kv_bytes).
 *
 * Invariants (prs_shm_kv_check tests them): a record is free exactly when it
 * is on the free stack; every record in use has exactly one index entry, in
 * its probe sequence before any empty slot; `tombs` counts the TOMB entries.
 *
 * Concurrency: one pid lock (shm_internal.h) per area guards everything but
 * `seq` and `waiters` (atomics for the futex wake-up). Lookups hold it too:
 * a hit is a lock, a probe, a copy of the value, an unlock (the lock word is
 * the only shared write of a hit).
 *
 * Crash safety - an undo journal. Each step that changes the area is a
 * transaction: before any byte of the shared state (a record's header and
 * key, an index entry, the free stack, a count) is overwritten, its old
 * bytes are appended to the journal in the head and the journal's count is
 * stored; the step ends by storing count 0. A process killed in the middle
 * leaves its pid in the lock and a non-empty journal: the next process
 * takes the lock over (the holder is dead) and rolls the journal back, in
 * reverse order, before anything else (a rollback killed in turn is simply
 * rolled back again: it only rewrites old bytes). A value's bytes are not
 * journaled: they are written while the record is still in progress (nobody
 * reads them), and the header that makes them visible is. A rebuild of the
 * index (when deletions have left too many TOMB entries) is not journaled
 * either: the index is derived from the records, and a `rebuilding` flag
 * makes the next holder redo a rebuild that was cut short.
 * Only the order of this process's own stores matters for that (a kill
 * stops a thread between two instructions; what it stored stays in the
 * shared mapping), so compiler barriers separate the journal from the
 * writes it covers.
 */
#include "shm_internal.h"
#include "prs_keyed.h"
#include "prs_retry.h"
#include "prs_shm_kv.h"

#include <errno.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#define KIND "idem_kv"
#define TOMB UINT64_MAX
#define J_BYTES 8192
#define J_ENTRIES 64
#define TOMB_WALK 16 /* TOMB entries turned back to empty by one deletion, at most */

enum { R_FREE = 0, R_BUSY = 1, R_DONE = 2 };

typedef struct kv_head {
    prs__pidlock lock;
    _Atomic uint32_t seq;      /* bumped when a record completes or goes: the futex word */
    _Atomic uint32_t waiters;  /* processes in prs_shm_kv_wait (a dead one: a spare wake) */
    uint32_t max_keys, key_max, value_max, slots, rec_size;
    uint32_t free_top;         /* records free: freel[0..free_top) (journaled) */
    uint32_t tombs;            /* TOMB index entries (journaled) */
    _Atomic uint32_t rebuilding; /* 1 while the index is rebuilt (redo it when found set) */
    uint8_t seed[16];          /* the area's SipHash key (random, made at creation) */
    _Atomic uint32_t jcount;   /* journal entries of the open step; 0: none */
    uint32_t reserved;
    _Alignas(8) unsigned char journal[J_BYTES];
} kv_head;

typedef struct kv_rec {
    uint32_t state;      /* R_* */
    uint32_t key_len;
    uint64_t hash;
    int64_t expires_ns;  /* BUSY: the lease's end; DONE: the retention's */
    int64_t stamp_ns;    /* when it was completed (the oldest completed goes first) */
    uint32_t value_len;
    uint8_t fp_len, tok_len;
    uint16_t reserved;
    unsigned char token[PRS_SHM_KV_TOKEN_MAX];
    unsigned char fp[PRS_SHM_KV_FP_MAX];
    /* then key_max bytes of key, then value_max bytes of value */
} kv_rec;

struct prs_shm_kv {
    prs_shm *region;
    unsigned char *base; /* the area */
    size_t length;
    kv_head *h;
    uint64_t *index;
    uint32_t *freel;
    unsigned char *recs;
    /* this process's copies of the geometry (never re-read from shared memory) */
    uint32_t max_keys, key_max, value_max, slots, rec_size, key_off, value_off;
    prs_allocator alloc;
};

/* A crash point for the C suite's kill sweep: when > 0, the process exits
 * at the crash_at-th journal write or commit from now. */
int prs__shm_kv_crash_at;

#define BARRIER() atomic_signal_fence(memory_order_seq_cst)

static size_t align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

/* ---- geometry ------------------------------------------------------------- */

void prs_shm_kv_config_init(prs_shm_kv_config *cfg) {
    cfg->max_keys = 1024;
    cfg->max_key_bytes = 256;
    cfg->max_value_bytes = 4096;
}

int prs_shm_kv_config_check(const prs_shm_kv_config *cfg) {
    if (!cfg || cfg->max_keys < 1 || cfg->max_keys > PRS_SHM_KV_MAX_KEYS ||
        cfg->max_key_bytes < 1 || cfg->max_key_bytes > PRS_SHM_KV_KEY_MAX ||
        cfg->max_value_bytes < 1 || cfg->max_value_bytes > PRS_SHM_KV_VALUE_MAX)
        return PRS_EINVAL;
    return PRS_OK;
}

typedef struct geometry {
    uint32_t slots, rec_size, key_off, value_off;
    size_t index_off, free_off, recs_off, total;
} geometry;

static int geometry_of(const prs_shm_kv_config *cfg, geometry *g) {
    if (prs_shm_kv_config_check(cfg)) return PRS_EINVAL;
    uint64_t slots = 8;
    while (slots < (uint64_t)cfg->max_keys * 4) slots <<= 1;
    g->slots = (uint32_t)slots;
    g->key_off = (uint32_t)sizeof(kv_rec);
    g->value_off = (uint32_t)align_up(sizeof(kv_rec) + cfg->max_key_bytes, 8);
    uint64_t rs = align_up((size_t)g->value_off + cfg->max_value_bytes, 64);
    if (rs > UINT32_MAX) return PRS_EINVAL;
    g->rec_size = (uint32_t)rs;
    g->index_off = align_up(sizeof(kv_head), 64);
    g->free_off = align_up(g->index_off + slots * sizeof(uint64_t), 64);
    g->recs_off = align_up(g->free_off + (size_t)cfg->max_keys * sizeof(uint32_t), 64);
    uint64_t total = (uint64_t)g->recs_off + (uint64_t)cfg->max_keys * g->rec_size;
    if (total > PRS_SHM_MAX_SIZE) return PRS_EINVAL;
    g->total = (size_t)total;
    return PRS_OK;
}

size_t prs_shm_kv_bytes(const prs_shm_kv_config *cfg) {
    geometry g;
    return geometry_of(cfg, &g) ? 0 : g.total;
}

#define REC(kv, r) ((kv_rec *)((kv)->recs + (size_t)(r) * (kv)->rec_size))
#define KEY(kv, rec) ((unsigned char *)(rec) + (kv)->key_off)
#define VALUE(kv, rec) ((unsigned char *)(rec) + (kv)->value_off)

/* ---- the journal ------------------------------------------------------------ */

typedef struct tx {
    prs_shm_kv *kv;
    uint32_t n;
    size_t pos;
} tx;

typedef struct jentry {
    uint32_t off, len;
} jentry;

static void crash_point(void) {
    if (prs__shm_kv_crash_at > 0 && --prs__shm_kv_crash_at == 0) _exit(77);
}

static void tx_begin(prs_shm_kv *kv, tx *t) {
    t->kv = kv;
    t->n = 0;
    t->pos = 0;
}

/* Saves the len bytes at p (inside the area) before they are overwritten. */
static void jw(tx *t, const void *p, size_t len) {
    crash_point();
    prs_shm_kv *kv = t->kv;
    size_t need = sizeof(jentry) + align_up(len, 8);
    assert(t->n < J_ENTRIES && t->pos + need <= J_BYTES);
    jentry e = {(uint32_t)((const unsigned char *)p - kv->base), (uint32_t)len};
    memcpy(kv->h->journal + t->pos, &e, sizeof e);
    memcpy(kv->h->journal + t->pos + sizeof e, p, len);
    t->pos += need;
    BARRIER();
    atomic_store_explicit(&kv->h->jcount, ++t->n, memory_order_relaxed);
    BARRIER();
}

static void tx_commit(tx *t) {
    crash_point();
    BARRIER();
    atomic_store_explicit(&t->kv->h->jcount, 0, memory_order_release);
}

/* Undoes the step a dead holder left open (the lock is held). */
static void rollback(prs_shm_kv *kv) {
    kv_head *h = kv->h;
    uint32_t n = atomic_load_explicit(&h->jcount, memory_order_acquire);
    size_t at[J_ENTRIES], pos = 0;
    uint32_t k = 0;
    for (; k < n && k < J_ENTRIES; k++) {
        jentry e;
        if (pos + sizeof e > J_BYTES) break;
        memcpy(&e, h->journal + pos, sizeof e);
        if (e.len > J_BYTES || pos + sizeof e + e.len > J_BYTES || e.off > kv->length ||
            e.len > kv->length - e.off)
            break; /* a torn entry can only be the last one, never applied */
        at[k] = pos;
        pos += sizeof e + align_up(e.len, 8);
    }
    while (k-- > 0) {
        jentry e;
        memcpy(&e, h->journal + at[k], sizeof e);
        memcpy(kv->base + e.off, h->journal + at[k] + sizeof e, e.len);
    }
    BARRIER();
    atomic_store_explicit(&h->jcount, 0, memory_order_release);
}

/* ---- the index ------------------------------------------------------------------ */

static void rebuild(prs_shm_kv *kv);

static void kv_lock(prs_shm_kv *kv) {
    prs__pidlock_lock(&kv->h->lock);
    if (__builtin_expect(atomic_load_explicit(&kv->h->jcount, memory_order_acquire) != 0, 0))
        rollback(kv);
    if (__builtin_expect(atomic_load_explicit(&kv->h->rebuilding, memory_order_acquire) != 0, 0))
        rebuild(kv);
}

static void kv_unlock(prs_shm_kv *kv) { prs__pidlock_unlock(&kv->h->lock); }

static uint64_t hash_of(const prs_shm_kv *kv, const void *key, size_t klen) {
    return prs_siphash(kv->h->seed, key, klen, 2, 4);
}

/* The record holding key (and its index slot in *slot), or -1; *ins: the
 * first empty or TOMB slot of its probe sequence (where a new key goes). */
static int64_t find(prs_shm_kv *kv, const void *key, size_t klen, uint64_t hash, uint32_t *slot,
                    uint32_t *ins) {
    uint32_t mask = kv->slots - 1, i = (uint32_t)hash & mask, tag = (uint32_t)(hash >> 32);
    *ins = UINT32_MAX;
    for (uint32_t probe = 0; probe < kv->slots; probe++, i = (i + 1) & mask) {
        uint64_t e = kv->index[i];
        if (e == 0) {
            if (*ins == UINT32_MAX) *ins = i;
            return -1;
        }
        if (e == TOMB) {
            if (*ins == UINT32_MAX) *ins = i;
            continue;
        }
        if ((uint32_t)(e >> 32) != tag) continue;
        uint32_t r = (uint32_t)e - 1;
        if (r >= kv->max_keys) continue; /* corrupt: never followed */
        kv_rec *rec = REC(kv, r);
        if (rec->state != R_FREE && rec->key_len == klen && memcmp(KEY(kv, rec), key, klen) == 0) {
            *slot = i;
            return r;
        }
    }
    return -1;
}

/* Empties index slot i: TOMB, or empty when the next slot is empty (and then
 * the TOMB entries just before it too, up to TOMB_WALK of them). */
static void index_remove(tx *t, uint32_t i) {
    prs_shm_kv *kv = t->kv;
    kv_head *h = kv->h;
    uint32_t mask = kv->slots - 1;
    if (kv->index[(i + 1) & mask] != 0) {
        jw(t, &kv->index[i], 8);
        kv->index[i] = TOMB;
        jw(t, &h->tombs, 4);
        h->tombs++;
        return;
    }
    jw(t, &kv->index[i], 8);
    kv->index[i] = 0;
    uint32_t freed = 0;
    for (uint32_t j = (i - 1) & mask; freed < TOMB_WALK && kv->index[j] == TOMB;
         j = (j - 1) & mask, freed++) {
        jw(t, &kv->index[j], 8);
        kv->index[j] = 0;
    }
    if (freed) {
        jw(t, &h->tombs, 4);
        h->tombs = h->tombs >= freed ? h->tombs - freed : 0;
    }
}

/* Rebuilds the index from the records (not journaled: see the top). */
static void rebuild(prs_shm_kv *kv) {
    kv_head *h = kv->h;
    atomic_store_explicit(&h->rebuilding, 1, memory_order_relaxed);
    BARRIER();
    memset(kv->index, 0, (size_t)kv->slots * sizeof(uint64_t));
    uint32_t mask = kv->slots - 1;
    for (uint32_t r = 0; r < kv->max_keys; r++) {
        kv_rec *rec = REC(kv, r);
        if (rec->state == R_FREE) continue;
        uint32_t i = (uint32_t)rec->hash & mask;
        while (kv->index[i] != 0) i = (i + 1) & mask;
        kv->index[i] = ((rec->hash >> 32) << 32) | (uint64_t)(r + 1);
    }
    h->tombs = 0;
    BARRIER();
    atomic_store_explicit(&h->rebuilding, 0, memory_order_release);
}

static void maybe_rebuild(prs_shm_kv *kv) {
    if (kv->h->tombs > kv->slots / 4) rebuild(kv);
}

/* Frees record r (index slot `slot`): one step. */
static void remove_record(prs_shm_kv *kv, uint32_t r, uint32_t slot) {
    kv_head *h = kv->h;
    tx t;
    tx_begin(kv, &t);
    kv_rec *rec = REC(kv, r);
    jw(&t, &rec->state, 4);
    rec->state = R_FREE;
    index_remove(&t, slot);
    jw(&t, &kv->freel[h->free_top], 4);
    kv->freel[h->free_top] = r;
    jw(&t, &h->free_top, 4);
    h->free_top++;
    tx_commit(&t);
}

static void wake(prs_shm_kv *kv) {
    atomic_fetch_add_explicit(&kv->h->seq, 1, memory_order_release);
#if defined(__linux__)
    if (atomic_load_explicit(&kv->h->waiters, memory_order_acquire))
        syscall(SYS_futex, (uint32_t *)&kv->h->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
}

/* Makes room for one record: an expired record goes, else the oldest
 * completed one. PRS_OK, or PRS_EFULL when every record is a live lease. */
static int evict_one(prs_shm_kv *kv, int64_t now_ns) {
    int64_t victim = -1, oldest = INT64_MAX;
    for (uint32_t r = 0; r < kv->max_keys; r++) {
        kv_rec *rec = REC(kv, r);
        if (rec->state == R_FREE) continue;
        if (rec->expires_ns <= now_ns) {
            victim = r;
            break;
        }
        if (rec->state == R_DONE && rec->stamp_ns < oldest) {
            oldest = rec->stamp_ns;
            victim = r;
        }
    }
    if (victim < 0) return PRS_EFULL;
    kv_rec *rec = REC(kv, victim);
    uint32_t slot, ins;
    if (rec->key_len > kv->key_max || find(kv, KEY(kv, rec), rec->key_len, rec->hash, &slot, &ins) != victim)
        return PRS_EPROTO;
    remove_record(kv, (uint32_t)victim, slot);
    maybe_rebuild(kv);
    return PRS_OK;
}

/* ---- open / free ------------------------------------------------------------------ */

typedef struct init_ctx {
    const prs_shm_kv_config *cfg;
    const geometry *g;
} init_ctx;

static void area_init(void *ctx, void *block) {
    const init_ctx *c = ctx;
    kv_head *h = block;
    h->max_keys = c->cfg->max_keys;
    h->key_max = c->cfg->max_key_bytes;
    h->value_max = c->cfg->max_value_bytes;
    h->slots = c->g->slots;
    h->rec_size = c->g->rec_size;
    h->free_top = c->cfg->max_keys;
    uint64_t s0 = prs_random_seed(), s1 = prs_random_seed();
    memcpy(h->seed, &s0, 8);
    memcpy(h->seed + 8, &s1, 8);
    uint32_t *freel = (uint32_t *)((unsigned char *)block + c->g->free_off);
    for (uint32_t i = 0; i < c->cfg->max_keys; i++) freel[i] = c->cfg->max_keys - 1 - i;
    /* index, records (state R_FREE), counts: zeroed by prs_shm_entry */
}

typedef struct kv_wire { uint32_t max_keys, key_max, value_max; } kv_wire;

int prs_shm_kv_open(prs_shm *region, const char *name, const prs_shm_kv_config *cfg,
                    const prs_allocator *allocator, prs_shm_kv **out, prs_shm_kv_config *found) {
    geometry g;
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!region || !cfg || geometry_of(cfg, &g)) return PRS_EINVAL;
    const prs_allocator *a = prs__alloc_or_default(allocator);
    prs_shm_kv *kv = prs__malloc(a, sizeof *kv);
    if (!kv) return PRS_ENOMEM;
    memset(kv, 0, sizeof *kv);
    kv->alloc = *a;
    kv_wire w = {cfg->max_keys, cfg->max_key_bytes, cfg->max_value_bytes};
    char found_kind[PRS_SHM_KIND_MAX + 1];
    unsigned char found_cfg[PRS_SHM_CONFIG_MAX];
    init_ctx ictx = {cfg, &g};
    void *block = NULL;
    int rc = prs_shm_entry(region, name, KIND, &w, sizeof w, g.total, area_init, &ictx, &block,
                           NULL, found_kind, found_cfg);
    if (rc == PRS_ESTATE && found) {
        memset(found, 0, sizeof *found);
        if (strcmp(found_kind, KIND) == 0) {
            kv_wire f;
            memcpy(&f, found_cfg, sizeof f);
            found->max_keys = f.max_keys;
            found->max_key_bytes = f.key_max;
            found->max_value_bytes = f.value_max;
        }
    }
    if (rc == PRS_OK) {
        kv_head *h = block;
        if (h->max_keys != cfg->max_keys || h->key_max != cfg->max_key_bytes ||
            h->value_max != cfg->max_value_bytes || h->slots != g.slots ||
            h->rec_size != g.rec_size || h->free_top > cfg->max_keys)
            rc = PRS_EPROTO;
    }
    if (rc) {
        prs__free(a, kv);
        return rc;
    }
    prs__shm_ref(region);
    kv->region = region;
    kv->base = block;
    kv->length = g.total;
    kv->h = block;
    kv->index = (uint64_t *)(kv->base + g.index_off);
    kv->freel = (uint32_t *)(kv->base + g.free_off);
    kv->recs = kv->base + g.recs_off;
    kv->max_keys = cfg->max_keys;
    kv->key_max = cfg->max_key_bytes;
    kv->value_max = cfg->max_value_bytes;
    kv->slots = g.slots;
    kv->rec_size = g.rec_size;
    kv->key_off = g.key_off;
    kv->value_off = g.value_off;
    *out = kv;
    return PRS_OK;
}

void prs_shm_kv_free(prs_shm_kv *kv) {
    if (!kv) return;
    prs__shm_unref(kv->region);
    prs__free_self(kv, &kv->alloc);
}

void prs_shm_kv_config_get(const prs_shm_kv *kv, prs_shm_kv_config *cfg) {
    cfg->max_keys = kv->max_keys;
    cfg->max_key_bytes = kv->key_max;
    cfg->max_value_bytes = kv->value_max;
}

/* ---- operations --------------------------------------------------------------------- */

static int args_ok(const prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                   size_t toklen) {
    return kv && key && klen >= 1 && klen <= kv->key_max && token && toklen >= 1 &&
           toklen <= PRS_SHM_KV_TOKEN_MAX;
}

/* A done record's value handed to sink (NULL: its length only), its length
 * in out. PRS_OK, or PRS_ENOMEM when the sink has no room. */
static int give_value(const prs_shm_kv *kv, kv_rec *rec, prs_shm_kv_sink sink, void *ctx,
                      prs_shm_kv_result *out) {
    size_t vlen = rec->value_len <= kv->value_max ? rec->value_len : 0;
    out->value_len = vlen;
    if (!sink) return PRS_OK;
    void *dst = sink(ctx, vlen);
    if (!dst) return PRS_ENOMEM;
    if (vlen) memcpy(dst, VALUE(kv, rec), vlen);
    return PRS_OK;
}

static int owned_by(const kv_rec *rec, const void *token, size_t toklen) {
    return rec->state == R_BUSY && rec->tok_len == toklen &&
           memcmp(rec->token, token, toklen) == 0;
}

static int64_t sat_add(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
    return a + b;
}

/* Writes a fresh in-progress header (and the key when `key`) into rec, journaled. */
static void write_lease(tx *t, kv_rec *rec, const void *key, size_t klen, uint64_t hash,
                        const void *fp, size_t fplen, const void *token, size_t toklen,
                        int64_t expires) {
    prs_shm_kv *kv = t->kv;
    jw(t, rec, key ? kv->key_off + klen : sizeof *rec);
    rec->state = R_BUSY;
    rec->hash = hash;
    rec->expires_ns = expires;
    rec->stamp_ns = 0;
    rec->value_len = 0;
    rec->fp_len = (uint8_t)fplen;
    memset(rec->fp, 0, sizeof rec->fp);
    memcpy(rec->fp, fp, fplen);
    rec->tok_len = (uint8_t)toklen;
    memset(rec->token, 0, sizeof rec->token);
    memcpy(rec->token, token, toklen);
    if (key) {
        rec->key_len = (uint32_t)klen;
        memcpy(KEY(kv, rec), key, klen);
    }
}

int prs_shm_kv_begin(prs_shm_kv *kv, const void *key, size_t klen, const void *fp, size_t fplen,
                     const void *token, size_t toklen, int64_t lease_ns, int64_t now_ns,
                     prs_shm_kv_sink sink, void *ctx, prs_shm_kv_result *out) {
    if (!args_ok(kv, key, klen, token, toklen) || (fplen && !fp) || fplen > PRS_SHM_KV_FP_MAX ||
        lease_ns <= 0 || !out)
        return PRS_EINVAL;
    memset(out, 0, sizeof *out);
    uint64_t hash = hash_of(kv, key, klen);
    int64_t expires = sat_add(now_ns, lease_ns);
    int rc = PRS_OK;
    uint32_t slot, ins;
    kv_lock(kv);
    int64_t r = find(kv, key, klen, hash, &slot, &ins);
    if (r >= 0) {
        kv_rec *rec = REC(kv, r);
        out->fp_match = rec->fp_len == fplen && memcmp(rec->fp, fp, fplen) == 0;
        if (rec->expires_ns > now_ns && rec->state == R_DONE) {
            out->state = PRS_KV_DONE;
            rc = give_value(kv, rec, sink, ctx, out);
            goto done;
        }
        if (rec->expires_ns > now_ns && !owned_by(rec, token, toklen)) {
            out->state = PRS_KV_BUSY;
            goto done;
        }
        /* expired (or this token's own lease): a new lease in place */
        tx t;
        tx_begin(kv, &t);
        write_lease(&t, rec, NULL, 0, hash, fp, fplen, token, toklen, expires);
        tx_commit(&t);
        out->state = PRS_KV_ACQUIRED;
        out->fp_match = 1;
        goto done;
    }
    if (kv->h->free_top == 0) {
        if ((rc = evict_one(kv, now_ns))) goto done;
        find(kv, key, klen, hash, &slot, &ins); /* the index changed: where it goes now */
    }
    if (ins == UINT32_MAX || kv->h->free_top == 0 || kv->h->free_top > kv->max_keys) {
        rc = PRS_EPROTO;
        goto done;
    }
    {
        kv_head *h = kv->h;
        tx t;
        tx_begin(kv, &t);
        uint32_t nr = kv->freel[h->free_top - 1];
        if (nr >= kv->max_keys || REC(kv, nr)->state != R_FREE) {
            tx_commit(&t);
            rc = PRS_EPROTO;
            goto done;
        }
        jw(&t, &h->free_top, 4);
        h->free_top--;
        write_lease(&t, REC(kv, nr), key, klen, hash, fp, fplen, token, toklen, expires);
        int was_tomb = kv->index[ins] == TOMB;
        jw(&t, &kv->index[ins], 8);
        kv->index[ins] = ((hash >> 32) << 32) | (uint64_t)(nr + 1);
        if (was_tomb) {
            jw(&t, &h->tombs, 4);
            h->tombs--;
        }
        tx_commit(&t);
    }
    out->state = PRS_KV_ACQUIRED;
    out->fp_match = 1;
done:
    kv_unlock(kv);
    return rc;
}

/* Takes the lock and finds key's record: its index (and *slot) when token
 * owns its lease (token NULL: any record), else -1. The caller unlocks. */
static int64_t lock_find(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                         size_t toklen, uint32_t *slot) {
    uint64_t hash = hash_of(kv, key, klen);
    uint32_t ins;
    kv_lock(kv);
    int64_t r = find(kv, key, klen, hash, slot, &ins);
    if (r >= 0 && token && !owned_by(REC(kv, r), token, toklen)) r = -1;
    return r;
}

int prs_shm_kv_complete(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                        size_t toklen, const void *value, size_t vlen, int64_t ttl_ns,
                        int64_t now_ns) {
    if (!args_ok(kv, key, klen, token, toklen) || (vlen && !value)) return PRS_EINVAL;
    if (vlen > kv->value_max) return PRS_ERANGE;
    uint32_t slot;
    int64_t r = lock_find(kv, key, klen, token, toklen, &slot);
    if (r >= 0) {
        kv_rec *rec = REC(kv, r);
        crash_point();
        if (vlen) memcpy(VALUE(kv, rec), value, vlen); /* unseen while in progress */
        BARRIER();
        tx t;
        tx_begin(kv, &t);
        jw(&t, rec, sizeof *rec);
        rec->state = R_DONE;
        rec->value_len = (uint32_t)vlen;
        rec->expires_ns = sat_add(now_ns, ttl_ns);
        rec->stamp_ns = now_ns;
        rec->tok_len = 0;
        memset(rec->token, 0, sizeof rec->token);
        tx_commit(&t);
    }
    kv_unlock(kv);
    if (r < 0) return PRS_ESTATE;
    wake(kv);
    return PRS_OK;
}

int prs_shm_kv_renew(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                     size_t toklen, int64_t lease_ns, int64_t now_ns) {
    if (!args_ok(kv, key, klen, token, toklen) || lease_ns <= 0) return PRS_EINVAL;
    uint32_t slot;
    int64_t r = lock_find(kv, key, klen, token, toklen, &slot);
    if (r >= 0) {
        kv_rec *rec = REC(kv, r);
        tx t;
        tx_begin(kv, &t);
        jw(&t, &rec->expires_ns, 8);
        rec->expires_ns = sat_add(now_ns, lease_ns);
        tx_commit(&t);
    }
    kv_unlock(kv);
    return r < 0 ? PRS_ESTATE : PRS_OK;
}

/* Deletes key's record when token owns it (token NULL: whoever does). */
static int remove_key(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                      size_t toklen) {
    uint32_t slot;
    int64_t r = lock_find(kv, key, klen, token, toklen, &slot);
    if (r >= 0) {
        remove_record(kv, (uint32_t)r, slot);
        maybe_rebuild(kv);
    }
    kv_unlock(kv);
    if (r < 0) return PRS_ESTATE;
    wake(kv);
    return PRS_OK;
}

int prs_shm_kv_release(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                       size_t toklen) {
    if (!args_ok(kv, key, klen, token, toklen)) return PRS_EINVAL;
    return remove_key(kv, key, klen, token, toklen);
}

int prs_shm_kv_peek(prs_shm_kv *kv, const void *key, size_t klen, const void *fp, size_t fplen,
                    prs_shm_kv_sink sink, void *ctx, prs_shm_kv_result *out) {
    if (!kv || !key || klen < 1 || klen > kv->key_max || fplen > PRS_SHM_KV_FP_MAX ||
        (fplen && !fp) || !out)
        return PRS_EINVAL;
    memset(out, 0, sizeof *out);
    uint64_t hash = hash_of(kv, key, klen);
    uint32_t slot, ins;
    int rc = PRS_OK;
    kv_lock(kv);
    int64_t r = find(kv, key, klen, hash, &slot, &ins);
    if (r < 0) {
        rc = PRS_ESTATE;
    } else {
        kv_rec *rec = REC(kv, r);
        out->state = rec->state == R_DONE ? PRS_KV_DONE : PRS_KV_BUSY;
        out->fp_match = fp && rec->fp_len == fplen && memcmp(rec->fp, fp, fplen) == 0;
        out->expires_ns = rec->expires_ns;
        if (rec->state == R_DONE) rc = give_value(kv, rec, sink, ctx, out);
    }
    kv_unlock(kv);
    return rc;
}

int prs_shm_kv_delete(prs_shm_kv *kv, const void *key, size_t klen) {
    if (!kv || !key || klen < 1 || klen > kv->key_max) return PRS_EINVAL;
    return remove_key(kv, key, klen, NULL, 0);
}

void prs_shm_kv_clear(prs_shm_kv *kv) {
    if (!kv) return;
    kv_lock(kv);
    for (uint32_t r = 0; r < kv->max_keys; r++) {
        kv_rec *rec = REC(kv, r);
        uint32_t slot, ins;
        if (rec->state == R_FREE || rec->key_len > kv->key_max) continue;
        if (find(kv, KEY(kv, rec), rec->key_len, rec->hash, &slot, &ins) == (int64_t)r)
            remove_record(kv, r, slot);
    }
    rebuild(kv);
    kv_unlock(kv);
    wake(kv);
}

size_t prs_shm_kv_count(prs_shm_kv *kv) {
    if (!kv) return 0;
    kv_lock(kv);
    uint32_t top = kv->h->free_top;
    kv_unlock(kv);
    return top <= kv->max_keys ? kv->max_keys - top : 0;
}

uint32_t prs_shm_kv_seq(const prs_shm_kv *kv) {
    return atomic_load_explicit(&kv->h->seq, memory_order_acquire);
}

void prs_shm_kv_wait(prs_shm_kv *kv, uint32_t seq, int64_t timeout_ns) {
    if (timeout_ns <= 0) return;
#if defined(__linux__)
    struct timespec ts = {(time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000)};
    atomic_fetch_add_explicit(&kv->h->waiters, 1, memory_order_acq_rel);
    if (atomic_load_explicit(&kv->h->seq, memory_order_acquire) == seq)
        syscall(SYS_futex, (uint32_t *)&kv->h->seq, FUTEX_WAIT, seq, &ts, NULL, 0);
    atomic_fetch_sub_explicit(&kv->h->waiters, 1, memory_order_acq_rel);
#else
    if (atomic_load_explicit(&kv->h->seq, memory_order_acquire) == seq)
        prs_sleep_ns(timeout_ns < 2000000 ? timeout_ns : 2000000);
#endif
}

int prs_shm_kv_check(prs_shm_kv *kv) {
    if (!kv) return PRS_EINVAL;
    int rc = PRS_OK;
    kv_lock(kv);
    kv_head *h = kv->h;
    uint32_t used = 0, entries = 0, tombs = 0;
    if (h->free_top > kv->max_keys) rc = PRS_EPROTO;
    for (uint32_t r = 0; rc == PRS_OK && r < kv->max_keys; r++) {
        kv_rec *rec = REC(kv, r);
        if (rec->state == R_FREE) continue;
        used++;
        uint32_t slot, ins;
        if (rec->state > R_DONE || rec->key_len < 1 || rec->key_len > kv->key_max ||
            rec->value_len > kv->value_max || rec->fp_len > PRS_SHM_KV_FP_MAX ||
            rec->tok_len > PRS_SHM_KV_TOKEN_MAX ||
            rec->hash != hash_of(kv, KEY(kv, rec), rec->key_len) ||
            find(kv, KEY(kv, rec), rec->key_len, rec->hash, &slot, &ins) != (int64_t)r)
            rc = PRS_EPROTO;
    }
    if (rc == PRS_OK && used != kv->max_keys - h->free_top) rc = PRS_EPROTO;
    for (uint32_t i = 0; rc == PRS_OK && i < h->free_top; i++) {
        uint32_t r = kv->freel[i];
        if (r >= kv->max_keys || REC(kv, r)->state != R_FREE) rc = PRS_EPROTO;
    }
    for (uint32_t i = 0; rc == PRS_OK && i < kv->slots; i++) {
        uint64_t e = kv->index[i];
        if (e == TOMB) tombs++;
        else if (e != 0) {
            entries++;
            uint32_t r = (uint32_t)e - 1;
            if (r >= kv->max_keys || REC(kv, r)->state == R_FREE ||
                (uint32_t)(REC(kv, r)->hash >> 32) != (uint32_t)(e >> 32))
                rc = PRS_EPROTO;
        }
    }
    if (rc == PRS_OK && (entries != used || tombs != h->tombs)) rc = PRS_EPROTO;
    kv_unlock(kv);
    return rc;
}
