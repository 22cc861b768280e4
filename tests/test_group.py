"""Group semantics: spawning, limits, error policy, background tasks, collectors,
wait_until, map, join, names, dependencies and introspection (DESIGN.md).

Tests whose docstring starts with "Seed: <library>" port a case of one of the seed
libraries; where the Go library's behaviour is a bug (marked **BUG?**), they
assert corral's fixed behaviour.
"""

from __future__ import annotations

import functools
import gc
import inspect
import itertools
import json
import logging
import queue
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

import corral
from corral import Restart, TaskState
from corral.testing import MockClock
from helpers import (
    BLOCKED,
    NO_DELAY,
    TIMEOUT,
    AtomicCounter,
    Concurrency,
    group_errors,
    is_cancelled,
    released,
    wait,
    wait_token,
)
from runners import LoopRunner, ThreadPerAttemptRunner

# Every test runs over each runner (the pool, a thread per attempt, the asyncio runner):
# see conftest.
pytestmark = pytest.mark.usefixtures("runner")


def test_the_runner_fixture_runs_the_tasks_on_its_runner(
    runner: ThreadPerAttemptRunner | LoopRunner | None,
) -> None:
    seen: list[str] = []

    def where() -> None:
        seen.append(threading.current_thread().name)

    with corral.Group() as g:
        t = g.spawn(where)
    assert seen == [f"corral:{t.name}"]  # (every runner names the thread after the task)
    if runner is None:
        assert type(t._runner).__name__ == "ThreadRunner"
    else:
        assert t._runner is runner
        assert runner.attempts == 1


def until_cancelled() -> str:
    assert wait_token()
    return "stopped"


def gated(gate: threading.Event, value: object = None) -> object:
    assert gate.wait(TIMEOUT)
    return value


def state(t: corral.Task[Any]) -> TaskState:
    """The task's state, read afresh (keeps mypy from narrowing across waits)."""
    return t.state


def closed(g: corral.Group) -> bool:
    return g.closed


def raise_(exc: BaseException) -> NoReturn:
    raise exc


def noop() -> None:
    return None


def not_called() -> NoReturn:
    raise AssertionError("this task must not run")


def assert_blocked(g: corral.Group) -> None:
    """``join`` does not return while something still holds the group (Go ``requireBlocked``)."""
    with pytest.raises(TimeoutError):
        g.join(timeout=BLOCKED)


# -- spawn -----------------------------------------------------------------------------


def test_spawn_returns_a_task_at_once_and_calls_fn_with_args() -> None:
    gate = threading.Event()
    calls: list[tuple[int, str]] = []

    def work(n: int, s: str) -> str:
        calls.append((n, s))
        assert gate.wait(TIMEOUT)
        return s * n

    with corral.Group("g") as g, released(gate):
        t = g.spawn(work, 3, "ab")
        assert isinstance(t, corral.Task)
        assert not t.done  # it blocks on the gate: spawn did not wait for it
        assert t.state in (TaskState.PENDING, TaskState.RUNNING)
        with pytest.raises(TimeoutError):
            t.join(timeout=0.01)
        gate.set()
        assert t.result(TIMEOUT) == "ababab"
    assert calls == [(3, "ab")]
    assert state(t) is TaskState.SUCCEEDED
    assert t.attempts == 1
    assert t.exception() is None


def test_meta_is_on_every_task() -> None:
    with corral.Group() as g:
        a = g.spawn(noop, meta={"user": "u1", "n": 2})
        b = g.spawn(noop)
    assert a.meta == {"user": "u1", "n": 2}
    assert b.meta == {}


def test_bg_v1_2_run_executes_in_goroutine() -> None:
    """Seed: background — v1 #2 / HEAD #2: Run returns before the task
    runs, and the task runs on another thread."""
    proceed = threading.Event()
    ran_on: list[int] = []

    def task() -> None:
        proceed.wait(TIMEOUT)
        ran_on.append(threading.get_ident())

    g = corral.Group("bg-goroutine")
    try:
        t = g.spawn(task)
        assert ran_on == []  # spawn returned while the task is blocked
    finally:
        proceed.set()
    t.join(TIMEOUT)
    g.join(TIMEOUT)
    assert len(ran_on) == 1
    assert ran_on[0] != threading.get_ident()


# -- limit -----------------------------------------------------------------------------


def test_limit_caps_concurrency_and_queued_tasks_start_in_spawn_order() -> None:
    n, limit = 9, 3
    gates = [threading.Event() for _ in range(n)]
    started = [threading.Event() for _ in range(n)]
    conc = Concurrency()
    order: list[int] = []

    def work(i: int) -> int:
        with conc:
            order.append(i)
            started[i].set()
            assert gates[i].wait(TIMEOUT)
        return i

    with corral.Group(limit=limit) as g, released(*gates):
        tasks = [g.spawn(work, i) for i in range(n)]
        for i in range(limit):
            wait(started[i])
        assert [t.state for t in tasks[limit:]] == [TaskState.PENDING] * (n - limit)
        assert len(g) == n
        for i in range(n):
            gates[i].set()  # one slot frees: exactly the oldest queued task starts
            tasks[i].join(TIMEOUT)
            if i + limit < n:
                wait(started[i + limit])
                assert all(t.state is TaskState.PENDING for t in tasks[i + limit + 1 :])
    assert conc.peak == limit
    assert sorted(order[:limit]) == list(range(limit))
    assert order[limit:] == list(range(limit, n))
    assert [t.result() for t in tasks] == list(range(n))


def test_limit_one_runs_tasks_one_at_a_time_in_spawn_order() -> None:
    conc = Concurrency()
    order: list[int] = []

    def work(i: int) -> None:
        with conc:
            order.append(i)

    with corral.Group(limit=1) as g:
        for i in range(20):
            g.spawn(work, i)
    assert order == list(range(20))
    assert conc.peak == 1


def test_limit_holds_when_every_gate_opens_at_once() -> None:
    n, limit = 16, 4
    gate = threading.Event()
    first_batch = threading.Barrier(limit, timeout=TIMEOUT)
    conc = Concurrency()

    def work(i: int) -> None:
        with conc:
            if i < limit:
                first_batch.wait()  # the first `limit` tasks do run at the same time
            assert gate.wait(TIMEOUT)

    with corral.Group(limit=limit) as g, released(gate):
        for i in range(n):
            g.spawn(work, i)
        gate.set()
    assert conc.peak == limit


def test_limit_holds_over_many_short_tasks() -> None:
    conc = Concurrency()

    def work(i: int) -> int:
        with conc:
            return i

    with corral.Group(limit=3) as g:
        tasks = [g.spawn(work, i) for i in range(300)]
    assert conc.peak <= 3
    assert [t.result() for t in tasks] == list(range(300))
    assert len(g) == 0


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_a_value_error(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        corral.Group(limit=limit)


@pytest.mark.parametrize("limit", ["3", 2.5, True])
def test_limit_of_the_wrong_type_is_a_type_error(limit: Any) -> None:
    with pytest.raises(TypeError, match="limit"):
        corral.Group(limit=limit)


def test_tg_limit_caps_concurrent_tasks() -> None:
    """Seed: ThreadGroup — seeds/002 ThreadGroup(max_concurrent_threads=10): with 30 users
    to verify, at most 10 tasks run at once; the others wait (PENDING) until a slot frees;
    join(600) waits."""
    gate = threading.Event()
    running = AtomicCounter()
    peak = AtomicCounter()
    ten_running = threading.Event()
    peak_lock = threading.Lock()

    def verify_user(user: int) -> None:
        now = running.add(1)
        with peak_lock:
            if now > peak.value:
                peak.value = now
        if now == 10:
            ten_running.set()
        gate.wait(TIMEOUT)
        running.add(-1)

    g = corral.Group("Verifying Users", limit=10)
    try:
        tasks = [g.spawn(verify_user, user) for user in range(30)]
        assert ten_running.wait(TIMEOUT)
        assert Tally(t.state for t in tasks) == {TaskState.RUNNING: 10, TaskState.PENDING: 20}
        with pytest.raises(TimeoutError):
            g.join(timeout=BLOCKED)  # join(600) times out while users are being verified
    finally:
        gate.set()
    g.join(timeout=600)
    assert peak.value == 10
    assert all(t.state is TaskState.SUCCEEDED for t in tasks)


# -- error policy ----------------------------------------------------------------------


def test_fail_fast_cancels_siblings_and_raises_one_exception_group() -> None:
    boom = ValueError("boom")
    go = threading.Event()
    up = [threading.Event(), threading.Event()]
    returned: list[str] = []

    def sibling(i: int) -> str:
        up[i].set()
        assert wait_token()
        returned.append(f"s{i}")
        return "late"

    def failing() -> None:
        assert go.wait(TIMEOUT)
        raise boom

    g = corral.Group("ff")
    with released(go):
        s0 = g.spawn(sibling, 0, name="s0")
        s1 = g.spawn(sibling, 1, name="s1")
        a = g.spawn(failing, name="a")
        wait(up[0])
        wait(up[1])
        go.set()
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert info.value.exceptions == (boom,)
    assert any("'a' (attempt 1)" in note for note in getattr(boom, "__notes__", []))
    assert a.state is TaskState.FAILED
    assert a.exception() is boom
    for s in (s0, s1):
        assert s.state is TaskState.CANCELLED  # not FAILED: it returned after cancellation
        assert s.token.cause is boom
        with pytest.raises(corral.Cancelled) as c:
            s.result()
        assert c.value.__cause__ is boom
    assert sorted(returned) == ["s0", "s1"]
    assert g.token.cause is boom


def test_fail_fast_ends_queued_siblings_without_running_them() -> None:
    # The failure is known before the queued task's slot frees: fail_fast must end it
    # while it is still PENDING (without running), not release it into a cancelled group.
    boom = RuntimeError("boom")
    go = threading.Event()
    called: list[bool] = []
    g = corral.Group(limit=1)
    with released(go):
        first = g.spawn(lambda: raise_(boom) if go.wait(TIMEOUT) else None)
        queued = g.spawn(lambda: called.append(corral.cancelled()))
        assert queued.state is TaskState.PENDING
        go.set()
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert info.value.exceptions == (boom,)
    assert first.state is TaskState.FAILED
    assert state(queued) is TaskState.CANCELLED
    assert queued.token.cause is boom
    assert called == [], "the queued sibling ran (with a cancelled token) after the failure"
    assert queued.attempts == 0


def test_an_exception_raised_after_cancellation_is_still_a_failure() -> None:
    boom = ValueError("boom")
    cleanup = RuntimeError("cleanup failed")
    up = threading.Event()
    go = threading.Event()

    def sibling() -> None:
        up.set()
        assert wait_token()
        raise cleanup

    g = corral.Group(fail_fast=True)
    with released(go):
        s = g.spawn(sibling, name="sibling")
        g.spawn(lambda: raise_(boom) if go.wait(TIMEOUT) else None, name="first")
        wait(up)
        go.set()
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert info.value.exceptions == (boom, cleanup)
    assert s.state is TaskState.FAILED
    assert any("'sibling' (attempt 1)" in n for n in getattr(cleanup, "__notes__", []))


def test_without_fail_fast_every_failure_is_collected_and_the_others_keep_going() -> None:
    e1, e2 = ValueError("one"), KeyError("two")
    gate = threading.Event()
    g = corral.Group(fail_fast=False)
    with released(gate):
        survivor = g.spawn(gated, gate, "ok", name="survivor")
        f1 = g.spawn(raise_, e1, name="f1")
        f2 = g.spawn(raise_, e2, name="f2")
        f1.join(TIMEOUT)
        f2.join(TIMEOUT)
        assert survivor.state is TaskState.RUNNING
        assert not survivor.token.cancelled
        assert not g.token.cancelled
        assert g.failures in ([e1, e2], [e2, e1])
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert len(info.value.exceptions) == 2
    assert set(map(id, info.value.exceptions)) == {id(e1), id(e2)}
    assert survivor.result() == "ok"


@pytest.mark.parametrize(
    "exc",
    [corral.Stopped("stop"), corral.Replaced("replaced"), corral.Cancelled("cancelled")],
    ids=["Stopped", "Replaced", "Cancelled"],
)
def test_graceful_causes_and_cancelled_are_never_failures(exc: BaseException) -> None:
    gate = threading.Event()
    with corral.Group(fail_fast=True) as g, released(gate):
        other = g.spawn(gated, gate, "other")
        t = g.spawn(raise_, exc)
        t.join(TIMEOUT)
        assert t.state is TaskState.CANCELLED
        assert t.exception() is None
        assert not g.token.cancelled  # fail_fast did not fire
        assert not other.token.cancelled
        gate.set()
    assert g.failures == []
    assert other.result() == "other"


def test_a_task_that_returns_after_its_token_was_cancelled_ends_cancelled() -> None:
    up = threading.Event()

    def work() -> int:
        up.set()
        assert wait_token()
        return 5

    with corral.Group() as g:
        t = g.spawn(work)
        wait(up)
        t.cancel("enough")
        t.join(TIMEOUT)
    assert t.state is TaskState.CANCELLED
    with pytest.raises(corral.Cancelled) as info:
        t.result()
    assert isinstance(info.value.__cause__, corral.Cancelled)
    assert info.value.__cause__.args == ("enough",)
    assert t.exception() is None
    assert g.failures == []


def test_gm_3_foreground_goroutine() -> None:
    """Seed: goroutine-manager — #3: a foreground task blocks Wait;
    before it panics the context is not done and nothing is collected; once it panics, Wait
    returns, the context is done and the error is collected."""
    err = ValueError("test error")
    done = threading.Event()

    def fg() -> None:
        done.wait(TIMEOUT)
        raise err

    g = corral.Group("gm-3")
    try:
        g.spawn(fg)
        assert_blocked(g)
        assert not g.token.cancelled
        assert g.failures == []
    finally:
        done.set()
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)
    assert g.token.cancelled


