/*
 * queue.c - _core.RingQueue over prs_ring: the bounded queue behind
 * pyresilience.BoundedQueue (threads) and pyresilience.BackpressureQueue
 * (asyncio).
 *
 * References: the ring stores PyObject pointers and owns one strong reference
 * per stored item (taken before a put, handed to the getter by a get). Items
 * the ring gives back - evicted, refused, a producer's item after a timeout or
 * close - are released here, after the ring's lock is dropped.
 *
 * Waits are as in bulkhead.c: a BLOCKING core waiter on the C stack, the GIL
 * released, <= 50 ms slices against an absolute monotonic deadline,
 * PyErr_CheckSignals() between slices; asyncio waiters are _AsyncWaiter
 * objects in the same FIFO as the threads (bulkhead.h).
 *
 * Watermark callbacks run after the core call returned (no lock held), in the
 * thread whose call crossed the mark; an exception from one is reported
 * through sys.unraisablehook (the put or get it follows has happened).
 */
#include "bulkhead.h"

#include <math.h>

#define SLICE_NS (50 * PRS_NS_PER_MS)

typedef struct {
    PyObject_HEAD
    prs_ring *core;            /* NULL until __init__ succeeded */
    int64_t block_timeout_ns;  /* PRS_NEVER: no limit */
    double block_timeout_s;
    int wm;                    /* watermarks configured */
    double high, low;
    PyObject *on_high;         /* NULL or a callable */
    PyObject *on_low;          /* NULL or a callable */
    PyObject *weakreflist;
} q_obj;

#define SELF ((q_obj *)self)

static int ensure_init(PyObject *self) {
    if (SELF->core) return 0;
    PyErr_Format(PyExc_RuntimeError, "%.200s object is not initialised (call __init__)",
                 Py_TYPE(self)->tp_name);
    return -1;
}

static PyObject *q_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    q_obj *self = (q_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->core = NULL;
    self->on_high = self->on_low = NULL;
    self->weakreflist = NULL;
    return (PyObject *)self;
}

/* A strategy: "block" ... or an object whose .value is one (the enum). */
static int parse_strategy(PyObject *o, prs_ring_strategy *out) {
    PyObject *v = NULL;
    if (PyUnicode_Check(o)) {
        v = Py_NewRef(o);
    } else {
        v = PyObject_GetAttrString(o, "value");
        if (!v || !PyUnicode_Check(v)) {
            Py_XDECREF(v);
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "strategy must be a BackpressureStrategy or one of 'block', "
                         "'drop_oldest', 'drop_newest', 'error', not %.200s: %R", Py_TYPE(o)->tp_name, o);
            return -1;
        }
    }
    const char *s = PyUnicode_AsUTF8(v);
    if (!s) { Py_DECREF(v); return -1; }
    if (prs_ring_strategy_parse(s, out) != PRS_OK) {
        PyErr_Format(PyExc_ValueError, "unknown strategy %R: expected 'block', 'drop_oldest', "
                     "'drop_newest' or 'error'", o);
        Py_DECREF(v);
        return -1;
    }
    Py_DECREF(v);
    return 0;
}

static int parse_callback(PyObject *o, const char *param, PyObject **out) {
    *out = NULL;
    if (!o || o == Py_None) return 0;
    if (!PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None, not %.200s: %R", param,
                     Py_TYPE(o)->tp_name, o);
        return -1;
    }
    *out = Py_NewRef(o);
    return 0;
}

