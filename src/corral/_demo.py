"""``python -m corral demo``: a small service under one supervisor, narrated.

Read it as an example. The supervisor runs:

- ``flaky``: fails on its first three attempts and is restarted with backoff
  (``restart=Restart.ON_FAILURE``), then stays connected;
- ``batch``: works through 30 items in a group that runs at most 3 at a time;
- ``db`` and ``web``: web ``needs`` db, so it starts only once db called
  ``corral.ready()``; on stop, web is cancelled (and has ended) before db. web is a
  coroutine (``async def``), on corral's loop thread, beside the thread tasks;
- ``worker``: handles a job every 0.2 s; after a second, ``deploy`` replaces version 1
  with version 2 (``replace=True``): v1 ends with ``Replaced``, then v2 starts;
- ``demo-leader``: a singleton (``singleton=True``): it runs in one demo process at a
  time. Start two demos at once (in two terminals): one leads, the other campaigns
  and says who leads; stop the leader (Ctrl-C) and the other takes over within a poll
  interval. The lease is a file lock in the per-user runtime directory, or what
  ``--coordinator`` / ``CORRAL_COORDINATOR`` name (a directory, or a ``redis://`` URL:
  then with a ttl of 2 s, so that a new lease name is granted within the run);
- ``printer``: prints the supervisor's tree whenever it changed (twice a second at
  most), and while the leader campaigns, who holds its lease (once a second);
- ``timer``: stops the supervisor after ``--duration`` seconds.

Ctrl-C (SIGINT) or SIGTERM stops it sooner: the supervisor handles them itself.
Lifecycle hooks narrate what happens, one line per event, each task under its name;
a summary ends the run. Every line fits 80 columns.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import corral

from ._tree import format_tree

__all__ = ["demo_coordinator", "run_demo"]

BATCH_ITEMS = 30
LEADER = "demo-leader"  # the singleton's name, and so its lease's name
WIDTH = 80  # every line printed fits this many columns
NAME_WIDTH = len(LEADER)  # the longest task name: the narration's name column
FENCE_DIGITS = 4  # fences are microsecond timestamps: show their last digits
# On Redis the first grant of a lease name waits one ttl (corral cannot tell a new name
# from one whose data was lost), so the default ttl (10 s) would outlast the demo.
REDIS_TTL = 2.0
REDIS_SCHEMES = ("redis", "rediss", "unix")


def short_fence(fence: int) -> str:
    """A fence as the demo prints it: its last digits (``..7312``)."""
    text = str(fence)
    return text if len(text) <= FENCE_DIGITS else ".." + text[-FENCE_DIGITS:]


def why(cause: BaseException | None, room: int) -> str:
    """A cancellation cause in at most ``room`` characters: ``Type: message``, or
    just the type if the message does not fit."""
    if cause is None:
        return "no cause"
    name = type(cause).__name__
    text = f"{name}: {cause}"
    return text if len(text) <= room else name


class Narrator:
    """Prints timestamped lines (from any thread, whole lines only, each cut to
    ``WIDTH`` columns) and counts what the supervisor's hooks saw. Its methods are
    the hooks."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.tasks_run: set[corral.Task[Any]] = set()
        self.attempts = 0
        self.failed_attempts = 0
        self.restarts = 0  # restarts that happened (a new attempt started)
        self.restarts_cancelled = 0  # restarts announced, then cancelled in backoff
        self._restart_due: set[corral.Task[Any]] = set()
        self.items_processed = 0
        self.stop_reason: str | None = None  # set by whatever asks for the stop
        self.stop_cause: corral.Stopped | None = None  # the first graceful stop seen
        self.reader_gone = False
        self.fences: list[int] = []  # the leader's lease fences, one per time it led
        self.campaigning_since: float | None = None  # when our leader began to wait
        self.holder: str | None = None  # who held the lease while ours waited

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def write(self, text: str) -> None:
        lines = [x if len(x) <= WIDTH else x[: WIDTH - 3] + "..." for x in text.split("\n")]
        with self._lock:
            if self.reader_gone:
                return
            try:
                self._out.write("\n".join(lines) + "\n")
                self._out.flush()  # a pipe would otherwise hold the lines back
            except BrokenPipeError:
                # The reader went away (`python -m corral demo | head`): go quiet (the
                # printer then stops the demo), and point the output at /dev/null so
                # that the interpreter's last flush does not fail too.
                self.reader_gone = True
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._out.fileno())

    def say(self, name: str, what: str) -> None:
        """One line about ``name`` (a task's name, always the same for one task)."""
        self.write(f"{self.elapsed():6.2f}s  {name:<{NAME_WIDTH}} {what}")

    def tell(self, task: corral.Task[Any], what: str) -> None:
        """One line about ``task``, under its name; a task with a version (the two
        workers share a name) says which one it is first: ``worker      v2 started``."""
        version = task.meta.get("version")
        self.say(task.name, what if version is None else f"v{version} {what}")

    # -- hooks: each gets the Task handle (name, meta, state, attempts, ...) --------

    def on_started(self, task: corral.Task[Any]) -> None:
        with self._lock:
            self.tasks_run.add(task)
            self.attempts += 1
            if task in self._restart_due:  # the restart announced by on_restart
                self._restart_due.discard(task)
                self.restarts += 1
        self.tell(task, "started" if task.attempts == 1 else f"started (attempt {task.attempts})")

    def on_failed(self, task: corral.Task[Any], exc: BaseException) -> None:
        with self._lock:
            self.failed_attempts += 1
        self.tell(task, f"failed: {exc!r}")

    def on_restart(self, task: corral.Task[Any], delay: float) -> None:
        # Announces a restart after `delay`; a stop during the delay cancels it, so it
        # counts once the new attempt starts.
        with self._lock:
            self._restart_due.add(task)
        self.tell(task, f"restarting in {delay:.2f}s (restart={task.restart})")

    def on_finished(self, task: corral.Task[Any]) -> None:
        # Runs once per task, when it has ended for good (task.result() would return
        # at once here, or raise the task's error).
        with self._lock:
            if task in self._restart_due:  # cancelled while it waited to restart
                self._restart_due.discard(task)
                self.restarts_cancelled += 1
        if task.state is corral.TaskState.CANCELLED:
            # task.cause: why (corral.Stopped, corral.Replaced...), whatever state the
            # task was in, running or waiting to restart.
            cause = task.cause
            if isinstance(cause, corral.Stopped) and self.stop_cause is None:
                self.stop_cause = cause
            how = f"cancelled ({why(cause, 34)})"
        elif task.state is corral.TaskState.FAILED:
            how = f"failed for good: {task.last_error!r}"
        else:
            how = str(task.state)
        self.tell(task, f"ended: {how}")

    def on_lease(self, task: corral.Task[Any], state: str, lease: corral.Lease | None) -> None:
        # A singleton's lease: campaigning -> holding -> released (or lost).
        if state == "campaigning":
            with self._lock:
                self.campaigning_since = self.elapsed()
            self.tell(task, "campaigning for its lease (one process leads at a time)")
        elif lease is not None and state == "holding":
            with self._lock:
                self.campaigning_since = None
                self.fences.append(lease.fence)
            self.tell(task, f"holding the lease: fence {lease.fence} (shown as {short_fence(lease.fence)})")
        elif lease is not None:
            self.tell(task, f"lease {state} (fence {short_fence(lease.fence)})")

    def hooks(self) -> corral.Hooks:
        return corral.Hooks(
            on_started=self.on_started,
            on_failed=self.on_failed,
            on_restart=self.on_restart,
            on_finished=self.on_finished,
            on_lease=self.on_lease,
        )


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
        raise ConnectionError("refused")
    narrator.tell(task, "connected")
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


