"""Observability: names, snapshots, event listeners, log lines (issue 16).

Exporters are in test_observability_export.py."""
import asyncio
import gc
import logging
import threading

import pytest

import pyresilience as pr
from pyresilience import _registry, events

LIMITERS = [pr.TokenBucket, pr.GCRA, pr.LeakyBucket, pr.FixedWindow, pr.SlidingWindowLog,
            pr.SlidingWindowCounter]


# ---- names -------------------------------------------------------------------------------

def test_default_names_are_stable_and_assignable():
    a, b = pr.TokenBucket(1, 1), pr.TokenBucket(1, 1)
    assert a.name.startswith("TokenBucket-") and a.name != b.name
    assert a.name == a.name  # stable
    a.name = "api"
    assert a.name == "api"
    with pytest.raises(ValueError, match="name"):
        a.name = ""


def test_given_names():
    assert pr.Bulkhead("pool", 1).name == "pool"
    assert pr.Retry(name="fetch").name == "fetch"
    cb = pr.CircuitBreaker(name="db")
    assert cb.name == "db"
    assert pr.CircuitBreaker().name is None  # unchanged: the label is a default one
    q = pr.BoundedQueue(1)
    q.name = "jobs"
    assert q.name == "jobs"


def test_registry_holds_named_objects_weakly():
    b = pr.TokenBucket(1, 1)
    b.name = "weak-one"
    assert any(o is b for o in _registry.live_named())
    del b
    gc.collect()
    assert not any(getattr(o, "name", None) == "weak-one" for o in _registry.live_named())


def test_unnamed_objects_are_not_in_the_registry():
    b = pr.TokenBucket(1, 1)
    assert not any(o is b for o in _registry.live_named())


# ---- snapshots ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LIMITERS)
def test_one_limiter_metrics_type_for_the_six_algorithms(cls):
    lim = cls(4, 1, clock=pr.ManualClock())
    lim.name = "x"
    m = lim.metrics
    assert type(m) is pr.LimiterMetrics
    assert m.name == "x" and m.limit >= 1 and m.available == lim.available


def test_retry_metrics_count_slow_paths():
    clock = pr.ManualClock()
    r = pr.Retry(max_attempts=3, base_delay=0.1, jitter=False, clock=clock, name="r")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise OSError("x")
        return 1

    assert r.call(flaky) == 1
    with pytest.raises(ZeroDivisionError):
        r.call(lambda: 1 / 0)
    with pytest.raises(KeyError):  # not retryable: fails without retry
        pr.Retry(max_attempts=3, retryable_exceptions=(OSError,), name="r2").call(
            lambda: {}["k"])
    m = r.metrics
    assert type(m) is pr.RetryMetrics
    assert (m.successful_with_retry, m.failed_with_retry, m.failed_without_retry, m.retries) == (1, 1, 0, 3)
    assert m.gave_up == {"attempts": 1}


# ---- listeners -------------------------------------------------------------------------------

def test_observed_breaker_call_is_the_shared_python_call():
    # one Python-level breaker call (_acquire/_record) serves the observed
    # variant of every breaker class and RedisCircuitBreaker's shared path
    from pyresilience.events import breaker_call
    cb = pr.CircuitBreaker(1, 1, 10, name="obs")
    fb = pr.CircuitBreaker(1, 1, 10, fallback=lambda: "fb")
    seen = []
    fb.add_event_listener(seen.append)
    cb.add_event_listener(seen.append)
    call = type(cb).__dict__["call"]
    assert call.__code__ is breaker_call.__code__
    assert call.__doc__ == pr.CircuitBreaker.call.__doc__ and call.__name__ == "call"
    with pytest.raises(ZeroDivisionError):
        cb.call(lambda: 1 / 0)
    with pytest.raises(pr.CircuitOpenError):
        cb.call(lambda: 1)
    with pytest.raises(ZeroDivisionError):
        fb.call(lambda: 1 / 0)
    assert fb.call(lambda: 1) == "fb"  # a rejection answered by the fallback is seen too
    assert [e.source for e in seen if e.kind == "rejected"] == [cb, fb]
    from pyresilience.redis_breaker import _SharedPath
    assert _SharedPath.call.__code__ is breaker_call.__code__
    assert "shared breaker" in _SharedPath.call.__doc__


