/*
 * shm_keyed.c - a keyed table (prs_keyed) placed in a shared-memory region:
 * one state per key for every process that opens the entry, in a table of
 * fixed size (max_keys, set when the entry is made).
 *
 * Layout of the entry's block (no pointer: every process maps it elsewhere):
 *
 *   kt_hdr      magic, sizes, the SipHash seed (random, made by the creator:
 *               every process must hash a key alike), then the params
 *   stripes     nstripes x {pid lock, journal (dirty, slot, count), image}
 *   slots       nbuckets x BUCKET slots of `stride` bytes:
 *                 uint32 h32, uint8 used, uint8 klen, 2 spare, key[KEY_MAX],
 *                 then the algorithm's state
 *
 * Why buckets and not the in-process table's linear probing: a process can
 * die at any instant, and backward-shift deletion moves a whole run of
 * entries. Here a key lives in one bucket (the top bits of its hash) of at
 * most BUCKET slots, so every operation writes exactly one slot (and its
 * stripe's count): decide on a key, insert a key (an empty slot, or a fresh
 * one evicted by overwriting it), forget a key. That one write is journalled:
 * the slot's image and the count go to its stripe's journal, `dirty` is set,
 * the slot is written, `dirty` is cleared; whoever takes a dead holder's
 * stripe lock over finds `dirty` set and copies the image back (shm.c's pid
 * lock; the same protocol as a placed limiter, shm_limiter.c).
 *
 * Bound: bucket b holds at most cap(b) keys, max_keys split evenly over the
 * nbuckets = ceil(max_keys / BUCKET) buckets (the caps add up to max_keys).
 * Eviction is the in-process table's rule at a bucket's scale: a fresh state
 * (algo->is_fresh) is as good as absent and is overwritten when a new key
 * needs room; when every key of the bucket is limited the new key is denied,
 * retry_after being the soonest reset_after of those keys (when it is fresh
 * again). A limited key is never evicted. As in process, a key is stored only
 * when a request consumed something.
 *
 * Keys up to KEY_MAX bytes are kept as they are; a longer key is kept as its
 * 128-bit keyed digest (two SipHash-1-3 under the region's seed): two long
 * keys with the same digest would share a state, which without the seed (the
 * region is the user's, mode 0600) nobody can aim for.
 *
 * Concurrency: a bucket's stripe lock (bucket mod nstripes) is held around
 * the probe of its BUCKET slots and the algorithm's arithmetic. Readings
 * (len, memory) take each stripe in turn.
 *
 * What a placed table does not do: reconfigure (it would rewrite every key
 * at once: PRS_ENOTSUP), or join a group (prs_group_new: PRS_ENOTSUP).
 */
#include "shm_internal.h"

#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#include "prs_keyed.h"

#define KT_MAGIC 0x59454b5350525331ull
#define BUCKET 16
#define KEY_MAX 32
#define SLOT_HDR 40
#define MAX_STRIPES 64
#define A64(x) (((x) + 63) & ~(size_t)63)
#define A8(x) (((x) + 7) & ~(size_t)7)

typedef struct kt_hdr {
    uint64_t magic;
    uint64_t max_keys, nbuckets, nstripes;
    uint64_t stride, state_size, params_size, stripe_size;
    uint64_t stripes_off, slots_off; /* from the block's start */
    uint8_t seed[16];
    unsigned char pad[32];
    /* the params follow (A64) */
} kt_hdr;
_Static_assert(sizeof(kt_hdr) == 128, "two lines");

typedef struct stripe {
    _Atomic int32_t lock;   /* a prs__pidlock */
    _Atomic uint32_t dirty; /* 1 while a slot is written: the image below is its old bytes */
    uint32_t jslot;         /* the slot being written */
    uint32_t jcount;        /* `count` before it */
    uint32_t count;         /* keys held by this stripe's buckets */
    unsigned char pad[44];
    /* the image (stride bytes) follows */
} stripe;
_Static_assert(sizeof(stripe) == 64, "one line");

typedef struct kslot {
    uint32_t h32;
    uint8_t used, klen; /* klen: 0..KEY_MAX, or 0xff: key[0..16) is the digest */
    uint8_t spare[2];
    unsigned char key[KEY_MAX];
} kslot;
_Static_assert(sizeof(kslot) == SLOT_HDR, "slot header");

struct prs__shm_keyed {
    prs_shm *region; /* referenced */
    unsigned char *base;
    kt_hdr *h;
    const prs_algo *algo;
    const void *params; /* in the block */
    prs_allocator alloc;
};

static unsigned char *params_of_block(kt_hdr *h) { return (unsigned char *)h + sizeof *h; }
static stripe *stripe_at(const prs__shm_keyed *k, uint64_t i) {
    return (stripe *)(void *)((unsigned char *)k->h + k->h->stripes_off + i * k->h->stripe_size);
}
static unsigned char *slot_at(const prs__shm_keyed *k, uint64_t i) {
    return (unsigned char *)k->h + k->h->slots_off + i * k->h->stride;
}
static unsigned char *image_of(stripe *s) { return (unsigned char *)s + sizeof *s; }

/* ---- sizing ------------------------------------------------------------------ */

typedef struct kt_geom {
    uint64_t nbuckets, nstripes, stride, stripe_size, stripes_off, slots_off, len;
} kt_geom;

static int geometry(int64_t max_keys, size_t psz, size_t ssz, kt_geom *g) {
    g->nbuckets = ((uint64_t)max_keys + BUCKET - 1) / BUCKET;
    g->nstripes = g->nbuckets < MAX_STRIPES ? g->nbuckets : MAX_STRIPES;
    if (ssz > ((size_t)1 << 32)) return PRS_EFULL;
    g->stride = A8(SLOT_HDR + ssz);
    g->stripe_size = A64(sizeof(stripe) + g->stride);
    g->stripes_off = sizeof(kt_hdr) + A64(psz);
    g->slots_off = g->stripes_off + g->nstripes * g->stripe_size;
    uint64_t slots;
    if (__builtin_mul_overflow(g->nbuckets * BUCKET, g->stride, &slots) ||
        __builtin_add_overflow(g->slots_off, slots, &g->len))
        return PRS_EFULL;
    return PRS_OK;
}

/* The keys bucket b may hold (max_keys split evenly over the buckets). */
static uint32_t cap_of(const kt_hdr *h, uint64_t b) {
    return (uint32_t)(h->max_keys / h->nbuckets + (b < h->max_keys % h->nbuckets));
}

/* ---- making and opening ---------------------------------------------------------- */

typedef struct init_ctx {
    const prs_algo *algo;
    const unsigned char *params;
    int64_t max_keys;
    size_t psz, ssz;
    kt_geom g;
} init_ctx;

static void block_init(void *ctx, void *block) {
    const init_ctx *c = ctx;
    kt_hdr *h = block; /* (zeroed by prs_shm_entry: every slot empty, every lock free) */
    h->max_keys = (uint64_t)c->max_keys;
    h->nbuckets = c->g.nbuckets;
    h->nstripes = c->g.nstripes;
    h->stride = c->g.stride;
    h->state_size = c->ssz;
    h->params_size = c->psz;
    h->stripe_size = c->g.stripe_size;
    h->stripes_off = c->g.stripes_off;
    h->slots_off = c->g.slots_off;
    prs__keyed_random(h->seed, sizeof h->seed);
    memcpy(params_of_block(h), c->params, c->psz);
    h->magic = KT_MAGIC;
}

