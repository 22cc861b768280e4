"""Group.map with chunks, and how results reach the consumer (issue 7, §8 "map").

The one-item semantics (order, laziness, window, errors at their place, leaving early)
are pinned in test_group.py; the speed goals live in benchmarks/run.py.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import corral
from corral import TaskState
from helpers import TIMEOUT, Concurrency, released, wait, wait_token

# Every test runs over each runner (the pool, and a thread per attempt): see conftest.
pytestmark = pytest.mark.usefixtures("runner")


def current() -> corral.Task[Any]:
    task = corral.current_task()
    assert task is not None
    return task


def counting(n: int | None = None) -> tuple[Iterator[int], list[int]]:
    """range(n) (or an endless count) that records how many items were pulled."""
    pulled = [0]

    def gen() -> Iterator[int]:
        for i in itertools.count() if n is None else range(n):
            pulled[0] += 1
            yield i

    return gen(), pulled


def drain_into(got: list[Any], it: Iterator[Any]) -> None:
    """Consume ``it`` into ``got`` (which keeps what came before an exception)."""
    for r in it:
        got.append(r)  # noqa: PERF402


# -- chunksize --------------------------------------------------------------------------------


def test_map_runs_each_chunk_on_one_task_at_most_limit_at_once_in_input_order() -> None:
    ran_by: dict[int, corral.Task[Any]] = {}
    conc = Concurrency()

    def fn(i: int) -> int:
        with conc:
            ran_by[i] = current()
        return i * 10

    with corral.Group(limit=2) as g:
        assert list(g.map(fn, range(100), chunksize=3)) == [i * 10 for i in range(100)]
    chunks = [[ran_by[i] for i in range(s, min(s + 3, 100))] for s in range(0, 100, 3)]
    for tasks in chunks:
        assert all(t is tasks[0] for t in tasks)  # a chunk's items run on one task
    assert conc.peak <= 2  # at most `limit` of the map's tasks at once
    assert all(t.state is TaskState.SUCCEEDED and t.done for t in ran_by.values())


def test_a_map_task_goes_on_to_the_next_chunk_waiting() -> None:
    # One slot: the first task holds chunk 0 until the source is exhausted, by when
    # chunks 1 and 2 wait for it (the consumer hands a chunk out as soon as it pulled
    # it): it runs them too, paying for no new task.
    exhausted = threading.Event()
    ran_by: dict[int, corral.Task[Any]] = {}

    def source() -> Iterator[int]:
        yield from range(10)
        exhausted.set()

    def fn(i: int) -> int:
        ran_by[i] = current()
        if i == 0:
            wait(exhausted)
        return i

    with corral.Group(limit=1) as g, released(exhausted):
        assert list(g.map(fn, source(), chunksize=3)) == list(range(10))
    assert all(ran_by[i] is ran_by[0] for i in range(9))


@pytest.mark.parametrize(
    ("chunksize", "error"),
    [(0, ValueError), (-3, ValueError), (True, TypeError), (False, TypeError),
     (2.0, TypeError), ("4", TypeError), (None, TypeError)],
)
def test_map_rejects_a_bad_chunksize_at_the_call(chunksize: Any, error: type[Exception]) -> None:
    g = corral.Group()
    with pytest.raises(error, match="chunksize"):
        g.map(abs, range(3), chunksize=chunksize)
    g.join(TIMEOUT)


def test_map_chunked_is_lazy_with_at_most_window_chunks_in_flight() -> None:
    window, chunksize, n = 2, 3, 10
    source, pulled = counting(n)
    conc = Concurrency()
    full = threading.Event()

    def fn(i: int) -> int:
        if i % chunksize == 0 and i < window * chunksize:
            with conc as inside:  # the first item of each of the first chunks
                if inside == window:
                    full.set()
                wait(full)  # the first `window` chunks run at the same time
        return i

    results: list[int] = []
    with corral.Group() as g, released(full):
        it = g.map(fn, source, window=window, chunksize=chunksize)
        assert pulled[0] == 0  # lazy: nothing taken before iteration starts
        for r in it:
            results.append(r)
            # the chunk of item r and the (window - 1) after it have been taken
            assert pulled[0] == min(n, (r // chunksize + window) * chunksize)
    assert results == list(range(n))
    assert conc.peak == window


@pytest.mark.parametrize(
    ("limit", "chunksize", "expected_chunks"),
    [(2, 1024, 4), (None, 1024, 64), (2, 256, 16), (100, 256, 200), (None, 16, 256)],
)
def test_map_default_window_counts_chunks_holding_at_least_4096_items(
    limit: int | None, chunksize: int, expected_chunks: int
) -> None:
    # 2 x limit chunks (64 without a limit), or as many as hold 4,096 items if more.
    n = 300 * chunksize
    source, pulled = counting(n)
    with corral.Group(limit=limit) as g:
        it = g.map(abs, source, chunksize=chunksize)
        assert next(it) == 0
        assert pulled[0] == expected_chunks * chunksize
        assert list(it) == list(range(1, n))


def test_a_chunks_exception_comes_at_its_item_after_the_items_before_it() -> None:
    err = ValueError(5)
    ran: list[int] = []

    def fn(i: int) -> int:
        ran.append(i)
        if i == 5:
            raise err
        return i

    got: list[int] = []
    with corral.Group(fail_fast=True) as g:
        with pytest.raises(ValueError, match="5") as info:
            drain_into(got, g.map(fn, range(12), window=1, chunksize=4))
        assert info.value is err
        assert got == [0, 1, 2, 3, 4]
        assert ran == [0, 1, 2, 3, 4, 5]  # the rest of its chunk (6, 7) never ran
        assert g.failures == []  # an item's failure is not the group's
        assert not g.token.cancelled


def broken_source(n: int, err: Exception) -> Iterator[int]:
    """0, 1, ... n - 1, then ``err`` (an iterable that fails part way)."""
    yield from range(n)
    raise err


@pytest.mark.parametrize("chunksize", [1, 3])
def test_an_error_of_the_iterable_comes_at_its_place_after_the_items_before_it(
    chunksize: int,
) -> None:
    # As ThreadPool.imap does, not as Executor.map (which reads everything first): the
    # items read before the iterable failed are mapped and yielded, then its exception
    # (itself, not wrapped) is raised by the iterator. Even with a window that had read
    # ahead to the failure.
    err = OSError("the source broke at 7")
    got: list[int] = []
    with corral.Group(limit=2) as g:
        with pytest.raises(OSError, match="broke at 7") as info:
            drain_into(got, g.map(lambda i: i * 10, broken_source(7, err), window=4,
                                  chunksize=chunksize))
        assert info.value is err
        assert got == [i * 10 for i in range(7)]
        assert g.failures == []  # the iterable's error is the map's, not the group's


def test_leaving_a_chunked_map_early_cancels_the_chunks_in_flight() -> None:
    source, pulled = counting()
    seen: dict[int, tuple[corral.Task[Any], BaseException | None]] = {}
    inside = threading.Event()

    def fn(i: int) -> int:
        if i < 2:
            return i * 10
        tok = corral.current_token()
        seen[i] = (current(), None)
        inside.set()
        assert wait_token(tok)
        seen[i] = (current(), tok.cause)
        return -1

    got: list[int] = []
    with corral.Group() as g:
        for r in g.map(fn, source, window=2, chunksize=2):
            got.append(r)
            if len(got) == 2:
                wait(inside)  # item 2 (first of the second chunk) is running
                break
        # leaving cancelled the chunk in flight and waited for it: item 3 never ran
        assert sorted(seen) == [2]
        task, cause = seen[2]
        assert isinstance(cause, corral.Stopped)
        assert task.done
        assert task.state is TaskState.CANCELLED
        assert len(g) == 0
    assert got == [0, 10]
    assert pulled[0] == 4
    assert g.failures == []


@pytest.mark.parametrize("chunksize", [1, 3])
def test_an_item_that_returns_after_its_group_was_cancelled_counts_as_cancelled(
    chunksize: int,
) -> None:
    inside = threading.Event()
    ran: list[int] = []

    def fn(i: int) -> str:
        ran.append(i)
        if i == 1:
            inside.set()
            assert wait_token()
            return "late"  # returned, but under a cancelled token: a cancelled task
        return str(i)

    got: list[str] = []
    g = corral.Group(limit=1)  # one item at a time: item 0 is over before item 1 starts

    def cancel_once_item_1_runs() -> None:
        wait(inside)
        g.cancel("stop")

    canceller = threading.Thread(target=cancel_once_item_1_runs)
    canceller.start()
    try:
        with pytest.raises(corral.Cancelled, match="stop"):
            drain_into(got, g.map(fn, range(3), window=3, chunksize=chunksize))
    finally:
        canceller.join(TIMEOUT)
        g.join(TIMEOUT)
    assert got == ["0"]
    assert ran == [0, 1]  # what had not started did not run once the group was cancelled


@pytest.mark.parametrize("chunksize", [1, 2])
def test_an_item_whose_task_is_cancelled_before_it_runs_raises_cancelled_at_its_place(
    chunksize: int,
) -> None:
    gate = threading.Event()
    spawned = threading.Semaphore(0)

    def on_added(t: corral.Task[Any]) -> None:
        spawned.release()

    got: list[int] = []
    with corral.Group(limit=1, hooks=corral.Hooks(on_added=on_added)) as g, released(gate):
        blocker = g.spawn(gate.wait, TIMEOUT)  # holds the only slot: map tasks stay PENDING
        assert spawned.acquire(timeout=TIMEOUT)

        def cancel_the_first_map_task() -> None:
            # The map's one task (one slot: at most one) is spawned with the first job;
            # the second job waits for it.
            assert spawned.acquire(timeout=TIMEOUT)
            first = next(t for t in g.tasks if t is not blocker)
            assert first.state is TaskState.PENDING
            first.cancel("not this one")

        canceller = threading.Thread(target=cancel_the_first_map_task)
        canceller.start()
        try:
            with pytest.raises(corral.Cancelled, match="not this one"):
                drain_into(got, g.map(abs, range(2 * chunksize), window=2, chunksize=chunksize))
        finally:
            canceller.join(TIMEOUT)
        assert got == []
        gate.set()
    assert blocker.result() is True


@pytest.mark.parametrize("chunksize", [1, 3])
def test_a_failing_child_group_of_an_item_is_raised_at_its_chunk(chunksize: int) -> None:
    err = KeyError("child")

    def fn(i: int) -> int:
        if i == 0:
            inner = corral.Group("inner")  # not joined: its task's end joins it
            inner.spawn(raise_, err)
        return i

    got: list[int] = []
    with corral.Group() as g:
        with pytest.raises(ExceptionGroup) as info:
            drain_into(got, g.map(fn, range(3), window=1, chunksize=chunksize))
        assert info.value.exceptions == (err,)
        assert g.failures == []
    # (the chunk's values come first: the group fails its task when the chunk is over)
    assert got == ([] if chunksize == 1 else [0, 1, 2])


def raise_(exc: BaseException) -> None:
    raise exc


# -- where the consumer runs ------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_consumed_in_a_task_of_another_group(chunksize: int) -> None:
    gates = [threading.Event() for _ in range(10)]

    def fn(i: int) -> int:
        wait(gates[i])  # opened last for the first items: the consumer waits for them
        return i * i

    def release_backwards() -> None:
        for gate in reversed(gates):
            gate.set()

    def consume() -> list[int]:
        with corral.Group("mapper", limit=3) as g:
            return list(g.map(fn, range(10), chunksize=chunksize))

    with corral.Group("outer") as outer, released(*gates):
        t = outer.spawn(consume)
        release_backwards()
    assert t.result() == [i * i for i in range(10)]


def test_chunked_items_see_the_spawners_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    token = var.set("batch-9")
    try:
        with corral.Group(limit=2) as g:
            out = list(g.map(lambda i: f"{var.get()}:{i}", range(5), chunksize=2))
    finally:
        var.reset(token)
    assert out == [f"batch-9:{i}" for i in range(5)]


def test_map_tasks_run_the_groups_hooks_once_per_task() -> None:
    events: list[str] = []
    lock = threading.Lock()

    def log(what: str) -> Any:
        def hook(t: corral.Task[Any], *rest: Any) -> None:
            with lock:
                events.append(what)
        return hook

    hooks = corral.Hooks(on_started=log("started"), on_finished=log("finished"),
                         on_failed=log("failed"))
    tasks: set[corral.Task[Any]] = set()

    def fn(i: int) -> int:
        tasks.add(current())
        return abs(i)

    with corral.Group(hooks=hooks) as g:
        assert list(g.map(fn, range(-50, 50), chunksize=4)) == [abs(i) for i in range(-50, 50)]
    n = len(tasks)
    assert 1 <= n <= 25
    assert sorted(events) == ["finished"] * n + ["started"] * n


@pytest.mark.parametrize("chunksize", [1, 3])
def test_closing_the_iterator_leaves_the_map(chunksize: int) -> None:
    source, pulled = counting()
    started = threading.Event()

    def fn(i: int) -> int:
        if i >= chunksize:  # the second task: waits until cancelled
            started.set()
            assert wait_token()
        return i

    with corral.Group() as g:
        it = g.map(fn, source, window=2, chunksize=chunksize)
        assert next(it) == 0
        wait(started)
        close = getattr(it, "close")  # noqa: B009 - (typed as a plain Iterator)
        close()  # cancels what is in flight and waits for it, as leaving a for loop does
        assert len(g) == 0
        assert pulled[0] == 2 * chunksize
        with pytest.raises(StopIteration):
            next(it)
    assert g.failures == []


@pytest.mark.parametrize("chunksize", [1, 2])
def test_a_map_task_gives_its_slot_to_a_task_queued_for_it(chunksize: int) -> None:
    # limit 1: the map's task holds the slot; `other`, spawned meanwhile, queues for it.
    # Once its job is over the map's task ends rather than take the next one (which
    # waits): `other` runs, then the map goes on, on a new task.
    order: list[object] = []
    second_job_out = threading.Event()

    def source() -> Iterator[int]:
        for i in range(3 * chunksize):
            if i == 2 * chunksize:  # (asked for the third job: the second was handed out)
                second_job_out.set()
            yield i

    def fn(i: int) -> int:
        if i == 0:
            g.spawn(order.append, "other")
            wait(second_job_out)
        order.append(i)
        return i

    with corral.Group(limit=1) as g, released(second_job_out):
        assert list(g.map(fn, source(), window=3, chunksize=chunksize)) == list(
            range(3 * chunksize)
        )
    assert order == [*range(chunksize), "other", *range(chunksize, 3 * chunksize)]


def test_a_map_task_cancelled_while_it_waits_for_a_slot_ends_the_map_with_cancelled() -> None:
    # Regression (no hang): limit 1. The map's first task gives its slot to `other`
    # (queued meanwhile) and ends with jobs 1 and 2 waiting; the next job handed out
    # starts a task for the oldest waiting job (1), which queues behind `other`;
    # `other` cancels it before it runs. The map raises Cancelled at item 1.
    handed_out = threading.Event()
    cancelled = threading.Event()

    def source() -> Iterator[int]:
        for i in range(6):
            if i == 2:
                handed_out.set()
            yield i

    def other() -> None:
        wait(handed_out)
        # (the map's task for job 1 is spawned once the consumer yielded item 0 and
        # pulled item 3: wait for it)
        assert wait_for_map_task()
        task = next(t for t in g.tasks if "[map#" in t.name)
        assert task.state is TaskState.PENDING
        task.cancel("not now")
        cancelled.set()

    def wait_for_map_task() -> bool:  # (the map's second task: the first ran job 0)
        return spawned.acquire(timeout=TIMEOUT) and spawned.acquire(timeout=TIMEOUT)

    spawned = threading.Semaphore(0)

    def on_added(t: corral.Task[Any]) -> None:
        if "[map#" in t.name:
            spawned.release()

    def fn(i: int) -> int:
        if i == 0:
            g.spawn(other)
            wait(handed_out)
        return i

    got: list[int] = []
    g = corral.Group(limit=1, hooks=corral.Hooks(on_added=on_added))
    try:
        with pytest.raises(corral.Cancelled, match="not now"):
            drain_into(got, g.map(fn, source(), window=3))
    finally:
        handed_out.set()
        g.join(TIMEOUT)
    assert got == [0]
    assert cancelled.is_set()


@pytest.mark.parametrize("chunksize", [1, 2])
def test_slow_items_run_side_by_side_up_to_the_limit(chunksize: int) -> None:
    # Items that block until `limit` of them run at once: the map must start that many
    # tasks (its first task alone would wait forever), and never more.
    limit = 3
    conc = Concurrency()
    full = threading.Event()

    def fn(i: int) -> int:
        if i % chunksize == 0 and i < limit * chunksize:  # (the first item of each chunk)
            with conc as inside:
                if inside == limit:
                    full.set()
                wait(full)
        return i

    with corral.Group(limit=limit) as g, released(full):
        assert list(g.map(fn, range(40), chunksize=chunksize)) == list(range(40))
    assert conc.peak == limit
