"""SIGINT/SIGTERM handling, in real subprocesses.

Each test runs a small script with ``python -c``; the script prints an ordered log to
stdout (flushed line by line), sends the signal to itself once its tasks say they run,
and the test asserts the log, the exit code and stderr.

How the signal is sent matters. Python runs signal handlers in the main thread only, and
corral's ``serve()``/``wait()``/``stop()`` block the main thread in an untimed lock wait:
a signal whose C-level handler runs on another thread, or that arrives just as the main
thread enters the wait, leaves the main thread asleep and the handler never runs (see
``test_signal_landing_on_another_thread_still_stops_serve``, which shows that bug; with
``os.kill(os.getpid(), ...)`` from a helper thread about 1 run in 5 hung here). So while
the main thread is blocked in corral, the scripts wait until it sits in its wait and
send the signal to the main thread itself (``send()``: ``signal.pthread_kill``); when the
main thread sends it, they use ``os.kill(os.getpid(), ...)``, handled at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")

PRELUDE = """\
import os, signal, sys, threading
import corral

# Start from Python's usual dispositions whatever the launcher did: a shell running the
# suite as a background job (`cmd &`) makes children ignore SIGINT, and Python then does
# not install default_int_handler, which several of these scripts expect to find.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)

_out_lock = threading.Lock()

def out(*args):
    with _out_lock:
        sys.stdout.write(" ".join(map(str, args)) + "\\n")
        sys.stdout.flush()

PID = os.getpid()
MAIN = threading.main_thread().ident

def _main_in_wait():
    frame = sys._current_frames().get(MAIN)
    return frame is not None and frame.f_code.co_filename == threading.__file__ and (
        frame.f_code.co_name == "wait"
    )

def wait_main_blocked():
    # Return once the main thread sits in a threading wait (inside corral's serve/wait/
    # stop), seen twice 20 ms apart: a signal sent as it enters the wait could be lost.
    pause = threading.Event()
    for _ in range(2000):
        if _main_in_wait():
            pause.wait(0.02)
            if _main_in_wait():
                return
        pause.wait(0.005)
    raise RuntimeError("the main thread never blocked")

def send(sig, thread=MAIN):
    # Signal the main thread (blocked in corral) from another thread.
    wait_main_blocked()
    signal.pthread_kill(thread, sig)

def watchdog(seconds, what):
    # Exit with status 3 if the script is still running after `seconds`.
    def run():
        threading.Event().wait(seconds)
        out(f"watchdog: still {what} after {seconds}s")
        import faulthandler
        faulthandler.dump_traceback()
        os._exit(3)
    threading.Thread(target=run, daemon=True).start()
"""


def run(script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CORRAL_COORDINATOR", None)
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return proc.stdout.splitlines()


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc={proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def assert_clean_exit(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert "KeyboardInterrupt" not in proc.stderr, describe(proc)


# A supervisor with two workers that wait for their tokens, and a thread that sends
# SIG to the process once both run. {setup} runs before the supervisor is made.
SERVE_TWO_WORKERS = """
SIG = signal.{sig}
{setup}
sup = corral.Supervisor("svc")
running = [threading.Event(), threading.Event()]

def worker(i):
    tok = corral.current_token()
    running[i].set()
    tok.wait()
    out(f"worker {{i}} cancelled: {{type(tok.cause).__name__}}: {{tok.cause}}")

tasks = [sup.spawn(worker, i, name=f"w{{i}}") for i in range(2)]

def send_when_running():
    for ev in running:
        ev.wait(10)
    out("sending " + SIG.name)
    send(SIG)

