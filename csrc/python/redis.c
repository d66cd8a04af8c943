/*
 * redis.c - the Redis types of pyresilience._core: RedisBackend,
 * RedisRateLimiter and RedisLimiterGroup, over csrc/redis (hiredis).
 *
 * Every network call runs with the GIL released (the C backend never touches
 * Python objects; the key bytes it reads belong to argument objects the
 * caller keeps alive). Failures come back as status codes; the limiter's
 * on_backend_error policy turns them into BackendError ("raise"), an admitting
 * ("allow") or denying ("deny") Decision, or the answer of an in-process
 * fallback limiter ("local", a Python callable installed by the facade).
 *
 * Built without hiredis, this file registers nothing and the facade's
 * RedisBackend raises an error explaining how to install hiredis.
 */
#include "prs_py.h"

#ifdef PRS_HAVE_HIREDIS

#include <hiredis/hiredis.h>
#include <math.h>
#include <structmember.h>

#include "prs_redis.h"

/* Status of a denial under on_backend_error="deny": retry after this. */
#define DENY_RETRY_NS (100 * PRS_NS_PER_MS)

enum { POLICY_RAISE, POLICY_ALLOW, POLICY_DENY, POLICY_LOCAL };
static const char *const policy_names[] = {"raise", "allow", "deny", "local", NULL};

/* ---- RedisBackend ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    prs_redis_backend *b;  /* NULL until __init__ succeeded */
    PyObject *url;         /* str */
    double connect_timeout, timeout;
    int max_connections;
    PyObject *weakreflist;
} backend_obj;

static PyObject *backend_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    backend_obj *self = (backend_obj *)type->tp_alloc(type, 0);
    return (PyObject *)self;
}

static int backend_ready(backend_obj *self) {
    if (self->b) return 0;
    PyErr_SetString(PyExc_RuntimeError, "RedisBackend is not initialised (call __init__)");
    return -1;
}

/* The backend's failure as BackendError (ECLOSED included). */
static PyObject *backend_error(prs_py_state *st, int rc) {
    if (rc == PRS_ENOMEM) return PyErr_NoMemory();
    if (rc == PRS_EINVAL) return prs_py_error(st, rc, prs_redis_last_error());
    const char *msg = prs_redis_last_error();
    return prs_py_error(st, PRS_EBACKEND, msg && *msg ? msg : prs_strerror(rc));
}

static int backend_init(PyObject *op, PyObject *args, PyObject *kwds) {
    backend_obj *self = (backend_obj *)op;
    static char *kwlist[] = {"url", "connect_timeout", "timeout", "max_connections", NULL};
    PyObject *url = NULL, *ct_o = NULL, *t_o = NULL, *mc_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$OOO:RedisBackend", kwlist, &url, &ct_o, &t_o, &mc_o))
        return -1;
    if (self->b) {
        PyErr_SetString(PyExc_RuntimeError, "RedisBackend is already initialised");
        return -1;
    }
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    double ct = 0.25, t = 0.25;
    int64_t mc = 8;
    if (url && !PyUnicode_Check(url)) {
        PyErr_Format(PyExc_TypeError, "url must be a str, not %.200s: %R", Py_TYPE(url)->tp_name, url);
        return -1;
    }
    if (ct_o && prs_py_parse_real(ct_o, "connect_timeout", 0, &ct) < 0) return -1;
    if (t_o && prs_py_parse_real(t_o, "timeout", 0, &t) < 0) return -1;
    if (mc_o && prs_py_parse_count(mc_o, "max_connections", 1, 1024, &mc) < 0) return -1;
    if (ct > 3600 || t > 3600) {
        PyErr_Format(PyExc_ValueError, "%s must be <= 3600 seconds, got %R", ct > 3600 ? "connect_timeout" : "timeout",
                     ct > 3600 ? ct_o : t_o);
        return -1;
    }
    const char *u = "redis://127.0.0.1:6379/0";
    if (url) {
        Py_ssize_t len;
        u = PyUnicode_AsUTF8AndSize(url, &len);
        if (!u) return -1;
        if ((size_t)len != strlen(u)) {
            PyErr_SetString(PyExc_ValueError, "url must not contain NUL characters");
            return -1;
        }
    }
    cfg.url = u;
    cfg.connect_timeout_ns = prs_seconds_to_ns(ct);
    cfg.timeout_ns = prs_seconds_to_ns(t);
    if (cfg.connect_timeout_ns < 1000 || cfg.timeout_ns < 1000) {
        PyErr_SetString(PyExc_ValueError, "timeouts must be at least 1 microsecond");
        return -1;
    }
    cfg.max_connections = (int)mc;
    prs_redis_backend *b;
    int rc = prs_redis_backend_new(&cfg, &b);
    if (rc == PRS_EINVAL) {
        PyErr_Format(PyExc_ValueError, "%s", prs_redis_last_error());
        return -1;
    }
    if (rc) { prs_py_error(prs_py_state_of(op), rc, NULL); return -1; }
    PyObject *us = url ? Py_NewRef(url) : PyUnicode_FromString(u);
    if (!us) { prs_redis_backend_free(b); return -1; }
    self->b = b;
    self->url = us;
    self->connect_timeout = ct;
    self->timeout = t;
    self->max_connections = (int)mc;
    return 0;
}

static void backend_dealloc(PyObject *op) {
    backend_obj *self = (backend_obj *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    if (self->b) {
        prs_redis_backend *b = self->b;
        self->b = NULL;
        Py_BEGIN_ALLOW_THREADS
        prs_redis_backend_free(b);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->url);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int backend_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static PyObject *backend_close(PyObject *op, PyObject *unused) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    prs_redis_backend_close(self->b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *backend_ping(PyObject *op, PyObject *unused) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_ping(self->b);
    Py_END_ALLOW_THREADS
    if (rc) return backend_error(prs_py_state_of(op), rc);
    Py_RETURN_TRUE;
}

/* A hiredis reply as a Python object: bytes, int, None, list, or str for a
 * status; an error reply raises BackendError. */
static PyObject *reply_to_py(prs_py_state *st, const redisReply *r) {
    switch (r->type) {
    case REDIS_REPLY_STRING: return PyBytes_FromStringAndSize(r->str, (Py_ssize_t)r->len);
    case REDIS_REPLY_STATUS: return PyUnicode_FromStringAndSize(r->str, (Py_ssize_t)r->len);
    case REDIS_REPLY_INTEGER: return PyLong_FromLongLong(r->integer);
    case REDIS_REPLY_NIL: Py_RETURN_NONE;
    case REDIS_REPLY_ERROR: {
        PyObject *msg = PyUnicode_FromFormat("redis: %.400s", r->str ? r->str : "error");
        if (!msg) return NULL;
        PyErr_SetObject(PRS_PY_EXC(st, BackendError), msg);
        Py_DECREF(msg);
        return NULL;
    }
    case REDIS_REPLY_ARRAY: {
        PyObject *list = PyList_New((Py_ssize_t)r->elements);
        if (!list) return NULL;
        for (size_t i = 0; i < r->elements; i++) {
            PyObject *item = reply_to_py(st, r->element[i]);
            if (!item) { Py_DECREF(list); return NULL; }
            PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        }
        return list;
    }
    default:
        if (r->str) return PyBytes_FromStringAndSize(r->str, (Py_ssize_t)r->len);
        Py_RETURN_NONE;
    }
}

/* Bytes of a str (UTF-8) or bytes argument: borrowed from `o`. */
static int bytes_of(PyObject *o, const char *param, const char **p, Py_ssize_t *n) {
    if (PyBytes_Check(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        *p = PyUnicode_AsUTF8AndSize(o, n);
        return *p ? 0 : -1;
    }
    PyErr_Format(PyExc_TypeError, "%s must be str or bytes, not %.200s: %R", param, Py_TYPE(o)->tp_name, o);
    return -1;
}

static PyObject *backend_command(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    if (nargs < 1 || nargs > 64) {
        PyErr_SetString(PyExc_TypeError, "_command() takes 1 to 64 str/bytes/int arguments");
        return NULL;
    }
    const char *argv[64];
    size_t lens[64];
    PyObject *tmp[64];
    Py_ssize_t ntmp = 0;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *a = args[i];
        if (PyLong_Check(a) && !PyBool_Check(a)) {
            a = tmp[ntmp++] = PyObject_Str(a);
            if (!a) goto done;
        }
        Py_ssize_t n;
        if (bytes_of(a, "argument", &argv[i], &n) < 0) goto done;
        lens[i] = (size_t)n;
    }
    {
        prs_py_state *st = prs_py_state_of(op);
        void *reply = NULL;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = prs_redis_command_reply(self->b, (int)nargs, argv, lens, &reply);
        Py_END_ALLOW_THREADS
        if (rc) { backend_error(st, rc); goto done; }
        result = reply_to_py(st, reply);
        freeReplyObject(reply);
    }
done:
    for (Py_ssize_t i = 0; i < ntmp; i++) Py_XDECREF(tmp[i]);
    return result;
}

static PyObject *backend_get_url(PyObject *op, void *c) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    return Py_NewRef(self->url);
}
static PyObject *backend_get_timeout(PyObject *op, void *c) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    return PyFloat_FromDouble(self->timeout);
}
static PyObject *backend_get_connect_timeout(PyObject *op, void *c) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    return PyFloat_FromDouble(self->connect_timeout);
}
static PyObject *backend_get_max_connections(PyObject *op, void *c) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    return PyLong_FromLong(self->max_connections);
}
static PyObject *backend_get_closed(PyObject *op, void *c) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    return PyBool_FromLong(prs_redis_backend_closed(self->b));
}
static PyObject *backend_get_connections(PyObject *op, void *c) {
    backend_obj *self = (backend_obj *)op;
    if (backend_ready(self) < 0) return NULL;
    return PyLong_FromLong(prs_redis_backend_connections(self->b));
}

