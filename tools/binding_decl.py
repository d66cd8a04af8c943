"""The declared binding: every converted type of pyresilience._core, stated once.

tools/gen_binding.py turns this into csrc/python/gen/<cfile>.h (parameter
tables, docstrings with text signatures, method and property tables) and the
type's block in pyresilience/_core.pyi. See its docstring for how to convert a
type. The kinds of parameters and their flags: KINDS and FLAGS below.
"""
import os
import re

# The kinds of parameters: what the argument may be and what its field gets
# (enum prs_py_kind in gen/module.h, PRS_PK_<kind>; common.c converts each).
KINDS = {
    "COUNT": "int64_t field: an int or an integral float in [lo, hi]; with no range\n"
             "declared, beyond int64 saturates (the core checks it)",
    "REAL": "double field: prs_py_parse_real with flags (zero, neg, inf)",
    "DURATION": "int64_t field, ns, from float seconds (flags); +inf -> PRS_NEVER;\n"
                "a positive value is at least 1 ns",
    "TIMEOUT": "int64_t field, ns: None or +inf -> PRS_NEVER (prs_py_parse_timeout)",
    "BOOL": "int field: the argument's truth value",
    "INT": "int64_t field: an int (not bool, no float) in [lo, hi]",
    "ENUM": "int field: the index of the str in choices",
    "CLOCK": "no field: the binding passes it to prs_py_clock_init",
    "CALLABLE": "no field: a callable",
    "STR": "a str; a field (const char *) gets its UTF-8, borrowed from the\n"
           "argument (NUL refused)",
    "OBJECT": "no field: anything; the binding converts it",
    "CONVERT": "convert(arg, config) fills what it needs (like PyArg \"O&\")",
    "N": "int64_t field: a request weight (prs_py_parse_n); never None",
    "BYTES": "prs_py_bytes field: a bytes object's buffer and length (borrowed\n"
             "for the call)",
}
# The flags of a P: name -> (C macro, bit, meaning).
FLAGS = {
    "zero": ("PRS_PY_ZERO_OK", 1, "accept 0"),
    "neg": ("PRS_PY_NEG_OK", 2, "accept negatives"),
    "inf": ("PRS_PY_INF_OK", 4, "accept +inf"),
    "none": ("PRS_PY_NONE_OK", 8, "None accepted: leaves the field at its default"),
    "none_inf": ("PRS_PY_NONE_INF", 16, "None means +inf (REAL) or PRS_NEVER (DURATION)"),
    "double": ("PRS_PY_DOUBLE", 32, "COUNT: the field is a double"),
    "trunc": ("PRS_PY_TRUNC", 64, "DURATION: a positive value under 1 ns stays 0 (the core refuses it)"),
    "sat": ("PRS_PY_SAT", 128, "INT: an int beyond int64 is hi (an attempt index, a wait in ns)"),
}


class P:
    """A parameter: Python name, kind, stub type, default (source text; None:
    required), the core config field it fills."""

    def __init__(self, name, kind, type, default=None, field=None, lo=None, hi=None, flags=(),
                 choices=None, kw=False, posonly=False, doc="", convert=None, instance=None,
                 nonempty=False, is_tuple=False):
        assert kind in KINDS and set(flags) <= set(FLAGS), (name, kind, flags)
        self.name, self.kind, self.type, self.default = name, kind, type, default
        # checked by a generated tp_new
        self.instance, self.nonempty, self.is_tuple = instance, nonempty, is_tuple
        self.convert = convert
        self.field, self.lo, self.hi, self.flags = field, lo, hi, tuple(flags)
        self.choices, self.kw, self.posonly, self.doc = choices, kw, posonly, doc


