"""A second runner, to prove the seam between the lifecycle and the thread runner: the
semantics suites (groups, restarts, needs, limits, supervisors, the state machines)
run over each runner through the ``runner`` fixture (conftest), as anyio's
``anyio_backend`` runs one suite over every backend.

``ThreadPerAttemptRunner`` starts a fresh thread for every attempt (no pool, no
continuation, no idle hint), and implements each step of the runner interface
itself, through the same driver calls as the pool runner.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from corral import _driver, _singleton
from corral._lifecycle import Lifecycle
from corral._record import TaskState
from corral._runner import Runner
from corral._threads import close_groups, run_attempt

if TYPE_CHECKING:
    from corral._campaign import LeaseRenewer
    from corral._task import Task


class ThreadPerAttemptRunner(Runner):
    """One new daemon thread per attempt."""

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

    def campaign(self, life: Lifecycle, task: Task[Any]) -> LeaseRenewer | None:
        return _singleton.campaign_for(life, task)

    def close_groups(
        self, task: Task[Any], outcome: TaskState, exc: BaseException | None
    ) -> tuple[TaskState, BaseException | None]:
        return close_groups(task, outcome, exc)

    def end_lease(self, life: Lifecycle, task: Task[Any], renewer: LeaseRenewer) -> None:
        _singleton.end_lease(life, task, renewer)

    def cancel(self, task: Task[Any], cause: BaseException) -> None:
        task.token.cancel(cause)

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
