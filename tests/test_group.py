"""LimiterGroup: all or nothing across plain limiters and per-key views, the
most restrictive member's decision and denied_by, waiting, threads in both
member orders with time frozen, bad input, GC, typing."""
from __future__ import annotations

import asyncio
import gc
import inspect
import math
import threading
import weakref

import pytest

import pyresilience as pr


def test_table(clock):
    tb = pr.TokenBucket(5, 1, clock=clock)
    g = pr.GCRA(rate=1, burst=3, clock=clock)
    grp = pr.LimiterGroup(tb, g)
    assert len(grp) == 2 and grp.limiters == (tb, g) and grp.clock is clock
    d = grp.check()
    assert d.allowed and d.denied_by is None and d.remaining == 2 and d.limit == 3
    assert grp.allow(2)
    d = grp.check()
    assert not d.allowed and d.denied_by == 1 and d.retry_after == 1.0
    assert tb.available == 2.0  # the denial took nothing from the bucket
    assert grp.peek().denied_by == 1
    clock.advance(1)
    assert grp.peek().allowed and grp.peek().allowed  # peek consumes nothing
    assert grp.allow() and not grp.allow()
    assert tb.allow(2)  # drain the bucket by itself: now member 0 denies first
    clock.advance(1)
    d = grp.check(2)
    assert not d.allowed and d.denied_by == 0 and d.retry_after == 1.0
    assert grp.available == 1.0
    grp.reset()
    assert grp.available == 3.0 and tb.available == 5.0
    d = grp.check(9)
    assert not d.allowed and math.isinf(d.retry_after) and d.denied_by == 0


def test_global_per_user_per_endpoint(clock):
    global_limit = pr.TokenBucket(100, 0, clock=clock)
    per_user = pr.KeyedLimiter(pr.TokenBucket, capacity=3, refill_rate=0, clock=clock)
    per_endpoint = pr.KeyedLimiter(pr.SlidingWindowLog, limit=4, window=60, clock=clock)

    def group(user, path):
        return pr.LimiterGroup(global_limit, per_user.for_key(user), per_endpoint.for_key(path))

    a = group("alice", "/search")
    assert [a.allow() for _ in range(4)] == [True, True, True, False]
    assert a.check().denied_by == 1  # alice is out
    b = group("bob", "/search")
    assert b.allow()  # the endpoint has 1 left
    d = b.check()
    assert not d.allowed and d.denied_by == 2 and d.retry_after == 60.0
    assert global_limit.available == 96.0  # 3 + 1 admitted, nothing from denials
    assert per_user.available("bob") == 2.0
    assert "carol" not in per_user
    assert not group("carol", "/search").allow()
    assert "carol" not in per_user  # a denied group stores no key
    assert group("carol", "/home").allow() and "carol" in per_user


def test_same_limiter_twice(clock):
    tb = pr.TokenBucket(4, 0, clock=clock)
    grp = pr.LimiterGroup(tb, tb)
    assert grp.allow() and grp.allow() and not grp.allow()
    assert tb.available == 0.0


def test_acquire_and_async(clock):
    tb = pr.TokenBucket(2, 1, clock=clock)
    k = pr.KeyedLimiter(pr.GCRA, rate=2, burst=1, clock=clock)
    grp = pr.LimiterGroup(tb, k.for_key("u"))
    grp.acquire()
    grp.acquire()  # gcra: 0.5 s
    assert clock.now() == 0.5
    with pytest.raises(pr.RateLimitExceeded) as ei:
        grp.acquire(timeout=0.1)
    assert ei.value.decision.denied_by is not None
    with pytest.raises(ValueError, match="never"):
        grp.acquire(2)  # gcra burst 1

    async def main():
        await grp.acquire_async()
        async with grp:
            pass

    asyncio.run(main())
    assert clock.now() > 0.5

    calls = []

    @grp
    def f():
        calls.append(1)

    f()
    with grp:
        pass
    assert calls == [1]


