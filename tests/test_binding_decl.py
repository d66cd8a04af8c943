"""The declared binding: tools/binding_decl.py states each converted type's
parameters once; tools/gen_binding.py generates the C parameter tables, text
signatures and _core.pyi blocks from it. These tests prove the generated files
never drift from the declaration, and that the runtime (the generic parser
prs_py_parse_params and the core's validators) behaves as declared."""
from __future__ import annotations

import atexit
import importlib.util
import inspect
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import pyresilience as pr
from pyresilience import _core

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # the decl_<area> modules import it by name while it loads
    sys.path.insert(0, str(TOOLS))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(TOOLS))
    return mod


decl = _load("binding_decl")
gen = _load("gen_binding")
DECLARED = {t.name: t for t in decl.TYPES}
# the declared types Python code can construct (BreakerFunction is made by the breaker)
CONSTRUCTED = {name: t for name, t in DECLARED.items()  # Redis: only with hiredis; a positional-
               if t.params is not None and hasattr(_core, name)  # only one: test_positional_only
               and not any(p.posonly for p in t.params)}

# valid values of the required parameters, to vary one parameter at a time
REQUIRED = {
    "Decision": dict(allowed=True, limit=1, remaining=1, retry_after=0.0, reset_after=0.0),
    "Bulkhead": dict(name="x", max_concurrent=1),
    "TokenBucket": dict(capacity=1, refill_rate=1),
    "GCRA": dict(rate=1, burst=1),
    "LeakyBucket": dict(capacity=1, leak_rate=1),
    "FixedWindow": dict(limit=1, window=1),
    "SlidingWindowLog": dict(limit=1, window=1),
    "SlidingWindowCounter": dict(limit=1, window=1),
    "KeyedLimiter": dict(limiter=_core.GCRA(1, 1)),
    "KeyedLimiterView": dict(limiter=_core.KeyedLimiter(_core.GCRA(1, 1)), key="k"),
    "SharedMemory": dict(name="decl-test", directory=tempfile.mkdtemp(prefix="prs-decl-")),
}
atexit.register(shutil.rmtree, REQUIRED["SharedMemory"]["directory"], True)
REQUIRED["SharedKV"] = dict(region=_core.SharedMemory(**REQUIRED["SharedMemory"]), name="kv",
                            max_keys=4, max_value_bytes=16)
if hasattr(_core, "RedisBackend"):  # built with hiredis (a backend connects lazily: no server needed)
    _limiter = _core.RedisRateLimiter(_core.RedisBackend("redis://127.0.0.1:1"), rate=1, burst=1)
    REQUIRED["RedisRateLimiter"] = dict(backend=_limiter.backend, rate=1, burst=1)
    REQUIRED["RedisLimiterGroup"] = dict(members=[(_limiter, "k", 1)])
    REQUIRED["_RespReader"] = dict(error=Exception)


def _alias_of(p):
    """The parameter p is another keyword for (None: p is not an alias)."""
    return getattr(p, "alias_of", None)


def _required(name, p):
    """REQUIRED for name, p given in place of what it is an alias of."""
    return {k: v for k, v in REQUIRED.get(name, {}).items() if k != _alias_of(p)}


def _runtime(name):
    return getattr(_core, name)


# ---- no drift ------------------------------------------------------------------------

