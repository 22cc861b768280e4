"""Supervisors: long-lived root groups with a lifecycle, signals and a failure record."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from . import _driver
from ._context import exit_first, not_on_a_loop, running_loop, within
from ._errors import Stopped, SupervisorStopped, listed
from ._group import Group, GroupRole
from ._links import roots
from ._policy import Hooks
from ._pool import get_pool
from ._queries import next_layer
from ._supervisor_stop import SupervisorStop, signals
from ._task import Task
from ._token import Token, check_timeout
from ._validate import check_bool, check_count

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack

    from ._clock import Clock
    T = TypeVar("T")
    Ts = TypeVarTuple("Ts")
    from ._coordinator import Coordinator

__all__ = ["Supervisor", "go"]

log = logging.getLogger("corral")

class _SupervisorRole(GroupRole):
    """Where a supervisor differs from a plain group (see ``GroupRole``)."""

    group: Supervisor

    def failures(self) -> deque[Exception]:
        return self.group._failure_log  # the most recent ones: stop() raises none

    def refuse(self) -> Exception:
        return SupervisorStopped(f"supervisor {self.group.name!r} is stopped; it takes no new tasks")

    def cancelled(self, cause: BaseException) -> None:
        self.group._stop.begin(cause)

    def fatal(self, exc: BaseException) -> None:
        if self.group._fatal_stops:
            self.group._stop.begin(exc)

    def forgotten_after_fork(self) -> None:
        self.group._stop.forgotten_after_fork()

    def close_as_child(self) -> BaseException | None:
        # A supervisor does not end by itself: the task that made it ends, so it stops.
        stop = self.group._stop
        stop.begin(Stopped(f"supervisor {self.group.name!r}: the task that made it ended"))
        return stop.join(None)


class Supervisor(Group):
    """A long-lived root group with a lifecycle: ``start``/``stop``/``wait``/``serve``.

    Unlike a plain group, one task's failure does not stop the others (``fail_fast``
    is off), failures are logged at ERROR and kept in ``failures`` (``stop`` does not
    raise them), tasks spawned before ``start()`` are queued, and SIGINT/SIGTERM stop
    it gracefully (``handle_signals``, on by default in the main thread).
    """

    _kind = "supervisor"
    _starts_started = False
    _failure_level = logging.ERROR
    _Role = _SupervisorRole

    def __init__(
        self,
        name: str | None = None,
        *,
        on_finish: Callable[[Task[Any]], object] | None = None,
        hooks: Hooks | None = None,
        token: Token | None = None,
        handle_signals: bool | None = None,
        fail_fast: bool = False,
        limit: int | None = None,
        detached: bool = False,
        clock: Clock | None = None,
        stop_timeout: float | None = None,
        max_failures: int = 100,
        coordinator: Coordinator | str | None = None,
        drain_timeout: float | None = 30.0,
    ) -> None:
        stop_timeout = check_timeout("stop_timeout", stop_timeout)
        drain_timeout = check_timeout("drain_timeout", drain_timeout)
        in_main = threading.current_thread() is threading.main_thread()
        if handle_signals is None:
            handle_signals = in_main
        check_bool("handle_signals", handle_signals)
        if handle_signals and not in_main:
            raise ValueError(
                "handle_signals=True needs a supervisor made in the main thread (Python runs "
                "signal handlers there only); made elsewhere, stop it yourself on SIGTERM"
            )
        check_count("max_failures", max_failures, none=False)
        if token is not None and not isinstance(token, Token):
            raise TypeError(f"token must be a corral.Token or None, not {type(token).__name__}")
        # Set before Group.__init__: it registers _on_cancelled, which may run at once.
        self.stop_timeout = stop_timeout
        self.drain_timeout = drain_timeout
        self._stop = SupervisorStop(self)
        self._failure_log: deque[Exception] = deque(maxlen=max_failures)
        self._signal_mode: Literal["off", "graceful", "passthrough"] = "off"
        super().__init__(
            name, limit=limit, fail_fast=fail_fast, detached=detached, hooks=hooks,
            on_finish=on_finish, clock=clock if clock is not None else (
                token.clock if token is not None else None
            ), coordinator=coordinator,
        )
        self._handle_signals = handle_signals
        if token is not None:
            self._stop.follow(token)

    def __repr__(self) -> str:
        state = (
            "stopped" if self._stop.done else "stopping" if self._stop.begun
            else "running" if self._life.started else "not started"
        )
        return f"<corral.Supervisor {self.name!r} {state} tasks={len(self)} failures={len(self._failure_log)}>"

    # -- state -----------------------------------------------------------------------

    @property
    def is_started(self) -> bool:
        """True once ``start()`` was called (and still true after stop)."""
        return self._life.started

    @property
    def is_stopped(self) -> bool:
        """True from the moment ``stop()`` begins."""
        return self._stop.begun

    @property
    def is_running(self) -> bool:
        return self._life.started and not self._stop.begun

    @property
    def failures(self) -> list[Exception]:
        """The most recent failures (bounded by ``max_failures``), oldest first."""
        with self._life.lock:
            return list(self._failure_log)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor: queued tasks start, in spawn order. A second call does
        nothing; after ``stop()`` it raises ``SupervisorStopped``."""
        with self._life.lock:
            if self._stop.begun:
                raise SupervisorStopped(f"supervisor {self.name!r} was stopped; it cannot start again")
            if self._life.started:
                return
            released = self._life.start()
        if self._handle_signals and signals().subscribe(self) and self._signal_mode == "off":
            self._signal_mode = "graceful"
        if released:
            _driver.start(self._life, released)

    def stop(self, timeout: float | None = None) -> None:
        """Stop: cancel the tasks (dependents before what they need), wait for them
        and their hooks. Idempotent. Task failures are not raised (see ``failures``).

        Tasks spawned with ``drain=True`` (and what they need) are not cancelled: they
        may finish, queued ones included, for up to ``drain_timeout`` seconds; then
        what is left is cancelled.

        Raises ``StopTimeout`` naming each task still running (with its stack) if they
        have not ended within ``timeout`` (default: the supervisor's ``stop_timeout``,
        None meaning no limit), or at once when a further SIGINT/SIGTERM gives up.
        """
        timeout = check_timeout("timeout", timeout)
        inside = within(self)
        if not inside:
            not_on_a_loop("Supervisor.stop()", "await sup.stop() (an AsyncSupervisor)")
        self._stop.begin(Stopped(f"supervisor {self.name!r} stopped"))
        if inside:
            # stop() from one of its own tasks (or a hook, or a task of a group inside
            # it, a coroutine on a loop included): waiting would wait for ourselves. The
            # stop goes on without us, and nothing blocks.
            return
        self._stop.wait(self.stop_timeout if timeout is None else timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the supervisor is stopped (it does not end by itself); re-raise a
        KeyboardInterrupt/SystemExit that stopped it (once). Task failures are not
        raised (see ``failures``)."""
        self._not_from_inside("join")
        err = self._stop.join(check_timeout("timeout", timeout))
        if err is not None:
            raise err

    def _not_from_inside(self, call: str) -> None:
        """A wait for the stop from one of its tasks (or from a group inside it) would
        wait for itself (the stop waits for that task): refused."""
        if within(self):
            raise RuntimeError(
                f"{call}() of supervisor {self.name!r} was called from inside it (a task "
                "of it, or of a group made in one): it would wait for itself. stop() does "
                "not wait when called from inside; to block until the supervisor stops, "
                "wait on the task's token (corral.current_token().wait(), or "
                "await token.wait_async() in a coroutine)"
            )

    def wait(self, timeout: float | None = None) -> None:
        """Block until the supervisor is stopped and every task has ended. Returns at
        once if it was never started. Re-raises a KeyboardInterrupt/SystemExit that
        stopped it (once)."""
        not_on_a_loop("Supervisor.wait()", "await sup.wait() (an AsyncSupervisor)")
        self._not_from_inside("wait")
        timeout = check_timeout("timeout", timeout)
        if not self._life.started and not self._stop.begun:
            return
        self._stop.wait(timeout)
        self._stop.raise_fatal_once()

    def serve(self) -> None:
        """Start, block until stopped (signal, token, ``stop()`` from a task...), stop."""
        not_on_a_loop("Supervisor.serve()", "await sup.serve() (an AsyncSupervisor)")
        self.start()
        try:
            self.wait()
        except KeyboardInterrupt:
            # Signals not handled by corral: Ctrl-C arrives here. Stop, then re-raise.
            self.stop()
            raise
        finally:
            # (Not after a stop that was given up: that would wait for the same tasks
            # again and raise a second, chained StopTimeout.)
            if not self._stop.done and not self._stop.given_up(None):
                self.stop()

    def __enter__(self) -> Supervisor:
        self._enter_once()
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if running_loop() is not None and not within(self):
            # The block's end cannot wait on this thread (its loop would stand still):
            # the stop begins (nothing outlives the block), and stop() refuses to wait,
            # naming AsyncSupervisor.
            self._stop.begin(Stopped(f"supervisor {self.name!r} stopped"))
        if not self._stop.given_up(exc):
            self.stop()
        if exc is None:
            self._stop.raise_fatal_once()
        return False


# -- the process-wide default supervisor (corral.go) -----------------------------------


class _DefaultSupervisor(Supervisor):
    # A go() task that raises KeyboardInterrupt/SystemExit fails (logged at ERROR) like
    # any failure: it must not stop go() for the rest of the process.
    _fatal_stops = False


_default: Supervisor | None = None
_default_lock = threading.Lock()
DEFAULT_STOP_TIMEOUT = 10.0


def _default_supervisor() -> Supervisor:
    global _default
    with _default_lock:
        if _default is None:
            # Its drain=True tasks may finish within the stop's bound, leaving a fifth
            # of it for what is cancelled then to wind down.
            sup = _DefaultSupervisor(
                "corral.go", detached=True, stop_timeout=DEFAULT_STOP_TIMEOUT,
                drain_timeout=DEFAULT_STOP_TIMEOUT * 0.8,
            )
            sup._signal_mode = "passthrough"
            sup.start()
            _default = sup
        return _default


def go(fn: Callable[[Unpack[Ts]], T], *args: *Ts, **options: Any) -> Task[T]:
    """Run ``fn(*args)`` as a task of the process-wide default supervisor (started on
    first use). On SIGINT/SIGTERM its tasks are cancelled and waited for (up to its
    stop timeout), then the signal does what it would have done without corral."""
    return _default_supervisor().spawn(fn, *args, **options)


def _reset_default_for_tests() -> None:  # pragma: no cover - test helper
    global _default
    with _default_lock:
        sup, _default = _default, None
    if sup is not None:
        sup.stop()


# -- interpreter exit ---------------------------------------------------------------


@atexit.register
def _at_exit() -> None:
    """Nothing is left running at interpreter exit: every supervisor stops and every
    other root group is cancelled, all at once, and what still runs is waited for up to
    ``DEFAULT_STOP_TIMEOUT`` seconds in all (one bound for the process, not one per
    group or worker). Tasks still running then are named in one WARNING and abandoned:
    workers are daemon threads, and die with the process.

    No thread starts here (Python 3.12+ refuses to start one at exit, and says so on
    stderr): the supervisors' stop sequences run in this thread, interleaved, the pool
    and the timer thread start none from now on. A supervisor whose stop was given up
    (a second signal: ``StopTimeout``) is not waited for again.
    """
    from . import _clock

    cause = Stopped("interpreter exit")
    bound = DEFAULT_STOP_TIMEOUT
    deadline = time.monotonic() + bound
    pool = get_pool()
    abandoned = 0
    try:
        for step in exit_first:  # (corral's loop thread: its coroutines end there)
            step(deadline)
        pool.shutdown(timeout=0)  # (it waits for no worker here: see the end)
        _clock._no_thread_at_exit()
        groups, supervisors = _exit_forest()
        ours: list[Supervisor] = []  # the supervisors whose stop sequence we run
        for sup in supervisors:
            if not sup._stop.begun:
                sup._stop.begin(cause, inline=True)
                if sup.is_started:
                    ours.append(sup)
        for g in groups:
            if not isinstance(g, Supervisor):
                g.cancel(cause)
        waited = [g for g in groups if not (isinstance(g, Supervisor) and g._stop.give_up)]
        while True:
            ours = [sup for sup in ours if not _exit_step(sup, cause)]
            pending: list[Group] = [*ours] or [g for g in waited if len(g)]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            life = pending[0]._life
            with life.lock:
                ends = life.ends
                life.waiter.wait(
                    lambda life=life, ends=ends: life.ends != ends or not life.unfinished,  # type: ignore[misc]
                    min(left, 0.05),  # (and look at the other groups now and then)
                )
        abandoned = _log_abandoned(groups, time.monotonic() - (deadline - bound))
    except KeyboardInterrupt:  # Ctrl-C while exit waits: wait no more
        abandoned = -1
    except Exception:
        log.exception("corral: error while stopping at interpreter exit")
    # The workers leave as their work ends (idle ones at once): wait for them, unless
    # some work will never end (waiting for its worker would only wait out the bound).
    pool.shutdown(timeout=0.0 if abandoned else max(0.0, deadline - time.monotonic()))


def _exit_forest() -> tuple[list[Group], list[Supervisor]]:
    """The root groups, and every supervisor in the tree (one made in a task is no root,
    and its stop must start no thread either)."""
    groups = roots()
    supervisors: list[Supervisor] = []
    todo = list(groups)
    seen: set[Group] = set()
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        if isinstance(g, Supervisor):
            supervisors.append(g)
        for t in g.tasks:
            todo.extend(t._child_groups_alive())
    return groups, supervisors


def _exit_step(sup: Supervisor, cause: BaseException) -> bool:
    """One step of a supervisor's stop at exit, run in the exiting thread: cancel the
    tasks that no live task needs (dependents end before what they need, as in
    ``_stop_in_order``; no drain: at exit whatever runs is cancelled). True once no
    task is left and the stop is done."""
    with sup._life.lock:
        layer = next_layer(sup._life)
    if not layer:
        sup._stop.finish(cause, run_sequence=False)
        return True
    for t in layer:
        if t._cancel_cause is None:
            t.cancel(cause)
    return False


def _log_abandoned(groups: list[Group], waited: float) -> int:
    from ._stacks import running_stacks

    debug = log.isEnabledFor(logging.DEBUG)  # (the stacks are only for DEBUG)
    running: dict[str, str] = {}
    where: list[str] = []
    for g in groups:
        before = len(running)
        running_stacks(g, "", running, stacks=debug)
        where.extend(f"{name!r} ({g._kind} {g.name!r})" for name in list(running)[before:])
    if not where:
        return 0
    log.warning(
        "interpreter exit: abandoning %d task%s still running (cancelled, waited for "
        "%.1fs; their daemon threads end with the process): %s", len(where),
        "" if len(where) == 1 else "s", waited, listed(where),
    )
    if debug:
        log.debug(
            "interpreter exit: stacks of the abandoned tasks:\n%s",
            "\n".join(f"{name}:\n{stack}" for name, stack in running.items()),
        )
    return len(where)


Supervisor.__module__ = "corral"


def _forget_default_after_fork() -> None:
    """In a forked child (see _fork): the default supervisor is the parent's, and
    ``corral.go()`` in the child makes its own."""
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()
