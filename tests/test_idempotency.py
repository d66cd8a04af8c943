"""Idempotency keys over the in-process store: once per key, replay,
waiting, mismatches, expiry, lease takeover and the late finisher."""
import asyncio
import json
import threading

import pytest

import pyresilience as pr
from pyresilience import idempotency as pi


def make(clock=None, **kw):
    store = pr.MemoryIdempotencyStore(max_keys=100, clock=clock)
    return store, pr.Idempotency(store, **kw)


def test_first_call_runs_later_calls_replay():
    _, idem = make()
    calls = []

    def charge(order, amount):
        calls.append((order, amount))
        return {"order": order, "charged": amount}

    r1 = idem.call("charge:1", charge, 1, amount=10)
    r2 = idem.call("charge:1", charge, 1, amount=10)
    assert r1 == r2 == {"order": 1, "charged": 10}
    assert r2 is r1  # the memory store keeps the object
    assert calls == [(1, 10)]
    idem.call("charge:2", charge, 2, amount=10)
    assert calls == [(1, 10), (2, 10)]


def test_payload_mismatch_raises():
    _, idem = make()
    idem.call("k", lambda x: x, 1)
    with pytest.raises(pr.IdempotencyKeyMismatch) as ei:
        idem.call("k", lambda x: x, 2)
    assert ei.value.key == "k"
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("k", lambda x: x, x=1)  # same value, another shape


def test_unhashable_arguments_fingerprint_by_repr():
    _, idem = make()
    assert idem.call("k", lambda d: len(d), {"a": [1]}) == 1
    assert idem.call("k", lambda d: 99, {"a": [1]}) == 1
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("k", lambda d: 0, {"a": [2]})


def test_custom_fingerprint():
    _, idem = make(fingerprint=lambda order, **_: order)
    assert idem.call("k", lambda order, note: note, 1, note="a") == "a"
    assert idem.call("k", lambda order, note: note, 1, note="b") == "a"  # note not in the print
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("k", lambda order, note: note, 2, note="a")


def test_exceptions_free_the_key_by_default():
    _, idem = make()
    n = []

    def flaky():
        n.append(1)
        if len(n) == 1:
            raise ConnectionError("down")
        return "ok"

    with pytest.raises(ConnectionError):
        idem.call("k", flaky)
    assert idem.call("k", flaky) == "ok"
    assert idem.call("k", flaky) == "ok"
    assert len(n) == 2


def test_store_exceptions_replays_the_exception():
    _, idem = make(store_exceptions=True)
    n = []

    def bad():
        n.append(1)
        raise ValueError("declined")

    for _ in range(3):
        with pytest.raises(ValueError, match="declined"):
            idem.call("k", bad)
    assert n == [1]


def test_expiry_with_manual_clock():
    clock = pr.ManualClock()
    store, idem = make(clock, ttl=10.0)
    n = []
    assert idem.call("k", lambda: n.append(1) or len(n)) == 1
    clock.advance(9.999)
    assert idem.call("k", lambda: n.append(1) or len(n)) == 1
    clock.advance(0.001)
    assert idem.call("k", lambda: n.append(1) or len(n)) == 2
    assert store.peek("k")[0] == pi.DONE


def test_in_progress_without_wait_raises():
    _, idem = make()
    inside, release = threading.Event(), threading.Event()
    out = []

    def slow():
        inside.set()
        release.wait(10)
        return "done"

    t = threading.Thread(target=lambda: out.append(idem.call("k", slow)))
    t.start()
    assert inside.wait(10)
    with pytest.raises(pr.IdempotencyInProgress) as ei:
        idem.call("k", slow)
    assert ei.value.key == "k"
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("k", slow, 1)
    release.set()
    t.join()
    assert out == ["done"] and idem.call("k", slow) == "done"


def test_n_threads_one_key_runs_once():
    _, idem = make(wait=30.0)
    n = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def work(x):
        with lock:
            n.append(x)
        return object()

    results = [None] * 16

    def caller(i):
        start.wait()
        results[i] = idem.call("one", work, 7)

    ts = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert n == [7]
    assert all(r is results[0] for r in results) and results[0] is not None


def test_n_tasks_one_key_runs_once():
    _, idem = make(wait=30.0)
    n = []

    async def work(x):
        n.append(x)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return object()

    async def main():
        return await asyncio.gather(*(idem.call_async("one", work, 3) for _ in range(50)))

    results = asyncio.run(main())
    assert n == [3]
    assert all(r is results[0] for r in results)


def test_async_in_progress_and_mismatch():
    _, idem = make()

    async def main():
        gate = asyncio.Event()

        async def slow(x):
            await gate.wait()
            return x

        first = asyncio.ensure_future(idem.call_async("k", slow, 1))
        await asyncio.sleep(0)
        with pytest.raises(pr.IdempotencyInProgress):
            await idem.call_async("k", slow, 1)
        with pytest.raises(pr.IdempotencyKeyMismatch):
            await idem.call_async("k", slow, 2)
        gate.set()
        assert await first == 1
        assert await idem.call_async("k", slow, 1) == 1

    asyncio.run(main())


def test_async_cancel_gives_the_key_back():
    store, idem = make()

    async def main():
        async def forever():
            await asyncio.sleep(3600)

        t = asyncio.ensure_future(idem.call_async("k", forever))
        await asyncio.sleep(0)
        assert store.peek("k")[0] == pi.BUSY
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert store.peek("k") is None

        async def quick():
            return 5
        assert await idem.call_async("k", quick) == 5

    asyncio.run(main())


