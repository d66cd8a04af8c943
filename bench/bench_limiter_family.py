"""The rate limiter family: ns per allow() for LeakyBucket, FixedWindow,
SlidingWindowLog and SlidingWindowCounter against the peers offering the same
algorithm, all in memory, one key, in the same run.

Two tables, as in bench_limiters.py:

* "admits": a limit the timed loop never reaches (ours: 10**6 per 1 ms window,
  i.e. 1e9 per second; LeakyBucket capacity 1e6 leaking 1e9/s; peers: 1e9 per
  second), so every call is admitted.
* "denies": 10 per hour, exhausted before timing, so every call is denied.

Peers by algorithm (a row is compared only with the peers of its group):
  fixed window     limits FixedWindowRateLimiter, pyrate-limiter
                   InMemoryBucket(algorithm=FixedWindow())
  sliding log      limits MovingWindowRateLimiter, pyrate-limiter
                   InMemoryBucket (its default SlidingWindowLog)
  sliding counter  limits SlidingWindowCounterRateLimiter
  leaky bucket     no peer offers a leaky-bucket meter; pyrate-limiter's GCRA
                   (StateBucket) is the same algorithm in its virtual-scheduling
                   form (ITU-T I.371), so it stands in

Every callable is a bound method or a ``functools.partial`` and is checked
before and after timing to admit (or deny) as its configuration promises.
"""

from __future__ import annotations

import inspect
from functools import partial

ADMIT_LIMIT = 10**6      # ours: per 1 ms window (1e9 per second)
ADMIT_WINDOW = 1e-3
ADMIT_RATE = 10**9       # peers: per second
DENY_LIMIT = 10          # per hour, everyone
DENY_WINDOW = 3600.0

GROUPS = [
    ("fixed window", "FixedWindow"),
    ("sliding log", "SlidingWindowLog"),
    ("sliding counter", "SlidingWindowCounter"),
    ("leaky bucket", "LeakyBucket"),
]


def _check(h, label, fn, expect, n=1000):
    for _ in range(n):
        if bool(fn()) is not expect:
            h.note(f"{label}: expected every call to {'admit' if expect else 'deny'}, "
                   f"but one did not; row not timed")
            return False
    return True


def _timed(h, label, fn, expect, group, peer):
    if not _check(h, label, fn, expect):
        return None
    ns = h.time(label, fn, group=group, peer=peer)
    if not _check(h, label + " (after timing)", fn, expect):
        return None
    return ns


def _exhaust(fn, tries=100):
    for _ in range(tries):
        fn()


def _ours(prs, admit):
    if admit:
        return {
            "FixedWindow": prs.FixedWindow(ADMIT_LIMIT, ADMIT_WINDOW),
            "SlidingWindowLog": prs.SlidingWindowLog(ADMIT_LIMIT, ADMIT_WINDOW),
            "SlidingWindowCounter": prs.SlidingWindowCounter(ADMIT_LIMIT, ADMIT_WINDOW),
            "LeakyBucket": prs.LeakyBucket(ADMIT_LIMIT, ADMIT_RATE),
        }
    lims = {
        "FixedWindow": prs.FixedWindow(DENY_LIMIT, DENY_WINDOW),
        "SlidingWindowLog": prs.SlidingWindowLog(DENY_LIMIT, DENY_WINDOW),
        "SlidingWindowCounter": prs.SlidingWindowCounter(DENY_LIMIT, DENY_WINDOW),
        "LeakyBucket": prs.LeakyBucket(DENY_LIMIT, DENY_LIMIT / DENY_WINDOW),
    }
    for lim in lims.values():
        _exhaust(lim.allow)
    return lims


def _limits_rows(h, admit):
    limits = h.peer("limits")
    if limits is None:
        return []
    from limits.storage import MemoryStorage
    item = (limits.RateLimitItemPerSecond(ADMIT_RATE) if admit
            else limits.RateLimitItemPerHour(DENY_LIMIT))
    rows = []
    for group, cls_name in (("fixed window", "FixedWindowRateLimiter"),
                            ("sliding log", "MovingWindowRateLimiter"),
                            ("sliding counter", "SlidingWindowCounterRateLimiter")):
        cls = getattr(limits.strategies, cls_name, None)
        if cls is None:
            h.note(f"limits has no {cls_name} in this version; skipped")
            continue
        lim = cls(MemoryStorage())
        rows.append((group, f"limits {cls_name}.hit()", partial(lim.hit, item, "bench")))
    if admit:
        h.note("limits MovingWindowRateLimiter keeps one entry per admitted hit of the last "
               "window: when admitting, its cost grows with the hits of the last second")
    return rows


