"""Bulkhead placed in a SharedMemory region (issue 14): exactly
max_concurrent holders across processes (fork and spawn pools), a dead
holder's permit coming back, sync and asyncio waiters woken by a release in
another process, cancellation and Ctrl-C taking nothing, the mismatch naming
both configurations, and a SIGKILL loop."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import pyresilience as pr

MAXC = 4


@pytest.fixture
def region(tmp_path):
    r = pr.SharedMemory("bh", directory=str(tmp_path))
    yield r
    r.close()


def test_one_pool_for_every_handle(region):
    a = pr.Bulkhead("db", 2, shared=region)
    b = pr.Bulkhead("db", 2, 0.0, shared=region)
    assert a.shared and not pr.Bulkhead("local", 1).shared
    a.acquire()
    with b:
        assert a.active_count == 2 and a.available == 0
        assert not a.try_acquire()
        with pytest.raises(pr.BulkheadFullError):
            b.acquire()
    assert b.available == 1
    a.release()
    with pytest.raises(RuntimeError, match="released more times"):
        a.release()
    m = a.metrics
    assert (m.acquired_count, m.released_count, m.rejected_count) == (2, 2, 1)


def test_mismatch_and_bad_arguments(region):
    pr.Bulkhead("db", 2, shared=region)
    with pytest.raises(ValueError) as e:
        pr.Bulkhead("db", 3, shared=region)
    assert str(e.value) == ("shared bulkhead 'db' in region 'bh' exists as "
                            "bulkhead(max_concurrent=2), asked for bulkhead(max_concurrent=3)")
    with pytest.raises(ValueError) as e:
        pr.Bulkhead("big", 70000, shared=region)
    assert str(e.value) == "max_concurrent must be <= 65536 in a region"  # said once
    with pytest.raises(TypeError, match="shared must be a SharedMemory"):
        pr.Bulkhead("x", 1, shared=object())
    with pytest.raises(ValueError, match="name must be"):
        pr.Bulkhead("../x", 1, shared=region)
    pr.TokenBucket(1, 1, shared=region, name="tb")
    with pytest.raises(ValueError, match=r"exists as token_bucket\(.*asked for bulkhead"):
        pr.Bulkhead("tb", 1, shared=region)


# ---- exactly max_concurrent holders across processes -------------------------------------

def _grab(job):
    """In a worker: take what it can (and keep it until the worker exits)."""
    directory, name, tries = job
    global _kept
    with pr.SharedMemory("bh", directory=directory) as r:
        _kept = pr.Bulkhead(name, MAXC, 0.0, shared=r)
    return sum(_kept.try_acquire() for _ in range(tries))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exact_holders_across_processes_and_back_when_they_die(region, method):
    directory = os.path.dirname(region.path)
    b = pr.Bulkhead(method, MAXC, shared=region)
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(4)
    try:
        counts = pool.map(_grab, [(directory, method, 10)] * 8, chunksize=1)
        assert sum(counts) == MAXC
        assert b.active_count == MAXC and not b.try_acquire()
    finally:
        pool.terminate()  # SIGTERM: the holders die holding their permits
        pool.join()
    # each dead holder's permit comes back within 2 s of asking
    for _ in range(MAXC):
        b.acquire(timeout=2.0)
    assert b.active_count == MAXC
    for _ in range(MAXC):
        b.release()
    assert b.available == MAXC


def test_unrelated_interpreters_share_the_permits(region):
    """Separate `python` processes open the region by name and take what
    they can, then exit holding it: exactly max_concurrent among them, and
    the permits of the exited ones come back. Each stays alive until all have
    tried (a live holder's permit is not reaped: a process starting after
    another exited could otherwise take the dead one's permits back)."""
    script = ("import sys, pyresilience as pr\n"
              "r = pr.SharedMemory('bh', directory=sys.argv[1])\n"
              "b = pr.Bulkhead('cli', %d, 0.0, shared=r)\n"
              "print(sum(b.try_acquire() for _ in range(10)), flush=True)\n"
              "sys.stdin.readline()\n" % MAXC)
    procs = [subprocess.Popen([sys.executable, "-c", script, os.path.dirname(region.path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    firsts = [p.stdout.readline() for p in procs]  # type: ignore[union-attr]
    outs = [first + p.communicate("go\n", timeout=120)[0] for first, p in zip(firsts, procs)]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(o) for o in outs) == MAXC
    b = pr.Bulkhead("cli", MAXC, shared=region)
    assert b._reap() == MAXC and b.available == MAXC


def _hold_then_release(directory, name, go_rd, held_wr):
    with pr.SharedMemory("bh", directory=directory) as r:
        b = pr.Bulkhead(name, 1, shared=r)
    b.acquire()
    os.write(held_wr, b"h")
    os.read(go_rd, 1)
    t = time.monotonic()
    b.release()
    os.write(held_wr, repr(t).encode().ljust(32))
    os.read(go_rd, 1)


def _other_process_holds(region, name):
    """A forked process holding the only permit of `name` until told to
    release; returns (pid, release(): the monotonic time it released)."""
    go_rd, go_wr = os.pipe()
    held_rd, held_wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _hold_then_release(os.path.dirname(region.path), name, go_rd, held_wr)
        finally:
            os._exit(0)
    assert os.read(held_rd, 1) == b"h"

    def release():
        os.write(go_wr, b"g")
        return float(os.read(held_rd, 32).decode())

    def done():
        os.write(go_wr, b"g")
        os.waitpid(pid, 0)
        for fd in (go_rd, go_wr, held_rd, held_wr):
            os.close(fd)
    return release, done


def test_sync_waiter_woken_by_another_process(region):
    b = pr.Bulkhead("sync", 1, shared=region)
    release, done = _other_process_holds(region, "sync")
    got = []

    def waiter():
        b.acquire(timeout=10)
        got.append(time.monotonic())
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)  # let it wait (the test holds either way)
    released = release()
    t.join(10)
    assert got
    print("sync cross-process wake-up: %.3f ms" % ((got[0] - released) * 1e3))
    b.release()
    done()


def test_asyncio_waiter_woken_by_another_process(region):
    b = pr.Bulkhead("async", 1, shared=region)
    release, done = _other_process_holds(region, "async")

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, lambda: (time.sleep(0.05), release())[1])
        await b.acquire_async(timeout=10)
        woke = time.monotonic()
        released = await fut
        return woke - released
    lat = asyncio.run(main())
    print("asyncio cross-process wake-up: %.3f ms" % (lat * 1e3))
    assert b.active_count == 1
    b.release()
    done()


def test_asyncio_cancel_and_timeout_take_nothing(region):
    b = pr.Bulkhead("cancel", 1, shared=region)
    b.acquire()

    async def main():
        task = asyncio.ensure_future(b.acquire_async(timeout=10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(pr.BulkheadFullError):
            await b.acquire_async(timeout=0.01)
        with pytest.raises(pr.BulkheadFullError):
            async with b2:  # max_wait_seconds=0
                pass
    b2 = pr.Bulkhead("cancel", 1, 0.0, shared=region)
    asyncio.run(main())
    with pytest.raises(pr.BulkheadFullError):
        asyncio.run(b2.__aenter__())
    assert b.active_count == 1
    b.release()

    async def ok():
        async with b:
            assert b.active_count == 1
        return await b.execute(lambda: 5)
    assert asyncio.run(ok()) == 5
    assert b.active_count == 0


def test_ctrl_c_interrupts_a_wait_and_takes_nothing(region):
    b = pr.Bulkhead("intr", 1, shared=region)
    b.acquire()
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            b.acquire(timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert b.active_count == 1 and b.waiting_count == 0
    b.release()
    assert b.available == 1


# ---- SIGKILL in the middle of operations ------------------------------------------------------

def test_kill_loop_permits_equal_max_minus_live_holders(region):
    """Two children at a time take and give back permits (with, try,
    acquire with a short wait) and are SIGKILLed at random instants: 2 x 80
    kills. After each round the held permits are those of live holders only
    (none once the dead are reaped), and the bulkhead admits exactly
    max_concurrent again."""
    rng = random.Random(14)
    b = pr.Bulkhead("kill", 2, shared=region)
    rd, wr = os.pipe()
    for rnd in range(80):
        pids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(rd)
                    os.write(wr, b"x")
                    x = os.getpid()
                    while True:
                        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
                        try:
                            if x & 1:
                                with b:
                                    pass
                            elif b.try_acquire():
                                b.release()
                            else:
                                b.acquire(timeout=0.001)
                                b.release()
                        except pr.BulkheadFullError:
                            pass
                finally:
                    os._exit(1)
            pids.append(pid)
        for _ in pids:
            select.select([rd], [], [], 30)
            os.read(rd, 1)
        time.sleep(rng.uniform(0.0, 0.003))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        assert 0 <= b.active_count <= 2
        if rnd % 10 == 0:  # a dead holder's permit, if any, comes back within 2 s of asking
            b.acquire(timeout=2.0)
            b.acquire(timeout=2.0)
        else:  # or at once when reaped
            b._reap()
            assert b.active_count == 0
            b.acquire(timeout=0)
            b.acquire(timeout=0)
        assert b.active_count == 2 and not b.try_acquire()
        b.release()
        b.release()
        assert b.active_count == 0
    os.close(rd)
    os.close(wr)
