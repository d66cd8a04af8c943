"""SharedMemory regions and limiters placed in them (issue 14): one limit
across processes (fork, spawn, unrelated interpreters), configuration
mismatches, hostile regions, bad names, a full region and a SIGKILL loop.

Time is frozen in every process (a ManualClock at the same instant), so with
no refill each shared limiter admits exactly its capacity in total."""
from __future__ import annotations

import errno
import multiprocessing
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

import pyresilience as pr

CAP = 200
NOW = 5.0

# (class name, args admitting exactly CAP at a frozen instant)
ALGOS = [
    ("TokenBucket", (CAP, 1.0)),
    ("GCRA", (1.0, CAP)),
    ("LeakyBucket", (CAP, 1.0)),
    ("FixedWindow", (CAP, 1000.0)),
    ("SlidingWindowLog", (CAP, 1000.0)),
    ("SlidingWindowCounter", (CAP, 1000.0)),
]
IDS = [a[0] for a in ALGOS]


@pytest.fixture
def region_dir(tmp_path):
    return str(tmp_path)


def _make(cls_name, args, region, name):
    return getattr(pr, cls_name)(*args, shared=region, name=name, clock=pr.ManualClock(NOW))


def _hammer(job):
    """In a worker process: open the region by name, place the limiter, try
    `tries` times at the frozen instant; the count admitted."""
    directory, region_name, cls_name, args, name, tries = job
    with pr.SharedMemory(region_name, directory=directory) as region:
        lim = _make(cls_name, args, region, name)
    return sum(lim.allow() for _ in range(tries))


# ---- the region -----------------------------------------------------------------

def test_region_create_open_close_unlink(region_dir):
    a = pr.SharedMemory("r", directory=region_dir)
    b = pr.SharedMemory("r", directory=region_dir, size=1 << 16)
    assert a.created and not b.created
    assert a.size == b.size == 1 << 20  # the documented default; an existing region keeps its own
    assert a.path == os.path.join(region_dir, "pyresilience.r") == b.path
    assert os.stat(a.path).st_mode & 0o777 == 0o600
    assert repr(a) == f"SharedMemory('r', path={a.path!r}, size={1 << 20}, entries=0)"
    assert a.name == "r" and a.entries == 0 and 0 < a.free_bytes < a.size
    lim = pr.TokenBucket(3, 0, shared=a, name="x")
    assert a.entries == 1 == b.entries
    a.close()
    a.close()  # idempotent
    assert a.closed and not b.closed
    assert [lim.allow() for _ in range(4)] == [True, True, True, False]  # keeps the mapping
    with pytest.raises(ValueError, match="closed"):
        pr.TokenBucket(3, 0, shared=a, name="y")
    with b:
        pass
    assert b.closed
    b.unlink()
    with pytest.raises(FileNotFoundError):
        b.unlink()


def test_region_mode_and_default_directory():
    name = "prs-test-%d" % os.getpid()
    with pr.SharedMemory(name, mode=0o640) as r:
        try:
            assert os.path.dirname(r.path) in ("/dev/shm", "/tmp")
            assert os.stat(r.path).st_mode & 0o777 == 0o640
        finally:
            r.unlink()


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x..y", "a\0b", "a\nb", "n" * 64, "/abs"])
def test_bad_names(region_dir, bad):
    with pytest.raises(ValueError, match="name"):
        pr.SharedMemory(bad, directory=region_dir)
    with pr.SharedMemory("ok", directory=region_dir) as r:
        with pytest.raises(ValueError, match="name"):
            pr.GCRA(1, 1, shared=r, name=bad)


def test_bad_arguments(region_dir):
    with pytest.raises(ValueError, match="size"):
        pr.SharedMemory("s", directory=region_dir, size=100)
    with pytest.raises(ValueError, match="size"):
        pr.SharedMemory("s", directory=region_dir, size=10.5)
    with pytest.raises(ValueError, match="mode"):
        pr.SharedMemory("s", directory=region_dir, mode=0o1777)
    with pytest.raises(TypeError):
        pr.SharedMemory(b"s", directory=region_dir)
    with pytest.raises(ValueError, match="name= is used with shared="):
        pr.GCRA(1, 1, name="x")
    with pr.SharedMemory("s", directory=region_dir) as r:
        with pytest.raises(ValueError, match="needs name="):
            pr.GCRA(1, 1, shared=r)
        with pytest.raises(TypeError, match="SharedMemory"):
            pr.GCRA(1, 1, shared=object(), name="x")
        with pytest.raises(ValueError, match="capacity"):  # the usual config error first
            pr.TokenBucket(-1, 1, shared=r, name="x")
        assert r.entries == 0


