"""Per-key limiting and limiter groups.

Tables:

* "Keyed allow(key)": KeyedLimiter(TokenBucket).allow(key) cycling over 1k
  and over 1M distinct keys (every call a different key, so at 1M keys nearly
  every call misses the CPU caches), against the unkeyed TokenBucket.allow()
  measured the same way; peers keyed by identifier, in memory: ``limits``
  (FixedWindowRateLimiter and MovingWindowRateLimiter .hit(item, key)) and
  ``pyrate-limiter`` (one InMemoryBucket per name through a BucketFactory).
  Every call admits (10**15 per second for ours, 10**9 per second for the
  peers). Calls go through ``next(map(limiter.allow, cycle(keys)))`` for all,
  so no Python frame is timed; the unkeyed row uses ``next(iter(tb.allow,
  None))``, the same loop without a key. At 1M keys a row with Zipf(1.0)
  traffic (a few keys hot, a long tail) shows the cost under a typical key
  distribution; round-robin over 1M keys touches a random cache line of a
  ~50 MB table on every call (DRAM-bound).
* "Bytes per key": memory of the C table per key held, at 1M keys, per
  algorithm (the table's own allocations: slots, long keys, shards).
* "Limiter group": a 3-member LimiterGroup (global TokenBucket, a per-user
  key, a per-endpoint key) allow() against the three allow() calls it
  replaces (which are not atomic).
"""

from __future__ import annotations

import time
from functools import partial
from itertools import cycle

BIG = 10**15


def _keys(n):
    return [f"user:{i}" for i in range(n)]


def _zipf_draws(keys, count, s=1.0, seed=42):
    """`count` keys drawn with P(rank i) ~ 1/i**s (typical request traffic)."""
    import bisect
    import random
    total, cum = 0.0, []
    for i in range(len(keys)):
        total += 1.0 / (i + 1) ** s
        cum.append(total)
    rnd = random.Random(seed)
    order = keys[:]
    rnd.shuffle(order)  # popular keys spread over the table
    return [order[min(bisect.bisect_left(cum, rnd.random() * total), len(keys) - 1)]
            for _ in range(count)]


def _cycling(fn, keys):
    return partial(next, map(fn, cycle(keys)))


def _admits(fn, n=1000):
    return all(fn() for _ in range(n))


def _timed(h, label, fn, *, peer=False, group=None):
    if not _admits(fn):
        h.note(f"{label}: a call was denied; row not timed")
        return None
    return h.time(label, fn, peer=peer, group=group)


def _limits_rows(h, sizes):
    limits = h.peer("limits")
    if limits is None:
        return []
    from limits.storage import MemoryStorage
    item = limits.RateLimitItemPerSecond(10**9)
    rows = []
    for cls_name in ("FixedWindowRateLimiter", "MovingWindowRateLimiter"):
        cls = getattr(limits.strategies, cls_name, None)
        if cls is None:
            continue
        for n in sizes:
            lim = cls(MemoryStorage())
            keys = _keys(n)
            for k in keys:
                lim.hit(item, k)
            rows.append((n, f"limits {cls_name}.hit(item, key), {n:,} keys",
                         _cycling(partial(lim.hit, item), keys)))
    return rows


