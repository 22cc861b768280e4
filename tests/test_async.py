"""Coroutines in the same tree: the asyncio runner, AsyncGroup, AsyncTask, awaiting.

DESIGN.md, "Coroutines in the same tree (asyncio)", is the contract; each test names
the rule it pins. Every test runs its coroutines under ``asyncio.run`` with a generous
backstop (``run``); synchronisation is by events, never by sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import ModuleType
from typing import Any, TypeVar

import pytest

import corral
from corral import TaskState

T = TypeVar("T")
BACKSTOP = 30.0  # seconds: a hang fails the test instead of the suite

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - a test extra (not on Windows)
    uvloop = None

LOOP_FACTORIES = ["default"]
if sys.version_info >= (3, 12):
    LOOP_FACTORIES.append("eager")
if uvloop is not None:
    LOOP_FACTORIES.append("uvloop")


@pytest.fixture(params=LOOP_FACTORIES)
def factory(request: pytest.FixtureRequest) -> str:
    """Each test runs on the default loop, with asyncio's eager task factory on 3.12+
    (a task's first step runs inside create_task), and on uvloop."""
    return str(request.param)


def run(main: Callable[[], Coroutine[Any, Any, T]], factory: str = "default") -> T:
    async def bounded() -> T:
        if factory == "eager":
            asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        async with asyncio.timeout(BACKSTOP):
            return await main()

    loop_factory = uvloop.new_event_loop if uvloop is not None and factory == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


async def forever() -> None:
    await asyncio.Event().wait()


# -- where a coroutine runs ---------------------------------------------------------------


def test_a_coroutine_spawned_from_a_thread_without_a_loop_runs_on_corrals_loop_thread() -> None:
    async def where() -> tuple[str, str | None]:
        await asyncio.sleep(0)
        task = corral.current_task()
        current = asyncio.current_task()
        assert current is not None
        assert task is not None
        assert current.get_name() == task.name  # the asyncio task's name
        return threading.current_thread().name, task.name

    with corral.Group() as g:
        t = g.spawn(where, name="where")
    assert t.result() == ("corral-loop", "where")


def test_a_coroutine_spawned_in_a_loop_into_a_plain_group_runs_on_that_loop(factory: str) -> None:
    async def main() -> None:
        me = threading.current_thread()
        g = corral.Group()

        async def where() -> threading.Thread:
            return threading.current_thread()

        t = g.spawn(where)
        assert await t is me
        await asyncio.to_thread(g.join)

    run(main, factory)


def test_spawn_never_runs_a_coroutines_first_step_even_with_an_eager_factory(factory: str) -> None:
    async def main() -> None:
        steps: list[str] = []

        async def first() -> None:
            steps.append("first step")

        async with corral.AsyncGroup() as g:
            g.spawn(first)
            steps.append("after spawn")
        assert steps == ["after spawn", "first step"]

    run(main, factory)


def test_what_counts_as_a_coroutine_function() -> None:
    async def double(x: int) -> int:
        return 2 * x

    class Callable_:
        async def __call__(self, x: int) -> int:
            return 3 * x

    @functools.wraps(double)
    def wrapper(x: int) -> Coroutine[Any, Any, int]:
        return double(x)

    with corral.Group() as g:
        a = g.spawn(functools.partial(double, 1))
        b = g.spawn(Callable_(), 1)
        c = g.spawn(wrapper, 2)  # (__wrapped__ is a coroutine function)
    assert (a.result(), b.result(), c.result()) == (2, 3, 4)


def test_a_plain_function_that_returns_a_coroutine_fails_with_how_to_spawn_it() -> None:
    async def job() -> int:
        return 1

    with pytest.raises(ExceptionGroup) as info, corral.Group() as g:
        g.spawn(lambda: job())
    [err] = info.value.exceptions
    assert isinstance(err, TypeError)
    assert "spawn the coroutine function itself" in str(err)


# -- AsyncGroup and AsyncTask ---------------------------------------------------------------


def test_an_async_group_awaits_its_tasks_coroutines_and_threads_alike(factory: str) -> None:
    async def main() -> None:
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        async with corral.AsyncGroup("g") as g:
            cs = [g.spawn(double, i) for i in range(5)]
            th = g.spawn(lambda: threading.current_thread().name)
        assert [c.result() for c in cs] == [0, 2, 4, 6, 8]
        assert th.result().startswith("corral")  # a worker thread
        assert all(isinstance(c, corral.AsyncTask) for c in cs)
        assert [await c for c in cs] == [0, 2, 4, 6, 8]

    run(main, factory)


def test_an_async_groups_limit_counts_coroutines_and_threads(factory: str) -> None:
    async def main() -> None:
        inside = 0
        peak = 0
        lock = threading.Lock()
        full = threading.Event()

        def enter() -> None:
            nonlocal inside, peak
            with lock:
                inside += 1
                peak = max(peak, inside)
                if inside == 2:
                    full.set()

        def leave() -> None:
            nonlocal inside
            with lock:
                inside -= 1

        async def coro() -> None:
            enter()
            await asyncio.to_thread(full.wait, BACKSTOP)
            leave()

        def thread() -> None:
            enter()
            full.wait(BACKSTOP)
            leave()

        async with corral.AsyncGroup(limit=2) as g:
            for i in range(6):
                g.spawn(coro if i % 2 else thread)
        assert peak == 2

    run(main, factory)


def test_an_async_tasks_result_answers_at_once_and_raises_before_it_is_done(factory: str) -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def gated() -> str:
            await gate.wait()
            return "done"

        async with corral.AsyncGroup() as g:
            t = g.spawn(gated)
            with pytest.raises(RuntimeError, match="not done: await it"):
                t.result()
            with pytest.raises(RuntimeError, match="not done"):
                t.exception()
            with pytest.raises(TimeoutError):
                await t.join(timeout=0.01)
            gate.set()
            await t.join()
            assert t.result() == "done"
            assert t.exception() is None

    run(main, factory)


def test_entering_an_async_group_with_a_plain_with_is_a_type_error() -> None:
    g = corral.AsyncGroup("g")
    with pytest.raises(TypeError, match="async with"), g:
        pass
    run(g.join)


def test_a_failure_cancels_the_siblings_and_the_body_and_exit_raises_it_once(factory: str) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def boom() -> None:
            await started.wait()
            raise ValueError("boom")

        async def sibling() -> None:
            started.set()
            await forever()

        host = asyncio.current_task()
        assert host is not None
        body_ran_on = False
        siblings: list[corral.AsyncTask[None]] = []

        async def body() -> None:
            nonlocal body_ran_on
            async with corral.AsyncGroup() as g:
                g.spawn(boom)
                siblings.append(g.spawn(sibling))
                await forever()  # the failure cancels the body here
                body_ran_on = True

        with pytest.raises(ExceptionGroup) as info:
            await body()
        assert not body_ran_on
        [s] = siblings
        assert [type(e) for e in info.value.exceptions] == [ValueError]
        assert s.state is TaskState.CANCELLED
        assert host.cancelling() == 0  # the body's cancel was balanced

    run(main, factory)


def test_a_body_cancelled_from_outside_cancels_the_group_and_reraises(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()
        tasks: list[corral.Task[Any]] = []

        async def body() -> None:
            async with corral.AsyncGroup() as g:
                tasks.append(g.spawn(forever))
                tasks.append(g.spawn(lambda: corral.current_token().wait(BACKSTOP)))
                running.set()
                await forever()

        outer = asyncio.create_task(body())
        await running.wait()
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert [t.state for t in tasks] == [TaskState.CANCELLED, TaskState.CANCELLED]

    run(main, factory)


def test_an_outside_cancel_during_a_failing_exit_is_raised_again_at_the_next_await(
    factory: str,
) -> None:
    # asyncio.TaskGroup's 3.13 rule (gh-116720), on every Python: the exit raises the
    # failures, and a cancellation of the host that arrived meanwhile is not lost when
    # `except*` handles them: the host's next await raises CancelledError.
    async def main() -> None:
        cleaning = asyncio.Event()
        failed = asyncio.Event()

        async def fails() -> None:
            failed.set()
            raise ValueError("a task failed")

        async def slow_cleanup() -> None:
            try:
                await forever()
            finally:
                cleaning.set()
                await asyncio.sleep(0.05)  # the outside cancel lands while the exit waits

        async def host() -> str:
            try:
                async with corral.AsyncGroup() as g:
                    g.spawn(slow_cleanup)
                    g.spawn(fails)
                    await forever()
            except* ValueError:
                pass
            try:
                await asyncio.sleep(0)  # (a pending cancel is raised at any await)
            except asyncio.CancelledError:
                return "the outside cancel came back"
            return "lost"

        t = asyncio.create_task(host())
        await failed.wait()
        await cleaning.wait()
        t.cancel()
        assert await t == "the outside cancel came back"

    run(main, factory)


def test_entering_an_async_group_again_under_a_new_loop_says_it_was_entered_once() -> None:
    g = corral.AsyncGroup()
    sup = corral.AsyncSupervisor(handle_signals=False)

    async def enter_both() -> None:
        async with g, sup:
            pass

    asyncio.run(enter_both())
    with pytest.raises(RuntimeError, match="entered once"):
        asyncio.run(enter_both())  # (not "belongs to another event loop")


def test_a_group_made_with_a_cancelled_token_runs_its_body_and_no_task(factory: str) -> None:
    # Regression: entering it cancelled the body (whatever the cause), and the exit let
    # that CancelledError out, as if the enclosing task had been cancelled.
    async def main() -> None:
        host = asyncio.current_task()
        assert host is not None
        token = corral.Token()
        token.cancel("shutting down")
        body_ended = False
        async with corral.AsyncGroup(token=token) as g:
            t = g.spawn(forever)
            await asyncio.sleep(0)
            body_ended = True
        assert body_ended
        assert t.state is TaskState.CANCELLED
        assert t.attempts == 0
        assert host.cancelling() == 0

    run(main, factory)


def test_the_body_cancel_a_group_makes_without_a_failure_does_not_leak_out(
    factory: str,
) -> None:
    # A cancel whose cause is not a Cancelled (here a ValueError) cancels the body too;
    # with no failure to raise, the exit absorbs that CancelledError (the enclosing task
    # was not cancelled), as asyncio.TaskGroup absorbs the cancel it makes of its body.
    async def main() -> None:
        host = asyncio.current_task()
        assert host is not None
        reached: list[str] = []
        async with corral.AsyncGroup() as g:
            t = g.spawn(forever)
            g.cancel(ValueError("enough"))
            reached.append("before the await")
            await asyncio.sleep(BACKSTOP)
            reached.append("after the await")  # (not reached: the body was cancelled)
        reached.append("after the group")
        assert reached == ["before the await", "after the group"]
        assert t.state is TaskState.CANCELLED
        assert host.cancelling() == 0

    run(main, factory)


def test_asyncio_timeout_around_corral_code_raises_timeout_error(factory: str) -> None:
    async def main() -> None:
        host = asyncio.current_task()
        assert host is not None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05), corral.AsyncGroup() as g:
                t = g.spawn(forever)
        assert t.state is TaskState.CANCELLED
        assert host.cancelling() == 0

    run(main, factory)


def test_an_enclosing_task_group_is_not_disturbed_by_corrals_cancels(factory: str) -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def victim() -> None:
            try:
                await forever()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        async def other() -> None:
            await asyncio.sleep(0)
            seen.append("other ran to its end")

        async with asyncio.TaskGroup() as tg:
            async with corral.AsyncGroup() as g:
                t = g.spawn(victim)
                g.spawn(lambda: t.cancel("enough"))
            tg.create_task(other())
        assert t.state is TaskState.CANCELLED
        return seen

    assert run(main, factory) == ["cancelled", "other ran to its end"]


# -- cancellation, both ways ----------------------------------------------------------------


def test_a_token_cancel_reaches_the_coroutine_as_cancelled_error_with_its_cause(factory: str) -> None:
    async def main() -> None:
        got: list[str] = []
        running = asyncio.Event()

        async def waits() -> None:
            running.set()
            try:
                await forever()
            except asyncio.CancelledError as e:
                got.append(str(e.args[0]) if e.args else "")
                raise

        async with corral.AsyncGroup() as g:
            t = g.spawn(waits)
            await running.wait()
            t.cancel("enough for today")
        assert t.state is TaskState.CANCELLED
        assert "enough for today" in got[0]
        assert str(t.cause) == "enough for today"
        with pytest.raises(corral.Cancelled):
            await t  # corral's Cancelled, never the awaiting coroutine's CancelledError

    run(main, factory)


def test_a_cancel_from_a_thread_reaches_a_coroutine_on_its_loop(factory: str) -> None:
    async def main() -> None:
        running = threading.Event()

        async def waits() -> None:
            running.set()
            await forever()

        async with corral.AsyncGroup() as g:
            t = g.spawn(waits)

            def canceller() -> None:
                assert running.wait(BACKSTOP)
                t.cancel("from a thread")

            g.spawn(canceller)
        assert t.state is TaskState.CANCELLED

    run(main, factory)


def test_a_task_cancelled_before_its_first_step_still_starts(factory: str) -> None:
    async def main() -> None:
        steps: list[str] = []

        async def job() -> None:
            steps.append("started")
            await asyncio.sleep(0)
            steps.append("not reached")

        async with corral.AsyncGroup() as g:
            t = g.spawn(job)
            t.cancel()
        assert steps == ["started"]
        assert t.state is TaskState.CANCELLED

    run(main, factory)


def test_cancelled_outside_corral_ends_cancelled_is_not_restarted_and_no_failure(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()
        attempts = 0

        async def job() -> None:
            nonlocal attempts
            attempts += 1
            running.set()
            await forever()

        async with corral.AsyncGroup() as g:
            t = g.spawn(job, name="victim", restart="always")
            await running.wait()
            [mine] = [a for a in asyncio.all_tasks() if a.get_name() == "victim"]
            mine.cancel()
        assert t.state is TaskState.CANCELLED
        assert attempts == 1
        assert "cancelled outside corral" in str(t.cause)
        assert g.failures == []

    run(main, factory)


def test_a_coroutine_that_swallows_a_cancel_can_still_time_out(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()

        async def stubborn() -> str:
            running.set()
            try:
                await forever()
            except asyncio.CancelledError:
                pass  # swallowed: corral's cancel stays counted until the attempt ends
            try:
                async with asyncio.timeout(0.01):
                    await forever()
            except TimeoutError:
                return "timed out"
            return "no"

        async with corral.AsyncGroup() as g:
            t = g.spawn(stubborn)
            await running.wait()
            t.cancel()
        assert t.state is TaskState.CANCELLED  # (it returned after its token was cancelled)
        assert t._result is None or t._result == "timed out"

    run(main, factory)


def test_keyboard_interrupt_in_a_coroutine_does_not_escape_the_loop(factory: str) -> None:
    async def main() -> None:
        async def interrupted() -> None:
            await asyncio.sleep(0)
            raise KeyboardInterrupt

        tasks: list[corral.AsyncTask[None]] = []

        async def body() -> None:
            async with corral.AsyncGroup() as g:
                tasks.append(g.spawn(forever))
                g.spawn(interrupted)

        with pytest.raises(KeyboardInterrupt):
            await body()
        assert tasks[0].state is TaskState.CANCELLED

    run(main, factory)


# -- everything a task has ------------------------------------------------------------------


def test_a_coroutine_task_restarts_with_backoff(factory: str) -> None:
    async def main() -> None:
        attempts = 0

        async def flaky() -> str:
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0)
            if attempts < 3:
                raise ValueError(f"attempt {attempts}")
            return "third time"

        async with corral.AsyncGroup() as g:
            t = g.spawn(flaky, restart="on_failure", backoff=corral.Backoff(initial=0, maximum=0))
        assert t.result() == "third time"
        assert t.attempts == 3

    run(main, factory)


def test_needs_work_across_coroutines_and_threads(factory: str) -> None:
    async def main() -> None:
        order: list[str] = []

        async def db() -> None:
            order.append("db ready")
            corral.ready()
            await corral.current_token().wait_async()

        def web() -> None:
            order.append("web")
            corral.ready()  # (said after its first act: worker needs it)
            corral.current_token().wait(BACKSTOP)

        async def worker() -> str:
            order.append("worker")
            return "done"

        async with corral.AsyncGroup() as g:
            d = g.spawn(db, name="db", signals_ready=True, background=True)
            g.spawn(web, name="web", needs="db", background=True, signals_ready=True)
            w = g.spawn(worker, name="worker", needs=("db", "web"))
            assert await d.wait_ready() is None
        assert w.result() == "done"
        assert order == ["db ready", "web", "worker"]

    run(main, factory)


def test_hooks_of_a_coroutine_task_run_on_its_loop_in_its_context(factory: str) -> None:
    async def main() -> None:
        seen: list[tuple[str, str | None, bool]] = []
        loop_thread = threading.current_thread()

        def hook(event: str) -> Callable[..., None]:
            def record(task: corral.Task[Any], *rest: Any) -> None:
                current = corral.current_task()
                seen.append((
                    event, current.name if current else None,
                    threading.current_thread() is loop_thread,
                ))
            return record

        hooks = corral.Hooks(
            on_started=hook("started"), on_succeeded=hook("succeeded"),
            on_finished=hook("finished"),
        )

        async def job() -> int:
            return 1

        async with corral.AsyncGroup(hooks=hooks) as g:
            g.spawn(job, name="job")
        assert seen == [("started", "job", True), ("succeeded", "job", True), ("finished", "job", True)]

    run(main, factory)


def test_a_thread_task_spawns_a_coroutine_and_a_coroutine_makes_a_child_group(factory: str) -> None:
    async def main() -> None:
        async def leaf() -> str:
            return "leaf"

        def thread_task() -> str:
            with corral.Group("made in a thread") as made:
                t = made.spawn(leaf)  # (no loop in this thread: on corral's loop thread)
            return t.result()

        async def parent() -> list[str]:
            async with corral.AsyncGroup("child") as child:
                me = corral.current_task()
                assert me is not None
                assert child.parent is me.group
                a = child.spawn(leaf)
                b = child.spawn(thread_task)
            return [a.result(), b.result()]

        async with corral.AsyncGroup("root") as g:
            p = g.spawn(parent)
        assert p.result() == ["leaf", "leaf"]

    run(main, factory)


def test_a_coroutine_task_is_not_done_until_the_groups_it_made_are() -> None:
    async def main() -> None:
        finished: list[str] = []

        async def slow_child() -> None:
            await asyncio.sleep(0.01)
            finished.append("child")

        async def parent() -> None:
            g = corral.AsyncGroup("made, never exited")
            g.spawn(slow_child)  # (the parent returns without awaiting it)

        async with corral.AsyncGroup() as g:
            t = g.spawn(parent)
        assert t.state is TaskState.SUCCEEDED
        assert finished == ["child"]

    run(main)


def test_snapshot_shows_coroutine_tasks_beside_threads(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()

        async def waits() -> None:
            running.set()
            await forever()

        async with corral.AsyncGroup("snap") as g:
            g.spawn(waits, name="coro")
            await running.wait()
            snap = g.snapshot()
            g.cancel()
        [task] = snap["tasks"]
        assert task["name"] == "coro"
        assert task["state"] == "running"

    run(main, factory)


# -- no call blocks a loop -------------------------------------------------------------------


def test_blocking_calls_on_a_loop_thread_raise_naming_the_awaited_form(factory: str) -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def gated() -> None:
            await gate.wait()

        g = corral.Group()
        t = g.spawn(gated)
        with pytest.raises(RuntimeError, match=r"await task"):
            t.result()
        with pytest.raises(RuntimeError, match=r"await task"):
            t.join()
        with pytest.raises(RuntimeError, match=r"AsyncGroup"):
            g.join()
        with pytest.raises(RuntimeError, match=r"wait_async"):
            corral.Token().wait(1)
        with pytest.raises(RuntimeError, match=r"asyncio.sleep"):
            corral.sleep(1)
        sup = corral.Supervisor(handle_signals=False)
        with pytest.raises(RuntimeError, match=r"await sup.stop"):
            sup.stop()
        with pytest.raises(RuntimeError, match=r"await g.wait_until"):
            g.wait_until(lambda: False, 1)
        for chunksize in (1, 4):
            it = g.map(abs, range(10), chunksize=chunksize)  # (made here, iterated anywhere)
            with pytest.raises(RuntimeError, match=r"AsyncGroup.map"):
                next(it)
        assert len(g) == 1  # (the refused maps started nothing)
        gate.set()
        await t
        assert t.result() is None  # done: answers at once, even here
        await asyncio.to_thread(g.join)  # (off the loop, blocking is fine)
        await asyncio.to_thread(sup.stop)

    run(main, factory)


def test_corral_sleep_in_a_coroutine_task_is_refused_by_its_own_name(factory: str) -> None:
    # It said "Token.sleep() blocks" (the token it delegates to): the user wrote
    # corral.sleep().
    async def main() -> None:
        async def naps() -> None:
            corral.sleep(0.01)

        with pytest.raises(ExceptionGroup) as info:
            async with corral.AsyncGroup() as g:
                g.spawn(naps)
        [err] = info.value.exceptions
        assert isinstance(err, RuntimeError)
        assert str(err).startswith("corral.sleep() blocks")
        assert "await asyncio.sleep()" in str(err)

    run(main, factory)


def test_async_wait_until_refuses_a_coroutine_function_predicate(factory: str) -> None:
    # It is called on the loop and its answer read as a bool: a coroutine is true, and
    # the group was cancelled at once. (Poll async state by caching it in a variable.)
    async def main() -> None:
        async def ready() -> bool:
            return False

        async with corral.AsyncGroup() as g:
            gate = asyncio.Event()
            t = g.spawn(gate.wait)
            with pytest.raises(TypeError, match=r"^predicate is a coroutine function"):
                await g.wait_until(ready, BACKSTOP)  # type: ignore[arg-type]
            assert not g.token.cancelled
            gate.set()
        assert t.state is TaskState.SUCCEEDED

    run(main, factory)


def test_collect_works_with_async_with_too(factory: str) -> None:
    # `async with g.collect():` raised TypeError (no asynchronous context manager
    # protocol), and the block's exception was never collected.
    async def main() -> list[str]:
        after: list[str] = []

        async def block() -> None:
            async with corral.AsyncGroup(fail_fast=False) as g:
                async with g.collect():
                    await asyncio.sleep(0)
                    raise ValueError("in the collected block")
                after.append("the body goes on")

        with pytest.raises(ExceptionGroup) as info:
            await block()
        [err] = info.value.exceptions
        assert isinstance(err, ValueError)
        return after

    assert run(main, factory) == ["the body goes on"]


def test_a_blocking_groups_with_block_ending_on_a_loop_cancels_its_tasks_and_refuses(
    factory: str,
) -> None:
    # `with corral.Group()` (or Supervisor) in a coroutine: the end of the block cannot
    # wait there and says so; its tasks ran on unsupervised after the error. Now the
    # group is cancelled (the supervisor stops) first.
    async def main() -> None:
        gate = asyncio.Event()  # (never set: only a cancellation ends the tasks)
        spawned: list[corral.Task[None]] = []

        async def work() -> None:
            await gate.wait()

        g = corral.Group("blocking")

        def group_block() -> None:
            with g:
                spawned.append(g.spawn(work))

        with pytest.raises(RuntimeError, match=r"use corral.AsyncGroup"):
            group_block()
        sup = corral.Supervisor("blocking-sup", handle_signals=False)

        def supervisor_block() -> None:
            with sup:
                spawned.append(sup.spawn(work, name="work"))

        with pytest.raises(RuntimeError, match=r"await sup.stop\(\) \(an AsyncSupervisor\)"):
            supervisor_block()
        # (the waits, off the loop)
        await asyncio.to_thread(g.join, BACKSTOP)
        await asyncio.to_thread(sup.wait, BACKSTOP)
        assert [t.state for t in spawned] == [TaskState.CANCELLED] * 2
        assert sup.is_stopped

    run(main, factory)


def test_awaiting_a_task_of_its_own_full_group_raises_instead_of_hanging(factory: str) -> None:
    # limit=1: the coroutine awaiting holds the only slot; what it awaits (a sibling,
    # or the tasks of a map) queues for it. That hung; now the await raises.
    async def main() -> list[str]:
        async def parent() -> int:
            child = g.spawn(asyncio.sleep, 0, 7)
            return await child

        async def mapper() -> list[int]:
            return [v async for v in g.map(abs, range(3))]

        async def block(group: corral.AsyncGroup, fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
            async with group:
                group.spawn(fn, name="waiter")

        messages = []
        for fn in (parent, mapper):
            g = corral.AsyncGroup("one-slot", limit=1, fail_fast=False)  # (the one they use)
            with pytest.raises(ExceptionGroup) as info:
                await block(g, fn)
            [err] = info.value.exceptions
            assert isinstance(err, RuntimeError)
            messages.append(str(err))
        return messages

    for message in run(main, factory):
        assert message.startswith(
            "task 'waiter' would wait forever for a task of its own group 'one-slot'"
        )


def test_an_async_supervisors_task_awaiting_its_stop_raises_runtime_error(factory: str) -> None:
    async def main() -> list[str]:
        refused: list[str] = []
        answered = asyncio.Event()

        async def waiter() -> None:
            try:
                await sup.wait()
            except RuntimeError as e:
                refused.append(str(e))
            answered.set()
            await asyncio.Event().wait()  # (until the stop cancels it)

        sup = corral.AsyncSupervisor("s", handle_signals=False)
        async with sup:
            sup.spawn(waiter)
            await answered.wait()
        return refused

    [message] = run(main, factory)
    assert message.startswith("wait() of supervisor 's' was called from inside it")


def test_token_wait_async_returns_on_cancel_or_timeout() -> None:
    async def main() -> None:
        tok = corral.Token()
        assert await tok.wait_async(0.01) is False
        timer = threading.Timer(0.01, tok.cancel)
        timer.start()
        assert await tok.wait_async(BACKSTOP) is True
        assert await tok.wait_async() is True
        timer.join(BACKSTOP)  # (the cancel can wake us before its thread has returned)

    run(main)


@pytest.mark.usefixtures("fresh_default")
def test_awaiting_a_task_of_a_blocking_group_does_not_block_the_loop(factory: str) -> None:
    async def main() -> None:
        release = threading.Event()
        t = corral.go(lambda: release.wait(BACKSTOP) and "released")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while not release.is_set():
                ticks += 1
                await asyncio.sleep(0)
                if ticks == 10:
                    release.set()

        ticker = asyncio.create_task(tick())
        assert await t == "released"
        await ticker
        assert ticks >= 10

    run(main, factory)


def test_cancelling_the_awaiting_coroutine_ends_its_wait_not_the_task(factory: str) -> None:
    # Awaiting watches: the group owns the task. Unlike awaiting an asyncio.Task (whose
    # awaiter's cancellation cancels it too), a timeout around `await t` leaves t
    # running, as `await asyncio.shield(t)` would.
    async def main() -> None:
        release = asyncio.Event()

        async def work() -> str:
            await release.wait()
            return "done"

        async with corral.AsyncGroup() as g:
            t = g.spawn(work, name="work")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(t, 0.01)
            assert t.state is TaskState.RUNNING
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await t
            assert t.state is TaskState.RUNNING
            assert not t.token.cancelled
            release.set()
            assert await t == "done"

    run(main, factory)


# -- a closing loop --------------------------------------------------------------------------


def test_tasks_alive_when_asyncio_run_returns_end_cancelled_with_hooks_run(
    factory: str, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[tuple[str, TaskState]] = []
    group: list[corral.Group] = []

    def on_finished(t: corral.Task[Any]) -> None:
        finished.append((t.name, t.state))

    async def main() -> None:
        g = corral.Group(hooks=corral.Hooks(on_finished=on_finished))
        group.append(g)
        g.spawn(forever, name="left running")
        g.spawn(forever, name="left scheduled")
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(main, factory)
    assert sorted(finished) == [
        ("left running", TaskState.CANCELLED), ("left scheduled", TaskState.CANCELLED)
    ]
    assert "destroyed but it is pending" not in caplog.text
    group[0].join(BACKSTOP)


def test_spawning_a_coroutine_onto_a_closed_loop_is_a_clear_error() -> None:
    made: list[corral.AsyncGroup] = []

    async def main() -> None:
        made.append(corral.AsyncGroup("outlived its loop"))

    run(main)

    async def job() -> None:
        pass

    with pytest.raises(RuntimeError, match="closed event loop"):
        made[0].spawn(job)
    run(made[0].join)


# -- AsyncSupervisor --------------------------------------------------------------------------


def test_an_async_supervisor_runs_coroutines_and_threads_and_stops_them(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()
        ended: list[str] = []

        async def coro() -> None:
            running.set()
            try:
                await forever()
            finally:
                ended.append("coroutine")

        def thread() -> None:
            corral.current_token().wait(BACKSTOP)
            ended.append("thread")

        async with corral.AsyncSupervisor("svc", handle_signals=False) as sup:
            c = sup.spawn(coro, name="coro")
            t = sup.spawn(thread, name="thread")
            await running.wait()
            assert isinstance(c, corral.AsyncTask)
            assert sup.is_running
        assert sup.is_stopped
        assert sorted(ended) == ["coroutine", "thread"]
        assert (c.state, t.state) == (TaskState.CANCELLED, TaskState.CANCELLED)
        assert isinstance(c.cause, corral.Stopped)

    run(main, factory)


def test_an_async_supervisor_restarts_a_coroutine_and_serves_until_its_token(factory: str) -> None:
    async def main() -> None:
        attempts = 0
        stop = corral.Token()

        async def flaky() -> None:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise ValueError(f"attempt {attempts}")
            stop.cancel("enough")  # the third attempt stops the supervisor
            await forever()

        sup = corral.AsyncSupervisor(
            "svc", handle_signals=False, token=stop,
        )
        t = sup.spawn(flaky, restart="on_failure", backoff=corral.Backoff(initial=0, maximum=0))
        await sup.serve()
        assert attempts == 3
        assert t.state is TaskState.CANCELLED
        assert [str(e).split("\n")[0] for e in sup.failures] == []  # restarted attempts are not failures

    run(main, factory)


def test_cancelling_serve_stops_the_async_supervisor(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()

        async def waits() -> None:
            running.set()
            await forever()

        sup = corral.AsyncSupervisor("svc", handle_signals=False)
        t = sup.spawn(waits)
        serving = asyncio.create_task(sup.serve())
        await running.wait()
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert sup.is_stopped
        assert t.state is TaskState.CANCELLED

    run(main, factory)


def test_a_swallowing_coroutine_is_named_in_stop_timeout_without_spinning(factory: str) -> None:
    async def main() -> None:
        running = asyncio.Event()
        release = asyncio.Event()
        cancels = 0

        async def stubborn() -> None:
            nonlocal cancels
            running.set()
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    cancels += 1  # swallowed, again and again

        sup = corral.AsyncSupervisor("svc", handle_signals=False, stop_timeout=0.2)
        sup.start()
        sup.spawn(stubborn, name="stubborn")
        await running.wait()
        with pytest.raises(corral.StopTimeout) as info:
            await sup.stop()
        assert "stubborn" in info.value.running
        assert "stubborn" in info.value.running["stubborn"] or "release.wait" in info.value.running["stubborn"]
        assert cancels == 1  # cancelled once, not in a busy loop
        release.set()
        await sup.join(BACKSTOP)

    run(main, factory)


ASYNC_SIGNAL_SCRIPT = """
import asyncio
SIG = signal.{sig}

async def worker(i, running):
    running.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        out(f"worker {{i}} cancelled")
        raise

async def main():
    before = signal.getsignal(signal.SIGINT)
    running = [asyncio.Event(), asyncio.Event()]
    async with corral.AsyncSupervisor("svc") as sup:
        tasks = [sup.spawn(worker, i, running[i], name=f"w{{i}}") for i in range(2)]

        async def send_when_running():
            for ev in running:
                await ev.wait()
            out("sending " + SIG.name)
            os.kill(os.getpid(), SIG)

        sender = asyncio.create_task(send_when_running())
        await sup.serve()
        await sender
    out("served", sorted(t.state.value for t in tasks), type(tasks[0].cause).__name__)
    out("asyncio.run's SIGINT handler back:", signal.getsignal(signal.SIGINT) == before)

watchdog(20, "serving")
asyncio.run(main())
out("exit")
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_an_async_supervisor_under_asyncio_run(sig: str) -> None:
    from test_signals import assert_clean_exit, lines
    from test_signals import run as run_script

    proc = run_script(ASYNC_SIGNAL_SCRIPT.format(sig=sig))
    assert_clean_exit(proc)
    out = lines(proc)
    assert out[0] == f"sending {sig}"
    assert sorted(out[1:3]) == ["worker 0 cancelled", "worker 1 cancelled"]
    assert out[3:] == [
        "served ['cancelled', 'cancelled'] Stopped",
        "asyncio.run's SIGINT handler back: True",
        "exit",
    ]


def test_a_coroutine_singleton_runs_once_its_lease_is_held(tmp_path: Any, factory: str) -> None:
    async def main() -> None:
        async def leader() -> int | None:
            lease = corral.current_lease()
            await asyncio.sleep(0)
            return lease.fence if lease is not None else None

        coordinator = corral.FileCoordinator(str(tmp_path))
        async with corral.AsyncGroup(coordinator=coordinator) as g:
            t = g.spawn(leader, name="leader", singleton=True)
        fence = await t
        assert isinstance(fence, int)
        assert t.lease_state == "released"

    run(main, factory)


# -- map ----------------------------------------------------------------------------------------


def test_async_map_is_ordered_lazy_and_takes_sync_or_async_functions_and_iterables(
    factory: str,
) -> None:
    async def main() -> None:
        pulled = 0
        inside = 0
        peak = 0

        async def source(n: int) -> Any:
            nonlocal pulled
            for i in range(n):
                pulled += 1
                yield i

        async def square(x: int) -> int:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0)
            inside -= 1
            return x * x

        def cube(x: int) -> int:
            return x ** 3

        async with corral.AsyncGroup(limit=2) as g:
            it = g.map(square, source(50), window=4)
            first = await it.__anext__()
            assert first == 0
            assert pulled <= 5  # lazy: the window (4) and the one taken
            rest = [v async for v in it]
            assert rest == [x * x for x in range(1, 50)]
            assert peak <= 2  # the limit holds
            assert [v async for v in g.map(cube, range(5))] == [0, 1, 8, 27, 64]

    run(main, factory)


def test_async_map_raises_an_items_error_at_its_place_and_leaving_cancels_the_rest(
    factory: str,
) -> None:
    async def main() -> None:
        started: list[int] = []

        async def job(x: int) -> int:
            started.append(x)
            if x == 2:
                raise ValueError("two")
            if x >= 3:
                await forever()
            return x

        got: list[int] = []

        async def consume(g: corral.AsyncGroup) -> None:
            async for v in g.map(job, range(6), window=6):
                got.append(v)  # noqa: PERF401 - the values before the error count

        async with corral.AsyncGroup() as g:
            with pytest.raises(ValueError, match="two"):
                await consume(g)
            assert got == [0, 1]
            assert len(g) == 0  # what was in flight was cancelled and has ended
        assert g.failures == []  # an item's error is the map's, not the group's

    run(main, factory)


@pytest.mark.parametrize("chunksize", [1, 3])
@pytest.mark.parametrize("source", ["sync", "async"])
def test_async_map_raises_an_error_of_the_iterable_after_the_items_before_it(
    factory: str, source: str, chunksize: int
) -> None:
    err = OSError("the source broke at 7")

    def sync_items() -> Iterator[int]:
        yield from range(7)
        raise err

    async def async_items() -> AsyncIterator[int]:
        for i in range(7):
            yield i
        raise err

    async def job(x: int) -> int:
        await asyncio.sleep(0)
        return x * 10

    async def main() -> None:
        got: list[int] = []

        async def consume(g: corral.AsyncGroup) -> None:
            items: Any = sync_items() if source == "sync" else async_items()
            async for v in g.map(job, items, window=4, chunksize=chunksize):
                got.append(v)  # noqa: PERF401 - the values before the error count

        async with corral.AsyncGroup(limit=2) as g:
            with pytest.raises(OSError, match="broke at 7") as info:
                await consume(g)
            assert info.value is err
        assert got == [i * 10 for i in range(7)]
        assert g.failures == []

    run(main, factory)


@pytest.mark.parametrize("kind", ["coroutine", "plain"])
def test_async_map_in_chunks_runs_each_chunk_on_one_task_in_order(
    factory: str, kind: str
) -> None:
    async def main() -> None:
        ran_by: dict[int, corral.Task[Any]] = {}

        def note(x: int) -> int:
            task = corral.current_task()
            assert task is not None
            ran_by[x] = task
            return x * 10

        async def coro(x: int) -> int:
            await asyncio.sleep(0)
            return note(x)

        async def source() -> Any:
            for i in range(10):
                yield i

        fn: Any = coro if kind == "coroutine" else note
        async with corral.AsyncGroup(limit=2) as g:
            assert [v async for v in g.map(fn, source(), chunksize=3)] == [
                i * 10 for i in range(10)
            ]
            assert [v async for v in g.map(fn, range(7), chunksize=4)] == [
                i * 10 for i in range(7)
            ]
        chunks = [[ran_by[i] for i in range(s, min(s + 4, 7))] for s in range(0, 7, 4)]
        for tasks in chunks:
            assert all(t is tasks[0] for t in tasks)  # one task per chunk
        assert chunks[0][0] is not chunks[1][0]

    run(main, factory)


@pytest.mark.parametrize("kind", ["coroutine", "plain"])
def test_async_map_in_chunks_raises_an_items_error_after_the_items_before_it(
    factory: str, kind: str
) -> None:
    async def main() -> None:
        ran: list[int] = []

        def item(x: int) -> int:
            ran.append(x)
            if x == 5:
                raise ValueError("five")
            return x

        async def coro(x: int) -> int:
            return item(x)

        fn: Any = coro if kind == "coroutine" else item
        got: list[int] = []

        async def consume(g: corral.AsyncGroup) -> None:
            async for v in g.map(fn, range(12), window=1, chunksize=4):
                got.append(v)  # noqa: PERF401 - the values before the error count

        async with corral.AsyncGroup() as g:
            with pytest.raises(ValueError, match="five"):
                await consume(g)
        assert got == [0, 1, 2, 3, 4]
        assert ran == [0, 1, 2, 3, 4, 5]  # the rest of its chunk (6, 7) never ran
        assert g.failures == []  # an item's error is the map's, not the group's

    run(main, factory)


def test_async_map_in_chunks_leaving_early_cancels_the_chunk_in_flight(factory: str) -> None:
    async def main() -> None:
        started: list[int] = []
        inside = asyncio.Event()

        async def job(x: int) -> int:
            started.append(x)
            if x >= 2:
                inside.set()
                await forever()
            return x

        async with corral.AsyncGroup() as g:
            it = g.map(job, range(100), window=2, chunksize=2)
            assert [await it.__anext__(), await it.__anext__()] == [0, 1]
            await inside.wait()
            aclose = getattr(it, "aclose")  # noqa: B009 - (typed as a plain AsyncIterator)
            await aclose()  # cancels the chunk in flight (item 2 waits), and awaits it
            assert len(g) == 0
        assert started == [0, 1, 2]  # item 3, after 2 in its chunk, never started
        assert g.failures == []

    run(main, factory)


@pytest.mark.parametrize(
    ("chunksize", "error"),
    [(0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError), ("3", TypeError)],
)
def test_async_map_rejects_a_bad_chunksize_at_the_call(chunksize: Any, error: type) -> None:
    async def main() -> None:
        async def job(x: int) -> int:
            return x

        async with corral.AsyncGroup() as g:
            with pytest.raises(error, match="chunksize"):
                g.map(job, range(3), chunksize=chunksize)

    run(main)


ASYNC_GIVE_UP_SCRIPT = """
import asyncio

async def slow_cleanup(cleaning):
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cleaning.set()
        await asyncio.Event().wait()  # a cleanup that does not end by itself

async def main():
    cleaning = asyncio.Event()
    async with corral.AsyncSupervisor("svc", stop_timeout=60) as sup:
        sup.spawn(slow_cleanup, cleaning, name="slow")

        async def signals():
            await asyncio.sleep(0)
            out("first SIGTERM")
            os.kill(os.getpid(), signal.SIGTERM)
            await cleaning.wait()
            # (not a synchronisation: one signal delivered twice within 20 ms counts
            # once, by design, so a second press must come later than that)
            await asyncio.sleep(0.05)
            out("second SIGTERM")
            os.kill(os.getpid(), signal.SIGTERM)

        sender = asyncio.create_task(signals())
        await sup.serve()

watchdog(20, "exiting")
try:
    asyncio.run(main())
except corral.StopTimeout as e:
    out("StopTimeout", sorted(e.running))
out("exit")
"""


@pytest.mark.slow
def test_a_second_signal_gives_up_once_and_the_process_exits() -> None:
    from test_signals import describe, lines
    from test_signals import run as run_script

    proc = run_script(ASYNC_GIVE_UP_SCRIPT)
    assert proc.returncode == 0, describe(proc)
    assert lines(proc) == ["first SIGTERM", "second SIGTERM", "StopTimeout ['slow']", "exit"]
    assert "StopTimeout" not in proc.stderr, describe(proc)  # raised once, caught by the script


# -- wait_until, wrap, collect ------------------------------------------------------------------


def test_async_wait_until_cancels_the_tasks_gracefully_but_not_the_body(factory: str) -> None:
    async def main() -> None:
        count = 0
        progressed = asyncio.Event()

        async def counter() -> None:
            nonlocal count
            while True:
                count += 1
                if count == 10:
                    progressed.set()
                await asyncio.sleep(0)

        async with corral.AsyncGroup() as g:
            t = g.spawn(counter)
            assert await g.wait_until(lambda: count >= 10, timeout=BACKSTOP) is True
            await asyncio.sleep(0)  # the body goes on: it was not cancelled
            assert await g.wait_until(lambda: False, timeout=0.01) is False  # (cancelled: hopeless)
        assert t.state is TaskState.CANCELLED
        assert isinstance(t.cause, corral.Stopped)
        assert progressed.is_set()

    run(main, factory)


def test_wrap_of_a_coroutine_function_is_async_and_collects_its_exceptions(factory: str) -> None:
    async def main() -> None:
        async def callback(x: int) -> str:
            await asyncio.sleep(0)
            if x:
                raise ValueError(x)
            return "ok"

        async def body(g: corral.AsyncGroup) -> None:
            wrapped = g.wrap(callback)
            assert await wrapped(0) == "ok"
            assert await wrapped(1) is None  # collected: a failure of the group

        with pytest.raises(ExceptionGroup) as info:
            async with corral.AsyncGroup(fail_fast=False) as g:
                await body(g)
        assert [str(e) for e in info.value.exceptions] == ["1"]

    run(main, factory)


def test_collect_around_awaits_lets_the_coroutines_own_cancellation_through(factory: str) -> None:
    async def main() -> None:
        entered = asyncio.Event()

        async def body() -> None:
            async with corral.AsyncGroup() as g:
                with g.collect():
                    entered.set()
                    await forever()

        t = asyncio.create_task(body())
        await entered.wait()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t  # not collected as a failure, not swallowed

    run(main, factory)


def test_coroutines_spawned_from_threads_into_an_async_group_all_run(factory: str) -> None:
    async def main() -> None:
        async def square(x: int) -> int:
            await asyncio.sleep(0)
            return x * x

        tasks: list[corral.AsyncTask[int]] = []
        lock = threading.Lock()
        async with corral.AsyncGroup("fed by threads") as g:

            def feed(base: int) -> None:
                for i in range(base, base + 300):
                    t = g.spawn(square, i)
                    with lock:
                        tasks.append(t)

            threads = [threading.Thread(target=feed, args=(k * 1000,)) for k in range(3)]
            for th in threads:
                th.start()

            def join_all() -> None:
                for th in threads:
                    th.join()

            await asyncio.to_thread(join_all)
        assert sorted(t.result() for t in tasks) == sorted(
            i * i for k in range(3) for i in range(k * 1000, k * 1000 + 300)
        )

    run(main, factory)


def test_keyboard_interrupt_in_a_coroutine_stops_an_async_supervisor_and_serve_reraises(
    factory: str,
) -> None:
    async def main() -> None:
        async def interrupted() -> None:
            await asyncio.sleep(0)
            raise KeyboardInterrupt

        sup = corral.AsyncSupervisor("svc", handle_signals=False)
        other = sup.spawn(forever, name="other")
        sup.spawn(interrupted, name="ki")
        with pytest.raises(KeyboardInterrupt):
            await sup.serve()
        assert sup.is_stopped
        assert other.state is TaskState.CANCELLED

    run(main, factory)


# -- the rest of a task's options, for coroutines -------------------------------------------


def test_replace_cancels_the_running_coroutine_and_starts_after_it_ended(factory: str) -> None:
    async def main() -> None:
        order: list[str] = []
        running = asyncio.Event()

        async def v1() -> None:
            running.set()
            try:
                await forever()
            except asyncio.CancelledError:
                order.append("v1 cancelled")
                raise

        async def v2() -> str:
            order.append("v2 runs")
            return "v2"

        async with corral.AsyncGroup() as g:
            old = g.spawn(v1, name="svc")
            await running.wait()
            new = g.spawn(v2, name="svc", replace=True)
        assert order == ["v1 cancelled", "v2 runs"]
        assert isinstance(old.cause, corral.Replaced)
        assert new.result() == "v2"

    run(main, factory)


def test_background_coroutines_are_cancelled_once_the_foreground_is_done(factory: str) -> None:
    async def main() -> None:
        async def watcher() -> None:
            await forever()

        async def job() -> int:
            await asyncio.sleep(0)
            return 1

        async with corral.AsyncGroup() as g:
            w = g.spawn(watcher, background=True)
            j = g.spawn(job)
        assert j.result() == 1
        assert w.state is TaskState.CANCELLED
        assert isinstance(w.cause, corral.Stopped)

    run(main, factory)


def test_max_restarts_ends_a_flapping_coroutine_with_restart_limit_exceeded(factory: str) -> None:
    async def main() -> None:
        async def flaps() -> None:
            await asyncio.sleep(0)
            raise ValueError("again")

        with pytest.raises(ExceptionGroup) as info:
            async with corral.AsyncGroup() as g:
                t = g.spawn(
                    flaps, restart="on_failure", max_restarts=(2, 3600),
                    backoff=corral.Backoff(initial=0, maximum=0),
                )
        [err] = info.value.exceptions
        assert isinstance(err, corral.RestartLimitExceeded)
        assert t.attempts == 3

    run(main, factory)


def test_a_coroutine_that_needs_a_task_that_ended_for_good_is_not_waited_for(factory: str) -> None:
    async def main() -> None:
        async def db() -> None:
            await asyncio.sleep(0)
            raise ValueError("db is gone")

        async def web() -> None:
            await forever()

        spawned: list[corral.AsyncTask[None]] = []

        async def body() -> None:
            async with corral.AsyncGroup(fail_fast=False) as g:
                g.spawn(db, name="db", signals_ready=True)
                spawned.append(g.spawn(web, name="web", needs="db"))

        with pytest.raises(ExceptionGroup):
            await body()
        [w] = spawned
        assert w.state is TaskState.CANCELLED
        assert "needs 'db'" in str(w.cause)

    run(main, factory)


def test_a_coroutine_task_may_stop_its_own_supervisor_without_blocking(factory: str) -> None:
    async def main() -> None:
        async def stops_a_blocking_one() -> None:
            me = corral.current_task()
            assert me is not None
            assert isinstance(me.group, corral.Supervisor)
            me.group.stop()  # begins the stop and returns: waiting would wait for itself
            await forever()  # (the stop cancels it)

        async def stops_an_async_one() -> None:
            me = corral.current_task()
            assert me is not None
            assert isinstance(me.group, corral.AsyncSupervisor)
            await me.group.stop()  # returns at once, for the same reason
            await forever()

        blocking = corral.Supervisor("blocking", handle_signals=False)
        blocking.start()
        a = blocking.spawn(stops_a_blocking_one)  # (on this thread's loop)
        await asyncio.to_thread(blocking.wait)
        sup = corral.AsyncSupervisor("async", handle_signals=False)
        b = sup.spawn(stops_an_async_one)
        await sup.serve()  # returns once the task's stop is done
        assert (a.state, b.state) == (TaskState.CANCELLED, TaskState.CANCELLED)

    run(main, factory)
