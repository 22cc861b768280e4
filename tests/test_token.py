"""Token: cooperative cancellation in a tree, deadlines, callbacks and the module shortcuts.

Tests whose docstring starts with "Seed: <library>" port a case of one of the seed
libraries; where the Go library's behaviour is a bug (marked **BUG?**), they
assert corral's fixed behaviour.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import corral
from corral import TaskState
from corral._clock import SystemClock
from corral.testing import MockClock
from helpers import is_cancelled, supervisor

BACKSTOP = 10.0  # seconds; a generous limit for things that should happen at once


class Background:
    """Run ``fn()`` on a daemon thread; keep its return value or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def result(self, timeout: float = BACKSTOP) -> Any:
        assert self.done.wait(timeout), f"{self.fn!r} still running after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.value


# -- the tree ---------------------------------------------------------------------------


def test_new_token_is_active() -> None:
    tok = corral.Token()
    assert not tok.cancelled
    assert tok.cause is None
    assert tok.deadline is None
    tok.check()  # does not raise


def test_cancelling_a_parent_cancels_every_descendant() -> None:
    root = corral.Token()
    a = root.child()
    b = corral.Token(root)
    a1 = a.child()
    a2 = corral.Token(a)
    a1x = a1.child()
    root.cancel("stop")
    for tok in (root, a, b, a1, a2, a1x):
        assert tok.cancelled
        assert tok.cause is root.cause  # the same cause object, all the way down


def test_cancelling_a_child_does_not_cancel_its_parent_or_siblings() -> None:
    root = corral.Token()
    a = root.child()
    b = root.child()
    a1 = a.child()
    a.cancel("only a")
    assert a.cancelled
    assert a1.cancelled
    assert not root.cancelled
    assert not b.cancelled
    # the parent can still be cancelled later, with its own cause; a keeps its first cause
    root.cancel("root")
    assert is_cancelled(b)
    assert isinstance(root.cause, corral.Cancelled)
    assert root.cause.args == ("root",)
    assert a.cause is not None
    assert a.cause.args == ("only a",)


def test_cancelling_a_very_deep_chain_reaches_the_leaf() -> None:
    # Regression: a recursive subtree walk raised RecursionError half-way down a chain
    # deeper than the recursion limit: the root was cancelled, its children list already
    # dropped, and the leaf stayed active for good. Deep chains come from code that
    # derives a token from the previous one in a loop, and from deeply nested groups.
    root = corral.Token()
    leaf = root
    for _ in range(5000):
        leaf = leaf.child()
    log: list[str] = []
    leaf.on_cancel(lambda: log.append("leaf callback"))
    root.cancel("deep")
    assert leaf.cancelled
    assert leaf.cause is root.cause
    assert log == ["leaf callback"]


def test_child_of_a_cancelled_token_starts_cancelled_with_its_cause() -> None:
    parent = corral.Token()
    err = RuntimeError("gone")
    parent.cancel(err)
    child = parent.child()
    assert child.cancelled
    assert child.cause is err
    grandchild = corral.Token(child, timeout=5)
    assert grandchild.cause is err


def test_first_cause_wins() -> None:
    tok = corral.Token()
    first = ValueError("first")
    tok.cancel(first)
    tok.cancel(KeyError("second"))
    tok.cancel("third")
    tok.cancel()
    assert tok.cause is first


def test_first_cause_wins_across_a_tree_cancelled_from_many_threads() -> None:
    root = corral.Token()
    leaves = [root.child().child() for _ in range(20)]
    causes = [RuntimeError(f"cause {i}") for i in range(8)]
    go = threading.Event()

    def cancel_with(cause: BaseException) -> None:
        assert go.wait(BACKSTOP)
        root.cancel(cause)

    runners = [Background(functools.partial(cancel_with, c)) for c in causes]
    go.set()
    for r in runners:
        r.result()
    assert root.cause in causes
    assert all(leaf.cause is root.cause for leaf in leaves)


def test_cause_is_kept_as_given_for_exceptions() -> None:
    for cause in (ValueError("v"), corral.Stopped("graceful"), KeyboardInterrupt(), TimeoutError()):
        tok = corral.Token()
        tok.cancel(cause)
        assert tok.cause is cause


