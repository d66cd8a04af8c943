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
Flags: "none" (None accepted, field left at its default), "none_inf" (None ->
+inf / NEVER).
"""
import os


class P:
    """A parameter: Python name, kind, stub type, default (source text; None:
    required), the core config field it fills."""

    def __init__(self, name, kind, type, default=None, field=None, lo=None, hi=None, flags=(),
                 choices=None, kw=False, posonly=False, doc="", convert=None):
        self.name, self.kind, self.type, self.default = name, kind, type, default
        self.convert = convert
        self.field, self.lo, self.hi, self.flags = field, lo, hi, tuple(flags)
        self.choices, self.kw, self.posonly, self.doc = choices, kw, posonly, doc


class M:
    """A method. Either `params` (parsed by prs_py_parse_params into struct
    `config`) or `sig` (stub syntax without self: the text signature is derived
    from it). C function: <prefix>_<name without leading _>, or `c`. slot=True:
    a type slot (__call__, ...), in the stub only."""

    def __init__(self, name, sig="", returns="None", doc="", params=None, config=None, c=None,
                 flags=None, slot=False):
        self.name, self.sig, self.returns, self.doc = name, sig, returns, doc
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

    `repr` (attribute names): the header defines <prefix>_repr, the type's
    name and each attribute as name=repr(value). <cfile>_add_types(m, st)
    adds every type with an `obj` and no `base` (those with one come from the
    algorithm table) to the module, in module-state slot PRS_SLOT_<slot>
    (default: the name without a leading _), then the module functions."""

    def __init__(self, name, cfile, prefix, doc, obj=None, params=None, config=None, methods=(),
                 props=(), flags=(), slots=None, offsets=None, qualname=None, base=None,
                 stub_head=(), stub_tail=(), init=None, check=None, refs=None, clock=None,
                 free=None, kept=(), repr=None, slot=None):
        self.refs, self.clock, self.free, self.kept = refs, clock, free, list(kept)
        self.repr, self.slot = repr, slot or name.lstrip("_")
        self.name, self.cfile, self.prefix, self.doc = name, cfile, prefix, doc
        self.init, self.check = init, check
        self.obj, self.params, self.config = obj, params, config
        self.methods, self.props = list(methods), list(props)
        self.flags, self.slots, self.offsets = tuple(flags), dict(slots or {}), dict(offsets or {})
        if repr:
            self.slots.setdefault("repr", None)
        if refs is not None:
            for slot in ("dealloc", "traverse", "clear"):
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


EXC_TUPLE = "tuple[type[BaseException], ...]"
CLOCK_OBJ = "Union[ManualClock, MonotonicClock, Callable[[], float]]"
LISTENER = "Callable[[Any, Any, Any], Any]"

# ---- clocks ----------------------------------------------------------------------

MANUAL_CLOCK = Type(
    "ManualClock", "clock", "manual", obj="prs_py_manual_clock", qualname="pyresilience.ManualClock",
    flags=("BASETYPE", "IMMUTABLETYPE"), slots={"call": None, "repr": None, "dealloc": None},
    config="prs_py_manual_clock_args",
    params=[P("start", "DURATION", "float", "0.0", field="start_ns", flags=("zero", "neg"),
              doc="The initial time, seconds.")],
    doc="A clock that moves only when told to: for deterministic tests. Every primitive\n"
        "accepts clock=ManualClock(); waits of the library (acquire, retry sleeps, ...)\n"
        "advance it by the wait instead of sleeping. Calling the clock returns now().",
    methods=[
        M("now", returns="float", doc="The clock's time in seconds (float)."),
        M("now_ns", returns="int", doc="The clock's time in integer nanoseconds."),
        M("advance", "seconds: float, /",
          doc="Move the clock forward by `seconds` (finite, >= 0); the time\n"
              "saturates at 2**63 - 1 ns instead of wrapping."),
        M("advance_ns", "ns: int, /",
          doc="Move the clock forward by `ns` integer nanoseconds (>= 0), exactly\n"
              "at any time (float seconds cannot resolve 1 ns once the clock is past ~100 days).\n"
              "Like advance(), the time saturates at 2**63 - 1 ns."),
        M("sleep", "seconds: float, /", c="manual_advance",
          doc="Sleeping on a ManualClock advances it by `seconds` at once."),
        M("set", "seconds: float, /",
          doc="Set the clock to `seconds` (finite; may move it backwards, which primitives\n"
              "treat as no time passing)."),
        M("__call__", returns="float", slot=True),
    ])