def test_gm_8_multiple_goroutine_errors() -> None:
    """Seed: goroutine-manager — #8: fg1 panics err1, which cancels the
    context; fg2 wakes on it and panics err2 (not a cancellation, so recorded): both are
    collected, in recovery order."""
    err1, err2 = ValueError("test error 1"), ValueError("test error 2")
    gate = threading.Event()
    fg2_causes: list[BaseException | None] = []

    def fg1() -> None:
        gate.wait(TIMEOUT)
        raise err1

    def fg2() -> None:
        tok = corral.current_token()
        tok.wait(TIMEOUT)
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
    assert group_errors(lambda: g.join(TIMEOUT)) == (err1, err2)
    assert fg2_causes == [err1]  # the failure that triggered fail-fast is the cause


def test_gm_9_parent_context() -> None:
    """Seed: goroutine-manager — #9: cancelling the parent context
    reaches the group's tasks; a task that then raises is collected."""
    err = ValueError("test error")
    parent = corral.Token()

    def fg() -> None:
        corral.current_token().wait(TIMEOUT)
        raise err

    g = corral.Group("gm-9", token=parent)
    g.spawn(fg)
    assert_blocked(g)
    assert not g.token.cancelled
    parent.cancel("request went away")
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)
    assert is_cancelled(g.token)
    assert g.token.cause is parent.cause


def test_gm_extra_cancelled_after_stop_is_not_recorded() -> None:
    """Seed: goroutine-manager — extra: a Canceled panic after
    StopAllGoroutines is not recorded and the hook is not called. corral: a task raising
    Cancelled (check()) after a graceful stop ends CANCELLED, on_failed is not called, join
    raises nothing."""
    started = threading.Event()
    failed: list[BaseException] = []

    def fg() -> None:
        started.set()
        corral.current_token().wait(TIMEOUT)
        corral.check()

    g = corral.Group("gm-canceled", hooks=corral.Hooks(on_failed=lambda t, e: failed.append(e)))
    t = g.spawn(fg)
    assert started.wait(TIMEOUT)
    g.cancel(corral.Stopped("stop all goroutines"))
    g.join(TIMEOUT)
    assert failed == []
    assert t.state is TaskState.CANCELLED
    assert t.exception() is None


def test_gm_extra_cancelled_after_parent_cancel_keeps_the_parent_cause() -> None:
    """Seed: goroutine-manager — extra: the same Canceled panic after a
    *parent* cancel is recorded in Go, to tell "the request timed out" from "we stopped on
    purpose". corral never reports Cancelled as a failure; the distinction is the cause (a
    deadline's TimeoutError, not Stopped)."""
    clock = MockClock()
    request = corral.Token(timeout=1, clock=clock)
    started = threading.Event()

    def fg() -> None:
        started.set()
        corral.current_token().wait(TIMEOUT)
        corral.check()

    g = corral.Group("gm-parent-canceled", token=request)
    t = g.spawn(fg)
    assert started.wait(TIMEOUT)
    clock.advance(1)
    g.join(TIMEOUT)
    assert t.state is TaskState.CANCELLED
    assert isinstance(g.token.cause, TimeoutError)
    assert isinstance(t.token.cause, TimeoutError)
    assert not isinstance(t.token.cause, corral.Stopped)


# -- the with-body ---------------------------------------------------------------------


def test_body_exception_cancels_the_group_and_comes_out_with_task_failures() -> None:
    body_err = ValueError("body")
    task_err = KeyError("task")
    box: dict[str, corral.Task[Any]] = {}

    def run() -> None:
        with corral.Group(fail_fast=False) as g:
            f = g.spawn(raise_, task_err, name="f")
            box["s"] = g.spawn(until_cancelled, name="s")
            f.join(TIMEOUT)
            assert not box["s"].token.cancelled
            raise body_err

    with pytest.raises(ExceptionGroup) as info:
        run()
    assert list(info.value.exceptions) == [body_err, task_err]
    s = box["s"]
    assert s.state is TaskState.CANCELLED
    assert s.token.cause is body_err


def test_body_without_error_and_no_failures_raises_nothing() -> None:
    reached = []
    with corral.Group() as g:
        t = g.spawn(lambda: 1)
    reached.append(True)
    assert reached == [True]
    assert t.result() == 1
    assert g.failures == []
    assert g.closed


def test_body_keyboard_interrupt_propagates_as_itself() -> None:
    kbi = KeyboardInterrupt()
    box: dict[str, corral.Task[Any]] = {}

    def run() -> None:
        with corral.Group() as g:
            box["t"] = g.spawn(until_cancelled)
            raise kbi

    with pytest.raises(KeyboardInterrupt) as info:
        run()
    assert info.value is kbi
    assert box["t"].state is TaskState.CANCELLED
    assert box["t"].token.cause is kbi


# -- KeyboardInterrupt / SystemExit in a task ------------------------------------------


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_fatal_exception_in_a_task_cancels_the_group_and_join_reraises_it(
    exc_type: type[BaseException],
) -> None:
    fatal = exc_type()
    up = threading.Event()
    go = threading.Event()
    def sibling() -> None:
        up.set()
        assert wait_token()

    g = corral.Group(fail_fast=False)  # even without fail_fast
    with released(go):
        s = g.spawn(sibling, name="sibling")
        d = g.spawn(lambda: raise_(fatal) if go.wait(TIMEOUT) else None, name="dies")
        wait(up)
        go.set()
    with pytest.raises(exc_type) as info:
        g.join(TIMEOUT)
    assert info.value is fatal  # itself, not wrapped in a group
    assert d.state is TaskState.FAILED
    assert s.state is TaskState.CANCELLED
    assert s.token.cause is fatal
    assert g.closed


def test_fatal_exception_in_a_task_is_reraised_by_the_with_exit() -> None:
    other = ValueError("also failed")

    def run() -> None:
        with corral.Group(fail_fast=False) as g:
            f = g.spawn(raise_, other)
            f.join(TIMEOUT)
            g.spawn(raise_, SystemExit(3))

    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 3


def test_gm_extra_non_exception_panic_is_not_lost() -> None:
    """Seed: goroutine-manager — extra: a non-error panic value is still
    recorded. Python raises only exceptions; the nearest case is a BaseException that is not
    an Exception (SystemExit): it cancels the group and join re-raises it as is."""
    sibling_started = threading.Event()

    def sibling() -> None:
        sibling_started.set()
        corral.current_token().wait(TIMEOUT)

    g = corral.Group("gm-systemexit")
    s = g.spawn(sibling)
    assert sibling_started.wait(TIMEOUT)
    g.spawn(raise_, SystemExit(3))
    with pytest.raises(SystemExit) as info:
        g.join(TIMEOUT)
    assert info.value.code == 3
    assert g.token.cancelled
    assert s.state is TaskState.CANCELLED


# -- background tasks --------------------------------------------------------------------


def test_background_tasks_are_stopped_and_waited_for_when_the_foreground_is_done() -> None:
    log: list[str] = []
    bg_up = threading.Event()

    def bg() -> None:
        bg_up.set()
        tok = corral.current_token()
        assert wait_token(tok)
        log.append(f"bg stopped: {type(tok.cause).__name__}")
        log.append("bg end")

    def fg() -> None:
        assert bg_up.wait(TIMEOUT)
        log.append("fg end")

    with corral.Group() as g:
        b = g.spawn(bg, background=True)
        f = g.spawn(fg)
        f.join(TIMEOUT)
        # the foreground is done but the body still runs: the background task goes on
        assert not b.token.cancelled
        assert b.state is TaskState.RUNNING
        log.append("body end")
    log.append("exit")
    assert log == ["fg end", "body end", "bg stopped: Stopped", "bg end", "exit"]
    assert state(b) is TaskState.CANCELLED
    assert isinstance(b.token.cause, corral.Stopped)
    assert b.done
    assert g.failures == []


def test_background_tasks_alone_do_not_keep_the_group_open() -> None:
    up = threading.Event()
    g = corral.Group()
    def bg() -> None:
        up.set()
        assert wait_token()

    b = g.spawn(bg, background=True)
    wait(up)
    g.join(TIMEOUT)  # returns: nothing in the foreground
    assert b.done
    assert b.state is TaskState.CANCELLED
    assert isinstance(b.token.cause, corral.Stopped)