class M:
    """A method. Either `params` (parsed by prs_py_parse_params into struct
    `config`) or `sig` (stub syntax without self: the text signature is derived
    from it). C function: <prefix>_<name without leading _>, or `c`. slot=True:
    a type slot (__call__, ...), in the stub only. rate=True: one of the rate
    methods (allow, check, peek, acquire, _waiter), whose C function the
    header defines over the type's `rate` target (prs_py_rate_method), its
    params those `sig` names (rate_params); with `fast`, the status
    expression of allow's or check's hot path (n=1 on the monotonic clock, nothing to
    parse; over `o` and `d`, the decision, and - with the type's rate_key -
    `key`, the prs_py_bytes its file's key_arg() makes of the one argument). A
    method may be a C statement `call` (returning None) or expression `expr`
    over `o` (and `now`), as Prop's, and `a`, its declared params parsed into
    a `config` zeroed, or set by `init` (a C initializer over `o`): the header
    defines it (a call giving just the required OBJECT arguments skips the
    parser). So is a slot __call__ with an `expr`: a call without arguments (a
    clock's now()), a slot __len__ with an `expr` (a size), and a module function with an `expr` or `call` (over
    `st`, the module state, instead of `o`)."""

    def __init__(self, name, sig="", returns="None", doc="", params=None, config=None, c=None,
                 flags=None, slot=False, rate=False, expr=None, call=None, now=None, init=None,
                 fast=None):
        self.name, self.sig, self.returns, self.doc, self.init = name, sig, returns, doc, init
        self.fast = fast
        self.rate, self.expr, self.call, self.now = rate, expr, call, now
        self.params, self.config, self.c, self.flags, self.slot = params, config, c, flags, slot
        if rate and params is None:
            self.params, self.config = rate_params(sig), "prs_py_rate_args"

    def cname(self, prefix):
        if self.c:
            return self.c
        return (prefix + "_" if prefix else "") + self.name.lstrip("_")


# The arguments a rate method's signature may name (into prs_py_rate_args):
# key (the binding's), n, timeout and tokens_needed (an alias of n).
RATE_ARGS = {"key": dict(kind="OBJECT"), "n": dict(kind="N", field="n"),
             "timeout": dict(kind="TIMEOUT", field="timeout_ns"),
             "tokens_needed": dict(kind="N", field="n")}


def rate_params(sig):
    """The declared params of a rate method's `sig` (stub syntax over
    RATE_ARGS' names): the stub and text signature come out as written."""
    params, kw = [], False
    for part in filter(None, (x.strip() for x in re.split(r",(?![^\[]*\])", sig))):
        if part == "*":
            kw = True
            continue
        name, rest = part.split(":", 1)
        typ, _, default = rest.partition("=")
        p = P(name.strip(), type=typ.strip(), default=default.strip() or None, kw=kw,
              **RATE_ARGS[name.strip()])
        if p.name == "tokens_needed":
            p.alias_of = "n"
        params.append(p)
    return params


class Prop:
    """A property: stub type (None: not in the stub), doc, C getter (and its
    closure index), C setter (None: read-only); or `member`, an object field
    read as is (a read-only T_OBJECT member: NULL reads as None); or `clock`,
    a prs_py_clock field read as the clock object given. Getters and setters
    named PyObject_* are CPython's, prs_py_* common.c's (not declared again).
    Or `expr`: the header defines the getter <prefix>_get_<name>, returning
    the C expression (a new reference) over `o`, the object, and - with `now`,
    the address of a prs_py_clock - `now`, the clock read once."""

    def __init__(self, name, type, doc, get=None, closure=None, set=None, member=None, clock=None,
                 expr=None, now=None):
        self.name, self.type, self.doc, self.get, self.closure = name, type, doc, get, closure
        self.expr, self.now = expr, now
        self.set, self.member, self.clock = set, member, clock
        if clock:
            self.get = "prs_py_get_clock"


