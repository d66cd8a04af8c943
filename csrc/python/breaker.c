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

typedef struct breaker_obj {
    PyObject_HEAD
    prs_breaker *core;       /* built by tp_new, never NULL after it */
    prs_py_clock clock;
    int timing;              /* slow_call_duration set: every call is timed */
    PyObject *fallback;      /* None or a callable */
    PyObject *name;          /* a str or None */
    PyObject *record_exc;    /* tuple of exception classes */
    PyObject *ignore_exc;    /* tuple of exception classes (may be empty) */
    PyObject *is_failure;    /* None or a callable */
    PyObject *listeners;     /* tuple of callables; replaced whole, never mutated */
    PyObject *states;        /* tuple: the CircuitState members, by prs_breaker_state */
    PyObject *msg_open;      /* the CircuitOpenError messages, made once (a float's repr */
    PyObject *msg_half;      /* in each message would cost more than the whole rejection) */
    PyObject *weakreflist;
} breaker_obj;

#define SELF ((breaker_obj *)self)

typedef struct wrapped_obj {
    PyObject_HEAD
    breaker_obj *breaker;   /* strong */
    PyObject *func;         /* strong */
    PyObject *dict;         /* __dict__: functools.update_wrapper stores __name__ etc. here */
    PyObject *weakreflist;
    vectorcallfunc vectorcall;
    PyObject *fast;         /* strong: the class the C path serves (the breaker's own,
                               unobserved); under any other (an observed variant, a
                               shared path) calls go through that class's call() */
} wrapped_obj;

#define WSELF ((wrapped_obj *)self)

/* record_success()/record_failure()'s parsed arguments. */
typedef struct cb_record_args {
    int64_t duration_ns;
} cb_record_args;

/* The tuples, states and messages tp_new (generated) makes from the arguments v. */
static int cb_objects(breaker_obj *self, PyObject **v);

/* ---- listeners --------------------------------------------------------------------- */

/* The listeners: a tuple replaced whole, read under the object's lock (a new
 * reference; NULL once cleared). */
static PyObject *listeners_of(breaker_obj *self) {
    PyObject *ls;
    Py_BEGIN_CRITICAL_SECTION(self);
    ls = Py_XNewRef(self->listeners);
    Py_END_CRITICAL_SECTION();
    return ls;
}

/* listeners = a tuple (set by the facade's add_listener/remove_listener,
 * which serialise the changes), replaced under the object's lock. */
static int cb_set_listeners(PyObject *self, PyObject *ls, void *c) {
    if (!ls || !PyTuple_Check(ls)) /* deleted: as if set to None */
        return prs_py_type_error("_listeners", "a tuple", ls ? ls : Py_None);
    Py_BEGIN_CRITICAL_SECTION(self);
    Py_SETREF(SELF->listeners, Py_NewRef(ls));
    Py_END_CRITICAL_SECTION();
    return 0;
}

/* Reports a listener's exception (the current one) as a RuntimeWarning; when
 * warnings are errors, through sys.unraisablehook. Clears it either way. */
static void report_listener_error(PyObject *listener) {
    PyObject *v = prs_py_take_exception();
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
    PyObject *ls = listeners_of(self);
    if (!ls || PyTuple_GET_SIZE(ls) == 0 || !self->states) {
        Py_XDECREF(ls);
        return;
    }
    PRS_PY_EXC_SAVE(saved);
    PyObject *args[3] = {(PyObject *)self, PyTuple_GET_ITEM(self->states, tr->from),
                         PyTuple_GET_ITEM(self->states, tr->to)};
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
    PRS_PY_EXC_RESTORE(saved);
}

/* ---- rejection ------------------------------------------------------------------------ */

/* A fresh CircuitOpenError instance (not raised), or NULL with an exception. */
static PyObject *open_error(breaker_obj *self, const prs_breaker_decision *d) {
    prs_py_state *st = prs_py_state_of((PyObject *)self);
    PyObject *retry = st ? PyFloat_FromDouble(prs_py_ns_to_s(d->retry_after_ns)) : NULL;
    if (!retry) return NULL;
    int half = prs_breaker_get_state(self->core) == PRS_BREAKER_HALF_OPEN;
    PyObject *args[3] = {half ? self->msg_half : self->msg_open, retry,
                         self->name ? self->name : Py_None};
    PyObject *exc = PyObject_Vectorcall(PRS_PY_EXC(st, CircuitOpenError), args, 3, NULL);
    Py_DECREF(retry);
    return exc;
}

