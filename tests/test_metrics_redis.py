"""Against a real, throwaway redis-server (test_redis's fixtures): the Redis
counters kept in C (round trips, errors, fallbacks taken) and their series, and
a distributed breaker that keeps its event listeners' view when it switches
between its local and shared paths."""
from __future__ import annotations

import asyncio
import os
from typing import Any, List

import pytest

import pyresilience as pr
from pyresilience import _core, events
from pyresilience.redis_breaker import RedisCircuitBreaker, _SharedPath

if os.environ.get("PRS_SKIP_REDIS"):
    pytest.skip("PRS_SKIP_REDIS is set", allow_module_level=True)
if not _core.HAVE_REDIS:
    pytest.fail("pyresilience was built without hiredis: run `make deps install`", pytrace=False)

from test_redis import Server, backend, own_server, prefix, server  # noqa: E402,F401  (fixtures)


def boom() -> None:
    raise RuntimeError("dependency down")


def test_rejections_reported_after_the_switch_to_the_shared_path(backend: pr.RedisBackend) -> None:
    cb = pr.CircuitBreaker(2, 1, 30, backend=backend, name=prefix(), flush_interval=30)
    seen: List[Any] = []
    cb.add_event_listener(seen.append)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            cb.call(boom)
    # the local trip opened the shared circuit: the object is on its shared path now,
    # and still observed
    assert isinstance(cb, _SharedPath) and events.base_class(type(cb)) is _SharedPath
    assert type(cb) is not _SharedPath
    with pytest.raises(pr.CircuitOpenError):
        cb.call(lambda: 1)

    @cb
    def f() -> int:
        return 1
    with pytest.raises(pr.CircuitOpenError):
        f()
    with pytest.raises(pr.CircuitOpenError):
        asyncio.run(cb.call_async(asyncio.sleep, 0))
    assert [e.kind for e in seen if e.kind == "rejected"] == ["rejected"] * 3
    assert all(e.name == cb.name for e in seen)
    # back to the local path (reset): still observed; the last listener gone: plain again
    cb.reset()
    assert type(cb) is not RedisCircuitBreaker and events.base_class(type(cb)) is RedisCircuitBreaker
    cb.remove_event_listener(seen.append)
    assert type(cb) is RedisCircuitBreaker


def test_listener_added_on_the_shared_path_survives_going_local(backend: pr.RedisBackend) -> None:
    name = prefix()
    cb = pr.CircuitBreaker(1, 1, 30, backend=backend, name=name, flush_interval=30)
    with pytest.raises(RuntimeError):
        cb.call(boom)
    assert type(cb) is _SharedPath
    seen: List[Any] = []
    cb.add_event_listener(seen.append)
    cb.reset()  # shared reset: the local path again, observed
    assert events.base_class(type(cb)) is RedisCircuitBreaker and type(cb) is not RedisCircuitBreaker
    with pytest.raises(RuntimeError):
        cb.call(boom)  # trips again: shared path, observed
    assert events.base_class(type(cb)) is _SharedPath
    with pytest.raises(pr.CircuitOpenError):
        cb.call(lambda: 1)
    assert [e.kind for e in seen if e.kind == "rejected"] == ["rejected"]


def test_round_trips_errors_and_fallbacks_counted(own_server: Server) -> None:
    b = pr.RedisBackend(own_server.url, timeout=0.5, connect_timeout=0.5)
    b.name = "cache"
    allow = pr.RedisRateLimiter(b, "fixed_window", limit=10, window=60, key_prefix=prefix(),
                                on_backend_error="allow")
    allow.name = "edge"
    deny = pr.RedisRateLimiter(b, "gcra", rate=1, burst=1, key_prefix=prefix(),
                               on_backend_error="deny")
    for _ in range(3):
        assert allow.allow("k")
    assert (b.metrics.round_trips, b.metrics.errors) == (3, 0)
    assert allow.metrics == pr.RedisLimiterMetrics("edge", "allow", 0)
    own_server.kill()
    assert allow.allow("k")  # the policy answers
    assert not deny.allow("k")
    m = b.metrics
    assert type(m) is pr.RedisBackendMetrics and m.name == "cache"
    assert m.round_trips == 5 and m.errors == 2
    assert allow.metrics.fallbacks == 1 and deny.metrics.fallbacks == 1
    with pytest.raises(pr.BackendError):  # 'raise': an error, never a fallback
        pr.RedisRateLimiter(b, "gcra", rate=1, burst=1, key_prefix=prefix()).allow("k")
    assert b.metrics.errors == 3

    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families
    from pyresilience.prometheus import Collector
    reg = prometheus_client.CollectorRegistry()
    reg.register(Collector([b, allow, deny]))
    got = {}
    for fam in text_string_to_metric_families(prometheus_client.generate_latest(reg).decode()):
        for smp in fam.samples:
            got[smp.name, tuple(sorted(smp.labels.items()))] = smp.value
    assert got["pyresilience_redis_round_trips_total", (("name", "cache"),)] == 6
    assert got["pyresilience_redis_errors_total", (("name", "cache"),)] == 3
    assert got["pyresilience_redis_fallbacks_total", (("name", "edge"), ("policy", "allow"))] == 1
    assert got["pyresilience_redis_fallbacks_total", (("name", deny.name), ("policy", "deny"))] == 1
    b.close()