MONOTONIC_CLOCK = Type(
    "MonotonicClock", "clock", "mono", params=[], obj="PyObject",
    qualname="pyresilience.MonotonicClock", flags=("BASETYPE", "IMMUTABLETYPE"),
    slots={"call": None, "repr": None, "dealloc": "manual_dealloc"},
    doc="The default clock: CLOCK_MONOTONIC read in C. Passing clock=None is the same.",
    methods=[
        M("now", returns="float", doc="CLOCK_MONOTONIC in seconds (float)."),
        M("now_ns", returns="int", doc="CLOCK_MONOTONIC in integer nanoseconds."),
        M("__call__", returns="float", slot=True),
    ])

# ---- Decision --------------------------------------------------------------------

DECISION = Type(
    "Decision", "decision", "decision", config="prs_decision", obj="prs_py_decision",
    qualname="pyresilience.Decision", flags=("HAVE_GC", "IMMUTABLETYPE"),
    slots={"repr": None, "richcompare": None, "hash": "PyObject_HashNotImplemented", "bool": None},
    refs=["denied_by"],
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

# ---- circuit breaker -------------------------------------------------------------

BREAKER = Type(
    "CircuitBreaker", "breaker", "cb", config="prs_breaker_config", obj="breaker_obj",
    init="prs_breaker_config_init", check="prs_breaker_config_check",
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    offsets={"weaklist": "weakreflist"}, clock="clock", free="prs_breaker_free(o->core);",
    refs=["fallback", "name", "record_exc", "ignore_exc", "is_failure", "listeners", "states[3]",
          "msg_open", "msg_half"],
    params=[
        P("failure_threshold", "COUNT", "int", "5", field="failure_threshold", lo=1),
        P("success_threshold", "COUNT", "int", "2", field="success_threshold", lo=1),
        P("timeout_seconds", "DURATION", "float", "30.0", field="open_timeout_ns",
          flags=("zero", "inf")),
        P("fallback", "CALLABLE", "Optional[Callable[[], Any]]", "None", flags=("none",)),
        P("name", "STR", "Optional[str]", "None", flags=("none",), kw=True),
        P("failure_rate_threshold", "REAL", "Optional[float]", "None",
          field="failure_rate_threshold", flags=("none",)),
        P("window_type", "ENUM", "str", "'count'", field="window_type", choices=("count", "time")),
        P("window_size", "COUNT", "int", "100", field="window_size", lo=1),
        P("minimum_calls", "COUNT", "int", "10", field="minimum_calls", lo=1),
        P("slow_call_duration", "DURATION", "Optional[float]", "None", field="slow_call_ns",
          flags=("none",)),
        P("slow_call_rate_threshold", "REAL", "Optional[float]", "None",
          field="slow_call_rate_threshold", flags=("none",)),
        P("half_open_max_calls", "COUNT", "Optional[int]", "None", field="half_open_max_calls",
          lo=1, flags=("none",)),
        P("record_exceptions", "OBJECT", "Any", "..."),
        P("ignore_exceptions", "OBJECT", "Any", "()"),
        P("is_failure", "CALLABLE", "Optional[Callable[[Any], Any]]", "None", flags=("none",)),
        P("on_state_change", "OBJECT", "Any", "None"),
        P("clock", "CLOCK", "ClockArg", "None"),
    ],
    doc="The C core of pyresilience.CircuitBreaker (use that class).",
    methods=[
        M("call", "func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs", "_T",
          doc="Call func(*args, **kwargs) through the breaker and return its result. When the\n"
              "circuit rejects the call: return fallback() if a fallback was given, else raise a\n"
              "fresh CircuitOpenError carrying retry_after and name. Exceptions from func\n"
              "propagate; they count as failures when they match record_exceptions (and not\n"
              "ignore_exceptions)."),
        M("allow_request", returns="bool",
          doc="True when a call may run now (taking a half-open trial slot), else False\n"
              "(counted as rejected). Report the outcome with record_success/record_failure/\n"
              "record_ignored: in HALF_OPEN, that outcome frees the slot taken here (matched\n"
              "by count). A record_*() while no allow_request() trial is outstanding is a\n"
              "stray there: counted in the totals, it neither frees another caller's trial\n"
              "slot nor moves the state."),
        M("record_success", config="cb_record_args",
          params=[P("duration", "DURATION", "float", "0.0", field="duration_ns",
                    flags=("zero", "inf"))],
          doc="Record a successful call that lasted `duration` seconds (slow-call detection)."),
        M("record_failure", config="cb_record_args",
          params=[P("duration", "DURATION", "float", "0.0", field="duration_ns",
                    flags=("zero", "inf"))],
          doc="Record a failed call that lasted `duration` seconds."),
        M("record_ignored",
          doc="Record a call that counts as neither (frees the half-open trial slot that\n"
              "allow_request() took)."),
        M("open", doc="Open the circuit now; it half-opens after timeout_seconds as usual."),
        M("close", doc="Close the circuit (window and consecutive counts cleared; totals kept)."),
        M("half_open", doc="Move to HALF_OPEN: the next calls are trial calls."),
        M("reset", doc="Back to CLOSED with every counter cleared (also ends force_open/disable)."),
        M("force_open", doc="Open the circuit until reset() or another manual state call."),
        M("disable", doc="Allow every call and never trip (outcomes are still counted) until\n"
                         "reset() or another manual state call."),
        M("add_listener", "listener: %s, /" % LISTENER,
          doc="Call listener(breaker, old_state, new_state) after every transition."),
        M("remove_listener", "listener: %s, /" % LISTENER,
          doc="Remove a listener (ValueError if absent)."),
        M("_wrap", "func: Callable[..., Any], /", '"BreakerFunction"',
          doc="Internal: a C callable running func through this breaker (the sync decorator)."),
        M("_acquire", returns="Any",
          doc="Internal: (permit, start_ns) when admitted, else a CircuitOpenError instance."),
        M("_record", "token: Any, exc: Optional[BaseException] = None, result: Any = None",
          doc="Internal: record the outcome of a call admitted by _acquire()."),
    ],
    props=[
        Prop("state", "Any",
             "The current CircuitState (OPEN stays OPEN past its timeout until the next call).",
             "cb_get_state"),
        Prop("mode", "str",
             "'normal', 'forced_open' (after force_open()) or 'disabled' (after disable()).",
             "cb_get_mode"),
        Prop("metrics", "CircuitBreakerMetrics", "A CircuitBreakerMetrics snapshot taken now.",
             "cb_get_metrics"),
        Prop("failure_threshold", "int",
             "Consecutive failures that open the circuit (consecutive mode).", "cb_get_config", 0),
        Prop("success_threshold", "int", "Half-open successes that close the circuit.",
             "cb_get_config", 1),
        Prop("half_open_max_calls", "int", "Trial calls admitted at once while half-open.",
             "cb_get_config", 2),
        Prop("window_size", "int",
             "Outcomes (count window) or seconds (time window) in the window.", "cb_get_config", 3),
        Prop("minimum_calls", "int",
             "Outcomes the window needs before a rate can open the circuit.", "cb_get_config", 4),
        Prop("timeout_seconds", "float",
             "Seconds the circuit stays open before a trial call (inf: until a manual call).",
             "cb_get_config", 5),
        Prop("failure_rate_threshold", "Optional[float]",
             "The failure rate that opens the circuit (None: consecutive mode).", "cb_get_config", 6),
        Prop("slow_call_rate_threshold", "Optional[float]",
             "The slow-call rate that opens the circuit (None: off).", "cb_get_config", 7),
        Prop("slow_call_duration", "Optional[float]",
             "Seconds from which a call is slow (None: never).", "cb_get_config", 8),
        Prop("window_type", "str", "'count' or 'time'.", "cb_get_config", 9),
        Prop("name", "Optional[str]", "The breaker's name (or None).", member="name"),
        Prop("fallback", "Optional[Callable[[], Any]]",
             "Called with no arguments instead of raising when a call is rejected.", member="fallback"),
        Prop("record_exceptions", EXC_TUPLE, "Exception classes that count as failures.",
             member="record_exc"),
        Prop("ignore_exceptions", EXC_TUPLE,
             "Exception classes that count as neither success nor failure.", member="ignore_exc"),
        Prop("is_failure", "Optional[Callable[[Any], Any]]",
             "is_failure(result) -> bool marks returned values as failures (or None).",
             member="is_failure"),
        Prop("listeners", "tuple[%s, ...]" % LISTENER, "The on_state_change listeners (a tuple).",
             "cb_get_listeners"),
        Prop("clock", CLOCK_OBJ, "The clock this breaker reads.", clock="clock"),
    ])

BREAKER_FUNCTION = Type(
    "BreakerFunction", "breaker", "wrapped", obj="wrapped_obj",
    flags=("HAVE_GC", "IMMUTABLETYPE", "HAVE_VECTORCALL", "DISALLOW_INSTANTIATION"),
    slots={"call": "PyVectorcall_Call", "descr_get": None, "repr": None},
    offsets={"dict": "dict", "weaklist": "weakreflist", "vectorcall": "vectorcall"},
    refs=["breaker", "func", "dict"],
    doc="A function protected by a CircuitBreaker (made by using the breaker as a "
        "decorator): each call goes through breaker.call(func, ...).",
    methods=[
        M("__call__", "*args: Any, **kwargs: Any", "Any", slot=True),
        M("__get__", "obj: Any, objtype: Any = None, /", "Any", slot=True),
    ],
    props=[Prop("__dict__", None, None, "PyObject_GenericGetDict", set="PyObject_GenericSetDict"),
           Prop("breaker", '"CircuitBreaker"', "The CircuitBreaker that protects this function.",
                member="breaker")])

# ---- retry -----------------------------------------------------------------------

RETRY_POLICY = Type(
    "RetryPolicy", "retry", "policy", config="prs_retry_config", obj="policy_obj",
    init="prs_retry_config_init", check="prs_retry_config_check",
    flags=("HAVE_GC", "IMMUTABLETYPE"), refs=["seed"], free="prs_retry_free(o->core);",
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
        M("delay", "attempt: int, previous: Optional[float] = None", "float",
          doc="The delay in seconds after failed attempt `attempt` (0-based), with this policy's\n"
              "jitter. `previous` is the delay slept last by the same retry loop (only the\n"
              "decorrelated strategy reads it; None: the first sleep). Thread-safe."),
        M("base", "attempt: int, /", "float",
          doc="min(base_delay * exponential_base ** attempt, max_delay): the delay without jitter."),
        M("sample", "attempt: int, n: int, previous: Optional[float] = None", "list[float]",
          doc="A list of n delays for the same attempt (statistics and tests)."),
        M("_next", "attempt: int, previous: float, retry_after_ns: int, remaining_ns: int, /",
          "tuple[int, float, int]",
          doc="The retry loop's step: (verdict, delay_s, delay_ns). verdict is one of RETRY_SLEEP,\n"
              "RETRY_GIVE_UP_ATTEMPTS, RETRY_GIVE_UP_DEADLINE, RETRY_GIVE_UP_RETRY_AFTER,\n"
              "RETRY_GIVE_UP_RETRY_AFTER_LIMIT.\n"
              "retry_after_ns < 0: none; remaining_ns == NEVER_NS: no deadline."),
        M("reseed", "seed: Optional[int], /",
          doc="Restart the jitter generator from `seed` (None: a random seed)."),
        M("random", returns="float", doc="A uniform draw in [0, 1) from this policy's generator."),
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
        M("deposit", doc="Record a first attempt (a new request). Retry wrappers do this for you."),
        M("withdraw", returns="bool",
          doc="Ask for one retry: True (counted) while retries in the window stay within\n"
              "ratio x first attempts + min_retries_per_second x window, else False (counted\n"
              "as denied). Retry wrappers call it before each retry and give up on False."),
        M("reset", doc="Empty the window and zero the metrics."),
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

RETRY_CALL = Type(
    "RetryCall", "retry", "call", obj="call_obj",
    flags=("HAVE_GC", "HAVE_VECTORCALL", "IMMUTABLETYPE", "METHOD_DESCRIPTOR"),
    slots={"call": "PyVectorcall_Call", "descr_get": None, "repr": None},
    offsets={"vectorcall": "vectorcall", "dict": "dict", "weaklist": "weakreflist"},
    refs=["func", "handler", "check_result", "budget", "dict"], clock="clock",
    params=[
        P("func", "CALLABLE", "Callable[..., Any]"),
        P("handler", "CALLABLE", "Callable[..., Any]"),
        P("budget", "OBJECT", "Optional[RetryBudget]", "None", kw=True),
        P("clock", "CLOCK", "ClockArg", "None"),
        P("retry_on_result", "CALLABLE", "Optional[Callable[[Any], Any]]", "None",
          flags=("none",)),
    ],
    doc="A callable wrapping `func` with the C fast path of a retry loop: it reads the\n"
        "clock, deposits a first attempt in `budget`, calls func and returns its result\n"
        "unless it raised an Exception or retry_on_result(result) is true; then\n"
        "handler(func, args, kwargs, exception_or_None, result_or_None, start_ns) takes\n"
        "over (the Python loop of Retry). Made by Retry as a decorator.",
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

TYPES = [MANUAL_CLOCK, MONOTONIC_CLOCK, DECISION, BREAKER, BREAKER_FUNCTION, RETRY_POLICY, RETRY_BUDGET, RETRY_CALL]

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
    each with TYPES and optionally FUNCTIONS), so areas are declared side by
    side without editing this file. They import P, M, Prop and Type from here."""
    import glob
    import importlib

    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "decl_*.py"))):
        mod = importlib.import_module(os.path.basename(path)[:-3])
        TYPES.extend(mod.TYPES)
        for cfile, funcs in getattr(mod, "FUNCTIONS", {}).items():
            FUNCTIONS.setdefault(cfile, []).extend(funcs)


_load_areas()
