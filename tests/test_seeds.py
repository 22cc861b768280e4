"""The seed libraries' behaviours, as tests of corral.

One test per behaviour listed in the seed documents (``/work/shared/seeds``) and per test
case of ``notes/seed-semantics.md`` (sections 1.4, 2.3, 3.5, 4.5 and the suggested extra
port tests), mapped onto corral's API as DESIGN.md says:

- ThreadManager (seed-semantics 1) -> ``Supervisor``: queue before ``start()``,
  ``replace=True`` for the same id, ``on_finish``, ``Restart`` policies;
- goroutine-manager (2) -> ``Group``: foreground/background tasks, ``collect()``/``wrap()``
  for the panic collectors, failures in an ``ExceptionGroup``, graceful ``Stopped``,
  parent token;
- ThreadGroup (seeds/002) -> ``Group(limit=)``, ``corral.sleep``, ``wait_until``, the tree;
- background (3) -> ``Hooks`` with ``meta``, ``len()``, ``join``;
- routine (4) -> contextvars, a task's token cancelled after it returns, exceptions
  reported without crashing the caller.

Where the notes mark the Go behaviour **BUG?**, the test asserts corral's fixed behaviour.
Go tests that rely on timing are asserted with events; timeouts are only backstops.
Signal cases (routine 4.5 #8-#10, ThreadManager SIGINT/SIGTERM) are in test_signals.py.
"""

from __future__ import annotations

import contextvars
import io
import logging
import queue
import threading
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

import corral
from corral import Restart, TaskState
from corral.testing import MockClock

WAIT = 10.0  # backstop for anything that should happen promptly
BLOCKED = 0.05  # how long a "still blocked" probe waits (a probe, never a synchronisation)
NOW = corral.Backoff(initial=0, maximum=0, jitter=0)  # restart at once, as the Go seeds do


class Counter:
    """A thread-safe integer (the Go tests' atomic ``testValue``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> int:
        with self._lock:
            self.value += n
            return self.value


def supervisor(name: str, **options: Any) -> corral.Supervisor:
    """An in-process supervisor for a test: never touches the process's signal handlers."""
    return corral.Supervisor(name, handle_signals=False, **options)


def raiser(exc: BaseException) -> Callable[[], NoReturn]:
    def fail() -> NoReturn:
        raise exc

    return fail


def wait_for_cancel() -> bool:
    """A context-aware work function: block until the task's token is cancelled."""
    return corral.current_token().wait(WAIT)


def group_errors(call: Callable[[], object]) -> tuple[BaseException, ...]:
    """Run ``call``, which must raise an ExceptionGroup; return its exceptions."""
    with pytest.raises(ExceptionGroup) as info:
        call()
    return info.value.exceptions


def state_of(t: corral.Task[Any]) -> TaskState:
    """``t.state`` read afresh (a plain attribute read would stay narrowed for mypy)."""
    return t.state


def is_cancelled(token: corral.Token) -> bool:
    return token.cancelled


def assert_blocked(g: corral.Group) -> None:
    """``join`` does not return while something still holds the group (Go ``requireBlocked``)."""
    with pytest.raises(TimeoutError):
        g.join(timeout=BLOCKED)


# =====================================================================================
# 1. ThreadManager (openmcp controller-utils pkg/threads) -> Supervisor
# =====================================================================================


def test_tm_1_should_execute_multiple_threads() -> None:
    """seed-semantics 1.4 #1: threads queued before Start run at start, threads run with the
    same ids afterwards run too: all 10 work functions ran."""
    value = Counter()
    sup = supervisor("tm-1")
    first = [sup.spawn(value.add, 1, name=str(i)) for i in range(5)]
    assert [t.state for t in first] == [TaskState.PENDING] * 5
    assert value.value == 0  # queued until start()
    sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for t in second:
        t.join(WAIT)
    sup.stop(WAIT)
    assert value.value == 10
    assert all(t.done for t in first)
    assert [t.state for t in second] == [TaskState.SUCCEEDED] * 5


def test_tm_2_should_execute_on_finish_functions_in_threads() -> None:
    """seed-semantics 1.4 #2: a thread's own onFinish runs (work +1, onFinish -1 for the
    first five; no onFinish for the next five): value == 5."""
    value = Counter()
    sup = supervisor("tm-2")
    for i in range(5):
        sup.spawn(value.add, 1, name=str(i), on_finish=lambda t: value.add(-1))
    sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for t in second:
        t.join(WAIT)
    sup.stop(WAIT)
    assert value.value == 5


def test_tm_3_should_execute_on_finish_functions_in_thread_manager() -> None:
    """seed-semantics 1.4 #3: the manager's onFinish runs for all 10 threads: value == 0."""
    value = Counter()
    sup = supervisor("tm-3", on_finish=lambda t: value.add(-1))
    for i in range(5):
        sup.spawn(value.add, 1, name=str(i))
    sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for t in second:
        t.join(WAIT)
    sup.stop(WAIT)
    assert value.value == 0


def test_tm_4_should_report_started_stopped_running() -> None:
    """seed-semantics 1.4 #4: (is_started, is_stopped, is_running) is (F, F, F) after
    construction, (T, F, T) after start, (T, T, F) after stop."""
    sup = supervisor("tm-4")

    def states() -> tuple[bool, bool, bool]:
        return (sup.is_started, sup.is_stopped, sup.is_running)

    assert states() == (False, False, False)
    sup.start()
    assert states() == (True, False, True)
    sup.stop(WAIT)
    assert states() == (True, True, False)


def test_tm_5_should_stop_if_stop_is_invoked() -> None:
    """seed-semantics 1.4 #5: Stop cancels a thread sleeping on its context and waits for it
    (Go: Stop returns in < 3 s; here the cancelled sleep is asserted, 3 s is a backstop)."""
    started = threading.Event()
    slept: list[bool] = []

    def sleep() -> None:
        started.set()
        slept.append(corral.sleep(10))

    sup = supervisor("tm-5")
    t = sup.spawn(sleep, name="sleep")
    sup.start()
    assert started.wait(WAIT)
    sup.stop(timeout=WAIT)  # Go asserts < 3 s; here only a backstop
    assert slept == [False]  # woken by the stop, not by the end of the 10 s
    assert t.state is TaskState.CANCELLED
    assert isinstance(t.token.cause, corral.Stopped)


def test_tm_6_should_stop_if_the_manager_context_is_cancelled() -> None:
    """seed-semantics 1.4 #6: cancelling the manager's context (the supervisor's token)
    stops it: it becomes stopped and the thread's token is cancelled."""
    started = threading.Event()
    slept: list[bool] = []

    def sleep() -> None:
        started.set()
        slept.append(corral.sleep(10))

    mgr_ctx = corral.Token()
    sup = supervisor("tm-6", token=mgr_ctx)
    t = sup.spawn(sleep, name="sleep")
    sup.start()
    assert started.wait(WAIT)
    mgr_ctx.cancel("manager context cancelled")
    sup.wait(timeout=WAIT)
    assert sup.is_stopped
    assert slept == [False]
    assert t.token.cancelled
    assert t.state is TaskState.CANCELLED


def test_tm_7_wait_returns_once_stopped_and_all_tasks_finished() -> None:
    """seed-semantics 1.4 #7: Wait before Start returns at once; after Start it blocks until
    the manager context's timeout stops the manager (which cancels the thread). On virtual
    time: the 3 s deadline is exact."""
    clock = MockClock()
    mgr_ctx = corral.Token(timeout=3, clock=clock)
    sup = supervisor("tm-7", token=mgr_ctx)
    sup.wait(timeout=0)  # before start: returns at once
    started = threading.Event()
    slept: list[bool] = []

    def sleep1() -> None:
        started.set()
        slept.append(corral.sleep(10))

    t = sup.spawn(sleep1, name="sleep1")
    sup.start()
    assert started.wait(WAIT)
    with pytest.raises(TimeoutError):
        sup.wait(timeout=BLOCKED)  # nothing stopped it yet
    clock.advance(3)
    sup.wait(timeout=WAIT)
    assert clock.monotonic() == 3
    assert slept == [False]  # the 10 s sleep was cut short by the stop
    assert t.state is TaskState.CANCELLED
    assert sup.is_stopped


def test_tm_8_should_cancel_a_thread_if_another_with_the_same_id_is_started() -> None:
    """seed-semantics 1.4 #8: running a task with the id of a running one cancels the old one
    (cause Replaced); the new one runs once the old one has finished."""
    started = threading.Event()
    log: list[str] = []

    def first() -> None:
        started.set()
        corral.sleep(10)
        log.append(f"first ended: {type(corral.current_token().cause).__name__}")

    def second() -> None:
        log.append("second ran")

    sup = supervisor("tm-8")
    sup.start()
    a = sup.spawn(first, name="sleep")
    assert started.wait(WAIT)
    b = sup.spawn(second, name="sleep", replace=True)
    b.join(WAIT)
    sup.stop(timeout=WAIT)  # Go asserts < 3 s; here only a backstop
    assert log == ["first ended: Replaced", "second ran"]
    assert a.state is TaskState.CANCELLED
    assert b.state is TaskState.SUCCEEDED


def test_tm_9_should_have_no_effect_if_started_multiple_times() -> None:
    """seed-semantics 1.4 #9: start() three times before and after the second batch: no
    error, value == 10."""
    value = Counter()
    sup = supervisor("tm-9")
    for i in range(5):
        sup.spawn(value.add, 1, name=str(i))
    for _ in range(3):
        sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for _ in range(3):
        sup.start()
    for t in second:
        t.join(WAIT)
    sup.stop(WAIT)
    assert value.value == 10


