"""Drives a group's lifecycle: makes a spawned task and adds it, runs a transition under
the lock, then applies what it returned (hooks, failure reports, token cancellations,
attempts for the runner).

Whatever runs an attempt (a worker thread, next an event loop) calls the same
functions here, so hooks, logs and failures behave the same under every runner. Hooks
run in the task's context (log context and tracing spans reach them), never under the
group's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._context import busy as _busy
from ._errors import GRACEFUL, Cancelled, describe
from ._policy import Restart, call_hook
from ._record import ATTEMPT_ENDED, COMES_BACK, DependencyLost, TaskState
from ._validate import name_stem

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from ._group import Group
    from ._lifecycle import Lifecycle
    from ._policy import Backoff
    from ._runner import Runner
    from ._singleton import LeaseState
    from ._task import Task

__all__ = ["CANCELLED_ENDS", "end_attempt", "finalize", "report", "spawn", "start"]

log = logging.getLogger("corral")

# What a task may raise to end CANCELLED rather than FAILED (never a failure)
CANCELLED_ENDS = (Cancelled, *GRACEFUL)


def spawn(
    group: Group,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    name: str | None,
    meta: Mapping[str, Any] | None = None,
    background: bool = False,
    restart: Restart = Restart.NEVER,
    backoff: Backoff | None = None,
    max_restarts: tuple[int, float] | None = None,
    replace: bool = False,
    needs: tuple[str, ...] = (),
    on_finish: Callable[[Task[Any]], object] | None = None,
    signals_ready: bool = False,
    in_map: bool = False,
    single: LeaseState | None = None,
    drain: bool = False,
    runner: Runner | None = None,
) -> Task[Any]:
    """Make a task of ``group`` (options checked already) and add it. ``name`` None: an
    automatic one, the function's stem and a number."""
    base = None
    life = group._life
    if name is None:
        base = name_stem(fn, life.stems)
        name = f"{base}#{next(life.seq)}"  # next() of a count is atomic
    # Made outside the lock: the critical section stays short (the spawner and the
    # workers finishing tasks contend for it).
    task: Task[Any] = group._Task(
        group, life, fn, args, name, meta, background, restart, backoff, max_restarts,
        needs, on_finish, signals_ready, in_map, single, drain, runner,
    )
    with life.lock:
        released, ended, cancel_old, held = life.add(task, replace, base)
    if cancel_old is not None:
        assert cancel_old._cancel_cause is not None
        cancel_old.token.cancel(cancel_old._cancel_cause)
    _apply(life, released, ended)  # (nothing is released while the task is held)
    if held:
        # on_added runs outside the lock: until it has, others only note a cancellation,
        # so no end hook can come before it.
        task._in_context(call_hook, life.hooks.on_added, task)
        with life.lock:
            released, ended = life.added(task)
        _apply(life, released, ended)
    return task


def set_ready(life: Lifecycle, task: Task[Any], value: Any) -> None:
    """The running task says it is ready (``corral.ready()``)."""
    if life.set_ready(task, value):
        ready_said(life, task)


def ready_said(life: Lifecycle, task: Task[Any]) -> None:
    """A task became ready: wake whoever waits for it, and start what needed it."""
    # (wait_ready counts itself in ready_waiters under the lock before it reads the
    # readiness; the readiness is written before this reads the counters: one of the
    # two sees the other, as for dependents.)
    if not life.dependents and not life.ready_waiters:
        return
    with life.lock:
        if life.ready_waiters:
            life.notify()
        released = life.pump(scan=True) if task.name in life.dependents else []
    if released:
        start(life, released)


def start(life: Lifecycle, tasks: list[Task[Any]]) -> None:
    """Hand released tasks to their runners (the group's, unless a task runs on an
    event loop)."""
    if len(tasks) == 1:  # (the common case: a spawn, or the one task an end released)
        tasks[0]._runner.start(life, tasks)
        return
    runner = life.runner
    for t in tasks:
        if t._runner is not runner:
            break
    else:
        runner.start(life, tasks)  # (one kind of task)
        return
    by_runner: dict[Runner, list[Task[Any]]] = {}
    for t in tasks:
        by_runner.setdefault(t._runner, []).append(t)
    for r, some in by_runner.items():
        r.start(life, some)


def end_attempt(
    life: Lifecycle, task: Task[Any], outcome: TaskState, value: Any, exc: BaseException | None
) -> list[Task[Any]]:
    """An attempt ended (``outcome``, with its value or exception); returns the tasks
    this released, for the runner to run."""
    token = task.token
    hooks = life.hooks
    if (
        outcome is TaskState.SUCCEEDED
        and task.restart is Restart.NEVER
        and task.on_finish is None
        and hooks.on_succeeded is None
        and hooks.on_finished is None
    ):
        # The common ending (succeeded, nothing to restart, no hook to run), in one
        # short lock section; anything unusual takes the general path below.
        if token._cause is None:
            token._cancel(ATTEMPT_ENDED)
        with life.lock:
            released = life.succeeded_simply(task, value)
        if released is not None:
            task._drop_context()
            return released
    fatal = False
    if outcome is TaskState.FAILED:
        assert exc is not None
        fatal = not isinstance(exc, Exception)
        life.failed_attempt(task, exc)
        if hooks.on_failed is not None:
            task._in_context(call_hook, hooks.on_failed, task, exc)
    elif outcome is TaskState.SUCCEEDED and hooks.on_succeeded is not None:
        task._in_context(call_hook, hooks.on_succeeded, task, value)
    comes_back = outcome is TaskState.CANCELLED and isinstance(token.cause, COMES_BACK)
    if outcome is TaskState.CANCELLED:
        # Record why it was cancelled: the token's cause if it was cancelled, else
        # the cause carried by the Cancelled it raised, else what it raised.
        exc = token.cause or (exc.cause if isinstance(exc, Cancelled) else None) or exc
    if not token.cancelled:
        token._cancel(ATTEMPT_ENDED)  # so on_cancel callbacks release what it held
    with life.lock:
        out = life.attempt_ended(
            task, outcome, value, exc, fatal=fatal, comes_back=comes_back,
            has_end_hooks=task.on_finish is not None or hooks.on_finished is not None,
        )
    for dep in out.dependents:
        dep.token.cancel(DependencyLost(f"needed task {task.name!r} ended"))
    if out.restart_delay is not None:
        task._in_context(_log_restart, life, task, outcome, out.exc, out.restart_delay)
        if hooks.on_restart is not None:
            task._in_context(call_hook, hooks.on_restart, task, out.restart_delay)
        with life.lock:
            if life.restart_announced(task, out, lambda: resume(life, task)):
                out.ended.append(task)
    for t in out.ended:
        finalize(life, t)
    if out.final is not None and not out.done:
        if out.final is TaskState.FAILED and not task._in_map:
            assert out.exc is not None
            task_failed(life, task, out.exc)
        finalize(life, task, last=not out.released)
    return out.released


