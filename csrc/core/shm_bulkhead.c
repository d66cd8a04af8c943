/*
 * shm_bulkhead.c - the permits of a bulkhead placed in a shared-memory
 * region (prs_bulkhead_new_placed, prs_shm.h); bulkhead.c keeps each
 * process's waiters and dispatches here.
 *
 * Block: max_concurrent slots, one per permit; a held permit is a slot that
 * records its holder (prs__self_token(): pid and start time), so taking one
 * is one compare-and-swap of a free slot (0) to the token and giving it back
 * one compare-and-swap to 0: a process killed at any instant holds a slot or
 * does not, and the permits held are exactly the slots in use. A slot of a
 * dead process is freed by whoever finds the bulkhead full, at most every
 * PRS__REAP_INTERVAL_NS (a shared time stamp elects one process), and by a
 * waiter's slice: within 0.3 s of the next caller that needs it.
 *
 * Waking across processes: a waiter sleeps on `seq` (Linux: a futex without
 * FUTEX_PRIVATE_FLAG, so every process mapping the page shares it; elsewhere
 * a 1 ms poll), at most 50 ms at a time; a release that sees sleepers bumps
 * `seq` and wakes one. sleepers is raised before the waiter looks for a free
 * slot and the release frees its slot before it reads sleepers (both
 * sequentially consistent), so a release never slips between a waiter's
 * look and its sleep. A sleeper killed in its sleep leaves sleepers raised:
 * releases then make a wake-up call for nobody, nothing worse.
 *
 * Counters (acquired, released, rejected, cancelled) are atomic adds in the
 * region: a process killed between taking a permit and counting it leaves a
 * total off by one; the permits themselves never are.
 */
#include "prs_bulkhead.h"
#include "shm_internal.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define BH_MAGIC UINT64_C(0x5052534248440001)

struct prs__shm_bh {
    uint64_t magic;
    int64_t max;
    uint64_t length;
    _Alignas(64) _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
    _Atomic int64_t next_reap;
    _Alignas(64) _Atomic int64_t counters[4];
    _Alignas(64) _Atomic uint64_t slots[];
};

typedef struct bh_conf {
    int64_t max_concurrent;
} bh_conf;

static void bh_init(void *ctx, void *block) {
    const bh_conf *c = ctx;
    prs__shm_bh *s = block;
    s->magic = BH_MAGIC;
    s->max = c->max_concurrent;
    s->length = sizeof *s + (size_t)c->max_concurrent * sizeof(uint64_t);
    atomic_init(&s->seq, 0);
    atomic_init(&s->sleepers, 0);
    atomic_init(&s->next_reap, 0);
    for (int i = 0; i < 4; i++) atomic_init(&s->counters[i], 0);
    for (int64_t i = 0; i < c->max_concurrent; i++) atomic_init(&s->slots[i], 0);
}

int prs__shm_bh_place(const prs_bulkhead_config *cfg, const prs_shm_place *place,
                      prs__shm_bh **out) {
    bh_conf c = {cfg->max_concurrent};
    if (c.max_concurrent > PRS_SHM_BULKHEAD_MAX) return PRS_ERANGE;
    size_t len = sizeof(prs__shm_bh) + (size_t)c.max_concurrent * sizeof(uint64_t);
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, "bulkhead", &c, sizeof c, len, bh_init, &c,
                           &blk, NULL, NULL, NULL);
    if (rc) return rc;
    prs__shm_bh *s = blk;
    if (s->magic != BH_MAGIC || s->max != c.max_concurrent || s->length != len) return PRS_EPROTO;
    *out = s;
    return PRS_OK;
}

/* Where a thread starts looking: its own place, so threads do not all
 * compete for slot 0. */
static _Thread_local uint32_t hint;

/* Frees the slots of dead holders: how many. */
static int reap(prs__shm_bh *s) {
    int n = 0;
    for (int64_t i = 0; i < s->max; i++) {
        uint64_t t = atomic_load_explicit(&s->slots[i], memory_order_relaxed);
        if (t && prs__token_dead(t) &&
            atomic_compare_exchange_strong_explicit(&s->slots[i], &t, 0, memory_order_seq_cst,
                                                    memory_order_relaxed))
            n++;
    }
    return n;
}

