"""Nothing is left running at interpreter exit: corral cancels what still runs, lets it
clean up (bounded), and the process ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

pytestmark = pytest.mark.slow


def run(script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
        stdin=subprocess.DEVNULL,
    )


def test_running_work_is_cancelled_and_cleaned_up_at_exit() -> None:
    # A started supervisor, a plain root group and a corral.go() task, none stopped or
    # joined by the program: at exit each task sees its token cancelled (graceful cause
    # Stopped) and its cleanup runs before the process ends.
    proc = run(
        """
        import sys, threading
        import corral

        up = threading.Semaphore(0)
        out_lock = threading.Lock()

        def out(line):
            with out_lock:  # one whole line at a time: three threads write at exit
                sys.stdout.write(line + "\\n")
                sys.stdout.flush()

        def worker(label):
            tok = corral.current_token()
            up.release()
            tok.wait()
            out(f"{label} cleanup, cause: {type(tok.cause).__name__}")

        def start_go():
            corral.go(worker, "go-task")  # from a non-main thread: no signal handlers

        sup = corral.Supervisor("svc", handle_signals=False)
        sup.spawn(worker, "supervisor-task")
        sup.start()
        g = corral.Group("loose")
        g.spawn(worker, "group-task")
        t = threading.Thread(target=start_go)
        t.start()
        t.join()
        for _ in range(3):
            assert up.acquire(timeout=10)
        out("main returns")
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "main returns"
    assert sorted(lines[1:]) == [
        "go-task cleanup, cause: Stopped",
        "group-task cleanup, cause: Stopped",
        "supervisor-task cleanup, cause: Stopped",
    ]
    assert "Traceback" not in proc.stderr


