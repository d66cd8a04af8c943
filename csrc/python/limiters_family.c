/*
 * limiters_family.c - the rest of the in-process rate limiter family:
 * LeakyBucket, FixedWindow, SlidingWindowLog and SlidingWindowCounter.
 *
 * Each is a prs_py_limiter (limiters.c) with its own ops table over the core
 * module, its own __init__ (config parsing, with errors naming the parameter
 * and the value) and its own read-only properties; allow/check/peek/acquire/
 * reset/available/clock come from the shared _Limiter base.
 */
#include "prs_py.h"

#include <structmember.h>

#define SELF ((prs_py_limiter *)self)

static int ensure_init(PyObject *self) {
    if (SELF->ops) return 0;
    PyErr_Format(PyExc_RuntimeError, "%.200s object is not initialised (call __init__)",
                 Py_TYPE(self)->tp_name);
    return -1;
}

static PyMemberDef family_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(prs_py_limiter, weakreflist), READONLY, NULL},
    {NULL},
};

/* A positive finite real <= max. */
static int parse_positive(PyObject *o, const char *param, double max, double *out) {
    if (prs_py_parse_real(o, param, 0, out) < 0) return -1;
    if (*out <= 0.0) {
        PyErr_Format(PyExc_ValueError, "%s must be > 0, got %R", param, o);
        return -1;
    }
    if (*out > max) {
        PyErr_Format(PyExc_ValueError, "%s must be <= %g, got %R", param, max, o);
        return -1;
    }
    return 0;
}

/* `window` in seconds: a positive finite real, at least 1 ns once converted. */
static int parse_window(PyObject *o, int64_t *out_ns) {
    double w;
    if (prs_py_parse_real(o, "window", 0, &w) < 0) return -1;
    int64_t ns = prs_seconds_to_ns(w);
    if (w <= 0.0 || ns < 1) {
        PyErr_Format(PyExc_ValueError, "window must be > 0 (at least 1 ns), got %R", o);
        return -1;
    }
    *out_ns = ns;
    return 0;
}

/* reconfigure(*, limit=, window=) for the three window limiters: the given
 * ones parsed as in __init__ into *limit / *window_ns (left as they are when
 * not given). */
static int parse_limit_window_reconf(PyObject *args, PyObject *kwds, int64_t max_limit,
                                     int64_t *limit, int64_t *window_ns) {
    static char *kwlist[] = {"limit", "window", NULL};
    PyObject *limit_o = NULL, *window_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OO:reconfigure", kwlist, &limit_o, &window_o))
        return -1;
    if (limit_o == Py_None) limit_o = NULL; /* None: keep the current value */
    if (window_o == Py_None) window_o = NULL;
    if (limit_o && prs_py_parse_count(limit_o, "limit", 1, max_limit, limit) < 0) return -1;
    if (window_o && parse_window(window_o, window_ns) < 0) return -1;
    return 0;
}

#define WINDOW_RECONF_DOC(cls, kept)                                                       \
    "reconfigure($self, /, *, limit=None, window=None)\n--\n\n"                          \
    "Change limit and/or window (seconds) now; what is not given keeps its value.\n"     \
    kept " Thread-safe; bad values raise the constructor's errors and change nothing."

/* (limit, window, *, clock=None) for the three window limiters. */
static int parse_limit_window(const char *fname, PyObject *args, PyObject *kwds, int64_t max_limit,
                              int64_t *limit, int64_t *window_ns, PyObject **clock_o) {
    static char *kwlist[] = {"limit", "window", "clock", NULL};
    PyObject *limit_o = NULL, *window_o = NULL;
    char fmt[64];
    PyOS_snprintf(fmt, sizeof fmt, "OO|$O:%s", fname);
    *clock_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, &limit_o, &window_o, clock_o)) return -1;
    if (prs_py_parse_count(limit_o, "limit", 1, max_limit, limit) < 0) return -1;
    return parse_window(window_o, window_ns);
}

static PyObject *get_window(PyObject *self, int64_t (*ns_of)(const void *)) {
    if (ensure_init(self) < 0) return NULL;
    return PyFloat_FromDouble((double)ns_of(SELF->core) / 1e9);
}

/* ---- LeakyBucket ---------------------------------------------------------- */

