"""Drain: a graceful stop lets ``drain=True`` work finish instead of cancelling it
(the ``background`` seed: "delay the shutdown long enough for the goroutines to
finish"), up to ``drain_timeout``; a second signal cuts the drain short, a third gives
up waiting, a fourth exits at once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import corral
from corral import TaskState
from helpers import TIMEOUT, in_thread, released, wait
from test_signals import PRELUDE, SRC, assert_clean_exit, describe, lines, run


def _stop_in_background(sup: corral.Supervisor) -> threading.Thread:
    t = threading.Thread(target=sup.stop, kwargs={"timeout": TIMEOUT})
    t.start()
    return t


def test_a_graceful_stop_lets_draining_tasks_finish_and_cancels_the_rest() -> None:
    job_running = threading.Event()
    job_gate = threading.Event()
    succeeded: list[str] = []
    seen_draining: list[bool] = []

    def on_succeeded(task: corral.Task[Any], value: object) -> None:
        succeeded.append(task.name)
        seen_draining.append(task.draining)

    def job() -> str:
        job_running.set()
        assert job_gate.wait(TIMEOUT)
        return "sent"

    def watcher() -> None:
        corral.current_token().wait()

    sup = corral.Supervisor(
        "svc", handle_signals=False, hooks=corral.Hooks(on_succeeded=on_succeeded)
    )
    sup.start()
    with released(job_gate):
        receipt = sup.spawn(job, name="receipt", drain=True)
        watch = sup.spawn(watcher, name="watch")
        wait(job_running)
        stopper = _stop_in_background(sup)
        watch.join(TIMEOUT)  # the others are cancelled at once...
        assert watch.state is TaskState.CANCELLED
        assert isinstance(watch.cause, corral.Stopped)
        # ...while the draining task runs on, its token untouched.
        assert receipt.state is TaskState.RUNNING
        assert not receipt.token.cancelled
        assert receipt.draining
        assert receipt.cause is None
        snap = sup.snapshot()
        assert snap["state"] == "draining"
        assert [t["draining"] for t in snap["tasks"]] == [True]
        with pytest.raises(corral.SupervisorStopped):
            sup.spawn(job, drain=True)  # a stop refuses new work, draining or not
        job_gate.set()
        stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert receipt.result() == "sent"
    assert receipt.cause is None
    assert succeeded == ["receipt"]
    assert seen_draining == [True]  # hooks see the task as draining
    assert not receipt.draining


def test_queued_draining_tasks_run_too() -> None:
    gate = threading.Event()
    first_running = threading.Event()
    ran: list[int] = []

    def job(i: int) -> int:
        if i == 0:
            first_running.set()
            assert gate.wait(TIMEOUT)
        ran.append(i)
        return i

    sup = corral.Supervisor("limited", handle_signals=False, limit=1)
    sup.start()
    with released(gate):
        tasks = [sup.spawn(job, i, drain=True) for i in range(4)]
        wait(first_running)
        assert [t.state for t in tasks[1:]] == [TaskState.PENDING] * 3
        stopper = _stop_in_background(sup)
        gate.set()
        stopper.join(TIMEOUT)
    assert [t.result() for t in tasks] == [0, 1, 2, 3]
    assert ran == [0, 1, 2, 3]


def test_what_a_draining_task_needs_stays_up_until_it_is_done() -> None:
    order: list[str] = []
    job_running = threading.Event()
    job_gate = threading.Event()

    def db() -> None:
        corral.current_token().wait()
        order.append("db cancelled")

    def job() -> None:
        job_running.set()
        assert job_gate.wait(TIMEOUT)
        assert not corral.cancelled()
        order.append("job done")

    def other() -> None:
        corral.current_token().wait()
        order.append("other cancelled")

    sup = corral.Supervisor("deps", handle_signals=False)
    sup.start()
    with released(job_gate):
        d = sup.spawn(db, name="db")
        sup.spawn(job, name="job", needs="db", drain=True)
        o = sup.spawn(other, name="other", needs="db")
        wait(job_running)
        stopper = _stop_in_background(sup)
        o.join(TIMEOUT)
        assert d.state is TaskState.RUNNING
        assert not d.token.cancelled
        job_gate.set()
        stopper.join(TIMEOUT)
    assert order == ["other cancelled", "job done", "db cancelled"]


def test_drain_timeout_cancels_what_is_left_with_cause_stopped(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    def slow() -> None:
        corral.current_token().wait()  # only a cancellation ends it

    sup = corral.Supervisor("slow", handle_signals=False, drain_timeout=0.05)
    sup.start()
    tasks = [sup.spawn(slow, name=f"slow{i}", drain=True) for i in range(3)]
    sup.stop(timeout=TIMEOUT)
    assert [t.state for t in tasks] == [TaskState.CANCELLED] * 3
    assert all(isinstance(t.cause, corral.Stopped) for t in tasks)
    messages = [r.getMessage() for r in corral_log.records if r.name == "corral"]
    assert "supervisor 'slow': draining 3 tasks, up to 0.05 s" in messages
    assert "supervisor 'slow': 3 draining tasks still running after 0.05 s; cancelling" in messages
    info = [r for r in corral_log.records if "draining 3 tasks" in r.getMessage()]
    assert [r.levelno for r in info] == [logging.INFO]


def test_a_task_that_ignores_its_cancellation_does_not_hold_the_drain_up() -> None:
    gate = threading.Event()
    stuck_up = threading.Event()

    def stuck() -> None:
        stuck_up.set()
        assert gate.wait(TIMEOUT)  # ignores its token

    def job() -> None:
        corral.current_token().wait()  # only a cancellation ends it

    sup = corral.Supervisor("stuck", handle_signals=False, drain_timeout=0.05)
    sup.start()
    with released(gate):
        sup.spawn(stuck, name="stuck")
        jobs = [sup.spawn(job, name=f"job{i}", drain=True) for i in range(2)]
        wait(stuck_up)
        stopper = threading.Thread(target=sup.stop)
        stopper.start()
        for j in jobs:  # cancelled at the drain's deadline, though "stuck" still runs
            j.join(TIMEOUT)
        assert [j.state for j in jobs] == [TaskState.CANCELLED] * 2
        assert sup.snapshot()["state"] != "draining"
        gate.set()
        stopper.join(TIMEOUT)
    assert not stopper.is_alive()


def test_drain_timeout_none_waits_without_limit_and_stop_timeout_still_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    caplog.set_level(logging.INFO, logger="corral")

    def job() -> None:
        assert gate.wait(TIMEOUT)

    sup = corral.Supervisor("unbounded", handle_signals=False, drain_timeout=None)
    sup.start()
    with released(gate):
        t = sup.spawn(job, name="job", drain=True)
        with pytest.raises(corral.StopTimeout) as info:
            sup.stop(timeout=0.05)  # the caller's bound, not the drain's
        assert list(info.value.running) == ["job"]
        assert t.state is TaskState.RUNNING
        assert not t.token.cancelled
        gate.set()
        sup.wait(TIMEOUT)
    assert t.result() is None  # it finished: SUCCEEDED
    # (it said "up to no limit")
    assert "supervisor 'unbounded': draining 1 task, for as long as it takes" in caplog.messages


def test_a_fatal_stop_does_not_drain() -> None:
    running = threading.Event()

    def job() -> None:
        running.set()
        corral.current_token().wait()

    def fatal() -> None:
        wait(running)
        raise KeyboardInterrupt

    sup = corral.Supervisor("fatal", handle_signals=False)
    sup.start()
    t = sup.spawn(job, drain=True)
    sup.spawn(fatal)
    with pytest.raises(KeyboardInterrupt):
        sup.wait(TIMEOUT)
    assert t.state is TaskState.CANCELLED
    assert isinstance(t.cause, KeyboardInterrupt)


@pytest.mark.usefixtures("fresh_default")
def test_go_takes_drain() -> None:
    def spawn() -> corral.Task[int]:
        return corral.go(lambda: 7, drain=True)

    t = in_thread(spawn)
    assert t.drain
    assert t.result(TIMEOUT) == 7


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_drain_must_be_a_bool(bad: object) -> None:
    with corral.Group() as g, pytest.raises(TypeError, match="drain must be True or False"):
        g.spawn(lambda: None, drain=bad)  # type: ignore[call-overload, call-arg]


@pytest.mark.parametrize("bad", [-1, float("nan"), "30"])
def test_drain_timeout_is_checked(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="drain_timeout"):
        corral.Supervisor(handle_signals=False, drain_timeout=bad)  # type: ignore[arg-type]


# -- signals: first stops and drains, second cuts the drain, third gives up, fourth exits

DRAINING_SERVICE = """
sup = corral.Supervisor("svc", drain_timeout=60)
started = threading.Event()

