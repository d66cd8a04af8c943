/*
 * keyed.c - KeyedLimiter (per-key limiting over prs_keyed), its per-key view
 * (KeyedLimiterView, what for_key() returns) and LimiterGroup (prs_group).
 *
 * KeyedLimiter takes a template limiter (any in-process limiter object) and
 * uses its algorithm and params for every key; it keeps a strong reference to
 * the template because the table reads the template's params. Keys are str
 * (encoded UTF-8: "a" and b"a" are the same key) or bytes.
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
#include "prs_py.h"

#include <stdalign.h>
#include <structmember.h>

/* ---- shared helpers ------------------------------------------------------- */

static int get_key(PyObject *o, const char **p, Py_ssize_t *len) {
    if (PyUnicode_Check(o)) {
        *p = PyUnicode_AsUTF8AndSize(o, len);
        return *p ? 0 : -1;
    }
    if (PyBytes_Check(o)) {
        *p = PyBytes_AS_STRING(o);
        *len = PyBytes_GET_SIZE(o);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "key must be str or bytes, not %.200s: %R", Py_TYPE(o)->tp_name, o);
    return -1;
}

/* The algorithm and params of an in-process limiter object. 0, or -1 with a
 * TypeError naming `what`. */
static int limiter_algo(prs_py_state *st, PyObject *o, const char *what, const prs_algo **algo,
                        const void **params) {
    if (!prs_py_limiter_check_type(st, o)) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be an in-process limiter (TokenBucket, GCRA, LeakyBucket, FixedWindow, "
                     "SlidingWindowLog, SlidingWindowCounter), not %.200s: %R",
                     what, Py_TYPE(o)->tp_name, o);
        return -1;
    }
    prs_limiter *core = ((prs_py_limiter *)o)->core;
    *algo = prs_limiter_algo(core);
    *params = prs_limiter_params(core);
    return 0;
}

static int same_clock(const prs_py_clock *a, const prs_py_clock *b) {
    if (a->kind != b->kind) return 0;
    if (a->kind == PRS_CLOCK_MONOTONIC) return 1;
    if (a->kind == PRS_CLOCK_MANUAL) return a->manual_ns == b->manual_ns;
    return a->obj == b->obj;
}

/* ---- KeyedLimiter ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    prs_keyed *table;     /* built in tp_new */
    PyObject *tmpl;       /* strong: the limiter whose params the table reads */
    prs_py_clock clock;
    PyObject *weakreflist;
} keyed_obj;

#define KSELF ((keyed_obj *)self)

static PyObject *keyed_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"limiter", "max_keys", "clock", NULL};
    PyObject *tmpl, *max_o = NULL, *clock_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OO:KeyedLimiter", kwlist, &tmpl, &max_o, &clock_o))
        return NULL;
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    prs_keyed_config cfg;
    prs_keyed_config_init(&cfg);
    if (limiter_algo(st, tmpl, "limiter", &cfg.algo, &cfg.params) < 0) return NULL;
    if (max_o && prs_py_parse_count(max_o, "max_keys", 1, PRS_KEYED_MAX_KEYS, &cfg.max_keys) < 0)
        return NULL;
    keyed_obj *self = (keyed_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->clock.kind = PRS_CLOCK_MONOTONIC;
    self->tmpl = Py_NewRef(tmpl);
    int rc = prs_keyed_new(&cfg, &self->table);
    if (rc) {
        Py_DECREF(self);
        return prs_py_error(st, rc, "invalid KeyedLimiter configuration");
    }
    if (prs_py_clock_init(st, clock_o, &self->clock) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int keyed_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(KSELF->tmpl);
    return prs_py_clock_traverse(&KSELF->clock, visit, arg);
}

static int keyed_clear(PyObject *self) {
    prs_py_clock_clear(&KSELF->clock);
    return 0;
}

static void keyed_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (KSELF->weakreflist) PyObject_ClearWeakRefs(self);
    keyed_clear(self);
    prs_keyed_free(KSELF->table); /* before the template whose params it reads */
    KSELF->table = NULL;
    Py_CLEAR(KSELF->tmpl);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int keyed_decide_cb(void *ctx, int64_t now, int64_t n, prs_decision *d, int *by,
                           int64_t *max_n) {
    void **c = ctx; /* table, key, len */
    int rc = prs_keyed_check(c[0], c[1], (size_t)(uintptr_t)c[2], now, n, d);
    *max_n = d->limit;
    return rc;
}

static const char *const kn_names[] = {"key", "n", "tokens_needed", NULL};

/* (key, n=1, *, tokens_needed=None) -> key bytes and n */
static int keyed_args(PyObject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, const char **key, Py_ssize_t *len, int64_t *n) {
    PyObject *v[3];
    if (nargs == 1 && !kwnames) {
        v[0] = args[0];
        v[1] = v[2] = NULL;
    } else if (prs_py_unpack(fname, args, nargs, kwnames, kn_names, 2, v) < 0) {
        return -1;
    }
    if (!v[0]) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'key'", fname);
        return -1;
    }
    if (get_key(v[0], key, len) < 0) return -1;
    return prs_py_pick_n(fname, v[1], v[2], n);
}