async def web_server(narrator: Narrator, db: corral.Task[None]) -> None:
    """A coroutine (``async def``): an asyncio task, here on corral's own loop thread
    (nothing runs a loop where it was spawned). Spawned with needs=("db",), a thread
    task: it starts only once db is ready. Cancelled, it meets CancelledError."""
    where = threading.current_thread().name
    narrator.say("web", f"coroutine on {where}: serving {db.wait_ready()}")
    await asyncio.Event().wait()  # until the stop cancels it


def worker(narrator: Narrator) -> None:
    """Handles a job every 0.2 s until cancelled (by the stop, or by its replacement)."""
    task = corral.current_task()
    assert task is not None
    token = corral.current_token()
    jobs = 0
    while token.sleep(0.2):
        jobs += 1  # handle a job
        if jobs % 10 == 0:
            narrator.tell(task, f"handled {jobs} jobs")
    narrator.tell(task, f"stopping after {jobs} jobs: cancelled by {type(token.cause).__name__}")


def leader(narrator: Narrator) -> None:
    """A singleton: runs only while this process holds the lease named ``LEADER``.

    Before each side effect it checks the lease (a process paused past its lease
    finds out here); real code would also pass ``lease.fence`` to what it writes.
    """
    lease = corral.current_lease()
    assert lease is not None
    beats = 0
    while corral.sleep(1.0):  # False once cancelled: stop, or the lease was lost
        lease.check()
        beats += 1
        narrator.say(LEADER, f"leading (fence {short_fence(lease.fence)}), beat {beats}")