/* ---- admission and recording ------------------------------------------------------------ */

/* 1 admitted (*permit, *start set), 0 rejected (d set), -1 error. Listeners
 * of an OPEN -> HALF_OPEN transition are called before returning. permit
 * NULL (allow_request()): no permit to hand out, so record_*() reports
 * without one and frees the untracked trial slot taken here (a stray
 * record_*() frees none). */
static int admit(breaker_obj *self, prs_breaker_permit *permit, int64_t *start,
                 prs_breaker_decision *d) {
    prs_breaker_permit untracked;
    if ((!self->timing || !permit) &&
        prs_breaker_try_acquire_closed(self->core, permit ? permit : &untracked)) {
        *start = 0;
        return 1;
    }
    int64_t now;
    if (prs_py_clock_now(&self->clock, &now) < 0) return -1;
    if (permit) prs_breaker_acquire(self->core, now, d);
    else prs_breaker_acquire_untracked(self->core, now, d);
    fire(self, &d->transition);
    if (!d->allowed) return 0;
    if (permit) *permit = d->permit;
    *start = now;
    return 1;
}

/* The outcome (Classification, above) of a call that raised (exc_type: the
 * exception's class) or returned `result`. -1 with an exception (IGNORED)
 * when is_failure raised. */
static inline int outcome_of(breaker_obj *self, PyObject *exc_type, PyObject *result,
                             prs_breaker_outcome *out) {
    *out = PRS_BREAKER_SUCCESS;
    if (exc_type) {
        if (!PyErr_GivenExceptionMatches(exc_type, PyExc_Exception) ||
            (PyTuple_GET_SIZE(self->ignore_exc) && PyErr_GivenExceptionMatches(exc_type, self->ignore_exc)))
            *out = PRS_BREAKER_IGNORED;
        else if (PyErr_GivenExceptionMatches(exc_type, self->record_exc))
            *out = PRS_BREAKER_FAILURE;
        return 0;
    }
    if (self->is_failure == Py_None) return 0;
    PyObject *r = PyObject_CallOneArg(self->is_failure, result);
    int bad = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    *out = bad < 0 ? PRS_BREAKER_IGNORED : bad ? PRS_BREAKER_FAILURE : PRS_BREAKER_SUCCESS;
    return bad < 0 ? -1 : 0;
}

/* Records `outcome` for `permit`, timing it from `start` when slow calls are
 * measured, and notifies listeners. A pending exception is left as it is: a
 * callable clock read meanwhile that fails goes to sys.unraisablehook.
 * Returns 0, or -1 with an exception (the clock failed and nothing was
 * pending; the outcome was still recorded, so a half-open slot is never lost). */
static int finish(breaker_obj *self, prs_breaker_permit permit, int64_t start,
                  prs_breaker_outcome outcome) {
    int64_t now = INT64_MIN, duration = 0;
    int rc = 0;
    if (self->timing || prs_breaker_outcome_needs_time(self->core, outcome)) {
        PyObject *pending = self->clock.kind == PRS_CLOCK_CALLABLE ? prs_py_take_exception() : NULL;
        if (prs_py_clock_now(&self->clock, &now) < 0) {
            now = INT64_MIN; /* taken as the latest time seen */
            outcome = PRS_BREAKER_IGNORED;
            if (pending) PyErr_WriteUnraisable(self->clock.obj);
            else rc = -1;
        } else if (self->timing && start != INT64_MIN) {
            duration = now > start ? now - start : 0;
        }
        if (pending) PRS_PY_EXC_RESTORE(pending);
    }
    prs_breaker_transition tr;
    prs_breaker_record(self->core, now, permit, outcome, duration, &tr);
    fire(self, &tr);
    return rc;
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
        if (self->fallback != Py_None) return PyObject_CallNoArgs(self->fallback);
        return prs_py_raise(open_error(self, &d));
    }
    PyObject *res = PyObject_Vectorcall(func, args, nargsf, kwnames);
    prs_breaker_outcome outcome;
    int bad = outcome_of(self, res ? NULL : PyErr_Occurred(), res, &outcome);
    if (finish(self, permit, start, outcome) < 0 || bad) Py_CLEAR(res);
    return res;
}

