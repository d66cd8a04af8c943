"""pyresilience.web / asgi / wsgi / fastapi / flask, in process.

ASGI apps are called through httpx.ASGITransport, WSGI apps through
httpx.WSGITransport; limiters run on a ManualClock where time matters, so
every figure is exact. The same middleware behind real servers is in
test_web_servers.py."""
from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import pyresilience as pr
from pyresilience import web
from pyresilience.web import Limit, client_ip, header

httpx = pytest.importorskip("httpx")
http_sf = pytest.importorskip("http_sf")

from pyresilience import asgi, wsgi  # noqa: E402

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
BODY = {"type": "http.response.body", "body": b"ok"}


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send(START)  # one shared dict: the middleware must not mutate it
    await send(BODY)


def wsgi_app(environ: Any, start_response: Any) -> List[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def get(app: Any, path: str = "/", n: int = 1, **kw: Any) -> List[Any]:
    async def main() -> List[Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=kw.pop("client", ("192.0.2.1", 1234))),
                                     base_url="http://t") as c:
            return [await c.request(kw.get("method", "GET"), path, headers=kw.get("headers"))
                    for _ in range(n)]
    return asyncio.run(main())


def wget(app: Any, path: str = "/", n: int = 1, **kw: Any) -> List[Any]:
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as c:
        return [c.request(kw.get("method", "GET"), path, headers=kw.get("headers")) for _ in range(n)]


def sf(r: Any, name: str) -> Any:
    return http_sf.parse(r.headers[name].encode(), tltype="list")


# -- headers ------------------------------------------------------------------------

def test_headers_both_epoch(clock: pr.ManualClock) -> None:
    app = asgi.RateLimitMiddleware(plain_app, [Limit(pr.FixedWindow(3, 60, clock=clock), name="api")])
    before = time.time()
    rs = get(app, n=4)
    assert [r.status_code for r in rs] == [200, 200, 200, 429]
    for i, r in enumerate(rs[:3]):
        assert r.headers["x-ratelimit-limit"] == "3"
        assert r.headers["x-ratelimit-remaining"] == str(2 - i)
        assert before + 59 <= int(r.headers["x-ratelimit-reset"]) <= time.time() + 61
        assert sf(r, "ratelimit") == [("api", {"r": 2 - i, "t": 60})]
        assert sf(r, "ratelimit-policy") == [("api", {"q": 3, "w": 60})]
    r = rs[3]
    assert r.headers["retry-after"] == "60"
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == QUOTA_EXCEEDED and body["status"] == 429
    assert body["violated-policies"] == ["api"]
    assert START["headers"] == [(b"content-type", b"text/plain")]  # not mutated


@pytest.mark.parametrize("mode,present,absent", [
    ("legacy", ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"], ["ratelimit", "ratelimit-policy"]),
    ("draft", ["ratelimit", "ratelimit-policy"], ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]),
    ("none", [], ["ratelimit", "ratelimit-policy", "x-ratelimit-limit"]),
])
def test_header_modes(clock: pr.ManualClock, mode: str, present: List[str], absent: List[str]) -> None:
    for make, call in ((asgi.RateLimitMiddleware, get), (wsgi.RateLimitMiddleware, wget)):
        lim = Limit(pr.FixedWindow(1, 60, clock=clock))
        app = make(plain_app if call is get else wsgi_app, [lim], headers=mode)
        ok, denied = call(app, n=2)
        assert ok.status_code == 200 and denied.status_code == 429
        for h in present:
            assert h in ok.headers and h in denied.headers
        for h in absent:
            assert h not in ok.headers and h not in denied.headers
        assert denied.headers["retry-after"] == "60"


