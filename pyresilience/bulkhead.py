"""Bulkheads: bounded concurrency for threads and asyncio, from one C core.

:class:`Bulkhead` is a thin Python subclass of ``pyresilience._core.Bulkhead``:
``acquire``/``release``/``with`` and every counter run in C; this module adds
what is naturally Python - ``await execute()`` (the reference design), its
thread pool, ``call()``, ``async with`` and decorators.

Sync and async users of one bulkhead share one pool of permits and one FIFO
queue of waiters. An asyncio waiter is a future woken when a permit is handed
to it; if its task is cancelled, the permit (if it got one) goes back at once,
exactly once.

Fork: a bulkhead inherited by a child process (os.fork, multiprocessing's
"fork") keeps working there. An at-fork hook gives every live bulkhead a new
lock in the child, takes the parent's threads out of its queue (a slot
handed to one of them comes back) and forgets the parent's thread pool.
asyncio waiters stay queued: they are served if the child runs their loop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union, cast, overload

from . import _core, _registry
from ._decorate import P, finish, inspect_target
from ._wait import await_waiter, check_timeout, new_waiter, repair_after_fork
from .events import EventSource

__all__ = ["Bulkhead", "BulkheadMetrics"]

T = TypeVar("T")

_DEFAULT: Any = ...  # "the bulkhead's max_wait_seconds"


@dataclass(frozen=True)
class BulkheadMetrics:
    """A snapshot of a bulkhead's counters (``Bulkhead.metrics``)."""

    # the name, then what _core.Bulkhead._stats() returns, in its order
    name: str
    max_concurrent: int
    active_count: int
    available: int
    waiting_count: int
    acquired_count: int
    released_count: int
    rejected_count: int
    cancelled_count: int
    average_hold_seconds: Optional[float]
    waited_count: int = 0  # callers that had to queue for a slot (whatever came of it)
    held_seconds_total: float = 0.0  # slot-seconds held (the sum of every hold so far)


# Every live Bulkhead, for the at-fork hook at the end of this module.
_live: "weakref.WeakSet[Bulkhead]" = weakref.WeakSet()



def start_pool(owner: Any, lock: threading.Lock, workers: int, prefix: str) -> concurrent.futures.ThreadPoolExecutor:
    """``owner._executor``, started under ``lock`` if it is still None: the slow
    path of a lazy thread pool (Bulkhead.execute's, Timeout(thread=True)'s),
    whose owner reads ``_executor`` first without the lock."""
    with lock:
        ex: Optional[concurrent.futures.ThreadPoolExecutor] = owner._executor
        if ex is None:
            ex = owner._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=prefix)
    return ex


def stop_pool(owner: Any, lock: threading.Lock, wait: bool) -> None:
    """Take ``owner._executor`` under ``lock`` and shut it down (a later
    start_pool starts a new one)."""
    with lock:
        ex, owner._executor = owner._executor, None
    if ex is not None:
        ex.shutdown(wait=wait)

