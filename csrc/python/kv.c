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

typedef struct kv_args {
    int64_t max_keys, max_key_bytes, max_value_bytes;
} kv_args;

static void kv_args_init(kv_args *a) {
    prs_shm_kv_config c;
    prs_shm_kv_config_init(&c);
    a->max_keys = c.max_keys;
    a->max_key_bytes = c.max_key_bytes;
    a->max_value_bytes = c.max_value_bytes;
}

static int kv_args_check(const kv_args *a, prs_config_error *why) { return PRS_OK; }

static int kv_build(prs_py_state *st, kv_obj *o, const kv_args *a, PyObject *region);
static PyObject *kv_config_int(kv_obj *o, int which);

#include "gen/kv.h"

#define KV (((kv_obj *)self)->kv)

/* Raises OSError(ENOSPC, msg) (msg stolen; NULL: its error stays). NULL. */
static PyObject *enospc(PyObject *msg) {
    PyObject *exc = msg ? PyObject_CallFunction(PyExc_OSError, "iO", ENOSPC, msg) : NULL;
    if (exc) PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_XDECREF(exc);
    Py_XDECREF(msg);
    return NULL;
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

static unsigned long config_of(PyObject *self, int which) {
    prs_shm_kv_config c;
    prs_shm_kv_config_get(((kv_obj *)self)->kv, &c);
    return which == 0 ? c.max_keys : which == 1 ? c.max_key_bytes : c.max_value_bytes;
}

static PyObject *kv_config_int(kv_obj *o, int which) {
    return PyLong_FromUnsignedLong(config_of((PyObject *)o, which));
}

/* Positional arguments: 'b' bytes (buffer and length), 'i' int64. 0 or -1. */
typedef struct { const char *p; Py_ssize_t n; int64_t i; } arg;
static int parse(const char *fn, const char *fmt, PyObject *const *args, Py_ssize_t nargs,
                 arg *out) {
    Py_ssize_t want = (Py_ssize_t)strlen(fmt);
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", fn, want, nargs);
        return -1;
    }
    for (Py_ssize_t k = 0; k < want; k++) {
        if (fmt[k] == 'b') {
            if (!PyBytes_Check(args[k])) {
                PyErr_Format(PyExc_TypeError, "%s() argument %zd must be bytes, not %.100s", fn,
                             k + 1, Py_TYPE(args[k])->tp_name);
                return -1;
            }
            out[k].p = PyBytes_AS_STRING(args[k]);
            out[k].n = PyBytes_GET_SIZE(args[k]);
        } else {
            out[k].i = PyLong_AsLongLong(args[k]);
            if (out[k].i == -1 && PyErr_Occurred()) return -1;
        }
    }
    return 0;
}

static PyObject *status(PyObject *self, int rc) {
    if (rc == PRS_OK) Py_RETURN_TRUE;
    if (rc == PRS_ESTATE) Py_RETURN_FALSE;
    if (rc == PRS_EINVAL)
        return PyErr_Format(PyExc_ValueError,
                            "shared area %R: a key of 1..%d bytes, a token of 1..%d, a fingerprint "
                            "of at most %d and a positive lease", ((kv_obj *)self)->name,
                            (int)config_of(self, 1),
                            PRS_SHM_KV_TOKEN_MAX, PRS_SHM_KV_FP_MAX);
    if (rc == PRS_EFULL)
        return enospc(PyUnicode_FromFormat("shared area %R is full of live leases",
                                           ((kv_obj *)self)->name));
    return prs_py_error(prs_py_state_of(self), rc, "SharedKV");
}

static void *bytes_sink(void *ctx, size_t len) {
    PyObject **out = ctx;
    *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    return *out ? PyBytes_AS_STRING(*out) : NULL;
}

static PyObject *kv_begin(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    arg a[5];
    if (parse("begin", "bbbii", args, nargs, a) < 0) return NULL;
    PyObject *value = NULL;
    prs_shm_kv_result res;
    int rc = prs_shm_kv_begin(KV, a[0].p, (size_t)a[0].n, a[1].p, (size_t)a[1].n, a[2].p,
                              (size_t)a[2].n, a[3].i, a[4].i, bytes_sink, &value, &res);
    if (rc) {
        Py_XDECREF(value);
        return status(self, rc);
    }
    return Py_BuildValue("(iNN)", res.state, PyBool_FromLong(res.fp_match),
                         value ? value : Py_NewRef(Py_None));
}

static PyObject *kv_peek(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    arg a[2];
    if (parse("peek", "bb", args, nargs, a) < 0) return NULL;
    PyObject *value = NULL;
    prs_shm_kv_result res;
    int rc = prs_shm_kv_peek(KV, a[0].p, (size_t)a[0].n, a[1].p, (size_t)a[1].n, bytes_sink,
                             &value, &res);
    if (rc == PRS_ESTATE) Py_RETURN_NONE;
    if (rc) {
        Py_XDECREF(value);
        return status(self, rc);
    }
    return Py_BuildValue("(iNNL)", res.state, PyBool_FromLong(res.fp_match),
                         value ? value : Py_NewRef(Py_None), (long long)res.expires_ns);
}

static PyObject *kv_complete(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    arg a[5];
    if (parse("complete", "bbbii", args, nargs, a) < 0) return NULL;
    int rc = prs_shm_kv_complete(KV, a[0].p, (size_t)a[0].n, a[1].p, (size_t)a[1].n, a[2].p,
                                 (size_t)a[2].n, a[3].i, a[4].i);
    if (rc == PRS_ERANGE)
        return PyErr_Format(PyExc_ValueError,
                            "value of %zd bytes is larger than the shared area %R's "
                            "max_value_bytes=%lu", a[2].n, ((kv_obj *)self)->name,
                            config_of(self, 2));
    return status(self, rc);
}

static PyObject *kv_renew(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    arg a[4];
    if (parse("renew", "bbii", args, nargs, a) < 0) return NULL;
    return status(self, prs_shm_kv_renew(KV, a[0].p, (size_t)a[0].n, a[1].p, (size_t)a[1].n,
                                         a[2].i, a[3].i));
}

static PyObject *kv_release(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    arg a[2];
    if (parse("release", "bb", args, nargs, a) < 0) return NULL;
    return status(self, prs_shm_kv_release(KV, a[0].p, (size_t)a[0].n, a[1].p, (size_t)a[1].n));
}

static PyObject *kv_delete(PyObject *self, PyObject *arg_) {
    arg a[1];
    if (parse("delete", "b", &arg_, 1, a) < 0) return NULL;
    return status(self, prs_shm_kv_delete(KV, a[0].p, (size_t)a[0].n));
}

static PyObject *kv_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    arg a[2];
    if (parse("wait", "ii", args, nargs, a) < 0) return NULL;
    int64_t t = a[1].i < 50000000 ? a[1].i : 50000000; /* a slice: the caller checks signals */
    prs_shm_kv *kv = KV;
    Py_BEGIN_ALLOW_THREADS
    prs_shm_kv_wait(kv, (uint32_t)a[0].i, t);
    Py_END_ALLOW_THREADS
    if (PyErr_CheckSignals() < 0) return NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t kv_len(PyObject *self) { return (Py_ssize_t)prs_shm_kv_count(KV); }

