/*
 * breaker.c - CircuitBreaker: the binding of csrc/core/breaker.c.
 *
 * call(func, *args, **kwargs) runs entirely here: admit (one atomic load when
 * CLOSED, no clock read unless slow calls are timed), vectorcall func, classify
 * the outcome (exception matching, is_failure(result)), record it with the
 * admission's permit, and notify listeners of any transition - after the core
 * call returned, so no core lock is ever held while Python runs.
 *
 * Classification: an exception that is not an Exception (KeyboardInterrupt,
 * SystemExit, GeneratorExit, asyncio.CancelledError) is never a failure and
 * frees a half-open slot (IGNORED); then ignore_exceptions -> IGNORED,
 * record_exceptions -> FAILURE, anything else -> SUCCESS. A returned value is a
 * failure when is_failure(result) is true.
 *
 * The Python facade (pyresilience/breaker.py) subclasses this type and adds the
 * async forms, the decorator and the context managers on top of _acquire() and
 * _record(), which carry the permit across the await / the with-block.
 */
#include "prs_py.h"

#include <math.h>
#include <structmember.h>

/* Setting a pending exception aside around a call out (PyErr_Fetch is
 * deprecated from 3.12 on). */
#if PY_VERSION_HEX >= 0x030C0000
#define SAVED_EXC PyObject *saved_exc_
#define SAVE_EXC() (saved_exc_ = PyErr_GetRaisedException())
#define RESTORE_EXC() PyErr_SetRaisedException(saved_exc_)
#else
#define SAVED_EXC PyObject *saved_t_, *saved_v_, *saved_tb_
#define SAVE_EXC() PyErr_Fetch(&saved_t_, &saved_v_, &saved_tb_)
#define RESTORE_EXC() PyErr_Restore(saved_t_, saved_v_, saved_tb_)
#endif

/* The current exception's value (new reference, exception cleared), or NULL. */
static PyObject *take_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif

typedef struct breaker_obj {
    PyObject_HEAD
    prs_breaker *core;       /* NULL until __init__ succeeded */
    prs_py_clock clock;
    int timing;              /* slow_call_duration set: every call is timed */
    PyObject *fallback;      /* NULL or a callable */
    PyObject *name;          /* a str or None */
    PyObject *record_exc;    /* tuple of exception classes */
    PyObject *ignore_exc;    /* tuple of exception classes (may be empty) */
    PyObject *is_failure;    /* NULL or a callable */
    PyObject *listeners;     /* tuple of callables; replaced whole, never mutated */
    PyObject *states[3];     /* the CircuitState members, by prs_breaker_state */
    PyObject *msg_open;      /* the CircuitOpenError messages, made once (a float's repr */
    PyObject *msg_half;      /* in each message would cost more than the whole rejection) */
    PyObject *weakreflist;
} breaker_obj;

#define SELF ((breaker_obj *)self)

static int ensure_init(breaker_obj *self) {
    if (self->core) return 0;
    PyErr_Format(PyExc_RuntimeError, "%.200s object is not initialised (call __init__)",
                 Py_TYPE(self)->tp_name);
    return -1;
}

/* ---- life cycle ---------------------------------------------------------------- */

static PyObject *cb_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    return type->tp_alloc(type, 0); /* zeroed: every pointer NULL */
}

static int cb_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(SELF->fallback);
    Py_VISIT(SELF->name);
    Py_VISIT(SELF->record_exc);
    Py_VISIT(SELF->ignore_exc);
    Py_VISIT(SELF->is_failure);
    Py_VISIT(SELF->listeners);
    for (int i = 0; i < 3; i++) Py_VISIT(SELF->states[i]);
    return prs_py_clock_traverse(&SELF->clock, visit, arg);
}

static int cb_clear(PyObject *self) {
    Py_CLEAR(SELF->fallback);
    Py_CLEAR(SELF->name);
    Py_CLEAR(SELF->record_exc);
    Py_CLEAR(SELF->ignore_exc);
    Py_CLEAR(SELF->is_failure);
    Py_CLEAR(SELF->listeners);
    for (int i = 0; i < 3; i++) Py_CLEAR(SELF->states[i]);
    Py_CLEAR(SELF->msg_open);
    Py_CLEAR(SELF->msg_half);
    prs_py_clock_clear(&SELF->clock);
    return 0;
}

static void cb_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (SELF->weakreflist) PyObject_ClearWeakRefs(self);
    cb_clear(self);
    prs_breaker_free(SELF->core);
    SELF->core = NULL;
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ---- __init__ --------------------------------------------------------------------- */

