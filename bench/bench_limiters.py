"""Rate limiters: ns per allow() for TokenBucket and GCRA against the peers.

Two tables, one per configuration, each timing ours first and then the peers
a user would otherwise pick, all in memory, one key:

* "admits": a limit far above what the loop can reach (1e9 per second,
  burst 1e6), so every call is admitted - the fast path of a healthy service.
* "denies": 10 per hour (ours: 1e-3 per second, burst 10), exhausted before
  timing, so every timed call is denied.

Peers (skipped with a note when not installed):
  limits          FixedWindowRateLimiter / MovingWindowRateLimiter over
                  MemoryStorage, ``.hit(item, key)``
  pyrate-limiter  Limiter over InMemoryBucket (its default in-memory log
                  bucket), and over StateBucket with its TokenBucket and GCRA
                  algorithms when the installed version has them (v4),
                  ``.try_acquire(key, blocking=False)`` (v4) or
                  ``.try_acquire(key)`` with ``raise_when_fail=False`` (v3)
  token-bucket    Limiter(rate, capacity, MemoryStorage()), ``.consume(key)``

Every callable is a bound method or a ``functools.partial`` (no extra Python
frame), and is checked before and after timing to return what its
configuration promises (admit or deny): a row that would measure the wrong
path is reported instead of timed silently.
"""

from __future__ import annotations

import inspect
from functools import partial

ADMIT_RATE = 1e9        # per second: unreachable by a Python loop
ADMIT_BURST = 10**6
DENY_LIMIT = 10         # per hour for the peers; ours: burst 10, 1e-3 per second
DENY_RATE = 1e-3


def _check(h, label, fn, expect, n=1000):
    """True if fn() returns `expect` (truthiness) n times in a row; else note it."""
    for _ in range(n):
        if bool(fn()) is not expect:
            h.note(f"{label}: expected every call to {'admit' if expect else 'deny'}, "
                   f"but one did not; row not timed")
            return False
    return True


def _timed(h, label, fn, expect, peer):
    if not _check(h, label, fn, expect):
        return None
    ns = h.time(label, fn, peer=peer)
    if not _check(h, label + " (after timing)", fn, expect):
        return None
    return ns


def _exhaust(fn, tries=100):
    for _ in range(tries):
        fn()


# -- peers -------------------------------------------------------------------

def _limits_rows(h, admit, closers):
    limits = h.peer("limits")
    if limits is None:
        return []
    from limits.storage import MemoryStorage
    item = (limits.RateLimitItemPerSecond(int(ADMIT_RATE)) if admit
            else limits.RateLimitItemPerHour(DENY_LIMIT))
    rows = []
    for cls_name in ("FixedWindowRateLimiter", "MovingWindowRateLimiter"):
        cls = getattr(limits.strategies, cls_name, None)
        if cls is None:
            h.note(f"limits has no {cls_name} in this version; skipped")
            continue
        lim = cls(MemoryStorage())
        if admit and cls_name == "MovingWindowRateLimiter":
            h.note("limits MovingWindowRateLimiter keeps one entry per admitted hit of the "
                   "last window, inserted at the front of a list: when admitting, its cost "
                   "grows with the hits of the last second (hence best and median differ)")
        rows.append((f"limits {cls_name}.hit()", partial(lim.hit, item, "bench")))
    return rows


def _pyrate_rows(h, admit, closers):
    pl = h.peer("pyrate_limiter", "pyrate-limiter")
    if pl is None:
        return []
    rate = (pl.Rate(int(ADMIT_RATE), pl.Duration.SECOND) if admit
            else pl.Rate(DENY_LIMIT, pl.Duration.HOUR))
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

    rows = [("pyrate-limiter InMemoryBucket try_acquire()", make(pl.InMemoryBucket([rate])))]
    if admit and getattr(pl, "StateBucket", None) is not None:
        h.note("pyrate-limiter StateBucket counts in whole microseconds per unit, so its "
               "admitting configuration runs at 1e6 per second (burst 1e6): still never "
               "reached by the timed loop")
    state_bucket = getattr(pl, "StateBucket", None)
    for algo in ("TokenBucket", "GCRA"):
        cls = getattr(pl, algo, None)
        if state_bucket is None or cls is None:
            continue
        if admit:
            r = pl.Rate(int(ADMIT_RATE), pl.Duration.SECOND, burst=ADMIT_BURST)
        else:
            r = pl.Rate(DENY_LIMIT, pl.Duration.HOUR)
        rows.append((f"pyrate-limiter StateBucket({algo}) try_acquire()",
                     make(state_bucket([r], algorithm=cls()))))
    return rows


