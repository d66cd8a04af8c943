/*
 * prs_shm_kv.h - a bounded key/value area in a shared-memory region: the
 * records of idempotency keys shared by worker processes (Python's
 * SharedIdempotencyStore is made of it).
 *
 *   prs_shm_kv_config kc;
 *   prs_shm_kv_config_init(&kc);            (max_keys 1024, keys 256 B, values 4 KiB)
 *   prs_shm_kv *kv;
 *   prs_shm_kv_open(region, "idem", &kc, NULL, &kv);
 *   prs_shm_kv_result res;
 *   prs_shm_kv_begin(kv, "order-1", 7, fp, fplen, tok, toklen, lease_ns, now, NULL, NULL, &res);
 *   if (res.state == PRS_KV_ACQUIRED) {      (run the operation, then)
 *       prs_shm_kv_complete(kv, "order-1", 7, tok, toklen, value, vlen, ttl_ns, now);
 *   }
 *   prs_shm_kv_free(kv);
 *
 * A record is a key (at most max_key_bytes), a state (in progress or
 * completed), the owner token of an in-progress record (its lease), a
 * payload fingerprint, an expiry (the lease's end, or the stored value's
 * retention) and a value of at most max_value_bytes. Every record has room
 * for the largest value: the area's size is fixed when it is created
 * (prs_shm_kv_bytes()), and never grows or fragments. A value larger than
 * max_value_bytes is refused (PRS_ERANGE); a region without room for the
 * area is PRS_EFULL at open.
 *
 * Bounded: at most max_keys records. A new key takes a free record, else
 * an expired one, else the oldest completed one; a live lease is never
 * evicted (a table full of live leases: PRS_EFULL).
 *
 * Times are int64 ns of one monotonic clock that every process shares
 * (CLOCK_MONOTONIC is system-wide), passed explicitly as now_ns.
 *
 * Crash safety: every operation runs under the region's kind of pid lock
 * (a dead holder's lock is taken over) and writes through an undo journal in
 * the area: the bytes it is about to overwrite go to the journal first, and
 * the journal is emptied when the step is whole. Whoever takes the lock over
 * from a holder killed in the middle finds a non-empty journal and rolls the
 * step back, so a SIGKILL at any instant leaves the area as it was before or
 * after the step.
 */
#ifndef PRS_SHM_KV_H
#define PRS_SHM_KV_H

#include <stddef.h>
#include <stdint.h>

#include "prs_common.h"
#include "prs_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_shm_kv prs_shm_kv;

#define PRS_SHM_KV_TOKEN_MAX 32 /* bytes of an owner token */
#define PRS_SHM_KV_FP_MAX 64    /* bytes of a fingerprint */
#define PRS_SHM_KV_MAX_KEYS ((uint32_t)1 << 24)
#define PRS_SHM_KV_KEY_MAX 1024
#define PRS_SHM_KV_VALUE_MAX ((uint32_t)1 << 26)

typedef struct prs_shm_kv_config {
    uint32_t max_keys;        /* records: 1..PRS_SHM_KV_MAX_KEYS (default 1024) */
    uint32_t max_key_bytes;   /* 1..PRS_SHM_KV_KEY_MAX (default 256) */
    uint32_t max_value_bytes; /* room of every record's value: 1..PRS_SHM_KV_VALUE_MAX (4096) */
} prs_shm_kv_config;

void prs_shm_kv_config_init(prs_shm_kv_config *cfg);
/* PRS_OK or PRS_EINVAL (a field out of its range). */
int prs_shm_kv_config_check(const prs_shm_kv_config *cfg);
/* The bytes an area of cfg takes in a region (0 when cfg is invalid). */
size_t prs_shm_kv_bytes(const prs_shm_kv_config *cfg);

/* Finds the area `name` of region or makes it. *out on PRS_OK (it references
 * the region: it stays mapped until prs_shm_kv_free). Errors: PRS_EINVAL
 * (name, config), PRS_ESTATE (the entry exists with another kind or config:
 * *found (when not NULL) gets its config, zeroed when another kind),
 * PRS_EFULL (no room in the region), PRS_EPROTO (a corrupt entry),
 * PRS_ENOMEM. */
int prs_shm_kv_open(prs_shm *region, const char *name, const prs_shm_kv_config *cfg,
                    const prs_allocator *allocator, prs_shm_kv **out, prs_shm_kv_config *found);
void prs_shm_kv_free(prs_shm_kv *kv); /* NULL-safe */
void prs_shm_kv_config_get(const prs_shm_kv *kv, prs_shm_kv_config *cfg);