def test_threads_exact_in_both_orders():
    clock = pr.ManualClock()  # frozen
    a = pr.TokenBucket(1000, 0, clock=clock)
    b = pr.GCRA(rate=1, burst=500, clock=clock)
    k = pr.KeyedLimiter(pr.TokenBucket, 800, 0, clock=clock)
    g1 = pr.LimiterGroup(a, b, k.for_key("k"))
    g2 = pr.LimiterGroup(k.for_key("k"), b, a)
    counts = {"group": [0] * 8, "a": [0] * 8, "b": [0] * 8}

    def work(t):
        for i in range(20_000):
            if t < 4:
                if (g1 if (i + t) & 1 else g2).allow():
                    counts["group"][t] += 1
            elif t < 6:
                if a.allow():
                    counts["a"][t] += 1
            elif b.allow():
                counts["b"][t] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    G = sum(counts["group"])
    assert G + sum(counts["a"]) == 1000
    assert G + sum(counts["b"]) == 500
    assert k.available("k") == 800 - G
    assert not a.allow() and not b.allow()


def _six(clock):
    """One plain limiter of each algorithm and a per-key view, all on clock."""
    plain = [
        pr.TokenBucket(5, 1, clock=clock),
        pr.GCRA(rate=1, burst=4, clock=clock),
        pr.LeakyBucket(6, 1, clock=clock),
        pr.FixedWindow(3, 10, clock=clock),
        pr.SlidingWindowLog(8, 10, clock=clock),  # a state bigger than the snapshot
        pr.SlidingWindowCounter(7, 10, clock=clock),
    ]
    per_user = pr.KeyedLimiter(pr.TokenBucket, 10, 0, clock=clock)
    return plain, per_user


def _avail(plain, per_user):
    return [m.available for m in plain] + [per_user.available("u")]


def test_every_algorithm_as_a_member(clock):
    plain, per_user = _six(clock)
    grp = pr.LimiterGroup(*plain, per_user.for_key("u"))
    assert len(grp) == 7 and grp.limiters[:6] == tuple(plain)
    assert grp.available == 3.0  # the fixed window's
    d = grp.check()
    assert d.allowed and d.denied_by is None and d.remaining == 2 and d.limit == 3
    assert grp.allow(2)
    d = grp.check()
    assert not d.allowed and d.denied_by == 3 and d.retry_after == 10.0
    assert grp.peek().denied_by == 3
    assert _avail(plain, per_user) == [2, 1, 3, 0, 5, 4, 7]  # the denials took nothing
    clock.advance(10)  # a new window; the counter still weighs the previous 3
    assert grp.allow(3)
    assert _avail(plain, per_user) == [2, 1, 3, 0, 5, 1, 4]
    clock.advance(10)
    assert per_user.allow("u", 4)  # the key alone: now the last member denies
    before = _avail(plain, per_user)
    assert before == [5, 4, 6, 3, 8, 4, 0]
    d = grp.check(2)
    assert not d.allowed and d.denied_by == 6 and math.isinf(d.retry_after)
    assert _avail(plain, per_user) == before  # every member, the log included, gave back
    grp.reset()
    assert _avail(plain, per_user) == [5, 4, 6, 3, 8, 7, 10]
    d = grp.check(4)  # beyond the fixed window's limit
    assert not d.allowed and d.denied_by == 3 and math.isinf(d.retry_after)
    # the reverse order: denied_by counts in the group's own order
    rev = pr.LimiterGroup(per_user.for_key("u"), *reversed(plain))
    assert rev.allow(3) and not rev.allow()
    assert rev.check().denied_by == 3
    assert _avail(plain, per_user) == [2, 1, 3, 0, 5, 4, 7]
    assert "SlidingWindowCounter(limit=7" in repr(rev)


def test_every_algorithm_acquire(clock):
    lb = pr.LeakyBucket(1, 2, clock=clock)
    fw = pr.FixedWindow(2, 1, clock=clock)
    grp = pr.LimiterGroup(fw, lb)
    grp.acquire()
    grp.acquire()  # the leaky bucket drains 1 in 0.5 s
    assert clock.now() == 0.5
    grp.acquire()  # the fixed window is full until 1 s
    assert clock.now() == 1.0
    with pytest.raises(ValueError, match="never"):
        grp.acquire(3)


