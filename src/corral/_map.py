"""``Group.map``: a function over an iterable, on tasks of a group, lazily and in order.

The consumer (the thread that iterates) pulls the items, in jobs of ``chunksize`` items
(one by default), and keeps at most ``window`` jobs in flight; it yields their values in
input order. The jobs run on the map's tasks, at most one per slot of the group's limit
(and at most ``window``), as ``ThreadPool.imap`` runs its chunks on its workers: a task
is spawned with a job, and when it is over takes the next job waiting, if any. Spawning
a task costs about as much as 20-60 items of a cheap ``fn``; a task that goes on to the
next job does not pay it again (and touches fewer fresh objects, which would otherwise
travel between the consumer's core and the worker's).

A task of the map ends when no job waits for it, when the group has tasks queued for a
slot (they get it: the map does not hold a limit's slots against them), when the map is
left, and after a job that did not go plainly (an item raised, the task's token was
cancelled, an item made child groups): then the task's outcome is that job's, and the
consumer asks the task (``Task.result()``), which raises what a task raises. A job the
consumer waits for that no task holds or will take (every task of the map ended) gets a
new task.

How values reach the consumer: not through ``Task.result()``, which waits on the
group's condition, notified by every task end of the group. The job's values are left
in the ``_Job`` and, if the consumer is blocked on that very job, it is woken through a
queue of this map alone. A chunk's items run in C (``list.extend(map(fn, items))``), and
the consumer steps through them in C too (``itertools.chain``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import _driver
from ._context import current as _current
from ._context import not_on_a_loop
from ._errors import Stopped
from ._record import DONE
from ._validate import check_count, not_callable, qualname
from ._waiting import OwnWait

if TYPE_CHECKING:
    from ._group import Group
    from ._lifecycle import Lifecycle
    from ._task import Task

__all__ = ["map_items", "map_window"]

T = TypeVar("T")
R = TypeVar("R")

_MAIN_THREAD = threading.main_thread()
# A chunked map's default window holds at least this many items (see map_items).
_CHUNKED_WINDOW_ITEMS = 4096
# The main thread waits in slices: Python runs signal handlers only there, between
# bytecodes (as _waiting.Waiter does).
_MAIN_THREAD_SLICE = 0.1
# How long a consumer that waits lets the map's running tasks take the jobs waiting
# before it starts more (see _Run.take).
_GRACE = 0.001


class _Job:
    """One item, or one chunk of items, and what its task made of it. ``values`` and
    ``ok`` are written by the task's thread, then ``done`` is set; the consumer reads
    them only once ``done`` is set."""

    __slots__ = ("cut", "done", "items", "ok", "task", "values")

    def __init__(self, items: Any) -> None:
        self.items = items  # the item (chunksize 1), or the list of the chunk's items
        self.task: Task[Any] | None = None  # the task that holds it (None while it waits)
        self.done = False
        self.ok = False  # every item gave a value, and the task has nothing else to say
        self.values: Any = None  # the item's value, or the list of the values given
        self.cut: int | None = None  # values given before the task's token was cancelled


class _Run(Generic[T, R]):
    """State shared by one map's consumer and its tasks."""

    __slots__ = (
        "closing", "fn", "group", "jobs", "life", "lock", "most", "name", "one", "running",
        "tasks", "wake", "want",
    )

    def __init__(self, group: Group, fn: Callable[[T], R], most: int, one: bool) -> None:
        self.fn = fn
        self.one = one  # jobs of one item (else lists of items)
        self.group = group
        self.life: Lifecycle = group._life
        self.name = f"{qualname(fn)}[map#"  # task names: this, a number of the group's, "]"
        self.most = most  # tasks at once
        self.lock = threading.Lock()  # guards jobs, running and closing
        self.jobs: deque[_Job] = deque()  # jobs no task holds yet, oldest first
        self.running = 0  # tasks of the map that have not given up taking jobs
        self.closing = False  # the map is over or left: its tasks take no more jobs
        self.tasks: list[Task[Any]] = []  # its tasks (pruned of the done ones)
        self.want: _Job | None = None  # the job the consumer is blocked on
        self.wake: queue.SimpleQueue[None] = queue.SimpleQueue()

    # -- in the consumer: handing out jobs -------------------------------------------

    def put(self, job: _Job) -> None:
        """A new job: it waits for a task of the map, or gets a new one if none runs
        (more start when the consumer waits: see ``take``)."""
        with self.lock:
            if self.running:
                self.jobs.append(job)
                return
            jobs = self.jobs
            if jobs:  # (jobs go out oldest first: see take)
                jobs.append(job)
                job = jobs.popleft()
            self.running += 1
        self._start(job)

    def _top_up(self) -> None:
        """A task for each job waiting, oldest first, while fewer than ``most`` run."""
        lock = self.lock
        jobs = self.jobs
        while True:
            with lock:
                if not jobs or self.running >= self.most or self.closing:
                    return
                job = jobs.popleft()
                self.running += 1
            self._start(job)

    def _start(self, job: _Job) -> None:
        life = self.life
        try:
            # (the job in a box that the task empties: a task keeps its arguments, and
            # a job refers to its task, a cycle the collector would have to break)
            task = _driver.spawn(
                self.group, self.work, ([job],), f"{self.name}{next(life.seq)}]", in_map=True,
                on_finish=self._finished,
            )
        except BaseException:
            with self.lock:
                self.running -= 1
            raise
        job.task = task
        tasks = self.tasks
        tasks.append(task)
        if len(tasks) > 4 * self.most:
            tasks[:] = [t for t in tasks if t._phase is not DONE]

    def _finished(self, task: Task[Any]) -> None:
        """A task of the map ended (its on_finish). One that never ran (cancelled while
        it waited for a slot) still counts as running: it no longer does."""
        box = task.args[0]
        if box:
            box.clear()
            with self.lock:
                self.running -= 1
            if self.want is not None:
                self.wake.put(None)

    # -- in the tasks ----------------------------------------------------------------

    def work(self, box: list[_Job]) -> Any:
        """The function of each task of the map: the job in ``box``, then the jobs
        waiting, until one does not go plainly (its outcome is then the task's) or none
        is left."""
        job = box.pop()
        task = _current.get()
        assert task is not None
        token = task.token
        queued = self.life.queue
        lock = self.lock
        jobs = self.jobs
        now = [job]
        remove = None
        if not self.one:

            def cancelled() -> None:
                held = now[0]
                if not held.done:
                    values = held.values
                    held.cut = 0 if values is None else len(values)
                    # The chunk's loop is `map` in C, over this very list: emptied, it
                    # ends after the item that runs now.
                    held.items.clear()

            remove = token.on_cancel(cancelled)
        try:
            while True:
                value = self._one(job, task) if self.one else self._many(job, task)
                if not job.ok:
                    return value
                with lock:
                    if not jobs or queued or self.closing or token._cause is not None:
                        self.running -= 1
                        break
                    job = jobs.popleft()
                    job.task = task
                    now[0] = job
        finally:
            if remove is not None:
                remove()
            if not job.ok:
                with lock:
                    self.running -= 1
            if self.want is not None:  # the consumer may wait for a job no task holds
                self.wake.put(None)
        return value

    def _one(self, job: _Job, task: Task[Any]) -> R:
        try:
            value = self.fn(job.items)
            # A value given under a cancelled token makes the task CANCELLED, and a
            # child group can still fail it: then the consumer asks the task.
            if task.token._cause is None and not task._child_groups:
                job.values = value
                job.ok = True
            return value
        finally:
            self._over(job)

    def _many(self, job: _Job, task: Task[Any]) -> list[R]:
        """A chunk's items one after the other, stopping at the first that raises, or
        as soon as the task's token is cancelled (the items not started then do not
        run; one that ends after it counts as cancelled, as a one-item job's would)."""
        values: list[R] = []
        job.values = values
        ok = False
        try:
            # (list.extend appends each value as it comes: what the items before an
            # exception gave stays in `values`.)
            values.extend(map(self.fn, job.items))
            ok = task.token._cause is None and not task._child_groups
            return values
        finally:
            cut = job.cut
            if cut is not None:
                ok = False
                del values[cut:]
            job.ok = ok
            self._over(job)

    def _over(self, job: _Job) -> None:
        job.done = True
        # (done is written before want is read, and the consumer writes want before it
        # reads done: one of the two sees the other, so no wake-up is lost.)
        if self.want is job:
            self.wake.put(None)

    def poke(self) -> None:
        self.wake.put(None)

    # -- in the consumer: taking values ----------------------------------------------

    def take(self, job: _Job) -> None:
        """Block until the job is over, or its task ended without running it.

        Jobs waiting while fewer than ``most`` tasks run get tasks of their own, after
        a grace of ``_GRACE`` seconds if some task runs: the tasks running may take them
        by then (cheap items: one task keeps up with the consumer, and more would cost
        a task each), and if they do not, the items are slow, and run side by side."""
        remove: Callable[[], None] | None = None
        watched: Task[Any] | None = None
        get = self.wake.get
        main = threading.current_thread() is _MAIN_THREAD
        graced = False
        # (a task of the group iterating: its wait for the job's task is watched for a
        # circle of waits that no slot of the limit can break; see OwnWait)
        own = (
            OwnWait(self.life, lambda: None if job.done else job.task)
            if self.life.limit is not None and _current.get() is not None else None
        )
        try:
            while True:
                self.want = job
                # (want is written before done is read, and a task writes done before it
                # reads want: one of the two sees the other, so no wake-up is lost.)
                if job.done:
                    return
                if self.jobs and self.running < self.most:
                    if not graced and self.running:
                        graced = True
                        self._grace(job)
                    else:
                        self._top_up()
                    continue
                task = job.task
                if task is not None:
                    if task._outcome is not None:
                        return  # it ended without running the job (cancelled while pending)
                    if task is not watched:
                        if remove is not None:
                            remove()
                        # A task that ends without running never reaches `work`; its
                        # token is cancelled then (and when an attempt ends): wake on that.
                        remove = task.token.on_cancel(self.poke)
                        watched = task
                        continue
                if main:
                    try:
                        get(timeout=_MAIN_THREAD_SLICE)
                    except queue.Empty:
                        pass
                else:
                    get()
        finally:
            if own is not None:
                own.__exit__()
            self.want = None
            if remove is not None:
                remove()

    def _grace(self, job: _Job) -> None:
        """Wait up to ``_GRACE`` seconds for the job to be over (wake-ups meant for
        earlier waits may be queued: they do not end it)."""
        get = self.wake.get
        deadline = time.monotonic() + _GRACE
        while not job.done:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                get(timeout=left)
            except queue.Empty:
                return

    def leave(self, abandoned: bool) -> None:
        """The map is over (or left early, ``abandoned``): its tasks take no more jobs;
        cancel them if it was left early; wait for them."""
        with self.lock:
            self.closing = True
            self.jobs.clear()
        tasks = self.tasks
        if abandoned:
            for task in tasks:
                task.cancel(Stopped("map abandoned"))
        for task in tasks:
            task.join()
        tasks.clear()  # (they refer to this map through their function)


