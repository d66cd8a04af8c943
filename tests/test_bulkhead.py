"""Bulkhead: the reference usage (ServiceClient awaiting execute), limits under
threads and asyncio, FIFO across both, cancellation and timeouts giving permits
back exactly once, Ctrl-C, fork, bad input, GC, typing."""
from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import signal
import subprocess
import sys
import threading
import time
import _thread
import weakref
from pathlib import Path

import pytest

import pyresilience as pr
from forkcheck import HoldGIL, in_child, needs_gil, wait_until
from pyresilience import Bulkhead, BulkheadFullError, ResilienceError


def run(coro):
    return asyncio.run(coro)


# ---- the reference usage -----------------------------------------------------------

class ServiceClient:
    """The reference design's example: one bulkhead per dependency."""

    def __init__(self) -> None:
        self.db_bulkhead = Bulkhead("database", max_concurrent=10)
        self.api_bulkhead = Bulkhead("external_api", max_concurrent=5)
        self.cache_bulkhead = Bulkhead("cache", max_concurrent=20)
        self.peak = {"database": 0, "external_api": 0, "cache": 0}
        self.inside = {"database": 0, "external_api": 0, "cache": 0}

    async def _run(self, name: str, value: str) -> str:
        self.inside[name] += 1
        self.peak[name] = max(self.peak[name], self.inside[name])
        await asyncio.sleep(0.001)
        self.inside[name] -= 1
        return f"{name}:{value}"

    async def query_database(self, query: str) -> str:
        return await self.db_bulkhead.execute(self._run, "database", query)

    async def call_external_api(self, endpoint: str) -> str:
        return await self.api_bulkhead.execute(self._run, "external_api", endpoint)

    async def get_from_cache(self, key: str) -> str:
        return await self.cache_bulkhead.execute(self._run, "cache", key)


def test_reference_service_client():
    async def main():
        client = ServiceClient()
        results = await asyncio.gather(
            *[client.query_database(f"q{i}") for i in range(30)],
            *[client.call_external_api(f"e{i}") for i in range(30)],
            *[client.get_from_cache(f"k{i}") for i in range(30)])
        assert results[0] == "database:q0" and results[30] == "external_api:e0"
        assert results[89] == "cache:k29"
        assert client.peak == {"database": 10, "external_api": 5, "cache": 20}
        for b in (client.db_bulkhead, client.api_bulkhead, client.cache_bulkhead):
            assert b.active_count == 0 and b.rejected_count == 0
            assert b.available == b.max_concurrent
    run(main())


def test_execute_plain_function_runs_in_own_pool():
    b = Bulkhead("pool", 3)
    names = []
    lock = threading.Lock()
    inside = [0, 0]

    def work(x):
        with lock:
            names.append(threading.current_thread().name)
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        time.sleep(0.005)
        with lock:
            inside[0] -= 1
        return x * 2

    async def main():
        return await asyncio.gather(*[b.execute(work, i) for i in range(12)])

    assert run(main()) == [i * 2 for i in range(12)]
    assert all(n.startswith("bulkhead-pool") for n in names)
    assert inside[1] <= 3
    assert b.available == 3
    b.shutdown()


