"""Cooperative cancellation tokens, arranged in a tree."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType

from ._callables import check_plain
from ._clock import SYSTEM_CLOCK, TimerHandle
from ._context import not_on_a_loop
from ._errors import Cancelled, safe_repr

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from ._clock import Clock

__all__ = ["Token"]

log = logging.getLogger("corral")



# What to use instead of a blocking sleep on an event loop's thread (see not_on_a_loop).
SLEEP_AWAITED = "await asyncio.sleep() (a coroutine task is cancelled through CancelledError)"


class Token:
    """Cooperative cancellation. Cancelling a token cancels its descendants.

    Threads cannot be killed, so work checks its token (``check()``, ``cancelled``) or
    sleeps on it (``sleep()``, ``wait()``). Cancellation is sticky and the first cause
    wins.

    A parent and a deadline timer hold a token only weakly: a per-request
    ``root.child(timeout=...)`` that is dropped without being cancelled is freed at once
    (by reference counting), and its timer leaves the clock. Nothing is lost by this,
    since nobody could observe its cancellation -- except through ``on_cancel``
    callbacks: while it has some, its parent and its deadline keep it, so they run.
    Used as a context manager, a token is cancelled when the block exits (see
    :meth:`__exit__`).
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_cause",
        "_children",
        "_clock",
        "_event",
        "_hook",
        "_keys",
        "_link",
        "_lock",
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
        # (checked before registering with the parent)
        seconds = None if timeout is None else check_timeout("timeout", timeout)
        if clock is not None and clock is not SYSTEM_CLOCK:
            check_clock(clock)
        self._clock: Clock = clock if clock is not None else (
            parent._clock if parent is not None else SYSTEM_CLOCK
        )
        # Each token has its own lock, never held while user code runs; _cancel_tree
        # holds several, always a parent's before its child's.
        self._lock = threading.Lock()
        self._cause: BaseException | None = None
        self._children: dict[_Link, None] | None = None
        self._callbacks: dict[int, Callable[[], object]] | None = None
        self._hook: Callable[[], object] | None = None  # the runner's (see set_hook)
        self._event: threading.Event | None = None
        self._keys = 0
        self._link: _Link | None = None
        if parent is None and seconds is None:
            return  # nothing can cancel it but cancel(): it needs no link
        link = self._link = _Link(self, _forget)
        link.parent = None
        link.timer = None
        link.anchor = None
        link.deadline = None if seconds is None else self._clock.monotonic() + seconds
        if parent is not None:
            with parent._lock:
                if parent._cause is None:
                    if parent._children is None:
                        parent._children = {}
                    parent._children[link] = None
                    link.parent = parent
                else:
                    self._cause = parent._cause
        if link.deadline is not None and self._cause is None:
            link.timer = self._clock.call_at(link.deadline, link.expire)
            if self.cancelled:
                # A parent cancelled us meanwhile: its _wake may have missed the timer.
                self._drop_timer()

    def __repr__(self) -> str:
        state = f"cancelled cause={self._cause!r}" if self._cause is not None else "active"
        return f"<corral.Token {state}>"

    def __enter__(self) -> Token:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel this token (cause ``Cancelled("its with block ended")``, unless it was
        cancelled before), not its parent.

        Cancelling, rather than only detaching, is what ``with`` promises here: the
        deadline timer is dropped, the parent forgets the token, its own children are
        cancelled with it, and work that was handed the token and outlives the block
        sees it cancelled (as Go's ``defer cancel()`` does) instead of holding a token
        that nothing will ever cancel. An exception from the block propagates.
        """
        self._cancel(Cancelled("its with block ended"))

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
        link = self._link
        return link.deadline if link is not None else None

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
        tok._hook = None
        tok._event = None
        tok._keys = 0
        tok._link = None
        return tok

    def _cancel(self, cause: BaseException) -> None:
        with self._lock:
            if self._cause is not None:
                return
            if not self._children and not self._callbacks and self._link is None:
                # A lone leaf (the common case: an attempt's token ending): no walk,
                # and no parent or timer to let go of.
                self._cause = cause
                self._callbacks = None
                hook, self._hook = self._hook, None
                leaf = True
            else:
                leaf = False
        if leaf:
            event = self._event
            if event is not None:
                event.set()
            if hook is not None:
                _call(hook)
            return
        self._cancel_tree(cause)

    def _wake(self) -> None:
        """After marking: release the waiters and drop the deadline timer."""
        if self._event is not None:
            self._event.set()
        self._drop_timer()

    def _drop_timer(self) -> None:
        link = self._link
        if link is not None:
            timer = link.timer
            if timer is not None:
                link.timer = None
                timer.cancel()

    def _cancel_tree(self, cause: BaseException) -> None:
        callbacks: list[Callable[[], object]] = []
        marked: list[Token] = []
        with self._lock:
            if self._cause is not None:
                return
            link = self._link
            parent = link.parent if link is not None else None
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
        if parent is not None and link is not None:
            # Forget us in the parent (an ended attempt must not pin memory there),
            # after our own lock is released (never child-then-parent).
            with parent._lock:
                siblings = parent._children
                if siblings is not None:
                    siblings.pop(link, None)
                    if not siblings:
                        # A dict never shrinks as it empties: after a burst of 100,000
                        # requests a long-lived root would keep a table that size.
                        # (Only here, under the lock: _forget must not rebind it.)
                        parent._children = None
        if (
            len(marked) == 1 and not callbacks and self._event is None
            and (link is None or link.timer is None)
        ):
            return  # the common case: an attempt's token ends with nobody watching
        for tok in marked:
            tok._wake()
        for callback in callbacks:
            _call(callback)

    def _mark_one(
        self, cause: BaseException, marked: list[Token], callbacks: list[Callable[[], object]]
    ) -> list[Token]:
        """Mark this token (its lock held); return its children to mark next."""
        self._cause = cause
        marked.append(self)
        link = self._link
        if link is not None:
            link.parent = None  # a cancelled token does not keep its parent alive
            link.anchor = None  # nor itself: its callbacks are about to run
        if self._callbacks:
            callbacks.extend(self._callbacks.values())
            self._callbacks = None
        if self._hook is not None:
            callbacks.append(self._hook)
            self._hook = None
        children, self._children = self._children, None
        if not children:
            return []
        # list() copies the links in one step: a child freed meanwhile (_forget, on
        # any thread) pops from the dict without our lock. Freed children are skipped.
        return [tok for ref in list(children) if (tok := ref()) is not None]

    def _expire(self) -> None:
        self._cancel(TimeoutError("deadline exceeded"))

    def set_hook(self, hook: Callable[[], object] | None) -> bool:
        """The one callback of the runner of an attempt (an asyncio task to cancel),
        without ``on_cancel``'s registration and remover; None takes it off. False if
        the token is cancelled already (the hook is not set: the caller acts now)."""
        with self._lock:
            if self._cause is not None and hook is not None:
                return False
            self._hook = hook
        return True

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` once when cancelled (at once if already cancelled).

        Returns a function that removes the callback. A callback that raises is
        logged; the others still run. While a token has callbacks, its parent and its
        deadline keep it alive (so they run even if nobody else holds the token).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        check_plain(
            "callback", callback,
            "on_cancel callbacks are called (in the thread that cancels), never awaited, so "
            "its body would not run; give a plain function",
        )
        with self._lock:
            if self._cause is None:
                if self._callbacks is None:
                    self._callbacks = {}
                # a fresh key per registration: a remover only ever removes its own
                self._keys += 1
                key = self._keys
                self._callbacks[key] = callback
                if self._link is not None:
                    self._link.anchor = self
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
                callbacks = self._callbacks
                if callbacks is not None:
                    callbacks.pop(key, None)
                    if not callbacks and self._link is not None:
                        self._link.anchor = None  # nothing to run: may be freed again

        return remove

    def child(self, *, timeout: float | None = None) -> Token:
        """A new token cancelled with this one (and, given ``timeout``, after it).

        ``with token.child(timeout=5) as t:`` cancels ``t`` when the block exits.
        """
        return Token(self, timeout=timeout)

    # -- waiting ---------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`corral.Cancelled` if this token is cancelled."""
        cause = self._cause
        if cause is not None:
            raise _cancelled_from(cause)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or until ``timeout`` seconds passed (False).

        None, ``inf`` or more than threading can wait (about 292 years) wait until
        cancelled; NaN or a negative number is a ``ValueError`` (``check_timeout``).
        """
        seconds = check_timeout("timeout", timeout)
        if self._cause is not None:
            return True
        if seconds is None or seconds > 0:
            not_on_a_loop("Token.wait()", "await token.wait_async()")
        if self._clock is SYSTEM_CLOCK or seconds is None:
            return self._get_event().wait(seconds)
        if seconds <= 0:
            return False
        return not self._virtual_sleep(seconds)

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if the whole time passed, False as soon as cancelled.

        ``inf`` (or more than threading can wait, about 292 years) sleeps until
        cancelled.
        """
        _check_seconds("seconds", seconds)  # (None is no duration: not check_timeout)
        if self._cause is not None:
            return False
        if seconds > 0:
            not_on_a_loop("Token.sleep()", SLEEP_AWAITED)
        return self._sleep(seconds)

    def _sleep(self, seconds: float) -> bool:
        """``sleep``, for a caller that checked ``seconds`` and that this thread may
        block (``corral.sleep``)."""
        if self._cause is not None:
            return False
        if seconds >= _TIMEOUT_MAX:
            self._get_event().wait()
            return False
        if self._clock is SYSTEM_CLOCK:
            return not self._get_event().wait(seconds)
        if seconds <= 0:
            return True
        return self._virtual_sleep(seconds)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``wait`` for a coroutine: await until cancelled (True) or until ``timeout``
        seconds passed (False), without blocking the loop. Timeouts are on the
        loop's clock."""
        from ._loops import (  # (asyncio: loaded by coroutines only)
            get_running_loop,
            wake,
            wake_soon,
        )

        seconds = check_timeout("timeout", timeout)
        if self._cause is not None:
            return True
        if seconds is not None and seconds <= 0:
            return False
        loop = get_running_loop()
        fut = loop.create_future()

        remove = self.on_cancel(lambda: wake_soon(loop, fut))
        timer = None if seconds is None else loop.call_later(seconds, wake, fut)
        try:
            await fut
        finally:
            remove()
            if timer is not None:
                timer.cancel()
        return self._cause is not None

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


class _Link(weakref.ref[Token]):
    """A token's ties to what may cancel it: its parent and its deadline timer.

    The parent's ``_children`` and the timer hold this weak reference, not the token,
    so a token that nobody else holds is freed by reference counting (no ``gc`` pass
    needed), and then :func:`_forget` removes this link from the parent and cancels
    the timer. The link itself is held by its token for the token's whole life (so
    _forget always runs), by the parent's dict and by the timer.
    """

    __slots__ = ("anchor", "deadline", "parent", "timer")
    parent: Token | None  # registered there while both are active
    timer: TimerHandle | None  # the pending deadline timer
    # The token itself while it has on_cancel callbacks: those make its cancellation
    # observable, so the parent and the timer must keep it (a cycle, broken when it is
    # cancelled or its last callback is removed).
    anchor: Token | None
    deadline: float | None

    def expire(self) -> None:
        """The deadline timer's callback (a bound method of the link, not the token)."""
        token = self()
        if token is not None:
            token._expire()


def _forget(link: _Link) -> None:
    """A linked token was freed while active: unregister it and cancel its timer.

    A weakref callback, so it runs in whatever thread dropped the last reference, maybe
    while that thread holds the parent's lock (a child freed inside _cancel_tree) or a
    clock's: it takes no lock. ``dict.pop`` is atomic, and the parent only ever copies
    its dict in one step (``list()``) to walk it; cancel() only try-locks the clock.
    """
    timer = link.timer
    if timer is not None:
        link.timer = None
        timer.cancel()
    parent = link.parent
    if parent is not None:
        link.parent = None
        children = parent._children
        if children is not None:
            children.pop(link, None)


def check_clock(clock: object) -> None:
    if not (callable(getattr(clock, "monotonic", None))
            and callable(getattr(clock, "call_at", None))):
        raise TypeError(
            "clock must be None or a Clock (an object with monotonic() and "
            "call_at(when, callback), such as corral.testing.MockClock), "
            f"not {type(clock).__name__}"
        )


def _call(callback: Callable[[], object]) -> None:
    try:
        callback()
    except BaseException:
        log.exception("on_cancel callback %r raised", callback)


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
        exc = Cancelled(f"cancelled: {safe_repr(cause)}")
    exc.cause = cause
    exc.__cause__ = cause
    return exc


def check_timeout(what: str, value: float | None) -> float | None:
    """The one rule for every ``timeout`` parameter of corral.

    None and ``math.inf`` mean no timeout (None is returned); a number >= 0 is seconds
    (values beyond what ``threading`` can wait, about 292 years, also mean no timeout
    rather than an ``OverflowError``); a negative number or NaN is a ``ValueError``; a
    bool or a non-number is a ``TypeError``.
    """
    if value is None:
        return None
    kind = type(value)
    if (kind is float or kind is int) and 0 <= value < _TIMEOUT_MAX:
        return float(value)  # the common case, in one test (a deadline per request)
    _check_seconds(what, value)
    if value >= _TIMEOUT_MAX:
        return None
    return float(value)


_TIMEOUT_MAX = float(threading.TIMEOUT_MAX)


def _check_seconds(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{what} must be a number >= 0, not {value!r}")
