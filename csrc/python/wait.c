/*
 * wait.c - the condition wait of Bulkhead and RingQueue (wait.h): the one
 * call every blocking and asyncio form goes through, the _AsyncWaiter type
 * and the _Ready awaitable.
 *
 * An _AsyncWaiter's references:
 *   - the coroutine that got it holds one until it settles it (_finish);
 *   - while it is queued in the core, the core "holds" one more (taken when
 *     it is made). Whoever takes it out of the queue drops that one: the
 *     thread that served it (prs_py_waiter_served, after waking its future),
 *     or prs_py_cond_finish when the settle finds it still queued;
 *   - it holds its owner strongly, so the core outlives every queued waiter.
 * Waking: on the future's loop thread, future.set_result(None) directly; from
 * any other thread, loop.call_soon_threadsafe(waiter) (calling the waiter
 * sets the result if the future is still pending). The future says only "look
 * again": what was handed over is in the core waiter's state.
 */
#include "wait.h"

/* A core waiter of either core: on a thread's stack, or in an _AsyncWaiter. */
typedef union core_waiter {
    prs_bulkhead_waiter b;
    prs_ring_waiter r;
} core_waiter;

typedef struct prs_py_waiter {
    PyObject_HEAD
    PyObject *owner;              /* strong: the Bulkhead or RingQueue */
    PyObject *loop;               /* strong: the loop of `future` */
    PyObject *future;             /* strong: asyncio future */
    PyObject *get_loop;           /* strong: asyncio's _get_running_loop */
    const prs_py_cond_ops *ops;   /* the owner's */
    int kind;                     /* PRS_PY_WAITER_* */
    int settled;                  /* 1 once settled */
    core_waiter u;                /* NOTIFY; data = this object */
} prs_py_waiter;

typedef struct {
    PyObject_HEAD
    PyObject *value; /* the result; NULL once delivered */
} ready_obj;

static void waiter_free(prs_py_waiter *w);
static int waiter_resolve(prs_py_waiter *w);

#include "gen/wait.h"

#define SLICE_NS (50 * PRS_NS_PER_MS)

static int core_waiter_init(core_waiter *u, int kind, int blocking, void *data) {
    if (kind == PRS_PY_WAITER_BULKHEAD) return prs_bulkhead_waiter_init(&u->b, blocking, data);
    return prs_ring_waiter_init(&u->r, kind == PRS_PY_WAITER_PUT ? PRS_RING_PRODUCER
                                       : kind == PRS_PY_WAITER_GET ? PRS_RING_CONSUMER
                                                                   : PRS_RING_JOINER, blocking, data);
}

static void core_waiter_destroy(core_waiter *u, int kind) {
    if (kind == PRS_PY_WAITER_BULKHEAD) prs_bulkhead_waiter_destroy(&u->b);
    else prs_ring_waiter_destroy(&u->r);
}

/* ---- sync ---------------------------------------------------------------- */

/* Waits until `waiter` (queued, BLOCKING) is served or timeout_ns has passed,
 * then settles it with ACCEPT into *out: 0. When a signal handler raises,
 * settles it with CANCEL instead: -1 with that exception. */
static int cond_wait(const prs_py_cond_ops *ops, PyObject *owner, void *core, void *waiter,
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

/* A new waiter of `kind` for `owner`, with a fresh future of the running loop
 * (get_loop() returns it; RuntimeError when there is none), its core waiter
 * initialised, and the queue's reference already taken (two references in
 * all). NULL with an exception. */
static prs_py_waiter *waiter_new(PyObject *owner, int kind, PyObject *get_loop, const prs_py_cond_ops *ops) {
    prs_py_state *st = prs_py_state_of(owner);
    if (!st) return NULL;
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
    core_waiter_init(&w->u, kind, 0, w);
    PyObject_GC_Track(w);
    Py_INCREF(w); /* the queue's reference */
    return w;
}

/* Settles w with CANCEL (its coroutine will never settle it): what it was
 * handed goes back. */
static void waiter_abandon(prs_py_waiter *w) {
    prs_py_settled out = {0, NULL};
    if (!prs_py_claim(&w->settled)) w->ops->settle(w->owner, &w->u, 1, &out);
    Py_XDECREF(out.item);
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

void prs_py_waiter_served(void *data) {
    prs_py_waiter *w = data;
    PRS_PY_EXC_SAVE(saved);
    if (waiter_wake(w) < 0) {
        PyErr_WriteUnraisable((PyObject *)w); /* its loop is gone: undo what was handed to it */
        waiter_abandon(w);
    }
    Py_DECREF(w); /* the queue's reference */
    PRS_PY_EXC_RESTORE(saved);
}

/* After its references are cleared (the owner is kept until the end). Never
 * queued here (the queue holds a reference); served but never settled (its
 * coroutine vanished): gives back what it was handed. */
static void waiter_free(prs_py_waiter *w) {
    if (!w->settled && w->owner) {
        PRS_PY_EXC_SAVE(saved);
        waiter_abandon(w);
        PRS_PY_EXC_RESTORE(saved);
    }
    core_waiter_destroy(&w->u, w->kind);
}

/* ---- the one call (its path without a wait is inline, in wait.h) --------- */

PyObject *prs_py_cond_queue(const prs_py_cond_ops *ops, PyObject *owner, void *core, int kind, PyObject *arg,
                            int64_t timeout_ns, PyObject *get_loop) {
    prs_py_settled out = {0, NULL};
    int rc;
    if (get_loop) {
        prs_py_waiter *w = waiter_new(owner, kind, get_loop, ops);
        if (!w) return NULL;
        rc = ops->call(owner, kind, &w->u, 0, arg, &out);
        if (rc == 1) return (PyObject *)w;
        w->settled = 1; /* not queued: drop the queue's reference and ours */
        Py_DECREF(w);
        Py_DECREF(w);
    } else {
        core_waiter u;
        int err = core_waiter_init(&u, kind, 1, NULL);
        if (err) return prs_py_error(prs_py_state_of(owner), err, NULL);
        rc = ops->call(owner, kind, &u, 0, arg, &out);
        if (rc == 1) rc = cond_wait(ops, owner, core, &u, timeout_ns, &out);
        core_waiter_destroy(&u, kind);
    }
    if (rc < 0) {
        Py_XDECREF(out.item);
        return NULL;
    }
    return ops->result(owner, kind, get_loop ? PRS_PY_COND_ASYNC : 0, &out);
}

PyObject *prs_py_cond_finish(PyObject *owner, PyObject *const *args, Py_ssize_t nargs) {
    prs_py_state *st = prs_py_state_of(owner);
    if (!st) return NULL;
    prs_py_waiter *w = nargs >= 1 && nargs <= 2 ? (prs_py_waiter *)args[0] : NULL;
    if (!w || !PyObject_TypeCheck(args[0], PRS_PY_TYPE(st, AsyncWaiter)) || w->owner != owner) {
        PyErr_Format(PyExc_TypeError, "expected (waiter, cancel) with a waiter of this object, not %.200s",
                     w ? Py_TYPE(args[0])->tp_name : "other arguments");
        return NULL;
    }
    int cancel = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (cancel < 0) return NULL;
    prs_py_settled out = {0, NULL};
    if (!prs_py_claim(&w->settled)) { /* settled once, whichever thread comes first */
        if (w->ops->settle(owner, &w->u, cancel, &out)) Py_DECREF(w); /* it was queued: the queue's reference */
    }
    return w->ops->result(owner, w->kind, PRS_PY_COND_ASYNC | (cancel ? PRS_PY_COND_CANCEL : 0), &out);
}

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