static int keyed_decide(PyObject *self, int consume, const char *fname, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames, prs_decision *d) {
    const char *key;
    Py_ssize_t len;
    int64_t n, now;
    if (keyed_args(self, fname, args, nargs, kwnames, &key, &len, &n) < 0) return -1;
    if (prs_py_clock_now(&KSELF->clock, &now) < 0) return -1;
    int rc = consume ? prs_keyed_check(KSELF->table, key, (size_t)len, now, n, d)
                     : prs_keyed_peek(KSELF->table, key, (size_t)len, now, n, d);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    return 0;
}

static PyObject *keyed_allow(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    prs_decision d;
    if (nargs == 1 && !kwnames && KSELF->table && KSELF->clock.kind == PRS_CLOCK_MONOTONIC) {
        const char *key; /* the hot path: allow(key) */
        Py_ssize_t len;
        if (get_key(args[0], &key, &len) < 0) return NULL;
        int rc = prs_keyed_check(KSELF->table, key, (size_t)len, prs_monotonic_ns(), 1, &d);
        if (rc) return prs_py_error(prs_py_state_of(self), rc, NULL);
        return PyBool_FromLong(d.allowed);
    }
    if (keyed_decide(self, 1, "allow", args, nargs, kwnames, &d) < 0) return NULL;
    return PyBool_FromLong(d.allowed);
}

static PyObject *keyed_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    prs_decision d;
    if (keyed_decide(self, 1, "check", args, nargs, kwnames, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(self), &d);
}

