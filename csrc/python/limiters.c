/*
 * limiters.c - the in-process limiter types: one implementation for every
 * algorithm of the table (PRS_ALGORITHMS, prs_algo.h).
 *
 * A prs_py_limiter is a core prs_limiter + a clock. Each Python type
 * (TokenBucket, GCRA, ...) is its table row + its declaration
 * (tools/decl_limiters.py -> gen/limiters.h): the constructor's and
 * reconfigure()'s parameters (prs_py_params), the docs with their text
 * signatures, the properties and the spec. The core validates and says which
 * field failed and why (prs_config_error), worded by prs_py_config_error().
 * The core object is built in tp_new: an instance is always usable, and
 * __init__ does nothing (a facade subclass never re-parses).
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

#include <stdalign.h>

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

/* prs_py_parse_kn's arguments (declared: tools/decl_limiters.py, kn_params). */
typedef struct prs_py_kn_args {
    int64_t n, timeout_ns;
} prs_py_kn_args;

#include "gen/limiters.h"

#define SELF ((prs_py_limiter *)self)

/* ---- each row of the table: its declared type ----------------------------- */

#define INIT(c, py, redis) \
    static void c##_init(void *config) { prs_##c##_config_init(config); }
PRS_ALGORITHMS(INIT)
#undef INIT

typedef struct algo_binding {
    const prs_py_params *ctor, *reconfigure;
    PyType_Spec *spec;
    void (*config_init)(void *config);
} algo_binding;

#define ROW(c, py, redis) {&py##_params, &py##_reconfigure_params, &py##_spec, c##_init},
static const algo_binding algos[PRS_ALGO__COUNT] = {PRS_ALGORITHMS(ROW)};
#undef ROW
#define FITS(c, py, redis) _Static_assert(P_##py##__COUNT <= PRS_PY_LIMITER_MAX_PARAMS, #py);
PRS_ALGORITHMS(FITS)
#undef FITS

