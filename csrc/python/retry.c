/*
 * retry.c (binding) - RetryPolicy (delays and jitter), RetryBudget,
 * RetryCounts and two clock helpers for the Python retry loop.
 *
 * The split with pyresilience/retry.py: everything per attempt that is
 * arithmetic (the delay, the jitter draw, Retry-After and deadline capping,
 * the budget) is C; the loop that sleeps, calls on_retry and re-raises is
 * Python, and runs only after a failure. A call that succeeds at once never
 * leaves C: a decorated function is a PolicyStep RETRY (policy.c), which
 * reads the clock, deposits in the budget and counts here.
 */
#include "prs_py.h"
#include "counter_internal.h"

typedef struct {
    PyObject_HEAD
    prs_retry *core;   /* built by tp_new */
    PyObject *seed;    /* None or the int given */
} policy_obj;

typedef struct {
    PyObject_HEAD
    prs_retry_budget *core;  /* built by tp_new */
    prs_py_clock clock;
    PyObject *weakreflist;
} budget_obj;

/* A Retry's counters (pyresilience.retry's _COUNTERS: index 0 is the
 * first-try success, which the RETRY step adds here). */
#define PRS_PY_RETRY_COUNTS 11
typedef struct {
    PyObject_HEAD
    prs_counters *core; /* built by tp_new */
} counts_obj;

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

static PyObject *next_step(policy_obj *o, const retry_args *a) {
    prs_retry_step s;
    int rc = prs_retry_next(o->core, a->attempt, a->previous, a->retry_after_ns, a->remaining_ns, &s);
    if (rc) return prs_py_error(prs_py_state_of((PyObject *)o), rc, NULL);
    return Py_BuildValue("(idL)", s.verdict, s.delay, (long long)s.delay_ns);
}

static PyObject *counts_values(counts_obj *o) {
    PyObject *t = PyTuple_New(PRS_PY_RETRY_COUNTS);
    for (Py_ssize_t i = 0; t && i < PRS_PY_RETRY_COUNTS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(prs_counters_get(o->core, (size_t)i));
        if (!v) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *withdraw_at(budget_obj *o, int64_t now) {
    int ok = 0;
    prs_retry_budget_withdraw(o->core, now, &ok);
    return PyBool_FromLong(ok);
}

static PyObject *metrics_at(budget_obj *o, int64_t now) {
    prs_retry_budget_metrics m;
    prs_retry_budget_metrics_get(o->core, now, &m);
    return Py_BuildValue("(LLLLLd)", (long long)m.attempts, (long long)m.retries_allowed,
                         (long long)m.retries_denied, (long long)m.window_attempts,
                         (long long)m.window_retries, m.available);
}

/* ---- Clock helpers for the Python loop ----------------------------------------------- */

/* retry_now_ns(clock) (ns < 0) and retry_sleep(clock, ns), by the binding's one
 * clock sleep (prs_py_clock_sleep): a clock other than a ManualClock sleeps ns
 * of real (monotonic) time. */
static PyObject *clock_use(prs_py_state *st, PyObject *clock, int64_t ns) {
    prs_py_clock c, mono = {PRS_CLOCK_MONOTONIC, NULL, NULL};
    int64_t now = 0;
    if (prs_py_clock_init(st, clock, &c) < 0) return NULL;
    int rc = ns < 0 ? prs_py_clock_now(&c, &now) : prs_py_clock_sleep(c.kind == PRS_CLOCK_MANUAL ? &c : &mono, ns);
    prs_py_clock_clear(&c);
    if (rc < 0) return NULL;
    return ns < 0 ? PyLong_FromLongLong(now) : Py_NewRef(Py_None);
}

#include "gen/retry.h"

/* ---- RetryPolicy --------------------------------------------------------------------- */

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
    return prs_py_type_error("jitter", "a bool or a strategy name (str)", o);
}

/* seed=: None (random) or an int, whose low 64 bits seed the generator. */
static int policy_seed(PyObject *o, void *config) {
    prs_retry_config *cfg = config;
    if (o != Py_None && (PyBool_Check(o) || !PyLong_Check(o)))
        return prs_py_type_error("seed", "an int or None", o);
    cfg->has_seed = o != Py_None;
    cfg->seed = cfg->has_seed ? PyLong_AsUnsignedLongLongMask(o) : 0; /* the low 64 bits */
    return PyErr_Occurred() ? -1 : 0;
}

/* ---- RetryBudget and RetryCounts in the RETRY step (policy.c) ------------------------ */

int prs_py_retry_deposit(PyObject *budget, int64_t mono_now) {
    budget_obj *b = (budget_obj *)budget;
    int64_t now = mono_now;
    if (b->clock.kind != PRS_CLOCK_MONOTONIC && prs_py_clock_now(&b->clock, &now) < 0) return -1;
    prs_retry_budget_deposit(b->core, now);
    return 0;
}

prs_counters *prs_py_retry_counters(PyObject *counts) { return ((counts_obj *)counts)->core; }
