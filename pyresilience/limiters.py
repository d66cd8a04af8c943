"""In-process rate limiters.

Each class is a thin Python subclass of a C type from ``pyresilience._core``:
``allow``/``check``/``peek``/``acquire``/``reset`` run in C; this module adds
what is naturally Python - ``acquire_async``, ``with``/``async with`` and use
as a decorator - through :class:`LimiterMixin`.
"""
from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, List, Optional, Self, Tuple, TypeVar, Union, cast

from . import _core
from ._decorate import P, T, finish, inspect_target
from ._wait import check_timeout
from ._core import Decision, ManualClock
from .errors import RateLimitExceeded
from .events import Named, on_class_change

__all__ = ["LimiterMixin", "LimiterMetrics", "TokenBucket", "GCRA"]


@dataclass(frozen=True, slots=True)
class LimiterMetrics:
    """A snapshot of a rate limiter (``limiter.metrics``), one type for the six
    algorithms, keyed limiters, their per-key views and groups: its ``name``,
    ``limit`` (the most one check can admit, as in Decision.limit),
    ``available`` (requests of weight 1 admissible now; NaN for a KeyedLimiter,
    whose keys each have their own), ``admitted`` and ``rejected`` (consuming
    decisions since creation - each allow/check, each step of a waiting
    acquire - counted in the core, exact under threads; a per-key view
    reports its KeyedLimiter's, a group its own, not its members')."""

    name: str
    limit: int
    available: float
    admitted: int = 0
    rejected: int = 0


class LimiterMixin(Named):
    """The Python conveniences shared by every limiter: async acquire, context
    managers and decorators. The host class provides ``check(n)``, ``peek(n)``,
    ``acquire(n, timeout)`` and ``clock`` (all in C for the built-in limiters)."""

    __slots__ = ()

    # provided by the C base
    check: Callable[..., Decision]
    peek: Callable[..., Decision]
    acquire: Callable[..., None]
    clock: Any

    async def acquire_async(self, n: int = 1, timeout: Optional[float] = None, *,
                            tokens_needed: Optional[int] = None) -> None:
        """acquire_async(self, n=1, timeout=None, *, tokens_needed=None)

        Wait until n is admitted without blocking the event loop. Raises
        RateLimitExceeded at once when n cannot be admitted within ``timeout``
        seconds or never can be (a spent budget: retry_after ``math.inf``),
        ValueError when n exceeds the limit. Cancellation consumes nothing:
        n is taken only at the instant it is admitted. On a ManualClock the
        wait advances the clock (in integer nanoseconds) instead of sleeping."""
        waiter = getattr(self, "_waiter", None)
        if waiter is None:  # a host class of its own: the generic loop
            await self._acquire_async_generic(n, timeout, tokens_needed)
            return
        step = waiter(n, timeout, tokens_needed=tokens_needed).step  # decisions in C
        while True:
            s = step()
            if s is None:
                return
            await asyncio.sleep(s)

    async def _acquire_async_generic(self, n: int, timeout: Optional[float],
                                     tokens_needed: Optional[int]) -> None:
        if tokens_needed is not None:
            if n != 1:
                raise TypeError("acquire_async() got both n and tokens_needed")
            n = tokens_needed
        limit = check_timeout(timeout)
        clock = self.clock  # every clock is callable and returns float seconds
        manual = isinstance(clock, ManualClock)
        deadline = clock() + limit
        while True:
            d = self.check(n)
            if d.allowed:
                return
            if math.isinf(d.retry_after):
                if n > d.limit:
                    raise ValueError(f"n={n!r} can never be admitted by this limiter (limit {d.limit})")
                raise RateLimitExceeded("rate limit exceeded: never admissible",
                                        retry_after=math.inf, decision=d)
            now = clock()
            if now + d.retry_after > deadline:
                raise RateLimitExceeded(
                    "rate limit exceeded: not admissible within timeout",
                    retry_after=d.retry_after, decision=d)
            if manual:
                clock.advance_ns(max(1, round(d.retry_after * 1e9)))  # ns / 1e9 round-trips
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(d.retry_after)

    @property
    def metrics(self) -> LimiterMetrics:
        """A LimiterMetrics snapshot taken now (consumes nothing)."""
        d = self.peek(1)
        admitted, rejected = cast(Tuple[int, int], getattr(self, "_counts", (0, 0)))
        return LimiterMetrics(self.name, d.limit, cast(float, getattr(self, "available")),
                              admitted, rejected)

    def _config(self) -> List[Tuple[str, Any]]:
        """(name, value) of the constructor parameters, for repr(): for a
        limiter of the algorithm table, its C type's positional ones (not
        shared=, name=, clock=); none for another host class."""
        core = next((c for c in type(self).__mro__ if c.__module__ == _core.__name__), None)
        if core is None or not issubclass(core, _core._Limiter):
            return []
        params = inspect.signature(core).parameters.values()
        return [(p.name, getattr(self, p.name)) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]

    def __repr__(self) -> str:
        items = [f"{k}={v!r}" for k, v in self._config()]
        clock = self.clock
        if not isinstance(clock, _core.MonotonicClock):
            items.append(f"clock={clock!r}")
        return f"{type(self).__name__}({', '.join(items)})"

    def __enter__(self) -> Self:
        self.acquire(1)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.acquire_async(1)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def __call__(self, func: Callable[P, T]) -> Callable[P, T]:
        """Use the limiter as a decorator: each call acquires 1 first (sync
        functions block, coroutine functions await acquire_async). The
        signature is kept; a generator function is refused with TypeError."""
        if inspect_target(func, f"a {type(self).__name__}"):
            afunc = cast(Callable[..., Awaitable[Any]], func)

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await self.acquire_async(1)
                return await afunc(*args, **kwargs)
            return cast(Callable[P, T], finish(async_wrapper, func))

        acquire = self.acquire

        def repoint() -> None:  # this limiter's class changed: observed or not
            nonlocal acquire
            acquire = self.acquire

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            acquire()
            return func(*args, **kwargs)
        wrapper._prs_repoint = repoint  # type: ignore[attr-defined]
        on_class_change(self, repoint)
        return cast(Callable[P, T], finish(wrapper, func))


class TokenBucket(_core.TokenBucket, LimiterMixin):
    __doc__ = _core.TokenBucket.__doc__
    __slots__ = ()


class GCRA(_core.GCRA, LimiterMixin):
    __doc__ = _core.GCRA.__doc__
    __slots__ = ()


class LeakyBucket(_core.LeakyBucket, LimiterMixin):
    __doc__ = _core.LeakyBucket.__doc__
    __slots__ = ()


class FixedWindow(_core.FixedWindow, LimiterMixin):
    __doc__ = _core.FixedWindow.__doc__
    __slots__ = ()


class SlidingWindowLog(_core.SlidingWindowLog, LimiterMixin):
    __doc__ = _core.SlidingWindowLog.__doc__
    __slots__ = ()


class SlidingWindowCounter(_core.SlidingWindowCounter, LimiterMixin):
    __doc__ = _core.SlidingWindowCounter.__doc__
    __slots__ = ()


__all__ += ["LeakyBucket", "FixedWindow", "SlidingWindowLog", "SlidingWindowCounter"]
