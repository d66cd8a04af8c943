/*
 * redis.c - the Redis types of pyresilience._core: RedisBackend,
 * RedisRateLimiter and RedisLimiterGroup, over csrc/redis (hiredis).
 *
 * Declared in tools/decl_redis.py (parameters, docs, method and property
 * tables: gen/redis.h). The core (csrc/redis) validates (a refusal names
 * the config field and why; prs_py_config_error words it with the value
 * given), decides, and applies each limiter's on_backend_error policy when
 * Redis fails - including the 'local' fallback. A status becomes an
 * exception through prs_py_error(), with the backend's message from
 * prs_redis_last_error() when it has one. allow/check/peek are the shared
 * rate methods (prs_py_rate_method over rl_target); acquire() is the
 * binding's rate wait (prs_py_wait_admitted) sleeping each step's whole delay,
 * a step being a round trip; acquire_async feeds it the Decisions its
 * asyncio checks got (_async_waiter).
 *
 * The asyncio transport (pyresilience._redis_async) gets the C ops as
 * capsules and a _RespReader per connection: the replies are parsed by
 * csrc/redis and handed straight to the op, never converted to Python.
 *
 * Every network call runs with the GIL released (the C backend never touches
 * Python objects; the key bytes it reads belong to argument objects kept
 * alive across the call). Objects are built whole in tp_new.
 *
 * Built without hiredis, this file registers nothing and the facade's
 * RedisBackend raises an error explaining how to install hiredis.
 */
#include "wait.h"

#ifdef PRS_HAVE_HIREDIS

#include <hiredis/hiredis.h>
#include <limits.h>
#include <math.h>

#include "prs_redis.h"
#include "prs_redis_ops.h"

typedef struct {
    PyObject_HEAD
    prs_redis_backend *b;
    PyObject *url; /* str */
    prs_redis_config cfg;
    PyObject *weakreflist;
} backend_obj;
static int backend_build(backend_obj *o, prs_redis_config *cfg, PyObject *url);

typedef struct {
    PyObject_HEAD
    prs_redis_limiter *l;
    PyObject *backend;    /* strong: the RedisBackend (keeps the C backend alive) */
    PyObject *algorithm, *key_prefix; /* str */
    PyObject *limit, *window, *rate, *burst, *local_share, *lease; /* as given, or NULL */
    int policy;           /* prs_redis_policy */
    int has_lease;
    PyObject *weakreflist;
} limiter_obj;

typedef struct {
    PyObject_HEAD
    PyObject *members;   /* tuple of (limiter, key, n) tuples, validated */
    prs_redis_member *m; /* [count], keys borrowed from `members` */
    Py_ssize_t count;
    PyObject *weakreflist;
} group_obj;

typedef struct {
    PyObject_HEAD
    prs_redis_reader *r;
    PyObject *error; /* the class of an error reply */
} reader_obj;

static PyObject *group_decision(PyObject *op, int64_t now_us, int as_bool);

typedef struct transport_args {
    int64_t admit;
    int status; /* index in the declared choices: OK, ECONN, ETIMEDOUT, EPROTO, EBACKEND, EBACKENDCLOSED */
} transport_args;
static int transport_failure(const transport_args *a, PyObject *message);

typedef struct wait_args {
    int64_t n, timeout_ns;
} wait_args;
static PyObject *fed_waiter(PyObject *owner, const char *what, int64_t n, int64_t timeout_ns);

typedef struct op_args {
    int kind; /* check, peek, reset */
    int64_t n;
} op_args;

typedef struct clock_args {
    int64_t sent_us, got_us, server_us;
} clock_args;

#include "gen/redis.h"

/* The monotonic clock of the Redis waits (time itself is Redis's). */
static prs_py_clock wait_clock = {PRS_CLOCK_MONOTONIC, NULL, NULL};


/* A status of the Redis library as an exception, with the backend's message
 * for this thread's last failure when there is one. */
static PyObject *redis_error(prs_py_state *st, int rc) {
    const char *msg = prs_redis_last_error();
    return prs_py_error(st, rc, msg && *msg ? msg : NULL);
}

static int is_none(PyObject *o) { return !o || o == Py_None; }

