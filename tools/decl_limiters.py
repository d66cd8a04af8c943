"""The declared binding of the rate limiters (csrc/python/limiters.c, keyed.c).

The list of algorithms is the core's table, PRS_ALGORITHMS (include/pyresilience/prs_algo.h),
read here row by row; ALGO_PARAMS says, per row (by its C name), the
parameters of its Python type. From one row and its parameters come both the
constructor's and reconfigure()'s descriptions (reconfigure: the same
parameters, keyword-only, None keeping the value), the properties and the
stub. The generator stops when the table and ALGO_PARAMS disagree
(tests/test_binding_decl.py checks it too).
"""
import os
import re
import textwrap

from binding_decl import CLOCK_OBJ, M, P, Prop, Type

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGO_HEADER = os.path.join(ROOT, "include", "pyresilience", "prs_algo.h")


def algorithm_table():
    """[(c_name, python_name)] in the order of PRS_ALGORITHMS."""
    with open(ALGO_HEADER) as f:
        text = f.read()
    body = text[text.index("#define PRS_ALGORITHMS(X)"):]
    body = body[:body.index("\n\n")]
    return re.findall(r'X\((\w+),\s*(\w+),\s*"[^"]*"\)', body)


# (admitted, rejected) of a core object: prs_<kind>_admitted/_rejected(obj)
COUNTS = 'Py_BuildValue("(KK)", (unsigned long long)prs_%s_admitted(%s), (unsigned long long)prs_%s_rejected(%s))'

LIMITER_FLAGS = ("BASETYPE", "HAVE_GC", "IMMUTABLETYPE")
LIMITER_SLOTS = {"dealloc": "limiter_dealloc", "traverse": "limiter_traverse",
                 "clear": "limiter_clear"}
RECONF_TAIL = " Thread-safe; bad values raise the constructor's errors and change nothing."
WINDOW_RECONF = "Change limit and/or window (seconds) now; what is not given keeps its value.\n"


def real(name, field, doc):
    return P(name, "REAL", "float", field=field, flags=("zero", "neg", "inf"), doc=doc)


def count(name, field, doc, double=False):
    return P(name, "COUNT", "float" if double else "int", field=field, lo=1,
             flags=("double",) if double else (), doc=doc)


def window(doc="The window length in seconds."):
    return P("window", "DURATION", "float", field="window_ns", flags=("zero", "neg", "trunc"),
             doc=doc)


def alias(p, name):
    """Another keyword for p (same field and conversion)."""
    a = P(name, p.kind, p.type, field=p.field, lo=p.lo, hi=p.hi, flags=p.flags, doc=p.doc)
    a.alias_of = p.name
    return a


