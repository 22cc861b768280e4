"""``Group.collect`` and ``Group.wrap``: failures of code corral did not start (callbacks,
cleanup) reported as the group's own."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from . import _driver
from ._errors import GroupClosed

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

__all__ = ["Collector", "wrap"]

log = logging.getLogger("corral")

P = ParamSpec("P")
R = TypeVar("R")


class Collector:
    """``with group.collect():`` an exception raised in the block becomes a failure of
    the group (and, with ``fail_fast``, cancels it) instead of propagating."""

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
        if exc is not None and not life.failures_raised:
            collected(life, exc, "collect()")
            # KeyboardInterrupt/SystemExit cancel the group and still propagate.
            swallow = not isinstance(exc, KeyboardInterrupt | SystemExit)
        if self._entered:
            with life.lock:
                life.collector_exited(self._background)
        self._entered = False
        return swallow


def wrap(life: Lifecycle, fn: Callable[P, R]) -> Callable[P, R | None]:
    """``fn``, its exceptions collected as with ``Collector``; once the group is closed,
    calls go straight through and their exceptions propagate."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        collector = Collector(life, False)
        try:
            collector.__enter__()
        except GroupClosed:
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            if collector.__exit__(type(e), e, e.__traceback__):
                return None
            raise
        collector.__exit__(None, None, None)
        return result

    return wrapper


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