def test_when_cancel_returns_the_whole_subtree_is_cancelled_even_if_racing() -> None:
    # Regression (per-token locks): when two threads cancelled the same token, the
    # second call saw the token already marked and returned at once, while the first was
    # still walking the subtree: after cancel() returned, a descendant was still active.
    # (Go's context.cancel holds the parent's lock while cancelling the children, so
    # every cancel() returns with the subtree cancelled.) Here the first walk is paused
    # on the leaf's lock (a private detail, used only to make the interleaving
    # deterministic).
    root = corral.Token()
    mid = root.child()
    leaf = mid.child()
    seen: list[bool] = []
    leaf_lock = leaf._lock
    leaf_lock.acquire()
    try:
        first = Background(functools.partial(root.cancel, "first"))
        deadline = time.monotonic() + BACKSTOP
        while not mid.cancelled and time.monotonic() < deadline:  # the walk reached the leaf
            time.sleep(0.001)
        assert is_cancelled(mid)

        def cancel_again() -> None:
            root.cancel("second")
            seen.append(leaf.cancelled)

        second = Background(cancel_again)
        # The bug returns at once; a fixed cancel() waits for the first walk, which waits
        # for the leaf's lock (this bounded wait is the cost of the fixed case).
        second.done.wait(1.0)
    finally:
        leaf_lock.release()
    first.result()
    second.result()
    assert seen == [True], "cancel() returned before the subtree was cancelled"
    assert isinstance(leaf.cause, corral.Cancelled)
    assert leaf.cause.args == ("first",)


def test_cancel_with_text_records_cancelled_of_that_text() -> None:
    tok = corral.Token()
    tok.cancel("shutting down")
    assert type(tok.cause) is corral.Cancelled
    assert tok.cause.args == ("shutting down",)


def test_cancel_without_cause_records_a_cancelled() -> None:
    tok = corral.Token()
    tok.cancel()
    assert isinstance(tok.cause, corral.Cancelled)


def test_routine_2_creates_new_context() -> None:
    """Seed: routine — #2 TestRun_createsNewContext: the routine's
    context is not the one passed in. corral: a task's token is its own, neither the
    spawner's nor the group's, but a descendant of the group's."""
    seen: list[corral.Token] = []

    def routine() -> None:
        seen.append(corral.current_token())
        corral.current_token().wait(BACKSTOP)

    sup = supervisor("routine-2")
    sup.start()
    outside = corral.current_token()
    t = sup.spawn(routine)
    t.wait_ready(BACKSTOP)
    sup.stop(BACKSTOP)
    assert seen == [t.token]
    assert seen[0] is not outside
    assert seen[0] is not sup.token
    assert isinstance(seen[0].cause, corral.Stopped)  # cancelled through the group's token


def test_routine_7_cancels_context_after_routine_is_finished() -> None:
    """Seed: routine — #7 TestRun_cancelsContextAfterRoutineIsFinished:
    once the routine returned its context is cancelled (Go: eventually; corral: by the time
    join returns), so what it registered on cancel is released."""
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


# -- check ------------------------------------------------------------------------------


def test_check_raises_cancelled_with_the_cause_chained() -> None:
    tok = corral.Token()
    err = OSError("disk gone")
    tok.cancel(err)
    with pytest.raises(corral.Cancelled) as info:
        tok.check()
    assert info.value.cause is err
    assert info.value.__cause__ is err


def test_check_after_a_text_cause() -> None:
    tok = corral.Token()
    tok.cancel("bye")
    with pytest.raises(corral.Cancelled) as info:
        tok.check()
    assert info.value.cause is tok.cause
    assert info.value.__cause__ is tok.cause
    assert "bye" in str(info.value)


def test_check_is_not_caught_by_except_exception() -> None:
    tok = corral.Token()
    tok.cancel()
    caught: list[str] = []

    def user_code() -> None:
        try:
            tok.check()
        except Exception:
            caught.append("swallowed")

    with pytest.raises(corral.Cancelled):
        user_code()
    assert caught == []


def test_check_raises_a_fresh_exception_each_time() -> None:
    # Two threads raising the same exception object would share (and mangle) its traceback.
    tok = corral.Token()
    tok.cancel("x")
    raised = []
    for _ in range(2):
        with pytest.raises(corral.Cancelled) as info:
            tok.check()
        raised.append(info.value)
    assert raised[0] is not raised[1]
    assert raised[0].cause is raised[1].cause is tok.cause


# -- wait and sleep on real time -------------------------------------------------------


def test_wait_returns_true_at_once_when_already_cancelled() -> None:
    tok = corral.Token()
    tok.cancel()
    assert tok.wait() is True
    assert tok.wait(0) is True
    assert tok.wait(BACKSTOP) is True


def test_wait_returns_false_on_timeout() -> None:
    tok = corral.Token()
    assert tok.wait(0) is False
    assert tok.wait(0.01) is False
    assert not tok.cancelled


def test_wait_returns_true_once_cancelled_from_another_thread() -> None:
    tok = corral.Token()
    started = threading.Event()

    def waiter() -> bool:
        started.set()
        return tok.wait(30)

    bg = Background(waiter)
    try:
        assert started.wait(BACKSTOP)
        t0 = time.monotonic()
        tok.cancel()
        assert bg.result() is True
        assert time.monotonic() - t0 < BACKSTOP
    finally:
        tok.cancel()


def test_wait_without_timeout_blocks_until_cancelled() -> None:
    tok = corral.Token()
    started = threading.Event()

    def waiter() -> bool:
        started.set()
        return tok.wait()

    bg = Background(waiter)
    try:
        assert started.wait(BACKSTOP)
        tok.child().cancel()  # a child's cancellation does not wake the parent's waiter
        assert not bg.done.is_set()
        tok.cancel()
        assert bg.result() is True
    finally:
        tok.cancel()


