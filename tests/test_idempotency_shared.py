"""SharedIdempotencyStore: idempotency records in a SharedMemory region, shared
by processes (fork, spawn, unrelated `python -c` ones, gunicorn and uvicorn
workers): the store interface with a ManualClock, Idempotency over it, sizes
and bounds, exactly-once across processes, a SIGKILLed owner taken over, a
kill loop, and the HTTP middleware behind real servers."""
from __future__ import annotations

import asyncio
import faulthandler
import http.client
import json
import multiprocessing
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import pyresilience as pr
import pyresilience.idempotency as pi
from test_shared_servers import _free_port, _serve  # the same server start and stop

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def region(tmp_path: Path) -> Iterator[pr.SharedMemory]:
    with pr.SharedMemory("idem", directory=str(tmp_path), size=4 << 20) as r:
        yield r


def store_of(region: pr.SharedMemory, **kw: Any) -> pr.SharedIdempotencyStore:
    kw.setdefault("max_keys", 64)
    kw.setdefault("max_value_bytes", 1024)
    return pr.SharedIdempotencyStore(region, **kw)


# -- the store interface (one process, a ManualClock) -----------------------

def test_store_owner_tokens_leases_and_ttl(region):
    clock = pr.ManualClock()
    store = store_of(region, clock=clock)
    assert store.begin("k", "fp", "a", 1.0) == (pi.ACQUIRED, "fp", None)
    assert store.begin("k", "fp", "b", 1.0) == (pi.BUSY, "fp", None)
    state, rec_fp, _ = store.begin("k", "other", "b", 1.0)
    assert state == pi.BUSY and rec_fp != "other"  # another payload's record
    assert store.renew("k", "a", 1.0) and not store.renew("k", "b", 1.0)
    clock.advance(0.5)
    assert store.renew("k", "a", 1.0)  # renewed: lives to 1.5
    clock.advance(0.9)
    assert store.begin("k", "fp", "b", 1.0)[0] == pi.BUSY
    clock.advance(0.2)
    assert store.begin("k", "fp", "b", 1.0)[0] == pi.ACQUIRED  # taken over
    assert not store.complete("k", "a", (pi.OK, 1), 10.0)       # the late finisher
    assert not store.release("k", "a")
    assert store.complete("k", "b", (pi.OK, {"n": 2}), 10.0)
    assert store.begin("k", "fp", "c", 1.0) == (pi.DONE, "fp", (pi.OK, {"n": 2}))
    assert store.peek("k") == (pi.DONE, None, (pi.OK, {"n": 2}))
    assert not store.renew("k", "b", 1.0)
    clock.advance(10.0)
    assert store.peek("k") is None  # expired
    assert store.begin("k", "new", "d", 1.0)[0] == pi.ACQUIRED
    assert store.release("k", "d") and len(store) == 0
    assert store.check()


def test_the_areas_methods_name_a_wrong_argument(region):
    """SharedKV's declared methods (tools/decl_kv.py): a bytes argument that is
    not bytes, or an int that is not an int, is named with its value."""
    from pyresilience import _core

    kv = _core.SharedKV(region, "args", max_keys=4, max_value_bytes=16)
    assert (kv.max_keys, kv.max_key_bytes, kv.max_value_bytes) == (4, 256, 16)  # the declared default
    with pytest.raises(TypeError, match=r"^fp must be bytes, not str: 'x'$"):
        kv.begin(b"k", "x", b"t", 1, 0)
    with pytest.raises(TypeError, match=r"^now_ns must be an int"):
        kv.renew(b"k", b"t", 1, 0.5)
    with pytest.raises(TypeError, match=r"takes at most 1 positional argument|argument"):
        kv.delete(b"k", b"x")
    assert kv.begin(b"k", b"f", b"t", 10, 0) == (0, True, None)
    assert kv.complete(b"k", b"t", b"v", 100, 1) and kv.peek(b"k", b"f") == (1, True, b"v", 101)
    assert kv.delete(b"k") and not kv.release(b"k", b"t")
    with pytest.raises(ValueError, match="larger than the shared area 'args'"):
        kv.complete(b"k", b"t", b"x" * 17, 1, 0)


