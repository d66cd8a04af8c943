/*
 * redis.c - the Redis types of pyresilience._core over csrc/redis (hiredis):
 * RedisBackend, RedisRateLimiter, RedisLimiterGroup, and the asyncio
 * transport's _RespReader. Declared in tools/decl_redis.py (gen/redis.h).
 *
 * The core validates (prs_py_config_error words a refusal with the value
 * given), decides, and applies each limiter's on_backend_error policy when
 * Redis fails - including the 'local' fallback. A status becomes an
 * exception through prs_py_error(), with prs_redis_last_error()'s message
 * when there is one. allow/check/peek are the shared rate methods
 * (prs_py_rate_method over rl_target); acquire() is the binding's rate wait
 * (prs_py_wait_admitted), a step being a round trip; acquire_async feeds it
 * the Decisions its asyncio checks got (_async_waiter). Every other call is
 * an op (see "the calls as ops").
 *
 * Every network call runs with the GIL released (the C backend never touches
 * Python objects; a rate method's key belongs to its argument, alive across
 * the call; an op copies its keys). Objects are built whole in tp_new.
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

typedef struct {
    PyObject_HEAD
    prs_redis_limiter *l;
    PyObject *backend;    /* strong: the RedisBackend (keeps the C backend alive) */
    PyObject *algorithm, *key_prefix; /* str */
    PyObject *limit, *window, *rate, *burst, *local_share, *lease; /* as given, or None */
    int policy;           /* prs_redis_policy */
    int has_lease;
    PyObject *weakreflist;
} limiter_obj;
static int rl_build(limiter_obj *o, prs_py_state *st, prs_redis_limiter_config *cfg, PyObject **v);

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

enum { GROUP_CHECK, GROUP_ALLOW, GROUP_OP };

typedef struct transport_args {
    int64_t admit;
    int status; /* index in the declared choices: OK, ECONN, ETIMEDOUT, EPROTO, EBACKEND, EBACKENDCLOSED */
} transport_args;

typedef struct op_args {
    int kind; /* check, peek, reset */
    int64_t n;
} op_args;

typedef struct clock_args {
    int64_t sent_us, got_us, server_us;
} clock_args;

static int is_none(PyObject *o) { return !o || o == Py_None; }

/* The monotonic clock of the Redis waits (time itself is Redis's). */
static prs_py_clock wait_clock = {PRS_CLOCK_MONOTONIC, NULL, NULL};

/* A status of the Redis library as an exception, with the backend's message
 * for this thread's last failure when there is one. */
static PyObject *redis_error(prs_py_state *st, int rc) {
    const char *msg = prs_redis_last_error();
    return prs_py_error(st, rc, msg && *msg ? msg : NULL);
}

/* A wait's decision that no wait can end (denied, retry_after never): for
 * a limiter its limit, in *max_n (the wait words it); for a group,
 * ValueError (PRS_ENEVER) in the group's own words. */
static int never_admitted(PyObject *owner, const prs_decision *d, int64_t *max_n) {
    if (d->allowed || d->retry_after_ns != PRS_NEVER) return PRS_OK;
    prs_py_state *st = prs_py_state_of(owner);
    if (!PyObject_TypeCheck(owner, PRS_PY_TYPE(st, RedisLimiterGroup))) {
        *max_n = d->limit;
        return PRS_OK;
    }
    prs_py_error(st, PRS_ENEVER, "this group can never admit its request (an n exceeds a limit)");
    return PRS_ENEVER;
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
    int rc = prs_redis_backend_new(cfg, &o->b);
    if (rc) {
        redis_error(prs_py_state_of((PyObject *)o), rc); /* a bad URL: the message hides the password */
        return -1;
    }
    o->url = url ? Py_NewRef(url) : PyUnicode_FromString(cfg->url);
    o->cfg = *cfg;
    o->cfg.url = NULL; /* the url object's */
    return o->url ? 0 : -1;
}

