"""The distributed circuit breaker (CircuitBreaker(..., backend=, name=)) against
a real, throwaway redis-server: one state per name across threads and
processes, exact half-open trials, an open seen everywhere within the flush
bound, no round trip on the closed path or while open, and a local fallback
when Redis dies."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from typing import Any, List

import pytest

import pyresilience as pr
from pyresilience import _core
from pyresilience.redis_breaker import RedisCircuitBreaker

if os.environ.get("PRS_SKIP_REDIS"):
    pytest.skip("PRS_SKIP_REDIS is set", allow_module_level=True)
if not _core.HAVE_REDIS:
    pytest.fail("pyresilience was built without hiredis: run `make deps install`", pytrace=False)

from test_redis import Server, backend, own_server, prefix, server  # noqa: E402,F401  (fixtures)


def boom() -> None:
    raise RuntimeError("dependency down")


def fail(cb: Any, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(RuntimeError):
            cb.call(boom)


def script_runs(b: pr.RedisBackend) -> int:
    n = 0
    for line in b._command("INFO", "commandstats").decode().splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            n += int(line.split("calls=")[1].split(",")[0])
    return n


def wait_for(pred: Any, bound: float) -> float:
    """Seconds until pred() holds (fails past bound)."""
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < bound, "not within the bound"
        time.sleep(0.005)
    return time.monotonic() - t0


def test_backend_makes_a_shared_breaker_and_checks_its_arguments(backend: pr.RedisBackend) -> None:
    name = prefix()
    cb = pr.CircuitBreaker(3, 2, 10, backend=backend, name=name)
    assert isinstance(cb, RedisCircuitBreaker) and isinstance(cb, pr.CircuitBreaker)
    assert cb.state == "closed" and cb.metrics.fallback is False and cb.flush_interval == 0.5
    with pytest.raises(ValueError, match=r"failure_threshold: 3 there, 4 here"):
        pr.CircuitBreaker(4, 2, 10, backend=backend, name=name)
    with pytest.raises(ValueError, match=r"timeout_seconds: 10.0 there, 5.0 here"):
        pr.CircuitBreaker(3, 2, 5, backend=backend, name=name)
    with pytest.raises(ValueError, match="needs a name"):
        pr.CircuitBreaker(backend=backend)
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        pr.CircuitBreaker(backend=backend, name=prefix(), failure_rate_threshold=0.5)
    with pytest.raises(ValueError, match="flush_interval"):
        pr.CircuitBreaker(backend=backend, name=prefix(), flush_interval=0)
    with pytest.raises(TypeError, match="backend must be a RedisBackend"):
        pr.CircuitBreaker(backend="redis://x", name=prefix())
    assert type(pr.CircuitBreaker(3)) is pr.CircuitBreaker  # no backend: the in-process breaker


def test_failures_add_up_across_breakers_and_open_propagates_within_the_flush_bound(
        backend: pr.RedisBackend) -> None:
    name = prefix()
    cbs = [pr.CircuitBreaker(6, 1, 30, backend=backend, name=name, flush_interval=0.1) for _ in range(3)]
    for cb in cbs:
        fail(cb, 2)  # 6 in all, 2 each: no breaker reaches the threshold alone
    assert all(cb.state == "closed" for cb in cbs)
    took = wait_for(lambda: all(cb.state == "open" for cb in cbs), 0.1 * 3 + 1.0)
    print(f"\nopen seen by every breaker {took * 1e3:.0f} ms after the last failure (flush_interval 0.1 s)")
    runs = script_runs(backend)
    for cb in cbs:  # open: rejected from the local cache, no round trip
        for _ in range(100):
            with pytest.raises(pr.CircuitOpenError) as e:
                cb.call(lambda: 1)
            assert e.value.name == name and e.value.retry_after > 0
    assert script_runs(backend) - runs <= 3  # at most a flush each meanwhile


def test_a_local_trip_opens_the_shared_circuit_at_once(backend: pr.RedisBackend) -> None:
    name = prefix()
    a = pr.CircuitBreaker(2, 1, 30, backend=backend, name=name, flush_interval=30)
    b = pr.CircuitBreaker(2, 1, 30, backend=backend, name=name, flush_interval=30)
    fail(a, 2)
    assert a.state == "open"
    assert backend._command("HGET", f"prs:cb:{{{name}}}", "state") == b"open"
    b.flush()  # what its background flush does
    assert b.state == "open"


def test_closed_path_makes_no_round_trip_per_call(backend: pr.RedisBackend) -> None:
    cb = pr.CircuitBreaker(5, backend=backend, name=prefix(), flush_interval=30)
    runs = script_runs(backend)
    for i in range(1000):
        assert cb.call(lambda: i) == i
    assert script_runs(backend) == runs
    assert cb.metrics.calls == 1000


def test_half_open_trials_exact_across_threads_and_reclose(backend: pr.RedisBackend) -> None:
    import threading
    name = prefix()
    cbs = [pr.CircuitBreaker(1, 2, 0.2, backend=backend, name=name, half_open_max_calls=2, flush_interval=30)
           for _ in range(4)]
    fail(cbs[0])
    for cb in cbs:
        cb.flush()
    assert all(cb.state == "open" for cb in cbs)
    time.sleep(0.25)
    gate = threading.Event()
    ran: List[int] = []
    rejected: List[int] = []

    def trial(cb: Any) -> None:
        try:
            cb.call(lambda: (ran.append(1), gate.wait(5)))
        except pr.CircuitOpenError:
            rejected.append(1)

    threads = [threading.Thread(target=trial, args=(cbs[i % 4],)) for i in range(12)]
    for t in threads:
        t.start()
    wait_for(lambda: len(ran) + len(rejected) == 12 or len(rejected) == 10, 5)
    assert len(ran) == 2 and len(rejected) == 10  # exactly half_open_max_calls trials
    gate.set()
    for t in threads:
        t.join()
    assert backend._command("HGET", f"prs:cb:{{{name}}}", "state") == b"closed"  # 2 successes close
    for cb in cbs:
        cb.flush()
    assert all(cb.state == "closed" for cb in cbs)


def _proc_failures(url: str, name: str, conn: Any) -> None:
    b = pr.RedisBackend(url)
    cb = pr.CircuitBreaker(8, 1, 30, backend=b, name=name, flush_interval=0.1)
    conn.send("ready")
    conn.recv()
    for _ in range(2):
        try:
            cb.call(boom)
        except RuntimeError:
            pass
    t0 = time.monotonic()
    while cb.state != "open" and time.monotonic() - t0 < 3:
        time.sleep(0.005)
    conn.send((cb.state == "open", time.monotonic() - t0))


def _run_procs(target: Any, url: str, name: str, n: int = 4) -> List[Any]:
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for _ in range(n):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(url, name, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    for c in pipes:
        assert c.recv() == "ready"
    for c in pipes:
        c.send("go")
    out = [c.recv() for c in pipes]
    for p in procs:
        p.join(10)
    return out


def test_four_processes_open_one_circuit_within_the_flush_bound(server: Server) -> None:
    out = _run_procs(_proc_failures, server.url, prefix())
    assert all(opened for opened, _ in out)  # 4 x 2 failures reach failure_threshold=8 together
    print(f"\nopen seen by 4 processes within {max(t for _, t in out) * 1e3:.0f} ms (flush_interval 0.1 s)")


_gauge: Any = None  # [in flight, most in flight, trials], shared with the forked children


def test_exact_half_open_trials_across_four_processes(server: Server) -> None:
    global _gauge
    name = prefix()
    b = pr.RedisBackend(server.url)
    # success_threshold above what the race needs: the circuit stays half-open
    cb = pr.CircuitBreaker(1, 100, 5.0, backend=b, name=name, half_open_max_calls=3, flush_interval=30)
    fail(cb)
    key = f"prs:cb:{{{name}}}"
    b._command("HSET", key, "until", "0")  # its time is up now (Redis's clock)
    _gauge = multiprocessing.get_context("fork").Array("i", 3)
    out = _run_procs(_proc_trials_hold, server.url, name)
    assert _gauge[1] == 3  # 4 processes x 5 tries: exactly half_open_max_calls trials at once
    assert sum(out) == _gauge[2] > 3 and b._command("HGET", key, "state") == b"half_open"


def _trial_body() -> None:
    with _gauge.get_lock():
        _gauge[0] += 1
        _gauge[1] = max(_gauge[1], _gauge[0])
        _gauge[2] += 1
    time.sleep(0.1)
    with _gauge.get_lock():
        _gauge[0] -= 1


def _proc_trials_hold(url: str, name: str, conn: Any) -> None:
    b = pr.RedisBackend(url)
    cb = pr.CircuitBreaker(1, 100, 5.0, backend=b, name=name, half_open_max_calls=3, flush_interval=30)
    conn.send("ready")
    conn.recv()
    ran = 0
    for _ in range(5):
        try:
            cb.call(_trial_body)
            ran += 1
        except pr.CircuitOpenError:
            time.sleep(0.02)
    conn.send(ran)


def test_redis_killed_falls_back_to_a_local_breaker(own_server: Server) -> None:
    b = pr.RedisBackend(own_server.url, timeout=0.2, connect_timeout=0.2)
    cb = pr.CircuitBreaker(2, 1, 0.2, backend=b, name=prefix(), flush_interval=0.05)
    assert cb.call(lambda: 1) == 1
    own_server.kill()
    wait_for(lambda: cb.metrics.fallback, 2)  # the next flush finds Redis gone
    assert cb.call(lambda: 2) == 2  # the local breaker decides
    fail(cb, 2)
    assert cb.state == "open" and cb.metrics.fallback
    with pytest.raises(pr.CircuitOpenError):
        cb.call(lambda: 3)
    own_server.start()
    time.sleep(0.25)  # the local breaker's timeout: it may try again
    assert cb.call(lambda: 4) == 4  # a trial closes it locally (success_threshold=1)
    wait_for(lambda: not cb.metrics.fallback, 3)  # Redis answers again: shared again
    assert cb.state == "closed"


def test_async_forms_use_the_shared_state(backend: pr.RedisBackend) -> None:
    name = prefix()
    cb = pr.CircuitBreaker(1, 1, 0.2, backend=backend, name=name, flush_interval=30)

    @cb
    async def work(x: int) -> int:
        return x

    async def run() -> None:
        assert await work(1) == 1
        fail(cb)
        with pytest.raises(pr.CircuitOpenError):
            await work(2)
        await asyncio.sleep(0.25)
        assert cb.state == "half_open"
        runs = script_runs(backend)
        assert await cb.call_async(work.__wrapped__, 3) == 3  # the trial, on the loop's connection
        assert script_runs(backend) - runs == 2  # trial slot + its outcome
        assert cb.state == "closed" and type(cb) is RedisCircuitBreaker
        fail(cb)
        await asyncio.sleep(0.25)
        assert await work(4) == 4  # a decorated coroutine function takes the same path
        assert cb.state == "closed"

    asyncio.run(run())


def test_a_trial_token_recorded_after_the_breaker_went_local(backend: pr.RedisBackend) -> None:
    name = prefix()
    a = pr.CircuitBreaker(1, 1, 0.2, backend=backend, name=name, half_open_max_calls=2, flush_interval=30)
    b = pr.CircuitBreaker(1, 1, 0.2, backend=backend, name=name, half_open_max_calls=2, flush_interval=30)
    fail(a)
    b.flush()
    time.sleep(0.25)
    token = b._acquire()  # b's trial slot
    assert a.call(lambda: 1) == 1  # a's trial closes the shared circuit
    b.flush()
    assert b.state == "closed" and type(b) is RedisCircuitBreaker
    b._record(token, None, 5)  # b's trial ends after b went local: still recorded in Redis
    assert backend._command("HGET", f"prs:cb:{{{name}}}", "inflight") == b"0"


def test_a_trial_slot_of_a_dead_process_is_freed_after_a_timeout(backend: pr.RedisBackend) -> None:
    name = prefix()
    a = pr.CircuitBreaker(1, 1, 0.2, backend=backend, name=name, flush_interval=30)
    b = pr.CircuitBreaker(1, 1, 0.2, backend=backend, name=name, flush_interval=30)
    fail(a)
    b.flush()
    time.sleep(0.25)
    assert b._acquire().__class__ is tuple  # the only slot, never given back (b "died")
    with pytest.raises(pr.CircuitOpenError):
        a.call(lambda: 1)
    time.sleep(0.25)  # no slot granted for a timeout: presumed lost
    assert a.call(lambda: 2) == 2 and a.state == "closed"


def test_decorator_and_with_block(backend: pr.RedisBackend) -> None:
    cb = pr.CircuitBreaker(1, 1, 30, backend=backend, name=prefix(), flush_interval=30)

    @cb
    def f(x: int) -> int:
        return x * 2

    assert f(2) == 4 and f.__name__ == "f"
    with pytest.raises(RuntimeError):
        with cb:
            raise RuntimeError("x")
    assert cb.state == "open"
    with pytest.raises(pr.CircuitOpenError):
        f(1)
    cb.close()
    assert cb.state == "closed" and f(3) == 6
    cb.open()
    assert cb.state == "open"
    cb.reset()
    assert cb.state == "closed"


def test_the_script_reads_no_clock(backend: pr.RedisBackend) -> None:
    """The breaker's script runs on the time its process sends (Redis's clock
    as the backend learned it), as the limiters' scripts do: no TIME per run."""
    def time_calls() -> int:
        for line in backend._command("INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_time:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0
    name = prefix()
    cb = pr.CircuitBreaker(2, 1, 0.05, backend=backend, name=name, flush_interval=30)
    before, runs = time_calls(), script_runs(backend)
    fail(cb, 2)
    assert cb.state == "open"
    now_us = backend._now_us()
    assert abs(now_us - time.time() * 1e6) < 60e6  # Redis's clock on this machine
    until = int(backend._command("HGET", f"prs:cb:{{{name}}}", "until"))
    assert until - now_us <= 50_000  # opened at a time sent before this one, for the timeout
    cb.flush()
    assert script_runs(backend) > runs and time_calls() == before
