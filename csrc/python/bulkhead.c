/*
 * bulkhead.c - _core.Bulkhead over prs_bulkhead.
 *
 * Sync waits: try without blocking; then queue a BLOCKING core waiter (on this
 * thread's C stack) and wait with prs_py_cond_wait() (wait.h): the GIL
 * released, signals checked, and an interrupted wait takes nothing.
 *
 * Async waits (driven by pyresilience/bulkhead.py): _acquire_async() takes a
 * permit at once or queues an _AsyncWaiter in the same FIFO as the threads;
 * release() hands the permit to it and wakes its future; the coroutine then
 * settles it with _finish(): ACCEPT keeps the permit, CANCEL (task cancelled)
 * gives it back, exactly once (the core waiter's state decides).
 */
#include "wait.h"

#include <math.h>

typedef struct {
    PyObject_HEAD
    prs_bulkhead *core;    /* made in tp_new, never NULL */
    PyObject *name;        /* str */
    PyTypeObject *ready;   /* strong: the module's _Ready type (async with fast path) */
    int64_t max_wait_ns;   /* PRS_NEVER: wait forever */
    double max_wait_s;
    PyObject *weakreflist;
} bh_obj;

/* The constructor's arguments: the core's config and the binding's wait. */
typedef struct {
    prs_bulkhead_config core;
    double max_wait_s;
} bh_args;

static void bh_args_init(bh_args *a) {
    prs_bulkhead_config_init(&a->core);
    a->max_wait_s = 30.0;
}

static int bh_args_check(const bh_args *a, prs_config_error *why) {
    return prs_bulkhead_config_check(&a->core, why);
}

#include "gen/bulkhead.h"

#define SELF ((bh_obj *)self)

static PyObject *bh_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st;
    bh_args a;
    PyObject *v[P_Bulkhead__COUNT];
    if (Bulkhead_parse(type, args, kwds, &st, &a, v) < 0) return NULL;
    if (PyUnicode_GET_LENGTH(v[P_Bulkhead_name]) == 0) {
        PyErr_SetString(PyExc_ValueError, "name must be a non-empty str, got ''");
        return NULL;
    }
    bh_obj *self = (bh_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    int rc = prs_bulkhead_new(&a.core, &self->core);
    if (rc) {
        Py_DECREF(self);
        return prs_py_error(st, rc, NULL);
    }
    self->ready = (PyTypeObject *)Py_NewRef(st->slots[PRS_SLOT_Ready]);
    self->name = Py_NewRef(v[P_Bulkhead_name]);
    self->max_wait_s = a.max_wait_s;
    self->max_wait_ns = isinf(a.max_wait_s) ? PRS_NEVER : prs_seconds_to_ns(a.max_wait_s);
    return (PyObject *)self;
}

/* A fresh BulkheadFullError (new reference), or NULL with an exception. */
static PyObject *full_error(PyObject *self) {
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    int64_t est = prs_bulkhead_estimate_wait_ns(SELF->core, prs_monotonic_ns());
    PyObject *msg = PyUnicode_FromFormat("Bulkhead '%U' is full (%lld concurrent operations)",
                                         SELF->name, (long long)prs_bulkhead_max_concurrent(SELF->core));
    if (!msg) return NULL;
    /* always an estimate: the observed mean hold, or the core's prior (1 s)
     * before any slot came back */
    PyObject *retry = PyFloat_FromDouble(prs_py_ns_to_s(est));
    if (!retry) { Py_DECREF(msg); return NULL; }
    PyObject *kw = Py_BuildValue("(ss)", "retry_after", "name");
    PyObject *exc = NULL;
    if (kw) {
        PyObject *all[3] = {msg, retry, SELF->name};
        exc = PyObject_Vectorcall(PRS_PY_EXC(st, BulkheadFullError), all, 1, kw);
        Py_DECREF(kw);
    }
    Py_DECREF(msg);
    Py_DECREF(retry);
    return exc;
}

static int raise_full(PyObject *self) {
    PyObject *exc = full_error(self);
    if (!exc) return -1;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return -1;
}

/* Wakes the asyncio waiters served by a core call (linked by `next`): one that
 * cannot be woken (its loop is gone) gives its permit back, which may serve
 * the next one. */
