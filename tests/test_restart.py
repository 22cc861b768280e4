"""Restart policies, backoff and restart limits, on virtual time (MockClock).

Tests whose docstring starts with "Seed: <library>" port a case of one of the seed
libraries; where the Go library's behaviour is a bug (marked **BUG?**), they
assert corral's fixed behaviour.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest

import corral
from corral import Backoff, Restart, TaskState
from corral.testing import MockClock
from helpers import NO_DELAY, AtomicCounter, group_errors, supervisor

# Every test runs over each runner (the pool, and a thread per attempt): see conftest.
pytestmark = pytest.mark.usefixtures("runner")

WAIT = 10.0  # a generous backstop (real seconds); nothing here should take that long


class Boom(Exception):
    """The failure the test tasks raise."""


class Recorder:
    """Hooks that log what happened, and hand restart delays to the test thread."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.delays: queue.Queue[float] = queue.Queue()
        self.failed: list[BaseException] = []
        self.finished = threading.Event()

    def _add(self, line: str) -> None:
        with self.lock:
            self.log.append(line)

    def on_started(self, task: corral.Task[Any]) -> None:
        self._add(f"started {task.attempts}")

    def on_succeeded(self, task: corral.Task[Any], result: object) -> None:
        self._add(f"succeeded {task.attempts} {result!r}")

    def on_failed(self, task: corral.Task[Any], exc: BaseException) -> None:
        with self.lock:
            self.failed.append(exc)
        self._add(f"failed {task.attempts} {exc!r}")

    def on_restart(self, task: corral.Task[Any], delay: float) -> None:
        self._add(f"restart {task.attempts}")
        self.delays.put(delay)

    def on_finished(self, task: corral.Task[Any]) -> None:
        self._add(f"finished {task.state.value}")
        self.finished.set()

    def hooks(self) -> corral.Hooks:
        return corral.Hooks(
            on_started=self.on_started,
            on_succeeded=self.on_succeeded,
            on_failed=self.on_failed,
            on_restart=self.on_restart,
            on_finished=self.on_finished,
        )

    def next_delay(self) -> float:
        return self.delays.get(timeout=WAIT)


def scripted(
    outcomes: list[str], blocking: threading.Event | None = None
) -> Callable[[], str]:
    """A task whose attempt k does outcomes[k]: "ok" returns, "fail" raises Boom,
    "block" sets ``blocking`` and waits until its token is cancelled (then returns)."""
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        what = outcomes[min(len(calls), len(outcomes)) - 1]
        if what == "fail":
            raise Boom(f"attempt {len(calls)}")
        if what == "block":
            assert blocking is not None
            blocking.set()
            assert corral.current_token().wait(WAIT)
        return f"ok {len(calls)}"

    return work


def state(task: corral.Task[Any]) -> TaskState:
    """The task's state now (a call, so that type checkers do not narrow it)."""
    return task.state


def always_fail() -> None:
    raise Boom("always")


# -- the four policies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "outcomes", "final", "attempts"),
    [
        (Restart.NEVER, ["fail"], TaskState.FAILED, 1),
        (Restart.NEVER, ["ok"], TaskState.SUCCEEDED, 1),
        (Restart.ON_FAILURE, ["fail", "fail", "ok"], TaskState.SUCCEEDED, 3),
        (Restart.ON_SUCCESS, ["ok", "ok", "fail"], TaskState.FAILED, 3),
        (Restart.ALWAYS, ["ok", "fail", "ok", "block"], TaskState.CANCELLED, 4),
        ("on_failure", ["fail", "ok"], TaskState.SUCCEEDED, 2),
        ("ON_SUCCESS", ["ok", "fail"], TaskState.FAILED, 2),
        ("always", ["fail", "block"], TaskState.CANCELLED, 2),
    ],
)
def test_policy_restarts_exactly_when_it_should(
    restart: Restart | str, outcomes: list[str], final: TaskState, attempts: int
) -> None:
    rec = Recorder()
    blocking = threading.Event()
    g = corral.Group("policy", fail_fast=False, hooks=rec.hooks())
    t = g.spawn(scripted(outcomes, blocking), restart=restart, backoff=NO_DELAY)
    try:
        if outcomes[-1] == "block":
            # The last attempt blocks on its token: wait until it runs, then cancel it.
            assert blocking.wait(WAIT)
            t.cancel()
        t.join(WAIT)
    finally:
        t.cancel()
        with pytest.raises(ExceptionGroup) if final is TaskState.FAILED else nullcontext():
            g.join(WAIT)
    assert state(t) is final
    assert t.attempts == attempts
    # Restarts happened after every attempt but the last, and only then.
    restarts = [line for line in rec.log if line.startswith("restart")]
    assert restarts == [f"restart {n}" for n in range(1, attempts)]
    assert rec.log[-1] == f"finished {final.value}"


