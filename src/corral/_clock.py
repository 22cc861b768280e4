"""The one seam through which corral reads time and schedules timers.

Backoff delays, restart windows and token deadlines all go through a :class:`Clock`,
so tests can run them on virtual time (:class:`corral.testing.MockClock`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

try:  # (heapq's C half, without heapq.py's import cost)
    from _heapq import heapify, heappop, heappush
except ImportError:  # pragma: no cover - other interpreters
    from heapq import heapify, heappop, heappush

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "TimerHandle", "TimerQueue"]


class TimerHandle:
    """A scheduled callback; :meth:`cancel` stops it from running (if it has not yet)."""

    __slots__ = ("_callback", "_queue")

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback
        # The TimerQueue whose heap holds this handle, while it does: cancel() tells it,
        # so a cancelled timer does not sit in the heap (with whatever its callback
        # holds) until it would have been due. None for handles of other clocks.
        self._queue: TimerQueue | None = None

    def cancel(self) -> None:
        # Drop the callback first: what it holds (a token's link, a task) is freed now,
        # not when the entry leaves the heap.
        self._callback = None
        queue = self._queue
        if queue is not None:
            self._queue = None
            queue._cancelled_one()

    @property
    def cancelled(self) -> bool:
        return self._callback is None

    def _run(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


if TYPE_CHECKING:  # (a protocol for type checkers; at run time a clock is checked by its methods)
    from typing import Protocol

    class Clock(Protocol):
        """What corral needs of time: a monotonic reading and timers."""

        def monotonic(self) -> float: ...

        def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
            """Run ``callback`` (quickly, without blocking) once ``monotonic() >= when``."""
            ...


_PURGE_MIN = 64  # cancelled entries a heap may keep however small it is (~12 KB)


class TimerQueue:
    """A heap of timers that lets go of cancelled ones (the base of SystemClock and
    MockClock).

    A service that gives each request a deadline cancels most of them early, long
    before they are due: 300,000 requests with an hour's deadline would otherwise hold
    300,000 dead entries for an hour. So cancelled entries are counted, and when they
    outnumber the live ones the heap is rebuilt from the live ones: each rebuild
    removes at least half the heap, so it costs O(1) amortized per cancel, and
    ``call_at`` stays O(log n). A few dead entries are left alone (``_PURGE_MIN``):
    rebuilding a tiny heap on every cancel would cost more than the entries do.
    """

    def __init__(self) -> None:
        # A plain Lock, not an RLock: _cancelled_one may run inside a weakref callback
        # (a token freed while this thread is in the middle of a heap operation under
        # this lock); it only ever try-acquires, which then fails instead of entering
        # (and rebuilding the heap under the feet of) the operation in progress.
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        # Cancelled entries still in the heap. Counted without the lock (a cancel must
        # never wait for it, see above), so a race may miscount by one; a rebuild counts
        # afresh, so an error only moves the next rebuild a little.
        self._ncancelled = 0

    def _push(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Schedule (the lock held)."""
        handle = TimerHandle(callback)
        handle._queue = self
        heappush(self._heap, (when, next(self._seq), handle))
        if self._ncancelled > _PURGE_MIN and self._ncancelled * 2 > len(self._heap):
            self._purge()
        return handle

    def _pop(self) -> TimerHandle:
        """Take the earliest entry off the heap (the lock held)."""
        handle = heappop(self._heap)[2]
        if handle._callback is None:
            self._ncancelled = max(0, self._ncancelled - 1)
        else:
            handle._queue = None  # due now: a cancel() from here on has nothing to count
        return handle

    def _cancelled_one(self) -> None:
        self._ncancelled += 1
        if (
            self._ncancelled > _PURGE_MIN and self._ncancelled * 2 > len(self._heap)
            and self._cond.acquire(blocking=False)
        ):
            # (If the lock is busy, the holder or the next call_at rebuilds instead.)
            try:
                self._purge()
            finally:
                self._cond.release()

    def _purge(self) -> None:
        """Rebuild the heap from its live entries (the lock held)."""
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2]._callback is not None]
        heapify(heap)
        self._ncancelled = 0


class SystemClock(TimerQueue):
    """Real time; timers run on one shared daemon thread, started when first needed."""

    _IDLE_EXIT = 5.0  # the timer thread exits after this long with nothing scheduled
    _MAX_WAIT = 3600.0

    def __init__(self) -> None:
        super().__init__()
        self._thread: threading.Thread | None = None

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        with self._cond:
            handle = self._push(when, callback)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="corral-timer", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].cancelled:
                        self._pop()
                    if not self._heap:
                        if not self._cond.wait(self._IDLE_EXIT) and not self._heap:
                            # Nothing to do for a while: retire. call_at starts a new
                            # thread when it sees _thread is None (checked under the lock).
                            self._thread = None
                            return
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        handle = self._pop()
                        break
                    # threading caps timeouts (OverflowError beyond ~292 years): wait in
                    # bounded steps; call_at wakes us when an earlier timer arrives.
                    self._cond.wait(min(delay, self._MAX_WAIT))
            try:
                handle._run()
            except BaseException:  # a timer callback must not kill the timer thread
                logging.getLogger("corral").exception("corral timer callback raised")


SYSTEM_CLOCK = SystemClock()


def _after_fork_in_child() -> None:
    """In a forked child (see _fork): the timer thread is gone, and the lock may have
    been held by it. Timers still scheduled (a token's deadline) get a new thread."""
    clock = SYSTEM_CLOCK
    clock._cond = threading.Condition(threading.Lock())
    clock._thread = None
    if any(not entry[2].cancelled for entry in clock._heap):
        clock._thread = threading.Thread(target=clock._run, name="corral-timer", daemon=True)
        clock._thread.start()


def _no_thread_at_exit() -> None:
    """At interpreter exit no thread may start (Python 3.12+ refuses): a timer set from
    now on runs on the timer thread if it still runs, and else not at all."""
    clock = SYSTEM_CLOCK
    with clock._cond:
        clock._IDLE_EXIT = _NEVER  # the running timer thread stays until the process ends
        if clock._thread is None:
            clock._thread = _NO_THREAD  # call_at starts none
        else:
            clock._cond.notify()  # (re-wait with the new idle time)


_NEVER = 365 * 86400.0
_NO_THREAD = threading.Thread(name="corral-timer (none at exit)")