# Per row of PRS_ALGORITHMS (C name): the parameters (in constructor order,
# aliases after them), the type's doc, reconfigure()'s doc, extra properties.
ALGO_PARAMS = {
    "token_bucket": dict(
        params=[count("capacity", "capacity", "Tokens the bucket holds when full.", double=True),
                real("refill_rate", "refill_rate",
                     "Tokens added per second (0: a fixed budget); alias rate."),
                ("rate", "refill_rate")],
        doc="A token bucket holding up to `capacity` tokens, refilled continuously at\n"
            "`refill_rate` tokens per second (keyword alias: rate=), starting full.\n"
            "refill_rate=0 is a fixed budget that never refills. Admits at most\n"
            "capacity + refill_rate * T in any interval of T seconds. Thread-safe.",
        reconfigure="Change capacity and/or refill_rate (alias rate) now; what is not given "
                    "keeps its\nvalue. The tokens held now (refilled at the old rate until now) "
                    "are kept, capped\nat the new capacity; no token is ever added." + RECONF_TAIL),
    "gcra": dict(
        params=[real("rate", "rate", "Requests per second."),
                count("burst", "burst", "Requests admissible at once.")],
        doc="The Generic Cell Rate Algorithm: `rate` requests per second with up to\n"
            "`burst` admissible at once. Lock-free (one 64-bit state). Admits at most\n"
            "burst + rate * T in any interval of T seconds. Scheduling is in whole\n"
            "nanoseconds: the interval 1e9/rate is rounded up, so rates above 1e9/s act\n"
            "as 1e9/s (use TokenBucket for those).",
        reconfigure="Change rate and/or burst now; what is not given keeps its value. The "
                    "requests\nalready consumed are kept (re-expressed on the new rate, rounded "
                    "up: nothing is\nminted), so a burst lowered below them admits nothing until "
                    "they drain." + RECONF_TAIL),
    "leaky_bucket": dict(
        params=[count("capacity", "capacity", "The most the bucket holds.", double=True),
                real("leak_rate", "leak_rate", "Units drained per second.")],
        doc="A leaky bucket used as a meter. Each admitted request of weight n raises a\n"
            "level by n; the level drains continuously at `leak_rate` units per second;\n"
            "a request is admitted when level + n <= capacity. Starts empty.\n\n"
            "Bound: at most capacity + leak_rate * T units in any interval of T seconds.\n"
            "acquire() paces callers at exactly leak_rate once `capacity` has gone\n"
            "through. retry_after is exact to the nanosecond. capacity and leak_rate:\n"
            "positive finite numbers up to 1e15. Thread-safe.",
        reconfigure="Change capacity and/or leak_rate now; what is not given keeps its value. "
                    "The\nlevel now (drained at the old rate until now) is kept as it is: above "
                    "a lowered\ncapacity nothing is admitted until it drains." + RECONF_TAIL,
        props=[Prop("level", "float", "The level now, in [0, capacity] (float).",
                    expr="PyFloat_FromDouble(prs_leaky_bucket_level((prs_leaky_bucket *)o->core, "
                         "now))", now="&o->clock")]),
    "fixed_window": dict(
        params=[count("limit", "limit", "Units admitted per window."), window()],
        doc="At most `limit` units per window of `window` seconds, windows aligned to\n"
            "multiples of `window` on the clock. O(1) state.\n\n"
            "Bound: at most limit in each aligned window; an interval of length window\n"
            "that straddles a boundary can see up to 2 * limit (the end of one window\n"
            "and the start of the next). Use SlidingWindowLog for an exact sliding\n"
            "bound. retry_after is the time to the next window (exact). limit: a\n"
            "positive int; window: a positive finite number of seconds. Thread-safe.",
        reconfigure=WINDOW_RECONF + "The count of the window in force now is kept (with a new "
                    "window\nlength, it counts in the new window holding now); a count at or "
                    "above a\nlowered limit admits nothing until the window moves on."
                    + RECONF_TAIL),
    "sliding_log": dict(
        params=[count("limit", "limit", "Units admitted in any interval of length window."),
                window()],
        doc="Exact sliding window: at most `limit` units in any interval of `window`\n"
            "seconds. Keeps the time of every admitted unit in a ring of `limit`\n"
            "timestamps (8 bytes each: memory O(limit); a request of weight n takes n\n"
            "slots).\n\n"
            "Bound: for every half-open interval [t, t + window), at most limit units.\n"
            "retry_after is the instant the oldest unit that must leave does leave\n"
            "(exact to the nanosecond). limit: a positive int up to 2**27; window: a\n"
            "positive finite number of seconds. Thread-safe.",
        reconfigure=WINDOW_RECONF + "Every admission time is kept and counts until it leaves "
                    "the (new)\nwindow; a limit lowered below the count admits nothing until "
                    "enough of\nthem expire. O(limit); a new limit moves the ring to a new "
                    "allocation." + RECONF_TAIL),
    "sliding_counter": dict(
        params=[count("limit", "limit", "Units admitted per (weighted) sliding window."),
                window()],
        doc="Sliding window counter: two counters over windows aligned like\n"
            "FixedWindow's. At e seconds into the current window a request of weight\n"
            "n is admitted when prev * (window - e) / window + cur + n <= limit\n"
            "(evaluated exactly in integers). O(1) state.\n\n"
            "Bound (the approximation): at most limit in each aligned window; in any\n"
            "interval of length window at most limit + prev * x, x being the fraction\n"
            "of the interval inside the later window - always fewer than 2 * limit, and\n"
            "about the sliding log's count when the previous window's traffic was even.\n"
            "retry_after is exact to the nanosecond. limit: a positive int; window: a\n"
            "positive finite number of seconds. Thread-safe.",
        reconfigure=WINDOW_RECONF + "Both counters are kept (with a new window length, the "
                    "weighted count\nnow, rounded up, counts in the new window holding now); a "
                    "limit lowered\nbelow them admits nothing until the weighted count falls "
                    "under it." + RECONF_TAIL),
}


class AlgoType(Type):
    """A limiter type: the layout of _Limiter (not a disjoint base of its own)."""

    def decorators(self):
        return []