def test_idempotency_over_the_shared_store(region):
    idem = pr.Idempotency(store_of(region))
    runs: List[int] = []

    def charge(order: int, amount: int) -> dict:
        runs.append(order)
        return {"order": order, "amount": amount}

    assert idem.call("o1", charge, 1, amount=5) == {"order": 1, "amount": 5}
    assert idem.call("o1", charge, 1, amount=5) == {"order": 1, "amount": 5}
    assert runs == [1]
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("o1", charge, 1, amount=6)

    def boom() -> None:
        runs.append(0)
        raise KeyError("x")

    for _ in range(2):  # not stored: the key is freed, the next call runs again
        with pytest.raises(KeyError):
            idem.call("b", boom)
    assert runs == [1, 0, 0]
    stored = pr.Idempotency(store_of(region), store_exceptions=True)
    for _ in range(2):
        with pytest.raises(KeyError):
            stored.call("c", boom)
    assert runs == [1, 0, 0, 0]

    @idem.with_key(lambda order, **_: f"charge:{order}")
    def decorated(order: int, amount: int = 1) -> int:
        runs.append(order)
        return order * 10

    @idem.with_key(lambda order, **_: f"acharge:{order}")
    async def adecorated(order: int) -> int:
        runs.append(order)
        return order * 100

    assert decorated(7) == decorated(7) == 70
    assert asyncio.run(adecorated(8)) == asyncio.run(adecorated(8)) == 800

    async def acall() -> int:
        return await idem.call_async("ak", asyncio.sleep, 0, 5)

    assert asyncio.run(acall()) == asyncio.run(acall()) == 5
    assert runs == [1, 0, 0, 0, 7, 8]


def test_waiters_get_the_result_across_threads(region):
    store = store_of(region)
    idem = pr.Idempotency(store, wait=30.0)
    runs: List[int] = []

    def slow() -> str:
        runs.append(1)
        time.sleep(0.2)
        return "r"

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: idem.call("t", slow), range(8)))
    assert got == ["r"] * 8 and runs == [1]


def test_bounded_evicts_results_never_leases(region):
    clock = pr.ManualClock()
    store = store_of(region, max_keys=2, clock=clock)
    for k in ("a", "b"):
        assert store.begin(k, 0, "t" + k, 10.0)[0] == pi.ACQUIRED
        assert store.complete(k, "t" + k, (pi.OK, k), 100.0)
        clock.advance(1.0)
    assert store.begin("c", 0, "tc", 10.0)[0] == pi.ACQUIRED  # a, the oldest, goes
    assert len(store) == 2 and store.peek("a") is None and store.peek("b") is not None
    store.clear()
    assert store.begin("x", 0, "t1", 10.0)[0] == pi.ACQUIRED
    assert store.begin("y", 0, "t2", 10.0)[0] == pi.ACQUIRED
    with pytest.raises(pr.IdempotencyInProgress, match="full of in-progress"):
        store.begin("z", 0, "t3", 10.0)
    clock.advance(10.0)  # the leases ran out: room again
    assert store.begin("z", 0, "t3", 10.0)[0] == pi.ACQUIRED
    assert store.check()


def test_sizes_and_clear_errors(region, tmp_path, caplog):
    store = store_of(region, max_keys=4, max_value_bytes=64)
    idem = pr.Idempotency(store)
    big = "x" * 500
    assert idem.call("big", lambda: big) == big  # the caller still gets its result,
    assert "not stored" in caplog.text and "max_value_bytes=64" in caplog.text
    assert store.peek("big") is None             # and the key is free again
    stored = pr.Idempotency(store, store_exceptions=True)

    def huge_error() -> None:
        raise KeyError("e" * 500)

    with pytest.raises(KeyError):  # its own exception, not the store's refusal
        stored.call("err", huge_error)
    assert store.peek("err") is None
    long_key = "k" * 1000                          # stored as its hash
    assert idem.call(long_key, lambda: 1) == 1 and idem.call(long_key, lambda: 2) == 1
    with pytest.raises(ValueError, match="max_keys=4.*asked for max_keys=5"):
        pr.SharedIdempotencyStore(region, max_keys=5, max_value_bytes=64)
    with pytest.raises(ValueError, match="max_keys"):
        pr.SharedIdempotencyStore(region, name="other", max_keys=0)
    with pytest.raises(ValueError, match="max_value_bytes"):
        pr.SharedIdempotencyStore(region, name="other", max_value_bytes=2.5)
    with pytest.raises(TypeError, match="SharedMemory"):
        pr.SharedIdempotencyStore("not a region")
    with pr.SharedMemory("small", directory=str(tmp_path), size=64 << 10) as small:
        with pytest.raises(OSError, match="larger size="):
            pr.SharedIdempotencyStore(small)  # 1024 x 4 KiB does not fit in 64 KiB
        before = small.free_bytes
        pr.SharedIdempotencyStore(small, max_keys=8, max_value_bytes=1000)
        assert before - small.free_bytes == pr.SharedIdempotencyStore.bytes_needed(8, 256, 1000)