def test_reset_delta_and_retry_after_rounds_up(clock: pr.ManualClock) -> None:
    # GCRA at 0.4/s: one more every 2.5 s
    app = asgi.RateLimitMiddleware(plain_app, [Limit(pr.GCRA(0.4, 1, clock=clock))], reset="delta")
    ok, denied = get(app, n=2)
    assert ok.headers["x-ratelimit-reset"] == "3"  # 2.5 s to refill, rounded up
    assert sf(ok, "ratelimit")[0][1] == {"r": 0, "t": 3}
    assert sf(ok, "ratelimit-policy") == [("limit1", {"q": 1, "w": 3})]
    assert denied.headers["retry-after"] == "3"
    clock.advance(2.2)
    (r,) = get(app)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"  # 0.3 s -> 1, never 0


def test_policy_q_w_per_algorithm(clock: pr.ManualClock) -> None:
    rules = [Limit(pr.GCRA(10, 100, clock=clock), name="gcra"),
             Limit(pr.TokenBucket(20, 10, clock=clock), name="tb"),
             Limit(pr.LeakyBucket(5, 0.5, clock=clock), name="leaky"),
             Limit(pr.SlidingWindowLog(7, 30, clock=clock), name="log"),
             Limit(pr.SlidingWindowCounter(8, 2.5, clock=clock), name="counter")]
    (r,) = get(asgi.RateLimitMiddleware(plain_app, rules))
    assert sf(r, "ratelimit-policy") == [("gcra", {"q": 100, "w": 10}), ("tb", {"q": 20, "w": 2}),
                                         ("leaky", {"q": 5, "w": 10}), ("log", {"q": 7, "w": 30}),
                                         ("counter", {"q": 8, "w": 3})]


def test_never_admissible_has_no_retry_after_nor_reset() -> None:
    # a spent budget that never refills: no absurd Retry-After (issue 10's 9223372037)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(pr.TokenBucket(1, 0), name="budget")])
    ok, denied = get(app, n=2)
    assert ok.status_code == 200
    assert "x-ratelimit-reset" not in ok.headers
    assert sf(ok, "ratelimit") == [("budget", {"r": 0})]
    assert sf(ok, "ratelimit-policy") == [("budget", {"q": 1})]  # no window: it never refills
    assert denied.status_code == 429
    for h in ("retry-after", "x-ratelimit-reset"):
        assert h not in denied.headers
    assert "never be admitted" in denied.json()["detail"]
    # a cost above the limit can never be admitted either
    app = asgi.RateLimitMiddleware(plain_app, [Limit(pr.FixedWindow(5, 60), cost=lambda r: 9)])
    (r,) = get(app)
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert "x-ratelimit-reset" not in r.headers


def test_most_restrictive_rule_leads_the_headers(clock: pr.ManualClock) -> None:
    # issue 10 item 3's group: the headers are one member's state, never a mix
    g = pr.GCRA(10, 100, clock=clock)
    assert g.allow(95)
    tb = pr.TokenBucket(20, 1, clock=clock)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(tb, name="tb"), Limit(g, name="gcra")],
                                   reset="delta")
    (r,) = get(app)
    assert r.headers["x-ratelimit-limit"] == "100"
    assert r.headers["x-ratelimit-remaining"] == "4"
    assert r.headers["x-ratelimit-reset"] == "10"  # 96 taken at 10/s: 9.6 s -> 10
    assert sf(r, "ratelimit") == [("gcra", {"r": 4, "t": 10})]
    assert [p[0] for p in sf(r, "ratelimit-policy")] == ["tb", "gcra"]


def test_ties_pick_the_longest_reset(clock: pr.ManualClock) -> None:
    a = pr.FixedWindow(2, 10, clock=clock)
    b = pr.FixedWindow(2, 100, clock=clock)
    (r,) = get(asgi.RateLimitMiddleware(plain_app, [Limit(a, name="a"), Limit(b, name="b")], reset="delta"))
    assert r.headers["x-ratelimit-remaining"] == "1"
    assert sf(r, "ratelimit")[0][0] == "b"


# -- all or nothing -------------------------------------------------------------------