static int q_init(PyObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_size", "strategy", "block_timeout", "high_watermark", "low_watermark",
                             "on_high_watermark", "on_low_watermark", NULL};
    PyObject *size_o, *strat_o = NULL, *bt_o = NULL, *hi_o = NULL, *lo_o = NULL, *onhi_o = NULL,
             *onlo_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOOOO:RingQueue", kwlist, &size_o, &strat_o, &bt_o,
                                     &hi_o, &lo_o, &onhi_o, &onlo_o))
        return -1;
    if (SELF->core) {
        PyErr_Format(PyExc_RuntimeError, "%.200s is already initialised", Py_TYPE(self)->tp_name);
        return -1;
    }
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    if (prs_py_parse_count(size_o, "max_size", 1, PRS_RING_MAX, &cfg.capacity) < 0) return -1;
    if (strat_o && parse_strategy(strat_o, &cfg.strategy) < 0) return -1;
    double bt = 30.0;
    if (bt_o && prs_py_parse_real(bt_o, "block_timeout", PRS_PY_ZERO_OK | PRS_PY_INF_OK, &bt) < 0) return -1;
    if (hi_o == Py_None) hi_o = NULL;
    if (lo_o == Py_None) lo_o = NULL;
    double hi = 1.0, lo = 0.0;
    if (hi_o && prs_py_parse_real(hi_o, "high_watermark", 0, &hi) < 0) return -1;
    if (lo_o && prs_py_parse_real(lo_o, "low_watermark", PRS_PY_ZERO_OK, &lo) < 0) return -1;
    if (hi > 1.0) {
        PyErr_Format(PyExc_ValueError, "high_watermark must be a fraction in (0, 1], got %R", hi_o);
        return -1;
    }
    if (lo >= hi) {
        PyErr_Format(PyExc_ValueError,
                     "low_watermark must be below high_watermark (0 <= low < high <= 1), got low=%R, high=%R",
                     lo_o ? lo_o : Py_None, hi_o ? hi_o : Py_None);
        return -1;
    }
    cfg.watermarks = hi_o || lo_o;
    cfg.high_watermark = hi;
    cfg.low_watermark = lo;
    if (!cfg.watermarks && ((onhi_o && onhi_o != Py_None) || (onlo_o && onlo_o != Py_None))) {
        PyErr_SetString(PyExc_ValueError,
                        "on_high_watermark/on_low_watermark need high_watermark and/or low_watermark");
        return -1;
    }
    PyObject *onhi, *onlo;
    if (parse_callback(onhi_o, "on_high_watermark", &onhi) < 0) return -1;
    if (parse_callback(onlo_o, "on_low_watermark", &onlo) < 0) { Py_XDECREF(onhi); return -1; }
    prs_ring *core;
    int rc = prs_ring_new(&cfg, &core);
    if (rc) {
        Py_XDECREF(onhi);
        Py_XDECREF(onlo);
        prs_py_error(prs_py_state_of(self), rc, "invalid queue configuration");
        return -1;
    }
    SELF->core = core;
    SELF->block_timeout_s = bt;
    SELF->block_timeout_ns = isinf(bt) ? PRS_NEVER : prs_seconds_to_ns(bt);
    SELF->wm = cfg.watermarks;
    SELF->high = hi;
    SELF->low = lo;
    SELF->on_high = onhi;
    SELF->on_low = onlo;
    return 0;
}

static int visit_item(void *item, void *arg) {
    visitproc *v = ((visitproc **)arg)[0];
    void *varg = ((void **)arg)[1];
    return (*v)((PyObject *)item, varg);
}

static int q_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(SELF->on_high);
    Py_VISIT(SELF->on_low);
    if (SELF->core) {
        void *pair[2] = {(void *)&visit, arg};
        int rc = prs_ring_foreach(SELF->core, visit_item, pair);
        if (rc) return rc;
    }
    return 0;
}

static void decref_item(void *item, void *arg) { Py_DECREF((PyObject *)item); }

static int q_clear(PyObject *self) {
    Py_CLEAR(SELF->on_high);
    Py_CLEAR(SELF->on_low);
    if (SELF->core) prs_ring_drain(SELF->core, decref_item, NULL);
    return 0;
}

static void q_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (SELF->weakreflist) PyObject_ClearWeakRefs(self);
    q_clear(self);
    /* No waiter can be queued: asyncio waiters hold this object, and a
     * thread waiting in put/get holds it through its call. */
    prs_ring_free(SELF->core);
    SELF->core = NULL;
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ---- after a core call: wake, call back, release (no lock held) --------- */

static void deliver(PyObject *self, prs_ring_waiter *woken);
static void waiter_abandon(prs_py_waiter *w);

