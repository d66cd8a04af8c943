/*
 * clock.c - ManualClock and MonotonicClock.
 *
 * ManualClock holds int64 nanoseconds in an atomic, read by primitives without
 * calling into Python. Waits of the library on a ManualClock advance it instead
 * of sleeping (prs_py_clock_wait), so time-based tests are instant and exact.
 */
#include "prs_py.h"

#include <math.h>

/* The parsed arguments of ManualClock() and of its methods. */
typedef struct prs_py_manual_clock_args {
    int64_t start_ns;
    int64_t ns; /* advance, advance_ns, set */
} prs_py_manual_clock_args;

#include "gen/clock.h"

/* ---- ManualClock -------------------------------------------------------- */

/* Every advance of a ManualClock goes through here: concurrent advances each
 * add their own amount, and the time saturates at 2^63 - 1 ns instead of
 * wrapping negative. */
void prs_py_manual_clock_add(_Atomic int64_t *t, int64_t ns) {
    int64_t seen = atomic_load_explicit(t, memory_order_acquire);
    while (!atomic_compare_exchange_weak_explicit(t, &seen, prs__sat_add(seen, ns),
                                                  memory_order_acq_rel, memory_order_acquire)) {
    }
}