def test_cancelled_attempt_is_never_restarted_even_with_always() -> None:
    rec = Recorder()
    started = threading.Event()

    def work() -> None:
        started.set()
        corral.current_token().wait(WAIT)
        corral.check()

    with corral.Group(hooks=rec.hooks()) as g:
        t = g.spawn(work, restart=Restart.ALWAYS, backoff=NO_DELAY)
        assert started.wait(WAIT)
        t.cancel("enough")
    assert state(t) is TaskState.CANCELLED
    assert t.attempts == 1
    assert not any(line.startswith("restart") for line in rec.log)


def test_failure_after_cancellation_is_a_failure_but_not_restarted() -> None:
    rec = Recorder()
    started = threading.Event()

    def work() -> None:
        started.set()
        corral.current_token().wait(WAIT)
        raise Boom("raised while being cancelled")

    g = corral.Group(fail_fast=False, hooks=rec.hooks())
    t = g.spawn(work, restart=Restart.ON_FAILURE, backoff=NO_DELAY)
    assert started.wait(WAIT)
    t.cancel()
    with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="raised while being cancelled")):
        g.join(WAIT)
    assert state(t) is TaskState.FAILED
    assert t.attempts == 1
    assert not any(line.startswith("restart") for line in rec.log)


def test_on_failed_runs_for_every_failed_attempt_and_attempts_counts_runs() -> None:
    rec = Recorder()
    with corral.Group(hooks=rec.hooks()) as g:
        t = g.spawn(
            scripted(["fail", "fail", "ok"]), restart=Restart.ON_FAILURE, backoff=NO_DELAY
        )
    assert t.result() == "ok 3"
    assert t.attempts == 3
    assert [str(e) for e in rec.failed] == ["attempt 1", "attempt 2"]
    assert isinstance(t.last_error, Boom)
    assert str(t.last_error) == "attempt 2"
    assert t.exception() is None  # it did not fail in the end
    assert rec.log == [
        "started 1", "failed 1 Boom('attempt 1')", "restart 1",
        "started 2", "failed 2 Boom('attempt 2')", "restart 2",
        "started 3", "succeeded 3 'ok 3'", "finished succeeded",
    ]


