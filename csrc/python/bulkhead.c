/*
 * bulkhead.c - _core.Bulkhead over prs_bulkhead. Every acquire, sync or
 * asyncio (driven by pyresilience/bulkhead.py), is one prs_py_cond_call()
 * (wait.h) over this file's bh_ops; release() hands a permit to the oldest
 * waiter, thread or asyncio task.
 */
#include "wait.h"

#include <math.h>

/* The constructor's arguments: the core's config and the binding's wait. */
typedef struct {
    prs_bulkhead_config core;
    double max_wait_s;
    int64_t max_wait_ns;   /* from max_wait_s; PRS_NEVER: wait forever */
} bh_args;

typedef struct {
    PyObject_HEAD
    prs_bulkhead *core;    /* made in tp_new, never NULL */
    PyObject *name;        /* str */
    PyTypeObject *ready;   /* strong: the module's _Ready type (async with fast path) */
    bh_args a;             /* as built */
    PyObject *weakreflist;
} bh_obj;

static void bh_args_init(bh_args *a) {
    prs_bulkhead_config_init(&a->core);
    a->max_wait_s = 30.0;
}

static int bh_args_check(bh_args *a, prs_config_error *why) {
    a->max_wait_ns = isinf(a->max_wait_s) ? PRS_NEVER : prs_seconds_to_ns(a->max_wait_s);
    return prs_bulkhead_config_check(&a->core, why);
}

/* _Ready: an awaitable already done, yielding `value` (async with's fast
 * path; its type is the module's, cached in bh_obj.ready). It holds only its
 * result, which it drops when awaited: no GC needed (a cycle through an
 * un-awaited _Ready is freed with the object that made it). */
typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once delivered */
} ready_obj;

static PyObject *ready_new(PyTypeObject *tp, PyObject *value) {
    ready_obj *r = PyObject_New(ready_obj, tp);
    if (!r) return NULL;
    Py_INCREF(tp);
    r->value = Py_NewRef(value);
    return (PyObject *)r;
}

static PyObject *ready_next(PyObject *self) {
    /* taken whole: two threads resuming one awaitable get it once */
    PyObject *v = __atomic_exchange_n(&((ready_obj *)self)->value, NULL, __ATOMIC_ACQ_REL);
    if (!v) return NULL; /* exhausted: StopIteration */
    if (v == Py_None) { Py_DECREF(v); return NULL; }
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, v);
    Py_DECREF(v);
    if (!exc) return NULL;
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *ready_send(PyObject *self, PyObject *arg) { return ready_next(self); }

/* A snapshot of the core's counters (a property reads one of them). */
static prs_bulkhead_stats bh_stats_of(bh_obj *o) {
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(o->core, &s);
    return s;
}

#define SELF ((bh_obj *)self)

/* A fresh BulkheadFullError(message, retry_after, name) (new reference), or
 * NULL with an exception. retry_after is always an estimate: the observed
 * mean hold, or the core's prior (1 s) before any slot came back. */
static PyObject *bh_full_error(PyObject *self, PyObject *unused) {
    prs_py_state *st = prs_py_state_of(self);
    int64_t est = prs_bulkhead_estimate_wait_ns(SELF->core, prs_monotonic_ns());
    long long slots = prs_bulkhead_max_concurrent(SELF->core);
    return st ? PyObject_CallFunction(PRS_PY_EXC(st, BulkheadFullError), "NdO", /* N: NULL fails the call */
                                      PyUnicode_FromFormat("Bulkhead '%U' is full (%lld concurrent operations)",
                                                           SELF->name, slots),
                                      prs_py_ns_to_s(est), SELF->name)
              : NULL;
}

/* Takes a permit: at once (waiter NULL; a refusal counted when final), or
 * queueing `waiter`. */
static inline int bh_call(PyObject *self, int kind, void *waiter, int final, PyObject *arg, prs_py_settled *out) {
    int got;
    if (waiter) {
        prs_bulkhead_acquire(SELF->core, prs_monotonic_ns(), waiter, &out->outcome);
        return out->outcome == PRS_BULKHEAD_WAITING;
    }
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), final, &got);
    out->outcome = got ? PRS_BULKHEAD_ACQUIRED : PRS_BULKHEAD_REJECTED;
    return !got && !final;
}