def test_with_key_decorator_sync_and_async():
    _, idem = make()
    n = []

    @idem.with_key(lambda order_id, **_: f"charge:{order_id}")
    def charge(order_id, amount):
        n.append(order_id)
        return amount

    assert charge(1, amount=5) == 5 and charge(1, amount=5) == 5
    assert charge.__name__ == "charge" and n == [1]

    @idem.with_key(lambda order_id: f"a:{order_id}")
    async def acharge(order_id):
        n.append(("a", order_id))
        return order_id

    async def main():
        return [await acharge(2), await acharge(2)]

    assert asyncio.run(main()) == [2, 2]
    assert n == [1, ("a", 2)]


def test_takeover_after_lease_expiry_and_late_finisher_cannot_overwrite():
    clock = pr.ManualClock()
    store, idem = make(clock, in_progress_ttl=5.0)
    inside, release = threading.Event(), threading.Event()
    out = []

    def stuck():
        inside.set()
        release.wait(10)
        return "late"

    t = threading.Thread(target=lambda: out.append(idem.call("k", stuck)))
    t.start()
    assert inside.wait(10)
    with pytest.raises(pr.IdempotencyInProgress):
        idem.call("k", lambda: "new")
    clock.advance(5.0)  # the owner stopped renewing: its lease is over
    assert idem.call("k", lambda: "new") == "new"  # taken over
    release.set()
    t.join()
    assert out == ["late"]  # the late finisher gets its own result...
    assert idem.call("k", lambda: "again") == "new"  # ...but does not overwrite


def test_store_owner_tokens_directly():
    clock = pr.ManualClock()
    store = pr.MemoryIdempotencyStore(clock=clock)
    assert store.begin("k", "fp", "a", 1.0) == (pi.ACQUIRED, "fp", None)
    assert store.begin("k", "fp", "b", 1.0) == (pi.BUSY, "fp", None)
    assert store.renew("k", "a", 1.0) and not store.renew("k", "b", 1.0)
    clock.advance(0.5)
    assert store.renew("k", "a", 1.0)  # renewed: lives to 1.5
    clock.advance(0.9)
    assert store.begin("k", "fp", "b", 1.0)[0] == pi.BUSY
    clock.advance(0.1)
    assert store.begin("k", "fp", "b", 1.0)[0] == pi.ACQUIRED  # taken over
    assert not store.complete("k", "a", (pi.OK, 1), 10.0)
    assert not store.release("k", "a")
    assert store.complete("k", "b", (pi.OK, 2), 10.0)
    assert store.begin("k", "fp", "c", 1.0) == (pi.DONE, "fp", (pi.OK, 2))
    assert not store.renew("k", "b", 1.0)


def test_live_owner_renews_its_lease(monkeypatch):
    # the renewer thread renews every in_progress_ttl / 3 seconds of real time
    store, idem = make(in_progress_ttl=0.06)
    renewed = threading.Event()
    real = store.renew

    def spy(key, token, lease):
        ok = real(key, token, lease)
        renewed.set()
        return ok

    monkeypatch.setattr(store, "renew", spy)
    assert idem.call("k", lambda: renewed.wait(10)) is True


def test_bounded_store_evicts_results_never_leases():
    clock = pr.ManualClock()
    store = pr.MemoryIdempotencyStore(max_keys=2, clock=clock)
    idem = pr.Idempotency(store)
    idem.call("a", lambda: 1)
    idem.call("b", lambda: 2)
    idem.call("c", lambda: 3)  # evicts "a", the oldest stored result
    assert len(store) == 2 and store.peek("a") is None
    store.clear()
    assert store.begin("x", 0, "t1", 10.0)[0] == pi.ACQUIRED
    assert store.begin("y", 0, "t2", 10.0)[0] == pi.ACQUIRED
    with pytest.raises(pr.IdempotencyInProgress, match="max_keys=2"):
        store.begin("z", 0, "t3", 10.0)
    clock.advance(10.0)  # expired leases go first
    assert store.begin("z", 0, "t3", 10.0)[0] == pi.ACQUIRED


def test_serializer_round_trip():
    _, idem = make(serializer=json)
    first = idem.call("k", lambda: {"a": (1, 2)})
    assert first == {"a": (1, 2)}
    assert idem.call("k", lambda: None) == {"a": [1, 2]}  # what JSON gives back


@pytest.mark.parametrize("kw, msg", [
    (dict(ttl=-1), "ttl"), (dict(in_progress_ttl=0), "in_progress_ttl"),
    (dict(wait="x"), "wait"), (dict(fingerprint=3), "fingerprint"),
    (dict(serializer=object()), "serializer"),
])
def test_bad_arguments_name_the_parameter(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        pr.Idempotency(pr.MemoryIdempotencyStore(), **kw)


def test_bad_store_and_max_keys():
    with pytest.raises(TypeError, match="store"):
        pr.Idempotency(object())
    for bad in (0, 10.5, "3", True):
        with pytest.raises(ValueError, match="max_keys"):
            pr.MemoryIdempotencyStore(max_keys=bad)


def test_keyword_order_does_not_change_the_fingerprint():
    _, idem = make()
    assert idem.call("k", lambda a, b: a + b, a=1, b=2) == 3
    assert idem.call("k", lambda a, b: 0, b=2, a=1) == 3
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("k", lambda a, b: 0, b=1, a=2)


def test_a_store_failing_after_the_call_still_returns_its_result(caplog):
    store, idem = make()

    def broken(*a):
        raise OSError("store down")

    store.complete = broken
    assert idem.call("k", lambda: "ran") == "ran"
    assert "was not stored (OSError: store down)" in caplog.text

    async def main():
        async def f():
            return "ran async"
        return await idem.call_async("k2", f)

    assert asyncio.run(main()) == "ran async"
