"""A plain WSGI app whose one limit lives in a pyresilience.SharedMemory
region, served by gunicorn with 4 sync workers in tests/test_shared_servers.py.
Each worker imports this module and opens the region by name (the directory
comes from PRS_SHARED_DIR, the limit from PRS_SHARED_LIMIT). A TokenBucket
without refill, so the workers together admit exactly the limit. Every
response, 200 or 429, says which worker served it in X-Pid."""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import pyresilience as pr
from pyresilience.web import Limit
from pyresilience.wsgi import RateLimitMiddleware

REGION = pr.SharedMemory("servers", directory=os.environ["PRS_SHARED_DIR"])
API = pr.TokenBucket(int(os.environ["PRS_SHARED_LIMIT"]), 0, shared=REGION, name="api")
# the test waits for one such file per worker before it fires
open(os.path.join(os.environ["PRS_SHARED_DIR"], f"ready.{os.getpid()}"), "w").close()


def inner(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


limited = RateLimitMiddleware(inner, [Limit(API, name="api")])


def app(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    def start(status: str, headers: Any, exc_info: Any = None) -> Any:
        return start_response(status, list(headers) + [("X-Pid", str(os.getpid()))], exc_info)
    return limited(environ, start)