def test_gm_4_background_goroutine_failure_is_collected() -> None:
    """Seed: goroutine-manager — #4: a background task's panic is
    collected too and cancels the context ("eventually": the port waits on the token instead
    of racing)."""
    err = ValueError("test error")
    done = threading.Event()

    def bg() -> None:
        done.wait(TIMEOUT)
        raise err

    g = corral.Group("gm-4")
    try:
        g.spawn(bg, background=True)
        assert not g.token.cancelled
        assert g.failures == []
        assert len(g) == 1
    finally:
        done.set()
    assert g.token.wait(TIMEOUT)
    assert g.failures == [err]
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)


def test_gm_4_background_goroutine_does_not_hold_wait() -> None:
    """Seed: goroutine-manager — #4: background work is not waited for
    ("Wait not blocked"). corral: when the foreground is done, a background task is
    cancelled (cause Stopped) and waited for, so it never outlives its group; nothing is
    reported."""
    started = threading.Event()
    causes: list[BaseException | None] = []

    def bg() -> None:
        started.set()
        tok = corral.current_token()
        tok.wait(TIMEOUT)
        causes.append(tok.cause)

    with corral.Group("gm-4b") as g:
        t = g.spawn(bg, background=True)
        assert started.wait(TIMEOUT)
    assert t.state is TaskState.CANCELLED
    assert len(causes) == 1
    assert isinstance(causes[0], corral.Stopped)
    assert g.failures == []


def test_bg_head_16_close_waits_for_one_offs_and_cancels_loops() -> None:
    """Seed: background — HEAD #16 Test_Close: a loop and a one-off both
    block on proceed; counts (1, 1); Close (= Wait and Cancel) -> (0, 0). corral: the loop
    is a background task with Restart.ALWAYS, the one-off a foreground task; join waits for
    the one-off and then cancels the loop."""
    proceed = threading.Event()
    g = corral.Group("bg-close")
    try:
        loop = g.spawn(proceed.wait, TIMEOUT, restart=Restart.ALWAYS, backoff=NO_DELAY, background=True)
        one_off = g.spawn(proceed.wait, TIMEOUT)
        assert len(g) == 2
    finally:
        proceed.set()
    g.join(TIMEOUT)
    assert len(g) == 0
    assert one_off.state is TaskState.SUCCEEDED
    assert loop.done


# -- collect() and wrap() --------------------------------------------------------------------


def test_a_foreground_collect_keeps_join_waiting_while_its_block_runs() -> None:
    inside = threading.Event()
    gate = threading.Event()
    log: list[str] = []
    g = corral.Group()

    def external() -> None:
        with g.collect():
            inside.set()
            assert gate.wait(TIMEOUT)
            log.append("collector done")

    th = threading.Thread(target=external)
    th.start()
    try:
        wait(inside)
        with pytest.raises(TimeoutError):
            g.join(timeout=0.05)
        assert not g.closed
    finally:
        gate.set()
        th.join(TIMEOUT)
    g.join(TIMEOUT)
    assert log == ["collector done"]
    assert g.closed


def test_a_background_collect_does_not_keep_join_waiting() -> None:
    inside = threading.Event()
    gate = threading.Event()
    log: list[str] = []
    g = corral.Group()

    def external() -> None:
        with g.collect(background=True):
            inside.set()
            assert gate.wait(TIMEOUT)
            log.append("collector done")

    th = threading.Thread(target=external)
    th.start()
    try:
        wait(inside)
        g.join(TIMEOUT)
        assert g.closed
        assert log == []  # join returned while the block still ran
    finally:
        gate.set()
        th.join(TIMEOUT)
    assert log == ["collector done"]


def test_a_background_collector_failing_after_its_group_closed_is_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # join() returned while the background block still ran, so the group can no longer
    # raise what the block raises: it must reach the user some other way (propagate, as
    # wrap() does once the group is closed, or an ERROR log), not vanish.
    caplog.set_level(logging.DEBUG, logger="corral")
    err = ValueError("late callback failure")
    inside = threading.Event()
    gate = threading.Event()
    propagated: list[BaseException] = []
    g = corral.Group()

    def external() -> None:
        try:
            with g.collect(background=True):
                inside.set()
                assert gate.wait(TIMEOUT)
                raise err
        except ValueError as e:
            propagated.append(e)

    th = threading.Thread(target=external)
    th.start()
    try:
        wait(inside)
        g.join(TIMEOUT)
    finally:
        gate.set()
        th.join(TIMEOUT)
    logged = [
        r for r in caplog.records
        if r.levelno >= logging.ERROR and r.exc_info is not None and r.exc_info[1] is err
    ]
    assert propagated == [err] or logged, "the failure was swallowed by a closed group"


def test_an_exception_in_collect_becomes_a_group_failure_and_is_swallowed() -> None:
    err = ValueError("callback broke")
    g = corral.Group()  # fail_fast
    t = g.spawn(until_cancelled, name="worker")
    with g.collect():
        raise err
    assert g.failures == [err]
    assert g.token.cause is err  # fail_fast: the group is cancelled
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert info.value.exceptions == (err,)
    assert any("collect()" in n for n in getattr(err, "__notes__", []))
    assert t.state is TaskState.CANCELLED
    assert t.token.cause is err


@pytest.mark.parametrize(
    "exc",
    [corral.Stopped("stop"), corral.Replaced("replaced"), corral.Cancelled("cancelled")],
    ids=["Stopped", "Replaced", "Cancelled"],
)
def test_graceful_exceptions_in_collect_are_not_failures(exc: BaseException) -> None:
    g = corral.Group()
    with g.collect():
        raise exc
    assert g.failures == []
    assert not g.token.cancelled
    g.join(TIMEOUT)


def test_wrap_collects_exceptions_raised_in_threads_corral_did_not_start() -> None:
    err = ValueError("handler broke")

    def handler(x: int) -> int:
        if x < 0:
            raise err
        return x * 2

    g = corral.Group()  # fail_fast
    t = g.spawn(until_cancelled)
    cb = g.wrap(handler)
    assert cb.__name__ == "handler"
    results: list[int | None] = []
    th = threading.Thread(target=lambda: results.extend([cb(2), cb(-1)]))
    th.start()
    th.join(TIMEOUT)
    assert not th.is_alive()
    assert results == [4, None]  # the exception did not reach the thread
    assert g.token.cause is err
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert info.value.exceptions == (err,)
    assert t.state is TaskState.CANCELLED


def test_wrap_rejects_a_non_callable() -> None:
    g = corral.Group()
    with pytest.raises(TypeError):
        g.wrap(42)  # type: ignore[call-overload]
    g.join(TIMEOUT)


def test_gm_1_foreground_panic_collector_recovers() -> None:
    """Seed: goroutine-manager — #1: a panic inside a foreground
    collector is swallowed, collected into errs, and cancels the context; Wait is not
    blocked."""
    err = ValueError("test error")
    g = corral.Group("gm-1")
    with g.collect():
        raise err
    # the exception did not propagate: we got here
    assert g.token.cancelled
    assert g.failures == [err]
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)
    assert any("collect()" in note for note in err.__notes__)


def test_gm_2_background_panic_collector_recovers() -> None:
    """Seed: goroutine-manager — #2: same as #1 with a background
    collector."""
    err = ValueError("test error")
    g = corral.Group("gm-2")
    with g.collect(background=True):
        raise err
    assert g.token.cancelled
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, check=lambda e: e is err)):
        g.join(TIMEOUT)


def test_gm_6_multiple_goroutines() -> None:
    """Seed: goroutine-manager — #6: fg1 (a task), fg2 (a plain thread in
    a foreground collector) and bg1 (a background task): Wait blocks until both foreground
    ones are done, whatever bg1 does; with no panic the context is never cancelled."""
    fg1_gate, fg2_gate, bg1_gate = threading.Event(), threading.Event(), threading.Event()
    fg2_entered = threading.Event()
    g = corral.Group("gm-6")

    def external() -> None:  # started by someone else, but part of the group's lifecycle
        with g.collect():
            fg2_entered.set()
            fg2_gate.wait(TIMEOUT)

    thread = threading.Thread(target=external)
    try:
        fg1 = g.spawn(fg1_gate.wait, TIMEOUT)
        thread.start()
        bg1 = g.spawn(bg1_gate.wait, TIMEOUT, background=True)
        assert fg2_entered.wait(TIMEOUT)
        assert_blocked(g)
        fg1_gate.set()
        fg1.join(TIMEOUT)
        assert_blocked(g)  # fg2 still holds it
        bg1_gate.set()
        bg1.join(TIMEOUT)
        assert_blocked(g)
        assert not g.token.cancelled
    finally:
        for gate in (fg1_gate, fg2_gate, bg1_gate):
            gate.set()
        thread.join(TIMEOUT)
    assert not g.token.cancelled  # no failure, so no cancel
    g.join(TIMEOUT)
    assert g.failures == []


def test_gm_extra_any_other_exception_after_stop_is_recorded() -> None:
    """Seed: goroutine-manager — : Canceled panics are graceful after a
    stop, but any other panic is always recorded, even after stop. corral: collect()
    swallows Cancelled and Stopped without recording them; a ValueError after the stop is a
    failure."""
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
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)


def test_gm_extra_unfinished_foreground_collector_blocks_wait() -> None:
    """Seed: goroutine-manager — extra: a foreground collector that is
    never invoked blocks Wait. corral counts a collector from __enter__ (Go: from creation),
    so a collector entered and not yet exited blocks join, and one only created does not."""
    g = corral.Group("gm-collector")
    g.collect()  # created, never entered: holds nothing
    held = g.collect()
    held.__enter__()
    try:
        assert_blocked(g)
    finally:
        held.__exit__(None, None, None)
    g.join(TIMEOUT)


def test_gm_readme_wrap_collects_errors_of_external_callbacks() -> None:
    """Seed: goroutine-manager — seeds/001 README §2 (Locker_handler): a callback called by
    an external library gets its errors collected (and the group cancelled) instead of being
    lost -> wrap()."""
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
    thread.join(TIMEOUT)
    assert returned == ["handled ok", None]
    assert g.token.cancelled
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)


# -- wait_until ----------------------------------------------------------------------------


def test_wait_until_true_cancels_the_group_with_stopped_and_reports_no_failure() -> None:
    found: list[int] = []

    def search(i: int) -> int:
        if i == 3:
            found.append(i)
            return i
        assert wait_token()
        corral.check()  # raises Cancelled
        return -1

    with corral.Group(fail_fast=True) as g:
        tasks = [g.spawn(search, i) for i in range(5)]
        # (and task 3 over: a predicate that holds while it is still returning would
        # stop it too, and a task that returns under a cancelled token is CANCELLED)
        assert g.wait_until(lambda: len(found) > 0 and tasks[3].done, timeout=TIMEOUT) is True
        assert isinstance(g.token.cause, corral.Stopped)
    assert g.failures == []
    assert tasks[3].result() == 3
    for t in tasks[:3] + tasks[4:]:
        assert t.state is TaskState.CANCELLED
        assert isinstance(t.token.cause, corral.Stopped)