static PyObject *keyed_peek(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames) {
    prs_decision d;
    if (keyed_decide(self, 0, "peek", args, nargs, kwnames, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(self), &d);
}

static const char *const kacq_names[] = {"key", "n", "timeout", "tokens_needed", NULL};

static PyObject *keyed_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    PyObject *v[4];
    if (prs_py_unpack("acquire", args, nargs, kwnames, kacq_names, 3, v) < 0) return NULL;
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "acquire() missing required argument 'key'");
        return NULL;
    }
    const char *key;
    Py_ssize_t len;
    int64_t n, timeout_ns;
    if (get_key(v[0], &key, &len) < 0) return NULL;
    if (prs_py_pick_n("acquire", v[1], v[3], &n) < 0) return NULL;
    if (prs_py_parse_timeout(v[2], "timeout", &timeout_ns) < 0) return NULL;
    void *ctx[3] = {KSELF->table, (void *)key, (void *)(uintptr_t)len};
    if (prs_py_wait_admitted(prs_py_state_of(self), &KSELF->clock, keyed_decide_cb, ctx,
                             "KeyedLimiter", n, timeout_ns) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static const char *const reset_names[] = {"key", NULL};

static PyObject *keyed_reset(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    PyObject *v[1];
    if (prs_py_unpack("reset", args, nargs, kwnames, reset_names, 1, v) < 0) return NULL;
    if (!v[0] || v[0] == Py_None) {
        prs_keyed_reset_all(KSELF->table);
        Py_RETURN_NONE;
    }
    const char *key;
    Py_ssize_t len;
    if (get_key(v[0], &key, &len) < 0) return NULL;
    prs_keyed_reset_key(KSELF->table, key, (size_t)len);
    Py_RETURN_NONE;
}

static PyObject *keyed_available(PyObject *self, PyObject *arg) {
    const char *key;
    Py_ssize_t len;
    int64_t now;
    if (get_key(arg, &key, &len) < 0) return NULL;
    if (prs_py_clock_now(&KSELF->clock, &now) < 0) return NULL;
    return PyFloat_FromDouble(prs_keyed_available(KSELF->table, key, (size_t)len, now));
}

static PyObject *keyed_prune(PyObject *self, PyObject *unused) {
    int64_t now;
    if (prs_py_clock_now(&KSELF->clock, &now) < 0) return NULL;
    return PyLong_FromLongLong(prs_keyed_prune(KSELF->table, now));
}

static Py_ssize_t keyed_len(PyObject *self) {
    return (Py_ssize_t)prs_keyed_len(KSELF->table);
}

static int keyed_contains(PyObject *self, PyObject *keyo) {
    const char *key;
    Py_ssize_t len;
    int64_t now;
    if (get_key(keyo, &key, &len) < 0) return -1;
    if (prs_py_clock_now(&KSELF->clock, &now) < 0) return -1;
    return prs_keyed_contains(KSELF->table, key, (size_t)len, now);
}

static PyObject *keyed_get_max_keys(PyObject *self, void *c) {
    return PyLong_FromLongLong(prs_keyed_max_keys(KSELF->table));
}
static PyObject *keyed_get_memory(PyObject *self, void *c) {
    return PyLong_FromSize_t(prs_keyed_memory(KSELF->table));
}
static PyObject *keyed_get_limiter(PyObject *self, void *c) {
    return Py_NewRef(KSELF->tmpl);
}
static PyObject *keyed_get_clock(PyObject *self, void *c) {
    prs_py_state *st = prs_py_state_of(self);
    return st ? prs_py_clock_object(st, &KSELF->clock) : NULL;
}

static int apply_keyed(void *ctx, const void *config, int64_t now, prs_config_error *why) {
    return prs_keyed_reconfigure_why(ctx, config, now, why);
}

/* reconfigure(**params): the template type's keywords, from the table's
 * current params; the core changes every key at once. */
static PyObject *keyed_reconfigure(PyObject *self, PyObject *args, PyObject *kwds) {
    alignas(16) unsigned char config[PRS_ALGO_MAX_CONFIG]; /* what is not given keeps its value */
    prs_keyed_algo(KSELF->table)->config_from_params(prs_keyed_params(KSELF->table), config);
    return prs_py_limiter_reconfigure_with(KSELF->tmpl, config, &KSELF->clock, args, kwds,
                                           apply_keyed, KSELF->table);
}

static PyMethodDef keyed_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))keyed_reconfigure, METH_VARARGS | METH_KEYWORDS,
     "reconfigure($self, /, **params)\n--\n\n"
     "Change the parameters of every key at once, now: the keywords of the template\n"
     "limiter's reconfigure() (capacity=/refill_rate= for a TokenBucket, limit=/window=\n"
     "for the windows, ...); what is not given keeps its value. Each key's state is kept\n"
     "as that limiter's reconfigure() keeps it, and a concurrent decision on any key sees\n"
     "the old parameters or the new ones, never a mix. The template limiter itself is\n"
     "not changed (the table keeps its own copy of the parameters)."},
    {"allow", (PyCFunction)(void (*)(void))keyed_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow($self, /, key, n=1, *, tokens_needed=None)\n--\n\n"
     "Consume n for `key` (str or bytes) if available now: True when admitted."},
    {"check", (PyCFunction)(void (*)(void))keyed_check, METH_FASTCALL | METH_KEYWORDS,
     "check($self, /, key, n=1, *, tokens_needed=None)\n--\n\n"
     "Like allow(), returning the Decision. When the table is full of limited keys a\n"
     "new key is denied, retry_after being when a slot frees."},
    {"peek", (PyCFunction)(void (*)(void))keyed_peek, METH_FASTCALL | METH_KEYWORDS,
     "peek($self, /, key, n=1, *, tokens_needed=None)\n--\n\n"
     "The Decision check(key, n) would return now, consuming and storing nothing."},
    {"acquire", (PyCFunction)(void (*)(void))keyed_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, key, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "Block until n is admitted for `key` (GIL released while waiting, Ctrl-C\n"
     "interrupts, nothing consumed on failure). RateLimitExceeded at once when it\n"
     "cannot be admitted within timeout seconds or never can be (retry_after inf);\n"
     "ValueError when n exceeds the limit."},
    {"reset", (PyCFunction)(void (*)(void))keyed_reset, METH_FASTCALL | METH_KEYWORDS,
     "reset($self, /, key=None)\n--\n\nForget `key` (back to a fresh limiter), or every key when None."},
    {"available", keyed_available, METH_O,
     "available($self, key, /)\n--\n\nRequests of weight 1 admissible for `key` now (float)."},
    {"prune", keyed_prune, METH_NOARGS,
     "prune($self, /)\n--\n\nEvict every key whose state is fresh now; returns how many.\n"
     "(Fresh keys are also evicted on demand when room is needed.)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef keyed_getset[] = {
    {"max_keys", keyed_get_max_keys, NULL, "The most keys held at once.", NULL},
    {"memory_bytes", keyed_get_memory, NULL, "Bytes the key table holds now (C allocations).", NULL},
    {"limiter", keyed_get_limiter, NULL, "The template limiter whose algorithm and parameters every key uses.", NULL},
    {"clock", keyed_get_clock, NULL, "The clock this limiter reads.", NULL},
    {NULL},
};

