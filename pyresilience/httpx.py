"""A Policy as an httpx transport: ``pip install pyresilience[httpx]``.

::

    policy = pr.Policy.recommended(timeout=10, retry=pr.Retry(max_attempts=4),
                                   breaker=pr.CircuitBreaker(), attempt_timeout=2)
    client = httpx.Client(transport=ResilientTransport(policy))
    async_client = httpx.AsyncClient(transport=AsyncResilientTransport(policy))

Each request runs through the policy; every attempt is one request on the
inner transport (default: httpx's own ``HTTPTransport``/``AsyncHTTPTransport``).

- A response whose status is in ``failure_statuses`` (default 5xx) is a
  failure for a CircuitBreaker; one in ``retry_statuses`` (429, 502, 503, 504)
  is retried, when the method is in ``retry_methods`` (the idempotent ones)
  and the body can be replayed. Others are returned as they are.
- The next delay honours ``Retry-After`` (seconds or an HTTP-date) or the ``t``
  parameter of the IETF ``RateLimit`` header (``respect_retry_after``); one
  beyond the policy's deadline or the Retry's ``max_retry_after`` ends the
  retries at once.
- When retries end on a retry status, the last response is returned
  (``return_last_response=False``: :class:`~pyresilience.RetryExhausted` with
  the response as ``last_result``).
- Each attempt's timeouts (connect, read, write, pool) are capped at the
  remaining deadline of the policy (its Timeouts, per attempt and total);
  when that cap ends a request, the caller sees
  :class:`~pyresilience.TimeoutExceeded`, chained from httpx's own
  ``TimeoutException``.
- A request that must not be repeated runs through the policy without its
  Retry strategies (a breaker, a limiter, a bulkhead, timeouts still apply).
"""
from __future__ import annotations

from typing import Any, Collection, Iterable

import httpx

from ._http import (DEFAULT_FAILURE_STATUSES, DEFAULT_RETRY_STATUSES, IDEMPOTENT, Classifier, Final, StatusFailure,
                    cap, deadline_error)
from .policy import Policy, deadline_remaining

__all__ = ["ResilientTransport", "AsyncResilientTransport", "IDEMPOTENT"]

_TIMEOUT_KEYS = ("connect", "read", "write", "pool")


def _cap_request(request: httpx.Request, left: float) -> bool:
    """Caps the request's timeouts at ``left`` seconds; True when one was lowered."""
    timeouts = dict(request.extensions.get("timeout") or {})
    capped = False
    for key in _TIMEOUT_KEYS:
        timeouts[key], c = cap(timeouts.get(key), left)
        capped = capped or c
    request.extensions = {**request.extensions, "timeout": timeouts}
    return capped


class _Base:
    transport: Any

    def __init__(self, policy: Policy, *, transport: Any = None,
                 retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
                 failure_statuses: Iterable[int] = DEFAULT_FAILURE_STATUSES,
                 retry_methods: Collection[str] = IDEMPOTENT, respect_retry_after: bool = True,
                 return_last_response: bool = True) -> None:
        self._c = Classifier(policy, retry_statuses, failure_statuses, retry_methods,
                             respect_retry_after, return_last_response)
        self.policy = policy
        self.transport = transport if transport is not None else self._default_transport()

    def _default_transport(self) -> Any:
        raise NotImplementedError

    def _may_retry(self, request: httpx.Request) -> bool:
        # bytes (or nothing) are held by the request; an iterator or a file is read once
        return request.method in self._c.retry_methods and request.stream.__class__ is httpx.ByteStream


class ResilientTransport(_Base, httpx.BaseTransport):
    """ResilientTransport(policy, *, transport=None, retry_statuses=(429, 502, 503, 504), failure_statuses=range(500, 600), retry_methods=IDEMPOTENT, respect_retry_after=True, return_last_response=True)

    An ``httpx.BaseTransport`` that sends each request through ``policy``
    (see the module's documentation); ``transport`` is the inner one
    (default ``httpx.HTTPTransport()``)."""

    def _default_transport(self) -> httpx.BaseTransport:
        return httpx.HTTPTransport()

    def _attempt(self, request: httpx.Request, may_retry: bool) -> httpx.Response:
        left = deadline_remaining()
        capped = left is not None and _cap_request(request, left)
        try:
            response: httpx.Response = self.transport.handle_request(request)
        except httpx.TimeoutException as exc:
            if capped:
                raise deadline_error(exc) from exc
            raise
        if response.status_code in self._c.watched:
            response.read()  # the connection goes back before a retry; the body stays readable
            response.close()
            return self._c.check(response, may_retry)  # type: ignore[no-any-return]
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        c = self._c
        may_retry = self._may_retry(request)
        chain = c.sync if may_retry else c.sync_once
        try:
            result = chain(self._attempt, request, may_retry)
        except StatusFailure as exc:
            return c.exhausted(exc)  # type: ignore[no-any-return]
        return result if result.__class__ is not Final else result.error.response  # type: ignore[no-any-return]

    def close(self) -> None:
        self.transport.close()


class AsyncResilientTransport(_Base, httpx.AsyncBaseTransport):
    """AsyncResilientTransport(policy, *, transport=None, retry_statuses=(429, 502, 503, 504), failure_statuses=range(500, 600), retry_methods=IDEMPOTENT, respect_retry_after=True, return_last_response=True)

    The ``httpx.AsyncBaseTransport`` form of :class:`ResilientTransport`
    (default inner transport ``httpx.AsyncHTTPTransport()``). A Timeout of the
    policy cancels the request at its deadline."""

    def _default_transport(self) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport()

    async def _attempt(self, request: httpx.Request, may_retry: bool) -> httpx.Response:
        left = deadline_remaining()
        capped = left is not None and _cap_request(request, left)
        try:
            response: httpx.Response = await self.transport.handle_async_request(request)
        except httpx.TimeoutException as exc:
            if capped:
                raise deadline_error(exc) from exc
            raise
        if response.status_code in self._c.watched:
            await response.aread()
            await response.aclose()
            return self._c.check(response, may_retry)  # type: ignore[no-any-return]
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        c = self._c
        may_retry = self._may_retry(request)
        chain = c.async_ if may_retry else c.async_once
        try:
            result = await chain(self._attempt, (request, may_retry), {})
        except StatusFailure as exc:
            return c.exhausted(exc)  # type: ignore[no-any-return]
        return result if result.__class__ is not Final else result.error.response  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self.transport.aclose()
