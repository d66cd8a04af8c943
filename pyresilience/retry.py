"""Retries with exponential backoff.

The reference API, unchanged: :class:`RetryConfig`, :func:`calculate_delay`,
:func:`retry_with_backoff` and :func:`retry_async`; plus :class:`Retry` (an
object with ``call``/``call_async``/decorator/``delays()``), :class:`RetryState`
(what ``on_retry`` receives) and :class:`RetryBudget` (from the C core).

Where the work happens: the delay, the jitter draw, the Retry-After and deadline
capping and the budget are C (``pyresilience._core.RetryPolicy`` and
``RetryBudget``). A decorated synchronous function is a C ``PolicyStep``: a call
that succeeds at once never runs Python code of ours. Only after a failure does
the loop below take over: it sleeps (advancing a ManualClock instead), calls
``on_retry`` and re-raises.

Semantics that hold whatever the configuration:

- BaseExceptions that are not Exceptions (KeyboardInterrupt, SystemExit,
  GeneratorExit, asyncio.CancelledError) are never retried, and a cancellation
  during an async backoff sleep propagates at once.
- The loop never sleeps past ``deadline``: when the next delay would reach it,
  it gives up and re-raises the last exception.
- Per-call state (attempt number, previous delay, start time) lives in the call;
  concurrent calls through one decorated function never share it.
- When attempts are exhausted by exceptions, the exception re-raised carries a
  note (PEP 678) saying how many attempts were made over how long.
- A server's Retry-After (an exception's ``retry_after``: seconds as a number
  or a string, an HTTP-date, a timedelta or a datetime) is a floor of the next
  delay that ``max_delay`` never shortens; one longer than ``max_retry_after``
  or past the deadline gives up at once.
"""
from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import (Any, Awaitable, Callable, Dict, Generic, Iterator, Optional, Tuple, Type, TypeVar, Union, cast,
                    overload)

from . import _core
from ._core import ManualClock, MonotonicClock, RetryPolicy
from ._core import deadline_remaining as _deadline_remaining
from ._decorate import P, finish, inspect_target
from . import _registry
from .errors import RetryExhausted
from .events import Named, emit

_RETRY_LOG = logging.getLogger("pyresilience.retry")
_DEBUG = logging.DEBUG

__all__ = [
    "RetryConfig",
    "RetryState",
    "RetryBudget",
    "RetryBudgetMetrics",
    "RetryMetrics",
    "Retry",
    "calculate_delay",
    "retry_with_backoff",
    "retry_async",
]

T = TypeVar("T")

JitterArg = Union[bool, str]
ExceptionTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]
ClockArg = Union[None, ManualClock, MonotonicClock, Callable[[], float]]

_NEVER = _core.NEVER_NS
_SLEEP = _core.RETRY_SLEEP
_GIVE_UP_ATTEMPTS = _core.RETRY_GIVE_UP_ATTEMPTS
_GIVE_UP_DEADLINE = _core.RETRY_GIVE_UP_DEADLINE
_GIVE_UP_RETRY_AFTER = _core.RETRY_GIVE_UP_RETRY_AFTER
_GIVE_UP_RETRY_AFTER_LIMIT = _core.RETRY_GIVE_UP_RETRY_AFTER_LIMIT
_GIVE_UP_BUDGET = -1  # decided here: the budget said no

DEFAULT_MAX_RETRY_AFTER = 300.0
"""Seconds: the longest server Retry-After a retry waits by default (5 minutes)."""

_POLICY_FIELDS = ("max_attempts", "base_delay", "max_delay", "exponential_base", "jitter", "seed",
                  "max_retry_after")
_FIELDS = _POLICY_FIELDS[:5] + ("retryable_exceptions", "deadline", "retry_on_result", "on_retry",
                                "budget", "respect_retry_after", "max_retry_after", "seed", "clock")


@dataclass(frozen=True, slots=True)
class RetryBudgetMetrics:
    """A snapshot of a :class:`RetryBudget`'s counters (``RetryBudget.metrics``).

    Lifetime: ``attempts`` (first attempts deposited), ``retries_allowed``,
    ``retries_denied``; the current window: ``window_attempts``,
    ``window_retries`` and ``available`` (retries a withdrawal could take now).
    ``metrics["attempts"]`` still works (read-only item access by field name,
    as when metrics was a dict)."""

    attempts: int
    retries_allowed: int
    retries_denied: int
    window_attempts: int
    window_retries: int
    available: float

    def __getitem__(self, key: str) -> Union[int, float]:
        if key not in _BUDGET_FIELDS:
            raise KeyError(key)
        return cast(Union[int, float], getattr(self, key))


