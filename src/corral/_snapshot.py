"""The shapes of ``snapshot()``: what a group, a task and a singleton's lease look like
to an operator. Plain JSON (``json.dumps(snapshot, allow_nan=False)`` works); typed for
the readers of that JSON. Exported as ``corral.GroupSnapshot``, ``corral.TaskSnapshot``
and ``corral.LeaseSnapshot``, loaded on first use: building ``TypedDict`` classes costs
an import a few milliseconds that a program that never looks does not pay.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["GroupSnapshot", "LeaseSnapshot", "TaskSnapshot"]


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