static PyMethodDef backend_methods[] = {
    {"close", backend_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose every connection; later calls raise BackendError. Idempotent."},
    {"ping", backend_ping, METH_NOARGS,
     "ping($self, /)\n--\n\nPING the server: True, or BackendError when it cannot be reached\n"
     "within the timeout."},
    {"_command", (PyCFunction)(void (*)(void))backend_command, METH_FASTCALL,
     "_command($self, /, *args)\n--\n\nRun one raw Redis command (arguments str, bytes or int) and\n"
     "return its reply (bytes, int, None, str status, list). For tests and tools."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef backend_getset[] = {
    {"url", backend_get_url, NULL, "The server URL.", NULL},
    {"timeout", backend_get_timeout, NULL, "Seconds a call may take in total.", NULL},
    {"connect_timeout", backend_get_connect_timeout, NULL, "Seconds to establish a connection.", NULL},
    {"max_connections", backend_get_max_connections, NULL, "Pool size.", NULL},
    {"closed", backend_get_closed, NULL, "True after close().", NULL},
    {"connections", backend_get_connections, NULL, "Connections open in this process now.", NULL},
    {NULL},
};

static PyMemberDef backend_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(backend_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot backend_slots[] = {
    {Py_tp_doc, "RedisBackend(url='redis://127.0.0.1:6379/0', *, connect_timeout=0.25, timeout=0.25, "
                "max_connections=8)\n--\n\n"
                "A thread-safe pool of connections to one Redis server.\n"
                "url: redis://[user:password@]host:port/db or unix:///path/to/socket?db=N.\n"
                "timeout bounds a whole call (including any connection it must open);\n"
                "connect_timeout bounds opening one. Connections open lazily, reopen after\n"
                "errors, and a forked child opens its own. After repeated failures the\n"
                "backend fails fast for 200 ms at a time instead of waiting out a timeout\n"
                "on every call, and recovers by itself once Redis answers again."},
    {Py_tp_new, backend_new},
    {Py_tp_init, backend_init},
    {Py_tp_dealloc, backend_dealloc},
    {Py_tp_traverse, backend_traverse},
    {Py_tp_methods, backend_methods},
    {Py_tp_getset, backend_getset},
    {Py_tp_members, backend_members},
    {0, NULL},
};

/* ---- RedisRateLimiter -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    prs_redis_limiter *l;   /* NULL until __init__ succeeded */
    PyObject *backend;      /* strong: the RedisBackend (keeps the C backend alive) */
    PyObject *fallback;     /* None or callable(key, n, consume) -> Decision */
    PyObject *lease;        /* None or the LeaseConfig given */
    PyObject *algorithm;    /* str */
    PyObject *key_prefix;   /* str */
    PyObject *limit, *window, *rate, *burst, *local_share; /* as given (None when not) */
    int policy;
    int has_lease;
    int64_t cap;            /* limit or burst, for policy decisions */
    PyObject *weakreflist;
} limiter_obj;

static PyObject *rl_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    limiter_obj *self = (limiter_obj *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->fallback = Py_NewRef(Py_None);
    self->lease = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int rl_ready(limiter_obj *self) {
    if (self->l) return 0;
    PyErr_Format(PyExc_RuntimeError, "%.200s is not initialised (call __init__)", Py_TYPE(self)->tp_name);
    return -1;
}

static int is_none(PyObject *o) { return !o || o == Py_None; }

static int rl_init(PyObject *op, PyObject *args, PyObject *kwds) {
    limiter_obj *self = (limiter_obj *)op;
    prs_py_state *st = prs_py_state_of(op);
    static char *kwlist[] = {"backend", "algorithm", "limit", "window", "rate", "burst", "key_prefix",
                             "on_backend_error", "local_share", "lease", NULL};
    PyObject *backend, *algo_o = NULL, *limit_o = NULL, *window_o = NULL, *rate_o = NULL, *burst_o = NULL,
             *prefix_o = NULL, *policy_o = NULL, *share_o = NULL, *lease_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$OOOOOOOO:RedisRateLimiter", kwlist, &backend, &algo_o,
                                     &limit_o, &window_o, &rate_o, &burst_o, &prefix_o, &policy_o, &share_o,
                                     &lease_o))
        return -1;
    if (self->l) {
        PyErr_SetString(PyExc_RuntimeError, "RedisRateLimiter is already initialised");
        return -1;
    }
    if (!PyObject_TypeCheck(backend, PRS_PY_TYPE(st, RedisBackend)) || !((backend_obj *)backend)->b) {
        PyErr_Format(PyExc_TypeError, "backend must be a RedisBackend, not %.200s: %R", Py_TYPE(backend)->tp_name,
                     backend);
        return -1;
    }
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    /* algorithm */
    if (algo_o && !PyUnicode_Check(algo_o)) {
        PyErr_Format(PyExc_TypeError, "algorithm must be a str, not %.200s: %R", Py_TYPE(algo_o)->tp_name, algo_o);
        return -1;
    }
    const char *algo = algo_o ? PyUnicode_AsUTF8(algo_o) : "gcra";
    if (!algo) return -1;
    cfg.algorithm = prs_redis_algorithm_from_name(algo);
    if (cfg.algorithm < 0) {
        PyErr_Format(PyExc_ValueError,
                     "algorithm must be one of 'gcra', 'token_bucket', 'fixed_window', "
                     "'sliding_window_counter', 'sliding_window_log'; got %R", algo_o);
        return -1;
    }
    int rate_algo = cfg.algorithm == PRS_REDIS_GCRA || cfg.algorithm == PRS_REDIS_TOKEN_BUCKET;
    /* numbers: rate algorithms take rate + burst (or limit + window: rate =
     * limit/window, burst = limit); window algorithms take limit + window. */
    int have_rb = !is_none(rate_o) || !is_none(burst_o), have_lw = !is_none(limit_o) || !is_none(window_o);
    if (rate_algo && have_rb && have_lw) {
        PyErr_Format(PyExc_ValueError, "%s takes rate and burst, or limit and window, not both", algo);
        return -1;
    }
    if (!rate_algo && have_rb) {
        PyErr_Format(PyExc_ValueError, "%s takes limit and window; rate and burst are for gcra and token_bucket",
                     algo);
        return -1;
    }
    if (rate_algo && have_rb) {
        if (is_none(rate_o) || is_none(burst_o)) {
            PyErr_Format(PyExc_ValueError, "%s needs both rate and burst (missing %s)", algo,
                         is_none(rate_o) ? "rate" : "burst");
            return -1;
        }
        if (prs_py_parse_real(rate_o, "rate", 0, &cfg.rate) < 0) return -1;
        if (prs_py_parse_count(burst_o, "burst", 1, INT64_C(1) << 50, &cfg.burst) < 0) return -1;
    } else {
        if (is_none(limit_o) || is_none(window_o)) {
            PyErr_Format(PyExc_ValueError, rate_algo ? "%s needs rate and burst (or limit and window)"
                                                     : "%s needs both limit and window",
                         algo);
            return -1;
        }
        double window;
        int64_t limit;
        if (prs_py_parse_count(limit_o, "limit", 1, INT64_C(1) << 50, &limit) < 0) return -1;
        if (prs_py_parse_real(window_o, "window", 0, &window) < 0) return -1;
        if (window < 1e-6 || window > 10 * 366 * 86400.0) {
            PyErr_Format(PyExc_ValueError, "window must be between 1e-6 and 10 years of seconds, got %R", window_o);
            return -1;
        }
        if (rate_algo) {
            cfg.rate = (double)limit / window;
            cfg.burst = limit;
        } else {
            cfg.limit = limit;
            cfg.window_ns = prs_seconds_to_ns(window);
        }
    }
    if (rate_algo && (cfg.rate < 1e-9 || cfg.rate > 1e12)) {
        PyErr_Format(PyExc_ValueError, "rate must be between 1e-9 and 1e12 per second, got %R",
                     is_none(rate_o) ? limit_o : rate_o);
        return -1;
    }
    if (cfg.algorithm == PRS_REDIS_SLIDING_WINDOW_LOG && cfg.limit > 1000000) {
        PyErr_Format(PyExc_ValueError, "sliding_window_log keeps one entry per permit: limit must be <= 1000000, got %R",
                     limit_o);
        return -1;
    }
    /* key prefix */
    const char *prefix = "prs:";
    if (prefix_o) {
        if (!PyUnicode_Check(prefix_o)) {
            PyErr_Format(PyExc_TypeError, "key_prefix must be a str, not %.200s: %R", Py_TYPE(prefix_o)->tp_name,
                         prefix_o);
            return -1;
        }
        Py_ssize_t plen;
        prefix = PyUnicode_AsUTF8AndSize(prefix_o, &plen);
        if (!prefix) return -1;
        if ((size_t)plen != strlen(prefix) || strchr(prefix, '{') || strchr(prefix, '}') || plen > 1024) {
            PyErr_Format(PyExc_ValueError,
                         "key_prefix must not contain '{', '}' or NUL and be at most 1024 bytes (the limiter "
                         "owns the hash tag), got %R", prefix_o);
            return -1;
        }
    }
    cfg.key_prefix = prefix;
    /* policy */
    int policy = POLICY_RAISE;
    if (policy_o) {
        policy = -1;
        if (PyUnicode_Check(policy_o))
            for (int i = 0; policy_names[i]; i++)
                if (PyUnicode_CompareWithASCIIString(policy_o, policy_names[i]) == 0) policy = i;
        if (policy < 0) {
            PyErr_Format(PyExc_ValueError, "on_backend_error must be 'raise', 'allow', 'deny' or 'local', got %R",
                         policy_o);
            return -1;
        }
    }
    if (!is_none(share_o)) {
        double share;
        if (prs_py_parse_real(share_o, "local_share", 0, &share) < 0) return -1;
        if (share > 1.0) {
            PyErr_Format(PyExc_ValueError, "local_share must be in (0, 1], got %R", share_o);
            return -1;
        }
        if (policy != POLICY_LOCAL) {
            PyErr_Format(PyExc_ValueError, "local_share=%R is only used with on_backend_error='local'", share_o);
            return -1;
        }
    }
    /* lease */
    if (!is_none(lease_o)) {
        if (!rate_algo) {
            PyErr_Format(PyExc_ValueError, "lease= works with gcra and token_bucket, not %s", algo);
            return -1;
        }
        PyObject *batch_o = PyObject_GetAttrString(lease_o, "batch");
        PyObject *hold_o = batch_o ? PyObject_GetAttrString(lease_o, "max_hold") : NULL;
        int bad = !batch_o || !hold_o;
        double hold = 0;
        if (!bad) bad = prs_py_parse_count(batch_o, "lease.batch", 1, INT64_MAX, &cfg.lease_batch) < 0 ||
                        prs_py_parse_real(hold_o, "lease.max_hold", 0, &hold) < 0;
        Py_XDECREF(batch_o);
        Py_XDECREF(hold_o);
        if (bad) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "lease must be a LeaseConfig, not %.200s: %R",
                             Py_TYPE(lease_o)->tp_name, lease_o);
            }
            return -1;
        }
        if (cfg.lease_batch > cfg.burst) {
            PyErr_Format(PyExc_ValueError, "lease batch (%lld) must not exceed burst (%lld)",
                         (long long)cfg.lease_batch, (long long)cfg.burst);
            return -1;
        }
        if (hold > 3600) {
            PyErr_Format(PyExc_ValueError, "lease max_hold must be <= 3600 seconds, got %R", hold_o);
            return -1;
        }
        cfg.lease_max_hold_ns = prs_seconds_to_ns(hold);
        if (cfg.lease_max_hold_ns < 1) cfg.lease_max_hold_ns = 1;
    }
    prs_redis_limiter *l;
    int rc = prs_redis_limiter_new(((backend_obj *)backend)->b, &cfg, &l);
    if (rc == PRS_EINVAL || rc == PRS_ERANGE) {
        PyErr_Format(PyExc_ValueError, "%s", prs_redis_last_error());
        return -1;
    }
    if (rc) { prs_py_error(st, rc, NULL); return -1; }
    self->l = l;
    self->backend = Py_NewRef(backend);
    self->policy = policy;
    self->has_lease = cfg.lease_batch > 0;
    self->cap = rate_algo ? cfg.burst : cfg.limit;
    Py_XSETREF(self->lease, Py_NewRef(is_none(lease_o) ? Py_None : lease_o));
    self->algorithm = PyUnicode_FromString(algo);
    self->key_prefix = PyUnicode_FromString(prefix);
    self->limit = Py_NewRef(limit_o ? limit_o : Py_None);
    self->window = Py_NewRef(window_o ? window_o : Py_None);
    self->rate = Py_NewRef(rate_o ? rate_o : Py_None);
    self->burst = Py_NewRef(burst_o ? burst_o : Py_None);
    self->local_share = Py_NewRef(share_o ? share_o : Py_None);
    if (!self->algorithm || !self->key_prefix) return -1;
    return 0;
}

