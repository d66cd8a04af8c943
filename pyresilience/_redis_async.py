"""The asyncio transport of the Redis types: one connection per backend, node
and event loop, requests pipelined with a FIFO of pending replies.

What is sent, where, and what a reply means is the C core's (csrc/redis
ops): an op built by ``limiter._op(...)`` carries exactly the commands the
blocking call sends (same scripts, keys, arguments); ``backend._op_step``
says which bytes go to which node (one server: node 0; a Redis Cluster: the
primary of each command's slot, MOVED / ASK followed, NOSCRIPT answered with
EVAL on that node); the replies are parsed by the C reader (hiredis's, as
the pool's) and handed straight to the op; ``backend._op_finish`` turns them
into the same Decisions, or applies the same failure policy
(``on_backend_error``) when the transport fails. This module only moves bytes:

- Never blocks the loop: non-blocking sockets, the loop's own callbacks.
- Deadlines: a call gets the backend's ``timeout`` in all (waiting for the
  connections to open, bounded by ``connect_timeout``, then for its replies,
  every step). One watchdog timer per connection fails every pending call
  when the oldest one is overdue, and drops the connection (a server that
  stalls mid-stream cannot leave the FIFO out of step); the next call opens
  a fresh one.
- The backend's circuit (repeated failures -> fail fast) is shared with the
  blocking calls.
- Cancellation: a cancelled call's replies are still read in order (the FIFO
  entry stays and hands them to its op, which is then finished, so a lease
  still records what Redis granted), and the connection stays usable.
- Fork: a connection belongs to the process (and loop) that opened it.
"""
from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple

from . import _core
from .errors import BackendError

__all__ = ["RespError", "call", "close_all"]


class RespError(Exception):
    """An error reply (``-ERR ...``) from the server."""


_Error = Tuple[str, str]
_NO_REPLY = object()


class _Pending:
    __slots__ = ("fut", "want", "got", "replies", "deadline", "op", "send", "backend")

    def __init__(self, fut: "asyncio.Future[Any]", want: int, deadline: float, op: Any, send: int,
                 backend: Any) -> None:
        self.fut, self.want, self.deadline = fut, want, deadline
        self.got = 0
        self.replies: List[Any] = []
        self.op, self.send, self.backend = op, send, backend


