"""Idempotency keys: the cost of a stored-result hit, and Redis round trips.

* In process (MemoryIdempotencyStore): ``idem.call(key, fn, *args)`` when the
  key's result is stored - the path of every retry - default fingerprint (a
  hash of the arguments) included. Target: <= 1 us.
* Shared memory (SharedIdempotencyStore, a region in a temporary directory):
  ns per stored-result hit and per first call (begin + complete), and the C
  lookup alone (_core.SharedKV.begin).
* Redis (RedisIdempotencyStore, a throwaway local redis-server): ns per hit,
  and the round trips per call counted by the server (INFO commandstats):
  target 1 per hit, 2 for a first call.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid

import pyresilience as pr


def _charge(order: int, amount: int) -> dict:
    return {"order": order, "amount": amount}


def run(h) -> None:
    h.section("Idempotency: stored-result hit (in process)",
              note="ns per idem.call(key, fn, 7, amount=5) on a stored key, the default "
                   "fingerprint included. Target: <= 1 us.")
    idem = pr.Idempotency(pr.MemoryIdempotencyStore(10000))
    idem.call("k", _charge, 7, amount=5)
    h.time("direct call _charge(7, amount=5)", lambda: _charge(7, amount=5))
    hit = h.time("Idempotency.call hit, kwargs", lambda: idem.call("k", _charge, 7, amount=5))
    idem.call("p", _charge, 7, 5)
    h.time("Idempotency.call hit, positional", lambda: idem.call("p", _charge, 7, 5))
    h.target("hit <= 1 us", hit <= 1000.0)

    h.section("Idempotency: shared-memory store",
              note="ns per idem.call on a SharedIdempotencyStore (pickled results, the "
                   "store's repr fingerprint); the C lookup alone beside it.")
    directory = tempfile.mkdtemp(prefix="prs-bench-")
    region = pr.SharedMemory("bench-idem", directory=directory, size=128 << 20)
    shared = pr.SharedIdempotencyStore(region, max_keys=100000, max_value_bytes=256)
    sidem = pr.Idempotency(shared)
    sidem.call("k", _charge, 7, amount=5)
    h.time("SharedIdempotencyStore hit, kwargs", lambda: sidem.call("k", _charge, 7, amount=5))
    keys = (f"first:{i}" for i in itertools.count())
    h.time("SharedIdempotencyStore first call", lambda: sidem.call(next(keys), _charge, 7, 5))
    kv = shared._kv
    kv.begin(b"raw", b"fp", b"t", 1 << 60, 0)
    kv.complete(b"raw", b"t", b"value", 1 << 60, 0)
    h.time("_core.SharedKV.begin hit (C lookup + copy)",
           lambda: kv.begin(b"raw", b"fp", b"t2", 1000, 1))
    region.unlink()
    shutil.rmtree(directory, ignore_errors=True)

    h.section("Idempotency: Redis store (local redis-server)",
              note="ns per hit; round trips per call counted by the server. Target: one per hit, "
                   "two for a first call.")
    if shutil.which("redis-server") is None:
        h.note("skipped: redis-server is not installed (make deps)")
        return
    from bench_redis import _Server  # type: ignore[import-not-found]
    srv = _Server()
    try:
        backend = pr.RedisBackend(srv.url)
        store = pr.RedisIdempotencyStore(backend, key_prefix="bench:")
        ridem = pr.Idempotency(store)
        ridem.call("k", _charge, 7, amount=5)
        h.time("RedisIdempotencyStore hit", lambda: ridem.call("k", _charge, 7, amount=5))

        def evals() -> int:
            info = backend._command("INFO", "commandstats").decode()
            return sum(int(line.split("calls=")[1].split(",")[0]) for line in info.splitlines()
                       if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")))

        before = evals()
        for _ in range(100):
            ridem.call("k", _charge, 7, amount=5)
        hit_rt = (evals() - before) / 100
        before = evals()
        for _ in range(100):
            ridem.call(uuid.uuid4().hex, _charge, 7, amount=5)
        first_rt = (evals() - before) / 100
        h.value("round trips per hit", hit_rt, "")
        h.value("round trips per first call", first_rt, "")
        h.target("one round trip per hit, two per first call", hit_rt == 1 and first_rt == 2)
        backend.close()
    finally:
        srv.stop()
