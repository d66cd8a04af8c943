"""The asyncio forms of the Redis types (pyresilience._redis_async) against a
real, throwaway redis-server: the same decisions as the blocking calls, the
same failure policies, a loop that keeps running while Redis stalls or dies,
and cancellation that leaves the connection in step.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Iterator, List

import pytest

import pyresilience as pr
from pyresilience import _core, _redis_async

if os.environ.get("PRS_SKIP_REDIS"):
    pytest.skip("PRS_SKIP_REDIS is set", allow_module_level=True)
if not _core.HAVE_REDIS:
    pytest.fail("pyresilience was built without hiredis: run `make deps install`", pytrace=False)

from test_redis import Server, backend, prefix, server  # noqa: E402,F401  (the same throwaway server; fixtures)

ALGOS = ["gcra", "token_bucket", "fixed_window", "sliding_window_counter", "sliding_window_log"]


@pytest.fixture
def own_server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    if s.proc is not None:
        s.proc.send_signal(signal.SIGCONT)
    s.stop()


def make(backend: pr.RedisBackend, algo: str, **kw: Any) -> pr.RedisRateLimiter:
    size = dict(rate=5, burst=3) if algo in ("gcra", "token_bucket") else dict(limit=3, window=2)
    size.update(kw.pop("size", {}))
    return pr.RedisRateLimiter(backend, algo, key_prefix=prefix(), **size, **kw)


def fields(d: Any) -> tuple:
    return (d.allowed, d.limit, d.remaining, d.retry_after, d.reset_after, d.denied_by)


# ---- the same decisions as the blocking calls ---------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
def test_check_async_decides_as_check_at_explicit_times(backend: pr.RedisBackend, algo: str) -> None:
    lim = make(backend, algo)
    times = [100.0, 100.0, 100.1, 100.1, 100.2, 100.2, 100.9, 101.5, 103.0, 103.0]
    ns = [1, 1, 2, 1, 1, 3, 1, 2, 1, 4]
    sync = [fields(lim._check_at("s", n, t)) for t, n in zip(times, ns)]

    async def run() -> List[tuple]:
        return [fields(await lim._check_at_async("a", n, t)) for t, n in zip(times, ns)]

    assert asyncio.run(run()) == sync


@pytest.mark.parametrize("algo", ALGOS)
def test_check_peek_allow_reset_many_async(backend: pr.RedisBackend, algo: str) -> None:
    lim = make(backend, algo, size=dict(rate=0.001, burst=3) if algo in ("gcra", "token_bucket")
               else dict(limit=3, window=600))

    async def run() -> None:
        assert (await lim.peek_async("k", 3)).allowed
        assert (await lim.peek_async("k", 4)).allowed is False
        got = [await lim.allow_async("k") for _ in range(4)]
        assert got == [True, True, True, False]
        assert lim.peek("k").allowed is False
        d = await lim.check_async("k")
        assert d.allowed is False and d.limit == 3 and d.retry_after > 0
        await lim.reset_async("k")
        assert (await lim.check_async("k")).remaining == 2
        many = await lim.check_many_async(["m", ("m", 2), ("m", 1), b"other"])
        assert [d.allowed for d in many] == [True, True, False, True]
        assert await lim.check_many_async([]) == []
        with pytest.raises(ValueError, match="n"):
            await lim.check_async("k", 0)
        with pytest.raises(TypeError, match="key"):
            await lim.check_async(1)  # type: ignore[arg-type]

    asyncio.run(run())


def test_binary_keys_and_same_state_as_sync(backend: pr.RedisBackend) -> None:
    lim = make(backend, "fixed_window", size=dict(limit=5, window=600))
    key = b"\x00{tag}\r\n *3 " + bytes(range(256)) * 40

    async def run() -> None:
        assert (await lim.check_async(key, 2)).remaining == 3
        assert lim.check(key, 2).remaining == 1
        assert (await lim.check_async(key)).remaining == 0
        assert not (await lim.check_async(key)).allowed

    asyncio.run(run())


def test_async_connection_learns_redis_clock(server: Server) -> None:
    """The asyncio connection sends TIME when it opens, as a pooled one does,
    so an async-only process sends Redis's time: the fixed window's key is
    the window of Redis's clock (here made a day ahead through _clock)."""
    seen: List[Any] = []

    class Recording(pr.RedisBackend):
        def _clock(self, sent_us: int, got_us: int, server_us: int) -> None:
            seen.append((sent_us, got_us, server_us))
            super()._clock(sent_us, got_us, server_us)

    b = Recording(server.url, timeout=2.0, connect_timeout=2.0)
    lim = make(b, "fixed_window", size=dict(limit=5, window=60))

    async def run() -> None:
        assert (await lim.check_async("k")).allowed  # opens this loop's connection: TIME
        assert len(seen) == 1 and seen[0][0] <= seen[0][1]
        assert abs(seen[0][2] - time.time() * 1e6) < 60e6  # Redis's TIME, in microseconds
        now_s = time.time()
        day = 86400
        b._clock(int(now_s * 1e6), int(now_s * 1e6), (int(now_s) + day) * 1_000_000)
        assert (await lim.check_async("k")).remaining == 4  # a fresh window: Redis's tomorrow
        keys = [k.decode() for k in b._command("KEYS", lim.key_prefix + "*")]
        tomorrow = (int(now_s) + day) // 60
        assert any(k.endswith((f":f{tomorrow}/5", f":f{tomorrow + 1}/5")) for k in keys), keys

    asyncio.run(run())
    assert len(seen) == 2  # one connection: one TIME (and our own call)
    b.close()