def test_restarts_are_logged_at_warning(corral_log: pytest.LogCaptureFixture) -> None:
    with corral.Group() as g:
        g.spawn(scripted(["fail", "ok"]), name="flaky", restart="on_failure", backoff=NO_DELAY)
    warnings = [r for r in corral_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "flaky" in warnings[0].getMessage()
    assert "restarting" in warnings[0].getMessage()
    assert not [r for r in corral_log.records if r.levelno >= logging.ERROR]


def test_tm_extra_restart_on_error_restarts_until_success() -> None:
    """Seed: ThreadManager — extra: RestartOnError restarts on error
    until success -> Restart.ON_FAILURE; each failed attempt reaches on_failed."""
    failed: list[str] = []
    calls = AtomicCounter()

    def flaky() -> str:
        if calls.add(1) < 3:
            raise ConnectionError(f"attempt {calls.value}")
        return "synced"

    sup = supervisor("tm-on-failure", hooks=corral.Hooks(on_failed=lambda t, e: failed.append(str(e))))
    sup.start()
    t = sup.spawn(flaky, name="flaky", restart=Restart.ON_FAILURE, backoff=NO_DELAY)
    assert t.result(WAIT) == "synced"
    sup.stop(WAIT)
    assert t.attempts == 3
    assert failed == ["attempt 1", "attempt 2"]


def test_tm_extra_restart_on_success_is_the_opposite() -> None:
    """Seed: ThreadManager — extra: RestartOnSuccess restarts only after
    a success -> Restart.ON_SUCCESS: two successes are run again, the failure ends the task."""
    err = ValueError("third run fails")
    calls = AtomicCounter()

    def job() -> int:
        n = calls.add(1)
        if n == 3:
            raise err
        return n

    sup = supervisor("tm-on-success")
    sup.start()
    t = sup.spawn(job, name="job", restart=Restart.ON_SUCCESS, backoff=NO_DELAY)
    assert t.exception(WAIT) is err
    sup.stop(WAIT)
    assert t.attempts == 3
    assert t.state is TaskState.FAILED
    assert sup.failures == [err]


def test_tm_extra_restart_always_reruns_both_ways_until_stopped() -> None:
    """Seed: ThreadManager — Restart (the unconditional onFinish) ->
    Restart.ALWAYS: a failure and a success are both run again; stop() ends it."""
    calls = AtomicCounter()
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
    t = sup.spawn(job, name="job", restart=Restart.ALWAYS, backoff=NO_DELAY)
    assert third.wait(WAIT)
    sup.stop(WAIT)
    assert t.attempts == 3
    assert t.state is TaskState.CANCELLED


def test_bg_head_12_loop_task_runs_again_and_again_until_cancelled() -> None:
    """Seed: background — HEAD #12 Test_RunTaskTypeLoop: a loop task runs
    its Fn again at once after each return (>= 100 iterations), until Cancel. corral:
    Restart.ALWAYS with no delay; cancelling the task ends the loop."""
    ticks = AtomicCounter()
    hundred = threading.Event()

    def tick() -> None:
        if ticks.add(1) == 100:
            hundred.set()

    g = corral.Group("bg-loop")
    t = g.spawn(tick, restart=Restart.ALWAYS, backoff=NO_DELAY)
    assert hundred.wait(WAIT)
    t.cancel(corral.Stopped("manager Cancel()"))
    g.join(WAIT)
    assert ticks.value >= 100
    assert ticks.value == t.attempts  # nothing ran after the cancel
    assert t.done


def test_bg_head_13_loop_task_reports_each_failing_iteration() -> None:
    """Seed: background — HEAD #13: a failing loop iteration is reported
    to OnTaskFailed (the first error received is AnError) and the loop goes on (>= 2 runs)."""
    err = RuntimeError("assert.AnError")
    errors: queue.SimpleQueue[BaseException] = queue.SimpleQueue()
    calls = AtomicCounter()

    def iteration() -> None:
        if calls.add(1) <= 2:
            raise err
        corral.current_token().wait(WAIT)

    g = corral.Group("bg-loop-failing", hooks=corral.Hooks(on_failed=lambda t, e: errors.put(e)))
    t = g.spawn(iteration, restart=Restart.ALWAYS, backoff=NO_DELAY)
    assert errors.get(timeout=WAIT) is err
    assert errors.get(timeout=WAIT) is err
    t.cancel()
    g.join(WAIT)  # restarted failures went to on_failed; the cancel is not a failure
    assert calls.value >= 2


# -- backoff -----------------------------------------------------------------------------


def test_backoff_delays_are_exact_without_jitter(clock: MockClock) -> None:
    rec = Recorder()
    s = corral.Supervisor("exact", clock=clock, handle_signals=False, hooks=rec.hooks())
    s.start()
    try:
        t = s.spawn(
            always_fail, restart=Restart.ON_FAILURE,
            backoff=Backoff(initial=0.1, maximum=0.5, multiplier=2, jitter=0, reset_after=None),
        )
        delays = []
        for _ in range(6):
            d = rec.next_delay()
            delays.append(d)
            assert state(t) is TaskState.BACKOFF
            assert clock.next_deadline() == pytest.approx(clock.monotonic() + d)
            clock.advance(d)
        assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
        # Time only ever moved by the delays themselves.
        assert rec.next_delay() == pytest.approx(0.5)
        assert clock.monotonic() == pytest.approx(0.1 + 0.2 + 0.4 + 0.5 * 3)
        assert t.attempts == 7
    finally:
        s.stop(timeout=WAIT)
    assert state(t) is TaskState.CANCELLED


def test_nothing_runs_before_the_delay_has_passed(clock: MockClock) -> None:
    rec = Recorder()
    g = corral.Group(clock=clock, hooks=rec.hooks())
    t = g.spawn(
        scripted(["fail", "ok"]), restart=Restart.ON_FAILURE,
        backoff=Backoff(initial=2, jitter=0),
    )
    try:
        assert rec.next_delay() == 2
        clock.advance(1.999)
        assert state(t) is TaskState.BACKOFF
        assert t.attempts == 1
        clock.advance(0.001)
        t.join(WAIT)
    finally:
        t.cancel()
        g.join(WAIT)
    assert state(t) is TaskState.SUCCEEDED
    assert t.attempts == 2


def test_default_backoff_is_used_when_restarting_without_one(clock: MockClock) -> None:
    rec = Recorder()
    g = corral.Group(clock=clock, hooks=rec.hooks())
    t = g.spawn(scripted(["fail", "ok"]), restart=Restart.ON_FAILURE)
    try:
        d = rec.next_delay()
        assert 0.1 * 0.9 <= d <= 0.1 * 1.1  # Backoff(): initial 0.1, jitter 10%
        clock.advance(d)
        t.join(WAIT)
    finally:
        t.cancel()
        g.join(WAIT)
    assert t.attempts == 2


def test_backoff_delay_jitter_bounds() -> None:
    b = Backoff(initial=0.1, maximum=30, multiplier=2, jitter=0.1)
    assert b.delay(0, rand=lambda: 0.0) == pytest.approx(0.09)
    assert b.delay(0, rand=lambda: 1.0) == pytest.approx(0.11)
    assert b.delay(0, rand=lambda: 0.5) == pytest.approx(0.1)
    assert b.delay(3, rand=lambda: 0.0) == pytest.approx(0.8 * 0.9)
    assert b.delay(3, rand=lambda: 1.0) == pytest.approx(0.8 * 1.1)
    # At the cap, jitter only goes down: the delay never exceeds maximum.
    assert b.delay(20, rand=lambda: 1.0) == pytest.approx(30)
    assert b.delay(20, rand=lambda: 0.0) == pytest.approx(27)
    # Enormous exponents do not overflow.
    assert b.delay(100_000, rand=lambda: 0.5) == pytest.approx(30)
    rng = random.Random(1234)
    for n in range(12):
        base = min(0.1 * 2**n, 30)
        for _ in range(200):
            d = b.delay(n, rand=rng.random)
            assert base * 0.9 - 1e-12 <= d <= min(base * 1.1, 30) + 1e-12
    no_jitter = Backoff(initial=0.1, maximum=30, jitter=0)
    assert [no_jitter.delay(n, rand=lambda: 1.0) for n in range(4)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8]
    )


