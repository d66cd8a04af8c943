"""WSGI middleware: rate limits and concurrency limits for any WSGI app
(Flask, Django, Falcon, Bottle, ...). No framework needed.

    from pyresilience import FixedWindow, KeyedLimiter
    from pyresilience.web import Limit, client_ip
    from pyresilience.wsgi import RateLimitMiddleware

    app.wsgi_app = RateLimitMiddleware(app.wsgi_app, [
        Limit(KeyedLimiter(FixedWindow, 100, 60), key=client_ip(), name="per-ip"),
    ])

The same rules, headers and answers as :mod:`pyresilience.asgi`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from .bulkhead import Bulkhead
from .errors import BulkheadFullError
from .web import (Engine, HeaderList, Limit, OnLimited, Outcome, Request, _gate_filters, busy_response,
                  status_line)

__all__ = ["RateLimitMiddleware", "ConcurrencyLimitMiddleware", "IdempotencyMiddleware"]

# the Idempotency-Key header (IETF draft): pyresilience._idempotency_http
from ._idempotency_http import WsgiIdempotencyMiddleware as IdempotencyMiddleware  # noqa: E402

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _respond(start_response: StartResponse, status: int, headers: HeaderList,
             body: bytes) -> List[bytes]:
    start_response(status_line(status), headers)
    return [body]


class RateLimitMiddleware:
    """RateLimitMiddleware(app, limits, *, headers="both", reset="epoch", on_limited=None)

    The WSGI twin of :class:`pyresilience.asgi.RateLimitMiddleware`: every
    request is checked against the rules it matches, all or nothing; an
    admitted one gets the rate-limit headers of the most restrictive rule, a
    denied one 429 with ``Retry-After`` and an RFC 9457 body (or
    ``on_limited``'s answer)."""

    def __init__(self, app: WSGIApp, limits: Union[Limit, Iterable[Limit]], *,
                 headers: str = "both", reset: str = "epoch",
                 on_limited: Optional[OnLimited] = None) -> None:
        self.app = app
        self.engine = Engine(limits, headers=headers, reset=reset, on_limited=on_limited)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        engine = self.engine
        fast = engine.fast
        req: Optional[Request] = None
        if fast is not None:
            res = fast()
        else:
            req = Request.from_environ(environ)
            matched = engine.match(req)
            if not matched:
                return self.app(environ, start_response)
            res = engine.decide(matched)
        if res.__class__ is list:
            if not res:
                return self.app(environ, start_response)
            extra: Any = res

            def start_with_headers(status: str, headers: List[Tuple[str, str]],
                                   exc_info: Any = None) -> Any:
                return start_response(status, [*headers, *extra], exc_info)
            return self.app(environ, start_with_headers)
        assert isinstance(res, Outcome)
        if req is None:
            req = Request.from_environ(environ)
        status, headers, body = engine.denied_response(req, res)
        return _respond(start_response, status, headers, body)


class _Releasing:
    """The app's response iterable; the slot is released when the server
    closes it (PEP 3333: close() is called once the response is sent)."""

    __slots__ = ("_it", "_release")

    def __init__(self, it: Iterable[bytes], release: Callable[[], None]) -> None:
        self._it = it
        self._release: Optional[Callable[[], None]] = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._it)

    def close(self) -> None:
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ConcurrencyLimitMiddleware:
    """ConcurrencyLimitMiddleware(app, bulkhead, *, paths=None, methods=None)

    At most ``bulkhead.max_concurrent`` matching requests run at once; the
    others wait in FIFO order (this worker thread blocks, the GIL released)
    up to the bulkhead's ``max_wait_seconds``, then get 503 with
    ``Retry-After`` (the bulkhead's estimate; 1 s when it has none). A slot is
    held until the server closes the response (its whole body was sent)."""

    def __init__(self, app: WSGIApp, bulkhead: Bulkhead, *, paths: Optional[Iterable[str]] = None,
                 methods: Optional[Iterable[str]] = None) -> None:
        self._match_path, self._methods = _gate_filters(bulkhead, paths, methods)
        self.app = app
        self.bulkhead = bulkhead

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if (self._methods is not None and environ.get("REQUEST_METHOD") not in self._methods) or (
                self._match_path is not None and not self._match_path(
                    environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))):
            return self.app(environ, start_response)
        b = self.bulkhead
        try:
            b.acquire()
        except BulkheadFullError as exc:
            return _respond(start_response, *busy_response(exc.retry_after))
        try:
            it = self.app(environ, start_response)
        except BaseException:
            b.release()
            raise
        return _Releasing(it, b.release)
