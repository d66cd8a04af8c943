"""Exceptions of pyresilience.

Every exception the library raises on purpose is a :class:`ResilienceError`.
The C core raises fresh instances of these classes (never a stored one), so
tracebacks never grow across repeated raises.
"""
from __future__ import annotations

import asyncio
import queue
from typing import Any, Optional

__all__ = [
    "ResilienceError",
    "RateLimitExceeded",
    "CircuitOpenError",
    "CircuitBreakerOpen",
    "BulkheadFullError",
    "QueueFullError",
    "QueueClosedError",
    "QueueEmptyError",
    "RetryExhausted",
    "BackendError",
    "TimeoutExceeded",
    "PolicyWarning",
    "IdempotencyInProgress",
    "IdempotencyKeyMismatch",
]


class ResilienceError(Exception):
    """ResilienceError(message='')

    Base class of every error pyresilience raises on purpose (a rate limit hit,
    an open circuit, a full bulkhead or queue, exhausted retries, a failing
    backend)."""


class RateLimitExceeded(ResilienceError):
    """RateLimitExceeded(message='rate limit exceeded', retry_after=0.0, decision=None)

    A limiter refused a request. ``retry_after`` is the wait in seconds after
    which it would be admitted (``math.inf`` when never); ``decision`` is the
    :class:`~pyresilience.Decision` behind the refusal (or None)."""

    def __init__(self, message: str = "rate limit exceeded", retry_after: float = 0.0,
                 decision: Any = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.decision = decision


class CircuitOpenError(ResilienceError):
    """CircuitOpenError(message='circuit is open', retry_after=0.0, name=None)

    A circuit breaker rejected a call. ``retry_after`` is the number of seconds
    until a trial call is allowed; ``name`` the breaker's name."""

    def __init__(self, message: str = "circuit is open", retry_after: float = 0.0,
                 name: Optional[str] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.name = name


CircuitBreakerOpen = CircuitOpenError


class BulkheadFullError(ResilienceError):
    """BulkheadFullError(message='bulkhead is full', retry_after=None, name=None)

    No bulkhead slot freed in time. ``retry_after`` is an estimate in seconds
    of when one may free (a Bulkhead always sets it; None only when the error
    is made by hand without one)."""

    def __init__(self, message: str = "bulkhead is full", retry_after: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.name = name


class QueueFullError(ResilienceError, queue.Full, asyncio.QueueFull):
    """QueueFullError(message='Queue is full')

    A put on a full queue with the ERROR strategy, put_nowait on a full queue,
    or a BoundedQueue.put that found no room in time. A subclass of
    :class:`queue.Full` and :class:`asyncio.QueueFull`, so the stdlib's
    ``except`` clauses catch it."""

    def __init__(self, message: str = "Queue is full") -> None:
        super().__init__(message)


class QueueClosedError(ResilienceError):
    """QueueClosedError(message='Queue is closed')

    A put on a closed queue, or a get on a closed queue that has been drained."""

    def __init__(self, message: str = "Queue is closed") -> None:
        super().__init__(message)


class QueueEmptyError(ResilienceError, queue.Empty, asyncio.QueueEmpty):
    """QueueEmptyError(message='Queue is empty')

    A get that timed out (or get_nowait on an empty queue). A subclass of
    :class:`queue.Empty` and :class:`asyncio.QueueEmpty`, so the stdlib's
    ``except`` clauses catch it."""

    def __init__(self, message: str = "Queue is empty") -> None:
        super().__init__(message)


class RetryExhausted(ResilienceError):
    """RetryExhausted(message='retries exhausted', last_result=None, attempts=0)

    Every attempt returned a result that ``retry_on_result`` rejected.
    ``last_result`` is the final result and ``attempts`` how many were made."""

    def __init__(self, message: str = "retries exhausted", last_result: Any = None,
                 attempts: int = 0) -> None:
        super().__init__(message)
        self.last_result = last_result
        self.attempts = attempts


class BackendError(ResilienceError):
    """BackendError(message='backend failure')

    The distributed backend (Redis) failed, timed out or is unavailable."""


class TimeoutExceeded(ResilienceError, TimeoutError):
    """TimeoutExceeded(message='timeout exceeded', timeout=None)

    A :class:`~pyresilience.Timeout` of a policy ended a call (async: the
    awaitable was cancelled; sync: the call returned after its deadline, or a
    ``thread=True`` call was abandoned). ``timeout`` is the Timeout's seconds.
    A subclass of the builtin :class:`TimeoutError`."""

    def __init__(self, message: str = "timeout exceeded", timeout: Optional[float] = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class PolicyWarning(UserWarning):
    """A :class:`~pyresilience.Policy` was built in an order known to be wrong
    (the message says why and which order is better)."""


class IdempotencyInProgress(ResilienceError):
    """IdempotencyInProgress(message='idempotent call in progress', key=None)

    An :class:`~pyresilience.Idempotency` call found the first call with its
    key still running (and its ``wait`` ran out, or there was none)."""

    def __init__(self, message: str = "idempotent call in progress", key: Any = None) -> None:
        super().__init__(message)
        self.key = key


class IdempotencyKeyMismatch(ResilienceError):
    """IdempotencyKeyMismatch(message='idempotency key reused with another payload', key=None)

    An idempotency key was reused with a payload whose fingerprint differs from
    the first call's."""

    def __init__(self, message: str = "idempotency key reused with another payload",
                 key: Any = None) -> None:
        super().__init__(message)
        self.key = key
