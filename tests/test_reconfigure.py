"""Changing limits at runtime: reconfigure(**params) on every in-process limiter
and on KeyedLimiter (every key at once).

Time is a frozen ManualClock moved explicitly; counts are exact. The rules
(README "Changing limits at runtime"): parameters not given keep their value;
the state is kept (tokens capped at the new capacity, a window's count and a
log's admission times kept, GCRA's consumed requests kept), never an admission
the new limit forbids; bad values raise the constructor's errors and change
nothing; a decision racing a reconfiguration sees the old or the new config.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import pyresilience as pr


def drain(lim: Any, *key: Any) -> int:
    """How many weight-1 requests are admitted now, taking them."""
    n = 0
    while lim.allow(*key):
        n += 1
    return n


# ---- each algorithm at explicit times --------------------------------------------


def test_token_bucket_tokens_capped_and_old_rate_until_now(clock: pr.ManualClock) -> None:
    tb = pr.TokenBucket(10, 1, clock=clock)
    assert tb.allow(8)
    clock.advance(1)  # 3 tokens, earned at the old rate
    tb.reconfigure(capacity=5, refill_rate=10)
    assert (tb.capacity, tb.refill_rate, tb.rate) == (5.0, 10.0, 10.0)
    assert tb.available == 3.0
    assert tb.allow(3)
    d = tb.check()
    assert not d.allowed and d.retry_after == pytest.approx(0.1)  # the new rate
    assert d.limit == 5
    clock.advance(10)
    tb.reconfigure(capacity=2)  # full at 5, lowered: capped at 2
    assert tb.refill_rate == 10.0  # not given: kept
    assert drain(tb) == 2


def test_token_bucket_raised_rate_does_not_apply_backwards(clock: pr.ManualClock) -> None:
    tb = pr.TokenBucket(10, 1, clock=clock)
    assert drain(tb) == 10
    clock.advance(2)
    tb.reconfigure(rate=1000)  # the alias; 2 tokens were earned at 1/s
    assert drain(tb) == 2
    fresh = pr.TokenBucket(10, 1, clock=clock)
    fresh.reconfigure(capacity=20)  # a raised capacity fills at the refill rate
    assert fresh.available == 10.0
    clock.advance(10)
    assert fresh.available == 20.0


def test_gcra_consumed_requests_kept(clock: pr.ManualClock) -> None:
    g = pr.GCRA(10, 10, clock=clock)
    assert g.allow(6)
    g.reconfigure(rate=100, burst=5)  # 6 consumed > the new burst
    assert (g.rate, g.burst) == (100.0, 5)
    d = g.check()
    assert not d.allowed and d.retry_after == pytest.approx(0.020)
    clock.advance(0.020)
    assert g.allow()
    assert not g.allow()
    fresh = pr.GCRA(10, 10, clock=clock)
    fresh.reconfigure(burst=3)
    assert drain(fresh) == 3  # nothing consumed: the new burst at once


def test_gcra_round_trips_mint_nothing(clock: pr.ManualClock) -> None:
    g = pr.GCRA(1, 10, clock=clock)
    assert drain(g) == 10
    for _ in range(20):
        g.reconfigure(rate=1000)
        g.reconfigure(rate=1)
    assert not g.allow()


def test_leaky_bucket_level_kept(clock: pr.ManualClock) -> None:
    lb = pr.LeakyBucket(10, 1, clock=clock)
    assert lb.allow(10)
    clock.advance(2)  # level 8
    lb.reconfigure(capacity=5, leak_rate=10)
    assert lb.level == pytest.approx(8.0)
    d = lb.check()
    assert not d.allowed and d.retry_after == pytest.approx(0.4)
    clock.advance(0.4)
    assert drain(lb) == 1


def test_fixed_window_count_kept(clock: pr.ManualClock) -> None:
    fw = pr.FixedWindow(10, 1, clock=clock)
    clock.advance(0.5)
    assert fw.allow(8)
    fw.reconfigure(limit=5)  # below the count: nothing until the window moves on
    d = fw.check()
    assert not d.allowed and d.retry_after == pytest.approx(0.5) and d.remaining == 0
    assert fw.available == 0.0
    clock.advance(0.5)
    assert drain(fw) == 5
    fw.reconfigure(limit=20)  # raised: the 5 still count
    assert drain(fw) == 15
    assert fw.window == 1.0


def test_fixed_window_new_length_carries_the_count(clock: pr.ManualClock) -> None:
    fw = pr.FixedWindow(10, 1, clock=clock)
    clock.advance(1.2)
    assert fw.allow(4)
    clock.advance(0.3)
    fw.reconfigure(window=10)
    assert fw.window == 10.0 and fw.limit == 10
    assert drain(fw) == 6
    clock.set(10)
    assert drain(fw) == 10


def test_sliding_log_times_kept_lower_then_raise(clock: pr.ManualClock) -> None:
    sl = pr.SlidingWindowLog(5, 1, clock=clock)
    for _ in range(5):
        assert sl.allow()
        clock.advance(0.1)
    clock.set(0.45)
    sl.reconfigure(limit=3)
    d = sl.check()
    assert not d.allowed and d.retry_after == pytest.approx(0.75)  # the 0.2 s entry leaves
    sl.reconfigure(limit=8)  # above the ring it was made with; the 5 still count
    assert sl.limit == 8
    assert drain(sl) == 3
    clock.set(1.45)  # everything admitted up to 0.45 s has left
    assert drain(sl) == 8


def test_sliding_counter_counters_kept(clock: pr.ManualClock) -> None:
    sc = pr.SlidingWindowCounter(10, 1, clock=clock)
    clock.advance(0.5)
    assert sc.allow(8)
    sc.reconfigure(limit=4)
    d = sc.check()
    assert not d.allowed and d.retry_after == pytest.approx(1.125)
    clock.advance(1.125)
    assert sc.allow()
    assert not sc.allow()


# ---- parameters: kept, None, errors (all or nothing) --------------------------------

MAKERS: list[tuple[str, Callable[[pr.ManualClock], Any], dict[str, Any]]] = [
    ("TokenBucket", lambda c: pr.TokenBucket(10, 1, clock=c), {"capacity": 10.0, "refill_rate": 1.0}),
    ("GCRA", lambda c: pr.GCRA(10, 10, clock=c), {"rate": 10.0, "burst": 10}),
    ("LeakyBucket", lambda c: pr.LeakyBucket(10, 1, clock=c), {"capacity": 10.0, "leak_rate": 1.0}),
    ("FixedWindow", lambda c: pr.FixedWindow(10, 1, clock=c), {"limit": 10, "window": 1.0}),
    ("SlidingWindowLog", lambda c: pr.SlidingWindowLog(10, 1, clock=c), {"limit": 10, "window": 1.0}),
    ("SlidingWindowCounter", lambda c: pr.SlidingWindowCounter(10, 1, clock=c), {"limit": 10, "window": 1.0}),
]
IDS = [m[0] for m in MAKERS]


def params_of(lim: Any, names: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(lim, k) for k in names}


@pytest.mark.parametrize(("name", "make", "initial"), MAKERS, ids=IDS)
def test_not_given_keeps_and_none_keeps(name: str, make: Callable[[pr.ManualClock], Any],
                                        initial: dict[str, Any], clock: pr.ManualClock) -> None:
    lim = make(clock)
    assert params_of(lim, initial) == initial
    lim.reconfigure()
    assert params_of(lim, initial) == initial
    lim.reconfigure(**{k: None for k in initial})
    assert params_of(lim, initial) == initial
    first, second = list(initial)
    lim.reconfigure(**{first: 4})
    assert params_of(lim, initial) == {first: type(initial[first])(4), second: initial[second]}
    assert list(inspect.signature(lim.reconfigure).parameters) == \
        list(inspect.signature(type(lim).reconfigure).parameters)[1:]


BAD: list[tuple[str, Callable[[pr.ManualClock], Any], dict[str, Any], type, str]] = [
    ("tb-cap", MAKERS[0][1], {"capacity": 0}, ValueError, "capacity"),
    ("tb-cap-frac", MAKERS[0][1], {"capacity": 10.5}, ValueError, "capacity must be a whole number, got 10.5"),
    ("tb-rate", MAKERS[0][1], {"refill_rate": -1}, ValueError, "refill_rate"),
    ("tb-rate-nan", MAKERS[0][1], {"rate": float("nan")}, ValueError, "rate"),
    ("tb-rate-str", MAKERS[0][1], {"refill_rate": "5"}, TypeError, "refill_rate"),
    ("tb-both", MAKERS[0][1], {"refill_rate": 1, "rate": 2}, TypeError, "rate"),
    ("gcra-rate", MAKERS[1][1], {"rate": 0}, ValueError, "rate"),
    ("gcra-burst", MAKERS[1][1], {"burst": 0}, ValueError, "burst"),
    ("gcra-range", MAKERS[1][1], {"rate": 1e-9, "burst": 2**62}, ValueError, "burst"),
    ("lb-rate", MAKERS[2][1], {"leak_rate": 0}, ValueError, "leak_rate"),
    ("fw-limit", MAKERS[3][1], {"limit": -1}, ValueError, "limit"),
    ("fw-window", MAKERS[3][1], {"window": 0}, ValueError, "window"),
    ("sl-limit", MAKERS[4][1], {"limit": 2**27 + 1}, ValueError, "limit"),
    ("sc-limit-bool", MAKERS[5][1], {"limit": True}, TypeError, "limit"),
]


@pytest.mark.parametrize(("make", "kwargs", "exc", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_values_raise_and_change_nothing(make: Callable[[pr.ManualClock], Any], kwargs: dict[str, Any],
                                             exc: type, match: str, clock: pr.ManualClock) -> None:
    lim = make(clock)
    names = next(m[2] for m in MAKERS if m[1] is make)
    assert lim.allow(3)
    before = params_of(lim, names)
    # a valid value beside the bad one: all or nothing
    good = {k: 5 for k in names if k not in kwargs}
    if "rate" in kwargs:
        good.pop("refill_rate", None)  # rate is its alias
    with pytest.raises(exc, match=match):
        lim.reconfigure(**kwargs, **good)
    assert params_of(lim, names) == before
    assert drain(lim) == 7


@pytest.mark.parametrize(("name", "make", "initial"), MAKERS, ids=IDS)
def test_clock_and_positional_refused(name: str, make: Callable[[pr.ManualClock], Any],
                                      initial: dict[str, Any], clock: pr.ManualClock) -> None:
    lim = make(clock)
    with pytest.raises(TypeError, match="clock"):
        lim.reconfigure(clock=pr.ManualClock())
    with pytest.raises(TypeError):
        lim.reconfigure(5)
    with pytest.raises(TypeError, match="nonsense"):
        lim.reconfigure(nonsense=1)
    assert lim.clock is clock


# ---- KeyedLimiter: every key at once ----------------------------------------------------


def test_keyed_every_key_at_once(clock: pr.ManualClock) -> None:
    kl = pr.KeyedLimiter(pr.TokenBucket, capacity=10, refill_rate=1, clock=clock)
    assert kl.allow("a", 2) and kl.allow("b", 9)
    long_key = "k" * 40
    assert kl.allow(long_key, 10)
    kl.reconfigure(capacity=4, refill_rate=2)
    assert kl.available("a") == 4.0  # capped
    assert kl.available("b") == 1.0  # kept
    assert kl.available("new") == 4.0  # fresh under the new params
    d = kl.check(long_key)
    assert not d.allowed and d.retry_after == pytest.approx(0.5) and d.limit == 4
    assert (kl.limiter.capacity, kl.limiter.refill_rate) == (4.0, 2.0)  # template in step
    view = kl.for_key("a")
    assert drain(view) == 4
    with pytest.raises(ValueError, match="capacity"):
        kl.reconfigure(capacity=-1, refill_rate=3)
    assert kl.limiter.refill_rate == 2.0
    with pytest.raises(TypeError, match="limit"):
        kl.reconfigure(limit=3)  # not a TokenBucket parameter
    assert len(kl) == 3


def test_keyed_sliding_log_grows_and_shrinks(clock: pr.ManualClock) -> None:
    kl = pr.KeyedLimiter(pr.SlidingWindowLog, 3, 1.0, clock=clock)
    keys = [f"user-{i}" for i in range(200)] + [f"a much longer key number {i}" for i in range(50)]
    for k in keys:
        assert kl.allow(k, 2)
    kl.reconfigure(limit=40)  # every slot re-laid with a 40-entry ring
    assert all(kl.available(k) == 38.0 for k in keys)
    assert drain(kl, "user-7") == 38
    kl.reconfigure(limit=2)
    assert all(not kl.allow(k) for k in keys)
    clock.advance(1)
    assert all(drain(kl, k) == 2 for k in keys[:20])


def test_core_keyed_leaves_its_template_alone(clock: pr.ManualClock) -> None:
    bucket = pr.TokenBucket(10, 1, clock=clock)
    kl = pr._core.KeyedLimiter(bucket, clock=clock)
    kl.reconfigure(capacity=3)
    assert bucket.capacity == 10.0
    assert kl.available("x") == 3.0
    bucket.reconfigure(capacity=7)  # the table keeps its own copy
    assert kl.available("y") == 3.0


# ---- groups with reconfigured members --------------------------------------------------


def test_group_keeps_working(clock: pr.ManualClock) -> None:
    log = pr.SlidingWindowLog(2, 1, clock=clock)
    kl = pr.KeyedLimiter(pr.SlidingWindowLog, 2, 1.0, clock=clock)
    g = pr.GCRA(10, 5, clock=clock)
    group = pr.LimiterGroup(log, g, kl.for_key("user"))
    assert group.allow(2)
    assert not group.allow()
    log.reconfigure(limit=400)
    kl.reconfigure(limit=300)
    g.reconfigure(rate=1000, burst=500)
    assert group.allow(3)
    other = pr.LimiterGroup(log, kl.for_key("other"))
    assert other.allow(250)
    assert not other.allow(100)  # the key has 50 left: all or nothing
    assert log.available == 400 - 5 - 250
    assert kl.available("other") == 50.0


# ---- threads deciding while another reconfigures (time frozen) --------------------------

RACES: list[tuple[str, Callable[[pr.ManualClock], Any], Callable[[Any, int], None], bool]] = [
    ("TokenBucket", lambda c: pr.TokenBucket(100, 0, clock=c), lambda o, v: o.reconfigure(capacity=v), False),
    ("GCRA", lambda c: pr.GCRA(0.001, 100, clock=c), lambda o, v: o.reconfigure(burst=v), False),
    ("GCRA-rate", lambda c: pr.GCRA(0.001, 100, clock=c),
     lambda o, v: o.reconfigure(rate=0.001 if v == 100 else 0.002, burst=v), False),
    ("LeakyBucket", lambda c: pr.LeakyBucket(100, 0.001, clock=c), lambda o, v: o.reconfigure(capacity=v), True),
    ("FixedWindow", lambda c: pr.FixedWindow(100, 1, clock=c), lambda o, v: o.reconfigure(limit=v), True),
    ("SlidingWindowLog", lambda c: pr.SlidingWindowLog(60, 1, clock=c), lambda o, v: o.reconfigure(limit=v), True),
    ("SlidingWindowCounter", lambda c: pr.SlidingWindowCounter(100, 1, clock=c),
     lambda o, v: o.reconfigure(limit=v), True),
    ("KeyedLimiter", lambda c: pr.KeyedLimiter(pr.SlidingWindowLog, 100, 1.0, clock=c).for_key("k"),
     lambda o, v: o.limiter.reconfigure(limit=v), True),
]


@pytest.mark.parametrize(("name", "make", "reconf", "exact"), RACES, ids=[r[0] for r in RACES])
def test_threads_never_over_admit(name: str, make: Callable[[pr.ManualClock], Any],
                                  reconf: Callable[[Any, int], None], exact: bool,
                                  clock: pr.ManualClock) -> None:
    """Four threads take one at a time while a fifth flips the limit between
    100 and 50, time frozen: never more than 100 admitted, and exactly 100
    once the limit settles at 100 (where the count is kept whole; a token
    bucket loses the tokens a lowering caps, GCRA may lose a nanosecond of
    schedule per flip)."""
    lim = make(clock)
    admitted = [0] * 4
    stop = threading.Event()

    def decide(i: int) -> None:
        while not stop.is_set():
            if lim.allow():
                admitted[i] += 1

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(600):
            reconf(lim, 50 if i % 2 else 100)
    finally:
        stop.set()
        for t in threads:
            t.join()
    reconf(lim, 100)
    total = sum(admitted) + drain(lim)
    assert total <= 100
    if exact:
        assert total == 100


# ---- typing -----------------------------------------------------------------------------


def test_mypy_passes_on_example() -> None:
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_reconfigure.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr
