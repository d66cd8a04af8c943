"""LeakyBucket, FixedWindow, SlidingWindowLog and SlidingWindowCounter through
Python: tables on a ManualClock, exact retry_after, the documented bounds on
random schedules (hypothesis) against pure-Python reference models kept here,
threads with a frozen clock, the shared interface, bad input, typing."""
from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import subprocess
import sys
import threading
import weakref
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyresilience as pr

FAMILY = [pr.LeakyBucket, pr.FixedWindow, pr.SlidingWindowLog, pr.SlidingWindowCounter]
WINDOWED = [pr.FixedWindow, pr.SlidingWindowLog, pr.SlidingWindowCounter]


def at(clock, seconds):
    clock.set(seconds)


def expect(d, allowed, remaining, retry_after, reset_after, limit):
    assert d.allowed is allowed
    assert d.limit == limit
    assert d.remaining == remaining
    assert d.retry_after == pytest.approx(retry_after, abs=1e-9)
    assert d.reset_after == pytest.approx(reset_after, abs=1e-9)


# ---- tables ------------------------------------------------------------------

def test_leaky_bucket_table(clock):
    lb = pr.LeakyBucket(3, 1, clock=clock)
    rows = [  # (t, n, allowed, remaining, retry_after, reset_after)
        (0.0, 1, True, 2, 0.0, 1.0),
        (0.0, 2, True, 0, 0.0, 3.0),
        (0.0, 1, False, 0, 1.0, 3.0),
        (0.5, 1, False, 0, 0.5, 2.5),
        (1.0, 1, True, 0, 0.0, 3.0),
        (1.0, 4, False, 0, math.inf, 3.0),
        (2.5, 1, True, 0, 0.0, 2.5),
        (10.0, 3, True, 0, 0.0, 3.0),
    ]
    for t, n, *want in rows:
        at(clock, t)
        expect(lb.check(n), *want, limit=3)
    at(clock, 10.5)
    assert lb.level == pytest.approx(2.5)
    assert lb.available == pytest.approx(0.5)
    assert lb.capacity == 3.0 and lb.leak_rate == 1.0


def test_fixed_window_table(clock):
    fw = pr.FixedWindow(3, 10, clock=clock)
    rows = [
        (12.0, 1, True, 2, 0.0, 8.0),   # window [10, 20)
        (12.5, 2, True, 0, 0.0, 7.5),
        (13.0, 1, False, 0, 7.0, 7.0),
        (20.0, 3, True, 0, 0.0, 10.0),  # aligned on multiples of the window
        (30.0, 4, False, 3, math.inf, 0.0),
        (30.0, 2, True, 1, 0.0, 10.0),
    ]
    for t, n, *want in rows:
        at(clock, t)
        expect(fw.check(n), *want, limit=3)
    assert fw.limit == 3 and fw.window == 10.0
    # the documented 2 * limit across a boundary
    fw.reset()
    at(clock, 39.999)
    assert fw.allow(3)
    at(clock, 40.0)
    assert fw.allow(3)
    assert not fw.allow()


def test_sliding_window_log_table(clock):
    sl = pr.SlidingWindowLog(3, 10, clock=clock)
    rows = [
        (0.0, 1, True, 2, 0.0, 10.0),
        (1.0, 1, True, 1, 0.0, 10.0),
        (2.0, 1, True, 0, 0.0, 10.0),
        (3.0, 1, False, 0, 7.0, 9.0),    # the unit of t=0 leaves at 10
        (3.0, 2, False, 0, 8.0, 9.0),    # weighted: two must leave
        (3.0, 4, False, 0, math.inf, 9.0),
        (10.0, 1, True, 0, 0.0, 10.0),
        (10.5, 1, False, 0, 0.5, 9.5),
        (30.0, 3, True, 0, 0.0, 10.0),   # n units take n slots
    ]
    for t, n, *want in rows:
        at(clock, t)
        expect(sl.check(n), *want, limit=3)
    # no boundary burst: exact over every window
    sl.reset()
    at(clock, 39.999)
    assert sl.allow(3)
    at(clock, 40.0)
    assert not sl.allow()
    assert sl.peek().retry_after == pytest.approx(9.999)