static PyMemberDef keyed_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(keyed_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot keyed_slots[] = {
    {Py_tp_doc, "KeyedLimiter(limiter, *, max_keys=100000, clock=None)\n--\n\n"
                "One limiter state per key, all with the algorithm and parameters of `limiter`\n"
                "(an in-process limiter object used as a template), in a bounded C hash table\n"
                "(SipHash with a per-process random seed). At most max_keys keys; a key whose\n"
                "state is fresh may be evicted, a limited key never is."},
    {Py_tp_new, keyed_new},
    {Py_tp_dealloc, keyed_dealloc},
    {Py_tp_traverse, keyed_traverse},
    {Py_tp_clear, keyed_clear},
    {Py_tp_methods, keyed_methods},
    {Py_tp_getset, keyed_getset},
    {Py_tp_members, keyed_members},
    {Py_sq_length, keyed_len},
    {Py_sq_contains, keyed_contains},
    {Py_mp_length, keyed_len},
    {0, NULL},
};

/* ---- KeyedLimiterView ----------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *keyed;      /* strong: a keyed_obj */
    PyObject *key;        /* strong: the key as given (str or bytes) */
    PyObject *keybytes;   /* strong: bytes of the key (str keys UTF-8 encoded) */
    PyObject *weakreflist;
} view_obj;

#define VSELF ((view_obj *)self)
#define VTABLE(v) (((keyed_obj *)(v)->keyed)->table)
#define VCLOCK(v) (&((keyed_obj *)(v)->keyed)->clock)

static PyObject *view_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"limiter", "key", NULL};
    PyObject *keyed, *key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:KeyedLimiterView", kwlist, &keyed, &key))
        return NULL;
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    if (!PyObject_TypeCheck(keyed, PRS_PY_TYPE(st, KeyedLimiter))) {
        PyErr_Format(PyExc_TypeError, "limiter must be a KeyedLimiter, not %.200s: %R",
                     Py_TYPE(keyed)->tp_name, keyed);
        return NULL;
    }
    const char *p;
    Py_ssize_t len;
    if (get_key(key, &p, &len) < 0) return NULL;
    PyObject *kb = PyBytes_FromStringAndSize(p, len);
    if (!kb) return NULL;
    view_obj *self = (view_obj *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(kb);
        return NULL;
    }
    self->keybytes = kb;
    self->key = Py_NewRef(key);
    self->keyed = Py_NewRef(keyed);
    return (PyObject *)self;
}

