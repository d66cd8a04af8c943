/*
 * keyed.c - a bounded hash table of per-key limiter states.
 *
 * What it is for: "10 requests per second per client" for an unbounded,
 * attacker-chosen population of clients, in bounded memory, at a cost close
 * to one unkeyed check. One algorithm (a prs_algo descriptor) and one params
 * block are shared by every key; each key has only its state.
 *
 * Layout. The table is split into 2^shard_bits shards (1..64) by the top bits
 * of the key's 64-bit SipHash-1-3; each shard is an open-addressing table with
 * linear probing over one array of fixed-size slots:
 *
 *   offset 0   uint32 h32      low 32 bits of the hash: home slot + quick compare
 *          4   uint8  used     0 empty, 1 occupied
 *          5   uint8  klen     0..18: key bytes inline at offset 6; 0xFF: long key,
 *                              a pointer at offset 8 to {size_t len; bytes}
 *          6   key bytes (18)
 *         24   the algorithm's state, state_size rounded up to 8
 *
 * The home slot is fastrange(h32, nslots) = h32 * nslots >> 32, so nslots need
 * not be a power of two and the final size can be exactly 1.25 slots per key.
 * Deletion is backward-shift (no tombstones: heavy churn of evicted keys never
 * lengthens probe chains); the home of a moved entry comes from its stored
 * h32, so no key is ever hashed twice.
 *
 * Bound. Shard i holds at most cap[i] keys (max_keys split evenly; the caps
 * add up to max_keys exactly). Its slot array grows by doubling from 16 slots
 * while count > 0.8 * nslots, up to max_slots = cap + cap/4 + 1, where the
 * load stays <= 0.8 and there is always an empty slot (probes terminate).
 *
 * Eviction. A state that is fresh (prs_algo.is_fresh) is equivalent to an
 * absent key, so it may go at any time. When a new key needs room in a shard
 * at its cap, a clock hand sweeps the shard from where it last stopped and
 * evicts fresh keys. When none is fresh the new key is denied with
 * retry_after = the earliest time any held key becomes fresh (bisection on
 * is_fresh, which is monotone in time: the first key's search starts from its
 * peek's reset_after, an upper bound; each later key costs one is_fresh call
 * unless it frees sooner than the best so far), and the shard remembers that
 * instant (`full_until`) so that a flood of new keys against a shard full of
 * limited keys costs O(1) each, not a scan - through a group too (a group's
 * own keys are never evicted for it, but they count as held keys for the
 * hint). The hint stays true because states only become fresh with time:
 * requests and a group's rollback never make a key fresh sooner, and deleting
 * a key clears it. A limited key's state is never touched by anything but its
 * own requests.
 *
 * Keys are stored only when a request consumed something: peeks, denials and
 * lookups of absent keys decide on a fresh state on the stack.
 *
 * Concurrency: one prs__spinlock per shard (shards padded to a cache line),
 * held around a probe and the algorithm's arithmetic; sweeping and growth
 * (allocation) also happen under it but are rare and amortised. Groups
 * (group.c) take several shard locks at once, in address order, through the
 * *_locked functions at the bottom.
 *
 * Params. The table keeps its own copy of the params (made from the config of
 * the template's params, so it depends on no template), at a fixed address.
 * prs_keyed_reconfigure changes them for every key at once: it takes every
 * shard lock (ascending addresses, the order groups use), re-expresses each
 * held state through the descriptor's rebase at `now`, then writes the new
 * params, state_size and stride, and releases the locks. Every reader of the
 * params, the state size or the stride holds a shard lock (the few reads
 * outside one, to size a scratch buffer, are re-checked under it), so a
 * decision sees the old config whole or the new one whole. When the state
 * size changes (the sliding log's ring is `limit` entries long), every shard's
 * slot array is re-laid at the new stride: all the new arrays are allocated
 * first (under the locks), so a failed allocation changes nothing.
 */
#include "group_internal.h"
#include "prs_internal.h"
#include "prs_keyed.h"
#include "shm_internal.h"

#include <fcntl.h>
#include <stdalign.h>
#include <unistd.h>
#if defined(__linux__) && defined(__has_include)
#if __has_include(<sys/random.h>)
#include <sys/random.h>
#define PRS_HAVE_GETRANDOM 1
#endif
#endif

#define HDR 24
#define INLINE_MAX PRS_KEYED_INLINE_KEY
#define KLEN_LONG 0xFF
#define MAX_SHARD_BITS 6
#define INITIAL_SLOTS 16u
/* States up to this size are decided on the stack when the key is absent. */
#define STACK_STATE 256

typedef struct slot {
    uint32_t h32;
    uint8_t used;
    uint8_t klen;
    uint8_t key[INLINE_MAX];
} slot;
_Static_assert(sizeof(slot) == HDR, "slot header is 24 bytes");

typedef struct keyblock {
    size_t len;
    unsigned char bytes[];
} keyblock;

