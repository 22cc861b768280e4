"""Groups: a node of the tree that owns tasks and child groups.

``Group`` is the public face: it checks what it is given and answers. What happens to
its tasks is the lifecycle's (``_lifecycle``, applied by ``_driver``, which also makes
a spawned task); how their attempts run is the runner's (``_runner``; threads by
default); its place in the tree is ``_links``'; joining it is ``_joining``'s, waiting
the waiter's (``_waiting``).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping

from . import _driver, _joining, _runner
from ._clock import SYSTEM_CLOCK
from ._context import current as _current
from ._context import not_on_a_loop, running_loop
from ._errors import GroupClosed
from ._lifecycle import Lifecycle
from ._links import Links
from ._policy import Backoff, Hooks, Restart
from ._task import Task
from ._threads import ThreadRunner
from ._token import Token, as_cause
from ._validate import (
    check_bool,
    check_callable,
    check_count,
    check_hooks,
    check_name,
    check_spawn,
    not_callable,
    unknown_options,
)
from ._waiting import wait_until

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import (
        Any,
        Literal,
        NoReturn,
        ParamSpec,
        TypedDict,
        TypeVar,
        TypeVarTuple,
        Unpack,
        overload,
    )

    from ._clock import Clock
    T = TypeVar("T")
    R = TypeVar("R")
    Ts = TypeVarTuple("Ts")
    P = ParamSpec("P")

    class SpawnOptions(TypedDict, total=False):
        """``spawn``'s options (for its overloads' signatures)."""

        name: str | None
        meta: Mapping[str, Any] | None
        background: bool
        restart: Restart | str
        backoff: Backoff | None
        max_restarts: tuple[int, float] | None
        replace: bool
        needs: Iterable[str] | str
        on_finish: Callable[[Task[Any]], object] | None
        signals_ready: bool
        singleton: bool
        drain: bool
    from ._choose_coordinator import check_coordinator
    from ._collect import Collector
    from ._coordinator import Coordinator
    from ._runner import Runner
    from ._snapshot import GroupSnapshot
else:  # the lease modules load when a group first needs them (a plain group never does)
    from ._lazy import check_coordinator

    def overload(fn: object) -> object:  # (typing's, for type checkers only)
        return fn

__all__ = ["Group", "GroupRole"]

log = logging.getLogger("corral")


_group_ids = itertools.count(1)
_thread_runner: ThreadRunner | None = None


def _runner_for_new_group() -> _runner.Runner:
    global _thread_runner
    chosen = _runner.chosen()
    if chosen is not None:
        return chosen
    if _thread_runner is None:
        _thread_runner = ThreadRunner()
    return _thread_runner


class GroupRole:
    """What a plain group does where a supervisor does something else: explicit hooks
    that ``Supervisor`` gives its own of (rather than overriding ``Group``'s methods)."""

    def __init__(self, group: Group) -> None:
        self.group = group

    def failures(self) -> list[Exception] | deque[Exception]:
        """Where failures are kept: a group raises them all from ``join``."""
        return []

    def refuse(self) -> Exception:
        """The error of a spawn into the group once it takes no new tasks."""
        return GroupClosed(f"group {self.group.name!r} is finished; it takes no new tasks")

    def cancelled(self, cause: BaseException) -> None:
        """The group's token was cancelled (after its tasks were told)."""

    def fatal(self, exc: BaseException) -> None:
        """A task raised KeyboardInterrupt/SystemExit (or another BaseException)."""
        self.group.cancel(exc)

    def close_as_child(self) -> BaseException | None:
        """The task that made the group ends: close it; what the task should raise."""
        return self.group._join_collect(None)

    def forgotten_after_fork(self) -> None:
        """In a forked child, the inherited group was closed (its tasks ended)."""


class Group:
    """A node of the tree: owns tasks and child groups, and does not finish before
    they do.

    ``with Group(...) as g:`` joins at exit; a failure cancels the siblings when
    ``fail_fast`` is on, and every failure comes out as one ``ExceptionGroup``.
    """

    _kind = "group"
    _starts_started = True  # a Supervisor queues tasks until start()
    # A plain group raises its failures from join() (where the user sees them), so it
    # logs them only at DEBUG; a supervisor raises none, so it logs them at ERROR.
    _failure_level = logging.DEBUG
    # Whether a KeyboardInterrupt/SystemExit in a task stops the group (all but
    # corral.go()'s default supervisor, which must stay usable).
    _fatal_stops = True
    _Role: type[GroupRole] = GroupRole
    _Task: type[Task[Any]] = Task  # the handle spawn returns (AsyncGroup: AsyncTask)

    def __init__(
        self,
        name: str | None = None,
        *,
        limit: int | None = None,
        fail_fast: bool = True,
        detached: bool = False,
        hooks: Hooks | None = None,
        on_finish: Callable[[Task[Any]], object] | None = None,
        token: Token | None = None,
        clock: Clock | None = None,
        coordinator: Coordinator | str | None = None,
    ) -> None:
        check_name(name)
        check_bool("fail_fast", fail_fast)
        check_bool("detached", detached)
        self._coordinator = check_coordinator(coordinator)
        limit = check_count("limit", limit)
        hooks = check_hooks(hooks, on_finish)
        if token is not None and not isinstance(token, Token):
            raise TypeError(f"token must be a corral.Token or None, not {type(token).__name__}")
        self.name: str = name if name is not None else f"{self._kind}-{next(_group_ids)}"
        self.fail_fast = fail_fast
        self.hooks: Hooks = hooks
        parent_task = None if detached else _current.get()
        self.parent: Group | None = parent_task.group if parent_task is not None else None
        self.clock: Clock = clock or (
            self.parent.clock if self.parent is not None
            else token.clock if token is not None else SYSTEM_CLOCK
        )
        # A child of the task that made it (whose cancellation cancels the group),
        # else of the token given, if any.
        self.token = Token(
            parent_task.token if parent_task is not None else token, clock=self.clock
        )
        self._role = role = self._Role(self)
        self._life = Lifecycle(
            name=self.name, kind=self._kind, token=self.token, clock=self.clock, limit=limit,
            fail_fast=fail_fast, fatal_stops=self._fatal_stops, hooks=self.hooks,
            started=self._starts_started, failures=role.failures(), group=self,
            runner=_runner_for_new_group(), failure_level=self._failure_level,
            on_fatal=role.fatal,
        )
        self._entered = False
        self._links = links = Links(self, parent_task, token)
        links.link()

    # -- introspection -------------------------------------------------------------

    def __repr__(self) -> str:
        life = self._life
        parts = [f"<corral.{type(self).__name__} {self.name!r} tasks={len(life.unfinished)}"]
        if life.failures:
            parts.append(f" failures={len(life.failures)}")
        if life.closed:
            parts.append(" closed")
        elif self.token.cancelled:
            parts.append(" cancelled")
        return "".join(parts) + ">"

    def __len__(self) -> int:
        """Tasks not yet finished (pending, running or backing off)."""
        return len(self._life.unfinished)

    @property
    def limit(self) -> int | None:
        return self._life.limit

    @property
    def tasks(self) -> list[Task[Any]]:
        """The tasks not yet finished, in spawn order."""
        with self._life.lock:
            return list(self._life.unfinished)

    @property
    def children(self) -> list[Group]:
        """Child groups alive (made by this group's tasks and not detached)."""
        out: list[Group] = []
        for task in self.tasks:
            out.extend(task._child_groups_alive())
        return out

    @property
    def closed(self) -> bool:
        return self._life.closed

    @property
    def failures(self) -> list[Exception]:
        """The failures recorded so far (each noted with its task's name)."""
        with self._life.lock:
            return list(self._life.failures)

    def get(self, name: str) -> Task[Any] | None:
        """The live task of that name, or None."""
        return self._life.live.get(name)

    def snapshot(self) -> GroupSnapshot:
        """This group's subtree, JSON-safe: name, kind, state, limit, and each live
        task (state, attempts, when its attempt started, why it waits or was
        cancelled, last error, meta, drain, a singleton's lease, the groups it made).
        A root's snapshot also shows the worker pool (threads, idle, busy)."""
        from ._snapshot import group_snapshot  # (loaded on first use)

        return group_snapshot(self)

    # -- spawning ------------------------------------------------------------------

    @overload
    def spawn(
        self, fn: Callable[[Unpack[Ts]], NoReturn], *args: *Ts, **options: Unpack[SpawnOptions]
    ) -> Task[NoReturn]: ...

    @overload
    def spawn(  # noqa: F811
        self, fn: Callable[[Unpack[Ts]], Coroutine[Any, Any, T]], *args: *Ts,
        **options: Unpack[SpawnOptions],
    ) -> Task[T]: ...

    @overload
    def spawn(  # noqa: F811
        self, fn: Callable[[Unpack[Ts]], T], *args: *Ts, **options: Unpack[SpawnOptions]
    ) -> Task[T]: ...

    def spawn(  # type: ignore[misc]  # noqa: F811
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
        background: bool = False,
        restart: Restart | str = Restart.NEVER,
        backoff: Backoff | None = None,
        max_restarts: tuple[int, float] | None = None,
        replace: bool = False,
        needs: Iterable[str] | str = (),
        on_finish: Callable[[Task[T]], object] | None = None,
        signals_ready: bool = False,
        singleton: bool = False,
        drain: bool = False,
        **unknown: Any,
    ) -> Task[Any]:
        """Start ``fn(*args)`` as a task of this group and return its handle at once.

        A coroutine function runs as an asyncio task (see ``_aio``: on the loop running
        in this thread, else on corral's own loop thread); anything else on a worker
        thread.

        ``fn`` is called with ``args`` only: to pass keyword arguments, spawn a
        ``functools.partial``. ``drain=True`` marks work that a supervisor's graceful
        stop lets finish (up to its ``drain_timeout``) instead of cancelling it.
        """
        if (
            name is None and meta is None and restart is Restart.NEVER and backoff is None
            and max_restarts is None and on_finish is None and needs == ()
            and background is False and replace is False and signals_ready is False
            and singleton is False and drain is False and not unknown
        ):  # every option at its default (most spawns): only fn to check
            if check_callable(fn):
                return _driver.spawn(self, fn, args, None, runner=self._coroutine_runner())
            return _driver.spawn(self, fn, args, None)
        if unknown:
            raise unknown_options(fn, unknown, Group.spawn.__kwdefaults__ or ())
        coroutine = check_callable(fn)
        policy, backoff, limits, needs_t = check_spawn(
            fn, name, meta, background, restart, backoff, max_restarts, replace, needs,
            on_finish, signals_ready, singleton, drain,
        )
        single = None
        if singleton:
            assert name is not None
            from ._singleton import lease_state_for  # (loaded with the first singleton)

            single = lease_state_for(self, name)
        # (positional: this is the hot path of every spawn)
        return _driver.spawn(
            self, fn, args, name, meta, background, policy, backoff, limits, replace,
            needs_t, on_finish, signals_ready, False, single, drain,
            self._coroutine_runner() if coroutine else None,
        )

    def _coroutine_runner(self) -> Runner:
        """Where this group's coroutine tasks run: the loop running in the spawning
        thread, else corral's own loop thread (an ``AsyncGroup``: its loop)."""
        from ._aio import runner_for  # (asyncio: loaded with the first coroutine task)

        return runner_for(None)

    # -- cancelling ------------------------------------------------------------------

    def cancel(self, cause: BaseException | str | None = None) -> None:
        """Cancel the whole subtree: pending tasks end without running, running ones
        see their tokens cancelled, child groups too. Idempotent."""
        self.token._cancel(as_cause(cause, f"{self._kind} {self.name!r} cancelled"))

    def _on_cancelled(self) -> None:
        _driver.group_cancelled(self._life)
        cause = self.token.cause
        assert cause is not None  # (this is the token's on_cancel callback)
        self._role.cancelled(cause)

    # -- waiting ---------------------------------------------------------------------

    def join(self, timeout: float | None = None) -> None:
        """Wait for the foreground tasks (then cancel and wait for background ones),
        close the group, and raise an ``ExceptionGroup`` of every failure.

        Raises ``TimeoutError`` if tasks are still running after ``timeout`` seconds
        (the group stays open). Failures are raised once: a later join returns None.
        """
        err = self._join_collect(timeout)
        if err is not None:
            raise err

    def _close_as_child(self) -> BaseException | None:
        """The task that made this group ends (see ``GroupRole.close_as_child``)."""
        return self._role.close_as_child()

    def _join_collect(
        self, timeout: float | None, body_exc: BaseException | None = None
    ) -> BaseException | None:
        """Join, and return what join() should raise (or None).

        An interrupt raised in this thread while it waits (Ctrl-C's KeyboardInterrupt, a
        signal handler's ``sys.exit()``) stops the group as a with-block that raised it
        does: the tasks are cancelled (with it as the cause) and waited for, and then it
        is raised. Another one during that wait (or during a block's own interrupt's)
        stops the wait: it propagates, and the cancelled tasks end on their own.
        """
        try:
            return _joining.join(self, timeout, body_exc)
        except (KeyboardInterrupt, SystemExit) as interrupt:
            if isinstance(body_exc, (KeyboardInterrupt, SystemExit)):
                raise  # (a second interrupt: wait no more)
            self.cancel(interrupt)
            return _joining.join(self, None, interrupt)

    def _unregister(self) -> None:
        """The group has closed: let go of what links it to longer-lived objects."""
        self._links.unlink()

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float | None = None, *, interval: float = 0.05
    ) -> bool:
        """Poll ``predicate`` (and re-check whenever a task ends). When it holds, cancel
        the group gracefully (cause ``Stopped``) and return True; on timeout, cancel
        nothing and return False."""
        not_on_a_loop("Group.wait_until()", "await g.wait_until() (an AsyncGroup)")
        return wait_until(self._life, predicate, timeout, interval, self.cancel)

    # -- code corral did not start -----------------------------------------------------

    def collect(self, *, background: bool = False) -> Collector:
        """A context manager for code corral did not start (callbacks, cleanup): an
        exception raised in it becomes a failure of this group (and, with
        ``fail_fast``, cancels it) instead of propagating.

        A foreground collector (the default) keeps ``join`` waiting while its block
        runs. ``Cancelled``, ``Stopped`` and ``Replaced`` are not failures.
        """
        from ._collect import Collector  # (loaded on first use)

        return Collector(self._life, background)

    @overload
    def wrap(self, fn: Callable[P, NoReturn]) -> Callable[P, None]: ...  # type: ignore[overload-overlap]

    @overload
    def wrap(  # noqa: F811
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R | None]]: ...

    @overload
    def wrap(self, fn: Callable[P, R]) -> Callable[P, R | None]: ...  # noqa: F811

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:  # noqa: F811
        """Wrap a callable that other code will call back: its exceptions are collected
        as with :meth:`collect` (the call then returns None). Once the group is closed,
        calls go straight through and their exceptions propagate."""
        if not callable(fn):
            raise not_callable(fn)
        from ._collect import wrap

        return wrap(self._life, fn)

    # -- map ---------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        window: int | None = None,
        chunksize: int = 1,
    ) -> Iterator[R]:
        """Run ``fn(item)`` for each item on tasks of this group; yield results in input
        order. Lazy: at most ``window`` jobs are in flight, each of ``chunksize``
        consecutive items (default 1). The default window is 2 x limit jobs (64 without
        a limit); for chunks, enough of them to hold 4,096 items, if that is more.

        The jobs run on the map's tasks, at most ``limit`` (and ``window``) at once; a
        task whose job is over takes the next one waiting, unless the group has tasks
        queued for a slot (they get it first).

        An item's exception is raised by the iterator at that item's place, after the
        items before it (and is not also a group failure); the rest of its chunk does
        not run. An exception of the iterable itself comes at its place too, after the
        values of the items read before it. Leaving the loop early cancels what is in
        flight.
        """
        from ._map import map_items  # (here: a group that never maps does not load it)

        return map_items(self, fn, iterable, window, chunksize)

    # -- context manager -----------------------------------------------------------

    def __enter__(self) -> Group:
        self._enter_once()
        return self

    def _enter_once(self) -> None:
        with self._life.lock:
            if self._entered:
                raise RuntimeError(
                    f"{self._kind} {self.name!r} was entered already: a group is entered "
                    "once (its with-block's end joins and closes it)"
                )
            self._entered = True

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is not None:
            self.cancel(exc)
        elif running_loop() is not None:
            # The block's end cannot wait on this thread (its loop would stand still):
            # the join below refuses, naming AsyncGroup. Cancel first, so that the tasks
            # do not outlive the block unsupervised.
            self.cancel(f"{self._kind} {self.name!r}: its with-block ended on an event loop")
        err = self._join_collect(None, exc)
        if err is None or err is exc:
            return False  # nothing to raise, or the body's own exception propagates
        raise err


Group.__module__ = "corral"


# -- fork (see _fork) -----------------------------------------------------------------


def _forget_after_fork() -> None:
    """In a forked child: the thread runner knew the parent's threads."""
    global _thread_runner
    _thread_runner = None