def test_tm_10_should_have_no_effect_if_stopped_multiple_times() -> None:
    """seed-semantics 1.4 #10: stop() three times: no error, value == 10."""
    value = Counter()
    sup = supervisor("tm-10")
    for i in range(5):
        sup.spawn(value.add, 1, name=str(i))
    sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for t in second:
        t.join(WAIT)
    for _ in range(3):
        sup.stop(WAIT)
    assert value.value == 10
    assert sup.is_stopped


def test_tm_11_start_after_stop_raises() -> None:
    """seed-semantics 1.4 #11: Start after Stop panics -> SupervisorStopped."""
    sup = supervisor("tm-11")
    sup.start()
    sup.stop(WAIT)
    with pytest.raises(corral.SupervisorStopped):
        sup.start()


def test_tm_extra_stop_before_start_cancels_the_queue() -> None:
    """seed-semantics 1.4 extra "Stop before Start raises": corral decided otherwise (DESIGN:
    stop() before start() just marks it stopped). Queued tasks end CANCELLED without
    running, their on_finish still runs, and start() then raises."""
    ran: list[str] = []
    finished: list[str] = []
    sup = supervisor("tm-stop-first", on_finish=lambda t: finished.append(t.name))
    queued = [sup.spawn(ran.append, name, name=name) for name in ("a", "b")]
    sup.stop(WAIT)
    assert (sup.is_started, sup.is_stopped, sup.is_running) == (False, True, False)
    assert ran == []
    assert [t.state for t in queued] == [TaskState.CANCELLED] * 2
    assert sorted(finished) == ["a", "b"]
    with pytest.raises(corral.SupervisorStopped):
        sup.start()


def test_tm_extra_run_after_stop_is_refused() -> None:
    """seed-semantics 1.4 extra "Run after Stop is ignored": corral raises
    SupervisorStopped instead of dropping the work silently; nothing runs."""
    ran: list[int] = []
    sup = supervisor("tm-run-after-stop")
    sup.start()
    sup.stop(WAIT)
    with pytest.raises(corral.SupervisorStopped):
        sup.spawn(ran.append, 1)
    assert ran == []


def test_tm_extra_same_id_while_queued_replaces_the_queued_task() -> None:
    """seed-semantics 1.4 extra: Run with the same id while queued replaces the queued
    thread, so only the last one runs (replace=True; without it, DuplicateTaskName)."""
    ran: list[str] = []
    finished: list[str] = []
    sup = supervisor("tm-queued-replace")
    old = sup.spawn(ran.append, "old", name="x", on_finish=lambda t: finished.append("old"))
    with pytest.raises(corral.DuplicateTaskName):
        sup.spawn(ran.append, "dup", name="x")
    new = sup.spawn(ran.append, "new", name="x", replace=True)
    assert old.state is TaskState.CANCELLED  # replaced in the queue, never ran
    sup.start()
    new.join(WAIT)
    sup.stop(WAIT)
    assert ran == ["new"]
    assert finished == ["old"]  # unlike Go, the replaced task's on_finish still runs
    with pytest.raises(corral.Cancelled) as info:
        old.result()
    assert isinstance(info.value.cause, corral.Replaced)


def test_tm_extra_callback_order_task_then_supervisor() -> None:
    """seed-semantics 1.4 extra / 1.2: the thread's onFinish runs before the manager's, both
    get the thread's result (here the Task: state and error), and the thread's token is
    already cancelled when they run."""
    err = RuntimeError("cache.Start failed")
    log: list[tuple[str, str, TaskState, BaseException | None, bool]] = []

    def record(who: str) -> Callable[[corral.Task[Any]], None]:
        def hook(t: corral.Task[Any]) -> None:
            log.append((who, t.name, t.state, t.last_error, t.token.cancelled))

        return hook

    sup = supervisor("tm-order", on_finish=record("supervisor"))
    sup.start()
    t = sup.spawn(raiser(err), name="watch", on_finish=record("task"))
    t.join(WAIT)
    sup.stop(WAIT)
    assert log == [
        ("task", "watch", TaskState.FAILED, err, True),
        ("supervisor", "watch", TaskState.FAILED, err, True),
    ]


def test_tm_extra_restart_on_error_restarts_until_success() -> None:
    """seed-semantics 1.4 extra: RestartOnError restarts on error until success ->
    Restart.ON_FAILURE; each failed attempt reaches on_failed."""
    failed: list[str] = []
    calls = Counter()

    def flaky() -> str:
        if calls.add(1) < 3:
            raise ConnectionError(f"attempt {calls.value}")
        return "synced"

    sup = supervisor("tm-on-failure", hooks=corral.Hooks(on_failed=lambda t, e: failed.append(str(e))))
    sup.start()
    t = sup.spawn(flaky, name="flaky", restart=Restart.ON_FAILURE, backoff=NOW)
    assert t.result(WAIT) == "synced"
    sup.stop(WAIT)
    assert t.attempts == 3
    assert failed == ["attempt 1", "attempt 2"]


def test_tm_extra_restart_on_success_is_the_opposite() -> None:
    """seed-semantics 1.4 extra: RestartOnSuccess restarts only after a success ->
    Restart.ON_SUCCESS: two successes are run again, the failure ends the task."""
    err = ValueError("third run fails")
    calls = Counter()

    def job() -> int:
        n = calls.add(1)
        if n == 3:
            raise err
        return n

    sup = supervisor("tm-on-success")
    sup.start()
    t = sup.spawn(job, name="job", restart=Restart.ON_SUCCESS, backoff=NOW)
    assert t.exception(WAIT) is err
    sup.stop(WAIT)
    assert t.attempts == 3
    assert t.state is TaskState.FAILED
    assert sup.failures == [err]


def test_tm_extra_restart_always_reruns_both_ways_until_stopped() -> None:
    """seed-semantics 1.2 Restart (the unconditional onFinish) -> Restart.ALWAYS: a failure
    and a success are both run again; stop() ends it."""
    calls = Counter()
    third = threading.Event()

    def job() -> None:
        n = calls.add(1)
        if n == 1:
            raise ValueError("first run fails")
        if n == 3:
            third.set()
            corral.current_token().wait(WAIT)

    sup = supervisor("tm-always")
    sup.start()
    t = sup.spawn(job, name="job", restart=Restart.ALWAYS, backoff=NOW)
    assert third.wait(WAIT)
    sup.stop(WAIT)
    assert t.attempts == 3
    assert t.state is TaskState.CANCELLED


def test_tm_extra_restart_is_suppressed_once_stopped() -> None:
    """seed-semantics 1.4 extra "Restart is suppressed once stopped": a task waiting to
    restart ends CANCELLED on stop() and never runs again (on virtual time)."""
    clock = MockClock()
    runs = Counter()

    def fail() -> None:
        runs.add(1)
        raise ValueError("fails")

    sup = supervisor("tm-no-restart-after-stop", clock=clock)
    sup.start()
    t = sup.spawn(fail, name="fail", restart=Restart.ON_FAILURE,
                  backoff=corral.Backoff(initial=5, maximum=5, jitter=0))
    clock.wait_for_timers(1)
    assert t.state is TaskState.BACKOFF
    sup.stop(WAIT)
    clock.advance(100)  # the restart would have been due long ago
    assert runs.value == 1
    assert t.attempts == 1
    assert state_of(t) is TaskState.CANCELLED
    assert clock.pending == 0


def test_tm_extra_wait_after_stop_returns_at_once() -> None:
    """seed-semantics 1.4 extra: Wait after Stop returns immediately (timeout=0 suffices)."""
    sup = supervisor("tm-wait-after-stop")
    sup.start()
    sup.spawn(wait_for_cancel, name="w")
    sup.stop(WAIT)
    sup.wait(timeout=0)
    assert sup.is_stopped


def test_tm_wait_blocks_until_stopped_even_with_no_tasks_left() -> None:
    """seed-semantics 1.2 Wait: if all threads finish but nothing stops the manager, Wait
    keeps blocking, because new threads can still be added."""
    sup = supervisor("tm-wait-blocks")
    sup.start()
    sup.spawn(lambda: None, name="a").join(WAIT)
    with pytest.raises(TimeoutError):
        sup.wait(timeout=BLOCKED)
    assert sup.spawn(lambda: "more work", name="b").result(WAIT) == "more work"
    sup.stop(WAIT)
    sup.wait(timeout=0)


def test_tm_bug_restarted_task_gets_a_fresh_uncancelled_token() -> None:
    """seed-semantics 1.2 **BUG?** a restarted thread reuses its cancelled ctx, so a
    ctx-aware work returns at once and loops. corral: each attempt gets a fresh,
    uncancelled token, and the restarted watch keeps running until stopped."""
    log: list[str] = []
    tokens: list[corral.Token] = []
    watching = threading.Event()
    calls = Counter()

    def watch() -> None:  # like cache.Start(ctx): blocks until its ctx is cancelled
        n = calls.add(1)
        tok = corral.current_token()
        tokens.append(tok)
        log.append(f"run {n}: cancelled={tok.cancelled}")
        if n == 1:
            raise ConnectionError("watch broke")
        watching.set()
        tok.wait(WAIT)

    sup = supervisor("tm-fresh-token")
    sup.start()
    t = sup.spawn(watch, name="watch", restart=Restart.ON_FAILURE, backoff=NOW)
    assert watching.wait(WAIT)
    assert t.state is TaskState.RUNNING
    assert tokens[0].cancelled
    assert not tokens[1].cancelled
    assert tokens[0] is not tokens[1]
    sup.stop(WAIT)
    assert log == ["run 1: cancelled=False", "run 2: cancelled=False"]
    assert t.attempts == 2  # no tight restart loop
    assert isinstance(tokens[1].cause, corral.Stopped)


