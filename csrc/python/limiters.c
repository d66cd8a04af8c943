/*
 * limiters.c - the generic in-process limiter object and its first two
 * algorithms, TokenBucket and GCRA.
 *
 * A prs_py_limiter is an ops table + a core object + a clock. The methods
 * (allow/check/peek/acquire/reset/available) are shared by every algorithm;
 * an algorithm contributes only its __init__ (config parsing) and properties.
 *
 * Hot path: allow() with no arguments reads the clock once and calls the core;
 * no allocation, no Python call (unless the clock is a Python callable).
 *
 * Waiting: prs_py_wait_step() is the one wait of every in-process limiter
 * (plain, keyed, per-key view, group; keyed.c passes its own decide function).
 * The sync acquire loops over it sleeping with the GIL released; the async
 * forms get a _RateWait whose step() says how long to await. Either way the
 * decision is the core's and a ManualClock is advanced in integer ns.
 */
#include "prs_py.h"

#include <math.h>

#define SELF ((prs_py_limiter *)self)

static int ensure_init(prs_py_limiter *self) {
    if (self->ops) return 0;
    PyErr_Format(PyExc_RuntimeError, "%.200s object is not initialised (call __init__)",
                 Py_TYPE(self)->tp_name);
    return -1;
}

PyObject *prs_py_limiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_limiter *self = (prs_py_limiter *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->ops = NULL;
    self->core = NULL;
    self->clock.kind = PRS_CLOCK_MONOTONIC;
    self->clock.obj = NULL;
    self->clock.manual_ns = NULL;
    self->weakreflist = NULL;
    return (PyObject *)self;
}

int prs_py_limiter_setup(prs_py_limiter *self, const prs_py_limiter_ops *ops, void *core,
                         PyObject *clock_arg) {
    prs_py_state *st = prs_py_state_of((PyObject *)self);
    if (!st) { ops->free(core); return -1; }
    if (self->ops) {
        ops->free(core);
        PyErr_Format(PyExc_RuntimeError, "%.200s is already initialised", Py_TYPE(self)->tp_name);
        return -1;
    }
    prs_py_clock clock;
    if (prs_py_clock_init(st, clock_arg, &clock) < 0) { ops->free(core); return -1; }
    self->clock = clock;
    self->core = core;
    self->ops = ops;
    return 0;
}

int prs_py_limiter_check_type(prs_py_state *st, PyObject *o) {
    PyTypeObject *tp = Py_TYPE(o);
    return tp->tp_dealloc == prs_py_limiter_dealloc && ((prs_py_limiter *)o)->ops != NULL;
}

int prs_py_limiter_clear(PyObject *self) {
    prs_py_clock_clear(&SELF->clock);
    return 0;
}

int prs_py_limiter_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return prs_py_clock_traverse(&SELF->clock, visit, arg);
}

void prs_py_limiter_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (SELF->weakreflist) PyObject_ClearWeakRefs(self);
    prs_py_limiter_clear(self);
    if (SELF->ops && SELF->core) SELF->ops->free(SELF->core);
    SELF->core = NULL;
    SELF->ops = NULL;
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* n from (n=1, *, tokens_needed=None): at most one of them. */
static const char *const n_names[] = {"n", "tokens_needed", NULL};

static int parse_n(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                   int64_t *n) {
    if (nargs == 1 && !kwnames && PyLong_CheckExact(args[0])) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(args[0], &overflow);
        if (!overflow && v >= 1) { *n = v; return 0; }
    }
    PyObject *v[2];
    if (prs_py_unpack(fname, args, nargs, kwnames, n_names, 1, v) < 0) return -1;
    if (v[0] && v[1]) {
        PyErr_Format(PyExc_TypeError, "%s() got both n and tokens_needed", fname);
        return -1;
    }
    PyObject *o = v[0] ? v[0] : v[1];
    if (!o) { *n = 1; return 0; }
    return prs_py_parse_n(o, v[0] ? "n" : "tokens_needed", n);
}

