"""Observability: the cost of events with no listener (off) and with one (on).

Each pair times one path on one object first with no listener, then with a
no-op listener attached (the object switched to its observed variant). The
"off" figures are the plain rows of the other tables: with no listener nothing
runs but the C method. The exporters read counters at scrape time; the last
row is one Prometheus scrape of 100 named objects.
"""

from __future__ import annotations

import pyresilience as pr


def _pair(h, label, make, stmt):
    """Time stmt(obj) off, then on; report the ratio on / off."""
    obj = make()
    off = h.time(f"{label}, no listener", lambda: stmt(obj))
    listener = lambda ev: None  # noqa: E731
    obj.add_event_listener(listener)
    on = h.time(f"{label}, one listener", lambda: stmt(obj))
    obj.remove_event_listener(listener)
    h.ratio(f"{label}: on / off", off, on)
    return off, on


def run(h):
    h.section("Events off and on (one no-op listener)",
              note="Admitted calls stay C-only with a listener too, except those the "
                   "observed variant wraps (a Python frame around the C method); refused "
                   "calls build an Event and call the listener. Without a listener "
                   "every row is the plain C method.")
    clock = pr.ManualClock()
    _pair(h, "TokenBucket.allow() admitted", lambda: pr.TokenBucket(1e15, 1e15), lambda b: b.allow())
    _pair(h, "TokenBucket.allow() refused", lambda: pr.TokenBucket(1, 1e-9, clock=clock),
          lambda b: b.allow())

    def open_breaker():
        cb = pr.CircuitBreaker(fallback=lambda: None, clock=clock)
        cb.force_open()
        return cb
    f = lambda: None  # noqa: E731
    _pair(h, "CircuitBreaker.call(f) closed", lambda: pr.CircuitBreaker(), lambda cb: cb.call(f))
    _pair(h, "CircuitBreaker.call(f) open, fallback", open_breaker, lambda cb: cb.call(f))

    def full_bulkhead():
        bh = pr.Bulkhead("bench-full", 1, 0)
        bh.acquire()
        return bh
    _pair(h, "Bulkhead.try_acquire() full", full_bulkhead, lambda bh: bh.try_acquire())
    _pair(h, "BoundedQueue(1, drop_newest).put() dropped",
          lambda: _full_queue(), lambda q: q.put_nowait(2))

    h.section("Exporters: one scrape", note="100 named objects (25 breakers, 25 limiters, "
              "25 bulkheads, 25 queues), prometheus_client text format.")
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from pyresilience.prometheus import Collector
    except ImportError:
        h.note("prometheus_client not installed: skipped")
        return
    objs = []
    for i in range(25):
        objs.append(pr.CircuitBreaker(name=f"cb{i}"))
        b = pr.TokenBucket(10, 1)
        b.name = f"tb{i}"
        objs.append(b)
        objs.append(pr.Bulkhead(f"bh{i}", 4))
        q = pr.BoundedQueue(8)
        q.name = f"q{i}"
        objs.append(q)
    reg = CollectorRegistry()
    reg.register(Collector(objs))
    h.time("generate_latest(): 100 objects", lambda: generate_latest(reg), number=20)


def _full_queue():
    q = pr.BoundedQueue(1, "drop_newest")
    q.put(1)
    return q
