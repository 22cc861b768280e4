"""A lock for hot, short critical sections shared by many threads under the GIL."""

from __future__ import annotations

import threading
import time

__all__ = ["YieldingLock"]


class YieldingLock:
    """A mutex whose ``with`` never queues in the kernel behind a thread that lacks the GIL.

    With the GIL, a thread blocked in ``Lock.acquire()`` takes the lock in C, on another
    core, the moment it is released, but cannot run until it also gets the GIL; the
    releaser, still holding the GIL, then blocks on its very next ``acquire()``. Once one
    thread waits, every hand-off costs a context switch: a convoy, measured at about one
    switch per task when eight workers and a spawner share a group's lock (and 0.03 with
    this lock). ``__enter__`` instead tries the lock and, while it is taken, yields the GIL
    (``time.sleep(0)``) so that the holder can finish its short section.

    ``acquire``/``release`` are the plain lock's (blocking), for ``threading.Condition``,
    which also uses ``__enter__`` for ``with cond:``.
    """

    __slots__ = ("_lock", "acquire", "release")

    def __init__(self) -> None:
        self._lock = lock = threading.Lock()
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self) -> None:
        lock = self._lock
        if not lock.acquire(False):
            while not lock.acquire(False):
                time.sleep(0)  # let the holder run: it is waiting for the GIL

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()
