"""Checked by mypy --strict in tests/test_policy.py: the public Policy API."""
from __future__ import annotations

import asyncio
from typing import Optional, Tuple

import pyresilience as pr


def main() -> None:
    policy = pr.Policy(pr.Fallback(0), pr.Timeout(5.0), pr.Retry(max_attempts=3),
                       pr.CircuitBreaker(), pr.TokenBucket(10, 10), pr.Timeout(1, thread=False),
                       pr.Bulkhead("b", 4))
    rec = pr.Policy.recommended(fallback=pr.Fallback(factory=lambda exc: -1), timeout=10,
                                retry=pr.RetryConfig(max_attempts=2), breaker=pr.CircuitBreaker(),
                                limiter=pr.Limit(pr.KeyedLimiter(pr.TokenBucket, 1, 1), key="k", wait=0.5),
                                attempt_timeout=pr.Timeout(2), bulkhead=pr.Bulkhead("r", 2))
    strategies: Tuple[object, ...] = rec.strategies

    def add(a: int, b: int = 1) -> int:
        return a + b

    n: int = policy.call(add, 1, b=2)

    @policy
    def double(x: int) -> int:
        return 2 * x

    m: int = double(4)

    @policy
    async def fetch(url: str) -> bytes:
        return url.encode()

    async def go() -> bytes:
        body: bytes = await fetch("u")
        other: bytes = await policy.call_async(fetch, "v")
        return body + other

    asyncio.run(go())
    left: Optional[float] = pr.deadline_remaining()
    err: TimeoutError = pr.TimeoutExceeded("late", timeout=1.0)
    t: Optional[float] = pr.TimeoutExceeded().timeout
    print(n, m, strategies, left, err, t)