class _Connection(asyncio.Protocol):
    """One connection's transport, parser, FIFO of pending calls and watchdog."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Optional[asyncio.Transport] = None
        self.reader = _core._RespReader(RespError)
        self.fifo: Deque[_Pending] = collections.deque()
        self.out: List[bytes] = []
        self.flush_scheduled = False
        self.watchdog: Optional[asyncio.TimerHandle] = None
        self.dead: Optional[_Error] = None
        self.lost = loop.create_future()

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, fifo = self.reader, self.fifo
        try:
            reader.feed(data)
            while fifo:
                p = fifo[0]
                if p.op is not None:  # the reply goes straight to its op (C)
                    got = reader.put(p.op, p.send)
                    if not got:
                        return
                else:
                    r = reader.pop(_NO_REPLY)
                    if r is _NO_REPLY:
                        return
                    p.replies.append(r)
                p.got += 1
                if p.got == p.want:
                    fifo.popleft()
                    fut = p.fut
                    if not fut.done():
                        fut.set_result(p.replies)
                    elif p.op is not None and got == 2:  # cancelled: still finish its op (a lease records its grant)
                        try:
                            p.backend._op_finish(p.op)
                        except Exception:
                            pass
            if reader.pop(_NO_REPLY) is not _NO_REPLY:
                self.fail(("EPROTO", "redis: a reply nobody asked for"))
        except (BackendError, ValueError) as e:  # not RESP: the stream is lost
            self.fail(("EPROTO", str(e)))

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.fail(("ECONN", f"redis: connection lost: {exc or 'closed by the server'}"))

    # -- ours --
    def fail(self, error: _Error) -> None:
        """Drops the connection: every pending call fails with error."""
        if self.dead is None:
            self.dead = error
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        fifo, self.fifo = self.fifo, collections.deque()
        for p in fifo:
            if not p.fut.done():
                p.fut.set_exception(_TransportFailure(error))
        if self.transport is not None:
            self.transport.abort()
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, data: bytes, want: int, deadline: float, op: Any = None, send: int = 0,
             backend: Any = None) -> "asyncio.Future[Any]":
        fut = self.loop.create_future()
        self.fifo.append(_Pending(fut, want, deadline, op, send, backend))
        self.out.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(deadline, self.check_deadlines)
        return fut

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.dead is None and self.transport is not None:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out.clear()
            self.transport.write(data)

    def check_deadlines(self) -> None:
        self.watchdog = None
        if not self.fifo:
            return
        head = self.fifo[0].deadline
        if self.loop.time() >= head:
            self.fail(("ETIMEDOUT", "redis: timed out waiting for a reply"))
        else:
            self.watchdog = self.loop.call_at(head, self.check_deadlines)


class _TransportFailure(Exception):
    def __init__(self, error: _Error) -> None:
        super().__init__(error[1])
        self.error = error


_NONE: Dict[Any, Any] = {}
_registry_lock = threading.Lock()
_pid = os.getpid

# backend -> {(loop, node): (pid, connection or the task opening it)}
_registry: "weakref.WeakKeyDictionary[Any, Dict[Tuple[asyncio.AbstractEventLoop, int], Any]]" = \
    weakref.WeakKeyDictionary()


async def _open(backend: Any, loop: asyncio.AbstractEventLoop, deadline: float, node: int) -> _Connection:
    host, port, path, user, password, db = backend._endpoint(node)
    budget = min(backend.connect_timeout, deadline - loop.time())
    if budget <= 0:
        raise _TransportFailure(("ETIMEDOUT", "redis: timed out before connecting"))
    conn = _Connection(loop)
    where = path if path is not None else f"{host}:{port}"
    try:
        if path is not None:
            coro = loop.create_unix_connection(lambda: conn, path)
        else:
            coro = loop.create_connection(lambda: conn, host, port)
        await asyncio.wait_for(coro, budget)
    except asyncio.TimeoutError:
        raise _TransportFailure(("ETIMEDOUT", f"redis: cannot connect to {where}: timed out after "
                                              f"{budget:.3f} s")) from None
    except OSError as e:
        raise _TransportFailure(("ECONN", f"redis: cannot connect to {where}: {e.strerror or e}")) from None
    setup: List[List[bytes]] = []
    if password is not None:
        setup.append([b"AUTH"] + ([user.encode()] if user else []) + [password.encode()])
    if db:
        setup.append([b"SELECT", str(db).encode()])

    async def ask(data: bytes) -> Any:
        try:
            (reply,) = await conn.send(data, 1, loop.time() + budget)
        except _TransportFailure:
            conn.fail(("ECONN", "redis: connection lost during setup"))
            raise
        return reply

    for argv in setup:
        reply = await ask(_encode(argv))
        if isinstance(reply, RespError):
            conn.fail(("EBACKEND", f"redis: {argv[0].decode()} failed: {reply}"))
            raise _TransportFailure(("EBACKEND", f"redis: {argv[0].decode()} failed: {reply}"))
    # Redis's clock, as a pooled connection learns it: the ops send Redis's
    # time (the scripts never call TIME), estimated from this offset.
    sent = time.time_ns() // 1000
    reply = await ask(b"*1\r\n$4\r\nTIME\r\n")
    if isinstance(reply, list) and len(reply) == 2:
        backend._clock(sent, time.time_ns() // 1000, int(reply[0]) * 1_000_000 + int(reply[1]))
    return conn


def _encode(argv: List[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(argv)]
    for a in argv:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


async def _connection(backend: Any, loop: asyncio.AbstractEventLoop, deadline: float, node: int = 0) -> _Connection:
    per_loop = _registry.get(backend)
    if per_loop is None:
        with _registry_lock:  # loops of several threads may share a backend
            per_loop = _registry.setdefault(backend, {})
    where = (loop, node)
    entry = per_loop.get(where)
    pid = os.getpid()
    if entry is not None and entry[0] == pid:
        got = entry[1]
        if isinstance(got, _Connection):
            if got.dead is None:
                return got
        else:  # another call is opening it: share that
            return await asyncio.shield(got)
    _purge(per_loop)
    task = loop.create_task(_open(backend, loop, deadline, node))
    per_loop[where] = (pid, task)
    try:
        conn = await asyncio.shield(task)
    except BaseException:
        if per_loop.get(where, (0, None))[1] is task:
            del per_loop[where]
        if not task.done():
            task.add_done_callback(_swallow)
        raise
    per_loop[where] = (pid, conn)
    return conn


def _purge(per_loop: Dict[Tuple[asyncio.AbstractEventLoop, int], Any]) -> None:
    """Closes the sockets of connections whose loop was closed (asyncio.run
    ends its loop without telling us), and forgets them."""
    for old in [where for where in per_loop if where[0].is_closed()]:
        got = per_loop.pop(old)[1]
        if isinstance(got, _Connection) and got.transport is not None:
            sock = getattr(got.transport, "_sock", None)
            if sock is not None:
                sock.close()


def _swallow(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled():
        exc = task.exception()
        if exc is None:
            task.result().fail(("ECONN", "redis: opened for a cancelled call"))


def _live(backend: Any, loop: asyncio.AbstractEventLoop, node: int) -> Optional[_Connection]:
    """The open connection to node, without a coroutine (the common case)."""
    entry = _registry.get(backend, _NONE).get((loop, node))
    conn = entry[1] if entry is not None and entry[0] == _pid() else None
    return conn if conn.__class__ is _Connection and conn.dead is None else None


async def call(backend: Any, built: Any) -> Any:
    """Runs a built op (from _op/_op_many/_op_release, or a result already
    decided locally) and returns what the blocking call returns."""
    if built is None or isinstance(built, (list, _core.Decision)):
        return built
    op = built
    admit, error = backend._admit()
    if not admit:
        return backend._op_finish(op, *error)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + backend.timeout
    try:
        while True:
            try:
                sends = backend._op_step(op)
            except BackendError as e:  # Sentinel: no master known
                raise _TransportFailure(("ECONN", str(e))) from None
            if len(sends) == 1:  # one server, or one node: the common case
                node, data, want = sends[0]
                conn = _live(backend, loop, node) or await _connection(backend, loop, deadline, node)
                await conn.send(data, want, deadline, op, 0, backend)
                continue
            if not sends:
                break
            futs = []
            for i, (node, data, want) in enumerate(sends):  # one per node, all in flight at once
                conn = _live(backend, loop, node) or await _connection(backend, loop, deadline, node)
                futs.append(conn.send(data, want, deadline, op, i, backend))
            await asyncio.gather(*futs)
    except _TransportFailure as e:
        backend._outcome(admit, *e.error)
        return backend._op_finish(op, *e.error)
    except BaseException:
        backend._outcome(admit)
        raise
    backend._outcome(admit)
    return backend._op_finish(op)


def close_all(backend: Any) -> None:
    """Drops this backend's connections on every loop (from any thread)."""
    per_loop = _registry.pop(backend, None)
    for (loop, _node), (pid, got) in (per_loop or {}).items():
        if isinstance(got, _Connection) and pid == os.getpid():
            err = ("EBACKENDCLOSED", "redis: backend is closed")
            try:
                loop.call_soon_threadsafe(got.fail, err)
            except RuntimeError:  # that loop is closed
                pass


async def ping(backend: Any) -> bool:
    reply = await command(backend, [b"PING"])
    if isinstance(reply, RespError):
        raise _TransportFailure(("EBACKEND", f"redis: {reply}"))
    return True


async def command(backend: Any, argv: List[bytes]) -> Any:
    """One raw command on this loop's connection (a Cluster's first node): its
    reply (an error reply as a RespError), or _TransportFailure."""
    admit, error = backend._admit()
    if not admit:
        raise _TransportFailure(error)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + backend.timeout
    try:
        conn = await _connection(backend, loop, deadline)
        (reply,) = await conn.send(_encode(argv), 1, deadline)
    except _TransportFailure as e:
        backend._outcome(admit, *e.error)
        raise
    backend._outcome(admit)
    return reply
