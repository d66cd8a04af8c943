"""CircuitBreaker: the reference usage, every API form (call, call_async,
decorators, context managers, low level, manual control), fallback,
classification, is_failure, rate mode with count and time windows, slow calls,
listeners, bad input, threads (exact half-open admission, exact counts),
garbage collection, typing."""
from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import subprocess
import sys
import threading
import time
import traceback
import warnings
import weakref
from pathlib import Path

import pytest

import pyresilience as pr
from pyresilience import CircuitBreaker, CircuitOpenError, CircuitState


class Boom(Exception):
    pass


def ok(x=1):
    return x


def boom():
    raise Boom("boom")


def fail_n(cb, n):
    for _ in range(n):
        with pytest.raises(Boom):
            cb.call(boom)


# ---- the reference design ------------------------------------------------------

def test_reference_usage_runs_unchanged():
    cb = CircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0, fallback=None)
    assert cb.call(ok, 7) == 7
    assert cb.call(lambda a, b: a + b, 2, 3) == 5
    assert cb.state is CircuitState.CLOSED


def test_signature_is_exact():
    params = inspect.signature(CircuitBreaker).parameters.values()
    plain = ", ".join(
        ("*, " if p.kind is p.KEYWORD_ONLY and p.name == "name" else "") + f"{p.name}={p.default!r}"
        for p in params)
    assert plain == (
        "failure_threshold=5, success_threshold=2, timeout_seconds=30.0, fallback=None, *, "
        "name=None, failure_rate_threshold=None, window_type='count', window_size=100, "
        "minimum_calls=10, slow_call_duration=None, slow_call_rate_threshold=None, "
        "half_open_max_calls=None, record_exceptions=(<class 'Exception'>,), "
        "ignore_exceptions=(), is_failure=None, on_state_change=None, clock=None, backend=None, "
        "flush_interval=0.5, shared=None")
    kinds = [p.kind for p in params]
    assert kinds[:4] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 4
    assert set(kinds[4:]) == {inspect.Parameter.KEYWORD_ONLY}
    cb = CircuitBreaker()
    for name in ("call", "call_async", "allow_request", "record_success", "record_failure",
                 "record_ignored", "open", "close", "half_open", "reset", "force_open",
                 "disable", "add_listener", "remove_listener"):
        meth = getattr(cb, name)
        assert meth.__doc__, name
        inspect.signature(meth)
    assert str(inspect.signature(cb.call)) == "(func, /, *args, **kwargs)"
    assert str(inspect.signature(cb.record_success)) == "(duration=0.0)"


def test_defaults():
    cb = CircuitBreaker()
    assert cb.failure_threshold == 5
    assert cb.success_threshold == 2
    assert cb.timeout_seconds == 30.0
    assert cb.half_open_max_calls == 2
    assert cb.fallback is None and cb.name is None and cb.is_failure is None
    assert cb.failure_rate_threshold is None and cb.slow_call_rate_threshold is None
    assert cb.slow_call_duration is None
    assert cb.window_type == "count" and cb.window_size == 100 and cb.minimum_calls == 10
    assert cb.record_exceptions == (Exception,) and cb.ignore_exceptions == ()
    assert cb.listeners == ()
    assert cb.mode == "normal"
    assert isinstance(cb.clock, pr.MonotonicClock)
    assert CircuitBreaker(timeout_seconds=math.inf).timeout_seconds == math.inf


def test_state_enum():
    assert CircuitState.CLOSED == "closed" and CircuitState("half_open") is CircuitState.HALF_OPEN
    assert str(CircuitState.OPEN) == "open"
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open"]


# ---- the state machine through call() ----------------------------------------------

def test_consecutive_open_half_open_close(clock):
    cb = CircuitBreaker(failure_threshold=3, success_threshold=2, timeout_seconds=10, name="db",
                        clock=clock)
    fail_n(cb, 2)
    assert cb.call(ok) == 1  # a success resets the count
    fail_n(cb, 2)
    assert cb.state is CircuitState.CLOSED
    fail_n(cb, 1)
    assert cb.state is CircuitState.OPEN
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as ei:
        cb.call(ok)
    assert ei.value.retry_after == pytest.approx(6.0)
    assert ei.value.name == "db"
    assert "'db'" in str(ei.value)
    assert isinstance(ei.value, pr.ResilienceError)
    assert isinstance(ei.value, pr.CircuitBreakerOpen)
    clock.advance(6)
    assert cb.state is CircuitState.OPEN  # until the next call
    assert cb.metrics.retry_after == 0.0
    assert cb.call(ok) == 1
    assert cb.state is CircuitState.HALF_OPEN
    with pytest.raises(Boom):
        cb.call(boom)  # a trial failure re-opens and restarts the timer
    assert cb.state is CircuitState.OPEN
    assert cb.metrics.retry_after == pytest.approx(10.0)
    clock.advance(10)
    cb.call(ok)
    cb.call(ok)
    assert cb.state is CircuitState.CLOSED
    m = cb.metrics
    assert (m.calls, m.failures, m.rejected) == (10, 6, 1)


