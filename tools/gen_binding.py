#!/usr/bin/env python3
"""Generates the declared parts of the binding from tools/binding_decl.py.

    python tools/gen_binding.py          write what changed
    python tools/gen_binding.py --check  exit 1 (and say what) if anything would change

Writes, for each binding file F declared (csrc/python/F.c):
  csrc/python/gen/module.h  the module state's slots (one per type and
                        exception class, D.EXCEPTIONS).
  csrc/python/gen/F.h   per type: the parameter table (prs_py_params, fields by
                        offsetof into the core's config struct), an enum of the
                        parameters' indexes (P_<Type>_<param>), the type's doc
                        with its text signature (<Type>_DOC), the method table
                        (<Type>_methods) and property table (<Type>_getset),
                        with forward declarations of the C functions they name;
                        for a file in D.SETUP, its prs_py_register_<F>() (its
                        setup function, its D.CONSTANTS, types and functions);
                        per method with declared params, its prs_py_params
                        (<Type>_<method>_params); the module functions
                        (<F>_functions).
and, in pyresilience/_core.pyi, the stub of each declared type: the text between
the lines `# <gen Name>` and `# </gen>` is replaced; everything else in the
stub file stays hand-written (the types not declared yet).

Both are committed: a reader, a reviewer and a build from a plain checkout see
them, and tests/test_binding_decl.py re-runs this script with --check (no
drift) next to stubtest. setup.py and `make gen` run it before compiling; it
only rewrites files whose text changed.

How to convert a type (hand-written -> declared):
 1. In tools/binding_decl.py add Type(name, cfile, prefix, config=<core config
    struct or None>, params=[P(...)...], methods=[M(...)], props=[Prop(...)],
    doc=...). A P says once: the Python name, the kind (binding_decl.KINDS), the
    stub type, the default as source text (None: required), the core config
    field it fills (field=, omitted for kinds the binding keeps itself), range/flags, and
    whether it is keyword-only (kw=True; every P after the first kw one is too).
    A field of a core config embedded in the binding's own argument struct
    (Type(config=<that struct>)) names its path in `p.at` ("core.max_concurrent"):
    the offset comes from it, the error matching from field. Several P may fill
    one field (aliases: max_size / maxsize); an error names the one given.
 2. Put `# <gen Name>` / `# </gen>` around the class in _core.pyi; run
    `make gen` (or this script).
 3. In the .c file: define the object struct (and any struct of method
    arguments) before `#include "gen/F.h"`; with Type(init=, check=) tp_new
    starts with
        prs_py_state *st; prs_X_config cfg; PyObject *v[P_Name__COUNT];
        if (Name_parse(type, args, kwds, &st, &cfg, v) < 0) return NULL;
    (the core's defaults, every declared argument converted into cfg, the
    core's check worded as "<param> <reason>, got <value>"), then takes the
    OBJECT/CLOCK/CALLABLE arguments from v[P_Name_<param>], builds the core and
    the object. No tp_init, no "not initialised" guards. The header also gives
    Name_spec (slots, flags, members) for prs_py_add_type, and the method and
    property tables: delete the hand-written kwlist, docstrings, tables and
    spec. Methods are <prefix>_<name without leading _> unless M(c=...) says
    otherwise; slot functions <prefix>_<slot> unless slots={...} names them.
 4. Validation belongs to the core's prs_X_config_check (field + reason via
    prs_config_fail), not to the binding.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import binding_decl as D  # noqa: E402

INT64_MIN, INT64_MAX = "INT64_MIN", "INT64_MAX"


def c_str(text, macro=False):
    """A C string literal (several lines for a long text; continued in a macro)."""
    out = []
    for line in text.split("\n"):
        out.append(line.replace("\\", "\\\\").replace('"', '\\"') + "\\n")
    out[-1] = out[-1][:-2]
    return (" \\\n    " if macro else "\n     ").join('"%s"' % s for s in out if s) or '""'


def split_top(sig):
    """Splits a signature text at its top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in sig:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def strip_types(sig):
    """'a: int = 1, /, *b: X' -> 'a=1, /, *b' (a text signature's parameters)."""
    out = []
    for part in split_top(sig):
        name, _, default = part.partition("=")
        name = name.split(":")[0].strip()
        out.append(name + ("=" + default.strip() if default else ""))
    return ", ".join(out)


def params_sig(params, typed):
    """The signature text of declared params (typed: for the stub)."""
    parts, star = [], False
    aliased = {getattr(p, "alias_of", None) for p in params}
    for p in params:
        if not typed and p.default == "..." and (p.name in aliased or getattr(p, "alias_of", None)):
            if getattr(p, "alias_of", None):  # one of a param and its alias: the C text
                continue                       # signature shows the param, required
            p = D.P(p.name, p.kind, p.type, kw=p.kw)
        if p.kw and not star:
            parts.append("*")
            star = True
        s = p.name + (": " + p.type if typed else "")
        if p.default is not None:
            s += (" = " if typed else "=") + p.default
        parts.append(s)
    if params and not params[-1].kw and params[-1].posonly:
        parts.append("/")
    return ", ".join(parts)


def method_sig(m, typed):
    if m.params is not None:
        return params_sig(m.params, typed)
    return m.sig if typed else strip_types(m.sig)


