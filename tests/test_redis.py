"""The Redis backend against a real, throwaway redis-server (never a mock).

A module-scoped server serves most tests; the fault tests start their own so
they can SIGKILL and restart it. redis-server must be installed (`make deps`);
without it these tests fail (set PRS_SKIP_REDIS=1 to skip them explicitly).
"""
from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import pyresilience as pr
from pyresilience import _core

if os.environ.get("PRS_SKIP_REDIS"):
    pytest.skip("PRS_SKIP_REDIS is set", allow_module_level=True)
if not _core.HAVE_REDIS:
    pytest.fail("pyresilience was built without hiredis: run `make deps install`", pytrace=False)


# ---- the throwaway server ------------------------------------------------------

class Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="prs-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.unix_url = f"unix://{self.sock}?db=1"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (make deps)", pytrace=False)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", self.sock,
             "--dir", self.dir, "--save", "", "--appendonly", "no", "--databases", "4"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def own_server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def backend(server: Server) -> Iterator[pr.RedisBackend]:
    b = pr.RedisBackend(server.url, timeout=2.0, connect_timeout=2.0)
    yield b
    b.close()


def prefix() -> str:
    return f"t{random.getrandbits(48):x}:"


# ---- backend -----------------------------------------------------------------------

def test_ping_over_tcp_and_unix_socket(server: Server) -> None:
    tcp = pr.RedisBackend(server.url)
    uds = pr.RedisBackend(server.unix_url, timeout=1)
    assert tcp.ping() is True and uds.ping() is True
    tcp._command("SET", "where", "db0")
    uds._command("SET", "where", "db1")
    assert tcp._command("GET", "where") == b"db0"
    assert uds._command("GET", "where") == b"db1"
    for b in (tcp, uds):
        b._command("DEL", "where")
    assert tcp.connections == 1
    assert repr(tcp).startswith("RedisBackend(url='redis://127.0.0.1:")
    lim = pr.RedisRateLimiter(tcp, rate=1, burst=1, on_backend_error="allow", key_prefix=prefix())
    tcp.close()
    assert tcp.closed
    with pytest.raises(pr.BackendError, match="closed"):
        tcp.ping()
    with pytest.raises(pr.BackendError, match="closed"):  # closed on purpose: no failure policy
        lim.allow("k")
    with pr.RedisBackend(server.url) as b:
        assert b.ping()
    assert b.closed