static int rl_traverse(PyObject *op, visitproc visit, void *arg) {
    limiter_obj *self = (limiter_obj *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->backend);
    Py_VISIT(self->fallback);
    Py_VISIT(self->lease);
    Py_VISIT(self->limit);
    Py_VISIT(self->window);
    Py_VISIT(self->rate);
    Py_VISIT(self->burst);
    Py_VISIT(self->local_share);
    return 0;
}

static int rl_clear(PyObject *op) {
    limiter_obj *self = (limiter_obj *)op;
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->lease);
    Py_CLEAR(self->limit);
    Py_CLEAR(self->window);
    Py_CLEAR(self->rate);
    Py_CLEAR(self->burst);
    Py_CLEAR(self->local_share);
    return 0;
}

static void rl_dealloc(PyObject *op) {
    limiter_obj *self = (limiter_obj *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    rl_clear(op);
    prs_redis_limiter_free(self->l); /* no I/O: held lease permits lapse */
    self->l = NULL;
    Py_CLEAR(self->backend);         /* after the limiter: it uses the backend */
    Py_CLEAR(self->algorithm);
    Py_CLEAR(self->key_prefix);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* The 'local' fallback's decision for key: 0 with *d, -1 with an exception.
 * 1 when no fallback is installed. */
static int call_fallback(limiter_obj *self, prs_py_state *st, PyObject *key, int64_t n, int consume,
                         prs_decision *d) {
    if (self->fallback == Py_None) return 1;
    PyObject *nn = PyLong_FromLongLong(n);
    if (!nn) return -1;
    PyObject *argv[3] = {key, nn, consume ? Py_True : Py_False};
    PyObject *res = PyObject_Vectorcall(self->fallback, argv, 3, NULL);
    Py_DECREF(nn);
    if (!res) return -1;
    if (!PyObject_TypeCheck(res, PRS_PY_TYPE(st, Decision))) {
        PyErr_Format(PyExc_TypeError, "the local fallback returned %.200s, not a Decision", Py_TYPE(res)->tp_name);
        Py_DECREF(res);
        return -1;
    }
    *d = ((prs_py_decision *)res)->d;
    Py_DECREF(res);
    return 0;
}

/* The decision of the "allow" and "deny" policies for n (no I/O, nothing
 * consumed): "allow" admits any n the limit could ever admit, "deny" denies
 * with a retry after DENY_RETRY_NS; an n above the limit is never admitted. */
static void static_policy_decision(const limiter_obj *self, int64_t n, prs_decision *d) {
    d->allowed = self->policy == POLICY_ALLOW && n <= self->cap;
    d->limit = self->cap;
    d->remaining = 0;
    d->retry_after_ns = d->allowed ? 0 : (n > self->cap ? PRS_NEVER : DENY_RETRY_NS);
    d->reset_after_ns = 0;
}

/* Failures that no policy turns into a decision: out of memory, a bad
 * argument, a backend closed on purpose. -1 with the exception set, or 0. */
static int policy_exempt(prs_py_state *st, int rc) {
    if (rc == PRS_ENOMEM) { PyErr_NoMemory(); return -1; }
    if (rc == PRS_EINVAL) { prs_py_error(st, rc, prs_redis_last_error()); return -1; }
    if (rc == PRS_EBACKENDCLOSED) { backend_error(st, rc); return -1; }
    return 0;
}

/* What on_backend_error makes of a failed call: 0 with *d, or -1 with an
 * exception. consume: 1 check, 0 peek. */
static int apply_policy(limiter_obj *self, prs_py_state *st, int rc, PyObject *key, int64_t n, int consume,
                        prs_decision *d) {
    if (policy_exempt(st, rc) < 0) return -1;
    switch (self->policy) {
    case POLICY_ALLOW:
    case POLICY_DENY:
        static_policy_decision(self, n, d);
        return 0;
    case POLICY_LOCAL: {
        int r = call_fallback(self, st, key, n, consume, d);
        if (r <= 0) return r;
        backend_error(st, rc); /* no fallback installed */
        return -1;
    }
    default:
        backend_error(st, rc);
        return -1;
    }
}

static int key_bytes(PyObject *key, const char **p, Py_ssize_t *n) { return bytes_of(key, "key", p, n); }

/* One decision for key: 0 with *d or -1. now_us >= 0: the test time override. */
static int rl_decide(limiter_obj *self, PyObject *key, int64_t n, int consume, int64_t now_us, prs_decision *d) {
    if (rl_ready(self) < 0) return -1;
    const char *k;
    Py_ssize_t klen;
    if (key_bytes(key, &k, &klen) < 0) return -1;
    int rc;
    if (consume && self->has_lease && now_us < 0) {
        rc = prs_redis_limiter_check_local(self->l, k, (size_t)klen, n, d);
        if (rc == PRS_OK) return 0;
    }
    prs_redis_limiter *l = self->l;
    Py_BEGIN_ALLOW_THREADS
    if (!consume) rc = prs_redis_limiter_peek(l, k, (size_t)klen, n, d);
    else if (now_us >= 0) rc = prs_redis_limiter_check_at(l, k, (size_t)klen, n, now_us, d);
    else rc = prs_redis_limiter_check(l, k, (size_t)klen, n, d);
    Py_END_ALLOW_THREADS
    if (rc == PRS_OK) return 0;
    return apply_policy(self, prs_py_state_of((PyObject *)self), rc, key, n, consume, d);
}

static const char *const key_n_names[] = {"key", "n", NULL};

static int parse_key_n(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                       PyObject **key, int64_t *n) {
    if (nargs == 1 && !kwnames) { *key = args[0]; *n = 1; return 0; }
    PyObject *v[2];
    if (prs_py_unpack(fname, args, nargs, kwnames, key_n_names, 2, v) < 0) return -1;
    if (!v[0]) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'key'", fname);
        return -1;
    }
    *key = v[0];
    *n = 1;
    return v[1] ? prs_py_parse_n(v[1], "n", n) : 0;
}

static PyObject *rl_allow(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *key;
    int64_t n;
    prs_decision d;
    if (parse_key_n("allow", args, nargs, kwnames, &key, &n) < 0) return NULL;
    if (rl_decide((limiter_obj *)op, key, n, 1, -1, &d) < 0) return NULL;
    return PyBool_FromLong(d.allowed);
}

static PyObject *rl_check(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *key;
    int64_t n;
    prs_decision d;
    if (parse_key_n("check", args, nargs, kwnames, &key, &n) < 0) return NULL;
    if (rl_decide((limiter_obj *)op, key, n, 1, -1, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(op), &d);
}

static PyObject *rl_peek(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *key;
    int64_t n;
    prs_decision d;
    if (parse_key_n("peek", args, nargs, kwnames, &key, &n) < 0) return NULL;
    if (rl_decide((limiter_obj *)op, key, n, 0, -1, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(op), &d);
}

static const char *const at_names[] = {"key", "n", "now", NULL};

static PyObject *rl_check_at(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[3];
    if (prs_py_unpack("_check_at", args, nargs, kwnames, at_names, 3, v) < 0) return NULL;
    if (!v[0] || !v[1] || !v[2]) {
        PyErr_SetString(PyExc_TypeError, "_check_at() needs key, n and now");
        return NULL;
    }
    int64_t n;
    double now;
    if (prs_py_parse_n(v[1], "n", &n) < 0 || prs_py_parse_real(v[2], "now", PRS_PY_ZERO_OK, &now) < 0) return NULL;
    if (now > 1e12) {
        PyErr_Format(PyExc_ValueError, "now must be <= 1e12 seconds, got %R", v[2]);
        return NULL;
    }
    prs_decision d;
    if (rl_decide((limiter_obj *)op, v[0], n, 1, (int64_t)llround(now * 1e6), &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(op), &d);
}

static const char *const acquire_names[] = {"key", "n", "timeout", NULL};

static PyObject *rl_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    limiter_obj *self = (limiter_obj *)op;
    PyObject *v[3];
    if (prs_py_unpack("acquire", args, nargs, kwnames, acquire_names, 3, v) < 0) return NULL;
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "acquire() missing required argument 'key'");
        return NULL;
    }
    int64_t n = 1, timeout_ns;
    if (v[1] && prs_py_parse_n(v[1], "n", &n) < 0) return NULL;
    if (prs_py_parse_timeout(v[2], "timeout", &timeout_ns) < 0) return NULL;
    if (rl_ready(self) < 0) return NULL;
    prs_py_state *st = prs_py_state_of(op);
    prs_py_clock clock = {PRS_CLOCK_MONOTONIC, NULL, NULL};
    int64_t start = prs_monotonic_ns();
    int64_t deadline = timeout_ns == PRS_NEVER ? INT64_MAX : prs__sat_add(start, timeout_ns);
    for (;;) {
        prs_decision d;
        if (rl_decide(self, v[0], n, 1, -1, &d) < 0) return NULL;
        if (d.allowed) Py_RETURN_NONE;
        if (d.retry_after_ns == PRS_NEVER) {
            PyErr_Format(PyExc_ValueError, "n=%lld can never be admitted by this limiter (limit %lld)",
                         (long long)n, (long long)d.limit);
            return NULL;
        }
        int64_t now = prs_monotonic_ns();
        int64_t wake = prs__sat_add(now, d.retry_after_ns);
        if (wake > deadline) {
            prs_py_raise_rate_limited(st, &d, "rate limit exceeded: not admissible within timeout");
            return NULL;
        }
        if (prs_py_clock_wait(&clock, now, wake, 0) < 0) return NULL;
    }
}

static PyObject *rl_reset(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    limiter_obj *self = (limiter_obj *)op;
    static const char *const names[] = {"key", NULL};
    PyObject *v[1];
    if (prs_py_unpack("reset", args, nargs, kwnames, names, 1, v) < 0) return NULL;
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "reset() missing required argument 'key'");
        return NULL;
    }
    if (rl_ready(self) < 0) return NULL;
    const char *k;
    Py_ssize_t klen;
    if (key_bytes(v[0], &k, &klen) < 0) return NULL;
    int rc;
    prs_redis_limiter *l = self->l;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_limiter_reset(l, k, (size_t)klen);
    Py_END_ALLOW_THREADS
    if (rc) return backend_error(prs_py_state_of(op), rc);
    Py_RETURN_NONE;
}