def test_wait_until_false_on_timeout_cancels_nothing() -> None:
    gate = threading.Event()
    with corral.Group() as g, released(gate):
        t = g.spawn(gated, gate, "v")
        assert g.wait_until(lambda: False, timeout=0.05, interval=0.01) is False
        assert not g.token.cancelled
        assert not t.token.cancelled
        assert t.state is TaskState.RUNNING
        gate.set()
    assert t.result() == "v"


def test_wait_until_rechecks_when_a_task_ends() -> None:
    # The polling interval is far longer than the test: only the re-check on a task's
    # end can make wait_until return quickly.
    gate = threading.Event()
    with corral.Group() as g, released(gate):
        t = g.spawn(gated, gate)
        calls = 0

        def pred() -> bool:
            nonlocal calls
            calls += 1
            if calls == 1:
                gate.set()  # the task ends while wait_until waits
            return t.done

        start = time.monotonic()
        assert g.wait_until(pred, timeout=20, interval=30) is True
        assert time.monotonic() - start < 10
    assert t.state is TaskState.SUCCEEDED


def test_wait_until_rechecks_a_task_that_ended_while_the_predicate_ran() -> None:
    # A predicate reads state, and a task ends before wait_until goes to sleep: that end
    # must still trigger a re-check (no lost wake-up).
    results: list[int] = []
    gate = threading.Event()

    def producer() -> None:
        assert gate.wait(TIMEOUT)
        results.append(1)

    with corral.Group() as g, released(gate):
        t = g.spawn(producer)

        def pred() -> bool:
            seen = bool(results)  # read first...
            if not gate.is_set():
                gate.set()  # ...then the task ends while the predicate is still running
                t.join(TIMEOUT)
            return seen

        start = time.monotonic()
        assert g.wait_until(pred, timeout=3, interval=30) is True
        elapsed = time.monotonic() - start
    assert elapsed < 2, f"wait_until missed the task's end and slept {elapsed:.2f}s"


