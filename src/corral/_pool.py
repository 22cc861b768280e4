"""A process-wide pool of reusable worker threads.

Tasks are long-running loops as often as they are short jobs, so the pool has no upper
bound: work that no worker can take gets a new thread. What the pool saves is the thread
start for the many short tasks: a worker that finishes waits for the next piece of work,
and retires after ``idle_timeout`` seconds without any.

When to start a thread is the whole art. Work goes to an idle worker if there is one;
otherwise it waits in a backlog that busy workers take from as they finish. A new thread
starts only once work has actually waited:

- the oldest waiting item has waited ``grace`` seconds, and since it was queued no
  worker has taken anything and no thread has found one of corral's locks taken (every
  worker is busy with something that does not end soon: a loop, a long wait; workers
  queued on a group's lock are about to be free); or
- it has waited ``max_wait`` seconds, whatever the workers do (they finish, but too
  slowly for the load); one such start per ``max_wait``.

A stream of short tasks from one spawner therefore runs on the few workers that take
turns with it for the GIL, instead of a new thread each time a submit finds every
worker busy for a moment (200,000 no-op tasks left 592 threads). A task is never stuck
behind long-running ones: within ``grace`` of finding every worker busy, it gets a
thread of its own, and a burst of them gets one each, one start after another.
Decisions and thread starts are made by one helper thread (the *starter*), so a spawner
never pays for a thread start, except for the very first worker of the pool.

Idle workers are kept on a stack, most recently idle on top, and work goes to the top
one: the workers a steady load needs stay warm, the rest stay idle and retire. A worker
that goes idle while ``warm`` others are idle retires after ``surplus_timeout`` (plus a
millisecond per idle worker beyond ``warm``: the thousands of a burst leave one by one,
not all in the same instant), the others after ``idle_timeout``. (Not much sooner: each
retirement costs the GIL a little, and a program that just ran a burst, a stop say,
may still be busy with its end.) ``trim`` and
``shutdown`` retire idle workers one after another too, each waking the next as it
leaves.

Shutdown follows ``ThreadPoolExecutor.shutdown``: a flag under the lock, idle workers
handed ``None``, then join (one bound for all of them). Workers are daemon threads (an
interpreter exit never waits on a task that ignores its token), and ``shutdown`` runs
at exit after corral has cancelled what still runs. From then on the pool starts no
thread (Python 3.12+ refuses to at exit): work goes to a worker still alive (busy
workers take waiting work before they leave), else runs in the submitting thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import count

from . import _sync
from ._sync import YieldingLock

__all__ = ["WorkerPool", "get_pool"]

log = logging.getLogger("corral")

_Work = Callable[[], object]

# In a worker thread: the pool it serves, its _Worker, and whether it already offered
# itself for more work (release_worker_early) before its current work returned.
_worker_local = threading.local()


def release_worker_early() -> None:
    """Called by the work a worker runs when all that is left is to return: the worker
    is free for more from now on (a no-op outside a worker).

    A group marks its last task done and wakes whoever joins it *before* the work
    returns to the pool; a submit right after the join (the next short group) would then
    find no idle worker. Offering the worker first (while the group's lock still holds
    the joiner back) lets that submit reuse it: the work handed over waits for it to
    return.
    """
    pool: WorkerPool | None = getattr(_worker_local, "pool", None)
    if pool is None or _worker_local.pre_idle:
        return
    _worker_local.pre_idle = True
    me: _Worker = _worker_local.worker
    with pool._lock:
        if not pool._free_locked(me):
            me.work = None  # (shutdown) it retires once its work returns
            me.wake.release()


_RETIRE_SPACING = 0.001  # seconds between the retirements of surplus idle workers


class _Worker:
    """A worker thread's mailbox: ``work`` is handed over, then ``wake`` released."""

    __slots__ = ("timeout", "wake", "work")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.work: _Work | None = None
        self.timeout = 0.0  # how long it waits idle before retiring


