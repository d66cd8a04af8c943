"""Backpressure queues: the reference semantics per strategy (asyncio), the
thread form, close and iteration, watermarks, producers x consumers with exact
accounting, cancellation, reference leaks, Ctrl-C, fork, bad input, GC."""
from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import queue
import signal
import sys
import threading
import time
import tracemalloc
import weakref

import pytest

import pyresilience as pr
from forkcheck import HoldGIL, in_child, needs_gil, wait_until
from pyresilience import (
    BackpressureMetrics,
    BackpressureQueue,
    BackpressureStrategy,
    BoundedQueue,
    QueueClosedError,
    QueueEmptyError,
    QueueFullError,
    ResilienceError,
)

S = BackpressureStrategy
PRS_RING_MAX = 2 ** 30


def run(coro):
    return asyncio.run(coro)


# ---- the reference semantics (asyncio) ------------------------------------------------

def test_strategy_enum_and_metrics_type():
    assert [s.value for s in S] == ["block", "drop_oldest", "drop_newest", "error"]
    assert S("drop_oldest") is S.DROP_OLDEST
    m = BackpressureMetrics()
    assert (m.items_received, m.items_processed, m.items_dropped, m.producer_blocked_count) == (0, 0, 0, 0)


def test_reference_block():
    async def main():
        q = BackpressureQueue(max_size=2, strategy=S.BLOCK, block_timeout=0.05)
        assert await q.put(1) and await q.put(2)
        assert q.fill_ratio == 1.0
        assert await q.put(3) is False  # waited block_timeout, then dropped
        m = q.metrics
        assert (m.items_received, m.items_dropped, m.producer_blocked_count) == (3, 1, 1)
        # a consumer frees room while the producer waits: the put succeeds
        putter = asyncio.ensure_future(q.put(4))
        await asyncio.sleep(0)
        assert await q.get() == 1
        assert await putter is True
        assert [await q.get(), await q.get()] == [2, 4]
        m = q.metrics
        assert (m.items_received, m.items_processed, m.items_dropped, m.producer_blocked_count) == (4, 3, 1, 2)
        assert q.fill_ratio == 0.0
    run(main())


def test_reference_drop_oldest():
    async def main():
        q = BackpressureQueue(2, S.DROP_OLDEST)
        assert [await q.put(i) for i in range(5)] == [True] * 5
        assert [await q.get(), await q.get()] == [3, 4]
        m = q.metrics
        assert (m.items_received, m.items_processed, m.items_dropped, m.producer_blocked_count) == (5, 2, 3, 0)
    run(main())


def test_reference_drop_newest():
    async def main():
        q = BackpressureQueue(2, S.DROP_NEWEST)
        assert [await q.put(i) for i in range(4)] == [True, True, False, False]
        assert [await q.get(), await q.get()] == [0, 1]
        assert q.metrics == BackpressureMetrics(4, 2, 2, 0)
    run(main())


def test_reference_error():
    async def main():
        q = BackpressureQueue(1, S.ERROR)
        assert await q.put("a")
        with pytest.raises(QueueFullError, match="^Queue is full$") as ei:
            await q.put("b")
        assert isinstance(ei.value, ResilienceError)
        assert await q.get() == "a"
        assert q.metrics == BackpressureMetrics(2, 1, 1, 0)
    run(main())


def test_reference_defaults_and_strings():
    q = BackpressureQueue(3)
    assert q.strategy is S.BLOCK and q.block_timeout == 30.0 and q.max_size == 3
    q2 = BackpressureQueue(3, "drop_newest")
    assert q2.strategy is S.DROP_NEWEST
    assert list(inspect.signature(BackpressureQueue).parameters)[:3] == ["max_size", "strategy", "block_timeout"]


def test_async_get_waits_for_put():
    async def main():
        q = BackpressureQueue(4)
        getters = [asyncio.ensure_future(q.get()) for _ in range(3)]
        await asyncio.sleep(0)
        for i in range(3):
            await q.put(i)
        assert await asyncio.gather(*getters) == [0, 1, 2]  # FIFO hand-off
        with pytest.raises(QueueEmptyError):
            await q.get(timeout=0.01)
        assert q.metrics.items_processed == 3
    run(main())


def test_thread_producer_wakes_async_consumer():
    async def main():
        q = BackpressureQueue(2)
        t = threading.Timer(0.01, q.put_nowait, args=("from-thread",))
        t.start()
        assert await q.get() == "from-thread"
        t.join()
    run(main())


# ---- the thread form --------------------------------------------------------------

def test_bounded_queue_basics():
    q = BoundedQueue(3)
    assert q.empty() and not q.full() and len(q) == 0 and q.qsize() == 0
    assert q.put(1) and q.put(2, timeout=0.1) and q.put_nowait(3)
    assert q.full() and len(q) == 3 and q.fill_ratio == 1.0
    with pytest.raises(QueueFullError):
        q.put_nowait(4)
    # queue.Queue's rule: a BLOCK put that finds no room raises Full
    with pytest.raises(queue.Full):
        q.put(4, timeout=0)
    with pytest.raises(QueueFullError):
        q.put(5, timeout=0.01)
    with pytest.raises(queue.Full):
        q.put(5, block=False)
    assert [q.get(), q.get_nowait(), q.get(timeout=1)] == [1, 2, 3]
    with pytest.raises(QueueEmptyError):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get(False)
    m = q.metrics
    assert (m.items_received, m.items_processed, m.items_dropped, m.producer_blocked_count) == (7, 3, 4, 1)
    assert q.maxsize == 3


@pytest.mark.parametrize("strategy,expect_put,expect_items", [
    (S.DROP_OLDEST, [True] * 4, [2, 3]),
    (S.DROP_NEWEST, [True, True, False, False], [0, 1]),
])
def test_bounded_queue_drop_strategies(strategy, expect_put, expect_items):
    q = BoundedQueue(2, strategy)
    assert [q.put(i) for i in range(4)] == expect_put
    assert [q.get_nowait() for _ in range(2)] == expect_items
    assert q.metrics.items_dropped == 2


