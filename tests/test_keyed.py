"""KeyedLimiter and its per-key views: behaviour tables on a ManualClock, every
algorithm per key, the memory bound and eviction rules, threads with time
frozen, asyncio, bad input, GC, typing."""
from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest

import pyresilience as pr


def test_token_bucket_table(clock):
    k = pr.KeyedLimiter(pr.TokenBucket, capacity=3, refill_rate=1, clock=clock)
    assert len(k) == 0 and k.max_keys == 100_000
    assert isinstance(k.limiter, pr.TokenBucket)
    # peeking an absent key stores nothing
    d = k.peek("alice")
    assert d.allowed and d.remaining == 2 and len(k) == 0 and "alice" not in k
    assert k.available("alice") == 3.0
    assert [k.allow("alice") for _ in range(4)] == [True, True, True, False]
    d = k.check("alice")
    assert not d.allowed and d.retry_after == 1.0 and d.limit == 3 and d.remaining == 0
    assert "alice" in k and len(k) == 1
    # bob is independent; a str key is its UTF-8 bytes
    assert k.allow(b"bob", 3) and not k.allow("bob")
    assert len(k) == 2 and b"alice" in k
    assert k.allow("b\u00e9", 1) and "b\u00e9".encode() in k
    clock.advance(1.0)
    assert k.allow("alice") and not k.allow("alice")
    assert k.allow("alice", n=1) is False and k.check(key="alice", tokens_needed=1).allowed is False
    # n > capacity: never
    d = k.check("carol", 4)
    assert not d.allowed and math.isinf(d.retry_after)
    # reset one key, then all
    k.reset("bob")
    assert "bob" not in k and k.allow("bob", 3)
    k.reset()
    assert len(k) == 0 and k.allow("alice", 3)
    clock.advance(10)
    assert "alice" not in k  # fresh again (still stored until evicted)
    assert k.prune() == 1 and len(k) == 0


def test_key_argument_of_reset_and_available(clock):
    """reset(key=None) and available(key, /) take a key as the rate methods do
    (str or bytes, one key), None resetting every key."""
    k = pr.KeyedLimiter(pr.TokenBucket, 2, 1, clock=clock)
    assert k.allow("a", 2) and k.allow(b"b", 2)
    assert k.available(b"a") == 0.0 and k.available("b") == 0.0
    k.reset(key=b"a")
    assert k.available("a") == 2.0 and k.available("b") == 0.0
    k.reset(None)
    assert k.available("b") == 2.0 and len(k) == 0
    for call in (k.available, k.reset):
        with pytest.raises(TypeError, match=r"^key must be str or bytes, not int: 1$"):
            call(1)
    with pytest.raises(TypeError):
        k.available(key="a")  # positional only


def test_for_key_view(clock):
    k = pr.KeyedLimiter(pr.GCRA, rate=1, burst=2, clock=clock)
    v = k.for_key("u1")
    assert isinstance(v, pr.KeyedLimiterView)
    assert v.key == "u1" and v.limiter is k and v.clock is clock
    assert v.allow() and v.check().remaining == 0 and not v.allow()
    assert not k.allow("u1")  # the same state
    assert v.peek().retry_after == 1.0
    assert v.available == 0.0
    v.reset()
    assert v.available == 2.0 and "u1" not in k
    # two views of one key share it
    w = k.for_key(b"u1")
    assert v.allow(2) and not w.allow()
    assert "KeyedLimiterView" in repr(v) and "KeyedLimiter(limiter_class=GCRA" in repr(k)


@pytest.mark.parametrize("cls,args", [
    (pr.TokenBucket, (2, 1)),
    (pr.GCRA, (1, 2)),
    (pr.LeakyBucket, (2, 1)),
    (pr.FixedWindow, (2, 1)),
    (pr.SlidingWindowLog, (2, 1)),
    (pr.SlidingWindowCounter, (2, 1)),
])
def test_every_algorithm_per_key(clock, cls, args):
    k = pr.KeyedLimiter(cls, *args, clock=clock)
    assert type(k.limiter) is cls
    for key in ("a", "b", "a-key-longer-than-eighteen-bytes"):
        assert k.allow(key) and k.allow(key) and not k.allow(key)
    assert len(k) == 3
    clock.advance(5)
    assert all(k.allow(key) for key in ("a", "b"))


def test_acquire_waits_on_manual_clock(clock):
    k = pr.KeyedLimiter(pr.TokenBucket, 2, 1, clock=clock)
    assert k.allow("x", 2)
    k.acquire("x")  # advances the clock by the wait
    assert clock.now() == 1.0
    k.acquire("x", 2, timeout=5)
    assert clock.now() == 3.0
    with pytest.raises(pr.RateLimitExceeded) as ei:
        k.acquire("x", 2, timeout=0.5)
    assert ei.value.retry_after == 2.0 and ei.value.decision.allowed is False
    with pytest.raises(ValueError, match="never"):
        k.acquire("x", 3)
    v = k.for_key("y")
    v.acquire(2)
    v.acquire(1)
    assert clock.now() == 4.0


