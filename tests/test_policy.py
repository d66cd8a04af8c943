"""Policy: composition order, Timeout, Fallback, Limit, recommended, order warnings.

Time: limiters, breakers and retries run on a ManualClock where a test needs
time to pass; the few real deadlines are short and only ever asserted by what
happened (an exception, a count), never by how long it took.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
import warnings
from functools import partial
from typing import Any, List

import pytest

import pyresilience as pr
from pyresilience import _core


class no_warnings:
    """A block in which a PolicyWarning is an error."""

    def __enter__(self) -> None:
        self.ctx = warnings.catch_warnings()
        self.ctx.__enter__()
        warnings.simplefilter("error", pr.PolicyWarning)

    def __exit__(self, *exc: Any) -> None:
        self.ctx.__exit__(*exc)


def test_exports_and_errors() -> None:
    assert issubclass(pr.TimeoutExceeded, TimeoutError)
    assert issubclass(pr.TimeoutExceeded, pr.ResilienceError)
    assert pr.TimeoutExceeded("x", timeout=2.0).timeout == 2.0
    assert issubclass(pr.PolicyWarning, UserWarning)
    for name in ("Policy", "Timeout", "Fallback", "Limit", "deadline_remaining", "TimeoutExceeded",
                 "PolicyWarning"):
        assert name in pr.__all__


# ---- order ------------------------------------------------------------------------


def test_strategies_run_outermost_first() -> None:
    clock = pr.ManualClock()
    seen: List[str] = []
    breaker = pr.CircuitBreaker(failure_threshold=2, clock=clock)
    retry = pr.Retry(max_attempts=3, base_delay=1.0, jitter=False, clock=clock)
    p = pr.Policy(retry, breaker)
    calls = [0]

    def flaky() -> str:
        calls[0] += 1
        seen.append(breaker.state.value)
        raise ValueError("down")

    with pytest.raises(pr.CircuitOpenError):
        p.call(flaky)
    # the retry is outside: the breaker saw each attempt, opened after 2, and
    # the third attempt was rejected by it (never reached flaky)
    assert calls[0] == 2
    assert breaker.state == "open"
    assert p.strategies == (retry, breaker)


def test_strategies_property_and_normalisation() -> None:
    cfg = pr.RetryConfig(max_attempts=2)
    tb = pr.TokenBucket(5, 1)
    inner = pr.Policy(pr.Timeout(1))
    p = pr.Policy(cfg, tb, inner)
    assert isinstance(p.strategies[0], pr.Retry) and p.strategies[0].config is cfg
    assert isinstance(p.strategies[1], pr.Limit) and p.strategies[1].limiter is tb
    assert isinstance(p.strategies[2], pr.Timeout)
    with pytest.raises(TypeError, match="strategies"):
        pr.Policy(object())
    with pytest.raises(TypeError, match="needs a key"):
        pr.Policy(pr.KeyedLimiter(pr.TokenBucket, 1, 1))
    assert "Timeout(1.0)" in repr(p)


def test_empty_policy_calls_through() -> None:
    p = pr.Policy()
    assert p.call(lambda a, b=0: a + b, 1, b=2) == 3
    assert asyncio.run(p.call_async(_async_value, 4)) == 4


async def _async_value(x: Any) -> Any:
    await asyncio.sleep(0)
    return x


def test_decorator_keeps_signature_sync_and_async() -> None:
    p = pr.Policy(pr.Retry(max_attempts=2, base_delay=0.0, jitter=False))

    @p
    def add(a: int, b: int = 1) -> int:
        return a + b

    @p
    async def aadd(a: int, b: int = 1) -> int:
        return a + b

    assert add(1) == 2
    assert asyncio.run(aadd(1, b=5)) == 6
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)
    assert list(inspect.signature(aadd).parameters) == ["a", "b"]
    assert inspect.iscoroutinefunction(aadd)
    with pytest.raises(TypeError, match="generator"):
        @p
        def gen() -> Any:
            yield 1


# ---- Fallback -----------------------------------------------------------------------


def test_fallback_value_factory_and_on() -> None:
    def boom() -> None:
        raise KeyError("k")

    assert pr.Policy(pr.Fallback(7)).call(boom) == 7
    got: List[BaseException] = []
    assert pr.Policy(pr.Fallback(factory=lambda e: got.append(e) or "f")).call(boom) == "f"
    assert isinstance(got[0], KeyError)
    with pytest.raises(KeyError):
        pr.Policy(pr.Fallback(1, on=ValueError)).call(boom)
    with pytest.raises(TypeError, match="factory"):
        pr.Fallback(factory=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on"):
        pr.Fallback(on=(int,))  # type: ignore[arg-type]


def test_fallback_catches_rejections() -> None:
    clock = pr.ManualClock()
    breaker = pr.CircuitBreaker(failure_threshold=1, clock=clock)
    breaker.force_open() if hasattr(breaker, "force_open") else breaker.record_failure()
    assert pr.Policy(pr.Fallback("open"), breaker).call(lambda: 1) == "open"
    tb = pr.TokenBucket(1, 1, clock=clock)
    tb.allow()
    assert pr.Policy(pr.Fallback("limited"), tb).call(lambda: 1) == "limited"
    bh = pr.Bulkhead("fb", 1, max_wait_seconds=0)
    bh.acquire()
    try:
        assert pr.Policy(pr.Fallback("full"), bh).call(lambda: 1) == "full"
    finally:
        bh.release()
    assert pr.Policy(pr.Fallback("late"), pr.Timeout(0.001)).call(time.sleep, 0.01) == "late"


def test_fallback_async_awaits_factory_and_never_replaces_cancellation() -> None:
    async def factory(exc: BaseException) -> str:
        return f"fb:{type(exc).__name__}"

    async def boom() -> None:
        raise ValueError

    p = pr.Policy(pr.Fallback(factory=factory))
    assert asyncio.run(p.call_async(boom)) == "fb:ValueError"

    async def main() -> None:
        t = asyncio.ensure_future(p.call_async(asyncio.sleep, 10))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
    asyncio.run(main())


# ---- Timeout ------------------------------------------------------------------------


def test_timeout_validation() -> None:
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError, match="seconds"):
            pr.Timeout(bad)
    with pytest.raises(TypeError, match="seconds"):
        pr.Timeout("1")  # type: ignore[arg-type]
    assert pr.Policy(pr.Timeout(math.inf)).call(pr.deadline_remaining) is None


def test_deadline_remaining_inside_and_nested() -> None:
    assert pr.deadline_remaining() is None
    left = pr.Policy(pr.Timeout(100)).call(pr.deadline_remaining)
    assert 0 < left <= 100
    # an inner, longer Timeout keeps the sooner outer deadline
    left = pr.Policy(pr.Timeout(5), pr.Timeout(100)).call(pr.deadline_remaining)
    assert 0 < left <= 5
    left = pr.Policy(pr.Timeout(100), pr.Timeout(5)).call(pr.deadline_remaining)
    assert 0 < left <= 5
    assert pr.deadline_remaining() is None  # reset after the call


def test_sync_timeout_late_return_is_a_failure_for_an_outer_breaker() -> None:
    breaker = pr.CircuitBreaker(failure_threshold=1)
    p = pr.Policy(breaker, pr.Timeout(0.001))
    with pytest.raises(pr.TimeoutExceeded) as info:
        p.call(time.sleep, 0.01)
    assert info.value.timeout == 0.001
    assert breaker.state == "open"


def test_sync_timeout_message_is_the_other_forms() -> None:
    """The sync Timeout's TimeoutExceeded is made by the Timeout itself: one
    wording for the sync, thread and async forms (not "60.0 s")."""
    import contextvars

    def past_deadline() -> Any:
        _core.DEADLINE.set(0)  # an outer deadline long passed: the call is not started
        return pr.Policy(pr.Timeout(60)).call(lambda: None)

    with pytest.raises(pr.TimeoutExceeded, match=r"^timeout of 60 s exceeded$") as info:
        contextvars.copy_context().run(past_deadline)
    assert info.value.timeout == 60.0
    assert str(pr.Timeout(60)._exceeded()) == str(info.value)


def test_sync_timeout_past_outer_deadline_does_not_start() -> None:
    calls = [0]

    def inner() -> None:
        calls[0] += 1

    def outer() -> None:
        time.sleep(0.01)
        pr.Policy(pr.Timeout(10)).call(inner)

    with pytest.raises(pr.TimeoutExceeded):
        pr.Policy(pr.Timeout(0.001)).call(outer)
    assert calls[0] == 0


def test_thread_timeout_abandons_and_keeps_the_slot_until_the_end() -> None:
    bh = pr.Bulkhead("tt", 1, max_wait_seconds=0)
    t = pr.Timeout(0.01, thread=True)
    p = pr.Policy(t, bh)
    release = threading.Event()
    seen: List[Any] = []

    def slow() -> str:
        seen.append(pr.deadline_remaining())
        release.wait(10)
        return "done"

    with pytest.raises(pr.TimeoutExceeded):
        p.call(slow)
    assert t.abandoned == 1 and t.abandoned_running == 1
    assert bh.active_count == 1  # the abandoned call still holds its slot
    assert seen[0] is not None  # the deadline followed the call into the thread
    release.set()
    deadline = time.monotonic() + 10
    while t.abandoned_running and time.monotonic() < deadline:
        time.sleep(0.001)
    assert t.abandoned_running == 0 and bh.active_count == 0
    assert p.call(lambda: 5) == 5  # an in-time call returns its result
    t.shutdown()


def test_async_timeout_cancels_the_inner_awaitable() -> None:
    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    breaker = pr.CircuitBreaker(failure_threshold=1)
    p = pr.Policy(breaker, pr.Timeout(0.01))
    with pytest.raises(pr.TimeoutExceeded) as info:
        asyncio.run(p.call_async(slow))
    assert isinstance(info.value.__cause__, TimeoutError)
    assert cancelled == [True]
    assert breaker.state == "open"  # the Timeout inside: the breaker saw a failure


def test_async_timeout_outside_breaker_records_nothing_and_warns() -> None:
    breaker = pr.CircuitBreaker(failure_threshold=1)
    with pytest.warns(pr.PolicyWarning, match="never sees the timeouts"):
        p = pr.Policy(pr.Timeout(0.01), breaker)
    with pytest.raises(pr.TimeoutExceeded):
        asyncio.run(p.call_async(asyncio.sleep, 10))
    assert breaker.state == "closed"


def test_async_inner_timeout_error_is_not_ours() -> None:
    async def raises() -> None:
        raise TimeoutError("the client's own")

    with pytest.raises(TimeoutError) as info:
        asyncio.run(pr.Policy(pr.Timeout(10)).call_async(raises))
    assert not isinstance(info.value, pr.TimeoutExceeded)


# ---- Limit --------------------------------------------------------------------------


def test_limit_rejects_at_once_with_retry_after_and_retry_waits_it() -> None:
    clock = pr.ManualClock()
    tb = pr.TokenBucket(1, 1, clock=clock)  # 1 token, 1 per second
    with pytest.raises(pr.RateLimitExceeded) as info:
        p = pr.Policy(tb)
        p.call(lambda: 1)
        p.call(lambda: 1)
    assert info.value.retry_after == pytest.approx(1.0)
    retry = pr.Retry(max_attempts=3, base_delay=0.001, jitter=False, clock=clock)
    t0 = clock()
    assert pr.Policy(retry, tb).call(lambda: "ok") == "ok"
    assert clock() - t0 == pytest.approx(1.0, abs=1e-3)  # slept the limiter's retry_after


def test_limit_wait_and_keys() -> None:
    clock = pr.ManualClock()
    tb = pr.TokenBucket(1, 1, clock=clock)
    p = pr.Policy(pr.Limit(tb, wait=5))
    p.call(lambda: 1)
    p.call(lambda: 1)  # waited (advanced the ManualClock)
    assert clock() == pytest.approx(1.0)
    keyed = pr.KeyedLimiter(pr.TokenBucket, 1, 0.001, clock=clock)
    pk = pr.Policy(pr.Limit(keyed, key=lambda user, **kw: user))
    pk.call(lambda user: user, "a")
    pk.call(lambda user: user, "b")
    with pytest.raises(pr.RateLimitExceeded):
        pk.call(lambda user: user, "a")
    pfixed = pr.Policy(pr.Limit(keyed, key="c"))
    pfixed.call(lambda: 1)
    with pytest.raises(pr.RateLimitExceeded):
        pfixed.call(lambda: 1)
    with pytest.raises(TypeError, match="key"):
        pr.Limit(keyed)
    with pytest.raises(TypeError, match="key"):
        pr.Limit(tb, key="x")
    with pytest.raises(ValueError, match="wait"):
        pr.Limit(tb, wait=-1)
    with pytest.raises(TypeError, match="limiter"):
        pr.Limit(object())


def test_limit_views_and_groups() -> None:
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=clock)
    group = pr.LimiterGroup(pr.TokenBucket(5, 1, clock=clock), keyed.for_key("g"))
    p = pr.Policy(group)
    assert p.call(lambda: 1) == 1
    with pytest.raises(pr.RateLimitExceeded):
        p.call(lambda: 1)
    assert asyncio.run(pr.Policy(keyed.for_key("v")).call_async(_async_value, 3)) == 3


# ---- recommended and warnings -------------------------------------------------------


def test_recommended_order() -> None:
    fb, rt = pr.Fallback(0), pr.Retry()
    br, tb = pr.CircuitBreaker(), pr.TokenBucket(10, 10)
    bh = pr.Bulkhead("r", 4)
    with no_warnings():
        p = pr.Policy.recommended(fallback=fb, timeout=10, retry=rt, breaker=br, limiter=tb,
                                  attempt_timeout=2, bulkhead=bh)
    s = p.strategies
    assert s[0] is fb and isinstance(s[1], pr.Timeout) and s[1].seconds == 10
    assert s[2] is rt and s[3] is br and isinstance(s[4], pr.Limit) and s[4].limiter is tb
    assert isinstance(s[5], pr.Timeout) and s[5].seconds == 2 and s[6] is bh
    assert pr.Policy.recommended(breaker=br).strategies == (br,)
    assert pr.Policy.recommended().strategies == ()
    t = pr.Timeout(3)
    assert pr.Policy.recommended(attempt_timeout=t).strategies == (t,)


def test_warnings_for_known_wrong_orders() -> None:
    br, bh, rt = pr.CircuitBreaker(), pr.Bulkhead("w", 2), pr.Retry()
    with pytest.warns(pr.PolicyWarning, match="Timeout inside"):
        pr.Policy(pr.Timeout(1), br)
    with pytest.warns(pr.PolicyWarning, match="Retry outside the Bulkhead"):
        pr.Policy(bh, rt)
    with pytest.warns(pr.PolicyWarning, match="Fallback first"):
        pr.Policy(rt, pr.Fallback(1))


def test_well_ordered_policies_warn_nothing() -> None:
    br, bh, rt = pr.CircuitBreaker(), pr.Bulkhead("ok", 2), pr.Retry()
    with no_warnings():
        pr.Policy(pr.Fallback(1), pr.Timeout(5), rt, br, pr.Timeout(1), bh)
        pr.Policy(rt, br, bh)
        pr.Policy(br, pr.Timeout(1))
        pr.Policy(pr.Timeout(1), rt, bh)
        pr.Policy()


# ---- the C chain --------------------------------------------------------------------


def test_decorated_methods_bind_and_keep_metadata() -> None:
    p = pr.Policy(pr.Fallback(-1), pr.Timeout(10), pr.Bulkhead("m", 2))

    class Service:
        def __init__(self) -> None:
            self.base = 40

        @p
        def get(self, x: int) -> int:
            """Doc."""
            return self.base + x

    s = Service()
    assert s.get(2) == 42
    assert Service.get.__name__ == "get" and Service.get.__doc__ == "Doc."
    assert Service.get.__wrapped__ is not None
    assert pr.Policy()(len) is len  # an empty policy applies nothing


def test_sync_timeout_inside_an_async_deadline_keeps_the_sooner() -> None:
    inner = pr.Policy(pr.Timeout(100))

    async def main() -> Any:
        return inner.call(pr.deadline_remaining)

    left = asyncio.run(pr.Policy(pr.Timeout(5)).call_async(main))
    assert left is not None and 0 < left <= 5


def test_call_needs_a_function() -> None:
    with pytest.raises(TypeError):
        pr.Policy().call()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        pr.Policy(pr.Timeout(1)).call()  # type: ignore[call-arg]


def test_policy_with_a_callback_cycle_is_collected() -> None:
    import gc
    import weakref

    class Holder:
        policy: Any = None

    h = Holder()
    h.policy = pr.Policy(pr.Fallback(factory=lambda e: h), pr.Timeout(1), pr.Bulkhead("gc", 1))
    deco = h.policy(lambda: 1)
    h.deco = deco  # type: ignore[attr-defined]
    ref = weakref.ref(h.policy)
    del h, deco
    gc.collect()
    assert ref() is None


def test_limit_refusal_through_allow_then_acquire_carries_retry_after() -> None:
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, 2, 1, clock=clock)
    p = pr.Policy(pr.Limit(keyed, key="u", n=2))
    assert p.call(lambda: 1) == 1
    with pytest.raises(pr.RateLimitExceeded) as info:
        p.call(lambda: 1)
    assert info.value.retry_after == pytest.approx(2.0)
    clock.advance(2)
    assert p.call(lambda: 3) == 3


def test_limit_of_n_on_an_in_process_limiter_is_decided_in_c_for_n() -> None:
    """Limit(limiter, n=k): the C step takes k per call (n handed by the facade)."""
    clock = pr.ManualClock()
    tb = pr.TokenBucket(capacity=5, refill_rate=1, clock=clock)
    p = pr.Policy(pr.Limit(tb, n=2))
    assert [p.call(lambda: i) for i in range(2)] == [0, 1]
    with pytest.raises(pr.RateLimitExceeded) as info:
        p.call(lambda: 1)
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(1)
    assert p.call(lambda: 3) == 3
    step = _core.PolicyStep(_core.STEP_LIMIT, lambda: 4, tb.allow, None, partial(tb.acquire, 1, 0), -1, None,
                            tb)  # ns < 1: n=1
    clock.advance(1)
    assert step() == 4
    with pytest.raises(pr.RateLimitExceeded):
        step()


def test_overridden_allow_acquire_release_run_in_a_policy() -> None:
    """The C step decides a limiter or bulkhead itself (the facade hands it
    over as `o`) only when its methods are its C type's own: a subclass's
    override runs."""
    calls: List[str] = []

    class Counted(pr.TokenBucket):
        def allow(self, *args: Any) -> bool:
            calls.append("allow")
            return bool(super().allow(*args))

    class Watched(pr.Bulkhead):
        def acquire(self, *args: Any) -> Any:
            calls.append("acquire")
            return super().acquire(*args)

        def release(self) -> None:
            calls.append("release")
            super().release()

    tb = Counted(capacity=5, refill_rate=1, clock=pr.ManualClock())
    assert pr.Policy(tb, Watched("w", 2)).call(lambda: 7) == 7
    assert calls == ["allow", "acquire", "release"]
    p = pr.Policy(pr.TokenBucket(capacity=1, refill_rate=1, clock=pr.ManualClock()), pr.Bulkhead("p", 1))
    assert p.call(lambda: 8) == 8
    with pytest.raises(pr.RateLimitExceeded):  # decided in C, refused by acquire(1, 0)
        p.call(lambda: 9)


def test_mypy_strict_passes_on_the_policy_example() -> None:
    from test_typing import HERE, run_mypy
    r = run_mypy(HERE / "example_policy.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_rejects_wrong_arguments_through_a_policy(tmp_path: Any) -> None:
    from test_typing import run_mypy
    src = tmp_path / "bad_policy.py"
    src.write_text(
        "import pyresilience as pr\n"
        "def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
        "p = pr.Policy(pr.Timeout(1))\n"
        "p.call(add, 1, 'x')\n"
        "s: str = p.call(add, 1, 2)\n"
        "d = p(add)\n"
        "d(1)\n")
    r = run_mypy(src)
    lines = {int(m.split(":")[1]) for m in r.stdout.splitlines() if ": error:" in m}
    assert lines == {5, 6, 8}, r.stdout


def test_retry_step_deposits_checks_results_and_uses_its_clock() -> None:
    # the Retry's C step: a budget deposit per call, retry_on_result, and its own
    # clock (a ManualClock advanced by the backoff, not the policy's reading)
    clock = pr.ManualClock()
    budget = pr.RetryBudget()
    retry = pr.Retry(max_attempts=3, base_delay=2, jitter=False, clock=clock, budget=budget,
                     retry_on_result=lambda r: r < 2)
    results = iter([0, 1, 2])
    p = pr.Policy(retry, pr.CircuitBreaker(), pr.TokenBucket(10, 1), pr.Bulkhead("rs", 2))
    assert p.call(lambda: next(results)) == 2
    assert budget.metrics.attempts == 1
    assert clock() == 2 + 4  # two backoff sleeps on the Retry's own clock
    assert p.call(lambda: 5) == 5
    assert budget.metrics.attempts == 2


def test_bulkhead_and_limiter_steps_count_as_their_own_methods() -> None:
    bh = pr.Bulkhead("cnt", 1, max_wait_seconds=0)
    tb = pr.TokenBucket(3, 1e-9)
    p = pr.Policy(tb, bh)
    assert p.call(lambda: 1) == 1
    m = bh.metrics
    assert (m.acquired_count, m.released_count, m.rejected_count, m.active_count) == (1, 1, 0, 0)

    def inner() -> int:
        with pytest.raises(pr.BulkheadFullError):
            p.call(lambda: 2)
        return 3
    assert p.call(inner) == 3
    m = bh.metrics
    assert (m.acquired_count, m.released_count, m.rejected_count, m.active_count) == (1 + 1, 2, 1, 0)
    with pytest.raises(pr.RateLimitExceeded) as info:  # the bucket's 3 tokens are spent
        p.call(lambda: 4)
    assert info.value.retry_after > 0
    assert bh.metrics.acquired_count == 2


def test_async_strategies_share_one_coroutine_frame_with_the_nested_outcomes() -> None:
    clock = pr.ManualClock()
    breaker = pr.CircuitBreaker(failure_threshold=2, success_threshold=1, timeout_seconds=60, clock=clock)
    bh = pr.Bulkhead("flat", 1, max_wait_seconds=0)
    tb = pr.TokenBucket(100, 1, clock=clock)
    retry = pr.Retry(max_attempts=3, base_delay=1, jitter=False, clock=clock,
                     retry_on_result=lambda r: r == "again")
    p = pr.Policy(retry, breaker, tb, bh)
    frames: List[str] = []

    async def probe() -> str:
        frames.append(asyncio.current_task().get_coro().cr_code.co_name)  # type: ignore[union-attr]
        return "ok"

    outcomes = iter([ConnectionError("a"), "again", "done"])

    async def flaky() -> str:
        assert bh.available == 0  # held inside
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        return o

    async def main() -> None:
        assert await asyncio.create_task(p.call_async(probe)) == "ok"
        assert frames == ["flat_layer"]  # the task's coroutine: one frame for the four
        assert await p.call_async(flaky) == "done"
        assert clock() == 1 + 2  # two backoffs
        m = breaker.metrics
        assert (m.failures, m.calls) == (1, 4)
        assert bh.available == 1 and bh.metrics.acquired_count == 4
        # the breaker opens: the Retry waits its refusal's retry_after out, the trial closes it
        breaker.open()
        before = clock()
        assert await p.call_async(probe) == "ok"
        assert clock() - before >= 60 and breaker.state == pr.CircuitState.CLOSED
        assert bh.metrics.acquired_count == 5
        # cancelled inside: the slot comes back, the breaker records no failure
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(3600)
        task = asyncio.ensure_future(p.call_async(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bh.available == 1 and breaker.metrics.failures == 1
    asyncio.run(main())


def test_async_call_async_is_the_shared_frame_itself_with_the_call_arguments() -> None:
    # call_async adds no frame: for an outermost shared frame it is that
    # frame's coroutine function, called (fn, /, *args, **kwargs)
    bh = pr.Bulkhead("entry", 1, max_wait_seconds=0)
    p = pr.Policy(pr.Retry(max_attempts=2, base_delay=0, jitter=False), pr.CircuitBreaker(),
                  pr.Timeout(60), bh)
    assert inspect.iscoroutinefunction(p.call_async)
    assert p.call_async.__code__.co_name == "flat_layer"

    async def echo(*args: Any, **kwargs: Any) -> Any:
        assert bh.available == 0
        return args, kwargs

    # a Fallback outermost (not shared): call_async hands the arguments to the chain
    q = pr.Policy(pr.Fallback("fb"), pr.CircuitBreaker(), bh)
    one = pr.Policy(bh)  # a single strategy, and an empty policy
    empty = pr.Policy()

    async def main() -> None:
        assert await p.call_async(echo, 1, "fn", fn=2, args=3) == ((1, "fn"), {"fn": 2, "args": 3})
        assert await q.call_async(echo, 3, fn=4) == ((3,), {"fn": 4})
        assert await one.call_async(echo, 5) == ((5,), {})

        async def bare(x: int, *, y: int) -> int:
            return x + y
        assert await empty.call_async(bare, 1, y=2) == 3
        assert bh.available == 1
    asyncio.run(main())


def test_async_timeout_in_the_shared_frame_is_recorded_by_an_outer_breaker() -> None:
    breaker = pr.CircuitBreaker(failure_threshold=5)
    bh = pr.Bulkhead("tframe", 1)
    p = pr.Policy(breaker, pr.Timeout(0.01), bh)
    started: List[int] = []

    async def slow() -> None:
        started.append(1)
        assert pr.deadline_remaining() is not None and _core.DEADLINE.get(None) is not None
        await asyncio.sleep(3600)

    async def main() -> None:
        with pytest.raises(pr.TimeoutExceeded) as info:
            await p.call_async(slow)
        assert isinstance(info.value.__cause__, TimeoutError)
        assert breaker.metrics.failures == 1 and bh.available == 1
        assert _core.DEADLINE.get(None) is None
        # an outer deadline already past: nothing inside starts
        token = _core.DEADLINE.set(time.monotonic_ns() - 1)
        try:
            with pytest.raises(pr.TimeoutExceeded):
                await p.call_async(slow)
        finally:
            _core.DEADLINE.reset(token)
        assert started == [1] and breaker.metrics.failures == 2
    asyncio.run(main())
    entered = _core._timeout_enter(10**9)  # (token, seconds left)
    assert entered is not None and 0 < entered[1] <= 1
    _core.DEADLINE.reset(entered[0])
    with pytest.raises(ValueError):
        _core._timeout_enter(-1)