def test_sliding_window_counter_table(clock):
    sc = pr.SlidingWindowCounter(10, 10, clock=clock)
    rows = [
        (10.0, 5, True, 5, 0.0, 20.0),
        (15.0, 5, True, 0, 0.0, 15.0),
        (15.0, 1, False, 0, 6.0, 15.0),   # next window, 1 s in: 10 * 9/10 + 1 <= 10
        (21.0, 1, True, 0, 0.0, 19.0),
        (22.0, 2, False, 1, 1.0, 18.0),   # 10 * 8/10 + 3 > 10 until 23
        (23.0, 2, True, 0, 0.0, 17.0),
        (35.0, 4, True, 4, 0.0, 15.0),    # 3 * 1/2 + 4
        (100.0, 11, False, 10, math.inf, 0.0),
    ]
    for t, n, *want in rows:
        at(clock, t)
        expect(sc.check(n), *want, limit=10)
    assert sc.limit == 10 and sc.window == 10.0


@pytest.mark.parametrize("cls", FAMILY)
def test_exact_retry_after(cls, clock):
    lim = cls(4, 0.25, clock=clock)
    at(clock, 3.1)
    while lim.allow():
        clock.advance(0.01)
    t0 = clock.now_ns()
    waits = {}
    for n in (1, 2, 3, 4):
        waits.setdefault(round(lim.peek(n).retry_after * 1e9), []).append(n)
    for r_ns in sorted(waits):  # time only moves forward (a limiter never un-sees time)
        assert r_ns > 0
        clock.set((t0 + r_ns - 1) / 1e9)
        for n in waits[r_ns]:
            assert not lim.peek(n).allowed
            assert lim.peek(n).retry_after == pytest.approx(1e-9)
        clock.set((t0 + r_ns) / 1e9)
        for n in waits[r_ns]:
            assert lim.peek(n).allowed


@pytest.mark.parametrize("cls", FAMILY)
def test_peek_reset_and_never(cls, clock):
    lim = cls(3, 1, clock=clock)
    for _ in range(10):
        assert lim.peek(3).allowed
    assert lim.allow(3)
    assert not lim.allow()
    lim.reset()
    assert lim.available == 3.0
    d = lim.check(4)
    assert not d.allowed and d.retry_after == math.inf
    assert lim.check(tokens_needed=2).allowed
    with pytest.raises(ValueError, match="never"):
        lim.acquire(4)


@pytest.mark.parametrize("cls", FAMILY)
def test_backwards_clock_creates_nothing(cls, clock):
    lim = cls(2, 1, clock=clock)
    at(clock, 100.5)
    assert lim.allow(2)
    for t in (100.0, 99.5, 50.0, -1e6):
        at(clock, t)
        assert not lim.allow()


def test_leaky_bucket_acquire_paces_at_leak_rate(clock):
    lb = pr.LeakyBucket(1, 4, clock=clock)
    for _ in range(9):
        lb.acquire()
    assert clock.now() == pytest.approx(2.0)  # 8 waits of 1/4 s
    lb2 = pr.LeakyBucket(5, 10, clock=clock)
    start = clock.now()
    for _ in range(15):
        lb2.acquire()
    assert clock.now() - start == pytest.approx(1.0)  # 5 at once, then 10 per second


def test_fixed_window_acquire_waits_for_next_window(clock):
    fw = pr.FixedWindow(2, 5, clock=clock)
    at(clock, 1.0)
    fw.acquire(2)
    with pytest.raises(pr.RateLimitExceeded) as ei:
        fw.acquire(timeout=3.0)
    assert ei.value.retry_after == pytest.approx(4.0)
    fw.acquire()
    assert clock.now() == pytest.approx(5.0)


# ---- the shared interface -------------------------------------------------------

@pytest.mark.parametrize("cls", FAMILY)
def test_context_managers_decorators_async(cls, clock):
    lim = cls(2, 1, clock=clock)
    with lim as got:
        assert got is lim

    @lim
    def f(x):
        return x * 2

    assert f(21) == 42
    assert f.__name__ == "f"

    @lim
    async def g():
        return "ok"

    async def main():
        assert await g() == "ok"  # waited (the clock advanced) for room
        async with lim:
            pass
        await lim.acquire_async(1, timeout=None)
        with pytest.raises(pr.RateLimitExceeded):
            await lim.acquire_async(2, timeout=0.0)
        with pytest.raises(ValueError, match="never"):
            await lim.acquire_async(3)

    asyncio.run(main())
    assert clock.now() > 0
    assert isinstance(lim, pr.limiters.LimiterMixin)


