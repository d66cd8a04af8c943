"""A Starlette app behind pyresilience.asgi middleware, served by uvicorn in
tests/test_web_servers.py. Every test there uses its own path (and so its
own rule): the counts are exact because no rule refills within a test."""
from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Optional

import pyresilience as pr
from pyresilience.asgi import ConcurrencyLimitMiddleware, RateLimitMiddleware
from pyresilience.web import Limit, Request as View, client_ip, header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

HOUR = 3600.0


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk{i}\n".encode()
            await asyncio.sleep(0)
    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    msg = await websocket.receive_text()
    await websocket.send_text("echo:" + msg)
    await websocket.close()


_gate: Optional[asyncio.Event] = None


async def slow(request: Request) -> Response:
    """Holds its bulkhead slot until /release is called (at most 10 s)."""
    global _gate
    if _gate is None:
        _gate = asyncio.Event()
    try:
        await asyncio.wait_for(_gate.wait(), 10)
    except asyncio.TimeoutError:
        pass
    return PlainTextResponse("slow done")


async def release(request: Request) -> Response:
    if _gate is not None:
        _gate.set()
    return PlainTextResponse("released")


BULKHEAD = pr.Bulkhead("slow", 1, max_wait_seconds=0)


async def active(request: Request) -> Response:
    return PlainTextResponse(str(BULKHEAD.active_count))


paths = ["/exact", "/never", "/ip/untrusted", "/ip/trusted", "/aon/x", "/ex/limited", "/ex/health",
         "/custom", "/free"]
inner = Starlette(routes=[Route(p, hello) for p in paths] + [
    Route("/stream", stream), Route("/slow", slow), Route("/release", release),
    Route("/active", active), WebSocketRoute("/ws", echo)])


def on_limited(request: View, decision: Any) -> Any:
    if request.path == "/custom":
        return 418, {"X-Custom": "yes"}, b"custom teapot"
    return None


LIMITS = [
    Limit(pr.FixedWindow(3, HOUR), paths=["/exact"], name="exact"),
    Limit(pr.TokenBucket(1, 0), paths=["/never"], name="never"),
    Limit(pr.KeyedLimiter(pr.FixedWindow, 2, HOUR), key=client_ip(trusted_proxies=["10.0.0.0/8"]),
          paths=["/ip/untrusted"], name="ip-untrusted"),
    Limit(pr.KeyedLimiter(pr.FixedWindow, 2, HOUR), key=client_ip(trusted_proxies=["127.0.0.1"]),
          paths=["/ip/trusted"], name="ip-trusted"),
    Limit(pr.FixedWindow(5, HOUR), paths=["/aon/"], name="aon-global"),
    Limit(pr.KeyedLimiter(pr.FixedWindow, 2, HOUR), key=header("X-User"), paths=["/aon/"],
          name="aon-user", partition_key=True),
    Limit(pr.FixedWindow(1, HOUR), paths=["/ex/*"], exempt=lambda r: r.path == "/ex/health", name="ex"),
    Limit(pr.FixedWindow(1, HOUR), paths=["/custom"], name="custom"),
    Limit(pr.FixedWindow(100, HOUR), paths=["/stream"], name="stream"),
    Limit(pr.FixedWindow(2, HOUR), paths=["/ws"], name="ws"),
]

app = RateLimitMiddleware(ConcurrencyLimitMiddleware(inner, BULKHEAD, paths=["/slow"]), LIMITS,
                          on_limited=on_limited)


# -- a Redis rule, when the test gives a server (PRS_WEB_REDIS_URL) ---------------------------
# ``redis_app``: GET /redis is limited by a RedisRateLimiter (3 per hour, shared key) with
# a long timeout, so a paused server keeps its requests waiting; GET /free is not.
_redis_url = os.environ.get("PRS_WEB_REDIS_URL")
if _redis_url:
    _backend = pr.RedisBackend(_redis_url, timeout=3.0, connect_timeout=3.0)
    _redis_rule = Limit(pr.RedisRateLimiter(_backend, "fixed_window", limit=3, window=HOUR,
                                            key_prefix=f"webtest{os.getpid()}:",
                                            on_backend_error="allow"),
                        key=lambda r: "all", paths=["/redis"], name="redis")
    redis_app = RateLimitMiddleware(
        Starlette(routes=[Route("/redis", hello), Route("/free", hello)]), [_redis_rule])
