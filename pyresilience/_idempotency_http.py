"""The Idempotency-Key header for HTTP servers (IETF draft
``draft-ietf-httpapi-idempotency-key-header``): pyresilience.asgi and
pyresilience.wsgi import their IdempotencyMiddleware from here.

A request whose method is in ``methods`` and which carries an
``Idempotency-Key`` runs once per key (namespaced by ``scope(request)`` when
given): its first response (status, headers, body) is stored for ``ttl``
seconds and replayed, with ``Idempotent-Replayed: true``, to every retry; a
retry while the first still runs gets 409; the key reused with another
request (method, path and body fingerprint) 422; a missing key 400 when
``required``. 5xx responses and exceptions are not stored (the key is freed so
the client may retry).
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Awaitable, Callable, Iterable, List, MutableMapping, Optional, Tuple

from .idempotency import ACQUIRED, BUSY, OK, _positive, _renewer
from .web import Request, _EnvironRequest, _ScopeRequest, problem, status_line

__all__ = ["AsgiIdempotencyMiddleware", "WsgiIdempotencyMiddleware"]

IDEMPOTENCY_PROBLEM = "https://iana.org/assignments/http-problem-types#idempotency"
Response = Tuple[int, List[Tuple[str, str]], bytes]
MAX_KEY = 255


def _problem(status: int, title: str, detail: str) -> Response:
    body = problem(status, "about:blank", title, detail)
    return status, [("Content-Type", "application/problem+json"),
                    ("Content-Length", str(len(body)))], body


def _fingerprint(method: str, path: str, body: bytes) -> str:
    h = hashlib.sha256(method.encode("latin-1") + b" " + path.encode("utf-8", "replace") + b"\n")
    h.update(body)
    return h.hexdigest()


class _Base:
    def __init__(self, app: Any, store: Any, *, methods: Iterable[str] = ("POST", "PATCH"),
                 required: bool = False, scope: Optional[Callable[[Request], Any]] = None,
                 ttl: float = 86400.0, in_progress_ttl: float = 60.0) -> None:
        for name in ("begin", "complete", "renew", "release"):
            if not callable(getattr(store, name, None)):
                raise TypeError(f"store must be an idempotency store (no {name}()), got {store!r}")
        if isinstance(methods, str):
            raise TypeError(f"methods must be an iterable of method names, got {methods!r}")
        if scope is not None and not callable(scope):
            raise TypeError(f"scope must be a function of the request or None, got {scope!r}")
        self.app = app
        self.store = store
        self.methods = frozenset(m.upper() for m in methods)
        self.required = bool(required)
        self.scope = scope
        self.ttl = float(_positive("ttl", ttl) or 0.0)
        self.in_progress_ttl = float(_positive("in_progress_ttl", in_progress_ttl) or 0.0)
        if self.in_progress_ttl <= 0:
            raise ValueError(f"in_progress_ttl must be > 0, got {in_progress_ttl!r}")

    def _missing(self) -> Optional[Response]:
        if self.required:
            return _problem(400, "Bad Request", "This request needs an Idempotency-Key header.")
        return None

    def _key(self, raw: str, request: Callable[[], Request]) -> Optional[str]:
        if not raw or len(raw) > MAX_KEY:
            return None
        if self.scope is None:
            return raw
        return f"{self.scope(request())}:{raw}"

    @staticmethod
    def _answer(state: int, rec_fp: Any, outcome: Any, fp: str) -> Response:
        if rec_fp != fp:
            return _problem(422, "Unprocessable Content",
                            "This Idempotency-Key was used with another request.")
        if state == BUSY:
            return _problem(409, "Conflict",
                            "A request with this Idempotency-Key is still being processed.")
        status, headers, body = outcome[1]
        hs = [(str(n), str(v)) for n, v in headers]
        hs.append(("Idempotent-Replayed", "true"))
        return int(status), hs, body.encode("latin-1") if isinstance(body, str) else body

    @staticmethod
    def _record(status: int, headers: List[Tuple[str, str]], body: bytes) -> Any:
        return (OK, [status, [[n, v] for n, v in headers], body.decode("latin-1")])


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _aop(store: Any, name: str, *args: Any) -> Any:
    op = getattr(store, name + "_async", None)
    if op is not None:
        return await op(*args)
    return getattr(store, name)(*args)


class AsgiIdempotencyMiddleware(_Base):
    """IdempotencyMiddleware(app, store, *, methods=("POST", "PATCH"), required=False, scope=None, ttl=86400.0, in_progress_ttl=60.0)

    The ``Idempotency-Key`` header for an ASGI app: the first response per key
    stored (in ``store``, an idempotency store) and replayed; 409 while the
    first runs; 422 when the key comes with another request; 400 when
    ``required`` and missing. The request body is read whole before the app
    runs (its fingerprint is part of the check); the response streams through
    to the client while it is recorded."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        raw: Optional[str] = None
        for n, v in scope.get("headers", ()):
            if n == b"idempotency-key":
                raw = v.decode("latin-1").strip()
                break
        if raw is None:
            answer = self._missing()
            if answer is None:
                await self.app(scope, receive, send)
                return
            return await self._send(send, answer)
        key = self._key(raw, lambda: _ScopeRequest(scope))
        if key is None:
            return await self._send(send, _problem(400, "Bad Request",
                                                   f"Idempotency-Key must be 1 to {MAX_KEY} characters."))
        chunks: List[bytes] = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        fp = _fingerprint(scope["method"], scope.get("path", ""), body)
        token = os.urandom(12).hex()
        store = self.store
        state, rec_fp, outcome = await _aop(store, "begin", key, fp, token, self.in_progress_ttl)
        if state != ACQUIRED:
            return await self._send(send, self._answer(state, rec_fp, outcome, fp))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status: List[int] = []
        headers: List[Tuple[str, str]] = []
        parts: List[bytes] = []

        async def record(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status.append(int(msg["status"]))
                headers.extend((n.decode("latin-1"), v.decode("latin-1"))
                               for n, v in msg.get("headers", ()))
            elif msg["type"] == "http.response.body":
                parts.append(bytes(msg.get("body", b"")))
            await send(msg)

        _renewer.add(store, key, token, self.in_progress_ttl)
        try:
            try:
                await self.app(scope, replay, record)
            except BaseException:
                await _aop(store, "release", key, token)
                raise
            if not status or status[0] >= 500:
                await _aop(store, "release", key, token)
            else:
                await _aop(store, "complete", key, token,
                           self._record(status[0], headers, b"".join(parts)), self.ttl)
        finally:
            _renewer.remove(token)

    @staticmethod
    async def _send(send: Send, answer: Response) -> None:
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(n.lower().encode("latin-1"), v.encode("latin-1"))
                                for n, v in headers]})
        await send({"type": "http.response.body", "body": body})


Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]