/* A str argument as UTF-8 without NUL (borrowed from `o`), else `*out` kept. */
static int utf8_arg(PyObject *o, const char *param, const char **out) {
    if (!o) return 0;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(o, &len);
    if (!s) return -1;
    if ((size_t)len != strlen(s)) {
        PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters, got %R", param, o);
        return -1;
    }
    *out = s;
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

static int backend_max_connections(PyObject *arg, void *config) {
    int64_t mc;
    if (prs_py_parse_config_count(arg, "max_connections", &mc) < 0) return -1;
    ((prs_redis_config *)config)->max_connections = mc < INT_MIN ? INT_MIN : mc > INT_MAX ? INT_MAX : (int)mc;
    return 0;
}

/* tp_new's last step (the declared one parses and checks cfg): the backend. */
static int backend_build(backend_obj *o, prs_redis_config *cfg, PyObject *url) {
    int rc = utf8_arg(url, "url", &cfg->url) < 0 ? -1 : prs_redis_backend_new(cfg, &o->b);
    if (rc && !PyErr_Occurred()) redis_error(prs_py_state_of((PyObject *)o), rc); /* a bad URL: password hidden */
    if (rc) return -1;
    o->url = url ? Py_NewRef(url) : PyUnicode_FromString(cfg->url);
    o->cfg = *cfg;
    o->cfg.url = NULL; /* the url object's */
    return o->url ? 0 : -1;
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
 * status; an error reply is an `error` (an exception class) made from its
 * text, or with error NULL raises BackendError. */
static PyObject *reply_to_py(prs_py_state *st, const redisReply *r, PyObject *error) {
    switch (r->type) {
    case REDIS_REPLY_STRING: return PyBytes_FromStringAndSize(r->str, (Py_ssize_t)r->len);
    case REDIS_REPLY_STATUS: return PyUnicode_FromStringAndSize(r->str, (Py_ssize_t)r->len);
    case REDIS_REPLY_INTEGER: return PyLong_FromLongLong(r->integer);
    case REDIS_REPLY_NIL: Py_RETURN_NONE;
    case REDIS_REPLY_ERROR: {
        PyObject *msg = error ? PyUnicode_FromString(r->str ? r->str : "error")
                              : PyUnicode_FromFormat("redis: %.400s", r->str ? r->str : "error");
        if (!msg || error) {
            PyObject *exc = msg ? PyObject_CallOneArg(error, msg) : NULL;
            Py_XDECREF(msg);
            return exc;
        }
        PyErr_SetObject(PRS_PY_EXC(st, BackendError), msg);
        Py_DECREF(msg);
        return NULL;
    }
    case REDIS_REPLY_ARRAY: {
        PyObject *list = PyList_New((Py_ssize_t)r->elements);
        if (!list) return NULL;
        for (size_t i = 0; i < r->elements; i++) {
            PyObject *item = reply_to_py(st, r->element[i], error);
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
        result = reply_to_py(st, reply, NULL);
        freeReplyObject(reply);
    }
done:
    for (Py_ssize_t i = 0; i < ntmp; i++) Py_XDECREF(tmp[i]);
    return result;
}

/* ---- RedisRateLimiter -------------------------------------------------------- */

/* limit and burst: counts the core range-checks (an int beyond int64 saturates,
 * so the core's message names it too). */
static int rl_limit(PyObject *arg, void *config) {
    return prs_py_parse_config_count(arg, "limit", &((prs_redis_limiter_config *)config)->limit);
}
static int rl_burst(PyObject *arg, void *config) {
    return prs_py_parse_config_count(arg, "burst", &((prs_redis_limiter_config *)config)->burst);
}
/* on_backend_error: a name; anything else is the core's refusal (-1). */
static int rl_policy(PyObject *arg, void *config) {
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!name && PyErr_Occurred()) return -1;
    ((prs_redis_limiter_config *)config)->on_backend_error = prs_redis_policy_from_name(name);
    return 0;
}

/* Which sizing parameters were given (the config has no "not given"): the
 * core's sizing rule, worded after the algorithm's name. */
static int sizing_rule(prs_redis_limiter_config *cfg, PyObject **v) {
    unsigned given = (is_none(v[P_RedisRateLimiter_rate]) ? 0 : PRS_REDIS_GIVEN_RATE) |
                     (is_none(v[P_RedisRateLimiter_burst]) ? 0 : PRS_REDIS_GIVEN_BURST) |
                     (is_none(v[P_RedisRateLimiter_limit]) ? 0 : PRS_REDIS_GIVEN_LIMIT) |
                     (is_none(v[P_RedisRateLimiter_window]) ? 0 : PRS_REDIS_GIVEN_WINDOW);
    prs_config_error why = {NULL, NULL};
    if (prs_redis_limiter_sizing(cfg, given, &why) == PRS_OK) return 0;
    PyErr_Format(PyExc_ValueError, "%s %s", prs_redis_algorithm_name(cfg->algorithm), why.reason);
    return -1;
}

/* lease=LeaseConfig(batch, max_hold) into the config; its attributes in b[2]. */
static int lease_args(prs_redis_limiter_config *cfg, PyObject *lease, PyObject **b) {
    b[0] = PyObject_GetAttrString(lease, "batch");
    b[1] = b[0] ? PyObject_GetAttrString(lease, "max_hold") : NULL;
    if (!b[1]) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "lease must be a LeaseConfig or None, not %.200s: %R",
                         Py_TYPE(lease)->tp_name, lease);
        }
        return -1;
    }
    double hold;
    if (prs_py_parse_config_count(b[0], "lease.batch", &cfg->lease_batch) < 0 ||
        prs_py_parse_real(b[1], "lease.max_hold", PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK, &hold) < 0)
        return -1;
    cfg->lease_max_hold_ns = prs_seconds_to_ns(hold);
    if (hold > 0 && cfg->lease_max_hold_ns < 1) cfg->lease_max_hold_ns = 1;
    return 0;
}

