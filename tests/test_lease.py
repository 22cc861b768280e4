"""Singleton tasks inside one process, on real backends: a FileCoordinator in tmp_path and
a RedisCoordinator on the ``redis_server`` fixture (a real redis-server on loopback).

Two supervisors (or a supervisor and a group) of one process compete for a name as two
processes would; a process also runs one run of a name at a time whatever the backend, so
the backends' own exclusion within one process (two opens of one lock file conflict; two
secrets) is checked on try_acquire directly. The multi-process tests are in
test_lease_processes.py. Every supervisor here passes handle_signals=False (pytest runs in
the main thread).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import pwd
import re
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

import corral
from corral import (
    Backoff,
    CoordinatorError,
    FileCoordinator,
    Hooks,
    LeaseLost,
    RedisCoordinator,
    Restart,
    Supervisor,
    TaskState,
)
from corral._choose_coordinator import _reset_default, default_coordinator
from corral._coordinator import lease_clock
from helpers import TIMEOUT, Concurrency, in_thread, released, wait
from redis_server import RedisServer, free_port

T = TypeVar("T")

WAIT = TIMEOUT  # a backstop (real seconds): every wait is on an event or a condition
NOT_YET = 0.3  # how long a negative check ("it has not run") looks: several poll intervals
SLACK = 1.5  # added to a real-time bound (2 cores, other tests and a CPU hog in parallel)
OWNER = f"{socket.gethostname()}:{os.getpid()}"
ENV = "CORRAL_COORDINATOR"


class Boom(Exception):
    """The failure the test tasks raise."""


# -- helpers ---------------------------------------------------------------------------------


def make(name: str, coordinator: corral.Coordinator | str | None, **kwargs: Any) -> Supervisor:
    return Supervisor(name, handle_signals=False, coordinator=coordinator, **kwargs)


def state(task: corral.Task[Any]) -> TaskState:
    """The task's state now (a call, so that type checkers do not narrow it)."""
    return task.state


def lease_state(task: corral.Task[Any]) -> str | None:
    """The task's lease state now (a call: no narrowing)."""
    return task.lease_state


def lease_of(task: corral.Task[Any]) -> corral.Lease | None:
    """The task's lease now (a call: no narrowing)."""
    return task.lease


def lost(lease: corral.Lease) -> LeaseLost | None:
    """Why the lease was lost, now (a call: no narrowing)."""
    return lease.lost


def snapshot_of(group: corral.Group, name: str) -> dict[str, Any]:
    [snap] = [t for t in group.snapshot()["tasks"] if t["name"] == name]
    return dict(snap)


class LeaseLog:
    """An ``on_lease`` hook: records (task, state, fence) and lets a test wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[tuple[corral.Task[Any], str, int | None]] = []

    def __call__(self, task: corral.Task[Any], state: str, lease: corral.Lease | None) -> None:
        with self._cond:
            self._items.append((task, state, None if lease is None else lease.fence))
            self._cond.notify_all()

    def items(self, task: corral.Task[Any] | None = None) -> list[tuple[str, int | None]]:
        with self._cond:
            return [(s, f) for t, s, f in self._items if task is None or t is task]

    def states(self, task: corral.Task[Any] | None = None) -> list[str]:
        return [s for s, _ in self.items(task)]

    def wait_for(self, state: str, count: int = 1) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(s == state for _, s, _ in self._items) >= count, WAIT
            )
        assert ok, f"timed out waiting for lease state {state!r} x{count}: {self.states()}"


class Runs:
    """What the runs of a singleton saw: the fence of each run's lease, and how it ended
    (the result of its wait, and its token's cause)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.fences: list[int] = []
        self.ends: list[tuple[bool, BaseException | None]] = []
        self.conc = Concurrency()

    def started(self, fence: int) -> int:
        with self._cond:
            self.fences.append(fence)
            self._cond.notify_all()
            return len(self.fences)

    def ended(self, ok: bool, cause: BaseException | None) -> None:
        with self._cond:
            self.ends.append((ok, cause))
            self._cond.notify_all()

    def wait_started(self, n: int, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.fences) >= n, timeout)

    def wait_ended(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.ends) >= n, WAIT), "a run did not end"


def holder(runs: Runs, gate: threading.Event | None = None) -> Callable[[], None]:
    """A singleton that holds its lease until it is cancelled (stopped, or the lease is
    lost); with ``gate``, its first run then keeps going until the gate opens."""

    def work() -> None:
        lease = corral.current_lease()
        assert lease is not None
        with runs.conc:
            n = runs.started(lease.fence)
            ok = corral.sleep(WAIT)  # False as soon as it is stopped or loses its lease
            runs.ended(ok, corral.current_token().cause)
            if gate is not None and n == 1:
                wait(gate)  # a run that ignores its cancellation for a while

    return work


