/*
 * policy.c - PolicyStep: one layer of a Policy's sync chain, in C.
 *
 * A sync Policy is a chain of callables, each calling the next with the same
 * arguments, built once by pyresilience/policy.py. Its layers are C objects,
 * so a call that succeeds runs no Python frame of the package. What each kind
 * runs, and its fields (strong references, set once in tp_new, immutable
 * after; `next` is the next callable, NULL for APPLY):
 *
 *   RETRY    (Retry)          the next; after a failure, the Retry's Python loop
 *                             a (retry._resume) takes over; b the RetryBudget or
 *                             None, c retry_on_result or None, o its RetryCounts,
 *                             clock its clock (None: monotonic). Also the wrapper
 *                             of a function it decorates.
 *   BREAKER  (CircuitBreaker) a, the breaker's C wrapper (breaker.c) of next
 *   LIMIT    (a limiter)      a() (allow, or acquire with a wait), then the next;
 *                             c: None (a waits) or raising allow's refusal; o: an
 *                             in-process limiter, decided here for ns (its n)
 *   BULKHEAD (Bulkhead)       a() acquire, the next, b() release; o: a
 *                             _core.Bulkhead, taken and released here
 *   TIMEOUT  (Timeout)        the deadline (ns from now; -1: an outer one only) in a
 *                             sync frame (deadline.c), or the context variable a,
 *                             around the next; late -> b() (a TimeoutExceeded)
 *   FALLBACK (Fallback)       the next; an exception of `on` (a) -> b(exc)
 *   APPLY    (the call)       args[0](*args[1:]) (policy.call's form); a decorated
 *                             function is its own end
 *
 * What only Python can do well (a key computed by a Python function, a
 * thread-run Timeout) stays a Python layer in the same chain.
 *
 * One execution path, one clock read per phase. A step whose next is a
 * PolicyStep calls its run function directly (no vectorcall), passing a frame
 * (`pcx`) whose `now` is read lazily: the first strategy that needs the time
 * (the Retry's start, a limiter, the Timeout, the Bulkhead) reads
 * CLOCK_MONOTONIC and the others before the call use that reading. Calling
 * anything else (the function, a Python layer) forgets it, so after the call
 * the Bulkhead's release and the Timeout's lateness check share one fresh
 * read. Strategies on another clock (a ManualClock, a callable) read their
 * own. Across the breaker's C wrapper, the reading is handed to the step it
 * wraps by value, through a thread-local word that only that step takes
 * (`handoff`): a greenlet switch in between (a breaker listener doing I/O)
 * can only hand over another reading of the same clock, never a pointer into
 * another stack; the reading is then older by the listeners' running time
 * (conservative: fewer tokens, an earlier deadline).
 */
#include "prs_py.h"
#include "counter_internal.h"

enum { STEP_APPLY, STEP_LIMIT, STEP_BULKHEAD, STEP_TIMEOUT, STEP_FALLBACK, STEP_RETRY, STEP_BREAKER,
       STEP__COUNT };

#define NO_TIME INT64_MIN

typedef struct {
    int64_t now; /* CLOCK_MONOTONIC, NO_TIME: not read since the last call out */
} pcx;

static inline int64_t cx_now(pcx *cx) {
    if (cx->now == NO_TIME) cx->now = prs_monotonic_ns();
    return cx->now;
}

struct step_obj;
typedef PyObject *(*step_run)(struct step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf,
                              PyObject *kwnames);

typedef struct step_obj {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    step_run run;
    int kind;
    int native;            /* next is a PolicyStep: called through run */
    int plain;             /* RETRY on the monotonic clock, no budget, no retry_on_result,
                              next not native: retry_vectorcall's own first try */
    int64_t ns;
    PyObject *next, *a, *b, *c, *o; /* o: NULL when not given */
    prs_py_clock clock;    /* RETRY */
    prs_counters *counts;  /* RETRY: o's core (o keeps it), a first-try success counted (NULL: none) */
    PyObject *dict;        /* __name__, __doc__, __wrapped__ of a decorated function */
    PyObject *weakreflist;
} step_obj;

#define STEP(o) ((step_obj *)(o))

