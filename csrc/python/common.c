/*
 * common.c - the binding's shared helpers: status -> exception (the one place),
 * numbers and durations at the boundary, reprs, and the declared parameters'
 * one parser.
 */
#include "prs_py.h"

#include <math.h>
#include <string.h>

/* ---- errors ----------------------------------------------------------- */

/* The exception of each status, one row per status of PRS_ERRNO_MAP: a row
 * names a built-in exception or a module exception slot (declared:
 * STATUS_EXCEPTIONS in tools/binding_decl.py -> gen/module.h's PRS_PY_EXC_<status>).
 * A status added to the core without its row does not compile. */
typedef struct exc_row {
    PyObject *const *builtin; /* &PyExc_X, or NULL: the module slot below */
    int slot;                 /* PRS_SLOT_X when builtin is NULL */
} exc_row;

#define EXC_BUILTIN(name) {&PyExc_##name, 0}
#define EXC_MODULE(name)  {NULL, PRS_SLOT_##name}

static const exc_row exc_table[-PRS__STATUS_MIN] = {
#define ROW(name, value, msg) [-(value)] = PRS_PY_EXC_##name,
    PRS_ERRNO_MAP(ROW)
#undef ROW
};

PyObject *prs_py_error(prs_py_state *st, int status, const char *what) {
    if (status == PRS_ENOMEM) return PyErr_NoMemory();
    PyObject *exc = PyExc_RuntimeError; /* a status outside the list */
    if (status <= 0 && status > PRS__STATUS_MIN) {
        const exc_row *row = &exc_table[-status];
        if (row->builtin) exc = *row->builtin;
        else if (st) exc = st->slots[row->slot];
    }
    if (what) PyErr_SetString(exc, what);
    else PyErr_Format(exc, "%s (%s)", prs_strerror(status), prs_err_name(status));
    return NULL;
}

PyObject *prs_py_raise_rate_limited(prs_py_state *st, const prs_decision *d, int denied_by,
                                    int64_t retry_after_ns, const char *message) {
    PyObject *dec = prs_py_decision_new_by(st, d, denied_by);
    if (!dec) return NULL;
    return prs_py_raise(PyObject_CallFunction(PRS_PY_EXC(st, RateLimitExceeded), "sdN", message,
                                              prs_py_ns_to_s(retry_after_ns), dec));
}

/* ---- numbers ---------------------------------------------------------- */

int prs_py_type_error(const char *param, const char *what, PyObject *o) {
    PyErr_Format(PyExc_TypeError, "%s must be %s, not %.200s: %R", param, what, Py_TYPE(o)->tp_name,
                 o);
    return -1;
}

int prs_py_parse_real(PyObject *o, const char *param, unsigned flags, double *out) {
    double v;
    if (PyFloat_CheckExact(o)) {
        v = PyFloat_AS_DOUBLE(o);
    } else if (PyBool_Check(o) || !(PyLong_Check(o) || PyIndex_Check(o) ||
                                    (Py_TYPE(o)->tp_as_number && Py_TYPE(o)->tp_as_number->nb_float))) {
        return prs_py_type_error(param, "a real number", o);
    } else {
        v = PyFloat_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s is out of range: %R", param, o);
            }
            return -1;
        }
    }
    if (isnan(v)) {
        PyErr_Format(PyExc_ValueError, "%s must not be NaN: %R", param, o);
        return -1;
    }
    if (isinf(v) && (v < 0 || !(flags & PRS_PY_INF_OK))) {
        PyErr_Format(PyExc_ValueError, "%s must be finite: %R", param, o);
        return -1;
    }
    if ((v < 0 || (v == 0 && !(flags & PRS_PY_ZERO_OK))) && !(flags & PRS_PY_NEG_OK)) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %R", param,
                     (flags & PRS_PY_ZERO_OK) ? ">= 0" : "> 0", o);
        return -1;
    }
    *out = v;
    return 0;
}

#define WHOLE_FLOAT 1u /* an integral float is a whole number too (10.0 is 10, 10.5 is refused) */
#define WHOLE_SAT   2u /* beyond int64: hi (and lo when it is INT64_MIN) instead of an error */

/* The one parser of whole numbers: an int (or __index__; never bool), or with
 * WHOLE_FLOAT an integral float, in [lo, hi]. TypeError/ValueError naming
 * `param` and the value as given. 0 or -1. */
