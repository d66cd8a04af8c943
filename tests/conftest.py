"""Shared fixtures of the pytest suite."""
from __future__ import annotations

import pytest

import pyresilience as pr


@pytest.fixture
def clock() -> pr.ManualClock:
    """A frozen ManualClock at t=0."""
    return pr.ManualClock()