static void call_hook(PyObject *fn) {
    if (!fn) return;
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r) Py_DECREF(r);
    else PyErr_WriteUnraisable(fn);
}

/* Runs what a core call left to do. Keeps any exception already set. */
static void after(PyObject *self, prs_ring_result *res) {
    if (!res->woken && !res->events && !res->evicted) return;
    PRS_PY_EXC_SAVE(saved);
    deliver(self, res->woken);
    if (res->events & PRS_RING_EV_HIGH) {
        PyObject *fn = Py_XNewRef(SELF->on_high);
        call_hook(fn);
        Py_XDECREF(fn);
    }
    if (res->events & PRS_RING_EV_LOW) {
        PyObject *fn = Py_XNewRef(SELF->on_low);
        call_hook(fn);
        Py_XDECREF(fn);
    }
    if (res->evicted) Py_DECREF((PyObject *)res->evicted);
    res->evicted = NULL;
    PRS_PY_EXC_RESTORE(saved);
}

static void deliver(PyObject *self, prs_ring_waiter *woken) {
    while (woken) {
        prs_ring_waiter *next = woken->next;
        prs_py_waiter *w = woken->data;
        if (prs_py_waiter_wake(w) < 0) {
            /* Its loop is gone: undo what was handed to it. */
            PyErr_WriteUnraisable((PyObject *)w);
            void *item = NULL;
            prs_ring_result res;
            prs_ring_finish(SELF->core, &w->u.r, PRS_RING_FINISH_CANCEL, &item, &res);
            w->settled = 1;
            Py_XDECREF((PyObject *)item);
            after(self, &res);
        }
        Py_DECREF(w); /* the queue's reference */
        woken = next;
    }
}

static PyObject *raise_exc(PyObject *self, int status, const char *msg) {
    return prs_py_error(prs_py_state_of(self), status, msg);
}

static PyObject *raise_full(PyObject *self) { return raise_exc(self, PRS_EFULL, "Queue is full"); }
static PyObject *raise_closed(PyObject *self) { return raise_exc(self, PRS_ECLOSED, "Queue is closed"); }
static PyObject *raise_empty(PyObject *self) { return raise_exc(self, PRS_EEMPTY, "Queue is empty"); }

/* ---- put -------------------------------------------------------------- */

/* The verdict of a put that did not wait: True/False, or NULL with
 * QueueFullError/QueueClosedError. Releases what came back. `nowait`: a
 * BLOCK refusal raises (put_nowait) instead of returning False. */
static PyObject *put_verdict(PyObject *self, PyObject *item, prs_ring_result *res, int nowait) {
    PyObject *ret;
    switch (res->outcome) {
    case PRS_RING_STORED:
    case PRS_RING_EVICTED:
        ret = Py_NewRef(Py_True);
        break;
    case PRS_RING_DROPPED:
        Py_DECREF(item);
        ret = Py_NewRef(Py_False);
        break;
    default: /* PRS_RING_FULL */
        Py_DECREF(item);
        if (nowait || prs_ring_strategy_of(SELF->core) == PRS_RING_ERROR) {
            after(self, res);
            return raise_full(self);
        }
        ret = Py_NewRef(Py_False);
        break;
    }
    after(self, res);
    return ret;
}