typedef struct shard {
    prs__spinlock lock;     /* guards everything below */
    uint32_t nslots;        /* 0 (no array yet) or the array's length */
    uint32_t max_slots;     /* cap + cap/4 + 1: nslots never exceeds it */
    uint32_t cap;           /* at most this many keys */
    uint32_t count;         /* keys held, < nslots whenever nslots > 0 */
    uint32_t hand;          /* eviction sweep position, < nslots (or 0) */
    int64_t full_until;     /* INT64_MIN: unknown; else no held key is fresh before it
                               (valid while count == cap and nothing was deleted) */
    size_t long_bytes;      /* bytes in long-key blocks */
    unsigned char *slots;   /* nslots * stride bytes, or NULL */
    /* consuming decisions that admitted / refused (relaxed load and store
     * under `lock`: exact; read with relaxed loads, summed over the shards) */
    _Atomic uint64_t admitted, rejected;
} __attribute__((aligned(64))) shard;

struct prs_keyed {
    const prs_algo *algo;
    const void *params;     /* own_params when the algorithm can be reconfigured, else the
                               caller's; contents change only under every shard lock */
    void *own_params;       /* algo->params_size bytes, or NULL */
    size_t state_size;      /* algo->state_size(params); written under every shard lock */
    size_t stride;          /* HDR + state_size rounded up to 8; likewise */
    uint8_t seed[16];       /* SipHash key */
    int64_t max_keys;
    unsigned shard_bits;    /* 0..MAX_SHARD_BITS */
    shard *shards;          /* 1 << shard_bits, cache-line aligned within shards_mem */
    void *shards_mem;
    prs_allocator alloc;
    struct prs__shm_keyed *shm; /* placed in a region: shm_keyed.c holds every key */
};

/* ---- SipHash ------------------------------------------------------------ *
 * Written from the paper (Aumasson, Bernstein, "SipHash: a fast short-input
 * PRF", 2012): four 64-bit words initialised from the key and the constants
 * "somepseudorandomlygeneratedbytes", message words absorbed little-endian
 * with c SipRounds each, the last word carrying the length in its top byte,
 * then 0xff into v2 and d SipRounds. */

static inline uint64_t rotl64(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static inline uint64_t load_le64(const unsigned char *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);                              \
        v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                                                   \
        v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                                                   \
        v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);                              \
    } while (0)

static inline uint64_t siphash_cd(const uint8_t k[16], const void *data, size_t len, int c, int d) {
    const unsigned char *in = data;
    uint64_t k0 = load_le64(k), k1 = load_le64(k + 8);
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
    size_t whole = len & ~(size_t)7;
    for (size_t off = 0; off < whole; off += 8) {
        uint64_t m = load_le64(in + off);
        v3 ^= m;
        for (int r = 0; r < c; r++) SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)(len & 0xff) << 56;
    for (size_t i = 0; i < (len & 7); i++) b |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= b;
    for (int r = 0; r < c; r++) SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r < d; r++) SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t prs_siphash(const uint8_t key[16], const void *data, size_t len, int c, int d) {
    return siphash_cd(key, data, len, c, d);
}

/* ---- the per-process seed ---------------------------------------------- */

static uint8_t process_seed[16];
static atomic_int seed_state; /* 0 none, 1 being made, 2 ready */
static atomic_uint_fast64_t table_counter;

static void fill_random(uint8_t *buf, size_t n) {
    size_t got = 0;
#ifdef PRS_HAVE_GETRANDOM
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
#endif
    if (got < n) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            while (got < n) {
                ssize_t r = read(fd, buf + got, n - got);
                if (r <= 0) break;
                got += (size_t)r;
            }
            close(fd);
        }
    }
    if (got < n) { /* no entropy source: the clock and an address, still per process */
        uint64_t x = (uint64_t)prs_monotonic_ns() ^ (uint64_t)(uintptr_t)&got ^
                     ((uint64_t)getpid() << 32);
        for (size_t i = got; i < n; i++) {
            x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
            buf[i] = (uint8_t)(x >> 56);
        }
    }
}

static const uint8_t *get_process_seed(void) {
    int s = atomic_load_explicit(&seed_state, memory_order_acquire);
    if (s == 2) return process_seed;
    int expect = 0;
    if (atomic_compare_exchange_strong(&seed_state, &expect, 1)) {
        fill_random(process_seed, sizeof process_seed);
        atomic_store_explicit(&seed_state, 2, memory_order_release);
    } else {
        unsigned spins = 0;
        while (atomic_load_explicit(&seed_state, memory_order_acquire) != 2) prs__spin_yield(++spins);
    }
    return process_seed;
}

/* ---- slots --------------------------------------------------------------- */

static inline unsigned char *slot_at(const prs_keyed *t, const shard *sh, uint32_t i) {
    return sh->slots + (size_t)i * t->stride;
}
static inline uint32_t home_of(uint32_t h32, uint32_t nslots) {
    return (uint32_t)(((uint64_t)h32 * nslots) >> 32);
}
static inline void *slot_state(unsigned char *s) { return s + HDR; }

