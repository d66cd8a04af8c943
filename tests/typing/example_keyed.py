"""Checked by mypy --strict in tests/test_keyed.py: the keyed and group API."""
from __future__ import annotations

import asyncio

import pyresilience as pr


def main() -> None:
    clock = pr.ManualClock()
    per_user = pr.KeyedLimiter(pr.TokenBucket, capacity=10, refill_rate=5, clock=clock)
    per_path = pr.KeyedLimiter(pr.SlidingWindowLog, 100, 60.0, max_keys=1000, clock=clock)
    ok: bool = per_user.allow("alice") and per_user.allow(b"bob", 2)
    d: pr.Decision = per_user.check("alice", n=1)
    p: pr.Decision = per_user.peek("alice")
    per_user.acquire("alice", 1, timeout=1.0)
    per_user.reset("alice")
    per_user.reset()
    n: int = len(per_user) + per_user.max_keys + per_user.memory_bytes + per_user.prune()
    there: bool = "alice" in per_user
    avail: float = per_user.available("alice")
    view: pr.KeyedLimiterView = per_user.for_key("alice")
    ok = ok and view.allow() and view.check(1).allowed
    view.acquire(timeout=None)
    a2: float = view.available
    glob = pr.TokenBucket(1000, 100, clock=clock)
    group = pr.LimiterGroup(glob, view, per_path.for_key("/search"))
    gd: pr.Decision = group.check()
    by: int | None = gd.denied_by
    ok = ok and group.allow(1)
    group.acquire(1, timeout=2.0)
    group.reset()
    a3: float = group.available
    members: tuple[pr.TokenBucket | pr.KeyedLimiterView | object, ...] = group.limiters
    print(len(members), len(group))

    @group
    def handler(x: int) -> int:
        return x

    async def run() -> None:
        await per_user.acquire_async("carol")
        await view.acquire_async()
        async with group:
            pass

    asyncio.run(run())
    print(ok, d, p, n, there, avail, a2, by, a3, handler(1))


if __name__ == "__main__":
    main()
