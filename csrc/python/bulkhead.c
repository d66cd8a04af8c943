/*
 * bulkhead.c - _core.Bulkhead over prs_bulkhead, and the _AsyncWaiter type
 * shared with queue.c (bulkhead.h).
 *
 * Sync waits: try without blocking; then queue a BLOCKING core waiter (on this
 * thread's C stack) and wait on its condition variable with the GIL released,
 * in slices of at most 50 ms against an absolute monotonic deadline; between
 * slices re-take the GIL and run PyErr_CheckSignals(). A wait that times out
 * or is interrupted takes nothing: finish(CANCEL) gives back a permit handed
 * over at the last moment (signals are checked after every slice, also the
 * one in which the permit came).
 *
 * Async waits (driven by pyresilience/bulkhead.py): _acquire_async() takes a
 * permit at once or queues an _AsyncWaiter in the same FIFO as the threads;
 * release() hands the permit to it and wakes its future; the coroutine then
 * settles it with _finish(): ACCEPT keeps the permit, CANCEL (task cancelled)
 * gives it back, exactly once (the core waiter's state decides).
 */
#include "bulkhead.h"

#include <math.h>

#define SLICE_NS (50 * PRS_NS_PER_MS)

/* ======================================================================== */
/* _AsyncWaiter                                                              */
/* ======================================================================== */

#define W ((prs_py_waiter *)self)

prs_py_waiter *prs_py_waiter_new(prs_py_state *st, PyObject *owner, int kind, PyObject *get_loop) {
    if (!PyCallable_Check(get_loop)) {
        PyErr_SetString(PyExc_TypeError, "get_running_loop must be callable");
        return NULL;
    }
    PyObject *loop = PyObject_CallNoArgs(get_loop);
    if (!loop) return NULL;
    if (loop == Py_None) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "no running event loop");
        return NULL;
    }
    PyObject *fut = PyObject_CallMethod(loop, "create_future", NULL);
    if (!fut) { Py_DECREF(loop); return NULL; }
    PyTypeObject *tp = PRS_PY_TYPE(st, AsyncWaiter);
    prs_py_waiter *w = PyObject_GC_New(prs_py_waiter, tp);
    if (!w) { Py_DECREF(loop); Py_DECREF(fut); return NULL; }
    w->owner = Py_NewRef(owner);
    w->loop = loop;
    w->future = fut;
    w->get_loop = Py_NewRef(get_loop);
    w->kind = kind;
    w->settled = 0;
    w->abandon = NULL;
    if (kind == PRS_PY_WAITER_BULKHEAD) prs_bulkhead_waiter_init(&w->u.b, 0, w);
    else prs_ring_waiter_init(&w->u.r, kind == PRS_PY_WAITER_PUT, 0, w);
    PyObject_GC_Track(w);
    return w;
}

int prs_py_waiter_check(prs_py_state *st, PyObject *o, PyObject *owner, int kind) {
    if (!PyObject_TypeCheck(o, PRS_PY_TYPE(st, AsyncWaiter)) || ((prs_py_waiter *)o)->owner != owner ||
        ((prs_py_waiter *)o)->kind != kind) {
        PyErr_Format(PyExc_TypeError, "expected a waiter of this object, not %.200s", Py_TYPE(o)->tp_name);
        return 0;
    }
    return 1;
}