def test_random_jitter_is_spread_not_constant() -> None:
    b = Backoff(initial=1, maximum=10, jitter=0.5)
    values = {b.delay(0) for _ in range(50)}
    assert len(values) > 1
    assert all(0.5 <= v <= 1.5 for v in values)


def test_reset_after_a_healthy_run_sets_the_exponent_back(clock: MockClock) -> None:
    rec = Recorder()
    running = threading.Event()
    gate = threading.Event()
    long_runs = {3: 10.0, 6: 9.5}  # attempt -> virtual seconds it lasts
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        if len(calls) in long_runs:
            running.set()
            assert gate.wait(WAIT)
            gate.clear()
        raise Boom(f"attempt {len(calls)}")

    g = corral.Group(clock=clock, fail_fast=False, hooks=rec.hooks())
    t = g.spawn(
        work, restart=Restart.ON_FAILURE,
        backoff=Backoff(initial=1, maximum=100, multiplier=2, jitter=0, reset_after=10),
    )
    try:
        delays: list[float] = []
        while True:
            delays.append(rec.next_delay())
            if len(delays) == 7:
                break  # leave the task backing off: it is cancelled below
            clock.advance(delays[-1])
            attempt = len(delays) + 1
            if attempt in long_runs:
                # This attempt runs for a while (virtual time) before it fails.
                assert running.wait(WAIT)
                running.clear()
                clock.advance(long_runs[attempt])
                gate.set()
        assert delays == [1, 2, 1, 2, 4, 8, 16]
    finally:
        gate.set()
        t.cancel()
        g.join(WAIT)
    assert state(t) is TaskState.CANCELLED


def test_without_reset_after_the_exponent_never_goes_back(clock: MockClock) -> None:
    rec = Recorder()
    running = threading.Event()
    gate = threading.Event()
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        if len(calls) == 3:
            running.set()
            assert gate.wait(WAIT)
        raise Boom(f"attempt {len(calls)}")

    g = corral.Group(clock=clock, fail_fast=False, hooks=rec.hooks())
    t = g.spawn(
        work, restart=Restart.ON_FAILURE,
        backoff=Backoff(initial=1, maximum=100, jitter=0, reset_after=None),
    )
    try:
        clock.advance(rec.next_delay())
        clock.advance(rec.next_delay())
        assert running.wait(WAIT)
        clock.advance(1000)  # a very long, healthy-looking run
        gate.set()
        assert rec.next_delay() == 4
    finally:
        gate.set()
        t.cancel()
        g.join(WAIT)


