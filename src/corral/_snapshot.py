"""The shapes of ``snapshot()``: what a group, a task and a singleton's lease look like
to an operator. Plain JSON (``json.dumps(snapshot, allow_nan=False)`` works); typed for
the readers of that JSON. Exported as ``corral.GroupSnapshot``, ``corral.TaskSnapshot``
and ``corral.LeaseSnapshot``, loaded on first use: building ``TypedDict`` classes costs
an import a few milliseconds that a program that never looks does not pay.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypedDict

from ._errors import describe, safe_repr
from ._queries import waiting_for
from ._record import TaskState

if TYPE_CHECKING:
    from ._coordinator import Coordinator
    from ._group import Group
    from ._task import Task

__all__ = ["GroupSnapshot", "LeaseSnapshot", "TaskSnapshot", "group_snapshot", "task_snapshot"]


class LeaseSnapshot(TypedDict):
    """A singleton's lease in a snapshot."""

    state: str | None  # campaigning, holding, lost, released (None before the first campaign)
    coordinator: str
    fence: int | None
    owner: str | None  # who holds it: this process while holding, else the holder seen
    remaining: float | None  # seconds of validity left while holding (None: unbounded)


class TaskSnapshot(TypedDict, total=False):
    """One task in a snapshot (JSON-safe: ``json.dumps(..., allow_nan=False)`` works)."""

    name: str
    state: str
    attempts: int
    started: float | None  # wall-clock time (epoch seconds) the current attempt began
    waiting_for: str | None  # why a PENDING task waits
    cause: str | None  # why it was cancelled
    last_error: str | None
    meta: dict[str, Any]
    background: bool
    drain: bool
    draining: bool
    children: list[GroupSnapshot]
    lease: LeaseSnapshot


class GroupSnapshot(TypedDict, total=False):
    """A group (or supervisor) in a snapshot, with its tasks and their child groups."""

    name: str
    kind: str
    state: str
    limit: int | None
    tasks: list[TaskSnapshot]
    pool: dict[str, int]  # roots only: the worker pool's threads, idle and busy workers


def group_snapshot(group: Group) -> GroupSnapshot:
    """See ``Group.snapshot``."""
    life = group._life
    with life.lock:
        tasks = list(life.unfinished)
        state = (
            "closed" if life.closed
            else "draining" if life.draining and any(t.drain for t in tasks)
            else "cancelled" if group.token.cancelled
            else "running" if life.started else "not started"
        )
    snap: GroupSnapshot = {
        "name": group.name,
        "kind": group._kind,
        "state": state,
        "limit": life.limit,
        "tasks": [task_snapshot(t) for t in tasks],
    }
    if group.parent is None:
        from ._pool import get_pool

        pool = get_pool()
        snap["pool"] = {"threads": pool.threads, "idle": pool.idle, "busy": pool.busy}
    return snap


def task_snapshot(task: Task[Any]) -> TaskSnapshot:
    groups = task._child_groups or ()
    state = task.state
    cause = task.cause
    error = task._last_error
    snap: TaskSnapshot = {
        "name": task.name,
        "state": state.value,
        "attempts": task.attempts,
        "started": task._started_at if state is TaskState.RUNNING else None,
        "waiting_for": waiting_for(task._life, task) if state is TaskState.PENDING else None,
        "cause": describe(cause) if cause is not None else None,
        "last_error": describe(error) if error is not None else None,
        "meta": {str(k): _json_safe(v) for k, v in task.meta.items()},
        "background": task.background,
        "drain": task.drain,
        "draining": task.draining,
        "children": [g.snapshot() for g in list(groups) if not g.closed],
    }
    single = task._lease_state
    if single is not None:
        lease = single.lease
        owner = lease.owner if lease is not None else None
        if owner is None and single.state == "campaigning":
            owner = _holder_seen(single.coordinator, task.name)
        remaining = lease.remaining() if lease is not None else None
        snap["lease"] = {
            "state": single.state,
            "coordinator": single.coordinator.describe(),
            "fence": lease.fence if lease is not None else None,
            "owner": owner,
            "remaining": remaining if remaining is None or math.isfinite(remaining) else None,
        }
    return snap


def _holder_seen(coordinator: Coordinator, name: str) -> str | None:
    """Who holds a lease this process campaigns for, as its campaign last saw it (no
    I/O). None while nobody holds it, or while a run of this process still does."""
    try:
        seen = coordinator.seen(name)
    except Exception:  # a coordinator of one's own: a snapshot must not fail for it
        return None
    return seen.owner if seen is not None else None


def _json_safe(value: Any) -> Any:
    """A snapshot's copy of a meta value: JSON types as they are, the rest as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return safe_repr(value)
