"""OpenTelemetry export: ``pyresilience.otel.instrument()``.

::

    from pyresilience import otel
    otel.instrument()                       # the global MeterProvider
    otel.instrument(meter_provider=provider, objects=[breaker])

Registers observable instruments on the meter ``pyresilience`` with the same
metrics as the Prometheus collector, named with dots and without ``_total``
(``pyresilience.circuitbreaker.calls``, attributes ``name`` and ``kind``).
Their callbacks read the objects' counters at collection time and add nothing
to any call. Needs ``opentelemetry-api`` (``pip install pyresilience[otel]``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional

from opentelemetry import metrics as _otel_metrics
from opentelemetry.metrics import CallbackOptions, Instrument, MeterProvider, Observation

from . import __version__, _metrics

__all__ = ["instrument", "METER_NAME"]

METER_NAME = "pyresilience"


def _callback(fam: _metrics.Family, objects: Optional[List[Any]]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        rows = _metrics.collect(objects)[fam]
        return [Observation(value, dict(labels)) for labels, value in rows]
    return observe


def instrument(meter_provider: Optional[MeterProvider] = None,
               objects: Optional[Iterable[Any]] = None) -> List[Instrument]:
    """instrument(meter_provider=None, objects=None)

    Register the observable instruments (counters and gauges) with
    ``meter_provider`` (None: the global one) for ``objects`` (None: every live
    named object, read at each collection). Returns the instruments."""
    provider = meter_provider if meter_provider is not None else _otel_metrics.get_meter_provider()
    meter = provider.get_meter(METER_NAME, __version__)
    objs = None if objects is None else list(objects)
    made: List[Instrument] = []
    for fam in _metrics.FAMILIES:
        name = f"{METER_NAME}.{fam.pattern}.{fam.metric}"
        cb = [_callback(fam, objs)]
        if fam.type == "counter":
            made.append(meter.create_observable_counter(name, callbacks=cb, description=fam.doc))
        else:
            made.append(meter.create_observable_gauge(name, callbacks=cb, description=fam.doc))
    return made
