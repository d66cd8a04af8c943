/*
 * prs_shm.h - a named shared-memory region that several processes open by the
 * same name, and limiters placed in it (one limit across worker processes).
 *
 *   prs_shm_config rc;
 *   prs_shm_config_init(&rc);                 (size PRS_SHM_DEFAULT_SIZE, mode 0600)
 *   prs_shm *region;
 *   prs_shm_open("api", &rc, &region, NULL);  (creates it or opens the existing one)
 *   prs_token_bucket_config cfg; prs_token_bucket_config_init(&cfg); cfg.capacity = 40;
 *   prs_shm_place place = {region, "per-client"};
 *   prs_limiter *lim;
 *   prs_limiter_new_placed(&prs_algo_token_bucket, &cfg, NULL, &place, &lim, NULL);
 *   prs_shm_close(region);                    (the limiter keeps the mapping alive)
 *   ... prs_limiter_check(lim, now, 1, &d) in every process ...
 *   prs_limiter_free(lim);
 *
 * The region is a file: under `directory`, or under /dev/shm (POSIX shared
 * memory, what shm_open uses on Linux) when directory is NULL, named
 * "pyresilience.<name>". The first opener creates it under a temporary name,
 * initialises its versioned header and links it to the final name, so a
 * region is never seen half-made and two processes racing to create it end
 * with one region. An existing region is checked before use: a regular file of
 * this user, of the size its header states, with our magic, version and
 * layout; anything else is refused (PRS_EPROTO, or PRS_EBACKEND with errno
 * EPERM for another user's file) and never read past its size.
 *
 * Inside: a table of named entries (name, kind, the config bytes a later
 * opener must match, offset, length) and a bump allocator; an entry is never
 * freed (unlink the region to start over). A full region or table: PRS_EFULL.
 *
 * Crash safety: locks in the region hold the owner's pid; a waiter that finds
 * the owner dead (kill(pid, 0) fails with ESRCH) takes the lock over. What a
 * lock guards is written so that a holder killed at any instant leaves it
 * consistent: an entry becomes visible by one atomic store after it is whole;
 * a limiter's state is double-buffered (the decision writes the inactive copy
 * and publishes it by one atomic store); GCRA's one-word state is a
 * compare-and-swap with no lock at all. Limits: pids are compared within one
 * pid namespace (processes of several containers sharing the directory are
 * not told apart), and a reused pid of a dead owner delays the takeover until
 * that process exits.
 */
#ifndef PRS_SHM_H
#define PRS_SHM_H

#include <stddef.h>

#include "prs_breaker.h"
#include "prs_bulkhead.h"
#include "prs_common.h"
#include "prs_keyed.h"
#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_shm prs_shm;

#define PRS_SHM_DEFAULT_SIZE ((size_t)1 << 20) /* 1 MiB: about 250 entries */
#define PRS_SHM_MIN_SIZE ((size_t)16 << 10)     /* 16 KiB */
#define PRS_SHM_MAX_SIZE ((size_t)1 << 40)
#define PRS_SHM_NAME_MAX 63                     /* bytes of a region's or an entry's name */
#define PRS_SHM_VERSION 1

typedef struct prs_shm_config {
    size_t size;           /* bytes, when creating (PRS_SHM_MIN_SIZE..PRS_SHM_MAX_SIZE);
                              an existing region keeps its own */
    const char *directory; /* NULL: /dev/shm (or /tmp where there is none) */
    unsigned mode;         /* permission bits of a created region: 0600 */
    const prs_allocator *allocator; /* NULL: the default */
} prs_shm_config;

void prs_shm_config_init(prs_shm_config *cfg);

/* PRS_OK when `name` may name a region or an entry: 1..PRS_SHM_NAME_MAX bytes,
 * no '/', no "..", no control character; PRS_EINVAL otherwise. */
int prs_shm_name_check(const char *name);

/* Opens the region `name`, creating it when it does not exist. *out on
 * PRS_OK. Errors: PRS_EINVAL (name, size, mode), PRS_EPROTO (not a region of
 * this version: truncated, corrupt header, wrong version or layout, not a
 * regular file), PRS_EBACKEND (a system call failed: *sys_errno, e.g. EACCES,
 * or EPERM for a file owned by another user), PRS_ENOMEM. sys_errno may be
 * NULL. */
