"""Deadline propagation and cancellation of policy calls.

Every wait of the package inside a Policy's Timeout is capped at the remaining
deadline: limiter acquire (sync, async, keyed, groups), bulkhead waits, queue
put/get, retry sleeps and Redis acquire. The waits below would each last far
longer than the test (30 s, 1 h, forever) if the cap were missing; with it
they fail at once. On a ManualClock, "at once" is exact: the clock did not move.

Cancelling an async policy call gives back what it held: a bulkhead slot, a
half-open trial slot, and a limiter wait takes nothing.
"""
from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any, Iterator, List

import pytest

import pyresilience as pr
from pyresilience import _core

SHORT = 0.05  # a deadline no test waits out (every wait here would be far longer)


def in_deadline(fn: Any, *args: Any) -> Any:
    return pr.Policy(pr.Timeout(SHORT)).call(fn, *args)


async def in_deadline_async(fn: Any, *args: Any) -> Any:
    return await pr.Policy(pr.Timeout(SHORT)).call_async(fn, *args)


# ---- sync waits ------------------------------------------------------------------------


def test_limiter_acquire_beyond_the_deadline_fails_at_once() -> None:
    clock = pr.ManualClock()
    tb = pr.TokenBucket(1, 1 / 3600, clock=clock)  # next token in an hour
    tb.allow()
    with pytest.raises(pr.RateLimitExceeded) as info:
        in_deadline(tb.acquire, 1, None)  # no timeout of its own
    assert info.value.retry_after > 3000
    assert clock() == 0.0  # never slept (a ManualClock wait would have advanced it)
    tb.acquire(1, None)  # outside the policy the same wait is served
    assert clock() == pytest.approx(3600)


def test_keyed_group_and_limit_wait_are_capped() -> None:
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, 1, 1 / 3600, clock=clock)
    keyed.allow("k")
    with pytest.raises(pr.RateLimitExceeded):
        in_deadline(keyed.acquire, "k")
    group = pr.LimiterGroup(keyed.for_key("k"))
    with pytest.raises(pr.RateLimitExceeded):
        in_deadline(group.acquire)
    p = pr.Policy(pr.Timeout(SHORT), pr.Limit(keyed, key="k", wait=7200))
    with pytest.raises(pr.RateLimitExceeded):
        p.call(lambda: 1)
    assert clock() == 0.0


def test_a_wait_within_the_deadline_is_served() -> None:
    clock = pr.ManualClock()
    tb = pr.TokenBucket(1, 1000, clock=clock)  # next token in 1 ms of the ManualClock
    tb.allow()
    assert pr.Policy(pr.Timeout(10)).call(tb.acquire) is None
    assert clock() == pytest.approx(0.001)


def test_bulkhead_wait_is_capped() -> None:
    bh = pr.Bulkhead("dl", 1, max_wait_seconds=3600)
    bh.acquire()
    try:
        with pytest.raises(pr.BulkheadFullError):
            pr.Policy(pr.Timeout(SHORT), bh).call(lambda: 1)
        assert bh.metrics.waiting_count == 0 and bh.active_count == 1
    finally:
        bh.release()


def test_queue_put_and_get_are_capped() -> None:
    q: pr.BoundedQueue[int] = pr.BoundedQueue(1)
    with pytest.raises(pr.QueueEmptyError):
        in_deadline(q.get)  # block=True, timeout=None: forever without the deadline
    q.put(1)
    with pytest.raises(pr.QueueFullError):
        in_deadline(q.put, 2)
    assert q.get() == 1


def test_retry_sleep_beyond_the_deadline_gives_up_at_once() -> None:
    clock = pr.ManualClock()
    calls: List[int] = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    p = pr.Policy(pr.Timeout(SHORT), pr.Retry(max_attempts=5, base_delay=60, jitter=False, clock=clock))
    with pytest.raises(ConnectionError):
        p.call(down)
    assert calls == [1] and clock() == 0.0


def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    clock = pr.ManualClock()
    tb = pr.TokenBucket(1, 1 / 60, clock=clock)  # retry_after 60 s
    tb.allow()
    p = pr.Policy(pr.Timeout(SHORT), pr.Retry(max_attempts=5, base_delay=0.001, clock=clock), tb)
    with pytest.raises(pr.RateLimitExceeded):
        p.call(lambda: 1)
    assert clock() == 0.0