def test_sleep_returns_true_when_the_time_passed() -> None:
    tok = corral.Token()
    t0 = time.monotonic()
    assert tok.sleep(0.02) is True
    assert time.monotonic() - t0 >= 0.015
    assert tok.sleep(0) is True


def test_sleep_returns_false_at_once_if_already_cancelled() -> None:
    tok = corral.Token()
    tok.cancel()
    t0 = time.monotonic()
    assert tok.sleep(30) is False
    assert time.monotonic() - t0 < BACKSTOP


def test_sleep_returns_false_as_soon_as_cancelled_from_another_thread() -> None:
    tok = corral.Token()
    started = threading.Event()

    def sleeper() -> bool:
        started.set()
        return tok.sleep(30)

    bg = Background(sleeper)
    try:
        assert started.wait(BACKSTOP)
        t0 = time.monotonic()
        tok.cancel("wake up")
        assert bg.result() is False
        assert time.monotonic() - t0 < BACKSTOP  # not after the 30 s
    finally:
        tok.cancel()


def test_sleep_wakes_when_an_ancestor_is_cancelled() -> None:
    root = corral.Token()
    leaf = root.child().child()
    started = threading.Event()

    def sleeper() -> bool:
        started.set()
        return leaf.sleep(30)

    bg = Background(sleeper)
    try:
        assert started.wait(BACKSTOP)
        root.cancel()
        assert bg.result() is False
    finally:
        root.cancel()


def test_infinite_sleep_and_wait_last_until_cancelled() -> None:
    # Regression: sleep(inf)/wait(inf) used to raise OverflowError from
    # threading.Event.wait. inf is a number >= 0: they block until the token is cancelled
    # (on the real clock and on a mock clock alike).
    inf = float("inf")
    real = corral.Token()
    mock = corral.Token(clock=MockClock())
    started = threading.Barrier(5)

    def after_start(fn: Callable[[], bool]) -> bool:
        started.wait(BACKSTOP)
        return fn()

    runners = [
        Background(functools.partial(after_start, functools.partial(tok.sleep, inf)))
        for tok in (real, mock)
    ] + [
        Background(functools.partial(after_start, functools.partial(tok.wait, inf)))
        for tok in (real, mock)
    ]
    try:
        started.wait(BACKSTOP)
        assert not any(r.done.is_set() for r in runners)  # nothing returned early
        real.cancel()
        mock.cancel()
        assert [r.result() for r in runners] == [False, False, True, True]
    finally:
        real.cancel()
        mock.cancel()


# -- deadlines --------------------------------------------------------------------------


def test_child_timeout_on_mock_clock_cancels_at_exactly_the_deadline() -> None:
    clock = MockClock()
    parent = corral.Token(clock=clock)
    child = parent.child(timeout=5)
    assert child.clock is clock
    assert child.deadline == 5.0
    clock.advance(4)
    assert not child.cancelled
    clock.advance(0.5)
    assert not child.cancelled
    clock.advance(0.5)  # now == 5.0 exactly
    assert is_cancelled(child)
    assert isinstance(child.cause, TimeoutError)
    assert not parent.cancelled
    assert clock.pending == 0


def test_deadline_reaches_descendants_but_not_the_parent() -> None:
    clock = MockClock(start=100.0)
    parent = corral.Token(clock=clock)
    timed = parent.child(timeout=2)
    below = timed.child()
    assert timed.deadline == 102.0
    clock.advance(2)
    assert below.cancelled
    assert below.cause is timed.cause
    assert isinstance(timed.cause, TimeoutError)
    assert not parent.cancelled


def test_deadline_of_a_token_cancelled_earlier_does_not_replace_its_cause() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock, timeout=1)
    tok.cancel("early")
    assert clock.pending == 0  # the timer was cancelled with the token
    clock.advance(5)
    assert isinstance(tok.cause, corral.Cancelled)
    assert tok.cause.args == ("early",)


def test_parent_deadline_cancels_a_child_with_a_later_deadline() -> None:
    clock = MockClock()
    parent = corral.Token(clock=clock, timeout=1)
    child = parent.child(timeout=10)
    clock.advance(1)
    assert child.cancelled
    assert child.cause is parent.cause
    assert isinstance(child.cause, TimeoutError)


def test_zero_timeout_expires_at_the_current_time() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock, timeout=0)
    clock.advance(0)
    assert tok.cancelled
    assert isinstance(tok.cause, TimeoutError)


def test_child_timeout_on_the_real_clock() -> None:
    parent = corral.Token()
    child = parent.child(timeout=0.05)
    assert child.deadline is not None
    assert child.wait(BACKSTOP) is True
    assert isinstance(child.cause, TimeoutError)
    assert not parent.cancelled