/* An exception class or an iterable of them -> a new tuple. */
static PyObject *parse_exc_tuple(PyObject *o, const char *param) {
    PyObject *t;
    if (PyExceptionClass_Check(o)) return PyTuple_Pack(1, o);
    if (PyUnicode_Check(o) || PyBytes_Check(o) || !(t = PySequence_Tuple(o))) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s must be an exception class or a tuple of exception classes, not "
                     "%.200s: %R",
                     param, Py_TYPE(o)->tp_name, o);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *e = PyTuple_GET_ITEM(t, i);
        if (!PyExceptionClass_Check(e)) {
            PyErr_Format(PyExc_TypeError, "%s must hold exception classes, found %.200s: %R", param,
                         Py_TYPE(e)->tp_name, e);
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

/* None -> 0 (off); else a real number in (0, 1]. */
static int parse_rate(PyObject *o, const char *param, double *out) {
    *out = 0.0;
    if (!o || o == Py_None) return 0;
    double v;
    if (prs_py_parse_real(o, param, 0, &v) < 0) return -1;
    if (v > 1.0) {
        PyErr_Format(PyExc_ValueError, "%s must be in (0, 1] (a fraction, not a percentage), got %R",
                     param, o);
        return -1;
    }
    *out = v;
    return 0;
}

/* None -> (), a callable -> (f,), an iterable of callables -> tuple. */
static PyObject *parse_listeners(PyObject *o) {
    if (!o || o == Py_None) return PyTuple_New(0);
    if (PyCallable_Check(o)) return PyTuple_Pack(1, o);
    PyObject *t = PyUnicode_Check(o) ? NULL : PySequence_Tuple(o);
    if (!t) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "on_state_change must be a callable, a list of callables or None, not "
                     "%.200s: %R",
                     Py_TYPE(o)->tp_name, o);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        if (!PyCallable_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_Format(PyExc_TypeError, "on_state_change must hold callables, found %R",
                         PyTuple_GET_ITEM(t, i));
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

static int optional_callable(PyObject *o, const char *param, PyObject **out) {
    *out = NULL;
    if (!o || o == Py_None) return 0;
    if (!PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a callable or None, not %.200s: %R", param,
                     Py_TYPE(o)->tp_name, o);
        return -1;
    }
    *out = Py_NewRef(o);
    return 0;
}

/* The CircuitState members from pyresilience.breaker (pure Python). */
static int load_states(PyObject *states[3]) {
    static const char *const names[3] = {"CLOSED", "OPEN", "HALF_OPEN"};
    PyObject *mod = PyImport_ImportModule("pyresilience.breaker");
    if (!mod) return -1;
    PyObject *cls = PyObject_GetAttrString(mod, "CircuitState");
    Py_DECREF(mod);
    if (!cls) return -1;
    for (int i = 0; i < 3; i++) {
        states[i] = PyObject_GetAttrString(cls, names[i]);
        if (!states[i]) {
            for (int j = 0; j < i; j++) Py_CLEAR(states[j]);
            Py_DECREF(cls);
            return -1;
        }
    }
    Py_DECREF(cls);
    return 0;
}

static int cb_init(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"failure_threshold", "success_threshold", "timeout_seconds",
                             "fallback", "name", "failure_rate_threshold", "window_type",
                             "window_size", "minimum_calls", "slow_call_duration",
                             "slow_call_rate_threshold", "half_open_max_calls",
                             "record_exceptions", "ignore_exceptions", "is_failure",
                             "on_state_change", "clock", NULL};
    PyObject *ft_o = NULL, *st_o = NULL, *to_o = NULL, *fb_o = NULL, *name_o = NULL,
             *frt_o = NULL, *wt_o = NULL, *ws_o = NULL, *mc_o = NULL, *scd_o = NULL,
             *srt_o = NULL, *hom_o = NULL, *rec_o = NULL, *ign_o = NULL, *isf_o = NULL,
             *osc_o = NULL, *clock_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOOO$OOOOOOOOOOOOO:CircuitBreaker", kwlist,
                                     &ft_o, &st_o, &to_o, &fb_o, &name_o, &frt_o, &wt_o, &ws_o,
                                     &mc_o, &scd_o, &srt_o, &hom_o, &rec_o, &ign_o, &isf_o,
                                     &osc_o, &clock_o))
        return -1;
    if (SELF->core) {
        PyErr_Format(PyExc_RuntimeError, "%.200s is already initialised", Py_TYPE(self)->tp_name);
        return -1;
    }
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return -1;

    prs_breaker_config cfg;
    prs_breaker_config_init(&cfg);
    if (ft_o && prs_py_parse_count(ft_o, "failure_threshold", 1, INT64_MAX, &cfg.failure_threshold) < 0)
        return -1;
    if (st_o && prs_py_parse_count(st_o, "success_threshold", 1, INT64_MAX, &cfg.success_threshold) < 0)
        return -1;
    if (to_o) {
        double s;
        if (prs_py_parse_real(to_o, "timeout_seconds", PRS_PY_ZERO_OK | PRS_PY_INF_OK, &s) < 0)
            return -1;
        cfg.open_timeout_ns = isinf(s) ? PRS_NEVER : prs_seconds_to_ns(s);
    }
    if (name_o && name_o != Py_None && !PyUnicode_Check(name_o)) {
        PyErr_Format(PyExc_TypeError, "name must be a str or None, not %.200s: %R",
                     Py_TYPE(name_o)->tp_name, name_o);
        return -1;
    }
    if (parse_rate(frt_o, "failure_rate_threshold", &cfg.failure_rate_threshold) < 0) return -1;
    if (wt_o) {
        if (!PyUnicode_Check(wt_o)) {
            PyErr_Format(PyExc_TypeError, "window_type must be 'count' or 'time', not %.200s: %R",
                         Py_TYPE(wt_o)->tp_name, wt_o);
            return -1;
        }
        if (PyUnicode_CompareWithASCIIString(wt_o, "count") == 0) {
            cfg.window_type = PRS_BREAKER_WINDOW_COUNT;
        } else if (PyUnicode_CompareWithASCIIString(wt_o, "time") == 0) {
            cfg.window_type = PRS_BREAKER_WINDOW_TIME;
        } else {
            PyErr_Format(PyExc_ValueError, "window_type must be 'count' or 'time', got %R", wt_o);
            return -1;
        }
    }
    if (ws_o) {
        int64_t hi = cfg.window_type == PRS_BREAKER_WINDOW_COUNT ? PRS_BREAKER_MAX_COUNT_WINDOW
                                                                 : PRS_BREAKER_MAX_TIME_WINDOW;
        if (prs_py_parse_count(ws_o, "window_size", 1, hi, &cfg.window_size) < 0) return -1;
    }
    if (mc_o && prs_py_parse_count(mc_o, "minimum_calls", 1, INT64_MAX, &cfg.minimum_calls) < 0)
        return -1;
    if (scd_o && scd_o != Py_None) {
        double s;
        if (prs_py_parse_real(scd_o, "slow_call_duration", 0, &s) < 0) return -1;
        cfg.slow_call_ns = prs_seconds_to_ns(s);
        if (cfg.slow_call_ns < 1) cfg.slow_call_ns = 1;
    }
    if (parse_rate(srt_o, "slow_call_rate_threshold", &cfg.slow_call_rate_threshold) < 0) return -1;
    if (cfg.slow_call_rate_threshold > 0.0 && cfg.slow_call_ns == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "slow_call_rate_threshold needs slow_call_duration (the duration from "
                        "which a call is slow)");
        return -1;
    }
    if (hom_o && hom_o != Py_None &&
        prs_py_parse_count(hom_o, "half_open_max_calls", 1, INT64_MAX, &cfg.half_open_max_calls) < 0)
        return -1;

    PyObject *fallback = NULL, *is_failure = NULL, *rec = NULL, *ign = NULL, *listeners = NULL;
    PyObject *states[3] = {NULL, NULL, NULL};
    PyObject *msg_open = NULL, *msg_half = NULL;
    prs_breaker *core = NULL;
    prs_py_clock clock = {PRS_CLOCK_MONOTONIC, NULL, NULL};
    if (optional_callable(fb_o, "fallback", &fallback) < 0) goto fail;
    if (optional_callable(isf_o, "is_failure", &is_failure) < 0) goto fail;
    rec = rec_o ? parse_exc_tuple(rec_o, "record_exceptions") : PyTuple_Pack(1, PyExc_Exception);
    if (!rec) goto fail;
    ign = ign_o ? parse_exc_tuple(ign_o, "ignore_exceptions") : PyTuple_New(0);
    if (!ign) goto fail;
    if (!(listeners = parse_listeners(osc_o))) goto fail;
    if (prs_py_clock_init(st, clock_o, &clock) < 0) goto fail;
    if (load_states(states) < 0) goto fail;
    if (name_o && name_o != Py_None) {
        msg_open = PyUnicode_FromFormat("circuit breaker %R is open", name_o);
        msg_half = PyUnicode_FromFormat(
            "circuit breaker %R is half-open and its trial calls are all taken", name_o);
    } else {
        msg_open = PyUnicode_FromString("circuit breaker is open");
        msg_half = PyUnicode_FromString(
            "circuit breaker is half-open and its trial calls are all taken");
    }
    if (!msg_open || !msg_half) goto fail;
    int rc = prs_breaker_new(&cfg, &core);
    if (rc) {
        prs_py_error(st, rc, "invalid CircuitBreaker configuration");
        goto fail;
    }
    SELF->fallback = fallback;
    SELF->is_failure = is_failure;
    SELF->record_exc = rec;
    SELF->ignore_exc = ign;
    SELF->listeners = listeners;
    SELF->name = Py_NewRef(name_o ? name_o : Py_None);
    for (int i = 0; i < 3; i++) SELF->states[i] = states[i];
    SELF->msg_open = msg_open;
    SELF->msg_half = msg_half;
    SELF->clock = clock;
    SELF->timing = cfg.slow_call_ns > 0;
    SELF->core = core; /* last: marks the object initialised */
    return 0;
