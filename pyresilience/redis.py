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
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _core
from ._core import Decision
from .errors import BackendError, RateLimitExceeded

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


class _LocalFallback:
    """The in-process limiters behind on_backend_error="local": one per key,
    each with ``share`` of the shared limit, at most ``max_keys`` of them (when
    full, the oldest half is dropped: a fallback is approximate by nature)."""

    def __init__(self, algorithm: str, limit: Optional[int], window: Optional[float],
                 rate: Optional[float], burst: Optional[int], share: float,
                 max_keys: int = 10_000) -> None:
        from . import limiters
        self._lock = threading.Lock()
        self._limiters: Dict[Any, Any] = {}
        self._max_keys = max_keys
        self._make: Callable[[], Any]
        if algorithm in ("gcra", "token_bucket"):
            if rate is None:
                assert limit is not None and window is not None
                rate, burst = limit / window, limit
            assert burst is not None
            r, b = rate * share, max(1, int(burst * share))
            if algorithm == "gcra":
                self._make = lambda: limiters.GCRA(r, b)
            else:
                self._make = lambda: limiters.TokenBucket(b, r)
        else:
            assert limit is not None and window is not None
            lim, win = max(1, int(limit * share)), float(window)
            cls_name = {"fixed_window": "FixedWindow", "sliding_window_counter": "SlidingWindowCounter",
                        "sliding_window_log": "SlidingWindowLog"}[algorithm]
            cls = getattr(limiters, cls_name, None)
            if cls is not None:
                self._make = lambda: cls(lim, win)
            else:  # an older build without the window classes: the same average rate
                self._make = lambda: limiters.GCRA(lim / win, lim)

    def _limiter(self, key: bytes) -> Any:
        lim = self._limiters.get(key)
        if lim is None:
            if len(self._limiters) >= self._max_keys:
                for k in list(self._limiters)[: self._max_keys // 2]:
                    del self._limiters[k]
            lim = self._limiters[key] = self._make()
        return lim

    def _decide(self, key: Key, n: int, consume: bool) -> Decision:
        """The decision for key; the caller holds ``_lock``."""
        if isinstance(key, str):
            key = key.encode()  # "a" and b"a" are one key in Redis: one here too
        lim = self._limiter(key)
        d: Decision = lim.check(n) if consume else lim.peek(n)
        return d

    def __call__(self, key: Key, n: int, consume: bool) -> Decision:
        # One lock per fallback, so a group deciding several of them at once
        # (_decide_local_members) sees no other caller consume in between.
        with self._lock:
            return self._decide(key, n, consume)


def _decide_local_members(requests: List[Tuple[Any, Key, int]]) -> Tuple[int, Any]:
    """The hook of RedisLimiterGroup for its on_backend_error="local" members
    when Redis fails: all or nothing over their in-process limiters. Holds the
    lock of every fallback involved (in one global order), checks that each
    (fallback, key) can take the sum of what the group asks of it, then takes
    from all. Returns (-1, [Decision per request]) when admitted, else
    (pos, Decision) for the first request that cannot be admitted, having
    taken nothing."""
    fallbacks = sorted({id(fb): fb for fb, _, _ in requests}.values(), key=id)
    for fb in fallbacks:
        fb._lock.acquire()
    try:
        demand: Dict[Tuple[int, bytes], int] = {}
        first: Dict[Tuple[int, bytes], int] = {}
        for pos, (fb, key, n) in enumerate(requests):
            k = (id(fb), key.encode() if isinstance(key, str) else bytes(key))
            demand[k] = demand.get(k, 0) + n
            first.setdefault(k, pos)
        for k, total in demand.items():
            fb, key, _ = requests[first[k]]
            d = fb._decide(key, total, False)
            if not d.allowed:
                return first[k], d
        return -1, [fb._decide(key, n, True) for fb, key, n in requests]
    finally:
        for fb in reversed(fallbacks):
            fb._lock.release()


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


class RedisBackend(_BackendBase):
    __doc__ = _BackendBase.__doc__ if HAVE_REDIS else (
        "RedisBackend(url='redis://127.0.0.1:6379/0', *, connect_timeout=0.25, timeout=0.25, "
        "max_connections=8)\n\nUnavailable in this build: " + _INSTALL_HINT)

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, connect_timeout: float = 0.25,
                 timeout: float = 0.25, max_connections: int = 8) -> None:
        _require_redis()
        super().__init__(url, connect_timeout=connect_timeout, timeout=timeout,
                         max_connections=max_connections)

    def __enter__(self) -> "RedisBackend":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RedisBackend(url={_redact_url(self.url)!r}, connect_timeout={self.connect_timeout!r}, "
                f"timeout={self.timeout!r}, max_connections={self.max_connections!r})")


class RedisRateLimiter(_LimiterBase):
    __doc__ = _LimiterBase.__doc__ if HAVE_REDIS else "Unavailable in this build."

    def __init__(self, backend: RedisBackend, algorithm: str = "gcra", *, limit: Optional[int] = None,
                 window: Optional[float] = None, rate: Optional[float] = None,
                 burst: Optional[int] = None, key_prefix: str = "prs:",
                 on_backend_error: str = "raise", local_share: Optional[float] = None,
                 lease: Optional[LeaseConfig] = None) -> None:
        _require_redis()
        if lease is not None and not isinstance(lease, LeaseConfig):
            raise TypeError(f"lease must be a LeaseConfig or None, not {type(lease).__name__}: {lease!r}")
        super().__init__(backend, algorithm, limit=limit, window=window, rate=rate, burst=burst,
                         key_prefix=key_prefix, on_backend_error=on_backend_error,
                         local_share=local_share, lease=lease)
        if on_backend_error == "local":
            share = 1.0 if local_share is None else float(local_share)
            self._set_fallback(_LocalFallback(algorithm, limit, window, rate, burst, share))

    async def acquire_async(self, key: Key, n: int = 1, timeout: Optional[float] = None) -> None:
        """acquire_async(self, key, n=1, timeout=None)

        Wait until n is admitted for key without blocking the event loop (each
        check runs in the default executor; waits are asyncio.sleep). Raises
        RateLimitExceeded at once when n cannot be admitted within ``timeout``
        seconds, ValueError when n exceeds the limit. Cancellation consumes
        nothing beyond a check already in flight."""
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a real number or None, not {type(timeout).__name__}")
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + timeout
        while True:
            d: Decision = await loop.run_in_executor(None, self.check, key, n)
            if d.allowed:
                return
            if math.isinf(d.retry_after):
                raise ValueError(f"n={n!r} can never be admitted by this limiter (limit {d.limit})")
            now = loop.time()
            if now + d.retry_after > deadline:
                raise RateLimitExceeded("rate limit exceeded: not admissible within timeout",
                                        retry_after=d.retry_after, decision=d)
            await asyncio.sleep(d.retry_after)

    def __repr__(self) -> str:
        if self.rate is not None or self.algorithm in ("gcra", "token_bucket") and self.limit is None:
            size = f"rate={self.rate!r}, burst={self.burst!r}"
        else:
            size = f"limit={self.limit!r}, window={self.window!r}"
        share = f", local_share={self.local_share!r}" if self.local_share is not None else ""
        lease = f", lease={self.lease!r}" if self.lease is not None else ""
        return (f"RedisRateLimiter(backend={self.backend!r}, algorithm={self.algorithm!r}, {size}, "
                f"key_prefix={self.key_prefix!r}, on_backend_error={self.on_backend_error!r}{share}{lease})")


class RedisLimiterGroup(_GroupBase):
    __doc__ = _GroupBase.__doc__ if HAVE_REDIS else "Unavailable in this build."

    def __init__(self, members: Iterable[Tuple[RedisRateLimiter, Key, int]]) -> None:
        _require_redis()
        super().__init__(list(members))
        self._set_local(_decide_local_members)

    async def acquire_async(self, timeout: Optional[float] = None) -> None:
        """acquire_async(self, timeout=None)

        Wait until the whole group is admitted without blocking the event loop.
        RateLimitExceeded at once when that cannot happen within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout is None else loop.time() + float(timeout)
        while True:
            d: Decision = await loop.run_in_executor(None, self.check)
            if d.allowed:
                return
            if math.isinf(d.retry_after):
                raise ValueError("this group can never admit its request (an n exceeds a limit)")
            if loop.time() + d.retry_after > deadline:
                raise RateLimitExceeded("rate limit exceeded: not admissible within timeout",
                                        retry_after=d.retry_after, decision=d)
            await asyncio.sleep(d.retry_after)

    def __repr__(self) -> str:
        return f"RedisLimiterGroup(members={self.members!r})"