class Bulkhead(_core.Bulkhead, EventSource):
    """Bulkhead(name, max_concurrent, max_wait_seconds=30.0, *, shared=None)

    At most ``max_concurrent`` operations at once; the others wait up to
    ``max_wait_seconds`` (0: fail at once; ``math.inf``: no limit) for a slot,
    first come, first served, then fail with :class:`BulkheadFullError`
    (``rejected_count`` goes up by one). Its ``retry_after`` is always an
    estimate in seconds of when a slot may free: the mean time a slot is held
    times ``(waiting_count + 1) / max_concurrent`` (Little's law), where the
    mean hold is the observed one once a slot has been released, and a prior
    of 1 second before that (so the first refusals carry a Retry-After too).

    - ``await bulkhead.execute(func, *args, **kwargs)``: coroutine functions
      are awaited directly; plain functions run in the bulkhead's own thread
      pool (``max_concurrent`` workers named ``bulkhead-{name}_N``).
    - Threads: ``bulkhead.call(func, *args, **kwargs)``, ``with bulkhead:``,
      ``@bulkhead`` (sync and async functions), ``acquire()``/``release()``.
      Waits release the GIL and Ctrl-C interrupts them.
    - asyncio: ``async with bulkhead:``, ``await bulkhead.acquire_async()``.

    Thread-safe; sync and async users share one pool of permits.

    ``shared`` (a :class:`~pyresilience.SharedMemory`): the permits live in
    that region under ``name``, one pool for every process that opens it
    (same ``max_concurrent``, else ValueError naming both). Each held permit
    records its process, so a permit of a process that dies comes back
    within about 0.3 s of the next caller that needs it. Threads waiting in
    any process are woken by a release in any other (a futex on Linux);
    asyncio waiters poll with backoff (0.5 ms doubling to 20 ms: a release
    elsewhere is seen within 20 ms). Waiters are then served in no
    particular order, ``waiting_count`` counts this process's waiters, and
    ``retry_after`` assumes a 1 s hold.
    """

    def __init__(self, name: str, max_concurrent: int, max_wait_seconds: float = 30.0, *,
                 shared: Optional[_core.SharedMemory] = None) -> None:
        # The C type was built from these arguments (tp_new); only the
        # Python-side state is made here.
        super().__init__()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._executor_lock = threading.Lock()
        _live.add(self)
        _registry.obs_of(self)  # named: the exporters see it

    def _native_name(self) -> str:
        return self.name

    def _after_fork_child(self) -> None:
        # The C repair (see _core.Bulkhead._after_fork_child), then a new pool:
        # the parent's worker threads do not exist here.
        super()._after_fork_child()
        self._executor = None
        self._executor_lock = threading.Lock()

    # -- asyncio -----------------------------------------------------------

    async def acquire_async(self, timeout: Any = _DEFAULT) -> None:
        """acquire_async(self, timeout=...)

        Take a slot without blocking the event loop, waiting up to ``timeout``
        seconds (``...``, the default: max_wait_seconds; None: no limit; 0: fail at once).
        Raises BulkheadFullError when none frees in time. If the task is
        cancelled while waiting, nothing is kept (a slot handed over at that
        moment goes to the next waiter). Pair with release()."""
        limit = self.max_wait_seconds if timeout is _DEFAULT else check_timeout(timeout)
        if self.shared:
            return await self._acquire_polling(limit)
        r = self._acquire_async(new_waiter, limit != 0)
        if r is not True:
            await self._acquire_slow(r, limit)

    async def _acquire_slow(self, r: Any, limit: float) -> None:
        if r is False or not await await_waiter(r, limit):
            raise self._full_error()

    # ``async with``: __aenter__/__aexit__ are in C (no coroutine on the fast
    # path); when no slot is free __aenter__ awaits this one.
    async def _acquire_polling(self, limit: float) -> None:
        # A shared bulkhead: a release in another process wakes no future of
        # this loop, so poll with backoff. Nothing is held between polls, so
        # a cancellation takes nothing; a permit is taken only by the last
        # try_acquire(), after which nothing is awaited.
        if self.try_acquire():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        delay = 0.0005
        while True:
            left = deadline - loop.time()
            if left <= 0:  # a last try, counted as a rejection when it fails
                if self._acquire_async(new_waiter, False) is True:
                    return
                raise self._full_error()
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)
            if self.try_acquire():
                return

    async def _aenter_slow(self) -> "Bulkhead":
        if self.shared:
            await self._acquire_polling(self.max_wait_seconds)
            return self
        r = self._acquire_async(new_waiter, None)
        if r is not True:
            await self._acquire_slow(r, self.max_wait_seconds)
        return self

    def _get_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        ex = self._executor
        if ex is None:
            ex = start_pool(self, self._executor_lock, min(self.max_concurrent, 1 << 15),
                            f"bulkhead-{self.name}")
        return ex

    @overload
    async def execute(self, func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T: ...
    @overload
    async def execute(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def execute(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """execute(self, func, /, *args, **kwargs)

        Run ``func(*args, **kwargs)`` in the bulkhead (the reference design's
        API): wait up to max_wait_seconds for a slot (BulkheadFullError when
        none frees), then await it if it is a coroutine function, or run it in
        the bulkhead's thread pool otherwise. The slot is released when the
        call ends - for a thread-pool call, when the thread finishes, even if
        the awaiting task was cancelled meanwhile."""
        if self.shared:
            await self._acquire_polling(self.max_wait_seconds)
        else:
            r = self._acquire_async(new_waiter, None)
            if r is not True:
                await self._acquire_slow(r, self.max_wait_seconds)
        if inspect.iscoroutinefunction(func):
            try:
                return await func(*args, **kwargs)
            finally:
                self.release()
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        try:
            cf = self._get_executor().submit(ctx.run, func, *args, **kwargs)
        except BaseException:
            self.release()
            raise
        cf.add_done_callback(self._release_done)
        result = await asyncio.wrap_future(cf, loop=loop)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _release_done(self, cf: "concurrent.futures.Future[Any]") -> None:
        self.release()

    # -- threads -------------------------------------------------------------

    def call(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """call(self, func, /, *args, **kwargs)

        ``func(*args, **kwargs)`` inside the bulkhead, in this thread: waits up
        to max_wait_seconds for a slot (GIL released, Ctrl-C interrupts), then
        calls; the slot is released when it returns or raises."""
        self.acquire()
        try:
            return func(*args, **kwargs)
        finally:
            self.release()

    def __call__(self, func: Callable[P, T]) -> Callable[P, T]:
        """Use the bulkhead as a decorator: each call of a sync function runs
        as call(); each call of a coroutine function under ``async with``. The
        signature is kept; a generator function is refused with TypeError."""
        if inspect_target(func, "a Bulkhead"):
            afunc = cast(Callable[..., Awaitable[Any]], func)

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                r = self._acquire_async(new_waiter, None)
                if r is not True:
                    await self._acquire_slow(r, self.max_wait_seconds)
                try:
                    return await afunc(*args, **kwargs)
                finally:
                    self.release()
            return cast(Callable[P, T], finish(async_wrapper, func))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.acquire()
            try:
                return func(*args, **kwargs)
            finally:
                self.release()
        return cast(Callable[P, T], finish(wrapper, func))

    # -- introspection -------------------------------------------------------

    @property
    def metrics(self) -> BulkheadMetrics:
        """A snapshot of every counter (BulkheadMetrics)."""
        return BulkheadMetrics(self.name, *self._stats())

    def shutdown(self, wait: bool = True) -> None:
        """shutdown(self, wait=True)

        Stop the thread pool of execute() (a later execute() starts a new one)."""
        stop_pool(self, self._executor_lock, wait)

    def __repr__(self) -> str:
        """``Bulkhead(name=..., max_concurrent=..., max_wait_seconds=...)``: the
        configuration; the counters are in :attr:`metrics`."""
        return (f"{type(self).__name__}(name={self.name!r}, max_concurrent={self.max_concurrent!r}, "
                f"max_wait_seconds={self.max_wait_seconds!r})")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: repair_after_fork(_live))
