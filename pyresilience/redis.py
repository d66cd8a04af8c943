"""Distributed rate limiting over Redis.

:class:`RedisBackend` is a thread-safe pool of connections to one Redis server;
:class:`RedisRateLimiter` enforces one limit per key across every process that
uses the same server; :class:`RedisLimiterGroup` checks several limits all or
nothing. The work is done in C on hiredis (``pyresilience._core``): one Lua
script per algorithm run by EVALSHA, Redis's own clock, the GIL released during
network I/O.

When the extension was built without hiredis, creating a :class:`RedisBackend`
raises :class:`~pyresilience.errors.BackendError` explaining how to install it.
"""
from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional, Union

from . import _core
from . import _redis_async
from .errors import BackendError
from .events import Named

__all__ = ["HAVE_REDIS", "LeaseConfig", "RedisBackend", "RedisBackendMetrics", "RedisLimiterGroup",
           "RedisLimiterMetrics", "RedisRateLimiter"]

HAVE_REDIS: bool = bool(getattr(_core, "HAVE_REDIS", 0))

Key = Union[str, bytes]

_INSTALL_HINT = (
    "pyresilience was built without Redis support: hiredis was not found at build time. "
    "Install it (Debian/Ubuntu: sudo apt-get install libhiredis-dev pkg-config; "
    "Fedora: sudo dnf install hiredis-devel; macOS: brew install hiredis) and rebuild: "
    "pip install --force-reinstall --no-binary pyresilience pyresilience "
    "(or `make install` in a checkout)."
)


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """LeaseConfig(batch, max_hold)

    Local leases for a gcra/token_bucket :class:`RedisRateLimiter`: each round trip
    takes up to ``batch`` permits (an int >= 1, at most the burst), which this
    process then spends locally for up to ``max_hold`` seconds (> 0); leftovers
    are given back on the next round trip for the key or by ``close()``, else they
    lapse. Permits are consumed in Redis when taken, so leases never admit more
    than the shared limit; what processes hold unspent is under-admission, at
    most processes x batch per key, for at most max_hold. A decision served from
    a lease reports as ``remaining`` the permits this process still holds for
    the key; a denial from Redis is remembered locally until its retry_after."""

    batch: int  # permits taken per round trip
    max_hold: float  # seconds a taken permit may be spent locally

    def __post_init__(self) -> None:
        batch, max_hold = self.batch, self.max_hold
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError(f"batch must be an int, not {type(batch).__name__}: {batch!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if isinstance(max_hold, bool) or not isinstance(max_hold, (int, float)):
            raise TypeError(f"max_hold must be a real number, not {type(max_hold).__name__}: {max_hold!r}")
        if math.isnan(max_hold) or math.isinf(max_hold) or max_hold <= 0:
            raise ValueError(f"max_hold must be a finite number > 0, got {max_hold!r}")
        object.__setattr__(self, "max_hold", float(max_hold))


def _redact_url(url: str) -> str:
    """url with its password (user-info or ``password=`` query value) as ``***``."""
    m = re.match(r"^([a-z]+://)([^/?]*@)?(.*)$", url, flags=re.S)
    if m is None:
        return url
    scheme, auth, rest = m.group(1), m.group(2), m.group(3)
    if auth is not None:
        auth = auth[:-1]
        auth = (auth.split(":", 1)[0] + ":***" if ":" in auth else "***") + "@"
    rest = re.sub(r"([?&]password=)[^&]*", r"\1***", rest)
    return scheme + (auth or "") + rest


def _require_redis() -> None:
    if not HAVE_REDIS:
        raise BackendError(_INSTALL_HINT)


if TYPE_CHECKING or HAVE_REDIS:
    from ._core import RedisBackend as _BackendBase
    from ._core import RedisLimiterGroup as _GroupBase
    from ._core import RedisRateLimiter as _LimiterBase
else:  # pragma: no cover - exercised only by builds without hiredis
    class _Unavailable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _require_redis()

    _BackendBase = _LimiterBase = _GroupBase = _Unavailable


async def _fed_wait(waiter_cell: Any, check: Callable[[], Awaitable["_core.Decision"]]) -> None:
    """acquire_async's wait: the binding's rate wait (waiter.step(), deciding
    as acquire() does) fed with the Decision of each asyncio check."""
    waiter, cell = waiter_cell
    while True:
        cell.append(await check())
        delay = waiter.step()
        if delay is None:
            return
        await asyncio.sleep(delay)


# The C types build their objects whole from the constructor's arguments
# (tp_new): these subclasses add Python conveniences and never re-parse.
@dataclass(frozen=True, slots=True)
class RedisBackendMetrics:
    """A snapshot of a RedisBackend's counters (``backend.metrics``), kept in
    C: ``round_trips`` (calls made to Redis: one pipelined exchange each, a
    cluster call one however many nodes it asks, a refusal of the backend's
    open circuit included) and ``errors`` (those that failed)."""

    name: str
    round_trips: int
    errors: int


@dataclass(frozen=True, slots=True)
class RedisLimiterMetrics:
    """A snapshot of a RedisRateLimiter's counters (``limiter.metrics``), kept
    in C: ``fallbacks``, the decisions its ``on_backend_error`` policy
    (``policy``: 'allow', 'deny', 'local'; never counted for 'raise') made
    because Redis failed."""

    name: str
    policy: str
    fallbacks: int


class RedisBackend(_BackendBase, Named):
    __doc__ = _BackendBase.__doc__ if HAVE_REDIS else (
        "RedisBackend(url='redis://127.0.0.1:6379/0', *, connect_timeout=0.25, timeout=0.25, "
        "max_connections=8)\n\nUnavailable in this build: " + _INSTALL_HINT)

    def __enter__(self) -> "RedisBackend":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """close(self)

        Close every connection (the asyncio ones too); later calls raise
        BackendError. Idempotent."""
        super().close()
        _redis_async.close_all(self)

    async def ping_async(self) -> bool:
        """ping_async(self)

        PING the server on this event loop's connection: True, or
        BackendError when it cannot be reached within the timeout."""
        try:
            return await _redis_async.ping(self)
        except _redis_async._TransportFailure as e:
            raise BackendError(str(e)) from None

    @property
    def metrics(self) -> RedisBackendMetrics:
        """A RedisBackendMetrics snapshot (round trips and errors)."""
        round_trips, errors = self._counts
        return RedisBackendMetrics(self.name, round_trips, errors)

    def __repr__(self) -> str:
        return (f"RedisBackend(url={_redact_url(self.url)!r}, connect_timeout={self.connect_timeout!r}, "
                f"timeout={self.timeout!r}, max_connections={self.max_connections!r})")


class RedisRateLimiter(_LimiterBase, Named):
    __doc__ = _LimiterBase.__doc__ if HAVE_REDIS else "Unavailable in this build."

    @property
    def metrics(self) -> RedisLimiterMetrics:
        """A RedisLimiterMetrics snapshot (the fallbacks its policy took)."""
        return RedisLimiterMetrics(self.name, self.on_backend_error, self._fallbacks)

    # The asyncio forms: the same requests and decisions as the blocking
    # calls (built and decided in C), sent on this event loop's connection.
    async def check_async(self, key: Key, n: int = 1) -> "_core.Decision":
        """check_async(self, key, n=1)

        check() without blocking the event loop: the script runs on this
        loop's pipelined connection (no thread). A local lease serves it
        without I/O. The backend's timeout and on_backend_error apply as in
        check(). Cancelled after sending, the check may still count in Redis."""
        return await _redis_async.call(self.backend, self._op("check", key, n))  # type: ignore[no-any-return]

    async def allow_async(self, key: Key, n: int = 1) -> bool:
        """allow_async(self, key, n=1)

        allow() without blocking the event loop (see check_async)."""
        d = await _redis_async.call(self.backend, self._op("check", key, n))
        return bool(d.allowed)

    async def peek_async(self, key: Key, n: int = 1) -> "_core.Decision":
        """peek_async(self, key, n=1)

        peek() without blocking the event loop: consumes nothing."""
        return await _redis_async.call(self.backend, self._op("peek", key, n))  # type: ignore[no-any-return]

    async def reset_async(self, key: Key) -> None:
        """reset_async(self, key)

        reset() without blocking the event loop."""
        await _redis_async.call(self.backend, self._op("reset", key))

    async def check_many_async(self, requests: Any) -> "List[_core.Decision]":
        """check_many_async(self, requests)

        check_many() without blocking the event loop: one pipelined write."""
        return await _redis_async.call(self.backend, self._op_many(requests))  # type: ignore[no-any-return]

    async def close_async(self) -> None:
        """close_async(self)

        close() without blocking the event loop: every unspent lease permit
        is given back in one pipelined write (none held: no I/O)."""
        await _redis_async.call(self.backend, self._op_release())

    async def _check_at_async(self, key: Key, n: int, now: float) -> "_core.Decision":
        """Tests only: check_async at `now` seconds instead of Redis's TIME."""
        return await _redis_async.call(self.backend, self._op("check", key, n, now))  # type: ignore[no-any-return]

    async def acquire_async(self, key: Key, n: int = 1, timeout: Optional[float] = None) -> None:
        """acquire_async(self, key, n=1, timeout=None)

        Wait until n is admitted for key without blocking the event loop:
        each check is check_async (no thread), each wait asyncio.sleep, each
        step decided as acquire() decides. Raises RateLimitExceeded at once
        when n cannot be admitted within ``timeout`` seconds, ValueError when
        n exceeds the limit. Cancellation consumes nothing beyond a check
        already in flight."""
        await _fed_wait(self._async_waiter(key, n, timeout), lambda: self.check_async(key, n))

    def __repr__(self) -> str:
        if self.rate is not None or self.algorithm in ("gcra", "token_bucket") and self.limit is None:
            size = f"rate={self.rate!r}, burst={self.burst!r}"
        else:
            size = f"limit={self.limit!r}, window={self.window!r}"
        share = f", local_share={self.local_share!r}" if self.local_share is not None else ""
        lease = f", lease={self.lease!r}" if self.lease is not None else ""
        return (f"RedisRateLimiter(backend={self.backend!r}, algorithm={self.algorithm!r}, {size}, "
                f"key_prefix={self.key_prefix!r}, on_backend_error={self.on_backend_error!r}{share}{lease})")


class RedisLimiterGroup(_GroupBase, Named):
    __doc__ = _GroupBase.__doc__ if HAVE_REDIS else "Unavailable in this build."

    async def check_async(self) -> "_core.Decision":
        """check_async(self)

        check() without blocking the event loop: the group's one script on
        this loop's connection; the members' failure policies apply as in
        check()."""
        return await _redis_async.call(self.members[0][0].backend, self._op())  # type: ignore[no-any-return]

    async def allow_async(self) -> bool:
        """allow_async(self)

        check_async() as a bool."""
        return bool((await self.check_async()).allowed)

    async def _check_at_async(self, now: float) -> "_core.Decision":
        """Tests only: check_async at `now` seconds instead of Redis's TIME."""
        return await _redis_async.call(self.members[0][0].backend, self._op(now))  # type: ignore[no-any-return]

    async def acquire_async(self, timeout: Optional[float] = None) -> None:
        """acquire_async(self, timeout=None)

        Wait until the whole group is admitted without blocking the event loop
        (check_async, asyncio.sleep; no thread). RateLimitExceeded at once when
        that cannot happen within ``timeout``."""
        await _fed_wait(self._async_waiter(timeout), self.check_async)

    def __repr__(self) -> str:
        return f"RedisLimiterGroup(members={self.members!r})"
