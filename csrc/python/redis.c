/*
 * redis.c - the Redis types of pyresilience._core: RedisBackend,
 * RedisRateLimiter and RedisLimiterGroup, over csrc/redis (hiredis).
 *
 * Thin by design: arguments are parsed here, the core (csrc/redis) validates
 * them (a refusal names the config field and why; this file words it with
 * the value given), decides, and applies each limiter's on_backend_error
 * policy when Redis fails - including the 'local' fallback, an in-process
 * keyed limiter the core builds. What comes back is a decision or a status;
 * a status becomes an exception through prs_py_error() (its message is the
 * backend's, from prs_redis_last_error(), when it has one).
 *
 * Every network call runs with the GIL released (the C backend never touches
 * Python objects; the key bytes it reads belong to argument objects kept
 * alive across the call). Objects are built whole in tp_new.
 *
 * Built without hiredis, this file registers nothing and the facade's
 * RedisBackend raises an error explaining how to install hiredis.
 */
#include "prs_py.h"

#ifdef PRS_HAVE_HIREDIS

#include <hiredis/hiredis.h>
#include <limits.h>
#include <math.h>
#include <structmember.h>

#include "prs_redis.h"

/* ---- errors ------------------------------------------------------------------ */

/* A status of the Redis library as an exception (the one table), with the
 * backend's message for this thread's last failure when there is one. */
static PyObject *redis_error(prs_py_state *st, int rc) {
    const char *msg = prs_redis_last_error();
    return prs_py_error(st, rc, msg && *msg ? msg : NULL);
}

/* A Python parameter standing for a config field, for wording the core's
 * refusals: "<param> <reason>, got <value>" (no "got" when not given). */
typedef struct field_arg {
    const char *field;  /* the config field the core names */
    const char *param;  /* the parameter the user knows */
    PyObject *value;    /* as given, or NULL */
} field_arg;

static int config_error(prs_py_state *st, int rc, const prs_config_error *why, const field_arg *args) {
    if ((rc == PRS_EINVAL || rc == PRS_ERANGE) && why->reason) {
        for (const field_arg *a = args; a->field; a++) {
            if (!why->field || strcmp(a->field, why->field)) continue;
            if (a->value && a->value != Py_None)
                PyErr_Format(PyExc_ValueError, "%s %s, got %R", a->param, why->reason, a->value);
            else
                PyErr_Format(PyExc_ValueError, "%s %s", a->param, why->reason);
            return -1;
        }
        PyErr_Format(PyExc_ValueError, "%s %s", why->field ? why->field : "config", why->reason);
        return -1;
    }
    redis_error(st, rc);
    return -1;
}

static int is_none(PyObject *o) { return !o || o == Py_None; }

/* A str argument as UTF-8 without NUL (borrowed from `o`); `dflt` when not given. */
static int str_arg(PyObject *o, const char *param, const char *dflt, const char **out) {
    if (!o) { *out = dflt; return 0; }
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.200s: %R", param, Py_TYPE(o)->tp_name, o);
        return -1;
    }
    Py_ssize_t len;
    *out = PyUnicode_AsUTF8AndSize(o, &len);
    if (!*out) return -1;
    if ((size_t)len != strlen(*out)) {
        PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters, got %R", param, o);
        return -1;
    }
    return 0;
}

/* Seconds as given (any real but NaN) in *s and as ns, saturating: the core
 * checks the range. */
static int duration_arg(PyObject *o, const char *param, double *s, int64_t *ns) {
    if (prs_py_parse_real(o, param, PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK, s) < 0) return -1;
    *ns = prs_seconds_to_ns(*s);
    return 0;
}

/* A count as given (int or integral float), saturated to int64: the core
 * checks the range (and names the value given). */
