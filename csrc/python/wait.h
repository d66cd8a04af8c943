/*
 * wait.h - the binding's condition wait: how a thread or an asyncio task
 * waits on a FIFO of intrusive core waiters (a prs_bulkhead or a prs_ring)
 * until the core serves it. Used by every blocking form of Bulkhead and
 * RingQueue; the rate limiters' wait is prs_py_wait_* in prs_py.h.
 *
 * The core decides everything (served, still queued, closed) and never calls
 * Python; this file only sleeps with the GIL released, checks signals, wakes
 * futures and settles. An owner type describes its core once, in a
 * prs_py_cond_ops: how a queued BLOCKING waiter waits (the core's
 * prs_X_wait), and how a waiter is settled (the core's prs_X_finish in ACCEPT
 * or CANCEL mode, followed by whatever the call left to do - waking the
 * waiters it served, releasing items, watermark callbacks).
 *
 * Sync (prs_py_cond_wait): the caller queues a BLOCKING core waiter on its C
 * stack; the wait runs in slices of at most 50 ms against an absolute
 * monotonic deadline with the GIL released, and runs PyErr_CheckSignals()
 * after every slice - also the one in which the waiter was served - so an
 * interrupted wait settles with CANCEL and keeps nothing.
 *
 * Async (prs_py_waiter, the _AsyncWaiter type): an entry of the same FIFO tied
 * to an asyncio future. Ownership:
 *   - the coroutine that made it holds a reference until it settles it;
 *   - while it is queued in the core, the core "holds" one more reference
 *     (prs_py_waiter_new takes it). Whoever takes it out of the queue drops
 *     that reference: the thread that served it (prs_py_waiter_served, after
 *     waking its future), or prs_py_waiter_finish when the settle finds it
 *     still queued;
 *   - it holds its owner strongly, so the core outlives every queued waiter.
 * Waking: on the future's loop thread, future.set_result(None) directly; from
 * any other thread, loop.call_soon_threadsafe(waiter) (calling the waiter
 * sets the result if the future is still pending). The future says only "look
 * again": what was handed over is in the core waiter's state.
 */
#ifndef PRS_PY_WAIT_H
#define PRS_PY_WAIT_H

#include "prs_py.h"

/* What a settle produced: the core's outcome (PRS_BULKHEAD_* / PRS_RING_*)
 * and, for a queue, the item that became the caller's (a strong reference). */
typedef struct prs_py_settled {
    int outcome;
    PyObject *item;
} prs_py_settled;

typedef struct prs_py_cond_ops {
    /* The core's wait for a queued BLOCKING waiter (GIL released: touches only
     * the core): PRS_OK once served, PRS_ETIMEDOUT at deadline_ns. */
    int (*wait)(void *core, void *waiter, int64_t deadline_ns);
    /* Settles `waiter` of `owner` (cancel: nothing may be kept, what it was
     * handed goes back), then runs what the call left to do. Keeps a pending
     * exception. Returns 1 when the waiter was still queued until this call,
     * else 0. */
    int (*settle)(PyObject *owner, void *waiter, int cancel, prs_py_settled *out);
} prs_py_cond_ops;

/* ---- sync ---------------------------------------------------------------- */

/* Waits until `waiter` (queued, BLOCKING) is served or timeout_ns has passed
 * (PRS_NEVER: no limit), then settles it with ACCEPT into *out: 0. When a
 * signal handler raises (Ctrl-C), settles it with CANCEL instead: -1 with that
 * exception. */
int prs_py_cond_wait(const prs_py_cond_ops *ops, PyObject *owner, void *core, void *waiter,
                     int64_t timeout_ns, prs_py_settled *out);

/* ---- async --------------------------------------------------------------- */

enum { PRS_PY_WAITER_BULKHEAD = 0, PRS_PY_WAITER_PUT = 1, PRS_PY_WAITER_GET = 2, PRS_PY_WAITER_JOIN = 3 };

typedef struct prs_py_waiter {
    PyObject_HEAD
    PyObject *owner;              /* strong: the Bulkhead or RingQueue */
    PyObject *loop;               /* strong: the loop of `future` */
    PyObject *future;             /* strong: asyncio future */
    PyObject *get_loop;           /* strong: asyncio's _get_running_loop */
    const prs_py_cond_ops *ops;   /* the owner's */
    int kind;                     /* PRS_PY_WAITER_* */
    int settled;                  /* 1 once settled */
    union {
        prs_bulkhead_waiter b;
        prs_ring_waiter r;
    } u;                          /* the core waiter (NOTIFY; data = this object) */
} prs_py_waiter;

/* A new waiter of `kind` for `owner`, with a fresh future of the running loop
 * (get_loop() returns it; RuntimeError when there is none), its core waiter
 * initialised, and the queue's reference already taken (two references in
 * all). NULL with an exception. */
prs_py_waiter *prs_py_waiter_new(prs_py_state *st, PyObject *owner, int kind, PyObject *get_loop,
                                 const prs_py_cond_ops *ops);
/* The core did not queue it (served at once, or refused): drops both
 * references, marking it settled. */
void prs_py_waiter_discard(prs_py_waiter *w);
/* The core served it (it came back as woken): wakes its future - or, when its
 * loop is gone, reports that and settles it with CANCEL - and drops the
 * queue's reference. Keeps a pending exception. */
void prs_py_waiter_served(prs_py_waiter *w);
/* Settles it (ops->settle) and drops the queue's reference when it was still
 * queued. Returns 0 with *out, or 1 when it had been settled already (out
 * untouched). */
int prs_py_waiter_finish(prs_py_waiter *w, int cancel, prs_py_settled *out);
/* The arguments (waiter, cancel) of an owner's _finish method `fname`: the
 * waiter when it is an _AsyncWaiter of `kind` owned by `owner`, and *cancel
 * its truth value (cancel NULL: the waiter alone). NULL with TypeError. */
prs_py_waiter *prs_py_waiter_args(PyObject *owner, const char *fname, PyObject *const *args, Py_ssize_t nargs,
                                  int kind, int *cancel);

/* An already-done awaitable yielding `value`, of `tp` (the module's _Ready
 * type, which owners cache: the async with fast path). */
PyObject *prs_py_ready_new(PyTypeObject *tp, PyObject *value);

/* Registers _AsyncWaiter and _Ready. 0 or -1. */
int prs_py_register_waiter(PyObject *m, prs_py_state *st);

#endif