static int parse_whole(PyObject *o, const char *param, int64_t lo, int64_t hi, unsigned how,
                       int64_t *out) {
    int overflow = 0;
    long long v;
    if (PyLong_CheckExact(o)) { /* the usual case: no __index__ to call */
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
    } else if (PyFloat_Check(o) && (how & WHOLE_FLOAT)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (!isfinite(d) || d != floor(d)) {
            PyErr_Format(PyExc_ValueError, "%s must be a whole number, got %R", param, o);
            return -1;
        }
        overflow = d >= 9.2233720368547758e18 ? 1 : d < -9.2233720368547758e18 ? -1 : 0;
        v = overflow ? 0 : (long long)d;
    } else if (PyBool_Check(o) || !(PyLong_Check(o) || (PyIndex_Check(o) && !PyFloat_Check(o)))) {
        return prs_py_type_error(param, "an int", o);
    } else {
        PyObject *idx = PyNumber_Index(o);
        if (!idx) return -1;
        v = PyLong_AsLongLongAndOverflow(idx, &overflow);
        Py_DECREF(idx);
    }
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow && (how & WHOLE_SAT) && (overflow > 0 || lo == INT64_MIN)) v = overflow > 0 ? hi : lo;
    else if (overflow || v < lo || v > hi) {
        if (hi == INT64_MAX)
            PyErr_Format(PyExc_ValueError, "%s must be >= %lld, got %R", param, (long long)lo, o);
        else
            PyErr_Format(PyExc_ValueError, "%s must be between %lld and %lld, got %R", param,
                         (long long)lo, (long long)hi, o);
        return -1;
    }
    *out = v;
    return 0;
}

int prs_py_parse_config_count(PyObject *o, const char *param, int64_t *out) {
    return parse_whole(o, param, INT64_MIN, INT64_MAX, WHOLE_FLOAT | WHOLE_SAT, out);
}

int prs_py_parse_n(PyObject *o, const char *param, int64_t *out) {
    return parse_whole(o, param, 1, INT64_MAX, WHOLE_FLOAT | WHOLE_SAT, out);
}

int prs_py_parse_timeout(PyObject *o, const char *param, int64_t *out_ns) {
    if (!o || o == Py_None) { *out_ns = PRS_NEVER; return 0; }
    double s;
    if (prs_py_parse_real(o, param, PRS_PY_ZERO_OK | PRS_PY_INF_OK, &s) < 0) return -1;
    *out_ns = isinf(s) ? PRS_NEVER : prs_seconds_to_ns(s);
    return 0;
}

/* ---- reprs and methods ------------------------------------------------- */

PyObject *prs_py_repr_attrs(PyObject *self, const char *name, const char *const *attrs,
                            PyObject **vals) {
    PyObject *r = PyUnicode_FromFormat("%s(", name);
    const char *sep = "";
    for (int i = 0; attrs[i]; i++) { /* "name?": left out when None */
        Py_ssize_t len = (Py_ssize_t)strcspn(attrs[i], "?");
        PyObject *key = PyUnicode_FromStringAndSize(attrs[i], len);
        PyObject *v = vals && vals[i] ? vals[i] : key && r ? PyObject_GetAttr(self, key) : NULL;
        if (!v || !key) {
            Py_CLEAR(r);
        } else if (r && !(attrs[i][len] && v == Py_None)) {
            Py_SETREF(r, PyUnicode_FromFormat("%U%s%U=%R", r, sep, key, v));
            sep = ", ";
        }
        Py_XDECREF(v);
        Py_XDECREF(key);
    }
    if (r) Py_SETREF(r, PyUnicode_FromFormat("%U)", r));
    return r;
}

PyObject *prs_py_method_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

/* ---- declared parameters ------------------------------------------------ */

#define OR_NONE(p, what) (((p)->flags & PRS_PY_NONE_OK) ? what " or None" : what)