static int decide(PyObject *self, int consume, const char *fname, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames, prs_decision *d) {
    int64_t n = 1, now;
    if ((nargs || kwnames) && parse_n(fname, args, nargs, kwnames, &n) < 0) return -1;
    if (ensure_init(SELF) < 0) return -1;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return -1;
    int rc = consume ? SELF->ops->check(SELF->core, now, n, d) : SELF->ops->peek(SELF->core, now, n, d);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    return 0;
}

static PyObject *limiter_allow(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    prs_decision d;
    if (nargs == 0 && !kwnames && SELF->ops && SELF->clock.kind == PRS_CLOCK_MONOTONIC) {
        /* the hot path: allow() */
        SELF->ops->check(SELF->core, prs_monotonic_ns(), 1, &d);
        return PyBool_FromLong(d.allowed);
    }
    if (decide(self, 1, "allow", args, nargs, kwnames, &d) < 0) return NULL;
    return PyBool_FromLong(d.allowed);
}

static PyObject *limiter_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    prs_decision d;
    if (decide(self, 1, "check", args, nargs, kwnames, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(self), &d);
}

static PyObject *limiter_peek(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    prs_decision d;
    if (decide(self, 0, "peek", args, nargs, kwnames, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(self), &d);
}

/* ---- waiting until admitted: one helper for every limiter ----------------- *
 * The core decides (admitted, retry_after, or PRS_NEVER); this only turns the
 * decision into a sleep, an advance of a ManualClock, or an exception. Three
 * waits can never end and raise at once: a request the limiter can never
 * admit (PRS_NEVER: a spent budget; ValueError when n exceeds the limit), an
 * admission at or beyond 2^63 ns (a saturated clock, e.g. time.time_ns passed
 * as a clock), and one past the timeout. A finite timeout is also measured on
 * CLOCK_MONOTONIC for clocks that are not a ManualClock, so a callable clock
 * that stalls cannot stretch it. */

int prs_py_wait_begin(prs_py_clock *clock, int64_t n, int64_t timeout_ns, prs_py_wait *w) {
    int64_t now;
    if (prs_py_clock_now(clock, &now) < 0) return -1;
    w->n = n;
    w->deadline = timeout_ns == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, timeout_ns);
    w->real_deadline = (timeout_ns == PRS_NEVER || clock->kind == PRS_CLOCK_MANUAL)
                           ? PRS_NEVER
                           : prs__sat_add(prs_monotonic_ns(), timeout_ns);
    return 0;
}

static int wait_fail(prs_py_state *st, const prs_decision *d, int by, int64_t retry_ns,
                     const char *message) {
    PyObject *dec = prs_py_decision_new_by(st, d, by);
    if (!dec) return -1;
    prs_py_raise_rate_limited_obj(st, dec, retry_ns, message);
    Py_DECREF(dec);
    return -1;
}

int prs_py_wait_step(prs_py_state *st, prs_py_clock *clock, prs_py_decide_fn fn, void *ctx,
                     const char *what, prs_py_wait *w, int64_t *sleep_ns) {
    int64_t now, max_n = INT64_MAX;
    prs_decision d;
    int by = -1;
    if (prs_py_clock_now(clock, &now) < 0) return -1;
    int rc = fn(ctx, now, w->n, &d, &by, &max_n);
    if (rc) { prs_py_error(st, rc, NULL); return -1; }
    if (d.allowed) return 0;
    if (d.retry_after_ns == PRS_NEVER) {
        if (w->n > max_n) {
            PyErr_Format(PyExc_ValueError, "n=%lld can never be admitted by this %s (limit %lld)",
                         (long long)w->n, what, (long long)max_n);
            return -1;
        }
        return wait_fail(st, &d, by, PRS_NEVER,
                         "rate limit exceeded: never admissible (the budget is spent and does "
                         "not refill)");
    }
    int64_t wake = prs__sat_add(now, d.retry_after_ns);
    if (wake == INT64_MAX) /* no instant of this clock admits it */
        return wait_fail(st, &d, by, PRS_NEVER,
                         "rate limit exceeded: never admissible (the clock has reached 2**63 ns)");
    if (wake > w->deadline)
        return wait_fail(st, &d, by, d.retry_after_ns,
                         "rate limit exceeded: not admissible within timeout");
    if (clock->kind == PRS_CLOCK_MANUAL) {
        /* advance to the admission instant, in integer ns (never backwards) */
        int64_t seen = atomic_load_explicit(clock->manual_ns, memory_order_acquire);
        while (seen < wake && !atomic_compare_exchange_weak_explicit(
                                  clock->manual_ns, &seen, wake, memory_order_acq_rel,
                                  memory_order_acquire)) {
        }
        *sleep_ns = 0;
        return 1;
    }
    int64_t ns = wake - now;
    if (w->real_deadline != PRS_NEVER) {
        int64_t left = prs__sat_sub(w->real_deadline, prs_monotonic_ns());
        if (left <= 0)
            return wait_fail(st, &d, by, d.retry_after_ns,
                             "rate limit exceeded: not admissible within timeout");
        if (ns > left) ns = left;
    }
    *sleep_ns = ns;
    return 1;
}