def test_tm_bug_replaced_task_end_does_not_cancel_its_replacement() -> None:
    """seed-semantics 1.2 **BUG?** when a replaced thread finishes it cancels (and untracks)
    its replacement. corral: the old task's end never touches the new one, which keeps
    running, stays tracked, and is stopped by stop() with cause Stopped."""
    gate = threading.Event()
    old_started = threading.Event()
    new_started = threading.Event()

    def old() -> None:
        old_started.set()
        gate.wait(WAIT)  # ignores its token: it ends only after the replacement was spawned

    def new() -> None:
        new_started.set()
        corral.current_token().wait(WAIT)

    sup = supervisor("tm-replacement")
    sup.start()
    try:
        a = sup.spawn(old, name="x")
        assert old_started.wait(WAIT)
        b = sup.spawn(new, name="x", replace=True)
        assert a.token.cancelled
        assert b.state is TaskState.PENDING  # waits for the old one to finish
    finally:
        gate.set()
    a.join(WAIT)
    assert new_started.wait(WAIT)
    assert not b.token.cancelled
    assert sup.get("x") is b
    sup.stop(WAIT)
    assert a.state is TaskState.CANCELLED
    assert state_of(b) is TaskState.CANCELLED
    assert isinstance(b.token.cause, corral.Stopped)


def test_tm_deadlock_219_stop_from_inside_a_task() -> None:
    """seed-semantics 1.3 #219 (potential deadlock when stopping): a task that calls stop()
    on its own supervisor does not wait for itself; the supervisor then stops."""
    log: list[str] = []

    def stopper() -> None:
        sup.stop()
        log.append("stop() returned inside the task")

    sup = supervisor("tm-stop-inside")
    sup.start()
    t = sup.spawn(stopper, name="stopper")
    sup.wait(timeout=WAIT)
    assert log == ["stop() returned inside the task"]
    assert sup.is_stopped
    assert t.done


def test_tm_deadlock_219_stop_from_a_callback_while_stopping() -> None:
    """seed-semantics 1.3 #219: Stop called from a callback (onFinish) while a stop is in
    progress returns early instead of deadlocking (Go returns before taking the lock)."""
    outcomes: list[str] = []
    started = threading.Event()

    def on_finish(t: corral.Task[Any]) -> None:
        try:
            sup.stop(timeout=2)  # backstop: a deadlock shows as StopTimeout after 2 s
            outcomes.append("returned")
        except corral.StopTimeout:
            outcomes.append("deadlocked until StopTimeout")

    def work() -> None:
        started.set()
        corral.current_token().wait(WAIT)

    sup = supervisor("tm-stop-in-callback", on_finish=on_finish)
    sup.start()
    sup.spawn(work, name="work")
    assert started.wait(WAIT)
    sup.stop(WAIT)
    assert outcomes == ["returned"]


def test_tm_deadlock_restart_loop_racing_stop() -> None:
    """seed-semantics 1.2 "Restart can race with Stop" (deadlock risk): a task restarting
    at once in a loop does not keep stop() from completing, and runs no more after it."""
    looping = threading.Event()
    calls = Counter()

    def spin() -> None:
        if calls.add(1) == 50:
            looping.set()

    sup = supervisor("tm-restart-race")
    sup.start()
    t = sup.spawn(spin, name="spin", restart=Restart.ALWAYS, backoff=NOW)
    assert looping.wait(WAIT)
    sup.stop(WAIT)
    assert t.done
    assert t.state.is_final
    assert calls.value == t.attempts >= 50


def test_tm_deadlock_more_than_100_tasks_end_during_stop() -> None:
    """seed-semantics 1.2: with the watcher itself stopping, more than 100 threads finishing
    during Stop filled the `returns` buffer and blocked Stop forever. corral: 120 tasks end
    during stop(), every hook runs, stop() completes."""
    n = 120
    running = Counter()
    all_running = threading.Event()
    finished = Counter()

    def work() -> None:
        if running.add(1) == n:
            all_running.set()
        corral.current_token().wait(WAIT)

    mgr_ctx = corral.Token()
    sup = supervisor("tm-many", token=mgr_ctx, on_finish=lambda t: finished.add(1))
    sup.start()
    tasks = [sup.spawn(work) for _ in range(n)]
    assert all_running.wait(WAIT)
    mgr_ctx.cancel("manager context cancelled")  # the stop starts off the caller's thread
    sup.wait(timeout=WAIT)
    assert finished.value == n
    assert all(t.state is TaskState.CANCELLED for t in tasks)


def test_tm_stop_blocks_on_a_task_that_ignores_its_token() -> None:
    """seed-semantics 1.2 Stop: a thread whose work ignores its ctx keeps Stop blocked until
    it returns. corral: stop(timeout) raises StopTimeout naming it with its stack; the stop
    completes once it returns."""
    gate = threading.Event()
    started = threading.Event()

    def stubborn() -> None:
        started.set()
        gate.wait(WAIT)

    sup = supervisor("tm-stubborn")
    sup.start()
    t = sup.spawn(stubborn, name="stubborn")
    try:
        assert started.wait(WAIT)
        with pytest.raises(corral.StopTimeout) as info:
            sup.stop(timeout=BLOCKED)
        assert list(info.value.running) == ["stubborn"]
        assert "in stubborn" in info.value.running["stubborn"]
        assert sup.is_stopped
        assert t.state is TaskState.RUNNING
    finally:
        gate.set()
    sup.wait(timeout=WAIT)
    assert state_of(t) is TaskState.CANCELLED  # it returned after its token was cancelled


