"""Circuit breakers.

:class:`CircuitBreaker` is a thin Python subclass of the C type
``pyresilience._core.CircuitBreaker``: the state machine, the windows, the
counters and the whole of ``call()`` run in C. This module adds what is
naturally Python: ``call_async``, use as a decorator on sync and async
functions, ``with`` / ``async with`` blocks whose outcome is recorded, the
:class:`CircuitState` enum and a readable ``repr``.

Listeners (``on_state_change``) run in C right after each transition, with no
core lock held; an exception in a listener is reported as a ``RuntimeWarning``
and never reaches the caller.
"""
from __future__ import annotations

import contextvars
import enum
import inspect
import threading
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Iterable, NamedTuple, Optional, Tuple, Type,
                    TypeVar, Union, cast)

from . import _core, _registry
from ._decorate import P, finish, inspect_target
from .events import EventSource, emit, on_class_change

__all__ = ["CircuitBreaker", "CircuitState", "CircuitBreakerMetrics"]

T = TypeVar("T")

class CircuitState(str, enum.Enum):
    """The state of a circuit breaker. A ``str`` enum: ``state == "open"`` works."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


class CircuitBreakerMetrics(NamedTuple):
    """A snapshot of a CircuitBreaker's state and counters."""

    state: CircuitState
    consecutive_failures: int  # failures since the last success (CLOSED)
    consecutive_successes: int  # since the last failure; trial successes in HALF_OPEN
    calls: int  # successes + failures recorded (since creation or reset())
    failures: int
    slow_calls: int
    rejected: int  # calls rejected
    ignored: int  # outcomes that counted as neither
    failure_rate: float  # failures / calls over the current window (0.0 when empty)
    slow_call_rate: float  # slow calls / calls over the current window
    retry_after: float  # seconds until a trial call is allowed when OPEN (inf when forced), else 0.0
    window_calls: int  # outcomes in the current window
    window_failures: int
    window_slow_calls: int
    half_open_in_flight: int  # trial calls running
    mode: str  # 'normal', 'forced_open' or 'disabled'


ExcTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]
Listener = Callable[["CircuitBreaker", CircuitState, CircuitState], Any]

# The permits of the with-blocks running in this context (thread or task):
# a tuple of (breaker, token) pairs, replaced (never mutated) on enter and exit,
# so nested blocks, threads and asyncio tasks each record with their own permit.
_blocks: contextvars.ContextVar[Tuple[Tuple[Any, Any], ...]] = contextvars.ContextVar(
    "pyresilience_breaker_blocks", default=())


def _push(breaker: Any, token: Any) -> None:
    _blocks.set(_blocks.get() + ((breaker, token),))


def _pop(breaker: Any) -> Any:
    stack = _blocks.get()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] is breaker:
            _blocks.set(stack[:i] + stack[i + 1:])
            return stack[i][1]
    return None  # entered elsewhere: recorded without a permit


def _on_transition(breaker: Any, old: Any, new: Any) -> None:
    """Every facade breaker's own listener (hidden from ``listeners``): the
    ``state_change`` event, its log line and the transition counter."""
    _registry.count(breaker, f"transition:{old}:{new}")
    emit(breaker, "state_change", old_state=old, new_state=new)


def _as_tuple(value: Any, param: str, ok: Callable[[Any], bool], what: str) -> Tuple[Any, ...]:
    """One item or an iterable of them -> a tuple of items passing ok; else
    TypeError naming param and what each item must be."""
    if ok(value):
        return (value,)
    try:
        items = tuple(value) if not isinstance(value, (str, bytes)) else None
    except TypeError:
        items = None
    if items is None:
        raise TypeError(f"{param} must be {what} or an iterable of them, not "
                        f"{type(value).__name__}: {value!r}")
    for item in items:
        if not ok(item):
            raise TypeError(f"{param}: every item must be {what}, found "
                            f"{type(item).__name__}: {item!r}")
    return items