static void deliver(prs_bulkhead_waiter *woken) {
    while (woken) {
        prs_bulkhead_waiter *next = woken->next;
        woken->next = NULL;
        prs_py_waiter_served(woken->data);
        woken = next;
    }
}

static int bh_wait(void *core, void *waiter, int64_t deadline_ns) {
    return prs_bulkhead_wait(core, waiter, deadline_ns);
}

static int bh_settle(PyObject *self, void *waiter, int cancel, prs_py_settled *out) {
    prs_bulkhead_waiter *woken = NULL;
    prs_bulkhead_finish(SELF->core, waiter, cancel ? PRS_BULKHEAD_FINISH_CANCEL : PRS_BULKHEAD_FINISH_ACCEPT,
                        prs_monotonic_ns(), &out->outcome, &woken);
    deliver(woken);
    return out->outcome == PRS_BULKHEAD_REJECTED || out->outcome == PRS_BULKHEAD_CANCELLED;
}

static const prs_py_cond_ops bh_ops = {bh_wait, bh_settle};

/* Takes a permit, waiting up to timeout_ns (PRS_NEVER: forever). 0, or -1 with
 * BulkheadFullError (counted as rejected) or the exception of a signal handler. */
static int acquire_sync(PyObject *self, int64_t timeout_ns) {
    int got;
    int64_t now = prs_monotonic_ns();
    prs_bulkhead_try_acquire(SELF->core, now, timeout_ns == 0, &got);
    if (got) return 0;
    if (timeout_ns == 0) return raise_full(self);
    prs_bulkhead_waiter w;
    int rc = prs_bulkhead_waiter_init(&w, 1, NULL);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    prs_py_settled out = {0, NULL};
    prs_bulkhead_acquire(SELF->core, now, &w, &out.outcome);
    if (out.outcome == PRS_BULKHEAD_WAITING) rc = prs_py_cond_wait(&bh_ops, self, SELF->core, &w, timeout_ns, &out);
    prs_bulkhead_waiter_destroy(&w);
    if (rc < 0) return -1;
    return out.outcome == PRS_BULKHEAD_ACQUIRED ? 0 : raise_full(self);
}

int prs_py_bulkhead_try_at(PyObject *self, int64_t now) {
    int got = 0;
    prs_bulkhead_try_acquire(SELF->core, now, 0, &got);
    return got;
}

static int release_one(PyObject *self) { return prs_py_bulkhead_release_at(self, prs_monotonic_ns()); }

int prs_py_bulkhead_release_at(PyObject *self, int64_t now) {
    prs_bulkhead_waiter *woken = NULL;
    int rc = prs_bulkhead_release(SELF->core, now, &woken);
    if (rc == PRS_ESTATE) {
        PyErr_Format(PyExc_RuntimeError, "Bulkhead '%U' released more times than acquired", SELF->name);
        return -1;
    }
    deliver(woken);
    return 0;
}

/* In a child process after fork (pyresilience.bulkhead's at-fork hook): a new
 * lock, the parent's threads out of the queue, permits handed to them back. */
static PyObject *bh_after_fork_child(PyObject *self, PyObject *unused) {
    prs_bulkhead_waiter *woken = NULL;
    int rc = prs_bulkhead_after_fork_child(SELF->core, &woken);
    if (rc) return prs_py_error(prs_py_state_of(self), rc, "cannot re-create the Bulkhead's lock after fork");
    deliver(woken); /* asyncio waiters served by the permits given back */
    Py_RETURN_NONE;
}

static const char *const acquire_names[] = {"timeout", NULL};

static PyObject *bh_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1];
    if (prs_py_unpack("acquire", args, nargs, kwnames, acquire_names, 1, 0, v) < 0) return NULL;
    int64_t timeout_ns = SELF->max_wait_ns;
    if (v[0] && v[0] != Py_Ellipsis && prs_py_parse_timeout(v[0], "timeout", &timeout_ns) < 0) return NULL;
    if (acquire_sync(self, timeout_ns) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *bh_try_acquire(PyObject *self, PyObject *unused) {
    int got;
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), 0, &got);
    return PyBool_FromLong(got);
}

