"""Events, event listeners and log lines of every pattern.

``obj.add_event_listener(callback)`` makes ``callback(event)`` run for each
discrete event of ``obj`` (an :class:`Event`): a breaker's state changes and
rejections, a limiter's or a bulkhead's rejections, a retry's retries and
give-ups, a queue's drops. Listeners run in the thread that caused the event,
after it, with no lock held; one that raises is logged (``pyresilience.<pattern>``
at ERROR, with the traceback) and never reaches the caller.

Zero cost when off: an object with no listener runs its C methods untouched.
Attaching the first listener switches the object (and only it) to an observed
subclass of its class whose rejecting methods report what they refuse;
removing the last switches it back. State changes (breaker) and retries and
give-ups (retry) are reported on paths that are slow anyway, listener or not,
so their log lines need no listener.

Log lines (``logging.getLogger("pyresilience.breaker")``, ``.limiter``,
``.retry``, ``.bulkhead``, ``.queue``, ``.redis``; silent unless the
application configures logging): a breaker opening and a retry giving up at
WARNING, other state changes at INFO, each retry, rejection and drop at DEBUG.
Rejections and drops are rate-limited to one line per object and kind per
second; the next line says how many were suppressed.
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Type

from . import _registry
from ._decorate import same_body
from ._registry import Obs, get_obs, obs_of

__all__ = ["Event", "EventListener", "add_event_listener", "remove_event_listener", "emit",
           "LOGGERS"]

EventListener = Callable[["Event"], Any]

# a library's loggers stay silent until the application configures logging
logging.getLogger("pyresilience").addHandler(logging.NullHandler())

LOGGERS: Dict[str, logging.Logger] = {
    p: logging.getLogger(f"pyresilience.{p}")
    for p in ("breaker", "limiter", "retry", "bulkhead", "queue", "redis", "other")
}

# kinds whose lines are rate-limited (they can come by the thousand per second)
_RATE_LIMITED = frozenset({"rejected", "dropped"})
LOG_INTERVAL = 1.0  # seconds between two rate-limited lines of one object and kind


class Event:
    """One discrete event: ``kind``, the ``name`` of its source, its
    ``pattern`` (``"breaker"``, ``"limiter"``, ...), ``time`` (``time.time()``
    when it happened), the ``source`` object, and the details of its kind:

    - ``"state_change"`` (breaker): ``old_state``, ``new_state``;
    - ``"rejected"`` (breaker, limiter, bulkhead): ``retry_after`` (seconds,
      None when the method that refused does not compute it), ``exception``
      (what the caller got, if raised);
    - ``"retry"`` (retry): ``attempt`` (0-based: the attempt that failed),
      ``delay`` (seconds before the next one), ``exception``;
    - ``"gave_up"`` (retry): ``attempt`` (attempts made), ``reason``, ``exception``;
    - ``"dropped"`` (queue): ``reason`` (the strategy), ``exception``. A
      ``drop_oldest`` eviction is seen as the rise of ``items_dropped`` around
      the put that made it (the observed puts of such a queue take turns, so
      each eviction is reported once).

    Fields that do not apply are None."""

    __slots__ = ("kind", "name", "pattern", "time", "source", "_details")

    kind: str
    name: str
    pattern: str
    time: float
    source: Any
    if TYPE_CHECKING:  # the details: read from _details (None when absent)
        retry_after: Optional[float]
        old_state: Any
        new_state: Any
        attempt: Optional[int]
        delay: Optional[float]
        exception: Optional[BaseException]
        reason: Optional[str]

    def __init__(self, kind: str, name: str, pattern: str, source: Any = None,
                 **details: Any) -> None:
        self.kind = kind
        self.name = name
        self.pattern = pattern
        self.time = _now()
        self.source = source
        for k in details:
            if k not in _DETAILS:
                raise TypeError(f"Event() got an unexpected detail {k!r}")
        self._details = details

    def __getattr__(self, attr: str) -> Any:  # only for attributes not set: the details
        if attr in _DETAILS:
            return self._details.get(attr)
        raise AttributeError(f"'Event' object has no attribute {attr!r}")

    def details(self) -> Dict[str, Any]:
        """The details of this event that are set, by name."""
        return {k: v for k, v in self._details.items() if v is not None}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.details().items())
        return f"Event(kind={self.kind!r}, name={self.name!r}, pattern={self.pattern!r}{extra})"


_DETAILS = frozenset({"retry_after", "old_state", "new_state", "attempt", "delay", "exception",
                      "reason"})
_now = time.time


# -- log lines -----------------------------------------------------------------

def _level(kind: str, new_state: Any = None) -> int:
    if kind == "state_change":
        return logging.WARNING if str(new_state) == "open" else logging.INFO
    if kind == "gave_up":
        return logging.WARNING
    return logging.DEBUG


def _message(ev: Event) -> str:
    label = f"{ev.pattern} {ev.name!r}"
    if ev.kind == "state_change":
        return f"{label}: {ev.old_state} -> {ev.new_state}"
    if ev.kind == "retry":
        return (f"{label}: attempt {ev.attempt} failed ({ev.exception!r}), "
                f"retrying in {ev.delay:.3f} s")
    if ev.kind == "gave_up":
        return f"{label}: gave up after {ev.attempt} attempt(s): {ev.reason} ({ev.exception!r})"
    if ev.kind == "rejected":
        ra = "" if ev.retry_after is None else f" (retry after {ev.retry_after:.3f} s)"
        return f"{label}: rejected{ra}"
    if ev.kind == "dropped":
        return f"{label}: dropped an item ({ev.reason})"
    return f"{label}: {ev.kind}"


_log_lock = threading.Lock()


def _log(o: Obs, ev: Event) -> None:
    logger = LOGGERS.get(ev.pattern) or LOGGERS["other"]
    level = _level(ev.kind, ev.new_state)
    msg = _message(ev)
    if ev.kind in _RATE_LIMITED:
        now = time.monotonic()
        with _log_lock:
            if now < o.log_next.get(ev.kind, 0.0):
                o.log_suppressed[ev.kind] = o.log_suppressed.get(ev.kind, 0) + 1
                return
            o.log_next[ev.kind] = now + LOG_INTERVAL
            suppressed = o.log_suppressed.pop(ev.kind, 0)
        if suppressed:
            msg += f" ({suppressed} similar line{'s' if suppressed != 1 else ''} suppressed)"
    logger.log(level, msg)


# -- dispatch ------------------------------------------------------------------------

def emit(obj: Any, kind: str, **details: Any) -> None:
    """Report an event of obj: log it, then call each listener (no lock held;
    a listener that raises is logged and skipped). Never raises. With no
    listener and its log level off, it returns before making anything."""
    try:
        o = get_obs(obj)
        pattern = o.pattern if o is not None else _registry.pattern_of(obj)
        logger = LOGGERS.get(pattern) or LOGGERS["other"]
        logging_on = logger.isEnabledFor(_level(kind, details.get("new_state")))
        if not logging_on and (o is None or not o.listeners):
            return
        if o is None:
            o = obs_of(obj)
        ev = Event(kind, o.name, pattern, obj, **details)
        if logging_on:
            _log(o, ev)
        for listener in o.listeners:  # a tuple read once: add/remove do not disturb it
            try:
                listener(ev)
            except Exception:
                logger.exception("event listener %r raised on %r", listener, ev)
    except Exception:  # never let observation break the caller
        logging.getLogger("pyresilience").exception("could not report a %s event", kind)


# Serialises add/remove, so that the class an object ends with always matches
# whether it has listeners (the registry's own lock is taken inside it).
_listen_lock = threading.RLock()


def add_event_listener(obj: Any, callback: EventListener) -> None:
    """Call ``callback(event)`` for each discrete event of obj."""
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    o = obs_of(obj)
    with _listen_lock:
        o.listeners = o.listeners + (callback,)
        _observe(obj, True)


def remove_event_listener(obj: Any, callback: EventListener) -> None:
    """Stop calling callback (the last one added that equals it); ValueError if absent."""
    o = get_obs(obj)
    with _listen_lock:
        ls = list(o.listeners) if o is not None else []
        for i in range(len(ls) - 1, -1, -1):
            if ls[i] == callback:
                del ls[i]
                break
        else:
            raise ValueError(f"{callback!r} is not an event listener of {obj!r}")
        assert o is not None
        o.listeners = tuple(ls)
        if not ls:
            _observe(obj, False)


# -- observed variants -----------------------------------------------------------------
#
# An observed object's class is a subclass of its own with the rejecting methods
# wrapped; __class__ is switched on the first listener and back on the last, so
# an object nobody listens to runs its C methods with nothing added.

# method name -> how it reports a refusal: "bool" (returns False), "decision"
# (returns a Decision that is not allowed), or an exception class name (raises it)
_REJECTING: Dict[str, Dict[str, str]] = {
    # (with-blocks and decorators go through these methods)
    "limiter": {"allow": "bool", "check": "decision", "acquire": "RateLimitExceeded",
                "acquire_async": "RateLimitExceeded"},
    "breaker": {"allow_request": "bool", "_acquire": "token", "_acquire_async": "token",
                "call": "CircuitOpenError"},
    "bulkhead": {"try_acquire": "bool", "acquire": "BulkheadFullError",
                 "__enter__": "BulkheadFullError", "_full_error": "token"},
    "queue": {"put": "drop", "put_nowait": "drop", "put_async": "drop"},
}
_REJECTING["redis"] = _REJECTING["limiter"]  # RedisRateLimiter, RedisLimiterGroup

_drop_locks: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()


def _drop_lock(q: Any) -> threading.Lock:
    lock = _drop_locks.get(q)
    if lock is None:
        with _registry._lock:
            lock = _drop_locks.setdefault(q, threading.Lock())
    return lock


_variants: Dict[type, type] = {}
_base_of: Dict[type, type] = {}


def _exc_type(name: str) -> Type[BaseException]:
    from . import errors
    return getattr(errors, name)  # type: ignore[no-any-return]


def _wrapper(base: type, meth: str, how: str, pattern: str) -> Callable[..., Any]:
    fn = getattr(base, meth)
    if how == "bool":
        def m_bool(self: Any, *a: Any, **kw: Any) -> Any:
            r = fn(self, *a, **kw)
            if r is False:
                emit(self, "rejected")
            return r
        return m_bool
    if how == "decision":
        def m_dec(self: Any, *a: Any, **kw: Any) -> Any:
            d = fn(self, *a, **kw)
            if not d.allowed:
                emit(self, "rejected", retry_after=d.retry_after)
            return d
        return m_dec
    if how == "token" and inspect.iscoroutinefunction(fn):
        async def m_token_async(self: Any, *a: Any, **kw: Any) -> Any:
            t = await fn(self, *a, **kw)
            if t.__class__ is not tuple:
                emit(self, "rejected", retry_after=getattr(t, "retry_after", None), exception=t)
            return t
        return m_token_async
    if how == "token":
        def m_token(self: Any, *a: Any, **kw: Any) -> Any:
            t = fn(self, *a, **kw)
            if t.__class__ is not tuple:
                emit(self, "rejected", retry_after=getattr(t, "retry_after", None), exception=t)
            return t
        return m_token
    if how == "drop":
        from .errors import QueueFullError
        oldest = "drop_oldest"

        def m_drop(self: Any, *a: Any, **kw: Any) -> Any:
            strategy = self._strategy_name
            if strategy == oldest:
                # never blocks: evictions are the rise of items_dropped, exact
                # because observed puts of this queue take turns
                with _drop_lock(self):
                    before = self._stats()[2]
                    r = fn(self, *a, **kw)
                    evicted = self._stats()[2] - before
                for _ in range(evicted):
                    emit(self, "dropped", reason=oldest)
                return r
            try:
                r = fn(self, *a, **kw)
            except QueueFullError as e:
                emit(self, "dropped", reason=strategy, exception=e)
                raise
            if r is False:
                emit(self, "dropped", reason=strategy)
            return r

        if inspect.iscoroutinefunction(fn):
            async def m_drop_async(self: Any, *a: Any, **kw: Any) -> Any:
                if self._strategy_name == oldest:
                    # never waits: tasks of one loop do not interleave here
                    before = self._stats()[2]
                    r = await fn(self, *a, **kw)
                    for _ in range(self._stats()[2] - before):
                        emit(self, "dropped", reason=oldest)
                    return r
                try:
                    r = await fn(self, *a, **kw)
                except QueueFullError as e:
                    emit(self, "dropped", reason=self._strategy_name, exception=e)
                    raise
                if r is False:
                    emit(self, "dropped", reason=self._strategy_name)
                return r
            return m_drop_async
        return m_drop
    exc = _exc_type(how)
    if inspect.iscoroutinefunction(fn):
        async def m_raise_async(self: Any, *a: Any, **kw: Any) -> Any:
            try:
                return await fn(self, *a, **kw)
            except exc as e:
                emit(self, "rejected", retry_after=getattr(e, "retry_after", None), exception=e)
                raise
        return m_raise_async

    def m_raise(self: Any, *a: Any, **kw: Any) -> Any:
        try:
            r = fn(self, *a, **kw)
        except exc as e:
            emit(self, "rejected", retry_after=getattr(e, "retry_after", None), exception=e)
            raise
        return r
    return m_raise


def breaker_call(self: Any, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """call(self, func, /, *args, **kwargs)

    CircuitBreaker.call written with the Python-level steps, ``_acquire`` then
    ``_record``: what an observed breaker runs (its ``_acquire`` reports a
    rejection, also when a fallback answers it) and a shared breaker's path
    while the shared state is open or half-open."""
    token = self._acquire()
    if token.__class__ is not tuple:
        fallback = self.fallback
        if fallback is None:
            raise token
        return fallback()
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        self._record(token, exc)
        raise
    self._record(token, None, result)
    return result


def _variant(cls: type, pattern: str) -> type:
    v = _variants.get(cls)
    if v is not None:
        return v
    ns: Dict[str, Any] = {"__slots__": (), "__module__": cls.__module__,
                          "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                          "_prs_plain": cls}  # the class a C wrapper's fast path serves
    for meth, how in _REJECTING.get(pattern, {}).items():
        if not hasattr(cls, meth):
            continue
        if pattern == "breaker" and meth == "call":
            ns[meth] = same_body(breaker_call, "call", cls.call.__doc__, cls.__qualname__)  # type: ignore[attr-defined]
            continue
        w = _wrapper(cls, meth, how, pattern)
        w.__name__ = meth
        w.__doc__ = getattr(getattr(cls, meth), "__doc__", None)
        ns[meth] = w
    v = type(cls.__name__, (cls,), ns)
    with _registry._lock:
        v = _variants.setdefault(cls, v)
        _base_of[v] = cls
    return v


def _observe(obj: Any, on: bool) -> None:
    """Switch obj to its observed variant (on) or back to its own class."""
    o = obs_of(obj)
    pattern = o.pattern
    if pattern not in _REJECTING:
        return  # everything it reports goes through slow paths already
    cls = type(obj)
    if on and cls not in _base_of:
        obj.__class__ = _variant(cls, pattern)
    elif not on and cls in _base_of:
        obj.__class__ = _base_of[cls]
    else:
        return
    _repoint(o)


def _repoint(o: Obs) -> None:
    live = []
    for ref in o.repoint:
        fn = ref()
        if fn is not None:
            fn()
            live.append(ref)
    o.repoint = live


def switch_class(obj: Any, cls: type) -> None:
    """Give obj the class cls (a path switch: RedisCircuitBreaker's local and
    shared paths), keeping it observed when it is: its observed variant of cls
    then. Decorators bound to obj's methods are re-pointed."""
    with _listen_lock:
        o = get_obs(obj)
        observed = o is not None and bool(o.listeners) and o.pattern in _REJECTING
        target = _variant(cls, o.pattern) if observed and o is not None else cls
        if type(obj) is target:
            return
        obj.__class__ = target
        if o is not None:
            _repoint(o)


