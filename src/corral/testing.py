"""Helpers for testing code that uses corral: a virtual clock.

``MockClock`` is a :class:`corral._clock.Clock` whose time moves only when a test
calls :meth:`MockClock.advance`. Pass it as ``clock=`` to a group or supervisor (or a
token) and backoff delays, restart windows and deadlines run on it, fast and exact::

    clock = MockClock()
    with corral.Supervisor(clock=clock, handle_signals=False) as sup:
        ...
        clock.advance(0.1)       # fires every timer due by then, in order
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._clock import TimerHandle, TimerQueue

__all__ = ["MockClock"]


class MockClock(TimerQueue):
    """Virtual time for tests. Thread-safe; timers fire inside :meth:`advance`.

    Cancelled timers leave its heap as they do the system clock's (see
    :class:`corral._clock.TimerQueue`), so tests can count what a clock still holds.
    """

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = start
        self._advancing = threading.RLock()

    def __repr__(self) -> str:
        return f"<MockClock now={self._now} timers={self.pending}>"

    def monotonic(self) -> float:
        return self._now

    @property
    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        with self._cond:
            return sum(1 for _, _, h in self._heap if not h.cancelled)

    def next_deadline(self) -> float | None:
        """When the next timer is due, or None."""
        with self._cond:
            live = [w for w, _, h in self._heap if not h.cancelled]
            return min(live) if live else None

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        with self._cond:
            handle = self._push(when, callback)
            self._cond.notify_all()
        return handle

    def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that falls due, in order."""
        if not seconds >= 0:
            raise ValueError(f"cannot move time backwards (seconds={seconds!r})")
        with self._advancing:  # one advance at a time: time never moves backwards
            target = self._now + seconds
            while True:
                with self._cond:
                    if not self._heap or self._heap[0][0] > target:
                        self._now = target
                        return
                    when = self._heap[0][0]
                    handle = self._pop()
                    self._now = max(self._now, when)
                handle._run()

    def wait_for_timers(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block (real time) until at least ``count`` timers are scheduled."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: sum(1 for _, _, h in self._heap if not h.cancelled) >= count,
                timeout,
            ):
                raise TimeoutError(f"fewer than {count} timers were scheduled")

