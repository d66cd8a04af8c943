"""Checked by mypy --strict in tests/test_redis.py: the public Redis API."""
from __future__ import annotations

import asyncio

import pyresilience as pr


async def use_async(lim: pr.RedisRateLimiter, group: pr.RedisLimiterGroup) -> None:
    await lim.acquire_async("user:1", 1, timeout=0.5)
    await group.acquire_async(timeout=1.0)


def main() -> None:
    backend = pr.RedisBackend("redis://127.0.0.1:6379/0", connect_timeout=0.25, timeout=0.25,
                              max_connections=8)
    lim = pr.RedisRateLimiter(backend, "gcra", rate=10.0, burst=20, key_prefix="app:",
                              on_backend_error="local", local_share=0.25,
                              lease=pr.LeaseConfig(batch=5, max_hold=0.1))
    win = pr.RedisRateLimiter(backend, "sliding_window_log", limit=100, window=60.0)
    ok: bool = lim.allow("user:1") and win.allow(b"user:1", 2)
    d: pr.Decision = lim.check("user:1")
    p: pr.Decision = win.peek("user:1", 1)
    many: list[pr.Decision] = win.check_many([("a", 1), ("b", 2)])
    headers: dict[str, str] = d.headers()
    lim.acquire("user:1", timeout=1.0)
    lim.reset("user:1")
    group = pr.RedisLimiterGroup([(lim, "{u1}user", 1), (win, "{u1}global", 1)])
    g: pr.Decision = group.check()
    denied: int | None = g.denied_by
    same: bool = group.same_slot
    alive: bool = backend.ping()
    lease: pr.LeaseConfig = pr.LeaseConfig(10, 0.05)
    batch: int = lease.batch
    print(ok, p.remaining, len(many), headers, denied, same, alive, batch)
    asyncio.run(use_async(lim, group))
    lim.close()
    backend.close()


if __name__ == "__main__":
    main()
