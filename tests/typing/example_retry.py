"""Checked by mypy --strict in tests/test_retry.py: the public retry API."""
from __future__ import annotations

import asyncio
from typing import Iterator, List, Optional

import pyresilience as pr


def main() -> None:
    clock = pr.ManualClock()
    budget = pr.RetryBudget(ratio=0.2, min_retries_per_second=5.0, window=10.0, clock=clock)
    states: List[pr.RetryState] = []
    cfg = pr.RetryConfig(max_attempts=3, base_delay=0.01)
    full = pr.RetryConfig(5, 0.1, 10.0, 2.0, "full", (ConnectionError, TimeoutError),
                          deadline=30.0, retry_on_result=lambda r: r is None,
                          on_retry=states.append, budget=budget, respect_retry_after=True,
                          seed=42, clock=clock)
    d: float = pr.calculate_delay(2, cfg) + pr.calculate_delay(3, full, previous=0.5)

    @pr.retry_with_backoff(cfg)
    def fetch(url: str) -> bytes:
        return url.encode()

    body: bytes = fetch("http://example")

    @pr.retry_with_backoff()
    async def fetch_async(n: int) -> int:
        return n

    async def once(n: int) -> int:
        return n + 1

    r = pr.Retry(full, max_attempts=4)
    x: int = r.call(lambda a, b: a + b, 1, b=2)
    delays: Iterator[float] = r.delays()
    first: List[float] = list(delays)

    @r
    def g() -> Optional[str]:
        return "ok"

    s: Optional[str] = g()

    async def run() -> int:
        a: int = await pr.retry_async(once, cfg, 1)
        b: int = await r.call_async(once, 2)
        c: int = await fetch_async(3)
        return a + b + c

    total: int = asyncio.run(run())
    m = budget.metrics
    attempts = m["attempts"]
    allowed: bool = budget.withdraw()
    budget.deposit()
    try:
        raise pr.RetryExhausted("x", last_result=1, attempts=3)
    except pr.RetryExhausted as e:
        n: int = e.attempts
        print(n, e.last_result)
    if states:
        st = states[0]
        print(st.attempt, st.delay, st.exception, st.result, st.elapsed)
    print(d, body, x, first, s, total, attempts, allowed, cfg.max_attempts, cfg.jitter)


if __name__ == "__main__":
    main()
