/*
 * module.c - pyresilience._core: multi-phase init (PEP 489), module state
 * (PEP 630), heap types only, and no GIL requirement (Py_mod_gil).
 *
 * Py_mod_exec loads the exception classes from pyresilience.errors into the
 * state, then calls each binding file's register function from the table below.
 */
#include "prs_py.h"

#include <string.h>

typedef int (*register_fn)(PyObject *m, prs_py_state *st);

#define REGISTER(file) prs_py_register_##file,
static const register_fn register_fns[] = {PRS_PY_REGISTER_FILES(REGISTER) NULL};
#undef REGISTER

#define EXC(name) {PRS_SLOT_##name, #name},
static const struct { int slot; const char *name; } exception_slots[] = {PRS_PY_EXCEPTIONS(EXC)};
#undef EXC

/* The module name of a type is what follows the last dot of its spec's name:
 * "pyresilience._core.X" for the types the facade wraps, "pyresilience.X" for
 * those public as they are (their __module__ is then the package, as users
 * import them). */
int prs_py_add_type(PyObject *m, prs_py_state *st, int slot, PyType_Spec *spec, PyObject *base) {
    PyObject *tp = PyType_FromModuleAndSpec(m, spec, base);
    if (!tp || PyModule_AddObjectRef(m, strrchr(spec->name, '.') + 1, tp) < 0) {
        Py_XDECREF(tp);
        return -1;
    }
    Py_XSETREF(st->slots[slot], tp);
    return 0;
}

static int core_exec(PyObject *m) {
    prs_py_state *st = PyModule_GetState(m);
    PyObject *errors = PyImport_ImportModule("pyresilience.errors");
    for (size_t i = 0; errors && i < sizeof exception_slots / sizeof exception_slots[0]; i++) {
        PyObject *cls = PyObject_GetAttrString(errors, exception_slots[i].name);
        if (cls && !PyExceptionClass_Check(cls)) {
            PyErr_Format(PyExc_TypeError, "pyresilience.errors.%s is not an exception class",
                         exception_slots[i].name);
            Py_CLEAR(cls);
        }
        if (!cls) Py_CLEAR(errors);
        else Py_XSETREF(st->slots[exception_slots[i].slot], cls);
    }
    if (!errors) return -1;
    Py_DECREF(errors);
    for (const register_fn *f = register_fns; *f; f++)
        if ((*f)(m, st) < 0) return -1;
#ifdef PRS_HAVE_HIREDIS
    return PyModule_AddIntConstant(m, "HAVE_REDIS", 1);
#else
    return PyModule_AddIntConstant(m, "HAVE_REDIS", 0);
#endif
}

static int core_traverse(PyObject *m, visitproc visit, void *arg) {
    prs_py_state *st = PyModule_GetState(m);
    for (int i = 0; i < PRS_SLOT__COUNT; i++) Py_VISIT(st->slots[i]);
    return 0;
}

static int core_clear(PyObject *m) {
    prs_py_state *st = PyModule_GetState(m);
    for (int i = 0; i < PRS_SLOT__COUNT; i++) Py_CLEAR(st->slots[i]);
    return 0;
}

static void core_free(void *m) { core_clear((PyObject *)m); }

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyModuleDef prs_py_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyresilience._core",
    .m_doc = "The C core of pyresilience. Use the public names from the pyresilience package.",
    .m_size = sizeof(prs_py_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&prs_py_module_def); }