/* close() and ping(): a call on the pool. */
static PyObject *backend_call(PyObject *self, int ping) {
    prs_redis_backend *b = ((backend_obj *)self)->b;
    int rc = PRS_OK;
    Py_BEGIN_ALLOW_THREADS
    if (ping) rc = prs_redis_ping(b);
    else prs_redis_backend_close(b);
    Py_END_ALLOW_THREADS
    if (rc) return redis_error(prs_py_state_of(self), rc);
    return Py_NewRef(ping ? Py_True : Py_None);
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
        PyObject *msg = PyUnicode_FromFormat(error ? "%s" : "redis: %.400s", r->str ? r->str : "error");
        PyObject *exc = msg && error ? PyObject_CallOneArg(error, msg) : NULL;
        if (msg && !error) PyErr_SetObject(PRS_PY_EXC(st, BackendError), msg);
        Py_XDECREF(msg);
        return exc;
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

static PyObject *backend_command(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    prs_py_state *st = prs_py_state_of(self);
    const char *argv[64];
    size_t lens[64];
    if (nargs < 1 || nargs > 64)
        return PyErr_Format(PyExc_TypeError, "_command() takes 1 to 64 str/bytes/int arguments");
    PyObject *keep = PyTuple_New(nargs), *result = NULL; /* the arguments, an int as its str */
    for (Py_ssize_t i = 0; keep && i < nargs; i++) {
        PyObject *a = PyLong_Check(args[i]) && !PyBool_Check(args[i]) ? PyObject_Str(args[i]) : Py_NewRef(args[i]);
        prs_py_bytes b;
        if (a) PyTuple_SET_ITEM(keep, i, a);
        if (!a || prs_py_str_or_bytes(a, "argument", &b) < 0) {
            Py_CLEAR(keep);
        } else {
            argv[i] = b.p;
            lens[i] = b.n;
        }
    }
    if (!keep) return NULL;
    void *reply = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_redis_command_reply(((backend_obj *)self)->b, (int)nargs, argv, lens, &reply);
    Py_END_ALLOW_THREADS
    if (rc) redis_error(st, rc);
    else result = reply_to_py(st, reply, NULL);
    freeReplyObject(reply);
    Py_DECREF(keep);
    return result;
}

/* ---- RedisRateLimiter -------------------------------------------------------- */

/* on_backend_error: a name; anything else is the core's refusal (-1). */
static int rl_policy(PyObject *arg, void *config) {
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!name && PyErr_Occurred()) return -1;
    ((prs_redis_limiter_config *)config)->on_backend_error = prs_redis_policy_from_name(name);
    return 0;
}

/* lease=LeaseConfig(batch, max_hold): its two attributes into the config. */
static int rl_lease(PyObject *lease, void *config) {
    prs_redis_limiter_config *cfg = config;
    PyObject *b[2] = {PyObject_GetAttrString(lease, "batch"), NULL};
    double hold;
    int rc = -1;
    if (b[0] && (b[1] = PyObject_GetAttrString(lease, "max_hold"))) {
        if (prs_py_parse_config_count(b[0], "lease.batch", &cfg->lease_batch) == 0 &&
            prs_py_parse_real(b[1], "lease.max_hold", PRS_PY_ZERO_OK | PRS_PY_NEG_OK | PRS_PY_INF_OK, &hold) == 0) {
            cfg->lease_max_hold_ns = prs_seconds_to_ns(hold);
            if (hold > 0 && cfg->lease_max_hold_ns < 1) cfg->lease_max_hold_ns = 1;
            rc = 0;
        }
    } else if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        prs_py_type_error("lease", "a LeaseConfig or None", lease);
    }
    Py_XDECREF(b[0]);
    Py_XDECREF(b[1]);
    return rc;
}

/* The rate methods' decision (allow, check, peek, acquire: prs_py_rate_method);
 * ctx: the prs_py_rate. The core applies on_backend_error; a leased check
 * served locally never releases the GIL. A request beyond the limit can
 * never be admitted. */
static int rl_rate_decide(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d, int *by,
                          int64_t *max_n) {
    const prs_py_rate *r = ctx;
    limiter_obj *o = r->core;
    int rc = consume && o->has_lease ? prs_redis_limiter_check_local(o->l, r->key, r->len, n, d) : PRS_EAGAIN;
    if (rc != PRS_OK) {
        Py_BEGIN_ALLOW_THREADS
        rc = prs_redis_limiter_call(o->l, consume ? PRS_REDIS_OP_CHECK : PRS_REDIS_OP_PEEK, r->key, r->len, n, -1, d);
        Py_END_ALLOW_THREADS
    }
    if (rc) redis_error(prs_py_state_of(r->core), rc);
    return rc ? rc : never_admitted(r->core, d, max_n);
}

static int rl_target(PyObject *self, PyObject *key, prs_py_rate *r) {
    prs_py_bytes k;
    if (prs_py_str_or_bytes(key, "key", &k) < 0) return -1;
    *r = (prs_py_rate){&wait_clock, rl_rate_decide, r, "Redis limiter", self, k.p, k.n};
    return 0;
}

