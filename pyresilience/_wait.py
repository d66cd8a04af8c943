"""The asyncio side of the condition wait shared by Bulkhead and the queues.

When an asyncio form must wait, the binding calls :func:`new_waiter` (the
facade passes it with the call) for a future of the running loop and its
wake, queues an ``_AsyncWaiter`` holding both in the same FIFO as the threads,
and calls the wake when the core serves it, from whichever thread did;
:func:`await_waiter` awaits that future (up to a time limit) and settles the
waiter exactly once with its ``finish(cancel)``: ``cancel=True`` when the
task is cancelled (or anything else is raised), so what was handed to it goes
back. The future says only "look again": what was
handed over is in the core waiter's state.
"""
from __future__ import annotations

import math
import weakref
from asyncio import get_running_loop
from asyncio.events import _get_running_loop
from typing import Any, Callable, Iterable, Optional

from ._core import deadline_remaining as _deadline_remaining


def check_timeout(timeout: Any) -> float:
    """Seconds from a ``timeout`` argument: None -> inf (no limit), else a real
    number >= 0 (TypeError / ValueError naming the value)."""
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a real number or None, not {type(timeout).__name__}: {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    return float(timeout)


def _wake(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


def new_waiter() -> "tuple[Any, Callable[[], None]]":
    """A new future of the running loop (RuntimeError when none runs) and its
    wake: on the loop's thread the result is set at once, from any other
    thread through ``loop.call_soon_threadsafe`` (which raises once the loop
    is closed: the binding then gives back what the waiter was handed)."""
    loop = get_running_loop()
    fut = loop.create_future()

    def wake() -> None:
        if _get_running_loop() is loop:
            _wake(fut)
        else:
            loop.call_soon_threadsafe(_wake, fut)
    return fut, wake


async def await_waiter(waiter: Any, limit: Optional[float]) -> Any:
    """Awaits ``waiter.future`` for up to ``limit`` seconds (None or inf: no
    limit), then returns ``waiter.finish(False)``; on any exception (a
    cancellation) calls ``waiter.finish(True)`` and re-raises."""
    fut = waiter.future
    handle = None
    left = _deadline_remaining()  # a policy call's deadline caps every wait
    if left is not None and (limit is None or left < limit):
        limit = left
    if limit is not None and not math.isinf(limit):
        handle = fut.get_loop().call_later(limit, _wake, fut)
    try:
        await fut
    except BaseException:
        waiter.finish(True)
        raise
    finally:
        if handle is not None:
            handle.cancel()
    return waiter.finish(False)


def repair_after_fork(live: "weakref.WeakSet[Any]") -> None:
    """Calls ``_after_fork_child()`` on every object of ``live`` (in a child
    process, one thread running): repairs them all, then raises the first
    error."""
    first: Optional[BaseException] = None
    objects: Iterable[Any] = list(live)
    for obj in objects:
        try:
            obj._after_fork_child()
        except BaseException as exc:  # repair the others, then report the first
            first = first or exc
    if first is not None:
        raise first