/* PolicyStep()'s parsed numbers (its objects are taken as given). */
typedef struct step_args {
    int64_t kind, ns;
} step_args;

/* The reading handed across a foreign C layer (the breaker's wrapper) to the
 * step it wraps; taken (cleared) by that step only. 16 bytes of static TLS. */
static _Thread_local struct {
    PyObject *expect;
    int64_t now;
} handoff PRS_TLS_FAST;

static inline PyObject *call_next(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    if (s->native) return STEP(s->next)->run(STEP(s->next), cx, args, nargsf, kwnames);
    PyObject *r = PyObject_Vectorcall(s->next, args, nargsf, kwnames);
    cx->now = NO_TIME;
    return r;
}

static PyObject *step_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    pcx cx = {NO_TIME};
    if (handoff.expect == self) {
        cx.now = handoff.now;
        handoff.expect = NULL;
    }
    return STEP(self)->run(STEP(self), &cx, args, nargsf, kwnames);
}

/* A step whose references the GC cleared (only reachable from a finalizer). */
#define CHECK_LIVE(s) \
    if (!(s)->a) { PyErr_SetString(PyExc_RuntimeError, "this policy step was cleared"); return NULL; }

/* A step's result once its cleanup ran with the call's exception set aside
 * in `saved`: res, and that exception back; when the cleanup failed (rc < 0)
 * its error wins: NULL. */
static PyObject *after_cleanup(PyObject *res, PyObject *saved, int rc) {
    if (rc < 0) {
        Py_XDECREF(res);
        Py_XDECREF(saved);
        return NULL;
    }
    PRS_PY_EXC_RESTORE(saved);
    return res;
}

static PyObject *step_apply(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) return PyErr_Format(PyExc_TypeError, "call() needs the function to call");
    /* args[0] is ours to overwrite: the callee may use the slot before args+1 */
    PyObject *r = PyObject_Vectorcall(args[0], args + 1, (size_t)(nargs - 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      kwnames);
    cx->now = NO_TIME;
    return r;
}

/* ---- Retry ------------------------------------------------------------------------- */

/* After the first attempt (res: its result; NULL with its exception set):
 * res, unless retry_on_result (c) wants a retry or it raised an Exception;
 * then the Retry's Python loop takes over, a(next, args, kwargs, exc,
 * result, start). Steals res. */
__attribute__((noinline, cold)) /* kept out of step_retry: its first try stays a small frame */
static PyObject *retry_after(step_obj *s, PyObject *const *args, size_t nargsf, PyObject *kwnames,
                             PyObject *result, int64_t start) {
    PyObject *exc = NULL;
    if (result) {
        PyObject *r = PyObject_CallOneArg(s->c, result);
        int again = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        if (again < 0) Py_CLEAR(result);
        if (!again && s->counts) prs__counters_add(s->counts, 0, 1);
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
    PyObject *hargs[6] = {s->next, tuple, kwargs, exc ? exc : Py_None, result ? result : Py_None, start_o};
    out = PyObject_Vectorcall(s->a, hargs, 6, NULL);
done:
    Py_XDECREF(tuple);
    Py_XDECREF(kwargs);
    Py_XDECREF(start_o);
    Py_XDECREF(exc);
    Py_XDECREF(result);
    return out;
}

/* Also a decorated function's own wrapper (pyresilience.retry): a call that
 * succeeds at once reads the clock, deposits in the budget and returns. */
static PyObject *step_retry(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    CHECK_LIVE(s);
    int64_t start;
    if (s->clock.kind == PRS_CLOCK_MONOTONIC) start = cx_now(cx);
    else if (prs_py_clock_now(&s->clock, &start) < 0) return NULL;
    if (s->b != Py_None && prs_py_retry_deposit(s->b, cx_now(cx)) < 0) return NULL;
    PyObject *res = call_next(s, cx, args, nargsf, kwnames);
    if (res && s->c == Py_None) {
        if (s->counts) prs__counters_add(s->counts, 0, 1);
        return res;
    }
    return retry_after(s, args, nargsf, kwnames, res, start);
}

/* A RETRY step's own entry (a decorated function's call, a policy's outer
 * Retry): a plain step's first try in a small frame; else step_vectorcall's
 * way (a time handed across, a budget, retry_on_result, a cleared step). */
static PyObject *retry_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    step_obj *s = STEP(self);
    if (!s->plain || !s->a || handoff.expect == self) return step_vectorcall(self, args, nargsf, kwnames);
    int64_t start = prs_monotonic_ns();
    PyObject *res = PyObject_Vectorcall(s->next, args, nargsf, kwnames);
    if (!res) return retry_after(s, args, nargsf, kwnames, NULL, start);
    if (s->counts) prs__counters_add(s->counts, 0, 1);
    return res;
}

/* ---- CircuitBreaker: its own C wrapper, the time handed across -------------------- */

static PyObject *step_breaker(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    CHECK_LIVE(s);
    if (s->native && cx->now != NO_TIME) {
        handoff.expect = s->next;
        handoff.now = cx->now;
    }
    PyObject *r = PyObject_Vectorcall(s->a, args, nargsf, kwnames);
    handoff.expect = NULL; /* not taken: the breaker refused */
    cx->now = NO_TIME;
    return r;
}

/* ---- limiter ----------------------------------------------------------------------- */

/* a(): admitted unless it raises; with c, a is a non-blocking allow() whose
 * False c() turns into the refusal (c is acquire(..., 0): one that admits
 * after all - time moved - admits). An in-process limiter (o) is decided
 * here, at the frame's time. */
static PyObject *step_limit(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    CHECK_LIVE(s);
    int refused;
    if (s->o) {
        prs_py_limiter *lim = (prs_py_limiter *)s->o;
        int64_t now;
        if (lim->clock.kind == PRS_CLOCK_MONOTONIC) now = cx_now(cx);
        else if (prs_py_clock_now(&lim->clock, &now) < 0) return NULL;
        prs_decision d;
        refused = prs_limiter_decide(lim->core, now, s->ns, 1, &d) || !d.allowed;
    } else {
        PyObject *r = PyObject_CallNoArgs(s->a);
        cx->now = NO_TIME;
        if (!r) return NULL;
        refused = r == Py_False && s->c != Py_None;
        Py_DECREF(r);
    }
    if (refused) {
        PyObject *r = PyObject_CallNoArgs(s->c);
        cx->now = NO_TIME;
        if (!r) return NULL;
        Py_DECREF(r);
    }
    return call_next(s, cx, args, nargsf, kwnames);
}

/* ---- Bulkhead ---------------------------------------------------------------------- */

static PyObject *step_bulkhead(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    CHECK_LIVE(s);
    if (!s->o || !prs_py_bulkhead_try_at(s->o, cx_now(cx))) {
        PyObject *r = PyObject_CallNoArgs(s->a); /* acquire(): waits, or raises the refusal */
        cx->now = NO_TIME;
        if (!r) return NULL;
        Py_DECREF(r);
    }
    PyObject *res = call_next(s, cx, args, nargsf, kwnames);
    PRS_PY_EXC_SAVE(saved);
    int rc; /* released whatever happened */
    if (s->o) {
        rc = prs_py_bulkhead_release_at(s->o, cx_now(cx));
    } else {
        PyObject *r = PyObject_CallNoArgs(s->b);
        cx->now = NO_TIME;
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    }
    return after_cleanup(res, saved, rc);
}

/* ---- Timeout ----------------------------------------------------------------------- */

/* The next with the deadline in the context variable `a` (when the thread's
 * sync frames are all taken). */
static PyObject *timeout_in_var(step_obj *s, pcx *cx, int64_t deadline, PyObject *const *args,
                                size_t nargsf, PyObject *kwnames) {
    PyObject *value = PyLong_FromLongLong(deadline);
    if (!value) return NULL;
    PyObject *token = PyContextVar_Set(s->a, value);
    Py_DECREF(value);
    if (!token) return NULL;
    PyObject *res = call_next(s, cx, args, nargsf, kwnames);
    PRS_PY_EXC_SAVE(saved);
    int rc = PyContextVar_Reset(s->a, token);
    Py_DECREF(token);
    return after_cleanup(res, saved, rc);
}

/* The deadline (the sooner of ours and an outer one) in a sync frame for the
 * time of the call (deadline.c). */