/* ---- the calls as ops (csrc/redis/prs_redis_ops.h) ----------------------------
 * Every call but the rate methods' builds its op (no I/O) and either runs it
 * on the backend's pool (prs_redis_op_run, the GIL released) or hands it to
 * the asyncio transport as a capsule (_op, _op_many, _op_release, a group's
 * _op), which steps it (_op_step), puts each reply its _RespReader parsed
 * into it (put) and finishes it (_op_finish): both decide alike, failure
 * policy included. The capsule's context holds a reference to the limiter
 * or group, so the C objects outlive the op. */

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
        prs_py_type_error("op", "a Redis op", cap);
    }
    return op;
}

/* What a call of an op's kind returns, from its decisions: a Decision (a
 * group's names the member that denied), check_many's list of them, or
 * None (reset, the leases' give-back). */
static PyObject *op_value(prs_py_state *st, int kind, const prs_decision *d, size_t n, int denied) {
    if (kind == 'g') return prs_py_decision_new_by(st, &d[0], d[0].allowed ? -1 : denied);
    if (kind == PRS_REDIS_OP_RESET || kind == 'h') return Py_NewRef(Py_None);
    if (kind != 'm') return prs_py_decision_new(st, &d[0]);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *dec = prs_py_decision_new(st, &d[i]);
        if (!dec) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, dec);
    }
    return list;
}

/* What the call made by op returns (op_value): op finished with the replies
 * its transport put into it or that transport's failure rc; with rc RUN,
 * run on the backend's pool first, the GIL released. */
#define RUN INT_MIN
static PyObject *op_returns(PyObject *self, prs_redis_op *op, int rc) {
    size_t n = prs_redis_op_decisions(op); /* >= 1: room for n decisions and their statuses */
    prs_decision *d = PyMem_Calloc(n, sizeof *d + sizeof(int));
    int denied = -1;
    if (!d) return PyErr_NoMemory();
    if (rc == RUN) {
        Py_BEGIN_ALLOW_THREADS
        rc = prs_redis_op_run(op, d, (int *)(d + n), &denied);
        Py_END_ALLOW_THREADS
    } else {
        rc = prs_redis_op_finish(op, rc, NULL, d, (int *)(d + n), &denied);
    }
    PyObject *result = rc ? redis_error(prs_py_state_of(self), rc)
                          : op_value(prs_py_state_of(self), prs_redis_op_kind(op), d, n, denied);
    PyMem_Free(d);
    return result;
}

/* A call built as *op by a builder whose status is rc (the builder may be
 * called in the arguments: *op is read here): the op itself (as_op, for the
 * asyncio transport), or what running it on the pool returns. */
static PyObject *op_call(PyObject *self, int rc, prs_redis_op **op, int as_op) {
    if (rc) return redis_error(prs_py_state_of(self), rc);
    if (as_op) return op_result(*op, self);
    PyObject *result = op_returns(self, *op, RUN);
    prs_redis_op_free(*op);
    return result;
}

/* reset, _check_at (now: seconds, or NULL) and _op (as_op: the op, or the
 * Decision a lease gave): one call of an op's kind for key. */
static PyObject *rl_call(PyObject *self, int kind, PyObject *key, int64_t n, PyObject *now, int as_op) {
    int64_t now_us = -1;
    prs_py_bytes k;
    prs_redis_op *op;
    prs_decision d;
    if ((now && now_us_arg(now, &now_us) < 0) || prs_py_str_or_bytes(key, "key", &k) < 0) return NULL;
    int rc = prs_redis_op_limiter_new(((limiter_obj *)self)->l, kind, k.p, k.n, n, now_us, &op, &d);
    if (rc == PRS_OK && !op) return op_value(prs_py_state_of(self), kind, &d, 1, -1); /* a lease decided */
    return op_call(self, rc, &op, as_op);
}

/* A group's members, (limiter, key[, n]) tuples (group), or check_many's
 * requests, (key, n) pairs or bare keys (n = 1), into m[count] (limiter
 * NULL for requests). The iterable is copied into a tuple, and each item
 * into a tuple held in *keep (a group's become (limiter, key, n)) before
 * its n is parsed, so its key stays alive whatever an n's __index__ does to
 * the caller's lists. 0, or -1 with an exception; PyMem_Free(*m) and
 * Py_DECREF(*keep) after. */