def _token_bucket_rows(h, admit, closers):
    tbm = h.peer("token_bucket", "token-bucket")
    if tbm is None:
        return []
    if admit:
        lim = tbm.Limiter(ADMIT_RATE, ADMIT_BURST, tbm.MemoryStorage())
    else:
        lim = tbm.Limiter(DENY_RATE, DENY_LIMIT, tbm.MemoryStorage())
    return [("token-bucket Limiter.consume()", partial(lim.consume, "bench"))]


# -- the run ----------------------------------------------------------------

def _section(h, prs, admit):
    floor = h.floor()
    what = "admits" if admit else "denies"
    h.section(
        f"Rate limiters: allow() that {what}",
        note=("Every timed call is " + ("admitted (1e9 per second, burst 1e6; "
              "peers: 1e9 per second)" if admit else
              "denied (ours: burst 10 at 1e-3 per second; peers: 10 per hour; "
              "exhausted before timing)") +
              ". In-memory, one key, monotonic clock for ours. Targets: "
              "allow() costs no more than one `time.monotonic_ns()` call, and is at "
              "least 50x faster than the fastest peer."))
    ours = {}
    if prs is not None:
        if admit:
            tb = prs.TokenBucket(ADMIT_BURST, ADMIT_RATE)
            gc = prs.GCRA(ADMIT_RATE, ADMIT_BURST)
        else:
            tb = prs.TokenBucket(DENY_LIMIT, DENY_RATE)
            gc = prs.GCRA(DENY_RATE, DENY_LIMIT)
            _exhaust(tb.allow)
            _exhaust(gc.allow)
        for name, lim in (("TokenBucket", tb), ("GCRA", gc)):
            ns = _timed(h, f"pyresilience {name}.allow()", lim.allow, admit, peer=False)
            if ns is not None:
                ours[name] = ns
        for name, lim in (("TokenBucket", tb), ("GCRA", gc)):
            _timed(h, f"pyresilience {name}.check() (returns a Decision)", lim.check,
                   admit, peer=False)

    closers = []
    peer_ns = {}
    try:
        rows = (_limits_rows(h, admit, closers) + _pyrate_rows(h, admit, closers)
                + _token_bucket_rows(h, admit, closers))
        for label, fn in rows:
            if not admit:
                _exhaust(fn, DENY_LIMIT * 2)
            ns = _timed(h, label, fn, admit, peer=True)
            if ns is not None:
                peer_ns[label] = ns
    finally:
        for close in closers:  # stop the peers' background threads
            try:
                close()
            except Exception:
                pass

    if peer_ns:
        label, fastest = min(peer_ns.items(), key=lambda kv: kv[1])
        # No callable can beat the floor: this is the best ratio any allow()
        # timed this way could reach against that peer.
        h.ratio(f"ceiling: the fastest peer vs an empty C method call "
                f"(the best any allow() could score here)", floor["c_call"], fastest)
    mono = floor["monotonic_ns"]
    for name, ns in ours.items():
        h.target(f"{name}.allow() ({ns:.1f} ns) <= one time.monotonic_ns() "
                 f"({mono:.1f} ns)", ns <= mono)
        if peer_ns:
            label, fastest = min(peer_ns.items(), key=lambda kv: kv[1])
            r = h.ratio(f"{name}.allow() vs the fastest peer, {label}", ns, fastest)
            h.target(f"{name}.allow() >= 50x faster than the fastest peer "
                     f"({r:.1f}x)", r >= 50)
    # Per peer package: ours vs that package's fastest row.
    packages = {}
    for label, pns in peer_ns.items():
        pkg = label.split(" ", 1)[0]
        if pkg not in packages or pns < packages[pkg][1]:
            packages[pkg] = (label, pns)
    for name, ns in ours.items():
        for pkg, (label, pns) in packages.items():
            h.ratio(f"{name}.allow() vs {pkg} (its fastest: {label})", ns, pns)


def run(h) -> None:
    try:
        import pyresilience as prs
    except ImportError as exc:
        prs = None
        h.section("Rate limiters")
        h.note(f"pyresilience is not importable ({exc}); only the peers are timed")
    _section(h, prs, admit=True)
    _section(h, prs, admit=False)
