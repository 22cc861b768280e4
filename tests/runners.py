"""Other runners, to prove the seam between the lifecycle and its runners: the
semantics suites (groups, restarts, needs, limits, supervisors, the state machines)
run over each runner through the ``runner`` fixture (conftest), as anyio's
``anyio_backend`` runs one suite over every backend.

``ThreadPerAttemptRunner`` starts a fresh thread for every attempt (no pool, no
continuation, no early release of a worker), and reports stacks its own way.

``LoopRunner`` is the asyncio runner (the one coroutine tasks run on) on a loop
thread of its own, made to take the suites' plain functions too: each attempt is an
asyncio task that awaits the function, run on a worker thread, to its end (the
function sees its token; the asyncio task's cancellations are corral's, counted and
balanced as for any coroutine task). Everything else is the asyncio runner's own: the
attempt's start and end on the loop, its blocking steps awaited off the loop.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from corral import _driver
from corral._aio import AsyncioRunner, on_pool, uninterrupted
from corral._lifecycle import Lifecycle
from corral._threads import ThreadSteps, call_function, run_attempt

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


class LoopRunner(AsyncioRunner):
    """The asyncio runner on a loop thread of its own, for plain functions too (see
    the module docstring)."""

    def __init__(self, *, eager: bool = False) -> None:
        loop = asyncio.new_event_loop()
        if eager:  # (3.12+: each attempt's first step runs inside create_task)
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined, unused-ignore]
        self._thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()
        super().__init__(loop)
        self.attempts = 0
        self._running_on: dict[Task[Any], int] = {}  # attempt -> its function's thread

    def call(self, task: Task[Any]) -> Any:
        self.attempts += 1
        return uninterrupted(on_pool(self.loop, self._run, task))

    def _run(self, task: Task[Any]) -> Any:
        thread = threading.current_thread()
        name, thread.name = thread.name, f"corral:{task.name}"  # (as a thread runner's)
        self._running_on[task] = threading.get_ident()
        try:
            return call_function(task)  # (as a thread runner calls it)
        finally:
            self._running_on.pop(task, None)
            thread.name = name

    def stack(self, task: Task[Any]) -> Any:
        ident = self._running_on.get(task)
        if ident is None:
            return super().stack(task)
        return sys._current_frames().get(ident)

    def close(self, timeout: float) -> bool:
        """Stop the loop (nothing of the test's runs there any more) and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
        return not self._thread.is_alive()


__all__ = ["LoopRunner", "ThreadPerAttemptRunner", "_driver"]
