"""Questions about what a group's tasks wait for (read under the group's lock; they
change nothing): the parked tasks nothing can release, whether a join may go on, why a
task is pending, and what a stop in dependency order cancels next."""

from __future__ import annotations

from ._record import CAMPAIGNING, PARKED, QUEUED

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._lifecycle import Lifecycle
    from ._task import Task

__all__ = ["foreground_done", "next_layer", "stranded", "stuck_for_good", "waiting_for"]


def stuck_for_good(life: Lifecycle) -> int:
    """With a limit: how many tasks queue for a slot that none of the tasks holding the
    slots will ever give up, because each of those waits for a task of the group that
    cannot run (it queues or is parked for a slot, or is itself such a waiter: chains);
    0 if some slot will come free. Its waiters are ``life.stuck``: the slot holders
    blocked in a wait for tasks of their own group, each with what it waits for."""
    waiters = life.stuck
    if (
        life.limit is None or len(waiters) < life.slots  # (a holder that does not wait)
        or life.cancelling or life.token._cause is not None  # (the queued tasks end)
    ):
        return 0
    targets = {waiter: target() for waiter, target in waiters.items()}
    stuck = {
        waiter for waiter, t in targets.items()
        if t is not None and (t._phase is QUEUED or t._phase is PARKED)
    }
    changed = True
    while changed:  # a fixpoint: a waiter for a stuck waiter is stuck (chains)
        changed = False
        for waiter, t in targets.items():
            if waiter not in stuck and t in stuck:
                stuck.add(waiter)
                changed = True
    if len(stuck) < life.slots:
        return 0
    return sum(1 for t in life.queue if t._phase is QUEUED)


def stranded(life: Lifecycle) -> dict[Task[Any], str]:
    """Parked tasks that nothing left can release, each with the name of the task it
    waits for in vain: a task it needs is gone, or is itself stranded (chains).

    Only meaningful once no task of the group runs (nothing could spawn the missing
    name again): see ``foreground_done``.
    """
    out: dict[Task[Any], str] = {}
    candidates = [
        t for t in life.waiting
        if t._phase is PARKED and t.needs and t._replaces is None
    ]
    changed = True
    while changed:  # a fixpoint: chains in any order
        changed = False
        for t in candidates:
            if t in out:
                continue
            for n in t.needs:
                dep = life.live.get(n)
                if dep is None or dep in out:
                    out[t] = n
                    changed = True
                    break
    return out

def foreground_done(life: Lifecycle) -> bool:
    """Whether a join may go on: no foreground task is left, or only parked ones that
    nothing can release."""
    if life.foreground == 0:
        return True
    if life.waiting and life.foreground <= len(life.waiting):
        # Only parked tasks are left in the foreground: done if none of them can
        # ever be released (nothing is running that could bring back what they need).
        left = stranded(life)
        return sum(1 for t in left if not t.background) == life.foreground
    return False

def waiting_for(life: Lifecycle, task: Task[Any]) -> str:
    """Why a PENDING task waits, in words (for snapshots)."""
    if task._phase is CAMPAIGNING:
        return "lease (campaigning)"
    if not life.started:
        return f"{life.kind} not started"
    old = task._replaces
    if old is not None and old._outcome is None:
        return f"replaced task {old.name!r} to end"
    for n in task.needs:
        dep = life.live.get(n)
        if dep is None:
            return f"needs {n!r} (gone)"
        if not dep._ready:
            return f"needs {n!r}"
    if life.cancelling or life.token._cause is not None:
        return "group cancelled"
    return "limit"

def next_layer(life: Lifecycle, keep: set[Task[Any]] | None = None) -> list[Task[Any]]:
    """The unfinished tasks (but those in ``keep``) that no other one needs: what a
    stop in reverse dependency order cancels next. Empty once none is left."""
    live = [t for t in life.unfinished if keep is None or t not in keep]
    needed = {n for t in live for n in t.needs}
    # (All of them if each is needed: a cycle cannot be spawned, but cancel then.)
    return [t for t in live if t.name not in needed] or live
