"""Circuit breakers: what a breaker adds to a call, against the peers.

Two tables, each timing ours and the breakers a user would otherwise pick,
all wrapping the same no-op function:

* "closed": the breaker is healthy and lets the call through - the path of
  nearly every call. Ours runs entirely in C: one atomic load to admit, the
  vectorcall of the function, a few nanoseconds under a spinlock to record the
  success. The direct call of the function is timed beside it, through the same
  ``functools.partial`` wrapping, so "overhead" = breaker row - direct row.
* "open": every call is rejected. Without a fallback the rejection raises
  (ours: a fresh CircuitOpenError each time), so each row calls a small
  function that catches it - the same Python frame for everyone; with a
  fallback, the fallback's value is returned.

Peers (skipped with a note when not installed), with their defaults otherwise:
  pybreaker       CircuitBreaker(fail_max=5, reset_timeout=30), ``.call(f)``
  circuitbreaker  @circuit(failure_threshold=5, recovery_timeout=30)
                  (and fallback_function= for the fallback row)

Every callable is checked before timing to behave as its row says (admit,
reject, or return the fallback's value).
"""

from __future__ import annotations

import math
from functools import partial

from pyresilience import CircuitBreaker, CircuitOpenError, CircuitState


def noop():
    return None


def fallback():
    return "fallback"


class _Down(Exception):
    pass


def _down():
    raise _Down()


def _catching(call, exc, func):
    """A zero-argument callable: call(func), swallowing the rejection `exc`."""
    def rejected():
        try:
            call(func)
        except exc:
            return "rejected"
        return "admitted"
    return rejected


def _check(h, label, fn, expect, n=200):
    for _ in range(n):
        got = fn()
        if got != expect:
            h.note(f"{label}: expected {expect!r}, got {got!r}; row not timed")
            return False
    return True


def _timed(h, label, fn, expect, peer=False, group=None):
    if not _check(h, label, fn, expect):
        return math.nan
    ns = h.time(label, fn, peer=peer, group=group)
    if not _check(h, label + " (after timing)", fn, expect):
        return math.nan
    return ns