int prs__shm_keyed_open(const prs_keyed_config *cfg, const prs_shm_place *place,
                        prs__shm_keyed **out, prs_config_error *why) {
    *out = NULL;
    const prs_algo *al = cfg->algo;
    if (!place->region) return prs_config_fail(why, PRS_EINVAL, NULL, "no region");
    if (prs_shm_name_check(place->name))
        return prs_config_fail(why, PRS_EINVAL, "name",
                               "must be 1..63 bytes without '/', '..' or control characters");
    if (!al->params_size || al->params_size > PRS_ALGO_MAX_CONFIG)
        return prs_config_fail(why, PRS_ENOTSUP, NULL, "an algorithm outside the table");
    /* the params as a config makes them (zeroed first: equal configs compare equal) */
    alignas(16) unsigned char c[PRS_ALGO_MAX_CONFIG], p[PRS_ALGO_MAX_CONFIG];
    memset(p, 0, sizeof p);
    al->config_from_params(cfg->params, c);
    int rc = al->params_from_config(c, p, why);
    if (rc) return rc;
    char kind[PRS_SHM_KIND_MAX + 1];
    snprintf(kind, sizeof kind, "keyed.%s", al->name);
    /* the entry is found by kind; its params and max_keys must match, below */
    init_ctx ctx = {al, p, cfg->max_keys, al->params_size, al->state_size(p), {0}};
    if ((rc = geometry(cfg->max_keys, ctx.psz, ctx.ssz, &ctx.g))) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs__shm_keyed *k = prs__calloc(a, 1, sizeof *k);
    if (!k) return PRS_ENOMEM;
    void *blk = NULL;
    int created = 0;
    rc = prs_shm_entry(place->region, place->name, kind, NULL, 0, (size_t)ctx.g.len, block_init,
                       &ctx, &blk, &created, NULL, NULL);
    if (rc == PRS_EPROTO && prs_shm_entry(place->region, place->name, kind, NULL, 0,
                                          sizeof(kt_hdr), NULL, NULL, &blk, NULL, NULL,
                                          NULL) == PRS_OK &&
        ((kt_hdr *)blk)->magic == KT_MAGIC && ((kt_hdr *)blk)->max_keys != (uint64_t)cfg->max_keys)
        rc = PRS_ESTATE; /* a smaller table than asked for: another max_keys */
    kt_hdr *h = blk;
    if (rc == PRS_OK &&
        (h->magic != KT_MAGIC || h->params_size != ctx.psz || h->state_size != ctx.ssz ||
         h->stride != ctx.g.stride || h->nbuckets != ctx.g.nbuckets ||
         h->nstripes != ctx.g.nstripes || h->stripes_off != ctx.g.stripes_off ||
         h->slots_off != ctx.g.slots_off || h->stripe_size != ctx.g.stripe_size))
        rc = h->magic == KT_MAGIC && h->max_keys != (uint64_t)cfg->max_keys ? PRS_ESTATE
                                                                             : PRS_EPROTO;
    if (rc == PRS_OK && (h->max_keys != (uint64_t)cfg->max_keys ||
                         memcmp(params_of_block(h), p, ctx.psz) != 0))
        rc = PRS_ESTATE;
    if (rc) {
        prs__free(a, k);
        if (rc == PRS_ESTATE)
            return prs_config_fail(why, rc, NULL,
                                   "exists in the region with another configuration");
        return rc;
    }
    k->region = place->region;
    k->base = prs__shm_base(place->region);
    k->h = h;
    k->algo = al;
    k->params = params_of_block(h);
    k->alloc = *a;
    prs__shm_ref(place->region);
    *out = k;
    return PRS_OK;
}

void prs__shm_keyed_free(prs__shm_keyed *k) {
    if (!k) return;
    prs_allocator a = k->alloc;
    prs__shm_unref(k->region);
    prs__free(&a, k);
}