static int view_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(VSELF->keyed);
    Py_VISIT(VSELF->key);
    return 0;
}

static int view_clear(PyObject *self) { return 0; /* see the top: nothing to break here */ }

static void view_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (VSELF->weakreflist) PyObject_ClearWeakRefs(self);
    Py_CLEAR(VSELF->keybytes);
    Py_CLEAR(VSELF->key);
    Py_CLEAR(VSELF->keyed);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int view_decide_cb(void *ctx, int64_t now, int64_t n, prs_decision *d, int *by,
                          int64_t *max_n) {
    view_obj *v = ctx;
    int rc = prs_keyed_check(VTABLE(v), PyBytes_AS_STRING(v->keybytes),
                             (size_t)PyBytes_GET_SIZE(v->keybytes), now, n, d);
    *max_n = d->limit;
    return rc;
}

static int view_decide(PyObject *self, int consume, const char *fname, PyObject *const *args,
                       Py_ssize_t nargs, PyObject *kwnames, prs_decision *d) {
    int64_t n = 1, now;
    if ((nargs || kwnames) && prs_py_parse_n_args(fname, args, nargs, kwnames, &n) < 0) return -1;
    if (prs_py_clock_now(VCLOCK(VSELF), &now) < 0) return -1;
    const char *key = PyBytes_AS_STRING(VSELF->keybytes);
    size_t len = (size_t)PyBytes_GET_SIZE(VSELF->keybytes);
    int rc = consume ? prs_keyed_check(VTABLE(VSELF), key, len, now, n, d)
                     : prs_keyed_peek(VTABLE(VSELF), key, len, now, n, d);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    return 0;
}

static PyObject *view_allow(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_decision d;
    if (view_decide(self, 1, "allow", args, nargs, kwnames, &d) < 0) return NULL;
    return PyBool_FromLong(d.allowed);
}
static PyObject *view_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_decision d;
    if (view_decide(self, 1, "check", args, nargs, kwnames, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(self), &d);
}
static PyObject *view_peek(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_decision d;
    if (view_decide(self, 0, "peek", args, nargs, kwnames, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(self), &d);
}

static PyObject *view_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return prs_py_acquire_method(self, args, nargs, kwnames, VCLOCK(VSELF), view_decide_cb, self,
                          "KeyedLimiterView");
}

static PyObject *view_waiter(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return prs_py_waiter_method(self, args, nargs, kwnames, VCLOCK(VSELF), view_decide_cb, self,
                         "KeyedLimiterView");
}

static PyObject *view_reset(PyObject *self, PyObject *unused) {
    prs_keyed_reset_key(VTABLE(VSELF), PyBytes_AS_STRING(VSELF->keybytes),
                        (size_t)PyBytes_GET_SIZE(VSELF->keybytes));
    Py_RETURN_NONE;
}

static PyObject *view_get_available(PyObject *self, void *c) {
    int64_t now;
    if (prs_py_clock_now(VCLOCK(VSELF), &now) < 0) return NULL;
    return PyFloat_FromDouble(prs_keyed_available(VTABLE(VSELF), PyBytes_AS_STRING(VSELF->keybytes),
                                                  (size_t)PyBytes_GET_SIZE(VSELF->keybytes), now));
}
static PyObject *view_get_clock(PyObject *self, void *c) {
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    return prs_py_clock_object(st, VCLOCK(VSELF));
}
static PyObject *view_get_key(PyObject *self, void *c) {
    return Py_NewRef(VSELF->key);
}
static PyObject *view_get_limiter(PyObject *self, void *c) {
    return Py_NewRef(VSELF->keyed);
}

