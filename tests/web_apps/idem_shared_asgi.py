"""The ASGI twin of idem_shared_wsgi.py, served by `uvicorn --workers 2`:
pyresilience.asgi.IdempotencyMiddleware over a SharedIdempotencyStore in a
region every worker opens under PRS_SHARED_DIR."""
from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pyresilience as pr
from pyresilience.asgi import IdempotencyMiddleware

DIR = os.environ["PRS_SHARED_DIR"]
REGION = pr.SharedMemory("idem", directory=DIR, size=4 << 20)
STORE = pr.SharedIdempotencyStore(REGION, max_keys=256, max_value_bytes=2048)
open(os.path.join(DIR, f"ready.{os.getpid()}"), "w").close()


async def inner(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    fd = os.open(os.path.join(DIR, "runs.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {body.decode()}\n".encode())
    os.close(fd)
    await asyncio.sleep(0.2)
    out = json.dumps({"ran_in": os.getpid(), "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


idem = IdempotencyMiddleware(inner, STORE, in_progress_ttl=30.0)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    pid = str(os.getpid()).encode()

    async def send_pid(msg: Any) -> None:
        if msg["type"] == "http.response.start":
            msg = dict(msg, headers=list(msg.get("headers", [])) + [(b"x-pid", pid)])
        await send(msg)
    await idem(scope, receive, send_pid)
