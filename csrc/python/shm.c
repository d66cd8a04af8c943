/*
 * shm.c - pyresilience._core.SharedMemory (a named shared-memory region,
 * core: csrc/core/shm.c) and the placement of a limiter in it (shared=,
 * name= on every limiter type: limiters.c calls prs_py_shm_limiter_new).
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
} shm_args;

static void shm_args_init(shm_args *a) {
    a->size = (int64_t)PRS_SHM_DEFAULT_SIZE;
    a->mode = 0600;
}

static int shm_args_check(const shm_args *a, prs_config_error *why) {
    (void)a;
    (void)why;
    return PRS_OK; /* the bounds are the declaration's */
}

#include "gen/shm.h"

#define SELF ((shm_obj *)self)

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

static const char *checked_dir(PyObject *dir) {
    if (!dir || dir == Py_None) return NULL;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(dir, &n);
    if (!s) return NULL;
    if (n == 0 || (size_t)n != strlen(s)) {
        PyErr_Format(PyExc_ValueError, "directory must be a non-empty path without NUL, got %R",
                     dir);
        return NULL;
    }
    return s;
}

/* Raises the error of a failed open/unlink of region `name`. */
static void region_error(int rc, int sys_errno, PyObject *name, const char *path) {
    if (rc == PRS_EPROTO) {
        PyErr_Format(PyExc_ValueError,
                     "shared memory region %R (%s) is not a pyresilience region of version %d: "
                     "truncated, corrupt, another version or not a regular file",
                     name, path ? path : "?", PRS_SHM_VERSION);
    } else if (rc == PRS_EBACKEND && sys_errno == EPERM) {
        errno = EPERM;
        PyErr_Format(PyExc_PermissionError,
                     "shared memory region %R (%s) belongs to another user", name,
                     path ? path : "?");
    } else if (rc == PRS_EBACKEND) {
        errno = sys_errno;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    } else if (rc == PRS_ENOMEM) {
        PyErr_NoMemory();
    } else {
        PyErr_Format(PyExc_ValueError, "cannot open shared memory region %R: %s", name,
                     prs_strerror(rc));
    }
}

static PyObject *shm_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    prs_py_state *st;
    shm_args a;
    PyObject *v[P_SharedMemory__COUNT];
    if (SharedMemory_parse(type, args, kwds, &st, &a, v) < 0) return NULL;
    PyObject *name = v[P_SharedMemory_name], *dir = v[P_SharedMemory_directory];
    const char *cname = checked_name(name, "name");
    if (!cname) return NULL;
    const char *cdir = checked_dir(dir);
    if (!cdir && PyErr_Occurred()) return NULL;
    prs_shm_config cfg;
    prs_shm_config_init(&cfg);
    cfg.size = (size_t)a.size;
    cfg.mode = (unsigned)a.mode;
    cfg.directory = cdir;
    prs_shm *r = NULL;
    int err = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prs_shm_open(cname, &cfg, &r, &err);
    Py_END_ALLOW_THREADS
    if (rc) {
        char path[4200];
        snprintf(path, sizeof path, "%s/pyresilience.%s", cdir ? cdir : "/dev/shm", cname);
        region_error(rc, err, name, path);
        return NULL;
    }
    shm_obj *self = (shm_obj *)type->tp_alloc(type, 0);
    if (!self) {
        prs_shm_close(r);
        return NULL;
    }
    self->r = r;
    prs__spin_init(&self->lock);
    self->name = Py_NewRef(name);
    self->directory = Py_NewRef(dir && dir != Py_None ? dir : Py_None);
    self->path = PyUnicode_DecodeFSDefault(prs_shm_path(r));
    if (!self->path) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A reference to the open region (to be dropped with prs__shm_unref), or
 * NULL with ValueError when closed. */