def test_blocked_put_proceeds_when_consumer_takes():
    q = BoundedQueue(1, block_timeout=math.inf)
    q.put("a")
    threading.Timer(0.01, q.get).start()
    assert q.put("b") is True
    assert q.get() == "b"


# ---- close and iteration -------------------------------------------------------------

def test_close_sync():
    q = BoundedQueue(3, block_timeout=math.inf)
    q.put(1)
    q.put(2)
    q.close()
    q.close()
    assert q.closed
    with pytest.raises(QueueClosedError):
        q.put(3)
    with pytest.raises(QueueClosedError):
        q.put_nowait(3)
    assert list(q) == [1, 2]
    with pytest.raises(QueueClosedError):
        q.get()
    with pytest.raises(QueueClosedError):
        q.get_nowait()
    assert q.metrics.items_received == 2


def test_close_wakes_blocked_threads():
    q = BoundedQueue(1, block_timeout=math.inf)
    q.put("x")
    results = []

    def producer():
        try:
            q.put("y")
        except QueueClosedError:
            results.append("producer-closed")

    p = threading.Thread(target=producer)
    p.start()
    while q._stats()[7] == 0:  # producers waiting
        time.sleep(0.001)
    q.close()
    p.join(5)
    assert results == ["producer-closed"]
    assert q.get() == "x"
    e = BoundedQueue(1)
    c = threading.Thread(target=lambda: results.append(list(e)))
    c.start()
    time.sleep(0.01)
    e.close()
    c.join(5)
    assert results[-1] == []
    assert q.metrics.items_dropped == 1


def test_close_async_and_async_iteration():
    async def main():
        q = BackpressureQueue(2, block_timeout=math.inf)
        await q.put(1)
        await q.put(2)
        blocked = asyncio.ensure_future(q.put(3))
        await asyncio.sleep(0)
        q.close()
        with pytest.raises(QueueClosedError):
            await blocked
        assert [i async for i in q] == [1, 2]
        e = BackpressureQueue(1)
        consumer = asyncio.ensure_future(e.get())
        await asyncio.sleep(0)
        e.close()
        with pytest.raises(QueueClosedError):
            await consumer
        b = BoundedQueue(2)
        b.put("x")
        b.close()
        assert [i async for i in b] == ["x"]
    run(main())


# ---- watermarks ------------------------------------------------------------------

def test_watermarks_once_per_crossing_no_lock_held():
    events = []
    q: BoundedQueue

    def on_high():
        # no internal lock is held: the queue is usable from the callback
        events.append(("high", q.qsize()))
        q.put_nowait("from-callback")

    def on_low():
        events.append(("low", q.qsize()))

    q = BoundedQueue(10, S.DROP_NEWEST, high_watermark=0.8, low_watermark=0.2,
                     on_high_watermark=on_high, on_low_watermark=on_low)
    assert (q.high_watermark, q.low_watermark) == (0.8, 0.2)
    for i in range(8):
        q.put(i)
    assert events == [("high", 8)] and q.qsize() == 9
    q.put(99)
    q.get()
    q.put(100)
    assert events == [("high", 8)]
    while q.qsize() > 2:
        q.get()
    assert events == [("high", 8), ("low", 2)]
    q.get()
    q.put(1)
    assert len(events) == 2
    for i in range(6):
        q.put(i)
    assert events[-1] == ("high", 8)


def test_watermark_defaults_and_callback_errors(capsys):
    hits = []
    q = BoundedQueue(4, high_watermark=0.5, on_high_watermark=lambda: 1 / 0,
                     on_low_watermark=lambda: hits.append("low"))
    assert q.low_watermark == 0.0
    unraisable = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(u.exc_type)
    try:
        q.put(1)
        assert q.put(2) is True  # the put happened despite the failing hook
    finally:
        sys.unraisablehook = old
    assert unraisable == [ZeroDivisionError]
    q.get()
    q.get()
    assert hits == ["low"]


def test_async_watermarks():
    events = []

    async def main():
        q = BackpressureQueue(4, high_watermark=0.75, low_watermark=0.25,
                              on_high_watermark=lambda: events.append("high"),
                              on_low_watermark=lambda: events.append("low"))
        for i in range(3):
            await q.put(i)
        for _ in range(2):
            await q.get()
    run(main())
    assert events == ["high", "low"]


# ---- producers x consumers: every item exactly once --------------------------------

N_PER_PRODUCER = 250_000  # 4 producers -> 10^6 items per strategy


