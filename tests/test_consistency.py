"""Issue 10, "Consistency": one surface for every public object."""
from __future__ import annotations

import pyresilience as pr


def test_dir_lists_public_names_only() -> None:
    names = dir(pr)
    assert names == sorted(set(pr.__all__) | {"__version__"})
    for private in ("_core", "annotations", "limiters", "breaker", "retry"):
        assert private not in names
    for name in pr.__all__:
        assert getattr(pr, name) is not None


def _public_objects() -> list[object]:
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, 5, 1, clock=clock)
    return [
        pr.TokenBucket(5, 1, clock=clock), pr.GCRA(1, 2, clock=clock),
        pr.LeakyBucket(3, 1, clock=clock), pr.FixedWindow(3, 1, clock=clock),
        pr.SlidingWindowLog(3, 1, clock=clock), pr.SlidingWindowCounter(3, 1, clock=clock),
        keyed, keyed.for_key("a"),
        pr.LimiterGroup(pr.TokenBucket(5, 1, clock=clock), pr.GCRA(1, 1, clock=clock)),
        pr.CircuitBreaker(), pr.Retry(), pr.RetryConfig(), pr.RetryBudget(),
        pr.Bulkhead("b", 2), pr.BoundedQueue(2), pr.BackpressureQueue(2),
        clock, pr.MonotonicClock(), pr.TokenBucket(5, 1).check(), pr.LeaseConfig(10, 1),
    ]


def test_one_repr_style() -> None:
    """`ClassName(param=value, ...)`: the class's own name, then its configuration."""
    import re
    for obj in _public_objects():
        r = repr(obj)
        name = type(obj).__name__
        assert r.startswith(name + "(") and r.endswith(")"), r
        inside = r[len(name) + 1:-1]
        if inside and not isinstance(obj, pr.LimiterGroup):
            # keyword=value (LimiterGroup(*limiters) lists its members as it takes them)
            assert re.match(r"^[a-z_]+=", inside), r


def test_view_repr_shows_its_key() -> None:
    view = pr.KeyedLimiter(pr.TokenBucket, 5, 1).for_key("tenant-7")
    assert "key='tenant-7'" in repr(view)


def test_metrics_are_frozen_snapshots_under_pyresilience() -> None:
    import dataclasses
    snapshots = [
        pr.CircuitBreaker().metrics, pr.Bulkhead("b", 2).metrics,
        pr.BackpressureQueue(2).metrics, pr.RetryBudget().metrics,
    ]
    for m in snapshots:
        t = type(m)
        assert t.__module__.startswith("pyresilience") and "_core" not in t.__module__, t
        assert t.__name__ in pr.__all__, t
        field = next(iter(dataclasses.fields(m))).name if dataclasses.is_dataclass(m) else None
        if field is None:
            field = next(n for n in dir(m) if not n.startswith("_"))
        try:
            setattr(m, field, 0)
        except (AttributeError, TypeError, dataclasses.FrozenInstanceError):
            pass
        else:
            raise AssertionError(f"{t.__name__} is not frozen")


def test_no_public_name_lives_in_core() -> None:
    for name in pr.__all__:
        obj = getattr(pr, name)
        if isinstance(obj, type):
            assert obj.__module__ != "pyresilience._core", name
