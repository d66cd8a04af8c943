"""The reference design's BackpressureQueue, rebuilt from its description for
the benchmark: an ``asyncio.Queue`` wrapped with the four strategies and the
four counters. It is the baseline pyresilience.BackpressureQueue must beat
(and match in semantics); it is not part of the library.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pyresilience import QueueFullError


class RefStrategy(Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    ERROR = "error"


@dataclass
class RefMetrics:
    items_received: int = 0
    items_processed: int = 0
    items_dropped: int = 0
    producer_blocked_count: int = 0


class RefBackpressureQueue:
    """BackpressureQueue(max_size, strategy=BLOCK, block_timeout=30.0), asyncio.Queue-based."""

    def __init__(self, max_size: int, strategy: RefStrategy = RefStrategy.BLOCK,
                 block_timeout: float = 30.0) -> None:
        self.max_size = max_size
        self.strategy = strategy
        self.block_timeout = block_timeout
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_size)
        self.metrics = RefMetrics()

    async def put(self, item: Any) -> bool:
        self.metrics.items_received += 1
        if self._queue.full():
            if self.strategy is RefStrategy.BLOCK:
                self.metrics.producer_blocked_count += 1
                try:
                    await asyncio.wait_for(self._queue.put(item), timeout=self.block_timeout)
                    return True
                except asyncio.TimeoutError:
                    self.metrics.items_dropped += 1
                    return False
            if self.strategy is RefStrategy.DROP_OLDEST:
                try:
                    self._queue.get_nowait()
                    self.metrics.items_dropped += 1
                except asyncio.QueueEmpty:
                    pass
                self._queue.put_nowait(item)
                return True
            if self.strategy is RefStrategy.DROP_NEWEST:
                self.metrics.items_dropped += 1
                return False
            self.metrics.items_dropped += 1
            raise QueueFullError("Queue is full")
        await self._queue.put(item)
        return True

    async def get(self) -> Any:
        item = await self._queue.get()
        self.metrics.items_processed += 1
        return item

    @property
    def fill_ratio(self) -> float:
        return self._queue.qsize() / self.max_size
