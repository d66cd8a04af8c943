/*
 * limiters.c - the in-process limiter types: one implementation for every
 * algorithm of the table (PRS_ALGORITHMS, prs_algo.h).
 *
 * A prs_py_limiter is a core prs_limiter + a clock. Each Python type
 * (TokenBucket, GCRA, ...) is its table row + its declaration
 * (tools/decl_limiters.py -> gen/limiters.h): the constructor's and
 * reconfigure()'s parameters, the docs, the properties and the spec. The core
 * object is built in tp_new (__init__ does nothing: a facade subclass never
 * re-parses); the core validates, prs_py_config_error() words its refusal.
 *
 * The rate methods of every limiter-like type (plain, keyed, per-key view,
 * group, Redis) are prs_py_rate_method here, their waits wait.c's rate wait;
 * allow() and check() without arguments are the generated hot path straight
 * into the core (no allocation, no Python call but a callable clock's).
 */
#include "wait.h"

#include <stdalign.h>

#include "gen/limiters.h"

#define PRS_PY_LIMITER_MAX_PARAMS 8 /* a limiter constructor's parameters, at most */

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

/* ---- the object -------------------------------------------------------------- */

static PyObject *limiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    int id = 0; /* the row of `type`, ours or a subclass (_Limiter: DISALLOW_INSTANTIATION) */
    while (id < PRS_ALGO__COUNT - 1 &&
           !PyType_IsSubtype(type, (PyTypeObject *)st->slots[PRS_SLOT__ALGO_FIRST + id]))
        id++;
    const prs_py_params *spec = algos[id].ctor;
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    PyObject *v[PRS_PY_LIMITER_MAX_PARAMS];
    algos[id].config_init(config);
    if (prs_py_parse_params_tuple(spec, args, kwds, config, v) < 0) return NULL;
    prs_config_error why = {NULL, NULL};
    prs_limiter *core;
    const prs_algo *algo = prs_algorithms[id].algo;
    int rc = prs_py_shm_place(st, v[spec->n - 3], v[spec->n - 2], PRS_PY_PLACE_LIMITER, algo,
                              config, &core, &why); /* shared=, name= */
    if (rc == PRS_PY_IN_PROCESS) rc = prs_limiter_new(algo, config, NULL, &core, &why);
    if (rc && PyErr_Occurred()) return NULL;
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

PyObject *prs_py_rate_method(PyObject *self, int kind, prs_py_rate_fn target, PyObject *key,
                             const prs_py_rate_args *a) {
    int64_t n = a->n, timeout_ns = a->timeout_ns, now, max_n;
    prs_py_state *st = prs_py_state_of(self);
    prs_py_rate r;
    if (!st || target(self, key, &r) < 0) return NULL;
    if (kind == PRS_PY_WAITER)
        return prs_py_rate_wait_new(st, self, r.clock, r.fn, r.ctx, r.what, n, timeout_ns);
    if (kind == PRS_PY_ACQUIRE) {
        if (prs_py_wait_admitted(st, r.clock, r.fn, r.ctx, r.what, n, timeout_ns, 0) < 0) return NULL;
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

/* ---- reconfigure --------------------------------------------------------------- */

PyObject *prs_py_limiter_reconfigure(PyObject *limiter, prs_keyed *table, atomic_int *lock,
                                     prs_py_clock *clock, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
    prs_py_state *st = prs_py_state_of(limiter);
    if (!st) return NULL;
    prs_limiter *core = ((prs_py_limiter *)limiter)->core;
    const prs_py_params *spec = algos[((prs_py_limiter *)limiter)->algo].reconfigure;
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG]; /* what is not given keeps its value */
    PyObject *v[PRS_PY_LIMITER_MAX_PARAMS];
    prs_config_error why = {NULL, NULL};
    int64_t now;
    int rc = -1;
    prs_py_op_lock(lock);
    if (table) /* a table's params: unlocked, reconfigure (under *lock) is their only writer */
        prs_keyed_algo(table)->config_from_params(prs_keyed_params(table), config);
    else
        prs_limiter_config(core, config);
    if (prs_py_parse_params(spec, args, nargs, kwnames, config, v) == 0 &&
        prs_py_clock_now(clock, &now) == 0) {
        Py_BEGIN_ALLOW_THREADS /* O(limit) for a sliding log's ring, O(keys) for a table */
        rc = table ? prs_keyed_reconfigure_why(table, config, now, &why)
                   : prs_limiter_reconfigure(core, config, now, &why);
        Py_END_ALLOW_THREADS
        if (rc) prs_py_config_error(st, rc, &why, spec, v, config);
    }
    prs_py_op_unlock(lock);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

static PyObject *limiter_reconfigure(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
    return prs_py_limiter_reconfigure(self, NULL, &SELF->reconfiguring, &SELF->clock, args, nargs,
                                      kwnames);
}

/* A parameter's property (closure: its index in the constructor's params). */
static PyObject *limiter_param_get(PyObject *self, void *closure) {
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG];
    prs_limiter_config(SELF->core, config);
    return prs_py_param_get(&algos[SELF->algo].ctor->p[(intptr_t)closure], config);
}

/* ---- registration ------------------------------------------------------------ */

int prs_py_register_limiters(PyObject *m, prs_py_state *st) {
    if (limiters_add_types(m, st) < 0) return -1;
    PyObject *base = st->slots[PRS_SLOT_LimiterBase];
    for (int i = 0; i < PRS_ALGO__COUNT; i++)
        if (prs_py_add_type(m, st, PRS_SLOT__ALGO_FIRST + i, algos[i].spec, base) < 0) return -1;
    return 0;
}