def test_routine_backoff_sequence_doubles_to_a_10_minute_cap() -> None:
    """Seed: routine — /4.4: the routine-panic backoff is exponential x2
    from 1 s, no jitter, capped at 10 min: 1, 2, 4, ... 512, then 600 s."""
    backoff = corral.Backoff(initial=1, maximum=600, multiplier=2, jitter=0)
    assert [backoff.delay(n) for n in range(12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600,
    ]


def test_routine_restarts_after_panics_with_exponential_backoff() -> None:
    """Seed: routine — : a routine that panics is run again after 1 s, 2
    s, 4 s... (on virtual time: exact)."""
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
    """Seed: routine — (restart after a panic, reported) and DESIGN
    Hooks: on_restart announces a scheduled restart, so it runs before the restarted attempt
    starts (and before join returns). A logging handler widens the window between "restart
    scheduled" and the hook (at most 0.5 s), so that a hook called after the timer is armed
    shows."""
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

    calls = AtomicCounter()

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


# -- max_restarts --------------------------------------------------------------------------


def test_restart_limit_ends_the_task_failed_in_a_group(clock: MockClock) -> None:
    rec = Recorder()
    sibling_cause: list[BaseException | None] = []
    sibling_running = threading.Event()

    def sibling() -> None:
        sibling_running.set()
        tok = corral.current_token()
        tok.wait(WAIT)
        sibling_cause.append(tok.cause)

    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise Boom(f"attempt {len(calls)}")

    with (
        pytest.RaisesGroup(corral.RestartLimitExceeded) as excinfo,
        corral.Group("limited", clock=clock, hooks=rec.hooks()) as g,
    ):
        g.spawn(sibling, name="sibling")
        assert sibling_running.wait(WAIT)
        t = g.spawn(
            work, name="flaky", restart=Restart.ON_FAILURE,
            backoff=Backoff(initial=1, multiplier=1, jitter=0), max_restarts=(2, 10),
        )
        clock.advance(rec.next_delay())
        clock.advance(rec.next_delay())
    err = excinfo.value.exceptions[0]
    assert isinstance(err, corral.RestartLimitExceeded)
    assert isinstance(err.__cause__, Boom)
    assert str(err.__cause__) == "attempt 3"
    assert state(t) is TaskState.FAILED
    assert t.exception() is err
    assert t.attempts == 3  # the first run and 2 restarts
    assert [str(e) for e in rec.failed] == ["attempt 1", "attempt 2", "attempt 3"]
    # It escalated like any failure: fail_fast cancelled the sibling with it.
    assert sibling_cause == [err]
    with pytest.raises(corral.RestartLimitExceeded):
        t.result()


def test_restart_limit_in_a_supervisor_is_recorded_and_logged(
    clock: MockClock, corral_log: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    s = corral.Supervisor("sup", clock=clock, handle_signals=False, hooks=rec.hooks())
    s.start()
    try:
        t = s.spawn(
            always_fail, name="flaky", restart=Restart.ALWAYS,
            backoff=Backoff(initial=1, multiplier=1, jitter=0), max_restarts=(1, 5),
        )
        clock.advance(rec.next_delay())
        assert rec.finished.wait(WAIT)
        assert state(t) is TaskState.FAILED
        assert t.attempts == 2
        failures = s.failures
        assert len(failures) == 1
        assert isinstance(failures[0], corral.RestartLimitExceeded)
        assert isinstance(failures[0].__cause__, Boom)
        assert len(rec.failed) == 2  # on_failed ran for both failed attempts
        assert s.is_running  # a supervisor keeps going
    finally:
        s.stop(timeout=WAIT)
    errors = [r for r in corral_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], corral.RestartLimitExceeded)


def test_zero_restarts_allowed_fails_on_the_first_failure(clock: MockClock) -> None:
    g = corral.Group(clock=clock)
    t = g.spawn(always_fail, restart=Restart.ON_FAILURE, max_restarts=(0, 60))
    with pytest.RaisesGroup(corral.RestartLimitExceeded):
        g.join(WAIT)
    assert t.attempts == 1
    assert clock.pending == 0


def test_restart_limit_of_a_task_that_keeps_succeeding(clock: MockClock) -> None:
    g = corral.Group(clock=clock)
    t = g.spawn(lambda: 7, restart=Restart.ALWAYS, backoff=NO_DELAY, max_restarts=(3, 1))
    with pytest.RaisesGroup(corral.RestartLimitExceeded):
        g.join(WAIT)
    assert t.attempts == 4
    assert state(t) is TaskState.FAILED


def test_restarts_spread_wider_than_the_period_keep_going(clock: MockClock) -> None:
    rec = Recorder()
    g = corral.Group(clock=clock, hooks=rec.hooks())
    t = g.spawn(
        always_fail, restart=Restart.ON_FAILURE,
        backoff=Backoff(initial=6, multiplier=1, jitter=0), max_restarts=(1, 5),
    )
    try:
        for _ in range(5):
            assert rec.next_delay() == 6
            clock.advance(6)
        assert rec.next_delay() == 6
        assert state(t) is TaskState.BACKOFF
        assert t.attempts == 6
    finally:
        t.cancel()
        g.join(WAIT)
    assert state(t) is TaskState.CANCELLED
    assert rec.log[-1] == "finished cancelled"


@pytest.mark.parametrize(("delay", "runs"), [(6, None), (4, 3)])
def test_restart_window_slides(clock: MockClock, delay: float, runs: int | None) -> None:
    # At most 2 restarts per 10s. With 6s between failures, the restart at t=0 has left
    # the window when the third comes (t=12): it keeps going. With 4s, the third restart
    # (t=8) would be the third within 10s: the task fails after 3 runs.
    rec = Recorder()
    g = corral.Group(clock=clock, fail_fast=False, hooks=rec.hooks())
    t = g.spawn(
        always_fail, restart=Restart.ON_FAILURE,
        backoff=Backoff(initial=delay, multiplier=1, jitter=0), max_restarts=(2, 10),
    )
    try:
        for _ in range(2):
            assert rec.next_delay() == delay
            clock.advance(delay)
        if runs is None:
            for _ in range(4):
                assert rec.next_delay() == delay
                clock.advance(delay)
            assert rec.next_delay() == delay
            assert state(t) is TaskState.BACKOFF
            assert t.attempts == 7
        else:
            t.join(WAIT)
            assert t.attempts == runs
            assert isinstance(t.exception(), corral.RestartLimitExceeded)
    finally:
        t.cancel()
        with pytest.raises(ExceptionGroup) if runs else nullcontext():
            g.join(WAIT)


def test_bg_head_10_task_retry_strategy_limit_5() -> None:
    """Seed: background — HEAD #10 Test_TaskRetryStrategies:
    Retry{Limit(5)} on an always failing Fn -> 5 calls. corral: Restart.ON_FAILURE with
    max_restarts=(4, period) runs it 5 times; each attempt reaches on_failed; the task then
    fails with RestartLimitExceeded (caused by the last error), reported once."""
    calls = AtomicCounter()
    failed: list[BaseException] = []
    err = RuntimeError("assert.AnError")

    def fn() -> None:
        calls.add(1)
        raise err

    g = corral.Group("bg-retry", hooks=corral.Hooks(on_failed=lambda t, e: failed.append(e)))
    t = g.spawn(fn, restart=Restart.ON_FAILURE, backoff=NO_DELAY, max_restarts=(4, 60.0))
    (reported,) = group_errors(lambda: g.join(WAIT))
    assert calls.value == 5
    assert t.attempts == 5
    assert failed == [err] * 5
    assert isinstance(reported, corral.RestartLimitExceeded)
    assert reported.__cause__ is err
    assert t.state is TaskState.FAILED


def test_bg_default_no_retry_is_limit_1() -> None:
    """Seed: background — mkstrategies: with no retry strategy the task
    runs once (Limit(1)); max_restarts=(0, period) with ON_FAILURE is the same."""
    calls = AtomicCounter()
    err = RuntimeError("fails")

    def fn() -> None:
        calls.add(1)
        raise err

    g = corral.Group("bg-no-retry", fail_fast=False)
    g.spawn(fn)
    g.spawn(fn, restart=Restart.ON_FAILURE, backoff=NO_DELAY, max_restarts=(0, 60.0))
    reported = group_errors(lambda: g.join(WAIT))
    assert calls.value == 2
    # The two tasks run concurrently: their failures are recorded in either order.
    assert len(reported) == 2
    plain = [r for r in reported if r is err]
    limited = [r for r in reported if isinstance(r, corral.RestartLimitExceeded)]
    assert len(plain) == 1
    assert len(limited) == 1
    assert limited[0].__cause__ is err


# -- tokens, states and limits across restarts --------------------------------------------


def test_each_attempt_gets_a_fresh_token() -> None:
    log: list[str] = []
    tokens: list[corral.Token] = []
    lock = threading.Lock()

    def work() -> None:
        tok = corral.current_token()
        task = corral.current_task()
        assert task is not None
        with lock:
            n = len(tokens)
            tokens.append(tok)
            log.append(f"attempt {n + 1} token is task.token: {tok is task.token}")
            log.append(f"attempt {n + 1} token cancelled: {tok.cancelled}")
            if n:
                log.append(f"attempt {n + 1} sees previous cancelled: {tokens[n - 1].cancelled}")
        tok.on_cancel(lambda: log.append(f"attempt {n + 1} on_cancel"))
        if n < 2:
            raise Boom(f"attempt {n + 1}")

    with corral.Group() as g:
        t = g.spawn(work, restart=Restart.ON_FAILURE, backoff=NO_DELAY)
    assert t.attempts == 3
    assert len({id(tok) for tok in tokens}) == 3
    assert log == [
        "attempt 1 token is task.token: True",
        "attempt 1 token cancelled: False",
        "attempt 1 on_cancel",
        "attempt 2 token is task.token: True",
        "attempt 2 token cancelled: False",
        "attempt 2 sees previous cancelled: True",
        "attempt 2 on_cancel",
        "attempt 3 token is task.token: True",
        "attempt 3 token cancelled: False",
        "attempt 3 sees previous cancelled: True",
        "attempt 3 on_cancel",
    ]
    assert all(tok.cancelled for tok in tokens)


def test_restarted_token_is_a_child_of_the_group_token() -> None:
    seen: list[corral.Token] = []
    second = threading.Event()

    def work() -> None:
        seen.append(corral.current_token())
        if len(seen) == 1:
            raise Boom("first")
        second.set()
        corral.current_token().wait(WAIT)

    g = corral.Group()
    t = g.spawn(work, restart=Restart.ON_FAILURE, backoff=NO_DELAY)
    try:
        assert second.wait(WAIT)
        assert not seen[1].wait(0)
        g.cancel("group cancelled")  # reaches the restarted attempt's token
        t.join(WAIT)
    finally:
        g.cancel()
        g.join(WAIT)
    assert isinstance(seen[1].cause, corral.Cancelled)
    assert str(seen[1].cause) == "group cancelled"
    assert state(t) is TaskState.CANCELLED


def test_backoff_state_holds_no_limit_slot(clock: MockClock) -> None:
    log: list[str] = []
    b_running = threading.Event()
    b_gate = threading.Event()
    calls: list[int] = []

    def a() -> None:
        calls.append(1)
        log.append(f"a attempt {len(calls)}")
        if len(calls) == 1:
            raise Boom("a fails once")

    def b() -> None:
        log.append("b runs")
        b_running.set()
        assert b_gate.wait(WAIT)
        log.append("b done")

    rec = Recorder()
    g = corral.Group("limited", limit=1, clock=clock, hooks=rec.hooks())
    try:
        ta = g.spawn(a, name="a", restart=Restart.ON_FAILURE, backoff=Backoff(initial=5, jitter=0))
        tb = g.spawn(b, name="b")
        assert rec.next_delay() == 5
        assert b_running.wait(WAIT)  # b got the slot while a backs off
        assert state(ta) is TaskState.BACKOFF
        assert state(tb) is TaskState.RUNNING
        clock.advance(5)
        # a's delay is over, but b holds the only slot: a waits for it, PENDING.
        assert state(ta) is TaskState.PENDING
        assert ta.attempts == 1
        b_gate.set()
        ta.join(WAIT)
    finally:
        b_gate.set()
        g.join(WAIT)
    assert log == ["a attempt 1", "b runs", "b done", "a attempt 2"]
    assert state(ta) is TaskState.SUCCEEDED


def test_cancel_during_backoff_ends_the_task_at_once(clock: MockClock) -> None:
    rec = Recorder()
    g = corral.Group(clock=clock, hooks=rec.hooks())
    t = g.spawn(always_fail, restart=Restart.ON_FAILURE, backoff=Backoff(initial=3, jitter=0))
    try:
        assert rec.next_delay() == 3
        assert state(t) is TaskState.BACKOFF
        t.cancel("no more")
        assert state(t) is TaskState.CANCELLED  # at once, without waiting for the delay
        assert t.done
        assert clock.pending == 0
        clock.advance(100)
        assert t.attempts == 1
    finally:
        g.join(WAIT)
    assert t.attempts == 1
    assert rec.log[-1] == "finished cancelled"
    with pytest.raises(corral.Cancelled):
        t.result()


def test_stop_during_backoff_ends_the_task_without_another_run(clock: MockClock) -> None:
    rec = Recorder()
    s = corral.Supervisor(clock=clock, handle_signals=False, hooks=rec.hooks())
    s.start()
    try:
        t = s.spawn(always_fail, restart=Restart.ALWAYS, backoff=Backoff(initial=3, jitter=0))
        assert rec.next_delay() == 3
        assert state(t) is TaskState.BACKOFF
    finally:
        s.stop(timeout=WAIT)
    assert state(t) is TaskState.CANCELLED
    clock.advance(100)
    assert t.attempts == 1
    assert clock.pending == 0
    assert rec.log.count("finished cancelled") == 1


def test_group_cancel_during_backoff_ends_the_task(clock: MockClock) -> None:
    rec = Recorder()
    g = corral.Group(clock=clock, hooks=rec.hooks())
    t = g.spawn(always_fail, restart=Restart.ON_FAILURE, backoff=Backoff(initial=3, jitter=0))
    try:
        assert rec.next_delay() == 3
        g.cancel("cancelled while backing off")
        assert state(t) is TaskState.CANCELLED
        clock.advance(10)
    finally:
        g.join(WAIT)
    assert t.attempts == 1


def test_no_restart_once_the_supervisor_is_stopped() -> None:
    rec = Recorder()
    running = threading.Event()

    def work() -> None:
        running.set()
        corral.current_token().wait(WAIT)
        raise Boom("failed while stopping")

    s = corral.Supervisor(handle_signals=False, hooks=rec.hooks())
    s.start()
    try:
        t = s.spawn(work, restart=Restart.ON_FAILURE, backoff=NO_DELAY)
        assert running.wait(WAIT)
    finally:
        s.stop(timeout=WAIT)
    assert state(t) is TaskState.FAILED
    assert t.attempts == 1
    assert not any(line.startswith("restart") for line in rec.log)


def test_a_task_backing_off_keeps_its_group_open(clock: MockClock) -> None:
    rec = Recorder()
    g = corral.Group(clock=clock, hooks=rec.hooks())
    t = g.spawn(scripted(["fail", "ok"]), restart=Restart.ON_FAILURE, backoff=Backoff(initial=5, jitter=0))
    try:
        assert rec.next_delay() == 5
        with pytest.raises(TimeoutError):
            g.join(timeout=0.05)
        assert not g.closed
        clock.advance(5)
        g.join(WAIT)
    finally:
        t.cancel()
        g.join(WAIT)
    assert state(t) is TaskState.SUCCEEDED
    assert t.attempts == 2


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_is_never_restarted(exc_type: type[BaseException]) -> None:
    rec = Recorder()
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise exc_type()

    g = corral.Group(hooks=rec.hooks())
    t = g.spawn(work, restart=Restart.ALWAYS, backoff=NO_DELAY)
    with pytest.raises(exc_type):
        g.join(WAIT)
    assert t.attempts == 1
    assert len(calls) == 1
    assert state(t) is TaskState.FAILED
    assert not any(line.startswith("restart") for line in rec.log)


def test_tm_bug_restarted_task_gets_a_fresh_uncancelled_token() -> None:
    """Seed: ThreadManager — **BUG?** a restarted thread reuses its
    cancelled ctx, so a ctx-aware work returns at once and loops. corral: each attempt gets
    a fresh, uncancelled token, and the restarted watch keeps running until stopped."""
    log: list[str] = []
    tokens: list[corral.Token] = []
    watching = threading.Event()
    calls = AtomicCounter()

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
    t = sup.spawn(watch, name="watch", restart=Restart.ON_FAILURE, backoff=NO_DELAY)
    assert watching.wait(WAIT)
    assert t.state is TaskState.RUNNING
    assert tokens[0].cancelled
    assert not tokens[1].cancelled
    assert tokens[0] is not tokens[1]
    sup.stop(WAIT)
    assert log == ["run 1: cancelled=False", "run 2: cancelled=False"]
    assert t.attempts == 2  # no tight restart loop
    assert isinstance(tokens[1].cause, corral.Stopped)


def test_tm_extra_restart_is_suppressed_once_stopped() -> None:
    """Seed: ThreadManager — extra "Restart is suppressed once stopped":
    a task waiting to restart ends CANCELLED on stop() and never runs again (on virtual
    time)."""
    clock = MockClock()
    runs = AtomicCounter()

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
    assert state(t) is TaskState.CANCELLED
    assert clock.pending == 0


def test_tm_deadlock_restart_loop_racing_stop() -> None:
    """Seed: ThreadManager — "Restart can race with Stop" (deadlock
    risk): a task restarting at once in a loop does not keep stop() from completing, and
    runs no more after it."""
    looping = threading.Event()
    calls = AtomicCounter()

    def spin() -> None:
        if calls.add(1) == 50:
            looping.set()

    sup = supervisor("tm-restart-race")
    sup.start()
    t = sup.spawn(spin, name="spin", restart=Restart.ALWAYS, backoff=NO_DELAY)
    assert looping.wait(WAIT)
    sup.stop(WAIT)
    assert t.done
    assert t.state.is_final
    assert calls.value == t.attempts >= 50


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["sometimes", "", "never "])
def test_unknown_restart_value_is_a_value_error(restart: str) -> None:
    with corral.Group() as g, pytest.raises(ValueError, match="restart"):
        g.spawn(always_fail, restart=restart)
    assert len(g) == 0