_BUDGET_FIELDS = frozenset(RetryBudgetMetrics.__dataclass_fields__)


class RetryBudget(_core.RetryBudget):
    __doc__ = _core.RetryBudget.__doc__
    __slots__ = ()

    @property
    def metrics(self) -> RetryBudgetMetrics:
        """A frozen snapshot of the counters (RetryBudgetMetrics)."""
        return RetryBudgetMetrics(*self._metrics())


def _check_exceptions(value: Any) -> Tuple[Type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    elif isinstance(value, (list, frozenset, set)):
        value = tuple(value)
    if not isinstance(value, tuple):
        raise TypeError("retryable_exceptions must be an exception class or a tuple of them, "
                        f"not {type(value).__name__}: {value!r}")
    for cls in value:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"retryable_exceptions must hold exception classes, got {cls!r}")
    return value


def _check_deadline(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"deadline must be a number of seconds or None, not {type(value).__name__}: {value!r}")
    value = float(value)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"deadline must be > 0 seconds (or None), got {value!r}")
    return None if math.isinf(value) else value


def _check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}: {value!r}")
    return value


def _check_clock(value: Any) -> Any:
    if value is None or isinstance(value, (ManualClock, MonotonicClock)):
        return value
    if callable(value) and not isinstance(value, type):
        return value
    raise TypeError("clock must be None, a ManualClock, a MonotonicClock or a zero-argument callable "
                    f"returning seconds, not {type(value).__name__}: {value!r}")


_G = TypeVar("_G")
_S = TypeVar("_S")


