"""A Flask app behind pyresilience.wsgi middleware and the per-route
decorator, served by gunicorn (one process, threads) in
tests/test_web_servers.py."""
from __future__ import annotations

import threading

import flask

import pyresilience as pr
from pyresilience.flask import limit
from pyresilience.web import Limit, client_ip
from pyresilience.wsgi import ConcurrencyLimitMiddleware, RateLimitMiddleware

HOUR = 3600.0
app = flask.Flask(__name__)
BULKHEAD = pr.Bulkhead("slow", 1, max_wait_seconds=0)
_gate = threading.Event()


@app.get("/exact")
def exact() -> str:
    return "hello"


@app.get("/ip")
def ip() -> str:
    return "hello"


@app.get("/route")
@limit(Limit(pr.FixedWindow(2, HOUR), name="route"), reset="delta")
def route() -> str:
    return "route"


@app.get("/slow")
def slow() -> str:
    _gate.wait(10)
    return "slow done"


@app.get("/release")
def release() -> str:
    _gate.set()
    return "released"


@app.get("/active")
def active() -> str:
    return str(BULKHEAD.active_count)


app.wsgi_app = RateLimitMiddleware(  # type: ignore[method-assign]
    ConcurrencyLimitMiddleware(app.wsgi_app, BULKHEAD, paths=["/slow"]), [
        Limit(pr.FixedWindow(3, HOUR), paths=["/exact"], name="exact"),
        Limit(pr.KeyedLimiter(pr.FixedWindow, 2, HOUR), key=client_ip(trusted_proxies=["127.0.0.1"]),
              paths=["/ip"], name="ip"),
    ])
