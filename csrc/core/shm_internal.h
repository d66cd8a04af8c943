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

/* "<kind>(f1=v1, f2=v2)": the params p of the limiter algorithm named kind
 * (shm_limiter.c; "<kind>(...)" for another kind). */
void prs__shm_describe(char *out, size_t cap, const char *kind, const void *p);

/* ---- a keyed table placed in a region (shm_keyed.c; keyed.c dispatches to
 * these when prs_keyed_new_placed made the table) ---- */
typedef struct prs__shm_keyed prs__shm_keyed;
struct prs_keyed_config;
int prs__shm_keyed_open(const struct prs_keyed_config *cfg, const prs_shm_place *place,
                        prs__shm_keyed **out, prs_config_error *why);
void prs__shm_keyed_free(prs__shm_keyed *k);
int prs__shm_keyed_decide(prs__shm_keyed *k, const void *key, size_t len, int64_t now,
                          int64_t n, int consume, prs_decision *d);
int prs__shm_keyed_reset_key(prs__shm_keyed *k, const void *key, size_t len);
void prs__shm_keyed_reset_all(prs__shm_keyed *k);
int64_t prs__shm_keyed_prune(prs__shm_keyed *k, int64_t now);
int prs__shm_keyed_contains(prs__shm_keyed *k, const void *key, size_t len, int64_t now);
double prs__shm_keyed_available(prs__shm_keyed *k, const void *key, size_t len, int64_t now);
int64_t prs__shm_keyed_len(prs__shm_keyed *k);
size_t prs__shm_keyed_memory(const prs__shm_keyed *k);
int64_t prs__shm_keyed_max_keys(const prs__shm_keyed *k);
const void *prs__shm_keyed_params(const prs__shm_keyed *k);
/* keyed.c: random bytes (getrandom, /dev/urandom, else the clock). */
void prs__keyed_random(uint8_t *buf, size_t n);

/* The handle stays mapped while referenced (each placed object holds one). */
void prs__shm_ref(prs_shm *r);
void prs__shm_unref(prs_shm *r);


/* ---- owners that survive pid reuse (shm_owner.c) ----------------------- */

/* This process as a record in a region: pid << 32 | the low 32 bits of its
 * start time (/proc/<pid>/stat field 22; 0 where there is no /proc). Never 0;
 * bit 63 is always clear (callers may use it as a flag). */
uint64_t prs__self_token(void);
/* 1 when the process a token names is gone: no such pid, or the pid now
 * names a process started at another time (a reused pid). */
int prs__token_dead(uint64_t token);
#define PRS__TOKEN_FLAG (UINT64_C(1) << 63)
#define PRS__REAP_INTERVAL_NS INT64_C(250000000) /* a full object looks for dead holders */

/* ---- a bulkhead placed in a region (shm_bulkhead.c; bulkhead.c dispatches) */

typedef struct prs__shm_bh prs__shm_bh;
struct prs_bulkhead_config;
int prs__shm_bh_place(const struct prs_bulkhead_config *cfg, const prs_shm_place *place,
                      prs__shm_bh **out);
int prs__shm_bh_claim(prs__shm_bh *s);        /* 1 when a permit was taken */
int prs__shm_bh_unclaim(prs__shm_bh *s);      /* PRS_OK, PRS_ESTATE when this process holds none */
/* Waits until a permit may have freed (a release anywhere) or deadline_ns
 * (never past 50 ms from now); looks for dead holders when due. */
void prs__shm_bh_sleep(prs__shm_bh *s, int64_t deadline_ns);
int64_t prs__shm_bh_active(prs__shm_bh *s);
int prs__shm_bh_reap(prs__shm_bh *s);
void prs__shm_bh_count(prs__shm_bh *s, int which, int64_t delta); /* 0 acq 1 rel 2 rej 3 canc */
int64_t prs__shm_bh_counter(prs__shm_bh *s, int which);

#endif /* PRS_SHM_INTERNAL_H */