def test_wait_until_rejects_bad_arguments() -> None:
    g = corral.Group()
    with pytest.raises(TypeError):
        g.wait_until(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        g.wait_until(lambda: True, interval=0)
    assert not g.token.cancelled
    g.join(TIMEOUT)


def test_tg_wait_for_condition_then_stop_the_rest() -> None:
    """Seed: ThreadGroup — seeds/002 wait_for_condition(lambda: len(valid_users) > 0,
    timeout=600): once one user is valid, the other verifications are told to stop
    (gracefully: nothing is reported), and join returns."""
    valid_users: list[str] = []

    def verify_user(user: str) -> None:
        if user == "u3":
            valid_users.append(user)
            return
        corral.sleep(60)  # a slow verification, cut short by the stop

    g = corral.Group("Verifying Users")
    tasks = {user: g.spawn(verify_user, user) for user in ("u1", "u2", "u3", "u4")}
    # (and u3's task over: a predicate that holds while u3 is still returning would
    # stop it too, and a task that returns under a cancelled token is CANCELLED)
    assert g.wait_until(lambda: len(valid_users) > 0 and tasks["u3"].done, timeout=600) is True
    g.join(timeout=600)
    assert valid_users == ["u3"]
    assert isinstance(g.token.cause, corral.Stopped)
    assert tasks.pop("u3").state is TaskState.SUCCEEDED
    assert all(t.state is TaskState.CANCELLED for t in tasks.values())


def test_tg_wait_for_condition_timeout_cancels_nothing() -> None:
    """Seed: ThreadGroup — seeds/002 wait_for_condition with a timeout: if the condition
    never holds, it returns False and the tasks keep running."""
    g = corral.Group("never")
    t = g.spawn(wait_token)
    assert g.wait_until(lambda: False, timeout=BLOCKED) is False
    assert not g.token.cancelled
    assert t.state is TaskState.RUNNING
    g.cancel()
    g.join(TIMEOUT)


# -- map -------------------------------------------------------------------------------------


def test_map_yields_results_in_input_order() -> None:
    last_done = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            assert last_done.wait(TIMEOUT)  # item 0 finishes after item 3
        if i == 3:
            last_done.set()
        return i * 10

    with corral.Group() as g, released(last_done):
        assert list(g.map(fn, range(4), window=4)) == [0, 10, 20, 30]
        assert list(g.map(lambda i: i * i, range(50))) == [i * i for i in range(50)]


def test_map_is_lazy_and_keeps_at_most_window_items_in_flight() -> None:
    window, n = 3, 10
    pulled = 0
    conc = Concurrency()
    full = threading.Event()

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    def fn(i: int) -> int:
        with conc as inside:
            if inside == window:
                full.set()
            assert full.wait(TIMEOUT)  # the first `window` items run at the same time
        return i * i

    results: list[int] = []
    with corral.Group() as g, released(full):
        it = g.map(fn, source(), window=window)
        assert pulled == 0  # lazy: nothing taken before iteration starts
        for r in it:
            results.append(r)
            assert pulled == min(n, len(results) + window - 1)
    assert results == [i * i for i in range(n)]
    assert conc.peak == window


@pytest.mark.parametrize(("limit", "expected"), [(2, 4), (5, 10), (None, 64)])
def test_map_default_window_is_twice_the_limit_or_64(limit: int | None, expected: int) -> None:
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield i

    with corral.Group(limit=limit) as g:
        it = g.map(lambda i: i, source())
        assert next(it) == 0
        assert pulled == expected
        assert list(it) == list(range(1, 200))


def test_map_over_an_endless_generator_and_leaving_early_cancels_in_flight() -> None:
    pulled = 0
    seen: dict[int, tuple[corral.Task[Any], BaseException | None]] = {}

    def endless() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    def fn(i: int) -> int:
        if i < 2:
            return i * 10
        task = corral.current_task()
        assert task is not None
        tok = corral.current_token()
        if i == 2:
            inside.set()
        assert wait_token(tok)
        seen[i] = (task, tok.cause)
        return -1

    got: list[int] = []
    inside = threading.Event()
    with corral.Group() as g:
        for r in g.map(fn, endless(), window=3):
            got.append(r)
            if len(got) == 2:
                wait(inside)
                break
        # leaving the loop cancelled and waited for what was in flight: item 2, and
        # item 3 if it had started (nothing ran after)
        assert sorted(seen) in ([2], [2, 3])
        for task, cause in seen.values():
            assert isinstance(cause, corral.Stopped)
            assert task.done
            assert task.state is TaskState.CANCELLED
        assert len(g) == 0
    assert got == [0, 10]
    assert pulled == 4
    assert g.failures == []


def test_map_raises_an_items_exception_at_its_place_and_not_as_a_group_failure() -> None:
    err = ValueError(2)

    def fn(i: int) -> int:
        if i == 2:
            raise err
        return i

    got: list[int] = []
    gate = threading.Event()
    with corral.Group(fail_fast=True) as g, released(gate):
        other = g.spawn(gated, gate, "other")

        def consume() -> None:
            for r in g.map(fn, range(6), window=2):
                got.append(r)  # noqa: PERF402 - keep what came before the error

        with pytest.raises(ValueError, match="2") as info:
            consume()
        assert info.value is err
        assert got == [0, 1]
        assert g.failures == []
        assert not g.token.cancelled  # an item's failure is not the group's
        assert not other.token.cancelled
        gate.set()
    assert other.result() == "other"


@pytest.mark.parametrize(
    ("window", "error"),
    [(0, ValueError), (-1, ValueError), ("2", TypeError), (2.5, TypeError), (True, TypeError)],
)
def test_map_rejects_a_bad_window_at_the_call(window: Any, error: type[Exception]) -> None:
    g = corral.Group()
    with pytest.raises(error):
        g.map(lambda i: i, range(3), window=window)
    g.join(TIMEOUT)


def test_map_rejects_a_non_callable() -> None:
    g = corral.Group()
    with pytest.raises(TypeError):
        g.map(42, range(3))  # type: ignore[arg-type]
    g.join(TIMEOUT)


# -- join and closed groups ------------------------------------------------------------------


def test_join_timeout_leaves_the_group_open_and_a_later_join_succeeds() -> None:
    gate = threading.Event()
    g = corral.Group()
    with released(gate):
        t = g.spawn(gated, gate, "first")
        with pytest.raises(TimeoutError):
            g.join(timeout=0.05)
        assert not g.closed
        assert not g.token.cancelled
        t2 = g.spawn(lambda: "second")  # still usable
        assert t2.result(TIMEOUT) == "second"
    g.join(TIMEOUT)
    assert closed(g)
    assert t.result() == "first"


def test_failures_are_raised_once() -> None:
    err = ValueError("once")
    g = corral.Group()
    g.spawn(raise_, err)
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    assert info.value.exceptions == (err,)
    assert g.join(TIMEOUT) is None  # type: ignore[func-returns-value]


def test_a_closed_group_takes_nothing_new() -> None:
    g = corral.Group()
    g.join(TIMEOUT)
    with pytest.raises(corral.GroupClosed):
        g.spawn(noop)
    with pytest.raises(corral.GroupClosed):
        g.map(lambda i: i, range(3))
    with pytest.raises(corral.GroupClosed), g.collect():
        pass
    with corral.Group() as h:
        pass
    with pytest.raises(corral.GroupClosed):
        h.spawn(noop)
    # a callable wrapped by a closed group goes straight through
    err = ValueError("direct")
    with pytest.raises(ValueError, match="direct") as info:
        h.wrap(raise_)(err)
    assert info.value is err


def test_gm_5_stop_all_goroutines() -> None:
    """Seed: goroutine-manager — #5: a background and a foreground task
    wait on the context; before the stop nothing ends and Wait blocks; StopAllGoroutines
    (cancel with Stopped) then Wait: both finished, context done, nothing collected."""
    started = {"fg": threading.Event(), "bg": threading.Event()}

    def worker(key: str) -> None:
        started[key].set()
        corral.current_token().wait(TIMEOUT)

    g = corral.Group("gm-5")
    bg = g.spawn(worker, "bg", background=True)
    fg = g.spawn(worker, "fg")
    assert all(e.wait(TIMEOUT) for e in started.values())
    assert_blocked(g)
    assert (bg.state, fg.state) == (TaskState.RUNNING, TaskState.RUNNING)
    assert not g.token.cancelled
    assert g.failures == []
    g.cancel(corral.Stopped("stop all goroutines"))
    g.join(TIMEOUT)  # no ExceptionGroup: a graceful stop is not a failure
    assert (bg.state, fg.state) == (TaskState.CANCELLED, TaskState.CANCELLED)
    assert isinstance(g.token.cause, corral.Stopped)


def test_gm_7_reuse_goroutine_manager() -> None:
    """Seed: goroutine-manager — #7: the manager takes new batches after
    each Wait; after StopAllGoroutines a new goroutine sees a done context; errs stays nil.
    corral: a group takes tasks until it is joined; a task spawned after the cancel ends
    CANCELLED without running; after join the group is closed (GroupClosed), it is not
    reusable."""
    g = corral.Group("gm-7")
    for _batch in range(2):
        gates = [threading.Event(), threading.Event()]
        tasks = [g.spawn(gate.wait, TIMEOUT) for gate in gates]
        for gate in gates:
            gate.set()
        for t in tasks:
            t.join(TIMEOUT)
        assert all(t.state is TaskState.SUCCEEDED for t in tasks)
    waiting = [g.spawn(wait_token), g.spawn(wait_token)]
    g.cancel(corral.Stopped("stop all goroutines"))
    for t in waiting:
        t.join(TIMEOUT)
    ran: list[bool] = []
    late = g.spawn(ran.append, True)
    assert late.state is TaskState.CANCELLED
    g.join(TIMEOUT)  # errs nil
    assert ran == []
    assert all(t.state is TaskState.CANCELLED for t in waiting)
    with pytest.raises(corral.GroupClosed):
        g.spawn(ran.append, True)


def test_bg_v1_3_wait_waits_for_pending_tasks() -> None:
    """Seed: background — v1 #3 / HEAD #3: Wait blocks while a task is
    pending, and returns once it is done."""
    proceed = threading.Event()
    waited = threading.Event()
    g = corral.Group("bg-wait")

    def waiter() -> None:
        g.join(TIMEOUT)
        waited.set()

    thread = threading.Thread(target=waiter)
    try:
        g.spawn(proceed.wait, TIMEOUT)
        thread.start()
        assert not waited.is_set()  # the task cannot have ended: it waits on proceed
    finally:
        proceed.set()
    thread.join(TIMEOUT)
    assert waited.is_set()


def test_bg_wait_includes_tasks_added_while_waiting() -> None:
    """Seed: background — Wait: tasks added while waiting make the wait
    longer."""
    proceed = threading.Event()
    log: list[str] = []
    g = corral.Group("bg-wait-longer")

    def first() -> None:
        proceed.wait(TIMEOUT)
        g.spawn(second)
        log.append("first done")

    def second() -> None:
        log.append("second done")

    g.spawn(first)
    joiner = threading.Thread(target=g.join, args=(TIMEOUT,))
    try:
        joiner.start()
    finally:
        proceed.set()
    joiner.join(TIMEOUT)
    assert not joiner.is_alive()
    assert sorted(log) == ["first done", "second done"]


# -- names -----------------------------------------------------------------------------------


def test_auto_names_are_module_qualname_and_a_sequence_number() -> None:
    def local_fn() -> None:
        return None

    with corral.Group() as g:
        a = g.spawn(noop)
        b = g.spawn(noop)
        c = g.spawn(local_fn)
    assert re.fullmatch(re.escape(f"{noop.__module__}.noop") + r"#\d+", a.name)
    assert re.fullmatch(re.escape(f"{local_fn.__module__}.{local_fn.__qualname__}") + r"#\d+", c.name)
    assert a.name != b.name


def test_auto_names_never_conflict_with_explicit_names() -> None:
    gate = threading.Event()
    prefix = f"{gated.__module__}.{gated.__qualname__}"
    with corral.Group() as g, released(gate):
        explicit = [g.spawn(gated, gate, name=f"{prefix}#{i}") for i in range(1, 4)]
        auto = [g.spawn(gated, gate) for _ in range(3)]
        names = [t.name for t in explicit + auto]
        assert len(set(names)) == len(names), names
        for t in explicit + auto:
            assert g.get(t.name) is t


def test_an_explicit_duplicate_name_is_refused_while_the_task_is_live() -> None:
    gate = threading.Event()
    with corral.Group() as g, released(gate):
        t = g.spawn(gated, gate, name="job")
        with pytest.raises(corral.DuplicateTaskName):
            g.spawn(noop, name="job")
        assert g.get("job") is t
        gate.set()
        t.join(TIMEOUT)
        again = g.spawn(noop, name="job")  # the name is free once the task ended
        again.join(TIMEOUT)
    assert again.state is TaskState.SUCCEEDED


def test_replace_cancels_the_running_task_and_starts_the_new_one_after_it_finished() -> None:
    log: list[str] = []
    old_up = threading.Event()
    old_cancelled = threading.Event()
    old_may_end = threading.Event()
    new_up = threading.Event()
    new_may_end = threading.Event()
    finished: list[str] = []

    def old() -> None:
        log.append("old start")
        old_up.set()
        tok = corral.current_token()
        assert wait_token(tok)
        log.append(f"old cancelled: {type(tok.cause).__name__}")
        old_cancelled.set()
        assert old_may_end.wait(TIMEOUT)
        log.append("old end")

    def new() -> None:
        log.append("new start")
        new_up.set()
        assert new_may_end.wait(TIMEOUT)
        log.append("new end")

    with corral.Group() as g, released(old_may_end, new_may_end):
        t_old = g.spawn(old, name="w", on_finish=lambda t: finished.append("old"))
        wait(old_up)
        t_new = g.spawn(new, name="w", replace=True)
        wait(old_cancelled)
        assert t_new.state is TaskState.PENDING  # waits for the old one to finish
        assert not new_up.is_set()
        assert g.get("w") is t_new
        old_may_end.set()
        wait(new_up)
        t_old.join(TIMEOUT)
        # the old one's end did not touch the new one
        assert state(t_new) is TaskState.RUNNING
        assert not t_new.token.cancelled
        assert g.get("w") is t_new
        assert finished == ["old"]
        new_may_end.set()
    assert log == ["old start", "old cancelled: Replaced", "old end", "new start", "new end"]
    assert t_old.state is TaskState.CANCELLED
    assert isinstance(t_old.token.cause, corral.Replaced)
    with pytest.raises(corral.Cancelled) as info:
        t_old.result()
    assert isinstance(info.value.__cause__, corral.Replaced)
    assert state(t_new) is TaskState.SUCCEEDED
    assert g.failures == []


def test_a_queued_task_is_replaced_in_the_queue() -> None:
    gate = threading.Event()
    ran: list[str] = []
    finished: list[corral.Task[Any]] = []

    with corral.Group(limit=1) as g, released(gate):
        g.spawn(gated, gate, name="blocker")
        q1 = g.spawn(ran.append, "q1", name="q", on_finish=finished.append)
        assert q1.state is TaskState.PENDING
        with pytest.raises(corral.DuplicateTaskName):
            g.spawn(ran.append, "dup", name="q")  # same name while queued
        q2 = g.spawn(ran.append, "q2", name="q", replace=True)
        # the old one ended at once, without running, and its hooks ran
        assert state(q1) is TaskState.CANCELLED
        assert q1.attempts == 0
        assert q1.done
        assert finished == [q1]
        with pytest.raises(corral.Cancelled) as info:
            q1.result()
        assert isinstance(info.value.__cause__, corral.Replaced)
        assert q2.state is TaskState.PENDING  # still queued behind the blocker
        assert g.get("q") is q2
        gate.set()
    assert ran == ["q2"]
    assert state(q2) is TaskState.SUCCEEDED


def test_replacing_a_pending_replacement_still_waits_for_the_running_original() -> None:
    # A runs; B replaces it (B waits for A to finish); C replaces B before A finished.
    # B ends without running, and C must still wait for A: two tasks of one name never
    # run at the same time.
    log: list[str] = []
    a_up = threading.Event()
    a_cancelled = threading.Event()
    a_may_end = threading.Event()

    def a() -> None:
        log.append("a start")
        a_up.set()
        assert wait_token()
        log.append("a cancelled")
        a_cancelled.set()
        assert a_may_end.wait(TIMEOUT)
        log.append("a end")

    with corral.Group() as g, released(a_may_end):
        ta = g.spawn(a, name="w")
        wait(a_up)
        tb = g.spawn(log.append, "b ran", name="w", replace=True)
        wait(a_cancelled)
        tc = g.spawn(log.append, "c ran", name="w", replace=True)
        assert state(tc) is TaskState.PENDING, "C started while A still runs"
        assert state(ta) is TaskState.RUNNING  # still winding down
        assert state(tb) is TaskState.CANCELLED
        assert tb.attempts == 0
        assert g.get("w") is tc
        a_may_end.set()
        tc.join(TIMEOUT)
    assert log == ["a start", "a cancelled", "a end", "c ran"]
    assert isinstance(ta.token.cause, corral.Replaced)


def test_replace_true_without_a_live_task_just_spawns() -> None:
    with corral.Group() as g:
        t = g.spawn(lambda: "v", name="fresh", replace=True)
    assert t.result() == "v"


def test_bg_head_17_task_defaults() -> None:
    """Seed: background — HEAD #17 task.New: a one-off task with empty
    metadata and no retry (it runs once); it is named after its callable."""
    called: list[bool] = []

    def fn() -> None:
        called.append(True)

    g = corral.Group("bg-defaults")
    t = g.spawn(fn)
    g.join(TIMEOUT)
    assert called == [True]
    assert t.meta == {}
    assert t.attempts == 1
    assert t.name.startswith(f"{__name__}.test_bg_head_17_task_defaults.<locals>.fn#")


def test_routine_tasks_are_numbered_and_threads_named() -> None:
    """Seed: routine — seeds/004 routine: each routine gets a process-wide number ("routine
    <num>" in logs). corral: a task without a name is named after its callable plus a
    sequence number, and its thread is named after it while it runs."""
    thread_names: list[str] = []

    def routine() -> None:
        thread_names.append(threading.current_thread().name)

    with corral.Group("routine-names") as g:
        a = g.spawn(routine)
        b = g.spawn(routine)
    assert a.name != b.name
    assert a.name.rsplit("#", 1)[0] == b.name.rsplit("#", 1)[0]
    assert sorted(thread_names) == sorted(f"corral:{t.name}" for t in (a, b))


# -- needs -----------------------------------------------------------------------------------


def test_a_task_starts_only_after_what_it_needs_said_it_is_ready() -> None:
    log: list[str] = []
    may_ready = threading.Event()
    box: dict[str, corral.Task[Any]] = {}

    def db() -> None:
        log.append("db start")
        assert may_ready.wait(TIMEOUT)
        log.append("db ready")
        corral.ready("conn")
        assert wait_token()

    def app() -> object:
        log.append("app start")
        return box["db"].wait_ready(TIMEOUT)

    g = corral.Group()
    with released(may_ready):
        box["db"] = g.spawn(db, name="db", signals_ready=True, background=True)
        a = g.spawn(app, name="app", needs=("db",))
        assert a.state is TaskState.PENDING
        with pytest.raises(TimeoutError):
            a.join(0.05)  # db runs but is not ready: app waits
        assert log == ["db start"]
        may_ready.set()
        assert a.result(TIMEOUT) == "conn"
    g.join(TIMEOUT)
    assert log == ["db start", "db ready", "app start"]


def test_wait_ready_returns_the_value_even_after_a_ready_task_has_ended() -> None:
    # NotReady is for a task that ended *before* it was ready; a late caller of
    # wait_ready must not get a different answer than an early one.
    def db() -> str:
        corral.ready("conn")
        return "done"

    with corral.Group() as g:
        t = g.spawn(db, signals_ready=True)
    assert t.result() == "done"
    assert t.wait_ready(TIMEOUT) == "conn"


def test_without_signals_ready_a_needed_task_is_ready_once_it_runs() -> None:
    gate = threading.Event()
    with corral.Group() as g, released(gate):
        db = g.spawn(gated, gate, name="db")
        app = g.spawn(lambda: "app ran", name="app", needs="db")
        assert app.result(TIMEOUT) == "app ran"  # db still blocks on its gate
        assert db.state is TaskState.RUNNING
        assert db.wait_ready(TIMEOUT) is None


def test_wait_ready_raises_not_ready_if_the_task_ended_first() -> None:
    err = ValueError("no db")
    go = threading.Event()
    g = corral.Group(fail_fast=False)
    with released(go):
        db = g.spawn(
            lambda: raise_(err) if go.wait(TIMEOUT) else None, name="db", signals_ready=True
        )
        app = g.spawn(not_called, name="app", needs=["db"])
        go.set()
        with pytest.raises(corral.NotReady) as info:
            db.wait_ready(TIMEOUT)
    assert info.value.__cause__ is err
    with pytest.raises(ExceptionGroup) as eg:
        g.join(TIMEOUT)
    assert eg.value.exceptions == (err,)
    # what it needed never came back: the dependent ends without running
    assert app.state is TaskState.CANCELLED
    assert app.attempts == 0


def test_not_ready_of_a_task_that_returned_has_no_bookkeeping_cause() -> None:
    # It was chained to Cancelled("the attempt ended"), the token's internal end mark.
    with corral.Group() as g:
        t = g.spawn(lambda: 1, name="returns", signals_ready=True)
    with pytest.raises(corral.NotReady, match=r"ended \(succeeded\) before it was ready") as info:
        t.wait_ready(TIMEOUT)
    assert info.value.__cause__ is None


def test_a_dependent_is_cancelled_when_what_it_needs_ends_for_good() -> None:
    # "needs" means "needs it running (ready)": when the needed task ends and never
    # comes back, its running dependent is cancelled and parks (PENDING); join ends it.
    # Here join is already waiting when the dependent parks: that must wake it.
    db_may_end = threading.Event()
    app_up = threading.Event()
    app_may_end = threading.Event()
    join_called = threading.Event()
    app_causes: list[BaseException | None] = []

    def app() -> None:
        app_up.set()
        tok = corral.current_token()
        assert wait_token(tok)
        app_causes.append(tok.cause)
        assert app_may_end.wait(TIMEOUT)

    def release_app() -> None:
        join_called.wait(TIMEOUT)
        app_may_end.set()

    g = corral.Group()
    helper = threading.Thread(target=release_app)
    with released(db_may_end, app_may_end, join_called):
        db = g.spawn(gated, db_may_end, "db done", name="db")
        dependent = g.spawn(app, name="app", needs="db")
        wait(app_up)
        db_may_end.set()
        db.join(TIMEOUT)
        helper.start()
        join_called.set()
        start = time.monotonic()
        g.join(timeout=3)  # wakes when the dependent parks for good
        elapsed = time.monotonic() - start
    helper.join(TIMEOUT)
    assert db.result() == "db done"
    assert dependent.state is TaskState.CANCELLED
    assert dependent.attempts == 1
    assert len(app_causes) == 1
    assert isinstance(app_causes[0], corral.Cancelled)
    assert g.failures == []
    assert elapsed < 2, f"join missed the dependent parking and slept {elapsed:.2f}s"


def test_a_dependent_queued_on_the_limit_does_not_start_once_what_it_needs_ended() -> None:
    # d needs n; n is ready but both slots are taken, so d queues on the limit. Then n
    # ends for good: the slot it frees must not start d, whose need is gone.
    n_may_end = threading.Event()
    x_gate = threading.Event()
    ran: list[str] = []
    with corral.Group(limit=2) as g, released(n_may_end, x_gate):
        n = g.spawn(gated, n_may_end, name="n")
        g.spawn(gated, x_gate, name="x")
        assert n.wait_ready(TIMEOUT) is None
        d = g.spawn(ran.append, "d", name="d", needs="n")
        assert state(d) is TaskState.PENDING
        n_may_end.set()
        n.join(TIMEOUT)
        assert state(d) is TaskState.PENDING, "d started although what it needs is gone"
        x_gate.set()
    assert ran == []
    assert d.state is TaskState.CANCELLED
    assert d.attempts == 0


def test_a_replaced_task_in_backoff_ends_without_another_run(clock: MockClock) -> None:
    runs: list[str] = []

    def flaky() -> None:
        runs.append("old")
        raise ValueError("flaky")

    with corral.Group(clock=clock, fail_fast=False) as g:
        old = g.spawn(
            flaky, name="w", restart=corral.Restart.ON_FAILURE,
            backoff=corral.Backoff(initial=5.0, jitter=0.0),
        )
        clock.wait_for_timers(1)
        assert state(old) is TaskState.BACKOFF
        new = g.spawn(runs.append, "new", name="w", replace=True)
        assert state(old) is TaskState.CANCELLED
        assert clock.pending == 0  # its restart timer is gone
        new.join(TIMEOUT)
    assert runs == ["old", "new"]
    assert old.attempts == 1
    assert isinstance(old.last_error, ValueError)
    assert g.failures == []  # a restarted attempt's failure is not the group's


def test_needs_errors_are_raised_at_spawn() -> None:
    gate = threading.Event()
    with corral.Group() as g, released(gate):
        g.spawn(gated, gate, name="db")
        with pytest.raises(ValueError, match="not a live task"):
            g.spawn(noop, name="app", needs=("nope",))
        with pytest.raises(ValueError, match="not a live task"):
            g.spawn(noop, name="self", needs=("self",))
        with pytest.raises(TypeError):
            g.spawn(noop, needs=[1])  # type: ignore[call-arg, arg-type, list-item]
        with pytest.raises(TypeError):
            g.spawn(noop, needs=5)  # type: ignore[call-overload, call-arg]
        assert [t.name for t in g.tasks] == ["db"]


def test_a_dependent_runs_again_when_what_it_needs_ends_and_comes_back(
    clock: MockClock,
) -> None:
    log: list[str] = []
    a_end = [threading.Event(), threading.Event()]
    b_up = [threading.Event(), threading.Event()]
    b_tokens: list[corral.Token] = []
    a_state_when_b_started: list[TaskState] = []
    box: dict[str, corral.Task[Any]] = {}

    def a() -> None:
        task = corral.current_task()
        assert task is not None
        n = task.attempts
        log.append(f"a start {n}")
        ev = a_end[n - 1]
        corral.current_token().on_cancel(ev.set)
        assert ev.wait(TIMEOUT)
        log.append(f"a end {n}")

    def b() -> None:
        task = corral.current_task()
        assert task is not None
        n = task.attempts
        a_state_when_b_started.append(box["a"].state)
        log.append(f"b start {n}")
        tok = corral.current_token()
        b_tokens.append(tok)
        b_up[n - 1].set()
        assert wait_token(tok)
        log.append(f"b cancelled {n}")

    g = corral.Group(clock=clock)
    try:
        box["a"] = ta = g.spawn(
            a, name="a", restart=corral.Restart.ALWAYS,
            backoff=corral.Backoff(initial=1.0, jitter=0.0),
        )
        tb = g.spawn(
            b, name="b", needs="a",
            restart=corral.Restart.ON_FAILURE, max_restarts=(0, 60.0),  # reruns don't count
        )
        assert b_up[0].wait(TIMEOUT), (log, ta, tb)
        a_end[0].set()  # what b needs ends; it will come back after 1s of virtual time
        clock.wait_for_timers(1)
        assert ta.state is TaskState.BACKOFF
        assert not b_up[1].is_set()
        clock.advance(1.0)
        assert b_up[1].wait(TIMEOUT), (log, ta, tb, clock)
        assert tb.attempts == 2
        assert ta.attempts == 2
        assert tb.state is TaskState.RUNNING
        assert a_state_when_b_started == [TaskState.RUNNING, TaskState.RUNNING]
        assert b_tokens[0].cancelled
        assert not b_tokens[1].cancelled  # a fresh token for the new attempt
    finally:
        for ev in a_end:
            ev.set()
        g.cancel()
        g.join(TIMEOUT)
    for first, then in [("a end 1", "b cancelled 1"), ("b cancelled 1", "b start 2")]:
        assert log.index(first) < log.index(then), log


# -- hooks -----------------------------------------------------------------------------


def test_bg_v1_1_head_1_new_manager() -> None:
    """Seed: background — v1 #1 Test_New and HEAD #1 Test_NewManager: a
    new manager has no hooks and counts nothing."""
    hooks = corral.Hooks()
    assert all(getattr(hooks, name) is None for name in (
        "on_added", "on_started", "on_succeeded", "on_failed", "on_restart", "on_finished",
    ))
    g = corral.Group("bg-new", hooks=hooks)
    assert isinstance(g, corral.Group)
    assert len(g) == 0
    assert g.tasks == []
    g.join(TIMEOUT)


def test_bg_v1_6_head_5_on_task_added_with_meta() -> None:
    """Seed: background — v1 #6 / HEAD #5: OnTaskAdded is called with the
    task's metadata, synchronously in the caller."""
    added: list[tuple[dict[str, Any], int]] = []
    g = corral.Group("bg-added", hooks=corral.Hooks(
        on_added=lambda t: added.append((dict(t.meta), threading.get_ident()))
    ))
    g.spawn(lambda: None, meta={"test": "value"})
    assert added == [({"test": "value"}, threading.get_ident())]  # before spawn returned
    g.join(TIMEOUT)


def test_bg_v1_7_head_6_on_task_succeeded_with_meta() -> None:
    """Seed: background — v1 #7 / HEAD #6: OnTaskSucceeded is called with
    the metadata (and, in corral, the result)."""
    succeeded: list[tuple[dict[str, Any], object]] = []
    g = corral.Group("bg-succeeded", hooks=corral.Hooks(
        on_succeeded=lambda t, r: succeeded.append((dict(t.meta), r))
    ))
    g.spawn(lambda: "done", meta={"test": "value"})
    g.join(TIMEOUT)
    assert succeeded == [({"test": "value"}, "done")]


def test_bg_v1_8_head_7_on_task_failed_with_meta() -> None:
    """Seed: background — v1 #8 / HEAD #7: OnTaskFailed gets the metadata
    and the error."""
    err = RuntimeError("assert.AnError")
    failed: list[tuple[dict[str, Any], BaseException]] = []
    g = corral.Group("bg-failed", hooks=corral.Hooks(
        on_failed=lambda t, e: failed.append((dict(t.meta), e))
    ))
    g.spawn(raise_, err, meta={"test": "value"})
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)
    assert failed == [({"test": "value"}, err)]


