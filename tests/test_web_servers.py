"""The web middleware behind real servers: uvicorn serving a Starlette app
(tests/web_apps/starlette_app.py) and gunicorn serving a Flask app
(tests/web_apps/flask_app.py), on free ports of 127.0.0.1, started here and
stopped by PID. httpx is the client; the structured fields are parsed with
http_sf, as a client would. Limits never refill within a test (windows of
an hour, buckets without refill), so the admitted counts are exact."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

httpx = pytest.importorskip("httpx")
http_sf = pytest.importorskip("http_sf")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TESTS = Path(__file__).resolve().parent
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(cmd: list, port: int, log: Path) -> Iterator[str]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=TESTS, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
        yield base
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def uvicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    yield from _serve([sys.executable, "-m", "uvicorn", "web_apps.starlette_app:app",
                       "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                       "--ws", "websockets-sansio", "--no-proxy-headers"],
                      port, tmp_path_factory.mktemp("uvicorn") / "log")


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("gunicorn")
    pytest.importorskip("flask")
    port = _free_port()
    yield from _serve([sys.executable, "-m", "gunicorn", "web_apps.flask_app:app",
                       "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread",
                       "--threads", "4", "--log-level", "warning"],
                      port, tmp_path_factory.mktemp("gunicorn") / "log")


def check_headers(r: "httpx.Response", limit: int, remaining: int) -> dict:
    """Every rate-limit header parses, the legacy ones agree with the draft's."""
    h = r.headers
    assert int(h["x-ratelimit-limit"]) == limit
    assert int(h["x-ratelimit-remaining"]) == remaining
    rl = http_sf.parse(h["ratelimit"].encode(), tltype="list")
    pol = http_sf.parse(h["ratelimit-policy"].encode(), tltype="list")
    assert len(rl) == 1
    name, params = rl[0]
    assert params["r"] == remaining
    names = [p[0] for p in pol]
    assert name in names
    assert dict(pol)[name]["q"] == limit
    return {"name": name, "rl": params, "policy": pol}


def check_problem(r: "httpx.Response", policy: str) -> dict:
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == QUOTA_EXCEEDED
    assert body["status"] == 429
    assert body["violated-policies"] == [policy]
    return dict(body)


# -- uvicorn + Starlette ------------------------------------------------------------

def test_uvicorn_exact_count_headers_and_429(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        now = time.time()
        for i in range(3):
            r = c.get("/exact")
            assert r.status_code == 200 and r.text == "hello"
            info = check_headers(r, 3, 2 - i)
            assert info["name"] == "exact"
            assert info["policy"] == [("exact", {"q": 3, "w": 3600})]
            reset = int(r.headers["x-ratelimit-reset"])  # epoch seconds
            assert now < reset <= now + 3601 + 1
            assert 0 < info["rl"]["t"] <= 3600
        r = c.get("/exact")
        check_problem(r, "exact")
        check_headers(r, 3, 0)
        ra = int(r.headers["retry-after"])
        assert 1 <= ra <= 3600
        assert "retry" in r.json()["detail"]
        assert c.get("/free").status_code == 200  # unmatched paths are not limited
        assert "x-ratelimit-limit" not in c.get("/free").headers


def test_uvicorn_never_admissible_has_no_absurd_numbers(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        assert c.get("/never").status_code == 200
        r = c.get("/never")
        check_problem(r, "never")
        assert "retry-after" not in r.headers
        assert "x-ratelimit-reset" not in r.headers
        assert "t" not in http_sf.parse(r.headers["ratelimit"].encode(), tltype="list")[0][1]
        assert "never be admitted" in r.json()["detail"]


def test_uvicorn_spoofed_forwarded_for_from_untrusted_peer_is_ignored(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        codes = [c.get("/ip/untrusted", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(4)]
        assert codes == [200, 200, 429, 429]  # one key: the peer, 127.0.0.1


def test_uvicorn_forwarded_for_from_trusted_peer_is_honoured(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        a = [c.get("/ip/trusted", headers={"X-Forwarded-For": "203.0.113.7"}).status_code
             for _ in range(3)]
        b = [c.get("/ip/trusted", headers={"Forwarded": 'for="[2001:db8::1]:4711"'}).status_code
             for _ in range(3)]
        assert a == [200, 200, 429] and b == [200, 200, 429]


def test_uvicorn_all_or_nothing_across_rules(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        u1 = [c.get("/aon/x", headers={"X-User": "u1"}) for _ in range(4)]
        assert [r.status_code for r in u1] == [200, 200, 429, 429]
        # the denied requests took nothing from the global rule: 3 of 5 left for u2
        r = c.get("/aon/x", headers={"X-User": "u2"})
        assert r.status_code == 200
        info = check_headers(r, 2, 1)  # the most restrictive rule: u2's own (1 left < 2 global)
        assert info["name"] == "aon-user" and info["rl"]["pk"] == b"u2"
        assert [p[0] for p in info["policy"]] == ["aon-global", "aon-user"]
        r = c.get("/aon/x", headers={"X-User": "u2"})
        info = check_headers(r, 2, 0)
        r = c.get("/aon/x", headers={"X-User": "u3"})  # global: 1 left, u3: 1 left -> tie
        assert r.status_code == 200
        assert int(r.headers["x-ratelimit-remaining"]) == 0
        r = c.get("/aon/x", headers={"X-User": "u4"})
        check_problem(r, "aon-global")
        check_headers(r, 5, 0)
        check_problem(u1[2], "aon-user")


def test_uvicorn_exempt_and_custom_response(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        assert [c.get("/ex/health").status_code for _ in range(3)] == [200] * 3
        assert "x-ratelimit-limit" not in c.get("/ex/health").headers
        assert [c.get("/ex/limited").status_code for _ in range(2)] == [200, 429]
        assert c.get("/custom").status_code == 200
        r = c.get("/custom")
        assert r.status_code == 418 and r.text == "custom teapot"
        assert r.headers["x-custom"] == "yes"
        check_headers(r, 1, 0)


def test_uvicorn_streaming_passes_through(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url) as c:
        with c.stream("GET", "/stream") as r:
            chunks = b"".join(r.iter_bytes())
            assert r.status_code == 200
            check_headers(r, 100, 99)
        assert chunks == b"".join(f"chunk{i}\n".encode() for i in range(5))


def test_uvicorn_websocket_limited_at_connect_and_unharmed(uvicorn_url: str) -> None:
    ws_client = pytest.importorskip("websockets.sync.client")
    exc_mod = pytest.importorskip("websockets.exceptions")
    url = uvicorn_url.replace("http://", "ws://") + "/ws"
    for i in range(2):
        with ws_client.connect(url) as ws:
            ws.send(f"m{i}")
            assert ws.recv() == f"echo:m{i}"
    with pytest.raises(exc_mod.InvalidStatus) as info:
        with ws_client.connect(url):
            pass
    assert info.value.response.status_code == 429


def test_uvicorn_concurrency_limit_503(uvicorn_url: str) -> None:
    results: list = []
    with httpx.Client(base_url=uvicorn_url, timeout=20) as c:
        t = threading.Thread(target=lambda: results.append(httpx.get(uvicorn_url + "/slow", timeout=20)))
        t.start()
        deadline = time.monotonic() + 10
        while c.get("/active").text != "1":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.get("/slow")
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 503
        c.get("/release")
        t.join(15)
    assert results and results[0].status_code == 200 and results[0].text == "slow done"


# -- gunicorn + Flask -------------------------------------------------------------

def test_gunicorn_exact_count_and_headers(gunicorn_url: str) -> None:
    with httpx.Client(base_url=gunicorn_url) as c:
        for i in range(3):
            r = c.get("/exact")
            assert r.status_code == 200
            check_headers(r, 3, 2 - i)
        r = c.get("/exact")
        check_problem(r, "exact")
        assert int(r.headers["retry-after"]) >= 1


def test_gunicorn_trusted_proxy_and_per_route_decorator(gunicorn_url: str) -> None:
    with httpx.Client(base_url=gunicorn_url) as c:
        a = [c.get("/ip", headers={"X-Forwarded-For": "198.51.100.1, 127.0.0.1"}).status_code
             for _ in range(3)]
        b = [c.get("/ip", headers={"X-Forwarded-For": "198.51.100.2"}).status_code for _ in range(3)]
        assert a == [200, 200, 429] and b == [200, 200, 429]
        rs = [c.get("/route") for _ in range(3)]
        assert [r.status_code for r in rs] == [200, 200, 429]
        assert rs[0].text == "route"
        check_headers(rs[1], 2, 0)
        assert 0 < int(rs[1].headers["x-ratelimit-reset"]) <= 3600  # reset="delta"
        check_problem(rs[2], "route")


def test_gunicorn_concurrency_limit_503(gunicorn_url: str) -> None:
    results: list = []
    with httpx.Client(base_url=gunicorn_url, timeout=20) as c:
        t = threading.Thread(target=lambda: results.append(httpx.get(gunicorn_url + "/slow", timeout=20)))
        t.start()
        deadline = time.monotonic() + 10
        while c.get("/active").text != "1":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.get("/slow")
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert json.loads(r.text)["status"] == 503
        c.get("/release")
        t.join(15)
    assert results and results[0].status_code == 200
    with httpx.Client(base_url=gunicorn_url) as c:
        assert c.get("/active").text == "0"  # the slot came back when the response was closed


def test_uvicorn_redis_rule_never_blocks_the_loop(tmp_path: Path) -> None:
    """A Redis rule whose server is paused: requests to the limited path wait
    (in worker threads), while an unlimited request is served meanwhile; a
    blocking middleware would serve it only after the Redis calls returned."""
    if os.environ.get("PRS_SKIP_REDIS"):
        pytest.skip("PRS_SKIP_REDIS is set")
    import pyresilience as pr
    if not pr._core.HAVE_REDIS:
        pytest.skip("built without hiredis")
    from test_redis import Server
    redis = Server()
    redis.start()
    port = _free_port()
    env_before = os.environ.get("PRS_WEB_REDIS_URL")
    os.environ["PRS_WEB_REDIS_URL"] = redis.url
    try:
        gen = _serve([sys.executable, "-m", "uvicorn", "web_apps.starlette_app:redis_app",
                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                      "--no-proxy-headers"], port, tmp_path / "log")
        url = next(gen)
        try:
            with httpx.Client(base_url=url, timeout=20) as c:
                codes = [c.get("/redis").status_code for _ in range(4)]
                assert codes == [200, 200, 200, 429]  # exact, across the Redis server
                r = c.get("/redis")
                check_problem(r, "redis")
                assert redis.proc is not None
                redis.proc.send_signal(signal.SIGSTOP)
                try:
                    done: list = []
                    ts = [threading.Thread(target=lambda: done.append(
                        ("redis", httpx.get(url + "/redis", timeout=20).status_code))) for _ in range(3)]
                    for t in ts:
                        t.start()
                    time.sleep(0.3)  # let them reach the server and wait on Redis
                    free = c.get("/free")
                    done.append(("free", free.status_code))
                finally:
                    redis.proc.send_signal(signal.SIGCONT)
                for t in ts:
                    t.join(20)
                assert done[0] == ("free", 200)  # served while the Redis requests waited
                assert sorted(done[1:]) == [("redis", 429)] * 3  # Redis back: still denied
        finally:
            gen.close()
    finally:
        if env_before is None:
            os.environ.pop("PRS_WEB_REDIS_URL", None)
        else:
            os.environ["PRS_WEB_REDIS_URL"] = env_before
        redis.stop()
