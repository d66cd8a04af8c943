/*
 * wait.c - the binding's two waits (wait.h) and their _AsyncWaiter and
 * _RateWait types.
 *
 * An _AsyncWaiter's references:
 *   - the coroutine that got it holds one until it settles it (finish());
 *   - while it is queued in the core, the core "holds" one more (taken when
 *     it is made). Whoever takes it out of the queue drops that one: the
 *     thread that served it (prs_py_waiters_served, after waking its future),
 *     or finish() when the settle finds it still queued;
 *   - it holds its owner strongly, so the core outlives every queued waiter.
 * Its future and that future's wake come from the facade's new_waiter()
 * (pyresilience/_wait.py); the thread that serves it calls the wake.
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
    PyObject *future;             /* strong: asyncio future */
    PyObject *wake;               /* strong: wakes `future`, from any thread */
    const prs_py_cond_ops *ops;   /* the owner's */
    int kind;                     /* PRS_PY_WAITER_* */
    int settled;                  /* 1 once settled */
    core_waiter u;                /* NOTIFY; data = this object */
} prs_py_waiter;

/* ---- the rate wait: until a rate limiter admits ---------------------------- *
 * The core decides each step (prs_wait_decide: admitted, sleep until, timeout,
 * never); this only turns the step into a sleep, an advance of a ManualClock,
 * or one of the exceptions wait.h lists. A finite timeout is also measured on
 * CLOCK_MONOTONIC for clocks that are not a ManualClock, so a callable clock
 * that stalls cannot stretch it. */

/* A rate wait in progress: what decides, n, and its deadlines. */
typedef struct rate_wait {
    prs_py_clock *clock;
    prs_py_decide_fn fn;
    void *ctx;
    const char *what;      /* static string */
    int64_t n;
    int64_t deadline;      /* on the limiter's clock; PRS_NEVER: no timeout */
    int64_t real_deadline; /* on CLOCK_MONOTONIC; PRS_NEVER also on a ManualClock */
} rate_wait;

typedef struct {
    PyObject_HEAD
    PyObject *owner;          /* strong: owns the wait's clock and ctx */
    rate_wait w;
    int done;
} rate_wait_obj;

/* Starts wait *w (what decides and n set) with timeout_ns (PRS_NEVER: none;
 * a policy's deadline caps it), reading the clock. 0 or -1. */
static int wait_begin(prs_py_state *st, rate_wait *w, int64_t timeout_ns) {
    int64_t now;
    timeout_ns = prs_py_deadline_cap(st, timeout_ns);
    if (prs_py_clock_now(w->clock, &now) < 0) return -1;
    w->deadline = timeout_ns == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, timeout_ns);
    w->real_deadline = (timeout_ns == PRS_NEVER || w->clock->kind == PRS_CLOCK_MANUAL)
                           ? PRS_NEVER
                           : prs__sat_add(prs_monotonic_ns(), timeout_ns);
    return 0;
}

/* Decides once. 0: admitted (n taken). 1: not yet, *sleep_ns is how long to
 * sleep before the next step (0 on a ManualClock, which was advanced to the
 * instant of admission instead). -1 with an exception (prs_py_wait_admitted's).
 * Nothing is taken unless 0 is returned. */
static int wait_step(prs_py_state *st, rate_wait *w, int64_t *sleep_ns) {
    static const char *const late = "rate limit exceeded: not admissible within timeout";
    int64_t now, max_n = INT64_MAX, wake = 0;
    prs_decision d;
    int by = -1;
    if (prs_py_clock_now(w->clock, &now) < 0) return -1;
    int rc = w->fn(w->ctx, now, w->n, 1, &d, &by, &max_n);
    if (rc) { /* fn may word its own failure (a backend's message) */
        if (!PyErr_Occurred()) prs_py_error(st, rc, NULL);
        return -1;
    }
    switch (prs_wait_decide(&d, now, w->deadline, &wake)) {
    case PRS_WAIT_ADMITTED: return 0;
    case PRS_WAIT_NEVER:
        if (w->n > max_n) {
            PyErr_Format(PyExc_ValueError, "n=%lld can never be admitted by this %s (limit %lld)",
                         (long long)w->n, w->what, (long long)max_n);
            return -1;
        }
        prs_py_raise_rate_limited(st, &d, by, PRS_NEVER,
                                  d.retry_after_ns == PRS_NEVER
                                      ? "rate limit exceeded: never admissible (the budget is "
                                        "spent and does not refill)"
                                      : "rate limit exceeded: never admissible (the clock has "
                                        "reached 2**63 ns)");
        return -1;
    case PRS_WAIT_TIMEOUT:
        prs_py_raise_rate_limited(st, &d, by, d.retry_after_ns, late);
        return -1;
    default: break; /* PRS_WAIT_SLEEP until `wake` */
    }
    if (w->clock->kind == PRS_CLOCK_MANUAL) { /* advanced to the admission instant instead */
        *sleep_ns = 0;
        return prs_py_clock_wait(w->clock, now, wake) < 0 ? -1 : 1;
    }
    int64_t ns = wake - now;
    if (w->real_deadline != PRS_NEVER) {
        int64_t left = prs__sat_sub(w->real_deadline, prs_monotonic_ns());
        if (left <= 0) {
            prs_py_raise_rate_limited(st, &d, by, d.retry_after_ns, late);
            return -1;
        }
        if (ns > left) ns = left;
    }
    *sleep_ns = ns;
    return 1;
}

int prs_py_wait_admitted(prs_py_state *st, prs_py_clock *clock, prs_py_decide_fn fn, void *ctx,
                         const char *what, int64_t n, int64_t timeout_ns, int whole) {
    rate_wait w = {.clock = clock, .fn = fn, .ctx = ctx, .what = what, .n = n};
    if (wait_begin(st, &w, timeout_ns) < 0) return -1;
    for (;;) { /* nothing is taken unless admitted */
        int64_t ns = 0;
        int r = wait_step(st, &w, &ns);
        if (r <= 0) return r;
        if ((whole ? prs_py_clock_sleep(clock, ns) : prs_py_clock_wait(clock, 0, ns)) < 0) return -1;
    }
}

/* _RateWait: a rate wait of an async form in progress. */

PyObject *prs_py_rate_wait_new(prs_py_state *st, PyObject *owner, prs_py_clock *clock,
                               prs_py_decide_fn fn, void *ctx, const char *what, int64_t n,
                               int64_t timeout_ns) {
    PyTypeObject *tp = PRS_PY_TYPE(st, RateWait);
    rate_wait_obj *self = (rate_wait_obj *)tp->tp_alloc(tp, 0);
    if (!self) return NULL;
    self->owner = Py_NewRef(owner);
    self->w = (rate_wait){.clock = clock, .fn = fn, .ctx = ctx, .what = what, .n = n};
    if (wait_begin(st, &self->w, timeout_ns) == 0) return (PyObject *)self;
    Py_DECREF(self);
    return NULL;
}

static PyObject *rate_wait_step(PyObject *op, PyObject *unused) {
    rate_wait_obj *self = (rate_wait_obj *)op;
    prs_py_state *st = prs_py_state_of(op);
    if (!st) return NULL;
    int64_t ns = 0;
    int r = -1;
    Py_BEGIN_CRITICAL_SECTION(op); /* steps of one wait, one at a time: admitted once */
    if (self->done)
        PyErr_SetString(PyExc_RuntimeError, "this wait has already been admitted");
    else if ((r = wait_step(st, &self->w, &ns)) == 0)
        self->done = 1;
    Py_END_CRITICAL_SECTION();
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_NONE;
    return PyFloat_FromDouble((double)ns / 1e9);
}

/* ---- the condition wait ----------------------------------------------------- */

/* Takes a one-shot flag: 0 for the one caller that set it, 1 for every other. */
static int claim(int *flag) { return __atomic_exchange_n(flag, 1, __ATOMIC_ACQ_REL); }

static int core_waiter_init(core_waiter *u, int kind, int blocking, void *data) {
    if (kind == PRS_PY_WAITER_BULKHEAD) return prs_bulkhead_waiter_init(&u->b, blocking, data);
    return prs_ring_waiter_init(&u->r, kind, blocking, data); /* kind is the ring's role */
}

static void core_waiter_destroy(core_waiter *u, int kind) {
    if (kind == PRS_PY_WAITER_BULKHEAD) prs_bulkhead_waiter_destroy(&u->b);
    else prs_ring_waiter_destroy(&u->r);
}

/* ---- _AsyncWaiter -------------------------------------------------------- */

/* Settles w with CANCEL (its coroutine will never settle it): what it was
 * handed goes back. */
static void waiter_abandon(prs_py_waiter *w) {
    prs_py_settled out = {0, NULL};
    if (!claim(&w->settled)) w->ops->settle(w->owner, &w->u, 1, &out);
    Py_XDECREF(out.item);
}

