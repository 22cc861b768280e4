"""A lock for hot, short critical sections shared by many threads under the GIL."""

from __future__ import annotations

import threading
import time

__all__ = ["YieldingLock"]

# A contended __enter__ yields the GIL at most _SPINS times, and at most _SPINNERS
# threads do so on one lock at a time; the others block on the lock at once.
_SPINS = 16
_SPINNERS = 16

# How many times a thread found a YieldingLock taken. Approximate (unlocked updates):
# the pool only asks whether it moved (see _pool's starter).
contentions = 0


class YieldingLock:
    """A mutex whose ``with`` does not queue in the kernel behind a thread that lacks
    the GIL, in the common case, and does not spin in a crowd either.

    With the GIL, a thread blocked in ``Lock.acquire()`` takes the lock in C, on another
    core, the moment it is released, but cannot run until it also gets the GIL; the
    releaser, still holding the GIL, then blocks on its very next ``acquire()``. Once one
    thread waits, every hand-off costs a context switch: a convoy, measured at about one
    switch per task when eight workers and a spawner share a group's lock (and 0.03 with
    this lock). ``__enter__`` instead tries the lock and, while it is taken, yields the GIL
    (``time.sleep(0)``) so that the holder can finish its short section.

    Yielding only helps while few threads do it: ``sleep(0)`` hands the GIL to *some*
    waiting thread, and with thousands of them (a stop that wakes every task at once)
    the spinners hand it to each other rather than to the holder, for seconds. So a
    thread yields at most ``_SPINS`` times (eight workers and a spawner need one to ten,
    very rarely twenty), and only while fewer than ``_SPINNERS`` threads already yield
    on this lock; otherwise it blocks on the lock, off the GIL's queue, which leaves the
    GIL to the holder. The cap must exceed the hot path's crowd: with a limit of 8, nine
    threads share a group's lock, and with a cap of 4 the ones turned away to block
    brought the convoy back (limit 8 went from 0.85x to 1.25x the executor).

    ``acquire``/``release`` are the plain lock's (blocking), for ``threading.Condition``,
    which also uses ``__enter__`` for ``with cond:``.
    """

    __slots__ = ("_lock", "_spinners", "acquire", "release")

    def __init__(self) -> None:
        self._lock = lock = threading.Lock()
        self._spinners: list[None] = []  # one entry per thread yielding (append/pop: atomic)
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self) -> None:
        lock = self._lock
        if lock.acquire(False):
            return
        global contentions
        contentions += 1
        spinners = self._spinners
        if len(spinners) < _SPINNERS:
            spinners.append(None)
            try:
                for _ in range(_SPINS):
                    time.sleep(0)  # let the holder run: it is waiting for the GIL
                    if lock.acquire(False):
                        return
            finally:
                spinners.pop()
        lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()
