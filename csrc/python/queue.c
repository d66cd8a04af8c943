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
 * Waits are the condition wait of wait.h: a BLOCKING core waiter on the C
 * stack waited on by prs_py_cond_wait() (GIL released, signals checked, an
 * interrupted wait takes nothing); asyncio waiters are _AsyncWaiter objects
 * in the same FIFO as the threads, settled through the same q_settle().
 *
 * Watermark callbacks run after the core call returned (no lock held), in the
 * thread whose call crossed the mark; an exception from one is reported
 * through sys.unraisablehook (the put or get it follows has happened).
 */
#include "wait.h"

#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    prs_ring *core;            /* made in tp_new (NULL only while it fails) */
    int64_t maxsize;           /* as given (<= 0: unbounded, as queue.Queue) */
    int64_t block_timeout_ns;  /* PRS_NEVER: no limit */
    double block_timeout_s;    /* inf: no limit */
    int wm;                    /* watermarks configured */
    double high, low;
    PyObject *on_high;         /* NULL or a callable */
    PyObject *on_low;          /* NULL or a callable */
    PyObject *weakreflist;
} q_obj;

#define SELF ((q_obj *)self)

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

/* A capacity: a count <= PRS_RING_MAX; <= 0 means unbounded (queue.Queue's
 * rule). *given keeps the value, *cap is the core's (0: unbounded). */
static int parse_maxsize(PyObject *o, const char *param, int64_t *given, int64_t *cap) {
    if (prs_py_parse_config_count(o, param, given) < 0) return -1;
    *cap = *given <= 0 ? 0 : *given;
    return 0;
}

/* The core's verdict on a config whose capacity came from `param` = `given`
 * and watermarks from hi_o/lo_o: 0, or -1 with its ValueError. */
static int check_config(prs_py_state *st, const prs_ring_config *cfg, const char *param, PyObject *given,
                        PyObject *hi_o, PyObject *lo_o) {
    prs_config_error why = {NULL, NULL};
    int rc = prs_ring_config_check(cfg, &why);
    if (!rc) return 0;
    int high = why.field && strcmp(why.field, "high_watermark") == 0;
    int low = why.field && strcmp(why.field, "low_watermark") == 0;
    prs_py_config_refused(st, rc, &why, high || low ? why.field : param, high ? hi_o : low ? lo_o : given);
    return -1;
}

static PyObject *q_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_size", "strategy", "block_timeout", "high_watermark", "low_watermark",
                             "on_high_watermark", "on_low_watermark", "maxsize", NULL};
    PyObject *size_o = NULL, *strat_o = NULL, *bt_o = NULL, *hi_o = NULL, *lo_o = NULL, *onhi_o = NULL,
             *onlo_o = NULL, *maxsize_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOOOOOO$O:RingQueue", kwlist, &size_o, &strat_o, &bt_o,
                                     &hi_o, &lo_o, &onhi_o, &onlo_o, &maxsize_o))
        return NULL;
    prs_py_state *st = prs_py_state_of_type(type);
    if (!st) return NULL;
    if (maxsize_o == Py_None) maxsize_o = NULL;
    if (size_o == Py_None) size_o = NULL;
    if (size_o && maxsize_o) {
        PyErr_SetString(PyExc_TypeError, "give max_size or maxsize (its queue.Queue name), not both");
        return NULL;
    }
    const char *size_name = maxsize_o ? "maxsize" : "max_size";
    if (maxsize_o) size_o = maxsize_o;
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    int64_t given = 0;
    cfg.capacity = 0;
    if (size_o && parse_maxsize(size_o, size_name, &given, &cfg.capacity) < 0) return NULL;
    if (strat_o && parse_strategy(strat_o, &cfg.strategy) < 0) return NULL;
    double bt = 30.0;
    if (bt_o == Py_None) bt = Py_HUGE_VAL;
    else if (bt_o && prs_py_parse_real(bt_o, "block_timeout", PRS_PY_ZERO_OK | PRS_PY_INF_OK, &bt) < 0) return NULL;
    if (hi_o == Py_None) hi_o = NULL;
    if (lo_o == Py_None) lo_o = NULL;
    const unsigned any = PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK; /* the core checks the range */
    if (hi_o && prs_py_parse_real(hi_o, "high_watermark", any, &cfg.high_watermark) < 0) return NULL;
    if (lo_o && prs_py_parse_real(lo_o, "low_watermark", any, &cfg.low_watermark) < 0) return NULL;
    cfg.watermarks = hi_o || lo_o;
    if (check_config(st, &cfg, size_name, size_o, hi_o, lo_o) < 0) return NULL;
    if (cfg.watermarks && cfg.capacity == 0) {
        PyErr_Format(PyExc_ValueError, "watermarks need a bounded queue (max_size > 0), got max_size=%lld",
                     (long long)given);
        return NULL;
    }
    if (!cfg.watermarks && ((onhi_o && onhi_o != Py_None) || (onlo_o && onlo_o != Py_None))) {
        PyErr_SetString(PyExc_ValueError,
                        "on_high_watermark/on_low_watermark need high_watermark and/or low_watermark");
        return NULL;
    }
    PyObject *onhi, *onlo;
    if (parse_callback(onhi_o, "on_high_watermark", &onhi) < 0) return NULL;
    if (parse_callback(onlo_o, "on_low_watermark", &onlo) < 0) { Py_XDECREF(onhi); return NULL; }
    q_obj *self = (q_obj *)type->tp_alloc(type, 0);
    if (!self) { Py_XDECREF(onhi); Py_XDECREF(onlo); return NULL; }
    self->on_high = onhi;
    self->on_low = onlo;
    int rc = prs_ring_new(&cfg, &self->core);
    if (rc) {
        Py_DECREF(self);
        return prs_py_error(st, rc, NULL);
    }
    self->maxsize = given;
    self->block_timeout_s = bt;
    self->block_timeout_ns = isinf(bt) ? PRS_NEVER : prs_seconds_to_ns(bt);
    self->wm = cfg.watermarks;
    self->high = cfg.high_watermark;
    self->low = cfg.low_watermark;
    return (PyObject *)self;
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