static PyObject *rl_check_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    limiter_obj *self = (limiter_obj *)op;
    static const char *const names[] = {"requests", NULL};
    PyObject *v[1];
    if (prs_py_unpack("check_many", args, nargs, kwnames, names, 1, v) < 0) return NULL;
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "check_many() missing required argument 'requests'");
        return NULL;
    }
    if (rl_ready(self) < 0) return NULL;
    prs_py_state *st = prs_py_state_of(op);
    PyObject *seq = PySequence_Fast(v[0], "requests must be an iterable of (key, n) pairs");
    if (!seq) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL, *keys = NULL;
    prs_redis_request *reqs = NULL;
    prs_decision *ds = NULL;
    int *status = NULL;
    if (count == 0) { result = PyList_New(0); goto done; }
    reqs = PyMem_Calloc((size_t)count, sizeof *reqs);
    ds = PyMem_Calloc((size_t)count, sizeof *ds);
    status = PyMem_Calloc((size_t)count, sizeof *status);
    keys = PyList_New(count); /* keeps each key object alive while the GIL is released */
    if (!reqs || !ds || !status) { PyErr_NoMemory(); goto done; }
    if (!keys) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *key = item;
        int64_t n = 1;
        if (PyTuple_Check(item) || PyList_Check(item)) {
            if (PySequence_Size(item) != 2) {
                PyErr_Format(PyExc_TypeError, "requests[%zd] must be a (key, n) pair, got %R", i, item);
                goto done;
            }
            key = PySequence_Fast_GET_ITEM(item, 0);
            if (prs_py_parse_n(PySequence_Fast_GET_ITEM(item, 1), "n", &n) < 0) goto done;
        }
        const char *k;
        Py_ssize_t klen;
        if (key_bytes(key, &k, &klen) < 0) goto done;
        PyList_SET_ITEM(keys, i, Py_NewRef(key));
        reqs[i].key = k;
        reqs[i].keylen = (size_t)klen;
        reqs[i].n = n;
    }
    int rc;
    prs_redis_limiter *l = self->l;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_limiter_check_many(l, (size_t)count, reqs, ds, status);
    Py_END_ALLOW_THREADS
    (void)rc;
    result = PyList_New(count);
    if (!result) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (status[i] != PRS_OK &&
            apply_policy(self, st, status[i], PyList_GET_ITEM(keys, i), reqs[i].n, 1, &ds[i]) < 0) {
            Py_CLEAR(result);
            goto done;
        }
        PyObject *dec = prs_py_decision_new(st, &ds[i]);
        if (!dec) { Py_CLEAR(result); goto done; }
        PyList_SET_ITEM(result, i, dec);
    }