def test_generated_files_match_the_declaration():
    r = subprocess.run([sys.executable, str(TOOLS / "gen_binding.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_reports_a_hand_edit_of_a_generated_block():
    stub = (ROOT / "pyresilience" / "_core.pyi").read_text()
    edited = stub.replace("def allow_request(self) -> bool: ...",
                          "def allow_request(self) -> int: ...")
    assert edited != stub
    assert gen.splice_stub(edited) == stub  # the generator puts the declared text back
    with pytest.raises(SystemExit, match="no declaration"):
        gen.splice_stub(stub + "\n# <gen Nonexistent>\n# </gen>\n")
    without = stub.replace("# <gen RetryCounts>", "# (removed)")
    with pytest.raises(SystemExit):
        gen.splice_stub(without)


def test_every_declared_type_has_a_stub_block():
    stub = (ROOT / "pyresilience" / "_core.pyi").read_text()
    for name in DECLARED:
        assert f"# <gen {name}>" in stub


# ---- signatures and docs come from the declaration -----------------------------------

@pytest.mark.parametrize("name", sorted(CONSTRUCTED))
def test_signature_is_the_declared_one(name):
    t = DECLARED[name]
    sig = inspect.signature(_runtime(name))
    params = [p for p in t.params if not _alias_of(p)]  # the text signature shows no alias
    assert [p.name for p in sig.parameters.values()] == [p.name for p in params]
    posonly = max((i + 1 for i, p in enumerate(params) if p.posonly), default=0)  # before a "/"
    for i, (p, q) in enumerate(zip(params, sig.parameters.values())):
        want = q.KEYWORD_ONLY if p.kw else q.POSITIONAL_ONLY if i < posonly else q.POSITIONAL_OR_KEYWORD
        assert q.kind is want, p.name
        if p.default is None:
            assert q.default is q.empty, p.name
        elif p.default != "...":
            assert q.default == eval(p.default), p.name
    assert _runtime(name).__doc__.strip()
    for m in t.methods:
        if m.slot:
            continue
        meth = getattr(_runtime(name), m.name)
        assert meth.__doc__ == m.doc, m.name
        inspect.signature(meth)
    for prop in t.props:
        if prop.type is not None:
            assert getattr(_runtime(name), prop.name).__doc__ == prop.doc, prop.name


def test_module_functions_are_declared():
    for funcs in decl.FUNCTIONS.values():
        for f in funcs:
            fn = getattr(_core, f.name)
            assert fn.__doc__ == f.doc
            assert str(inspect.signature(fn)) == "(%s)" % gen.method_sig(f, False)


def test_module_functions_parse_their_declared_params():
    """A module function declared with params (gen_binding's c_func): the
    generic parser names the argument and its value."""
    with pytest.raises(ValueError, match=r"^ns must be >= 0, got -1$"):
        _core._timeout_enter(-1)
    with pytest.raises(TypeError, match=r"^ns must be an int, not float: 1.5$"):
        _core.retry_sleep(None, 1.5)
    with pytest.raises(TypeError, match="missing required argument 'ns'"):
        _core.retry_sleep(None)
    clock = _core.ManualClock()
    assert _core.retry_sleep(clock, 5) is None and _core.retry_now_ns(clock) == 5
    assert _core.deadline_remaining() is None and _core._deadline_ns() is None


def test_positional_only():
    """PolicyStep(kind, next=None, ..., /): declared, positional only."""
    sig = inspect.signature(_core.PolicyStep)
    assert str(sig) == "(kind, next=None, a=None, b=None, c=None, ns=-1, clock=None, e=None, /)"
    assert _core.PolicyStep(_core.STEP_APPLY).kind == _core.STEP_APPLY
    with pytest.raises(TypeError, match="positional arguments only"):
        _core.PolicyStep(kind=_core.STEP_APPLY)
    with pytest.raises(ValueError, match="kind must be between 0 and 6, got 7"):
        _core.PolicyStep(7)
    with pytest.raises(TypeError, match="kind must be an int, not str"):
        _core.PolicyStep("0")
    with pytest.raises(TypeError, match="missing required argument 'kind'"):
        _core.PolicyStep()


# ---- the generic parser behaves as declared ------------------------------------------

BAD = {  # kind -> (a wrong type, a wrong value)
    "COUNT": ("5", 2.5),
    "INT": ("5", None),
    "REAL": ("1", math.nan),
    "DURATION": ("1", math.nan),
    "ENUM": (1, "no-such-choice"),
    "CALLABLE": (3, None),
    "STR": (3, None),
    "CONVERT": (3.5, None),
}
BAD_PARAM = {  # (type, param) -> its own (wrong type or None, wrong value): converted counts,
    # and a policy name whose every wrong value is the core's ValueError
    ("RedisBackend", "max_connections"): ("5", 2.5),
    ("RedisRateLimiter", "limit"): ("5", 2.5),
    ("RedisRateLimiter", "burst"): ("5", 2.5),
    ("RedisRateLimiter", "on_backend_error"): (None, 3.5),
}


BAD_PARAM.update({  # (type, param) -> (a wrong type, a wrong value), where the kind says too little
    ("RingQueue", "max_size"): ("5", 2.5),
    ("RingQueue", "maxsize"): ("5", 2.5),
    ("RingQueue", "strategy"): (3.5, "fifo"),
    ("RingQueue", "high_watermark"): ("0.5", 3.5),
    ("RingQueue", "low_watermark"): ("0.5", 3.5),
})


def _cases():
    for t in CONSTRUCTED.values():
        for p in t.params:
            if p.kind in BAD:
                yield t.name, p


@pytest.mark.parametrize("name, p", list(_cases()), ids=lambda x: getattr(x, "name", x))
def test_bad_arguments_name_the_parameter_and_value(name, p):
    cls = _runtime(name)
    wrong_type, wrong_value = BAD_PARAM.get((name, p.name), BAD[p.kind])
    if wrong_type is not None:
        with pytest.raises(TypeError, match=p.name) as ei:
            cls(**{**_required(name, p), p.name: wrong_type})
        assert repr(wrong_type) in str(ei.value)
    if wrong_value is not None:
        with pytest.raises(ValueError, match=p.name) as ei:
            cls(**{**_required(name, p), p.name: wrong_value})
        assert repr(wrong_value) in str(ei.value)


@pytest.mark.parametrize("name", sorted(CONSTRUCTED))
def test_calling_conventions(name):
    t = DECLARED[name]
    cls = _runtime(name)
    req = REQUIRED.get(name, {})
    with pytest.raises(TypeError, match=f"{name}\\(\\) got an unexpected keyword argument 'bogus'"):
        cls(**req, bogus=1)
    npos = sum(not p.kw for p in t.params)
    with pytest.raises(TypeError, match="positional"):
        cls(*([None] * (npos + 1)))
    if t.params:
        first = t.params[0]
        value = req.get(first.name, None)
        args = [value] + [req[p.name] for p in t.params[1:] if p.name in req and not p.kw]
        with pytest.raises(TypeError, match=f"multiple values for argument '{first.name}'"):
            cls(*args, **{first.name: value})
    for p in t.params:
        if p.default is None:
            missing = {k: v for k, v in req.items() if k != p.name}
            with pytest.raises(TypeError, match=f"missing required argument '{p.name}'"):
                cls(**missing)


def test_counts_take_integral_floats_and_none_keeps_defaults():
    cb = pr.CircuitBreaker(failure_threshold=3.0, window_size=10.0, half_open_max_calls=None,
                           failure_rate_threshold=None, slow_call_duration=None)
    assert (cb.failure_threshold, cb.window_size) == (3, 10)
    assert cb.half_open_max_calls == cb.success_threshold
    assert cb.failure_rate_threshold is None and cb.slow_call_duration is None
    assert _core.RetryPolicy(max_retry_after=None).max_retry_after == math.inf
    assert pr.CircuitBreaker(timeout_seconds=math.inf).timeout_seconds == math.inf
    assert pr.Decision(True, 5, 4, math.inf, 0.25).retry_after == math.inf
    assert pr.ManualClock(-2.5).now() == -2.5


# ---- validation lives in the core; the binding only words it --------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: pr.CircuitBreaker(failure_rate_threshold=50),
     "failure_rate_threshold must be in (0, 1] (a fraction, not a percentage), got 50"),
    (lambda: pr.CircuitBreaker(window_size=10 ** 9),
     "window_size must be <= 16777216 (outcomes) for a count window, got 1000000000"),
    (lambda: pr.CircuitBreaker(window_type="time", window_size=86401),
     "window_size must be <= 86400 (seconds) for a time window, got 86401"),
    (lambda: pr.CircuitBreaker(slow_call_rate_threshold=0.5),
     "slow_call_duration must be set (the duration from which a call is slow) when "
     "slow_call_rate_threshold is (slow_call_rate_threshold=0.5)"),
    (lambda: _core.RetryPolicy(max_delay=0.5),
     "max_delay must be >= base_delay, got 0.5 (base_delay=1.0)"),
    (lambda: _core.RetryPolicy(base_delay=3, max_delay=2),
     "max_delay must be >= base_delay, got 2 (base_delay=3)"),
    (lambda: pr.RetryBudget(ratio=1e7), "ratio must be <= 1e6, got 10000000.0"),
    (lambda: pr.RetryBudget(window=5000), "window must be between 0.001 and 3600 seconds, got 5000"),
])
def test_core_validation_is_worded_with_the_value_given(make, message):
    with pytest.raises(ValueError) as ei:
        make()
    assert str(ei.value) == message


