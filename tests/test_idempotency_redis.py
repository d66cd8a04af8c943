"""RedisIdempotencyStore against a real, throwaway redis-server (the fixtures
of test_redis.py): once per key across threads and tasks, replay, mismatch,
owner tokens, TTLs, Cluster-safe keys, round trips, and a SIGKILLed owner
process taken over."""
from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import pyresilience as pr
from pyresilience import idempotency as pi

from test_redis import Server, backend, prefix, server  # noqa: F401  (fixtures)


@pytest.fixture
def store(backend):  # noqa: F811
    return pr.RedisIdempotencyStore(backend, key_prefix=prefix())


def test_first_call_runs_then_replays_json(store):
    idem = pr.Idempotency(store)
    n = []

    def charge(order, amount):
        n.append(order)
        return {"order": order, "amount": amount, "items": (1, 2)}

    first = idem.call("c1", charge, 1, amount=5)
    again = idem.call("c1", charge, 1, amount=5)
    assert first == {"order": 1, "amount": 5, "items": (1, 2)}
    assert again == {"order": 1, "amount": 5, "items": [1, 2]}  # through JSON
    assert n == [1]
    with pytest.raises(pr.IdempotencyKeyMismatch):
        idem.call("c1", charge, 2, amount=5)


def test_record_layout_ttls_and_hash_tag(store, backend):  # noqa: F811
    idem = pr.Idempotency(store, ttl=100.0, in_progress_ttl=30.0)
    assert store.redis_key("a:b") == f"{store.key_prefix}{{a:b}}".encode()
    inside, release = threading.Event(), threading.Event()
    t = threading.Thread(target=idem.call, args=("a:b", lambda: inside.set() or release.wait(10)))
    t.start()
    assert inside.wait(10)
    rk = store.redis_key("a:b")
    assert 0 < backend._command("PTTL", rk) <= 30000
    assert backend._command("HGET", rk, "s") == b"p"
    release.set()
    t.join()
    assert 30000 < backend._command("PTTL", rk) <= 100000
    assert backend._command("HGET", rk, "s") == b"d"


def test_owner_tokens_takeover_and_late_finisher(store, backend):  # noqa: F811
    assert store.begin("k", "fp", "a", 30.0) == (pi.ACQUIRED, "fp", None)
    assert store.begin("k", "fp", "b", 30.0) == (pi.BUSY, "fp", None)
    assert store.renew("k", "a", 30.0) and not store.renew("k", "b", 30.0)
    backend._command("PEXPIRE", store.redis_key("k"), 1)  # the lease runs out
    while backend._command("EXISTS", store.redis_key("k")):
        pass
    assert store.begin("k", "fp", "b", 30.0)[0] == pi.ACQUIRED  # taken over
    assert not store.complete("k", "a", (pi.OK, 1), 10.0)  # the late finisher
    assert not store.release("k", "a")
    assert store.complete("k", "b", (pi.OK, 2), 10.0)
    assert store.begin("k", "fp", "c", 30.0) == (pi.DONE, "fp", (pi.OK, 2))


def test_exceptions_free_or_store(store):
    idem = pr.Idempotency(store)
    with pytest.raises(KeyError):
        idem.call("e", lambda: {}["x"])
    assert idem.call("e", lambda: 3) == 3
    idem2 = pr.Idempotency(store, store_exceptions=True)
    with pytest.raises(ValueError):
        idem2.call("f", lambda: int("x"))
    with pytest.raises(RuntimeError, match="ValueError"):
        idem2.call("f", lambda: 0)