static PyObject *put_impl(PyObject *self, PyObject *item, int64_t timeout_ns, int nowait) {
    prs_ring_result res;
    prs_ring *core = SELF->core;
    int wait = !nowait && timeout_ns != 0 && prs_ring_strategy_of(core) == PRS_RING_BLOCK;
    Py_INCREF(item); /* the ring's reference, if it keeps the item */
    if (!wait) {
        if (prs_ring_put(core, item, NULL, &res) == PRS_ECLOSED) {
            Py_DECREF(item);
            return raise_closed(self);
        }
        return put_verdict(self, item, &res, nowait);
    }
    int rc = prs_ring_try_put(core, item, &res);
    if (rc == PRS_ECLOSED) { Py_DECREF(item); return raise_closed(self); }
    if (rc == PRS_OK) return put_verdict(self, item, &res, 0);
    prs_ring_waiter w;
    rc = prs_ring_waiter_init(&w, 1, 1, NULL);
    if (rc) { Py_DECREF(item); return raise_exc(self, rc, NULL); }
    int64_t now = prs_monotonic_ns();
    rc = prs_ring_put(core, item, &w, &res);
    if (rc == PRS_ECLOSED) {
        prs_ring_waiter_destroy(&w);
        Py_DECREF(item);
        return raise_closed(self);
    }
    if (res.outcome != PRS_RING_WAITING) {
        prs_ring_waiter_destroy(&w);
        return put_verdict(self, item, &res, 0);
    }
    after(self, &res);
    int64_t deadline = timeout_ns == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, timeout_ns);
    int interrupted = 0;
    for (;;) {
        int64_t slice_end = prs__sat_add(now, SLICE_NS);
        if (deadline != PRS_NEVER && deadline < slice_end) slice_end = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = prs_ring_wait(core, &w, slice_end);
        Py_END_ALLOW_THREADS
        if (rc == PRS_OK) break;
        if (PyErr_CheckSignals() < 0) { interrupted = 1; break; }
        now = prs_monotonic_ns();
        if (deadline != PRS_NEVER && now >= deadline) break;
    }
    void *back = NULL;
    prs_ring_finish(core, &w, interrupted ? PRS_RING_FINISH_CANCEL : PRS_RING_FINISH_ACCEPT, &back, &res);
    prs_ring_waiter_destroy(&w);
    Py_XDECREF((PyObject *)back);
    after(self, &res);
    if (interrupted) return NULL;
    if (res.outcome == PRS_RING_STORED) Py_RETURN_TRUE;
    if (res.outcome == PRS_RING_CLOSED) return raise_closed(self);
    Py_RETURN_FALSE;
}

static const char *const put_names[] = {"item", "timeout", NULL};

static PyObject *q_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[2];
    if (nargs == 1 && !kwnames) {
        v[0] = args[0];
        v[1] = NULL;
    } else if (prs_py_unpack("put", args, nargs, kwnames, put_names, 2, v) < 0) {
        return NULL;
    }
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "put() missing required argument 'item'");
        return NULL;
    }
    if (ensure_init(self) < 0) return NULL;
    int64_t timeout_ns = SELF->block_timeout_ns;
    if (v[1] && v[1] != Py_None && prs_py_parse_timeout(v[1], "timeout", &timeout_ns) < 0) return NULL;
    return put_impl(self, v[0], timeout_ns, 0);
}

static PyObject *q_put_nowait(PyObject *self, PyObject *item) {
    if (ensure_init(self) < 0) return NULL;
    return put_impl(self, item, 0, 1);
}

/* ---- get -------------------------------------------------------------- */

static PyObject *get_impl(PyObject *self, int64_t timeout_ns) {
    prs_ring_result res;
    prs_ring *core = SELF->core;
    void *item = NULL;
    int rc;
    if (timeout_ns == 0) {
        rc = prs_ring_get(core, NULL, &item, &res);
        after(self, &res);
        if (rc == PRS_OK) return (PyObject *)item;
        return rc == PRS_ECLOSED ? raise_closed(self) : raise_empty(self);
    }
    prs_ring_waiter w;
    rc = prs_ring_waiter_init(&w, 0, 1, NULL);
    if (rc) return raise_exc(self, rc, NULL);
    int64_t now = prs_monotonic_ns();
    rc = prs_ring_get(core, &w, &item, &res);
    after(self, &res);
    if (rc != PRS_OK || res.outcome == PRS_RING_GOT) {
        prs_ring_waiter_destroy(&w);
        if (rc == PRS_OK) return (PyObject *)item;
        return raise_closed(self);
    }
    int64_t deadline = timeout_ns == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, timeout_ns);
    int interrupted = 0;
    for (;;) {
        int64_t slice_end = prs__sat_add(now, SLICE_NS);
        if (deadline != PRS_NEVER && deadline < slice_end) slice_end = deadline;
        Py_BEGIN_ALLOW_THREADS
        rc = prs_ring_wait(core, &w, slice_end);
        Py_END_ALLOW_THREADS
        if (rc == PRS_OK) break;
        if (PyErr_CheckSignals() < 0) { interrupted = 1; break; }
        now = prs_monotonic_ns();
        if (deadline != PRS_NEVER && now >= deadline) break;
    }
    prs_ring_finish(core, &w, interrupted ? PRS_RING_FINISH_CANCEL : PRS_RING_FINISH_ACCEPT, &item, &res);
    prs_ring_waiter_destroy(&w);
    after(self, &res);
    if (interrupted) return NULL;
    if (res.outcome == PRS_RING_GOT) return (PyObject *)item;
    if (res.outcome == PRS_RING_CLOSED) return raise_closed(self);
    return raise_empty(self);
}