def test_full_error_message_and_counts():
    b = Bulkhead("api", 2, max_wait_seconds=0)

    async def main():
        gate = asyncio.Event()

        async def hold():
            await gate.wait()

        tasks = [asyncio.ensure_future(b.execute(hold)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(BulkheadFullError) as ei:
            await b.execute(hold)
        assert str(ei.value) == "Bulkhead 'api' is full (2 concurrent operations)"
        assert isinstance(ei.value, ResilienceError)
        assert ei.value.name == "api"
        assert b.rejected_count == 1
        gate.set()
        await asyncio.gather(*tasks)
        # now a hold time is known: retry_after is estimated
        tasks = [asyncio.ensure_future(b.execute(hold)) for _ in range(2)]
        gate.clear()
        await asyncio.sleep(0)
        with pytest.raises(BulkheadFullError) as ei:
            await b.execute(hold)
        assert ei.value.retry_after is not None and ei.value.retry_after >= 0
        gate.set()
        await asyncio.gather(*tasks)
    run(main())
    assert b.rejected_count == 2
    assert b.available == 2


def test_fail_fast_sync_and_retry_after_prior():
    b = Bulkhead("x", 1, max_wait_seconds=0)
    b.acquire()
    with pytest.raises(BulkheadFullError) as ei:
        b.acquire()
    # nothing released yet: the prior mean hold of 1 s, times (0 waiting + 1) / 1 slot
    assert ei.value.retry_after == 1.0
    with pytest.raises(BulkheadFullError) as ei:
        with b:
            pass
    assert ei.value.retry_after == 1.0
    assert b.rejected_count == 2
    assert b.metrics.average_hold_seconds is None  # the metrics report only what was observed
    b.release()
    assert b.available == 1


def test_retry_after_prior_scales_like_the_estimate():
    """The prior goes through the same formula as an observed mean hold:
    hold * (waiting + 1) / max_concurrent; once a slot was released the
    observed mean hold replaces it."""
    b = Bulkhead("scaled", 4, max_wait_seconds=math.inf)
    for _ in range(4):
        b.acquire()
    with pytest.raises(BulkheadFullError) as ei:
        b.acquire(timeout=0)
    assert ei.value.retry_after == 0.25

    async def main():
        waiters = [asyncio.ensure_future(b.acquire_async()) for _ in range(3)]
        await asyncio.sleep(0)
        assert b.waiting_count == 3
        with pytest.raises(BulkheadFullError) as ei:
            b.acquire(timeout=0)
        assert ei.value.retry_after == 1.0  # 1 s * (3 + 1) / 4
        with pytest.raises(BulkheadFullError) as ei:
            await b.acquire_async(timeout=0)
        assert ei.value.retry_after == 1.0
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    run(main())
    assert b.waiting_count == 0
    b.release()  # the first observed hold
    b.acquire()
    with pytest.raises(BulkheadFullError) as ei:
        b.acquire(timeout=0)
    observed = b.metrics.average_hold_seconds
    assert observed is not None
    assert ei.value.retry_after == pytest.approx(observed / 4, abs=1e-9)
    assert isinstance(ei.value.retry_after, float) and math.isfinite(ei.value.retry_after)
    for _ in range(4):
        b.release()


# ---- threads ------------------------------------------------------------------------

def test_sync_forms():
    b = Bulkhead("s", 2)
    assert b.call(lambda a, k=0: a + k, 1, k=2) == 3
    with b as got:
        assert got is b and b.active_count == 1 and b.available == 1
    assert b.try_acquire() and b.try_acquire() and not b.try_acquire()
    assert b.rejected_count == 0  # try_acquire is not a rejection
    b.release()
    b.release()
    with pytest.raises(RuntimeError):
        b.release()

    @b
    def f(x):
        assert b.active_count == 1
        return x + 1

    assert f(1) == 2 and f.__name__ == "f"

    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    assert b.available == 2


def test_threads_never_exceed_limit():
    b = Bulkhead("t", 3, max_wait_seconds=math.inf)
    inside = [0]
    peak = [0]
    lock = threading.Lock()

    def worker():
        for _ in range(300):
            with b:
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                with lock:
                    inside[0] -= 1

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert peak[0] <= 3
    m = b.metrics
    assert m.available == 3 and m.acquired_count == 2400 and m.released_count == 2400
    assert m.rejected_count == 0 and m.waiting_count == 0


def test_sync_timeout_waits_then_rejects():
    b = Bulkhead("w", 1, max_wait_seconds=0.02)
    b.acquire()
    with pytest.raises(BulkheadFullError):
        b.acquire()
    with pytest.raises(BulkheadFullError):
        b.acquire(timeout=0.001)
    assert b.rejected_count == 2 and b.waiting_count == 0
    # a thread waiting gets the slot when it is released
    got = []
    t = threading.Thread(target=lambda: (b.acquire(timeout=None), got.append(1), b.release()))
    t.start()
    while b.waiting_count == 0:
        time.sleep(0.001)
    b.release()
    t.join()
    assert got == [1] and b.available == 1


def test_ten_thousand_timed_out_sync_waiters():
    b = Bulkhead("many", 4, max_wait_seconds=0)
    for _ in range(4):
        b.acquire()
    for _ in range(10_000):
        with pytest.raises(BulkheadFullError):
            b.acquire()
    # and 10^4 real waits that time out, from 8 threads at once
    errors = []

    def waiter():
        for _ in range(1_250):
            try:
                b.acquire(timeout=0.0002)
                errors.append("acquired")
            except BulkheadFullError:
                pass

    ts = [threading.Thread(target=waiter) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert b.rejected_count == 10_000 + 10_000
    for _ in range(4):
        b.release()
    assert b.available == b.max_concurrent == 4
    assert b.waiting_count == 0 and b.active_count == 0


def test_ctrl_c_interrupts_sync_wait():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    b = Bulkhead("sig", 1, max_wait_seconds=math.inf)
    b.acquire()
    timer = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        b.acquire()
    assert time.monotonic() - t0 < 5
    timer.join()
    assert b.waiting_count == 0 and b.active_count == 1
    b.release()
    assert b.available == 1


def _enter_with(b):
    with b:
        pass


@pytest.mark.parametrize("take", [Bulkhead.acquire, _enter_with, lambda b: b.call(int)],
                         ids=["acquire", "with", "call"])
def test_ctrl_c_in_the_slice_of_the_hand_over_takes_nothing(take):
    """The signal lands first, then a slot is handed to the blocked acquire()
    in the same wait slice: acquire() raises KeyboardInterrupt and the slot it
    was handed goes back (an interrupted wait takes nothing), every round."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    b = Bulkhead("sigslice", 1, max_wait_seconds=math.inf)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = 0
    try:
        for _ in range(300):
            assert b.try_acquire()  # held here, released by the helper

            def helper():
                wait_until(lambda: b.waiting_count == 1)
                _thread.interrupt_main()  # Ctrl-C first...
                b.release()               # ...then the hand-over, before the waiter wakes

            t = threading.Thread(target=helper)
            t.start()
            try:
                take(b)
            except KeyboardInterrupt:
                interrupted += 1
            else:  # never: the signal was pending when the slot came
                if take is Bulkhead.acquire:
                    b.release()
            t.join()
            assert (b.available, b.active_count, b.waiting_count) == (1, 0, 0)
    finally:
        signal.signal(signal.SIGINT, old)
    assert interrupted == 300
    assert b.metrics.cancelled_count == 300  # each hand-over given back


def test_ctrl_c_in_the_slice_of_the_hand_over_passes_it_on():
    """The slot an interrupted waiter gives back goes to the next waiter."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    b = Bulkhead("sigpass", 1, max_wait_seconds=math.inf)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    got = threading.Event()
    try:
        assert b.try_acquire()

        def second():
            try:
                b.acquire(timeout=10)  # bounded: a leaked slot must fail the test, not hang it
            except BulkheadFullError:
                return
            got.set()

        def helper():
            wait_until(lambda: b.waiting_count == 1)
            other.start()
            wait_until(lambda: b.waiting_count == 2)
            _thread.interrupt_main()
            b.release()

        other = threading.Thread(target=second)
        t = threading.Thread(target=helper)
        t.start()
        with pytest.raises(KeyboardInterrupt):
            b.acquire()
        t.join()
        other.join()
        assert got.is_set()
        assert (b.active_count, b.waiting_count) == (1, 0)
        b.release()
        assert b.available == 1
        assert b.metrics.cancelled_count == 1
    finally:
        signal.signal(signal.SIGINT, old)


# ---- asyncio ------------------------------------------------------------------------

def test_async_with_and_decorator():
    b = Bulkhead("a", 2)

    @b
    async def job(x):
        assert b.active_count >= 1
        await asyncio.sleep(0)
        return x

    async def main():
        async with b:
            assert b.active_count == 1
        assert await asyncio.gather(*[job(i) for i in range(10)]) == list(range(10))
        with pytest.raises(KeyError):
            async with b:
                raise KeyError("x")
    run(main())
    assert b.available == 2


def test_fifo_across_threads_and_tasks():
    b = Bulkhead("fifo", 1, max_wait_seconds=math.inf)
    order = []

    async def main():
        loop = asyncio.get_running_loop()
        b.acquire()

        def thread_waiter(tag):
            b.acquire()
            order.append(tag)
            b.release()

        t1 = threading.Thread(target=thread_waiter, args=("thread1",))
        t1.start()
        while b.waiting_count < 1:
            await asyncio.sleep(0.001)

        async def task_waiter(tag):
            async with b:
                order.append(tag)
                await asyncio.sleep(0.001)

        a1 = asyncio.ensure_future(task_waiter("task1"))
        await asyncio.sleep(0)
        t2 = threading.Thread(target=thread_waiter, args=("thread2",))
        t2.start()
        while b.waiting_count < 3:
            await asyncio.sleep(0.001)
        a2 = asyncio.ensure_future(task_waiter("task2"))
        await asyncio.sleep(0)
        assert b.waiting_count == 4
        b.release()
        await asyncio.gather(a1, a2)
        await loop.run_in_executor(None, t1.join)
        await loop.run_in_executor(None, t2.join)

    run(main())
    assert order == ["thread1", "task1", "thread2", "task2"]
    assert b.available == 1


def test_ten_thousand_cancelled_async_waiters():
    b = Bulkhead("cancel", 3, max_wait_seconds=math.inf)

    async def main():
        for _ in range(3):
            await b.acquire_async()
        tasks = [asyncio.ensure_future(b.acquire_async()) for _ in range(10_000)]
        await asyncio.sleep(0)
        assert b.waiting_count == 10_000
        # hand permits to the first waiters, then cancel everyone before they run
        b.release()
        b.release()
        for t in tasks[5000:]:
            t.cancel()
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        res = await asyncio.gather(*tasks, return_exceptions=True)
        # the two served waiters ran during sleep(0): they hold their permits
        assert res[:2] == [None, None]
        assert all(isinstance(r, asyncio.CancelledError) for r in res[2:])
        assert b.active_count == 3
        for _ in range(3):
            b.release()
    run(main())
    m = b.metrics
    assert b.available == b.max_concurrent == 3
    assert m.waiting_count == 0 and m.active_count == 0
    assert m.acquired_count == m.released_count
    assert m.rejected_count == 0


def test_async_timeout_rejects_and_counts():
    b = Bulkhead("to", 1, max_wait_seconds=0.01)

    async def main():
        await b.acquire_async()
        with pytest.raises(BulkheadFullError):
            await b.acquire_async()
        with pytest.raises(BulkheadFullError):
            await b.acquire_async(timeout=0)
        b.release()
        await b.acquire_async(timeout=None)
        b.release()
    run(main())
    assert b.rejected_count == 2 and b.available == 1 and b.waiting_count == 0


def test_cancel_running_async_call_returns_permit():
    b = Bulkhead("run", 1)

    async def main():
        started = asyncio.Event()

        async def slow():
            started.set()
            await asyncio.sleep(10)

        t = asyncio.ensure_future(b.execute(slow))
        await started.wait()
        assert b.active_count == 1
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert b.available == 1

        # a thread-pool call: the permit comes back when the thread finishes
        ev = threading.Event()
        t = asyncio.ensure_future(b.execute(ev.wait, 5))
        while b.active_count == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert b.active_count == 1  # the thread still runs
        ev.set()
        while b.active_count:
            await asyncio.sleep(0.001)
    run(main())
    assert b.available == 1
    b.shutdown()


def test_exception_in_function_returns_permit():
    b = Bulkhead("exc", 1)

    async def boom():
        raise ValueError("x")

    def boom_sync():
        raise KeyError("y")

    async def main():
        with pytest.raises(ValueError):
            await b.execute(boom)
        with pytest.raises(KeyError):
            await b.execute(boom_sync)
    run(main())
    assert b.available == 1
    b.shutdown()


def test_release_from_thread_wakes_async_waiter():
    b = Bulkhead("xt", 1, max_wait_seconds=5)

    async def main():
        b.acquire()
        threading.Timer(0.01, b.release).start()
        await b.acquire_async()
        assert b.active_count == 1
        b.release()
    run(main())
    assert b.available == 1


def test_async_waiter_settles_once_through_its_owner():
    # _AsyncWaiter.finish(cancel): the waiter knows its owner; the first call
    # settles it, a later one finds it settled (a slot is never given twice).
    from pyresilience._wait import new_waiter
    b = Bulkhead("finish-once", 1, max_wait_seconds=math.inf)
    b.acquire()

    async def main():
        w = b._acquire_async(new_waiter, True)
        assert type(w) is pr._core._AsyncWaiter and b.waiting_count == 1
        b.release()  # handed to the waiter
        assert w.future.done() and b.active_count == 1
        assert w.finish(True) is False  # given back
        assert (b.active_count, b.waiting_count) == (0, 0)
        assert w.finish() is False and b.available == 1
        with pytest.raises(TypeError, match=r"^finish\(\) takes at most 1 positional argument \(2 given\)$"):
            w.finish(True, False)
        # _acquire_async and finish are declared: the binding's parser words a bad call
        with pytest.raises(TypeError, match=r"^_acquire_async\(\) missing required argument 'wait'$"):
            b._acquire_async(new_waiter)
    run(main())


def test_waiter_of_a_closed_loop_gives_its_slot_back():
    # Served after its loop closed: the wake (new_waiter's) raises, which is
    # reported as unraisable, and the slot handed to the waiter comes back.
    b = Bulkhead("closed-loop", 1, max_wait_seconds=math.inf)
    b.acquire()
    loop = asyncio.new_event_loop()
    t = loop.create_task(b.acquire_async())
    while b.waiting_count == 0:
        loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    unraisable = []
    old, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(u.exc_type)
    try:
        b.release()
    finally:
        sys.unraisablehook = old
    assert unraisable == [RuntimeError]
    assert (b.available, b.waiting_count, b.active_count) == (1, 0, 0)
    assert not t.done()


# ---- bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("args,exc", [
    (("", 1), ValueError),
    ((None, 1), TypeError),
    ((b"x", 1), TypeError),
    (("x", 0), ValueError),
    (("x", -1), ValueError),
    (("x", 1.5), ValueError),
    (("x", True), TypeError),
    (("x", "2"), TypeError),
    (("x", 1, -1.0), ValueError),
    (("x", 1, float("nan")), ValueError),
    (("x", 1, "1"), TypeError),
])
def test_bad_construction(args, exc):
    with pytest.raises(exc) as ei:
        Bulkhead(*args)
    if exc is ValueError and args[0] == "x":
        assert ("max_concurrent" in str(ei.value)) or ("max_wait_seconds" in str(ei.value))


def test_bad_max_concurrent_words_the_core_rule():
    for bad in (0, -1, 10 ** 9 + 1, 10 ** 30, 0.0):
        with pytest.raises(ValueError) as ei:
            Bulkhead("x", bad)
        assert str(ei.value) == f"max_concurrent must be between 1 and 1000000000, got {bad!r}"


def test_lazy_pools_start_on_use_and_again_after_shutdown():
    # Bulkhead.execute's pool and Timeout(thread=True)'s: started by the first
    # use, named by their owner, stopped by shutdown(), started anew after it
    b = Bulkhead("lazy", 2)
    t = pr.Timeout(5, thread=True)
    p = pr.Policy(t)
    name = lambda: threading.current_thread().name  # noqa: E731
    for _ in range(2):
        assert b._executor is None and t._executor is None
        assert run(b.execute(name)).startswith("bulkhead-lazy")
        assert p.call(name).startswith("pyresilience-timeout")
        first = (b._executor, t._executor)
        assert None not in first
        assert run(b.execute(name)) and p.call(name) and (b._executor, t._executor) == first
        b.shutdown()
        t.shutdown()
    b.shutdown()  # nothing running: a no-op
    t.shutdown()


def test_built_when_made_and_subclassed():
    """The C bulkhead is built from the constructor's arguments when made: a
    subclass taking the same arguments works unchanged, and __init__ never
    builds it again."""
    class Tagged(Bulkhead):
        def __init__(self, name: str, max_concurrent: int, max_wait_seconds: float = 30.0) -> None:
            super().__init__(name, max_concurrent, max_wait_seconds)
            self.tag = name.upper()

    t = Tagged("db", 2, max_wait_seconds=0)
    assert (t.tag, t.max_concurrent, t.max_wait_seconds) == ("DB", 2, 0.0)
    assert run(t.execute(lambda: 7)) == 7
    t.acquire()
    t.__init__("other", 9)
    assert (t.name, t.max_concurrent, t.active_count) == ("db", 2, 1)
    t.release()
    t.shutdown()


def test_bad_timeouts():
    b = Bulkhead("x", 1)
    for bad, exc in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError)):
        with pytest.raises(exc, match="timeout"):
            b.acquire(timeout=bad)

        async def main():
            with pytest.raises(exc, match="timeout"):
                await b.acquire_async(timeout=bad)
        run(main())
    assert b.available == 1 and b.rejected_count == 0