#define WAIT_SLICE_NS (50 * PRS_NS_PER_MS)

int prs_py_wait_admitted(prs_py_state *st, prs_py_clock *clock, prs_py_decide_fn fn, void *ctx,
                         const char *what, int64_t n, int64_t timeout_ns) {
    prs_py_wait w;
    if (prs_py_wait_begin(clock, n, timeout_ns, &w) < 0) return -1;
    for (;;) {
        int64_t ns = 0;
        int r = prs_py_wait_step(st, clock, fn, ctx, what, &w, &ns);
        if (r <= 0) return r;
        if (ns > WAIT_SLICE_NS) ns = WAIT_SLICE_NS;
        if (ns > 0) {
            Py_BEGIN_ALLOW_THREADS
            prs_sleep_ns(ns);
            Py_END_ALLOW_THREADS
        }
        if (PyErr_CheckSignals() < 0) return -1; /* nothing was taken */
    }
}

PyObject *prs_py_limiter_reconfigure(PyObject *self, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of(self);
    if (!st || ensure_init(SELF) < 0) return NULL;
    const prs_py_limiter_ops *ops = SELF->ops;
    _Alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    if (ops->parse_config(ops->params(SELF->core), args, kwds, config) < 0) return NULL;
    int64_t now;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS /* O(limit) for a sliding log's ring */
    rc = ops->reconfigure(SELF->core, config, now);
    Py_END_ALLOW_THREADS
    if (rc == PRS_EINVAL || rc == PRS_ERANGE) {
        PyErr_Format(PyExc_ValueError, "%s.reconfigure(): %s for %R", ops->name, prs_strerror(rc),
                     kwds ? kwds : Py_None);
        return NULL;
    }
    if (rc) return prs_py_error(st, rc, NULL);
    Py_RETURN_NONE;
}

static const char *const acquire_names[] = {"n", "timeout", "tokens_needed", NULL};

int prs_py_parse_acquire_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames, int64_t *n, int64_t *timeout_ns) {
    PyObject *v[3];
    if (prs_py_unpack(fname, args, nargs, kwnames, acquire_names, 2, v) < 0) return -1;
    if (v[2] == Py_None) v[2] = NULL; /* the documented default */
    if (v[0] && v[2]) {
        PyErr_Format(PyExc_TypeError, "%s() got both n and tokens_needed", fname);
        return -1;
    }
    *n = 1;
    PyObject *no = v[0] ? v[0] : v[2];
    if (no && prs_py_parse_n(no, v[0] ? "n" : "tokens_needed", n) < 0) return -1;
    return prs_py_parse_timeout(v[1], "timeout", timeout_ns);
}

/* A plain limiter as a prs_py_decide_fn: its limit is the largest n. */
static int limiter_decide_cb(void *ctx, int64_t now, int64_t n, prs_decision *d, int *by,
                             int64_t *max_n) {
    prs_py_limiter *self = ctx;
    int rc = self->ops->check(self->core, now, n, d);
    *max_n = d->limit;
    return rc;
}

