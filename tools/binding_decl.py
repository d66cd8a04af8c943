"""The declared binding: every converted type of pyresilience._core, stated once.

tools/gen_binding.py turns this into csrc/python/gen/<cfile>.h (parameter
tables, docstrings with text signatures, method and property tables) and the
type's block in pyresilience/_core.pyi. See its docstring for how to convert a
type. Kinds of parameters (csrc/python/prs_py.h, enum prs_py_kind):
  COUNT     int64 field, an int or an integral float in [lo, hi]
  INT       int64 field, an int (no bool, no float) in [lo, hi]
  REAL      double field; flags widen: zero, neg, inf
  DURATION  int64 ns field from float seconds (inf -> NEVER; > 0 -> >= 1 ns)
  TIMEOUT   int64 ns field: None/inf -> NEVER
  BOOL      int field: truth value
  ENUM      int field: index of the str in choices
  CLOCK, CALLABLE, STR, OBJECT: no field, checked (CALLABLE, STR) and handed
            to the binding as the argument object
  CONVERT   convert=<C function>(arg, config): fills what it needs (PyArg "O&")
  N         int64 field, a request weight: a count >= 1, beyond int64 saturating
Flags: "none" (None accepted, field left at its default), "none_inf" (None ->
+inf / NEVER).
"""
import os


class P:
    """A parameter: Python name, kind, stub type, default (source text; None:
    required), the core config field it fills."""

    def __init__(self, name, kind, type, default=None, field=None, lo=None, hi=None, flags=(),
                 choices=None, kw=False, posonly=False, doc="", convert=None, instance=None,
                 nonempty=False):
        self.name, self.kind, self.type, self.default = name, kind, type, default
        self.instance, self.nonempty = instance, nonempty  # checked by a generated tp_new
        self.convert = convert
        self.field, self.lo, self.hi, self.flags = field, lo, hi, tuple(flags)
        self.choices, self.kw, self.posonly, self.doc = choices, kw, posonly, doc


class M:
    """A method. Either `params` (parsed by prs_py_parse_params into struct
    `config`) or `sig` (stub syntax without self: the text signature is derived
    from it). C function: <prefix>_<name without leading _>, or `c`. slot=True:
    a type slot (__call__, ...), in the stub only. rate=True: one of the rate
    methods (allow, check, peek, acquire, _waiter), whose C function the
    header defines over the type's `rate` target (prs_py_rate_method). A
    method may be a C statement `call` (returning None) or expression `expr`
    over `o` (and `now`), as Prop's, and `a`, its declared params parsed into
    a zeroed `config`: the header defines it. So is a slot __call__ with an
    `expr`: a call without arguments (a clock's now())."""

    def __init__(self, name, sig="", returns="None", doc="", params=None, config=None, c=None,
                 flags=None, slot=False, rate=False, expr=None, call=None, now=None):
        self.name, self.sig, self.returns, self.doc = name, sig, returns, doc
        self.rate, self.expr, self.call, self.now = rate, expr, call, now
        self.params, self.config, self.c, self.flags, self.slot = params, config, c, flags, slot

    def cname(self, prefix):
        if self.c:
            return self.c
        return (prefix + "_" if prefix else "") + self.name.lstrip("_")


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
    the whole configuration step of tp_new. A type that is not
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


class Field:
    """A field of a Struct: name, stub type, doc, and the C expression making
    its value (a new reference) from the struct's source `m`; by default
    PyLong_FromLongLong(m->name) for an int, PyFloat_FromDouble(m->name) for a
    float."""
    def __init__(self, name, type, doc, expr=None):
        self.name, self.type, self.doc = name, type, doc
        conv = {"int": "PyLong_FromLongLong", "float": "PyFloat_FromDouble"}
        self.expr = expr or "%s(m->%s)" % (conv[type], name)