def test_max_wait_inf_and_properties():
    b = Bulkhead("p", 5, max_wait_seconds=math.inf)
    assert b.max_wait_seconds == math.inf
    assert (b.name, b.max_concurrent, b.available, b.waiting_count) == ("p", 5, 5, 0)
    assert repr(b) == "Bulkhead(name='p', max_concurrent=5, max_wait_seconds=inf)"


def test_repr_is_the_configuration():
    b = Bulkhead("db", 3, max_wait_seconds=2.5)
    b.acquire()
    assert repr(b) == "Bulkhead(name='db', max_concurrent=3, max_wait_seconds=2.5)"
    b.release()

    class Mine(Bulkhead):
        pass
    assert repr(Mine("m", 1, 0)) == "Mine(name='m', max_concurrent=1, max_wait_seconds=0.0)"
    # Built when made (tp_new): no half-made object exists to repr.
    made = Bulkhead.__new__(Bulkhead, "n", 2)
    assert repr(made) == "Bulkhead(name='n', max_concurrent=2, max_wait_seconds=30.0)"
    made.acquire()
    assert made.active_count == 1
    with pytest.raises(TypeError):
        Bulkhead.__new__(Bulkhead)


def test_metrics_are_a_frozen_public_snapshot():
    import dataclasses
    b = Bulkhead("snap", 2, max_wait_seconds=0)
    b.acquire()
    m = b.metrics
    assert type(m) is pr.BulkheadMetrics
    assert type(m).__module__.startswith("pyresilience") and "_core" not in type(m).__module__
    assert not type(m).__module__.split(".")[-1].startswith("_")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.active_count = 0  # type: ignore[misc]
    b.release()
    assert m.active_count == 1 and b.metrics.active_count == 0  # a snapshot
    assert repr(m).startswith("BulkheadMetrics(name='snap', max_concurrent=2, active_count=1")
    assert [f.name for f in dataclasses.fields(m)] == [
        "name", "max_concurrent", "active_count", "available", "waiting_count", "acquired_count",
        "released_count", "rejected_count", "cancelled_count", "average_hold_seconds",
        "waited_count", "held_seconds_total"]