def test_the_deadline_does_not_leak_out_of_the_call() -> None:
    bh = pr.Bulkhead("after", 1, max_wait_seconds=0)
    pr.Policy(pr.Timeout(SHORT)).call(lambda: None)
    assert pr.deadline_remaining() is None
    assert _core.DEADLINE.get(None) is None
    with pytest.raises(pr.TimeoutExceeded):
        pr.Policy(pr.Timeout(0.001)).call(time.sleep, 0.01)
    assert _core.DEADLINE.get(None) is None
    assert bh.available == 1


# ---- async waits ----------------------------------------------------------------------


def test_async_limiter_and_bulkhead_and_queue_waits_are_capped() -> None:
    clock = pr.ManualClock()
    tb = pr.TokenBucket(1, 1 / 3600, clock=clock)
    tb.allow()
    bh = pr.Bulkhead("adl", 1, max_wait_seconds=3600)
    q: pr.BackpressureQueue[int] = pr.BackpressureQueue(1)

    async def main() -> None:
        with pytest.raises(pr.RateLimitExceeded):
            await in_deadline_async(tb.acquire_async)
        assert clock() == 0.0
        await bh.acquire_async()
        try:
            # capped at the deadline: the wait and the Timeout end together
            with pytest.raises((pr.BulkheadFullError, pr.TimeoutExceeded)):
                await pr.Policy(pr.Timeout(10), pr.Timeout(SHORT), bh).call_async(asyncio.sleep, 0)
        finally:
            bh.release()
        with pytest.raises((pr.QueueEmptyError, pr.TimeoutExceeded)):
            await in_deadline_async(q.get)
        # with no Timeout around it, the deadline still caps the wait
        token = _core.DEADLINE.set(time.monotonic_ns() + 10**7)
        try:
            with pytest.raises(pr.QueueEmptyError):
                await q.get()
            await bh.acquire_async()
            try:
                with pytest.raises(pr.BulkheadFullError):
                    await bh.acquire_async()
            finally:
                bh.release()
        finally:
            _core.DEADLINE.reset(token)
    asyncio.run(main())
    assert bh.active_count == 0 and bh.metrics.waiting_count == 0


# ---- cancellation ----------------------------------------------------------------------


def test_cancelled_calls_give_back_everything() -> None:
    clock = pr.ManualClock()
    breaker = pr.CircuitBreaker(failure_threshold=1, success_threshold=1, timeout_seconds=1, clock=clock)
    bh = pr.Bulkhead("cancel", 1, max_wait_seconds=3600)
    tb = pr.TokenBucket(2, 1 / 3600)  # real clock: the wait really sleeps
    limited = pr.Policy(breaker, pr.Limit(tb, wait=7200, n=2), bh)
    plain = pr.Policy(breaker, bh)

    async def cancel_after_start(p: pr.Policy, spins: int = 3) -> None:
        t = asyncio.ensure_future(p.call_async(asyncio.sleep, 3600))
        for _ in range(spins):
            await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    async def main() -> None:
        # half open: the trial slot and the bulkhead slot come back
        breaker.record_failure()
        clock.advance(2)
        for _ in range(10_000):
            await cancel_after_start(plain)
        assert breaker.metrics.half_open_in_flight == 0
        assert bh.active_count == 0 and bh.metrics.waiting_count == 0
        # a limiter wait that is cancelled takes nothing
        tb.allow()  # 1 of 2 left: n=2 waits (an hour)
        await cancel_after_start(limited, 1)
        assert tb.available >= 1  # nothing was taken
        # a waiter queued on a full bulkhead, cancelled, leaves no trace
        await bh.acquire_async()
        for _ in range(100):
            await cancel_after_start(plain)
        assert bh.metrics.waiting_count == 0 and bh.active_count == 1
        bh.release()
    asyncio.run(main())
    gc.collect()
    assert bh.active_count == 0
    assert bh.metrics.acquired_count == bh.metrics.released_count


# ---- Redis -------------------------------------------------------------------------------


