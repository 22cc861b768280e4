"""``python -m corral demo``: a small service under one supervisor, narrated.

Read it as an example. The supervisor runs:

- ``flaky``: fails on its first three attempts and is restarted with backoff
  (``restart=Restart.ON_FAILURE``), then stays connected;
- ``batch``: works through 30 items in a group that runs at most 3 at a time;
- ``db`` and ``web``: web ``needs`` db, so it starts only once db called
  ``corral.ready()``; on stop, web is cancelled (and has ended) before db;
- ``worker``: after a second, ``deploy`` replaces it with version 2
  (``replace=True``): version 1 ends with ``Replaced``, then version 2 starts;
- ``leader``: a singleton (``singleton=True``): it runs in one demo process at a time.
  Start two demos at once (in two terminals): one leads, the other campaigns; stop the
  leader (Ctrl-C) and the other takes over within a poll interval. The lease is a
  file lock in the per-user runtime directory, or what ``--coordinator`` /
  ``CORRAL_COORDINATOR`` name (a directory, or a ``redis://`` URL);
- ``printer``: prints the supervisor's tree whenever it changed (twice a second at most);
- ``timer``: stops the supervisor after ``--duration`` seconds.

Ctrl-C (SIGINT) or SIGTERM stops it sooner: the supervisor handles them itself.
Lifecycle hooks narrate what happens; a summary ends the run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

import corral

from ._tree import format_tree

__all__ = ["run_demo"]

BATCH_ITEMS = 30


class Narrator:
    """Prints timestamped lines (from any thread, whole lines only) and counts what
    the supervisor's hooks saw. Its methods are the hooks."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.tasks_run: set[corral.Task[Any]] = set()
        self.attempts = 0
        self.failed_attempts = 0
        self.restarts = 0
        self.items_processed = 0
        self.stop_reason: str | None = None  # set by whatever asks for the stop
        self.reader_gone = False
        self.fences: list[int] = []  # the leader's lease fences, one per time it led

    def write(self, text: str) -> None:
        with self._lock:
            if self.reader_gone:
                return
            try:
                self._out.write(text + "\n")
                self._out.flush()  # a pipe would otherwise hold the lines back
            except BrokenPipeError:
                # The reader went away (`python -m corral demo | head`): go quiet (the
                # printer then stops the demo), and point the output at /dev/null so
                # that the interpreter's last flush does not fail too.
                self.reader_gone = True
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._out.fileno())

    def say(self, name: str, what: str) -> None:
        self.write(f"{time.monotonic() - self._t0:6.2f}s  {name:<10} {what}")

    # -- hooks: each gets the Task handle (name, meta, state, attempts, ...) --------

    def on_started(self, task: corral.Task[Any]) -> None:
        with self._lock:
            self.tasks_run.add(task)
            self.attempts += 1
        self.say(who(task), "started" if task.attempts == 1 else f"started (attempt {task.attempts})")

    def on_failed(self, task: corral.Task[Any], exc: BaseException) -> None:
        with self._lock:
            self.failed_attempts += 1
        self.say(who(task), f"failed: {exc!r}")

    def on_restart(self, task: corral.Task[Any], delay: float) -> None:
        with self._lock:
            self.restarts += 1
        self.say(who(task), f"restarting in {delay:.2f}s (restart={task.restart})")

    def on_finished(self, task: corral.Task[Any]) -> None:
        # Runs once per task, when it has ended for good. (Do not call task.result()
        # here: it waits until the task is done, which is after this hook.)
        if task.state is corral.TaskState.CANCELLED:
            cause = task.token.cause  # why: corral.Stopped, corral.Replaced...
            how = f"cancelled ({type(cause).__name__}: {cause})"
        elif task.state is corral.TaskState.FAILED:
            how = f"failed for good: {task.last_error!r}"
        else:
            how = str(task.state)
        self.say(who(task), f"ended: {how}")

    def on_lease(self, task: corral.Task[Any], state: str, lease: corral.Lease | None) -> None:
        # A singleton's lease: campaigning -> holding -> released (or lost).
        if state == "campaigning":
            self.say(who(task), "campaigning for its lease (one process leads at a time)")
        elif lease is not None and state == "holding":
            with self._lock:
                self.fences.append(lease.fence)
            self.say(who(task), f"holding the lease: fence {lease.fence}, owner {lease.owner}")
        elif lease is not None:
            self.say(who(task), f"lease {state} (fence {lease.fence})")

    def hooks(self) -> corral.Hooks:
        return corral.Hooks(
            on_started=self.on_started,
            on_failed=self.on_failed,
            on_restart=self.on_restart,
            on_finished=self.on_finished,
            on_lease=self.on_lease,
        )


