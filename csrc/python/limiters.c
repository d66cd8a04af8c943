/*
 * limiters.c - the in-process limiter types: one implementation for every
 * algorithm of the table (PRS_ALGORITHMS, prs_algo.h).
 *
 * A prs_py_limiter is a core prs_limiter + a clock. Each Python type
 * (TokenBucket, GCRA, ...) is registered from its table row and its
 * parameter description (limiters_family.c): the constructor's parser, the
 * text signatures of the type and of reconfigure(), the properties and the
 * wording of bad-value errors all come from that description; the core
 * validates and says which field failed and why (prs_config_error). The core
 * object is built in tp_new: an instance is always usable, and __init__ does
 * nothing (a facade subclass never re-parses).
 *
 * Hot path: allow() with no arguments reads the clock once and calls the core;
 * no allocation, no Python call (unless the clock is a Python callable).
 *
 * Waiting: prs_py_wait_step() is the one wait of every in-process limiter
 * (plain, keyed, per-key view, group; each passes its decide function); the
 * core decides each step (prs_wait_decide). The sync acquire loops over it
 * sleeping with the GIL released; the async forms get a _RateWait whose
 * step() says how long to await. A ManualClock is advanced in integer ns.
 */
#include "prs_py.h"

#include <pthread.h>
#include <stdalign.h>
#include <structmember.h>

#define SELF ((prs_py_limiter *)self)

/* ---- the description of each algorithm's type ---------------------------- */

#define DESC(c, py, redis) &prs_py_desc_##c,
static const prs_py_limiter_desc *const descs[PRS_ALGO__COUNT] = {PRS_ALGORITHMS(DESC)};
#undef DESC

static const prs_py_limiter_desc *desc_of(PyObject *limiter) {
    return descs[((prs_py_limiter *)limiter)->algo];
}

/* The table row of `type` (one of ours or a subclass), or -1. */
static int algo_of_type(prs_py_state *st, PyTypeObject *type) {
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (PyType_IsSubtype(type, (PyTypeObject *)st->slots[PRS_SLOT__ALGO_FIRST + i])) return i;
    return -1;
}

/* ---- parameters: parsing and errors, from the description ---------------- */

/* One Python value into the config field of `p`, named `name` in errors. */
static int set_field(const prs_py_algo_param *p, const char *name, PyObject *o, void *config) {
    void *f = (unsigned char *)config + p->offset;
    int64_t i;
    double x;
    switch (p->kind) {
    case PRS_PY_P_COUNT: return prs_py_parse_count(o, name, 1, INT64_MAX, (int64_t *)f);
    case PRS_PY_P_COUNT_REAL:
        if (prs_py_parse_count(o, name, 1, INT64_MAX, &i) < 0) return -1;
        *(double *)f = (double)i;
        return 0;
    case PRS_PY_P_REAL:
        return prs_py_parse_real(o, name, PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK, (double *)f);
    default: /* PRS_PY_P_SECONDS */
        if (prs_py_parse_real(o, name, PRS_PY_ZERO_OK | PRS_PY_NEG_OK, &x) < 0) return -1;
        *(int64_t *)f = prs_seconds_to_ns(x);
        return 0;
    }
}

static PyObject *get_field(const prs_py_algo_param *p, const void *config) {
    const void *f = (const unsigned char *)config + p->offset;
    switch (p->kind) {
    case PRS_PY_P_COUNT: return PyLong_FromLongLong(*(const int64_t *)f);
    case PRS_PY_P_SECONDS: return PyFloat_FromDouble((double)*(const int64_t *)f / 1e9);
    default: return PyFloat_FromDouble(*(const double *)f);
    }
}

static Py_ssize_t nparams(const prs_py_limiter_desc *ds) {
    Py_ssize_t n = 0;
    while (n < PRS_PY_MAX_PARAMS && ds->params[n].name) n++;
    return n;
}

/* Parses the arguments of the constructor (`ctor`: positional or keyword,
 * all required, clock=) or of reconfigure() (keyword-only, None keeps the
 * value) into `config`, which holds the defaults / the current config. */