/* future.set_result(None) unless the future is done already. */
static int waiter_resolve(prs_py_waiter *w) {
    PyObject *done = PyObject_CallMethod(w->future, "done", NULL);
    if (!done) return -1;
    int d = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (d < 0) return -1;
    if (d) return 0;
    PyObject *r = PyObject_CallMethod(w->future, "set_result", "O", Py_None);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

int prs_py_waiter_wake(prs_py_waiter *w) {
    PyObject *running = PyObject_CallNoArgs(w->get_loop);
    if (!running) return -1;
    int same = running == w->loop;
    Py_DECREF(running);
    if (same) return waiter_resolve(w);
    PyObject *r = PyObject_CallMethod(w->loop, "call_soon_threadsafe", "O", (PyObject *)w);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *waiter_call(PyObject *self, PyObject *args, PyObject *kwds) {
    if (waiter_resolve(W) < 0) return NULL;
    Py_RETURN_NONE;
}

static int waiter_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(W->owner);
    Py_VISIT(W->loop);
    Py_VISIT(W->future);
    Py_VISIT(W->get_loop);
    return 0;
}

static int waiter_clear(PyObject *self) {
    Py_CLEAR(W->loop);
    Py_CLEAR(W->future);
    Py_CLEAR(W->get_loop);
    return 0;
}

static void waiter_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    /* Never queued here (the queue holds a reference). Served but never
     * settled: give back what it was handed. */
    if (!W->settled && W->abandon && W->owner) {
        /* The abandon hook touches only the core waiter and other waiters. */
        PRS_PY_EXC_SAVE(saved);
        W->abandon(W);
        W->settled = 1;
        PRS_PY_EXC_RESTORE(saved);
    }
    if (W->kind == PRS_PY_WAITER_BULKHEAD) prs_bulkhead_waiter_destroy(&W->u.b);
    else prs_ring_waiter_destroy(&W->u.r);
    waiter_clear(self);
    Py_CLEAR(W->owner);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *waiter_get_future(PyObject *self, void *c) {
    if (!W->future) Py_RETURN_NONE;
    return Py_NewRef(W->future);
}

static PyGetSetDef waiter_getset[] = {
    {"future", waiter_get_future, NULL, "The asyncio future woken when this waiter is served.", NULL},
    {NULL},
};

static PyType_Slot waiter_slots[] = {
    {Py_tp_doc, "_AsyncWaiter()\n--\n\n"
                "A queued asyncio waiter of a Bulkhead or queue (internal; made by them)."},
    {Py_tp_call, waiter_call},
    {Py_tp_dealloc, waiter_dealloc},
    {Py_tp_traverse, waiter_traverse},
    {Py_tp_clear, waiter_clear},
    {Py_tp_getset, waiter_getset},
    {0, NULL},
};

static PyType_Spec waiter_spec = {
    "pyresilience._core._AsyncWaiter", sizeof(prs_py_waiter), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    waiter_slots,
};

/* ---- _Ready: an awaitable that is already done (fast paths of async with) */

typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once delivered */
} ready_obj;

/* A new _Ready of type `tp` (the module's, cached by each Bulkhead). */
static PyObject *ready_new_value(PyTypeObject *tp, PyObject *value) {
    ready_obj *r = PyObject_New(ready_obj, tp);
    if (!r) return NULL;
    Py_INCREF(tp);
    r->value = Py_NewRef(value);
    return (PyObject *)r;
}

static PyObject *ready_await(PyObject *self) { return Py_NewRef(self); }

static PyObject *ready_next(PyObject *self) {
    PyObject *v = ((ready_obj *)self)->value;
    if (!v) return NULL; /* exhausted: StopIteration */
    ((ready_obj *)self)->value = NULL;
    if (v == Py_None) { Py_DECREF(v); return NULL; }
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, v);
    Py_DECREF(v);
    if (!exc) return NULL;
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *ready_send(PyObject *self, PyObject *arg) { return ready_next(self); }