static PyObject *rl_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of_type(type);
    prs_redis_limiter_config cfg;
    PyObject *v[P_RedisRateLimiter__COUNT], *lease[2] = {NULL, NULL}, *result = NULL;
    prs_redis_limiter_config_init(&cfg);
    if (!st || prs_py_parse_params_tuple(&RedisRateLimiter_params, args, kwds, &cfg, v) < 0) return NULL;
    PyObject *backend = v[P_RedisRateLimiter_backend];
    if (!PyObject_TypeCheck(backend, PRS_PY_TYPE(st, RedisBackend))) {
        PyErr_Format(PyExc_TypeError, "backend must be a RedisBackend, not %.200s: %R", Py_TYPE(backend)->tp_name,
                     backend);
        return NULL;
    }
    if (sizing_rule(&cfg, v) < 0 || utf8_arg(v[P_RedisRateLimiter_key_prefix], "key_prefix", &cfg.key_prefix) < 0)
        return NULL;
    if (!is_none(v[P_RedisRateLimiter_lease]) && lease_args(&cfg, v[P_RedisRateLimiter_lease], lease) < 0) goto done;
    prs_config_error why = {NULL, NULL};
    int rc = prs_redis_limiter_config_check(&cfg, &why);
    int batch = rc && why.field && !strcmp(why.field, "lease_batch"); /* fields of the LeaseConfig */
    if (batch || (rc && why.field && !strcmp(why.field, "lease_max_hold_ns"))) {
        PyErr_Format(PyExc_ValueError, "lease.%s %s, got %R", batch ? "batch" : "max_hold", why.reason,
                     lease[batch ? 0 : 1]);
        goto done;
    }
    if (rc) { prs_py_config_error(st, rc, &why, &RedisRateLimiter_params, v, &cfg); goto done; }
    prs_redis_limiter *l;
    if ((rc = prs_redis_limiter_new(((backend_obj *)backend)->b, &cfg, &l))) { redis_error(st, rc); goto done; }
    limiter_obj *self = (limiter_obj *)type->tp_alloc(type, 0);
    if (!self) { prs_redis_limiter_free(l); goto done; }
    self->l = l;
    self->backend = Py_NewRef(backend);
    self->policy = cfg.on_backend_error;
    self->has_lease = cfg.lease_batch > 0;
    PyObject **given[] = {&self->limit, &self->window, &self->rate, &self->burst, &self->local_share, &self->lease};
    const int at[] = {P_RedisRateLimiter_limit, P_RedisRateLimiter_window, P_RedisRateLimiter_rate,
                      P_RedisRateLimiter_burst, P_RedisRateLimiter_local_share, P_RedisRateLimiter_lease};
    for (int i = 0; i < 6; i++) *given[i] = Py_XNewRef(v[at[i]]);
    self->algorithm = PyUnicode_FromString(prs_redis_algorithm_name(cfg.algorithm));
    self->key_prefix = PyUnicode_FromString(cfg.key_prefix);
    if (!self->algorithm || !self->key_prefix) { Py_DECREF(self); goto done; }
    result = (PyObject *)self;
done:
    Py_XDECREF(lease[0]);
    Py_XDECREF(lease[1]);
    return result;
}

/* One decision for key (bytes borrowed from an argument object): 0 with *d,
 * or a status with an exception set. The core applies on_backend_error.
 * consume: 1 check, 0 peek; now_us >= 0: the test time override. */
static int rl_decide(limiter_obj *self, const char *k, size_t klen, int64_t n, int consume, int64_t now_us,
                     prs_decision *d) {
    int rc;
    if (consume && self->has_lease && now_us < 0) {
        rc = prs_redis_limiter_check_local(self->l, k, klen, n, d);
        if (rc == PRS_OK) return 0;
    }
    prs_redis_limiter *l = self->l;
    Py_BEGIN_ALLOW_THREADS
    if (!consume) rc = prs_redis_limiter_peek(l, k, klen, n, d);
    else if (now_us >= 0) rc = prs_redis_limiter_check_at(l, k, klen, n, now_us, d);
    else rc = prs_redis_limiter_check(l, k, klen, n, d);
    Py_END_ALLOW_THREADS
    if (rc) redis_error(prs_py_state_of((PyObject *)self), rc);
    return rc;
}

