"""Generator functions under decorators: refused at decoration time.

Calling a generator function runs none of its body, so a breaker, bulkhead,
limiter or retry wrapped around it would decide its outcome (and take and give
back its permit) before the first ``next()``. Every decorator refuses generator
and async generator functions with a TypeError that says why and what to do,
from one shared place (pyresilience._decorate), and takes nothing while doing so."""
from __future__ import annotations

import asyncio
import functools

import pytest

import pyresilience as pr


def _decorators():
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, capacity=1, refill_rate=0, clock=clock)
    return {
        "CircuitBreaker": pr.CircuitBreaker(failure_threshold=1, clock=clock),
        "Bulkhead": pr.Bulkhead("g", 1),
        "TokenBucket": pr.TokenBucket(capacity=1, refill_rate=0, clock=clock),
        "GCRA": pr.GCRA(rate=1, burst=1, clock=clock),
        "LeakyBucket": pr.LeakyBucket(capacity=1, leak_rate=1, clock=clock),
        "FixedWindow": pr.FixedWindow(limit=1, window=1, clock=clock),
        "SlidingWindowLog": pr.SlidingWindowLog(limit=1, window=1, clock=clock),
        "SlidingWindowCounter": pr.SlidingWindowCounter(limit=1, window=1, clock=clock),
        "KeyedLimiterView": keyed.for_key("k"),
        "LimiterGroup": pr.LimiterGroup(pr.TokenBucket(capacity=1, refill_rate=0, clock=clock)),
        "Retry": pr.Retry(max_attempts=3, clock=clock),
        "retry_with_backoff": pr.retry_with_backoff(pr.RetryConfig(max_attempts=3, clock=clock)),
    }


DECORATORS = list(_decorators())


def gen(n: int):
    """A generator function."""
    yield from range(n)


async def agen(n: int):
    """An async generator function."""
    for i in range(n):
        yield i


class Source:
    def items(self):
        yield 1

    async def aitems(self):
        yield 1


class GenCallable:
    def __call__(self):
        yield 1


def _untouched(name, deco):
    """The decorator took nothing and recorded nothing."""
    if name == "CircuitBreaker":
        assert deco.metrics.calls == 0
    elif name == "Bulkhead":
        assert deco.available == 1 and deco.metrics.acquired_count == 0
    elif isinstance(deco, pr.Retry):
        assert True  # no state
    else:
        assert deco.peek().allowed  # the single unit is still there


@pytest.mark.parametrize("name", DECORATORS)
@pytest.mark.parametrize("target,kind", [
    (gen, "a generator function"),
    (agen, "an async generator function"),
    (Source.items, "a generator function"),
    (Source().items, "a generator function"),
    (Source().aitems, "an async generator function"),
    (functools.partial(gen, 3), "a generator function"),
    (functools.partial(agen, 3), "an async generator function"),
    (GenCallable(), "a generator function"),
], ids=["gen", "agen", "method", "bound", "async-bound", "partial", "async-partial", "object"])
def test_decorating_a_generator_function_is_refused(name, target, kind):
    deco = _decorators()[name]
    with pytest.raises(TypeError) as info:
        deco(target)
    msg = str(info.value)
    assert f"cannot decorate {kind}" in msg
    assert "only creates the generator" in msg                      # why
    assert "consumes the generator" in msg                          # what to do instead
    assert ("`async with`" if "async" in kind else "`with`") in msg
    _untouched(name, deco)


@pytest.mark.parametrize("name", DECORATORS)
def test_decorating_as_syntax_is_refused_at_definition(name):
    deco = _decorators()[name]
    with pytest.raises(TypeError, match="generator function"):
        @deco
        def numbers():
            yield 1


@pytest.mark.parametrize("name", ["CircuitBreaker", "Bulkhead", "TokenBucket"])
def test_the_recommended_alternatives_work(name):
    """A function that consumes the generator is decorated; a `with` block
    guards the iteration itself, so a failure while iterating is recorded."""
    deco = _decorators()[name]

    @deco
    def collect(n):
        return list(gen(n))

    assert collect(3) == [0, 1, 2]
    if name == "CircuitBreaker":
        with pytest.raises(ZeroDivisionError):
            with deco:
                for i in gen(3):
                    1 / (i - 1)
        assert deco.state == pr.CircuitState.OPEN  # the failure while iterating counted


def test_async_block_guards_async_iteration():
    br = pr.CircuitBreaker(failure_threshold=1, clock=pr.ManualClock())

    async def main():
        async with br:
            return [i async for i in agen(3)]

    assert asyncio.run(main()) == [0, 1, 2]
    assert br.metrics.calls == 1 and br.state == pr.CircuitState.CLOSED


def test_a_plain_function_returning_an_iterator_is_accepted():
    """Only generator functions are known to defer their body; a function that
    returns an iterator it built is a plain function (its result is recorded)."""
    br = pr.CircuitBreaker(clock=pr.ManualClock())

    @br
    def numbers(n):
        return iter(range(n))

    assert list(numbers(2)) == [0, 1]
    assert br.metrics.calls == 1