def on_class_change(obj: Any, repoint: Callable[[], None]) -> None:
    """Call repoint() each time obj's class changes (observed or not, path
    switched) while repoint lives: for decorators that bound obj's methods
    when they were made (no lookup per call). The caller keeps repoint alive
    (an attribute of its wrapper)."""
    o = obs_of(obj)
    with _listen_lock:
        o.repoint = [r for r in o.repoint if r() is not None] + [weakref.ref(repoint)]


def base_class(cls: type) -> type:
    """The class an observed variant stands for (cls itself otherwise)."""
    return _base_of.get(cls, cls)


def listeners_of(obj: Any) -> Tuple[EventListener, ...]:
    o = get_obs(obj)
    return o.listeners if o is not None else ()


class EventSource:
    """The methods every pattern shares (mixed into the facade classes)."""

    __slots__ = ()

    def add_event_listener(self, callback: EventListener) -> None:
        """add_event_listener(self, callback)

        Call ``callback(event)`` (a :class:`pyresilience.Event`) for each
        discrete event of this object, with no lock held; an exception from it
        is logged and never reaches the caller."""
        add_event_listener(self, callback)

    def remove_event_listener(self, callback: EventListener) -> None:
        """remove_event_listener(self, callback)

        Stop calling ``callback``; ValueError if it was not added."""
        remove_event_listener(self, callback)

    @property
    def event_listeners(self) -> Tuple[EventListener, ...]:
        """The event listeners, in the order they were added."""
        return listeners_of(self)


class Named(EventSource):
    """A settable ``name`` for the classes whose C type has none."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The name used as the label of logs, events and metrics: the one
        assigned (``obj.name = "api"``, which also makes the exporters see the
        object), else a stable default (``TokenBucket-3``)."""
        return _registry.name_of(self)

    @name.setter
    def name(self, value: str) -> None:
        _registry.set_name(self, value)