static int items_arg(prs_py_state *st, PyObject *obj, int group, PyObject **keep, prs_redis_member **m,
                     Py_ssize_t *count) {
    PyObject *seq = PySequence_Tuple(obj);
    *m = NULL;
    *keep = NULL;
    if (!seq) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, group ? "members must be a list of (limiter, key, n) tuples"
                                                   : "requests must be an iterable of (key, n) pairs");
        }
        return -1;
    }
    *count = PyTuple_GET_SIZE(seq);
    if (group && (*count < 1 || *count > PRS_REDIS_GROUP_MAX)) {
        PyErr_Format(PyExc_ValueError, "a group needs 1 to %d members, got %zd", PRS_REDIS_GROUP_MAX, *count);
        goto fail;
    }
    *keep = PyTuple_New(*count);
    *m = PyMem_Calloc(*count ? (size_t)*count : 1, sizeof **m);
    if (!*keep || !*m) {
        if (*keep) PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < *count; i++) {
        PyObject *given = PyTuple_GET_ITEM(seq, i), *lim = NULL;
        PyObject *item = PyTuple_Check(given) || PyList_Check(given) ? PySequence_Tuple(given) : Py_NewRef(given);
        if (!item) goto fail;
        PyTuple_SET_ITEM(*keep, i, item);
        Py_ssize_t size = PyTuple_Check(item) ? PyTuple_GET_SIZE(item) : -1;
        if (group ? !PyTuple_Check(given) || (size != 2 && size != 3) : size != -1 && size != 2) {
            PyErr_Format(PyExc_TypeError, group ? "members[%zd] must be a (limiter, key, n) tuple, got %R"
                                                : "requests[%zd] must be a (key, n) pair, got %R", i, given);
            goto fail;
        }
        if (group && !PyObject_TypeCheck(lim = PyTuple_GET_ITEM(item, 0), PRS_PY_TYPE(st, RedisRateLimiter))) {
            PyErr_Format(PyExc_TypeError, "members[%zd][0] must be a RedisRateLimiter, not %.200s", i,
                         Py_TYPE(lim)->tp_name);
            goto fail;
        }
        PyObject *key = size < 0 ? item : PyTuple_GET_ITEM(item, group);
        int64_t n = 1;
        prs_py_bytes k;
        if ((size == group + 2 && prs_py_parse_n(PyTuple_GET_ITEM(item, group + 1), "n", &n) < 0) ||
            prs_py_str_or_bytes(key, "key", &k) < 0)
            goto fail;
        (*m)[i] = (prs_redis_member){lim ? ((limiter_obj *)lim)->l : NULL, k.p, k.n, n};
        if (group) { /* the member as a (limiter, key, n) tuple, which holds the key */
            PyObject *norm = Py_BuildValue("(OOL)", lim, key, (long long)n);
            if (!norm) goto fail;
            PyTuple_SET_ITEM(*keep, i, norm);
            Py_DECREF(item);
        }
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    Py_CLEAR(*keep);
    PyMem_Free(*m);
    *m = NULL;
    return -1;
}

/* check_many (blocking) or its op (_op_many: [] for no requests). */
static PyObject *rl_many(PyObject *self, PyObject *requests, int as_op) {
    PyObject *keep, *result;
    prs_redis_member *m;
    prs_redis_op *op = NULL;
    Py_ssize_t count;
    if (items_arg(prs_py_state_of(self), requests, 0, &keep, &m, &count) < 0) return NULL;
    prs_redis_request *reqs = PyMem_Calloc(count ? (size_t)count : 1, sizeof *reqs);
    for (Py_ssize_t i = 0; reqs && i < count; i++) reqs[i] = (prs_redis_request){m[i].key, m[i].keylen, m[i].n};
    if (!reqs) result = PyErr_NoMemory();
    else if (!count) result = PyList_New(0);
    else result = op_call(self, prs_redis_op_many_new(((limiter_obj *)self)->l, (size_t)count, reqs, &op), &op, as_op);
    PyMem_Free(reqs);
    PyMem_Free(m);
    Py_DECREF(keep);
    return result;
}

/* close() (blocking) or its op (_op_release: None when no lease holds a permit). */
static PyObject *rl_release(PyObject *self, int as_op) {
    prs_redis_op *op;
    int rc = prs_redis_op_release_new(((limiter_obj *)self)->l, &op);
    return rc == PRS_OK && !op ? Py_NewRef(Py_None) : op_call(self, rc, &op, as_op);
}