static PyObject *step_timeout(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    CHECK_LIVE(s);
    int64_t deadline;
    if (prs_py_deadline_abs(s->a, &deadline) < 0) return NULL;
    int64_t now = cx_now(cx);
    deadline = prs_deadline_within(deadline, now, s->ns);
    if (deadline == PRS_NEVER) return call_next(s, cx, args, nargsf, kwnames);
    if (now >= deadline) return prs_py_raise(PyObject_CallNoArgs(s->b)); /* a fresh TimeoutExceeded */
    PyObject *res;
    int frame = prs_py_deadline_push(deadline);
    if (frame >= 0) {
        res = call_next(s, cx, args, nargsf, kwnames);
        prs_py_deadline_pop(frame);
    } else if (frame == -1) {
        res = timeout_in_var(s, cx, deadline, args, nargsf, kwnames);
    } else {
        return NULL;
    }
    if (res && cx_now(cx) > deadline) {
        Py_DECREF(res);
        return prs_py_raise(PyObject_CallNoArgs(s->b));
    }
    return res;
}

/* ---- Fallback ---------------------------------------------------------------------- */

/* The next; an exception of `on` (a) is replaced by b(exc): the Fallback's
 * value or factory's result. */
static PyObject *step_fallback(step_obj *s, pcx *cx, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    CHECK_LIVE(s);
    PyObject *res = call_next(s, cx, args, nargsf, kwnames);
    if (res || !PyErr_ExceptionMatches(s->a)) return res;
    PyObject *exc = prs_py_take_exception();
    if (!exc) return NULL;
    res = PyObject_CallOneArg(s->b, exc);
    Py_DECREF(exc);
    cx->now = NO_TIME;
    return res;
}

static const step_run step_runs[STEP__COUNT] = {
    step_apply, step_limit, step_bulkhead, step_timeout, step_fallback, step_retry, step_breaker,
};

/* PolicyStep(kind, next=None, a=None, b=None, c=None, ns=-1, clock=None, o=None, /)
 * after its arguments are kept (tp_new is generated): checked by the facade,
 * which alone builds steps; here only what would crash is refused (a callable
 * that is not one raises when called). Then the kind's run function. 0 or -1. */
static int step_build(prs_py_state *st, step_obj *s, const step_args *cfg, PyObject *o) {
    int kind = (int)cfg->kind;
    PyTypeObject *own = kind == STEP_RETRY ? PRS_PY_TYPE(st, RetryCounts)
                        : kind == STEP_LIMIT ? PRS_PY_TYPE(st, LimiterBase)
                        : kind == STEP_BULKHEAD ? PRS_PY_TYPE(st, Bulkhead) : NULL; /* o's type */
    if (o == Py_None) o = NULL;
    if (o && !(own && PyObject_TypeCheck(o, own)))
        return prs_py_type_error("o", own ? own->tp_name : "None for this kind", o);
    if (kind == STEP_RETRY && s->b != Py_None && !PyObject_TypeCheck(s->b, PRS_PY_TYPE(st, RetryBudget)))
        return prs_py_type_error("b", "a RetryBudget or None", s->b);
    s->o = Py_XNewRef(o);
    s->counts = kind == STEP_RETRY && o ? prs_py_retry_counters(o) : NULL;
    s->vectorcall = kind == STEP_RETRY ? retry_vectorcall : step_vectorcall;
    s->run = step_runs[kind];
    s->kind = kind;
    s->ns = kind == STEP_LIMIT && cfg->ns < 1 ? 1 : cfg->ns;
    s->native = kind != STEP_APPLY && Py_IS_TYPE(s->next, Py_TYPE(s));
    s->plain = kind == STEP_RETRY && s->clock.kind == PRS_CLOCK_MONOTONIC && s->b == Py_None &&
               s->c == Py_None && !s->native;
    return 0;
}

/* A retrying wrapper's repr names the function (a Retry's decorator). */
static PyObject *step_repr(PyObject *self) {
    if (STEP(self)->kind != STEP_RETRY || !STEP(self)->next) return PyBaseObject_Type.tp_repr(self);
    return PyUnicode_FromFormat("<retrying wrapper of %R>", STEP(self)->next);
}

#include "gen/policy.h"