def test_exit_does_not_wait_forever_for_a_task_that_ignores_its_token() -> None:
    # Workers are daemon threads: a task that never looks at its token cannot keep the
    # process alive; exit waits for it only up to the bounded stop timeout.
    proc = run(
        """
        import threading, time
        import corral
        import corral._supervisor as s

        s.DEFAULT_STOP_TIMEOUT = 0.5  # keep the bounded wait short for the test
        started = threading.Event()

        def stubborn():
            started.set()
            threading.Event().wait(600)  # ignores its token

        g = corral.Group("stuck")
        g.spawn(stubborn, name="stubborn")
        assert started.wait(10)
        print("main returns", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main returns"]


def exit_seconds(proc: subprocess.CompletedProcess[str]) -> float:
    """Seconds from the script's last line ("main returns <monotonic>") to the end of
    the process (CLOCK_MONOTONIC is the same clock in every process of the host)."""
    ended = time.monotonic()
    last = [line for line in proc.stdout.splitlines() if line.startswith("main returns")][-1]
    return ended - float(last.split()[-1])


def test_no_thread_starts_at_exit() -> None:
    # Python 3.12+ refuses to start a thread once exit has begun: every program that
    # used corral.go() printed "Exception ignored in atexit callback ... can't create
    # new thread at interpreter shutdown", since the at-exit stop ran on a new thread.
    # Here every Python refuses (an at-exit hook that runs before corral's), and exit
    # stops a go() supervisor, a supervisor made in a task, and a task whose cleanup
    # sets a timer: nothing may start a thread, and everything is cleaned up.
    proc = run(
        """
        import atexit, sys, threading, time
        import corral

        up = threading.Semaphore(0)

        def out(line):
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()

        def worker(label):
            tok = corral.current_token()
            up.release()
            tok.wait()
            corral.Token(timeout=30)  # a timer, set at exit (the timer thread never ran)
            out(f"{label} cleanup, cause: {type(tok.cause).__name__}")

        def with_a_supervisor():
            inner = corral.Supervisor("inner", handle_signals=False)
            inner.spawn(worker, "inner-task")
            inner.start()
            inner.wait()

        def refuse_threads():
            def start(self):
                raise RuntimeError("can't create new thread at interpreter shutdown")
            threading.Thread.start = start

        assert corral.go(lambda: 1).result(10) == 1
        corral.go(worker, "go-task")
        g = corral.Group("loose")
        g.spawn(with_a_supervisor)
        for _ in range(2):
            assert up.acquire(timeout=10)
        atexit.register(refuse_threads)  # runs before corral's handler (registered first)
        out(f"main returns {time.monotonic()}")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert "can't create new thread" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert sorted(proc.stdout.splitlines()[1:]) == [
        "go-task cleanup, cause: Stopped",
        "inner-task cleanup, cause: Stopped",
    ]


@pytest.mark.parametrize("n", [5, 20])
def test_exit_with_stuck_tasks_waits_one_bound_in_all(n: int) -> None:
    # Regression: exit waited DEFAULT_STOP_TIMEOUT, then 1 s more for each stuck worker
    # (5 stuck tasks: 15 s; 20: 30 s). The bound is one for the process, and what it
    # abandons is named in one WARNING.
    proc = run(
        f"""
        import threading, time
        import corral
        import corral._supervisor as s

        s.DEFAULT_STOP_TIMEOUT = 1.0
        up = threading.Semaphore(0)

        def stubborn():
            up.release()
            threading.Event().wait(600)  # ignores its token

        for i in range({n}):
            corral.go(stubborn, name=f"stubborn-{{i}}")
        g = corral.Group("loose")
        g.spawn(stubborn, name="stubborn-in-a-group")
        for _ in range({n} + 1):
            assert up.acquire(timeout=10)
        print(f"main returns {{time.monotonic()}}", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert exit_seconds(proc) < 1.0 + 2.0, f"exit took {exit_seconds(proc):.1f}s"
    [warning] = [line for line in proc.stderr.splitlines() if "abandoning" in line]
    assert f"abandoning {n + 1} tasks still running" in warning
    # The first ten are named, the rest counted (20,000 stuck tasks must not make a
    # log line of megabytes).
    named = re.findall(r"'(stubborn[\w-]*)' \((supervisor 'corral.go'|group 'loose')\)", warning)
    assert len(named) == min(n + 1, 10)
    if n + 1 > 10:
        assert warning.endswith(f" and {n + 1 - 10} more")
    else:
        assert {name for name, _ in named} == {f"stubborn-{i}" for i in range(n)} | {
            "stubborn-in-a-group"
        }


def test_a_coroutine_that_swallows_cancellation_on_corrals_loop_is_waited_for_within_the_one_bound() -> None:
    # Regression: a corral.go() coroutine that swallows every cancellation kept exit
    # waiting for corral's loop thread (5 s), and then the supervisors' handler waited
    # the whole bound again for the same task (10 s): 15 s where the README says 10 in
    # all. The polite one beside it is cleaned up; the stubborn one is named once.
    proc = run(
        """
        import asyncio, sys, time
        import corral
        import corral._supervisor as s

        s.DEFAULT_STOP_TIMEOUT = 1.0

        def out(line):  # (one write per line: two threads print)
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()

        async def polite():
            try:
                await asyncio.sleep(600)
            finally:
                out("polite cleanup")

        async def stubborn():
            out("stubborn runs")
            while True:
                try:
                    await asyncio.sleep(600)
                except asyncio.CancelledError:
                    pass

        p = corral.go(polite, name="polite")
        t = corral.go(stubborn, name="stubborn")
        t.wait_ready(timeout=10)
        out(f"main returns {time.monotonic()}")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "stubborn runs" in proc.stdout
    assert "polite cleanup" in proc.stdout
    assert exit_seconds(proc) < 1.0 + 2.0, f"exit took {exit_seconds(proc):.1f}s"
    [warning] = [line for line in proc.stderr.splitlines() if "abandoning" in line]
    assert "abandoning 1 task still running" in warning
    assert "'stubborn' (supervisor 'corral.go')" in warning


def test_exit_after_a_given_up_stop_does_not_wait_again() -> None:
    # A second SIGTERM gave the stop up (serve() raised StopTimeout); the program then
    # returns. Exit used to wait out the whole bound again for the same stuck task.
    proc = run(
        """
        import os, signal, threading, time
        import corral

        started = threading.Event()

        def stubborn():
            started.set()
            threading.Event().wait(600)  # ignores its token

        def signal_twice():
            started.wait(10)
            os.kill(os.getpid(), signal.SIGTERM)  # stop
            time.sleep(0.2)  # (not "the same signal twice at once")
            os.kill(os.getpid(), signal.SIGTERM)  # give up

        sup = corral.Supervisor("svc")
        sup.spawn(stubborn, name="stubborn")
        threading.Thread(target=signal_twice, daemon=True).start()
        try:
            sup.serve()
        except corral.StopTimeout as e:
            print("StopTimeout", list(e.running), flush=True)
        print(f"main returns {time.monotonic()}", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "StopTimeout ['stubborn']"
    assert exit_seconds(proc) < 3.0, f"exit took {exit_seconds(proc):.1f}s"
