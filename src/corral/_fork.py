"""What a forked child keeps of corral: a fresh process state, and nothing of the
parent's work.

``os.fork()`` (and multiprocessing's ``fork`` start method, the default on Linux before
Python 3.14) copies the process with the forking thread only. In the child, the pool's
workers, the timer thread, the signal dispatcher and every task's thread are gone, and
a lock that one of them held at the moment of the fork stays locked forever. So, in the
child (``os.register_at_fork``), as ``concurrent.futures`` does for its part:

- corral starts afresh: a worker pool with no threads (the pool object stays: groups
  hold its ``submit``), the timer thread, the signal state (the handlers corral
  installed are put back; the parent's supervisors do not stop on the child's
  signals), the roots registry, and no default supervisor: ``corral.go()`` makes one.
- Groups and tasks inherited from the parent are the parent's: they go on running
  there. In the child every inherited group is closed and its unfinished tasks end at
  once, CANCELLED with the cause ``Cancelled("the process forked; ...")``: joining one
  returns at once (raising nothing: its failures are the parent's to report), spawning
  into one raises ``GroupClosed`` (``SupervisorStopped`` for a supervisor),
  ``roots()`` lists none of them, and exit does not wait for them. No hook runs for
  them and no token is cancelled: both would run the parent's code in the child, and a
  cancel callback could act on something the two processes share (``sock.shutdown()``
  on an inherited socket shuts the parent's connection too). Their restart timers are
  dropped; other timers (a token's deadline) still fire in the child.
- A child forked from inside a task (``multiprocessing.Process.start()`` in a task) is
  not that task: ``corral.current_task()`` is None there, so ``corral.sleep`` and
  ``corral.check`` act as outside any task. Such a child should end with
  ``os._exit()`` (multiprocessing does), not return into the parent's task.

Inherited leases are dropped by the coordinator module's own handler (``_coordinator``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from . import _clock, _group, _pool, _signals, _supervisor
from ._errors import Cancelled
from ._sync import YieldingLock
from ._task import _FINAL, TaskState, _busy, _current

__all__: list[str] = []

FORKED = "the process forked; this task runs in the parent, not in this child process"


def _after_fork_in_child() -> None:
    # No other thread runs here: the registries can be read without their locks (which
    # a vanished thread may hold), then replaced.
    inherited = list(_group._roots)
    _pool._after_fork_in_child()
    _signals._after_fork_in_child()
    _supervisor._forget_default_after_fork()
    _group._forget_after_fork()
    _end_inherited(inherited, Cancelled(FORKED))
    _clock._after_fork_in_child()
    _current.set(None)  # (the context of the forking thread: this child is no task)
    if getattr(_busy, "group", None) is not None:
        _busy.group = None
    if getattr(_busy, "finishing", None) is not None:
        _busy.finishing = None


def _end_inherited(roots: list[_group.Group], cause: BaseException) -> None:
    """Close every group of the inherited forest and end its tasks (see above)."""
    seen: set[_group.Group] = set()
    todo = list(roots)
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        for t in list(g._unfinished):
            if t._child_groups:
                todo.extend(t._child_groups)
        _end_group(g, cause)


def _end_group(g: _group.Group, cause: BaseException) -> None:
    g._lock = lock = YieldingLock()
    g._cond = threading.Condition(lock)  # type: ignore[arg-type]
    g._nwaiters = 0  # (the waiters were the parent's threads)
    ended = list(g._unfinished)
    for t in ended:
        timer, t._timer = t._timer, None
        if timer is not None:
            timer.cancel()
        if t._state not in _FINAL:
            t._state = TaskState.CANCELLED
            t._error = cause
            if t._cancel_cause is None:
                t._cancel_cause = cause
        t._slot = False
        t._ready = False
        t._hold = False
        t._thread_ident = None
        if t._single is not None:
            t._single.campaigning = False
        t._child_groups = None
        t._done = True
    g._ends += len(ended)
    g._unfinished.clear()
    g._live.clear()
    g._waiting.clear()
    g._queue.clear()
    g._dependents.clear()
    g._fg = 0
    g._slots = 0
    g._closed = True
    g._reported = True  # (its failures are the parent's to raise)
    if isinstance(g, _supervisor.Supervisor):
        sup: Any = g
        sup._stop_begun = sup._stop_done = sup._stopping = True
        sup._stopped_event = threading.Event()
        sup._stopped_event.set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
