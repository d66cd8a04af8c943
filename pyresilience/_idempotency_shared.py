"""SharedIdempotencyStore: idempotency records in a shared-memory region.

The records live in a bounded key/value area of a :class:`SharedMemory`
region (the C core's ``prs_shm_kv``, ``_core.SharedKV``): every worker
process that opens the same region and name (fork, spawn, or unrelated
processes: gunicorn and uvicorn workers) deduplicates through one table, at
memory speed. Each step (begin / complete / renew / release) is one call
into C under the area's crash-safe lock; a process killed in the middle of
one leaves the area rolled back. Times are CLOCK_MONOTONIC, shared by every
process of the machine.

Sizes are fixed when the area is created: ``max_keys`` records, each with
room for a key of ``max_key_bytes`` (longer keys are stored as their
SHA-256) and a stored result of ``max_value_bytes`` (a larger result is not
stored: ``complete`` frees the key and raises ValueError, and the caller
still gets its result). The region must have room for the area:
``SharedIdempotencyStore.bytes_needed(...)`` tells how much.
"""
from __future__ import annotations

import errno
import hashlib
import pickle
import time
from typing import Any, Callable, Dict, Optional, Tuple

from . import _core
from .errors import IdempotencyInProgress
from .idempotency import ACQUIRED, BUSY, DONE, OK, RAISED, BeginResult, Serializer

__all__ = ["SharedIdempotencyStore"]

_FP_MAX = 64
_TOKEN_MAX = 32
_HEAD, _RECORD = 8320, 136  # bytes of the area's head and of a record's header (shm_kv.c)


