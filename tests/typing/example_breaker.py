"""Typed use of CircuitBreaker (checked with mypy --strict by test_breaker.py)."""
from __future__ import annotations

import asyncio

from pyresilience import CircuitBreaker, CircuitOpenError, CircuitState, ManualClock


def on_change(breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
    print(f"{breaker.name}: {old.value} -> {new.value}")


clock = ManualClock()
cb = CircuitBreaker(failure_threshold=2, success_threshold=1, timeout_seconds=5.0,
                    name="payments", on_state_change=on_change, clock=clock)


def charge(amount: int) -> str:
    return f"charged {amount}"


@cb
def refund(amount: int) -> str:
    return f"refunded {amount}"


@cb
async def fetch(key: str) -> str:
    await asyncio.sleep(0)
    return key


async def main() -> str:
    return await cb.call_async(fetch, "k") + await fetch("j")


result: str = cb.call(charge, 10)
refunded: str = refund(3)
fetched: str = asyncio.run(main())
with cb:
    pass
allowed: bool = cb.allow_request()
cb.record_success(0.1)
cb.record_failure()
cb.record_ignored()
state: CircuitState = cb.state
is_open: bool = cb.state is CircuitState.OPEN and cb.state.value == "open"
failures: int = cb.metrics.failures
rate: float = cb.metrics.failure_rate
cb.force_open()
try:
    cb.call(charge, 1)
except CircuitOpenError as e:
    retry: float = e.retry_after
cb.reset()
rate_breaker = CircuitBreaker(failure_rate_threshold=0.5, window_type="time", window_size=60,
                              minimum_calls=20, slow_call_duration=2.0,
                              slow_call_rate_threshold=0.8, record_exceptions=(OSError,),
                              ignore_exceptions=(KeyError,), is_failure=lambda r: r is None)
