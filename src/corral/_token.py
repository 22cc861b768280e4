"""Cooperative cancellation tokens, arranged in a tree."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator

from ._clock import SYSTEM_CLOCK, Clock, TimerHandle
from ._errors import Cancelled

__all__ = ["Token"]

log = logging.getLogger("corral")



class Token:
    """Cooperative cancellation. Cancelling a token cancels its descendants.

    Threads cannot be killed, so work checks its token (``check()``, ``cancelled``) or
    sleeps on it (``sleep()``, ``wait()``). Cancellation is sticky and the first cause
    wins.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_cause",
        "_children",
        "_clock",
        "_deadline",
        "_event",
        "_keys",
        "_lock",
        "_parent",
        "_timer",
    )

    def __init__(
        self,
        parent: Token | None = None,
        *,
        timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if parent is not None and not isinstance(parent, Token):
            raise TypeError(f"parent must be a Token or None, not {type(parent).__name__}")
        if timeout is not None:
            _check_seconds("timeout", timeout)  # before registering with the parent
        self._clock: Clock = clock if clock is not None else (
            parent._clock if parent is not None else SYSTEM_CLOCK
        )
        # Each token has its own lock, never held while user code runs, and never
        # together with another token's: no lock order to get wrong.
        self._lock = threading.Lock()
        self._cause: BaseException | None = None
        self._children: dict[Token, None] | None = None
        self._callbacks: dict[int, Callable[[], object]] | None = None
        self._event: threading.Event | None = None
        self._parent: Token | None = None
        self._timer: TimerHandle | None = None
        self._deadline: float | None = None
        self._keys = 0
        if parent is not None:
            with parent._lock:
                if parent._cause is None:
                    if parent._children is None:
                        parent._children = {}
                    parent._children[self] = None
                    self._parent = parent
                else:
                    self._cause = parent._cause
        if timeout is not None and timeout != math.inf:  # an infinite timeout: no deadline
            self._deadline = self._clock.monotonic() + timeout
            if self._cause is None:
                self._timer = self._clock.call_at(self._deadline, self._expire)

    def __repr__(self) -> str:
        state = f"cancelled cause={self._cause!r}" if self._cause is not None else "active"
        return f"<corral.Token {state}>"

    # -- state ---------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once cancelled (by itself, an ancestor or its deadline)."""
        return self._cause is not None

    @property
    def cause(self) -> BaseException | None:
        """Why it was cancelled: the first cause given, or None while active."""
        return self._cause

    @property
    def deadline(self) -> float | None:
        """When this token cancels itself (on its clock), if it has a timeout."""
        return self._deadline

    @property
    def clock(self) -> Clock:
        return self._clock

    # -- cancelling ------------------------------------------------------------------

    def cancel(self, cause: BaseException | str | None = None) -> None:
        """Cancel this token and its descendants. Idempotent: the first cause wins.

        ``cause`` may be an exception (kept as is) or a text (recorded as
        ``Cancelled(text)``).
        """
        self._cancel(as_cause(cause, "cancelled"))

    @classmethod
    def _leaf(cls, clock: Clock) -> Token:
        """A parentless token without timeout, made without argument checks (a task's
        attempt token: made for every attempt, so it is kept cheap)."""
        tok = cls.__new__(cls)
        tok._clock = clock
        tok._lock = threading.Lock()
        tok._cause = None
        tok._children = None
        tok._callbacks = None
        tok._event = None
        tok._parent = None
        tok._timer = None
        tok._deadline = None
        tok._keys = 0
        return tok

    def _cancel(self, cause: BaseException) -> None:
        with self._lock:
            if self._cause is not None:
                return
            if not self._children and not self._callbacks and self._parent is None:
                # A lone leaf (the common case: an attempt's token ending): no walk.
                self._cause = cause
                self._callbacks = None
                leaf = True
            else:
                leaf = False
        if leaf:
            self._wake()
            return
        self._cancel_tree(cause)

    def _wake(self) -> None:
        """After marking: release the waiters and drop the deadline timer."""
        if self._event is not None:
            self._event.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_tree(self, cause: BaseException) -> None:
        callbacks: list[Callable[[], object]] = []
        marked: list[Token] = []
        with self._lock:
            if self._cause is not None:
                return
            parent = self._parent
            # Mark the subtree depth-first, holding the locks of the whole path from
            # this token down to the one being marked: a concurrent cancel() of any
            # token in the subtree waits on a held lock, so whenever cancel() returns,
            # the whole subtree is cancelled. Locks are only ever taken parent before
            # child, so there is no lock-order cycle. (Iterative: chains may be deep.)
            path: list[tuple[Token, Iterator[Token]]] = [
                (self, iter(self._mark_one(cause, marked, callbacks)))
            ]
            try:
                while path:
                    tok, children = path[-1]
                    child = next(children, None)
                    if child is None:
                        path.pop()
                        if tok is not self:
                            tok._lock.release()
                        continue
                    child._lock.acquire()
                    if child._cause is not None:
                        child._lock.release()
                        continue
                    path.append((child, iter(child._mark_one(cause, marked, callbacks))))
            finally:
                for tok, _ in path:
                    if tok is not self:
                        tok._lock.release()
        if parent is not None:
            # Forget us in the parent (an ended attempt must not pin memory there),
            # after our own lock is released (never child-then-parent).
            with parent._lock:
                if parent._children is not None:
                    parent._children.pop(self, None)
        if len(marked) == 1 and not callbacks and self._event is None and self._timer is None:
            return  # the common case: an attempt's token ends with nobody watching
        for tok in marked:
            tok._wake()
        for callback in callbacks:
            try:
                callback()
            except BaseException:
                log.exception("on_cancel callback %r raised", callback)

    def _mark_one(
        self, cause: BaseException, marked: list[Token], callbacks: list[Callable[[], object]]
    ) -> list[Token]:
        """Mark this token (its lock held); return its children to mark next."""
        self._cause = cause
        self._parent = None
        marked.append(self)
        if self._callbacks:
            callbacks.extend(self._callbacks.values())
            self._callbacks = None
        children, self._children = self._children, None
        return list(children) if children else []

    def _expire(self) -> None:
        self._cancel(TimeoutError("deadline exceeded"))

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` once when cancelled (at once if already cancelled).

        Returns a function that removes the callback. A callback that raises is
        logged; the others still run.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        with self._lock:
            if self._cause is None:
                if self._callbacks is None:
                    self._callbacks = {}
                # a fresh key per registration: a remover only ever removes its own
                self._keys += 1
                key = self._keys
                self._callbacks[key] = callback
                registered = True
            else:
                registered = False
        if not registered:
            try:
                callback()
            except BaseException:
                log.exception("on_cancel callback %r raised", callback)
            return _noop

        def remove() -> None:
            with self._lock:
                if self._callbacks is not None:
                    self._callbacks.pop(key, None)

        return remove

    def child(self, *, timeout: float | None = None) -> Token:
        """A new token cancelled with this one (and, given ``timeout``, after it)."""
        return Token(self, timeout=timeout)

    # -- waiting ---------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`corral.Cancelled` if this token is cancelled."""
        cause = self._cause
        if cause is not None:
            raise _cancelled_from(cause)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or until ``timeout`` seconds passed (False)."""
        if timeout is not None:
            _check_seconds("timeout", timeout)
            if timeout == math.inf:
                timeout = None
        if self._cause is not None:
            return True
        if self._clock is SYSTEM_CLOCK or timeout is None:
            return self._get_event().wait(timeout)
        if timeout <= 0:
            return False
        return not self._virtual_sleep(timeout)

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if the whole time passed, False as soon as cancelled."""
        _check_seconds("seconds", seconds)
        if self._cause is not None:
            return False
        if seconds == math.inf:
            self._get_event().wait()
            return False
        if self._clock is SYSTEM_CLOCK:
            return not self._get_event().wait(seconds)
        if seconds <= 0:
            return True
        return self._virtual_sleep(seconds)

    def _virtual_sleep(self, seconds: float) -> bool:
        """Sleep on a non-system clock: True if the timer fired before cancellation."""
        done = threading.Event()
        fired: list[bool] = []

        def on_timer() -> None:
            fired.append(True)
            done.set()

        handle = self._clock.call_at(self._clock.monotonic() + seconds, on_timer)
        remove = self.on_cancel(done.set)
        try:
            done.wait()
        finally:
            handle.cancel()
            remove()
        return bool(fired) and self._cause is None

    def _get_event(self) -> threading.Event:
        event = self._event
        if event is None:
            with self._lock:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
                    if self._cause is not None:
                        event.set()
        return event


def _noop() -> None:
    return None


def as_cause(cause: BaseException | str | None, default: str) -> BaseException:
    """A cancel()'s cause: an exception as is, a text as ``Cancelled(text)``, None as
    ``Cancelled(default)``."""
    if cause is None:
        return Cancelled(default)
    if isinstance(cause, str):
        return Cancelled(cause)
    if isinstance(cause, BaseException):
        return cause
    raise TypeError(f"cause must be an exception, a str or None, not {type(cause).__name__}")


def _cancelled_from(cause: BaseException) -> Cancelled:
    """A fresh Cancelled for ``cause`` (a new object each time: threads raise it)."""
    if isinstance(cause, Cancelled):
        exc = Cancelled(*cause.args)
    else:
        exc = Cancelled(f"cancelled: {cause!r}")
    exc.cause = cause
    exc.__cause__ = cause
    return exc


def _check_seconds(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{what} must be a number >= 0, not {value!r}")