/* The rate methods' decision (allow, check, peek, acquire: prs_py_rate_method);
 * ctx: the prs_py_rate. A request beyond the limit can never be admitted. */
static int rl_rate_decide(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d, int *by,
                          int64_t *max_n) {
    const prs_py_rate *r = ctx;
    int rc = rl_decide(r->core, r->key, r->len, n, consume, -1, d);
    if (!rc && !d->allowed && d->retry_after_ns == PRS_NEVER) *max_n = d->limit;
    return rc;
}

static int rl_target(PyObject *self, PyObject *key, prs_py_rate *r) {
    Py_ssize_t len;
    *r = (prs_py_rate){&wait_clock, rl_rate_decide, r, "Redis limiter", self, NULL, 0};
    if (bytes_of(key, "key", &r->key, &len) < 0) return -1;
    r->len = (size_t)len;
    return 0;
}

static PyObject *rl_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    prs_py_rate_args a = {1, PRS_NEVER};
    PyObject *v[3];
    prs_py_rate r;
    if (prs_py_parse_params(&RedisRateLimiter_acquire_params, args, nargs, kwnames, &a, v) < 0 ||
        rl_target(op, v[0], &r) < 0 ||
        prs_py_wait_admitted(prs_py_state_of(op), &wait_clock, r.fn, &r, r.what, a.n, a.timeout_ns, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *rl_check_at(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[3];
    prs_py_rate r;
    int64_t n, now_us;
    prs_decision d;
    if (prs_py_parse_params(&RedisRateLimiter__check_at_params, args, nargs, kwnames, NULL, v) < 0 ||
        prs_py_parse_n(v[1], "n", &n) < 0 || now_us_arg(v[2], &now_us) < 0 || rl_target(op, v[0], &r) < 0 ||
        rl_decide((limiter_obj *)op, r.key, r.len, n, 1, now_us, &d))
        return NULL;
    return prs_py_decision_new(prs_py_state_of(op), &d);
}

static PyObject *rl_reset(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1];
    if (prs_py_parse_params(&RedisRateLimiter_reset_params, args, nargs, kwnames, NULL, v) < 0) return NULL;
    const char *k;
    Py_ssize_t klen;
    if (bytes_of(v[0], "key", &k, &klen) < 0) return NULL;
    int rc;
    prs_redis_limiter *l = ((limiter_obj *)op)->l;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_limiter_reset(l, k, (size_t)klen);
    Py_END_ALLOW_THREADS
    if (rc) return redis_error(prs_py_state_of(op), rc);
    Py_RETURN_NONE;
}

/* check_many's Decisions, a list. */
static PyObject *decisions(prs_py_state *st, const prs_decision *d, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *dec = prs_py_decision_new(st, &d[i]);
        if (!dec) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, dec);
    }
    return list;
}

/* check_many's requests: (key, n) pairs or bare keys into reqs[count]. The
 * iterable is copied into a tuple and each pair into a tuple of its own (held
 * in *keep) before anything is parsed, so every key stays alive whatever an
 * n's __index__ does to the caller's lists. 0, or -1 with an exception;
 * PyMem_Free(*reqs) and Py_DECREF(*keep) after. */
static int requests_arg(PyObject *obj, PyObject **keep, prs_redis_request **reqs, Py_ssize_t *count) {
    PyObject *seq = PySequence_Tuple(obj);
    if (!seq) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "requests must be an iterable of (key, n) pairs");
        }
        return -1;
    }
    *count = PyTuple_GET_SIZE(seq);
    *keep = PyTuple_New(*count);
    *reqs = PyMem_Calloc(*count ? (size_t)*count : 1, sizeof **reqs);
    if (!*keep || !*reqs) {
        if (*keep) PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < *count; i++) { /* first hold every item: no user code runs here */
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        item = PyTuple_Check(item) || PyList_Check(item) ? PySequence_Tuple(item) : Py_NewRef(item);
        if (!item) goto fail;
        PyTuple_SET_ITEM(*keep, i, item);
    }
    for (Py_ssize_t i = 0; i < *count; i++) {
        PyObject *item = PyTuple_GET_ITEM(*keep, i), *key = item;
        int64_t n = 1;
        if (PyTuple_Check(item)) {
            if (PyTuple_GET_SIZE(item) != 2) {
                PyErr_Format(PyExc_TypeError, "requests[%zd] must be a (key, n) pair, got %R",
                             i, PyTuple_GET_ITEM(seq, i));
                goto fail;
            }
            key = PyTuple_GET_ITEM(item, 0);
            if (prs_py_parse_n(PyTuple_GET_ITEM(item, 1), "n", &n) < 0) goto fail;
        }
        const char *k;
        Py_ssize_t klen;
        if (bytes_of(key, "key", &k, &klen) < 0) goto fail;
        (*reqs)[i] = (prs_redis_request){k, (size_t)klen, n};
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    Py_CLEAR(*keep);
    PyMem_Free(*reqs);
    *reqs = NULL;
    return -1;
}