def text_signature(name, sig, self_name="$self"):
    if self_name is None:
        return "%s(%s)" % (name, sig)
    if not sig:
        return "%s(%s, /)" % (name, self_name)
    if "/" in split_top(sig):
        return "%s(%s, %s)" % (name, self_name, sig)
    return "%s(%s, /, %s)" % (name, self_name, sig)


def meth_flags(m):
    if m.flags:
        return m.flags
    sig = method_sig(m, False)
    parts = split_top(sig)
    if not parts:
        return "METH_NOARGS"
    if parts == [parts[0], "/"] and not parts[0].startswith("*") and "=" not in parts[0]:
        return "METH_O"
    if parts[-1] == "/":
        return "METH_FASTCALL"
    return "METH_FASTCALL | METH_KEYWORDS"


PROTO = {
    "METH_NOARGS": "static PyObject *%s(PyObject *self, PyObject *unused);",
    "METH_O": "static PyObject *%s(PyObject *self, PyObject *arg);",
    "METH_FASTCALL": "static PyObject *%s(PyObject *self, PyObject *const *args, Py_ssize_t nargs);",
    "METH_FASTCALL | METH_KEYWORDS":
        "static PyObject *%s(PyObject *self, PyObject *const *args, Py_ssize_t nargs, "
        "PyObject *kwnames);",
}


def listed(choices):
    """An ENUM's choices as its messages list them ("'a', 'b' or 'c'"), a C string."""
    if not choices:
        return "NULL"
    q = ["'%s'" % c for c in choices]
    return '"%s"' % (", ".join(q[:-1]) + " or " + q[-1] if len(q) > 1 else q[0])


def c_params(prefix, fname, params, config):
    """The prs_py_params table of `params` (fields of struct `config`)."""
    L = ["enum {"]
    for i, p in enumerate(params):
        L.append("    P_%s_%s = %d," % (prefix, p.name, i))
    L.append("    P_%s__COUNT = %d" % (prefix, len(params)))
    L.append("};")
    for p in params:
        if p.choices:
            L.append("static const char *const %s_%s_choices[] = {%s, NULL};"
                     % (prefix, p.name, ", ".join('"%s"' % c for c in p.choices)))
    for p in params:
        if p.convert:
            L.append("static int %s(PyObject *arg, void *config);" % p.convert)
    L.append("static const prs_py_param %s_param_list[] = {" % prefix)
    index = {p.name: i for i, p in enumerate(params)}
    targets = [p.alias_of for p in params if getattr(p, "alias_of", None)]
    assert len(targets) == len(set(targets)), (fname, "a parameter has at most one alias")
    for p in params:
        alias = getattr(p, "alias_of", None)  # P.alias_of: this is another keyword for that P
        flags = " | ".join(D.FLAGS[f][0] for f in p.flags) or "0"
        off = "offsetof(%s, %s)" % (config, getattr(p, "at", None) or p.field) if p.field else "-1"
        choices = "%s_%s_choices" % (prefix, p.name) if p.choices else "NULL"
        L.append('    {"%s", %s, PRS_PK_%s, %s, %s, %s, %s, %s, %s, %s, %d},'
                 % (p.name, '"%s"' % p.field if p.field else "NULL", p.kind, flags, off,
                    p.lo if p.lo is not None else INT64_MIN,
                    p.hi if p.hi is not None else INT64_MAX, choices, listed(p.choices),
                    p.convert or "NULL",
                    index[alias] + 1 if alias else 0))
    if not params:
        L.append("    {NULL, NULL, 0, 0, -1, 0, 0, NULL, NULL, NULL, 0}, /* none: C wants an element */")
    L.append("};")
    maxpos = sum(1 for p in params if not p.kw)
    required = sum(1 for p in params if p.default is None)
    L.append('static const prs_py_params %s_params = {"%s", %d, %d, %d, %s_param_list};'
             % (prefix, fname, len(params), maxpos, required, prefix))
    return L


SLOT_PROTO = {  # type slots: the C signature of their function
    "dealloc": "static void %s(PyObject *self);",
    "traverse": "static int %s(PyObject *self, visitproc visit, void *arg);",
    "clear": "static int %s(PyObject *self);",
    "repr": "static PyObject *%s(PyObject *self);",
    "call": "static PyObject *%s(PyObject *self, PyObject *args, PyObject *kwds);",
    "descr_get": "static PyObject *%s(PyObject *self, PyObject *obj, PyObject *type);",
    "richcompare": "static PyObject *%s(PyObject *self, PyObject *other, int op);",
    "hash": "static Py_hash_t %s(PyObject *self);",
    "bool": "static int %s(PyObject *self);",
    "new": "static PyObject *%s(PyTypeObject *type, PyObject *args, PyObject *kwds);",
    "len": "static Py_ssize_t %s(PyObject *self);",
    "contains": "static int %s(PyObject *self, PyObject *key);",
    "am_await": "static PyObject *%s(PyObject *self);",
    "iter": "static PyObject *%s(PyObject *self);",
    "iternext": "static PyObject *%s(PyObject *self);",
}
SLOT_ID = {"bool": "Py_nb_bool", "len": "Py_sq_length", "contains": "Py_sq_contains",
           "am_await": "Py_am_await"}