int prs_keyed_placed_mismatch(const prs_keyed_config *cfg, const prs_shm_place *place,
                              char *buf, size_t cap) {
    if (!cfg || !cfg->algo || !cfg->params || !place || !place->region || !buf || !cap)
        return PRS_EINVAL;
    const prs_algo *al = cfg->algo;
    char kind[PRS_SHM_KIND_MAX + 1], found[PRS_SHM_KIND_MAX + 1];
    snprintf(kind, sizeof kind, "keyed.%s", al->name);
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, kind, NULL, 0, 1, NULL, NULL, &blk, NULL,
                           found, NULL);
    if (rc == PRS_ESTATE) {
        snprintf(buf, cap, "exists as %s, asked for %s", found, kind);
        return PRS_OK;
    }
    kt_hdr *h = blk;
    if (rc || h->magic != KT_MAGIC || h->params_size != al->params_size) return PRS_EINVAL;
    char have[160], want[160];
    prs__shm_describe(have, sizeof have, al->name, params_of_block(h));
    prs__shm_describe(want, sizeof want, al->name, cfg->params);
    snprintf(buf, cap, "exists as keyed %s with max_keys=%llu, asked for keyed %s with "
             "max_keys=%lld", have, (unsigned long long)h->max_keys, want,
             (long long)cfg->max_keys);
    return PRS_OK;
}

/* ---- locking and the journal --------------------------------------------------------- */

static void stripe_lock(prs__shm_keyed *k, stripe *s) {
    prs__pidlock_lock((prs__pidlock *)(void *)&s->lock);
    if (__builtin_expect(atomic_load_explicit(&s->dirty, memory_order_acquire) != 0, 0)) {
        /* a holder died writing slot jslot: put it back as it was */
        if (s->jslot < k->h->nbuckets * BUCKET)
            memcpy(slot_at(k, s->jslot), image_of(s), (size_t)k->h->stride);
        s->count = s->jcount;
        atomic_store_explicit(&s->dirty, 0, memory_order_release);
    }
}
static void stripe_unlock(stripe *s) { prs__pidlock_unlock((prs__pidlock *)(void *)&s->lock); }

static void journal_begin(prs__shm_keyed *k, stripe *s, uint64_t i) {
    memcpy(image_of(s), slot_at(k, i), (size_t)k->h->stride);
    s->jslot = (uint32_t)i;
    s->jcount = s->count;
    atomic_store_explicit(&s->dirty, 1, memory_order_release);
}
static void journal_end(stripe *s) { atomic_store_explicit(&s->dirty, 0, memory_order_release); }

/* ---- keys ------------------------------------------------------------------------------- */

typedef struct kkey {
    uint64_t bucket;
    uint32_t h32;
    uint8_t klen;
    unsigned char key[KEY_MAX];
} kkey;

static void key_of(const prs__shm_keyed *k, const void *key, size_t len, kkey *out) {
    uint64_t h = prs_siphash(k->h->seed, key, len, 1, 3);
    out->h32 = (uint32_t)h;
    out->bucket = ((h >> 32) * k->h->nbuckets) >> 32;
    memset(out->key, 0, sizeof out->key);
    if (len <= KEY_MAX) {
        out->klen = (uint8_t)len;
        if (len) memcpy(out->key, key, len);
    } else { /* the digest: h, and a second SipHash under the seed turned around */
        uint8_t seed2[16];
        for (int i = 0; i < 16; i++) seed2[i] = (uint8_t)(k->h->seed[15 - i] ^ 0x5a);
        uint64_t h2 = prs_siphash(seed2, key, len, 1, 3);
        out->klen = 0xff;
        memcpy(out->key, &h, 8);
        memcpy(out->key + 8, &h2, 8);
    }
}

/* The slot of key in its bucket, or -1 (stripe lock held). */
static int64_t find(const prs__shm_keyed *k, const kkey *kk) {
    uint64_t first = kk->bucket * BUCKET;
    uint32_t cap = cap_of(k->h, kk->bucket);
    for (uint32_t j = 0; j < cap; j++) {
        const kslot *s = (const kslot *)(void *)slot_at(k, first + j);
        if (s->used && s->h32 == kk->h32 && s->klen == kk->klen &&
            memcmp(s->key, kk->key, kk->klen == 0xff ? 16 : kk->klen) == 0)
            return (int64_t)(first + j);
    }
    return -1;
}

