"""A forked child (``os.fork``, multiprocessing's ``fork`` start method) starts corral
afresh: its tasks run, what it inherited from the parent is the parent's (closed in the
child, joins return at once), and it exits promptly. Each case runs in a fresh
interpreter, which forks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

PRELUDE = """
import os, signal, sys, threading, time, warnings
# Python 3.12+ warns that forking a process with threads may deadlock the child: what
# these tests check is that corral's part of the child does not.
warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork")
import corral

def loop():
    started.release()
    while corral.sleep(10):
        pass

started = threading.Semaphore(0)
"""


def run(script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
        stdin=subprocess.DEVNULL,
    )


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_a_forked_child_runs_tasks_and_ends_what_it_inherited() -> None:
    # Before: in the child, the pool's workers did not exist (no task ran), an inherited
    # group's join waited for tasks whose threads did not exist, and exit waited 10 s
    # for the inherited supervisors.
    proc = run(
        """
        sup = corral.Supervisor("svc")  # main thread: it handles SIGINT/SIGTERM
        sup.spawn(loop, name="sup-loop")
        sup.start()
        g = corral.Group("plain")
        in_group = g.spawn(loop, name="group-loop")
        [in_sup] = sup.tasks
        assert corral.go(lambda: "warm", name="warm").result(10) == "warm"
        for _ in range(2):
            assert started.acquire(timeout=10)

        r, w = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a backstop: a hung child dies
            os.close(r)
            out = os.fdopen(w, "w")
            def say(*args):
                print(*args, file=out, flush=True)
            t1 = time.monotonic()
            g.join(10)
            say("joined the inherited group", time.monotonic() - t1 < 1)
            for t in (in_group, in_sup):
                say(t.name, t.state.name, type(t.cause).__name__, "forked" in str(t.cause))
            say("roots", corral.roots())
            try:
                sup.spawn(loop)
            except corral.SupervisorStopped:
                say("inherited supervisor takes no task")
            try:
                g.spawn(loop)
            except corral.GroupClosed:
                say("inherited group takes no task")
            say("go", corral.go(os.getpid).result(10) == os.getpid())
            with corral.Group("child") as g2:
                t = g2.spawn(os.getpid)
            say("task", t.result() == os.getpid())
            sup.stop(10)
            say("stop of the inherited supervisor returns")
            out.close()
            sys.exit(0)  # a normal exit: corral's at-exit handler runs
        os.close(w)
        child = os.fdopen(r).read().splitlines()
        _, status = os.waitpid(pid, 0)
        elapsed = time.monotonic() - t0
        for line in child:
            print(line)
        print("child exit", os.waitstatus_to_exitcode(status), "in under 3 s:", elapsed < 3)
        print("parent's tasks", in_group.state.name, in_sup.state.name, in_sup.token.cancelled)
        g.cancel()
        g.join(10)
        sup.stop(10)
        """
    )
    assert lines(proc) == [
        "joined the inherited group True",
        "group-loop CANCELLED Cancelled True",
        "sup-loop CANCELLED Cancelled True",
        "roots []",
        "inherited supervisor takes no task",
        "inherited group takes no task",
        "go True",
        "task True",
        "stop of the inherited supervisor returns",
        "child exit 0 in under 3 s: True",
        "parent's tasks RUNNING RUNNING False",
    ], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_multiprocessing_fork_child_runs_tasks_and_exits_promptly() -> None:
    proc = run(
        """
        import multiprocessing

        sup = corral.Supervisor("svc", handle_signals=False)
        sup.spawn(loop, name="sup-loop")
        sup.start()
        g = corral.Group("plain")
        g.spawn(loop, name="group-loop")
        for _ in range(2):
            assert started.acquire(timeout=10)

        def child(q):
            t0 = time.monotonic()
            g.join(10)
            q.put(f"joined: {time.monotonic() - t0 < 1}")
            with corral.Group("child") as g2:
                t = g2.spawn(os.getpid)
            q.put(f"task ran in the child: {t.result() == os.getpid()}")
            q.put(f"go: {corral.go(lambda: 7).result(10)}")

        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        t0 = time.monotonic()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        for _ in range(3):
            print(q.get(timeout=10))
        p.join(10)
        print("exit", p.exitcode, "in under 3 s:", time.monotonic() - t0 < 3)
        g.cancel()
        g.join(10)
        sup.stop(10)
        """
    )
    assert lines(proc) == [
        "joined: True",
        "task ran in the child: True",
        "go: 7",
        "exit 0 in under 3 s: True",
    ], proc.stderr


def test_a_child_forked_from_a_task_is_not_that_task() -> None:
    proc = run(
        """
        def forker():
            pid = os.fork()
            if pid == 0:
                code = 3
                try:
                    signal.alarm(20)
                    if corral.current_task() is None and not corral.cancelled():
                        code = 0 if corral.go(lambda: 5).result(10) == 5 else 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        with corral.Group("g") as g:
            t = g.spawn(forker)
        print("child exit", t.result())
        """
    )
    assert lines(proc) == ["child exit 0"], proc.stderr


def test_locks_held_by_other_threads_at_the_fork_do_not_hang_the_child() -> None:
    # A thread of the parent holds corral's process-wide locks at the moment of the
    # fork: in the child that thread does not exist, and neither do the timer thread's
    # nor the pool's. Timers the parent scheduled (a token's deadline) still fire.
    proc = run(
        """
        from corral import _clock, _links, _pool, _signals

        deadline = corral.Token(timeout=0.2)
        hold = threading.Event()
        held = threading.Event()

        def holder():
            with _pool.get_pool()._lock, _links._roots_lock, _signals._lock, \\
                    _clock.SYSTEM_CLOCK._cond:
                held.set()
                hold.wait(30)

        threading.Thread(target=holder, daemon=True).start()
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                signal.alarm(20)  # a hung child dies
                with corral.Group("child") as g:
                    t = g.spawn(lambda: "ran")
                s = corral.Supervisor("child-sup")
                s.start()
                s.stop(10)
                expired = deadline.wait(10)
                code = 0 if (t.result(), expired) == ("ran", True) else 1
            finally:
                os._exit(code)
        hold.set()
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        """
    )
    assert lines(proc) == ["child exit 0"], proc.stderr


def test_the_parents_supervisors_do_not_catch_the_childs_signals() -> None:
    # The parent's supervisor installed corral's SIGTERM handler; in the child it routed
    # the signal to a dispatcher thread that does not exist there: SIGTERM was lost.
    proc = run(
        """
        sup = corral.Supervisor("svc")  # main thread: it handles SIGINT/SIGTERM
        sup.spawn(loop, name="loop")
        sup.start()
        assert started.acquire(timeout=10)
        pid = os.fork()
        if pid == 0:
            try:
                signal.alarm(20)
                if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                    os.kill(os.getpid(), signal.SIGTERM)  # ends the child here
                    time.sleep(10)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        sup.stop(10)
        """
    )
    assert lines(proc) == [f"child exit {-15}"], proc.stderr