int prs_py_limiter_parse(const prs_py_limiter_desc *ds, const char *fname, int ctor, PyObject *args,
                         PyObject *kwds, void *config, prs_py_given *g, PyObject **clock_o) {
    Py_ssize_t np = nparams(ds), npos = args ? PyTuple_GET_SIZE(args) : 0;
    for (Py_ssize_t i = 0; i < PRS_PY_MAX_PARAMS; i++) {
        g->value[i] = NULL;
        g->name[i] = i < np ? ds->params[i].name : NULL;
    }
    if (clock_o) *clock_o = NULL;
    if (npos > (ctor ? np : 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments (%zd given)", fname,
                     ctor ? np : 0, npos);
        return -1;
    }
    for (Py_ssize_t i = 0; i < npos; i++) g->value[i] = PyTuple_GET_ITEM(args, i);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (kwds && PyDict_Next(kwds, &pos, &key, &value)) {
        if (ctor && clock_o && PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "clock") == 0) {
            *clock_o = value;
            continue;
        }
        Py_ssize_t i;
        int alias = 0;
        for (i = 0; i < np; i++) {
            const prs_py_algo_param *p = &ds->params[i];
            if (!PyUnicode_Check(key)) continue;
            if (PyUnicode_CompareWithASCIIString(key, p->name) == 0) break;
            if (p->alias && PyUnicode_CompareWithASCIIString(key, p->alias) == 0) {
                alias = 1;
                break;
            }
        }
        if (i == np) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname, key);
            return -1;
        }
        /* None: reconfigure keeps the value; a constructor takes the other name */
        if (value == Py_None && (!ctor || ds->params[i].alias)) continue;
        if (g->value[i]) {
            const prs_py_algo_param *p = &ds->params[i];
            if (!alias && g->name[i] == p->name)
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                             p->name);
            else
                PyErr_Format(PyExc_TypeError, "%s() got both %s and %s (%s is an alias)", fname,
                             p->name, p->alias, p->alias);
            return -1;
        }
        g->value[i] = value;
        g->name[i] = alias ? ds->params[i].alias : ds->params[i].name;
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        if (!g->value[i]) {
            if (!ctor) continue;
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         ds->params[i].name);
            return -1;
        }
        if (set_field(&ds->params[i], g->name[i], g->value[i], config) < 0) return -1;
    }
    return 0;
}

PyObject *prs_py_limiter_config_error(prs_py_state *st, const prs_py_limiter_desc *ds, int rc,
                                      const prs_config_error *why, const prs_py_given *g) {
    if ((rc != PRS_EINVAL && rc != PRS_ERANGE) || !why->field || !why->reason)
        return prs_py_error(st, rc, NULL);
    for (Py_ssize_t i = 0; i < nparams(ds); i++) {
        if (strcmp(ds->params[i].field, why->field) != 0) continue;
        if (g->value[i])
            PyErr_Format(PyExc_ValueError, "%s %s, got %R", g->name[i], why->reason, g->value[i]);
        else
            PyErr_Format(PyExc_ValueError, "%s %s", g->name[i], why->reason);
        return NULL;
    }
    PyErr_Format(PyExc_ValueError, "%s %s", why->field, why->reason);
    return NULL;
}

/* ---- the object -------------------------------------------------------------- */

static PyObject *limiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    int id = algo_of_type(st, type);
    if (id < 0) {
        PyErr_Format(PyExc_TypeError, "cannot create '%.200s' instances: use one of the limiter "
                     "types (TokenBucket, GCRA, ...)", type->tp_name);
        return NULL;
    }
    const prs_py_limiter_desc *ds = descs[id];
    const prs_algo *algo = prs_algorithms[id].algo;
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    prs_py_given g;
    PyObject *clock_o;
    ds->config_init(config);
    if (prs_py_limiter_parse(ds, prs_algorithms[id].py_name, 1, args, kwds, config, &g, &clock_o) < 0)
        return NULL;
    prs_config_error why = {NULL, NULL};
    prs_limiter *core;
    int rc = prs_limiter_new(algo, config, NULL, &core, &why);
    if (rc) return prs_py_limiter_config_error(st, ds, rc, &why, &g);
    prs_py_limiter *self = (prs_py_limiter *)type->tp_alloc(type, 0);
    if (!self) {
        prs_limiter_free(core);
        return NULL;
    }
    self->core = core;
    self->algo = id;
    self->clock.kind = PRS_CLOCK_MONOTONIC;
    if (prs_py_clock_init(st, clock_o, &self->clock) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int limiter_clear(PyObject *self) {
    prs_py_clock_clear(&SELF->clock);
    return 0;
}

static int limiter_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return prs_py_clock_traverse(&SELF->clock, visit, arg);
}

static void limiter_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (SELF->weakreflist) PyObject_ClearWeakRefs(self);
    limiter_clear(self);
    prs_limiter_free(SELF->core);
    tp->tp_free(self);
    Py_DECREF(tp);
}