def test_fallback_when_rejected(clock):
    calls = []
    cb = CircuitBreaker(1, 1, 5, lambda: calls.append(1) or "cached", clock=clock)
    fail_n(cb, 1)
    assert cb.call(ok) == "cached"
    assert cb.call(boom) == "cached"  # the function is not run
    assert calls == [1, 1]
    assert cb.metrics.rejected == 2
    clock.advance(5)
    assert cb.call(ok, 3) == 3


def test_fallback_exception_propagates(clock):
    def fb():
        raise KeyError("fb")
    cb = CircuitBreaker(1, 1, 5, fb, clock=clock)
    fail_n(cb, 1)
    with pytest.raises(KeyError):
        cb.call(ok)


def test_rejected_exception_is_fresh_and_traceback_does_not_grow(clock):
    cb = CircuitBreaker(1, clock=clock)
    fail_n(cb, 1)
    seen = set()
    depths = set()
    for _ in range(1000):
        try:
            cb.call(ok)
        except CircuitOpenError as e:
            seen.add(id(e))
            depths.add(len(traceback.extract_tb(e.__traceback__)))
            assert e.__context__ is None and e.__cause__ is None
            last = e
        assert sys.exc_info()[0] is None
    assert depths == {1}
    assert last.retry_after == 30.0
    del last
    assert len(seen) > 1  # not one stored object


def test_kwargs_and_positional_only_func():
    cb = CircuitBreaker()

    def f(*args, **kwargs):
        return args, kwargs
    assert cb.call(f, 1, 2, func=3, x=4) == ((1, 2), {"func": 3, "x": 4})
    with pytest.raises(TypeError, match="func"):
        cb.call()
    with pytest.raises(TypeError):
        cb.call(42)  # not callable: TypeError from the call, counted as a failure
    assert cb.metrics.failures == 1


# ---- classification -----------------------------------------------------------------

def test_record_and_ignore_exceptions(clock):
    cb = CircuitBreaker(2, clock=clock, record_exceptions=(Boom, OSError),
                        ignore_exceptions=ConnectionResetError)

    def raise_(e):
        raise e
    with pytest.raises(KeyError):
        cb.call(raise_, KeyError("not recorded: a success"))
    with pytest.raises(ConnectionResetError):
        cb.call(raise_, ConnectionResetError())  # an OSError, but ignored first
    m = cb.metrics
    assert (m.calls, m.failures, m.ignored) == (1, 0, 1)
    with pytest.raises(OSError):
        cb.call(raise_, OSError())
    assert cb.metrics.consecutive_failures == 1
    with pytest.raises(KeyError):
        cb.call(raise_, KeyError())  # a success resets the count
    assert cb.metrics.consecutive_failures == 0
    fail_n(cb, 2)
    assert cb.state is CircuitState.OPEN


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit,
                                 asyncio.CancelledError])
def test_base_exceptions_never_fail_and_free_the_slot(clock, exc):
    cb = CircuitBreaker(1, 1, 1, clock=clock, half_open_max_calls=1,
                        record_exceptions=BaseException)
    for _ in range(3):
        with pytest.raises(exc):
            cb.call(_raiser(exc))
    assert cb.state is CircuitState.CLOSED
    assert cb.metrics.failures == 0 and cb.metrics.ignored == 3
    fail_n(cb, 1)
    clock.advance(1)
    with pytest.raises(exc):
        cb.call(_raiser(exc))  # the only trial slot, interrupted
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.metrics.half_open_in_flight == 0
    assert cb.call(ok) == 1  # the slot was freed
    assert cb.state is CircuitState.CLOSED


def _raiser(exc):
    def f():
        raise exc()
    return f


def test_is_failure(clock):
    cb = CircuitBreaker(2, clock=clock, is_failure=lambda r: getattr(r, "status", 200) >= 500)

    class Resp:
        def __init__(self, status):
            self.status = status
    assert cb.call(Resp, 503).status == 503  # returned, but counted as a failure
    assert cb.metrics.consecutive_failures == 1
    cb.call(Resp, 200)
    assert cb.metrics.consecutive_failures == 0
    cb.call(Resp, 500)
    cb.call(Resp, 502)
    assert cb.state is CircuitState.OPEN
    assert cb.metrics.failures == 3


def test_is_failure_raising_propagates_and_frees_the_slot(clock):
    def pred(r):
        raise ValueError("bad predicate")
    cb = CircuitBreaker(1, 1, 1, clock=clock, is_failure=pred, half_open_max_calls=1)
    with pytest.raises(ValueError, match="bad predicate"):
        cb.call(ok)
    assert cb.metrics.ignored == 1
    cb.open()
    clock.advance(1)
    with pytest.raises(ValueError):
        cb.call(ok)
    assert cb.metrics.half_open_in_flight == 0


# ---- rate mode -------------------------------------------------------------------------

def test_failure_rate_count_window(clock):
    cb = CircuitBreaker(failure_rate_threshold=0.5, window_size=10, minimum_calls=4, clock=clock)
    for _ in range(8):
        cb.call(ok)
    fail_n(cb, 2)
    m = cb.metrics
    assert (m.window_calls, m.window_failures) == (10, 2)
    assert m.failure_rate == pytest.approx(0.2)
    fail_n(cb, 2)  # evicting successes: 4/10
    assert cb.state is CircuitState.CLOSED
    fail_n(cb, 1)  # 5/10
    assert cb.state is CircuitState.OPEN
    assert "failure_rate_threshold=0.5" in repr(cb)


