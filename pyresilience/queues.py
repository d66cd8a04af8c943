"""Backpressure queues: bounded FIFOs on a C ring, for asyncio and threads.

:class:`BackpressureQueue` is the reference design's asyncio queue
(``await put(item) -> bool``, ``await get()``, ``fill_ratio``, ``metrics``)
that otherwise behaves as :class:`asyncio.Queue` (``put_nowait``/
``get_nowait`` raising ``asyncio.QueueFull``/``QueueEmpty``, ``task_done()``,
``await join()``); :class:`BoundedQueue` is the same queue for threads and a
drop-in for :class:`queue.Queue` (``put(item, block=True, timeout=None)``,
``get(block=True, timeout=None)``, ``queue.Full``/``queue.Empty``,
``task_done()``/``join()``, ``maxsize <= 0`` unbounded). Both are thin
subclasses of ``pyresilience._core.RingQueue`` and add ``close()``, iteration
that ends when a closed queue is drained, and high/low watermark callbacks.

Capacity holds at every instant: an item handed to a waiting consumer keeps
its slot until that consumer takes it, and a put is admitted only while a slot
is free - so giving items back (a cancelled consumer, a forked child) never
overflows. An awaited put that raises CancelledError has not stored its item
(asyncio.Queue's rule): a task served room but cancelled before it ran takes
its item back (counted dropped).

The buffer is a C ring of object references: an item is never lost or
duplicated, dropped items are released at once, and memory does not grow
with throughput. Producers and consumers waiting on one queue - threads and
asyncio tasks alike - are served first come, first served, by direct hand-off.

Fork: a queue inherited by a child process (os.fork, multiprocessing's
"fork") keeps working there. An at-fork hook gives every live queue a new
lock in the child; an item handed to a parent's thread that had not taken it
yet goes back to the front, and the parent's blocked puts and gets leave the
queue (a blocked put's item was never stored: it counts as dropped). asyncio
waiters stay queued: they are served if the child runs their loop.
"""
from __future__ import annotations

import os
import types
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Generic, Iterator, Optional, TypeVar, Union

from . import _core
from ._core import _AsyncWaiter
from ._decorate import same_body
from ._wait import await_waiter, check_timeout, new_waiter, repair_after_fork
from .errors import QueueClosedError
from .events import Named

__all__ = ["BackpressureStrategy", "BackpressureMetrics", "BackpressureQueue", "BoundedQueue"]


class BackpressureStrategy(str, Enum):
    """What a put does when the queue is full."""

    BLOCK = "block"              #: wait up to block_timeout for room, then drop the item
    DROP_OLDEST = "drop_oldest"  #: evict the oldest item to make room
    DROP_NEWEST = "drop_newest"  #: drop the new item
    ERROR = "error"              #: raise QueueFullError


if TYPE_CHECKING:
    # The item type; unparameterised queues hold Any (PEP 696 default), so
    # `q = BoundedQueue(4)` needs no annotation.
    from typing_extensions import TypeVar as _TypeVar
    T = _TypeVar("T", default=Any)
else:
    T = TypeVar("T")


@dataclass(frozen=True)
class BackpressureMetrics:
    """Counters of a queue (a frozen snapshot: ``queue.metrics``).

    ``items_received`` counts every put on an open queue, ``items_processed``
    every item handed to a getter, ``items_dropped`` every item evicted,
    refused or given up on (BLOCK timeout, close); ``producer_blocked_count``
    every put that had to wait. received == processed + dropped + qsize() +
    producers still waiting."""

    items_received: int = 0
    items_processed: int = 0
    items_dropped: int = 0
    producer_blocked_count: int = 0


def _size_arg(max_size: Any, maxsize: Any) -> Any:
    """max_size for RingQueue when `maxsize` (queue.Queue's name) may be given."""
    if maxsize is None:
        return max_size
    if max_size is not None and max_size != 0:
        raise TypeError(f"give max_size or maxsize (its queue.Queue name), not both: "
                        f"max_size={max_size!r}, maxsize={maxsize!r}")
    return None


Strategy = Union[BackpressureStrategy, str]
Hook = Optional[Callable[[], Any]]
Q = TypeVar("Q", bound="_RingQueueMixin")


def _new(cls: "type[Q]", max_size: Any, strategy: Any, block_timeout: Any, high_watermark: Any,
         low_watermark: Any, on_high_watermark: Any, on_low_watermark: Any, maxsize: Any) -> Q:
    """A queue of `cls`, made (and checked) by the C type; followed by the at-fork hook."""
    q = _core.RingQueue.__new__(cls, _size_arg(max_size, maxsize), strategy, block_timeout, high_watermark,
                                low_watermark, on_high_watermark, on_low_watermark, maxsize=maxsize)
    _live.add(q)
    return q


