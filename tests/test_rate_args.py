"""The rate methods' arguments (allow, check, peek, acquire, _waiter of every
limiter-like type) are declared: each method parses exactly the parameters
its text signature shows, with errors naming the method and the parameter,
and allow()'s hot path (no arguments, or only the key) agrees with it."""
from __future__ import annotations

import inspect

import pytest

import pyresilience as pr
from pyresilience import _core


def _owners(clock):
    k = pr.KeyedLimiter(pr.TokenBucket, capacity=5, refill_rate=1, clock=clock)
    tb = pr.TokenBucket(5, 1, clock=clock)
    return [(tb, ()), (k, ("a",)), (k.for_key("b"), ()),
            (pr.LimiterGroup(pr.TokenBucket(5, 1, clock=clock)), ())]


RATE = ("allow", "check", "peek", "acquire", "_waiter")


def test_each_signature_is_what_the_method_parses(clock):
    for owner, key in _owners(clock):
        for name in RATE:
            method = getattr(owner, name, None)
            if method is None:  # KeyedLimiter has no _waiter (its views do)
                continue
            params = list(inspect.signature(method).parameters)
            assert params[len(key):len(key) + 1] == ["n"], (owner, name, params)
            assert params[-1] == "tokens_needed"
            assert ("timeout" in params) == (name in ("acquire", "_waiter"))
            r = method(*key, tokens_needed=1)  # every keyword shown is accepted
            if name == "_waiter":
                assert r.step() is None
            with pytest.raises(TypeError, match=r"^%s\(\) got an unexpected keyword argument 'x'$"
                               % name):
                method(*key, x=1)
            with pytest.raises(TypeError, match=r"^%s\(\) takes at most %d positional"
                               % (name, len(params) - 1)):
                method(*key, *([1] * len(params)))


def test_errors_name_the_method_and_the_parameter(clock):
    tb = pr.TokenBucket(5, 1, clock=clock)
    k = pr.KeyedLimiter(pr.TokenBucket, capacity=5, refill_rate=1, clock=clock)
    with pytest.raises(TypeError, match=r"^check\(\) missing required argument 'key'$"):
        k.check()
    with pytest.raises(TypeError, match=r"^allow\(\) missing required argument 'key'$"):
        k.allow(n=1)
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        tb.allow(0)
    with pytest.raises(ValueError, match=r"^n must be a whole number, got 1.5$"):
        k.allow("a", 1.5)
    with pytest.raises(TypeError, match=r"^n must be an int, not NoneType: None$"):
        tb.check(None)
    with pytest.raises(ValueError, match=r"^timeout must be >= 0, got -1$"):
        tb.acquire(1, -1)
    with pytest.raises(TypeError, match=r"^peek\(\) got both n and tokens_needed"):
        k.peek("a", 1, tokens_needed=1)
    with pytest.raises(TypeError, match=r"^key must be str or bytes, not int: 1$"):
        k.allow(1)  # the hot path's own key check
    assert k.allow(key="a") and k.allow("a", tokens_needed=None)  # None: not given
    assert tb.allow(n=2**70) is False  # beyond int64 saturates: never admitted


def test_redis_rate_signatures_are_declared():
    """The Redis limiter's rate methods parse what their signature shows
    (the same declared tables; no tokens_needed there)."""
    cls = getattr(_core, "RedisRateLimiter", None)
    if cls is None:
        pytest.skip("built without hiredis")
    for name in ("allow", "check", "peek"):
        assert list(inspect.signature(getattr(cls, name)).parameters) == ["self", "key", "n"]
    assert list(inspect.signature(cls.acquire).parameters) == ["self", "key", "n", "timeout"]