static PyObject *cb_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    if (nargs < 1) return PyErr_Format(PyExc_TypeError, "call() missing required argument 'func' (pos 1)");
    return run_protected(SELF, args[0], args + 1, (size_t)(nargs - 1), kwnames);
}

static PyObject *cb_acquire(PyObject *self, PyObject *unused) {
    prs_breaker_permit permit;
    prs_breaker_decision d;
    int64_t start;
    int a = admit(SELF, &permit, &start, &d);
    if (a < 0) return NULL;
    if (a == 0) return open_error(SELF, &d);
    return Py_BuildValue("(KL)", (unsigned long long)permit, (long long)start);
}

/* ---- the decorated function: a C callable, so @breaker adds no Python frame ---- */

static PyObject *wrapped_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    if (__builtin_expect((PyObject *)Py_TYPE(WSELF->breaker) != WSELF->fast, 0)) {
        /* breaker.call(func, *args, **kwargs) through the breaker's class as it is now */
        PyObject *call = PyObject_GetAttrString((PyObject *)WSELF->breaker, "call");
        PyObject *bound = call ? PyMethod_New(call, WSELF->func) : NULL;
        PyObject *r = bound ? PyObject_Vectorcall(bound, args, nargsf, kwnames) : NULL;
        Py_XDECREF(call);
        Py_XDECREF(bound);
        return r;
    }
    return run_protected(WSELF->breaker, WSELF->func, args, nargsf, kwnames);
}

static PyObject *wrapped_repr(PyObject *self) {
    if (!WSELF->func) return PyUnicode_FromString("<CircuitBreaker-protected function>");
    return PyUnicode_FromFormat("<CircuitBreaker-protected %R>", WSELF->func);
}

static PyObject *wrap(breaker_obj *self, PyObject *func) {
    prs_py_state *st = prs_py_state_of((PyObject *)self);
    /* an observed variant names the class it stands for (_prs_plain) */
    PyObject *fast = st ? PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_prs_plain") : NULL;
    if (!fast && st && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        fast = Py_NewRef((PyObject *)Py_TYPE(self));
    }
    PyTypeObject *tp = fast ? PRS_PY_TYPE(st, BreakerFunction) : NULL;
    wrapped_obj *w = tp ? (wrapped_obj *)tp->tp_alloc(tp, 0) : NULL;
    if (!w) {
        Py_XDECREF(fast);
        return NULL;
    }
    w->breaker = (breaker_obj *)Py_NewRef(self);
    w->func = Py_NewRef(func);
    w->vectorcall = wrapped_vectorcall;
    w->fast = fast;
    return (PyObject *)w;
}

/* ---- low level ----------------------------------------------------------------------------- */

static PyObject *cb_allow_request(PyObject *self, PyObject *unused) {
    prs_breaker_decision d;
    int64_t start;
    int a = admit(SELF, NULL, &start, &d);
    return a < 0 ? NULL : PyBool_FromLong(a);
}

/* record_success()/record_failure()/record_ignored(): an outcome reported
 * without a permit (an ignored one needs no time). */
static PyObject *record_manual(PyObject *self, int64_t duration_ns, prs_breaker_outcome outcome) {
    int64_t now = INT64_MIN;
    if (outcome != PRS_BREAKER_IGNORED && prs_breaker_outcome_needs_time(SELF->core, outcome) &&
        prs_py_clock_now(&SELF->clock, &now) < 0)
        return NULL;
    prs_breaker_transition tr;
    prs_breaker_record(SELF->core, now, PRS_BREAKER_NO_PERMIT, outcome, duration_ns, &tr);
    fire(SELF, &tr);
    Py_RETURN_NONE;
}

/* A manual state call (open, close, ...: generated methods over the core's). */
static PyObject *manual(PyObject *self, void (*fn)(prs_breaker *, int64_t, prs_breaker_transition *)) {
    int64_t now;
    if (prs_py_clock_now(&SELF->clock, &now) < 0) return NULL;
    prs_breaker_transition tr;
    fn(SELF->core, now, &tr);
    fire(SELF, &tr);
    Py_RETURN_NONE;
}