class Type:
    """A type: its object struct `obj`, the core config struct its params fill,
    Py_TPFLAGS_* `flags` besides DEFAULT, type `slots` besides doc/new/
    methods/getset/members ({slot: C function}, None: <prefix>_<slot>), and
    `offsets` ({"weaklist"|"dict"|"vectorcall": obj field}). With `init` and
    `check` (the core's prs_X_config_init and prs_X_config_check), the header
    has <Type>_parse(): defaults, arguments, the core's check and its error,
    the whole configuration step of tp_new (without `init`, the config starts
    zeroed with the declared defaults of its whole-number params, as a
    method's does). A type that is not
    BASETYPE is @final in the stub; one that is, with its own layout, is a
    @disjoint_base.

    `refs` (object fields holding strong references, "states[3]" for an
    array), `clock` (a prs_py_clock field) and `free` (a C statement run on
    `o`, the object, after its references are dropped: the core's free)
    declare the object's life cycle: the header then defines
    <prefix>_traverse, <prefix>_clear and <prefix>_dealloc (a GC type; the
    weak references are cleared when offsets has "weaklist"). The `kept`
    fields are visited but outlive tp_clear: dealloc drops them after `free`
    (a core that borrows them until it is freed).

    `build` (a C statement, or a list of them, over `o`, the new object, `cfg`, the parsed
    config, and `st`, which may set `rc` to the core's status): the header
    defines tp_new (<prefix>_new): parse (and check), allocate, `keep` each
    argument object ({field: param}, None when not given) and the clock,
    then build; a refusal (rc nonzero, no exception set) is worded by prs_py_error().

    `rate` (a prs_py_rate_fn, with rate_key when its methods take a key):
    what the rate methods M(rate=True) decide on.
    `repr` (attribute names): the header defines <prefix>_repr, the type's
    name and each attribute as name=repr(value) ("name?": left out when None;
    a (label, expr) entry: the C expression over `o`, a new reference). A
    type that is not HAVE_GC with `refs` gets only <prefix>_dealloc. <cfile>_add_types(m, st)
    adds every type with an `obj` and no `base` (those with one come from the
    algorithm table) to the module, in module-state slot PRS_SLOT_<slot>
    (default: the name without a leading _), then the module functions."""

    def __init__(self, name, cfile, prefix, doc, obj=None, params=None, config=None, methods=(),
                 props=(), flags=(), slots=None, offsets=None, qualname=None, base=None,
                 stub_head=(), stub_tail=(), init=None, check=None, refs=None, clock=None,
                 free=None, kept=(), repr=None, slot=None, rate=None, rate_key=False,
                 build=None, keep=None):
        self.rate, self.rate_key = rate, rate_key
        self.build, self.keep = build, dict(keep or {})
        self.refs, self.clock, self.free, self.kept = refs, clock, free, list(kept)
        self.repr, self.slot = repr, slot or name.lstrip("_")
        self.name, self.cfile, self.prefix, self.doc = name, cfile, prefix, doc
        self.init, self.check = init, check
        self.obj, self.params, self.config = obj, params, config
        self.methods, self.props = list(methods), list(props)
        self.flags, self.slots, self.offsets = tuple(flags), dict(slots or {}), dict(offsets or {})
        if repr is not None:
            self.slots.setdefault("repr", None)
        if refs is not None:
            for slot in ("dealloc", "traverse", "clear") if "HAVE_GC" in flags else ("dealloc",):
                self.slots.setdefault(slot, None)
        self.qualname = qualname or "pyresilience._core." + name
        self.base = base
        self.stub_head, self.stub_tail = list(stub_head), list(stub_tail)
        kw = False
        for p in params or ():
            kw = p.kw = kw or p.kw

    def decorators(self):
        if "BASETYPE" not in self.flags:
            return ["final"]
        return ["disjoint_base"] if self.obj != "PyObject" else []


CLOCK_OBJ = "Union[ManualClock, MonotonicClock, Callable[[], float]]"

# ---- clocks ----------------------------------------------------------------------

# A clock's time read as float seconds (the object `o`: a ManualClock).
MANUAL_NOW = "PyFloat_FromDouble((double)atomic_load_explicit(&o->now_ns, memory_order_acquire) / 1e9)"
SECONDS = P("seconds", "DURATION", "float", field="ns", flags=("zero", "trunc"), posonly=True)

