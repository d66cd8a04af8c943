"""A/B: the hot paths of two builds of pyresilience, measured in one run.

    python bench/ab_compare.py PYTHON_A PYTHON_B [--rounds 5]

PYTHON_A and PYTHON_B are interpreters (e.g. two venvs' bin/python) each with
its own build of the package installed. Every round runs each build once, in
its own process, one after the other (which goes first alternates), so that
load on the machine hits both alike, and both processes of a round share one
PYTHONHASHSEED (a fresh one each round: the hash-dependent layout varies
between rounds, never between the two sides of one). Prints a Markdown table:
each row's best ns per call over all rounds, the ratio of those bests, and the
median of the per-round ratios B / A with its 90% confidence interval (the
order statistics of the binomial rule, distribution-free; above 1: B is
slower). The median of paired rounds is the figure to read on a noisy
machine: one round's load shows in both of its sides or in neither.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys

# Each row: (name, setup, statement); run with timeit in the child.
ROWS = [
    ("TokenBucket.allow()", "b = pr.TokenBucket(1e15, 1e15)", "b.allow()"),
    ("GCRA.allow()", "b = pr.GCRA(1e9, 2**50)", "b.allow()"),
    ("FixedWindow.allow()", "b = pr.FixedWindow(2**50, 1)", "b.allow()"),
    ("SlidingWindowCounter.check()", "b = pr.SlidingWindowCounter(2**50, 1)", "b.check()"),
    ("KeyedLimiter.allow(key)", "k = pr.KeyedLimiter(pr.TokenBucket, 1e15, 1e15)", "k.allow('user-1')"),
    ("LimiterGroup(3).allow()",
     "g = pr.LimiterGroup(pr.TokenBucket(1e15, 1e15), pr.GCRA(1e9, 2**50), pr.FixedWindow(2**50, 1))",
     "g.allow()"),
    ("LimiterGroup(3).check()",
     "g = pr.LimiterGroup(pr.TokenBucket(1e15, 1e15), pr.GCRA(1e9, 2**50), pr.FixedWindow(2**50, 1))",
     "g.check()"),
    ("CircuitBreaker.call(f) closed", "cb = pr.CircuitBreaker(); f = lambda: None", "cb.call(f)"),
    ("@Retry first-try success", "r = pr.Retry(max_attempts=3)\n@r\ndef f(): return 1", "f()"),
    ("with Bulkhead", "bh = pr.Bulkhead('b', 10)", "with bh: pass"),
    ("BoundedQueue put()+get()", "q = pr.BoundedQueue(16)", "q.put(1); q.get()"),
    ("Decision via check().allowed", "b = pr.TokenBucket(1e15, 1e15)", "b.check().allowed"),
]

CHILD = r"""
import json, sys, timeit, gc
import pyresilience as pr
rows = json.loads(sys.argv[1])
out = {}
for name, setup, stmt in rows:
    ns = {"pr": pr}
    exec(setup, ns)
    t = timeit.Timer(stmt, globals=ns)
    n, _ = t.autorange()
    gc.disable()
    best = min(t.repeat(5, n)) / n * 1e9
    gc.enable()
    out[name] = best
print(json.dumps(out))
"""


def run(python: str, seed: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    res = subprocess.run([os.path.abspath(python), "-c", CHILD, json.dumps(ROWS)], capture_output=True, text=True,
                         check=True, cwd="/", env=env)
    return json.loads(res.stdout)


def median_ci(xs: list[float], level: float = 0.90) -> tuple[float, float, float]:
    """The median of xs and a distribution-free confidence interval for it:
    the order statistics xs[k] and xs[n - 1 - k] (sorted) with the largest k
    whose coverage, 1 - 2 P(Bin(n, 1/2) <= k), is at least `level` (k = 0,
    the whole range, when none is)."""
    xs = sorted(xs)
    n = len(xs)
    med = (xs[(n - 1) // 2] + xs[n // 2]) / 2
    k = 0
    for j in range(n // 2):
        tail = sum(math.comb(n, i) for i in range(j + 1)) / 2 ** n  # P(Bin(n, 1/2) <= j)
        if 1 - 2 * tail < level:
            break
        k = j
    return med, xs[k], xs[n - 1 - k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    best: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in ROWS}
    for r in range(args.rounds):
        seed = random.randrange(1, 2**32 - 1)
        sides = (("a", args.a), ("b", args.b)) if r % 2 == 0 else (("b", args.b), ("a", args.a))
        got = {side: run(py, seed) for side, py in sides}
        for name, _, _ in ROWS:
            ratios[name].append(got["b"][name] / got["a"][name])
            for side in "ab":
                best[side][name] = min(got[side][name], best[side].get(name, float("inf")))
    print(f"{args.rounds} rounds; median of the per-round B / A with its 90% confidence interval")
    print()
    print("| row | A ns | B ns | best B / best A | median B / A | 90% CI |")
    print("|---|---:|---:|---:|---:|---|")
    for name, _, _ in ROWS:
        a, b = best["a"][name], best["b"][name]
        med, lo, hi = median_ci(ratios[name])
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.3f} | {med:.3f} | {lo:.3f} to {hi:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