def _is_exc_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


# add_listener / remove_listener: one change of a breaker's listener tuple at a time
_listeners_lock = threading.Lock()


class CircuitBreaker(_core.CircuitBreaker, EventSource):
    """CircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0, fallback=None, *, name=None, failure_rate_threshold=None, window_type='count', window_size=100, minimum_calls=10, slow_call_duration=None, slow_call_rate_threshold=None, half_open_max_calls=None, record_exceptions=(Exception,), ignore_exceptions=(), is_failure=None, on_state_change=None, clock=None, backend=None, flush_interval=0.5, shared=None)

    Stops calling a dependency that keeps failing, and lets it recover.

    CLOSED: calls run. ``failure_threshold`` consecutive failures open the
    circuit (a success resets the count). With ``failure_rate_threshold``
    (0 < x <= 1) the circuit opens instead when, over a window of the last
    ``window_size`` calls (``window_type="count"``) or seconds (``"time"``)
    holding at least ``minimum_calls`` outcomes, the failure rate, or the rate
    of calls lasting ``slow_call_duration`` seconds or more, reaches its
    threshold (``slow_call_rate_threshold``).

    OPEN: calls are rejected - ``fallback()`` is returned when a fallback was
    given, else a fresh :class:`~pyresilience.CircuitOpenError` (with
    ``retry_after`` and ``name``) is raised - until ``timeout_seconds`` have
    passed; the next call then moves it to HALF_OPEN.

    HALF_OPEN: at most ``half_open_max_calls`` (default ``success_threshold``)
    trial calls run at once, the rest are rejected; ``success_threshold``
    successes close the circuit, any failure re-opens it.

    Low level: in HALF_OPEN, ``allow_request()`` takes a trial slot that the
    next ``record_success()``/``record_failure()``/``record_ignored()`` frees
    (matched by count); one recorded while no ``allow_request()`` trial is
    outstanding is counted in the totals but frees no slot and does not move
    the state.

    Outcomes: exceptions matching ``ignore_exceptions`` count as neither, those
    matching ``record_exceptions`` are failures, others are successes (they
    propagate either way); ``is_failure(result)`` marks returned values as
    failures. KeyboardInterrupt, SystemExit, GeneratorExit and
    asyncio.CancelledError are never failures and always free a trial slot.

    ``on_state_change(breaker, old_state, new_state)`` (a callable or a list of
    them) is called once per transition, after it. ``clock``: None (monotonic),
    a :class:`~pyresilience.ManualClock`, or a callable returning seconds.

    ``backend`` (a :class:`~pyresilience.RedisBackend`, with a ``name``): the
    state is shared by every breaker of that name on that Redis server; the
    closed path stays in process and its outcomes are flushed every
    ``flush_interval`` seconds (see :mod:`pyresilience.redis_breaker`).

    ``shared`` (a :class:`~pyresilience.SharedMemory`, with a ``name``): the
    state, windows and half-open trial slots live in that region, one breaker
    for every process that opens the same name (same configuration, else
    ValueError naming both). The closed path still admits with one atomic
    load; outcomes take the region's lock. A trial slot held by a process that
    dies comes back at the next admission that finds half-open full (at most
    every 0.25 s). Use the default monotonic clock across processes.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, backend: Any = None, **kwargs: Any) -> "CircuitBreaker":
        # backend=: the state is shared through Redis (pyresilience.redis_breaker)
        if backend is not None:
            if kwargs.get("shared") is not None:
                raise ValueError("backend= and shared= are exclusive: the state lives in Redis "
                                 "or in a SharedMemory region, got both")
            from .redis_breaker import RedisCircuitBreaker
            if not issubclass(cls, RedisCircuitBreaker):
                return RedisCircuitBreaker(*args, backend=backend, **kwargs)
            kwargs["backend"] = backend
        # the C type takes tuples: one item or an iterable of them becomes one
        for param in ("record_exceptions", "ignore_exceptions"):
            if param in kwargs:
                kwargs[param] = _as_tuple(kwargs[param], param, _is_exc_class, "an exception class")
        if kwargs.get("on_state_change") is not None:
            kwargs["on_state_change"] = _as_tuple(kwargs["on_state_change"], "on_state_change",
                                                  callable, "a callable")
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        failure_threshold: int = 5,
        success_threshold: int = 2,
        timeout_seconds: float = 30.0,
        fallback: Optional[Callable[[], Any]] = None,
        *,
        name: Optional[str] = None,
        failure_rate_threshold: Optional[float] = None,
        window_type: str = "count",
        window_size: int = 100,
        minimum_calls: int = 10,
        slow_call_duration: Optional[float] = None,
        slow_call_rate_threshold: Optional[float] = None,
        half_open_max_calls: Optional[int] = None,
        record_exceptions: ExcTypes = (Exception,),
        ignore_exceptions: ExcTypes = (),
        is_failure: Optional[Callable[[Any], bool]] = None,
        on_state_change: Union[None, Listener, Iterable[Listener]] = None,
        clock: Any = None,
        backend: Any = None,
        flush_interval: float = 0.5,
        shared: Optional[_core.SharedMemory] = None,
    ) -> None:
        # The C type's tp_new parsed these and built the breaker; __init__
        # states the signature (inspect shows the real default of
        # record_exceptions), never re-initialises, and only adds the listener
        # of events and log lines (called on transitions only).
        self.add_listener(_on_transition)
        if name is not None:
            _registry.obs_of(self)  # the exporters see named breakers

    def _native_name(self) -> Optional[str]:
        return _core.CircuitBreaker.name.__get__(self)  # type: ignore[no-any-return]

    @property
    def listeners(self) -> Tuple[Listener, ...]:
        """The state-change listeners (``on_state_change``, ``add_listener``)."""
        return tuple(f for f in self._listeners if f is not _on_transition)

    def add_listener(self, listener: Callable[[Any, Any, Any], Any], /) -> None:
        """Call listener(breaker, old_state, new_state) after every transition."""
        if not callable(listener):
            raise TypeError(f"listener must be a callable, not {type(listener).__name__}: "
                            f"{listener!r}")
        with _listeners_lock:
            self._listeners += (listener,)

    def remove_listener(self, listener: Callable[[Any, Any, Any], Any], /) -> None:
        """Remove a listener (the last one equal to it; ValueError if absent)."""
        while True:  # __eq__ may run any code: compared outside the lock
            old = self._listeners
            at = next((i for i in range(len(old) - 1, -1, -1) if old[i] == listener), None)
            if at is None:
                raise ValueError(f"{listener!r} is not a listener of this breaker")
            with _listeners_lock:
                if self._listeners is old:
                    self._listeners = old[:at] + old[at + 1:]
                    return

    if TYPE_CHECKING:  # the C getter returns a CircuitState member
        @property
        def state(self) -> CircuitState: ...

    @property
    def metrics(self) -> CircuitBreakerMetrics:
        """A :class:`CircuitBreakerMetrics` snapshot taken now."""
        return CircuitBreakerMetrics._make(self._metrics())

    # -- async ----------------------------------------------------------------

    async def call_async(self, func: Callable[P, Awaitable[T]], /, *args: P.args,
                         **kwargs: P.kwargs) -> T:
        """call_async(self, func, /, *args, **kwargs)

        ``await func(*args, **kwargs)`` through the breaker, as :meth:`call`
        does for sync functions. When rejected, returns ``fallback()`` (awaited
        if it returns an awaitable) or raises CircuitOpenError. A cancelled call
        is never a failure and frees its trial slot."""
        token = self._acquire()
        if token.__class__ is not tuple:
            return cast(T, await self._rejected_async(token))
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            self._record(token, exc)
            raise
        self._record(token, None, result)
        return result

    async def _rejected_async(self, error: BaseException) -> Any:
        fallback = self.fallback
        if fallback is None:
            raise error
        result = fallback()
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- decorator -------------------------------------------------------------

    def __call__(self, func: Callable[P, T]) -> Callable[P, T]:
        """Use the breaker as a decorator on a sync or async function (the
        signature is kept; a generator function is refused with TypeError)."""
        if inspect_target(func, "a CircuitBreaker"):
            acquire, record, rejected = self._acquire, self._record, self._rejected_async
            afunc = cast(Callable[..., Awaitable[Any]], func)

            def repoint() -> None:  # this breaker's class changed: observed or not
                nonlocal acquire, record, rejected
                acquire, record, rejected = self._acquire, self._record, self._rejected_async

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                # call_async inlined: one coroutine frame per call, not two
                token = acquire()
                if token.__class__ is not tuple:
                    return await rejected(token)
                try:
                    result = await afunc(*args, **kwargs)
                except BaseException as exc:
                    record(token, exc)
                    raise
                record(token, None, result)
                return result
            async_wrapper._prs_repoint = repoint  # type: ignore[attr-defined]
            on_class_change(self, repoint)
            return cast(Callable[P, T], finish(async_wrapper, func))

        # a C callable (no Python frame per call) that binds like a function
        return cast(Callable[P, T], finish(self._wrap(func), func))

    # -- context managers --------------------------------------------------------

    def _enter(self) -> None:
        token = self._acquire()
        if not isinstance(token, tuple):
            raise token  # a with-block cannot be replaced by a fallback
        _push(self, token)

    def _exit(self, exc: Optional[BaseException]) -> None:
        self._record(_pop(self), exc)

    def __enter__(self) -> "CircuitBreaker":
        """Admit the block or raise CircuitOpenError; its outcome is recorded on exit."""
        self._enter()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self._exit(exc)

    async def __aenter__(self) -> "CircuitBreaker":
        self._enter()
        return self

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self._exit(exc)

    # -- display -------------------------------------------------------------------

    def __repr__(self) -> str:
        """``CircuitBreaker(param=value, ...)``: the configuration (the three
        positional parameters, then every keyword one that differs from its
        default); the state and counters are in :attr:`metrics`."""
        parts = [f"failure_threshold={self.failure_threshold!r}",
                 f"success_threshold={self.success_threshold!r}",
                 f"timeout_seconds={self.timeout_seconds!r}"]
        if self.fallback is not None:
            parts.append(f"fallback={self.fallback!r}")
        for param, default in _REPR_DEFAULTS:
            value = getattr(self, param)
            if value != default:
                parts.append(f"{param}={value!r}")
        if self.half_open_max_calls != self.success_threshold:
            parts.append(f"half_open_max_calls={self.half_open_max_calls!r}")
        if self.listeners:
            parts.append(f"on_state_change={list(self.listeners)!r}")
        if not isinstance(self.clock, _core.MonotonicClock):
            parts.append(f"clock={self.clock!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# inspect.signature(CircuitBreaker): __init__'s parameters (__new__ only dispatches backend=).
CircuitBreaker.__signature__ = inspect.signature(CircuitBreaker.__init__).replace(  # type: ignore[attr-defined]
    parameters=list(inspect.signature(CircuitBreaker.__init__).parameters.values())[1:])

# Keyword parameters shown by CircuitBreaker.__repr__ when they differ from these.
_REPR_DEFAULTS: Tuple[Tuple[str, Any], ...] = (
    ("name", None), ("failure_rate_threshold", None), ("window_type", "count"),
    ("window_size", 100), ("minimum_calls", 10), ("slow_call_duration", None),
    ("slow_call_rate_threshold", None), ("record_exceptions", (Exception,)),
    ("ignore_exceptions", ()), ("is_failure", None))
