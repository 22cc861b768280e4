"""``Group.collect`` and ``Group.wrap``: failures of code corral did not start (callbacks,
cleanup) reported as the group's own."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import _driver
from ._errors import GroupClosed
from ._validate import is_coroutine_function

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

__all__ = ["Collector", "wrap"]

log = logging.getLogger("corral")

P = ParamSpec("P")
R = TypeVar("R")


class Collector:
    """``with group.collect():`` (or ``async with``) an exception raised in the block
    becomes a failure of the group (and, with ``fail_fast``, cancels it) instead of
    propagating."""

    __slots__ = ("_background", "_entered", "_life")

    def __init__(self, life: Lifecycle, background: bool) -> None:
        self._life = life
        self._background = background
        self._entered = False

    def __enter__(self) -> Collector:
        life = self._life
        with life.lock:
            life.collector_entered(self._background)
        self._entered = True
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        life = self._life
        swallow = False
        # Once the group has closed and reported (a background collector that outlived
        # it), nobody would see the failure there: it propagates instead.
        if exc is not None and not life.failures_raised and not _is_asyncio_cancel(exc):
            collected(life, exc, "collect()")
            # KeyboardInterrupt/SystemExit cancel the group and still propagate.
            swallow = not isinstance(exc, KeyboardInterrupt | SystemExit)
        if self._entered:
            with life.lock:
                life.collector_exited(self._background)
        self._entered = False
        return swallow

    async def __aenter__(self) -> Collector:
        """``async with group.collect():`` is ``with`` (neither waits), for async code
        that reaches for it."""
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        return self.__exit__(exc_type, exc, tb)


def _is_asyncio_cancel(exc: BaseException) -> bool:
    """An awaiting coroutine's own cancellation: it propagates (neither a failure, nor
    swallowed)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def wrap(life: Lifecycle, fn: Callable[P, R]) -> Callable[P, R | None]:
    """``fn``, its exceptions collected as with ``Collector``; once the group is closed,
    calls go straight through and their exceptions propagate. A coroutine function
    gives an async function."""
    if is_coroutine_function(fn):
        return _wrap_async(life, fn)  # type: ignore[arg-type, return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        collector = _open(life)
        if collector is None:
            return fn(*args, **kwargs)
        try:
            return _closed_with(collector, fn(*args, **kwargs))
        except BaseException as e:
            _collect_or_raise(collector, e)
            return None

    return wrapper


def _wrap_async(life: Lifecycle, fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R | None]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> R | None:
        collector = _open(life)
        if collector is None:
            return await fn(*args, **kwargs)
        try:
            return _closed_with(collector, await fn(*args, **kwargs))
        except BaseException as e:
            _collect_or_raise(collector, e)
            return None

    return wrapper


def _open(life: Lifecycle) -> Collector | None:
    """A collector for one call of a wrapped function (None once the group is closed)."""
    collector = Collector(life, False)
    try:
        collector.__enter__()
    except GroupClosed:
        return None
    return collector


def _closed_with(collector: Collector, result: R) -> R:
    collector.__exit__(None, None, None)
    return result


def _collect_or_raise(collector: Collector, exc: BaseException) -> None:
    if not collector.__exit__(type(exc), exc, exc.__traceback__):
        raise exc


def collected(life: Lifecycle, exc: BaseException, what: str) -> None:
    if isinstance(exc, _driver.CANCELLED_ENDS):
        return
    try:
        exc.add_note(f"corral: collected by {what} in {life.kind} {life.name!r}")
    except Exception:  # pragma: no cover
        pass

    def log_it() -> None:
        if isinstance(exc, Exception):  # a fatal one propagates: not logged here
            log.log(
                life.failure_level, "collected failure in %s %r", life.kind, life.name,
                exc_info=exc, extra={"corral_task": None, "corral_group": life.name},
            )

    _driver.report(life, exc, log_it)