int prs_py_limiter_acquire(prs_py_limiter *self, int64_t n, int64_t timeout_ns) {
    prs_py_state *st = prs_py_state_of((PyObject *)self);
    if (!st || ensure_init(self) < 0) return -1;
    return prs_py_wait_admitted(st, &self->clock, limiter_decide_cb, self, self->ops->name, n,
                                timeout_ns);
}

static PyObject *limiter_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    int64_t n, timeout_ns;
    if (prs_py_parse_acquire_args("acquire", args, nargs, kwnames, &n, &timeout_ns) < 0) return NULL;
    if (prs_py_limiter_acquire(SELF, n, timeout_ns) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *limiter_waiter(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    int64_t n, timeout_ns;
    prs_py_state *st = prs_py_state_of(self);
    if (!st || prs_py_parse_acquire_args("_waiter", args, nargs, kwnames, &n, &timeout_ns) < 0 ||
        ensure_init(SELF) < 0)
        return NULL;
    return prs_py_rate_wait_new(st, self, &SELF->clock, limiter_decide_cb, SELF, SELF->ops->name,
                                n, timeout_ns);
}

/* ---- _RateWait: an async wait in progress ---------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *owner;          /* strong: owns clock and ctx */
    prs_py_clock *clock;
    prs_py_decide_fn fn;
    void *ctx;
    const char *what;         /* static string */
    prs_py_wait w;
    int done;
} rate_wait_obj;

