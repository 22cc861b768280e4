"""``AsyncGroup`` and ``AsyncTask``: a group and a task handle whose waits are awaited.

The blocking classes wait on threads; these wait on an event loop, with the same names
and meaning (as ``httpx.Client``/``AsyncClient``). Everything else (spawn and its
options, cancel, get, tasks, snapshot, hooks, collect, wrap) is ``Group``'s and
``Task``'s. An ``AsyncGroup`` is bound to the loop running where it is made (or, made
outside one, where it is entered): its coroutine tasks run there, its plain functions on
worker threads.

Exit follows ``asyncio.TaskGroup`` (3.13 rules): a failure (with ``fail_fast``) or a
``cancel()`` of the group cancels its tasks *and the body*, whose ``CancelledError``
exit then absorbs; a body cancelled from outside cancels the group and re-raises
``CancelledError`` once the tasks have ended (unless tasks failed: then the
``ExceptionGroup``, the outside cancellation staying pending). Cancels of the body are
counted: the host task leaves the group as cancelling as it entered it, no more.
"""

from __future__ import annotations

import asyncio
from collections import deque

from . import _driver, _joining
from ._aio import AsyncioRunner, on_pool, runner_for, uninterrupted
from ._context import busy as _busy
from ._context import running_loop
from ._errors import Cancelled, Stopped
from ._group import Group, GroupRole
from ._loops import call_on
from ._map import map_window
from ._queries import foreground_done
from ._record import DONE
from ._supervisor import Supervisor
from ._supervisor_stop import restore_signal_handlers
from ._task import Task, current_token
from ._token import check_timeout
from ._validate import check_callable, not_callable
from ._waiting import wait_until_async

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Callable,
        Coroutine,
        Iterable,
    )
    from types import TracebackType
    from typing import Any, Literal, NoReturn, TypeVar, TypeVarTuple, Unpack, overload

    from ._group import SpawnOptions
    from ._runner import Runner

    T = TypeVar("T")
    R = TypeVar("R")
    Ts = TypeVarTuple("Ts")

else:

    def overload(fn: object) -> object:  # (typing's, for type checkers only)
        return fn

__all__ = ["AsyncGroup", "AsyncSupervisor", "AsyncTask"]