OFFSETS = {"weaklist": "__weaklistoffset__", "dict": "__dictoffset__",
           "vectorcall": "__vectorcalloffset__"}


def c_spec(t):
    """The members, slots and PyType_Spec of type t (<Type>_spec)."""
    L = []
    members = [p for p in t.props if p.member]
    if t.offsets or members:
        L.append("static PyMemberDef %s_members[] = {" % t.name)
        for key, field in t.offsets.items():
            L.append('    {"%s", T_PYSSIZET, offsetof(%s, %s), READONLY, NULL},'
                     % (OFFSETS[key], t.obj, field))
        for p in members:
            L.append('    {"%s", T_OBJECT, offsetof(%s, %s), READONLY,\n     %s},'
                     % (p.name, t.obj, p.member, c_str(p.doc)))
        L.append("    {NULL, 0, 0, 0, NULL},")
        L.append("};")
    slots = []
    if t.params is not None:
        slots.append(("new", "%s_new" % t.prefix))
        L.append("static PyObject *%s_new(PyTypeObject *type, PyObject *args, PyObject *kwds);"
                 % t.prefix)
    for slot, fn in t.slots.items():
        fn = fn or "%s_%s" % (t.prefix, slot)
        if not fn.startswith(("Py", "prs_py_")):  # CPython's, common.c's
            L.append(SLOT_PROTO[slot] % fn)
        slots.append((slot, fn))
    L.append("static PyType_Slot %s_slots[] = {" % t.name)
    L.append("    {Py_tp_doc, (void *)%s_DOC}," % t.name)
    for slot, fn in slots:
        L.append("    {%s, %s}," % (SLOT_ID.get(slot, "Py_tp_" + slot), fn))
    if any(not m.slot for m in t.methods):
        L.append("    {Py_tp_methods, %s_methods}," % t.name)
    if any(p.get for p in t.props):
        L.append("    {Py_tp_getset, %s_getset}," % t.name)
    if t.offsets or members:
        L.append("    {Py_tp_members, %s_members}," % t.name)
    L.append("    {0, NULL},")
    L.append("};")
    flags = " | ".join(["Py_TPFLAGS_DEFAULT"] + ["Py_TPFLAGS_" + f for f in t.flags])
    L.append('static PyType_Spec %s_spec = {"%s", sizeof(%s), 0, %s, %s_slots};'
             % (t.name, t.qualname, t.obj, flags, t.name))
    return L


def c_life(t):
    """<prefix>_traverse/_clear/_dealloc of a type declaring its refs."""
    visit, clear = ["    Py_VISIT(o->%s);" % k for k in t.kept], []
    for r in t.refs:
        name, _, n = r.partition("[")
        if n:
            loop = "    for (int i = 0; i < %s; i++) " % n.rstrip("]")
            visit.append(loop + "Py_VISIT(o->%s[i]);" % name)
            clear.append(loop + "Py_CLEAR(o->%s[i]);" % name)
        else:
            visit.append("    Py_VISIT(o->%s);" % name)
            clear.append("    Py_CLEAR(o->%s);" % name)
    if t.clock:
        visit.append("    Py_VISIT(o->%s.obj);" % t.clock)
        clear.append("    prs_py_clock_clear(&o->%s);" % t.clock)
    this = "    %s *o = (%s *)self;" % (t.obj, t.obj)
    p = t.prefix
    if "HAVE_GC" not in t.flags:  # no cycle through it: dealloc alone drops the refs
        return ["static void %s_dealloc(PyObject *self) {" % p] + ([this] if t.refs or t.free else []) + [
            "    PyTypeObject *tp = Py_TYPE(self);"] + clear + (["    " + t.free] if t.free else []) + [
            "    tp->tp_free(self);", "    Py_DECREF(tp);", "}"]
    L = ["static int %s_traverse(PyObject *self, visitproc visit, void *arg) {" % p]
    L += ([this] if visit or getattr(t, "visit", None) else []) + [
        "    Py_VISIT(Py_TYPE(self));"] + visit
    # Type.visit (optional): more the GC must see, a C expression of o, visit, arg (0 or an
    # error); Type.drop: the statement tp_clear runs for it, after the refs are cleared.
    visit_more, drop = getattr(t, "visit", None), getattr(t, "drop", None)
    if drop:
        clear.append("    %s" % drop)
    L.append("    return %s;" % (visit_more or "0"))
    L += ["}", "static int %s_clear(PyObject *self) {" % p]
    L += ([this] if clear else []) + clear + ["    return 0;", "}"]
    uses = "weaklist" in t.offsets or "o->" in (t.free or "") or t.kept
    L += ["static void %s_dealloc(PyObject *self) {" % p] + ([this] if uses else []) + [
          "    PyTypeObject *tp = Py_TYPE(self);", "    PyObject_GC_UnTrack(self);"]
    if "weaklist" in t.offsets:
        L.append("    if (o->%s) PyObject_ClearWeakRefs(self);" % t.offsets["weaklist"])
    L.append("    %s_clear(self);" % p)
    if t.free:
        L.append("    " + t.free)
    L += ["    Py_CLEAR(o->%s);" % k for k in t.kept]
    L += ["    tp->tp_free(self);", "    Py_DECREF(tp);", "}"]
    return L