static const char *const get_names[] = {"timeout", NULL};

static PyObject *q_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1] = {NULL};
    if ((nargs || kwnames) && prs_py_unpack("get", args, nargs, kwnames, get_names, 1, v) < 0) return NULL;
    if (ensure_init(self) < 0) return NULL;
    int64_t timeout_ns = PRS_NEVER;
    if (v[0] && prs_py_parse_timeout(v[0], "timeout", &timeout_ns) < 0) return NULL;
    return get_impl(self, timeout_ns);
}

static PyObject *q_get_nowait(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    return get_impl(self, 0);
}

/* ---- asyncio forms (driven by pyresilience/queues.py) ------------------ */

/* _put_async(item, get_running_loop): True/False or raises as put_nowait()
 * would, except that a full BLOCK queue (with block_timeout > 0) queues an
 * _AsyncWaiter holding the item and returns it. */
static PyObject *q_put_async(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_put_async(item, get_running_loop)");
        return NULL;
    }
    if (ensure_init(self) < 0) return NULL;
    PyObject *item = args[0];
    prs_ring *core = SELF->core;
    if (prs_ring_strategy_of(core) != PRS_RING_BLOCK || SELF->block_timeout_ns == 0)
        return put_impl(self, item, 0, 0);
    prs_ring_result res;
    Py_INCREF(item);
    int rc = prs_ring_try_put(core, item, &res);
    if (rc == PRS_ECLOSED) { Py_DECREF(item); return raise_closed(self); }
    if (rc == PRS_OK) return put_verdict(self, item, &res, 0);
    Py_DECREF(item);
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    prs_py_waiter *w = prs_py_waiter_new(st, self, PRS_PY_WAITER_PUT, args[1]);
    if (!w) return NULL;
    w->abandon = waiter_abandon;
    Py_INCREF(item);
    Py_INCREF(w); /* the queue's reference */
    rc = prs_ring_put(core, item, &w->u.r, &res);
    if (rc == PRS_ECLOSED || res.outcome != PRS_RING_WAITING) {
        w->settled = 1;
        Py_DECREF(w);
        Py_DECREF(w);
        if (rc == PRS_ECLOSED) { Py_DECREF(item); return raise_closed(self); }
        return put_verdict(self, item, &res, 0);
    }
    after(self, &res);
    return (PyObject *)w;
}

/* _get_async(get_running_loop): an item, or raises QueueClosedError (closed
 * and drained), or a queued _AsyncWaiter. */
static PyObject *q_get_async(PyObject *self, PyObject *get_loop) {
    if (ensure_init(self) < 0) return NULL;
    prs_ring *core = SELF->core;
    prs_ring_result res;
    void *item = NULL;
    int rc = prs_ring_get(core, NULL, &item, &res);
    after(self, &res);
    if (rc == PRS_OK) return (PyObject *)item;
    if (rc == PRS_ECLOSED) return raise_closed(self);
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    prs_py_waiter *w = prs_py_waiter_new(st, self, PRS_PY_WAITER_GET, get_loop);
    if (!w) return NULL;
    w->abandon = waiter_abandon;
    Py_INCREF(w); /* the queue's reference */
    rc = prs_ring_get(core, &w->u.r, &item, &res);
    if (rc != PRS_OK || res.outcome == PRS_RING_GOT) {
        w->settled = 1;
        Py_DECREF(w);
        Py_DECREF(w);
        after(self, &res);
        if (rc == PRS_OK) return (PyObject *)item;
        return raise_closed(self);
    }
    after(self, &res);
    return (PyObject *)w;
}

