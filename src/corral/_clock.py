"""The one seam through which corral reads time and schedules timers.

Backoff delays, restart windows and token deadlines all go through a :class:`Clock`,
so tests can run them on virtual time (:class:`corral.testing.MockClock`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "TimerHandle"]


class TimerHandle:
    """A scheduled callback; :meth:`cancel` stops it from running (if it has not yet)."""

    __slots__ = ("_callback", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self._callback = None

    @property
    def cancelled(self) -> bool:
        return self._callback is None

    def _run(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class Clock(Protocol):
    """What corral needs of time: a monotonic reading and timers."""

    def monotonic(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` (quickly, without blocking) once ``monotonic() >= when``."""
        ...


class SystemClock:
    """Real time; timers run on one shared daemon thread, started when first needed."""

    _IDLE_EXIT = 5.0  # the timer thread exits after this long with nothing scheduled
    _MAX_WAIT = 3600.0

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), handle))
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
                        heapq.heappop(self._heap)
                    if not self._heap:
                        if not self._cond.wait(self._IDLE_EXIT) and not self._heap:
                            # Nothing to do for a while: retire. call_at starts a new
                            # thread when it sees _thread is None (checked under the lock).
                            self._thread = None
                            return
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        handle = heapq.heappop(self._heap)[2]
                        break
                    # threading caps timeouts (OverflowError beyond ~292 years): wait in
                    # bounded steps; call_at wakes us when an earlier timer arrives.
                    self._cond.wait(min(delay, self._MAX_WAIT))
            try:
                handle._run()
            except BaseException:  # a timer callback must not kill the timer thread
                logging.getLogger("corral").exception("corral timer callback raised")


SYSTEM_CLOCK = SystemClock()
