"""Helpers of the fork tests (test_bulkhead.py, test_queues.py): run a check in
a forked child with a deadline, and keep woken threads off the GIL until then."""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Optional

import pytest

# What HoldGIL does needs a GIL: on a free-threaded interpreter the tests built
# on it are skipped (tests/test_free_threaded_stress.py covers those objects).
needs_gil = pytest.mark.skipif(
    bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED")),
    reason="holds the GIL to keep woken threads still (HoldGIL): a free-threaded "
           "interpreter has no GIL to hold")


def in_child(check: Callable[[], Any], before: Optional[Callable[[], Any]] = None) -> str:
    """Runs before() then forks at once (nothing in between releases the GIL);
    the child runs check() and reports through a pipe. A child that hangs is
    killed after 20 s (the test fails instead of hanging the suite)."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        if before is not None:
            before()
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            out = repr(check())
            code = 0
        except BaseException:
            out = traceback.format_exc()
        finally:
            try:
                os.write(w, out.encode())
            finally:
                os._exit(code)
    os.close(w)
    deadline = time.monotonic() + 20.0
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        pytest.fail("the forked child hung")
    with os.fdopen(r) as f:
        got = f.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, got
    return got


def wait_until(cond: Callable[[], Any]) -> None:
    """Polls cond() until true (AssertionError after 10 s)."""
    deadline = time.monotonic() + 10.0
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


class HoldGIL:
    """While inside, a thread woken in C cannot re-take the GIL (so what it was
    handed stays unsettled until the fork), as long as this thread does not
    release it."""

    def __enter__(self) -> None:
        self.old = sys.getswitchinterval()
        sys.setswitchinterval(1000.0)
        # A thread already waiting for the GIL uses the old interval: let every
        # one through once (waits run in <= 50 ms slices), so all now use the new.
        time.sleep(0.12)

    def __exit__(self, *exc: Any) -> None:
        sys.setswitchinterval(self.old)