static int count_arg(PyObject *o, const char *param, int64_t *out) {
    if (prs_py_parse_count(o, param, INT64_MIN, INT64_MAX, out) == 0) return 0;
    if (!PyErr_ExceptionMatches(PyExc_ValueError) || !PyLong_Check(o)) return -1;
    PyErr_Clear(); /* an int beyond int64 */
    PyObject *zero = PyLong_FromLong(0);
    int positive = zero ? PyObject_RichCompareBool(o, zero, Py_GT) : -1;
    Py_XDECREF(zero);
    if (positive < 0) return -1;
    *out = positive ? INT64_MAX : INT64_MIN;
    return 0;
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

static int key_bytes(PyObject *key, const char **p, Py_ssize_t *n) { return bytes_of(key, "key", p, n); }

/* now (seconds) of the _check_at test hooks, as Redis microseconds. */
static int now_us_arg(PyObject *o, int64_t *now_us) {
    double now;
    if (prs_py_parse_real(o, "now", PRS_PY_ZERO_OK, &now) < 0) return -1;
    if (now > 1e12) {
        PyErr_Format(PyExc_ValueError, "now must be <= 1e12 seconds, got %R", o);
        return -1;
    }
    *now_us = (int64_t)llround(now * 1e6);
    return 0;
}

/* ---- RedisBackend ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    prs_redis_backend *b;
    PyObject *url;         /* str */
    double connect_timeout, timeout;
    int max_connections;
    PyObject *weakreflist;
} backend_obj;

static PyObject *backend_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"url", "connect_timeout", "timeout", "max_connections", NULL};
    PyObject *url_o = NULL, *ct_o = NULL, *t_o = NULL, *mc_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$OOO:RedisBackend", kwlist, &url_o, &ct_o, &t_o, &mc_o))
        return NULL;
    prs_py_state *st = prs_py_state_of_type(type);
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    int64_t mc = cfg.max_connections;
    double ct = 0.25, t = 0.25;
    if (str_arg(url_o, "url", "redis://127.0.0.1:6379/0", &cfg.url) < 0) return NULL;
    if (ct_o && duration_arg(ct_o, "connect_timeout", &ct, &cfg.connect_timeout_ns) < 0) return NULL;
    if (t_o && duration_arg(t_o, "timeout", &t, &cfg.timeout_ns) < 0) return NULL;
    if (mc_o && count_arg(mc_o, "max_connections", &mc) < 0) return NULL;
    cfg.max_connections = mc < INT_MIN ? INT_MIN : mc > INT_MAX ? INT_MAX : (int)mc;
    prs_config_error why = {NULL, NULL};
    int rc = prs_redis_config_check(&cfg, &why);
    if (rc) {
        const field_arg fields[] = {{"connect_timeout_ns", "connect_timeout", ct_o},
                                    {"timeout_ns", "timeout", t_o},
                                    {"max_connections", "max_connections", mc_o},
                                    {NULL, NULL, NULL}};
        config_error(st, rc, &why, fields);
        return NULL;
    }
    PyObject *url = url_o ? Py_NewRef(url_o) : PyUnicode_FromString(cfg.url);
    if (!url) return NULL;
    prs_redis_backend *b;
    rc = prs_redis_backend_new(&cfg, &b); /* a bad URL: its message, password hidden */
    if (rc) {
        Py_DECREF(url);
        return redis_error(st, rc);
    }
    backend_obj *self = (backend_obj *)type->tp_alloc(type, 0);
    if (!self) {
        prs_redis_backend_free(b);
        Py_DECREF(url);
        return NULL;
    }
    self->b = b;
    self->url = url;
    self->connect_timeout = ct;
    self->timeout = t;
    self->max_connections = cfg.max_connections;
    return (PyObject *)self;
}