static PyObject *bh_release(PyObject *self, PyObject *unused) {
    if (release_one(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *bh_enter(PyObject *self, PyObject *unused) {
    if (acquire_sync(self, SELF->max_wait_ns) < 0) return NULL;
    return Py_NewRef(self);
}

static PyObject *bh_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (release_one(self) < 0) return NULL;
    Py_RETURN_FALSE;
}

/* _acquire_async(get_running_loop, wait): True (acquired now), False (no
 * permit and wait is false: counted as rejected), or a queued _AsyncWaiter. */
static PyObject *bh_acquire_async(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_acquire_async(get_running_loop, wait)");
        return NULL;
    }
    int wait = args[1] == Py_None ? SELF->max_wait_ns != 0 : PyObject_IsTrue(args[1]);
    if (wait < 0) return NULL;
    int got, outcome;
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), !wait, &got);
    if (got || !wait) return PyBool_FromLong(got);
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    prs_py_waiter *w = prs_py_waiter_new(st, self, PRS_PY_WAITER_BULKHEAD, args[0], &bh_ops);
    if (!w) return NULL;
    prs_bulkhead_acquire(SELF->core, prs_monotonic_ns(), &w->u.b, &outcome);
    if (outcome == PRS_BULKHEAD_ACQUIRED) {
        prs_py_waiter_discard(w);
        Py_RETURN_TRUE;
    }
    return (PyObject *)w;
}

/* async with: a slot free now -> an already-done awaitable (no coroutine);
 * else the coroutine self._aenter_slow(). */
static PyObject *bh_aenter(PyObject *self, PyObject *unused) {
    int got;
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), 0, &got);
    if (got) return prs_py_ready_new(SELF->ready, self);
    return PyObject_CallMethod(self, "_aenter_slow", NULL);
}

static PyObject *bh_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (release_one(self) < 0) return NULL;
    return prs_py_ready_new(SELF->ready, Py_None);
}

/* _finish(waiter, cancel): True when the waiter holds a permit now (ACCEPT
 * and served), else False (timed out: counted as rejected; or cancelled: a
 * permit it was handed went back). Idempotent: a settled waiter gives False. */
static PyObject *bh_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int cancel;
    prs_py_waiter *w = prs_py_waiter_args(self, "_finish", args, nargs, PRS_PY_WAITER_BULKHEAD, &cancel);
    if (!w) return NULL;
    prs_py_settled out;
    if (prs_py_waiter_finish(w, cancel, &out)) Py_RETURN_FALSE; /* settled already */
    return PyBool_FromLong(out.outcome == PRS_BULKHEAD_ACQUIRED);
}

static PyObject *bh_full_error(PyObject *self, PyObject *unused) {
    return full_error(self);
}

static PyObject *bh_stats(PyObject *self, PyObject *unused) {
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(SELF->core, &s);
    PyObject *hold = s.avg_hold_ns < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble((double)s.avg_hold_ns / 1e9);
    if (!hold) return NULL;
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:N}", "max_concurrent", (long long)s.max_concurrent,
                         "active_count", (long long)s.active, "available", (long long)s.available,
                         "waiting_count", (long long)s.waiting, "acquired_count", (long long)s.acquired_total,
                         "released_count", (long long)s.released_total, "rejected_count",
                         (long long)s.rejected_total, "cancelled_count", (long long)s.cancelled_total,
                         "average_hold_seconds", hold);
}

/* The properties, by closure index (tools/decl_bulkhead.py). */
static PyObject *bh_attr(PyObject *self, void *closure) {
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(SELF->core, &s);
    switch ((int)(intptr_t)closure) {
    case 0: return PyLong_FromLongLong(s.max_concurrent);
    case 1: return PyFloat_FromDouble(SELF->max_wait_s);
    case 2: return PyLong_FromLongLong(s.active);
    case 3: return PyLong_FromLongLong(s.available);
    case 4: return PyLong_FromLongLong(s.waiting);
    default: return PyLong_FromLongLong(s.rejected_total);
    }
}

int prs_py_register_bulkhead(PyObject *m, prs_py_state *st) {
    if (prs_py_register_waiter(m, st) < 0) return -1;
    return bulkhead_add_types(m, st);
}
