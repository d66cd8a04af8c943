"""The metric families both exporters publish, read from the objects' snapshots
at scrape time (nothing here runs on a call path).

A family is (pattern, metric): Prometheus names it ``pyresilience_<pattern>_<metric>``
(counters with ``_total``), OpenTelemetry ``pyresilience.<pattern>.<metric>``.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from . import _registry

__all__ = ["Family", "FAMILIES", "collect"]

Labels = Tuple[Tuple[str, str], ...]


class Family(NamedTuple):
    pattern: str   # prometheus/otel subsystem: ratelimiter, circuitbreaker, ...
    metric: str
    type: str      # "counter" or "gauge"
    doc: str
    labels: Tuple[str, ...]


FAMILIES: Tuple[Family, ...] = (
    Family("ratelimiter", "calls", "counter",
           "Consuming decisions by outcome: admitted, rejected", ("name", "kind")),
    Family("ratelimiter", "available", "gauge",
           "Requests of weight 1 the limiter would admit now", ("name",)),
    Family("circuitbreaker", "calls", "counter",
           "Calls by outcome: successful, failed, slow, ignored, not_permitted", ("name", "kind")),
    Family("circuitbreaker", "state", "gauge",
           "1 for the breaker's current state, 0 for the others", ("name", "state")),
    Family("circuitbreaker", "failure_rate", "gauge",
           "Failure rate over the current window (0..1)", ("name",)),
    Family("circuitbreaker", "slow_call_rate", "gauge",
           "Slow-call rate over the current window (0..1)", ("name",)),
    Family("circuitbreaker", "transitions", "counter",
           "State transitions", ("name", "from_state", "to_state")),
    Family("retry", "calls", "counter",
           "Calls by outcome: successful_without_retry, successful_with_retry, "
           "failed_with_retry, failed_without_retry", ("name", "kind")),
    Family("retry", "attempts", "counter",
           "Retry attempts made (after a first attempt failed)", ("name",)),
    Family("retry", "gave_up", "counter", "Calls given up, by reason", ("name", "reason")),
    Family("bulkhead", "calls", "counter",
           "Calls by outcome: permitted, rejected, cancelled", ("name", "kind")),
    Family("bulkhead", "available_concurrent_calls", "gauge",
           "Free slots now", ("name",)),
    Family("bulkhead", "max_allowed_concurrent_calls", "gauge", "max_concurrent", ("name",)),
    Family("bulkhead", "waiting", "gauge", "Callers waiting for a slot now", ("name",)),
    Family("bulkhead", "waited_calls", "counter",
           "Callers that had to queue for a slot", ("name",)),
    Family("bulkhead", "held_seconds", "counter",
           "Slot-seconds held (the sum of every hold)", ("name",)),
    Family("queue", "items", "counter",
           "Items by fate: received, processed, dropped", ("name", "kind")),
    Family("queue", "producer_blocked", "counter", "Puts that had to wait for room", ("name",)),
    Family("queue", "size", "gauge", "Items in the queue now", ("name",)),
    Family("redis", "round_trips", "counter", "Calls made to Redis", ("name",)),
    Family("redis", "errors", "counter", "Calls to Redis that failed", ("name",)),
    Family("redis", "fallbacks", "counter",
           "Decisions a limiter's on_backend_error policy made because Redis failed",
           ("name", "policy")),
)

_BY_KEY = {(f.pattern, f.metric): f for f in FAMILIES}

_STATES = ("closed", "open", "half_open")

Out = Dict[Family, List[Tuple[Labels, float]]]


def _add(out: Out, pattern: str, metric: str, value: Any, *labels: str) -> None:
    """One sample of family (pattern, metric): ``labels`` are the values of the
    family's labels, in its order (the object's name first)."""
    family = _BY_KEY[pattern, metric]
    out[family].append((tuple(zip(family.labels, labels)), float(value)))


def _limiter(obj: Any, name: str, out: Out) -> None:
    m = obj.metrics  # one snapshot: counts kept in the core
    for kind, v in (("admitted", m.admitted), ("rejected", m.rejected)):
        _add(out, "ratelimiter", "calls", v, name, kind)
    if m.available == m.available:  # NaN for a KeyedLimiter: per key, nothing global
        _add(out, "ratelimiter", "available", m.available, name)


def _breaker(obj: Any, name: str, out: Out) -> None:
    m = obj.metrics
    for kind, v in (("successful", m.calls - m.failures), ("failed", m.failures),
                    ("slow", m.slow_calls), ("ignored", m.ignored), ("not_permitted", m.rejected)):
        _add(out, "circuitbreaker", "calls", v, name, kind)
    state = str(m.state)
    for s in _STATES:
        _add(out, "circuitbreaker", "state", s == state, name, s)
    _add(out, "circuitbreaker", "failure_rate", m.failure_rate, name)
    _add(out, "circuitbreaker", "slow_call_rate", m.slow_call_rate, name)
    for key, v in _registry.counts_of(obj).items():
        if key.startswith("transition:"):
            _, old, new = key.split(":")
            _add(out, "circuitbreaker", "transitions", v, name, old, new)


def _retry(obj: Any, name: str, out: Out) -> None:
    m = obj.metrics
    for kind in ("successful_without_retry", "successful_with_retry", "failed_with_retry",
                 "failed_without_retry"):
        _add(out, "retry", "calls", getattr(m, kind), name, kind)
    _add(out, "retry", "attempts", m.retries, name)
    for reason, v in sorted(m.gave_up.items()):
        _add(out, "retry", "gave_up", v, name, reason)


def _bulkhead(obj: Any, name: str, out: Out) -> None:
    m = obj.metrics
    for kind, v in (("permitted", m.acquired_count), ("rejected", m.rejected_count),
                    ("cancelled", m.cancelled_count)):
        _add(out, "bulkhead", "calls", v, name, kind)
    for metric, v in (("available_concurrent_calls", m.available),
                      ("max_allowed_concurrent_calls", m.max_concurrent), ("waiting", m.waiting_count),
                      ("waited_calls", m.waited_count), ("held_seconds", m.held_seconds_total)):
        _add(out, "bulkhead", metric, v, name)


def _queue(obj: Any, name: str, out: Out) -> None:
    m = obj.metrics
    for kind, v in (("received", m.items_received), ("processed", m.items_processed),
                    ("dropped", m.items_dropped)):
        _add(out, "queue", "items", v, name, kind)
    _add(out, "queue", "producer_blocked", m.producer_blocked_count, name)
    _add(out, "queue", "size", obj.qsize(), name)


def _redis(obj: Any, name: str, out: Out) -> None:
    m: Any = getattr(obj, "metrics", None)  # a RedisLimiterGroup has none (its members count)
    if hasattr(m, "round_trips"):
        _add(out, "redis", "round_trips", m.round_trips, name)
        _add(out, "redis", "errors", m.errors, name)
    elif hasattr(m, "fallbacks"):
        _add(out, "redis", "fallbacks", m.fallbacks, name, m.policy)


_READERS = {"limiter": _limiter, "breaker": _breaker, "retry": _retry, "bulkhead": _bulkhead,
            "queue": _queue, "redis": _redis}


def collect(objects: Optional[Iterable[Any]] = None) -> Out:
    """Every family's samples for `objects` (default: every live named object).
    An object whose snapshot fails (closed, being torn down) is skipped."""
    out: Out = {f: [] for f in FAMILIES}
    for obj in (_registry.live_named() if objects is None else objects):
        reader = _READERS.get(_registry.pattern_of(obj))
        if reader is None:
            continue
        try:
            reader(obj, _registry.name_of(obj), out)
        except Exception:  # a scrape never fails for one object
            continue
    return out