static void backend_dealloc(PyObject *op) {
    backend_obj *self = (backend_obj *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    prs_redis_backend *b = self->b;
    self->b = NULL;
    Py_BEGIN_ALLOW_THREADS
    prs_redis_backend_free(b);
    Py_END_ALLOW_THREADS
    Py_CLEAR(self->url);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int backend_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static PyObject *backend_close(PyObject *op, PyObject *unused) {
    prs_redis_backend *b = ((backend_obj *)op)->b;
    Py_BEGIN_ALLOW_THREADS
    prs_redis_backend_close(b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *backend_ping(PyObject *op, PyObject *unused) {
    prs_redis_backend *b = ((backend_obj *)op)->b;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_ping(b);
    Py_END_ALLOW_THREADS
    if (rc) return redis_error(prs_py_state_of(op), rc);
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


static PyObject *backend_command(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    backend_obj *self = (backend_obj *)op;
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
        if (rc) { redis_error(st, rc); goto done; }
        result = reply_to_py(st, reply);
        freeReplyObject(reply);
    }
done:
    for (Py_ssize_t i = 0; i < ntmp; i++) Py_XDECREF(tmp[i]);
    return result;
}

#define BACKEND ((backend_obj *)op)
static PyObject *backend_get_url(PyObject *op, void *c) { return Py_NewRef(BACKEND->url); }
static PyObject *backend_get_timeout(PyObject *op, void *c) { return PyFloat_FromDouble(BACKEND->timeout); }
static PyObject *backend_get_connect_timeout(PyObject *op, void *c) {
    return PyFloat_FromDouble(BACKEND->connect_timeout);
}
static PyObject *backend_get_max_connections(PyObject *op, void *c) {
    return PyLong_FromLong(BACKEND->max_connections);
}
static PyObject *backend_get_closed(PyObject *op, void *c) {
    return PyBool_FromLong(prs_redis_backend_closed(BACKEND->b));
}
static PyObject *backend_get_connections(PyObject *op, void *c) {
    return PyLong_FromLong(prs_redis_backend_connections(BACKEND->b));
}
#undef BACKEND

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
    prs_redis_limiter *l;
    PyObject *backend;      /* strong: the RedisBackend (keeps the C backend alive) */
    PyObject *lease;        /* None or the LeaseConfig given */
    PyObject *algorithm;    /* str */
    PyObject *key_prefix;   /* str */
    PyObject *limit, *window, *rate, *burst, *local_share; /* as given (None when not) */
    int policy;             /* prs_redis_policy */
    int has_lease;
    PyObject *weakreflist;
} limiter_obj;

/* Which sizing parameters were given: the one rule the core cannot see (it
 * has no "not given"). gcra and token_bucket take rate and burst, or limit
 * and window (cfg->from_window); the window algorithms take limit and window.
 * 0, or -1 with ValueError. */
static int sizing_args(prs_redis_limiter_config *cfg, const char *algo, PyObject *limit_o, PyObject *window_o,
                       PyObject *rate_o, PyObject *burst_o) {
    int rate_algo = cfg->algorithm == PRS_REDIS_GCRA || cfg->algorithm == PRS_REDIS_TOKEN_BUCKET;
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
        if (prs_py_parse_real(rate_o, "rate", PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK, &cfg->rate) < 0)
            return -1;
        return count_arg(burst_o, "burst", &cfg->burst);
    }
    if (is_none(limit_o) || is_none(window_o)) {
        PyErr_Format(PyExc_ValueError,
                     rate_algo ? "%s needs rate and burst (or limit and window)" : "%s needs both limit and window",
                     algo);
        return -1;
    }
    double window;
    cfg->from_window = rate_algo;
    if (count_arg(limit_o, "limit", &cfg->limit) < 0) return -1;
    return duration_arg(window_o, "window", &window, &cfg->window_ns);
}

/* lease=LeaseConfig(batch, max_hold) into the config. 0 or -1. */
static int lease_args(prs_redis_limiter_config *cfg, PyObject *lease_o, PyObject **batch_o, PyObject **hold_o) {
    *batch_o = PyObject_GetAttrString(lease_o, "batch");
    *hold_o = *batch_o ? PyObject_GetAttrString(lease_o, "max_hold") : NULL;
    if (!*batch_o || !*hold_o) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "lease must be a LeaseConfig or None, not %.200s: %R",
                         Py_TYPE(lease_o)->tp_name, lease_o);
        }
        return -1;
    }
    double hold;
    if (count_arg(*batch_o, "lease.batch", &cfg->lease_batch) < 0 ||
        duration_arg(*hold_o, "lease.max_hold", &hold, &cfg->lease_max_hold_ns) < 0)
        return -1;
    if (hold > 0 && cfg->lease_max_hold_ns < 1) cfg->lease_max_hold_ns = 1;
    return 0;
}

