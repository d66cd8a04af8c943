"""Retries: the reference formula, jitter distributions, deadlines, Retry-After,
budgets, result predicates, threads, asyncio cancellation, bad input, typing."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import gc
import inspect
import math
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest

import pyresilience as pr
from pyresilience import (Retry, RetryBudget, RetryConfig, RetryState, calculate_delay, retry_async,
                          retry_with_backoff)


def failing(times, result="ok", exc=ValueError):
    """A function failing `times` times, then returning `result`; counts calls."""
    calls = []

    def f(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= times:
            raise exc(f"failure {len(calls)}")
        return result

    f.calls = calls
    return f


# ---- the formula -------------------------------------------------------------

def reference_delay(attempt, base_delay, max_delay, exponential_base):
    try:
        return min(base_delay * (exponential_base ** attempt), max_delay)
    except OverflowError:
        return max_delay


@pytest.mark.parametrize("base_delay,max_delay,exponential_base", [
    (1.0, 60.0, 2.0), (0.1, 30.0, 3.0), (0.01, 1e6, 1.5), (0.3, 1e9, 10.0), (2.5, 2.5, 1.0),
    (1.0, 100.0, 0.5), (1e-9, 1e3, 7.0), (0.0, 0.0, 2.0), (0.05, 60, 2), (1, 1000, 3),
])
def test_calculate_delay_equals_reference_formula(base_delay, max_delay, exponential_base):
    cfg = RetryConfig(base_delay=base_delay, max_delay=max_delay, exponential_base=exponential_base,
                      jitter=False)
    for attempt in range(400):
        want = reference_delay(attempt, float(base_delay), float(max_delay), float(exponential_base))
        assert calculate_delay(attempt, cfg) == want, attempt
        # an int base (exact int power) gives the same float
        want_int = reference_delay(attempt, base_delay, max_delay, exponential_base)
        assert calculate_delay(attempt, cfg) == want_int, attempt


def test_calculate_delay_huge_attempts_never_overflow():
    cfg = RetryConfig(jitter=False)
    for attempt in (1000, 10**6, 2**62, 2**63 - 1, 10**30):
        assert calculate_delay(attempt, cfg) == 60.0
    cfg = RetryConfig()  # jitter=True: +/-50% of the cap
    for _ in range(100):
        assert 30.0 <= calculate_delay(10**6, cfg) <= 90.0


def test_exponential_base_zero_and_one():
    zero = RetryConfig(base_delay=2.0, exponential_base=0, jitter=False)
    assert [calculate_delay(a, zero) for a in (0, 1, 2, 10**6)] == [2.0, 0.0, 0.0, 0.0]
    one = RetryConfig(base_delay=2.0, exponential_base=1, jitter=False)
    assert {calculate_delay(a, one) for a in (0, 1, 2, 10**6)} == {2.0}


def test_jitter_true_is_proportional_and_never_negative():
    cfg = RetryConfig(base_delay=1.0, jitter=True, seed=3)
    assert cfg.jitter is True and cfg.jitter_strategy == "proportional"
    for attempt in range(8):
        d = min(2.0 ** attempt, 60.0)
        for _ in range(200):
            x = calculate_delay(attempt, cfg)
            assert 0.5 * d <= x <= 1.5 * d


# ---- jitter distributions (Kolmogorov-Smirnov) -----------------------------------

N = 100_000


def ks_uniform(samples, lo, hi):
    stats = pytest.importorskip("scipy.stats")
    assert min(samples) >= lo and max(samples) <= hi
    return stats.kstest(samples, "uniform", args=(lo, hi - lo)).pvalue


@pytest.mark.parametrize("jitter,attempt,lo_hi", [
    ("proportional", 3, lambda d: (0.5 * d, 1.5 * d)),
    (True, 0, lambda d: (0.5 * d, 1.5 * d)),
    ("full", 2, lambda d: (0.0, d)),
    ("equal", 4, lambda d: (0.5 * d, d)),
])
def test_jitter_distribution_ks(jitter, attempt, lo_hi):
    cfg = RetryConfig(base_delay=0.5, max_delay=100.0, jitter=jitter, seed=20240601)
    d = 0.5 * 2 ** attempt
    samples = [calculate_delay(attempt, cfg) for _ in range(N)]
    lo, hi = lo_hi(d)
    assert ks_uniform(samples, lo, hi) > 1e-3


def test_decorrelated_distribution_ks():
    cfg = RetryConfig(base_delay=0.2, max_delay=30.0, jitter="decorrelated", seed=77)
    prev = 4.0  # 3 * prev = 12 < max_delay: uniform(base, 3 * prev)
    samples = [calculate_delay(5, cfg, previous=prev) for _ in range(N)]
    assert ks_uniform(samples, 0.2, 12.0) > 1e-3
    # capped: never above max_delay, and max_delay is reached
    capped = [calculate_delay(0, cfg, previous=20.0) for _ in range(N // 10)]
    assert all(0.2 <= x <= 30.0 for x in capped)
    assert max(capped) == 30.0
    # first sleep (no previous): uniform(base, 3 * base)
    first = [cfg._policy.delay(0) for _ in range(N)]
    assert ks_uniform(first, 0.2, 0.6) > 1e-3


def test_none_jitter_is_exact():
    cfg = RetryConfig(base_delay=0.5, jitter="none", seed=1)
    assert {cfg._policy.delay(3) for _ in range(1000)} == {4.0}


def test_generator_uniform_ks():
    cfg = RetryConfig(seed=5)
    u = [cfg._policy.random() for _ in range(N)]
    assert ks_uniform(u, 0.0, 1.0) > 1e-3


def test_seed_reproducible_and_unseeded_differs():
    a = RetryConfig(jitter="full", seed=42)
    b = RetryConfig(jitter="full", seed=42)
    assert [calculate_delay(i % 6, a) for i in range(50)] == [calculate_delay(i % 6, b) for i in range(50)]
    assert list(Retry(RetryConfig(max_attempts=6, seed=9)).delays()) == \
        list(Retry(RetryConfig(max_attempts=6, seed=9)).delays())
    u1, u2 = RetryConfig(jitter="full"), RetryConfig(jitter="full")
    assert [calculate_delay(3, u1) for _ in range(10)] != [calculate_delay(3, u2) for _ in range(10)]


# ---- the reference usage -------------------------------------------------------

def test_reference_usage_runs_unchanged():
    state = {"n": 0}

    @retry_with_backoff(RetryConfig(max_attempts=3, base_delay=0.01))
    def flaky():
        state["n"] += 1
        if state["n"] < 3:
            raise ConnectionError("transient")
        return "done"

    assert flaky() == "done"
    assert state["n"] == 3


def test_reference_retry_async_runs_unchanged():
    calls = []

    async def flaky(x, y=0):
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("transient")
        return x + y

    assert asyncio.run(retry_async(flaky, RetryConfig(max_attempts=3, base_delay=0.01), 2, y=3)) == 5
    assert calls == [2, 2, 2]


def test_exhausted_reraises_last_exception_with_note(clock):
    f = failing(10, exc=TimeoutError)
    wrapped = retry_with_backoff(RetryConfig(max_attempts=3, base_delay=1.0, jitter=False, clock=clock))(f)
    with pytest.raises(TimeoutError, match="failure 3") as info:
        wrapped()
    assert len(f.calls) == 3
    assert clock.now() == 3.0  # slept 1 + 2 on the ManualClock
    if sys.version_info >= (3, 11):
        notes = info.value.__notes__
        assert len(notes) == 1
        assert "3 attempts" in notes[0] and "3.000 s" in notes[0] and "attempts exhausted" in notes[0]


def test_non_retryable_exception_propagates_at_once(clock):
    f = failing(5, exc=KeyError)
    wrapped = Retry(max_attempts=5, retryable_exceptions=(ValueError,), clock=clock)(f)
    with pytest.raises(KeyError) as info:
        wrapped()
    assert len(f.calls) == 1 and clock.now() == 0.0
    assert not getattr(info.value, "__notes__", None)
    # a single class is accepted as well as a tuple
    g = failing(1, exc=ValueError)
    assert Retry(max_attempts=2, base_delay=0, retryable_exceptions=ValueError)(g)() == "ok"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError])
def test_base_exceptions_never_retried(exc, clock):
    f = failing(5, exc=exc)
    for wrapped in (Retry(max_attempts=5, retryable_exceptions=(BaseException,), clock=clock)(f),
                    lambda: Retry(max_attempts=5, retryable_exceptions=(BaseException,),
                                  clock=clock).call(f)):
        f.calls.clear()
        with pytest.raises(exc):
            wrapped()
        assert len(f.calls) == 1


# ---- ManualClock: sleeps, deadlines, Retry-After ------------------------------------

def test_sleeps_match_delays(clock):
    seen = []
    times = []

    def f():
        times.append(clock.now())
        raise OSError("down")

    cfg = RetryConfig(max_attempts=6, base_delay=0.5, jitter="full", seed=11, clock=clock,
                      on_retry=lambda s: seen.append(s))
    with pytest.raises(OSError):
        retry_with_backoff(cfg)(f)()
    assert [s.attempt for s in seen] == [0, 1, 2, 3, 4]
    assert len(times) == 6
    for i, s in enumerate(seen):
        assert isinstance(s, RetryState)
        assert times[i + 1] - times[i] == pytest.approx(s.delay, abs=1e-9)
        assert s.elapsed == pytest.approx(times[i], abs=1e-9)
        assert isinstance(s.exception, OSError) and s.result is None
        assert 0 <= s.delay <= 0.5 * 2 ** i
    # the same jitter sequence again from the same seed
    clock2 = pr.ManualClock()
    delays = [s.delay for s in seen]
    again = list(Retry(RetryConfig(max_attempts=6, base_delay=0.5, jitter="full", seed=11,
                                   clock=clock2)).delays())
    assert again == delays


@pytest.mark.parametrize("jitter", [False, True, "full", "equal", "decorrelated"])
@pytest.mark.parametrize("deadline", [0.5, 3.0, 7.3, 30.0])
def test_deadline_never_exceeded(jitter, deadline, clock):
    for seed in range(20):
        clock.set(0)
        f = failing(1000)
        cfg = RetryConfig(max_attempts=50, base_delay=0.3, max_delay=5.0, jitter=jitter, seed=seed,
                          deadline=deadline, clock=clock)
        with pytest.raises(ValueError) as info:
            Retry(cfg).call(f)
        assert clock.now() < deadline
        assert len(f.calls) < 50
        if sys.version_info >= (3, 11):
            assert "deadline" in info.value.__notes__[-1]


def test_deadline_counts_attempt_time(clock):
    def slow():
        clock.advance(2.0)  # each attempt takes 2 s
        raise ValueError("slow")

    with pytest.raises(ValueError):
        Retry(max_attempts=10, base_delay=1.0, jitter=False, deadline=6.0, clock=clock).call(slow)
    # attempt 0 (2s) + sleep 1 + attempt 1 (2s) = 5s; a 2s sleep would reach 7s > 6
    assert clock.now() == 5.0


def test_delays_respect_deadline():
    r = Retry(max_attempts=10, base_delay=1.0, jitter=False, deadline=10.0)
    assert list(r.delays()) == [1.0, 2.0, 4.0]  # the next (8) would reach 15 > 10
    assert list(Retry(max_attempts=4, base_delay=1.0, jitter=False).delays()) == [1.0, 2.0, 4.0]
    assert list(Retry(max_attempts=1).delays()) == []


def limited(retry_after, times=1):
    """A function raising RateLimitExceeded(retry_after=...) `times` times, then returning "ok"."""
    def f():
        if len(f.calls) < times:
            f.calls.append(1)
            raise pr.RateLimitExceeded("slow down", retry_after=retry_after)
        f.calls.append(0)
        return "ok"
    f.calls = []
    return f


def test_retry_after_honoured_as_a_floor(clock):
    base = dict(max_attempts=3, base_delay=0.1, max_delay=10.0, jitter=False, clock=clock)
    assert Retry(**base).call(limited(5.0)) == "ok"
    assert clock.now() == 5.0  # at least retry_after, not 0.1
    clock.set(0)
    # the server asks 100 s: max_delay (10 s) caps our backoff, never the server's ask
    assert Retry(**base).call(limited(100.0)) == "ok"
    assert clock.now() == 100.0
    clock.set(0)
    assert Retry(**base).call(limited(0.01)) == "ok"
    assert clock.now() == 0.1  # the backoff delay was longer
    clock.set(0)
    assert Retry(**base, respect_retry_after=False).call(limited(5.0)) == "ok"
    assert clock.now() == 0.1
    # CircuitOpenError carries retry_after too; BulkheadFullError(None) is ignored
    clock.set(0)
    f = failing(1, exc=lambda m: pr.CircuitOpenError(m, retry_after=2.0))
    assert Retry(**base).call(f) == "ok" and clock.now() == 2.0
    clock.set(0)
    f = failing(1, exc=lambda m: pr.BulkheadFullError(m, retry_after=None))
    assert Retry(**base).call(f) == "ok" and clock.now() == 0.1


def test_retry_after_server_asks_5s_max_delay_2s_waits_5s(clock):
    states = []
    r = Retry(max_attempts=2, base_delay=0.5, max_delay=2.0, jitter=False, clock=clock,
              on_retry=states.append)
    assert r.call(limited("5")) == "ok"
    assert clock.now() == 5.0 and states[0].delay == 5.0


@pytest.mark.parametrize("value,want", [
    ("3", 3.0), (" 3 ", 3.0), (b"3", 3.0), ("0", 0.1), ("2.5", 2.5), ("-3", 0.1), (-3.0, 0.1),
    (7, 7.0), (datetime.timedelta(seconds=4), 4.0),
    # HTTP-dates (RFC 9110: IMF-fixdate, obsolete RFC 850 and asctime forms), wall clock at WALL
    ("Sun, 06 Nov 1994 08:49:43 GMT", 6.0), ("Sunday, 06-Nov-94 08:49:43 GMT", 6.0),
    ("Sun Nov  6 08:49:43 1994", 6.0),
    (datetime.datetime(1994, 11, 6, 8, 49, 47, tzinfo=datetime.timezone.utc), 10.0),
    (datetime.datetime(1994, 11, 6, 8, 49, 47), 10.0),   # naive: UTC, as HTTP-dates are
    ("Sun, 06 Nov 1994 08:49:30 GMT", 0.1),              # in the past: 0, the backoff wins
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0.1),
    # unreadable: ignored, the backoff applies
    ("soon", 0.1), ("", 0.1), ("3 s", 0.1), ("Sun, 99 Foo 1994 08:49:43 GMT", 0.1), (object(), 0.1),
    (True, 0.1), (math.nan, 0.1),
])
def test_retry_after_given_as_string_or_http_date(clock, monkeypatch, value, want):
    wall = datetime.datetime(1994, 11, 6, 8, 49, 37, tzinfo=datetime.timezone.utc).timestamp()
    monkeypatch.setattr(pr.retry, "_wall_time", lambda: wall)
    base = dict(max_attempts=2, base_delay=0.1, max_delay=1.0, jitter=False, clock=clock)
    assert Retry(**base).call(limited(value)) == "ok"
    assert clock.now() == pytest.approx(want)
    # the same through the async loop
    clock.set(0)
    assert asyncio.run(Retry(**base).call_async(_as_async(limited(value)))) == "ok"
    assert clock.now() == pytest.approx(want)


def _as_async(f):
    async def g():
        return f()
    return g


def test_retry_after_beyond_max_retry_after_gives_up_at_once(clock, monkeypatch):
    assert RetryConfig().max_retry_after == 300.0 == pr.retry.DEFAULT_MAX_RETRY_AFTER
    base = dict(max_attempts=5, base_delay=0.1, jitter=False, clock=clock)
    f = limited(301.0)
    with pytest.raises(pr.RateLimitExceeded) as info:
        Retry(**base).call(f)
    assert f.calls == [1] and clock.now() == 0.0
    assert info.value.__notes__[-1] == ("pyresilience: gave up after 1 attempt over 0.000 s "
                                        "(the server's Retry-After is longer than max_retry_after)")
    # exactly max_retry_after is waited
    assert Retry(**base).call(limited("300")) == "ok" and clock.now() == 300.0
    # a lower limit, an HTTP-date far away, and no limit
    clock.set(0)
    f = limited("2")
    with pytest.raises(pr.RateLimitExceeded):
        Retry(**base, max_retry_after=1.5).call(f)
    assert f.calls == [1]
    monkeypatch.setattr(pr.retry, "_wall_time", lambda: 0.0)
    f = limited("Fri, 01 Jan 2100 00:00:00 GMT")
    with pytest.raises(pr.RateLimitExceeded):
        Retry(**base).call(f)
    assert f.calls == [1] and clock.now() == 0.0
    assert Retry(**base, max_retry_after=None).call(limited(3600.0)) == "ok"
    assert clock.now() == 3600.0
    # a string or an HTTP-date past the deadline: the existing verdict and note
    clock.set(0)
    for value in ("30", "Thu, 01 Jan 1970 00:00:30 GMT"):
        f = limited(value)
        with pytest.raises(pr.RateLimitExceeded) as info:
            Retry(**base, deadline=20.0).call(f)
        assert f.calls == [1] and clock.now() == 0.0
        assert info.value.__notes__[-1].endswith("(the server's Retry-After passes the deadline)")
    # async: the same verdict, no sleep
    clock.set(0)
    f = limited(301.0)
    with pytest.raises(pr.RateLimitExceeded):
        asyncio.run(Retry(**base).call_async(_as_async(f)))
    assert f.calls == [1] and clock.now() == 0.0


def test_max_retry_after_config():
    cfg = RetryConfig(max_retry_after=10)
    assert cfg.max_retry_after == 10.0 and "max_retry_after=10.0" in repr(cfg)
    assert RetryConfig(max_retry_after=None).max_retry_after == math.inf
    assert RetryConfig(max_retry_after=math.inf).max_retry_after == math.inf
    assert RetryConfig(max_retry_after=0).max_retry_after == 0.0
    assert cfg.replace(max_attempts=5).max_retry_after == 10.0
    cfg.max_retry_after = 20
    assert cfg.max_retry_after == 20.0 and cfg.max_attempts == 3
    for bad, exc in ((-1, ValueError), (math.nan, ValueError), ("300", TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_retry_after"):
            RetryConfig(max_retry_after=bad)
    assert "max_retry_after=300.0" in repr(pr._core.RetryPolicy())


def test_retry_after_past_deadline_gives_up_at_once(clock):
    f = failing(5, exc=lambda m: pr.RateLimitExceeded(m, retry_after=30.0))
    with pytest.raises(pr.RateLimitExceeded) as info:
        Retry(max_attempts=5, base_delay=0.1, max_delay=10, deadline=20.0, clock=clock).call(f)
    assert len(f.calls) == 1 and clock.now() == 0.0
    if sys.version_info >= (3, 11):
        assert "Retry-After" in info.value.__notes__[-1]
    # never admissible (retry_after = inf): give up at once even without a deadline
    f = failing(5, exc=lambda m: pr.RateLimitExceeded(m, retry_after=math.inf))
    with pytest.raises(pr.RateLimitExceeded):
        Retry(max_attempts=5, base_delay=0.1, clock=clock).call(f)
    assert len(f.calls) == 1


def test_retry_after_from_a_real_limiter(clock):
    tb = pr.TokenBucket(1, 0.5, clock=clock)  # one token every 2 s
    calls = []

    def guarded():
        calls.append(clock.now())
        if not tb.allow():
            d = tb.check()
            raise pr.RateLimitExceeded("limited", retry_after=d.retry_after)
        return len(calls)

    r = Retry(max_attempts=3, base_delay=0.01, jitter=False, clock=clock)
    assert r.call(guarded) == 1
    assert r.call(guarded) == 3  # waited the limiter's retry_after (2 s), then admitted
    assert calls[-1] == pytest.approx(2.0)


# ---- results -------------------------------------------------------------------

def test_retry_on_result_and_exhaustion(clock):
    values = iter([None, None, 7, None])
    cfg = RetryConfig(max_attempts=4, base_delay=1.0, jitter=False, clock=clock,
                      retry_on_result=lambda r: r is None)
    assert retry_with_backoff(cfg)(lambda: next(values))() == 7
    assert clock.now() == 3.0
    with pytest.raises(pr.RetryExhausted) as info:
        Retry(cfg.replace(retry_on_result=lambda r: r == "bad")).call(lambda: "bad")
    e = info.value
    assert isinstance(e, pr.ResilienceError)
    assert e.last_result == "bad" and e.attempts == 4
    # on_retry sees the rejected result
    states = []
    cfg2 = cfg.replace(retry_on_result=lambda r: r < 3, on_retry=states.append)
    it = iter(range(10))
    assert Retry(cfg2)(lambda: next(it))() == 3
    assert [(s.attempt, s.result, s.exception) for s in states] == [(0, 0, None), (1, 1, None), (2, 2, None)]


def test_predicate_errors_propagate():
    def boom(r):
        raise RuntimeError("predicate failed")

    with pytest.raises(RuntimeError, match="predicate failed"):
        Retry(retry_on_result=boom)(lambda: 1)()
    with pytest.raises(RuntimeError, match="predicate failed"):
        Retry(retry_on_result=boom).call(lambda: 1)


# ---- budget ----------------------------------------------------------------------

def test_budget_bounds_a_failure_storm(clock):
    ratio, floor, window = 0.1, 2.0, 10.0
    budget = RetryBudget(ratio, floor, window, clock=clock)
    attempts = []

    def down():
        attempts.append(1)
        raise ConnectionError("down")

    retry = Retry(max_attempts=5, base_delay=0.0, budget=budget, clock=clock)
    wrapped = retry(down)
    requests = 2000
    for i in range(requests):
        clock.set(i * (window * 0.9) / requests)  # all inside one window
        with pytest.raises(ConnectionError):
            wrapped() if i % 2 else retry.call(down)
    assert len(attempts) <= (1 + ratio) * requests + floor * window
    assert len(attempts) > requests  # it did retry
    m = budget.metrics
    assert m["attempts"] == requests
    assert m["retries_allowed"] == len(attempts) - requests
    assert m["retries_denied"] >= requests - m["retries_allowed"] // 4
    if sys.version_info >= (3, 11):
        with pytest.raises(ConnectionError) as info:
            wrapped()
        assert "budget" in info.value.__notes__[-1]


def test_budget_metrics_and_window(clock):
    b = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=2.0, clock=clock)
    assert repr(b) == "RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=2.0)"
    assert b.clock is clock and b.ratio == 0.5 and b.window == 2.0 and b.min_retries_per_second == 0.0
    assert not b.withdraw()
    for _ in range(4):
        b.deposit()
    assert [b.withdraw() for _ in range(3)] == [True, True, False]
    m = b.metrics
    assert m == pr.RetryBudgetMetrics(attempts=4, retries_allowed=2, retries_denied=2, window_attempts=4,
                                      window_retries=2, available=0.0)
    assert dataclasses.asdict(m) == {"attempts": 4, "retries_allowed": 2, "retries_denied": 2,
                                     "window_attempts": 4, "window_retries": 2, "available": 0.0}
    clock.advance(2.0)
    assert b.metrics["window_attempts"] == 0 and b.metrics["attempts"] == 4
    b.reset()
    assert b.metrics["attempts"] == 0


def test_budget_metrics_is_a_frozen_snapshot_under_pyresilience(clock):
    b = RetryBudget(clock=clock)
    b.deposit()
    m = b.metrics
    assert type(m) is pr.RetryBudgetMetrics and "RetryBudgetMetrics" in pr.__all__
    assert type(m).__module__ == "pyresilience.retry"
    assert repr(m) == ("RetryBudgetMetrics(attempts=1, retries_allowed=0, retries_denied=0, "
                       "window_attempts=1, window_retries=0, available=100.1)")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.attempts = 5
    b.deposit()
    assert m.attempts == 1 and b.metrics.attempts == 2  # a snapshot: it never changes
    # item access by field name still works, read-only; unknown keys are KeyErrors
    assert m["attempts"] == 1 and m["available"] == 100.1
    with pytest.raises(KeyError):
        m["nope"]
    with pytest.raises(KeyError):
        m["__class__"]
    assert not hasattr(pr._core.RetryBudget, "metrics")  # the snapshot type is the facade's


def test_budget_defaults():
    b = RetryBudget()
    assert (b.ratio, b.min_retries_per_second, b.window) == (0.1, 10.0, 10.0)
    assert b.metrics["available"] == 100.0  # the floor: 10/s x 10 s
    assert isinstance(b.clock, pr.MonotonicClock)


# ---- concurrency --------------------------------------------------------------------

def test_threads_keep_separate_attempt_counts():
    n_threads = 8
    local = threading.local()
    seen = {}
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def on_retry(state):
        with lock:
            seen.setdefault(threading.get_ident(), []).append(state.attempt)

    @retry_with_backoff(RetryConfig(max_attempts=20, base_delay=0.0, jitter=False, on_retry=on_retry))
    def work(fail_times):
        local.n = getattr(local, "n", 0) + 1
        if local.n <= fail_times:
            raise ValueError(local.n)
        return local.n

    results = {}

    def worker(k):
        barrier.wait()
        for rep in range(50):
            local.n = 0
            seen.pop(threading.get_ident(), None)
            got = work(k)
            assert got == k + 1
            assert seen.get(threading.get_ident(), []) == list(range(k))
        results[k] = True

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == n_threads


def test_async_tasks_keep_separate_attempt_counts(clock):
    async def main():
        counts = {}

        @Retry(max_attempts=10, base_delay=1.0, jitter=False, clock=clock)
        async def work(name, fail_times):
            counts[name] = counts.get(name, 0) + 1
            await asyncio.sleep(0)
            if counts[name] <= fail_times:
                raise ValueError(name)
            return counts[name]

        results = await asyncio.gather(*(work(i, i % 4) for i in range(8)))
        assert results == [i % 4 + 1 for i in range(8)]

    asyncio.run(main())


# ---- asyncio cancellation ----------------------------------------------------------

def test_cancellation_during_backoff_propagates_at_once():
    async def main():
        attempts = []
        sleeping = asyncio.Event()

        async def down():
            attempts.append(1)
            raise ConnectionError("down")

        cfg = RetryConfig(max_attempts=5, base_delay=1000.0, max_delay=1000.0, jitter=False,
                          on_retry=lambda s: sleeping.set())
        task = asyncio.ensure_future(retry_async(down, cfg))
        await sleeping.wait()
        await asyncio.sleep(0)  # the task is now in its 1000 s backoff sleep
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert attempts == [1]  # never retried

    asyncio.run(main())


def test_cancelled_error_from_the_function_is_not_retried():
    async def main():
        attempts = []

        async def cancelled():
            attempts.append(1)
            raise asyncio.CancelledError()

        with pytest.raises(asyncio.CancelledError):
            await Retry(max_attempts=5, base_delay=0, retryable_exceptions=(BaseException,)).call_async(
                cancelled)
        assert attempts == [1]

    asyncio.run(main())


def test_async_exhaustion_and_manual_clock(clock):
    async def main():
        f = failing(10, exc=OSError)

        async def down():
            return f()

        with pytest.raises(OSError) as info:
            await retry_async(down, RetryConfig(max_attempts=4, base_delay=2.0, jitter=False, clock=clock))
        assert len(f.calls) == 4 and clock.now() == 14.0
        if sys.version_info >= (3, 11):
            assert "4 attempts" in info.value.__notes__[-1]

    asyncio.run(main())


# ---- the wrapper --------------------------------------------------------------------

def test_wrapper_looks_like_the_function():
    def add(a: int, b: int = 1) -> int:
        """Adds."""
        return a + b

    w = retry_with_backoff()(add)
    assert w.__name__ == "add" and w.__doc__ == "Adds." and w.__wrapped__ is add
    assert str(inspect.signature(w)) == str(inspect.signature(add))
    assert w(1) == 2 and w(1, b=5) == 6 and w(a=2, b=2) == 4
    assert isinstance(w.retry, Retry)

    class C:
        @retry_with_backoff(RetryConfig(max_attempts=2, base_delay=0))
        def m(self, x):
            return (self, x)

        @staticmethod
        @retry_with_backoff()
        def s(x):
            return x

    c = C()
    assert c.m(3) == (c, 3)
    assert C.m(c, 4) == (c, 4)
    assert c.s(5) == 5


def test_method_failure_is_retried_with_self(clock):
    class Client:
        def __init__(self):
            self.n = 0

        @Retry(max_attempts=3, base_delay=1.0, jitter=False, clock=clock)
        def get(self, key, *, default=None):
            self.n += 1
            if self.n < 3:
                raise ConnectionError(key)
            return (key, default, self.n)

    c = Client()
    assert c.get("k", default=1) == ("k", 1, 3)


def test_wrapper_is_collectable():
    class Holder:
        pass

    h = Holder()

    def f():
        return h  # cycle: h -> wrapper -> f -> h (closure)

    h.wrapped = retry_with_backoff()(f)
    ref = weakref.ref(h)
    wref = weakref.ref(h.wrapped)
    del h, f
    gc.collect()
    assert ref() is None and wref() is None

    budget = RetryBudget()
    budget_ref = weakref.ref(budget)
    cfg = RetryConfig(budget=budget, on_retry=lambda s: cfg)
    w = Retry(cfg)(lambda: cfg)
    del budget, cfg, w
    gc.collect()
    assert budget_ref() is None


def test_retry_object_api(clock):
    base = RetryConfig(max_attempts=4, base_delay=1.0, jitter=False)
    r = Retry(base, clock=clock, max_attempts=2)
    assert r.config.max_attempts == 2 and r.config.clock is clock and base.max_attempts == 4
    assert Retry().config.max_attempts == 3
    assert Retry(max_attempts=7).config.max_attempts == 7
    f = failing(1)
    assert r.call(f, 1, x=2) == "ok" and f.calls == [((1,), {"x": 2}), ((1,), {"x": 2})]
    # one repr style: ClassName(param=value, ...), the parameters Retry(**kwargs) takes
    assert repr(r).startswith("Retry(max_attempts=2, base_delay=1.0, max_delay=60.0, ")
    assert repr(r)[len("Retry("):] == repr(r.config)[len("RetryConfig("):]
    assert repr(RetryConfig(max_attempts=2)).startswith("RetryConfig(max_attempts=2, base_delay=1.0, ")
    with pytest.raises(TypeError):
        Retry(config=5)
    with pytest.raises(TypeError):
        Retry(nonsense=1)
    with pytest.raises(TypeError):
        Retry()(5)


def test_config_fields_and_mutation():
    cfg = RetryConfig()
    assert (cfg.max_attempts, cfg.base_delay, cfg.max_delay, cfg.exponential_base, cfg.jitter,
            cfg.retryable_exceptions) == (3, 1.0, 60.0, 2.0, True, (Exception,))
    assert (cfg.deadline, cfg.retry_on_result, cfg.on_retry, cfg.budget, cfg.respect_retry_after,
            cfg.seed, cfg.clock) == (None, None, None, None, True, None, None)
    cfg.max_attempts = 5
    cfg.base_delay = 0.5
    cfg.jitter = "equal"
    assert cfg.max_attempts == 5 and cfg.jitter_strategy == "equal"
    with pytest.raises(ValueError, match="max_attempts"):
        cfg.max_attempts = 0
    assert cfg.max_attempts == 5
    with pytest.raises(ValueError, match="deadline"):
        cfg.deadline = -1
    assert cfg == cfg.replace() and cfg != cfg.replace(max_attempts=2)
    cfg.deadline = math.inf
    assert cfg.deadline is None
    import copy
    for dup in (copy.copy(cfg), copy.deepcopy(cfg)):
        assert dup == cfg and dup is not cfg and dup._policy is not cfg._policy


# ---- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(max_attempts=0), ValueError, "max_attempts"),
    (dict(max_attempts=-3), ValueError, "max_attempts"),
    (dict(max_attempts=1.5), ValueError, "max_attempts"),
    (dict(max_attempts=True), TypeError, "max_attempts"),
    (dict(max_attempts="3"), TypeError, "max_attempts"),
    (dict(base_delay=-1), ValueError, "base_delay"),
    (dict(base_delay=math.nan), ValueError, "base_delay"),
    (dict(base_delay=math.inf), ValueError, "base_delay"),
    (dict(base_delay="1"), TypeError, "base_delay"),
    (dict(max_delay=-1), ValueError, "max_delay"),
    (dict(max_delay=math.nan), ValueError, "max_delay"),
    (dict(max_delay=0.5), ValueError, "max_delay"),
    (dict(base_delay=5, max_delay=2), ValueError, "max_delay"),
    (dict(exponential_base=-2), ValueError, "exponential_base"),
    (dict(exponential_base=math.nan), ValueError, "exponential_base"),
    (dict(jitter="gaussian"), ValueError, "jitter"),
    (dict(jitter=2), TypeError, "jitter"),
    (dict(retryable_exceptions=(int,)), TypeError, "retryable_exceptions"),
    (dict(retryable_exceptions=("ValueError",)), TypeError, "retryable_exceptions"),
    (dict(retryable_exceptions=5), TypeError, "retryable_exceptions"),
    (dict(retryable_exceptions=(ValueError, object)), TypeError, "retryable_exceptions"),
    (dict(deadline=0), ValueError, "deadline"),
    (dict(deadline=-1), ValueError, "deadline"),
    (dict(deadline=math.nan), ValueError, "deadline"),
    (dict(deadline="1"), TypeError, "deadline"),
    (dict(retry_on_result=5), TypeError, "retry_on_result"),
    (dict(on_retry="x"), TypeError, "on_retry"),
    (dict(budget=5), TypeError, "budget"),
    (dict(seed="x"), TypeError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(clock=5), TypeError, "clock"),
])
def test_bad_config(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        RetryConfig(**kwargs)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(ratio=-0.1), ValueError, "ratio"),
    (dict(ratio=math.nan), ValueError, "ratio"),
    (dict(ratio="x"), TypeError, "ratio"),
    (dict(min_retries_per_second=-1), ValueError, "min_retries_per_second"),
    (dict(min_retries_per_second=math.inf), ValueError, "min_retries_per_second"),
    (dict(window=0), ValueError, "window"),
    (dict(window=-1), ValueError, "window"),
    (dict(window=4000), ValueError, "window"),
    (dict(window=math.nan), ValueError, "window"),
    (dict(clock=5), TypeError, "clock"),
])
def test_bad_budget(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        RetryBudget(**kwargs)


def test_bad_calculate_delay_args():
    cfg = RetryConfig()
    with pytest.raises(ValueError, match="attempt"):
        calculate_delay(-1, cfg)
    with pytest.raises(TypeError, match="attempt"):
        calculate_delay(1.5, cfg)
    with pytest.raises(TypeError, match="attempt"):
        calculate_delay(True, cfg)
    with pytest.raises(TypeError, match="config"):
        calculate_delay(1, {"max_attempts": 3})
    with pytest.raises(ValueError, match="previous"):
        calculate_delay(1, cfg, previous=math.nan)


def test_docstrings_and_signatures():
    for obj in (RetryConfig, Retry, RetryState, RetryBudget, calculate_delay, retry_with_backoff,
                retry_async, Retry.call, Retry.call_async, Retry.delays, RetryBudget.withdraw,
                RetryBudget.deposit, RetryBudget.reset, RetryConfig.replace):
        assert obj.__doc__, obj
        inspect.signature(obj)
    assert str(inspect.signature(RetryBudget)) == \
        "(ratio=0.1, min_retries_per_second=10.0, window=10.0, *, clock=None)"
    sig = inspect.signature(RetryConfig)
    assert list(sig.parameters)[:6] == ["max_attempts", "base_delay", "max_delay", "exponential_base",
                                        "jitter", "retryable_exceptions"]
    assert sig.parameters["max_attempts"].default == 3
    assert sig.parameters["jitter"].default is True


def test_mypy_passes_on_example():
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_retry.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the loop against a pure-Python reference model ----------------------------------

def model_loop(max_attempts, base, max_delay, expb, deadline, outcomes, max_retry_after=300.0):
    """The documented loop, in plain Python: returns (succeeded, attempts, end_time, sleeps).
    outcomes[i] = (duration, failed, retry_after or None). A Retry-After is a
    floor that max_delay never shortens; past the deadline or max_retry_after: give up."""
    t, sleeps = 0.0, []
    for attempt, (duration, failed, ra) in enumerate(outcomes):
        t += duration
        if not failed:
            return True, attempt + 1, t, sleeps
        if attempt + 1 >= max_attempts:
            break
        d = reference_delay(attempt, base, max_delay, expb)
        remaining = math.inf if deadline is None else deadline - t
        if ra is not None:
            if ra > remaining or ra > max_retry_after:
                break
            d = max(d, ra)
        if d >= remaining:
            break
        sleeps.append(d)
        t += d
    return False, attempt + 1, t, sleeps


try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    eighths = st.integers(0, 40).map(lambda k: k / 8)  # exact in binary and in ns

    @settings(max_examples=300, deadline=None)
    @given(max_attempts=st.integers(1, 8), base=eighths, extra=eighths, expb=st.sampled_from([0, 1, 2, 3]),
           deadline=st.one_of(st.none(), st.integers(1, 400).map(lambda k: k / 8)),
           outcomes=st.lists(st.tuples(eighths, st.booleans(), st.one_of(st.none(), eighths)),
                             min_size=8, max_size=8),
           max_retry_after=st.sampled_from([math.inf, 0.0, 2.5, 300.0]))
    def test_loop_matches_reference_model(max_attempts, base, extra, expb, deadline, outcomes,
                                          max_retry_after):
        clock = pr.ManualClock()
        sleeps = []
        it = iter(outcomes)

        def attempt():
            duration, failed, ra = next(it)
            clock.advance(duration)
            if failed:
                raise pr.RateLimitExceeded("no", retry_after=ra) if ra is not None else OSError("no")
            return "ok"

        cfg = RetryConfig(max_attempts, base, base + extra, expb, jitter=False, deadline=deadline,
                          clock=clock, on_retry=lambda s: sleeps.append(s.delay),
                          max_retry_after=max_retry_after)
        ok, attempts, end, want_sleeps = model_loop(max_attempts, base, base + extra, expb, deadline,
                                                    outcomes, max_retry_after)
        if ok:
            assert Retry(cfg).call(attempt) == "ok"
        else:
            with pytest.raises((OSError, pr.RateLimitExceeded)):
                Retry(cfg).call(attempt)
        assert 8 - len(list(it)) == attempts
        assert sleeps == want_sleeps
        assert clock.now() == end
        if deadline is not None:
            assert sum(sleeps) < deadline or not sleeps


# ---- signals ----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_kill"), reason="needs pthread_kill")
def test_ctrl_c_interrupts_a_backoff_sleep():
    import signal
    main_id = threading.get_ident()
    attempts = []

    def on_retry(state):  # about to sleep 1000 s: send SIGINT from another thread
        threading.Thread(target=signal.pthread_kill, args=(main_id, signal.SIGINT)).start()

    def down():
        attempts.append(1)
        raise ConnectionError("down")

    with pytest.raises(KeyboardInterrupt):
        Retry(max_attempts=3, base_delay=1000.0, max_delay=1000.0, jitter=False, on_retry=on_retry)(down)()
    assert attempts == [1]


# ---- the _core pieces directly -----------------------------------------------------------

def test_budget_exact_under_threads(clock):
    budget = RetryBudget(ratio=0.1, min_retries_per_second=2.0, window=10.0, clock=clock)
    allowed = [0] * 8

    def deposit(i):
        for _ in range(1000):
            budget.deposit()

    def withdraw(i):
        allowed[i] = sum(budget.withdraw() for _ in range(1000))

    for target in (deposit, withdraw):
        threads = [threading.Thread(target=target, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(allowed) == 800 + 20  # 0.1 x 8000 + 2/s x 10 s, exactly
    assert budget.metrics["retries_denied"] == 8000 - 820


def test_jitter_generator_shared_by_threads():
    cfg = RetryConfig(base_delay=1.0, jitter="full", seed=3)
    out = [[] for _ in range(8)]

    def draw(i):
        out[i] = [calculate_delay(2, cfg) for _ in range(2000)]

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = [x for xs in out for x in xs]
    assert all(0.0 <= x <= 4.0 for x in values)
    assert len(set(values)) == len(values)  # no draw handed out twice


def test_core_policy_and_call_bad_input():
    from pyresilience import _core
    p = _core.RetryPolicy(max_attempts=4, base_delay=0.5, jitter="equal", seed=1)
    assert (p.max_attempts, p.base_delay, p.max_delay, p.exponential_base, p.jitter, p.seed) == \
        (4, 0.5, 60.0, 2.0, "equal", 1)
    assert p.base(2) == 2.0 and "RetryPolicy(max_attempts=4" in repr(p)
    first = [p.delay(1) for _ in range(5)]
    p.reseed(1)
    assert [p.delay(1) for _ in range(5)] == first
    p.reseed(None)
    with pytest.raises(TypeError, match="seed"):
        p.reseed("x")
    assert p._next(3, 0.0, -1, _core.NEVER_NS)[0] == _core.RETRY_GIVE_UP_ATTEMPTS
    # built by __new__ (tp_new): complete at once, never re-initialised
    assert _core.RetryPolicy.__new__(_core.RetryPolicy, jitter=False).delay(0) == 1.0
    assert RetryBudget.__new__(RetryBudget).withdraw() is True
    p.__init__(max_attempts=9)  # object.__init__: the policy stays as built
    assert p.max_attempts == 4
    # the C layer of a Retry (a decorated function's wrapper): what would crash is refused
    with pytest.raises(TypeError, match=r"^b must be a RetryBudget or None, not int: 5$"):
        _core.PolicyStep(_core.STEP_RETRY, print, print, 5)
    with pytest.raises(TypeError, match=r"^o must be pyresilience._core.RetryCounts, not int: 5$"):
        _core.PolicyStep(_core.STEP_RETRY, print, print, None, None, -1, None, 5)  # its counts
    with pytest.raises(TypeError, match=r"^o must be None for this kind, not int: 5$"):
        _core.PolicyStep(_core.STEP_FALLBACK, print, print, None, None, -1, None, 5)
    with pytest.raises(TypeError, match="clock"):
        _core.PolicyStep(_core.STEP_RETRY, print, print, None, None, -1, 5)
    with pytest.raises(ValueError, match="ns"):
        _core.retry_sleep(None, -1)
    with pytest.raises(TypeError, match="clock"):
        _core.retry_now_ns(5)
    clock = pr.ManualClock()
    _core.retry_sleep(clock, 1_500_000_000)
    assert clock.now() == 1.5 and _core.retry_now_ns(clock) == 1_500_000_000


def test_decorated_function_is_the_policys_retry_step():
    """A Retry's decorator and a Policy's Retry are one C layer (PolicyStep
    RETRY): its repr names the function, and both deposit in the budget in C."""
    clock = pr.ManualClock()
    budget = RetryBudget(clock=clock)
    r = Retry(max_attempts=2, base_delay=0, budget=budget)

    @r
    def add(x, *, y=1):
        return x + y
    assert type(add) is pr._core.PolicyStep and add.kind == pr._core.STEP_RETRY
    assert repr(add).startswith("<retrying wrapper of <function ") and add.__wrapped__.__name__ == "add"
    assert add(1, y=2) == 3
    assert pr.Policy(r).call(add.__wrapped__, 2) == 3
    assert budget.metrics.attempts == 2
    fails = iter([ValueError("once")])

    def flaky(x, *, y):
        for exc in fails:
            raise exc
        return (x, y)
    assert r(flaky)(1, y=2) == (1, 2)  # the Python loop got the call's arguments
    assert r.metrics.successful_with_retry == 1