def test_json_serializer(region):
    store = store_of(region, serializer=json)
    idem = pr.Idempotency(store)
    assert idem.call("j", lambda: {"a": [1, 2]}) == {"a": [1, 2]}
    assert idem.call("j", lambda: None) == {"a": [1, 2]}


# -- processes ----------------------------------------------------------------

def _count_runs(path: str) -> int:
    try:
        with open(path) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def _worker(directory: str, log: str, key: str) -> Any:
    region = pr.SharedMemory("idem", directory=directory)
    idem = pr.Idempotency(pr.SharedIdempotencyStore(region, max_keys=64, max_value_bytes=1024),
                          wait=60.0)

    def run() -> dict:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        time.sleep(0.1)
        return {"ran_in": os.getpid()}

    return idem.call(key, run)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_run_a_key_exactly_once(region, tmp_path, method):
    store_of(region)  # created here, opened by the children
    log = str(tmp_path / f"runs.{method}")
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(6) as pool:
        got = pool.starmap(_worker, [(str(tmp_path), log, "once")] * 12)
    assert _count_runs(log) == 1
    assert len({g["ran_in"] for g in got}) == 1  # every caller got the one result


def test_a_store_inherited_across_fork_keeps_working(region):
    store = store_of(region)
    idem = pr.Idempotency(store)
    assert idem.call("parent", lambda: "p") == "p"
    pid = os.fork()
    if pid == 0:  # the child uses the parent's objects as they are
        faulthandler.dump_traceback_later(30, exit=True)  # a hang fails, with its stack
        ok = idem.call("parent", lambda: "x") == "p" and idem.call("child", lambda: "c") == "c"
        os._exit(0 if ok and store.check() else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert idem.call("child", lambda: "again") == "c"


def test_fork_while_the_renewer_holds_its_lock(region):
    from pyresilience.idempotency import _renewer
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _renewer._cond:
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child's renewer must not wait for a thread it does not have
            faulthandler.dump_traceback_later(10, exit=True)
            ok = pr.Idempotency(store_of(region)).call("f", lambda: 1) == 1
            os._exit(0 if ok else 1)
    finally:
        release.set()
        t.join()
    assert os.waitpid(pid, 0)[1] == 0


UNRELATED = textwrap.dedent("""
    import os, sys, time, json
    import pyresilience as pr
    region = pr.SharedMemory("idem", directory=sys.argv[1])
    store = pr.SharedIdempotencyStore(region, max_keys=64, max_value_bytes=1024)
    idem = pr.Idempotency(store, wait=60.0, in_progress_ttl=float(sys.argv[4]))
    def run():
        fd = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"%d\\n" % os.getpid())
        os.close(fd)
        if sys.argv[5] == "hang":
            print("running", flush=True)
            time.sleep(3600)
        time.sleep(0.1)
        return os.getpid()
    print(json.dumps(idem.call(sys.argv[3], run)), flush=True)
""")


def _python(tmp_path: Path, log: str, key: str, ttl: float = 60.0,
            mode: str = "run") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", UNRELATED, str(tmp_path), log, key, str(ttl),
                             mode], stdout=subprocess.PIPE, text=True)


