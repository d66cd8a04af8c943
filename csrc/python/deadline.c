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
 * Every wait of the binding (the rate wait of limiters, keyed views, groups and
 * Redis limiters; the condition wait of bulkheads and queues) caps its timeout
 * with prs_py_deadline_cap() when it begins. The cap is an absolute deadline,
 * so capping once at the start is exact. A wait that cannot be served before
 * the deadline then fails at once, as with a timeout of its own.
 *
 * Cost when no deadline is set: one PyContextVar_Get that finds nothing and
 * one thread-local load.
 *
 * "A context entered from it" walks each context's ctx_prev (the context
 * that was current when it was entered). That field is CPython's, not in its
 * public headers: its place is checked once at import (a context entered and
 * left must show it), and without the check passing only the context itself
 * matches.
 */
#include "prs_py.h"

#include <pthread.h>

/* ---- the sync frames --------------------------------------------------------- */

#define DL_FRAMES 32

typedef struct {
    PyObject *ctx;     /* strong; NULL: a dead frame (popped out of order) */
    int64_t deadline;
} dl_frame;

typedef struct {
    int n;
    dl_frame f[DL_FRAMES];
} dl_stack;

/* Each thread's frames, made at its first sync Timeout and freed when it
 * ends. The pointer is thread-local in the initial-exec model where the C
 * library allows it (one load instead of a __tls_get_addr call per access:
 * every wait and every policy step reads it), so only a word of static TLS. */
#if defined(__GLIBC__) && defined(__GNUC__)
#define PRS_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define PRS_TLS_FAST
#endif
static _Thread_local dl_stack *dl PRS_TLS_FAST;
static pthread_key_t dl_key;
static pthread_once_t dl_once = PTHREAD_ONCE_INIT;
static int dl_key_ok;

static void dl_free(void *p) { PyMem_RawFree(p); } /* a thread ends: its frames were all popped */
static void dl_key_init(void) { dl_key_ok = pthread_key_create(&dl_key, dl_free) == 0; }

static dl_stack *dl_make(void) {
    pthread_once(&dl_once, dl_key_init);
    if (!dl_key_ok) return NULL;
    dl_stack *d = PyMem_RawCalloc(1, sizeof *d);
    if (d && pthread_setspecific(dl_key, d) != 0) {
        PyMem_RawFree(d);
        return NULL;
    }
    return dl = d;
}

/* CPython's context object as far as ctx_prev (checked in deadline_setup). */
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
} ctx_head;

static int walk_prev; /* 1 once ctx_prev's place is checked */

static inline PyObject *current_context(void) { return PyThreadState_Get()->context; }

int prs_py_deadline_push(int64_t deadline) {
    dl_stack *d = dl ? dl : dl_make();
    if (!d || d->n == DL_FRAMES) return -1;
    PyObject *ctx = current_context();
    if (!ctx) { /* a new thread or greenlet that never used a context: make its own */
        PyObject *copy = PyContext_CopyCurrent();
        if (!copy) return -2;
        Py_DECREF(copy);
        ctx = current_context();
        if (!ctx) return -1;
    }
    int i = d->n++;
    d->f[i].ctx = Py_NewRef(ctx);
    d->f[i].deadline = deadline;
    return i;
}

void prs_py_deadline_pop(int i) {
    dl_stack *d = dl;
    PyObject *ctx = d->f[i].ctx;
    d->f[i].ctx = NULL;
    if (i == d->n - 1) /* the usual case; else a greenlet's frame below another's */
        while (d->n && !d->f[d->n - 1].ctx) d->n--;
    Py_XDECREF(ctx);
}

/* The sooner of `deadline` and the frames that apply to the current context. */
static int64_t frames_deadline(const dl_stack *d, int64_t deadline) {
    PyObject *ctx = current_context();
    for (int depth = 0; ctx && depth < 64; depth++) {
        for (int i = d->n - 1; i >= 0; i--)
            if (d->f[i].ctx == ctx && d->f[i].deadline < deadline) deadline = d->f[i].deadline;
        if (!walk_prev) break;
        ctx = ((ctx_head *)ctx)->ctx_prev;
    }
    return deadline;
}

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
    const dl_stack *d = dl;
    if (d && d->n) deadline = frames_deadline(d, deadline);
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

/* _timeout_enter(ns): the async Timeout's entry in one call: the deadline in
 * effect inside (ns from now, or a sooner outer one) set in DEADLINE; returns
 * (token, seconds left), or None when that deadline has already passed. */
static PyObject *timeout_enter(PyObject *m, PyObject *arg) {
    prs_py_state *st = PyModule_GetState(m);
    PyObject *var = st->slots[PRS_SLOT_DeadlineVar];
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred()) return NULL;
    if (ns < 0) {
        PyErr_Format(PyExc_ValueError, "ns must be >= 0, got %lld", ns);
        return NULL;
    }
    int64_t deadline;
    if (prs_py_deadline_abs(var, &deadline) < 0) return NULL;
    int64_t now = prs_monotonic_ns(), mine = prs__sat_add(now, (int64_t)ns);
    if (mine < deadline) deadline = mine;
    if (deadline <= now) Py_RETURN_NONE;
    PyObject *value = PyLong_FromLongLong(deadline);
    if (!value) return NULL;
    PyObject *token = PyContextVar_Set(var, value);
    Py_DECREF(value);
    if (!token) return NULL;
    PyObject *left = PyFloat_FromDouble((double)(deadline - now) / 1e9);
    PyObject *out = left ? PyTuple_Pack(2, token, left) : NULL;
    Py_XDECREF(left);
    if (!out) {
        PRS_PY_EXC_SAVE(saved);
        if (PyContextVar_Reset(var, token) < 0) PyErr_Clear();
        PRS_PY_EXC_RESTORE(saved);
    }
    Py_DECREF(token);
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
    if (PyModule_AddObjectRef(m, "DEADLINE", var) < 0) {
        Py_DECREF(var);
        return -1;
    }
    Py_XSETREF(st->slots[PRS_SLOT_DeadlineVar], var);
    return 0;
}

#include "gen/deadline.h"
