"""Typing: mypy --strict on typed examples (one that must pass, one whose marked
lines must fail with the expected errors), stubtest of pyresilience._core, and
the runtime side of decorators (functools.wraps, inspect.signature,
iscoroutinefunction) for every pattern."""
from __future__ import annotations

import asyncio
import functools
import inspect
import math
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import pyresilience as pr

HERE = Path(__file__).parent / "typing"


def run_mypy(*files):
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", os.devnull, "--hide-error-context", "--no-pretty",
                           "--show-error-codes", *map(str, files)],
                          capture_output=True, text=True, cwd=HERE)


def test_mypy_strict_passes_on_typed_examples():
    r = run_mypy(HERE / "example_typing.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_rejects_each_marked_line():
    src = (HERE / "negative_typing.py").read_text().splitlines()
    want = {i: line.split("  # E: ", 1)[1].strip() for i, line in enumerate(src, 1) if "  # E: " in line}
    assert len(want) >= 15
    r = run_mypy(HERE / "negative_typing.py")
    got = {}
    for line in r.stdout.splitlines():
        m = re.match(r"negative_typing\.py:(\d+): error: (.*)", line)
        if m:
            got.setdefault(int(m.group(1)), []).append(m.group(2))
    for lineno, text in want.items():
        assert any(text in e for e in got.get(lineno, [])), \
            f"line {lineno}: expected {text!r}, got {got.get(lineno)}\n{r.stdout}"
    assert set(got) == set(want), f"unexpected errors: { {k: v for k, v in got.items() if k not in want} }"


def test_mypy_strict_passes_on_the_package():
    """The facade's own annotations agree with the stubs (the installed package)."""
    pytest.importorskip("mypy")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        pytest.skip("mypy >= 1.19 has no free-threaded build (librt, ast-serialize), and the "
                    "pure 1.18 narrows `r.__class__ is bool` otherwise: checked in the GIL suite")
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, "-p", "pyresilience"],
                       capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubtest_core():
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "pyresilience._core",
                        "--allowlist", str(HERE / "stubtest_allowlist.txt")],
                       capture_output=True, text=True, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_allowlist_entries_are_commented_and_used():
    lines = (HERE / "stubtest_allowlist.txt").read_text().splitlines()
    entries = [line for line in lines if line.strip() and not line.startswith("#")]
    assert entries, "an empty allowlist should be deleted"
    for i, line in enumerate(lines):
        if line in entries:  # each entry follows a comment (its reason), maybe via other entries
            j = i - 1
            while j >= 0 and lines[j] in entries:
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), line


# ---- runtime: every decorator keeps what functools.wraps keeps ------------------------

def _decorators():
    clock = pr.ManualClock()
    view = pr.KeyedLimiter(pr.TokenBucket, capacity=10, refill_rate=1, clock=clock).for_key("k")
    return {
        "CircuitBreaker": pr.CircuitBreaker(clock=clock),
        "Bulkhead": pr.Bulkhead("b", 2),
        "TokenBucket": pr.TokenBucket(capacity=10, refill_rate=1, clock=clock),
        "GCRA": pr.GCRA(rate=10, burst=10, clock=clock),
        "LeakyBucket": pr.LeakyBucket(capacity=10, leak_rate=1, clock=clock),
        "FixedWindow": pr.FixedWindow(limit=10, window=1, clock=clock),
        "SlidingWindowLog": pr.SlidingWindowLog(limit=10, window=1, clock=clock),
        "SlidingWindowCounter": pr.SlidingWindowCounter(limit=10, window=1, clock=clock),
        "KeyedLimiterView": view,
        "LimiterGroup": pr.LimiterGroup(view),
        "Retry": pr.Retry(max_attempts=2, clock=clock),
        "retry_with_backoff": pr.retry_with_backoff(pr.RetryConfig(max_attempts=2, clock=clock)),
    }


DECORATORS = list(_decorators())


def sync_target(a: int, b: str = "x", *args: int, key: bool = False, **kw: float) -> str:
    """Sync docstring."""
    return f"{a}{b}"


async def async_target(a: int, /, b: str = "x", *, key: bool = False) -> str:
    """Async docstring."""
    return f"{a}{b}"


@pytest.mark.parametrize("name", DECORATORS)
def test_decorator_keeps_signature_and_metadata(name):
    deco = _decorators()[name]
    for target in (sync_target, async_target):
        wrapped = deco(target)
        assert inspect.signature(wrapped) == inspect.signature(target)
        assert wrapped.__name__ == target.__name__ and wrapped.__doc__ == target.__doc__
        assert wrapped.__qualname__ == target.__qualname__ and wrapped.__wrapped__ is target
        assert wrapped.__annotations__ == target.__annotations__
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(target)
    assert deco(sync_target)(1, "y") == "1y"
    assert asyncio.run(deco(async_target)(2, "z")) == "2z"


@pytest.mark.parametrize("name", DECORATORS)
def test_decorator_on_methods_binds_and_keeps_signature(name):
    deco = _decorators()[name]

    class C:
        @deco
        def get(self, key: str) -> int:
            return len(key)

        @deco
        async def aget(self, key: str) -> int:
            return len(key) + 1

    c = C()
    assert c.get("abc") == 3 and asyncio.run(c.aget("abc")) == 4
    assert str(inspect.signature(C.get)) == "(self, key: 'str') -> 'int'"
    assert str(inspect.signature(c.get)) == "(key: 'str') -> 'int'"
    assert inspect.iscoroutinefunction(C.aget) and inspect.iscoroutinefunction(c.aget)
    assert not inspect.iscoroutinefunction(C.get)


@pytest.mark.parametrize("name", DECORATORS)
def test_decorator_of_partial_and_async_callable_object(name):
    """A partial of a coroutine function and an object with `async def __call__`
    are awaited like coroutine functions (the wrapper is a coroutine function)."""
    deco = _decorators()[name]

    class Fetch:
        async def __call__(self, a: int) -> int:
            return a * 10

    for target in (functools.partial(async_target, 3), Fetch()):
        wrapped = deco(target)
        assert inspect.iscoroutinefunction(wrapped)
        got = asyncio.run(wrapped("q") if isinstance(target, functools.partial) else wrapped(4))
        assert got in ("3q", 40)


def test_async_callable_object_outcome_is_recorded_when_awaited():
    """Before: an object with `async def __call__` got the sync wrapper, which
    recorded a success when the coroutine was created; its failure escaped."""
    br = pr.CircuitBreaker(failure_threshold=1, clock=pr.ManualClock())

    class Down:
        async def __call__(self) -> None:
            raise ConnectionError("down")

    call = br(Down())
    with pytest.raises(ConnectionError):
        asyncio.run(call())
    assert br.state == pr.CircuitState.OPEN and br.metrics.failures == 1


def test_bulkhead_exit_never_suppresses():
    b = pr.Bulkhead("t", 1)
    assert b.__enter__() is b
    assert b.__exit__(None, None, None) in (None, False)
    with pytest.raises(ValueError):
        with b:
            raise ValueError("propagates")
    assert b.available == 1


def test_retry_budget_metrics_typed_fields():
    m = pr.RetryBudget(clock=pr.ManualClock()).metrics
    hints = {k: v for k, v in pr.RetryBudgetMetrics.__annotations__.items()}
    assert list(hints) == ["attempts", "retries_allowed", "retries_denied", "window_attempts",
                           "window_retries", "available"]
    assert m.available == 100.0 and not math.isnan(m.available)