def test_async_and_context_manager_and_decorator(clock):
    k = pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=clock)

    async def main():
        await k.acquire_async("a")
        await k.acquire_async("a")  # waits 1 s (the manual clock advances)
        v = k.for_key("b")
        async with v:
            pass
        await v.acquire_async(1, timeout=10)
        with pytest.raises(pr.RateLimitExceeded):
            await v.acquire_async(1, timeout=0.1)

    asyncio.run(main())
    assert clock.now() == 2.0
    v = k.for_key("c")
    calls = []

    @v
    def f(x):
        calls.append(x)
        return x

    with v:
        pass
    assert f(1) == 1 and f(2) == 2 and calls == [1, 2]
    assert clock.now() == 4.0


def test_full_table_denies_new_keys_and_keeps_limited_ones(clock):
    k = pr.KeyedLimiter(pr.TokenBucket, 2, 1, max_keys=3, clock=clock)
    assert k.allow("k0", 2) and k.allow("k1", 2)
    clock.advance(0.5)
    assert k.allow("k2", 1)  # fresh again at 1.5 s
    clock.advance(0.5)
    d = k.check("new")
    assert not d.allowed and d.retry_after == 0.5 and len(k) == 3
    assert not k.peek("new").allowed
    # the limited keys kept their state
    d = k.check("k0", 2)
    assert not d.allowed and d.retry_after == 1.0
    clock.advance(0.5)  # k2 is fresh: evicted for the new key
    assert k.allow("new") and len(k) == 3
    assert not k.check("k1", 2).allowed  # still limited, still held
    # refill 0: nothing ever frees
    z = pr.KeyedLimiter(pr.TokenBucket, 1, 0, max_keys=1, clock=clock)
    assert z.allow("a") and math.isinf(z.check("b").retry_after)


def test_memory_is_bounded_and_a_limited_victim_keeps_its_state(clock):
    k = pr.KeyedLimiter(pr.GCRA, rate=1, burst=3, max_keys=20_000, clock=clock)
    assert k.allow("victim", 3)  # tat = 3 s
    admitted = denied = 0
    for i in range(200_000):
        clock.set(i * 1e-5)  # 200k keys over 2 s
        if k.allow(f"client-{i}"):
            admitted += 1
        else:
            denied += 1
        if i % 20_000 == 0:
            assert len(k) <= 20_000
    assert len(k) <= 20_000 and denied > 0 and admitted > 20_000
    assert k.memory_bytes <= 20_000 * 64 + 16_384
    d = k.peek("victim")  # ~2 s in: a fresh key would have 2 left after this one
    assert d.allowed and d.remaining == 0 and "victim" in k


def test_threads_admit_exactly_capacity_per_key():
    clock = pr.ManualClock()  # frozen
    k = pr.KeyedLimiter(pr.TokenBucket, 1000, 0, clock=clock)
    keys = [f"key{i}" for i in range(16)]
    counts = [[0] * 16 for _ in range(8)]

    def work(t):
        c = counts[t]
        allow = k.allow
        for i in range(20_000):
            j = (i * 7 + t) % 16
            if allow(keys[j]):
                c[j] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    totals = [sum(c[j] for c in counts) for j in range(16)]
    assert totals == [1000] * 16


@pytest.mark.parametrize("bad", [1, None, 1.5, bytearray(b"x"), memoryview(b"x"), ("a",)])
def test_keys_must_be_str_or_bytes(clock, bad):
    k = pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=clock)
    for call in (k.allow, k.check, k.peek, k.acquire, k.available, k.for_key,
                 k.__contains__):
        with pytest.raises(TypeError, match="key must be str or bytes"):
            call(bad)
    with pytest.raises(TypeError, match="key must be str or bytes"):
        bad in k
    if bad is not None:
        with pytest.raises(TypeError):
            k.reset(bad)


