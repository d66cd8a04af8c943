/*
 * limiters_family.c - what each in-process limiter type says about itself:
 * its parameters (name, alias, the core config field, kind, doc) and its
 * docs, one prs_py_limiter_desc per row of the algorithm table. limiters.c
 * builds the types from these: parsing, properties, text signatures and the
 * wording of errors (the core's prs_config_error names the field and why).
 */
#include "prs_py.h"

#include <stddef.h>

#define PARAM(cfg, nm, al, fld, kd, dc) {nm, al, #fld, kd, offsetof(cfg, fld), dc}

static void tb_init(void *c) { prs_token_bucket_config_init(c); }
static void gcra_init(void *c) { prs_gcra_config_init(c); }
static void lb_init(void *c) { prs_leaky_bucket_config_init(c); }
static void fw_init(void *c) { prs_fixed_window_config_init(c); }
static void sl_init(void *c) { prs_sliding_log_config_init(c); }
static void sc_init(void *c) { prs_sliding_counter_config_init(c); }

#define RECONF_TAIL " Thread-safe; bad values raise the constructor's errors and change nothing."
#define WINDOW_RECONF "Change limit and/or window (seconds) now; what is not given keeps its value.\n"

const prs_py_limiter_desc prs_py_desc_token_bucket = {
    "A token bucket holding up to `capacity` tokens, refilled continuously at\n"
    "`refill_rate` tokens per second (keyword alias: rate=), starting full.\n"
    "refill_rate=0 is a fixed budget that never refills. Admits at most\n"
    "capacity + refill_rate * T in any interval of T seconds. Thread-safe.",
    "Change capacity and/or refill_rate (alias rate) now; what is not given keeps its\n"
    "value. The tokens held now (refilled at the old rate until now) are kept, capped\n"
    "at the new capacity; no token is ever added." RECONF_TAIL,
    tb_init,
    {PARAM(prs_token_bucket_config, "capacity", NULL, capacity, PRS_PY_P_COUNT_REAL,
           "Tokens the bucket holds when full."),
     PARAM(prs_token_bucket_config, "refill_rate", "rate", refill_rate, PRS_PY_P_REAL,
           "Tokens added per second (0: a fixed budget); alias rate.")},
    {{NULL}},
};

const prs_py_limiter_desc prs_py_desc_gcra = {
    "The Generic Cell Rate Algorithm: `rate` requests per second with up to\n"
    "`burst` admissible at once. Lock-free (one 64-bit state). Admits at most\n"
    "burst + rate * T in any interval of T seconds. Scheduling is in whole\n"
    "nanoseconds: the interval 1e9/rate is rounded up, so rates above 1e9/s act\n"
    "as 1e9/s (use TokenBucket for those).",
    "Change rate and/or burst now; what is not given keeps its value. The requests\n"
    "already consumed are kept (re-expressed on the new rate, rounded up: nothing is\n"
    "minted), so a burst lowered below them admits nothing until they drain." RECONF_TAIL,
    gcra_init,
    {PARAM(prs_gcra_config, "rate", NULL, rate, PRS_PY_P_REAL, "Requests per second."),
     PARAM(prs_gcra_config, "burst", NULL, burst, PRS_PY_P_COUNT, "Requests admissible at once.")},
    {{NULL}},
};

static PyObject *lb_get_level(PyObject *self, void *c) {
    prs_py_limiter *lim = (prs_py_limiter *)self;
    int64_t now;
    if (prs_py_clock_now(&lim->clock, &now) < 0) return NULL;
    return PyFloat_FromDouble(prs_leaky_bucket_level((prs_leaky_bucket *)lim->core, now));
}

const prs_py_limiter_desc prs_py_desc_leaky_bucket = {
    "A leaky bucket used as a meter. Each admitted request of weight n raises a\n"
    "level by n; the level drains continuously at `leak_rate` units per second;\n"
    "a request is admitted when level + n <= capacity. Starts empty.\n\n"
    "Bound: at most capacity + leak_rate * T units in any interval of T seconds.\n"
    "acquire() paces callers at exactly leak_rate once `capacity` has gone\n"
    "through. retry_after is exact to the nanosecond. capacity and leak_rate:\n"
    "positive finite numbers up to 1e15. Thread-safe.",
    "Change capacity and/or leak_rate now; what is not given keeps its value. The\n"
    "level now (drained at the old rate until now) is kept as it is: above a lowered\n"
    "capacity nothing is admitted until it drains." RECONF_TAIL,
    lb_init,
    {PARAM(prs_leaky_bucket_config, "capacity", NULL, capacity, PRS_PY_P_COUNT_REAL,
           "The most the bucket holds."),
     PARAM(prs_leaky_bucket_config, "leak_rate", NULL, leak_rate, PRS_PY_P_REAL,
           "Units drained per second.")},
    {{"level", lb_get_level, NULL, "The level now, in [0, capacity] (float).", NULL}, {NULL}},
};