def test_no_listener_no_variant_and_back():
    b = pr.TokenBucket(1, 1)
    assert type(b) is pr.TokenBucket
    seen = []
    b.add_event_listener(seen.append)
    assert type(b) is not pr.TokenBucket and isinstance(b, pr.TokenBucket)
    assert type(b).__name__ == "TokenBucket"
    b.remove_event_listener(seen.append)
    assert type(b) is pr.TokenBucket
    with pytest.raises(ValueError):
        b.remove_event_listener(seen.append)
    with pytest.raises(TypeError):
        b.add_event_listener(42)


@pytest.mark.parametrize("cls", LIMITERS)
def test_limiter_rejections(cls):
    lim = cls(2, 1, clock=pr.ManualClock())
    seen = []
    lim.add_event_listener(seen.append)
    while lim.allow():
        pass
    assert not lim.check(1).allowed
    with pytest.raises(pr.RateLimitExceeded):
        lim.acquire(1, timeout=0)
    assert [e.kind for e in seen] == ["rejected"] * 3
    e = seen[-1]
    assert e.name == lim.name and e.pattern == "limiter" and e.source is lim
    assert e.retry_after > 0 and isinstance(e.exception, pr.RateLimitExceeded)
    assert seen[1].retry_after > 0 and seen[0].retry_after is None


def test_limiter_async_and_with_block_rejections():
    lim = pr.TokenBucket(1, 1, clock=pr.ManualClock())
    seen = []
    lim.add_event_listener(seen.append)
    with lim:
        pass
    with pytest.raises(pr.RateLimitExceeded):
        asyncio.run(lim.acquire_async(1, timeout=0))
    with lim:  # waits (the ManualClock advances): no rejection
        pass
    assert [e.kind for e in seen] == ["rejected"]


def test_keyed_limiter_events():
    k = pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=pr.ManualClock())
    seen = []
    k.add_event_listener(seen.append)
    assert k.allow("a") and not k.allow("a")
    assert [e.kind for e in seen] == ["rejected"]


def test_breaker_events_state_changes_and_rejections():
    clock = pr.ManualClock()
    cb = pr.CircuitBreaker(1, 1, 10, name="db", clock=clock)
    old_style = []
    cb.add_listener(lambda b, o, n: old_style.append((o, n)))
    seen = []
    cb.add_event_listener(seen.append)
    with pytest.raises(ZeroDivisionError):
        cb.call(lambda: 1 / 0)
    with pytest.raises(pr.CircuitOpenError):
        cb.call(lambda: 1)
    assert not cb.allow_request()
    with pytest.raises(pr.CircuitOpenError):
        with cb:
            pass
    assert [e.kind for e in seen] == ["state_change", "rejected", "rejected", "rejected"]
    assert (seen[0].old_state, seen[0].new_state) == ("closed", "open")
    assert seen[1].retry_after == 10.0 and seen[1].name == "db"
    assert old_style == [("closed", "open")]  # add_listener keeps working
    clock.advance(10)
    assert cb.call(lambda: 2) == 2
    assert [(e.old_state, e.new_state) for e in seen if e.kind == "state_change"][1:] == [
        ("open", "half_open"), ("half_open", "closed")]
    assert cb.listeners == (old_style and cb.listeners[0],)  # the event hook is hidden


def test_breaker_rejection_with_fallback_is_seen():
    cb = pr.CircuitBreaker(1, 1, 10, fallback=lambda: "fb", clock=pr.ManualClock())
    seen = []
    cb.add_event_listener(seen.append)
    cb.force_open()
    assert cb.call(lambda: 1) == "fb"
    assert asyncio.run(cb.call_async(asyncio.sleep, 0)) == "fb"
    assert [e.kind for e in seen].count("rejected") == 2


def test_breaker_listeners_property_and_repr_hide_the_hook():
    cb = pr.CircuitBreaker()
    assert cb.listeners == ()
    assert "on_state_change" not in repr(cb)