def test_the_restart_error_lists_the_values_and_the_dashed_spelling_is_accepted() -> None:
    with corral.Group() as g:
        with pytest.raises(ValueError, match="'never', 'always', 'on_failure', 'on_success'"):
            g.spawn(always_fail, restart="onfailure")
        # Docker's and systemd's spelling of the same policy
        t = g.spawn(lambda: None, restart="On-Failure")
    assert t.restart is corral.Restart.ON_FAILURE
    assert t.state is TaskState.SUCCEEDED


@pytest.mark.parametrize("restart", [3, None, object()])
def test_restart_value_of_another_type_is_rejected(restart: Any) -> None:
    with corral.Group() as g, pytest.raises((TypeError, ValueError), match="restart"):
        g.spawn(always_fail, restart=restart)
    assert len(g) == 0


@pytest.mark.parametrize(
    ("max_restarts", "error"),
    [
        ((-1, 5), ValueError),
        ((1, 0), ValueError),
        ((1, -2.5), ValueError),
        ((1, math.inf), ValueError),
        ((1, math.nan), ValueError),
        ((1,), TypeError),
        ((1, 2, 3), TypeError),
        ("x", TypeError),
        ((1.5, 2), TypeError),
        ((True, 2), TypeError),
        ((1, "5"), TypeError),
        ((1, True), TypeError),
    ],
)
def test_bad_max_restarts(max_restarts: Any, error: type[Exception]) -> None:
    with corral.Group() as g, pytest.raises(error, match="max_restarts"):
        g.spawn(always_fail, restart=Restart.ON_FAILURE, max_restarts=max_restarts)
    assert len(g) == 0