PyObject *prs_py_rate_wait_new(prs_py_state *st, PyObject *owner, prs_py_clock *clock,
                               prs_py_decide_fn fn, void *ctx, const char *what, int64_t n,
                               int64_t timeout_ns) {
    PyTypeObject *tp = PRS_PY_TYPE(st, RateWait);
    rate_wait_obj *self = (rate_wait_obj *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    self->owner = Py_NewRef(owner);
    self->clock = clock;
    self->fn = fn;
    self->ctx = ctx;
    self->what = what;
    self->done = 0;
    if (prs_py_wait_begin(clock, n, timeout_ns, &self->w) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *rate_wait_step(PyObject *op, PyObject *unused) {
    rate_wait_obj *self = (rate_wait_obj *)op;
    prs_py_state *st = prs_py_state_of(op);
    if (!st) return NULL;
    if (self->done) {
        PyErr_SetString(PyExc_RuntimeError, "this wait has already been admitted");
        return NULL;
    }
    int64_t ns = 0;
    int r = prs_py_wait_step(st, self->clock, self->fn, self->ctx, self->what, &self->w, &ns);
    if (r < 0) return NULL;
    if (r == 0) {
        self->done = 1;
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble((double)ns / 1e9);
}

static int rate_wait_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((rate_wait_obj *)op)->owner);
    return 0;
}

static void rate_wait_dealloc(PyObject *op) {
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_CLEAR(((rate_wait_obj *)op)->owner); /* no tp_clear: ctx lives in owner */
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef rate_wait_methods[] = {
    {"step", rate_wait_step, METH_NOARGS,
     "step($self, /)\n--\n\n"
     "Decide once: None when admitted (n was taken), else the float seconds to wait\n"
     "before the next step (0.0 on a ManualClock, which was advanced instead). Raises\n"
     "RateLimitExceeded / ValueError as acquire() does; nothing is taken then."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot rate_wait_slots[] = {
    {Py_tp_doc, "_RateWait()\n--\n\nAn acquire in progress, for the async forms (made by _waiter())."},
    {Py_tp_dealloc, rate_wait_dealloc},
    {Py_tp_traverse, rate_wait_traverse},
    {Py_tp_methods, rate_wait_methods},
    {0, NULL},
};

static PyType_Spec rate_wait_spec = {
    "pyresilience._core._RateWait", sizeof(rate_wait_obj), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    rate_wait_slots,
};

static PyObject *limiter_reset(PyObject *self, PyObject *unused) {
    if (ensure_init(SELF) < 0) return NULL;
    SELF->ops->reset(SELF->core);
    Py_RETURN_NONE;
}

static PyObject *limiter_get_available(PyObject *self, void *c) {
    int64_t now;
    if (ensure_init(SELF) < 0 || prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    return PyFloat_FromDouble(SELF->ops->available(SELF->core, now));
}

static PyObject *limiter_get_clock(PyObject *self, void *c) {
    prs_py_state *st = prs_py_state_of(self);
    return st ? prs_py_clock_object(st, &SELF->clock) : NULL;
}

PyMethodDef prs_py_limiter_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))limiter_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow($self, /, n=1, *, tokens_needed=None)\n--\n\n"
     "Consume n if it is available now: True when admitted, False when not.\n"
     "tokens_needed= is an alias of n. n larger than the limit is never admitted."},
    {"check", (PyCFunction)(void (*)(void))limiter_check, METH_FASTCALL | METH_KEYWORDS,
     "check($self, /, n=1, *, tokens_needed=None)\n--\n\n"
     "Like allow(), returning the Decision (allowed, limit, remaining, retry_after,\n"
     "reset_after). Consumes n only when allowed."},
    {"peek", (PyCFunction)(void (*)(void))limiter_peek, METH_FASTCALL | METH_KEYWORDS,
     "peek($self, /, n=1, *, tokens_needed=None)\n--\n\n"
     "The Decision check(n) would return now, without consuming anything."},
    {"acquire", (PyCFunction)(void (*)(void))limiter_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "Block until n is admitted (the GIL is released while waiting; Ctrl-C interrupts\n"
     "the wait and nothing is consumed). timeout in seconds (None: no limit): when n\n"
     "cannot be admitted within it, RateLimitExceeded is raised at once instead of\n"
     "waiting in vain; when it can never be admitted (a spent budget that does not\n"
     "refill, a clock saturated at 2**63 ns) RateLimitExceeded (retry_after inf) is\n"
     "raised at once whatever the timeout. A finite timeout always holds, also on a\n"
     "callable clock that stalls. ValueError when n exceeds the limit. On a ManualClock\n"
     "the wait advances the clock (integer nanoseconds) instead of sleeping."},
    {"_waiter", (PyCFunction)(void (*)(void))limiter_waiter, METH_FASTCALL | METH_KEYWORDS,
     "_waiter($self, /, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "A _RateWait for acquire_async (the deadline starts now)."},
    {"reset", (PyCFunction)(void (*)(void))limiter_reset, METH_NOARGS,
     "reset($self, /)\n--\n\nBack to the initial (full) state."},
    {NULL, NULL, 0, NULL},
};

PyGetSetDef prs_py_limiter_getset[] = {
    {"available", limiter_get_available, NULL, "Requests of weight 1 admissible now (float).", NULL},
    {"clock", limiter_get_clock, NULL, "The clock this limiter reads.", NULL},
    {NULL},
};

static PyMemberDef limiter_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(prs_py_limiter, weakreflist), READONLY, NULL},
    {NULL},
};

/* ---- TokenBucket -------------------------------------------------------- */

static int tb_check(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_token_bucket_check(c, now, n, d); }
static int tb_peek(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_token_bucket_peek(c, now, n, d); }
static void tb_reset(void *c) { prs_token_bucket_reset(c); }
static double tb_available(void *c, int64_t now) { return prs_token_bucket_available(c, now); }
static void tb_free(void *c) { prs_token_bucket_free(c); }

static int check_max(double v, const char *param, PyObject *o) {
    if (v > 1e15) {
        PyErr_Format(PyExc_ValueError, "%s must be <= 1e15, got %R", param, o);
        return -1;
    }
    return 0;
}

/* reconfigure(*, capacity=, refill_rate=, rate=): parsed as in tb_init. */
static int tb_parse_config(const void *params, PyObject *args, PyObject *kwds, void *config) {
    static char *kwlist[] = {"capacity", "refill_rate", "rate", NULL};
    PyObject *cap_o = NULL, *rate_o = NULL, *alias_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOO:reconfigure", kwlist, &cap_o, &rate_o, &alias_o))
        return -1;
    if (cap_o == Py_None) cap_o = NULL; /* None: keep the current value */
    if (rate_o == Py_None) rate_o = NULL;
    if (alias_o == Py_None) alias_o = NULL;
    if (rate_o && alias_o) {
        PyErr_SetString(PyExc_TypeError, "reconfigure() got both refill_rate and rate (rate is an alias)");
        return -1;
    }
    const char *rate_name = rate_o ? "refill_rate" : "rate";
    if (!rate_o) rate_o = alias_o;
    prs_token_bucket_config *cfg = config;
    prs_algo_token_bucket.config_from_params(params, cfg);
    int64_t cap;
    if (cap_o) {
        if (prs_py_parse_count(cap_o, "capacity", 1, INT64_C(1000000000000000), &cap) < 0) return -1;
        cfg->capacity = (double)cap;
    }
    if (rate_o && (prs_py_parse_real(rate_o, rate_name, PRS_PY_ZERO_OK, &cfg->refill_rate) < 0 ||
                   check_max(cfg->refill_rate, rate_name, rate_o) < 0))
        return -1;
    return 0;
}
static const void *tb_params(void *c) { return prs_token_bucket_params(c); }
static int tb_reconfigure(void *c, const void *cfg, int64_t now) { return prs_token_bucket_reconfigure(c, cfg, now); }

static const prs_py_limiter_ops tb_ops = {"TokenBucket", tb_check, tb_peek, tb_reset, tb_available, tb_free,
                                          tb_parse_config, tb_params, tb_reconfigure};

static PyMethodDef tb_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))prs_py_limiter_reconfigure, METH_VARARGS | METH_KEYWORDS,
     "reconfigure($self, /, *, capacity=None, refill_rate=None, rate=None)\n--\n\n"
     "Change capacity and/or refill_rate (alias rate) now; what is not given keeps its\n"
     "value. The tokens held now (refilled at the old rate until now) are kept, capped\n"
     "at the new capacity; no token is ever added. Thread-safe; bad values raise the\n"
     "constructor's errors and change nothing."},
    {NULL, NULL, 0, NULL},
};