def test_threads_every_algorithm_exact_in_both_orders():
    clock = pr.ManualClock(5.0)  # frozen mid-window
    limits = [1000, 500, 700, 900, 600, 800]
    plain = [
        pr.TokenBucket(limits[0], 0, clock=clock),
        pr.GCRA(rate=1, burst=limits[1], clock=clock),
        pr.LeakyBucket(limits[2], 1, clock=clock),
        pr.FixedWindow(limits[3], 10, clock=clock),
        pr.SlidingWindowLog(limits[4], 10, clock=clock),
        pr.SlidingWindowCounter(limits[5], 10, clock=clock),
    ]
    k = pr.KeyedLimiter(pr.TokenBucket, 400, 0, clock=clock)
    g1 = pr.LimiterGroup(*plain, k.for_key("u"))
    g2 = pr.LimiterGroup(k.for_key("u"), *reversed(plain))
    group_ok = [0] * 8
    plain_ok = [[0] * 6 for _ in range(8)]

    def work(t):
        for i in range(20_000):
            if t < 4:
                if (g1 if (i + t) & 1 else g2).allow():
                    group_ok[t] += 1
            else:
                j = (i + t) % 6
                if plain[j].allow():
                    plain_ok[t][j] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    G = sum(group_ok)
    assert G <= 400
    for j, lim in enumerate(limits):
        assert G + sum(row[j] for row in plain_ok) == lim, type(plain[j]).__name__
        assert not plain[j].allow()
    assert k.available("u") == 400 - G
    assert not g1.allow() and not g2.allow()


def test_bad_input(clock):
    tb = pr.TokenBucket(1, 1, clock=clock)
    with pytest.raises(ValueError, match="1 to 32"):
        pr.LimiterGroup()
    with pytest.raises(ValueError, match="1 to 32"):
        pr.LimiterGroup(*([tb] * 33))
    for bad in (1, "x", None, pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=clock)):
        with pytest.raises(TypeError, match="member 0"):
            pr.LimiterGroup(bad)
    with pytest.raises(TypeError, match="LeakyBucket, FixedWindow"):  # names what it takes
        pr.LimiterGroup(object())
    with pytest.raises(ValueError, match="one clock"):
        pr.LimiterGroup(tb, pr.GCRA(1, 1))
    with pytest.raises(TypeError):
        pr.LimiterGroup(tb, x=tb)
    grp = pr.LimiterGroup(tb)
    with pytest.raises(ValueError):
        grp.allow(0)
    with pytest.raises(TypeError):
        grp.allow("1")
    with pytest.raises(ValueError, match="timeout"):
        grp.acquire(timeout=math.nan)


def test_members_share_one_clock():
    """One clock: every monotonic one (default or a MonotonicClock given) is
    the same; a ManualClock or a callable only as the same object."""
    m1, m2 = pr.ManualClock(), pr.ManualClock()
    assert len(pr.LimiterGroup(pr.TokenBucket(1, 1), pr.GCRA(1, 1, clock=pr.MonotonicClock()))) == 2
    assert len(pr.LimiterGroup(pr.TokenBucket(1, 1, clock=m1), pr.GCRA(1, 1, clock=m1))) == 2
    now = lambda: 0.0  # noqa: E731
    assert len(pr.LimiterGroup(pr.TokenBucket(1, 1, clock=now), pr.GCRA(1, 1, clock=now))) == 2
    for a, b in ((m1, m2), (m1, None), (now, lambda: 0.0), (now, m1)):
        with pytest.raises(ValueError, match="one clock; member 1 reads another"):
            pr.LimiterGroup(pr.TokenBucket(1, 1, clock=a), pr.GCRA(1, 1, clock=b))


def test_collectable_with_a_clock_cycle():
    class Holder:
        pass

    h = Holder()
    h.t = 0.0
    clk = lambda: h.t  # noqa: E731
    tb = pr.TokenBucket(1, 1, clock=clk)
    k = pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=clk)
    grp = pr.LimiterGroup(tb, k.for_key("a"))
    h.grp = grp
    assert grp.allow()
    r = weakref.ref(grp)
    del grp, h, tb, k, clk
    gc.collect()
    assert r() is None


def test_signatures_and_repr(clock):
    for meth in ("allow", "check", "peek", "acquire", "reset", "acquire_async"):
        inspect.signature(getattr(pr.LimiterGroup, meth))
    grp = pr.LimiterGroup(pr.GCRA(1, 1, clock=clock))
    assert repr(grp).startswith("LimiterGroup(GCRA(")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_keyed_and_group_keep_working_in_a_forked_child(clock):
    import os
    k = pr.KeyedLimiter(pr.TokenBucket, 2, 0, clock=clock)
    g = pr.GCRA(1, 3, clock=clock)
    grp = pr.LimiterGroup(g, k.for_key("u"))
    assert grp.allow()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its own copy of every state
        try:
            ok = grp.allow() and not grp.allow() and k.allow("v", 2) and len(k) == 2
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"1"
    assert grp.allow() and len(k) == 1  # the parent's copy is untouched