def test_good_max_restarts_are_accepted() -> None:
    with corral.Group() as g:
        t1 = g.spawn(lambda: 1, max_restarts=(0, 1))
        t2 = g.spawn(lambda: 2, max_restarts=(5, 0.5), restart="on_failure")
        t3 = g.spawn(lambda: 3, max_restarts=None)
    assert (t1.result(), t2.result(), t3.result()) == (1, 2, 3)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"initial": -1}, ValueError),
        ({"initial": "1"}, TypeError),
        ({"initial": True}, TypeError),
        ({"initial": math.nan}, ValueError),
        ({"maximum": math.inf}, ValueError),
        ({"maximum": -1}, ValueError),
        ({"initial": 5, "maximum": 1}, ValueError),
        ({"multiplier": 0.5}, ValueError),
        ({"multiplier": None}, TypeError),
        ({"jitter": 1.5}, ValueError),
        ({"jitter": -0.1}, ValueError),
        ({"reset_after": -1}, ValueError),
        ({"reset_after": "60"}, TypeError),
        ({"reset_after": False}, TypeError),
    ],
)
def test_bad_backoff_fields(fields: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="Backoff"):
        Backoff(**fields)


def test_backoff_field_edges_are_accepted() -> None:
    b = Backoff(initial=0, maximum=0, multiplier=1, jitter=0, reset_after=None)
    assert b.delay(5) == 0
    assert Backoff(jitter=1).delay(0, rand=lambda: 0.0) == 0
    assert Backoff(reset_after=0).reset_after == 0


@pytest.mark.parametrize("backoff", [0.5, (0.1, 30), {"initial": 1}, "0.1"])
def test_backoff_must_be_a_backoff(backoff: Any) -> None:
    with corral.Group() as g, pytest.raises(TypeError, match="backoff"):
        g.spawn(always_fail, restart=Restart.ON_FAILURE, backoff=backoff)
    assert len(g) == 0
