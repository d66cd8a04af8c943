/*
 * counter.c - the stripe indices of the striped counters (counter_internal.h)
 * and prs_counters, the public counter set built on them.
 *
 * Stripe indices: a process-wide bitmap of PRS__STRIPES bits. A thread claims
 * the lowest free bit the first time it counts anything and keeps it until it
 * exits (a pthread key's destructor clears the bit); the claim's
 * compare-and-swap (acquire) pairs with the release of the bit (release), so
 * the next owner of an index sees every store the previous one made to its
 * stripes. With every bit taken the thread uses the shared line for good
 * (slot PRS__STRIPES + 1), adding atomically. After fork() the child's bitmap
 * still has the bits of the parent's other threads: they stay taken (at worst
 * later threads use the shared line; counts stay exact).
 *
 * prs_counters: ceil(n / PRS__STRIPE_WIDTH) stripe sets in one aligned block.
 */
#include "counter_internal.h"
#include "prs_counters.h"

#include <pthread.h>

_Thread_local int prs__stripe_slot PRS__TLS_FAST;

static _Atomic uint32_t taken;  /* bit k: stripe index k is some live thread's */
static pthread_key_t key;
static int key_ok;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void release_slot(void *v) {
    uintptr_t slot = (uintptr_t)v; /* index + 1 */
    if (slot >= 1 && slot <= PRS__STRIPES)
        atomic_fetch_and_explicit(&taken, ~(1u << (slot - 1)), memory_order_release);
}

static void make_key(void) { key_ok = pthread_key_create(&key, release_slot) == 0; }

int prs__stripe_claim(void) {
    int slot = PRS__STRIPES + 1; /* the shared line */
    pthread_once(&once, make_key);
    if (key_ok) {
        uint32_t cur = atomic_load_explicit(&taken, memory_order_relaxed);
        for (;;) {
            uint32_t free_bits = ~cur & ((1u << PRS__STRIPES) - 1);
            if (!free_bits) break;
            int k = __builtin_ctz(free_bits);
            if (atomic_compare_exchange_weak_explicit(&taken, &cur, cur | (1u << k),
                                                      memory_order_acquire, memory_order_relaxed)) {
                if (pthread_setspecific(key, (void *)(uintptr_t)(k + 1)) == 0) {
                    slot = k + 1;
                } else { /* no destructor would give it back: do not keep it */
                    atomic_fetch_and_explicit(&taken, ~(1u << k), memory_order_release);
                }
                break;
            }
        }
    }
    prs__stripe_slot = slot;
    return slot;
}

/* ---- prs_counters ------------------------------------------------------------ */

int prs_counters_new(size_t n, const prs_allocator *allocator, prs_counters **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (n < 1 || n > PRS_COUNTERS_MAX) return PRS_EINVAL;
    const prs_allocator *a = prs__alloc_or_default(allocator);
    size_t nsets = (n + PRS__STRIPE_WIDTH - 1) / PRS__STRIPE_WIDTH;
    prs_counters *c = prs__malloc(a, sizeof *c);
    if (!c) return PRS_ENOMEM;
    void *block = prs__malloc(a, nsets * sizeof(prs__stripes) + 63);
    if (!block) {
        prs__free(a, c);
        return PRS_ENOMEM;
    }
    c->n = n;
    c->block = block;
    c->alloc = *a;
    c->sets = (prs__stripes *)(((uintptr_t)block + 63) & ~(uintptr_t)63);
    for (size_t i = 0; i < nsets; i++) prs__stripes_init(&c->sets[i]);
    *out = c;
    return PRS_OK;
}

void prs_counters_free(prs_counters *c) {
    if (!c) return;
    prs_allocator a = c->alloc;
    prs__free(&a, c->block);
    prs__free(&a, c);
}

void prs_counters_add(prs_counters *c, size_t i, uint64_t v) {
    if (!c || i >= c->n) return;
    prs__counters_add(c, i, v);
}

uint64_t prs_counters_get(const prs_counters *c, size_t i) {
    if (!c || i >= c->n) return 0;
    return prs__stripes_get(&c->sets[i / PRS__STRIPE_WIDTH], (int)(i % PRS__STRIPE_WIDTH));
}

size_t prs_counters_size(const prs_counters *c) { return c ? c->n : 0; }
