"""Dead letters: calls that still failed after their retries.

``Retry(..., dead_letter=sink)``: when a call gives up (attempts exhausted,
the deadline, the retry budget, a Retry-After too long), a :class:`DeadLetter`
describing it goes to ``sink`` before the exception propagates: a
BoundedQueue/BackpressureQueue (``put_nowait``), any callable, or a
:class:`RedisDeadLetters` stream. Successful calls never touch the sink. A
sink that fails does not hide the call's exception: the failure is added to
it as a note (PEP 678).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import BackendError

__all__ = ["DeadLetter", "RedisDeadLetters"]


@dataclass(frozen=True)
class DeadLetter:
    """DeadLetter(function, args, kwargs, exception, result, attempts, first_attempt_at, gave_up_at, reason)

    One call that gave up. ``function`` is its qualified name
    (``module.qualname``); ``exception`` the last exception (None when
    ``retry_on_result`` rejected the last ``result``); ``reason`` why it gave
    up ("attempts", "deadline", "budget", "retry_after", "retry_after_limit").
    ``first_attempt_at``/``gave_up_at`` are seconds of the retry's clock
    (Unix time with the default clock)."""

    function: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    exception: Optional[BaseException]
    result: Any
    attempts: int
    first_attempt_at: float
    gave_up_at: float
    reason: str
    id: Optional[str] = field(default=None, compare=False)  # the stream entry id (Redis)

    def to_json(self) -> str:
        """The record as JSON (arguments as JSON gives them; the exception as its type and text)."""
        exc = self.exception
        return json.dumps({
            "function": self.function, "args": list(self.args), "kwargs": self.kwargs,
            "exception": None if exc is None else {"type": type(exc).__qualname__, "message": str(exc)},
            "result": self.result, "attempts": self.attempts,
            "first_attempt_at": self.first_attempt_at, "gave_up_at": self.gave_up_at,
            "reason": self.reason}, default=repr)

    @classmethod
    def from_json(cls, data: Any, id: Optional[str] = None) -> "DeadLetter":
        d = json.loads(data)
        exc = d.get("exception")
        return cls(d["function"], tuple(d["args"]), dict(d["kwargs"]),
                   None if exc is None else _StoredException(exc["type"], exc["message"]),
                   d.get("result"), int(d["attempts"]), float(d["first_attempt_at"]),
                   float(d["gave_up_at"]), d["reason"], id)


class _StoredException(Exception):
    """An exception read back from a stored dead letter: its type's name and its text."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"{self.type_name}({str(self)!r})"


def _qualname(func: Any) -> str:
    mod = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{mod}.{name}" if mod else str(name)


def check_sink(sink: Any) -> Any:
    if sink is None or callable(sink) or callable(getattr(sink, "put_nowait", None)):
        return sink
    raise TypeError(f"dead_letter must be a queue (put_nowait), a callable or None, got {sink!r}")


def make(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], exc: Optional[BaseException],
         result: Any, attempts: int, start_ns: int, now_ns: int, reason: str,
         wall: bool) -> DeadLetter:
    elapsed = (now_ns - start_ns) / 1e9
    end = time.time() if wall else now_ns / 1e9
    return DeadLetter(_qualname(func), tuple(args), dict(kwargs), exc, result, attempts,
                      end - elapsed, end, reason)


def deliver(sink: Any, letter: DeadLetter, exc: Optional[BaseException]) -> None:
    """Hand ``letter`` to ``sink``; a failing sink becomes a note on ``exc``."""
    try:
        put = getattr(sink, "put_nowait", None)
        if put is not None:
            put(letter)
        else:
            sink(letter)
    except Exception as e:
        if exc is not None and hasattr(exc, "add_note"):
            exc.add_note(f"pyresilience: the dead letter was lost: {type(e).__name__}: {e}")