def _params(row):
    """The row's parameters, aliases resolved: [P]."""
    out = []
    for p in row["params"]:
        if isinstance(p, tuple):
            name, target = p
            p = alias(next(q for q in out if q.name == target), name)
            p.kw = True
        out.append(p)
    return out


def ctor_params(row):
    out = []
    for p in _params(row):
        q = P(p.name, p.kind, p.type, "..." if _aliased(row, p) else None, field=p.field, lo=p.lo,
              hi=p.hi, flags=p.flags, kw=p.kw, doc=p.doc)
        if hasattr(p, "alias_of"):
            q.alias_of = p.alias_of
        out.append(q)
    out.append(P("shared", "OBJECT", "Optional[SharedMemory]", "None", kw=True))
    out.append(P("name", "STR", "Optional[str]", "None", flags=("none",), kw=True))
    out.append(P("clock", "CLOCK", "ClockArg", "None", kw=True))
    return out


def _aliased(row, p):
    return hasattr(p, "alias_of") or any(
        isinstance(a, tuple) and a[1] == p.name for a in row["params"])


def reconfigure_params(row):
    out = []
    for p in _params(row):
        q = P(p.name, p.kind, "Optional[%s]" % p.type, "None", field=p.field, lo=p.lo, hi=p.hi,
              flags=p.flags + ("none",), kw=True, doc=p.doc)
        if hasattr(p, "alias_of"):
            q.alias_of = p.alias_of
        out.append(q)
    return out


def algo_type(c, py):
    row = ALGO_PARAMS[c]
    config = "prs_%s_config" % c
    params = ctor_params(row)
    props = [Prop(p.name, p.type, p.doc, "limiter_param_get", closure=i)
             for i, p in enumerate(params) if p.kind not in ("CLOCK", "OBJECT", "STR")]
    return AlgoType(
        py, "limiters", "limiter", row["doc"], obj="prs_py_limiter", config=config, params=params,
        base="_Limiter", flags=LIMITER_FLAGS, slots=LIMITER_SLOTS, props=props + row.get("props", []),
        methods=[M("reconfigure", params=reconfigure_params(row), config=config,
                   c="limiter_reconfigure", doc=row["reconfigure"])])


ALGORITHMS = algorithm_table()
if sorted(c for c, _ in ALGORITHMS) != sorted(ALGO_PARAMS):
    raise SystemExit("tools/decl_limiters.py: ALGO_PARAMS (%s) does not match PRS_ALGORITHMS (%s)"
                     % (", ".join(sorted(ALGO_PARAMS)), ", ".join(c for c, _ in ALGORITHMS)))

N_SIG = "n: int = 1, *, tokens_needed: Optional[int] = None"
ACQ_SIG = "n: int = 1, timeout: Optional[float] = None, *, tokens_needed: Optional[int] = None"
KEY_N_SIG = "key: KeyArg, " + N_SIG
WAITER_DOC = "A _RateWait for acquire_async (the deadline starts now)."

RATE_WAIT = Type(
    "_RateWait", "wait", "rate_wait", obj="rate_wait_obj",
    flags=("HAVE_GC", "IMMUTABLETYPE", "DISALLOW_INSTANTIATION"),
    refs=[], kept=["owner"],  # no tp_clear: ctx lives in owner
    doc="An acquire in progress, for the async forms (made by _waiter()).",
    methods=[M("step", returns="Optional[float]",
               doc="Decide once: None when admitted (n was taken), else the float seconds to "
                   "wait\nbefore the next step (0.0 on a ManualClock, which was advanced instead). "
                   "Raises\nRateLimitExceeded / ValueError as acquire() does; nothing is taken "
                   "then.")])