def c_repr(t):
    """<prefix>_repr: Name(attr=repr(value), ...); an entry (label, expr) shows
    the C expression (a new reference over `o`) instead of an attribute."""
    labels = [a if isinstance(a, str) else a[0] for a in t.repr]
    exprs = [a[1] for a in t.repr if not isinstance(a, str)]
    L = ["static PyObject *%s_repr(PyObject *self) {" % t.prefix]
    if exprs:
        L.append("    %s *o = (%s *)self;" % (t.obj, t.obj))
    L.append("    static const char *const attrs[] = {%sNULL};" % "".join('"%s", ' % a for a in labels))
    if exprs:
        L.append("    PyObject *vals[] = {%s};" % ", ".join(
            "NULL" if isinstance(a, str) else a[1] for a in t.repr))
    return L + ['    return prs_py_repr_attrs(self, "%s", attrs, %s);'
                % (t.name, "vals" if exprs else "NULL"), "}"]


def c_parse(t):
    """<Type>_parse(): a tp_new's whole configuration step - the core's
    defaults, the declared parameters, the core's check, its error worded.
    Without a check, the declared ranges are the whole validation."""
    if not t.check:
        return ["/* The module state, the config (defaults, then the arguments) and the",
                " * argument objects for %s's tp_new. 0 or -1. */" % t.name,
                "static int %s_parse(PyTypeObject *type, PyObject *args, PyObject *kwds, "
                "prs_py_state **st," % t.name, "    %s *cfg, PyObject **vals) {" % t.config,
                "    if (!(*st = prs_py_state_of_type(type))) return -1;", "    %s(cfg);" % t.init,
                "    return prs_py_parse_params_tuple(&%s_params, args, kwds, cfg, vals);" % t.name,
                "}"]
    return [
        "/* The module state, the config (defaults, then the arguments) and the",
        " * argument objects for %s's tp_new; validated by %s. 0 or -1. */" % (t.name, t.check),
        "static int %s_parse(PyTypeObject *type, PyObject *args, PyObject *kwds, prs_py_state **st,"
        % t.name,
        "    %s *cfg, PyObject **vals) {" % t.config,
        "    if (!(*st = prs_py_state_of_type(type))) return -1;",
        "    %s(cfg);" % t.init,
        "    if (prs_py_parse_params_tuple(&%s_params, args, kwds, cfg, vals) < 0) return -1;"
        % t.name,
        "    prs_config_error why;",
        "    int rc = %s(cfg, &why);" % t.check,
        "    if (rc) prs_py_config_error(*st, rc, &why, &%s_params, vals, cfg);" % t.name,
        "    return rc ? -1 : 0;",
        "}",
    ]


def c_arg_checks(t):
    """The checks of argument objects a P declares (P.instance: an instance of
    that module type, or None when None is its default; P.nonempty: a str
    that is not empty; P.is_tuple: a tuple), in a generated tp_new."""
    L = []
    for p in t.params:
        arg = "v[P_%s_%s]" % (t.name, p.name)
        if getattr(p, "instance", None):
            none = p.default == "None"
            L += ["    if (%s%s && !PyObject_TypeCheck(%s, PRS_PY_TYPE(st, %s)))"
                  % (arg, " && %s != Py_None" % arg if none else "", arg, p.instance),
                  '        return PyErr_Format(PyExc_TypeError, "%s must be a %s%s, not %%.200s: %%R",'
                  % (p.name, p.instance, " or None" if none else ""),
                  "                            Py_TYPE(%s)->tp_name, %s);" % (arg, arg)]
        if getattr(p, "is_tuple", False):
            L += ["    if (%s && !PyTuple_Check(%s))" % (arg, arg),
                  '        return PyErr_Format(PyExc_TypeError, "%s must be a tuple, not %%.200s: %%R",'
                  % p.name, "                            Py_TYPE(%s)->tp_name, %s);" % (arg, arg)]
        if getattr(p, "nonempty", False):
            L += ["    if (%s && PyUnicode_GET_LENGTH(%s) == 0)" % (arg, arg),
                  '        return PyErr_Format(PyExc_ValueError, "%s must be a non-empty str, '
                  'got %%R", %s);' % (p.name, arg)]
    return L


def c_new(t):
    """<prefix>_new of a type declaring `build`: the configuration step (with
    the core's check when the type has one), the object, the argument objects
    it keeps (None when not given), its clock, then `build`, a C statement
    over o, cfg and st that may set rc: nonzero with an exception set, or a
    status (the core's refusal, even -1: PRS_EINVAL) that prs_py_error() words."""
    n = "P_%s__COUNT" % t.name
    L = ["static PyObject *%s_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {" % t.prefix,
         "    prs_py_state *st;", "    PyObject *v[%s];" % (n if t.params else "1")]
    if t.params and t.params[-1].posonly and not t.params[-1].kw:  # all positional-only
        L += ["    if (kwds && PyDict_GET_SIZE(kwds))",
              '        return PyErr_Format(PyExc_TypeError, "%s() takes positional arguments only");'
              % t.name]
    if t.init:
        L += ["    %s cfg;" % t.config,
              "    if (%s_parse(type, args, kwds, &st, &cfg, v) < 0) return NULL;" % t.name]
    else:  # the declared defaults of whole-number fields, as a method's (c_body)
        L += ["    %s cfg = {0};" % t.config if t.config else "    void *cfg = NULL;"]
        L += ["    cfg.%s = %s;" % (p.field, p.default) for p in t.params
              if p.field and p.kind in ("N", "COUNT", "INT") and p.default not in (None, "None")]
        L += ["    if (!(st = prs_py_state_of_type(type)) ||",
              "        prs_py_parse_params_tuple(&%s_params, args, kwds, %s, v) < 0)"
              % (t.name, "&cfg" if t.config else "cfg"),
              "        return NULL;"]
    L += c_arg_checks(t)
    L += ["    %s *o = (%s *)type->tp_alloc(type, 0);" % (t.obj, t.obj),
          "    if (!o) return NULL;", "    int rc = 0;"]
    for field, param in t.keep.items():
        L.append("    o->%s = Py_NewRef(v[P_%s_%s] ? v[P_%s_%s] : Py_None);"
                 % (field, t.name, param, t.name, param))
    if t.clock:
        L.append("    if (prs_py_clock_init(st, v[P_%s_clock], &o->%s) < 0) rc = -1;"
                 % (t.name, t.clock))
    if isinstance(t.build, list):  # several statements
        L += ["    if (!rc) {"] + ["        " + b for b in t.build] + ["    }"]
    elif t.build:
        L.append("    if (!rc) %s" % t.build)
    L += ["    if (!rc) return (PyObject *)o;",
          "    Py_DECREF(o);",
          "    return PyErr_Occurred() ? NULL : prs_py_error(st, rc, NULL);", "}"]
    return L


def c_body(t, head, x):
    """A function over the object `o` (and the clock read once into `now`)
    returning x.expr, or None after x.call."""
    L = [head]
    init = getattr(x, "init", None)  # M.init: the C initializer of `a` (the defaults)
    if re.search(r"\bo\b", " ".join(filter(None, (x.expr, getattr(x, "call", None), x.now, init)))):
        L.append("    %s *o = (%s *)self;" % (t.obj, t.obj))
    if getattr(x, "params", None):  # a method's declared arguments, parsed into `a`
        fl = meth_flags(x)
        given = {"METH_O": "&arg, 1, NULL", "METH_FASTCALL": "args, nargs, NULL"}
        if x.config:  # no config: arguments without a field, read from v[P_<Type>_<m>_<p>]
            L.append("    %s a = %s;" % (x.config, init or "{0}"))
            # the declared defaults of whole-number and timeout fields (M.init, when
            # given, sets every field itself)
            for p in x.params if not init else ():
                if p.field and p.kind in ("N", "COUNT", "INT") and p.default not in (None, "None"):
                    L.append("    a.%s = %s;" % (p.field, p.default))
                elif p.field and p.kind == "TIMEOUT" and p.default == "None":
                    L.append("    a.%s = PRS_NEVER;" % p.field)
        parse = "prs_py_parse_params(&%s_%s_params, %s, %s, v) < 0" % (
            t.name, x.name, given.get(fl, "args, nargs, kwnames"), "&a" if x.config else "NULL")
        req = [p for p in x.params if p.default is None]
        if fl == "METH_O" or any(p.kind != "OBJECT" or getattr(p, "alias_of", None) for p in req) \
                or any(getattr(p, "alias_of", None) for p in x.params):
            L += ["    PyObject *v[%d];" % len(x.params), "    if (%s) return NULL;" % parse]
        else:  # a call with just its required objects, as is: the parser would only hand them over
            plain = "nargs == %d%s" % (len(req), " && !kwnames" if "KEYWORDS" in fl else "")
            L.append("    PyObject *v[%d] = {NULL};" % len(x.params))
            pos = [p for p in x.params if not p.kw]
            if req and len(pos) > len(req) and all(p.kind == "OBJECT" for p in pos):
                # optional objects given positionally too (None stays None, as the parser leaves it)
                plain = plain.replace("nargs == %d" % len(req), "nargs >= %d && nargs <= %d" % (len(req), len(pos)))
                L += ["    if (%s) {" % plain, "        for (Py_ssize_t i = 0; i < nargs; i++) v[i] = args[i];",
                      "    } else if (%s) {" % parse, "        return NULL;", "    }"]
            elif req:
                L += ["    if (%s) {" % plain] + ["        v[%d] = args[%d];" % (i, i) for i in range(len(req))]
                L += ["    } else if (%s) {" % parse, "        return NULL;", "    }"]
            else:
                L.append("    if ((nargs%s) && %s) return NULL;" % (" || kwnames" if "KEYWORDS" in fl else "", parse))
    if x.now:
        L += ["    int64_t now;", "    if (prs_py_clock_now(%s, &now) < 0) return NULL;" % x.now]
    if x.expr:
        return L + ["    return %s;" % x.expr, "}"]
    return L + ["    %s;" % x.call, "    Py_RETURN_NONE;", "}"]


class _Module:
    """What c_body reads of a type, for a module function of binding file `cfile`."""
    def __init__(self, cfile):
        self.name, self.obj = cfile, None


