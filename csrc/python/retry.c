/*
 * retry.c (binding) - RetryPolicy (delays and jitter), RetryBudget, RetryCall
 * (the C fast path of a retry-wrapped function) and two clock helpers for the
 * Python retry loop.
 *
 * The split with pyresilience/retry.py: everything per attempt that is
 * arithmetic (the delay, the jitter draw, Retry-After and deadline capping,
 * the budget) is C; the loop that sleeps, calls on_retry and re-raises is
 * Python, and runs only after a failure. A call that succeeds at once never
 * leaves C: RetryCall reads the clock, deposits in the budget, calls the
 * function and returns its result.
 */
#include "prs_py.h"
#include "counter_internal.h"

#include <math.h>
#include <stddef.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    prs_retry *core;   /* built by tp_new */
    PyObject *seed;    /* None or the int given */
} policy_obj;

#define POLICY(o) ((policy_obj *)(o))

typedef struct {
    PyObject_HEAD
    prs_retry_budget *core;  /* built by tp_new */
    prs_py_clock clock;
    PyObject *weakreflist;
} budget_obj;

#define BUDGET(o) ((budget_obj *)(o))

/* A Retry's counters (pyresilience.retry's _COUNTERS: index 0 is the
 * first-try success, which RetryCall adds here). */
#define PRS_PY_RETRY_COUNTS 11
typedef struct {
    PyObject_HEAD
    prs_counters *core; /* built by tp_new */
} counts_obj;

#define COUNTS(o) ((counts_obj *)(o))

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;          /* the wrapped callable */
    PyObject *handler;       /* handler(func, args, kwargs, exc, result, start_ns): the Python loop */
    PyObject *check_result;  /* None or retry_on_result */
    PyObject *budget;        /* None or a RetryBudget */
    PyObject *counts;        /* None or a RetryCounts */
    prs_py_clock clock;
    PyObject *dict;          /* __dict__ (functools.wraps writes there) */
    PyObject *weakreflist;
} call_obj;

#define CALL(o) ((call_obj *)(o))

/* The policy's configuration (a property reads one field). */
static prs_retry_config policy_config(policy_obj *o) {
    prs_retry_config cfg;
    prs_retry_get_config(o->core, &cfg);
    return cfg;
}

/* The arguments of RetryPolicy's and RetryCounts' methods (declared: attempt, previous, ...). */
typedef struct {
    int64_t attempt, n, retry_after_ns, remaining_ns, i;
    double previous; /* None: 0, no previous delay */
} retry_args;

/* sample(attempt, n, previous=None): n delays for one attempt. */
static PyObject *sample_list(policy_obj *o, const retry_args *a) {
    PyObject *list = PyList_New((Py_ssize_t)a->n);
    for (Py_ssize_t i = 0; list && i < (Py_ssize_t)a->n; i++) {
        PyObject *f = PyFloat_FromDouble(prs_retry_delay(o->core, a->attempt, a->previous));
        if (!f) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, f);
    }
    return list;
}

/* _next(attempt, previous, retry_after_ns, remaining_ns) -> (verdict, delay_s, delay_ns) */
static PyObject *next_step(policy_obj *o, const retry_args *a) {
    prs_retry_step s;
    int rc = prs_retry_next(o->core, a->attempt, a->previous, a->retry_after_ns, a->remaining_ns, &s);
    if (rc) return prs_py_error(prs_py_state_of((PyObject *)o), rc, NULL);
    return Py_BuildValue("(idL)", s.verdict, s.delay, (long long)s.delay_ns);
}

