/*
 * shm_internal.h - what objects placed in a shared-memory region use (not
 * installed): the crash-safe lock and the handle's reference count.
 */
#ifndef PRS_SHM_INTERNAL_H
#define PRS_SHM_INTERNAL_H

#include "prs_internal.h"
#include "prs_shm.h"

/* A lock word in the region: 0 free, else the holder's pid. A waiter that
 * finds the holder dead takes it over (the guarded data must be consistent
 * at every instant: see prs_shm.h). */
typedef struct { _Atomic int32_t owner; } prs__pidlock;

void prs__pidlock_lock_slow(prs__pidlock *l, int32_t me);
int32_t prs__self_pid(void); /* getpid(), cached per process (refreshed after fork) */

static inline void prs__pidlock_lock(prs__pidlock *l) {
    int32_t me = prs__self_pid(), free_ = 0;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                             &l->owner, &free_, me, memory_order_acquire, memory_order_relaxed),
                         1))
        return;
    prs__pidlock_lock_slow(l, me);
}
static inline void prs__pidlock_unlock(prs__pidlock *l) {
    atomic_store_explicit(&l->owner, 0, memory_order_release);
}

/* Takes l without waiting: when free, or over from a dead holder. 1 when
 * taken, 0 when a live process (or this one) holds it. */
int prs__pidlock_trylock(prs__pidlock *l, int32_t me);

/* The start of the handle's mapping (offsets in the region are from it). */
unsigned char *prs__shm_base(const prs_shm *r);

/* shm_group.c: 1 when the transaction in slot `slot` of the region's group
 * journal committed (a member tagged with it keeps its new state), else 0. */
int prs__shm_group_committed(prs_shm *region, uint32_t slot);

/* The handle stays mapped while referenced (each placed object holds one). */
void prs__shm_ref(prs_shm *r);
void prs__shm_unref(prs_shm *r);

#endif /* PRS_SHM_INTERNAL_H */
