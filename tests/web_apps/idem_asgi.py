"""A plain ASGI app behind pyresilience.asgi.IdempotencyMiddleware, served by
uvicorn in tests/test_idempotency_http.py. POST /charge counts its runs;
POST /slow waits for GET /open; GET /count says how many charges ran."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pyresilience as pr
from pyresilience.asgi import IdempotencyMiddleware

RUNS = {"charge": 0, "slow": 0, "fail": 0}
_gate: "asyncio.Event | None" = None


async def inner(scope: Any, receive: Any, send: Any) -> None:
    global _gate
    if scope["type"] != "http":
        return
    if _gate is None:
        _gate = asyncio.Event()
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    status, out = 200, b""
    if path == "/open":
        _gate.set()
    elif path == "/slow":
        RUNS["slow"] += 1
        await _gate.wait()
    elif path == "/fail":
        RUNS["fail"] += 1
        status = 503
    elif path in ("/charge", "/strict"):
        RUNS["charge"] += 1
    out = json.dumps({"path": path, "run": dict(RUNS), "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 201 if status == 200 and path != "/count"
                and scope["method"] == "POST" else status,
                "headers": [(b"content-type", b"application/json"), (b"x-app", b"yes")]})
    await send({"type": "http.response.body", "body": out})


STORE = pr.MemoryIdempotencyStore(1000)
loose = IdempotencyMiddleware(inner, STORE)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/strict":
        await strict(scope, receive, send)
    else:
        await loose(scope, receive, send)


strict = IdempotencyMiddleware(inner, STORE, required=True,
                               scope=lambda r: r.headers.get("x-client", "anon"))
