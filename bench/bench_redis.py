"""Redis rate limiting: decisions per second against a local redis-server.

One throwaway redis-server (free port, temp dir) serves every row, started and
stopped here. Rows, all admitting (limits far above what the loop reaches):

* the floor through our own connection: a PING round trip, and an EVALSHA of
  an empty script (``return 0``), both via RedisBackend (GIL released during I/O);
* ours: RedisRateLimiter.check() for gcra and sliding_window_log (one EVALSHA of
  the algorithm's script), check_many() with batches of 100 (one pipelined round
  trip), and check() in lease mode (LeaseConfig(batch=1000): one round trip per
  1000 decisions, the rest served from the local lease);
* peers on the same server: ``limits`` (RedisStorage over the ``redis`` client;
  FixedWindowRateLimiter and MovingWindowRateLimiter ``.hit``) and
  ``pyrate-limiter`` (RedisBucket, ``try_acquire(blocking=False)``).

Targets: a single check within 1.2x of the EVALSHA floor; at least 2x
faster per decision than ``limits``; check_many >= 100k decisions/s; lease mode
>= 1M decisions/s.

A second table measures the Redis server's CPU per decision, which is what caps
a shared Redis: ``CONFIG RESETSTAT``, N decisions one round trip each, then the
microseconds ``INFO commandstats`` charges to the top-level commands a decision
sends (EVALSHA/EVAL, or MULTI/EXEC: nested calls are inside them), for ours and
``limits``' strategies in the same run, rounds interleaved, median of rounds.
The server's own CPU clock (``INFO cpu``, user + sys) is shown beside it: it
also counts reading, parsing and answering each request. Floor rows: an empty
script with one key and two arguments, and one whose body is only a GET and a
SET ... KEEPTTL of constant strings (what a read-modify-write script cannot go
below); a gcra at rates whose emission interval is not a whole number of
microseconds (3/s, 3000/s: the state kept in quarter microseconds, one INCRBY)
beside the whole-microsecond rows (1000/s, and 4/s: the TTL step crossed as
often as at 3/s).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="prs-bench-redis-")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no"],
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
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _cmdstats(b) -> dict:
    out = {}
    for line in b._command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[8:].split(":", 1)
            f = dict(kv.split("=") for kv in rest.split(","))
            out[name] = (int(f["calls"]), int(f["usec"]))
    return out


def _server_cpu_us(b) -> float:
    f = dict(line.split(":", 1) for line in b._command("INFO", "cpu").decode().splitlines() if ":" in line)
    return (float(f["used_cpu_user"]) + float(f["used_cpu_sys"])) * 1e6


TOP_LEVEL = ("evalsha", "eval", "multi", "exec")


def _server_us(b, fn, n: int):
    """(commandstats us, server CPU us) per call of fn, over n calls."""
    fn()
    b._command("CONFIG", "RESETSTAT")
    cpu0 = _server_cpu_us(b)
    for _ in range(n):
        fn()
    cpu1 = _server_cpu_us(b)
    st = _cmdstats(b)
    us = sum(st[c][1] for c in TOP_LEVEL if c in st)
    return us / n, (cpu1 - cpu0) / n


def _evalsha_calls(b) -> int:
    for line in b._command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def _per_decision(h, label, ns_per_call, per_call):
    per = ns_per_call / per_call
    h.value(label, round(1e9 / per), "decisions/s")
    return per


def run(h) -> None:
    import pyresilience as pr

    h.section("Redis rate limiting (local redis-server)",
              note="ns per call against one local redis-server, all admitting. Targets: check() "
                   "within 1.2x of the EVALSHA-of-an-empty-script floor; >= 2x faster per decision "
                   "than limits; check_many >= 100k decisions/s; lease mode >= 1M decisions/s.")
    if not getattr(pr._core, "HAVE_REDIS", 0):
        h.note("skipped: pyresilience was built without hiredis")
        return
    if shutil.which("redis-server") is None:
        h.note("skipped: redis-server is not installed (make deps)")
        return
    srv = _Server()
    # Client and server share one CPU for the whole section: on a loopback a
    # round trip between two cores costs 15-60 us depending on where the
    # scheduler puts them (idle-core wakeups), which would swamp every row.
    # One shared core is the stable, same-for-everyone configuration.
    saved = None
    if hasattr(os, "sched_setaffinity"):
        try:
            saved = os.sched_getaffinity(0)
            cpu = min(saved)
            os.sched_setaffinity(0, {cpu})
            os.sched_setaffinity(srv.proc.pid, {cpu})
            h.note(f"client and redis-server pinned to CPU {cpu} for this section")
        except OSError:
            saved = None
    try:
        _run(h, pr, srv)
        _run_server_cpu(h, pr, srv)
    finally:
        if saved is not None:
            os.sched_setaffinity(0, saved)
        srv.stop()


def _run(h, pr, srv) -> None:
    b = pr.RedisBackend(srv.url, timeout=2.0, connect_timeout=2.0)
    sha = b._command("SCRIPT", "LOAD", "return 0").decode()
    ping_ns = h.time("floor: PING round trip (RedisBackend.ping)", b.ping)
    floor_ns = h.time("floor: EVALSHA of an empty script (RedisBackend._command)",
                      partial(b._command, "EVALSHA", sha, "0"))

    gcra = pr.RedisRateLimiter(b, "gcra", rate=1e9, burst=10**9, key_prefix="bench:")
    log = pr.RedisRateLimiter(b, "sliding_window_log", limit=10**6, window=0.5, key_prefix="bench:")
    fixed = pr.RedisRateLimiter(b, "fixed_window", limit=10**12, window=3600, key_prefix="bench:")
    assert gcra.allow("user:1") and log.allow("user:1") and fixed.allow("user:1")
    check_ns = h.time("pyresilience RedisRateLimiter(gcra).check(key)", partial(gcra.check, "user:1"))
    h.time("pyresilience RedisRateLimiter(gcra).allow(key)", partial(gcra.allow, "user:1"))
    h.time("pyresilience RedisRateLimiter(fixed_window).allow(key)", partial(fixed.allow, "user:1"))
    log_ns = h.time("pyresilience RedisRateLimiter(sliding_window_log).allow(key)",
                    partial(log.allow, "user:1"))
    _per_decision(h, "single check: decisions/s (one connection, one thread)", check_ns, 1)
    ratio = check_ns / floor_ns
    h.value("check() / EVALSHA floor", round(ratio, 2), "x")
    h.target("single check within 1.2x of the EVALSHA floor", ratio <= 1.2)
    h.value("check() / PING", round(check_ns / ping_ns, 2), "x")

    batch = [(f"user:{i}", 1) for i in range(100)]
    assert all(d.allowed for d in gcra.check_many(batch))
    many_ns = h.time("pyresilience check_many(100 keys) (per call)", partial(gcra.check_many, batch))
    per = _per_decision(h, "check_many: decisions/s", many_ns, 100)
    h.target("check_many >= 100k decisions/s", 1e9 / per >= 100_000)

    leased = pr.RedisRateLimiter(b, "gcra", rate=1e9, burst=10**9, key_prefix="bench-lease:",
                                 lease=pr.LeaseConfig(batch=1000, max_hold=1.0))
    assert leased.allow("user:1")
    lease_ns = h.time("pyresilience lease mode check(key), LeaseConfig(batch=1000)",
                      partial(leased.check, "user:1"))
    h.time("pyresilience lease mode allow(key), LeaseConfig(batch=1000)", partial(leased.allow, "user:1"))
    _per_decision(h, "lease mode: decisions/s (check)", lease_ns, 1)
    before = _evalsha_calls(b)
    for _ in range(100_000):
        leased.check("user:2")
    trips = _evalsha_calls(b) - before
    h.value("lease mode: round trips per 100k decisions (strict mode: 100k)", trips, "round trips")
    h.target("lease mode >= 1M decisions/s", lease_ns <= 1000)
    leased.close()

    peer_ns = []
    limits = h.peer("limits")
    if limits is not None:
        try:
            from limits import parse
            from limits.storage import RedisStorage
            from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
            storage = RedisStorage(srv.url)
            item = parse("1000000000/hour")
            for name, cls in (("FixedWindowRateLimiter", FixedWindowRateLimiter),
                              ("MovingWindowRateLimiter", MovingWindowRateLimiter)):
                lim = cls(storage)
                if name.startswith("Moving"):
                    item = parse("100000/hour")  # its log holds one entry per hit: keep it bounded
                assert lim.hit(item, "user:1")
                peer_ns.append(h.time(f"limits {name}(RedisStorage).hit()", partial(lim.hit, item, "user:1"),
                                      peer=True))
        except Exception as e:  # noqa: BLE001 - a peer's API drift must not stop the run
            h.note(f"limits rows failed: {type(e).__name__}: {e}")
    pl = h.peer("pyrate_limiter", "pyrate-limiter")
    if pl is not None:
        try:
            import redis
            client = redis.Redis(host="127.0.0.1", port=srv.port)
            bucket = pl.RedisBucket.init([pl.Rate(10**6, pl.Duration.HOUR)], client, "bench-pyrate")
            lim = pl.Limiter(bucket)
            fn = partial(lim.try_acquire, "user:1", blocking=False)
            assert fn()
            peer_ns.append(h.time("pyrate-limiter Limiter(RedisBucket).try_acquire()", fn, peer=True))
        except Exception as e:  # noqa: BLE001
            h.note(f"pyrate-limiter rows failed: {type(e).__name__}: {e}")
    if peer_ns:
        best = min(peer_ns)
        h.ratio("limits/pyrate-limiter fastest vs our check()", check_ns, best)
        h.target("at least 2x faster per decision than limits", best / check_ns >= 2.0)
        h.ratio("fastest peer vs our check_many (per decision)", per, best)
    for key in ("user:1",):
        for lim in (gcra, log, fixed):
            lim.reset(key)
    b.close()


def _run_server_cpu(h, pr, srv) -> None:
    import statistics

    h.section("Redis server CPU per decision (INFO commandstats)",
              note="Server microseconds per admitting decision, one round trip each, all rows in one "
                   "run with rounds interleaved (median of rounds): the top-level commands a decision "
                   "sends (nested redis.call()s included in them), and the server's whole CPU "
                   "(INFO cpu, which also counts reading and answering requests). Targets: fixed "
                   "window, sliding window counter and sliding log within 1.1x of limits' FixedWindow, "
                   "SlidingWindowCounter and MovingWindow; gcra and token_bucket at most 2.5 us "
                   "(the issue's figure, taken on a machine where limits' FixedWindow cost 1.9 us: "
                   "scaled here by limits' FixedWindow, 2.5 / 1.9 of it).")
    b = pr.RedisBackend(srv.url, timeout=2.0, connect_timeout=2.0)
    # Sized so that every row keeps state in Redis and admits: the realistic write path
    # (a drained-but-not-empty bucket, a counted window), not a no-op.
    ours = {
        "gcra": pr.RedisRateLimiter(b, "gcra", rate=1000, burst=10**9, key_prefix="cpu:"),
        "token_bucket": pr.RedisRateLimiter(b, "token_bucket", rate=1000, burst=10**9, key_prefix="cpu:"),
        "fixed_window": pr.RedisRateLimiter(b, "fixed_window", limit=10**12, window=3600, key_prefix="cpu:"),
        "sliding_window_counter": pr.RedisRateLimiter(b, "sliding_window_counter", limit=10**12, window=3600,
                                                      key_prefix="cpu:"),
        "sliding_window_log": pr.RedisRateLimiter(b, "sliding_window_log", limit=10**6, window=0.5,
                                                  key_prefix="cpu:"),
    }
    rows = {f"ours {name}": partial(lim.allow, "user:1") for name, lim in ours.items()}
    # A rate whose emission interval is not a whole number of microseconds (1/3 s):
    # the bucket check's GET + SET form instead of its one INCRBY.
    # the bucket check's state in quarter microseconds, one INCRBY (before: GET + SET).
    # At a few permits per second the TTL rule's step (at most 1 s) is crossed every
    # few decisions (a PEXPIRE each time), so a whole-us rate with the same cadence
    # (4/s) and a fractional rate as fast as the whole-us row (3000/s) stand beside it.
    frac = pr.RedisRateLimiter(b, "gcra", rate=3, burst=10**9, key_prefix="cpu-frac:")
    rows["ours gcra, rate 3/s (T not whole us: quarters, INCRBY)"] = partial(frac.allow, "user:1")
    ours["gcra-frac"] = frac
    whole4 = pr.RedisRateLimiter(b, "gcra", rate=4, burst=10**9, key_prefix="cpu-w4:")
    rows["ours gcra, rate 4/s (T whole us, the same TTL cadence as 3/s)"] = partial(whole4.allow, "user:1")
    ours["gcra-w4"] = whole4
    frac3k = pr.RedisRateLimiter(b, "gcra", rate=3000, burst=10**9, key_prefix="cpu-frac3k:")
    rows["ours gcra, rate 3000/s (T not whole us: quarters, INCRBY)"] = partial(frac3k.allow, "user:1")
    ours["gcra-frac3k"] = frac3k
    sha = b._command("SCRIPT", "LOAD", "return 0").decode()
    rows["floor: EVALSHA of an empty script"] = partial(b._command, "EVALSHA", sha, "0")
    rows["floor: EVALSHA of an empty script, 1 key 2 args"] = partial(
        b._command, "EVALSHA", sha, "1", "{cpu-floor}:x", "1700000000000000", "1")
    b._command("SET", "{cpu-floor}:gs", "1", "PX", "3600000")
    gs = b._command("SCRIPT", "LOAD", "redis.call('GET', KEYS[1]) "
                    "redis.call('SET', KEYS[1], '1700000000000001', 'KEEPTTL') return 4000").decode()
    rows["floor: a script's GET + SET KEEPTTL (constant strings), 1 key 2 args"] = partial(
        b._command, "EVALSHA", gs, "1", "{cpu-floor}:gs", "1700000000000000", "1")
    peers = {}
    limits = h.peer("limits")
    if limits is not None:
        try:
            from limits import parse
            from limits.storage import RedisStorage
            from limits.strategies import (FixedWindowRateLimiter, MovingWindowRateLimiter,
                                           SlidingWindowCounterRateLimiter)
            storage = RedisStorage(srv.url)
            for name, cls, item in (
                    ("FixedWindow", FixedWindowRateLimiter, parse("1000000000/hour")),
                    ("SlidingWindowCounter", SlidingWindowCounterRateLimiter, parse("1000000000/hour")),
                    ("MovingWindow", MovingWindowRateLimiter, parse("100000/hour"))):
                lim = cls(storage)
                rows[f"limits {name}"] = partial(lim.hit, item, "user:1")
                peers[name] = f"limits {name}"
            # The same scripts sent by our client: a slower client leaves the server's caches
            # colder between requests, which inflates the server's microseconds per command,
            # so the targets are judged on these rows (same client, same pace).
            import limits as limits_pkg
            res = Path(limits_pkg.__file__).parent / "resources" / "redis" / "lua_scripts"

            def load(name: str) -> str:
                return b._command("SCRIPT", "LOAD", (res / name).read_text()).decode()

            fw, swc, mw = load("incr_expire.lua"), load("acquire_sliding_window.lua"), \
                load("acquire_moving_window.lua")
            rows["limits FixedWindow script, our client"] = partial(
                b._command, "EVALSHA", fw, "1", "cpu-limits:fw", "3600", "1")
            rows["limits SlidingWindowCounter script, our client"] = partial(
                b._command, "EVALSHA", swc, "2", "{cpu-limits:swc}:prev", "{cpu-limits:swc}:cur",
                str(10**9), "3600", "1")
            mw_limit = 100_000

            def moving() -> object:
                return b._command("EVALSHA", mw, "1", "cpu-limits:mw", repr(time.time()), str(mw_limit),
                                  "3600", "1")
            rows["limits MovingWindow script, our client"] = moving
            peers = {name: f"limits {name} script, our client" for name in peers}
        except Exception as e:  # noqa: BLE001 - a peer's API drift must not stop the run
            h.note(f"limits rows failed: {type(e).__name__}: {e}")
    n = 500 if h.quick else 3000
    rounds = 3 if h.quick else 7
    got = {label: ([], []) for label in rows}
    for _ in range(rounds):
        for label, fn in rows.items():
            us, cpu = _server_us(b, fn, n)
            got[label][0].append(us)
            got[label][1].append(cpu)
    med = {label: statistics.median(v[0]) for label, v in got.items()}
    for label in rows:
        h.value(f"{label}: commandstats", round(med[label], 2), "us/decision")
        h.value(f"{label}: server CPU", round(statistics.median(got[label][1]), 2), "us/decision")
    pairs = (("fixed_window", "FixedWindow"), ("sliding_window_counter", "SlidingWindowCounter"),
             ("sliding_window_log", "MovingWindow"))
    for algo, peer in pairs:
        if peer in peers:
            r = med[f"ours {algo}"] / med[peers[peer]]
            h.value(f"ours {algo} / limits {peer}", round(r, 2), "x")
            h.target(f"{algo} within 1.1x of limits' {peer}", r <= 1.1)
    if "FixedWindow" in peers:
        budget = 2.5 / 1.9 * med[peers["FixedWindow"]]
        for algo in ("gcra", "token_bucket"):
            r = med[f"ours {algo}"] / med[peers["FixedWindow"]]
            h.value(f"ours {algo} / limits FixedWindow", round(r, 2), "x")
            h.target(f"{algo} within 2.5/1.9 = 1.32x of limits' FixedWindow ({budget:.2f} us here)",
                     med[f"ours {algo}"] <= budget)
        label = "ours gcra, rate 3000/s (T not whole us: quarters, INCRBY)"
        h.target(f"gcra at a T not whole us (3000/s) within {budget:.2f} us here", med[label] <= budget)
    for lim in ours.values():
        lim.reset("user:1")
    b.close()