redis_ok = _core.HAVE_REDIS and not os.environ.get("PRS_SKIP_REDIS")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if not redis_ok:
        pytest.skip("no Redis support in this build (or PRS_SKIP_REDIS)")
    from test_redis import Server
    s = Server()
    s.start()
    yield s.url
    s.stop()


def test_redis_acquire_is_capped(redis_url: str) -> None:
    backend = pr.RedisBackend(redis_url, timeout=2.0, connect_timeout=2.0)
    try:
        lim = pr.RedisRateLimiter(backend, rate=1 / 3600, burst=1, key_prefix=f"dl{os.getpid()}:")
        lim.allow("k")
        with pytest.raises(pr.RateLimitExceeded):
            in_deadline(lim.acquire, "k")
        with pytest.raises(pr.RateLimitExceeded):
            pr.Policy(pr.Timeout(SHORT), pr.Limit(lim, key="k", wait=7200)).call(lambda: 1)

        async def main() -> None:
            with pytest.raises(pr.RateLimitExceeded):
                await in_deadline_async(lim.acquire_async, "k")
        asyncio.run(main())
    finally:
        backend.close()


# ---- where a sync call's deadline lives (deadline.c: per-thread frames keyed by context) ----


def test_sync_deadline_is_seen_inside_the_call_and_in_contexts_entered_from_it() -> None:
    import contextvars
    import threading
    seen: dict = {}

    def inside() -> None:
        seen["var"] = _core.DEADLINE.get(None)  # not set: the frame holds it
        seen["left"] = pr.deadline_remaining()
        seen["copy"] = contextvars.copy_context().run(pr.deadline_remaining)
        seen["fresh"] = contextvars.Context().run(pr.deadline_remaining)
        t = threading.Thread(target=lambda: seen.__setitem__("thread", pr.deadline_remaining()))
        t.start()
        t.join()
        # a nested policy's Timeout takes the sooner deadline, and sees the outer one
        seen["nested"] = pr.Policy(pr.Timeout(3600)).call(pr.deadline_remaining)
    pr.Policy(pr.Timeout(60)).call(inside)
    assert seen["var"] is None
    assert 0 < seen["left"] <= 60
    assert 0 < seen["copy"] <= 60 and 0 < seen["fresh"] <= 60
    assert seen["thread"] is None  # another thread has its own frames
    assert 0 < seen["nested"] <= 60
    assert pr.deadline_remaining() is None


def test_sync_deadline_deeper_than_the_frames_uses_the_context_variable() -> None:
    depth = 40  # more than the 32 frames of a thread
    policy = pr.Policy(pr.Timeout(60))
    lefts: List[Any] = []

    def down(n: int) -> None:
        lefts.append((pr.deadline_remaining(), _core.DEADLINE.get(None) is not None))
        if n:
            policy.call(down, n - 1)
    policy.call(down, depth)
    assert all(left is not None and 0 < left <= 60 for left, _ in lefts)
    assert lefts[0][1] is False and lefts[-1][1] is True  # the deepest ones in the variable
    assert pr.deadline_remaining() is None and _core.DEADLINE.get(None) is None


def test_sync_deadlines_of_greenlets_stay_apart() -> None:
    greenlet = pytest.importorskip("greenlet")
    log: List[Any] = []
    hub = greenlet.getcurrent()

    def task(name: str, seconds: float) -> Any:
        def body() -> Any:
            log.append((name, "in", pr.deadline_remaining()))
            hub.switch()  # like a blocking call under gevent: another greenlet runs
            log.append((name, "back", pr.deadline_remaining()))
            return name
        return pr.Policy(pr.Timeout(seconds)).call(body)

    a = greenlet.greenlet(lambda: task("a", 100))
    b = greenlet.greenlet(lambda: task("b", 1000))
    a.switch()
    b.switch()
    assert pr.deadline_remaining() is None  # the hub sees neither
    a.switch()  # a ends first: its frame is below b's
    assert pr.deadline_remaining() is None
    b.switch()
    assert pr.deadline_remaining() is None
    got = {(n, w): left for n, w, left in log}
    assert all(90 < got[("a", w)] <= 100 for w in ("in", "back"))
    assert all(900 < got[("b", w)] <= 1000 for w in ("in", "back"))
    # the frames were all given back: a new call starts from none
    assert pr.Policy(pr.Timeout(5)).call(pr.deadline_remaining) <= 5