class Struct(Type):
    """A struct sequence type (a named tuple made in C) of Fields, made from a
    C value (`src`: the parameters of the maker, "const X *m, ..."). The
    header defines <Name>_desc, <Name>_repr (the class name alone, then
    name=repr(value) per field), <Name>_new(prs_py_state *st, <src>) and adds
    the type to the module in <cfile>_add_types."""
    def __init__(self, name, cfile, doc, src, fields, qualname=None, slot=None):
        super().__init__(name, cfile, name, doc, qualname=qualname, slot=slot, stub_head=[
            "# a structseq (a named tuple made in C)", "n_fields: ClassVar[int]",
            "n_sequence_fields: ClassVar[int]", "n_unnamed_fields: ClassVar[int]",
            "__match_args__: ClassVar[tuple[str, ...]]"],
            props=[Prop(f.name, f.type, f.doc) for f in fields],
            # a structseq has copy.replace() from 3.13
            stub_tail=["if sys.version_info >= (3, 13):",
                       "    def __replace__(self, **changes: Any) -> Self: ...  # copy.replace()"])
        self.src, self.fields = src, list(fields)
CLOCK_OBJ = "Union[ManualClock, MonotonicClock, Callable[[], float]]"

# ---- clocks ----------------------------------------------------------------------

# A clock's time read as float seconds (the object `o`: a ManualClock).
MANUAL_NOW = "PyFloat_FromDouble((double)atomic_load_explicit(&o->now_ns, memory_order_acquire) / 1e9)"
SECONDS = P("seconds", "DURATION", "float", field="ns", flags=("zero", "trunc"), posonly=True)

MANUAL_CLOCK = Type(
    "ManualClock", "clock", "manual", obj="prs_py_manual_clock", qualname="pyresilience.ManualClock",
    flags=("BASETYPE", "IMMUTABLETYPE"), slots={"call": None}, refs=[], repr=[("start", MANUAL_NOW)],
    config="prs_py_manual_clock_args", build="atomic_store(&o->now_ns, cfg.start_ns);",
    params=[P("start", "DURATION", "float", "0.0", field="start_ns", flags=("zero", "neg"),
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
    qualname="pyresilience.Decision", flags=("HAVE_GC", "IMMUTABLETYPE"),
    slots={"richcompare": None, "hash": "PyObject_HashNotImplemented", "bool": None},
    repr=["allowed", "limit", "remaining", "retry_after", "reset_after", "denied_by?"], refs=["denied_by"], build="o->d = cfg;", keep={"denied_by": "denied_by"},
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
             "For groups: the index of the member that denied, else None.", member="denied_by"),
    ])

# ---- retry -----------------------------------------------------------------------

# An attempt index (0-based): an int >= 0; one beyond int64 is INT64_MAX.
ATTEMPT = P("attempt", "INT", "int", field="attempt", lo=0, flags=("sat",))
ATTEMPT_POS = P("attempt", "INT", "int", field="attempt", lo=0, flags=("sat",), posonly=True)
PREVIOUS = P("previous", "REAL", "Optional[float]", "None", field="previous", flags=("zero", "none"))