def job(i):
    started.set()
    tok = corral.current_token()
    tok.wait()
    out(f"job {{i}} cancelled: {{type(tok.cause).__name__}}")

def stubborn():
    started.set()
    threading.Event().wait()  # ignores its token for ever

for i in range(3):
    sup.spawn(job, i, name=f"job{{i}}", drain=True)
{extra}

def until(predicate):
    pause = threading.Event()
    for _ in range(2000):
        if predicate():
            return
        pause.wait(0.005)
    raise RuntimeError("never happened")

gave_up = threading.Event()

def signals():
    # Each signal once the previous one has taken effect: two sent back to back may be
    # handled within the same few milliseconds on a loaded machine, which is one signal
    # delivered twice (see the test below).
    started.wait(10)
    for n in range({n}):
        send(signal.SIGTERM)
        out(f"sent {{n + 1}}")
        if n == 0:  # the drain has begun
            until(lambda: sup.snapshot()["state"] == "draining")
        elif n == 1:  # the drain was cut: the draining tasks have ended
            until(lambda: not any(t.drain for t in sup.tasks))
        elif n == 2:  # serve() gave up
            gave_up.wait(10)

threading.Thread(target=signals, daemon=True).start()
watchdog(20, "serving")
try:
    sup.serve()
    out("serve returned")
