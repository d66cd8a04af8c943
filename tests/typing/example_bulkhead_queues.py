"""Checked by mypy --strict in tests/test_bulkhead.py: the public bulkhead and queue API."""
from __future__ import annotations

import asyncio
import math
import queue

import pyresilience as pr


async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    return x


def double(x: int) -> int:
    return 2 * x


async def amain() -> None:
    b = pr.Bulkhead("db", max_concurrent=2, max_wait_seconds=1.0)
    r: int = await b.execute(fetch, 1)
    r += await b.execute(double, 2)
    async with b:
        pass
    await b.acquire_async(timeout=0.5)
    b.release()

    @b
    async def decorated(x: int) -> int:
        return x

    r += await decorated(3)
    b.shutdown()

    q = pr.BackpressureQueue(10, pr.BackpressureStrategy.DROP_OLDEST, block_timeout=1.0)
    ok: bool = await q.put("a")
    item: object = await q.get()
    ratio: float = q.fill_ratio
    m: pr.BackpressureMetrics = q.metrics
    n: int = m.items_received + m.items_processed + m.items_dropped + m.producer_blocked_count
    q.close()
    async for it in q:
        print(it)
    bq = pr.BoundedQueue(4)
    ok = await bq.put_async(1)
    item = await bq.get_async(timeout=0.1)
    print(ok, item, ratio, n)


def main() -> None:
    b = pr.Bulkhead("api", 3)
    v: int = b.call(double, 4)
    with b:
        pass
    b.acquire(timeout=None)
    b.release()
    got: bool = b.try_acquire()
    if got:
        b.release()
    counts: int = b.active_count + b.available + b.waiting_count + b.rejected_count + b.max_concurrent
    metrics: pr.BulkheadMetrics = b.metrics
    name: str = b.name

    @b
    def work(x: int) -> int:
        return x

    v += work(1)

    hits: list[str] = []
    q = pr.BoundedQueue(8, "block", 0.5, high_watermark=0.75, low_watermark=0.25,
                        on_high_watermark=lambda: hits.append("high"),
                        on_low_watermark=lambda: hits.append("low"))
    stored: bool = q.put(1, timeout=0.1) and q.put_nowait(2)
    x: object = q.get(timeout=1.0)
    try:
        q.get_nowait()
        q.get_nowait()
    except queue.Empty:
        pass
    size: int = q.qsize() + len(q)
    flags: bool = q.empty() or q.full()
    strategy: pr.BackpressureStrategy = q.strategy
    q.close()
    for it in q:
        print(it)
    try:
        q.put(3)
    except pr.QueueClosedError:
        pass
    print(v, counts, metrics, name, stored, x, size, flags, strategy, math.pi)
    asyncio.run(amain())


if __name__ == "example":
    main()