LIMITER_BASE = Type(
    "_Limiter", "limiters", "limiter", obj="prs_py_limiter",
    flags=LIMITER_FLAGS + ("DISALLOW_INSTANTIATION",), rate="limiter_target",
    slots=LIMITER_SLOTS, offsets={"weaklist": "weakreflist"}, slot="LimiterBase",
    refs=[], clock="clock", free="prs_limiter_free(o->core);",
    doc="The shared base of the in-process limiters (not instantiable).",
    methods=[
        M("allow", N_SIG, "bool", rate=True,
          fast="prs_limiter_allow(o->core, prs_monotonic_ns(), 1)",
          doc="Consume n if it is available now: True when admitted, False when not.\n"
              "tokens_needed= is an alias of n. n larger than the limit is never admitted."),
        M("check", N_SIG, "Decision", rate=True,
          fast="prs_limiter_check(o->core, prs_monotonic_ns(), 1, &d)",
          doc="Like allow(), returning the Decision (allowed, limit, remaining, retry_after,\n"
              "reset_after). Consumes n only when allowed."),
        M("peek", N_SIG, "Decision", rate=True,
          doc="The Decision check(n) would return now, without consuming anything."),
        M("acquire", ACQ_SIG, rate=True,
          doc="Block until n is admitted (the GIL is released while waiting; Ctrl-C interrupts\n"
              "the wait and nothing is consumed). timeout in seconds (None: no limit): when n\n"
              "cannot be admitted within it, RateLimitExceeded is raised at once instead of\n"
              "waiting in vain; when it can never be admitted (a spent budget that does not\n"
              "refill, a clock saturated at 2**63 ns) RateLimitExceeded (retry_after inf) is\n"
              "raised at once whatever the timeout. A finite timeout always holds, also on a\n"
              "callable clock that stalls. ValueError when n exceeds the limit. On a "
              "ManualClock\nthe wait advances the clock (integer nanoseconds) instead of "
              "sleeping."),
        M("_waiter", ACQ_SIG, "_RateWait", rate=True, doc=WAITER_DOC),
        M("reset", call="prs_limiter_reset(o->core)", doc="Back to the initial (full) state."),
    ],
    props=[Prop("_counts", "tuple[int, int]", "(admitted, rejected): consuming decisions since creation, counted in the core.",
                expr=COUNTS % ("limiter", "o->core", "limiter", "o->core")),
           Prop("available", "float", "Requests of weight 1 admissible now (float).",
                expr="PyFloat_FromDouble(prs_limiter_available(o->core, now))", now="&o->clock"),
           Prop("clock", CLOCK_OBJ, "The clock this limiter reads.", clock="clock")])

KEYED_FLAGS = ("BASETYPE", "HAVE_GC", "IMMUTABLETYPE")

