"""What calling a function runs: its body, or a coroutine or generator that must be
awaited or iterated for the body to run (spawn, ``map``, ``collect`` and hooks ask)."""

from __future__ import annotations

import functools
from collections.abc import Callable

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

__all__ = ["check_hook", "check_plain", "is_coroutine_function", "qualname", "refuse_awaitable"]

# Code flags of functions whose call returns a generator or coroutine instead of
# running the body (inspect.CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR; inspect
# itself is not imported: it is slow to import).
_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200
_CO_ANY_GENERATOR = _CO_GENERATOR | _CO_COROUTINE | _CO_ASYNC_GENERATOR


def _code_flags(fn: Callable[..., Any]) -> int:
    """The generator/coroutine flags of what calling ``fn`` runs (``_CO_COROUTINE`` for
    a function ``inspect.markcoroutinefunction`` marked)."""
    # (On every spawn: a plain function or a bound method, which forwards __code__,
    # costs one attribute read; partials, __wrapped__ and callable objects unwrap.)
    code = getattr(fn, "__code__", None)
    target: Any = fn
    if code is None or getattr(fn, "__wrapped__", None) is not None:
        for _ in range(16):
            if isinstance(target, functools.partial):
                target = target.func
            elif (inner := getattr(target, "__wrapped__", None)) is not None or (inner := getattr(target, "__func__", None)) is not None:
                target = inner
            elif getattr(target, "__code__", None) is None and not isinstance(target, type):
                call = getattr(type(target), "__call__", None)  # noqa: B004 - its function
                if call is None or getattr(call, "__code__", None) is None:
                    break
                target = call
            else:
                break
        code = getattr(target, "__code__", None)
    # (inspect.markcoroutinefunction, 3.12+, marks a plain function as one)
    if getattr(target, "_is_coroutine_marker", None) is not None:
        return _CO_COROUTINE
    flags = getattr(code, "co_flags", 0)
    return flags & _CO_ANY_GENERATOR if isinstance(flags, int) else 0


def _kind(flags: int) -> str:
    """What kind of function has these (non-zero) flags, for messages."""
    if flags & _CO_COROUTINE:
        return "a coroutine function"
    if flags & _CO_ASYNC_GENERATOR:
        return "an async generator function"
    return "a generator function"


def is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` runs as a coroutine (see ``check_callable``); raises ``TypeError``
    for a generator or async generator function, whose body would never run."""
    flags = _code_flags(fn)
    if not flags:
        return False
    if flags & _CO_COROUTINE:
        return True
    hint = (
        "spawn a coroutine function that iterates it instead" if flags & _CO_ASYNC_GENERATOR
        else "its body would never run: spawn a function that consumes it, e.g. lambda: list(gen())"
    )
    raise TypeError(f"fn is {_kind(flags)} ({qualname(fn)}): {hint}")


def qualname(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a callable (the stem of a task's automatic name)."""
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if qual is None:
        qual = type(fn).__qualname__
    return f"{mod}.{qual}" if mod else str(qual)


def check_plain(what: str, fn: Callable[..., Any], why: str) -> None:
    """``fn`` (callable already) is called by corral and its body must run: refuse a
    coroutine or generator function (a call would only make a coroutine or generator,
    dropped, "never awaited"). ``why``: what corral does with it, for the message."""
    flags = _code_flags(fn)
    if flags:
        raise TypeError(f"{what} is {_kind(flags)} ({qualname(fn)}): {why}")


def check_hook(what: str, hook: Callable[..., Any]) -> None:
    """A hook (callable already): hooks are called, in the task's thread or on its
    loop, never awaited."""
    check_plain(
        what, hook,
        "hooks are called, never awaited or iterated, so its body would not run; give a "
        "plain function (it may spawn a task for async work)",
    )


def refuse_awaitable(what: str, value: object) -> None:
    """A value that corral reads (a predicate's answer) turned out awaitable: close it
    (no "never awaited" warning) and say so."""
    close = getattr(value, "close", None)
    if close is not None:
        close()
    raise TypeError(
        f"{what} returned {type(value).__name__}, which would read as true: give a plain "
        "function that returns a bool (it is called, never awaited)"
    )
