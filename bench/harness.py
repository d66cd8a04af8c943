"""The benchmark harness shared by every bench/bench_*.py module.

``bench/run.py`` discovers ``bench/bench_*.py``, imports each one and calls its
``run(h)`` with one ``H`` object for the whole run; the results of all modules
land in one BENCHMARKS.md.  A bench module looks like this::

    from functools import partial

    def run(h):
        h.section("Token bucket: allow()",
                  note="Target: allow() <= one time.monotonic_ns() call.")
        tb = TokenBucket(1e15, 1e15)
        ours = h.time("pyresilience TokenBucket.allow()", tb.allow)

        limits = h.peer("limits")          # module, or None (noted) if missing
        if limits is not None:
            lim = ...
            h.time("limits FixedWindow .hit()", partial(lim.hit, item), peer=True)

API (stable; other modules rely on it)
--------------------------------------
``h.section(title, note="")``
    Start a new table.  ``note`` is printed above it: say what is measured and
    state the targets there.
``h.time(label, fn, *, number=None, repeat=5, group=None, peer=False) -> float``
    Time the zero-argument callable ``fn``.  ``number`` (calls per repeat) is
    calibrated so that one repeat takes 0.1-0.2 s (0.02-0.04 s with --quick)
    unless given.  Returns the best-of-``repeat`` ns per call; the median is
    recorded too.  ``peer=True`` marks a competitor's row.  If ``fn`` raises,
    the row shows the error and ``nan`` is returned (the run goes on).
``h.time_async(label, coro_fn, *, number=None, repeat=5, group=None, peer=False) -> float``
    The same for ``coro_fn``, a zero-argument callable returning an awaitable:
    ns per ``await coro_fn()``, measured inside one running event loop (a
    fresh ``asyncio`` loop per call of time_async).
``h.floor() -> dict``
    Measure (once per run; later calls return the cached figures) the floor:
    ``time.monotonic_ns()``, an empty C method call (``[].clear``), and an
    empty Python function call.  They form the first table of BENCHMARKS.md.
    Keys: ``"monotonic_ns"``, ``"c_call"``, ``"py_call"`` (ns/op).
``h.ratio(label, ours_ns, peer_ns) -> float``
    Record an explicit ratio ``peer_ns / ours_ns`` ("ours is N x faster") under
    the current table, and return it.
``h.value(label, value, unit)``
    Record a non-timing figure (bytes per key, decisions/s, ...) under the
    current table.
``h.target(text, met)``
    Record whether a stated target is met (``met`` True/False/None=unknown).
``h.note(text)``
    Add a free-form line under the current table (e.g. "peer X skipped: ...").
``h.peer(import_name, dist_name=None)``
    Import a peer package; returns the module, or None after noting in the
    current section that it is not installed.  Installed versions are listed
    in the BENCHMARKS.md header.
``h.quick``
    True under ``run.py --quick``: use smaller sizes if a bench is slow.

Ratio columns (automatic)
-------------------------
Every table has a "x monotonic_ns()" column: ns/op divided by the floor's
``time.monotonic_ns()``.  A table that holds peer rows also gets a
"x faster than fastest peer" column on our rows: the fastest (lowest best
ns/op) peer row of the same ``group`` divided by our row; when the group holds
no peer, the fastest peer of the whole section is used.

How a row is measured
---------------------
Raw: ``timeit.Timer(fn).timeit(number)`` (garbage collector off while timing,
as timeit does) divided by ``number``.  A repeat during which the process was
descheduled (thread CPU time < 95% of wall time: the machine was busy) is
retried, up to 3 x ``repeat`` attempts, so best and median come from
undisturbed repeats when there are enough of them.  Nothing is subtracted, so every figure
includes the cost of the timing loop and of one call of ``fn`` from Python;
the floor rows show how much that is ("empty C method call" is exactly that
overhead for a C-level callable).  Pass bound methods, or ``functools.partial``
for calls with arguments, so no extra Python frame is measured; a ``lambda``
adds one Python call (see the floor's "empty Python function" row).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.metadata
import math
import statistics
import time
import timeit
import traceback
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

__all__ = ["H", "Row", "Section"]


@dataclass
class Row:
    label: str
    best_ns: float
    median_ns: float
    number: int
    repeat: int
    group: Optional[str] = None
    peer: bool = False
    error: Optional[str] = None


@dataclass
class Section:
    title: str
    note: str = ""
    rows: list = field(default_factory=list)
    ratios: list = field(default_factory=list)     # (label, ours, peer, ratio)
    values: list = field(default_factory=list)     # (label, value, unit)
    targets: list = field(default_factory=list)    # (text, met)
    notes: list = field(default_factory=list)      # free text lines
    module: str = ""


class H:
    """Collects timings of one benchmark run; see the module docstring."""

    def __init__(self, *, quick: bool = False, verbose: bool = True) -> None:
        self.quick = quick
        self.verbose = verbose
        self.sections: list = []
        self.peers: dict = {}          # dist name -> version or None (missing)
        self.module = ""               # set by run.py while a module runs
        self._floor: Optional[dict] = None
        self._target_s = (0.02, 0.04) if quick else (0.1, 0.2)
        self.load_start = 0.0          # 1-min load average when the run began (run.py)

    # -- sections and annotations ------------------------------------------

    def section(self, title: str, note: str = "") -> Section:
        """section(title, note="")  Start a new table."""
        s = Section(title=title, note=note, module=self.module)
        self.sections.append(s)
        if self.verbose:
            print(f"\n== {title}", flush=True)
        return s

    def _current(self) -> Section:
        if not self.sections:
            self.section(self.module or "(untitled)")
        return self.sections[-1]

    def note(self, text: str) -> None:
        """note(text)  Add a free-form line under the current table."""
        self._current().notes.append(text)
        if self.verbose:
            print(f"   note: {text}", flush=True)

    def ratio(self, label: str, ours_ns: float, peer_ns: float) -> float:
        """ratio(label, ours_ns, peer_ns) -> peer_ns / ours_ns"""
        r = peer_ns / ours_ns if ours_ns and ours_ns > 0 else math.nan
        self._current().ratios.append((label, ours_ns, peer_ns, r))
        if self.verbose:
            print(f"   ratio {label}: {_fmt_ratio(r)}", flush=True)
        return r

    def value(self, label: str, value: float, unit: str) -> None:
        """value(label, value, unit)  Record a non-timing figure."""
        self._current().values.append((label, value, unit))
        if self.verbose:
            print(f"   {label}: {_fmt_num(value)} {unit}", flush=True)

    def target(self, text: str, met: Optional[bool]) -> None:
        """target(text, met)  Record whether a stated target is met."""
        self._current().targets.append((text, met))
        if self.verbose:
            print(f"   target {'MET' if met else 'NOT MET' if met is not None else '?'}: {text}",
                  flush=True)

    def peer(self, import_name: str, dist_name: Optional[str] = None) -> Any:
        """peer(import_name, dist_name=None) -> module or None"""
        dist = dist_name or import_name
        try:
            mod = importlib.import_module(import_name)
        except Exception as exc:  # ImportError, or a broken install
            self.peers.setdefault(dist, None)
            self.note(f"peer `{dist}` not available ({type(exc).__name__}: {exc}); skipped")
            return None
        try:
            self.peers[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            self.peers[dist] = getattr(mod, "__version__", "?")
        return mod

    # -- timing ------------------------------------------------------------

    def _calibrate(self, run_n: Callable[[int], float]) -> int:
        lo, hi = self._target_s
        number = 1
        while True:
            t = run_n(number)
            if t >= lo / 10 or number >= 1 << 40:
                break
            number *= 10 if t < lo / 100 else 2
        # Aim at the middle of [lo, hi].
        if t > 0:
            number = max(1, int(number * ((lo + hi) / 2) / t))
        return number

    @staticmethod
    def _repeats(run_n: Callable[[int], float], number: int, repeat: int) -> list:
        """ns/op of `repeat` repeats that ran on the CPU, when possible.

        A repeat whose thread CPU time is under 95% of its wall time was
        descheduled (another process took the core) and is retried, up to
        3 * repeat attempts; if none of the first `repeat` attempts ran
        undisturbed, the callable itself waits (sleep, I/O, other threads)
        and every attempt is kept."""
        clean, every = [], []
        for attempt in range(3 * repeat):
            c0 = time.thread_time()
            wall = run_n(number)
            cpu = time.thread_time() - c0
            ns = wall * 1e9 / number
            every.append(ns)
            if cpu >= 0.95 * wall:
                clean.append(ns)
            if len(clean) >= repeat or (attempt + 1 == repeat and not clean):
                break
        return clean if len(clean) >= max(1, repeat // 2 + 1) else every

    def _measure(self, label: str, run_n: Callable[[int], float], number: Optional[int],
                 repeat: int, group: Optional[str], peer: bool) -> float:
        sec = self._current()
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat!r}")
        if number is not None and number < 1:
            raise ValueError(f"number must be >= 1, got {number!r}")
        if self.quick:
            repeat = min(repeat, 3)
        try:
            if number is None:
                number = self._calibrate(run_n)
            per_op = self._repeats(run_n, number, repeat)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            sec.rows.append(Row(label, math.nan, math.nan, number or 0, repeat,
                                group, peer, err))
            if self.verbose:
                print(f"   {label:<58} FAILED {err}", flush=True)
                traceback.print_exc()
            return math.nan
        best, med = min(per_op), statistics.median(per_op)
        sec.rows.append(Row(label, best, med, number, repeat, group, peer))
        if self.verbose:
            tag = " (peer)" if peer else ""
            print(f"   {label + tag:<58} {_fmt_num(best):>10} ns/op  "
                  f"(median {_fmt_num(med)}, {number}x{repeat})", flush=True)
        return best

    def time(self, label: str, fn: Callable[[], Any], *, number: Optional[int] = None,
             repeat: int = 5, group: Optional[str] = None, peer: bool = False) -> float:
        """time(label, fn, *, number=None, repeat=5, group=None, peer=False) -> best ns/op"""
        timer = timeit.Timer(fn)
        return self._measure(label, timer.timeit, number, repeat, group, peer)

    def time_async(self, label: str, coro_fn: Callable[[], Awaitable[Any]], *,
                   number: Optional[int] = None, repeat: int = 5,
                   group: Optional[str] = None, peer: bool = False) -> float:
        """time_async(label, coro_fn, *, number=None, repeat=5, group=None, peer=False) -> best ns/op"""
        loop = asyncio.new_event_loop()

        async def body(n: int) -> float:
            f = coro_fn
            rng = range(n)
            t0 = time.perf_counter()
            for _ in rng:
                await f()
            return time.perf_counter() - t0

        def run_n(n: int) -> float:
            gc_was = gc.isenabled()
            gc.disable()
            try:
                return loop.run_until_complete(body(n))
            finally:
                if gc_was:
                    gc.enable()

        try:
            return self._measure(label, run_n, number, repeat, group, peer)
        finally:
            loop.close()

    def floor(self) -> dict:
        """floor() -> {"monotonic_ns": ns, "c_call": ns, "py_call": ns}, measured once per run"""
        if self._floor is not None:
            return self._floor
        saved = self.sections
        self.sections = []
        module, self.module = self.module, "harness"
        self.section("Floor: the cost of the measurement itself",
                     note="Reference rows, measured the same way as every other row: "
                          "each includes the timing loop and one call from Python.")
        f = {
            "monotonic_ns": self.time("time.monotonic_ns()", time.monotonic_ns),
            "c_call": self.time("empty C method call ([].clear)", [].clear),
            "py_call": self.time("empty Python function call (lambda: None)", lambda: None),
        }
        self.sections = self.sections + saved
        self.module = module
        self._floor = f
        return f

    # -- reporting helpers used by run.py ----------------------------------

    def section_error(self, module: str, exc: BaseException) -> None:
        """Record that a module failed (run.py calls this)."""
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        s = Section(title=f"{module}: FAILED", module=module)
        s.notes.append(f"the module raised {type(exc).__name__}: {exc}")
        s.notes.append("```\n" + "".join(tb[-6:]).rstrip() + "\n```")
        self.sections.append(s)

    def render_section(self, s: Section) -> str:
        """Markdown for one section."""
        out = [f"## {s.title}", ""]
        if s.module and s.module != "harness":
            out += [f"_bench/bench_{s.module}.py_", ""]
        if s.note:
            out += [s.note, ""]
        if s.rows:
            mono = (self._floor or {}).get("monotonic_ns")
            peers = [r for r in s.rows if r.peer and not math.isnan(r.best_ns)]
            cols = ["benchmark", "best ns/op", "median ns/op", "x monotonic_ns()"]
            if peers:
                cols.append("x faster than fastest peer")
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
            for r in s.rows:
                label = r.label + (" *(peer)*" if r.peer else "")
                if r.error:
                    cells = [label, "failed: " + r.error.replace("|", "\\|"), "", ""]
                    if peers:
                        cells.append("")
                    out.append("| " + " | ".join(cells) + " |")
                    continue
                cells = [label, _fmt_num(r.best_ns), _fmt_num(r.median_ns),
                         _fmt_ratio(r.best_ns / mono) if mono else ""]
                if peers:
                    if r.peer:
                        cells.append("")
                    else:
                        same = [p for p in peers if p.group == r.group] or peers
                        fastest = min(same, key=lambda p: p.best_ns)
                        cells.append(f"{_fmt_ratio(fastest.best_ns / r.best_ns)}"
                                     f" (vs {fastest.label})")
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        if s.values:
            out += ["| figure | value |", "|---|---:|"]
            out += [f"| {lab} | {_fmt_num(v)} {unit} |" for lab, v, unit in s.values]
            out.append("")
        if s.ratios:
            out += [f"- {lab}: **{_fmt_ratio(r)}** ({_fmt_num(p)} / {_fmt_num(o)} ns)"
                    for lab, o, p, r in s.ratios]
            out.append("")
        if s.targets:
            for text, met in s.targets:
                mark = "met" if met else ("NOT met" if met is not None else "unknown")
                out.append(f"- Target {mark}: {text}")
            out.append("")
        if s.notes:
            out += [n if n.startswith("```") else f"- {n}" for n in s.notes]
            out.append("")
        return "\n".join(out)


def _fmt_num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _fmt_ratio(r: float) -> str:
    if r is None or math.isnan(r) or math.isinf(r):
        return "n/a"
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"