enum {
    PRS_KV_ACQUIRED = 0, /* the caller owns the key now (new, or an expired record taken over) */
    PRS_KV_DONE = 1,     /* a stored value */
    PRS_KV_BUSY = 2      /* another owner's live lease */
};

typedef struct prs_shm_kv_result {
    int state;          /* PRS_KV_* */
    int fp_match;       /* 1 when the record's fingerprint equals the one given */
    size_t value_len;   /* DONE: the value's bytes (copied to sink's buffer) */
    int64_t expires_ns; /* prs_shm_kv_peek: the record's expiry */
} prs_shm_kv_result;

/* Where begin copies a stored value: sink(ctx, len) returns len writable
 * bytes (or NULL: PRS_ENOMEM, nothing changed). It runs under the area's
 * lock: it must not block nor call into the area. sink NULL: the value is
 * not copied. */
typedef void *(*prs_shm_kv_sink)(void *ctx, size_t len);

/* One atomic step on `key`: no record or an expired one -> an in-progress
 * record owned by token until now + lease_ns (ACQUIRED; a stale record of
 * the key is replaced whatever its fingerprint); a live completed record ->
 * DONE with its value; a live lease of another token -> BUSY (a lease of
 * the same token: ACQUIRED again, its lease extended). Errors: PRS_EINVAL
 * (empty or too long key, token, fingerprint; lease_ns <= 0), PRS_EFULL
 * (every record is a live lease: nothing changed), PRS_ENOMEM (sink). */
int prs_shm_kv_begin(prs_shm_kv *kv, const void *key, size_t klen, const void *fp, size_t fplen,
                     const void *token, size_t toklen, int64_t lease_ns, int64_t now_ns,
                     prs_shm_kv_sink sink, void *ctx, prs_shm_kv_result *out);
/* Stores value for ttl_ns while token still owns the in-progress record
 * (its lease may have run out as long as nobody took it over): PRS_OK;
 * PRS_ESTATE when token does not own it (nothing changed); PRS_ERANGE when
 * vlen > max_value_bytes; PRS_EINVAL. Waiters are woken. */
int prs_shm_kv_complete(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                        size_t toklen, const void *value, size_t vlen, int64_t ttl_ns,
                        int64_t now_ns);
/* Extends token's lease to now + lease_ns: PRS_OK, PRS_ESTATE (not the
 * owner, or the record is completed), PRS_EINVAL. */
int prs_shm_kv_renew(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                     size_t toklen, int64_t lease_ns, int64_t now_ns);
/* Deletes the in-progress record that token owns: PRS_OK, PRS_ESTATE,
 * PRS_EINVAL. Waiters are woken. */
int prs_shm_kv_release(prs_shm_kv *kv, const void *key, size_t klen, const void *token,
                       size_t toklen);
/* Reads key's record without changing anything, expired or not: PRS_OK
 * with out->state DONE (value copied to sink's buffer) or BUSY, its
 * fingerprint compared with fp (fp NULL: not compared) and out->expires_ns;
 * PRS_ESTATE when there is none; PRS_EINVAL; PRS_ENOMEM (sink). */
int prs_shm_kv_peek(prs_shm_kv *kv, const void *key, size_t klen, const void *fp, size_t fplen,
                    prs_shm_kv_sink sink, void *ctx, prs_shm_kv_result *out);
/* Deletes key's record whoever owns it: PRS_OK, PRS_ESTATE (none). */
int prs_shm_kv_delete(prs_shm_kv *kv, const void *key, size_t klen);
/* Deletes every record. */
void prs_shm_kv_clear(prs_shm_kv *kv);
/* Records in use (expired ones not yet reused included). */
size_t prs_shm_kv_count(prs_shm_kv *kv);

/* Waiting for a change: seq = prs_shm_kv_seq(kv) before looking at a key,
 * then prs_shm_kv_wait(kv, seq, timeout_ns) returns once a record was
 * completed, released or deleted since (in any process), or after
 * timeout_ns (a futex on Linux; elsewhere a sleep of at most 2 ms). It may
 * return early. */
uint32_t prs_shm_kv_seq(const prs_shm_kv *kv);
void prs_shm_kv_wait(prs_shm_kv *kv, uint32_t seq, int64_t timeout_ns);

/* Checks the area's invariants (records, index, free list and counts agree):
 * PRS_OK or PRS_EPROTO. For tests and diagnostics; takes the lock. */
int prs_shm_kv_check(prs_shm_kv *kv);

#ifdef __cplusplus
}
#endif
#endif /* PRS_SHM_KV_H */
