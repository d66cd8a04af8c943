/*
 * common.c - the binding's shared helpers: status -> exception (the one place),
 * argument unpacking, numbers and durations at the boundary, and clocks.
 */
#include "prs_py.h"

#include <math.h>

/* ---- errors ----------------------------------------------------------- */

PyObject *prs_py_error(prs_py_state *st, int status, const char *what) {
    const char *msg = what ? what : prs_strerror(status);
    PyObject *exc;
    switch (status) {
    case PRS_EINVAL:
    case PRS_ERANGE:
    case PRS_ENEVER:
        exc = PyExc_ValueError;
        break;
    case PRS_ENOMEM:
        return PyErr_NoMemory();
    case PRS_ETIMEDOUT:
        exc = PyExc_TimeoutError;
        break;
    case PRS_EBACKEND:
    case PRS_ECONN:
    case PRS_EPROTO:
    case PRS_ENOSCRIPT:
        exc = st ? PRS_PY_EXC(st, BackendError) : PyExc_RuntimeError;
        break;
    case PRS_ECLOSED:
        exc = st ? PRS_PY_EXC(st, QueueClosedError) : PyExc_RuntimeError;
        break;
    case PRS_EFULL:
        exc = st ? PRS_PY_EXC(st, QueueFullError) : PyExc_RuntimeError;
        break;
    case PRS_EEMPTY:
        exc = st ? PRS_PY_EXC(st, QueueEmptyError) : PyExc_RuntimeError;
        break;
    case PRS_ENOTSUP:
        exc = PyExc_NotImplementedError;
        break;
    default:
        exc = PyExc_RuntimeError;
        break;
    }
    if (what) PyErr_SetString(exc, msg);
    else PyErr_Format(exc, "%s (%s)", msg, prs_err_name(status));
    return NULL;
}

PyObject *prs_py_raise_rate_limited_obj(prs_py_state *st, PyObject *decision, int64_t retry_after_ns,
                                        const char *message) {
    PyObject *retry = PyFloat_FromDouble(prs_py_ns_to_s(retry_after_ns));
    PyObject *msg = PyUnicode_FromString(message ? message : "rate limit exceeded");
    PyObject *exc = NULL;
    if (retry && msg) {
        PyObject *args[3] = {msg, retry, decision};
        exc = PyObject_Vectorcall(PRS_PY_EXC(st, RateLimitExceeded), args, 3, NULL);
    }
    Py_XDECREF(retry);
    Py_XDECREF(msg);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *prs_py_raise_rate_limited(prs_py_state *st, const prs_decision *d, const char *message) {
    PyObject *dec = prs_py_decision_new(st, d);
    if (!dec) return NULL;
    prs_py_raise_rate_limited_obj(st, dec, d->retry_after_ns, message);
    Py_DECREF(dec);
    return NULL;
}

/* ---- argument unpacking ----------------------------------------------- */

int prs_py_unpack(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, Py_ssize_t maxpos, PyObject **out) {
    Py_ssize_t nnames = 0;
    while (names[nnames]) nnames++;
    for (Py_ssize_t i = 0; i < nnames; i++) out[i] = NULL;
    if (nargs > maxpos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional argument%s (%zd given)",
                     fname, maxpos, maxpos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    if (!kwnames) return 0;
    Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i;
        for (i = 0; i < nnames; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) break;
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    return 0;
}

/* ---- numbers ---------------------------------------------------------- */

int prs_py_parse_real(PyObject *o, const char *param, unsigned flags, double *out) {
    double v;
    if (PyFloat_CheckExact(o)) {
        v = PyFloat_AS_DOUBLE(o);
    } else if (PyBool_Check(o) || PyUnicode_Check(o) || PyBytes_Check(o) ||
               !(PyFloat_Check(o) || PyLong_Check(o) || PyIndex_Check(o) ||
                 (Py_TYPE(o)->tp_as_number && Py_TYPE(o)->tp_as_number->nb_float))) {
        PyErr_Format(PyExc_TypeError, "%s must be a real number, not %.200s: %R", param,
                     Py_TYPE(o)->tp_name, o);
        return -1;
    } else {
        v = PyFloat_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s is out of range: %R", param, o);
            }
            return -1;
        }
    }
    if (isnan(v)) {
        PyErr_Format(PyExc_ValueError, "%s must not be NaN: %R", param, o);
        return -1;
    }
    if (isinf(v) && (v < 0 || !(flags & PRS_PY_INF_OK))) {
        PyErr_Format(PyExc_ValueError, "%s must be finite: %R", param, o);
        return -1;
    }
    if (v < 0 && !(flags & PRS_PY_NEG_OK)) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %R", param,
                     (flags & PRS_PY_ZERO_OK) ? ">= 0" : "> 0", o);
        return -1;
    }
    if (v == 0 && !(flags & (PRS_PY_ZERO_OK | PRS_PY_NEG_OK))) {
        PyErr_Format(PyExc_ValueError, "%s must be > 0, got %R", param, o);
        return -1;
    }
    *out = v;
    return 0;
}