# ---- cores are built in tp_new ----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONSTRUCTED))
def test_built_in_tp_new_without_init(name):
    cls = _runtime(name)
    assert "__init__" not in vars(cls)  # no tp_init: nothing to re-run
    obj = cls.__new__(cls, **REQUIRED.get(name, {}))
    repr(obj)  # complete at once: no "not initialised" state exists
    for prop in DECLARED[name].props:
        getattr(obj, prop.name)


def test_declared_properties_and_members():
    breaker = pr.CircuitBreaker(name="db", fallback=print)
    wrapped = breaker._wrap(len)
    assert wrapped.breaker is breaker and wrapped("ab") == 2
    with pytest.raises(TypeError):
        type(wrapped)()
    for name in ("breaker",):
        with pytest.raises(AttributeError):
            setattr(wrapped, name, None)
    assert (breaker.name, breaker.fallback, breaker.is_failure) == ("db", print, None)
    for name in ("name", "fallback", "record_exceptions", "listeners", "clock"):
        with pytest.raises(AttributeError):
            setattr(breaker, name, None)
    for name, t in DECLARED.items():
        for prop in t.props if hasattr(_core, name) else ():
            if prop.type is not None:
                assert getattr(_runtime(name), prop.name).__doc__ == prop.doc


def test_init_never_reinitialises():
    clock = pr.ManualClock(5.0)
    clock.__init__(99.0)
    assert clock.now() == 5.0
    budget = pr.RetryBudget(ratio=0.5)
    budget.__init__(ratio=0.25)
    assert budget.ratio == 0.5


