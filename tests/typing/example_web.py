"""Typed use of the web middleware: checked by mypy --strict in test_web.py."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import pyresilience as pr
from pyresilience import asgi, web, wsgi
from pyresilience.web import Limit, client_ip, header


async def inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def wsgi_inner(environ: Any, start_response: Any) -> list[bytes]:
    start_response("204 No Content", [])
    return []


def api_key(request: web.Request) -> Optional[str]:
    return request.headers.get("x-api-key")


def on_limited(request: web.Request, decision: pr.Decision) -> Optional[Tuple[int, dict[str, str], str]]:
    if request.path.startswith("/internal/"):
        return 503, {"Retry-After": "1"}, "busy"
    return None


rules = [
    Limit(pr.GCRA(100, 200), name="global"),
    Limit(pr.KeyedLimiter(pr.FixedWindow, 10, 60), key=client_ip(trusted_proxies=["10.0.0.0/8"]),
          paths=["/api/"], methods=["POST"], name="per-ip"),
    Limit(pr.KeyedLimiter(pr.TokenBucket, 5, 1), key=api_key, cost=lambda r: 2, partition_key=True),
    Limit(pr.KeyedLimiter(pr.TokenBucket, 5, 1), key=header("x-user"), exempt=lambda r: r.path == "/health"),
]
app = asgi.RateLimitMiddleware(inner, rules, headers="both", reset="delta", on_limited=on_limited)
guarded = asgi.ConcurrencyLimitMiddleware(app, pr.Bulkhead("web", 8, max_wait_seconds=1.0), paths=["/api/"])
wapp = wsgi.RateLimitMiddleware(wsgi_inner, [Limit(pr.FixedWindow(10, 1))], headers="legacy")
wguarded = wsgi.ConcurrencyLimitMiddleware(wapp, pr.Bulkhead("wsgi", 4))
view: web.Request = web.Request("GET", "/api/x", {"X-API-Key": "k"}, "10.0.0.1")
key: Optional[web.Key] = api_key(view)
assert key == "k"