static PyMethodDef view_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))view_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow($self, /, n=1, *, tokens_needed=None)\n--\n\nConsume n for this key if available now: True when admitted."},
    {"check", (PyCFunction)(void (*)(void))view_check, METH_FASTCALL | METH_KEYWORDS,
     "check($self, /, n=1, *, tokens_needed=None)\n--\n\nLike allow(), returning the Decision."},
    {"peek", (PyCFunction)(void (*)(void))view_peek, METH_FASTCALL | METH_KEYWORDS,
     "peek($self, /, n=1, *, tokens_needed=None)\n--\n\nThe Decision check(n) would return now, consuming nothing."},
    {"acquire", (PyCFunction)(void (*)(void))view_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "Block until n is admitted for this key (see KeyedLimiter.acquire)."},
    {"_waiter", (PyCFunction)(void (*)(void))view_waiter, METH_FASTCALL | METH_KEYWORDS,
     "_waiter($self, /, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "A _RateWait for acquire_async (the deadline starts now)."},
    {"reset", view_reset, METH_NOARGS, "reset($self, /)\n--\n\nForget this key (back to a fresh limiter)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef view_getset[] = {
    {"available", view_get_available, NULL, "Requests of weight 1 admissible for this key now (float).", NULL},
    {"clock", view_get_clock, NULL, "The clock of the KeyedLimiter.", NULL},
    {"key", view_get_key, NULL, "The key, as given.", NULL},
    {"limiter", view_get_limiter, NULL, "The KeyedLimiter this view belongs to.", NULL},
    {NULL},
};

static PyMemberDef view_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(view_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot view_slots[] = {
    {Py_tp_doc, "KeyedLimiterView(limiter, key)\n--\n\n"
                "One key of a KeyedLimiter with the plain limiter interface (allow, check, peek,\n"
                "acquire, reset, available); what KeyedLimiter.for_key(key) returns. Can be a\n"
                "LimiterGroup member."},
    {Py_tp_new, view_new},
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_traverse, view_traverse},
    {Py_tp_clear, view_clear},
    {Py_tp_methods, view_methods},
    {Py_tp_getset, view_getset},
    {Py_tp_members, view_members},
    {0, NULL},
};

/* ---- LimiterGroup --------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    prs_group *group;     /* built in tp_new */
    PyObject *members;    /* strong: tuple of the member objects (keeps their cores alive) */
    prs_py_clock clock;
    PyObject *weakreflist;
} group_obj;

