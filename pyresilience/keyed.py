"""Per-key limiting and all-or-nothing limiter groups.

:class:`KeyedLimiter` keeps one limiter state per key (str or bytes) in a
bounded C hash table; :meth:`KeyedLimiter.for_key` gives one key the plain
limiter interface; :class:`LimiterGroup` checks several limiters as one.
Everything per call runs in C; this module adds the Python conveniences
(``acquire_async``, ``with``, decorators) through :class:`LimiterMixin`.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Self, Union

from . import _core
from .events import Named
from .limiters import LimiterMetrics, LimiterMixin

__all__ = ["KeyedLimiter", "KeyedLimiterView", "LimiterGroup"]

Key = Union[str, bytes]


class KeyedLimiterView(_core.KeyedLimiterView, LimiterMixin):
    __doc__ = _core.KeyedLimiterView.__doc__
    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limiter={self.limiter!r}, key={self.key!r})"


class KeyedLimiter(_core.KeyedLimiter, Named):
    """KeyedLimiter(limiter_class, *args, max_keys=100_000, clock=None, shared=None, name=None, **kwargs)

    One ``limiter_class(*args, **kwargs)`` per key, e.g.
    ``KeyedLimiter(TokenBucket, capacity=10, refill_rate=5)``: 10 requests at
    once and 5 per second for each client. Keys are str or bytes (a str is its
    UTF-8 bytes: ``"a"`` and ``b"a"`` are one key).

    Memory is bounded: at most ``max_keys`` keys are held (40-60 bytes
    each at 1M keys; keys longer than 18 bytes add their length + 8). A key
    whose state is fresh (full bucket, empty window) may be evicted at any
    time; a key that is being limited never is. When the room is taken by
    limited keys, a new key is denied with ``retry_after`` = when a slot
    frees.

    With ``shared=region, name="..."`` (a :class:`SharedMemory`) the table
    lives in the region: every process that opens the name decides on one
    state per key. ``max_keys`` is fixed (and reserved in the region) when it
    is first placed; room for a new key is looked for among the 16 keys of
    its bucket; such a table cannot be reconfigured nor be a group member."""

    __slots__ = ()

    def __new__(cls, limiter_class: Any, *args: Any, max_keys: int = 100_000,
                clock: Any = None, shared: Any = None, name: Any = None,
                **kwargs: Any) -> Self:
        # the C type builds its table in __new__ from the template limiter
        if not isinstance(limiter_class, type) or not issubclass(limiter_class, _core._Limiter):
            names = ", ".join(t.__name__ for t in _core._Limiter.__subclasses__()
                              if t.__module__ == _core.__name__)  # the algorithm table's
            raise TypeError(f"limiter_class must be an in-process limiter class ({names}), "
                            f"not {type(limiter_class).__name__}: {limiter_class!r}")
        template = limiter_class(*args, **kwargs)  # in-process: its params are copied
        return super().__new__(cls, template, max_keys=max_keys, clock=clock, shared=shared,
                               name=name)

    @property
    def metrics(self) -> LimiterMetrics:
        """A LimiterMetrics snapshot over every key (``available`` is NaN: each
        key has its own, ``for_key(k).available``)."""
        admitted, rejected = self._counts
        return LimiterMetrics(self.name, self.limiter.peek(1).limit, math.nan, admitted, rejected)

    def reconfigure(self, **params: Any) -> None:
        """reconfigure(self, **params)

        Change the parameters of every key at once, now, with the keywords of
        ``limiter_class.reconfigure`` (``capacity=``/``refill_rate=``,
        ``limit=``/``window=``, ``rate=``/``burst=``...); what is not given
        keeps its value. Each key keeps its state as that limiter's
        ``reconfigure`` keeps it (tokens capped at the new capacity, counts and
        admission times kept, never an admission the new limit forbids), and a
        concurrent decision on any key sees the old parameters or the new ones
        whole. Bad values raise the constructor's errors and change nothing.
        ``self.limiter`` (the template) is kept in step."""
        super().reconfigure(**params)
        template: Any = self.limiter  # the class the table was made from
        template.reconfigure(**params)

    def for_key(self, key: Key) -> KeyedLimiterView:
        """for_key(self, key)

        A view of one key with the plain limiter interface (allow, check,
        peek, acquire, acquire_async, reset, available, with, decorator); a
        valid LimiterGroup member."""
        return KeyedLimiterView(self, key)

    async def acquire_async(self, key: Key, n: int = 1, timeout: Optional[float] = None, *,
                            tokens_needed: Optional[int] = None) -> None:
        """acquire_async(self, key, n=1, timeout=None, *, tokens_needed=None)

        Wait until n is admitted for ``key`` without blocking the event loop
        (see LimiterMixin.acquire_async: cancellation consumes nothing)."""
        await KeyedLimiterView(self, key).acquire_async(n, timeout, tokens_needed=tokens_needed)

    def __repr__(self) -> str:
        template = self.limiter
        items = [f"limiter_class={type(template).__name__}"]
        config = getattr(template, "_config", None)
        if config is not None:
            items += [f"{k}={v!r}" for k, v in config()]
        items.append(f"max_keys={self.max_keys!r}")
        if not isinstance(self.clock, _core.MonotonicClock):
            items.append(f"clock={self.clock!r}")
        return f"{type(self).__name__}({', '.join(items)})"


class LimiterGroup(_core.LimiterGroup, LimiterMixin):
    __doc__ = _core.LimiterGroup.__doc__
    __slots__ = ()

    def __repr__(self) -> str:
        inner = ", ".join(repr(m) for m in self.limiters)
        return f"{type(self).__name__}({inner})"