def test_bg_callback_order_for_a_one_off() -> None:
    """Seed: background — : Added (in the caller), then Succeeded, then
    the count is decremented and Wait released (Go: decrement before signalling)."""
    log: list[str] = []
    g = corral.Group("bg-order", hooks=corral.Hooks(
        on_added=lambda t: log.append("added"),
        on_started=lambda t: log.append("started"),
        on_succeeded=lambda t, r: log.append(f"succeeded len={len(g)}"),
        on_finished=lambda t: log.append(f"finished len={len(g)}"),
    ))
    t = g.spawn(lambda: None)
    t.join(TIMEOUT)
    assert len(g) == 0  # not stale once the task's join returned
    g.join(TIMEOUT)
    assert log == ["added", "started", "succeeded len=1", "finished len=1"]


def test_bg_observer_exception_is_logged_not_fatal(corral_log: pytest.LogCaptureFixture) -> None:
    """Seed: background — : a panic in an observer crashes the Go process;
    the port logs observer exceptions. corral: a hook that raises is logged and the group
    goes on."""
    err = RuntimeError("observer bug")

    def bad_hook(t: corral.Task[Any], result: object) -> None:
        raise err

    g = corral.Group("bg-bad-observer", hooks=corral.Hooks(on_succeeded=bad_hook))
    t = g.spawn(lambda: 42)
    g.join(TIMEOUT)
    assert t.result() == 42
    logged = [r for r in corral_log.records if r.exc_info is not None and r.exc_info[1] is err]
    assert len(logged) == 1