@pytest.mark.parametrize("cls", FAMILY)
def test_repr_properties_and_clock(cls, clock):
    lim = cls(7, 2.5, clock=clock)
    r = repr(lim)
    assert r.startswith(cls.__name__ + "(") and "7" in r and "2.5" in r
    assert lim.clock is clock
    assert isinstance(cls(1, 1).clock, pr.MonotonicClock)
    assert cls(1, 1).allow()  # the default clock


@pytest.mark.parametrize("cls", FAMILY)
def test_signatures_and_docstrings(cls):
    first = "capacity" if cls is pr.LeakyBucket else "limit"
    second = "leak_rate" if cls is pr.LeakyBucket else "window"
    assert str(inspect.signature(cls)) == f"({first}, {second}, *, shared=None, name=None, clock=None)"
    assert "Bound" in cls.__doc__ and "Thread-safe" in cls.__doc__
    for name in ("allow", "check", "peek", "acquire", "reset"):
        assert inspect.signature(getattr(cls, name))
    assert cls.__name__ in pr.__all__


def test_callable_clock():
    t = [5.0]
    sl = pr.SlidingWindowLog(2, 1, clock=lambda: t[0])
    assert sl.allow(2) and not sl.allow()
    t[0] = 6.0
    assert sl.allow()


def test_limiter_with_self_referencing_clock_is_collected():
    class Holder:
        pass

    h = Holder()
    h.lim = pr.SlidingWindowCounter(3, 1, clock=lambda: h and 0.0)
    ref = weakref.ref(h.lim)
    del h
    gc.collect()
    assert ref() is None


# ---- threads ----------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda c: pr.LeakyBucket(1000, 5, clock=c),
    lambda c: pr.FixedWindow(1000, 60, clock=c),
    lambda c: pr.SlidingWindowLog(1000, 60, clock=c),
    lambda c: pr.SlidingWindowCounter(1000, 60, clock=c),
], ids=["leaky", "fixed", "log", "counter"])
def test_threads_frozen_clock_admit_exactly_limit(make):
    clock = pr.ManualClock(5.0)
    lim = make(clock)
    counts = [0] * 8
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        allow = lim.allow
        c = 0
        for _ in range(20_000):
            if allow():
                c += 1
        counts[i] = c

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 1000


# ---- reference models (integer nanoseconds) --------------------------------------

class FixedModel:
    def __init__(self, limit, w):
        self.limit, self.w, self.log = limit, w, []

    def allows(self, t, n):
        start = t - t % self.w
        used = sum(k for e, k in self.log if e >= start)
        return n <= self.limit and used + n <= self.limit


class LogModel:
    def __init__(self, limit, w):
        self.limit, self.w, self.log = limit, w, []

    def allows(self, t, n):
        used = sum(k for e, k in self.log if e > t - self.w)
        return n <= self.limit and used + n <= self.limit


class CounterModel:
    def __init__(self, limit, w):
        self.limit, self.w, self.log = limit, w, []

    def allows(self, t, n):
        w = self.w
        s = t - t % w
        cur = sum(k for e, k in self.log if e >= s)
        prev = sum(k for e, k in self.log if s - w <= e < s)
        return n <= self.limit and prev * (w - (t - s)) + (cur + n) * w <= self.limit * w


MODELS = {pr.FixedWindow: FixedModel, pr.SlidingWindowLog: LogModel,
          pr.SlidingWindowCounter: CounterModel}


def run_schedule(lim, model, clock, start, schedule):
    """Drives lim and the model through (gap_ns, n); asserts equal decisions and,
    for each denial, that retry_after is exact by the model. Returns the log."""
    t = start
    for gap, n in schedule:
        t += gap
        clock.set(t / 1e9)
        d = lim.check(n)
        assert d.allowed == model.allows(t, n), (t, n, model.log)
        assert 0 <= d.remaining <= d.limit
        if d.allowed:
            model.log.append((t, n))
            assert d.retry_after == 0.0
        elif math.isfinite(d.retry_after):
            r = round(d.retry_after * 1e9)
            assert r > 0
            assert not model.allows(t + r - 1, n)
            assert model.allows(t + r, n)
        else:
            assert n > d.limit
    return model.log


def max_in_any_window(log, w):
    best = 0
    for i, (ti, _) in enumerate(log):
        best = max(best, sum(k for tj, k in log[i:] if tj < ti + w))
    return best


windows_ns = st.sampled_from([1_000, 999_983, 10_000_000, 250_000_000, 1_000_000_000])