class _PolicyField(Generic[_G, _S]):
    """A RetryConfig attribute kept in its C RetryPolicy: read from the
    policy; setting one (a _G, or a _S that the policy turns into one)
    rebuilds the policy, which re-validates it."""

    def __init__(self, doc: Optional[str] = None) -> None:
        self.__doc__ = doc
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: Optional[type] = None) -> "_PolicyField[_G, _S]": ...
    @overload
    def __get__(self, obj: "RetryConfig", owner: Optional[type] = None) -> _G: ...
    def __get__(self, obj: Optional["RetryConfig"], owner: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return getattr(obj._policy, self._name)

    def __set__(self, obj: "RetryConfig", value: _S) -> None:
        obj._rebuild(**{self._name: value})


class RetryConfig:
    """RetryConfig(max_attempts=3, base_delay=1.0, max_delay=60.0, exponential_base=2.0, jitter=True, retryable_exceptions=(Exception,), *, deadline=None, retry_on_result=None, on_retry=None, budget=None, respect_retry_after=True, max_retry_after=300.0, seed=None, clock=None)

    How to retry. ``max_attempts`` counts every attempt (the first included).
    After failed attempt ``a`` (from 0) the delay is ``base_delay *
    exponential_base ** a`` capped at ``max_delay``, then jittered:

    - ``True`` / ``"proportional"``: +/-50% uniform (the reference behaviour);
    - ``False`` / ``"none"``: no jitter;
    - ``"full"``: uniform in [0, d]; ``"equal"``: d/2 + uniform in [0, d/2];
    - ``"decorrelated"``: min(max_delay, uniform(base_delay, 3 x previous delay)).

    Only exceptions matching ``retryable_exceptions`` are retried, never a
    BaseException that is not an Exception. Keyword-only additions:
    ``deadline`` (seconds across all attempts and sleeps; never slept past),
    ``retry_on_result`` (a predicate: True means retry this result; exhausted ->
    :class:`RetryExhausted`), ``on_retry`` (called with a :class:`RetryState`
    before each sleep), ``budget`` (a shared :class:`RetryBudget`),
    ``respect_retry_after`` (wait at least an exception's ``retry_after``:
    a number of seconds, a string of seconds or an HTTP-date, a timedelta or a
    datetime; max_delay never shortens it), ``max_retry_after`` (seconds,
    default 300; a longer Retry-After, or one past the deadline, gives up at
    once; None: no limit),
    ``seed`` (reproducible jitter) and ``clock`` (a ManualClock makes sleeps
    advance it instantly).

    Attributes may be changed after construction (values are re-validated);
    a decorator reads ``budget``, ``clock`` and ``retry_on_result`` when it
    wraps, the rest at every call."""

    __slots__ = ("_policy", "retryable_exceptions", "deadline", "retry_on_result", "on_retry",
                 "budget", "respect_retry_after", "clock", "_jitter", "_seed", "_deadline_ns")

    _policy: RetryPolicy
    retryable_exceptions: Tuple[Type[BaseException], ...]
    deadline: Optional[float]
    retry_on_result: Optional[Callable[[Any], Any]]
    on_retry: Optional[Callable[["RetryState"], Any]]
    budget: Optional[RetryBudget]
    respect_retry_after: bool
    clock: ClockArg
    _jitter: JitterArg
    _seed: Optional[int]
    _deadline_ns: int

    def __init__(self, max_attempts: int = 3, base_delay: float = 1.0, max_delay: float = 60.0,
                 exponential_base: float = 2.0, jitter: JitterArg = True,
                 retryable_exceptions: ExceptionTypes = (Exception,), *,
                 deadline: Optional[float] = None,
                 retry_on_result: Optional[Callable[[Any], Any]] = None,
                 on_retry: Optional[Callable[["RetryState"], Any]] = None,
                 budget: Optional[RetryBudget] = None,
                 respect_retry_after: bool = True,
                 max_retry_after: Optional[float] = DEFAULT_MAX_RETRY_AFTER,
                 seed: Optional[int] = None,
                 clock: ClockArg = None) -> None:
        object.__setattr__(self, "_jitter", jitter)
        object.__setattr__(self, "_seed", seed)
        object.__setattr__(self, "_policy",
                           RetryPolicy(max_attempts, base_delay, max_delay, exponential_base, jitter, seed,
                                       max_retry_after=max_retry_after))
        self.retryable_exceptions = retryable_exceptions  # type: ignore[assignment]
        self.deadline = deadline
        self.retry_on_result = retry_on_result
        self.on_retry = on_retry
        self.budget = budget
        self.respect_retry_after = respect_retry_after
        self.clock = clock

    # -- the policy's fields: read from the C policy, rebuilt on change --

    max_attempts: "_PolicyField[int, int]" = _PolicyField()
    base_delay: "_PolicyField[float, float]" = _PolicyField()
    max_delay: "_PolicyField[float, float]" = _PolicyField()
    exponential_base: "_PolicyField[float, float]" = _PolicyField()

    @property
    def jitter(self) -> JitterArg:
        """As given: True, False or a strategy name (``jitter_strategy`` is the name)."""
        return self._jitter

    @jitter.setter
    def jitter(self, value: JitterArg) -> None:
        self._rebuild(jitter=value)

    @property
    def jitter_strategy(self) -> str:
        """The jitter strategy's name: 'none', 'full', 'equal', 'decorrelated' or 'proportional'."""
        return self._policy.jitter

    @property
    def seed(self) -> Optional[int]:
        return self._seed

    @seed.setter
    def seed(self, value: Optional[int]) -> None:
        self._rebuild(seed=value)

    max_retry_after: "_PolicyField[float, Optional[float]]" = _PolicyField(
        "Seconds: the longest server Retry-After waited (inf: no limit).")

    def _rebuild(self, **change: Any) -> None:
        p = self._policy
        args: Dict[str, Any] = dict(max_attempts=p.max_attempts, base_delay=p.base_delay, max_delay=p.max_delay,
                    exponential_base=p.exponential_base, jitter=self._jitter, seed=self._seed,
                    max_retry_after=p.max_retry_after)
        args.update(change)
        policy = RetryPolicy(**args)
        object.__setattr__(self, "_policy", policy)
        object.__setattr__(self, "_jitter", args["jitter"])
        object.__setattr__(self, "_seed", args["seed"])

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "retryable_exceptions":
            value = _check_exceptions(value)
        elif name == "deadline":
            value = _check_deadline(value)
            object.__setattr__(self, "_deadline_ns",
                               _NEVER if value is None else min(round(value * 1e9), _NEVER - 1))
        elif name in ("retry_on_result", "on_retry"):
            value = _check_callable(name, value)
        elif name == "budget":
            if value is not None and not isinstance(value, _core.RetryBudget):
                raise TypeError(f"budget must be a RetryBudget or None, not {type(value).__name__}: {value!r}")
        elif name == "respect_retry_after":
            value = bool(value)
        elif name == "clock":
            value = _check_clock(value)
        object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> "RetryConfig":
        """replace(self, **changes)

        A copy with some fields changed (like dataclasses.replace)."""
        args = {name: getattr(self, name) for name in _FIELDS}
        unknown = set(changes) - set(args)
        if unknown:
            raise TypeError(f"RetryConfig has no field {sorted(unknown)[0]!r}")
        args.update(changes)
        return RetryConfig(**args)

    def __copy__(self) -> "RetryConfig":
        return self.replace()

    def __deepcopy__(self, memo: Any) -> "RetryConfig":
        """A copy sharing the callables, the budget and the clock (a budget is
        meant to be shared); the jitter generator is a new one."""
        return self.replace()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"RetryConfig({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryConfig):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _FIELDS)

    __hash__ = None  # type: ignore[assignment]


class RetryState:
    """RetryState(attempt, delay, exception, result, elapsed)

    What ``on_retry`` receives before each sleep: ``attempt`` (0-based index of
    the attempt that just failed), ``delay`` (seconds about to be slept),
    ``exception`` (or None), ``result`` (the rejected result, or None) and
    ``elapsed`` (seconds since the first attempt started)."""

    __slots__ = ("attempt", "delay", "exception", "result", "elapsed")

    def __init__(self, attempt: int, delay: float, exception: Optional[BaseException],
                 result: Any, elapsed: float) -> None:
        self.attempt = attempt
        self.delay = delay
        self.exception = exception
        self.result = result
        self.elapsed = elapsed

    def __repr__(self) -> str:
        return (f"RetryState(attempt={self.attempt}, delay={self.delay!r}, exception={self.exception!r}, "
                f"result={self.result!r}, elapsed={self.elapsed!r})")


def calculate_delay(attempt: int, config: RetryConfig, previous: Optional[float] = None) -> float:
    """calculate_delay(attempt, config, previous=None)

    The delay in seconds after failed attempt ``attempt`` (counting from 0):
    ``base_delay * exponential_base ** attempt`` capped at ``max_delay``, then
    jittered by ``config.jitter`` (True: +/-50% uniform); never negative, and
    no OverflowError for any attempt. ``previous`` (the delay slept last) is
    read by the decorrelated strategy only."""
    if not isinstance(config, RetryConfig):
        raise TypeError(f"config must be a RetryConfig, not {type(config).__name__}: {config!r}")
    return config._policy.delay(attempt, previous)


# The wall clock, read only to turn an HTTP-date Retry-After into a duration
# (tests replace it). Deadlines and sleeps never read it.
_wall_time = time.time

# delay-seconds (RFC 9110: 1*DIGIT), leniently with a sign and a fraction.
_DELAY_SECONDS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?", re.ASCII)


def _retry_after_seconds(value: Any) -> Optional[float]:
    """A Retry-After as seconds >= 0 (inf: never), or None when absent or
    unreadable. Accepts a real number, a string or bytes holding seconds
    (``"3"``) or an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``), a
    timedelta or a datetime. Negative values and past dates are 0."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float
            return math.inf if value > 0 else 0.0
    elif isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, datetime.datetime):
        seconds = _until(value)
    elif isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        text = text.strip()
        if _DELAY_SECONDS.fullmatch(text):
            seconds = float(text)
        else:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
            seconds = _until(when)
    else:
        return None
    if math.isnan(seconds):
        return None
    return seconds if seconds > 0 else 0.0


def _until(when: datetime.datetime) -> float:
    """Seconds from now (wall clock) until ``when`` (naive: UTC, as HTTP-dates are)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    try:
        return when.timestamp() - _wall_time()
    except (OverflowError, OSError, ValueError):
        return math.inf


def _retry_after_ns(exc: Optional[BaseException]) -> int:
    """The exception's retry_after in ns: -1 when it has none, NEVER for inf."""
    ra = _retry_after_seconds(getattr(exc, "retry_after", None))
    if ra is None:
        return -1
    if ra * 1e9 >= _NEVER:
        return _NEVER
    return round(ra * 1e9)


_REASONS = {
    _GIVE_UP_ATTEMPTS: "attempts exhausted",
    _GIVE_UP_DEADLINE: "the next delay would pass the deadline",
    _GIVE_UP_RETRY_AFTER: "the server's Retry-After passes the deadline",
    _GIVE_UP_RETRY_AFTER_LIMIT: "the server's Retry-After is longer than max_retry_after",
    _GIVE_UP_BUDGET: "the retry budget is exhausted",
}

# the `reason` of a gave_up event and of RetryMetrics.gave_up
_REASON_KEYS = {
    _GIVE_UP_ATTEMPTS: "attempts", _GIVE_UP_DEADLINE: "deadline",
    _GIVE_UP_RETRY_AFTER: "retry_after", _GIVE_UP_RETRY_AFTER_LIMIT: "retry_after_limit",
    _GIVE_UP_BUDGET: "budget",
}


@dataclass(frozen=True, slots=True)
class RetryMetrics:
    """A snapshot of a :class:`Retry`'s counters (``retry.metrics``), kept in
    the core (exact under threads): ``successful_without_retry`` (the first
    attempt succeeded: counted in C on the decorator's fast path),
    ``successful_with_retry``, ``failed_with_retry`` (gave up after
    retrying), ``failed_without_retry`` (the first failure was not retryable,
    or no retry was allowed), ``retries`` (attempts after the first) and
    ``gave_up`` (reason -> count; reasons ``attempts``, ``deadline``,
    ``retry_after``, ``retry_after_limit``, ``budget``)."""

    name: str
    successful_with_retry: int
    failed_with_retry: int
    failed_without_retry: int
    retries: int
    gave_up: Dict[str, int]
    successful_without_retry: int = 0


# The counters of a Retry, by index in its _core.RetryCounts (index 0, the
# first-try success, is also added by the C PolicyStep).
_COUNTERS = ("successful_without_retry", "successful_with_retry", "failed_with_retry",
             "failed_without_retry", "retries", "gave_up:attempts", "gave_up:deadline",
             "gave_up:retry_after", "gave_up:retry_after_limit", "gave_up:budget",
             "gave_up:other")
_COUNTER_INDEX = {k: i for i, k in enumerate(_COUNTERS)}


def _gave_up(loop: "_Loop", exc: Optional[BaseException], attempts: int, verdict: int) -> None:
    """Record and report a give-up (the caller raises next; the loop's close()
    counts it)."""
    if loop.owner is None:
        return
    reason = _REASON_KEYS.get(verdict, "other")
    loop.outcome = "failed_with_retry" if attempts > 1 else "failed_without_retry"
    loop.reason = reason
    emit(loop.owner, "gave_up", attempt=attempts, reason=reason, exception=exc)


def _give_up(exc: Optional[BaseException], result: Any, attempts: int, elapsed_ns: int,
             verdict: int) -> Any:
    """Raise what the caller sees when the loop stops."""
    how = (f"{attempts} attempt{'s' if attempts != 1 else ''} over {elapsed_ns / 1e9:.3f} s "
           f"({_REASONS.get(verdict, 'gave up')})")
    if exc is not None:
        add_note = getattr(exc, "add_note", None)
        if add_note is not None:
            add_note(f"pyresilience: gave up after {how}")
        raise exc
    raise RetryExhausted(f"retries exhausted after {how}: retry_on_result rejected the last result",
                         last_result=result, attempts=attempts)


class _Loop:
    """The per-call state of one retry loop (never shared between calls)."""

    __slots__ = ("cfg", "start", "attempt", "previous", "owner", "verdict", "outcome", "reason")

    def __init__(self, cfg: RetryConfig, start: int, owner: Any = None) -> None:
        self.owner = owner  # the Retry, for counters and events
        self.verdict = 0  # the give-up verdict once it gave up (for the dead letter)
        self.outcome: Optional[str] = None  # the counter of how the call ended
        self.reason: Optional[str] = None  # why it gave up

        self.cfg = cfg
        self.start = start
        self.attempt = 0
        self.previous = 0.0

    def step(self, exc: Optional[BaseException], result: Any) -> int:
        """After a failure: the ns to sleep before the next attempt; raises when giving up."""
        cfg = self.cfg
        if exc is not None and not isinstance(exc, cfg.retryable_exceptions):
            self.outcome = "failed_with_retry" if self.attempt else "failed_without_retry"
            raise exc
        clock = cfg.clock
        elapsed = _core.retry_now_ns(clock) - self.start
        deadline = cfg._deadline_ns
        remaining = _NEVER if deadline == _NEVER else deadline - elapsed
        left = _deadline_remaining()  # a policy call's deadline caps the sleeps too
        if left is not None:
            remaining = min(remaining, round(left * 1e9))
        ra = _retry_after_ns(exc) if cfg.respect_retry_after else -1
        verdict, delay, delay_ns = cfg._policy._next(self.attempt, self.previous, ra, remaining)
        if verdict == _SLEEP and cfg.budget is not None and not cfg.budget.withdraw():
            verdict = _GIVE_UP_BUDGET
        if verdict != _SLEEP:
            self.verdict = verdict
            _gave_up(self, exc, self.attempt + 1, verdict)
            _give_up(exc, result, self.attempt + 1, elapsed, verdict)
        if cfg.on_retry is not None:
            cfg.on_retry(RetryState(self.attempt, delay, exc, result, elapsed / 1e9))
            if deadline != _NEVER:  # on_retry took time: still never sleep past the deadline
                elapsed = _core.retry_now_ns(clock) - self.start
                if delay_ns >= deadline - elapsed:
                    self.verdict = _GIVE_UP_DEADLINE
                    _gave_up(self, exc, self.attempt + 1, _GIVE_UP_DEADLINE)
                    _give_up(exc, result, self.attempt + 1, elapsed, _GIVE_UP_DEADLINE)
        owner = self.owner
        if owner is not None and (_RETRY_LOG.isEnabledFor(_DEBUG) or _registry.has_listeners(owner)):
            emit(owner, "retry", attempt=self.attempt, delay=delay, exception=exc)
        self.attempt += 1
        self.previous = delay
        return delay_ns

    def close(self) -> None:
        """Count how the call ended and its retries, in one update (whatever
        ended it: a result, a give-up, an exception not retried, a cancellation)."""
        owner = self.owner
        if owner is None:
            return
        add = owner._counts.add
        if self.attempt:
            add(4, self.attempt)  # retries
        if self.outcome is not None:
            add(_COUNTER_INDEX[self.outcome], 1)
        if self.reason is not None:
            add(_COUNTER_INDEX.get("gave_up:" + self.reason, 10), 1)


class Retry(Named):
    """Retry(config=None, *, name=None, **config_kwargs)

    A reusable retry policy. ``config`` is a :class:`RetryConfig` (keyword
    arguments build one, or override fields of ``config``). Use it as

    - ``retry.call(func, *args, **kwargs)`` and ``await retry.call_async(func, ...)``;
    - a decorator on sync and async functions (``@Retry(max_attempts=5)``);
    - ``retry.delays()``: the delays it would sleep, for inspection.

    ``name`` labels its events, log lines and metrics (``retry.metrics``).

    Per-call state is never shared: one Retry serves any number of concurrent
    calls (threads or tasks)."""

    __slots__ = ("config", "dead_letter", "_counts", "__weakref__")

    config: RetryConfig
    dead_letter: Any

    def __init__(self, config: Optional[RetryConfig] = None, *, name: Optional[str] = None,
                 dead_letter: Any = None, **config_kwargs: Any) -> None:
        from .dead_letters import check_sink
        self.dead_letter = check_sink(dead_letter)
        if config is None:
            config = RetryConfig(**config_kwargs)
        elif not isinstance(config, RetryConfig):
            raise TypeError(f"config must be a RetryConfig or None, not {type(config).__name__}: {config!r}")
        elif config_kwargs:
            config = config.replace(**config_kwargs)
        self.config = config
        self._counts = _core.RetryCounts()  # see _COUNTERS
        if name is not None:
            self.name = name

    @property
    def metrics(self) -> RetryMetrics:
        """A RetryMetrics snapshot of the counters."""
        v = self._counts.values
        return RetryMetrics(self.name, v[1], v[2], v[3], v[4],
                            {_COUNTERS[i][8:]: v[i] for i in range(5, len(_COUNTERS)) if v[i]}, v[0])

    def __repr__(self) -> str:
        cfg = self.config
        fields = ", ".join(f"{name}={getattr(cfg, name)!r}" for name in _FIELDS)
        return f"Retry({fields})"

    # -- the loops --

    def _resume(self, func: Callable[..., Any], args: Tuple[Any, ...], kwargs: Any,
                exc: Optional[BaseException], result: Any, start: int) -> Any:
        """Continue a call whose first attempt failed (called by the C fast path)."""
        cfg = self.config
        loop = _Loop(cfg, start, self._owner())
        clock = cfg.clock
        sink = self.dead_letter
        try:
            while True:
                if sink is None:
                    _core.retry_sleep(clock, loop.step(exc, result))
                else:
                    _core.retry_sleep(clock, self._step_or_dead_letter(loop, sink, func, args, kwargs, exc, result))
                exc = result = None
                try:
                    result = func(*args, **kwargs)
                except Exception as e:  # BaseExceptions propagate: never retried
                    exc = e
                    continue
                predicate = cfg.retry_on_result
                if predicate is None or not predicate(result):
                    loop.outcome = "successful_with_retry"
                    return result
        finally:
            loop.close()

    def call(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """call(self, func, /, *args, **kwargs)

        Call ``func(*args, **kwargs)`` with retries; return its first accepted
        result, or re-raise the last exception (with a note) when giving up."""
        cfg = self.config
        start = _core.retry_now_ns(cfg.clock)
        if cfg.budget is not None:
            cfg.budget.deposit()
        exc: Optional[BaseException] = None
        result: Any = None
        try:
            result = func(*args, **kwargs)
        except Exception as e:
            exc = e
        else:
            predicate = cfg.retry_on_result
            if predicate is None or not predicate(result):
                self._owner()._counts.add(0, 1)
                return cast(T, result)
        return cast(T, self._resume(func, args, kwargs, exc, result, start))

    async def call_async(self, func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """call_async(self, func, /, *args, **kwargs)

        Await ``func(*args, **kwargs)`` with retries, sleeping with asyncio (a
        ManualClock is advanced instead). A cancellation - also during a
        backoff sleep - propagates at once and is never retried."""
        cfg = self.config
        start = _core.retry_now_ns(cfg.clock)
        if cfg.budget is not None:
            cfg.budget.deposit()
        exc: Optional[BaseException] = None
        result: Any = None
        try:
            result = await func(*args, **kwargs)
        except Exception as e:
            exc = e
        else:
            predicate = cfg.retry_on_result
            if predicate is None or not predicate(result):
                self._owner()._counts.add(0, 1)
                return cast(T, result)
        return cast(T, await self._resume_async(func, args, kwargs, exc, result, start))

    def _owner(self) -> "Retry":
        """Whose counters and events a call's loop updates."""
        return self

    def _dead_letter(self, loop: _Loop, func: Any, args: Tuple[Any, ...], kwargs: Any,
                     exc: Optional[BaseException], result: Any, is_async: bool) -> Any:
        from .dead_letters import make
        clock = self.config.clock
        return make(func, args, kwargs, exc, result, loop.attempt + 1, loop.start,
                    _core.retry_now_ns(clock), _REASON_KEYS.get(loop.verdict, "other"),
                    wall=clock is None or isinstance(clock, MonotonicClock))

    def _step_or_dead_letter(self, loop: _Loop, sink: Any, func: Any, args: Tuple[Any, ...], kwargs: Any,
                             exc: Optional[BaseException], result: Any) -> int:
        """loop.step, handing a DeadLetter to the sink when it gives up (the slow path only)."""
        try:
            return loop.step(exc, result)
        except BaseException as gone:
            if loop.verdict:
                from .dead_letters import deliver
                deliver(sink, self._dead_letter(loop, func, args, kwargs, exc, result, False), gone)
            raise

    async def _resume_async(self, func: Callable[..., Awaitable[Any]], args: Tuple[Any, ...],
                            kwargs: Any, exc: Optional[BaseException], result: Any, start: int) -> Any:
        """Continue an async call whose first attempt failed."""
        cfg = self.config
        loop = _Loop(cfg, start, self._owner())
        clock = cfg.clock
        sink = self.dead_letter
        try:
            while True:
                if sink is None:
                    delay_ns = loop.step(exc, result)
                else:
                    try:
                        delay_ns = loop.step(exc, result)
                    except BaseException as gone:
                        if loop.verdict:
                            from .dead_letters import deliver_async
                            await deliver_async(sink,
                                                self._dead_letter(loop, func, args, kwargs, exc, result, True),
                                                gone)
                        raise
                exc = result = None
                if isinstance(clock, ManualClock):
                    _core.retry_sleep(clock, delay_ns)
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(delay_ns / 1e9)
                try:
                    result = await func(*args, **kwargs)
                except Exception as e:  # BaseExceptions (CancelledError) propagate: never retried
                    exc = e
                    continue
                predicate = cfg.retry_on_result
                if predicate is None or not predicate(result):
                    loop.outcome = "successful_with_retry"
                    return result
        finally:
            loop.close()

    def _with_dead_letter(self, sink: Any, target: Any = None) -> "Retry":
        """A view of this Retry for a Policy's ``dead_letter``: counters and events
        stay this Retry's; its own sink, when it has one, wins."""
        if sink is None:
            return self
        return _RetryView(self, self.dead_letter or sink, target)

    # -- decorator --

    def __call__(self, func: Callable[P, T]) -> Callable[P, T]:
        """__call__(self, func)

        Decorate ``func`` (sync or async) so that every call is retried. The
        signature is kept (``inspect.signature``, type checkers); the wrapper of
        a coroutine function is a coroutine function. A generator function is
        refused with TypeError (its body runs after the call returns)."""
        if inspect_target(func, "Retry()"):
            call_async = self.call_async
            afunc = cast(Callable[..., Awaitable[Any]], func)

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await call_async(afunc, *args, **kwargs)
            finish(async_wrapper, func)
            async_wrapper.retry = self  # type: ignore[attr-defined]
            return cast(Callable[P, T], async_wrapper)
        wrapper = self._step(func)
        finish(wrapper, func)
        wrapper.retry = self
        return cast(Callable[P, T], wrapper)

    def _step(self, inner: Callable[..., Any], offset: int = 0) -> _core.PolicyStep:
        """The C layer calling ``inner`` with this Retry (a decorated function's
        wrapper, a layer of a Policy's sync chain)."""
        cfg = self.config
        return _core.PolicyStep(_core.STEP_RETRY, inner, self._resume, cfg.budget, cfg.retry_on_result, -1,
                                cfg.clock, self._owner()._counts)

    # -- inspection --

    def delays(self) -> Iterator[float]:
        """delays(self)

        The delays a call would sleep if every attempt failed at once (without
        Retry-After): ``max_attempts - 1`` of them, fewer when the deadline
        would be reached first. Jitter is drawn from the configured generator."""
        cfg = self.config
        policy = cfg._policy
        previous = 0.0
        spent = 0
        attempt = 0
        while True:
            remaining = _NEVER if cfg._deadline_ns == _NEVER else cfg._deadline_ns - spent
            verdict, delay, delay_ns = policy._next(attempt, previous, -1, remaining)
            if verdict != _SLEEP:
                return
            yield delay
            spent += delay_ns
            previous = delay
            attempt += 1


class _RetryView(Retry):
    """A Retry inside a Policy(dead_letter=...): the base's config, counters and
    events, the Policy's sink; the dead letter names the call the Policy ran."""

    __slots__ = ("base", "target")

    def __init__(self, base: Retry, sink: Any, target: Any = None) -> None:
        self.base = base
        self.target = target  # the decorated function (a policy decorator), else None
        self.config = base.config
        self.dead_letter = sink

    def _owner(self) -> Retry:
        return self.base

    def _dead_letter(self, loop: _Loop, func: Any, args: Tuple[Any, ...], kwargs: Any,
                     exc: Optional[BaseException], result: Any, is_async: bool) -> Any:
        if is_async and len(args) == 3 and not kwargs:  # the async layers' (fn, args, kwargs)
            func, args, kwargs = args
        elif self.target is not None:  # a policy decorator's chain: the call's own arguments
            func = self.target
        elif args:  # policy.call(fn, *args, **kwargs)
            func, args = args[0], args[1:]
        return Retry._dead_letter(self, loop, func, args, kwargs, exc, result, is_async)


def retry_with_backoff(config: Optional[RetryConfig] = None) -> Retry:
    """retry_with_backoff(config=None)

    Decorator: call the function up to ``config.max_attempts`` times, sleeping
    ``calculate_delay(attempt, config)`` after each retryable failure, and
    re-raise the last exception when attempts run out. Works on sync and async
    functions; a succeeding call goes through C only."""
    return Retry(config)


async def retry_async(func: Callable[P, Awaitable[T]], config: Optional[RetryConfig] = None,
                      *args: P.args, **kwargs: P.kwargs) -> T:
    """retry_async(func, config=None, *args, **kwargs)

    Await ``func(*args, **kwargs)`` with retries per ``config``, sleeping with
    asyncio. Cancellation propagates at once and is never retried."""
    return await Retry(config).call_async(func, *args, **kwargs)
