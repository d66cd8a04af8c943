/*
 * decision.c - Decision: the outcome of asking a limiter (allowed, limit,
 * remaining, retry_after, reset_after, denied_by) and its HTTP headers.
 * Made in C on every check(), so it is a small fixed-size object.
 */
#include "prs_py.h"

static int decision_build(prs_py_decision *o, const prs_decision *d, PyObject *denied_by);

#include "gen/decision.h"

#include <limits.h>

PyObject *prs_py_decision_new_by(prs_py_state *st, const prs_decision *d, int denied_by) {
    PyTypeObject *tp = PRS_PY_TYPE(st, Decision);
    prs_py_decision *self = (prs_py_decision *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    self->d = *d;
    self->denied_by = denied_by < 0 ? -1 : denied_by;
    return (PyObject *)self;
}

/* Decision(...)'s last step: denied_by is None or a member's index. */
static int decision_build(prs_py_decision *o, const prs_decision *d, PyObject *denied_by) {
    long by = -1;
    o->d = *d;
    if (denied_by && denied_by != Py_None) {
        if (!PyLong_Check(denied_by) || PyBool_Check(denied_by))
            return prs_py_type_error("denied_by", "an int or None", denied_by);
        by = PyLong_AsLong(denied_by);
        if (by == -1 && PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        if (by < 0 || by > INT_MAX) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "denied_by must be between 0 and %d, got %R", INT_MAX, denied_by);
            return -1;
        }
    }
    o->denied_by = (int)by;
    return 0;
}

#define D(self) (((prs_py_decision *)(self))->d)

/* The headers are the core's (prs_decision_headers), as str values. */
static PyObject *decision_headers(PyObject *self, PyObject *unused) {
    const char *name[PRS_DECISION_HEADERS_MAX];
    int64_t value[PRS_DECISION_HEADERS_MAX];
    int n = prs_decision_headers(&D(self), name, value);
    PyObject *h = PyDict_New();
    for (int i = 0; h && i < n; i++) {
        PyObject *s = PyUnicode_FromFormat("%lld", (long long)value[i]);
        if (!s || PyDict_SetItemString(h, name[i], s) < 0) Py_CLEAR(h);
        Py_XDECREF(s);
    }
    return h;
}

static int decision_bool(PyObject *self) { return D(self).allowed; }

static PyObject *decision_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b)) Py_RETURN_NOTIMPLEMENTED;
    const prs_decision *x = &D(a), *y = &D(b);
    int eq = x->allowed == y->allowed && x->limit == y->limit && x->remaining == y->remaining &&
             x->retry_after_ns == y->retry_after_ns && x->reset_after_ns == y->reset_after_ns &&
             ((prs_py_decision *)a)->denied_by == ((prs_py_decision *)b)->denied_by;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}
