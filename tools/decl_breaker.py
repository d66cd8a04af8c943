"""The declared binding of the circuit breaker (csrc/python/breaker.c): the
CircuitBreaker type and the function it decorates (BreakerFunction). The
configuration properties read the core's config through the constructor's
parameter table (one declaration for the argument and the property).
"""
from binding_decl import CLOCK_OBJ, M, P, Prop, Type

EXC_TUPLE = "tuple[type[BaseException], ...]"
LISTENER = "Callable[[Any, Any, Any], Any]"

PARAMS = [
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
    # tuples: the facade turns an item or an iterable of them into one
    P("record_exceptions", "OBJECT", EXC_TUPLE, "...", is_tuple=True),
    P("ignore_exceptions", "OBJECT", EXC_TUPLE, "()", is_tuple=True),
    P("is_failure", "CALLABLE", "Optional[Callable[[Any], Any]]", "None", flags=("none",)),
    P("on_state_change", "OBJECT", "Optional[tuple[%s, ...]]" % LISTENER, "None", is_tuple=True),
    P("clock", "CLOCK", "ClockArg", "None"),
    P("shared", "OBJECT", "Optional[SharedMemory]", "None", kw=True),
]


def config_prop(name, type, doc):
    """A property reading parameter `name`'s field in the core's config."""
    return Prop(name, type, doc, "cb_param_get", closure=[p.name for p in PARAMS].index(name))