int prs_py_pick_n(const char *fname, PyObject *n_o, PyObject *alias_o, int64_t *n) {
    if (n_o && alias_o) {
        PyErr_Format(PyExc_TypeError, "%s() got both n and tokens_needed", fname);
        return -1;
    }
    PyObject *o = n_o ? n_o : alias_o;
    if (!o) { *n = 1; return 0; }
    if (PyLong_CheckExact(o)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (!overflow && v >= 1) { *n = v; return 0; }
    }
    return prs_py_parse_n(o, n_o ? "n" : "tokens_needed", n);
}

static const char *const n_names[] = {"n", "tokens_needed", NULL};

int prs_py_parse_n_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                        int64_t *n) {
    if (nargs == 1 && !kwnames) return prs_py_pick_n(fname, args[0], NULL, n);
    PyObject *v[2];
    if (prs_py_unpack(fname, args, nargs, kwnames, n_names, 1, v) < 0) return -1;
    return prs_py_pick_n(fname, v[0], v[1], n);
}

static int decide(PyObject *self, int consume, const char *fname, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames, prs_decision *d) {
    int64_t n = 1, now;
    if ((nargs || kwnames) && prs_py_parse_n_args(fname, args, nargs, kwnames, &n) < 0) return -1;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return -1;
    int rc = prs_limiter_decide(SELF->core, now, n, consume, d);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    return 0;
}

static PyObject *limiter_allow(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    prs_decision d;
    if (nargs == 0 && !kwnames && SELF->clock.kind == PRS_CLOCK_MONOTONIC) {
        /* the hot path: allow() */
        prs_limiter_decide(SELF->core, prs_monotonic_ns(), 1, 1, &d);
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
 * The core decides each step (prs_wait_decide: admitted, sleep until, timeout,
 * never); this only turns the step into a sleep, an advance of a ManualClock,
 * or an exception. Three
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
    int64_t now, max_n = INT64_MAX, wake = 0;
    prs_decision d;
    int by = -1;
    if (prs_py_clock_now(clock, &now) < 0) return -1;
    int rc = fn(ctx, now, w->n, &d, &by, &max_n);
    if (rc) { /* fn may word its own failure (a backend's message) */
        if (!PyErr_Occurred()) prs_py_error(st, rc, NULL);
        return -1;
    }
    switch (prs_wait_decide(&d, now, w->deadline, &wake)) {
    case PRS_WAIT_ADMITTED: return 0;
    case PRS_WAIT_NEVER:
        if (w->n > max_n) {
            PyErr_Format(PyExc_ValueError, "n=%lld can never be admitted by this %s (limit %lld)",
                         (long long)w->n, what, (long long)max_n);
            return -1;
        }
        return wait_fail(st, &d, by, PRS_NEVER,
                         d.retry_after_ns == PRS_NEVER
                             ? "rate limit exceeded: never admissible (the budget is spent and "
                               "does not refill)"
                             : "rate limit exceeded: never admissible (the clock has reached "
                               "2**63 ns)");
    case PRS_WAIT_TIMEOUT:
        return wait_fail(st, &d, by, d.retry_after_ns,
                         "rate limit exceeded: not admissible within timeout");
    default: break; /* PRS_WAIT_SLEEP until `wake` */
    }
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

/* ---- reconfigure --------------------------------------------------------------- */

static int apply_limiter(void *ctx, const void *config, int64_t now, prs_config_error *why) {
    return prs_limiter_reconfigure(ctx, config, now, why);
}

PyObject *prs_py_limiter_reconfigure_with(PyObject *limiter, void *config, prs_py_clock *clock,
                                          PyObject *args, PyObject *kwds, prs_py_apply_fn apply,
                                          void *ctx) {
    prs_py_state *st = prs_py_state_of(limiter);
    if (!st) return NULL;
    const prs_py_limiter_desc *ds = desc_of(limiter);
    prs_py_given g;
    if (prs_py_limiter_parse(ds, "reconfigure", 0, args, kwds, config, &g, NULL) < 0) return NULL;
    int64_t now;
    if (prs_py_clock_now(clock, &now) < 0) return NULL;
    prs_config_error why = {NULL, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS /* O(limit) for a sliding log's ring, O(keys) for a table */
    rc = apply(ctx, config, now, &why);
    Py_END_ALLOW_THREADS
    if (rc) return prs_py_limiter_config_error(st, ds, rc, &why, &g);
    Py_RETURN_NONE;
}

static PyObject *limiter_reconfigure(PyObject *self, PyObject *args, PyObject *kwds) {
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG]; /* what is not given keeps its value */
    prs_limiter_config(SELF->core, config);
    return prs_py_limiter_reconfigure_with(self, config, &SELF->clock, args, kwds, apply_limiter,
                                           SELF->core);
}

/* ---- acquire ------------------------------------------------------------------- */

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
    int rc = prs_limiter_decide(ctx, now, n, 1, d);
    *max_n = d->limit;
    return rc;
}

PyObject *prs_py_acquire_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames, prs_py_clock *clock, prs_py_decide_fn fn,
                                void *ctx, const char *what) {
    int64_t n, timeout_ns;
    if (prs_py_parse_acquire_args("acquire", args, nargs, kwnames, &n, &timeout_ns) < 0) return NULL;
    if (prs_py_wait_admitted(prs_py_state_of(self), clock, fn, ctx, what, n, timeout_ns) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *prs_py_waiter_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames, prs_py_clock *clock, prs_py_decide_fn fn,
                               void *ctx, const char *what) {
    int64_t n, timeout_ns;
    prs_py_state *st = prs_py_state_of(self);
    if (!st || prs_py_parse_acquire_args("_waiter", args, nargs, kwnames, &n, &timeout_ns) < 0)
        return NULL;
    return prs_py_rate_wait_new(st, self, clock, fn, ctx, what, n, timeout_ns);
}

static PyObject *limiter_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    return prs_py_acquire_method(self, args, nargs, kwnames, &SELF->clock, limiter_decide_cb,
                                 SELF->core, prs_algorithms[SELF->algo].py_name);
}