def resume(life: Lifecycle, task: Task[Any]) -> None:
    """A restart's delay has passed (the clock's timer)."""
    with life.lock:
        released, ended = life.resume(task)
    _apply(life, released, ended)


def _apply(life: Lifecycle, released: list[Task[Any]], ended: list[Task[Any]]) -> None:
    """Run the end hooks of the tasks a transition ended, then start what it released."""
    for t in ended:
        finalize(life, t)
    if released:
        start(life, released)


def finalize(life: Lifecycle, task: Task[Any], last: bool = False) -> None:
    """Run an ended task's end hooks, then mark it DONE (join and len see it after
    its hooks). ``last``: the calling worker has nothing else to do after this."""
    token = task.token
    if not token.cancelled:
        # A task that ended without running (pending, backing off) carries the
        # cancellation's cause on its token; an attempt that ended, ATTEMPT_ENDED.
        error = task._error if task._outcome is TaskState.CANCELLED else None
        token._cancel(error or ATTEMPT_ENDED)
    # While its end hooks run, the task has ended but is not yet done: a hook that
    # joins it (t.result(), t.join()) must not wait for itself.
    previous, _busy.finishing = getattr(_busy, "finishing", None), task
    try:
        if task.on_finish is not None:
            task._in_context(call_hook, task.on_finish, task)
        if life.hooks.on_finished is not None:
            task._in_context(call_hook, life.hooks.on_finished, task)
    finally:
        _busy.finishing = previous
    task._drop_context()
    with life.lock:
        released = life.finished(task, last)
    _apply(life, released, [])


def cancel_task(life: Lifecycle, task: Task[Any], cause: BaseException) -> None:
    with life.lock:
        what = life.cancel_task(task, cause)
    if what == "ended":
        finalize(life, task)
    elif what == "running":
        assert task._cancel_cause is not None
        task._runner.cancel(task, task._cancel_cause)


def group_cancelled(life: Lifecycle) -> None:
    """The group's token was cancelled: tasks that are not running end now, running
    ones have their tokens cancelled."""
    cause = life.token.cause
    assert cause is not None
    with life.lock:
        ended, running = life.cancelled(cause)
    for t in running:
        t._runner.cancel(t, cause)  # (a new attempt's token is born cancelled: see new_task_token)
    for t in ended:
        finalize(life, t)


# -- failures ------------------------------------------------------------------------------


def task_failed(life: Lifecycle, task: Task[Any], exc: BaseException) -> None:
    try:
        exc.__corral_task__ = task.name  # type: ignore[attr-defined]
        exc.add_note(
            f"corral: task {task.name!r} (attempt {task.attempts}) in {life.kind} {life.name!r}"
        )
    except Exception:  # pragma: no cover - exotic exception types
        pass

    def log_it() -> None:
        # A plain group raises its failures from join(), where the user sees them: it
        # logs them at DEBUG; a supervisor raises none: it logs them at ERROR.
        log.log(
            life.failure_level, "task %r failed in %s %r", task.name, life.kind, life.name,
            exc_info=exc, extra={"corral_task": task.name, "corral_group": life.name},
        )

    report(life, exc, lambda: task._in_context(log_it))


def report(life: Lifecycle, exc: BaseException, log_it: Callable[[], object]) -> None:
    """Record a failure (or the first KeyboardInterrupt/SystemExit), log it, and
    escalate: a fatal one stops the group, another cancels it with fail_fast."""
    with life.lock:
        life.record(exc)
    log_it()
    if not isinstance(exc, Exception):
        life.on_fatal(exc)
    elif life.fail_fast:
        life.group.cancel(exc)


def _log_restart(
    life: Lifecycle, task: Task[Any], outcome: TaskState, exc: BaseException | None, delay: float
) -> None:
    extra = {"corral_task": task.name, "corral_group": life.name}
    if outcome is TaskState.FAILED and exc is not None:
        # One line at WARNING (a flapping task must not flood the log, and a traceback
        # per attempt costs more than the restart); the traceback at DEBUG.
        log.warning(
            "task %r failed (attempt %d): %s; restarting in %.3gs", task.name,
            task.attempts, describe(exc), delay, extra=extra,
        )
        log.debug(
            "task %r attempt %d failed with", task.name, task.attempts,
            exc_info=exc, extra=extra,
        )
    else:  # returned, and restart=ALWAYS/ON_SUCCESS asks for another run: routine
        log.info(
            "task %r returned (attempt %d); restarting in %.3gs", task.name,
            task.attempts, delay, extra=extra,
        )
