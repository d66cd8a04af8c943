"""Per-route rate limits for FastAPI, thin over :mod:`pyresilience.web`.

    from fastapi import Depends, FastAPI
    from pyresilience import FixedWindow, KeyedLimiter
    from pyresilience.web import Limit, client_ip
    from pyresilience.fastapi import RateLimit, RateLimited, problem_response

    app = FastAPI()
    app.add_exception_handler(RateLimited, problem_response)  # RFC 9457 bodies
    search_limit = RateLimit(Limit(KeyedLimiter(FixedWindow, 10, 60), key=client_ip()))

    @app.get("/search", dependencies=[Depends(search_limit)])
    async def search(q: str) -> dict: ...

The dependency sets the rate-limit headers on the response FastAPI builds
from the endpoint's return value (an endpoint that returns a Response
object itself bypasses them: use the ASGI middleware for those). A denied
request raises :class:`RateLimited`, an ``HTTPException`` (429, with
Retry-After): FastAPI answers it as ``{"detail": ...}``, or as an RFC 9457
``application/problem+json`` body with the handler above. Every rule is
checked; the middleware's path and method filters apply too. A Redis rule
is decided in a worker thread, never on the event loop.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, List, Tuple, Union

from fastapi import HTTPException
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response

from .web import Engine, Limit, Outcome, Request

__all__ = ["RateLimit", "RateLimited", "problem_response"]


class RateLimited(HTTPException):
    """RateLimited(status_code, headers, body)

    Raised by :class:`RateLimit` for a denied request: an ``HTTPException``
    carrying the status (429), the headers (rate-limit fields, Retry-After)
    and ``body``, the RFC 9457 problem document (bytes)."""

    def __init__(self, status_code: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        try:
            detail: Any = json.loads(body)
        except ValueError:
            detail = body.decode("utf-8", "replace")
        # FastAPI writes its own body ({"detail": ...}): its own length and type too
        own = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-type")]
        super().__init__(status_code=status_code, detail=detail, headers=dict(own))
        self.body = body
        self.header_list = headers


async def problem_response(request: StarletteRequest, exc: Exception) -> Response:
    """An exception handler answering :class:`RateLimited` with its own body
    (``application/problem+json``) and headers:
    ``app.add_exception_handler(RateLimited, problem_response)``."""
    assert isinstance(exc, RateLimited)
    media = dict((k.lower(), v) for k, v in exc.header_list).get("content-type")
    headers = [(k, v) for k, v in exc.header_list if k.lower() not in ("content-type", "content-length")]
    return Response(exc.body, status_code=exc.status_code, headers=dict(headers), media_type=media)


class RateLimit:
    """RateLimit(*rules, headers="both", reset="epoch", on_limited=None)

    A FastAPI dependency (``Depends(RateLimit(...))``) checking ``rules``
    (:class:`~pyresilience.web.Limit`) all or nothing for each request of the
    routes that use it. See :mod:`pyresilience.fastapi`."""

    def __init__(self, *rules: Limit, headers: str = "both", reset: str = "epoch",
                 on_limited: Any = None) -> None:
        self.engine = Engine(list(rules), headers=headers, reset=reset, on_limited=on_limited)

    async def __call__(self, request: StarletteRequest, response: Response) -> None:
        engine = self.engine
        req = Request.from_scope(request.scope)
        matched = engine.match(req)
        if not matched:
            return
        res: Union[List[Tuple[Any, Any]], Outcome]
        if engine.remote(matched):
            res = await asyncio.get_running_loop().run_in_executor(None, engine.decide, matched)
        else:
            res = engine.decide(matched)
        if isinstance(res, Outcome):
            status, headers, body = engine.denied_response(req, res)
            raise RateLimited(status, headers, body)
        for name, value in res:
            response.headers[name] = value


