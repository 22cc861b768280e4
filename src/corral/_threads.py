"""The thread runner: each attempt runs on a worker of the process's pool (``_pool``).

A worker that ends an attempt runs the first task that end released itself (a
continuation: no pool round trip, and no new thread while this one is busy), and
hands the others to the pool.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import CoroutineType, FrameType

from . import _driver
from ._context import busy as _busy
from ._context import current as _current
from ._policy import call_hook
from ._pool import get_pool, release_worker_early
from ._record import TaskState
from ._runner import Runner
from ._validate import qualname

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._campaign import LeaseRenewer
    from ._lifecycle import Lifecycle
    from ._task import Task

__all__ = ["ThreadRunner", "ThreadSteps", "close_groups", "run_attempt"]

log = logging.getLogger("corral")


class ThreadSteps(Runner):
    """The blocking steps of an attempt, done in the calling thread: the attempt's own
    (the thread runner), or a worker the asyncio runner hands them to, awaited."""

    def campaign(self, life: Lifecycle, task: Task[Any]) -> LeaseRenewer | None:
        from ._singleton import campaign_for  # (loaded with the first singleton)

        return campaign_for(life, task)

    def close_groups(
        self, task: Task[Any], outcome: TaskState, exc: BaseException | None
    ) -> tuple[TaskState, BaseException | None]:
        return close_groups(task, outcome, exc)

    def end_lease(self, life: Lifecycle, task: Task[Any], renewer: LeaseRenewer) -> None:
        from ._singleton import end_lease

        end_lease(life, task, renewer)

    def cancel(self, task: Task[Any], cause: BaseException) -> None:
        task.token.cancel(cause)


class ThreadRunner(ThreadSteps):
    """Runs attempts on the worker pool's threads."""

    def __init__(self) -> None:
        self._submit = get_pool().submit
        self._threads: dict[Task[Any], int] = {}  # running attempt -> its thread's ident

    def start(self, life: Lifecycle, tasks: list[Task[Any]]) -> None:
        submit = self._submit
        for task in tasks:
            # (a map's tasks are at most its group's limit: they get threads at once)
            submit(_AttemptChain(self, life, task), eager=task._in_map)

    def stack(self, task: Task[Any]) -> FrameType | None:
        ident = self._threads.get(task)
        return None if ident is None else sys._current_frames().get(ident)

    # (the pool's own function: called under the group's lock at the end of attempts)
    release_worker_early = staticmethod(release_worker_early)


class _AttemptChain:
    """What the pool runs: an attempt of a task, then (a continuation) the first task
    each end released. A small callable, no closure."""

    __slots__ = ("life", "runner", "task")

    def __init__(self, runner: ThreadRunner, life: Lifecycle, task: Task[Any]) -> None:
        self.runner = runner
        self.life = life
        self.task = task

    def __call__(self) -> None:
        runner, life, task = self.runner, self.life, self.task
        _busy.group = life.group
        thread = threading.current_thread()
        threads = runner._threads
        ident = threading.get_ident()
        try:
            while True:
                thread.name = f"corral:{task.name}"
                threads[task] = ident  # (what stack() looks up)
                try:
                    released = run_attempt(runner, life, task)
                finally:
                    del threads[task]
                if not released:
                    return
                # This worker runs the next released task (of the same group) itself,
                # rather than a pool round trip (which would start a thread: we are not
                # idle).
                task = released[0]
                if task._runner is not runner:  # (a coroutine: its loop runs it)
                    _driver.start(life, released)
                    return
                if len(released) > 1:
                    _driver.start(life, released[1:])
        finally:
            _busy.group = None


def run_attempt(runner: Runner, life: Lifecycle, task: Task[Any]) -> list[Task[Any]]:
    """One attempt, in the calling thread: the steps ``_runner`` lists, through
    ``runner``'s blocking steps. Returns the tasks its end released."""
    renewer: LeaseRenewer | None = None
    if task._lease_state is not None:
        try:
            renewer = runner.campaign(life, task)
        except BaseException as e:  # pragma: no cover - campaign() catches backend errors
            return _driver.end_attempt(life, task, TaskState.FAILED, None, e)
        if renewer is None:  # cancelled while campaigning: it never ran
            return _driver.end_attempt(life, task, TaskState.CANCELLED, None, None)
    token = task.token
    if life.begin_attempt(task):  # (ready once running, unless it says so itself)
        _driver.ready_said(life, task)
    outcome: TaskState
    value: Any = None
    exc: BaseException | None = None
    try:
        value = task._new_context().run(_call_function, task)
    except _driver.CANCELLED_ENDS as e:
        outcome, exc = TaskState.CANCELLED, e
    except BaseException as e:
        outcome, exc = TaskState.FAILED, e
    else:
        outcome = TaskState.SUCCEEDED if token._cause is None else TaskState.CANCELLED
    if task._child_groups:
        outcome, exc = runner.close_groups(task, outcome, exc)
    if renewer is not None:
        # Only now, with the guarded work (and the groups it made) returned.
        runner.end_lease(life, task, renewer)
    return _driver.end_attempt(life, task, outcome, value, exc)


def _call_function(task: Task[Any]) -> Any:
    # Runs inside the attempt's context copy.
    _current.set(task)
    on_started = task.group.hooks.on_started
    if on_started is not None:
        call_hook(on_started, task)
    return call_function(task)


def call_function(task: Task[Any]) -> Any:
    """The task's (plain) function, called: its value. (A stop report's stacks start
    below this frame: see _stacks.)"""
    value = task.fn(*task.args)
    if value.__class__ is CoroutineType:
        # A plain function (a lambda, a partial of a wrapper) that returned a coroutine:
        # its body never ran. Close it (no "never awaited" warning) and say so.
        value.close()
        raise TypeError(
            f"task {task.name!r}: {qualname(task.fn)} returned a coroutine instead of "
            "running: spawn the coroutine function itself (g.spawn(fn, *args)), which "
            "runs it on an event loop"
        )
    return value


def close_groups(
    task: Task[Any], outcome: TaskState, exc: BaseException | None
) -> tuple[TaskState, BaseException | None]:
    """No orphans: a task is not finished until the groups it made are. If the task
    failed, its groups are cancelled first; otherwise they are waited for (and a
    supervisor it made is stopped: it would never end by itself)."""
    errors: list[Exception] = []
    fatal: BaseException | None = None
    for g in task._child_groups_alive():
        if outcome is TaskState.FAILED and exc is not None:
            g.cancel(exc)
        err = g._close_as_child()
        if isinstance(err, Exception):
            errors.append(err)
        elif err is not None and fatal is None:
            fatal = err  # KeyboardInterrupt/SystemExit from a child group's task
    task._child_groups_closed()  # they stayed visible while waited for
    if fatal is not None and (exc is None or isinstance(exc, Exception)):
        return TaskState.FAILED, fatal
    if not errors:
        return outcome, exc
    if outcome is TaskState.FAILED and isinstance(exc, Exception):
        return outcome, ExceptionGroup(
            f"task {task.name!r} failed, and so did groups it made", [exc, *errors]
        )
    if outcome is TaskState.FAILED:
        for err in errors:  # the task itself ended with KeyboardInterrupt/SystemExit
            log.error(
                "group made by task %r failed", task.name, exc_info=err,
                extra={"corral_task": task.name, "corral_group": task.group.name},
            )
        return outcome, exc
    if len(errors) == 1:
        return TaskState.FAILED, errors[0]
    return TaskState.FAILED, ExceptionGroup(f"groups made by task {task.name!r} failed", errors)
