"""A singleton task's lease life, as steps of its attempts.

A task spawned with ``singleton=True`` runs only while this process holds a lease
named after it. Each attempt first *campaigns* (blocks, PENDING to the outside, until
the coordinator grants the lease or the task is cancelled), then runs while a renewer
thread keeps the lease; after the attempt (and the groups it made) ended, the renewer
stops and the lease is released. Losing the lease cancels the attempt's token with
``LeaseLost``; the lifecycle then sends the task back to campaign.

The coordinators and the campaign loop live apart (``_coordinator``, ``_campaign``):
this module only ties them to a task, its hooks (``on_lease``) and its logs.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from ._errors import CoordinatorError, LeaseLost
from ._policy import call_hook

if TYPE_CHECKING:
    from ._campaign import LeaseRenewer, campaign, release_after_run
    from ._choose_coordinator import default_coordinator
    from ._coordinator import Coordinator, Lease, check_lease_name, lease_clock
    from ._group import Group
    from ._lifecycle import Lifecycle
    from ._task import Task
else:  # the lease modules load when a singleton first campaigns
    from ._lazy import (
        LeaseRenewer,
        campaign,
        check_lease_name,
        default_coordinator,
        lease_clock,
        release_after_run,
    )

__all__ = ["LeaseState", "campaign_for", "end_lease", "lease_state_for"]

log = logging.getLogger("corral")


class LeaseState:
    """What a singleton task carries besides a task's record: its coordinator, the lease
    it holds, and the lease's state (``campaigning``, ``holding``, ``lost``,
    ``released``; None before the first campaign)."""

    __slots__ = ("coordinator", "lease", "state")

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.lease: Lease | None = None
        self.state: str | None = None


def lease_state_for(group: Group, name: str) -> LeaseState:
    """A new singleton task's lease state (``name`` checked as a lease name): the
    coordinator of its group, else of the nearest ancestor, else the process's."""
    check_lease_name(name)
    g: Group | None = group
    while g is not None:
        if g._coordinator is not None:
            return LeaseState(g._coordinator)
        g = g.parent
    return LeaseState(default_coordinator())


def campaign_for(life: Lifecycle, task: Task[Any]) -> LeaseRenewer | None:
    """Block (the task CAMPAIGNING) until this process holds the task's lease; then
    start renewing it and return the renewer. None if the task was cancelled first."""
    single = task._lease_state
    assert single is not None
    token = task.token
    coordinator = single.coordinator
    _lease_event(life, task, "campaigning", None)

    def on_error(e: CoordinatorError, first: bool) -> None:
        task._in_context(_log_lease_error, task, life, e, first)

    try:
        lease = campaign(task.name, coordinator, token, on_error)
        if lease is None:
            return None
        renewer = LeaseRenewer(lease, coordinator, lease_clock())

        def lost(cause: LeaseLost) -> None:
            # From the renewal thread, or from the task's own check of the lease.
            token.cancel(cause)
            task._in_context(_log_lease_lost, task, life, cause)
            _lease_event(life, task, "lost", lease)

        lease._watch(lost)
        single.lease = lease
        with life.lock:
            life.lease_held(task)
    finally:
        if single.lease is None:
            single.state = None  # (still PENDING outside until the attempt ends)
    _lease_event(life, task, "holding", lease)  # before the renewer can say "lost"
    renewer.start()
    if lease.deadline != math.inf and lease_clock() >= lease.deadline:
        lease._lose(LeaseLost(f"lease {task.name!r} expired before the task could start"))
    return renewer


def end_lease(life: Lifecycle, task: Task[Any], renewer: LeaseRenewer) -> None:
    """The attempt (and the groups it made) ended: stop renewing, release the lease."""
    renewer.stop()
    lease = renewer.lease
    was_lost = lease.lost is not None
    release_after_run(renewer.coordinator, lease)
    assert task._lease_state is not None
    task._lease_state.lease = None
    if not was_lost:
        _lease_event(life, task, "released", lease)


def _lease_event(life: Lifecycle, task: Task[Any], state: str, lease: Lease | None) -> None:
    single = task._lease_state
    assert single is not None
    single.state = state
    if state == "holding":
        assert lease is not None
        log.info(
            "singleton %r holds its lease (fence %d) on %s", task.name, lease.fence,
            single.coordinator.describe(),
            extra={"corral_task": task.name, "corral_group": life.name},
        )
    hook = life.hooks.on_lease
    if hook is not None:
        task._in_context(call_hook, hook, task, state, lease)


def _log_lease_error(task: Task[Any], life: Lifecycle, e: CoordinatorError, first: bool) -> None:
    # The first error of an outage at ERROR (it needs a person); repeats at DEBUG.
    log.log(
        logging.ERROR if first else logging.DEBUG,
        "singleton %r cannot campaign for its lease (it will not run without one; "
        "retrying): %s", task.name, e,
        extra={"corral_task": task.name, "corral_group": life.name},
    )


def _log_lease_lost(task: Task[Any], life: Lifecycle, cause: LeaseLost) -> None:
    log.warning(
        "singleton %r lost its lease; cancelling it, then campaigning again: %s",
        task.name, cause, extra={"corral_task": task.name, "corral_group": life.name},
    )
