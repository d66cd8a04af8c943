"""Checked by mypy --strict in tests/test_typing.py (must pass): context managers
that never suppress, generic call/call_async/execute, and decorators that keep
the signatures of sync and async functions and methods."""
from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable, Coroutine

import pyresilience as pr

clock = pr.ManualClock()
breaker = pr.CircuitBreaker(failure_threshold=3, clock=clock)
bulkhead = pr.Bulkhead("db", max_concurrent=4, max_wait_seconds=math.inf)
bucket = pr.TokenBucket(capacity=100, refill_rate=10, clock=clock)
view = pr.KeyedLimiter(pr.GCRA, rate=10, burst=10, clock=clock).for_key("user")
group = pr.LimiterGroup(pr.FixedWindow(limit=10, window=1.0, clock=clock), view)
retry = pr.Retry(max_attempts=2, base_delay=0.0, jitter=False, clock=clock)


# ---- a `with` block that returns: no "missing return statement" --------------

def in_bulkhead() -> int:
    with bulkhead:
        return 1


def in_breaker() -> int:
    with breaker:
        return 2


def in_limiter() -> int:
    with bucket:
        return 3


def in_view_and_group() -> int:
    with view, group:
        return 4


async def in_async_blocks() -> int:
    async with bulkhead:
        async with breaker:
            async with bucket:
                return 5


def entered_is_the_object() -> None:
    with bulkhead as b, breaker as c, bucket as t:
        same: tuple[pr.Bulkhead, pr.CircuitBreaker, pr.TokenBucket] = (b, c, t)
        print(same)


# ---- generic calls ------------------------------------------------------------------

def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


async def fetch(url: str, timeout: float = 1.0) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


def calls() -> int:
    x: int = breaker.call(add, 1, 2, scale=3)
    y: int = bulkhead.call(add, 1, b=2)
    z: int = retry.call(add, 4, 5)
    return x + y + z


async def async_calls() -> bytes:
    a: bytes = await breaker.call_async(fetch, "a")
    b: bytes = await bulkhead.execute(fetch, "b", timeout=2.0)
    n: int = await bulkhead.execute(add, 1, 2)          # a sync function runs in the pool
    c: bytes = await retry.call_async(fetch, "c")
    d: bytes = await pr.retry_async(fetch, None, "d")
    print(n)
    return a + b + c + d


# ---- decorators keep signatures --------------------------------------------------------

@breaker
def b_sync(a: int, *, name: str = "") -> str:
    return name * a


@breaker
async def b_async(a: int) -> float:
    return a / 2


@bulkhead
def h_sync(a: int) -> int:
    return a


@bulkhead
async def h_async(a: int, b: str) -> str:
    return b * a


@bucket
def t_sync(a: int) -> int:
    return a


@view
async def v_async(a: int) -> int:
    return a


@group
def g_sync(a: str) -> str:
    return a


@retry
def r_sync(a: int, b: int = 0) -> int:
    return a + b


@retry
async def r_async(url: str) -> bytes:
    return url.encode()


@pr.retry_with_backoff(pr.RetryConfig(max_attempts=2, base_delay=0.0))
async def rb_async(n: int) -> int:
    return n


class Client:
    @retry
    @breaker
    def get(self, key: str) -> int:
        return len(key)

    @bulkhead
    @retry
    async def aget(self, key: str) -> int:
        return len(key)


def kept() -> None:
    f1: Callable[[int], str] = b_sync
    f2: Callable[[int], Coroutine[Any, Any, float]] = b_async
    f3: Callable[[int, str], Awaitable[str]] = h_async
    f4: Callable[[str], Awaitable[bytes]] = r_async
    f5: Callable[[int], Awaitable[int]] = rb_async
    f6: Callable[[str], int] = Client().get
    f7: Callable[[str], Awaitable[int]] = Client().aget
    s: str = b_sync(2, name="x")
    i: int = h_sync(1) + t_sync(2) + r_sync(3, b=4)
    g: str = g_sync("a")
    print(f1, f2, f3, f4, f5, f6, f7, s, i, g, b_sync.__name__)


async def awaited() -> float:
    x: float = await b_async(1)
    y: str = await h_async(2, "b")
    z: int = await v_async(3) + await rb_async(4) + await Client().aget("k")
    w: bytes = await r_async("u")
    print(y, w)
    return x + z


def budget() -> float:
    m: pr.RetryBudgetMetrics = pr.RetryBudget(clock=clock).metrics
    n: int = m.attempts + m.retries_allowed + m.retries_denied + m.window_attempts + m.window_retries
    first = m["attempts"]
    limit: float = pr.RetryConfig(max_retry_after=None).max_retry_after
    return m.available + n + first + limit


if __name__ == "__main__":
    print(in_bulkhead(), in_breaker(), in_limiter(), in_view_and_group(), calls(), budget())
    entered_is_the_object()
    kept()
    print(asyncio.run(in_async_blocks()), asyncio.run(async_calls()), asyncio.run(awaited()))
