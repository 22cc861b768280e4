"""The handle of one unit of work, and the current-task context."""

from __future__ import annotations

import contextvars
import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import Cancelled, NotReady, describe, safe_repr
from ._policy import Backoff, Restart
from ._token import Token, _cancelled_from, _check_seconds, as_cause, check_timeout

if TYPE_CHECKING:
    from ._clock import TimerHandle
    from ._coordinator import Coordinator, Lease
    from ._group import Group
    from ._snapshot import TaskSnapshot

__all__ = ["Task", "TaskState", "current_task", "current_token", "ready"]

T = TypeVar("T")


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
        return self in _FINAL


_FINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})

# The cause an attempt's token gets when the attempt ends by itself (so that on_cancel
# callbacks release what it held). It is bookkeeping, not a reason: Task.cause hides it.
ATTEMPT_ENDED = Cancelled("the attempt ended")


# What this thread is busy with for corral: ``group``, the group whose task attempt it
# runs (or the supervisor it is stopping); ``finishing``, the task whose end hooks it
# runs. A wait on either from this thread would wait for itself.
_busy = threading.local()

_current: contextvars.ContextVar[Task[Any] | None] = contextvars.ContextVar(
    "corral_current_task", default=None
)


class Singleton:
    """What a singleton task carries besides a task's state: its coordinator, whether
    it campaigns (PENDING to the outside), the lease it holds, and the lease's state."""

    __slots__ = ("campaigning", "coordinator", "lease", "state")

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.campaigning = False
        self.lease: Lease | None = None
        self.state: str | None = None  # campaigning, holding, lost, released


