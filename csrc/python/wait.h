/*
 * wait.h - the binding's two waits. The rate wait: until a rate limiter
 * (in-process, keyed, group, Redis) admits n, the core deciding each step;
 * with the rate methods every limiter-like type shares. The condition wait:
 * every blocking and asyncio form of Bulkhead and RingQueue, one
 * prs_py_cond_call() over the core's FIFO of intrusive waiters (a
 * prs_bulkhead's or a prs_ring's), each owner describing its core once in a
 * prs_py_cond_ops. The core decides everything and never calls Python; wait.c
 * sleeps with the GIL released in slices of at most 50 ms, checks signals (an
 * interrupted wait settles with CANCEL: it keeps nothing), wakes futures and
 * settles. A thread waits on a BLOCKING core waiter on its C stack; an
 * asyncio task on an _AsyncWaiter, an entry of the same FIFO whose future the
 * core's serving wakes and whose finish(cancel) settles it.
 */
#ifndef PRS_PY_WAIT_H
#define PRS_PY_WAIT_H

#include "prs_py.h"

/* ---- the rate wait ------------------------------------------------------- */

/* Decides n at now, consuming (when `consume`) only when admitted. *denied_by:
 * a group's first denying member (left as it is otherwise); *max_n: the
 * largest n that can ever be admitted (a request for more is a ValueError,
 * not a wait). 0 or a status (with an exception set when fn words it itself,
 * e.g. a backend's message). */
typedef int (*prs_py_decide_fn)(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d,
                                int *denied_by, int64_t *max_n);

/* Decides until n is admitted (0), sleeping between steps with the GIL
 * released in slices of <= 50 ms, checking signals; `whole`: each step's
 * whole delay before deciding again (a decision is a round trip), else a
 * slice. -1 with an exception: RateLimitExceeded (retry_after inf) when the
 * wait would never end - a spent budget, or a clock saturated at 2^63 ns -
 * or when admission lies beyond timeout_ns; ValueError when n exceeds what
 * can ever be admitted; a clock error, a signal handler's. Nothing is taken
 * then. `what` names the limiter in messages. */
int prs_py_wait_admitted(prs_py_state *st, prs_py_clock *clock, prs_py_decide_fn fn, void *ctx,
                         const char *what, int64_t n, int64_t timeout_ns, int whole);
/* A _RateWait object for the async forms: its step() returns None once
 * admitted, else the float seconds to await before calling it again.
 * `owner` (kept alive by the object) owns `clock` and `ctx`. */
PyObject *prs_py_rate_wait_new(prs_py_state *st, PyObject *owner, prs_py_clock *clock,
                               prs_py_decide_fn fn, void *ctx, const char *what, int64_t n,
                               int64_t timeout_ns);

/* The rate methods of every limiter-like type (limiters.c): allow (a bool),
 * check (a Decision), peek (nothing taken), acquire (the sync wait) and
 * _waiter (a _RateWait for the async form). A type provides one target
 * function, which says what a call decides on; the generated method wrappers
 * (decl: M(rate=True)) parse the declared arguments ([key,] n=1[,
 * timeout=None], *, tokens_needed=None) and call prs_py_rate_method. */
enum { PRS_PY_ALLOW, PRS_PY_CHECK, PRS_PY_PEEK, PRS_PY_ACQUIRE, PRS_PY_WAITER };
typedef struct prs_py_rate {
    prs_py_clock *clock;
    prs_py_decide_fn fn;
    void *ctx;            /* fn's (outlives the call for _waiter: owned by self) */
    const char *what;     /* names the limiter in messages (static) */
    void *core;           /* a keyed limiter's table, */
    const char *key;      /* and the key (UTF-8 or bytes), borrowed for the call; */
    size_t len;           /* ctx is then this struct */
} prs_py_rate;
/* Fills *r for self and `key` (NULL for the types without one). 0 or -1. */
typedef int (*prs_py_rate_fn)(PyObject *self, PyObject *key, prs_py_rate *r);
typedef struct prs_py_rate_args {
    int64_t n, timeout_ns;
} prs_py_rate_args;
PyObject *prs_py_rate_method(PyObject *self, int kind, prs_py_rate_fn target, PyObject *key,
                             const prs_py_rate_args *a);