def test_group_async_all_or_nothing(backend: pr.RedisBackend) -> None:
    a = make(backend, "fixed_window", size=dict(limit=2, window=600))
    b = make(backend, "gcra", size=dict(rate=0.001, burst=5))
    g = pr.RedisLimiterGroup([(a, "{t}x", 1), (b, "{t}y", 2)])

    async def run() -> None:
        assert await g.allow_async()
        assert (await g.check_async()).allowed
        d = await g.check_async()
        assert not d.allowed and d.denied_by == 0
        assert b.peek("{t}y").allowed and not b.peek("{t}y", 2).allowed  # a denied group took nothing
        sync = fields(pr.RedisLimiterGroup([(a, "{u}x", 1)])._check_at(50.0))
        assert fields(await pr.RedisLimiterGroup([(a, "{v}x", 1)])._check_at_async(50.0)) == sync

    asyncio.run(run())


def test_leases_async(backend: pr.RedisBackend) -> None:
    lim = make(backend, "gcra", size=dict(rate=0.001, burst=10), lease=pr.LeaseConfig(4, 30))

    async def run() -> None:
        got = [await lim.check_async("k") for _ in range(12)]
        assert sum(d.allowed for d in got) == 10
        assert not got[-1].allowed

    asyncio.run(run())


def test_close_async_gives_the_leases_back(backend: pr.RedisBackend) -> None:
    lim = make(backend, "gcra", size=dict(rate=0.001, burst=10), lease=pr.LeaseConfig(4, 30))

    async def run() -> None:
        await lim.close_async()  # nothing held: no I/O
        assert (await lim.check_async("k")).allowed  # takes 4, spends 1
        assert (await lim.check_async("j")).allowed
        assert not (await lim.peek_async("k", 7)).allowed  # 3 held here, 6 left in Redis
        await lim.close_async()  # 3 + 3 permits back, pipelined
        d = await lim.peek_async("k", 9)
        assert d.allowed  # 10 - 1 spent: 9 admissible again
        assert not (await lim.peek_async("k", 10)).allowed

    asyncio.run(run())


def test_noscript_after_script_flush(backend: pr.RedisBackend) -> None:
    lim = make(backend, "token_bucket")
    g = pr.RedisLimiterGroup([(lim, "g", 1)])

    async def run() -> None:
        assert (await lim.check_async("k")).allowed
        backend._command("SCRIPT", "FLUSH")
        assert (await lim.check_async("k")).remaining == 1
        backend._command("SCRIPT", "FLUSH")
        assert [d.allowed for d in await lim.check_many_async(["a", "b"])] == [True, True]
        backend._command("SCRIPT", "FLUSH")
        assert (await g.check_async()).allowed

    asyncio.run(run())


