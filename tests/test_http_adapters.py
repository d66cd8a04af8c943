"""The HTTP client adapters (pyresilience.httpx, pyresilience.requests)
against a real HTTP server on 127.0.0.1, started here.

The server fails a scripted number of times per test key: 503 without or with
Retry-After (seconds and HTTP-date), 429 with the IETF RateLimit header, 500,
slow answers and reset connections. Retries sleep on a ManualClock, so the
delays are asserted exactly, by how far the clock moved; the only real waits
are the short timeouts of the slow endpoint.
"""
from __future__ import annotations

import asyncio
import email.utils
import http.server
import itertools
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any, Iterator

import pytest

import pyresilience as pr
from pyresilience import retry as retry_module

httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")

from pyresilience.httpx import AsyncResilientTransport, ResilientTransport  # noqa: E402
from pyresilience.requests import ResilientAdapter  # noqa: E402

HTTP_DATE_NOW = 1_700_000_000.0  # the wall clock the tests give the Retry
HTTP_DATE = email.utils.formatdate(HTTP_DATE_NOW + 7, usegmt=True)  # 7 s after it


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: "Counter[str]" = Counter()
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, headers: Any = (), body: bytes = b"ok") -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        key = f"{self.command} {url.path} {q.get('key', '')}"
        with self.lock:
            self.hits[key] += 1
            n = self.hits[key]
        fails = int(q.get("n", "1"))
        kind = url.path.strip("/")
        if kind == "slow":
            time.sleep(float(q.get("s", "1")))
            return self._answer(200, body=b"slow")
        if n > fails:
            return self._answer(200, body=f"ok after {n}".encode())
        if kind == "fail":
            return self._answer(int(q.get("status", "503")))
        if kind == "retry-after":
            return self._answer(503, [("Retry-After", q.get("ra", "2"))])
        if kind == "retry-after-date":
            return self._answer(503, [("Retry-After", HTTP_DATE)])
        if kind == "ratelimit":
            return self._answer(429, [("RateLimit-Policy", '"default";q=10;w=60'),
                                      ("RateLimit", f'"default";r=0;t={q.get("t", "3")}')])
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        return self._answer(404)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # reset connections are on purpose


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


_keys = itertools.count()


def key() -> str:
    return f"k{next(_keys)}"


def hits(method: str, path: str, k: str) -> int:
    return Handler.hits[f"{method} {path} {k}"]


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "_wall_time", lambda: HTTP_DATE_NOW)


def retry_policy(clock: pr.ManualClock, attempts: int = 4, *extra: Any) -> pr.Policy:
    return pr.Policy(pr.Retry(max_attempts=attempts, base_delay=0.5, jitter=False, clock=clock), *extra)


# ---- one client interface over the three adapters ---------------------------------------

class Sync:
    name = "httpx"

    def __init__(self, policy: pr.Policy, **kw: Any) -> None:
        self.client = httpx.Client(transport=ResilientTransport(policy, **kw))

    def request(self, method: str, url: str, **kw: Any) -> Any:
        return self.client.request(method, url, **kw)

    def close(self) -> None:
        self.client.close()


class Async:
    name = "httpx-async"

    def __init__(self, policy: pr.Policy, **kw: Any) -> None:
        self.transport = AsyncResilientTransport(policy, **kw)

    def request(self, method: str, url: str, **kw: Any) -> Any:
        async def go() -> Any:
            async with httpx.AsyncClient(transport=self.transport) as client:
                if "content" in kw and not isinstance(kw["content"], bytes):
                    items = list(kw.pop("content"))

                    async def agen() -> Any:
                        for i in items:
                            yield i
                    kw["content"] = agen()
                return await client.request(method, url, **kw)
        return asyncio.run(go())

    def close(self) -> None:
        pass


class Requests:
    name = "requests"

    def __init__(self, policy: pr.Policy, **kw: Any) -> None:
        self.session = requests.Session()
        self.session.mount("http://", ResilientAdapter(policy, **kw))

    def request(self, method: str, url: str, **kw: Any) -> Any:
        if "content" in kw:
            kw["data"] = kw.pop("content")
        if "timeout" in kw:
            kw["timeout"] = kw["timeout"]
        return self.session.request(method, url, **kw)

    def close(self) -> None:
        self.session.close()


@pytest.fixture(params=[Sync, Async, Requests], ids=["httpx", "httpx-async", "requests"])
def client_cls(request: Any) -> Any:
    return request.param


def status(r: Any) -> int:
    return int(r.status_code)


# ---- tests ---------------------------------------------------------------------------------


def test_retries_until_success(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock))
    k = key()
    r = c.request("GET", f"{base}/fail?n=2&key={k}")
    assert status(r) == 200 and r.text == "ok after 3"
    assert hits("GET", "/fail", k) == 3
    assert clock() == pytest.approx(0.5 + 1.0)  # the two backoff delays, slept on the ManualClock
    c.close()


def test_retry_after_seconds_and_http_date(base: str, client_cls: Any, wall: None) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock))
    r = c.request("GET", f"{base}/retry-after?ra=4&key={key()}")
    assert status(r) == 200
    assert clock() == pytest.approx(4.0)
    r = c.request("GET", f"{base}/retry-after-date?key={key()}")
    assert status(r) == 200
    assert clock() == pytest.approx(4.0 + 7.0)
    c.close()