static int lb_check(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_leaky_bucket_check(c, now, n, d); }
static int lb_peek(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_leaky_bucket_peek(c, now, n, d); }
static void lb_reset(void *c) { prs_leaky_bucket_reset(c); }
static double lb_available(void *c, int64_t now) { return prs_leaky_bucket_available(c, now); }
static void lb_free(void *c) { prs_leaky_bucket_free(c); }

static int lb_parse_config(const void *params, PyObject *args, PyObject *kwds, void *config) {
    static char *kwlist[] = {"capacity", "leak_rate", NULL};
    PyObject *cap_o = NULL, *rate_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OO:reconfigure", kwlist, &cap_o, &rate_o))
        return -1;
    if (cap_o == Py_None) cap_o = NULL; /* None: keep the current value */
    if (rate_o == Py_None) rate_o = NULL;
    prs_leaky_bucket_config *cfg = config;
    prs_algo_leaky_bucket.config_from_params(params, cfg);
    int64_t cap;
    if (cap_o) {
        if (prs_py_parse_count(cap_o, "capacity", 1, INT64_C(1000000000000000), &cap) < 0) return -1;
        cfg->capacity = (double)cap;
    }
    if (rate_o && parse_positive(rate_o, "leak_rate", 1e15, &cfg->leak_rate) < 0) return -1;
    return 0;
}
static const void *lb_params(void *c) { return prs_leaky_bucket_params(c); }
static int lb_reconfigure(void *c, const void *cfg, int64_t now) { return prs_leaky_bucket_reconfigure(c, cfg, now); }

static const prs_py_limiter_ops lb_ops = {"LeakyBucket", lb_check, lb_peek, lb_reset, lb_available, lb_free,
                                          lb_parse_config, lb_params, lb_reconfigure};

static PyMethodDef lb_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))prs_py_limiter_reconfigure, METH_VARARGS | METH_KEYWORDS,
     "reconfigure($self, /, *, capacity=None, leak_rate=None)\n--\n\n"
     "Change capacity and/or leak_rate now; what is not given keeps its value. The\n"
     "level now (drained at the old rate until now) is kept as it is: above a lowered\n"
     "capacity nothing is admitted until it drains. Thread-safe; bad values raise the\n"
     "constructor's errors and change nothing."},
    {NULL, NULL, 0, NULL},
};

static int lb_init(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"capacity", "leak_rate", "clock", NULL};
    PyObject *cap_o = NULL, *rate_o = NULL, *clock_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$O:LeakyBucket", kwlist, &cap_o, &rate_o, &clock_o))
        return -1;
    prs_leaky_bucket_config cfg;
    prs_leaky_bucket_config_init(&cfg);
    int64_t cap;
    if (prs_py_parse_count(cap_o, "capacity", 1, INT64_C(1000000000000000), &cap) < 0 ||
        (cfg.capacity = (double)cap, 0) ||
        parse_positive(rate_o, "leak_rate", 1e15, &cfg.leak_rate) < 0)
        return -1;
    prs_leaky_bucket *lb;
    int rc = prs_leaky_bucket_new(&cfg, &lb);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid LeakyBucket configuration"); return -1; }
    return prs_py_limiter_setup(SELF, &lb_ops, lb, clock_o);
}

static PyObject *lb_get_capacity(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyFloat_FromDouble(prs_leaky_bucket_capacity(SELF->core));
}
static PyObject *lb_get_leak_rate(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyFloat_FromDouble(prs_leaky_bucket_leak_rate(SELF->core));
}
static PyObject *lb_get_level(PyObject *self, void *c) {
    int64_t now;
    if (ensure_init(self) < 0 || prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    return PyFloat_FromDouble(prs_leaky_bucket_level(SELF->core, now));
}

static PyGetSetDef lb_getset[] = {
    {"capacity", lb_get_capacity, NULL, "The most the bucket holds.", NULL},
    {"leak_rate", lb_get_leak_rate, NULL, "Units drained per second.", NULL},
    {"level", lb_get_level, NULL, "The level now, in [0, capacity] (float).", NULL},
    {NULL},
};

static PyType_Slot lb_slots[] = {
    {Py_tp_doc, "LeakyBucket(capacity, leak_rate, *, clock=None)\n--\n\n"
                "A leaky bucket used as a meter. Each admitted request of weight n raises a\n"
                "level by n; the level drains continuously at `leak_rate` units per second;\n"
                "a request is admitted when level + n <= capacity. Starts empty.\n\n"
                "Bound: at most capacity + leak_rate * T units in any interval of T seconds.\n"
                "acquire() paces callers at exactly leak_rate once `capacity` has gone\n"
                "through. retry_after is exact to the nanosecond. capacity and leak_rate:\n"
                "positive finite numbers up to 1e15. Thread-safe."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_init, lb_init},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_getset, lb_getset},
    {Py_tp_methods, lb_methods},
    {Py_tp_members, family_members},
    {0, NULL},
};