# Every live queue, for the at-fork hook at the end of this module.
_live: "weakref.WeakSet[_RingQueueMixin]" = weakref.WeakSet()


class _RingQueueMixin(_core.RingQueue, Named):
    """What both queues share: metrics, strategy, async put/get, iteration."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The queue was built from these arguments by ``__new__``: a subclass
        that takes other arguments overrides ``__new__``."""

    @property
    def strategy(self) -> BackpressureStrategy:
        """The queue's BackpressureStrategy."""
        return BackpressureStrategy(self._strategy_name)

    @property
    def metrics(self) -> BackpressureMetrics:
        """A snapshot of the counters (BackpressureMetrics)."""
        s = self._stats()
        return BackpressureMetrics(s[0], s[1], s[2], s[3])

    # -- asyncio --------------------------------------------------------------

    # put and get of BackpressureQueue, put_async and get_async of BoundedQueue:
    # the bodies of _aput and _aget under those names (see the class bodies)

    async def _aput(self, item: Any) -> bool:
        r = self._put_async(item, new_waiter)
        if r.__class__ is bool:
            return r
        return await self._await_put(r)

    async def _await_put(self, w: Any) -> bool:
        # Cancelled (even after room was given): the item is not stored.
        stored: bool = await await_waiter(w, self.block_timeout)
        return stored

    async def _aget(self, timeout: Optional[float] = None) -> Any:
        if timeout is not None:
            check_timeout(timeout)
        r = self._get_async(new_waiter)
        if r.__class__ is not _AsyncWaiter:
            return r
        return await self._await_get(r, timeout)

    async def _await_get(self, w: Any, timeout: Optional[float]) -> Any:
        return await await_waiter(w, timeout)

    async def _ajoin(self) -> None:
        w = self._join_async(new_waiter)
        if isinstance(w, bool):
            return
        try:
            await w.future
        finally:
            w.finish()

    # -- iteration -------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        get = _core.RingQueue.get
        while True:
            try:
                yield get(self)
            except QueueClosedError:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                item = await self._aget()
            except QueueClosedError:
                return
            yield item

    def __repr__(self) -> str:
        parts = [f"max_size={self.max_size!r}", f"strategy={self._strategy_name!r}",
                 f"block_timeout={self.block_timeout!r}"]
        if self.high_watermark is not None:
            parts += [f"high_watermark={self.high_watermark!r}", f"low_watermark={self.low_watermark!r}"]
        return f"{type(self).__name__}({', '.join(parts)})"


class BackpressureQueue(_RingQueueMixin, Generic[T]):
    """BackpressureQueue(max_size=0, strategy=BackpressureStrategy.BLOCK, block_timeout=30.0, high_watermark=None, low_watermark=None, on_high_watermark=None, on_low_watermark=None, *, maxsize=None)

    A bounded asyncio queue with a backpressure strategy (the reference
    design): ``await put(item) -> bool`` and ``await get()``. When full, BLOCK
    waits up to ``block_timeout`` seconds (None: no limit) for room (counting
    producer_blocked_count), then drops the item and returns False;
    DROP_OLDEST evicts the oldest item and returns True; DROP_NEWEST drops the
    new item and returns False; ERROR raises QueueFullError("Queue is full").
    Dropped items count in metrics.items_dropped.

    Otherwise as asyncio.Queue: ``max_size`` (or ``maxsize``) <= 0 means
    unbounded; put_nowait()/get_nowait() raise QueueFullError/QueueEmptyError,
    which are asyncio.QueueFull/asyncio.QueueEmpty (and queue.Full/queue.Empty);
    task_done(), ``await join()``, unfinished_tasks; ``BackpressureQueue[int]``.

    Never blocks the event loop; a task cancelled while waiting takes nothing
    (an item handed to it goes back to the front), and a cancelled put has not
    stored its item, even when room was given to it just before. Thread-safe:
    put_nowait() and get_nowait() work from any thread, and a BoundedQueue-style
    sync get is available as ``for item in queue``. close(), watermarks and
    iteration as in BoundedQueue.
    """

    if not TYPE_CHECKING:
        __class_getitem__ = classmethod(types.GenericAlias)

    def __new__(cls, max_size: int = 0, strategy: Strategy = BackpressureStrategy.BLOCK,
                block_timeout: Optional[float] = 30.0, high_watermark: Optional[float] = None,
                low_watermark: Optional[float] = None, on_high_watermark: Hook = None,
                on_low_watermark: Hook = None, *, maxsize: Optional[int] = None) -> "BackpressureQueue[T]":
        return _new(cls, max_size, strategy, block_timeout, high_watermark, low_watermark,
                    on_high_watermark, on_low_watermark, maxsize)

    if TYPE_CHECKING:
        def put_nowait(self, item: T, /) -> bool: ...
        def get_nowait(self) -> T: ...
        async def put(self, item: T) -> bool: ...  # type: ignore[override]
        async def get(self, timeout: Optional[float] = None) -> T: ...  # type: ignore[override]
    else:
        put = same_body(_RingQueueMixin._aput, "put", """put(self, item)

        Put an item: True if it is queued, False if it was dropped (see the
        class docstring for each strategy). QueueFullError with ERROR,
        QueueClosedError after close().""", "BackpressureQueue")

        get = same_body(_RingQueueMixin._aget, "get", """get(self, timeout=None)

        Remove and return the oldest item, waiting for one (up to ``timeout``
        seconds if given: QueueEmptyError). QueueClosedError once a closed
        queue is drained.""", "BackpressureQueue")

    async def join(self) -> None:  # type: ignore[override]
        """join(self)

        Wait until every item put has been marked done with task_done()
        (asyncio.Queue.join)."""
        await self._ajoin()


