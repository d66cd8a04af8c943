/*
 * deadline.c - the deadline of the current call, for every wait of the binding.
 *
 * A Policy call with a Timeout puts its deadline in one context variable
 * (`_core.DEADLINE`): an int, absolute nanoseconds of CLOCK_MONOTONIC (the
 * clock of prs_monotonic_ns() and of time.monotonic_ns()). Being a context
 * variable it follows the call into nested calls, asyncio tasks made from it
 * and (copied) worker threads, and each thread or task sees only its own.
 *
 * Every wait of the binding (the rate wait of limiters, keyed views, groups and
 * Redis limiters; the condition wait of bulkheads and queues) caps its timeout
 * with prs_py_deadline_cap() when it begins. The cap is an absolute deadline,
 * so capping once at the start is exact. A wait that cannot be served before
 * the deadline then fails at once, as with a timeout of its own.
 *
 * Cost when no deadline is set: one PyContextVar_Get that finds nothing.
 *
 * Why not a thread-local word for sync calls (it would save the allocation
 * of PyContextVar_Set): greenlets (gevent, eventlet) switch inside a blocking
 * call on one thread, and each has its own context but would share the word:
 * one greenlet's deadline would cap another's waits, and interleaved
 * restores would leave a stale deadline behind.
 */
#include "prs_py.h"

int prs_py_deadline_abs(PyObject *var, int64_t *out) {
    int64_t deadline = PRS_NEVER;
    PyObject *value = NULL;
    if (var && PyContextVar_Get(var, NULL, &value) < 0) return -1;
    if (value) {
        long long v = PyLong_AsLongLong(value);
        Py_DECREF(value);
        if (v == -1 && PyErr_Occurred()) return -1;
        if ((int64_t)v < deadline) deadline = (int64_t)v;
    }
    *out = deadline;
    return 0;
}

int64_t prs_py_deadline_cap(prs_py_state *st, int64_t timeout_ns) {
    int64_t deadline;
    if (!st || prs_py_deadline_abs(st->slots[PRS_SLOT_DeadlineVar], &deadline) < 0) {
        PyErr_Clear(); /* no usable deadline: the wait's own timeout stands */
        return timeout_ns;
    }
    if (deadline == PRS_NEVER) return timeout_ns;
    int64_t left = prs__sat_sub(deadline, prs_monotonic_ns());
    if (left < 0) left = 0;
    return (timeout_ns == PRS_NEVER || left < timeout_ns) ? left : timeout_ns;
}

/* deadline_remaining(): seconds left before the current call's deadline, or None. */
static PyObject *deadline_remaining(PyObject *m, PyObject *unused) {
    prs_py_state *st = PyModule_GetState(m);
    int64_t left = prs_py_deadline_cap(st, PRS_NEVER);
    if (left == PRS_NEVER) Py_RETURN_NONE;
    return PyFloat_FromDouble((double)left / 1e9);
}

/* _deadline_ns(): the absolute deadline in effect (CLOCK_MONOTONIC ns), or None. */
static PyObject *deadline_ns(PyObject *m, PyObject *unused) {
    prs_py_state *st = PyModule_GetState(m);
    int64_t deadline;
    if (prs_py_deadline_abs(st->slots[PRS_SLOT_DeadlineVar], &deadline) < 0) return NULL;
    if (deadline == PRS_NEVER) Py_RETURN_NONE;
    return PyLong_FromLongLong(deadline);
}

static PyMethodDef deadline_methods[] = {
    {"_deadline_ns", deadline_ns, METH_NOARGS,
     "_deadline_ns()\n--\n\n"
     "The absolute deadline in effect (CLOCK_MONOTONIC ns), or None."},
    {"deadline_remaining", deadline_remaining, METH_NOARGS,
     "deadline_remaining()\n--\n\n"
     "Seconds left before the deadline of the current policy call (0.0 once it has\n"
     "passed), or None when no Timeout of a Policy is in effect."},
    {NULL, NULL, 0, NULL},
};

int prs_py_register_deadline(PyObject *m, prs_py_state *st) {
    PyObject *var = PyContextVar_New("pyresilience_deadline", NULL);
    if (!var) return -1;
    if (PyModule_AddObjectRef(m, "DEADLINE", var) < 0) {
        Py_DECREF(var);
        return -1;
    }
    Py_XSETREF(st->slots[PRS_SLOT_DeadlineVar], var);
    return PyModule_AddFunctions(m, deadline_methods);
}