static PyObject *rl_redis_key(PyObject *op, PyObject *key) {
    limiter_obj *self = (limiter_obj *)op;
    prs_py_bytes k;
    if (prs_py_str_or_bytes(key, "key", &k) < 0) return NULL;
    size_t need = prs_redis_limiter_redis_key(self->l, k.p, k.n, NULL, 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need);
    if (!out) return NULL;
    prs_redis_limiter_redis_key(self->l, k.p, k.n, PyBytes_AS_STRING(out), need);
    return out;
}

/* ---- RedisLimiterGroup ---------------------------------------------------------- */

/* tp_new's last step: the members, held as (limiter, key, n) tuples. */
static int group_build(group_obj *o, prs_py_state *st, PyObject *members) {
    size_t bad;
    if (items_arg(st, members, 1, &o->members, &o->m, &o->count) < 0) return -1;
    if (prs_redis_group_members_check((size_t)o->count, o->m, &bad) == PRS_OK) return 0;
    PyErr_SetString(PyExc_ValueError, prs_redis_last_error()); /* which member, or the hash tags */
    return -1;
}

/* check (a Decision), allow (a bool), _check_at and _op (the op): now in
 * seconds, NULL for Redis's time. The core applies the members' policies
 * when Redis fails. */
static PyObject *group_call(PyObject *self, PyObject *now, int how) {
    group_obj *o = (group_obj *)self;
    int64_t now_us = -1;
    prs_redis_op *op = NULL;
    if (now && now_us_arg(now, &now_us) < 0) return NULL;
    PyObject *result = op_call(self, prs_redis_op_group_new((size_t)o->count, o->m, now_us, &op), &op,
                               how == GROUP_OP);
    if (how != GROUP_ALLOW || !result) return result;
    PyObject *allowed = PyBool_FromLong(((prs_py_decision *)result)->d.allowed);
    Py_DECREF(result);
    return allowed;
}

/* A Decision object's decision and denied_by (-1: none) into *d, *by. */
static void decision_of(PyObject *dec, prs_decision *d, int *by) {
    prs_py_decision *pd = (prs_py_decision *)dec;
    *d = pd->d;
    *by = pd->denied_by;
}

/* The wait's decide step; ctx: the group (a wait always takes: a group's
 * decision consumes). */
static int group_wait_decide(void *ctx, int64_t now, int64_t n, int consume, prs_decision *d, int *by,
                             int64_t *max_n) {
    PyObject *dec = group_call(ctx, NULL, GROUP_CHECK);
    if (!dec) return PRS_EBACKEND; /* its exception says why */
    decision_of(dec, d, by);
    Py_DECREF(dec);
    return never_admitted(ctx, d, max_n);
}

/* acquire() of a limiter's key (a group's: key NULL): the binding's rate
 * wait, each step a round trip, so it sleeps a step's whole delay before
 * deciding again. Nothing is taken unless admitted. */