fail:
    Py_XDECREF(fallback);
    Py_XDECREF(is_failure);
    Py_XDECREF(rec);
    Py_XDECREF(ign);
    Py_XDECREF(listeners);
    for (int i = 0; i < 3; i++) Py_XDECREF(states[i]);
    Py_XDECREF(msg_open);
    Py_XDECREF(msg_half);
    prs_py_clock_clear(&clock);
    return -1;
}

/* ---- listeners --------------------------------------------------------------------- */

/* Reports a listener's exception (the current one) as a RuntimeWarning; when
 * warnings are errors, through sys.unraisablehook. Clears it either way. */
static void report_listener_error(PyObject *listener) {
    PyObject *v = take_exception();
    if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "circuit breaker listener %R raised %R (ignored)", listener,
                         v ? v : Py_None) < 0)
        PyErr_WriteUnraisable(listener);
    Py_XDECREF(v);
}

/* Calls every listener as listener(breaker, old_state, new_state). No core lock
 * is held; a pending exception (the protected call's) is kept as it was. */
static void fire(breaker_obj *self, const prs_breaker_transition *tr) {
    if (!tr->happened) return;
    PyObject *ls;
    Py_BEGIN_CRITICAL_SECTION(self);
    ls = Py_XNewRef(self->listeners);
    Py_END_CRITICAL_SECTION();
    if (!ls) return;
    if (PyTuple_GET_SIZE(ls) == 0 || !self->states[0]) {
        Py_DECREF(ls);
        return;
    }
    SAVED_EXC;
    SAVE_EXC();
    PyObject *args[3] = {(PyObject *)self, self->states[tr->from], self->states[tr->to]};
    Py_INCREF(args[1]);
    Py_INCREF(args[2]);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ls); i++) {
        PyObject *l = PyTuple_GET_ITEM(ls, i);
        PyObject *r = PyObject_Vectorcall(l, args, 3, NULL);
        if (r) Py_DECREF(r);
        else report_listener_error(l);
    }
    Py_DECREF(args[1]);
    Py_DECREF(args[2]);
    Py_DECREF(ls);
    RESTORE_EXC();
}

/* ---- rejection ------------------------------------------------------------------------ */

/* A fresh CircuitOpenError instance (not raised), or NULL with an exception. */
static PyObject *open_error(breaker_obj *self, const prs_breaker_decision *d) {
    prs_py_state *st = prs_py_state_of((PyObject *)self);
    if (!st) return NULL;
    PyObject *retry = PyFloat_FromDouble(prs_py_ns_to_s(d->retry_after_ns));
    if (!retry) return NULL;
    int half = prs_breaker_get_state(self->core) == PRS_BREAKER_HALF_OPEN;
    PyObject *args[3] = {half ? self->msg_half : self->msg_open, retry,
                         self->name ? self->name : Py_None};
    PyObject *exc = PyObject_Vectorcall(PRS_PY_EXC(st, CircuitOpenError), args, 3, NULL);
    Py_DECREF(retry);
    return exc;
}