MANUAL_CLOCK = Type(
    "ManualClock", "clock", "manual", obj="prs_py_manual_clock", qualname="pyresilience.ManualClock",
    flags=("BASETYPE", "IMMUTABLETYPE"), slots={"call": None}, refs=[], repr=[("start", MANUAL_NOW)],
    config="prs_py_manual_clock_args", build="atomic_store(&o->now_ns, cfg.ns);",
    params=[P("start", "DURATION", "float", "0.0", field="ns", flags=("zero", "neg"),
              doc="The initial time, seconds.")],
    doc="A clock that moves only when told to: for deterministic tests. Every primitive\n"
        "accepts clock=ManualClock(); waits of the library (acquire, retry sleeps, ...)\n"
        "advance it by the wait instead of sleeping. Calling the clock returns now().",
    methods=[
        M("now", returns="float", expr=MANUAL_NOW, doc="The clock's time in seconds (float)."),
        M("now_ns", returns="int", expr="PyLong_FromLongLong(atomic_load(&o->now_ns))",
          doc="The clock's time in integer nanoseconds."),
        M("advance", params=[SECONDS], config="prs_py_manual_clock_args",
          call="prs__atomic_sat_add(&o->now_ns, a.ns)",
          doc="Move the clock forward by `seconds` (finite, >= 0); the time\n"
              "saturates at 2**63 - 1 ns instead of wrapping."),
        M("advance_ns", params=[P("ns", "INT", "int", field="ns", lo=0, flags=("sat",), posonly=True)],
          config="prs_py_manual_clock_args", call="prs__atomic_sat_add(&o->now_ns, a.ns)",
          doc="Move the clock forward by `ns` integer nanoseconds (>= 0), exactly\n"
              "at any time (float seconds cannot resolve 1 ns once the clock is past ~100 days).\n"
              "Like advance(), the time saturates at 2**63 - 1 ns."),
        M("sleep", "seconds: float, /", c="manual_advance",
          doc="Sleeping on a ManualClock advances it by `seconds` at once."),
        M("set", params=[P("seconds", "DURATION", "float", field="ns", flags=("zero", "neg", "trunc"),
                           posonly=True)],
          config="prs_py_manual_clock_args", call="atomic_store(&o->now_ns, a.ns)",
          doc="Set the clock to `seconds` (finite; may move it backwards, which primitives\n"
              "treat as no time passing)."),
        M("__call__", returns="float", slot=True, expr="manual_now(self, NULL)"),
    ])

MONOTONIC_CLOCK = Type(
    "MonotonicClock", "clock", "mono", params=[], obj="PyObject", build="",
    qualname="pyresilience.MonotonicClock", flags=("BASETYPE", "IMMUTABLETYPE"),
    slots={"call": None}, refs=[], repr=[],
    doc="The default clock: CLOCK_MONOTONIC read in C. Passing clock=None is the same.",
    methods=[
        M("now", returns="float", expr="PyFloat_FromDouble((double)prs_monotonic_ns() / 1e9)",
          doc="CLOCK_MONOTONIC in seconds (float)."),
        M("now_ns", returns="int", expr="PyLong_FromLongLong(prs_monotonic_ns())",
          doc="CLOCK_MONOTONIC in integer nanoseconds."),
        M("__call__", returns="float", slot=True, expr="mono_now(self, NULL)"),
    ])

# ---- Decision --------------------------------------------------------------------

DECISION = Type(
    "Decision", "decision", "decision", config="prs_decision", obj="prs_py_decision",
    qualname="pyresilience.Decision", flags=("IMMUTABLETYPE",),
    slots={"richcompare": None, "hash": "PyObject_HashNotImplemented", "bool": None},
    repr=["allowed", "limit", "remaining", "retry_after", "reset_after", "denied_by?"],
    build="rc = decision_build(o, &cfg, v[P_Decision_denied_by]);",
    params=[
        P("allowed", "BOOL", "bool", field="allowed"),
        P("limit", "INT", "int", field="limit"),
        P("remaining", "INT", "int", field="remaining"),
        P("retry_after", "DURATION", "float", field="retry_after_ns", flags=("zero", "inf")),
        P("reset_after", "DURATION", "float", field="reset_after_ns", flags=("zero", "inf")),
        P("denied_by", "OBJECT", "Optional[int]", "None"),
    ],
    doc="The outcome of asking a limiter. bool(decision) == decision.allowed.\n"
        "retry_after and reset_after are float seconds (math.inf: never).",
    methods=[
        M("headers", returns="Dict[str, str]",
          doc="HTTP headers for this decision: X-RateLimit-Limit, X-RateLimit-Remaining,\n"
              "X-RateLimit-Reset (whole seconds, rounded up) and, when denied, Retry-After\n"
              "(whole seconds, rounded up). A number is never invented: when retry_after is\n"
              "math.inf (the request can never be admitted) Retry-After and X-RateLimit-Reset\n"
              "are left out, and so is X-RateLimit-Reset whenever reset_after is math.inf."),
        M("__bool__", returns="bool", slot=True),
    ],
    props=[
        Prop("allowed", "bool", "True when the request was admitted.",
             expr="PyBool_FromLong(o->d.allowed)"),
        Prop("limit", "int", "The limiter's capacity / limit / burst.",
             expr="PyLong_FromLongLong(o->d.limit)"),
        Prop("remaining", "int", "Requests of weight 1 still admissible now.",
             expr="PyLong_FromLongLong(o->d.remaining)"),
        Prop("retry_after", "float",
             "Seconds until this request would be admitted: 0.0 when allowed, math.inf when never.",
             expr="PyFloat_FromDouble(prs_py_ns_to_s(o->d.retry_after_ns))"),
        Prop("reset_after", "float", "Seconds until the limiter is back to full.",
             expr="PyFloat_FromDouble(prs_py_ns_to_s(o->d.reset_after_ns))"),
        Prop("denied_by", "Optional[int]",
             "For groups: the index of the member that denied, else None.",
             expr="o->denied_by < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(o->denied_by)"),
    ])