def test_ietf_ratelimit_header_sets_the_delay(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock))
    r = c.request("GET", f"{base}/ratelimit?t=3&key={key()}")
    assert status(r) == 200
    assert clock() == pytest.approx(3.0)
    c.close()


def test_retry_after_ignored_when_asked(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock), respect_retry_after=False)
    assert status(c.request("GET", f"{base}/retry-after?ra=40&key={key()}")) == 200
    assert clock() == pytest.approx(0.5)
    c.close()


def test_retry_after_beyond_the_deadline_ends_at_once(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(pr.Policy(pr.Timeout(5), pr.Retry(max_attempts=4, base_delay=0.5, clock=clock)))
    k = key()
    r = c.request("GET", f"{base}/retry-after?ra=3600&key={k}")
    assert status(r) == 503  # the last response
    assert hits("GET", "/retry-after", k) == 1 and clock() == 0.0
    c.close()


def test_exhausted_returns_last_response_or_raises(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock, 3))
    k = key()
    r = c.request("GET", f"{base}/fail?n=10&key={k}")
    assert status(r) == 503 and hits("GET", "/fail", k) == 3
    c.close()
    c = client_cls(retry_policy(clock, 2), return_last_response=False)
    with pytest.raises(pr.RetryExhausted) as info:
        c.request("GET", f"{base}/fail?n=10&key={key()}")
    assert status(info.value.last_result) == 503
    c.close()


def test_non_idempotent_methods_are_not_retried(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock))
    k = key()
    r = c.request("POST", f"{base}/fail?n=1&key={k}", content=b"body")
    assert status(r) == 503 and hits("POST", "/fail", k) == 1
    k = key()
    r = c.request("PUT", f"{base}/fail?n=1&key={k}", content=b"body")  # idempotent: retried
    assert status(r) == 200 and hits("PUT", "/fail", k) == 2
    c.close()


def test_a_body_that_cannot_be_replayed_is_not_retried(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock))
    k = key()
    r = c.request("PUT", f"{base}/fail?n=1&key={k}", content=iter([b"a", b"b"]))
    assert status(r) == 503 and hits("PUT", "/fail", k) == 1
    c.close()


def test_failure_statuses_open_the_breaker(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    breaker = pr.CircuitBreaker(failure_threshold=2, timeout_seconds=10, clock=clock)
    c = client_cls(pr.Policy(breaker))
    k = key()
    for _ in range(2):
        assert status(c.request("GET", f"{base}/fail?n=5&status=500&key={k}")) == 500
    assert breaker.state == "open"
    with pytest.raises(pr.CircuitOpenError):
        c.request("GET", f"{base}/fail?n=5&status=500&key={k}")
    assert hits("GET", "/fail", k) == 2
    clock.advance(11)
    for _ in range(2):  # half open, then closed by successes
        assert status(c.request("GET", f"{base}/fail?n=0&key={key()}")) == 200
    assert breaker.state == "closed"
    # a 4xx is an answer, not a failure
    assert status(c.request("GET", f"{base}/nowhere?n=5&key={key()}")) == 404
    assert breaker.metrics.failures == 2 and breaker.state == "closed"
    c.close()


def test_a_non_retried_failure_status_is_recorded_once_not_retried(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    breaker = pr.CircuitBreaker(failure_threshold=5, clock=clock)
    c = client_cls(retry_policy(clock, 4, breaker))
    k = key()
    r = c.request("GET", f"{base}/fail?n=5&status=500&key={k}")  # 500: a failure, not a retry status
    assert status(r) == 500 and hits("GET", "/fail", k) == 1
    assert breaker.metrics.consecutive_failures == 1
    c.close()


def test_reset_connections_are_retried(base: str, client_cls: Any) -> None:
    clock = pr.ManualClock()
    c = client_cls(retry_policy(clock))
    k = key()
    r = c.request("GET", f"{base}/reset?n=2&key={k}")
    assert status(r) == 200 and hits("GET", "/reset", k) == 3
    c.close()


def test_attempt_timeout_inside_the_breaker_is_a_failure(base: str, client_cls: Any) -> None:
    breaker = pr.CircuitBreaker(failure_threshold=1)
    c = client_cls(pr.Policy(breaker, pr.Timeout(0.05)))
    with pytest.raises(pr.TimeoutExceeded) as info:
        c.request("GET", f"{base}/slow?s=2&key={key()}")
    cause = info.value.__cause__
    assert isinstance(cause, (httpx.TimeoutException, requests.Timeout, TimeoutError))
    assert breaker.state == "open"
    c.close()


def test_the_request_timeout_is_the_smaller_one(base: str, client_cls: Any) -> None:
    # the client's own timeout is shorter than the deadline: its own error, not ours
    c = client_cls(pr.Policy(pr.Timeout(30)))
    with pytest.raises((httpx.TimeoutException, requests.Timeout)):
        c.request("GET", f"{base}/slow?s=2&key={key()}", timeout=0.05)
    c.close()


def test_adapters_refuse_a_non_policy() -> None:
    with pytest.raises(TypeError, match="Policy"):
        ResilientTransport(pr.Retry())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Policy"):
        ResilientAdapter(pr.Retry())  # type: ignore[arg-type]


def test_importing_pyresilience_imports_no_http_client() -> None:
    import subprocess
    code = ("import sys, pyresilience as pr; pr.Policy(pr.Timeout(1)); "
            "print('httpx' in sys.modules, 'requests' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
