"""Groups: a node of the tree that owns tasks and child groups.

The task lifecycle (admission, limits, dependencies, restarts, hooks, errors) lives
here; *running* an attempt is handed to a runner (``_pool.get_pool().submit`` for
threads today), so another runner (asyncio) can take its place later.

Locking: each group has one lock (``_lock``, with the condition ``_cond``). It guards
the group's bookkeeping and its tasks' states. Hooks, user callbacks and token
cancellation never run under it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, TypeVarTuple, Unpack

from ._clock import SYSTEM_CLOCK, Clock
from ._errors import (
    GRACEFUL,
    Cancelled,
    CoordinatorError,
    DuplicateTaskName,
    GroupClosed,
    LeaseLost,
    Replaced,
    RestartLimitExceeded,
    Stopped,
    describe,
    safe_repr,
)
from ._policy import NO_HOOKS, Backoff, Hooks, Restart, call_hook, check_max_restarts
from ._pool import get_pool, will_be_idle
from ._sync import YieldingLock
from ._task import _FINAL, ATTEMPT_ENDED, Singleton, Task, TaskState, _busy, _current
from ._token import Token, as_cause, check_timeout

if TYPE_CHECKING:
    from ._campaign import LeaseRenewer, campaign, release_after_run
    from ._coordinator import (
        Coordinator,
        Lease,
        check_coordinator,
        check_lease_name,
        default_coordinator,
        lease_clock,
    )
    from ._snapshot import GroupSnapshot
else:  # the lease modules load when a group first needs them (a plain group never does)
    from ._lazy import (
        LeaseRenewer,
        campaign,
        check_coordinator,
        check_lease_name,
        default_coordinator,
        lease_clock,
        release_after_run,
    )

__all__ = ["Group", "roots"]

log = logging.getLogger("corral")

T = TypeVar("T")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")
P = ParamSpec("P")

_MAIN_THREAD = threading.main_thread()
_MAIN_THREAD_SLICE = 0.1  # seconds between wake-ups of a waiting main thread

_roots: dict[Group, None] = {}
_roots_lock = threading.Lock()
_group_ids = itertools.count(1)
_DEFAULT_BACKOFF = Backoff()
# What a task may raise to end CANCELLED rather than FAILED (never a failure)
_CANCELLED_ENDS = (Cancelled, *GRACEFUL)


def _within(group: Group) -> bool:
    """Whether this thread runs (a hook or an attempt of) a task in ``group``'s subtree:
    a wait on ``group`` from here would wait for itself."""
    task = _current.get()
    busy: Group | None = getattr(_busy, "group", None)
    for start in (busy, task.group if task is not None else None):
        g = start
        while g is not None:
            if g is group:
                return True
            g = g.parent
    return False


class _DependencyLost(Cancelled):
    """Cause given to a dependent whose needed task ended (it will run again)."""


# Causes after which a task waits to run again rather than ending: what it needs ended,
# or (a singleton) it lost its lease.
_COMES_BACK = (_DependencyLost, LeaseLost)


def roots() -> list[Group]:
    """Every root group alive (made outside any task, or detached): the forest."""
    with _roots_lock:
        return list(_roots)


def check_count(what: str, value: object) -> int | None:
    """An int >= 1 or None (``limit``, ``window``, ``max_failures``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= 1 or None, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1 (or None), not {value!r}")
    return value


MAX_NAME = 200  # characters: names go into logs, thread names and snapshots


def _check_name(name: object) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} characters, not {len(name)}")
    if not name.isprintable():
        # Names reach log lines: a newline or an escape sequence in one could forge them.
        raise ValueError(f"name must be printable (no control characters), not {name!r}")


def check_bool(what: str, value: object) -> bool:
    """A flag option: True or False (``fail_fast='no'`` would be truthy)."""
    if value is not True and value is not False:
        raise TypeError(f"{what} must be True or False, not {safe_repr(value)}")
    return value


def _check_flags(
    background: object, replace: object, signals_ready: object, singleton: object, drain: object
) -> None:
    if (
        background.__class__ is not bool or replace.__class__ is not bool
        or signals_ready.__class__ is not bool or singleton.__class__ is not bool
        or drain.__class__ is not bool
    ):
        for what, value in (
            ("background", background), ("replace", replace), ("signals_ready", signals_ready),
            ("singleton", singleton), ("drain", drain),
        ):
            check_bool(what, value)


# Code flags of functions whose call returns a generator or coroutine instead of
# running the body (inspect.CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR; inspect
# itself is not imported: it is slow to import).
_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200
_CO_ANY_GENERATOR = _CO_GENERATOR | _CO_COROUTINE | _CO_ASYNC_GENERATOR


def _check_not_generator(fn: Callable[..., Any]) -> None:
    # (On every spawn: a plain function or a bound method, which forwards __code__,
    # costs one attribute read; partials and callable objects are unwrapped.)
    code = getattr(fn, "__code__", None)
    if code is None:
        target: Any = fn
        for _ in range(8):
            if isinstance(target, functools.partial):
                target = target.func
            elif (inner := getattr(target, "__func__", None)) is not None:
                target = inner
            else:
                break
        code = getattr(target, "__code__", None)
    flags = getattr(code, "co_flags", 0)
    if not isinstance(flags, int) or not flags & _CO_ANY_GENERATOR:
        return
    if flags & _CO_COROUTINE:
        kind = "a coroutine function (async def)"
        hint = "corral runs coroutine functions from its asyncio support only; call it with asyncio.run() inside a plain function for now"
    elif flags & _CO_ASYNC_GENERATOR:
        kind = "an async generator function"
        hint = "spawn a function that iterates it instead"
    else:
        kind = "a generator function"
        hint = "its body would never run: spawn a function that consumes it, e.g. lambda: list(gen())"
    raise TypeError(f"fn is {kind} ({_qualname(fn)}): {hint}")


