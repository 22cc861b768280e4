"""``Group.map``: a function over an iterable, as tasks of a group, lazily and in order.

Each task runs one chunk (``chunksize`` items, one by default); the consumer (the thread
that iterates) keeps at most ``window`` tasks in flight and yields their values in input
order.

How values reach the consumer: not through ``Task.result()``, which waits on the
group's condition, notified by every task end of the group (the consumer would wake for
ends that are not its item's). A task's function is a wrapper that leaves the values in
a ``_Chunk`` and, if the consumer is blocked on that very chunk, wakes it through a
queue of this map alone. The consumer takes the values as soon as the wrapper returns
(the task's bookkeeping may still be under way: the map waits for it before it ends).
A chunk's items run in C (``list.extend(map(fn, items))``), and the consumer steps
through them in C too (``itertools.chain``).

Anything unusual (an item raised, the task's token was cancelled, the task never ran,
it made child groups that may fail it) takes the general path: the consumer yields the
values the chunk gave, then asks the task (``Task.result()``), which raises what a
task raises.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ._context import current as _current
from ._errors import Stopped
from ._record import DONE
from ._validate import check_count, qualname

if TYPE_CHECKING:
    from ._group import Group
    from ._task import Task

__all__ = ["default_window", "map_items"]

T = TypeVar("T")
R = TypeVar("R")

_MAIN_THREAD = threading.main_thread()
# A chunked map's default window holds at least this many items (see map_items).
_CHUNKED_WINDOW_ITEMS = 4096
# The main thread waits in slices: Python runs signal handlers only there, between
# bytecodes (as _waiting.Waiter does).
_MAIN_THREAD_SLICE = 0.1


class _Chunk:
    """What one task hands to the consumer. Written by the task's thread, then
    ``done`` is set; read by the consumer only once ``done`` is set."""

    __slots__ = ("done", "ok", "values")

    def __init__(self) -> None:
        self.done = False
        self.ok = False  # every item gave a value, and the task has nothing else to say
        self.values: Any = None  # one value (chunksize 1) or the list of values given


class _Run(Generic[T, R]):
    """State shared by one map's consumer and its tasks."""

    __slots__ = ("fn", "wake", "want")

    def __init__(self, fn: Callable[[T], R]) -> None:
        self.fn = fn
        self.want: _Chunk | None = None  # the chunk the consumer is blocked on
        self.wake: queue.SimpleQueue[None] = queue.SimpleQueue()

    # -- in the tasks ----------------------------------------------------------------

    def one(self, chunk: _Chunk, item: T) -> R:
        """The function of a one-item task."""
        try:
            value = self.fn(item)
            task = _current.get()
            # A value given under a cancelled token makes the task CANCELLED, and a
            # child group can still fail it: then the consumer asks the task.
            if task is not None and task.token._cause is None and not task._child_groups:
                chunk.values = value
                chunk.ok = True
            return value
        finally:
            self._over(chunk)

    def many(self, chunk: _Chunk, items: list[T]) -> list[R]:
        """The function of a task over several items: one after the other, stopping
        at the first that raises, or as soon as the task's token is cancelled (the
        items not started then do not run; one that ends after it counts as cancelled,
        as a one-item task that returns then would)."""
        task = _current.get()
        assert task is not None
        values: list[R] = []
        cut: list[int] = []

        def cancelled() -> None:
            cut.append(len(values))
            # The loop below is `map` in C, over this very list: emptied, it ends
            # after the item that runs now (a list iterator stops at the list's end).
            items.clear()

        n = len(items)
        ok = False
        remove = task.token.on_cancel(cancelled)
        try:
            # (list.extend appends each value as it comes: what the items before an
            # exception gave stays in `values`.)
            values.extend(map(self.fn, items))
            ok = not task._child_groups  # (a child group can still fail the task)
            return values
        finally:
            remove()
            if cut and cut[0] < n:  # cancelled before its last item ended
                ok = False
                del values[cut[0]:]
            chunk.values = values
            chunk.ok = ok
            self._over(chunk)

    def _over(self, chunk: _Chunk) -> None:
        chunk.done = True
        # (done is written before want is read, and the consumer writes want before it
        # reads done: one of the two sees the other, so no wake-up is lost.)
        if self.want is chunk:
            self.wake.put(None)

    def poke(self) -> None:
        self.wake.put(None)

    # -- in the consumer -------------------------------------------------------------

    def wait(self, task: Task[Any], chunk: _Chunk) -> None:
        """Block until the chunk is over, or its task ended without running it."""
        remove: Callable[[], None] | None = None
        get = self.wake.get
        main = threading.current_thread() is _MAIN_THREAD
        try:
            while not chunk.done:
                if task._outcome is not None:
                    return  # it ended without running (cancelled while pending)
                self.want = chunk
                if remove is None:
                    # A task that ends without running never reaches the wrapper; its
                    # token is cancelled then (and when an attempt ends): wake on that.
                    remove = task.token.on_cancel(self.poke)
                if chunk.done or task.state.is_final:
                    return
                if main:
                    try:
                        get(timeout=_MAIN_THREAD_SLICE)
                    except queue.Empty:
                        pass
                else:
                    get()
        finally:
            self.want = None
            if remove is not None:
                remove()