static unsigned char *state_at(prs__shm_keyed *k, uint64_t i) { return slot_at(k, i) + SLOT_HDR; }

/* Room for a new key in kk's bucket: an empty slot, else a fresh one (the
 * key there is as good as absent), else -1 with *retry = when the soonest
 * held key is fresh again. */
static int64_t room(prs__shm_keyed *k, const kkey *kk, int64_t now, int64_t *retry) {
    uint64_t first = kk->bucket * BUCKET;
    uint32_t cap = cap_of(k->h, kk->bucket);
    int64_t fresh = -1, soonest = PRS_NEVER;
    for (uint32_t j = 0; j < cap; j++) {
        const kslot *s = (const kslot *)(void *)slot_at(k, first + j);
        if (!s->used) return (int64_t)(first + j);
        if (fresh < 0 && k->algo->is_fresh(k->params, state_at(k, first + j), now))
            fresh = (int64_t)(first + j);
    }
    if (fresh >= 0) return fresh;
    for (uint32_t j = 0; j < cap; j++) {
        prs_decision d;
        if (k->algo->decide(k->params, state_at(k, first + j), now, 1, 0, &d) == PRS_OK &&
            d.reset_after_ns < soonest)
            soonest = d.reset_after_ns;
    }
    *retry = soonest;
    return -1;
}

/* Locks the stripe of key's bucket (*s) and looks the key up (*kk): its
 * slot, or -1 when absent. */
static int64_t lock_find(prs__shm_keyed *k, const void *key, size_t len, kkey *kk, stripe **s) {
    key_of(k, key, len, kk);
    *s = stripe_at(k, kk->bucket % k->h->nstripes);
    stripe_lock(k, *s);
    return find(k, kk);
}

/* Room for a fresh state, taken before the lock: `stack` (STACK_STATE
 * bytes) when the state fits it, else allocated; NULL when that fails.
 * scratch_free gives it back. */
#define STACK_STATE 4096
static unsigned char *scratch(prs__shm_keyed *k, unsigned char *stack) {
    size_t ssz = (size_t)k->h->state_size;
    return ssz <= STACK_STATE ? stack : prs__malloc(&k->alloc, ssz);
}
static void scratch_free(prs__shm_keyed *k, unsigned char *p, const unsigned char *stack) {
    if (p != stack) prs__free(&k->alloc, p);
}

int prs__shm_keyed_decide(prs__shm_keyed *k, const void *key, size_t len, int64_t now,
                          int64_t n, int consume, prs_decision *d) {
    size_t ssz = (size_t)k->h->state_size;
    alignas(16) unsigned char stack_state[STACK_STATE];
    unsigned char *fresh = scratch(k, stack_state);
    if (!fresh) return PRS_ENOMEM;
    int rc;
    kkey kk;
    stripe *s;
    int64_t i = lock_find(k, key, len, &kk, &s);
    if (i >= 0) { /* a held key: journalled in place */
        if (consume) journal_begin(k, s, (uint64_t)i);
        rc = k->algo->decide(k->params, state_at(k, (uint64_t)i), now, n, consume, d);
        if (consume) journal_end(s);
        goto out;
    }
    /* absent: decide on a fresh state; store it only when it consumed */
    k->algo->state_init(k->params, fresh);
    rc = k->algo->decide(k->params, fresh, now, n, consume, d);
    if (rc || !consume || !d->allowed) goto out;
    int64_t retry = 0;
    int64_t at = room(k, &kk, now, &retry);
    if (at < 0) { /* every key of the bucket is limited */
        d->allowed = 0;
        d->remaining = 0;
        d->retry_after_ns = retry;
        goto out;
    }
    kslot *sl = (kslot *)(void *)slot_at(k, (uint64_t)at);
    journal_begin(k, s, (uint64_t)at);
    if (!sl->used) s->count++;
    sl->h32 = kk.h32;
    sl->klen = kk.klen;
    memcpy(sl->key, kk.key, sizeof sl->key);
    memcpy(state_at(k, (uint64_t)at), fresh, ssz);
    sl->used = 1;
    journal_end(s);
out:
    stripe_unlock(s);
    scratch_free(k, fresh, stack_state);
    return rc;
}

