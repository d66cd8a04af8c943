"""A Policy as a requests transport adapter: ``pip install pyresilience[requests]``.

::

    session = requests.Session()
    session.mount("https://", ResilientAdapter(policy))
    session.mount("http://", ResilientAdapter(policy))

The same behaviour as :class:`pyresilience.httpx.ResilientTransport`: failure
statuses are failures for a breaker, retry statuses are retried for the
idempotent methods when the body can be replayed (bytes, str or nothing; not
a generator or a file), ``Retry-After`` and the IETF ``RateLimit`` header set
the next delay, the last response is returned when retries end (or
RetryExhausted with ``return_last_response=False``), and each attempt's
connect and read timeouts are capped at the policy's remaining deadline
(TimeoutExceeded, chained from requests' ``Timeout``, when that cap ends it).
urllib3's own retries are off: the policy is the only one that retries.
"""
from __future__ import annotations

from typing import Any, Collection, Iterable, Optional, Tuple

import requests
from requests.adapters import HTTPAdapter

from ._http import (DEFAULT_FAILURE_STATUSES, DEFAULT_RETRY_STATUSES, IDEMPOTENT, Classifier, StatusFailure,
                    cap, deadline_error)
from .policy import Policy, deadline_remaining

__all__ = ["ResilientAdapter", "IDEMPOTENT"]


def _split(timeout: Any) -> Tuple[Optional[float], Optional[float]]:
    if timeout is None:
        return None, None
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    if hasattr(timeout, "connect_timeout"):  # a urllib3 Timeout
        return timeout.connect_timeout, timeout.read_timeout
    return timeout, timeout


class ResilientAdapter(HTTPAdapter):
    """ResilientAdapter(policy, *, retry_statuses=(429, 502, 503, 504), failure_statuses=range(500, 600), retry_methods=IDEMPOTENT, respect_retry_after=True, return_last_response=True, **adapter_kwargs)

    An ``HTTPAdapter`` that sends each request through ``policy`` (see the
    module's documentation). ``adapter_kwargs`` go to HTTPAdapter
    (``pool_connections``, ``pool_maxsize``, ...); ``max_retries`` is 0."""

    def __init__(self, policy: Policy, *, retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
                 failure_statuses: Iterable[int] = DEFAULT_FAILURE_STATUSES,
                 retry_methods: Collection[str] = IDEMPOTENT, respect_retry_after: bool = True,
                 return_last_response: bool = True, **adapter_kwargs: Any) -> None:
        self._c = Classifier(policy, retry_statuses, failure_statuses, retry_methods,
                             respect_retry_after, return_last_response)
        self.policy = policy
        adapter_kwargs["max_retries"] = 0
        super().__init__(**adapter_kwargs)

    def __getstate__(self) -> Any:
        state = super().__getstate__()
        state["_c"] = self._c
        state["policy"] = self.policy
        return state

    def _attempt(self, request: requests.PreparedRequest, may_retry: bool, kwargs: Any) -> Any:
        left = deadline_remaining()
        capped = False
        if left is not None:
            connect, read = _split(kwargs.get("timeout"))
            connect, c1 = cap(connect, left)
            read, c2 = cap(read, left)
            kwargs = {**kwargs, "timeout": (connect, read)}
            capped = c1 or c2
        try:
            response = HTTPAdapter.send(self, request, **kwargs)
        except requests.exceptions.Timeout as exc:
            if capped:
                raise deadline_error(exc) from exc
            raise
        if response.status_code in self._c.watched:
            response.content  # read it all: the connection goes back before a retry
            return self._c.check(response, may_retry)
        return response

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        c = self._c
        body = request.body
        may_retry = (request.method or "GET").upper() in c.retry_methods and (
            body is None or isinstance(body, (bytes, str)))
        chain = c.sync if may_retry else c.sync_once
        kwargs = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert, "proxies": proxies}
        try:
            return c.outcome(chain(self._attempt, request, may_retry, kwargs))  # type: ignore[no-any-return]
        except StatusFailure as exc:
            return c.exhausted(exc)  # type: ignore[no-any-return]
