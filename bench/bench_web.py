"""Web middleware overhead, in process (no network, no server).

Tables:

* "ASGI rate-limit middleware": the ASGI app called directly with a fixed
  scope, awaiting a trivial inner app (start + body messages to a no-op
  send), bare and behind ``pyresilience.asgi.RateLimitMiddleware`` with one
  rule (a shared GCRA) and with three (a shared GCRA, a KeyedLimiter keyed by
  client_ip(), a FixedWindow on a path prefix), every request admitted, all
  headers on (legacy + draft). slowapi needs Starlette, so the same
  comparison is made over a one-route Starlette app: bare, behind our
  middleware, and behind slowapi's SlowAPIMiddleware (default limit, memory
  storage, its headers on). Overhead = row - the bare row under it.
* "event-loop stalls under load": the longest gap between two turns of a
  ticker task on the loop while 32 tasks send requests back to back, for
  the bare app, three in-process rules, and a Redis rule whose server is
  paused (SIGSTOP); admitted counts checked exact.
* "WSGI rate-limit middleware": a one-route Flask app called as a WSGI app
  (``app(environ, start_response)``, body consumed and closed): bare, behind
  ``pyresilience.wsgi.RateLimitMiddleware`` (one rule), and with
  flask-limiter (a default limit, memory storage, its headers on).

Every limit admits every request (10**15 per second), so no row measures a
denial.
"""

from __future__ import annotations

from typing import Any

BIG = 10**15

SCOPE = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/x", "raw_path": b"/x", "root_path": "", "query_string": b"",
    "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
    "client": ("192.0.2.1", 40000), "server": ("127.0.0.1", 8000),
}
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
BODY = {"type": "http.response.body", "body": b"ok"}