def test_bulkhead_rejections():
    bh = pr.Bulkhead("bh", 1, 0)
    seen = []
    bh.add_event_listener(seen.append)
    bh.acquire()
    assert not bh.try_acquire()
    with pytest.raises(pr.BulkheadFullError):
        bh.acquire()
    with pytest.raises(pr.BulkheadFullError):
        bh.call(lambda: 1)

    async def main():
        with pytest.raises(pr.BulkheadFullError):
            await bh.acquire_async()
        with pytest.raises(pr.BulkheadFullError):
            async with bh:
                pass
    asyncio.run(main())
    bh.release()
    assert [e.kind for e in seen] == ["rejected"] * 5
    assert all(e.name == "bh" for e in seen)


@pytest.mark.parametrize("strategy, expect_raise", [("drop_newest", False), ("drop_oldest", False),
                                                    ("error", True)])
def test_queue_drops(strategy, expect_raise):
    q = pr.BoundedQueue(1, strategy)
    seen = []
    q.add_event_listener(seen.append)
    q.put(1)
    if expect_raise:
        with pytest.raises(pr.QueueFullError):
            q.put_nowait(2)
    else:
        q.put_nowait(2)
    assert [(e.kind, e.reason) for e in seen] == [("dropped", strategy)]


def test_retry_events():
    clock = pr.ManualClock()
    r = pr.Retry(max_attempts=3, base_delay=1.0, jitter=False, clock=clock, name="fetch")
    seen = []
    r.add_event_listener(seen.append)
    with pytest.raises(OSError):
        r.call(lambda: (_ for _ in ()).throw(OSError("down")))
    assert [e.kind for e in seen] == ["retry", "retry", "gave_up"]
    assert [e.attempt for e in seen] == [0, 1, 3]
    assert seen[0].delay == 1.0 and isinstance(seen[0].exception, OSError)
    assert seen[2].reason == "attempts" and seen[2].name == "fetch"


def test_retry_events_async():
    r = pr.Retry(max_attempts=2, base_delay=0.5, jitter=False, clock=pr.ManualClock())
    seen = []
    r.add_event_listener(seen.append)

    async def fail():
        raise OSError("x")
    with pytest.raises(OSError):
        asyncio.run(r.call_async(fail))
    assert [e.kind for e in seen] == ["retry", "gave_up"]


