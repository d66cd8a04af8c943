"""A plain WSGI app behind pyresilience.wsgi.IdempotencyMiddleware, served by
gunicorn (one process, threads) in tests/test_idempotency_http.py: the twin of
idem_asgi.py."""
from __future__ import annotations

import json
import threading
from typing import Any, Callable, Iterable

import pyresilience as pr
from pyresilience.wsgi import IdempotencyMiddleware
from pyresilience.web import status_line

RUNS = {"charge": 0, "slow": 0, "fail": 0}
_gate = threading.Event()
_lock = threading.Lock()


def inner(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    path = environ["PATH_INFO"]
    status = 200
    with _lock:
        if path == "/slow":
            RUNS["slow"] += 1
        elif path == "/fail":
            RUNS["fail"] += 1
            status = 503
        elif path in ("/charge", "/strict"):
            RUNS["charge"] += 1
    if path == "/open":
        _gate.set()
    elif path == "/slow":
        _gate.wait(30)
    if status == 200 and environ["REQUEST_METHOD"] == "POST":
        status = 201
    out = json.dumps({"path": path, "run": dict(RUNS), "body": body.decode()}).encode()
    start_response(status_line(status), [("Content-Type", "application/json"), ("X-App", "yes")])
    return [out]


STORE = pr.MemoryIdempotencyStore(1000)
loose = IdempotencyMiddleware(inner, STORE)
strict = IdempotencyMiddleware(inner, STORE, required=True,
                               scope=lambda r: r.headers.get("x-client", "anon"))


def app(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/strict":
        return strict(environ, start_response)
    return loose(environ, start_response)