def test_gm_10_hooks_on_after_recover_300_failing_tasks() -> None:
    """Seed: goroutine-manager — #10: 300 foreground tasks each fail: the
    hook (on_failed) is called exactly 300 times, even after the first failure cancelled the
    group, and every failure is reported exactly once in the ExceptionGroup."""
    n = 300
    calls = AtomicCounter()
    errors = [ValueError(f"test error {i}") for i in range(n)]
    gate = threading.Event()

    def fail(i: int) -> None:
        gate.wait(TIMEOUT)  # all 300 are running before the first one fails
        raise errors[i]

    g = corral.Group("gm-10", hooks=corral.Hooks(on_failed=lambda t, e: calls.add(1)))
    try:
        for i in range(n):
            g.spawn(fail, i)
    finally:
        gate.set()
    reported = group_errors(lambda: g.join(TIMEOUT))
    assert calls.value == n
    assert len(reported) == n
    assert Tally(id(e) for e in reported) == Tally(id(e) for e in errors)


def test_gm_extra_on_after_recover_runs_before_the_cancel() -> None:
    """Seed: goroutine-manager — Hooks: OnAfterRecover runs once per
    recorded panic, before the context is cancelled. corral: on_failed sees the group not
    yet cancelled."""
    err = ValueError("test error")
    seen: list[bool] = []
    g = corral.Group(
        "gm-hook-order", hooks=corral.Hooks(on_failed=lambda t, e: seen.append(g.token.cancelled))
    )
    g.spawn(raise_, err)
    assert group_errors(lambda: g.join(TIMEOUT)) == (err,)
    assert seen == [False]
    assert g.token.cancelled


# -- len, snapshot, repr -------------------------------------------------------------------------


def test_len_counts_pending_and_running_tasks() -> None:
    gate = threading.Event()
    with corral.Group(limit=1) as g, released(gate):
        tasks = [g.spawn(gated, gate, i) for i in range(3)]
        assert len(g) == 3
        assert g.tasks == tasks
        assert [t.state for t in tasks] == [
            TaskState.RUNNING, TaskState.PENDING, TaskState.PENDING
        ]
        gate.set()
    assert len(g) == 0
    assert g.tasks == []


def test_len_still_counts_a_task_while_its_on_finished_hook_runs() -> None:
    in_hook = threading.Event()
    hook_gate = threading.Event()
    seen: list[tuple[int, TaskState, bool]] = []
    box: dict[str, corral.Group] = {}

    def on_finished(t: corral.Task[Any]) -> None:
        seen.append((len(box["g"]), t.state, t.done))
        in_hook.set()
        assert hook_gate.wait(TIMEOUT)

    g = box["g"] = corral.Group(on_finish=on_finished)
    with released(hook_gate):
        t = g.spawn(lambda: 1)
        wait(in_hook)
        assert len(g) == 1
        assert not t.done
        assert t.state is TaskState.SUCCEEDED
        with pytest.raises(TimeoutError):
            g.join(timeout=0.05)
        hook_gate.set()
    g.join(TIMEOUT)
    assert len(g) == 0
    assert seen == [(1, TaskState.SUCCEEDED, False)]
    assert t.done


def test_snapshot_shape(clock: MockClock, runner: ThreadPerAttemptRunner | None) -> None:
    leaf_gate = threading.Event()
    leaf_up = threading.Event()
    flaky_err = ValueError("flaky")

    def leaf() -> None:
        leaf_up.set()
        assert leaf_gate.wait(TIMEOUT)

    def parent() -> None:
        with corral.Group("inner") as inner:
            inner.spawn(leaf, name="leaf", meta={"depth": 2})

    g = corral.Group("root", limit=5, clock=clock)
    try:
        g.spawn(parent, name="parent", meta={"role": "p"})
        g.spawn(
            raise_, flaky_err, name="flaky", restart=corral.Restart.ON_FAILURE,
            backoff=corral.Backoff(initial=5.0, jitter=0.0),
        )
        wait(leaf_up)  # so the leaf's first attempt has begun
        clock.wait_for_timers(1)  # flaky failed once and waits to restart
        snap = g.snapshot()
    finally:
        leaf_gate.set()
        g.cancel()
    g.join(TIMEOUT)
    # JSON-safe: no exception objects, no Infinity/NaN.
    json.dumps(snap, allow_nan=False)
    pool = snap.pop("pool")
    if runner is None:  # (the pool runs the tasks: two of them at least were busy)
        assert pool["threads"] >= pool["busy"] >= 2
    started = [snap["tasks"][0].pop("started"), snap["tasks"][0]["children"][0]["tasks"][0].pop("started")]
    assert all(isinstance(s, float) and abs(s - time.time()) < 3600 for s in started)
    common = {"waiting_for": None, "cause": None, "drain": False, "draining": False}
    assert snap == {
        "name": "root",
        "kind": "group",
        "state": "running",
        "limit": 5,
        "tasks": [
            {
                "name": "parent",
                "state": "running",
                "attempts": 1,
                "last_error": None,
                "meta": {"role": "p"},
                "background": False,
                **common,
                "children": [
                    {
                        "name": "inner",
                        "kind": "group",
                        "state": "running",
                        "limit": None,
                        "tasks": [
                            {
                                "name": "leaf",
                                "state": "running",
                                "attempts": 1,
                                "last_error": None,
                                "meta": {"depth": 2},
                                "background": False,
                                **common,
                                "children": [],
                            }
                        ],
                    }
                ],
            },
            {
                "name": "flaky",
                "state": "backoff",
                "attempts": 1,
                "started": None,
                "last_error": "ValueError: flaky",
                "meta": {},
                "background": False,
                **common,
                "children": [],
            },
        ],
    }


def test_repr_of_group_and_task_shows_state() -> None:
    gate = threading.Event()
    g = corral.Group("shown")
    with released(gate):
        t = g.spawn(gated, gate, name="t")
        assert repr(g) == "<corral.Group 'shown' tasks=1>"
        assert "RUNNING" in repr(t) or "PENDING" in repr(t)
        assert "'t'" in repr(t)
        f = g.spawn(raise_, ValueError("x"), name="f")
        f.join(TIMEOUT)
        assert "FAILED" in repr(f)
        assert "ValueError('x')" in repr(f)
        assert "failures=1" in repr(g)
        assert "cancelled" in repr(g)  # fail_fast cancelled it
    with pytest.raises(ExceptionGroup):
        g.join(TIMEOUT)
    assert "closed" in repr(g)
    assert "SUCCEEDED" in repr(t) or "CANCELLED" in repr(t)


def test_bg_v1_5_len_counts_the_task_while_its_callback_runs() -> None:
    """Seed: background — v1 #5 Test_Len: inside OnTaskSucceeded, Len()
    still counts the finishing task (10, 9, ..., 1); after Wait it is 0."""
    lens: queue.SimpleQueue[int] = queue.SimpleQueue()
    g = corral.Group("bg-len", hooks=corral.Hooks(on_succeeded=lambda t, r: lens.put(len(g))))
    proceed = [threading.Event() for _ in range(10)]
    seen: list[int] = []
    try:
        tasks = [g.spawn(p.wait, TIMEOUT) for p in proceed]
        for p, t in zip(proceed, tasks, strict=True):
            p.set()
            seen.append(lens.get(timeout=TIMEOUT))
            t.join(TIMEOUT)
    finally:
        for p in proceed:
            p.set()
    g.join(TIMEOUT)
    assert seen == list(range(10, 0, -1))
    assert len(g) == 0


def test_bg_head_15_count_of() -> None:
    """Seed: background — HEAD #15 Test_CountOf: the count is 1 right
    after Run (counted synchronously), also for a loop task, and 0 after Wait / Cancel."""
    gate = threading.Event()
    g = corral.Group("bg-count")
    assert len(g) == 0
    try:
        one_off = g.spawn(gate.wait, TIMEOUT)
        assert len(g) == 1
    finally:
        gate.set()
    one_off.join(TIMEOUT)
    assert len(g) == 0
    loop = g.spawn(wait_token, restart=Restart.ALWAYS, backoff=NO_DELAY, background=True)
    assert len(g) == 1
    loop.cancel()
    loop.join(TIMEOUT)
    assert len(g) == 0
    g.join(TIMEOUT)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda g: g.spawn(42), TypeError),
        (lambda g: g.spawn(noop, name=3), TypeError),
        (lambda g: g.spawn(noop, meta=[("a", 1)]), TypeError),
        (lambda g: g.spawn(noop, meta="x"), TypeError),
        (lambda g: g.spawn(noop, needs=(None,)), TypeError),
        (lambda g: g.spawn(noop, restart="sometimes"), ValueError),
        (lambda g: g.spawn(noop, on_finish=3), TypeError),
    ],
    ids=["fn", "name", "meta-list", "meta-str", "needs", "restart", "on_finish"],
)
def test_spawn_checks_its_arguments(call: Any, error: type[Exception]) -> None:
    g = corral.Group()
    with pytest.raises(error):
        call(g)
    assert len(g) == 0
    g.join(TIMEOUT)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": 3}, TypeError),
        ({"hooks": 3}, TypeError),
        ({"token": "t"}, TypeError),
        ({"on_finish": 3}, TypeError),
        ({"on_finish": print, "hooks": corral.Hooks(on_finished=print)}, TypeError),
    ],
    ids=["name", "hooks", "token", "on_finish", "both-finish-hooks"],
)
def test_group_checks_its_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        corral.Group(**kwargs)


def test_spawn_on_a_finished_group_is_group_closed() -> None:
    g = corral.Group()
    g.spawn(noop)
    g.join(TIMEOUT)
    with pytest.raises(corral.GroupClosed):
        g.spawn(noop)