def c_func(cfile, f, proto):
    """A module function declared as an expression or statement (as a method's:
    its declared params parsed into `a` and `v`) over `st`, the module state."""
    L = c_body(_Module(cfile), proto.replace(";", " {"), f)
    if re.search(r"\bst\b", " ".join(filter(None, (f.expr, f.call)))):
        L.insert(1, "    prs_py_state *st = PyModule_GetState(module);")
    return L


def c_rate_method(t, m):
    """A rate method's C function: its declared arguments (the usual
    positional calls straight, as prs_py_parse_params would parse them), then
    prs_py_rate_method over the type's target; first, with m.fast, the hot
    path of allow or check straight into the core (m.fast filling `d` and
    returning a status, or, without `d`, returning 1 / 0 / a negative
    status): allow's bool, check's Decision (its denied_by `by` when m.fast
    fills it)."""
    L = [PROTO[meth_flags(m)].replace(";", " {") % m.cname(t.prefix)]
    if m.fast:
        fills = "&d" in m.fast
        L += ["    %s *o = (%s *)self;" % (t.obj, t.obj),
              "    if (nargs == %d && !kwnames && o->%s.kind == PRS_CLOCK_MONOTONIC) {"
              % (1 if t.rate_key else 0, t.clock)] + (["        prs_decision d;"] if fills else [])
        if t.rate_key:
            L += ["        prs_py_bytes key;", "        if (key_arg(args[0], &key) < 0) return NULL;"]
        assert fills or m.returns == "bool", (t.name, m.name)
        by = "&by" in m.fast  # a group's first denying member
        if by:
            L.append("        int by = -1;")
        ret = ("prs_py_decision_new_by(prs_py_state_of(self), &d, %s)" % ("by" if by else "-1")
               if m.returns == "Decision" else "PyBool_FromLong(%s)" % ("d.allowed" if fills else "rc"))
        L += ["        int rc = %s;" % m.fast,
              "        if (rc%s) return prs_py_error(prs_py_state_of(self), rc, NULL);"
              % ("" if fills else " < 0"),
              "        return %s;" % ret, "    }"]
    k = 1 if t.rate_key else 0  # the usual calls, ([key][, n]), need no matching by name
    assert [p.name for p in m.params[k:k + 1]] == ["n"], (t.name, m.name)
    L += ["    prs_py_rate_args a = {1, PRS_NEVER};", "    PyObject *v[%d];" % len(m.params),
          "    if (!kwnames && nargs >= %d && nargs <= %d) {" % (k, k + 1)]
    if k:
        L.append("        v[0] = args[0];")
    return L + ['        if (nargs > %d && prs_py_parse_n(args[%d], "n", &a.n) < 0) return NULL;' % (k, k),
                "    } else if (prs_py_parse_params(&%s_%s_params, args, nargs, kwnames, &a, v) < 0) {"
                % (t.name, m.name),
                "        return NULL;", "    }",
                "    return prs_py_rate_method(self, PRS_PY_%s, %s, %s, &a);"
                % (m.name.lstrip("_").upper(), t.rate, "v[0]" if t.rate_key else "NULL"), "}"]


