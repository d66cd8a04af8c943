"""The series read from the core's counters: a real prometheus_client registry
scraped and parsed, and the OpenTelemetry SDK with an in-memory reader."""
import pytest

import pyresilience as pr

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _objects():
    clock = pr.ManualClock()
    lim = pr.GCRA(1, 2, clock=clock)
    lim.name = "api"
    for _ in range(3):
        lim.allow()
    keyed = pr.KeyedLimiter(pr.TokenBucket, 1, 0, clock=clock)
    keyed.name = "users"
    keyed.allow("a")
    keyed.allow("a")
    keyed.allow("b")
    r = pr.Retry(max_attempts=2, base_delay=0, clock=clock, name="fetch")

    @r
    def ok():
        return 1
    ok()
    ok()
    bh = pr.Bulkhead("pool", 1, 0)
    with bh:
        pass
    return [lim, keyed, r, bh, ok]


def _scrape(objs):
    from pyresilience.prometheus import Collector
    reg = prometheus_client.CollectorRegistry()
    reg.register(Collector(objs[:4]))
    samples = {}
    for fam in text_string_to_metric_families(prometheus_client.generate_latest(reg).decode()):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_prometheus_core_counters():
    s = _scrape(_objects())
    rl = "pyresilience_ratelimiter_calls_total"
    assert s[rl, (("kind", "admitted"), ("name", "api"))] == 2
    assert s[rl, (("kind", "rejected"), ("name", "api"))] == 1
    assert s[rl, (("kind", "admitted"), ("name", "users"))] == 2
    assert s[rl, (("kind", "rejected"), ("name", "users"))] == 1
    assert ("pyresilience_ratelimiter_available", (("name", "users"),)) not in s  # per key
    assert s["pyresilience_retry_calls_total",
             (("kind", "successful_without_retry"), ("name", "fetch"))] == 2
    assert s["pyresilience_bulkhead_waited_calls_total", (("name", "pool"),)] == 0
    assert s["pyresilience_bulkhead_held_seconds_total", (("name", "pool"),)] >= 0


def test_otel_core_counters():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from pyresilience import otel
    objs = _objects()
    reader = InMemoryMetricReader()
    otel.instrument(MeterProvider(metric_readers=[reader]), objects=objs[:4])
    got = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    got[m.name, tuple(sorted(p.attributes.items()))] = p.value
    assert got["pyresilience.ratelimiter.calls", (("kind", "rejected"), ("name", "api"))] == 1
    assert got["pyresilience.retry.calls", (("kind", "successful_without_retry"), ("name", "fetch"))] == 2
    assert got["pyresilience.bulkhead.waited_calls", (("name", "pool"),)] == 0
