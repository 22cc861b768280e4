"""A supervisor's stop: its state (begun, done, given up, drain cut short) and its steps.

A stop begins once, from any thread or callback (``stop()``, a signal, the token given
to the supervisor, a fatal error, interpreter exit); a thread of its own then runs the
stop sequence (``_stopping``: the drain, then cancellations in reverse dependency order)
and closes the supervisor. Waiters (``stop()``, ``wait()``, ``join()``) wait for it to
be done, or give up when a second signal says so. Further signals escalate: cut the
drain short, give up waiting, and last exit the process at once.

The supervisor owns one of these (``Supervisor._stop``); only this module writes it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from ._context import busy as _busy
from ._errors import Stopped, StopTimeout, listed, safe_repr
from ._links import roots
from ._pool import get_pool

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from ._supervisor import Supervisor
    from ._token import Token

__all__ = ["SupervisorStop", "restore_signal_handlers", "signals"]

log = logging.getLogger("corral")

# Signal handling (and the signal module) is loaded by the first supervisor that handles
# signals: a program that only uses groups does not pay for it at import.
_SIGNALS = f"{__package__}._signals"


def signals() -> ModuleType:
    from . import _signals

    return _signals


def restore_signal_handlers() -> None:
    """Put back the handlers corral replaced, if no supervisor handles signals any more
    (in the main thread; a no-op elsewhere, and if corral never handled any)."""
    if _SIGNALS in sys.modules:
        signals().restore_if_idle()


class SupervisorStop:
    """The stop of one supervisor."""

    __slots__ = (
        "begun", "done", "drain_cut", "event", "fatal_raised", "give_up", "sup", "timed_out",
        "token", "unlink_token",
    )

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.begun = False
        self.done = False
        self.give_up = False  # a second signal: waiters stop waiting (StopTimeout)
        self.drain_cut = False  # a second signal ended the drain early
        self.fatal_raised = False
        self.timed_out = False  # a wait for it raised StopTimeout (it was reported)
        self.event = threading.Event()  # set when done (the signal handler waits on it)
        self.token: Token | None = None
        self.unlink_token: Callable[[], None] | None = None

    def follow(self, token: Token) -> None:
        """Cancelling ``token`` (given to the supervisor) stops it, gracefully. The link
        is undone when it has stopped: the token may outlive many supervisors."""
        self.token = token
        self.unlink_token = token.on_cancel(self._from_token)

    def _from_token(self) -> None:
        token = self.token
        if token is not None:
            self.begin(Stopped(f"token cancelled: {safe_repr(token.cause)}"))

    def begin(self, cause: BaseException, *, inline: bool = False) -> None:
        """Start stopping without waiting (safe from any thread and from callbacks).

        With ``inline``, start no thread: the caller runs the stop sequence itself, in
        its own thread (interpreter exit, where Python 3.12+ refuses new threads)."""
        sup = self.sup
        life = sup._life
        with life.lock:
            if self.begun:
                return
            self.begun = True
            started = life.begin_stop(sup._role.refuse)
        if not started:
            # stop() before start(): queued tasks end CANCELLED without running.
            self.finish(cause, run_sequence=False)
            return
        if inline:
            return
        threading.Thread(
            target=self.finish, args=(cause, True), name=f"corral-stop:{sup.name}", daemon=True
        ).start()

    def finish(self, cause: BaseException, run_sequence: bool) -> None:
        """The stop sequence (unless the caller runs it), then the supervisor closes."""
        sup = self.sup
        life = sup._life
        # Hooks run from here (tasks ending) must not wait for this stop: mark the thread.
        previous, _busy.group = getattr(_busy, "group", None), sup
        try:
            if run_sequence:
                from ._stopping import drain, stop_in_order  # (loaded by the first stop)

                if isinstance(cause, Stopped):  # graceful: drain=True tasks may finish
                    drain(life, cause, sup.drain_timeout, lambda: self.drain_cut)
                stop_in_order(life, cause)
            sup.token.cancel(cause)
            with life.lock:
                life.waiter.wait(lambda: not life.unfinished, None)
        finally:
            # Unregister before announcing the stop, so that when stop()/wait() return,
            # roots() no longer lists this supervisor.
            if _SIGNALS in sys.modules:  # (loaded by the first supervisor that handles them)
                signals().unsubscribe(sup)
            sup._unregister()
            if self.unlink_token is not None:
                self.unlink_token()
            self.unlink_token = self.token = None
            if not any(g._kind == "supervisor" for g in roots()):
                # The last supervisor has stopped: let idle workers go now rather than
                # after their idle timeout. (Plain groups do not trim: a program that
                # runs a short group per request keeps its warm workers.)
                get_pool().trim()
            with life.lock:
                self.done = True
                life.close(sup._role.refuse)
                life.notify()
            self.event.set()
            _busy.group = previous

    def forgotten_after_fork(self) -> None:
        """In a forked child: the inherited supervisor counts as stopped."""
        self.begun = self.done = True
        self.event = threading.Event()
        self.event.set()

    # -- waiting for it ------------------------------------------------------------------

    def wait(self, timeout: float | None) -> None:
        """Wait until stopped; ``StopTimeout`` (naming what still runs) on timeout or
        when a second signal gives up."""
        life = self.sup._life
        try:
            with life.lock:
                ok = life.waiter.wait(lambda: self.done or self.give_up, timeout)
                gave_up = self.give_up and not self.done
            if not ok and not self.begun:
                # Nobody is stopping it: a plain timeout, as for Group.join.
                raise self._still_running(timeout)
            if not ok or gave_up:
                self.timed_out = True
                raise self.timeout_error(
                    "gave up waiting (second signal)" if gave_up else f"not stopped after {timeout}s"
                )
        finally:
            restore_signal_handlers()

    def join(self, timeout: float | None) -> BaseException | None:
        """Wait until stopped (no StopTimeout: a plain TimeoutError); what join raises."""
        life = self.sup._life
        with life.lock:
            if not life.waiter.wait(lambda: self.done, timeout):
                raise self._still_running(timeout)
            return self.take_fatal_locked()

    def _still_running(self, timeout: float | None) -> TimeoutError:
        return TimeoutError(f"supervisor {self.sup.name!r} still running after {timeout}s")

    def timeout_error(self, why: str) -> StopTimeout:
        running: dict[str, str] = {}
        from ._stacks import running_stacks  # (only for stop reports)

        running_stacks(self.sup, "", running)
        names = listed([repr(n) for n in running]) or "none"
        return StopTimeout(f"supervisor {self.sup.name!r}: {why}; still running: {names}", running)

    def given_up(self, exc: BaseException | None) -> bool:
        """Whether a with-block's end should not stop again: a wait for this stop
        raised StopTimeout already (it timed out, or a second signal gave it up), or
        ``exc`` is such a StopTimeout. Stopping again would wait for the same tasks and
        raise a second StopTimeout about them."""
        return self.timed_out or (self.give_up and isinstance(exc, StopTimeout))

    def raise_fatal_once(self) -> None:
        with self.sup._life.lock:
            fatal = self.take_fatal_locked()
        if fatal is not None:
            raise fatal

    def take_fatal_locked(self) -> BaseException | None:
        """The KeyboardInterrupt/SystemExit that stopped it, the first time it is asked
        for (it is raised once), else None."""
        fatal = self.sup._life.fatal
        if fatal is None or self.fatal_raised:
            return None
        self.fatal_raised = True
        return fatal

    # -- signals ---------------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        """First signal: a graceful stop. Then, each further one: cut the drain short
        (if draining), give up waiting (StopTimeout), and last, exit at once."""
        import signal

        sup = self.sup
        life = sup._life
        name = signal.Signals(signum).name
        if not self.begun:
            log.info("received %s: stopping supervisor %r", name, sup.name)
            self.begin(Stopped(f"received {name}"))
        elif self._still_draining():
            log.warning(
                "received %s again: cancelling the draining tasks of %r now", name, sup.name
            )
            self._cut_drain()
        elif not self.give_up:
            log.warning("received %s again: no longer waiting for %r", name, sup.name)
            with life.lock:
                self.give_up = True
                life.notify()
        elif not self.done:
            log.critical("received %s again while %r will not stop: exiting now", name, sup.name)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(128 + signum)

    def _still_draining(self) -> bool:
        """Whether a drain goes on: a drain=True task has not ended yet."""
        return (
            self.sup._life.draining and not self.drain_cut
            and any(t.drain for t in self.sup.tasks)
        )

    def _cut_drain(self) -> None:
        """A second signal during the drain: cancel the draining tasks at once."""
        life = self.sup._life
        with life.lock:
            self.drain_cut = True
            draining = [t for t in life.unfinished if t.drain]
            life.notify()
        for t in draining:
            t.cancel(Stopped(f"supervisor {self.sup.name!r}: drain cut short by a second signal"))
