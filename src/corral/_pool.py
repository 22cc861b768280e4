"""A process-wide pool of reusable worker threads.

Tasks are long-running loops as often as they are short jobs, so the pool has no upper
bound: a piece of work that finds no idle worker gets a new one. What the pool saves is
the thread start for the many short tasks: a worker that finishes waits for the next
piece of work, and retires after ``idle_timeout`` seconds without any.

Thread starts are also kept off the spawner's path where possible: at most one start
is in flight at a time, and each new worker, once running, starts the next one if work
is still waiting. A burst of short tasks is then served by the workers that already
run (they go idle in microseconds) instead of one new thread per task.

Shutdown follows ``ThreadPoolExecutor.shutdown``: a flag under the lock, sentinels to
wake idle workers, then join. Workers are daemon threads (an interpreter exit never
waits on a task that ignores its token), and ``shutdown`` runs at exit after corral has
cancelled what still runs.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable

from ._sync import YieldingLock

__all__ = ["WorkerPool", "get_pool"]

log = logging.getLogger("corral")

_Work = Callable[[], object]

# In a worker thread: the pool it serves, and whether it already counted itself idle.
_local = threading.local()


def will_be_idle() -> None:
    """Called by the work a worker runs when all that is left is to return: the worker
    counts as idle from now on (a no-op outside a worker).

    A group marks its last task done and wakes whoever joins it *before* the work
    returns to the pool; a submit right after the join (the next short group) would then
    find no idle worker and start a thread. Declaring the worker idle first (while the
    group's lock still holds the joiner back) lets that submit reuse it.
    """
    pool: WorkerPool | None = getattr(_local, "pool", None)
    if pool is None or _local.pre_idle:
        return
    _local.pre_idle = True
    with pool._lock:
        pool._available_locked()


class WorkerPool:
    def __init__(self, *, idle_timeout: float = 10.0, name: str = "corral-worker") -> None:
        self.idle_timeout = idle_timeout
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = YieldingLock()  # hot and short: see _sync
        self._idle = 0  # workers waiting for work and not yet promised any
        self._starting = 0  # threads started that have not yet reached the queue
        self._backlog = 0  # work items put and not yet promised to a worker
        self._threads: set[threading.Thread] = set()
        self._ids = itertools.count(1)
        self._shutdown = False
        self._busy_waiters = 0
        self._idle_cond = threading.Condition(self._lock)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<WorkerPool threads={len(self._threads)} idle={self._idle}>"

    @property
    def threads(self) -> int:
        """How many worker threads are alive."""
        return len(self._threads)

    @property
    def idle(self) -> int:
        return self._idle

    def submit(self, work: _Work) -> None:
        """Run ``work()`` on a worker thread. It must not raise (it is logged if it does)."""
        with self._lock:
            if self._shutdown:
                # After interpreter-exit shutdown: run on a plain thread so nothing is lost.
                threading.Thread(target=work, name=self._name, daemon=True).start()
                return
            self._queue.put(work)
            if self._idle > 0:
                self._idle -= 1
                return
            self._backlog += 1
            if self._starting:
                return  # the thread being started will take it or start another
            self._starting += 1
        self._start_worker()

    def _start_worker(self) -> None:
        t = threading.Thread(
            target=self._worker, name=f"{self._name}-{next(self._ids)}", daemon=True
        )
        with self._lock:
            self._threads.add(t)
        try:
            t.start()
        except BaseException:
            with self._lock:
                self._threads.discard(t)
                self._starting -= 1
            raise

    def _worker(self) -> None:
        me = threading.current_thread()
        base_name = me.name
        _local.pool = self
        _local.pre_idle = False
        get = self._queue.get
        timeout = self.idle_timeout
        with self._lock:
            self._starting -= 1
            if self._backlog > 0:
                self._backlog -= 1  # this worker takes one waiting item
                grow = self._backlog > 0 and self._starting == 0
                if grow:
                    self._starting += 1
            else:
                self._idle += 1  # nothing waiting after all: start idle
                grow = False
                if self._busy_waiters:
                    self._idle_cond.notify_all()
        if grow:
            self._start_worker()
        try:
            while True:
                try:
                    work = get(timeout=timeout)
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:
                            # Nobody promised us work: retire. (A submit that saw us
                            # idle took a credit, and then we must stay for its item.)
                            self._idle -= 1
                            return
                    continue
                if work is None:
                    return
                try:
                    work()
                except BaseException:
                    log.exception("corral worker: unexpected error")
                finally:
                    work = None
                    if me.name != base_name:
                        me.name = base_name
                if _local.pre_idle:
                    _local.pre_idle = False  # counted already (will_be_idle)
                    continue
                with self._lock:
                    self._available_locked()
        finally:
            with self._lock:
                self._threads.discard(me)
                if self._busy_waiters:
                    self._idle_cond.notify_all()

    def _available_locked(self) -> None:
        """A worker is free for more: it takes a waiting item (it will get() it next),
        or counts as idle."""
        if self._backlog > 0:
            self._backlog -= 1
        else:
            self._idle += 1
            if self._busy_waiters:
                self._idle_cond.notify_all()

    @property
    def busy(self) -> int:
        """Workers running something (or about to)."""
        return len(self._threads) - self._idle

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no worker is busy and no work is queued (for tests and exit)."""
        with self._lock:
            self._busy_waiters += 1
            try:
                return self._idle_cond.wait_for(
                    lambda: self._backlog == 0 and self._starting == 0
                    and self._idle >= len(self._threads),
                    timeout,
                )
            finally:
                self._busy_waiters -= 1

    def trim(self) -> None:
        """Retire every idle worker now (used when the last supervisor has stopped)."""
        with self._lock:
            n, self._idle = self._idle, 0
        for _ in range(n):
            self._queue.put(None)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking work, wake every worker and wait for them (up to ``timeout``)."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
            self._idle = 0
        for _ in threads:
            self._queue.put(None)
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> WorkerPool:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = WorkerPool()
            pool = _pool
    return pool
