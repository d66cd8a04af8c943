"""A circuit breaker whose state is shared through Redis.

``CircuitBreaker(..., backend=redis_backend, name="payments")`` returns a
:class:`RedisCircuitBreaker`: every breaker of that name on that Redis server
(threads, processes, hosts) sees one state. How it keeps the closed path cheap
and the shared state exact where it matters:

- **Closed**: calls run through the in-process C breaker (this object's own
  base), with no round trip. Its outcomes are flushed to Redis in batches
  every ``flush_interval`` seconds (0.5 by default) by a background thread;
  the shared consecutive-failure count adds the processes' failures up and a
  success anywhere resets it. A process whose own breaker reaches
  ``failure_threshold`` opens the shared circuit at once (one round trip).
  Bound: a failure reaches Redis within ``flush_interval`` and every other
  process reads the resulting open within another, so an open is seen
  everywhere at most 2 x ``flush_interval`` (1 s with the default) plus the
  round trips after the failure that caused it; a trip seen by one process
  alone is pushed at once.
- **Open**: cached locally until its ``retry_after`` (Redis's clock): calls are
  rejected with no round trip.
- **Half-open**: each trial slot is taken in Redis (one script, atomic), so at
  most ``half_open_max_calls`` trials run across every process; each trial's
  outcome is one round trip; a failure re-opens, ``success_threshold``
  successes close. A slot held longer than ``timeout_seconds`` (its process
  died) is presumed lost and freed.
- **Redis unreachable**: the breaker falls back to its in-process state
  machine (the same parameters) and ``metrics.fallback`` is True while it
  does; the background flush keeps trying and the shared state takes over
  again once Redis answers.

Every transition is one run of one Lua script (csrc/redis/breaker_script.c),
on Redis's own clock. Breakers sharing a name must share failure_threshold,
success_threshold, timeout_seconds and half_open_max_calls: a breaker created
with different ones is refused with a ValueError naming the difference. Only
the consecutive-failure mode is shared (``failure_rate_threshold`` with
``backend=`` is refused). The low-level ``allow_request()`` /
``record_*()`` and the C-level ``_wrap`` act on the in-process breaker only.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import threading
import time
import weakref
from typing import Any, Awaitable, Callable, List, NamedTuple, Optional, Tuple, TypeVar, cast

from . import _core
from .breaker import CircuitBreaker, CircuitState
from .errors import BackendError, CircuitOpenError
from ._decorate import same_body
from .events import breaker_call, switch_class

__all__ = ["RedisCircuitBreaker", "RedisCircuitBreakerMetrics"]

T = TypeVar("T")

_CB = _core.CircuitBreaker
_SHARED = object()  # first item of the token of a shared half-open trial
_SHARED_PARAMS = ("failure_threshold", "success_threshold", "timeout_seconds", "half_open_max_calls")


class RedisCircuitBreakerMetrics(NamedTuple):
    """The in-process breaker's counters, the shared state, and ``fallback``
    (True while Redis is unreachable and the in-process breaker decides)."""

    state: CircuitState
    consecutive_failures: int
    consecutive_successes: int
    calls: int
    failures: int
    slow_calls: int
    rejected: int
    ignored: int
    failure_rate: float
    slow_call_rate: float
    retry_after: float
    window_calls: int
    window_failures: int
    window_slow_calls: int
    half_open_in_flight: int
    mode: str
    fallback: bool


_live: "weakref.WeakSet[RedisCircuitBreaker]" = weakref.WeakSet()


class RedisCircuitBreaker(CircuitBreaker):
    """RedisCircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0, fallback=None, *, backend, name, flush_interval=0.5, key_prefix='prs:', ...)

    A :class:`~pyresilience.CircuitBreaker` whose state is shared by every
    breaker of the same ``name`` on the ``backend``'s Redis server (see the
    module documentation). Made by ``CircuitBreaker(..., backend=...)``."""

    _backend: Any
    _flush_interval: float
    _key: bytes
    _script: bytes
    _sha: str
    _args: List[bytes]
    _lock: threading.Lock
    _local: bool
    _fallback: bool
    _shared_state: CircuitState
    _open_until: float
    _syncing: bool
    _base: Tuple[int, int, int]
    _next_flush: float

    def __new__(cls, *args: Any, backend: Any = None, flush_interval: float = 0.5, key_prefix: str = "prs:",
                **kwargs: Any) -> "RedisCircuitBreaker":
        from .redis import RedisBackend
        if not isinstance(backend, _core.RedisBackend if hasattr(_core, "RedisBackend") else RedisBackend):
            raise TypeError(f"backend must be a RedisBackend, not {type(backend).__name__}: {backend!r}")
        name = kwargs.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a shared breaker (backend=) needs a name, a non-empty str; got {name!r}")
        if kwargs.get("failure_rate_threshold") is not None:
            raise ValueError("backend= shares the consecutive-failure mode; failure_rate_threshold="
                             f"{kwargs['failure_rate_threshold']!r} is not shared (leave it None)")
        if isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float)) or \
                math.isnan(flush_interval) or not 0 < flush_interval <= 60:
            raise ValueError(f"flush_interval must be a number of seconds in (0, 60], got {flush_interval!r}")
        if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be a str without braces, got {key_prefix!r}")
        self = cast("RedisCircuitBreaker", super().__new__(cls, *args, **kwargs))
        self._backend = backend
        self._flush_interval = float(flush_interval)
        self._key = f"{key_prefix}cb:{{{name}}}".encode()
        script = backend._breaker_script()
        self._script = script
        self._sha = hashlib.sha1(script).hexdigest()
        self._args = [str(self.failure_threshold).encode(), str(self.success_threshold).encode(),
                      str(max(1, round(self.timeout_seconds * 1e6))).encode(),
                      str(self.half_open_max_calls).encode()]
        self._lock = threading.Lock()
        self._local = True          # the in-process breaker decides (shared closed, or fallback)
        self._fallback = False
        self._shared_state = CircuitState.CLOSED
        self._open_until = 0.0      # monotonic: shared open cached until then
        self._syncing = False       # our own forcing of the local breaker: not a local trip
        self._base = (0, 0, 0)      # calls, failures, ignored at the last flush
        self._check_params()
        self.add_listener(RedisCircuitBreaker._on_local_change)
        self.flush()  # adopt the shared state now (a round trip; fallback if Redis is down)
        self._next_flush = time.monotonic() + self._flush_interval
        _live.add(self)
        _ensure_flusher()
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # built whole in __new__
        CircuitBreaker.__init__(self, name=kwargs.get("name"))  # events, log lines, the registry

    # -- Redis ---------------------------------------------------------------------

    def _check_params(self) -> None:
        mine = " ".join(f"{p}={getattr(self, p)!r}" for p in _SHARED_PARAMS)
        b = self._backend
        pkey = self._key + b":params"
        b._command("SET", pkey, mine, "NX")
        theirs = b._command("GET", pkey)
        b._command("PEXPIRE", pkey, 86400000 + int(self.timeout_seconds * 1000))
        theirs = theirs.decode() if isinstance(theirs, bytes) else mine
        if theirs != mine:
            ours = dict(kv.split("=", 1) for kv in mine.split())
            other = dict(kv.split("=", 1) for kv in theirs.split())
            diff = ", ".join(f"{p}: {other.get(p)} there, {ours[p]} here" for p in _SHARED_PARAMS
                             if other.get(p) != ours[p])
            raise ValueError(f"CircuitBreaker name={self.name!r} is already shared on this Redis with other "
                             f"parameters ({diff}): breakers sharing a name must share them")

    def _run(self, mode: str, *extra: str) -> Tuple[str, float, str]:
        """One script run: (state, retry_after seconds, result). BackendError when Redis fails."""
        b = self._backend
        argv = [self._key, mode.encode(), *self._args, str(b._now_us()).encode(), *(e.encode() for e in extra)]
        try:
            r = b._command("EVALSHA", self._sha, 1, *argv)
        except BackendError as e:
            if "NOSCRIPT" not in str(e):
                raise
            r = b._command("EVAL", self._script, 1, *argv)
        state, left_us, out = r
        return state.decode(), int(left_us) / 1e6, out.decode()

    async def _run_async(self, mode: str, *extra: str) -> Tuple[str, float, str]:
        """_run on the event loop's connection (pyresilience._redis_async)."""
        from . import _redis_async
        argv = [self._key, mode.encode(), *self._args, str(self._backend._now_us()).encode(),
                *(e.encode() for e in extra)]
        try:
            r = await _redis_async.command(self._backend, [b"EVALSHA", self._sha.encode(), b"1", *argv])
            if isinstance(r, _redis_async.RespError) and str(r).startswith("NOSCRIPT"):
                r = await _redis_async.command(self._backend, [b"EVAL", self._script, b"1", *argv])
        except _redis_async._TransportFailure as e:
            raise BackendError(str(e)) from None
        if isinstance(r, Exception):
            raise BackendError(f"redis: {r}")
        state, left_us, out = r
        return cast(bytes, state).decode(), int(left_us) / 1e6, cast(bytes, out).decode()

    def _adopt(self, state: str, retry_after: float) -> None:
        """Makes the shared state this process's: closed -> the in-process
        breaker decides; open/half-open -> calls go through the shared path."""
        self._fallback = False
        if state == "closed":
            if not self._local:
                self._set_local(True)
                self._shared_state = CircuitState.CLOSED
                self._force(_CB.reset)
            return
        self._shared_state = CircuitState.OPEN if state == "open" else CircuitState.HALF_OPEN
        self._open_until = time.monotonic() + retry_after
        if self._local:
            self._set_local(False)
            if _CB.state.__get__(self) == CircuitState.CLOSED:
                self._force(_CB.open)  # callers of the C-level paths see it open too

    def _force(self, method: Callable[[Any], Any]) -> None:
        self._syncing = True
        try:
            method(self)
        finally:
            self._syncing = False
        m = super().metrics
        self._base = (m.calls, m.failures, m.ignored)

    def _set_local(self, local: bool) -> None:
        # The closed path is the C breaker's own call() (no Python frame): the
        # shared paths are methods of a subclass this object switches to.
        # (an observed breaker stays observed: the observed variant of the path)
        self._local = local
        switch_class(self, RedisCircuitBreaker if local else _SharedPath)

    def _go_fallback(self) -> None:
        if not self._fallback:
            self._fallback = True
            self._set_local(True)

    def _on_local_change(self, old: Any, new: Any) -> None:
        # the in-process breaker opened by itself: failure_threshold consecutive
        # failures here -> open the shared circuit now (not at the next flush)
        if self._syncing or self._fallback or new != CircuitState.OPEN or old != CircuitState.CLOSED:
            return
        try:
            state, left, _ = self._run("trip")
        except BackendError:
            self._go_fallback()
            return
        self._adopt(state, left)

    def flush(self) -> None:
        """Send this process's closed-path outcomes since the last flush and
        adopt the shared state (the background thread calls it every
        flush_interval seconds)."""
        with self._lock:
            m = super().metrics
            calls, fails, ign = m.calls - self._base[0], m.failures - self._base[1], m.ignored - self._base[2]
            if self._local and not self._fallback and calls >= 0 and fails >= 0:
                had_success = calls - fails - ign > 0
                trailing = min(m.consecutive_failures, fails)
                args: Tuple[str, ...] = ("flush", "1" if had_success else "0", str(trailing))
            else:
                args = ("flush", "0", "0")
            try:
                state, left, _ = self._run(*args)
            except BackendError:
                self._go_fallback()
                return
            self._base = (m.calls, m.failures, m.ignored)
            if self._fallback and _CB.state.__get__(self) != CircuitState.CLOSED and state == "closed":
                return  # our own fallback breaker is still open: let it recover first
            self._adopt(state, left)

    # -- the call paths ------------------------------------------------------------

    def _classify(self, exc: Optional[BaseException], result: Any) -> str:
        if exc is None:
            return "f" if self.is_failure is not None and self.is_failure(result) else "s"
        if not isinstance(exc, Exception):
            return "i"  # KeyboardInterrupt, SystemExit, GeneratorExit, CancelledError
        if self.ignore_exceptions and isinstance(exc, self.ignore_exceptions):
            return "i"
        return "f" if isinstance(exc, self.record_exceptions) else "s"

    def _open_error(self, retry_after: float) -> CircuitOpenError:
        return CircuitOpenError(f"circuit '{self.name}' is open (shared)", retry_after=max(0.0, retry_after),
                                name=self.name)

    def _record(self, token: Any, exc: Optional[BaseException] = None, result: Any = None) -> None:
        # a shared trial's token may come back after this object went local again
        if token is None or token.__class__ is not tuple or not token or token[0] is not _SHARED:
            _CB._record(self, token, exc, result)
            return
        outcome = self._classify(exc, result)
        try:
            state, left, _ = self._run("result", outcome)
        except BackendError:
            self._go_fallback()
            return
        self._adopt(state, left)

    def __call__(self, func: Callable[..., T]) -> Callable[..., T]:
        """Use the shared breaker as a decorator (sync or async functions): each
        call goes through call() / call_async(), whichever path is current."""
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            return super().__call__(cast(Callable[..., T], func))  # refused, with the breaker's message
        me = self
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await me.call_async(func, *args, **kwargs)
            return cast(Callable[..., T], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return me.call(func, *args, **kwargs)
        return wrapper

    # -- state and metrics ------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The shared state (the in-process one while falling back or closed)."""
        if self._local:
            return cast(CircuitState, _CB.state.__get__(self))
        if self._shared_state == CircuitState.OPEN and time.monotonic() >= self._open_until:
            return CircuitState.HALF_OPEN
        return self._shared_state

    @property
    def metrics(self) -> RedisCircuitBreakerMetrics:  # type: ignore[override]
        """The in-process counters with the shared state and ``fallback``."""
        m = super().metrics
        state = self.state
        retry = m.retry_after if self._local else max(0.0, self._open_until - time.monotonic())
        return RedisCircuitBreakerMetrics(
            state, m.consecutive_failures, m.consecutive_successes, m.calls, m.failures, m.slow_calls,
            m.rejected, m.ignored, m.failure_rate, m.slow_call_rate, retry, m.window_calls, m.window_failures,
            m.window_slow_calls, m.half_open_in_flight, m.mode, self._fallback)

    @property
    def backend(self) -> Any:
        """The RedisBackend holding the shared state."""
        return self._backend

    @property
    def flush_interval(self) -> float:
        """Seconds between two flushes of the closed-path outcomes."""
        return self._flush_interval

    def open(self) -> None:
        """Open the shared circuit (every process) for timeout_seconds."""
        self._shared_force("open")

    def close(self) -> None:
        """Close the shared circuit (every process)."""
        self._shared_force("close")

    def reset(self) -> None:
        """Close the shared circuit and reset this process's counters."""
        self._shared_force("close")
        self._force(_CB.reset)

    def _shared_force(self, mode: str) -> None:
        try:
            state, left, _ = self._run(mode)
        except BackendError:
            self._go_fallback()
            self._force(_CB.open if mode == "open" else _CB.close)
            return
        with self._lock:
            if mode == "open":
                self._set_local(True)  # let _adopt switch us to the shared path
            self._adopt(state, left)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", backend={self._backend!r}, flush_interval={self._flush_interval!r})"


class _SharedPath(RedisCircuitBreaker):
    """A RedisCircuitBreaker while the shared state is open or half-open (see
    _set_local): rejections from the local cache, trials through Redis."""

    def _acquire(self) -> Any:
        now = time.monotonic()
        if now < self._open_until:
            return self._open_error(self._open_until - now)
        try:
            answer: Optional[Tuple[str, float, str]] = self._run("trial")
        except BackendError:
            answer = None
        return self._trial_token(now, answer)

    def _trial_token(self, now: float, answer: Optional[Tuple[str, float, str]]) -> Any:
        """The token of a trial: Redis's answer (None: the backend failed, the
        fallback decides)."""
        if answer is None:
            self._go_fallback()
            return _CB._acquire(self)
        state, left, out = answer
        if out == "granted":
            return (_SHARED, now)
        self._adopt(state, left)
        if self._local:  # closed meanwhile: the in-process breaker decides
            return _CB._acquire(self)
        return self._open_error(left)

    call = same_body(breaker_call, "call", """call(self, func, /, *args, **kwargs)

        ``func(*args, **kwargs)`` through the shared breaker: closed, the
        in-process breaker runs it (no round trip); open, rejected from the
        local cache; half-open, a trial slot taken in Redis.""", "_SharedPath")

    async def _acquire_async(self) -> Any:
        now = time.monotonic()
        if now < self._open_until:
            return self._open_error(self._open_until - now)
        try:
            answer: Optional[Tuple[str, float, str]] = await self._run_async("trial")
        except BackendError:
            answer = None
        return self._trial_token(now, answer)

    async def _record_async(self, token: Any, exc: Optional[BaseException], result: Any) -> None:
        if token[0] is not _SHARED:
            _CB._record(self, token, exc, result)
            return
        try:
            state, left, _ = await self._run_async("result", self._classify(exc, result))
        except BackendError:
            self._go_fallback()
            return
        self._adopt(state, left)

    async def call_async(self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """call_async(self, func, /, *args, **kwargs)

        The shared path of call_async: trial slots and outcomes on the event
        loop's connection, never blocking the loop."""
        token = await self._acquire_async()
        if token.__class__ is not tuple:
            return cast(T, await self._rejected_async(token))
        record = _SharedPath._record_async  # this object may have gone local meanwhile
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            await record(self, token, exc, None)
            raise
        await record(self, token, None, result)
        return result


# One background thread per process flushes every live shared breaker when
# its flush_interval is due (a flush is one round trip, bounded by the
# backend's timeout).
_flusher_lock = threading.Lock()
_flusher_pid = 0


def _ensure_flusher() -> None:
    global _flusher_pid
    with _flusher_lock:
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()
        threading.Thread(target=_flush_loop, name="pyresilience-breaker-flush", daemon=True).start()


def _flush_loop() -> None:
    while True:
        wait = 1.0
        for b in list(_live):
            if b._backend.closed:
                continue
            if time.monotonic() >= b._next_flush:
                try:
                    b.flush()
                except Exception:  # never kill the flusher
                    pass
                b._next_flush = time.monotonic() + b._flush_interval
            wait = min(wait, b._next_flush - time.monotonic())
            del b
        time.sleep(max(0.001, wait))


def _after_fork_in_child() -> None:
    global _flusher_lock
    _flusher_lock = threading.Lock()
    for b in list(_live):
        b._lock = threading.Lock()
    if len(_live):
        _ensure_flusher()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