def test_bulkhead_and_queue_types_are_declared():
    """Bulkhead, RingQueue and their waiter types come from tools/decl_bulkhead.py:
    the constructors' text signatures are the declared ones."""
    assert {"Bulkhead", "RingQueue", "_AsyncWaiter", "_Ready"} <= set(DECLARED)
    assert str(inspect.signature(_core.Bulkhead)) == "(name, max_concurrent, max_wait_seconds=30.0, *, shared=None)"
    assert str(inspect.signature(_core.RingQueue)).startswith("(max_size=0, strategy='block', ")


# ---- the limiters: one declaration per row of the algorithm table ----------------------

def _table_rows():
    import re
    text = (ROOT / "include" / "pyresilience" / "prs_algo.h").read_text()
    body = text[text.index("#define PRS_ALGORITHMS(X)"):]
    return re.findall(r'X\((\w+),\s*(\w+),\s*"[^"]*"\)', body[:body.index("\n\n")])


def test_limiter_declarations_follow_the_algorithm_table():
    """PRS_ALGORITHMS is the one list of algorithms: decl_limiters reads it, its
    parameter table has exactly its rows, and each row is a declared, built type."""
    limiters = sys.modules["decl_limiters"]
    rows = _table_rows()
    assert len(rows) >= 6
    assert limiters.ALGORITHMS == rows
    assert sorted(limiters.ALGO_PARAMS) == sorted(c for c, _ in rows)
    for _, py in rows:
        t = DECLARED[py]
        assert t.base == "_Limiter" and t.cfile == "limiters"
        assert issubclass(_runtime(py), _core._Limiter)
    assert "prs_py_algo_param" not in (ROOT / "csrc" / "python" / "prs_py.h").read_text()
    assert not (ROOT / "csrc" / "python" / "limiters_family.c").exists()