class _OtherFingerprint:
    """The fingerprint of a record made with another payload: equal to nothing."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<another payload's fingerprint>"


_OTHER = _OtherFingerprint()


def _ns(seconds: float) -> int:
    return max(1, int(seconds * 1e9))


def _clock_ns(clock: Any) -> Callable[[], int]:
    if clock is None:
        return time.monotonic_ns
    now_ns = getattr(clock, "now_ns", None)
    if callable(now_ns):
        return now_ns  # type: ignore[no-any-return]
    if callable(clock):
        return lambda: int(clock() * 1e9)
    raise TypeError(f"clock must be None, a ManualClock/MonotonicClock or a callable, "
                    f"got {clock!r}")


class SharedIdempotencyStore:
    """SharedIdempotencyStore(region, *, name='idempotency', max_keys=1024, max_key_bytes=256, max_value_bytes=4096, serializer=pickle, clock=None)

    Idempotency records shared by every process that opens ``region`` (a
    :class:`~pyresilience.SharedMemory`) and ``name``: one key runs once
    across worker processes. Bounded: ``max_keys`` records (expired ones
    are reused first, then the oldest stored results; a live in-progress
    lease is never evicted: a table full of them refuses a new key with
    :class:`~pyresilience.IdempotencyInProgress`). Every record has room for
    a result of ``max_value_bytes`` once serialized (the region needs about
    ``max_keys * (max_key_bytes + max_value_bytes + 200)`` bytes:
    :meth:`bytes_needed`); a larger result is not stored (ValueError from
    ``complete``, the key freed). Results go through ``serializer``
    (``pickle`` by default: see the README's note; ``json`` works for JSON
    data). Opening an existing area with other sizes raises ValueError naming
    both. A process killed at any instant leaves the records consistent; its
    in-progress lease is taken over after ``in_progress_ttl``. ``clock``
    (single-process tests: a ManualClock) replaces CLOCK_MONOTONIC."""

    local = False

    def __init__(self, region: Any, *, name: str = "idempotency", max_keys: int = 1024,
                 max_key_bytes: int = 256, max_value_bytes: int = 4096,
                 serializer: Serializer = pickle,
                 clock: Any = None) -> None:
        if not (callable(getattr(serializer, "dumps", None))
                and callable(getattr(serializer, "loads", None))):
            raise TypeError(f"serializer must have dumps() and loads(), got {serializer!r}")
        self._kv = _core.SharedKV(region, name, max_keys=max_keys, max_key_bytes=max_key_bytes,
                                  max_value_bytes=max_value_bytes)
        self.region = region
        self.name = name
        self.serializer = serializer
        self.clock = clock
        self._now_ns = _clock_ns(clock)
        self._key_max = self._kv.max_key_bytes

    @staticmethod
    def bytes_needed(max_keys: int = 1024, max_key_bytes: int = 256,
                     max_value_bytes: int = 4096) -> int:
        """The bytes an area of these sizes takes in a region: create the
        region with a size= above it (a region keeps about 6% of its size for
        its own header and table)."""
        def up(x: int, a: int) -> int:
            return -(-x // a) * a
        rec = up(up(_RECORD + max_key_bytes, 8) + max_value_bytes, 64)
        slots = 8
        while slots < 4 * max_keys:
            slots <<= 1
        free_off = up(_HEAD + 8 * slots, 64)
        return up(free_off + 4 * max_keys, 64) + max_keys * rec

    @property
    def max_keys(self) -> int:
        return self._kv.max_keys

    @property
    def max_value_bytes(self) -> int:
        return self._kv.max_value_bytes

    def __repr__(self) -> str:
        return (f"SharedIdempotencyStore({self.region!r}, name={self.name!r}, "
                f"max_keys={self._kv.max_keys}, max_value_bytes={self._kv.max_value_bytes})")

    def __len__(self) -> int:
        return len(self._kv)

    # -- encoding ------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        b = key.encode("utf-8", "surrogatepass")
        if len(b) > self._kv.max_key_bytes or not b:
            # its SHA-256 after a 0xff byte (never in UTF-8: no clash with a real key)
            b = (b"\xff" + hashlib.sha256(b).digest())[:self._kv.max_key_bytes]
        return b

    @staticmethod
    def _fp(fingerprint: Any) -> bytes:
        if type(fingerprint) is bytes and len(fingerprint) <= _FP_MAX:
            return fingerprint
        b = str(fingerprint).encode("utf-8", "surrogatepass")
        return b if len(b) <= _FP_MAX else b"#" + hashlib.sha256(b).digest()

    @staticmethod
    def fingerprint_args(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bytes:
        """The default fingerprint of a call's arguments for this store: their
        repr (stable across processes for plain data) when it fits the record's
        64 bytes, else its SHA-256 (no hashing for small payloads)."""
        b = repr((args, sorted(kwargs.items())) if kwargs else args).encode(
            "utf-8", "backslashreplace")
        return b if len(b) < _FP_MAX else b"#" + hashlib.sha256(b).digest()

    @staticmethod
    def _token(token: str) -> bytes:
        b = token.encode()
        return b if len(b) <= _TOKEN_MAX else hashlib.sha256(b).digest()

    def _encode(self, outcome: Any) -> bytes:
        kind, value = outcome
        try:
            data = self.serializer.dumps([kind, value])
        except Exception:
            if kind != RAISED:
                raise
            data = self.serializer.dumps([RAISED, f"{type(value).__name__}: {value}"])
        return data.encode() if isinstance(data, str) else bytes(data)

    def _decode(self, raw: bytes) -> Tuple[int, Any]:
        kind, value = self.serializer.loads(raw)
        return (RAISED if kind == RAISED else OK, value)

    # -- the store interface -------------------------------------------------

    def begin(self, key: str, fingerprint: Any, token: str, lease: float) -> BeginResult:
        k = key.encode("utf-8", "surrogatepass")
        if len(k) > self._key_max or not k:
            k = self._key(key)
        fp = fingerprint if type(fingerprint) is bytes and len(fingerprint) <= _FP_MAX \
            else self._fp(fingerprint)
        t = token.encode()
        try:
            state, match, raw = self._kv.begin(k, fp, t if len(t) <= _TOKEN_MAX else
                                               self._token(token), int(lease * 1e9) or 1,
                                               self._now_ns())
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise IdempotencyInProgress(
                f"shared idempotency store full of in-progress keys "
                f"(max_keys={self._kv.max_keys})", key) from None
        if state == DONE:
            kind, value = self.serializer.loads(raw)
            return (DONE, fingerprint if match else _OTHER, (RAISED if kind == RAISED else OK,
                                                            value))
        return (state, fingerprint if match or state == ACQUIRED else _OTHER, None)

    def complete(self, key: str, token: str, outcome: Any, ttl: float) -> bool:
        k, t = self._key(key), self._token(token)
        try:
            data = self._encode(outcome)
            return self._kv.complete(k, t, data, max(0, int(ttl * 1e9)), self._now_ns())
        except Exception:
            self._kv.release(k, t)  # not storable: free the key rather than leave it waiting
            if outcome[0] == RAISED:
                return False  # the caller re-raises its own exception, not ours
            raise

    def renew(self, key: str, token: str, lease: float) -> bool:
        return self._kv.renew(self._key(key), self._token(token), _ns(lease), self._now_ns())

    def release(self, key: str, token: str) -> bool:
        return self._kv.release(self._key(key), self._token(token))

    def wait(self, key: str, timeout: float) -> None:
        """One slice (at most 50 ms) of waiting for ``key``'s record to
        change: woken at once (a futex in the region) when a record completes
        or is released in any process."""
        kv = self._kv
        seq = kv.seq()
        rec = kv.peek(self._key(key), b"")
        if rec is None or rec[0] != BUSY or rec[3] <= self._now_ns():
            return  # changed already
        kv.wait(seq, max(0, min(int(timeout * 1e9), 50_000_000)))

    # -- more ----------------------------------------------------------------

    def peek(self, key: str) -> Optional[BeginResult]:
        """The live record of ``key`` as ``(DONE|BUSY, None, outcome)``, or None."""
        rec = self._kv.peek(self._key(key), b"")
        if rec is None or rec[3] <= self._now_ns():
            return None
        state, _, raw, _ = rec
        return (state, None, self._decode(raw) if state == DONE and raw is not None else None)

    def delete(self, key: str) -> bool:
        """Forget ``key``'s record, whoever owns it (True when there was one)."""
        return self._kv.delete(self._key(key))

    def clear(self) -> None:
        """Forget every record."""
        self._kv.clear()

    def check(self) -> bool:
        """True when the area's invariants hold (tests, diagnostics)."""
        return self._kv.check()
