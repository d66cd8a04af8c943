/* prs_counters.h - event counters that many threads add to and anyone reads:
 * exact (no increment is ever lost), cheap to add (no lock, no contended
 * cache line for the first PRS_COUNTER_STRIPES threads), summed on read. */
#ifndef PRS_COUNTERS_H
#define PRS_COUNTERS_H

#include "prs_common.h"

#include <stddef.h>
#include <stdint.h>

/* The most counters one prs_counters holds. */
#define PRS_COUNTERS_MAX 16

typedef struct prs_counters prs_counters;

/* n counters (1..PRS_COUNTERS_MAX), all 0, allocated through `allocator`
 * (NULL: the default). PRS_OK, or PRS_EINVAL (n out of range, out NULL) /
 * PRS_ENOMEM with *out NULL. */
int prs_counters_new(size_t n, const prs_allocator *allocator, prs_counters **out);
/* NULL-safe. */
void prs_counters_free(prs_counters *c);
/* Adds v to counter i (i < n; anything else is ignored). Thread-safe. */
void prs_counters_add(prs_counters *c, size_t i, uint64_t v);
/* Counter i now (0 for an i out of range). Each add is seen whole; adds made
 * while it reads may or may not be in the sum. */
uint64_t prs_counters_get(const prs_counters *c, size_t i);
/* How many counters c holds. */
size_t prs_counters_size(const prs_counters *c);

#endif /* PRS_COUNTERS_H */
