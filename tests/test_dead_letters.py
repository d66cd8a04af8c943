"""Dead letters: Retry(dead_letter=) and Policy(dead_letter=) hand a DeadLetter
to the sink when a call gives up (never on success), sync and async; the
RedisDeadLetters stream against a real redis-server, and its replay."""
from __future__ import annotations

import asyncio
import json

import pytest

import pyresilience as pr
from pyresilience.dead_letters import DeadLetter, RedisDeadLetters

from test_redis import backend, prefix, server  # noqa: F401  (fixtures)


def charge(order, amount=1):
    raise ConnectionError(f"down {order}")


async def acharge(order, amount=1):
    raise ConnectionError(f"down {order}")


def retry(sink=None, **kw):
    return pr.Retry(max_attempts=3, base_delay=1.0, jitter=False, clock=pr.ManualClock(50.0),
                    dead_letter=sink, **kw)


def expected(exc, function, args, kwargs, attempts=3, start=50.0, end=53.0, reason="attempts"):
    return DeadLetter(function, args, kwargs, exc, None, attempts, start, end, reason)


def test_exhausted_retries_give_exact_record_sync():
    got = []
    r = retry(got.append)
    with pytest.raises(ConnectionError) as ei:
        r.call(charge, 7, amount=5)
    assert got == [expected(ei.value, f"{__name__}.charge", (7,), {"amount": 5})]
    assert got[0].exception is ei.value


def test_decorated_sync_and_async_records():
    got = []
    r = retry(got.append)
    with pytest.raises(ConnectionError):
        r(charge)(1)
    with pytest.raises(ConnectionError) as ei:
        asyncio.run(r(acharge)(2, amount=3))
    assert [g.function for g in got] == [f"{__name__}.charge", f"{__name__}.acharge"]
    assert got[1] == expected(ei.value, f"{__name__}.acharge", (2,), {"amount": 3},
                              start=53.0, end=56.0)


def test_success_and_non_retryable_never_reach_the_sink():
    got = []
    r = retry(got.append, retryable_exceptions=ConnectionError)
    n = []

    def flaky():
        n.append(1)
        if len(n) < 2:
            raise ConnectionError("once")
        return "ok"

    assert r.call(flaky) == "ok"
    with pytest.raises(KeyError):
        r.call(lambda: {}["x"])
    assert got == []


def test_rejected_result_and_deadline_and_budget_reasons():
    got = []
    r = pr.Retry(max_attempts=2, base_delay=1.0, jitter=False, clock=pr.ManualClock(),
                 retry_on_result=lambda x: x is None, dead_letter=got.append)
    with pytest.raises(pr.RetryExhausted):
        r.call(lambda: None)
    assert got[-1].exception is None and got[-1].reason == "attempts" and got[-1].attempts == 2
    r = pr.Retry(max_attempts=10, base_delay=1.0, jitter=False, clock=pr.ManualClock(),
                 deadline=2.5, dead_letter=got.append)
    with pytest.raises(ConnectionError):
        r.call(charge, 1)
    assert got[-1].reason == "deadline" and got[-1].attempts == 2
    budget = pr.RetryBudget(ratio=0.0, min_retries_per_second=0, clock=pr.ManualClock())
    r = pr.Retry(max_attempts=10, base_delay=1.0, jitter=False, clock=pr.ManualClock(),
                 budget=budget, dead_letter=got.append)
    with pytest.raises(ConnectionError):
        r.call(charge, 1)
    assert got[-1].reason == "budget" and got[-1].attempts == 1


def test_queue_sinks_and_a_failing_sink_becomes_a_note():
    q = pr.BoundedQueue(1)
    r = retry(q)
    with pytest.raises(ConnectionError):
        r.call(charge, 1)
    assert q.get_nowait().args == (1,)

    def broken(letter):
        raise OSError("disk full")

    with pytest.raises(ConnectionError) as ei:
        retry(broken).call(charge, 2)
    assert any("dead letter was lost: OSError: disk full" in n for n in ei.value.__notes__)
    with pytest.raises(TypeError, match="dead_letter"):
        pr.Retry(dead_letter=3)