def test_infinite_timeout_is_no_deadline_and_other_timers_still_fire() -> None:
    # Regression: the system clock's timer thread used to call Condition.wait(inf),
    # which raised OverflowError and killed the thread for good, so no later deadline
    # or backoff on that clock ever fired. (A private clock keeps any such breakage out
    # of SYSTEM_CLOCK, which the other tests use.)
    clock = SystemClock()
    never = corral.Token(clock=clock, timeout=float("inf"))
    assert never.deadline is None or never.deadline == float("inf")
    timer_thread = clock._thread
    if timer_thread is not None:
        # The old bug killed the thread at once (join returns); a healthy timer thread
        # keeps waiting, and this is the bounded cost of the test.
        timer_thread.join(1.0)
    soon = corral.Token(clock=clock, timeout=0.01)
    fired = threading.Event()
    soon.on_cancel(fired.set)
    # (not soon.wait(5): on a clock other than SYSTEM_CLOCK its timeout is a timer too)
    assert fired.wait(5), "the clock's timers stopped firing"
    assert isinstance(soon.cause, TimeoutError)
    assert not never.cancelled


# -- on_cancel --------------------------------------------------------------------------


def test_on_cancel_runs_each_callback_once_with_no_arguments() -> None:
    tok = corral.Token()
    log: list[str] = []
    tok.on_cancel(lambda: log.append("a"))
    tok.on_cancel(lambda: log.append("b"))
    assert log == []
    tok.cancel()
    tok.cancel("again")
    assert sorted(log) == ["a", "b"]


def test_on_cancel_runs_when_an_ancestor_is_cancelled() -> None:
    root = corral.Token()
    leaf = root.child().child()
    seen: list[bool] = []
    leaf.on_cancel(lambda: seen.append(leaf.cancelled))
    root.cancel()
    assert seen == [True]  # the token is already marked when its callbacks run


def test_on_cancel_of_a_cancelled_token_runs_at_once() -> None:
    tok = corral.Token()
    tok.cancel()
    log: list[str] = []
    remove = tok.on_cancel(lambda: log.append("now"))
    assert log == ["now"]
    remove()  # harmless
    assert log == ["now"]


def test_on_cancel_remover_removes_the_callback() -> None:
    tok = corral.Token()
    log: list[str] = []
    remove_a = tok.on_cancel(lambda: log.append("a"))
    tok.on_cancel(lambda: log.append("b"))
    remove_a()
    tok.cancel()
    assert log == ["b"]


def test_same_callback_registered_twice_runs_twice_and_is_removed_once() -> None:
    tok = corral.Token()
    log: list[str] = []

    def cb() -> None:
        log.append("cb")

    remove_first = tok.on_cancel(cb)
    tok.on_cancel(cb)
    remove_first()
    tok.cancel()
    assert log == ["cb"]


def test_a_remover_called_again_does_not_remove_a_later_registration() -> None:
    # Regression: callbacks were keyed by id(callback); once the first registration was
    # removed, registering the same callback again reused the key, so the first remover
    # (called again, e.g. from a `finally`) silently removed the new registration.
    tok = corral.Token()
    log: list[str] = []

    def cb() -> None:
        log.append("cb")

    remove_first = tok.on_cancel(cb)
    remove_first()
    tok.on_cancel(cb)
    remove_first()  # must only ever remove the registration it was returned for
    tok.cancel()
    assert log == ["cb"]


def test_raising_callback_is_logged_and_the_others_still_run(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    tok = corral.Token()
    log: list[str] = []

    def bad() -> None:
        log.append("bad")
        raise RuntimeError("callback broke")

    tok.on_cancel(lambda: log.append("before"))
    tok.on_cancel(bad)
    tok.on_cancel(lambda: log.append("after"))
    tok.cancel()  # does not raise
    assert sorted(log) == ["after", "bad", "before"]
    records = [r for r in corral_log.records if r.exc_info and r.exc_info[1] is not None]
    assert len(records) == 1
    rec = records[0]
    assert rec.name == "corral"
    assert rec.levelno == logging.ERROR
    assert rec.exc_info is not None
    assert isinstance(rec.exc_info[1], RuntimeError)


def test_raising_callback_on_an_already_cancelled_token_is_logged(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    tok = corral.Token()
    tok.cancel()

    def bad() -> None:
        raise ValueError("late callback broke")

    tok.on_cancel(bad)  # does not raise
    errors = [r for r in corral_log.records if r.name == "corral" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)


def test_callbacks_registered_while_cancelling_run_exactly_once() -> None:
    tok = corral.Token()
    counts = [0] * 800
    lock = threading.Lock()
    go = threading.Event()

    def make(i: int) -> Callable[[], None]:
        def cb() -> None:
            with lock:
                counts[i] += 1
        return cb

    def register(start: int) -> None:
        assert go.wait(BACKSTOP)
        for i in range(start, start + 200):
            tok.on_cancel(make(i))

    runners = [Background(functools.partial(register, s)) for s in range(0, 800, 200)]
    go.set()
    tok.cancel()
    for r in runners:
        r.result()
    assert counts == [1] * 800


def test_the_deadline_runs_on_cancel_callbacks() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock, timeout=3)
    log: list[str] = []
    tok.on_cancel(lambda: log.append(f"cancelled at {clock.monotonic()}"))
    clock.advance(3)
    assert log == ["cancelled at 3.0"]


# -- virtual time -----------------------------------------------------------------------


def test_sleep_on_mock_clock_follows_virtual_time() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock)
    bg = Background(lambda: tok.sleep(5))
    try:
        clock.wait_for_timers(1)
        clock.advance(4)
        assert not bg.done.is_set()  # its timer (at 5) has not fired
        clock.advance(1)
        assert bg.result() is True
        assert clock.monotonic() == 5.0
        assert clock.pending == 0
    finally:
        tok.cancel()