static PyObject *rl_check_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1], *keep, *result = NULL;
    prs_redis_request *reqs;
    Py_ssize_t count;
    if (prs_py_parse_params(&RedisRateLimiter_check_many_params, args, nargs, kwnames, NULL, v) < 0 ||
        requests_arg(v[0], &keep, &reqs, &count) < 0)
        return NULL;
    prs_py_state *st = prs_py_state_of(op);
    prs_decision *ds = PyMem_Calloc(count ? (size_t)count : 1, sizeof *ds);
    int *status = PyMem_Calloc(count ? (size_t)count : 1, sizeof *status);
    if (!ds || !status) { PyErr_NoMemory(); goto done; }
    int rc = PRS_OK;
    prs_redis_limiter *l = ((limiter_obj *)op)->l;
    if (count) {
        Py_BEGIN_ALLOW_THREADS /* keep holds every key */
        rc = prs_redis_limiter_check_many(l, (size_t)count, reqs, ds, status);
        Py_END_ALLOW_THREADS
    }
    if (rc) redis_error(st, rc);
    else result = decisions(st, ds, (size_t)count);
done:
    PyMem_Free(reqs);
    PyMem_Free(ds);
    PyMem_Free(status);
    Py_DECREF(keep);
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
    if (bytes_of(key, "key", &k, &klen) < 0) return NULL;
    size_t need = prs_redis_limiter_redis_key(self->l, k, (size_t)klen, NULL, 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need);
    if (!out) return NULL;
    prs_redis_limiter_redis_key(self->l, k, (size_t)klen, PyBytes_AS_STRING(out), need);
    return out;
}

/* ---- RedisLimiterGroup ---------------------------------------------------------- */

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st = prs_py_state_of_type(type);
    PyObject *members;
    if (!st || prs_py_parse_params_tuple(&RedisLimiterGroup_params, args, kwds, NULL, &members) < 0) return NULL;
    PyObject *seq = PySequence_Tuple(members); /* its items held, whatever an n's __index__ does */
    if (!seq) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "members must be a list of (limiter, key, n) tuples");
        }
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(seq);
    if (count < 1 || count > PRS_REDIS_GROUP_MAX) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a group needs 1 to %d members, got %zd", PRS_REDIS_GROUP_MAX, count);
        return NULL;
    }
    PyObject *tup = PyTuple_New(count);
    prs_redis_member *m = PyMem_Calloc((size_t)count, sizeof *m);
    if (!tup || !m) {
        if (tup && !m) PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
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
        int64_t n = 1;
        if (PyTuple_GET_SIZE(item) == 3 && prs_py_parse_n(PyTuple_GET_ITEM(item, 2), "n", &n) < 0) goto fail;
        const char *k;
        Py_ssize_t klen;
        if (bytes_of(key, "key", &k, &klen) < 0) goto fail;
        PyObject *norm = Py_BuildValue("(OOL)", lim, key, (long long)n);
        if (!norm) goto fail;
        PyTuple_SET_ITEM(tup, i, norm);
        m[i].limiter = ((limiter_obj *)lim)->l;
        m[i].key = k;
        m[i].keylen = (size_t)klen;
        m[i].n = n;
    }
    size_t bad;
    if (prs_redis_group_members_check((size_t)count, m, &bad) != PRS_OK) {
        PyErr_SetString(PyExc_ValueError, prs_redis_last_error()); /* which member, or the hash tags */
        goto fail;
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

/* The group's decision (the core applies the members' policies when Redis
 * fails): 0 with *d and *denied, or a status with an exception set. */
static int group_decide(group_obj *self, int64_t now_us, prs_decision *d, int *denied) {
    PyObject *members = Py_NewRef(self->members); /* keeps the keys alive */
    int rc;
    *denied = -1;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_group_check((size_t)self->count, self->m, now_us, d, denied);
    Py_END_ALLOW_THREADS
    Py_DECREF(members);
    if (rc) redis_error(prs_py_state_of((PyObject *)self), rc);
    return rc;
}

static PyObject *group_decision(PyObject *op, int64_t now_us, int as_bool) {
    prs_decision d;
    int denied;
    if (group_decide((group_obj *)op, now_us, &d, &denied)) return NULL;
    if (as_bool) return PyBool_FromLong(d.allowed);
    return prs_py_decision_new_by(prs_py_state_of(op), &d, d.allowed ? -1 : denied);
}


static PyObject *group_check_at(PyObject *op, PyObject *now_o) {
    int64_t now_us;
    if (now_us_arg(now_o, &now_us) < 0) return NULL;
    return group_decision(op, now_us, 0);
}

/* The wait's decide step; ctx: the group. An n beyond its member's limit can
 * never be admitted: ValueError (PRS_ENEVER) with the group's own words. */
static int group_wait_decide(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d, int *by,
                             int64_t *max_n) {
    (void)consume; /* a wait always takes (a group's decision consumes) */
    int rc = group_decide(ctx, -1, d, by);
    if (rc || d->allowed || d->retry_after_ns != PRS_NEVER) return rc;
    prs_py_error(prs_py_state_of(ctx), PRS_ENEVER, "this group can never admit its request (an n exceeds a limit)");
    return PRS_ENEVER;
}

static PyObject *group_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1];
    int64_t timeout_ns;
    if (prs_py_parse_params(&RedisLimiterGroup_acquire_params, args, nargs, kwnames, NULL, v) < 0 ||
        prs_py_parse_timeout(v[0], "timeout", &timeout_ns) < 0 ||
        prs_py_wait_admitted(prs_py_state_of(op), &wait_clock, group_wait_decide, op, "Redis group", 1,
                             timeout_ns, 1))
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the asyncio transport's ops (pyresilience._redis_async) --------------------
 * The ops of csrc/redis/prs_redis_ops.h as capsules: _op builds the commands
 * (no I/O); RedisBackend._op_step says what to send to which node; the
 * facade sends it on its asyncio connection to that node and hands each
 * reply from the connection's _RespReader to the op (put); _op_finish then
 * decides as the blocking call would (failure policy included). The
 * capsule's context holds a reference to the limiter or group, so the C
 * objects outlive the op. */