static PyObject *acquired(PyObject *self, PyObject *key, int64_t n, int64_t timeout_ns) {
    prs_py_rate r = {&wait_clock, group_wait_decide, self, "Redis group", NULL, NULL, 0};
    if ((key && rl_target(self, key, &r) < 0) ||
        prs_py_wait_admitted(prs_py_state_of(self), &wait_clock, r.fn, r.ctx, r.what, n, timeout_ns, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the asyncio transport (pyresilience._redis_async) ------------------------- */

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

/* _op_finish: op finished with the replies put into it, or with the
 * transport's failure (rc), which the policy decides. */
static PyObject *op_finish(PyObject *self, PyObject *cap, int rc) {
    prs_redis_op *op = op_of(cap);
    return op ? op_returns(self, op, rc) : NULL;
}

static PyObject *opt_str(const char *s) { return s ? PyUnicode_FromString(s) : Py_NewRef(Py_None); }

/* _endpoint: the parsed url, or a Cluster's or Sentinel's node. */
static PyObject *backend_node_endpoint(PyObject *self, PyObject *nodeo) {
    int node = nodeo ? PyLong_AsLong(nodeo) : 0;
    const char *host;
    prs_redis_backend *b = ((backend_obj *)self)->b;
    if (node == -1 && PyErr_Occurred()) return NULL;
    if (prs_redis_backend_node(b, node, &host, &node) == PRS_OK)
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

/* put: the next whole reply handed to op as a reply of its send `send`. */
static PyObject *reader_put_reply(PyObject *self, PyObject *opo, PyObject *sendo) {
    redisReply *r;
    prs_redis_op *op = op_of(opo);
    Py_ssize_t send = op ? PyLong_AsSsize_t(sendo) : -1;
    if (!op || (send == -1 && PyErr_Occurred())) return NULL;
    int rc = prs_redis_reader_next(((reader_obj *)self)->r, &r);
    if (rc || !r) return rc ? redis_error(prs_py_state_of(self), rc) : PyLong_FromLong(0);
    int done = prs_redis_op_put(op, (size_t)send, r);
    if (done < 0) return PyErr_Format(PyExc_ValueError, "send %zd of this op expects no reply", send);
    return PyLong_FromLong(1 + done);
}

static PyObject *reader_pop(PyObject *self, PyObject *dflt) {
    redisReply *r;
    int rc = prs_redis_reader_next(((reader_obj *)self)->r, &r);
    if (rc || !r) return rc ? redis_error(prs_py_state_of(self), rc) : Py_NewRef(dflt);
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
    decision_of(dec, d, by);
    if (PyList_SetSlice(cell, 0, len, NULL) < 0) return PRS_ENOMEM;
    return never_admitted(owner, d, max_n);
}

static PyObject *fed_waiter(PyObject *owner, const char *what, int64_t n, int64_t timeout_ns) {
    PyObject *cell = PyList_New(0), *ctx = cell ? PyTuple_Pack(2, owner, cell) : NULL, *out = NULL;
    if (ctx) /* (the wait, cell); N: the wait's one reference */
        out = Py_BuildValue("(NO)", prs_py_rate_wait_new(prs_py_state_of(owner), ctx, &wait_clock, fed_decide,
                                                         ctx, what, n, timeout_ns), cell);
    Py_XDECREF(cell);
    Py_XDECREF(ctx);
    return out;
}

#include "gen/redis.h"

/* ---- over the declared parameter tables (gen/redis.h) ---------------------- */

/* tp_new's last step (the declared one parses cfg and keeps the arguments
 * as given): the core's sizing rule (which sizing parameters were given: the
 * config has no "not given"), worded after the algorithm's name; the core's
 * check (a LeaseConfig's field named as lease.<attribute>); the limiter. */
static int rl_build(limiter_obj *o, prs_py_state *st, prs_redis_limiter_config *cfg, PyObject **v) {
    unsigned given = (is_none(v[P_RedisRateLimiter_rate]) ? 0 : PRS_REDIS_GIVEN_RATE) |
                     (is_none(v[P_RedisRateLimiter_burst]) ? 0 : PRS_REDIS_GIVEN_BURST) |
                     (is_none(v[P_RedisRateLimiter_limit]) ? 0 : PRS_REDIS_GIVEN_LIMIT) |
                     (is_none(v[P_RedisRateLimiter_window]) ? 0 : PRS_REDIS_GIVEN_WINDOW);
    prs_config_error why = {NULL, NULL};
    if (prs_redis_limiter_sizing(cfg, given, &why) != PRS_OK) {
        PyErr_Format(PyExc_ValueError, "%s %s", prs_redis_algorithm_name(cfg->algorithm), why.reason);
        return -1;
    }
    int rc = prs_redis_limiter_config_check(cfg, &why);
    const char *attr = !rc || !why.field ? NULL : !strcmp(why.field, "lease_batch") ? "batch"
                     : !strcmp(why.field, "lease_max_hold_ns") ? "max_hold" : NULL;
    PyObject *value = attr ? PyObject_GetAttrString(v[P_RedisRateLimiter_lease], attr) : NULL;
    if (value) PyErr_Format(PyExc_ValueError, "lease.%s %s, got %R", attr, why.reason, value);
    else if (rc && !attr) prs_py_config_error(st, rc, &why, &RedisRateLimiter_params, v, cfg);
    Py_XDECREF(value);
    if (rc) return -1;
    if ((rc = prs_redis_limiter_new(((backend_obj *)o->backend)->b, cfg, &o->l))) {
        redis_error(st, rc);
        return -1;
    }
    o->policy = cfg->on_backend_error;
    o->has_lease = cfg->lease_batch > 0;
    o->algorithm = PyUnicode_FromString(prs_redis_algorithm_name(cfg->algorithm));
    o->key_prefix = PyUnicode_FromString(cfg->key_prefix);
    return o->algorithm && o->key_prefix ? 0 : -1;
}

int prs_py_register_redis(PyObject *m, prs_py_state *st) {
    return redis_add_types(m, st);
}

#else /* !PRS_HAVE_HIREDIS */

int prs_py_register_redis(PyObject *m, prs_py_state *st) { return 0; }

#endif /* PRS_HAVE_HIREDIS */