class Calls:
    """A thread-safe list of hook calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, object]] = []

    def add(self, what: str, value: object = None) -> None:
        with self._lock:
            self._items.append((what, value))

    @property
    def items(self) -> list[tuple[str, object]]:
        with self._lock:
            return list(self._items)


def failure_hooks(calls: Calls, leases: LeaseLog) -> Hooks:
    return Hooks(
        on_lease=leases,
        on_failed=lambda t, e: calls.add("failed", e),
        on_restart=lambda t, d: calls.add("restart", d),
    )


class ErrorSeen(logging.Handler):
    """Sets ``event`` on the first record at ERROR on the ``corral`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.event = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.event.set()


@pytest.fixture
def error_seen() -> Iterator[ErrorSeen]:
    handler = ErrorSeen()
    logger = logging.getLogger("corral")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# Names the tests below run under. A Redis that never saw a name (no fence counter) grants
# its first acquisition only after one ttl (test_redis_first_acquisition_of_a_name_waits_
# one_ttl): the fixtures give these names a counter, as a Redis in service would have.
NAMES = ("leader", "turns", "shared", "one", "job", "flaky", "once", "busy")


def seed(c: RedisCoordinator, server: RedisServer, *names: str) -> None:
    """Give ``names`` a fence counter on the server (the Redis has seen them before)."""
    client = redis.Redis.from_url(server.url)
    try:
        for name in names or NAMES:
            client.set(c.keys(name)[1], 1)
    finally:
        client.close()


@pytest.fixture(params=["file", "redis"])
def coordinator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[corral.Coordinator]:
    """Each backend, tuned for speed. (The Redis TTL is 2 s rather than 1 s: these tests
    wait for no expiry, and a spurious loss under load would change what they check.)"""
    c: corral.Coordinator
    if request.param == "file":
        c = FileCoordinator(tmp_path / "locks", poll_interval=0.05, check_interval=0.1)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        c = RedisCoordinator(server.url, prefix="test", ttl=2.0, poll_interval=0.05)
        seed(c, server)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the test server, to look at and break the lease keys."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


FAST_TTL = 1.0


def fast_redis(server: RedisServer, **kwargs: Any) -> RedisCoordinator:
    """ttl 1 s: renew every 1/3 s, validity 0.79 s, op timeout 1/6 s (names seeded)."""
    c = RedisCoordinator(server.url, prefix="test", ttl=FAST_TTL, poll_interval=0.05, **kwargs)
    seed(c, server)
    return c


def on_file(path: Path) -> tuple[int, str]:
    """(fence, owner) from a lock file's record ``<fence> <owner> ino=<inode>``, checking
    that the record was written in this very file (its inode)."""
    text = path.read_text()
    assert text.endswith("\n"), text
    fence, owner, ino = text[:-1].split(" ")
    assert ino == f"ino={path.stat().st_ino}", text
    return int(fence), owner


def grant(c: corral.Coordinator, name: str, *, owner: str, secret: str) -> corral.Lease:
    """try_acquire until granted: a new lock file is granted only ``c.settle`` after this
    process first saw it (waiting out real time: polled, bounded)."""
    deadline = time.monotonic() + WAIT
    while (lease := c.try_acquire(name, owner=owner, secret=secret)) is None:
        assert time.monotonic() < deadline, f"{name!r} was never granted"
        time.sleep(c.poll_interval)
    return lease


@pytest.fixture
def fresh_go() -> Iterator[None]:
    """corral.go()'s default supervisor made (and stopped) by this test alone."""
    corral._supervisor._reset_default_for_tests()
    try:
        yield
    finally:
        corral._supervisor._reset_default_for_tests()


# -- lifecycle: one holder at a time, takeover on a graceful stop ---------------------------


def test_two_supervisors_one_holds_and_the_other_takes_over_on_stop(
    coordinator: corral.Coordinator,
) -> None:
    runs = Runs()
    log_a, log_b = LeaseLog(), LeaseLog()
    sup_a = make("a", coordinator, hooks=Hooks(on_lease=log_a))
    sup_b = make("b", coordinator, hooks=Hooks(on_lease=log_b))
    try:
        ta = sup_a.spawn(holder(runs), name="leader", singleton=True)
        assert ta.singleton
        assert lease_of(ta) is None
        assert lease_state(ta) is None  # queued: no campaign yet
        assert state(ta) is TaskState.PENDING
        sup_a.start()
        assert runs.wait_started(1)
        assert state(ta) is TaskState.RUNNING
        assert lease_state(ta) == "holding"
        assert ta.attempts == 1
        lease_a = ta.lease
        assert lease_a is not None
        assert lease_a.name == "leader"
        assert lease_a.owner == OWNER
        fence_a = lease_a.fence
        assert runs.fences == [fence_a]
        assert f"lease=holding(fence {fence_a})" in repr(ta)
        snap = snapshot_of(sup_a, "leader")["lease"]
        remaining = snap.pop("remaining")
        assert snap == {
            "state": "holding", "coordinator": coordinator.describe(), "fence": fence_a,
            "owner": OWNER,
        }
        if isinstance(coordinator, FileCoordinator):
            assert remaining is None  # unbounded (JSON has no Infinity)
        else:
            assert 0 < remaining <= coordinator.validity
        seen = coordinator.observe("leader")
        assert seen is not None
        assert (seen.fence, seen.owner) == (fence_a, OWNER)

        tb = sup_b.spawn(holder(runs), name="leader", singleton=True)
        sup_b.start()
        log_b.wait_for("campaigning")
        assert not runs.wait_started(2, NOT_YET)  # several polls: the lease is taken
        assert state(tb) is TaskState.PENDING
        assert lease_state(tb) == "campaigning"
        assert lease_of(tb) is None
        assert tb.attempts == 0  # campaigns are not runs
        assert "lease=campaigning" in repr(tb)
        assert snapshot_of(sup_b, "leader")["lease"] == {
            "state": "campaigning", "coordinator": coordinator.describe(), "fence": None,
            "owner": None, "remaining": None,
        }
        assert corral.current_lease() is None  # (outside any task)

        began = time.monotonic()
        sup_a.stop(WAIT)  # cancels, waits for the run to return, then releases
        assert runs.wait_started(2)
        takeover = time.monotonic() - began
        assert state(ta) is TaskState.CANCELLED
        assert lease_state(ta) == "released"
        assert lease_of(ta) is None
        assert log_a.items() == [
            ("campaigning", None), ("holding", fence_a), ("released", fence_a),
        ]
        fence_b = runs.fences[1]
        assert fence_b > fence_a
        assert state(tb) is TaskState.RUNNING
        assert lease_state(tb) == "holding"
        assert tb.attempts == 1
        assert tb.lease is not None
        assert tb.lease.fence == fence_b
        assert takeover < coordinator.poll_interval * 1.2 + SLACK
        sup_b.stop(WAIT)
        assert log_b.items() == [
            ("campaigning", None), ("holding", fence_b), ("released", fence_b),
        ]
        assert runs.conc.peak == 1  # never two runs at once
        assert coordinator.observe("leader") is None
        assert sup_a.failures == []
        assert sup_b.failures == []
    finally:
        sup_a.stop(WAIT)
        sup_b.stop(WAIT)


def test_many_campaigners_in_one_process_take_turns(coordinator: corral.Coordinator) -> None:
    runs = Runs()
    sups = [make(f"s{i}", coordinator) for i in range(4)]
    tasks = [s.spawn(holder(runs), name="turns", singleton=True) for s in sups]
    try:
        for s in sups:  # all at once: they race for the first acquisition
            s.start()
        for n in range(1, len(sups) + 1):
            assert runs.wait_started(n)
            assert not runs.wait_started(n + 1, 2 * coordinator.poll_interval)
            holding = [t for t in tasks if lease_state(t) == "holding"]
            assert len(holding) == 1
            [t] = holding
            assert state(t) is TaskState.RUNNING
            assert t.attempts == 1
            waiting = [u for u in tasks if state(u) is TaskState.PENDING]
            assert len(waiting) == len(sups) - n
            sups[tasks.index(t)].stop(WAIT)
        assert runs.conc.peak == 1
        assert runs.fences == sorted(set(runs.fences))  # strictly increasing
        assert all(t.attempts == 1 for t in tasks)
    finally:
        for s in sups:
            s.stop(WAIT)


def test_one_run_of_a_name_per_process_even_with_two_coordinators(tmp_path: Path) -> None:
    one = FileCoordinator(tmp_path / "one", poll_interval=0.05, check_interval=0.05)
    two = FileCoordinator(tmp_path / "two", poll_interval=0.05, check_interval=0.05)
    runs, log = Runs(), LeaseLog()
    sup1 = make("one", one)
    sup2 = make("two", two, hooks=Hooks(on_lease=log))
    try:
        sup1.spawn(holder(runs), name="job", singleton=True)
        sup1.start()
        assert runs.wait_started(1)
        t2 = sup2.spawn(holder(runs), name="job", singleton=True)
        sup2.start()
        log.wait_for("campaigning")
        # Its own lock is free, but this process runs "job" already.
        assert not runs.wait_started(2, NOT_YET)
        assert state(t2) is TaskState.PENDING
        assert two.observe("job") is None
        with corral.Group(coordinator=two) as g:  # another name is not held back
            other = g.spawn(lambda: "other", name="other", singleton=True)
        assert other.result() == "other"
        sup1.stop(WAIT)
        assert runs.wait_started(2)
        assert state(t2) is TaskState.RUNNING
        assert len(runs.fences) == 2
        assert runs.conc.peak == 1
    finally:
        sup1.stop(WAIT)
        sup2.stop(WAIT)


def test_a_group_takes_over_from_a_supervisor_in_the_same_process(
    coordinator: corral.Coordinator,
) -> None:
    runs = Runs()
    sup = make("holder", coordinator)
    log = LeaseLog()
    g = corral.Group("taker", coordinator=coordinator, hooks=Hooks(on_lease=log))
    try:
        sup.spawn(holder(runs), name="shared", singleton=True)
        sup.start()
        assert runs.wait_started(1)

        def take() -> int:
            lease = corral.current_lease()
            assert lease is not None
            return lease.fence

        t = g.spawn(take, name="shared", singleton=True)
        log.wait_for("campaigning")
        assert not runs.wait_started(2, NOT_YET)
        assert state(t) is TaskState.PENDING
        sup.stop(WAIT)
        g.join(WAIT)
        assert t.result() > runs.fences[0]
        assert log.states() == ["campaigning", "holding", "released"]
        assert coordinator.observe("shared") is None
    finally:
        sup.stop(WAIT)
        g.cancel()
        g.join(WAIT)


def test_current_lease_inside_a_singleton_and_none_elsewhere(
    coordinator: corral.Coordinator,
) -> None:
    seen: dict[str, Any] = {}

    def single() -> int:
        lease = corral.current_lease()
        task = corral.current_task()
        assert lease is not None
        assert task is not None
        seen.update(lease=lease, at=lease_clock(), task_lease=task.lease, valid=lease.valid())
        lease.check()  # a held lease: no exception
        seen["remaining"] = lease.remaining()
        return lease.fence

    def plain() -> None:
        seen["plain"] = corral.current_lease()

    with corral.Group("g", coordinator=coordinator) as g:
        t = g.spawn(single, name="one", singleton=True)
        p = g.spawn(plain, name="plain")
    lease = seen["lease"]
    assert isinstance(lease, corral.Lease)
    assert lease.name == "one"
    assert lease.fence == t.result()
    assert lease.owner == OWNER
    assert str(os.getpid()) in lease.owner
    assert seen["task_lease"] is lease
    assert seen["valid"] is True
    if isinstance(coordinator, FileCoordinator):
        assert lease.deadline == math.inf
        assert seen["remaining"] == math.inf
    else:
        assert seen["at"] < lease.deadline <= seen["at"] + coordinator.validity
        assert 0 < seen["remaining"] <= coordinator.validity
    assert seen["plain"] is None
    assert corral.current_lease() is None
    # After the run the lease is released: a copy kept beyond the run is not valid.
    assert t.state is TaskState.SUCCEEDED
    assert lease_state(t) == "released"
    assert lease_of(t) is None
    assert not lease.valid()
    # Released, not lost: a graceful release is never described as a loss.
    assert lease.lost is None
    assert repr(lease).endswith(" released>")
    assert "lost" not in repr(lease)
    with pytest.raises(corral.Cancelled) as raised:
        lease.check()  # no longer held
    assert "was released" in str(raised.value.cause)
    assert "lost" not in str(raised.value.cause)
    assert lease.remaining() == 0.0
    # A plain task has no lease at all.
    assert not p.singleton
    assert p.lease is None
    assert p.lease_state is None
    assert "lease" not in p._snapshot()
    assert "lease=" not in repr(p)
    assert coordinator.observe("one") is None


def test_a_campaigner_says_who_holds_the_lease(
    coordinator: corral.Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a snapshot of a campaigning singleton: ``seen(name)`` is who held the lease
    when the campaign last asked (owner "host:pid", fence), without I/O; ``observe``
    asks the backend. Both are None once nobody holds it."""
    saw = threading.Event()
    record = coordinator.note_holder

    def spy(name: str, holder: corral.Lease | None) -> None:  # passes every call through
        record(name, holder)
        if holder is not None:
            saw.set()

    monkeypatch.setattr(coordinator, "note_holder", spy)
    assert coordinator.seen("leader") is None
    # Held by "another process" (a direct acquisition: no run of the name here).
    held = grant(coordinator, "leader", owner="elsewhere:4242", secret="theirs")
    log = LeaseLog()
    sup = make("s", coordinator, hooks=Hooks(on_lease=log))
    try:
        t = sup.spawn(lambda: None, name="leader", singleton=True)
        sup.start()
        wait(saw)
        seen = coordinator.seen("leader")
        assert seen is not None
        assert (seen.name, seen.owner, seen.fence) == ("leader", "elsewhere:4242", held.fence)
        assert seen.secret is None
        observed = coordinator.observe("leader")
        assert observed is not None
        assert (observed.owner, observed.fence) == ("elsewhere:4242", held.fence)
        assert lease_state(t) == "campaigning"
        snap = snapshot_of(sup, "leader")
        assert snap["state"] == "pending"
        assert snap["waiting_for"] == "lease (campaigning)"
        assert snap["lease"]["owner"] == "elsewhere:4242"  # who holds it, for operators
        coordinator.release(held)
        t.join(WAIT)
        assert t.state is TaskState.SUCCEEDED
        assert coordinator.seen("leader") is None  # no campaign asks any more
        assert coordinator.observe("leader") is None
    finally:
        sup.stop(WAIT)


def test_lease_valid_check_and_remaining() -> None:
    now = lease_clock()
    held = corral.Lease("n", 7, "h:1", now + 30)
    assert held.valid()
    assert held.lost is None
    held.check()
    assert 29 < held.remaining() <= 30
    assert "fence=7" in repr(held)
    assert "'h:1'" in repr(held)
    assert "lost" not in repr(held)

    forever = corral.Lease("n", 1, "h:1", math.inf)
    assert forever.valid()
    assert forever.remaining() == math.inf
    assert "no expiry" in repr(forever)

    past = corral.Lease("n", 2, "h:1", now - 0.001)
    assert lost(past) is None  # nobody looked yet
    assert not past.valid()
    assert isinstance(past.lost, LeaseLost)
    assert "expired" in str(past.lost)
    assert past.remaining() == 0.0
    with pytest.raises(corral.Cancelled) as caught:
        past.check()
    assert caught.value.cause is past.lost
    assert "lost" in repr(past)

    # Lost before its deadline (the renewal was refused): the first cause wins.
    assert held._lose(LeaseLost("refused"))
    assert not held._lose(LeaseLost("second"))
    assert str(held.lost) == "refused"
    assert not held.valid()
    assert held.remaining() == 0.0
    with pytest.raises(corral.Cancelled) as caught:
        held.check()
    assert caught.value.cause is held.lost


# -- restarts, cancellation, replace -------------------------------------------------------


def test_a_failing_singleton_releases_before_its_backoff_and_another_takes_over(
    coordinator: corral.Coordinator,
) -> None:
    calls_a, log_a, log_b = Calls(), LeaseLog(), LeaseLog()
    restarting = threading.Event()

    def on_lease(task: corral.Task[Any], state: str, lease: corral.Lease | None) -> None:
        log_a(task, state, lease)
        calls_a.add("lease", state)

    def on_restart(task: corral.Task[Any], delay: float) -> None:
        calls_a.add("restart", delay)
        restarting.set()

    hooks_a = Hooks(on_lease=on_lease, on_restart=on_restart)
    sup_a = make("a", coordinator, hooks=hooks_a)
    sup_b = make("b", coordinator, hooks=Hooks(on_lease=log_b))
    b_campaigns, runs_b = threading.Event(), Runs()
    a_runs: list[int] = []

    def fails_once_b_waits() -> None:
        lease = corral.current_lease()
        assert lease is not None
        a_runs.append(lease.fence)
        wait(b_campaigns)
        raise Boom("a failed")

    try:
        ta = sup_a.spawn(
            fails_once_b_waits, name="job", singleton=True, restart=Restart.ON_FAILURE,
            backoff=Backoff(initial=5.0, maximum=5.0, jitter=0),
        )
        sup_a.start()
        log_a.wait_for("holding")
        tb = sup_b.spawn(holder(runs_b), name="job", singleton=True)
        sup_b.start()
        log_b.wait_for("campaigning")
        b_campaigns.set()
        assert restarting.wait(WAIT)
        assert runs_b.wait_started(1)  # during a's backoff: it released first
        assert state(ta) is TaskState.BACKOFF
        assert lease_state(ta) == "released"
        assert lease_of(ta) is None
        assert ta.attempts == 1
        assert calls_a.items == [
            ("lease", "campaigning"), ("lease", "holding"), ("lease", "released"),
            ("restart", 5.0),
        ]
        assert str(ta.last_error) == "a failed"
        assert sup_a.failures == []
        assert runs_b.fences[0] > a_runs[0]
        assert state(tb) is TaskState.RUNNING
        assert lease_state(tb) == "holding"
        sup_a.stop(WAIT)  # cancelled during its backoff: no other run, no campaign
        assert state(ta) is TaskState.CANCELLED
        assert ta.attempts == 1
        assert log_a.states() == ["campaigning", "holding", "released"]
        assert len(a_runs) == 1
    finally:
        b_campaigns.set()
        sup_a.stop(WAIT)
        sup_b.stop(WAIT)


def test_a_restarted_singleton_campaigns_again_and_gets_a_higher_fence(
    coordinator: corral.Coordinator,
) -> None:
    fences: list[int] = []
    calls, log = Calls(), LeaseLog()

    def flaky() -> str:
        lease = corral.current_lease()
        assert lease is not None
        fences.append(lease.fence)
        if len(fences) == 1:
            raise Boom("first run")
        return "ok"

    sup = make("s", coordinator, hooks=failure_hooks(calls, log))
    try:
        t = sup.spawn(
            flaky, name="flaky", singleton=True, restart=Restart.ON_FAILURE,
            backoff=Backoff(initial=0.01, maximum=0.01, jitter=0),
        )
        sup.start()
        assert t.result(WAIT) == "ok"
        assert t.state is TaskState.SUCCEEDED
        assert t.attempts == 2
        assert len(fences) == 2
        assert fences[1] > fences[0]
        assert log.items() == [
            ("campaigning", None), ("holding", fences[0]), ("released", fences[0]),
            ("campaigning", None), ("holding", fences[1]), ("released", fences[1]),
        ]
        assert [w for w, _ in calls.items] == ["failed", "restart"]
        assert str(t.last_error) == "first run"
        assert sup.failures == []
        assert lease_state(t) == "released"
        assert coordinator.observe("flaky") is None
    finally:
        sup.stop(WAIT)


def test_restart_never_success_ends_succeeded_and_releases(
    coordinator: corral.Coordinator,
) -> None:
    log = LeaseLog()
    with corral.Group("g", coordinator=coordinator, hooks=Hooks(on_lease=log)) as g:
        t = g.spawn(lambda: "done", name="once", singleton=True)
    assert t.state is TaskState.SUCCEEDED
    assert t.result() == "done"
    assert t.attempts == 1
    assert lease_state(t) == "released"
    assert lease_of(t) is None
    assert log.states() == ["campaigning", "holding", "released"]
    assert coordinator.observe("once") is None
    # Released means free: another campaign gets it at once, with the next fence.
    lease = coordinator.try_acquire("once", owner="test:0", secret="after")
    assert lease is not None
    assert lease.fence > (log.items()[1][1] or 0)
    coordinator.release(lease)


@pytest.mark.parametrize("how", ["task.cancel", "supervisor.stop"])
def test_cancelled_while_campaigning_ends_cancelled_without_a_run(
    coordinator: corral.Coordinator, how: str
) -> None:
    runs, ran = Runs(), threading.Event()
    log, calls = LeaseLog(), Calls()
    sup_h = make("holder", coordinator)
    sup = make("waiter", coordinator, hooks=failure_hooks(calls, log))
    try:
        sup_h.spawn(holder(runs), name="busy", singleton=True)
        sup_h.start()
        assert runs.wait_started(1)
        t = sup.spawn(ran.set, name="busy", singleton=True, restart=Restart.ALWAYS)
        sup.start()
        log.wait_for("campaigning")
        assert not ran.wait(NOT_YET)
        if how == "task.cancel":
            t.cancel("no longer wanted")
            t.join(WAIT)
        else:
            sup.stop(WAIT)
        assert state(t) is TaskState.CANCELLED
        assert t.attempts == 0
        assert not ran.is_set()
        assert log.states() == ["campaigning"]
        assert lease_state(t) is None  # a campaign that ended without a lease leaves none
        assert "lease=" not in repr(t)
        assert calls.items == []
        assert sup.failures == []
        with pytest.raises(corral.Cancelled):
            t.result()
        assert t.exception() is None
        # The holder was not disturbed.
        assert runs.conc.running == 1
        assert len(runs.fences) == 1
    finally:
        sup.stop(WAIT)
        sup_h.stop(WAIT)


def test_replace_a_holding_singleton(coordinator: corral.Coordinator) -> None:
    runs, log = Runs(), LeaseLog()
    sup = make("s", coordinator, hooks=Hooks(on_lease=log))
    try:
        t1 = sup.spawn(holder(runs), name="job", singleton=True)
        sup.start()
        assert runs.wait_started(1)
        t2 = sup.spawn(holder(runs), name="job", singleton=True, replace=True)
        assert runs.wait_started(2)
        assert state(t1) is TaskState.CANCELLED
        assert isinstance(t1.token.cause, corral.Replaced)
        assert lease_state(t1) == "released"
        assert t1.attempts == 1
        assert state(t2) is TaskState.RUNNING
        assert lease_state(t2) == "holding"
        assert runs.fences[1] > runs.fences[0]
        assert runs.conc.peak == 1  # the new one started only once the old one returned
        assert log.states(t1) == ["campaigning", "holding", "released"]
        assert log.states(t2) == ["campaigning", "holding"]
        assert sup.failures == []
    finally:
        sup.stop(WAIT)


def test_replace_a_campaigning_singleton(coordinator: corral.Coordinator) -> None:
    runs, log = Runs(), LeaseLog()
    sup_h = make("holder", coordinator)
    sup = make("s", coordinator, hooks=Hooks(on_lease=log))
    try:
        sup_h.spawn(holder(runs), name="job", singleton=True)
        sup_h.start()
        assert runs.wait_started(1)
        t1 = sup.spawn(holder(runs), name="job", singleton=True)
        sup.start()
        log.wait_for("campaigning")
        t2 = sup.spawn(holder(runs), name="job", singleton=True, replace=True)
        log.wait_for("campaigning", 2)
        assert state(t1) is TaskState.CANCELLED
        assert t1.attempts == 0
        assert isinstance(t1.token.cause, corral.Replaced)
        assert state(t2) is TaskState.PENDING
        assert lease_state(t2) == "campaigning"
        sup_h.stop(WAIT)
        assert runs.wait_started(2)
        assert state(t2) is TaskState.RUNNING
        assert t2.attempts == 1
        assert runs.fences[1] > runs.fences[0]
        assert log.states(t1) == ["campaigning"]
    finally:
        sup.stop(WAIT)
        sup_h.stop(WAIT)


# -- losing the lease ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["delete", "overwrite", "flushall"])
def test_redis_lease_lost_under_the_holder_cancels_it_and_it_campaigns_again(
    redis_server: RedisServer, raw: redis.Redis, corral_log: pytest.LogCaptureFixture, how: str,
) -> None:
    c = fast_redis(redis_server)
    runs, log, calls = Runs(), LeaseLog(), Calls()
    gate = threading.Event()
    sup = make("s", c, hooks=failure_hooks(calls, log))
    try:
        # A restart policy that would restart a failure: a loss must not count as one.
        t = sup.spawn(holder(runs, gate), name="job", singleton=True, restart=Restart.ON_FAILURE)
        with released(gate):
            sup.start()
            assert runs.wait_started(1)
            f1 = runs.fences[0]
            lock, _ = c.keys("job")
            broken = time.monotonic()
            if how == "delete":
                raw.delete(lock)
            elif how == "overwrite":
                raw.hset(lock, "token", "someone else")
            else:
                raw.flushall()
            log.wait_for("lost")
            assert time.monotonic() - broken < c.renew_interval + SLACK
            runs.wait_ended(1)
            ok, cause = runs.ends[0]
            assert ok is False  # corral.sleep said so at once
            assert isinstance(cause, LeaseLost)
            assert "refused" in str(cause)
            # The lost run has not returned yet: still RUNNING, and nothing else runs.
            assert state(t) is TaskState.RUNNING
            assert lease_state(t) == "lost"
            assert "lease=lost" in repr(t)
            snap = snapshot_of(sup, "job")["lease"]
            assert snap == {
                "state": "lost", "coordinator": c.describe(), "fence": f1, "owner": OWNER,
                "remaining": 0.0,
            }
            assert not runs.wait_started(2, 2 * c.poll_interval)
        assert runs.wait_started(2)  # once the lost run returned: campaign, hold again
        if how == "flushall":
            # Redis lost its data: the first campaign after that is granted nothing for
            # one ttl, so no holder from before the loss can overlap the next one.
            assert time.monotonic() - broken >= FAST_TTL - 0.05
        f2 = runs.fences[1]
        assert f2 > f1
        assert state(t) is TaskState.RUNNING
        assert lease_state(t) == "holding"
        assert t.attempts == 2  # runs, not restarts
        assert calls.items == []
        assert sup.failures == []
        assert t.last_error is None
        assert log.items() == [
            ("campaigning", None), ("holding", f1), ("lost", f1),
            ("campaigning", None), ("holding", f2),
        ]
        seen = c.observe("job")
        assert seen is not None
        assert seen.fence == f2
        lost_logs = [r for r in corral_log.records if "lost its lease" in r.getMessage()]
        assert [r.levelno for r in lost_logs] == [logging.WARNING]
        assert not [r for r in corral_log.records if r.levelno >= logging.ERROR]
        sup.stop(WAIT)
        assert log.states()[-1] == "released"
        assert runs.conc.peak == 1
        assert c.observe("job") is None
    finally:
        sup.stop(WAIT)
        c.close()


def test_a_lost_run_that_has_not_returned_holds_back_every_run_of_its_name(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    c = fast_redis(redis_server)
    runs, log1, log2 = Runs(), LeaseLog(), LeaseLog()
    gate = threading.Event()
    sup1 = make("one", c, hooks=Hooks(on_lease=log1))
    sup2 = make("two", c, hooks=Hooks(on_lease=log2))
    try:
        with released(gate):
            t1 = sup1.spawn(holder(runs, gate), name="job", singleton=True)
            sup1.start()
            assert runs.wait_started(1)
            t2 = sup2.spawn(holder(runs), name="job", singleton=True)
            sup2.start()
            log2.wait_for("campaigning")
            raw.delete(c.keys("job")[0])
            log1.wait_for("lost")
            runs.wait_ended(1)
            # The key is free, but the lost run is still running (it ignores its
            # cancellation): no run of "job" may start in this process meanwhile.
            assert not runs.wait_started(2, NOT_YET)
            assert c.observe("job") is None  # nobody here even asked
            assert state(t1) is TaskState.RUNNING
            assert lease_state(t1) == "lost"
            assert state(t2) is TaskState.PENDING
        assert runs.wait_started(2)  # once it returned, one of the two runs "job"
        assert runs.fences[1] > runs.fences[0]
        assert runs.conc.peak == 1
        assert [lease_state(t1), lease_state(t2)].count("holding") == 1
    finally:
        sup1.stop(WAIT)
        sup2.stop(WAIT)
        c.close()


@pytest.mark.parametrize("how", ["unlink", "rename", "replace"])
def test_file_lease_lost_when_the_lock_file_is_removed_or_replaced(
    tmp_path: Path, how: str
) -> None:
    c = FileCoordinator(tmp_path / "locks", poll_interval=0.05, check_interval=0.1)
    runs, log, calls = Runs(), LeaseLog(), Calls()
    sup = make("s", c, hooks=failure_hooks(calls, log))
    path = c.path("job")
    try:
        t = sup.spawn(holder(runs), name="job", singleton=True, restart=Restart.ON_FAILURE)
        sup.start()
        assert runs.wait_started(1)
        f1 = runs.fences[0]
        assert on_file(path) == (f1, OWNER)
        broken = time.monotonic()
        if how == "unlink":
            path.unlink()
        elif how == "rename":
            path.rename(tmp_path / "moved.lock")
        else:  # a copy with the same content, on another inode
            shutil.copyfile(path, tmp_path / "copy")
            os.replace(tmp_path / "copy", path)
        log.wait_for("lost")
        assert time.monotonic() - broken < 0.1 + SLACK  # the next check (check_interval)
        runs.wait_ended(1)
        ok, cause = runs.ends[0]
        assert ok is False
        assert isinstance(cause, LeaseLost)
        assert "is gone: its lock file was removed or replaced" in str(cause)
        assert runs.wait_started(2)
        f2 = runs.fences[1]
        assert f2 > f1  # (a removed counter starts again from the wall clock)
        assert on_file(path) == (f2, OWNER)
        assert t.attempts == 2
        assert calls.items == []
        assert sup.failures == []
        assert log.states() == ["campaigning", "holding", "lost", "campaigning", "holding"]
        seen = c.observe("job")
        assert seen is not None
        assert seen.fence == f2
    finally:
        sup.stop(WAIT)


def test_a_paused_redis_ends_the_holder_by_its_own_deadline_and_nobody_holds_until_it_resumes(
    redis_server: RedisServer, corral_log: pytest.LogCaptureFixture, error_seen: ErrorSeen,
) -> None:
    c = fast_redis(redis_server)
    runs, log, calls = Runs(), LeaseLog(), Calls()
    sup = make("s", c, hooks=failure_hooks(calls, log))
    try:
        t = sup.spawn(holder(runs), name="job", singleton=True)
        sup.start()
        assert runs.wait_started(1)
        f1 = runs.fences[0]
        paused = lease_clock()
        redis_server.pause()
        try:
            log.wait_for("lost")
            lost_after = lease_clock() - paused
            runs.wait_ended(1)
            ok, cause = runs.ends[0]
            assert ok is False
            assert isinstance(cause, LeaseLost)
            assert "expired" in str(cause)
            # By its deadline: the last renewal before the pause, plus the validity.
            assert lost_after < c.validity + SLACK
            log.wait_for("campaigning", 2)
            assert error_seen.event.wait(WAIT)  # the campaign cannot reach Redis
            assert not runs.wait_started(2, NOT_YET)  # no lease, no run
            assert state(t) is TaskState.PENDING
            assert lease_state(t) == "campaigning"
        finally:
            redis_server.resume()
        assert runs.wait_started(2)
        assert runs.fences[1] > f1
        assert t.attempts == 2
        assert calls.items == []
        assert sup.failures == []
        assert runs.conc.peak == 1
        errors = [r for r in corral_log.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "cannot campaign" in errors[0].getMessage()
    finally:
        redis_server.resume()
        sup.stop(WAIT)
        c.close()


class StallingRedis(RedisCoordinator):
    """Once ``stall`` is set, a renewal hangs until ``unstall``: the renewal thread can
    neither renew nor notice the deadline, so only the task's own checks can."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.unstall = threading.Event()

    def renew(self, lease: corral.Lease) -> bool:
        if self.stall.is_set():
            self.stalled.set()
            self.unstall.wait(WAIT)
        return super().renew(lease)


@pytest.mark.parametrize("how", ["sleep", "check", "cancelled"])
def test_the_task_notices_its_deadline_itself_when_renewals_stall(
    redis_server: RedisServer, how: str
) -> None:
    c = StallingRedis(redis_server.url, prefix="test", ttl=1.0, poll_interval=0.05)
    seed(c, redis_server)
    log = LeaseLog()
    fences: list[int] = []
    noticed: list[tuple[float, float, BaseException | None, bool]] = []
    ended, second = threading.Event(), threading.Event()
    work_pause = threading.Event()  # never set: a short pause between units of work

    def work() -> None:
        lease = corral.current_lease()
        assert lease is not None
        fences.append(lease.fence)
        if len(fences) > 1:
            second.set()
            corral.sleep(WAIT)
            return
        slept = True
        try:
            if how == "sleep":
                slept = corral.sleep(WAIT)
            elif how == "check":
                while True:
                    corral.check()
                    work_pause.wait(0.01)
            else:
                while not corral.cancelled():
                    work_pause.wait(0.01)
        finally:
            noticed.append((lease_clock(), lease.deadline, corral.current_token().cause, slept))
            ended.set()

    sup = make("s", c, hooks=Hooks(on_lease=log))
    try:
        t = sup.spawn(work, name="job", singleton=True)
        sup.start()
        log.wait_for("holding")
        c.stall.set()
        assert c.stalled.wait(WAIT)
        stalled_at = lease_clock()
        wait(ended)
        [(at, deadline, cause, slept)] = noticed
        assert isinstance(cause, LeaseLost)
        assert "expired" in str(cause)
        assert deadline <= at < deadline + SLACK  # right after the deadline, not before
        assert at - stalled_at < c.validity + SLACK
        if how == "sleep":
            assert slept is False
        assert lease_state(t) == "lost"
        assert log.states() == ["campaigning", "holding", "lost"]
        c.stall.clear()
        c.unstall.set()
        wait(second)
        assert fences[1] > fences[0]
        assert t.attempts == 2
        assert sup.failures == []
    finally:
        c.stall.clear()
        c.unstall.set()
        sup.stop(WAIT)
        c.close()


# -- FileCoordinator -------------------------------------------------------------------------


def test_file_fence_counter_content_and_observe(tmp_path: Path) -> None:
    d = tmp_path / "locks"
    c1 = FileCoordinator(d, poll_interval=0.01, check_interval=0.05)
    assert d.is_dir()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert c1.observe("job") is None  # no file yet
    path = c1.path("job")
    assert path.parent == d
    assert path.name.startswith("job-")
    assert path.suffix == ".lock"
    assert c1.path("Job") != path  # names differing in case get different files

    before_us = time.time_ns() // 1000
    l1 = grant(c1, "job", owner="me:1", secret="s1")  # (a new file: after c1.settle)
    assert (l1.name, l1.owner) == ("job", "me:1")
    f1 = l1.fence
    assert f1 >= before_us  # floored by the wall clock (microseconds): rises across reboots
    assert l1.deadline == math.inf
    assert l1.remaining() == math.inf
    assert on_file(path) == (f1, "me:1")
    # Two opens in one process conflict: nobody else gets it, not even this process.
    assert c1.try_acquire("job", owner="other:2", secret="s2") is None
    seen = c1.observe("job")
    assert seen is not None
    assert (seen.fence, seen.owner) == (f1, "me:1")
    assert c1.renew(l1) is True
    c1.release(l1)
    assert path.exists()  # never unlinked
    assert on_file(path) == (f1, "me:1")
    assert c1.observe("job") is None
    assert c1.renew(l1) is False  # released: nothing to renew
    c1.release(l1)  # twice: a no-op

    # A file that holds its own record is granted at once.
    l2 = c1.try_acquire("job", owner="me:1", secret="s3")
    assert l2 is not None
    assert l2.fence > f1
    c1.release(l2)
    c2 = FileCoordinator(d)  # another instance on the same directory: the same counter
    l3 = c2.try_acquire("job", owner="c2:3", secret="s4")
    assert l3 is not None
    assert l3.fence > l2.fence
    assert on_file(path) == (l3.fence, "c2:3")
    seen = c1.observe("job")
    assert seen is not None
    assert (seen.fence, seen.owner) == (l3.fence, "c2:3")
    c2.release(l3)
    assert path.exists()
    assert c1.observe("job") is None

    # The counter in the file wins while it is ahead of the clock: +1 per acquisition.
    ino = path.stat().st_ino
    ahead = 10**17
    path.write_text(f"{ahead} someone:9 ino={ino}\n")  # (in place: the same file)
    l4 = c1.try_acquire("job", owner="me:1", secret="s5")
    assert l4 is not None
    assert l4.fence == ahead + 1
    c1.release(l4)
    l5 = c2.try_acquire("job", owner="me:1", secret="s6")
    assert l5 is not None
    assert l5.fence == ahead + 2
    c2.release(l5)
    # A counter behind the clock (or damaged, or an older record without the inode) is
    # floored by the clock, never reset to 1.
    for content in (f"5 old:1 ino={ino}\n", "5 old:1\n", "garbage\n", ""):
        path.write_text(content)
        floor = time.time_ns() // 1000
        lease = grant(c1, "job", owner="me:1", secret="s7")
        assert lease.fence >= floor
        assert on_file(path) == (lease.fence, "me:1")
        c1.release(lease)
    other = grant(c1, "other", owner="me:1", secret="s8")  # a file per name
    c1.release(other)
    assert sorted(p.name for p in d.iterdir()) == sorted([path.name, c1.path("other").name])


def test_file_coordinator_singletons_count_fences_in_the_file(tmp_path: Path) -> None:
    c = FileCoordinator(tmp_path, poll_interval=0.05, check_interval=0.05)
    fences: list[int] = []

    def note() -> None:
        lease = corral.current_lease()
        assert lease is not None
        fences.append(lease.fence)

    for _ in range(3):
        with corral.Group(coordinator=c) as g:
            g.spawn(note, name="counted", singleton=True)
    assert len(fences) == 3
    assert fences == sorted(set(fences))  # strictly increasing
    assert on_file(c.path("counted")) == (fences[-1], OWNER)


def test_file_coordinator_refuses_a_directory_it_cannot_create(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("a regular file\n")
    with pytest.raises(CoordinatorError, match=r"cannot create the lease directory .*plain/locks"):
        FileCoordinator(plain / "locks")  # not even root makes a directory under a file
    with pytest.raises(CoordinatorError, match="plain"):
        FileCoordinator(plain)  # a file, not a directory
    with pytest.raises(CoordinatorError, match="writable directory"):
        make("bad-dir", str(plain / "locks"))
    assert not [g for g in corral.roots() if g.name == "bad-dir"]


def test_file_coordinator_and_a_read_only_directory(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        if os.geteuid() == 0:
            # root may write in it (os.access agrees), so the coordinator works there.
            c = FileCoordinator(d, poll_interval=0.01, check_interval=0.05)
            lease = grant(c, "job", owner="me:1", secret="s")
            assert lease.fence > 0
            c.release(lease)
            assert on_file(c.path("job")) == (lease.fence, "me:1")
        else:
            with pytest.raises(CoordinatorError, match="not writable"):
                FileCoordinator(d)
    finally:
        d.chmod(0o700)


_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def test_file_coordinator_refuses_an_immutable_directory_even_as_root(tmp_path: Path) -> None:
    """The one non-writable directory root cannot write in either (chattr +i)."""
    if os.geteuid() != 0:
        pytest.skip("only root can make a directory immutable (the chmod test covers others)")
    d = tmp_path / "immutable"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_IMMUTABLE_FL))
        except OSError as e:
            pytest.skip(f"this filesystem has no immutable flag: {e}")
        try:
            with pytest.raises(CoordinatorError, match=r"is not writable.*FileCoordinator\(directory"):
                FileCoordinator(d)
        finally:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags))
    finally:
        os.close(fd)


def nobody() -> int:
    """Another user's uid, for files and directories "made by someone else"."""
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:  # pragma: no cover - every Debian has nobody
        return 65534


@pytest.fixture
def default_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the default lease directory goes: no XDG_RUNTIME_DIR, ``tmp_path`` as the
    temporary directory (so <tmp>/corral-<uid> is ``tmp_path/corral-<uid>``)."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_file_coordinator_needs_an_existing_parent_and_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CoordinatorError, match=r"its parent '.*/no/such' does not exist"):
        FileCoordinator(tmp_path / "no" / "such" / "locks")  # a mistyped path
    assert not (tmp_path / "no").exists()  # not made from the top down
    with pytest.raises(ValueError, match="names no directory"):
        FileCoordinator("")  # not the current directory
    with pytest.raises(ValueError, match="names no directory"):
        make("empty", "")
    with pytest.raises(TypeError, match="must be a path"):
        FileCoordinator(b"locks")  # type: ignore[arg-type]
    # A relative path is made absolute at once: a later chdir does not move the locks.
    monkeypatch.chdir(tmp_path)
    c = FileCoordinator("rel", poll_interval=0.01, check_interval=0.05)
    assert c.directory == tmp_path / "rel"
    monkeypatch.chdir(tmp_path / "rel")
    lease = grant(c, "job", owner="me:1", secret="s")
    c.release(lease)
    assert on_file(tmp_path / "rel" / c.path("job").name) == (lease.fence, "me:1")
    assert list((tmp_path / "rel").iterdir()) == [c.path("job")]


def test_the_default_directory_is_made_private(default_parent: Path) -> None:
    c = FileCoordinator()
    d = default_parent / f"corral-{os.getuid()}"
    assert c.directory == d
    st = d.lstat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid()


def test_a_default_directory_someone_else_made_or_opened_is_refused(
    default_parent: Path,
) -> None:
    """A /tmp/corral-<uid> made first by another user (mode 0777) was used as it was:
    they could plant, remove or read the lock files. Refused, as is one this user made
    that is writable by others or its group, and a symbolic link."""
    if os.geteuid() != 0:
        pytest.skip("simulating another user's directory needs chown (root)")
    d = default_parent / f"corral-{os.getuid()}"
    d.mkdir()
    os.chown(d, nobody(), nobody())
    d.chmod(0o777)
    with pytest.raises(CoordinatorError, match=rf"belongs to uid {nobody()}, not to this user"):
        FileCoordinator()
    _reset_default()
    with pytest.raises(CoordinatorError, match="belongs to uid"):
        default_coordinator()
    sup = make("s", None)
    try:
        with pytest.raises(CoordinatorError, match="belongs to uid"):
            sup.spawn(lambda: None, name="job", singleton=True)
    finally:
        sup.stop(WAIT)
    assert list(d.iterdir()) == []  # no lock file made in it
    os.chown(d, os.getuid(), os.getgid())
    with pytest.raises(CoordinatorError, match=r"writable by others \(mode 0777\).*chmod 700"):
        FileCoordinator()
    d.chmod(0o770)
    with pytest.raises(CoordinatorError, match=r"writable by its group \(mode 0770\)"):
        FileCoordinator()
    d.rmdir()
    real = default_parent / "real"
    real.mkdir(mode=0o700)
    d.symlink_to(real)  # even to a private directory of this user's: not followed
    with pytest.raises(CoordinatorError, match=r"is a symbolic link \(to '.*/real'\)"):
        FileCoordinator()
    d.unlink()
    assert stat.S_IMODE(FileCoordinator().directory.lstat().st_mode) == 0o700  # made again


def test_the_runtime_directory_is_used_only_if_it_is_this_users(
    default_parent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = default_parent / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    assert FileCoordinator().directory == run / "corral"
    if os.geteuid() == 0:  # another user's runtime directory (passed on by sudo -E): not used
        os.chown(run, nobody(), nobody())
        assert FileCoordinator().directory == default_parent / f"corral-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/run")
    assert FileCoordinator().directory == default_parent / f"corral-{os.getuid()}"


def test_a_directory_given_must_not_be_a_link_or_writable_by_everyone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone could plant or remove lock files
    with pytest.raises(CoordinatorError, match=r"writable by every user \(mode 1777\)"):
        FileCoordinator(shared)
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o2770)  # a group of trusted service users: a directory you chose
    assert FileCoordinator(group).directory == group
    link = tmp_path / "link"
    link.symlink_to(group)
    with pytest.raises(CoordinatorError, match="is a symbolic link"):
        FileCoordinator(link)


def test_a_planted_or_damaged_fence_is_bounded(
    tmp_path: Path, corral_log: pytest.LogCaptureFixture
) -> None:
    """A lock file planted with a 61-digit fence made every later fence a 61-digit
    number: a record is read only as a decimal below 2**63 - 1 (the next fence must fit
    a signed 64-bit column), else the fence comes from the wall clock again (logged)."""
    c = FileCoordinator(tmp_path, poll_interval=0.01, check_interval=0.05)
    path = c.path("job")
    c.release(grant(c, "job", owner="me:1", secret="s"))
    ino = path.stat().st_ino
    for planted in ["9" * 61, str(2**63 - 1), str(2**64), "١٢٣", "-5", "+5", "0x10", "1e30"]:
        path.write_text(f"{planted} evil:1 ino={ino}\n")
        floor = time.time_ns() // 1000
        lease = grant(c, "job", owner="me:1", secret="s")
        assert floor <= lease.fence < floor + 10**9, planted
        assert on_file(path) == (lease.fence, "me:1")
        c.release(lease)
    damaged = [r for r in corral_log.records if "holds no valid fence record" in r.getMessage()]
    assert len(damaged) == 8
    assert {r.levelno for r in damaged} == {logging.WARNING}
    path.write_text(f"{2**63 - 2} me:1 ino={ino}\n")  # the largest that leaves room for +1
    top = c.try_acquire("job", owner="me:1", secret="s")
    assert top is not None
    assert top.fence == 2**63 - 1
    c.release(top)
    # Held with a planted record: observe names no holder rather than a bogus one.
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, f"{'9' * 61} evil:1 ino={ino}\n".encode(), 0)
        assert c.observe("job") is None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"12 h\x1b[2J:1 ino={ino}\n".encode(), 0)  # control characters
        seen = c.observe("job")
        assert seen is not None
        assert (seen.fence, seen.owner) == (12, "h?[2J:1")
    finally:
        os.close(fd)


def test_a_planted_hard_link_symlink_or_fifo_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    """A hard link planted at the lock path had the file it names overwritten with the
    fence record (where fs.protected_hardlinks=0): a lock file with more than one link,
    a symbolic link and anything but a regular file are refused, never written."""
    c = FileCoordinator(tmp_path / "locks", poll_interval=0.01, check_interval=0.05)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.link(victim, c.path("linked"))
    with pytest.raises(CoordinatorError, match=r"has 2 links: another path names the same file"):
        c.try_acquire("linked", owner="me:1", secret="s")
    c.path("symlinked").symlink_to(victim)
    with pytest.raises(CoordinatorError, match="is a symbolic link"):
        c.try_acquire("symlinked", owner="me:1", secret="s")
    assert victim.read_text() == "precious\n"
    os.mkfifo(c.path("fifo"))
    with pytest.raises(CoordinatorError, match="not a regular file"):
        c.try_acquire("fifo", owner="me:1", secret="s")  # (and does not hang)
    for name in ("linked", "symlinked", "fifo"):
        assert c.observe(name) is None
    # As a singleton: logged (ERROR), and it never runs.
    ran, errors = threading.Event(), ErrorSeen()
    logging.getLogger("corral").addHandler(errors)
    sup = make("s", c)
    try:
        t = sup.spawn(ran.set, name="linked", singleton=True)
        sup.start()
        assert errors.event.wait(WAIT)
        assert not ran.is_set()
        assert state(t) is TaskState.PENDING
    finally:
        logging.getLogger("corral").removeHandler(errors)
        sup.stop(WAIT)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("how", ["unlink", "rename", "replace"])
def test_a_new_lock_file_is_granted_only_once_the_holder_of_the_old_one_has_noticed(
    tmp_path: Path, how: str, corral_log: pytest.LogCaptureFixture
) -> None:
    """Replacing the lock file while a holder ran let a contender lock the new file at
    once: two holders until the old one's next check (up to 1 s). Now a new file (no
    record of its own inode) is granted only ``settle`` (2 x check_interval) after the
    contender first saw it, and the holder notices within one check_interval."""
    d = tmp_path / "locks"
    mine = FileCoordinator(d, poll_interval=0.01, check_interval=0.05)
    theirs = FileCoordinator(d, poll_interval=0.01, check_interval=0.05)
    held = grant(mine, "job", owner="a:1", secret="a")
    path = mine.path("job")
    corral_log.clear()
    if how == "unlink":
        path.unlink()
    elif how == "rename":
        path.rename(tmp_path / "moved.lock")
    else:  # a copy, with the same record, on another inode
        shutil.copyfile(path, tmp_path / "copy")
        os.replace(tmp_path / "copy", path)
    first_seen = lease_clock()
    assert theirs.try_acquire("job", owner="b:2", secret="b") is None  # not yet
    assert theirs.observe("job") is None
    assert mine.renew(held) is False  # what the holder's next check finds
    taken = grant(theirs, "job", owner="b:2", secret="b")
    assert lease_clock() - first_seen >= theirs.settle == 0.1
    assert taken.fence > held.fence
    assert on_file(path) == (taken.fence, "b:2")
    waits = [r for r in corral_log.records if "is new" in r.getMessage()]
    assert len(waits) == 1  # once per new file
    assert waits[0].levelno == logging.INFO
    assert "waiting 0.1s (2 x check_interval) before the first grant" in waits[0].getMessage()
    theirs.release(taken)
    mine.release(held)


def test_a_forked_child_drops_the_inherited_lock(tmp_path: Path) -> None:
    c = FileCoordinator(tmp_path, poll_interval=0.01, check_interval=0.05)
    lease = grant(c, "job", owner=OWNER, secret="parent")
    assert lease.fence > 0
    path = c.path("job")
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (3.12+: fork with threads)
        pid = os.fork()
    if pid == 0:  # the child: os-level work only, and it always leaves by os._exit
        code = 20
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            # The inherited lease is lost in the child, its descriptor closed.
            if lease.lost is None or lease._handle is not None:
                code = 21
            else:
                fd = os.open(path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    code = 22  # it got the lock while the parent holds it
                except BlockingIOError:
                    os.write(to_parent_w, b"c")
                    if os.read(to_child_r, 1) == b"r":
                        # The parent released: a new descriptor gets it, so no inherited
                        # one in this process keeps the lock alive.
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        code = 0
        except BaseException:
            code = 23
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        ready, _, _ = select.select([to_parent_r], [], [], WAIT)
        assert ready, "the child did not answer"
        assert os.read(to_parent_r, 1) == b"c", "the child did not check the lock"
        c.release(lease)
        # The child is alive and holds nothing: the lock is free for a new open at once.
        again = c.try_acquire("job", owner=OWNER, secret="parent-again")
        assert again is not None
        assert again.fence > lease.fence
        c.release(again)
        os.write(to_child_w, b"r")
        ready, _, _ = select.select([to_parent_r], [], [], WAIT)  # EOF when it exits
        assert ready
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(to_parent_r)
        os.close(to_child_w)


# -- RedisCoordinator ------------------------------------------------------------------------


def test_redis_acquire_renew_release_observe(redis_server: RedisServer, raw: redis.Redis) -> None:
    c = RedisCoordinator(redis_server.url, prefix="p", ttl=1.0)
    try:
        lock, fence_key = c.keys("job")
        assert (lock, fence_key) == ("p:{job}:lock", "p:{job}:fence")  # one hash tag
        raw.set(fence_key, 1)  # a name this Redis has seen before
        before = lease_clock()
        l1 = c.try_acquire("job", owner="me:1", secret="s1")
        assert l1 is not None
        assert (l1.name, l1.owner) == ("job", "me:1")
        f1 = l1.fence
        assert before + c.validity <= l1.deadline <= lease_clock() + c.validity
        assert raw.hgetall(lock) == {b"token": b"s1", b"fence": str(f1).encode(), b"owner": b"me:1"}
        assert 0 < raw.pttl(lock) <= 1000
        assert raw.pttl(fence_key) == -1  # the counter never expires
        assert int(raw.get(fence_key) or 0) == f1
        assert sorted(raw.keys("*")) == sorted([lock.encode(), fence_key.encode()])

        # Idempotent for the same secret (a retry after a lost reply); refused otherwise.
        again = c.try_acquire("job", owner="me:1", secret="s1")
        assert again is not None
        assert again.fence == f1
        assert c.try_acquire("job", owner="you:2", secret="s2") is None
        seen = c.observe("job")
        assert seen is not None
        assert (seen.fence, seen.owner) == (f1, "me:1")
        assert lease_clock() < seen.deadline <= lease_clock() + 1.0

        # Renewal: only the owner, and it replaces the TTL (never adds to it).
        intruder = corral.Lease("job", f1, "you:2", 0.0, secret="s2")
        raw.pexpire(lock, 300)
        assert c.renew(intruder) is False
        assert 0 < raw.pttl(lock) <= 300
        assert raw.hget(lock, "token") == b"s1"
        for _ in range(3):
            assert c.renew(l1) is True
            assert 300 < raw.pttl(lock) <= 1000

        # Release: a non-owner's is a no-op; the owner's deletes the lock, not the counter.
        c.release(intruder)
        assert raw.hget(lock, "token") == b"s1"
        c.release(l1)
        assert raw.exists(lock) == 0
        assert raw.exists(fence_key) == 1
        assert c.observe("job") is None
        c.release(l1)  # twice: a no-op
        assert c.renew(l1) is False
        assert raw.exists(lock) == 0

        l2 = c.try_acquire("job", owner="me:1", secret="s3")
        assert l2 is not None
        assert l2.fence > f1
        # Redis loses everything (FLUSHALL, or a restart without persistence): the
        # holder's renewal is refused; for one ttl nobody is granted the name (the old
        # holder may still trust its deadline), then the fence is still higher (TIME).
        raw.flushall()
        assert c.renew(l2) is False
        asked = time.monotonic()
        assert c.try_acquire("job", owner="you:2", secret="s4") is None
        assert raw.hget(lock, "token") == b""  # a placeholder, nobody's
        assert 0 < raw.pttl(lock) <= 1000
        assert c.observe("job") is None
        assert int(raw.get(fence_key) or 0) > l2.fence  # floored by the server's clock
        assert raw.pttl(fence_key) == -1
        assert c.renew(l2) is False
        c.release(l2)  # nobody's placeholder: not released by a holder's secret
        assert raw.hget(lock, "token") == b""
        l3 = None
        while l3 is None and time.monotonic() - asked < WAIT:
            l3 = c.try_acquire("job", owner="you:2", secret="s4")
            if l3 is None:
                time.sleep(0.02)  # (waiting out a real TTL: polled, bounded)
        waited = time.monotonic() - asked
        assert l3 is not None
        assert 1.0 - 0.05 <= waited < 1.0 + SLACK  # (ttl 1 s)
        assert l3.fence > l2.fence
        c.release(l3)

        assert c.try_acquire("other", owner="me:1", secret="s5") is None  # never seen
        assert raw.exists(*c.keys("other")) == 2  # its own keys: placeholder and counter
    finally:
        c.close()


def test_redis_first_acquisition_of_a_name_waits_one_ttl(
    redis_server: RedisServer, corral_log: pytest.LogCaptureFixture
) -> None:
    """A Redis that has no fence counter for a name (it never saw it, or lost its data)
    grants it to nobody for one ttl: a holder from before a loss may still trust its
    lease that long. The wait is logged once, saying why."""
    c = RedisCoordinator(redis_server.url, prefix="fresh", ttl=FAST_TTL, poll_interval=0.05)
    ran, log = threading.Event(), LeaseLog()
    sup = make("s", c, hooks=Hooks(on_lease=log))
    try:
        t = sup.spawn(ran.set, name="new-name", singleton=True)
        began = time.monotonic()
        sup.start()
        log.wait_for("campaigning")
        assert not ran.wait(FAST_TTL / 2)
        assert c.observe("new-name") is None  # nobody holds it meanwhile
        assert state(t) is TaskState.PENDING
        t.join(WAIT)
        assert FAST_TTL - 0.05 <= time.monotonic() - began < FAST_TTL + SLACK
        assert t.state is TaskState.SUCCEEDED
        assert log.states() == ["campaigning", "holding", "released"]
        waits = [r for r in corral_log.records if "no fence record" in r.getMessage()]
        assert len(waits) == 1, [r.getMessage() for r in waits]
        assert waits[0].levelno == logging.WARNING
        assert waits[0].getMessage() == (
            f"lease 'new-name': no fence record on {c.describe()} (a new name, or its data "
            "was lost); waiting one ttl (1s) before the first grant, so that no earlier "
            "holder overlaps"
        )
    finally:
        sup.stop(WAIT)
        c.close()


def test_redis_an_empty_secret_is_not_the_placeholder_s_owner(redis_server: RedisServer) -> None:
    """The wait after data loss is a lock whose token is empty: a caller of the public
    try_acquire with secret="" must not be granted it (with fence 0)."""
    c = RedisCoordinator(redis_server.url, prefix="p", ttl=1.0)
    try:
        assert c.try_acquire("job", owner="a:1", secret="s") is None  # the placeholder
        try:
            lease = c.try_acquire("job", owner="b:2", secret="")
        except ValueError:
            lease = None  # refusing an empty secret is fine too
        assert lease is None, f"an empty secret was granted the placeholder: {lease!r}"
    finally:
        c.close()


def test_redis_renew_and_release_with_an_empty_secret_leave_the_placeholder_alone(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """Nobody owns the placeholder: a Lease whose secret is "" must neither extend it
    (renew) nor delete it (release: that would end the wait after data loss at once)."""
    c = RedisCoordinator(redis_server.url, prefix="p", ttl=1.0)
    try:
        lock = c.keys("job")[0]
        assert c.try_acquire("job", owner="a:1", secret="s") is None  # the placeholder
        raw.pexpire(lock, 300)
        nobody = corral.Lease("job", 0, "b:2", 0.0, secret="")
        try:
            renewed = c.renew(nobody)
        except ValueError:
            renewed = False
        assert renewed is False
        assert 0 < raw.pttl(lock) <= 300, "the placeholder was extended"
        try:
            c.release(nobody)
        except ValueError:
            pass
        assert raw.hget(lock, "token") == b"", "the placeholder was released"
    finally:
        c.close()


def test_redis_client_argument_gives_the_address_not_the_retries(
    redis_server: RedisServer,
) -> None:
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host="127.0.0.1", port=redis_server.port, socket_timeout=30, socket_connect_timeout=30,
        retry=Retry(ExponentialBackoff(), 7), health_check_interval=5,
    )
    c = RedisCoordinator(client, prefix="p", ttl=1.0)
    seed(c, redis_server, "job")
    try:
        pool = c._client.connection_pool
        assert pool is not client.connection_pool  # its own connections
        kw = pool.connection_kwargs
        assert kw["port"] == redis_server.port
        assert kw["retry"].get_retries() == 0  # lease traffic has no hidden retries
        assert kw["socket_timeout"] == c.op_timeout == pytest.approx(1 / 6)
        assert kw["socket_connect_timeout"] == c.op_timeout
        assert kw["health_check_interval"] == 0
        assert client.connection_pool.connection_kwargs["retry"].get_retries() == 7  # untouched
        lease = c.try_acquire("job", owner="me:1", secret="s")
        assert lease is not None
        assert client.hget(c.keys("job")[0], "owner") == b"me:1"
        c.release(lease)
        assert str(redis_server.port) in c.describe()
    finally:
        c.close()
    assert client.ping() is True  # closing the coordinator leaves the caller's client alone
    client.close()


def test_redis_url_settings(redis_server: RedisServer) -> None:
    c = RedisCoordinator(redis_server.url, ttl=3.0)
    try:
        assert (c.ttl, c.renew_interval, c.stop_margin, c.poll_interval) == pytest.approx(
            (3.0, 1.0, 0.6, 0.6)
        )
        assert c.op_timeout == pytest.approx(0.5)  # min(1 s, renew_interval/2)
        assert c.validity == pytest.approx(3.0 * 0.99 - 0.6)
        kw = c._client.connection_pool.connection_kwargs
        assert kw["retry"].get_retries() == 0
        assert kw["socket_timeout"] == c.op_timeout
        assert c.keys("x")[0].startswith("corral:{x}")  # the default prefix
        assert c.describe() == f"RedisCoordinator(redis://127.0.0.1:{redis_server.port}/0)"
    finally:
        c.close()


def test_unreachable_redis_at_construction_is_a_prompt_error_naming_it() -> None:
    port = free_port()
    began = time.monotonic()
    with pytest.raises(CoordinatorError, match=rf"cannot reach Redis at redis://127\.0\.0\.1:{port}/0"):
        RedisCoordinator(f"redis://127.0.0.1:{port}/0", ttl=1.0)
    with pytest.raises(CoordinatorError, match=rf"127\.0\.0\.1:{port}"):
        make("no-redis", f"redis://127.0.0.1:{port}/0")  # the default ttl (10 s) too
    with pytest.raises(CoordinatorError, match=re.escape("unix:///nonexistent/redis.sock")):
        RedisCoordinator("unix:///nonexistent/redis.sock")
    assert time.monotonic() - began < SLACK
    assert not [g for g in corral.roots() if g.name == "no-redis"]


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://127.0.0.1:1/notadb", r"'notadb' is not a database number"),
        ("redis://127.0.0.1:1/0/1", r"'0/1' is not a database number"),
        ("redis://127.0.0.1:port/0", r"not a Redis URL: .*Port could not be cast"),
        ("redis://127.0.0.1:99999/0", r"not a Redis URL: .*out of range"),
        ("redis:///0", "names no host"),
        ("redis://127.0.0.1:1/0#x", r"has a fragment \('#x'\)"),
        ("redis://127.0.0.1:1/0?db=x", r"db='x' is not a database number"),
        ("redis://127.0.0.1:1/1?db=2", r"names two databases: /1 and db=2"),
        ("redis://127.0.0.1:1?db=1&db=1", "gives db= twice"),
        ("redis://127.0.0.1:1/0?a", "bad query field"),
        ("redis://127.0.0.1:1/0?socket_timeout=30", r"sets socket_timeout=: lease connections"),
        ("redis://127.0.0.1:1/0?retry_on_timeout=yes", "sets retry_on_timeout="),
        ("redis://127.0.0.1:1/0?decode_responses=True", "sets decode_responses="),
        ("redis://127.0.0.1:1/0?no_such_option=1", "no_such_option"),
        ("unix://", "names no socket"),
        ("redis:/127.0.0.1:1/0", "not a Redis URL"),
        ("http://127.0.0.1:1/0", "not a Redis URL"),
    ],
)
def test_a_redis_url_must_parse_whole(url: str, match: str) -> None:
    """redis-py takes redis://host:port/notadb for db 0, and lets a query override the
    lease connections' timeouts: refused, naming the bad part, before any traffic."""
    with pytest.raises(ValueError, match=match):
        RedisCoordinator(url, ttl=1.0)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1:1", "redis://127.0.0.1:1/0"),
        ("redis://127.0.0.1:1/", "redis://127.0.0.1:1/0"),
        ("redis://127.0.0.1:1/3", "redis://127.0.0.1:1/3"),
        ("redis://127.0.0.1:1?db=2", "redis://127.0.0.1:1/2"),
        ("redis://127.0.0.1:1/2?db=2", "redis://127.0.0.1:1/2"),
        ("redis://u:p@127.0.0.1:1/0?client_name=x", "redis://127.0.0.1:1/0"),
        ("rediss://127.0.0.1:1/0?ssl_cert_reqs=none", "rediss://127.0.0.1:1/0"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock"),
    ],
)
def test_redis_urls_that_parse(url: str, where: str) -> None:
    c = RedisCoordinator(url, ttl=1.0, check=False)
    try:
        assert c.describe() == f"RedisCoordinator({where})"
    finally:
        c.close()


def test_a_bad_redis_url_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis://lease:hunter2@127.0.0.1:1/notadb"
    with pytest.raises(ValueError, match=re.escape("'redis://lease:***@127.0.0.1:1/notadb'")) as raised:
        RedisCoordinator(url)
    assert "hunter2" not in str(raised.value)
    for spec in [url, "redis:/lease:hunter2@127.0.0.1:1/0", "redis://127.0.0.1:1/x?password=hunter2"]:
        monkeypatch.setenv(ENV, spec)
        _reset_default()
        with pytest.raises(ValueError, match=ENV) as raised:
            default_coordinator()
        assert "hunter2" not in str(raised.value)


def acl(raw: redis.Redis, *args: str) -> None:
    raw.execute_command("ACL", *args)  # type: ignore[no-untyped-call]


def acl_user(raw: redis.Redis, user: str, *rules: str) -> str:
    """Make (or remake) a Redis user with password ``pw`` and ``rules``; its name."""
    acl(raw, "SETUSER", user, "reset", "on", ">pw", *rules)
    return user


def as_user(server: RedisServer, user: str, password: str = "pw") -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def test_a_redis_user_without_permission_for_the_scripts_is_refused_at_construction(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """Such a user passed the constructor's check (INFO), then campaigned forever with
    "auth:NoPermissionError" as its only word. The constructor runs the scripts' commands
    once, and says which permission is missing and how to grant it."""
    where = rf"redis://127\.0\.0\.1:{redis_server.port}/0"
    acl_user(raw, "noscript", "~*", "+@all", "-evalsha", "-eval", "-script")
    with pytest.raises(
        CoordinatorError,
        match=rf"permission denied at Redis {where} for user 'noscript': .*'evalsha'",
    ) as raised:
        RedisCoordinator(as_user(redis_server, "noscript"), ttl=1.0)
    message = str(raised.value)
    assert "misconfiguration, not an outage" in message
    assert "cannot reach" not in message
    hint = message[message.index("ACL SETUSER "):].split()
    assert hint[:4] == ["ACL", "SETUSER", "noscript", "~corral:*"]
    assert "+evalsha" in hint

    acl_user(raw, "notime", "~*", "+@all", "-time")  # a command inside the scripts
    with pytest.raises(
        CoordinatorError, match=r"for user 'notime': the lease scripts run TIME, which this user"
    ):
        RedisCoordinator(as_user(redis_server, "notime"), ttl=1.0)
    acl_user(raw, "elsewhere", "~other:*", "+@all")  # keys outside its patterns
    with pytest.raises(CoordinatorError, match=r"permission denied .* 'elsewhere': .*keys"):
        RedisCoordinator(as_user(redis_server, "elsewhere"), ttl=1.0)

    # What the message says to grant is enough (INFO, the version check, is optional),
    # and the check leaves nothing behind.
    acl_user(raw, "lease", *hint[3:])
    c = RedisCoordinator(as_user(redis_server, "lease"), ttl=1.0)
    try:
        raw.set(c.keys("job")[1], 1)
        lease = c.try_acquire("job", owner="me:1", secret="s")
        assert lease is not None
        assert c.renew(lease) is True
        seen = c.observe("job")
        assert seen is not None
        assert (seen.owner, seen.fence) == ("me:1", lease.fence)
        c.release(lease)
        assert c.observe("job") is None
        assert raw.keys("*probe*") == []
    finally:
        c.close()


def test_a_permission_lost_while_campaigning_is_logged_as_a_misconfiguration(
    redis_server: RedisServer, raw: redis.Redis, error_seen: ErrorSeen
) -> None:
    acl_user(raw, "lease", "~test:*", "+@all")
    c = RedisCoordinator(
        as_user(redis_server, "lease"), prefix="test", ttl=FAST_TTL, poll_interval=0.05
    )
    seed(c, redis_server, "job")
    acl(raw, "SETUSER", "lease", "-evalsha")
    ran = threading.Event()
    sup = make("s", c)
    try:
        t = sup.spawn(ran.set, name="job", singleton=True)
        sup.start()
        assert error_seen.event.wait(WAIT)
        message = error_seen.records[0].getMessage()
        assert "permission denied at Redis" in message
        assert "for user 'lease'" in message
        assert "misconfiguration, not an outage" in message
        assert "ACL SETUSER lease ~test:* +evalsha" in message
        assert "cannot reach" not in message
        assert "NoPermissionError" not in message
        assert not ran.is_set()
        assert state(t) is TaskState.PENDING
    finally:
        sup.stop(WAIT)
        c.close()


def test_a_wrong_redis_password_says_authentication_failed(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """It said "cannot reach Redis"."""
    acl_user(raw, "lease", "~*", "+@all")
    where = rf"redis://127\.0\.0\.1:{redis_server.port}/0"
    with pytest.raises(
        CoordinatorError, match=rf"authentication failed at Redis {where} as user 'lease'"
    ) as raised:
        RedisCoordinator(as_user(redis_server, "lease", "hunter2"), ttl=1.0)
    assert "cannot reach" not in str(raised.value)
    assert "hunter2" not in str(raised.value)
    acl(raw, "SETUSER", "default", ">secret")  # a password, none given
    with pytest.raises(CoordinatorError, match=rf"authentication failed at Redis {where} as user 'default'"):
        RedisCoordinator(redis_server.url, ttl=1.0)


def test_rediss_against_a_plain_server_says_tls(redis_server: RedisServer) -> None:
    """It said "Timeout"."""
    began = time.monotonic()
    with pytest.raises(
        CoordinatorError,
        match=rf"TLS handshake with rediss://127\.0\.0\.1:{redis_server.port}/0 failed .*"
        "use redis:// for a plain one",
    ):
        RedisCoordinator(f"rediss://127.0.0.1:{redis_server.port}/0", ttl=1.0)
    assert time.monotonic() - began < 1.0 + SLACK  # (the check waits up to 1 s)


def test_observe_never_raises(tmp_path: Path, redis_server: RedisServer) -> None:
    """Observing is for status pages and snapshots: None when the backend cannot say."""
    c = RedisCoordinator(redis_server.url, prefix="p", ttl=1.0)
    redis_server.kill()
    began = time.monotonic()
    assert c.observe("job") is None
    assert time.monotonic() - began < SLACK
    c.close()
    f = FileCoordinator(tmp_path / "locks")
    f.path("job").symlink_to(tmp_path)
    assert f.observe("job") is None
    shutil.rmtree(f.directory)
    assert f.observe("job") is None


class CountingRedis(RedisCoordinator):
    """Counts campaign attempts (try_acquire calls), answered or not."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.tries = 0
        self._cond = threading.Condition()

    def try_acquire(self, name: str, *, owner: str, secret: str) -> corral.Lease | None:
        try:
            return super().try_acquire(name, owner=owner, secret=secret)
        finally:
            with self._cond:
                self.tries += 1
                self._cond.notify_all()

    def wait_tries(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.tries >= n, WAIT)


def test_a_singleton_never_runs_without_redis(corral_log: pytest.LogCaptureFixture) -> None:
    port = free_port()
    c = CountingRedis(f"redis://127.0.0.1:{port}/0", ttl=0.5, check=False)  # no server
    with pytest.raises(CoordinatorError, match=str(port)):
        c.ping()
    ran, log = threading.Event(), LeaseLog()
    sup = make("s", c, hooks=Hooks(on_lease=log))
    try:
        t = sup.spawn(ran.set, name="job", singleton=True)
        sup.start()
        assert c.wait_tries(3)  # several failed campaigns (with backoff)
        assert not ran.is_set()  # never fail open
        assert state(t) is TaskState.PENDING
        assert lease_state(t) == "campaigning"
        assert t.attempts == 0
        campaign_logs = [r for r in corral_log.records if "cannot campaign" in r.getMessage()]
        levels = [r.levelno for r in campaign_logs]
        assert levels[0] == logging.ERROR
        assert set(levels[1:]) == {logging.DEBUG}
        assert len(levels) >= 2
        assert "'job'" in campaign_logs[0].getMessage()
        assert str(port) in campaign_logs[0].getMessage()
        assert [r for r in corral_log.records if r.levelno >= logging.ERROR] == campaign_logs[:1]
        sup.stop(WAIT)
        assert state(t) is TaskState.CANCELLED
        assert t.attempts == 0
        assert not ran.is_set()
        assert log.states() == ["campaigning"]
        assert sup.failures == []
    finally:
        sup.stop(WAIT)
        c.close()


DEAD = "redis://127.0.0.1:1/0"  # nothing listens: validation must come before any traffic


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl": 0.4}, ValueError, r"ttl must be >= 0\.5"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1.0}, ValueError, "ttl"),
        ({"ttl": math.nan}, ValueError, "ttl"),
        ({"ttl": math.inf}, ValueError, "ttl"),
        ({"ttl": "10"}, TypeError, "ttl"),
        ({"ttl": None}, TypeError, "ttl"),
        ({"ttl": True}, TypeError, "ttl"),
        ({"ttl": 1.0, "stop_margin": 0.5}, ValueError, r"stop_margin \(0\.5s\) must be less than ttl/2"),
        ({"ttl": 1.0, "stop_margin": 0}, ValueError, "stop_margin"),
        ({"ttl": 1.0, "renew_interval": 0.5}, ValueError, "renew_interval .* too long for ttl"),
        ({"ttl": 1.0, "renew_interval": "1"}, TypeError, "renew_interval"),
        ({"ttl": 1.0, "op_timeout": 0.2}, ValueError, r"op_timeout .* at most renew_interval/2"),
        ({"ttl": 1.0, "poll_interval": 0}, ValueError, "poll_interval"),
        ({"prefix": ""}, ValueError, "prefix"),
        ({"prefix": "a b"}, ValueError, "prefix"),
        ({"prefix": "a{b}"}, ValueError, "prefix"),
        ({"prefix": "x" * 101}, ValueError, "prefix"),
        ({"prefix": 5}, ValueError, "prefix"),
    ],
)
def test_redis_coordinator_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RedisCoordinator(DEAD, **kwargs)


def test_redis_coordinator_wants_a_url_or_a_client() -> None:
    with pytest.raises(TypeError, match=re.escape("url_or_client must be a redis:// URL or a redis.Redis")):
        RedisCoordinator(42)
    with pytest.raises(TypeError, match="url_or_client"):
        RedisCoordinator(DEAD.encode())
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisCoordinator("http://127.0.0.1:1/0")


def test_file_coordinator_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        FileCoordinator(tmp_path, poll_interval=0)
    with pytest.raises(ValueError, match="check_interval"):
        FileCoordinator(tmp_path, check_interval=-1)
    with pytest.raises(TypeError, match="directory must be a path"):
        FileCoordinator(42)  # type: ignore[arg-type]


def test_without_the_redis_package_asking_for_redis_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    install = r"pip install 'corral\[redis\]'"
    with pytest.raises(ImportError, match=install):
        RedisCoordinator(DEAD)
    with pytest.raises(ImportError, match=install):
        make("needs-redis", DEAD)
    monkeypatch.setenv(ENV, DEAD)
    _reset_default()
    sup = make("env-needs-redis", None)
    try:
        with pytest.raises(ImportError, match=install):
            sup.spawn(lambda: None, name="job", singleton=True)
        sup.spawn(lambda: None, name="plain")  # only singletons need a coordinator
    finally:
        sup.stop(WAIT)


# -- spawning singletons: names, coordinator choice, the environment ------------------------


@pytest.mark.parametrize(
    "name", ["a b", "a{b}", "{a}", "a/b", "..", ".hidden", "-x", "a\nb", "é", "x" * 201, "a*"]
)
def test_a_singleton_name_must_fit_a_key_and_a_file_name(tmp_path: Path, name: str) -> None:
    sup = make("s", FileCoordinator(tmp_path))
    try:
        try:
            sup.spawn(lambda: None, name=f"plain-{name}")
        except ValueError:  # (control characters, length: no task may have that name)
            with pytest.raises(ValueError, match="name"):
                sup.spawn(lambda: None, name=name, singleton=True)
            return
        with pytest.raises(ValueError, match=r"singleton task name .* cannot name a lease"):
            sup.spawn(lambda: None, name=name, singleton=True)
        sup.spawn(lambda: None, name=name)  # fine for a task that is not a singleton
    finally:
        sup.stop(WAIT)


def test_singleton_names_the_rule_accepts_and_the_ones_it_needs(tmp_path: Path) -> None:
    sup = make("s", FileCoordinator(tmp_path))
    try:
        with pytest.raises(ValueError, match="empty"):
            sup.spawn(lambda: None, name="", singleton=True)
        with pytest.raises(TypeError, match="a singleton task needs a name="):
            sup.spawn(lambda: None, singleton=True)
        for name in ["x" * 200, "a:b@c+d=e-f.g_h", "_", "0"]:
            t = sup.spawn(lambda: None, name=name, singleton=True)
            assert t.singleton
    finally:
        sup.stop(WAIT)  # stopped before start: they end without running


def test_the_coordinator_argument(tmp_path: Path, redis_server: RedisServer) -> None:
    with pytest.raises(TypeError, match=re.escape("coordinator must be a corral.Coordinator")):
        make("bad", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("coordinator must be a corral.Coordinator")):
        corral.Group("bad", coordinator=3.5)  # type: ignore[arg-type]
    assert not [g for g in corral.roots() if g.name == "bad"]

    d = tmp_path / "by-path"
    sup_f = make("file", str(d))
    sup_r = make("redis", redis_server.url)
    assert isinstance(sup_r._coordinator, RedisCoordinator)
    seed(sup_r._coordinator, redis_server, "by-redis")
    try:
        assert d.is_dir()  # made at construction
        # (Two names: one name runs once at a time in a process, whatever the backend.)
        tf = sup_f.spawn(lambda: None, name="by-file", singleton=True)
        tr = sup_r.spawn(lambda: None, name="by-redis", singleton=True)
        assert snapshot_of(sup_f, "by-file")["lease"]["coordinator"] == (
            f"FileCoordinator({str(d)!r})"
        )
        assert snapshot_of(sup_r, "by-redis")["lease"]["coordinator"] == (
            f"RedisCoordinator(redis://127.0.0.1:{redis_server.port}/0)"
        )
        sup_f.start()
        sup_r.start()
        tf.join(WAIT)
        tr.join(WAIT)
        assert tf.state is TaskState.SUCCEEDED
        assert tr.state is TaskState.SUCCEEDED
        assert on_file(FileCoordinator(d).path("by-file"))[1] == OWNER
    finally:
        sup_f.stop(WAIT)
        sup_r.stop(WAIT)
        for sup in (sup_f, sup_r):
            coordinator = sup._coordinator
            assert coordinator is not None
            coordinator.close()


def test_groups_use_the_nearest_coordinator_else_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = FileCoordinator(tmp_path / "outer", check_interval=0.05)
    default_dir = tmp_path / "default"
    monkeypatch.setenv(ENV, str(default_dir))
    _reset_default()
    described: dict[str, str] = {}

    def note(key: str) -> Callable[[], None]:
        def run() -> None:
            task = corral.current_task()
            assert task is not None
            described[key] = task.group.snapshot()["tasks"][0]["lease"]["coordinator"]

        return run

    def spawner() -> None:
        with corral.Group("inner") as inner:  # a child of the supervisor: its coordinator
            inner.spawn(note("inner"), name="inner-job", singleton=True)
        with corral.Group("detached", detached=True) as det:  # a root: the default one
            det.spawn(note("detached"), name="detached-job", singleton=True)

    sup = make("s", outer)
    try:
        t = sup.spawn(spawner, name="spawner")
        sup.start()
        t.result(WAIT)
    finally:
        sup.stop(WAIT)
    assert described == {
        "inner": f"FileCoordinator({str(tmp_path / 'outer')!r})",
        "detached": f"FileCoordinator({str(default_dir)!r})",
    }
    assert outer.path("inner-job").exists()
    assert not outer.path("detached-job").exists()
    assert FileCoordinator(default_dir).path("detached-job").exists()


@pytest.mark.usefixtures("fresh_go")
def test_env_directory_selects_the_file_backend_for_go_and_supervisors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "env-locks"
    monkeypatch.setenv(ENV, str(d))
    _reset_default()
    default = default_coordinator()
    assert isinstance(default, FileCoordinator)
    assert default.directory == d
    assert default_coordinator() is default  # cached

    def fence() -> int:
        lease = corral.current_lease()
        assert lease is not None
        return lease.fence

    t = in_thread(lambda: corral.go(fence, name="env-job", singleton=True))
    first = t.result(WAIT)
    assert on_file(default.path("env-job")) == (first, OWNER)
    sup = make("s", None)  # no coordinator: the process default
    try:
        t2 = sup.spawn(fence, name="env-job", singleton=True)
        assert snapshot_of(sup, "env-job")["lease"]["coordinator"] == default.describe()
        sup.start()
        assert t2.result(WAIT) > first
    finally:
        sup.stop(WAIT)


@pytest.mark.usefixtures("fresh_go")
def test_env_redis_url_selects_the_redis_backend_for_go_and_supervisors(
    redis_server: RedisServer, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, redis_server.url)
    _reset_default()
    default = default_coordinator()
    raw.set("corral:{env-job}:fence", 1)  # seen before: no wait of one ttl (10 s)
    assert isinstance(default, RedisCoordinator)
    assert default.prefix == "corral"
    running, done = threading.Event(), threading.Event()

    def hold() -> int:
        lease = corral.current_lease()
        assert lease is not None
        running.set()
        wait(done)
        return lease.fence

    with released(done):
        t = in_thread(lambda: corral.go(hold, name="env-job", singleton=True))
        wait(running)
        assert raw.hget("corral:{env-job}:lock", "owner") == OWNER.encode()
        done.set()
        fence = t.result(WAIT)
    assert raw.exists("corral:{env-job}:lock") == 0  # released
    assert int(raw.get("corral:{env-job}:fence") or 0) == fence
    sup = make("s", None)
    try:
        t2 = sup.spawn(lambda: None, name="env-job", singleton=True)
        assert snapshot_of(sup, "env-job")["lease"]["coordinator"] == default.describe()
        sup.start()
        t2.join(WAIT)
        assert t2.state is TaskState.SUCCEEDED
        assert int(raw.get("corral:{env-job}:fence") or 0) > fence
    finally:
        sup.stop(WAIT)


@pytest.mark.usefixtures("fresh_go")
def test_env_errors_surface_at_spawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    monkeypatch.setenv(ENV, str(plain / "locks"))
    _reset_default()
    with pytest.raises(CoordinatorError, match="cannot create the lease directory"):
        in_thread(lambda: corral.go(lambda: None, name="job", singleton=True))
    port = free_port()
    monkeypatch.setenv(ENV, f"redis://127.0.0.1:{port}/0")
    _reset_default()
    sup = make("s", None)
    try:
        with pytest.raises(CoordinatorError, match=f"127.0.0.1:{port}"):
            sup.spawn(lambda: None, name="job", singleton=True)
        with pytest.raises(ValueError, match="singleton task name"):
            sup.spawn(lambda: None, name="bad name", singleton=True)  # checked before
    finally:
        sup.stop(WAIT)


@pytest.mark.parametrize(
    "spec",
    [
        "http://127.0.0.1:1/0", "REDIS://127.0.0.1:1/0", "redis:/127.0.0.1:1/0",
        "redis:127.0.0.1:1", "rediss:/127.0.0.1:1/0", "unix:/run/redis.sock",
        "leases", "./leases", "leases/sub",
    ],
)
def test_env_with_an_unknown_url_scheme_is_an_error_not_a_relative_lock_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    """A mistyped CORRAL_COORDINATOR must not quietly become a per-host lock directory
    (then each host would run its own copy of every singleton)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV, spec)
    _reset_default()
    error: Exception | None = None
    made: corral.Coordinator | None = None
    try:
        made = default_coordinator()
    except (ValueError, CoordinatorError) as e:
        error = e
    assert list(tmp_path.iterdir()) == [], f"{spec!r} made a lock directory: {made!r}"
    assert error is not None, f"{spec!r} was taken for a directory: {made!r}"
    if not spec.upper().startswith("REDIS://"):  # (that one is a URL: its Redis is down)
        assert isinstance(error, ValueError)
        assert str(error).startswith(f"{ENV}={spec!r}: ")
        assert re.search(r"not a Redis URL|unknown coordinator URL scheme|absolute path", str(error))


def test_a_url_lookalike_is_not_a_directory_in_code_either(tmp_path: Path) -> None:
    """coordinator= "redis:/host:port" (one slash) is an error; a relative directory is
    fine in code (made absolute), and one whose first part has a colon is written ./a:b."""
    with pytest.raises(ValueError, match=r"'redis:/127\.0\.0\.1:1/0' is not a Redis URL: write "
                       r"redis://host:port/db"):
        make("bad", "redis:/127.0.0.1:1/0")
    with pytest.raises(ValueError, match=r"unknown coordinator URL scheme 'a'.*\./a:b"):
        make("bad", "a:b")
    assert not [g for g in corral.roots() if g.name == "bad"]
    d = tmp_path / "a:b"
    sup = make("s", str(d))
    try:
        assert isinstance(sup._coordinator, FileCoordinator)
        assert sup._coordinator.directory == d
    finally:
        sup.stop(WAIT)