def test_all_or_nothing_shared_and_keyed(clock: pr.ManualClock) -> None:
    glob = pr.FixedWindow(10, 60, clock=clock)
    per = pr.KeyedLimiter(pr.FixedWindow, 2, 60, clock=clock)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(glob, name="global"),
                                               Limit(per, key=header("X-User"), name="user")])
    rs = get(app, n=5, headers={"X-User": "a"})
    assert [r.status_code for r in rs] == [200, 200, 429, 429, 429]
    assert rs[2].json()["violated-policies"] == ["user"]
    assert glob.available == 8  # the three denials took nothing from the global rule
    (r,) = get(app, headers={"X-User": "b"})
    assert r.status_code == 200 and glob.available == 7
    # no X-User: the keyed rule does not apply (key None), the global one does
    (r,) = get(app)
    assert r.status_code == 200 and glob.available == 6
    assert sf(r, "ratelimit-policy") == [("global", {"q": 10, "w": 60})]


def test_all_or_nothing_with_different_costs(clock: pr.ManualClock) -> None:
    a = pr.FixedWindow(10, 60, clock=clock)
    b = pr.FixedWindow(3, 60, clock=clock)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(a, cost=4, name="a"), Limit(b, name="b")])
    rs = get(app, n=3)
    assert [r.status_code for r in rs] == [200, 200, 429]
    assert rs[2].json()["violated-policies"] == ["a"]
    assert a.available == 2 and b.available == 1  # the denial took nothing from b


# -- matching ---------------------------------------------------------------------------

def test_paths_methods_exempt(clock: pr.ManualClock) -> None:
    rules = [Limit(pr.FixedWindow(1, 60, clock=clock), paths=["/exact"], name="exact"),
             Limit(pr.FixedWindow(1, 60, clock=clock), paths=["/api/"], methods=["post"], name="post"),
             Limit(pr.FixedWindow(1, 60, clock=clock), paths=["/files/*.txt"], name="glob",
                   exempt=lambda r: r.headers.get("x-admin") == "1")]
    app = asgi.RateLimitMiddleware(plain_app, rules)
    assert [r.status_code for r in get(app, "/exact", 2)] == [200, 429]
    assert [r.status_code for r in get(app, "/exact/sub", 2)] == [200, 200]
    assert [r.status_code for r in get(app, "/api/x", 3)] == [200] * 3  # GET: not counted
    assert [r.status_code for r in get(app, "/api/x", 2, method="POST")] == [200, 429]
    assert [r.status_code for r in get(app, "/files/a.txt", 2, headers={"X-Admin": "1"})] == [200, 200]
    assert [r.status_code for r in get(app, "/files/b.txt", 2)] == [200, 429]
    assert "x-ratelimit-limit" not in get(app, "/files/a.bin")[0].headers


def test_client_ip_trusted_proxies() -> None:
    key = client_ip(trusted_proxies=["10.0.0.0/8", "::1"])

    def req(peer: Any, **h: str) -> web.Request:
        return web.Request("GET", "/", [(k.replace("_", "-"), v) for k, v in h.items()], peer)
    assert key(req("203.0.113.9", x_forwarded_for="1.2.3.4")) == "203.0.113.9"  # untrusted peer
    assert key(req("10.1.1.1", x_forwarded_for="1.2.3.4")) == "1.2.3.4"
    assert key(req("10.1.1.1", x_forwarded_for="6.6.6.6, 1.2.3.4, 10.2.2.2")) == "1.2.3.4"
    assert key(req("::1", forwarded='for=192.0.2.60;proto=http, for="[2001:db8::17]:4711"')) == "2001:db8::17"
    assert key(req("10.1.1.1", forwarded="for=unknown", x_forwarded_for="9.9.9.9")) == "unknown"
    assert key(req("10.1.1.1", x_forwarded_for="1.2.3.4:5678")) == "1.2.3.4"
    assert key(req("10.1.1.1")) == "10.1.1.1"
    assert key(req(None)) == "-"
    assert client_ip()(req("10.1.1.1", x_forwarded_for="1.2.3.4")) == "10.1.1.1"
    with pytest.raises(ValueError, match="trusted_proxies"):
        client_ip(["not-an-ip"])
    with pytest.raises(TypeError, match="trusted_proxies"):
        client_ip("10.0.0.0/8")


