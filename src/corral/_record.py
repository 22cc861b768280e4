"""A task's record (``TaskRecord``, the fields only the lifecycle writes), the phases and
the public state each shows, the causes the lifecycle gives, and the effects an
attempt's end returns."""

from __future__ import annotations

import enum

from ._errors import Cancelled, LeaseLost
from ._policy import Restart

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections import deque
    from typing import Any

    from ._clock import TimerHandle
    from ._task import Task
    from ._token import Token

__all__ = [
    "ATTEMPT_ENDED", "COMES_BACK", "FINAL", "DependencyLost", "Ending", "Phase", "TaskRecord",
    "TaskState",
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


class TaskRecord:
    """What the lifecycle keeps for one task. ``Task`` (the public handle) is one; only
    ``_lifecycle`` writes these fields (the handle reads them)."""

    __slots__ = (
        "_attempt_started",
        "_cancel_cause",
        "_consecutive",
        "_error",
        "_ever_ready",
        "_last_error",
        "_outcome",
        "_phase",
        "_ready",
        "_ready_value",
        "_replaced_by",
        "_replaces",
        "_restart_times",
        "_result",
        "_started_at",
        "_timer",
        "_token_used",
        "attempts",
        "token",
    )

    def _init_record(self, token: Token) -> None:
        self._phase = ADDING
        self._outcome: TaskState | None = None
        self.attempts = 0
        self.token = token
        self._token_used = False
        self._cancel_cause: BaseException | None = None
        self._consecutive = 0
        self._error: BaseException | None = None
        self._last_error: BaseException | None = None
        self._ready = False  # ready in the current attempt (what needs= waits for)
        self._ever_ready = False  # ready in some attempt (what wait_ready returns on)
        self._ready_value: Any = None
        self._replaced_by: Task[Any] | None = None
        self._replaces: Task[Any] | None = None
        self._restart_times: deque[float] | None = None
        self._result: Any = None
        self._timer: TimerHandle | None = None
        self._attempt_started = 0.0
        self._started_at: float | None = None

    @property
    def state(self) -> TaskState:
        """PENDING, RUNNING, BACKOFF, then SUCCEEDED, FAILED or CANCELLED."""
        return self._outcome or STATE_OF[self._phase]
