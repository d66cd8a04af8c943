/*
 * prs_py.h - what the binding's files share: module state, clocks, argument
 * parsing, status -> exception mapping, decisions, and the generic limiter
 * object that every in-process rate limiter type is made of.
 *
 * Rules (DESIGN.md): parse arguments, read the clock once, call the core, map
 * status codes to exceptions in prs_py_error() only. Never block with the GIL
 * held; never hold a core lock while calling Python.
 */
#ifndef PRS_PY_H
#define PRS_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <structmember.h>

#include "pyresilience.h"
#include "prs_internal.h"

/* ---- module state ----------------------------------------------------- *
 * Every type and exception class the binding needs, by slot (enum
 * prs_py_slot, generated from the declarations: one per type, the algorithm
 * table's limiter types from PRS_SLOT__ALGO_FIRST in its order, then one per
 * exception class). Types are heap types made in Py_mod_exec; exception
 * classes are read from pyresilience.errors (pure Python, so users can
 * subclass and construct them). traverse/clear cover the whole array. */
#include "gen/module.h"

typedef struct prs_py_state {
    PyObject *slots[PRS_SLOT__COUNT];
} prs_py_state;

#define PRS_PY_TYPE(st, name) ((PyTypeObject *)(st)->slots[PRS_SLOT_##name])
#define PRS_PY_EXC(st, name) ((st)->slots[PRS_SLOT_##name])

extern PyModuleDef prs_py_module_def;

/* The module state from a type (also a Python subclass of one of ours). */
static inline prs_py_state *prs_py_state_of_type(PyTypeObject *tp) {
    PyObject *m = PyType_GetModuleByDef(tp, &prs_py_module_def);
    return m ? (prs_py_state *)PyModule_GetState(m) : NULL;
}
static inline prs_py_state *prs_py_state_of(PyObject *self) {
    return prs_py_state_of_type(Py_TYPE(self));
}

/* Adds a heap type made from `spec` (base may be NULL) to the module and stores it
 * in slot `slot`. 0 or -1 with an exception. */
int prs_py_add_type(PyObject *m, prs_py_state *st, int slot, PyType_Spec *spec, PyObject *base);

/* Each binding file registers its types, constants and functions through
 * one function (generated for the declared files), called by module.c in
 * the order of PRS_PY_REGISTER_FILES. 0 or -1 with an exception. */
#define PRS_PY_REGISTER_DECL(file) int prs_py_register_##file(PyObject *m, prs_py_state *st);
PRS_PY_REGISTER_FILES(PRS_PY_REGISTER_DECL)
#undef PRS_PY_REGISTER_DECL
/* shm.c: a reference to the open region of SharedMemory `o` (prs__shm_unref
 * drops it), or NULL with ValueError when closed; with `param` (o an
 * argument), TypeError naming it when o is not a SharedMemory. */
struct prs_shm *prs_py_shm_ref(prs_py_state *st, PyObject *o, const char *param);
#define prs_py_shm_region(st, shared) prs_py_shm_ref((st), (shared), "region")
/* shm.c: the core object of a constructor's shared=, name=: a limiter of
 * `algo` (LIMITER, cfg validated first), a keyed table, a breaker or a
 * bulkhead of config cfg, placed in the SharedMemory `shared` under `name`.
 * PRS_OK with *out (a prs_limiter **, ...); PRS_PY_IN_PROCESS when neither
 * is given (None or NULL: the caller builds it in process); else -1 with an
 * exception set (name= alone, not a region, a bad name, closed, another
 * object or configuration there, full, corrupt; without `why`, every
 * refusal) or, only with `why`, the core's status with none set, why
 * filled, for prs_py_config_error(). */
enum { PRS_PY_PLACE_LIMITER, PRS_PY_PLACE_KEYED, PRS_PY_PLACE_BREAKER, PRS_PY_PLACE_BULKHEAD };
#define PRS_PY_IN_PROCESS 1
int prs_py_shm_place(prs_py_state *st, PyObject *shared, PyObject *name, int kind,
                     const prs_algo *algo, const void *cfg, void *out, prs_config_error *why);

