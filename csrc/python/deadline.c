/*
 * deadline.c - the deadline of the current call, for every wait of the binding.
 *
 * Two places hold a deadline, and a reader takes the sooner of them:
 *
 * - One context variable (`_core.DEADLINE`): an int, absolute nanoseconds of
 *   CLOCK_MONOTONIC (the clock of prs_monotonic_ns() and time.monotonic_ns()).
 *   The async Timeout, the thread=True Timeout and user code set it; being a
 *   context variable it follows the call into nested calls, asyncio tasks made
 *   from it and (copied) worker threads.
 *
 * - The sync frames: a sync Timeout of a Policy (policy.c) does not set the
 *   variable (PyContextVar_Set + Reset allocate a HAMT node, a token and an
 *   int: about 250 ns, more than the rest of a five-strategy call). It pushes
 *   (deadline, context) on a small per-thread stack for the time of the call
 *   instead, and pops it when the call ends (prs_py_deadline_push/pop). A
 *   frame applies to code running in the context it was pushed in, or in a
 *   context entered from it (ctx.run, the tasks of an event loop run inside
 *   the call): everything that runs inside the call, on its thread, sees it.
 *   Keying frames by context keeps greenlets apart: gevent/eventlet switch
 *   greenlets inside a blocking call on one thread, each greenlet has its own
 *   context, so one greenlet never sees another's frame, and frames popped out
 *   of order (greenlets interleaving) are marked dead, not mis-popped.
 *   Not carried: a copy of the context run later or on another thread (a
 *   thread started inside with a copied context). The package's own such
 *   copy, Timeout(thread=True), sets the variable before copying.
 *
 * Every wait of the binding (rate and condition waits) caps its timeout with
 * prs_py_deadline_cap() when it begins: the cap is absolute, so once is exact.
 *
 * Cost when no deadline is set: one PyContextVar_Get that finds nothing and
 * one call to the core that finds no frame (a thread-local load).
 *
 * "A context entered from it" walks each context's ctx_prev (the context
 * that was current when it was entered). That field is CPython's, not in its
 * public headers: its place is checked once at import (a context entered and
 * left must show it), and without the check passing only the context itself
 * matches.
 */
#include "prs_py.h"

/* ---- the sync frames: the core's (csrc/core/deadline.c), keyed by context ---- */

/* CPython's context object as far as ctx_prev (checked in deadline_setup). */
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
} ctx_head;

static int walk_prev; /* 1 once ctx_prev's place is checked */

static inline PyObject *current_context(void) { return PyThreadState_Get()->context; }

int prs_py_deadline_push(int64_t deadline) {
    PyObject *ctx = current_context();
    if (!ctx) { /* a new thread or greenlet that never used a context: make its own */
        PyObject *copy = PyContext_CopyCurrent();
        if (!copy) return -2;
        Py_DECREF(copy);
        if (!(ctx = current_context())) return -1;
    }
    int i = prs_deadline_push(ctx, deadline);
    if (i >= 0) Py_INCREF(ctx); /* the frame's */
    return i;
}

void prs_py_deadline_pop(int i) { Py_XDECREF((PyObject *)prs_deadline_pop(i)); }

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
    /* the frames of the current context and of those it was entered from */
    PyObject *ctx = prs_deadline_any() ? current_context() : NULL;
    for (int depth = 0; ctx && depth < 64; depth++) {
        deadline = prs_deadline_of(ctx, deadline);
        ctx = walk_prev ? ((ctx_head *)ctx)->ctx_prev : NULL;
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
    return deadline == PRS_NEVER ? timeout_ns : prs_deadline_cap(deadline, prs_monotonic_ns(), timeout_ns);
}

/* deadline_remaining() (remaining): seconds left before the current call's
 * deadline; _deadline_ns(): the absolute deadline in effect (CLOCK_MONOTONIC
 * ns). None when there is none. */
static PyObject *deadline_get(prs_py_state *st, int remaining) {
    int64_t d;
    if (remaining) d = prs_py_deadline_cap(st, PRS_NEVER);
    else if (prs_py_deadline_abs(st->slots[PRS_SLOT_DeadlineVar], &d) < 0) return NULL;
    if (d == PRS_NEVER) Py_RETURN_NONE;
    return remaining ? PyFloat_FromDouble((double)d / 1e9) : PyLong_FromLongLong(d);
}

typedef struct { int64_t ns; } timeout_args; /* _timeout_enter's (declared) */

/* _timeout_enter(ns): the async Timeout's entry in one call: the deadline in
 * effect inside (ns from now, or a sooner outer one) set in DEADLINE; returns
 * (token, seconds left), or None when that deadline has already passed. */
static PyObject *timeout_enter_ns(prs_py_state *st, int64_t ns) {
    PyObject *var = st->slots[PRS_SLOT_DeadlineVar];
    int64_t deadline;
    if (prs_py_deadline_abs(var, &deadline) < 0) return NULL;
    int64_t now = prs_monotonic_ns();
    deadline = prs_deadline_within(deadline, now, ns);
    if (deadline <= now) Py_RETURN_NONE;
    /* all made before the variable is set: nothing fails once it is */
    PyObject *value = PyLong_FromLongLong(deadline), *out = PyTuple_New(2);
    PyObject *left = PyFloat_FromDouble((double)(deadline - now) / 1e9);
    PyObject *token = value && out && left ? PyContextVar_Set(var, value) : NULL;
    Py_XDECREF(value);
    if (!token) {
        Py_XDECREF(out);
        Py_XDECREF(left);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, token);
    PyTuple_SET_ITEM(out, 1, left);
    return out;
}

/* Checks where ctx_prev lives: a context entered from the current one must
 * point at it, and at nothing once left. */
static int check_ctx_prev(void) {
    PyObject *cur = PyContext_CopyCurrent(); /* makes sure the thread has a context */
    if (!cur) return -1;
    Py_DECREF(cur);
    PyObject *prev = current_context();
    PyObject *ctx = PyContext_New();
    if (!ctx) return -1;
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return -1;
    }
    int entered_ok = current_context() == ctx && ((ctx_head *)ctx)->ctx_prev == prev && prev;
    int rc = PyContext_Exit(ctx);
    int left_ok = ((ctx_head *)ctx)->ctx_prev == NULL && current_context() == prev;
    Py_DECREF(ctx);
    if (rc < 0) return -1;
    walk_prev = entered_ok && left_ok;
    return 0;
}

/* Before the functions: the DEADLINE context variable, in the module and its state. */
static int deadline_setup(PyObject *m, prs_py_state *st) {
    if (check_ctx_prev() < 0) return -1;
    PyObject *var = PyContextVar_New("pyresilience_deadline", NULL);
    if (!var) return -1;
    st->slots[PRS_SLOT_DeadlineVar] = var; /* the state's reference */
    return PyModule_AddObjectRef(m, "DEADLINE", var);
}

#include "gen/deadline.h"
