/*
 * group_internal.h - what group.c needs from the other core modules; not
 * installed (the name has no prs_ prefix, so `make headers` leaves it out).
 *
 * A group locks every member in one global order (by the address of the lock)
 * and then decides on each member's state directly. A limiter's lock and
 * state are in its struct (limiter_internal.h); a keyed table exposes the
 * shard lock of a key, and find/reserve/insert under it (below).
 */
#ifndef PRS_GROUP_INTERNAL_H
#define PRS_GROUP_INTERNAL_H

#include "limiter_internal.h"
#include "prs_algo.h"

struct prs_keyed;

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

/* ---- groups of limiters placed in a shared-memory region (shm_group.c) ---- */

typedef struct prs__shm_group prs__shm_group;
/* 1 when a and b are placed limiters deciding on the same entry of a region. */
int prs__shm_same_state(const prs_limiter *a, const prs_limiter *b);
/* The shared part of a group of lims[0..n) (first/mult: group.c's). PRS_OK,
 * PRS_ENOTSUP (a member not placed, or members of several regions),
 * PRS_EFULL (no room for the region's group journal), PRS_ENOMEM. */
int prs__shm_group_new(prs_limiter *const *lims, const uint32_t *first, const uint32_t *mult,
                       size_t n, const prs_allocator *a, prs__shm_group **out);
void prs__shm_group_free(prs__shm_group *sg);
/* Decides every distinct member i (first[i] == i) into dec[i], taking n from
 * all of them or from none (crash-safe); *all: admitted; *first_denied: the
 * first member that denied, or -1. */
int prs__shm_group_decide(prs__shm_group *sg, int64_t now, int64_t n, int consume,
                          prs_decision *dec, int *all, int *first_denied);

#endif /* PRS_GROUP_INTERNAL_H */
