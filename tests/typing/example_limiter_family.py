"""Checked by mypy --strict in tests/test_limiter_family.py: the API of
LeakyBucket, FixedWindow, SlidingWindowLog and SlidingWindowCounter."""
from __future__ import annotations

import asyncio

import pyresilience as pr


def main() -> None:
    clock = pr.ManualClock(start=0.0)
    lb = pr.LeakyBucket(capacity=10, leak_rate=2.5, clock=clock)
    fw = pr.FixedWindow(limit=100, window=60.0, clock=clock)
    sl = pr.SlidingWindowLog(5, 1.0)
    sc = pr.SlidingWindowCounter(limit=50, window=10, clock=clock)
    ok: bool = lb.allow() and fw.allow(2) and sl.allow(tokens_needed=1) and sc.allow()
    d: pr.Decision = fw.check(1)
    p: pr.Decision = sc.peek()
    retry: float = d.retry_after + p.reset_after
    lb.acquire(1, timeout=1.0)
    sc.reset()
    level: float = lb.level + lb.capacity + lb.leak_rate + lb.available
    limit: int = fw.limit + sl.limit + sc.limit
    window: float = fw.window + sl.window + sc.window

    @fw
    def handler(x: int) -> int:
        return x + 1

    with sl:
        pass

    async def run() -> None:
        await sc.acquire_async(1, timeout=None)
        async with lb:
            pass

    asyncio.run(run())
    print(ok, retry, level, limit, window, handler(1))


if __name__ == "__main__":
    main()
