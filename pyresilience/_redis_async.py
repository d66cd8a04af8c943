"""The asyncio transport of the Redis types: one connection per backend per
event loop, speaking RESP, requests pipelined with a FIFO of pending replies.

What is sent and what a reply means is the C core's (csrc/redis ops): an op
built by ``limiter._op(...)`` carries exactly the commands the blocking call
sends (same scripts, keys, arguments), and ``backend._op_finish`` turns the
replies into the same Decisions, or applies the same failure policy
(``on_backend_error``) when the transport fails. This module only moves bytes:

- Never blocks the loop: non-blocking sockets, the loop's own callbacks; the
  work per reply is parsing it.
- Deadlines: a call gets the backend's ``timeout`` in all (waiting for the
  connection to open, bounded by ``connect_timeout``, then for its replies).
  One watchdog timer per connection fails every pending call when the oldest
  one is overdue, and drops the connection (a server that stalls mid-stream
  cannot leave the FIFO out of step); the next call opens a fresh one.
- The backend's circuit (repeated failures -> fail fast) is shared with the
  blocking calls.
- Cancellation: a cancelled call's replies are still read in order (the FIFO
  entry stays; its op is finished when they arrive, so a lease still records
  what Redis granted), and the connection stays usable.
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

__all__ = ["RespError", "call", "close_all"]


class RespError(Exception):
    """An error reply (``-ERR ...``) from the server."""


_Error = Tuple[str, str]


class _Parser:
    """Incremental RESP2 parser: feed bytes, get whole replies (bytes, int,
    None, str for a status, list, RespError)."""

    __slots__ = ("buf", "pos")

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0

    def feed(self, data: bytes) -> List[Any]:
        buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.buf, self.pos = buf, 0
        out: List[Any] = []
        while True:
            r = self._one(self.pos)
            if r is None:
                return out
            value, self.pos = r
            out.append(value)

    def _one(self, pos: int) -> Optional[Tuple[Any, int]]:
        buf = self.buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        t = buf[pos:pos + 1]
        if t == b"$":
            n = int(buf[pos + 1:end])
            if n < 0:
                return None, end + 2
            stop = end + 2 + n
            if len(buf) < stop + 2:
                return None
            return buf[end + 2:stop], stop + 2
        if t == b":":
            return int(buf[pos + 1:end]), end + 2
        if t == b"+":
            return buf[pos + 1:end].decode("utf-8", "replace"), end + 2
        if t == b"-":
            return RespError(buf[pos + 1:end].decode("utf-8", "replace")), end + 2
        if t == b"*":
            n = int(buf[pos + 1:end])
            if n < 0:
                return None, end + 2
            items: List[Any] = []
            at = end + 2
            for _ in range(n):
                r = self._one(at)
                if r is None:
                    return None
                items.append(r[0])
                at = r[1]
            return items, at
        raise ValueError(f"redis: unexpected RESP type byte {t!r}")


class _Pending:
    __slots__ = ("fut", "want", "replies", "deadline", "op", "backend")

    def __init__(self, fut: "asyncio.Future[Any]", want: int, deadline: float, op: Any, backend: Any) -> None:
        self.fut, self.want, self.deadline = fut, want, deadline
        self.replies: List[Any] = []
        self.op, self.backend = op, backend


class _Connection(asyncio.Protocol):
    """One connection's transport, parser, FIFO of pending calls and watchdog."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Optional[asyncio.Transport] = None
        self.parser = _Parser()
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
        try:
            replies = self.parser.feed(data)
        except (ValueError, IndexError) as e:
            self.fail(("EPROTO", f"redis: {e}"))
            return
        fifo = self.fifo
        for r in replies:
            if not fifo:
                self.fail(("EPROTO", "redis: a reply nobody asked for"))
                return
            p = fifo[0]
            p.replies.append(r)
            if len(p.replies) == p.want:
                fifo.popleft()
                fut = p.fut
                if not fut.done():
                    fut.set_result(p.replies)
                elif p.op is not None:  # cancelled: still finish its op (a lease records its grant)
                    try:
                        p.backend._op_finish(p.op, p.replies)
                    except Exception:
                        pass

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

    def send(self, data: bytes, want: int, deadline: float, op: Any, backend: Any) -> "asyncio.Future[Any]":
        fut = self.loop.create_future()
        self.fifo.append(_Pending(fut, want, deadline, op, backend))
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

# backend -> {loop: (pid, connection or the task opening it)}
_registry: "weakref.WeakKeyDictionary[Any, Dict[asyncio.AbstractEventLoop, Any]]" = weakref.WeakKeyDictionary()


