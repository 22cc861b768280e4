"""What the calling thread runs for corral: the current task (a context variable, so
that it follows the attempt's context) and what the thread is busy with."""

from __future__ import annotations

import contextvars
import sys
import threading

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._group import Group
    from ._task import Task

__all__ = ["busy", "current", "exit_first", "not_on_a_loop", "running_loop", "within"]

# What this thread is busy with for corral: ``group``, the group whose task attempt it
# runs (or the supervisor it is stopping); ``finishing``, the task whose end hooks it
# runs. A wait on either from this thread would wait for itself.
busy = threading.local()

current: contextvars.ContextVar[Task[Any] | None] = contextvars.ContextVar(
    "corral_current_task", default=None
)

# What interpreter exit does first, before the supervisors stop, within the same one
# bound (each is called with its deadline, a time.monotonic()): stopping corral's own
# loop thread (``_aio``). Run by ``_supervisor``'s exit handler.
exit_first: list[Callable[[float], None]] = []


def within(group: Group) -> bool:
    """Whether this thread runs (a hook or an attempt of) a task in ``group``'s subtree:
    a wait on ``group`` from here would wait for itself."""
    task = current.get()
    in_group: Group | None = getattr(busy, "group", None)
    for start in (in_group, task.group if task is not None else None):
        g = start
        while g is not None:
            if g is group:
                return True
            g = g.parent
    return False


def running_loop() -> Any:
    """The event loop running in this thread, or None (asyncio is not imported for
    this: a program that never imported it runs no loop)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    return asyncio.events._get_running_loop()


def not_on_a_loop(call: str, awaited: str) -> None:
    """A blocking call must not block an event loop (nor deadlock on it): refuse it
    on a thread whose loop is running, naming the awaited form."""
    if running_loop() is not None:
        raise RuntimeError(
            f"{call} blocks, and this thread runs an event loop: use {awaited} instead"
        )