/* ---- the condition wait -------------------------------------------------- */

/* The operations a waiter can be queued for: a bulkhead's, or a ring's role. */
enum { PRS_PY_WAITER_BULKHEAD = -1, PRS_PY_WAITER_PUT = PRS_RING_PRODUCER, PRS_PY_WAITER_GET = PRS_RING_CONSUMER,
       PRS_PY_WAITER_JOIN = PRS_RING_JOINER };

/* What a core call or a settle produced: the core's outcome (PRS_BULKHEAD_* /
 * PRS_RING_*; 0: a waiter settled already) and, for a queue, the item that
 * came back to the caller (a strong reference). */
typedef struct prs_py_settled {
    int outcome;
    PyObject *item;
} prs_py_settled;

/* How result() is asked: from an asyncio form, for a cancelled waiter. */
#define PRS_PY_COND_ASYNC 1u
#define PRS_PY_COND_CANCEL 2u

typedef struct prs_py_cond_ops {
    /* The core call of operation `kind` with `arg` (the item of a put).
     * waiter NULL: queue nothing - `final` 0 returns 1 when the call would
     * have to wait (nothing changed), `final` 1 refuses (counted) instead.
     * Else queues `waiter` when it must wait: 1. 0 when done, with *out;
     * -1 with an exception. */
    int (*call)(PyObject *owner, int kind, void *waiter, int final, PyObject *arg, prs_py_settled *out);
    /* Settles `waiter` (cancel: nothing may be kept, what it was handed goes
     * back), then runs what the call left to do. Keeps a pending exception.
     * 1 when the waiter was still queued until this call, else 0. */
    int (*settle)(PyObject *owner, void *waiter, int cancel, prs_py_settled *out);
    /* The Python value of `out` for operation `kind` (PRS_PY_COND_* flags),
     * or NULL with the exception; releases out->item unless it returns it. */
    PyObject *(*result)(PyObject *owner, int kind, unsigned flags, prs_py_settled *out);
} prs_py_cond_ops;

/* When operation `kind` must wait: refused with timeout_ns 0; with new_waiter
 * (the facade's: a future and its wake), a queued _AsyncWaiter whose future
 * the core wakes; else waits up to timeout_ns (PRS_NEVER: no limit) with the GIL
 * released. ops->result() of the outcome, the _AsyncWaiter, or NULL with an
 * exception (a signal handler's: the waiter settled with CANCEL). */
PyObject *prs_py_cond_queue(const prs_py_cond_ops *ops, PyObject *owner, void *core, int kind, PyObject *arg,
                            int64_t timeout_ns, PyObject *new_waiter);

/* Runs operation `kind` of `owner` (whose core is `core`): at once when it
 * can (inline, so that an owner's constant ops are called directly on this
 * path), else prs_py_cond_queue(). */
static inline PyObject *prs_py_cond_call(const prs_py_cond_ops *ops, PyObject *owner, void *core, int kind,
                                         PyObject *arg, int64_t timeout_ns, PyObject *new_waiter) {
    prs_py_settled out = {0, NULL};
    int rc = ops->call(owner, kind, NULL, timeout_ns == 0, arg, &out); /* no waiter made when none waits */
    if (rc == 1) return prs_py_cond_queue(ops, owner, core, kind, arg, timeout_ns, new_waiter);
    if (rc < 0) return NULL;
    return ops->result(owner, kind, new_waiter ? PRS_PY_COND_ASYNC : 0, &out);
}

/* A core call of an owner of `kind` served the asyncio waiters `woken` (its
 * core's waiters, linked by `next`): wakes each one's future - or, when its
 * loop is gone, reports that and settles it with CANCEL, which may serve the
 * next - and drops the queue's reference. Keeps a pending exception. */
void prs_py_waiters_served(int kind, void *woken);

#endif
