/*
 * counter_internal.h - striped event counters, for objects whose hot path
 * takes no lock (GCRA's compare-and-swap, a limiter in shared memory, a
 * group, a retry's first attempt); not installed.
 *
 * Layout: PRS__STRIPES cache lines owned one per thread, plus one shared
 * line. A thread claims a stripe index the first time it counts (a bit of a
 * process-wide bitmap, given back when the thread exits); while it holds the
 * index it is the only writer of that stripe in every object, so its add is a
 * relaxed load and store - no lock prefix, no cache line another core writes.
 * A thread that finds every index taken adds to the shared line with an
 * atomic fetch-add. Either way no increment is lost (exact under threads);
 * a read sums the lines with relaxed loads.
 *
 * Objects counted under a lock of their own (a spinlocked limiter, a keyed
 * shard, a bulkhead's mutex) keep plain fields beside that lock instead.
 */
#ifndef PRS_COUNTER_INTERNAL_H
#define PRS_COUNTER_INTERNAL_H

#include "prs_internal.h"

#define PRS__STRIPES 8
/* Counters per stripe line (8 x 8 bytes: one cache line). */
#define PRS__STRIPE_WIDTH 8

typedef struct {
    _Alignas(64) _Atomic uint64_t v[PRS__STRIPE_WIDTH];
} prs__stripe;

typedef struct prs__stripes {
    prs__stripe s[PRS__STRIPES + 1]; /* [PRS__STRIPES]: the shared line */
} prs__stripes;

#if defined(__GLIBC__) && defined(__GNUC__)
#define PRS__TLS_FAST __attribute__((tls_model("initial-exec"))) /* 4 bytes of static TLS */
#else
#define PRS__TLS_FAST
#endif

/* This thread's stripe + 1 (0: not claimed yet). common.c's counter code. */
extern _Thread_local int prs__stripe_slot PRS__TLS_FAST;
int prs__stripe_claim(void); /* claims one (or PRS__STRIPES: the shared line); returns slot + 1 */

static inline void prs__stripes_init(prs__stripes *s) {
    for (int k = 0; k <= PRS__STRIPES; k++)
        for (int i = 0; i < PRS__STRIPE_WIDTH; i++) atomic_init(&s->s[k].v[i], 0);
}

/* Adds v to counter i (< PRS__STRIPE_WIDTH). */
static inline void prs__stripes_add(prs__stripes *s, int i, uint64_t v) {
    int k = prs__stripe_slot;
    if (__builtin_expect(k == 0, 0)) k = prs__stripe_claim();
    k--;
    _Atomic uint64_t *p = &s->s[k].v[i];
    if (__builtin_expect(k < PRS__STRIPES, 1)) /* this thread is the only writer */
        atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + v,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(p, v, memory_order_relaxed);
}

static inline uint64_t prs__stripes_get(const prs__stripes *s, int i) {
    uint64_t sum = 0;
    for (int k = 0; k <= PRS__STRIPES; k++)
        sum += atomic_load_explicit(&s->s[k].v[i], memory_order_relaxed);
    return sum;
}

/* The public counter set (prs_counters.h), laid out here so that a hot path
 * (the binding's retry fast path) adds without a call. */
struct prs_counters {
    size_t n;
    struct prs__stripes *sets; /* ceil(n / PRS__STRIPE_WIDTH), aligned inside block */
    void *block;
    prs_allocator alloc;
};

/* prs_counters_add without the checks: c valid, i < c->n. */
static inline void prs__counters_add(struct prs_counters *c, size_t i, uint64_t v) {
    prs__stripes_add(&c->sets[i / PRS__STRIPE_WIDTH], (int)(i % PRS__STRIPE_WIDTH), v);
}

#endif /* PRS_COUNTER_INTERNAL_H */