def test_key_functions_and_request_view() -> None:
    seen: List[web.Request] = []

    def key(r: web.Request) -> str:
        seen.append(r)
        return r.path
    per = pr.KeyedLimiter(pr.FixedWindow, 1, 60)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(per, key=key)])
    get(app, "/a?x=1", headers={"X-Test": "v1"})
    r = seen[0]
    assert (r.method, r.path, r.client) == ("GET", "/a", "192.0.2.1")
    assert r.headers["x-test"] == r.headers["X-TEST"] == "v1"
    assert r.scope is not None and r.environ is None
    assert "/a" in per
    assert web.path()(r) == "/a" and header("x-test")(r) == "v1" and header("nope")(r) is None
    seen.clear()
    wget(wsgi.RateLimitMiddleware(wsgi_app, [Limit(pr.KeyedLimiter(pr.FixedWindow, 1, 60), key=key)]),
         "/w", headers={"X-Test": "v2"})
    r = seen[0]
    assert (r.method, r.path, r.headers["x-test"]) == ("GET", "/w", "v2")
    assert r.environ is not None and r.scope is None


# -- responses ------------------------------------------------------------------------

def test_on_limited_custom_response(clock: pr.ManualClock) -> None:
    calls: List[Tuple[str, Any]] = []

    def on_limited(req: web.Request, d: Any) -> Any:
        calls.append((req.path, d))
        if req.path == "/custom":
            return 503, [("X-Why", "busy"), ("Retry-After", "7")], "try later"
        return None
    for make, call, inner in ((asgi.RateLimitMiddleware, get, plain_app),
                              (wsgi.RateLimitMiddleware, wget, wsgi_app)):
        calls.clear()
        app = make(inner, [Limit(pr.FixedWindow(1, 60, clock=clock), paths=["/custom"], name="c"),
                           Limit(pr.FixedWindow(1, 60, clock=clock), paths=["/default"], name="d")],
                   on_limited=on_limited)
        r = call(app, "/custom", 2)[1]
        assert r.status_code == 503 and r.text == "try later"
        assert r.headers["x-why"] == "busy" and r.headers["retry-after"] == "7"
        assert r.headers["x-ratelimit-remaining"] == "0"
        r = call(app, "/default", 2)[1]
        assert r.status_code == 429 and r.json()["violated-policies"] == ["d"]
        assert [c[0] for c in calls] == ["/custom", "/default"]
        assert isinstance(calls[0][1], pr.Decision) and not calls[0][1].allowed


def test_partition_key() -> None:
    per = pr.KeyedLimiter(pr.FixedWindow, 5, 60)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(per, key=header("x-api-key"), partition_key=True)])
    (r,) = get(app, headers={"X-API-Key": "k1"})
    assert sf(r, "ratelimit")[0][1]["pk"] == b"k1"
    assert sf(r, "ratelimit-policy")[0][1]["pk"] == b"k1"
    app = asgi.RateLimitMiddleware(plain_app, [Limit(pr.KeyedLimiter(pr.FixedWindow, 5, 60),
                                                     key=header("x-api-key"))])
    (r,) = get(app, headers={"X-API-Key": "k1"})
    assert "pk" not in sf(r, "ratelimit")[0][1]


def test_wsgi_headers_and_denial(clock: pr.ManualClock) -> None:
    app = wsgi.RateLimitMiddleware(wsgi_app, [Limit(pr.FixedWindow(2, 60, clock=clock), name="w")],
                                   reset="delta")
    rs = wget(app, n=3)
    assert [r.status_code for r in rs] == [200, 200, 429]
    assert rs[0].headers["x-ratelimit-reset"] == "60"
    assert sf(rs[1], "ratelimit") == [("w", {"r": 0, "t": 60})]
    assert rs[2].headers["retry-after"] == "60"
    assert rs[2].json()["violated-policies"] == ["w"]
    assert rs[2].headers["content-length"] == str(len(rs[2].content))


