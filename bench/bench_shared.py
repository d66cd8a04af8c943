"""Shared memory: ns per allow() of a limiter placed in a SharedMemory region
(shared=region, name=...) beside the same limiter in process memory, for every
algorithm, one process, in the same run.

Both limiters admit every timed call (a limit the loop never reaches), so the
rows compare the decision itself: the in-process one takes the object's
spinlock (GCRA: one compare-and-swap); the shared one takes the region's pid
lock and decides on a copy of the state that it then publishes (GCRA: the
same compare-and-swap on a word in the region). The target of issue 14 is
within 1.5x of the in-process decision.
"""

from __future__ import annotations

import os
import tempfile
from functools import partial

BIG = 10**12
WINDOW = 1e-3


def _pairs(prs, region):
    def both(label, make):
        return label, make(), make(shared=region, name=label)

    return [
        both("TokenBucket", lambda **kw: prs.TokenBucket(BIG, BIG, **kw)),
        both("GCRA", lambda **kw: prs.GCRA(1e9, 10**9, **kw)),
        both("LeakyBucket", lambda **kw: prs.LeakyBucket(BIG, BIG, **kw)),
        both("FixedWindow", lambda **kw: prs.FixedWindow(BIG, WINDOW, **kw)),
        # a limit the loop never fills within a 1 ms window (a shared decision
        # journals the log's 32-byte header only, not its ring)
        both("SlidingWindowLog", lambda **kw: prs.SlidingWindowLog(10**4, WINDOW, **kw)),
        both("SlidingWindowCounter",
             lambda **kw: prs.SlidingWindowCounter(BIG, WINDOW, **kw)),
    ]


def run(h):
    import pyresilience as prs

    h.section("shared memory: a decision in a SharedMemory region vs in process",
              "allow() admitting; ratio = shared / in-process (target: <= 1.5x)")
    with tempfile.TemporaryDirectory() as d:
        region = prs.SharedMemory("bench-%d" % os.getpid(), directory=d, size=64 << 20)
        try:
            for label, local, shared in _pairs(prs, region):
                a = h.time(f"{label} in process allow()", local.allow, group=label)
                b = h.time(f"{label} shared allow()", shared.allow, group=label)
                r = b / a if a else float("nan")
                h.value(f"{label} shared / in-process", r, "x")
                h.target(f"{label}: shared decision within 1.5x of in-process", r <= 1.5 if r == r else None)
            h.note("a shared decision takes the region's pid lock and journals the bytes it "
                   "may overwrite (the whole state; a SlidingWindowLog its 32-byte header, "
                   "not its ring): about 110 more instructions under callgrind, on an "
                   "allow() of about 900")
        finally:
            region.close()
            region.unlink()
    run_keyed_million(h)
    run_contended(h)
    run_patterns(h)


# ---- a keyed table at 10**6 keys ------------------------------------------------

MILLION = 10**6


def run_keyed_million(h):
    """KeyedLimiter(TokenBucket) holding 10**6 keys, shared vs in process: both
    tables are filled with the 10**6 keys first, then allow() walks them in a
    fixed shuffled order (every call a key already in the table, far apart in
    memory: the table no longer fits the caches, as in a real service)."""
    import random

    import pyresilience as prs

    h.section("shared memory: KeyedLimiter at 10**6 keys vs in process",
              "allow(key) admitting, cycling over 10**6 distinct keys held in a table of "
              "max_keys=10**6; ratio = shared / in-process (target: <= 2x)")
    keys = ["client-%d" % i for i in range(MILLION)]
    random.Random(14).shuffle(keys)
    with tempfile.TemporaryDirectory() as d:
        # 56 bytes per token-bucket key: 10**6 keys take 56 MB of the region
        region = prs.SharedMemory("bench-1m-%d" % os.getpid(), directory=d, size=96 << 20)
        try:
            local = prs.KeyedLimiter(prs.TokenBucket, BIG, BIG, max_keys=MILLION)
            shared = prs.KeyedLimiter(prs.TokenBucket, BIG, BIG, max_keys=MILLION,
                                      shared=region, name="keyed-1m")
            for k in keys:  # fill both tables
                local.allow(k)
                shared.allow(k)

            def walker(t):
                it = iter(range(1 << 62))
                return lambda: t.allow(keys[next(it) % MILLION])

            a = h.time("in-process keyed at 10**6 keys allow(key)", walker(local), group="k1m")
            b = h.time("shared KeyedLimiter at 10**6 keys allow(key)", walker(shared), group="k1m")
            r = b / a if a else float("nan")
            h.value("shared KeyedLimiter at 10**6 keys vs in-process keyed at 10**6 keys", r, "x")
            h.target("shared KeyedLimiter at 10**6 keys within 2x of the in-process one",
                     r <= 2 if r == r else None)
            h.value("keys held after the run: in process", len(local), "keys")
            h.value("keys held after the run: shared", len(shared), "keys")
            del local, shared
        finally:
            region.close()
            region.unlink()