def test_tm_errors_are_logged_once_and_kept_in_failures(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    """seed-semantics 1.2: errors are only logged ("Error in thread" with the id). corral: a
    supervisor logs a failure once at ERROR with its traceback, keeps it in `failures`, and
    stop() does not raise it."""
    err = RuntimeError("watch failed")
    sup = supervisor("tm-errors")
    sup.start()
    sup.spawn(raiser(err), name="watch").join(WAIT)
    sup.stop(WAIT)
    assert sup.failures == [err]
    errors = [r for r in corral_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is err
    assert "watch" in errors[0].getMessage()


def test_tm_causes_tell_stop_replace_and_cancel_apart() -> None:
    """seed-semantics 1.2: in Go, Stop, replacement and cancel all give plain
    context.Canceled. corral keeps the cause: Stopped, Replaced, or the given text; none
    is a failure."""
    started = {key: threading.Event() for key in ("replaced", "cancelled", "stopped")}
    causes: dict[str, BaseException | None] = {}

    def waiter(key: str) -> None:
        started[key].set()
        tok = corral.current_token()
        tok.wait(WAIT)
        causes[key] = tok.cause

    sup = supervisor("tm-causes")
    sup.start()
    replaced = sup.spawn(waiter, "replaced", name="x")
    cancelled = sup.spawn(waiter, "cancelled", name="y")
    sup.spawn(waiter, "stopped", name="z")
    assert all(e.wait(WAIT) for e in started.values())
    sup.spawn(lambda: None, name="x", replace=True)
    cancelled.cancel("by hand")
    replaced.join(WAIT)
    cancelled.join(WAIT)
    sup.stop(WAIT)
    assert isinstance(causes["replaced"], corral.Replaced)
    assert isinstance(causes["cancelled"], corral.Cancelled)
    assert str(causes["cancelled"]) == "by hand"
    assert isinstance(causes["stopped"], corral.Stopped)
    assert sup.failures == []


def test_tm_queued_tasks_start_in_spawn_order() -> None:
    """seed-semantics 1.2 Start: Go starts queued threads in map order (unspecified).
    corral starts them in spawn order (visible with limit=1)."""
    order: list[str] = []
    sup = supervisor("tm-order-of-start", limit=1)
    tasks = [sup.spawn(order.append, name, name=name) for name in ("c", "a", "b")]
    sup.start()
    for t in tasks:
        t.join(WAIT)
    sup.stop(WAIT)
    assert order == ["c", "a", "b"]


def test_tm_nil_work_is_a_type_error() -> None:
    """seed-semantics 1.2 Run: a nil work func is allowed and skipped in Go. corral checks
    arguments at the call: a non-callable is a TypeError, and nothing is queued."""
    sup = supervisor("tm-nil")
    with pytest.raises(TypeError):
        sup.spawn(None, name="nil")  # type: ignore[arg-type]
    assert len(sup) == 0
    sup.stop(WAIT)


def test_tm_exception_in_on_finish_is_logged_not_fatal(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    """seed-semantics 1.2: a panic in work or onFinish crashes the Go process. corral: a
    callback that raises is logged and the supervisor keeps working."""
    err = RuntimeError("callback bug")

    def bad(t: corral.Task[Any]) -> None:
        raise err

    sup = supervisor("tm-bad-callback", on_finish=bad)
    sup.start()
    assert sup.spawn(lambda: 1, name="one").result(WAIT) == 1
    assert sup.spawn(lambda: 2, name="two").result(WAIT) == 2
    sup.stop(WAIT)
    logged = [r for r in corral_log.records if r.exc_info is not None and r.exc_info[1] is err]
    assert len(logged) == 2
    assert sup.failures == []


def test_tm_manager_token_cancelled_before_start_stops_it() -> None:
    """seed-semantics 1.2: mgrCtx.Done() stops the manager only once started (Go). corral:
    cancelling the supervisor's token stops it at once, even before start(): queued tasks
    end without running, and start() then raises."""
    ran: list[int] = []
    mgr_ctx = corral.Token()
    sup = supervisor("tm-token-first", token=mgr_ctx)
    t = sup.spawn(ran.append, 1, name="queued")
    mgr_ctx.cancel("manager context cancelled")
    sup.wait(timeout=WAIT)
    assert sup.is_stopped
    assert t.state is TaskState.CANCELLED
    assert ran == []
    with pytest.raises(corral.SupervisorStopped):
        sup.start()


# =====================================================================================
# seeds/001 goroutine-manager README: dependencies and shutdown cascades -> needs=
# =====================================================================================


def test_gm_readme_dependencies_shut_down_in_reverse_order() -> None:
    """seeds/001 README §5 "Handling Dependencies Between Goroutines": one goroutine must be
    shut down and waited for before the one it depends on -> needs=: the dependent starts
    after what it needs and is stopped (and finished) before it."""
    log: list[str] = []
    lock = threading.Lock()

    def service(name: str) -> None:
        with lock:
            log.append(f"{name} started")
        corral.ready()
        corral.current_token().wait(WAIT)
        with lock:
            log.append(f"{name} stopped")

    sup = supervisor("gm-deps")
    sup.spawn(service, "hypervisor", name="hypervisor", signals_ready=True)
    firecracker = sup.spawn(
        service, "firecracker", name="firecracker", needs=("hypervisor",), signals_ready=True
    )
    sup.start()
    firecracker.wait_ready(WAIT)
    sup.stop(WAIT)
    assert log == [
        "hypervisor started",
        "firecracker started",
        "firecracker stopped",
        "hypervisor stopped",
    ]


# =====================================================================================
# 2. goroutine-manager (loopholelabs) -> Group, collect()/wrap(), ExceptionGroup
# =====================================================================================


def test_gm_1_foreground_panic_collector_recovers() -> None:
    """seed-semantics 2.3 #1: a panic inside a foreground collector is swallowed, collected
    into errs, and cancels the context; Wait is not blocked."""
    err = ValueError("test error")
    g = corral.Group("gm-1")
    with g.collect():
        raise err
    # the exception did not propagate: we got here
    assert g.token.cancelled
    assert g.failures == [err]
    assert group_errors(lambda: g.join(WAIT)) == (err,)
    assert any("collect()" in note for note in err.__notes__)


def test_gm_2_background_panic_collector_recovers() -> None:
    """seed-semantics 2.3 #2: same as #1 with a background collector."""
    err = ValueError("test error")
    g = corral.Group("gm-2")
    with g.collect(background=True):
        raise err
    assert g.token.cancelled
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, check=lambda e: e is err)):
        g.join(WAIT)


def test_gm_3_foreground_goroutine() -> None:
    """seed-semantics 2.3 #3: a foreground task blocks Wait; before it panics the context is
    not done and nothing is collected; once it panics, Wait returns, the context is done and
    the error is collected."""
    err = ValueError("test error")
    done = threading.Event()

    def fg() -> None:
        done.wait(WAIT)
        raise err

    g = corral.Group("gm-3")
    try:
        g.spawn(fg)
        assert_blocked(g)
        assert not g.token.cancelled
        assert g.failures == []
    finally:
        done.set()
    assert group_errors(lambda: g.join(WAIT)) == (err,)
    assert g.token.cancelled


def test_gm_4_background_goroutine_failure_is_collected() -> None:
    """seed-semantics 2.3 #4: a background task's panic is collected too and cancels the
    context ("eventually": the port waits on the token instead of racing)."""
    err = ValueError("test error")
    done = threading.Event()

    def bg() -> None:
        done.wait(WAIT)
        raise err

    g = corral.Group("gm-4")
    try:
        g.spawn(bg, background=True)
        assert not g.token.cancelled
        assert g.failures == []
        assert len(g) == 1
    finally:
        done.set()
    assert g.token.wait(WAIT)
    assert g.failures == [err]
    assert group_errors(lambda: g.join(WAIT)) == (err,)


def test_gm_4_background_goroutine_does_not_hold_wait() -> None:
    """seed-semantics 2.3 #4: background work is not waited for ("Wait not blocked").
    corral: when the foreground is done, a background task is cancelled (cause Stopped)
    and waited for, so it never outlives its group; nothing is reported."""
    started = threading.Event()
    causes: list[BaseException | None] = []

    def bg() -> None:
        started.set()
        tok = corral.current_token()
        tok.wait(WAIT)
        causes.append(tok.cause)

    with corral.Group("gm-4b") as g:
        t = g.spawn(bg, background=True)
        assert started.wait(WAIT)
    assert t.state is TaskState.CANCELLED
    assert len(causes) == 1
    assert isinstance(causes[0], corral.Stopped)
    assert g.failures == []


def test_gm_5_stop_all_goroutines() -> None:
    """seed-semantics 2.3 #5: a background and a foreground task wait on the context; before
    the stop nothing ends and Wait blocks; StopAllGoroutines (cancel with Stopped) then Wait:
    both finished, context done, nothing collected."""
    started = {"fg": threading.Event(), "bg": threading.Event()}

    def worker(key: str) -> None:
        started[key].set()
        corral.current_token().wait(WAIT)

    g = corral.Group("gm-5")
    bg = g.spawn(worker, "bg", background=True)
    fg = g.spawn(worker, "fg")
    assert all(e.wait(WAIT) for e in started.values())
    assert_blocked(g)
    assert (bg.state, fg.state) == (TaskState.RUNNING, TaskState.RUNNING)
    assert not g.token.cancelled
    assert g.failures == []
    g.cancel(corral.Stopped("stop all goroutines"))
    g.join(WAIT)  # no ExceptionGroup: a graceful stop is not a failure
    assert (bg.state, fg.state) == (TaskState.CANCELLED, TaskState.CANCELLED)
    assert isinstance(g.token.cause, corral.Stopped)


def test_gm_6_multiple_goroutines() -> None:
    """seed-semantics 2.3 #6: fg1 (a task), fg2 (a plain thread in a foreground collector)
    and bg1 (a background task): Wait blocks until both foreground ones are done, whatever
    bg1 does; with no panic the context is never cancelled."""
    fg1_gate, fg2_gate, bg1_gate = threading.Event(), threading.Event(), threading.Event()
    fg2_entered = threading.Event()
    g = corral.Group("gm-6")

    def external() -> None:  # started by someone else, but part of the group's lifecycle
        with g.collect():
            fg2_entered.set()
            fg2_gate.wait(WAIT)

    thread = threading.Thread(target=external)
    try:
        fg1 = g.spawn(fg1_gate.wait, WAIT)
        thread.start()
        bg1 = g.spawn(bg1_gate.wait, WAIT, background=True)
        assert fg2_entered.wait(WAIT)
        assert_blocked(g)
        fg1_gate.set()
        fg1.join(WAIT)
        assert_blocked(g)  # fg2 still holds it
        bg1_gate.set()
        bg1.join(WAIT)
        assert_blocked(g)
        assert not g.token.cancelled
    finally:
        for gate in (fg1_gate, fg2_gate, bg1_gate):
            gate.set()
        thread.join(WAIT)
    assert not g.token.cancelled  # no failure, so no cancel
    g.join(WAIT)
    assert g.failures == []


def test_gm_7_reuse_goroutine_manager() -> None:
    """seed-semantics 2.3 #7: the manager takes new batches after each Wait; after
    StopAllGoroutines a new goroutine sees a done context; errs stays nil. corral: a group
    takes tasks until it is joined; a task spawned after the cancel ends CANCELLED without
    running; after join the group is closed (GroupClosed), it is not reusable."""
    g = corral.Group("gm-7")
    for _batch in range(2):
        gates = [threading.Event(), threading.Event()]
        tasks = [g.spawn(gate.wait, WAIT) for gate in gates]
        for gate in gates:
            gate.set()
        for t in tasks:
            t.join(WAIT)
        assert all(t.state is TaskState.SUCCEEDED for t in tasks)
    waiting = [g.spawn(wait_for_cancel), g.spawn(wait_for_cancel)]
    g.cancel(corral.Stopped("stop all goroutines"))
    for t in waiting:
        t.join(WAIT)
    ran: list[bool] = []
    late = g.spawn(ran.append, True)
    assert late.state is TaskState.CANCELLED
    g.join(WAIT)  # errs nil
    assert ran == []
    assert all(t.state is TaskState.CANCELLED for t in waiting)
    with pytest.raises(corral.GroupClosed):
        g.spawn(ran.append, True)


def test_gm_8_multiple_goroutine_errors() -> None:
    """seed-semantics 2.3 #8: fg1 panics err1, which cancels the context; fg2 wakes on it and
    panics err2 (not a cancellation, so recorded): both are collected, in recovery order."""
    err1, err2 = ValueError("test error 1"), ValueError("test error 2")
    gate = threading.Event()
    fg2_causes: list[BaseException | None] = []

    def fg1() -> None:
        gate.wait(WAIT)
        raise err1

    def fg2() -> None:
        tok = corral.current_token()
        tok.wait(WAIT)
        fg2_causes.append(tok.cause)
        raise err2

    g = corral.Group("gm-8")
    try:
        g.spawn(fg1)
        g.spawn(fg2)
        assert_blocked(g)
        assert not g.token.cancelled
    finally:
        gate.set()
    assert group_errors(lambda: g.join(WAIT)) == (err1, err2)
    assert fg2_causes == [err1]  # the failure that triggered fail-fast is the cause


def test_gm_9_parent_context() -> None:
    """seed-semantics 2.3 #9: cancelling the parent context reaches the group's tasks; a
    task that then raises is collected."""
    err = ValueError("test error")
    parent = corral.Token()

    def fg() -> None:
        corral.current_token().wait(WAIT)
        raise err

    g = corral.Group("gm-9", token=parent)
    g.spawn(fg)
    assert_blocked(g)
    assert not g.token.cancelled
    parent.cancel("request went away")
    assert group_errors(lambda: g.join(WAIT)) == (err,)
    assert is_cancelled(g.token)
    assert g.token.cause is parent.cause


def test_gm_10_hooks_on_after_recover_300_failing_tasks() -> None:
    """seed-semantics 2.3 #10: 300 foreground tasks each fail: the hook (on_failed) is called
    exactly 300 times, even after the first failure cancelled the group, and every failure
    is reported exactly once in the ExceptionGroup."""
    n = 300
    calls = Counter()
    errors = [ValueError(f"test error {i}") for i in range(n)]
    gate = threading.Event()

    def fail(i: int) -> None:
        gate.wait(WAIT)  # all 300 are running before the first one fails
        raise errors[i]

    g = corral.Group("gm-10", hooks=corral.Hooks(on_failed=lambda t, e: calls.add(1)))
    try:
        for i in range(n):
            g.spawn(fail, i)
    finally:
        gate.set()
    reported = group_errors(lambda: g.join(WAIT))
    assert calls.value == n
    assert len(reported) == n
    assert Tally(id(e) for e in reported) == Tally(id(e) for e in errors)


def test_gm_extra_cancelled_after_stop_is_not_recorded() -> None:
    """seed-semantics 2.3 extra: a Canceled panic after StopAllGoroutines is not recorded and
    the hook is not called. corral: a task raising Cancelled (check()) after a graceful
    stop ends CANCELLED, on_failed is not called, join raises nothing."""
    started = threading.Event()
    failed: list[BaseException] = []

    def fg() -> None:
        started.set()
        corral.current_token().wait(WAIT)
        corral.check()

    g = corral.Group("gm-canceled", hooks=corral.Hooks(on_failed=lambda t, e: failed.append(e)))
    t = g.spawn(fg)
    assert started.wait(WAIT)
    g.cancel(corral.Stopped("stop all goroutines"))
    g.join(WAIT)
    assert failed == []
    assert t.state is TaskState.CANCELLED
    assert t.exception() is None


def test_gm_extra_cancelled_after_parent_cancel_keeps_the_parent_cause() -> None:
    """seed-semantics 2.3 extra: the same Canceled panic after a *parent* cancel is recorded
    in Go, to tell "the request timed out" from "we stopped on purpose". corral never
    reports Cancelled as a failure; the distinction is the cause (a deadline's
    TimeoutError, not Stopped)."""
    clock = MockClock()
    request = corral.Token(timeout=1, clock=clock)
    started = threading.Event()

    def fg() -> None:
        started.set()
        corral.current_token().wait(WAIT)
        corral.check()

    g = corral.Group("gm-parent-canceled", token=request)
    t = g.spawn(fg)
    assert started.wait(WAIT)
    clock.advance(1)
    g.join(WAIT)
    assert t.state is TaskState.CANCELLED
    assert isinstance(g.token.cause, TimeoutError)
    assert isinstance(t.token.cause, TimeoutError)
    assert not isinstance(t.token.cause, corral.Stopped)


def test_gm_extra_any_other_exception_after_stop_is_recorded() -> None:
    """seed-semantics 2.2: Canceled panics are graceful after a stop, but any other panic is
    always recorded, even after stop. corral: collect() swallows Cancelled and Stopped
    without recording them; a ValueError after the stop is a failure."""
    err = ValueError("close failed")
    g = corral.Group("gm-graceful")
    g.cancel(corral.Stopped("stop all goroutines"))
    with g.collect():
        g.token.check()  # Cancelled
    with g.collect():
        raise corral.Stopped("graceful")
    assert g.failures == []
    with g.collect():
        raise err
    assert group_errors(lambda: g.join(WAIT)) == (err,)


def test_gm_extra_non_exception_panic_is_not_lost() -> None:
    """seed-semantics 2.3 extra: a non-error panic value is still recorded. Python raises
    only exceptions; the nearest case is a BaseException that is not an Exception
    (SystemExit): it cancels the group and join re-raises it as is."""
    sibling_started = threading.Event()

    def sibling() -> None:
        sibling_started.set()
        corral.current_token().wait(WAIT)

    g = corral.Group("gm-systemexit")
    s = g.spawn(sibling)
    assert sibling_started.wait(WAIT)
    g.spawn(raiser(SystemExit(3)))
    with pytest.raises(SystemExit) as info:
        g.join(WAIT)
    assert info.value.code == 3
    assert g.token.cancelled
    assert s.state is TaskState.CANCELLED


def test_gm_extra_unfinished_foreground_collector_blocks_wait() -> None:
    """seed-semantics 2.3 extra: a foreground collector that is never invoked blocks Wait.
    corral counts a collector from __enter__ (Go: from creation), so a collector entered and
    not yet exited blocks join, and one only created does not."""
    g = corral.Group("gm-collector")
    g.collect()  # created, never entered: holds nothing
    held = g.collect()
    held.__enter__()
    try:
        assert_blocked(g)
    finally:
        held.__exit__(None, None, None)
    g.join(WAIT)


def test_gm_extra_on_after_recover_runs_before_the_cancel() -> None:
    """seed-semantics 2.2 Hooks: OnAfterRecover runs once per recorded panic, before the
    context is cancelled. corral: on_failed sees the group not yet cancelled."""
    err = ValueError("test error")
    seen: list[bool] = []
    g = corral.Group(
        "gm-hook-order", hooks=corral.Hooks(on_failed=lambda t, e: seen.append(g.token.cancelled))
    )
    g.spawn(raiser(err))
    assert group_errors(lambda: g.join(WAIT)) == (err,)
    assert seen == [False]
    assert g.token.cancelled


def test_gm_readme_wrap_collects_errors_of_external_callbacks() -> None:
    """seeds/001 README §2 (Locker_handler): a callback called by an external library gets
    its errors collected (and the group cancelled) instead of being lost -> wrap()."""
    err = ConnectionError("could not send event")
    g = corral.Group("gm-wrap")
    returned: list[object] = []

    def locker_handler(event: str) -> str:
        if event == "pre-lock":
            raise err
        return f"handled {event}"

    handler = g.wrap(locker_handler)

    def external_library() -> None:
        returned.append(handler("ok"))
        returned.append(handler("pre-lock"))

    thread = threading.Thread(target=external_library)
    thread.start()
    thread.join(WAIT)
    assert returned == ["handled ok", None]
    assert g.token.cancelled
    assert group_errors(lambda: g.join(WAIT)) == (err,)


# =====================================================================================
# seeds/002 ThreadGroup -> Group(limit=), corral.sleep, wait_until, the tree
# =====================================================================================


def test_tg_limit_caps_concurrent_tasks() -> None:
    """seeds/002 ThreadGroup(max_concurrent_threads=10): with 30 users to verify, at most 10
    tasks run at once; the others wait (PENDING) until a slot frees; join(600) waits."""
    gate = threading.Event()
    running = Counter()
    peak = Counter()
    ten_running = threading.Event()
    peak_lock = threading.Lock()

    def verify_user(user: int) -> None:
        now = running.add(1)
        with peak_lock:
            if now > peak.value:
                peak.value = now
        if now == 10:
            ten_running.set()
        gate.wait(WAIT)
        running.add(-1)

    g = corral.Group("Verifying Users", limit=10)
    try:
        tasks = [g.spawn(verify_user, user) for user in range(30)]
        assert ten_running.wait(WAIT)
        assert Tally(t.state for t in tasks) == {TaskState.RUNNING: 10, TaskState.PENDING: 20}
        with pytest.raises(TimeoutError):
            g.join(timeout=BLOCKED)  # join(600) times out while users are being verified
    finally:
        gate.set()
    g.join(timeout=600)
    assert peak.value == 10
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)