def test_mismatch_names_both_configurations(region_dir):
    with pr.SharedMemory("m", directory=region_dir) as r:
        pr.TokenBucket(10, 5, shared=r, name="api")
        with pytest.raises(ValueError) as e:
            pr.TokenBucket(20, 5, shared=r, name="api")
        assert str(e.value) == (
            "shared limiter 'api' in region 'm' exists as token_bucket(capacity=10, "
            "refill_rate=5), asked for token_bucket(capacity=20, refill_rate=5)")
        with pytest.raises(ValueError, match=r"exists as token_bucket\(.*asked for "
                                             r"fixed_window\(limit=10, window_ns=1000000000\)"):
            pr.FixedWindow(10, 1.0, shared=r, name="api")
        pr.TokenBucket(10, 5, shared=r, name="api")  # the same config opens it


def test_shared_limiter_reconfigured_and_grouped_but_not_keyed(region_dir):
    with pr.SharedMemory("g", directory=region_dir) as r:
        lim = pr.GCRA(1, 2, shared=r, name="g")
        lim.reconfigure(burst=3)  # test_shared_group.py covers it across processes
        assert lim.burst == 3
        assert pr.LimiterGroup(lim).peek().allowed
        with pytest.raises(NotImplementedError, match="shared memory"):
            pr._core.KeyedLimiter(lim)  # not a silent process-local copy
        with pytest.raises(ValueError, match="exists as gcra, asked for keyed.gcra"):
            pr.KeyedLimiter(pr.GCRA, 1, 3, shared=r, name="g")  # test_shared_keyed.py


def test_full_region(region_dir):
    with pr.SharedMemory("f", directory=region_dir, size=1 << 14) as r:
        with pytest.raises(OSError) as e:
            for i in range(1000):
                pr.TokenBucket(1, 1, shared=r, name="t%d" % i)
        assert e.value.errno == errno.ENOSPC
        assert "is full" in str(e.value) and "size=" in str(e.value)
        with pytest.raises(OSError, match="is full"):
            pr.SlidingWindowLog(10**6, 1.0, shared=r, name="big")
        assert pr.TokenBucket(1, 1, shared=r, name="t0").peek().limit == 1  # still answers


# ---- hostile regions ---------------------------------------------------------------

def _valid_bytes(region_dir):
    with pr.SharedMemory("valid", directory=region_dir, size=1 << 14) as r:
        with open(r.path, "rb") as f:
            return bytearray(f.read())