static inline const unsigned char *slot_key(const unsigned char *s, size_t *len) {
    const slot *sl = (const slot *)s;
    if (sl->klen != KLEN_LONG) {
        *len = sl->klen;
        return sl->key;
    }
    keyblock *kb;
    memcpy(&kb, s + 8, sizeof kb);
    *len = kb->len;
    return kb->bytes;
}

static inline int slot_matches(const unsigned char *s, uint32_t h32, const void *key, size_t len) {
    const slot *sl = (const slot *)s;
    if (sl->h32 != h32) return 0;
    if (sl->klen != KLEN_LONG) return sl->klen == len && memcmp(sl->key, key, len) == 0;
    if (len <= INLINE_MAX) return 0;
    size_t klen;
    const unsigned char *k = slot_key(s, &klen);
    return klen == len && memcmp(k, key, len) == 0;
}

static inline shard *shard_of(const prs_keyed *t, uint64_t h) {
    return &t->shards[t->shard_bits ? (size_t)(h >> (64 - t->shard_bits)) : 0];
}

static inline uint64_t hash_key(const prs_keyed *t, const void *key, size_t len) {
    return siphash_cd(t->seed, key, len, 1, 3);
}

/* Index of the key in sh, or -1. */
static int64_t find_index(const prs_keyed *t, const shard *sh, uint64_t h, const void *key,
                          size_t len) {
    if (!sh->nslots) return -1;
    uint32_t h32 = (uint32_t)h, n = sh->nslots, i = home_of(h32, n);
    for (;;) {
        const unsigned char *s = slot_at(t, sh, i);
        if (!((const slot *)s)->used) return -1;
        if (slot_matches(s, h32, key, len)) return i;
        if (++i == n) i = 0;
    }
}

static void free_slot_key(prs_keyed *t, shard *sh, unsigned char *s) {
    slot *sl = (slot *)s;
    if (sl->klen == KLEN_LONG) {
        keyblock *kb;
        memcpy(&kb, s + 8, sizeof kb);
        sh->long_bytes -= sizeof(keyblock) + kb->len;
        prs__free(&t->alloc, kb);
    }
}

/* Removes the entry at i (backward-shift deletion). Entries after i in its
 * cluster may move back by one or more slots. */
static void delete_at(prs_keyed *t, shard *sh, uint32_t i) {
    uint32_t n = sh->nslots, j = i;
    free_slot_key(t, sh, slot_at(t, sh, i));
    for (;;) {
        if (++j == n) j = 0;
        unsigned char *sj = slot_at(t, sh, j);
        if (!((slot *)sj)->used) break;
        uint32_t k = home_of(((slot *)sj)->h32, n);
        /* sj stays when its home k lies cyclically in (i, j] */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        memcpy(slot_at(t, sh, i), sj, t->stride);
        i = j;
    }
    ((slot *)slot_at(t, sh, i))->used = 0;
    sh->count--;
    sh->full_until = INT64_MIN;
}

/* Places a new entry (absent key, a free slot exists). */
static void place(prs_keyed *t, shard *sh, uint32_t h32, const void *key, size_t len,
                  keyblock *kb, const void *state) {
    uint32_t n = sh->nslots, i = home_of(h32, n);
    unsigned char *s;
    while (((slot *)(s = slot_at(t, sh, i)))->used) {
        if (++i == n) i = 0;
    }
    slot *sl = (slot *)s;
    memset(s, 0, HDR);
    sl->h32 = h32;
    sl->used = 1;
    if (kb) {
        sl->klen = KLEN_LONG;
        memcpy(s + 8, &kb, sizeof kb);
        sh->long_bytes += sizeof(keyblock) + kb->len;
    } else {
        sl->klen = (uint8_t)len;
        if (len) memcpy(sl->key, key, len);
    }
    memcpy(slot_state(s), state, t->state_size);
    sh->count++;
}

/* Re-homes every entry into an array of new_n slots. PRS_OK or PRS_ENOMEM
 * (nothing changed). */
static int resize(prs_keyed *t, shard *sh, uint32_t new_n) {
    unsigned char *fresh = prs__calloc(&t->alloc, new_n, t->stride);
    if (!fresh) return PRS_ENOMEM;
    unsigned char *old = sh->slots;
    uint32_t old_n = sh->nslots;
    sh->slots = fresh;
    sh->nslots = new_n;
    sh->hand = 0;
    for (uint32_t i = 0; i < old_n; i++) {
        unsigned char *s = old + (size_t)i * t->stride;
        if (!((slot *)s)->used) continue;
        uint32_t j = home_of(((slot *)s)->h32, new_n);
        while (((slot *)slot_at(t, sh, j))->used) {
            if (++j == new_n) j = 0;
        }
        memcpy(slot_at(t, sh, j), s, t->stride);
    }
    prs__free(&t->alloc, old);
    return PRS_OK;
}