def who(task: corral.Task[Any]) -> str:
    """A task's name for the narration: ``worker v2`` for a task with a version."""
    version = task.meta.get("version")
    return task.name if version is None else f"{task.name} v{version}"


# -- the tasks -------------------------------------------------------------------------
# Each one checks its token: threads cannot be killed, so work stops by itself once
# corral.sleep() returns False (or corral.check() raises corral.Cancelled).


def flaky_upstream(narrator: Narrator) -> None:
    """Fails on its first three attempts, then stays connected until cancelled."""
    task = corral.current_task()
    assert task is not None
    if not corral.sleep(0.1):  # connecting... (False at once if the stop came first)
        return  # cancelled: not a failure
    if task.attempts <= 3:
        raise ConnectionError("upstream refused the connection")
    narrator.say(who(task), "connected")
    corral.current_token().wait()  # until the supervisor stops


def resize(image: int) -> int:
    """One item of the batch."""
    corral.sleep(0.08)  # the work; returns False at once if cancelled
    corral.check()  # raises corral.Cancelled if so
    return image


def batch(narrator: Narrator, n: int) -> int:
    """Resizes ``n`` images, at most 3 at a time, in a group of its own (a child of
    this task in the tree: the task does not end before the group has)."""
    done = 0
    with corral.Group("batch", limit=3) as group:
        for done, _ in enumerate(group.map(resize, range(n)), start=1):
            narrator.items_processed = done
            if done % 6 == 0 or done == n:
                narrator.say("batch", f"processed {done}/{n}")
    return done


def database(narrator: Narrator) -> None:
    """Connects, says it is ready (with a value others can read), then serves."""
    if not corral.sleep(0.3):  # connecting...
        return
    narrator.say("db", "ready")
    corral.ready("postgres://db.demo/app")  # releases the tasks that need "db"
    corral.current_token().wait()


def web_server(narrator: Narrator, db: corral.Task[None]) -> None:
    """Spawned with needs=("db",): it starts only once db is ready."""
    narrator.say("web", f"serving, using {db.wait_ready()}")
    corral.current_token().wait()


def worker(narrator: Narrator, version: int) -> None:
    """Handles jobs until cancelled (by the stop, or by its replacement)."""
    token = corral.current_token()
    while token.sleep(0.2):
        pass  # handle a job
    narrator.say(f"worker v{version}", f"stopping, cancelled by {token.cause!r}")


def leader(narrator: Narrator) -> None:
    """A singleton: runs only while this process holds the lease "corral-demo-leader".

    Before each side effect it checks the lease (a process paused past its lease
    finds out here); real code would also pass ``lease.fence`` to what it writes.
    """
    lease = corral.current_lease()
    assert lease is not None
    beats = 0
    while corral.sleep(1.0):  # False once cancelled: stop, or the lease was lost
        lease.check()
        beats += 1
        narrator.say("leader", f"leading (fence {lease.fence}), beat {beats}")