def test_tg_event_aware_sleep_stops_the_retry_loop() -> None:
    """seeds/002 event_aware_sleep: verify_user's retry loop sleeps 5 s between retries and
    breaks out as soon as the group's event is set (the group is cancelled)."""
    sleeping = threading.Event()
    log: list[str] = []

    def verify_user(user: str) -> None:
        retries = 3
        while retries > 0:
            log.append(f"verify {user}")  # verify_user_internal() failed
            sleeping.set()
            if not corral.sleep(5):
                log.append("stopped sleeping early")
                break
            retries -= 1

    g = corral.Group("verify")
    g.spawn(verify_user, "alice")
    assert sleeping.wait(WAIT)
    g.cancel(corral.Stopped("abort"))
    g.join(WAIT)
    assert log == ["verify alice", "stopped sleeping early"]


def test_tg_event_aware_sleep_outside_a_group_is_a_plain_sleep() -> None:
    """seeds/002: with no group event (main thread, no parent group) event_aware_sleep is a
    regular sleep: corral.sleep returns True and the current token is never cancelled."""
    assert corral.current_task() is None
    assert corral.sleep(0.001) is True
    assert not corral.cancelled()
    assert not corral.current_token().cancelled


def test_tg_wait_for_condition_then_stop_the_rest() -> None:
    """seeds/002 wait_for_condition(lambda: len(valid_users) > 0, timeout=600): once one
    user is valid, the other verifications are told to stop (gracefully: nothing is
    reported), and join returns."""
    valid_users: list[str] = []

    def verify_user(user: str) -> None:
        if user == "u3":
            valid_users.append(user)
            return
        corral.sleep(60)  # a slow verification, cut short by the stop

    g = corral.Group("Verifying Users")
    tasks = {user: g.spawn(verify_user, user) for user in ("u1", "u2", "u3", "u4")}
    assert g.wait_until(lambda: len(valid_users) > 0, timeout=600) is True
    g.join(timeout=600)
    assert valid_users == ["u3"]
    assert isinstance(g.token.cause, corral.Stopped)
    assert tasks.pop("u3").state is TaskState.SUCCEEDED
    assert all(t.state is TaskState.CANCELLED for t in tasks.values())