class Task(Generic[T]):
    """The handle of one unit of work in a group. Made by ``Group.spawn``."""

    __slots__ = (
        "_attempt_started",
        "_base_ctx",
        "_cancel_cause",
        "_child_groups",
        "_consecutive",
        "_ctx",
        "_done",
        "_error",
        "_ever_ready",
        "_hold",
        "_in_map",
        "_last_error",
        "_ready",
        "_ready_value",
        "_replaced_by",
        "_replaces",
        "_restart_times",
        "_result",
        "_single",
        "_slot",
        "_started_at",
        "_state",
        "_thread_ident",
        "_timer",
        "_token_used",
        "args",
        "attempts",
        "background",
        "backoff",
        "drain",
        "fn",
        "group",
        "max_restarts",
        "meta",
        "name",
        "needs",
        "on_finish",
        "restart",
        "signals_ready",
        "token",
    )

    def __init__(
        self,
        group: Group,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        name: str,
        meta: Mapping[str, Any] | None,
        background: bool,
        restart: Restart,
        backoff: Backoff | None,
        max_restarts: tuple[int, float] | None,
        needs: tuple[str, ...],
        on_finish: Callable[[Task[T]], object] | None,
        signals_ready: bool,
        in_map: bool = False,
        singleton: Coordinator | None = None,
        drain: bool = False,
    ) -> None:
        self.group = group
        self.fn = fn
        self.args = args
        self.name = name
        self.meta: dict[str, Any] = dict(meta) if meta else {}
        self.background = background
        self.restart = restart
        self.backoff = backoff
        self.max_restarts = max_restarts
        self.needs = needs
        self.on_finish = on_finish
        self.signals_ready = signals_ready
        self.drain = drain
        self._started_at: float | None = None
        self._state = TaskState.PENDING
        self.attempts = 0
        self.token: Token = group._new_task_token()
        self._token_used = False
        self._base_ctx = contextvars.copy_context()
        # Where hooks and corral's log records about this task run: the context of its
        # latest attempt (so log context and tracing spans flow into them too).
        self._ctx = self._base_ctx
        self._cancel_cause: BaseException | None = None
        self._child_groups: dict[Group, None] | None = None  # groups it made, until closed
        self._consecutive = 0
        self._done = False
        # True while a thread runs this task's hooks between two lock sections (on_added
        # after spawn; on_restart after an attempt): others only note a cancellation
        # then, and that thread applies it, so hooks keep their order.
        self._hold = False
        self._error: BaseException | None = None
        self._last_error: BaseException | None = None
        self._in_map = in_map
        self._ready = False  # ready in the current attempt (what needs= waits for)
        self._ever_ready = False  # ready in some attempt (what wait_ready returns on)
        self._ready_value: Any = None
        self._replaced_by: Task[Any] | None = None
        self._replaces: Task[Any] | None = None
        self._restart_times: deque[float] | None = None
        self._result: Any = None
        self._slot = False
        self._thread_ident: int | None = None
        self._timer: TimerHandle | None = None
        self._attempt_started = 0.0
        self._single = Singleton(singleton) if singleton is not None else None

    def __repr__(self) -> str:
        extra = f" attempts={self.attempts}"
        if self._last_error is not None:
            extra += f" last_error={safe_repr(self._last_error)}"
        single = self._single
        if single is not None and single.state is not None:
            extra += f" lease={single.state}"
            if single.lease is not None and single.state == "holding":
                extra += f"(fence {single.lease.fence})"
        return f"<corral.Task {self.name!r} {self.state.name}{extra}>"

    @property
    def state(self) -> TaskState:
        """PENDING, RUNNING, BACKOFF, then SUCCEEDED, FAILED or CANCELLED."""
        single = self._single
        if single is not None and single.campaigning:
            return TaskState.PENDING  # (RUNNING inside: its attempt campaigns)
        return self._state

    @property
    def singleton(self) -> bool:
        """Whether the task runs only while this process holds its lease."""
        return self._single is not None

    @property
    def lease(self) -> Lease | None:
        """The lease this singleton holds while it runs, else None."""
        return self._single.lease if self._single is not None else None

    @property
    def lease_state(self) -> str | None:
        """A singleton's lease: ``"campaigning"``, ``"holding"``, ``"lost"`` or
        ``"released"`` (None for other tasks, and before the first campaign)."""
        return self._single.state if self._single is not None else None

    @property
    def done(self) -> bool:
        """True once the task has ended for good and its hooks have run."""
        return self._done

    @property
    def last_error(self) -> BaseException | None:
        """The error of the most recent failed attempt (even if it was restarted)."""
        return self._last_error

    @property
    def cause(self) -> BaseException | None:
        """Why the task was cancelled (``corral.Stopped``, ``corral.Replaced``, the
        failure that cancelled its group, a ``cancel()``'s cause...), or None if it was
        not. Right in every state: a task cancelled while pending or backing off says
        why, not that its last attempt ended."""
        cause = self._cancel_cause
        if cause is not None:
            return cause
        if self._state is TaskState.CANCELLED:
            return self._error
        cause = self.token._cause
        return None if cause is ATTEMPT_ENDED else cause

    @property
    def draining(self) -> bool:
        """True while a graceful stop waits for this task (spawned with ``drain=True``)
        to finish instead of cancelling it."""
        return self.drain and not self._done and self.group._draining

    def cancel(self, cause: BaseException | str | None = None) -> None:
        """Cancel the task: a pending or backing-off task ends at once without running;
        a running one has its token cancelled. Idempotent; restarts stop."""
        self.group._cancel_task(self, as_cause(cause, f"task {self.name!r} cancelled"))

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has ended (and its hooks ran). Never raises its error.

        Raises ``TimeoutError`` if it is still running after ``timeout`` seconds.
        """
        self._join(timeout, "join")

    def _join(self, timeout: float | None, what: str) -> None:
        timeout = check_timeout("timeout", timeout)
        # (Inside its own end hooks the task has ended but is not yet done: return.)
        if not self._done and getattr(_busy, "finishing", None) is not self:
            self._not_self(what)
            self.group._wait_for(lambda: self._done, timeout, f"task {self.name!r}")

    def _not_self(self, what: str) -> None:
        if _current.get() is self:
            raise RuntimeError(
                f"task {self.name!r} called {what}() on itself: it would wait for itself forever"
            )

    def result(self, timeout: float | None = None) -> T:
        """The return value, or raise the task's error (``Cancelled`` if it was cancelled)."""
        self._join(timeout, "result")
        if self._state is TaskState.SUCCEEDED:
            return self._result  # type: ignore[no-any-return]
        if self._state is TaskState.FAILED:
            assert self._error is not None
            raise self._error
        raise _cancelled_from(self._error or self.token.cause or Cancelled("cancelled"))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's failure, or None if it did not fail (waits like ``join``)."""
        self._join(timeout, "exception")
        return self._error if self._state is TaskState.FAILED else None

    def wait_ready(self, timeout: float | None = None) -> Any:
        """Wait until the task is ready, and return the value it gave to ``corral.ready()``.

        A task not spawned with ``signals_ready=True`` is ready once it runs. Raises
        :class:`corral.NotReady` if the task ends before it is ready.
        """
        timeout = check_timeout("timeout", timeout)
        if not self._ever_ready and self._state not in _FINAL:
            self._not_self("wait_ready")
        self.group._wait_for(
            lambda: self._ever_ready or self._state in _FINAL, timeout, f"task {self.name!r} ready"
        )
        if self._ever_ready:
            return self._ready_value
        err = NotReady(f"task {self.name!r} ended ({self._state.value}) before it was ready")
        raise err from (self._error or self.token.cause)

    def _snapshot(self) -> TaskSnapshot:
        groups = self._child_groups or ()
        state = self.state
        cause = self.cause
        error = self._last_error
        snap: TaskSnapshot = {
            "name": self.name,
            "state": state.value,
            "attempts": self.attempts,
            "started": self._started_at if state is TaskState.RUNNING else None,
            "waiting_for": self.group._waiting_for(self) if state is TaskState.PENDING else None,
            "cause": describe(cause) if cause is not None else None,
            "last_error": describe(error) if error is not None else None,
            "meta": {str(k): _json_safe(v) for k, v in self.meta.items()},
            "background": self.background,
            "drain": self.drain,
            "draining": self.draining,
            "children": [g.snapshot() for g in list(groups) if not g._closed],
        }
        single = self._single
        if single is not None:
            lease = single.lease
            owner = lease.owner if lease is not None else None
            if owner is None and single.state == "campaigning":
                owner = _holder_seen(single.coordinator, self.name)
            remaining = lease.remaining() if lease is not None else None
            snap["lease"] = {
                "state": single.state,
                "coordinator": single.coordinator.describe(),
                "fence": lease.fence if lease is not None else None,
                "owner": owner,
                "remaining": remaining if remaining is None or math.isfinite(remaining) else None,
            }
        return snap


