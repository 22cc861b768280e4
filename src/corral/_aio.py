"""Coroutine tasks: the asyncio runner, the loops it runs on, and blocking steps off them.

A coroutine function spawned into any group runs as an asyncio task (``../README`` and
``DESIGN``: "Coroutines in the same tree"). Its attempts go through the steps
``_runner`` lists, as a thread's do, with two differences:

- The blocking steps (a singleton's campaign and release, closing groups the task made)
  run on the worker pool, awaited; a cancellation of the attempt meanwhile does not cut
  them short (they watch the task's token themselves), so no lease is ever left held.
- Cancellation: the task's token, once cancelled, cancels its asyncio task with
  ``Task.cancel(msg)`` on the loop's thread, and corral counts the cancels it makes and
  balances each with ``uncancel()`` when the attempt ends, so that ``asyncio.timeout()``
  and an enclosing ``asyncio.TaskGroup`` see no cancellation corral did not mean for them.
  An asyncio task of corral's cancelled by anyone else ends CANCELLED ("cancelled outside
  corral"), is not restarted and is no failure.

Where a coroutine runs: on its group's loop (an ``AsyncGroup`` binds the loop it is
made or entered on); for a blocking group, on the loop running in the spawning thread,
else on corral's own loop thread (started on first need, one per process). Every attempt
of a task runs on the loop of its first. A task is always created on its loop's thread,
by a callback that ``spawn`` schedules (``call_soon``/``call_soon_threadsafe``): its
first step never runs inside ``spawn()``, whatever task factory the loop has.

This module imports ``asyncio``; corral loads it with the first coroutine task.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from types import FrameType

from . import _driver
from ._context import current as _current
from ._context import exit_first, running_loop
from ._errors import Cancelled, safe_repr
from ._loops import call_on
from ._policy import call_hook
from ._pool import get_pool
from ._record import TaskState
from ._threads import ThreadSteps, close_groups

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from ._campaign import LeaseRenewer
    from ._lifecycle import Lifecycle
    from ._task import Task

    R = TypeVar("R")

__all__ = ["AsyncioRunner", "on_pool", "runner_for", "uninterrupted"]

log = logging.getLogger("corral")

OUTSIDE = "cancelled outside corral"


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)


def on_pool(loop: asyncio.AbstractEventLoop, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
    """Run blocking ``fn(*args)`` on corral's worker pool, in a copy of this context; a
    future of ``loop`` gets its outcome. (Not the loop's default executor: a campaign
    can block for as long as another process holds the lease, and a few of those would
    fill that executor.)"""
    fut: asyncio.Future[R] = loop.create_future()
    get_pool().submit(_PoolCall(loop, fut, contextvars.copy_context(), fn, args))
    return fut


class _PoolCall:
    """``on_pool``'s work. It lets go of the call (the function, its arguments, the
    context: a task, often) before it hands the outcome to the loop: what the loop
    then finishes (an attempt, a group's join) is not kept alive by a worker thread
    that has not yet returned from this."""

    __slots__ = ("call", "fut", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any],
        ctx: contextvars.Context, fn: Callable[..., Any], args: tuple[Any, ...],
    ) -> None:
        self.loop = loop
        self.fut = fut
        self.call: tuple[contextvars.Context, Callable[..., Any], tuple[Any, ...]] | None = (
            ctx, fn, args
        )

    def __call__(self) -> None:
        call, self.call = self.call, None
        assert call is not None
        value: Any = None
        exc: BaseException | None = None
        try:
            value = call[0].run(call[1], *call[2])
        except BaseException as e:
            exc = e
        del call
        call_on(self.loop, _settle, self.fut, value, exc)


async def uninterrupted(fut: asyncio.Future[R]) -> R:
    """Await a blocking step to its end, even through cancellations of this attempt
    (those are counted and balanced by the attempt; see the module docstring)."""
    while True:
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.done():
                return fut.result()


class AsyncioRunner(ThreadSteps):
    """Runs the attempts of coroutine tasks as asyncio tasks on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._tasks: dict[Task[Any], asyncio.Task[Any]] = {}  # running attempt -> its task
        self._scheduled: dict[Task[Any], None] = {}  # attempts whose creation is scheduled
        self._closing = False  # the loop is shutting down: nothing new starts on it
        # Attempts started from other threads, made on the loop by one callback.
        self._inbox: list[tuple[Lifecycle, Task[Any]]] = []
        self._inbox_lock = threading.Lock()
        self._inbox_scheduled = False
        self._watch: Any = None  # see _watch_closing
        self._why = _CLOSING  # the cause of the cancellations its shutdown makes

    def __repr__(self) -> str:
        return f"<AsyncioRunner loop={self.loop!r} running={len(self._tasks)}>"

    def start(self, life: Lifecycle, tasks: list[Task[Any]]) -> None:
        loop = self.loop
        # On the loop's own thread, with asyncio's own task factory (which never runs a
        # step inside create_task), the task is made now: asyncio.run() then cancels
        # it with the others if the program ends. Otherwise a callback makes it.
        here = running_loop() is loop
        direct = here and loop.get_task_factory() is None
        for task in tasks:
            if self._closing:
                self._cannot_run(life, task, Cancelled(_CLOSING))
                continue
            if direct:
                self._create(life, task)
                continue
            self._scheduled[task] = None
            if here:
                loop.call_soon(self._create_scheduled, life, task)
                continue
            # From another thread: batched, one wake-up of the loop for what a burst
            # of spawns queues before the loop gets to it.
            with self._inbox_lock:
                self._inbox.append((life, task))
                if self._inbox_scheduled:
                    continue
                self._inbox_scheduled = True
            try:
                loop.call_soon_threadsafe(self._take_inbox)
            except RuntimeError:  # the loop is closed: the attempts cannot run
                for life_, task_ in self._drain_inbox():
                    self._scheduled.pop(task_, None)
                    self._cannot_run(life_, task_, Cancelled(_CLOSING))

    def _drain_inbox(self) -> list[tuple[Lifecycle, Task[Any]]]:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            self._inbox_scheduled = False
        return items

    def _take_inbox(self) -> None:
        """On the loop's thread: make the tasks other threads spawned."""
        for life, task in self._drain_inbox():
            self._create_scheduled(life, task)

    def _cannot_run(self, life: Lifecycle, task: Task[Any], exc: BaseException) -> None:
        outcome = TaskState.FAILED if isinstance(exc, Exception) and not isinstance(
            exc, Cancelled
        ) else TaskState.CANCELLED
        released = _driver.end_attempt(life, task, outcome, None, exc)
        if released:
            _driver.start(life, released)

    def _create_scheduled(self, life: Lifecycle, task: Task[Any]) -> None:
        """A scheduled creation (unless the loop's shutdown ended the task already)."""
        if self._scheduled.pop(task, _ENDED) is not _ENDED:
            self._create(life, task)

    def _create(self, life: Lifecycle, task: Task[Any]) -> None:
        """On the loop's thread: the attempt's asyncio task (a loop with an eager task
        factory runs its first step here, which is on the loop, not in ``spawn``)."""
        if self._closing:
            self._cannot_run(life, task, Cancelled(_CLOSING))
            return
        if self._watch is None:
            self._watch_closing()
        try:
            self.loop.create_task(
                _attempt(self, task), name=task.name, context=task._new_context()
            )
        except BaseException as e:  # (a task factory that raises)
            self._cannot_run(life, task, e)

    def _watch_closing(self) -> None:
        """Learn when the loop shuts down (``asyncio.run`` returning): an async generator
        started on the loop is closed by its ``shutdown_asyncgens()``, which runs after
        asyncio.run cancelled the tasks it knew of and before the loop closes. Its
        ``finally`` ends what is still scheduled or running here (CANCELLED, hooks
        run): nothing is left pending on a closed loop."""
        watch = self._watch = _until_shutdown(self)
        try:
            watch.__anext__().send(None)  # (its first step registers it with the loop)
        except StopIteration:
            pass

    async def _shut_down(self) -> None:
        self._closing = True
        why = self._why
        for task in list(self._scheduled):
            self._scheduled.pop(task, None)
            self._cannot_run(task._life, task, Cancelled(why))
        while self._tasks:
            for task in list(self._tasks):
                task.token.cancel(Cancelled(why))
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def call(self, task: Task[Any]) -> Any:
        """The attempt's awaitable: the task's coroutine (a test runner runs plain
        functions on threads, awaited, through this)."""
        return task.fn(*task.args)

    # (The blocking steps are ThreadSteps': the attempt runs them on the worker pool,
    # awaited; cancel() cancels the token, whose hook cancels the asyncio task.)

    def stack(self, task: Task[Any]) -> list[FrameType] | None:
        """The frames of the attempt's coroutine chain, outermost first, found by
        walking ``cr_await`` (a suspended task's ``get_stack()`` shows only its
        outermost frame)."""
        at = self._tasks.get(task)
        if at is None:
            return None
        coro: Any = at.get_coro()
        frames: list[FrameType] = []
        for _ in range(1000):
            if coro is None:
                break
            f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if f is not None:
                frames.append(f)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return frames


_CLOSING = "its event loop is shutting down"
_ENDED = object()  # (not in _scheduled any more: the shutdown ended it)


async def _until_shutdown(runner: AsyncioRunner) -> Any:
    try:
        yield
    finally:
        await runner._shut_down()


class _Delivery:
    """An attempt's token callback: cancels its asyncio task on the loop's thread, until
    the user's coroutine is over, counting the cancels (each balanced at the end)."""

    __slots__ = ("cancels", "me", "over", "token")

    def __init__(self, me: asyncio.Task[Any], token: Any) -> None:
        self.me = me
        self.token = token
        self.cancels = 0
        self.over = False

    def __call__(self) -> None:  # in whichever thread cancelled the token
        call_on(self.me.get_loop(), self.deliver)

    def deliver(self) -> None:  # on the loop's thread
        if not self.over and not self.me.done():
            self.cancels += 1
            self.me.cancel(_message(self.token.cause))

    def outcome(self, exc: BaseException) -> tuple[TaskState, BaseException | None]:
        """What the user's coroutine raising ``exc`` makes of the attempt."""
        if isinstance(exc, asyncio.CancelledError):
            if self.cancels == 0 and self.token._cause is None:
                return TaskState.CANCELLED, Cancelled(OUTSIDE)  # not restarted, no failure
            return TaskState.CANCELLED, None
        if isinstance(exc, _driver.CANCELLED_ENDS):
            return TaskState.CANCELLED, exc
        # KeyboardInterrupt/SystemExit too: they never go through the loop
        return TaskState.FAILED, exc

    def end(self) -> None:
        """The user's coroutine is over: no more cancels; balance the ones made."""
        self.over = True
        self.token.set_hook(None)
        me = self.me
        for _ in range(self.cancels):
            me.uncancel()


def _begin(task: Task[Any], delivery: _Delivery) -> Any:
    """The start of an attempt, in its context: RUNNING, the token's hook, the current
    task, ``on_started``; returns the user's coroutine. (A plain function: the
    attempt's coroutine frame, alive as long as the task waits, stays small.)"""
    life = task._life
    if life.begin_attempt(task):  # (ready once running, unless it says so itself)
        _driver.ready_said(life, task)
    if not task.token.set_hook(delivery):  # (cancelled already: it meets it at once)
        delivery()
    _current.set(task)
    on_started = life.hooks.on_started
    if on_started is not None:
        call_hook(on_started, task)
    runner: AsyncioRunner = task._runner  # type: ignore[assignment]  # (a coroutine task's)
    coro = runner.call(task)
    if not hasattr(coro, "__await__"):
        raise TypeError(
            f"task {task.name!r}: {safe_repr(task.fn)} looks like a coroutine "
            f"function but returned {type(coro).__name__}, not an awaitable"
        )
    return coro


async def _attempt(runner: AsyncioRunner, task: Task[Any]) -> None:
    """One attempt of a coroutine task: the asyncio task's coroutine, in the attempt's
    context (the user's coroutine is awaited right here: one frame of corral's per
    task, with few locals). Starts what its end released."""
    me = asyncio.current_task()
    assert me is not None
    runner._tasks[task] = me
    try:
        renewer: LeaseRenewer | None = None
        if task._lease_state is not None:
            renewer = await _campaign(runner, task._life, task)
            if renewer is None:
                return  # (it ended without running: _campaign applied that)
        delivery = _Delivery(me, task.token)
        value: Any = None
        exc: BaseException | None = None
        try:
            value = await _begin(task, delivery)
        except BaseException as e:  # (CancelledError, KeyboardInterrupt... all of them)
            outcome, exc = delivery.outcome(e)
        else:
            outcome = TaskState.SUCCEEDED if task.token._cause is None else TaskState.CANCELLED
        finally:
            delivery.end()
        if task._child_groups:
            outcome, exc = await uninterrupted(
                on_pool(runner.loop, close_groups, task, outcome, exc)
            )
        if renewer is not None:
            # Only now, with the guarded work (and the groups it made) over.
            await uninterrupted(on_pool(runner.loop, runner.end_lease, task._life, task, renewer))
        released = _driver.end_attempt(task._life, task, outcome, value, exc)
    finally:
        runner._tasks.pop(task, None)
    if released:
        _driver.start(task._life, released)


async def _campaign(runner: AsyncioRunner, life: Lifecycle, task: Task[Any]) -> LeaseRenewer | None:
    """A singleton's campaign, on the worker pool: its renewer once the lease is held;
    None if the attempt ended instead (cancelled, or the backend failed), its end
    applied."""
    try:
        renewer = await uninterrupted(on_pool(runner.loop, runner.campaign, life, task))
    except BaseException as e:  # pragma: no cover - campaign() catches backend errors
        released = _driver.end_attempt(life, task, TaskState.FAILED, None, e)
    else:
        if renewer is not None:
            return renewer
        # cancelled while campaigning: it never ran
        released = _driver.end_attempt(life, task, TaskState.CANCELLED, None, None)
    if released:
        _driver.start(life, released)
    return None


def _message(cause: BaseException | None) -> str | None:
    return None if cause is None else safe_repr(cause)


# -- which loop ----------------------------------------------------------------------

_lock = threading.Lock()
_runners: dict[asyncio.AbstractEventLoop, AsyncioRunner] = {}
_own: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None


def runner_for(loop: asyncio.AbstractEventLoop | None) -> AsyncioRunner:
    """The runner of ``loop``; None: the loop running in this thread, else corral's own."""
    if loop is None:
        loop = running_loop() or _own_loop()
    if loop.is_closed():
        raise RuntimeError(f"cannot run a coroutine task on a closed event loop ({loop!r})")
    with _lock:
        runner = _runners.get(loop)
        if runner is None:
            for old in [lp for lp in _runners if lp.is_closed()]:
                del _runners[old]
            runner = _runners[loop] = AsyncioRunner(loop)
    return runner


def _own_loop() -> asyncio.AbstractEventLoop:
    """corral's own loop thread, for coroutines spawned from threads without a loop."""
    global _own
    with _lock:
        if _own is not None and not _own[0].is_closed() and _own[1].is_alive():
            return _own[0]
        loop = asyncio.new_event_loop()
        started = threading.Event()
        thread = threading.Thread(
            target=_run_own_loop, args=(loop, started), name="corral-loop", daemon=True
        )
        thread.start()
        started.wait()
        if _stop_own_loop not in exit_first:  # (once: a forked child inherits it)
            exit_first.append(_stop_own_loop)
        _own = (loop, thread)
        return loop


def _run_own_loop(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _stop_own_loop(deadline: float) -> None:
    """At exit: stop corral's loop. Its thread then shuts the loop down as asyncio.run
    does (``shutdown_asyncgens``: the runner's watch cancels what still runs there and
    awaits it, hooks run), waited for until ``deadline``; a coroutine that will not end
    is left to the daemon thread. The supervisors' exit handler runs this first, within
    its one bound for the process, and names such a coroutine, which it finds still
    running."""
    global _own
    own = _own
    if own is None:
        return
    loop, thread = own
    runner = _runners.get(loop)
    if runner is not None:
        runner._why = "the interpreter is exiting"
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:
        return
    thread.join(max(0.0, deadline - time.monotonic()))
    _own = None


def _after_fork_in_child() -> None:
    global _lock, _own
    _lock = threading.Lock()
    _own = None  # (its thread does not exist here)
    _runners.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