static const char OP_CAPSULE[] = "pyresilience._core.redis_op";

static void op_capsule_free(PyObject *cap) {
    prs_redis_op_free(PyCapsule_GetPointer(cap, OP_CAPSULE));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(cap));
}

/* The op as a capsule owning it (freed on error). */
static PyObject *op_result(prs_redis_op *op, PyObject *owner) {
    PyObject *cap = PyCapsule_New(op, OP_CAPSULE, op_capsule_free);
    if (!cap) { prs_redis_op_free(op); return NULL; }
    if (PyCapsule_SetContext(cap, Py_NewRef(owner)) < 0) { Py_DECREF(owner); Py_DECREF(cap); return NULL; }
    return cap;
}

static prs_redis_op *op_of(PyObject *cap) {
    prs_redis_op *op = PyCapsule_GetPointer(cap, OP_CAPSULE);
    if (!op) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "op must be a Redis op, not %.200s", Py_TYPE(cap)->tp_name);
    }
    return op;
}

static PyObject *rl_op(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[4];
    op_args a = {0, 1};
    int64_t now_us = -1;
    const char *key;
    Py_ssize_t klen;
    if (prs_py_parse_params(&RedisRateLimiter__op_params, args, nargs, kwnames, &a, v) < 0 ||
        (!is_none(v[3]) && now_us_arg(v[3], &now_us) < 0) || bytes_of(v[1], "key", &key, &klen) < 0)
        return NULL;
    prs_redis_op *o = NULL;
    prs_decision d;
    int rc = prs_redis_op_limiter_new(((limiter_obj *)op)->l, "cpr"[a.kind], key, (size_t)klen, a.n, now_us, &o, &d);
    if (rc) return redis_error(prs_py_state_of(op), rc);
    return o ? op_result(o, op) : prs_py_decision_new(prs_py_state_of(op), &d);
}

static PyObject *rl_op_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1], *keep, *result = NULL;
    prs_redis_request *reqs;
    Py_ssize_t count;
    if (prs_py_parse_params(&RedisRateLimiter__op_many_params, args, nargs, kwnames, NULL, v) < 0 ||
        requests_arg(v[0], &keep, &reqs, &count) < 0)
        return NULL;
    prs_redis_op *o;
    int rc = count ? prs_redis_op_many_new(((limiter_obj *)op)->l, (size_t)count, reqs, &o) : PRS_OK;
    if (!count) result = PyList_New(0); /* keys copied by the op */
    else if (rc) redis_error(prs_py_state_of(op), rc);
    else result = op_result(o, op);
    PyMem_Free(reqs);
    Py_DECREF(keep);
    return result;
}

static PyObject *rl_op_release(PyObject *op, PyObject *unused) {
    prs_redis_op *o;
    int rc = prs_redis_op_release_new(((limiter_obj *)op)->l, &o);
    if (rc) return redis_error(prs_py_state_of(op), rc);
    if (!o) Py_RETURN_NONE;
    return op_result(o, op);
}