def test_bad_configuration():
    with pytest.raises(TypeError, match="limiter_class"):
        pr.KeyedLimiter("TokenBucket", 1, 1)
    with pytest.raises(TypeError, match="limiter_class"):
        pr.KeyedLimiter(dict, 1, 1)
    with pytest.raises(TypeError, match="limiter_class"):
        pr.KeyedLimiter(pr.TokenBucket(1, 1))
    with pytest.raises(ValueError, match="capacity"):
        pr.KeyedLimiter(pr.TokenBucket, capacity=-1, refill_rate=1)
    with pytest.raises(TypeError):
        pr.KeyedLimiter(pr.TokenBucket, 1, 1, bogus=2)
    for bad in (0, -5, 2**31 + 1):
        with pytest.raises(ValueError, match="max_keys"):
            pr.KeyedLimiter(pr.TokenBucket, 1, 1, max_keys=bad)
    with pytest.raises(ValueError, match="max_keys"):
        pr.KeyedLimiter(pr.TokenBucket, 1, 1, max_keys=1.5)
    for bad in (True, "10", None):
        with pytest.raises(TypeError, match="max_keys"):
            pr.KeyedLimiter(pr.TokenBucket, 1, 1, max_keys=bad)
    with pytest.raises(TypeError, match="clock"):
        pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=5)
    k = pr.KeyedLimiter(pr.TokenBucket, 1, 1)
    for bad_n in (0, -1):
        with pytest.raises(ValueError, match="n"):
            k.allow("a", bad_n)
    with pytest.raises(ValueError, match="n"):
        k.allow("a", 1.5)
    with pytest.raises(TypeError):
        k.allow("a", True)
    with pytest.raises(TypeError, match="both"):
        k.allow("a", 1, tokens_needed=1)
    with pytest.raises(TypeError, match="key"):
        k.allow()
    with pytest.raises(ValueError, match="timeout"):
        k.acquire("a", timeout=-1)
    with pytest.raises(TypeError):
        pr.KeyedLimiterView(k, 1)
    with pytest.raises(TypeError, match="KeyedLimiter"):
        pr.KeyedLimiterView(pr.TokenBucket(1, 1), "a")


def test_collectable_with_a_clock_cycle():
    class Holder:
        pass

    h = Holder()
    k = pr.KeyedLimiter(pr.TokenBucket, 1, 1, clock=lambda: h.t)
    h.t = 0.0
    h.k = k
    h.v = k.for_key("a")
    assert k.allow("a")
    r = weakref.ref(k)
    del k, h
    gc.collect()
    assert r() is None


def test_signatures():
    for meth in ("allow", "check", "peek", "acquire", "reset", "available", "prune",
                 "for_key", "acquire_async"):
        inspect.signature(getattr(pr.KeyedLimiter, meth))
    for meth in ("allow", "check", "peek", "acquire", "reset", "acquire_async"):
        inspect.signature(getattr(pr.KeyedLimiterView, meth))
    assert "limiter_class" in str(inspect.signature(pr.KeyedLimiter))


def test_mypy_passes_on_example():
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_keyed.py"
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(example)],
                       capture_output=True, text=True, cwd=example.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_random_operations_against_a_model(clock):
    """Capacity 1, refill 0: a key that consumed is limited forever, so the
    table must behave exactly like a bounded set (max_keys < 512: one shard)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(st.lists(st.tuples(st.sampled_from(["allow", "reset", "in", "peek"]),
                                         st.integers(0, 90), st.booleans()),
                               max_size=300))
    def run(ops):
        k = pr.KeyedLimiter(pr.TokenBucket, 1, 0, max_keys=40, clock=clock)
        held = set()
        for op, i, long_key in ops:
            key = f"a-key-longer-than-eighteen-bytes-{i}" if long_key else f"k{i}"
            key = key.encode() if i % 2 else key
            if op == "allow":
                ok = k.allow(key)
                if key in held or len(held) >= 40:
                    assert not ok
                else:
                    assert ok
                    held.add(key)
            elif op == "reset":
                k.reset(key)
                held.discard(key)
            elif op == "in":
                assert (key in k) == (key in held)
            else:
                d = k.peek(key)
                assert d.allowed == (key not in held and len(held) < 40)
            assert len(k) == len(held)

    run()


def test_built_in_new_never_reinitialised():
    kl = pr.KeyedLimiter(pr.TokenBucket, capacity=2, refill_rate=1)
    assert kl.allow("a", 2)
    kl.__init__(pr.TokenBucket, capacity=5, refill_rate=5)  # does nothing: no re-initialisation
    assert kl.limiter.capacity == 2.0 and not kl.allow("a")
    raw = pr._core.KeyedLimiter.__new__(pr._core.KeyedLimiter, pr.GCRA(1, 1))
    assert raw.allow("k") and not raw.allow("k")
    with pytest.raises(TypeError):
        pr._core.KeyedLimiter.__new__(pr._core.KeyedLimiter)
    with pytest.raises(TypeError, match="KeyedLimiter"):
        pr._core.KeyedLimiterView.__new__(pr._core.KeyedLimiterView, object(), "k")
    view = pr._core.KeyedLimiterView.__new__(pr._core.KeyedLimiterView, raw, "v")
    assert view.allow() and not view.allow()