class AsyncTask(Task["T"]):
    """A task of an ``AsyncGroup`` (like ``asyncio.Task``): ``await t`` gives its result;
    ``await t.join()`` and ``await t.wait_ready()`` wait without blocking the loop;
    ``result()`` and ``exception()`` answer at once once it is done, and raise
    ``RuntimeError`` before."""

    __slots__ = ()

    async def join(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """Wait until the task has ended (and its hooks ran). Never raises its error.

        Raises ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        timeout = check_timeout("timeout", timeout)
        await self._wait_async(lambda: self._phase is DONE, timeout, "join")

    async def wait_ready(self, timeout: float | None = None) -> Any:
        """Wait until the task is ready; the value it gave to ``corral.ready()``.
        Raises ``corral.NotReady`` if it ends first."""
        timeout = check_timeout("timeout", timeout)
        await self._wait_async(self._ready_or_ended, timeout, "wait_ready")
        return self._ready_answer()

    def result(self, timeout: float | None = None) -> T:
        """The return value, or raise the task's error, once it is done (``timeout``
        is accepted for ``Task``'s signature, and ignored: this never waits)."""
        self._done_or_raise("result")
        return super().result()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's failure (None if it did not fail), once it is done."""
        self._done_or_raise("exception")
        return super().exception()

    def _done_or_raise(self, what: str) -> None:
        if self._phase is not DONE and getattr(_busy, "finishing", None) is not self:
            raise RuntimeError(
                f"task {self.name!r} is not done: await it (or its join()) before {what}()"
            )


class _OnALoop:
    """What the async classes share: the event loop they are bound to (the one running
    where they are made, else where they are entered), where their coroutine tasks run."""

    name: str
    _loop: asyncio.AbstractEventLoop | None
    _runner: AsyncioRunner | None

    def _bind_here(self) -> None:
        self._loop = running_loop()
        self._runner = None  # its loop's (looked up once)

    def _bind_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(f"{self.name!r} belongs to another event loop ({self._loop!r})")

    def _coroutine_runner(self) -> Runner:
        runner = self._runner
        if runner is not None and not runner.loop.is_closed():
            return runner
        loop = self._loop
        if loop is None:
            loop = self._loop = running_loop()
            if loop is None:
                raise RuntimeError(
                    f"{self.name!r} has no event loop yet: make or enter it "
                    "in a coroutine (async with) before spawning coroutines into it"
                )
        runner = self._runner = runner_for(loop)
        return runner

    if TYPE_CHECKING:  # (spawn is Group's: these say it returns an AsyncTask)

        @overload
        def spawn(
            self, fn: Callable[[Unpack[Ts]], NoReturn], *args: *Ts,
            **options: Unpack[SpawnOptions],
        ) -> AsyncTask[NoReturn]: ...

        @overload
        def spawn(  # noqa: F811
            self, fn: Callable[[Unpack[Ts]], Coroutine[Any, Any, T]], *args: *Ts,
            **options: Unpack[SpawnOptions],
        ) -> AsyncTask[T]: ...

        @overload
        def spawn(  # noqa: F811
            self, fn: Callable[[Unpack[Ts]], T], *args: *Ts, **options: Unpack[SpawnOptions]
        ) -> AsyncTask[T]: ...

        def spawn(  # type: ignore[misc]  # noqa: F811
            self, fn: Callable[..., Any], *args: Any, **options: Any
        ) -> AsyncTask[Any]: ...

    def __enter__(self) -> Any:
        raise TypeError(f"use 'async with' for {self.name!r}, not 'with'")

    def __exit__(self, *args: object) -> Literal[False]:  # pragma: no cover - never entered
        return False


class _AsyncGroupRole(GroupRole):
    """What an ``AsyncGroup`` does besides: a cancelled group cancels its body."""

    group: AsyncGroup

    def cancelled(self, cause: BaseException) -> None:
        # A failure (fail_fast, a KeyboardInterrupt in a task) cancels the body too, as
        # in asyncio.TaskGroup; a cancel() or a met wait_until does not: the body asked.
        if not isinstance(cause, _driver.CANCELLED_ENDS):
            self.group._request_body_cancel()


class AsyncGroup(_OnALoop, Group):
    """A group for coroutines: ``async with AsyncGroup() as g:`` awaits its tasks at
    exit (``asyncio.TaskGroup``, plus names, limits, restarts, needs and the rest of
    corral). Coroutine functions run on the group's loop, plain functions on worker
    threads. ``await g.join()`` joins without the block."""

    _Role = _AsyncGroupRole
    _Task = AsyncTask

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self._host: asyncio.Task[Any] | None = None  # the task running the body
        self._host_cancelling = 0  # its cancelling() on entry
        self._body_cancels = 0  # cancels of the body this group made (0 or 1)
        self._exiting = False
        self._bind_here()
        super().__init__(name, **options)

    # -- the body ----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncGroup:
        self._enter_once()  # (first: entered twice says so, whatever the loop)
        self._bind_running()
        host = asyncio.current_task()
        self._host = host
        self._host_cancelling = host.cancelling() if host is not None else 0
        cause = self.token.cause
        if cause is not None:  # (made cancelled: the same rule as a cancel while it runs)
            self._role.cancelled(cause)
        return self

    def _request_body_cancel(self) -> None:
        """The group was cancelled: so is its body, once (from any thread)."""
        loop = self._loop
        if self._host is None or self._exiting or loop is None:
            return
        call_on(loop, self._cancel_body)

    def _cancel_body(self) -> None:
        host = self._host
        if host is None or self._body_cancels or self._exiting or host.done():
            return
        self._body_cancels = 1
        host.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        host = self._host
        self._exiting = True  # (the body is over: nothing cancels it any more)
        cancelled_outside: BaseException | None = None
        body_exc = exc
        if isinstance(exc, asyncio.CancelledError):
            body_exc = None
            if self._cancelled_outside():
                cancelled_outside = exc
                self.cancel(Cancelled(f"the body of async group {self.name!r} was cancelled"))
        elif exc is not None:
            self.cancel(exc)
        while True:
            try:
                err = await self._join_collect_async(None, body_exc)
                break
            except asyncio.CancelledError as e:  # while waiting for the tasks
                if self._cancelled_outside():
                    cancelled_outside = e
                    self.cancel(Cancelled(f"async group {self.name!r} was cancelled while it exited"))
        ours = False  # the body ended by the cancel this group made of it
        if self._body_cancels and host is not None:
            host.uncancel()  # (balanced: the host leaves as cancelling as it entered)
            self._body_cancels = 0
            ours = isinstance(exc, asyncio.CancelledError) and cancelled_outside is None
        self._host = None
        if err is not None and err is not body_exc:
            if isinstance(err, Exception) and host is not None and host.cancelling():
                # As asyncio.TaskGroup on 3.13: a cancellation of the host from outside
                # is not lost behind the errors raised instead of it (`except*` around
                # the block would swallow it): the host's next await raises it again.
                host.uncancel()
                host.cancel()
            raise err
        if cancelled_outside is not None and err is None:
            raise cancelled_outside
        # The group's own cancel of its body never leaks out as a CancelledError (it
        # would read as a cancellation of the enclosing task); otherwise nothing to
        # raise, or the body's own exception propagates.
        return ours

    def _cancelled_outside(self) -> bool:
        """Whether the host task has a cancellation that is not this group's."""
        host = self._host
        if host is None:
            return True
        return host.cancelling() > self._host_cancelling + self._body_cancels

    async def wait_until(  # type: ignore[override]
        self, predicate: Callable[[], bool], timeout: float | None = None, *,
        interval: float = 0.05,
    ) -> bool:
        """``Group.wait_until``, awaited: poll ``predicate`` on the loop (and re-check
        whenever a task ends); when it holds, cancel the group gracefully (cause
        ``Stopped``) and return True; on timeout, cancel nothing and return False."""
        return await wait_until_async(self._life, predicate, timeout, interval, self.cancel)

    # -- map ---------------------------------------------------------------------------

    @overload  # type: ignore[override]
    def map(
        self, fn: Callable[[Any], Coroutine[Any, Any, R]],
        iterable: Iterable[Any] | AsyncIterable[Any], *, window: int | None = None,
        chunksize: int = 1,
    ) -> AsyncIterator[R]: ...

    @overload
    def map(  # noqa: F811
        self, fn: Callable[[Any], R], iterable: Iterable[Any] | AsyncIterable[Any], *,
        window: int | None = None, chunksize: int = 1,
    ) -> AsyncIterator[R]: ...

    def map(  # noqa: F811
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        *,
        window: int | None = None,
        chunksize: int = 1,
    ) -> AsyncIterator[Any]:
        """``async for value in g.map(fn, items):`` run ``fn(item)`` for each item as a
        task of this group (a coroutine function on the loop, a plain one on a worker
        thread), the items from a sync or an async iterable; yield the values in input
        order. Lazy: at most ``window`` tasks in flight (default 2 x limit, or 64), each
        over ``chunksize`` consecutive items (default 1; chunks: a default window of at
        least 4,096 items). An item's exception is raised at its place, after the items
        before it (and is not also a group failure); the rest of its chunk does not run.
        An exception of the iterable itself comes at its place too. Leaving the loop
        early cancels what is in flight once the iterator is closed: at once with
        ``aclose()`` (``contextlib.aclosing``), a little later after a bare ``break``
        (when asyncio finalizes it)."""
        if not callable(fn):
            raise not_callable(fn)
        window = map_window(self.limit, window, chunksize)
        if not hasattr(iterable, "__aiter__") and not hasattr(iterable, "__iter__"):
            raise TypeError(f"iterable must be iterable or async iterable, not {type(iterable).__name__}")
        coroutine = check_callable(fn)
        with self._life.lock:
            self._life.check_open()
        runner = self._coroutine_runner() if coroutine else None
        return _map_items(self, fn, iterable, window, chunksize, runner)

    # -- joining -------------------------------------------------------------------------

    async def join(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """Await the foreground tasks (then cancel and await background ones), close the
        group, and raise an ``ExceptionGroup`` of every failure (see ``Group.join``)."""
        err = await self._join_collect_async(timeout)
        if err is not None:
            raise err

    async def _join_collect_async(
        self, timeout: float | None, body_exc: BaseException | None = None
    ) -> BaseException | None:
        """``Group._join_collect``, awaited."""
        timeout = check_timeout("timeout", timeout)
        _joining.check_not_own_task(self)
        life = self._life
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if not await life.waiter.wait_async(lambda: foreground_done(life), timeout):
            raise _joining.timeout_error(self, life.foreground, timeout)
        _joining.end_background(self)
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            if not await life.waiter.wait_async(lambda: not life.unfinished, remaining):
                raise _joining.timeout_error(self, len(life.unfinished), timeout)
            with life.lock:
                if life.unfinished:  # (a spawn while exit waits is allowed: wait for it)
                    continue
                failures, fatal = life.close(self._role.refuse)
            break
        self._unregister()
        return _joining.outcome(life, failures, fatal, body_exc)


AsyncGroup.__module__ = AsyncTask.__module__ = "corral"


async def _map_items(
    group: AsyncGroup, fn: Callable[..., Any], iterable: Any, window: int, chunksize: int,
    runner: Runner | None,
) -> AsyncIterator[Any]:
    # In flight: each task, and the list its chunk's values go into as they come (a
    # chunk that raises has given the values before it: they come first).
    inflight: deque[tuple[AsyncTask[Any], list[Any] | None]] = deque()
    if hasattr(iterable, "__aiter__"):
        items: Any = iterable.__aiter__()
        is_async = True
    else:
        items = iter(iterable)
        is_async = False
    if chunksize == 1:
        work: Callable[..., Any] = fn
    else:
        work = _chunk_of_coroutines(fn) if runner is not None else _chunk_of_calls(fn)
    more = True
    failed: Exception | None = None  # what the iterable raised (at its place: see map)
    try:
        while True:
            while more and len(inflight) < window:
                chunk: list[Any] = []
                try:
                    while len(chunk) < chunksize:
                        chunk.append(await items.__anext__() if is_async else next(items))
                except (StopIteration, StopAsyncIteration):
                    more = False
                except Exception as e:
                    failed = e
                    more = False
                if not chunk:
                    break
                if chunksize == 1:
                    task: Any = _driver.spawn(group, work, (chunk[0],), None, in_map=True, runner=runner)
                    inflight.append((task, None))
                else:
                    given: list[Any] = []
                    task = _driver.spawn(group, work, (chunk, given), None, in_map=True, runner=runner)
                    inflight.append((task, given))
            if not inflight:
                if failed is not None:
                    raise failed
                return
            task, values = inflight.popleft()
            if values is None:
                yield await task
                continue
            try:
                await task
            except asyncio.CancelledError:
                raise  # (this consumer is cancelled)
            except BaseException:
                for value in values:  # the values given before an item raised, then it
                    yield value
                raise
            for value in values:
                yield value
    finally:
        failed = None  # (its traceback refers to this frame)
        for task, _ in inflight:
            task.cancel(Stopped("map abandoned"))
        for task, _ in inflight:
            await task.join()


def _chunk_of_coroutines(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A chunk's task, for a coroutine function: its items one after the other."""

    async def chunk(items: list[Any], values: list[Any]) -> None:
        for item in items:
            values.append(await fn(item))  # noqa: PERF401 - (each value as it comes)

    chunk.__qualname__ = chunk.__name__ = f"{getattr(fn, '__qualname__', 'map')}[chunk]"
    return chunk


def _chunk_of_calls(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A chunk's task, for a plain function (on a worker thread): its items one after
    the other, stopping at the first that raises or once the task's token is cancelled
    (raising Cancelled: the items not started do not run)."""

    def chunk(items: list[Any], values: list[Any]) -> None:
        token = current_token()
        for item in items:
            token.check()
            values.append(fn(item))
        token.check()

    chunk.__qualname__ = chunk.__name__ = f"{getattr(fn, '__qualname__', 'map')}[chunk]"
    return chunk


class AsyncSupervisor(_OnALoop, Supervisor):
    """A supervisor for coroutines: ``async with AsyncSupervisor() as sup:`` and
    ``await sup.serve()``/``stop()``/``wait()``/``join()``, none of which blocks the
    loop (the stop sequence runs on a worker thread while the loop runs the coroutine
    tasks to their ends). SIGINT/SIGTERM stop it as they stop a ``Supervisor`` (the
    first gracefully, a second gives up waiting); the earlier handlers, asyncio.run's
    own included, are put back after the stop. Cancelling ``await sup.serve()`` is a
    stop."""

    _Task = AsyncTask

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self._bind_here()
        super().__init__(name, **options)

    def __repr__(self) -> str:
        return "<corral.Async" + super().__repr__()[len("<corral."):]

    async def __aenter__(self) -> AsyncSupervisor:
        self._enter_once()  # (first: entered twice says so, whatever the loop)
        self._bind_running()
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if not self._stop.given_up(exc):
            await self.stop()
        if exc is None:
            self._stop.raise_fatal_once()
        return False

    async def stop(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """``Supervisor.stop``, awaited. A cancellation of the awaiting coroutine does
        not cut the stop short: it goes on, and is awaited to its end."""
        try:
            await _off_the_loop(Supervisor.stop, self, timeout)
        finally:
            restore_signal_handlers()  # (in the loop's thread: the main one, if any)

    async def wait(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """``Supervisor.wait``, awaited."""
        try:
            await _off_the_loop(Supervisor.wait, self, timeout, interruptible=True)
        finally:
            restore_signal_handlers()

    async def join(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """``Supervisor.join``, awaited."""
        await _off_the_loop(Supervisor.join, self, timeout, interruptible=True)

    async def serve(self) -> None:  # type: ignore[override]
        """Start, await until stopped (signal, token, ``stop()``...), stop. Cancelled,
        it stops the supervisor, then re-raises the cancellation."""
        self.start()
        try:
            await self.wait()
        finally:
            if not self._stop.done and not self._stop.given_up(None):
                await self.stop()


async def _off_the_loop(
    fn: Callable[..., Any], *args: Any, interruptible: bool = False
) -> Any:
    """A blocking supervisor call, on a worker thread: the loop goes on running the
    coroutine tasks it waits for. Not ``interruptible``: awaited to its end even if
    the awaiting coroutine is cancelled meanwhile (then the cancellation is raised)."""
    fut = on_pool(asyncio.get_running_loop(), fn, *args)
    if interruptible:
        return await fut
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await uninterrupted(fut)
        raise


AsyncSupervisor.__module__ = "corral"