static PyObject *limiter_waiter(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    return prs_py_waiter_method(self, args, nargs, kwnames, &SELF->clock, limiter_decide_cb,
                                SELF->core, prs_algorithms[SELF->algo].py_name);
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
    prs_limiter_reset(SELF->core);
    Py_RETURN_NONE;
}

static PyObject *limiter_get_available(PyObject *self, void *c) {
    int64_t now;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    return PyFloat_FromDouble(prs_limiter_available(SELF->core, now));
}

static PyObject *limiter_get_clock(PyObject *self, void *c) {
    prs_py_state *st = prs_py_state_of(self);
    return st ? prs_py_clock_object(st, &SELF->clock) : NULL;
}

/* A parameter's property (closure: its prs_py_algo_param). */
static PyObject *param_get(PyObject *self, void *closure) {
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    prs_limiter_config(SELF->core, config);
    return get_field(closure, config);
}

/* _config(): [(name, value)] of the parameters, for reprs. */
static PyObject *limiter_config_items(PyObject *self, PyObject *unused) {
    const prs_py_limiter_desc *ds = desc_of(self);
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    prs_limiter_config(SELF->core, config);
    Py_ssize_t np = nparams(ds);
    PyObject *list = PyList_New(np);
    for (Py_ssize_t i = 0; list && i < np; i++) {
        PyObject *item = Py_BuildValue("(sN)", ds->params[i].name, get_field(&ds->params[i], config));
        if (!item) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyMethodDef limiter_methods[] = {
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
    {"_config", limiter_config_items, METH_NOARGS,
     "_config($self, /)\n--\n\nThe parameters as (name, value) pairs, for reprs."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef limiter_getset[] = {
    {"available", limiter_get_available, NULL, "Requests of weight 1 admissible now (float).", NULL},
    {"clock", limiter_get_clock, NULL, "The clock this limiter reads.", NULL},
    {NULL},
};

static PyMemberDef limiter_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(prs_py_limiter, weakreflist), READONLY, NULL},
    {NULL},
};

/* ---- the types, made from the table --------------------------------------------- *
 * Built once per process (the strings and tables are the same for every
 * interpreter): the docs with their text signatures, reconfigure() and the
 * properties, from each row's description. */

typedef struct algo_type {
    char *doc, *reconfigure_doc;
    PyMethodDef methods[2];
    PyGetSetDef getset[2 * PRS_PY_MAX_PARAMS + PRS_PY_MAX_EXTRA + 1];
    PyType_Slot slots[8];
    PyType_Spec spec;
} algo_type;

static algo_type algo_types[PRS_ALGO__COUNT];
static pthread_once_t algo_types_once = PTHREAD_ONCE_INIT;
static int algo_types_ok;

#define NAME(c, py, redis) "pyresilience._core." #py,
static const char *const type_names[PRS_ALGO__COUNT] = {PRS_ALGORITHMS(NAME)};
#undef NAME

#define LIMITER_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE)

/* The doc of the constructor ("head(a, b, *, clock=None)": aliases are left
 * out) or of reconfigure() (every param and alias keyword-only, None keeping
 * its value), then body. */
static char *signature_doc(const char *head, const prs_py_limiter_desc *ds, int ctor, const char *body) {
    char sig[512];
    size_t len = (size_t)snprintf(sig, sizeof sig, "%s(%s", head, ctor ? "" : "$self, /, *");
    for (Py_ssize_t i = 0; i < nparams(ds); i++) {
        const prs_py_algo_param *p = &ds->params[i];
        len += (size_t)snprintf(sig + len, sizeof sig - len, "%s%s%s", (ctor && !i) ? "" : ", ",
                                p->name, ctor ? "" : "=None");
        if (p->alias && !ctor)
            len += (size_t)snprintf(sig + len, sizeof sig - len, ", %s=None", p->alias);
    }
    if (ctor) snprintf(sig + len, sizeof sig - len, ", *, clock=None)\n--\n\n");
    else snprintf(sig + len, sizeof sig - len, ")\n--\n\n");
    size_t n = strlen(sig) + strlen(body) + 1;
    char *doc = PyMem_RawMalloc(n);
    if (doc) snprintf(doc, n, "%s%s", sig, body);
    return doc;
}

static void build_algo_types(void) {
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        const prs_py_limiter_desc *ds = descs[i];
        algo_type *t = &algo_types[i];
        t->doc = signature_doc(prs_algorithms[i].py_name, ds, 1, ds->doc);
        t->reconfigure_doc = signature_doc("reconfigure", ds, 0, ds->reconfigure_doc);
        if (!t->doc || !t->reconfigure_doc) return;
        t->methods[0] = (PyMethodDef){"reconfigure", (PyCFunction)(void (*)(void))limiter_reconfigure,
                                      METH_VARARGS | METH_KEYWORDS, t->reconfigure_doc};
        size_t g = 0;
        for (Py_ssize_t k = 0; k < nparams(ds); k++) {
            const prs_py_algo_param *p = &ds->params[k];
            t->getset[g++] = (PyGetSetDef){p->name, param_get, NULL, p->doc, (void *)p};
            if (p->alias) t->getset[g++] = (PyGetSetDef){p->alias, param_get, NULL, p->doc, (void *)p};
        }
        for (size_t k = 0; k < PRS_PY_MAX_EXTRA && ds->extra[k].name; k++) t->getset[g++] = ds->extra[k];
        PyType_Slot slots[] = {
            {Py_tp_doc, t->doc},
            {Py_tp_new, limiter_new},
            {Py_tp_dealloc, limiter_dealloc},
            {Py_tp_traverse, limiter_traverse},
            {Py_tp_clear, limiter_clear},
            {Py_tp_getset, t->getset},
            {Py_tp_methods, t->methods},
            {0, NULL},
        };
        memcpy(t->slots, slots, sizeof slots);
        t->spec = (PyType_Spec){type_names[i], sizeof(prs_py_limiter), 0, LIMITER_FLAGS, t->slots};
    }
    algo_types_ok = 1;
}

/* The shared base: allow/check/peek/acquire/reset and available/clock. */
static PyType_Slot base_slots[] = {
    {Py_tp_doc, "_Limiter()\n--\n\nThe shared base of the in-process limiters (not instantiable)."},
    {Py_tp_new, limiter_new},
    {Py_tp_dealloc, limiter_dealloc},
    {Py_tp_traverse, limiter_traverse},
    {Py_tp_clear, limiter_clear},
    {Py_tp_methods, limiter_methods},
    {Py_tp_getset, limiter_getset},
    {Py_tp_members, limiter_members},
    {0, NULL},
};

static PyType_Spec base_spec = {"pyresilience._core._Limiter", sizeof(prs_py_limiter), 0, LIMITER_FLAGS, base_slots};

int prs_py_limiter_check_type(prs_py_state *st, PyObject *o) {
    return PyObject_TypeCheck(o, PRS_PY_TYPE(st, LimiterBase));
}

int prs_py_register_limiters(PyObject *m, prs_py_state *st) {
    if (prs_py_add_type(m, st, PRS_SLOT_RateWait, &rate_wait_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_LimiterBase, &base_spec, NULL) < 0) return -1;
    pthread_once(&algo_types_once, build_algo_types);
    if (!algo_types_ok) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *base = st->slots[PRS_SLOT_LimiterBase];
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (prs_py_add_type(m, st, PRS_SLOT__ALGO_FIRST + i, &algo_types[i].spec, base) < 0) return -1;
    return 0;
}
