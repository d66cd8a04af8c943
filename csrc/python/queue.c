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
 * Every put, get and join, sync or asyncio, is one prs_py_cond_call() (wait.h)
 * over this file's q_ops.
 *
 * Watermark callbacks run after the core call returned (no lock held), in the
 * thread whose call crossed the mark; an exception from one is reported
 * through sys.unraisablehook (the put or get it follows has happened).
 */
#include "wait.h"

#include <math.h>

/* The constructor's arguments: the core's config and the binding's own. */
typedef struct {
    prs_ring_config ring;    /* watermarks NaN: not given */
    double block_timeout_s;  /* inf: no limit */
    int64_t given;           /* the capacity as given (<= 0: unbounded, as queue.Queue) */
} q_args;

typedef struct {
    PyObject_HEAD
    prs_ring *core;            /* made in tp_new (NULL only while it fails) */
    q_args a;                  /* as built; a.given: the capacity in force (atomic) */
    int64_t block_timeout_ns;  /* PRS_NEVER: no limit */
    PyObject *on_high;         /* None or a callable */
    PyObject *on_low;          /* None or a callable */
    PyObject *weakreflist;
} q_obj;

static void q_args_init(q_args *a) {
    prs_ring_config_init(&a->ring);
    a->ring.high_watermark = a->ring.low_watermark = NAN;
    a->block_timeout_s = 30.0;
    a->given = 0;
}

/* The core's config from the arguments - the capacity as given (<= 0:
 * unbounded, the core's 0), the watermarks on when either is given (the
 * other at the core's default) - then the core's check. */
static int q_args_check(q_args *a, prs_config_error *why) {
    prs_ring_config d, *r = &a->ring;
    prs_ring_config_init(&d);
    r->capacity = a->given <= 0 ? 0 : a->given;
    r->watermarks = !isnan(r->high_watermark) || !isnan(r->low_watermark);
    if (r->watermarks && isnan(r->high_watermark)) r->high_watermark = d.high_watermark;
    if (r->watermarks && isnan(r->low_watermark)) r->low_watermark = d.low_watermark;
    return prs_ring_config_check(r, why);
}

/* tp_new's last step, the arguments kept: the watermark callbacks only with
 * a watermark; then the core. -1 (raised) or its status. */
static int q_build(q_obj *o, q_args *a) {
    if (!a->ring.watermarks && (o->on_high != Py_None || o->on_low != Py_None)) {
        PyErr_SetString(PyExc_ValueError,
                        "on_high_watermark/on_low_watermark need high_watermark and/or low_watermark");
        return -1;
    }
    o->a = *a;
    o->block_timeout_ns = isinf(a->block_timeout_s) ? PRS_NEVER : prs_seconds_to_ns(a->block_timeout_s);
    return prs_ring_new(&a->ring, &o->core);
}

/* The arguments of put() and get(). */
typedef struct {
    int block;
    int64_t timeout_ns; /* PRS_NEVER: no limit */
} q_wait_args;

static int q_set_size(PyObject *self, PyObject *v, void *closure);

/* The capacity as given (<= 0: unbounded); q_set_size may change it. */
static int64_t q_given(q_obj *o) { return __atomic_load_n(&o->a.given, __ATOMIC_RELAXED); }

/* A snapshot of the core's counters (a property reads one of them). */
static prs_ring_stats q_stats_of(q_obj *o) {
    prs_ring_stats s;
    prs_ring_stats_get(o->core, &s);
    return s;
}

static int visit_item(void *item, void *arg) {
    visitproc *v = ((visitproc **)arg)[0];
    void *varg = ((void **)arg)[1];
    return (*v)((PyObject *)item, varg);
}

/* The GC's view of the stored items (the ring holds one reference each). */
static int q_visit_items(q_obj *o, visitproc visit, void *arg) {
    void *pair[2] = {(void *)&visit, arg};
    return o->core ? prs_ring_foreach(o->core, visit_item, pair) : 0;
}

static void decref_item(void *item, void *arg) { Py_DECREF((PyObject *)item); }

#define SELF ((q_obj *)self)

/* ---- after a core call: wake, call back, release (no lock held) --------- */

/* Calls a watermark callback (None, or NULL once cleared: none), holding it across the call. */
static void call_hook(PyObject *fn) {
    if (!fn || fn == Py_None) return;
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
    prs_py_waiters_served(PRS_PY_WAITER_GET, res->woken); /* a ring's, whatever their kind */
    if (res->events & PRS_RING_EV_HIGH) call_hook(SELF->on_high);
    if (res->events & PRS_RING_EV_LOW) call_hook(SELF->on_low);
    if (res->evicted) Py_DECREF((PyObject *)res->evicted);
    res->evicted = NULL;
    PRS_PY_EXC_RESTORE(saved);
}

/* QueueFullError, QueueClosedError, QueueEmptyError, MemoryError, ... (NULL). */
static PyObject *raise_exc(PyObject *self, int status, const char *msg) {
    return prs_py_error(prs_py_state_of(self), status, msg);
}

/* q_call and q_result are inline: prs_py_cond_call's path without a wait
 * (inline too) runs them with a constant kind, the put/get hot path. */

/* One put (of `item`, the ring's reference taken here), get or join: a try
 * (waiter NULL, not final: PRS_EAGAIN / PRS_EEMPTY is "would wait"), a
 * refusal (final), or queueing `waiter`. out->item: a got item, or a put's
 * that was not stored. */