static void waiter_abandon(prs_py_waiter *w) {
    PyObject *self = w->owner;
    void *item = NULL;
    prs_ring_result res;
    prs_ring_finish(SELF->core, &w->u.r, PRS_RING_FINISH_CANCEL, &item, &res);
    Py_XDECREF((PyObject *)item);
    after(self, &res);
}

static prs_py_waiter *finish_args(PyObject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                                  int kind, int *cancel) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(waiter, cancel)", fname);
        return NULL;
    }
    prs_py_state *st = prs_py_state_of(self);
    if (!st || ensure_init(self) < 0) return NULL;
    if (!prs_py_waiter_check(st, args[0], self, kind)) return NULL;
    *cancel = PyObject_IsTrue(args[1]);
    if (*cancel < 0) return NULL;
    return (prs_py_waiter *)args[0];
}

/* _finish_put(waiter, cancel): True (stored), False (timed out: dropped), or
 * QueueClosedError (closed while waiting). */
static PyObject *q_finish_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int cancel;
    prs_py_waiter *w = finish_args(self, "_finish_put", args, nargs, PRS_PY_WAITER_PUT, &cancel);
    if (!w) return NULL;
    if (w->settled) Py_RETURN_FALSE;
    void *back = NULL;
    prs_ring_result res;
    prs_ring_finish(SELF->core, &w->u.r, cancel ? PRS_RING_FINISH_CANCEL : PRS_RING_FINISH_ACCEPT, &back, &res);
    w->settled = 1;
    if (res.outcome == PRS_RING_TIMED_OUT) Py_DECREF(w); /* was still queued */
    Py_XDECREF((PyObject *)back);
    after(self, &res);
    if (res.outcome == PRS_RING_STORED) Py_RETURN_TRUE;
    if (res.outcome == PRS_RING_CLOSED) return raise_closed(self);
    Py_RETURN_FALSE;
}

/* _finish_get(waiter, cancel): the item handed over (cancel=False), or
 * QueueClosedError, or QueueEmptyError (not served); cancel=True gives a
 * handed item back and returns None. */
static PyObject *q_finish_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int cancel;
    prs_py_waiter *w = finish_args(self, "_finish_get", args, nargs, PRS_PY_WAITER_GET, &cancel);
    if (!w) return NULL;
    if (w->settled) return raise_empty(self);
    void *item = NULL;
    prs_ring_result res;
    prs_ring_finish(SELF->core, &w->u.r, cancel ? PRS_RING_FINISH_CANCEL : PRS_RING_FINISH_ACCEPT, &item, &res);
    w->settled = 1;
    if (res.outcome == PRS_RING_TIMED_OUT) Py_DECREF(w); /* was still queued */
    after(self, &res);
    if (res.outcome == PRS_RING_GOT) return (PyObject *)item;
    if (res.outcome == PRS_RING_CLOSED) return raise_closed(self);
    if (res.outcome == PRS_RING_GAVE_BACK) Py_RETURN_NONE;
    return cancel ? Py_NewRef(Py_None) : raise_empty(self);
}

/* ---- the rest ------------------------------------------------------------ */

/* In a child process after fork (pyresilience.queues' at-fork hook): a new
 * lock; items handed to the parent's threads go back to the front, their
 * queued puts and gets leave. The item of a put left so is owned by that
 * thread's frame, which never runs in the child: its reference stays taken. */
static PyObject *q_after_fork_child(PyObject *self, PyObject *unused) {
    if (!SELF->core) Py_RETURN_NONE; /* never initialised: nothing inherited */
    prs_ring_result res;
    int rc = prs_ring_after_fork_child(SELF->core, &res);
    if (rc) return raise_exc(self, rc, "cannot re-create the queue's lock after fork");
    after(self, &res);
    Py_RETURN_NONE;
}