def test_sleep_on_mock_clock_returns_false_when_cancelled() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock)
    bg = Background(lambda: tok.sleep(5))
    try:
        clock.wait_for_timers(1)
        tok.cancel()
        assert bg.result() is False
        assert clock.pending == 0  # its timer was cancelled
        assert clock.monotonic() == 0.0
    finally:
        tok.cancel()


def test_wait_on_mock_clock_times_out_in_virtual_time() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock)
    bg = Background(lambda: tok.wait(2))
    try:
        clock.wait_for_timers(1)
        clock.advance(1.5)
        assert not bg.done.is_set()
        clock.advance(0.5)
        assert bg.result() is False
        assert not tok.cancelled
    finally:
        tok.cancel()


def test_wait_on_mock_clock_returns_true_when_cancelled() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock)
    bg = Background(lambda: tok.wait(2))
    try:
        clock.wait_for_timers(1)
        clock.advance(1)
        tok.cancel()
        assert bg.result() is True
    finally:
        tok.cancel()


def test_wait_on_mock_clock_is_woken_by_the_tokens_own_deadline() -> None:
    clock = MockClock()
    tok = corral.Token(clock=clock, timeout=3)
    bg = Background(lambda: tok.wait(10))
    try:
        clock.wait_for_timers(2)  # the deadline and the wait's timer
        clock.advance(3)
        assert bg.result() is True
        assert isinstance(tok.cause, TimeoutError)
    finally:
        tok.cancel()


def test_sleep_zero_on_mock_clock_returns_at_once() -> None:
    # Regression: sleep(0) (and wait(0)) on a MockClock token scheduled a timer at `now`
    # and blocked until some other thread called clock.advance(); zero seconds have
    # already passed, so it returns True (wait(0): False) at once, as on real time.
    clock = MockClock()
    tok = corral.Token(clock=clock)
    bg_sleep = Background(lambda: tok.sleep(0))
    bg_wait = Background(lambda: tok.wait(0))
    try:
        assert bg_sleep.done.wait(2), "sleep(0) blocked until the mock clock was advanced"
        assert bg_wait.done.wait(2), "wait(0) blocked until the mock clock was advanced"
        assert bg_sleep.result() is True
        assert bg_wait.result() is False
    finally:
        clock.advance(0)  # release the sleepers if they did block
        tok.cancel()


# -- module shortcuts -------------------------------------------------------------------


def test_shortcuts_outside_any_task() -> None:
    tok = corral.current_token()
    assert isinstance(tok, corral.Token)
    assert not tok.cancelled
    assert corral.current_task() is None
    assert corral.cancelled() is False
    corral.check()  # does nothing
    t0 = time.monotonic()
    assert corral.sleep(0.02) is True
    assert time.monotonic() - t0 >= 0.015
    assert corral.sleep(0) is True


def test_shortcuts_outside_tasks_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="seconds"):
        corral.sleep(-1)
    with pytest.raises(TypeError):
        corral.sleep("1")  # type: ignore[arg-type]


def test_current_token_outside_tasks_is_never_cancelled_by_anyone() -> None:
    # Cancelling groups does not reach a token taken outside any task.
    tok = corral.current_token()
    with corral.Group() as g:
        g.spawn(lambda: None)
        g.cancel("stop")
    assert not tok.cancelled


def test_shortcuts_inside_a_task_use_the_tasks_token() -> None:
    seen: dict[str, Any] = {}

    def work() -> None:
        task = corral.current_task()
        assert task is not None
        seen["same token"] = corral.current_token() is task.token
        seen["cancelled"] = corral.cancelled()
        corral.check()  # not cancelled: does not raise
        seen["slept"] = corral.sleep(0)

    with corral.Group() as g:
        t = g.spawn(work, name="work")
    assert t.state is corral.TaskState.SUCCEEDED
    assert seen == {"same token": True, "cancelled": False, "slept": True}


