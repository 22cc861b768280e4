"""A group's ``snapshot()`` as an indented text tree (used by the demo and the CLI).

::

    supervisor 'demo' (running)
    |-- flaky    backoff    attempts=2  last_error=ConnectionError('refused')
    |-- batch    running    attempts=1
    |   `-- group 'batch' (running, limit=3)
    |       |-- corral._demo.resize[map#4]  running  attempts=1
    |       `-- corral._demo.resize[map#5]  pending
    `-- web      pending

Plain ASCII, so that it prints the same on any terminal, log file or pipe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["format_tree"]

_NAME_WIDTH = 32  # names are padded to the longest sibling's, up to this width
_STATE_WIDTH = 9  # len("succeeded"), len("cancelled")
_ERROR_WIDTH = 80  # a longer repr of the last error is cut


def format_tree(snapshot: Mapping[str, Any], *, max_tasks: int | None = None) -> str:
    """Format a ``Group.snapshot()`` (or ``Supervisor.snapshot()``) as a text tree.

    One line per group (``kind 'name' (state, limit=n)``) and per task (name, state,
    attempts, last error, meta, ``background``, a singleton's lease), child groups under the task that
    made them. ``max_tasks`` shows at most that many tasks per group and sums up the
    rest on one line (``... 25 more: 3 running, 22 pending``).
    """
    if max_tasks is not None and max_tasks < 0:
        raise ValueError(f"max_tasks must be >= 0 or None, not {max_tasks!r}")
    lines = [_group_line(snapshot)]
    _add_tasks(lines, snapshot, "", max_tasks)
    return "\n".join(lines)


def _group_line(group: Mapping[str, Any]) -> str:
    details = [str(group.get("state", "?"))]
    if group.get("limit") is not None:
        details.append(f"limit={group['limit']}")
    return f"{group.get('kind', 'group')} {group.get('name')!r} ({', '.join(details)})"


def _task_line(task: Mapping[str, Any], width: int) -> str:
    parts = [f"{task['name']:<{width}}", f"{task['state']!s:<{_STATE_WIDTH}}"]
    if task.get("attempts"):
        parts.append(f"attempts={task['attempts']}")
    error = task.get("last_error")
    if error is not None:
        text = error if isinstance(error, str) else repr(error)  # ("Type: message")
        if len(text) > _ERROR_WIDTH:
            text = text[: _ERROR_WIDTH - 3] + "..."
        parts.append(f"last_error={text}")
    parts.extend(f"{key}={value}" for key, value in (task.get("meta") or {}).items())
    if task.get("background"):
        parts.append("background")
    if task.get("draining"):
        parts.append("draining")
    waiting = task.get("waiting_for")
    if waiting and task.get("state") == "pending" and not waiting.endswith("not started"):
        parts.append(f"waiting for {waiting}")  # (the group's line says "not started")
    lease = task.get("lease")
    if lease:
        text = f"lease={lease['state']}" if lease.get("state") else "singleton"
        if lease.get("state") == "holding" and lease.get("fence") is not None:
            text += f"(fence {lease['fence']})"
        parts.append(text)
    return "  ".join(parts).rstrip()


def _add_tasks(
    lines: list[str], group: Mapping[str, Any], indent: str, max_tasks: int | None
) -> None:
    tasks: list[Mapping[str, Any]] = list(group.get("tasks") or ())
    shown = tasks if max_tasks is None else tasks[:max_tasks]
    hidden = tasks[len(shown):]
    width = min(max((len(t["name"]) for t in shown), default=0), _NAME_WIDTH)
    for i, task in enumerate(shown):
        last = i == len(shown) - 1 and not hidden
        lines.append(indent + ("`-- " if last else "|-- ") + _task_line(task, width))
        below = indent + ("    " if last else "|   ")
        children: list[Mapping[str, Any]] = list(task.get("children") or ())
        for j, child in enumerate(children):
            child_last = j == len(children) - 1
            lines.append(below + ("`-- " if child_last else "|-- ") + _group_line(child))
            _add_tasks(lines, child, below + ("    " if child_last else "|   "), max_tasks)
    if hidden:
        states = Counter(str(t["state"]) for t in hidden)
        summary = ", ".join(f"{n} {state}" for state, n in states.items())
        lines.append(f"{indent}`-- ... {len(hidden)} more: {summary}")
