"""One limit in a pyresilience.SharedMemory region, exact across the worker
processes of real servers (issue 14): gunicorn with 4 sync workers serving a
WSGI app (tests/web_apps/shared_wsgi.py) and `uvicorn --workers 4` serving an
ASGI app (tests/web_apps/shared_asgi.py), each worker opening the same region
under a pytest tmp directory. The limit is a TokenBucket without refill, so
time never adds to it: far more requests than the limit, fired at once over
many connections, admit exactly the limit in total, and more than one worker
serves them (every response names its worker in X-Pid)."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import pyresilience as pr

TESTS = Path(__file__).resolve().parent
WORKERS = 4
LIMIT = 50
REQUESTS = 400
THREADS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready_pids(directory: Path) -> List[int]:
    return [int(p.name.split(".", 1)[1]) for p in directory.glob("ready.*")]


def _serve(cmd: List[str], port: int, directory: Path, workers: int = WORKERS) -> Iterator[int]:
    """Start the server with the region's directory in its environment; yield
    once every worker (`workers` of them) has opened the region and the port
    accepts. Stopped by its PID. tests/test_idempotency_shared.py uses it too."""
    env = dict(os.environ, PRS_SHARED_DIR=str(directory), PRS_SHARED_LIMIT=str(LIMIT))
    log = directory.parent / (directory.name + ".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            if len(_ready_pids(directory)) >= workers:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _one(port: int) -> Tuple[int, int]:
    """One request on its own connection: (status, the worker's pid)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/api")
        r = conn.getresponse()
        r.read()
        return r.status, int(r.getheader("X-Pid"))
    finally:
        conn.close()


def _burst(port: int) -> Tuple[Counter, Counter]:
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda _: _one(port), range(REQUESTS)))
    return Counter(s for s, _ in results), Counter(p for _, p in results)


def _check(port: int, directory: Path) -> None:
    statuses, pids = _burst(port)
    print(f"\nadmitted {statuses[200]}/{LIMIT} of {REQUESTS}; workers seen {len(pids)}: "
          f"{dict(pids)}")
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    assert set(pids) <= set(_ready_pids(directory))  # only the workers answered
    assert len(pids) > 1                              # and not just one of them
    # the region, opened here as a fifth process, agrees: nothing left
    with pr.SharedMemory("servers", directory=str(directory)) as region:
        api = pr.TokenBucket(LIMIT, 0, shared=region, name="api")
    assert api.available == 0
    assert not api.allow()


@pytest.fixture
def gunicorn_port(tmp_path: Path) -> Iterator[int]:
    pytest.importorskip("gunicorn")
    port = _free_port()
    region_dir = tmp_path / "gunicorn"
    region_dir.mkdir()
    yield from _serve([sys.executable, "-m", "gunicorn", "web_apps.shared_wsgi:app",
                       "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
                       "--worker-class", "sync", "--log-level", "warning"], port, region_dir)


@pytest.fixture
def uvicorn_port(tmp_path: Path) -> Iterator[int]:
    pytest.importorskip("uvicorn")
    port = _free_port()
    region_dir = tmp_path / "uvicorn"
    region_dir.mkdir()
    yield from _serve([sys.executable, "-m", "uvicorn", "web_apps.shared_asgi:app",
                       "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
                       "--log-level", "warning", "--lifespan", "off", "--no-access-log"],
                      port, region_dir)


def test_gunicorn_4_sync_workers_admit_exactly_the_shared_limit(gunicorn_port: int,
                                                                 tmp_path: Path) -> None:
    _check(gunicorn_port, tmp_path / "gunicorn")


def test_uvicorn_4_workers_admit_exactly_the_shared_limit(uvicorn_port: int,
                                                          tmp_path: Path) -> None:
    _check(uvicorn_port, tmp_path / "uvicorn")
