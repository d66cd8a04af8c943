/*
 * keyed.c - KeyedLimiter (per-key limiting over prs_keyed), its per-key view
 * (KeyedLimiterView, what for_key() returns) and LimiterGroup (prs_group).
 *
 * KeyedLimiter takes a template limiter (any in-process limiter object) and
 * uses its algorithm and params for every key; it keeps a strong reference to
 * the template because the table reads the template's params.
 *
 * LimiterGroup borrows the cores of its members (plain limiters of any
 * in-process algorithm, or keyed views) and keeps them alive with a tuple of the member
 * objects; every member must read the same clock, which the group reads once
 * per call.
 *
 * Lifetime rules for GC: the template, the view's table and the group's
 * members are never dropped by tp_clear (the cores they own are in use until
 * dealloc); only clocks are, which is enough to break any cycle (a clock
 * callable is the only user object these hold besides their members).
 */
#include "wait.h"

typedef struct {
    PyObject_HEAD
    prs_keyed *table;     /* built in tp_new */
    PyObject *tmpl;       /* strong: the limiter whose params the table reads */
    prs_py_clock clock;
    PyObject *weakreflist;
    atomic_int reconfiguring; /* prs_py_op_lock: one reconfigure() at a time */
} keyed_obj;

typedef struct {
    PyObject_HEAD
    PyObject *keyed;      /* strong: a keyed_obj */
    PyObject *key;        /* strong: the key as given (str or bytes) */
    PyObject *keybytes;   /* strong: bytes of the key (str keys UTF-8 encoded) */
    PyObject *weakreflist;
} view_obj;

typedef struct {
    PyObject_HEAD
    prs_group *group;     /* built in tp_new */
    PyObject *members;    /* strong: tuple of the member objects (keeps their cores alive) */
    prs_py_clock clock;
    PyObject *weakreflist;
} group_obj;

/* A view's table, key and clock (those of its KeyedLimiter). */
#define VTABLE(v) (((keyed_obj *)(v)->keyed)->table)
#define VKEY(v) PyBytes_AS_STRING((v)->keybytes), (size_t)PyBytes_GET_SIZE((v)->keybytes)
#define VCLOCK(v) (&((keyed_obj *)(v)->keyed)->clock)

/* ---- shared helpers ------------------------------------------------------- */

/* A key argument into the prs_py_bytes `out` (a declared CONVERT). */
static int key_arg(PyObject *o, void *out) {
    return prs_py_str_or_bytes(o, "key", out);
}

/* A key as bytes (str keys UTF-8 encoded): a new reference, or NULL. */
static PyObject *key_bytes(PyObject *key) {
    prs_py_bytes k;
    return key_arg(key, &k) < 0 ? NULL : PyBytes_FromStringAndSize(k.p, (Py_ssize_t)k.n);
}

/* ", TokenBucket, GCRA, ...": the Python types of the algorithm table, for
 * messages (from the third character). */
#define PY_NAME(c, py, redis) ", " #py
static const char algo_names[] = PRS_ALGORITHMS(PY_NAME);
#undef PY_NAME

/* The table of a new KeyedLimiter o, with the algorithm and params of its
 * template (an in-process limiter): in process, or placed in the region
 * `shared` under `name`; -1 with an exception set, or a status. */
static int keyed_build(prs_py_state *st, keyed_obj *o, prs_keyed_config *cfg, PyObject *shared,
                       PyObject *name) {
    if (!PRS_PY_IS_LIMITER(st, o->tmpl)) {
        PyErr_Format(PyExc_TypeError, "limiter must be an in-process limiter (%s), not %.200s: %R",
                     algo_names + 2, Py_TYPE(o->tmpl)->tp_name, o->tmpl);
        return -1;
    }
    prs_limiter *core = ((prs_py_limiter *)o->tmpl)->core;
    if (prs_limiter_shared(core)) { /* it would be a process-local copy */
        PyErr_SetString(PyExc_NotImplementedError,
                        "limiter is a limiter in shared memory: not supported here yet");
        return -1;
    }
    cfg->algo = prs_limiter_algo(core);
    cfg->params = prs_limiter_params(core);
    int rc = prs_py_shm_place(st, shared, name, PRS_PY_PLACE_KEYED, NULL, cfg, &o->table, NULL);
    return rc == PRS_PY_IN_PROCESS ? prs_keyed_new(cfg, &o->table) : rc;
}

#include "gen/keyed.h"

/* ---- KeyedLimiter ------------------------------------------------------------ */

#define KSELF ((keyed_obj *)self)

