/*
 * policy.c - PolicyStep: one layer of a Policy's sync chain, in C.
 *
 * A sync Policy is a chain of callables, each calling the next with the same
 * arguments, built once by pyresilience/policy.py. Its layers are C objects,
 * so a call that succeeds runs no Python frame of the package:
 *
 *   Retry          -> a RetryCall (retry.c): the Python loop only after a failure
 *   CircuitBreaker -> a BreakerFunction (breaker.c)
 *   limiter        -> PolicyStep LIMIT:    acquire(*acquire_args), then the next
 *   Bulkhead       -> PolicyStep BULKHEAD: acquire(), the next, release()
 *   Timeout        -> PolicyStep TIMEOUT:  the deadline in the context variable
 *                                          around the next; late -> TimeoutExceeded
 *   Fallback       -> PolicyStep FALLBACK: the next; an exception of `on` ->
 *                                          value, or factory(exc)
 *   the call       -> PolicyStep APPLY:    args[0](*args[1:]) (policy.call's form);
 *                                          a decorated function is its own end
 *
 * What only Python can do well (a key computed by a Python function, a
 * thread-run Timeout) stays a Python layer in the same chain.
 *
 * Fields, by kind (all strong references, set once in tp_new, immutable after):
 *   next: the next callable (NULL for APPLY)
 *   a: LIMIT allow (or acquire, with a wait); BULKHEAD acquire;
 *      TIMEOUT the DEADLINE context variable; FALLBACK `on`
 *   b: LIMIT a's arguments (a tuple); BULKHEAD release;
 *      TIMEOUT the exception class; FALLBACK the value
 *   c: LIMIT None (a waits), or (acquire, *args) raising a refusal of allow;
 *      TIMEOUT the seconds (a float, for the exception); FALLBACK the factory or None
 *   ns: TIMEOUT the duration in ns (-1: no limit of its own)
 */
#include "prs_py.h"

#include <stddef.h>
#include <structmember.h>

enum { STEP_APPLY, STEP_LIMIT, STEP_BULKHEAD, STEP_TIMEOUT, STEP_FALLBACK, STEP__COUNT };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    int64_t ns;
    PyObject *next, *a, *b, *c;
    PyObject *dict;        /* __name__, __doc__, __wrapped__ of a decorated function */
    PyObject *weakreflist;
} step_obj;

#define STEP(o) ((step_obj *)(o))

static inline PyObject *call_next(step_obj *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return PyObject_Vectorcall(s->next, args, nargsf, kwnames);
}

/* A step whose references the GC cleared (only reachable from a finalizer). */
#define CHECK_LIVE(s) \
    if (!(s)->a) { PyErr_SetString(PyExc_RuntimeError, "this policy step was cleared"); return NULL; }

static PyObject *step_apply(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call() needs the function to call");
        return NULL;
    }
    /* args[0] is ours to overwrite: the callee may use the slot before args+1 */
    return PyObject_Vectorcall(args[0], args + 1, (size_t)(nargs - 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                               kwnames);
}

/* a(*b): admitted unless it raises; with c (a tuple (acquire, *args)), a is
 * a non-blocking allow() whose False is turned into acquire's exception (an
 * acquire that admits after all - time moved - admits). */
static PyObject *step_limit(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    step_obj *s = STEP(self);
    CHECK_LIVE(s);
    PyObject *r = PyObject_Vectorcall(s->a, &PyTuple_GET_ITEM(s->b, 0), PyTuple_GET_SIZE(s->b), NULL);
    if (!r) return NULL;
    if (r == Py_False && s->c != Py_None) {
        r = PyObject_Vectorcall(PyTuple_GET_ITEM(s->c, 0), &PyTuple_GET_ITEM(s->c, 1),
                                PyTuple_GET_SIZE(s->c) - 1, NULL);
        if (!r) return NULL;
    }
    Py_DECREF(r);
    return call_next(s, args, nargsf, kwnames);
}

