"""What a task's record holds besides its fields (``_lifecycle.TaskRecord``): the phases
and the public state each shows, the causes the lifecycle gives, and the effects an
attempt's end returns."""

from __future__ import annotations

import enum

from ._errors import Cancelled, LeaseLost
from ._policy import Restart

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._task import Task

__all__ = [
    "ATTEMPT_ENDED", "COMES_BACK", "FINAL", "DependencyLost", "Ending", "Phase", "TaskState",
]


class TaskState(enum.StrEnum):
    """Where a task is in its life. The last three are final."""

    # queued: supervisor not started, group at its limit, waiting for needs, or (a
    # singleton) campaigning for its lease
    PENDING = "pending"
    RUNNING = "running"
    BACKOFF = "backoff"  # waiting to restart
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL


FINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


class Phase(enum.Enum):
    """A task's place in its group's lifecycle (see the table in this module's doc)."""

    ADDING = "adding"
    PARKED = "parked"
    QUEUED = "queued"
    CAMPAIGNING = "campaigning"
    RUNNING = "running"
    RESTARTING = "restarting"
    BACKOFF = "backoff"
    ENDED = "ended"
    DONE = "done"


ADDING, PARKED, QUEUED = Phase.ADDING, Phase.PARKED, Phase.QUEUED
CAMPAIGNING, RUNNING, RESTARTING = Phase.CAMPAIGNING, Phase.RUNNING, Phase.RESTARTING
BACKOFF, ENDED, DONE = Phase.BACKOFF, Phase.ENDED, Phase.DONE
# The public state of each phase before the task ends (then it is the outcome).
STATE_OF = {
    ADDING: TaskState.PENDING, PARKED: TaskState.PENDING, QUEUED: TaskState.PENDING,
    CAMPAIGNING: TaskState.PENDING, RUNNING: TaskState.RUNNING,
    RESTARTING: TaskState.BACKOFF, BACKOFF: TaskState.BACKOFF,
}

# The cause an attempt's token gets when the attempt ends by itself (so that on_cancel
# callbacks release what it held). It is bookkeeping, not a reason: Task.cause hides it.
ATTEMPT_ENDED = Cancelled("the attempt ended")

class DependencyLost(Cancelled):
    """Cause given to a dependent whose needed task ended (it will run again)."""


# Causes after which a task waits to run again rather than ending: what it needs ended,
# or (a singleton) it lost its lease.
COMES_BACK = (DependencyLost, LeaseLost)


def takes_slot(task: Task[Any]) -> bool:
    # Background tasks take no slot: a limit caps the foreground work, and a
    # background task holding the last slot would keep the group from ever finishing
    # (it is only cancelled once the foreground is done). A singleton's attempt may
    # campaign for as long as another process holds its lease: it takes none either.
    return not task.background and task._lease_state is None


def wants_restart(policy: Restart, kind: TaskState) -> bool:
    if policy is Restart.NEVER or kind is TaskState.CANCELLED:
        return False
    if policy is Restart.ALWAYS:
        return True
    if policy is Restart.ON_FAILURE:
        return kind is TaskState.FAILED
    return kind is TaskState.SUCCEEDED


class Ending:
    """The effects of an attempt's end that took the general path (see ``attempt_ended``)."""

    __slots__ = ("dependents", "done", "ended", "exc", "final", "released", "restart_delay", "resume_at")

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc  # what the task ends with (a RestartLimitExceeded may replace it)
        self.released: list[Task[Any]] = []
        self.ended: list[Task[Any]] = []  # other tasks that ended: their hooks must run
        self.dependents: list[Task[Any]] = []  # running tasks that needed it: cancel them
        self.restart_delay: float | None = None  # a restart to announce (on_restart)
        self.resume_at = 0.0
        self.final: TaskState | None = None  # it ended for good, so
        self.done = False  # ...and needs no end hook: it is DONE already