def test_minimum_calls(clock):
    cb = CircuitBreaker(failure_rate_threshold=0.5, window_size=100, minimum_calls=5, clock=clock)
    fail_n(cb, 4)
    assert cb.state is CircuitState.CLOSED
    fail_n(cb, 1)
    assert cb.state is CircuitState.OPEN


def test_failure_rate_time_window(clock):
    cb = CircuitBreaker(failure_rate_threshold=0.5, window_type="time", window_size=10,
                        minimum_calls=4, clock=clock)
    fail_n(cb, 3)
    clock.advance(10)  # those seconds roll out
    assert cb.metrics.window_calls == 0
    for _ in range(3):
        cb.call(ok)
    fail_n(cb, 2)
    assert cb.state is CircuitState.CLOSED  # 2/5
    clock.advance(5)
    fail_n(cb, 1)  # 3/6
    assert cb.state is CircuitState.OPEN


def test_slow_calls(clock):
    def slow(seconds=2.0):
        clock.advance(seconds)
        return "done"
    cb = CircuitBreaker(slow_call_duration=1.0, slow_call_rate_threshold=0.5, window_size=4,
                        minimum_calls=4, timeout_seconds=10, clock=clock)
    assert cb.call(slow, 0.5) == "done"
    assert cb.call(slow) == "done"
    cb.call(slow, 0.0)
    assert cb.metrics.slow_calls == 1
    assert cb.state is CircuitState.CLOSED
    cb.call(slow, 1.0)  # exactly the duration: slow; 2/4
    assert cb.state is CircuitState.OPEN
    assert cb.metrics.slow_call_rate == 0.5
    clock.advance(10)
    cb.call(slow)  # a slow trial re-opens
    assert cb.state is CircuitState.OPEN
    clock.advance(10)
    cb.call(slow, 0.1)
    cb.call(slow, 0.1)
    assert cb.state is CircuitState.CLOSED


def test_slow_calls_counted_without_threshold(clock):
    cb = CircuitBreaker(slow_call_duration=0.5, clock=clock)

    def slow():
        clock.advance(1)
    for _ in range(20):
        cb.call(slow)
    assert cb.metrics.slow_calls == 20
    assert cb.state is CircuitState.CLOSED
    cb.record_success(duration=3)
    cb.record_failure(0.1)
    assert cb.metrics.slow_calls == 21


def test_callable_clock():
    t = [100.0]
    cb = CircuitBreaker(1, 1, 5, clock=lambda: t[0])
    fail_n(cb, 1)
    t[0] = 103.0
    with pytest.raises(CircuitOpenError) as ei:
        cb.call(ok)
    assert ei.value.retry_after == pytest.approx(2.0)
    t[0] = 105.0
    assert cb.call(ok) == 1


def test_failing_clock_never_loses_a_slot():
    state = {"fail": False}

    def clk():
        if state["fail"]:
            raise RuntimeError("clock broke")
        return 0.0
    # a time window needs the time to record a success
    cb = CircuitBreaker(1, 1, 0, clock=clk, half_open_max_calls=1, window_type="time")
    fail_n(cb, 1)

    def breaks_clock():
        state["fail"] = True
        return 1
    with pytest.raises(RuntimeError, match="clock broke"):
        cb.call(breaks_clock)  # admitted (half-open), then the clock fails when recording
    state["fail"] = False
    assert cb.metrics.half_open_in_flight == 0
    assert cb.state is CircuitState.HALF_OPEN

    def breaks_clock_and_fails():
        state["fail"] = True
        raise Boom()
    hooked = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = hooked.append
    try:
        with pytest.raises(Boom):  # the call's own exception wins
            cb.call(breaks_clock_and_fails)
    finally:
        sys.unraisablehook = old_hook
    state["fail"] = False
    assert len(hooked) == 1 and isinstance(hooked[0].exc_value, RuntimeError)
    assert cb.metrics.half_open_in_flight == 0


# ---- low level -------------------------------------------------------------------------

@pytest.mark.parametrize("stray", ["record_success", "record_ignored", "record_failure"])
def test_stray_record_in_half_open_keeps_the_trial_slot(clock, stray):
    """An outcome recorded without a prior allow_request() holds no trial slot:
    it frees none (no second trial with half_open_max_calls=1), never drives
    half_open_in_flight below 0, and does not move the state; it still counts
    in the totals."""
    cb = CircuitBreaker(1, 2, 5, clock=clock, half_open_max_calls=1)
    fail_n(cb, 1)
    clock.advance(5)
    with cb:  # the one trial call
        assert cb.state is CircuitState.HALF_OPEN
        assert cb.metrics.half_open_in_flight == 1
        before = cb.metrics
        getattr(cb, stray)()
        m = cb.metrics
        assert m.state is CircuitState.HALF_OPEN  # a stray failure does not re-open either
        assert m.half_open_in_flight == 1
        assert m.calls + m.ignored == before.calls + before.ignored + 1
        assert cb.allow_request() is False  # no second trial
        with pytest.raises(CircuitOpenError):
            cb.call(ok)
    m = cb.metrics
    assert m.half_open_in_flight == 0
    assert m.consecutive_successes == 1  # only the trial's own success counted
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.call(ok) == 1  # the second trial closes it
    assert cb.state is CircuitState.CLOSED
    assert cb.metrics.half_open_in_flight == 0