/* ---- FixedWindow ---------------------------------------------------------- */

static int fw_check(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_fixed_window_check(c, now, n, d); }
static int fw_peek(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_fixed_window_peek(c, now, n, d); }
static void fw_reset(void *c) { prs_fixed_window_reset(c); }
static double fw_available(void *c, int64_t now) { return prs_fixed_window_available(c, now); }
static void fw_free(void *c) { prs_fixed_window_free(c); }

static int fw_parse_config(const void *params, PyObject *args, PyObject *kwds, void *config) {
    prs_fixed_window_config *cfg = config;
    prs_algo_fixed_window.config_from_params(params, cfg);
    return parse_limit_window_reconf(args, kwds, INT64_MAX, &cfg->limit, &cfg->window_ns);
}
static const void *fw_params(void *c) { return prs_fixed_window_params(c); }
static int fw_reconfigure(void *c, const void *cfg, int64_t now) { return prs_fixed_window_reconfigure(c, cfg, now); }

static const prs_py_limiter_ops fw_ops = {"FixedWindow", fw_check, fw_peek, fw_reset, fw_available, fw_free,
                                          fw_parse_config, fw_params, fw_reconfigure};

static PyMethodDef fw_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))prs_py_limiter_reconfigure, METH_VARARGS | METH_KEYWORDS,
     WINDOW_RECONF_DOC("FixedWindow",
                       "The count of the window in force now is kept (with a new window\n"
                       "length, it counts in the new window holding now); a count at or above a\n"
                       "lowered limit admits nothing until the window moves on.")},
    {NULL, NULL, 0, NULL},
};

static int fw_init(PyObject *self, PyObject *args, PyObject *kwds) {
    PyObject *clock_o;
    prs_fixed_window_config cfg;
    prs_fixed_window_config_init(&cfg);
    if (parse_limit_window("FixedWindow", args, kwds, INT64_MAX, &cfg.limit, &cfg.window_ns, &clock_o) < 0)
        return -1;
    prs_fixed_window *fw;
    int rc = prs_fixed_window_new(&cfg, &fw);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid FixedWindow configuration"); return -1; }
    return prs_py_limiter_setup(SELF, &fw_ops, fw, clock_o);
}

static int64_t fw_window_ns(const void *c) { return prs_fixed_window_window_ns(c); }
static PyObject *fw_get_limit(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyLong_FromLongLong(prs_fixed_window_limit(SELF->core));
}
static PyObject *fw_get_window(PyObject *self, void *c) { return get_window(self, fw_window_ns); }

static PyGetSetDef fw_getset[] = {
    {"limit", fw_get_limit, NULL, "Units admitted per window.", NULL},
    {"window", fw_get_window, NULL, "The window length in seconds.", NULL},
    {NULL},
};

static PyType_Slot fw_slots[] = {
    {Py_tp_doc, "FixedWindow(limit, window, *, clock=None)\n--\n\n"
                "At most `limit` units per window of `window` seconds, windows aligned to\n"
                "multiples of `window` on the clock. O(1) state.\n\n"
                "Bound: at most limit in each aligned window; an interval of length window\n"
                "that straddles a boundary can see up to 2 * limit (the end of one window\n"
                "and the start of the next). Use SlidingWindowLog for an exact sliding\n"
                "bound. retry_after is the time to the next window (exact). limit: a\n"
                "positive int; window: a positive finite number of seconds. Thread-safe."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_init, fw_init},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_getset, fw_getset},
    {Py_tp_methods, fw_methods},
    {Py_tp_members, family_members},
    {0, NULL},
};

/* ---- SlidingWindowLog ----------------------------------------------------- */

static int sl_check(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_sliding_log_check(c, now, n, d); }
static int sl_peek(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_sliding_log_peek(c, now, n, d); }
static void sl_reset(void *c) { prs_sliding_log_reset(c); }
static double sl_available(void *c, int64_t now) { return prs_sliding_log_available(c, now); }
static void sl_free(void *c) { prs_sliding_log_free(c); }

