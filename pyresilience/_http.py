"""What the HTTP client adapters share (pyresilience.httpx, pyresilience.requests).

An HTTP response is a value, but a policy reacts to exceptions. Each attempt
therefore turns a response into one of:

- the response itself (a success);
- :class:`StatusRetry` (a retry status of a request that may be repeated):
  a failure for a breaker, retried by a Retry, its ``retry_after`` read from
  ``Retry-After`` (seconds or an HTTP-date) or the ``t`` parameter of the IETF
  ``RateLimit`` header;
- :class:`StatusFailure` (a failure status that is not retried): a failure for
  a breaker, which a layer right inside each Retry turns back into a result
  (:class:`Final`), so no Retry repeats it.

Outside the policy the adapter hands the response back (or raises
RetryExhausted with it when ``return_last_response=False``).

A request that must not be repeated (a method outside ``retry_methods``, a body
that cannot be replayed) runs through the same policy without its Retry
strategies.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Collection, Iterable, Optional, Tuple

from .errors import RetryExhausted
from .policy import _APPLY, Async, Policy, Sync, _async_chain, _sync_chain

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""The methods retried by default (RFC 9110 section 9.2.2: idempotent)."""

DEFAULT_RETRY_STATUSES = (429, 502, 503, 504)
DEFAULT_FAILURE_STATUSES = range(500, 600)

# RateLimit: "default";r=0;t=10 (draft-ietf-httpapi-ratelimit-headers-10: the
# t parameter is the seconds until the quota resets)
_RATELIMIT_T = re.compile(r";\s*t\s*=\s*([0-9]+)")


class StatusFailure(Exception):
    """A response with a failure status (internal: never reaches the caller)."""

    def __init__(self, response: Any, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = response
        self.status = status


class StatusRetry(StatusFailure):
    """A response with a retry status; ``retry_after`` is read by a Retry."""

    def __init__(self, response: Any, status: int, retry_after: Any) -> None:
        super().__init__(response, status)
        self.retry_after = retry_after


class Final:
    """A StatusFailure turned back into a result inside a Retry."""

    __slots__ = ("error",)

    def __init__(self, error: StatusFailure) -> None:
        self.error = error


def retry_after_of(headers: Any) -> Any:
    """The delay a response asks for: its Retry-After (as given: seconds or an
    HTTP-date, parsed by the Retry), else the ``t`` of its RateLimit header
    (seconds), else None."""
    value = headers.get("retry-after")
    if value is not None:
        return value
    rl = headers.get("ratelimit")
    if rl is not None:
        m = _RATELIMIT_T.search(rl)
        if m is not None:
            return float(m.group(1))
    return None


def _final_layer(inner: Sync) -> Sync:
    def final_layer(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except StatusRetry:
            raise
        except StatusFailure as exc:
            return Final(exc)
    return final_layer


def _final_async_layer(inner: Async) -> Async:
    async def final_layer(fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Any) -> Any:
        try:
            return await inner(fn, args, kwargs)
        except StatusRetry:
            raise
        except StatusFailure as exc:
            return Final(exc)
    return final_layer


class Classifier:
    """The adapter's settings and its two chains (with and without retries)."""

    def __init__(self, policy: Policy, retry_statuses: Iterable[int], failure_statuses: Iterable[int],
                 retry_methods: Collection[str], respect_retry_after: bool,
                 return_last_response: bool) -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a pyresilience.Policy, not {type(policy).__name__}: {policy!r}")
        self.policy = policy
        self.retry_statuses = frozenset(retry_statuses)
        self.failure_statuses = frozenset(failure_statuses)
        self.watched = self.failure_statuses | self.retry_statuses  # the statuses check() judges
        self.retry_methods = frozenset(m.upper() for m in retry_methods)
        self.respect_retry_after = bool(respect_retry_after)
        self.return_last_response = bool(return_last_response)
        strategies = policy.strategies
        self.sync = _sync_chain(strategies, _APPLY, 1, inside_retry=_final_layer)
        self.async_ = _async_chain(strategies, inside_retry=_final_async_layer)
        self.sync_once = _sync_chain(strategies, _APPLY, 1, skip_retry=True)
        self.async_once = _async_chain(strategies, skip_retry=True)

    def check(self, response: Any, may_retry: bool) -> Any:
        """The attempt's response (a status in ``watched``: the adapter tests
        that first), or raise what the policy should see."""
        status = response.status_code
        if status in self.retry_statuses and may_retry:
            raise StatusRetry(response, status,
                              retry_after_of(response.headers) if self.respect_retry_after else None)
        if status in self.failure_statuses or status in self.retry_statuses:
            raise StatusFailure(response, status)
        return response

    def outcome(self, result: Any) -> Any:
        """What the caller gets from a result of the chain."""
        if result.__class__ is Final:
            return result.error.response
        return result

    def exhausted(self, exc: StatusFailure) -> Any:
        """What the caller gets when a status failure left the policy."""
        if self.return_last_response or not isinstance(exc, StatusRetry):
            return exc.response
        raise RetryExhausted(f"retries exhausted: the last response was HTTP {exc.status}",
                             last_result=exc.response) from exc


def deadline_error(exc: BaseException) -> BaseException:
    """TimeoutExceeded for a client timeout that the policy's deadline set
    (the caller raises it ``from`` the client's error)."""
    from .errors import TimeoutExceeded
    return TimeoutExceeded(f"the request ran out of the policy's deadline ({type(exc).__name__})")


def cap(value: Optional[float], left: Optional[float]) -> Tuple[Optional[float], bool]:
    """A client timeout capped at the deadline's remaining seconds: (timeout, capped)."""
    if left is None:
        return value, False
    if value is None or left < value:
        return max(left, 1e-6), True
    return value, False