/* A wait's timeout (ns, PRS_NEVER: none) capped at what is left of the current
 * call's deadline (deadline.c); unchanged when none is set. Never fails. */
int64_t prs_py_deadline_cap(prs_py_state *st, int64_t timeout_ns);
/* retry.c: a RetryBudget's deposit of a first attempt (at mono_now, a
 * CLOCK_MONOTONIC reading, when that is its clock), 0 or -1; a RetryCounts'
 * counters in the core. */
int prs_py_retry_deposit(PyObject *budget, int64_t mono_now);
prs_counters *prs_py_retry_counters(PyObject *counts);
/* The deadline in effect: the value of the context variable `var` (may be
 * NULL), absolute ns, or PRS_NEVER. 0, or -1 with an exception. */
int prs_py_deadline_abs(PyObject *var, int64_t *out);
/* A sync Timeout's deadline for the time of its call (deadline.c): push gives
 * the frame's index (>= 0) for pop, -1 when the thread's frames are all taken
 * (set the context variable instead), -2 with an exception. */
int prs_py_deadline_push(int64_t deadline);
void prs_py_deadline_pop(int frame);
/* The policy's fast path into a Bulkhead (bulkhead.c): a permit at `now`
 * without waiting or counting a refusal (1 taken, 0 not), and its release at
 * `now` (0, or -1 with an exception). */
int prs_py_bulkhead_try_at(PyObject *bulkhead, int64_t now);
int prs_py_bulkhead_release_at(PyObject *bulkhead, int64_t now);

/* ---- errors ------------------------------------------------------------ */

/* The one place a status becomes an exception (the table in common.c, one
 * row per status), with the message `what` (NULL: the status's own).
 * Always returns NULL. */
PyObject *prs_py_error(prs_py_state *st, int status, const char *what);

/* A fresh RateLimitExceeded(message, retry_after=..., decision=...) set as the
 * current exception, its Decision made from d and denied_by (None when < 0).
 * Returns NULL. */
PyObject *prs_py_raise_rate_limited(prs_py_state *st, const prs_decision *d, int denied_by,
                                    int64_t retry_after_ns, const char *message);

/* Raises `exc`, an exception instance the caller made (NULL: making it failed,
 * its error is set), taking the reference. Returns NULL. */
static inline PyObject *prs_py_raise(PyObject *exc) {
    if (exc) PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_XDECREF(exc);
    return NULL;
}

/* The current exception, normalised, with its traceback attached (new
 * reference; cleared), or NULL, and setting it back: CPython 3.12's API, on
 * older versions too. PRS_PY_EXC_SAVE/RESTORE set a pending exception aside
 * around work that may raise and report its own errors. */
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *PyErr_GetRaisedException(void) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
static inline void PyErr_SetRaisedException(PyObject *v) {
    PyErr_Restore(v ? Py_NewRef(Py_TYPE(v)) : NULL, v, v ? PyException_GetTraceback(v) : NULL);
}
#endif
#define prs_py_take_exception PyErr_GetRaisedException
#define PRS_PY_EXC_SAVE(v) PyObject *v = PyErr_GetRaisedException()
#define PRS_PY_EXC_RESTORE(v) PyErr_SetRaisedException(v)

/* ---- free-threaded CPython (PEP 703) ------------------------------------ *
 * The core's objects are thread-safe; what the binding keeps beside them and
 * Python reaches (a listener tuple, a flag, a field set after construction)
 * is guarded here. A critical section is the object's own lock on a
 * free-threaded build and nothing with the GIL (braces only before 3.13). */
#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif
/* An object's lock around an operation that releases the GIL while it holds
 * it (reconfigure: read the config in force, change some fields, apply):
 * callers wait for each other with the GIL released, so no update is lost. */
