"""ASGI middleware: rate limits and concurrency limits for any ASGI app
(Starlette, FastAPI, Quart, Django's ASGI handler, ...). No framework needed.

    from pyresilience import FixedWindow, KeyedLimiter
    from pyresilience.web import Limit, client_ip
    from pyresilience.asgi import RateLimitMiddleware

    app = RateLimitMiddleware(app, [
        Limit(KeyedLimiter(FixedWindow, 100, 60), key=client_ip(), name="per-ip"),
    ])

The event loop is never blocked: in-process rules decide in C in well under
a microsecond; a request matching a Redis rule is decided in a worker thread.
Streaming responses pass through untouched (the headers go on the start
message); websocket connections are limited when they connect (a denied one
gets the 429 response where the server supports ASGI's websocket denial
response, else a close with code 1008) and never afterwards.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable, List, MutableMapping, Optional, Tuple, Union

from .bulkhead import Bulkhead
from .errors import BulkheadFullError
from .web import (Engine, HeaderList, Limit, OnLimited, Outcome, Request, _gate_filters, _ScopeRequest,
                  busy_response)

__all__ = ["RateLimitMiddleware", "ConcurrencyLimitMiddleware", "IdempotencyMiddleware"]

# the Idempotency-Key header (IETF draft): pyresilience._idempotency_http
from ._idempotency_http import AsgiIdempotencyMiddleware as IdempotencyMiddleware  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _encode(headers: HeaderList) -> List[Tuple[bytes, bytes]]:
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]


async def _respond(send: Send, status: int, raw: List[Tuple[bytes, bytes]], body: bytes,
                   websocket: bool = False) -> None:
    prefix = "websocket.http.response" if websocket else "http.response"
    await send({"type": prefix + ".start", "status": status, "headers": raw})
    await send({"type": prefix + ".body", "body": body})


class RateLimitMiddleware:
    """RateLimitMiddleware(app, limits, *, headers="both", reset="epoch", on_limited=None)

    Every request is checked against the :class:`~pyresilience.web.Limit`
    rules it matches, all or nothing (a request denied by one rule takes
    nothing from the others). Admitted: the app runs and its response gets
    the rate-limit headers of the most restrictive rule. Denied: 429 with
    ``Retry-After`` (whole seconds, rounded up; omitted when the request can
    never be admitted) and an RFC 9457 ``application/problem+json`` body, or
    the ``(status, headers, body)`` that ``on_limited(request, decision)``
    returns (None: the default answer).

    ``headers``: "legacy" (X-RateLimit-Limit/Remaining/Reset), "draft" (the
    IETF draft-10 RateLimit and RateLimit-Policy fields), "both" or "none".
    ``reset``: "epoch" (X-RateLimit-Reset in Unix seconds) or "delta" (seconds
    from now)."""

    def __init__(self, app: ASGIApp, limits: Union[Limit, Iterable[Limit]], *,
                 headers: str = "both", reset: str = "epoch",
                 on_limited: Optional[OnLimited] = None) -> None:
        self.app = app
        self.engine = Engine(limits, headers=headers, reset=reset, on_limited=on_limited, raw=True)
        self._fast = self.engine.fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        fast = self._fast
        if kind == "http" and fast is not None:
            res = fast()
            req: Optional[Request] = None
        elif kind == "http" or kind == "websocket":
            engine = self.engine
            req = _ScopeRequest(scope)
            matched = engine.match(req)
            if not matched:
                await self.app(scope, receive, send)
                return
            if engine._any_remote and engine.remote(matched):
                loop = asyncio.get_running_loop()
                res = await loop.run_in_executor(None, engine.decide, matched)
            else:
                res = engine.decide(matched)
        else:
            await self.app(scope, receive, send)
            return
        if res.__class__ is list:
            if kind == "websocket" or not res:
                await self.app(scope, receive, send)
                return
            extra: Any = res

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = dict(message)
                    h = message.get("headers")
                    message["headers"] = [*h, *extra] if h else extra
                await send(message)
            await self.app(scope, receive, send_with_headers)
            return
        assert isinstance(res, Outcome)
        if req is None:
            req = Request.from_scope(scope)
        status, headers, body = self.engine.denied_response(req, res)
        if kind == "websocket":
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await _respond(send, status, headers, body, websocket=True)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await _respond(send, status, headers, body)


class ConcurrencyLimitMiddleware:
    """ConcurrencyLimitMiddleware(app, bulkhead, *, paths=None, methods=None)

    At most ``bulkhead.max_concurrent`` matching HTTP requests run at once;
    the others wait, first come first served and without blocking the event
    loop, up to the bulkhead's ``max_wait_seconds``, then get 503 with
    ``Retry-After`` (the bulkhead's estimate; 1 s when it has none) and an
    RFC 9457 body. A slot is held until the app returns (a streaming
    response: until its last chunk is sent). ``paths`` and ``methods`` filter
    as in :class:`~pyresilience.web.Limit`; websockets pass through."""

    def __init__(self, app: ASGIApp, bulkhead: Bulkhead, *, paths: Optional[Iterable[str]] = None,
                 methods: Optional[Iterable[str]] = None) -> None:
        self._match_path, self._methods = _gate_filters(bulkhead, paths, methods)
        self.app = app
        self.bulkhead = bulkhead

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
                self._methods is not None and scope.get("method") not in self._methods) or (
                self._match_path is not None and not self._match_path(scope["path"])):
            await self.app(scope, receive, send)
            return
        b = self.bulkhead
        try:
            await b.acquire_async()
        except BulkheadFullError as exc:
            status, headers, body = busy_response(exc.retry_after)
            await _respond(send, status, _encode(headers), body)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            b.release()