def test_n_threads_one_key_runs_once(store):
    idem = pr.Idempotency(store, wait=30.0)
    n, lock, start = [], threading.Lock(), threading.Barrier(8)
    out = []

    def work():
        with lock:
            n.append(1)
        return "r"

    def caller():
        start.wait()
        out.append(idem.call("one", work))

    ts = [threading.Thread(target=caller) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert n == [1] and out == ["r"] * 8


def test_n_tasks_one_key_runs_once_async(store):
    idem = pr.Idempotency(store, wait=30.0)
    n = []

    async def work(x):
        n.append(x)
        await asyncio.sleep(0.01)
        return {"x": x}

    async def main():
        return await asyncio.gather(*(idem.call_async("one", work, 4) for _ in range(20)))

    assert asyncio.run(main()) == [{"x": 4}] * 20
    assert n == [4]


def test_one_round_trip_per_hit(store, backend):  # noqa: F811
    idem = pr.Idempotency(store)
    idem.call("rt", lambda: 1)

    def calls():
        info = backend._command("INFO", "commandstats").decode()
        return sum(int(line.split("calls=")[1].split(",")[0]) for line in info.splitlines()
                   if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")))

    before = calls()
    for _ in range(10):
        assert idem.call("rt", lambda: 2) == 1
    assert calls() - before == 10
    before = calls()
    idem.call("rt2", lambda: 1)
    assert calls() - before == 2


def test_pickle_serializer_keeps_types(store, backend):  # noqa: F811
    s = pr.RedisIdempotencyStore(backend, key_prefix=store.key_prefix, serializer=pickle)
    idem = pr.Idempotency(s)
    assert idem.call("p", lambda: (1, {2})) == (1, {2})
    assert idem.call("p", lambda: None) == (1, {2})


def test_bad_arguments(backend):  # noqa: F811
    with pytest.raises(TypeError, match="backend"):
        pr.RedisIdempotencyStore(object())
    with pytest.raises(TypeError, match="key_prefix"):
        pr.RedisIdempotencyStore(backend, key_prefix=3)
    with pytest.raises(TypeError, match="serializer"):
        pr.RedisIdempotencyStore(backend, serializer=object())


OWNER = textwrap.dedent("""
    import sys, time, pyresilience as pr
    b = pr.RedisBackend(sys.argv[1])
    idem = pr.Idempotency(pr.RedisIdempotencyStore(b, key_prefix=sys.argv[2]),
                          in_progress_ttl=float(sys.argv[3]))
    def forever():
        print("running", flush=True)
        time.sleep(3600)
    idem.call("job", forever)
""")


def test_sigkilled_owner_process_is_taken_over(store, server):  # noqa: F811
    p = subprocess.Popen([sys.executable, "-c", OWNER, server.url, store.key_prefix, "0.5"],
                         stdout=subprocess.PIPE, cwd=os.path.dirname(__file__))
    try:
        assert p.stdout.readline() == b"running\n"
        idem = pr.Idempotency(store)
        with pytest.raises(pr.IdempotencyInProgress):
            idem.call("job", lambda: "mine")
        p.send_signal(signal.SIGKILL)
        p.wait()
        # nobody renews the dead owner's lease: it expires and we take over
        waiting = pr.Idempotency(store, wait=30.0)
        assert waiting.call("job", lambda: "mine") == "mine"
        assert idem.call("job", lambda: "other") == "mine"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_records_on_a_redis_cluster_live_in_their_keys_slot():
    """On a real local Redis Cluster (test_redis_cluster.py's): each record is
    one key with a TTL, in the slot of its hash tag; the scripts run on that
    slot's primary (the backend does not route by slot yet, as there)."""
    from test_redis_cluster import Cluster, _keys_written, _slot
    c = Cluster()
    try:
        for i, user_key in enumerate(("order:1", "{acct}x", "a}b", "k" * 200)):
            pfx = f"ci{os.getpid()}-{i}:"
            rkey = pr.RedisIdempotencyStore(_Probe(), key_prefix=pfx).redis_key(user_key)
            slot = _slot(c, rkey)
            port = c.owner[slot]
            with pr.RedisBackend(f"redis://127.0.0.1:{port}", timeout=2.0) as b:
                idem = pr.Idempotency(pr.RedisIdempotencyStore(b, key_prefix=pfx), ttl=60.0)
                n = []
                assert idem.call(user_key, lambda: n.append(1) or "r") == "r"
                assert idem.call(user_key, lambda: n.append(1) or "s") == "r"
                assert n == [1]
                written = _keys_written(c, port, pfx)
                assert len(written) == 1
                for k, ttl in written:
                    assert _slot(c, k.encode("latin-1")) == slot and 0 < ttl <= 60000
    finally:
        c.stop()


class _Probe:
    """Stands in for a backend where only the key layout is asked for."""

    def _command(self, *args):  # pragma: no cover - never called
        raise AssertionError(args)


def test_asgi_and_wsgi_middleware_over_the_redis_store(store):
    """The middleware's async store path (begin_async/complete_async) and the
    sync one, on Redis: the first response stored as JSON and replayed."""
    import io

    from pyresilience.asgi import IdempotencyMiddleware as AsgiIdem
    from pyresilience.wsgi import IdempotencyMiddleware as WsgiIdem
    runs = []

    async def app(scope, receive, send):
        body = (await receive())["body"]
        runs.append(body)
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"made " + body})

    mw = AsgiIdem(app, store)

    async def request(key, body):
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg):
            sent.append(msg)

        await mw({"type": "http", "method": "POST", "path": "/x",
                  "headers": [(b"idempotency-key", key.encode())]}, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

    async def main():
        a = await request("k1", b"\xff1")
        b = await request("k1", b"\xff1")
        c = await request("k1", b"2")
        return a, b, c

    a, b, c = asyncio.run(main())
    assert a[0] == b[0] == 201 and a[2] == b[2] == b"made \xff1"
    assert b[1][b"idempotent-replayed"] == b"true" and c[0] == 422
    assert runs == [b"\xff1"]

    def wapp(environ, start_response):
        runs.append(environ["wsgi.input"].read())
        start_response("200 OK", [("X-A", "1")])
        return [b"w"]

    w = WsgiIdem(wapp, store)
    got = []

    def call():
        env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/w", "HTTP_IDEMPOTENCY_KEY": "k2",
               "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc")}
        body = b"".join(w(env, lambda status, headers, exc=None: got.append((status, headers))))
        return got[-1][0], body

    assert call() == ("200 OK", b"w") and call() == ("200 OK", b"w")
    assert ("Idempotent-Replayed", "true") in got[-1][1] and runs[-1] == b"abc" and len(runs) == 2