def test_policy_dead_letter_sync_async_and_decorator():
    got = []
    r = pr.Retry(max_attempts=2, base_delay=1.0, jitter=False, clock=pr.ManualClock())
    p = pr.Policy(r, dead_letter=got.append)
    with pytest.raises(ConnectionError):
        p.call(charge, 1, amount=2)
    with pytest.raises(ConnectionError):
        p(charge)(3)
    with pytest.raises(ConnectionError):
        asyncio.run(p.call_async(acharge, 4))
    with pytest.raises(ConnectionError):
        asyncio.run(p(acharge)(5, amount=6))
    assert [(g.function.rsplit(".", 1)[1], g.args, g.kwargs, g.attempts) for g in got] == [
        ("charge", (1,), {"amount": 2}, 2), ("charge", (3,), {}, 2),
        ("acharge", (4,), {}, 2), ("acharge", (5,), {"amount": 6}, 2)]
    assert r.metrics.gave_up == {"attempts": 4}  # the Retry's own counters
    assert p.call(lambda: 1) == 1 and len(got) == 4
    own = []
    p2 = pr.Policy(pr.Retry(max_attempts=1, dead_letter=own.append), dead_letter=got.append)
    with pytest.raises(ConnectionError):
        p2.call(charge, 9)
    assert len(own) == 1 and len(got) == 4  # a Retry's own sink wins


def test_redis_dead_letters_and_replay(backend):  # noqa: F811
    stream = prefix() + "dlq"
    dlq = RedisDeadLetters(backend, stream, maxlen=100)
    r = retry(dlq)
    for order in (1, 2, 3):
        with pytest.raises(ConnectionError):
            r.call(charge, order, amount=order * 10)
    assert len(dlq) == 3
    letters = dlq.letters()
    assert [(x.function, x.args, x.kwargs, x.attempts, x.reason) for x in letters] == [
        (f"{__name__}.charge", (o,), {"amount": o * 10}, 3, "attempts") for o in (1, 2, 3)]
    assert repr(letters[0].exception) == "ConnectionError('down 1')"
    raw = backend._command("XRANGE", stream, "-", "+")[0][1]
    assert json.loads(raw[1])["exception"] == {"type": "ConnectionError", "message": "down 1"}
    done = []

    def fixed(order, amount):
        if order == 2:
            raise ConnectionError("still down")
        done.append((order, amount))

    assert dlq.replay(fixed, policy=pr.Retry(max_attempts=1)) == (2, 1)
    assert done == [(1, 10), (3, 30)]
    assert [x.args for x in dlq.letters()] == [(2,)]


def test_redis_dead_letters_async_and_maxlen(backend):  # noqa: F811
    stream = prefix() + "dlq"
    dlq = RedisDeadLetters(backend, stream, maxlen=1)
    r = retry(dlq)

    async def main():
        for order in range(300):
            with pytest.raises(ConnectionError):
                await r.call_async(acharge, order)

    asyncio.run(main())
    assert 1 <= len(dlq) < 300  # approximate MAXLEN trims
    with pytest.raises(ValueError, match="maxlen"):
        RedisDeadLetters(backend, stream, maxlen=1.5)


def test_nested_policy_keeps_its_dead_letter():
    inner_got, outer_got = [], []
    r = pr.Retry(max_attempts=2, base_delay=1.0, jitter=False, clock=pr.ManualClock())
    inner = pr.Policy(r, dead_letter=inner_got.append)
    for outer in (pr.Policy(inner), pr.Policy(inner, dead_letter=outer_got.append)):
        with pytest.raises(ConnectionError):
            outer.call(charge, 1, amount=2)
        with pytest.raises(ConnectionError):
            outer(charge)(3)
        with pytest.raises(ConnectionError):
            asyncio.run(outer.call_async(acharge, 4))
    assert [(g.function.rsplit(".", 1)[1], g.args, g.kwargs) for g in inner_got] == [
        ("charge", (1,), {"amount": 2}), ("charge", (3,), {}), ("acharge", (4,), {})] * 2
    assert outer_got == []  # the inner Policy's sink wins, as a Retry's own does
    assert r.metrics.gave_up == {"attempts": 6}
    # an outer sink still reaches the outer Policy's own Retry steps
    p = pr.Policy(inner, pr.Retry(max_attempts=1), dead_letter=outer_got.append)
    with pytest.raises(ConnectionError):
        p.call(charge, 7)
    assert len(outer_got) == 2 and len(inner_got) == 7  # the inner Retry(1) per attempt