# ---- fork -------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@needs_gil
def test_fork_while_threads_wait_child_bulkhead_works():
    b = Bulkhead("forked", 3, max_wait_seconds=math.inf)
    assert run(b.execute(lambda: 1)) == 1  # the parent's thread pool exists now
    for _ in range(3):
        assert b.try_acquire()
    got = []
    go = threading.Event()

    def waiter(tag):
        b.acquire(timeout=30)
        got.append(tag)
        go.wait(30)
        b.release()

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(2)]
    for i, t in enumerate(threads):
        t.start()
        wait_until(lambda: b.waiting_count == i + 1)

    def check():
        m = b.metrics
        assert (b.available, b.active_count, b.waiting_count) == (1, 2, 0), m
        assert (m.acquired_count, m.released_count, m.cancelled_count) == (4, 2, 2), m
        b.acquire(timeout=5)
        assert not b.try_acquire()
        with pytest.raises(BulkheadFullError):
            b.acquire(timeout=0.01)
        for _ in range(3):
            b.release()
        assert b.available == 3
        with pytest.raises(RuntimeError):
            b.release()
        for _ in range(2):  # threads of the child
            ts = [threading.Thread(target=lambda: [b.acquire(timeout=5) or b.release() for _ in range(200)])
                  for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        with b:
            assert b.active_count == 1
        assert run(b.execute(lambda: 42)) == 42  # a new thread pool

        async def am():
            async with b:
                return b.active_count
        assert run(am()) == 1
        m = b.metrics
        assert (b.available, m.acquired_count - m.released_count, m.rejected_count) == (3, 0, 1), m
        return "ok"

    with HoldGIL():  # the slot released is handed to thread 0, which cannot settle before the fork
        out = in_child(check, before=b.release)
    assert out == "'ok'"
    # The parent is untouched: thread 0 holds its slot, thread 1 still waits.
    wait_until(lambda: got == [0])
    assert b.waiting_count == 1
    b.release()
    wait_until(lambda: got == [0, 1])
    go.set()
    for t in threads:
        t.join()
    b.release()
    assert b.available == 3
    b.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_keeps_asyncio_waiters_for_a_loop_the_child_runs():
    # asyncio waiters stay queued in the child: a loop that is not running at
    # the fork can be run there, and serves them.
    b = Bulkhead("forked-async", 1, max_wait_seconds=math.inf)
    b.acquire()
    order = []

    async def task():
        async with b:
            order.append("task")

    loop = asyncio.new_event_loop()
    try:
        t = loop.create_task(task())
        while b.waiting_count == 0:
            loop.run_until_complete(asyncio.sleep(0))

        def check():
            b.release()  # to the task, woken through its loop
            loop.run_until_complete(asyncio.wait_for(t, 5))
            return order, b.available, b.waiting_count

        assert in_child(check) == "(['task'], 1, 0)"
        assert order == [] and b.waiting_count == 1
        b.release()
        loop.run_until_complete(asyncio.wait_for(t, 5))
        assert order == ["task"] and b.available == 1
    finally:
        loop.close()


# ---- GC, signatures, typing ---------------------------------------------------------

def test_collectable():
    def make():
        b = Bulkhead("gc", 2)

        async def main():
            await b.execute(lambda: 1)
        run(main())
        b.shutdown()
        b.self_ref = b  # a cycle
        return weakref.ref(b)
    ref = make()
    gc.collect()
    assert ref() is None


def test_signatures():
    for fn in (Bulkhead.acquire, Bulkhead.release, Bulkhead.try_acquire, Bulkhead.execute,
               Bulkhead.call, Bulkhead.acquire_async, pr._core.Bulkhead.__enter__):
        inspect.signature(fn)
        assert fn.__doc__
    assert list(inspect.signature(Bulkhead).parameters) == ["name", "max_concurrent", "max_wait_seconds",
                                                          "shared"]


def test_mypy_passes_on_example():
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_bulkhead_queues.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_typing_example_runs():
    example = Path(__file__).parent / "typing" / "example_bulkhead_queues.py"
    exec(compile(example.read_text(), str(example), "exec"), {"__name__": "example"})


def test_no_waiter_left_behind():
    """Every async waiter object is freed after grants, timeouts and cancellations."""
    b = Bulkhead("leak", 1, max_wait_seconds=0.001)
    q = pr.BackpressureQueue(1, block_timeout=0.001)

    async def main():
        await b.acquire_async()
        await asyncio.gather(*[b.acquire_async() for _ in range(50)], return_exceptions=True)
        ts = [asyncio.ensure_future(b.acquire_async(timeout=None)) for _ in range(50)]
        await asyncio.sleep(0)
        b.release()
        ts[1].cancel()
        await asyncio.sleep(0)
        for t in ts:
            t.cancel()
        res = await asyncio.gather(*ts, return_exceptions=True)
        for r in res:
            if r is None:
                b.release()
        await q.put(1)
        await asyncio.gather(*[q.put(i) for i in range(20)])
        gs = [asyncio.ensure_future(q.get()) for _ in range(20)]
        await asyncio.sleep(0)
        for g in gs:
            g.cancel()
        await asyncio.gather(*gs, return_exceptions=True)
    run(main())
    gc.collect()
    assert [o for o in gc.get_objects() if type(o) is pr._core._AsyncWaiter] == []
    assert b.available == 1 and b.waiting_count == 0
    assert q.qsize() + q.metrics.items_processed == 1


def test_threads_and_tasks_share_permits():
    b = Bulkhead("mixed", 2, max_wait_seconds=math.inf)
    inside = [0, 0]
    lock = threading.Lock()

    def enter():
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])

    def leave():
        with lock:
            inside[0] -= 1

    def thread_worker():
        for _ in range(200):
            with b:
                enter()
                leave()

    async def task_worker():
        for _ in range(200):
            async with b:
                enter()
                await asyncio.sleep(0)
                leave()

    async def main():
        ts = [threading.Thread(target=thread_worker) for _ in range(3)]
        for t in ts:
            t.start()
        await asyncio.gather(*[task_worker() for _ in range(3)])
        loop = asyncio.get_running_loop()
        for t in ts:
            await loop.run_in_executor(None, t.join)
    run(main())
    assert inside[1] <= 2
    m = b.metrics
    assert m.available == 2 and m.acquired_count == m.released_count == 1200