@pytest.mark.parametrize("py", [py for _, py in _table_rows()])
def test_reconfigure_shares_the_constructor_description(py):
    t = DECLARED[py]
    ctor = [p for p in t.params if p.kind not in ("CLOCK", "OBJECT", "STR")]  # not shared=, name=
    rec = next(m for m in t.methods if m.name == "reconfigure").params
    assert [(p.name, p.kind, p.field, p.lo, p.hi) for p in rec] == \
        [(p.name, p.kind, p.field, p.lo, p.hi) for p in ctor]
    sig = inspect.signature(getattr(_runtime(py), "reconfigure"))
    params = [q for q in sig.parameters.values() if q.name != "self"]
    assert [q.name for q in params] == [p.name for p in ctor]
    assert all(q.kind is q.KEYWORD_ONLY and q.default is None for q in params)
    props = {p.name for p in t.props}
    assert {p.name for p in ctor} <= props


def test_an_alias_is_named_as_given_everywhere():
    tb = pr.TokenBucket(capacity=4, rate=2)
    assert tb.rate == tb.refill_rate == 2.0
    with pytest.raises(TypeError, match=r"got both refill_rate and rate \(rate is an alias\)"):
        tb.reconfigure(refill_rate=1, rate=1)
    with pytest.raises(ValueError, match=r"^rate .*got -1$"):
        tb.reconfigure(rate=-1)
    k = _core.KeyedLimiter(tb)
    with pytest.raises(TypeError, match="got both"):
        k.reconfigure(refill_rate=1, rate=1)
    k.reconfigure(rate=None, capacity=8)  # None keeps the value
    assert k.check("a").limit == 8
    with pytest.raises(TypeError, match="missing required argument 'refill_rate'"):
        pr.TokenBucket(4, refill_rate=None, rate=None)


def test_missing_arguments_are_reported_before_conversion():
    """As CPython's own parsers do: a missing argument is named before any
    given one is converted (an alias pair counts as one argument)."""
    with pytest.raises(TypeError, match=r"^Decision\(\) missing required argument 'remaining'$"):
        pr.Decision(True, "x")
    with pytest.raises(TypeError, match=r"^TokenBucket\(\) missing required argument 'refill_rate'$"):
        pr.TokenBucket(capacity="x")


def test_a_choice_lists_its_choices():
    """An ENUM's choices, listed for its messages by the generator."""
    with pytest.raises(ValueError, match=r"^window_type must be 'count' or 'time', got 'x'$"):
        _core.CircuitBreaker(window_type="x")
    with pytest.raises(TypeError, match=r"^window_type must be 'count' or 'time', not int: 1$"):
        _core.CircuitBreaker(window_type=1)
    with pytest.raises(ValueError, match=r"^strategy must be 'block', 'drop_oldest', 'drop_newest' "
                                         r"or 'error', got 'x'$"):
        _core.RingQueue(4, strategy="x")


def test_messages_and_docs_list_the_algorithm_table():
    """The lists of limiter types in messages and docs come from the table."""
    names = ", ".join(py for _, py in _table_rows())
    for make in (lambda: _core.KeyedLimiter(3), lambda: _core.LimiterGroup(3),
                 lambda: pr.KeyedLimiter(int, 1)):
        with pytest.raises(TypeError) as ei:
            make()
        assert f"({names})" in str(ei.value)
    assert " ".join(names.split()) in " ".join(_core.LimiterGroup.__doc__.split())


# ---- generated life cycle, getters, reprs and the one (key, n, timeout) parser ----

LIFE_TYPES = ["CircuitBreaker", "BreakerFunction", "Decision", "Bulkhead", "KeyedLimiter",
              "KeyedLimiterView", "LimiterGroup", "_Limiter", "_RateWait", "RetryBudget",
              "PolicyStep"]


@pytest.mark.parametrize("name", LIFE_TYPES)
def test_life_cycle_is_generated_from_the_declared_fields(name):
    t = DECLARED[name]
    assert t.refs is not None
    header = (ROOT / "csrc" / "python" / "gen" / f"{t.cfile}.h").read_text()
    for slot in ("traverse", "clear", "dealloc"):
        assert f"static {'void' if slot == 'dealloc' else 'int'} {t.prefix}_{slot}(PyObject *self" \
            in header
    source = (ROOT / "csrc" / "python" / f"{t.cfile}.c").read_text()
    assert f"{t.prefix}_traverse(PyObject" not in source  # not written by hand any more


