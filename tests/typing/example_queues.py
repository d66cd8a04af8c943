"""Typed use of the queues (mypy --strict runs on this file; test_queues.py
also runs it): generic item types, the queue.Queue and asyncio.Queue forms."""
from __future__ import annotations

import asyncio
import queue

import pyresilience as pr


async def amain() -> None:
    q: pr.BackpressureQueue[int] = pr.BackpressureQueue(maxsize=4)
    ok: bool = await q.put(1)
    n: int = await q.get()
    q.task_done()
    await q.join()
    q.put_nowait(2)
    m: int = q.get_nowait()
    q.task_done()
    try:
        q.get_nowait()
    except asyncio.QueueEmpty:
        pass
    b: pr.BoundedQueue[str] = pr.BoundedQueue(2)
    await b.put_async("a")
    s: str = await b.get_async()
    b.task_done()
    await b.join_async()
    print(ok, n, m, s)


def main() -> None:
    q = pr.BoundedQueue[int](maxsize=2)
    q.put(1)
    q.put(2, block=True, timeout=0.5)
    try:
        q.put(3, False)
    except queue.Full:
        pass
    first: int = q.get()
    second: int = q.get(True, 1.0)
    for _ in range(2):
        q.task_done()
    q.join()
    left: int = q.unfinished_tasks + q.maxsize + q.qsize()
    untyped = pr.BoundedQueue(0)  # unbounded; items are Any
    untyped.put("anything")
    print(first, second, left, untyped.get(), repr(q))
    asyncio.run(amain())


if __name__ == "example":
    main()