static inline int q_call(PyObject *self, int kind, void *waiter, int final, PyObject *item, prs_py_settled *out) {
    prs_ring_result res;
    void *got = NULL;
    int rc;
    if (kind == PRS_PY_WAITER_PUT) {
        Py_INCREF(item);
        rc = waiter || final ? prs_ring_put(SELF->core, item, waiter, &res)
                             : prs_ring_try_put(SELF->core, item, &res); /* no waiter while there is room */
        if (rc == PRS_OK && (res.outcome == PRS_RING_DROPPED || res.outcome == PRS_RING_FULL)) got = item;
        else if (rc != PRS_OK) Py_DECREF(item);
    } else if (kind == PRS_PY_WAITER_GET) {
        rc = prs_ring_get(SELF->core, waiter, &got, &res);
    } else {
        rc = prs_ring_join(SELF->core, waiter, &res);
    }
    after(self, &res);
    if (rc == PRS_EAGAIN || (rc == PRS_EEMPTY && !final)) return 1;
    if (rc == PRS_ECLOSED || rc == PRS_EEMPTY) res.outcome = rc == PRS_ECLOSED ? PRS_RING_CLOSED : PRS_RING_TIMED_OUT;
    else if (rc != PRS_OK) {
        raise_exc(self, rc, NULL); /* MemoryError: the storage cannot grow */
        return -1;
    }
    out->outcome = res.outcome;
    out->item = got;
    return res.outcome == PRS_RING_WAITING;
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

/* What put, get and join return. put: True (stored), False (dropped; or,
 * asyncio, not stored in time, or cancelled), QueueFullError (a refusal of
 * a sync put, or of the ERROR strategy). get: the item, None (cancelled),
 * QueueEmptyError. join: None, or asyncio True when nothing is unfinished.
 * QueueClosedError when closed. */
static inline PyObject *q_result(PyObject *self, int kind, unsigned flags, prs_py_settled *out) {
    int o = out->outcome, async = (flags & PRS_PY_COND_ASYNC) != 0;
    if (o == PRS_RING_GOT) return out->item;
    Py_XDECREF(out->item); /* a put's item that was not stored */
    if (o == PRS_RING_CLOSED) return raise_exc(self, PRS_ECLOSED, "Queue is closed");
    if (kind == PRS_PY_WAITER_JOIN) return async ? PyBool_FromLong(o == PRS_RING_DONE) : Py_NewRef(Py_None);
    if (kind == PRS_PY_WAITER_GET)
        return o && (flags & PRS_PY_COND_CANCEL) ? Py_NewRef(Py_None) : raise_exc(self, PRS_EEMPTY, "Queue is empty");
    if (o == PRS_RING_STORED || o == PRS_RING_EVICTED) Py_RETURN_TRUE;
    if (o != PRS_RING_DROPPED &&
        (!async || (o == PRS_RING_FULL && prs_ring_strategy_of(SELF->core) == PRS_RING_ERROR)))
        return raise_exc(self, PRS_EFULL, "Queue is full");
    Py_RETURN_FALSE;
}

static const prs_py_cond_ops q_ops = {q_call, q_settle, q_result};

/* Every put, get and join (declared), sync and asyncio (driven by pyresilience/queues.py). */
#define Q_CALL(kind, item, timeout_ns, new_waiter) \
    prs_py_cond_call(&q_ops, self, ((q_obj *)self)->core, PRS_PY_WAITER_##kind, item, timeout_ns, new_waiter)

/* task_done, close, _after_fork_child: one core call over the ring, what it
 * left to do, then None or its refusal (PRS_EINVAL: ValueError(refusal)).
 * After fork, the item of a parent thread's put that left the queue is owned
 * by that thread's frame, which never runs in the child: it stays taken. */
static PyObject *q_op(PyObject *self, int (*op)(prs_ring *, prs_ring_result *), const char *refusal) {
    prs_ring_result res;
    int rc = op(SELF->core, &res);
    after(self, &res);
    if (rc == PRS_EINVAL) return PyErr_Format(PyExc_ValueError, "%s", refusal);
    if (rc) return raise_exc(self, rc, refusal); /* MemoryError: no new lock after fork */
    Py_RETURN_NONE;
}

#include "gen/queue.h"

/* ---- the rest ------------------------------------------------------------ */

static PyObject *q_stats(PyObject *self, PyObject *unused) {
    prs_ring_stats s = q_stats_of(SELF);
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
    q_args a = SELF->a; /* the queue's config with the new capacity, for the verdict */
    if (prs_py_parse_config_count(v, param, &a.given) < 0) return -1;
    prs_config_error why;
    int rc = q_args_check(&a, &why);
    if (rc) {
        PyObject *vals[P_RingQueue__COUNT] = {NULL};
        vals[alias ? P_RingQueue_maxsize : P_RingQueue_max_size] = v;
        prs_py_config_error(prs_py_state_of(self), rc, &why, &RingQueue_params, vals, &a);
        return -1;
    }
    prs_ring_result res;
    Py_BEGIN_CRITICAL_SECTION(self); /* the core's capacity and the size given change together */
    rc = prs_ring_set_capacity(SELF->core, a.ring.capacity, &res);
    if (!rc) __atomic_store_n(&SELF->a.given, a.given, __ATOMIC_RELAXED);
    Py_END_CRITICAL_SECTION();
    if (rc) { raise_exc(self, rc, NULL); return -1; }
    after(self, &res);
    return 0;
}