static PyObject *raise_open(breaker_obj *self, const prs_breaker_decision *d) {
    PyObject *exc = open_error(self, d);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ---- admission and recording ------------------------------------------------------------ */

/* 1 admitted (permit, start set), 0 rejected (d set), -1 error. Listeners of an
 * OPEN -> HALF_OPEN transition are called before returning. */
static int admit(breaker_obj *self, prs_breaker_permit *permit, int64_t *start,
                 prs_breaker_decision *d) {
    if (!self->timing && prs_breaker_try_acquire_closed(self->core, permit)) {
        *start = 0;
        return 1;
    }
    int64_t now;
    if (prs_py_clock_now(&self->clock, &now) < 0) return -1;
    prs_breaker_acquire(self->core, now, d);
    fire(self, &d->transition);
    if (!d->allowed) return 0;
    *permit = d->permit;
    *start = now;
    return 1;
}

/* The outcome for the current exception type `t`. */
static prs_breaker_outcome classify(breaker_obj *self, PyObject *t) {
    if (!PyErr_GivenExceptionMatches(t, PyExc_Exception)) return PRS_BREAKER_IGNORED;
    if (PyTuple_GET_SIZE(self->ignore_exc) && PyErr_GivenExceptionMatches(t, self->ignore_exc))
        return PRS_BREAKER_IGNORED;
    if (PyErr_GivenExceptionMatches(t, self->record_exc)) return PRS_BREAKER_FAILURE;
    return PRS_BREAKER_SUCCESS;
}

/* The outcome for a returned value: FAILURE when is_failure(result) is true.
 * -1 with an exception when is_failure raised. */
static int classify_result(breaker_obj *self, PyObject *result, prs_breaker_outcome *out) {
    *out = PRS_BREAKER_SUCCESS;
    if (!self->is_failure) return 0;
    PyObject *r = PyObject_CallOneArg(self->is_failure, result);
    if (!r) return -1;
    int bad = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (bad < 0) return -1;
    if (bad) *out = PRS_BREAKER_FAILURE;
    return 0;
}

/* Reads the clock with any pending exception (the protected call's) set aside.
 * 0; -1 when the clock failed with nothing pending (its exception is set); -2
 * when it failed with an exception pending (the clock's error goes to
 * sys.unraisablehook, the pending exception is kept). */
static int read_clock_keeping(breaker_obj *self, int64_t *now) {
    if (self->clock.kind != PRS_CLOCK_CALLABLE || !PyErr_Occurred())
        return prs_py_clock_now(&self->clock, now);
    SAVED_EXC;
    SAVE_EXC();
    int rc = prs_py_clock_now(&self->clock, now);
    if (rc < 0) PyErr_WriteUnraisable(self->clock.obj);
    RESTORE_EXC();
    return rc < 0 ? -2 : 0;
}

/* Records `outcome` for `permit`, timing it from `start` when slow calls are
 * measured, and notifies listeners. A pending exception is left as it is.
 * Returns 0, or -1 with an exception (the clock failed and nothing was pending;
 * the outcome was still recorded, so a half-open slot is never lost). */
static int finish(breaker_obj *self, prs_breaker_permit permit, int64_t start,
                  prs_breaker_outcome outcome) {
    int64_t now = INT64_MIN, duration = 0;
    int rc = 0;
    if (self->timing || prs_breaker_outcome_needs_time(self->core, outcome)) {
        rc = read_clock_keeping(self, &now);
        if (rc < 0) {
            now = INT64_MIN; /* taken as the latest time seen */
            outcome = PRS_BREAKER_IGNORED;
        } else if (self->timing && start != INT64_MIN) {
            duration = now > start ? now - start : 0;
        }
    }
    prs_breaker_transition tr;
    prs_breaker_record(self->core, now, permit, outcome, duration, &tr);
    fire(self, &tr);
    return rc == -1 ? -1 : 0;
}

/* ---- call() ---------------------------------------------------------------------------- */

/* Runs func(*args) through the breaker; `nargsf` may carry
 * PY_VECTORCALL_ARGUMENTS_OFFSET, passed on to func. */
static PyObject *run_protected(breaker_obj *self, PyObject *func, PyObject *const *args,
                               size_t nargsf, PyObject *kwnames) {
    prs_breaker_permit permit;
    prs_breaker_decision d;
    int64_t start;
    int a = admit(self, &permit, &start, &d);
    if (a < 0) return NULL;
    if (a == 0) {
        if (self->fallback) return PyObject_CallNoArgs(self->fallback);
        return raise_open(self, &d);
    }
    PyObject *res = PyObject_Vectorcall(func, args, nargsf, kwnames);
    prs_breaker_outcome outcome;
    if (res) {
        if (classify_result(self, res, &outcome) < 0) {
            Py_CLEAR(res);
            outcome = PRS_BREAKER_IGNORED;
        }
    } else {
        outcome = classify(self, PyErr_Occurred());
    }
    if (finish(self, permit, start, outcome) < 0) Py_CLEAR(res);
    return res;
}

static PyObject *cb_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call() missing required argument 'func' (pos 1)");
        return NULL;
    }
    if (ensure_init(SELF) < 0) return NULL;
    return run_protected(SELF, args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

/* ---- the decorated function: a C callable, so @breaker adds no Python frame ---- */

typedef struct wrapped_obj {
    PyObject_HEAD
    breaker_obj *breaker;   /* strong */
    PyObject *func;         /* strong */
    PyObject *dict;         /* __dict__: functools.update_wrapper stores __name__ etc. here */
    PyObject *weakreflist;
    vectorcallfunc vectorcall;
} wrapped_obj;

#define WSELF ((wrapped_obj *)self)

static PyObject *wrapped_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    return run_protected(WSELF->breaker, WSELF->func, args, nargsf, kwnames);
}

static int wrapped_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(WSELF->breaker);
    Py_VISIT(WSELF->func);
    Py_VISIT(WSELF->dict);
    return 0;
}

static int wrapped_clear(PyObject *self) {
    Py_CLEAR(WSELF->breaker);
    Py_CLEAR(WSELF->func);
    Py_CLEAR(WSELF->dict);
    return 0;
}

static void wrapped_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (WSELF->weakreflist) PyObject_ClearWeakRefs(self);
    wrapped_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* A plain function's binding: accessed through an instance, a bound method. */
static PyObject *wrapped_descr_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *wrapped_repr(PyObject *self) {
    if (!WSELF->func) return PyUnicode_FromString("<CircuitBreaker-protected function>");
    return PyUnicode_FromFormat("<CircuitBreaker-protected %R>", WSELF->func);
}

static PyObject *wrapped_get_breaker(PyObject *self, void *c) {
    return Py_NewRef(WSELF->breaker ? (PyObject *)WSELF->breaker : Py_None);
}

static PyGetSetDef wrapped_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"breaker", wrapped_get_breaker, NULL, "The CircuitBreaker that protects this function.", NULL},
    {NULL},
};

static PyMemberDef wrapped_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(wrapped_obj, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(wrapped_obj, weakreflist), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(wrapped_obj, vectorcall), READONLY, NULL},
    {NULL},
};