def _pyrate_rows(h, sizes, closers):
    pl = h.peer("pyrate_limiter", "pyrate-limiter")
    if pl is None:
        return []
    rate = [pl.Rate(10**9, pl.Duration.SECOND)]

    class PerName(pl.BucketFactory):
        """One InMemoryBucket per name (pyrate-limiter's per-key pattern)."""

        def __init__(self):
            self.buckets = {}

        def wrap_item(self, name, weight=1):
            return pl.RateItem(name, time.monotonic_ns() // 1_000_000, weight=weight)

        def get(self, item):
            b = self.buckets.get(item.name)
            if b is None:
                b = self.buckets[item.name] = pl.InMemoryBucket(rate)
            return b

    rows = []
    for n in sizes:
        lim = pl.Limiter(PerName())
        if hasattr(lim, "close"):
            closers.append(lim.close)
        fn = partial(lim.try_acquire, blocking=False)
        keys = _keys(n)
        for k in keys:
            fn(k)
        rows.append((n, f"pyrate-limiter per-name InMemoryBucket try_acquire(key), {n:,} keys",
                     _cycling(fn, keys)))
    return rows


def _keyed_section(h, prs):
    h.section(
        "Keyed allow(key)",
        note=("KeyedLimiter(TokenBucket) allow(key), every call a different key of 1k or 1M, "
              "against the unkeyed TokenBucket.allow() in the same loop. Peers keyed by "
              "identifier, in memory. Target: keyed allow() at 1M keys within 2x of "
              "an unkeyed allow()."))
    big = 1_000_000 if not h.quick else 100_000
    ours = {}
    if prs is not None:
        tb = prs.TokenBucket(BIG, BIG)
        base = _timed(h, "pyresilience TokenBucket.allow() (unkeyed, same loop)",
                      partial(next, iter(tb.allow, None)))
        h.time("pyresilience TokenBucket.allow() (unkeyed, direct call)", tb.allow)
        for n in (1000, big):
            k = prs.KeyedLimiter(prs.TokenBucket, BIG, BIG, max_keys=int(n * 1.1) + 1000)
            keys = _keys(n)
            for key in keys:
                k.allow(key)
            ns = _timed(h, f"pyresilience KeyedLimiter.allow(key), {n:,} keys",
                        _cycling(k.allow, keys))
            ours[n] = ns
            h.time(f"pyresilience KeyedLimiter.allow(key), one hot key of {n:,}",
                   partial(k.allow, keys[n // 2]))
            if n == big:
                zipf = _zipf_draws(keys, 200_000)
                zns = _timed(h, f"pyresilience KeyedLimiter.allow(key), {n:,} keys, "
                             "Zipf(1.0) traffic", _cycling(k.allow, zipf))
                if zns and base:
                    h.value(f"keyed allow() at {n:,} keys, Zipf traffic / unkeyed allow()",
                            zns / base, "x")
                del zipf
            if ns and base:
                r = ns / base
                h.value(f"keyed allow() at {n:,} keys / unkeyed allow()", r, "x")
                if n == big:
                    h.target(f"keyed allow() at {n:,} keys within 2x of unkeyed allow() "
                             f"({r:.2f}x)", r <= 2.0)
            del k, keys
    closers = []
    peer_sizes = (1000, 100_000) if not h.quick else (1000,)
    try:
        for n, label, fn in _limits_rows(h, peer_sizes) + _pyrate_rows(h, peer_sizes, closers):
            _timed(h, label, fn, peer=True)
    finally:
        for close in closers:
            try:
                close()
            except Exception:
                pass
    h.note("peers at 1k and 100k keys (populating 1M keys of them takes minutes and "
           "gigabytes); ours at 1k and 1M")


def _memory_section(h, prs):
    h.section("Bytes per key",
              note=("KeyedLimiter.memory_bytes / len() after 1M distinct keys (\"user:N\", "
                    "inline) with max_keys=1M: the C table's slots (1.25 per key), shards and "
                    "long keys. Target: <= 64 bytes per key for every algorithm but "
                    "SlidingWindowLog (O(limit) per key by design)."))
    if prs is None:
        return
    n = 1_000_000 if not h.quick else 100_000
    keys = _keys(n)
    algos = [("TokenBucket", (10, 1)), ("GCRA", (10, 10)), ("LeakyBucket", (10, 1)),
             ("FixedWindow", (10, 1)), ("SlidingWindowCounter", (10, 1)),
             ("SlidingWindowLog", (10, 1))]
    for name, args in algos:
        k = prs.KeyedLimiter(getattr(prs, name), *args, max_keys=n, clock=prs.ManualClock())
        allow = k.allow
        for key in keys:
            allow(key)
        per_key = k.memory_bytes / len(k)
        h.value(f"{name}: bytes per key at {len(k):,} keys", per_key, "B")
        if name != "SlidingWindowLog":
            h.target(f"{name} <= 64 bytes per key ({per_key:.1f})", per_key <= 64)
        del k
    limits = h.peer("limits")
    if limits is not None and not h.quick:
        import tracemalloc
        from limits.storage import MemoryStorage
        lim = limits.strategies.FixedWindowRateLimiter(MemoryStorage())
        item = limits.RateLimitItemPerSecond(10**9)
        m = 100_000
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for key in keys[:m]:
            lim.hit(item, key)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        h.value(f"peer limits FixedWindowRateLimiter: Python heap per key at {m:,} keys "
                "(tracemalloc)", (after - before) / m, "B")


def _group_section(h, prs):
    h.section("Limiter group",
              note=("LimiterGroup(global TokenBucket, per_user.for_key(u), "
                    "per_endpoint.for_key(p)).allow(): all or nothing under one set of locks, "
                    "against three separate allow() calls (not atomic) and one allow()."))
    if prs is None:
        return
    glob = prs.TokenBucket(BIG, BIG)
    per_user = prs.KeyedLimiter(prs.TokenBucket, BIG, BIG)
    per_path = prs.KeyedLimiter(prs.GCRA, 1e9, 10**6)
    u, p = per_user.for_key("user:42"), per_path.for_key("/search")
    grp = prs.LimiterGroup(glob, u, p)
    g_ns = _timed(h, "pyresilience LimiterGroup(3 members).allow()", grp.allow)
    h.time("pyresilience LimiterGroup(3 members).check() (Decision)", grp.check)

    def three():
        return glob.allow() and u.allow() and p.allow()

    t_ns = _timed(h, "three allow() calls (global, user view, endpoint view), Python function", three)
    one = h.time("pyresilience TokenBucket.allow() (one limiter)", glob.allow)
    if g_ns and t_ns:
        h.ratio("group allow() vs three separate allow() calls", g_ns, t_ns)
    if g_ns and one:
        h.value("group allow() / one allow()", g_ns / one, "x")


def run(h) -> None:
    try:
        import pyresilience as prs
        prs.KeyedLimiter  # noqa: B018
    except (ImportError, AttributeError) as exc:
        prs = None
        h.section("Per-key limiting")
        h.note(f"pyresilience KeyedLimiter is not importable ({exc}); only the peers are timed")
    _keyed_section(h, prs)
    _memory_section(h, prs)
    _group_section(h, prs)