class BoundedQueue(_RingQueueMixin, Generic[T]):
    """BoundedQueue(max_size=0, strategy=BackpressureStrategy.BLOCK, block_timeout=None, high_watermark=None, low_watermark=None, on_high_watermark=None, on_low_watermark=None, *, maxsize=None)

    A bounded thread-safe queue with a backpressure strategy (BackpressureQueue
    for threads), and a drop-in for queue.Queue: ``BoundedQueue(maxsize)``
    (<= 0: unbounded), ``put(item, block=True, timeout=None) -> bool``
    (None: block_timeout, itself None for no limit; a BLOCK put that found no
    room raises QueueFullError, a queue.Full), ``get(block=True,
    timeout=None)`` (QueueEmptyError, a queue.Empty, when none came),
    put_nowait, get_nowait, qsize, empty, full, maxsize (assignable),
    task_done(), join(), unfinished_tasks; plus len(), fill_ratio, metrics and
    ``BoundedQueue[int]``. Blocking waits release the GIL and Ctrl-C
    interrupts them (an interrupted get takes nothing).
    ``put_async``/``get_async``/``join_async`` are the asyncio forms (a BLOCK
    put_async returns False after block_timeout, as BackpressureQueue.put).

    ``close()``: later puts raise QueueClosedError; getters drain what is left,
    then raise QueueClosedError; blocked producers and consumers wake at once.
    ``for item in queue`` / ``async for item in queue`` end when a closed queue
    is drained.

    Watermarks: fractions ``0 <= low_watermark < high_watermark <= 1`` (one
    alone: the other defaults to 0.0 / 1.0). ``on_high_watermark()`` is called
    when the fill ratio reaches high_watermark, ``on_low_watermark()`` when it
    then falls to low_watermark; once per crossing, with no lock held, in the
    thread whose put/get crossed the mark.
    """

    if not TYPE_CHECKING:
        __class_getitem__ = classmethod(types.GenericAlias)

    def __new__(cls, max_size: int = 0, strategy: Strategy = BackpressureStrategy.BLOCK,
                block_timeout: Optional[float] = None, high_watermark: Optional[float] = None,
                low_watermark: Optional[float] = None, on_high_watermark: Hook = None,
                on_low_watermark: Hook = None, *, maxsize: Optional[int] = None) -> "BoundedQueue[T]":
        return _new(cls, max_size, strategy, block_timeout, high_watermark, low_watermark,
                    on_high_watermark, on_low_watermark, maxsize)

    if TYPE_CHECKING:
        def put(self, item: T, block: bool = True, timeout: Optional[float] = None) -> bool: ...
        def put_nowait(self, item: T, /) -> bool: ...
        def get(self, block: bool = True, timeout: Optional[float] = None) -> T: ...
        def get_nowait(self) -> T: ...
        def __iter__(self) -> Iterator[T]: ...
        async def put_async(self, item: T) -> bool: ...
        async def get_async(self, timeout: Optional[float] = None) -> T: ...
    else:
        put_async = same_body(_RingQueueMixin._aput, "put_async", """put_async(self, item)

        The asyncio form of put() (waits up to block_timeout without blocking
        the event loop).""", "BoundedQueue")

        get_async = same_body(_RingQueueMixin._aget, "get_async", """get_async(self, timeout=None)

        The asyncio form of get().""", "BoundedQueue")

    async def join_async(self) -> None:
        """join_async(self)

        The asyncio form of join()."""
        await self._ajoin()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: repair_after_fork(_live))
