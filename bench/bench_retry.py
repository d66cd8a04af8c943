"""Retries: the cost a retry decorator adds to a call, against the peers.

Two tables, each timing the function called directly, ours, and the retry
libraries a user would otherwise pick, all decorating the same function:

* "first-try success": a no-op that returns at once - the path of nearly every
  call in a healthy service. Ours never leaves C on this path (the Retry's
  PolicyStep reads the clock, calls the function and returns its result).
* "fail twice, then succeed": every wrapped call makes three attempts (two
  ValueErrors, then a return) with zero delays, so the figure is the cost of
  the retry machinery (plus raising two exceptions, the same for everyone).

Peers (skipped with a note when not installed), each configured for 3 attempts
and no wait, with their defaults otherwise:
  tenacity   @retry(stop=stop_after_attempt(3), wait=wait_none())
  backoff    @on_exception(constant, ValueError, max_tries=3, interval=0, jitter=None)
  stamina    @retry(on=ValueError, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0)

Every decorated callable is checked before timing to behave as its row says.
"""

from __future__ import annotations

import math

from pyresilience import Retry, RetryBudget, RetryConfig, retry_with_backoff


def noop():
    return 1


def _flaky():
    """A function that fails twice, then succeeds, and again (3 attempts per call)."""
    state = [0]

    def f():
        state[0] += 1
        if state[0] % 3:
            raise ValueError("transient")
        return state[0]

    return f, state


def _peers(h):
    """(label, decorator factory for (func, exc) ) of the installed peers."""
    out = []
    tenacity = h.peer("tenacity")
    if tenacity is not None:
        out.append(("tenacity @retry", lambda f, exc: tenacity.retry(
            stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(exc), reraise=True)(f)))
    backoff = h.peer("backoff")
    if backoff is not None:
        out.append(("backoff @on_exception", lambda f, exc: backoff.on_exception(
            backoff.constant, exc, max_tries=3, interval=0, jitter=None)(f)))
    stamina = h.peer("stamina")
    if stamina is not None:
        # stamina logs every retry by default; without hooks it measures the machinery only
        stamina.instrumentation.set_on_retry_hooks([])
        h.note("stamina: instrumentation hooks off (set_on_retry_hooks([])); by default it "
               "also logs each retry")
        out.append(("stamina @retry", lambda f, exc: stamina.retry(
            on=exc, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0)(f)))
    return out


def _works(h, label, fn, check):
    try:
        ok = check(fn)
    except Exception as exc:  # pragma: no cover - reported in the table
        ok = False
        h.note(f"{label}: {type(exc).__name__}: {exc}")
    if not ok:
        h.note(f"{label}: did not behave as this row requires; not timed")
    return ok