static int int_type_error(PyObject *o, const char *param) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.200s: %R", param, Py_TYPE(o)->tp_name, o);
    return -1;
}

int prs_py_parse_int(PyObject *o, const char *param, int64_t lo, int64_t hi, int64_t *out) {
    if (PyBool_Check(o) || !(PyLong_Check(o) || (PyIndex_Check(o) && !PyFloat_Check(o))))
        return int_type_error(o, param);
    PyObject *idx = PyNumber_Index(o);
    if (!idx) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < lo || v > hi) {
        if (hi == INT64_MAX)
            PyErr_Format(PyExc_ValueError, "%s must be >= %lld, got %R", param, (long long)lo, o);
        else
            PyErr_Format(PyExc_ValueError, "%s must be between %lld and %lld, got %R", param,
                         (long long)lo, (long long)hi, o);
        return -1;
    }
    *out = v;
    return 0;
}

/* A float standing for a count must be integral: 10.0 is 10, 10.5 is refused.
 * Returns a new int object, or NULL with ValueError naming `param`. */
static PyObject *integral_float(PyObject *o, const char *param) {
    double v = PyFloat_AS_DOUBLE(o);
    if (!isfinite(v) || v != floor(v)) {
        PyErr_Format(PyExc_ValueError, "%s must be a whole number, got %R", param, o);
        return NULL;
    }
    return PyLong_FromDouble(v);
}

int prs_py_parse_count(PyObject *o, const char *param, int64_t lo, int64_t hi, int64_t *out) {
    if (!PyFloat_Check(o)) return prs_py_parse_int(o, param, lo, hi, out);
    PyObject *i = integral_float(o, param);
    if (!i) return -1;
    int64_t v;
    int rc = prs_py_parse_int(i, param, lo, hi, &v);
    Py_DECREF(i);
    if (rc < 0) {
        /* name the value the caller gave, not its int form */
        PyErr_Clear();
        if (hi == INT64_MAX)
            PyErr_Format(PyExc_ValueError, "%s must be >= %lld, got %R", param, (long long)lo, o);
        else
            PyErr_Format(PyExc_ValueError, "%s must be between %lld and %lld, got %R", param,
                         (long long)lo, (long long)hi, o);
        return -1;
    }
    *out = v;
    return 0;
}

