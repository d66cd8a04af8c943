"""Policy: what composing five patterns costs a call, against the same five
stacked from the peers.

* sync: ``time.monotonic_ns()`` (the unit of the ratio row: a sync policy
  call reads that clock twice), a no-op called directly, through an empty Policy, and through
  ``Policy(Retry, CircuitBreaker, TokenBucket, Timeout, Bulkhead)`` (as
  ``policy.call`` and as a decorator); the peers' stack is tenacity's
  ``@retry`` around pybreaker's ``CircuitBreaker.call`` around ``limits``'
  in-memory moving window ``hit`` around a ``threading.BoundedSemaphore``
  around a timeout wrapper that checks the clock after the call (what a sync
  timeout can do without a thread, as ours does).
* async: an awaited no-op directly, through a Policy without and with a
  Timeout, and inside a bare ``asyncio.timeout``; the peers' async stack is
  tenacity's ``AsyncRetrying`` around ``limits.aio``'s moving window around an
  ``asyncio.Semaphore`` around ``asyncio.timeout`` (pybreaker has no asyncio
  form without tornado: left out, which favours the peers).
* httpx: ``ResilientTransport.handle_request`` over an ``httpx.MockTransport``
  against the bare mock transport (no network, no client), and over a
  transport that returns one prepared response (what the adapter adds, alone).

Every limiter is sized so that it never refuses during the run.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from functools import partial

import pyresilience as pr

BIG = 1e15


def noop():
    return 1


async def anoop():
    return 1


def five(timeout: bool = True) -> pr.Policy:
    strategies = [pr.Retry(max_attempts=3, base_delay=0.0, jitter=False), pr.CircuitBreaker(),
                  pr.TokenBucket(BIG, BIG)]
    if timeout:
        strategies.append(pr.Timeout(60))
    strategies.append(pr.Bulkhead("bench", 1 << 20))
    return pr.Policy(*strategies)


def _peer_stack(h):
    tenacity, pybreaker, limits = h.peer("tenacity"), h.peer("pybreaker"), h.peer("limits")
    if tenacity is None or pybreaker is None or limits is None:
        return None
    breaker = pybreaker.CircuitBreaker()
    storage = limits.storage.MemoryStorage()
    window = limits.strategies.MovingWindowRateLimiter(storage)
    item = limits.parse("1000000000/second")
    sem = threading.BoundedSemaphore(1 << 20)

    def timed(fn):
        def wrapper():
            deadline = time.monotonic() + 60
            result = fn()
            if time.monotonic() > deadline:
                raise TimeoutError
            return result
        return wrapper

    def sem_wrapped(fn):
        def wrapper():
            with sem:
                return fn()
        return wrapper

    def limited(fn):
        def wrapper():
            if not window.hit(item, "k"):
                raise RuntimeError("limited")
            return fn()
        return wrapper

    inner = limited(sem_wrapped(timed(noop)))

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True)
    def stacked():
        return breaker.call(inner)
    return stacked


def _peer_async_stack(h):
    tenacity, limits = h.peer("tenacity"), h.peer("limits")
    if tenacity is None or limits is None:
        return None
    try:
        from limits.aio.storage import MemoryStorage
        from limits.aio.strategies import MovingWindowRateLimiter
    except ImportError as exc:  # pragma: no cover - reported
        h.note(f"limits.aio not usable: {exc}")
        return None
    window = MovingWindowRateLimiter(MemoryStorage())
    item = limits.parse("1000000000/second")
    holder = {}

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True)
    async def stacked():
        sem = holder.get("sem")
        if sem is None:
            sem = holder["sem"] = asyncio.Semaphore(1 << 20)
        if not await window.hit(item, "k"):
            raise RuntimeError("limited")
        async with sem:
            async with asyncio.timeout(60):
                return await anoop()
    return stacked


def run(h) -> None:
    warnings.simplefilter("ignore", pr.PolicyWarning)
    # ---- sync ----
    h.section("Policy: sync no-op through five strategies",
              note="Policy(Retry, CircuitBreaker, TokenBucket, Timeout, Bulkhead) around a no-op, "
                   "against the direct call and the peers' stack of the same five (tenacity, "
                   "pybreaker, limits, threading.BoundedSemaphore, a timeout wrapper). Targets: "
                   "the policy adds <= 250 ns over the direct call and is >= 20x faster than "
                   "the peers' stack; an empty Policy adds <= 30 ns.")
    # the clock read, timed here too: on a loaded or virtual machine it costs several
    # times what it does on bare metal, and a sync policy call reads it twice
    mono = h.time("time.monotonic_ns() (here, for the ratio)", time.monotonic_ns)
    direct = h.time("direct call noop()", noop)
    empty = pr.Policy()
    h.time("Policy().call(noop)", partial(empty.call, noop))
    empty_dec = empty(noop)
    t_empty = h.time("@Policy() noop()", empty_dec)
    p = five()
    assert p.call(noop) == 1
    t_call = h.time("Policy(5 strategies).call(noop)", partial(p.call, noop))
    dec = p(noop)
    t_dec = h.time("@Policy(5 strategies) noop()", dec)
    ours = min(t_call, t_dec)
    h.value("five strategies: added over the direct call", ours - direct, "ns")
    h.value("five strategies: added, in time.monotonic_ns() calls", (ours - direct) / mono, "x")
    h.target("five strategies add <= 250 ns (sync)", ours - direct <= 250)
    h.value("empty Policy (decorator): added over the direct call", t_empty - direct, "ns")
    h.target("an empty Policy adds <= 30 ns", t_empty - direct <= 30)
    stacked = _peer_stack(h)
    if stacked is not None:
        assert stacked() == 1
        peer = h.time("peers: tenacity(pybreaker(limits(BoundedSemaphore(timeout(noop)))))", stacked,
                      peer=True)
        ratio = (peer - direct) / max(ours - direct, 1.0)
        h.value("peers' added cost / ours", ratio, "x")
        h.target("the policy adds >= 20x less than the peers' stack", ratio >= 20)

    # ---- async ----
    h.section("Policy: async no-op",
              note="ns per await. Targets: without a Timeout <= 1 us over the direct await; "
                   "with one <= 1 us more than a bare asyncio.timeout costs.")
    a_direct = h.time_async("await anoop()", anoop)

    async def bare_timeout():
        async with asyncio.timeout(60):
            return await anoop()
    a_bare = h.time_async("async with asyncio.timeout(60): await anoop()", bare_timeout)
    p4 = five(timeout=False)
    a_p4 = h.time_async("await Policy(Retry, CB, TokenBucket, Bulkhead).call_async(anoop)",
                        partial(p4.call_async, anoop))
    a_p5 = h.time_async("await Policy(5 strategies, with Timeout).call_async(anoop)",
                        partial(p.call_async, anoop))
    h.value("async, four strategies: added over the direct await", a_p4 - a_direct, "ns")
    h.value("async, five strategies: added over a bare asyncio.timeout", a_p5 - a_bare, "ns")
    h.target("async without a Timeout adds <= 1 us", a_p4 - a_direct <= 1000)
    h.target("async with a Timeout adds <= 1 us over a bare asyncio.timeout", a_p5 - a_bare <= 1000)
    astacked = _peer_async_stack(h)
    if astacked is not None:
        a_peer = h.time_async("peers: tenacity(limits.aio(asyncio.Semaphore(asyncio.timeout(anoop))))",
                              astacked, peer=True)
        h.value("peers' added cost / ours (async, with Timeout)",
                (a_peer - a_direct) / max(a_p5 - a_direct, 1.0), "x")

    # ---- httpx ----
    httpx = h.peer("httpx")
    if httpx is None:
        return
    from pyresilience.httpx import ResilientTransport
    h.section("httpx: ResilientTransport over a mock transport",
              note="handle_request() of one GET on httpx.MockTransport (no network, no client). "
                   "Target: the resilient transport adds <= 2 us per request.")
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    request = httpx.Request("GET", "http://bench.invalid/")
    bare = h.time("MockTransport.handle_request", partial(mock.handle_request, request))
    rt = ResilientTransport(pr.Policy(pr.Retry(max_attempts=3), pr.CircuitBreaker()), transport=mock)
    assert rt.handle_request(request).status_code == 200
    t_rt = h.time("ResilientTransport(Policy(Retry, CB)).handle_request", partial(rt.handle_request, request))
    rt5 = ResilientTransport(five(), transport=mock)
    t_rt5 = h.time("ResilientTransport(Policy(5 strategies)).handle_request",
                   partial(rt5.handle_request, request))
    h.value("added per request over the mock (Retry, CB)", t_rt - bare, "ns")
    h.value("added per request over the mock (5 strategies)", t_rt5 - bare, "ns")

    # the mock builds a Response per request (tens of us, noisy): a transport
    # returning one prepared Response isolates what the adapter itself adds
    response = httpx.Response(200)

    class Fixed(httpx.BaseTransport):
        def handle_request(self, request):
            return response
    fixed = Fixed()
    t_fixed = h.time("prepared-response transport .handle_request", partial(fixed.handle_request, request))
    rtf = ResilientTransport(pr.Policy(pr.Retry(max_attempts=3), pr.CircuitBreaker()), transport=fixed)
    t_rtf = h.time("ResilientTransport(Policy(Retry, CB)) over it", partial(rtf.handle_request, request))
    h.value("added per request (Retry, CB)", t_rtf - t_fixed, "ns")
    h.target("ResilientTransport adds <= 2 us per request", t_rtf - t_fixed <= 2000)
