"""Where running tasks are: the stacks that a stop report (``StopTimeout``) and the
at-exit warning show."""

from __future__ import annotations

import os
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._group import Group

__all__ = ["running_stacks"]

_OWN_FILES = (os.path.dirname(os.path.abspath(__file__)) + os.sep, threading.__file__)
_CALLS_TASKS = os.path.join(_OWN_FILES[0], "_threads.py")  # (its call_function runs a task's function)


def user_stack(where: FrameType | list[FrameType]) -> str:
    """A stack from the first frame of the user's code: the frames of the worker pool
    and corral's attempt machinery above it say nothing to the reader. ``where``: a
    thread's innermost frame, or a coroutine's frames (outermost first: a suspended
    coroutine's frame has no ``f_back``; its chain is ``cr_await``)."""
    import traceback  # (only for stop reports: it is slow to import)

    if isinstance(where, list):
        frames = traceback.StackSummary.extract((f, f.f_lineno) for f in where)
    else:
        frames = traceback.extract_stack(where)
    start = 0
    for i, fs in enumerate(frames):
        if fs.filename == _CALLS_TASKS and fs.name == "call_function":
            start = i + 1  # the frame where corral called the task's function: what follows is the user's
            break
        if not start and not fs.filename.startswith(_OWN_FILES[0]) and fs.filename != _OWN_FILES[1]:
            start = i  # (a stack that does not come through call_function: its first user frame)
    return "".join(traceback.format_list(frames[start:]))


def running_stacks(group: Group, prefix: str, out: dict[str, str], stacks: bool = True) -> None:
    """Each running task of ``group``'s subtree, by path ("parent/child"), with its
    stack: a task stuck joining a child group is named, and so is the grandchild that
    ignores its token. ``stacks`` False: the names only (each stack is "")."""
    from ._record import TaskState

    for t in group.tasks:
        if t.state is TaskState.RUNNING:
            if not stacks:
                out[prefix + t.name] = ""
            elif (frame := t._stack()) is not None:
                out[prefix + t.name] = user_stack(frame)
            else:
                out[prefix + t.name] = "(not started yet)\n"
        for child in t._child_groups_alive():
            running_stacks(child, f"{prefix}{t.name}/", out, stacks)