void prs_py_waiters_served(int kind, void *woken) {
    while (woken) {
        core_waiter *u = woken;
        prs_py_waiter *w = kind == PRS_PY_WAITER_BULKHEAD ? u->b.data : u->r.data;
        woken = kind == PRS_PY_WAITER_BULKHEAD ? (void *)u->b.next : (void *)u->r.next; /* before w may go */
        PRS_PY_EXC_SAVE(saved);
        PyObject *r = PyObject_CallNoArgs(w->wake);
        if (r) Py_DECREF(r);
        else {
            PyErr_WriteUnraisable((PyObject *)w); /* its loop is gone: undo what was handed to it */
            waiter_abandon(w);
        }
        Py_DECREF(w); /* the queue's reference */
        PRS_PY_EXC_RESTORE(saved);
    }
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
                            int64_t timeout_ns, PyObject *new_waiter) {
    prs_py_state *st = prs_py_state_of(owner);
    prs_py_settled out = {0, NULL};
    int rc;
    if (!st) return NULL;
    if (new_waiter) { /* asyncio: an _AsyncWaiter with new_waiter()'s future and wake */
        PyObject *fut, *wake, *pair = PyObject_CallNoArgs(new_waiter); /* RuntimeError: no loop runs */
        if (!pair) return NULL;
        prs_py_waiter *w = PyArg_ParseTuple(pair, "OO:new_waiter", &fut, &wake)
                               ? PyObject_GC_New(prs_py_waiter, PRS_PY_TYPE(st, AsyncWaiter)) : NULL;
        if (!w) { Py_DECREF(pair); return NULL; }
        w->owner = Py_NewRef(owner);
        w->future = Py_NewRef(fut);
        w->wake = Py_NewRef(wake);
        Py_DECREF(pair);
        w->ops = ops;
        w->kind = kind;
        w->settled = 0;
        core_waiter_init(&w->u, kind, 0, w);
        PyObject_GC_Track(w);
        Py_INCREF(w); /* the queue's reference, taken before the core may serve it */
        rc = ops->call(owner, kind, &w->u, 0, arg, &out);
        if (rc == 1) return (PyObject *)w;
        w->settled = 1; /* not queued: drop the queue's reference and ours */
        Py_DECREF(w);
        Py_DECREF(w);
    } else { /* a thread: a BLOCKING waiter, waited on until served or timeout_ns passed */
        core_waiter u;
        int64_t now = prs_monotonic_ns(), left = prs_py_deadline_cap(st, timeout_ns);
        int64_t deadline = left == PRS_NEVER ? PRS_NEVER : prs__sat_add(now, left);
        int err = core_waiter_init(&u, kind, 1, NULL);
        if (err) return prs_py_error(st, err, NULL);
        rc = ops->call(owner, kind, &u, 0, arg, &out);
        while (rc == 1) {
            int64_t slice_end = prs__min64(prs__sat_add(now, 50 * PRS_NS_PER_MS), deadline);
            Py_BEGIN_ALLOW_THREADS
            err = kind == PRS_PY_WAITER_BULKHEAD ? prs_bulkhead_wait(core, &u.b, slice_end)
                                                 : prs_ring_wait(core, &u.r, slice_end); /* only the core */
            Py_END_ALLOW_THREADS
            /* Signals first, served or not: what was handed over in the slice in
             * which a signal came would otherwise be kept while the handler's
             * exception (KeyboardInterrupt) propagates. It settles with CANCEL. */
            int cancel = PyErr_CheckSignals() < 0;
            if (cancel || err == PRS_OK || (now = prs_monotonic_ns()) >= deadline) {
                ops->settle(owner, &u, cancel, &out);
                rc = cancel ? -1 : 0;
            }
        }
        core_waiter_destroy(&u, kind);
    }
    if (rc < 0) {
        Py_XDECREF(out.item);
        return NULL;
    }
    return ops->result(owner, kind, new_waiter ? PRS_PY_COND_ASYNC : 0, &out);
}

/* finish(): settles the waiter once, whichever thread comes first (outcome 0
 * when it had been settled already). */
static PyObject *finish(prs_py_waiter *w, PyObject *cancel_arg) {
    int cancel = cancel_arg ? PyObject_IsTrue(cancel_arg) : 0;
    if (cancel < 0) return NULL;
    prs_py_settled out = {0, NULL};
    if (!claim(&w->settled) && w->ops->settle(w->owner, &w->u, cancel, &out))
        Py_DECREF(w); /* it was still queued: the queue's reference */
    return w->ops->result(w->owner, w->kind, PRS_PY_COND_ASYNC | (cancel ? PRS_PY_COND_CANCEL : 0), &out);
}

#include "gen/wait.h" /* after what its tables name */