int prs_shm_open(const char *name, const prs_shm_config *cfg, prs_shm **out, int *sys_errno);
/* Drops this handle (NULL-safe). The mapping stays while objects placed in
 * it through this handle live; the region itself stays until unlinked. */
void prs_shm_close(prs_shm *r);
/* Removes the region's name (processes that have it open keep using it).
 * PRS_OK, PRS_EINVAL, PRS_EBACKEND (*sys_errno: ENOENT when there is none). */
int prs_shm_unlink(const char *name, const char *directory, int *sys_errno);

int prs_shm_created(const prs_shm *r); /* 1 when this handle created the region */
size_t prs_shm_size(const prs_shm *r);
const char *prs_shm_path(const prs_shm *r);
/* The file of region `name` in `directory` (NULL: the default, as
 * prs_shm_open) into buf: PRS_OK, or PRS_EINVAL when it does not fit in cap. */
int prs_shm_path_for(const char *name, const char *directory, char *buf, size_t cap);
/* Entries in use, and the bytes left for new ones. */
size_t prs_shm_entries(const prs_shm *r);
size_t prs_shm_free_bytes(const prs_shm *r);

/* ---- entries (for objects placed in the region) ----------------------- */

#define PRS_SHM_KIND_MAX 31
#define PRS_SHM_CONFIG_MAX 128

/* Finds the entry `name` or makes it (`length` bytes, 64-byte aligned,
 * initialised by init(ctx, block) before any other process can see it).
 * An existing entry must have the same kind and config bytes: otherwise
 * PRS_ESTATE, with its kind and config copied to *found_kind (KIND_MAX + 1
 * bytes) and found_config (CONFIG_MAX bytes) when not NULL. *block: the
 * entry's bytes in this mapping; *created: 1 when made now. PRS_EFULL when
 * the table or the space is full; PRS_EPROTO when the entry is corrupt
 * (offset or length outside the region); PRS_EINVAL (name, kind, sizes). */
int prs_shm_entry(prs_shm *r, const char *name, const char *kind, const void *config,
                  size_t config_len, size_t length, void (*init)(void *ctx, void *block),
                  void *ctx, void **block, int *created, char *found_kind, void *found_config);

/* A limiter's placement (prs_limiter_new_placed): the entry `name` of region. */
typedef struct prs_shm_place {
    prs_shm *region;
    const char *name;
} prs_shm_place;

/* Makes a limiter of `algo` whose params and state live in the entry
 * place->name of place->region (place NULL: prs_limiter_new), creating the
 * entry or opening the existing one; every process that opens the same name
 * decides on the same state. The limiter references the region (it stays
 * mapped until prs_limiter_free). Errors: prs_limiter_new's, PRS_EINVAL (a bad
 * name), PRS_ESTATE (the entry exists with another algorithm or config:
 * prs_limiter_placed_mismatch() words it), PRS_EFULL (no room), PRS_EPROTO
 * (a corrupt entry).
 *
 * prs_limiter_reconfigure on a placed limiter changes the entry's params for
 * every process (journalled: a process killed in it leaves the old config or
 * the new one whole); a later open compares its config with the params in
 * force, so after a reconfiguration opening with the old config is
 * PRS_ESTATE (the stored configuration wins). A sliding log keeps its limit
 * (PRS_ENOTSUP: its ring is sized at creation); its window may change.
 *
 * prs_group_new takes placed limiters of one region (not mixed with
 * in-process members, nor of several regions: PRS_ENOTSUP): a request is
 * taken from all of them or from none, also when the process is killed in
 * the middle (the region's group journal, shm_group.c). */
int prs_limiter_new_placed(const prs_algo *algo, const void *config,
                           const prs_allocator *allocator, const prs_shm_place *place,
                           prs_limiter **out, prs_config_error *why);
/* 1 when lim was placed in a region, else 0. */
int prs_limiter_shared(const prs_limiter *lim);
/* After PRS_ESTATE: writes into buf (cap bytes, NUL-terminated) both
 * configurations, e.g. "exists as token_bucket(capacity=10, refill_rate=5),
 * asked for token_bucket(capacity=20, refill_rate=5)". Returns PRS_OK, or
 * PRS_EINVAL when the entry does not differ (or is absent). */
int prs_limiter_placed_mismatch(const prs_algo *algo, const void *config,
                                const prs_shm_place *place, char *buf, size_t cap);