static void ready_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(((ready_obj *)self)->value);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyMethodDef ready_methods[] = {
    {"send", ready_send, METH_O, "send($self, value, /)\n--\n\nFinish: raise StopIteration(result)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ready_slots[] = {
    {Py_tp_doc, "_Ready()\n--\n\nAn awaitable that is already done (internal)."},
    {Py_am_await, ready_await},
    {Py_tp_iter, ready_await},
    {Py_tp_iternext, ready_next},
    {Py_tp_methods, ready_methods},
    {Py_tp_dealloc, ready_dealloc},
    {0, NULL},
};

/* Holds only its result, which it drops when awaited: no GC needed (a cycle
 * through an un-awaited _Ready is freed with the object that made it). */
static PyType_Spec ready_spec = {
    "pyresilience._core._Ready", sizeof(ready_obj), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION, ready_slots,
};

int prs_py_register_waiter(PyObject *m, prs_py_state *st) {
    if (prs_py_add_type(m, st, PRS_SLOT_AsyncWaiter, &waiter_spec, NULL) < 0) return -1;
    return prs_py_add_type(m, st, PRS_SLOT_Ready, &ready_spec, NULL);
}

#undef W

/* ======================================================================== */
/* Bulkhead                                                                  */
/* ======================================================================== */

typedef struct {
    PyObject_HEAD
    prs_bulkhead *core;    /* NULL until __init__ succeeded */
    PyObject *name;        /* str */
    PyTypeObject *ready;   /* strong: the module's _Ready type (async with fast path) */
    int64_t max_wait_ns;   /* PRS_NEVER: wait forever */
    double max_wait_s;
    PyObject *weakreflist;
} bh_obj;

#define SELF ((bh_obj *)self)

static int ensure_init(PyObject *self) {
    if (SELF->core) return 0;
    PyErr_Format(PyExc_RuntimeError, "%.200s object is not initialised (call __init__)",
                 Py_TYPE(self)->tp_name);
    return -1;
}

static PyObject *bh_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    bh_obj *self = (bh_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->core = NULL;
    self->name = NULL;
    self->ready = NULL;
    self->max_wait_ns = 0;
    self->max_wait_s = 0.0;
    self->weakreflist = NULL;
    return (PyObject *)self;
}

static int bh_init(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"name", "max_concurrent", "max_wait_seconds", NULL};
    PyObject *name, *max_o, *wait_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:Bulkhead", kwlist, &name, &max_o, &wait_o))
        return -1;
    if (SELF->core) {
        PyErr_Format(PyExc_RuntimeError, "%.200s is already initialised", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.200s: %R", Py_TYPE(name)->tp_name, name);
        return -1;
    }
    if (PyUnicode_GET_LENGTH(name) == 0) {
        PyErr_SetString(PyExc_ValueError, "name must be a non-empty str, got ''");
        return -1;
    }
    prs_bulkhead_config cfg;
    prs_bulkhead_config_init(&cfg);
    if (prs_py_parse_count(max_o, "max_concurrent", 1, PRS_BULKHEAD_MAX, &cfg.max_concurrent) < 0)
        return -1;
    double wait_s = 30.0;
    if (wait_o && prs_py_parse_real(wait_o, "max_wait_seconds", PRS_PY_ZERO_OK | PRS_PY_INF_OK, &wait_s) < 0)
        return -1;
    prs_bulkhead *core;
    int rc = prs_bulkhead_new(&cfg, &core);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, "invalid Bulkhead configuration"); return -1; }
    prs_py_state *st = prs_py_state_of(self);
    if (!st) { prs_bulkhead_free(core); return -1; }
    SELF->core = core;
    SELF->ready = (PyTypeObject *)Py_NewRef(st->slots[PRS_SLOT_Ready]);
    SELF->name = Py_NewRef(name);
    SELF->max_wait_s = wait_s;
    SELF->max_wait_ns = isinf(wait_s) ? PRS_NEVER : prs_seconds_to_ns(wait_s);
    return 0;
}

static int bh_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(SELF->name);
    Py_VISIT(SELF->ready);
    return 0;
}

static int bh_clear(PyObject *self) {
    return 0; /* holds only a str and a type: no cycle to break */
}

static void bh_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (SELF->weakreflist) PyObject_ClearWeakRefs(self);
    /* No waiter can be queued: each holds a reference to this object. */
    prs_bulkhead_free(SELF->core);
    SELF->core = NULL;
    Py_CLEAR(SELF->name);
    Py_CLEAR(SELF->ready);
    tp->tp_free(self);
    Py_DECREF(tp);
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

/* Wakes the asyncio waiters served by a core call. A waiter that cannot be
 * woken (its loop is gone) gives its permit back, which may serve the next
 * one. Drops the core's reference of each. Errors are reported as unraisable:
 * the permit bookkeeping is already done. */
static void deliver(PyObject *self, prs_bulkhead_waiter *woken) {
    while (woken) {
        prs_py_waiter *w = woken->data;
        woken = NULL;
        if (prs_py_waiter_wake(w) < 0) {
            PyErr_WriteUnraisable((PyObject *)w);
            int outcome;
            prs_bulkhead_finish(SELF->core, &w->u.b, PRS_BULKHEAD_FINISH_CANCEL, prs_monotonic_ns(),
                                &outcome, &woken);
            w->settled = 1;
        }
        Py_DECREF(w);
    }
}

static void waiter_abandon(prs_py_waiter *w) {
    PyObject *self = w->owner;
    int outcome;
    prs_bulkhead_waiter *woken = NULL;
    prs_bulkhead_finish(SELF->core, &w->u.b, PRS_BULKHEAD_FINISH_CANCEL, prs_monotonic_ns(), &outcome,
                        &woken);
    deliver(self, woken);
}

/* Takes a permit, waiting up to timeout_ns (PRS_NEVER: forever). 0, or -1 with
 * BulkheadFullError (counted as rejected) or the exception of a signal handler. */
static int acquire_sync(PyObject *self, int64_t timeout_ns) {
    int got, outcome;
    int64_t now = prs_monotonic_ns();
    prs_bulkhead_try_acquire(SELF->core, now, timeout_ns == 0, &got);
    if (got) return 0;
    if (timeout_ns == 0) return raise_full(self);
    prs_bulkhead_waiter w;
    int rc = prs_bulkhead_waiter_init(&w, 1, NULL);
    if (rc) { prs_py_error(prs_py_state_of(self), rc, NULL); return -1; }
    prs_bulkhead_acquire(SELF->core, now, &w, &outcome);
    if (outcome == PRS_BULKHEAD_ACQUIRED) { prs_bulkhead_waiter_destroy(&w); return 0; }
    int64_t deadline = timeout_ns == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, timeout_ns);
    prs_bulkhead *core = SELF->core;
    for (;;) {
        int64_t slice_end = prs__sat_add(now, SLICE_NS);
        if (deadline != PRS_NEVER && deadline < slice_end) slice_end = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = prs_bulkhead_wait(core, &w, slice_end);
        Py_END_ALLOW_THREADS
        /* Signals first, served or not: a permit handed over in the slice in
         * which a signal came would otherwise be kept while the handler's
         * exception (KeyboardInterrupt) is raised after we return. */
        if (PyErr_CheckSignals() < 0) {
            prs_bulkhead_waiter *woken = NULL;
            prs_bulkhead_finish(core, &w, PRS_BULKHEAD_FINISH_CANCEL, prs_monotonic_ns(), &outcome, &woken);
            prs_bulkhead_waiter_destroy(&w);
            PRS_PY_EXC_SAVE(saved);
            deliver(self, woken);
            PRS_PY_EXC_RESTORE(saved);
            return -1;
        }
        if (rc == PRS_OK) break;
        now = prs_monotonic_ns();
        if (deadline != PRS_NEVER && now >= deadline) break;
    }
    prs_bulkhead_finish(core, &w, PRS_BULKHEAD_FINISH_ACCEPT, prs_monotonic_ns(), &outcome, NULL);
    prs_bulkhead_waiter_destroy(&w);
    if (outcome == PRS_BULKHEAD_ACQUIRED) return 0;
    return raise_full(self);
}