def deploy(sup: corral.Supervisor, narrator: Narrator) -> None:
    """After a second, replaces the worker: the old one is cancelled (cause
    corral.Replaced) and the new one starts once the old one has ended."""
    if not corral.sleep(1.0):
        return
    narrator.say("deploy", "spawning worker v2 with replace=True")
    try:
        sup.spawn(worker, narrator, name="worker", meta={"version": 2}, replace=True)
    except corral.SupervisorStopped:
        pass  # the stop came first: nothing to deploy into


def report_leader(sup: corral.Supervisor, narrator: Narrator, leases: corral.Coordinator) -> None:
    """While our leader campaigns, say who holds its lease (once a second)."""
    task = sup.get(LEADER)
    since = narrator.campaigning_since
    if task is None or task.lease_state != "campaigning" or since is None:
        return
    if narrator.elapsed() - since < 1.0:
        return
    narrator.campaigning_since = narrator.elapsed()  # the next report in a second
    try:
        holder = leases.observe(LEADER)  # a Lease without its secret, or None
    except corral.CoordinatorError as e:
        narrator.say(LEADER, f"waiting; cannot ask who leads: {e}")
        return
    if holder is not None:
        narrator.holder = holder.owner
        narrator.say(LEADER, f"waiting: {holder.owner} leads (fence {short_fence(holder.fence)})")
    elif isinstance(leases, corral.RedisCoordinator):
        narrator.say(LEADER, f"waiting: a new name's first lease waits one ttl ({leases.ttl:g}s)")
    else:
        narrator.say(LEADER, "waiting: nobody holds the lease (taking it)")


def print_tree(sup: corral.Supervisor, narrator: Narrator, leases: corral.Coordinator) -> None:
    """Prints the supervisor's tree whenever it changed, at most twice a second, and
    while the leader campaigns, who holds its lease."""
    last = ""
    while True:
        if narrator.reader_gone:
            narrator.stop_reason = "the output was closed"
            sup.stop()
            return
        tree = format_tree(short_fences(sup.snapshot()))
        if tree != last:
            narrator.write(f"\n{tree}\n")
            last = tree
        report_leader(sup, narrator, leases)
        if not corral.sleep(0.5):
            return


