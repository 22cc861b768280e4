"""The task state machine: what a group knows about its tasks, and every change of it.

A :class:`Lifecycle` is one group's bookkeeping. Its methods are *transitions*: each
runs under ``lock`` (held by the caller unless its docstring says otherwise), changes
the tasks' records and the group's containers, and returns the effects to apply once
the lock is released: tasks released to run, tasks ended whose end hooks must run,
tokens to cancel. A transition never calls user code (hooks, on_cancel callbacks),
never blocks and does no I/O; the driver (``_driver``) applies what it returns, and
the runner (``_runner``) runs the attempts it releases. Two things are called under the
lock because they are corral's own and cannot block: the group's clock (a restart's
timer), and the runner's ``release_worker_early`` hint.

Phases (``TaskRecord._phase``, see ``_record``) and where a task is in each:

=============  ===========  ==============================================================
phase          TaskState    containers (besides ``unfinished`` and ``live[name]``)
=============  ===========  ==============================================================
ADDING         PENDING      none: on_added runs (or a replaced task is being looked at)
PARKED         PENDING      ``waiting``: not started, needs not ready, or replaced one
                            still winding down
QUEUED         PENDING      ``queue`` (FIFO): waiting for a limit slot
CAMPAIGNING    PENDING      released: its attempt campaigns for the singleton's lease
RUNNING        RUNNING      released: its attempt runs (holds a slot if it takes one)
RESTARTING     BACKOFF      none: on_restart runs, the restart is not yet armed
BACKOFF        BACKOFF      a timer will resume it
ENDED          outcome      not in ``live``; end hooks not yet run
DONE           outcome      in nothing (``unfinished`` neither): hooks ran
=============  ===========  ==============================================================

``queue`` may keep stale entries of tasks that left QUEUED by ending (they are skipped
when reached). A task takes a limit slot while RUNNING unless it is a background task
or a singleton (``takes_slot``). ADDING and RESTARTING are *held*: the thread that runs
the hook owns the task until it takes the lock again; a cancellation meanwhile is
only noted (``_cancel_cause``) and that thread applies it, so hooks keep their order.

Order of effects for one task: on_added before anything else it sees; on_started
before its function, in its attempt; on_succeeded/on_failed right after the attempt;
on_restart before the run it announces (the restart is armed only after it ran);
dependents cancelled after the attempt that they needed ended; the task's on_finish,
then the group's on_finished, before the task is DONE (``join`` and ``len`` see it only
then); a failure is reported (logged, fail-fast) before the end hooks.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

from ._errors import DuplicateTaskName, Replaced, RestartLimitExceeded
from ._policy import DEFAULT_BACKOFF, Hooks, Restart
from ._record import (
    ADDING,
    BACKOFF,
    CAMPAIGNING,
    DONE,
    ENDED,
    PARKED,
    QUEUED,
    RESTARTING,
    RUNNING,
    Ending,
    TaskState,
    takes_slot,
    wants_restart,
)
from ._sync import YieldingLock
from ._token import Token
from ._validate import check_needs
from ._waiting import Waiter

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._clock import Clock
    from ._group import Group
    from ._runner import Runner
    from ._task import Task

__all__ = ["Lifecycle"]


class Lifecycle:
    """One group's tasks: their containers, counters and flags, and the transitions.

    ``token`` is the group's token; ``failures`` a list (a group's, raised by join) or a
    bounded deque (a supervisor's record); ``refuse`` makes the error a spawn gets once
    the group takes no new tasks (None while it does).
    """

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        token: Token,
        clock: Clock,
        limit: int | None,
        fail_fast: bool,
        fatal_stops: bool,
        hooks: Hooks,
        started: bool,
        failures: list[Exception] | deque[Exception],
        group: Group,
        runner: Runner,
        failure_level: int,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        # The lock guards all of this and every task's record; it is hot and short.
        self.lock = YieldingLock()
        self.waiter = Waiter(self.lock)
        self.notify = self.waiter.notify  # wakes the group's waiters (cheap when none)
        # What the driver needs to apply effects (the transitions do not use these).
        self.group = group
        self.runner = runner
        self.failure_level = failure_level  # a plain group logs failures at DEBUG
        self.on_fatal = on_fatal  # a KeyboardInterrupt/SystemExit in a task
        self.name = name
        self.kind = kind  # "group" or "supervisor" (in messages)
        self.token = token
        self.clock = clock
        self.limit = limit
        self.fail_fast = fail_fast
        self.fatal_stops = fatal_stops
        self.hooks = hooks
        self.live: dict[str, Task[Any]] = {}  # name -> task not yet ENDED
        self.unfinished: dict[Task[Any], None] = {}  # not DONE, in spawn order
        self.foreground = 0  # unfinished foreground tasks (and collect() blocks)
        self.waiting: dict[Task[Any], None] = {}  # PARKED, in arrival order
        self.dependents: dict[str, dict[Task[Any], None]] = {}  # name -> tasks that need it
        self.queue: deque[Task[Any]] = deque()  # QUEUED (and stale entries)
        self.slots = 0
        self.failures = failures
        self.fatal: BaseException | None = None  # the first KeyboardInterrupt/SystemExit
        self.started = started
        self.stopping = False  # a supervisor's stop has begun
        # Set when a failure is about to cancel the group: from then on nothing more is
        # released, so a queued sibling cannot start before the cancellation arrives.
        self.cancelling = False
        self.closed = False
        self.failures_raised = False  # join has raised (or handed over) the failures
        self.draining = False  # a supervisor's graceful stop waits for drain=True tasks
        self.ends = 0  # tasks DONE so far (wait_until re-checks when it moves)
        self.ready_waiters = 0  # callers in wait_ready(): a readiness notifies only them
        # Slot holders blocked in a wait for tasks of this group, each with what it waits
        # for (see _waiting.OwnWait and _queries.stuck_for_good).
        self.stuck: dict[Task[Any], Callable[[], Task[Any] | None]] = {}
        self.refuse: Callable[[], Exception] | None = None
        self.seq = itertools.count(1)  # the numbers of automatic task names
        self.stems: dict[Callable[..., Any], str] = {}  # fn -> its tasks' name stem

    # -- adding ------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.refuse is not None:
            raise self.refuse()

    def add(
        self, task: Task[Any], replace: bool, base: str | None
    ) -> tuple[list[Task[Any]], list[Task[Any]], Task[Any] | None, bool]:
        """A new task (ADDING). Returns what it released, the tasks it ended, a running
        task it replaces (to cancel), and whether it stays held for on_added (then
        ``added`` places it). ``base``: the automatic name's stem, if it has one."""
        self.check_open()
        name = task.name
        old: Task[Any] | None = None
        if base is not None:
            while name in self.live:  # an explicit name took it: take the next
                name = task.name = f"{base}#{next(self.seq)}"
        else:
            old = self.live.get(name)
            if old is not None and not replace:
                raise DuplicateTaskName(
                    f"a task named {name!r} is already live in {self.name!r}; "
                    "pass replace=True to replace it"
                )
        needs = task.needs
        if needs:
            check_needs(self.live, name, needs, self.name)
        self.unfinished[task] = None
        if not task.background:
            self.foreground += 1
        self.live[name] = task
        for n in needs:
            self.dependents.setdefault(n, {})[task] = None
        ended: list[Task[Any]] = []
        if old is None and self.hooks.on_added is None:
            # The common case, in one lock section: nothing to run in between.
            return self.admit(task, ended), ended, None, False
        cancel_old = None
        if old is not None:
            old._replaced_by = task
            if old._cancel_cause is None:
                old._cancel_cause = Replaced(f"replaced by a new task named {name!r}")
            phase = old._phase
            if phase is RUNNING or phase is CAMPAIGNING or phase is ADDING or phase is RESTARTING:
                # Running, or held by a thread between lock sections (which sees the
                # cause when it takes the lock again): wait for it to end.
                task._replaces = old
                if phase is RUNNING or phase is CAMPAIGNING:
                    cancel_old = old
            else:  # parked, queued or backing off: it ends now, without running again
                # ...but it may itself have been waiting for an older run of this name
                # that is still winding down: the new task waits for that one.
                older = old._replaces
                task._replaces = older if older is not None and older._outcome is None else None
                self.end_waiting(old, old._cancel_cause)
                ended.append(old)
        return [], ended, cancel_old, True

    def added(self, task: Task[Any]) -> tuple[list[Task[Any]], list[Task[Any]]]:
        """on_added ran: place the task (or end it, if it was cancelled meanwhile)."""
        ended: list[Task[Any]] = []
        released = self.admit(task, ended) if task._phase is ADDING else []
        return released, ended

    # -- admission -----------------------------------------------------------------------

    def blocked(self, task: Task[Any]) -> bool:
        if not self.started:
            return True
        old = task._replaces
        if old is not None:
            if old._outcome is None:
                return True
            task._replaces = None
        for n in task.needs:
            dep = self.live.get(n)
            if dep is None or not dep._ready:
                return True
        return False

    def admit(self, task: Task[Any], ended: list[Task[Any]]) -> list[Task[Any]]:
        """Place a task that may run: release it, queue it on the limit, or park it. One
        that must end instead (it or its group was cancelled) is added to ``ended``."""
        if self.token._cause is not None or task._cancel_cause is not None:
            # Spawned into (or restarted in) a cancelled group: it ends without running.
            self.end_waiting(task, task._cancel_cause or self.token._cause)
            ended.append(task)
            return []
        if (
            (not self.started or task._replaces is not None or task.needs)
            and self.blocked(task)
        ):
            task._phase = PARKED
            self.waiting[task] = None
            return []
        if self.cancelling or self.no_slot(task):
            task._phase = QUEUED
            self.queue.append(task)
            return []
        self.release(task)
        return [task]

    def pump(self, scan: bool = False) -> list[Task[Any]]:
        """Release what can run now: with ``scan``, parked tasks no longer blocked; then
        the limit queue in FIFO order."""
        released: list[Task[Any]] = []
        if self.cancelling:
            return released
        if scan and self.waiting:
            still: dict[Task[Any], None] = {}
            for task in self.waiting:
                if task._phase is not PARKED:
                    continue
                if self.blocked(task):
                    still[task] = None
                elif self.no_slot(task):
                    task._phase = QUEUED
                    self.queue.append(task)
                else:
                    self.release(task)
                    released.append(task)
            self.waiting = still
        queue = self.queue
        while queue and not self.no_slot(queue[0]):
            task = queue.popleft()
            if task._phase is not QUEUED:
                continue  # (a stale entry: it ended while queued)
            if task.needs and self.blocked(task):
                # What it needs ended while it queued for a slot: park it again.
                task._phase = PARKED
                self.waiting[task] = None
                continue
            self.release(task)
            released.append(task)
        return released

    def no_slot(self, task: Task[Any]) -> bool:
        limit = self.limit
        return limit is not None and self.slots >= limit and takes_slot(task)

    def release(self, task: Task[Any]) -> None:
        # Once released, the callable will be called even if the token is cancelled
        # meanwhile: "spawn, then stop at once" stays deterministic.
        if task._lease_state is not None:
            task._phase = CAMPAIGNING  # PENDING to the outside until it holds its lease
        else:
            task._phase = RUNNING
            if not task.background:
                self.slots += 1
        if task._token_used:
            task.token = self.new_task_token()
        task._token_used = True

    def new_task_token(self) -> Token:
        # A task's token is a child of the group's token, kept by the group rather than
        # by the token tree: the group cancels its running tasks' tokens itself
        # (cancelled), so making and ending a token costs no shared lock. A token made
        # after the group was cancelled is born cancelled.
        token = Token._leaf(self.clock)
        cause = self.token._cause
        if cause is not None:
            token._cancel(cause)
        return token

    def begin_stop(self, refuse: Callable[[], Exception]) -> bool:
        """A supervisor's stop begins: it takes no new task. Whether it had started."""
        self.stopping = True
        self.refuse = refuse
        return self.started

    def start(self) -> list[Task[Any]]:
        """A supervisor starts: what it queued may run."""
        self.started = True
        return self.pump(scan=True)

    # -- an attempt ------------------------------------------------------------------------

    def lease_held(self, task: Task[Any]) -> None:
        """A singleton's attempt holds its lease: it runs now."""
        if task._phase is CAMPAIGNING:
            task._phase = RUNNING

    def begin_attempt(self, task: Task[Any]) -> bool:
        """The attempt's function is about to run. No lock: only the attempt's own
        thread writes these fields while it is RUNNING. A task that does not say when
        it is ready is ready now: True if that is news (see ``set_ready``)."""
        task._started_at = time.time()
        task.attempts += 1
        if task.restart is not Restart.NEVER:  # only a restart's backoff needs it
            task._attempt_started = self.clock.monotonic()
        if task.signals_ready or task._ready:
            return False
        task._ready_value = None
        task._ever_ready = True
        task._ready = True
        return True

    def set_ready(self, task: Task[Any], value: Any) -> bool:
        """The running task says it is ready. No lock (the task's own thread): a
        dependent registers itself (under the lock) before it reads ``_ready``, and this
        writes ``_ready`` before the caller reads ``dependents``, so one of the two always
        sees the other. False if there was nothing to do."""
        if task._phase is not RUNNING or task._ready:
            return False
        task._ready_value = value
        task._ever_ready = True
        task._ready = True
        return True

    def succeeded_simply(self, task: Task[Any], value: Any) -> list[Task[Any]] | None:
        """The common end of an attempt (succeeded, not to restart, no end hook, no
        dependency either way) in one lock section: it is DONE. None if the general
        path (``attempt_ended``) must run instead."""
        if self.dependents or task.needs:
            return None
        # What _attempt_over, set_final and mark_done do, for this case alone (no timer,
        # no needs: the end of nearly every attempt, kept to one call).
        if task._phase is RUNNING and takes_slot(task):
            self.slots -= 1
        task._ready = False
        task._phase = DONE
        task._outcome = TaskState.SUCCEEDED
        task._result = value
        self._leave_live(task)
        self.ends += 1
        del self.unfinished[task]
        if not task.background:
            self.foreground -= 1
        self.notify()
        released = self.pump(scan=task._replaced_by is not None)
        if not released:
            task._runner.release_worker_early()  # before the lock lets a joiner go (see _pool)
        return released

    def attempt_ended(
        self, task: Task[Any], outcome: TaskState, value: Any, exc: BaseException | None,
        *, fatal: bool, comes_back: bool, has_end_hooks: bool,
    ) -> Ending:
        """An attempt ended (``outcome``): end the task, restart it (RESTARTING: the caller
        runs on_restart, then ``restart_announced``), or send it back to wait (it lost
        what it needs, or its lease)."""
        out = Ending(exc)
        self._attempt_over(task)
        needed_by = self.dependents.get(task.name) if self.dependents else None
        if needed_by and self.live.get(task.name) is task:
            out.dependents = [
                t for t in needed_by if t._phase is RUNNING or t._phase is CAMPAIGNING
            ]
        stopping = self.stopping or self.token._cause is not None or task._cancel_cause is not None
        readmit = False
        if comes_back and not stopping:
            # What it needs went away (or, for a singleton, its lease): it waits until
            # that is back (campaigns again): through admission, as it may be already.
            readmit = True
        elif not stopping and not fatal and wants_restart(task.restart, outcome):
            now = self.clock.monotonic()
            limit_exc = self._note_restart(task, now)
            if limit_exc is not None:
                limit_exc.__cause__ = exc
                out.exc = limit_exc
                out.final = TaskState.FAILED
            else:
                out.restart_delay = self._restart_delay(task, now)
                out.resume_at = now + out.restart_delay
                # Held: the restart is armed (or, with no delay, admitted) only after
                # on_restart ran, so the hook never comes after the run it announces.
                task._phase = RESTARTING
        else:
            out.final = outcome
        final = out.final
        if final is not None:
            self.set_final(task, final, value, out.exc)
            if final is TaskState.FAILED and not task._in_map and (
                (fatal and self.fatal_stops) or self.fail_fast
            ):
                self.cancelling = True  # the driver reports the failure, which cancels the group
            if final is not TaskState.FAILED and not has_end_hooks:
                self.mark_done(task)  # no hook to run between ENDED and DONE
                out.done = True
        # A parked task may wait for this one (replacement, needs): rescan then only.
        out.released = self.pump(scan=task._replaced_by is not None or needed_by is not None)
        if readmit:
            out.released.extend(self.admit(task, out.ended))
        if out.done and not out.released and not out.ended:
            task._runner.release_worker_early()  # before the lock lets a joiner go (see _pool)
        # Every outcome can matter to a waiter: released, ended, or parked (a join
        # re-checks whether only stranded dependents are left).
        self.notify()
        return out

    def restart_announced(
        self, task: Task[Any], out: Ending, resume: Callable[[], None]
    ) -> bool:
        """on_restart ran: arm the restart (``resume`` is called when it is due), admit it
        now (no delay), or end it if it was cancelled meanwhile (True: its end hooks
        must run)."""
        assert out.restart_delay is not None
        ended = False
        if task._cancel_cause is not None or self.token._cause is not None:
            self.end_waiting(task, task._cancel_cause or self.token._cause)
            ended = True
        elif out.restart_delay > 0:
            task._phase = BACKOFF
            task._timer = self.clock.call_at(out.resume_at, resume)
        else:
            out.released.extend(self.admit(task, out.ended))
        self.notify()
        return ended

    def resume(self, task: Task[Any]) -> tuple[list[Task[Any]], list[Task[Any]]]:
        """A restart is due: what it released, and what ended."""
        ended: list[Task[Any]] = []
        if task._phase is not BACKOFF:
            return [], ended
        task._timer = None
        released = self.admit(task, ended)
        self.notify()
        return released, ended

    def _attempt_over(self, task: Task[Any]) -> None:
        """An attempt ended: its limit slot is free and it is no longer ready."""
        if task._phase is RUNNING and takes_slot(task):
            self.slots -= 1
        task._ready = False

    def _note_restart(self, task: Task[Any], now: float) -> RestartLimitExceeded | None:
        if task.max_restarts is None:
            return None
        n, period = task.max_restarts
        times = task._restart_times
        if times is None:
            times = task._restart_times = deque()
        while times and times[0] <= now - period:
            times.popleft()
        if len(times) >= n:
            return RestartLimitExceeded(
                f"task {task.name!r} restarted more than {n} times within {period:g}s"
            )
        times.append(now)
        return None

    def _restart_delay(self, task: Task[Any], now: float) -> float:
        backoff = task.backoff or DEFAULT_BACKOFF
        if backoff.reset_after is not None and now - task._attempt_started >= backoff.reset_after:
            task._consecutive = 0
        delay = backoff.delay(task._consecutive)
        task._consecutive += 1
        return delay

    def failed_attempt(self, task: Task[Any], exc: BaseException) -> None:
        """Note an attempt's error (no lock: the attempt's thread, before its end)."""
        task._last_error = exc

    # -- ending ----------------------------------------------------------------------------

    def set_final(
        self, task: Task[Any], state: TaskState, value: Any, exc: BaseException | None
    ) -> None:
        task._phase = ENDED
        task._outcome = state
        if state is TaskState.SUCCEEDED:
            task._result = value
        else:
            task._error = exc
        if task._timer is not None:
            task._timer.cancel()
            task._timer = None
        self._leave_live(task)

    def _leave_live(self, task: Task[Any]) -> None:
        """An ended task gives its name up (to the task it replaced, if that one has not
        ended yet)."""
        if self.live.get(task.name) is task:
            old = task._replaces
            if old is not None and old._outcome is None:
                # A replacement that ended before the task it replaced: that one is
                # still live (winding down), so the name stays taken by it, and a new
                # task of this name cannot run beside it.
                self.live[task.name] = old
            else:
                del self.live[task.name]

    def end_waiting(self, task: Task[Any], cause: BaseException | None) -> None:
        """End a task that does not run (parked, queued, held or backing off): CANCELLED."""
        self.waiting.pop(task, None)
        if cause is not None and task.token._cause is not None:
            # Its token is that of an attempt that ended (backing off, or parked after
            # losing what it needed): give it one that says why the task ended.
            token = Token._leaf(self.clock)
            token._cancel(cause)
            task.token = token
        self.set_final(task, TaskState.CANCELLED, None, cause)

    def finished(self, task: Task[Any], last: bool) -> list[Task[Any]]:
        """The end hooks ran: the task is DONE. ``last``: its worker has nothing else to
        do. Returns what this released."""
        self.mark_done(task)
        released: list[Task[Any]] = []
        if task._replaced_by is not None and self.waiting:
            # Its replacement may be parked waiting for this end: a task that ended
            # without an attempt ending (cancelled while pending, backing off, or held
            # in on_restart) reaches no other rescan.
            released = self.pump(scan=True)
        if last and not released:
            task._runner.release_worker_early()  # the worker's last act for this attempt (see _pool)
        return released

    def mark_done(self, task: Task[Any]) -> None:
        task._phase = DONE
        self.ends += 1
        del self.unfinished[task]
        if not task.background:
            self.foreground -= 1
        for n in task.needs:
            deps = self.dependents.get(n)
            if deps is not None:
                deps.pop(task, None)
                if not deps:
                    del self.dependents[n]
        self.notify()

    def close(self, refuse: Callable[[], Exception]) -> tuple[list[Exception], BaseException | None]:
        """No task is left: the group takes no new one. Returns its failures and fatal
        error the first time (join raises them), nothing after."""
        self.closed = True
        if self.refuse is None:
            self.refuse = refuse
        if self.failures_raised:
            return [], None
        self.failures_raised = True
        return list(self.failures), self.fatal

    def collector_entered(self, background: bool) -> None:
        """A ``collect()`` block began: a foreground one keeps ``join`` waiting."""
        self.check_open()
        if not background:
            self.foreground += 1

    def collector_exited(self, background: bool) -> None:
        if not background:
            self.foreground -= 1
            self.notify()

    def record(self, exc: BaseException) -> None:
        """A failure to report: kept (an Exception), or the first fatal one."""
        if isinstance(exc, Exception):
            self.failures.append(exc)
        elif self.fatal is None and self.fatal_stops:
            self.fatal = exc

    # -- cancelling ------------------------------------------------------------------------

    def cancel_task(self, task: Task[Any], cause: BaseException) -> str | None:
        """Cancel one task: ``"ended"`` (it did not run: its end hooks must run),
        ``"running"`` (cancel its token with ``task._cancel_cause``), or None (ended
        already, or held: its holder applies the cause)."""
        if task._outcome is not None:
            return None
        if task._cancel_cause is None:
            task._cancel_cause = cause
        phase = task._phase
        if phase is RUNNING or phase is CAMPAIGNING:
            return "running"
        if phase is ADDING or phase is RESTARTING:
            return None
        self.end_waiting(task, task._cancel_cause)
        return "ended"

    def cancelled(self, cause: BaseException) -> tuple[list[Task[Any]], list[Task[Any]]]:
        """The group's token was cancelled: the tasks that do not run end now (their end
        hooks must run); returns them, and the running ones (to deliver the cancel to)."""
        ended = []
        running = []
        for t in self.unfinished:
            phase = t._phase
            if phase is PARKED or phase is QUEUED or phase is BACKOFF:
                ended.append(t)
            elif phase is RUNNING or phase is CAMPAIGNING:
                running.append(t)
        for t in ended:
            self.end_waiting(t, t._cancel_cause or cause)
        self.queue.clear()
        self.waiting.clear()
        self.notify()
        return ended, running

    # -- a forked child --------------------------------------------------------------------

    def forget_after_fork(
        self, cause: BaseException, refuse: Callable[[], Exception]
    ) -> list[Task[Any]]:
        """In a forked child (no other thread, no lock needed): every task of the parent's
        ends CANCELLED and DONE, without hooks (they are the parent's); the group
        closes. Returns the tasks, for the caller to let go of what they hold."""
        # The lock may be held by a thread of the parent's, and the waiters were its.
        self.lock = YieldingLock()
        self.waiter = Waiter(self.lock)
        self.notify = self.waiter.notify
        ended = list(self.unfinished)
        for t in ended:
            timer, t._timer = t._timer, None
            if timer is not None:
                timer.cancel()
            if t._outcome is None:
                t._outcome = TaskState.CANCELLED
                t._error = cause
                if t._cancel_cause is None:
                    t._cancel_cause = cause
            t._phase = DONE
            t._ready = False
        self.ends += len(ended)
        self.unfinished.clear()
        self.live.clear()
        self.waiting.clear()
        self.queue.clear()
        self.dependents.clear()
        self.foreground = 0
        self.slots = 0
        self.closed = True
        self.stopping = True
        self.refuse = refuse
        self.failures_raised = True  # (its failures are the parent's to raise)
        return ended
