"""Waiting on rate limiters: every acquire form (sync, `with`, decorator, async,
keyed, views, groups) raises at once when the wait can never end (a spent
budget, a clock saturated at 2^63 ns), honours a finite timeout whatever the
clock does, and advances a ManualClock in integer nanoseconds; ManualClock
itself saturates instead of wrapping. No test sleeps on the real clock except
test_stalled_callable_clock_timeout_honoured (10 ms, outcome only).

A regression here hangs rather than fails (the old waits spun with the GIL
held), so every test runs under a faulthandler watchdog that ends the process
with a traceback after 60 s."""
from __future__ import annotations

import asyncio
import faulthandler
import math
import sys
import time

import pytest

import pyresilience as pr
from pyresilience import _core

INT64_MAX = 2**63 - 1

ALGOS = [
    (pr.TokenBucket, {"capacity": 2, "refill_rate": 1}),
    (pr.GCRA, {"rate": 1, "burst": 2}),
    (pr.LeakyBucket, {"capacity": 2, "leak_rate": 1}),
    (pr.FixedWindow, {"limit": 2, "window": 1}),
    (pr.SlidingWindowLog, {"limit": 2, "window": 1}),
    (pr.SlidingWindowCounter, {"limit": 2, "window": 1}),
]


@pytest.fixture(autouse=True)
def hang_guard():
    faulthandler.dump_traceback_later(60, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


def _never(exc_info) -> None:
    e = exc_info.value
    assert math.isinf(e.retry_after)
    assert e.decision is not None and not e.decision.allowed


# ---- a spent budget (refill_rate=0): every form raises at once -------------

def _spent_forms(clock):
    """(name, limiter-like object) pairs whose budget is spent."""
    tb = pr.TokenBucket(capacity=1, refill_rate=0, clock=clock)
    assert tb.allow()
    keyed = pr.KeyedLimiter(pr.TokenBucket, capacity=1, refill_rate=0, clock=clock)
    assert keyed.allow("u")
    other = pr.TokenBucket(capacity=5, refill_rate=1, clock=clock)
    group = pr.LimiterGroup(other, keyed.for_key("u"))
    return tb, keyed, group


@pytest.mark.parametrize("manual", [True, False], ids=["manual", "monotonic"])
def test_spent_budget_every_sync_form_raises_at_once(manual):
    clock = pr.ManualClock(5.0) if manual else None
    tb, keyed, group = _spent_forms(clock)
    view = keyed.for_key("u")

    @tb
    def decorated():
        return 1

    @group
    def grouped():
        return 1

    forms = [
        lambda: tb.acquire(),
        lambda: tb.acquire(timeout=0.5),
        lambda: tb.acquire(timeout=math.inf),
        lambda: tb.__enter__(),
        decorated,
        lambda: keyed.acquire("u"),
        lambda: view.acquire(),
        lambda: view.__enter__(),
        lambda: group.acquire(),
        lambda: group.__enter__(),
        grouped,
    ]
    for form in forms:
        with pytest.raises(pr.RateLimitExceeded) as ei:
            form()
        _never(ei)
    # a group names the member that can never admit, and takes nothing from the others
    with pytest.raises(pr.RateLimitExceeded) as ei:
        group.acquire()
    assert ei.value.decision.denied_by == 1
    assert group.limiters[0].available == 5.0
    if manual:
        assert clock.now() == 5.0  # the clock was not run to 2^63 ns


@pytest.mark.parametrize("manual", [True, False], ids=["manual", "monotonic"])
def test_spent_budget_every_async_form_raises_at_once(manual):
    clock = pr.ManualClock(5.0) if manual else None
    tb, keyed, group = _spent_forms(clock)

    @tb
    async def decorated():
        return 1

    async def enter(lim):
        async with lim:
            pass

    async def main():
        forms = [
            tb.acquire_async(),
            tb.acquire_async(timeout=0.5),
            enter(tb),
            decorated(),
            keyed.acquire_async("u"),
            keyed.for_key("u").acquire_async(),
            enter(keyed.for_key("u")),
            group.acquire_async(),
            enter(group),
        ]
        for coro in forms:
            with pytest.raises(pr.RateLimitExceeded) as ei:
                await coro
            _never(ei)

    asyncio.run(main())
    if manual:
        assert clock.now() == 5.0


def test_n_above_limit_is_still_a_value_error(clock):
    tb = pr.TokenBucket(capacity=1, refill_rate=0, clock=clock)
    with pytest.raises(ValueError, match="never"):
        tb.acquire(2)

    async def main():
        with pytest.raises(ValueError, match="never"):
            await tb.acquire_async(2)

    asyncio.run(main())
    assert tb.available == 1.0


# ---- a clock saturated at 2^63 ns -------------------------------------------

@pytest.mark.parametrize("cls, kw", ALGOS, ids=[c.__name__ for c, _ in ALGOS])
def test_saturated_callable_clock_raises_even_with_timeout(cls, kw):
    # time.time_ns passed by mistake: ~1.7e18 "seconds", saturating at 2^63 ns
    lim = cls(clock=time.time_ns, **kw)
    while lim.allow():
        pass
    for timeout in (0.5, None):
        with pytest.raises(pr.RateLimitExceeded) as ei:
            lim.acquire(timeout=timeout)
        _never(ei)

    async def main():
        with pytest.raises(pr.RateLimitExceeded):
            await lim.acquire_async(timeout=0.5)

    asyncio.run(main())


@pytest.mark.parametrize("cls, kw", ALGOS, ids=[c.__name__ for c, _ in ALGOS])
def test_saturated_manual_clock_raises(cls, kw):
    clock = pr.ManualClock()
    clock.advance_ns(INT64_MAX - 10)
    lim = cls(clock=clock, **kw)
    while lim.allow():
        pass
    with pytest.raises(pr.RateLimitExceeded):
        lim.acquire()
    with pytest.raises(pr.RateLimitExceeded):
        lim.acquire(timeout=0.5)
    assert clock.now_ns() <= INT64_MAX


def test_saturated_clock_keyed_view_and_group():
    keyed = pr.KeyedLimiter(pr.TokenBucket, capacity=1, refill_rate=1, clock=time.time_ns)
    view = keyed.for_key("k")
    assert view.allow()
    group = pr.LimiterGroup(view, pr.GCRA(rate=1, burst=1, clock=time.time_ns))
    for form in (lambda: keyed.acquire("k", timeout=0.5), lambda: view.acquire(timeout=0.5),
                 lambda: group.acquire(timeout=0.5), lambda: group.acquire()):
        with pytest.raises(pr.RateLimitExceeded):
            form()


def test_stalled_callable_clock_timeout_honoured():
    # a clock that never moves: the limiter asks for 1 ms again and again; the
    # 10 ms timeout is measured on CLOCK_MONOTONIC as well, so it still ends
    frozen = lambda: 100.0  # noqa: E731
    g = pr.GCRA(rate=1000, burst=1, clock=frozen)
    assert g.allow()
    with pytest.raises(pr.RateLimitExceeded):
        g.acquire(timeout=0.01)

    async def main():
        with pytest.raises(pr.RateLimitExceeded):
            await g.acquire_async(timeout=0.01)

    asyncio.run(main())
    assert g.peek().retry_after == pytest.approx(0.001)  # nothing taken


# ---- ManualClock: integer ns, saturation ------------------------------------

def test_acquire_async_manual_clock_advances_in_integer_ns():
    # at 1e9 s a float second cannot hold 10 ns: the async wait must advance
    # the clock by exactly the 10 ns GCRA asks (it used to spin forever)
    clock = pr.ManualClock(start=1e9)
    start = clock.now_ns()
    g = pr.GCRA(rate=1e8, burst=1, clock=clock)
    assert g.allow()

    async def main():
        await asyncio.wait_for(g.acquire_async(timeout=1.0), timeout=30)
        await asyncio.wait_for(g.acquire_async(timeout=1.0), timeout=30)

    asyncio.run(main())
    assert clock.now_ns() == start + 20
    g.acquire(timeout=1.0)  # the sync form agrees
    assert clock.now_ns() == start + 30


def test_acquire_async_manual_clock_timeout_honoured():
    clock = pr.ManualClock(start=1e9)
    g = pr.GCRA(rate=1e8, burst=1, clock=clock)
    assert g.allow()

    async def main():
        with pytest.raises(pr.RateLimitExceeded):
            await g.acquire_async(timeout=5e-9)  # 5 ns < the 10 ns needed

    asyncio.run(main())
    assert not g.peek().allowed


def test_manual_clock_saturates_instead_of_wrapping():
    c = pr.ManualClock()
    c.advance_ns(INT64_MAX - 5)
    c.advance(1.0)
    assert c.now_ns() == INT64_MAX
    c.set(0)
    c.advance_ns(INT64_MAX - 5)
    c.sleep(10.0)
    assert c.now_ns() == INT64_MAX
    c.advance_ns(1)
    c.advance_ns(2**70)  # larger than int64: saturates too
    assert c.now_ns() == INT64_MAX
    # the library's own sleeps (retry backoff) on a ManualClock
    c.set(0)
    c.advance_ns(INT64_MAX - 5)
    _core.retry_sleep(c, 10**9)
    assert c.now_ns() == INT64_MAX


def test_manual_clock_advance_ns_validation():
    c = pr.ManualClock()
    c.advance_ns(7)
    c.advance_ns(0)
    assert c.now_ns() == 7
    with pytest.raises(ValueError, match="ns"):
        c.advance_ns(-1)
    with pytest.raises(ValueError, match="ns"):
        c.advance_ns(-(2**70))
    for bad in (1.5, "1", True, None):
        with pytest.raises(TypeError, match="ns"):
            c.advance_ns(bad)
    assert c.now_ns() == 7


# ---- cancellation still takes nothing ---------------------------------------

def test_async_wait_cancelled_takes_nothing_on_manual_clock():
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, capacity=1, refill_rate=1, clock=clock)
    view = keyed.for_key("k")
    grp = pr.LimiterGroup(view)
    assert view.allow()

    async def main():
        for lim in (view, grp):
            task = asyncio.create_task(lim.acquire_async())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert keyed.available("k") == 0.0


def test_mixin_on_a_host_class_of_its_own():
    # LimiterMixin over any object with check/acquire/clock (no C wait): the
    # same rules - never-admissible raises at once, a ManualClock advances in ns
    from pyresilience.limiters import LimiterMixin

    class Host(LimiterMixin):
        def __init__(self, inner):
            self.inner = inner
            self.clock = inner.clock

        def check(self, n=1):
            return self.inner.check(n)

        def acquire(self, n=1, timeout=None):
            self.inner.acquire(n, timeout)

    clock = pr.ManualClock(start=1e9)
    start = clock.now_ns()
    fast = Host(pr.GCRA(rate=1e8, burst=1, clock=clock))
    spent = Host(pr.TokenBucket(capacity=1, refill_rate=0, clock=clock))

    async def main():
        await fast.acquire_async()
        await fast.acquire_async(timeout=1.0)
        assert spent.check().allowed
        with pytest.raises(pr.RateLimitExceeded) as ei:
            await spent.acquire_async()
        _never(ei)
        with pytest.raises(ValueError, match="never"):
            await spent.acquire_async(2)

    asyncio.run(main())
    assert clock.now_ns() == start + 10
