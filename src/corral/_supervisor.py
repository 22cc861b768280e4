"""Supervisors: long-lived root groups with a lifecycle, signals and a failure record."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from . import _driver
from ._context import busy as _busy
from ._context import not_on_a_loop, within
from ._errors import Stopped, StopTimeout, SupervisorStopped, safe_repr
from ._group import Group, GroupRole, roots
from ._policy import Hooks
from ._pool import get_pool
from ._queries import next_layer
from ._task import Task
from ._token import Token, check_timeout
from ._validate import check_bool, check_count

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack

    from ._clock import Clock
    T = TypeVar("T")
    Ts = TypeVarTuple("Ts")
    from ._coordinator import Coordinator

__all__ = ["Supervisor", "go", "restore_signal_handlers"]

log = logging.getLogger("corral")

# Signal handling (and the signal module) is loaded by the first supervisor that handles
# signals: a program that only uses groups does not pay for it at import.
_SIGNALS = f"{__package__}._signals"


def _signals() -> ModuleType:
    from . import _signals

    return _signals


def restore_signal_handlers() -> None:
    """Put back the handlers corral replaced, if no supervisor handles signals any more
    (in the main thread; a no-op elsewhere, and if corral never handled any)."""
    if _SIGNALS in sys.modules:
        _signals().restore_if_idle()


class _SupervisorRole(GroupRole):
    """Where a supervisor differs from a plain group (see ``GroupRole``)."""

    group: Supervisor

    def failures(self) -> deque[Exception]:
        return self.group._failure_log  # the most recent ones: stop() raises none

    def refuse(self) -> Exception:
        return SupervisorStopped(f"supervisor {self.group.name!r} is stopped; it takes no new tasks")

    def cancelled(self, cause: BaseException) -> None:
        self.group._begin_stop(cause)

    def fatal(self, exc: BaseException) -> None:
        if self.group._fatal_stops:
            self.group._begin_stop(exc)

    def forgotten_after_fork(self) -> None:
        sup = self.group
        sup._stop_begun = sup._stop_done = True
        sup._stopped_event = threading.Event()
        sup._stopped_event.set()

    def close_as_child(self) -> BaseException | None:
        # A supervisor does not end by itself: the task that made it ends, so it stops.
        sup = self.group
        sup._begin_stop(Stopped(f"supervisor {sup.name!r}: the task that made it ended"))
        return sup._join_stopped(None)


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
        if max_failures is None:
            raise TypeError("max_failures must be an int >= 1, not None")
        check_count("max_failures", max_failures)
        if token is not None and not isinstance(token, Token):
            raise TypeError(f"token must be a corral.Token or None, not {type(token).__name__}")
        # Set before Group.__init__: it registers _on_cancelled, which may run at once.
        self.stop_timeout = stop_timeout
        self.drain_timeout = drain_timeout
        self._drain_cut = False  # a second signal ended the drain early
        self._stop_begun = False
        self._stop_done = False
        self._give_up = False
        self._fatal_raised = False
        self._stopped_event = threading.Event()
        self._failure_log: deque[Exception] = deque(maxlen=max_failures)
        self._signal_mode: Literal["off", "graceful", "passthrough"] = "off"
        super().__init__(
            name, limit=limit, fail_fast=fail_fast, detached=detached, hooks=hooks,
            on_finish=on_finish, clock=clock if clock is not None else (
                token.clock if token is not None else None
            ), coordinator=coordinator,
        )
        self._handle_signals = handle_signals
        self._stop_token = token
        self._unlink_stop_token: Callable[[], None] | None = None
        if token is not None:
            # Cancelling the token given to the supervisor stops it (gracefully). The
            # link is undone when it has stopped: the token may outlive many supervisors.
            self._unlink_stop_token = token.on_cancel(self._stop_from_given_token)

    def _stop_from_given_token(self) -> None:
        token = self._stop_token
        if token is not None:
            self._begin_stop(Stopped(f"token cancelled: {safe_repr(token.cause)}"))

    def __repr__(self) -> str:
        state = (
            "stopped" if self._stop_done else "stopping" if self._stop_begun
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
        return self._stop_begun

    @property
    def is_running(self) -> bool:
        return self._life.started and not self._stop_begun

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
            if self._stop_begun:
                raise SupervisorStopped(f"supervisor {self.name!r} was stopped; it cannot start again")
            if self._life.started:
                return
            released = self._life.start()
        if self._handle_signals and _signals().subscribe(self) and self._signal_mode == "off":
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
        self._begin_stop(Stopped(f"supervisor {self.name!r} stopped"))
        if inside:
            # stop() from one of its own tasks (or a hook, or a task of a group inside
            # it, a coroutine on a loop included): waiting would wait for ourselves. The
            # stop goes on without us, and nothing blocks.
            return
        self._wait_stopped(self.stop_timeout if timeout is None else timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the supervisor is stopped (it does not end by itself); re-raise a
        KeyboardInterrupt/SystemExit that stopped it (once). Task failures are not
        raised (see ``failures``)."""
        err = self._join_stopped(timeout)
        if err is not None:
            raise err

    def _join_stopped(self, timeout: float | None) -> BaseException | None:
        timeout = check_timeout("timeout", timeout)
        with self._life.lock:
            if not self._life.waiter.wait(lambda: self._stop_done, timeout):
                raise TimeoutError(f"supervisor {self.name!r} still running after {timeout}s")
            return self._take_fatal_locked()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the supervisor is stopped and every task has ended. Returns at
        once if it was never started. Re-raises a KeyboardInterrupt/SystemExit that
        stopped it (once)."""
        not_on_a_loop("Supervisor.wait()", "await sup.wait() (an AsyncSupervisor)")
        timeout = check_timeout("timeout", timeout)
        if not self._life.started and not self._stop_begun:
            return
        self._wait_stopped(timeout)
        self._raise_fatal_once()

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
            if not self._stop_done and not self._give_up:
                self.stop()

    def __enter__(self) -> Supervisor:
        self._enter_once()
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if not self._stop_given_up(exc):
            self.stop()
        if exc is None:
            self._raise_fatal_once()
        return False

    def _stop_given_up(self, exc: BaseException | None) -> bool:
        """Whether ``exc`` is the StopTimeout of a stop this supervisor gave up (a second
        signal): stopping again would wait for the same tasks and raise it twice."""
        return self._give_up and isinstance(exc, StopTimeout)

    # -- stopping ----------------------------------------------------------------------

    def _begin_stop(self, cause: BaseException, *, inline: bool = False) -> None:
        """Start stopping without waiting (safe from any thread and from callbacks).

        With ``inline``, start no thread: the caller runs the stop sequence itself, in
        its own thread (interpreter exit, where Python 3.12+ refuses new threads: see
        ``_at_exit``)."""
        with self._life.lock:
            if self._stop_begun:
                return
            self._stop_begun = True
            started = self._life.begin_stop(self._role.refuse)
        if not started:
            # stop() before start(): queued tasks end CANCELLED without running.
            self._finish_stop(cause, run_sequence=False)
            return
        if inline:
            return
        threading.Thread(
            target=self._finish_stop, args=(cause, True), name=f"corral-stop:{self.name}", daemon=True
        ).start()

    def _finish_stop(self, cause: BaseException, run_sequence: bool) -> None:
        # Hooks run from here (tasks ending) must not wait for this stop: mark the thread.
        previous, _busy.group = getattr(_busy, "group", None), self
        try:
            if run_sequence:
                from ._stopping import drain, stop_in_order  # (loaded by the first stop)

                if isinstance(cause, Stopped):  # graceful: drain=True tasks may finish
                    drain(self._life, cause, self.drain_timeout, lambda: self._drain_cut)
                stop_in_order(self._life, cause)
            self.token.cancel(cause)
            with self._life.lock:
                self._life.waiter.wait(lambda: not self._life.unfinished, None)
        finally:
            # Unregister before announcing the stop, so that when stop()/wait() return,
            # roots() no longer lists this supervisor.
            if _SIGNALS in sys.modules:  # (loaded by the first supervisor that handles them)
                _signals().unsubscribe(self)
            self._unregister()
            if self._unlink_stop_token is not None:
                self._unlink_stop_token()
            self._unlink_stop_token = self._stop_token = None
            if not any(isinstance(g, Supervisor) for g in roots()):
                # The last supervisor has stopped: let idle workers go now rather than
                # after their idle timeout. (Plain groups do not trim: a program that
                # runs a short group per request keeps its warm workers.)
                get_pool().trim()
            with self._life.lock:
                self._stop_done = True
                self._life.close(self._role.refuse)
                self._life.notify()
            self._stopped_event.set()
            _busy.group = previous

    def _still_draining(self) -> bool:
        """Whether a drain goes on: a drain=True task has not ended yet."""
        return (
            self._life.draining and not self._drain_cut
            and any(t.drain for t in self.tasks)
        )

    def _cut_drain(self) -> None:
        """A second signal during the drain: cancel the draining tasks at once."""
        with self._life.lock:
            self._drain_cut = True
            draining = [t for t in self._life.unfinished if t.drain]
            self._life.notify()
        for t in draining:
            t.cancel(Stopped(f"supervisor {self.name!r}: drain cut short by a second signal"))

    def _wait_stopped(self, timeout: float | None) -> None:
        try:
            with self._life.lock:
                ok = self._life.waiter.wait(lambda: self._stop_done or self._give_up, timeout)
                gave_up = self._give_up and not self._stop_done
            if not ok and not self._stop_begun:
                # Nobody is stopping it: a plain timeout, as for Group.join.
                raise TimeoutError(f"supervisor {self.name!r} still running after {timeout}s")
            if not ok or gave_up:
                raise self._stop_timeout_error(
                    "gave up waiting (second signal)" if gave_up else f"not stopped after {timeout}s"
                )
        finally:
            restore_signal_handlers()

    def _stop_timeout_error(self, why: str) -> StopTimeout:
        running: dict[str, str] = {}
        from ._stacks import running_stacks  # (only for stop reports)

        running_stacks(self, "", running)
        names = ", ".join(repr(n) for n in running) or "none"
        return StopTimeout(f"supervisor {self.name!r}: {why}; still running: {names}", running)

    def _raise_fatal_once(self) -> None:
        with self._life.lock:
            fatal = self._take_fatal_locked()
        if fatal is not None:
            raise fatal

    def _take_fatal_locked(self) -> BaseException | None:
        """The KeyboardInterrupt/SystemExit that stopped it, the first time it is asked
        for (it is raised once), else None."""
        fatal = self._life.fatal
        if fatal is None or self._fatal_raised:
            return None
        self._fatal_raised = True
        return fatal

    def _on_signal(self, signum: int) -> None:
        # First signal: a graceful stop. Then, each further one: cut the drain short
        # (if draining), give up waiting (StopTimeout), and last, exit at once.
        import signal

        name = signal.Signals(signum).name
        if not self._stop_begun:
            log.info("received %s: stopping supervisor %r", name, self.name)
            self._begin_stop(Stopped(f"received {name}"))
        elif self._still_draining():
            log.warning(
                "received %s again: cancelling the draining tasks of %r now", name, self.name
            )
            self._cut_drain()
        elif not self._give_up:
            log.warning("received %s again: no longer waiting for %r", name, self.name)
            with self._life.lock:
                self._give_up = True
                self._life.notify()
        elif not self._stop_done:
            log.critical("received %s again while %r will not stop: exiting now", name, self.name)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(128 + signum)



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
        pool.shutdown(timeout=0)  # (it waits for no worker here: see the end)
        _clock._no_thread_at_exit()
        groups, supervisors = _exit_forest()
        ours: list[Supervisor] = []  # the supervisors whose stop sequence we run
        for sup in supervisors:
            if not sup._stop_begun:
                sup._begin_stop(cause, inline=True)
                if sup.is_started:
                    ours.append(sup)
        for g in groups:
            if not isinstance(g, Supervisor):
                g.cancel(cause)
        waited = [g for g in groups if not (isinstance(g, Supervisor) and g._give_up)]
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
        sup._finish_stop(cause, run_sequence=False)
        return True
    for t in layer:
        if t._cancel_cause is None:
            t.cancel(cause)
    return False


def _log_abandoned(groups: list[Group], waited: float) -> int:
    running: dict[str, str] = {}
    where: list[str] = []
    for g in groups:
        before = len(running)
        from ._stacks import running_stacks

        running_stacks(g, "", running)
        where.extend(f"{name!r} ({g._kind} {g.name!r})" for name in list(running)[before:])
    if not where:
        return 0
    log.warning(
        "interpreter exit: abandoning %d task%s still running (cancelled, waited for "
        "%.1fs; their daemon threads end with the process): %s", len(where),
        "" if len(where) == 1 else "s", waited, ", ".join(where),
    )
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
