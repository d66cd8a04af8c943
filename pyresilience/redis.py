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
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _core
from .errors import BackendError
from .events import Named

__all__ = ["HAVE_REDIS", "LeaseConfig", "RedisBackend", "RedisLimiterGroup", "RedisRateLimiter"]

HAVE_REDIS: bool = bool(getattr(_core, "HAVE_REDIS", 0))

Key = Union[str, bytes]

_INSTALL_HINT = (
    "pyresilience was built without Redis support: hiredis was not found at build time. "
    "Install it (Debian/Ubuntu: sudo apt-get install libhiredis-dev pkg-config; "
    "Fedora: sudo dnf install hiredis-devel; macOS: brew install hiredis) and rebuild: "
    "pip install --force-reinstall --no-binary pyresilience pyresilience "
    "(or `make install` in a checkout)."
)


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

    __slots__ = ("_batch", "_max_hold")

    def __init__(self, batch: int, max_hold: float) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError(f"batch must be an int, not {type(batch).__name__}: {batch!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if isinstance(max_hold, bool) or not isinstance(max_hold, (int, float)):
            raise TypeError(f"max_hold must be a real number, not {type(max_hold).__name__}: {max_hold!r}")
        if math.isnan(max_hold) or math.isinf(max_hold) or max_hold <= 0:
            raise ValueError(f"max_hold must be a finite number > 0, got {max_hold!r}")
        self._batch = batch
        self._max_hold = float(max_hold)

    @property
    def batch(self) -> int:
        """Permits taken per round trip."""
        return self._batch

    @property
    def max_hold(self) -> float:
        """Seconds a taken permit may be spent locally."""
        return self._max_hold

    def __repr__(self) -> str:
        return f"LeaseConfig(batch={self._batch!r}, max_hold={self._max_hold!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LeaseConfig):
            return NotImplemented
        return (self._batch, self._max_hold) == (other._batch, other._max_hold)

    def __hash__(self) -> int:
        return hash((self._batch, self._max_hold))


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


async def _wait_async(waiter: Any) -> None:
    """The binding's rate wait (a _RateWait) without blocking the event loop:
    each step runs in the default executor (it does network I/O), each wait is
    asyncio.sleep. Raises as the sync acquire() does."""
    loop = asyncio.get_running_loop()
    while True:
        delay = await loop.run_in_executor(None, waiter.step)
        if delay is None:
            return
        await asyncio.sleep(delay)


if TYPE_CHECKING or HAVE_REDIS:
    from ._core import RedisBackend as _BackendBase
    from ._core import RedisLimiterGroup as _GroupBase
    from ._core import RedisRateLimiter as _LimiterBase
else:  # pragma: no cover - exercised only by builds without hiredis
    class _Unavailable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _require_redis()

    _BackendBase = _LimiterBase = _GroupBase = _Unavailable


# The C types build their objects whole from the constructor's arguments
# (tp_new): these subclasses add Python conveniences and never re-parse.
class RedisBackend(_BackendBase):
    __doc__ = _BackendBase.__doc__ if HAVE_REDIS else (
        "RedisBackend(url='redis://127.0.0.1:6379/0', *, connect_timeout=0.25, timeout=0.25, "
        "max_connections=8)\n\nUnavailable in this build: " + _INSTALL_HINT)

    def __enter__(self) -> "RedisBackend":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RedisBackend(url={_redact_url(self.url)!r}, connect_timeout={self.connect_timeout!r}, "
                f"timeout={self.timeout!r}, max_connections={self.max_connections!r})")


class RedisRateLimiter(_LimiterBase, Named):
    __doc__ = _LimiterBase.__doc__ if HAVE_REDIS else "Unavailable in this build."

    async def acquire_async(self, key: Key, n: int = 1, timeout: Optional[float] = None) -> None:
        """acquire_async(self, key, n=1, timeout=None)

        Wait until n is admitted for key without blocking the event loop (each
        check runs in the default executor; waits are asyncio.sleep). Raises
        RateLimitExceeded at once when n cannot be admitted within ``timeout``
        seconds, ValueError when n exceeds the limit. Cancellation consumes
        nothing beyond a check already in flight."""
        await _wait_async(self._waiter(key, n, timeout))

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

    async def acquire_async(self, timeout: Optional[float] = None) -> None:
        """acquire_async(self, timeout=None)

        Wait until the whole group is admitted without blocking the event loop.
        RateLimitExceeded at once when that cannot happen within ``timeout``."""
        await _wait_async(self._waiter(timeout))

    def __repr__(self) -> str:
        return f"RedisLimiterGroup(members={self.members!r})"