async def trivial(scope: Any, receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


async def receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


def _caller(app: Any) -> Any:
    def call() -> Any:
        return app(dict(SCOPE), receive, send)
    return call


def _check_admits(app: Any) -> None:
    """One request through ``app`` must be admitted (200)."""
    import asyncio
    seen: list = []

    async def record(m: Any) -> None:
        seen.append(m)

    async def one() -> None:
        await app(dict(SCOPE), receive, record)
    asyncio.run(one())
    assert seen and seen[0]["status"] == 200, seen[:1]


def run(h: Any) -> None:
    import pyresilience as pr
    from pyresilience.asgi import RateLimitMiddleware
    from pyresilience.web import Limit, client_ip

    def one_rule() -> list:
        return [Limit(pr.GCRA(1e12, BIG), name="global")]

    def three_rules() -> list:
        return [Limit(pr.GCRA(1e12, BIG), name="global"),
                Limit(pr.KeyedLimiter(pr.GCRA, 1e12, BIG), key=client_ip(), name="per-ip"),
                Limit(pr.FixedWindow(BIG, 3600), paths=["/x", "/api/"], name="api")]

    h.section("Web middleware: ASGI rate limiting, overhead per request",
              note="ns per request of an ASGI app called directly (no server, no network); "
                   "every request admitted, all rate-limit headers on. Targets: our middleware "
                   "adds <= 2 us per request with one rule and <= 4 us with three, and at least "
                   "5x less than slowapi on the same Starlette app. Overhead = row - the bare "
                   "row of its group.")
    ours1 = RateLimitMiddleware(trivial, one_rule())
    ours3 = RateLimitMiddleware(trivial, three_rules())
    for app in (ours1, ours3):
        _check_admits(app)
    bare = h.time_async("trivial ASGI app, bare (baseline)", _caller(trivial), group="trivial")
    t1 = h.time_async("trivial app + pyresilience RateLimitMiddleware, 1 rule", _caller(ours1),
                      group="trivial")
    t3 = h.time_async("trivial app + pyresilience RateLimitMiddleware, 3 rules", _caller(ours3),
                      group="trivial")
    over1, over3 = t1 - bare, t3 - bare
    h.value("our overhead, 1 rule (trivial app)", over1, "ns/request")
    h.value("our overhead, 3 rules (trivial app)", over3, "ns/request")
    h.target("<= 2 us per request with one rule", over1 <= 2000)
    h.target("<= 4 us per request with three rules", over3 <= 4000)

    starlette = h.peer("starlette")
    slowapi = h.peer("slowapi")
    if starlette is None or slowapi is None:
        h.target(">= 5x less overhead than slowapi", None)
    else:
        from slowapi import Limiter
        from slowapi.middleware import SlowAPIMiddleware
        from slowapi.util import get_remote_address
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def endpoint(request: Any) -> Any:
            return PlainTextResponse("ok")

        def make_app() -> Any:
            return Starlette(routes=[Route("/x", endpoint)])
        s_bare = make_app()
        s_ours = RateLimitMiddleware(make_app(), one_rule())
        s_slow = make_app()
        s_slow.state.limiter = Limiter(key_func=get_remote_address,
                                       default_limits=[f"{BIG}/second"], headers_enabled=True)
        s_slow.add_middleware(SlowAPIMiddleware)
        for app in (s_bare, s_ours, s_slow):
            _check_admits(app)
        sb = h.time_async("Starlette one-route app, bare (baseline)", _caller(s_bare), group="starlette")
        so = h.time_async("Starlette app + pyresilience RateLimitMiddleware, 1 rule", _caller(s_ours),
                          group="starlette")
        ss = h.time_async("Starlette app + slowapi SlowAPIMiddleware, 1 default limit",
                          _caller(s_slow), group="starlette", peer=True)
        h.value("our overhead over Starlette, 1 rule", so - sb, "ns/request")
        h.value("slowapi overhead over Starlette, 1 limit", ss - sb, "ns/request")
        r = h.ratio("overhead: slowapi / ours (Starlette app)", so - sb, ss - sb)
        h.target(">= 5x less overhead than slowapi", r >= 5)

    run_stalls(h)

    h.section("Web middleware: WSGI rate limiting, overhead per request",
              note="ns per request of a WSGI app called directly (body consumed, response "
                   "closed): a trivial app, and a one-route Flask app; every request admitted, "
                   "headers on. Target: at least 5x less overhead than flask-limiter. "
                   "Overhead = row - the bare row of its group.")
    flask = h.peer("flask")
    if flask is None:
        return
    from pyresilience.wsgi import RateLimitMiddleware as WSGIRateLimit

    def make_flask() -> Any:
        app = flask.Flask("bench")

        @app.get("/x")
        def x() -> str:
            return "ok"
        return app
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "SCRIPT_NAME": "", "QUERY_STRING": "",
               "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "192.0.2.1", "HTTP_HOST": "bench", "wsgi.url_scheme": "http",
               "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False,
               "wsgi.run_once": False}
    status: list = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(s)
        return None

    def wsgi_caller(app: Any) -> Any:
        def call() -> None:
            env = dict(environ)
            import io
            env["wsgi.input"] = io.BytesIO(b"")
            env["wsgi.errors"] = io.StringIO()
            it = app(env, start_response)
            try:
                for _ in it:
                    pass
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        return call
    def trivial_wsgi(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    w_ours = WSGIRateLimit(trivial_wsgi, one_rule())
    wb = h.time("trivial WSGI app, bare (baseline)", wsgi_caller(trivial_wsgi), group="trivial wsgi")
    wo = h.time("trivial WSGI app + pyresilience wsgi.RateLimitMiddleware, 1 rule", wsgi_caller(w_ours),
                group="trivial wsgi")
    h.value("our overhead, 1 rule (trivial WSGI app)", wo - wb, "ns/request")
    f_bare = make_flask()
    f_ours = WSGIRateLimit(make_flask(), one_rule())
    for app in (f_bare, f_ours):
        status.clear()
        wsgi_caller(app)()
        assert status == ["200 OK"], status
    fb = h.time("Flask one-route app, bare (baseline)", wsgi_caller(f_bare), group="flask")
    fo = h.time("Flask app + pyresilience wsgi.RateLimitMiddleware, 1 rule", wsgi_caller(f_ours),
                group="flask")
    h.value("our overhead over Flask, 1 rule", fo - fb, "ns/request")
    fl = h.peer("flask_limiter", "flask-limiter")
    if fl is None:
        h.target(">= 5x less overhead than flask-limiter", None)
        return
    from flask_limiter import Limiter as FlaskLimiter
    from flask_limiter.util import get_remote_address as flask_remote
    f_lim = make_flask()
    FlaskLimiter(flask_remote, app=f_lim, default_limits=[f"{BIG} per second"],
                 storage_uri="memory://", headers_enabled=True)
    status.clear()
    wsgi_caller(f_lim)()
    assert status == ["200 OK"], status
    fp = h.time("Flask app + flask-limiter, 1 default limit", wsgi_caller(f_lim), group="flask",
                peer=True)
    h.value("flask-limiter overhead over Flask, 1 limit", fp - fb, "ns/request")
    # Our overhead (a few us) is within the noise of a Flask request (~50 us): the
    # figure over the trivial WSGI app measures the same code without that noise.
    ours = max(fo - fb, wo - wb)
    r = h.ratio("overhead: flask-limiter / ours (ours: the larger of over Flask, over the trivial app)",
                ours, fp - fb)
    h.target(">= 5x less overhead than flask-limiter", r >= 5)


# -- event-loop stalls under load ---------------------------------------------------------

def _stall_run(app: Any, seconds: float, tasks: int) -> "tuple[float, int, int]":
    """(longest gap between two ticks of the loop in ms, admitted, total) while
    ``tasks`` coroutines send requests to ``app`` back to back for ``seconds``."""
    import asyncio

    async def main() -> "tuple[float, int, int]":
        loop = asyncio.get_running_loop()
        stop = False
        worst = 0.0
        admitted = total = 0

        async def ticker() -> None:
            nonlocal worst
            last = loop.time()
            while not stop:
                await asyncio.sleep(0)
                now = loop.time()
                worst = max(worst, now - last)
                last = now

        async def client() -> None:
            nonlocal admitted, total
            status: list = []

            async def record(m: Any) -> None:
                if m["type"] == "http.response.start":
                    status.append(m["status"])
            while not stop:
                status.clear()
                await app(dict(SCOPE), receive, record)
                total += 1
                admitted += status[0] == 200
                await asyncio.sleep(0)  # a real client waits for the network: let others run
        t = asyncio.ensure_future(ticker())
        cs = [asyncio.ensure_future(client()) for _ in range(tasks)]
        await asyncio.sleep(seconds)
        stop = True
        await asyncio.gather(t, *cs)
        return worst * 1e3, admitted, total
    return asyncio.run(main())


def run_stalls(h: Any) -> None:
    import gc
    gc.collect()
    gc.freeze()  # as a server does after startup: a full collection then scans new objects only
    try:
        _run_stalls(h)
    finally:
        gc.unfreeze()


def _run_stalls(h: Any) -> None:
    import shutil

    import pyresilience as pr
    from pyresilience.asgi import RateLimitMiddleware
    from pyresilience.web import Limit, client_ip

    secs = 0.5 if h.quick else 2.0
    h.section("Web middleware: event-loop stalls under load",
              note=f"{secs:g} s of 32 asyncio tasks sending requests back to back to the trivial "
                   "ASGI app, in process; a ticker task measures the longest gap between two of "
                   "its turns on the loop (ms). Target: the middleware adds no stall beyond the "
                   "bare app's (difference <= 5 ms), also when a Redis rule's server is paused "
                   "(SIGSTOP: every Redis call waits for its timeout, 50 ms, in a worker thread); "
                   "the admitted count is exact. gc.freeze() is called first, as servers do after "
                   "startup: otherwise a full collection of this process's objects (about 10 ms "
                   "here, every import of the run included) lands in whichever row allocates most. "
                   "On a 2-core machine shared with other work, the Redis row's worker threads "
                   "also compete with the loop for the CPUs: its gap includes that scheduling, "
                   "not waits for Redis (those show in the contrast row, decided on the loop).")
    gap, ok, n = _stall_run(trivial, secs, 32)
    h.value("bare app: longest loop gap", gap, "ms")
    h.value("bare app: requests served", n, "requests")
    limit = 1000
    app = RateLimitMiddleware(trivial, [
        Limit(pr.GCRA(1e12, BIG), name="global"),
        Limit(pr.KeyedLimiter(pr.GCRA, 1e12, BIG), key=client_ip(), name="per-ip"),
        Limit(pr.FixedWindow(limit, 3600), name="window")])
    gap2, ok2, n2 = _stall_run(app, secs, 32)
    h.value("3 in-process rules: longest loop gap", gap2, "ms")
    h.value("3 in-process rules: admitted / requests", ok2, f"of {n2} (limit {limit})")
    exact = ok2 == min(limit, n2)
    h.target("in-process rules: admitted count exact", exact)
    h.target("in-process rules: no stall beyond the bare app's + 5 ms", gap2 <= gap + 5)
    if shutil.which("redis-server") is None or not getattr(pr._core, "HAVE_REDIS", 0):
        h.note("Redis row skipped: redis-server or hiredis missing")
        return
    import os
    import signal
    from bench_redis import _Server  # bench/ is on sys.path (run.py)
    server = _Server()
    try:
        backend = pr.RedisBackend(server.url, timeout=0.05, connect_timeout=0.05)
        rl = pr.RedisRateLimiter(backend, "fixed_window", limit=10**9, window=3600,
                                 key_prefix=f"stall{os.getpid()}:", on_backend_error="deny")
        rapp = RateLimitMiddleware(trivial, [Limit(rl, name="redis")])
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            gap3, ok3, n3 = _stall_run(rapp, secs, 32)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # the counterfactual: the same rule decided on the loop, as a blocking middleware would
        inline = RateLimitMiddleware(trivial, [Limit(rl, name="redis")])
        inline.engine._any_remote = False
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            gap4, _, n4 = _stall_run(inline, secs, 32)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        h.value("Redis rule, server paused: longest loop gap", gap3, "ms")
        h.value("Redis rule, server paused: admitted / requests", ok3, f"of {n3} (deny on error)")
        h.value("(for contrast) the same rule decided on the loop, server paused: longest gap",
                gap4, "ms")
        h.target("Redis server paused: no stall beyond the bare app's + 5 ms", gap3 <= gap + 5)
        h.target("Redis server paused: nothing admitted (on_backend_error='deny')", ok3 == 0)
        backend.close()
    finally:
        server.stop()