def test_streaming_and_lifespan_pass_through(clock: pr.ManualClock) -> None:
    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            seen.append("lifespan")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"x%d" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    seen: List[str] = []
    app = asgi.RateLimitMiddleware(streaming, [Limit(pr.FixedWindow(5, 60, clock=clock))])
    (r,) = get(app)
    assert r.content == b"x0x1x2" and r.headers["x-ratelimit-remaining"] == "4"
    asyncio.run(app({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def test_websocket_limited_at_connect(clock: pr.ManualClock) -> None:
    sent: List[Any] = []

    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

    async def send(m: Any) -> None:
        sent.append(m)

    async def receive() -> Any:
        return {"type": "websocket.connect"}
    app = asgi.RateLimitMiddleware(ws_app, [Limit(pr.FixedWindow(1, 60, clock=clock), paths=["/ws"])])
    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("192.0.2.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent == [{"type": "websocket.accept"}]  # admitted: untouched
    sent.clear()
    asyncio.run(app(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]  # no denial-response extension
    sent.clear()
    asyncio.run(app({**scope, "extensions": {"websocket.http.response": {}}}, receive, send))
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 429
    assert sent[1]["type"] == "websocket.http.response.body"


# -- concurrency --------------------------------------------------------------------------

def test_asgi_concurrency_fifo_and_503() -> None:
    order: List[int] = []
    gate: List[asyncio.Event] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        n = int(scope["path"][1:])
        await gate[0].wait()
        order.append(n)
        await send(START)
        await send(BODY)

    async def main() -> List[Any]:
        gate.append(asyncio.Event())
        b = pr.Bulkhead("web", 1, max_wait_seconds=30)
        app = asgi.ConcurrencyLimitMiddleware(slow, b, paths=["/*"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            tasks = []
            for i in range(4):
                tasks.append(asyncio.ensure_future(c.get(f"/{i}")))
                while b.active_count + b.waiting_count < i + 1:  # queued in this order
                    await asyncio.sleep(0)
            assert b.active_count == 1 and b.waiting_count == 3  # the loop was never blocked
            gate[0].set()
            rs = await asyncio.gather(*tasks)
            full = pr.Bulkhead("full", 1, max_wait_seconds=0)
            full.acquire()
            app2 = asgi.ConcurrencyLimitMiddleware(slow, full)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url="http://t") as c2:
                r = await c2.get("/9")
            return [*rs, r]
    rs = asyncio.run(main())
    assert [r.status_code for r in rs[:4]] == [200] * 4
    assert order == [0, 1, 2, 3]  # first come, first served
    r = rs[4]
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert r.json()["type"] == web.TEMPORARY_REDUCED_CAPACITY


def test_busy_response_retry_after_fallback() -> None:
    assert web.busy_response(None)[1][0] == ("Retry-After", "1")
    assert web.busy_response(2.1)[1][0] == ("Retry-After", "3")
    assert web.busy_response(math.inf)[1][0] == ("Retry-After", "1")


def test_wsgi_concurrency_releases_on_close() -> None:
    b = pr.Bulkhead("w", 1, max_wait_seconds=0)
    app = wsgi.ConcurrencyLimitMiddleware(wsgi_app, b)
    started: List[Any] = []
    it = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda s, h, e=None: started.append(s))
    assert b.active_count == 1
    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda s, h, e=None: started.append((s, h)))
    assert started[1][0] == "503 Service Unavailable"
    assert int(dict(started[1][1])["Retry-After"]) >= 1  # the bulkhead's estimate, or 1 s without one
    assert b"concurrency limit" in b"".join(body)
    assert list(it) == [b"ok"]
    it.close()  # type: ignore[attr-defined]
    it.close()  # type: ignore[attr-defined]
    assert b.active_count == 0


# -- validation ---------------------------------------------------------------------------

def test_bad_arguments_name_the_parameter() -> None:
    tb = pr.TokenBucket(1, 1)
    with pytest.raises(TypeError, match="limiter"):
        Limit(object())
    with pytest.raises(TypeError, match="key"):
        Limit(tb, key=client_ip())
    with pytest.raises(ValueError, match="cost"):
        Limit(tb, cost=0)
    with pytest.raises(TypeError, match="cost"):
        Limit(tb, cost=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Limit(tb, name="caf\u00e9")
    with pytest.raises(ValueError, match="paths"):
        Limit(tb, paths=[""])
    with pytest.raises(ValueError, match="headers"):
        asgi.RateLimitMiddleware(plain_app, [Limit(tb)], headers="all")
    with pytest.raises(ValueError, match="reset"):
        asgi.RateLimitMiddleware(plain_app, [Limit(tb)], reset="unix")
    with pytest.raises(ValueError, match="named 'x'"):
        wsgi.RateLimitMiddleware(wsgi_app, [Limit(tb, name="x"), Limit(pr.GCRA(1, 1), name="x")])
    with pytest.raises(TypeError, match="limits"):
        asgi.RateLimitMiddleware(plain_app, [tb])
    with pytest.raises(TypeError, match="bulkhead"):
        asgi.ConcurrencyLimitMiddleware(plain_app, tb)  # type: ignore[arg-type]
    # a cost function's bad answer names the rule
    app = asgi.RateLimitMiddleware(plain_app, [Limit(tb, cost=lambda r: -1, name="neg")])
    with pytest.raises(ValueError, match="'neg'"):
        get(app)


def test_keyed_and_redis_rules_default_to_client_ip() -> None:
    per = pr.KeyedLimiter(pr.FixedWindow, 1, 60)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(per)])
    assert [r.status_code for r in get(app, n=2)] == [200, 429]
    assert [r.status_code for r in get(app, n=1, client=("192.0.2.2", 1))] == [200]


# -- frameworks' per-route forms --------------------------------------------------------

def test_fastapi_dependency(clock: pr.ManualClock) -> None:
    fastapi = pytest.importorskip("fastapi")
    from pyresilience.fastapi import RateLimit, RateLimited, problem_response

    def make(handler: bool) -> Any:
        app = fastapi.FastAPI()
        if handler:
            app.add_exception_handler(RateLimited, problem_response)
        dep = RateLimit(Limit(pr.FixedWindow(2, 60, clock=clock), name="route"))

        @app.get("/r", dependencies=[fastapi.Depends(dep)])
        async def route() -> dict:  # type: ignore[type-arg]
            return {"ok": True}

        @app.get("/free")
        async def free() -> dict:  # type: ignore[type-arg]
            return {"ok": True}
        return app
    app = make(False)
    rs = get(app, "/r", 3)
    assert [r.status_code for r in rs] == [200, 200, 429]
    assert rs[1].headers["x-ratelimit-remaining"] == "0"
    assert sf(rs[0], "ratelimit") == [("route", {"r": 1, "t": 60})]
    assert rs[2].headers["retry-after"] == "60"
    assert rs[2].json()["detail"]["type"] == QUOTA_EXCEEDED  # FastAPI's {"detail": ...}
    assert "x-ratelimit-limit" not in get(app, "/free")[0].headers
    r = get(make(True), "/r", 3)[2]
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["violated-policies"] == ["route"] and r.headers["retry-after"] == "60"
    assert r.headers["x-ratelimit-remaining"] == "0"


def test_flask_decorator(clock: pr.ManualClock) -> None:
    flask = pytest.importorskip("flask")
    from pyresilience.flask import limit
    app = flask.Flask(__name__)

    @app.get("/r")
    @limit(Limit(pr.FixedWindow(2, 60, clock=clock), name="route"))
    def route() -> Any:
        return {"ok": True}
    rs = wget(app, "/r", 3)
    assert [r.status_code for r in rs] == [200, 200, 429]
    assert rs[0].json() == {"ok": True}
    assert sf(rs[1], "ratelimit") == [("route", {"r": 0, "t": 60})]
    assert rs[2].headers["content-type"] == "application/problem+json"
    assert rs[2].headers["retry-after"] == "60"


# -- Redis: decided off the event loop ------------------------------------------------------

def test_redis_rule_never_blocks_the_loop(tmp_path: Path) -> None:
    if os.environ.get("PRS_SKIP_REDIS") or not pr._core.HAVE_REDIS:
        pytest.skip("no Redis support")
    from test_redis import Server
    server = Server()
    server.start()
    try:
        backend = pr.RedisBackend(server.url, timeout=0.5, connect_timeout=0.5)
        rl = pr.RedisRateLimiter(backend, "fixed_window", limit=3, window=3600,
                                 key_prefix=f"web{os.getpid()}:", on_backend_error="allow")
        burst = pr.RedisRateLimiter(backend, "gcra", rate=1, burst=10,
                                    key_prefix=f"webg{os.getpid()}:", on_backend_error="allow")
        local = pr.FixedWindow(100, 3600)
        app = asgi.RateLimitMiddleware(plain_app, [Limit(local, name="local"), Limit(rl, name="redis"),
                                                   Limit(burst, key=web.path(), name="burst")])
        rs = get(app, n=4)
        assert [r.status_code for r in rs] == [200, 200, 200, 429]
        assert rs[3].json()["violated-policies"] == ["redis"]
        assert local.available == 97  # the Redis denial took nothing locally
        assert burst.peek("/").remaining == 6  # nor from the other Redis rule: 3 of 10 taken
        assert sf(rs[2], "ratelimit") == [("redis", {"r": 0, "t": sf(rs[2], "ratelimit")[0][1]["t"]})]
        assert sf(rs[2], "ratelimit-policy") == [("local", {"q": 100, "w": 3600}),
                                                 ("redis", {"q": 3, "w": 3600}),
                                                 ("burst", {"q": 10, "w": 10})]
        assert [int(r.headers["x-ratelimit-remaining"]) for r in rs] == [2, 1, 0, 0]

        async def during_pause() -> Tuple[int, int]:
            ticks = 0
            stop = False

            async def ticker() -> None:
                nonlocal ticks
                while not stop:
                    await asyncio.sleep(0.005)
                    ticks += 1
            t = asyncio.ensure_future(ticker())
            await asyncio.sleep(0.02)
            ticks = 0
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                r = await c.get("/", headers={"x": "1"})
            stop = True
            await t
            return r.status_code, ticks
        assert server.proc is not None
        server.proc.send_signal(19)  # SIGSTOP: every Redis call now waits for its timeout
        try:
            status, ticks = asyncio.run(during_pause())
        finally:
            server.proc.send_signal(18)  # SIGCONT
        assert status == 200  # on_backend_error="allow" once the call timed out
        assert ticks >= 5  # the loop kept running while the Redis call waited
        backend.close()
    finally:
        server.stop()


# -- typing -------------------------------------------------------------------------------

def test_mypy_strict_on_web_modules_and_example() -> None:
    pytest.importorskip("mypy")
    example = Path(__file__).parent / "typing" / "example_web.py"
    mods = [a for m in ("web", "asgi", "wsgi", "fastapi", "flask") for a in ("-m", f"pyresilience.{m}")]
    for args in (mods, [str(example)]):
        r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                            "--cache-dir", os.devnull, *args],
                           capture_output=True, text=True, cwd=example.parent)
        assert r.returncode == 0, r.stdout + r.stderr


def test_typing_example_runs() -> None:
    example = Path(__file__).parent / "typing" / "example_web.py"
    exec(compile(example.read_text(), str(example), "exec"), {"__name__": "example"})


def test_lazy_submodules() -> None:
    code = ("import sys, pyresilience as pr\n"
            "assert 'pyresilience.web' not in sys.modules\n"
            "assert pr.web.Limit and pr.asgi.RateLimitMiddleware and pr.wsgi.RateLimitMiddleware\n"
            "assert 'starlette' not in sys.modules and 'flask' not in sys.modules\n"
            "try:\n    pr.nope\nexcept AttributeError as e:\n    assert 'nope' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_all_or_nothing_against_a_reference_model(clock: pr.ManualClock) -> None:
    """Random traffic over three overlapping rules, against a plain model:
    admitted iff every matching rule has room, then each takes one; the
    headers name the rule with the least room left (the first on ties:
    equal windows reset together)."""
    import random
    rnd = random.Random(1234)
    limits = {"global": 40, "user": 6, "path": 15}
    rules = [Limit(pr.FixedWindow(limits["global"], 60, clock=clock), name="global"),
             Limit(pr.KeyedLimiter(pr.FixedWindow, limits["user"], 60, clock=clock),
                   key=header("x-user"), name="user"),
             Limit(pr.FixedWindow(limits["path"], 60, clock=clock), paths=["/p/"], name="path")]
    engine = web.Engine(rules)
    used: dict = {}
    for _ in range(400):
        user = rnd.choice(["a", "b", "c", "d", None])
        path = rnd.choice(["/p/x", "/q"])
        req = web.Request("GET", path, {"X-User": user} if user else {}, "192.0.2.1")
        matched = engine.match(req)
        names = ["global"] + (["user"] if user else []) + (["path"] if path.startswith("/p/") else [])
        assert [m[0].name for m in matched] == names
        counters = {n: ("user", user) if n == "user" else n for n in names}
        room = {n: limits[n] - used.get(counters[n], 0) for n in names}
        res = engine.decide(matched)
        if all(r >= 1 for r in room.values()):
            assert isinstance(res, list), room
            for n in names:
                used[counters[n]] = used.get(counters[n], 0) + 1
                room[n] -= 1
            h = dict(res)
            lead = min(names, key=lambda n: room[n])
            assert h["X-RateLimit-Remaining"] == str(room[lead])
            assert h["X-RateLimit-Limit"] == str(limits[lead])
            assert h["RateLimit"].startswith(f'"{lead}";r={room[lead]};')
        else:
            assert isinstance(res, web.Outcome)
            first_full = next(n for n in names if room[n] < 1)
            assert res.violated == [first_full]
    assert used.get("global", 0) == limits["global"]  # the traffic spent the global budget


def test_one_limiter_in_two_matching_rules_takes_both_costs(clock: pr.ManualClock) -> None:
    shared = pr.FixedWindow(5, 60, clock=clock)
    per = pr.KeyedLimiter(pr.FixedWindow, 3, 60, clock=clock)
    app = asgi.RateLimitMiddleware(plain_app, [
        Limit(shared, name="all"), Limit(shared, paths=["/x"], name="x"),
        Limit(per, key=header("x-user"), name="u1"), Limit(per, key=header("x-user"), paths=["/x"], name="u2")])
    assert [r.status_code for r in get(app, "/x", 3)] == [200, 200, 429]  # 2 per request
    assert shared.available == 1
    (r,) = get(app, "/y", headers={"X-User": "a"})
    assert r.status_code == 200 and shared.available == 0 and per.available("a") == 2
    (r,) = get(app, "/x", headers={"X-User": "a"})
    assert r.status_code == 429 and per.available("a") == 2  # all or nothing
    per2 = pr.KeyedLimiter(pr.FixedWindow, 3, 60, clock=clock)
    app = asgi.RateLimitMiddleware(plain_app, [Limit(per2, key=header("x-user"), name="a"),
                                               Limit(per2, key=header("x-user"), name="b")])
    assert [r.status_code for r in get(app, "/", 2, headers={"X-User": "b"})] == [200, 429]
    assert per2.available("b") == 1
