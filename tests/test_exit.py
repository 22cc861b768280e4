"""Nothing is left running at interpreter exit: corral cancels what still runs, lets it
clean up (bounded), and the process ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
