"""A second runner, to prove the seam between the lifecycle and the thread runner: the
semantics suites (groups, restarts, needs, limits, supervisors, the state machines)
run over each runner through the ``runner`` fixture (conftest), as anyio's
``anyio_backend`` runs one suite over every backend.

``ThreadPerAttemptRunner`` starts a fresh thread for every attempt (no pool, no
continuation, no early release of a worker), and reports stacks its own way.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from corral import _driver
from corral._lifecycle import Lifecycle
from corral._threads import ThreadSteps, run_attempt

if TYPE_CHECKING:
    from corral._task import Task


class ThreadPerAttemptRunner(ThreadSteps):
    """One new daemon thread per attempt (its blocking steps: those of any attempt that
    owns its thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[Task[Any], threading.Thread] = {}
        self.attempts = 0  # attempts this runner started (a test can see it was used)
        self._all: list[threading.Thread] = []

    def start(self, life: Lifecycle, tasks: list[Task[Any]]) -> None:
        for task in tasks:
            thread = threading.Thread(
                target=self._run, args=(life, task), name=f"corral:{task.name}", daemon=True
            )
            with self._lock:
                self.attempts += 1
                self._all = [t for t in self._all if t.is_alive()]
                self._all.append(thread)
            thread.start()

    def _run(self, life: Lifecycle, task: Task[Any]) -> None:
        from corral._context import busy

        busy.group = life.group
        self._threads[task] = threading.current_thread()
        try:
            released = run_attempt(self, life, task)
        finally:
            self._threads.pop(task, None)
            busy.group = None
        if released:
            self.start(life, released)

    def stack(self, task: Task[Any]) -> FrameType | None:
        thread = self._threads.get(task)
        if thread is None or thread.ident is None:
            return None
        return sys._current_frames().get(thread.ident)

    def join_all(self, timeout: float) -> bool:
        """Wait for every attempt thread to end (the fixture's check that none is left)."""
        with self._lock:
            threads = list(self._all)
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)


__all__ = ["ThreadPerAttemptRunner", "_driver"]