static int tb_init(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"capacity", "refill_rate", "rate", "clock", NULL};
    PyObject *cap_o = NULL, *rate_o = NULL, *alias_o = NULL, *clock_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO$OO:TokenBucket", kwlist, &cap_o, &rate_o,
                                     &alias_o, &clock_o))
        return -1;
    if (!cap_o) {
        PyErr_SetString(PyExc_TypeError, "TokenBucket() missing required argument 'capacity'");
        return -1;
    }
    if (rate_o && alias_o) {
        PyErr_SetString(PyExc_TypeError, "TokenBucket() got both refill_rate and rate (rate is an alias)");
        return -1;
    }
    const char *rate_name = rate_o ? "refill_rate" : "rate";
    if (!rate_o) rate_o = alias_o;
    if (!rate_o) {
        PyErr_SetString(PyExc_TypeError, "TokenBucket() missing required argument 'refill_rate'");
        return -1;
    }
    prs_token_bucket_config cfg;
    prs_token_bucket_config_init(&cfg);
    int64_t cap;
    if (prs_py_parse_count(cap_o, "capacity", 1, INT64_C(1000000000000000), &cap) < 0 ||
        (cfg.capacity = (double)cap, 0) ||
        prs_py_parse_real(rate_o, rate_name, PRS_PY_ZERO_OK, &cfg.refill_rate) < 0 ||
        check_max(cfg.refill_rate, rate_name, rate_o) < 0)
        return -1;
    prs_token_bucket *tb;
    int rc = prs_token_bucket_new(&cfg, &tb);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid TokenBucket configuration"); return -1; }
    return prs_py_limiter_setup(SELF, &tb_ops, tb, clock_o);
}