@st.composite
def windowed_case(draw):
    w = draw(windows_ns)
    limit = draw(st.integers(1, 8))
    start = draw(st.integers(-10**12, 10**12))
    schedule = draw(st.lists(st.tuples(st.integers(0, w // 2), st.integers(1, limit + 1)),
                             min_size=1, max_size=120))
    return w, limit, start, schedule


@settings(max_examples=120, deadline=None)
@given(windowed_case())
def test_fixed_window_matches_model_and_bound(case):
    """FixedWindow: at most limit per aligned window, up to 2*limit across one."""
    w, limit, start, schedule = case
    clock = pr.ManualClock()
    log = run_schedule(pr.FixedWindow(limit, w / 1e9, clock=clock), FixedModel(limit, w),
                       clock, start, schedule)
    per_window = {}
    for t, k in log:
        per_window[t - t % w] = per_window.get(t - t % w, 0) + k
    assert all(v <= limit for v in per_window.values())
    assert max_in_any_window(log, w) <= 2 * limit


@settings(max_examples=120, deadline=None)
@given(windowed_case())
def test_sliding_log_matches_model_and_exact_bound(case):
    """SlidingWindowLog: at most limit in every interval of length window."""
    w, limit, start, schedule = case
    clock = pr.ManualClock()
    log = run_schedule(pr.SlidingWindowLog(limit, w / 1e9, clock=clock), LogModel(limit, w),
                       clock, start, schedule)
    assert max_in_any_window(log, w) <= limit


@settings(max_examples=120, deadline=None)
@given(windowed_case())
def test_sliding_counter_matches_model_and_approximation(case):
    """SlidingWindowCounter: <= limit per aligned window; in [a, a + w) at most
    limit + prev * (a + w - B) / w where B is the boundary inside it (< 2*limit)."""
    w, limit, start, schedule = case
    clock = pr.ManualClock()
    log = run_schedule(pr.SlidingWindowCounter(limit, w / 1e9, clock=clock), CounterModel(limit, w),
                       clock, start, schedule)
    for a, _ in log:
        b = a - a % w + w
        inside = sum(k for t, k in log if a <= t < a + w)
        prev = sum(k for t, k in log if b - w <= t < b)
        this_window = sum(k for t, k in log if b - w <= t < b)
        assert this_window <= limit
        assert (inside - limit) * w <= prev * (a + w - b)
        assert inside < 2 * limit


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2_000_000_000), st.integers(1, 4)), min_size=1, max_size=150),
       st.sampled_from([1, 2, 4, 10]), st.sampled_from([0.5, 1.0, 3.0, 100.0]))
def test_leaky_bucket_bound_and_model(schedule, capacity, rate):
    """LeakyBucket: at most capacity + leak_rate * T in any interval T; decisions
    agree with an exact rational model except within rounding of the boundary."""
    clock = pr.ManualClock()
    lb = pr.LeakyBucket(capacity, rate, clock=clock)
    cap, r = Fraction(capacity), Fraction(rate) / 10**9
    slack = r * 2 + Fraction(1, 10**9)  # 2 ns of draining, plus float rounding
    level, last, t, admitted = Fraction(0), 0, 0, []
    for gap, n in schedule:
        t += gap
        clock.set(t / 1e9)
        now_level = max(Fraction(0), level - (t - last) * r)
        margin = cap - (now_level + n)
        ok = lb.allow(n)
        if margin > slack:
            assert ok
        elif margin < -slack:
            assert not ok
        if ok:
            level, last = now_level + n, t
            admitted.append((t, n))
    for i, (ti, _) in enumerate(admitted):
        total = 0
        for tj, nj in admitted[i:]:
            total += nj
            assert total <= capacity + rate * (tj - ti) / 1e9 + 1e-6


