/*
 * prs_keyed.h - per-key rate limiting: one limiter state per key (a byte
 * string) in a bounded hash table, all keys sharing one algorithm and one set
 * of params taken from a template limiter (prs_algo.h).
 *
 *   prs_token_bucket *tmpl;                       // capacity 10, refill 5/s
 *   prs_keyed_config cfg;
 *   prs_keyed_config_init(&cfg);
 *   cfg.algo = &prs_algo_token_bucket;
 *   cfg.params = prs_token_bucket_params(tmpl);   // must outlive the table
 *   cfg.max_keys = 100000;
 *   prs_keyed *t;
 *   prs_keyed_new(&cfg, &t);
 *   prs_keyed_check(t, "user:42", 7, now_ns, 1, &d);
 *
 * Guarantees:
 *   - At most max_keys keys are held. A key whose state is fresh (a new
 *     limiter's: full bucket, empty window) may be evicted at any time: that
 *     changes no decision. A key that is currently limited is never evicted.
 *   - When the room for a new key is taken by limited keys, the new key is
 *     denied (allowed 0, retry_after_ns = when the first of them becomes fresh;
 *     PRS_NEVER if none ever does), never admitted by resetting another key.
 *     The bound is enforced per shard (max_keys is split evenly over up to 64
 *     shards chosen by the keyed hash), so a new key can be refused while the
 *     table as a whole is a few percent short of max_keys.
 *   - Keys are hashed with SipHash-1-3 keyed by a per-process random seed
 *     (mixed with a per-table counter): a client choosing keys cannot make
 *     them collide.
 *   - Thread-safe; each shard has its own lock, held only around a probe and
 *     the algorithm's arithmetic.
 *
 * Memory: a slot is 24 bytes (hash, key length, key bytes inline up to
 * PRS_KEYED_INLINE_KEY) plus the state rounded up to 8; the table holds at
 * most 1.25 slots per key. Keys longer than PRS_KEYED_INLINE_KEY take a
 * separate allocation of 8 + length bytes. For 16 bytes of state (token
 * bucket) that is 50 bytes per key at max_keys; 24 bytes of state: 60.
 */
#ifndef PRS_KEYED_H
#define PRS_KEYED_H

#include "prs_algo.h"
#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Keys up to this many bytes are stored inside their slot. */
#define PRS_KEYED_INLINE_KEY 18
/* max_keys is in [1, PRS_KEYED_MAX_KEYS]. */
#define PRS_KEYED_MAX_KEYS (INT64_C(1) << 31)

typedef struct prs_keyed prs_keyed;

typedef struct prs_keyed_config {
    const prs_algo *algo;            /* required */
    const void *params;              /* required; copied when the algorithm supports
                                        reconfiguration (all six built-in ones do), else
                                        it must outlive the table */
    int64_t max_keys;                /* [1, PRS_KEYED_MAX_KEYS], default 100000 */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_keyed_config;

/* Defaults: no algo (must be set), max_keys 100000, default allocator. */
void prs_keyed_config_init(prs_keyed_config *cfg);
/* PRS_OK, or PRS_EINVAL (NULL, no algo or params, max_keys out of range). */
int prs_keyed_config_validate(const prs_keyed_config *cfg);

/* Makes an empty table in *out (slot arrays grow on demand up to the bound).
 * On error *out is NULL and nothing is allocated: PRS_EINVAL, PRS_ENOMEM. */
int prs_keyed_new(const prs_keyed_config *cfg, prs_keyed **out);
void prs_keyed_free(prs_keyed *t); /* NULL-safe */

/* Asks for n (>= 1) on `key` at now_ns; consumes only when allowed. The key is
 * stored only when the request consumed something. `key` may be NULL when
 * key_len is 0. PRS_OK with *d filled (a full table is a denial), PRS_EINVAL
 * (NULL arguments, n < 1), PRS_ENOMEM (storing a new key needed memory: nothing
 * was consumed). */
int prs_keyed_check(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns, int64_t n,
                    prs_decision *d);
/* The decision check would make, changing nothing (a full table may have its
 * "full until" hint refreshed). PRS_OK or PRS_EINVAL. */
int prs_keyed_peek(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns, int64_t n,
                   prs_decision *d);
/* Forgets `key` (back to fresh). 1 if it was held, 0 if not, PRS_EINVAL. */
int prs_keyed_reset_key(prs_keyed *t, const void *key, size_t key_len);
/* Forgets every key and gives the slot memory back. */
void prs_keyed_reset_all(prs_keyed *t);
/* 1 if `key` holds a state that is not fresh at now_ns (the key is being
 * limited or recovering), 0 otherwise (also for NULL t). */
int prs_keyed_contains(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns);
/* Requests of weight 1 admissible for `key` at now_ns (a fresh key: the
 * algorithm's full amount). 0.0 for NULL t. */
double prs_keyed_available(prs_keyed *t, const void *key, size_t key_len, int64_t now_ns);
/* Keys held (fresh keys not yet evicted included); at most max_keys. */
int64_t prs_keyed_len(prs_keyed *t);
/* Evicts every key that is fresh at now_ns; returns how many. */
int64_t prs_keyed_prune(prs_keyed *t, int64_t now_ns);
int64_t prs_keyed_max_keys(const prs_keyed *t);
/* Bytes this table holds from its allocator right now (slots, long keys,
 * shards, the table itself). */
size_t prs_keyed_memory(prs_keyed *t);
/* Consuming decisions (check, each step of a wait) over every key that
 * admitted / refused, since creation. Exact under threads; 0 for NULL. */
uint64_t prs_keyed_admitted(const prs_keyed *t);
uint64_t prs_keyed_rejected(const prs_keyed *t);
const prs_algo *prs_keyed_algo(const prs_keyed *t);
/* The table's params (its own copy for the built-in algorithms: at a fixed
 * address, its contents changed by prs_keyed_reconfigure). */
const void *prs_keyed_params(const prs_keyed *t);

/* Changes the params of every key at once, at now_ns. `config` is the
 * algorithm's config struct (prs_token_bucket_config for
 * prs_algo_token_bucket, ...; its allocator is ignored), validated first.
 * Every held state is re-expressed as that algorithm's prs_X_reconfigure does
 * for one limiter (tokens capped, counts and timestamps kept, GCRA's consumed
 * requests kept), and a key absent from the table starts fresh under the new
 * params. Thread-safe: it holds every shard lock while it works (O(keys), with
 * a re-allocation of every slot array when the state size changes: the
 * sliding log's is 32 + 8 * limit), so a concurrent decision on any key sees
 * the old config whole or the new one whole. A group holding this table sees
 * the new params from its next decision.
 * PRS_OK; PRS_EINVAL (NULL arguments) or the error the algorithm's
 * prs_X_config_validate gives; PRS_ENOMEM; PRS_ENOTSUP (an algorithm without
 * reconfiguration entries). On error nothing changed. */
int prs_keyed_reconfigure(prs_keyed *t, const void *config, int64_t now_ns);
/* The same, with *why (may be NULL) naming the field and the reason of a
 * PRS_EINVAL/PRS_ERANGE. */
int prs_keyed_reconfigure_why(prs_keyed *t, const void *config, int64_t now_ns,
                              prs_config_error *why);

/* SipHash (Aumasson & Bernstein) with c compression and d finalisation
 * rounds: prs_siphash(k, data, len, 2, 4) is SipHash-2-4. */
uint64_t prs_siphash(const uint8_t key[16], const void *data, size_t len, int c, int d);

#ifdef __cplusplus
}
#endif
#endif /* PRS_KEYED_H */
