"""Idempotency keys: run a call once per key, replay its stored result.

``Idempotency(store)`` runs the first call with a key and stores its result
for ``ttl`` seconds; later calls with the key get the stored result without
running. While the first call runs, its record is an *in-progress lease* held
under an owner token: a live owner renews it (a background thread, every
``in_progress_ttl / 3`` seconds); when the owner dies or stops renewing, the
lease expires after ``in_progress_ttl`` and the next caller takes over. A late
finisher whose lease was taken over cannot overwrite the new owner's record
(every write names the owner token).

The store interface (:class:`IdempotencyStore`) is small so that other stores
(Redis, a shared-memory region) plug in: ``begin`` / ``complete`` / ``renew``
/ ``release`` / ``wait``, each one atomic step, plus ``local`` (whether results
stay in this process, which picks the default fingerprint).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import itertools
import logging
import os
import threading
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Protocol, Tuple, TypeVar, cast

from .errors import IdempotencyInProgress, IdempotencyKeyMismatch

__all__ = [
    "Idempotency",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "Serializer",
    "ACQUIRED",
    "DONE",
    "BUSY",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: begin() outcomes
ACQUIRED = 0  # the caller owns the key now (new, or an expired lease taken over)
DONE = 1      # a stored result: (DONE, fingerprint, outcome)
BUSY = 2      # another owner's live lease: (BUSY, fingerprint, None)

#: stored outcomes: (OK, result) or (RAISED, exception)
OK = 0
RAISED = 1

Clock = Callable[[], float]
BeginResult = Tuple[int, Any, Any]


class Serializer(Protocol):
    """What a serializer needs: ``json`` and ``pickle`` modules both fit."""

    def dumps(self, obj: Any) -> Any: ...

    def loads(self, data: Any) -> Any: ...


class IdempotencyStore(Protocol):
    """The store interface. Every method is one atomic step on one key.

    ``begin(key, fingerprint, token, lease)``: no record or an expired one ->
    an in-progress record owned by ``token`` for ``lease`` seconds, returns
    ``(ACQUIRED, fingerprint, None)``; a stored result -> ``(DONE,
    its_fingerprint, outcome)``; another owner's live lease -> ``(BUSY,
    its_fingerprint, None)``. ``complete`` stores ``outcome`` for ``ttl``
    seconds only while ``token`` still owns the record (returns whether it
    did); ``renew`` extends the lease the same way; ``release`` deletes the
    record if ``token`` owns it; ``wait(key, timeout)`` blocks until the record
    may have changed or ``timeout`` passes (it may return early)."""

    local: bool

    def begin(self, key: str, fingerprint: Any, token: str, lease: float) -> BeginResult: ...

    def complete(self, key: str, token: str, outcome: Any, ttl: float) -> bool: ...

    def renew(self, key: str, token: str, lease: float) -> bool: ...

    def release(self, key: str, token: str) -> bool: ...

    def wait(self, key: str, timeout: float) -> None: ...


def _clock_fn(clock: Any) -> Clock:
    if clock is None:
        return time.monotonic
    if callable(clock):
        return cast(Clock, clock)
    raise TypeError(f"clock must be None, a ManualClock/MonotonicClock or a callable, "
                    f"got {clock!r}")


def _positive(name: str, value: Any, allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class MemoryIdempotencyStore:
    """MemoryIdempotencyStore(max_keys=10000, *, clock=None)

    An in-process store: results kept as objects (no serialization), at most
    ``max_keys`` records (expired ones go first, then the oldest stored
    results; in-progress leases are never evicted: a store full of live leases
    refuses a new key with :class:`~pyresilience.IdempotencyInProgress`).
    Thread-safe; ``clock`` (seconds) drives the TTLs."""

    local = True

    def __init__(self, max_keys: int = 10000, *, clock: Any = None) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, (int, float)) \
                or max_keys != int(max_keys) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self.max_keys = int(max_keys)
        self._now = _clock_fn(clock)
        self.clock = clock
        # key -> [state, fingerprint, outcome, expires_at, token]
        self._records: Dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._records)

    def _evict(self, now: float) -> bool:
        recs = self._records
        dead = [k for k, r in recs.items() if r[3] <= now]
        for k in dead:
            del recs[k]
        if len(recs) < self.max_keys:
            return True
        for k, r in recs.items():
            if r[0] == DONE:
                del recs[k]
                return True
        return False

    def begin(self, key: str, fingerprint: Any, token: str, lease: float) -> BeginResult:
        now = self._now()
        with self._lock:
            rec = self._records.get(key)
            if rec is not None and rec[3] > now:
                return (rec[0], rec[1], rec[2])
            if rec is None and len(self._records) >= self.max_keys and not self._evict(now):
                raise IdempotencyInProgress(
                    f"idempotency store full of in-progress keys (max_keys={self.max_keys})", key)
            self._records[key] = [BUSY, fingerprint, None, now + lease, token]
            return (ACQUIRED, fingerprint, None)

    def peek(self, key: str) -> Optional[BeginResult]:
        """The live record of ``key`` as ``(DONE|BUSY, fingerprint, outcome)``, or None."""
        rec = self._records.get(key)
        if rec is None or rec[3] <= self._now():
            return None
        return (rec[0], rec[1], rec[2])

    def complete(self, key: str, token: str, outcome: Any, ttl: float) -> bool:
        now = self._now()
        with self._cond:
            rec = self._records.get(key)
            if rec is None or rec[4] != token or rec[0] != BUSY:
                return False
            # a new record, swapped in whole: the lock-free hit path never sees half of it
            self._records[key] = [DONE, rec[1], outcome, now + ttl, ""]
            self._cond.notify_all()
            return True

    def renew(self, key: str, token: str, lease: float) -> bool:
        now = self._now()
        with self._lock:
            rec = self._records.get(key)
            if rec is None or rec[4] != token or rec[0] != BUSY:
                return False
            rec[3] = now + lease
            return True

    def release(self, key: str, token: str) -> bool:
        with self._cond:
            rec = self._records.get(key)
            if rec is None or rec[4] != token or rec[0] != BUSY:
                return False
            del self._records[key]
            self._cond.notify_all()
            return True

    def wait(self, key: str, timeout: float) -> None:
        # one slice of at most 50 ms (signals get checked between slices)
        with self._cond:
            self._cond.wait(min(timeout, 0.05))

    def clear(self) -> None:
        """Forget every record."""
        with self._cond:
            self._records.clear()
            self._cond.notify_all()


# -- lease renewal: one daemon thread for every live owner -------------------

class _Renewer:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._cond = threading.Condition()
        self._leases: Dict[str, Tuple[Any, str, float, float]] = {}  # token -> (store, key, lease, due)
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    def add(self, store: Any, key: str, token: str, lease: float) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="pyresilience-idem-renew",
                                                daemon=True)
                self._thread.start()
            self._leases[token] = (store, key, lease, time.monotonic() + lease / 3.0)
            self._cond.notify()

    def remove(self, token: str) -> None:
        with self._cond:
            self._leases.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(t, v) for t, v in self._leases.items() if v[3] <= now]
                for t, (store, key, lease, _) in due:
                    self._leases[t] = (store, key, lease, now + lease / 3.0)
                if not due:
                    nxt = min((v[3] for v in self._leases.values()), default=now + 60.0)
                    self._cond.wait(max(0.0, nxt - now))
                    continue
            for t, (store, key, lease, _) in due:
                try:
                    alive = store.renew(key, t, lease)
                except Exception:  # a failing backend: try again next period
                    alive = True
                if not alive:
                    self.remove(t)


_renewer = _Renewer()
if hasattr(os, "register_at_fork"):
    # a forked child has none of the parent's running calls (their threads
    # stay behind) and may have been forked while the renewer held its lock
    os.register_at_fork(after_in_child=_renewer.reset)


_log = logging.getLogger("pyresilience.idempotency")


def _mismatch(key: str) -> IdempotencyKeyMismatch:
    """The error of a key reused with another payload (the caller raises it)."""
    return IdempotencyKeyMismatch(f"idempotency key {key!r} reused with another payload", key)


def _in_progress(key: str) -> IdempotencyInProgress:
    """The error of a key whose call runs elsewhere past the wait (the caller raises it)."""
    return IdempotencyInProgress(f"idempotent call {key!r} is in progress", key)


def _not_stored(key: str, exc: BaseException) -> None:
    _log.warning("idempotency: the result of %r was not stored (%s: %s); its lease runs out "
                 "after in_progress_ttl", key, type(exc).__name__, exc)


# -- owner tokens: a random per-process prefix and a counter (no system call per
# call); a forked child draws its own prefix ---------------------------------

class _Tokens:
    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_new_token = _Tokens()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_token.reseed)


def _local_fingerprint(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    try:
        if not kwargs:
            return hash(args)
        if len(kwargs) == 1:  # no sorting, no item tuples
            for name in kwargs:
                return hash((args, name, kwargs[name]))
        return hash((args, tuple(sorted(kwargs.items()))))
    except TypeError:  # unhashable arguments (lists, dicts): their repr
        return repr((args, sorted(kwargs.items())))


def _stable_fingerprint(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    data = repr((args, sorted(kwargs.items()))).encode("utf-8", "backslashreplace")
    return hashlib.sha256(data).hexdigest()


class Idempotency:
    """Idempotency(store, *, ttl=86400.0, in_progress_ttl=60.0, fingerprint=None, serializer=None, wait=None, store_exceptions=False)

    Runs a call once per idempotency key. ``call(key, fn, *args, **kwargs)``
    (``call_async`` for coroutine functions, ``with_key(key_fn)`` as a
    decorator): the first call with ``key`` runs, its result is stored for
    ``ttl`` seconds, and later calls return it without running. A call while
    the first still runs waits up to ``wait`` seconds (None: not at all) for
    its result, then raises :class:`~pyresilience.IdempotencyInProgress`. The
    same key with another payload (``fingerprint(*args, **kwargs)``; by
    default a hash of the arguments) raises
    :class:`~pyresilience.IdempotencyKeyMismatch`. An exception is not stored
    (the key is freed so the caller may retry) unless ``store_exceptions``.
    ``serializer`` (``dumps``/``loads``, e.g. ``json``) turns results into
    stored data and back; by default the store's own (none in memory)."""

    def __init__(self, store: Any, *, ttl: float = 86400.0, in_progress_ttl: float = 60.0,
                 fingerprint: Optional[Callable[..., Any]] = None,
                 serializer: Optional[Serializer] = None, wait: Optional[float] = None,
                 store_exceptions: bool = False) -> None:
        for name in ("begin", "complete", "renew", "release", "wait"):
            if not callable(getattr(store, name, None)):
                raise TypeError(f"store must be an idempotency store (no {name}()), got {store!r}")
        if fingerprint is not None and not callable(fingerprint):
            raise TypeError(f"fingerprint must be callable or None, got {fingerprint!r}")
        if serializer is not None and not (callable(getattr(serializer, "dumps", None))
                                           and callable(getattr(serializer, "loads", None))):
            raise TypeError(f"serializer must have dumps() and loads(), got {serializer!r}")
        self.store = store
        self.ttl = cast(float, _positive("ttl", ttl))
        self.in_progress_ttl = cast(float, _positive("in_progress_ttl", in_progress_ttl))
        if self.in_progress_ttl <= 0:
            raise ValueError(f"in_progress_ttl must be > 0, got {in_progress_ttl!r}")
        self.wait = _positive("wait", wait, allow_none=True)
        self.fingerprint = fingerprint
        self.serializer = serializer
        self.store_exceptions = bool(store_exceptions)
        # the in-process store's records, read lock-free on the hit path
        self._records: Optional[Dict[str, Any]] = \
            store._records if type(store) is MemoryIdempotencyStore else None
        self._now: Clock = store._now if self._records is not None else time.monotonic
        self._plain = serializer is None
        if fingerprint is not None:
            fp_args = fingerprint
            self._fp: Callable[[Tuple[Any, ...], Dict[str, Any]], Any] = \
                lambda a, k: fp_args(*a, **k)
        elif callable(getattr(store, "fingerprint_args", None)):
            self._fp = store.fingerprint_args  # the store's own (stable across processes)
        elif getattr(store, "local", False):
            self._fp = _local_fingerprint
        else:
            self._fp = _stable_fingerprint

    def __repr__(self) -> str:
        return (f"Idempotency({self.store!r}, ttl={self.ttl}, "
                f"in_progress_ttl={self.in_progress_ttl}, wait={self.wait})")

    # -- outcomes ------------------------------------------------------------

    def _pack(self, kind: int, value: Any) -> Any:
        if self.serializer is not None and kind == OK:
            value = self.serializer.dumps(value)
        return (kind, value)

    def _unpack(self, key: str, outcome: Any) -> Any:
        kind, value = outcome[0], outcome[1]
        if kind == RAISED:
            if isinstance(value, BaseException):
                raise value.with_traceback(None)
            raise RuntimeError(f"idempotent call {key!r} raised: {value}")
        if self.serializer is not None:
            return self.serializer.loads(value)
        return value

    # -- sync ----------------------------------------------------------------

    def call(self, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` once for ``key``; replay its stored result."""
        fp = self._fp(args, kwargs)
        recs = self._records
        if recs is not None:  # the in-process store: a stored hit without its lock
            rec = recs.get(key)
            if rec is not None and rec[0] == DONE and rec[1] == fp and rec[3] > self._now() \
                    and self._plain and rec[2][0] == OK:
                return cast(T, rec[2][1])
        store = self.store
        token = _new_token()
        state, rec_fp, outcome = store.begin(key, fp, token, self.in_progress_ttl)
        if state == DONE and rec_fp == fp:
            return cast(T, self._unpack(key, outcome))
        if state != ACQUIRED:
            if rec_fp != fp:
                raise _mismatch(key)
            state, outcome = self._wait_sync(key, fp, token)
            if state == DONE:
                return cast(T, self._unpack(key, outcome))
        return self._run_owned(key, token, fn, args, kwargs)

    def _wait_sync(self, key: str, fp: Any, token: str) -> Tuple[int, Any]:
        if self.wait is None or self.wait <= 0:
            raise _in_progress(key)
        deadline = time.monotonic() + self.wait
        store = self.store
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _in_progress(key)
            store.wait(key, left)
            state, rec_fp, outcome = store.begin(key, fp, token, self.in_progress_ttl)
            if state != ACQUIRED and rec_fp != fp:
                raise _mismatch(key)
            if state != BUSY:
                return state, outcome

    def _run_owned(self, key: str, token: str, fn: Callable[..., T], args: Tuple[Any, ...],
                   kwargs: Dict[str, Any]) -> T:
        store = self.store
        _renewer.add(store, key, token, self.in_progress_ttl)
        try:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if self.store_exceptions:
                    store.complete(key, token, (RAISED, exc), self.ttl)
                else:
                    store.release(key, token)
                raise
            except BaseException:
                store.release(key, token)
                raise
            try:
                store.complete(key, token, self._pack(OK, result), self.ttl)
            except Exception as e:  # the call ran: its caller gets its result all the same
                _not_stored(key, e)
            return result
        finally:
            _renewer.remove(token)

    # -- async ---------------------------------------------------------------

    async def _store_op(self, name: str, *args: Any) -> Any:
        op = getattr(self.store, name + "_async", None)
        if op is not None:
            return await op(*args)
        return getattr(self.store, name)(*args)

    async def call_async(self, key: str, fn: Callable[..., Awaitable[T]], *args: Any,
                         **kwargs: Any) -> T:
        """The async form of :meth:`call`: ``await fn(*args, **kwargs)`` once for ``key``."""
        fp = self._fp(args, kwargs)
        token = _new_token()
        state, rec_fp, outcome = await self._store_op("begin", key, fp, token,
                                                      self.in_progress_ttl)
        if state == DONE and rec_fp == fp:
            return cast(T, self._unpack(key, outcome))
        if state != ACQUIRED:
            if rec_fp != fp:
                raise _mismatch(key)
            if self.wait is None or self.wait <= 0:
                raise _in_progress(key)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.wait
            pause = 0.001
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise _in_progress(key)
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 0.05)
                state, rec_fp, outcome = await self._store_op("begin", key, fp, token,
                                                              self.in_progress_ttl)
                if state != ACQUIRED and rec_fp != fp:
                    raise _mismatch(key)
                if state == DONE:
                    return cast(T, self._unpack(key, outcome))
                if state == ACQUIRED:
                    break
        _renewer.add(self.store, key, token, self.in_progress_ttl)
        try:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if self.store_exceptions:
                    await self._store_op("complete", key, token, (RAISED, exc), self.ttl)
                else:
                    await self._store_op("release", key, token)
                raise
            except BaseException:  # cancelled: give the key back
                release = getattr(self.store, "release_async", None)
                if release is not None:
                    await asyncio.shield(release(key, token))
                else:
                    self.store.release(key, token)
                raise
            try:
                await self._store_op("complete", key, token, self._pack(OK, result), self.ttl)
            except Exception as e:  # the call ran: its caller gets its result all the same
                _not_stored(key, e)
            return result
        finally:
            _renewer.remove(token)

    # -- decorator -----------------------------------------------------------

    def with_key(self, key: Callable[..., str]) -> Callable[[F], F]:
        """A decorator: ``key(*args, **kwargs)`` names each call's idempotency key;
        coroutine functions get :meth:`call_async`."""
        if not callable(key):
            raise TypeError(f"key must be a callable returning the key, got {key!r}")

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self.call_async(key(*args, **kwargs), fn, *args, **kwargs)
                return cast(F, awrapper)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.call(key(*args, **kwargs), fn, *args, **kwargs)
            return cast(F, wrapper)
        return decorate