def default_window(limit: int | None) -> int:
    """A map's window when none is given: 2 x the group's limit, or 64 without one."""
    return 2 * limit if limit is not None else 64


def map_items(
    group: Group, fn: Callable[[T], R], iterable: Iterable[T], window: int | None, chunksize: int
) -> Iterator[R]:
    """``group.map(fn, iterable, window=window, chunksize=chunksize)`` (see there)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    window = check_count("window", window)
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an int >= 1, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, not {chunksize!r}")
    if window is None:
        window = default_window(group.limit)
        if chunksize > 1:
            # Chunks of small items: a longer window lets the consumer and the workers
            # each run longer stretches between hand-offs (a hand-off moves every object
            # the next stretch touches to the other core's cache), while what is in
            # flight stays bounded by items (4,096; 1.3-1.4x faster than 2 x limit
            # chunks at chunksize 64, see benchmarks/README.md).
            window = max(window, _CHUNKED_WINDOW_ITEMS // chunksize)
    life = group._life
    with life.lock:
        life.check_open()
    it = iter(iterable)
    prefix = f"{qualname(fn)}[map#"  # task names: the prefix, a number of the group's, "]"
    if chunksize == 1:
        return _one_by_one(group, _Run(fn), it, window, prefix)
    # The consumer steps through a chunk's values in C (chain's __next__): the generator
    # runs once per chunk.
    chunks = _by_chunks(group, _Run(fn), it, window, chunksize, prefix)
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


def _one_by_one(
    group: Group, run: _Run[T, R], it: Iterator[T], window: int, prefix: str
) -> Generator[R, None, None]:
    spawn = group._spawn
    seq = group._life.seq
    work = run.one
    inflight: deque[tuple[Task[Any], _Chunk]] = deque()
    # Tasks whose values were yielded while their bookkeeping was still under way: the
    # map does not end before they are done (pruned as it goes, so it stays short).
    finishing: list[Task[Any]] = []
    try:
        for item in it:
            chunk = _Chunk()
            inflight.append((
                spawn(work, (chunk, item), f"{prefix}{next(seq)}]", in_map=True), chunk
            ))
            if len(inflight) >= window:
                task, chunk = _take(run, inflight, finishing, window)
                yield chunk.values if chunk.ok else task.result()
        while inflight:
            task, chunk = _take(run, inflight, finishing, window)
            yield chunk.values if chunk.ok else task.result()
    finally:
        _leave(inflight, finishing)


def _take(
    run: _Run[Any, Any], inflight: deque[tuple[Task[Any], _Chunk]],
    finishing: list[Task[Any]], window: int,
) -> tuple[Task[Any], _Chunk]:
    """The oldest task in flight and its chunk, once the chunk is over. A task whose
    values come before its bookkeeping is done goes to ``finishing`` (pruned of the
    done ones as it grows past ``window``)."""
    task, chunk = inflight.popleft()
    if not chunk.done:
        run.wait(task, chunk)
    if task._phase is not DONE:
        finishing.append(task)
        if len(finishing) > window:
            finishing[:] = [t for t in finishing if t._phase is not DONE]
    return task, chunk


def _by_chunks(
    group: Group, run: _Run[T, R], it: Iterator[T], window: int, chunksize: int, prefix: str
) -> Generator[list[R], None, None]:
    """Yields each chunk's values, in order; then, for a chunk that did not go well,
    what its task says (an item's exception, at that item's place, or Cancelled)."""
    spawn = group._spawn
    seq = group._life.seq
    work = run.many
    inflight: deque[tuple[Task[Any], _Chunk]] = deque()
    finishing: list[Task[Any]] = []
    values: list[R] = []  # the list the consumer steps through now
    try:
        while True:
            if len(inflight) < window:
                items = list(islice(it, chunksize))
                if items:
                    chunk = _Chunk()
                    inflight.append((
                        spawn(work, (chunk, items), f"{prefix}{next(seq)}]", in_map=True),
                        chunk,
                    ))
                    if len(inflight) < window:
                        continue
            if not inflight:
                return
            task, chunk = _take(run, inflight, finishing, window)
            values = chunk.values or []
            yield values
            if not chunk.ok:
                rest: list[R] = task.result()  # raises, unless a child group was all it had
                values = rest[len(values):]
                yield values
    except GeneratorExit:  # closed early: the chain steps no further through what is left
        values.clear()
        raise
    finally:
        _leave(inflight, finishing)


def _leave(inflight: deque[tuple[Task[Any], _Chunk]], finishing: list[Task[Any]]) -> None:
    """The map is over (or left early): cancel what is in flight, and wait for it and
    for the tasks still finishing."""
    for task, _ in inflight:
        task.cancel(Stopped("map abandoned"))
    for task, _ in inflight:
        task.join()
    for task in finishing:
        task.join()