def test_raising_listener_never_breaks_the_caller(caplog):
    lim = pr.TokenBucket(1, 1, clock=pr.ManualClock())
    good = []

    def bad(ev):
        raise RuntimeError("listener bug")
    lim.add_event_listener(bad)
    lim.add_event_listener(good.append)
    with caplog.at_level(logging.ERROR, logger="pyresilience"):
        assert lim.allow() and not lim.allow()
    assert len(good) == 1  # the next listener still ran
    assert any("listener bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)

    cb = pr.CircuitBreaker(1, 1, 10, clock=pr.ManualClock())
    cb.add_event_listener(bad)
    with pytest.raises(ZeroDivisionError):  # the caller sees its own exception only
        cb.call(lambda: 1 / 0)
    assert cb.state == "open"


def test_listener_added_during_dispatch_is_not_called_for_that_event():
    lim = pr.TokenBucket(1, 1, clock=pr.ManualClock())
    calls = []

    def adder(ev):
        calls.append("adder")
        lim.add_event_listener(lambda e: calls.append("late"))
    lim.add_event_listener(adder)
    lim.allow()
    lim.allow()
    assert calls == ["adder"]


def test_every_event_counted_exactly_under_threads():
    lim = pr.TokenBucket(100, 1e-9, clock=pr.ManualClock())
    bh = pr.Bulkhead("t", 1, 0)
    bh.acquire()
    seen = []
    lock = threading.Lock()

    def listener(ev):
        with lock:
            seen.append(ev.pattern)
    lim.add_event_listener(listener)
    bh.add_event_listener(listener)
    results = []

    def work():
        n = 0
        for _ in range(500):
            if lim.allow():
                n += 1
            bh.try_acquire()
        results.append(n)
    ts = [threading.Thread(target=work) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(results) == 100
    assert seen.count("limiter") == 8 * 500 - 100
    assert seen.count("bulkhead") == 8 * 500


# ---- logging ------------------------------------------------------------------------------------

def test_log_levels(caplog):
    clock = pr.ManualClock()
    cb = pr.CircuitBreaker(1, 1, 10, name="db", clock=clock)
    with caplog.at_level(logging.DEBUG, logger="pyresilience"):
        with pytest.raises(ZeroDivisionError):
            cb.call(lambda: 1 / 0)
        clock.advance(10)
        cb.call(lambda: 1)
        r = pr.Retry(max_attempts=2, base_delay=0, clock=clock, name="fetch")
        with pytest.raises(OSError):
            r.call(lambda: (_ for _ in ()).throw(OSError("x")))
    got = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("pyresilience.breaker", "WARNING", "breaker 'db': closed -> open") in got
    assert ("pyresilience.breaker", "INFO", "breaker 'db': open -> half_open") in got
    assert ("pyresilience.breaker", "INFO", "breaker 'db': half_open -> closed") in got
    levels = [(n, lv) for n, lv, _ in got if n == "pyresilience.retry"]
    assert levels == [("pyresilience.retry", "DEBUG"), ("pyresilience.retry", "WARNING")]


def test_rejection_lines_rate_limited_with_suppressed_count(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: now[0])
    lim = pr.TokenBucket(1, 1e-9, clock=pr.ManualClock())
    lim.name = "api"
    lim.add_event_listener(lambda e: None)
    with caplog.at_level(logging.DEBUG, logger="pyresilience.limiter"):
        lim.allow()
        for _ in range(5):
            lim.allow()  # 5 rejections within one second: one line
        now[0] += 1.0
        lim.allow()      # the next second: one line, with 4 suppressed
    msgs = [r.getMessage() for r in caplog.records if r.name == "pyresilience.limiter"]
    assert msgs == ["limiter 'api': rejected", "limiter 'api': rejected (4 similar lines suppressed)"]


def test_rate_limit_is_per_object(caplog):
    a, b = pr.TokenBucket(1, 1e-9), pr.TokenBucket(1, 1e-9)
    for x in (a, b):
        x.add_event_listener(lambda e: None)
        x.allow()
    with caplog.at_level(logging.DEBUG, logger="pyresilience.limiter"):
        for _ in range(3):
            a.allow()
            b.allow()
    assert len([r for r in caplog.records if r.name == "pyresilience.limiter"]) == 2


def test_silent_unless_configured(capsys):
    cb = pr.CircuitBreaker(1, 1, 10)
    with pytest.raises(ZeroDivisionError):
        cb.call(lambda: 1 / 0)
    assert capsys.readouterr().err == ""  # no "last resort" line on stderr


def test_drop_oldest_evictions_counted_exactly_under_threads():
    q = pr.BoundedQueue(4, "drop_oldest")
    seen = []
    lock = threading.Lock()

    def listener(ev):
        with lock:
            seen.append(ev.reason)
    q.add_event_listener(listener)

    def work():
        for i in range(500):
            q.put_nowait(i)
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(seen) == q.metrics.items_dropped == 4 * 500 - 4


def test_queue_async_drops():
    q = pr.BackpressureQueue(1, "drop_oldest")
    q2 = pr.BackpressureQueue(1, "drop_newest")
    seen = []
    q.add_event_listener(seen.append)
    q2.add_event_listener(seen.append)

    async def main():
        for x in (q, q2):
            await x.put(1)
            await x.put(2)
    asyncio.run(main())
    assert [e.reason for e in seen] == ["drop_oldest", "drop_newest"]


def test_add_remove_races_leave_the_class_matching_the_listeners():
    lim = pr.TokenBucket(1, 1)
    base = type(lim)

    def churn():
        for _ in range(300):
            f = lambda ev: None  # noqa: E731
            lim.add_event_listener(f)
            lim.remove_event_listener(f)
    ts = [threading.Thread(target=churn) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert lim.event_listeners == () and type(lim) is base
    lim.add_event_listener(print)
    assert type(lim) is not base
