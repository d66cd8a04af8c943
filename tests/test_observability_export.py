"""The exporters: a real prometheus_client registry scraped and parsed (text
format), and the OpenTelemetry SDK with an in-memory reader (issue 16)."""
import pytest

import pyresilience as pr

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _objects():
    clock = pr.ManualClock()
    cb = pr.CircuitBreaker(1, 1, 10, name="db", clock=clock)
    with pytest.raises(ZeroDivisionError):
        cb.call(lambda: 1 / 0)
    with pytest.raises(pr.CircuitOpenError):
        cb.call(lambda: 1)
    lim = pr.TokenBucket(5, 1, clock=clock)
    lim.name = "api"
    lim.allow(2)
    bh = pr.Bulkhead("pool", 2, 0)
    bh.acquire()
    bh.acquire()
    with pytest.raises(pr.BulkheadFullError):
        bh.acquire()
    q = pr.BoundedQueue(1, "drop_newest")
    q.name = "jobs"
    q.put(1)
    q.put(2)
    r = pr.Retry(max_attempts=2, base_delay=0, clock=clock, name="fetch")
    with pytest.raises(OSError):
        r.call(lambda: (_ for _ in ()).throw(OSError("x")))
    return [cb, lim, bh, q, r]


def _scrape(registry):
    samples = {}
    for fam in text_string_to_metric_families(prometheus_client.generate_latest(registry).decode()):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_prometheus_scrape_parsed():
    from pyresilience.prometheus import Collector
    objs = _objects()
    reg = prometheus_client.CollectorRegistry()
    reg.register(Collector(objs))
    s = _scrape(reg)
    assert s["pyresilience_ratelimiter_available", (("name", "api"),)] == 3.0
    cb = "pyresilience_circuitbreaker_calls_total"
    assert s[cb, (("kind", "failed"), ("name", "db"))] == 1
    assert s[cb, (("kind", "not_permitted"), ("name", "db"))] == 1
    assert s[cb, (("kind", "successful"), ("name", "db"))] == 0
    assert s["pyresilience_circuitbreaker_state", (("name", "db"), ("state", "open"))] == 1
    assert s["pyresilience_circuitbreaker_state", (("name", "db"), ("state", "closed"))] == 0
    assert s["pyresilience_circuitbreaker_failure_rate", (("name", "db"),)] == 1.0
    assert s["pyresilience_circuitbreaker_transitions_total",
             (("from_state", "closed"), ("name", "db"), ("to_state", "open"))] == 1
    bh = "pyresilience_bulkhead_calls_total"
    assert s[bh, (("kind", "permitted"), ("name", "pool"))] == 2
    assert s[bh, (("kind", "rejected"), ("name", "pool"))] == 1
    assert s["pyresilience_bulkhead_available_concurrent_calls", (("name", "pool"),)] == 0
    assert s["pyresilience_bulkhead_waiting", (("name", "pool"),)] == 0
    qi = "pyresilience_queue_items_total"
    assert s[qi, (("kind", "received"), ("name", "jobs"))] == 2
    assert s[qi, (("kind", "dropped"), ("name", "jobs"))] == 1
    assert s["pyresilience_queue_size", (("name", "jobs"),)] == 1
    assert s["pyresilience_retry_calls_total", (("kind", "failed_with_retry"), ("name", "fetch"))] == 1
    assert s["pyresilience_retry_attempts_total", (("name", "fetch"),)] == 1


def test_prometheus_default_is_every_live_named_object():
    from pyresilience.prometheus import Collector
    objs = _objects()
    unnamed = pr.TokenBucket(7, 1)
    reg = prometheus_client.CollectorRegistry()
    reg.register(Collector())
    s = _scrape(reg)
    names = {dict(k[1]).get("name") for k in s}
    assert {"db", "api", "pool", "jobs", "fetch"} <= names
    assert unnamed.name not in names
    del objs


def test_otel_in_memory_reader():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from pyresilience import otel
    objs = _objects()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(provider, objects=objs)
    got = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "pyresilience"
            for m in sm.metrics:
                for p in m.data.data_points:
                    got[m.name, tuple(sorted(p.attributes.items()))] = p.value
    assert got["pyresilience.circuitbreaker.calls", (("kind", "failed"), ("name", "db"))] == 1
    assert got["pyresilience.circuitbreaker.state", (("name", "db"), ("state", "open"))] == 1
    assert got["pyresilience.ratelimiter.available", (("name", "api"),)] == 3.0
    assert got["pyresilience.queue.items", (("kind", "dropped"), ("name", "jobs"))] == 1
    assert got["pyresilience.bulkhead.calls", (("kind", "rejected"), ("name", "pool"))] == 1
    assert got["pyresilience.retry.attempts", (("name", "fetch"),)] == 1
    assert not any(name.endswith("_total") for name, _ in got)


MP_WORKER = r"""
import sys
import pyresilience as pr
from pyresilience.prometheus import MultiProcessWriter
q = pr.BoundedQueue(1, "drop_newest")
q.name = "jobs"
w = MultiProcessWriter([q], registry=None)
for i in range(int(sys.argv[1])):
    q.put(i)
w.write()
w.write()          # a second write adds only the increase (none)
q.put(99)
w.write()
"""

MP_SCRAPE = r"""
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
reg = CollectorRegistry()
MultiProcessCollector(reg)
print(generate_latest(reg).decode())
"""


def test_prometheus_multiprocess_sums_workers(tmp_path):
    import os
    import subprocess
    import sys
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for n in (3, 5):  # two workers: 3 + 1 and 5 + 1 puts; 2 + 1 and 4 + 1 drops
        subprocess.run([sys.executable, "-c", MP_WORKER, str(n)], env=env, check=True, cwd=tmp_path)
    out = subprocess.run([sys.executable, "-c", MP_SCRAPE], env=env, check=True, cwd=tmp_path,
                         capture_output=True, text=True).stdout
    s = {}
    for fam in text_string_to_metric_families(out):
        for smp in fam.samples:
            s[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    assert s["pyresilience_queue_items_total", (("kind", "received"), ("name", "jobs"))] == 10
    assert s["pyresilience_queue_items_total", (("kind", "dropped"), ("name", "jobs"))] == 8
    # livesum: each worker's queue holds one item (until mark_process_dead(pid))
    assert s["pyresilience_queue_size", (("name", "jobs"),)] == 2


def test_every_sample_carries_its_familys_labels():
    # the readers give label values only; the names come from the family
    from pyresilience._metrics import FAMILIES, collect
    objs = _objects()
    objs[0].open()  # a transition sample too
    out = collect(objs)
    assert set(out) == set(FAMILIES)
    seen = 0
    for fam, samples in out.items():
        for labels, value in samples:
            assert tuple(k for k, _ in labels) == fam.labels, fam
            assert all(isinstance(v, str) for _, v in labels), fam
            assert isinstance(value, float)
            seen += 1
    assert seen > 20
    states = {dict(lb)["state"]: v for lb, v in out[next(f for f in FAMILIES if f.metric == "state")]
              if dict(lb)["name"] == "db"}
    assert states == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
