"""pyresilience: resilience patterns for Python services on a fast C core.

Rate limiters (TokenBucket, GCRA, ...), circuit breakers, retries with backoff,
bulkheads and backpressure queues. Every object is thread-safe; blocking calls
release the GIL and are interrupted by Ctrl-C; async forms never block the loop.
"""
from __future__ import annotations

from . import errors
from ._core import Decision, ManualClock, MonotonicClock
from .errors import (
    BackendError,
    BulkheadFullError,
    CircuitBreakerOpen,
    CircuitOpenError,
    QueueClosedError,
    QueueEmptyError,
    QueueFullError,
    RateLimitExceeded,
    ResilienceError,
    RetryExhausted,
)
from .errors import PolicyWarning, TimeoutExceeded
from .errors import IdempotencyInProgress, IdempotencyKeyMismatch
from .limiters import GCRA, LimiterMetrics, TokenBucket

# -- rate limiter family --
from .limiters import FixedWindow, LeakyBucket, SlidingWindowCounter, SlidingWindowLog
from .keyed import KeyedLimiter, KeyedLimiterView, LimiterGroup

# -- circuit breaker --
from .breaker import CircuitBreaker, CircuitBreakerMetrics, CircuitState

# -- retry --
from .retry import (
    Retry,
    RetryBudget,
    RetryBudgetMetrics,
    RetryConfig,
    RetryMetrics,
    RetryState,
    calculate_delay,
    retry_async,
    retry_with_backoff,
)

# -- bulkhead and queues --
from .bulkhead import Bulkhead, BulkheadMetrics
from .queues import BackpressureMetrics, BackpressureQueue, BackpressureStrategy, BoundedQueue

# -- redis --
from .redis import (LeaseConfig, RedisBackend, RedisBackendMetrics, RedisLimiterGroup,
                    RedisLimiterMetrics, RedisRateLimiter)

# -- composition: policies, timeouts, deadlines --
from .policy import Fallback, Limit, Policy, Timeout, deadline_remaining
# -- observing: events (pr.prometheus, pr.otel load on first use) --
from .idempotency import Idempotency, MemoryIdempotencyStore
from ._idempotency_redis import RedisIdempotencyStore
from ._idempotency_shared import SharedIdempotencyStore
from .dead_letters import DeadLetter, RedisDeadLetters
from . import events
from .events import Event
# -- shared memory: one limit across worker processes --
from .shared_memory import SharedMemory

__version__ = "0.1.0"


def __dir__() -> list[str]:
    """The public names only (the implementation submodules stay reachable)."""
    return sorted([*__all__, "__version__"])


__all__ = [
    "BackendError",
    "BulkheadFullError",
    "CircuitBreakerOpen",
    "CircuitOpenError",
    "Decision",
    "GCRA",
    "ManualClock",
    "MonotonicClock",
    "QueueClosedError",
    "QueueEmptyError",
    "QueueFullError",
    "RateLimitExceeded",
    "ResilienceError",
    "RetryExhausted",
    "TokenBucket",
    "errors",
    # -- rate limiter family --
    "FixedWindow",
    "LeakyBucket",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "KeyedLimiter",
    "KeyedLimiterView",
    "LimiterGroup",
    # -- circuit breaker --
    "CircuitBreaker",
    "CircuitBreakerMetrics",
    "CircuitState",
    # -- retry --
    "Retry",
    "RetryBudget",
    "RetryBudgetMetrics",
    "RetryConfig",
    "RetryState",
    "calculate_delay",
    "retry_async",
    "retry_with_backoff",
    # -- bulkhead and queues --
    "BackpressureMetrics",
    "BackpressureQueue",
    "BackpressureStrategy",
    "BoundedQueue",
    "Bulkhead",
    "BulkheadMetrics",
    # -- redis --
    "LeaseConfig",
    "RedisBackend",
    "RedisBackendMetrics",
    "RedisLimiterGroup",
    "RedisLimiterMetrics",
    "RedisRateLimiter",
    # -- composition: policies, timeouts, deadlines --
    "Fallback",
    "Limit",
    "Policy",
    "PolicyWarning",
    "Timeout",
    "TimeoutExceeded",
    "deadline_remaining",
    # -- idempotency --
    "Idempotency",
    "IdempotencyInProgress",
    "IdempotencyKeyMismatch",
    "MemoryIdempotencyStore",
    "RedisIdempotencyStore",
    "SharedIdempotencyStore",
    "DeadLetter",
    "RedisDeadLetters",
    # -- observing --
    "Event",
    "LimiterMetrics",
    "RetryMetrics",
    "events",
    # -- shared memory --
    "SharedMemory",
]

# -- web middleware: pr.web, pr.asgi, pr.wsgi load on first use --
# (hidden from type checkers, so a misspelt name stays an error there; typed
# code imports the submodule: ``from pyresilience import web``)
import typing as _typing  # noqa: E402

if not _typing.TYPE_CHECKING:
    _LAZY_SUBMODULES = ("web", "asgi", "wsgi", "httpx", "requests", "prometheus", "otel")

    def __getattr__(name: str) -> object:
        if name in _LAZY_SUBMODULES:
            import importlib
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