static int bh_settle(PyObject *self, void *waiter, int cancel, prs_py_settled *out) {
    prs_bulkhead_waiter *woken = NULL;
    prs_bulkhead_finish(SELF->core, waiter, cancel ? PRS_BULKHEAD_FINISH_CANCEL : PRS_BULKHEAD_FINISH_ACCEPT,
                        prs_monotonic_ns(), &out->outcome, &woken);
    prs_py_waiters_served(PRS_PY_WAITER_BULKHEAD, woken);
    return out->outcome == PRS_BULKHEAD_REJECTED || out->outcome == PRS_BULKHEAD_CANCELLED;
}

/* Sync: None with a permit, else BulkheadFullError (counted as rejected).
 * asyncio: True with a permit, else False (timed out: counted as rejected;
 * or cancelled: a permit it was handed went back; or settled already). */
static inline PyObject *bh_result(PyObject *self, int kind, unsigned flags, prs_py_settled *out) {
    int got = out->outcome == PRS_BULKHEAD_ACQUIRED;
    if (flags & PRS_PY_COND_ASYNC) return PyBool_FromLong(got);
    if (got) Py_RETURN_NONE;
    return prs_py_raise(bh_full_error(self, NULL));
}

static const prs_py_cond_ops bh_ops = {bh_call, bh_settle, bh_result};

#define BH_CALL(timeout_ns, new_waiter) \
    prs_py_cond_call(&bh_ops, self, SELF->core, PRS_PY_WAITER_BULKHEAD, NULL, timeout_ns, new_waiter)

int prs_py_bulkhead_try_at(PyObject *self, int64_t now) {
    int got = 0;
    prs_bulkhead_try_acquire(SELF->core, now, 0, &got);
    return got;
}

int prs_py_bulkhead_release_at(PyObject *self, int64_t now) {
    prs_bulkhead_waiter *woken = NULL;
    int rc = prs_bulkhead_release(SELF->core, now, &woken);
    if (rc == PRS_ESTATE) {
        PyErr_Format(PyExc_RuntimeError, "Bulkhead '%U' released more times than acquired", SELF->name);
        return -1;
    }
    if (woken) prs_py_waiters_served(PRS_PY_WAITER_BULKHEAD, woken); /* no call on the hot path */
    return 0;
}

static PyObject *bh_after_fork_child(PyObject *self, PyObject *unused) {
    prs_bulkhead_waiter *woken = NULL;
    int rc = prs_bulkhead_after_fork_child(SELF->core, &woken);
    if (rc) return prs_py_error(prs_py_state_of(self), rc, "cannot re-create the Bulkhead's lock after fork");
    prs_py_waiters_served(PRS_PY_WAITER_BULKHEAD, woken); /* by the permits given back */
    Py_RETURN_NONE;
}

static PyObject *acquire_for(PyObject *self, PyObject *timeout) {
    int64_t timeout_ns = SELF->a.max_wait_ns;
    if (timeout && timeout != Py_Ellipsis && prs_py_parse_timeout(timeout, "timeout", &timeout_ns) < 0) return NULL;
    return BH_CALL(timeout_ns, NULL);
}

static PyObject *bh_enter(PyObject *self, PyObject *unused) {
    PyObject *r = BH_CALL(SELF->a.max_wait_ns, NULL);
    if (!r) return NULL;
    Py_DECREF(r);
    return Py_NewRef(self);
}

static PyObject *acquire_async(PyObject *self, PyObject *new_waiter, PyObject *wait_arg) {
    int wait = wait_arg == Py_None ? SELF->a.max_wait_ns != 0 : PyObject_IsTrue(wait_arg);
    return wait < 0 ? NULL : BH_CALL(wait ? PRS_NEVER : 0, new_waiter);
}

static PyObject *bh_stats(PyObject *self, PyObject *unused) {
    prs_bulkhead_stats s = bh_stats_of(SELF);
    PyObject *hold = s.avg_hold_ns < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble((double)s.avg_hold_ns / 1e9);
    return hold ? Py_BuildValue("(LLLLLLLLNLd)", (long long)s.max_concurrent, (long long)s.active,
                                (long long)s.available, (long long)s.waiting, (long long)s.acquired_total,
                                (long long)s.released_total, (long long)s.rejected_total,
                                (long long)s.cancelled_total, hold, (long long)s.waited_total,
                                (double)s.held_ns_total / 1e9) : NULL;
}

#include "gen/bulkhead.h"
