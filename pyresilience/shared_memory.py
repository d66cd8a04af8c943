"""Shared memory: one limit across worker processes (issue 14).

:class:`SharedMemory` is the C type of ``pyresilience._core`` (a named region
mapped by every process that opens it); limiters are placed in it with
``shared=region, name="..."`` on TokenBucket, GCRA, LeakyBucket, FixedWindow,
SlidingWindowLog, SlidingWindowCounter and KeyedLimiter, and CircuitBreaker and
Bulkhead (their state, windows, half-open trial slots and permits); a
LimiterGroup of shared limiters (of one region) takes from all or none across
processes, and ``reconfigure()`` of a shared limiter is seen by every process.
"""
from __future__ import annotations

from . import _core

__all__ = ["SharedMemory"]


class SharedMemory(_core.SharedMemory):
    __doc__ = _core.SharedMemory.__doc__
    __slots__ = ()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"size={self.size}, entries={self.entries}"
        return f"SharedMemory({self.name!r}, path={self.path!r}, {state})"
