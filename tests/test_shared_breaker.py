"""CircuitBreaker placed in a SharedMemory region (issue 14): one state for
every process, exactly half_open_max_calls trials across processes (fork and
spawn pools), a dead trial's slot coming back, both window kinds and failure
modes, the mismatch naming both configurations, and a SIGKILL loop.

Time is a ManualClock at the same instant in every process, except where a
test says otherwise; nothing sleeps to wait for time to pass."""
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
MAXC = 3


@pytest.fixture
def region(tmp_path):
    r = pr.SharedMemory("brk", directory=str(tmp_path), size=4 << 20)
    yield r
    r.close()


def _breaker(r, name="dep", clock=None, **kw):
    kw.setdefault("failure_threshold", 2)
    kw.setdefault("timeout_seconds", 10.0)
    return pr.CircuitBreaker(name=name, shared=r, clock=clock or pr.ManualClock(NOW), **kw)


def _fail(b):
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)


def test_one_state_for_every_handle(region):
    clock = pr.ManualClock(NOW)
    a, b = _breaker(region, clock=clock), _breaker(region, clock=clock)
    assert a.shared and b.shared
    assert not pr.CircuitBreaker(name="local").shared
    _fail(a)
    _fail(b)
    assert a.state is pr.CircuitState.OPEN and b.state is pr.CircuitState.OPEN
    with pytest.raises(pr.CircuitOpenError) as e:
        b.call(lambda: 1)
    assert e.value.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    assert a.call(lambda: 1) == 1  # the trial, half-open
    assert b.state is pr.CircuitState.HALF_OPEN
    assert b.call(lambda: 2) == 2  # success_threshold (2): closed
    assert a.state is pr.CircuitState.CLOSED
    m = a.metrics
    assert (m.calls, m.failures, m.rejected) == (4, 2, 1)
    a.force_open()
    assert b.mode == "forced_open"
    b.reset()
    assert a.state is pr.CircuitState.CLOSED and a.metrics.calls == 0


def test_rate_modes_and_windows(region):
    clock = pr.ManualClock(NOW)
    b = _breaker(region, "count", clock, failure_rate_threshold=0.5, window_size=4,
                 minimum_calls=4)
    for ok in (False, True, True):
        if ok:
            b.call(lambda: 1)
        else:
            _fail(b)
    assert b.state is pr.CircuitState.CLOSED
    _fail(b)
    assert b.state is pr.CircuitState.OPEN
    t = _breaker(region, "time", clock, window_type="time", window_size=2, minimum_calls=2,
                 slow_call_duration=0.1, slow_call_rate_threshold=1.0)
    t.record_success(duration=1.0)
    clock.advance(3.0)  # the first one left the window
    t.record_success(duration=1.0)
    assert t.state is pr.CircuitState.CLOSED
    t.record_success(duration=1.0)
    assert t.state is pr.CircuitState.OPEN
    assert t.metrics.window_slow_calls == 2


def test_mismatch_names_both_configurations(region):
    _breaker(region)
    with pytest.raises(ValueError) as e:
        _breaker(region, failure_threshold=7)
    msg = str(e.value)
    assert "exists as circuit_breaker(failure_threshold=2," in msg
    assert "asked for circuit_breaker(failure_threshold=7," in msg
    pr.Bulkhead("bh", 2, shared=region)
    with pytest.raises(ValueError, match=r"exists as bulkhead\(\.\.\.\)|exists as bulkhead"):
        _breaker(region, "bh")


def test_bad_arguments(region):
    with pytest.raises(ValueError, match="exclusive"):
        pr.CircuitBreaker(name="x", shared=region, backend=object())
    with pytest.raises(ValueError, match="needs name="):
        pr.CircuitBreaker(shared=region)
    with pytest.raises(TypeError, match="shared must be a SharedMemory"):
        pr.CircuitBreaker(name="x", shared="region")
    with pytest.raises(ValueError, match="name must be"):
        pr.CircuitBreaker(name="a/b", shared=region)
    with pytest.raises(ValueError) as e:
        pr.CircuitBreaker(name="big", shared=region, half_open_max_calls=70000)
    assert str(e.value) == "half_open_max_calls must be <= 65536 in a region"  # said once
    closed = pr.SharedMemory("closed", directory=os.path.dirname(region.path))
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        pr.CircuitBreaker(name="x", shared=closed)


