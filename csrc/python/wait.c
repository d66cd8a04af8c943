/*
 * wait.c - the condition wait of Bulkhead and RingQueue (wait.h): the sync
 * loop, the _AsyncWaiter type and the _Ready awaitable.
 */
#include "wait.h"

typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once delivered */
} ready_obj;

#include "gen/wait.h"

#define SLICE_NS (50 * PRS_NS_PER_MS)

/* ---- sync ---------------------------------------------------------------- */

int prs_py_cond_wait(const prs_py_cond_ops *ops, PyObject *owner, void *core, void *waiter,
                     int64_t timeout_ns, prs_py_settled *out) {
    timeout_ns = prs_py_deadline_cap(prs_py_state_of(owner), timeout_ns);
    int64_t now = prs_monotonic_ns();
    int64_t deadline = timeout_ns == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, timeout_ns);
    for (;;) {
        int64_t slice_end = prs__min64(prs__sat_add(now, SLICE_NS), deadline);
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = ops->wait(core, waiter, slice_end);
        Py_END_ALLOW_THREADS
        /* Signals first, served or not: what was handed over in the slice in
         * which a signal came would otherwise be kept while the handler's
         * exception (KeyboardInterrupt) propagates. */
        if (PyErr_CheckSignals() < 0) {
            ops->settle(owner, waiter, 1, out);
            return -1;
        }
        if (rc == PRS_OK) break;
        now = prs_monotonic_ns();
        if (now >= deadline) break;
    }
    ops->settle(owner, waiter, 0, out);
    return 0;
}

/* ---- _AsyncWaiter -------------------------------------------------------- */

#define W ((prs_py_waiter *)self)

prs_py_waiter *prs_py_waiter_new(prs_py_state *st, PyObject *owner, int kind, PyObject *get_loop,
                                 const prs_py_cond_ops *ops) {
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
    prs_py_waiter *w = PyObject_GC_New(prs_py_waiter, PRS_PY_TYPE(st, AsyncWaiter));
    if (!w) { Py_DECREF(loop); Py_DECREF(fut); return NULL; }
    w->owner = Py_NewRef(owner);
    w->loop = loop;
    w->future = fut;
    w->get_loop = Py_NewRef(get_loop);
    w->ops = ops;
    w->kind = kind;
    w->settled = 0;
    if (kind == PRS_PY_WAITER_BULKHEAD) prs_bulkhead_waiter_init(&w->u.b, 0, w);
    else prs_ring_waiter_init(&w->u.r, kind == PRS_PY_WAITER_PUT ? PRS_RING_PRODUCER
                                       : kind == PRS_PY_WAITER_GET ? PRS_RING_CONSUMER
                                                                   : PRS_RING_JOINER, 0, w);
    PyObject_GC_Track(w);
    Py_INCREF(w); /* the queue's reference */
    return w;
}

void prs_py_waiter_discard(prs_py_waiter *w) {
    w->settled = 1;
    Py_DECREF(w);
    Py_DECREF(w);
}

int prs_py_waiter_finish(prs_py_waiter *w, int cancel, prs_py_settled *out) {
    if (prs_py_claim(&w->settled)) return 1; /* settled once, whichever thread comes first */
    if (w->ops->settle(w->owner, &w->u, cancel, out)) Py_DECREF(w); /* was still queued */
    return 0;
}

prs_py_waiter *prs_py_waiter_args(PyObject *owner, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                                  int kind, int *cancel) {
    if (nargs != (cancel ? 2 : 1)) {
        PyErr_Format(PyExc_TypeError, "%s(waiter%s)", fname, cancel ? ", cancel" : "");
        return NULL;
    }
    prs_py_state *st = prs_py_state_of(owner);
    if (!st) return NULL;
    prs_py_waiter *w = (prs_py_waiter *)args[0];
    if (!PyObject_TypeCheck(args[0], PRS_PY_TYPE(st, AsyncWaiter)) || w->owner != owner || w->kind != kind) {
        PyErr_Format(PyExc_TypeError, "expected a waiter of this object, not %.200s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (cancel && (*cancel = PyObject_IsTrue(args[1])) < 0) return NULL;
    return w;
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

static int waiter_wake(prs_py_waiter *w) {
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

void prs_py_waiter_served(prs_py_waiter *w) {
    PRS_PY_EXC_SAVE(saved);
    if (waiter_wake(w) < 0) {
        /* Its loop is gone: undo what was handed to it. */
        PyErr_WriteUnraisable((PyObject *)w);
        prs_py_settled out = {0, NULL};
        if (!prs_py_claim(&w->settled)) w->ops->settle(w->owner, &w->u, 1, &out);
        Py_XDECREF(out.item);
    }
    Py_DECREF(w); /* the queue's reference */
    PRS_PY_EXC_RESTORE(saved);
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
     * settled (its coroutine vanished): give back what it was handed. */
    if (!W->settled && W->owner) {
        PRS_PY_EXC_SAVE(saved);
        prs_py_settled out = {0, NULL};
        W->settled = 1;
        W->ops->settle(W->owner, &W->u, 1, &out);
        Py_XDECREF(out.item);
        PRS_PY_EXC_RESTORE(saved);
    }
    if (W->kind == PRS_PY_WAITER_BULKHEAD) prs_bulkhead_waiter_destroy(&W->u.b);
    else prs_ring_waiter_destroy(&W->u.r);
    waiter_clear(self);
    Py_CLEAR(W->owner);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}


#undef W

/* ---- _Ready: an awaitable that is already done ----------------------------- */

/* Holds only its result, which it drops when awaited: no GC needed (a cycle
 * through an un-awaited _Ready is freed with the object that made it). */
PyObject *prs_py_ready_new(PyTypeObject *tp, PyObject *value) {
    ready_obj *r = PyObject_New(ready_obj, tp);
    if (!r) return NULL;
    Py_INCREF(tp);
    r->value = Py_NewRef(value);
    return (PyObject *)r;
}

static PyObject *ready_await(PyObject *self) { return Py_NewRef(self); }

static PyObject *ready_next(PyObject *self) {
    /* taken whole: two threads resuming one awaitable get it once */
    PyObject *v = __atomic_exchange_n(&((ready_obj *)self)->value, NULL, __ATOMIC_ACQ_REL);
    if (!v) return NULL; /* exhausted: StopIteration */
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

int prs_py_register_waiter(PyObject *m, prs_py_state *st) {
    return wait_add_types(m, st);
}