done:
    PyMem_Free(reqs);
    PyMem_Free(ds);
    PyMem_Free(status);
    Py_XDECREF(keys);
    Py_DECREF(seq);
    return result;
}

static PyObject *rl_close(PyObject *op, PyObject *unused) {
    limiter_obj *self = (limiter_obj *)op;
    if (rl_ready(self) < 0) return NULL;
    int rc;
    prs_redis_limiter *l = self->l;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_limiter_release_leases(l);
    Py_END_ALLOW_THREADS
    if (rc && self->policy == POLICY_RAISE) return backend_error(prs_py_state_of(op), rc);
    Py_RETURN_NONE;
}

static PyObject *rl_set_fallback(PyObject *op, PyObject *fn) {
    limiter_obj *self = (limiter_obj *)op;
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "the fallback must be callable or None, not %.200s", Py_TYPE(fn)->tp_name);
        return NULL;
    }
    Py_XSETREF(self->fallback, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *rl_redis_key(PyObject *op, PyObject *key) {
    limiter_obj *self = (limiter_obj *)op;
    if (rl_ready(self) < 0) return NULL;
    const char *k;
    Py_ssize_t klen;
    if (key_bytes(key, &k, &klen) < 0) return NULL;
    size_t need = prs_redis_limiter_redis_key(self->l, k, (size_t)klen, NULL, 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need);
    if (!out) return NULL;
    prs_redis_limiter_redis_key(self->l, k, (size_t)klen, PyBytes_AS_STRING(out), need);
    return out;
}

#define RL_GETTER(field)                                                                  \
    static PyObject *rl_get_##field(PyObject *op, void *c) {                              \
        limiter_obj *self = (limiter_obj *)op;                                            \
        if (rl_ready(self) < 0) return NULL;                                              \
        return Py_NewRef(self->field);                                                    \
    }
RL_GETTER(backend)
RL_GETTER(algorithm)
RL_GETTER(key_prefix)
RL_GETTER(limit)
RL_GETTER(window)
RL_GETTER(rate)
RL_GETTER(burst)
RL_GETTER(local_share)
RL_GETTER(lease)

static PyObject *rl_get_policy(PyObject *op, void *c) {
    limiter_obj *self = (limiter_obj *)op;
    if (rl_ready(self) < 0) return NULL;
    return PyUnicode_FromString(policy_names[self->policy]);
}

