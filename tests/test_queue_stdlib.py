"""Oracles nobody here wrote: CPython's own queue tests, pointed at our queues.

The interpreter's ``test`` package ships Lib/test/test_queue.py and
Lib/test/test_asyncio/test_queues.py. Their tests that take the queue class
as a parameter (``BaseQueueTestMixin``, ``BaseSimpleQueueTest``,
``_QueueJoinTestMixin``) run here against BoundedQueue / BackpressureQueue;
the asyncio tests written against ``asyncio.Queue`` run with that one name
pointed at BackpressureQueue. Nothing is copied: the stdlib's modules are
loaded at test time, and the tests skip (with the reason) when the
interpreter was installed without its test package.
"""
from __future__ import annotations

import asyncio
import importlib
import queue
import types
import unittest

import pytest

from pyresilience import BackpressureQueue, BoundedQueue


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # a Python installed without its test suite
        return exc


_tq = _load("test.test_queue")
_taq = _load("test.test_asyncio.test_queues")
_no_tq = isinstance(_tq, ImportError)
_no_taq = isinstance(_taq, ImportError)
needs_tq = pytest.mark.skipif(_no_tq, reason=f"the interpreter has no test.test_queue: {_tq}")
needs_taq = pytest.mark.skipif(_no_taq, reason=f"the interpreter has no test.test_asyncio.test_queues: {_taq}")


# ---- queue.Queue's tests (Lib/test/test_queue.py) ---------------------------------

class Queue(BoundedQueue):
    """BoundedQueue under the name CPython's basic_queue_test looks up to pick
    the expected order (FIFO for "Queue")."""


def _mixin(name: str):
    return object if _no_tq else getattr(_tq, name)


@needs_tq
class TestBoundedQueueAsQueueQueue(_mixin("BaseQueueTestMixin"), unittest.TestCase):
    """BaseQueueTestMixin: put/get with block and timeout, put_nowait/get_nowait,
    queue.Full/queue.Empty, task_done/join from threads, a maxsize that shrinks."""

    queue = queue  # the stdlib module: its Full/Empty are what must be raised

    def setUp(self):
        if self._testMethodName.startswith("test_shutdown"):  # CPython >= 3.13's mixin
            self.skipTest("queue.Queue.shutdown() (3.13) has no BoundedQueue counterpart: close() "
                          "is its own API")
        self.type2test = Queue
        super().setUp()


@needs_tq
class TestBoundedQueueAsSimpleQueue(_mixin("BaseSimpleQueueTest"), unittest.TestCase):
    """BaseSimpleQueueTest on an unbounded BoundedQueue(): order, 50 threads
    putting and getting (blocking, non-blocking, with timeouts), references
    released as soon as an item leaves."""

    queue = queue

    def setUp(self):
        self.type2test = BoundedQueue
        super().setUp()


# ---- asyncio.Queue's tests (Lib/test/test_asyncio/test_queues.py) ---------------

class AsyncQueue(BackpressureQueue):
    """BackpressureQueue constructed as asyncio.Queue is: ``(maxsize=0)``, a put
    that waits for room without a limit."""

    def __new__(cls, maxsize: int = 0) -> "AsyncQueue":
        # built from its arguments when made (__new__), as int or tuple are
        return super().__new__(cls, maxsize=maxsize, block_timeout=None)


def _asyncio_with_our_queue() -> types.ModuleType:
    """A stand-in for the asyncio module, as their tests see it: every name is
    asyncio's, except Queue (BackpressureQueue)."""
    proxy = types.ModuleType("asyncio")
    proxy.__dict__.update(vars(asyncio))
    proxy.Queue = AsyncQueue
    return proxy


# Tests that read asyncio.Queue's private state (_getters, _putters, _format,
# _unfinished_tasks), its repr, or that use a fractional maxsize (our count
# rule refuses 1.3, README "Counts").
_NOT_APPLICABLE = {
    "test_repr": "the repr is ClassName(param=value, ...) (README)",
    "test_str": "the repr is ClassName(param=value, ...) (README)",
    "test_format": "asyncio.Queue's private _format()",
    "test_float_maxsize": "a count is an int or an integral float: maxsize=1.3 is refused",
    "test_get_with_putters": "appends to asyncio.Queue's private _putters",
    "test_cancelled_getters_not_being_held_in_self_getters": "reads asyncio.Queue's private _getters",
    "test_cancelled_puts_not_being_held_in_self_putters": "reads asyncio.Queue's private _putters",
}


def _asyncio_case(name: str):
    base = unittest.TestCase if _no_taq else getattr(_taq, name)

    class Case(base):  # type: ignore[misc, valid-type]
        def setUp(self):
            reason = _NOT_APPLICABLE.get(self._testMethodName)
            if reason:
                self.skipTest(reason)
            self._saved = _taq.asyncio
            _taq.asyncio = _asyncio_with_our_queue()
            super().setUp()

        def tearDown(self):
            super().tearDown()
            _taq.asyncio = self._saved

    Case.__name__ = Case.__qualname__ = f"TestBackpressureQueueAs{name}"
    return needs_taq(Case)


TestBackpressureQueueAsQueueBasicTests = _asyncio_case("QueueBasicTests")
TestBackpressureQueueAsQueueGetTests = _asyncio_case("QueueGetTests")
TestBackpressureQueueAsQueuePutTests = _asyncio_case("QueuePutTests")


@needs_taq
class TestBackpressureQueueJoin(object if _no_taq else _taq._QueueJoinTestMixin,  # type: ignore[misc]
                                unittest.IsolatedAsyncioTestCase):
    """_QueueJoinTestMixin: task_done underflow, two workers and join(), join on
    an empty queue."""

    q_class = AsyncQueue

    def setUp(self):
        reason = _NOT_APPLICABLE.get(self._testMethodName)
        if reason:
            self.skipTest(reason)
        super().setUp()