threading.Thread(target=send_when_running, daemon=True).start()
watchdog(10, "serving")
sup.serve()
out("serve returned", sup.is_stopped, [t.state.value for t in tasks])
{after}
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_first_signal_stops_gracefully(sig: str) -> None:
    proc = run(SERVE_TWO_WORKERS.format(sig=sig, setup="", after="out('exit')"))
    assert_clean_exit(proc)
    out = lines(proc)
    assert out[0] == f"sending {sig}"
    assert sorted(out[1:3]) == [
        f"worker 0 cancelled: Stopped: received {sig}",
        f"worker 1 cancelled: Stopped: received {sig}",
    ]
    assert out[3:] == ["serve returned True ['cancelled', 'cancelled']", "exit"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_earlier_handler_is_chained_and_restored(sig: str) -> None:
    setup = """
calls = []
def earlier(signum, frame):
    calls.append(signum)
    out("earlier handler called with " + signal.Signals(signum).name)
signal.signal(SIG, earlier)
OTHER = signal.SIGINT if SIG == signal.SIGTERM else signal.SIGTERM
other_before = signal.getsignal(OTHER)
"""
    after = """
out("restored:", signal.getsignal(SIG) is earlier)
out("other restored:", signal.getsignal(OTHER) is other_before)
out("calls:", len(calls))
"""
    proc = run(SERVE_TWO_WORKERS.format(sig=sig, setup=setup, after=after))
    assert_clean_exit(proc)
    out = lines(proc)
    assert out[0] == f"sending {sig}"
    assert sorted(out[1:4]) == sorted([
        f"earlier handler called with {sig}",
        f"worker 0 cancelled: Stopped: received {sig}",
        f"worker 1 cancelled: Stopped: received {sig}",
    ])
    assert out[4:] == [
        "serve returned True ['cancelled', 'cancelled']", "restored: True", "other restored: True", "calls: 1",
    ]


@pytest.mark.parametrize(
    ("sig", "earlier"),
    [
        ("SIGTERM", "signal.SIG_IGN"),
        ("SIGTERM", "signal.SIG_DFL"),
        ("SIGINT", "signal.SIG_IGN"),
        ("SIGINT", "signal.SIG_DFL"),
        ("SIGINT", "signal.default_int_handler"),
    ],
)
def test_builtin_handlers_are_not_chained_but_restored(sig: str, earlier: str) -> None:
    # Not chained: SIG_DFL would kill the process, default_int_handler would raise
    # KeyboardInterrupt; the stop is graceful instead, and the handler comes back.
    setup = f"signal.signal(SIG, {earlier})\nEARLIER = {earlier}"
    after = "out('restored:', signal.getsignal(SIG) is EARLIER)"
    proc = run(SERVE_TWO_WORKERS.format(sig=sig, setup=setup, after=after))
    assert_clean_exit(proc)
    out = lines(proc)
    assert out[0] == f"sending {sig}"
    assert sorted(out[1:3]) == [
        f"worker 0 cancelled: Stopped: received {sig}",
        f"worker 1 cancelled: Stopped: received {sig}",
    ]
    assert out[3:] == ["serve returned True ['cancelled', 'cancelled']", "restored: True"]


def test_several_supervisors_all_stop_on_one_signal() -> None:
    script = """
    sups = [corral.Supervisor(f"s{i}") for i in range(3)]
    quiet = corral.Supervisor("quiet", handle_signals=False)
    running = threading.Semaphore(0)
    def worker(name):
        tok = corral.current_token()
        running.release()
        tok.wait()
        out(f"{name} cancelled: {type(tok.cause).__name__}")
    for s in [*sups, quiet]:
        s.spawn(worker, s.name)
        s.start()
    for _ in range(4):
        assert running.acquire(timeout=10)
    watchdog(10, "waiting")
    os.kill(PID, signal.SIGTERM)
    for s in sups:
        s.wait()
    out("stopped:", [s.is_stopped for s in sups], "quiet running:", quiet.is_running)
    quiet.stop()
    out("handler restored:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """
    proc = run(script)
    assert_clean_exit(proc)
    out = lines(proc)
    assert sorted(out[:3]) == [f"s{i} cancelled: Stopped" for i in range(3)]
    assert out[3:] == [
        "stopped: [True, True, True] quiet running: True",
        "quiet cancelled: Stopped",
        "handler restored: True",
    ]


# The task cleans up slowly (it ignores further cancellation until released); a second
# signal while it does so makes the blocked call give up at once.
SECOND_SIGNAL = """
SIG = signal.{sig}
sup = corral.Supervisor("svc")
running = threading.Event()
saw_cancel = threading.Event()
release = threading.Event()

def stubborn_cleanup():
    tok = corral.current_token()
    running.set()
    tok.wait()
    out("task saw cancel")
    saw_cancel.set()
    release.wait(20)
    out("task done")

sup.spawn(stubborn_cleanup, name="stubborn")

def signaller():
    running.wait(10)
    if {first}:
        out("first signal")
        send(SIG)
    saw_cancel.wait(10)
    out("second signal" if {first} else "signal while stopping")
    send(SIG)

threading.Thread(target=signaller, daemon=True).start()
watchdog(10, "blocked")
try:
    {call}
    out("returned normally")
except corral.StopTimeout as e:
    out("StopTimeout:", sorted(e.running))
    out("stack shows the task:", "stubborn_cleanup" in e.running["stubborn"])
    out("message names it:", "'stubborn'" in str(e))
release.set()
sup.join(10)
sup.wait()
out("stopped:", sup.is_stopped)
out("restored:", signal.getsignal(SIG) is {default})
"""


@pytest.mark.parametrize(
    ("call", "first"),
    [
        ("sup.serve()", True),
        ("sup.start(); sup.wait()", True),
        ("sup.start(); running.wait(10); sup.stop()", False),
    ],
)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_second_signal_while_stopping_gives_up_waiting(sig: str, call: str, first: bool) -> None:
    default = "signal.SIG_DFL" if sig == "SIGTERM" else "signal.default_int_handler"
    proc = run(SECOND_SIGNAL.format(sig=sig, call=call, first=first, default=default))
    assert_clean_exit(proc)
    expected = [
        *(["first signal"] if first else []),
        "task saw cancel",
        "second signal" if first else "signal while stopping",
        "StopTimeout: ['stubborn']",
        "stack shows the task: True",
        "message names it: True",
        "task done",
        "stopped: True",
        "restored: True",
    ]
    assert lines(proc) == expected, describe(proc)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_after_a_stop_from_another_thread_does_what_it_did_before(sig: str) -> None:
    # The supervisor was stopped from a thread other than the main one, so its handler
    # could not be put back then; the signal must still do what it did before corral
    # (SIGTERM: terminate the process; SIGINT: KeyboardInterrupt), not be swallowed.
    script = f"""
    sup = corral.Supervisor("svc")
    sup.start()
    t = threading.Thread(target=sup.stop)
    t.start()
    t.join()
    out("stopped from another thread")
    try:
        os.kill(PID, signal.{sig})
        threading.Event().wait(3)
        out("survived {sig}")
    except KeyboardInterrupt:
        out("KeyboardInterrupt")
    """
    proc = run(script)
    if sig == "SIGTERM":
        assert lines(proc) == ["stopped from another thread"], describe(proc)
        assert proc.returncode == -signal.SIGTERM, describe(proc)
    else:
        assert lines(proc) == ["stopped from another thread", "KeyboardInterrupt"], describe(proc)
        assert proc.returncode == 0, describe(proc)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_landing_on_another_thread_still_stops_serve(sig: str) -> None:
    # A process-directed signal (kill <pid>, os.kill) is delivered by the kernel to any
    # thread that does not block it, not always the main one. Python then runs the
    # handler in the main thread the next time it runs bytecode; if the main thread sits
    # in an untimed lock wait (serve() -> wait()), that never happens, and the signal is
    # lost. Here the signal lands on the task's thread, as it may for kill <pid>
    # (os.kill from a helper thread loses it in about 1 run in 5 on this machine).
    script = f"""
    SIG = signal.{sig}
    sup = corral.Supervisor("svc")

    def worker():
        tok = corral.current_token()
        send(SIG, threading.get_ident())  # lands on this thread, not the main one
        out("signal sent")
        tok.wait()
        out("worker cancelled: " + type(tok.cause).__name__)

    sup.spawn(worker, name="worker")
    watchdog(3, "serving: the signal was lost")
    sup.serve()
    out("serve returned")
    """
    proc = run(script)
    assert lines(proc) == ["signal sent", "worker cancelled: Stopped", "serve returned"], (
        describe(proc)
    )
    assert_clean_exit(proc)


# -- corral.go() -----------------------------------------------------------------------------

GO_THREE = """
SIG = signal.{sig}
running = [threading.Event() for _ in range(3)]

def routine(i):
    tok = corral.current_token()
    running[i].set()
    tok.wait()
    out(f"routine {{i}} cancelled: {{type(tok.cause).__name__}}")
    out(f"routine {{i}} cleaned up")

tasks = [corral.go(routine, i, name=f"r{{i}}") for i in range(3)]
for ev in running:
    ev.wait(10)
out("sending " + SIG.name)
try:
    os.kill(PID, SIG)
    threading.Event().wait(10)
    out("no KeyboardInterrupt")
except KeyboardInterrupt:
    out("KeyboardInterrupt in main:", [t.state.value for t in tasks])
out("end of main")
"""


def test_go_sigint_cancels_and_waits_then_raises_keyboard_interrupt() -> None:
    proc = run(GO_THREE.format(sig="SIGINT"))
    assert_clean_exit(proc)
    out = lines(proc)
    assert out[0] == "sending SIGINT"
    body = out[1:7]
    for i in range(3):
        assert body.index(f"routine {i} cancelled: Stopped") < body.index(f"routine {i} cleaned up")
    assert sorted(body) == sorted(
        [f"routine {i} cancelled: Stopped" for i in range(3)]
        + [f"routine {i} cleaned up" for i in range(3)]
    )
    assert out[7:] == [
        "KeyboardInterrupt in main: ['cancelled', 'cancelled', 'cancelled']",
        "end of main",
    ]


def test_go_sigterm_cancels_and_waits_then_dies_of_sigterm() -> None:
    proc = run(GO_THREE.format(sig="SIGTERM"))
    assert proc.returncode == -signal.SIGTERM, describe(proc)
    out = lines(proc)
    assert out[0] == "sending SIGTERM"
    assert sorted(out[1:]) == sorted(
        [f"routine {i} cancelled: Stopped" for i in range(3)]
        + [f"routine {i} cleaned up" for i in range(3)]
    ), describe(proc)


def test_go_sigint_with_a_user_handler_chains_to_it_after_waiting() -> None:
    # Without corral, SIGINT would call the user's handler: with go()'s supervisor, the
    # tasks are cancelled and waited for first, then that handler is called.
    script = """
    def mine(signum, frame):
        out("user handler called; tasks:", [t.state.value for t in tasks])
    signal.signal(signal.SIGINT, mine)
    running = threading.Event()
    def routine():
        tok = corral.current_token()
        running.set()
        tok.wait()
        out("routine cancelled")
    tasks = [corral.go(routine)]
    running.wait(10)
    os.kill(PID, signal.SIGINT)
    out("main goes on")
    """
    proc = run(script)
    assert_clean_exit(proc)
    assert lines(proc) == [
        "routine cancelled", "user handler called; tasks: ['cancelled']", "main goes on",
    ]


# -- an interrupt while a plain group's join waits -----------------------------------------


@pytest.mark.parametrize("how", ["with", "join"])
@pytest.mark.parametrize("interrupt", ["KeyboardInterrupt", "SystemExit"])
def test_an_interrupt_while_a_group_joins_cancels_and_waits_for_its_tasks(
    how: str, interrupt: str
) -> None:
    # Ctrl-C while `with corral.Group()` waited at its end (or in join()) came out at
    # once: the tasks ran on, unaware, and the group stayed open (its tasks were
    # cancelled only at interpreter exit, "interpreter exit"). Now the group is
    # cancelled with the interrupt as its cause, its tasks are waited for, and then the
    # interrupt is raised, as for one raised in the with-block.
    proc = run(
        f"""
        if "{interrupt}" == "SystemExit":  # (a handler that exits, as services write)
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
            SIG = signal.SIGTERM
        else:
            SIG = signal.SIGINT
        up = threading.Semaphore(0)

        def worker(i):
            tok = corral.current_token()
            up.release()
            tok.wait()
            out(f"worker {{i}} cancelled: {{type(tok.cause).__name__}}")

        def send_when_up():
            for _ in range(2):
                up.acquire(timeout=10)
            send(SIG)

        threading.Thread(target=send_when_up, daemon=True).start()
        watchdog(10, "joining")
        g = corral.Group("batch")
        try:
            if "{how}" == "with":
                with g:
                    tasks = [g.spawn(worker, i) for i in range(2)]
            else:
                tasks = [g.spawn(worker, i) for i in range(2)]
                g.join()
        except {interrupt}:
            out("raised {interrupt}; closed:", g.closed, [t.state.value for t in tasks])
        """
    )
    assert proc.returncode == 0, describe(proc)
    out = lines(proc)
    assert sorted(out[:2]) == [f"worker {i} cancelled: {interrupt}" for i in range(2)], describe(proc)
    assert out[2:] == [f"raised {interrupt}; closed: True ['cancelled', 'cancelled']"], describe(proc)


def test_a_second_interrupt_while_the_group_waits_for_its_cancelled_tasks_stops_the_wait() -> None:
    proc = run(
        """
        release = threading.Event()
        up = threading.Event()

        def stubborn():
            up.set()
            release.wait(10)  # ignores its token until released
            out("stubborn ends, cancelled:", corral.current_token().cancelled)

        def interrupt_twice():
            up.wait(10)
            send(signal.SIGINT)  # the first: the group is cancelled; join waits on
            send(signal.SIGINT)  # the second: join stops waiting

        threading.Thread(target=interrupt_twice, daemon=True).start()
        watchdog(10, "joining")
        g = corral.Group("batch")
        t = g.spawn(stubborn)
        try:
            g.join()
        except KeyboardInterrupt:
            out("second interrupt out; closed:", g.closed, t.state.value)
        release.set()
        g.join()
        out("joined after release; closed:", g.closed, t.state.value)
        """
    )
    assert proc.returncode == 0, describe(proc)
    assert lines(proc) == [
        "second interrupt out; closed: False running",
        "stubborn ends, cancelled: True",
        "joined after release; closed: True cancelled",
    ], describe(proc)