def _write(region_dir, name, data):
    path = os.path.join(region_dir, "pyresilience." + name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("case", ["empty", "truncated", "half", "magic", "version", "size",
                                  "garbage"])
def test_hostile_regions(region_dir, case):
    data = _valid_bytes(region_dir)
    if case == "empty":
        data = b""
    elif case == "truncated":
        data = data[:100]
    elif case == "half":
        data = data[:len(data) // 2]
    elif case == "magic":
        data[0:8] = b"XXXXXXXX"
    elif case == "version":
        data[8:12] = (2).to_bytes(4, "little")
    elif case == "size":
        data[16:24] = (1 << 39).to_bytes(8, "little")
    elif case == "garbage":
        data = bytes(random.Random(1).getrandbits(8) for _ in range(len(data)))
    _write(region_dir, case, data)
    with pytest.raises(ValueError, match="not a pyresilience region of version 1"):
        pr.SharedMemory(case, directory=region_dir)


def test_hostile_symlink_and_directory(region_dir):
    os.symlink("/etc/passwd", os.path.join(region_dir, "pyresilience.link"))
    with pytest.raises(ValueError, match="not a pyresilience region"):
        pr.SharedMemory("link", directory=region_dir)
    os.mkdir(os.path.join(region_dir, "pyresilience.dir"))
    with pytest.raises((ValueError, OSError)):
        pr.SharedMemory("dir", directory=region_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_region(region_dir):
    with pr.SharedMemory("theirs", directory=region_dir) as r:
        os.chown(r.path, 65534, 65534)
    with pytest.raises(PermissionError, match="another user"):
        pr.SharedMemory("theirs", directory=region_dir)


def test_corrupt_entry_offset(region_dir):
    with pr.SharedMemory("ce", directory=region_dir, size=1 << 14) as r:
        pr.TokenBucket(1, 1, shared=r, name="e")
        with open(r.path, "r+b") as f:  # entry 0's offset: far outside the region
            f.seek(128 + 64 + 32 + 8)
            f.write((1 << 50).to_bytes(8, "little"))
        with pytest.raises(ValueError, match="corrupt"):
            pr.TokenBucket(1, 1, shared=r, name="e")


# ---- one limit across processes -------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_admits_exactly_capacity(region_dir, method):
    ctx = multiprocessing.get_context(method)
    with pr.SharedMemory("pool", directory=region_dir) as r:
        jobs = [(region_dir, "pool", c, a, "%s-%s" % (method, c), CAP) for c, a in ALGOS]
        with ctx.Pool(4) as pool:
            counts = pool.map(_hammer, [j for j in jobs for _ in range(4)], chunksize=1)
        for i, (c, a) in enumerate(ALGOS):
            assert sum(counts[4 * i:4 * i + 4]) == CAP, c
            assert not _make(c, a, r, "%s-%s" % (method, c)).allow()  # seen here too


def test_unrelated_interpreters_admit_exactly_capacity(region_dir):
    script = (
        "import sys, pyresilience as pr\n"
        "d, c = sys.argv[1], sys.argv[2]\n"
        "args = {a[0]: a[1] for a in %r}[c]\n"
        "r = pr.SharedMemory('cli', directory=d)\n"
        "lim = getattr(pr, c)(*args, shared=r, name=c, clock=pr.ManualClock(%r))\n"
        "print(sum(lim.allow() for _ in range(%d)))\n" % (ALGOS, NOW, CAP))
    procs = [subprocess.Popen([sys.executable, "-c", script, region_dir, c],
                              stdout=subprocess.PIPE, text=True)
             for c, _ in ALGOS for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for i, (c, _) in enumerate(ALGOS):
        assert sum(int(o) for o in outs[3 * i:3 * i + 3]) == CAP, c


def test_reset_is_seen_by_every_process(region_dir):
    with pr.SharedMemory("reset", directory=region_dir) as r:
        for c, a in ALGOS:
            lim = _make(c, a, r, c)
            assert sum(lim.allow() for _ in range(CAP + 5)) == CAP
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(1) as pool:
                assert pool.map(_hammer, [(region_dir, "reset", c, a, c, 3)]) == [0]
            lim.reset()
            with ctx.Pool(1) as pool:
                assert pool.map(_hammer, [(region_dir, "reset", c, a, c, 3)]) == [3]


# ---- SIGKILL in the middle of operations ----------------------------------------------

KILL_CAP = 10**6


def test_kill_loop_leaves_limiters_answering_and_exact(region_dir):
    """SIGKILL forked processes at random instants while they hammer a shared
    limiter of each algorithm (100 kills each). Each admission is reported on
    a pipe right after it; a kill can fall between an admission and its report,
    so the reports undercount by at most one per kill. Afterwards the limiter
    answers, and reported + still admissible == capacity up to that bound."""
    rng = random.Random(14)
    kills = 100
    r = pr.SharedMemory("kill", directory=region_dir, size=16 << 20)
    for c, a in ALGOS:
        args = (KILL_CAP,) + a[1:] if c != "GCRA" else (1.0, KILL_CAP)
        lim = _make(c, args, r, c)
        rd, wr = os.pipe()
        os.set_blocking(rd, False)
        reported = 0
        for _ in range(kills):
            pid = os.fork()
            if pid == 0:  # the child: admit and report, until killed
                try:
                    os.close(rd)
                    while True:
                        if lim.allow():
                            os.write(wr, b"x")
                finally:
                    os._exit(1)
            select.select([rd], [], [], 30)  # it is deciding (a fork can be slow under load)
            time.sleep(rng.uniform(0.0, 0.002))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            try:
                while True:
                    reported += len(os.read(rd, 1 << 16))
            except BlockingIOError:
                pass
        os.close(rd)
        os.close(wr)
        assert lim.peek().limit >= 1  # answers: no lock stays held
        left = int(lim.available)
        assert 0 <= KILL_CAP - reported - left <= kills, (c, reported, left)
        assert reported > 0
    r.close()


def test_bad_directories_are_named():
    with pytest.raises(ValueError, match="directory must be a non-empty path, got ''"):
        pr.SharedMemory("s", directory="")
    with pytest.raises(ValueError, match="directory must not contain NUL characters"):
        pr.SharedMemory("s", directory="a\0b")
    with pytest.raises(TypeError, match="directory must be a str or None"):
        pr.SharedMemory("s", directory=b"/tmp")