static PyType_Slot wrapped_slots[] = {
    {Py_tp_doc, "A function protected by a CircuitBreaker (made by using the breaker as a "
                "decorator): each call goes through breaker.call(func, ...)."},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, wrapped_descr_get},
    {Py_tp_repr, wrapped_repr},
    {Py_tp_dealloc, wrapped_dealloc},
    {Py_tp_traverse, wrapped_traverse},
    {Py_tp_clear, wrapped_clear},
    {Py_tp_getset, wrapped_getset},
    {Py_tp_members, wrapped_members},
    {0, NULL},
};

static PyType_Spec wrapped_spec = {
    "pyresilience._core.BreakerFunction",
    sizeof(wrapped_obj),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_DISALLOW_INSTANTIATION,
    wrapped_slots,
};

/* _wrap(func) -> a BreakerFunction calling func through this breaker. */
static PyObject *cb_wrap(PyObject *self, PyObject *func) {
    if (ensure_init(SELF) < 0) return NULL;
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError, "a CircuitBreaker decorates callables, not %.200s: %R",
                     Py_TYPE(func)->tp_name, func);
        return NULL;
    }
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    PyTypeObject *tp = PRS_PY_TYPE(st, BreakerFunction);
    wrapped_obj *w = (wrapped_obj *)tp->tp_alloc(tp, 0);
    if (!w) return NULL;
    w->breaker = (breaker_obj *)Py_NewRef(self);
    w->func = Py_NewRef(func);
    w->vectorcall = wrapped_vectorcall;
    return (PyObject *)w;
}

/* _acquire() -> (permit, start_ns) when admitted, else a fresh CircuitOpenError
 * instance (not raised): the facade decides between fallback() and raise. */
static PyObject *cb_acquire_token(PyObject *self, PyObject *unused) {
    if (ensure_init(SELF) < 0) return NULL;
    prs_breaker_permit permit;
    prs_breaker_decision d;
    int64_t start;
    int a = admit(SELF, &permit, &start, &d);
    if (a < 0) return NULL;
    if (a == 0) return open_error(SELF, &d);
    return Py_BuildValue("(KL)", (unsigned long long)permit, (long long)start);
}

/* _record(token, exc=None, result=None): the outcome of a call admitted by
 * _acquire() (token None: without a permit). */
static PyObject *cb_record_token(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    static const char *const names[] = {"token", "exc", "result", NULL};
    PyObject *v[3] = {NULL, NULL, NULL};
    if (!kwnames && nargs >= 1 && nargs <= 3) { /* the facade's calls: positional */
        for (Py_ssize_t i = 0; i < nargs; i++) v[i] = args[i];
    } else if (prs_py_unpack("_record", args, nargs, kwnames, names, 3, v) < 0) {
        return NULL;
    }
    if (ensure_init(SELF) < 0) return NULL;
    PyObject *token = v[0], *exc = v[1], *result = v[2];
    if (!token) {
        PyErr_SetString(PyExc_TypeError, "_record() missing required argument 'token'");
        return NULL;
    }
    prs_breaker_permit permit = PRS_BREAKER_NO_PERMIT;
    long long start = INT64_MIN;
    if (token != Py_None) {
        if (!PyTuple_CheckExact(token) || PyTuple_GET_SIZE(token) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(token, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(token, 1))) {
            PyErr_Format(PyExc_TypeError, "_record() token must come from _acquire(), got %R", token);
            return NULL;
        }
        permit = (prs_breaker_permit)PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(token, 0));
        start = PyLong_AsLongLong(PyTuple_GET_ITEM(token, 1));
        if (PyErr_Occurred()) return NULL;
    }
    prs_breaker_outcome outcome;
    int failed = 0;
    if (exc && exc != Py_None) {
        if (!PyExceptionInstance_Check(exc)) {
            PyErr_Format(PyExc_TypeError, "_record() exc must be an exception or None, got %R", exc);
            return NULL;
        }
        outcome = classify(SELF, (PyObject *)Py_TYPE(exc));
    } else if (classify_result(SELF, result ? result : Py_None, &outcome) < 0) {
        outcome = PRS_BREAKER_IGNORED;
        failed = 1;
    }
    if (finish(SELF, permit, (int64_t)start, outcome) < 0 || failed) return NULL;
    Py_RETURN_NONE;
}

/* ---- low level ----------------------------------------------------------------------------- */

static PyObject *cb_allow_request(PyObject *self, PyObject *unused) {
    if (ensure_init(SELF) < 0) return NULL;
    prs_breaker_permit permit;
    if (prs_breaker_try_acquire_closed(SELF->core, &permit)) Py_RETURN_TRUE;
    int64_t now;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    prs_breaker_decision d;
    /* no permit to hand out: record_*() will report without one, and free the
     * untracked trial slot taken here (a stray record_*() frees none) */
    prs_breaker_acquire_untracked(SELF->core, now, &d);
    fire(SELF, &d.transition);
    if (PyErr_Occurred()) return NULL;
    return PyBool_FromLong(d.allowed);
}

static PyObject *record_manual(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames, const char *fname, prs_breaker_outcome outcome) {
    static const char *const names[] = {"duration", NULL};
    PyObject *v[1];
    if (prs_py_unpack(fname, args, nargs, kwnames, names, 1, v) < 0) return NULL;
    if (ensure_init(SELF) < 0) return NULL;
    int64_t duration = 0, now = INT64_MIN;
    if (v[0]) {
        double s;
        if (prs_py_parse_real(v[0], "duration", PRS_PY_ZERO_OK | PRS_PY_INF_OK, &s) < 0)
            return NULL;
        duration = isinf(s) ? PRS_NEVER : prs_seconds_to_ns(s);
    }
    if (prs_breaker_outcome_needs_time(SELF->core, outcome) &&
        prs_py_clock_now(&SELF->clock, &now) < 0)
        return NULL;
    prs_breaker_transition tr;
    prs_breaker_record(SELF->core, now, PRS_BREAKER_NO_PERMIT, outcome, duration, &tr);
    fire(SELF, &tr);
    Py_RETURN_NONE;
}