static PyObject *record(breaker_obj *self, PyObject *token, PyObject *exc, PyObject *result) {
    prs_breaker_permit permit = PRS_BREAKER_NO_PERMIT;
    long long start = INT64_MIN;
    if (token != Py_None) {
        if (!PyTuple_CheckExact(token) || PyTuple_GET_SIZE(token) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(token, 0)) || !PyLong_CheckExact(PyTuple_GET_ITEM(token, 1)))
            return PyErr_Format(PyExc_TypeError, "_record() token must come from _acquire(), got %R", token);
        permit = (prs_breaker_permit)PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(token, 0));
        start = PyLong_AsLongLong(PyTuple_GET_ITEM(token, 1));
        if (PyErr_Occurred()) return NULL;
    }
    if (exc == Py_None) exc = NULL;
    if (exc && !PyExceptionInstance_Check(exc))
        return PyErr_Format(PyExc_TypeError, "_record() exc must be an exception or None, got %R", exc);
    prs_breaker_outcome outcome;
    int bad = outcome_of(self, exc ? (PyObject *)Py_TYPE(exc) : NULL, result ? result : Py_None, &outcome);
    return finish(self, permit, (int64_t)start, outcome) < 0 || bad ? NULL : Py_NewRef(Py_None);
}

/* _metrics(): the fields of the facade's CircuitBreakerMetrics, in order. */
static PyObject *metrics_at(breaker_obj *self, int64_t now) {
    prs_breaker_metrics m;
    prs_breaker_get_metrics(self->core, now, &m);
    return Py_BuildValue("(OLLLLLLLdddLLLLs)", PyTuple_GET_ITEM(self->states, m.state),
                         (long long)m.consecutive_failures, (long long)m.consecutive_successes,
                         (long long)m.calls, (long long)m.failures, (long long)m.slow_calls,
                         (long long)m.rejected, (long long)m.ignored, m.failure_rate, m.slow_call_rate,
                         prs_py_ns_to_s(m.retry_after_ns), (long long)m.window_calls,
                         (long long)m.window_failures, (long long)m.window_slow_calls,
                         (long long)m.half_open_in_flight, prs_breaker_mode_name(m.mode));
}

#include "gen/breaker.h"

/* ---- construction ------------------------------------------------------------------------ */

/* The CircuitState members from pyresilience.breaker (pure Python), in the
 * order of prs_breaker_state (a new tuple). */
static PyObject *load_states(void) {
    PyObject *mod = PyImport_ImportModule("pyresilience.breaker");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "CircuitState") : NULL;
    PyObject *t = cls ? PySequence_Tuple(cls) : NULL;
    Py_XDECREF(mod);
    Py_XDECREF(cls);
    return t;
}

static int cb_objects(breaker_obj *self, PyObject **v) {
    /* tuples (the facade converts an item or an iterable of them); not given: the defaults */
    PyObject *rec = v[P_CircuitBreaker_record_exceptions], *ign = v[P_CircuitBreaker_ignore_exceptions],
             *ls = v[P_CircuitBreaker_on_state_change], *name = self->name;
    if (!(self->record_exc = rec ? Py_NewRef(rec) : PyTuple_Pack(1, PyExc_Exception)) ||
        !(self->ignore_exc = ign ? Py_NewRef(ign) : PyTuple_New(0)) ||
        !(self->listeners = ls ? Py_NewRef(ls) : PyTuple_New(0)) || !(self->states = load_states()))
        return -1;
    PyObject *who = name != Py_None ? PyUnicode_FromFormat(" %R", name) : PyUnicode_FromString("");
    if (!who) return -1;
    self->msg_open = PyUnicode_FromFormat("circuit breaker%U is open", who);
    self->msg_half = PyUnicode_FromFormat(
        "circuit breaker%U is half-open and its trial calls are all taken", who);
    Py_DECREF(who);
    return self->msg_open && self->msg_half ? 0 : -1;
}

/* ---- properties ------------------------------------------------------------------------------- */

/* A configuration property: its parameter's field (closure: the index) in the
 * core's config (half_open_max_calls 0 reads as success_threshold, its use). */
static PyObject *cb_param_get(PyObject *self, void *i) {
    prs_breaker_config cfg;
    prs_breaker_get_config(SELF->core, &cfg);
    if (!cfg.half_open_max_calls) cfg.half_open_max_calls = cfg.success_threshold;
    return prs_py_param_get(&CircuitBreaker_param_list[(intptr_t)i], &cfg);
}