def short_fences(group: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a snapshot with each lease's fence shortened (for the tree)."""
    tasks = []
    for task in group.get("tasks") or ():
        task = dict(task)
        lease = task.get("lease")
        if lease and lease.get("fence") is not None:
            task["lease"] = {**lease, "fence": short_fence(lease["fence"])}
        task["children"] = [short_fences(child) for child in task.get("children") or ()]
        tasks.append(task)
    return {**group, "tasks": tasks}


def timer(sup: corral.Supervisor, narrator: Narrator, seconds: float) -> None:
    """Stops the supervisor after ``seconds``."""
    if corral.sleep(seconds):
        narrator.stop_reason = f"--duration {seconds:g}s elapsed"
        narrator.say("timer", f"{seconds:g}s elapsed: sup.stop()")
        sup.stop()  # from one of its own tasks: starts the stop, does not wait for it


def _led(narrator: Narrator) -> str:
    if narrator.fences:
        return "led with fence " + ", ".join(short_fence(f) for f in narrator.fences)
    if narrator.holder is not None:
        return f"never led: {narrator.holder} held the lease"
    return "never led (stopped while it campaigned)"


# -- the service -----------------------------------------------------------------------


def demo_coordinator(spec: str | None = None) -> corral.Coordinator:
    """Where the leader's lease lives: ``spec``, else ``$CORRAL_COORDINATOR``, names
    a directory (file locks, one host) or a ``redis://`` URL; else file locks in the
    per-user runtime directory. On Redis the ttl is ``REDIS_TTL`` (see there)."""
    spec = spec or os.environ.get("CORRAL_COORDINATOR", "").strip() or None
    if spec is None:
        return corral.FileCoordinator()
    scheme, sep, _ = spec.partition("://")
    if not sep:
        return corral.FileCoordinator(spec)
    if scheme.lower() in REDIS_SCHEMES:
        return corral.RedisCoordinator(spec, ttl=REDIS_TTL)
    raise ValueError(
        f"unknown coordinator URL scheme {scheme!r} in {spec!r}: use redis://, rediss:// "
        "or unix:// (Redis), or a directory path (file locks)"
    )


def run_demo(
    duration: float = 8.0,
    out: TextIO | None = None,
    coordinator: corral.Coordinator | str | None = None,
) -> int:
    """Run the demo for ``duration`` seconds (or until SIGINT/SIGTERM); 0 if it
    stopped cleanly with no task failed for good. ``coordinator`` holds the leader's
    lease (a Coordinator, or a spec for :func:`demo_coordinator`)."""
    narrator = Narrator(out if out is not None else sys.stdout)
    if isinstance(coordinator, corral.Coordinator):
        leases, ours = coordinator, False
    else:
        leases, ours = demo_coordinator(coordinator), True
    try:
        return _serve(duration, narrator, leases)
    finally:
        if ours:
            leases.close()  # (Redis: its connections)


def _serve(duration: float, narrator: Narrator, leases: corral.Coordinator) -> int:
    sup = corral.Supervisor("demo", hooks=narrator.hooks(), coordinator=leases)
    # Spawned before start(): queued, then started in this order by serve().
    sup.spawn(print_tree, sup, narrator, leases, name="printer")
    sup.spawn(
        flaky_upstream, narrator, name="flaky",
        restart=corral.Restart.ON_FAILURE,
        backoff=corral.Backoff(initial=0.1, maximum=2.0, multiplier=2.0, jitter=0.1),
        max_restarts=(5, 10.0),  # more than 5 restarts in 10 s: it fails for good
    )
    sup.spawn(batch, narrator, BATCH_ITEMS, name="batch")
    db = sup.spawn(database, narrator, name="db", signals_ready=True)
    sup.spawn(web_server, narrator, db, name="web", needs=("db",))
    sup.spawn(worker, narrator, name="worker", meta={"version": 1})
    sup.spawn(deploy, sup, narrator, name="deploy")
    sup.spawn(leader, narrator, name=LEADER, singleton=True, restart=corral.Restart.ON_FAILURE)
    sup.spawn(timer, sup, narrator, duration, name="timer")

    ttl = f", ttl {leases.ttl:g}s" if leases.ttl is not None else ""
    narrator.write(
        f"corral demo: a supervisor for {duration:g}s (Ctrl-C stops it sooner)\n"
        f"this process: {platform.node()}:{os.getpid()}\n"
        f"{LEADER}'s lease: {leases.describe()}{ttl}\n"
        f"fences are shown by their last {FENCE_DIGITS} digits (..1234)\n"
    )
    gave_up = False
    try:
        sup.serve()  # start, block until stopped (timer, SIGINT, SIGTERM), stop
    except corral.StopTimeout as e:
        # A second SIGINT/SIGTERM while stopping: serve() stops waiting for the tasks
        # (e.running: each one's name and stack). Say who was still running, and go.
        gave_up = True
        narrator.say("demo", "gave up waiting (second signal) for: " + ", ".join(e.running))

    # (After a give-up the supervisor's token may not be cancelled yet: its tasks' is.)
    how = narrator.stop_reason or str(sup.token.cause or narrator.stop_cause or "a signal")
    if gave_up:
        how += ", then gave up waiting"
    lost = sup.failures  # tasks that failed for good (restarted attempts are not here)
    restarts = f"{narrator.restarts}"
    if narrator.restarts_cancelled:
        restarts += f" (and {narrator.restarts_cancelled} cancelled in its backoff)"
    narrator.write(
        "\nsummary\n"
        f"  tasks run:      {len(narrator.tasks_run)} ({narrator.attempts} attempts)"
        f", and {narrator.items_processed} batch items, 3 at a time\n"
        f"  restarts:       {restarts}\n"
        f"  leader:         {_led(narrator)}\n"
        f"  failures seen:  {narrator.failed_attempts} failed attempts"
        f", {len(lost)} tasks failed for good\n"
        f"  stopped by:     {how}"
    )
    return 0 if not lost and not gave_up else 1
