"""The declared binding of a policy call: PolicyStep (csrc/python/policy.c)
and the deadline functions (csrc/python/deadline.c)."""
from binding_decl import M, P, Prop, Type

POLICY_STEP = Type(
    "PolicyStep", "policy", "step", obj="step_obj", config="step_args",
    flags=("HAVE_GC", "HAVE_VECTORCALL", "IMMUTABLETYPE", "METHOD_DESCRIPTOR"),
    slots={"call": "PyVectorcall_Call", "descr_get": "prs_py_method_get", "repr": None},
    offsets={"vectorcall": "vectorcall", "dict": "dict", "weaklist": "weakreflist"},
    refs=["next", "a", "b", "c", "o", "dict"], clock="clock",
    keep={"next": "next", "a": "a", "b": "b", "c": "c"},
    build="rc = step_build(st, o, &cfg, v[P_PolicyStep_o]);",
    params=[
        P("kind", "INT", "int", field="kind", lo=0, hi="STEP__COUNT - 1"),
        P("next", "OBJECT", "Any", "None"), P("a", "OBJECT", "Any", "None"),
        P("b", "OBJECT", "Any", "None"), P("c", "OBJECT", "Any", "None"),
        P("ns", "INT", "int", "-1", field="ns"),
        P("clock", "CLOCK", "Any", "None", posonly=True),
        P("o", "OBJECT", "Any", "None", posonly=True),
    ],
    doc="One layer of a Policy's sync chain, run in C (built by pyresilience.policy).",
    methods=[
        M("__call__", "*args: Any, **kwargs: Any", "Any", slot=True),
        M("__get__", "obj: Any, objtype: Any = None, /", "Any", slot=True),
    ],
    props=[
        Prop("kind", "int", "What the step does (see policy.c).", expr="PyLong_FromLong(o->kind)"),
        Prop("next", "Any", "The next callable of the chain.", member="next"),
    ],
    stub_tail=["# functools.update_wrapper and Retry write these into the instance __dict__",
               "__wrapped__: Callable[..., Any]",
               "retry: Any"])

TYPES = [POLICY_STEP]

# deadline.c's setup makes the DEADLINE context variable; policy.c's step kinds.
SETUP = {"deadline": "deadline_setup", "policy": None}
CONSTANTS = {"policy": ["STEP_APPLY", "STEP_LIMIT", "STEP_BULKHEAD", "STEP_TIMEOUT",
                        "STEP_FALLBACK", "STEP_RETRY", "STEP_BREAKER"]}

FUNCTIONS = {
    "deadline": [
        M("deadline_remaining", returns="Optional[float]", expr="deadline_get(st, 1)",
          doc="Seconds left before the deadline of the current policy call (0.0 once it has\n"
              "passed), or None when no Timeout of a Policy is in effect."),
        M("_deadline_ns", returns="Optional[int]", c="deadline_ns", expr="deadline_get(st, 0)",
          doc="The absolute deadline in effect (CLOCK_MONOTONIC ns), or None."),
        M("_timeout_enter", returns="Optional[Tuple[contextvars.Token[int], float]]",
          params=[P("ns", "INT", "int", field="ns", lo=0, posonly=True)], config="timeout_args",
          c="timeout_enter", expr="timeout_enter_ns(st, a.ns)",
          doc="The async Timeout's entry: the deadline in effect inside (ns from now, or a\n"
              "sooner outer one) set in DEADLINE; (token, seconds left), or None when it has passed."),
    ],
}
