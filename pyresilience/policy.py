"""Resilient calls as one policy: strategies composed in a stated order.

``Policy(*strategies)`` runs a call through its strategies, the first one
outermost, as Polly's ResiliencePipeline and Resilience4j's Decorators do. A
strategy is a :class:`Fallback`, a :class:`~pyresilience.Retry` (or a
``RetryConfig``), a :class:`~pyresilience.CircuitBreaker`, a
:class:`Timeout`, a :class:`~pyresilience.Bulkhead`, a limiter (any in-process
limiter, a ``KeyedLimiterView``, a ``LimiterGroup``, or :class:`Limit` for a
keyed or Redis limiter), or another Policy (its strategies are spliced in).

The chain is built once, when the policy is made: each strategy wraps the next
one in a closure, so a call runs no dispatch, only the strategies themselves.

Deadlines: a :class:`Timeout` puts the absolute deadline of the call in a
context variable (``pyresilience._core.DEADLINE``). Every wait of the package
inside it - limiter ``acquire``, bulkhead and queue waits, retry sleeps, Redis
``acquire`` - is capped at what is left of it and fails at once when it cannot
be served in time. :func:`deadline_remaining` reads it for user code.

Warnings: orders known to be wrong (see :func:`_check_order`) raise a
:class:`~pyresilience.PolicyWarning` when the policy is built.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import math
import threading
import time
import warnings
from functools import partial
from types import BuiltinMethodType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union, cast

from . import _core
from ._decorate import P, finish, inspect_target
from ._wait import new_waiter
from .breaker import CircuitBreaker
from .bulkhead import Bulkhead, start_pool, stop_pool
from .errors import PolicyWarning, TimeoutExceeded
from .retry import Retry, RetryConfig, _RetryView

__all__ = ["Policy", "Timeout", "Fallback", "Limit", "deadline_remaining"]

T = TypeVar("T")

_DEADLINE: "contextvars.ContextVar[int]" = _core.DEADLINE
_monotonic_ns = time.monotonic_ns  # CLOCK_MONOTONIC: the clock of the C waits

deadline_remaining: Callable[[], Optional[float]] = _core.deadline_remaining
_deadline_ns = _core._deadline_ns  # the deadline in effect (absolute CLOCK_MONOTONIC ns), or None

Sync = Callable[..., Any]  # a sync layer: called with the call's arguments, calls the next one
Async = Callable[[Callable[..., Awaitable[Any]], Tuple[Any, ...], Any], Awaitable[Any]]


_APPLY = _core.PolicyStep(_core.STEP_APPLY)  # the end of policy.call's chain: fn(*args, **kwargs)


def _direct_async(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Awaitable[Any]:
    return fn(*args, **kwargs)  # the awaitable itself: no coroutine frame of ours around it


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}: {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return seconds


# ---- Timeout ---------------------------------------------------------------------


class Timeout:
    """Timeout(seconds, *, thread=False, max_workers=None)

    A deadline for what runs inside it (``math.inf``: none).

    - Async: the inner awaitable is cancelled at the deadline and
      :class:`~pyresilience.TimeoutExceeded` is raised (chained from the
      ``TimeoutError`` of ``asyncio.timeout``). What the cancelled call held
      inside the Timeout (a bulkhead slot, a breaker trial) is given back.
    - Sync, ``thread=False`` (default): Python cannot stop a running function.
      The deadline is propagated, so every wait of this package inside the
      call is capped by it and fails at once when it cannot be met; a call
      that returns after the deadline raises TimeoutExceeded (so a breaker
      outside the Timeout records a failure); a call already past an outer
      deadline is not started. A call that blocks in code of its own (a
      socket without a timeout) is not interrupted: give it
      ``deadline_remaining()`` as its own timeout.
    - Sync, ``thread=True``: the call runs in a worker thread (with a copy of
      the caller's context, so the deadline follows it) and the caller stops
      waiting at the deadline with TimeoutExceeded. The abandoned call runs on
      to its end and keeps what it holds until then (a bulkhead slot inside
      the Timeout stays taken: the bulkhead still bounds real concurrency);
      ``abandoned`` counts such calls and ``abandoned_running`` those not
      yet finished. ``max_workers`` sizes the worker pool (default 32).

    When an outer deadline is sooner, it is the one in effect."""

    __slots__ = ("seconds", "thread", "max_workers", "_ns", "_executor", "_lock", "_abandoned",
                 "_running", "__weakref__")

    def __init__(self, seconds: float, *, thread: bool = False, max_workers: Optional[int] = None) -> None:
        self.seconds = _seconds(seconds, "seconds")
        self._ns = -1 if math.isinf(self.seconds) else max(1, round(self.seconds * 1e9))
        self.thread = bool(thread)
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                        or max_workers < 1):
            raise ValueError(f"max_workers must be an int >= 1 or None, got {max_workers!r}")
        self.max_workers = max_workers
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._abandoned = 0
        self._running = 0

    def __repr__(self) -> str:
        extra = ", thread=True" if self.thread else ""
        return f"Timeout({self.seconds!r}{extra})"

    @property
    def abandoned(self) -> int:
        """Calls a ``thread=True`` Timeout stopped waiting for (lifetime count)."""
        return self._abandoned

    @property
    def abandoned_running(self) -> int:
        """Abandoned calls still running in their worker thread."""
        return self._running

    def _deadline(self) -> int:
        """The deadline in effect inside: ours, or an outer one that is sooner."""
        outer = _deadline_ns()
        if self._ns < 0:
            return outer if outer is not None else -1
        mine = _monotonic_ns() + self._ns
        return mine if outer is None or mine < outer else outer

    def _exceeded(self, cause: Optional[BaseException] = None) -> TimeoutExceeded:
        return TimeoutExceeded(f"timeout of {self.seconds:g} s exceeded", timeout=self.seconds)

    def _step(self, inner: Sync, offset: int) -> Sync:
        if self.thread:
            return self._thread_layer(inner)
        return cast(Sync, _core.PolicyStep(_core.STEP_TIMEOUT, inner, _DEADLINE, self._exceeded, None,
                                           self._ns))

    def _get_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        ex = self._executor
        if ex is None:
            ex = start_pool(self, self._lock, self.max_workers or 32, "pyresilience-timeout")
        return ex

    def _finished(self, cf: "concurrent.futures.Future[Any]") -> None:
        with self._lock:
            self._running -= 1

    def _thread_layer(self, inner: Sync) -> Sync:
        var = _DEADLINE

        def thread_layer(*args: Any, **kwargs: Any) -> Any:
            deadline = self._deadline()
            if deadline < 0:
                return inner(*args, **kwargs)
            left = deadline - _monotonic_ns()
            if left <= 0:
                raise self._exceeded()
            token = var.set(deadline)
            try:
                ctx = contextvars.copy_context()
            finally:
                var.reset(token)
            cf = self._get_executor().submit(ctx.run, inner, *args, **kwargs)
            try:
                return cf.result(timeout=left / 1e9)
            except concurrent.futures.TimeoutError as exc:
                if cf.cancel():  # never started: nothing runs on
                    raise self._exceeded() from exc
                with self._lock:
                    self._abandoned += 1
                    self._running += 1
                cf.add_done_callback(self._finished)
                raise self._exceeded() from exc
        return thread_layer

    def _async_layer(self, inner: Async) -> Async:
        var, exceeded, ns = _DEADLINE, self._exceeded, self._ns

        async def timeout_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Any:
            now, outer = _monotonic_ns(), _deadline_ns()
            if ns < 0:
                if outer is None:
                    return await inner(fn, args, kwargs)
                deadline = outer
            else:
                deadline = now + ns if outer is None or now + ns < outer else outer
            left = deadline - now
            if left <= 0:
                raise exceeded()
            token = var.set(deadline)
            cm = asyncio.timeout(left / 1e9)
            try:
                async with cm:
                    return await inner(fn, args, kwargs)
            except TimeoutError as exc:
                if cm.expired():
                    raise exceeded() from exc
                raise
            finally:
                var.reset(token)
        return timeout_layer

    def shutdown(self, wait: bool = True) -> None:
        """shutdown(self, wait=True)

        Stop the worker pool of ``thread=True`` (a later call starts a new one)."""
        stop_pool(self, self._lock, wait)


# ---- Fallback ----------------------------------------------------------------------


ExcTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


class Fallback:
    """Fallback(value=None, *, factory=None, on=(Exception,))

    When the inner call raises one of ``on`` - rejections included
    (CircuitOpenError, RateLimitExceeded, BulkheadFullError, TimeoutExceeded)
    - return ``value``, or ``factory(exc)`` when a factory is given (awaited
    in an async call when it returns an awaitable). BaseExceptions that are
    not Exceptions (a cancellation, KeyboardInterrupt) are never replaced."""

    __slots__ = ("value", "factory", "on")

    def __init__(self, value: Any = None, *, factory: Optional[Callable[[BaseException], Any]] = None,
                 on: ExcTypes = (Exception,)) -> None:
        if factory is not None and not callable(factory):
            raise TypeError(f"factory must be callable or None, not {type(factory).__name__}: {factory!r}")
        if isinstance(on, type):
            on = (on,)
        if not isinstance(on, tuple) or not all(isinstance(c, type) and issubclass(c, Exception) for c in on):
            raise TypeError(f"on must be an Exception class or a tuple of them, got {on!r}")
        self.value = value
        self.factory = factory
        self.on = on

    def __repr__(self) -> str:
        what = f"factory={self.factory!r}" if self.factory is not None else repr(self.value)
        return f"Fallback({what}, on={self.on!r})"

    def _step(self, inner: Sync, offset: int) -> Sync:
        factory, value = self.factory, self.value
        return cast(Sync, _core.PolicyStep(_core.STEP_FALLBACK, inner, self.on,
                                           factory if factory is not None else lambda exc: value))

    def _async_layer(self, inner: Async) -> Async:
        on, factory, value = self.on, self.factory, self.value

        async def fallback_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Any:
            try:
                return await inner(fn, args, kwargs)
            except on as exc:
                if factory is None:
                    return value
                result = factory(exc)
                if inspect.isawaitable(result):
                    result = await result
                return result
        return fallback_layer


# ---- Limit -------------------------------------------------------------------------


_IN_PROCESS = (_core._Limiter, _core.KeyedLimiterView, _core.LimiterGroup)
_KEYED = (_core.KeyedLimiter, _core.RedisRateLimiter)


class Limit:
    """Limit(limiter, key=None, wait=0.0, *, n=1)

    A limiter as a strategy. Each call takes ``n`` from ``limiter``: at once,
    or raising :class:`~pyresilience.RateLimitExceeded` (its ``retry_after``
    set, so a Retry outside can wait it); with ``wait`` seconds, it may wait
    that long (always capped by the remaining deadline). ``limiter`` is any
    in-process limiter, a KeyedLimiterView, a LimiterGroup, a
    RedisLimiterGroup, or - with ``key`` - a KeyedLimiter or a
    RedisRateLimiter; ``key`` is a value, or a function called with the call's
    arguments that returns one. A bare limiter in a Policy is ``Limit(limiter)``."""

    __slots__ = ("limiter", "key", "wait", "n")

    def __init__(self, limiter: Any, key: Any = None, wait: float = 0.0, *, n: int = 1) -> None:
        keyed = isinstance(limiter, _KEYED)
        if keyed and key is None:
            raise TypeError(f"Limit({type(limiter).__name__}) needs key= (a value, or a function "
                            "of the call's arguments)")
        if not keyed and key is not None:
            raise TypeError(f"key is only for a KeyedLimiter or a RedisRateLimiter, not "
                            f"{type(limiter).__name__}")
        if not keyed and not isinstance(limiter, _IN_PROCESS + (_core.RedisLimiterGroup,)):
            raise TypeError(f"limiter must be a rate limiter, a KeyedLimiterView, a LimiterGroup, a "
                            f"KeyedLimiter or a Redis limiter, not {type(limiter).__name__}: {limiter!r}")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or math.isnan(wait) or wait < 0:
            raise ValueError(f"wait must be a number of seconds >= 0, got {wait!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.limiter = limiter
        self.key = key
        self.wait = float(wait)
        self.n = n

    def __repr__(self) -> str:
        key = f", key={self.key!r}" if self.key is not None else ""
        return f"Limit({self.limiter!r}{key}, wait={self.wait!r})"

    def _acquirers(self) -> Tuple[Callable[[Tuple[Any, ...], Any], Any],
                                  Callable[[Tuple[Any, ...], Any], Awaitable[Any]]]:
        lim: Any = self.limiter
        key, n = self.key, self.n
        wait: Optional[float] = None if math.isinf(self.wait) else self.wait
        if isinstance(lim, _core.RedisLimiterGroup):
            group: Any = lim  # the facade's class has acquire_async
            return (lambda a, k: group.acquire(wait)), (lambda a, k: group.acquire_async(wait))
        if key is None:
            return (lambda a, k: lim.acquire(n, wait)), (lambda a, k: lim.acquire_async(n, wait))
        if callable(key):
            return ((lambda a, k: lim.acquire(key(*a, **k), n, wait)),
                    (lambda a, k: lim.acquire_async(key(*a, **k), n, wait)))
        return (lambda a, k: lim.acquire(key, n, wait)), (lambda a, k: lim.acquire_async(key, n, wait))

    def _step(self, inner: Sync, offset: int) -> Sync:
        lim: Any = self.limiter
        key, n = self.key, self.n
        wait: Optional[float] = None if math.isinf(self.wait) else self.wait
        if callable(key):  # a key from the call's arguments: a Python layer
            acquire = lim.acquire

            def limit_layer(*args: Any, **kwargs: Any) -> Any:
                acquire(key(*args[offset:], **kwargs), n, wait)
                return inner(*args, **kwargs)
            return limit_layer
        if isinstance(lim, _core.RedisLimiterGroup):
            allow_args: Tuple[Any, ...] = ()
            acquire_args: Tuple[Any, ...] = (wait,)
        elif key is None:
            allow_args = () if n == 1 else (n,)
            acquire_args = (n, wait)
        else:
            allow_args = (key,) if n == 1 else (key, n)
            acquire_args = (key, n, wait)
        acquire = partial(lim.acquire, *acquire_args)
        if wait == 0:  # allow() (the fast path); a refusal raises from acquire(..., 0)
            return cast(Sync, _core.PolicyStep(_core.STEP_LIMIT, inner, partial(lim.allow, *allow_args), None,
                                               acquire, n, None, _native(lim, _core._Limiter, "allow")))
        return cast(Sync, _core.PolicyStep(_core.STEP_LIMIT, inner, acquire))

    def _async_layer(self, inner: Async) -> Async:
        lim: Any = self.limiter
        if self.wait == 0 and isinstance(lim, _IN_PROCESS) and self.key is None:
            # no wait, no I/O: the sync check (allow, then acquire(n, 0) for the refusal)
            n = self.n

            async def limit_now_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...],
                                      kwargs: Any) -> Any:
                if not lim.allow(n):
                    lim.acquire(n, 0)
                return await inner(fn, args, kwargs)
            return limit_now_layer
        acquire = self._acquirers()[1]

        async def limit_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Any:
            await acquire(args, kwargs)  # a cancelled wait takes nothing
            return await inner(fn, args, kwargs)
        return limit_layer


# ---- the other patterns as layers ------------------------------------------------


def _retry_async_layer(retry: Retry, inner: Async) -> Async:
    # Retry.call_async inlined (one coroutine frame per layer, not two); after
    # a failure the Retry's own loop takes over
    now_ns, resume = _core.retry_now_ns, retry._resume_async

    async def retry_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Any:
        cfg = retry.config
        start = now_ns(cfg.clock)
        if cfg.budget is not None:
            cfg.budget.deposit()
        exc: Optional[BaseException] = None
        result: Any = None
        try:
            result = await inner(fn, args, kwargs)
        except Exception as e:  # BaseExceptions (a cancellation) propagate: never retried
            exc = e
        else:
            predicate = cfg.retry_on_result
            if predicate is None or not predicate(result):
                return result
        return await resume(inner, (fn, args, kwargs), {}, exc, result, start)
    return retry_layer


def _breaker_async_layer(breaker: CircuitBreaker, inner: Async) -> Async:
    # CircuitBreaker.call_async inlined
    acquire, record, rejected = breaker._acquire, breaker._record, breaker._rejected_async

    async def breaker_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Any:
        token = acquire()
        if token.__class__ is not tuple:
            return await rejected(token)
        try:
            result = await inner(fn, args, kwargs)
        except BaseException as exc:  # a cancellation is never a failure and frees its trial slot
            record(token, exc)
            raise
        record(token, None, result)
        return result
    return breaker_layer


def _bulkhead_async_layer(bulkhead: Bulkhead, inner: Async) -> Async:
    take, slow, release = bulkhead._acquire_async, bulkhead._acquire_slow, bulkhead.release

    async def bulkhead_layer(fn: Callable[..., Awaitable[Any]], args: Tuple[Any, ...], kwargs: Any) -> Any:
        r = take(new_waiter, bulkhead.max_wait_seconds != 0)
        if r is not True:
            await slow(r, bulkhead.max_wait_seconds)  # a cancelled wait keeps nothing
        try:
            return await inner(fn, args, kwargs)
        finally:
            release()
    return bulkhead_layer


def _flat_async_layer(group: List[Any], inner: Async, *, star: bool = False) -> Async:
    """One coroutine frame for consecutive Retry, CircuitBreaker, Bulkhead,
    Timeout (finite) and limiter strategies (a limiter without wait or key).
    Its code is the bodies of _retry_async_layer, _breaker_async_layer,
    _bulkhead_async_layer, Timeout's and Limit's no-wait layers nested in the
    group's order (outermost first),
    written out once when the policy is made: the same steps, the same
    outcomes, one frame instead of one per strategy. A Retry re-runs what is
    inside it (``rest``: the same kind of layer over the strategies after it)
    through its own loop. ``star``: the same code called as ``(fn, /, *args,
    **kwargs)`` (a policy's call_async: no frame of its own before it)."""
    ns: Dict[str, Any] = {"inner": inner, "now_ns": _core.retry_now_ns, "new_waiter": new_waiter,
                "_timeout_enter": _core._timeout_enter, "_DEADLINE": _DEADLINE, "_timeout": asyncio.timeout,
                "_monotonic_ns": _monotonic_ns}
    lines: List[str] = []

    def emit(depth: int, text: str) -> None:
        lines.extend("    " * depth + line for line in text.strip("\n").split("\n"))

    def gen(i: int, depth: int) -> None:  # code that leaves the result of group[i:] in r{i}
        if i == len(group):
            emit(depth, f"r{i} = await inner(fn, args, kwargs)")
            return
        s, j = group[i], i + 1
        if isinstance(s, Retry):
            rest = group[j:]
            cfg = s.config  # read when the policy is made, as the sync chain does
            ns[f"resume{i}"], ns[f"predicate{i}"] = s._resume_async, cfg.retry_on_result
            ns[f"budget{i}"], ns[f"clock{i}"] = cfg.budget, cfg.clock
            ns[f"rest{i}"] = (inner if not rest else _one_async_layer(rest[0], inner) if len(rest) == 1
                              else _flat_async_layer(rest, inner))
            default_clock = cfg.clock is None or isinstance(cfg.clock, _core.MonotonicClock)
            emit(depth, f"start{i} = _monotonic_ns()" if default_clock else f"start{i} = now_ns(clock{i})")
            if cfg.budget is not None:
                emit(depth, f"budget{i}.deposit()")
            emit(depth, f"""
exc{i} = r{j} = None
try:""")
            gen(j, depth + 1)
            check = "" if cfg.retry_on_result is None else f" and not predicate{i}(r{j})"
            accepted = f"exc{i} is None{check}"
            emit(depth, f"""
except Exception as e:  # BaseExceptions (a cancellation) propagate: never retried
    exc{i} = e
if {accepted}:
    r{i} = r{j}
else:
    r{i} = await resume{i}(rest{i}, (fn, args, kwargs), {{}}, exc{i}, r{j}, start{i})
    exc{i} = None""")
        elif isinstance(s, CircuitBreaker):
            ns[f"acquire{i}"], ns[f"record{i}"], ns[f"rejected{i}"] = s._acquire, s._record, s._rejected_async
            emit(depth, f"""
token{i} = acquire{i}()
if token{i}.__class__ is not tuple:
    r{i} = await rejected{i}(token{i})
else:
    try:""")
            gen(j, depth + 2)
            emit(depth, f"""
    except BaseException as e:  # a cancellation is never a failure and frees its trial slot
        record{i}(token{i}, e)
        raise
    record{i}(token{i}, None, r{j})
    r{i} = r{j}""")
        elif isinstance(s, Bulkhead):
            ns[f"take{i}"], ns[f"slow{i}"], ns[f"release{i}"] = s._acquire_async, s._acquire_slow, s.release
            ns[f"wait{i}"] = s.max_wait_seconds  # fixed when the bulkhead is made
            emit(depth, f"""
w{i} = take{i}(new_waiter, {s.max_wait_seconds != 0})
if w{i} is not True:
    await slow{i}(w{i}, wait{i})  # a cancelled wait keeps nothing
try:""")
            gen(j, depth + 1)
            emit(depth, f"""
finally:
    release{i}()
r{i} = r{j}""")
        elif isinstance(s, Timeout):  # Timeout._async_layer's body, for a finite Timeout
            ns[f"ns{i}"], ns[f"exceeded{i}"] = s._ns, s._exceeded
            emit(depth, f"""
entered{i} = _timeout_enter(ns{i})  # (DEADLINE's token, seconds left), or None: passed
if entered{i} is None:
    raise exceeded{i}()
cm{i} = _timeout(entered{i}[1])
try:
    async with cm{i}:""")
            gen(j, depth + 2)
            emit(depth, f"""
except TimeoutError as e:
    if cm{i}.expired():
        raise exceeded{i}() from e
    raise
finally:
    _DEADLINE.reset(entered{i}[0])
r{i} = r{j}""")
        else:
            lim: Any = s.limiter
            ns[f"allow{i}"], ns[f"refuse{i}"], ns[f"n{i}"] = lim.allow, lim.acquire, s.n
            emit(depth, f"""
if not allow{i}(n{i}):
    refuse{i}(n{i}, 0)  # raises the refusal (or admits: time moved)""")
            gen(j, depth)
            emit(depth, f"r{i} = r{j}")

    emit(0, "async def flat_layer(fn, /, *args, **kwargs):" if star else "async def flat_layer(fn, args, kwargs):")
    gen(0, 1)
    emit(1, "return r0")
    exec(compile("\n".join(lines), "<pyresilience.policy: " + ", ".join(_kind(s) for s in group) + ">",
                 "exec"), ns)
    return cast(Async, ns["flat_layer"])


def _flattens(s: Any) -> bool:
    return isinstance(s, (Retry, CircuitBreaker, Bulkhead)) or (
        isinstance(s, Timeout) and not s.thread and s._ns >= 0) or (
        isinstance(s, Limit) and s.wait == 0 and s.key is None and isinstance(s.limiter, _IN_PROCESS))


def _one_async_layer(s: Any, inner: Async) -> Async:
    if isinstance(s, Retry):
        return _retry_async_layer(s, inner)
    if isinstance(s, CircuitBreaker):
        return _breaker_async_layer(s, inner)
    if isinstance(s, Bulkhead):
        return _bulkhead_async_layer(s, inner)
    return cast(Async, s._async_layer(inner))


def _native(obj: Any, core: type, *methods: str) -> Any:
    """``obj`` when it is a ``core`` whose ``methods`` are its C type's own (a
    PolicyStep then decides in C: its ``o``), else None."""
    ok = isinstance(obj, core) and all(type(getattr(obj, m)) is BuiltinMethodType for m in methods)
    return obj if ok else None


def _sync_chain(strategies: Tuple[Any, ...], end: Sync, offset: int, *, skip_retry: bool = False,
                inside_retry: Optional[Callable[[Sync], Sync]] = None) -> Sync:
    """The sync chain of ``strategies`` (outermost first) around ``end``: C
    objects except where a strategy needs Python. ``offset``: how many
    leading arguments are not the call's (1 for policy.call's function). For
    adapters: ``skip_retry`` leaves the Retry strategies out (a request that
    must not be repeated); ``inside_retry`` makes a layer put right inside
    each Retry."""
    nxt = end
    for s in reversed(strategies):
        if isinstance(s, Retry):
            if skip_retry:
                continue
            if inside_retry is not None:
                nxt = inside_retry(nxt)
            nxt = s._step(nxt)
        elif isinstance(s, CircuitBreaker):
            # the breaker's own C wrapper; a step around it hands the clock reading over
            wrapped = s._wrap(nxt)
            nxt = _core.PolicyStep(_core.STEP_BREAKER, nxt, wrapped) if type(nxt) is _core.PolicyStep \
                else wrapped
        elif isinstance(s, Bulkhead):
            nxt = _core.PolicyStep(_core.STEP_BULKHEAD, nxt, s.acquire, s.release, None, -1, None,
                                   _native(s, _core.Bulkhead, "acquire", "release"))
        else:
            nxt = s._step(nxt, offset)
    return nxt


def _async_entry(strategies: Tuple[Any, ...], run: Async) -> Callable[..., Awaitable[Any]]:
    """A policy's call_async, called as (fn, /, *args, **kwargs): when the
    outermost strategies share one frame, that frame's code in this form;
    else a function handing (fn, args, kwargs) to the chain (``run``)."""
    n = 0
    while n < len(strategies) and _flattens(strategies[n]):
        n += 1
    if n > 1:
        inner = _async_chain(strategies[n:])
        return _flat_async_layer(list(strategies[:n]), inner, star=True)

    def call_async(fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return run(fn, args, kwargs)
    return call_async


def _async_chain(strategies: Tuple[Any, ...], *, skip_retry: bool = False,
                 inside_retry: Optional[Callable[[Async], Async]] = None) -> Async:
    """The async chain, called with (fn, args, kwargs): consecutive Retry,
    CircuitBreaker, Bulkhead, finite Timeout and plain limiter strategies
    share one coroutine frame (_flat_async_layer); the others (Fallback, a
    thread or infinite Timeout, a limiter that waits or takes a key) are a
    coroutine function each."""
    async_: Async = _direct_async
    group: List[Any] = []  # consecutive strategies of one frame, outermost first

    def close(inner: Async) -> Async:
        if len(group) > 1:
            inner = _flat_async_layer(list(group), inner)
        elif group:
            inner = _one_async_layer(group[0], inner)
        group.clear()
        return inner

    for s in reversed(strategies):
        if isinstance(s, Retry):
            if skip_retry:
                continue
            if inside_retry is not None:
                async_ = inside_retry(close(async_))
                async_ = _retry_async_layer(s, async_)
                continue
        if _flattens(s):
            group.insert(0, s)
        else:
            async_ = s._async_layer(close(async_))
    return close(async_)


Strategy = Union[Fallback, Retry, RetryConfig, CircuitBreaker, Timeout, Bulkhead, Limit, Any]


def _normalize(strategy: Any) -> Any:
    if isinstance(strategy, RetryConfig):
        return Retry(strategy)
    if isinstance(strategy, (Fallback, Retry, CircuitBreaker, Timeout, Bulkhead, Limit)):
        return strategy
    if isinstance(strategy, _KEYED):
        raise TypeError(f"a {type(strategy).__name__} needs a key: use pr.Limit(limiter, key=...)")
    if isinstance(strategy, _IN_PROCESS + (_core.RedisLimiterGroup,)):
        return Limit(strategy)
    raise TypeError("a Policy's strategies are Fallback, Retry, RetryConfig, CircuitBreaker, Timeout, "
                    f"Bulkhead, a limiter or Limit, not {type(strategy).__name__}: {strategy!r}")


def _kind(s: Any) -> str:
    return {Fallback: "Fallback", Retry: "Retry", Timeout: "Timeout", Limit: "Limit"}.get(
        type(s), "CircuitBreaker" if isinstance(s, CircuitBreaker) else
        "Bulkhead" if isinstance(s, Bulkhead) else type(s).__name__)


def _check_order(strategies: Tuple[Any, ...]) -> List[str]:
    """The wrong orders found in ``strategies`` (outermost first), worded for a warning."""
    kinds = [_kind(s) for s in strategies]
    problems = []
    for i, k in enumerate(kinds):
        if k != "CircuitBreaker":
            continue
        outside, inside = kinds[:i], kinds[i + 1:]
        if "Timeout" in outside and "Timeout" not in inside:
            problems.append(
                "a Timeout outside the CircuitBreaker with no Timeout inside it: the breaker never "
                "sees the timeouts (a cancellation is not a failure). Put a Timeout inside the "
                "breaker too (per attempt), e.g. Policy(Timeout(total), Retry, CircuitBreaker, "
                "Timeout(per_attempt), ...)")
            break
    for i, k in enumerate(kinds):
        if k == "Bulkhead" and "Retry" in kinds[i + 1:]:
            problems.append(
                "a Retry inside a Bulkhead: its backoff sleeps hold the bulkhead's slots. Put the "
                "Retry outside the Bulkhead, e.g. Policy(Retry, CircuitBreaker, Bulkhead)")
            break
    for i, k in enumerate(kinds):
        if k == "Fallback" and any(o in ("Retry", "CircuitBreaker") for o in kinds[:i]):
            problems.append(
                "a Fallback inside a Retry or a CircuitBreaker: it turns every failure into a "
                "success, so they never see one. Put the Fallback first (outermost)")
            break
    return problems


class Policy:
    """Policy(*strategies, dead_letter=None)

    Runs calls through ``strategies``, the first one outermost: ``Policy(a, b,
    c).call(f)`` is ``a(b(c(f)))``. Strategies: :class:`Fallback`,
    :class:`~pyresilience.Retry` (or a RetryConfig),
    :class:`~pyresilience.CircuitBreaker`, :class:`Timeout`,
    :class:`~pyresilience.Bulkhead`, a limiter (a bare one is
    ``Limit(limiter)``), :class:`Limit`, or a Policy (spliced in).

    - ``policy.call(fn, *args, **kwargs)``; ``await policy.call_async(fn, ...)``;
    - ``@policy`` on sync and async functions (the signature is kept);
    - ``policy.strategies``: the strategies, outermost first.

    The recommended order is :meth:`recommended`'s. Orders known to be wrong
    warn with :class:`~pyresilience.PolicyWarning` when the policy is made."""

    __slots__ = ("strategies", "_async", "dead_letter", "__weakref__") + (
        () if TYPE_CHECKING else ("call", "call_async"))

    strategies: Tuple[Any, ...]
    dead_letter: Any

    def __init__(self, *strategies: Strategy, dead_letter: Any = None) -> None:
        flat: List[Any] = []
        for s in strategies:
            if isinstance(s, Policy):
                # its Retry steps keep its dead_letter (as views onto them)
                flat.extend(s._chain() if s.dead_letter is not None else s.strategies)
            else:
                flat.append(_normalize(s))
        self.strategies = tuple(flat)
        for problem in _check_order(self.strategies):
            warnings.warn(f"Policy order: {problem}", PolicyWarning, stacklevel=2)
        # dead_letter: each Retry without its own sink gives up into this one
        from .dead_letters import check_sink
        self.dead_letter = check_sink(dead_letter)
        chain = self._chain()
        # policy.call is the chain itself (a C object: no Python frame per call)
        object.__setattr__(self, "call", _sync_chain(chain, _APPLY, 1))
        self._async = _async_chain(chain)
        # policy.call_async: the outermost frame's coroutine function itself
        object.__setattr__(self, "call_async", _async_entry(chain, self._async))

    @classmethod
    def recommended(cls, *, fallback: Optional[Fallback] = None,
                    timeout: Union[None, float, Timeout] = None,
                    retry: Union[None, Retry, RetryConfig] = None,
                    breaker: Optional[CircuitBreaker] = None,
                    limiter: Any = None,
                    attempt_timeout: Union[None, float, Timeout] = None,
                    bulkhead: Optional[Bulkhead] = None) -> "Policy":
        """recommended(*, fallback=None, timeout=None, retry=None, breaker=None, limiter=None, attempt_timeout=None, bulkhead=None)

        A Policy in the documented order: Fallback, Timeout (total), Retry,
        CircuitBreaker, limiter, Timeout (per attempt), Bulkhead, the call.
        ``timeout`` and ``attempt_timeout`` take a Timeout or seconds; None
        omits a strategy."""
        if timeout is not None and not isinstance(timeout, Timeout):
            timeout = Timeout(timeout)
        if attempt_timeout is not None and not isinstance(attempt_timeout, Timeout):
            attempt_timeout = Timeout(attempt_timeout)
        order = (fallback, timeout, retry, breaker, limiter, attempt_timeout, bulkhead)
        return cls(*(s for s in order if s is not None))

    if TYPE_CHECKING:
        def call(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
            """call(func, /, *args, **kwargs)

            ``func(*args, **kwargs)`` through every strategy, outermost first."""

        def call_async(self, func: Callable[P, Awaitable[T]], /, *args: P.args,
                       **kwargs: P.kwargs) -> Awaitable[T]:
            """call_async(func, /, *args, **kwargs)

            An awaitable of ``func(*args, **kwargs)`` through every strategy
            (the outermost strategy's coroutine: no frame of its own, set per
            policy as ``call`` is). Cancelling it gives back what the
            strategies held (a bulkhead slot, a breaker's trial slot; a
            limiter wait takes nothing until admitted)."""

    def __call__(self, func: Callable[P, T]) -> Callable[P, T]:
        """Use the policy as a decorator on a sync or async function (the
        signature is kept; a generator function is refused with TypeError)."""
        if inspect_target(func, "a Policy"):
            run_async = self._async
            afunc = cast(Callable[..., Awaitable[Any]], func)

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await run_async(afunc, args, kwargs)
            return cast(Callable[P, T], finish(async_wrapper, func))
        if not self.strategies:
            return func  # nothing to apply
        # the chain around this very function: a C object, called with the call's arguments
        return cast(Callable[P, T], finish(_sync_chain(self._chain(func), func, 0), func))

    def _chain(self, target: Any = None) -> Tuple[Any, ...]:
        """The strategies as the chain runs them: with a ``dead_letter``, each
        Retry as a view handing its give-ups to it."""
        if self.dead_letter is None and target is None:
            return self.strategies
        return tuple(_RetryView(s.base, s.dead_letter or self.dead_letter, target)
                     if isinstance(s, _RetryView)  # a nested Policy's: its own sink wins
                     else s._with_dead_letter(self.dead_letter, target) if isinstance(s, Retry)
                     else s for s in self.strategies)

    def __repr__(self) -> str:
        return f"Policy({', '.join(repr(s) for s in self.strategies)})"