def test_stray_records_never_let_two_trials_run(clock):
    """The reported sequence: a trial runs, a stray record_success() frees its
    slot, a second trial is admitted, and the first one's outcome drives the
    count to -1. Now the stray frees nothing."""
    cb = CircuitBreaker(1, 5, 1, clock=clock, half_open_max_calls=1)
    fail_n(cb, 1)
    clock.advance(1)
    running = []
    for _ in range(3):
        with cb:
            running.append(cb.metrics.half_open_in_flight)
            cb.record_success()
            cb.record_ignored()
            assert cb.allow_request() is False
        assert cb.metrics.half_open_in_flight == 0
    assert running == [1, 1, 1]
    # allow_request() pairs are matched by count: each record frees its own slot
    assert cb.allow_request() is True
    assert cb.metrics.half_open_in_flight == 1
    cb.record_ignored()
    assert cb.metrics.half_open_in_flight == 0
    cb.record_ignored()  # a stray again: nothing to free
    assert cb.metrics.half_open_in_flight == 0
    assert cb.allow_request() is True
    assert cb.allow_request() is False


def test_stray_records_threads_half_open(clock):
    """Threads mixing with-block trials, allow_request() trials and stray
    records: the with-block trials (which carry permits) never run more than
    half_open_max_calls at once, and nothing stays in flight. (A stray may be
    taken as the outcome of an outstanding allow_request() trial: outcomes
    without a permit are matched by count.)"""
    cb = CircuitBreaker(1, 10**9, 1, clock=clock, half_open_max_calls=1)
    fail_n(cb, 1)
    clock.advance(1)
    cb.half_open()
    lock = threading.Lock()
    inside = [0]
    peak = [0]
    errors = []

    def worker(kind):
        try:
            for _ in range(2000):
                if kind == 0:
                    try:
                        with cb:
                            with lock:
                                inside[0] += 1
                                peak[0] = max(peak[0], inside[0])
                            with lock:
                                inside[0] -= 1
                    except CircuitOpenError:
                        pass
                elif kind == 1:
                    if cb.allow_request():
                        cb.record_success()
                else:
                    cb.record_success()
                    cb.record_ignored()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i % 3,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert peak[0] == 1
    m = cb.metrics
    assert m.state is CircuitState.HALF_OPEN and m.half_open_in_flight == 0


def test_low_level(clock):
    cb = CircuitBreaker(2, 1, 5, clock=clock, half_open_max_calls=1)
    assert cb.allow_request() is True
    cb.record_failure()
    cb.record_failure(duration=0.5)
    assert cb.state is CircuitState.OPEN
    assert cb.allow_request() is False
    clock.advance(5)
    assert cb.allow_request() is True  # takes the trial slot
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.allow_request() is False
    cb.record_ignored()  # frees it
    assert cb.allow_request() is True
    cb.record_success()
    assert cb.state is CircuitState.CLOSED
    assert cb.metrics.rejected == 2
    for bad in (-1, math.nan, "1", None):
        with pytest.raises((TypeError, ValueError)):
            cb.record_success(bad)


# ---- manual control -------------------------------------------------------------------

def test_manual_states(clock):
    seen = []
    cb = CircuitBreaker(2, 1, 10, clock=clock, on_state_change=lambda b, o, n: seen.append((o, n)))
    cb.open()
    assert cb.state is CircuitState.OPEN and cb.mode == "normal"
    clock.advance(10)
    cb.call(ok)  # the timeout runs as usual; one success closes
    assert cb.state is CircuitState.CLOSED
    cb.half_open()
    assert cb.state is CircuitState.HALF_OPEN
    cb.close()
    cb.force_open()
    assert cb.mode == "forced_open"
    clock.advance(1e6)
    with pytest.raises(CircuitOpenError) as ei:
        cb.call(ok)
    assert ei.value.retry_after == math.inf
    assert cb.metrics.retry_after == math.inf
    cb.disable()
    assert cb.state is CircuitState.CLOSED and cb.mode == "disabled"
    fail_n(cb, 10)  # always allowed, counted, never trips
    assert cb.state is CircuitState.CLOSED
    assert cb.metrics.consecutive_failures == 10
    assert cb.mode == "disabled"
    cb.reset()
    m = cb.metrics
    assert cb.mode == "normal"
    assert (m.calls, m.failures, m.rejected, m.consecutive_failures) == (0, 0, 0, 0)
    S = CircuitState
    assert seen == [(S.CLOSED, S.OPEN), (S.OPEN, S.HALF_OPEN), (S.HALF_OPEN, S.CLOSED),
                    (S.CLOSED, S.HALF_OPEN), (S.HALF_OPEN, S.CLOSED), (S.CLOSED, S.OPEN),
                    (S.OPEN, S.CLOSED)]


