"""Counters kept in the core, read in one snapshot per pattern: limiter
admitted/rejected (six algorithms, keyed, views, groups), retry outcomes
(first-try success counted in C), bulkhead waited and time held; each exact
under threads (the counts equal the calls). And observation that survives a
class switch: functions decorated before the first listener report
rejections."""
import asyncio
import threading

import pytest

import pyresilience as pr
from pyresilience import _core

LIMITERS = [pr.TokenBucket, pr.GCRA, pr.LeakyBucket, pr.FixedWindow, pr.SlidingWindowLog,
            pr.SlidingWindowCounter]


def _make(cls, limit, clock):
    """A limiter of cls admitting `limit` at once (no time passes on the clock)."""
    return cls(1, limit, clock=clock) if cls is pr.GCRA else cls(limit, 1, clock=clock)


def _hammer(fn, threads, calls):
    """Run fn() calls times in each of `threads` threads: (trues, falses)."""
    res = [[0, 0] for _ in range(threads)]
    start = threading.Barrier(threads)

    def run(i):
        start.wait()
        r = res[i]
        for _ in range(calls):
            if fn():
                r[0] += 1
            else:
                r[1] += 1
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(r[0] for r in res), sum(r[1] for r in res)


# ---- limiters ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LIMITERS)
def test_limiter_counts_consuming_decisions_only(cls):
    clock = pr.ManualClock()
    lim = _make(cls, 3, clock)
    assert (lim.metrics.admitted, lim.metrics.rejected) == (0, 0)
    got = [lim.allow() for _ in range(5)]
    lim.peek()  # a peek consumes nothing: not counted
    lim.check()
    m = lim.metrics
    assert m.admitted == got.count(True) == 3
    assert m.rejected == got.count(False) + 1 == 3
    lim.reset()  # counts are since creation
    assert lim.metrics.admitted == 3


@pytest.mark.parametrize("cls", LIMITERS)
def test_limiter_counts_exact_under_threads(cls):
    # a limit that admits some and refuses others while the threads race;
    # 12 threads: more than the core's per-thread stripes (8), so the shared
    # stripe of the lock-free GCRA is exercised too
    lim = _make(cls, 500, pr.ManualClock())
    admitted, rejected = _hammer(lim.allow, 12, 300)
    m = lim.metrics
    assert (m.admitted, m.rejected) == (admitted, rejected)
    assert admitted == 500 and rejected == 12 * 300 - 500


def test_gcra_counts_exact_under_many_threads_with_refill():
    # GCRA: the lock-free compare-and-swap path, striped counters
    lim = pr.GCRA(1e9, 2**40)  # admits everything: each call a CAS
    admitted, rejected = _hammer(lim.allow, 16, 2000)
    assert lim.metrics.admitted == admitted == 16 * 2000 and lim.metrics.rejected == rejected == 0


def test_keyed_view_and_group_counts_exact_under_threads():
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, 100, 0, clock=clock)
    keyed.name = "per-user"
    keys = ["a", "b", "c", "d"]
    n = [0]

    def allow_key():
        n[0] += 1  # racy, only used to spread keys
        return keyed.allow(keys[n[0] % 4])
    admitted, rejected = _hammer(allow_key, 8, 200)
    m = keyed.metrics
    assert type(m) is pr.LimiterMetrics and m.name == "per-user"
    assert (m.admitted, m.rejected) == (admitted, rejected) and admitted == 400
    view = keyed.for_key("e")
    assert [view.allow() for _ in range(101)].count(False) == 1
    # a view counts in its KeyedLimiter's table
    assert (view.metrics.admitted, view.metrics.rejected) == (admitted + 100, rejected + 1)
    assert keyed.metrics.admitted == admitted + 100

    g = pr.LimiterGroup(pr.TokenBucket(150, 0, clock=clock), keyed.for_key("g"))
    ga, gr = _hammer(g.allow, 8, 50)
    assert (g.metrics.admitted, g.metrics.rejected) == (ga, gr) == (100, 300)
    # the group's decisions are the group's (the members' counters do not see them)
    assert g.limiters[0].metrics.admitted == 0


def test_group_allow_on_the_default_clock_counts_all_or_nothing():
    # allow() with no argument on the monotonic clock: the core's yes/no path
    tb, fw = pr.TokenBucket(3, 0), pr.FixedWindow(2, 3600)
    g = pr.LimiterGroup(tb, fw)
    assert [g.allow() for _ in range(4)] == [True, True, False, False]
    assert (g.metrics.admitted, g.metrics.rejected) == (2, 2)
    assert g.check().denied_by == 1
    assert g.metrics.rejected == 3
    assert [tb.allow(), tb.allow()] == [True, False]  # the refused calls took nothing from it
    # check() with no argument on the monotonic clock: the core's check, counted
    one = pr.TokenBucket(1, 0)
    first, second = one.check(), one.check()
    assert (first.allowed, first.remaining, second.allowed, second.denied_by) == (True, 0, False, None)
    assert (one.metrics.admitted, one.metrics.rejected) == (1, 1)


def test_waiting_acquire_counts_its_steps():
    clock = pr.ManualClock()
    lim = pr.TokenBucket(1, 1, clock=clock)
    lim.acquire()
    lim.acquire()  # refused once, then (the ManualClock advanced) admitted
    m = lim.metrics
    assert (m.admitted, m.rejected) == (2, 1)


def test_core_counters_c_api():
    c = _core.RetryCounts()
    c.add(3, 2)
    c.add(0, 1)
    assert c.values[:4] == (1, 0, 0, 2) and len(c.values) == 11
    with pytest.raises(ValueError, match=r"^i must be between 0 and 10, got 11$"):
        c.add(11, 1)
    with pytest.raises(ValueError, match=r"^n must be >= 0, got -1$"):
        c.add(0, -1)
    with pytest.raises(TypeError, match="missing required argument 'n'"):
        c.add(0)  # type: ignore[call-arg]


# ---- retry ----------------------------------------------------------------------------------

def test_retry_first_try_success_counted_in_c_exactly_under_threads():
    r = pr.Retry(max_attempts=3, base_delay=0, name="first")

    @r
    def ok():
        return 1
    assert type(ok) is _core.PolicyStep and ok.kind == _core.STEP_RETRY  # the C fast path
    _hammer(ok, 8, 1000)
    assert r.call(lambda: 2) == 2
    m = r.metrics
    assert m.successful_without_retry == 8 * 1000 + 1
    assert (m.successful_with_retry, m.failed_with_retry, m.failed_without_retry, m.retries) == (0, 0, 0, 0)


def test_retry_outcomes_exact_under_threads():
    clock = pr.ManualClock()
    r = pr.Retry(max_attempts=2, base_delay=0, jitter=False, clock=clock, name="mixed")
    local = threading.local()

    @r
    def flaky():
        local.n = getattr(local, "n", 0) + 1
        if local.n % 3 == 1:  # fails once, then succeeds on the retry
            raise OSError("x")
        return True

    @r
    def always():
        raise OSError("y")

    def one():
        flaky()
        try:
            always()
        except OSError:
            pass
        return True
    _hammer(one, 6, 150)
    m = r.metrics
    calls = 6 * 150
    assert m.successful_with_retry + m.successful_without_retry == calls
    assert m.failed_with_retry == calls and m.gave_up == {"attempts": calls}
    assert m.retries == m.successful_with_retry + calls


def test_retry_async_first_try_counted():
    r = pr.Retry(max_attempts=2, base_delay=0)

    @r
    async def ok():
        return 1

    async def main():
        for _ in range(5):
            await ok()
    asyncio.run(main())
    assert r.metrics.successful_without_retry == 5


# ---- bulkhead ---------------------------------------------------------------------------------

def test_bulkhead_waited_and_time_held():
    bh = pr.Bulkhead("pool", 1, 5)
    assert (bh.metrics.waited_count, bh.metrics.held_seconds_total) == (0, 0.0)
    bh.acquire()
    got = threading.Event()

    def waiter():
        bh.acquire()
        got.set()
        bh.release()
    t = threading.Thread(target=waiter)
    t.start()
    while bh.waiting_count == 0:
        pass
    bh.release()
    t.join()
    assert got.is_set()
    m = bh.metrics
    assert m.waited_count == 1 and m.acquired_count == 2 and m.released_count == 2
    assert m.held_seconds_total > 0.0


def test_bulkhead_waited_counted_exactly_under_threads():
    bh = pr.Bulkhead("pool2", 2, 30)
    entered = []

    def use():
        with bh:
            entered.append(1)
        return True
    _hammer(use, 8, 100)
    m = bh.metrics
    assert m.acquired_count == len(entered) == 800
    assert 0 <= m.waited_count <= 800 and m.rejected_count == 0


# ---- decorated before the first listener ------------------------------------------------------

def test_breaker_decorated_before_listener_reports_rejections():
    cb = pr.CircuitBreaker(1, 1, 100, clock=pr.ManualClock())

    @cb
    def f():
        raise ValueError

    @cb
    async def af():
        return 1
    with pytest.raises(ValueError):
        f()
    seen = []
    cb.add_event_listener(seen.append)
    with pytest.raises(pr.CircuitOpenError):
        f()
    with pytest.raises(pr.CircuitOpenError):
        asyncio.run(af())
    assert [e.kind for e in seen] == ["rejected", "rejected"]
    cb.remove_event_listener(seen.append)
    with pytest.raises(pr.CircuitOpenError):
        f()
    with pytest.raises(pr.CircuitOpenError):
        asyncio.run(af())
    assert len(seen) == 2  # back on the plain path: nothing reported


def test_breaker_decorated_while_observed_goes_back_to_the_c_path():
    cb = pr.CircuitBreaker(1, 1, 100, clock=pr.ManualClock())
    seen = []
    cb.add_event_listener(seen.append)

    @cb
    def f():
        raise ValueError
    with pytest.raises(ValueError):
        f()
    with pytest.raises(pr.CircuitOpenError):
        f()
    assert [e.kind for e in seen if e.kind == "rejected"] == ["rejected"]
    cb.remove_event_listener(seen.append)
    with pytest.raises(pr.CircuitOpenError):
        f()
    assert cb.metrics.rejected == 2


def test_limiter_decorated_before_listener_reports_rejections():
    lim = pr.TokenBucket(1, 0)

    @lim
    def g():
        return 1
    g()
    seen = []
    lim.add_event_listener(seen.append)
    with pytest.raises(pr.RateLimitExceeded):
        g()
    assert [e.kind for e in seen] == ["rejected"]
    assert lim.metrics.rejected == 1


def test_policy_breaker_step_made_before_listener_reports_rejections():
    cb = pr.CircuitBreaker(1, 1, 100, clock=pr.ManualClock())
    policy = pr.Policy(cb)
    with pytest.raises(ValueError):
        policy.call(lambda: (_ for _ in ()).throw(ValueError()))
    seen = []
    cb.add_event_listener(seen.append)
    with pytest.raises(pr.CircuitOpenError):
        policy.call(lambda: 1)
    assert [e.kind for e in seen] == ["rejected"]


def test_policy_retry_step_counts_first_try_successes():
    r = pr.Retry(max_attempts=2, base_delay=0, name="in-policy")
    policy = pr.Policy(r)
    for _ in range(3):
        assert policy.call(lambda: 7) == 7

    @policy
    def f():
        return 1
    f()
    assert r.metrics.successful_without_retry == 4
