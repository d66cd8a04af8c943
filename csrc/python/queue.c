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

/* The constructor's arguments: the core's config and the binding's own. */
typedef struct {
    prs_ring_config ring;
    double block_timeout_s;  /* inf: no limit */
    int64_t given;           /* the capacity as given (<= 0: unbounded, as queue.Queue) */
    const char *size_param;  /* the name it was given under (NULL: not given) */
} q_args;

static void q_args_init(q_args *a) {
    prs_ring_config_init(&a->ring);
    a->ring.capacity = 0;
    a->block_timeout_s = 30.0;
    a->given = 0;
    a->size_param = NULL;
}

/* The core's rules, and one of the binding's: watermarks are fractions of a
 * bounded capacity. */
static int q_args_check(const q_args *a, prs_config_error *why) {
    int rc = prs_ring_config_check(&a->ring, why);
    if (!rc && a->ring.watermarks && a->ring.capacity == 0)
        return prs_config_fail(why, PRS_EINVAL, "capacity", "must be > 0 when watermarks are set (a bounded queue)");
    return rc;
}

/* max_size / maxsize: a count; <= 0 is unbounded (the core's 0). */
static int set_size(PyObject *o, q_args *a, const char *param) {
    if (a->size_param) {
        PyErr_SetString(PyExc_TypeError, "give max_size or maxsize (its queue.Queue name), not both");
        return -1;
    }
    if (prs_py_parse_config_count(o, param, &a->given) < 0) return -1;
    a->ring.capacity = a->given <= 0 ? 0 : a->given;
    a->size_param = param;
    return 0;
}
static int q_max_size(PyObject *o, void *a) { return set_size(o, a, "max_size"); }
static int q_maxsize(PyObject *o, void *a) { return set_size(o, a, "maxsize"); }

/* A watermark turns the watermarks on; the core checks its range. */
static int set_mark(PyObject *o, q_args *a, const char *param, double *out) {
    a->ring.watermarks = 1;
    return prs_py_parse_real(o, param, PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK, out);
}
static int q_high(PyObject *o, void *a) {
    return set_mark(o, a, "high_watermark", &((q_args *)a)->ring.high_watermark);
}
static int q_low(PyObject *o, void *a) {
    return set_mark(o, a, "low_watermark", &((q_args *)a)->ring.low_watermark);
}

/* A strategy: "block" ... or an object whose .value is one (the enum). */
static int q_strategy(PyObject *o, void *a) {
    PyObject *v = PyUnicode_Check(o) ? Py_NewRef(o) : PyObject_GetAttrString(o, "value");
    if (!v || !PyUnicode_Check(v)) {
        Py_XDECREF(v);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "strategy must be a BackpressureStrategy or one of 'block', "
                     "'drop_oldest', 'drop_newest', 'error', not %.200s: %R", Py_TYPE(o)->tp_name, o);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(v);
    int rc = s ? prs_ring_strategy_parse(s, &((q_args *)a)->ring.strategy) : PRS_OK;
    Py_DECREF(v);
    if (!s) return -1;
    if (rc == PRS_OK) return 0;
    PyErr_Format(PyExc_ValueError, "unknown strategy %R: expected 'block', 'drop_oldest', "
                 "'drop_newest' or 'error'", o);
    return -1;
}

static int q_set_size(PyObject *self, PyObject *v, void *closure);

#include "gen/queue.h"

#define SELF ((q_obj *)self)

static PyObject *q_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st;
    q_args a;
    PyObject *v[P_RingQueue__COUNT];
    if (RingQueue_parse(type, args, kwds, &st, &a, v) < 0) return NULL;
    PyObject *onhi = v[P_RingQueue_on_high_watermark], *onlo = v[P_RingQueue_on_low_watermark];
    if (onhi == Py_None) onhi = NULL;
    if (onlo == Py_None) onlo = NULL;
    if (!a.ring.watermarks && (onhi || onlo)) {
        PyErr_SetString(PyExc_ValueError,
                        "on_high_watermark/on_low_watermark need high_watermark and/or low_watermark");
        return NULL;
    }
    q_obj *self = (q_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->on_high = Py_XNewRef(onhi);
    self->on_low = Py_XNewRef(onlo);
    int rc = prs_ring_new(&a.ring, &self->core);
    if (rc) {
        Py_DECREF(self);
        return prs_py_error(st, rc, NULL);
    }
    self->maxsize = a.given;
    self->block_timeout_s = a.block_timeout_s;
    self->block_timeout_ns = isinf(a.block_timeout_s) ? PRS_NEVER : prs_seconds_to_ns(a.block_timeout_s);
    self->wm = a.ring.watermarks;
    self->high = a.ring.high_watermark;
    self->low = a.ring.low_watermark;
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

/* Wakes the asyncio waiters served by a core call (one whose loop is gone
 * gives back what it was handed). */
static void deliver(prs_ring_waiter *woken) {
    while (woken) {
        prs_ring_waiter *next = woken->next;
        prs_py_waiter_served(woken->data);
        woken = next;
    }
}

/* Calls a watermark callback (NULL: none), holding it across the call. */
static void call_hook(PyObject *fn) {
    if (!fn) return;
    Py_INCREF(fn);
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r) Py_DECREF(r);
    else PyErr_WriteUnraisable(fn);
    Py_DECREF(fn);
}

