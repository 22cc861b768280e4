"""The public Coordinator interface: a backend of one's own plugs into singletons.

An in-memory coordinator (one process) stands for a future backend (PostgreSQL, etcd):
it must be enough to implement the four calls, with public names only (``lease.secret``,
``self.note_holder``). A failing backend never lets a singleton run ("fail open"), and
is logged at ERROR once per kind of error.
"""

from __future__ import annotations

import ast
import inspect
import logging
import math
import textwrap
import threading

import pytest

import corral
from helpers import TIMEOUT


class MemoryCoordinator(corral.Coordinator):
    """Leases in a dict: enough for one process, and for these tests."""

    poll_interval = 0.01
    renew_interval = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, tuple[str, int, str]] = {}  # name -> secret, fence, owner
        self._fences: dict[str, int] = {}
        self.renewals = 0
        self.refuse_once = threading.Event()  # the next renewal finds the lease gone

    def try_acquire(self, name: str, *, owner: str, secret: str) -> corral.Lease | None:
        with self._lock:
            held = self._holders.get(name)
            if held is not None and held[0] != secret:
                # What seen() reports while a campaign of this process waits.
                self.note_holder(name, corral.Lease(name, held[1], held[2], math.inf))
                return None
            self.note_holder(name, None)
            if held is None:
                fence = self._fences[name] = self._fences.get(name, 0) + 1
                self._holders[name] = (secret, fence, owner)
            else:
                fence = held[1]
            return corral.Lease(name, fence, owner, math.inf, secret=secret)

    def renew(self, lease: corral.Lease) -> bool:
        with self._lock:
            self.renewals += 1
            if self.refuse_once.is_set():
                self.refuse_once.clear()
                self._holders.pop(lease.name, None)  # taken away (expired elsewhere)
            held = self._holders.get(lease.name)
            return held is not None and held[0] == lease.secret

    def release(self, lease: corral.Lease) -> None:
        with self._lock:
            held = self._holders.get(lease.name)
            if held is not None and held[0] == lease.secret:
                del self._holders[lease.name]

    def observe(self, name: str) -> corral.Lease | None:
        with self._lock:
            held = self._holders.get(name)
        return None if held is None else corral.Lease(name, held[1], held[2], math.inf)


