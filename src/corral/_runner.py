"""The runner interface: how the attempts of a group's tasks run.

The lifecycle (``_lifecycle``) decides *what* runs and the driver (``_driver``) applies
its effects; a runner decides *how*: on a worker thread (``_threads.ThreadRunner``, the
default), and next on an event loop. An attempt, whatever runs it, goes through the
same steps, each a call into the driver or one of the runner's blocking steps:

1. ``campaign`` (a singleton only): block until this process holds the task's lease;
2. ``life.begin_attempt`` (ready now unless it says so itself), then the task's
   function in the attempt's context;
3. ``close_groups``: block until the groups the task made are closed;
4. ``end_lease`` (a singleton only): stop renewing, release;
5. ``driver.end_attempt``, which returns the tasks that end released: the runner runs
   them (a thread runner may run the first itself: a continuation).
"""

from __future__ import annotations

import abc
from types import FrameType, TracebackType

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._campaign import LeaseRenewer
    from ._lifecycle import Lifecycle
    from ._record import TaskState
    from ._task import Task

__all__ = ["Runner", "chosen", "using"]


class Runner(abc.ABC):
    """Runs task attempts for groups. One runner serves many groups."""

    @abc.abstractmethod
    def start(self, life: Lifecycle, tasks: list[Task[Any]]) -> None:
        """Start an attempt of each task (released by ``life``; not under its lock)."""

    @abc.abstractmethod
    def campaign(self, life: Lifecycle, task: Task[Any]) -> LeaseRenewer | None:
        """Blocking step: hold the singleton's lease (None: cancelled first)."""

    @abc.abstractmethod
    def close_groups(
        self, task: Task[Any], outcome: TaskState, exc: BaseException | None
    ) -> tuple[TaskState, BaseException | None]:
        """Blocking step: wait for (or, after a failure, cancel and wait for) the groups
        the attempt made; the attempt's outcome, with their failures."""

    @abc.abstractmethod
    def end_lease(self, life: Lifecycle, task: Task[Any], renewer: LeaseRenewer) -> None:
        """Blocking step: stop renewing the singleton's lease, and release it."""

    @abc.abstractmethod
    def cancel(self, task: Task[Any], cause: BaseException) -> None:
        """Deliver a cancellation to the task's running attempt."""

    @abc.abstractmethod
    def stack(self, task: Task[Any]) -> FrameType | list[FrameType] | None:
        """Where the task's running attempt is now: a thread's innermost frame, or a
        coroutine's frames, outermost first (None if it is not running)."""

    def release_worker_early(self) -> None:  # noqa: B027 - a hint: runners without workers ignore it
        """Called under a group's lock when the calling attempt has nothing left to do
        but return (a thread runner offers its worker for new work: see ``_pool``)."""


_chosen: Runner | None = None


def chosen() -> Runner | None:
    """The runner that new groups must use, if one was chosen (else threads)."""
    return _chosen


class using:
    """``with using(runner):`` groups made inside the block use ``runner`` (tests of
    another runner)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._previous: Runner | None = None

    def __enter__(self) -> Runner:
        global _chosen
        self._previous, _chosen = _chosen, self._runner
        return self._runner

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _chosen
        _chosen = self._previous