#define GSELF ((group_obj *)self)

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "LimiterGroup() takes limiters as positional arguments only");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1 || n > PRS_GROUP_MAX_MEMBERS) {
        PyErr_Format(PyExc_ValueError, "LimiterGroup takes 1 to %d limiters, got %zd",
                     PRS_GROUP_MAX_MEMBERS, n);
        return NULL;
    }
    prs_group_member m[PRS_GROUP_MAX_MEMBERS];
    const prs_py_clock *clock0 = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyTuple_GET_ITEM(args, i);
        const prs_py_clock *c;
        if (PyObject_TypeCheck(o, PRS_PY_TYPE(st, KeyedLimiterView))) {
            view_obj *v = (view_obj *)o;
            prs_group_member_keyed(&m[i], VTABLE(v), PyBytes_AS_STRING(v->keybytes),
                                   (size_t)PyBytes_GET_SIZE(v->keybytes));
            c = VCLOCK(v);
        } else if (prs_py_limiter_check_type(st, o)) {
            prs_group_member_limiter(&m[i], ((prs_py_limiter *)o)->core);
            c = &((prs_py_limiter *)o)->clock;
        } else {
            PyErr_Format(PyExc_TypeError,
                         "LimiterGroup members must be in-process limiters (TokenBucket, GCRA, "
                         "LeakyBucket, FixedWindow, SlidingWindowLog, SlidingWindowCounter) or "
                         "per-key views (KeyedLimiter.for_key(key)); member %zd is %.200s: %R",
                         i, Py_TYPE(o)->tp_name, o);
            return NULL;
        }
        if (!clock0) clock0 = c;
        else if (!same_clock(clock0, c)) {
            PyErr_Format(PyExc_ValueError,
                         "LimiterGroup members must share one clock; member %zd reads another", i);
            return NULL;
        }
    }
    group_obj *self = (group_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->clock.kind = PRS_CLOCK_MONOTONIC;
    self->members = Py_NewRef(args);
    int rc = prs_group_new(m, (size_t)n, NULL, &self->group);
    if (rc) {
        Py_DECREF(self);
        return prs_py_error(st, rc, "invalid LimiterGroup");
    }
    if (prs_py_clock_init(st, clock0->obj, &self->clock) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int group_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(GSELF->members);
    return prs_py_clock_traverse(&GSELF->clock, visit, arg);
}

static int group_clear(PyObject *self) {
    prs_py_clock_clear(&GSELF->clock);
    return 0;
}

static void group_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (GSELF->weakreflist) PyObject_ClearWeakRefs(self);
    group_clear(self);
    prs_group_free(GSELF->group); /* before the members whose cores it borrows */
    GSELF->group = NULL;
    Py_CLEAR(GSELF->members);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int group_decide_cb(void *ctx, int64_t now, int64_t n, prs_decision *d, int *by,
                           int64_t *max_n) {
    prs_group_info info;
    int rc = prs_group_decide(ctx, now, n, 1, d, &info);
    if (rc == PRS_OK) {
        *by = info.denied_by;
        *max_n = info.max_n;
    }
    return rc;
}

static int group_decide(PyObject *self, int consume, const char *fname, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames, prs_decision *d, int *by) {
    int64_t n = 1, now;
    if ((nargs || kwnames) && prs_py_parse_n_args(fname, args, nargs, kwnames, &n) < 0) return -1;
    if (prs_py_clock_now(&GSELF->clock, &now) < 0) return -1;
    int rc = consume ? prs_group_check(GSELF->group, now, n, d, by)
                     : prs_group_peek(GSELF->group, now, n, d, by);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    return 0;
}

static PyObject *group_allow(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_decision d;
    int by;
    if (nargs == 0 && !kwnames && GSELF->group && GSELF->clock.kind == PRS_CLOCK_MONOTONIC) {
        int rc = prs_group_check(GSELF->group, prs_monotonic_ns(), 1, &d, &by); /* hot path */
        if (rc) return prs_py_error(prs_py_state_of(self), rc, NULL);
        return PyBool_FromLong(d.allowed);
    }
    if (group_decide(self, 1, "allow", args, nargs, kwnames, &d, &by) < 0) return NULL;
    return PyBool_FromLong(d.allowed);
}
static PyObject *group_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_decision d;
    int by;
    if (group_decide(self, 1, "check", args, nargs, kwnames, &d, &by) < 0) return NULL;
    return prs_py_decision_new_by(prs_py_state_of(self), &d, by);
}
static PyObject *group_peek(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_decision d;
    int by;
    if (group_decide(self, 0, "peek", args, nargs, kwnames, &d, &by) < 0) return NULL;
    return prs_py_decision_new_by(prs_py_state_of(self), &d, by);
}
static PyObject *group_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return prs_py_acquire_method(self, args, nargs, kwnames, &GSELF->clock, group_decide_cb, GSELF->group,
                          "LimiterGroup");
}
static PyObject *group_waiter(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return prs_py_waiter_method(self, args, nargs, kwnames, &GSELF->clock, group_decide_cb, GSELF->group,
                         "LimiterGroup");
}
static PyObject *group_reset(PyObject *self, PyObject *unused) {
    prs_group_reset(GSELF->group);
    Py_RETURN_NONE;
}
static Py_ssize_t group_len(PyObject *self) {
    return (Py_ssize_t)prs_group_size(GSELF->group);
}
static PyObject *group_get_available(PyObject *self, void *c) {
    int64_t now;
    if (prs_py_clock_now(&GSELF->clock, &now) < 0) return NULL;
    return PyFloat_FromDouble(prs_group_available(GSELF->group, now));
}
static PyObject *group_get_clock(PyObject *self, void *c) {
    prs_py_state *st = prs_py_state_of(self);
    return st ? prs_py_clock_object(st, &GSELF->clock) : NULL;
}
static PyObject *group_get_limiters(PyObject *self, void *c) {
    return Py_NewRef(GSELF->members);
}

