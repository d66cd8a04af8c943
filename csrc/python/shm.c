/*
 * shm.c - pyresilience._core.SharedMemory (a named shared-memory region,
 * core: csrc/core/shm.c) and the placement in it of a limiter, a keyed
 * table, a breaker or a bulkhead (their shared=, name=: prs_py_shm_place).
 *
 * The object holds one handle of the core (prs_shm); close() drops it under
 * a tiny lock, and a placement takes its own reference under the same lock,
 * so a limiter placed through a region never outlives its mapping.
 */
#include "prs_py.h"
#include "shm_internal.h"

#include <errno.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    prs_shm *r;           /* NULL once closed */
    prs__spinlock lock;   /* guards r */
    PyObject *name;       /* str */
    PyObject *directory;  /* str or None */
    PyObject *path;       /* str */
    PyObject *weakreflist;
} shm_obj;

typedef struct shm_args {
    int64_t size;
    int64_t mode;
    const char *name, *directory; /* the arguments' UTF-8 (NUL refused by the parser) */
} shm_args;

static void shm_args_init(shm_args *a) {
    *a = (shm_args){.size = (int64_t)PRS_SHM_DEFAULT_SIZE, .mode = 0600};
}

/* fn's reading of the open region under the lock, 0 once closed (fn NULL:
 * 1 when closed). */
static size_t shm_read(shm_obj *o, size_t (*fn)(const prs_shm *)) {
    prs__spin_lock(&o->lock);
    size_t v = !o->r ? !fn : fn ? fn(o->r) : 0;
    prs__spin_unlock(&o->lock);
    return v;
}
static size_t created_of(const prs_shm *r) { return (size_t)prs_shm_created(r); }

/* The UTF-8 of a name argument, checked: NULL with ValueError naming it. */
static const char *checked_name(PyObject *name, const char *what) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (!s) return NULL;
    if ((size_t)n != strlen(s) || prs_shm_name_check(s) != PRS_OK) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be 1..%d bytes without '/', '..', NUL or control characters, got %R",
                     what, PRS_SHM_NAME_MAX, name);
        return NULL;
    }
    return s;
}

/* Raises the error of a failed open/unlink of region o (its file: in cdir). */
static void region_error(shm_obj *o, int rc, int sys_errno, const char *cname, const char *cdir) {
    char path[4200] = "?";
    prs_shm_path_for(cname, cdir, path, sizeof path);
    if (rc == PRS_EPROTO) {
        PyErr_Format(PyExc_ValueError,
                     "shared memory region %R (%s) is not a pyresilience region of version %d: "
                     "truncated, corrupt, another version or not a regular file",
                     o->name, path, PRS_SHM_VERSION);
    } else if (rc == PRS_EBACKEND && sys_errno == EPERM) {
        errno = EPERM;
        PyErr_Format(PyExc_PermissionError,
                     "shared memory region %R (%s) belongs to another user", o->name, path);
    } else if (rc == PRS_EBACKEND) {
        errno = sys_errno;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    } else if (rc == PRS_ENOMEM) {
        PyErr_NoMemory();
    } else {
        PyErr_Format(PyExc_ValueError, "cannot open shared memory region %R: %s", o->name,
                     prs_strerror(rc));
    }
}

/* Opens region `name` (in `directory`, NULL: the default) as built by tp_new
 * (generated: name and directory kept). 0, or -1 with an exception. */
static int shm_open_region(shm_obj *o, const shm_args *a) {
    if (!checked_name(o->name, "name")) return -1;
    if (a->directory && !*a->directory) {
        PyErr_SetString(PyExc_ValueError, "directory must be a non-empty path, got ''");
        return -1;
    }
    prs_shm_config cfg;
    prs_shm_config_init(&cfg);
    cfg.size = (size_t)a->size;
    cfg.mode = (unsigned)a->mode;
    cfg.directory = a->directory;
    int err = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_shm_open(a->name, &cfg, &o->r, &err);
    Py_END_ALLOW_THREADS
    if (rc) {
        region_error(o, rc, err, a->name, a->directory);
        return -1;
    }
    return (o->path = PyUnicode_DecodeFSDefault(prs_shm_path(o->r))) ? 0 : -1;
}

#include "gen/shm.h"

#define SELF ((shm_obj *)self)

prs_shm *prs_py_shm_ref(prs_py_state *st, PyObject *o, const char *param) {
    if (param && !PyObject_TypeCheck(o, PRS_PY_TYPE(st, SharedMemory))) {
        prs_py_type_error(param, "a SharedMemory", o);
        return NULL;
    }
    shm_obj *s = (shm_obj *)o;
    prs__spin_lock(&s->lock);
    prs_shm *r = s->r;
    if (r) prs__shm_ref(r);
    prs__spin_unlock(&s->lock);
    if (!r) PyErr_Format(PyExc_ValueError, "shared memory region %R is closed", s->name);
    return r;
}