static PyObject *step_bulkhead(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    step_obj *s = STEP(self);
    CHECK_LIVE(s);
    PyObject *r = PyObject_CallNoArgs(s->a);
    if (!r) return NULL;
    Py_DECREF(r);
    PyObject *res = call_next(s, args, nargsf, kwnames);
    PRS_PY_EXC_SAVE(saved);
    r = PyObject_CallNoArgs(s->b); /* released whatever happened */
    if (!r) {
        Py_XDECREF(res);
        res = NULL;
        Py_XDECREF(saved);
        return NULL;
    }
    Py_DECREF(r);
    PRS_PY_EXC_RESTORE(saved);
    return res;
}

/* Raises TimeoutExceeded(message, seconds) (a fresh one each time). NULL. */
static PyObject *timeout_exceeded(step_obj *s) {
    PyObject *msg = PyUnicode_FromFormat("timeout of %S s exceeded", s->c);
    if (!msg) return NULL;
    PyObject *args[2] = {msg, s->c};
    PyObject *exc = PyObject_Vectorcall(s->b, args, 2, NULL);
    Py_DECREF(msg);
    if (!exc) return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* The deadline in the context variable `a` for the time of the call (the
 * sooner of ours and an outer one). */
static PyObject *step_timeout(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    step_obj *s = STEP(self);
    CHECK_LIVE(s);
    int64_t deadline;
    if (prs_py_deadline_abs(s->a, &deadline) < 0) return NULL;
    int64_t now = prs_monotonic_ns();
    if (s->ns >= 0) {
        int64_t mine = prs__sat_add(now, s->ns);
        if (mine < deadline) deadline = mine;
    }
    if (deadline == PRS_NEVER) return call_next(s, args, nargsf, kwnames);
    if (now >= deadline) return timeout_exceeded(s);
    PyObject *value = PyLong_FromLongLong(deadline);
    if (!value) return NULL;
    PyObject *token = PyContextVar_Set(s->a, value);
    Py_DECREF(value);
    if (!token) return NULL;
    PyObject *res = call_next(s, args, nargsf, kwnames);
    PRS_PY_EXC_SAVE(saved);
    int rc = PyContextVar_Reset(s->a, token);
    Py_DECREF(token);
    if (rc < 0) { /* the reset's error wins */
        Py_XDECREF(res);
        Py_XDECREF(saved);
        return NULL;
    }
    PRS_PY_EXC_RESTORE(saved);
    if (res && prs_monotonic_ns() > deadline) {
        Py_DECREF(res);
        return timeout_exceeded(s);
    }
    return res;
}

static PyObject *step_fallback(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    step_obj *s = STEP(self);
    CHECK_LIVE(s);
    PyObject *res = call_next(s, args, nargsf, kwnames);
    if (res || !PyErr_ExceptionMatches(s->a)) return res;
    if (s->c == Py_None) {
        PyErr_Clear();
        return Py_NewRef(s->b);
    }
    PyObject *exc = prs_py_take_exception();
    if (!exc) return NULL;
    res = PyObject_CallOneArg(s->c, exc);
    Py_DECREF(exc);
    return res;
}

static const vectorcallfunc step_calls[STEP__COUNT] = {
    step_apply, step_limit, step_bulkhead, step_timeout, step_fallback,
};

/* PolicyStep(kind, next=None, a=None, b=None, c=None, ns=-1, /): checked by
 * the facade, which alone builds them; here only what would crash is refused. */
static PyObject *step_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    int kind;
    long long ns = -1;
    PyObject *next = Py_None, *a = Py_None, *b = Py_None, *c = Py_None;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "PolicyStep() takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "i|OOOOL:PolicyStep", &kind, &next, &a, &b, &c, &ns)) return NULL;
    if (kind < 0 || kind >= STEP__COUNT) {
        PyErr_Format(PyExc_ValueError, "kind must be in [0, %d), got %d", STEP__COUNT, kind);
        return NULL;
    }
    if (kind != STEP_APPLY && !PyCallable_Check(next)) {
        PyErr_SetString(PyExc_TypeError, "next must be callable");
        return NULL;
    }
    if ((kind == STEP_LIMIT && (!PyCallable_Check(a) || !PyTuple_Check(b))) ||
        (kind == STEP_BULKHEAD && (!PyCallable_Check(a) || !PyCallable_Check(b))) ||
        (kind == STEP_TIMEOUT && (!PyContextVar_CheckExact(a) || !PyCallable_Check(b))) ||
        (kind == STEP_FALLBACK && c != Py_None && !PyCallable_Check(c))) {
        PyErr_SetString(PyExc_TypeError, "PolicyStep: wrong arguments for its kind");
        return NULL;
    }
    step_obj *s = (step_obj *)type->tp_alloc(type, 0);
    if (!s) return NULL;
    s->vectorcall = step_calls[kind];
    s->kind = kind;
    s->ns = (int64_t)ns;
    s->next = kind == STEP_APPLY ? NULL : Py_NewRef(next);
    s->a = Py_NewRef(a);
    s->b = Py_NewRef(b);
    s->c = Py_NewRef(c);
    return (PyObject *)s;
}