RETRY_POLICY = Type(
    "RetryPolicy", "retry", "policy", config="prs_retry_config", obj="policy_obj",
    init="prs_retry_config_init", check="prs_retry_config_check",
    flags=("HAVE_GC", "IMMUTABLETYPE"), refs=["seed"], free="prs_retry_free(o->core);",
    build="rc = prs_retry_new(&cfg, &o->core);", keep={"seed": "seed"},
    repr=["max_attempts", "base_delay", "max_delay", "exponential_base", "jitter", "seed",
          "max_retry_after"],
    params=[
        P("max_attempts", "COUNT", "int", "3", field="max_attempts", lo=1),
        P("base_delay", "REAL", "float", "1.0", field="base_delay", flags=("zero",)),
        P("max_delay", "REAL", "float", "60.0", field="max_delay", flags=("zero",)),
        P("exponential_base", "REAL", "float", "2.0", field="exponential_base", flags=("zero",)),
        P("jitter", "CONVERT", "Union[bool, str, None]", "True", convert="policy_jitter"),
        P("seed", "CONVERT", "Optional[int]", "None", convert="policy_seed"),
        P("max_retry_after", "REAL", "Optional[float]", "300.0", field="max_retry_after",
          flags=("zero", "inf", "none_inf"), kw=True),
    ],
    doc="The arithmetic of a retry configuration: exponential delays capped at max_delay,\n"
        "a jitter strategy (True = 'proportional', False = 'none', or 'full', 'equal',\n"
        "'decorrelated') and its thread-safe, seedable generator (SplitMix64). Holds\n"
        "no per-call state. A server's Retry-After is a floor of the delay (max_delay\n"
        "never shortens it); one longer than max_retry_after (None: no limit) gives up.\n"
        "Used by RetryConfig; rarely needed directly.",
    methods=[
        M("delay", params=[ATTEMPT, PREVIOUS], config="retry_args", returns="float",
          expr="PyFloat_FromDouble(prs_retry_delay(o->core, a.attempt, a.previous))",
          doc="The delay in seconds after failed attempt `attempt` (0-based), with this policy's\n"
              "jitter. `previous` is the delay slept last by the same retry loop (only the\n"
              "decorrelated strategy reads it; None: the first sleep). Thread-safe."),
        M("base", params=[ATTEMPT_POS], config="retry_args", returns="float",
          expr="PyFloat_FromDouble(prs_retry_base_delay(o->core, a.attempt))",
          doc="min(base_delay * exponential_base ** attempt, max_delay): the delay without jitter."),
        M("sample", params=[ATTEMPT, P("n", "INT", "int", field="n", lo=0, hi=100000000), PREVIOUS],
          config="retry_args", returns="list[float]", expr="sample_list(o, &a)",
          doc="A list of n delays for the same attempt (statistics and tests)."),
        M("_next", params=[ATTEMPT, P("previous", "REAL", "float", field="previous",
                                     flags=("zero", "none")),
                           P("retry_after_ns", "INT", "int", field="retry_after_ns"),
                           P("remaining_ns", "INT", "int", field="remaining_ns", posonly=True)],
          config="retry_args", returns="tuple[int, float, int]", expr="next_step(o, &a)",
          doc="The retry loop's step: (verdict, delay_s, delay_ns). verdict is one of RETRY_SLEEP,\n"
              "RETRY_GIVE_UP_ATTEMPTS, RETRY_GIVE_UP_DEADLINE, RETRY_GIVE_UP_RETRY_AFTER,\n"
              "RETRY_GIVE_UP_RETRY_AFTER_LIMIT.\n"
              "retry_after_ns < 0: none; remaining_ns == NEVER_NS: no deadline."),
        M("reseed", params=[P("seed", "CONVERT", "Optional[int]", convert="policy_seed",
                              posonly=True)], config="prs_retry_config",
          call="prs_retry_seed(o->core, a.has_seed ? a.seed : prs_random_seed())",
          doc="Restart the jitter generator from `seed` (None: a random seed)."),
        M("random", returns="float", expr="PyFloat_FromDouble(prs_retry_uniform(o->core))",
          doc="A uniform draw in [0, 1) from this policy's generator."),
    ],
    props=[
        Prop("max_attempts", "int", "Attempts in all, the first included.",
             expr="PyLong_FromLongLong(policy_config(o).max_attempts)"),
        Prop("base_delay", "float", "Seconds before the first retry (before jitter).",
             expr="PyFloat_FromDouble(policy_config(o).base_delay)"),
        Prop("max_delay", "float", "The cap of the exponential delay, seconds.",
             expr="PyFloat_FromDouble(policy_config(o).max_delay)"),
        Prop("exponential_base", "float", "The growth factor per attempt.",
             expr="PyFloat_FromDouble(policy_config(o).exponential_base)"),
        Prop("jitter", "str", "The jitter strategy's name.",
             expr="PyUnicode_FromString(prs_jitter_name(policy_config(o).jitter))"),
        Prop("seed", "Optional[int]", "The seed given (None: random).", member="seed"),
        Prop("max_retry_after", "float",
             "The longest server Retry-After waited, seconds (inf: no limit); a longer one gives up.",
             expr="PyFloat_FromDouble(policy_config(o).max_retry_after)"),
    ])