class WorkerPool:
    def __init__(
        self,
        *,
        idle_timeout: float = 10.0,
        name: str = "corral-worker",
        grace: float = 0.01,
        max_wait: float = 0.1,
        warm: int = 16,
        surplus_timeout: float = 5.0,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.grace = grace
        self.max_wait = max_wait
        self.warm = warm
        self.surplus_timeout = surplus_timeout
        self._name = name
        self._ids = count(1)
        self._init_state()

    def _init_state(self) -> None:
        self._lock = YieldingLock()  # hot and short: see _sync
        # Idle workers, in the order they became idle (a dict: LIFO popitem, O(1) removal).
        self._idle: dict[_Worker, None] = {}
        # Work no worker has taken yet: (work, when queued, self._takes then), oldest first.
        self._backlog: deque[tuple[_Work, float, int]] = deque()
        self._takes = 0  # items workers took from the backlog (progress, for the starter)
        self._threads: set[threading.Thread] = set()
        self._retiring = False  # idle workers retire in a chain (see _retire_next_locked)
        self._shutdown = False
        self._busy_waiters = 0
        self._idle_cond = threading.Condition(self._lock)  # type: ignore[arg-type]
        self._starter: threading.Thread | None = None
        self._starter_waiting = False  # the starter waits for a backlog (notify it)
        self._starter_cond = threading.Condition(self._lock)  # type: ignore[arg-type]
        self._next_slow_start = 0.0
        self._contentions = 0  # _sync.contentions at the starter's last look

    def __repr__(self) -> str:
        return (
            f"<WorkerPool threads={len(self._threads)} idle={len(self._idle)} "
            f"waiting={len(self._backlog)}>"
        )

    @property
    def threads(self) -> int:
        """How many worker threads are alive."""
        return len(self._threads)

    @property
    def idle(self) -> int:
        """Workers waiting for work."""
        return len(self._idle)

    @property
    def busy(self) -> int:
        """Workers running something (or about to)."""
        return len(self._threads) - len(self._idle)

    # -- handing out work ----------------------------------------------------------------

    def submit(self, work: _Work, *, eager: bool = False) -> None:
        """Run ``work()`` on a worker thread. It must not raise (it is logged if it does).

        ``eager``: if no worker is idle, start a thread for it now rather than wait (for
        work whose count is bounded by its caller, as a map's tasks are by the group's
        limit: ``ThreadPoolExecutor``'s rule, up to its ``max_workers``)."""
        thread: threading.Thread | None = None
        with self._lock:
            idle = self._idle
            if idle:
                me = idle.popitem()[0]  # the most recently idle: warm, and the rest retire
                me.work = work
                me.wake.release()
                return
            if not self._shutdown and (eager or not self._threads):
                # No worker at all, so none can become free (or eager work): start one
                # now, for this work.
                starter = None
                thread = self._new_thread_locked(work)
            elif self._threads:
                # Every worker is busy: the work waits for one to be free, or for the
                # starter to give it a thread of its own (see the module docstring).
                self._backlog.append((work, time.monotonic(), self._takes))
                if self._shutdown:
                    return  # a busy worker takes it before it leaves
                if self._starter is not None:
                    if self._starter_waiting and len(self._backlog) == 1:
                        self._starter_cond.notify()
                    return
                starter = self._starter = threading.Thread(
                    target=self._run_starter, name=f"{self._name}-starter", daemon=True
                )
            else:
                starter = None  # (no thread may start, and no worker is left to take it)
        if starter is not None:
            try:
                starter.start()
            except BaseException:  # (out of threads): the work waits for a busy worker
                log.exception("corral worker pool: could not start its starter thread")
                with self._lock:
                    self._starter = None
        elif thread is not None:
            try:
                self._start_worker(thread)
            except BaseException:
                with self._lock:  # not lost: the next worker to start takes it
                    self._backlog.append((work, time.monotonic(), self._takes))
                raise
        else:
            try:
                work()
            except BaseException:
                log.exception("corral worker: unexpected error")

    def _new_thread_locked(self, work: _Work) -> threading.Thread:
        me = _Worker()
        me.work = work  # (not in the thread's args: they live as long as the thread)
        t = threading.Thread(
            target=self._worker, args=(me,), name=f"{self._name}-{next(self._ids)}",
            daemon=True,
        )
        self._threads.add(t)
        return t

    def _start_worker(self, thread: threading.Thread) -> None:
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(thread)
                if self._busy_waiters:
                    self._idle_cond.notify_all()
            raise

    def _free_locked(self, me: _Worker) -> bool:
        """Worker ``me`` is free for more: hand it the oldest waiting item, or put it on
        the idle stack. False if it should retire instead (shutdown, nothing waiting)."""
        backlog = self._backlog
        if backlog:
            me.work = backlog.popleft()[0]
            self._takes += 1
            me.wake.release()
            return True
        if self._shutdown:
            return False
        idle = self._idle
        n = len(idle)
        if n < self.warm:
            me.timeout = self.idle_timeout
        else:
            # The workers of a burst go idle together, and must not all wake at the same
            # moment to retire (thousands of them would take the GIL from everyone for
            # seconds): one leaves per millisecond at most.
            me.timeout = self.surplus_timeout + (n - self.warm) * _RETIRE_SPACING
        idle[me] = None
        if self._busy_waiters:
            self._idle_cond.notify_all()
        return True

    # -- the threads ---------------------------------------------------------------------

    def _worker(self, me: _Worker) -> None:
        thread = threading.current_thread()
        base_name = thread.name
        _worker_local.pool = self
        _worker_local.worker = me
        _worker_local.pre_idle = False
        work, me.work = me.work, None
        try:
            while work is not None:
                try:
                    work()
                except BaseException:
                    log.exception("corral worker: unexpected error")
                finally:
                    work = None
                    if thread.name != base_name:
                        thread.name = base_name
                if _worker_local.pre_idle:
                    _worker_local.pre_idle = False  # offered already (release_worker_early)
                else:
                    with self._lock:
                        if not self._free_locked(me):
                            return
                if not me.wake.acquire(True, me.timeout):
                    with self._lock:
                        if me in self._idle:  # nobody handed us work: retire
                            del self._idle[me]
                            return
                    # Work was handed over just as we timed out: it is ours.
                    me.wake.acquire()
                work, me.work = me.work, None
        finally:
            with self._lock:
                self._threads.discard(thread)
                if self._retiring:
                    self._retire_next_locked()
                if self._busy_waiters:
                    self._idle_cond.notify_all()

    def _run_starter(self) -> None:
        """Start a worker for the oldest waiting item once it has waited long enough."""
        cond = self._starter_cond
        while True:
            thread: threading.Thread | None = None
            with cond:
                while thread is None:
                    if self._shutdown or self._starter is not threading.current_thread():
                        return
                    backlog = self._backlog
                    if not backlog:
                        self._starter_waiting = True
                        try:
                            woken = cond.wait(self.idle_timeout)
                        finally:
                            self._starter_waiting = False
                        if not woken and not self._backlog:
                            self._starter = None
                            return
                        continue
                    oldest = backlog[0]
                    queued, takes = oldest[1], oldest[2]
                    del oldest  # (this frame waits below: it must hold no work)
                    now = time.monotonic()
                    waited = now - queued
                    contentions = _sync.contentions
                    if (
                        waited >= self.grace and takes == self._takes
                        and contentions == self._contentions
                    ):
                        pass  # every worker is busy with something long: start one
                    elif waited >= self.max_wait and now >= self._next_slow_start:
                        # Workers finish, but not fast enough: grow, one at a time.
                        self._next_slow_start = now + self.max_wait
                    else:
                        self._contentions = contentions
                        # Look again after a grace (from its queueing, the first time),
                        # or when the slow rule would apply, if that comes first.
                        wake = queued + self.grace if waited < self.grace else now + self.grace
                        wake = min(wake, max(queued + self.max_wait, self._next_slow_start))
                        cond.wait(wake - now)
                        continue
                    item = backlog.popleft()
                    thread = self._new_thread_locked(item[0])
            try:
                self._start_worker(thread)
            except BaseException:  # (out of threads): the next submit tries again
                log.exception("corral worker pool: could not start a worker thread")
                with cond:
                    self._backlog.appendleft(item)
                    self._starter = None
                return
            del item, thread  # (the worker has it: this frame must not keep it alive)

    # -- waiting, trimming, shutting down ------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no worker is busy and no work is waiting (for tests and exit)."""
        return self._wait_for(
            lambda: not self._backlog and len(self._idle) >= len(self._threads), timeout
        )

    def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds, re-checked whenever a worker goes idle or
        leaves (the lock held)."""
        with self._lock:
            self._busy_waiters += 1
            try:
                return self._idle_cond.wait_for(predicate, timeout)
            finally:
                self._busy_waiters -= 1

    def _retire_next_locked(self) -> None:
        """Retire idle workers one after another: each wakes the next as it leaves.
        Waking thousands at once (after a burst) would have them all queue for this
        lock and the GIL, in front of the thread that trims (a stop in progress)."""
        if self._idle:
            self._retiring = True
            me = self._idle.popitem()[0]
            me.work = None
            me.wake.release()
        else:
            self._retiring = False

    def trim(self) -> None:
        """Retire every idle worker now (used when the last supervisor has stopped)."""
        with self._lock:
            if not self._retiring:
                self._retire_next_locked()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop starting threads, retire the workers as they become free, and wait for
        them up to ``timeout`` seconds in all (None: no limit)."""
        with self._lock:
            self._shutdown = True
            if not self._retiring:
                self._retire_next_locked()
            self._starter_cond.notify_all()
            threads = list(self._threads)
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _after_fork_in_child(self) -> None:
        # The parent's workers (and the starter) do not exist here, and a lock may have
        # been held by one of them: fresh state. Waiting work belongs to the parent's
        # tasks (the parent runs it). If the fork came from a worker (a task that forks),
        # that thread lives on here and stays a worker.
        shutdown = self._shutdown
        self._init_state()
        self._shutdown = shutdown
        if getattr(_worker_local, "pool", None) is self:
            me: _Worker = _worker_local.worker
            me.wake.acquire(False)  # (a parent's hand-over, or its release_worker_early offer)
            me.work = None
            _worker_local.pre_idle = False
            self._threads.add(threading.current_thread())


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


def _after_fork_in_child() -> None:
    """In a forked child (see _fork): the pool object stays (groups hold its submit),
    with fresh state."""
    global _pool_lock
    _pool_lock = threading.Lock()
    if _pool is not None:
        _pool._after_fork_in_child()
