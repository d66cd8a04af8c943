"""Bulkheads and backpressure queues against the standard library.

Three tables, everything uncontended (one thread, or one task), in the same
run:

* BoundedQueue: one put + one get, vs ``queue.Queue`` and ``queue.SimpleQueue``
  (target: at least 3x faster than queue.Queue).
* BackpressureQueue: ``await put(x)`` + ``await get()`` vs the reference
  design's asyncio.Queue-based queue (bench/ref_backpressure.py) and a bare
  ``asyncio.Queue`` (target: at least 1.5x faster than both).
* Bulkhead enter/exit: ``with bulkhead: pass`` vs ``threading.BoundedSemaphore``,
  and ``async with bulkhead: pass`` vs ``asyncio.Semaphore`` (targets: 3x and
  1.5x).

Each row is a small function doing exactly one pair, so every row pays the same
one Python call of overhead.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from ref_backpressure import RefBackpressureQueue, RefStrategy

import pyresilience as pr


def _queues(h):
    h.section("BoundedQueue: put + get pair (threads API, uncontended)",
              note="One put and one get per call, queue never full. "
                   "Target: BoundedQueue >= 3x faster than queue.Queue.")
    ours_q = pr.BoundedQueue(1024)
    std_q: queue.Queue = queue.Queue(1024)
    simple_q: queue.SimpleQueue = queue.SimpleQueue()

    def ours():
        ours_q.put(1)
        ours_q.get()

    def ours_nowait():
        ours_q.put_nowait(1)
        ours_q.get_nowait()

    def std():
        std_q.put(1)
        std_q.get()

    def std_nowait():
        std_q.put_nowait(1)
        std_q.get_nowait()

    def simple():
        simple_q.put(1)
        simple_q.get()

    a = h.time("pyresilience BoundedQueue put()+get()", ours)
    h.time("pyresilience BoundedQueue put_nowait()+get_nowait()", ours_nowait)
    b = h.time("queue.Queue put()+get()", std, peer=True)
    h.time("queue.Queue put_nowait()+get_nowait()", std_nowait, peer=True)
    h.time("queue.SimpleQueue put()+get() (unbounded, no strategy)", simple, peer=True)
    r = h.ratio("queue.Queue / BoundedQueue", a, b)
    h.target("BoundedQueue put+get >= 3x faster than queue.Queue", r >= 3)


def _async_queues(h):
    h.section("BackpressureQueue: await put() + await get() (asyncio, uncontended)",
              note="One awaited put and one awaited get per call, queue never full. "
                   "Target: >= 1.5x faster than the reference design's asyncio.Queue-based "
                   "queue and than asyncio.Queue itself.")
    ours_q = pr.BackpressureQueue(1024)
    ref_q = [None]
    std_q = [None]

    async def ours():
        await ours_q.put(1)
        await ours_q.get()

    async def ref():
        q = ref_q[0]
        if q is None:  # asyncio.Queue binds to the running loop on first use
            q = ref_q[0] = RefBackpressureQueue(1024, RefStrategy.BLOCK)
        await q.put(1)
        await q.get()

    async def std():
        q = std_q[0]
        if q is None:
            q = std_q[0] = asyncio.Queue(1024)
        await q.put(1)
        await q.get()

    a = h.time_async("pyresilience BackpressureQueue put+get", ours)
    b = h.time_async("reference design BackpressureQueue (asyncio.Queue-based) put+get", ref, peer=True)
    c = h.time_async("asyncio.Queue put+get", std, peer=True)
    r1 = h.ratio("reference BackpressureQueue / ours", a, b)
    r2 = h.ratio("asyncio.Queue / ours", a, c)
    h.target("BackpressureQueue >= 1.5x faster than the reference design", r1 >= 1.5)
    h.target("BackpressureQueue >= 1.5x faster than asyncio.Queue", r2 >= 1.5)


def _bulkheads(h):
    h.section("Bulkhead: enter + exit (uncontended)",
              note="`with`/`async with` around nothing. Targets: Bulkhead >= 3x faster than "
                   "threading.BoundedSemaphore; async with >= 1.5x faster than asyncio.Semaphore.")
    bh = pr.Bulkhead("bench", 10)
    sem = threading.BoundedSemaphore(10)
    abh = pr.Bulkhead("bench-async", 10)
    asem = [None]

    def ours():
        with bh:
            pass

    def ours_pair():
        bh.acquire()
        bh.release()

    def bsem():
        with sem:
            pass

    async def ours_async():
        async with abh:
            pass

    async def asem_fn():
        s = asem[0]
        if s is None:
            s = asem[0] = asyncio.Semaphore(10)
        async with s:
            pass

    a = h.time("pyresilience Bulkhead `with`", ours)
    h.time("pyresilience Bulkhead acquire()+release()", ours_pair)
    b = h.time("threading.BoundedSemaphore `with`", bsem, peer=True)
    c = h.time_async("pyresilience Bulkhead `async with`", ours_async, group="async")
    d = h.time_async("asyncio.Semaphore `async with`", asem_fn, peer=True, group="async")
    r1 = h.ratio("BoundedSemaphore / Bulkhead", a, b)
    r2 = h.ratio("asyncio.Semaphore / Bulkhead async", c, d)
    h.target("Bulkhead enter/exit >= 3x faster than threading.BoundedSemaphore", r1 >= 3)
    h.target("Bulkhead async with >= 1.5x faster than asyncio.Semaphore", r2 >= 1.5)


def run(h) -> None:
    _queues(h)
    _async_queues(h)
    _bulkheads(h)