RETRY_BUDGET = Type(
    "RetryBudget", "retry", "budget", config="prs_retry_budget_config", obj="budget_obj",
    init="prs_retry_budget_config_init", check="prs_retry_budget_config_check",
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    offsets={"weaklist": "weakreflist"}, repr=["ratio", "min_retries_per_second", "window"],
    refs=[], clock="clock", free="prs_retry_budget_free(o->core);",
    build="rc = prs_retry_budget_new(&cfg, &o->core);",
    params=[
        P("ratio", "REAL", "float", "0.1", field="ratio", flags=("zero",)),
        P("min_retries_per_second", "REAL", "float", "10.0", field="min_retries_per_second",
          flags=("zero",)),
        P("window", "REAL", "float", "10.0", field="window"),
        P("clock", "CLOCK", "ClockArg", "None", kw=True),
    ],
    doc="A retry budget shared by many call sites (as in gRPC, Finagle and tower): a retry\n"
        "is allowed only while retries over the last `window` seconds stay within\n"
        "`ratio` x first attempts plus `min_retries_per_second` x window. Stops retry\n"
        "storms: under total failure, attempts stay near (1 + ratio) x requests.\n"
        "Pass it as RetryConfig(budget=...). Thread-safe.",
    methods=[
        M("deposit", call="prs_retry_budget_deposit(o->core, now)", now="&o->clock",
          doc="Record a first attempt (a new request). Retry wrappers do this for you."),
        M("withdraw", returns="bool",
          doc="Ask for one retry: True (counted) while retries in the window stay within\n"
              "ratio x first attempts + min_retries_per_second x window, else False (counted\n"
              "as denied). Retry wrappers call it before each retry and give up on False."),
        M("reset", call="prs_retry_budget_reset(o->core)", doc="Empty the window and zero the metrics."),
        M("_metrics", returns="tuple[int, int, int, int, int, float]",
          doc="(attempts, retries_allowed, retries_denied, window_attempts, window_retries, "
              "available):\n"
              "lifetime counts of first attempts and of retries allowed and denied, the window's\n"
              "counts, and the retries a withdrawal could take now (pyresilience.RetryBudget."
              "metrics\ngives them as a RetryBudgetMetrics)."),
    ],
    props=[
        Prop("ratio", "float", "Retries allowed per first attempt.",
             expr="PyFloat_FromDouble(prs_retry_budget_ratio(o->core))"),
        Prop("min_retries_per_second", "float", "The floor: retries per second always allowed.",
             expr="PyFloat_FromDouble(prs_retry_budget_min_per_second(o->core))"),
        Prop("window", "float", "The sliding window, seconds.",
             expr="PyFloat_FromDouble(prs_retry_budget_window(o->core))"),
        Prop("clock", CLOCK_OBJ, "The clock the budget reads.", clock="clock"),
    ])

RETRY_COUNTS = Type(
    "RetryCounts", "retry", "counts", obj="counts_obj", params=[],
    flags=("HAVE_GC", "IMMUTABLETYPE"), refs=[], free="prs_counters_free(o->core);",
    build="rc = prs_counters_new(PRS_PY_RETRY_COUNTS, NULL, &o->core);",
    doc="The counters of one Retry, kept in the core (striped per thread: exact under\n"
        "threads, no lock): RetryCall adds its first-try successes in C, the Python\n"
        "loop the rest. Index i of `values` is pyresilience.retry's _COUNTERS[i].",
    methods=[
        M("add", "i: int, n: int, /", doc="Add n (>= 0) to counter i."),
    ],
    props=[
        Prop("values", "tuple[int, ...]", "Every counter now, in index order.",
             expr="counts_values(o)"),
    ])