def test_an_unhashable_callable_can_be_spawned_with_an_auto_name() -> None:
    # Auto names are cached per callable; a callable that cannot be hashed (a dataclass
    # with eq=True, say) must still work.
    import dataclasses

    @dataclasses.dataclass
    class Job:
        value: int

        def __call__(self) -> int:
            return self.value

    job = Job(7)
    with pytest.raises(TypeError):
        hash(job)
    with corral.Group() as g:
        t = g.spawn(job)
        u = g.spawn(Job(8))
    assert (t.result(), u.result()) == (7, 8)
    assert t.name != u.name
    assert "Job#" in t.name


def test_a_replacement_waiting_for_a_task_held_in_on_restart_starts_when_it_ends(
    clock: MockClock,
) -> None:
    # Found by the GroupOps state machine: "a" fails and its on_restart hook runs (the
    # task is held in BACKOFF meanwhile); a replacement spawned then waits for "a". When
    # the hook returns, "a" ends (it was replaced) and the replacement must start: it
    # used to stay parked forever, and join() hung.
    in_hook = threading.Event()
    leave_hook = threading.Event()
    log: list[str] = []

    def on_restart(task: corral.Task[Any], delay: float) -> None:
        in_hook.set()
        assert leave_hook.wait(TIMEOUT)

    def fails() -> None:
        raise RuntimeError("once")

    g = corral.Group(clock=clock, hooks=corral.Hooks(on_restart=on_restart), fail_fast=False)
    with released(leave_hook):
        old = g.spawn(
            fails, name="a", restart=corral.Restart.ON_FAILURE,
            backoff=corral.Backoff(initial=1.0, jitter=0),
        )
        wait(in_hook)
        new = g.spawn(lambda: log.append("new ran"), name="a", replace=True)
        assert new.state is TaskState.PENDING
        leave_hook.set()
        new.join(TIMEOUT)
    g.join(TIMEOUT)
    assert log == ["new ran"]
    assert old.state is TaskState.CANCELLED
    # (old.token is its first attempt's, which had ended before the replacement)
    with pytest.raises(corral.Cancelled) as info:
        old.result()
    assert isinstance(info.value.cause, corral.Replaced)
    assert state(new) is TaskState.SUCCEEDED


def test_bg_unknown_type_is_refused_at_the_call() -> None:
    """Seed: background — : an unknown task type calls
    OnTaskFailed(ErrUnknownType) and runs nothing. corral: an unknown restart policy is a
    ValueError at the call; nothing is added."""
    added: list[str] = []
    g = corral.Group("bg-unknown", hooks=corral.Hooks(on_added=lambda t: added.append(t.name)))
    with pytest.raises(ValueError, match="restart"):
        g.spawn(lambda: None, restart="sometimes")
    assert added == []
    assert len(g) == 0
    g.join(TIMEOUT)


def test_keyword_arguments_meant_for_fn_say_how_to_pass_them() -> None:
    def fetch(url: str, retries: int = 0) -> str:
        return url

    with corral.Group() as g:
        with pytest.raises(TypeError, match=r"unknown option\(s\) 'retries'") as info:
            g.spawn(fetch, "u", retries=3)  # type: ignore[call-overload]
        assert "functools.partial(fetch, retries=...)" in str(info.value)
        assert "name, meta, background" in str(info.value)  # and what spawn does take
        assert len(g) == 0


def test_a_coroutine_object_given_as_fn_says_how_to_spawn_it_and_is_closed() -> None:
    async def fetch(url: str) -> str:
        return url

    coro = fetch("u")
    with corral.Group() as g:
        with pytest.raises(TypeError, match=r"not a coroutine object.*spawn\(fetch, \*args\)"):
            g.spawn(coro)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="coroutine object"):
            g.map(fetch("v"), [1])  # type: ignore[arg-type]
    # closed: no "never awaited" warning (this suite runs with -W error)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


@pytest.mark.usefixtures("no_gc")
def test_a_finished_task_is_freed_by_reference_counting_alone() -> None:
    # Regression: the context of a task's last attempt (in which the current task is
    # set) referred back to the task, so every task was cyclic garbage: the collector
    # ran every hundred or so tasks, and took 40% of a map's time.
    def tasks_alive() -> int:
        return sum(isinstance(o, corral.Task) for o in gc.get_objects())

    before = tasks_alive()
    with corral.Group() as g:
        kept = g.spawn(noop)
        for _ in range(50):
            g.spawn(noop)
        for _ in range(10):
            g.spawn(noop, on_finish=lambda t: None)  # (the general end, with a hook)
        list(g.map(abs, range(-10, 10), chunksize=3))
    assert kept.state is TaskState.SUCCEEDED
    assert tasks_alive() == before + 1  # the one still referenced


def test_a_keyboard_interrupt_of_the_block_comes_out_before_the_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As from asyncio.TaskGroup: Ctrl-C in the block (or SystemExit) comes out of the
    # with, not an ExceptionGroup of the failures that happened meanwhile; those are
    # logged (seen once), as when a task's own KeyboardInterrupt stops the group.
    def fails() -> NoReturn:
        raise ValueError("failed before the interrupt")

    g = corral.Group("interrupted", fail_fast=False)
    t = g.spawn(fails)
    t.join()

    def interrupted_block() -> None:
        with g:
            raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR, logger="corral"), pytest.raises(KeyboardInterrupt):
        interrupted_block()
    assert state(t) is TaskState.FAILED
    assert g.closed
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], ValueError)]
    assert len(logged) == 1


def test_a_hook_that_a_call_would_not_run_is_refused_where_it_is_given() -> None:
    # `async def on_finish(t)` was called and dropped ("coroutine was never awaited"):
    # the hook silently never ran. Hooks are called, never awaited or iterated.
    async def async_hook(t: corral.Task[Any]) -> None:
        pass

    def generator_hook(t: corral.Task[Any]) -> Iterator[None]:
        yield

    for hook, kind in ((async_hook, "a coroutine function"), (generator_hook, "a generator function")):
        with pytest.raises(TypeError, match=rf"^Hooks.on_failed is {kind} \(.*\): hooks are called"):
            corral.Hooks(on_failed=hook)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=rf"^on_finish is {kind}"):
            corral.Group(on_finish=hook)
        with pytest.raises(TypeError, match=rf"^on_finish is {kind}"):
            corral.Supervisor(on_finish=hook, handle_signals=False)
        with corral.Group() as g, pytest.raises(TypeError, match=rf"^on_finish is {kind}"):
            g.spawn(print, on_finish=hook)
        assert not g.tasks
    # A plain function (or any callable) is fine, and so is a partial of one.
    corral.Hooks(on_failed=functools.partial(lambda tag, t, e: None, "tag"))


def test_wait_until_refuses_a_predicate_whose_answer_would_be_a_coroutine() -> None:
    # A coroutine object is true: wait_until returned True at once and cancelled the
    # group, whose tasks had not finished.
    async def ready() -> bool:
        return False

    with corral.Group() as g:
        gate = threading.Event()
        t = g.spawn(gate.wait, TIMEOUT)
        with pytest.raises(TypeError, match=r"^predicate is a coroutine function"):
            g.wait_until(ready, TIMEOUT)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^predicate returned coroutine, which would read as true"):
            g.wait_until(lambda: ready(), TIMEOUT)  # type: ignore[arg-type, return-value]
        assert not g.token.cancelled
        gate.set()
    assert state(t) is TaskState.SUCCEEDED


# -- a task that waits for tasks of its own limited group --------------------------------


def test_a_wait_for_a_task_that_can_never_get_a_slot_raises_instead_of_hanging() -> None:
    # limit=1: the task waiting holds the only slot, and what it waits for queues for
    # it. That hung forever; now the wait raises RuntimeError (the task fails, its slot
    # comes free, and the queued task runs).
    children: list[corral.Task[int]] = []

    def parent() -> int:
        children.append(g.spawn(lambda: 7, name="child"))
        return children[0].result()  # (no timeout: it would wait forever)

    g = corral.Group("one-slot", limit=1, fail_fast=False)
    p = g.spawn(parent, name="parent")
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    [err] = info.value.exceptions
    assert isinstance(err, RuntimeError)
    assert str(err).startswith(
        "task 'parent' would wait forever for a task of its own group 'one-slot'"
    )
    assert "raise the limit, or give the inner work a group of its own" in str(err)
    assert state(p) is TaskState.FAILED
    assert children[0].result() == 7  # (it ran once the slot came free)


def test_map_iterated_in_a_task_of_its_own_full_group_raises_instead_of_hanging() -> None:
    g = corral.Group("one-slot", limit=1)
    g.spawn(lambda: list(g.map(abs, range(5))), name="parent")
    with pytest.raises(ExceptionGroup) as info:
        g.join(TIMEOUT)
    [err] = info.value.exceptions
    assert isinstance(err, RuntimeError)
    assert "task 'parent' would wait forever" in str(err)


def test_waits_for_own_tasks_that_a_slot_will_serve_are_left_alone() -> None:
    # limit=2: the waiting task holds one slot, the child gets the other; and a map
    # in a task of the group whose other slot serves it.
    # (Both at once would be a circle: two parents on the two slots, each waiting
    # for a child that queues.)
    with corral.Group("two-slots", limit=2) as g:
        t = g.spawn(lambda: g.spawn(lambda: 7).result())
        assert t.result(TIMEOUT) == 7
        m = g.spawn(lambda: list(g.map(abs, range(-3, 0))))
    assert m.result() == [3, 2, 1]


def test_a_wait_with_a_timeout_is_not_refused() -> None:
    # It ends by itself (TimeoutError), and then the queued task runs.
    def parent() -> str:
        child = g.spawn(lambda: 7, name="child")
        with pytest.raises(TimeoutError):
            child.result(0.05)
        return "timed out"

    with corral.Group("one-slot", limit=1) as g:
        p = g.spawn(parent)
    assert p.result() == "timed out"


def test_the_wait_that_closes_a_circle_of_waits_is_refused() -> None:
    # limit=2: a waits for b (running), b waits for c, which queues behind them. The
    # circle is closed by whichever of the two waits comes second: that one is refused
    # (a's: it waits for b, which is stuck; b's: it waits for c, which cannot run while
    # a waits for it), its task goes on or fails, and c runs.
    b_up = threading.Event()
    refused: list[str] = []

    def b() -> str:
        b_up.set()
        c = g.spawn(lambda: "c", name="c")
        try:
            return c.result()
        except RuntimeError as e:
            refused.append(str(e))
            raise

    def a() -> str:
        tb = g.spawn(b, name="b")
        wait(b_up)
        try:
            return tb.result()
        except RuntimeError as e:
            if not refused:  # (b's own refusal, re-raised by result(), is b's)
                refused.append(str(e))
            return "refused"

    g = corral.Group("chain", limit=2, fail_fast=False)
    ta = g.spawn(a, name="a")
    failures: tuple[BaseException, ...] = ()
    try:
        g.join(TIMEOUT)
    except ExceptionGroup as eg:
        failures = eg.exceptions
    assert len(refused) == 1
    assert refused[0].startswith(("task 'a' would wait forever", "task 'b' would wait forever"))
    b_refused = refused[0].startswith("task 'b'")
    # b refused: b failed (the group's one failure); a refused: nothing failed
    assert [type(e) for e in failures] == ([RuntimeError] if b_refused else [])
    assert ta.result() == "refused"