static PyObject *q_close(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    prs_ring_result res;
    prs_ring_close(SELF->core, &res);
    after(self, &res);
    Py_RETURN_NONE;
}

static PyObject *q_qsize(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    return PyLong_FromLongLong(prs_ring_size(SELF->core));
}

static Py_ssize_t q_len(PyObject *self) {
    if (ensure_init(self) < 0) return -1;
    return (Py_ssize_t)prs_ring_size(SELF->core);
}

static PyObject *q_empty(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    return PyBool_FromLong(prs_ring_size(SELF->core) == 0);
}

static PyObject *q_full(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    return PyBool_FromLong(prs_ring_size(SELF->core) >= prs_ring_capacity(SELF->core));
}

static PyObject *q_stats(PyObject *self, PyObject *unused) {
    if (ensure_init(self) < 0) return NULL;
    prs_ring_stats s;
    prs_ring_stats_get(SELF->core, &s);
    return Py_BuildValue("(LLLLLLLLLii)", (long long)s.received, (long long)s.processed, (long long)s.dropped,
                         (long long)s.blocked, (long long)s.size, (long long)s.high_events,
                         (long long)s.low_events, (long long)s.producers_waiting,
                         (long long)s.consumers_waiting, s.closed, s.above_high);
}

static PyObject *q_get_fill_ratio(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyFloat_FromDouble((double)prs_ring_size(SELF->core) / (double)prs_ring_capacity(SELF->core));
}
static PyObject *q_get_max_size(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyLong_FromLongLong(prs_ring_capacity(SELF->core));
}
static PyObject *q_get_strategy_name(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyUnicode_FromString(prs_ring_strategy_name(prs_ring_strategy_of(SELF->core)));
}
static PyObject *q_get_block_timeout(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyFloat_FromDouble(SELF->block_timeout_s);
}
static PyObject *q_get_closed(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    return PyBool_FromLong(prs_ring_is_closed(SELF->core));
}
static PyObject *q_get_high(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    if (!SELF->wm) Py_RETURN_NONE;
    return PyFloat_FromDouble(SELF->high);
}
static PyObject *q_get_low(PyObject *self, void *c) {
    if (ensure_init(self) < 0) return NULL;
    if (!SELF->wm) Py_RETURN_NONE;
    return PyFloat_FromDouble(SELF->low);
}