KEYED = Type(
    "KeyedLimiter", "keyed", "keyed", obj="keyed_obj", config="prs_keyed_config",
    rate="keyed_target", rate_key=True,
    flags=KEYED_FLAGS, offsets={"weaklist": "weakreflist"}, slots={"len": None, "contains": None},
    refs=[], clock="clock", kept=["tmpl"], init="prs_keyed_config_init", keep={"tmpl": "limiter"},
    free="prs_keyed_free(o->table); /* before the template whose params it reads */",
    build="rc = keyed_build(st, o, &cfg, v[P_KeyedLimiter_shared], v[P_KeyedLimiter_name]);",
    params=[P("limiter", "OBJECT", "_Limiter"),
            P("max_keys", "COUNT", "int", "100000", field="max_keys", lo=1,
              hi="PRS_KEYED_MAX_KEYS", kw=True),
            P("clock", "CLOCK", "ClockArg", "None", kw=True),
            P("shared", "OBJECT", "Optional[SharedMemory]", "None", kw=True),
            P("name", "STR", "Optional[str]", "None", flags=("none",), kw=True)],
    doc="One limiter state per key, all with the algorithm and parameters of `limiter`\n"
        "(an in-process limiter object used as a template), in a bounded C hash table\n"
        "(SipHash with a per-process random seed). At most max_keys keys; a key whose\n"
        "state is fresh may be evicted, a limited key never is. With shared=region,\n"
        "name=...: the table lives in that SharedMemory region (max_keys reserved there\n"
        "at creation), one state per key for every process.",
    methods=[
        M("allow", KEY_N_SIG, "bool", rate=True,
          fast="prs_keyed_check(o->table, key.p, key.n, prs_monotonic_ns(), 1, &d)",
          doc="Consume n for `key` (str or bytes) if available now: True when admitted."),
        M("check", KEY_N_SIG, "Decision", rate=True,
          doc="Like allow(), returning the Decision. When the table is full of limited keys a\n"
              "new key is denied, retry_after being when a slot frees."),
        M("peek", KEY_N_SIG, "Decision", rate=True,
          doc="The Decision check(key, n) would return now, consuming and storing nothing."),
        M("acquire", "key: KeyArg, " + ACQ_SIG, rate=True,
          doc="Block until n is admitted for `key` (GIL released while waiting, Ctrl-C\n"
              "interrupts, nothing consumed on failure). RateLimitExceeded at once when it\n"
              "cannot be admitted within timeout seconds or never can be (retry_after inf);\n"
              "ValueError when n exceeds the limit."),
        M("reset", params=[P("key", "CONVERT", "Optional[KeyArg]", "None", convert="key_arg",
                             flags=("none",))], config="prs_py_bytes",
          call="if (a.p) prs_keyed_reset_key(o->table, a.p, a.n); else prs_keyed_reset_all(o->table)",
          doc="Forget `key` (back to a fresh limiter), or every key when None."),
        M("available", params=[P("key", "CONVERT", "KeyArg", convert="key_arg", posonly=True)],
          config="prs_py_bytes", returns="float", now="&o->clock",
          expr="PyFloat_FromDouble(prs_keyed_available(o->table, a.p, a.n, now))",
          doc="Requests of weight 1 admissible for `key` now (float)."),
        M("prune", returns="int", expr="PyLong_FromLongLong(prs_keyed_prune(o->table, now))",
          now="&o->clock",
          doc="Evict every key whose state is fresh now; returns how many.\n"
              "(Fresh keys are also evicted on demand when room is needed.)"),
        M("reconfigure", "**params: Any",
          expr="prs_py_limiter_reconfigure(o->tmpl, o->table, &o->reconfiguring, &o->clock, args, "
               "nargs, kwnames)",
          doc="Change the parameters of every key at once, now: the keywords of the template\n"
              "limiter's reconfigure() (capacity=/refill_rate= for a TokenBucket, limit=/window=\n"
              "for the windows, ...); what is not given keeps its value. Each key's state is kept\n"
              "as that limiter's reconfigure() keeps it, and a concurrent decision on any key sees\n"
              "the old parameters or the new ones, never a mix. The template limiter itself is\n"
              "not changed (the table keeps its own copy of the parameters)."),
        M("__len__", returns="int", slot=True, expr="prs_keyed_len(o->table)"),
        M("__contains__", "key: object, /", "bool", slot=True),
    ],
    props=[Prop("_counts", "tuple[int, int]", "(admitted, rejected): consuming decisions since creation, counted in the core.",
                expr=COUNTS % ("keyed", "o->table", "keyed", "o->table")),
           Prop("max_keys", "int", "The most keys held at once.",
                expr="PyLong_FromLongLong(prs_keyed_max_keys(o->table))"),
           Prop("memory_bytes", "int", "Bytes the key table holds now (C allocations).",
                expr="PyLong_FromSize_t(prs_keyed_memory(o->table))"),
           Prop("limiter", "_Limiter",
                "The template limiter whose algorithm and parameters every key uses.",
                member="tmpl"),
           Prop("clock", CLOCK_OBJ, "The clock this limiter reads.", clock="clock")])

VIEW = Type(
    "KeyedLimiterView", "keyed", "view", rate="view_target", obj="view_obj", flags=KEYED_FLAGS,
    offsets={"weaklist": "weakreflist"}, refs=[], kept=["keyed", "key", "keybytes"],
    keep={"keyed": "limiter", "key": "key"}, build="rc = (o->keybytes = key_bytes(o->key)) ? 0 : -1;",
    params=[P("limiter", "OBJECT", "KeyedLimiter", instance="KeyedLimiter"), P("key", "OBJECT", "KeyArg")],
    doc="One key of a KeyedLimiter with the plain limiter interface (allow, check, peek,\n"
        "acquire, reset, available); what KeyedLimiter.for_key(key) returns. Can be a\n"
        "LimiterGroup member.",
    methods=[
        M("allow", N_SIG, "bool", rate=True,
          doc="Consume n for this key if available now: True when admitted."),
        M("check", N_SIG, "Decision", rate=True, doc="Like allow(), returning the Decision."),
        M("peek", N_SIG, "Decision", rate=True, doc="The Decision check(n) would return now, consuming nothing."),
        M("acquire", ACQ_SIG, rate=True,
          doc="Block until n is admitted for this key (see KeyedLimiter.acquire)."),
        M("_waiter", ACQ_SIG, "_RateWait", rate=True, doc=WAITER_DOC),
        M("reset", call="prs_keyed_reset_key(VTABLE(o), VKEY(o))",
          doc="Forget this key (back to a fresh limiter)."),
    ],
    props=[Prop("_counts", "tuple[int, int]", "(admitted, rejected): consuming decisions since creation, counted in the core.",
                expr=COUNTS % ("keyed", "VTABLE(o)", "keyed", "VTABLE(o)")),
           Prop("available", "float", "Requests of weight 1 admissible for this key now (float).",
                expr="PyFloat_FromDouble(prs_keyed_available(VTABLE(o), VKEY(o), now))",
                now="VCLOCK(o)"),
           Prop("clock", CLOCK_OBJ, "The clock of the KeyedLimiter.",
                expr="prs_py_get_clock(o->keyed, (void *)offsetof(keyed_obj, clock))"),
           Prop("key", "KeyArg", "The key, as given.", member="key"),
           Prop("limiter", "KeyedLimiter", "The KeyedLimiter this view belongs to.",
                member="keyed")])

