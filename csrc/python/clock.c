/*
 * clock.c - ManualClock and MonotonicClock.
 *
 * ManualClock holds int64 nanoseconds in an atomic, read by primitives without
 * calling into Python. Waits of the library on a ManualClock advance it instead
 * of sleeping (prs_py_clock_wait), so time-based tests are instant and exact.
 * Every advance adds atomically (concurrent advances each count) and
 * saturates at 2^63 - 1 ns instead of wrapping (prs__atomic_sat_add).
 *
 * And every primitive's clock (prs_py_clock, prs_py.h): how it reads time
 * (monotonic, a ManualClock's atomic, or a Python callable) and waits.
 */
#include "prs_py.h"

typedef struct prs_py_manual_clock {
    PyObject_HEAD
    _Atomic int64_t now_ns;
} prs_py_manual_clock;

/* The parsed arguments of ManualClock() (start) and of its methods (advance, set, ...). */
typedef struct prs_py_manual_clock_args {
    int64_t ns;
} prs_py_manual_clock_args;

#include "gen/clock.h"

int prs_py_clock_init(prs_py_state *st, PyObject *arg, prs_py_clock *c) {
    *c = (prs_py_clock){PRS_CLOCK_MONOTONIC, NULL, NULL};
    if (!arg || arg == Py_None) return 0;
    if (PyObject_TypeCheck(arg, PRS_PY_TYPE(st, ManualClock))) {
        c->kind = PRS_CLOCK_MANUAL;
        c->manual_ns = &((prs_py_manual_clock *)arg)->now_ns;
    } else if (!PyObject_TypeCheck(arg, PRS_PY_TYPE(st, MonotonicClock))) { /* a MonotonicClock: as None */
        if (!PyCallable_Check(arg) || PyType_Check(arg))
            return prs_py_type_error("clock", "None, a ManualClock, a MonotonicClock or a "
                                              "zero-argument callable returning seconds", arg);
        c->kind = PRS_CLOCK_CALLABLE;
    }
    c->obj = Py_NewRef(arg);
    return 0;
}

void prs_py_clock_clear(prs_py_clock *c) {
    c->kind = PRS_CLOCK_MONOTONIC;
    c->manual_ns = NULL;
    Py_CLEAR(c->obj);
}

PyObject *prs_py_get_clock(PyObject *self, void *off) {
    prs_py_clock *c = (prs_py_clock *)((char *)self + (intptr_t)off);
    prs_py_state *st = prs_py_state_of(self);
    if (c->obj) return Py_NewRef(c->obj);
    return st ? PyObject_CallNoArgs((PyObject *)PRS_PY_TYPE(st, MonotonicClock)) : NULL;
}

int prs_py_clock_now_callable(prs_py_clock *c, int64_t *now) {
    PyObject *r = PyObject_CallNoArgs(c->obj);
    double s;
    if (!r) return -1;
    int rc = prs_py_parse_real(r, "the seconds clock() returned", PRS_PY_ZERO_OK | PRS_PY_NEG_OK,
                               &s);
    Py_DECREF(r);
    if (rc == 0) *now = prs_seconds_to_ns(s);
    return rc;
}

int prs_py_clock_wait(prs_py_clock *c, int64_t now, int64_t wake) {
    int64_t ns = prs__min64(prs__sat_sub(wake, now), 50 * PRS_NS_PER_MS);
    if (c->kind == PRS_CLOCK_MANUAL) {
        prs__atomic_raise(c->manual_ns, wake);
    } else if (ns > 0) {
        Py_BEGIN_ALLOW_THREADS
        prs_sleep_ns(ns);
        Py_END_ALLOW_THREADS
    }
    return PyErr_CheckSignals();
}

int prs_py_clock_sleep(prs_py_clock *c, int64_t ns) {
    if (ns <= 0) return PyErr_CheckSignals();
    if (c->kind == PRS_CLOCK_MANUAL) {
        /* advance by exactly ns (concurrent sleepers each add their own wait), saturating */
        prs__atomic_sat_add(c->manual_ns, ns);
        return 0;
    }
    int64_t now;
    if (prs_py_clock_now(c, &now) < 0) return -1;
    for (int64_t wake = prs__sat_add(now, ns); now < wake;)
        if (prs_py_clock_wait(c, now, wake) < 0 || prs_py_clock_now(c, &now) < 0) return -1;
    return 0;
}