def _holder_seen(coordinator: Coordinator, name: str) -> str | None:
    """Who holds a lease this process campaigns for, as its campaign last saw it (no
    I/O). None while nobody holds it, or while a run of this process still does."""
    try:
        seen = coordinator.seen(name)
    except Exception:  # a coordinator of one's own: a snapshot must not fail for it
        return None
    return seen.owner if seen is not None else None


def _json_safe(value: Any) -> Any:
    """A snapshot's copy of a meta value: JSON types as they are, the rest as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return safe_repr(value)


def current_task() -> Task[Any] | None:
    """The task running in this thread (context), or None."""
    return _current.get()


def current_token() -> Token:
    """The running task's token; outside any task, a fresh root token nobody cancels."""
    task = _current.get()
    if task is None:
        return Token()
    return task.token


def ready(value: Any = None) -> None:
    """Say that the running task is ready (see ``signals_ready=``); ``value`` is what
    ``wait_ready()`` returns. Outside a task it does nothing."""
    task = _current.get()
    if task is not None:
        task.group._set_ready(task, value)


def sleep(seconds: float) -> bool:
    """Sleep on the current task's token: False as soon as it is cancelled.

    Outside any task this is a plain sleep (returns True).
    """
    task = _current.get()
    if task is None:
        _check_seconds("seconds", seconds)
        time.sleep(seconds)
        return True
    single = task._single
    lease = single.lease if single is not None else None
    if lease is None:
        return task.token.sleep(seconds)
    # A singleton: never sleep past its lease's deadline, and say False if the lease
    # went while we slept (after SIGSTOP/SIGCONT this thread may wake before the
    # renewal thread notices).
    _check_seconds("seconds", seconds)
    left = lease.remaining()
    if left < seconds:
        task.token.sleep(left)
        return _held(task, lease) and task.token.sleep(seconds - left) and _held(task, lease)
    return task.token.sleep(seconds) and _held(task, lease)


def _held(task: Task[Any], lease: Lease) -> bool:
    """Whether the singleton still holds its lease. If not, its token is cancelled by
    the time this returns: the thread that noticed the loss first (the renewal thread,
    say) may still be on its way to cancel it, and the task must not see "lease gone"
    with a token that is not (yet) cancelled."""
    if lease.valid():
        return True
    lost = lease.lost
    if lost is not None:
        task.token._cancel(lost)  # (idempotent: the first cause wins, the same one)
    return False


def cancelled() -> bool:
    """Whether the current task's token is cancelled (False outside tasks)."""
    task = _current.get()
    if task is None:
        return False
    single = task._single
    if single is not None and single.lease is not None and not _held(task, single.lease):
        return True  # (losing it cancelled the token)
    return task.token.cancelled


def check() -> None:
    """Raise ``corral.Cancelled`` if the current task's token is cancelled (or, in a
    singleton, its lease is lost)."""
    task = _current.get()
    if task is not None:
        single = task._single
        if single is not None and single.lease is not None:
            _held(task, single.lease)  # a lease past its deadline is lost now: the token is cancelled
        task.token.check()


for _cls in (Task, TaskState):
    _cls.__module__ = "corral"