/* Forgets slot i (stripe lock held): one journalled write. */
static void forget(prs__shm_keyed *k, stripe *s, uint64_t i) {
    journal_begin(k, s, i);
    ((kslot *)(void *)slot_at(k, i))->used = 0;
    s->count--;
    journal_end(s);
}

int prs__shm_keyed_reset_key(prs__shm_keyed *k, const void *key, size_t len) {
    kkey kk;
    stripe *s;
    int64_t i = lock_find(k, key, len, &kk, &s);
    if (i >= 0) forget(k, s, (uint64_t)i);
    stripe_unlock(s);
    return i >= 0;
}

/* Forgets every key of stripe si for which keep(...) is 0; how many. */
static int64_t sweep(prs__shm_keyed *k, uint64_t si, int64_t now, int all) {
    stripe *s = stripe_at(k, si);
    int64_t removed = 0;
    stripe_lock(k, s);
    for (uint64_t b = si; b < k->h->nbuckets; b += k->h->nstripes) {
        uint32_t cap = cap_of(k->h, b);
        for (uint32_t j = 0; j < cap; j++) {
            uint64_t i = b * BUCKET + j;
            if (!((kslot *)(void *)slot_at(k, i))->used) continue;
            if (!all && !k->algo->is_fresh(k->params, state_at(k, i), now)) continue;
            forget(k, s, i);
            removed++;
        }
    }
    stripe_unlock(s);
    return removed;
}

void prs__shm_keyed_reset_all(prs__shm_keyed *k) {
    for (uint64_t si = 0; si < k->h->nstripes; si++) sweep(k, si, 0, 1);
}

int64_t prs__shm_keyed_prune(prs__shm_keyed *k, int64_t now) {
    int64_t removed = 0;
    for (uint64_t si = 0; si < k->h->nstripes; si++) removed += sweep(k, si, now, 0);
    return removed;
}

int prs__shm_keyed_contains(prs__shm_keyed *k, const void *key, size_t len, int64_t now) {
    kkey kk;
    stripe *s;
    int64_t i = lock_find(k, key, len, &kk, &s);
    int r = i >= 0 && !k->algo->is_fresh(k->params, state_at(k, (uint64_t)i), now);
    stripe_unlock(s);
    return r;
}

double prs__shm_keyed_available(prs__shm_keyed *k, const void *key, size_t len, int64_t now) {
    alignas(16) unsigned char stack_state[STACK_STATE];
    unsigned char *fresh = scratch(k, stack_state);
    if (!fresh) return 0.0;
    kkey kk;
    stripe *s;
    int64_t i = lock_find(k, key, len, &kk, &s);
    double r;
    if (i >= 0) {
        r = k->algo->available(k->params, state_at(k, (uint64_t)i), now);
    } else {
        k->algo->state_init(k->params, fresh);
        r = k->algo->available(k->params, fresh, now);
    }
    stripe_unlock(s);
    scratch_free(k, fresh, stack_state);
    return r;
}

int64_t prs__shm_keyed_len(prs__shm_keyed *k) {
    int64_t total = 0;
    for (uint64_t si = 0; si < k->h->nstripes; si++) {
        stripe *s = stripe_at(k, si);
        stripe_lock(k, s);
        total += s->count;
        stripe_unlock(s);
    }
    return total;
}

size_t prs__shm_keyed_memory(const prs__shm_keyed *k) {
    return (size_t)(k->h->slots_off + k->h->nbuckets * BUCKET * k->h->stride);
}

int64_t prs__shm_keyed_max_keys(const prs__shm_keyed *k) { return (int64_t)k->h->max_keys; }
const void *prs__shm_keyed_params(const prs__shm_keyed *k) { return k->params; }