int prs__shm_bh_reap(prs__shm_bh *s) {
    int n = reap(s);
    if (n && atomic_load_explicit(&s->sleepers, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(&s->seq, 1, memory_order_seq_cst);
#ifdef __linux__
        syscall(SYS_futex, &s->seq, FUTEX_WAKE, n, NULL, NULL, 0);
#endif
    }
    return n;
}

/* The election of one reaper per interval: 1 when this caller is it. */
static int reap_due(prs__shm_bh *s) {
    int64_t now = prs_monotonic_ns();
    int64_t due = atomic_load_explicit(&s->next_reap, memory_order_relaxed);
    return now >= due && atomic_compare_exchange_strong_explicit(
                             &s->next_reap, &due, now + PRS__REAP_INTERVAL_NS,
                             memory_order_relaxed, memory_order_relaxed);
}

static int scan_claim(prs__shm_bh *s, uint64_t me) {
    int64_t max = s->max, start = (int64_t)(hint % (uint64_t)max);
    for (int64_t k = 0; k < max; k++) {
        int64_t i = start + k < max ? start + k : start + k - max;
        uint64_t t = atomic_load_explicit(&s->slots[i], memory_order_relaxed);
        if (t == 0 && atomic_compare_exchange_strong_explicit(&s->slots[i], &t, me,
                                                              memory_order_seq_cst,
                                                              memory_order_relaxed)) {
            hint = (uint32_t)i;
            return 1;
        }
    }
    return 0;
}

int prs__shm_bh_claim(prs__shm_bh *s) {
    uint64_t me = prs__self_token();
    if (scan_claim(s, me)) return 1;
    if (reap_due(s) && prs__shm_bh_reap(s)) return scan_claim(s, me);
    return 0;
}

int prs__shm_bh_unclaim(prs__shm_bh *s) {
    uint64_t me = prs__self_token();
    int64_t max = s->max, start = (int64_t)(hint % (uint64_t)max);
    for (int64_t k = 0; k < max; k++) {
        int64_t i = start + k < max ? start + k : start + k - max;
        uint64_t t = atomic_load_explicit(&s->slots[i], memory_order_relaxed);
        if (t == me && atomic_compare_exchange_strong_explicit(&s->slots[i], &t, 0,
                                                               memory_order_seq_cst,
                                                               memory_order_relaxed)) {
            if (atomic_load_explicit(&s->sleepers, memory_order_seq_cst)) {
                atomic_fetch_add_explicit(&s->seq, 1, memory_order_seq_cst);
#ifdef __linux__
                syscall(SYS_futex, &s->seq, FUTEX_WAKE, 1, NULL, NULL, 0);
#endif
            }
            return PRS_OK;
        }
    }
    return PRS_ESTATE;
}

static int any_free(prs__shm_bh *s) {
    for (int64_t i = 0; i < s->max; i++)
        if (atomic_load_explicit(&s->slots[i], memory_order_seq_cst) == 0) return 1;
    return 0;
}

void prs__shm_bh_sleep(prs__shm_bh *s, int64_t deadline_ns) {
    int64_t now = prs_monotonic_ns();
    int64_t wake = prs__min64(deadline_ns, prs__sat_add(now, 50 * PRS_NS_PER_MS));
    if (wake <= now) return;
    if (reap_due(s) && prs__shm_bh_reap(s)) return;
    atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_seq_cst);
    uint32_t seen = atomic_load_explicit(&s->seq, memory_order_seq_cst);
    if (!any_free(s)) {
#ifdef __linux__
        int64_t d = wake - now;
        struct timespec ts = {(time_t)(d / PRS_NS_PER_SEC), (long)(d % PRS_NS_PER_SEC)};
        syscall(SYS_futex, &s->seq, FUTEX_WAIT, seen, &ts, NULL, 0); /* shared: no PRIVATE flag */
#else
        (void)seen;
        prs_sleep_ns(prs__min64(wake - now, PRS_NS_PER_MS));
#endif
    }
    atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_seq_cst);
}

int64_t prs__shm_bh_active(prs__shm_bh *s) {
    int64_t n = 0;
    for (int64_t i = 0; i < s->max; i++)
        n += atomic_load_explicit(&s->slots[i], memory_order_acquire) != 0;
    return n;
}

void prs__shm_bh_count(prs__shm_bh *s, int which, int64_t delta) {
    atomic_fetch_add_explicit(&s->counters[which], delta, memory_order_relaxed);
}

int64_t prs__shm_bh_counter(prs__shm_bh *s, int which) {
    return atomic_load_explicit(&s->counters[which], memory_order_relaxed);
}

int prs_bulkhead_placed_mismatch(const prs_bulkhead_config *cfg, const prs_shm_place *place,
                                 char *buf, size_t cap) {
    if (!cfg || !place || !place->region || !buf || cap == 0) return PRS_EINVAL;
    bh_conf want = {cfg->max_concurrent};
    _Alignas(16) unsigned char found[PRS_SHM_CONFIG_MAX];
    char kind[PRS_SHM_KIND_MAX + 1];
    void *blk = NULL;
    int rc = prs_shm_entry(place->region, place->name, "bulkhead", &want, sizeof want, 1, NULL,
                           NULL, &blk, NULL, kind, found);
    if (rc != PRS_ESTATE) return PRS_EINVAL;
    if (strcmp(kind, "bulkhead") == 0) {
        bh_conf h;
        memcpy(&h, found, sizeof h);
        snprintf(buf, cap, "exists as bulkhead(max_concurrent=%lld), asked for "
                 "bulkhead(max_concurrent=%lld)", (long long)h.max_concurrent,
                 (long long)want.max_concurrent);
    } else {
        snprintf(buf, cap, "exists as %s(...), asked for bulkhead(max_concurrent=%lld)", kind,
                 (long long)want.max_concurrent);
    }
    return PRS_OK;
}