@pytest.mark.parametrize("strategy", list(S))
def test_threads_every_item_accounted_once(strategy):
    q = BoundedQueue(64, strategy, block_timeout=math.inf)
    processed: list[list[int]] = [[] for _ in range(4)]
    refused = [0] * 4

    def producer(k):
        base = k * N_PER_PRODUCER
        n = 0
        for i in range(base, base + N_PER_PRODUCER):
            try:
                if not q.put(i):
                    n += 1
            except QueueFullError:
                n += 1
        refused[k] = n

    def consumer(k):
        out = processed[k]
        for item in q:
            out.append(item)

    cs = [threading.Thread(target=consumer, args=(k,)) for k in range(4)]
    ps = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in cs + ps:
        t.start()
    for t in ps:
        t.join()
    q.close()
    for t in cs:
        t.join()
    total = 4 * N_PER_PRODUCER
    seen = [i for out in processed for i in out]
    assert len(seen) == len(set(seen))
    assert all(0 <= i < total for i in seen)
    m = q.metrics
    assert m.items_received == total
    assert m.items_processed == len(seen)
    assert m.items_processed + m.items_dropped == total
    if strategy is S.BLOCK:
        assert m.items_dropped == 0 and sorted(seen) == list(range(total))
    elif strategy is not S.DROP_OLDEST:
        assert m.items_dropped == sum(refused)
    else:
        assert sum(refused) == 0
    # each consumer saw each producer's surviving items in order
    for out in processed:
        for k in range(4):
            mine = [i for i in out if i // N_PER_PRODUCER == k]
            assert mine == sorted(mine)
    assert len(q) == 0


@pytest.mark.parametrize("strategy", list(S))
def test_asyncio_every_item_accounted_once(strategy):
    n_per = 25_000  # 4 producers -> 10^5 items per strategy

    async def main():
        q = BackpressureQueue(16, strategy, block_timeout=math.inf)
        seen: list[int] = []

        async def producer(k):
            for i in range(k * n_per, (k + 1) * n_per):
                try:
                    await q.put(i)
                except QueueFullError:
                    pass
                if i % 7 == 0:
                    await asyncio.sleep(0)

        async def consumer():
            async for item in q:
                seen.append(item)
                if item % 5 == 0:
                    await asyncio.sleep(0)

        cs = [asyncio.ensure_future(consumer()) for _ in range(4)]
        await asyncio.gather(*[producer(k) for k in range(4)])
        q.close()
        await asyncio.gather(*cs)
        m = q.metrics
        assert len(seen) == len(set(seen)) == m.items_processed
        assert m.items_received == 4 * n_per
        assert m.items_processed + m.items_dropped == 4 * n_per
        if strategy is S.BLOCK:
            assert sorted(seen) == list(range(4 * n_per))
    run(main())


# ---- cancellation ---------------------------------------------------------------

def test_cancelled_getter_gives_item_back():
    async def main():
        q = BackpressureQueue(5)
        getters = [asyncio.ensure_future(q.get()) for _ in range(3)]
        await asyncio.sleep(0)
        await q.put("item")  # handed to the first getter...
        for g in getters:
            g.cancel()  # ...which is cancelled before it runs
        res = await asyncio.gather(*getters, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in res)
        assert q.qsize() == 1
        assert q.get_nowait() == "item"
        assert q.metrics == BackpressureMetrics(1, 1, 0, 0)
    run(main())


def test_cancelled_producer_drops_its_item_once():
    async def main():
        q = BackpressureQueue(1, block_timeout=math.inf)
        await q.put("a")
        p = asyncio.ensure_future(q.put("b"))
        await asyncio.sleep(0)
        p.cancel()
        with pytest.raises(asyncio.CancelledError):
            await p
        assert q.get_nowait() == "a"
        assert q.qsize() == 0
        assert q.metrics == BackpressureMetrics(2, 1, 1, 1)
    run(main())


def test_many_cancelled_async_getters():
    async def main():
        q = BackpressureQueue(10)
        getters = [asyncio.ensure_future(q.get()) for _ in range(10_000)]
        await asyncio.sleep(0)
        for i in range(5):
            q.put_nowait(i)
        for g in getters:
            g.cancel()
        await asyncio.gather(*getters, return_exceptions=True)
        assert sorted(q.get_nowait() for _ in range(5)) == list(range(5))
        assert q._stats()[8] == 0  # nobody left waiting
    run(main())


# ---- references and memory -------------------------------------------------------

@pytest.mark.parametrize("strategy", list(S))
def test_no_reference_leak(strategy):
    obj = object()
    base = sys.getrefcount(obj)
    q = BoundedQueue(8, strategy, block_timeout=0.0)
    for _ in range(2000):
        for _ in range(10):
            try:
                q.put(obj)
            except QueueFullError:
                pass
        for _ in range(3):
            q.get()
    while not q.empty():
        q.get()
    assert sys.getrefcount(obj) == base
    for _ in range(5):
        q.put(obj)
    del q
    gc.collect()
    assert sys.getrefcount(obj) == base


def test_async_no_reference_leak():
    obj = object()
    base = sys.getrefcount(obj)

    async def main():
        q = BackpressureQueue(4, S.BLOCK, block_timeout=0.001)
        for _ in range(200):
            for _ in range(6):
                await q.put(obj)
            for _ in range(4):
                await q.get()
        g = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        await q.put(obj)
        g.cancel()
        await asyncio.gather(g, return_exceptions=True)
        assert q.qsize() == 1
    run(main())
    gc.collect()
    assert sys.getrefcount(obj) == base


def test_memory_flat():
    q = BoundedQueue(100, S.DROP_OLDEST)
    payload = "x" * 100
    for _ in range(1000):
        q.put(payload)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1_000_000):  # a million puts and gets: memory stays flat
            q.put(payload)
            q.get()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024


# ---- Ctrl-C ----------------------------------------------------------------------

@pytest.mark.parametrize("op", ["get", "put"])
def test_ctrl_c_interrupts_blocked_wait(op):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    q = BoundedQueue(1, block_timeout=math.inf)
    if op == "put":
        q.put("full")
    timer = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        if op == "get":
            q.get()
        else:
            q.put("more")
    timer.join()
    st = q._stats()
    assert st[7] == 0 and st[8] == 0  # nobody waiting
    assert q.qsize() == (1 if op == "put" else 0)