int prs_py_parse_config_count(PyObject *o, const char *param, int64_t *out) {
    if (PyLong_Check(o) && !PyBool_Check(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        *out = overflow > 0 ? INT64_MAX : overflow < 0 ? INT64_MIN : v;
        return 0;
    }
    if (PyFloat_Check(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (isfinite(d) && d == floor(d) && fabs(d) >= 9.2233720368547758e18) {
            *out = d > 0 ? INT64_MAX : INT64_MIN;
            return 0;
        }
    }
    return prs_py_parse_count(o, param, INT64_MIN, INT64_MAX, out);
}

PyObject *prs_py_config_refused(prs_py_state *st, int status, const prs_config_error *why,
                                const char *param, PyObject *value) {
    if ((status != PRS_EINVAL && status != PRS_ERANGE) || !why->reason) return prs_py_error(st, status, NULL);
    if (!param) param = why->field ? why->field : "configuration";
    if (value) PyErr_Format(PyExc_ValueError, "%s %s, got %R", param, why->reason, value);
    else PyErr_Format(PyExc_ValueError, "%s %s", param, why->reason);
    return NULL;
}

int prs_py_parse_n(PyObject *o, const char *param, int64_t *out) {
    if (PyLong_CheckExact(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow > 0) { *out = INT64_MAX; return 0; }
        if (overflow == 0 && v >= 1) { *out = v; return 0; }
        if (v == -1 && PyErr_Occurred()) return -1;
        PyErr_Format(PyExc_ValueError, "%s must be >= 1, got %R", param, o);
        return -1;
    }
    if (PyFloat_Check(o)) {
        PyObject *i = integral_float(o, param);
        if (!i) return -1;
        int rc = prs_py_parse_n(i, param, out);
        Py_DECREF(i);
        return rc;
    }
    if (PyBool_Check(o) || !(PyLong_Check(o) || PyIndex_Check(o)))
        return int_type_error(o, param);
    PyObject *idx = PyNumber_Index(o);
    if (!idx) return -1;
    int rc = prs_py_parse_n(idx, param, out);
    Py_DECREF(idx);
    return rc;
}

int prs_py_parse_timeout(PyObject *o, const char *param, int64_t *out_ns) {
    if (!o || o == Py_None) { *out_ns = PRS_NEVER; return 0; }
    double s;
    if (prs_py_parse_real(o, param, PRS_PY_ZERO_OK | PRS_PY_INF_OK, &s) < 0) return -1;
    *out_ns = isinf(s) ? PRS_NEVER : prs_seconds_to_ns(s);
    return 0;
}

/* ---- clocks ----------------------------------------------------------- */

int prs_py_clock_init(prs_py_state *st, PyObject *arg, prs_py_clock *c) {
    c->kind = PRS_CLOCK_MONOTONIC;
    c->obj = NULL;
    c->manual_ns = NULL;
    if (!arg || arg == Py_None) return 0;
    if (PyObject_TypeCheck(arg, PRS_PY_TYPE(st, ManualClock))) {
        c->kind = PRS_CLOCK_MANUAL;
        c->manual_ns = &((prs_py_manual_clock *)arg)->now_ns;
    } else if (PyObject_TypeCheck(arg, PRS_PY_TYPE(st, MonotonicClock))) {
        c->kind = PRS_CLOCK_MONOTONIC;
    } else if (PyCallable_Check(arg) && !PyType_Check(arg)) {
        c->kind = PRS_CLOCK_CALLABLE;
    } else {
        PyErr_Format(PyExc_TypeError,
                     "clock must be None, a ManualClock, a MonotonicClock or a zero-argument "
                     "callable returning seconds, not %.200s: %R",
                     Py_TYPE(arg)->tp_name, arg);
        return -1;
    }
    c->obj = Py_NewRef(arg);
    return 0;
}

void prs_py_clock_clear(prs_py_clock *c) {
    c->kind = PRS_CLOCK_MONOTONIC;
    c->manual_ns = NULL;
    Py_CLEAR(c->obj);
}

PyObject *prs_py_clock_object(prs_py_state *st, prs_py_clock *c) {
    if (c->obj) return Py_NewRef(c->obj);
    return PyObject_CallNoArgs((PyObject *)PRS_PY_TYPE(st, MonotonicClock));
}

int prs_py_clock_now_callable(prs_py_clock *c, int64_t *now) {
    PyObject *r = PyObject_CallNoArgs(c->obj);
    if (!r) return -1;
    double s;
    if (PyFloat_CheckExact(r)) {
        s = PyFloat_AS_DOUBLE(r);
    } else if (PyBool_Check(r) || !(PyFloat_Check(r) || PyLong_Check(r))) {
        PyErr_Format(PyExc_TypeError, "clock() must return float seconds, not %.200s: %R",
                     Py_TYPE(r)->tp_name, r);
        Py_DECREF(r);
        return -1;
    } else {
        s = PyFloat_AsDouble(r);
        if (s == -1.0 && PyErr_Occurred()) { Py_DECREF(r); return -1; }
    }
    if (!isfinite(s)) {
        PyErr_Format(PyExc_ValueError, "clock() must return finite seconds, got %R", r);
        Py_DECREF(r);
        return -1;
    }
    Py_DECREF(r);
    *now = prs_seconds_to_ns(s);
    return 0;
}

static void manual_advance_to(_Atomic int64_t *t, int64_t wake) {
    int64_t seen = atomic_load_explicit(t, memory_order_acquire);
    while (seen < wake &&
           !atomic_compare_exchange_weak_explicit(t, &seen, wake, memory_order_acq_rel,
                                                  memory_order_acquire)) {
    }
}

#define PRS_PY_SLICE_NS (50 * PRS_NS_PER_MS)

int prs_py_clock_wait(prs_py_clock *c, int64_t now, int64_t wake, int64_t slice_ns) {
    if (c->kind == PRS_CLOCK_MANUAL) {
        manual_advance_to(c->manual_ns, wake);
        return 0;
    }
    if (slice_ns <= 0 || slice_ns > PRS_PY_SLICE_NS) slice_ns = PRS_PY_SLICE_NS;
    int64_t ns = prs__sat_sub(wake, now);
    if (ns > slice_ns) ns = slice_ns;
    if (ns > 0) {
        Py_BEGIN_ALLOW_THREADS
        prs_sleep_ns(ns);
        Py_END_ALLOW_THREADS
    }
    return PyErr_CheckSignals();
}

int prs_py_clock_sleep(prs_py_clock *c, int64_t ns) {
    if (ns <= 0) return PyErr_CheckSignals();
    int64_t now;
    if (prs_py_clock_now(c, &now) < 0) return -1;
    int64_t wake = prs__sat_add(now, ns);
    if (c->kind == PRS_CLOCK_MANUAL) {
        /* advance by exactly ns (concurrent sleepers each add their own wait), saturating */
        prs_py_manual_clock_add(c->manual_ns, ns);
        return 0;
    }
    for (;;) {
        if (prs_py_clock_wait(c, now, wake, 0) < 0) return -1;
        if (prs_py_clock_now(c, &now) < 0) return -1;
        if (now >= wake) return 0;
    }
}