static PyObject *group_op(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1];
    int64_t now_us = -1;
    if (prs_py_parse_params(&RedisLimiterGroup__op_params, args, nargs, kwnames, NULL, v) < 0 ||
        (!is_none(v[0]) && now_us_arg(v[0], &now_us) < 0))
        return NULL;
    group_obj *self = (group_obj *)op;
    prs_redis_op *o;
    int rc = prs_redis_op_group_new((size_t)self->count, self->m, now_us, &o);
    if (rc) return redis_error(prs_py_state_of(op), rc);
    return op_result(o, op);
}

/* The op's next step: a tuple of (node, bytes, replies) sends; () when done. */
static PyObject *backend_op_step(PyObject *self, PyObject *cap) {
    prs_redis_op *op = op_of(cap);
    const prs_redis_send *sends;
    size_t count;
    int rc = op ? prs_redis_op_step(op, &sends, &count) : PRS_EINVAL;
    if (!op) return NULL;
    if (rc) return redis_error(prs_py_state_of(self), rc);
    PyObject *out = PyTuple_New((Py_ssize_t)count);
    for (size_t i = 0; out && i < count; i++) {
        PyObject *one = Py_BuildValue("(iy#n)", sends[i].node, sends[i].buf, (Py_ssize_t)sends[i].len,
                                      (Py_ssize_t)sends[i].nreplies);
        if (!one) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, (Py_ssize_t)i, one);
    }
    return out;
}

/* A transport failure's declared (status, message): its status; the message
 * becomes this thread's last error (the policy's BackendError says it). */
static int transport_failure(const transport_args *a, PyObject *message) {
    static const int status[] = {PRS_OK, PRS_ECONN, PRS_ETIMEDOUT, PRS_EPROTO, PRS_EBACKEND, PRS_EBACKENDCLOSED};
    const char *msg = message ? PyUnicode_AsUTF8(message) : NULL;
    if (msg) prs_redis_set_last_error(msg);
    else PyErr_Clear();
    return status[a->status];
}

static PyObject *backend_op_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[3];
    transport_args a = {0, 0};
    if (prs_py_parse_params(&RedisBackend__op_finish_params, args, nargs, kwnames, &a, v) < 0) return NULL;
    prs_redis_op *op = op_of(v[0]);
    if (!op) return NULL;
    int rc = transport_failure(&a, v[2]);
    prs_py_state *st = prs_py_state_of(self);
    size_t n = prs_redis_op_decisions(op);
    prs_decision *d = PyMem_Calloc(n, sizeof *d);
    int *status = PyMem_Calloc(n, sizeof *status);
    PyObject *result = NULL;
    int denied = -1;
    if (!d || !status) PyErr_NoMemory();
    else if ((rc = prs_redis_op_finish(op, rc, NULL, d, status, &denied))) redis_error(st, rc);
    else if (prs_redis_op_kind(op) == 'g') result = prs_py_decision_new_by(st, &d[0], d[0].allowed ? -1 : denied);
    else if (prs_redis_op_kind(op) == 'r' || prs_redis_op_kind(op) == 'h') result = Py_NewRef(Py_None);
    else result = prs_redis_op_kind(op) == 'm' ? decisions(st, d, n) : prs_py_decision_new(st, &d[0]);
    PyMem_Free(d);
    PyMem_Free(status);
    return result;
}

static PyObject *opt_str(const char *s) { return s ? PyUnicode_FromString(s) : Py_NewRef(Py_None); }

static PyObject *backend_endpoint(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[1];
    if (prs_py_parse_params(&RedisBackend__endpoint_params, args, nargs, kwnames, NULL, v) < 0) return NULL;
    int node = v[0] ? PyLong_AsLong(v[0]) : 0;
    const char *host;
    prs_redis_backend *b = ((backend_obj *)self)->b;
    if (node == -1 && PyErr_Occurred()) return NULL;
    if (prs_redis_backend_node(b, node, &host, &node) == PRS_OK) /* a Cluster's or Sentinel's node */
        return Py_BuildValue("(siOOOi)", host, node, Py_None, Py_None, Py_None, 0);
    const prs_redis_url *u = prs_redis_backend_url(b);
    return Py_BuildValue("(NiNNNL)", opt_str(u->is_unix ? NULL : u->host), u->port, opt_str(u->path),
                         opt_str(u->user), opt_str(u->password), (long long)u->db);
}

static PyObject *backend_admit(PyObject *self, PyObject *unused) {
    int admit;
    int rc = prs_redis_backend_admit(((backend_obj *)self)->b, &admit);
    if (rc == PRS_OK) return Py_BuildValue("(i(ss))", admit, "OK", "");
    return Py_BuildValue("(i(ss))", 0, prs_err_name(rc) + 4, prs_redis_last_error()); /* "EBACKEND"... */
}