TYPES = [MANUAL_CLOCK, MONOTONIC_CLOCK, DECISION]  # retry.c's: tools/decl_retry.py

# The exception classes the binding raises, read from pyresilience.errors (pure
# Python, so users can subclass and construct them) into module-state slots.
EXCEPTIONS = ["ResilienceError", "RateLimitExceeded", "CircuitOpenError", "BulkheadFullError",
              "QueueFullError", "QueueClosedError", "QueueEmptyError", "RetryExhausted",
              "BackendError"]

# The exception of each core status (prs_py_error(), the one status ->
# exception map): a built-in exception or one of EXCEPTIONS.
#   - ETIMEDOUT: the in-process waits turn their own timeouts into their
#     pattern's exception where they happen (RateLimitExceeded,
#     BulkheadFullError, QueueEmptyError/QueueFullError, each carrying its
#     decision); the timeouts that reach the map are a backend's network I/O,
#     hence BackendError.
#   - ECLOSED is a closed queue; a backend closed on purpose is EBACKENDCLOSED.
STATUS_EXCEPTIONS = {
    "OK": "RuntimeError",  # never raised
    "EINVAL": "ValueError", "ENOMEM": "MemoryError", "ERANGE": "ValueError",
    "EAGAIN": "RuntimeError", "ETIMEDOUT": "BackendError", "ECLOSED": "QueueClosedError",
    "EFULL": "QueueFullError", "EEMPTY": "QueueEmptyError", "ENOTSUP": "NotImplementedError",
    "EBACKEND": "BackendError", "EPROTO": "BackendError", "ESTATE": "RuntimeError",
    "ECONN": "BackendError", "ENEVER": "ValueError", "EBACKENDCLOSED": "BackendError",
}

# Other module-state slots (objects the binding keeps that are neither a
# declared type nor an exception class): the policy call's deadline variable.
STATE = ["DeadlineVar"]

# The binding files in the order the module's exec registers them: each has
# prs_py_register_<file>(m, st), which the header generates for a file in
# SETUP ({file: a C function (m, st) -> 0/-1 run first, or None}): it adds
# the file's CONSTANTS (int constants named as their C enumerators), types
# and module functions.
MODULE = ["clock", "decision", "limiters", "keyed", "breaker", "retry", "wait", "bulkhead",
          "queue", "redis", "deadline", "policy", "shm", "kv"]
SETUP = {"clock": None, "decision": None, "wait": None}
CONSTANTS = {"clock": [("NEVER_NS", "PRS_NEVER")]}  # "never", "no deadline" in ns

# Module-level functions, by binding file (<cfile>_functions in gen/<cfile>.h).
FUNCTIONS = {}


def _load_areas() -> None:
    """More declarations, one module per binding area (tools/decl_<area>.py,
    each with TYPES and optionally FUNCTIONS, SETUP and
    CONSTANTS), so areas are declared side by side without editing this file. They import P, M, Prop and Type from here."""
    import glob
    import importlib

    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "decl_*.py"))):
        mod = importlib.import_module(os.path.basename(path)[:-3])
        TYPES.extend(mod.TYPES)
        for cfile, funcs in getattr(mod, "FUNCTIONS", {}).items():
            FUNCTIONS.setdefault(cfile, []).extend(funcs)
        SETUP.update(getattr(mod, "SETUP", {}))
        for cfile, names in getattr(mod, "CONSTANTS", {}).items():
            CONSTANTS.setdefault(cfile, []).extend(names)


_load_areas()
