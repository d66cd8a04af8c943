"""Prometheus export: ``pyresilience.prometheus.Collector``.

::

    from prometheus_client import REGISTRY
    from pyresilience.prometheus import Collector
    REGISTRY.register(Collector())           # every live named object
    REGISTRY.register(Collector([bucket]))   # or just these

The collector reads each object's counters when the registry is scraped and
adds nothing to any call. Names follow Resilience4j's under a ``pyresilience_``
prefix (``pyresilience_circuitbreaker_calls_total{name, kind}``, ...); the
README's "Observing it" section lists them all. Needs ``prometheus_client``
(``pip install pyresilience[prometheus]``).

Multi-process servers: objects in shared memory report their shared totals
from whichever worker serves the scrape; per-process objects are reported by
each worker's own collector.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as _BaseCollector

from . import _metrics

__all__ = ["Collector", "MultiProcessWriter", "PREFIX"]

PREFIX = "pyresilience"


class Collector(_BaseCollector):
    """Collector(objects=None, *, prefix='pyresilience')

    A prometheus_client collector of pyresilience objects: ``objects`` (kept
    by strong reference), or, when None, every live object that was given a
    name (read at each scrape, so objects made later are included)."""

    def __init__(self, objects: Optional[Iterable[Any]] = None, *, prefix: str = PREFIX) -> None:
        self.objects: Optional[List[Any]] = None if objects is None else list(objects)
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        samples = _metrics.collect(self.objects)
        for fam in _metrics.FAMILIES:
            rows = samples[fam]
            if not rows:
                continue
            name = f"{self.prefix}_{fam.pattern}_{fam.metric}"
            metric: Any
            if fam.type == "counter":
                metric = CounterMetricFamily(name, fam.doc, labels=list(fam.labels))
            else:
                metric = GaugeMetricFamily(name, fam.doc, labels=list(fam.labels))
            for labels, value in rows:
                metric.add_metric([v for _, v in labels], value)
            yield metric

    def describe(self) -> Iterator[Metric]:
        """Nothing described up front: the objects (and so the samples) vary
        from one scrape to the next."""
        return iter(())


class MultiProcessWriter:
    """MultiProcessWriter(objects=None, *, prefix='pyresilience')

    For servers with several worker processes scraped through prometheus_client's
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is
    imported, ``MultiProcessCollector`` serving the scrape): ``write()`` copies
    this process's counters and gauges into prometheus_client's own metrics,
    which that mode keeps in files that a scrape sums over every worker
    (counters by their increase since the last write, gauges as ``livesum``).
    Call it periodically or before each scrape in every worker; it adds nothing
    to any call. As for any livesum gauge, a dead worker's gauges stay until
    ``prometheus_client.multiprocess.mark_process_dead(pid)`` (e.g. gunicorn's
    ``child_exit`` hook). Objects in shared memory should not be written by every worker
    (their totals are already shared): give those to a plain Collector instead."""

    def __init__(self, objects: Optional[Iterable[Any]] = None, *, prefix: str = PREFIX,
                 registry: Any = None) -> None:
        from prometheus_client import Counter, Gauge
        self.objects: Optional[List[Any]] = None if objects is None else list(objects)
        self._metrics: dict[str, Any] = {}
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for fam in _metrics.FAMILIES:
            name = f"{prefix}_{fam.pattern}_{fam.metric}"
            if fam.type == "counter":
                self._metrics[name] = Counter(name, fam.doc, list(fam.labels), registry=registry)
            else:
                self._metrics[name] = Gauge(name, fam.doc, list(fam.labels), registry=registry,
                                            multiprocess_mode="livesum")
        self._prefix = prefix

    def write(self) -> None:
        """Copy the current values (counters: only their increase)."""
        samples = _metrics.collect(self.objects)
        for fam in _metrics.FAMILIES:
            name = f"{self._prefix}_{fam.pattern}_{fam.metric}"
            metric = self._metrics[name]
            for labels, value in samples[fam]:
                child = metric.labels(*[v for _, v in labels])
                if fam.type == "counter":
                    key = (name, labels)
                    delta = value - self._last.get(key, 0.0)
                    if delta > 0:
                        child.inc(delta)
                    self._last[key] = max(value, self._last.get(key, 0.0))
                else:
                    child.set(value)