/* Converts one given argument into its field (or checks its type). 0 or -1. */
static int convert_param(const prs_py_param *p, PyObject *o, char *config) {
    void *field = p->offset >= 0 ? config + p->offset : NULL;
    double s;
    int64_t v;
    if (o == Py_None && (p->flags & (PRS_PY_NONE_OK | PRS_PY_NONE_INF))) {
        if (!(p->flags & PRS_PY_NONE_INF) || !field) return 0; /* the field keeps its default */
        if (p->kind == PRS_PK_REAL) *(double *)field = INFINITY;
        else *(int64_t *)field = PRS_NEVER;
        return 0;
    }
    switch (p->kind) {
    case PRS_PK_COUNT: /* with no range declared, the core checks it: beyond int64 saturates */
        if (parse_whole(o, p->name, p->lo, p->hi,
                        WHOLE_FLOAT | (p->lo == INT64_MIN && p->hi == INT64_MAX ? WHOLE_SAT : 0), &v))
            return -1;
        if (p->flags & PRS_PY_DOUBLE) *(double *)field = (double)v;
        else *(int64_t *)field = v;
        return 0;
    case PRS_PK_INT:
        if (parse_whole(o, p->name, p->lo, p->hi, (p->flags & PRS_PY_SAT) ? WHOLE_SAT : 0, &v) < 0)
            return -1;
        *(int64_t *)field = v;
        return 0;
    case PRS_PK_REAL:
        return prs_py_parse_real(o, p->name, p->flags & 7u, (double *)field);
    case PRS_PK_DURATION:
        if (prs_py_parse_real(o, p->name, p->flags & 7u, &s) < 0) return -1;
        v = isinf(s) ? PRS_NEVER : prs_seconds_to_ns(s);
        *(int64_t *)field = (s > 0 && v < 1 && !(p->flags & PRS_PY_TRUNC)) ? 1 : v;
        return 0;
    case PRS_PK_TIMEOUT:
        return prs_py_parse_timeout(o, p->name, (int64_t *)field);
    case PRS_PK_BOOL: {
        int b = PyObject_IsTrue(o);
        if (b < 0) return -1;
        *(int *)field = b;
        return 0;
    }
    case PRS_PK_ENUM: /* a str among p->choices: its index */
        for (int i = 0; PyUnicode_Check(o) && p->choices[i]; i++)
            if (!PyUnicode_CompareWithASCIIString(o, p->choices[i])) { *(int *)field = i; return 0; }
        if (!PyUnicode_Check(o)) return prs_py_type_error(p->name, p->listed, o);
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %R", p->name, p->listed, o);
        return -1;
    case PRS_PK_CALLABLE:
        if (PyCallable_Check(o)) return 0;
        return prs_py_type_error(p->name, OR_NONE(p, "a callable"), o);
    case PRS_PK_STR: { /* a field gets its UTF-8, borrowed from the argument */
        if (!PyUnicode_Check(o))
            return prs_py_type_error(p->name, OR_NONE(p, "a str"), o);
        Py_ssize_t len;
        const char *utf8 = field ? PyUnicode_AsUTF8AndSize(o, &len) : NULL;
        if (!field) return 0;
        if (!utf8) return -1;
        if ((size_t)len != strlen(utf8)) {
            PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters, got %R", p->name, o);
            return -1;
        }
        *(const char **)field = utf8;
        return 0;
    }
    case PRS_PK_CONVERT:
        return p->convert(o, config);
    case PRS_PK_N:
        return prs_py_parse_n(o, p->name, (int64_t *)field);
    case PRS_PK_BYTES:
        if (!PyBytes_Check(o)) return prs_py_type_error(p->name, "bytes", o);
        ((prs_py_bytes *)field)->p = PyBytes_AS_STRING(o);
        ((prs_py_bytes *)field)->n = (size_t)PyBytes_GET_SIZE(o);
        return 0;
    default: /* CLOCK, OBJECT: the binding's */
        return 0;
    }
}

/* Puts keyword argument key=value into out[] by spec's names. 0 or -1. */
static int put_keyword(const prs_py_params *spec, PyObject *key, PyObject *value, PyObject **out) {
    Py_ssize_t i = 0;
    while (i < spec->n && PyUnicode_Check(key) &&
           PyUnicode_CompareWithASCIIString(key, spec->p[i].name) != 0)
        i++;
    if (i == spec->n || !PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", spec->fname, key);
        return -1;
    }
    if (out[i]) {
        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", spec->fname,
                     spec->p[i].name);
        return -1;
    }
    out[i] = value;
    return 0;
}

static int missing(const prs_py_params *spec, Py_ssize_t i) {
    PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", spec->fname, spec->p[i].name);
    return -1;
}

/* Alias i and its parameter t: None is not given (but a weight n is an int);
 * at most one of the two, and one of them unless t takes None or is a
 * weight n (1 by default). */
static int merge_alias(const prs_py_params *spec, Py_ssize_t i, PyObject **vals) {
    Py_ssize_t t = spec->p[i].alias - 1;
    const prs_py_param *p = &spec->p[t];
    if (vals[i] == Py_None) vals[i] = NULL;
    if (vals[t] == Py_None && p->kind != PRS_PK_N) vals[t] = NULL;
    if (vals[i] && vals[t]) {
        PyErr_Format(PyExc_TypeError, "%s() got both %s and %s (%s is an alias)", spec->fname,
                     p->name, spec->p[i].name, spec->p[i].name);
        return -1;
    }
    if (!vals[i] && !vals[t] && !(p->flags & PRS_PY_NONE_OK) && p->kind != PRS_PK_N)
        return missing(spec, t);
    return 0;
}

