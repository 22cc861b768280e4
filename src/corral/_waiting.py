"""Waiting for a group's state to change: the waiter behind every blocking call.

A group's transitions ``notify()`` its waiter (under the group's lock) whenever
something a waiter may wait for has changed; a blocking call (``join``, ``result``,
``wait_until``, a supervisor's ``stop``) re-checks its predicate then. Notifying costs
nothing while no one waits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ._callables import check_plain, refuse_awaitable
from ._context import current as _current
from ._errors import Stopped
from ._queries import stuck_for_good
from ._record import RUNNING, takes_slot
from ._token import check_timeout

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._lifecycle import Lifecycle
    from ._sync import YieldingLock
    from ._task import Task

__all__ = ["OwnWait", "Waiter", "wait_until", "wait_until_async"]


_MAIN_THREAD = threading.main_thread()
# The main thread waits in slices: Python runs signal handlers only there, between
# bytecodes, and a signal that the kernel delivered to another thread does not
# interrupt an untimed lock wait. Without slices a SIGTERM could go unhandled while
# the main thread sits in serve(), wait() or join().
MAIN_THREAD_SLICE = 0.1


class Waiter:
    """Who waits on one group: threads (a condition over the group's lock) and
    coroutines (a future each, on their loops)."""

    __slots__ = ("_cond", "_futures", "_threads", "_wake", "count", "lock")

    def __init__(self, lock: YieldingLock) -> None:
        self.lock = lock
        self._cond = threading.Condition(lock)  # type: ignore[arg-type]
        self.count = 0  # threads and coroutines waiting: notify only when someone waits
        self._threads = 0  # of which threads (an AsyncGroup's exit waits alone: no notify_all)
        # Waiting coroutines: (loop, future, predicate), woken when the predicate holds.
        self._futures: list[tuple[Any, Any, Callable[[], bool]]] = []
        self._wake: Callable[[Any, Any], None] | None = None  # _loops.wake_soon, once loaded

    def notify(self) -> None:
        """Wake every waiting thread to re-check, and every waiting coroutine whose
        predicate now holds (the lock is held: a coroutine is not woken, nor its loop
        disturbed, for a change that is not the one it waits for)."""
        if self.count:
            if self._threads:
                self._cond.notify_all()
            futures = self._futures
            if futures:
                wake = self._wake
                assert wake is not None  # (set by wait_async, which listed the futures)
                still = []
                for entry in futures:
                    if entry[2]():
                        wake(entry[0], entry[1])
                    else:
                        still.append(entry)
                self._futures = still

    async def wait_async(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """``wait`` for a coroutine (the lock is not held): await until ``predicate()``
        holds (True) or ``timeout`` seconds have passed (its last answer). The loop
        never blocks: the lock is only taken for the short checks."""
        from ._loops import get_running_loop, wake, wake_soon  # (asyncio: coroutines only)

        self._wake = wake_soon  # (what notify() calls: kept here, not imported per notify)

        loop = get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        lock = self.lock
        while True:
            with lock:
                if predicate():
                    return True
                if deadline is not None and loop.time() >= deadline:
                    return False
                fut = loop.create_future()
                self._futures.append((loop, fut, predicate))
                self.count += 1
            timer = None if deadline is None else loop.call_at(deadline, wake, fut)
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
                with lock:
                    self.count -= 1
                    if self._futures:  # (woken by its timer, or cancelled: still listed)
                        self._futures = [e for e in self._futures if e[1] is not fut]

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """With the lock held: block until ``predicate()`` holds (True) or ``timeout``
        seconds have passed (its last answer)."""
        self.count += 1
        self._threads += 1
        try:
            if threading.current_thread() is not _MAIN_THREAD:
                return self._cond.wait_for(predicate, timeout)
            deadline = None if timeout is None else time.monotonic() + timeout
            while not predicate():
                if deadline is None:
                    self._cond.wait(MAIN_THREAD_SLICE)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return predicate()
                    self._cond.wait(min(left, MAIN_THREAD_SLICE))
            return True
        finally:
            self.count -= 1
            self._threads -= 1


def wait_until(
    life: Lifecycle,
    predicate: Callable[[], bool],
    timeout: float | None,
    interval: float,
    cancel: Callable[[BaseException], None],
) -> bool:
    """``Group.wait_until``: poll ``predicate`` (and re-check whenever a task ends); when
    it holds, ``cancel`` the group gracefully and return True."""
    deadline = _wait_until_start(predicate, timeout, interval)
    while True:
        answer, wait, woken = _wait_until_round(life, predicate, deadline, interval, cancel)
        if answer is not None:
            return answer
        with life.lock:
            life.waiter.wait(woken, wait)


async def wait_until_async(
    life: Lifecycle,
    predicate: Callable[[], bool],
    timeout: float | None,
    interval: float,
    cancel: Callable[[BaseException], None],
) -> bool:
    """``AsyncGroup.wait_until``: ``wait_until``, awaited (the predicate runs on the
    loop)."""
    deadline = _wait_until_start(predicate, timeout, interval)
    while True:
        answer, wait, woken = _wait_until_round(life, predicate, deadline, interval, cancel)
        if answer is not None:
            return answer
        await life.waiter.wait_async(woken, wait)


def _wait_until_start(predicate: Callable[[], bool], timeout: float | None, interval: float) -> float | None:
    """Check ``wait_until``'s arguments; its deadline."""
    if not callable(predicate):
        raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")
    check_plain(
        "predicate", predicate,
        "it is called and its answer read as true or false, and a coroutine reads as true; "
        "give a plain function that returns a bool",
    )
    timeout = check_timeout("timeout", timeout)
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise TypeError(f"interval must be a number of seconds, not {type(interval).__name__}")
    if not 0 < interval < math.inf:
        raise ValueError(f"interval must be a finite number > 0, not {interval!r}")
    return None if timeout is None else time.monotonic() + timeout


def _wait_until_round(
    life: Lifecycle, predicate: Callable[[], bool], deadline: float | None, interval: float,
    cancel: Callable[[BaseException], None],
) -> tuple[bool | None, float, Callable[[], bool]]:
    """One look: the answer (None: wait on), how long to wait, and what ends the wait
    early (a task ended, or the group was cancelled)."""
    token = life.token
    seen = life.ends  # read before the predicate: an end during it is not missed
    # Read before the predicate too: if nothing can change the outcome any more, the
    # predicate's answer now is the last word.
    hopeless = token._cause is not None or not life.unfinished
    answer: object = predicate()  # (a bool, if the caller kept to the type)
    if answer is not True and answer is not False and hasattr(answer, "__await__"):
        refuse_awaitable("predicate", answer)
    if answer:
        cancel(Stopped("wait_until condition met"))
        return True, 0.0, _never
    if hopeless:
        # The group was cancelled (a failure, cancel()) or every task has ended:
        # nothing left in it can make the predicate true.
        return False, 0.0, _never
    wait = interval
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, 0.0, _never
        wait = min(wait, left)
    return None, wait, lambda: life.ends != seen or token._cause is not None


def _never() -> bool:
    return False


class OwnWait:
    """``with OwnWait(life, target):`` around a wait without timeout by a task for tasks
    of its own group (``target()``: the one it waits for now, None once satisfied).

    A task that holds a slot of a limited group and waits for another task of it keeps
    its slot meanwhile. When every slot is held by such waiters and tasks queue for one,
    nothing can ever run: the wait that completes that circle raises ``RuntimeError``
    instead of hanging (as ``t.result()`` of a queued task in a task of a group with
    ``limit=1`` would, or a ``g.map()`` iterated in a task of ``g``)."""

    __slots__ = ("life", "task")

    def __init__(self, life: Lifecycle, target: Callable[[], Task[Any] | None] | None) -> None:
        """``target`` None: nothing to watch (a wait with a timeout ends by itself)."""
        self.life = life
        task: Task[Any] | None = _current.get()
        if (
            target is None or task is None or task._life is not life or life.limit is None
            or task._phase is not RUNNING or not takes_slot(task)
        ):
            self.task = None
            return
        self.task = task
        with life.lock:
            life.stuck[task] = target
            queued = stuck_for_good(life)
            if queued:
                del life.stuck[task]
        if queued:
            self.task = None
            raise RuntimeError(
                f"task {task.name!r} would wait forever for a task of its own "
                f"{life.kind} {life.name!r}: each of its {life.limit} slot(s) is held "
                f"by a task that waits for another task of it, and {queued} task(s) "
                "queue for a slot; raise the limit, or give the inner work a group of "
                "its own (made in the task: `with corral.Group() as inner:`)"
            )

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            with self.life.lock:
                self.life.stuck.pop(self.task, None)