static PyObject *rl_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"backend", "algorithm", "limit", "window", "rate", "burst", "key_prefix",
                             "on_backend_error", "local_share", "lease", NULL};
    PyObject *backend, *algo_o = NULL, *limit_o = NULL, *window_o = NULL, *rate_o = NULL, *burst_o = NULL,
             *prefix_o = NULL, *policy_o = NULL, *share_o = NULL, *lease_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$OOOOOOOO:RedisRateLimiter", kwlist, &backend, &algo_o,
                                     &limit_o, &window_o, &rate_o, &burst_o, &prefix_o, &policy_o, &share_o,
                                     &lease_o))
        return NULL;
    prs_py_state *st = prs_py_state_of_type(type);
    if (!PyObject_TypeCheck(backend, PRS_PY_TYPE(st, RedisBackend))) {
        PyErr_Format(PyExc_TypeError, "backend must be a RedisBackend, not %.200s: %R", Py_TYPE(backend)->tp_name,
                     backend);
        return NULL;
    }
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    const char *algo, *policy = "raise";
    PyObject *batch_o = NULL, *hold_o = NULL, *result = NULL;
    if (str_arg(algo_o, "algorithm", "gcra", &algo) < 0) return NULL;
    cfg.algorithm = prs_redis_algorithm_from_name(algo);
    if (cfg.algorithm >= 0 && sizing_args(&cfg, algo, limit_o, window_o, rate_o, burst_o) < 0) return NULL;
    if (str_arg(prefix_o, "key_prefix", "prs:", &cfg.key_prefix) < 0) return NULL;
    if (policy_o && PyUnicode_Check(policy_o) && !(policy = PyUnicode_AsUTF8(policy_o))) return NULL;
    cfg.on_backend_error = policy_o && !PyUnicode_Check(policy_o) ? -1 : prs_redis_policy_from_name(policy);
    if (!is_none(share_o) && prs_py_parse_real(share_o, "local_share", 0, &cfg.local_share) < 0) return NULL;
    if (!is_none(lease_o) && lease_args(&cfg, lease_o, &batch_o, &hold_o) < 0) goto done;
    prs_config_error why = {NULL, NULL};
    int rc = prs_redis_limiter_config_check(&cfg, &why);
    if (rc) {
        const field_arg fields[] = {
            {"algorithm", "algorithm", algo_o}, {"rate", "rate", rate_o},
            {"burst", "burst", burst_o},        {"limit", "limit", limit_o},
            {"window_ns", "window", window_o},  {"key_prefix", "key_prefix", prefix_o},
            {"lease_batch", "lease.batch", batch_o}, {"lease_max_hold_ns", "lease.max_hold", hold_o},
            {"on_backend_error", "on_backend_error", policy_o}, {"local_share", "local_share", share_o},
            {NULL, NULL, NULL}};
        config_error(st, rc, &why, fields);
        goto done;
    }
    prs_redis_limiter *l;
    rc = prs_redis_limiter_new(((backend_obj *)backend)->b, &cfg, &l);
    if (rc) { redis_error(st, rc); goto done; }
    limiter_obj *self = (limiter_obj *)type->tp_alloc(type, 0);
    if (!self) { prs_redis_limiter_free(l); goto done; }
    self->l = l;
    self->backend = Py_NewRef(backend);
    self->policy = cfg.on_backend_error;
    self->has_lease = cfg.lease_batch > 0;
    self->lease = Py_NewRef(is_none(lease_o) ? Py_None : lease_o);
    self->limit = Py_NewRef(limit_o ? limit_o : Py_None);
    self->window = Py_NewRef(window_o ? window_o : Py_None);
    self->rate = Py_NewRef(rate_o ? rate_o : Py_None);
    self->burst = Py_NewRef(burst_o ? burst_o : Py_None);
    self->local_share = Py_NewRef(share_o ? share_o : Py_None);
    self->algorithm = PyUnicode_FromString(algo);
    self->key_prefix = PyUnicode_FromString(cfg.key_prefix);
    if (!self->algorithm || !self->key_prefix) { Py_DECREF(self); goto done; }
    result = (PyObject *)self;