# ---- bad input -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(max_size=1.5), ValueError, "max_size"),
    (dict(maxsize=2.5), ValueError, "maxsize"),
    (dict(max_size=2, maxsize=2), TypeError, "maxsize"),
    (dict(max_size=0, high_watermark=0.5), ValueError, "max_size"),
    (dict(max_size=PRS_RING_MAX + 1), ValueError, "max_size"),
    (dict(max_size=True), TypeError, "max_size"),
    (dict(max_size=2, strategy="fifo"), ValueError, "strategy"),
    (dict(max_size=2, strategy=3), TypeError, "strategy"),
    (dict(max_size=2, block_timeout=-1), ValueError, "block_timeout"),
    (dict(max_size=2, block_timeout=float("nan")), ValueError, "block_timeout"),
    (dict(max_size=2, block_timeout="1"), TypeError, "block_timeout"),
    (dict(max_size=2, high_watermark=0), ValueError, "high_watermark"),
    (dict(max_size=2, high_watermark=1.5), ValueError, "high_watermark"),
    (dict(max_size=2, high_watermark=float("nan")), ValueError, "high_watermark"),
    (dict(max_size=2, high_watermark=0.5, low_watermark=0.5), ValueError, "low_watermark"),
    (dict(max_size=2, high_watermark=0.3, low_watermark=0.6), ValueError, "low_watermark"),
    (dict(max_size=2, low_watermark=-0.1), ValueError, "low_watermark"),
    (dict(max_size=2, high_watermark=0.5, on_high_watermark=3), TypeError, "on_high_watermark"),
    (dict(max_size=2, on_low_watermark=print), ValueError, "watermark"),
])
@pytest.mark.parametrize("cls", [BoundedQueue, BackpressureQueue])
def test_bad_construction(cls, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        cls(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_size=2, high_watermark=0), "high_watermark must be a fraction in (0, 1], got 0"),
    (dict(max_size=2, high_watermark=-1.0), "high_watermark must be a fraction in (0, 1], got -1.0"),
    (dict(max_size=2, high_watermark=0.3, low_watermark=0.6),
     "low_watermark must be below high_watermark (0 <= low < high <= 1), got 0.6 "
     "(high_watermark=0.3)"),
    (dict(max_size=2 ** 30 + 1), "max_size must be <= 1073741824, got 1073741825"),
    (dict(maxsize=10 ** 30), f"maxsize must be <= 1073741824, got {10 ** 30}"),
])
def test_bad_construction_words_the_core_rule(kwargs, message):
    """The core's validator names the field and the rule; the message adds the
    value as given (a whole number beyond int64 too)."""
    with pytest.raises(ValueError) as ei:
        BoundedQueue(**kwargs)
    assert str(ei.value) == message
    q = BoundedQueue(2)
    with pytest.raises(ValueError) as ei:
        q.maxsize = 2 ** 40
    assert str(ei.value) == f"maxsize must be <= 1073741824, got {2 ** 40}"
    assert q.maxsize == 2


def test_watermarks_need_a_bounded_queue_worded_as_a_field_rule():
    """Watermarks are fractions of a bounded capacity: the constructor and the
    capacity setter give the same rule, naming the parameter used and its value."""
    with pytest.raises(ValueError) as ei:
        BoundedQueue(0, high_watermark=0.5)
    assert str(ei.value) == "max_size must be > 0 when watermarks are set (a bounded queue), got 0"
    with pytest.raises(ValueError) as ei:
        BoundedQueue(maxsize=-3, low_watermark=0.5)
    assert str(ei.value) == "maxsize must be > 0 when watermarks are set (a bounded queue), got -3"
    q = BoundedQueue(4, high_watermark=0.5)
    for name in ("maxsize", "max_size"):
        with pytest.raises(ValueError) as ei:
            setattr(q, name, 0)
        assert str(ei.value) == f"{name} must be > 0 when watermarks are set (a bounded queue), got 0"
    assert q.maxsize == 4


def test_built_when_made():
    """The C queue is built by __new__ from the arguments: there is no
    half-made queue, and __init__ does not build it again."""
    q = pr._core.RingQueue.__new__(pr._core.RingQueue, 3, "drop_oldest")
    assert (q.max_size, q._strategy_name, q.put_nowait(1), q.get_nowait()) == (3, "drop_oldest", True, 1)
    b = BoundedQueue(2)
    b.put(1)
    b.__init__(5)  # type: ignore[misc]
    assert (b.max_size, b.qsize()) == (2, 1)

    class Mine(BoundedQueue):  # type: ignore[type-arg]
        """Other arguments than the base's: read by __new__."""

        def __new__(cls, n: int) -> "Mine":
            return super().__new__(cls, n, S.DROP_NEWEST, block_timeout=0.5)

        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

    m = Mine(4)
    assert (m.n, m.max_size, m.strategy, m.block_timeout, type(m).__name__) == (4, 4, S.DROP_NEWEST, 0.5, "Mine")
    assert m in list(pr.queues._live)  # repaired after fork like any queue


def test_bad_timeouts():
    q = BoundedQueue(1)
    for bad, exc in ((-1, ValueError), (float("nan"), ValueError), ("x", TypeError)):
        with pytest.raises(exc, match="timeout"):
            q.get(timeout=bad)
        with pytest.raises(exc, match="timeout"):
            q.put(1, timeout=bad)

        async def main():
            aq = BackpressureQueue(1)
            with pytest.raises(exc, match="timeout"):
                await aq.get(timeout=bad)
        run(main())
    assert q.qsize() == 0 and q.metrics.items_received == 0


# ---- fork ------------------------------------------------------------------------

def _counters(q):
    s = q._stats()  # received, processed, dropped, blocked, size, ..., producers_waiting, consumers_waiting
    return s[0], s[1], s[2], s[4], s[7], s[8]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@needs_gil
