/*
 * clock.c - ManualClock and MonotonicClock.
 *
 * ManualClock holds int64 nanoseconds in an atomic, read by primitives without
 * calling into Python. Waits of the library on a ManualClock advance it instead
 * of sleeping (prs_py_clock_wait), so time-based tests are instant and exact.
 * Every advance adds atomically (concurrent advances each count) and
 * saturates at 2^63 - 1 ns instead of wrapping (prs__atomic_sat_add).
 */
#include "prs_py.h"

/* The parsed arguments of ManualClock() and of its methods. */
typedef struct prs_py_manual_clock_args {
    int64_t start_ns;
    int64_t ns; /* advance, advance_ns, set */
} prs_py_manual_clock_args;

#include "gen/clock.h"