static int release_one(PyObject *self) {
    prs_bulkhead_waiter *woken = NULL;
    int rc = prs_bulkhead_release(SELF->core, prs_monotonic_ns(), &woken);
    if (rc == PRS_ESTATE) {
        PyErr_Format(PyExc_RuntimeError, "Bulkhead '%U' released more times than acquired", SELF->name);
        return -1;
    }
    deliver(self, woken);
    return 0;
}

/* In a child process after fork (pyresilience.bulkhead's at-fork hook): a new
 * lock, the parent's threads out of the queue, permits handed to them back. */
static PyObject *bh_after_fork_child(PyObject *self, PyObject *unused) {
    if (!SELF->core) Py_RETURN_NONE; /* never initialised: nothing inherited */
    prs_bulkhead_waiter *woken = NULL;
    int rc = prs_bulkhead_after_fork_child(SELF->core, &woken);
    if (rc) return prs_py_error(prs_py_state_of(self), rc, "cannot re-create the Bulkhead's lock after fork");
    while (woken) { /* asyncio waiters served by the permits given back */
        prs_bulkhead_waiter *next = woken->next;
        woken->next = NULL;
        deliver(self, woken);
        woken = next;
    }
    Py_RETURN_NONE;
}

static const char *const acquire_names[] = {"timeout", NULL};

static PyObject *bh_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1];
    if (prs_py_unpack("acquire", args, nargs, kwnames, acquire_names, 1, v) < 0) return NULL;
    if (ensure_init(self) < 0) return NULL;
    int64_t timeout_ns = SELF->max_wait_ns;
    if (v[0] && v[0] != Py_Ellipsis && prs_py_parse_timeout(v[0], "timeout", &timeout_ns) < 0) return NULL;
    if (acquire_sync(self, timeout_ns) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *bh_try_acquire(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    int got;
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), 0, &got);
    return PyBool_FromLong(got);
}

static PyObject *bh_release(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0 || release_one(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *bh_enter(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0 || acquire_sync(self, SELF->max_wait_ns) < 0) return NULL;
    return Py_NewRef(self);
}

static PyObject *bh_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (ensure_init(self) < 0 || release_one(self) < 0) return NULL;
    Py_RETURN_FALSE;
}

/* _acquire_async(get_running_loop, wait): True (acquired now), False (no
 * permit and wait is false: counted as rejected), or a queued _AsyncWaiter. */
static PyObject *bh_acquire_async(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_acquire_async(get_running_loop, wait)");
        return NULL;
    }
    if (ensure_init(self) < 0) return NULL;
    int wait = args[1] == Py_None ? SELF->max_wait_ns != 0 : PyObject_IsTrue(args[1]);
    if (wait < 0) return NULL;
    int got, outcome;
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), !wait, &got);
    if (got || !wait) return PyBool_FromLong(got);
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    prs_py_waiter *w = prs_py_waiter_new(st, self, PRS_PY_WAITER_BULKHEAD, args[0]);
    if (!w) return NULL;
    w->abandon = waiter_abandon;
    Py_INCREF(w); /* the queue's reference */
    prs_bulkhead_acquire(SELF->core, prs_monotonic_ns(), &w->u.b, &outcome);
    if (outcome == PRS_BULKHEAD_ACQUIRED) {
        Py_DECREF(w);
        w->settled = 1;
        Py_DECREF(w);
        Py_RETURN_TRUE;
    }
    return (PyObject *)w;
}

/* async with: a slot free now -> an already-done awaitable (no coroutine);
 * else the coroutine self._acquire_slow(result, max_wait_seconds) + self. */
static PyObject *bh_aenter(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    int got;
    prs_bulkhead_try_acquire(SELF->core, prs_monotonic_ns(), 0, &got);
    if (got) return ready_new_value(SELF->ready, self);
    return PyObject_CallMethod(self, "_aenter_slow", NULL);
}

