"""Declared binding of retry (csrc/python/retry.c; core: csrc/core/retry.c):
RetryPolicy, RetryBudget, RetryCounts and the retry loop's clock
functions. Loaded by binding_decl.py beside the other areas."""
from binding_decl import CLOCK_OBJ, M, P, Prop, Type

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
        M("withdraw", returns="bool", expr="withdraw_at(o, now)", now="&o->clock",
          doc="Ask for one retry: True (counted) while retries in the window stay within\n"
              "ratio x first attempts + min_retries_per_second x window, else False (counted\n"
              "as denied). Retry wrappers call it before each retry and give up on False."),
        M("reset", call="prs_retry_budget_reset(o->core)", doc="Empty the window and zero the metrics."),
        M("_metrics", returns="tuple[int, int, int, int, int, float]", now="&o->clock",
          expr="metrics_at(o, now)",
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
        "threads, no lock): its PolicyStep adds the first-try successes in C, the Python\n"
        "loop the rest. Index i of `values` is pyresilience.retry's _COUNTERS[i].",
    methods=[
        M("add", params=[P("i", "INT", "int", field="i", lo=0, hi="PRS_PY_RETRY_COUNTS - 1"),
                         P("n", "INT", "int", field="n", lo=0, posonly=True)],
          config="retry_args", call="prs__counters_add(o->core, (size_t)a.i, (uint64_t)a.n)",
          doc="Add n (>= 0) to counter i."),
    ],
    props=[
        Prop("values", "tuple[int, ...]", "Every counter now, in index order.",
             expr="counts_values(o)"),
    ])

TYPES = [RETRY_POLICY, RETRY_BUDGET, RETRY_COUNTS]

# retry.c registers through the generated prs_py_register_retry: the loop's verdicts.
SETUP = {"retry": None}
CONSTANTS = {"retry": [(v, "PRS_" + v) for v in (
    "RETRY_SLEEP", "RETRY_GIVE_UP_ATTEMPTS", "RETRY_GIVE_UP_DEADLINE", "RETRY_GIVE_UP_RETRY_AFTER",
    "RETRY_GIVE_UP_RETRY_AFTER_LIMIT")]}

FUNCTIONS = {
    "retry": [
        M("retry_now_ns", "clock: ClockArg, /", "int", c="mod_retry_now_ns",
          expr="clock_use(st, arg, -1)",
          doc="The time of `clock` (None: monotonic) in integer nanoseconds."),
        M("retry_sleep", params=[P("clock", "CLOCK", "ClockArg"),
                                 P("ns", "INT", "int", field="n", lo=0, posonly=True)],
          config="retry_args", c="mod_retry_sleep", expr="clock_use(st, v[0], a.n)",
          doc="Sleep `ns` nanoseconds for a retry: advances a ManualClock at once; otherwise "
              "sleeps\nwith the GIL released, interruptible by signals (Ctrl-C)."),
    ],
}