def _pyrate_rows(h, admit, closers):
    pl = h.peer("pyrate_limiter", "pyrate-limiter")
    if pl is None:
        return []
    v4 = "blocking" in inspect.signature(pl.Limiter.try_acquire).parameters

    def make(bucket):
        if v4:
            lim = pl.Limiter(bucket)
            fn = partial(lim.try_acquire, "bench", blocking=False)
        else:
            lim = pl.Limiter(bucket, raise_when_fail=False)
            fn = partial(lim.try_acquire, "bench")
        if hasattr(lim, "close"):
            closers.append(lim.close)
        return fn

    rate = (pl.Rate(ADMIT_RATE, pl.Duration.SECOND) if admit
            else pl.Rate(DENY_LIMIT, pl.Duration.HOUR))
    rows = []
    fixed = getattr(pl, "FixedWindow", None)
    if fixed is not None:
        try:
            bucket = pl.InMemoryBucket([rate], algorithm=fixed())
        except TypeError:
            bucket = None
            h.note("pyrate-limiter InMemoryBucket takes no algorithm in this version; "
                   "its fixed window is skipped")
        if bucket is not None:
            rows.append(("fixed window", "pyrate-limiter InMemoryBucket(FixedWindow) try_acquire()",
                         make(bucket)))
    rows.append(("sliding log", "pyrate-limiter InMemoryBucket(SlidingWindowLog) try_acquire()",
                 make(pl.InMemoryBucket([rate]))))
    state_bucket, gcra = getattr(pl, "StateBucket", None), getattr(pl, "GCRA", None)
    if state_bucket is not None and gcra is not None:
        if admit:
            r = pl.Rate(ADMIT_RATE, pl.Duration.SECOND, burst=ADMIT_LIMIT)
            h.note("pyrate-limiter StateBucket counts in whole microseconds per unit: its "
                   "admitting GCRA runs at 1e6 per second (burst 1e6), still never reached")
        else:
            r = pl.Rate(DENY_LIMIT, pl.Duration.HOUR)
        rows.append(("leaky bucket", "pyrate-limiter StateBucket(GCRA) try_acquire()",
                     make(state_bucket([r], algorithm=gcra()))))
        h.note("No peer offers a leaky-bucket meter under that name: LeakyBucket is compared "
               "with pyrate-limiter's GCRA, the same algorithm in its virtual-scheduling form")
    else:
        h.note("pyrate-limiter has no StateBucket/GCRA in this version: LeakyBucket has no peer")
    return rows


def _section(h, prs, admit):
    floor = h.floor()
    what = "admits" if admit else "denies"
    h.section(
        f"Rate limiter family: allow() that {what}",
        note=("Every timed call is " + (
            "admitted (ours: 10**6 per 1 ms window, LeakyBucket 1e6 leaking 1e9/s; peers: "
            "1e9 per second)" if admit else
            "denied (10 per hour, exhausted before timing)") +
            ". In-memory, one key, monotonic clock for ours. Each row is compared with the "
            "peers of its own group (same algorithm). Target: every algorithm at "
            "least 30x faster than the fastest peer offering it."))
    ours = {}
    if prs is not None:
        lims = _ours(prs, admit)
        for group, name in GROUPS:
            ns = _timed(h, f"pyresilience {name}.allow()", lims[name].allow, admit, group, False)
            if ns is not None:
                ours[group] = (name, ns)
        for group, name in GROUPS:
            _timed(h, f"pyresilience {name}.check() (returns a Decision)", lims[name].check,
                   admit, group, False)

    closers = []
    peers = {}
    try:
        rows = _limits_rows(h, admit) + _pyrate_rows(h, admit, closers)
        for group, label, fn in rows:
            if not admit:
                _exhaust(fn, DENY_LIMIT * 2)
            ns = _timed(h, label, fn, admit, group, True)
            if ns is not None:
                peers.setdefault(group, []).append((label, ns))
    finally:
        for close in closers:  # stop the peers' background threads
            try:
                close()
            except Exception:
                pass

    for group, (name, ns) in ours.items():
        if not peers.get(group):
            h.note(f"{name}: no peer offers this algorithm here; no ratio")
            continue
        label, fastest = min(peers[group], key=lambda kv: kv[1])
        r = h.ratio(f"{name}.allow() vs the fastest {group} peer, {label}", ns, fastest)
        h.target(f"{name}.allow() >= 30x faster than the fastest {group} peer ({r:.1f}x)",
                 r >= 30)
    mono = floor["monotonic_ns"]
    for group, (name, ns) in ours.items():
        h.value(f"{name}.allow() in units of one time.monotonic_ns() call", ns / mono, "x")


def run(h) -> None:
    try:
        import pyresilience as prs
    except ImportError as exc:
        prs = None
        h.section("Rate limiter family")
        h.note(f"pyresilience is not importable ({exc}); only the peers are timed")
    _section(h, prs, admit=True)
    _section(h, prs, admit=False)