def map_window(limit: int | None, window: object, chunksize: object) -> int:
    """A map's window, checked, or its default: 2 x the group's limit (64 without
    one), and for chunks at least as many as hold 4,096 items. Checks ``chunksize``."""
    checked = check_count("window", window)
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an int >= 1, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, not {chunksize!r}")
    if checked is not None:
        return checked
    # Chunks of small items: a longer window lets the consumer and the tasks each run
    # longer stretches between hand-offs (a hand-off moves every object the next
    # stretch touches to the other core's cache), while what is in flight stays
    # bounded by items (4,096; see benchmarks/README.md).
    default = 2 * limit if limit is not None else 64
    return default if chunksize == 1 else max(default, _CHUNKED_WINDOW_ITEMS // chunksize)


def map_items(
    group: Group, fn: Callable[[T], R], iterable: Iterable[T], window: int | None, chunksize: int
) -> Iterator[R]:
    """``group.map(fn, iterable, window=window, chunksize=chunksize)`` (see there)."""
    if not callable(fn):
        raise not_callable(fn)
    limit = group.limit
    window = map_window(limit, window, chunksize)
    life = group._life
    with life.lock:
        life.check_open()
    it = iter(iterable)
    most = window if limit is None else min(limit, window)
    if chunksize == 1:
        return _one_by_one(_Run(group, fn, most, True), it, window)
    # The consumer steps through a chunk's values in C (chain's __next__): the generator
    # runs once per chunk.
    chunks = _by_chunks(_Run(group, fn, most, False), it, window, chunksize)
    flat = cast("_Flat[R]", _Flat.from_iterable(chunks))  # (an instance of the subclass)
    flat._chunks = chunks
    return flat


class _Flat(chain[R]):
    """The values of the chunks, one by one; ``close()`` leaves the map (as a
    generator's does: what is in flight is cancelled)."""

    __slots__ = ("_chunks",)
    _chunks: Generator[list[R], None, None]

    def close(self) -> None:
        self._chunks.close()


def _consuming() -> None:
    """The consumer waits for the items' values: not on a thread that runs a loop."""
    not_on_a_loop("iterating Group.map()", "async for over AsyncGroup.map()")


def _one_by_one(run: _Run[T, R], it: Iterator[T], window: int) -> Generator[R, None, None]:
    _consuming()
    put = run.put
    take = run.take
    inflight: deque[_Job] = deque()
    failed: Exception | None = None  # what the iterable raised (at its place: see map)
    try:
        while True:
            try:
                item = next(it)
            except StopIteration:
                break
            except Exception as e:
                failed = e
                break
            job = _Job(item)
            inflight.append(job)
            put(job)
            if len(inflight) >= window:
                job = inflight.popleft()
                if not job.done:
                    take(job)
                yield job.values if job.ok else _ask(job)
        while inflight:
            job = inflight.popleft()
            if not job.done:
                take(job)
            yield job.values if job.ok else _ask(job)
        if failed is not None:
            raise failed
    finally:
        failed = None  # (its traceback refers to this frame)
        run.leave(bool(inflight))


def _ask(job: _Job) -> Any:
    """What the task of a job that did not go plainly says: it raises, or (a child
    group was all it had to say) gives the job's value."""
    task = job.task
    assert task is not None
    job.task = None  # (a task that never ran still holds the job: no cycle left behind)
    return task.result()


def _by_chunks(
    run: _Run[T, R], it: Iterator[T], window: int, chunksize: int
) -> Generator[list[R], None, None]:
    """Yields each chunk's values, in order; then, for a chunk that did not go well,
    what its task says (an item's exception, at that item's place, or Cancelled)."""
    _consuming()
    put = run.put
    take = run.take
    inflight: deque[_Job] = deque()
    values: list[R] = []  # the list the consumer steps through now
    more = True
    failed: Exception | None = None  # what the iterable raised (at its place: see map)
    try:
        while True:
            if more and len(inflight) < window:
                items: list[T] = []
                try:
                    items.extend(islice(it, chunksize))  # (keeps what came before an error)
                except Exception as e:
                    failed = e
                    more = False
                if items:
                    job = _Job(items)
                    inflight.append(job)
                    put(job)
                    if more and len(inflight) < window:
                        continue
                else:
                    more = False
            if not inflight:
                if failed is not None:
                    raise failed
                return
            job = inflight.popleft()
            if not job.done:
                take(job)
            values = job.values or []
            yield values
            if not job.ok:
                rest: list[R] = _ask(job)  # raises, unless a child group was all it had
                values = rest[len(values):]
                yield values
    except GeneratorExit:  # closed early: the chain steps no further through what is left
        values.clear()
        raise
    finally:
        failed = None  # (its traceback refers to this frame)
        run.leave(bool(inflight))