def test_acquire_async_waits_and_raises_as_acquire(backend: pr.RedisBackend) -> None:
    lim = make(backend, "gcra", size=dict(rate=200, burst=1))
    g = pr.RedisLimiterGroup([(lim, "gk", 1)])

    async def run() -> None:
        await lim.acquire_async("k")
        await lim.acquire_async("k", timeout=1)  # waits ~5 ms on the loop
        with pytest.raises(pr.RateLimitExceeded):
            await lim.acquire_async("k", timeout=0)
        with pytest.raises(ValueError, match="never be admitted"):
            await lim.acquire_async("k", 2)
        await g.acquire_async()
        await g.acquire_async(timeout=1)
        with pytest.raises(ValueError, match="never admit"):
            await pr.RedisLimiterGroup([(lim, "k", 2)]).acquire_async()

    asyncio.run(run())


def test_one_connection_per_loop_and_pipelined(backend: pr.RedisBackend) -> None:
    lim = make(backend, "fixed_window", size=dict(limit=1000, window=600))

    async def run(key: str) -> Any:
        ds = await asyncio.gather(*[lim.check_async(key) for _ in range(500)])
        assert sorted(d.remaining for d in ds) == list(range(500, 1000))
        per_loop = _redis_async._registry[backend]
        assert len(per_loop) == 1  # this loop's one connection (a closed loop's is dropped)
        conn = per_loop[(asyncio.get_running_loop(), 0)][1]
        await asyncio.gather(*[lim.check_async(key) for _ in range(10)])
        assert per_loop[(asyncio.get_running_loop(), 0)][1] is conn
        return conn

    first = asyncio.run(run("a"))
    second = asyncio.run(run("b"))  # a new loop gets its own connection ...
    assert second is not first and first.transport._sock.fileno() == -1  # ... and the old one is closed


def test_backend_close_fails_async_calls(server: Server) -> None:
    b = pr.RedisBackend(server.url)
    lim = pr.RedisRateLimiter(b, rate=1, burst=1, on_backend_error="allow", key_prefix=prefix())

    async def run() -> None:
        assert await b.ping_async()
        assert await lim.allow_async("k")
        b.close()
        with pytest.raises(pr.BackendError, match="closed"):  # closed on purpose: no policy
            await lim.check_async("k")
        with pytest.raises(pr.BackendError, match="closed"):
            await b.ping_async()

    asyncio.run(run())


# ---- failures: policies, stalls, a dead server ----------------------------------------

def policies(b: pr.RedisBackend) -> dict:
    return {p: pr.RedisRateLimiter(b, "fixed_window", limit=3, window=60, on_backend_error=p,
                                   key_prefix=prefix())
            for p in ("raise", "allow", "deny", "local")}


def test_policies_when_nothing_listens() -> None:
    b = pr.RedisBackend("redis://127.0.0.1:1/0", timeout=0.5)
    lims = policies(b)

    async def run() -> None:
        with pytest.raises(pr.BackendError, match="connect"):
            await lims["raise"].check_async("k")
        assert (await lims["allow"].check_async("k")).allowed
        d = await lims["deny"].check_async("k")
        assert not d.allowed and d.retry_after == pytest.approx(0.1)
        assert [await lims["local"].allow_async("k") for _ in range(4)] == [True, True, True, False]
        g = pr.RedisLimiterGroup([(lims["allow"], "k", 1), (lims["deny"], "k", 1)])
        assert (await g.check_async()).denied_by == 1

    asyncio.run(run())


