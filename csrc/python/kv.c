/*
 * kv.c - pyresilience._core.SharedKV: the key/value area of a shared-memory
 * region (core: csrc/core/shm_kv.c), what SharedIdempotencyStore is made of.
 * Declared in tools/decl_kv.py; the methods below parse their positional
 * bytes/int arguments, call the core once and word its status.
 */
#include "prs_py.h"
#include "shm_internal.h"

#include <errno.h>

typedef struct {
    PyObject_HEAD
    prs_shm_kv *kv;
    PyObject *name;
} kv_obj;

typedef struct kv_args { /* the declared defaults: prs_shm_kv_config_init's */
    int64_t max_keys, max_key_bytes, max_value_bytes;
} kv_args;

/* The arguments of the methods (declared in tools/decl_kv.py; bytes borrowed for the call). */
typedef struct kv_call {
    prs_py_bytes key, fp, token, value;
    int64_t lease_ns, ttl_ns, now_ns, seq, timeout_ns;
} kv_call;

#define KV_KEY(a) (a).key.p, (a).key.n
#define KV_TOKEN(a) (a).token.p, (a).token.n

/* Raises OSError(ENOSPC, msg) (msg stolen; NULL: its error stays). NULL. */
static PyObject *enospc(PyObject *msg) {
    return prs_py_raise(PyObject_CallFunction(PyExc_OSError, "iN", ENOSPC, msg));
}

static int kv_build(prs_py_state *st, kv_obj *o, const kv_args *a, PyObject *region) {
    prs_shm *r = prs_py_shm_region(st, region);
    const char *name = r ? PyUnicode_AsUTF8(o->name) : NULL;
    if (!name) {
        prs__shm_unref(r);
        return -1;
    }
    prs_shm_kv_config cfg = {(uint32_t)a->max_keys, (uint32_t)a->max_key_bytes,
                             (uint32_t)a->max_value_bytes}, found;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_shm_kv_open(r, name, &cfg, NULL, &o->kv, &found);
    Py_END_ALLOW_THREADS
    if (rc == PRS_ESTATE)
        PyErr_Format(PyExc_ValueError,
                     "shared area %R exists as max_keys=%u, max_key_bytes=%u, max_value_bytes=%u "
                     "(0s: another kind of object), asked for max_keys=%u, max_key_bytes=%u, "
                     "max_value_bytes=%u", o->name, found.max_keys, found.max_key_bytes,
                     found.max_value_bytes, cfg.max_keys, cfg.max_key_bytes, cfg.max_value_bytes);
    else if (rc == PRS_EFULL)
        enospc(PyUnicode_FromFormat(
            "shared memory region is full: %R needs %zu bytes (max_keys x (max_key_bytes + "
            "max_value_bytes + ~170)), %zu are free: create the region with a larger size=",
            o->name, prs_shm_kv_bytes(&cfg), prs_shm_free_bytes(r)));
    else if (rc == PRS_EPROTO)
        PyErr_Format(PyExc_ValueError, "shared area %R is corrupt", o->name);
    else if (rc)
        prs_py_error(st, rc, "SharedKV");
    prs__shm_unref(r);
    return rc ? -1 : 0;
}

/* One field of the area's configuration: 0 max_keys, 1 max_key_bytes, 2 max_value_bytes. */
static unsigned long config_of(kv_obj *o, int which) {
    prs_shm_kv_config c;
    prs_shm_kv_config_get(o->kv, &c);
    return which == 0 ? c.max_keys : which == 1 ? c.max_key_bytes : c.max_value_bytes;
}

/* A method's verdict: True (done), False (not the owner), or its error. */
static PyObject *kv_status(kv_obj *o, int rc) {
    if (rc == PRS_OK) Py_RETURN_TRUE;
    if (rc == PRS_ESTATE) Py_RETURN_FALSE;
    if (rc == PRS_EINVAL)
        return PyErr_Format(PyExc_ValueError,
                            "shared area %R: a key of 1..%d bytes, a token of 1..%d, a fingerprint "
                            "of at most %d and a positive lease", o->name,
                            (int)config_of(o, 1), PRS_SHM_KV_TOKEN_MAX, PRS_SHM_KV_FP_MAX);
    if (rc == PRS_EFULL) return enospc(PyUnicode_FromFormat("shared area %R is full of live leases", o->name));
    return prs_py_error(prs_py_state_of((PyObject *)o), rc, "SharedKV");
}

static void *bytes_sink(void *ctx, size_t len) {
    PyObject **out = ctx;
    *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    return *out ? PyBytes_AS_STRING(*out) : NULL;
}

/* begin (peek 0): (state, fp_match, value); peek: (state, fp_match, value,
 * expires_ns) of the record, or None. */
static PyObject *record_call(kv_obj *o, const kv_call *a, int peek) {
    PyObject *value = NULL;
    prs_shm_kv_result res;
    int rc = peek ? prs_shm_kv_peek(o->kv, KV_KEY(*a), a->fp.p, a->fp.n, bytes_sink, &value, &res)
                  : prs_shm_kv_begin(o->kv, KV_KEY(*a), a->fp.p, a->fp.n, KV_TOKEN(*a), a->lease_ns,
                                     a->now_ns, bytes_sink, &value, &res);
    if (peek && rc == PRS_ESTATE) Py_RETURN_NONE;
    if (rc) {
        Py_XDECREF(value);
        return kv_status(o, rc);
    }
    value = value ? value : Py_NewRef(Py_None);
    if (peek)
        return Py_BuildValue("(iNNL)", res.state, PyBool_FromLong(res.fp_match), value, (long long)res.expires_ns);
    return Py_BuildValue("(iNN)", res.state, PyBool_FromLong(res.fp_match), value);
}

static PyObject *complete_call(kv_obj *o, const kv_call *a) {
    int rc = prs_shm_kv_complete(o->kv, KV_KEY(*a), KV_TOKEN(*a), a->value.p, a->value.n, a->ttl_ns,
                                 a->now_ns);
    if (rc == PRS_ERANGE)
        return PyErr_Format(PyExc_ValueError,
                            "value of %zu bytes is larger than the shared area %R's "
                            "max_value_bytes=%lu", a->value.n, o->name, config_of(o, 2));
    return kv_status(o, rc);
}

/* One slice of a wait (at most 50 ms: the caller checks signals and loops). */
static PyObject *wait_slice(kv_obj *o, const kv_call *a) {
    int64_t t = a->timeout_ns < 50000000 ? a->timeout_ns : 50000000;
    Py_BEGIN_ALLOW_THREADS
    prs_shm_kv_wait(o->kv, (uint32_t)a->seq, t);
    Py_END_ALLOW_THREADS
    if (PyErr_CheckSignals() < 0) return NULL;
    Py_RETURN_NONE;
}

#include "gen/kv.h"