def test_shortcuts_inside_a_task_see_its_cancellation() -> None:
    started = threading.Event()
    seen: list[object] = []

    def work() -> None:
        started.set()
        seen.append(corral.sleep(30))  # woken by the cancellation
        seen.append(corral.cancelled())
        seen.append(corral.current_token().cause)
        corral.check()
        seen.append("not reached")

    with corral.Group() as g:
        t = g.spawn(work, name="sleeper")
        try:
            assert started.wait(BACKSTOP)
        finally:
            t.cancel("enough")
    assert seen[:2] == [False, True]
    assert isinstance(seen[2], corral.Cancelled)
    assert len(seen) == 3
    assert t.state is corral.TaskState.CANCELLED


def test_shortcut_sleep_in_a_task_checks_its_argument() -> None:
    def work() -> None:
        corral.sleep(-1)

    g = corral.Group()
    g.spawn(work, name="bad sleep")
    with pytest.raises(ExceptionGroup) as info:
        g.join()
    assert info.group_contains(ValueError)


def test_tg_event_aware_sleep_stops_the_retry_loop() -> None:
    """Seed: ThreadGroup — seeds/002 event_aware_sleep: verify_user's retry loop sleeps 5 s
    between retries and breaks out as soon as the group's event is set (the group is
    cancelled)."""
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
    assert sleeping.wait(BACKSTOP)
    g.cancel(corral.Stopped("abort"))
    g.join(BACKSTOP)
    assert log == ["verify alice", "stopped sleeping early"]


def test_tg_event_aware_sleep_outside_a_group_is_a_plain_sleep() -> None:
    """Seed: ThreadGroup — seeds/002: with no group event (main thread, no parent group)
    event_aware_sleep is a regular sleep: corral.sleep returns True and the current token is
    never cancelled."""
    assert corral.current_task() is None
    assert corral.sleep(0.001) is True
    assert not corral.cancelled()
    assert not corral.current_token().cancelled


# -- what a parent and a clock keep (memory of a long-running service) -----------------


@pytest.mark.usefixtures("no_gc")
def test_a_dropped_child_is_freed_at_once_with_its_deadline_timer() -> None:
    # Regression: a parent held every child strongly until the child was cancelled, and
    # a deadline timer held its token until it fired: 200,000 per-request
    # root.child(timeout=...) tokens dropped uncancelled took RSS from 15 to 71 MB.
    clock = MockClock()
    root = corral.Token(clock=clock)
    child = root.child(timeout=60)
    grandchild = child.child(timeout=30)
    assert clock.pending == 2
    refs = [weakref.ref(child), weakref.ref(grandchild)]
    del child, grandchild
    assert [r() for r in refs] == [None, None]  # freed by refcounting, no gc pass
    assert clock.pending == 0  # their timers were cancelled with them
    assert not root._children  # and the parent forgot them
    clock.advance(60)
    assert not root.cancelled


@pytest.mark.usefixtures("no_gc")
def test_a_dropped_child_on_the_system_clock_leaves_its_heap() -> None:
    clock = SystemClock()  # private: other tests' timers stay out of its heap
    root = corral.Token(clock=clock)
    refs = [weakref.ref(root.child(timeout=3600)) for _ in range(1000)]
    assert all(r() is None for r in refs)
    assert not root._children
    assert sum(1 for _, _, h in clock._heap if not h.cancelled) == 0
    assert len(clock._heap) <= 64  # the few a small heap may keep (_PURGE_MIN)


def test_a_live_child_is_still_cancelled_by_its_parent() -> None:
    root = corral.Token()
    for _ in range(1000):
        root.child(timeout=3600)  # dropped: freed
    live = root.child(timeout=3600)
    # Only the grandchild is held: it holds its parent, so the chain stays linked.
    grandchild = root.child().child()
    for _ in range(1000):
        root.child()
    root.cancel("stop")
    assert is_cancelled(live)
    assert is_cancelled(grandchild)
    assert live.cause is root.cause
    assert grandchild.cause is root.cause


def test_children_made_and_dropped_while_the_parent_is_cancelled_are_all_reached() -> None:
    # A child freed on one thread unregisters itself without the parent's lock, while
    # another thread walks the parent's children to cancel them: every child still
    # held when cancel() returns is cancelled, whatever the interleaving.
    root = corral.Token()
    kept: list[list[corral.Token]] = [[] for _ in range(4)]
    go = threading.Barrier(5)
    churning = threading.Event()

    def churn(mine: list[corral.Token]) -> None:
        go.wait(BACKSTOP)
        for i in range(1_000_000):
            tok = root.child(timeout=3600 if i % 2 else None)
            if i % 10 == 0:
                mine.append(tok)
            if i == 2000:
                churning.set()
            if tok.cancelled:
                return

    runners = [Background(functools.partial(churn, mine)) for mine in kept]
    go.wait(BACKSTOP)
    assert churning.wait(BACKSTOP)
    root.cancel("stop")
    for r in runners:
        r.result()
    assert all(is_cancelled(t) for mine in kept for t in mine)
    assert sum(map(len, kept)) > 200  # (the first runner kept 201 before the cancel)


