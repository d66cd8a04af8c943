"""Shared limiters reconfigured from another process, and LimiterGroups of
shared limiters: all or nothing across processes, also when a process is
SIGKILLed in the middle of a group check. Time is frozen (ManualClock) in
every process, so counts are exact."""
from __future__ import annotations

import multiprocessing
import os
import random
import select
import signal
import time

import pytest

import pyresilience as pr

NOW = 5.0


@pytest.fixture
def region_dir(tmp_path):
    return str(tmp_path)


def _clock():
    return pr.ManualClock(NOW)


def _reconfigure_in_child(job):
    directory, capacity = job
    with pr.SharedMemory("rc", directory=directory) as r:
        lim = pr.TokenBucket(5, 0, shared=r, name="tb", clock=_clock())
    lim.reconfigure(capacity=capacity)
    return lim.capacity


def test_reconfigure_is_seen_by_every_process(region_dir):
    with pr.SharedMemory("rc", directory=region_dir) as r:
        lim = pr.TokenBucket(5, 0, shared=r, name="tb", clock=_clock())
        assert lim.allow(2)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            assert pool.map(_reconfigure_in_child, [(region_dir, 10)]) == [10.0]
        assert lim.capacity == 10.0  # this process decides on the new config
        assert lim.peek().limit == 10
        assert lim.available == 3.0  # a token bucket keeps its tokens
        # the stored configuration wins: opening with the old one names both
        with pytest.raises(ValueError) as e:
            pr.TokenBucket(5, 0, shared=r, name="tb")
        assert str(e.value) == (
            "shared limiter 'tb' in region 'rc' exists as token_bucket(capacity=10, "
            "refill_rate=0), asked for token_bucket(capacity=5, refill_rate=0)")
        again = pr.TokenBucket(10, 0, shared=r, name="tb", clock=_clock())
        assert again.available == 3.0
        with pytest.raises(ValueError, match="capacity"):
            lim.reconfigure(capacity=-1)  # refused, nothing changes
        assert again.capacity == 10.0


def test_reconfigure_every_algorithm_and_the_sliding_log_limit(region_dir):
    with pr.SharedMemory("ra", directory=region_dir, size=4 << 20) as r:
        g1 = pr.GCRA(1.0, 10, shared=r, name="g", clock=_clock())
        g2 = pr.GCRA(1.0, 10, shared=r, name="g", clock=_clock())
        g1.reconfigure(burst=20)
        assert g2.burst == 20
        fw = pr.FixedWindow(10, 1.0, shared=r, name="fw", clock=_clock())
        pr.FixedWindow(10, 1.0, shared=r, name="fw").reconfigure(limit=4)
        assert [fw.allow() for _ in range(5)] == [True] * 4 + [False]
        sl = pr.SlidingWindowLog(10, 1.0, shared=r, name="sl", clock=_clock())
        sl.reconfigure(window=2.0)
        assert sl.window == 2.0
        with pytest.raises(NotImplementedError, match="limit .*shared memory"):
            sl.reconfigure(limit=20)
        assert sl.limit == 10
        for cls, args, kw in [(pr.LeakyBucket, (10, 1.0), {"leak_rate": 2.0}),
                              (pr.SlidingWindowCounter, (10, 1.0), {"limit": 3})]:
            a = cls(*args, shared=r, name=cls.__name__, clock=_clock())
            cls(*args, shared=r, name=cls.__name__ + "x")
            a.reconfigure(**kw)
            k, v = next(iter(kw.items()))
            assert getattr(a, k) == v


def _group_worker(job):
    directory, tries = job
    clk = _clock()  # a group's members read one clock
    with pr.SharedMemory("gx", directory=directory) as r:
        members = [pr.TokenBucket(300, 0, shared=r, name="tb", clock=clk),
                   pr.SlidingWindowCounter(350, 1000.0, shared=r, name="sc", clock=clk),
                   pr.GCRA(1.0, 400, shared=r, name="gcra", clock=clk)]
    g = pr.LimiterGroup(*members)
    return sum(g.allow() for _ in range(tries))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_group_exact_across_processes(region_dir, method):
    clk = _clock()
    with pr.SharedMemory("gx", directory=region_dir) as r:
        tb = pr.TokenBucket(300, 0, shared=r, name="tb", clock=clk)
        sc = pr.SlidingWindowCounter(350, 1000.0, shared=r, name="sc", clock=clk)
        gc = pr.GCRA(1.0, 400, shared=r, name="gcra", clock=clk)
        with multiprocessing.get_context(method).Pool(4) as pool:
            got = pool.map(_group_worker, [(region_dir, 200)] * 4)
        assert sum(got) == 300
        # every member gave exactly what the group took
        assert (tb.available, sc.available, gc.available) == (0.0, 50.0, 100.0)
        g = pr.LimiterGroup(tb, sc, gc)
        d = g.peek()
        assert not d.allowed
        assert d.remaining == 0


def test_group_rules(region_dir):
    with pr.SharedMemory("a", directory=region_dir) as a, \
            pr.SharedMemory("b", directory=region_dir) as b:
        clk = _clock()
        x = pr.TokenBucket(3, 0, shared=a, name="x", clock=clk)
        y = pr.TokenBucket(3, 0, shared=b, name="y", clock=clk)
        with pytest.raises(NotImplementedError):
            pr.LimiterGroup(x, y)  # members of two regions
        with pytest.raises(NotImplementedError):
            pr.LimiterGroup(x, pr.TokenBucket(3, 0, clock=clk))  # shared and in-process
        # two handles of one entry are one member listed twice: 2 per request
        g = pr.LimiterGroup(x, pr.TokenBucket(3, 0, shared=a, name="x", clock=clk))
        assert g.allow()
        assert not g.allow()
        assert x.available == 1.0


def test_group_kill_loop(region_dir):
    """SIGKILL forked processes while they take from a group of three shared
    limiters (200 kills): the members never drift apart and the group
    answers after each kill."""
    rng = random.Random(7)
    cap = 10 ** 6
    clk = _clock()
    with pr.SharedMemory("kg", directory=region_dir, size=32 << 20) as r:
        members = [pr.TokenBucket(cap, 0, shared=r, name="tb", clock=clk),
                   pr.SlidingWindowLog(cap, 1000.0, shared=r, name="sl", clock=clk),
                   pr.GCRA(1.0, cap, shared=r, name="gcra", clock=clk)]
    g = pr.LimiterGroup(*members)
    rd, wr = os.pipe()
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(rd)
                os.write(wr, b"x")
                while True:
                    g.allow()
            finally:
                os._exit(1)
        select.select([rd], [], [], 30)
        os.read(rd, 1)
        time.sleep(rng.uniform(0.0, 0.001))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        left = [m.available for m in members]
        assert left[0] == left[1] == left[2], left
        g.peek()
    os.close(rd)
    os.close(wr)
    assert members[0].available < cap  # the killed ones took some