static inline void prs_py_op_lock(atomic_int *held) {
    while (atomic_exchange_explicit(held, 1, memory_order_acquire)) {
        Py_BEGIN_ALLOW_THREADS
        prs_sleep_ns(20 * 1000);
        Py_END_ALLOW_THREADS
    }
}
static inline void prs_py_op_unlock(atomic_int *held) {
    atomic_store_explicit(held, 0, memory_order_release);
}

/* ---- numbers and durations at the boundary ----------------------------- */

/* A real number (int or float or anything with __float__/__index__; never bool,
 * never str). NaN always rejected; flags (PRS_PY_ZERO_OK, NEG_OK, INF_OK)
 * widen what is accepted. TypeError or ValueError naming `param` and the
 * value. 0 or -1. */
int prs_py_parse_real(PyObject *o, const char *param, unsigned flags, double *out);
/* TypeError "<param> must be <what>, not <type>: <repr of o>". Returns -1. */
int prs_py_type_error(const char *param, const char *what, PyObject *o);
/* A count for a core config field (PRS_PK_COUNT's rule: an int, or an
 * integral float; 10.5 -> ValueError, bool/str -> TypeError), whose validator
 * checks its range: beyond int64 saturates (so the validator's message names
 * it too). 0 or -1. */
int prs_py_parse_config_count(PyObject *o, const char *param, int64_t *out);
/* A request weight n: a count >= 1 (an int, or an integral float; not bool).
 * Ints beyond int64 saturate to INT64_MAX (such n can never be admitted: a
 * decision, not an error). */
int prs_py_parse_n(PyObject *o, const char *param, int64_t *out);
/* A timeout in seconds: None or +inf -> PRS_NEVER (wait forever), else a finite
 * number >= 0 converted to ns (saturating). */
int prs_py_parse_timeout(PyObject *o, const char *param, int64_t *out_ns);
/* Nanoseconds to float seconds; PRS_NEVER -> inf. */
static inline double prs_py_ns_to_s(int64_t ns) {
    return ns == PRS_NEVER ? Py_HUGE_VAL : (double)ns / 1e9;
}

/* ---- declared parameters ------------------------------------------------ *
 * Declared once (tools/decl_*.py), generated into gen/<file>.h
 * (tools/gen_binding.py). prs_py_parse_params() converts every argument with
 * a config field straight into the core's config struct (offsetof) and hands
 * back the borrowed argument objects for what the binding keeps itself. The
 * kinds (PRS_PK_<kind>) and flags (PRS_PY_<flag>), with what each means:
 * KINDS and FLAGS in tools/binding_decl.py, generated into gen/module.h. */

/* A PRS_PK_BYTES field: the argument's bytes, valid while the call runs. */
typedef struct prs_py_bytes {
    const char *p;
    size_t n;
} prs_py_bytes;

/* A str (its UTF-8: "a" and b"a" are one key) or bytes argument into *out,
 * borrowed from o; TypeError naming `param` otherwise. 0 or -1. Inline: it
 * reads every key of the keyed and Redis rate methods. */