def test_cycles_through_declared_references_are_collected():
    import gc
    import weakref
    clock = pr.ManualClock()
    breaker = pr.CircuitBreaker(fallback=lambda: breaker, clock=clock)
    budget = pr.RetryBudget(clock=clock)
    bucket = pr.TokenBucket(capacity=2, refill_rate=1.0, clock=clock)
    keyed = _core.KeyedLimiter(bucket, clock=clock)
    view = _core.KeyedLimiterView(keyed, "k")
    group = pr.LimiterGroup(bucket, view)
    refs = [weakref.ref(o) for o in (breaker, budget, bucket, keyed, view, group)]
    del breaker, budget, bucket, keyed, view, group
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


def test_clock_and_member_properties_read_what_was_given():
    clock = pr.ManualClock()
    bucket = pr.TokenBucket(capacity=2, refill_rate=1.0, clock=clock)
    keyed = _core.KeyedLimiter(bucket, clock=clock)
    view = _core.KeyedLimiterView(keyed, "k")
    group = pr.LimiterGroup(bucket, view)
    for o in (bucket, keyed, group, pr.CircuitBreaker(clock=clock), pr.RetryBudget(clock=clock)):
        assert o.clock is clock
    assert keyed.limiter is bucket and view.key == "k" and view.limiter is keyed
    assert group.limiters == (bucket, view)
    assert isinstance(pr.TokenBucket(capacity=1, refill_rate=1.0).clock, _core.MonotonicClock)


def test_reprs_from_declared_attributes():
    assert repr(_core.RetryPolicy(seed=3)) == (
        "RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=60.0, exponential_base=2.0, "
        "jitter='proportional', seed=3, max_retry_after=300.0)")
    assert repr(pr.RetryBudget()) == (
        "RetryBudget(ratio=0.1, min_retries_per_second=10.0, window=10.0)")


def test_key_n_timeout_parser_is_one_for_every_limiter():
    clock = pr.ManualClock()
    keyed = _core.KeyedLimiter(pr.TokenBucket(capacity=2, refill_rate=1.0), clock=clock)
    bucket = pr.TokenBucket(capacity=2, refill_rate=1.0, clock=clock)
    # tokens_needed=None is the documented default everywhere (allow as acquire)
    assert keyed.allow("k", tokens_needed=None) is True
    assert bucket.allow(tokens_needed=None) is True
    assert keyed.check("k", n=2**70).allowed is False  # n beyond int64 saturates
    with pytest.raises(TypeError, match=r"allow\(\) missing required argument 'key'"):
        keyed.allow(n=1)
    with pytest.raises(TypeError, match=r"got both n and tokens_needed"):
        keyed.acquire("k", n=1, tokens_needed=1)
    with pytest.raises(ValueError, match=r"timeout"):
        keyed.acquire("k", 1, -1.0)
    with pytest.raises(TypeError, match=r"takes at most 3 positional arguments"):
        keyed.acquire("k", 1, None, 1)


def test_required_method_arguments_are_named_by_the_one_unpacker():
    with pytest.raises(TypeError, match=r"_record\(\) missing required argument 'token'"):
        _core.CircuitBreaker()._record(exc=None)
    with pytest.raises(TypeError, match=r"put\(\) missing required argument 'item'"):
        _core.RingQueue(maxsize=1).put(block=False)
    policy = _core.RetryPolicy()
    with pytest.raises(TypeError, match=r"delay\(\) missing required argument 'attempt'"):
        policy.delay(previous=1.0)