# ---- the decision is one member's; duplicates counted once per appearance ----

def test_group_decision_is_one_members(clock):
    g = pr.GCRA(rate=10, burst=100, clock=clock)
    assert g.allow(95)
    tb = pr.TokenBucket(capacity=20, refill_rate=10, clock=clock)
    for grp in (pr.LimiterGroup(g, tb), pr.LimiterGroup(tb, g)):
        d = grp.peek()
        # the GCRA is the most restrictive (5 left vs 20): its limit, remaining, reset
        assert (d.limit, d.remaining, d.reset_after) == (100, 4, pytest.approx(9.6))
        assert d.headers() == {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "4",
                               "X-RateLimit-Reset": "10"}  # was Limit 20, Remaining 4, Reset 10
    grp = pr.LimiterGroup(tb, g)
    assert grp.allow(5)
    d = grp.check()
    assert not d.allowed and d.denied_by == 1
    assert (d.limit, d.remaining) == (100, 0) and d.retry_after == pytest.approx(0.1)
    assert tb.available == 15.0  # the denial took nothing
    # ties on remaining: the longest reset wins
    a = pr.TokenBucket(capacity=6, refill_rate=1, clock=clock)
    b = pr.TokenBucket(capacity=5, refill_rate=0.25, clock=clock)
    assert a.allow()
    d = pr.LimiterGroup(a, b).check()
    assert (d.limit, d.remaining, d.reset_after) == (5, 4, 4.0)


def test_group_duplicate_member_counted_per_appearance(clock):
    tb = pr.TokenBucket(capacity=3, refill_rate=0, clock=clock)
    keyed = pr.KeyedLimiter(pr.TokenBucket, capacity=5, refill_rate=1, clock=clock)
    for grp in (pr.LimiterGroup(tb, tb),
                pr.LimiterGroup(keyed.for_key("k"), tb, keyed.for_key("k"), tb)):
        tb.reset()
        keyed.reset()
        assert grp.available == 1.5  # 3 in the bucket, 2 per request
        # n=2 takes 4 from a bucket of 3: never, by peek and check alike
        p, d = grp.peek(2), grp.check(2)
        assert not p.allowed and not d.allowed and math.isinf(p.retry_after) and math.isinf(d.retry_after)
        with pytest.raises(ValueError, match="never"):
            grp.acquire(2)
        assert grp.peek().allowed and grp.check().allowed  # 2 taken, 1 left
        assert tb.available == 1.0
        p = grp.peek()
        assert not p.allowed and math.isinf(p.retry_after) and p.remaining == 0  # was allowed
        d = grp.check()
        assert not d.allowed and math.isinf(d.retry_after)
        assert p.denied_by == d.denied_by
        with pytest.raises(pr.RateLimitExceeded) as ei:  # was a spin
            grp.acquire(timeout=10)
        assert math.isinf(ei.value.retry_after)
        assert tb.available == 1.0

    # a key listed twice, refilling: retry_after for its doubled demand
    grp = pr.LimiterGroup(keyed.for_key("u"), keyed.for_key("u"))
    keyed.reset()
    assert grp.check(2).allowed  # 4 of 5
    d = grp.check()
    assert not d.allowed and d.denied_by == 0 and d.retry_after == 1.0  # 1 more token
    assert d.limit == 2 and d.remaining == 0
    grp.acquire()
    assert clock.now() == 1.0 and keyed.available("u") == 0.0


def test_built_in_new_never_reinitialised():
    with pytest.raises(ValueError, match="1 to"):
        pr.LimiterGroup.__new__(pr.LimiterGroup)
    a, b = pr.TokenBucket(1, 1), pr.GCRA(1, 1)
    g = pr.LimiterGroup(a)
    g.__init__(b)  # does nothing: no re-initialisation
    assert g.limiters == (a,)
    assert g.allow() and not a.allow() and b.allow()