def test_fork_while_getters_wait_items_handed_come_back():
    q = BoundedQueue(4)
    got = []

    def consumer():
        got.append(q.get(timeout=30))

    threads = [threading.Thread(target=consumer, daemon=True) for _ in range(3)]
    for i, t in enumerate(threads):
        t.start()
        wait_until(lambda: _counters(q)[5] == i + 1)

    def check():
        # "a" and "b" were handed to threads that do not exist here: back at
        # the front, in order; the third getter left the queue.
        assert _counters(q) == (2, 0, 0, 2, 0, 0)
        assert [q.get(timeout=5), q.get(timeout=5)] == ["a", "b"]
        with pytest.raises(QueueEmptyError):
            q.get(timeout=0.01)
        out = []
        c = threading.Thread(target=lambda: out.extend(q.get(timeout=5) for _ in range(100)))
        c.start()
        for i in range(100):
            assert q.put(i, timeout=5)
        c.join()
        assert out == list(range(100))
        for i in range(4):
            q.put_nowait(i)
        with pytest.raises(queue.Full):
            q.put("late", timeout=0.01)  # full: dropped after the timeout
        assert [q.get_nowait() for _ in range(4)] == [0, 1, 2, 3]

        async def am():
            await q.put_async("x")
            return await q.get_async()
        assert asyncio.run(am()) == "x"
        r, p, d, size, pw, cw = _counters(q)
        assert (size, pw, cw) == (0, 0, 0) and r == p + d and d == 1
        return "ok"

    def hand_two():
        q.put("a")  # to the first getter
        q.put("b")  # to the second

    with HoldGIL():
        assert in_child(check, before=hand_two) == "'ok'"
    # The parent is untouched: each getter takes its item, the third still waits.
    wait_until(lambda: sorted(got) == ["a", "b"])
    q.put("c")
    for t in threads:
        t.join()
    assert sorted(got) == ["a", "b", "c"]
    assert _counters(q) == (3, 3, 0, 0, 0, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@needs_gil
def test_fork_while_putters_wait_items_intact():
    q = BoundedQueue(2, block_timeout=30)
    q.put("a")
    q.put("b")
    done = []
    got = []

    def producer(item):
        done.append(q.put(item))

    threads = [threading.Thread(target=producer, args=(x,), daemon=True) for x in ("c", "d")]
    for i, t in enumerate(threads):
        t.start()
        wait_until(lambda: _counters(q)[4] == i + 1)

    def check():
        # The get let "c" in (its thread had not settled: nothing to undo);
        # "d"'s put left the queue, its item counted dropped.
        assert _counters(q) == (4, 1, 1, 2, 0, 0)
        assert [q.get(timeout=5), q.get(timeout=5)] == ["b", "c"]
        assert q.put("e", timeout=5) and q.put("f", timeout=5)
        with pytest.raises(queue.Full):
            q.put("g", timeout=0.01)
        assert [q.get_nowait(), q.get_nowait()] == ["e", "f"]
        r, p, d, size, pw, cw = _counters(q)
        assert (r, p, d, size, pw, cw) == (7, 5, 2, 0, 0, 0)
        return "ok"

    with HoldGIL():
        assert in_child(check, before=lambda: got.append(q.get())) == "'ok'"
    # The parent: "c" is in, "d" still waits until the next get.
    assert got == ["a"]
    assert q.get(timeout=5) == "b"
    for t in threads:
        t.join()
    assert done == [True, True]
    assert [q.get_nowait(), q.get_nowait()] == ["c", "d"]
    assert _counters(q) == (4, 4, 0, 0, 0, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_keeps_asyncio_getters_for_a_loop_the_child_runs():
    q = BackpressureQueue(2)
    loop = asyncio.new_event_loop()
    try:
        t = loop.create_task(q.get())
        while _counters(q)[5] == 0:
            loop.run_until_complete(asyncio.sleep(0))

        def check():
            q.put_nowait("x")  # to the task, woken through its loop
            return loop.run_until_complete(asyncio.wait_for(t, 5)), _counters(q)

        assert in_child(check) == "('x', (1, 1, 0, 0, 0, 0))"
        q.put_nowait("y")
        assert loop.run_until_complete(asyncio.wait_for(t, 5)) == "y"
    finally:
        loop.close()


# ---- GC and signatures ------------------------------------------------------------

def test_collectable_with_cycles():
    def make():
        q = BoundedQueue(4, high_watermark=0.5)
        q.put(q)  # the queue holds itself
        q.hook = lambda: q
        return weakref.ref(q)
    ref = make()
    gc.collect()
    assert ref() is None

    def make2():
        holder = []
        q = BoundedQueue(4, high_watermark=0.5, on_high_watermark=lambda: holder.append(q))
        return weakref.ref(q)
    ref = make2()
    gc.collect()
    assert ref() is None


def test_async_put_and_get_are_one_body_each():
    # BackpressureQueue.put/get and BoundedQueue.put_async/get_async run the
    # mixin's _aput/_aget code (no forwarding frame), each with its own name
    # and docstring, and stay coroutine functions
    from pyresilience.queues import _RingQueueMixin
    for cls, name, body in ((BackpressureQueue, "put", _RingQueueMixin._aput),
                            (BackpressureQueue, "get", _RingQueueMixin._aget),
                            (BoundedQueue, "put_async", _RingQueueMixin._aput),
                            (BoundedQueue, "get_async", _RingQueueMixin._aget)):
        fn = cls.__dict__[name]
        assert fn.__code__ is body.__code__, name
        assert inspect.iscoroutinefunction(fn), name
        assert fn.__name__ == name and fn.__qualname__ == f"{cls.__name__}.{name}"
        assert fn.__doc__.startswith(name + "(self, ")
    assert list(inspect.signature(BoundedQueue.get_async).parameters) == ["self", "timeout"]

    async def main():
        q = BackpressureQueue(2)
        b = BoundedQueue(2)
        assert await q.put(1) and await b.put_async(2)
        assert await q.get() == 1 and await b.get_async(timeout=1) == 2
    run(main())


def test_signatures():
    for fn in (BoundedQueue.put, BoundedQueue.get, BoundedQueue.put_nowait, BoundedQueue.get_nowait,
               BoundedQueue.close, BoundedQueue.qsize, BackpressureQueue.put, BackpressureQueue.get,
               BoundedQueue.put_async, BoundedQueue.get_async):
        inspect.signature(fn)
        assert fn.__doc__
    for cls in (BoundedQueue, BackpressureQueue):
        assert list(inspect.signature(cls).parameters) == [
            "max_size", "strategy", "block_timeout", "high_watermark", "low_watermark",
            "on_high_watermark", "on_low_watermark", "maxsize"]
    assert inspect.signature(BoundedQueue).parameters["block_timeout"].default is None
    assert inspect.signature(BackpressureQueue).parameters["block_timeout"].default == 30.0
    assert list(inspect.signature(BoundedQueue.put).parameters) == ["self", "item", "block", "timeout"]
    assert list(inspect.signature(BoundedQueue.get).parameters) == ["self", "block", "timeout"]
    assert "BoundedQueue(max_size=2" in repr(BoundedQueue(2))
    assert pr.QueueEmptyError.__mro__.count(queue.Empty) == 1


# ---- capacity holds at every instant, hand-offs included ------------------------------

@needs_gil
def test_handoff_never_exceeds_capacity_threads():
    """32 consumer threads wait on a queue of 2: only two puts are handed over
    (each keeps its slot until its thread takes it); the others find the queue
    full. Before, every put was handed over and qsize() reached 32."""
    q = BoundedQueue(2)
    got = []
    threads = [threading.Thread(target=lambda: got.append(q.get(timeout=30)), daemon=True)
               for _ in range(32)]
    for t in threads:
        t.start()
    wait_until(lambda: _counters(q)[5] == 32)
    accepted, sizes = [], []
    with HoldGIL():  # the served threads cannot take their items meanwhile
        for i in range(32):
            try:
                q.put_nowait(i)
                accepted.append(i)
            except QueueFullError:
                pass
            sizes.append(q.qsize())
            assert q.qsize() <= q.maxsize
    assert accepted == [0, 1] and max(sizes) == 2
    for i in range(2, 32):
        assert q.put(i, timeout=30)  # each waits for a slot
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(32))
    r, p, d, size, pw, cw = _counters(q)
    assert (r, p, d, size, pw, cw) == (62, 32, 30, 0, 0, 0)


@pytest.mark.parametrize("cls", [BoundedQueue, BackpressureQueue])
def test_handoff_capacity_then_cancelled_async_workers(cls):
    """Workers waiting on a queue of 2, then cancelled at shutdown: the two
    items handed to them go back, within capacity; nothing lost, no
    SystemError (before: 32 handed, then given back past capacity)."""
    async def main():
        q = cls(2)
        get = q.get_async if cls is BoundedQueue else q.get
        workers = [asyncio.ensure_future(get()) for _ in range(32)]
        await asyncio.sleep(0)
        accepted = 0
        for i in range(32):
            try:
                q.put_nowait(i)
                accepted += 1
            except QueueFullError:
                pass
            assert q.qsize() <= 2
        assert accepted == 2
        for w in workers:
            w.cancel()
        res = await asyncio.gather(*workers, return_exceptions=True)
        assert all(isinstance(x, asyncio.CancelledError) for x in res)
        assert q.qsize() == 2
        assert sorted([q.get_nowait(), q.get_nowait()]) == [0, 1]
        with pytest.raises(QueueEmptyError):
            q.get_nowait()
        r, p, d, size, pw, cw = _counters(q)
        assert (r, p, d, size, pw, cw) == (32, 2, 30, 0, 0, 0)
    run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@needs_gil
def test_fork_with_every_slot_handed_out():
    """Fork while the parent's threads hold every slot of the queue (served,
    not settled): the child gets both items back in order, within capacity."""
    q = BoundedQueue(2)
    got = []
    threads = [threading.Thread(target=lambda: got.append(q.get(timeout=30)), daemon=True)
               for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: _counters(q)[5] == 8)
    accepted = []

    def hand():
        for i in range(8):
            try:
                q.put_nowait(i)
                accepted.append(i)
            except QueueFullError:
                pass

    def check():
        assert q.qsize() == 2 and _counters(q)[5] == 0
        assert [q.get_nowait(), q.get_nowait()] == [0, 1]
        q.put_nowait("a")
        q.put_nowait("b")
        with pytest.raises(QueueFullError):
            q.put_nowait("c")
        r, p, d, size, pw, cw = _counters(q)
        assert size == 2 and r == p + d + size
        return "ok"

    with HoldGIL():
        assert in_child(check, before=hand) == "'ok'"
    assert accepted == [0, 1]
    for i in range(2, 8):
        assert q.put(i, timeout=30)
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(8))