static inline int prs_py_str_or_bytes(PyObject *o, const char *param, prs_py_bytes *out) {
    if (PyUnicode_Check(o)) { /* the length straight into n, read as its signed type */
        out->p = PyUnicode_AsUTF8AndSize(o, (Py_ssize_t *)&out->n);
        return out->p ? 0 : -1;
    }
    if (PyBytes_Check(o)) {
        out->p = PyBytes_AS_STRING(o);
        out->n = (size_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    return prs_py_type_error(param, "str or bytes", o);
}

typedef struct prs_py_param {
    const char *name;           /* the Python name */
    const char *field;          /* the core config field it fills (NULL: none) */
    unsigned char kind;         /* enum prs_py_kind */
    unsigned char flags;        /* PRS_PY_ZERO_OK | NEG_OK | INF_OK | NONE_OK | ... */
    Py_ssize_t offset;          /* offsetof the field in the config struct; -1: none */
    int64_t lo, hi;             /* COUNT, INT */
    const char *const *choices; /* ENUM: NULL-terminated */
    const char *listed;         /* ENUM: the choices for messages ("'a', 'b' or 'c'") */
    int (*convert)(PyObject *arg, void *config); /* CONVERT: 0 or -1 with an exception */
    unsigned char alias;        /* k > 0: the one other keyword for parameter k - 1 (same field
                                   and conversion, named as given in errors; at most one of the
                                   two; None is not given; without NONE_OK one of them is required) */
} prs_py_param;

typedef struct prs_py_params {
    const char *fname;          /* "CircuitBreaker", "delay" (in messages) */
    Py_ssize_t n;               /* parameters */
    Py_ssize_t maxpos;          /* the first maxpos may be positional */
    Py_ssize_t required;        /* the first `required` must be given */
    const prs_py_param *p;
} prs_py_params;

/* The one parser: by `spec`, the positional args[0..nargs) and the keywords,
 * as kwnames with their values after the positional ones (fastcall) or as the
 * dict kwds: vals[0..n) get the borrowed argument objects (NULL: not given),
 * then every given parameter with a field is converted into `config` (which
 * holds the defaults; may be NULL when no parameter has a field). TypeError
 * (missing ones first, as CPython's parsers do) or ValueError naming the
 * parameter and the value. 0 or -1. */
int prs_py_parse_args(const prs_py_params *spec, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, PyObject *kwds, void *config, PyObject **vals);
#define prs_py_parse_params(spec, args, nargs, kwnames, config, vals) \
    prs_py_parse_args((spec), (args), (nargs), (kwnames), NULL, (config), (vals))
/* The same from a tp_new's (args, kwds). */
#define prs_py_parse_params_tuple(spec, args, kwds, config, vals) \
    prs_py_parse_args((spec), ((PyTupleObject *)(args))->ob_item, PyTuple_GET_SIZE(args), NULL, \
                      (kwds), (config), (vals))
/* The value of parameter p's field in `config` (COUNT/INT: int, unless a
 * DOUBLE count; REAL: float; DURATION/TIMEOUT: float seconds; ENUM: its str;
 * no field, or a NONE_OK field at 0 (its "not set"): None). New reference or
 * NULL. */
PyObject *prs_py_param_get(const prs_py_param *p, const void *config);
/* The exception for a core validator's failure (why from prs_X_config_check):
 * ValueError "<param> <reason>, got <value>" for the parameter that fills
 * why->field, with the value as given ("got" left out when it was not), then
 * "(<other>=<value>, ...)" for the other fields the reason names (given, or
 * their value in `config`, which may be NULL). prs_py_error() for statuses
 * other than PRS_EINVAL/PRS_ERANGE. Returns NULL. */
PyObject *prs_py_config_error(prs_py_state *st, int status, const prs_config_error *why,
                              const prs_py_params *spec, PyObject *const *vals,
                              const void *config);

/* ---- clocks (clock.c) --------------------------------------------------- */

enum { PRS_CLOCK_MONOTONIC = 0, PRS_CLOCK_MANUAL = 1, PRS_CLOCK_CALLABLE = 2 };

/* A primitive's clock: how it reads time and how it waits. */
typedef struct prs_py_clock {
    int kind;
    PyObject *obj;                 /* strong: the clock object given (NULL: default) */
    _Atomic int64_t *manual_ns;    /* kind MANUAL: the ManualClock's time */
} prs_py_clock;

/* From a `clock=` argument: NULL/None or a MonotonicClock -> monotonic, a
 * ManualClock, or any callable returning float seconds. TypeError otherwise. */
int prs_py_clock_init(prs_py_state *st, PyObject *arg, prs_py_clock *c);
void prs_py_clock_clear(prs_py_clock *c);
/* The getter of a `.clock` property, the prs_py_clock at offset `off` (new
 * reference: the clock object given; a MonotonicClock for the default). */
PyObject *prs_py_get_clock(PyObject *self, void *off);
/* tp_descr_get of a callable object that binds like a function (a method). */
PyObject *prs_py_method_get(PyObject *self, PyObject *obj, PyObject *type);
/* name(attr=repr(self.attr), ...) for a type's repr; vals (may be NULL):
 * values given instead of attributes (stolen; NULL: the attribute). An
 * attribute "attr?" is left out when it is None. */
PyObject *prs_py_repr_attrs(PyObject *self, const char *name, const char *const *attrs,
                            PyObject **vals);

int prs_py_clock_now_callable(prs_py_clock *c, int64_t *now);
/* Reads the clock once: 0, or -1 with an exception (a callable clock failed or
 * returned something that is not a finite number). */
static inline int prs_py_clock_now(prs_py_clock *c, int64_t *now) {
    if (c->kind == PRS_CLOCK_MONOTONIC) { *now = prs_monotonic_ns(); return 0; }
    if (c->kind == PRS_CLOCK_MANUAL) {
        *now = atomic_load_explicit(c->manual_ns, memory_order_acquire);
        return 0;
    }
    return prs_py_clock_now_callable(c, now);
}

/* Waits on this clock from `now` until `wake` (absolute, this clock's ns).
 * A ManualClock is advanced to `wake` (never moved backwards) instead of
 * sleeping. Otherwise sleeps with the GIL released for at most 50 ms. Then
 * runs PyErr_CheckSignals(). Returns 0 (the caller re-reads the clock and
 * decides again) or -1 with an exception (KeyboardInterrupt, ...). Callers loop. */
int prs_py_clock_wait(prs_py_clock *c, int64_t now, int64_t wake);
/* Sleep `ns` on this clock (advance a ManualClock by ns; else wait with the GIL
 * released, in slices, checking signals). 0 or -1 with an exception. */
int prs_py_clock_sleep(prs_py_clock *c, int64_t ns);

/* ---- decisions --------------------------------------------------------- */

/* A Decision holds no reference (denied_by is an index, -1 for None), so it
 * is not a GC object: made on every check(), it costs one small allocation
 * and never counts toward a collection. */
typedef struct prs_py_decision {
    PyObject_HEAD
    prs_decision d;
    int denied_by; /* a group member's index; -1: None */
} prs_py_decision;

/* A new Decision object (new reference) or NULL with an exception; its
 * denied_by the index `denied_by` (None when < 0). */
PyObject *prs_py_decision_new_by(prs_py_state *st, const prs_decision *d, int denied_by);
#define prs_py_decision_new(st, d) prs_py_decision_new_by((st), (d), -1)

/* ---- the in-process limiter types (limiters.c) ------------------------- */

typedef struct prs_py_limiter {
    PyObject_HEAD
    prs_limiter *core;  /* built in tp_new: never NULL */
    int algo;           /* its row of the table (prs_algo_id) */
    prs_py_clock clock;
    PyObject *weakreflist;
    atomic_int reconfiguring; /* prs_py_op_lock: one reconfigure() at a time */
} prs_py_limiter;

/* reconfigure(**params) of `limiter`, or with `table`, of the key table made
 * from that limiter (its template), one call at a time (*lock): the config
 * in force, changed by the arguments parsed by the reconfigure() description
 * of `limiter`'s algorithm (what is not given keeps its value), is applied
 * with the GIL released; the core's refusal is worded by
 * prs_py_config_error(). None, or NULL with an exception. */
PyObject *prs_py_limiter_reconfigure(PyObject *limiter, prs_keyed *table, atomic_int *lock,
                                     prs_py_clock *clock, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames);
/* Whether `o` is an in-process limiter (of any algorithm). */
#define PRS_PY_IS_LIMITER(st, o) PyObject_TypeCheck((o), PRS_PY_TYPE(st, LimiterBase))

#endif /* PRS_PY_H */