int prs_py_parse_args(const prs_py_params *spec, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, PyObject *kwds, void *config, PyObject **vals) {
    if (nargs > spec->maxpos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional argument%s (%zd given)",
                     spec->fname, spec->maxpos, spec->maxpos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < spec->n; i++) vals[i] = i < nargs ? args[i] : NULL;
    for (Py_ssize_t k = 0; kwnames && k < PyTuple_GET_SIZE(kwnames); k++)
        if (put_keyword(spec, PyTuple_GET_ITEM(kwnames, k), args[nargs + k], vals) < 0) return -1;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (kwds && PyDict_Next(kwds, &pos, &key, &value))
        if (put_keyword(spec, key, value, vals) < 0) return -1;
    for (Py_ssize_t i = 0; i < spec->required; i++)
        if (!vals[i]) return missing(spec, i);
    for (Py_ssize_t i = 0; i < spec->n; i++)
        if (spec->p[i].alias && merge_alias(spec, i, vals) < 0) return -1;
    for (Py_ssize_t i = 0; i < spec->n; i++)
        if (vals[i] && convert_param(&spec->p[i], vals[i], config) < 0) return -1;
    return 0;
}

/* The value a parameter has: the argument as given, else its field's default
 * (new reference), or NULL without an exception when there is none to show. */
static PyObject *param_value(const prs_py_param *p, PyObject *given, const char *config) {
    if (given) return Py_NewRef(given);
    if (!config || p->offset < 0) return NULL;
    const void *f = config + p->offset;
    switch (p->kind) {
    case PRS_PK_COUNT:
        if (p->flags & PRS_PY_DOUBLE) return PyFloat_FromDouble(*(const double *)f);
        return PyLong_FromLongLong(*(const int64_t *)f);
    case PRS_PK_INT: return PyLong_FromLongLong(*(const int64_t *)f);
    case PRS_PK_REAL: return PyFloat_FromDouble(*(const double *)f);
    case PRS_PK_DURATION:
    case PRS_PK_TIMEOUT: return PyFloat_FromDouble(prs_py_ns_to_s(*(const int64_t *)f));
    case PRS_PK_ENUM: return PyUnicode_FromString(p->choices[*(const int *)f]);
    default: return NULL;
    }
}

PyObject *prs_py_param_get(const prs_py_param *p, const void *config) {
    if ((p->flags & PRS_PY_NONE_OK) && p->offset >= 0 &&
        (p->kind == PRS_PK_REAL ? *(const double *)((const char *)config + p->offset) == 0.0
                                : *(const int64_t *)((const char *)config + p->offset) == 0))
        Py_RETURN_NONE;
    PyObject *v = param_value(p, NULL, config);
    return v || PyErr_Occurred() ? v : Py_NewRef(Py_None);
}

PyObject *prs_py_config_error(prs_py_state *st, int status, const prs_config_error *why,
                              const prs_py_params *spec, PyObject *const *vals,
                              const void *config) {
    if (status == PRS_ENOTSUP && why && why->field && why->reason) /* e.g. a shared sliding log */
        return PyErr_Format(PyExc_NotImplementedError, "%s %s", why->field, why->reason);
    if ((status != PRS_EINVAL && status != PRS_ERANGE) || !why || !why->field || !why->reason)
        return prs_py_error(st, status, NULL);
    Py_ssize_t at = -1;
#define GIVEN(v) ((v) && (v) != Py_None)
    for (Py_ssize_t i = 0; i < spec->n; i++) /* of aliases, the one given */
        if (spec->p[i].field && strcmp(spec->p[i].field, why->field) == 0 &&
            (at < 0 || (!GIVEN(vals[at]) && GIVEN(vals[i]))))
            at = i;
#undef GIVEN
    if (at < 0) {
        PyErr_Format(PyExc_ValueError, "invalid %s configuration: %s %s", spec->fname, why->field,
                     why->reason);
        return NULL;
    }
    /* "max_delay must be >= base_delay, got 0.5 (base_delay=1.0)": the value
     * given, then the values of the other fields the reason names */
    const prs_py_param *p = &spec->p[at];
    PyObject *msg = vals[at] ? PyUnicode_FromFormat("%s %s, got %R", p->name, why->reason, vals[at])
                             : PyUnicode_FromFormat("%s %s", p->name, why->reason);
    const char *open = " (";
    for (Py_ssize_t i = 0; msg && i < spec->n; i++) {
        const prs_py_param *q = &spec->p[i];
        if (i == at || !q->field || !strcmp(q->field, p->field) ||
            !prs_config_mentions(why->reason, q->field))
            continue;
        PyObject *v = param_value(q, vals[i], config);
        if (!v) {
            if (PyErr_Occurred()) Py_CLEAR(msg);
            continue;
        }
        Py_SETREF(msg, PyUnicode_FromFormat("%U%s%s=%R", msg, open, q->name, v));
        Py_DECREF(v);
        open = ", ";
    }
    if (msg && open[0] == ',') Py_SETREF(msg, PyUnicode_FromFormat("%U)", msg));
    if (msg) {
        PyErr_SetObject(PyExc_ValueError, msg);
        Py_DECREF(msg);
    }
    return NULL;
}