def test_breaker_config_properties_read_the_declared_parameters():
    """Each configuration property of CircuitBreaker is its constructor
    parameter read back from the core's config (one declaration for both):
    None for an unset optional, the enum's str, inf for a breaker that stays
    open, and half_open_max_calls defaulting to success_threshold."""
    cb = _core.CircuitBreaker(success_threshold=3)
    assert (cb.failure_rate_threshold, cb.slow_call_rate_threshold, cb.slow_call_duration) == (
        None, None, None)
    assert (cb.half_open_max_calls, cb.window_type, cb.timeout_seconds, cb.mode) == (
        3, "count", 30.0, "normal")
    cb = _core.CircuitBreaker(failure_rate_threshold=0.5, slow_call_rate_threshold=0.25,
                              slow_call_duration=2, window_type="time", window_size=7,
                              minimum_calls=4, half_open_max_calls=2, timeout_seconds=math.inf)
    assert (cb.failure_rate_threshold, cb.slow_call_rate_threshold, cb.slow_call_duration,
            cb.window_type, cb.window_size, cb.minimum_calls, cb.half_open_max_calls,
            cb.timeout_seconds) == (0.5, 0.25, 2.0, "time", 7, 4, 2, math.inf)
    cb.force_open()
    assert cb.mode == "forced_open"
    cb.disable()
    assert cb.mode == "disabled"


def test_breaker_metrics_struct_comes_from_its_declaration():
    metrics = sys.modules["decl_breaker"].METRICS
    m = _core.CircuitBreaker().metrics
    assert type(m).__name__ == "CircuitBreakerMetrics"
    assert type(m).__module__ == "pyresilience.breaker"
    assert list(type(m).__match_args__) == [f.name for f in metrics.fields]
    assert repr(m).startswith("CircuitBreakerMetrics(state=<CircuitState.CLOSED")
    assert repr(m).endswith("half_open_in_flight=0, mode='normal')")


def test_rate_methods_parse_n_as_declared_everywhere():
    """allow/check/peek/acquire/_waiter of every limiter-like type go through
    one declared parser: n is an int (None refused, unlike its alias
    tokens_needed), integral floats accepted, beyond int64 saturating."""
    clock = pr.ManualClock()
    keyed = _core.KeyedLimiter(_core.TokenBucket(4, 1, clock=clock), clock=clock)
    bucket = _core.TokenBucket(4, 1, clock=clock)
    objects = [(bucket, ()), (keyed, ("k",)), (_core.KeyedLimiterView(keyed, "v"), ()),
               (_core.LimiterGroup(_core.TokenBucket(4, 1, clock=clock)), ())]
    for obj, key in objects:
        for name in ("allow", "check", "peek", "acquire"):
            with pytest.raises(TypeError, match=r"n must be an int, not NoneType"):
                getattr(obj, name)(*key, None)
            with pytest.raises(ValueError, match=r"n must be >= 1, got 0\.0"):
                getattr(obj, name)(*key, n=0.0)
        assert obj.allow(*key, tokens_needed=None) is True
        assert obj.check(*key, 2.0).allowed is True
        assert obj.peek(*key, n=2**70).allowed is False


GENERATED_NEW = ["Bulkhead", "PolicyStep", "KeyedLimiter", "KeyedLimiterView", "CircuitBreaker",
                 "SharedMemory"]


@pytest.mark.parametrize("name", GENERATED_NEW)
def test_tp_new_is_generated_from_the_declaration(name):
    t = DECLARED[name]
    assert t.build is not None
    header = (ROOT / "csrc" / "python" / "gen" / f"{t.cfile}.h").read_text()
    assert f"static PyObject *{t.prefix}_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {{" \
        in header
    source = (ROOT / "csrc" / "python" / f"{t.cfile}.c").read_text()
    assert f"{t.prefix}_new(PyTypeObject" not in source  # not written by hand any more


def test_generated_tp_new_checks_declared_argument_objects():
    """P(instance=...) and P(nonempty=True): the checks a generated tp_new makes,
    worded as the hand-written ones were."""
    with pytest.raises(ValueError, match=r"^name must be a non-empty str, got ''$"):
        _core.Bulkhead("", 1)
    with pytest.raises(TypeError, match=r"^limiter must be a KeyedLimiter, not pyresilience._core.TokenBucket: "):
        _core.KeyedLimiterView(_core.TokenBucket(1, 1), "k")