static PyObject *call_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);
static PyObject *clock_use(prs_py_state *st, PyObject *clock, int64_t ns);
static PyObject *counts_values(counts_obj *o) {
    PyObject *t = PyTuple_New(PRS_PY_RETRY_COUNTS);
    for (Py_ssize_t i = 0; t && i < PRS_PY_RETRY_COUNTS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(prs_counters_get(o->core, (size_t)i));
        if (!v) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* withdraw(): True when one retry is allowed now (counted either way). */
static PyObject *withdraw_at(budget_obj *o, int64_t now) {
    int ok = 0;
    prs_retry_budget_withdraw(o->core, now, &ok);
    return PyBool_FromLong(ok);
}

/* _metrics() -> (attempts, retries_allowed, retries_denied, window_attempts,
 * window_retries, available): the facade's RetryBudgetMetrics, in field order. */
static PyObject *metrics_at(budget_obj *o, int64_t now) {
    prs_retry_budget_metrics m;
    prs_retry_budget_metrics_get(o->core, now, &m);
    return Py_BuildValue("(LLLLLd)", (long long)m.attempts, (long long)m.retries_allowed,
                         (long long)m.retries_denied, (long long)m.window_attempts,
                         (long long)m.window_retries, m.available);
}

#include "gen/retry.h"

/* ======================================================================== */
/* RetryPolicy                                                              */
/* ======================================================================== */

/* jitter=: True (proportional), False/None (none) or a strategy's name. */
static int policy_jitter(PyObject *o, void *config) {
    int *out = &((prs_retry_config *)config)->jitter;
    if (o == Py_True) { *out = PRS_JITTER_PROPORTIONAL; return 0; }
    if (o == Py_False || o == Py_None) { *out = PRS_JITTER_NONE; return 0; }
    if (PyUnicode_Check(o)) {
        const char *name = PyUnicode_AsUTF8(o);
        if (!name) return -1;
        prs_jitter j;
        if (prs_jitter_parse(name, &j) == PRS_OK) { *out = (int)j; return 0; }
        PyErr_Format(PyExc_ValueError,
                     "jitter must be True, False or one of 'none', 'full', 'equal', "
                     "'decorrelated', 'proportional', got %R", o);
        return -1;
    }
    PyErr_Format(PyExc_TypeError, "jitter must be a bool or a strategy name (str), not %.200s: %R",
                 Py_TYPE(o)->tp_name, o);
    return -1;
}

/* seed=: None (random) or an int, whose low 64 bits seed the generator. */
static int policy_seed(PyObject *o, void *config) {
    prs_retry_config *cfg = config;
    cfg->has_seed = 0;
    cfg->seed = 0;
    if (o == Py_None) return 0;
    if (PyBool_Check(o) || !PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "seed must be an int or None, not %.200s: %R", Py_TYPE(o)->tp_name, o);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(o); /* the low 64 bits */
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    cfg->has_seed = 1;
    cfg->seed = v;
    return 0;
}

/* ======================================================================== */
/* RetryBudget                                                              */
/* ======================================================================== */

/* Deposits one first attempt at the budget's clock's now. 0 or -1. */
static int budget_deposit_now(budget_obj *b) {
    int64_t now;
    if (prs_py_clock_now(&b->clock, &now) < 0) return -1;
    prs_retry_budget_deposit(b->core, now);
    return 0;
}

/* ======================================================================== */
/* RetryCall: the fast path                                                 */
/* ======================================================================== */

/* After a call's first attempt (res: its result; NULL with its exception
 * set): res, unless retry_on_result `check` (NULL: none) wants a retry or it
 * raised an Exception; then the Retry's Python loop takes over,
 * handler(func, args, kwargs, exc, result, start). Steals res. Shared with
 * the Policy's Retry step (policy.c). */
PyObject *prs_py_retry_after(PyObject *handler, PyObject *check, PyObject *counts, PyObject *func,
                             PyObject *const *args, size_t nargsf, PyObject *kwnames, PyObject *result,
                             int64_t start) {
    PyObject *exc = NULL;
    if (result) {
        PyObject *r = check ? PyObject_CallOneArg(check, result) : Py_NewRef(Py_False);
        int again = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        if (again < 0) Py_CLEAR(result);
        if (!again) prs_py_retry_first_try(counts);
        if (again <= 0) return result;
    /* BaseExceptions that are not Exceptions (KeyboardInterrupt, SystemExit,
     * GeneratorExit, CancelledError) are never retried. */
    } else if (!PyErr_ExceptionMatches(PyExc_Exception) || !(exc = prs_py_take_exception())) {
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *tuple = PyTuple_New(nargs), *kwargs = PyDict_New(), *start_o = PyLong_FromLongLong(start);
    PyObject *out = NULL;
    if (!tuple || !kwargs || !start_o) goto done;
    for (Py_ssize_t i = 0; i < nargs; i++) PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    for (Py_ssize_t k = 0; k < nkw; k++)
        if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, k), args[nargs + k]) < 0) goto done;
    PyObject *hargs[6] = {func, tuple, kwargs, exc ? exc : Py_None, result ? result : Py_None, start_o};
    out = PyObject_Vectorcall(handler, hargs, 6, NULL);
done:
    Py_XDECREF(tuple);
    Py_XDECREF(kwargs);
    Py_XDECREF(start_o);
    Py_XDECREF(exc);
    Py_XDECREF(result);
    return out;
}

void prs_py_retry_first_try(PyObject *counts) {
    if (counts && counts != Py_None) prs__counters_add(COUNTS(counts)->core, 0, 1);
}

static PyObject *call_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    call_obj *c = CALL(self);
    int64_t start;
    if (prs_py_clock_now(&c->clock, &start) < 0) return NULL;
    if (c->budget != Py_None && budget_deposit_now(BUDGET(c->budget)) < 0) return NULL;
    PyObject *res = PyObject_Vectorcall(c->func, args, nargsf, kwnames);
    if (res && c->check_result == Py_None) {
        if (c->counts != Py_None) prs__counters_add(COUNTS(c->counts)->core, 0, 1);
        return res;
    }
    PyObject *check = c->check_result == Py_None ? NULL : c->check_result;
    return prs_py_retry_after(c->handler, check, c->counts, c->func, args, nargsf, kwnames, res, start);
}

/* A method: bind like a function does. */
static PyObject *call_repr(PyObject *self) {
    if (!CALL(self)->func) return PyUnicode_FromString("<retrying wrapper (cleared)>");
    return PyUnicode_FromFormat("<retrying wrapper of %R>", CALL(self)->func);
}


/* ======================================================================== */
/* Clock helpers for the Python loop                                        */
/* ======================================================================== */

/* retry_now_ns(clock) (ns < 0): the clock's time; retry_sleep(clock, ns): a
 * ManualClock is advanced by ns at once, any other clock sleeps ns of real
 * (monotonic) time, the one clock sleep of the binding (prs_py_clock_sleep:
 * the GIL released in slices of <= 50 ms, signal handlers run between
 * slices). */
static PyObject *clock_use(prs_py_state *st, PyObject *clock, int64_t ns) {
    prs_py_clock c, mono = {PRS_CLOCK_MONOTONIC, NULL, NULL};
    int64_t now = 0;
    if (prs_py_clock_init(st, clock, &c) < 0) return NULL;
    int rc = ns < 0 ? prs_py_clock_now(&c, &now) : prs_py_clock_sleep(c.kind == PRS_CLOCK_MANUAL ? &c : &mono, ns);
    prs_py_clock_clear(&c);
    if (rc < 0) return NULL;
    return ns < 0 ? PyLong_FromLongLong(now) : Py_NewRef(Py_None);
}
