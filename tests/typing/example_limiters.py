"""Checked by mypy --strict in tests/test_limiters.py: the public limiter API."""
from __future__ import annotations

import asyncio
import math

import pyresilience as pr


def main() -> None:
    clock = pr.ManualClock(start=0.0)
    tb = pr.TokenBucket(capacity=10, refill_rate=5, clock=clock)
    tb2 = pr.TokenBucket(rate=10, capacity=50)
    g = pr.GCRA(rate=2.5, burst=4, clock=clock)
    ok: bool = tb.allow() and g.allow(2) and tb2.allow(tokens_needed=3)
    d: pr.Decision = tb.check(1)
    p: pr.Decision = g.peek()
    headers: dict[str, str] = d.headers()
    retry: float = p.retry_after + d.reset_after
    remaining: int = d.remaining + d.limit
    tb.acquire(1, timeout=1.0)
    g.acquire()
    tb.reset()
    avail: float = tb.available + g.available
    cap: float = tb.capacity + tb.refill_rate + tb.rate + g.rate
    burst: int = g.burst
    clock.advance(1.0)
    now: float = clock.now()

    @tb
    def handler(x: int) -> int:
        return x + 1

    y: int = handler(1)

    async def run() -> None:
        await g.acquire_async(1, timeout=math.inf)
        async with g:
            pass

    asyncio.run(run())
    with tb:
        pass
    try:
        g.acquire(timeout=0)
    except pr.RateLimitExceeded as e:
        wait: float = e.retry_after
        print(wait)
    print(ok, headers, retry, remaining, avail, cap, burst, now, y)


if __name__ == "__main__":
    main()