def test_metrics_snapshot(clock):
    cb = CircuitBreaker(3, clock=clock)
    cb.call(ok)
    fail_n(cb, 2)
    m = cb.metrics
    assert m.state is CircuitState.CLOSED
    assert (m.consecutive_failures, m.consecutive_successes) == (2, 0)
    assert (m.calls, m.failures, m.slow_calls, m.rejected) == (3, 2, 0, 0)
    assert m.failure_rate == pytest.approx(2 / 3)
    assert m.slow_call_rate == 0.0 and m.retry_after == 0.0
    assert isinstance(m, pr.CircuitBreakerMetrics)
    assert "consecutive_failures=2" in repr(m)


# ---- async, decorators, context managers ---------------------------------------------

def test_call_async_and_async_decorator(clock):
    cb = CircuitBreaker(2, 1, 5, clock=clock)

    @cb
    async def fetch(x):
        await asyncio.sleep(0)
        return x * 2

    @cb
    async def broken():
        await asyncio.sleep(0)
        raise Boom()

    async def main():
        assert await fetch(21) == 42
        assert await cb.call_async(fetch.__wrapped__, 1) == 2
        for _ in range(2):
            with pytest.raises(Boom):
                await broken()
        with pytest.raises(CircuitOpenError):
            await fetch(1)
        clock.advance(5)
        assert await fetch(2) == 4
    asyncio.run(main())
    assert cb.state is CircuitState.CLOSED
    assert inspect.iscoroutinefunction(fetch) and fetch.__name__ == "fetch"


def test_async_fallback_and_cancellation(clock):
    async def afb():
        return "async fallback"
    cb = CircuitBreaker(1, 1, 5, afb, clock=clock, half_open_max_calls=1)

    async def hang():
        await asyncio.sleep(3600)

    async def main():
        with pytest.raises(Boom):
            await cb.call_async(_aboom)
        assert await cb.call_async(hang) == "async fallback"
        clock.advance(5)
        task = asyncio.create_task(cb.call_async(hang))  # takes the only trial slot
        await asyncio.sleep(0)
        assert cb.metrics.half_open_in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cb.metrics.half_open_in_flight == 0  # cancellation freed it, no failure
        assert cb.state is CircuitState.HALF_OPEN
        assert await cb.call_async(_aok) == "ok"
    asyncio.run(main())
    assert cb.state is CircuitState.CLOSED
    # a sync fallback from call_async
    cb2 = CircuitBreaker(1, fallback=lambda: "sync", clock=clock)
    cb2.open()
    assert asyncio.run(cb2.call_async(_aok)) == "sync"


async def _aboom():
    raise Boom()


async def _aok():
    return "ok"


def test_sync_decorator(clock):
    cb = CircuitBreaker(1, clock=clock)

    @cb
    def add(a, b=1):
        """adds"""
        return a + b
    assert add(1, b=2) == 3
    assert add.__doc__ == "adds" and add.__name__ == "add" and add.__wrapped__ is not None
    assert add.__module__ == __name__ and add.breaker is cb
    assert str(inspect.signature(add)) == "(a, b=1)"
    assert "protected" in repr(add)
    with pytest.raises(TypeError):
        cb(42)

    class Client:
        def __init__(self):
            self.calls = 0

        @cb
        def get(self, key, *, default=None):
            self.calls += 1
            if key == "bad":
                raise Boom()
            return key or default

        @staticmethod
        @cb
        def ping():
            return "pong"
    c = Client()
    assert c.get("k") == "k" and c.get("", default=5) == 5 and c.calls == 2
    assert Client.get(c, "x") == "x"  # through the class: a plain function
    assert Client.ping() == "pong" and c.ping() == "pong"
    with pytest.raises(Boom):
        c.get("bad")
    assert cb.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        c.get("k")
    assert c.calls == 4  # rejected: not run
    ref = weakref.ref(add)
    del add
    gc.collect()
    assert ref() is None


def test_with_blocks_record_outcome(clock):
    cb = CircuitBreaker(2, 1, 5, clock=clock, half_open_max_calls=1)
    with cb:
        pass
    with pytest.raises(Boom):
        with cb:
            raise Boom()
    assert cb.metrics.consecutive_failures == 1
    with pytest.raises(Boom):
        with cb as entered:
            assert entered is cb
            raise Boom()
    assert cb.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        with cb:
            pytest.fail("the block must not run")
    clock.advance(5)
    with cb:  # the trial call
        with pytest.raises(CircuitOpenError):
            with cb:  # nested: no second trial slot
                pass
        assert cb.metrics.half_open_in_flight == 1
    assert cb.state is CircuitState.CLOSED


def test_async_with(clock):
    cb = CircuitBreaker(1, 1, 5, clock=clock)

    async def main():
        async with cb:
            await asyncio.sleep(0)
        with pytest.raises(Boom):
            async with cb:
                raise Boom()
        assert cb.state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            async with cb:
                pass
        clock.advance(5)
        # two tasks in half-open: each records with its own permit
        results = await asyncio.gather(_block(cb), _block(cb), return_exceptions=True)
        assert sum(isinstance(r, CircuitOpenError) for r in results) == 1
    asyncio.run(main())
    assert cb.state is CircuitState.CLOSED