RETRY_CALL = Type(
    "RetryCall", "retry", "call", obj="call_obj",
    flags=("HAVE_GC", "HAVE_VECTORCALL", "IMMUTABLETYPE", "METHOD_DESCRIPTOR"),
    slots={"call": "PyVectorcall_Call", "descr_get": "prs_py_method_get", "repr": None},
    offsets={"vectorcall": "vectorcall", "dict": "dict", "weaklist": "weakreflist"},
    refs=["func", "handler", "check_result", "budget", "counts", "dict"], clock="clock",
    keep={"func": "func", "handler": "handler", "check_result": "retry_on_result",
          "budget": "budget", "counts": "counts"}, build="o->vectorcall = call_vectorcall;",
    params=[
        P("func", "CALLABLE", "Callable[..., Any]"),
        P("handler", "CALLABLE", "Callable[..., Any]"),
        P("budget", "OBJECT", "Optional[RetryBudget]", "None", kw=True, instance="RetryBudget"),
        P("clock", "CLOCK", "ClockArg", "None"),
        P("counts", "OBJECT", "Optional[RetryCounts]", "None", kw=True, instance="RetryCounts"),
        P("retry_on_result", "CALLABLE", "Optional[Callable[[Any], Any]]", "None",
          flags=("none",)),
    ],
    doc="A callable wrapping `func` with the C fast path of a retry loop: it reads the\n"
        "clock, deposits a first attempt in `budget`, calls func and returns its result\n"
        "unless it raised an Exception or retry_on_result(result) is true; then\n"
        "handler(func, args, kwargs, exception_or_None, result_or_None, start_ns) takes\n"
        "over (the Python loop of Retry). `counts` (a RetryCounts): where a first-try\n"
        "success is counted. Made by Retry as a decorator.",
    methods=[
        M("__call__", "*args: Any, **kwargs: Any", "Any", slot=True),
        M("__get__", "obj: Any, objtype: Any = None, /", "Any", slot=True),
    ],
    props=[
        Prop("__func__", "Callable[..., Any]", "The wrapped callable.", member="func"),
        Prop("_handler", "Callable[..., Any]", "The Python retry loop taking over after a failure.",
             member="handler"),
        Prop("__dict__", None, None, "PyObject_GenericGetDict", set="PyObject_GenericSetDict"),
    ],
    stub_tail=["# functools.update_wrapper and Retry write these into the instance __dict__",
               "__wrapped__: Callable[..., Any]",
               "retry: Any"])

TYPES = [MANUAL_CLOCK, MONOTONIC_CLOCK, DECISION, RETRY_POLICY, RETRY_BUDGET, RETRY_COUNTS,
         RETRY_CALL]

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
CONSTANTS = {}

# Parameter tables used by no one method, by binding file: {cfile: {name:
# (config struct, [(fname, [P])...])}} -> the array `name` of prs_py_params.
PARAM_TABLES = {}

# Module-level functions, by binding file (<cfile>_functions in gen/<cfile>.h).
FUNCTIONS = {
    "retry": [
        M("retry_now_ns", "clock: ClockArg, /", "int", c="mod_retry_now_ns",
          doc="The time of `clock` (None: monotonic) in integer nanoseconds."),
        M("retry_sleep", "clock: ClockArg, ns: int, /", c="mod_retry_sleep",
          doc="Sleep `ns` nanoseconds for a retry: advances a ManualClock at once; otherwise "
              "sleeps\nwith the GIL released, interruptible by signals (Ctrl-C)."),
    ],
}


def _load_areas() -> None:
    """More declarations, one module per binding area (tools/decl_<area>.py,
    each with TYPES and optionally FUNCTIONS, PARAM_TABLES, SETUP and
    CONSTANTS), so areas are declared side by side without editing this file. They import P, M, Prop and Type from here."""
    import glob
    import importlib

    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "decl_*.py"))):
        mod = importlib.import_module(os.path.basename(path)[:-3])
        TYPES.extend(mod.TYPES)
        for cfile, funcs in getattr(mod, "FUNCTIONS", {}).items():
            FUNCTIONS.setdefault(cfile, []).extend(funcs)
        for cfile, tables in getattr(mod, "PARAM_TABLES", {}).items():
            PARAM_TABLES.setdefault(cfile, {}).update(tables)
        SETUP.update(getattr(mod, "SETUP", {}))
        for cfile, names in getattr(mod, "CONSTANTS", {}).items():
            CONSTANTS.setdefault(cfile, []).extend(names)


_load_areas()