static PyMethodDef q_methods[] = {
    {"put", (PyCFunction)(void (*)(void))q_put, METH_FASTCALL | METH_KEYWORDS,
     "put($self, /, item, timeout=None)\n--\n\n"
     "Put an item; True if it is queued, False if it was dropped. When full:\n"
     "BLOCK waits up to `timeout` seconds (None: block_timeout; math.inf: no limit)\n"
     "for room, then drops the item (False); DROP_OLDEST evicts the oldest item\n"
     "(True); DROP_NEWEST drops this one (False); ERROR raises QueueFullError.\n"
     "QueueClosedError after close(). The GIL is released while waiting and\n"
     "Ctrl-C interrupts the wait."},
    {"put_nowait", q_put_nowait, METH_O,
     "put_nowait($self, item, /)\n--\n\n"
     "Put without waiting: as put(), except that a full BLOCK queue raises\n"
     "QueueFullError (the item is counted as dropped)."},
    {"get", (PyCFunction)(void (*)(void))q_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, /, timeout=None)\n--\n\n"
     "Remove and return the oldest item, waiting up to `timeout` seconds (None:\n"
     "no limit) for one: QueueEmptyError (a queue.Empty) on timeout,\n"
     "QueueClosedError once a closed queue is drained. The GIL is released while\n"
     "waiting and Ctrl-C interrupts the wait (nothing is taken)."},
    {"get_nowait", q_get_nowait, METH_NOARGS,
     "get_nowait($self, /)\n--\n\nget(timeout=0): QueueEmptyError when empty."},
    {"close", q_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Close the queue: later puts raise QueueClosedError; getters drain what is\n"
     "left, then raise QueueClosedError. Blocked producers (their items are\n"
     "dropped) and consumers wake at once. Idempotent."},
    {"qsize", q_qsize, METH_NOARGS, "qsize($self, /)\n--\n\nItems in the queue."},
    {"empty", q_empty, METH_NOARGS, "empty($self, /)\n--\n\nTrue when no item is queued."},
    {"full", q_full, METH_NOARGS, "full($self, /)\n--\n\nTrue when qsize() == max_size."},
    {"_put_async", (PyCFunction)(void (*)(void))q_put_async, METH_FASTCALL,
     "_put_async($self, item, get_running_loop, /)\n--\n\n"
     "Internal (asyncio form of put): a verdict now, or a queued waiter."},
    {"_get_async", q_get_async, METH_O,
     "_get_async($self, get_running_loop, /)\n--\n\n"
     "Internal (asyncio form of get): an item now, or a queued waiter."},
    {"_finish_put", (PyCFunction)(void (*)(void))q_finish_put, METH_FASTCALL,
     "_finish_put($self, waiter, cancel, /)\n--\n\nInternal: settle a producer waiter."},
    {"_finish_get", (PyCFunction)(void (*)(void))q_finish_get, METH_FASTCALL,
     "_finish_get($self, waiter, cancel, /)\n--\n\nInternal: settle a consumer waiter."},
    {"_after_fork_child", q_after_fork_child, METH_NOARGS,
     "_after_fork_child($self, /)\n--\n\n"
     "Internal: call in a child process right after fork, with one thread\n"
     "running (pyresilience.queues' os.register_at_fork hook does): a new lock;\n"
     "an item handed to a parent's thread goes back to the front, the parent's\n"
     "blocked puts and gets leave. asyncio waiters stay queued."},
    {"_stats", q_stats, METH_NOARGS,
     "_stats($self, /)\n--\n\n"
     "Internal: (received, processed, dropped, blocked, size, high_events,\n"
     "low_events, producers_waiting, consumers_waiting, closed, above_high)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef q_getset[] = {
    {"fill_ratio", q_get_fill_ratio, NULL, "qsize() / max_size, in [0, 1].", NULL},
    {"max_size", q_get_max_size, NULL, "The queue's capacity.", NULL},
    {"maxsize", q_get_max_size, NULL, "Alias of max_size (the queue.Queue name).", NULL},
    {"_strategy_name", q_get_strategy_name, NULL, "The strategy's value ('block', ...).", NULL},
    {"block_timeout", q_get_block_timeout, NULL, "Seconds a BLOCK put waits by default.", NULL},
    {"closed", q_get_closed, NULL, "True after close().", NULL},
    {"high_watermark", q_get_high, NULL, "The high watermark fraction, or None.", NULL},
    {"low_watermark", q_get_low, NULL, "The low watermark fraction, or None.", NULL},
    {NULL},
};

static PyMemberDef q_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(q_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot q_slots[] = {
    {Py_tp_doc, "RingQueue(max_size, strategy='block', block_timeout=30.0, high_watermark=None, "
                "low_watermark=None, on_high_watermark=None, on_low_watermark=None)\n--\n\n"
                "A bounded FIFO on a C ring with a backpressure strategy: the C core of\n"
                "pyresilience.BoundedQueue and pyresilience.BackpressureQueue."},
    {Py_tp_new, q_new},
    {Py_tp_init, q_init},
    {Py_tp_dealloc, q_dealloc},
    {Py_tp_traverse, q_traverse},
    {Py_tp_clear, q_clear},
    {Py_tp_methods, q_methods},
    {Py_tp_getset, q_getset},
    {Py_tp_members, q_members},
    {Py_sq_length, q_len},
    {0, NULL},
};

static PyType_Spec q_spec = {
    "pyresilience._core.RingQueue", sizeof(q_obj), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, q_slots,
};

int prs_py_register_queue(PyObject *m, prs_py_state *st) {
    return prs_py_add_type(m, st, PRS_SLOT_RingQueue, &q_spec, NULL);
}
