"""What every decorator of the package shares (breaker, bulkhead, limiters, retry).

One place decides what a decorator accepts and how its wrapper looks:

- :func:`inspect_target` refuses what cannot be guarded (not callable, or a
  generator function: see below) and says whether calls must be awaited;
- :func:`finish` copies the wrapped function's metadata onto the wrapper
  (``functools.update_wrapper``: ``__name__``, ``__doc__``, ``__wrapped__``,
  so ``inspect.signature`` shows the original parameters);
- :func:`same_body` gives one function body a second name and docstring, for
  methods that do the same thing on a per-call path where a forwarding call
  would cost a frame (a queue's ``put``/``put_async``).

Typing: every decorator is typed ``(Callable[P, T]) -> Callable[P, T]``. For a
coroutine function T is ``Coroutine[Any, Any, R]``, so ``async def f(x: int) ->
R`` decorated still reads ``def (x: int) -> Coroutine[Any, Any, R]`` to mypy,
and at runtime the wrapper of a coroutine function is a coroutine function.

Generator functions are refused with a TypeError. Calling a generator function
runs none of its body: it returns a generator object at once. A breaker would
record a success, a bulkhead or a limiter would hold its permit, and a retry
would "succeed", all before the first ``next()``; failures raised while
iterating would escape every one of them. Guarding the iteration instead would
hold a bulkhead slot for as long as a consumer keeps an unfinished generator
alive, which is a leak nobody asked for. So decoration fails at once and says
what to do: decorate a function that consumes the generator, or guard the loop
with a ``with`` / ``async with`` block.
"""
from __future__ import annotations

import functools
import inspect
import types
from typing import Any, Callable, Optional, ParamSpec, TypeVar

__all__ = ["P", "T", "inspect_target", "finish", "same_body"]

P = ParamSpec("P")
T = TypeVar("T")


def _code_target(func: Any) -> Any:
    """What inspect should look at: the function itself, or the ``__call__`` of
    a callable object (an instance whose class defines ``async def __call__``
    is called like a coroutine function)."""
    if inspect.isroutine(func) or isinstance(func, (type, functools.partial)):
        return func
    call = getattr(type(func), "__call__", None)
    return func if call is None else call


def inspect_target(func: Any, who: str) -> bool:
    """Check that ``who`` (e.g. ``"a CircuitBreaker"``) can decorate ``func``.

    Returns True when calls of ``func`` return awaitables that must be awaited
    (a coroutine function, a partial of one, or an object whose ``__call__`` is
    one), False for a plain callable. Raises TypeError when ``func`` is not
    callable, or is a generator or async generator function."""
    if not callable(func):
        raise TypeError(f"{who} decorates callables, not {type(func).__name__}: {func!r}")
    target = _code_target(func)
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        kind = "an async generator function" if inspect.isasyncgenfunction(target) else "a generator function"
        block = "async with" if kind.startswith("an async") else "with"
        name = getattr(func, "__qualname__", None) or repr(func)
        raise TypeError(
            f"{who} cannot decorate {kind} ({name}): calling it only creates the generator, so the "
            "outcome would be decided before any of its code runs and errors raised while iterating "
            "would escape. Decorate a function that consumes the generator (for example one that "
            f"returns list(...)), or guard the iteration with a `{block}` block.")
    return inspect.iscoroutinefunction(target)


def finish(wrapper: Any, func: Any) -> Any:
    """Give ``wrapper`` the metadata of ``func`` (functools.update_wrapper),
    and at least ``__wrapped__`` when ``func`` is an object without the usual
    attributes. Returns ``wrapper``."""
    try:
        functools.update_wrapper(wrapper, func)
    except (AttributeError, TypeError):
        wrapper.__wrapped__ = func
    return wrapper


def same_body(func: Any, name: str, doc: Optional[str], owner: Optional[str] = None) -> Any:
    """A new function running ``func``'s code (its body, defaults and closure,
    with no call in between) as ``name`` with docstring ``doc``; its
    ``__qualname__`` is ``owner.name`` (default: ``func``'s owner)."""
    f = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__, func.__closure__)
    f.__kwdefaults__ = func.__kwdefaults__
    f.__annotations__ = dict(func.__annotations__)
    f.__module__ = func.__module__
    if owner is None:
        owner = func.__qualname__.rpartition(".")[0]
    f.__qualname__ = f"{owner}.{name}" if owner else name
    f.__doc__ = doc
    return f