static PyObject *tb_get_capacity(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    return PyFloat_FromDouble(prs_token_bucket_capacity(SELF->core));
}
static PyObject *tb_get_rate(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    return PyFloat_FromDouble(prs_token_bucket_refill_rate(SELF->core));
}

static PyGetSetDef tb_getset[] = {
    {"capacity", tb_get_capacity, NULL, "Tokens the bucket holds when full.", NULL},
    {"refill_rate", tb_get_rate, NULL, "Tokens added per second (0: a fixed budget).", NULL},
    {"rate", tb_get_rate, NULL, "Alias of refill_rate.", NULL},
    {NULL},
};

static PyType_Slot tb_slots[] = {
    {Py_tp_doc, "TokenBucket(capacity, refill_rate, *, clock=None)\n--\n\n"
                "A token bucket holding up to `capacity` tokens, refilled continuously at\n"
                "`refill_rate` tokens per second (keyword alias: rate=), starting full.\n"
                "refill_rate=0 is a fixed budget that never refills. Admits at most\n"
                "capacity + refill_rate * T in any interval of T seconds. Thread-safe."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_init, tb_init},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_getset, tb_getset},
    {Py_tp_methods, tb_methods},
    {Py_tp_members, limiter_members},
    {0, NULL},
};

/* ---- GCRA --------------------------------------------------------------- */

static int gcra_check(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_gcra_check(c, now, n, d); }
static int gcra_peek(void *c, int64_t now, int64_t n, prs_decision *d) { return prs_gcra_peek(c, now, n, d); }
static void gcra_reset(void *c) { prs_gcra_reset(c); }
static double gcra_available(void *c, int64_t now) { return prs_gcra_available(c, now); }
static void gcra_free(void *c) { prs_gcra_free(c); }

/* reconfigure(*, rate=, burst=): parsed as in gcra_init. */
static int gcra_parse_config(const void *params, PyObject *args, PyObject *kwds, void *config) {
    static char *kwlist[] = {"rate", "burst", NULL};
    PyObject *rate_o = NULL, *burst_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OO:reconfigure", kwlist, &rate_o, &burst_o))
        return -1;
    if (rate_o == Py_None) rate_o = NULL; /* None: keep the current value */
    if (burst_o == Py_None) burst_o = NULL;
    prs_gcra_config *cfg = config;
    prs_algo_gcra.config_from_params(params, cfg);
    if (rate_o) {
        if (prs_py_parse_real(rate_o, "rate", 0, &cfg->rate) < 0 || check_max(cfg->rate, "rate", rate_o) < 0)
            return -1;
        if (cfg->rate < 1e-9) {
            PyErr_Format(PyExc_ValueError, "rate must be >= 1e-9 per second, got %R", rate_o);
            return -1;
        }
    }
    if (burst_o && prs_py_parse_count(burst_o, "burst", 1, INT64_MAX, &cfg->burst) < 0) return -1;
    return 0;
}
static const void *gcra_params(void *c) { return prs_gcra_params(c); }
static int gcra_reconfigure(void *c, const void *cfg, int64_t now) { return prs_gcra_reconfigure(c, cfg, now); }

static const prs_py_limiter_ops gcra_ops = {"GCRA", gcra_check, gcra_peek, gcra_reset, gcra_available, gcra_free,
                                            gcra_parse_config, gcra_params, gcra_reconfigure};

static PyMethodDef gcra_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))prs_py_limiter_reconfigure, METH_VARARGS | METH_KEYWORDS,
     "reconfigure($self, /, *, rate=None, burst=None)\n--\n\n"
     "Change rate and/or burst now; what is not given keeps its value. The requests\n"
     "already consumed are kept (re-expressed on the new rate, rounded up: nothing is\n"
     "minted), so a burst lowered below them admits nothing until they drain.\n"
     "Thread-safe; bad values raise the constructor's errors and change nothing."},
    {NULL, NULL, 0, NULL},
};

