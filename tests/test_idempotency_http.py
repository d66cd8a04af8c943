"""The Idempotency-Key middleware behind real servers: uvicorn serving a plain
ASGI app (tests/web_apps/idem_asgi.py) and gunicorn serving a plain WSGI app
(tests/web_apps/idem_wsgi.py). Replay, 409 under concurrent requests, 422,
400, 5xx not stored."""
from __future__ import annotations

import sys
import threading
import uuid
from typing import Iterator

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from test_web_servers import _free_port, _serve  # noqa: E402


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    if request.param == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "web_apps.idem_asgi:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    else:
        pytest.importorskip("gunicorn")
        cmd = [sys.executable, "-m", "gunicorn", "web_apps.idem_wsgi:app", "--bind",
               f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread",
               "--threads", "8", "--log-level", "warning"]
    yield from _serve(cmd, port, tmp_path_factory.mktemp(request.param) / "log")


def key() -> str:
    return uuid.uuid4().hex


def test_first_response_stored_and_replayed(url: str) -> None:
    k = key()
    with httpx.Client(base_url=url) as c:
        r1 = c.post("/charge", content=b'{"amount": 5}', headers={"Idempotency-Key": k})
        r2 = c.post("/charge", content=b'{"amount": 5}', headers={"Idempotency-Key": k})
        assert r1.status_code == r2.status_code == 201
        assert r1.content == r2.content
        assert r2.headers["x-app"] == "yes" and r2.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in r1.headers
        r3 = c.post("/charge", content=b'{"amount": 5}', headers={"Idempotency-Key": key()})
        assert r3.json()["run"]["charge"] == r1.json()["run"]["charge"] + 1


def test_payload_mismatch_is_422(url: str) -> None:
    k = key()
    with httpx.Client(base_url=url) as c:
        assert c.post("/charge", content=b"a", headers={"Idempotency-Key": k}).status_code == 201
        r = c.post("/charge", content=b"b", headers={"Idempotency-Key": k})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 422


def test_required_key_missing_is_400_and_scope_namespaces(url: str) -> None:
    with httpx.Client(base_url=url) as c:
        r = c.post("/strict", content=b"x")
        assert r.status_code == 400 and r.json()["status"] == 400
        k = key()
        a = c.post("/strict", content=b"x", headers={"Idempotency-Key": k, "X-Client": "a"})
        b = c.post("/strict", content=b"x", headers={"Idempotency-Key": k, "X-Client": "b"})
        assert a.json()["run"]["charge"] + 1 == b.json()["run"]["charge"]  # two keys
        assert c.post("/charge", content=b"x").status_code == 201  # not required there
        assert c.get("/count").status_code == 200  # GET passes through


def test_concurrent_requests_get_409_while_the_first_runs(url: str) -> None:
    k = key()
    first = {}

    def run_first() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            first["r"] = c.post("/slow", content=b"s", headers={"Idempotency-Key": k})

    with httpx.Client(base_url=url, timeout=30) as c:
        t = threading.Thread(target=run_first)
        # wait (by polling the server, not the clock) until the first is inside
        slow = c.get("/count").json()["run"]["slow"]
        t.start()
        while c.get("/count").json()["run"]["slow"] == slow:
            pass
        assert c.post("/slow", content=b"s", headers={"Idempotency-Key": k}).status_code == 409
        codes = []
        ts = [threading.Thread(target=lambda: codes.append(
            httpx.post(url + "/slow", content=b"s", headers={"Idempotency-Key": k}).status_code))
            for _ in range(4)]
        for x in ts:
            x.start()
        for x in ts:
            x.join()
        assert codes == [409] * 4
        c.get("/open")
        t.join()
        assert first["r"].status_code == 201
        again = c.post("/slow", content=b"s", headers={"Idempotency-Key": k})
        assert again.status_code == 201 and again.content == first["r"].content


def test_server_errors_are_not_stored(url: str) -> None:
    k = key()
    with httpx.Client(base_url=url) as c:
        r1 = c.post("/fail", content=b"f", headers={"Idempotency-Key": k})
        r2 = c.post("/fail", content=b"f", headers={"Idempotency-Key": k})
        assert r1.status_code == r2.status_code == 503
        assert r2.json()["run"]["fail"] == r1.json()["run"]["fail"] + 1