static PyObject *bh_aexit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (ensure_init(self) < 0 || release_one(self) < 0) return NULL;
    return ready_new_value(SELF->ready, Py_None);
}

/* _finish(waiter, cancel): True when the waiter holds a permit now (ACCEPT
 * and served), else False (timed out: counted as rejected; or cancelled: a
 * permit it was handed went back). Idempotent: a settled waiter gives False. */
static PyObject *bh_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_finish(waiter, cancel)");
        return NULL;
    }
    prs_py_state *st = prs_py_state_of(self);
    if (!st || ensure_init(self) < 0) return NULL;
    if (!prs_py_waiter_check(st, args[0], self, PRS_PY_WAITER_BULKHEAD)) return NULL;
    int cancel = PyObject_IsTrue(args[1]);
    if (cancel < 0) return NULL;
    prs_py_waiter *w = (prs_py_waiter *)args[0];
    if (w->settled) Py_RETURN_FALSE;
    int outcome;
    prs_bulkhead_waiter *woken = NULL;
    prs_bulkhead_finish(SELF->core, &w->u.b, cancel ? PRS_BULKHEAD_FINISH_CANCEL : PRS_BULKHEAD_FINISH_ACCEPT,
                        prs_monotonic_ns(), &outcome, &woken);
    w->settled = 1;
    if (outcome == PRS_BULKHEAD_REJECTED || outcome == PRS_BULKHEAD_CANCELLED)
        Py_DECREF(w); /* it was still queued: the queue's reference is ours to drop */
    deliver(self, woken);
    return PyBool_FromLong(outcome == PRS_BULKHEAD_ACQUIRED);
}

static PyObject *bh_full_error(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    return full_error(self);
}

