/*
 * group_internal.h - what group.c needs from the other core modules; not
 * installed (the name has no prs_ prefix, so `make headers` leaves it out).
 *
 * A group locks every member in one global order (by the address of the lock)
 * and then decides on each member's state directly. So each kind of member
 * exposes its lock and its state:
 *   - spinlocked limiters (token bucket, leaky bucket, fixed window, sliding
 *     log, sliding counter): the prs__spinlock and the state it guards;
 *   - GCRA, whose single-threaded calls are a lock-free CAS on `tat`: the tat
 *     word itself doubles as the lock (PRS__GCRA_LOCKED while a group holds it;
 *     the CAS loop waits while it sees that value);
 *   - keyed tables: the shard lock of the key, and find/reserve/insert under it.
 */
#ifndef PRS_GROUP_INTERNAL_H
#define PRS_GROUP_INTERNAL_H

#include "prs_algo.h"
#include "prs_internal.h"

struct prs_gcra;
struct prs_token_bucket;
struct prs_leaky_bucket;
struct prs_fixed_window;
struct prs_sliding_log;
struct prs_sliding_counter;
struct prs_keyed;

/* ---- GCRA (gcra.c) ----------------------------------------------------- */

/* The value `tat` holds while a group has it locked. Never a real tat: a
 * computed tat equal to it is stored one nanosecond later (conservative). */
#define PRS__GCRA_LOCKED (INT64_MIN + 1)
/* Takes the tat word (spinning while another group holds it) and returns the
 * tat it held. Every other call on g waits until prs__gcra_unlock(). */
int64_t prs__gcra_lock(struct prs_gcra *g);
/* Stores `tat` and releases the word. */
void prs__gcra_unlock(struct prs_gcra *g, int64_t tat);

/* ---- spinlocked limiters (token_bucket.c, leaky_bucket.c, ...) ---------- */

/* Each limiter's lock and the state it guards, laid out as its descriptor's
 * state (prs_algo_X's state_size bytes; the sliding log's is its header and
 * ring). Stable for the limiter's life. */
void prs__token_bucket_parts(struct prs_token_bucket *tb, prs__spinlock **lock, void **state);
void prs__leaky_bucket_parts(struct prs_leaky_bucket *lb, prs__spinlock **lock, void **state);
void prs__fixed_window_parts(struct prs_fixed_window *fw, prs__spinlock **lock, void **state);
void prs__sliding_log_parts(struct prs_sliding_log *sl, prs__spinlock **lock, void **state);
void prs__sliding_counter_parts(struct prs_sliding_counter *sc, prs__spinlock **lock,
                                void **state);

/* ---- any spinlocked limiter --------------------------------------------- */

struct prs_group_member;
/* A group member over `state`, guarded by `lock` (a module exposing its
 * limiter to groups calls this from a prs_group_member_X function). */
void prs__group_member_spin(struct prs_group_member *m, const prs_algo *algo, const void *params,
                            void *state, prs__spinlock *lock);

/* ---- keyed tables (keyed.c); every *_locked call needs the key's lock ---- */

/* A key of a group, to exclude from eviction while the group reserves room. */
typedef struct prs__keyref {
    const void *key;
    size_t len;
    uint64_t h;
} prs__keyref;

uint64_t prs__keyed_hash(const struct prs_keyed *t, const void *key, size_t len);
/* The lock of the shard holding keys of hash h (stable for the table's life). */
prs__spinlock *prs__keyed_lock(struct prs_keyed *t, uint64_t h);
/* The key's state, or NULL when absent. Valid until the shard changes. */
void *prs__keyed_find_locked(struct prs_keyed *t, uint64_t h, const void *key, size_t len);
/* Makes sure `need` more keys fit in h's shard: evicts fresh keys (never those
 * in excl[]) and grows the slot array when `evict`; only looks when not.
 * PRS_OK, PRS_EFULL with *retry_ns = when a slot frees, PRS_ENOMEM.
 * May move entries: find again afterwards. */
int prs__keyed_room_locked(struct prs_keyed *t, uint64_t h, uint32_t need, int64_t now,
                           const prs__keyref *excl, size_t nexcl, int evict, int64_t *retry_ns);
/* The allocation a key longer than the inline size needs (NULL for short
 * keys). PRS_OK or PRS_ENOMEM. Free unused blocks with prs__keyed_free_block. */
int prs__keyed_key_block(struct prs_keyed *t, const void *key, size_t len, void **block);
void prs__keyed_free_block(struct prs_keyed *t, void *block);
/* Inserts an absent key with a copy of `state`, room being reserved: cannot
 * fail. Takes `block` (from prs__keyed_key_block for the same key). */
void prs__keyed_insert_locked(struct prs_keyed *t, uint64_t h, const void *key, size_t len,
                              void *block, const void *state);
size_t prs__keyed_state_size(const struct prs_keyed *t);

#endif /* PRS_GROUP_INTERNAL_H */
