"""A tour of pyresilience: each pattern in a few lines, in-process, no server.

Run it with `make demo`. Every section uses a ManualClock where time matters,
so the tour is instant and prints the same thing every time.
"""
from __future__ import annotations

import pyresilience as pr


def section(title: str) -> None:
    print(f"\n== {title} ==")


# -- rate limiters --
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


# -- rate limiter family --
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


def tour_keyed() -> None:
    section("KeyedLimiter and LimiterGroup: per client, all or nothing")
    clock = pr.ManualClock()
    per_user = pr.KeyedLimiter(pr.TokenBucket, capacity=2, refill_rate=1, clock=clock)
    per_path = pr.KeyedLimiter(pr.FixedWindow, limit=3, window=60, clock=clock)
    print("  alice x3:", [per_user.allow("alice") for _ in range(3)],
          "| bob:", per_user.allow("bob"))
    for user in ("carol", "dave"):
        group = pr.LimiterGroup(per_user.for_key(user), per_path.for_key("/search"))
        got = [group.check() for _ in range(2)]
        print(f"  {user} on /search x2:", [d.allowed for d in got],
              "denied_by:", [d.denied_by for d in got])
    print(f"  keys held: {len(per_user)}, memory: {per_user.memory_bytes} bytes")


# -- circuit breaker --
def tour_breaker() -> None:
    section("CircuitBreaker: closed, open, half-open")
    clock = pr.ManualClock()
    cb = pr.CircuitBreaker(failure_threshold=3, success_threshold=2, timeout_seconds=30.0,
                           name="inventory", clock=clock,
                           on_state_change=lambda b, old, new: print(f"  [{b.name}] {old} -> {new}"))

    def lookup(sku: str) -> str:
        raise ConnectionError("inventory service down")

    for _ in range(3):
        try:
            cb.call(lookup, "sku-1")
        except ConnectionError:
            pass
    try:
        cb.call(lookup, "sku-1")
    except pr.CircuitOpenError as e:
        print(f"  rejected without calling: {e} (retry_after={e.retry_after}s)")
    clock.advance(30)
    print("  30 s later, trial calls:", cb.call(lambda: "ok"), cb.call(lambda: "ok"))
    m = cb.metrics
    print(f"  metrics: state={m.state} calls={m.calls} failures={m.failures} rejected={m.rejected}")


# -- retry --
def tour_retry() -> None:
    section("Retries: backoff, jitter, deadlines, Retry-After, budgets")
    clock = pr.ManualClock()
    calls = []

    @pr.retry_with_backoff(pr.RetryConfig(max_attempts=4, base_delay=0.5, jitter="full", seed=7,
                                          clock=clock,
                                          on_retry=lambda s: print(f"  attempt {s.attempt} failed "
                                                                   f"({s.exception}), sleeping "
                                                                   f"{s.delay:.3f}s")))
    def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    print(f"flaky() -> {flaky()!r} after {len(calls)} attempts, t={clock.now():.3f}s")

    r = pr.Retry(max_attempts=10, base_delay=1.0, jitter=False, deadline=10.0, clock=clock)
    print("delays with a 10 s deadline:", list(r.delays()))
    clock.set(0)
    try:
        r.call(lambda: 1 / 0)
    except ZeroDivisionError as e:
        print(f"  gave up at t={clock.now()}s:", getattr(e, "__notes__", ["(notes need 3.11)"])[-1])

    clock.set(0)
    limiter = pr.TokenBucket(capacity=1, refill_rate=0.25, clock=clock)  # one call per 4 s

    def call_api() -> str:
        if not limiter.allow():
            raise pr.RateLimitExceeded("429", retry_after=limiter.check().retry_after)
        return "200"

    api = pr.Retry(max_attempts=3, base_delay=0.1, clock=clock)
    print("api:", api.call(call_api), api.call(call_api), f"(waited Retry-After: t={clock.now()}s)")

    budget = pr.RetryBudget(ratio=0.1, min_retries_per_second=0.0, window=10.0, clock=clock)
    guarded = pr.Retry(max_attempts=5, base_delay=0.0, budget=budget, clock=clock)
    attempts = 0

    def down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    for _ in range(100):
        try:
            guarded.call(down)
        except ConnectionError:
            pass
    print(f"budget: 100 failing requests made {attempts} attempts (not 500):", budget.metrics)


# -- bulkhead and queues --
def tour_bulkhead_queues() -> None:
    import asyncio

    section("Bulkhead and backpressure queues")
    db = pr.Bulkhead("database", max_concurrent=2, max_wait_seconds=0)

    async def query(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def burst() -> list:
        return await asyncio.gather(*[db.execute(query, i) for i in range(4)], return_exceptions=True)

    print("bulkhead of 2, 4 concurrent calls, no waiting:", [type(r).__name__ for r in asyncio.run(burst())])
    print(f"  rejected_count={db.rejected_count} available={db.available}")
    for strategy in pr.BackpressureStrategy:
        q = pr.BoundedQueue(2, strategy, block_timeout=0)
        verdicts = []
        for i in range(3):
            try:
                verdicts.append(q.put(i))
            except pr.QueueFullError as e:
                verdicts.append(str(e))
        print(f"  {strategy.value:>11}: puts {verdicts} -> holds {[q.get_nowait() for _ in range(len(q))]}, "
              f"dropped={q.metrics.items_dropped}")


def main() -> None:
    print(f"pyresilience {pr.__version__}")
    # -- calls (one line per section, in issue order) --
    tour_limiters()
    tour_limiter_family()
    tour_keyed()
    tour_breaker()
    tour_retry()
    tour_bulkhead_queues()
    print("\ntour done")


if __name__ == "__main__":
    main()