done:
    Py_XDECREF(batch_o);
    Py_XDECREF(hold_o);
    return result;
}

static int rl_traverse(PyObject *op, visitproc visit, void *arg) {
    limiter_obj *self = (limiter_obj *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->backend);
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

/* One decision for key: 0 with *d or -1. The core applies on_backend_error.
 * consume: 1 check, 0 peek; now_us >= 0: the test time override. */
static int rl_decide(limiter_obj *self, PyObject *key, int64_t n, int consume, int64_t now_us, prs_decision *d) {
    const char *k;
    Py_ssize_t klen;
    if (key_bytes(key, &k, &klen) < 0) return -1;
    int rc;
    if (consume && self->has_lease && now_us < 0) {
        rc = prs_redis_limiter_check_local(self->l, k, (size_t)klen, n, d);
        if (rc == PRS_OK) return 0;
    }
    prs_redis_limiter *l = self->l; /* key's bytes: the caller's argument keeps them alive */
    Py_BEGIN_ALLOW_THREADS
    if (!consume) rc = prs_redis_limiter_peek(l, k, (size_t)klen, n, d);
    else if (now_us >= 0) rc = prs_redis_limiter_check_at(l, k, (size_t)klen, n, now_us, d);
    else rc = prs_redis_limiter_check(l, k, (size_t)klen, n, d);
    Py_END_ALLOW_THREADS
    if (rc == PRS_OK) return 0;
    redis_error(prs_py_state_of((PyObject *)self), rc);
    return -1;
}

/* Until admitted: decide(self, ctx, &d) (0 or -1) again after each retry_after,
 * sleeping with the GIL released in slices (prs_py_clock_wait checks signals).
 * RateLimitExceeded at once when admission lies beyond the timeout, ValueError
 * (`never`, formatted with n and the limit) when it can never happen. */
typedef int (*redis_decide_fn)(PyObject *self, void *ctx, prs_decision *d);

static PyObject *redis_wait(PyObject *self, redis_decide_fn decide, void *ctx, int64_t timeout_ns,
                            const char *never, int64_t n) {
    prs_py_state *st = prs_py_state_of(self);
    prs_py_clock clock = {PRS_CLOCK_MONOTONIC, NULL, NULL};
    int64_t deadline = timeout_ns == PRS_NEVER ? INT64_MAX : prs__sat_add(prs_monotonic_ns(), timeout_ns);
    for (;;) {
        prs_decision d;
        if (decide(self, ctx, &d) < 0) return NULL;
        if (d.allowed) Py_RETURN_NONE;
        if (d.retry_after_ns == PRS_NEVER) {
            PyErr_Format(PyExc_ValueError, never, (long long)n, (long long)d.limit);
            return NULL;
        }
        int64_t now = prs_monotonic_ns(), wake = prs__sat_add(now, d.retry_after_ns);
        if (wake > deadline)
            return prs_py_raise_rate_limited(st, &d, "rate limit exceeded: not admissible within timeout");
        if (prs_py_clock_wait(&clock, now, wake, 0) < 0) return NULL;
    }
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

/* allow/check/peek: what = 'a' (a bool), 'c' or 'p' (a Decision). */
static PyObject *rl_call(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, char what) {
    PyObject *key;
    int64_t n;
    prs_decision d;
    const char *fname = what == 'a' ? "allow" : what == 'c' ? "check" : "peek";
    if (parse_key_n(fname, args, nargs, kwnames, &key, &n) < 0) return NULL;
    if (rl_decide((limiter_obj *)op, key, n, what != 'p', -1, &d) < 0) return NULL;
    return what == 'a' ? PyBool_FromLong(d.allowed) : prs_py_decision_new(prs_py_state_of(op), &d);
}
static PyObject *rl_allow(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return rl_call(op, args, nargs, kwnames, 'a');
}
static PyObject *rl_check(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return rl_call(op, args, nargs, kwnames, 'c');
}
static PyObject *rl_peek(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return rl_call(op, args, nargs, kwnames, 'p');
}

static const char *const at_names[] = {"key", "n", "now", NULL};

static PyObject *rl_check_at(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[3];
    if (prs_py_unpack("_check_at", args, nargs, kwnames, at_names, 3, v) < 0) return NULL;
    if (!v[0] || !v[1] || !v[2]) {
        PyErr_SetString(PyExc_TypeError, "_check_at() needs key, n and now");
        return NULL;
    }
    int64_t n, now_us;
    if (prs_py_parse_n(v[1], "n", &n) < 0 || now_us_arg(v[2], &now_us) < 0) return NULL;
    prs_decision d;
    if (rl_decide((limiter_obj *)op, v[0], n, 1, now_us, &d) < 0) return NULL;
    return prs_py_decision_new(prs_py_state_of(op), &d);
}

typedef struct { PyObject *key; int64_t n; } key_n;

static int rl_wait_decide(PyObject *self, void *ctx, prs_decision *d) {
    key_n *kn = ctx;
    return rl_decide((limiter_obj *)self, kn->key, kn->n, 1, -1, d);
}

static const char *const acquire_names[] = {"key", "n", "timeout", NULL};

static PyObject *rl_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[3];
    if (prs_py_unpack("acquire", args, nargs, kwnames, acquire_names, 3, v) < 0) return NULL;
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "acquire() missing required argument 'key'");
        return NULL;
    }
    key_n kn = {v[0], 1};
    int64_t timeout_ns;
    if (v[1] && prs_py_parse_n(v[1], "n", &kn.n) < 0) return NULL;
    if (prs_py_parse_timeout(v[2], "timeout", &timeout_ns) < 0) return NULL;
    return redis_wait(op, rl_wait_decide, &kn, timeout_ns,
                      "n=%lld can never be admitted by this limiter (limit %lld)", kn.n);
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
    const char *k;
    Py_ssize_t klen;
    if (key_bytes(v[0], &k, &klen) < 0) return NULL;
    int rc;
    prs_redis_limiter *l = self->l;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_limiter_reset(l, k, (size_t)klen);
    Py_END_ALLOW_THREADS
    if (rc) return redis_error(prs_py_state_of(op), rc);
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
    if (rc) { redis_error(st, rc); goto done; }
    result = PyList_New(count);
    if (!result) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
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
    int rc;
    prs_redis_limiter *l = ((limiter_obj *)op)->l;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_limiter_release_leases(l);
    Py_END_ALLOW_THREADS
    if (rc) return redis_error(prs_py_state_of(op), rc);
    Py_RETURN_NONE;
}