static PyObject *cb_record_success(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
    return record_manual(self, args, nargs, kwnames, "record_success", PRS_BREAKER_SUCCESS);
}
static PyObject *cb_record_failure(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
    return record_manual(self, args, nargs, kwnames, "record_failure", PRS_BREAKER_FAILURE);
}
static PyObject *cb_record_ignored(PyObject *self, PyObject *unused) {
    if (ensure_init(SELF) < 0) return NULL;
    prs_breaker_transition tr;
    prs_breaker_record(SELF->core, INT64_MIN, PRS_BREAKER_NO_PERMIT, PRS_BREAKER_IGNORED, 0, &tr);
    fire(SELF, &tr);
    Py_RETURN_NONE;
}

/* ---- manual states ------------------------------------------------------------------------- */

typedef void (*manual_fn)(prs_breaker *, int64_t, prs_breaker_transition *);

static PyObject *manual(PyObject *self, manual_fn fn) {
    if (ensure_init(SELF) < 0) return NULL;
    int64_t now;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    prs_breaker_transition tr;
    fn(SELF->core, now, &tr);
    fire(SELF, &tr);
    Py_RETURN_NONE;
}

static PyObject *cb_open(PyObject *self, PyObject *u) { return manual(self, prs_breaker_open); }
static PyObject *cb_close(PyObject *self, PyObject *u) { return manual(self, prs_breaker_close); }
static PyObject *cb_half_open(PyObject *self, PyObject *u) { return manual(self, prs_breaker_half_open); }
static PyObject *cb_reset(PyObject *self, PyObject *u) { return manual(self, prs_breaker_reset); }
static PyObject *cb_force_open(PyObject *self, PyObject *u) { return manual(self, prs_breaker_force_open); }
static PyObject *cb_disable(PyObject *self, PyObject *u) { return manual(self, prs_breaker_disable); }

/* ---- listeners -------------------------------------------------------------------------------- */

static PyObject *cb_add_listener(PyObject *self, PyObject *fn) {
    if (ensure_init(SELF) < 0) return NULL;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "listener must be callable, not %.200s: %R",
                     Py_TYPE(fn)->tp_name, fn);
        return NULL;
    }
    int rc = 0;
    Py_BEGIN_CRITICAL_SECTION(self);
    Py_ssize_t n = PyTuple_GET_SIZE(SELF->listeners);
    PyObject *t = PyTuple_New(n + 1);
    if (t) {
        for (Py_ssize_t i = 0; i < n; i++)
            PyTuple_SET_ITEM(t, i, Py_NewRef(PyTuple_GET_ITEM(SELF->listeners, i)));
        PyTuple_SET_ITEM(t, n, Py_NewRef(fn));
        Py_SETREF(SELF->listeners, t);
    } else {
        rc = -1;
    }
    Py_END_CRITICAL_SECTION();
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *cb_remove_listener(PyObject *self, PyObject *fn) {
    if (ensure_init(SELF) < 0) return NULL;
    int rc = 0, found = 0;
    Py_BEGIN_CRITICAL_SECTION(self);
    PyObject *old = Py_NewRef(SELF->listeners);
    Py_ssize_t n = PyTuple_GET_SIZE(old), at = -1;
    for (Py_ssize_t i = n - 1; i >= 0 && at < 0; i--) {
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(old, i), fn, Py_EQ);
        if (eq < 0) { rc = -1; break; }
        if (eq) at = i;
    }
    if (rc == 0 && at >= 0) {
        PyObject *t = PyTuple_New(n - 1);
        if (!t) {
            rc = -1;
        } else {
            for (Py_ssize_t i = 0, j = 0; i < n; i++)
                if (i != at) PyTuple_SET_ITEM(t, j++, Py_NewRef(PyTuple_GET_ITEM(old, i)));
            Py_SETREF(SELF->listeners, t);
            found = 1;
        }
    }
    Py_DECREF(old);
    Py_END_CRITICAL_SECTION();
    if (rc < 0) return NULL;
    if (!found) {
        PyErr_Format(PyExc_ValueError, "%R is not a listener of this breaker", fn);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- properties ------------------------------------------------------------------------------- */

static PyObject *cb_get_state(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    return Py_NewRef(SELF->states[prs_breaker_get_state(SELF->core)]);
}

static PyObject *cb_get_mode(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    static const char *const modes[] = {"normal", "forced_open", "disabled"};
    return PyUnicode_FromString(modes[prs_breaker_get_mode(SELF->core)]);
}

static PyObject *cb_get_metrics(PyObject *self, void *c) {
    if (ensure_init(SELF) < 0) return NULL;
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    int64_t now;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    prs_breaker_metrics m;
    prs_breaker_get_metrics(SELF->core, now, &m);
    static const char *const modes[] = {"normal", "forced_open", "disabled"};
    PyObject *o = PyStructSequence_New(PRS_PY_TYPE(st, CircuitBreakerMetrics));
    if (!o) return NULL;
    PyObject *items[] = {
        Py_NewRef(SELF->states[m.state]),
        PyLong_FromLongLong(m.consecutive_failures),
        PyLong_FromLongLong(m.consecutive_successes),
        PyLong_FromLongLong(m.calls),
        PyLong_FromLongLong(m.failures),
        PyLong_FromLongLong(m.slow_calls),
        PyLong_FromLongLong(m.rejected),
        PyLong_FromLongLong(m.ignored),
        PyFloat_FromDouble(m.failure_rate),
        PyFloat_FromDouble(m.slow_call_rate),
        PyFloat_FromDouble(prs_py_ns_to_s(m.retry_after_ns)),
        PyLong_FromLongLong(m.window_calls),
        PyLong_FromLongLong(m.window_failures),
        PyLong_FromLongLong(m.window_slow_calls),
        PyLong_FromLongLong(m.half_open_in_flight),
        PyUnicode_FromString(modes[m.mode]),
    };
    int bad = 0;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)(sizeof items / sizeof items[0]); i++) {
        if (!items[i]) bad = 1;
        PyStructSequence_SetItem(o, i, items[i]); /* steals; NULL left as NULL */
    }
    if (bad) {
        Py_DECREF(o);
        return NULL;
    }
    return o;
}

