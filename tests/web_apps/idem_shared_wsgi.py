"""A WSGI app behind pyresilience.wsgi.IdempotencyMiddleware whose records
live in a pyresilience.SharedMemory region (SharedIdempotencyStore), served by
gunicorn with 4 sync workers in tests/test_idempotency_shared.py. Every worker
opens the region under PRS_SHARED_DIR; each run of the app appends a line to
runs.log there (so the test counts runs across workers), and every response,
replayed or not, names the worker that sent it in X-Pid."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable

import pyresilience as pr
from pyresilience.wsgi import IdempotencyMiddleware

DIR = os.environ["PRS_SHARED_DIR"]
REGION = pr.SharedMemory("idem", directory=DIR, size=4 << 20)
STORE = pr.SharedIdempotencyStore(REGION, max_keys=256, max_value_bytes=2048)
open(os.path.join(DIR, f"ready.{os.getpid()}"), "w").close()


def inner(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    fd = os.open(os.path.join(DIR, "runs.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {body.decode()}\n".encode())
    os.close(fd)
    time.sleep(0.2)  # a slow first request: the others meet it in progress or replay it
    out = json.dumps({"ran_in": os.getpid(), "body": body.decode()}).encode()
    start_response("201 Created", [("Content-Type", "application/json")])
    return [out]


idem = IdempotencyMiddleware(inner, STORE, in_progress_ttl=30.0)


def app(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    def start(status: str, headers: Any, exc_info: Any = None) -> Any:
        return start_response(status, list(headers) + [("X-Pid", str(os.getpid()))], exc_info)
    return idem(environ, start)
