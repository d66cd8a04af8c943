"""Per-route rate limits for Flask, thin over :mod:`pyresilience.web`.

    from flask import Flask
    from pyresilience import FixedWindow, KeyedLimiter
    from pyresilience.web import Limit, client_ip
    from pyresilience.flask import limit

    app = Flask(__name__)

    @app.get("/search")
    @limit(Limit(KeyedLimiter(FixedWindow, 10, 60), key=client_ip()))
    def search() -> str: ...

Every rule is checked all or nothing; the view's response gets the
rate-limit headers; a denied request gets 429 with Retry-After and an
RFC 9457 body (or ``on_limited``'s answer) without running the view.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar, cast

import flask

from .web import Engine, Limit, Outcome, Request

__all__ = ["limit"]

F = TypeVar("F", bound=Callable[..., Any])


def limit(*rules: Limit, headers: str = "both", reset: str = "epoch",
          on_limited: Any = None) -> Callable[[F], F]:
    """limit(*rules, headers="both", reset="epoch", on_limited=None)

    A view decorator checking ``rules`` (:class:`~pyresilience.web.Limit`)
    all or nothing on each request of the view."""
    engine = Engine(list(rules), headers=headers, reset=reset, on_limited=on_limited)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            req = Request.from_environ(flask.request.environ)
            matched = engine.match(req)
            if not matched:
                return view(*args, **kwargs)
            res = engine.decide(matched)
            if isinstance(res, Outcome):
                status, hs, body = engine.denied_response(req, res)
                return flask.Response(body, status=status,
                                      headers=[h for h in hs if h[0].lower() != "content-length"])
            resp = flask.make_response(view(*args, **kwargs))
            for name, value in res:
                resp.headers[name] = value
            return resp
        return cast(F, wrapper)
    return decorate
