"""Joining a group: wait for its foreground tasks, end its background ones, close it,
and say what the join raises.

``Group.join`` (and a with-block's end) runs these steps blocking; ``AsyncGroup`` runs
the same steps awaited (``_async``). Waiting goes through the group's waiter
(``_waiting``); closing is the lifecycle's (``Lifecycle.close``).
"""

from __future__ import annotations

import logging
import time

from ._context import current as _current
from ._context import not_on_a_loop, within
from ._errors import Cancelled, Stopped
from ._queries import foreground_done
from ._queries import stranded as find_stranded
from ._token import check_timeout

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from ._group import Group
    from ._lifecycle import Lifecycle

__all__ = ["check_not_own_task", "end_background", "join", "outcome", "timeout_error"]

log = logging.getLogger("corral")


def join(group: Group, timeout: float | None, body_exc: BaseException | None) -> BaseException | None:
    """Join, blocking; returns what join() should raise (or None). ``body_exc``: the
    exception a with-block ended with."""
    timeout = check_timeout("timeout", timeout)
    not_on_a_loop(f"{type(group).__name__}.join() (and its with-block's end)",
                  "corral.AsyncGroup (async with, await join())")
    check_not_own_task(group)
    life = group._life
    deadline = None if timeout is None else time.monotonic() + timeout
    with life.lock:
        if not life.waiter.wait(lambda: foreground_done(life), timeout):
            raise timeout_error(group, life.foreground, timeout)
    end_background(group)
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    with life.lock:
        if not life.waiter.wait(lambda: not life.unfinished, remaining):
            raise timeout_error(group, len(life.unfinished), timeout)
        failures, fatal = life.close(group._role.refuse)
    group._unregister()
    return outcome(life, failures, fatal, body_exc)


def check_not_own_task(group: Group) -> None:
    """A join from inside the group would wait for itself: from one of its tasks, or
    from a task of a group made (at any depth) by one of them."""
    current = _current.get()
    if current is None or group._life.closed:
        return
    if current.group is group:
        raise RuntimeError(
            f"a task of group {group.name!r} cannot join its own group (it would wait for itself)"
        )
    if within(group):
        raise RuntimeError(
            f"task {current.name!r} runs inside {group._kind} {group.name!r} (in a group "
            "that one of its tasks made): joining it would wait for itself"
        )


def timeout_error(group: Group, running: int, timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"{group._kind} {group.name!r} still has {running} running task(s) after {timeout}s"
    )


def end_background(group: Group) -> None:
    """The foreground is done: cancel what nothing can release any more, and the
    background tasks."""
    life = group._life
    with life.lock:
        stranded = find_stranded(life) if life.foreground else {}
        background = [t for t in life.unfinished if t.background and t not in stranded]
    for t, missing in stranded.items():
        t.cancel(Cancelled(
            f"task {t.name!r} needs {missing!r}, which ended and nothing left can start again"
        ))
    for t in background:
        t.cancel(Stopped(f"{group._kind} {group.name!r} is done"))


def outcome(
    life: Lifecycle, failures: list[Exception], fatal: BaseException | None,
    body_exc: BaseException | None,
) -> BaseException | None:
    """What a group's join raises: a fatal error (the failures logged), else one
    ``ExceptionGroup`` of the with-body's exception and the failures, else the body's
    own ``BaseException``, else nothing. A body's KeyboardInterrupt or SystemExit is
    fatal too: it comes out, not the failures (as from ``asyncio.TaskGroup``)."""
    if fatal is None and isinstance(body_exc, (KeyboardInterrupt, SystemExit)):
        fatal = body_exc
    if fatal is not None:
        for f in failures:
            log.error(
                "task failure while stopping for %r", fatal, exc_info=f,
                extra={"corral_task": getattr(f, "__corral_task__", None), "corral_group": life.name},
            )
        return fatal
    what = f"{len(failures)} task(s) failed in {life.kind} {life.name!r}"
    if isinstance(body_exc, Exception):
        what = (
            f"the block of {life.kind} {life.name!r} raised"
            + (f", and {len(failures)} task(s) failed in it" if failures else "")
        )
        failures.insert(0, body_exc)
    elif body_exc is not None and not failures:
        return body_exc
    if not failures:
        return None
    return ExceptionGroup(what, failures)
