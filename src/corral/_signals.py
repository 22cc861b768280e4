"""SIGINT/SIGTERM handling shared by every supervisor of the process.

One handler per signal is installed while at least one supervisor subscribes. The
handler never takes a lock (the main thread may have been interrupted while holding
one): it puts the signal number on a ``SimpleQueue`` (whose ``put`` is reentrant) for a
dispatcher thread, which starts the stops. It then chains to the handler that was
installed before corral's, except ``SIG_DFL``, ``SIG_IGN`` and
``signal.default_int_handler``.

Handlers can only be changed from the main thread: they are restored when the last
subscriber leaves, if that happens in the main thread, or else the next time the main
thread calls into a supervisor (``stop``/``wait``/``serve``) or the handler fires.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from types import FrameType

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._supervisor import Supervisor

log = logging.getLogger("corral")

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Reentrant: the handler (main thread) may restore handlers while the main thread was
# interrupted inside subscribe/unsubscribe/restore_if_idle holding this lock.
_lock = threading.RLock()
_subscribers: list[Supervisor] = []
_previous: dict[int, Any] = {}
_queue: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
# One signal delivered twice at once is one signal: `timeout -s INT cmd` (and a kill of
# the process group) signal the process and then its group within microseconds, and a
# "second signal" would give the stop up. No person presses Ctrl-C twice this fast.
_SAME_SIGNAL_WINDOW = 0.02
_dispatcher: threading.Thread | None = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def subscribe(sup: Supervisor) -> bool:
    """Route SIGINT/SIGTERM to ``sup``. Returns False if not in the main thread."""
    global _dispatcher
    if not _in_main_thread():
        return False
    with _lock:
        if sup in _subscribers:
            return True
        _subscribers.append(sup)
        if not _previous:
            for signum in SIGNALS:
                _previous[signum] = signal.getsignal(signum)
                signal.signal(signum, _handler)
        if _dispatcher is None:
            _dispatcher = threading.Thread(
                target=_dispatch, name="corral-signals", daemon=True
            )
            _dispatcher.start()
    return True


def unsubscribe(sup: Supervisor) -> None:
    with _lock:
        if sup in _subscribers:
            _subscribers.remove(sup)
    restore_if_idle()


def restore_if_idle() -> None:
    """Put back the earlier handlers if no supervisor subscribes (main thread only)."""
    global _dispatcher
    if not _in_main_thread():
        return
    with _lock:
        if _subscribers or not _previous:
            return
        for signum, prev in list(_previous.items()):
            if signal.getsignal(signum) is _handler:
                signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        _previous.clear()
        if _dispatcher is not None:
            _queue.put(None)
            _dispatcher = None


def _dispatch() -> None:
    last: tuple[int, float] = (0, -math.inf)
    while True:
        item = _queue.get()
        if item is None:
            return
        signum, when = item
        if signum == last[0] and when - last[1] < _SAME_SIGNAL_WINDOW:
            log.debug("signal %s delivered twice at once: handled once", signum)
            continue
        last = item
        with _lock:
            subs = list(_subscribers)
        for sup in subs:
            try:
                sup._stop.on_signal(signum)
            except BaseException:
                log.exception("corral: error while handling signal %s", signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    # Runs in the main thread, between two bytecodes of whatever it was doing: no locks.
    prev = _previous.get(signum, signal.SIG_DFL)
    if not _subscribers:
        # Every supervisor has stopped, but the last stop finished off the main thread,
        # so our handler is still installed: put the earlier handlers back (we are in
        # the main thread now) and let the signal do what it did before corral.
        restore_if_idle()
        _redeliver(signum, prev, frame)
        return
    _queue.put((signum, time.monotonic()))
    go_sup = None
    for sup in _subscribers:
        if sup._signal_mode == "passthrough":
            go_sup = sup
    if go_sup is not None:
        # corral.go()'s default supervisor: wait for its tasks (bounded), then let the
        # signal do what it would have done without corral.
        go_sup._stop.event.wait(go_sup.stop_timeout)
        _redeliver(signum, prev, frame)
        return
    if callable(prev) and prev is not signal.default_int_handler and not _is_asyncio_runners(prev):
        prev(signum, frame)


def _is_asyncio_runners(handler: Any) -> bool:
    """``asyncio.run``'s own SIGINT handler (it cancels the main task): while a
    supervisor handles the signal, it is not chained to (it is put back after)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    method = getattr(handler, "func", handler)  # (a functools.partial of Runner._on_sigint)
    return isinstance(getattr(method, "__self__", None), asyncio.Runner)


def _redeliver(signum: int, prev: Any, frame: FrameType | None) -> None:
    if prev is signal.default_int_handler:
        raise KeyboardInterrupt
    if prev is signal.SIG_IGN:
        return
    if callable(prev):
        prev(signum, frame)
        return
    # SIG_DFL (or None: a handler not installed from Python): the default action.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _after_fork_in_child() -> None:
    """In a forked child (see _fork): the parent's supervisors do not stop on the
    child's signals, the dispatcher thread does not exist, and ``_lock`` may have been
    held by a thread that does not either. The handlers corral installed are put back
    (the forking thread is the child's main thread)."""
    global _lock, _queue, _dispatcher
    _lock = threading.RLock()
    _queue = queue.SimpleQueue()
    _dispatcher = None
    _subscribers.clear()
    restore_if_idle()
