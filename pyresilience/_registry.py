"""The per-object observation state and the weak registry of live named objects.

Nothing here is on a call path: an object's entry is made the first time it is
named or observed (``obj.name = ...``, ``add_event_listener``), and read by
``obj.name``, the exporters and event dispatch. Entries die with their object
(a weak reference's callback removes them), so the registry never keeps an
object alive.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

__all__ = ["Obs", "obs_of", "get_obs", "name_of", "set_name", "live_named", "PATTERNS", "count",
           "counts_of"]

# pattern of each facade class name (the label of the logger, the exporters' families)
PATTERNS: Dict[str, str] = {
    "TokenBucket": "limiter", "GCRA": "limiter", "LeakyBucket": "limiter",
    "FixedWindow": "limiter", "SlidingWindowLog": "limiter", "SlidingWindowCounter": "limiter",
    "KeyedLimiter": "limiter", "KeyedLimiterView": "limiter", "LimiterGroup": "limiter",
    "CircuitBreaker": "breaker", "Retry": "retry", "Bulkhead": "bulkhead",
    "BoundedQueue": "queue", "BackpressureQueue": "queue",
    "RedisBackend": "redis", "RedisRateLimiter": "redis", "RedisLimiterGroup": "redis",
}


def pattern_of(obj: Any) -> str:
    for cls in type(obj).__mro__:
        p = PATTERNS.get(cls.__name__)
        if p is not None:
            return p
    return "other"


class Obs:
    """What observation keeps for one object: its name, its listeners (a tuple
    replaced whole, so dispatch reads it without a lock) and the state of its
    rate-limited log lines."""

    __slots__ = ("name", "named", "pattern", "listeners", "log_next", "log_suppressed", "ref",
                 "counts", "repoint")

    def __init__(self, obj: Any, name: str, named: bool) -> None:
        self.name = name
        self.named = named
        self.pattern = pattern_of(obj)
        self.listeners: Tuple[Callable[[Any], Any], ...] = ()
        # rate-limited lines: per event kind, the monotonic time before which
        # further lines are suppressed, and how many were
        self.log_next: Dict[str, float] = {}
        self.log_suppressed: Dict[str, int] = {}
        self.ref: Optional["weakref.ref[Any]"] = None
        # counters kept in Python, for the patterns whose counting runs in
        # Python on a slow path anyway (retry): key -> count
        self.counts: Dict[str, int] = {}
        # decorators that bound the object's methods when they were made: weak
        # references to functions re-binding them, called when its class changes
        self.repoint: List["weakref.ref[Callable[[], None]]"] = []


_lock = threading.Lock()
_entries: Dict[int, Obs] = {}
_counters: Dict[str, "itertools.count[int]"] = {}


def _forget(key: int) -> Callable[[Any], None]:
    # No lock here: this runs whenever the object dies, possibly from a garbage
    # collection started while this thread holds _lock. dict.pop is atomic.
    def callback(_ref: Any, _entries: Dict[int, Obs] = _entries) -> None:
        _entries.pop(key, None)
    return callback


def get_obs(obj: Any) -> Optional[Obs]:
    """The entry of obj, or None when it was never named nor observed."""
    return _entries.get(id(obj))


def _default_name(obj: Any) -> str:
    cls = type(obj).__name__
    with _lock:
        counter = _counters.setdefault(cls, itertools.count(1))
        return f"{cls}-{next(counter)}"


def obs_of(obj: Any, name: Optional[str] = None) -> Obs:
    """The entry of obj, made on first use (with `name`, or a default one:
    the class name and a per-class sequence number, ``TokenBucket-3``)."""
    key = id(obj)
    o = _entries.get(key)
    if o is not None:
        return o
    given = name if name is not None else getattr(type(obj), "_native_name", lambda _o: None)(obj)
    label = given if given is not None else _default_name(obj)
    with _lock:
        o = _entries.get(key)
        if o is None:
            o = Obs(obj, label, given is not None)
            o.ref = weakref.ref(obj, _forget(key))
            _entries[key] = o
    return o


def name_of(obj: Any) -> str:
    """The label of obj: its name, given or default (made on first use)."""
    o = _entries.get(id(obj))
    return o.name if o is not None else obs_of(obj).name


def set_name(obj: Any, name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    o = obs_of(obj, name)
    o.name = name
    o.named = True


def live_named() -> Iterator[Any]:
    """Every live object that was given a name (a snapshot: safe while others
    are made or collected)."""
    entries: List[Obs] = list(_entries.copy().values())  # copy: atomic against the callbacks
    for o in entries:
        if o.named and o.ref is not None:
            obj = o.ref()
            if obj is not None:
                yield obj


def count(obj: Any, key: str, n: int = 1) -> None:
    """Add n to obj's counter `key` (exact under threads)."""
    o = obs_of(obj)
    with _lock:
        o.counts[key] = o.counts.get(key, 0) + n


def count_many(obj: Any, items: List[Tuple[str, int]]) -> None:
    """Add each (key, n) of items to obj's counters, in one update."""
    o = _entries.get(id(obj))
    if o is None:
        o = obs_of(obj)
    with _lock:
        c = o.counts
        for key, n in items:
            c[key] = c.get(key, 0) + n


def has_listeners(obj: Any) -> bool:
    """Whether obj has event listeners now (cheap: for the callers' fast path)."""
    o = _entries.get(id(obj))
    return o is not None and bool(o.listeners)


def counts_of(obj: Any) -> Dict[str, int]:
    o = _entries.get(id(obj))
    if o is None:
        return {}
    with _lock:
        return dict(o.counts)
