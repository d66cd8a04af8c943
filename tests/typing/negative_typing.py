"""Checked by mypy --strict in tests/test_typing.py (must FAIL): each line marked
`# E: text` must get an error containing that text, and no other line any error."""
from __future__ import annotations

import pyresilience as pr

clock = pr.ManualClock()
breaker = pr.CircuitBreaker(clock=clock)
bulkhead = pr.Bulkhead("db", 4)
bucket = pr.TokenBucket(capacity=10, refill_rate=1, clock=clock)
group = pr.LimiterGroup(bucket)
retry = pr.Retry(max_attempts=2)


def add(a: int, b: int) -> int:
    return a + b


async def fetch(url: str) -> bytes:
    return url.encode()


@retry
async def r_async(url: str) -> bytes:
    return url.encode()


@breaker
async def b_async(n: int) -> int:
    return n


@breaker
def b_sync(n: int) -> int:
    return n


@bulkhead
def h_sync(n: int) -> int:
    return n


@bucket
async def t_async(n: int) -> int:
    return n


@group
def g_sync(n: int) -> int:
    return n


class Client:
    @retry
    def get(self, key: str) -> int:
        return len(key)


def calls() -> None:
    breaker.call(add, 1, "2")  # E: Argument 3 to "call" of "CircuitBreaker" has incompatible type "str"; expected "int"
    s: str = breaker.call(add, 1, 2)  # E: Incompatible types in assignment (expression has type "int", variable has type "str")
    bulkhead.call(add, 1)  # E: Missing positional argument "b" in call to "call" of "Bulkhead"
    retry.call(add, 1, 2, 3)  # E: Too many arguments for "call" of "Retry"
    b_sync("x")  # E: Argument 1 to "b_sync" has incompatible type "str"; expected "int"
    h_sync(n="x")  # E: Argument "n" to "h_sync" has incompatible type "str"; expected "int"
    g_sync()  # E: Missing positional argument "n" in call to "g_sync"
    Client().get(1)  # E: Argument 1 to "get" of "Client" has incompatible type "int"; expected "str"
    m = pr.RetryBudget().metrics
    m.attempts = 3  # E: Property "attempts" defined in "RetryBudgetMetrics" is read-only
    print(s)


async def async_calls() -> None:
    await breaker.call_async(fetch, 1)  # E: Argument 2 to "call_async" of "CircuitBreaker" has incompatible type "int"; expected "str"
    await bulkhead.execute(fetch)  # E: No overload variant of "execute" of "Bulkhead" matches argument type
    await retry.call_async(fetch, "u", "v")  # E: Too many arguments for "call_async" of "Retry"
    await pr.retry_async(fetch, None, 3)  # E: Argument 3 to "retry_async" has incompatible type "int"; expected "str"
    await r_async(1)  # E: Argument 1 to "r_async" has incompatible type "int"; expected "str"
    x: str = await b_async(1)  # E: Incompatible types in assignment (expression has type "int", variable has type "str")
    await t_async("n")  # E: Argument 1 to "t_async" has incompatible type "str"; expected "int"
    y: int = b_async(1)  # E: Incompatible types in assignment (expression has type "Coroutine[Any, Any, int]", variable has type "int")
    print(x, y)