static int sl_parse_config(const void *params, PyObject *args, PyObject *kwds, void *config) {
    prs_sliding_log_config *cfg = config;
    prs_algo_sliding_log.config_from_params(params, cfg);
    return parse_limit_window_reconf(args, kwds, PRS_SLIDING_LOG_MAX_LIMIT, &cfg->limit, &cfg->window_ns);
}
static const void *sl_params(void *c) { return prs_sliding_log_params(c); }
static int sl_reconfigure(void *c, const void *cfg, int64_t now) { return prs_sliding_log_reconfigure(c, cfg, now); }

static const prs_py_limiter_ops sl_ops = {"SlidingWindowLog", sl_check, sl_peek, sl_reset, sl_available, sl_free,
                                          sl_parse_config, sl_params, sl_reconfigure};

static PyMethodDef sl_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))prs_py_limiter_reconfigure, METH_VARARGS | METH_KEYWORDS,
     WINDOW_RECONF_DOC("SlidingWindowLog",
                       "Every admission time is kept and counts until it leaves the (new)\n"
                       "window; a limit lowered below the count admits nothing until enough of\n"
                       "them expire. O(limit); a limit above the one the log was made with moves\n"
                       "its ring to a new allocation.")},
    {NULL, NULL, 0, NULL},
};

static int sl_init(PyObject *self, PyObject *args, PyObject *kwds) {
    PyObject *clock_o;
    prs_sliding_log_config cfg;
    prs_sliding_log_config_init(&cfg);
    if (parse_limit_window("SlidingWindowLog", args, kwds, PRS_SLIDING_LOG_MAX_LIMIT, &cfg.limit,
                           &cfg.window_ns, &clock_o) < 0)
        return -1;
    prs_sliding_log *sl;
    int rc = prs_sliding_log_new(&cfg, &sl);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid SlidingWindowLog configuration"); return -1; }
    return prs_py_limiter_setup(SELF, &sl_ops, sl, clock_o);
}

static int64_t sl_window_ns(const void *c) { return prs_sliding_log_window_ns(c); }
static PyObject *sl_get_limit(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyLong_FromLongLong(prs_sliding_log_limit(SELF->core));
}
static PyObject *sl_get_window(PyObject *self, void *c) { return get_window(self, sl_window_ns); }

static PyGetSetDef sl_getset[] = {
    {"limit", sl_get_limit, NULL, "Units admitted in any interval of length window.", NULL},
    {"window", sl_get_window, NULL, "The window length in seconds.", NULL},
    {NULL},
};

static PyType_Slot sl_slots[] = {
    {Py_tp_doc, "SlidingWindowLog(limit, window, *, clock=None)\n--\n\n"
                "Exact sliding window: at most `limit` units in any interval of `window`\n"
                "seconds. Keeps the time of every admitted unit in a ring of `limit`\n"
                "timestamps (8 bytes each: memory O(limit); a request of weight n takes n\n"
                "slots).\n\n"
                "Bound: for every half-open interval [t, t + window), at most limit units.\n"
                "retry_after is the instant the oldest unit that must leave does leave\n"
                "(exact to the nanosecond). limit: a positive int up to 2**27; window: a\n"
                "positive finite number of seconds. Thread-safe."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_init, sl_init},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_getset, sl_getset},
    {Py_tp_methods, sl_methods},
    {Py_tp_members, family_members},
    {0, NULL},
};

/* ---- SlidingWindowCounter ------------------------------------------------- */

static int sc_check(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_sliding_counter_check(c, now, n, d); }
static int sc_peek(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_sliding_counter_peek(c, now, n, d); }
static void sc_reset(void *c) { prs_sliding_counter_reset(c); }
static double sc_available(void *c, int64_t now) { return prs_sliding_counter_available(c, now); }
static void sc_free(void *c) { prs_sliding_counter_free(c); }

static int sc_parse_config(const void *params, PyObject *args, PyObject *kwds, void *config) {
    prs_sliding_counter_config *cfg = config;
    prs_algo_sliding_counter.config_from_params(params, cfg);
    return parse_limit_window_reconf(args, kwds, INT64_MAX, &cfg->limit, &cfg->window_ns);
}
static const void *sc_params(void *c) { return prs_sliding_counter_params(c); }
static int sc_reconfigure(void *c, const void *cfg, int64_t now) { return prs_sliding_counter_reconfigure(c, cfg, now); }