static PyMethodDef group_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))group_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow($self, /, n=1, *, tokens_needed=None)\n--\n\n"
     "Consume n from every member if every member admits it now, else from none."},
    {"check", (PyCFunction)(void (*)(void))group_check, METH_FASTCALL | METH_KEYWORDS,
     "check($self, /, n=1, *, tokens_needed=None)\n--\n\n"
     "Like allow(), returning a Decision whose limit, remaining and reset_after are one\n"
     "member's, the most restrictive (least remaining; ties: longest reset_after), never a\n"
     "mix; retry_after is the longest any member asks; denied_by is the index of the\n"
     "first member that denied. A member listed k times counts k * n (its limit and\n"
     "remaining are divided by k)."},
    {"peek", (PyCFunction)(void (*)(void))group_peek, METH_FASTCALL | METH_KEYWORDS,
     "peek($self, /, n=1, *, tokens_needed=None)\n--\n\nThe Decision check(n) would return now, consuming nothing."},
    {"acquire", (PyCFunction)(void (*)(void))group_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "Block until every member admits n at once (GIL released while waiting, Ctrl-C\n"
     "interrupts, nothing consumed on failure). RateLimitExceeded at once when it\n"
     "cannot be admitted within timeout seconds or never can be (retry_after inf);\n"
     "ValueError when n exceeds what a member can ever admit."},
    {"_waiter", (PyCFunction)(void (*)(void))group_waiter, METH_FASTCALL | METH_KEYWORDS,
     "_waiter($self, /, n=1, timeout=None, *, tokens_needed=None)\n--\n\n"
     "A _RateWait for acquire_async (the deadline starts now)."},
    {"reset", group_reset, METH_NOARGS, "reset($self, /)\n--\n\nReset every member (one after the other)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef group_getset[] = {
    {"available", group_get_available, NULL, "The smallest amount any member admits now (float).", NULL},
    {"clock", group_get_clock, NULL, "The clock every member reads.", NULL},
    {"limiters", group_get_limiters, NULL, "The members, in order (tuple).", NULL},
    {NULL},
};

static PyMemberDef group_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(group_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot group_slots[] = {
    {Py_tp_doc, "LimiterGroup(*limiters)\n--\n\n"
                "Several limiters checked as one, all or nothing: a request is taken from every\n"
                "member or from none. Members: in-process limiters of any algorithm (TokenBucket,\n"
                "GCRA, LeakyBucket, FixedWindow, SlidingWindowLog, SlidingWindowCounter) or\n"
                "per-key views (KeyedLimiter.for_key), all on one clock. Exact under threads\n"
                "and deadlock-free whatever the member order (members are locked in one global\n"
                "order). The same limiter (or key) listed twice is one state asked for 2n:\n"
                "peek, check, retry_after and acquire all count it once per appearance."},
    {Py_tp_new, group_new},
    {Py_tp_dealloc, group_dealloc},
    {Py_tp_traverse, group_traverse},
    {Py_tp_clear, group_clear},
    {Py_tp_methods, group_methods},
    {Py_tp_getset, group_getset},
    {Py_tp_members, group_members},
    {Py_sq_length, group_len},
    {0, NULL},
};

#define KEYED_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE)

static PyType_Spec keyed_spec = {"pyresilience._core.KeyedLimiter", sizeof(keyed_obj), 0, KEYED_FLAGS, keyed_slots};
static PyType_Spec view_spec = {"pyresilience._core.KeyedLimiterView", sizeof(view_obj), 0, KEYED_FLAGS, view_slots};
static PyType_Spec group_spec = {"pyresilience._core.LimiterGroup", sizeof(group_obj), 0, KEYED_FLAGS, group_slots};

int prs_py_register_keyed(PyObject *m, prs_py_state *st) {
    if (prs_py_add_type(m, st, PRS_SLOT_KeyedLimiter, &keyed_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_KeyedLimiterView, &view_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_LimiterGroup, &group_spec, NULL) < 0) return -1;
    return 0;
}