def test_a_dropped_child_with_on_cancel_callbacks_is_kept_until_they_run() -> None:
    # Dropping an unobservable token is safe; one with callbacks is observable, so its
    # parent (and its deadline) keep it, and the callbacks run as promised.
    clock = MockClock()
    root = corral.Token(clock=clock)
    log: list[str] = []
    root.child().on_cancel(lambda: log.append("child of root"))
    corral.Token(clock=clock, timeout=5).on_cancel(lambda: log.append("deadline"))
    removed = root.child(timeout=60)
    remove = removed.on_cancel(lambda: log.append("removed"))
    remove()  # no callback left: it may be freed again
    ref = weakref.ref(removed)
    del removed, remove  # (a remover holds its token)
    assert ref() is None
    clock.advance(5)
    assert log == ["deadline"]
    root.cancel()
    assert log == ["deadline", "child of root"]
    assert clock.pending == 0


def test_dropping_a_very_deep_chain_of_children_frees_it_all() -> None:
    # Each freed token releases its parent from a weakref callback: a long chain must
    # not overflow anything (pytest reports an exception raised in such a callback).
    root = corral.Token()
    tok = root
    for _ in range(100_000):
        tok = tok.child()
    ref = weakref.ref(tok)
    del tok
    assert ref() is None
    assert not root._children


def test_cancelled_deadlines_leave_the_mock_clocks_heap_and_live_ones_fire_in_order() -> None:
    # Regression: a token with a deadline cancelled early kept its timer entry until the
    # deadline passed. Cancelled entries are purged once they outnumber the live ones;
    # the purge must keep the live timers, due in order.
    clock = MockClock()
    root = corral.Token(clock=clock)
    fired: list[float] = []
    keep: list[corral.Token] = []
    cancelled: list[corral.Token] = []
    for i in range(1000):
        tok = root.child(timeout=1 + i % 97)
        (keep if i % 10 == 0 else cancelled).append(tok)
    for tok in keep:
        tok.on_cancel(lambda: fired.append(clock.monotonic()))
    for tok in cancelled:
        tok.cancel()
    assert clock.pending == len(keep) == 100
    assert len(clock._heap) <= 2 * len(keep) + 64
    clock.advance(100)
    assert fired == sorted(fired)
    assert len(fired) == 100
    assert all(isinstance(t.cause, TimeoutError) for t in keep)
    assert all(isinstance(t.cause, corral.Cancelled) for t in cancelled)


# -- with: a token as a context manager ---------------------------------------------


def test_with_cancels_the_child_at_exit_and_not_its_parent() -> None:
    clock = MockClock()
    root = corral.Token(clock=clock)
    with root.child(timeout=5) as t:
        below = t.child()
        assert not t.cancelled
        assert clock.pending == 1
    assert is_cancelled(t)
    assert isinstance(t.cause, corral.Cancelled)
    assert t.cause.args == ("its with block ended",)
    assert below.cause is t.cause  # its own children go with it
    assert clock.pending == 0  # the deadline timer is dropped
    assert not root._children  # the parent no longer holds it
    assert not root.cancelled
    clock.advance(10)
    assert not root.cancelled


def test_with_lets_the_blocks_exception_through_and_keeps_an_earlier_cause() -> None:
    clock = MockClock()
    root = corral.Token(clock=clock)
    with pytest.raises(KeyError), root.child(timeout=5) as t:
        raise KeyError("x")
    assert isinstance(t.cause, corral.Cancelled)
    with root.child(timeout=5) as expired:
        clock.advance(5)
    assert isinstance(expired.cause, TimeoutError)  # the first cause wins
    assert not root.cancelled


# -- bad input --------------------------------------------------------------------------


def test_parent_must_be_a_token() -> None:
    with pytest.raises(TypeError):
        corral.Token(parent="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        corral.Token(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1", None, [1], True])