def deploy(sup: corral.Supervisor, narrator: Narrator) -> None:
    """After a second, replaces the worker: the old one is cancelled (cause
    corral.Replaced) and the new one starts once the old one has ended."""
    if not corral.sleep(1.0):
        return
    narrator.say("deploy", "spawning worker v2 with replace=True")
    try:
        sup.spawn(worker, narrator, 2, name="worker", meta={"version": 2}, replace=True)
    except corral.SupervisorStopped:
        pass  # the stop came first: nothing to deploy into


def print_tree(sup: corral.Supervisor, narrator: Narrator) -> None:
    """Prints the supervisor's tree whenever it changed, at most twice a second."""
    last = ""
    while True:
        if narrator.reader_gone:
            narrator.stop_reason = "the output was closed"
            sup.stop()
            return
        tree = format_tree(sup.snapshot())
        if tree != last:
            narrator.write(f"\n{tree}\n")
            last = tree
        if not corral.sleep(0.5):
            return


def timer(sup: corral.Supervisor, narrator: Narrator, seconds: float) -> None:
    """Stops the supervisor after ``seconds``."""
    if corral.sleep(seconds):
        narrator.stop_reason = f"--duration {seconds:g}s elapsed"
        narrator.say("timer", f"{seconds:g}s elapsed: sup.stop()")
        sup.stop()  # from one of its own tasks: starts the stop, does not wait for it


def _led(fences: list[int]) -> str:
    if not fences:
        return "never led (another process held the lease)"
    return "led with fence " + ", ".join(str(f) for f in fences)


# -- the service -----------------------------------------------------------------------


def run_demo(
    duration: float = 8.0,
    out: TextIO | None = None,
    coordinator: corral.Coordinator | str | None = None,
) -> int:
    """Run the demo for ``duration`` seconds (or until SIGINT/SIGTERM); 0 if it
    stopped cleanly with no task failed for good. ``coordinator`` holds the leader's
    lease (default: ``CORRAL_COORDINATOR``, else a file lock)."""
    narrator = Narrator(out if out is not None else sys.stdout)
    sup = corral.Supervisor("demo", hooks=narrator.hooks(), coordinator=coordinator)
    # Spawned before start(): queued, then started in this order by serve().
    sup.spawn(print_tree, sup, narrator, name="printer")
    sup.spawn(
        flaky_upstream, narrator, name="flaky",
        restart=corral.Restart.ON_FAILURE,
        backoff=corral.Backoff(initial=0.1, maximum=2.0, multiplier=2.0, jitter=0.1),
        max_restarts=(5, 10.0),  # more than 5 restarts in 10 s: it fails for good
    )
    sup.spawn(batch, narrator, BATCH_ITEMS, name="batch")
    db = sup.spawn(database, narrator, name="db", signals_ready=True)
    sup.spawn(web_server, narrator, db, name="web", needs=("db",))
    sup.spawn(worker, narrator, 1, name="worker", meta={"version": 1})
    sup.spawn(deploy, sup, narrator, name="deploy")
    sup.spawn(leader, narrator, name="corral-demo-leader", singleton=True,
              restart=corral.Restart.ON_FAILURE)
    sup.spawn(timer, sup, narrator, duration, name="timer")

    narrator.write(f"corral demo: a supervisor for {duration:g}s (Ctrl-C stops it sooner)\n")
    sup.serve()  # start, block until stopped (timer, SIGINT, SIGTERM), stop

    how = narrator.stop_reason or str(sup.token.cause)
    lost = sup.failures  # tasks that failed for good (restarted attempts are not here)
    narrator.write(
        "\nsummary\n"
        f"  tasks run:      {len(narrator.tasks_run)} ({narrator.attempts} attempts)"
        f", and {narrator.items_processed} batch items, 3 at a time\n"
        f"  restarts:       {narrator.restarts}\n"
        f"  leader:         {_led(narrator.fences)}\n"
        f"  failures seen:  {narrator.failed_attempts} failed attempts"
        f", {len(lost)} tasks failed for good\n"
        f"  stopped by:     {how}"
    )
    return 0 if not lost else 1