/* Keys the current array may hold. */
static inline uint32_t threshold(const shard *sh) {
    if (sh->nslots == sh->max_slots) return sh->cap;
    return (uint32_t)(((uint64_t)sh->nslots * 4) / 5);
}

/* The earliest dt in (0, ub] at which `state` is fresh, given it is not fresh
 * at now; PRS_NEVER when it is not fresh at now + ub either. */
static int64_t time_to_fresh(const prs_keyed *t, const void *state, int64_t now, int64_t ub) {
    if (ub == PRS_NEVER || !t->algo->is_fresh(t->params, state, prs__sat_add(now, ub)))
        return PRS_NEVER;
    int64_t lo = 0, hi = ub;
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (t->algo->is_fresh(t->params, state, prs__sat_add(now, mid))) hi = mid;
        else lo = mid;
    }
    return hi;
}

static int excluded(const unsigned char *s, const prs__keyref *excl, size_t nexcl) {
    for (size_t e = 0; e < nexcl; e++)
        if (slot_matches(s, (uint32_t)excl[e].h, excl[e].key, excl[e].len)) return 1;
    return 0;
}

static int room(prs_keyed *t, shard *sh, uint32_t need, int64_t now, const prs__keyref *excl,
                size_t nexcl, int evict, int64_t *retry) {
    *retry = 0;
    if (need > sh->cap) { *retry = PRS_NEVER; return PRS_EFULL; }
    uint32_t over = sh->count + need > sh->cap ? sh->count + need - sh->cap : 0;
    if (over) {
        /* The hint holds whatever the exclusions: no held key is fresh before it. */
        if (sh->full_until != INT64_MIN && now < sh->full_until) {
            *retry = sh->full_until == PRS_NEVER ? PRS_NEVER : sh->full_until - now;
            return PRS_EFULL;
        }
        uint32_t found = 0, i = sh->hand, n = sh->nslots;
        int excluded_fresh = 0;
        int64_t best = PRS_NEVER; /* the earliest any held key (excluded too) becomes fresh */
        for (uint32_t k = 0; k < n && found < over; k++) {
            unsigned char *s = slot_at(t, sh, i);
            if (((slot *)s)->used) {
                void *st = slot_state(s);
                if (t->algo->is_fresh(t->params, st, now)) {
                    if (excluded(s, excl, nexcl)) {
                        excluded_fresh = 1;
                    } else {
                        found++;
                        if (evict) {
                            delete_at(t, sh, i);
                            continue; /* slot i now holds the next entry of its cluster */
                        }
                    }
                } else if (best == PRS_NEVER) {
                    prs_decision d; /* reset_after of a peek: an upper bound */
                    t->algo->decide(t->params, st, now, 1, 0, &d);
                    best = time_to_fresh(t, st, now, d.reset_after_ns);
                } else if (best > 1 && t->algo->is_fresh(t->params, st, prs__sat_add(now, best - 1))) {
                    best = time_to_fresh(t, st, now, best - 1); /* frees sooner */
                }
            }
            if (++i == n) i = 0;
        }
        sh->hand = i < sh->nslots ? i : 0;
        if (found < over) {
            /* Remember "full until" only from a complete scan that found no
             * fresh key at all: then no key frees a slot before now + best. */
            if (found == 0 && !excluded_fresh)
                sh->full_until = best == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, best);
            *retry = best;
            return PRS_EFULL;
        }
        if (!evict) return PRS_OK;
    }
    if (!evict) return PRS_OK;
    while (sh->nslots == 0 || sh->count + need > threshold(sh)) {
        uint32_t n = sh->nslots ? sh->nslots : INITIAL_SLOTS / 2;
        uint64_t want = (uint64_t)n * 2;
        if (want > sh->max_slots) want = sh->max_slots;
        int rc = resize(t, sh, (uint32_t)want);
        if (rc) return rc;
    }
    return PRS_OK;
}

static int key_block(prs_keyed *t, const void *key, size_t len, keyblock **out) {
    *out = NULL;
    if (len <= INLINE_MAX) return PRS_OK;
    if (len > SIZE_MAX - sizeof(keyblock)) return PRS_ENOMEM;
    keyblock *kb = prs__malloc(&t->alloc, sizeof(keyblock) + len);
    if (!kb) return PRS_ENOMEM;
    kb->len = len;
    memcpy(kb->bytes, key, len);
    *out = kb;
    return PRS_OK;
}

/* ---- lifecycle ----------------------------------------------------------- */

void prs_keyed_config_init(prs_keyed_config *cfg) {
    cfg->algo = NULL;
    cfg->params = NULL;
    cfg->max_keys = 100000;
    cfg->allocator = NULL;
}

int prs_keyed_config_validate(const prs_keyed_config *cfg) {
    if (!cfg || !cfg->algo || !cfg->params) return PRS_EINVAL;
    if (cfg->max_keys < 1 || cfg->max_keys > PRS_KEYED_MAX_KEYS) return PRS_EINVAL;
    return PRS_OK;
}