/* Makes a keyed table (prs_keyed.h: check, peek, reset, len, prune ...)
 * whose keys live in the entry place->name of place->region: every process
 * that opens the name decides on the same state per key. cfg->params are
 * copied into the entry; cfg->max_keys sizes it once (the whole table is
 * reserved in the region: about max_keys x (state + 40 bytes)). The
 * config (algorithm, params, max_keys) must match an existing entry's:
 * PRS_ESTATE otherwise (prs_keyed_placed_mismatch words it). Errors also:
 * prs_keyed_new's, PRS_EINVAL (a bad name), PRS_EFULL (no room), PRS_EPROTO
 * (a corrupt entry). A placed table cannot be reconfigured (PRS_ENOTSUP) nor
 * be a group's member (prs_group_new: PRS_ENOTSUP). See shm_keyed.c for its
 * eviction (per bucket of 16 keys) and crash safety. */
int prs_keyed_new_placed(const prs_keyed_config *cfg, const prs_shm_place *place,
                         prs_keyed **out, prs_config_error *why);
/* 1 when t was placed in a region, else 0. */
int prs_keyed_shared(const prs_keyed *t);
/* After PRS_ESTATE: both configurations into buf (cap bytes, NUL-terminated). */
int prs_keyed_placed_mismatch(const prs_keyed_config *cfg, const prs_shm_place *place,
                              char *buf, size_t cap);

/* ---- a circuit breaker and a bulkhead in a region ------------------------
 *
 *   prs_breaker *b;
 *   prs_shm_place place = {region, "payments"};
 *   prs_breaker_new_placed(&cfg, &place, &b, NULL);   (every process: one state)
 *   prs_bulkhead *bh;
 *   prs_bulkhead_new_placed(&bcfg, &(prs_shm_place){region, "db"}, &bh, NULL);
 *
 * Then the usual prs_breaker_* / prs_bulkhead_* calls, with the same
 * decisions across every process that placed the same name: a half-open
 * breaker admits exactly half_open_max_calls trials among all of them, a
 * bulkhead exactly max_concurrent holders. A CLOSED placed breaker admits
 * with one atomic load, as in-process; its outcomes take the region's lock
 * (no striped fast path). A trial slot or a permit records its holder's pid
 * and start time: one held by a dead process comes back when the object is
 * full and next asked (at most every 250 ms of the callers' now, and in each
 * 50 ms slice of a waiting bulkhead caller). prs_breaker_reap() and
 * prs_bulkhead_reap() free them at once.
 *
 * Bulkhead specifics: waiters of every process are woken across processes
 * (Linux: a futex on a shared word; elsewhere a 1 ms poll), in no particular
 * order (FIFO holds within nothing: the first to look takes the permit); a
 * NOTIFY waiter is only served by polling it with prs_bulkhead_wait(w, now)
 * (it never blocks then); waiting counts this process's waiters; the hold
 * estimate uses prior_hold_ns. A permit belongs to the process that took it
 * (threads of one process are not told apart): a child after fork does not
 * hold its parent's permits (its release of one is PRS_ESTATE).
 *
 * Errors: as prs_limiter_new_placed (PRS_ESTATE for another configuration,
 * worded by prs_*_placed_mismatch; PRS_EFULL; PRS_EPROTO), PRS_ERANGE for
 * half_open_max_calls > 65536 or max_concurrent > PRS_SHM_BULKHEAD_MAX.
 */
#define PRS_SHM_BULKHEAD_MAX INT64_C(65536)

int prs_breaker_new_placed(const prs_breaker_config *cfg, const prs_shm_place *place,
                           prs_breaker **out, prs_config_error *why);
int prs_breaker_shared(const prs_breaker *b);
int prs_breaker_placed_mismatch(const prs_breaker_config *cfg, const prs_shm_place *place,
                                char *buf, size_t cap);
/* Frees the half-open trial slots of dead processes now: how many (0 when not placed). */
int prs_breaker_reap(prs_breaker *b);

int prs_bulkhead_new_placed(const prs_bulkhead_config *cfg, const prs_shm_place *place,
                            prs_bulkhead **out, prs_config_error *why);
int prs_bulkhead_shared(const prs_bulkhead *b);
int prs_bulkhead_placed_mismatch(const prs_bulkhead_config *cfg, const prs_shm_place *place,
                                 char *buf, size_t cap);
/* Frees the permits of dead processes now: how many (0 when not placed). */
int prs_bulkhead_reap(prs_bulkhead *b);

#ifdef __cplusplus
}
#endif
#endif /* PRS_SHM_H */
