"""A supervisor's stop sequence: let the drain=True tasks finish (the graceful part),
then cancel the rest in reverse dependency order, a paced batch at a time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._queries import next_layer
from ._queries import stranded as find_stranded
from ._record import DONE, TaskState

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle
    from ._task import Task

__all__ = ["drain", "stop_in_order"]

log = logging.getLogger("corral")

# A stop cancels running tasks _STOP_BATCH at a time (more after a slow batch), and waits
# up to _STOP_BATCH_WAIT seconds for three quarters of a batch to end before the next
# (see _cancel_paced).
_STOP_BATCH = 64
_STOP_BATCH_WAIT = 0.05


def drain(
    life: Lifecycle, cause: BaseException, timeout: float | None, cut: Callable[[], bool]
) -> None:
    """The graceful part of a stop: cancel everything but the drain=True tasks and
    what they need (in dependency order), then wait for the draining tasks, up to
    ``timeout`` seconds, or until ``cut()`` (a second signal)."""
    with life.lock:
        draining = [
            t for t in life.unfinished
            if t.drain and (t.state is TaskState.RUNNING or t.state is TaskState.PENDING)
        ]
        if not draining:
            return
        keep: set[Task[Any]] = set()
        todo = list(draining)
        while todo:  # what the draining tasks need, directly or not
            t = todo.pop()
            if t in keep:
                continue
            keep.add(t)
            todo.extend(dep for n in t.needs if (dep := life.live.get(n)) is not None)
        life.draining = True
    log.info(
        "%s %r: draining %d task%s, %s", life.kind, life.name, len(draining),
        "" if len(draining) == 1 else "s",
        "for as long as it takes" if timeout is None else f"up to {timeout:g} s",
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        # (A task that ignores its cancellation must not hold the drain up: past the
        # drain's deadline, the order gives way.)
        stop_in_order(life, cause, keep=keep, deadline=deadline)

        def drained() -> bool:
            if cut():
                return True
            left = [t for t in draining if t._phase is not DONE]
            if not left:
                return True
            # Parked on a needed task that is gone: nothing can release it now that
            # the supervisor takes no new tasks.
            stranded = find_stranded(life)
            return all(t in stranded for t in left)

        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        with life.lock:
            life.waiter.wait(drained, remaining)
        left = [t for t in draining if t._phase is not DONE]
        if left and not cut():
            log.warning(
                "%s %r: %d draining task%s %s; cancelling",
                life.kind, life.name, len(left), "" if len(left) == 1 else "s",
                f"still running after {timeout:g} s" if timeout is not None
                else "waiting for what they need, which ended",
            )
    finally:
        with life.lock:
            life.draining = False
            life.notify()


def stop_in_order(
    life: Lifecycle, cause: BaseException, keep: set[Task[Any]] | None = None,
    deadline: float | None = None,
) -> None:
    """Reverse dependency order: cancel the tasks nothing live needs, wait for them,
    then the tasks they needed, and so on. Tasks in ``keep`` are left running. Past
    ``deadline`` (the drain's), stop waiting: the caller goes on, and its final stop
    cancels (and waits for) what is left."""
    while True:
        with life.lock:
            layer = next_layer(life, keep)
        if not layer:
            return
        _cancel_paced(life, layer, cause, deadline)
        left = None if deadline is None else deadline - time.monotonic()
        with life.lock:
            if not life.waiter.wait(_all_done(layer), left):
                return


def _cancel_paced(
    life: Lifecycle, layer: list[Task[Any]], cause: BaseException, deadline: float | None
) -> None:
    # Cancelling thousands of running tasks at once wakes thousands of threads that
    # all want the group's lock and the GIL; the stopping thread, which needs both for
    # each cancel, then waits behind them (10,000 tasks took 20 s, against 10 s for as
    # many plain threads on one Event). So cancel a batch, and let most of it end
    # before the next, waiting at most _STOP_BATCH_WAIT. A batch none of whose tasks
    # ended by then (they ignore their tokens) doubles the next one: tasks that end when
    # told are not held up for long behind ones that do not. A batch that ends slowly
    # (a loaded machine) keeps the pace: growing then would bring the storm back just
    # when the machine can least afford it.
    size = _STOP_BATCH
    i, n = 0, len(layer)
    while i < n:
        batch = layer[i:i + size]
        for t in batch:
            t.cancel(cause)
        i += len(batch)
        if i >= n:
            return
        wait = _STOP_BATCH_WAIT
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        with life.lock:
            if not life.waiter.wait(_mostly_done(batch), wait) and not any(
                t._phase is DONE for t in batch
            ):
                size *= 2  # not one ended: they ignore their tokens (a slow machine ends some)


def _all_done(tasks: list[Task[Any]]) -> Callable[[], bool]:
    return lambda: all(t._phase is DONE for t in tasks)


def _mostly_done(tasks: list[Task[Any]]) -> Callable[[], bool]:
    most = len(tasks) - len(tasks) // 4
    return lambda: sum(t._phase is DONE for t in tasks) >= most
