"""Issue 10 item 7: one rule for every count-like parameter.

A count is a whole number: an int (or anything with __index__), or a float
with an integral value (10.0 is 10). A fractional float raises ValueError
naming the parameter and the value; bool and str raise TypeError.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

import pyresilience as pr

# (name, factory taking the count) for every count-like constructor parameter.
COUNTS: list[tuple[str, Callable[[Any], object]]] = [
    ("capacity", lambda v: pr.TokenBucket(v, 1)),
    ("burst", lambda v: pr.GCRA(1, v)),
    ("capacity", lambda v: pr.LeakyBucket(v, 1)),
    ("limit", lambda v: pr.FixedWindow(v, 1)),
    ("limit", lambda v: pr.SlidingWindowLog(v, 1)),
    ("limit", lambda v: pr.SlidingWindowCounter(v, 1)),
    ("max_keys", lambda v: pr.KeyedLimiter(pr.TokenBucket, 1, 1, max_keys=v)),
    ("failure_threshold", lambda v: pr.CircuitBreaker(failure_threshold=v)),
    ("success_threshold", lambda v: pr.CircuitBreaker(success_threshold=v)),
    ("half_open_max_calls", lambda v: pr.CircuitBreaker(half_open_max_calls=v)),
    ("max_attempts", lambda v: pr.Retry(max_attempts=v)),
    ("max_concurrent", lambda v: pr.Bulkhead("b", v)),
    ("max_size", lambda v: pr.BoundedQueue(v)),
    ("max_size", lambda v: pr.BackpressureQueue(v)),
]


@pytest.mark.parametrize(("param", "make"), COUNTS, ids=[f"{i}-{p}" for i, (p, _) in enumerate(COUNTS)])
def test_one_rule_for_counts(param: str, make: Callable[[Any], object]) -> None:
    make(4)
    make(4.0)  # an integral float is the count it names
    with pytest.raises(ValueError, match=f"{param} must be a whole number, got 10.5"):
        make(10.5)
    for bad in (True, "4"):
        with pytest.raises(TypeError, match=param):
            make(bad)


def test_integral_float_is_the_same_count() -> None:
    assert pr.TokenBucket(10.0, 1).capacity == 10
    assert pr.FixedWindow(7.0, 1).limit == 7
    assert pr.GCRA(1, 3.0).burst == 3
    tb = pr.TokenBucket(10, 0, clock=pr.ManualClock())
    assert tb.allow(2.0) and tb.available == 8
    with pytest.raises(ValueError, match="n must be a whole number"):
        tb.allow(1.5)