def test_timeouts_and_seconds_must_be_numbers(bad: object) -> None:
    tok = corral.Token()
    if bad is not None:  # None is a valid timeout ("no deadline")
        with pytest.raises(TypeError):
            corral.Token(timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            tok.child(timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            tok.wait(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tok.sleep(bad)  # type: ignore[arg-type]


def test_negative_timeouts_and_seconds_are_value_errors() -> None:
    tok = corral.Token()
    with pytest.raises(ValueError, match="timeout"):
        corral.Token(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        tok.child(timeout=-0.5)
    with pytest.raises(ValueError, match="timeout"):
        tok.wait(-1)
    with pytest.raises(ValueError, match="seconds"):
        tok.sleep(-1)
    assert not tok.cancelled


def test_nan_timeouts_and_seconds_are_value_errors() -> None:
    # Regression: NaN passed the `value < 0` check. Token(timeout=nan) was accepted and
    # put a NaN deadline on the clock's heap (after which the system clock's timer thread
    # stopped firing timers), sleep(nan) returned True at once, wait(nan) False.
    clock = MockClock()
    nan = float("nan")
    tok = corral.Token(clock=clock)
    with pytest.raises(ValueError, match="timeout"):
        corral.Token(timeout=nan, clock=clock)
    with pytest.raises(ValueError, match="timeout"):
        tok.child(timeout=nan)
    with pytest.raises(ValueError, match="seconds"):
        tok.sleep(nan)
    with pytest.raises(ValueError, match="timeout"):
        tok.wait(nan)


def live_tokens() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is corral.Token)


def test_a_child_rejected_for_its_timeout_is_not_kept_by_its_parent() -> None:
    # BUG: Token.__init__ registers the new token in parent._children before it checks
    # `timeout`, so each Token(parent, timeout=<bad>) that raises leaves a half-built
    # token in the parent for as long as the parent lives (a leak, and an object the
    # parent's cancel() later walks). Check the arguments before registering.
    parent = corral.Token()
    before = live_tokens()
    for bad in (-1, float("nan"), "soon"):
        for _ in range(10):
            with pytest.raises((ValueError, TypeError)):
                corral.Token(parent, timeout=bad)  # type: ignore[arg-type]
            with pytest.raises((ValueError, TypeError)):
                parent.child(timeout=bad)  # type: ignore[arg-type]
    assert live_tokens() == before


def test_on_cancel_needs_a_callable() -> None:
    tok = corral.Token()
    with pytest.raises(TypeError):
        tok.on_cancel(3)  # type: ignore[arg-type]
    tok.cancel()
    with pytest.raises(TypeError):  # checked even when it would run at once
        tok.on_cancel(None)  # type: ignore[arg-type]


def test_cancel_cause_must_be_an_exception_text_or_none() -> None:
    tok = corral.Token()
    with pytest.raises(TypeError):
        tok.cancel(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tok.cancel(ValueError)  # type: ignore[arg-type]  # the class, not an instance
    assert not tok.cancelled  # a rejected cancel does not cancel


def test_repr_shows_the_state() -> None:
    tok = corral.Token()
    assert "active" in repr(tok)
    tok.cancel("done")
    assert "cancelled" in repr(tok)
    assert "done" in repr(tok)


def test_timeouts_beyond_what_threading_can_wait_mean_no_timeout() -> None:
    # Regression: wait(1e10) and sleep(1e10) raised OverflowError from threading. One
    # rule for every timeout (check_timeout): >= threading.TIMEOUT_MAX waits until
    # cancelled, like inf. (The token's own short deadline is what ends these waits.)
    huge = 1e10
    assert huge > threading.TIMEOUT_MAX
    assert corral.Token(timeout=huge).deadline is None
    assert corral.Token().child(timeout=float("inf")).deadline is None
    tok = corral.Token(timeout=0.1)
    assert tok.wait(huge) is True
    assert isinstance(tok.cause, TimeoutError)
    tok = corral.Token(timeout=0.1)
    assert tok.sleep(huge) is False
    assert isinstance(tok.cause, TimeoutError)


def test_clock_must_be_a_clock() -> None:
    # Regression: Token(clock='x') was accepted and failed later with AttributeError.
    with pytest.raises(TypeError, match=r"clock must be None or a Clock .*not str"):
        corral.Token(clock="x")  # type: ignore[arg-type]

    class NoTimers:
        def monotonic(self) -> float:
            return 0.0

    with pytest.raises(TypeError, match="call_at"):
        corral.Token(clock=NoTimers())  # type: ignore[arg-type]
    parent = corral.Token()
    with pytest.raises(TypeError):
        corral.Token(parent, clock=42)  # type: ignore[arg-type]
    assert not parent._children  # refused before it registered
    assert corral.Token(clock=MockClock()).clock is not None


def test_a_runners_hook_runs_once_on_cancel_and_can_be_taken_off() -> None:
    # (The asyncio runner's way to hear of an attempt's cancellation, without
    # on_cancel's registration.)
    calls: list[str] = []
    leaf = corral.Token._leaf(corral.Token().clock)
    assert leaf.set_hook(lambda: calls.append("leaf"))
    leaf.cancel()
    leaf.cancel()
    assert calls == ["leaf"]
    assert not leaf.set_hook(lambda: calls.append("late"))  # cancelled: the caller acts
    parent = corral.Token()
    child = parent.child()
    assert child.set_hook(lambda: calls.append("child"))
    parent.cancel()  # (through the tree walk)
    assert calls == ["leaf", "child"]
    quiet = corral.Token()
    assert quiet.set_hook(lambda: calls.append("quiet"))
    assert quiet.set_hook(None)
    quiet.cancel()
    assert calls == ["leaf", "child"]


def test_an_async_on_cancel_callback_is_refused() -> None:
    # It was called on cancel and dropped ("coroutine was never awaited"): it never ran.
    async def callback() -> None:
        pass

    tok = corral.Token()
    with pytest.raises(TypeError, match=r"^callback is a coroutine function .*never awaited"):
        tok.on_cancel(callback)
    tok.cancel()  # (nothing was registered: no warning, nothing dropped)