GROUP = Type(
    "LimiterGroup", "keyed", "group", rate="group_target", obj="group_obj", flags=KEYED_FLAGS,
    offsets={"weaklist": "weakreflist"}, slots={"new": None, "len": None},
    refs=[], clock="clock", kept=["members"],
    free="prs_group_free(o->group); /* before the members whose cores it borrows */",
    stub_head=["def __new__(cls, *limiters: Union[_Limiter, KeyedLimiterView]) -> Self: ..."],
    doc="LimiterGroup(*limiters)\n--\n\n" + textwrap.fill(
        "Several limiters checked as one, all or nothing: a request is taken from every "
        "member or from none. Members: in-process limiters of any algorithm (%s) or "
        "per-key views (KeyedLimiter.for_key), all on one clock. Exact under threads "
        "and deadlock-free whatever the member order (members are locked in one global "
        "order). The same limiter (or key) listed twice is one state asked for 2n: "
        "peek, check, retry_after and acquire all count it once per appearance. "
        "Or members all placed in one SharedMemory region (shared=, name=): then all "
        "or nothing holds across processes, even one killed in the middle of a check."
        % ", ".join(py for _, py in ALGORITHMS), 80, break_on_hyphens=False),
    methods=[
        M("allow", N_SIG, "bool", rate=True,
          fast="prs_group_allow(o->group, prs_monotonic_ns(), 1)",
          doc="Consume n from every member if every member admits it now, else from none."),
        M("check", N_SIG, "Decision", rate=True,
          fast="prs_group_check(o->group, prs_monotonic_ns(), 1, &d, &by)",
          doc="Like allow(), returning a Decision whose limit, remaining and reset_after are one\n"
              "member's, the most restrictive (least remaining; ties: longest reset_after), "
              "never a\nmix; retry_after is the longest any member asks; denied_by is the index "
              "of the\nfirst member that denied. A member listed k times counts k * n (its limit "
              "and\nremaining are divided by k)."),
        M("peek", N_SIG, "Decision", rate=True, doc="The Decision check(n) would return now, consuming nothing."),
        M("acquire", ACQ_SIG, rate=True,
          doc="Block until every member admits n at once (GIL released while waiting, Ctrl-C\n"
              "interrupts, nothing consumed on failure). RateLimitExceeded at once when it\n"
              "cannot be admitted within timeout seconds or never can be (retry_after inf);\n"
              "ValueError when n exceeds what a member can ever admit."),
        M("_waiter", ACQ_SIG, "_RateWait", rate=True, doc=WAITER_DOC),
        M("reset", call="prs_group_reset(o->group)", doc="Reset every member (one after the other)."),
        M("__len__", returns="int", slot=True, expr="prs_group_size(o->group)"),
    ],
    props=[Prop("_counts", "tuple[int, int]", "(admitted, rejected): consuming decisions since creation, counted in the core.",
                expr=COUNTS % ("group", "o->group", "group", "o->group")),
           Prop("available", "float", "The smallest amount any member admits now (float).",
                expr="PyFloat_FromDouble(prs_group_available(o->group, now))", now="&o->clock"),
           Prop("clock", CLOCK_OBJ, "The clock every member reads.", clock="clock"),
           Prop("limiters", "tuple[Union[_Limiter, KeyedLimiterView], ...]",
                "The members, in order (tuple).", member="members")])

SETUP = {"keyed": None}
TYPES = ([RATE_WAIT, LIMITER_BASE] + [algo_type(c, py) for c, py in ALGORITHMS]
         + [KEYED, VIEW, GROUP])
