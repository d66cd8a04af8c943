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
