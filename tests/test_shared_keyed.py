"""KeyedLimiter placed in a SharedMemory region: one state per key for every
process (fork, spawn), the max_keys bound, configuration mismatches, what a
shared table refuses, and a SIGKILL loop. Time is frozen (ManualClock)."""
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
CAP = 40
KEYS = ["alice", "bob", "k" * 100]  # the last is longer than the inline 32 bytes

# every algorithm, admitting exactly CAP per key at a frozen instant
ALGOS = [
    ("TokenBucket", (CAP, 1.0)),
    ("GCRA", (1.0, CAP)),
    ("LeakyBucket", (CAP, 1.0)),
    ("FixedWindow", (CAP, 1000.0)),
    ("SlidingWindowLog", (CAP, 1000.0)),
    ("SlidingWindowCounter", (CAP, 1000.0)),
]


@pytest.fixture
def region_dir(tmp_path):
    return str(tmp_path)


def _table(region, cls_name, args, max_keys=1000):
    return pr.KeyedLimiter(getattr(pr, cls_name), *args, shared=region, name=cls_name,
                           max_keys=max_keys, clock=pr.ManualClock(NOW))


def _worker(job):
    directory, cls_name, args, tries = job
    with pr.SharedMemory("kx", directory=directory) as r:
        t = _table(r, cls_name, args)
    return [sum(t.allow(k) for _ in range(tries)) for k in KEYS]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exact_per_key_across_processes(region_dir, method):
    with pr.SharedMemory("kx", directory=region_dir) as r:
        tables = [_table(r, c, a) for c, a in ALGOS]
        jobs = [(region_dir, c, a, 30) for c, a in ALGOS for _ in range(3)]
        with multiprocessing.get_context(method).Pool(3) as pool:
            got = pool.map(_worker, jobs)
        for i, (c, _) in enumerate(ALGOS):
            per_key = [sum(g[k] for g in got[3 * i:3 * i + 3]) for k in range(len(KEYS))]
            assert per_key == [CAP] * len(KEYS), c
            t = tables[i]
            assert len(t) == len(KEYS) and all(k in t for k in KEYS)
            assert t.available("alice") == 0.0
            t.reset("alice")
            assert t.available("alice") == CAP and len(t) == len(KEYS) - 1


def test_bounded_by_max_keys(region_dir):
    with pr.SharedMemory("kb", directory=region_dir) as r:
        t = pr.KeyedLimiter(pr.TokenBucket, 1, 0, shared=r, name="t", max_keys=1000,
                            clock=pr.ManualClock(NOW))
        mem = t.memory_bytes
        for i in range(100_000):
            t.allow(str(i))
        assert 900 < len(t) <= 1000 == t.max_keys
        assert t.memory_bytes == mem  # reserved in the region at creation
        # a new key against a bucket full of limited keys: denied with a retry_after
        d = t.check("someone-new")
        assert not d.allowed and d.retry_after > 0


def test_eviction_of_fresh_keys(region_dir):
    clock = pr.ManualClock(NOW)
    with pr.SharedMemory("ke", directory=region_dir) as r:
        t = pr.KeyedLimiter(pr.FixedWindow, 1, 10.0, shared=r, name="t", max_keys=16, clock=clock)
        assert all(t.allow("k%d" % i) for i in range(16))
        assert not t.allow("new")  # every key limited: never evicted
        clock.advance(20.0)
        assert t.allow("new")  # the windows ended: fresh keys give way
        assert len(t) == 16
        assert t.prune() == 15 and len(t) == 1


def test_mismatch_and_refusals(region_dir):
    with pr.SharedMemory("km", directory=region_dir) as r:
        t = pr.KeyedLimiter(pr.TokenBucket, 10, 1, shared=r, name="t", max_keys=100)
        pr.KeyedLimiter(pr.TokenBucket, 10, 1, shared=r, name="t", max_keys=100)  # opens it
        with pytest.raises(ValueError) as e:
            pr.KeyedLimiter(pr.TokenBucket, 10, 1, shared=r, name="t", max_keys=200)
        assert str(e.value) == (
            "shared KeyedLimiter 't' in region 'km' exists as keyed token_bucket(capacity=10, "
            "refill_rate=1) with max_keys=100, asked for keyed token_bucket(capacity=10, "
            "refill_rate=1) with max_keys=200")
        with pytest.raises(ValueError, match="exists as keyed.token_bucket, asked for "
                                             "keyed.gcra"):
            pr.KeyedLimiter(pr.GCRA, 1, 10, shared=r, name="t", max_keys=100)
        with pytest.raises(NotImplementedError, match="shared memory"):
            t.reconfigure(capacity=20)
        assert t.limiter.capacity == 10  # the template stays in step
        with pytest.raises(NotImplementedError):
            pr.LimiterGroup(t.for_key("a"))
        with pytest.raises(ValueError, match="name= is used with shared="):
            pr.KeyedLimiter(pr.TokenBucket, 10, 1, name="t")
        with pytest.raises(OSError, match="is full"):
            pr.KeyedLimiter(pr.TokenBucket, 10, 1, shared=r, name="huge", max_keys=10 ** 7)


def test_kill_loop(region_dir):
    """SIGKILL forked processes while they churn 100 keys through a table of
    32 (100 kills): the count always equals the keys held, within max_keys,
    and a hot key's budget never comes back."""
    rng = random.Random(3)
    with pr.SharedMemory("kk", directory=region_dir) as r:
        t = pr.KeyedLimiter(pr.TokenBucket, 10 ** 6, 0, shared=r, name="t", max_keys=32,
                            clock=pr.ManualClock(NOW))
    keys = ["key%d" % i for i in range(100)] + ["hot"]
    t.allow("hot")
    hot = t.available("hot")
    rd, wr = os.pipe()
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(rd)
                os.write(wr, b"x")
                while True:
                    k = rng.choice(keys)
                    t.allow(k)
                    if k.endswith("7"):
                        t.reset(k)
            finally:
                os._exit(1)
        select.select([rd], [], [], 30)
        os.read(rd, 1)
        time.sleep(rng.uniform(0.0, 0.001))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        held = sum(k in t for k in keys)
        assert len(t) == held <= 32
        now_hot = t.available("hot")
        assert now_hot <= hot
        hot = now_hot
    os.close(rd)
    os.close(wr)
