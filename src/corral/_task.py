"""The handle of one unit of work, and the current-task context."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Generator, Mapping
from types import FrameType, GenericAlias

from . import _driver
from ._context import busy as _busy
from ._context import current as _current
from ._context import not_on_a_loop, within
from ._errors import Cancelled, NotReady, safe_repr
from ._policy import Backoff, Restart
from ._record import ATTEMPT_ENDED, DONE, TaskRecord, TaskState
from ._token import (
    SLEEP_AWAITED,
    Token,
    _cancelled_from,
    _check_seconds,
    as_cause,
    check_timeout,
)
from ._waiting import OwnWait

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar

    from ._coordinator import Lease
    from ._group import Group
    from ._lifecycle import Lifecycle
    from ._runner import Runner
    from ._singleton import LeaseState
    from ._snapshot import TaskSnapshot

__all__ = ["Task", "TaskState", "current_task", "current_token", "ready"]

if TYPE_CHECKING:
    T = TypeVar("T")

    class _Handle(TaskRecord, Generic[T]):
        pass
else:  # (Task[int] works at run time without typing: a generic alias, as list[int])
    T = None

    class _Handle(TaskRecord):
        __slots__ = ()
        __class_getitem__ = classmethod(GenericAlias)


class Task(_Handle[T]):
    """The handle of one unit of work in a group. Made by ``Group.spawn``."""

    __slots__ = (
        "_base_ctx",
        "_child_groups",
        "_ctx",
        "_in_map",
        "_lease_state",
        "_life",
        "_meta",
        "_runner",
        "args",
        "background",
        "backoff",
        "drain",
        "fn",
        "group",
        "max_restarts",
        "name",
        "needs",
        "on_finish",
        "restart",
        "signals_ready",
    )

    def __init__(
        self,
        group: Group,
        life: Lifecycle,
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
        single: LeaseState | None = None,
        drain: bool = False,
        runner: Runner | None = None,
    ) -> None:
        self._init_record(life.new_task_token())
        self.group = group
        self._life = life
        self.fn = fn
        self.args = args
        self.name = name
        self._meta: dict[str, Any] | None = dict(meta) if meta else None
        self.background = background
        self.restart = restart
        self.backoff = backoff
        self.max_restarts = max_restarts
        self.needs = needs
        self.on_finish = on_finish
        self.signals_ready = signals_ready
        self.drain = drain
        self._base_ctx = contextvars.copy_context()
        # Where hooks and corral's log records about this task run: the context of its
        # latest attempt (so log context and tracing spans flow into them too).
        self._ctx = self._base_ctx
        self._child_groups: dict[Group, None] | None = None  # groups it made, until closed
        self._in_map = in_map
        self._lease_state = single
        # What runs its attempts: the group's runner (threads), or, for a coroutine
        # function, the event loop's.
        self._runner: Runner = runner or life.runner

    @property
    def meta(self) -> dict[str, Any]:
        """What was given as ``meta=`` (a dict of the task's own: it may be changed)."""
        meta = self._meta
        if meta is None:
            meta = self._meta = {}  # (made on first use: most tasks have none)
        return meta

    @meta.setter
    def meta(self, value: dict[str, Any]) -> None:
        self._meta = value

    # -- for the runner and the tree ---------------------------------------------------

    def _new_context(self) -> contextvars.Context:
        """The context of a new attempt: a copy of the spawner's. A task that can run
        only once (no restart, nothing it needs, no lease to lose) runs in the
        spawner's copy itself: nothing needs it pristine afterwards."""
        if self.restart is Restart.NEVER and not self.needs and self._lease_state is None:
            ctx = self._ctx = self._base_ctx
        else:
            ctx = self._ctx = self._base_ctx.copy()
        return ctx

    def _drop_context(self) -> None:
        """The task is done: let go of the contexts it ran in, which refer back to the
        task (the current task is set in them), so that reference counting, not the
        cyclic garbage collector, frees a finished task."""
        self._ctx = self._base_ctx = _DONE

    def _in_context(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` (a hook call or a log call, which never raise) in the task's
        context, so that log context and tracing spans reach them."""
        try:
            self._ctx.run(fn, *args)
        except RuntimeError:  # that context is entered already (a hook run from the task)
            fn(*args)

    def _adopt(self, group: Group) -> None:
        """A group made by this task (closed before the task ends)."""
        if self._child_groups is None:
            self._child_groups = {}
        self._child_groups[group] = None

    def _disown(self, group: Group) -> None:
        groups = self._child_groups
        if groups is not None:
            groups.pop(group, None)

    def _child_groups_alive(self) -> list[Group]:
        return [g for g in list(self._child_groups or ()) if not g.closed]

    def _child_groups_closed(self) -> None:
        self._child_groups = None

    def _stack(self) -> FrameType | list[FrameType] | None:
        """Where its running attempt is now (None if none runs)."""
        return self._runner.stack(self)

    def __repr__(self) -> str:
        extra = f" attempts={self.attempts}"
        if self._last_error is not None:
            extra += f" last_error={safe_repr(self._last_error)}"
        single = self._lease_state
        if single is not None and single.state is not None:
            extra += f" lease={single.state}"
            if single.lease is not None and single.state == "holding":
                extra += f"(fence {single.lease.fence})"
        return f"<corral.Task {self.name!r} {self.state.name}{extra}>"

    @property
    def singleton(self) -> bool:
        """Whether the task runs only while this process holds its lease."""
        return self._lease_state is not None

    @property
    def lease(self) -> Lease | None:
        """The lease this singleton holds while it runs, else None."""
        return self._lease_state.lease if self._lease_state is not None else None

    @property
    def lease_state(self) -> str | None:
        """A singleton's lease: ``"campaigning"``, ``"holding"``, ``"lost"`` or
        ``"released"`` (None for other tasks, and before the first campaign)."""
        return self._lease_state.state if self._lease_state is not None else None

    @property
    def done(self) -> bool:
        """True once the task has ended for good and its hooks have run."""
        return self._phase is DONE

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
        if self._outcome is TaskState.CANCELLED:
            return self._error
        cause = self.token._cause
        return None if cause is ATTEMPT_ENDED else cause

    @property
    def draining(self) -> bool:
        """True while a graceful stop waits for this task (spawned with ``drain=True``)
        to finish instead of cancelling it."""
        return self.drain and self._phase is not DONE and self._life.draining

    def cancel(self, cause: BaseException | str | None = None) -> None:
        """Cancel the task: a pending or backing-off task ends at once without running;
        a running one has its token cancelled. Idempotent; restarts stop."""
        _driver.cancel_task(self._life, self, as_cause(cause, f"task {self.name!r} cancelled"))

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has ended (and its hooks ran). Never raises its error.

        Raises ``TimeoutError`` if it is still running after ``timeout`` seconds.
        """
        self._join(timeout, "join")

    def _join(self, timeout: float | None, what: str) -> None:
        timeout = check_timeout("timeout", timeout)
        # (Inside its own end hooks the task has ended but is not yet done: return.)
        if self._phase is not DONE and getattr(_busy, "finishing", None) is not self:
            self._not_self(what)
            self._wait(lambda: self._phase is DONE, timeout, f"task {self.name!r}", what)

    def _wait(
        self, predicate: Callable[[], bool], timeout: float | None, what: str, call: str
    ) -> None:
        if not predicate():
            not_on_a_loop(f"Task.{call}()", _AWAITED[call])
        life = self._life
        ready = call == "wait_ready"  # (a readiness is only announced while one waits)
        with self._own_wait(predicate, timeout), life.lock:
            life.ready_waiters += ready
            try:
                if not life.waiter.wait(predicate, timeout):
                    raise TimeoutError(f"{what} still running after {timeout}s")
            finally:
                life.ready_waiters -= ready

    def _own_wait(self, predicate: Callable[[], bool], timeout: float | None) -> OwnWait:
        """A wait without timeout by a task of the same group is watched for a circle
        of waits that no slot of the group's limit can break (see ``OwnWait``)."""
        if timeout is not None:
            return OwnWait(self._life, None)
        return OwnWait(self._life, lambda: None if predicate() else self)

    def _not_self(self, what: str) -> None:
        me = _current.get()
        call = "await" if what == "await" else f"{what}()"
        if me is self:
            raise RuntimeError(
                f"task {self.name!r} called {call} on itself: it would wait for itself forever"
            )
        # A task inside a group this task made (at any depth): this task does not end
        # before that group, which waits for the caller.
        if (
            me is not None and self._child_groups
            and any(within(g) for g in self._child_groups_alive())
        ):
            raise RuntimeError(
                f"task {me.name!r} runs inside a group that task {self.name!r} made: "
                f"{call} on it would wait for itself forever"
            )

    def __await__(self) -> Generator[Any, None, T]:
        """``await task``: wait without blocking the loop, then the result (or raise
        the task's error; ``Cancelled`` if it was cancelled, never the awaiting
        coroutine's own ``CancelledError``). It only watches: a cancellation of the
        awaiting coroutine (``asyncio.wait_for``'s timeout) ends the wait, not the
        task, which its group owns."""
        return self._result_async().__await__()

    async def _result_async(self) -> T:
        await self._wait_async(lambda: self._phase is DONE, None, "await")
        return self.result()  # (done: it does not wait)

    async def _wait_async(
        self, predicate: Callable[[], bool], timeout: float | None, what: str
    ) -> None:
        if predicate() or getattr(_busy, "finishing", None) is self:
            return
        self._not_self(what)
        life = self._life
        ready = what == "wait_ready"  # (a readiness is only announced while one waits)
        with self._own_wait(predicate, timeout):
            with life.lock:
                life.ready_waiters += ready
            try:
                if not await life.waiter.wait_async(predicate, timeout):
                    raise TimeoutError(f"task {self.name!r} still running after {timeout}s")
            finally:
                with life.lock:
                    life.ready_waiters -= ready

    def result(self, timeout: float | None = None) -> T:
        """The return value, or raise the task's error (``Cancelled`` if it was cancelled)."""
        self._join(timeout, "result")
        if self._outcome is TaskState.SUCCEEDED:
            return self._result  # type: ignore[no-any-return]
        if self._outcome is TaskState.FAILED:
            assert self._error is not None
            raise self._error
        raise _cancelled_from(self._error or self.token.cause or Cancelled("cancelled"))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's failure, or None if it did not fail (waits like ``join``)."""
        self._join(timeout, "exception")
        return self._error if self._outcome is TaskState.FAILED else None

    def wait_ready(self, timeout: float | None = None) -> Any:
        """Wait until the task is ready, and return the value it gave to ``corral.ready()``.

        A task not spawned with ``signals_ready=True`` is ready once it runs. Raises
        :class:`corral.NotReady` if the task ends before it is ready.
        """
        timeout = check_timeout("timeout", timeout)
        if not self._ever_ready and self._outcome is None:
            self._not_self("wait_ready")
        self._wait(self._ready_or_ended, timeout, f"task {self.name!r} ready", "wait_ready")
        return self._ready_answer()

    def _ready_or_ended(self) -> bool:
        return self._ever_ready or self._outcome is not None

    def _ready_answer(self) -> Any:
        if self._ever_ready:
            return self._ready_value
        err = NotReady(f"task {self.name!r} ended ({self.state.value}) before it was ready")
        raise err from (self._error or self.cause)  # (never the bookkeeping ATTEMPT_ENDED)

    def _snapshot(self) -> TaskSnapshot:
        from ._snapshot import task_snapshot  # (loaded on first use)

        return task_snapshot(self)


_DONE = contextvars.Context()  # (where a done task's late log records run: an empty context)

# What a coroutine awaits instead of each blocking wait of a task (see not_on_a_loop).
_AWAITED = {
    "join": "await task.join() (an AsyncTask) or await task",
    "result": "await task",
    "exception": "await task.join() (an AsyncTask), then task.exception()",
    "wait_ready": "await task.wait_ready() (an AsyncTask)",
}


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
        _driver.set_ready(task._life, task, value)


def sleep(seconds: float) -> bool:
    """Sleep on the current task's token: False as soon as it is cancelled.

    Outside any task this is a plain sleep (returns True).
    """
    _check_seconds("seconds", seconds)
    if seconds > 0:  # (here, by its name; the token's _sleep checks neither again)
        not_on_a_loop("corral.sleep()", SLEEP_AWAITED)
    task = _current.get()
    if task is None:
        time.sleep(seconds)
        return True
    single = task._lease_state
    lease = single.lease if single is not None else None
    if lease is None:
        return task.token._sleep(seconds)
    # A singleton: never sleep past its lease's deadline, and say False if the lease
    # went while we slept (after SIGSTOP/SIGCONT this thread may wake before the
    # renewal thread notices).
    token = task.token
    left = lease.remaining()  # (>= 0)
    if left < seconds:
        token._sleep(left)
        return _held(task, lease) and token._sleep(seconds - left) and _held(task, lease)
    return token._sleep(seconds) and _held(task, lease)


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
    single = task._lease_state
    if single is not None and single.lease is not None and not _held(task, single.lease):
        return True  # (losing it cancelled the token)
    return task.token.cancelled


def check() -> None:
    """Raise ``corral.Cancelled`` if the current task's token is cancelled (or, in a
    singleton, its lease is lost)."""
    task = _current.get()
    if task is not None:
        single = task._lease_state
        if single is not None and single.lease is not None:
            _held(task, single.lease)  # a lease past its deadline is lost now: the token is cancelled
        task.token.check()


for _cls in (Task, TaskState):
    _cls.__module__ = "corral"