def test_a_coordinator_of_ones_own_needs_no_private_name_of_corral() -> None:
    source = textwrap.dedent(inspect.getsource(MemoryCoordinator))
    private = [
        (ast.unparse(node.value), node.attr) for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    # Only attributes of its own: none of a Lease, none that Coordinator defines.
    assert {attr for _, attr in private} == {"_lock", "_holders", "_fences"}
    assert {owner for owner, _ in private} == {"self"}
    assert not {"_lock", "_holders", "_fences"} & {*dir(corral.Coordinator), "_seen_holders"}


def test_a_lease_s_secret_is_public_and_read_only() -> None:
    lease = corral.Lease("job", 1, "here:1", math.inf, secret="s3cret")
    assert lease.secret == "s3cret"
    with pytest.raises(AttributeError):
        lease.secret = "other"  # type: ignore[misc]
    assert corral.Lease("job", 1, "there:2", math.inf).secret is None  # someone else's


def test_seen_says_whom_a_coordinator_of_ones_own_saw_holding_the_lease() -> None:
    memory = MemoryCoordinator()
    assert memory.seen("job") is None
    mine = memory.try_acquire("job", owner="here:1", secret="a")
    assert mine is not None
    assert memory.try_acquire("job", owner="there:2", secret="b") is None
    seen = memory.seen("job")
    assert seen is not None
    assert (seen.owner, seen.fence, seen.secret) == ("here:1", 1, None)
    memory.release(mine)
    assert memory.try_acquire("job", owner="there:2", secret="b") is not None
    assert memory.seen("job") is None


def test_a_coordinator_of_ones_own_runs_one_singleton_at_a_time_and_hands_over() -> None:
    memory = MemoryCoordinator()
    seen: list[tuple[str, int]] = []
    running = threading.Event()

    def job(who: str) -> None:
        lease = corral.current_lease()
        assert lease is not None
        seen.append((who, lease.fence))
        running.set()
        corral.current_token().wait()

    a = corral.Supervisor("a", coordinator=memory, handle_signals=False)
    b = corral.Supervisor("b", coordinator=memory, handle_signals=False)
    try:
        a.spawn(job, "a", name="job", singleton=True)
        a.start()
        assert running.wait(TIMEOUT)
        running.clear()
        tb = b.spawn(job, "b", name="job", singleton=True)
        b.start()
        observed = memory.observe("job")
        assert observed is not None
        assert observed.fence == 1
        assert tb.state is corral.TaskState.PENDING
        a.stop()
        assert running.wait(TIMEOUT)
        assert tb.lease_state == "holding"
    finally:
        a.stop()
        b.stop()
    assert seen == [("a", 1), ("b", 2)]
    assert memory.observe("job") is None  # released on stop


def test_a_refused_renewal_cancels_the_run_with_lease_lost_and_it_campaigns_again() -> None:
    memory = MemoryCoordinator()
    fences: list[int] = []
    causes: list[BaseException | None] = []
    second = threading.Event()

    def job() -> None:
        lease = corral.current_lease()
        assert lease is not None
        fences.append(lease.fence)
        if len(fences) == 2:
            second.set()
        corral.current_token().wait()
        causes.append(corral.current_token().cause)

    with corral.Supervisor("renew", coordinator=memory, handle_signals=False) as sup:
        t = sup.spawn(job, name="job", singleton=True)
        memory.refuse_once.set()
        assert second.wait(TIMEOUT), "the task did not campaign again after losing its lease"
        assert t.attempts == 2
        assert sup.failures == []  # a lost lease is not a failure
    assert isinstance(causes[0], corral.LeaseLost)
    assert fences == [1, 2]


class BrokenCoordinator(MemoryCoordinator):
    """A backend that cannot be reached: first a timeout, then a refusal, then up."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__()
        self.errors = errors
        self.asked = threading.Semaphore(0)

    def try_acquire(self, name: str, *, owner: str, secret: str) -> corral.Lease | None:
        self.asked.release()
        if self.errors:
            raise self.errors.pop(0)
        return super().try_acquire(name, owner=owner, secret=secret)


def test_a_failing_backend_never_lets_the_singleton_run_and_logs_each_kind_once_at_error(
    corral_log: pytest.LogCaptureFixture,
) -> None:
    errors: list[Exception] = [
        TimeoutError("slow"), TimeoutError("slow"), TimeoutError("slow"),
        ConnectionRefusedError("down"), ConnectionRefusedError("down"),
    ]
    broken = BrokenCoordinator(list(errors))
    broken.poll_interval = 0.001  # the backoff after errors starts from here
    ran = threading.Event()
    with corral.Supervisor("broken", coordinator=broken, handle_signals=False) as sup:
        t = sup.spawn(ran.set, name="job", singleton=True)
        for _ in errors:  # every failed ask, then the one that succeeds
            assert broken.asked.acquire(timeout=TIMEOUT)
            assert not ran.is_set(), "ran without a lease"
        assert ran.wait(TIMEOUT)
        t.join(TIMEOUT)
    assert t.state is corral.TaskState.SUCCEEDED
    assert t.attempts == 1
    records = [r for r in corral_log.records if "cannot campaign" in r.getMessage()]
    levels = [(r.levelno, _kind(r.getMessage())) for r in records]
    assert levels == [
        (logging.ERROR, "TimeoutError"), (logging.DEBUG, "TimeoutError"),
        (logging.DEBUG, "TimeoutError"), (logging.ERROR, "ConnectionRefusedError"),
        (logging.DEBUG, "ConnectionRefusedError"),
    ]


def _kind(message: str) -> str:
    return next(
        (k for k in ("ConnectionRefusedError", "TimeoutError") if k in message), message
    )