static const prs_py_limiter_ops sc_ops = {"SlidingWindowCounter", sc_check, sc_peek, sc_reset, sc_available, sc_free,
                                          sc_parse_config, sc_params, sc_reconfigure};

static PyMethodDef sc_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))prs_py_limiter_reconfigure, METH_VARARGS | METH_KEYWORDS,
     WINDOW_RECONF_DOC("SlidingWindowCounter",
                       "Both counters are kept (with a new window length, the weighted count\n"
                       "now, rounded up, counts in the new window holding now); a limit lowered\n"
                       "below them admits nothing until the weighted count falls under it.")},
    {NULL, NULL, 0, NULL},
};

static int sc_init(PyObject *self, PyObject *args, PyObject *kwds) {
    PyObject *clock_o;
    prs_sliding_counter_config cfg;
    prs_sliding_counter_config_init(&cfg);
    if (parse_limit_window("SlidingWindowCounter", args, kwds, INT64_MAX, &cfg.limit, &cfg.window_ns,
                           &clock_o) < 0)
        return -1;
    prs_sliding_counter *sc;
    int rc = prs_sliding_counter_new(&cfg, &sc);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid SlidingWindowCounter configuration"); return -1; }
    return prs_py_limiter_setup(SELF, &sc_ops, sc, clock_o);
}

static int64_t sc_window_ns(const void *c) { return prs_sliding_counter_window_ns(c); }
static PyObject *sc_get_limit(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyLong_FromLongLong(prs_sliding_counter_limit(SELF->core));
}
static PyObject *sc_get_window(PyObject *self, void *c) { return get_window(self, sc_window_ns); }

static PyGetSetDef sc_getset[] = {
    {"limit", sc_get_limit, NULL, "Units admitted per (weighted) sliding window.", NULL},
    {"window", sc_get_window, NULL, "The window length in seconds.", NULL},
    {NULL},
};

static PyType_Slot sc_slots[] = {
    {Py_tp_doc, "SlidingWindowCounter(limit, window, *, clock=None)\n--\n\n"
                "Sliding window counter: two counters over windows aligned like\n"
                "FixedWindow's. At e seconds into the current window a request of weight\n"
                "n is admitted when prev * (window - e) / window + cur + n <= limit\n"
                "(evaluated exactly in integers). O(1) state.\n\n"
                "Bound (the approximation): at most limit in each aligned window; in any\n"
                "interval of length window at most limit + prev * x, x being the fraction\n"
                "of the interval inside the later window - always fewer than 2 * limit, and\n"
                "about the sliding log's count when the previous window's traffic was even.\n"
                "retry_after is exact to the nanosecond. limit: a positive int; window: a\n"
                "positive finite number of seconds. Thread-safe."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_init, sc_init},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_getset, sc_getset},
    {Py_tp_methods, sc_methods},
    {Py_tp_members, family_members},
    {0, NULL},
};

#define FAMILY_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE)

static PyType_Spec lb_spec = {"pyresilience._core.LeakyBucket", sizeof(prs_py_limiter), 0, FAMILY_FLAGS, lb_slots};
static PyType_Spec fw_spec = {"pyresilience._core.FixedWindow", sizeof(prs_py_limiter), 0, FAMILY_FLAGS, fw_slots};
static PyType_Spec sl_spec = {"pyresilience._core.SlidingWindowLog", sizeof(prs_py_limiter), 0, FAMILY_FLAGS, sl_slots};
static PyType_Spec sc_spec = {"pyresilience._core.SlidingWindowCounter", sizeof(prs_py_limiter), 0, FAMILY_FLAGS, sc_slots};

int prs_py_register_limiters_family(PyObject *m, prs_py_state *st) {
    PyObject *base = st->slots[PRS_SLOT_LimiterBase];
    if (!base) {
        PyErr_SetString(PyExc_RuntimeError, "_Limiter must be registered before the limiter family");
        return -1;
    }
    if (prs_py_add_type(m, st, PRS_SLOT_LeakyBucket, &lb_spec, base) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_FixedWindow, &fw_spec, base) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_SlidingWindowLog, &sl_spec, base) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_SlidingWindowCounter, &sc_spec, base) < 0) return -1;
    return 0;
}