# ---- exactly half_open_max_calls trials across processes ---------------------------------

def _trials(job):
    """In a worker: open the region by name and ask for trials; how many."""
    directory, name, tries = job
    with pr.SharedMemory("brk", directory=directory) as r:
        b = _breaker(r, name, half_open_max_calls=MAXC, success_threshold=10)
    return sum(b.allow_request() for _ in range(tries))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exact_trials_across_processes(region, method):
    directory = os.path.dirname(region.path)
    b = _breaker(region, method, half_open_max_calls=MAXC, success_threshold=10)
    b.half_open()
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(4) as pool:
        counts = pool.map(_trials, [(directory, method, 50)] * 8, chunksize=1)
        assert sum(counts) == MAXC
        assert b.metrics.half_open_in_flight == MAXC
        assert not b.allow_request()


def test_dead_trial_holder_slot_comes_back(region):
    """A process takes a trial slot and is SIGKILLed: the slot stays taken
    while it lives, and the first admission that finds half-open full once
    the reap interval (0.25 s of the breaker's clock) has passed frees it."""
    clock = pr.ManualClock(NOW)
    b = _breaker(region, clock=clock, half_open_max_calls=1, success_threshold=5)
    b.half_open()
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(wr, b"1" if b.allow_request() else b"0")
            time.sleep(60)
        finally:
            os._exit(0)
    assert os.read(rd, 1) == b"1"
    assert not b.allow_request()  # held by a live process
    clock.advance(1.0)
    assert not b.allow_request()  # still alive: looked, nothing to free
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert not b.allow_request()  # the next look is not due yet
    clock.advance(0.25)
    assert b.allow_request()  # freed, and taken
    assert b.metrics.half_open_in_flight == 1
    os.close(rd)
    os.close(wr)


# ---- SIGKILL in the middle of operations ------------------------------------------------------

@pytest.mark.parametrize("window", ["count", "time", "consecutive"])
def test_kill_loop_keeps_the_breaker_consistent(region, window):
    """Children hammer the breaker (calls that fail or succeed, slow ones,
    allow_request/record pairs, manual half_open, metrics) on the real clock
    and are SIGKILLed at random instants, 120 times. Afterwards it answers at
    once, its counts are consistent and it admits exactly half_open_max_calls
    trials again."""
    rng = random.Random(14)
    kw = dict(timeout_seconds=0.01, half_open_max_calls=MAXC, success_threshold=2)
    if window != "consecutive":
        kw.update(failure_rate_threshold=0.5, window_type=window, window_size=5,
                  minimum_calls=3, slow_call_duration=0.5, slow_call_rate_threshold=0.9)
    b = pr.CircuitBreaker(name="kill-" + window, shared=region, **kw)
    rd, wr = os.pipe()
    for _ in range(120):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(rd)
                x = os.getpid()
                os.write(wr, b"x")
                while True:
                    x = (x * 1103515245 + 12345) & 0xFFFFFFFF
                    op = x % 16
                    try:
                        if op < 5:
                            b.call(lambda: 1 / 0)
                        elif op < 11:
                            b.call(lambda: 1)
                        elif op < 13:
                            if b.allow_request():
                                b.record_success(duration=1.0 if op == 12 else 0.0)
                        elif op == 13:
                            b.half_open()
                        elif op == 14:
                            b.metrics
                        else:
                            if b.allow_request():
                                b.record_failure()
                    except (ZeroDivisionError, pr.CircuitOpenError):
                        pass
            finally:
                os._exit(1)
        select.select([rd], [], [], 30)
        os.read(rd, 1)
        time.sleep(rng.uniform(0.0, 0.003))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        m = b.metrics  # answers: no lock stays held
        assert 0 <= m.window_failures <= m.window_calls
        assert 0 <= m.window_slow_calls <= m.window_calls
        if window != "time":
            assert m.window_calls <= 5 or window == "consecutive"
        assert 0 <= m.half_open_in_flight <= MAXC
        assert m.half_open_in_flight == 0 or m.state is pr.CircuitState.HALF_OPEN
        assert 0 <= m.failures <= m.calls
    os.close(rd)
    os.close(wr)
    b.half_open()
    assert sum(b.allow_request() for _ in range(10)) == MAXC
    b.reset()
    assert b.state is pr.CircuitState.CLOSED and b.call(lambda: 7) == 7