static PyObject *rl_redis_key(PyObject *op, PyObject *key) {
    limiter_obj *self = (limiter_obj *)op;
    const char *k;
    Py_ssize_t klen;
    if (key_bytes(key, &k, &klen) < 0) return NULL;
    size_t need = prs_redis_limiter_redis_key(self->l, k, (size_t)klen, NULL, 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need);
    if (!out) return NULL;
    prs_redis_limiter_redis_key(self->l, k, (size_t)klen, PyBytes_AS_STRING(out), need);
    return out;
}

#define RL_GETTER(field) \
    static PyObject *rl_get_##field(PyObject *op, void *c) { return Py_NewRef(((limiter_obj *)op)->field); }
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
    return PyUnicode_FromString(prs_redis_policy_name(((limiter_obj *)op)->policy));
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
    PyObject *weakreflist;
} group_obj;

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"members", NULL};
    PyObject *members;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:RedisLimiterGroup", kwlist, &members)) return NULL;
    prs_py_state *st = prs_py_state_of_type(type);
    PyObject *seq = PySequence_Fast(members, "members must be a list of (limiter, key, n) tuples");
    if (!seq) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count < 1 || count > 1000) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a group needs 1 to 1000 members, got %zd", count);
        return NULL;
    }
    PyObject *tup = PyTuple_New(count);
    prs_redis_member *m = PyMem_Calloc((size_t)count, sizeof *m);
    if (!tup || !m) {
        if (tup && !m) PyErr_NoMemory();
        goto fail;
    }
    PyObject *backend = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || (PyTuple_GET_SIZE(item) != 3 && PyTuple_GET_SIZE(item) != 2)) {
            PyErr_Format(PyExc_TypeError, "members[%zd] must be a (limiter, key, n) tuple, got %R", i, item);
            goto fail;
        }
        PyObject *lim = PyTuple_GET_ITEM(item, 0), *key = PyTuple_GET_ITEM(item, 1);
        if (!PyObject_TypeCheck(lim, PRS_PY_TYPE(st, RedisRateLimiter))) {
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
    group_obj *self = (group_obj *)type->tp_alloc(type, 0);
    if (!self) goto fail;
    Py_DECREF(seq);
    self->members = tup;
    self->m = m;
    self->count = count;
    return (PyObject *)self;
fail:
    Py_DECREF(seq);
    Py_XDECREF(tup);
    PyMem_Free(m);
    return NULL;
}