static PyObject *shm_close(PyObject *self, PyObject *unused) {
    prs__spin_lock(&SELF->lock);
    prs_shm *r = SELF->r;
    SELF->r = NULL;
    prs__spin_unlock(&SELF->lock);
    prs_shm_close(r);
    Py_RETURN_NONE;
}

static PyObject *shm_unlink(PyObject *self, PyObject *unused) {
    const char *cname = PyUnicode_AsUTF8(SELF->name); /* both checked when opened */
    const char *cdir = SELF->directory == Py_None ? NULL : PyUnicode_AsUTF8(SELF->directory);
    if (!cname || (!cdir && SELF->directory != Py_None)) return NULL;
    int err = 0, rc = prs_shm_unlink(cname, cdir, &err);
    if (rc) {
        region_error(SELF, rc, err, cname, cdir);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *shm_enter(PyObject *self, PyObject *unused) {
    prs_shm *r = prs_py_shm_ref(NULL, self, NULL);
    if (!r) return NULL;
    prs__shm_unref(r);
    return Py_NewRef(self);
}

/* ---- placing a limiter, a keyed table, a breaker or a bulkhead ---------------------- */

static const char *const place_what[] = {"limiter", "KeyedLimiter", "circuit breaker", "bulkhead"};

int prs_py_shm_place(prs_py_state *st, PyObject *shared, PyObject *name, int kind,
                     const prs_algo *algo, const void *cfg, void *out, prs_config_error *why) {
    if (!shared || shared == Py_None) {
        if (!name || name == Py_None) return PRS_PY_IN_PROCESS;
        PyErr_Format(PyExc_ValueError, "name= is used with shared=, got name=%R", name);
        return -1;
    }
    prs_shm *r = prs_py_shm_ref(st, shared, "shared");
    if (!r) return -1;
    const char *cname = name && name != Py_None ? checked_name(name, "name") : NULL;
    if (!cname) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "shared= needs name=: the entry's name in the region");
        prs__shm_unref(r);
        return -1;
    }
    prs_shm_place pl = {r, cname};
    prs_config_error own = {NULL, NULL}, *w = why ? why : &own;
    char msg[1024] = "exists with another configuration";
    int rc, differs = 1;
    Py_BEGIN_ALLOW_THREADS /* a new keyed table is zeroed: max_keys slots */
    switch (kind) {
    case PRS_PY_PLACE_LIMITER: /* validated first: a bad config is the constructor's usual error */
        if (!(rc = prs_algo_validate(algo, cfg, w))) rc = prs_limiter_new_placed(algo, cfg, NULL, &pl, out, w);
        if (rc == PRS_ESTATE) differs = !prs_limiter_placed_mismatch(algo, cfg, &pl, msg, sizeof msg);
        break;
    case PRS_PY_PLACE_KEYED:
        if ((rc = prs_keyed_new_placed(cfg, &pl, out, w)) == PRS_ESTATE)
            differs = !prs_keyed_placed_mismatch(cfg, &pl, msg, sizeof msg);
        break;
    case PRS_PY_PLACE_BREAKER:
        if ((rc = prs_breaker_new_placed(cfg, &pl, out, w)) == PRS_ESTATE)
            differs = !prs_breaker_placed_mismatch(cfg, &pl, msg, sizeof msg);
        break;
    default:
        if ((rc = prs_bulkhead_new_placed(cfg, &pl, out, w)) == PRS_ESTATE)
            differs = !prs_bulkhead_placed_mismatch(cfg, &pl, msg, sizeof msg);
    }
    Py_END_ALLOW_THREADS
    PyObject *rname = ((shm_obj *)shared)->name;
    if (rc == PRS_ESTATE) {
        PyErr_Format(PyExc_ValueError, "shared %s %R in region %R %s", place_what[kind], name, rname,
                     differs ? msg : "exists with another configuration");
    } else if (rc == PRS_EFULL) {
        PyObject *m = PyUnicode_FromFormat(
            "shared memory region %R is full (%zu bytes, %zu entries): create it with a larger "
            "size= to place %R", rname, prs_shm_size(r), prs_shm_entries(r), name);
        prs_py_raise(m ? PyObject_CallFunction(PyExc_OSError, "iO", ENOSPC, m) : NULL);
        Py_XDECREF(m);
    } else if (rc == PRS_EPROTO) {
        PyErr_Format(PyExc_ValueError, "shared %s %R in region %R is corrupt", place_what[kind], name,
                     rname);
    } else if (rc && !why) { /* the caller words no config error: a placement's own limit */
        if (own.field) PyErr_Format(PyExc_ValueError, "%s %s", own.field, own.reason);
        else prs_py_error(st, rc, NULL);
    } else {
        prs__shm_unref(r);
        return rc;
    }
    prs__shm_unref(r);
    return -1;
}