async def deliver_async(sink: Any, letter: DeadLetter, exc: Optional[BaseException]) -> None:
    add = getattr(sink, "add_async", None)
    if add is None:
        deliver(sink, letter, exc)
        return
    try:
        await add(letter)
    except Exception as e:
        if exc is not None and hasattr(exc, "add_note"):
            exc.add_note(f"pyresilience: the dead letter was lost: {type(e).__name__}: {e}")


class RedisDeadLetters:
    """RedisDeadLetters(backend, stream, maxlen=10000)

    Dead letters in a Redis stream (a :class:`~pyresilience.RedisBackend`):
    each one an entry ``XADD stream MAXLEN ~ maxlen * data <json>`` (the
    arguments as JSON; what JSON cannot hold, as its repr). Use it as a
    ``dead_letter`` sink; ``letters()`` reads them back, ``replay(func)`` runs
    each through ``func`` again and removes the ones that succeed."""

    def __init__(self, backend: Any, stream: str, maxlen: int = 10000) -> None:
        if not callable(getattr(backend, "_command", None)):
            raise TypeError(f"backend must be a RedisBackend, got {backend!r}")
        if not isinstance(stream, str) or not stream:
            raise TypeError(f"stream must be a non-empty str, got {stream!r}")
        if isinstance(maxlen, bool) or not isinstance(maxlen, (int, float)) \
                or maxlen != int(maxlen) or maxlen < 1:
            raise ValueError(f"maxlen must be an integer >= 1, got {maxlen!r}")
        self.backend = backend
        self.stream = stream
        self.maxlen = int(maxlen)

    def __repr__(self) -> str:
        return f"RedisDeadLetters({self.backend!r}, {self.stream!r}, maxlen={self.maxlen})"

    def _argv(self, letter: DeadLetter) -> List[Any]:
        return ["XADD", self.stream, "MAXLEN", "~", self.maxlen, "*", "data", letter.to_json()]

    def __call__(self, letter: DeadLetter) -> None:
        self.add(letter)

    def add(self, letter: DeadLetter) -> str:
        """Append ``letter``; returns its entry id."""
        r = self.backend._command(*self._argv(letter))
        return r.decode() if isinstance(r, bytes) else str(r)

    async def add_async(self, letter: DeadLetter) -> str:
        from . import _redis_async
        argv = [a if isinstance(a, bytes) else str(a).encode() for a in self._argv(letter)]
        try:
            r = await _redis_async.command(self.backend, argv)
        except _redis_async._TransportFailure as e:
            raise BackendError(str(e)) from None
        if isinstance(r, Exception):
            raise BackendError(f"redis: {r}")
        return r.decode() if isinstance(r, bytes) else str(r)

    def __len__(self) -> int:
        return int(self.backend._command("XLEN", self.stream))

    def letters(self, count: int = 1000) -> List[DeadLetter]:
        """The oldest ``count`` dead letters (their ``id`` set)."""
        entries = self.backend._command("XRANGE", self.stream, "-", "+", "COUNT", int(count)) or []
        out = []
        for eid, fields in entries:
            data = dict(zip(fields[::2], fields[1::2]))
            out.append(DeadLetter.from_json(data[b"data"], eid.decode()))
        return out

    def remove(self, letter: DeadLetter) -> bool:
        """Delete ``letter``'s entry."""
        if letter.id is None:
            raise ValueError(f"letter has no stream id: {letter!r}")
        return bool(self.backend._command("XDEL", self.stream, letter.id))

    def replay(self, func: Callable[..., Any], *, policy: Any = None,
               count: int = 1000) -> Tuple[int, int]:
        """Run each stored letter's ``func(*args, **kwargs)`` (through ``policy``
        - a Policy or Retry with ``call`` - when given); the ones that succeed
        are removed, the others stay. Returns ``(succeeded, failed)``."""
        ok = failed = 0
        for letter in self.letters(count):
            try:
                if policy is not None:
                    policy.call(func, *letter.args, **letter.kwargs)
                else:
                    func(*letter.args, **letter.kwargs)
            except Exception:
                failed += 1
                continue
            self.remove(letter)
            ok += 1
        return ok, failed