static PyObject *cb_get_config_i64(PyObject *self, void *which) {
    if (ensure_init(SELF) < 0) return NULL;
    prs_breaker_config cfg;
    prs_breaker_get_config(SELF->core, &cfg);
    switch ((int)(intptr_t)which) {
    case 0: return PyLong_FromLongLong(cfg.failure_threshold);
    case 1: return PyLong_FromLongLong(cfg.success_threshold);
    case 2: return PyLong_FromLongLong(cfg.half_open_max_calls ? cfg.half_open_max_calls
                                                              : cfg.success_threshold);
    case 3: return PyLong_FromLongLong(cfg.window_size);
    case 4: return PyLong_FromLongLong(cfg.minimum_calls);
    case 5: return PyFloat_FromDouble(prs_py_ns_to_s(cfg.open_timeout_ns));
    case 6:
        if (cfg.failure_rate_threshold == 0.0) Py_RETURN_NONE;
        return PyFloat_FromDouble(cfg.failure_rate_threshold);
    case 7:
        if (cfg.slow_call_rate_threshold == 0.0) Py_RETURN_NONE;
        return PyFloat_FromDouble(cfg.slow_call_rate_threshold);
    case 8:
        if (cfg.slow_call_ns == 0) Py_RETURN_NONE;
        return PyFloat_FromDouble((double)cfg.slow_call_ns / 1e9);
    case 9:
        return PyUnicode_FromString(cfg.window_type == PRS_BREAKER_WINDOW_TIME ? "time" : "count");
    }
    Py_RETURN_NONE;
}

static PyObject *cb_get_obj(PyObject *self, void *which) {
    if (ensure_init(SELF) < 0) return NULL;
    PyObject *o = NULL;
    switch ((int)(intptr_t)which) {
    case 0: o = SELF->name; break;
    case 1: o = SELF->fallback; break;
    case 2: o = SELF->record_exc; break;
    case 3: o = SELF->ignore_exc; break;
    case 4: o = SELF->is_failure; break;
    case 5: {
        Py_BEGIN_CRITICAL_SECTION(self);
        o = Py_NewRef(SELF->listeners);
        Py_END_CRITICAL_SECTION();
        return o;
    }
    case 6: return prs_py_clock_object(prs_py_state_of(self), &SELF->clock);
    }
    return Py_NewRef(o ? o : Py_None);
}

#define I64(name, i, doc) {name, cb_get_config_i64, NULL, doc, (void *)(intptr_t)(i)}
#define OBJ(name, i, doc) {name, cb_get_obj, NULL, doc, (void *)(intptr_t)(i)}

static PyGetSetDef cb_getset[] = {
    {"state", cb_get_state, NULL,
     "The current CircuitState (OPEN stays OPEN past its timeout until the next call).", NULL},
    {"mode", cb_get_mode, NULL,
     "'normal', 'forced_open' (after force_open()) or 'disabled' (after disable()).", NULL},
    {"metrics", cb_get_metrics, NULL, "A CircuitBreakerMetrics snapshot taken now.", NULL},
    I64("failure_threshold", 0, "Consecutive failures that open the circuit (consecutive mode)."),
    I64("success_threshold", 1, "Half-open successes that close the circuit."),
    I64("half_open_max_calls", 2, "Trial calls admitted at once while half-open."),
    I64("window_size", 3, "Outcomes (count window) or seconds (time window) in the window."),
    I64("minimum_calls", 4, "Outcomes the window needs before a rate can open the circuit."),
    I64("timeout_seconds", 5, "Seconds the circuit stays open before a trial call (inf: until a manual call)."),
    I64("failure_rate_threshold", 6, "The failure rate that opens the circuit (None: consecutive mode)."),
    I64("slow_call_rate_threshold", 7, "The slow-call rate that opens the circuit (None: off)."),
    I64("slow_call_duration", 8, "Seconds from which a call is slow (None: never)."),
    I64("window_type", 9, "'count' or 'time'."),
    OBJ("name", 0, "The breaker's name (or None)."),
    OBJ("fallback", 1, "Called with no arguments instead of raising when a call is rejected."),
    OBJ("record_exceptions", 2, "Exception classes that count as failures."),
    OBJ("ignore_exceptions", 3, "Exception classes that count as neither success nor failure."),
    OBJ("is_failure", 4, "is_failure(result) -> bool marks returned values as failures (or None)."),
    OBJ("listeners", 5, "The on_state_change listeners (a tuple)."),
    OBJ("clock", 6, "The clock this breaker reads."),
    {NULL},
};