static int gcra_init(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"rate", "burst", "clock", NULL};
    PyObject *rate_o = NULL, *burst_o = NULL, *clock_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$O:GCRA", kwlist, &rate_o, &burst_o, &clock_o))
        return -1;
    prs_gcra_config cfg;
    prs_gcra_config_init(&cfg);
    if (prs_py_parse_real(rate_o, "rate", 0, &cfg.rate) < 0 || check_max(cfg.rate, "rate", rate_o) < 0)
        return -1;
    if (cfg.rate < 1e-9) {
        PyErr_Format(PyExc_ValueError, "rate must be >= 1e-9 per second, got %R", rate_o);
        return -1;
    }
    if (prs_py_parse_count(burst_o, "burst", 1, INT64_MAX, &cfg.burst) < 0) return -1;
    prs_gcra *g;
    int rc = prs_gcra_new(&cfg, &g);
    if (rc == PRS_ERANGE) {
        PyErr_Format(PyExc_ValueError, "burst=%R is too large for rate=%R (burst / rate must fit in "
                     "292 years of nanoseconds)", burst_o, rate_o);
        return -1;
    }
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid GCRA configuration"); return -1; }
    return prs_py_limiter_setup(SELF, &gcra_ops, g, clock_o);
}

static PyObject *gcra_get_rate(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    return PyFloat_FromDouble(prs_gcra_rate(SELF->core));
}
static PyObject *gcra_get_burst(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    return PyLong_FromLongLong(prs_gcra_burst(SELF->core));
}

static PyGetSetDef gcra_getset[] = {
    {"rate", gcra_get_rate, NULL, "Requests per second.", NULL},
    {"burst", gcra_get_burst, NULL, "Requests admissible at once.", NULL},
    {NULL},
};

static PyType_Slot gcra_slots[] = {
    {Py_tp_doc, "GCRA(rate, burst, *, clock=None)\n--\n\n"
                "The Generic Cell Rate Algorithm: `rate` requests per second with up to\n"
                "`burst` admissible at once. Lock-free (one 64-bit state). Admits at most\n"
                "burst + rate * T in any interval of T seconds. Scheduling is in whole\n"
                "nanoseconds: the interval 1e9/rate is rounded up, so rates above 1e9/s act\n"
                "as 1e9/s (use TokenBucket for those)."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_init, gcra_init},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_getset, gcra_getset},
    {Py_tp_methods, gcra_methods},
    {Py_tp_members, limiter_members},
    {0, NULL},
};

#define LIMITER_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE)

/* The shared base: holds the shared getset (available, clock) so algorithm
 * types only list their own properties. */
static PyType_Slot base_slots[] = {
    {Py_tp_doc, "_Limiter()\n--\n\nThe shared base of the in-process limiters (not instantiable)."},
    {Py_tp_new, prs_py_limiter_new},
    {Py_tp_dealloc, prs_py_limiter_dealloc},
    {Py_tp_traverse, prs_py_limiter_traverse},
    {Py_tp_clear, prs_py_limiter_clear},
    {Py_tp_methods, prs_py_limiter_methods},
    {Py_tp_getset, prs_py_limiter_getset},
    {Py_tp_members, limiter_members},
    {0, NULL},
};

static PyType_Spec base_spec = {"pyresilience._core._Limiter", sizeof(prs_py_limiter), 0, LIMITER_FLAGS, base_slots};
static PyType_Spec tb_spec = {"pyresilience._core.TokenBucket", sizeof(prs_py_limiter), 0, LIMITER_FLAGS, tb_slots};
static PyType_Spec gcra_spec = {"pyresilience._core.GCRA", sizeof(prs_py_limiter), 0, LIMITER_FLAGS, gcra_slots};

int prs_py_register_limiters(PyObject *m, prs_py_state *st) {
    if (prs_py_add_type(m, st, PRS_SLOT_RateWait, &rate_wait_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_LimiterBase, &base_spec, NULL) < 0) return -1;
    PyObject *base = st->slots[PRS_SLOT_LimiterBase];
    if (prs_py_add_type(m, st, PRS_SLOT_TokenBucket, &tb_spec, base) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_GCRA, &gcra_spec, base) < 0) return -1;
    return 0;
}
