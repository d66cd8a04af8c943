"""Typed use of reconfigure(): checked with mypy --strict by test_reconfigure.py."""
from __future__ import annotations

import pyresilience as pr


def plans() -> None:
    bucket = pr.TokenBucket(10, 5)
    bucket.reconfigure(capacity=20, refill_rate=10)
    bucket.reconfigure(rate=2)
    gcra = pr.GCRA(10, 5)
    gcra.reconfigure(rate=100, burst=50)
    leaky = pr.LeakyBucket(10, 1)
    leaky.reconfigure(leak_rate=2.5)
    window = pr.FixedWindow(100, 60)
    window.reconfigure(limit=200)
    log = pr.SlidingWindowLog(10, 1.0)
    log.reconfigure(limit=20, window=2.0)
    counter = pr.SlidingWindowCounter(10, 1.0)
    counter.reconfigure(window=10.0)
    per_user = pr.KeyedLimiter(pr.TokenBucket, capacity=10, refill_rate=5)
    per_user.reconfigure(capacity=20)
    window.reconfigure(limit=5, window=None)