static prs_shm *region_ref(PyObject *self) {
    prs__spin_lock(&SELF->lock);
    prs_shm *r = SELF->r;
    if (r) prs__shm_ref(r);
    prs__spin_unlock(&SELF->lock);
    if (!r) PyErr_Format(PyExc_ValueError, "shared memory region %R is closed", SELF->name);
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
    const char *cname = PyUnicode_AsUTF8(SELF->name);
    if (!cname) return NULL;
    const char *cdir = checked_dir(SELF->directory);
    if (!cdir && PyErr_Occurred()) return NULL;
    int err = 0, rc = prs_shm_unlink(cname, cdir, &err);
    if (rc) {
        PyObject *b = PyUnicode_EncodeFSDefault(SELF->path);
        region_error(rc, err, SELF->name, b ? PyBytes_AS_STRING(b) : NULL);
        Py_XDECREF(b);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *shm_enter(PyObject *self, PyObject *unused) {
    prs_shm *r = region_ref(self);
    if (!r) return NULL;
    prs__shm_unref(r);
    return Py_NewRef(self);
}

static PyObject *shm_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return shm_close(self, NULL);
}

/* A reading of the open region, or of nothing once closed (0 / closed). */
static PyObject *reading(PyObject *self, size_t (*fn)(const prs_shm *)) {
    prs__spin_lock(&SELF->lock);
    size_t v = SELF->r ? fn(SELF->r) : 0;
    prs__spin_unlock(&SELF->lock);
    return PyLong_FromSize_t(v);
}
static PyObject *shm_get_size(PyObject *self, void *c) { return reading(self, prs_shm_size); }
static PyObject *shm_get_entries(PyObject *self, void *c) { return reading(self, prs_shm_entries); }
static PyObject *shm_get_free_bytes(PyObject *self, void *c) {
    return reading(self, prs_shm_free_bytes);
}
static size_t created_of(const prs_shm *r) { return (size_t)prs_shm_created(r); }
static PyObject *shm_get_created(PyObject *self, void *c) {
    PyObject *v = reading(self, created_of);
    if (!v) return NULL;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return PyBool_FromLong(t);
}
static PyObject *shm_get_closed(PyObject *self, void *c) {
    prs__spin_lock(&SELF->lock);
    int closed = SELF->r == NULL;
    prs__spin_unlock(&SELF->lock);
    return PyBool_FromLong(closed);
}

/* ---- placing a limiter ---------------------------------------------------------- */

int prs_py_shm_limiter_new(prs_py_state *st, PyObject *shared, PyObject *name,
                           const prs_algo *algo, const void *config, prs_limiter **out,
                           prs_config_error *why) {
    if (!PyObject_TypeCheck(shared, PRS_PY_TYPE(st, SharedMemory))) {
        PyErr_Format(PyExc_TypeError, "shared must be a SharedMemory, not %.200s: %R",
                     Py_TYPE(shared)->tp_name, shared);
        return 1;
    }
    if (!name || name == Py_None) {
        PyErr_SetString(PyExc_ValueError, "shared= needs name=: the entry's name in the region");
        return 1;
    }
    const char *cname = checked_name(name, "name");
    if (!cname) return 1;
    /* validate first: a bad config is the constructor's usual error */
    int rc = prs_algo_validate(algo, config, why);
    if (rc) return rc;
    prs_shm *r = region_ref(shared);
    if (!r) return 1;
    prs_shm_place pl = {r, cname};
    Py_BEGIN_ALLOW_THREADS
    rc = prs_limiter_new_placed(algo, config, NULL, &pl, out, why);
    Py_END_ALLOW_THREADS
    if (rc == PRS_ESTATE) {
        char msg[400];
        if (prs_limiter_placed_mismatch(algo, config, &pl, msg, sizeof msg) != PRS_OK)
            snprintf(msg, sizeof msg, "exists with another configuration");
        PyErr_Format(PyExc_ValueError, "shared limiter %R in region %R %s", name,
                     ((shm_obj *)shared)->name, msg);
        rc = 1;
    } else if (rc == PRS_EFULL) {
        PyObject *msg = PyUnicode_FromFormat(
            "shared memory region %R is full (%zu bytes, %zu entries): create it with a larger "
            "size= to place %R", ((shm_obj *)shared)->name, prs_shm_size(r), prs_shm_entries(r),
            name);
        PyObject *exc = msg ? PyObject_CallFunction(PyExc_OSError, "iO", ENOSPC, msg) : NULL;
        if (exc) PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_XDECREF(exc);
        Py_XDECREF(msg);
        rc = 1;
    } else if (rc == PRS_EPROTO) {
        PyErr_Format(PyExc_ValueError, "shared limiter %R in region %R is corrupt", name,
                     ((shm_obj *)shared)->name);
        rc = 1;
    }
    prs__shm_unref(r);
    return rc;
}

int prs_py_register_shm(PyObject *m, prs_py_state *st) { return shm_add_types(m, st); }

/* For other binding files (kv.c): a reference to the open region of the
 * SharedMemory `shared` (drop it with prs__shm_unref), or NULL with TypeError
 * (not a SharedMemory) or ValueError (closed). */
prs_shm *prs_py_shm_region(prs_py_state *st, PyObject *shared) {
    if (!PyObject_TypeCheck(shared, PRS_PY_TYPE(st, SharedMemory))) {
        PyErr_Format(PyExc_TypeError, "region must be a SharedMemory, not %.200s: %R",
                     Py_TYPE(shared)->tp_name, shared);
        return NULL;
    }
    return region_ref(shared);
}