# ---- two processes on one object ----------------------------------------------

N_CALLS = 200_000


def _contended(fn, nproc, n=N_CALLS):
    """Runs n calls of fn in each of nproc forked processes started together;
    (mean ns per call seen by one process, aggregate ns per call = the wall
    time of the whole run / all calls). CLOCK_MONOTONIC is one clock for
    every process of the machine, so the children's stamps compare."""
    import struct
    import time

    rd, wr = os.pipe()
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(nproc):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.read(go_r, 1)
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    fn()
                t1 = time.perf_counter_ns()
                os.write(wr, struct.pack("qq", t0, t1))
            finally:
                os._exit(0)
        pids.append(pid)
    os.write(go_w, b"x" * nproc)
    stamps = []
    for _ in range(nproc):
        buf = b""
        while len(buf) < 16:
            buf += os.read(rd, 16 - len(buf))
        stamps.append(struct.unpack("qq", buf))
    for pid in pids:
        os.waitpid(pid, 0)
    for f in (rd, wr, go_r, go_w):
        os.close(f)
    per = sum((t1 - t0) / n for t0, t1 in stamps) / nproc
    wall = max(t1 for _, t1 in stamps) - min(t0 for t0, _ in stamps)
    return per, wall / (n * nproc)


def run_contended(h):
    import pyresilience as prs

    h.section("shared memory: one object, 1 vs 2 processes",
              "allow() admitting, in forked processes started together; per process = ns per "
              "call one process sees, aggregate = wall time / all calls (lower is more "
              "throughput); in process = the same object in each process's own memory")
    keys = ["client-%d" % i for i in range(100_000)]
    with tempfile.TemporaryDirectory() as d:
        region = prs.SharedMemory("bench2-%d" % os.getpid(), directory=d, size=64 << 20)
        try:
            it = iter(range(1 << 62))

            def keyed_call(t):
                return lambda: t.allow(keys[next(it) % 100_000])

            kl = prs.KeyedLimiter(prs.TokenBucket, BIG, BIG, max_keys=200_000)
            ks = prs.KeyedLimiter(prs.TokenBucket, BIG, BIG, max_keys=200_000, shared=region,
                                  name="keyed")
            g_local = prs.LimiterGroup(prs.TokenBucket(BIG, BIG), prs.GCRA(1e9, 10**9))
            g_shared = prs.LimiterGroup(prs.TokenBucket(BIG, BIG, shared=region, name="g-tb"),
                                        prs.GCRA(1e9, 10**9, shared=region, name="g-gcra"))
            rows = [
                ("TokenBucket", prs.TokenBucket(BIG, BIG).allow,
                 prs.TokenBucket(BIG, BIG, shared=region, name="tb").allow),
                ("GCRA", prs.GCRA(1e9, 10**9).allow,
                 prs.GCRA(1e9, 10**9, shared=region, name="gcra").allow),
                ("KeyedLimiter(TokenBucket), 10**5 keys", keyed_call(kl), keyed_call(ks)),
                ("LimiterGroup(TokenBucket, GCRA)", g_local.allow, g_shared.allow),
            ]
            for label, local, shared in rows:
                one_local, _ = _contended(local, 1)
                one, _ = _contended(shared, 1)
                per2, agg2 = _contended(shared, 2)
                h.value(f"{label} in process, 1 process", one_local, "ns/op")
                h.value(f"{label} shared, 1 process", one, "ns/op")
                h.value(f"{label} shared, 2 processes: per process", per2, "ns/op")
                h.value(f"{label} shared, 2 processes: aggregate", agg2, "ns/op")
                h.value(f"{label} shared / in process, 1 process",
                        one / one_local if one_local else float("nan"), "x")
            h.note("2 processes contend on one lock word (GCRA: one compare-and-swap) "
                   "in the region: the aggregate is what both get together; on a machine "
                   "with fewer free cores than processes it mostly measures the scheduler")
        finally:
            region.close()
            region.unlink()