/* Runs what a core call left to do. Keeps any exception already set. */
static void after(PyObject *self, prs_ring_result *res) {
    if (!res->woken && !res->events && !res->evicted) return;
    PRS_PY_EXC_SAVE(saved);
    deliver(res->woken);
    if (res->events & PRS_RING_EV_HIGH) call_hook(SELF->on_high);
    if (res->events & PRS_RING_EV_LOW) call_hook(SELF->on_low);
    if (res->evicted) Py_DECREF((PyObject *)res->evicted);
    res->evicted = NULL;
    PRS_PY_EXC_RESTORE(saved);
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
    } else if (prs_py_unpack("put", args, nargs, kwnames, put_names, 3, 1, v) < 0) {
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
    if ((nargs || kwnames) && prs_py_unpack("get", args, nargs, kwnames, get_names, 2, 0, v) < 0) return NULL;
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

/* max_size / maxsize = n: a new capacity (queue.Queue lets its maxsize be
 * assigned). Growing lets waiting producers in; shrinking keeps the items. */
static int q_set_size(PyObject *self, PyObject *v, void *closure) {
    int alias = (int)(intptr_t)closure == 2;
    const char *param = alias ? "maxsize" : "max_size";
    if (!v) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", param);
        return -1;
    }
    q_args a; /* the queue's config with the new capacity, for the verdict */
    q_args_init(&a);
    a.ring.watermarks = SELF->wm;
    a.ring.high_watermark = SELF->high;
    a.ring.low_watermark = SELF->low;
    if (set_size(v, &a, param) < 0) return -1;
    prs_config_error why;
    int rc = q_args_check(&a, &why);
    if (rc) {
        PyObject *vals[P_RingQueue__COUNT] = {NULL};
        vals[alias ? P_RingQueue_maxsize : P_RingQueue_max_size] = v;
        prs_py_config_error(prs_py_state_of(self), rc, &why, &RingQueue_params, vals, &a);
        return -1;
    }
    prs_ring_result res;
    Py_BEGIN_CRITICAL_SECTION(self); /* the core's capacity and maxsize change together */
    rc = prs_ring_set_capacity(SELF->core, a.ring.capacity, &res);
    if (!rc) __atomic_store_n(&SELF->maxsize, a.given, __ATOMIC_RELAXED);
    Py_END_CRITICAL_SECTION();
    if (rc) { raise_exc(self, rc, NULL); return -1; }
    after(self, &res);
    return 0;
}

/* The properties, by closure index (tools/decl_bulkhead.py). */
static PyObject *q_attr(PyObject *self, void *closure) {
    prs_ring_stats s;
    int64_t maxsize = __atomic_load_n(&SELF->maxsize, __ATOMIC_RELAXED); /* q_set_size may run */
    switch ((int)(intptr_t)closure) {
    case 0:
        if (maxsize <= 0) return PyFloat_FromDouble(0.0); /* unbounded */
        return PyFloat_FromDouble((double)prs_ring_size(SELF->core) / (double)prs_ring_capacity(SELF->core));
    case 1:
    case 2: return PyLong_FromLongLong(maxsize);
    case 3:
        prs_ring_stats_get(SELF->core, &s);
        return PyLong_FromLongLong(s.unfinished);
    case 4: return PyUnicode_FromString(prs_ring_strategy_name(prs_ring_strategy_of(SELF->core)));
    case 5:
        if (isinf(SELF->block_timeout_s)) Py_RETURN_NONE; /* no limit */
        return PyFloat_FromDouble(SELF->block_timeout_s);
    case 6: return PyBool_FromLong(prs_ring_is_closed(SELF->core));
    case 7: return SELF->wm ? PyFloat_FromDouble(SELF->high) : Py_NewRef(Py_None);
    default: return SELF->wm ? PyFloat_FromDouble(SELF->low) : Py_NewRef(Py_None);
    }
}

int prs_py_register_queue(PyObject *m, prs_py_state *st) {
    return queue_add_types(m, st);
}