def test_unrelated_python_processes_run_a_key_exactly_once(region, tmp_path):
    store_of(region)
    log = str(tmp_path / "runs.unrelated")
    procs = [_python(tmp_path, log, "k") for _ in range(6)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({o.strip() for o in outs}) == 1  # one pid: the one run's result
    assert _count_runs(log) == 1


def test_sigkilled_owner_is_taken_over_after_in_progress_ttl(region, tmp_path):
    store = store_of(region)
    log = str(tmp_path / "runs.kill")
    owner = _python(tmp_path, log, "k", ttl=0.5, mode="hang")
    assert owner.stdout is not None and owner.stdout.readline().strip() == "running"
    owner.kill()
    owner.wait()
    assert store.peek("k")[0] == pi.BUSY  # its lease stays until it runs out ...
    idem = pr.Idempotency(store, wait=30.0, in_progress_ttl=5.0)
    assert idem.call("k", lambda: "second") == "second"  # ... then another caller takes over
    assert _count_runs(log) == 1 and store.check()


def test_a_waiting_process_is_woken_by_the_owner_in_another(region, tmp_path):
    store_of(region)
    log = str(tmp_path / "runs.wake")
    first = _python(tmp_path, log, "w")
    while _count_runs(log) == 0:
        time.sleep(0.01)
    idem = pr.Idempotency(store_of(region), wait=60.0)
    got = idem.call("w", lambda: "not me")
    assert got == json.loads(first.communicate(timeout=60)[0])
    assert _count_runs(log) == 1


def _hammer(directory: str, seed: int) -> None:
    region = pr.SharedMemory("idem", directory=directory)
    store = pr.SharedIdempotencyStore(region, max_keys=16, max_value_bytes=64)
    rnd = random.Random(seed)
    i = 0
    while True:
        i += 1
        key, tok = f"k{rnd.randrange(40)}", f"t{i}"
        try:
            state = store.begin(key, "f", tok, 0.001)[0]
        except pr.IdempotencyInProgress:
            continue
        if state == pi.ACQUIRED:
            if i % 3:
                store.complete(key, tok, (pi.OK, i), 0.002)
            else:
                store.release(key, tok)
        elif i % 11 == 0:
            store.delete(key)


def test_kill_loop_leaves_the_store_consistent(region, tmp_path):
    store = store_of(region, max_keys=16, max_value_bytes=64)
    ctx = multiprocessing.get_context("fork")
    rnd = random.Random(7)
    kills = 0
    for round_ in range(60):
        procs = [ctx.Process(target=_hammer, args=(str(tmp_path), round_ * 10 + j))
                 for j in range(3)]
        for p in procs:
            p.start()
        time.sleep(rnd.uniform(0.02, 0.08))
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join()
            kills += p.exitcode == -signal.SIGKILL
        assert store.check()
    assert kills == 180
    # and it still deduplicates: one run for one key
    runs: List[int] = []
    idem = pr.Idempotency(store)
    assert [idem.call("after", lambda: runs.append(1) or 5) for _ in range(3)] == [5, 5, 5]
    assert runs == [1] and store.check()


# -- the HTTP middleware behind real servers ----------------------------------



def _post(port: int, key: str, body: bytes) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/charge", body=body, headers={"Idempotency-Key": key})
        r = conn.getresponse()
        data = r.read()
        return r.status, r.getheader("Idempotent-Replayed"), int(r.getheader("X-Pid")), data
    finally:
        conn.close()


def _check_server(port: int, directory: Path) -> None:
    runs = directory / "runs.log"
    # one slow first request; replays fired at once land on other workers
    with ThreadPoolExecutor(16) as pool:
        first = pool.submit(_post, port, "pay-1", b"amount=5")
        time.sleep(0.05)
        during = list(pool.map(lambda _: _post(port, "pay-1", b"amount=5"), range(16)))
    status, replayed, first_pid, body = first.result()
    assert status == 201 and replayed is None
    assert {s for s, *_ in during} <= {201, 409}  # replayed, or 409 while it ran
    # afterwards: every worker replays the stored response
    after = [_post(port, "pay-1", b"amount=5") for _ in range(24)]
    assert {(s, rp, d) for s, rp, _, d in after} == {(201, "true", body)}
    assert {p for *_, p, _ in after} - {first_pid}, "no replay came from another worker"
    assert runs.read_text().count("amount=5") == 1
    assert _post(port, "pay-1", b"amount=6")[0] == 422  # the key with another payload
    # concurrent first requests of a new key: one run across the workers
    with ThreadPoolExecutor(16) as pool:
        burst = list(pool.map(lambda _: _post(port, "pay-2", b"amount=7"), range(32)))
    assert {s for s, *_ in burst} <= {201, 409} and runs.read_text().count("amount=7") == 1


@pytest.fixture
def gunicorn_port(tmp_path: Path) -> Iterator[int]:
    pytest.importorskip("gunicorn")
    port = _free_port()
    d = tmp_path / "gunicorn"
    d.mkdir()
    yield from _serve([sys.executable, "-m", "gunicorn", "web_apps.idem_shared_wsgi:app",
                       "--bind", f"127.0.0.1:{port}", "--workers", "4", "--worker-class",
                       "sync", "--log-level", "warning"], port, d, 4)


@pytest.fixture
def uvicorn_port(tmp_path: Path) -> Iterator[int]:
    pytest.importorskip("uvicorn")
    port = _free_port()
    d = tmp_path / "uvicorn"
    d.mkdir()
    yield from _serve([sys.executable, "-m", "uvicorn", "web_apps.idem_shared_asgi:app",
                       "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                       "--log-level", "warning", "--lifespan", "off", "--no-access-log"],
                      port, d, 2)


def test_gunicorn_4_sync_workers_replay_across_workers(gunicorn_port, tmp_path):
    _check_server(gunicorn_port, tmp_path / "gunicorn")


def test_uvicorn_2_workers_replay_across_workers(uvicorn_port, tmp_path):
    _check_server(uvicorn_port, tmp_path / "uvicorn")


def test_pickle_is_the_default_serializer(region):
    store = store_of(region)
    assert store.serializer is pickle
    assert "SharedIdempotencyStore" in repr(store)
