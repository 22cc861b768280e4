"""What links a group to longer-lived objects: the registry of roots (a group made
outside any task, or detached), the task that made it, and a token given to it.

The links are undone when the group closes: a task that makes a group per request must
not keep every closed one (and its token) alive.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._group import Group
    from ._task import Task
    from ._token import Token

__all__ = ["Links", "roots"]

_roots: dict[Group, None] = {}
_roots_lock = threading.Lock()


def roots() -> list[Group]:
    """Every root group alive (made outside any task, or detached): the forest."""
    with _roots_lock:
        return list(_roots)


class Links:
    """One group's links, made when the group is (its token and lifecycle exist)."""

    __slots__ = ("given", "group", "parent_task", "unlinks")

    def __init__(self, group: Group, parent_task: Task[Any] | None, given: Token | None) -> None:
        self.group = group
        self.parent_task = parent_task
        self.given = given
        self.unlinks: list[Callable[[], None]] = []

    def link(self) -> None:
        """Register the group (a root, or a group of the task that made it), then
        follow its tokens, whose callbacks may run at once: a group made cancelled
        (in a cancelled task, or given a cancelled token) ends at once, registered
        first so that its end unregisters it."""
        group = self.group
        parent_task = self.parent_task
        if parent_task is not None:
            parent_task._adopt(group)
        else:
            with _roots_lock:
                _roots[group] = None
        given = self.given
        if parent_task is not None and given is not None:
            # Made in a task, the group's token is a child of the task's: the token it
            # was given cancels it too.
            self.unlinks.append(given.on_cancel(self._given_cancelled))
        # The group's token, once cancelled, cancels the group's tasks.
        self.unlinks.append(group.token.on_cancel(group._on_cancelled))

    def _given_cancelled(self) -> None:
        given = self.given
        if given is not None:
            self.group.token.cancel(given.cause)

    def unlink(self) -> None:
        """The group has closed: let go of the roots registry, the task that made it,
        and the tokens' callbacks (a token with callbacks is held by its parent: see
        ``Token``)."""
        with _roots_lock:
            _roots.pop(self.group, None)
        task, self.parent_task = self.parent_task, None
        if task is not None:
            task._disown(self.group)
        unlinks, self.unlinks = self.unlinks, []
        for unlink in unlinks:
            unlink()
        self.given = None


def forget_after_fork() -> list[Group]:
    """In a forked child: the registry of roots starts empty, with a fresh lock (the
    inherited groups are the parent's; _fork closes them). Returns the inherited roots."""
    global _roots_lock
    inherited = list(_roots)
    _roots_lock = threading.Lock()
    _roots.clear()
    return inherited