@st.composite
def family_case(draw):
    cls = draw(st.sampled_from(FAMILY))
    w = draw(windows_ns)
    limit = draw(st.integers(1, 8))
    schedule = draw(st.lists(st.tuples(st.integers(0, w // 2), st.integers(1, limit)),
                             min_size=1, max_size=60))
    return cls, w, limit, schedule


def replay(cls, w, limit, schedule):
    clock = pr.ManualClock()
    # the leaky bucket drains its whole capacity in one window
    lim = cls(limit, limit * 1e9 / w, clock=clock) if cls is pr.LeakyBucket else \
        cls(limit, w / 1e9, clock=clock)
    t, d = 10**12, None
    for gap, n in schedule:
        t += gap
        clock.set(t / 1e9)
        d = lim.check(n)
    return lim, clock, t, d


@settings(max_examples=200, deadline=None)
@given(family_case())
def test_decision_fields_are_consistent(case):
    """After any history: exactly `remaining` more requests of weight 1 are
    admitted at the same instant, and after `reset_after` with no request the
    limiter admits its whole limit again."""
    cls, w, limit, schedule = case
    lim, clock, t, d = replay(cls, w, limit, schedule)
    assert d.limit == limit and 0 <= d.remaining <= limit
    for _ in range(d.remaining):
        assert lim.allow()
    assert not lim.allow()
    lim, clock, t, d = replay(cls, w, limit, schedule)
    if d.reset_after == 0:
        assert lim.peek(limit).allowed
    else:
        r = round(d.reset_after * 1e9)
        clock.set((t + r) / 1e9)
        assert lim.peek(limit).allowed
        assert lim.available == pytest.approx(limit, abs=1e-9)


# ---- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("cls", WINDOWED)
@pytest.mark.parametrize("bad", [True, "3", None, [1]])
def test_limit_must_be_an_int(cls, bad):
    with pytest.raises(TypeError, match="limit"):
        cls(bad, 1)
    with pytest.raises(ValueError, match="limit must be a whole number, got 2.5"):
        cls(2.5, 1)
    assert cls(3.0, 1).limit == 3  # an integral float is the count it names


@pytest.mark.parametrize("cls", WINDOWED)
@pytest.mark.parametrize("bad", [0, -1, -(2**70), 2**70])
def test_limit_must_be_positive(cls, bad):
    with pytest.raises(ValueError, match="limit"):
        cls(bad, 1)


def test_sliding_log_limit_is_capped():
    with pytest.raises(ValueError, match="limit"):
        pr.SlidingWindowLog(2**27 + 1, 1)


@pytest.mark.parametrize("cls", WINDOWED)
@pytest.mark.parametrize("bad", [0, 0.0, -1, float("nan"), float("inf"), 1e-12])
def test_window_must_be_positive_finite(cls, bad):
    with pytest.raises(ValueError, match="window"):
        cls(3, bad)


@pytest.mark.parametrize("cls", WINDOWED)
@pytest.mark.parametrize("bad", ["1", True, None, b"1"])
def test_window_wrong_type(cls, bad):
    with pytest.raises(TypeError, match="window"):
        cls(3, bad)


@pytest.mark.parametrize("param", ["capacity", "leak_rate"])
@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), float("inf"), 2e15])
def test_leaky_bucket_bad_numbers(param, bad):
    kw = {"capacity": 3, "leak_rate": 1, param: bad}
    with pytest.raises(ValueError, match=param):
        pr.LeakyBucket(**kw)


@pytest.mark.parametrize("param", ["capacity", "leak_rate"])
@pytest.mark.parametrize("bad", ["1", True, None])
def test_leaky_bucket_wrong_types(param, bad):
    kw = {"capacity": 3, "leak_rate": 1, param: bad}
    with pytest.raises(TypeError, match=param):
        pr.LeakyBucket(**kw)


@pytest.mark.parametrize("cls", FAMILY)
def test_missing_unknown_and_bad_arguments(cls, clock):
    with pytest.raises(TypeError):
        cls(3)
    with pytest.raises(TypeError):
        cls(3, 1, 2)  # clock is keyword-only
    with pytest.raises(TypeError):
        cls(3, 1, rate=2)
    with pytest.raises(TypeError):
        cls(3, 1, clock=42)
    lim = cls(3, 1, clock=clock)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n"):
            lim.allow(bad)
    for bad in (True, "1"):
        with pytest.raises(TypeError, match="n"):
            lim.check(bad)
    with pytest.raises(ValueError, match="n"):
        lim.check(1.5)
    with pytest.raises(TypeError):
        lim.allow(n=1, tokens_needed=1)
    assert lim.allow(2**80) is False  # huge n: a decision, never an error


@pytest.mark.parametrize("cls", FAMILY)
def test_built_in_new_never_reinitialised(cls):
    with pytest.raises(TypeError, match="missing required argument"):
        cls.__new__(cls)
    lim = cls.__new__(cls, 2, 1)
    assert lim.allow(2)
    lim.__init__(5, 5)  # does nothing: no re-initialisation
    assert lim._config()[0] == (lim._config()[0][0], 2)


# ---- typing ----------------------------------------------------------------------

def test_mypy_passes_on_example():
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_limiter_family.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr
