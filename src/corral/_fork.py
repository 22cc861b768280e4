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
import sys

from . import _clock, _group, _links, _pool, _supervisor
from ._context import busy as _busy
from ._context import current as _current
from ._errors import Cancelled

__all__: list[str] = []

FORKED = "the process forked; this task runs in the parent, not in this child process"


def _after_fork_in_child() -> None:
    # No other thread runs here: the registries can be read without their locks (which
    # a vanished thread may hold), then replaced.
    inherited = _links.forget_after_fork()
    _group._forget_after_fork()
    _pool._after_fork_in_child()
    signals = sys.modules.get(f"{__package__}._signals")  # (loaded on first use)
    if signals is not None:
        signals._after_fork_in_child()
    _supervisor._forget_default_after_fork()
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
        _forget_group(g, cause, todo)


def _forget_group(group: _group.Group, cause: BaseException, children: list[_group.Group]) -> None:
    """End an inherited group's tasks (CANCELLED, no hooks: they are the parent's) and
    close it; add the groups its tasks made to ``children``."""
    for t in group._life.forget_after_fork(cause, group._role.refuse):
        children.extend(t._child_groups_alive())
        t._child_groups_closed()
    group._role.forgotten_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