int prs_keyed_new(const prs_keyed_config *cfg, prs_keyed **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_keyed_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_keyed *t = prs__malloc(a, sizeof *t);
    if (!t) return PRS_ENOMEM;
    t->shm = NULL;
    t->alloc = *a;
    t->algo = cfg->algo;
    t->params = cfg->params;
    t->own_params = NULL;
    const prs_algo *al = cfg->algo;
    if (al->params_size && al->params_from_config && al->config_from_params && al->rebase) {
        /* our own copy, made from the template's config (no pointer into it) */
        alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
        t->own_params = prs__calloc(a, 1, al->params_size);
        if (!t->own_params) {
            prs__free(a, t);
            return PRS_ENOMEM;
        }
        al->config_from_params(cfg->params, config);
        rc = al->params_from_config(config, t->own_params, NULL);
        if (rc) {
            prs__free(a, t->own_params);
            prs__free(a, t);
            return rc;
        }
        t->params = t->own_params;
    }
    t->state_size = cfg->algo->state_size(t->params);
    t->stride = HDR + ((t->state_size + 7) & ~(size_t)7);
    t->max_keys = cfg->max_keys;
    /* about >= 256 keys per shard, at most 64 shards */
    unsigned bits = 0;
    while (bits < MAX_SHARD_BITS && (cfg->max_keys >> (bits + 1)) >= 256) bits++;
    t->shard_bits = bits;
    size_t nsh = (size_t)1 << bits;
    t->shards_mem = prs__malloc(a, nsh * sizeof(shard) + 63);
    if (!t->shards_mem) {
        prs__free(a, t->own_params);
        prs__free(a, t);
        return PRS_ENOMEM;
    }
    t->shards = (shard *)(((uintptr_t)t->shards_mem + 63) & ~(uintptr_t)63);
    for (size_t i = 0; i < nsh; i++) {
        shard *sh = &t->shards[i];
        memset(sh, 0, sizeof *sh);
        prs__spin_init(&sh->lock);
        sh->cap = (uint32_t)(cfg->max_keys / (int64_t)nsh + ((int64_t)i < cfg->max_keys % (int64_t)nsh));
        sh->max_slots = sh->cap + sh->cap / 4 + 1;
        sh->full_until = INT64_MIN;
    }
    /* per-table key: the process seed hashed with a counter */
    const uint8_t *ps = get_process_seed();
    uint64_t ctr = atomic_fetch_add(&table_counter, 1);
    uint64_t w0 = siphash_cd(ps, &ctr, sizeof ctr, 2, 4);
    ctr ^= UINT64_C(0x9e3779b97f4a7c15);
    uint64_t w1 = siphash_cd(ps, &ctr, sizeof ctr, 2, 4);
    memcpy(t->seed, &w0, 8);
    memcpy(t->seed + 8, &w1, 8);
    *out = t;
    return PRS_OK;
}

static void clear_shard(prs_keyed *t, shard *sh) {
    for (uint32_t i = 0; i < sh->nslots; i++) {
        unsigned char *s = slot_at(t, sh, i);
        if (((slot *)s)->used) free_slot_key(t, sh, s);
    }
    prs__free(&t->alloc, sh->slots);
    sh->slots = NULL;
    sh->nslots = 0;
    sh->count = 0;
    sh->hand = 0;
    sh->full_until = INT64_MIN;
    sh->long_bytes = 0;
}

void prs_keyed_free(prs_keyed *t) {
    if (!t) return;
    if (t->shm) {
        prs_allocator a = t->alloc;
        prs__shm_keyed_free(t->shm);
        prs__free(&a, t);
        return;
    }
    size_t nsh = (size_t)1 << t->shard_bits;
    for (size_t i = 0; i < nsh; i++) clear_shard(t, &t->shards[i]);
    prs_allocator a = t->alloc;
    prs__free(&a, t->shards_mem);
    prs__free(&a, t->own_params);
    prs__free(&a, t);
}

/* The state size, read outside the shard locks (to size a scratch buffer that
 * is checked again under the lock). */
static size_t state_size_now(const prs_keyed *t) {
    return __atomic_load_n(&t->state_size, __ATOMIC_RELAXED);
}

/* ---- per-key operations ---------------------------------------------------- */

/* Locks sh and returns a scratch state big enough for the table's states: the
 * caller's stack_state (STACK_STATE bytes) or, for big states (sliding log),
 * the heap (the caller frees it when it is not stack_state). A
 * reconfiguration that grew the states before the lock sizes it again. NULL
 * (nothing locked): no memory. */
static inline unsigned char *lock_with_scratch(prs_keyed *t, shard *sh,
                                               unsigned char *stack_state) {
    for (;;) {
        unsigned char *scratch = stack_state;
        size_t have = state_size_now(t);
        if (have > STACK_STATE) {
            scratch = prs__malloc(&t->alloc, have);
            if (!scratch) return NULL;
        } else {
            have = STACK_STATE;
        }
        prs__spin_lock(&sh->lock);
        if (t->state_size <= have) return scratch;
        prs__spin_unlock(&sh->lock);
        if (scratch != stack_state) prs__free(&t->alloc, scratch);
    }
}