static PyMethodDef cb_methods[] = {
    {"call", (PyCFunction)(void (*)(void))cb_call, METH_FASTCALL | METH_KEYWORDS,
     "call($self, func, /, *args, **kwargs)\n--\n\n"
     "Call func(*args, **kwargs) through the breaker and return its result. When the\n"
     "circuit rejects the call: return fallback() if a fallback was given, else raise a\n"
     "fresh CircuitOpenError carrying retry_after and name. Exceptions from func\n"
     "propagate; they count as failures when they match record_exceptions (and not\n"
     "ignore_exceptions)."},
    {"allow_request", cb_allow_request, METH_NOARGS,
     "allow_request($self, /)\n--\n\n"
     "True when a call may run now (taking a half-open trial slot), else False\n"
     "(counted as rejected). Report the outcome with record_success/record_failure/\n"
     "record_ignored: in HALF_OPEN, that outcome frees the slot taken here (matched\n"
     "by count). A record_*() while no allow_request() trial is outstanding is a\n"
     "stray there: counted in the totals, it neither frees another caller's trial\n"
     "slot nor moves the state."},
    {"record_success", (PyCFunction)(void (*)(void))cb_record_success, METH_FASTCALL | METH_KEYWORDS,
     "record_success($self, /, duration=0.0)\n--\n\n"
     "Record a successful call that lasted `duration` seconds (slow-call detection)."},
    {"record_failure", (PyCFunction)(void (*)(void))cb_record_failure, METH_FASTCALL | METH_KEYWORDS,
     "record_failure($self, /, duration=0.0)\n--\n\n"
     "Record a failed call that lasted `duration` seconds."},
    {"record_ignored", cb_record_ignored, METH_NOARGS,
     "record_ignored($self, /)\n--\n\n"
     "Record a call that counts as neither (frees the half-open trial slot that\n"
     "allow_request() took)."},
    {"open", cb_open, METH_NOARGS,
     "open($self, /)\n--\n\nOpen the circuit now; it half-opens after timeout_seconds as usual."},
    {"close", cb_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose the circuit (window and consecutive counts cleared; totals kept)."},
    {"half_open", cb_half_open, METH_NOARGS,
     "half_open($self, /)\n--\n\nMove to HALF_OPEN: the next calls are trial calls."},
    {"reset", cb_reset, METH_NOARGS,
     "reset($self, /)\n--\n\nBack to CLOSED with every counter cleared (also ends force_open/disable)."},
    {"force_open", cb_force_open, METH_NOARGS,
     "force_open($self, /)\n--\n\nOpen the circuit until reset() or another manual state call."},
    {"disable", cb_disable, METH_NOARGS,
     "disable($self, /)\n--\n\nAllow every call and never trip (outcomes are still counted) until\n"
     "reset() or another manual state call."},
    {"add_listener", cb_add_listener, METH_O,
     "add_listener($self, listener, /)\n--\n\n"
     "Call listener(breaker, old_state, new_state) after every transition."},
    {"remove_listener", cb_remove_listener, METH_O,
     "remove_listener($self, listener, /)\n--\n\nRemove a listener (ValueError if absent)."},
    {"_wrap", cb_wrap, METH_O,
     "_wrap($self, func, /)\n--\n\n"
     "Internal: a C callable running func through this breaker (the sync decorator)."},
    {"_acquire", cb_acquire_token, METH_NOARGS,
     "_acquire($self, /)\n--\n\n"
     "Internal: (permit, start_ns) when admitted, else a CircuitOpenError instance."},
    {"_record", (PyCFunction)(void (*)(void))cb_record_token, METH_FASTCALL | METH_KEYWORDS,
     "_record($self, /, token, exc=None, result=None)\n--\n\n"
     "Internal: record the outcome of a call admitted by _acquire()."},
    {NULL},
};

static PyMemberDef cb_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(breaker_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot cb_slots[] = {
    {Py_tp_doc,
     "CircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0, "
     "fallback=None, *, name=None, failure_rate_threshold=None, window_type='count', "
     "window_size=100, minimum_calls=10, slow_call_duration=None, "
     "slow_call_rate_threshold=None, half_open_max_calls=None, record_exceptions=..., "
     "ignore_exceptions=(), is_failure=None, on_state_change=None, clock=None)\n--\n\n"
     "The C core of pyresilience.CircuitBreaker (use that class)."},
    {Py_tp_new, cb_new},
    {Py_tp_init, cb_init},
    {Py_tp_dealloc, cb_dealloc},
    {Py_tp_traverse, cb_traverse},
    {Py_tp_clear, cb_clear},
    {Py_tp_methods, cb_methods},
    {Py_tp_getset, cb_getset},
    {Py_tp_members, cb_members},
    {0, NULL},
};

static PyType_Spec cb_spec = {
    "pyresilience._core.CircuitBreaker",
    sizeof(breaker_obj),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    cb_slots,
};

/* ---- the metrics snapshot type ---------------------------------------------------------------- */

static PyStructSequence_Field metrics_fields[] = {
    {"state", "the CircuitState"},
    {"consecutive_failures", "failures since the last success (CLOSED)"},
    {"consecutive_successes", "successes since the last failure; trial successes in HALF_OPEN"},
    {"calls", "successes + failures recorded (since creation or reset())"},
    {"failures", "failures recorded"},
    {"slow_calls", "slow calls recorded"},
    {"rejected", "calls rejected"},
    {"ignored", "outcomes that counted as neither"},
    {"failure_rate", "failures / calls over the current window (0.0 when empty)"},
    {"slow_call_rate", "slow calls / calls over the current window"},
    {"retry_after", "seconds until a trial call is allowed when OPEN (inf when forced), else 0.0"},
    {"window_calls", "outcomes in the current window"},
    {"window_failures", "failures in the current window"},
    {"window_slow_calls", "slow calls in the current window"},
    {"half_open_in_flight", "trial calls running"},
    {"mode", "'normal', 'forced_open' or 'disabled'"},
    {NULL, NULL},
};

/* CircuitBreakerMetrics(state=..., ...): the class name alone, as every
 * public repr (the default struct sequence repr shows the dotted path). */
static PyObject *metrics_repr(PyObject *self) {
    PyObject *parts = PyList_New(0);
    if (!parts) return NULL;
    for (Py_ssize_t i = 0; metrics_fields[i].name; i++) {
        PyObject *f = PyUnicode_FromFormat("%s=%R", metrics_fields[i].name,
                                           PyStructSequence_GetItem(self, i));
        if (!f || PyList_Append(parts, f) < 0) {
            Py_XDECREF(f);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(f);
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *body = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (!body) return NULL;
    PyObject *r = PyUnicode_FromFormat("CircuitBreakerMetrics(%U)", body);
    Py_DECREF(body);
    return r;
}

static PyStructSequence_Desc metrics_desc = {
    /* public under pyresilience.breaker (which re-exports it), not the
     * private _core: what pickle and introspection see */
    "pyresilience.breaker.CircuitBreakerMetrics",
    "CircuitBreakerMetrics: a snapshot of a CircuitBreaker's state and counters.",
    metrics_fields,
    16,
};

int prs_py_register_breaker(PyObject *m, prs_py_state *st) {
    if (prs_py_add_type(m, st, PRS_SLOT_CircuitBreaker, &cb_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_BreakerFunction, &wrapped_spec, NULL) < 0) return -1;
    PyTypeObject *mt = PyStructSequence_NewType(&metrics_desc);
    if (!mt) return -1;
    /* public under pyresilience.breaker (which re-exports it), not the private
     * _core: what pickle and introspection see */
    mt->tp_repr = metrics_repr; /* a heap type of ours, before any instance exists */
    PyType_Modified(mt);
    if (PyModule_AddObjectRef(m, "CircuitBreakerMetrics", (PyObject *)mt) < 0) {
        Py_DECREF(mt);
        return -1;
    }
    Py_XSETREF(st->slots[PRS_SLOT_CircuitBreakerMetrics], (PyObject *)mt);
    return 0;
}