def _closed(h):
    h.section(
        "Circuit breaker: a closed call of a no-op",
        note=("ns per call of a no-op function through a closed breaker. Targets: our call() "
              "adds <= 100 ns over the direct call, and >= 20x less overhead than pybreaker, "
              ">= 5x less than circuitbreaker. Overhead = row - direct call (same wrapping)."))
    direct = _timed(h, "direct call noop() (baseline)", partial(noop), None)
    cb = CircuitBreaker(failure_threshold=5, success_threshold=2, timeout_seconds=30.0)
    ours = _timed(h, "pyresilience CircuitBreaker.call(noop)", partial(cb.call, noop), None)
    deco = _timed(h, "pyresilience @CircuitBreaker decorated noop()", partial(cb(noop)), None)
    rate = CircuitBreaker(failure_rate_threshold=0.5, window_size=100, minimum_calls=10)
    _timed(h, "pyresilience call(noop), failure-rate mode (count window)",
           partial(rate.call, noop), None)
    timed = CircuitBreaker(failure_rate_threshold=0.5, window_type="time", window_size=60,
                           slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    _timed(h, "pyresilience call(noop), time window + slow-call timing",
           partial(timed.call, noop), None)
    assert cb.state is CircuitState.CLOSED

    over = ours - direct
    h.value("our call() overhead over the direct call", round(over, 1), "ns")
    h.value("our decorator overhead over the direct call", round(deco - direct, 1), "ns")
    h.target("closed call() adds <= 100 ns over a direct call", over <= 100 if over == over else None)

    pybreaker = h.peer("pybreaker")
    if pybreaker is not None:
        pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
        peer = _timed(h, "pybreaker CircuitBreaker.call(noop)", partial(pb.call, noop), None,
                      peer=True)
        r = h.ratio("overhead: pybreaker / ours", max(over, 0.1), peer - direct)
        h.target(">= 20x less overhead than pybreaker", r >= 20 if r == r else None)
    circuitbreaker = h.peer("circuitbreaker")
    if circuitbreaker is not None:
        wrapped = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(noop)
        peer = _timed(h, "circuitbreaker @circuit decorated noop()", partial(wrapped), None,
                      peer=True)
        r = h.ratio("overhead: circuitbreaker / ours", max(over, 0.1), peer - direct)
        h.target(">= 5x less overhead than circuitbreaker", r >= 5 if r == r else None)


def _open(h):
    h.section(
        "Circuit breaker: a rejected call (open circuit)",
        note=("ns per rejected call. Without a fallback the rejection raises and each row calls "
              "the same small function catching it; ours raises a fresh CircuitOpenError "
              "(with retry_after and name) every time. With a fallback, its value is returned."))
    cb = CircuitBreaker(timeout_seconds=3600.0, name="down")
    cb.open()
    ours = _timed(h, "pyresilience call() raises CircuitOpenError",
                  _catching(cb.call, CircuitOpenError, noop), "rejected", group="raise")
    cbf = CircuitBreaker(timeout_seconds=3600.0, fallback=fallback)
    cbf.open()
    ours_fb = _timed(h, "pyresilience call() returns fallback()", partial(cbf.call, noop),
                     "fallback", group="fallback")
    cba = CircuitBreaker(timeout_seconds=3600.0)
    cba.open()
    _timed(h, "pyresilience allow_request() -> False", cba.allow_request, False, group="raise")

    pybreaker = h.peer("pybreaker")
    if pybreaker is not None:
        pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=3600)
        pb.open()
        peer = _timed(h, "pybreaker call() raises CircuitBreakerError",
                      _catching(pb.call, pybreaker.CircuitBreakerError, noop), "rejected",
                      peer=True, group="raise")
        h.ratio("rejection (raise): pybreaker / ours", ours, peer)
    circuitbreaker = h.peer("circuitbreaker")
    if circuitbreaker is not None:
        wrapped = circuitbreaker.circuit(failure_threshold=1, recovery_timeout=3600,
                                         expected_exception=_Down)(_down)
        try:
            wrapped()
        except _Down:
            pass

        def call_wrapped(f):
            return wrapped()
        peer = _timed(h, "circuitbreaker call raises CircuitBreakerError",
                      _catching(call_wrapped, circuitbreaker.CircuitBreakerError, None),
                      "rejected", peer=True, group="raise")
        h.ratio("rejection (raise): circuitbreaker / ours", ours, peer)
        wrapped_fb = circuitbreaker.circuit(failure_threshold=1, recovery_timeout=3600,
                                            expected_exception=_Down,
                                            fallback_function=fallback)(_down)
        try:
            wrapped_fb()
        except _Down:
            pass
        peer_fb = _timed(h, "circuitbreaker call returns fallback_function()",
                         partial(wrapped_fb), "fallback", peer=True, group="fallback")
        h.ratio("rejection (fallback): circuitbreaker / ours", ours_fb, peer_fb)


async def anoop():
    return None


def _async(h):
    h.section(
        "Circuit breaker: a closed call of an async no-op",
        note=("ns per await of a no-op coroutine function through a closed breaker, inside one "
              "running event loop. pybreaker's call_async needs tornado, so it is not timed."))
    direct = h.time_async("direct await anoop() (baseline)", anoop)
    cb = CircuitBreaker()
    ours = h.time_async("pyresilience await call_async(anoop)", partial(cb.call_async, anoop))
    deco = h.time_async("pyresilience @CircuitBreaker decorated anoop()", cb(anoop))
    h.value("our call_async overhead over the direct await", round(ours - direct, 1), "ns")
    h.value("our async decorator overhead over the direct await", round(deco - direct, 1), "ns")
    circuitbreaker = h.peer("circuitbreaker")
    if circuitbreaker is not None:
        wrapped = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(anoop)
        peer = h.time_async("circuitbreaker @circuit decorated anoop()", wrapped, peer=True)
        h.ratio("async overhead: circuitbreaker / ours (decorators)", max(deco - direct, 0.1),
                peer - direct)


def run(h) -> None:
    _closed(h)
    _open(h)
    _async(h)
