"""The runner side of a singleton's lease: campaign for it, renew it, release it.

The group runs a singleton's attempt between these: :func:`campaign` asks the
coordinator until the lease is this process's (or the task is stopped), a
:class:`LeaseRenewer` renews it on a thread of its own while the attempt runs and
marks it lost when the coordinator refuses a renewal or its deadline passes, and
:func:`release_after_run` gives it up once the attempt has returned. Never does a task
run without a lease: a backend that cannot be asked counts as "not held".
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._coordinator import Coordinator, Lease, lease_clock, process_owner, reserve, unreserve
from ._errors import CoordinatorError, LeaseLost

if TYPE_CHECKING:
    from ._token import Token

__all__ = ["LeaseRenewer", "campaign", "release_after_run"]

log = logging.getLogger("corral")


def campaign(
    name: str,
    coordinator: Coordinator,
    token: Token,
    on_error: Callable[[CoordinatorError, bool], object],
    rand: Callable[[], float] = random.random,
) -> Lease | None:
    """Try for the lease until it is ours (returned) or ``token`` is cancelled (None).

    Polls every ``poll_interval`` x U(0.8, 1.2); after a backend error, backs off
    exponentially (full jitter) up to ``max(ttl, 1s)``, calling ``on_error(error,
    first)`` (``first``: the first error of its kind since the last success). Never
    runs without a lease: an error is "not held".
    """
    try:
        return _campaign(name, coordinator, token, on_error, rand)
    finally:
        coordinator.note_holder(name, None)  # seen() is about a campaign that is asking


def _campaign(
    name: str,
    coordinator: Coordinator,
    token: Token,
    on_error: Callable[[CoordinatorError, bool], object],
    rand: Callable[[], float],
) -> Lease | None:
    secret = os.urandom(16).hex()
    errors = 0
    last_kind: tuple[object, ...] = ()
    maybe_applied = False
    while True:
        if token.cancelled:
            break
        if not reserve(name):  # this process runs (or asks for) the name already
            if not token.sleep(coordinator.poll_interval * (0.8 + 0.4 * rand())):
                break
            continue
        try:
            lease = coordinator.try_acquire(name, owner=process_owner(), secret=secret)
        except Exception as e:  # a backend (or a Coordinator subclass) failed: not held
            unreserve(name)
            maybe_applied = True  # a timed-out acquire may have happened: forget it later
            error = e if isinstance(e, CoordinatorError) else _wrap(coordinator, "acquire", name, e)
            kind = (type(e), type(e.__cause__)) if isinstance(e, CoordinatorError) else (type(e),)
            on_error(error, kind != last_kind)
            last_kind = kind
            errors += 1
            cap = max(coordinator.ttl or 1.0, 1.0)
            delay = min(cap, coordinator.poll_interval * 2 ** min(errors, 16)) * rand()
            delay = max(delay, coordinator.poll_interval / 2)
        else:
            if errors:
                log.info("lease %r: %s answers again", name, coordinator.describe())
                errors = 0
                last_kind = ()
            if lease is not None:
                if token._cause is not None:  # stopped while we asked: do not hold it
                    _release_quietly(coordinator, lease)
                    unreserve(name)
                    return None
                return lease  # (the name stays reserved until release_after_run)
            unreserve(name)
            delay = coordinator.poll_interval * (0.8 + 0.4 * rand())
        if not token.sleep(delay):
            break
    if maybe_applied:
        # Same secret: releases an acquire that the backend applied but whose reply
        # we never saw, so nobody waits a whole TTL for a lease no one knows it holds.
        _release_quietly(coordinator, Lease(name, 0, process_owner(), 0.0, secret=secret))
    return None


def _wrap(coordinator: Coordinator, what: str, name: str, e: Exception) -> CoordinatorError:
    error = CoordinatorError(f"{coordinator.describe()}: {what} of lease {name!r} failed: {e!r}")
    error.__cause__ = e
    return error


def _release_quietly(coordinator: Coordinator, lease: Lease) -> None:
    try:
        coordinator.release(lease)
    except Exception as e:
        log.warning("lease %r: release failed (it will expire by itself): %s", lease.name, e)


class LeaseRenewer:
    """Renews a held lease on its own thread, and loses it when the coordinator refuses
    a renewal or the holder's deadline passes without a successful one."""

    _WAIT_CAP = 1.0  # seconds: re-read the clock at least this often (suspend/resume)

    def __init__(self, lease: Lease, coordinator: Coordinator, acquired_at: float) -> None:
        self.lease = lease
        self.coordinator = coordinator
        self._next = acquired_at + coordinator.renew_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"corral-lease:{lease.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        lease, coordinator = self.lease, self.coordinator
        interval = coordinator.renew_interval
        failing = False
        while lease._lost is None:
            now = lease_clock()
            wake = min(self._next, lease.deadline)
            if self._stop.wait(min(max(0.0, wake - now), self._WAIT_CAP)):
                return
            now = lease_clock()
            if now >= lease.deadline:
                lease._lose(LeaseLost(
                    f"lease {lease.name!r} (fence {lease.fence}) expired: no successful renewal "
                    f"since {now - (lease.deadline - coordinator.validity):.3g}s ago"
                ))
                return
            if now < self._next:
                continue
            sent = now
            try:
                ok = coordinator.renew(lease)
            except Exception as e:  # transient (or unknown): retry until the deadline
                if not failing:
                    log.warning(
                        "lease %r: renewal failed, retrying until its deadline (%.3gs left): %s",
                        lease.name, max(0.0, lease.deadline - lease_clock()), e,
                    )
                failing = True
                self._next = lease_clock() + min(0.5, interval / 4) * (0.5 + random.random())
                continue
            if ok:
                if failing:
                    log.info("lease %r: renewed again", lease.name)
                failing = False
                if lease.deadline != math.inf:
                    lease.deadline = sent + coordinator.validity
                self._next = sent + interval
            else:
                lease._lose(LeaseLost(
                    f"lease {lease.name!r} (fence {lease.fence}) is gone: {coordinator._gone}"
                ))
                return


def release_after_run(coordinator: Coordinator, lease: Lease) -> None:
    """Release once the guarded work has returned, never under the work's token: it is
    cancelled by then, and a release that heeded it would give up without asking, leaving
    the next holder to wait for the lease to expire.

    A lost lease is released too: compare-and-delete is a harmless no-op on a lease
    that is someone else's, and a file lease's descriptor must be closed either way."""
    try:
        lease._end_of_run()
        _release_quietly(coordinator, lease)
    finally:
        unreserve(lease.name)