async def _block(cb):
    async with cb:
        await asyncio.sleep(0.001)
    return "ok"


# ---- listeners ----------------------------------------------------------------------

def test_listener_args_and_errors(clock):
    got = []

    def listener(breaker, old, new):
        got.append((breaker, old, new))

    def broken(breaker, old, new):
        raise RuntimeError("listener bug")
    cb = CircuitBreaker(1, 1, 1, clock=clock, on_state_change=[broken, listener])
    with pytest.warns(RuntimeWarning, match="listener bug"):
        fail_n(cb, 1)  # the caller still sees its own exception
    assert got == [(cb, CircuitState.CLOSED, CircuitState.OPEN)]
    clock.advance(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warnings as errors: reported, never raised
        old_hook = sys.unraisablehook
        hooked = []
        sys.unraisablehook = hooked.append
        try:
            assert cb.call(ok, 5) == 5
        finally:
            sys.unraisablehook = old_hook
    assert len(hooked) == 2  # O->H and H->C
    assert got[-1][1:] == (CircuitState.HALF_OPEN, CircuitState.CLOSED)
    cb.remove_listener(broken)
    with pytest.raises(ValueError):
        cb.remove_listener(broken)
    assert cb.listeners == (listener,)
    extra = []
    cb.add_listener(lambda b, o, n: extra.append(n))
    cb.open()
    assert extra == [CircuitState.OPEN]
    with pytest.raises(TypeError):
        cb.add_listener(1)


def test_listener_may_use_the_breaker(clock):
    seen = []

    def listener(b, old, new):
        seen.append((new, b.state, b.metrics.calls))
        if new is CircuitState.OPEN:
            b.allow_request()  # re-entrant calls never deadlock
    cb = CircuitBreaker(1, clock=clock, on_state_change=listener)
    fail_n(cb, 1)
    assert seen == [(CircuitState.OPEN, CircuitState.OPEN, 1)]


# ---- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"failure_threshold": 0}, ValueError, "failure_threshold"),
    ({"failure_threshold": -3}, ValueError, "failure_threshold"),
    ({"failure_threshold": 2.5}, ValueError, "failure_threshold"),
    ({"failure_threshold": True}, TypeError, "failure_threshold"),
    ({"failure_threshold": "5"}, TypeError, "failure_threshold"),
    ({"success_threshold": 0}, ValueError, "success_threshold"),
    ({"timeout_seconds": -1}, ValueError, "timeout_seconds"),
    ({"timeout_seconds": math.nan}, ValueError, "timeout_seconds"),
    ({"timeout_seconds": "30"}, TypeError, "timeout_seconds"),
    ({"timeout_seconds": -math.inf}, ValueError, "timeout_seconds"),
    ({"fallback": 3}, TypeError, "fallback"),
    ({"name": 3}, TypeError, "name"),
    ({"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": 1.5}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": 50}, ValueError, "percentage"),
    ({"failure_rate_threshold": math.nan}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": "0.5"}, TypeError, "failure_rate_threshold"),
    ({"window_type": "sliding"}, ValueError, "window_type"),
    ({"window_type": 1}, TypeError, "window_type"),
    ({"window_size": 0}, ValueError, "window_size"),
    ({"window_size": 10 ** 9}, ValueError, "window_size"),
    ({"window_type": "time", "window_size": 86401}, ValueError, "window_size"),
    ({"minimum_calls": 0}, ValueError, "minimum_calls"),
    ({"slow_call_duration": 0}, ValueError, "slow_call_duration"),
    ({"slow_call_duration": -1}, ValueError, "slow_call_duration"),
    ({"slow_call_duration": math.inf}, ValueError, "slow_call_duration"),
    ({"slow_call_rate_threshold": 0.5}, ValueError, "slow_call_duration"),
    ({"slow_call_duration": 1, "slow_call_rate_threshold": 2}, ValueError, "slow_call_rate"),
    ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
    ({"half_open_max_calls": 1.5}, ValueError, "half_open_max_calls"),
    ({"record_exceptions": "ValueError"}, TypeError, "record_exceptions"),
    ({"record_exceptions": (ValueError, 3)}, TypeError, "record_exceptions"),
    ({"record_exceptions": 5}, TypeError, "record_exceptions"),
    ({"ignore_exceptions": (int,)}, TypeError, "ignore_exceptions"),
    ({"is_failure": 1}, TypeError, "is_failure"),
    ({"on_state_change": 1}, TypeError, "on_state_change"),
    ({"on_state_change": [print, 1]}, TypeError, "on_state_change"),
    ({"clock": 1}, TypeError, "clock"),
])
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        CircuitBreaker(**kwargs)


def test_bad_usage():
    with pytest.raises(TypeError):
        CircuitBreaker(1, 2, 3, None, "positional name")
    with pytest.raises(TypeError):
        CircuitBreaker(bogus=1)
    # built by __new__ (tp_new): nothing is half-made, nothing re-initialises
    cb = CircuitBreaker(failure_threshold=3)
    cb.__init__(failure_threshold=9)
    assert cb.failure_threshold == 3
    with pytest.raises(TypeError):
        pr._core.CircuitBreaker.__init__(cb, failure_threshold=9)
    assert cb.failure_threshold == 3
    raw = CircuitBreaker.__new__(CircuitBreaker, failure_threshold=2, name="raw")
    assert (raw.failure_threshold, raw.name) == (2, "raw")
    assert raw.call(ok, 1) == 1 and raw.state is CircuitState.CLOSED
    assert repr(raw) == "CircuitBreaker(failure_threshold=2, success_threshold=2, timeout_seconds=30.0, name='raw')"
    with pytest.raises(TypeError):
        cb._record("nonsense")
    # accepted forms
    assert CircuitBreaker(record_exceptions=[KeyError, OSError]).record_exceptions == (KeyError, OSError)
    assert CircuitBreaker(record_exceptions=KeyError).record_exceptions == (KeyError,)
    assert CircuitBreaker(timeout_seconds=0).timeout_seconds == 0.0


# ---- threads ---------------------------------------------------------------------------

def _wait_until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.001)