static int group_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((group_obj *)op)->members);
    return 0;
}

static void group_dealloc(PyObject *op) {
    group_obj *self = (group_obj *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    PyMem_Free(self->m); /* its keys are borrowed from members: freed first */
    self->m = NULL;
    Py_CLEAR(self->members);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* The group's decision (the core applies the members' policies when Redis
 * fails): 0 with *d and *denied, or -1. */
static int group_decide(group_obj *self, int64_t now_us, prs_decision *d, int *denied) {
    PyObject *members = Py_NewRef(self->members); /* keeps the keys alive */
    int rc;
    *denied = -1;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_group_check((size_t)self->count, self->m, now_us, d, denied);
    Py_END_ALLOW_THREADS
    Py_DECREF(members);
    if (rc == PRS_OK) return 0;
    redis_error(prs_py_state_of((PyObject *)self), rc);
    return -1;
}

static PyObject *group_decision(group_obj *self, int64_t now_us) {
    prs_decision d;
    int denied;
    if (group_decide(self, now_us, &d, &denied) < 0) return NULL;
    return prs_py_decision_new_by(prs_py_state_of((PyObject *)self), &d, d.allowed ? -1 : denied);
}

static PyObject *group_check(PyObject *op, PyObject *unused) { return group_decision((group_obj *)op, -1); }

static PyObject *group_allow(PyObject *op, PyObject *unused) {
    prs_decision d;
    int denied;
    if (group_decide((group_obj *)op, -1, &d, &denied) < 0) return NULL;
    return PyBool_FromLong(d.allowed);
}

static PyObject *group_check_at(PyObject *op, PyObject *now_o) {
    int64_t now_us;
    if (now_us_arg(now_o, &now_us) < 0) return NULL;
    return group_decision((group_obj *)op, now_us);
}

static int group_wait_decide(PyObject *self, void *ctx, prs_decision *d) {
    int denied;
    return group_decide((group_obj *)self, -1, d, &denied);
}

static PyObject *group_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"timeout", NULL};
    PyObject *v[1];
    if (prs_py_unpack("acquire", args, nargs, kwnames, names, 1, v) < 0) return NULL;
    int64_t timeout_ns;
    if (prs_py_parse_timeout(v[0], "timeout", &timeout_ns) < 0) return NULL;
    return redis_wait(op, group_wait_decide, NULL, timeout_ns,
                      "this group can never admit its request (an n exceeds a limit)", 0);
}

static PyObject *group_get_members(PyObject *op, void *c) { return PySequence_List(((group_obj *)op)->members); }

static PyObject *group_get_same_slot(PyObject *op, void *c) {
    group_obj *self = (group_obj *)op;
    return PyBool_FromLong(prs_redis_group_slot((size_t)self->count, self->m) >= 0);
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
    {Py_tp_dealloc, group_dealloc},
    {Py_tp_traverse, group_traverse},
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