static void deliver(prs_ring_waiter *woken);

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
    deliver(res->woken);
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

/* Wakes the asyncio waiters served by a core call (one whose loop is gone
 * gives back what it was handed). */
static void deliver(prs_ring_waiter *woken) {
    while (woken) {
        prs_ring_waiter *next = woken->next;
        prs_py_waiter_served(woken->data);
        woken = next;
    }
}

static int q_wait(void *core, void *waiter, int64_t deadline_ns) {
    return prs_ring_wait(core, waiter, deadline_ns);
}

/* Settles a producer, consumer or joiner: out->item is the reference the ring
 * gave back (a consumer's item, or a producer's that was not stored). */
static int q_settle(PyObject *self, void *waiter, int cancel, prs_py_settled *out) {
    void *item = NULL;
    prs_ring_result res;
    prs_ring_finish(SELF->core, waiter, cancel ? PRS_RING_FINISH_CANCEL : PRS_RING_FINISH_ACCEPT, &item, &res);
    out->outcome = res.outcome;
    out->item = item;
    after(self, &res);
    return res.outcome == PRS_RING_TIMED_OUT; /* it left the queue unserved */
}

static const prs_py_cond_ops q_ops = {q_wait, q_settle};

/* Queues nothing more: waits for `w` (queued by the caller) and settles it.
 * 0 with *out, or -1 (a signal handler raised; w settled with CANCEL). */
static int wait_sync(PyObject *self, prs_ring_waiter *w, int64_t timeout_ns, prs_py_settled *out) {
    out->outcome = 0;
    out->item = NULL;
    int rc = prs_py_cond_wait(&q_ops, self, SELF->core, w, timeout_ns, out);
    prs_ring_waiter_destroy(w);
    return rc;
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
    /* nowait: 1 raises QueueFullError for a BLOCK refusal (put_nowait, and a
     * BoundedQueue put that timed out); 0 returns False (the reference
     * design's BLOCK contract). */
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

/* A put status other than PRS_OK / PRS_EAGAIN: releases the ring's reference
 * and raises (QueueClosedError, MemoryError when the storage cannot grow). */
static PyObject *put_failed(PyObject *self, PyObject *item, int rc) {
    Py_DECREF(item);
    return rc == PRS_ECLOSED ? raise_closed(self) : raise_exc(self, rc, NULL);
}

/* Puts `item` (the ring's reference taken), queueing `w` when the ring is a
 * full BLOCK one (w NULL: never). 1 when w was queued; else 0 with *verdict,
 * what the put returns (put_verdict's `nowait` is `raise_full`). */
static int put_step(PyObject *self, PyObject *item, prs_ring_waiter *w, int raise_full, PyObject **verdict) {
    prs_ring_result res;
    int rc = prs_ring_put(SELF->core, item, w, &res);
    if (rc != PRS_OK) *verdict = put_failed(self, item, rc);
    else if (res.outcome != PRS_RING_WAITING) *verdict = put_verdict(self, item, &res, raise_full);
    else { after(self, &res); return 1; }
    return 0;
}

/* put: nowait=1 never waits and raises QueueFullError for a BLOCK refusal;
 * else a BLOCK put waits up to timeout_ns, then returns False (full_raises=0)
 * or raises QueueFullError (full_raises=1, queue.Queue's rule). */
static PyObject *put_impl(PyObject *self, PyObject *item, int64_t timeout_ns, int nowait, int full_raises) {
    prs_ring_result res;
    PyObject *verdict;
    int wait = !nowait && timeout_ns != 0 && prs_ring_strategy_of(SELF->core) == PRS_RING_BLOCK;
    Py_INCREF(item); /* the ring's reference, if it keeps the item */
    if (!wait) {
        put_step(self, item, NULL, nowait || full_raises, &verdict);
        return verdict;
    }
    int rc = prs_ring_try_put(SELF->core, item, &res); /* no condition variable when there is room */
    if (rc == PRS_OK) return put_verdict(self, item, &res, full_raises);
    if (rc != PRS_EAGAIN) return put_failed(self, item, rc);
    prs_ring_waiter w;
    rc = prs_ring_waiter_init(&w, PRS_RING_PRODUCER, 1, NULL);
    if (rc) { Py_DECREF(item); return raise_exc(self, rc, NULL); }
    if (!put_step(self, item, &w, full_raises, &verdict)) {
        prs_ring_waiter_destroy(&w);
        return verdict;
    }
    prs_py_settled out;
    rc = wait_sync(self, &w, timeout_ns, &out);
    Py_XDECREF(out.item); /* an item that was not stored */
    if (rc < 0) return NULL;
    if (out.outcome == PRS_RING_STORED) Py_RETURN_TRUE;
    if (out.outcome == PRS_RING_CLOSED) return raise_closed(self);
    if (full_raises) return raise_full(self);
    Py_RETURN_FALSE;
}

static const char *const put_names[] = {"item", "block", "timeout", NULL};

static PyObject *q_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[3] = {NULL, NULL, NULL};
    if (nargs == 1 && !kwnames) {
        v[0] = args[0];
    } else if (prs_py_unpack("put", args, nargs, kwnames, put_names, 3, v) < 0) {
        return NULL;
    }
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "put() missing required argument 'item'");
        return NULL;
    }
    int block = 1;
    if (v[1] && (block = PyObject_IsTrue(v[1])) < 0) return NULL;
    int64_t timeout_ns = SELF->block_timeout_ns;
    if (v[2] && v[2] != Py_None && prs_py_parse_timeout(v[2], "timeout", &timeout_ns) < 0) return NULL;
    if (!block) return put_impl(self, v[0], 0, 1, 1);
    return put_impl(self, v[0], timeout_ns, 0, 1);
}

static PyObject *q_put_nowait(PyObject *self, PyObject *item) {
    return put_impl(self, item, 0, 1, 1);
}

/* ---- get -------------------------------------------------------------- */

/* One get, queueing `w` when nothing is stored (w NULL: never): PRS_OK with
 * *item, PRS_EAGAIN when w was queued, PRS_EEMPTY or PRS_ECLOSED. */
static int get_step(PyObject *self, prs_ring_waiter *w, void **item) {
    prs_ring_result res;
    int rc = prs_ring_get(SELF->core, w, item, &res);
    after(self, &res);
    return rc == PRS_OK && res.outcome == PRS_RING_WAITING ? PRS_EAGAIN : rc;
}

static PyObject *get_failed(PyObject *self, int rc) {
    return rc == PRS_ECLOSED ? raise_closed(self) : raise_empty(self);
}

static PyObject *get_impl(PyObject *self, int64_t timeout_ns) {
    void *item = NULL;
    int rc = get_step(self, NULL, &item); /* no condition variable when an item is there */
    if (rc == PRS_OK) return (PyObject *)item;
    if (rc != PRS_EEMPTY || timeout_ns == 0) return get_failed(self, rc);
    prs_ring_waiter w;
    rc = prs_ring_waiter_init(&w, PRS_RING_CONSUMER, 1, NULL);
    if (rc) return raise_exc(self, rc, NULL);
    rc = get_step(self, &w, &item);
    if (rc != PRS_EAGAIN) {
        prs_ring_waiter_destroy(&w);
        return rc == PRS_OK ? (PyObject *)item : get_failed(self, rc);
    }
    prs_py_settled out;
    if (wait_sync(self, &w, timeout_ns, &out) < 0) return NULL;
    if (out.outcome == PRS_RING_GOT) return out.item;
    return get_failed(self, out.outcome == PRS_RING_CLOSED ? PRS_ECLOSED : PRS_EEMPTY);
}

static const char *const get_names[] = {"block", "timeout", NULL};

static PyObject *q_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[2] = {NULL, NULL};
    if ((nargs || kwnames) && prs_py_unpack("get", args, nargs, kwnames, get_names, 2, v) < 0) return NULL;
    int block = 1;
    if (v[0] && (block = PyObject_IsTrue(v[0])) < 0) return NULL;
    int64_t timeout_ns = PRS_NEVER;
    if (v[1] && prs_py_parse_timeout(v[1], "timeout", &timeout_ns) < 0) return NULL;
    return get_impl(self, block ? timeout_ns : 0);
}

static PyObject *q_get_nowait(PyObject *self, PyObject *unused) {
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
    PyObject *item = args[0];
    prs_ring *core = SELF->core;
    if (prs_ring_strategy_of(core) != PRS_RING_BLOCK || SELF->block_timeout_ns == 0)
        return put_impl(self, item, 0, 0, 0);
    prs_ring_result res;
    Py_INCREF(item);
    int rc = prs_ring_try_put(core, item, &res);
    if (rc == PRS_OK) return put_verdict(self, item, &res, 0);
    if (rc != PRS_EAGAIN) return put_failed(self, item, rc);
    prs_py_state *st = prs_py_state_of(self);
    prs_py_waiter *w = st ? prs_py_waiter_new(st, self, PRS_PY_WAITER_PUT, args[1], &q_ops) : NULL;
    if (!w) { Py_DECREF(item); return NULL; }
    PyObject *verdict;
    if (put_step(self, item, &w->u.r, 0, &verdict)) return (PyObject *)w;
    prs_py_waiter_discard(w);
    return verdict;
}

/* _get_async(get_running_loop): an item, or raises QueueClosedError (closed
 * and drained), or a queued _AsyncWaiter. */
static PyObject *q_get_async(PyObject *self, PyObject *get_loop) {
    void *item = NULL;
    int rc = get_step(self, NULL, &item);
    if (rc == PRS_OK) return (PyObject *)item;
    if (rc != PRS_EEMPTY) return get_failed(self, rc);
    prs_py_state *st = prs_py_state_of(self);
    prs_py_waiter *w = st ? prs_py_waiter_new(st, self, PRS_PY_WAITER_GET, get_loop, &q_ops) : NULL;
    if (!w) return NULL;
    rc = get_step(self, &w->u.r, &item);
    if (rc == PRS_EAGAIN) return (PyObject *)w;
    prs_py_waiter_discard(w);
    return rc == PRS_OK ? (PyObject *)item : get_failed(self, rc);
}

/* _finish_put(waiter, cancel): True (stored), False (timed out, or cancelled:
 * the item was not stored, counted dropped), or QueueClosedError (closed
 * while waiting, or before a served put settled). */
static PyObject *q_finish_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int cancel;
    prs_py_waiter *w = prs_py_waiter_args(self, "_finish_put", args, nargs, PRS_PY_WAITER_PUT, &cancel);
    if (!w) return NULL;
    prs_py_settled out;
    if (prs_py_waiter_finish(w, cancel, &out)) Py_RETURN_FALSE; /* settled already */
    Py_XDECREF(out.item); /* an item that was not stored */
    if (out.outcome == PRS_RING_STORED) Py_RETURN_TRUE;
    if (out.outcome == PRS_RING_CLOSED) return raise_closed(self);
    Py_RETURN_FALSE;
}

/* _finish_get(waiter, cancel): the item handed over (cancel=False), or
 * QueueClosedError, or QueueEmptyError (not served); cancel=True gives a
 * handed item back and returns None. */
static PyObject *q_finish_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int cancel;
    prs_py_waiter *w = prs_py_waiter_args(self, "_finish_get", args, nargs, PRS_PY_WAITER_GET, &cancel);
    if (!w) return NULL;
    prs_py_settled out;
    if (prs_py_waiter_finish(w, cancel, &out)) return raise_empty(self); /* settled already */
    if (out.outcome == PRS_RING_GOT) return out.item;
    if (out.outcome == PRS_RING_CLOSED) return raise_closed(self);
    if (out.outcome == PRS_RING_GAVE_BACK || cancel) Py_RETURN_NONE;
    return raise_empty(self);
}

/* ---- task_done / join --------------------------------------------------- */

static PyObject *q_task_done(PyObject *self, PyObject *unused) {
    prs_ring_result res;
    int rc = prs_ring_task_done(SELF->core, &res);
    after(self, &res);
    if (rc == PRS_EINVAL) {
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* join(): waits (GIL released, signals checked between slices) until every
 * item put has been marked done; Ctrl-C leaves the joiner queue. */
static PyObject *q_join(PyObject *self, PyObject *unused) {
    prs_ring *core = SELF->core;
    prs_ring_result res;
    if (prs_ring_join(core, NULL, &res) == PRS_OK) Py_RETURN_NONE;
    prs_ring_waiter w;
    int rc = prs_ring_waiter_init(&w, PRS_RING_JOINER, 1, NULL);
    if (rc) return raise_exc(self, rc, NULL);
    prs_ring_join(core, &w, &res);
    prs_py_settled out;
    if (res.outcome != PRS_RING_WAITING) prs_ring_waiter_destroy(&w); /* done meanwhile */
    else if (wait_sync(self, &w, PRS_NEVER, &out) < 0) return NULL;
    Py_RETURN_NONE;
}

/* _join_async(get_running_loop): True when nothing is unfinished, else a
 * queued _AsyncWaiter (a joiner). */
static PyObject *q_join_async(PyObject *self, PyObject *get_loop) {
    prs_ring *core = SELF->core;
    prs_ring_result res;
    if (prs_ring_join(core, NULL, &res) == PRS_OK) Py_RETURN_TRUE;
    prs_py_state *st = prs_py_state_of(self);
    if (!st) return NULL;
    prs_py_waiter *w = prs_py_waiter_new(st, self, PRS_PY_WAITER_JOIN, get_loop, &q_ops);
    if (!w) return NULL;
    prs_ring_join(core, &w->u.r, &res);
    if (res.outcome != PRS_RING_WAITING) { /* done meanwhile */
        prs_py_waiter_discard(w);
        Py_RETURN_TRUE;
    }
    return (PyObject *)w;
}

/* _finish_join(waiter): True when served (nothing unfinished), False when it
 * left the queue unserved. */
static PyObject *q_finish_join(PyObject *self, PyObject *waiter) {
    prs_py_waiter *w = prs_py_waiter_args(self, "_finish_join", &waiter, 1, PRS_PY_WAITER_JOIN, NULL);
    if (!w) return NULL;
    prs_py_settled out;
    if (prs_py_waiter_finish(w, 1, &out)) Py_RETURN_FALSE; /* settled already */
    return PyBool_FromLong(out.outcome == PRS_RING_DONE);
}

/* ---- the rest ------------------------------------------------------------ */

/* In a child process after fork (pyresilience.queues' at-fork hook): a new
 * lock; items handed to the parent's threads go back to the front, their
 * queued puts and gets leave. The item of a put left so is owned by that
 * thread's frame, which never runs in the child: its reference stays taken. */
static PyObject *q_after_fork_child(PyObject *self, PyObject *unused) {
    prs_ring_result res;
    int rc = prs_ring_after_fork_child(SELF->core, &res);
    if (rc) return raise_exc(self, rc, "cannot re-create the queue's lock after fork");
    after(self, &res);
    Py_RETURN_NONE;
}

static PyObject *q_close(PyObject *self, PyObject *unused) {
    prs_ring_result res;
    prs_ring_close(SELF->core, &res);
    after(self, &res);
    Py_RETURN_NONE;
}

static PyObject *q_qsize(PyObject *self, PyObject *unused) {
    return PyLong_FromLongLong(prs_ring_size(SELF->core));
}

static Py_ssize_t q_len(PyObject *self) {
    return (Py_ssize_t)prs_ring_size(SELF->core);
}

static PyObject *q_empty(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(prs_ring_size(SELF->core) == 0);
}

static PyObject *q_full(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(prs_ring_is_full(SELF->core));
}

static PyObject *q_stats(PyObject *self, PyObject *unused) {
    prs_ring_stats s;
    prs_ring_stats_get(SELF->core, &s);
    return Py_BuildValue("(LLLLLLLLLiiL)", (long long)s.received, (long long)s.processed, (long long)s.dropped,
                         (long long)s.blocked, (long long)s.size, (long long)s.high_events,
                         (long long)s.low_events, (long long)s.producers_waiting,
                         (long long)s.consumers_waiting, s.closed, s.above_high, (long long)s.unfinished);
}

static PyObject *q_get_fill_ratio(PyObject *self, void *c) {
    if (SELF->maxsize <= 0) return PyFloat_FromDouble(0.0); /* unbounded */
    return PyFloat_FromDouble((double)prs_ring_size(SELF->core) / (double)prs_ring_capacity(SELF->core));
}
static PyObject *q_get_max_size(PyObject *self, void *c) {
    return PyLong_FromLongLong(SELF->maxsize);
}
/* max_size / maxsize = n: a new capacity (queue.Queue lets its maxsize be
 * assigned). Growing lets waiting producers in; shrinking keeps the items. */
static int q_set_max_size(PyObject *self, PyObject *v, void *c) {
    const char *param = c ? (const char *)c : "max_size";
    if (!v) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", param);
        return -1;
    }
    int64_t given;
    prs_ring_config cfg; /* the capacity alone, for the core's verdict */
    prs_ring_config_init(&cfg);
    if (parse_maxsize(v, param, &given, &cfg.capacity) < 0) return -1;
    if (check_config(prs_py_state_of(self), &cfg, param, v, NULL, NULL) < 0) return -1;
    int64_t cap = cfg.capacity;
    if (cap == 0 && SELF->wm) {
        PyErr_Format(PyExc_ValueError, "watermarks need a bounded queue (%s > 0), got %s=%lld", param, param,
                     (long long)given);
        return -1;
    }
    prs_ring_result res;
    int rc = prs_ring_set_capacity(SELF->core, cap, &res);
    if (rc) { raise_exc(self, rc, NULL); return -1; }
    SELF->maxsize = given;
    after(self, &res);
    return 0;
}
static PyObject *q_get_unfinished(PyObject *self, void *c) {
    prs_ring_stats s;
    prs_ring_stats_get(SELF->core, &s);
    return PyLong_FromLongLong(s.unfinished);
}
static PyObject *q_get_strategy_name(PyObject *self, void *c) {
    return PyUnicode_FromString(prs_ring_strategy_name(prs_ring_strategy_of(SELF->core)));
}
static PyObject *q_get_block_timeout(PyObject *self, void *c) {
    if (isinf(SELF->block_timeout_s)) Py_RETURN_NONE; /* no limit */
    return PyFloat_FromDouble(SELF->block_timeout_s);
}
static PyObject *q_get_closed(PyObject *self, void *c) {
    return PyBool_FromLong(prs_ring_is_closed(SELF->core));
}
static PyObject *q_get_high(PyObject *self, void *c) {
    if (!SELF->wm) Py_RETURN_NONE;
    return PyFloat_FromDouble(SELF->high);
}
static PyObject *q_get_low(PyObject *self, void *c) {
    if (!SELF->wm) Py_RETURN_NONE;
    return PyFloat_FromDouble(SELF->low);
}

static PyMethodDef q_methods[] = {
    {"put", (PyCFunction)(void (*)(void))q_put, METH_FASTCALL | METH_KEYWORDS,
     "put($self, /, item, block=True, timeout=None)\n--\n\n"
     "Put an item (queue.Queue.put): True if it is queued, False if it was\n"
     "dropped. When full: BLOCK waits up to `timeout` seconds (None:\n"
     "block_timeout, itself None for no limit) for room, then raises\n"
     "QueueFullError (a queue.Full; the item is counted dropped); block=False\n"
     "raises it at once. DROP_OLDEST evicts the oldest item (True); DROP_NEWEST\n"
     "drops this one (False); ERROR raises QueueFullError. QueueClosedError\n"
     "after close(). The GIL is released while waiting and Ctrl-C interrupts\n"
     "the wait."},
    {"put_nowait", q_put_nowait, METH_O,
     "put_nowait($self, item, /)\n--\n\n"
     "put(item, block=False): a full BLOCK queue raises QueueFullError (a\n"
     "queue.Full and an asyncio.QueueFull; the item is counted dropped)."},
    {"get", (PyCFunction)(void (*)(void))q_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, /, block=True, timeout=None)\n--\n\n"
     "Remove and return the oldest item (queue.Queue.get), waiting up to\n"
     "`timeout` seconds (None: no limit; block=False: not at all) for one:\n"
     "QueueEmptyError (a queue.Empty) when none came, QueueClosedError once a\n"
     "closed queue is drained. The GIL is released while waiting; Ctrl-C\n"
     "interrupts the wait, and an interrupted get takes nothing (an item\n"
     "handed to it in the same instant goes back to the front)."},
    {"get_nowait", q_get_nowait, METH_NOARGS,
     "get_nowait($self, /)\n--\n\n"
     "get(block=False): QueueEmptyError (a queue.Empty and an\n"
     "asyncio.QueueEmpty) when empty."},
    {"task_done", q_task_done, METH_NOARGS,
     "task_done($self, /)\n--\n\n"
     "Mark one item taken from the queue as processed (queue.Queue.task_done):\n"
     "join() returns once every item put has been marked. ValueError when\n"
     "called more times than items were put. An evicted item (DROP_OLDEST)\n"
     "counts as done; a dropped one was never counted."},
    {"join", q_join, METH_NOARGS,
     "join($self, /)\n--\n\n"
     "Wait until every item put has been marked done with task_done()\n"
     "(queue.Queue.join). The GIL is released while waiting and Ctrl-C\n"
     "interrupts the wait."},
    {"_join_async", q_join_async, METH_O,
     "_join_async($self, get_running_loop, /)\n--\n\n"
     "Internal (asyncio form of join): True now, or a queued waiter."},
    {"_finish_join", q_finish_join, METH_O,
     "_finish_join($self, waiter, /)\n--\n\nInternal: settle a joiner waiter."},
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
     "low_events, producers_waiting, consumers_waiting, closed, above_high,\n"
     "unfinished)."},
    {NULL, NULL, 0, NULL},
};

static char name_max_size[] = "max_size", name_maxsize[] = "maxsize"; /* setter closures */

static PyGetSetDef q_getset[] = {
    {"fill_ratio", q_get_fill_ratio, NULL, "qsize() / max_size, in [0, 1].", NULL},
    {"max_size", q_get_max_size, q_set_max_size,
     "The queue's capacity (<= 0: unbounded); assigning it resizes the queue.", name_max_size},
    {"maxsize", q_get_max_size, q_set_max_size, "Alias of max_size (the queue.Queue name).", name_maxsize},
    {"unfinished_tasks", q_get_unfinished, NULL,
     "Items put and not yet marked done with task_done().", NULL},
    {"_strategy_name", q_get_strategy_name, NULL, "The strategy's value ('block', ...).", NULL},
    {"block_timeout", q_get_block_timeout, NULL,
     "Seconds a BLOCK put waits by default (None: no limit).", NULL},
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
    {Py_tp_doc, "RingQueue(max_size=0, strategy='block', block_timeout=30.0, high_watermark=None, "
                "low_watermark=None, on_high_watermark=None, on_low_watermark=None, *, maxsize=None)\n--\n\n"
                "A bounded FIFO on a C ring with a backpressure strategy: the C core of\n"
                "pyresilience.BoundedQueue and pyresilience.BackpressureQueue."},
    {Py_tp_new, q_new},
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