BREAKER = Type(
    "CircuitBreaker", "breaker", "cb", config="prs_breaker_config", obj="breaker_obj",
    init="prs_breaker_config_init", check="prs_breaker_config_check",
    flags=("BASETYPE", "HAVE_GC", "IMMUTABLETYPE"),
    offsets={"weaklist": "weakreflist"}, clock="clock", free="prs_breaker_free(o->core);",
    keep={"name": "name", "fallback": "fallback", "is_failure": "is_failure"},
    build=["o->timing = cfg.slow_call_ns > 0;",
           "PyObject *shared = v[P_CircuitBreaker_shared];",
           "rc = cb_objects(o, v) < 0 ? -1 : shared && shared != Py_None ? prs_py_shm_place("
           "st, shared, o->name, PRS_PY_PLACE_BREAKER, NULL, &cfg, &o->core, NULL) "
           ": prs_breaker_new(&cfg, &o->core);"],
    refs=["fallback", "name", "record_exc", "ignore_exc", "is_failure", "listeners", "states",
          "msg_open", "msg_half"],
    params=PARAMS,
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
          expr="record_manual(self, a.duration_ns, PRS_BREAKER_SUCCESS)",
          params=[P("duration", "DURATION", "float", "0.0", field="duration_ns",
                    flags=("zero", "inf"))],
          doc="Record a successful call that lasted `duration` seconds (slow-call detection)."),
        M("record_failure", config="cb_record_args",
          expr="record_manual(self, a.duration_ns, PRS_BREAKER_FAILURE)",
          params=[P("duration", "DURATION", "float", "0.0", field="duration_ns",
                    flags=("zero", "inf"))],
          doc="Record a failed call that lasted `duration` seconds."),
        M("record_ignored", expr="record_manual(self, 0, PRS_BREAKER_IGNORED)",
          doc="Record a call that counts as neither (frees the half-open trial slot that\n"
              "allow_request() took)."),
        M("open", expr="manual(self, prs_breaker_open)", doc="Open the circuit now; it half-opens after timeout_seconds as usual."),
        M("close", expr="manual(self, prs_breaker_close)", doc="Close the circuit (window and consecutive counts cleared; totals kept)."),
        M("half_open", expr="manual(self, prs_breaker_half_open)", doc="Move to HALF_OPEN: the next calls are trial calls."),
        M("reset", expr="manual(self, prs_breaker_reset)", doc="Back to CLOSED with every counter cleared (also ends force_open/disable)."),
        M("force_open", expr="manual(self, prs_breaker_force_open)", doc="Open the circuit until reset() or another manual state call."),
        M("disable", expr="manual(self, prs_breaker_disable)", doc="Allow every call and never trip (outcomes are still counted) until\n"
                         "reset() or another manual state call."),
        M("_wrap", returns='"BreakerFunction"', expr="wrap(o, v[0])",
          params=[P("func", "CALLABLE", "Callable[..., Any]", posonly=True)],
          doc="Internal: a C callable running func through this breaker (the sync decorator)."),
        M("_acquire", returns="Any",
          doc="Internal: (permit, start_ns) when admitted, else a fresh CircuitOpenError instance\n"
              "(not raised: the facade returns fallback() or raises it)."),
        M("_metrics", returns="tuple[Any, int, int, int, int, int, int, int, float, float, float, "
                              "int, int, int, int, str]", expr="metrics_at(o, now)", now="&o->clock",
          doc="Internal: the fields of a CircuitBreakerMetrics snapshot taken now (pyresilience.\n"
              "CircuitBreaker.metrics gives them as one)."),
        M("_reap", returns="int", expr="PyLong_FromLong(prs_breaker_reap(o->core))",
          doc="Internal: free now the half-open trial slots of dead processes (shared): how many."),
        M("_record", expr="record(o, v[0], v[1], v[2])", params=[P("token", "OBJECT", "Any"),
                  P("exc", "OBJECT", "Optional[BaseException]", "None"),
                  P("result", "OBJECT", "Any", "None")],
          doc="Internal: record the outcome of a call admitted by _acquire() (token None: without\n"
              "a permit)."),
    ],
    props=[
        Prop("state", "Any",
             "The current CircuitState (OPEN stays OPEN past its timeout until the next call).",
             expr="Py_NewRef(PyTuple_GET_ITEM(o->states, prs_breaker_get_state(o->core)))"),
        Prop("mode", "str",
             "'normal', 'forced_open' (after force_open()) or 'disabled' (after disable()).",
             expr="PyUnicode_FromString(prs_breaker_mode_name(prs_breaker_get_mode(o->core)))"),
        config_prop("failure_threshold", "int",
                    "Consecutive failures that open the circuit (consecutive mode)."),
        config_prop("success_threshold", "int", "Half-open successes that close the circuit."),
        config_prop("half_open_max_calls", "int", "Trial calls admitted at once while half-open."),
        config_prop("window_size", "int",
                    "Outcomes (count window) or seconds (time window) in the window."),
        config_prop("minimum_calls", "int",
                    "Outcomes the window needs before a rate can open the circuit."),
        config_prop("timeout_seconds", "float",
                    "Seconds the circuit stays open before a trial call (inf: until a manual call)."),
        config_prop("failure_rate_threshold", "Optional[float]",
                    "The failure rate that opens the circuit (None: consecutive mode)."),
        config_prop("slow_call_rate_threshold", "Optional[float]",
                    "The slow-call rate that opens the circuit (None: off)."),
        config_prop("slow_call_duration", "Optional[float]",
                    "Seconds from which a call is slow (None: never)."),
        config_prop("window_type", "str", "'count' or 'time'."),
        Prop("name", "Optional[str]", "The breaker's name (or None).", member="name"),
        Prop("shared", "bool", "True when its state lives in a SharedMemory region.",
             expr="PyBool_FromLong(prs_breaker_shared(o->core))"),
        Prop("fallback", "Optional[Callable[[], Any]]",
             "Called with no arguments instead of raising when a call is rejected.", member="fallback"),
        Prop("record_exceptions", EXC_TUPLE, "Exception classes that count as failures.",
             member="record_exc"),
        Prop("ignore_exceptions", EXC_TUPLE,
             "Exception classes that count as neither success nor failure.", member="ignore_exc"),
        Prop("is_failure", "Optional[Callable[[Any], Any]]",
             "is_failure(result) -> bool marks returned values as failures (or None).",
             member="is_failure"),
        Prop("_listeners", "tuple[%s, ...]" % LISTENER,
             "The listeners called after each transition (a tuple; the facade adds and removes).",
             expr="listeners_of(o)", set="cb_set_listeners"),
        Prop("clock", CLOCK_OBJ, "The clock this breaker reads.", clock="clock"),
    ])

BREAKER_FUNCTION = Type(
    "BreakerFunction", "breaker", "wrapped", obj="wrapped_obj",
    flags=("HAVE_GC", "IMMUTABLETYPE", "HAVE_VECTORCALL", "DISALLOW_INSTANTIATION"),
    slots={"call": "PyVectorcall_Call", "descr_get": "prs_py_method_get", "repr": None},
    offsets={"dict": "dict", "weaklist": "weakreflist", "vectorcall": "vectorcall"},
    refs=["breaker", "func", "dict", "fast"],
    doc="A function protected by a CircuitBreaker (made by using the breaker as a "
        "decorator): each call goes through breaker.call(func, ...).",
    methods=[
        M("__call__", "*args: Any, **kwargs: Any", "Any", slot=True),
        M("__get__", "obj: Any, objtype: Any = None, /", "Any", slot=True),
    ],
    props=[Prop("__dict__", None, None, "PyObject_GenericGetDict", set="PyObject_GenericSetDict"),
           Prop("breaker", '"CircuitBreaker"', "The CircuitBreaker that protects this function.",
                member="breaker")])

TYPES = [BREAKER_FUNCTION, BREAKER]
SETUP = {"breaker": None}  # the generated prs_py_register_breaker adds the types