static PyMethodDef rl_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))rl_allow, METH_FASTCALL | METH_KEYWORDS,
     "allow($self, /, key, n=1)\n--\n\nConsume n for key if Redis admits it now: True or False.\n"
     "key is str (UTF-8) or bytes, any content and length."},
    {"check", (PyCFunction)(void (*)(void))rl_check, METH_FASTCALL | METH_KEYWORDS,
     "check($self, /, key, n=1)\n--\n\nLike allow(), returning the Decision (allowed, limit, remaining,\n"
     "retry_after, reset_after; headers()). One EVALSHA round trip, or none when a\n"
     "local lease can serve it."},
    {"peek", (PyCFunction)(void (*)(void))rl_peek, METH_FASTCALL | METH_KEYWORDS,
     "peek($self, /, key, n=1)\n--\n\nThe Decision check(key, n) would return now, consuming nothing."},
    {"acquire", (PyCFunction)(void (*)(void))rl_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, key, n=1, timeout=None)\n--\n\nBlock until n is admitted for key (the GIL is\n"
     "released while waiting; Ctrl-C interrupts). RateLimitExceeded at once when n\n"
     "cannot be admitted within timeout seconds; ValueError when n exceeds the limit."},
    {"reset", (PyCFunction)(void (*)(void))rl_reset, METH_FASTCALL | METH_KEYWORDS,
     "reset($self, /, key)\n--\n\nDelete key's state in Redis (and its local lease)."},
    {"check_many", (PyCFunction)(void (*)(void))rl_check_many, METH_FASTCALL | METH_KEYWORDS,
     "check_many($self, /, requests)\n--\n\nCheck a list of (key, n) pairs (or bare keys, n=1) in one\n"
     "pipelined round trip; returns a list of Decisions in the same order. Each\n"
     "check is atomic on its own (not all-or-nothing: see RedisLimiterGroup)."},
    {"close", rl_close, METH_NOARGS,
     "close($self, /)\n--\n\nGive back every unspent lease permit (one pipelined round trip)."},
    {"_check_at", (PyCFunction)(void (*)(void))rl_check_at, METH_FASTCALL | METH_KEYWORDS,
     "_check_at($self, /, key, n, now)\n--\n\nTests only: check at `now` seconds (microsecond\n"
     "resolution) instead of Redis's TIME. Never uses leases."},
    {"_set_fallback", rl_set_fallback, METH_O,
     "_set_fallback($self, fn, /)\n--\n\nInstall the on_backend_error='local' fallback:\n"
     "fn(key, n, consume) -> Decision."},
    {"_redis_key", rl_redis_key, METH_O,
     "_redis_key($self, key, /)\n--\n\nThe Redis key holding key's state (for tools and tests)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rl_getset[] = {
    {"backend", rl_get_backend, NULL, "The RedisBackend.", NULL},
    {"algorithm", rl_get_algorithm, NULL, "The algorithm's name.", NULL},
    {"key_prefix", rl_get_key_prefix, NULL, "Prefix of every Redis key this limiter writes.", NULL},
    {"limit", rl_get_limit, NULL, "limit as given (None when not).", NULL},
    {"window", rl_get_window, NULL, "window in seconds as given (None when not).", NULL},
    {"rate", rl_get_rate, NULL, "rate as given (None when not).", NULL},
    {"burst", rl_get_burst, NULL, "burst as given (None when not).", NULL},
    {"on_backend_error", rl_get_policy, NULL, "'raise', 'allow', 'deny' or 'local'.", NULL},
    {"local_share", rl_get_local_share, NULL, "Share of the limit the 'local' fallback admits.", NULL},
    {"lease", rl_get_lease, NULL, "The LeaseConfig, or None.", NULL},
    {NULL},
};

static PyMemberDef rl_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(limiter_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot rl_slots[] = {
    {Py_tp_doc, "RedisRateLimiter(backend, algorithm='gcra', *, limit=None, window=None, rate=None, burst=None, "
                "key_prefix='prs:', on_backend_error='raise', local_share=None, lease=None)\n--\n\n"
                "A rate limit shared by every process using the same Redis, per key.\n"
                "gcra and token_bucket take rate (per second) and burst, or limit and window\n"
                "(rate = limit/window, burst = limit); fixed_window, sliding_window_counter and\n"
                "sliding_window_log take limit and window (seconds). Time is Redis's own.\n"
                "on_backend_error: 'raise' (BackendError), 'allow', 'deny' or 'local' (an\n"
                "in-process limiter with local_share of the limit)."},
    {Py_tp_new, rl_new},
    {Py_tp_init, rl_init},
    {Py_tp_dealloc, rl_dealloc},
    {Py_tp_traverse, rl_traverse},
    {Py_tp_clear, rl_clear},
    {Py_tp_methods, rl_methods},
    {Py_tp_getset, rl_getset},
    {Py_tp_members, rl_members},
    {0, NULL},
};

/* ---- RedisLimiterGroup ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *members;   /* tuple of (limiter, key, n) tuples, validated */
    prs_redis_member *m; /* [count], keys borrowed from `members` */
    Py_ssize_t count;
    PyObject *local_fn;  /* None or callable(requests) deciding the "local" members */
    PyObject *weakreflist;
} group_obj;

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    group_obj *self = (group_obj *)type->tp_alloc(type, 0);
    if (self) self->local_fn = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int group_init(PyObject *op, PyObject *args, PyObject *kwds) {
    group_obj *self = (group_obj *)op;
    prs_py_state *st = prs_py_state_of(op);
    static char *kwlist[] = {"members", NULL};
    PyObject *members;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:RedisLimiterGroup", kwlist, &members)) return -1;
    if (self->m) {
        PyErr_SetString(PyExc_RuntimeError, "RedisLimiterGroup is already initialised");
        return -1;
    }
    PyObject *seq = PySequence_Fast(members, "members must be a list of (limiter, key, n) tuples");
    if (!seq) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count < 1 || count > 1000) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a group needs 1 to 1000 members, got %zd", count);
        return -1;
    }
    PyObject *tup = PyTuple_New(count);
    prs_redis_member *m = PyMem_Calloc((size_t)count, sizeof *m);
    if (!tup || !m) {
        Py_XDECREF(tup);
        PyMem_Free(m);
        Py_DECREF(seq);
        if (m == NULL) PyErr_NoMemory();
        return -1;
    }
    PyObject *backend = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || (PyTuple_GET_SIZE(item) != 3 && PyTuple_GET_SIZE(item) != 2)) {
            PyErr_Format(PyExc_TypeError, "members[%zd] must be a (limiter, key, n) tuple, got %R", i, item);
            goto fail;
        }
        PyObject *lim = PyTuple_GET_ITEM(item, 0), *key = PyTuple_GET_ITEM(item, 1);
        if (!PyObject_TypeCheck(lim, PRS_PY_TYPE(st, RedisRateLimiter)) || !((limiter_obj *)lim)->l) {
            PyErr_Format(PyExc_TypeError, "members[%zd][0] must be a RedisRateLimiter, not %.200s", i,
                         Py_TYPE(lim)->tp_name);
            goto fail;
        }
        if (backend && ((limiter_obj *)lim)->backend != backend) {
            PyErr_Format(PyExc_ValueError, "members[%zd] uses another RedisBackend: a group runs one script "
                         "on one server", i);
            goto fail;
        }
        backend = ((limiter_obj *)lim)->backend;
        int64_t n = 1;
        if (PyTuple_GET_SIZE(item) == 3 && prs_py_parse_n(PyTuple_GET_ITEM(item, 2), "n", &n) < 0) goto fail;
        const char *k;
        Py_ssize_t klen;
        if (key_bytes(key, &k, &klen) < 0) goto fail;
        PyObject *norm = Py_BuildValue("(OOL)", lim, key, (long long)n);
        if (!norm) goto fail;
        PyTuple_SET_ITEM(tup, i, norm);
        m[i].limiter = ((limiter_obj *)lim)->l;
        m[i].key = k;
        m[i].keylen = (size_t)klen;
        m[i].n = n;
    }
    Py_DECREF(seq);
    self->members = tup;
    self->m = m;
    self->count = count;
    return 0;
