"""One campaigning process for the multi-process lease tests (``test_lease_processes.py``).

Usage::

    python tests/lease_worker.py --backend <redis-url-or-directory> --names a,b --ttl 1 \
        --log <path> [--poll SECONDS] [--prefix PREFIX]

Starts a ``corral.Supervisor`` (``handle_signals=True``: SIGTERM stops it gracefully)
on a ``RedisCoordinator(url, ttl=..., prefix=...)`` or a ``FileCoordinator(directory,
poll_interval=...)``, spawns one ``singleton=True`` task per name with
``restart=ALWAYS``, prints ``ready`` on stdout, and waits until it is stopped.

Each task appends JSON lines to the shared log while it holds its lease (the file is
opened with ``O_APPEND``; one ``os.write`` per line, so lines of different processes
never interleave):

- ``acquired`` {name, fence, pid, t} when the task starts under a new lease;
- ``tick`` {name, fence, pid, t, deadline_left} every ~20 ms, written after
  ``corral.check()`` and ``lease.check()`` passed;
- ``stop`` {name, fence, pid, t, lost, cause, deadline_left} when it leaves.

``t`` is ``time.monotonic()`` (system-wide on Linux: comparable across processes).
A tick's ``t`` and ``deadline_left`` are read *before* the checks: the tick stands for
"the lease was valid at ``t``". A process frozen (SIGSTOP) between the checks and the
write still writes the line when it wakes, but with the time at which it checked; the
write arriving late is the check-then-act race that only fencing at the resource can
close (see "Fencing" in the README), not something the lease can prevent.
``deadline_left`` is the lease's deadline minus the lease clock at ``t`` (null for a
file lease: no expiry).

When stdin is a pipe, end of file on it ends the worker at once (exit status 3): the
test keeps the pipe open, so no worker outlives a test run that was killed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from typing import Any

import corral
from corral._coordinator import lease_clock

TICK = 0.02  # seconds between ticks


class Log:
    """The shared log: one ``os.write`` of one whole line per event."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.pid = os.getpid()

    def emit(self, ev: str, name: str, fence: int, t: float, **fields: Any) -> None:
        record = {"ev": ev, "name": name, "fence": fence, "pid": self.pid, "t": t, **fields}
        os.write(self.fd, (json.dumps(record) + "\n").encode())


def _left(lease: corral.Lease, now: float) -> float | None:
    return None if lease.deadline == math.inf else lease.deadline - now


def hold(log: Log, name: str) -> None:
    """The singleton task: tick under the lease until cancelled (stop or lease lost)."""
    lease = corral.current_lease()
    assert lease is not None, "a singleton task runs under a lease"
    log.emit("acquired", name, lease.fence, time.monotonic())
    try:
        while True:
            t, now = time.monotonic(), lease_clock()
            corral.check()  # a graceful stop (and, in a singleton, a passed deadline)
            lease.check()
            log.emit("tick", name, lease.fence, t, deadline_left=_left(lease, now))
            corral.sleep(TICK)
    finally:
        cause = corral.current_token().cause
        log.emit(
            "stop", name, lease.fence, time.monotonic(),
            lost=lease.lost is not None,
            cause=None if cause is None else type(cause).__name__,
            deadline_left=_left(lease, lease_clock()),
        )


def _exit_with_parent() -> None:
    """The test holds our stdin (a pipe) open: end of file means it is gone (killed,
    say), and a worker must not outlive it, campaigning forever."""
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read would hold the
    # buffer's lock, and the interpreter aborts at exit when it cannot take it.
    while os.read(0, 4096):
        pass
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="a redis:// URL or a directory")
    parser.add_argument("--names", required=True, help="comma-separated task names")
    parser.add_argument("--ttl", type=float, default=1.0, help="Redis lease TTL (seconds)")
    parser.add_argument("--log", required=True, help="the shared JSON-lines log")
    parser.add_argument("--poll", type=float, default=None, help="poll interval (seconds)")
    parser.add_argument("--prefix", default="corral-test", help="Redis key prefix")
    args = parser.parse_args(argv)

    # Only the main thread may take SIGTERM/SIGINT: a process-directed signal landing on
    # another thread would leave the main thread asleep in its untimed wait below, and
    # Python would run the handler only once the main thread wakes up (see
    # test_signals.py). Threads inherit the mask of the thread that creates them, so
    # block the signals before any thread exists and unblock them in the main thread.
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)

    coordinator: corral.Coordinator
    if args.backend.startswith(("redis://", "unix://")):
        coordinator = corral.RedisCoordinator(
            args.backend, ttl=args.ttl, prefix=args.prefix, poll_interval=args.poll
        )
    else:
        coordinator = corral.FileCoordinator(args.backend, poll_interval=args.poll or 0.1)
    log = Log(args.log)
    sup = corral.Supervisor(
        f"lease-worker-{os.getpid()}", handle_signals=True, coordinator=coordinator
    )
    assert threading.current_thread() is threading.main_thread()
    for name in args.names.split(","):
        sup.spawn(hold, log, name, name=name, singleton=True, restart=corral.Restart.ALWAYS)
    sup.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        threading.Thread(target=_exit_with_parent, name="stdin-watch", daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sup.wait()
    coordinator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