def test_tg_wait_for_condition_timeout_cancels_nothing() -> None:
    """seeds/002 wait_for_condition with a timeout: if the condition never holds, it returns
    False and the tasks keep running."""
    g = corral.Group("never")
    t = g.spawn(wait_for_cancel)
    assert g.wait_until(lambda: False, timeout=BLOCKED) is False
    assert not g.token.cancelled
    assert t.state is TaskState.RUNNING
    g.cancel()
    g.join(WAIT)


def test_tg_tree_of_groups_and_cancel_of_the_subtree() -> None:
    """seeds/002: two groups made in the main thread are roots; groups made by a task of
    ThreadGroup2 are its children (2.1, 2.2, 2.3); set_event_for_child_tasks on
    ThreadGroup2 (cancel) sets the event of every child group, and not ThreadGroup1's."""
    made: list[corral.Group] = []
    made_event = threading.Event()

    def worker_method() -> None:
        made.extend(corral.Group(f"ThreadGroup2.{i}") for i in (1, 2, 3))
        for sub in made:
            sub.spawn(wait_for_cancel)
        made_event.set()
        corral.current_token().wait(WAIT)

    g1 = corral.Group("ThreadGroup1")
    g2 = corral.Group("ThreadGroup2")
    g1_task = g1.spawn(wait_for_cancel)
    assert g1.parent is None
    assert g2.parent is None
    assert {g1, g2} <= set(corral.roots())
    g2.spawn(worker_method)
    assert made_event.wait(WAIT)
    assert g2.children == made
    assert all(sub.parent is g2 for sub in made)
    assert not set(made) & set(corral.roots())

    g2.cancel()  # set_event_for_child_tasks
    assert all(sub.token.cancelled for sub in made)
    assert not g1.token.cancelled
    g2.join(WAIT)
    assert all(sub.closed for sub in made)
    assert g1_task.state is TaskState.RUNNING
    g1.cancel()
    g1.join(WAIT)


def test_tg_forest_detached_group_is_a_root_of_its_own() -> None:
    """seeds/002: the tree can become a forest (daemon threads spawned from a group) ->
    Group(detached=True) inside a task is a root, not the task's child, and is not
    cancelled with it."""
    made: list[corral.Group] = []
    made_event = threading.Event()
    daemon_started = threading.Event()

    def daemon() -> None:
        daemon_started.set()
        corral.current_token().wait(WAIT)

    def spawner() -> None:
        d = corral.Group("daemons", detached=True)
        made.append(d)
        d.spawn(daemon)
        made_event.set()

    g = corral.Group("owner")
    g.spawn(spawner)
    assert made_event.wait(WAIT)
    d = made[0]
    g.join(WAIT)  # the task did not wait for its detached group
    g.cancel()
    assert d.parent is None
    assert d in corral.roots()
    assert daemon_started.wait(WAIT)
    assert not d.token.cancelled
    d.cancel()
    d.join(WAIT)


# =====================================================================================
# 3. background (robertrossmann / strvcom) -> Hooks with meta, len(), join
# =====================================================================================


def test_bg_v1_1_head_1_new_manager() -> None:
    """seed-semantics 3.5 v1 #1 Test_New and HEAD #1 Test_NewManager: a new manager has no
    hooks and counts nothing."""
    hooks = corral.Hooks()
    assert all(getattr(hooks, name) is None for name in (
        "on_added", "on_started", "on_succeeded", "on_failed", "on_restart", "on_finished",
    ))
    g = corral.Group("bg-new", hooks=hooks)
    assert isinstance(g, corral.Group)
    assert len(g) == 0
    assert g.tasks == []
    g.join(WAIT)


def test_bg_v1_2_run_executes_in_goroutine() -> None:
    """seed-semantics 3.5 v1 #2 / HEAD #2: Run returns before the task runs, and the task
    runs on another thread."""
    proceed = threading.Event()
    ran_on: list[int] = []

    def task() -> None:
        proceed.wait(WAIT)
        ran_on.append(threading.get_ident())

    g = corral.Group("bg-goroutine")
    try:
        t = g.spawn(task)
        assert ran_on == []  # spawn returned while the task is blocked
    finally:
        proceed.set()
    t.join(WAIT)
    g.join(WAIT)
    assert len(ran_on) == 1
    assert ran_on[0] != threading.get_ident()


def test_bg_v1_3_wait_waits_for_pending_tasks() -> None:
    """seed-semantics 3.5 v1 #3 / HEAD #3: Wait blocks while a task is pending, and returns
    once it is done."""
    proceed = threading.Event()
    waited = threading.Event()
    g = corral.Group("bg-wait")

    def waiter() -> None:
        g.join(WAIT)
        waited.set()

    thread = threading.Thread(target=waiter)
    try:
        g.spawn(proceed.wait, WAIT)
        thread.start()
        assert not waited.is_set()  # the task cannot have ended: it waits on proceed
    finally:
        proceed.set()
    thread.join(WAIT)
    assert waited.is_set()


def test_bg_v1_4_head_4_head_14_parent_cancel_does_not_reach_the_task() -> None:
    """seed-semantics 3.5 v1 #4, HEAD #4 and HEAD #14: the task context keeps the parent's
    values but is never cancelled by the parent (WithoutCancel). corral: work started by a
    request handler in a detached group keeps the handler's contextvars and is not
    cancelled when the request's group is."""
    proceed = threading.Event()
    work_started = threading.Event()
    seen: list[tuple[str, bool]] = []
    detached: list[corral.Group] = []

    def work() -> None:
        work_started.set()
        proceed.wait(WAIT)
        seen.append((REQUEST_ID.get(), corral.cancelled()))

    def handler() -> None:
        REQUEST_ID.set("req-7")
        d = corral.Group("background work", detached=True)
        detached.append(d)
        d.spawn(work)

    request = corral.Group("request")
    try:
        request.spawn(handler)
        request.join(WAIT)
        assert work_started.wait(WAIT)
        request.cancel("the request is over")
    finally:
        proceed.set()
    d = detached[0]
    d.join(WAIT)
    assert seen == [("req-7", False)]


def test_bg_v1_5_len_counts_the_task_while_its_callback_runs() -> None:
    """seed-semantics 3.5 v1 #5 Test_Len: inside OnTaskSucceeded, Len() still counts the
    finishing task (10, 9, ..., 1); after Wait it is 0."""
    lens: queue.SimpleQueue[int] = queue.SimpleQueue()
    g = corral.Group("bg-len", hooks=corral.Hooks(on_succeeded=lambda t, r: lens.put(len(g))))
    proceed = [threading.Event() for _ in range(10)]
    seen: list[int] = []
    try:
        tasks = [g.spawn(p.wait, WAIT) for p in proceed]
        for p, t in zip(proceed, tasks, strict=True):
            p.set()
            seen.append(lens.get(timeout=WAIT))
            t.join(WAIT)
    finally:
        for p in proceed:
            p.set()
    g.join(WAIT)
    assert seen == list(range(10, 0, -1))
    assert len(g) == 0


def test_bg_v1_6_head_5_on_task_added_with_meta() -> None:
    """seed-semantics 3.5 v1 #6 / HEAD #5: OnTaskAdded is called with the task's metadata,
    synchronously in the caller."""
    added: list[tuple[dict[str, Any], int]] = []
    g = corral.Group("bg-added", hooks=corral.Hooks(
        on_added=lambda t: added.append((dict(t.meta), threading.get_ident()))
    ))
    g.spawn(lambda: None, meta={"test": "value"})
    assert added == [({"test": "value"}, threading.get_ident())]  # before spawn returned
    g.join(WAIT)


def test_bg_v1_7_head_6_on_task_succeeded_with_meta() -> None:
    """seed-semantics 3.5 v1 #7 / HEAD #6: OnTaskSucceeded is called with the metadata (and,
    in corral, the result)."""
    succeeded: list[tuple[dict[str, Any], object]] = []
    g = corral.Group("bg-succeeded", hooks=corral.Hooks(
        on_succeeded=lambda t, r: succeeded.append((dict(t.meta), r))
    ))
    g.spawn(lambda: "done", meta={"test": "value"})
    g.join(WAIT)
    assert succeeded == [({"test": "value"}, "done")]


def test_bg_v1_8_head_7_on_task_failed_with_meta() -> None:
    """seed-semantics 3.5 v1 #8 / HEAD #7: OnTaskFailed gets the metadata and the error."""
    err = RuntimeError("assert.AnError")
    failed: list[tuple[dict[str, Any], BaseException]] = []
    g = corral.Group("bg-failed", hooks=corral.Hooks(
        on_failed=lambda t, e: failed.append((dict(t.meta), e))
    ))
    g.spawn(raiser(err), meta={"test": "value"})
    assert group_errors(lambda: g.join(WAIT)) == (err,)
    assert failed == [({"test": "value"}, err)]


def test_bg_callback_order_for_a_one_off() -> None:
    """seed-semantics 3.4: Added (in the caller), then Succeeded, then the count is
    decremented and Wait released (Go: decrement before signalling)."""
    log: list[str] = []
    g = corral.Group("bg-order", hooks=corral.Hooks(
        on_added=lambda t: log.append("added"),
        on_started=lambda t: log.append("started"),
        on_succeeded=lambda t, r: log.append(f"succeeded len={len(g)}"),
        on_finished=lambda t: log.append(f"finished len={len(g)}"),
    ))
    t = g.spawn(lambda: None)
    t.join(WAIT)
    assert len(g) == 0  # not stale once the task's join returned
    g.join(WAIT)
    assert log == ["added", "started", "succeeded len=1", "finished len=1"]


def test_bg_wait_includes_tasks_added_while_waiting() -> None:
    """seed-semantics 3.4 Wait: tasks added while waiting make the wait longer."""
    proceed = threading.Event()
    log: list[str] = []
    g = corral.Group("bg-wait-longer")

    def first() -> None:
        proceed.wait(WAIT)
        g.spawn(second)
        log.append("first done")

    def second() -> None:
        log.append("second done")

    g.spawn(first)
    joiner = threading.Thread(target=g.join, args=(WAIT,))
    try:
        joiner.start()
    finally:
        proceed.set()
    joiner.join(WAIT)
    assert not joiner.is_alive()
    assert sorted(log) == ["first done", "second done"]


def test_bg_head_10_task_retry_strategy_limit_5() -> None:
    """seed-semantics 3.5 HEAD #10 Test_TaskRetryStrategies: Retry{Limit(5)} on an always
    failing Fn -> 5 calls. corral: Restart.ON_FAILURE with max_restarts=(4, period) runs it
    5 times; each attempt reaches on_failed; the task then fails with RestartLimitExceeded
    (caused by the last error), reported once."""
    calls = Counter()
    failed: list[BaseException] = []
    err = RuntimeError("assert.AnError")

    def fn() -> None:
        calls.add(1)
        raise err

    g = corral.Group("bg-retry", hooks=corral.Hooks(on_failed=lambda t, e: failed.append(e)))
    t = g.spawn(fn, restart=Restart.ON_FAILURE, backoff=NOW, max_restarts=(4, 60.0))
    (reported,) = group_errors(lambda: g.join(WAIT))
    assert calls.value == 5
    assert t.attempts == 5
    assert failed == [err] * 5
    assert isinstance(reported, corral.RestartLimitExceeded)
    assert reported.__cause__ is err
    assert t.state is TaskState.FAILED


def test_bg_default_no_retry_is_limit_1() -> None:
    """seed-semantics 3.4 mkstrategies: with no retry strategy the task runs once
    (Limit(1)); max_restarts=(0, period) with ON_FAILURE is the same."""
    calls = Counter()
    err = RuntimeError("fails")

    def fn() -> None:
        calls.add(1)
        raise err

    g = corral.Group("bg-no-retry", fail_fast=False)
    g.spawn(fn)
    g.spawn(fn, restart=Restart.ON_FAILURE, backoff=NOW, max_restarts=(0, 60.0))
    reported = group_errors(lambda: g.join(WAIT))
    assert calls.value == 2
    # The two tasks run concurrently: their failures are recorded in either order.
    assert len(reported) == 2
    plain = [r for r in reported if r is err]
    limited = [r for r in reported if isinstance(r, corral.RestartLimitExceeded)]
    assert len(plain) == 1
    assert len(limited) == 1
    assert limited[0].__cause__ is err


def test_bg_head_12_loop_task_runs_again_and_again_until_cancelled() -> None:
    """seed-semantics 3.5 HEAD #12 Test_RunTaskTypeLoop: a loop task runs its Fn again at
    once after each return (>= 100 iterations), until Cancel. corral: Restart.ALWAYS with
    no delay; cancelling the task ends the loop."""
    ticks = Counter()
    hundred = threading.Event()

    def tick() -> None:
        if ticks.add(1) == 100:
            hundred.set()

    g = corral.Group("bg-loop")
    t = g.spawn(tick, restart=Restart.ALWAYS, backoff=NOW)
    assert hundred.wait(WAIT)
    t.cancel(corral.Stopped("manager Cancel()"))
    g.join(WAIT)
    assert ticks.value >= 100
    assert ticks.value == t.attempts  # nothing ran after the cancel
    assert t.done


def test_bg_head_13_loop_task_reports_each_failing_iteration() -> None:
    """seed-semantics 3.5 HEAD #13: a failing loop iteration is reported to OnTaskFailed
    (the first error received is AnError) and the loop goes on (>= 2 runs)."""
    err = RuntimeError("assert.AnError")
    errors: queue.SimpleQueue[BaseException] = queue.SimpleQueue()
    calls = Counter()

    def iteration() -> None:
        if calls.add(1) <= 2:
            raise err
        corral.current_token().wait(WAIT)

    g = corral.Group("bg-loop-failing", hooks=corral.Hooks(on_failed=lambda t, e: errors.put(e)))
    t = g.spawn(iteration, restart=Restart.ALWAYS, backoff=NOW)
    assert errors.get(timeout=WAIT) is err
    assert errors.get(timeout=WAIT) is err
    t.cancel()
    g.join(WAIT)  # restarted failures went to on_failed; the cancel is not a failure
    assert calls.value >= 2


def test_bg_head_15_count_of() -> None:
    """seed-semantics 3.5 HEAD #15 Test_CountOf: the count is 1 right after Run (counted
    synchronously), also for a loop task, and 0 after Wait / Cancel."""
    gate = threading.Event()
    g = corral.Group("bg-count")
    assert len(g) == 0
    try:
        one_off = g.spawn(gate.wait, WAIT)
        assert len(g) == 1
    finally:
        gate.set()
    one_off.join(WAIT)
    assert len(g) == 0
    loop = g.spawn(wait_for_cancel, restart=Restart.ALWAYS, backoff=NOW, background=True)
    assert len(g) == 1
    loop.cancel()
    loop.join(WAIT)
    assert len(g) == 0
    g.join(WAIT)


def test_bg_head_16_close_waits_for_one_offs_and_cancels_loops() -> None:
    """seed-semantics 3.5 HEAD #16 Test_Close: a loop and a one-off both block on proceed;
    counts (1, 1); Close (= Wait and Cancel) -> (0, 0). corral: the loop is a background
    task with Restart.ALWAYS, the one-off a foreground task; join waits for the one-off and
    then cancels the loop."""
    proceed = threading.Event()
    g = corral.Group("bg-close")
    try:
        loop = g.spawn(proceed.wait, WAIT, restart=Restart.ALWAYS, backoff=NOW, background=True)
        one_off = g.spawn(proceed.wait, WAIT)
        assert len(g) == 2
    finally:
        proceed.set()
    g.join(WAIT)
    assert len(g) == 0
    assert one_off.state is TaskState.SUCCEEDED
    assert loop.done


def test_bg_head_17_task_defaults() -> None:
    """seed-semantics 3.5 HEAD #17 task.New: a one-off task with empty metadata and no retry
    (it runs once); it is named after its callable."""
    called: list[bool] = []

    def fn() -> None:
        called.append(True)

    g = corral.Group("bg-defaults")
    t = g.spawn(fn)
    g.join(WAIT)
    assert called == [True]
    assert t.meta == {}
    assert t.attempts == 1
    assert t.name.startswith(f"{__name__}.test_bg_head_17_task_defaults.<locals>.fn#")


def test_bg_unknown_type_is_refused_at_the_call() -> None:
    """seed-semantics 3.4: an unknown task type calls OnTaskFailed(ErrUnknownType) and runs
    nothing. corral: an unknown restart policy is a ValueError at the call; nothing is
    added."""
    added: list[str] = []
    g = corral.Group("bg-unknown", hooks=corral.Hooks(on_added=lambda t: added.append(t.name)))
    with pytest.raises(ValueError, match="restart"):
        g.spawn(lambda: None, restart="sometimes")
    assert added == []
    assert len(g) == 0
    g.join(WAIT)


def test_bg_observer_exception_is_logged_not_fatal(corral_log: pytest.LogCaptureFixture) -> None:
    """seed-semantics 3.4: a panic in an observer crashes the Go process; the port logs
    observer exceptions. corral: a hook that raises is logged and the group goes on."""
    err = RuntimeError("observer bug")

    def bad_hook(t: corral.Task[Any], result: object) -> None:
        raise err

    g = corral.Group("bg-bad-observer", hooks=corral.Hooks(on_succeeded=bad_hook))
    t = g.spawn(lambda: 42)
    g.join(WAIT)
    assert t.result() == 42
    logged = [r for r in corral_log.records if r.exc_info is not None and r.exc_info[1] is err]
    assert len(logged) == 1


# =====================================================================================
# 4. routine (pace/bricks) -> contextvars, tokens, exceptions reported
# =====================================================================================

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
LOGGER: contextvars.ContextVar[logging.Logger | None] = contextvars.ContextVar(
    "logger", default=None
)
SINK: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("sink", default=None)
LOCALE: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "locale", default=None
)
OAUTH2_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "oauth2_token", default=None
)


def test_routine_1_catches_panics(corral_log: pytest.LogCaptureFixture) -> None:
    """seed-semantics 4.5 #1 TestRun_catchesPanics: a routine that panics does not crash the
    caller, and the wrapper's deferred signal still fires. corral: the failure is logged at
    ERROR, kept in the supervisor's failures, and neither join nor stop raises it."""
    err = RuntimeError("test")
    deferred = threading.Event()

    def routine() -> None:
        try:
            raise err
        finally:
            deferred.set()

    sup = supervisor("routine-1")
    sup.start()
    t = sup.spawn(routine)
    t.join(WAIT)  # does not raise
    sup.stop(WAIT)  # does not raise
    assert deferred.is_set()
    assert t.state is TaskState.FAILED
    assert sup.failures == [err]
    assert [r.exc_info[1] for r in corral_log.records
            if r.levelno >= logging.ERROR and r.exc_info] == [err]


def test_routine_2_creates_new_context() -> None:
    """seed-semantics 4.5 #2 TestRun_createsNewContext: the routine's context is not the one
    passed in. corral: a task's token is its own, neither the spawner's nor the group's,
    but a descendant of the group's."""
    seen: list[corral.Token] = []

    def routine() -> None:
        seen.append(corral.current_token())
        corral.current_token().wait(WAIT)

    sup = supervisor("routine-2")
    sup.start()
    outside = corral.current_token()
    t = sup.spawn(routine)
    t.wait_ready(WAIT)
    sup.stop(WAIT)
    assert seen == [t.token]
    assert seen[0] is not outside
    assert seen[0] is not sup.token
    assert isinstance(seen[0].cause, corral.Stopped)  # cancelled through the group's token


def test_routine_3_transfers_logger() -> None:
    """seed-semantics 4.5 #3 TestRun_transfersLogger: the parent's logger (a contextvar)
    reaches the routine; its debug "foobar" ends up in the parent's buffer."""
    buffer = io.StringIO()
    logger = logging.Logger("routine-3", level=logging.DEBUG)  # not registered globally
    logger.addHandler(logging.StreamHandler(buffer))

    def routine() -> None:
        request_logger = LOGGER.get()
        assert request_logger is not None
        request_logger.debug("foobar")

    LOGGER.set(logger)
    with corral.Group("routine-3") as g:
        g.spawn(routine)
    assert "foobar" in buffer.getvalue()


def test_routine_4_transfers_sink() -> None:
    """seed-semantics 4.5 #4 TestRun_transfersSink: the parent's log sink reaches the
    routine."""
    sink: list[str] = []

    def routine() -> None:
        routine_sink = SINK.get()
        assert routine_sink is not None
        routine_sink.append("foobar")

    SINK.set(sink)
    with corral.Group("routine-4") as g:
        g.spawn(routine)
    assert sink == ["foobar"]


def test_routine_5_transfers_locale() -> None:
    """seed-semantics 4.5 #5 TestRun_transfersLocale: the routine sees exactly the parent's
    language and timezone."""
    locale = ("en-US, en;q=0.9, de-DE;q=0.8, ru;q=0.6", "Europe/Berlin")
    LOCALE.set(locale)
    with corral.Group("routine-5") as g:
        t = g.spawn(LOCALE.get)
    assert t.result() == locale


def test_routine_6_transfers_oauth2_token() -> None:
    """seed-semantics 4.5 #6 TestRun_transfersOAuth2Token: the routine sees the parent's
    token "test-token"."""
    OAUTH2_TOKEN.set("test-token")
    with corral.Group("routine-6") as g:
        t = g.spawn(OAUTH2_TOKEN.get)
    assert t.result() == "test-token"


def test_routine_context_is_a_copy_taken_at_spawn() -> None:
    """seed-semantics 4.2 step 1 (WithoutCancel keeps the values): each task runs in a copy
    of the spawner's context taken at spawn; what the task sets does not leak back, and
    what the spawner sets afterwards does not reach it."""
    proceed = threading.Event()
    seen: list[str] = []

    def routine() -> None:
        proceed.wait(WAIT)
        seen.append(REQUEST_ID.get())
        REQUEST_ID.set("set inside the task")

    REQUEST_ID.set("req-1")
    g = corral.Group("routine-copy")
    try:
        g.spawn(routine)
        REQUEST_ID.set("req-2")
    finally:
        proceed.set()
    g.join(WAIT)
    assert seen == ["req-1"]
    assert REQUEST_ID.get() == "req-2"


def test_routine_7_cancels_context_after_routine_is_finished() -> None:
    """seed-semantics 4.5 #7 TestRun_cancelsContextAfterRoutineIsFinished: once the routine
    returned its context is cancelled (Go: eventually; corral: by the time join returns),
    so what it registered on cancel is released."""
    tokens: list[corral.Token] = []
    released = threading.Event()

    def routine() -> None:
        tok = corral.current_token()
        tokens.append(tok)
        tok.on_cancel(released.set)

    with corral.Group("routine-7") as g:
        t = g.spawn(routine)
    assert t.state is TaskState.SUCCEEDED
    assert tokens[0].cancelled
    assert released.is_set()


def test_routine_run_returned_cancel_cancels_the_routine() -> None:
    """seeds/004 routine.Run: the routine's context is cancelled if the returned CancelFunc
    is called -> Task.cancel() cancels the task's token."""
    started = threading.Event()

    def routine() -> None:
        started.set()
        corral.current_token().wait(WAIT)

    sup = supervisor("routine-cancel")
    sup.start()
    t = sup.spawn(routine)
    assert started.wait(WAIT)
    t.cancel()
    t.join(WAIT)
    assert t.state is TaskState.CANCELLED
    assert t.token.cancelled
    assert sup.is_running  # only that routine was cancelled
    sup.stop(WAIT)


def test_routine_tasks_are_numbered_and_threads_named() -> None:
    """seeds/004 routine: each routine gets a process-wide number ("routine <num>" in logs).
    corral: a task without a name is named after its callable plus a sequence number, and
    its thread is named after it while it runs."""
    thread_names: list[str] = []

    def routine() -> None:
        thread_names.append(threading.current_thread().name)

    with corral.Group("routine-names") as g:
        a = g.spawn(routine)
        b = g.spawn(routine)
    assert a.name != b.name
    assert a.name.rsplit("#", 1)[0] == b.name.rsplit("#", 1)[0]
    assert sorted(thread_names) == sorted(f"corral:{t.name}" for t in (a, b))


def test_routine_backoff_sequence_doubles_to_a_10_minute_cap() -> None:
    """seed-semantics 4.3/4.4: the routine-panic backoff is exponential x2 from 1 s, no
    jitter, capped at 10 min: 1, 2, 4, ... 512, then 600 s."""
    backoff = corral.Backoff(initial=1, maximum=600, multiplier=2, jitter=0)
    assert [backoff.delay(n) for n in range(12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600,
    ]


def test_routine_restarts_after_panics_with_exponential_backoff() -> None:
    """seed-semantics 4.3: a routine that panics is run again after 1 s, 2 s, 4 s... (on
    virtual time: exact)."""
    clock = MockClock()
    starts: list[float] = []

    def routine() -> str:
        starts.append(clock.monotonic())
        if len(starts) < 4:
            raise RuntimeError("panic")
        return "recovered"

    sup = supervisor("routine-backoff", clock=clock)
    sup.start()
    t = sup.spawn(routine, restart=Restart.ON_FAILURE,
                  backoff=corral.Backoff(initial=1, maximum=600, jitter=0))
    for delay in (1, 2, 4):
        clock.wait_for_timers(1)
        assert clock.next_deadline() == clock.monotonic() + delay
        clock.advance(delay)
    assert t.result(WAIT) == "recovered"
    sup.stop(WAIT)
    assert starts == [0, 1, 3, 7]


def test_routine_bug_on_restart_runs_before_the_restart_it_announces() -> None:
    """seed-semantics 4.3 (restart after a panic, reported) and DESIGN Hooks: on_restart
    announces a scheduled restart, so it runs before the restarted attempt starts (and
    before join returns). A logging handler widens the window between "restart scheduled"
    and the hook (at most 0.5 s), so that a hook called after the timer is armed shows."""
    clock = MockClock()
    log: list[str] = []
    second_started = threading.Event()

    class SlowHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "restarting" in record.getMessage():
                second_started.wait(0.5)

    def on_started(t: corral.Task[Any]) -> None:
        log.append(f"started {t.attempts}")
        if t.attempts == 2:
            second_started.set()

    calls = Counter()

    def routine() -> None:
        if calls.add(1) == 1:
            raise RuntimeError("panic")

    handler = SlowHandler()
    corral_logger = logging.getLogger("corral")
    corral_logger.addHandler(handler)
    try:
        sup = supervisor("routine-restart-hook", clock=clock, hooks=corral.Hooks(
            on_started=on_started, on_restart=lambda t, d: log.append(f"restart in {d:g}s"),
        ))
        sup.start()
        t = sup.spawn(routine, restart=Restart.ON_FAILURE,
                      backoff=corral.Backoff(initial=1, maximum=1, jitter=0))
        clock.wait_for_timers(1)
        clock.advance(1)
        t.join(WAIT)
        sup.stop(WAIT)
    finally:
        corral_logger.removeHandler(handler)
        second_started.set()
    assert log == ["started 1", "restart in 1s", "started 2"]


def test_routine_run_maps_to_corral_go() -> None:
    """seeds/004 routine.Run -> corral.go (DESIGN): the default supervisor runs the routine
    with the caller's context values and a token of its own, cancels that token once the
    routine returned, and reports a panic without raising it in the caller."""
    from corral._supervisor import _reset_default_for_tests

    results: dict[str, object] = {}

    def ok() -> str:
        results["token"] = corral.current_token()
        return REQUEST_ID.get()

    def caller() -> None:  # not the main thread: the default supervisor leaves signals alone
        REQUEST_ID.set("req-go")
        t_ok = corral.go(ok)
        t_boom = corral.go(raiser(RuntimeError("test")))
        results["value"] = t_ok.result(WAIT)
        t_boom.join(WAIT)  # does not raise
        results["boom"] = t_boom.exception()

    _reset_default_for_tests()
    try:
        thread = threading.Thread(target=caller)
        thread.start()
        thread.join(WAIT)
    finally:
        _reset_default_for_tests()
    assert results["value"] == "req-go"
    token = results["token"]
    assert isinstance(token, corral.Token)
    assert token.cancelled
    assert isinstance(results["boom"], RuntimeError)