/* The table row of `type` (one of ours or a subclass), or -1. */
static int algo_of_type(prs_py_state *st, PyTypeObject *type) {
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (PyType_IsSubtype(type, (PyTypeObject *)st->slots[PRS_SLOT__ALGO_FIRST + i])) return i;
    return -1;
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
    const prs_py_params *spec = algos[id].ctor;
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    PyObject *v[PRS_PY_LIMITER_MAX_PARAMS];
    algos[id].config_init(config);
    if (prs_py_parse_params_tuple(spec, args, kwds, config, v) < 0) return NULL;
    prs_config_error why = {NULL, NULL};
    prs_limiter *core;
    PyObject *shared = v[spec->n - 3], *name = v[spec->n - 2]; /* shared=, name= (shm.c) */
    int rc = shared && shared != Py_None
                 ? prs_py_shm_limiter_new(st, shared, name, prs_algorithms[id].algo, config,
                                          &core, &why)
             : name && name != Py_None ? PRS_EINVAL
                                       : prs_limiter_new(prs_algorithms[id].algo, config, NULL,
                                                         &core, &why);
    if (rc && PyErr_Occurred()) return NULL;
    if (rc == PRS_EINVAL && !why.field && name && name != Py_None && !(shared && shared != Py_None))
        return PyErr_Format(PyExc_ValueError, "name= is used with shared=, got name=%R", name);
    if (rc) return prs_py_config_error(st, rc, &why, spec, v, config);
    prs_py_limiter *self = (prs_py_limiter *)type->tp_alloc(type, 0);
    if (!self) {
        prs_limiter_free(core);
        return NULL;
    }
    self->core = core;
    self->algo = id;
    if (prs_py_clock_init(st, v[spec->n - 1], &self->clock) < 0) { /* clock=, the last */
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

int prs_py_parse_kn(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    unsigned what, PyObject **key, int64_t *n, int64_t *timeout_ns) {
    prs_py_params spec = *kn_params[what & 7]; /* named after the method */
    prs_py_kn_args a = {1, PRS_NEVER};
    PyObject *v[4];
    int k = (what & PRS_PY_KEY) != 0;
    if (timeout_ns) *timeout_ns = PRS_NEVER;
    if (!kwnames && nargs >= k && nargs <= k + 1) { /* the usual calls: ([key][, n]) */
        if (k) *key = args[0];
        *n = 1;
        return nargs > k ? prs_py_parse_n(args[k], "n", n) : 0;
    }
    spec.fname = fname;
    if (prs_py_parse_params(&spec, args, nargs, kwnames, &a, v) < 0) return -1;
    if (k) *key = v[0];
    *n = a.n;
    if (timeout_ns) *timeout_ns = a.timeout_ns;
    return 0;
}

PyObject *prs_py_rate_method(PyObject *self, int kind, prs_py_rate_fn target, int keyed,
                             PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const fname[] = {"allow", "check", "peek", "acquire", "_waiter"};
    unsigned what = PRS_PY_ALIAS | (keyed ? PRS_PY_KEY : 0) | (kind >= PRS_PY_ACQUIRE ? PRS_PY_TIMEOUT : 0);
    PyObject *key = NULL;
    int64_t n = 1, timeout_ns = PRS_NEVER, now, max_n;
    if ((nargs || kwnames || keyed) &&
        prs_py_parse_kn(fname[kind], args, nargs, kwnames, what, &key, &n, &timeout_ns) < 0)
        return NULL;
    prs_py_state *st = prs_py_state_of(self);
    prs_py_rate r;
    if (!st || target(self, key, &r) < 0) return NULL;
    if (kind == PRS_PY_WAITER)
        return prs_py_rate_wait_new(st, self, r.clock, r.fn, r.ctx, r.what, n, timeout_ns);
    if (kind == PRS_PY_ACQUIRE) {
        if (prs_py_wait_admitted(st, r.clock, r.fn, r.ctx, r.what, n, timeout_ns) < 0) return NULL;
        Py_RETURN_NONE;
    }
    int by = -1;
    prs_decision d;
    if (prs_py_clock_now(r.clock, &now) < 0) return NULL;
    int rc = r.fn(r.ctx, now, n, kind != PRS_PY_PEEK, &d, &by, &max_n);
    if (rc) return PyErr_Occurred() ? NULL : prs_py_error(st, rc, NULL); /* fn may word its own failure */
    if (kind == PRS_PY_ALLOW) return PyBool_FromLong(d.allowed);
    return prs_py_decision_new_by(st, &d, by);
}

/* A plain limiter as a prs_py_decide_fn: its limit is the largest n. */
static int limiter_decide_cb(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d,
                             int *by, int64_t *max_n) {
    int rc = prs_limiter_decide(ctx, now, n, consume, d);
    *max_n = d->limit;
    return rc;
}

static int limiter_target(PyObject *self, PyObject *key, prs_py_rate *r) {
    *r = (prs_py_rate){&SELF->clock, limiter_decide_cb, SELF->core,
                       prs_algorithms[SELF->algo].py_name, NULL, NULL, 0};
    return 0;
}

static PyObject *limiter_allow(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    if (nargs == 0 && !kwnames && SELF->clock.kind == PRS_CLOCK_MONOTONIC) {
        prs_decision d; /* the hot path: allow() */
        prs_limiter_decide(SELF->core, prs_monotonic_ns(), 1, 1, &d);
        return PyBool_FromLong(d.allowed);
    }
    return prs_py_rate_method(self, PRS_PY_ALLOW, limiter_target, 0, args, nargs, kwnames);
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

int prs_py_wait_step(prs_py_state *st, prs_py_clock *clock, prs_py_decide_fn fn, void *ctx,
                     const char *what, prs_py_wait *w, int64_t *sleep_ns) {
    static const char *const late = "rate limit exceeded: not admissible within timeout";
    int64_t now, max_n = INT64_MAX, wake = 0;
    prs_decision d;
    int by = -1;
    if (prs_py_clock_now(clock, &now) < 0) return -1;
    int rc = fn(ctx, now, w->n, 1, &d, &by, &max_n);
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
        prs_py_raise_rate_limited(st, &d, by, PRS_NEVER,
                                  d.retry_after_ns == PRS_NEVER
                                      ? "rate limit exceeded: never admissible (the budget is "
                                        "spent and does not refill)"
                                      : "rate limit exceeded: never admissible (the clock has "
                                        "reached 2**63 ns)");
        return -1;
    case PRS_WAIT_TIMEOUT:
        prs_py_raise_rate_limited(st, &d, by, d.retry_after_ns, late);
        return -1;
    default: break; /* PRS_WAIT_SLEEP until `wake` */
    }
    if (clock->kind == PRS_CLOCK_MANUAL) { /* advanced to the admission instant instead */
        *sleep_ns = 0;
        return prs_py_clock_wait(clock, now, wake, 0) < 0 ? -1 : 1;
    }
    int64_t ns = wake - now;
    if (w->real_deadline != PRS_NEVER) {
        int64_t left = prs__sat_sub(w->real_deadline, prs_monotonic_ns());
        if (left <= 0) {
            prs_py_raise_rate_limited(st, &d, by, d.retry_after_ns, late);
            return -1;
        }
        if (ns > left) ns = left;
    }
    *sleep_ns = ns;
    return 1;
}

int prs_py_wait_admitted(prs_py_state *st, prs_py_clock *clock, prs_py_decide_fn fn, void *ctx,
                         const char *what, int64_t n, int64_t timeout_ns) {
    prs_py_wait w;
    timeout_ns = prs_py_deadline_cap(st, timeout_ns);
    if (prs_py_wait_begin(clock, n, timeout_ns, &w) < 0) return -1;
    for (;;) {
        int64_t ns = 0;
        int r = prs_py_wait_step(st, clock, fn, ctx, what, &w, &ns);
        if (r <= 0) return r;
        if (prs_py_clock_wait(clock, 0, ns, 0) < 0) return -1; /* nothing was taken */
    }
}

/* ---- reconfigure --------------------------------------------------------------- */

static int apply_limiter(void *ctx, const void *config, int64_t now, prs_config_error *why) {
    return prs_limiter_reconfigure(ctx, config, now, why);
}

PyObject *prs_py_limiter_reconfigure_with(PyObject *limiter, void *config, prs_py_clock *clock,
                                          PyObject *const *args, Py_ssize_t nargs,
                                          PyObject *kwnames, prs_py_apply_fn apply, void *ctx) {
    prs_py_state *st = prs_py_state_of(limiter);
    if (!st) return NULL;
    const prs_py_params *spec = algos[((prs_py_limiter *)limiter)->algo].reconfigure;
    PyObject *v[PRS_PY_LIMITER_MAX_PARAMS];
    if (prs_py_parse_params(spec, args, nargs, kwnames, config, v) < 0) return NULL;
    int64_t now;
    if (prs_py_clock_now(clock, &now) < 0) return NULL;
    prs_config_error why = {NULL, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS /* O(limit) for a sliding log's ring, O(keys) for a table */
    rc = apply(ctx, config, now, &why);
    Py_END_ALLOW_THREADS
    if (rc) return prs_py_config_error(st, rc, &why, spec, v, config);
    Py_RETURN_NONE;
}

static PyObject *limiter_reconfigure(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG]; /* what is not given keeps its value */
    prs_py_op_lock(&SELF->reconfiguring);
    prs_limiter_config(SELF->core, config);
    PyObject *r = prs_py_limiter_reconfigure_with(self, config, &SELF->clock, args, nargs, kwnames,
                                                  apply_limiter, SELF->core);
    prs_py_op_unlock(&SELF->reconfiguring);
    return r;
}

/* ---- _RateWait: an async wait in progress ---------------------------------- */

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
    timeout_ns = prs_py_deadline_cap(st, timeout_ns);
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
    int64_t ns = 0;
    int r = -1;
    Py_BEGIN_CRITICAL_SECTION(op); /* steps of one wait, one at a time: admitted once */
    if (self->done)
        PyErr_SetString(PyExc_RuntimeError, "this wait has already been admitted");
    else if ((r = prs_py_wait_step(st, self->clock, self->fn, self->ctx, self->what, &self->w, &ns)) == 0)
        self->done = 1;
    Py_END_CRITICAL_SECTION();
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_NONE;
    return PyFloat_FromDouble((double)ns / 1e9);
}



/* A parameter's property (closure: its index in the constructor's params). */
static PyObject *limiter_param_get(PyObject *self, void *closure) {
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    prs_limiter_config(SELF->core, config);
    return prs_py_param_get(&algos[SELF->algo].ctor->p[(intptr_t)closure], config);
}

/* _config(): [(name, value)] of the parameters (not their aliases, not the
 * clock), for reprs. */
static PyObject *limiter_config(PyObject *self, PyObject *unused) {
    const prs_py_params *spec = algos[SELF->algo].ctor;
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    prs_limiter_config(SELF->core, config);
    PyObject *list = PyList_New(0);
    for (Py_ssize_t i = 0; list && i < spec->n; i++) {
        const prs_py_param *p = &spec->p[i];
        if (p->alias || p->kind == PRS_PK_CLOCK || p->kind == PRS_PK_OBJECT || p->kind == PRS_PK_STR)
            continue; /* not a parameter of the algorithm (clock=, shared=, name=) */
        PyObject *item = Py_BuildValue("(sN)", p->name, prs_py_param_get(p, config));
        if (!item || PyList_Append(list, item) < 0) Py_CLEAR(list);
        Py_XDECREF(item);
    }
    return list;
}

/* ---- registration ------------------------------------------------------------ */

int prs_py_register_limiters(PyObject *m, prs_py_state *st) {
    if (limiters_add_types(m, st) < 0) return -1;
    PyObject *base = st->slots[PRS_SLOT_LimiterBase];
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (prs_py_add_type(m, st, PRS_SLOT__ALGO_FIRST + i, algos[i].spec, base) < 0) return -1;
    return 0;
}