def gen_header(cfile, types, funcs):
    L = ["/* Generated by tools/gen_binding.py from tools/binding_decl.py: do not edit. */",
         "#ifndef PRS_GEN_%s_H" % cfile.upper(), "#define PRS_GEN_%s_H" % cfile.upper(), "",
         "#include <stddef.h>", ""]
    for t in types:
        L.append("/* ---- %s ---- */" % t.name)
        if t.params is not None:
            L += c_params(t.name, t.name, t.params, t.config)
        if t.init:
            L += c_parse(t)
        doc = t.doc
        if t.params is not None:
            doc = text_signature(t.name, params_sig(t.params, False), None) + "\n--\n\n" + doc
        L.append("#define %s_DOC \\\n    %s" % (t.name, c_str(doc, True)))
        for m in t.methods:
            if m.params is not None:
                L += c_params("%s_%s" % (t.name, m.name), m.name, m.params, m.config)
        table = [m for m in t.methods if not m.slot]
        if any(m.rate for m in table):
            L.append("static int %s(PyObject *self, PyObject *key, prs_py_rate *r);" % t.rate)
        for m in table:
            if m.rate:
                L += c_rate_method(t, m)
            elif m.expr or m.call:
                L += c_body(t, PROTO[meth_flags(m)].replace(";", " {") % m.cname(t.prefix), m)
            else:
                L.append(PROTO[meth_flags(m)] % m.cname(t.prefix))
        if table:
            L.append("static PyMethodDef %s_methods[] = {" % t.name)
            for m in table:
                doc = text_signature(m.name, method_sig(m, False)) + "\n--\n\n" + m.doc
                fl = meth_flags(m)
                fn = m.cname(t.prefix)
                if fl != "METH_NOARGS" and fl != "METH_O":
                    fn = "(PyCFunction)(void (*)(void))" + fn
                L.append('    {"%s", %s, %s,\n     %s},' % (m.name, fn, fl, c_str(doc)))
            L.append("    {NULL, NULL, 0, NULL},")
            L.append("};")
        getters = []
        for p in t.props:
            if p.expr:
                p.get = p.get or "%s_get_%s" % (t.prefix, p.name)
                L += c_body(t, "static PyObject *%s(PyObject *self, void *closure) {" % p.get, p)
                getters.append(p.get)
            if p.get and p.get not in getters and not p.get.startswith(("PyObject_", "prs_py_")):
                getters.append(p.get)
                L.append("static PyObject *%s(PyObject *self, void *closure);" % p.get)
        if t.props and any(p.get for p in t.props):
            L.append("static PyGetSetDef %s_getset[] = {" % t.name)
            for p in t.props:
                if not p.get:
                    continue
                closure = "(void *)(intptr_t)%d" % p.closure if p.closure is not None else "NULL"
                if p.clock:
                    closure = "(void *)offsetof(%s, %s)" % (t.obj, p.clock)
                L.append('    {"%s", %s, %s, %s, %s},' % (p.name, p.get, p.set or "NULL",
                                                     c_str(p.doc) if p.doc else "NULL", closure))
            L.append("    {NULL, NULL, NULL, NULL, NULL},")
            L.append("};")
        if t.obj:
            L += c_spec(t)
        if t.refs is not None:
            L += c_life(t)
        if t.build is not None:
            L += c_new(t)
        for m in t.methods:  # a __len__ declared as an expression over `o`
            if m.slot and m.name == "__len__" and m.expr:
                L += ["static Py_ssize_t %s(PyObject *self) {" % (t.slots.get("len") or t.prefix + "_len"),
                      "    %s *o = (%s *)self;" % (t.obj, t.obj), "    return (Py_ssize_t)(%s);" % m.expr, "}"]
        for m in t.methods:  # a __call__ taking no arguments, declared as an expression
            if m.slot and m.name == "__call__" and m.expr:
                L += ["static PyObject *%s(PyObject *self, PyObject *args, PyObject *kwds) {"
                      % (t.slots.get("call") or t.prefix + "_call"),
                      "    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds)))",
                      '        return PyErr_Format(PyExc_TypeError, "%s() takes no arguments when '
                      'called");' % t.name,
                      "    return %s;" % m.expr, "}"]
        if t.repr is not None:
            L += c_repr(t)
        L.append("")
    if funcs:
        for f in funcs:
            proto = PROTO[meth_flags(f)].replace("PyObject *self", "PyObject *module") % f.cname("")
            if f.params is not None:
                L += c_params("%s_%s" % (cfile, f.name), f.name, f.params, f.config)
            L += c_func(cfile, f, proto) if f.expr or f.call else [proto]
        L.append("static PyMethodDef %s_functions[] = {" % cfile)
        for f in funcs:
            doc = text_signature(f.name, method_sig(f, False), None) + "\n--\n\n" + f.doc
            fl = meth_flags(f)
            fn = f.cname("")
            if fl != "METH_NOARGS" and fl != "METH_O":
                fn = "(PyCFunction)(void (*)(void))" + fn
            L.append('    {"%s", %s, %s,\n     %s},' % (f.name, fn, fl, c_str(doc)))
        L.append("    {NULL, NULL, 0, NULL},")
        L.append("};")
        L.append("")
    if cfile in D.SETUP:  # the file's whole registration, called by module.c
        L.append("int prs_py_register_%s(PyObject *m, prs_py_state *st) {" % cfile)
        if D.SETUP[cfile]:
            L.append("    if (%s(m, st) < 0) return -1;" % D.SETUP[cfile])
    else:
        L.append("static int %s_add_types(PyObject *m, prs_py_state *st) {" % cfile)
    for name in D.CONSTANTS.get(cfile, []):  # a name, or (Python name, C expression)
        name, value = name if isinstance(name, tuple) else (name, name)
        L.append('    if (PyModule_AddIntConstant(m, "%s", %s) < 0) return -1;' % (name, value))
    for t in types:
        if t.obj and not t.base:
            L.append("    if (prs_py_add_type(m, st, PRS_SLOT_%s, &%s_spec, NULL) < 0) return -1;"
                     % (t.slot, t.name))
    L.append("    return %s;" % ("PyModule_AddFunctions(m, %s_functions)" % cfile if funcs else "0"))
    L += ["}", "", "#endif"]
    return "\n".join(L) + "\n"