static void fill_full(prs_decision *d, int64_t retry) {
    d->allowed = 0;
    d->remaining = 0;
    d->retry_after_ns = retry;
    d->reset_after_ns = 0;
}

static int decide_key(prs_keyed *t, const void *key, size_t len, int64_t now, int64_t n,
                      int consume, prs_decision *d) {
    if (!t || !d || (!key && len) || n < 1) return PRS_EINVAL;
    uint64_t h = hash_key(t, key, len);
    shard *sh = shard_of(t, h);
    alignas(16) unsigned char stack_state[STACK_STATE];
    int rc;
    unsigned char *scratch = lock_with_scratch(t, sh, stack_state);
    if (!scratch) return PRS_ENOMEM;
    int64_t i = find_index(t, sh, h, key, len);
    if (i >= 0) {
        rc = t->algo->decide(t->params, slot_state(slot_at(t, sh, (uint32_t)i)), now, n, consume, d);
        goto out;
    }
    t->algo->state_init(t->params, scratch);
    rc = t->algo->decide(t->params, scratch, now, n, consume, d);
    if (rc || !d->allowed) goto out;
    int64_t retry;
    if (!consume) { /* would a check find room for the key? */
        if (room(t, sh, 1, now, NULL, 0, 0, &retry) == PRS_EFULL) fill_full(d, retry);
        goto out;
    }
    if (t->algo->is_fresh(t->params, scratch, now)) goto out; /* nothing to remember */
    keyblock *kb;
    rc = key_block(t, key, len, &kb);
    if (rc) goto out;
    rc = room(t, sh, 1, now, NULL, 0, 1, &retry);
    if (rc == PRS_EFULL) {
        fill_full(d, retry);
        rc = PRS_OK;
    }
    if (rc || !d->allowed) {
        if (kb) prs__free(&t->alloc, kb);
        goto out;
    }
    place(t, sh, (uint32_t)h, key, len, kb, scratch);
out:
    if (consume && rc == PRS_OK) {
        _Atomic uint64_t *c = d->allowed ? &sh->admitted : &sh->rejected;
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
    prs__spin_unlock(&sh->lock);
    if (scratch != stack_state) prs__free(&t->alloc, scratch);
    return rc;
}

int prs_keyed_check(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns, int64_t n,
                    prs_decision *d) {
    if (t && t->shm && d && n >= 1 && (key || !key_len))
        return prs__shm_keyed_decide(t->shm, key, key_len, now_ns, n, 1, d);
    return decide_key(t, key, key_len, now_ns, n, 1, d);
}

int prs_keyed_peek(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns, int64_t n,
                   prs_decision *d) {
    if (t && t->shm && d && n >= 1 && (key || !key_len))
        return prs__shm_keyed_decide(t->shm, key, key_len, now_ns, n, 0, d);
    return decide_key(t, key, key_len, now_ns, n, 0, d);
}

int prs_keyed_reset_key(prs_keyed *t, const void *key, size_t key_len) {
    if (!t || (!key && key_len)) return PRS_EINVAL;
    if (t->shm) return prs__shm_keyed_reset_key(t->shm, key, key_len);
    uint64_t h = hash_key(t, key, key_len);
    shard *sh = shard_of(t, h);
    prs__spin_lock(&sh->lock);
    int64_t i = find_index(t, sh, h, key, key_len);
    if (i >= 0) delete_at(t, sh, (uint32_t)i);
    prs__spin_unlock(&sh->lock);
    return i >= 0;
}

void prs_keyed_reset_all(prs_keyed *t) {
    if (!t) return;
    if (t->shm) {
        prs__shm_keyed_reset_all(t->shm);
        return;
    }
    size_t nsh = (size_t)1 << t->shard_bits;
    for (size_t i = 0; i < nsh; i++) {
        shard *sh = &t->shards[i];
        prs__spin_lock(&sh->lock);
        clear_shard(t, sh);
        prs__spin_unlock(&sh->lock);
    }
}

int prs_keyed_contains(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns) {
    if (!t || (!key && key_len)) return 0;
    if (t->shm) return prs__shm_keyed_contains(t->shm, key, key_len, now_ns);
    uint64_t h = hash_key(t, key, key_len);
    shard *sh = shard_of(t, h);
    prs__spin_lock(&sh->lock);
    int64_t i = find_index(t, sh, h, key, key_len);
    int r = i >= 0 && !t->algo->is_fresh(t->params, slot_state(slot_at(t, sh, (uint32_t)i)), now_ns);
    prs__spin_unlock(&sh->lock);
    return r;
}

double prs_keyed_available(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns) {
    if (!t || (!key && key_len)) return 0.0;
    if (t->shm) return prs__shm_keyed_available(t->shm, key, key_len, now_ns);
    uint64_t h = hash_key(t, key, key_len);
    shard *sh = shard_of(t, h);
    double r;
    alignas(16) unsigned char stack_state[STACK_STATE];
    unsigned char *scratch = lock_with_scratch(t, sh, stack_state); /* for an absent key */
    if (!scratch) return 0.0;
    int64_t i = find_index(t, sh, h, key, key_len);
    if (i >= 0) {
        r = t->algo->available(t->params, slot_state(slot_at(t, sh, (uint32_t)i)), now_ns);
    } else {
        t->algo->state_init(t->params, scratch);
        r = t->algo->available(t->params, scratch, now_ns);
    }
    prs__spin_unlock(&sh->lock);
    if (scratch != stack_state) prs__free(&t->alloc, scratch);
    return r;
}

int64_t prs_keyed_len(prs_keyed *t) {
    if (!t) return 0;
    if (t->shm) return prs__shm_keyed_len(t->shm);
    int64_t total = 0;
    size_t nsh = (size_t)1 << t->shard_bits;
    for (size_t i = 0; i < nsh; i++) {
        shard *sh = &t->shards[i];
        prs__spin_lock(&sh->lock);
        total += sh->count;
        prs__spin_unlock(&sh->lock);
    }
    return total;
}

int64_t prs_keyed_prune(prs_keyed *t, int64_t now_ns) {
    if (!t) return 0;
    if (t->shm) return prs__shm_keyed_prune(t->shm, now_ns);
    int64_t removed = 0;
    size_t nsh = (size_t)1 << t->shard_bits;
    for (size_t k = 0; k < nsh; k++) {
        shard *sh = &t->shards[k];
        prs__spin_lock(&sh->lock);
        /* Deleting at i may pull an entry from a wrapped cluster start into i:
         * re-examine i; two passes catch anything moved across the end. */
        for (int pass = 0; pass < 2; pass++) {
            for (uint32_t i = 0; i < sh->nslots;) {
                unsigned char *s = slot_at(t, sh, i);
                if (((slot *)s)->used && t->algo->is_fresh(t->params, slot_state(s), now_ns)) {
                    delete_at(t, sh, i);
                    removed++;
                    continue;
                }
                i++;
            }
        }
        prs__spin_unlock(&sh->lock);
    }
    return removed;
}

/* ---- reconfiguration (see the essay) ------------------------------------------ */

int prs_keyed_reconfigure(prs_keyed *t, const void *config, int64_t now_ns) {
    return prs_keyed_reconfigure_why(t, config, now_ns, NULL);
}

int prs_keyed_reconfigure_why(prs_keyed *t, const void *config, int64_t now_ns,
                              prs_config_error *why) {
    if (!t || !config) return PRS_EINVAL;
    const prs_algo *al = t->algo;
    if (t->shm) /* every key of every process at once: not crash-safe in one write */
        return prs_config_fail(why, PRS_ENOTSUP, "params",
                               "of a keyed table in shared memory are fixed when it is made");
    if (!t->own_params) return PRS_ENOTSUP;
    size_t nsh = (size_t)1 << t->shard_bits, psz = al->params_size;
    unsigned char *np = prs__calloc(&t->alloc, 2, psz), *op = np + psz;
    if (!np) return PRS_ENOMEM;
    int rc = al->params_from_config(config, np, why);
    if (rc) {
        prs__free(&t->alloc, np);
        return rc;
    }
    size_t nss = al->state_size(np), nstride = HDR + ((nss + 7) & ~(size_t)7);
    unsigned char **fresh = prs__calloc(&t->alloc, nsh, sizeof *fresh);
    if (!fresh) {
        prs__free(&t->alloc, np);
        return PRS_ENOMEM;
    }
    for (size_t k = 0; k < nsh; k++) prs__spin_lock(&t->shards[k].lock);
    memcpy(op, t->params, psz);
    size_t ostride = t->stride;
    if (nss != t->state_size) { /* re-lay every slot array: allocate them all first */
        for (size_t k = 0; k < nsh && rc == PRS_OK; k++) {
            shard *sh = &t->shards[k];
            if (sh->nslots && !(fresh[k] = prs__calloc(&t->alloc, sh->nslots, nstride))) rc = PRS_ENOMEM;
        }
        if (rc) {
            for (size_t k = nsh; k-- > 0;) prs__spin_unlock(&t->shards[k].lock);
            for (size_t k = 0; k < nsh; k++) prs__free(&t->alloc, fresh[k]);
            prs__free(&t->alloc, fresh);
            prs__free(&t->alloc, np);
            return rc;
        }
        for (size_t k = 0; k < nsh; k++) {
            shard *sh = &t->shards[k];
            for (uint32_t i = 0; i < sh->nslots; i++) {
                unsigned char *from = sh->slots + (size_t)i * ostride;
                unsigned char *to = fresh[k] + (size_t)i * nstride;
                if (!((slot *)from)->used) continue;
                memcpy(to, from, HDR); /* the long-key block moves with it */
                al->rebase(op, slot_state(from), np, slot_state(to), now_ns);
            }
            prs__free(&t->alloc, sh->slots);
            sh->slots = fresh[k];
        }
    } else {
        for (size_t k = 0; k < nsh; k++) {
            shard *sh = &t->shards[k];
            for (uint32_t i = 0; i < sh->nslots; i++) {
                unsigned char *s = sh->slots + (size_t)i * ostride;
                if (((slot *)s)->used) al->rebase(op, slot_state(s), np, slot_state(s), now_ns);
            }
        }
    }
    memcpy(t->own_params, np, psz);
    __atomic_store_n(&t->state_size, nss, __ATOMIC_RELAXED);
    t->stride = nstride;
    for (size_t k = 0; k < nsh; k++) t->shards[k].full_until = INT64_MIN; /* freshness moved */
    for (size_t k = nsh; k-- > 0;) prs__spin_unlock(&t->shards[k].lock);
    prs__free(&t->alloc, fresh);
    prs__free(&t->alloc, np);
    return PRS_OK;
}

int64_t prs_keyed_max_keys(const prs_keyed *t) { return t ? t->max_keys : 0; }

void prs__keyed_random(uint8_t *buf, size_t n) { fill_random(buf, n); }

int prs_keyed_shared(const prs_keyed *t) { return t && t->shm != NULL; }

int prs_keyed_new_placed(const prs_keyed_config *cfg, const prs_shm_place *place,
                         prs_keyed **out, prs_config_error *why) {
    if (!place) return prs_keyed_new(cfg, out);
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_keyed_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_keyed *t = prs__calloc(a, 1, sizeof *t);
    if (!t) return PRS_ENOMEM;
    t->alloc = *a;
    if ((rc = prs__shm_keyed_open(cfg, place, &t->shm, why))) {
        prs__free(a, t);
        return rc;
    }
    t->algo = cfg->algo;
    t->params = prs__shm_keyed_params(t->shm); /* in the region: fixed */
    t->max_keys = prs__shm_keyed_max_keys(t->shm);
    *out = t;
    return PRS_OK;
}
const prs_algo *prs_keyed_algo(const prs_keyed *t) { return t->algo; }
const void *prs_keyed_params(const prs_keyed *t) { return t->params; }

static uint64_t sum_counts(const prs_keyed *t, int rejected) {
    if (!t) return 0;
    uint64_t sum = 0;
    size_t nsh = (size_t)1 << t->shard_bits;
    for (size_t i = 0; i < nsh; i++)
        sum += atomic_load_explicit(rejected ? &t->shards[i].rejected : &t->shards[i].admitted,
                                    memory_order_relaxed);
    return sum;
}

uint64_t prs_keyed_admitted(const prs_keyed *t) { return sum_counts(t, 0); }
uint64_t prs_keyed_rejected(const prs_keyed *t) { return sum_counts(t, 1); }

size_t prs_keyed_memory(prs_keyed *t) {
    if (!t) return 0;
    if (t->shm) return prs__shm_keyed_memory(t->shm);
    size_t nsh = (size_t)1 << t->shard_bits;
    size_t total = sizeof *t + nsh * sizeof(shard) + 63;
    for (size_t i = 0; i < nsh; i++) {
        shard *sh = &t->shards[i];
        prs__spin_lock(&sh->lock);
        total += (size_t)sh->nslots * t->stride + sh->long_bytes;
        prs__spin_unlock(&sh->lock);
    }
    return total;
}

/* ---- for groups (group_internal.h) ------------------------------------------ */

uint64_t prs__keyed_hash(const prs_keyed *t, const void *key, size_t len) {
    return hash_key(t, key, len);
}

prs__spinlock *prs__keyed_lock(prs_keyed *t, uint64_t h) { return &shard_of(t, h)->lock; }

void *prs__keyed_find_locked(prs_keyed *t, uint64_t h, const void *key, size_t len) {
    shard *sh = shard_of(t, h);
    int64_t i = find_index(t, sh, h, key, len);
    return i >= 0 ? slot_state(slot_at(t, sh, (uint32_t)i)) : NULL;
}

int prs__keyed_room_locked(prs_keyed *t, uint64_t h, uint32_t need, int64_t now,
                           const prs__keyref *excl, size_t nexcl, int evict, int64_t *retry_ns) {
    return room(t, shard_of(t, h), need, now, excl, nexcl, evict, retry_ns);
}

int prs__keyed_key_block(prs_keyed *t, const void *key, size_t len, void **block) {
    keyblock *kb;
    int rc = key_block(t, key, len, &kb);
    *block = kb;
    return rc;
}

void prs__keyed_free_block(prs_keyed *t, void *block) { prs__free(&t->alloc, block); }

void prs__keyed_insert_locked(prs_keyed *t, uint64_t h, const void *key, size_t len, void *block,
                              const void *state) {
    place(t, shard_of(t, h), (uint32_t)h, key, len, block, state);
}

size_t prs__keyed_state_size(const prs_keyed *t) { return state_size_now(t); }