@pytest.mark.parametrize("url", [
    "", "http://h", "redis://", "redis://:1", "redis://h:0", "redis://h:65536", "redis://h:x",
    "redis://h/abc", "unix://", "unix://relative", "unix:///s?db=x", "unix:///s?nope=1", "redis://h /0",
    "redis://u:%zz@h", "redis://[::1",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        pr.RedisBackend(url)


def test_bad_backend_arguments() -> None:
    with pytest.raises(TypeError, match="url"):
        pr.RedisBackend(123)  # type: ignore[arg-type]
    for kw in ({"timeout": 0}, {"timeout": -1}, {"timeout": math.nan}, {"connect_timeout": math.inf},
               {"max_connections": 0}, {"max_connections": 5000}):
        with pytest.raises(ValueError):
            pr.RedisBackend("redis://127.0.0.1:1", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections"):
        pr.RedisBackend("redis://127.0.0.1:1", max_connections=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout"):
        pr.RedisBackend("redis://127.0.0.1:1", timeout="1")  # type: ignore[arg-type]


def test_wrong_password_is_a_backend_error(server: Server) -> None:
    b = pr.RedisBackend(f"redis://:nope@127.0.0.1:{server.port}")
    with pytest.raises(pr.BackendError, match="AUTH"):
        b.ping()


def test_acl_user_and_password_from_the_url(server: Server) -> None:
    admin = pr.RedisBackend(server.url)
    admin._command("ACL", "SETUSER", "al-ice", "on", ">p@ss:w/rd", "~*", "+@all")
    try:
        ok = pr.RedisBackend(f"redis://al-ice:p%40ss%3Aw%2Frd@127.0.0.1:{server.port}/2")
        assert ok.ping()
        ok._command("SET", "acl-db", "2")
        assert ok._command("GET", "acl-db") == b"2"
        assert admin._command("GET", "acl-db") is None  # db 2, not 0
        ok._command("DEL", "acl-db")
        bad = pr.RedisBackend(f"redis://al-ice:wrong@127.0.0.1:{server.port}/2")
        with pytest.raises(pr.BackendError, match="AUTH"):
            bad.ping()
    finally:
        admin._command("ACL", "DELUSER", "al-ice")


def test_reprs_show_configuration_and_never_a_password() -> None:
    b = pr.RedisBackend("redis://al:s3cret@127.0.0.1:1/2", timeout=0.5)
    assert repr(b) == ("RedisBackend(url='redis://al:***@127.0.0.1:1/2', connect_timeout=0.25, "
                       "timeout=0.5, max_connections=8)")
    for url, shown in [("redis://s3cret@h:1", "redis://***@h:1"), ("redis://:s3cret@h", "redis://:***@h"),
                       ("unix:///r.sock?db=1&password=s3cret&user=u", "unix:///r.sock?db=1&password=***&user=u"),
                       ("unix://u:s3cret@/r.sock", "unix://u:***@/r.sock"), ("redis://h:1/0", "redis://h:1/0")]:
        assert repr(pr.RedisBackend(url)) == f"RedisBackend(url={shown!r}, connect_timeout=0.25, " \
                                            "timeout=0.25, max_connections=8)"
    with pytest.raises(ValueError) as err:
        pr.RedisBackend("redis://al:s3cr%zzet@h")
    assert "s3cr" not in str(err.value) and "al:***@h" in str(err.value)
    lim = pr.RedisRateLimiter(b, "fixed_window", limit=5, window=60, key_prefix="api:", on_backend_error="local",
                              local_share=0.5)
    assert repr(lim) == (f"RedisRateLimiter(backend={b!r}, algorithm='fixed_window', limit=5, window=60, "
                         "key_prefix='api:', on_backend_error='local', local_share=0.5)")
    leased = pr.RedisRateLimiter(b, rate=10, burst=20, lease=pr.LeaseConfig(5, 0.1))
    assert repr(leased) == (f"RedisRateLimiter(backend={b!r}, algorithm='gcra', rate=10, burst=20, "
                            "key_prefix='prs:', on_backend_error='raise', lease=LeaseConfig(batch=5, max_hold=0.1))")
    g = pr.RedisLimiterGroup([(lim, "u", 1), (leased, b"r", 2)])
    assert repr(g) == f"RedisLimiterGroup(members=[({lim!r}, 'u', 1), ({leased!r}, b'r', 2)])"
    assert "s3cret" not in repr(g)


def test_install_hint_names_the_package() -> None:
    from pyresilience import redis as r
    assert "libhiredis-dev" in r._INSTALL_HINT and "rebuild" in r._INSTALL_HINT


# ---- limiter construction -----------------------------------------------------------

def test_bad_limiter_arguments(backend: pr.RedisBackend) -> None:
    R = pr.RedisRateLimiter
    cases = [
        (ValueError, dict(algorithm="leaky"), "algorithm"),
        (TypeError, dict(algorithm=3), "algorithm"),
        (ValueError, dict(algorithm="gcra"), "rate and burst"),
        (ValueError, dict(algorithm="gcra", rate=5), "burst"),
        (ValueError, dict(algorithm="gcra", rate=5, burst=5, limit=5, window=1), "not both"),
        (ValueError, dict(algorithm="fixed_window", limit=5), "window"),
        (ValueError, dict(algorithm="fixed_window", limit=5, window=1, rate=3), "limit and window"),
        (ValueError, dict(algorithm="gcra", rate=-1, burst=5), "rate"),
        (ValueError, dict(algorithm="gcra", rate=math.nan, burst=5), "rate"),
        (ValueError, dict(algorithm="gcra", rate=math.inf, burst=5), "rate"),
        (ValueError, dict(algorithm="gcra", rate=1, burst=0), "burst"),
        (ValueError, dict(algorithm="gcra", rate=1, burst=2.5), "burst"),
        (TypeError, dict(algorithm="gcra", rate=1, burst=True), "burst"),
        (ValueError, dict(algorithm="sliding_window_log", limit=0, window=1), "limit"),
        (ValueError, dict(algorithm="sliding_window_log", limit=5, window=-1), "window"),
        (ValueError, dict(algorithm="sliding_window_log", limit=5, window=math.nan), "window"),
        (ValueError, dict(algorithm="sliding_window_log", limit=10**7, window=1), "limit"),
        (TypeError, dict(algorithm="fixed_window", limit="5", window=1), "limit"),
        (ValueError, dict(rate=1, burst=1, key_prefix="a{b}"), "key_prefix"),
        (TypeError, dict(rate=1, burst=1, key_prefix=b"x"), "key_prefix"),
        (ValueError, dict(rate=1, burst=1, on_backend_error="ignore"), "on_backend_error"),
        (ValueError, dict(rate=1, burst=1, local_share=0.5), "local"),
        (ValueError, dict(rate=1, burst=1, on_backend_error="local", local_share=1.5), "local_share"),
        (ValueError, dict(rate=1, burst=1, on_backend_error="local", local_share=0), "local_share"),
        (ValueError, dict(rate=1, burst=4, lease=pr.LeaseConfig(5, 1)), "batch"),
        (ValueError, dict(algorithm="fixed_window", limit=5, window=1, lease=pr.LeaseConfig(1, 1)), "lease"),
        (TypeError, dict(rate=1, burst=4, lease=(2, 1)), "LeaseConfig"),
    ]
    for exc, kw, match in cases:
        with pytest.raises(exc, match=match):
            R(backend, **kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RedisBackend"):
        R("redis://x", rate=1, burst=1)  # type: ignore[arg-type]
    for bad in ((0, 1), (-1, 1), (2, 0), (2, -1), (2, math.nan), (2, math.inf)):
        with pytest.raises(ValueError):
            pr.LeaseConfig(*bad)
    with pytest.raises(TypeError):
        pr.LeaseConfig(1.5, 1)  # type: ignore[arg-type]


def test_lease_config_is_a_frozen_value() -> None:
    lease = pr.LeaseConfig(5, 1)
    assert (lease.batch, lease.max_hold) == (5, 1.0) and type(lease.max_hold) is float
    assert lease == pr.LeaseConfig(batch=5, max_hold=1.0) and lease != pr.LeaseConfig(5, 2)
    assert hash(lease) == hash(pr.LeaseConfig(5, 1.0)) and len({lease, pr.LeaseConfig(5, 1)}) == 1
    assert repr(lease) == "LeaseConfig(batch=5, max_hold=1.0)"
    with pytest.raises(AttributeError):
        lease.batch = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        pr.LeaseConfig(True, 1)
    with pytest.raises(TypeError):
        pr.LeaseConfig(1, "1")  # type: ignore[arg-type]


def test_bad_arguments_are_worded_from_the_core(backend: pr.RedisBackend) -> None:
    # The core validates and names the field and why; the binding adds the value given.
    R = pr.RedisRateLimiter
    cases = [
        (dict(rate=1, burst=0), "burst must be >= 1, got 0"),
        (dict(rate=1, burst=10**30), "burst must be <= 2**50, got " + str(10**30)),
        (dict(rate=1e13, burst=1), "rate must be between 1e-9 and 1e12 per second, got 10000000000000.0"),
        (dict(algorithm="fixed_window", limit=5, window=0), "window must be >= 1 microsecond, got 0"),
        (dict(rate=1, burst=4, lease=pr.LeaseConfig(5, 1)), "lease.batch must not exceed burst (batch <= burst), got 5"),
        (dict(rate=1, burst=4, lease=pr.LeaseConfig(2, 7200)), "lease.max_hold must be <= 3600 seconds, got 7200.0"),
        (dict(rate=1, burst=1, on_backend_error=3), "on_backend_error must be 'raise', 'allow', 'deny' or 'local', got 3"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError) as err:
            R(backend, **kw)  # type: ignore[arg-type]
        assert str(err.value) == message
    for kw, message in [(dict(timeout=0), "timeout must be >= 1 microsecond, got 0"),
                        (dict(connect_timeout=4000), "connect_timeout must be <= 3600 seconds, got 4000"),
                        (dict(max_connections=2000), "max_connections must be between 1 and 1024, got 2000")]:
        with pytest.raises(ValueError) as err:
            pr.RedisBackend(backend.url, **kw)  # type: ignore[arg-type]
        assert str(err.value) == message


def test_str_arguments_with_nul_are_refused(backend: pr.RedisBackend) -> None:
    # A declared str parameter filling a C string (the declared STR kind with a field).
    with pytest.raises(ValueError, match="key_prefix must not contain NUL characters"):
        pr.RedisRateLimiter(backend, rate=1, burst=1, key_prefix="a\0b")
    with pytest.raises(ValueError, match="url must not contain NUL characters"):
        pr.RedisBackend("redis://127.0.0.1:1/0\0x")


def test_bad_call_arguments(backend: pr.RedisBackend) -> None:
    lim = pr.RedisRateLimiter(backend, rate=10, burst=10, key_prefix=prefix())
    with pytest.raises(TypeError, match="key"):
        lim.allow(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        lim.check(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n"):
        lim.check("k", 0)
    with pytest.raises(ValueError, match="n"):
        lim.check("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n"):
        lim.check("k", True)
    with pytest.raises(ValueError, match="timeout"):
        lim.acquire("k", 1, timeout=-1)
    with pytest.raises(TypeError):
        lim.check_many([("k", 1, 2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="never"):
        lim.acquire("k", 11)
    assert not lim.allow("k", 10**30)  # beyond int64: a decision, never an error


# ---- decisions --------------------------------------------------------------------

def test_check_returns_the_in_process_decision_type(backend: pr.RedisBackend) -> None:
    lim = pr.RedisRateLimiter(backend, "token_bucket", rate=1, burst=3, key_prefix=prefix())
    d = lim.check("user")
    assert type(d) is pr.Decision
    assert d.allowed and d.limit == 3 and d.remaining == 2
    h = d.headers()
    assert h["X-RateLimit-Limit"] == "3" and h["X-RateLimit-Remaining"] == "2"
    assert lim.check("user", 2).allowed
    d = lim.check("user")
    assert not d.allowed and 0.9 < d.retry_after <= 1.0
    assert not lim.peek("user").allowed
    lim.reset("user")
    assert lim.check("user", 3).allowed
    assert lim.algorithm == "token_bucket" and lim.rate == 1 and lim.burst == 3
    assert "token_bucket" in repr(lim)


def _schedule(seed: int, steps: int, max_gap_us: int) -> List[Tuple[float, int]]:
    rnd = random.Random(seed)
    t_us = 0
    out = []
    for _ in range(steps):
        t_us += rnd.randrange(0, max_gap_us) * 7 + 3  # odd microseconds: never exactly on a boundary
        out.append((t_us, rnd.choice((1, 1, 2))))
    return out


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket", "fixed_window", "sliding_window_counter",
                                       "sliding_window_log"])
def test_bound_matches_the_in_process_class(backend: pr.RedisBackend, algorithm: str) -> None:
    """The same schedule through Redis (time override) and the in-process class
    (ManualClock): both respect the algorithm's bound; the exact algorithms make
    the same decisions."""
    base_us = 1_700_000_000 * 1_000_000  # a multiple of every window below
    clock = pr.ManualClock()
    if algorithm in ("gcra", "token_bucket"):
        rate, burst = 20.0, 5
        red = pr.RedisRateLimiter(backend, algorithm, rate=rate, burst=burst, key_prefix=prefix())
        loc = pr.GCRA(rate, burst, clock=clock) if algorithm == "gcra" else pr.TokenBucket(burst, rate, clock=clock)
    else:
        limit, window = 5, 0.25
        red = pr.RedisRateLimiter(backend, algorithm, limit=limit, window=window, key_prefix=prefix())
        cls = {"fixed_window": pr.FixedWindow, "sliding_window_counter": pr.SlidingWindowCounter,
               "sliding_window_log": pr.SlidingWindowLog}[algorithm]
        loc = cls(limit, window, clock=clock)
    sched = _schedule(hash(algorithm) & 0xffff, 300, 3000)
    got_r, got_l = [], []
    for t_us, n in sched:
        clock.set(t_us / 1e6)
        dr = red._check_at("k", n, (base_us + t_us) / 1e6)
        dl = loc.check(n)
        got_r.append((t_us, n, dr.allowed))
        got_l.append((t_us, n, dl.allowed))
    for got in (got_r, got_l):
        admitted = [(t, n) for t, n, ok in got if ok]
        assert len(admitted) > 10
        for i, (t0, _) in enumerate(admitted):
            if algorithm in ("gcra", "token_bucket"):
                total = 0
                for t1, n1 in admitted[i:]:
                    total += n1
                    assert total <= burst + rate * (t1 - t0) / 1e6 + 1e-9
            elif algorithm == "sliding_window_log":
                assert sum(n1 for t1, n1 in admitted[i:] if t1 - t0 < 250_000) <= limit
            else:  # per aligned window
                w = t0 // 250_000
                assert sum(n1 for t1, n1 in admitted if t1 // 250_000 == w) <= limit
    if algorithm != "sliding_window_counter":
        assert [ok for *_, ok in got_r] == [ok for *_, ok in got_l]


def _fork_worker(url: str, pfx: str, calls: int) -> Tuple[int, int]:
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            b = pr.RedisBackend(url, timeout=5)
            lim = pr.RedisRateLimiter(b, rate=1e-6, burst=500, key_prefix=pfx)
            n = sum(lim.allow("shared") for _ in range(calls))
            os.write(wfd, str(n).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, r


def test_four_processes_share_one_limit(server: Server) -> None:
    pfx = prefix()
    kids = [_fork_worker(server.url, pfx, 300) for _ in range(4)]
    total = 0
    for pid, fd in kids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        with os.fdopen(fd, "rb") as f:
            total += int(f.read())
    assert total == 500  # 1200 asked, exactly the shared burst admitted


def test_threads_share_a_small_pool_exactly(server: Server) -> None:
    b = pr.RedisBackend(server.url, max_connections=2, timeout=5)
    lim = pr.RedisRateLimiter(b, "sliding_window_log", limit=333, window=3600, key_prefix=prefix())
    counts = [0] * 8

    def run(i: int) -> None:
        counts[i] = sum(lim.allow("k") for _ in range(100))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(counts) == 333
    assert b.connections <= 2


# ---- keys ---------------------------------------------------------------------------

HOSTILE = ["with space", "cr\r\nlf", "100%s%n", "{tag}a", "{tag}b", "}{", "{}", "nul\0x", "nul\0y", "",
           "*3\r\n$3\r\nDEL\r\n", "ключ", b"\xff\xfe bytes", "x" * (1 << 20)]


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket", "fixed_window", "sliding_window_counter",
                                       "sliding_window_log"])
def test_hostile_keys_are_distinct_and_binary_safe(backend: pr.RedisBackend, algorithm: str) -> None:
    kw = dict(rate=0.001, burst=2) if algorithm in ("gcra", "token_bucket") else dict(limit=2, window=60)
    lim = pr.RedisRateLimiter(backend, algorithm, key_prefix=prefix(), **kw)  # type: ignore[arg-type]
    for key in HOSTILE:
        assert lim.check(key, 2).allowed, repr(key)[:40]
        assert not lim.check(key).allowed
    decisions = lim.check_many([(k, 1) for k in HOSTILE])
    assert not any(d.allowed for d in decisions)
    lim.reset("{tag}a")
    assert lim.allow("{tag}a", 2) and not lim.allow("{tag}b")
    assert lim._redis_key("{tag}a") != lim._redis_key("{tag}b")


def test_keys_of_a_group_share_a_hash_tag(backend: pr.RedisBackend) -> None:
    a = pr.RedisRateLimiter(backend, rate=1, burst=5, key_prefix=prefix())
    b = pr.RedisRateLimiter(backend, "fixed_window", limit=5, window=60, key_prefix=prefix())
    assert pr.RedisLimiterGroup([(a, "{acct1}user", 1), (b, "{acct1}global", 1)]).same_slot
    assert not pr.RedisLimiterGroup([(a, "user:1", 1), (b, "global", 1)]).same_slot


# ---- batches, groups, leases -----------------------------------------------------------

def test_check_many_in_one_round_trip(backend: pr.RedisBackend) -> None:
    lim = pr.RedisRateLimiter(backend, "fixed_window", limit=3, window=3600, key_prefix=prefix())
    ds = lim.check_many([("a", 1), ("b", 3), ("a", 2), ("a", 1), "c", ("b", 1)])
    assert [d.allowed for d in ds] == [True, True, True, False, True, False]
    assert [d.remaining for d in ds[:3]] == [2, 0, 0]
    assert lim.check_many([]) == []


class _ClearsOnIndex:
    """An n whose __index__ empties the list being parsed (the caller's list,
    and the pair it came from): the binding must hold what it reads."""

    def __init__(self, *lists: list) -> None:  # type: ignore[type-arg]
        self.lists = lists

    def __index__(self) -> int:
        for lst in self.lists:
            lst.clear()
        return 1


def test_check_many_holds_its_requests_when_an_n_mutates_them(backend: pr.RedisBackend) -> None:
    lim = pr.RedisRateLimiter(backend, "fixed_window", limit=3, window=3600, key_prefix=prefix())
    pair: list = [("k" * 40 + "a").encode()]  # type: ignore[type-arg]
    requests: list = [pair, ("k" * 40 + "b", 1), ("k" * 40 + "c").encode()]  # type: ignore[type-arg]
    pair.append(_ClearsOnIndex(requests, pair))
    ds = lim.check_many(requests)
    assert [d.allowed for d in ds] == [True, True, True] and requests == [] and pair == []
    assert lim.check("k" * 40 + "a").remaining == 1 and lim.check("k" * 40 + "c").remaining == 1
    requests = [("k" * 40 + "d", 1), ("k" * 40 + "e", 1)]
    requests[0] = ("k" * 40 + "d", _ClearsOnIndex(requests))
    op = lim._op_many(requests)
    assert backend._op_step(op)[0][2] >= 2 and requests == []


def test_group_holds_its_members_when_an_n_mutates_them(backend: pr.RedisBackend) -> None:
    lim = pr.RedisRateLimiter(backend, "fixed_window", limit=3, window=3600, key_prefix=prefix())
    members: list = [(lim, "{g}" + "u" * 40, 1), (lim, "{g}" + "v" * 40, 1)]  # type: ignore[type-arg]
    members[0] = (lim, "{g}" + "u" * 40, _ClearsOnIndex(members))
    g = pr.RedisLimiterGroup(members)
    assert members == [] and [m[1] for m in g.members] == ["{g}" + "u" * 40, "{g}" + "v" * 40]
    assert g.allow()


def test_group_is_all_or_nothing(backend: pr.RedisBackend) -> None:
    user = pr.RedisRateLimiter(backend, "token_bucket", rate=0.001, burst=3, key_prefix=prefix())
    glob = pr.RedisRateLimiter(backend, "fixed_window", limit=4, window=3600, key_prefix=prefix())
    g1 = pr.RedisLimiterGroup([(user, "{t}u1", 1), (glob, "{t}all", 1)])
    for _ in range(3):
        assert g1.allow()
    d = g1.check()
    assert not d.allowed and d.denied_by == 0
    g2 = pr.RedisLimiterGroup([(user, "{t}u2", 1), (glob, "{t}all", 1)])
    assert g2.allow()
    d = g2.check()
    assert not d.allowed and d.denied_by == 1
    assert user.peek("{t}u2").remaining == 1  # the denied group took nothing from the user
    with pytest.raises(pr.RateLimitExceeded):
        g2.acquire(timeout=0)
    with pytest.raises(TypeError):
        pr.RedisLimiterGroup([("x", "k", 1)])  # type: ignore[list-item]
    other = pr.RedisRateLimiter(pr.RedisBackend(backend.url), rate=1, burst=1)
    with pytest.raises(ValueError, match="RedisBackend"):
        pr.RedisLimiterGroup([(user, "a", 1), (other, "b", 1)])
    with pytest.raises(ValueError):
        pr.RedisLimiterGroup([])


def _evalsha_calls(b: pr.RedisBackend) -> int:
    info = b._command("INFO", "commandstats").decode()
    for line in info.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_leases_cut_round_trips_and_never_over_admit(backend: pr.RedisBackend) -> None:
    pfx = prefix()
    lim = pr.RedisRateLimiter(backend, rate=2000, burst=400, key_prefix=pfx, lease=pr.LeaseConfig(50, 0.05))
    strict = pr.RedisRateLimiter(backend, rate=2000, burst=400, key_prefix=pfx)
    before = _evalsha_calls(backend)
    t0 = time.monotonic()
    admitted = sum(lim.allow("k") for _ in range(5000))
    elapsed = time.monotonic() - t0
    trips = _evalsha_calls(backend) - before
    assert 400 <= admitted <= 400 + 2000 * elapsed + 1
    assert trips * 10 <= admitted
    lim.close()  # gives back what is held
    assert strict.peek("k").remaining >= 0
    assert repr(lim).endswith("lease=LeaseConfig(batch=50, max_hold=0.05))")


def test_leases_under_threads_never_over_admit(backend: pr.RedisBackend) -> None:
    lim = pr.RedisRateLimiter(backend, rate=1e-6, burst=500, key_prefix=prefix(),
                              lease=pr.LeaseConfig(20, 5.0))
    counts = [0] * 8

    def run(i: int) -> None:
        counts[i] = sum(lim.allow("k") for _ in range(150))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert 500 - 8 * 20 <= sum(counts) <= 500


def test_objects_are_collectable(backend: pr.RedisBackend) -> None:
    import gc
    import weakref
    lim = pr.RedisRateLimiter(backend, rate=1, burst=1, on_backend_error="local", key_prefix=prefix())
    group = pr.RedisLimiterGroup([(lim, "a", 1)])
    lim.cycle = group  # type: ignore[attr-defined]  # a reference cycle through a Python attribute
    refs = [weakref.ref(lim), weakref.ref(group)]
    del lim, group
    gc.collect()
    assert all(r() is None for r in refs)


def test_acquire_sync_and_async(backend: pr.RedisBackend) -> None:
    # rate 5: a 200 ms wait, so that the timeout=0 calls that follow each
    # wait come well before the next admission even on a loaded machine.
    lim = pr.RedisRateLimiter(backend, rate=5, burst=1, key_prefix=prefix())
    lim.acquire("k")
    t0 = time.monotonic()
    lim.acquire("k", timeout=1)  # waits about 200 ms
    assert time.monotonic() - t0 < 1
    with pytest.raises(pr.RateLimitExceeded):
        lim.acquire("k", timeout=0)

    async def main() -> None:
        await lim.acquire_async("k", timeout=1)
        with pytest.raises(pr.RateLimitExceeded):
            await lim.acquire_async("k", timeout=0)

    asyncio.run(main())


def test_group_acquire_async_takes_timeout_as_acquire_does(backend: pr.RedisBackend) -> None:
    # The limiter and the group share one async wait: the same timeout rules
    # as the sync acquire (a negative timeout is a ValueError, not "expired").
    # rate 1: the next admission is a second after the one taken.
    lim = pr.RedisRateLimiter(backend, rate=1, burst=1, key_prefix=prefix())
    g = pr.RedisLimiterGroup([(lim, "k", 1)])
    with pytest.raises(ValueError, match="timeout"):
        g.acquire(timeout=-1)

    async def main() -> None:
        with pytest.raises(ValueError, match="timeout"):
            await g.acquire_async(timeout=-1)
        await g.acquire_async(timeout=1)
        with pytest.raises(pr.RateLimitExceeded):
            await g.acquire_async(timeout=0)
        with pytest.raises(ValueError, match="never"):
            await pr.RedisLimiterGroup([(lim, "k", 2)]).acquire_async()

    asyncio.run(main())


def test_waits_raise_the_backends_own_message() -> None:
    # acquire and acquire_async run the binding's one rate wait; a failed
    # round trip raises the backend's words (naming the server), not a generic
    # wording of the status.
    def limiter() -> pr.RedisRateLimiter:
        b = pr.RedisBackend("redis://127.0.0.1:1", timeout=0.05, connect_timeout=0.05)
        return pr.RedisRateLimiter(b, rate=1, burst=1)

    waits = [lambda: limiter().acquire("k"),
             lambda: pr.RedisLimiterGroup([(limiter(), "k", 1)]).acquire(),
             lambda: asyncio.run(limiter().acquire_async("k")),
             lambda: asyncio.run(pr.RedisLimiterGroup([(limiter(), "k", 1)]).acquire_async())]
    for wait in waits:
        with pytest.raises(pr.BackendError, match="cannot connect to 127.0.0.1:1"):
            wait()
    closed = limiter()
    closed.backend.close()
    with pytest.raises(pr.BackendError, match="closed"):
        closed.acquire("k")


def test_group_wait_names_the_denying_member(backend: pr.RedisBackend) -> None:
    full = pr.RedisRateLimiter(backend, "fixed_window", limit=1, window=3600, key_prefix=prefix())
    free = pr.RedisRateLimiter(backend, rate=100, burst=100, key_prefix=prefix())
    assert full.allow("k")
    g = pr.RedisLimiterGroup([(free, "a", 1), (full, "k", 1)])
    with pytest.raises(pr.RateLimitExceeded) as err:
        g.acquire(timeout=0)
    assert err.value.decision.denied_by == 1
    with pytest.raises(ValueError, match="never"):
        pr.RedisLimiterGroup([(full, "k", 2)]).acquire()
    small = pr.RedisRateLimiter(backend, rate=1, burst=10, key_prefix=prefix())
    with pytest.raises(ValueError, match=r"n=11 can never be admitted .*\(limit 10\)"):
        small.acquire("x", 11)
    with pytest.raises(ValueError, match="timeout"):
        free._async_waiter("k", 1, -1)


def test_a_wait_asks_redis_once_per_retry_after(backend: pr.RedisBackend) -> None:
    # A Redis wait sleeps each step's whole delay before the next round trip
    # (not a poll every slice): about two EVALSHA calls for one half-second wait.
    lim = pr.RedisRateLimiter(backend, rate=2, burst=1, key_prefix=prefix())
    lim.acquire("k")
    before = _evalsha_calls(backend)
    lim.acquire("k")
    assert _evalsha_calls(backend) - before <= 4


# ---- faults -------------------------------------------------------------------------

def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("policy", ["raise", "allow", "deny", "local"])
def test_sigkill_mid_load_then_restart(own_server: Server, policy: str) -> None:
    timeout = 0.1
    b = pr.RedisBackend(own_server.url, timeout=timeout, connect_timeout=timeout, max_connections=4)
    kw = {"local_share": 0.5} if policy == "local" else {}
    lim = pr.RedisRateLimiter(b, rate=1000, burst=10, on_backend_error=policy, **kw)  # type: ignore[arg-type]
    for _ in range(20):
        lim.check("k")
    fds = _fds()
    stop = threading.Event()
    calls: List[Tuple[float, float, object]] = []  # (start, duration, outcome)

    def load() -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                outcome: object = lim.check("k").allowed
            except pr.BackendError:
                outcome = "raised"
            calls.append((t, time.monotonic() - t, outcome))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.05)
        own_server.kill()  # mid-load
        killed = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = [c for c in calls if c[0] > killed]
    assert len(after) > 20
    assert max(d for _, d, _ in calls) < 2.0  # a bound against a hang (a connect or read without its timeout), loose for loaded machines
    expected = {"raise": {"raised"}, "allow": {True}, "deny": {False}, "local": {True, False}}[policy]
    assert {o for *_, o in after} == expected
    own_server.start()
    back = time.monotonic()
    while True:
        try:
            lim.peek("k")
            if policy == "raise" or b.ping():
                break
        except pr.BackendError:
            pass
        assert time.monotonic() - back < 1.0
        time.sleep(0.005)
    assert b.ping()
    assert b.connections <= 4 and _fds() <= fds + 4  # at most the pool: nothing leaked


POLICIES = ["raise", "deny", "local", "allow"]  # strictest first


def _member(b: pr.RedisBackend, policy: str, burst: int = 2) -> pr.RedisRateLimiter:
    kw = {"local_share": 1.0} if policy == "local" else {}
    return pr.RedisRateLimiter(b, rate=0.001, burst=burst, on_backend_error=policy, **kw)  # type: ignore[arg-type]


def _left(lim: pr.RedisRateLimiter, key: str) -> int:
    """Permits lim's local fallback still holds for key (peek reports what
    would remain after taking one)."""
    d = lim.peek(key)
    return d.remaining + 1 if d.allowed else 0


@pytest.fixture
def dead_backend(own_server: Server) -> Iterator[pr.RedisBackend]:
    """A backend whose real redis-server has been stopped (SIGKILL)."""
    b = pr.RedisBackend(own_server.url, timeout=0.1, connect_timeout=0.1)
    assert b.ping()
    own_server.kill()
    yield b
    b.close()


@pytest.mark.parametrize("first", POLICIES)
@pytest.mark.parametrize("second", POLICIES)
def test_group_under_failure_applies_each_members_policy(dead_backend: pr.RedisBackend, first: str,
                                                         second: str) -> None:
    # Redis is down: each member's own policy applies, the strictest outcome wins
    # (raise > deny > local > allow), whatever the order of the members.
    g = pr.RedisLimiterGroup([(_member(dead_backend, first), "u", 1), (_member(dead_backend, second), "r", 1)])
    policies = (first, second)
    outcomes = []
    for _ in range(4):
        try:
            d = g.check()
        except pr.BackendError:
            outcomes.append("raised")
            continue
        outcomes.append((d.allowed, d.denied_by))
    if "raise" in policies:
        assert outcomes == ["raised"] * 4
    elif "deny" in policies:
        assert outcomes == [(False, policies.index("deny"))] * 4
    elif "local" in policies:
        # the local limiters (burst 2 each) admit twice, then the first local member denies
        assert outcomes == [(True, None)] * 2 + [(False, policies.index("local"))] * 2
    else:
        assert outcomes == [(True, None)] * 4


def test_group_route_limit_keeps_raising_when_global_is_local(dead_backend: pr.RedisBackend) -> None:
    # The reported case: a global limit falling back locally must not silence a
    # route limit whose policy is "raise".
    glob = _member(dead_backend, "local", burst=100)
    route = _member(dead_backend, "raise", burst=100)
    g = pr.RedisLimiterGroup([(glob, "u", 1), (route, "r", 1)])
    for _ in range(10):
        with pytest.raises(pr.BackendError):
            g.check()
    assert _left(glob, "u") == 100  # the raising group took nothing locally


def test_group_local_members_are_all_or_nothing(dead_backend: pr.RedisBackend) -> None:
    big = _member(dead_backend, "local", burst=3)
    small = _member(dead_backend, "local", burst=1)
    opener = _member(dead_backend, "allow", burst=5)
    g = pr.RedisLimiterGroup([(opener, "o", 1), (big, "u", 1), (small, "r", 1)])
    d = g.check()
    assert d.allowed and d.remaining == 0  # the most restrictive member: small (0 left) or allow (0)
    assert _left(big, "u") == 2 and _left(small, "r") == 0
    for _ in range(3):
        d = g.check()
        assert not d.allowed and d.denied_by == 2
    assert _left(big, "u") == 2  # none consumed when one denies
    # one local limiter named twice (same key): its demand counts once per appearance
    twice = pr.RedisLimiterGroup([(big, "u", 2), (big, "u", 1)])
    assert not twice.allow()  # 3 do not fit in 2: nothing taken
    assert _left(big, "u") == 2
    once_each = pr.RedisLimiterGroup([(big, "u", 1), (big, "u", 1)])
    assert once_each.allow()
    assert _left(big, "u") == 0
    # a deny member is stricter than local: the local limiters are not touched
    fresh = _member(dead_backend, "local", burst=3)
    g2 = pr.RedisLimiterGroup([(fresh, "x", 1), (_member(dead_backend, "deny"), "y", 1)])
    d = g2.check()
    assert not d.allowed and d.denied_by == 1 and d.retry_after == pytest.approx(0.1)
    assert _left(fresh, "x") == 3
    # an allow member whose n exceeds its limit can never be admitted
    g3 = pr.RedisLimiterGroup([(fresh, "x", 1), (_member(dead_backend, "allow", burst=2), "z", 3)])
    d = g3.check()
    assert not d.allowed and d.denied_by == 1 and math.isinf(d.retry_after)
    assert _left(fresh, "x") == 3


def test_group_local_members_under_threads_stay_all_or_nothing(dead_backend: pr.RedisBackend) -> None:
    a = _member(dead_backend, "local", burst=50)
    b = _member(dead_backend, "local", burst=30)
    g = pr.RedisLimiterGroup([(a, "u", 1), (b, "r", 1)])
    admitted = [0] * 4
    singles = [0] * 4

    def run(i: int) -> None:
        for _ in range(40):
            admitted[i] += g.allow()
            singles[i] += a.allow("u")  # competes for a's local tokens outside the group

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(admitted) == 30 - _left(b, "r")
    assert sum(admitted) + sum(singles) == 50 - _left(a, "u")


def test_bare_core_types_apply_the_local_policy_themselves(dead_backend: pr.RedisBackend) -> None:
    # The policy and its in-process fallback live in the C core: the bare
    # _core types, with no facade around them, decide locally when Redis fails.
    lim = _core.RedisRateLimiter(dead_backend, rate=0.001, burst=2, on_backend_error="local")
    assert [lim.allow("u") for _ in range(3)] == [True, True, False]
    other = _core.RedisRateLimiter(dead_backend, rate=0.001, burst=3, on_backend_error="local")
    g = _core.RedisLimiterGroup([(other, "u", 1), (lim, "v", 2)])
    d = g.check()
    assert d.allowed and d.remaining == 0
    d = g.check()
    assert not d.allowed and d.denied_by == 1
    assert other.peek("u").remaining == 1  # the denied group took nothing


def test_stalled_server_every_call_within_timeout(own_server: Server) -> None:
    timeout = 0.08
    b = pr.RedisBackend(own_server.url, timeout=timeout, connect_timeout=timeout)
    lim = pr.RedisRateLimiter(b, "fixed_window", limit=10**6, window=60, on_backend_error="deny")
    assert lim.allow("k")
    assert own_server.proc is not None
    own_server.proc.send_signal(signal.SIGSTOP)
    try:
        worst = 0.0
        for _ in range(10):
            t = time.monotonic()
            d = lim.check("k")
            worst = max(worst, time.monotonic() - t)
            assert not d.allowed and d.retry_after == pytest.approx(0.1)
        assert worst < 2.0
    finally:
        own_server.proc.send_signal(signal.SIGCONT)
    back = time.monotonic()
    while not lim.allow("k"):
        assert time.monotonic() - back < 1.0
        time.sleep(0.005)


class HostileServer:
    """A fake Redis on 127.0.0.1 (a free port) that answers every request on a
    connection with `reply` (bytes, or a callable(sock) that writes its own)."""

    def __init__(self, reply: object) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            while c.recv(65536):
                if callable(self.reply):
                    self.reply(c)
                else:
                    assert isinstance(self.reply, bytes)
                    c.sendall(self.reply)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def _drip(c: socket.socket) -> None:  # a valid-looking reply, one byte per 0.2 s
    for ch in b"*2\r\n:1\r\n:2\r\n":
        c.sendall(bytes([ch]))
        time.sleep(0.2)


def _endless(c: socket.socket) -> None:  # an array of arrays that never ends, as fast as it goes
    c.sendall(b"*65536\r\n")
    inner = b"*65536\r\n" + b":1\r\n" * 65536
    while True:
        c.sendall(inner)


HOSTILE_REPLIES = {
    "huge_array": b"*2147483647\r\n",
    "huge_nested": b"*3\r\n" + b"*65536\r\n" * 6,
    "negative_array": b"*-7\r\n",
    "huge_bulk": b"$2147483647\r\nabc",
    "drip": _drip,
    "endless": _endless,
}

# The README's bound: a call returns within `timeout` plus a few milliseconds.
# The assert is generous (scheduling on a loaded machine): the point is 0.25 s
# against the seconds these replies used to cost.
MARGIN = 0.75


@pytest.mark.parametrize("name", sorted(HOSTILE_REPLIES))
@pytest.mark.parametrize("policy", ["raise", "deny"])
def test_hostile_replies_end_within_timeout(name: str, policy: str) -> None:
    srv = HostileServer(HOSTILE_REPLIES[name])
    timeout = 0.25
    try:
        b = pr.RedisBackend(f"redis://127.0.0.1:{srv.port}", timeout=timeout, connect_timeout=timeout)
        lim = pr.RedisRateLimiter(b, rate=10, burst=10, on_backend_error=policy)  # type: ignore[arg-type]
        for _ in range(3):  # three failures open the backend's circuit: later calls fail at once
            t = time.monotonic()
            if policy == "raise":
                with pytest.raises(pr.BackendError, match="timed out|protocol error"):
                    lim.check("k")
            else:
                d = lim.check("k")
                assert not d.allowed and d.retry_after == pytest.approx(0.1)
            took = time.monotonic() - t
            assert took < timeout + MARGIN, f"{name}: a call took {took:.3f} s"
        b.close()
    finally:
        srv.close()


@pytest.mark.parametrize("name", ["huge_array", "drip"])
def test_hostile_reply_to_auth_ends_within_timeout(name: str) -> None:
    # the bound covers the connection's own setup (AUTH, SELECT) too
    srv = HostileServer(HOSTILE_REPLIES[name])
    try:
        b = pr.RedisBackend(f"redis://user:secret@127.0.0.1:{srv.port}/3", timeout=0.25, connect_timeout=0.25)
        t = time.monotonic()
        with pytest.raises(pr.BackendError, match="AUTH") as err:
            b.ping()
        assert time.monotonic() - t < 0.25 + MARGIN
        assert "secret" not in str(err.value)
        b.close()
    finally:
        srv.close()


def test_large_legitimate_replies_still_pass(server: Server) -> None:
    # the bounds leave room for what a limiter or a tool reads: a 10,000-member
    # group's reply, and raw commands returning tens of thousands of values
    b = pr.RedisBackend(server.url, timeout=5)
    key = f"{prefix()}list"
    b._command("RPUSH", key, *range(60))
    for _ in range(999):
        b._command("RPUSH", key, *range(60))
    assert len(b._command("LRANGE", key, 0, -1)) == 60_000
    b._command("DEL", key)
    lim = pr.RedisRateLimiter(b, "fixed_window", limit=10, window=60, key_prefix=prefix())
    g = pr.RedisLimiterGroup([(lim, f"{{t}}{i}", 1) for i in range(1000)])
    assert g.check().allowed
    ds = lim.check_many([f"m{i}" for i in range(20_000)])
    assert len(ds) == 20_000 and all(d.allowed for d in ds)
    b.close()


def test_script_flush_under_load_reaches_no_caller(server: Server) -> None:
    b = pr.RedisBackend(server.url, timeout=5)
    admin = pr.RedisBackend(server.url, timeout=5)
    lim = pr.RedisRateLimiter(b, "sliding_window_counter", limit=10**6, window=60, key_prefix=prefix())
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            admin._command("SCRIPT", "FLUSH")
            time.sleep(0.001)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        for _ in range(300):
            assert lim.allow("k")
        for d in lim.check_many([("k", 1)] * 50):
            assert d.allowed
    finally:
        stop.set()
        t.join()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_parent_and_child_both_work(server: Server) -> None:
    b = pr.RedisBackend(server.url, timeout=5)
    lim = pr.RedisRateLimiter(b, rate=0.001, burst=100, key_prefix=prefix(), lease=pr.LeaseConfig(10, 60))
    assert lim.allow("f")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = b.connections == 0 and all(lim.allow("f") for _ in range(15))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert all(lim.allow("f") for _ in range(9))  # the parent's own lease
    # 1 + 9 by the parent's lease, 15 by the child's (two leases): 30 taken
    assert lim.peek("f").remaining == 100 - 30 - 1
    assert b.ping()


def test_readme_redis_block_runs(server: Server) -> None:
    import re
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "RedisBackend(" in b]
    assert blocks
    for code in blocks:
        code = code.replace("redis://127.0.0.1:6379/0", server.url)
        exec(compile(code, "README.md (redis)", "exec"), {"__name__": "readme"})


# ---- the C suite's temporary directories ------------------------------------------

@pytest.mark.parametrize("mode", ["pass", "fail", "crash", "hang"])
def test_c_suite_leaves_no_temp_dirs(mode: str, tmp_path: Path) -> None:
    # The C runner gives each test a directory of its own and removes it after
    # the test's process ends, however it ends (the process leaves by _exit(),
    # so nothing it registers with atexit runs; or a timeout kills it).
    root = Path(__file__).resolve().parent.parent
    if not (root / "Makefile").exists() or shutil.which("make") is None:
        pytest.skip("needs the source tree and make")
    built = subprocess.run(["make", "-s", "build/c/run_tests"], cwd=root, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    tmp = Path(tempfile.mkdtemp(prefix="prs-c-"))  # short: a unix socket path has ~107 bytes
    out = tmp_path / "server-dir"
    env = dict(os.environ, TMPDIR=str(tmp), PRS_TEST_PROBE=mode, PRS_TEST_PROBE_OUT=str(out),
               PRS_TEST_TIMEOUT="2")
    env.pop("PRS_SKIP_REDIS", None)
    names = ["redis_tmpdir_probe"] + (["redis_ping_tcp_unix_db"] if mode == "pass" else [])
    try:
        r = subprocess.run([str(root / "build/c/run_tests"), *names], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == (0 if mode == "pass" else 1), r.stdout + r.stderr
        server_dir = Path(out.read_text().strip())
        assert server_dir.name.startswith("prs-redis-") and tmp in server_dir.parents
        assert not server_dir.exists()
        assert list(tmp.iterdir()) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- TTLs (last: covers every key the tests above wrote) ------------------------------

def test_no_key_of_ours_lives_forever(backend: pr.RedisBackend) -> None:
    cursor, keys = b"0", []
    while True:
        cursor, batch = backend._command("SCAN", cursor, "COUNT", 1000)
        keys += batch
        if cursor == b"0":
            break
    assert len(keys) > 20
    forever = [k for k in keys if backend._command("PTTL", k) == -1]
    assert forever == []


def test_mypy_passes_on_example() -> None:
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_redis.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr

