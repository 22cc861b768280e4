"""Supervisor lifecycle (seed: ThreadManager), failures, stop order, hooks, corral.go().

Every in-process supervisor passes handle_signals=False: pytest runs in the main thread,
and signal handling is tested in subprocesses (test_signals.py).

Tests whose docstring starts with "Seed: <library>" port a case of one of the seed
libraries; where the Go library's behaviour is a bug (marked **BUG?**), they
assert corral's fixed behaviour.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import corral
from corral import Supervisor, TaskState
from corral.testing import MockClock
from helpers import BLOCKED, REQUEST_ID, AtomicCounter, in_thread, released

# Every test runs over each runner (the pool, and a thread per attempt): see conftest.
pytestmark = pytest.mark.usefixtures("runner")

WAIT = 10.0  # a generous backstop (real seconds)
NOT_YET = 0.2  # how long a negative check ("has not returned") looks


class Boom(Exception):
    """The failure the test tasks raise."""


def make(name: str = "sup", **kwargs: Any) -> Supervisor:
    return Supervisor(name, handle_signals=False, **kwargs)


def state(task: corral.Task[Any]) -> TaskState:
    """The task's state now (a call, so that type checkers do not narrow it)."""
    return task.state


class Log:
    """A thread-safe ordered log."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)


def raises(exc: BaseException) -> Callable[[], None]:
    """A task that raises ``exc``."""

    def work() -> None:
        raise exc

    return work


def wait_for_cancel() -> None:
    corral.current_token().wait(WAIT)


def noop() -> None:
    return None


def blocker(log: Log, name: str, running: threading.Event | None = None) -> Callable[[], None]:
    """A task that says it runs, waits for its token, and logs how it was cancelled."""

    def work() -> None:
        tok = corral.current_token()
        log(f"{name} running")
        corral.ready()
        if running is not None:
            running.set()
        assert tok.wait(WAIT)
        log(f"{name} cancelled: {type(tok.cause).__name__}")

    return work


@pytest.fixture
def sup() -> Iterator[Supervisor]:
    s = make()
    try:
        yield s
    finally:
        s.stop(timeout=WAIT)


# -- lifecycle (seed: ThreadManager) ------------------------------------------------------


def test_spawn_before_start_queues_and_start_releases_in_spawn_order() -> None:
    log = Log()
    s = make(limit=1, hooks=corral.Hooks(on_added=lambda t: log(f"added {t.name}")))
    try:
        tasks = [s.spawn(log, f"ran {i}", name=f"t{i}") for i in range(5)]
        assert [state(t) for t in tasks] == [TaskState.PENDING] * 5
        assert all(t.attempts == 0 for t in tasks)
        assert log.lines == [f"added t{i}" for i in range(5)]  # nothing ran
        assert len(s) == 5
        s.start()
        for t in tasks:
            t.join(WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert log.lines[5:] == [f"ran {i}" for i in range(5)]
    assert [state(t) for t in tasks] == [TaskState.SUCCEEDED] * 5


def test_tasks_queued_before_start_and_spawned_after_all_run_once() -> None:
    # Seed test "should have no effect if the manager is started multiple times".
    counter: list[int] = []
    lock = threading.Lock()

    def add() -> None:
        with lock:
            counter.append(1)

    s = make()
    try:
        before = [s.spawn(add, name=str(i)) for i in range(5)]
        s.start()
        s.start()
        s.start()
        for t in before:
            t.join(WAIT)
        after = [s.spawn(add, name=str(i)) for i in range(5)]
        s.start()
        for t in after:
            t.join(WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert len(counter) == 10


def test_start_after_stop_raises() -> None:
    s = make()
    s.start()
    s.stop(timeout=WAIT)
    with pytest.raises(corral.SupervisorStopped):
        s.start()


def test_stop_twice_is_a_noop() -> None:
    log = Log()
    s = make(on_finish=lambda t: log(f"finished {t.name}"))
    s.start()
    s.spawn(log, "ran", name="a").join(WAIT)
    s.stop(timeout=WAIT)
    s.stop(timeout=WAIT)
    s.stop()
    assert log.lines == ["ran", "finished a"]
    assert s.is_stopped


def test_stop_before_start_cancels_queued_tasks_without_running_them() -> None:
    log = Log()
    s = make(on_finish=lambda t: log(f"group on_finished {t.name} {t.state.value}"))
    a = s.spawn(log, "a ran", name="a", on_finish=lambda t: log("a on_finish"))
    b = s.spawn(log, "b ran", name="b")
    s.stop(timeout=WAIT)
    assert s.is_stopped
    assert not s.is_started
    assert not s.is_running
    assert state(a) is TaskState.CANCELLED
    assert state(b) is TaskState.CANCELLED
    assert a.attempts == b.attempts == 0
    assert a.done
    assert b.done
    assert log.lines == [
        "a on_finish", "group on_finished a cancelled", "group on_finished b cancelled",
    ]
    with pytest.raises(corral.Cancelled):
        a.result()
    with pytest.raises(corral.SupervisorStopped):
        s.start()
    s.wait(timeout=WAIT)  # returns: it was never started
    assert s not in corral.roots()


def test_spawn_after_stop_raises() -> None:
    s = make()
    s.start()
    s.stop(timeout=WAIT)
    with pytest.raises(corral.SupervisorStopped):
        s.spawn(print)
    s2 = make()
    s2.stop()
    with pytest.raises(corral.SupervisorStopped):
        s2.spawn(print)
    assert len(s) == len(s2) == 0


def test_state_triple() -> None:
    s = make()
    assert (s.is_started, s.is_stopped, s.is_running) == (False, False, False)
    s.start()
    assert (s.is_started, s.is_stopped, s.is_running) == (True, False, True)
    s.stop(timeout=WAIT)
    assert (s.is_started, s.is_stopped, s.is_running) == (True, True, False)


def test_is_stopped_is_true_from_the_moment_stop_begins(sup: Supervisor) -> None:
    gate = threading.Event()
    seen: list[tuple[bool, bool]] = []
    running = threading.Event()

    cancelled_seen = threading.Event()

    def work() -> None:
        running.set()
        corral.current_token().wait(WAIT)
        seen.append((sup.is_stopped, sup.is_running))
        cancelled_seen.set()
        assert gate.wait(WAIT)

    sup.start()
    sup.spawn(work)
    assert running.wait(WAIT)
    stopper = threading.Thread(target=sup.stop)
    stopper.start()
    try:
        assert cancelled_seen.wait(WAIT)
        with pytest.raises(corral.StopTimeout):
            sup.wait(timeout=NOT_YET)  # still stopping: the task runs
        assert sup.is_stopped
        assert not sup.is_running
    finally:
        gate.set()
        stopper.join(WAIT)
    assert seen == [(True, False)]


def test_wait_returns_at_once_if_never_started() -> None:
    s = make()
    s.spawn(print)
    s.wait()  # would block forever otherwise
    s.wait(timeout=0)
    s.stop(timeout=WAIT)


def test_wait_blocks_until_stopped_and_every_task_ended(sup: Supervisor) -> None:
    log = Log()
    running = threading.Event()
    cancelled = threading.Event()
    gate = threading.Event()
    waited = threading.Event()

    def stubborn() -> None:
        log("task running")
        running.set()
        corral.current_token().wait(WAIT)
        cancelled.set()
        assert gate.wait(WAIT)  # some cleanup that takes a while
        log("task ended")

    def waiter() -> None:
        sup.wait()
        log("wait returned")
        waited.set()

    sup.start()
    sup.spawn(stubborn, name="stubborn")
    w = threading.Thread(target=waiter)
    w.start()
    stopper = threading.Thread(target=sup.stop)
    try:
        assert running.wait(WAIT)
        # Every task has not ended, and nothing stopped it: wait() blocks.
        assert not waited.wait(NOT_YET)
        stopper.start()
        assert cancelled.wait(WAIT)
        # Stopping has begun, but the task still runs: wait() still blocks.
        assert not waited.wait(NOT_YET)
    finally:
        gate.set()
        if not stopper.is_alive():
            sup.stop(timeout=WAIT)
        stopper.join(WAIT)
        w.join(WAIT)
    assert waited.is_set()
    assert log.lines == ["task running", "task ended", "wait returned"]
    sup.wait()  # after stop: at once


def test_wait_with_timeout_raises_timeout_error_while_nobody_stops_it(sup: Supervisor) -> None:
    # Like Group.join(timeout): a plain TimeoutError (StopTimeout is for a stop that
    # overran its deadline, with the stuck tasks' stacks).
    sup.start()
    with pytest.raises(TimeoutError) as info:
        sup.wait(timeout=0.05)
    assert not isinstance(info.value, corral.StopTimeout)
    assert sup.is_running


def test_serve_until_a_task_stops_it() -> None:
    log = Log()
    s = make()

    def stopper() -> None:
        log("stopping from a task")
        s.stop()
        log("stop returned in the task")

    s.spawn(blocker(log, "worker"), name="worker", signals_ready=True)
    s.spawn(stopper, needs="worker")  # starts once the worker is ready
    s.serve()
    log("serve returned")
    assert s.is_stopped
    assert not s.is_running
    lines = log.lines
    assert lines[0] == "worker running"
    assert lines[-1] == "serve returned"
    assert set(lines[1:-1]) == {
        "stopping from a task", "stop returned in the task", "worker cancelled: Stopped",
    }


def test_serve_until_another_thread_stops_it() -> None:
    log = Log()
    running = threading.Event()
    s = make()
    s.spawn(blocker(log, "worker", running), name="worker")

    def stop_when_running() -> None:
        if running.wait(WAIT):
            log("stopping")
        s.stop()

    t = threading.Thread(target=stop_when_running)
    t.start()
    try:
        s.serve()
        log("serve returned")
    finally:
        s.stop(timeout=WAIT)
        t.join(WAIT)
    assert log.lines == ["worker running", "stopping", "worker cancelled: Stopped", "serve returned"]


def test_context_manager_starts_and_stops() -> None:
    log = Log()
    running = threading.Event()
    with make() as s:
        assert s.is_running
        t = s.spawn(blocker(log, "worker", running))
        assert running.wait(WAIT)
    assert (s.is_started, s.is_stopped, s.is_running) == (True, True, False)
    assert state(t) is TaskState.CANCELLED
    assert log.lines == ["worker running", "worker cancelled: Stopped"]
    assert isinstance(t.token.cause, corral.Stopped)


def test_context_manager_body_exception_propagates_after_stopping() -> None:
    log = Log()
    running = threading.Event()
    s = make()

    def body() -> None:
        with s:
            s.spawn(blocker(log, "worker", running))
            assert running.wait(WAIT)
            raise Boom("body")

    with pytest.raises(Boom, match="body"):
        body()
    assert s.is_stopped
    assert log.lines == ["worker running", "worker cancelled: Stopped"]


def test_cancelling_the_given_token_stops_it() -> None:
    log = Log()
    running = threading.Event()
    tok = corral.Token()
    s = make(token=tok)
    s.start()
    try:
        t = s.spawn(blocker(log, "worker", running))
        assert running.wait(WAIT)
        tok.cancel("shutting down")
        s.wait(timeout=WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert s.is_stopped
    assert state(t) is TaskState.CANCELLED
    assert log.lines == ["worker running", "worker cancelled: Stopped"]
    assert s.failures == []


def test_a_task_that_makes_a_supervisor_and_returns_stops_it_and_ends() -> None:
    # No orphans: the supervisor a task made (not detached) is the task's child, and a
    # supervisor does not end by itself: the task's end stops it, gracefully.
    made: list[Supervisor] = []
    handles: list[corral.Task[None]] = []
    inner_running = threading.Event()

    def inner() -> None:
        token = corral.current_token()
        inner_running.set()
        token.wait(WAIT)

    def worker() -> str:
        sup = Supervisor("made-in-a-task", handle_signals=False)
        made.append(sup)
        handles.append(sup.spawn(inner, name="inner"))
        sup.start()
        assert inner_running.wait(WAIT)
        return "returned"

    g = corral.Group("outer")
    t = g.spawn(worker)
    g.join(WAIT)  # (it waited forever when the supervisor kept the task RUNNING)
    assert t.result() == "returned"
    [sup] = made
    assert sup.is_stopped
    [inner_task] = handles
    assert inner_task.state is TaskState.CANCELLED
    assert isinstance(inner_task.cause, corral.Stopped)


def test_cancelling_the_given_token_before_start_stops_it() -> None:
    log = Log()
    tok = corral.Token()
    s = make(token=tok)
    t = s.spawn(log, "ran")
    tok.cancel()
    assert s.is_stopped
    assert state(t) is TaskState.CANCELLED
    with pytest.raises(corral.SupervisorStopped):
        s.start()
    s.stop(timeout=WAIT)
    assert log.lines == []


def test_a_supervisor_made_with_a_cancelled_token_or_in_a_cancelled_task_is_stopped() -> None:
    # Regression: its stop began while it was being made, and unregistering it read a
    # link not made yet (AttributeError out of the constructor).
    tok = corral.Token()
    tok.cancel("early")
    s = make(token=tok)
    assert s.is_stopped
    assert s not in corral.roots()
    with pytest.raises(corral.SupervisorStopped):
        s.spawn(lambda: None)
    made: list[Supervisor] = []

    def in_a_cancelled_task() -> None:
        corral.current_token().cancel("the task is cancelled")
        made.append(make())

    with corral.Group() as g:
        t = g.spawn(in_a_cancelled_task)
    assert t.state is TaskState.CANCELLED  # (it returned, its token cancelled)
    assert made[0].is_stopped
    assert corral.roots() == []


def test_same_name_while_queued() -> None:
    log = Log()
    s = make()
    try:
        first = s.spawn(log, "first", name="x")
        with pytest.raises(corral.DuplicateTaskName):
            s.spawn(log, "dup", name="x")
        second = s.spawn(log, "second", name="x", replace=True)
        assert state(first) is TaskState.CANCELLED  # replaced in the queue: never runs
        assert first.attempts == 0
        s.start()
        second.join(WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert log.lines == ["second"]
    assert first.exception() is None
    with pytest.raises(corral.Cancelled) as excinfo:
        first.result()
    assert isinstance(excinfo.value.__cause__, corral.Replaced)


def test_tm_1_should_execute_multiple_threads() -> None:
    """Seed: ThreadManager — #1: threads queued before Start run at
    start, threads run with the same ids afterwards run too: all 10 work functions ran."""
    value = AtomicCounter()
    sup = make("tm-1")
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


def test_tm_4_should_report_started_stopped_running() -> None:
    """Seed: ThreadManager — #4: (is_started, is_stopped, is_running) is
    (F, F, F) after construction, (T, F, T) after start, (T, T, F) after stop."""
    sup = make("tm-4")

    def states() -> tuple[bool, bool, bool]:
        return (sup.is_started, sup.is_stopped, sup.is_running)

    assert states() == (False, False, False)
    sup.start()
    assert states() == (True, False, True)
    sup.stop(WAIT)
    assert states() == (True, True, False)


def test_tm_5_should_stop_if_stop_is_invoked() -> None:
    """Seed: ThreadManager — #5: Stop cancels a thread sleeping on its
    context and waits for it (Go: Stop returns in < 3 s; here the cancelled sleep is
    asserted, 3 s is a backstop)."""
    started = threading.Event()
    slept: list[bool] = []

    def sleep() -> None:
        started.set()
        slept.append(corral.sleep(10))

    sup = make("tm-5")
    t = sup.spawn(sleep, name="sleep")
    sup.start()
    assert started.wait(WAIT)
    sup.stop(timeout=WAIT)  # Go asserts < 3 s; here only a backstop
    assert slept == [False]  # woken by the stop, not by the end of the 10 s
    assert t.state is TaskState.CANCELLED
    assert isinstance(t.token.cause, corral.Stopped)


def test_tm_6_should_stop_if_the_manager_context_is_cancelled() -> None:
    """Seed: ThreadManager — #6: cancelling the manager's context (the
    supervisor's token) stops it: it becomes stopped and the thread's token is cancelled."""
    started = threading.Event()
    slept: list[bool] = []

    def sleep() -> None:
        started.set()
        slept.append(corral.sleep(10))

    mgr_ctx = corral.Token()
    sup = make("tm-6", token=mgr_ctx)
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
    """Seed: ThreadManager — #7: Wait before Start returns at once; after
    Start it blocks until the manager context's timeout stops the manager (which cancels the
    thread). On virtual time: the 3 s deadline is exact."""
    clock = MockClock()
    mgr_ctx = corral.Token(timeout=3, clock=clock)
    sup = make("tm-7", token=mgr_ctx)
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
    """Seed: ThreadManager — #8: running a task with the id of a running
    one cancels the old one (cause Replaced); the new one runs once the old one has
    finished."""
    started = threading.Event()
    log: list[str] = []

    def first() -> None:
        started.set()
        corral.sleep(10)
        log.append(f"first ended: {type(corral.current_token().cause).__name__}")

    def second() -> None:
        log.append("second ran")

    sup = make("tm-8")
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
    """Seed: ThreadManager — #9: start() three times before and after the
    second batch: no error, value == 10."""
    value = AtomicCounter()
    sup = make("tm-9")
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
    """Seed: ThreadManager — #10: stop() three times: no error, value ==
    10."""
    value = AtomicCounter()
    sup = make("tm-10")
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
    """Seed: ThreadManager — #11: Start after Stop panics ->
    SupervisorStopped."""
    sup = make("tm-11")
    sup.start()
    sup.stop(WAIT)
    with pytest.raises(corral.SupervisorStopped):
        sup.start()


def test_tm_extra_stop_before_start_cancels_the_queue() -> None:
    """Seed: ThreadManager — extra "Stop before Start raises": corral
    decided otherwise (DESIGN: stop() before start() just marks it stopped). Queued tasks
    end CANCELLED without running, their on_finish still runs, and start() then raises."""
    ran: list[str] = []
    finished: list[str] = []
    sup = make("tm-stop-first", on_finish=lambda t: finished.append(t.name))
    queued = [sup.spawn(ran.append, name, name=name) for name in ("a", "b")]
    sup.stop(WAIT)
    assert (sup.is_started, sup.is_stopped, sup.is_running) == (False, True, False)
    assert ran == []
    assert [t.state for t in queued] == [TaskState.CANCELLED] * 2
    assert sorted(finished) == ["a", "b"]
    with pytest.raises(corral.SupervisorStopped):
        sup.start()


def test_tm_extra_run_after_stop_is_refused() -> None:
    """Seed: ThreadManager — extra "Run after Stop is ignored": corral
    raises SupervisorStopped instead of dropping the work silently; nothing runs."""
    ran: list[int] = []
    sup = make("tm-run-after-stop")
    sup.start()
    sup.stop(WAIT)
    with pytest.raises(corral.SupervisorStopped):
        sup.spawn(ran.append, 1)
    assert ran == []


def test_tm_extra_same_id_while_queued_replaces_the_queued_task() -> None:
    """Seed: ThreadManager — extra: Run with the same id while queued
    replaces the queued thread, so only the last one runs (replace=True; without it,
    DuplicateTaskName)."""
    ran: list[str] = []
    finished: list[str] = []
    sup = make("tm-queued-replace")
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


def test_tm_extra_wait_after_stop_returns_at_once() -> None:
    """Seed: ThreadManager — extra: Wait after Stop returns immediately
    (timeout=0 suffices)."""
    sup = make("tm-wait-after-stop")
    sup.start()
    sup.spawn(wait_for_cancel, name="w")
    sup.stop(WAIT)
    sup.wait(timeout=0)
    assert sup.is_stopped


def test_tm_wait_blocks_until_stopped_even_with_no_tasks_left() -> None:
    """Seed: ThreadManager — Wait: if all threads finish but nothing
    stops the manager, Wait keeps blocking, because new threads can still be added."""
    sup = make("tm-wait-blocks")
    sup.start()
    sup.spawn(lambda: None, name="a").join(WAIT)
    with pytest.raises(TimeoutError):
        sup.wait(timeout=BLOCKED)
    assert sup.spawn(lambda: "more work", name="b").result(WAIT) == "more work"
    sup.stop(WAIT)
    sup.wait(timeout=0)


def test_tm_bug_replaced_task_end_does_not_cancel_its_replacement() -> None:
    """Seed: ThreadManager — **BUG?** when a replaced thread finishes it
    cancels (and untracks) its replacement. corral: the old task's end never touches the new
    one, which keeps running, stays tracked, and is stopped by stop() with cause Stopped."""
    gate = threading.Event()
    old_started = threading.Event()
    new_started = threading.Event()

    def old() -> None:
        old_started.set()
        gate.wait(WAIT)  # ignores its token: it ends only after the replacement was spawned

    def new() -> None:
        new_started.set()
        corral.current_token().wait(WAIT)

    sup = make("tm-replacement")
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
    assert state(b) is TaskState.CANCELLED
    assert isinstance(b.token.cause, corral.Stopped)


def test_tm_deadlock_219_stop_from_inside_a_task() -> None:
    """Seed: ThreadManager — #219 (potential deadlock when stopping): a
    task that calls stop() on its own supervisor does not wait for itself; the supervisor
    then stops."""
    log: list[str] = []

    def stopper() -> None:
        s.stop()
        log.append("stop() returned inside the task")

    s = make("tm-stop-inside")
    s.start()
    t = s.spawn(stopper, name="stopper")
    s.wait(timeout=WAIT)
    assert log == ["stop() returned inside the task"]
    assert s.is_stopped
    assert t.done


def test_tm_deadlock_219_stop_from_a_callback_while_stopping() -> None:
    """Seed: ThreadManager — #219: Stop called from a callback (onFinish)
    while a stop is in progress returns early instead of deadlocking (Go returns before
    taking the lock)."""
    outcomes: list[str] = []
    started = threading.Event()

    def on_finish(t: corral.Task[Any]) -> None:
        try:
            s.stop(timeout=2)  # backstop: a deadlock shows as StopTimeout after 2 s
            outcomes.append("returned")
        except corral.StopTimeout:
            outcomes.append("deadlocked until StopTimeout")

    def work() -> None:
        started.set()
        corral.current_token().wait(WAIT)

    s = make("tm-stop-in-callback", on_finish=on_finish)
    s.start()
    s.spawn(work, name="work")
    assert started.wait(WAIT)
    s.stop(WAIT)
    assert outcomes == ["returned"]


def test_tm_stop_blocks_on_a_task_that_ignores_its_token() -> None:
    """Seed: ThreadManager — Stop: a thread whose work ignores its ctx
    keeps Stop blocked until it returns. corral: stop(timeout) raises StopTimeout naming it
    with its stack; the stop completes once it returns."""
    gate = threading.Event()
    started = threading.Event()

    def stubborn() -> None:
        started.set()
        gate.wait(WAIT)

    sup = make("tm-stubborn")
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
    assert state(t) is TaskState.CANCELLED  # it returned after its token was cancelled


def test_leaving_the_block_after_a_stop_timed_out_does_not_wait_and_raise_again() -> None:
    # The StopTimeout was raised (and here handled) already: the block's end does not
    # stop again, which would wait for the same task another stop_timeout and raise a
    # second StopTimeout about it. An explicit wait() still waits.
    gate = threading.Event()
    started = threading.Event()

    def stubborn() -> None:
        started.set()
        gate.wait(WAIT)

    reported: list[corral.StopTimeout] = []
    with released(gate):
        with make("timed-out", stop_timeout=3600) as sup:
            t = sup.spawn(stubborn, name="stubborn")
            assert started.wait(WAIT)
            try:
                sup.stop(timeout=BLOCKED)
            except corral.StopTimeout as e:
                reported.append(e)
        # (with stop_timeout=3600, a second stop here would have hung the test)
        assert [list(e.running) for e in reported] == [["stubborn"]]
        assert state(t) is TaskState.RUNNING
    sup.wait(timeout=WAIT)
    assert state(t) is TaskState.CANCELLED


def test_tm_causes_tell_stop_replace_and_cancel_apart() -> None:
    """Seed: ThreadManager — : in Go, Stop, replacement and cancel all
    give plain context.Canceled. corral keeps the cause: Stopped, Replaced, or the given
    text; none is a failure."""
    started = {key: threading.Event() for key in ("replaced", "cancelled", "stopped")}
    causes: dict[str, BaseException | None] = {}

    def waiter(key: str) -> None:
        started[key].set()
        tok = corral.current_token()
        tok.wait(WAIT)
        causes[key] = tok.cause

    sup = make("tm-causes")
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
    """Seed: ThreadManager — Start: Go starts queued threads in map order
    (unspecified). corral starts them in spawn order (visible with limit=1)."""
    order: list[str] = []
    sup = make("tm-order-of-start", limit=1)
    tasks = [sup.spawn(order.append, name, name=name) for name in ("c", "a", "b")]
    sup.start()
    for t in tasks:
        t.join(WAIT)
    sup.stop(WAIT)
    assert order == ["c", "a", "b"]


def test_tm_nil_work_is_a_type_error() -> None:
    """Seed: ThreadManager — Run: a nil work func is allowed and skipped
    in Go. corral checks arguments at the call: a non-callable is a TypeError, and nothing
    is queued."""
    sup = make("tm-nil")
    with pytest.raises(TypeError):
        sup.spawn(None, name="nil")  # type: ignore[call-overload]
    assert len(sup) == 0
    sup.stop(WAIT)


def test_tm_manager_token_cancelled_before_start_stops_it() -> None:
    """Seed: ThreadManager — : mgrCtx.Done() stops the manager only once
    started (Go). corral: cancelling the supervisor's token stops it at once, even before
    start(): queued tasks end without running, and start() then raises."""
    ran: list[int] = []
    mgr_ctx = corral.Token()
    sup = make("tm-token-first", token=mgr_ctx)
    t = sup.spawn(ran.append, 1, name="queued")
    mgr_ctx.cancel("manager context cancelled")
    sup.wait(timeout=WAIT)
    assert sup.is_stopped
    assert t.state is TaskState.CANCELLED
    assert ran == []
    with pytest.raises(corral.SupervisorStopped):
        sup.start()


def test_routine_run_returned_cancel_cancels_the_routine() -> None:
    """Seed: routine — seeds/004 routine.Run: the routine's context is cancelled if the
    returned CancelFunc is called -> Task.cancel() cancels the task's token."""
    started = threading.Event()

    def routine() -> None:
        started.set()
        corral.current_token().wait(WAIT)

    sup = make("routine-cancel")
    sup.start()
    t = sup.spawn(routine)
    assert started.wait(WAIT)
    t.cancel()
    t.join(WAIT)
    assert t.state is TaskState.CANCELLED
    assert t.token.cancelled
    assert sup.is_running  # only that routine was cancelled
    sup.stop(WAIT)


# -- failures ------------------------------------------------------------------------------


def test_one_failure_does_not_stop_the_others(
    sup: Supervisor, corral_log: pytest.LogCaptureFixture
) -> None:
    log = Log()
    running = threading.Event()
    sup.start()
    other = sup.spawn(blocker(log, "other", running), name="other")
    assert running.wait(WAIT)

    def fail() -> None:
        raise Boom("bad")

    bad = sup.spawn(fail, name="bad")
    bad.join(WAIT)
    assert state(bad) is TaskState.FAILED
    assert state(other) is TaskState.RUNNING
    assert not other.token.cancelled
    assert sup.is_running
    failures = sup.failures
    assert len(failures) == 1
    assert isinstance(failures[0], Boom)
    assert any("'bad'" in note for note in failures[0].__notes__)
    sup.stop(timeout=WAIT)  # does not raise the failure
    errors = [r for r in corral_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is failures[0]
    assert "bad" in errors[0].getMessage()
    assert log.lines == ["other running", "other cancelled: Stopped"]


def test_failures_are_bounded() -> None:
    s = make(max_failures=3)
    s.start()
    try:
        for i in range(5):
            s.spawn(raises(Boom(f"f{i}"))).join(WAIT)
        assert [str(e) for e in s.failures] == ["f2", "f3", "f4"]
    finally:
        s.stop(timeout=WAIT)


@pytest.mark.parametrize("bad", [0, -1])
def test_max_failures_must_be_positive(bad: int) -> None:
    # (and the messages say what is allowed: an int >= 1, not None, unlike limit)
    with pytest.raises(ValueError, match=r"max_failures must be an int >= 1, not -?\d"):
        make(max_failures=bad)
    with pytest.raises(TypeError, match="max_failures must be an int >= 1, not float"):
        make(max_failures=2.5)
    with pytest.raises(TypeError, match="max_failures must be an int >= 1, not NoneType"):
        make(max_failures=None)


def test_stop_timeout_names_the_stuck_task_with_its_stack() -> None:
    running = threading.Event()
    release = threading.Event()

    def stuck_worker_ignoring_its_token() -> None:
        running.set()
        release.wait(WAIT)  # never looks at its token

    s = make()
    s.start()
    try:
        t = s.spawn(stuck_worker_ignoring_its_token, name="stuck")
        s.spawn(wait_for_cancel, name="polite")
        assert running.wait(WAIT)
        with pytest.raises(corral.StopTimeout) as excinfo:
            s.stop(timeout=0.2)
        err = excinfo.value
        assert list(err.running) == ["stuck"]
        assert "stuck_worker_ignoring_its_token" in err.running["stuck"]
        assert "'stuck'" in str(err).splitlines()[0]
        assert "stuck_worker_ignoring_its_token" in str(err)
        assert s.is_stopped
        assert state(t) is TaskState.RUNNING
    finally:
        release.set()
        s.stop(timeout=WAIT)
    assert state(t) is TaskState.CANCELLED


def test_a_stop_report_names_the_first_ten_stuck_tasks_and_counts_the_rest() -> None:
    # 25 tasks outlive the stop: the message and str() name ten (a stop that 20,000
    # tasks outlive must not make an exception text of megabytes); .running has all.
    n = 25
    up = threading.Semaphore(0)
    release = threading.Event()

    def stuck() -> None:
        up.release()
        release.wait(WAIT)  # never looks at its token

    s = make()
    s.start()
    try:
        for i in range(n):
            s.spawn(stuck, name=f"stuck-{i:02}")
        for _ in range(n):
            assert up.acquire(timeout=WAIT)
        with pytest.raises(corral.StopTimeout) as excinfo:
            s.stop(timeout=0.2)
        err = excinfo.value
        assert sorted(err.running) == [f"stuck-{i:02}" for i in range(n)]
        first, *rest = str(err).splitlines()
        assert first.endswith(" and 15 more")
        assert len(re.findall(r"'stuck-\d\d'", first)) == 10
        assert len([line for line in rest if line.startswith("--- stuck-")]) == 10
        assert rest[-1] == "--- and 15 more (every one in StopTimeout.running) ---"
    finally:
        release.set()
        s.stop(timeout=WAIT)


def test_default_stop_timeout() -> None:
    running = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        running.set()
        release.wait(WAIT)

    s = make(stop_timeout=0.1)
    s.start()
    try:
        s.spawn(stuck, name="stuck")
        assert running.wait(WAIT)
        with pytest.raises(corral.StopTimeout, match="stuck"):
            s.stop()
    finally:
        release.set()
        s.stop(timeout=WAIT)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_in_a_task_stops_it_and_wait_reraises(
    exc_type: type[BaseException],
) -> None:
    log = Log()
    running = threading.Event()
    s = make()
    s.start()
    try:
        other = s.spawn(blocker(log, "other", running), name="other")
        assert running.wait(WAIT)
        s.spawn(raises(exc_type()), name="interrupt")
        with pytest.raises(exc_type):
            s.wait(timeout=WAIT)
        assert s.is_stopped
        assert state(other) is TaskState.CANCELLED
        s.wait(timeout=WAIT)  # re-raised once
    finally:
        s.stop(timeout=WAIT)
    assert log.lines[0] == "other running"
    assert log.lines[1].startswith("other cancelled")
    assert s.failures == []


def test_keyboard_interrupt_in_a_task_makes_serve_reraise() -> None:
    s = make()
    s.spawn(raises(KeyboardInterrupt()), name="interrupt")
    with pytest.raises(KeyboardInterrupt):
        s.serve()
    assert s.is_stopped
    assert s not in corral.roots()


def test_stop_from_inside_one_of_its_tasks_does_not_deadlock() -> None:
    log = Log()
    s = make()
    s.start()
    running = threading.Event()
    try:
        s.spawn(blocker(log, "other", running), name="other")
        assert running.wait(WAIT)

        def stopper() -> None:
            s.stop()
            log("stop returned in the task")

        t = s.spawn(stopper, name="stopper")
        s.wait(timeout=WAIT)
    finally:
        s.stop(timeout=WAIT)
    # It returned normally: whether its token was cancelled by then is a race (the stop
    # goes on in another thread).
    assert state(t) in {TaskState.SUCCEEDED, TaskState.CANCELLED}
    assert "stop returned in the task" in log.lines
    assert "other cancelled: Stopped" in log.lines


def test_stop_from_a_task_of_a_group_inside_the_supervisor_does_not_deadlock() -> None:
    # The task that calls stop() is a task of a child group of one of the supervisor's
    # tasks: stop() cannot wait for it either (it waits for itself).
    outcome: list[str] = []
    s = make()
    s.start()

    def inner() -> None:
        try:
            s.stop(timeout=2)
            outcome.append("returned")
        except corral.StopTimeout:
            outcome.append("StopTimeout")

    def outer() -> None:
        with corral.Group("child") as g:
            g.spawn(inner)

    try:
        s.spawn(outer, name="outer")
        s.wait(timeout=WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert outcome == ["returned"]


def test_stop_from_a_hook_does_not_deadlock() -> None:
    # "If a task fails, stop everything": stop() called from on_failed, which runs in
    # the failed task's thread before the task has ended.
    outcome: list[str] = []
    holder: list[Supervisor] = []

    def on_failed(task: corral.Task[Any], exc: BaseException) -> None:
        try:
            holder[0].stop(timeout=2)
            outcome.append("returned")
        except corral.StopTimeout:
            outcome.append("StopTimeout")

    s = make(hooks=corral.Hooks(on_failed=on_failed))
    holder.append(s)
    s.start()
    try:
        s.spawn(raises(Boom("x")), name="bad")
        s.wait(timeout=WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert outcome == ["returned"]


def test_tm_errors_are_logged_once_and_kept_in_failures(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    """Seed: ThreadManager — : errors are only logged ("Error in thread"
    with the id). corral: a supervisor logs a failure once at ERROR with its traceback,
    keeps it in `failures`, and stop() does not raise it."""
    err = RuntimeError("watch failed")
    sup = make("tm-errors")
    sup.start()
    sup.spawn(raises(err), name="watch").join(WAIT)
    sup.stop(WAIT)
    assert sup.failures == [err]
    errors = [r for r in corral_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is err
    assert "watch" in errors[0].getMessage()


def test_tm_exception_in_on_finish_is_logged_not_fatal(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    """Seed: ThreadManager — : a panic in work or onFinish crashes the Go
    process. corral: a callback that raises is logged and the supervisor keeps working."""
    err = RuntimeError("callback bug")

    def bad(t: corral.Task[Any]) -> None:
        raise err

    sup = make("tm-bad-callback", on_finish=bad)
    sup.start()
    assert sup.spawn(lambda: 1, name="one").result(WAIT) == 1
    assert sup.spawn(lambda: 2, name="two").result(WAIT) == 2
    sup.stop(WAIT)
    logged = [r for r in corral_log.records if r.exc_info is not None and r.exc_info[1] is err]
    assert len(logged) == 2
    assert sup.failures == []


def test_routine_1_catches_panics(corral_log: pytest.LogCaptureFixture) -> None:
    """Seed: routine — #1 TestRun_catchesPanics: a routine that panics
    does not crash the caller, and the wrapper's deferred signal still fires. corral: the
    failure is logged at ERROR, kept in the supervisor's failures, and neither join nor stop
    raises it."""
    err = RuntimeError("test")
    deferred = threading.Event()

    def routine() -> None:
        try:
            raise err
        finally:
            deferred.set()

    sup = make("routine-1")
    sup.start()
    t = sup.spawn(routine)
    t.join(WAIT)  # does not raise
    sup.stop(WAIT)  # does not raise
    assert deferred.is_set()
    assert t.state is TaskState.FAILED
    assert sup.failures == [err]
    assert [r.exc_info[1] for r in corral_log.records
            if r.levelno >= logging.ERROR and r.exc_info] == [err]


# -- stop order with needs -------------------------------------------------------------------


def test_stop_cancels_dependents_before_what_they_need(sup: Supervisor) -> None:
    log = Log()
    ready = {name: threading.Event() for name in ("db", "cache", "web", "worker")}

    def service(name: str) -> None:
        tok = corral.current_token()
        ready[name].set()
        tok.wait(WAIT)
        log(f"{name} cancelled")
        log(f"{name} stopped")

    sup.spawn(service, "db", name="db")
    sup.spawn(service, "cache", name="cache", needs="db")
    sup.spawn(service, "web", name="web", needs=("cache", "db"))
    sup.spawn(service, "worker", name="worker", needs="db")
    sup.start()
    for ev in ready.values():
        assert ev.wait(WAIT)
    sup.stop(timeout=WAIT)
    lines = log.lines

    def pos(line: str) -> int:
        return lines.index(line)

    assert len(lines) == 8
    assert pos("web stopped") < pos("cache cancelled")
    assert pos("cache stopped") < pos("db cancelled")
    assert pos("worker stopped") < pos("db cancelled")
    assert lines[-2:] == ["db cancelled", "db stopped"]


def test_two_layer_stop_order_log(sup: Supervisor) -> None:
    log = Log()
    db_ready = threading.Event()
    web_ready = threading.Event()

    def db() -> None:
        tok = corral.current_token()
        db_ready.set()
        tok.wait(WAIT)
        log("db cancelled")

    def web() -> None:
        tok = corral.current_token()
        web_ready.set()
        tok.wait(WAIT)
        log("web cancelled")
        # While web cleans up, db must still be up.
        log(f"db still up: {not db_task.token.cancelled}")
        log("web stopped")

    db_task = sup.spawn(db, name="db")
    sup.spawn(web, name="web", needs="db")
    sup.start()
    assert db_ready.wait(WAIT)
    assert web_ready.wait(WAIT)
    sup.stop(timeout=WAIT)
    assert log.lines == ["web cancelled", "db still up: True", "web stopped", "db cancelled"]


def test_gm_readme_dependencies_shut_down_in_reverse_order() -> None:
    """Seed: goroutine-manager — seeds/001 README §5 "Handling Dependencies Between
    Goroutines": one goroutine must be shut down and waited for before the one it depends on
    -> needs=: the dependent starts after what it needs and is stopped (and finished) before
    it."""
    log: list[str] = []
    lock = threading.Lock()

    def service(name: str) -> None:
        with lock:
            log.append(f"{name} started")
        corral.ready()
        corral.current_token().wait(WAIT)
        with lock:
            log.append(f"{name} stopped")

    sup = make("gm-deps")
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


# -- a stop of many running tasks ------------------------------------------------------------


def test_a_stop_of_many_tasks_cancels_them_in_batches_that_end_before_the_next(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Waking every task at once is a storm (thousands of threads wanting one lock and
    # the GIL, the stopper behind them): a stop lets most of a batch end first. The
    # batch wait is made long so that a loaded machine cannot turn pacing off.
    from corral import _stopping

    monkeypatch.setattr(_stopping, "_STOP_BATCH", 16)
    monkeypatch.setattr(_stopping, "_STOP_BATCH_WAIT", WAIT)
    n = 400
    lock = threading.Lock()
    cancelled = ended = 0
    in_flight: list[int] = []  # cancelled but not yet ended, seen at each cancel
    running = threading.Semaphore(0)

    def on_cancel() -> None:
        nonlocal cancelled
        with lock:
            cancelled += 1
            in_flight.append(cancelled - ended)

    def waiter() -> None:
        nonlocal ended
        token = corral.current_token()
        token.on_cancel(on_cancel)
        running.release()
        try:
            token.wait(WAIT)
        finally:
            with lock:
                ended += 1

    tasks = [sup.spawn(waiter) for _ in range(n)]
    sup.start()
    for _ in range(n):
        assert running.acquire(timeout=WAIT)
    sup.stop(timeout=WAIT)
    assert all(t.state is TaskState.CANCELLED for t in tasks)
    assert len(in_flight) == n
    # All at once, the last cancels would see nearly n in flight.
    assert max(in_flight) < n // 4, max(in_flight)


def test_a_stop_doubles_its_batches_while_they_do_not_end_in_time(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from corral import _stopping

    monkeypatch.setattr(_stopping, "_STOP_BATCH", 4)
    monkeypatch.setattr(_stopping, "_STOP_BATCH_WAIT", 0.01)
    waits: list[int] = []
    mostly_done = _stopping._mostly_done

    def counted(batch: list[corral.Task[Any]]) -> Callable[[], bool]:
        waits.append(len(batch))
        return mostly_done(batch)

    monkeypatch.setattr(_stopping, "_mostly_done", counted)
    release = threading.Event()
    running = threading.Semaphore(0)

    def deaf() -> None:  # ignores its token until released
        running.release()
        release.wait(WAIT)

    tasks = [sup.spawn(deaf) for _ in range(40)]
    sup.start()
    for _ in tasks:
        assert running.acquire(timeout=WAIT)
    stopping = threading.Thread(target=sup.stop, args=(WAIT,))
    stopping.start()
    try:
        for t in tasks:
            assert t.token.wait(WAIT), f"{t.name} never cancelled"
    finally:
        release.set()
    stopping.join(WAIT)
    assert not stopping.is_alive()
    # Each batch waited for in vain (the tasks ignore their tokens) doubles the next:
    # 4 + 8 + 16, then the last 12 (no wait after the last batch).
    assert waits == [4, 8, 16]


def test_tm_deadlock_more_than_100_tasks_end_during_stop() -> None:
    """Seed: ThreadManager — : with the watcher itself stopping, more than
    100 threads finishing during Stop filled the `returns` buffer and blocked Stop forever.
    corral: 120 tasks end during stop(), every hook runs, stop() completes."""
    n = 120
    running = AtomicCounter()
    all_running = threading.Event()
    finished = AtomicCounter()

    def work() -> None:
        if running.add(1) == n:
            all_running.set()
        corral.current_token().wait(WAIT)

    mgr_ctx = corral.Token()
    sup = make("tm-many", token=mgr_ctx, on_finish=lambda t: finished.add(1))
    sup.start()
    tasks = [sup.spawn(work) for _ in range(n)]
    assert all_running.wait(WAIT)
    mgr_ctx.cancel("manager context cancelled")  # the stop starts off the caller's thread
    sup.wait(timeout=WAIT)
    assert finished.value == n
    assert all(t.state is TaskState.CANCELLED for t in tasks)


# -- hooks ---------------------------------------------------------------------------------------


def test_hook_order_for_one_task() -> None:
    log = Log()
    hooks = corral.Hooks(
        on_added=lambda t: log("on_added"),
        on_started=lambda t: log(f"on_started {t.attempts}"),
        on_succeeded=lambda t, r: log(f"on_succeeded {r!r}"),
        on_failed=lambda t, e: log(f"on_failed {e!r}"),
        on_restart=lambda t, d: log(f"on_restart {d}"),
        on_finished=lambda t: log(f"on_finished {t.state.value}"),
    )
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        log(f"work {len(calls)}")
        if len(calls) == 1:
            raise Boom("first")
        return "done"

    s = make(hooks=hooks)
    t = s.spawn(
        work, restart="on_failure", backoff=corral.Backoff(initial=0, maximum=0, jitter=0),
        on_finish=lambda t: log("task on_finish"),
    )
    s.start()
    try:
        t.join(WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert log.lines == [
        "on_added",
        "on_started 1", "work 1", "on_failed Boom('first')", "on_restart 0.0",
        "on_started 2", "work 2", "on_succeeded 'done'",
        "task on_finish", "on_finished succeeded",
    ]


def test_a_raising_hook_is_logged_and_never_breaks_the_group(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    def bad(*args: object) -> None:
        raise RuntimeError("hook bug")

    hooks = corral.Hooks(
        on_added=bad, on_started=bad, on_succeeded=bad, on_failed=bad, on_restart=bad,
        on_finished=bad,
    )
    s = make(hooks=hooks)
    s.start()
    try:
        ok = s.spawn(lambda: 42, name="ok", on_finish=bad)
        flaky = s.spawn(
            raises(Boom("x")), name="flaky", restart="on_failure",
            backoff=corral.Backoff(initial=0, maximum=0, jitter=0), max_restarts=(1, 60),
        )
        assert ok.result(WAIT) == 42
        flaky.join(WAIT)
        assert isinstance(flaky.exception(), corral.RestartLimitExceeded)
        assert s.is_running
        assert len(s) == 0
    finally:
        s.stop(timeout=WAIT)
    hook_errors = [r for r in corral_log.records if "hook" in r.getMessage()]
    # ok: added, started, succeeded, its on_finish, finished (5); flaky: added, started,
    # failed, restart, started, failed, finished (7).
    assert len(hook_errors) == 12
    assert all(r.levelno == logging.ERROR for r in hook_errors)
    assert all(
        r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in hook_errors
    )
    assert len(s.failures) == 1  # only flaky's real failure: hook errors are not failures


def test_on_finish_and_hooks_on_finished_together_is_a_type_error() -> None:
    hooks = corral.Hooks(on_finished=print)
    with pytest.raises(TypeError):
        make(on_finish=print, hooks=hooks)
    with pytest.raises(TypeError):
        corral.Group(on_finish=print, hooks=hooks)
    # Either alone is fine; on_finish combines with other hooks.
    make(on_finish=print).stop()
    make(hooks=hooks).stop()
    make(on_finish=print, hooks=corral.Hooks(on_added=print)).stop()


@pytest.mark.parametrize("how", ["stop", "wait", "join", "exit"])
def test_return_only_after_the_hooks_of_every_ended_task_ran(how: str) -> None:
    log = Log()
    in_hook = threading.Event()
    gate = threading.Event()
    returned = threading.Event()

    def on_finished(task: corral.Task[Any]) -> None:
        in_hook.set()
        log("hook entered")
        assert gate.wait(WAIT)
        log("hook done")

    s = make(on_finish=on_finished)
    s.start()
    running = threading.Event()
    s.spawn(blocker(Log(), "worker", running), name="worker")
    assert running.wait(WAIT)

    stopper = threading.Thread(target=s.stop)

    def call() -> None:
        if how == "stop":
            s.stop()
        elif how == "wait":
            stopper.start()
            s.wait()
        elif how == "join":
            stopper.start()
            s.join()
        else:
            with s:
                pass
        log(f"{how} returned")
        returned.set()

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert in_hook.wait(WAIT)
        assert not returned.wait(NOT_YET)
    finally:
        gate.set()
        caller.join(WAIT)
        s.stop(timeout=WAIT)
        if stopper.ident is not None:
            stopper.join(WAIT)
    assert log.lines == ["hook entered", "hook done", f"{how} returned"]


def test_tm_2_should_execute_on_finish_functions_in_threads() -> None:
    """Seed: ThreadManager — #2: a thread's own onFinish runs (work +1,
    onFinish -1 for the first five; no onFinish for the next five): value == 5."""
    value = AtomicCounter()
    sup = make("tm-2")
    for i in range(5):
        sup.spawn(value.add, 1, name=str(i), on_finish=lambda t: value.add(-1))
    sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for t in second:
        t.join(WAIT)
    sup.stop(WAIT)
    assert value.value == 5


def test_tm_3_should_execute_on_finish_functions_in_thread_manager() -> None:
    """Seed: ThreadManager — #3: the manager's onFinish runs for all 10
    threads: value == 0."""
    value = AtomicCounter()
    sup = make("tm-3", on_finish=lambda t: value.add(-1))
    for i in range(5):
        sup.spawn(value.add, 1, name=str(i))
    sup.start()
    second = [sup.spawn(value.add, 1, name=str(i), replace=True) for i in range(5)]
    for t in second:
        t.join(WAIT)
    sup.stop(WAIT)
    assert value.value == 0


def test_tm_extra_callback_order_task_then_supervisor() -> None:
    """Seed: ThreadManager — extra / 1.2: the thread's onFinish runs
    before the manager's, both get the thread's result (here the Task: state and error), and
    the thread's token is already cancelled when they run."""
    err = RuntimeError("cache.Start failed")
    log: list[tuple[str, str, TaskState, BaseException | None, bool]] = []

    def record(who: str) -> Callable[[corral.Task[Any]], None]:
        def hook(t: corral.Task[Any]) -> None:
            log.append((who, t.name, t.state, t.last_error, t.token.cancelled))

        return hook

    sup = make("tm-order", on_finish=record("supervisor"))
    sup.start()
    t = sup.spawn(raises(err), name="watch", on_finish=record("task"))
    t.join(WAIT)
    sup.stop(WAIT)
    assert log == [
        ("task", "watch", TaskState.FAILED, err, True),
        ("supervisor", "watch", TaskState.FAILED, err, True),
    ]


# -- corral.go() -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_default")
def test_go_runs_a_task_on_the_default_supervisor() -> None:
    log = Log()
    handlers = [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]
    t1 = in_thread(lambda: corral.go(lambda x: x * 2, 21, name="double"))
    assert isinstance(t1, corral.Task)
    assert t1.result(WAIT) == 42
    assert t1.name == "double"
    default = t1.group
    assert isinstance(default, Supervisor)
    assert default.is_running
    assert default in corral.roots()
    t2 = corral.go(log, "second")  # the same supervisor, now from any thread
    t2.join(WAIT)
    assert t2.group is default
    assert log.lines == ["second"]
    # Made outside the main thread: it installed no signal handler.
    assert [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)] == handlers


@pytest.mark.usefixtures("fresh_default")
def test_go_tasks_are_not_children_of_the_calling_task() -> None:
    holder: list[corral.Task[Any]] = []
    running = threading.Event()

    def spawner() -> None:
        t = corral.go(wait_for_cancel, name="detached")
        holder.append(t)
        running.set()

    in_thread(lambda: corral.go(noop, name="warm-up").join(WAIT))  # default made off-main
    with corral.Group() as g:
        g.spawn(spawner)
    assert running.wait(WAIT)
    t = holder[0]
    assert state(t) is TaskState.RUNNING  # the group ended; the go() task goes on
    assert t.group is not g
    t.cancel()
    t.join(WAIT)


@pytest.mark.usefixtures("fresh_default")
def test_go_failures_are_recorded_not_raised() -> None:
    t = in_thread(lambda: corral.go(raises(Boom("go failed"))))
    assert isinstance(t, corral.Task)
    t.join(WAIT)
    assert state(t) is TaskState.FAILED
    default = t.group
    assert isinstance(default, Supervisor)
    assert [str(e) for e in default.failures] == ["go failed"]
    assert default.is_running


def test_coordinator_keyword_takes_a_coordinator_or_none_and_refuses_other_types() -> None:
    sup = corral.Supervisor("coord", handle_signals=False, coordinator=None)
    sup.stop()
    with pytest.raises(TypeError, match=r"coordinator must be a corral\.Coordinator"):
        corral.Supervisor("coord2", handle_signals=False, coordinator=42)  # type: ignore[arg-type]
    assert not [g for g in corral.roots() if g.name == "coord2"]


def test_a_failure_collected_by_a_supervisor_is_logged_at_error(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    # A supervisor raises none of its failures, so a collected one must reach the log
    # at ERROR, as a task's failure does (a plain group logs it at DEBUG: join raises it).
    sup = Supervisor("collector", handle_signals=False)
    sup.start()
    try:
        with sup.collect():
            raise ValueError("callback broke")
    finally:
        sup.stop()
    [failure] = sup.failures
    assert isinstance(failure, ValueError)
    records = [r for r in corral_log.records if "collected failure" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.ERROR]
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is failure


def test_a_failure_collected_by_a_plain_group_is_logged_at_debug_and_raised(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ExceptionGroup) as caught, corral.Group("plain") as g, g.collect():
        raise ValueError("callback broke")
    assert [type(e) for e in caught.value.exceptions] == [ValueError]
    records = [r for r in corral_log.records if "collected failure" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]


def test_routine_run_maps_to_corral_go() -> None:
    """Seed: routine — seeds/004 routine.Run -> corral.go (DESIGN): the default supervisor
    runs the routine with the caller's context values and a token of its own, cancels that
    token once the routine returned, and reports a panic without raising it in the caller."""
    from corral._supervisor import _reset_default_for_tests

    results: dict[str, object] = {}

    def ok() -> str:
        results["token"] = corral.current_token()
        return REQUEST_ID.get()

    def caller() -> None:  # not the main thread: the default supervisor leaves signals alone
        REQUEST_ID.set("req-go")
        t_ok = corral.go(ok)
        t_boom = corral.go(raises(RuntimeError("test")))
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


def test_a_supervisor_overrides_only_public_methods_of_group() -> None:
    # Composition, not a fragile base class: what a supervisor does differently goes
    # through GroupRole (its _Role) and a few class constants, never through Group's
    # private methods.
    overridden = {
        name for name, value in vars(Supervisor).items()
        if name in vars(corral.Group) and (callable(value) or isinstance(value, property))
        and name != "_Role"
    }
    assert all(not n.startswith("_") or n.startswith("__") for n in overridden), overridden
    assert "join" in overridden  # (a supervisor's join waits for its stop)