static PyObject *bh_stats(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
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

#define STAT_GETTER(fn, field)                                               \
    static PyObject *fn(PyObject *self, void *c) {                          \
        if (ensure_init(self) < 0) return NULL;                              \
        prs_bulkhead_stats s;                                                \
        prs_bulkhead_stats_get(SELF->core, &s);                              \
        return PyLong_FromLongLong(s.field);                                 \
    }
STAT_GETTER(bh_get_active, active)
STAT_GETTER(bh_get_available, available)
STAT_GETTER(bh_get_waiting, waiting)
STAT_GETTER(bh_get_rejected, rejected_total)
STAT_GETTER(bh_get_max, max_concurrent)

static PyObject *bh_get_name(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return Py_NewRef(SELF->name);
}

static PyObject *bh_get_max_wait(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyFloat_FromDouble(SELF->max_wait_s);
}

static PyMethodDef bh_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))bh_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, timeout=...)\n--\n\n"
     "Take a slot, waiting up to `timeout` seconds (... default: max_wait_seconds;\n"
     "None or math.inf: no limit; 0: fail at once). Waiters are served first\n"
     "come, first served, threads and asyncio tasks alike. The GIL is released\n"
     "while waiting and Ctrl-C interrupts the wait (nothing is taken). Raises\n"
     "BulkheadFullError (counted in rejected_count) when no slot frees in time.\n"
     "Pair every acquire() with one release()."},
    {"try_acquire", bh_try_acquire, METH_NOARGS,
     "try_acquire($self, /)\n--\n\n"
     "Take a slot if one is free and nobody is waiting: True, else False (not\n"
     "counted as a rejection)."},
    {"release", bh_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Give a slot back (to the oldest waiter, if any). RuntimeError when no slot is held."},
    {"__enter__", bh_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nacquire() with max_wait_seconds; returns the bulkhead."},
    {"__exit__", (PyCFunction)(void (*)(void))bh_exit, METH_FASTCALL,
     "__exit__($self, exc_type, exc, tb, /)\n--\n\nrelease(); never suppresses the exception."},
    {"__aenter__", bh_aenter, METH_NOARGS,
     "__aenter__($self, /)\n--\n\n"
     "async with: take a slot (waiting up to max_wait_seconds without blocking the\n"
     "event loop; BulkheadFullError when none frees); the bulkhead is the value."},
    {"__aexit__", (PyCFunction)(void (*)(void))bh_aexit, METH_FASTCALL,
     "__aexit__($self, exc_type, exc, tb, /)\n--\n\nRelease the slot; never suppresses the exception."},
    {"_acquire_async", (PyCFunction)(void (*)(void))bh_acquire_async, METH_FASTCALL,
     "_acquire_async($self, get_running_loop, wait, /)\n--\n\n"
     "Internal (asyncio form): True if a slot was taken, False if none and\n"
     "wait is false (None: max_wait_seconds is 0) - a rejection - else a\n"
     "queued waiter whose .future is woken\n"
     "when a slot is handed to it."},
    {"_finish", (PyCFunction)(void (*)(void))bh_finish, METH_FASTCALL,
     "_finish($self, waiter, cancel, /)\n--\n\n"
     "Internal: settle a waiter. cancel=False: True if it holds a slot, False if\n"
     "it timed out (a rejection). cancel=True: a slot it was handed goes back."},
    {"_after_fork_child", bh_after_fork_child, METH_NOARGS,
     "_after_fork_child($self, /)\n--\n\n"
     "Internal: call in a child process right after fork, with one thread\n"
     "running (pyresilience.bulkhead's os.register_at_fork hook does): a new\n"
     "lock; the parent's threads leave the queue and a slot handed to one of\n"
     "them comes back. asyncio waiters stay queued."},
    {"_full_error", bh_full_error, METH_NOARGS,
     "_full_error($self, /)\n--\n\nInternal: a new BulkheadFullError for this bulkhead."},
    {"_stats", bh_stats, METH_NOARGS,
     "_stats($self, /)\n--\n\nInternal: a dict snapshot of every counter."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef bh_getset[] = {
    {"name", bh_get_name, NULL, "The bulkhead's name.", NULL},
    {"max_concurrent", bh_get_max, NULL, "Slots in the bulkhead.", NULL},
    {"max_wait_seconds", bh_get_max_wait, NULL, "Default wait for a slot, in seconds.", NULL},
    {"active_count", bh_get_active, NULL, "Slots held now.", NULL},
    {"available", bh_get_available, NULL, "Slots free now (max_concurrent - active_count).", NULL},
    {"waiting_count", bh_get_waiting, NULL, "Callers waiting for a slot now.", NULL},
    {"rejected_count", bh_get_rejected, NULL, "Calls refused because no slot freed in time.", NULL},
    {NULL},
};

static PyMemberDef bh_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(bh_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot bh_slots[] = {
    {Py_tp_doc, "Bulkhead(name, max_concurrent, max_wait_seconds=30.0)\n--\n\n"
                "At most max_concurrent callers at once; others wait up to\n"
                "max_wait_seconds for a slot, first come, first served. The C core of\n"
                "pyresilience.Bulkhead (which adds execute(), call(), decorators and\n"
                "async with)."},
    {Py_tp_new, bh_new},
    {Py_tp_init, bh_init},
    {Py_tp_dealloc, bh_dealloc},
    {Py_tp_traverse, bh_traverse},
    {Py_tp_clear, bh_clear},
    {Py_tp_methods, bh_methods},
    {Py_tp_getset, bh_getset},
    {Py_tp_members, bh_members},
    {0, NULL},
};

static PyType_Spec bh_spec = {
    "pyresilience._core.Bulkhead", sizeof(bh_obj), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, bh_slots,
};

int prs_py_register_bulkhead(PyObject *m, prs_py_state *st) {
    if (prs_py_register_waiter(m, st) < 0) return -1;
    return prs_py_add_type(m, st, PRS_SLOT_Bulkhead, &bh_spec, NULL);
}