except corral.StopTimeout as e:
    out("StopTimeout", sorted(e.running), "chained:", e.__context__ is not None)
    gave_up.set()
    {after_timeout}
"""


def test_second_signal_cancels_the_draining_tasks_at_once() -> None:
    script = DRAINING_SERVICE.format(
        extra="", n=2, after_timeout="",
    )
    proc = run(script)
    assert_clean_exit(proc)
    out = lines(proc)
    assert out[0] == "sent 1"
    assert sorted(out[1:5]) == [
        "job 0 cancelled: Stopped", "job 1 cancelled: Stopped", "job 2 cancelled: Stopped",
        "sent 2",
    ], describe(proc)
    assert out[-1] == "serve returned"
    assert "draining 3 tasks, up to 60 s" not in proc.stderr  # (INFO: not shown by default)


def test_a_given_up_stop_raises_one_stop_timeout_and_the_process_exits_promptly() -> None:
    script = DRAINING_SERVICE.format(
        extra="sup.spawn(stubborn, name='stubborn')", n=3, after_timeout="",
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    with subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as proc:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("StopTimeout"):
                raised_at = time.monotonic()
                break
        else:
            raise AssertionError(f"no StopTimeout: {seen} {proc.stderr.read() if proc.stderr else ''}")
        rc = proc.wait(TIMEOUT)
        exited_after = time.monotonic() - raised_at
        stderr = proc.stderr.read() if proc.stderr else ""
    assert seen[-1] == "StopTimeout ['stubborn'] chained: False", (seen, stderr)
    assert rc == 0, stderr
    # The at-exit handler does not wait again for the tasks that were given up on.
    assert exited_after < 1.0, f"exited {exited_after:.2f}s after StopTimeout; {stderr}"


def test_a_further_signal_after_giving_up_exits_at_once() -> None:
    # The program catches the StopTimeout and hangs on: the next signal ends it.
    script = DRAINING_SERVICE.format(
        extra="sup.spawn(stubborn, name='stubborn')", n=4,
        after_timeout="threading.Event().wait()",
    )
    proc = run(script)
    assert proc.returncode == 128 + 15, describe(proc)
    assert "StopTimeout ['stubborn'] chained: False" in lines(proc)


def test_one_signal_delivered_twice_at_once_is_one_signal() -> None:
    # `timeout -s INT cmd` signals the process, then its process group: two deliveries
    # microseconds apart must not count as a second signal (which gives up the stop).
    script = """
import logging
seen_twice = threading.Event()
class Spy(logging.Handler):
    def emit(self, record):
        if "delivered twice at once" in record.getMessage():
            seen_twice.set()
logging.getLogger("corral").addHandler(Spy())
logging.getLogger("corral").setLevel(logging.DEBUG)

sup = corral.Supervisor("svc")
running = threading.Event()
gate = threading.Event()

def worker():
    running.set()
    corral.current_token().wait()
    gate.wait(10)  # winds down only once the test has looked

def release_after_the_double():
    seen_twice.wait(10)
    out("give up:", sup._stop.give_up)
    gate.set()

sup.spawn(worker, name="w")
sup.start()
running.wait(10)
threading.Thread(target=release_after_the_double, daemon=True).start()
watchdog(10, "serving")
os.kill(PID, signal.SIGTERM)
os.kill(PID, signal.SIGTERM)
sup.wait()
out("stopped", sup.is_stopped)
"""
    proc = run(script)
    assert_clean_exit(proc)
    assert lines(proc) == ["give up: False", "stopped True"], describe(proc)