/* ---- _RespReader: a connection's replies, parsed by csrc/redis ------------------ */

static PyObject *reader_feed(PyObject *self, PyObject *data) {
    if (!PyBytes_Check(data))
        return PyErr_Format(PyExc_TypeError, "data must be bytes, not %.200s", Py_TYPE(data)->tp_name);
    int rc = prs_redis_reader_feed(((reader_obj *)self)->r, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    if (rc) return redis_error(prs_py_state_of(self), rc);
    Py_RETURN_NONE;
}

/* The next whole reply (NULL: none yet), or -1 with an exception. */
static int reader_next(PyObject *self, redisReply **r) {
    int rc = prs_redis_reader_next(((reader_obj *)self)->r, r);
    if (rc) redis_error(prs_py_state_of(self), rc);
    return rc ? -1 : 0;
}

static PyObject *reader_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *v[2];
    redisReply *r;
    if (prs_py_parse_params(&_RespReader_put_params, args, nargs, kwnames, NULL, v) < 0) return NULL;
    prs_redis_op *op = op_of(v[0]);
    Py_ssize_t send = op ? PyLong_AsSsize_t(v[1]) : -1;
    if (!op || (send == -1 && PyErr_Occurred()) || reader_next(self, &r) < 0) return NULL;
    if (!r) return PyLong_FromLong(0);
    int done = prs_redis_op_put(op, (size_t)send, r);
    if (done < 0) return PyErr_Format(PyExc_ValueError, "send %zd of this op expects no reply", send);
    return PyLong_FromLong(1 + done);
}

static PyObject *reader_pop(PyObject *self, PyObject *dflt) {
    redisReply *r;
    if (reader_next(self, &r) < 0) return NULL;
    if (!r) return Py_NewRef(dflt);
    PyObject *out = reply_to_py(prs_py_state_of(self), r, ((reader_obj *)self)->error);
    freeReplyObject(r);
    return out;
}

/* The async waits: the binding's rate wait (the same steps and errors as
 * acquire()) fed with the decisions the facade got from its asyncio
 * transport. ctx: a (owner, cell) tuple; each step pops a Decision that the
 * facade appended to cell (a list) before calling step(). */
static int fed_decide(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d, int *by, int64_t *max_n) {
    PyObject *cell = PyTuple_GET_ITEM((PyObject *)ctx, 1), *owner = PyTuple_GET_ITEM((PyObject *)ctx, 0);
    prs_py_state *st = prs_py_state_of(owner);
    Py_ssize_t len = PyList_GET_SIZE(cell);
    PyObject *dec = len ? PyList_GET_ITEM(cell, len - 1) : NULL;
    if (!dec || !PyObject_TypeCheck(dec, PRS_PY_TYPE(st, Decision))) {
        PyErr_SetString(PyExc_RuntimeError, "_async_waiter: step() needs a Decision in its cell");
        return PRS_EINVAL;
    }
    prs_py_decision *pd = (prs_py_decision *)dec;
    *d = pd->d;
    *by = PyLong_Check(pd->denied_by) ? (int)PyLong_AsLong(pd->denied_by) : -1;
    if (PyList_SetSlice(cell, 0, len, NULL) < 0) return PRS_ENOMEM;
    if (d->allowed || d->retry_after_ns != PRS_NEVER) return PRS_OK;
    if (PyObject_TypeCheck(owner, PRS_PY_TYPE(st, RedisLimiterGroup))) {
        prs_py_error(st, PRS_ENEVER, "this group can never admit its request (an n exceeds a limit)");
        return PRS_ENEVER;
    }
    *max_n = d->limit;
    return PRS_OK;
}

static PyObject *fed_waiter(PyObject *owner, const char *what, int64_t n, int64_t timeout_ns) {
    PyObject *cell = PyList_New(0), *ctx = cell ? PyTuple_Pack(2, owner, cell) : NULL, *out = NULL;
    if (ctx) {
        PyObject *w = prs_py_rate_wait_new(prs_py_state_of(owner), ctx, &wait_clock, fed_decide, ctx, what, n,
                                           timeout_ns);
        if (w) out = PyTuple_Pack(2, w, cell);
        Py_XDECREF(w);
    }
    Py_XDECREF(cell);
    Py_XDECREF(ctx);
    return out;
}

int prs_py_register_redis(PyObject *m, prs_py_state *st) {
    return redis_add_types(m, st);
}

#else /* !PRS_HAVE_HIREDIS */

/* Built without hiredis: no Redis types (pyresilience.redis explains how to
 * get them). */
int prs_py_register_redis(PyObject *m, prs_py_state *st) { return 0; }

#endif /* PRS_HAVE_HIREDIS */