/* A key of a table as a prs_py_decide_fn (ctx: the prs_py_rate naming table
 * and key): the key's limit is the largest n. */
static int keyed_decide_cb(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d,
                           int *by, int64_t *max_n) {
    const prs_py_rate *r = ctx;
    int rc = consume ? prs_keyed_check(r->core, r->key, r->len, now, n, d)
                     : prs_keyed_peek(r->core, r->key, r->len, now, n, d);
    *max_n = d->limit;
    return rc;
}

static int keyed_target(PyObject *self, PyObject *keyo, prs_py_rate *r) {
    prs_py_bytes k;
    if (key_arg(keyo, &k) < 0) return -1;
    *r = (prs_py_rate){&KSELF->clock, keyed_decide_cb, r, "KeyedLimiter", KSELF->table, k.p, k.n};
    return 0;
}

static int keyed_contains(PyObject *self, PyObject *key) {
    prs_py_bytes k;
    int64_t now;
    if (key_arg(key, &k) < 0 || prs_py_clock_now(&KSELF->clock, &now) < 0) return -1;
    return prs_keyed_contains(KSELF->table, k.p, k.n, now);
}

/* ---- KeyedLimiterView ----------------------------------------------------------- */

#define VSELF ((view_obj *)self)

static int view_decide_cb(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d,
                          int *by, int64_t *max_n) {
    view_obj *v = ctx;
    prs_py_rate r = {.core = VTABLE(v), .key = PyBytes_AS_STRING(v->keybytes),
                     .len = (size_t)PyBytes_GET_SIZE(v->keybytes)};
    return keyed_decide_cb(&r, now, n, consume, d, by, max_n);
}

static int view_target(PyObject *self, PyObject *key, prs_py_rate *r) {
    *r = (prs_py_rate){VCLOCK(VSELF), view_decide_cb, self, "KeyedLimiterView", NULL, NULL, 0};
    return 0;
}

/* ---- LimiterGroup --------------------------------------------------------------- */

#define GSELF ((group_obj *)self)

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    if (kwds && PyDict_GET_SIZE(kwds))
        return PyErr_Format(PyExc_TypeError,
                            "LimiterGroup() takes limiters as positional arguments only");
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1 || n > PRS_GROUP_MAX_MEMBERS)
        return PyErr_Format(PyExc_ValueError, "LimiterGroup takes 1 to %d limiters, got %zd",
                            PRS_GROUP_MAX_MEMBERS, n);
    prs_group_member m[PRS_GROUP_MAX_MEMBERS];
    const prs_py_clock *clock0 = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyTuple_GET_ITEM(args, i);
        const prs_py_clock *c;
        if (PyObject_TypeCheck(o, PRS_PY_TYPE(st, KeyedLimiterView))) {
            view_obj *v = (view_obj *)o;
            prs_group_member_keyed(&m[i], VTABLE(v), VKEY(v));
            c = VCLOCK(v);
        } else if (PRS_PY_IS_LIMITER(st, o)) {
            prs_group_member_limiter(&m[i], ((prs_py_limiter *)o)->core);
            c = &((prs_py_limiter *)o)->clock;
        } else {
            return PyErr_Format(PyExc_TypeError,
                                "LimiterGroup members must be in-process limiters (%s) or per-key "
                                "views (KeyedLimiter.for_key(key)); member %zd is %.200s: %R",
                                algo_names + 2, i, Py_TYPE(o)->tp_name, o);
        }
        if (!clock0) clock0 = c;
        else if (c->kind != clock0->kind || /* a ManualClock or a callable: the same object */
                 (c->kind != PRS_CLOCK_MONOTONIC && c->obj != clock0->obj))
            return PyErr_Format(PyExc_ValueError, "LimiterGroup members must share one clock; "
                                "member %zd reads another", i);
    }
    group_obj *self = (group_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->members = Py_NewRef(args);
    int rc = prs_group_new(m, (size_t)n, NULL, &self->group);
    if (rc) prs_py_error(st, rc, "invalid LimiterGroup");
    if (rc || prs_py_clock_init(st, clock0->obj, &self->clock) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int group_decide_cb(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d,
                           int *by, int64_t *max_n) {
    prs_group_info info;
    int rc = prs_group_decide(ctx, now, n, consume, d, &info);
    if (rc == PRS_OK) {
        *by = info.denied_by;
        *max_n = info.max_n;
    }
    return rc;
}

static int group_target(PyObject *self, PyObject *key, prs_py_rate *r) {
    *r = (prs_py_rate){&GSELF->clock, group_decide_cb, GSELF->group, "LimiterGroup", NULL, NULL, 0};
    return 0;
}
