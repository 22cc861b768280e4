"""The worker pool: threads are reused, retire when idle, are named after their task."""

from __future__ import annotations

import functools
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import corral
from corral._pool import WorkerPool, get_pool
from helpers import released

BACKSTOP = 10.0  # seconds; a generous limit for things that should happen at once


@pytest.fixture
def make_pool() -> Iterator[Callable[..., WorkerPool]]:
    """Private pools, shut down (and their workers joined) after the test."""
    pools: list[WorkerPool] = []

    def make(*, idle_timeout: float = 60.0, **options: Any) -> WorkerPool:
        pool = WorkerPool(idle_timeout=idle_timeout, name=f"test-pool-{len(pools)}", **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(timeout=BACKSTOP)


def run_on(pool: WorkerPool, n: int) -> list[threading.Thread]:
    """Run ``n`` pieces of work at the same time on ``pool`` (so ``n`` workers exist),
    and return the threads they ran on, once every piece has finished."""
    barrier = threading.Barrier(n + 1)
    threads: list[threading.Thread] = []
    lock = threading.Lock()
    finished = threading.Semaphore(0)

    def work() -> None:
        with lock:
            threads.append(threading.current_thread())
        try:
            barrier.wait(BACKSTOP)
        finally:
            finished.release()

    for _ in range(n):
        pool.submit(work)
    barrier.wait(BACKSTOP)
    for _ in range(n):
        assert finished.acquire(timeout=BACKSTOP)
    assert pool.wait_idle(BACKSTOP)
    return threads


# -- reuse ------------------------------------------------------------------------------


def test_many_short_tasks_in_a_group_reuse_a_few_threads() -> None:
    used: set[threading.Thread] = set()  # thread objects (idents can be reused by the OS)
    lock = threading.Lock()

    def noop() -> None:
        with lock:
            used.add(threading.current_thread())

    with corral.Group("many", limit=4) as g:
        tasks = [g.spawn(noop) for _ in range(500)]
    assert all(t.state is corral.TaskState.SUCCEEDED for t in tasks)
    assert 1 <= len(used) <= 12, f"{len(used)} threads for 500 tasks"


def test_many_short_tasks_without_a_limit_reuse_threads() -> None:
    used: set[threading.Thread] = set()
    lock = threading.Lock()

    def noop() -> None:
        with lock:
            used.add(threading.current_thread())

    with corral.Group("unbounded") as g:
        for _ in range(500):
            g.spawn(noop)
    assert len(used) <= 100, f"{len(used)} threads for 500 tasks"


def test_many_short_groups_in_a_row_reuse_threads() -> None:
    # Regression: Group._unregister used to trim the pool whenever the last root group
    # closed, and a join woke before the worker counted itself idle, so a program that
    # runs `with corral.Group(): ...` in a loop (one per request, say) started a thread
    # for most groups. What matters is thread *starts*: warm idle workers left by earlier
    # tests may take turns (SimpleQueue wakes them round-robin) without any start.
    before = set(threading.enumerate())
    used: set[threading.Thread] = set()

    def noop() -> None:
        used.add(threading.current_thread())

    for _ in range(300):
        with corral.Group() as g:
            g.spawn(noop)
    started = used - before  # threads the loop had to start (even if retired since)
    assert len(started) <= 2, f"{len(started)} new threads for 300 one-task groups"


def test_a_long_running_task_does_not_block_the_others() -> None:
    release = threading.Event()
    done_short = threading.Event()
    n_short = 50
    count = 0
    lock = threading.Lock()

    def long() -> bool:
        return release.wait(BACKSTOP)

    def short() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == n_short:
                done_short.set()

    g = corral.Group("mixed")
    try:
        t_long = g.spawn(long, name="long")
        for _ in range(n_short):
            g.spawn(short)
        assert done_short.wait(BACKSTOP), "short tasks waited for the long one"
        assert t_long.state is corral.TaskState.RUNNING
    finally:
        release.set()
    g.join(BACKSTOP)
    assert t_long.result() is True


def test_the_pool_is_unbounded_twenty_waiting_tasks_all_run_at_once() -> None:
    n = 20
    release = threading.Event()
    all_running = threading.Event()
    running = 0
    lock = threading.Lock()

    def wait_for_release() -> bool:
        nonlocal running
        with lock:
            running += 1
            if running == n:
                all_running.set()
        return release.wait(BACKSTOP)

    g = corral.Group("twenty")
    try:
        tasks = [g.spawn(wait_for_release) for _ in range(n)]
        assert all_running.wait(BACKSTOP), f"only {running} of {n} tasks ran at once"
        assert get_pool().busy >= n
    finally:
        release.set()
    g.join(BACKSTOP)
    assert [t.result() for t in tasks] == [True] * n


# -- thread names -----------------------------------------------------------------------


def test_worker_is_named_after_the_task_while_it_runs() -> None:
    names: list[str] = []
    threads: list[threading.Thread] = []

    def work() -> None:
        threads.append(threading.current_thread())
        names.append(threading.current_thread().name)

    with corral.Group("naming") as g:
        g.spawn(work, name="resize-images")
    assert get_pool().wait_idle(BACKSTOP)
    assert len(names) == 1
    assert "resize-images" in names[0]
    # afterwards the worker has its base name back
    assert "resize-images" not in threads[0].name
    assert threads[0].name.startswith("corral-worker")


def test_worker_gets_its_name_back_after_a_failed_task() -> None:
    threads: list[threading.Thread] = []
    names: list[str] = []

    def work() -> None:
        threads.append(threading.current_thread())
        names.append(threading.current_thread().name)
        raise RuntimeError("boom")

    g = corral.Group("naming-failure")
    g.spawn(work, name="will-fail")
    with pytest.raises(ExceptionGroup):
        g.join(BACKSTOP)
    assert get_pool().wait_idle(BACKSTOP)
    assert "will-fail" in names[0]
    assert "will-fail" not in threads[0].name
    assert threads[0].name.startswith("corral-worker")


def test_each_task_names_the_worker_it_runs_on() -> None:
    release = threading.Event()
    all_in = threading.Event()
    seen: dict[str, str] = {}
    lock = threading.Lock()

    def work(label: str) -> None:
        with lock:
            seen[label] = threading.current_thread().name
            if len(seen) == 3:
                all_in.set()
        release.wait(BACKSTOP)  # all three run at once, on three workers

    g = corral.Group("three-names")
    try:
        for label in ("alpha", "beta", "gamma"):
            g.spawn(work, label, name=f"task-{label}")
        assert all_in.wait(BACKSTOP)
    finally:
        release.set()
    g.join(BACKSTOP)
    assert sorted(seen) == ["alpha", "beta", "gamma"]
    for label, name in seen.items():
        assert f"task-{label}" in name


# -- a private pool: idle workers retire, trim, shutdown -------------------------------


def test_idle_workers_retire_and_new_ones_start_on_demand(
    make_pool: Callable[..., WorkerPool],
) -> None:
    pool = make_pool(idle_timeout=0.2)
    assert pool.threads == 0
    first = run_on(pool, 2)
    assert pool.threads == 2
    for t in first:
        t.join(BACKSTOP)  # retires after 0.2 s without work
        assert not t.is_alive()
    assert pool.threads == 0
    assert pool.idle == 0
    assert pool.busy == 0
    second = run_on(pool, 1)
    assert second[0] not in first
    second[0].join(BACKSTOP)
    assert pool.threads == 0


def test_a_worker_is_reused_while_it_has_not_retired(
    make_pool: Callable[..., WorkerPool],
) -> None:
    pool = make_pool(idle_timeout=60)
    first = run_on(pool, 1)
    again = run_on(pool, 1)
    assert again == first  # the idle worker took it: no new thread
    assert pool.threads == 1
    assert pool.idle == 1
    assert pool.busy == 0


def test_busy_counts_the_worker_running_something(
    make_pool: Callable[..., WorkerPool],
) -> None:
    pool = make_pool()
    inside = threading.Event()
    release = threading.Event()
    counts: list[int] = []

    def work() -> None:
        counts.append(pool.busy)
        inside.set()
        release.wait(BACKSTOP)

    pool.submit(work)
    try:
        assert inside.wait(BACKSTOP)
        assert pool.busy == 1
        assert not pool.wait_idle(0)
    finally:
        release.set()
    assert pool.wait_idle(BACKSTOP)
    assert counts == [1]
    assert pool.busy == 0
    assert pool.idle == pool.threads == 1


def test_trim_retires_idle_workers_at_once(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(idle_timeout=60)  # they would otherwise stay a minute
    workers = run_on(pool, 3)
    assert pool.threads == 3
    assert pool.idle == 3
    pool.trim()
    for t in workers:
        t.join(BACKSTOP)
        assert not t.is_alive()
    assert pool.threads == 0
    assert pool.wait_idle(0)
    # and the pool still works
    again = run_on(pool, 1)
    assert again[0] not in workers
    assert pool.threads == 1


def test_trim_leaves_busy_workers_running(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(idle_timeout=60)
    inside = threading.Event()
    release = threading.Event()
    log: list[str] = []

    def work() -> None:
        inside.set()
        release.wait(BACKSTOP)
        log.append("finished")

    pool.submit(work)
    try:
        assert inside.wait(BACKSTOP)
        pool.trim()
        assert pool.threads == 1
    finally:
        release.set()
    assert pool.wait_idle(BACKSTOP)
    assert log == ["finished"]


def test_shutdown_joins_the_workers(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(idle_timeout=60)
    workers = run_on(pool, 3)
    pool.shutdown(timeout=BACKSTOP)
    assert [t.is_alive() for t in workers] == [False, False, False]
    assert pool.threads == 0


def test_shutdown_waits_for_a_busy_worker(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(idle_timeout=60)
    inside = threading.Event()
    release = threading.Event()
    log: list[str] = []
    worker: list[threading.Thread] = []

    def work() -> None:
        worker.append(threading.current_thread())
        inside.set()
        release.wait(BACKSTOP)
        log.append("work finished")

    pool.submit(work)
    shutdown_done = threading.Event()

    def shut() -> None:
        pool.shutdown(timeout=BACKSTOP)
        log.append("shutdown returned")
        shutdown_done.set()

    try:
        assert inside.wait(BACKSTOP)
        threading.Thread(target=shut, daemon=True).start()
        assert not shutdown_done.wait(0.1)  # it does not return while the work runs
    finally:
        release.set()
    assert shutdown_done.wait(BACKSTOP)
    assert log == ["work finished", "shutdown returned"]
    assert not worker[0].is_alive()


def test_work_submitted_after_shutdown_runs_in_the_submitting_thread(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # Shutdown happens at interpreter exit, where Python 3.12+ refuses to start a thread:
    # with no worker left, the work runs in the caller rather than being lost.
    pool = make_pool()
    pool.shutdown(timeout=BACKSTOP)
    ran_on: list[threading.Thread] = []
    pool.submit(lambda: ran_on.append(threading.current_thread()))
    assert ran_on == [threading.current_thread()]
    assert pool.threads == 0


def test_work_submitted_after_shutdown_goes_to_a_busy_worker(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # A worker still busy at shutdown takes the work that arrives before it leaves.
    pool = make_pool()
    inside = threading.Event()
    release = threading.Event()
    ran_on: list[threading.Thread] = []
    worker: list[threading.Thread] = []

    def busy() -> None:
        worker.append(threading.current_thread())
        inside.set()
        release.wait(BACKSTOP)

    pool.submit(busy)
    with released(release):
        assert inside.wait(BACKSTOP)
        pool.shutdown(timeout=0)
        pool.submit(lambda: ran_on.append(threading.current_thread()))
        assert ran_on == []  # not in this thread: it waits for the busy worker
    worker[0].join(BACKSTOP)
    assert ran_on == worker
    assert pool.threads == 0


def test_shutdown_waits_one_bound_for_all_the_workers(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # The timeout bounds the whole shutdown, not each worker's join (interpreter exit
    # with 20 stuck tasks used to wait 20 times the bound).
    pool = make_pool()
    n = 10
    inside = threading.Semaphore(0)
    release = threading.Event()

    def stuck() -> None:
        inside.release()
        release.wait(BACKSTOP)

    with released(release):
        for _ in range(n):
            pool.submit(stuck)
        for _ in range(n):
            assert inside.acquire(timeout=BACKSTOP)
        t0 = time.monotonic()
        pool.shutdown(timeout=0.2)
        elapsed = time.monotonic() - t0
    assert elapsed < 0.2 * n / 2, f"shutdown(timeout=0.2) took {elapsed:.2f}s for {n} stuck workers"


# -- when the pool grows, and how it shrinks -------------------------------------------


def test_a_stream_of_short_tasks_does_not_grow_the_pool() -> None:
    # Regression: a submit that found every worker busy for a moment started a thread,
    # and idle workers took turns, so none retired: 20,000 no-op tasks spawned one
    # after another into an unlimited supervisor started 110-140 threads (200,000 left
    # 592). A thread starts only once work has waited.
    before = set(threading.enumerate())
    used: set[threading.Thread] = set()

    def noop() -> None:
        used.add(threading.current_thread())

    sup = corral.Supervisor("stream", handle_signals=False)
    sup.start()
    try:
        for _ in range(20_000):
            sup.spawn(noop)
    finally:
        sup.stop(timeout=BACKSTOP)
    started = used - before
    # 1-3 on a quiet machine. On a starved one, work may wait 10 ms with no worker
    # running, and then the starter rightly adds a thread: CI saw 19 at a load average
    # of 20+. The regression started 110-140.
    assert len(started) <= 48, f"{len(started)} new threads for 20,000 short tasks"


def test_idle_work_goes_to_the_most_recently_idle_worker(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # LIFO: the workers a steady load needs stay warm, the others are left to retire.
    # (A FIFO hand-out kept every worker of a burst alive, each taking its turn.)
    pool = make_pool(idle_timeout=60)
    gates = [threading.Event(), threading.Event()]
    inside = threading.Semaphore(0)
    ran_on: list[threading.Thread] = []

    def blocked(gate: threading.Event) -> None:
        ran_on.append(threading.current_thread())
        inside.release()
        gate.wait(BACKSTOP)

    with released(*gates):
        for gate in gates:
            pool.submit(functools.partial(blocked, gate))
        for _ in gates:
            assert inside.acquire(timeout=BACKSTOP)
        _first, second = ran_on
        gates[0].set()
        assert pool._wait_for(lambda: pool.idle == 1, BACKSTOP)
        gates[1].set()
        assert pool._wait_for(lambda: pool.idle == 2, BACKSTOP)
    again = run_on(pool, 1)
    assert again == [second]  # the one idle for the shortest time


def test_surplus_idle_workers_retire_soon(make_pool: Callable[..., WorkerPool]) -> None:
    # Beyond `warm` idle workers, a worker retires after `surplus_timeout` rather than
    # `idle_timeout`: a burst's threads go soon, a few stay warm.
    pool = make_pool(idle_timeout=60, warm=2, surplus_timeout=0.05)
    workers = run_on(pool, 6)
    assert pool._wait_for(lambda: pool.threads == 2, BACKSTOP), pool
    # A retired worker leaves the count just before its thread returns: join the
    # retired ones (the two warm ones stay).
    with pool._lock:
        staying = set(pool._threads)
    for t in set(workers) - staying:
        t.join(BACKSTOP)
    assert sum(t.is_alive() for t in workers) == 2
    assert pool.idle == 2
    again = run_on(pool, 2)
    assert set(again) <= set(workers)  # the warm ones serve the next work


def test_a_task_behind_busy_workers_gets_a_thread_after_the_grace(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # Every worker is busy with something long (nothing is taken from the backlog):
    # after `grace`, the waiting work gets a thread of its own.
    pool = make_pool(grace=0.01, max_wait=3600)
    _work_behind_a_long_one(pool, threads_then=2)


def test_work_that_waits_too_long_gets_a_thread_even_while_workers_progress(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # The other rule: whatever the workers do, work that waited `max_wait` gets a thread
    # (here `grace` is too long to ever apply).
    pool = make_pool(grace=3600, max_wait=0.05)
    _work_behind_a_long_one(pool)


def test_eager_work_gets_a_thread_at_once_behind_busy_workers(
    make_pool: Callable[..., WorkerPool],
) -> None:
    # A map's tasks (bounded by the group's limit) do not wait for the growth rules,
    # which here would make them wait an hour.
    pool = make_pool(grace=3600, max_wait=3600)
    _work_behind_a_long_one(pool, threads_then=2, eager=True)


def _work_behind_a_long_one(
    pool: WorkerPool, threads_then: int | None = None, *, eager: bool = False
) -> None:
    """Submit work behind a long-running one (the only worker is busy with it): the
    work must run, on a thread of its own."""
    release = threading.Event()
    inside = threading.Event()
    ran = threading.Event()

    def long() -> None:
        inside.set()
        release.wait(BACKSTOP)

    with released(release):
        pool.submit(long)
        assert inside.wait(BACKSTOP)
        pool.submit(ran.set, eager=eager)
        assert ran.wait(BACKSTOP), "the work waited behind a long-running one"
        if threads_then is not None:
            assert pool.threads == threads_then


class Work:
    """A piece of work that can be watched with a weak reference."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.ran = threading.Event()

    def __call__(self) -> None:
        self.ran.set()
        if self.gate is not None:
            self.gate.wait(BACKSTOP)


def test_the_pool_keeps_no_work_once_it_has_run(make_pool: Callable[..., WorkerPool]) -> None:
    # Work holds its task and group: a pool that kept the last item a thread started
    # with (in the thread's args, or the starter's frame) kept a closed group alive.
    pool = make_pool(grace=0.01)
    release = threading.Event()
    first = Work(release)  # starts the first worker
    second = Work()  # waits, then gets a thread from the starter
    with released(release):
        pool.submit(first)
        assert first.ran.wait(BACKSTOP)
        pool.submit(second)
        assert second.ran.wait(BACKSTOP)
    assert pool.wait_idle(BACKSTOP)
    third = Work()  # goes to an idle worker
    pool.submit(third)
    assert third.ran.wait(BACKSTOP)
    assert pool.wait_idle(BACKSTOP)
    refs = [weakref.ref(w) for w in (first, second, third)]
    del first, second, third
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert pool.threads == 2


def test_size_is_threads_idle_and_busy(make_pool: Callable[..., WorkerPool]) -> None:
    # What a snapshot shows of the pool.
    pool = make_pool(idle_timeout=60)
    run_on(pool, 3)
    release = threading.Event()
    inside = threading.Event()

    def work() -> None:
        inside.set()
        release.wait(BACKSTOP)

    with released(release):
        pool.submit(work)
        assert inside.wait(BACKSTOP)
        assert (pool.threads, pool.idle, pool.busy) == (3, 2, 1)
    assert pool.wait_idle(BACKSTOP)
    assert (pool.threads, pool.idle, pool.busy) == (3, 3, 0)


def test_work_that_raises_is_logged_and_the_worker_survives(
    make_pool: Callable[..., WorkerPool], corral_log: pytest.LogCaptureFixture
) -> None:
    pool = make_pool()
    threads: list[threading.Thread] = []

    def bad() -> None:
        threads.append(threading.current_thread())
        raise RuntimeError("not supposed to happen")

    pool.submit(bad)
    assert pool.wait_idle(BACKSTOP)
    again = run_on(pool, 1)
    assert again == threads  # the same worker took the next piece of work
    errors = [r for r in corral_log.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(errors) == 1
    assert errors[0].name == "corral"


# -- the process-wide pool after a supervisor ------------------------------------------


def test_after_the_last_supervisor_stops_no_worker_is_busy() -> None:
    n = 5
    all_started = threading.Event()
    started = 0
    ended: list[str] = []
    lock = threading.Lock()

    def loop(i: int) -> None:
        nonlocal started
        with lock:
            started += 1
            if started == n:
                all_started.set()
        while corral.sleep(10):
            pass
        with lock:
            ended.append(f"loop {i}")

    sup = corral.Supervisor("pool-sup", handle_signals=False)
    try:
        for i in range(n):
            sup.spawn(loop, i, name=f"pool-sup-loop-{i}")
        sup.start()
        assert all_started.wait(BACKSTOP)
        assert get_pool().busy >= n
    finally:
        sup.stop(timeout=BACKSTOP)
    assert sorted(ended) == [f"loop {i}" for i in range(n)]
    assert corral.roots() == []
    assert get_pool().wait_idle(BACKSTOP)
    assert get_pool().busy == 0
    still_named = [t.name for t in threading.enumerate() if "pool-sup-loop" in t.name]
    assert still_named == []