fail:
    Py_DECREF(seq);
    Py_DECREF(tup);
    PyMem_Free(m);
    return -1;
}

static int group_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((group_obj *)op)->members);
    Py_VISIT(((group_obj *)op)->local_fn);
    return 0;
}

static int group_clear(PyObject *op) {
    group_obj *self = (group_obj *)op;
    PyMem_Free(self->m);
    self->m = NULL;
    self->count = 0;
    Py_CLEAR(self->members);
    Py_CLEAR(self->local_fn);
    return 0;
}

static void group_dealloc(PyObject *op) {
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (((group_obj *)op)->weakreflist) PyObject_ClearWeakRefs(op);
    group_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* Among two admitting decisions, is `a` the more restrictive? Less remaining;
 * on a tie, the longer reset. */
static int more_restrictive(const prs_decision *a, const prs_decision *b) {
    return a->remaining < b->remaining || (a->remaining == b->remaining && a->reset_after_ns > b->reset_after_ns);
}

/* Asks the facade's hook to decide the "local" members at once: it receives
 * [(fallback, key, n), ...] for those members (in member order) and returns
 * (-1, [Decision per request]) after consuming from every one of them, or
 * (pos, Decision) for the request that denies, having consumed nothing.
 * 0 with *d / *denied (a member index or -1), or -1 with an exception. */
static int group_local(group_obj *self, prs_py_state *st, PyObject *members, int rc, const Py_ssize_t *idx,
                       Py_ssize_t nlocal, prs_decision *best, int *have, int *denied) {
    if (self->local_fn == Py_None) {
        backend_error(st, rc); /* no hook installed (the facade installs one) */
        return -1;
    }
    PyObject *reqs = PyList_New(nlocal);
    if (!reqs) return -1;
    for (Py_ssize_t j = 0; j < nlocal; j++) {
        PyObject *item = PyTuple_GET_ITEM(members, idx[j]);
        limiter_obj *lim = (limiter_obj *)PyTuple_GET_ITEM(item, 0);
        if (lim->fallback == Py_None) {
            Py_DECREF(reqs);
            backend_error(st, rc); /* a "local" member without its fallback */
            return -1;
        }
        PyObject *req = PyTuple_Pack(3, lim->fallback, PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2));
        if (!req) { Py_DECREF(reqs); return -1; }
        PyList_SET_ITEM(reqs, j, req);
    }
    PyObject *res = PyObject_CallOneArg(self->local_fn, reqs);
    Py_DECREF(reqs);
    if (!res) return -1;
    PyTypeObject *dt = PRS_PY_TYPE(st, Decision);
    Py_ssize_t pos = -2;
    PyObject *what = NULL;
    if (PyTuple_Check(res) && PyTuple_GET_SIZE(res) == 2) {
        pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 0));
        what = PyTuple_GET_ITEM(res, 1);
        if (pos == -1 && PyErr_Occurred()) { Py_DECREF(res); return -1; }
    }
    int ok = 0;
    if (pos >= 0 && pos < nlocal && PyObject_TypeCheck(what, dt)) {
        *best = ((prs_py_decision *)what)->d;
        *have = 1;
        *denied = (int)idx[pos];
        ok = 1;
    } else if (pos == -1 && PyList_Check(what) && PyList_GET_SIZE(what) == nlocal) {
        ok = 1;
        for (Py_ssize_t j = 0; j < nlocal && ok; j++) {
            PyObject *o = PyList_GET_ITEM(what, j);
            if (!PyObject_TypeCheck(o, dt)) { ok = 0; break; }
            const prs_decision *md = &((prs_py_decision *)o)->d;
            if (!*have || more_restrictive(md, best)) *best = *md;
            *have = 1;
        }
    }
    Py_DECREF(res);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "the group's local hook must return (-1, [Decision, ...]) or (pos, Decision)");
        return -1;
    }
    return 0;
}

/* What the members' on_backend_error policies make of a failed group call.
 * Each member's own policy applies and the strictest outcome wins: "raise"
 * (any member) raises BackendError; else a "deny" member (or an "allow"
 * member whose n exceeds its limit) denies, and then no local limiter is
 * touched; else the "local" members decide all or nothing among themselves
 * (none consumed when one denies); "allow" members admit. The Decision is the
 * denying member's (the longest retry_after among static denials), or the
 * most restrictive admitting member's. 0 with *d and *denied, or -1. */
static int group_policy(group_obj *self, prs_py_state *st, PyObject *members, int rc, prs_decision *d,
                        int *denied) {
    if (policy_exempt(st, rc) < 0) return -1;
    Py_ssize_t count = self->count, nlocal = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        limiter_obj *lim = (limiter_obj *)PyTuple_GET_ITEM(PyTuple_GET_ITEM(members, i), 0);
        if (lim->policy == POLICY_RAISE) {
            backend_error(st, rc);
            return -1;
        }
        nlocal += lim->policy == POLICY_LOCAL;
    }
    prs_decision best = {0}, denial = {0};
    int have = 0;
    *denied = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        limiter_obj *lim = (limiter_obj *)PyTuple_GET_ITEM(PyTuple_GET_ITEM(members, i), 0);
        if (lim->policy == POLICY_LOCAL) continue;
        prs_decision md;
        static_policy_decision(lim, self->m[i].n, &md);
        if (!md.allowed) {
            if (*denied < 0 || md.retry_after_ns > denial.retry_after_ns) { denial = md; *denied = (int)i; }
        } else if (!have || more_restrictive(&md, &best)) {
            best = md;
            have = 1;
        }
    }
    if (*denied >= 0) {
        *d = denial;
        return 0;
    }
    if (nlocal) {
        Py_ssize_t *idx = PyMem_Calloc((size_t)nlocal, sizeof *idx);
        if (!idx) { PyErr_NoMemory(); return -1; }
        Py_ssize_t j = 0;
        for (Py_ssize_t i = 0; i < count; i++)
            if (((limiter_obj *)PyTuple_GET_ITEM(PyTuple_GET_ITEM(members, i), 0))->policy == POLICY_LOCAL)
                idx[j++] = i;
        int r = group_local(self, st, members, rc, idx, nlocal, &best, &have, denied);
        PyMem_Free(idx);
        if (r < 0) return -1;
    }
    *d = best;
    d->allowed = *denied < 0;
    if (d->allowed) d->retry_after_ns = 0;
    return 0;
}

/* The group's decision: a new Decision (denied_by set) or NULL. */
static PyObject *group_decide(group_obj *self, int64_t now_us, int *allowed) {
    prs_py_state *st = prs_py_state_of((PyObject *)self);
    if (!self->m) {
        PyErr_SetString(PyExc_RuntimeError, "RedisLimiterGroup is not initialised");
        return NULL;
    }
    PyObject *members = Py_NewRef(self->members); /* keeps the keys alive */
    prs_decision d;
    int denied = -1, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_group_check((size_t)self->count, self->m, now_us, &d, &denied);
    Py_END_ALLOW_THREADS
    if (rc && group_policy(self, st, members, rc, &d, &denied) < 0) {
        Py_DECREF(members);
        return NULL;
    }
    Py_DECREF(members);
    PyObject *dec = prs_py_decision_new(st, &d);
    if (!dec) return NULL;
    if (!d.allowed && denied >= 0) {
        PyObject *idx = PyLong_FromLong(denied);
        if (!idx) { Py_DECREF(dec); return NULL; }
        Py_XSETREF(((prs_py_decision *)dec)->denied_by, idx);
    }
    *allowed = d.allowed;
    return dec;
}