const prs_py_limiter_desc prs_py_desc_fixed_window = {
    "At most `limit` units per window of `window` seconds, windows aligned to\n"
    "multiples of `window` on the clock. O(1) state.\n\n"
    "Bound: at most limit in each aligned window; an interval of length window\n"
    "that straddles a boundary can see up to 2 * limit (the end of one window\n"
    "and the start of the next). Use SlidingWindowLog for an exact sliding\n"
    "bound. retry_after is the time to the next window (exact). limit: a\n"
    "positive int; window: a positive finite number of seconds. Thread-safe.",
    WINDOW_RECONF
    "The count of the window in force now is kept (with a new window\n"
    "length, it counts in the new window holding now); a count at or above a\n"
    "lowered limit admits nothing until the window moves on." RECONF_TAIL,
    fw_init,
    {PARAM(prs_fixed_window_config, "limit", NULL, limit, PRS_PY_P_COUNT, "Units admitted per window."),
     PARAM(prs_fixed_window_config, "window", NULL, window_ns, PRS_PY_P_SECONDS,
           "The window length in seconds.")},
    {{NULL}},
};

const prs_py_limiter_desc prs_py_desc_sliding_log = {
    "Exact sliding window: at most `limit` units in any interval of `window`\n"
    "seconds. Keeps the time of every admitted unit in a ring of `limit`\n"
    "timestamps (8 bytes each: memory O(limit); a request of weight n takes n\n"
    "slots).\n\n"
    "Bound: for every half-open interval [t, t + window), at most limit units.\n"
    "retry_after is the instant the oldest unit that must leave does leave\n"
    "(exact to the nanosecond). limit: a positive int up to 2**27; window: a\n"
    "positive finite number of seconds. Thread-safe.",
    WINDOW_RECONF
    "Every admission time is kept and counts until it leaves the (new)\n"
    "window; a limit lowered below the count admits nothing until enough of\n"
    "them expire. O(limit); a new limit moves the ring to a new allocation." RECONF_TAIL,
    sl_init,
    {PARAM(prs_sliding_log_config, "limit", NULL, limit, PRS_PY_P_COUNT,
           "Units admitted in any interval of length window."),
     PARAM(prs_sliding_log_config, "window", NULL, window_ns, PRS_PY_P_SECONDS,
           "The window length in seconds.")},
    {{NULL}},
};

const prs_py_limiter_desc prs_py_desc_sliding_counter = {
    "Sliding window counter: two counters over windows aligned like\n"
    "FixedWindow's. At e seconds into the current window a request of weight\n"
    "n is admitted when prev * (window - e) / window + cur + n <= limit\n"
    "(evaluated exactly in integers). O(1) state.\n\n"
    "Bound (the approximation): at most limit in each aligned window; in any\n"
    "interval of length window at most limit + prev * x, x being the fraction\n"
    "of the interval inside the later window - always fewer than 2 * limit, and\n"
    "about the sliding log's count when the previous window's traffic was even.\n"
    "retry_after is exact to the nanosecond. limit: a positive int; window: a\n"
    "positive finite number of seconds. Thread-safe.",
    WINDOW_RECONF
    "Both counters are kept (with a new window length, the weighted count\n"
    "now, rounded up, counts in the new window holding now); a limit lowered\n"
    "below them admits nothing until the weighted count falls under it." RECONF_TAIL,
    sc_init,
    {PARAM(prs_sliding_counter_config, "limit", NULL, limit, PRS_PY_P_COUNT,
           "Units admitted per (weighted) sliding window."),
     PARAM(prs_sliding_counter_config, "window", NULL, window_ns, PRS_PY_P_SECONDS,
           "The window length in seconds.")},
    {{NULL}},
};