class WsgiIdempotencyMiddleware(_Base):
    """IdempotencyMiddleware(app, store, *, methods=("POST", "PATCH"), required=False, scope=None, ttl=86400.0, in_progress_ttl=60.0)

    The WSGI twin of :class:`pyresilience.asgi.IdempotencyMiddleware`: the same
    answers. The request body is read whole before the app runs; the first
    response is buffered whole, stored, then sent."""

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in self.methods:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        raw = environ.get("HTTP_IDEMPOTENCY_KEY")
        if raw is None:
            answer = self._missing()
            if answer is None:
                return self.app(environ, start_response)  # type: ignore[no-any-return]
            return self._send(start_response, answer)
        key = self._key(raw.strip(), lambda: _EnvironRequest(dict(environ)))
        if key is None:
            return self._send(start_response, _problem(
                400, "Bad Request", f"Idempotency-Key must be 1 to {MAX_KEY} characters."))
        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH")
        if stream is None:
            body = b""
        elif length:
            body = stream.read(int(length))
        else:
            body = stream.read() if environ.get("HTTP_TRANSFER_ENCODING") else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        fp = _fingerprint(method, environ.get("PATH_INFO", ""), body)
        token = os.urandom(12).hex()
        store = self.store
        state, rec_fp, outcome = store.begin(key, fp, token, self.in_progress_ttl)
        if state != ACQUIRED:
            return self._send(start_response, self._answer(state, rec_fp, outcome, fp))
        got: List[Any] = []

        def capture(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
            got[:] = [status, list(headers)]
            return lambda data: parts.append(data)  # the legacy write()

        parts: List[bytes] = []
        _renewer.add(store, key, token, self.in_progress_ttl)
        try:
            try:
                it = self.app(environ, capture)
                try:
                    for chunk in it:
                        parts.append(chunk)
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
            except BaseException:
                store.release(key, token)
                raise
            code = int(str(got[0]).split(" ", 1)[0]) if got else 500
            body_out = b"".join(parts)
            if not got or code >= 500:
                store.release(key, token)
            else:
                store.complete(key, token, self._record(code, got[1], body_out), self.ttl)
        finally:
            _renewer.remove(token)
        start_response(got[0] if got else status_line(500), got[1] if got else [])
        return [body_out]

    @staticmethod
    def _send(start_response: StartResponse, answer: Response) -> List[bytes]:
        status, headers, body = answer
        start_response(status_line(status), headers)
        return [body]
