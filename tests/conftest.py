"""Shared fixtures of the pytest suite."""
from __future__ import annotations

import os
import signal
import sys
import sysconfig

import pytest

import pyresilience as pr

# A free-threaded interpreter (make test-free-threaded: PRS_FREE_THREADED=1,
# PYTHON_GIL=0): the whole suite must run with the GIL off.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _gil_enabled() -> bool:
    return bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def pytest_sessionstart(session: pytest.Session) -> None:
    # The Ctrl-C tests send SIGINT to this process. A shell without job control
    # starts background commands with SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: those waits would never be interrupted.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("PRS_FREE_THREADED") == "1" and not FREE_THREADED:
        raise pytest.UsageError("PRS_FREE_THREADED=1 but this interpreter is not free-threaded")
    if FREE_THREADED and _gil_enabled():
        raise pytest.UsageError("free-threaded interpreter with the GIL enabled (after importing "
                                "pyresilience): the suite must run without it")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if FREE_THREADED and _gil_enabled():  # something imported during the run turned it on
        print("\nfree-threaded: the GIL was enabled during the run", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config: pytest.Config) -> str:
    if FREE_THREADED:
        return f"free-threaded CPython, GIL enabled: {_gil_enabled()}"
    return "CPython with the GIL"


@pytest.fixture
def clock() -> pr.ManualClock:
    """A frozen ManualClock at t=0."""
    return pr.ManualClock()