def _qualname(fn: Callable[..., Any]) -> str:
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if qual is None:
        qual = type(fn).__qualname__
    return f"{mod}.{qual}" if mod else str(qual)


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
        _check_name(name)
        check_bool("fail_fast", fail_fast)
        check_bool("detached", detached)
        self._coordinator = check_coordinator(coordinator)
        self._limit = check_count("limit", limit)
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks must be a corral.Hooks or None, not {type(hooks).__name__}")
        if on_finish is not None:
            if not callable(on_finish):
                raise TypeError(f"on_finish must be callable, not {type(on_finish).__name__}")
            if hooks is not None and hooks.on_finished is not None:
                raise TypeError("give either on_finish= or hooks=Hooks(on_finished=...), not both")
            hooks = (hooks or NO_HOOKS).__replace__(on_finished=on_finish)
        if token is not None and not isinstance(token, Token):
            raise TypeError(f"token must be a corral.Token or None, not {type(token).__name__}")
        self.name: str = name if name is not None else f"{self._kind}-{next(_group_ids)}"
        self.fail_fast = bool(fail_fast)
        self.hooks: Hooks = hooks or NO_HOOKS
        parent_task = None if detached else _current.get()
        self.parent: Group | None = parent_task.group if parent_task is not None else None
        self.clock: Clock = clock or (
            self.parent.clock if self.parent is not None
            else token.clock if token is not None else SYSTEM_CLOCK
        )
        # Links to longer-lived objects, undone when the group closes: a task that
        # makes a group per request must not keep every closed one (and its token).
        self._parent_task = parent_task
        self._unlink_token: Callable[[], None] | None = None
        if parent_task is not None:
            self.token = Token(parent_task.token, clock=self.clock)
            if token is not None:
                self._unlink_token = token.on_cancel(self._cancel_from_given_token)
        else:
            self.token = Token(token, clock=self.clock)
        self._given_token = token

        self._lock = YieldingLock()  # hot and short: see _sync
        self._cond = threading.Condition(self._lock)  # type: ignore[arg-type]
        self._nwaiters = 0  # threads in _wait_locked: notify only when someone waits
        self._ends = 0  # tasks done so far (wait_until re-checks when it moves)
        self._live: dict[str, Task[Any]] = {}  # name -> task not yet final
        self._unfinished: dict[Task[Any], None] = {}  # not done (hooks not yet run)
        self._fg = 0  # unfinished foreground tasks
        # Parked PENDING tasks (on start / needs / a replaced task), in arrival order;
        # rescanned only on events that can unblock them (start, ready, a task's end).
        self._waiting: dict[Task[Any], None] = {}
        self._dependents: dict[str, dict[Task[Any], None]] = {}  # name -> tasks that need it
        self._queue: deque[Task[Any]] = deque()  # pending on the limit only
        self._slots = 0
        self._failures: list[Exception] = []
        self._fatal: BaseException | None = None
        self._started = self._starts_started
        self._stopping = False
        # Set (under the lock) when a failure is about to cancel the group: from then on
        # nothing more is released, so a queued sibling cannot start in the window
        # before the cancellation arrives.
        self._halted = False
        self._closed = False
        self._entered = False
        # True while a supervisor's graceful stop waits for its drain=True tasks.
        self._draining = False
        self._reported = False
        self._seq = itertools.count(1)
        self._qualnames: dict[Callable[..., Any], str] = {}  # fn -> its name base
        self._submit = get_pool().submit
        self._unlink_self: Callable[[], None] | None = self.token.on_cancel(self._on_cancelled)
        if parent_task is not None:
            if parent_task._child_groups is None:
                parent_task._child_groups = {}
            parent_task._child_groups[self] = None
        else:
            with _roots_lock:
                _roots[self] = None

    # -- introspection -------------------------------------------------------------

    def __repr__(self) -> str:
        parts = [f"<corral.{type(self).__name__} {self.name!r} tasks={len(self._unfinished)}"]
        if self._failures:
            parts.append(f" failures={len(self._failures)}")
        if self._closed:
            parts.append(" closed")
        elif self.token.cancelled:
            parts.append(" cancelled")
        return "".join(parts) + ">"

    def __len__(self) -> int:
        """Tasks not yet finished (pending, running or backing off)."""
        return len(self._unfinished)

    @property
    def limit(self) -> int | None:
        return self._limit

    @property
    def tasks(self) -> list[Task[Any]]:
        """The tasks not yet finished, in spawn order."""
        with self._lock:
            return list(self._unfinished)

    @property
    def children(self) -> list[Group]:
        """Child groups alive (made by this group's tasks and not detached)."""
        out: list[Group] = []
        for task in self.tasks:
            out.extend(g for g in (task._child_groups or ()) if not g._closed)
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failures(self) -> list[Exception]:
        """The failures recorded so far (each noted with its task's name)."""
        with self._lock:
            return list(self._failures)

    def get(self, name: str) -> Task[Any] | None:
        """The live task of that name, or None."""
        return self._live.get(name)

    def snapshot(self) -> GroupSnapshot:
        """This group's subtree, JSON-safe: name, kind, state, limit, and each live
        task (state, attempts, when its attempt started, why it waits or was
        cancelled, last error, meta, drain, a singleton's lease, the groups it made).
        A root's snapshot also shows the worker pool (threads, idle, busy)."""
        with self._lock:
            tasks = list(self._unfinished)
            state = (
                "closed" if self._closed
                else "draining" if self._draining and any(t.drain for t in tasks)
                else "cancelled" if self.token.cancelled
                else "running" if self._started else "not started"
            )
        snap: GroupSnapshot = {
            "name": self.name,
            "kind": self._kind,
            "state": state,
            "limit": self._limit,
            "tasks": [t._snapshot() for t in tasks],
        }
        if self.parent is None:
            pool = get_pool()
            snap["pool"] = {"threads": pool.threads, "idle": pool.idle, "busy": pool.busy}
        return snap

    def _waiting_for(self, task: Task[Any]) -> str:
        """Why a PENDING task waits, in words (for snapshots)."""
        single = task._single
        if single is not None and single.campaigning:
            return "lease (campaigning)"
        if not self._started:
            return f"{self._kind} not started"
        old = task._replaces
        if old is not None and old._state not in _FINAL:
            return f"replaced task {old.name!r} to end"
        for n in task.needs:
            dep = self._live.get(n)
            if dep is None:
                return f"needs {n!r} (not running)"
            if not dep._ready:
                return f"needs {n!r} (not ready)"
        if self._halted or self.token._cause is not None:
            return "group cancelled"
        return "limit"

    # -- spawning ------------------------------------------------------------------

    def spawn(
        self,
        fn: Callable[[Unpack[Ts]], T],
        *args: *Ts,
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
    ) -> Task[T]:
        """Start ``fn(*args)`` as a task of this group and return its handle at once.

        ``fn`` is called with ``args`` only: to pass keyword arguments, spawn a
        ``functools.partial``. ``drain=True`` marks work that a supervisor's graceful
        stop lets finish (up to its ``drain_timeout``) instead of cancelling it.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        _check_not_generator(fn)
        _check_flags(background, replace, signals_ready, singleton, drain)
        if name is not None:
            _check_name(name)
        elif replace:
            raise TypeError("replace=True needs a name= (it replaces the live task of that name)")
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping or None, not {type(meta).__name__}")
        if restart is not Restart.NEVER:
            restart = Restart.coerce(restart)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a corral.Backoff or None, not {type(backoff).__name__}")
        mr = None if max_restarts is None else check_max_restarts(max_restarts)
        if not needs:
            needs_t: tuple[str, ...] = ()
        elif isinstance(needs, str):
            needs_t = (needs,)
        else:
            try:
                needs_t = tuple(needs)
            except TypeError:
                raise TypeError(
                    f"needs must be a task name or an iterable of names, not {type(needs).__name__}"
                ) from None
        for n in needs_t:
            if not isinstance(n, str):
                raise TypeError(f"needs must name tasks by str, not {type(n).__name__}")
        if on_finish is not None and not callable(on_finish):
            raise TypeError(f"on_finish must be callable, not {type(on_finish).__name__}")
        if restart is not Restart.NEVER and backoff is None:
            backoff = _DEFAULT_BACKOFF
        coordinator = None
        if singleton:
            if name is None:
                raise TypeError(
                    "a singleton task needs a name= (its lease is named after it, and every "
                    "process that runs it must use the same name)"
                )
            check_lease_name(name)
            coordinator = self._find_coordinator()
        # (positional: this is the hot path of every spawn)
        return self._spawn(
            fn, args, name, meta, background, restart, backoff, mr, replace,
            needs_t, on_finish, signals_ready, False, coordinator, drain,
        )

    def _find_coordinator(self) -> Coordinator:
        """This group's coordinator, else the nearest ancestor's, else the process's."""
        g: Group | None = self
        while g is not None:
            if g._coordinator is not None:
                return g._coordinator
            g = g.parent
        return default_coordinator()

    def _spawn(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        name: str | None,
        meta: Mapping[str, Any] | None = None,
        background: bool = False,
        restart: Restart = Restart.NEVER,
        backoff: Backoff | None = None,
        max_restarts: tuple[int, float] | None = None,
        replace: bool = False,
        needs: tuple[str, ...] = (),
        on_finish: Callable[[Task[Any]], object] | None = None,
        signals_ready: bool = False,
        in_map: bool = False,
        singleton: Coordinator | None = None,
        drain: bool = False,
    ) -> Task[Any]:
        old: Task[Any] | None = None
        auto = name is None
        if name is None:
            try:
                base = self._qualnames.get(fn)
            except TypeError:  # an unhashable callable (e.g. a callable dataclass)
                base = _qualname(fn)
            if base is None:
                base = _qualname(fn)
                if len(self._qualnames) >= 256:  # a bound, for groups fed fresh lambdas
                    self._qualnames.clear()
                self._qualnames[fn] = base
            name = f"{base}#{next(self._seq)}"  # next() of a count is atomic
        # Made outside the lock: the critical section stays short (the spawner and
        # the workers finishing tasks contend for it).
        task: Task[Any] = Task(
            self, fn, args, name, meta, background, restart, backoff, max_restarts, needs,
            on_finish, signals_ready, in_map, singleton, drain,
        )
        with self._lock:
            self._check_open_locked()
            if auto:
                while name in self._live:  # an explicit name took it: take the next
                    name = task.name = f"{base}#{next(self._seq)}"
            else:
                old = self._live.get(name)
                if old is not None and not replace:
                    raise DuplicateTaskName(
                        f"a task named {name!r} is already live in {self.name!r}; "
                        "pass replace=True to replace it"
                    )
            if needs:
                self._check_needs_locked(name, needs)
            self._unfinished[task] = None
            if not background:
                self._fg += 1
            self._live[name] = task
            for n in needs:
                self._dependents.setdefault(n, {})[task] = None
            ended: list[Task[Any]] = []
            if old is None and self.hooks.on_added is None:
                # The common case, in one lock section: nothing to run in between.
                released = self._admit_locked(task, ended)
                old_done = True
            else:
                released = []
                old_done = False
                # on_added runs outside the lock: until it has, others only note a
                # cancellation (see _hold), so no end hook can come before it.
                task._hold = True
            cancel_old = False
            if old is not None:
                old._replaced_by = task
                if old._cancel_cause is None:
                    old._cancel_cause = _replaced(name)
                if old._state is TaskState.RUNNING or old._hold:
                    # Running, or held by a thread between lock sections (which sees
                    # the cause when it takes the lock again): wait for it to end.
                    task._replaces = old
                    cancel_old = old._state is TaskState.RUNNING
                else:  # pending or backing off: it ends now, without running again
                    # ...but it may itself have been waiting for an older run of this
                    # name that is still winding down: the new task waits for that one.
                    older = old._replaces
                    task._replaces = older if older is not None and older._state not in _FINAL else None
                    self._end_waiting_locked(old, old._cancel_cause)
                    ended.append(old)
        if cancel_old:
            assert old is not None
            assert old._cancel_cause is not None
            old.token.cancel(old._cancel_cause)
        for t in ended:
            self._finalize(t)
        if old_done:
            if released:
                self._submit_all(released)
            return task
        _in_ctx(task, call_hook, self.hooks.on_added, task)
        ended = []
        with self._lock:
            task._hold = False
            if task._state is TaskState.PENDING and task not in self._waiting:
                # (ends it instead if it was cancelled while on_added ran)
                released = self._admit_locked(task, ended)
            else:
                released = []
        for t in ended:
            self._finalize(t)
        if released:
            self._submit_all(released)
        return task

    def _check_needs_locked(self, name: str, needs: tuple[str, ...]) -> None:
        for n in needs:
            if n == name or (n not in self._live):
                known = ", ".join(repr(k) for k in list(self._live)[:20]) or "none"
                raise ValueError(
                    f"needs names {n!r}, which is not a live task of group {self.name!r} "
                    f"(spawn what a task needs first; live tasks: {known})"
                )
        # A cycle: what it needs (directly or not) needs a task of this name. Possible
        # when a task of this name ended (or is replaced) while a task needing it waits.
        seen: set[str] = set()
        path: list[str] = []
        stack = [(n, 0) for n in needs]
        while stack:
            n, depth = stack.pop()
            del path[depth:]
            path.append(n)
            if n == name:
                chain = " -> ".join(repr(x) for x in [name, *path])
                raise ValueError(
                    f"spawning {name!r} with needs={needs!r} would make a dependency cycle "
                    f"({chain}): neither could ever start"
                )
            if n in seen:
                continue
            seen.add(n)
            dep = self._live.get(n)
            if dep is not None:
                stack.extend((m, depth + 1) for m in dep.needs)

    def _check_open_locked(self) -> None:
        if self._closed:
            raise GroupClosed(f"group {self.name!r} is finished; it takes no new tasks")

    # -- admission -------------------------------------------------------------------

    def _blocked_locked(self, task: Task[Any]) -> bool:
        if not self._started:
            return True
        old = task._replaces
        if old is not None:
            if old._state not in _FINAL:
                return True
            task._replaces = None
        for n in task.needs:
            dep = self._live.get(n)
            if dep is None or not dep._ready:
                return True
        return False

    def _admit_locked(self, task: Task[Any], ended: list[Task[Any]]) -> list[Task[Any]]:
        """Place a PENDING task: release it, queue it on the limit, or park it.

        A task that must end instead (its group was cancelled) is added to ``ended``,
        for the caller to finalize once the lock is released.
        """
        if self.token._cause is not None or task._cancel_cause is not None:
            # Spawned into (or restarted in) a cancelled group: it ends without running.
            self._end_waiting_locked(task, task._cancel_cause or self.token._cause)
            ended.append(task)
            return []
        if (
            (not self._started or task._replaces is not None or task.needs)
            and self._blocked_locked(task)
        ):
            self._waiting[task] = None
            return []
        if self._halted or self._no_slot_locked(task):
            self._queue.append(task)
            return []
        self._release_locked(task)
        return [task]

    def _pump_locked(self, scan: bool = False) -> list[Task[Any]]:
        """Release what can run now: with ``scan``, parked tasks that are no longer
        blocked; then the limit queue in FIFO order."""
        released: list[Task[Any]] = []
        if self._halted:
            return released
        if scan and self._waiting:
            still: dict[Task[Any], None] = {}
            for task in self._waiting:
                if task._state is not TaskState.PENDING:
                    continue
                if self._blocked_locked(task):
                    still[task] = None
                elif self._no_slot_locked(task):
                    self._queue.append(task)
                else:
                    self._release_locked(task)
                    released.append(task)
            self._waiting = still
        queue = self._queue
        while queue and not self._no_slot_locked(queue[0]):
            task = queue.popleft()
            if task._state is not TaskState.PENDING:
                continue
            if task.needs and self._blocked_locked(task):
                # What it needs ended while it queued for a slot: park it again.
                self._waiting[task] = None
                continue
            self._release_locked(task)
            released.append(task)
        return released

    def _no_slot_locked(self, task: Task[Any]) -> bool:
        # Background tasks take no slot: a limit caps the foreground work, and a
        # background task holding the last slot would keep the group from ever
        # finishing (it is only cancelled once the foreground is done).
        limit = self._limit
        return (
            limit is not None and not task.background and task._single is None
            and self._slots >= limit
        )

    def _release_locked(self, task: Task[Any]) -> None:
        # Once released, the callable will be called even if the token is cancelled
        # meanwhile: "spawn, then stop at once" stays deterministic.
        task._state = TaskState.RUNNING
        if task._single is not None:
            task._single.campaigning = True  # PENDING to the outside until it holds its lease
        elif not task.background:
            task._slot = True
            self._slots += 1
        if task._token_used:
            task.token = self._new_task_token()
        task._token_used = True

    def _new_task_token(self) -> Token:
        # A task's token is a child of the group's token, kept by the group rather than
        # by the token tree: the group cancels its running tasks' tokens itself
        # (_on_cancelled), so making and ending a token costs no shared lock. A token
        # made after the group was cancelled is born cancelled.
        token = Token._leaf(self.clock)
        cause = self.token._cause
        if cause is not None:
            token._cancel(cause)
        return token

    def _submit_all(self, tasks: list[Task[Any]]) -> None:
        submit = self._submit
        for task in tasks:
            submit(_Attempt(self, task))

    # -- running an attempt ----------------------------------------------------------

    def _run_attempt(self, task: Task[Any]) -> list[Task[Any]]:
        """Run one attempt in this thread; return the tasks its end released (the
        caller runs the first itself and submits the rest)."""
        threading.current_thread().name = f"corral:{task.name}"
        token = task.token
        keeper: LeaseRenewer | None = None
        if task._single is not None:
            try:
                keeper = self._campaign(task, task._single, token)
            except BaseException as e:  # pragma: no cover - campaign() catches backend errors
                return self._end_attempt(task, token, TaskState.FAILED, None, e)
            if keeper is None:  # cancelled while campaigning: it never ran
                return self._end_attempt(task, token, TaskState.CANCELLED, None, None)
        task._thread_ident = threading.get_ident()
        task._started_at = time.time()
        task.attempts += 1
        if task.restart is not Restart.NEVER:  # only a restart's backoff needs it
            task._attempt_started = self.clock.monotonic()
        if not task.signals_ready:
            self._set_ready(task, None)  # ready once running
        ctx = task._ctx = task._base_ctx.copy()
        kind: TaskState
        value: Any = None
        exc: BaseException | None = None
        try:
            value = ctx.run(_call, task)
        except _CANCELLED_ENDS as e:
            kind, exc = TaskState.CANCELLED, e
        except BaseException as e:
            kind, exc = TaskState.FAILED, e
        else:
            kind = TaskState.SUCCEEDED if token._cause is None else TaskState.CANCELLED
        finally:
            task._thread_ident = None
        if task._child_groups:
            kind, exc = self._close_child_groups(task, kind, exc)
        if keeper is not None:
            # Only now, with the guarded work (and the groups it made) returned.
            self._end_lease(task, keeper)
        return self._end_attempt(task, token, kind, value, exc)

    # -- singletons --------------------------------------------------------------------

    def _campaign(self, task: Task[Any], single: Singleton, token: Token) -> LeaseRenewer | None:
        """Wait (PENDING, campaigning) until this process holds the task's lease; then
        start renewing it. None if the task was cancelled first."""
        coordinator = single.coordinator
        single.campaigning = True
        self._lease_event(task, "campaigning", None)

        def on_error(e: CoordinatorError, first: bool) -> None:
            _in_ctx(task, _log_lease_error, task, self, e, first)

        try:
            lease = campaign(task.name, coordinator, token, on_error)
            if lease is None:
                return None
            keeper = LeaseRenewer(lease, coordinator, lease_clock())

            def lost(cause: LeaseLost) -> None:
                # From the renewal thread, or from the task's own check of the lease.
                token.cancel(cause)
                _in_ctx(task, _log_lease_lost, task, self, cause)
                self._lease_event(task, "lost", lease)

            lease._on_lost = lost
            single.lease = lease
            single.campaigning = False
        finally:
            if single.lease is None:
                single.state = None  # (still PENDING outside until the attempt ends)
        self._lease_event(task, "holding", lease)  # before the keeper can say "lost"
        keeper.start()
        if lease.deadline != math.inf and lease_clock() >= lease.deadline:
            lease._lose(LeaseLost(f"lease {task.name!r} expired before the task could start"))
        return keeper

    def _end_lease(self, task: Task[Any], keeper: LeaseRenewer) -> None:
        keeper.stop()
        lease = keeper.lease
        was_lost = lease._lost is not None
        release_after_run(keeper.coordinator, lease)
        assert task._single is not None
        task._single.lease = None
        if not was_lost:
            self._lease_event(task, "released", lease)

    def _lease_event(self, task: Task[Any], state: str, lease: Lease | None) -> None:
        single = task._single
        assert single is not None
        single.state = state
        if state == "holding":
            assert lease is not None
            log.info(
                "singleton %r holds its lease (fence %d) on %s", task.name, lease.fence,
                single.coordinator.describe(),
                extra={"corral_task": task.name, "corral_group": self.name},
            )
        hook = self.hooks.on_lease
        if hook is not None:
            _in_ctx(task, call_hook, hook, task, state, lease)

    def _close_child_groups(
        self, task: Task[Any], kind: TaskState, exc: BaseException | None
    ) -> tuple[TaskState, BaseException | None]:
        # No orphans: a task is not finished until the groups it made are. If the task
        # failed, its groups are cancelled first; otherwise they are waited for.
        groups = list(task._child_groups or ())
        errors: list[Exception] = []
        fatal: BaseException | None = None
        for g in groups:
            if g._closed:
                continue
            if kind is TaskState.FAILED and exc is not None:
                g.cancel(exc)
            err = g._join_collect(None)
            if isinstance(err, Exception):
                errors.append(err)
            elif err is not None and fatal is None:
                fatal = err  # KeyboardInterrupt/SystemExit from a child group's task
        task._child_groups = None  # all closed now; they stayed visible while waited for
        if fatal is not None and (exc is None or isinstance(exc, Exception)):
            return TaskState.FAILED, fatal
        if not errors:
            return kind, exc
        if kind is TaskState.FAILED and isinstance(exc, Exception):
            return kind, ExceptionGroup(
                f"task {task.name!r} failed, and so did groups it made", [exc, *errors]
            )
        if kind is TaskState.FAILED:
            for err in errors:  # the task itself ended with KeyboardInterrupt/SystemExit
                log.error(
                    "group made by task %r failed", task.name, exc_info=err,
                    extra={"corral_task": task.name, "corral_group": self.name},
                )
            return kind, exc
        if len(errors) == 1:
            return TaskState.FAILED, errors[0]
        return TaskState.FAILED, ExceptionGroup(f"groups made by task {task.name!r} failed", errors)

    def _end_attempt(
        self,
        task: Task[Any],
        token: Token,
        kind: TaskState,
        value: Any,
        exc: BaseException | None,
    ) -> list[Task[Any]]:
        hooks = self.hooks
        if (
            kind is TaskState.SUCCEEDED
            and task.restart is Restart.NEVER
            and task.on_finish is None
            and hooks.on_succeeded is None
            and hooks.on_finished is None
        ):
            # The common ending (succeeded, nothing to restart, no hook to run), in one
            # short lock section; anything unusual takes the general path below.
            if token._cause is None:
                token._cancel(ATTEMPT_ENDED)
            with self._lock:
                if not self._dependents and not task.needs:
                    self._attempt_over_locked(task)
                    self._set_final_locked(task, TaskState.SUCCEEDED, value, None)
                    self._mark_done_locked(task)
                    released = self._pump_locked(scan=task._replaced_by is not None)
                    if not released:
                        will_be_idle()  # before the lock lets a joiner go (see _pool)
                    return released
        fatal = False
        if kind is TaskState.FAILED:
            assert exc is not None
            fatal = not isinstance(exc, Exception)
            task._last_error = exc
            if hooks.on_failed is not None:
                _in_ctx(task, call_hook, hooks.on_failed, task, exc)
        elif kind is TaskState.SUCCEEDED and hooks.on_succeeded is not None:
            _in_ctx(task, call_hook, hooks.on_succeeded, task, value)

        comes_back = kind is TaskState.CANCELLED and isinstance(token.cause, _COMES_BACK)
        if kind is TaskState.CANCELLED:
            # Record why it was cancelled: the token's cause if it was cancelled, else
            # the cause carried by the Cancelled it raised, else what it raised.
            exc = token.cause or (exc.cause if isinstance(exc, Cancelled) else None) or exc
        if not token.cancelled:
            token._cancel(ATTEMPT_ENDED)  # so on_cancel callbacks release what it held
        restart_delay: float | None = None
        resume_at = 0.0
        final: TaskState | None = None
        done = False
        dependents: list[Task[Any]] = []
        deferred: list[Task[Any]] = []
        with self._lock:
            self._attempt_over_locked(task)
            needed_by = self._dependents.get(task.name) if self._dependents else None
            if needed_by and self._live.get(task.name) is task:
                dependents = [t for t in needed_by if t._state is TaskState.RUNNING]
            stopping = (
                self._stopping or self.token.cancelled or task._cancel_cause is not None
            )
            if comes_back and not stopping:
                # What it needs went away (or, for a singleton, its lease): back to
                # PENDING until it is ready again (campaigns again). It goes through
                # admission below, since what it needs may be back already.
                task._state = TaskState.PENDING
            elif not stopping and not fatal and _wants_restart(task.restart, kind):
                now = self.clock.monotonic()
                limit_exc = self._note_restart_locked(task, now)
                if limit_exc is not None:
                    limit_exc.__cause__ = exc
                    exc = limit_exc
                    final = TaskState.FAILED
                else:
                    restart_delay = self._restart_delay_locked(task, now)
                    resume_at = now + restart_delay
                    # BACKOFF, held: the restart is armed (or, with no delay, admitted)
                    # only after on_restart ran, so the hook never comes after the run
                    # it announces; a cancel meanwhile is noted and applied then.
                    task._state = TaskState.BACKOFF
                    task._hold = True
            else:
                final = kind
            if final is not None:
                self._set_final_locked(task, final, value, exc)
                if final is TaskState.FAILED and not task._in_map and (
                    (fatal and self._fatal_stops) or self.fail_fast
                ):
                    self._halted = True  # _on_failure cancels the group just below
                if (
                    final is not TaskState.FAILED
                    and task.on_finish is None
                    and hooks.on_finished is None
                ):
                    # No hook has to run between "ended" and "done": one lock section.
                    self._mark_done_locked(task)
                    done = True
            # A parked task may wait for this one (replacement, needs): rescan then only.
            released = self._pump_locked(
                scan=task._replaced_by is not None or needed_by is not None
            )
            if task._state is TaskState.PENDING and task not in self._waiting:
                released.extend(self._admit_locked(task, deferred))
            if done and not released and not deferred:
                will_be_idle()  # before the lock lets a joiner go: see _pool.will_be_idle
            # Every outcome can matter to a waiter: released, ended, or parked (a join
            # re-checks whether only stranded dependents are left).
            self._notify_locked()

        for dep in dependents:
            dep.token.cancel(_DependencyLost(f"needed task {task.name!r} ended"))
        if restart_delay is not None:
            _in_ctx(task, self._log_restart, task, kind, exc, restart_delay)
            if hooks.on_restart is not None:
                _in_ctx(task, call_hook, hooks.on_restart, task, restart_delay)
            cancelled_meanwhile = False
            with self._lock:
                task._hold = False
                if task._cancel_cause is not None or self.token.cancelled:
                    self._end_waiting_locked(task, task._cancel_cause or self.token.cause)
                    cancelled_meanwhile = True
                elif restart_delay > 0:
                    task._timer = self.clock.call_at(resume_at, lambda: self._resume(task))
                else:
                    task._state = TaskState.PENDING
                    released.extend(self._admit_locked(task, deferred))
                self._notify_locked()
            if cancelled_meanwhile:
                deferred.append(task)
        for t in deferred:
            self._finalize(t)
        if final is not None and not done:
            if final is TaskState.FAILED and not task._in_map:
                assert exc is not None
                self._on_failure(task, exc)
            self._finalize(task, last=not released)
        return released

    def _attempt_over_locked(self, task: Task[Any]) -> None:
        """An attempt ended: its limit slot is free and it is no longer ready."""
        if task._single is not None:
            task._single.campaigning = False
        if task._slot:
            task._slot = False
            self._slots -= 1
        task._ready = False

    def _note_restart_locked(self, task: Task[Any], now: float) -> RestartLimitExceeded | None:
        if task.max_restarts is None:
            return None
        n, period = task.max_restarts
        times = task._restart_times
        if times is None:
            times = task._restart_times = deque()
        while times and times[0] <= now - period:
            times.popleft()
        if len(times) >= n:
            return RestartLimitExceeded(
                f"task {task.name!r} restarted more than {n} times within {period:g}s"
            )
        times.append(now)
        return None

    def _restart_delay_locked(self, task: Task[Any], now: float) -> float:
        backoff = task.backoff or _DEFAULT_BACKOFF
        if backoff.reset_after is not None and now - task._attempt_started >= backoff.reset_after:
            task._consecutive = 0
        delay = backoff.delay(task._consecutive)
        task._consecutive += 1
        return delay

    def _resume(self, task: Task[Any]) -> None:
        with self._lock:
            if task._state is not TaskState.BACKOFF:
                return
            task._timer = None
            task._state = TaskState.PENDING
            deferred: list[Task[Any]] = []
            released = self._admit_locked(task, deferred)
            self._notify_locked()
        for t in deferred:
            self._finalize(t)
        self._submit_all(released)

    def _set_final_locked(
        self, task: Task[Any], state: TaskState, value: Any, exc: BaseException | None
    ) -> None:
        task._state = state
        if state is TaskState.SUCCEEDED:
            task._result = value
        else:
            task._error = exc
        if task._timer is not None:
            task._timer.cancel()
            task._timer = None
        if self._live.get(task.name) is task:
            old = task._replaces
            if old is not None and old._state not in _FINAL:
                # A replacement that ended before the task it replaced: that one is
                # still live (winding down), so the name stays taken by it, and a new
                # task of this name cannot run beside it.
                self._live[task.name] = old
            else:
                del self._live[task.name]

    def _end_waiting_locked(self, task: Task[Any], cause: BaseException | None) -> None:
        """End a task that is PENDING or in BACKOFF: CANCELLED, without running."""
        self._waiting.pop(task, None)
        if cause is not None and task.token._cause is not None:
            # Its token is that of an attempt that ended (backing off, or parked after
            # losing what it needed): give it one that says why the task ended.
            token = Token._leaf(self.clock)
            token._cancel(cause)
            task.token = token
        self._set_final_locked(task, TaskState.CANCELLED, None, cause)

    def _finalize(self, task: Task[Any], last: bool = False) -> None:
        """Run the end-of-task hooks, then mark it done (join/len see it after hooks)."""
        if not task.token.cancelled:
            # A task that ended without running (pending, backing off) carries the
            # cancellation's cause on its token; an attempt that ended, ATTEMPT_ENDED.
            error = task._error if task._state is TaskState.CANCELLED else None
            task.token._cancel(error or ATTEMPT_ENDED)
        # While its end hooks run, the task has ended but is not yet done: a hook that
        # joins it (t.result(), t.join()) must not wait for itself.
        previous, _busy.finishing = getattr(_busy, "finishing", None), task
        try:
            if task.on_finish is not None:
                _in_ctx(task, call_hook, task.on_finish, task)
            if self.hooks.on_finished is not None:
                _in_ctx(task, call_hook, self.hooks.on_finished, task)
        finally:
            _busy.finishing = previous
        released: list[Task[Any]] = []
        with self._lock:
            self._mark_done_locked(task)
            if task._replaced_by is not None and self._waiting:
                # Its replacement may be parked waiting for this end: a task that ended
                # without an attempt ending (cancelled while pending, backing off, or
                # held in on_restart) reaches no other rescan.
                released = self._pump_locked(scan=True)
            if last and not released:
                will_be_idle()  # the worker's last act for this attempt (see _pool)
        if released:
            self._submit_all(released)

    def _mark_done_locked(self, task: Task[Any]) -> None:
        task._done = True
        self._ends += 1
        del self._unfinished[task]
        if not task.background:
            self._fg -= 1
        for n in task.needs:
            deps = self._dependents.get(n)
            if deps is not None:
                deps.pop(task, None)
                if not deps:
                    del self._dependents[n]
        self._notify_locked()

    def _on_failure(self, task: Task[Any], exc: BaseException) -> None:
        try:
            exc.__corral_task__ = task.name  # type: ignore[attr-defined]
            exc.add_note(
                f"corral: task {task.name!r} (attempt {task.attempts}) in {self._kind} {self.name!r}"
            )
        except Exception:  # pragma: no cover - exotic exception types
            pass
        self._report(exc, lambda: _in_ctx(task, self._log_failure, task, exc))

    def _report(self, exc: BaseException, log_it: Callable[[], object]) -> None:
        """Record a failure (or the first KeyboardInterrupt/SystemExit), log it, and
        escalate: a fatal one stops the group, another cancels it with fail_fast."""
        with self._lock:
            if isinstance(exc, Exception):
                self._record_failure_locked(exc)
            elif self._fatal is None and self._fatal_stops:
                self._fatal = exc
        log_it()
        if not isinstance(exc, Exception):
            self._on_fatal(exc)
        elif self.fail_fast:
            self.cancel(exc)

    def _record_failure_locked(self, exc: Exception) -> None:
        self._failures.append(exc)

    def _log_failure(self, task: Task[Any], exc: BaseException) -> None:
        # A plain group raises its failures from join(): that is where the user sees
        # them, so they are logged only at DEBUG here (supervisors log at ERROR).
        log.debug(
            "task %r failed in %s %r", task.name, self._kind, self.name,
            exc_info=exc, extra={"corral_task": task.name, "corral_group": self.name},
        )

    def _log_restart(
        self, task: Task[Any], kind: TaskState, exc: BaseException | None, delay: float
    ) -> None:
        extra = {"corral_task": task.name, "corral_group": self.name}
        if kind is TaskState.FAILED and exc is not None:
            # One line at WARNING (a flapping task must not flood the log, and a
            # traceback per attempt costs more than the restart); the traceback at DEBUG.
            log.warning(
                "task %r failed (attempt %d): %s; restarting in %.3gs", task.name,
                task.attempts, describe(exc), delay, extra=extra,
            )
            log.debug(
                "task %r attempt %d failed with", task.name, task.attempts,
                exc_info=exc, extra=extra,
            )
        else:  # returned, and restart=ALWAYS/ON_SUCCESS asks for another run: routine
            log.info(
                "task %r returned (attempt %d); restarting in %.3gs", task.name,
                task.attempts, delay, extra=extra,
            )

    def _on_fatal(self, exc: BaseException) -> None:
        self.cancel(exc)

    # -- readiness -------------------------------------------------------------------

    def _set_ready(self, task: Task[Any], value: Any) -> None:
        # Called by the task's own thread while it runs. Without dependents or waiters
        # no lock is needed: a dependent registers itself (under the lock) before it
        # reads ``_ready``, and we write ``_ready`` before reading ``_dependents``, so
        # one of the two always sees the other (the GIL orders these accesses).
        if task._state is not TaskState.RUNNING or task._ready:
            return
        task._ready_value = value
        task._ever_ready = True
        task._ready = True
        if not self._dependents and not self._nwaiters:
            return
        with self._lock:
            self._notify_locked()
            released = self._pump_locked(scan=task.name in self._dependents)
        if released:
            self._submit_all(released)

    # -- cancelling ------------------------------------------------------------------

    def cancel(self, cause: BaseException | str | None = None) -> None:
        """Cancel the whole subtree: pending tasks end without running, running ones
        see their tokens cancelled, child groups too. Idempotent."""
        self.token._cancel(as_cause(cause, f"{self._kind} {self.name!r} cancelled"))

    def _on_cancelled(self) -> None:
        # The group's token was cancelled: tasks that are not running end now.
        cause = self.token.cause
        assert cause is not None
        with self._lock:
            waiting = [
                t for t in self._unfinished
                if (t._state is TaskState.PENDING or t._state is TaskState.BACKOFF) and not t._hold
            ]
            running = [t.token for t in self._unfinished if t._state is TaskState.RUNNING]
            for t in waiting:
                self._end_waiting_locked(t, t._cancel_cause or cause)
            self._queue.clear()
            self._waiting.clear()
            self._notify_locked()
        for token in running:
            token._cancel(cause)
        for t in waiting:
            self._finalize(t)

    def _cancel_task(self, task: Task[Any], cause: BaseException) -> None:
        with self._lock:
            if task._state in _FINAL:
                return
            if task._cancel_cause is None:
                task._cancel_cause = cause
            if task._state is TaskState.RUNNING or task._hold:
                # Running: cancel its token. Held by a thread between lock sections:
                # that thread applies the cause when it takes the lock again.
                ended = False
            else:
                self._end_waiting_locked(task, task._cancel_cause)
                ended = True
        if ended:
            self._finalize(task)
        elif task._state is TaskState.RUNNING:
            task.token.cancel(task._cancel_cause)

    # -- waiting ---------------------------------------------------------------------

    def _notify_locked(self) -> None:
        if self._nwaiters:
            self._cond.notify_all()

    def _wait_locked(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        self._nwaiters += 1
        try:
            if threading.current_thread() is not _MAIN_THREAD:
                return self._cond.wait_for(predicate, timeout)
            # The main thread wakes up regularly: Python runs signal handlers only in
            # the main thread, between bytecodes, and a signal that the kernel delivered
            # to another thread does not interrupt an untimed lock wait here. Without
            # this, a SIGTERM could go unhandled while we sit in serve()/wait()/join().
            deadline = None if timeout is None else time.monotonic() + timeout
            while not predicate():
                if deadline is None:
                    self._cond.wait(_MAIN_THREAD_SLICE)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return predicate()
                    self._cond.wait(min(left, _MAIN_THREAD_SLICE))
            return True
        finally:
            self._nwaiters -= 1

    def _wait_for(self, predicate: Callable[[], bool], timeout: float | None, what: str) -> None:
        with self._cond:
            if not self._wait_locked(predicate, timeout):
                raise TimeoutError(f"{what} still running after {timeout}s")

    def _stranded_locked(self) -> dict[Task[Any], str]:
        """Parked tasks that nothing left can release, each with the name of the task
        it waits for in vain: a task it needs is gone, or is itself stranded (chains).

        Only meaningful once no task of the group runs (nothing could spawn the missing
        name again): see ``_foreground_done_locked``.
        """
        out: dict[Task[Any], str] = {}
        candidates = [
            t for t in self._waiting
            if t._state is TaskState.PENDING and t.needs and t._replaces is None
        ]
        changed = True
        while changed:  # a fixpoint: chains in any order
            changed = False
            for t in candidates:
                if t in out:
                    continue
                for n in t.needs:
                    dep = self._live.get(n)
                    if dep is None or dep in out:
                        out[t] = n
                        changed = True
                        break
        return out

    def _foreground_done_locked(self) -> bool:
        if self._fg == 0:
            return True
        if self._waiting and self._fg <= len(self._waiting):
            # Only parked tasks are left in the foreground: done if none of them can
            # ever be released (nothing is running that could bring back what they need).
            stranded = self._stranded_locked()
            return sum(1 for t in stranded if not t.background) == self._fg
        return False

    def join(self, timeout: float | None = None) -> None:
        """Wait for the foreground tasks (then cancel and wait for background ones),
        close the group, and raise an ``ExceptionGroup`` of every failure.

        Raises ``TimeoutError`` if tasks are still running after ``timeout`` seconds
        (the group stays open). Failures are raised once: a later join returns None.
        """
        err = self._join_collect(timeout)
        if err is not None:
            raise err

    def _join_collect(
        self, timeout: float | None, body_exc: BaseException | None = None
    ) -> BaseException | None:
        """Join, and return what join() should raise (or None)."""
        timeout = check_timeout("timeout", timeout)
        current = _current.get()
        if current is not None and current.group is self and not self._closed:
            raise RuntimeError(
                f"a task of group {self.name!r} cannot join its own group (it would wait for itself)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ok = self._wait_locked(self._foreground_done_locked, timeout)
            if not ok:
                raise TimeoutError(
                    f"{self._kind} {self.name!r} still has {self._fg} running task(s) after {timeout}s"
                )
            stranded = self._stranded_locked() if self._fg else {}
            background = [t for t in self._unfinished if t.background and t not in stranded]
        for t, missing in stranded.items():
            t.cancel(Cancelled(
                f"task {t.name!r} needs {missing!r}, which ended and nothing left can start again"
            ))
        for t in background:
            t.cancel(Stopped(f"{self._kind} {self.name!r} is done"))
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        with self._cond:
            if not self._wait_locked(lambda: not self._unfinished, remaining):
                raise TimeoutError(
                    f"{self._kind} {self.name!r} still has {len(self._unfinished)} task(s) "
                    f"after {timeout}s"
                )
            self._closed = True
            if self._reported:
                failures: list[Exception] = []
                fatal = None
            else:
                self._reported = True
                failures = list(self._failures)
                fatal = self._fatal
        self._unregister()
        if fatal is not None:
            for f in failures:
                log.error(
                    "task failure while stopping for %r", fatal, exc_info=f,
                    extra={"corral_task": _failed_task_name(f), "corral_group": self.name},
                )
            return fatal
        if isinstance(body_exc, Exception):
            failures.insert(0, body_exc)
        elif body_exc is not None and not failures:
            return body_exc
        if not failures:
            return None
        return ExceptionGroup(
            f"{len(failures)} task(s) failed in {self._kind} {self.name!r}", failures
        )

    def _unregister(self) -> None:
        """The group has closed: let go of what links it to longer-lived objects (the
        roots registry, the task that made it, a token given to it)."""
        with _roots_lock:
            _roots.pop(self, None)
        task = self._parent_task
        if task is not None:
            self._parent_task = None
            groups = task._child_groups
            if groups is not None:
                groups.pop(self, None)
        for unlink in (self._unlink_token, self._unlink_self):
            if unlink is not None:
                unlink()  # (a token with callbacks is held by its parent: see Token)
        self._unlink_token = self._unlink_self = None
        self._given_token = None

    def _cancel_from_given_token(self) -> None:
        given = self._given_token
        if given is not None:
            self.token.cancel(given.cause)

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float | None = None, *, interval: float = 0.05
    ) -> bool:
        """Poll ``predicate`` (and re-check whenever a task ends). When it holds, cancel
        the group gracefully (cause ``Stopped``) and return True; on timeout, cancel
        nothing and return False."""
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")
        timeout = check_timeout("timeout", timeout)
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number of seconds, not {type(interval).__name__}")
        if not 0 < interval < math.inf:
            raise ValueError(f"interval must be a finite number > 0, not {interval!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self._ends  # read before the predicate: an end during it is not missed
            # Read before the predicate too: if nothing can change the outcome any more,
            # the predicate's answer now is the last word.
            hopeless = self.token._cause is not None or not self._unfinished
            if predicate():
                self.cancel(Stopped("wait_until condition met"))
                return True
            if hopeless:
                # The group was cancelled (a failure, cancel()) or every task has ended:
                # nothing left in it can make the predicate true.
                return False
            wait = interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            with self._cond:
                self._wait_locked(
                    lambda seen=seen: self._ends != seen or self.token._cause is not None,  # type: ignore[misc]
                    wait,
                )

    # -- code corral did not start -----------------------------------------------------

    def collect(self, *, background: bool = False) -> _Collector:
        """A context manager for code corral did not start (callbacks, cleanup): an
        exception raised in it becomes a failure of this group (and, with
        ``fail_fast``, cancels it) instead of propagating.

        A foreground collector (the default) keeps ``join`` waiting while its block
        runs. ``Cancelled``, ``Stopped`` and ``Replaced`` are not failures.
        """
        return _Collector(self, background)

    def wrap(self, fn: Callable[P, R]) -> Callable[P, R | None]:
        """Wrap a callable that other code will call back: its exceptions are collected
        as with :meth:`collect` (the call then returns None). Once the group is closed,
        calls go straight through and their exceptions propagate."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                collector = self.collect()
                collector.__enter__()
            except GroupClosed:
                return fn(*args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                if collector.__exit__(type(e), e, e.__traceback__):
                    return None
                raise
            collector.__exit__(None, None, None)
            return result

        return wrapper

    def _collected(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, _CANCELLED_ENDS):
            return
        try:
            exc.add_note(f"corral: collected by {what} in {self._kind} {self.name!r}")
        except Exception:  # pragma: no cover
            pass

        def log_it() -> None:
            if isinstance(exc, Exception):  # a fatal one propagates: not logged here
                log.log(
                    self._failure_level, "collected failure in %s %r", self._kind, self.name,
                    exc_info=exc, extra={"corral_task": None, "corral_group": self.name},
                )

        self._report(exc, log_it)

    # -- map ---------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        window: int | None = None,
        chunksize: int = 1,
    ) -> Iterator[R]:
        """Run ``fn(item)`` for each item as tasks of this group; yield results in input
        order. Lazy: at most ``window`` tasks are in flight (default 2 x limit, or 64),
        each over ``chunksize`` consecutive items (default 1).

        An item's exception is raised by the iterator at that item's place, after the
        items before it (and is not also a group failure); the rest of its chunk does
        not run. Leaving the loop early cancels what is in flight.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        window = check_count("window", window)
        if window is None:
            window = 2 * self._limit if self._limit is not None else 64
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int >= 1, not {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, not {chunksize!r}")
        with self._lock:
            self._check_open_locked()
        it = iter(iterable)
        return self._map(fn, it, window, chunksize)

    def _map(
        self, fn: Callable[[T], R], it: Iterator[T], window: int, chunksize: int
    ) -> Iterator[R]:
        from ._map import map_items  # (here: a group that never maps does not load it)

        return map_items(self, fn, it, window, chunksize, f"{_qualname(fn)}[map#")

    # -- context manager -----------------------------------------------------------

    def __enter__(self) -> Group:
        self._enter_once()
        return self

    def _enter_once(self) -> None:
        with self._lock:
            if self._entered:
                raise RuntimeError(
                    f"{self._kind} {self.name!r} was entered already: a group is entered "
                    "once (its with-block's end joins and closes it)"
                )
            self._entered = True

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is not None:
            self.cancel(exc)
        err = self._join_collect(None, exc)
        if err is None or err is exc:
            return False  # nothing to raise, or the body's own exception propagates
        raise err


class _Collector:
    """``with group.collect():`` see :meth:`Group.collect`."""

    __slots__ = ("_background", "_entered", "_group")

    def __init__(self, group: Group, background: bool) -> None:
        self._group = group
        self._background = background
        self._entered = False

    def __enter__(self) -> _Collector:
        g = self._group
        with g._lock:
            g._check_open_locked()
            if not self._background:
                g._fg += 1
        self._entered = True
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        g = self._group
        swallow = False
        # Once the group has closed and reported (a background collector that outlived
        # it), nobody would see the failure there: it propagates instead.
        if exc is not None and not g._reported:
            g._collected(exc, "collect()")
            # KeyboardInterrupt/SystemExit cancel the group and still propagate.
            swallow = not isinstance(exc, KeyboardInterrupt | SystemExit)
        if self._entered and not self._background:
            with g._lock:
                g._fg -= 1
                g._notify_locked()
        self._entered = False
        return swallow


class _Attempt:
    """What the runner runs: one attempt of a task (a small callable, no closure)."""

    __slots__ = ("group", "task")

    def __init__(self, group: Group, task: Task[Any]) -> None:
        self.group = group
        self.task = task

    def __call__(self) -> None:
        group, task = self.group, self.task
        _busy.group = group
        try:
            while True:
                released = group._run_attempt(task)
                if not released:
                    return
                # Continuation: this worker runs the next released task itself, rather
                # than a pool round trip (which would start a thread: we are not idle).
                task = released[0]
                if len(released) > 1:
                    group._submit_all(released[1:])
        finally:
            _busy.group = None


def _call(task: Task[Any]) -> Any:
    # Runs inside the attempt's context copy.
    _current.set(task)
    on_started = task.group.hooks.on_started
    if on_started is not None:
        call_hook(on_started, task)
    value = task.fn(*task.args)
    if value.__class__ is CoroutineType:
        # A plain function (a lambda, a partial of a wrapper) that returned a coroutine:
        # its body never ran. Close it (no "never awaited" warning) and say so.
        value.close()
        raise TypeError(
            f"task {task.name!r}: {_qualname(task.fn)} returned a coroutine instead of "
            "running; corral runs coroutine functions only through its asyncio support"
        )
    return value


def _failed_task_name(exc: BaseException) -> str | None:
    name: str | None = getattr(exc, "__corral_task__", None)
    return name


def _in_ctx(task: Task[Any], fn: Callable[..., object], *args: Any) -> None:
    """Run ``fn(*args)`` (a hook call or a log call, which never raise) in the task's
    context, so that log context and tracing spans reach them."""
    try:
        task._ctx.run(fn, *args)
    except RuntimeError:  # that context is entered already (a hook run from the task)
        fn(*args)


def _log_lease_error(task: Task[Any], group: Group, e: CoordinatorError, first: bool) -> None:
    # The first error of an outage at ERROR (it needs a person); repeats at DEBUG.
    log.log(
        logging.ERROR if first else logging.DEBUG,
        "singleton %r cannot campaign for its lease (it will not run without one; "
        "retrying): %s", task.name, e,
        extra={"corral_task": task.name, "corral_group": group.name},
    )


def _log_lease_lost(task: Task[Any], group: Group, cause: LeaseLost) -> None:
    log.warning(
        "singleton %r lost its lease; cancelling it, then campaigning again: %s",
        task.name, cause, extra={"corral_task": task.name, "corral_group": group.name},
    )


def _wants_restart(policy: Restart, kind: TaskState) -> bool:
    if policy is Restart.NEVER or kind is TaskState.CANCELLED:
        return False
    if policy is Restart.ALWAYS:
        return True
    if policy is Restart.ON_FAILURE:
        return kind is TaskState.FAILED
    return kind is TaskState.SUCCEEDED


def _replaced(name: str) -> BaseException:
    return Replaced(f"replaced by a new task named {name!r}")



Group.__module__ = "corral"


# -- fork (see _fork) -----------------------------------------------------------------


def _forget_after_fork() -> None:
    """In a forked child: the registry of roots starts empty, with a fresh lock (the
    inherited groups are the parent's; _fork closes them)."""
    global _roots_lock
    _roots_lock = threading.Lock()
    _roots.clear()