def gen_module():
    """gen/module.h: the module state's slots, one per declared type (the
    algorithm table's limiter types contiguous, in its order) and per
    exception class, and the exception classes as an X-macro."""
    L = ["/* Generated by tools/gen_binding.py from tools/binding_decl.py: do not edit. */",
         "#ifndef PRS_GEN_MODULE_H", "#define PRS_GEN_MODULE_H", "", "enum prs_py_slot {"]
    L += ["    PRS_SLOT_%s," % t.slot for t in D.TYPES]
    L += ["    PRS_SLOT_%s," % e for e in D.STATE]
    L += ["    PRS_SLOT_%s," % e for e in D.EXCEPTIONS]
    L += ["    PRS_SLOT__COUNT", "};"]
    L.append("/* The kinds of declared parameters and their flags (binding_decl.py KINDS, FLAGS). */")
    L += ["enum prs_py_kind {"] + ["    PRS_PK_%s, /* %s */" % (k, doc.replace("\n", "\n       "))
                                   for k, doc in D.KINDS.items()] + ["};"]
    L += ["#define %s %du /* %s */" % (macro, bit, doc) for macro, bit, doc in D.FLAGS.values()]
    algos = [t for t in D.TYPES if t.base == "_Limiter"]
    first = D.TYPES.index(algos[0])
    if D.TYPES[first:first + len(algos)] != algos:
        raise SystemExit("the limiter types must be declared together, in the algorithm table's order")
    L.append("#define PRS_SLOT__ALGO_FIRST PRS_SLOT_%s" % algos[0].slot)
    L.append("/* The binding files, each registered by prs_py_register_<file>(m, st), in order. */")
    L.append("#define PRS_PY_REGISTER_FILES(X) %s" % " ".join("X(%s)" % f for f in D.MODULE))
    L.append("#define PRS_PY_EXCEPTIONS(X) %s" % " ".join("X(%s)" % e for e in D.EXCEPTIONS))
    L.append("/* The exception of each status (common.c's table). */")
    L += ["#define PRS_PY_EXC_%s EXC_%s(%s)" % (status, "MODULE" if exc in D.EXCEPTIONS else "BUILTIN", exc)
          for status, exc in D.STATUS_EXCEPTIONS.items()]
    return "\n".join(L + ["", "#endif"]) + "\n"


def wrap_def(head, sig, tail, indent):
    line = "%s%s(%s)%s" % (indent, head, sig, tail)
    if len(line) <= 100:
        return [line]
    out, cur = [], "%s%s(" % (indent, head)
    pad = " " * len(cur)
    parts = split_top(sig)
    for i, part in enumerate(parts):
        piece = part + (", " if i < len(parts) - 1 else ")" + tail)
        if len(cur) + len(piece.rstrip()) > 100 and cur.strip() and not cur.endswith("("):
            out.append(cur.rstrip())
            cur = pad
        cur += piece
    out.append(cur)
    return out


def gen_stub(t):
    L = ["@%s" % d for d in t.decorators()]
    L.append("class %s%s:" % (t.name, "(%s)" % t.base if t.base else ""))
    if t.stub_head:
        L += ["    " + s for s in t.stub_head]
    if t.params is not None:
        sig = params_sig(t.params, True)
        L += wrap_def("def __new__", "cls" + (", " + sig if sig else ""), " -> Self: ...", "    ")
    for m in t.methods:
        sig = method_sig(m, True)
        L += wrap_def("def " + m.name, "self" + (", " + sig if sig else ""),
                      " -> %s: ..." % m.returns, "    ")
    for p in t.props:
        if p.type is None:
            continue
        L.append("    @property")
        L.append("    def %s(self) -> %s: ..." % (p.name, p.type))
        if p.set:
            L += ["    @%s.setter" % p.name, "    def %s(self, value: %s) -> None: ..." % (p.name, p.type)]
    if t.stub_tail:
        L += ["    " + s for s in t.stub_tail]
    return L


def gen_func_stub(f):
    return wrap_def("def " + f.name, method_sig(f, True), " -> %s: ..." % f.returns, "")


def splice_stub(text):
    """_core.pyi with every `# <gen Name>` ... `# </gen>` block regenerated."""
    blocks = {t.name: gen_stub(t) for t in D.TYPES}
    for cfile, funcs in D.FUNCTIONS.items():
        blocks["%s functions" % cfile] = [s for f in funcs for s in gen_func_stub(f)]
    out, lines, i, seen = [], text.split("\n"), 0, set()
    while i < len(lines):
        line = lines[i]
        out.append(line)
        if line.startswith("# <gen ") and line.endswith(">"):
            name = line[len("# <gen "):-1]
            if name not in blocks:
                raise SystemExit("_core.pyi: no declaration for %r" % name)
            seen.add(name)
            while not lines[i].startswith("# </gen>"):
                i += 1
            out += blocks[name]
            out.append(lines[i])
        i += 1
    missing = set(blocks) - seen
    if missing:
        raise SystemExit("_core.pyi lacks `# <gen Name>` blocks for: " + ", ".join(sorted(missing)))
    return "\n".join(out)


def outputs():
    files = {}
    cfiles = sorted({t.cfile for t in D.TYPES} | set(D.FUNCTIONS) | set(D.SETUP))
    for cfile in cfiles:
        types = [t for t in D.TYPES if t.cfile == cfile]
        files[os.path.join("csrc", "python", "gen", cfile + ".h")] = gen_header(
            cfile, types, D.FUNCTIONS.get(cfile, []))
    files[os.path.join("csrc", "python", "gen", "module.h")] = gen_module()
    stub = os.path.join("pyresilience", "_core.pyi")
    with open(os.path.join(ROOT, stub)) as f:
        files[stub] = splice_stub(f.read())
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = ap.parse_args()
    drift = []
    for rel, text in outputs().items():
        path = os.path.join(ROOT, rel)
        old = open(path).read() if os.path.exists(path) else None
        if old == text:
            continue
        drift.append(rel)
        if not args.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if args.check and drift:
        print("out of date (run tools/gen_binding.py): " + ", ".join(drift))
        return 1
    for rel in drift:
        print("gen_binding: wrote " + rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