@pytest.mark.parametrize("max_calls", [1, 3])
def test_threads_half_open_admits_exactly(clock, max_calls):
    transitions = []
    lock = threading.Lock()
    cb = CircuitBreaker(1, 100, 10, clock=clock, half_open_max_calls=max_calls,
                        on_state_change=lambda b, o, n: transitions.append((o, n)))
    fail_n(cb, 1)
    clock.advance(10)
    n = 64
    barrier = threading.Barrier(n)
    release = threading.Event()
    running = [0]
    rejected = [0]

    def trial():
        with lock:
            running[0] += 1
        release.wait(10)
        return "ok"

    def worker():
        barrier.wait()
        try:
            cb.call(trial)
        except CircuitOpenError:
            with lock:
                rejected[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    _wait_until(lambda: running[0] + rejected[0] == n)
    assert running[0] == max_calls
    assert cb.metrics.half_open_in_flight == max_calls
    release.set()
    for t in threads:
        t.join()
    assert rejected[0] == n - max_calls
    S = CircuitState
    assert transitions == [(S.CLOSED, S.OPEN), (S.OPEN, S.HALF_OPEN)]  # once each
    assert cb.metrics.half_open_in_flight == 0


def test_threads_exact_counts_and_one_notification_per_transition(clock):
    per_thread, nthreads = 5000, 8
    transitions = []
    cb = CircuitBreaker(3, 2, 0.0, clock=clock, on_state_change=lambda b, o, n: transitions.append((o, n)))

    booms = [0] * nthreads
    oks = [0] * nthreads

    def worker(k):
        for i in range(per_thread):
            try:
                if (i // 7 + k) % 3 == 0:  # runs of 7 failures
                    cb.call(boom)
                else:
                    cb.call(ok)
                    oks[k] += 1
            except Boom:
                booms[k] += 1
            except CircuitOpenError:
                pass

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = cb.metrics
    assert m.calls + m.rejected == per_thread * nthreads
    assert m.ignored == 0
    assert m.failures == sum(booms) and m.calls - m.failures == sum(oks)
    # one notification per transition: along the path CLOSED -> ... -> final,
    # every state is entered as often as it is left, but for the ends
    assert len(transitions) >= 2
    final = cb.state
    for s in CircuitState:
        entered = sum(1 for o, n in transitions if n is s)
        left = sum(1 for o, n in transitions if o is s)
        assert entered - left == (s is final) - (s is CircuitState.CLOSED), s

    cb2 = CircuitBreaker(10 ** 9, clock=clock)

    def recorder():
        for i in range(per_thread):
            if i % 3 == 0:
                cb2.record_failure()
            else:
                cb2.record_success()
    threads = [threading.Thread(target=recorder) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = cb2.metrics
    assert m.calls == per_thread * nthreads
    assert m.failures == nthreads * len(range(0, per_thread, 3))


# ---- fork ------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_breaker_keeps_working_in_a_forked_child(clock):
    cb = CircuitBreaker(2, 1, 10, clock=clock)
    fail_n(cb, 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its own copy of the state
        try:
            os.close(r)
            out = []
            try:
                cb.call(boom)
            except Boom:
                pass
            out.append(cb.state.value)
            clock.advance(10)
            out.append(cb.call(ok, 7))
            out.append(cb.state.value)
            os.write(w, repr(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got = f.read()
    os.waitpid(pid, 0)
    assert got == "['open', 7, 'closed']"
    assert cb.state is CircuitState.CLOSED and cb.metrics.consecutive_failures == 1


# ---- memory ------------------------------------------------------------------------------

def test_gc_collects_self_referencing_breaker():
    class Holder:
        pass
    h = Holder()
    h.cb = CircuitBreaker(on_state_change=lambda b, o, n: h, fallback=lambda: h,
                          is_failure=lambda r: h is None)
    h.cb.add_listener(lambda b, o, n: h.cb)
    ref = weakref.ref(h.cb)
    del h
    gc.collect()
    assert ref() is None


def test_gc_collects_breaker_in_its_own_closure():
    def make():
        cb = None

        def fb():
            return cb
        cb = CircuitBreaker(fallback=fb, on_state_change=lambda b, o, n: cb)
        return weakref.ref(cb)
    ref = make()
    gc.collect()
    assert ref() is None


# ---- typing --------------------------------------------------------------------------------

def test_mypy_passes_on_example():
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_breaker.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_example_runs():
    example = Path(__file__).parent / "typing" / "example_breaker.py"
    exec(compile(example.read_text(), str(example), "exec"), {"__name__": "example"})


# ---- repr and metrics ---------------------------------------------------------------------

def test_repr_is_the_configuration(clock):
    cb = CircuitBreaker()
    assert repr(cb) == "CircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0)"
    fail_n(cb, 5)  # state and counters are not configuration
    assert repr(cb) == "CircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0)"
    cb = CircuitBreaker(3, 1, 10, name="pay", failure_rate_threshold=0.5, window_type="time",
                        window_size=60, minimum_calls=4, half_open_max_calls=2,
                        record_exceptions=(Boom,), clock=clock)
    assert repr(cb) == (
        "CircuitBreaker(failure_threshold=3, success_threshold=1, timeout_seconds=10.0, name='pay', "
        "failure_rate_threshold=0.5, window_type='time', window_size=60, minimum_calls=4, "
        f"record_exceptions=({Boom!r},), half_open_max_calls=2, clock={clock!r})")
    cb.disable()
    assert "disabled" not in repr(cb)

    class Mine(CircuitBreaker):
        pass
    assert repr(Mine(name="m")).startswith("Mine(failure_threshold=5, ")


def test_metrics_are_a_frozen_public_snapshot(clock):
    import pickle
    cb = CircuitBreaker(1, 1, 5, clock=clock)
    fail_n(cb, 1)
    m = cb.metrics
    assert type(m) is pr.CircuitBreakerMetrics
    assert type(m).__module__ == "pyresilience.breaker"
    assert type(m).__qualname__ == "CircuitBreakerMetrics"
    with pytest.raises(AttributeError):
        m.calls = 0  # type: ignore[misc]
    assert repr(m).startswith("CircuitBreakerMetrics(state=")
    assert "pyresilience" not in repr(m)
    assert pickle.loads(pickle.dumps(m)) == m
    assert m.__match_args__ == (
        "state", "consecutive_failures", "consecutive_successes", "calls", "failures", "slow_calls",
        "rejected", "ignored", "failure_rate", "slow_call_rate", "retry_after", "window_calls",
        "window_failures", "window_slow_calls", "half_open_in_flight", "mode")
    assert (m.state, m.failures, m.calls) == (CircuitState.OPEN, 1, 1)
    cb.reset()
    assert m.failures == 1  # a snapshot


def test_metrics_are_a_named_tuple_of_the_core_fields(clock):
    """The C type gives the fields (_metrics(), a plain tuple, in order); the
    facade's CircuitBreakerMetrics names them."""
    cb = CircuitBreaker(2, 1, 5, clock=clock)
    fail_n(cb, 2)
    core = pr._core.CircuitBreaker()._metrics()
    assert type(core) is tuple and len(core) == len(pr.CircuitBreakerMetrics._fields)
    assert core[0] is CircuitState.CLOSED and core[-1] == "normal"
    m = cb.metrics
    assert tuple(m) == cb._metrics() and m._asdict()["failures"] == 2
    assert m._replace(calls=7).calls == 7 and m.state is CircuitState.OPEN
    r = repr(CircuitBreaker().metrics)
    assert r.startswith("CircuitBreakerMetrics(state=<CircuitState.CLOSED")
    assert r.endswith("half_open_in_flight=0, mode='normal')")


def test_core_type_takes_tuples_and_the_facade_converts():
    """The facade turns an item or an iterable of them into the tuple the C
    type takes; the C type itself refuses anything else (no half-checked state)."""
    with pytest.raises(TypeError, match="record_exceptions must be a tuple, not type"):
        pr._core.CircuitBreaker(record_exceptions=KeyError)
    with pytest.raises(TypeError, match="on_state_change must be a tuple, not list"):
        pr._core.CircuitBreaker(on_state_change=[print])
    core = pr._core.CircuitBreaker(ignore_exceptions=(KeyError,), on_state_change=(print,))
    assert core.ignore_exceptions == (KeyError,) and core._listeners == (print,)
    with pytest.raises(TypeError, match="_listeners must be a tuple"):
        core._listeners = [print]
    assert CircuitBreaker(ignore_exceptions=[KeyError]).ignore_exceptions == (KeyError,)
    assert CircuitBreaker(on_state_change=print).listeners == (print,)


def test_remove_listener_removes_the_last_equal_one(clock):
    seen = []
    cb = CircuitBreaker(1, clock=clock, on_state_change=[print, seen.append, print])
    cb.remove_listener(print)
    assert cb.listeners == (print, seen.append)
    cb.remove_listener(print)
    with pytest.raises(ValueError, match="is not a listener of this breaker"):
        cb.remove_listener(print)