def run(h) -> None:
    # ---- first-try success ---------------------------------------------------
    h.section("Retry: first-try success (wrapped no-op)",
              note="ns per call of a decorated no-op that succeeds at once. Targets: ours adds "
                   "<= 150 ns over the direct call, and is >= 30x faster than tenacity.")
    peers = _peers(h)
    direct = h.time("direct call (no retry)", noop)
    ours_fn = retry_with_backoff(RetryConfig(max_attempts=3, base_delay=0.0))(noop)
    ours = h.time("pyresilience @retry_with_backoff", ours_fn)
    budget_fn = Retry(max_attempts=3, base_delay=0.0,
                      budget=RetryBudget())(noop)
    h.time("pyresilience @Retry(budget=RetryBudget())", budget_fn)
    pred_fn = Retry(max_attempts=3, base_delay=0.0, retry_on_result=lambda r: r is None)(noop)
    h.time("pyresilience @Retry(retry_on_result=...)", pred_fn)
    call = Retry(max_attempts=3, base_delay=0.0).call
    h.time("pyresilience Retry.call(func)", lambda: call(noop))
    peer_ns = {}
    for label, deco in peers:
        fn = deco(noop, Exception)
        if _works(h, label, fn, lambda f: f() == 1):
            peer_ns[label] = h.time(label, fn, peer=True)
    overhead = ours - direct
    h.value("ours: overhead over the direct call", overhead, "ns")
    h.target("first-try overhead <= 150 ns over a direct call", overhead <= 150)
    t = peer_ns.get("tenacity @retry")
    if t is not None and not math.isnan(t):
        r = h.ratio("tenacity / ours (whole call)", ours, t)
        h.value("tenacity overhead / ours overhead", (t - direct) / max(overhead, 1.0), "x")
        h.target("ours >= 30x faster than tenacity on first-try success", r >= 30)
    for label in ("backoff @on_exception", "stamina @retry"):
        if label in peer_ns and not math.isnan(peer_ns[label]):
            h.ratio(f"{label.split()[0]} / ours (whole call)", ours, peer_ns[label])

    # ---- fail twice, then succeed --------------------------------------------
    h.section("Retry: fail twice, then succeed (zero delays)",
              note="ns per wrapped call making 3 attempts: two raise ValueError, the third "
                   "returns, with delays of 0. Ours skips a zero sleep; the peers call "
                   "time.sleep(0) (a system call) between attempts, which is most of their cost.")

    def check3(state):
        def check(fn):
            before = state[0]
            fn()
            fn()
            return state[0] - before == 6
        return check

    f, state = _flaky()

    def bare():  # the same work without a retry library: the floor of this table
        for _ in range(3):
            try:
                return f()
            except ValueError:
                pass

    h.time("hand-written loop (3 attempts, no library)", bare)
    f, state = _flaky()
    ours_fn = Retry(max_attempts=3, base_delay=0.0, jitter=False, retryable_exceptions=(ValueError,))(f)
    ours3 = math.nan
    if _works(h, "ours", ours_fn, check3(state)):
        ours3 = h.time("pyresilience @Retry(base_delay=0)", ours_fn)
    peer3 = {}
    for label, deco in peers:
        f, state = _flaky()
        fn = deco(f, ValueError)
        if _works(h, label, fn, check3(state)):
            peer3[label] = h.time(label, fn, peer=True)
    for label, ns in peer3.items():
        if not math.isnan(ns) and not math.isnan(ours3):
            h.ratio(f"{label.split()[0]} / ours", ours3, ns)

    # ---- async first-try -----------------------------------------------------
    h.section("Retry: async first-try success",
              note="ns per await of a decorated no-op coroutine function (one event loop).")

    async def anoop():
        return 1

    h.time_async("direct await (no retry)", anoop)
    h.time_async("pyresilience @retry_with_backoff (async)",
                 retry_with_backoff(RetryConfig(max_attempts=3, base_delay=0.0))(anoop))
    tenacity = h.peer("tenacity")
    if tenacity is not None:
        h.time_async("tenacity @retry (async)", tenacity.retry(
            stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(anoop), peer=True)
    stamina = h.peer("stamina")
    if stamina is not None:
        h.time_async("stamina @retry (async)", stamina.retry(
            on=Exception, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0)(anoop), peer=True)
    backoff = h.peer("backoff")
    if backoff is not None:
        h.time_async("backoff @on_exception (async)", backoff.on_exception(
            backoff.constant, Exception, max_tries=3, interval=0, jitter=None)(anoop), peer=True)

    # ---- primitives ------------------------------------------------------------
    h.section("Retry: primitives",
              note="ns per call of the pieces a custom loop would use: the delay of one attempt "
                   "(formula + jitter draw) and the budget's deposit/withdraw (monotonic clock).")
    from functools import partial

    from pyresilience import calculate_delay
    for jitter in (False, True, "full", "decorrelated"):
        cfg = RetryConfig(max_attempts=10, base_delay=0.1, jitter=jitter, seed=1)
        h.time(f"calculate_delay(3, RetryConfig(jitter={jitter!r}))", partial(calculate_delay, 3, cfg))
    budget = RetryBudget(ratio=1e6)
    h.time("RetryBudget.deposit()", budget.deposit)
    h.time("RetryBudget.withdraw() (allowed)", budget.withdraw)
    budget2 = RetryBudget(ratio=0.0, min_retries_per_second=0.0)
    h.time("RetryBudget.withdraw() (denied)", budget2.withdraw)
