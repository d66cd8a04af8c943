"""A plain ASGI app whose one limit lives in a pyresilience.SharedMemory
region, served by `uvicorn --workers 4` in tests/test_shared_servers.py: the
twin of shared_wsgi.py (PRS_SHARED_DIR, PRS_SHARED_LIMIT, X-Pid on every
response)."""
from __future__ import annotations

import os
from typing import Any

import pyresilience as pr
from pyresilience.asgi import RateLimitMiddleware
from pyresilience.web import Limit

REGION = pr.SharedMemory("servers", directory=os.environ["PRS_SHARED_DIR"])
API = pr.TokenBucket(int(os.environ["PRS_SHARED_LIMIT"]), 0, shared=REGION, name="api")
# the test waits for one such file per worker before it fires
open(os.path.join(os.environ["PRS_SHARED_DIR"], f"ready.{os.getpid()}"), "w").close()


async def inner(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


limited = RateLimitMiddleware(inner, [Limit(API, name="api")])
PID = str(os.getpid()).encode()


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # served with --lifespan off

    async def tagged(msg: Any) -> None:
        if msg["type"] == "http.response.start":
            msg = dict(msg, headers=list(msg.get("headers", [])) + [(b"x-pid", PID)])
        await send(msg)
    await limited(scope, receive, tagged)