def _with(bh):
    def run():
        with bh:
            pass
    return run


def _wake_latency(prs, region, mode, rounds=30):
    """Median ns from a release in this process to the moment a waiter in a
    forked process (a thread blocked in acquire(), or an asyncio task in
    acquire_async()) holds the permit."""
    import asyncio
    import statistics
    import time

    bh = prs.Bulkhead("wake-" + mode, 1, shared=region)
    lat = []
    for _ in range(rounds):
        bh.acquire()
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(wr, b"w")
                if mode == "sync":
                    bh.acquire(timeout=10)
                else:
                    asyncio.run(bh.acquire_async(timeout=10))
                os.write(wr, repr(time.monotonic_ns()).encode().ljust(24))
                bh.release()
            finally:
                os._exit(0)
        os.read(rd, 1)
        time.sleep(0.03)  # let it wait (and an asyncio poller reach its longest backoff)
        t0 = time.monotonic_ns()
        bh.release()
        t1 = int(os.read(rd, 24).decode())
        os.waitpid(pid, 0)
        os.close(rd)
        os.close(wr)
        lat.append(t1 - t0)
    return statistics.median(lat), max(lat)


def run_patterns(h):
    import pyresilience as prs

    h.section("shared memory: CircuitBreaker and Bulkhead in a SharedMemory region vs in process",
              "ratio = shared / in-process (target: <= 1.5x); wake-ups across processes")
    with tempfile.TemporaryDirectory() as d:
        region = prs.SharedMemory("bench-bb-%d" % os.getpid(), directory=d)
        try:
            local = prs.CircuitBreaker()
            shared = prs.CircuitBreaker(name="cb", shared=region)
            a = h.time("CircuitBreaker.call(f) closed, in process", partial(local.call, noop),
                       group="cb")
            b = h.time("CircuitBreaker.call(f) closed, shared", partial(shared.call, noop), group="cb")
            h.value("CircuitBreaker shared / in-process", b / a if a else float("nan"), "x")
            lb, sb = prs.Bulkhead("bh", 10), prs.Bulkhead("bh", 10, shared=region)
            a = h.time("with Bulkhead, in process", _with(lb), group="bh")
            b = h.time("with Bulkhead, shared", _with(sb), group="bh")
            h.value("Bulkhead shared / in-process", b / a if a else float("nan"), "x")
            for mode in ("sync", "asyncio"):
                med, worst = _wake_latency(prs, region, mode)
                h.value(f"Bulkhead wake-up across processes ({mode}) median", med / 1e3, "us")
                h.value(f"Bulkhead wake-up across processes ({mode}) max", worst / 1e3, "us")
            h.note("a shared breaker's outcome takes the region's pid lock and journals its "
                   "variables; in process a success on a healthy breaker is a striped add. "
                   "asyncio waiters of a shared bulkhead poll (0.5 ms doubling to 20 ms).")
        finally:
            region.close()
            region.unlink()


def noop():
    return None