# ---- a cancelled async put has not stored its item ---------------------------------

@pytest.mark.parametrize("form", ["BackpressureQueue.put", "BoundedQueue.put_async", "wait_for"])
def test_cancelled_put_after_room_was_given_stores_nothing(form):
    """asyncio.Queue's rule: an awaited put that raises CancelledError has not
    stored its item - even when a get made room for it just before the
    cancel. Before, the item stayed stored (and a retry stored it twice)."""
    async def main():
        if form == "BoundedQueue.put_async":
            q = BoundedQueue(1)
            put = q.put_async
        else:
            q = BackpressureQueue(1, block_timeout=None)
            put = q.put
        q.put_nowait(1)
        coro = asyncio.wait_for(put(2), 10) if form == "wait_for" else put(2)
        task = asyncio.ensure_future(coro)
        for _ in range(3):
            await asyncio.sleep(0)
        assert _counters(q)[4] == 1  # the put waits for room
        assert q.get_nowait() == 1   # room for 2 ...
        task.cancel()                # ... but its task is cancelled before it runs
        try:
            result = await task
        except asyncio.CancelledError:
            result = None
        if form == "wait_for" and result is True:
            # 3.11's wait_for lets the inner put finish when it completes in
            # the same loop pass as the cancel (and then returns its result):
            # returned True, so stored - still consistent.
            assert q.get_nowait() == 2
            return
        assert result is None  # CancelledError: not stored
        assert q.qsize() == 0
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()
        assert q.metrics == BackpressureMetrics(2, 1, 1, 1)
        assert await put(2) is True  # the retry stores it once
        assert q.get_nowait() == 2 and q.qsize() == 0
        assert q.unfinished_tasks == 2  # 1 and the retried 2; the cancelled put never counted
    run(main())


def test_cancelled_put_gives_its_slot_to_the_next_producer():
    async def main():
        q = BackpressureQueue(1, block_timeout=None)
        q.put_nowait("a")
        p1 = asyncio.ensure_future(q.put("b"))
        p2 = asyncio.ensure_future(q.put("c"))
        await asyncio.sleep(0)
        assert q.get_nowait() == "a"  # room for "b"
        p1.cancel()                   # "b" withdrawn: the room goes to "c"
        with pytest.raises(asyncio.CancelledError):
            await p1
        assert await p2 is True
        assert q.get_nowait() == "c"
        assert q.metrics == BackpressureMetrics(3, 2, 1, 2)
    run(main())


# ---- Ctrl-C during a get that was served in the same slice -----------------------------

@needs_gil
def test_ctrl_c_in_the_same_slice_as_the_handoff_takes_nothing():
    """A producer thread hands an item to the blocked get() and raises a signal
    at once (while holding the GIL, so both land before the getter runs
    again): the interrupted get takes nothing, the item stays first in the
    queue, not counted processed. 300 rounds, no loss (before: 300 of 300
    items lost)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")

    class Interrupt(Exception):
        pass

    def handler(signum, frame):
        raise Interrupt

    rounds = 300
    q = BoundedQueue(4)
    main_id = threading.get_ident()
    round_done = threading.Event()

    def producer():
        for i in range(rounds):
            wait_until(lambda: _counters(q)[5] == 1)  # the get waits
            q.put(i)                                   # handed to it ...
            signal.pthread_kill(main_id, signal.SIGUSR1)  # ... and interrupted in the same instant
            round_done.wait(10)
            round_done.clear()

    got, lost, interrupted = [], 0, 0
    old_handler = signal.signal(signal.SIGUSR1, handler)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)  # the producer keeps the GIL from put to kill
    t = threading.Thread(target=producer, daemon=True)
    try:
        t.start()
        for _ in range(rounds):
            try:
                got.append(q.get(timeout=10))
            except Interrupt:
                interrupted += 1
                try:
                    got.append(q.get_nowait())  # given back: still there
                except QueueEmptyError:
                    lost += 1
            round_done.set()
        t.join(10)
    finally:
        sys.setswitchinterval(old_interval)
        signal.signal(signal.SIGUSR1, old_handler)
    assert lost == 0
    assert got == list(range(rounds))
    assert interrupted == rounds
    m = q.metrics
    assert (m.items_received, m.items_processed, m.items_dropped) == (rounds, rounds, 0)


# ---- drop-in for queue.Queue / asyncio.Queue ----------------------------------------------

def test_maxsize_unbounded_and_assignable():
    q = BoundedQueue()
    assert q.maxsize == q.max_size == 0 and not q.full() and q.fill_ratio == 0.0
    for i in range(10_000):
        q.put_nowait(i)
    assert q.qsize() == 10_000 and not q.full()
    assert [q.get_nowait() for _ in range(10_000)] == list(range(10_000))
    assert BoundedQueue(-1).maxsize == -1 and BoundedQueue(maxsize=3).maxsize == 3
    assert BackpressureQueue(maxsize=0).maxsize == 0 and BackpressureQueue(maxsize=2.0).max_size == 2
    # shrink below the size: the items stay, nothing enters until below
    q = BoundedQueue(3)
    for i in range(3):
        q.put(i)
    q.maxsize = 2
    assert q.max_size == 2 and q.full() and q.qsize() == 3
    with pytest.raises(queue.Full):
        q.put_nowait(9)
    q.get()
    with pytest.raises(queue.Full):
        q.put_nowait(9)
    q.get()
    q.put_nowait(3)
    # grow with a producer blocked: it comes in
    t = threading.Thread(target=q.put, args=(4,))
    t.start()
    wait_until(lambda: _counters(q)[4] == 1)
    q.max_size = 0
    t.join(10)
    assert [q.get_nowait() for _ in range(3)] == [2, 3, 4]
    for bad, exc in ((1.5, ValueError), ("2", TypeError), (2 ** 30 + 1, ValueError)):
        with pytest.raises(exc, match="maxsize"):
            q.maxsize = bad
    w = BoundedQueue(4, high_watermark=0.5)
    with pytest.raises(ValueError, match="watermark"):
        w.maxsize = 0


def test_task_done_and_join_threads():
    q = BoundedQueue(3, S.DROP_OLDEST)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()
    q.join()  # nothing unfinished
    for i in range(5):
        q.put(i)  # 0 and 1 evicted: they count as done
    assert q.unfinished_tasks == 3
    done = []
    joiner = threading.Thread(target=lambda: (q.join(), done.append(True)))
    joiner.start()
    for _ in range(3):
        assert not done
        q.get()
        time.sleep(0.001)
        q.task_done()
    joiner.join(10)
    assert done == [True] and q.unfinished_tasks == 0
    with pytest.raises(ValueError):
        q.task_done()
    b = BoundedQueue(1, S.DROP_NEWEST)
    b.put(1)
    assert b.put(2) is False  # dropped: never counted
    assert b.unfinished_tasks == 1


def test_ctrl_c_interrupts_join():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    q = BoundedQueue(1)
    q.put(1)
    timer = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        q.join()
    timer.join()
    q.get()
    q.task_done()
    q.join()


def test_task_done_and_join_async():
    async def main():
        q = BackpressureQueue(maxsize=2)
        await q.join()
        total = 0

        async def worker():
            nonlocal total
            while True:
                item = await q.get()
                total += item
                q.task_done()

        workers = [asyncio.ensure_future(worker()) for _ in range(2)]
        for i in range(50):
            await q.put(i)
        await q.join()
        assert total == sum(range(50)) and q.unfinished_tasks == 0
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # a cancelled join leaves the queue
        q.put_nowait("x")
        j = asyncio.ensure_future(q.join())
        await asyncio.sleep(0)
        j.cancel()
        with pytest.raises(asyncio.CancelledError):
            await j
        b = BoundedQueue(2)
        b.put(1)
        jb = asyncio.ensure_future(b.join_async())
        await asyncio.sleep(0)
        assert not jb.done()
        b.get()
        threading.Thread(target=b.task_done).start()  # from another thread
        await asyncio.wait_for(jb, 10)
        with pytest.raises(ValueError):
            q.task_done(), q.task_done()
    run(main())


def test_exceptions_are_the_stdlib_and_asyncio_ones():
    assert issubclass(QueueFullError, queue.Full) and issubclass(QueueFullError, asyncio.QueueFull)
    assert issubclass(QueueEmptyError, queue.Empty) and issubclass(QueueEmptyError, asyncio.QueueEmpty)
    assert issubclass(QueueFullError, ResilienceError) and issubclass(QueueEmptyError, ResilienceError)
    assert QueueFullError().args == ("Queue is full",)

    async def main():
        q = BackpressureQueue(1)
        q.put_nowait(1)
        with pytest.raises(asyncio.QueueFull):
            q.put_nowait(2)
        q.get_nowait()
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()
        d = BackpressureQueue(1, S.DROP_NEWEST)  # drop strategies keep their returns
        assert d.put_nowait(1) is True and d.put_nowait(2) is False
        assert await BackpressureQueue(1, block_timeout=0.01).put(1) is True
        slow = BackpressureQueue(1, block_timeout=0.01)
        await slow.put(1)
        assert await slow.put(2) is False  # the reference contract: False after block_timeout
    run(main())


def test_generic_alias_at_runtime():
    import types
    for cls in (BoundedQueue, BackpressureQueue):
        alias = cls[int]
        assert isinstance(alias, types.GenericAlias) and alias.__args__ == (int,)
        assert alias.__origin__ is cls
        q = alias(2)
        assert type(q) is cls and q.maxsize == 2


def test_repr_shows_the_configuration():
    q = BoundedQueue(2)
    assert repr(q) == "BoundedQueue(max_size=2, strategy='block', block_timeout=None)"
    w = BackpressureQueue(8, S.DROP_OLDEST, 1.5, high_watermark=0.75, low_watermark=0.25)
    assert repr(w) == ("BackpressureQueue(max_size=8, strategy='drop_oldest', block_timeout=1.5, "
                       "high_watermark=0.75, low_watermark=0.25)")
    again = eval(repr(w), {"BackpressureQueue": BackpressureQueue})
    assert repr(again) == repr(w)


def test_metrics_are_a_frozen_snapshot_under_pyresilience():
    import dataclasses
    q = BoundedQueue(2)
    q.put(1)
    m = q.metrics
    assert type(m) is pr.BackpressureMetrics and not type(m).__module__.startswith("pyresilience._core")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.items_received = 5
    q.put(2)
    assert m.items_received == 1 and q.metrics.items_received == 2  # a snapshot
    assert "BackpressureMetrics" in dir(pr)


def test_typing_example_passes_mypy_strict():
    pytest.importorskip("mypy")
    import subprocess
    from pathlib import Path
    example = Path(__file__).parent / "typing" / "example_queues.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    exec(compile(example.read_text(), str(example), "exec"), {"__name__": "example"})
    # and wrong item types are caught
    bad = example.parent / "_bad_queue_types.py"
    bad.write_text("import pyresilience as pr\n"
                   "q: pr.BoundedQueue[int] = pr.BoundedQueue(2)\n"
                   "q.put('x')\n"
                   "s: str = q.get()\n")
    try:
        r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                            "--cache-dir", os.devnull, str(bad)],
                           capture_output=True, text=True, cwd=example.parent)
    finally:
        bad.unlink()
    assert r.returncode == 1 and r.stdout.count("error:") == 2, r.stdout


def test_ring_queue_constructor_checks_and_core_calls():
    """RingQueue's declared tp_new: maxsize is max_size's declared alias, and
    q_build checks the watermark callbacks; task_done / close /
    _after_fork_child share one core-call helper (q_op)."""
    from pyresilience import _core

    with pytest.raises(TypeError, match=r"got both max_size and maxsize \(maxsize is an alias\)"):
        _core.RingQueue(2, maxsize=3)
    with pytest.raises(ValueError, match="need high_watermark"):
        _core.RingQueue(2, on_low_watermark=print)
    q = _core.RingQueue(maxsize=3)
    assert q.max_size == 3 and q.put(1) and q.get() == 1
    q.task_done()
    with pytest.raises(ValueError, match=r"^task_done\(\) called too many times$"):
        q.task_done()
    assert q._after_fork_child() is None and q.close() is None and q.closed


def test_put_without_timeout_waits_the_queues_block_timeout():
    """put() with no timeout waits block_timeout: 0 here, so a full queue
    refuses at once (a put that waited forever would leave the thread alive)."""
    q = BoundedQueue(1, block_timeout=0)
    q.put(1)
    raised = []

    def put():
        try:
            q.put(2)
        except QueueFullError:
            raised.append(True)

    t = threading.Thread(target=put, daemon=True)
    t.start()
    t.join(10)
    alive = t.is_alive()
    if alive:
        q.get()  # let the stuck put finish
    assert not alive and raised == [True]