static PyObject *group_set_local(PyObject *op, PyObject *fn) {
    group_obj *self = (group_obj *)op;
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "the local hook must be callable or None, not %.200s", Py_TYPE(fn)->tp_name);
        return NULL;
    }
    Py_XSETREF(self->local_fn, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *group_check(PyObject *op, PyObject *unused) {
    int allowed;
    return group_decide((group_obj *)op, -1, &allowed);
}

static PyObject *group_allow(PyObject *op, PyObject *unused) {
    int allowed;
    PyObject *d = group_decide((group_obj *)op, -1, &allowed);
    if (!d) return NULL;
    Py_DECREF(d);
    return PyBool_FromLong(allowed);
}

static PyObject *group_check_at(PyObject *op, PyObject *now_o) {
    double now;
    if (prs_py_parse_real(now_o, "now", PRS_PY_ZERO_OK, &now) < 0) return NULL;
    if (now > 1e12) {
        PyErr_Format(PyExc_ValueError, "now must be <= 1e12 seconds, got %R", now_o);
        return NULL;
    }
    int allowed;
    return group_decide((group_obj *)op, (int64_t)llround(now * 1e6), &allowed);
}

static PyObject *group_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"timeout", NULL};
    PyObject *v[1];
    if (prs_py_unpack("acquire", args, nargs, kwnames, names, 1, v) < 0) return NULL;
    int64_t timeout_ns;
    if (prs_py_parse_timeout(v[0], "timeout", &timeout_ns) < 0) return NULL;
    prs_py_state *st = prs_py_state_of(op);
    prs_py_clock clock = {PRS_CLOCK_MONOTONIC, NULL, NULL};
    int64_t deadline = timeout_ns == PRS_NEVER ? INT64_MAX : prs__sat_add(prs_monotonic_ns(), timeout_ns);
    for (;;) {
        int allowed;
        PyObject *dec = group_decide((group_obj *)op, -1, &allowed);
        if (!dec) return NULL;
        prs_decision d = ((prs_py_decision *)dec)->d;
        if (allowed) { Py_DECREF(dec); Py_RETURN_NONE; }
        if (d.retry_after_ns == PRS_NEVER) {
            Py_DECREF(dec);
            PyErr_SetString(PyExc_ValueError, "this group can never admit its request (an n exceeds a limit)");
            return NULL;
        }
        Py_DECREF(dec);
        int64_t now = prs_monotonic_ns(), wake = prs__sat_add(now, d.retry_after_ns);
        if (wake > deadline) {
            prs_py_raise_rate_limited(st, &d, "rate limit exceeded: not admissible within timeout");
            return NULL;
        }
        if (prs_py_clock_wait(&clock, now, wake, 0) < 0) return NULL;
    }
}

static PyObject *group_get_members(PyObject *op, void *c) {
    group_obj *self = (group_obj *)op;
    if (!self->members) {
        PyErr_SetString(PyExc_RuntimeError, "RedisLimiterGroup is not initialised");
        return NULL;
    }
    return PySequence_List(self->members);
}

static PyObject *group_get_same_slot(PyObject *op, void *c) {
    group_obj *self = (group_obj *)op;
    if (!self->m) {
        PyErr_SetString(PyExc_RuntimeError, "RedisLimiterGroup is not initialised");
        return NULL;
    }
    int slot = -1, same = 1;
    for (Py_ssize_t i = 0; i < self->count && same; i++) {
        size_t need = prs_redis_limiter_redis_key(self->m[i].limiter, self->m[i].key, self->m[i].keylen, NULL, 0);
        char *buf = PyMem_Malloc(need ? need : 1);
        if (!buf) return PyErr_NoMemory();
        prs_redis_limiter_redis_key(self->m[i].limiter, self->m[i].key, self->m[i].keylen, buf, need);
        int s = prs_redis_key_slot(buf, need);
        PyMem_Free(buf);
        if (slot >= 0 && s != slot) same = 0;
        slot = s;
    }
    return PyBool_FromLong(same);
}

static PyMethodDef group_methods[] = {
    {"check", group_check, METH_NOARGS,
     "check($self, /)\n--\n\nAdmit every member's (key, n) or none, in one atomic script. The\n"
     "Decision is the most restrictive member's; denied_by is the index of the first\n"
     "member that denied."},
    {"allow", group_allow, METH_NOARGS, "allow($self, /)\n--\n\ncheck() as a bool."},
    {"acquire", (PyCFunction)(void (*)(void))group_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, timeout=None)\n--\n\nBlock until the whole group is admitted (GIL released\n"
     "while waiting); RateLimitExceeded when that cannot happen within timeout."},
    {"_check_at", group_check_at, METH_O,
     "_check_at($self, now, /)\n--\n\nTests only: check at `now` seconds instead of Redis's TIME."},
    {"_set_local", group_set_local, METH_O,
     "_set_local($self, fn, /)\n--\n\nInstall the hook deciding the on_backend_error='local' members\n"
     "when Redis fails: fn([(fallback, key, n), ...]) -> (-1, [Decision, ...]) | (pos, Decision)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef group_getset[] = {
    {"members", group_get_members, NULL, "The (limiter, key, n) members.", NULL},
    {"same_slot", group_get_same_slot, NULL,
     "True when every member's key maps to one Redis Cluster slot (same hash tag).", NULL},
    {NULL},
};

static PyMemberDef group_members_def[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(group_obj, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot group_slots[] = {
    {Py_tp_doc, "RedisLimiterGroup(members)\n--\n\n"
                "Several Redis limits checked as one, all or nothing, in one atomic script:\n"
                "members is a list of (limiter, key, n) tuples whose limiters share one\n"
                "RedisBackend. On Redis Cluster the keys must share a hash tag (see same_slot).\n"
                "When Redis fails, each member's on_backend_error applies and the strictest\n"
                "outcome wins: 'raise' over 'deny' over 'local' over 'allow'; the 'local'\n"
                "members' in-process limiters decide all or nothing among themselves."},
    {Py_tp_new, group_new},
    {Py_tp_init, group_init},
    {Py_tp_dealloc, group_dealloc},
    {Py_tp_traverse, group_traverse},
    {Py_tp_clear, group_clear},
    {Py_tp_methods, group_methods},
    {Py_tp_getset, group_getset},
    {Py_tp_members, group_members_def},
    {0, NULL},
};

#define REDIS_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)

static PyType_Spec backend_spec = {"pyresilience._core.RedisBackend", sizeof(backend_obj), 0, REDIS_FLAGS,
                                   backend_slots};
static PyType_Spec rl_spec = {"pyresilience._core.RedisRateLimiter", sizeof(limiter_obj), 0, REDIS_FLAGS, rl_slots};
static PyType_Spec group_spec = {"pyresilience._core.RedisLimiterGroup", sizeof(group_obj), 0, REDIS_FLAGS,
                                 group_slots};

int prs_py_register_redis(PyObject *m, prs_py_state *st) {
    if (prs_py_add_type(m, st, PRS_SLOT_RedisBackend, &backend_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_RedisRateLimiter, &rl_spec, NULL) < 0) return -1;
    if (prs_py_add_type(m, st, PRS_SLOT_RedisLimiterGroup, &group_spec, NULL) < 0) return -1;
    return 0;
}

#else /* !PRS_HAVE_HIREDIS */

/* Built without hiredis: no Redis types (pyresilience.redis explains how to
 * get them). */
int prs_py_register_redis(PyObject *m, prs_py_state *st) { return 0; }

#endif /* PRS_HAVE_HIREDIS */
