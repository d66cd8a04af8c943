/*
 * bulkhead.h - what bulkhead.c and queue.c share: the asyncio waiter object.
 *
 * An _AsyncWaiter is an entry of a core waiter queue (a prs_bulkhead_waiter or
 * a prs_ring_waiter, embedded) tied to an asyncio future. Ownership:
 *   - the coroutine that made it holds a reference until it settles it;
 *   - while it is queued in a core object, the core "holds" one more reference
 *     (taken before queueing). Whoever takes it out of the queue drops that
 *     reference: the thread that served it (after waking its future), or the
 *     coroutine when settling finds it still queued (TIMED_OUT/REJECTED/
 *     CANCELLED outcomes);
 *   - it holds its owner (the Bulkhead/RingQueue) strongly, so the core object
 *     outlives every queued waiter.
 * Waking: on the future's loop thread, future.set_result(None) directly; from
 * any other thread, loop.call_soon_threadsafe(waiter) (calling the waiter sets
 * the result if the future is still pending). The future says only "look
 * again": what was handed over is in the core waiter's state.
 */
#ifndef PRS_PY_BULKHEAD_H
#define PRS_PY_BULKHEAD_H

#include "prs_py.h"

/* Set the pending exception aside around work that may raise and report its
 * own errors (PyErr_Fetch is deprecated from 3.12). */
#if PY_VERSION_HEX >= 0x030C0000
#define PRS_PY_EXC_SAVE(v) PyObject *v = PyErr_GetRaisedException()
#define PRS_PY_EXC_RESTORE(v) PyErr_SetRaisedException(v)
#else
#define PRS_PY_EXC_SAVE(v) PyObject *v##_t, *v, *v##_tb; PyErr_Fetch(&v##_t, &v, &v##_tb)
#define PRS_PY_EXC_RESTORE(v) PyErr_Restore(v##_t, v, v##_tb)
#endif

enum { PRS_PY_WAITER_BULKHEAD = 0, PRS_PY_WAITER_PUT = 1, PRS_PY_WAITER_GET = 2 };

typedef struct prs_py_waiter prs_py_waiter;

struct prs_py_waiter {
    PyObject_HEAD
    PyObject *owner;     /* strong: the Bulkhead or RingQueue */
    PyObject *loop;      /* strong: the loop of `future` */
    PyObject *future;    /* strong: asyncio future */
    PyObject *get_loop;  /* strong: asyncio's _get_running_loop */
    int kind;            /* PRS_PY_WAITER_* */
    int settled;         /* 1 once the owner settled it (finish) */
    /* Called from dealloc when the waiter was served but never settled (its
     * coroutine vanished): gives back what it holds. May be NULL. */
    void (*abandon)(prs_py_waiter *w);
    union {
        prs_bulkhead_waiter b;
        prs_ring_waiter r;
    } u;
};

/* A new waiter of `kind` for `owner`, with a fresh future of the running loop
 * (get_loop() must return it; RuntimeError when there is none). The core waiter
 * is initialised (NOTIFY kind, data = the waiter). NULL with an exception. */
prs_py_waiter *prs_py_waiter_new(prs_py_state *st, PyObject *owner, int kind, PyObject *get_loop);
/* Wakes the waiter's future (see above). 0, or -1 with an exception (e.g. its
 * loop is closed). */
int prs_py_waiter_wake(prs_py_waiter *w);
/* 1 if `o` is an _AsyncWaiter of `kind` owned by `owner`; else sets TypeError
 * and returns 0. */
int prs_py_waiter_check(prs_py_state *st, PyObject *o, PyObject *owner, int kind);

int prs_py_register_waiter(PyObject *m, prs_py_state *st);

#endif
