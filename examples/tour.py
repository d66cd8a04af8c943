"""A tour of pyresilience: each pattern in a few lines, in-process, no server.

Run it with `make demo`. Every section uses a ManualClock where time matters,
so the tour is instant and prints the same thing every time.
"""
from __future__ import annotations

import pyresilience as pr


def section(title: str) -> None:
    print(f"\n== {title} ==")


# -- rate limiters (issue 2) --
def tour_limiters() -> None:
    section("TokenBucket and GCRA")
    clock = pr.ManualClock()
    bucket = pr.TokenBucket(capacity=3, refill_rate=1, clock=clock)
    print("token bucket, 5 requests at t=0:", [bucket.allow() for _ in range(5)])
    d = bucket.check()
    print(f"  denied: retry_after={d.retry_after}s headers={d.headers()}")
    bucket.acquire()  # waits 1 s: on a ManualClock that advances the clock
    print(f"  acquire() waited until t={clock.now()}s")

    gcra = pr.GCRA(rate=10, burst=2, clock=clock)
    print("gcra 10/s burst 2, 4 requests:", [gcra.allow() for _ in range(4)])
    clock.advance(0.1)
    print("  0.1 s later:", gcra.check())
    try:
        gcra.acquire(n=3)
    except ValueError as e:
        print("  n > burst:", e)


# -- rate limiter family (issue 3) --
def tour_limiter_family() -> None:
    section("LeakyBucket, FixedWindow, SlidingWindowLog, SlidingWindowCounter")
    clock = pr.ManualClock()
    limiters = [pr.LeakyBucket(capacity=3, leak_rate=1, clock=clock),
                pr.FixedWindow(limit=3, window=10, clock=clock),
                pr.SlidingWindowLog(limit=3, window=10, clock=clock),
                pr.SlidingWindowCounter(limit=3, window=10, clock=clock)]
    clock.set(9.0)
    for lim in limiters:
        got = [lim.allow() for _ in range(4)]
        print(f"{type(lim).__name__:>20}: 4 requests at t=9 -> {got}, "
              f"retry_after={lim.check().retry_after:.3f}s")
    clock.set(10.0)  # a new fixed window: the fixed window admits a second burst at once
    print("  at t=10, 3 more:", {type(lim).__name__: lim.allow(3) for lim in limiters})


# -- circuit breaker (issue 4) --

# -- retry (issue 5) --

# -- bulkhead and queues (issue 6) --


def main() -> None:
    print(f"pyresilience {pr.__version__}")
    # -- calls (one line per section, in issue order) --
    tour_limiters()
    tour_limiter_family()
    print("\ntour done")


if __name__ == "__main__":
    main()