static int step_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(STEP(self)->next);
    Py_VISIT(STEP(self)->a);
    Py_VISIT(STEP(self)->b);
    Py_VISIT(STEP(self)->c);
    Py_VISIT(STEP(self)->dict);
    return 0;
}

static int step_clear(PyObject *self) {
    Py_CLEAR(STEP(self)->next);
    Py_CLEAR(STEP(self)->a);
    Py_CLEAR(STEP(self)->b);
    Py_CLEAR(STEP(self)->c);
    Py_CLEAR(STEP(self)->dict);
    return 0;
}

static void step_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (STEP(self)->weakreflist) PyObject_ClearWeakRefs(self);
    step_clear(self);
    Py_CLEAR(STEP(self)->dict);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* A decorated method: bind like a function does. */
static PyObject *step_descr_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyMemberDef step_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(step_obj, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(step_obj, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(step_obj, weakreflist), READONLY, NULL},
    {"kind", T_INT, offsetof(step_obj, kind), READONLY, "What the step does (see policy.c)."},
    {"next", T_OBJECT, offsetof(step_obj, next), READONLY, "The next callable of the chain."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot step_slots[] = {
    {Py_tp_doc, (void *)"PolicyStep(kind, next=None, a=None, b=None, c=None, ns=-1, /)\n--\n\n"
                        "One layer of a Policy's sync chain, run in C (built by pyresilience.policy)."},
    {Py_tp_new, step_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, step_descr_get},
    {Py_tp_dealloc, step_dealloc},
    {Py_tp_traverse, step_traverse},
    {Py_tp_clear, step_clear},
    {Py_tp_members, step_members},
    {0, NULL},
};

static PyType_Spec step_spec = {
    "pyresilience._core.PolicyStep", sizeof(step_obj), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    step_slots};

int prs_py_register_policy(PyObject *m, prs_py_state *st) {
    PyObject *tp = PyType_FromModuleAndSpec(m, &step_spec, NULL);
    if (!tp) return -1;
    int rc = PyModule_AddObjectRef(m, "PolicyStep", tp);
    Py_DECREF(tp);
    if (rc < 0) return -1;
    return PyModule_AddIntConstant(m, "STEP_APPLY", STEP_APPLY) < 0 ||
                   PyModule_AddIntConstant(m, "STEP_LIMIT", STEP_LIMIT) < 0 ||
                   PyModule_AddIntConstant(m, "STEP_BULKHEAD", STEP_BULKHEAD) < 0 ||
                   PyModule_AddIntConstant(m, "STEP_TIMEOUT", STEP_TIMEOUT) < 0 ||
                   PyModule_AddIntConstant(m, "STEP_FALLBACK", STEP_FALLBACK) < 0
               ? -1
               : 0;
}
