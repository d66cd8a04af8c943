"""Redis rate limiting from asyncio: decisions per second from one event loop.

One throwaway redis-server; 100 concurrent tasks on one loop, each calling
check in a loop, all admitting. Rows:

* ours: RedisRateLimiter.check_async (gcra and fixed_window) on the loop's one
  pipelined connection (no thread per call);
* ours, the old way: check() in the default executor (what acquire_async did
  before);
* peer: ``limits``' async Redis storage (``limits.aio``, implementation
  ``redispy``: the ``redis`` package's asyncio client, from the [bench] extra)
  with its FixedWindowRateLimiter and MovingWindowRateLimiter ``.hit``.

Also the loop's longest stall (a task sleeping 1 ms at a time) while those run.
Target: more decisions per second than limits' async storage.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time

from bench_redis import _Server

TASKS = 100


async def _drive(fn, seconds: float):
    """TASKS tasks calling fn() until `seconds` pass: (decisions/s, worst loop stall s)."""
    stop = time.perf_counter() + seconds
    count = 0
    worst = 0.0

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await fn()
            count += 1

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while time.perf_counter() < stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    t0 = time.perf_counter()
    await asyncio.gather(ticker(), *[worker() for _ in range(TASKS)])
    return count / (time.perf_counter() - t0), worst


def run(h) -> None:
    import pyresilience as pr

    h.section("Redis rate limiting from asyncio (one loop, 100 concurrent tasks)",
              note="decisions/s from one event loop, 100 tasks, one local redis-server, all admitting; "
                   "worst loop stall measured by a 1 ms ticker. Target: above limits' async Redis storage.")
    if not getattr(pr._core, "HAVE_REDIS", 0):
        h.note("skipped: pyresilience was built without hiredis")
        return
    if shutil.which("redis-server") is None:
        h.note("skipped: redis-server is not installed (make deps)")
        return
    srv = _Server()
    try:
        asyncio.run(_run(h, pr, srv))
        _breaker(h, pr, srv)
    finally:
        srv.stop()


def _breaker(h, pr, srv) -> None:
    from functools import partial
    h.section("Distributed circuit breaker: closed call overhead",
              note="CircuitBreaker(..., backend=RedisBackend, name=...).call(f) in the closed state "
                   "(outcomes counted in process, flushed every flush_interval) vs the in-process "
                   "breaker. Target: within 2x.")
    b = pr.RedisBackend(srv.url, timeout=2.0)

    def f() -> int:
        return 1

    local = pr.CircuitBreaker(5, name="bench-local")
    shared = pr.CircuitBreaker(5, backend=b, name="bench-shared")
    local_ns = h.time("in-process CircuitBreaker.call(f)", partial(local.call, f))
    shared_ns = h.time("shared CircuitBreaker(backend=).call(f)", partial(shared.call, f))
    h.ratio("shared vs in-process closed call (peer column: in-process)", shared_ns, local_ns)
    h.value("shared / in-process closed call", round(shared_ns / local_ns, 2), "x")
    h.target("shared breaker's closed call within 2x of the in-process breaker", shared_ns <= 2 * local_ns)
    wl, ws = local(f), shared(f)
    lw_ns = h.time("in-process @breaker decorated f()", wl)
    sw_ns = h.time("shared @breaker decorated f()", ws)
    h.value("shared / in-process decorated call", round(sw_ns / lw_ns, 2), "x")
    b.close()


async def _run(h, pr, srv) -> None:
    seconds = 0.5 if h.quick else 2.0
    b = pr.RedisBackend(srv.url, timeout=2.0, connect_timeout=2.0)
    gcra = pr.RedisRateLimiter(b, "gcra", rate=1e9, burst=10**9, key_prefix="bench-async:")
    fixed = pr.RedisRateLimiter(b, "fixed_window", limit=10**12, window=3600, key_prefix="bench-async:")
    loop = asyncio.get_running_loop()
    ours = {}
    for name, lim in (("gcra", gcra), ("fixed_window", fixed)):
        assert (await lim.check_async("user:1")).allowed
        rate, worst = await _drive(lambda lim=lim: lim.check_async("user:1"), seconds)
        ours[name] = rate
        h.value(f"pyresilience RedisRateLimiter({name}).check_async: decisions/s", round(rate), "decisions/s")
        h.value(f"  worst loop stall meanwhile ({name})", round(worst * 1e3, 2), "ms")
    rate, _ = await _drive(lambda: loop.run_in_executor(None, gcra.check, "user:1"), seconds)
    h.value("pyresilience check() in the default executor (the old acquire_async way): decisions/s",
            round(rate), "decisions/s")
    best_peer = None
    limits = h.peer("limits")
    if limits is not None:
        try:
            from limits import parse
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
            storage = RedisStorage(f"async+redis://127.0.0.1:{srv.port}/0", implementation="redispy")
            for name, cls, spec in (("FixedWindowRateLimiter", FixedWindowRateLimiter, "1000000000/hour"),
                                    ("MovingWindowRateLimiter", MovingWindowRateLimiter, "100000/hour")):
                lim = cls(storage)
                item = parse(spec)
                assert await lim.hit(item, "user:1")
                rate, worst = await _drive(lambda lim=lim, item=item: lim.hit(item, "user:1"), seconds)
                h.value(f"limits {name}(aio RedisStorage, redispy).hit: decisions/s", round(rate), "decisions/s")
                h.value(f"  worst loop stall meanwhile (limits {name})", round(worst * 1e3, 2), "ms")
                best_peer = max(best_peer or 0, rate)
        except Exception as e:  # noqa: BLE001 - a peer's API drift must not stop the run
            h.note(f"limits rows failed: {type(e).__name__}: {e}")
    if best_peer:
        h.value("check_async(gcra) / limits' fastest async (decisions/s ratio)",
                round(ours["gcra"] / best_peer, 2), "x")
        h.target("check_async faster than limits' async Redis storage", ours["gcra"] > best_peer)
    for lim in (gcra, fixed):
        await lim.reset_async("user:1")
    b.close()


if __name__ == "__main__":  # pragma: no cover - manual run
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from harness import H
    run(H(quick="--quick" in sys.argv))