async def _open(backend: Any, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
    host, port, path, user, password, db = backend._endpoint()
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
    for argv in setup:
        fut = conn.send(_encode(argv), 1, loop.time() + budget, None, None)
        try:
            (reply,) = await fut
        except _TransportFailure:
            conn.fail(("ECONN", "redis: connection lost during setup"))
            raise
        if isinstance(reply, RespError):
            conn.fail(("EBACKEND", f"redis: {argv[0].decode()} failed: {reply}"))
            raise _TransportFailure(("EBACKEND", f"redis: {argv[0].decode()} failed: {reply}"))
    # Redis's clock, as a pooled connection learns it: the ops send Redis's
    # time (the scripts never call TIME), estimated from this offset.
    sent = time.time_ns() // 1000
    fut = conn.send(b"*1\r\n$4\r\nTIME\r\n", 1, loop.time() + budget, None, None)
    try:
        (reply,) = await fut
    except _TransportFailure:
        conn.fail(("ECONN", "redis: connection lost during setup"))
        raise
    backend._clock(sent, time.time_ns() // 1000, reply)
    return conn


def _encode(argv: List[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(argv)]
    for a in argv:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


async def _connection(backend: Any, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
    per_loop = _registry.get(backend)
    if per_loop is None:
        with _registry_lock:  # loops of several threads may share a backend
            per_loop = _registry.setdefault(backend, {})
    entry = per_loop.get(loop)
    pid = os.getpid()
    if entry is not None and entry[0] == pid:
        got = entry[1]
        if isinstance(got, _Connection):
            if got.dead is None:
                return got
        else:  # another call is opening it: share that
            return await asyncio.shield(got)
    _purge(per_loop)
    task = loop.create_task(_open(backend, loop, deadline))
    per_loop[loop] = (pid, task)
    try:
        conn = await asyncio.shield(task)
    except BaseException:
        if per_loop.get(loop, (0, None))[1] is task:
            del per_loop[loop]
        if not task.done():
            task.add_done_callback(_swallow)
        raise
    per_loop[loop] = (pid, conn)
    return conn


def _purge(per_loop: Dict[asyncio.AbstractEventLoop, Any]) -> None:
    """Closes the sockets of connections whose loop was closed (asyncio.run
    ends its loop without telling us), and forgets them."""
    for old in [lp for lp in per_loop if lp.is_closed()]:
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


async def call(backend: Any, built: Any) -> Any:
    """Runs a built op (an (op, request, replies) tuple from _op/_op_many, or
    a result already decided locally) and returns what the blocking call
    returns."""
    if not isinstance(built, tuple):
        return built
    op, request, want = built
    admit, error = backend._admit()
    if not admit:
        return backend._op_finish(op, None, error)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + backend.timeout
    try:
        entry = _registry.get(backend, _NONE).get(loop)  # the open connection, without a coroutine
        conn = entry[1] if entry is not None and entry[0] == _pid() else None
        if conn.__class__ is not _Connection or conn.dead is not None:
            conn = await _connection(backend, loop, deadline)
        replies = await conn.send(request, want, deadline, op, backend)
        retry = [i for i, r in enumerate(replies) if isinstance(r, RespError) and str(r).startswith("NOSCRIPT")]
        if retry:  # the server lost its script cache: EVAL with the bodies, pipelined
            again = await conn.send(b"".join(backend._op_eval(op, i) for i in retry), len(retry), deadline,
                                    None, None)
            for i, r in zip(retry, again):
                replies[i] = r
    except _TransportFailure as e:
        backend._outcome(admit, e.error)
        return backend._op_finish(op, None, e.error)
    except BaseException:
        backend._outcome(admit, None)
        raise
    backend._outcome(admit, None)
    return backend._op_finish(op, replies)


def close_all(backend: Any) -> None:
    """Drops this backend's connections on every loop (from any thread)."""
    per_loop = _registry.pop(backend, None)
    for loop, (pid, got) in (per_loop or {}).items():
        if isinstance(got, _Connection) and pid == os.getpid():
            err = ("EBACKENDCLOSED", "redis: backend is closed")
            try:
                loop.call_soon_threadsafe(got.fail, err)
            except RuntimeError:  # that loop is closed
                pass


async def ping(backend: Any) -> bool:
    admit, error = backend._admit()
    if not admit:
        raise _TransportFailure(error)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + backend.timeout
    try:
        conn = await _connection(backend, loop, deadline)
        (reply,) = await conn.send(b"*1\r\n$4\r\nPING\r\n", 1, deadline, None, None)
    except _TransportFailure as e:
        backend._outcome(admit, e.error)
        raise
    backend._outcome(admit, None)
    if isinstance(reply, RespError):
        raise _TransportFailure(("EBACKEND", f"redis: {reply}"))
    return True


async def command(backend: Any, argv: List[bytes]) -> Any:
    """One raw command on this loop's connection: its reply (an error reply
    as a RespError), or _TransportFailure."""
    admit, error = backend._admit()
    if not admit:
        raise _TransportFailure(error)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + backend.timeout
    try:
        conn = await _connection(backend, loop, deadline)
        (reply,) = await conn.send(_encode(argv), 1, deadline, None, None)
    except _TransportFailure as e:
        backend._outcome(admit, e.error)
        raise
    backend._outcome(admit, None)
    return reply