class LoopLag:
    """The loop's longest stall while running: a task sleeping 1 ms at a time."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self.task: Any = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.001)
            self.ticks += 1
            last = now

    def __enter__(self) -> "LoopLag":
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.task.cancel()


def test_stalled_server_sigstop_loop_keeps_running(own_server: Server) -> None:
    b = pr.RedisBackend(own_server.url, timeout=0.2, connect_timeout=0.2)
    lims = policies(b)

    async def run() -> LoopLag:
        assert await lims["allow"].allow_async("warm")  # the connection is open
        assert own_server.proc is not None
        with LoopLag() as lag:
            own_server.proc.send_signal(signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                got = await asyncio.gather(
                    lims["allow"].check_async("k"), lims["deny"].check_async("k"),
                    lims["local"].check_async("k"), lims["raise"].check_async("k"),
                    return_exceptions=True)
                waited = time.monotonic() - t0
                ticks = lag.ticks
                # more calls while stalled: each within its timeout, or failing fast (circuit)
                more = await asyncio.gather(*[lims["allow"].check_async(f"x{i}") for i in range(50)])
            finally:
                own_server.proc.send_signal(signal.SIGCONT)
        assert got[0].allowed and not got[1].allowed and got[2].allowed
        assert isinstance(got[3], pr.BackendError) and "timed out" in str(got[3])
        assert all(d.allowed for d in more)
        assert waited >= 0.15 and ticks >= 10  # the calls waited; the loop ran meanwhile
        lag.waited = waited  # type: ignore[attr-defined]
        return lag

    lag = asyncio.run(run())
    print(f"\nloop lag while Redis was SIGSTOPped: worst {lag.worst * 1e3:.2f} ms over {lag.ticks} ticks")

    async def after() -> None:  # recovers by itself once Redis answers (circuit: <= 200 ms)
        deadline = time.monotonic() + 5
        while True:
            try:
                assert (await lims["raise"].check_async("back")).allowed
                return
            except pr.BackendError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

    asyncio.run(after())


def test_killed_server_policies_and_recovery(own_server: Server) -> None:
    b = pr.RedisBackend(own_server.url, timeout=0.3, connect_timeout=0.3)
    lims = policies(b)

    async def run() -> None:
        assert (await lims["raise"].check_async("k")).allowed
        with LoopLag() as lag:
            own_server.kill()
            with pytest.raises(pr.BackendError):
                await lims["raise"].check_async("k")
            assert (await lims["allow"].check_async("k")).allowed
            assert not (await lims["deny"].check_async("k")).allowed
            assert (await lims["local"].check_async("k")).allowed
        print(f"\nloop lag while Redis was dead: worst {lag.worst * 1e3:.2f} ms")
        own_server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert (await lims["raise"].check_async("k2")).allowed
                break
            except pr.BackendError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

    asyncio.run(run())


def test_circuit_shared_with_blocking_calls(own_server: Server) -> None:
    b = pr.RedisBackend(own_server.url, timeout=0.2, connect_timeout=0.2)
    lim = pr.RedisRateLimiter(b, rate=1, burst=1, key_prefix=prefix())
    own_server.kill()

    async def run() -> None:
        for _ in range(3):
            with pytest.raises(pr.BackendError):
                await lim.check_async("k")

    asyncio.run(run())
    with pytest.raises(pr.BackendError, match="consecutive failures"):  # open: the sync call fails fast
        lim.check("k")


# ---- cancellation --------------------------------------------------------------------

def test_ten_thousand_cancelled_calls_leave_the_connection_healthy(backend: pr.RedisBackend) -> None:
    lim = make(backend, "fixed_window", size=dict(limit=10**6, window=600))

    async def run() -> None:
        assert (await lim.check_async("k")).remaining == 10**6 - 1
        tasks = [asyncio.ensure_future(lim.check_async("k")) for _ in range(10_000)]
        for _ in range(3):
            await asyncio.sleep(0)  # some sent, some not yet
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() or t.done() for t in tasks)
        sent = 10**6 - 1 - (lim.peek("k").remaining + 1)  # cancelled after sending: counted in Redis
        # the connection stays in step: every later reply is the right one
        ds = await asyncio.gather(*[lim.check_async("k") for _ in range(100)])
        conn = _redis_async._registry[backend][(asyncio.get_running_loop(), 0)][1]
        assert conn.dead is None and not conn.fifo
        left = sorted(d.remaining for d in ds)
        first = lim.peek("k").remaining + 1
        assert left == list(range(first, first + 100))
        assert 0 <= sent <= 10_000

    asyncio.run(run())


def test_cancel_while_stalled_then_recover(own_server: Server) -> None:
    b = pr.RedisBackend(own_server.url, timeout=0.3, connect_timeout=0.3)
    lim = pr.RedisRateLimiter(b, "fixed_window", limit=100, window=600, key_prefix=prefix())

    async def run() -> None:
        assert (await lim.check_async("k")).remaining == 99
        assert own_server.proc is not None
        own_server.proc.send_signal(signal.SIGSTOP)
        tasks = [asyncio.ensure_future(lim.check_async("k")) for _ in range(20)]
        await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        own_server.proc.send_signal(signal.SIGCONT)
        await asyncio.gather(*tasks, return_exceptions=True)
        d = await lim.check_async("k")
        assert d.allowed and d.remaining == 99 - 20 - 1  # the cancelled ones had been sent

    asyncio.run(run())


def test_reader_parses_split_replies_and_refuses_garbage() -> None:
    """The connection's replies are parsed in C by hiredis's reader (as the
    pool's): replies split anywhere across reads come out whole and in
    order, an error reply as the class given, and a stream that is not RESP
    raises BackendError (the transport then drops the connection)."""
    from pyresilience._redis_async import RespError
    r = _core._RespReader(RespError)
    stream = b"+OK\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\nx\r\n:7\r\n-NOSCRIPT gone\r\n"
    none = object()
    out: List[Any] = []
    for i in range(len(stream)):  # one byte per read: the worst split
        r.feed(stream[i:i + 1])
        while (got := r.pop(none)) is not none:
            out.append(got)
    assert out[:5] == ["OK", 42, b"abc", None, [b"x", 7]]
    assert isinstance(out[5], RespError) and str(out[5]) == "NOSCRIPT gone"
    assert r.pop(none) is none
    r.feed(b"?what\r\n")
    with pytest.raises(pr.BackendError, match="protocol error"):
        r.pop(none)
    with pytest.raises(TypeError, match="data must be bytes"):
        r.feed("text")  # type: ignore[arg-type]


def test_resp_reader_error_reply_not_utf8() -> None:
    """An error reply's text that is not UTF-8 still gives its error (bytes
    replaced, as BackendError's message from _command words it), not a
    UnicodeDecodeError from pop()."""
    from pyresilience._redis_async import RespError
    r = _core._RespReader(RespError)
    r.feed(b"-ERR caf\xe9\r\n")
    got = r.pop(None)
    assert isinstance(got, RespError) and str(got) == "ERR caf\ufffd"


def test_op_steps_put_and_finish_without_a_server() -> None:
    """The sans-I/O op drives its transport: one send of its commands to node
    0, each reply put into the op in C, the decision from them; a reply
    beyond what the step awaits is refused; a transport failure is decided
    by the policy."""
    from pyresilience._redis_async import RespError
    b = pr.RedisBackend("redis://127.0.0.1:1/0")
    lim = pr.RedisRateLimiter(b, "gcra", rate=1, burst=5, key_prefix=prefix(), on_backend_error="allow")
    op = lim._op_many(["a", "b"])
    ((node, data, want),) = b._op_step(op)
    assert node == 0 and want == 2 and data.count(b"EVALSHA") == 2
    r = _core._RespReader(RespError)
    r.feed(b"$17\r\n1 5 4 0 1000000 0\r\n$19\r\n0 5 0 2000 900000 0\r\n")
    assert r.put(op, 0) == 1 and r.put(op, 0) == 2 and r.put(op, 0) == 0
    assert b._op_step(op) == ()
    d = b._op_finish(op)
    assert [x.allowed for x in d] == [True, False] and d[1].retry_after == pytest.approx(0.002)
    op = lim._op("check", "c")
    b._op_step(op)
    r.feed(b"$17\r\n1 5 4 0 1000000 0\r\n:1\r\n")
    assert r.put(op, 0) == 2
    with pytest.raises(ValueError, match="expects no reply"):
        r.put(op, 0)
    op = lim._op("check", "d")
    assert b._op_finish(op, "ECONN", "redis: gone").allowed  # on_backend_error="allow"
    with pytest.raises(ValueError, match="status must be 'OK', 'ECONN'.*got 'EWHAT'"):
        b._op_finish(lim._op("check", "e"), "EWHAT")
    b.close()


