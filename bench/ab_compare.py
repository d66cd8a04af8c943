"""A/B: the hot paths of two builds of pyresilience, measured in one run.

    python bench/ab_compare.py PYTHON_A PYTHON_B [--rounds 5]

PYTHON_A and PYTHON_B are interpreters (e.g. two venvs' bin/python) each with
its own build of the package installed. Every round runs each build once, in
its own process, alternating A, B, A, B, ... so that load on the machine hits
both alike; a row's figure is its best ns per call over the rounds. Prints a
Markdown table with the ratio B / A (above 1: B is slower).
"""
from __future__ import annotations

import argparse
import json
import os
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


def run(python: str) -> dict[str, float]:
    res = subprocess.run([os.path.abspath(python), "-c", CHILD, json.dumps(ROWS)], capture_output=True, text=True,
                         check=True, cwd="/")
    return json.loads(res.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    best: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    for _ in range(args.rounds):
        for side, py in (("a", args.a), ("b", args.b)):
            for name, ns in run(py).items():
                best[side][name] = min(ns, best[side].get(name, float("inf")))
    print("| row | A ns | B ns | B / A |")
    print("|---|---:|---:|---:|")
    for name, _, _ in ROWS:
        a, b = best["a"][name], best["b"][name]
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
