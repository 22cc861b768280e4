"""Singleton leases across real processes, on a real ``redis-server`` and on lock files.

Each test starts ``lease_worker.py`` processes (each a ``Supervisor`` with one
``singleton=True`` task per name, campaigning for the lease), injects a fault (SIGTERM,
``kill -9``, SIGSTOP of the holder; a Redis restart; Redis cut off by a TCP proxy),
and then checks the shared log that the holders wrote for these properties:

- per name, acquisitions in time order have strictly increasing fences;
- the belief windows [acquired, last tick] of different fences never overlap, and
  every tick was made before its lease's deadline (no fail-open, no zombie holder);
- the takeover after the fault comes within its bound (TTL + a poll interval after a
  crash or a pause, well under the TTL after a graceful stop).

Synchronisation is on lines read from the log or from a worker's stdout. Real time is
waited for only where the property is about time (a TTL expiring); there the waits
poll the log, with generous backstops, and the measured figures are asserted against
the bound plus slack for a loaded 2-core machine (and printed: run with ``-s``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

import corral
from redis_server import RedisServer
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("lease_worker.py")
TTL = 1.0
REDIS_POLL = TTL / 5  # RedisCoordinator's default poll interval
VALIDITY = TTL * 0.99 - TTL / 5  # a Redis holder trusts its lease this long after a renewal
FILE_POLL = 0.1
SLACK = 1.0  # for a loaded 2-core machine: scheduling delays, a slow process start
FILE_SLACK = 0.5  # the same for "at once": a file lock's takeover is one poll away
BACKSTOP = 15.0  # seconds: how long a wait may take before the test gives up

T = TypeVar("T")


# -- the shared log ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ev:
    ev: str  # acquired, tick, stop
    name: str
    fence: int
    pid: int
    t: float  # time.monotonic() in the worker
    deadline_left: float | None = None
    lost: bool | None = None
    cause: str | None = None


class LeaseLog:
    """The workers' JSON-lines log, read incrementally (only whole lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[Ev] = []
        self._pos = 0
        self._partial = b""

    def refresh(self) -> list[Ev]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return self.events
        self._pos += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            record = json.loads(line)
            self.events.append(Ev(**record))
        return self.events

    def wait_for(self, what: str, found: Callable[[], T | None], timeout: float = BACKSTOP) -> T:
        """Poll the log until ``found()`` returns something (returned)."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            result = found()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.005)  # the poll period of a file being appended to

    def select(self, name: str | None = None, ev: str | None = None, **match: object) -> list[Ev]:
        return [
            e for e in self.events
            if (name is None or e.name == name) and (ev is None or e.ev == ev)
            and all(getattr(e, k) == v for k, v in match.items())
        ]

    def holder(self, name: str, above: int = -1) -> Ev | None:
        """The acquisition of ``name`` with a fence above ``above`` that has ticked."""
        ticked = {e.fence for e in self.select(name, "tick") if e.fence > above}
        acquired = [e for e in self.select(name, "acquired") if e.fence in ticked]
        return max(acquired, key=lambda e: e.fence, default=None)

    def wait_holder(self, name: str, above: int = -1, timeout: float = BACKSTOP) -> Ev:
        return self.wait_for(
            f"a holder of {name!r} with a fence above {above}",
            lambda: self.holder(name, above), timeout,
        )


def wait_stop(log: LeaseLog, acquired: Ev) -> Ev:
    """Wait for the ``stop`` of the run that made ``acquired``."""
    return log.wait_for(
        f"the stop of {acquired.name!r} fence {acquired.fence}",
        lambda: next(iter(log.select(acquired.name, "stop", fence=acquired.fence)), None),
    )


def check_fences_and_deadlines(events: list[Ev], name: str) -> list[int]:
    """I1 and the deadline half of I2 for one name: acquisitions in time order have
    strictly increasing fences; each tick comes from the process that acquired its
    fence, before its lease's deadline. Returns the fences in acquisition order."""
    mine = [e for e in events if e.name == name]
    acquired = sorted((e for e in mine if e.ev == "acquired"), key=lambda e: e.t)
    fences = [e.fence for e in acquired]
    assert all(a < b for a, b in itertools.pairwise(fences)), (
        f"{name}: fences do not strictly increase in acquisition order: {fences}"
    )
    owner = {e.fence: e.pid for e in acquired}
    for e in mine:
        if e.ev == "tick":
            assert owner.get(e.fence) == e.pid, f"{name}: a tick of a fence it did not acquire: {e}"
            if e.deadline_left is not None:
                assert e.deadline_left > 0, f"{name}: a tick after its lease's deadline: {e}"
    return fences


def overlaps(events: list[Ev], name: str) -> list[str]:
    """The window half of I2: the belief windows [acquired, last tick] of successive
    fences, in time order; each overlap found, described."""
    mine = [e for e in events if e.name == name]
    window = {e.fence: [e.t, e.t, e.pid] for e in mine if e.ev == "acquired"}
    for e in mine:
        if e.ev == "tick" and e.fence in window:
            window[e.fence][1] = max(window[e.fence][1], e.t)
    spans = sorted(window.items(), key=lambda kv: kv[1][0])
    found = []
    for (f1, (_, end1, pid1)), (f2, (start2, _, pid2)) in itertools.pairwise(spans):
        if not (f1 < f2 and end1 < start2):
            found.append(
                f"{name}: fence {f1} (pid {pid1}) ticked until {end1:.4f}, fence {f2} "
                f"(pid {pid2}) was acquired at {start2:.4f}: {(end1 - start2) * 1000:.1f} ms "
                "with two holders"
            )
    return found


def check_one_holder_at_a_time(events: list[Ev], name: str) -> list[int]:
    """Every invariant of one name (I1, I2); returns its fences in acquisition order."""
    fences = check_fences_and_deadlines(events, name)
    assert not overlaps(events, name), "two holders at once:\n" + "\n".join(overlaps(events, name))
    return fences


# -- the workers ---------------------------------------------------------------------------


class Cluster:
    """Worker processes on one backend, all writing to one log; every one is killed
    on exit, whatever happened."""

    def __init__(self, tmp: Path, backend: str, *, prefix: str | None = None) -> None:
        self.tmp = tmp
        self.backend = backend
        self.prefix = prefix or f"t{uuid.uuid4().hex[:12]}"
        self.log = LeaseLog(tmp / "lease.log")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._errs: dict[int, Path] = {}
        self._ending: set[int] = set()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process must still die
                proc.kill()
        for proc in self.procs.values():
            proc.wait(10)
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.close()
            proc.stdout.close()

    def start(self, names: str, count: int = 1, poll: float | None = None) -> list[int]:
        """Start ``count`` workers campaigning for ``names``; return their pids once each
        printed ``ready``."""
        started = []
        for _ in range(count):
            cmd = [
                sys.executable, "-W", "error", str(WORKER), "--backend", self.backend,
                "--names", names, "--ttl", str(TTL), "--log", str(self.log.path),
                "--prefix", self.prefix,
            ]
            if poll is not None:
                cmd += ["--poll", str(poll)]
            err_path = self.tmp / f"worker-{len(self.procs) + 1}.err"
            with open(err_path, "wb") as err:
                # stdin: a pipe held open, so that a worker exits if the test dies.
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            self.procs[proc.pid] = proc
            self._errs[proc.pid] = err_path
            started.append(proc)
        # (Starting: an interpreter, corral, redis-py and a connection check each; on a
        # loaded machine several of those take a while: a longer backstop than a wait.)
        deadline = time.monotonic() + 4 * BACKSTOP
        for proc in started:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else b""
            assert line == b"ready\n", f"worker {proc.pid} did not start:\n{self.stderr(proc.pid)}"
        return [p.pid for p in started]

    def stderr(self, pid: int) -> str:
        return self._errs[pid].read_text(errors="replace")

    def signal(self, pid: int, sig: int) -> float:
        """Send ``sig``; return the time it was sent."""
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self._ending.add(pid)
        t = time.monotonic()
        os.kill(pid, sig)
        return t

    def alive(self) -> list[int]:
        """The workers not told to end (one that was may still be exiting: its handlers
        are already restored, so another SIGTERM would kill it)."""
        return [pid for pid, p in self.procs.items() if p.poll() is None and pid not in self._ending]

    def stop(self, *pids: int) -> None:
        """SIGTERM the workers (a graceful stop) and check that they exit cleanly."""
        for pid in pids:
            self.signal(pid, signal.SIGTERM)
        for pid in pids:
            code = self.procs[pid].wait(BACKSTOP)
            assert code == 0, f"worker {pid} exited with {code}:\n{self.stderr(pid)}"

    def held_by(self, pid: int) -> dict[str, Ev]:
        """The names whose latest acquisition is ``pid``'s (it holds them now)."""
        latest: dict[str, Ev] = {}
        for e in self.log.refresh():
            if e.ev == "acquired" and (e.name not in latest or e.fence > latest[e.name].fence):
                latest[e.name] = e
        return {n: e for n, e in latest.items() if e.pid == pid}


def report(what: str, seconds: list[float]) -> None:
    print(f"\n[lease figures] {what}: " + ", ".join(f"{s:.3f}s" for s in seconds))


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, backend argument) for a parametrized ``kind`` of "redis" or "file"."""
    kind: str = request.param
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return kind, server.url
    locks = tmp_path / "locks"
    locks.mkdir()
    return kind, str(locks)


def takeover_bound(kind: str, sig: int) -> float:
    """How long after the fault the next acquisition must come (the takeover bound)."""
    if kind == "file":  # the kernel drops the lock at once: the next poll takes it
        return FILE_POLL * 1.2 + FILE_SLACK
    if sig == signal.SIGTERM:  # the lease is released: the next poll takes it
        return TTL
    return TTL + REDIS_POLL * 1.2 + SLACK  # the key must expire first


# -- many processes, changing leaders ------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "file"], indirect=True)
def test_many_processes_hold_each_name_one_at_a_time(
    backend: tuple[str, str], tmp_path: Path
) -> None:
    """Five processes campaign for a and b, a sixth for b only. Holders are stopped
    (SIGTERM) and killed (SIGKILL) in turn, so leadership changes several times; at
    every moment at most one process held each name, and the process that never
    spawned a never ran it."""
    kind, where = backend
    poll = FILE_POLL if kind == "file" else None
    with Cluster(tmp_path, where) as cluster:
        cluster.start("a,b", 5, poll=poll)
        (b_only,) = cluster.start("b", 1, poll=poll)
        log = cluster.log
        seen = {"a": -1, "b": -1}
        takeovers: dict[int, list[float]] = {signal.SIGTERM: [], signal.SIGKILL: []}
        for name, sig in [
            ("a", signal.SIGTERM), ("b", signal.SIGKILL), ("a", signal.SIGKILL), ("b", signal.SIGTERM),
        ]:
            holder = log.wait_holder(name, seen[name])
            held = cluster.held_by(holder.pid)
            assert name in held
            t_fault = cluster.signal(holder.pid, sig)
            for n, old in held.items():
                new = log.wait_holder(n, old.fence)
                assert new.pid != holder.pid
                takeovers[sig].append(new.t - t_fault)
                seen[n] = old.fence  # the next fault waits for the holder after it
            if sig == signal.SIGTERM:
                assert cluster.procs[holder.pid].wait(BACKSTOP) == 0, cluster.stderr(holder.pid)

        # Everyone but the b-only worker stops: if it is alive and has not held b yet,
        # it does now, alone; whatever it holds, it never runs a.
        cluster.stop(*[p for p in cluster.alive() if p != b_only])
        if b_only in cluster.alive():
            log.wait_for("the b-only worker to hold b", lambda: log.select("b", "tick", pid=b_only) or None)
            cluster.stop(b_only)
        events = log.refresh()

    report(f"{kind}: takeover after SIGTERM of the holder", takeovers[signal.SIGTERM])
    report(f"{kind}: takeover after SIGKILL of the holder", takeovers[signal.SIGKILL])
    fences = {n: check_one_holder_at_a_time(events, n) for n in ("a", "b")}
    assert len(fences["a"]) >= 3, fences
    assert len(fences["b"]) >= 3, fences
    for signum, figures in takeovers.items():
        bound = takeover_bound(kind, signum)
        assert all(s < bound for s in figures), (signal.Signals(signum).name, figures, bound)
    # The non-caller: it held b at some point, and never ran a.
    assert [e for e in events if e.pid == b_only and e.name == "b" and e.ev == "acquired"]
    assert not [e for e in events if e.pid == b_only and e.name == "a"]


def test_a_lock_file_removed_or_replaced_under_its_holder_never_gives_two_holders(
    tmp_path: Path,
) -> None:
    """Removing the lock file (or renaming a copy over it) while a holder ran gave two
    holders at once for up to 0.9 s: a contender locked the new file at once, and the
    holder found out at its next check. A new file is now granted only 2 x
    check_interval after a contender first saw it; the holder notices within one."""
    locks = tmp_path / "locks"
    locks.mkdir()
    path = corral.FileCoordinator(locks).path("a")
    with Cluster(tmp_path, str(locks)) as cluster:
        cluster.start("a", 3, poll=FILE_POLL)
        log = cluster.log
        replaced: list[Ev] = []
        seen = -1
        for how in ("unlink", "replace", "unlink"):
            holder = log.wait_holder("a", seen)
            if how == "unlink":
                path.unlink()
            else:
                shutil.copyfile(path, tmp_path / "copy")
                os.replace(tmp_path / "copy", path)
            replaced.append(holder)
            log.wait_holder("a", holder.fence)
            seen = holder.fence
        cluster.stop(*cluster.alive())
        events = log.refresh()

    check_one_holder_at_a_time(events, "a")
    for holder in replaced:  # each holder lost its lease (it did not stop for a signal)
        [stop] = [e for e in events if e.ev == "stop" and e.fence == holder.fence]
        assert stop.lost is True, stop
        assert stop.cause == "LeaseLost", stop


# -- takeover after the holder ends --------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
@pytest.mark.parametrize("backend", ["redis", "file"], indirect=True)
def test_takeover_after_the_holder_ends(
    backend: tuple[str, str], sig: int, tmp_path: Path
) -> None:
    """kill -9: another process takes over within TTL + one poll interval (Redis: the
    key must expire), at once with a file lock (the kernel drops it). Graceful stop:
    the lease is released, so the takeover is well under the TTL (one poll)."""
    kind, where = backend
    poll = FILE_POLL if kind == "file" else None
    with Cluster(tmp_path, where) as cluster:
        cluster.start("a", 3, poll=poll)
        log = cluster.log
        figures: list[float] = []
        gaps: list[float] = []
        faulted: list[Ev] = []
        seen = -1
        for _ in range(2):
            holder = log.wait_holder("a", seen)
            faulted.append(holder)
            t_fault = cluster.signal(holder.pid, sig)
            new = log.wait_holder("a", holder.fence)
            assert new.pid != holder.pid
            figures.append(new.t - t_fault)
            last_tick = max(e.t for e in log.select("a", "tick", fence=holder.fence))
            gaps.append(new.t - last_tick)
            seen = holder.fence
            if sig == signal.SIGTERM:
                assert cluster.procs[holder.pid].wait(BACKSTOP) == 0, cluster.stderr(holder.pid)
        cluster.stop(*cluster.alive())
        events = log.refresh()

    what = f"{kind}: takeover after {'kill -9' if sig == signal.SIGKILL else 'SIGTERM'}"
    report(what, figures)
    check_one_holder_at_a_time(events, "a")
    bound = takeover_bound(kind, sig)
    assert all(s < bound for s in figures), (figures, bound)
    if kind == "redis" and sig == signal.SIGKILL:
        # The key outlives the holder's belief: its last tick was before its deadline,
        # which is at least TTL - VALIDITY before the key can expire.
        assert all(g > (TTL - VALIDITY) * 0.9 for g in gaps), gaps
    stops = [e for h in faulted for e in events if e.ev == "stop" and e.fence == h.fence]
    if sig == signal.SIGTERM:  # stopped gracefully, not by a lease loss
        assert len(stops) == len(faulted), stops
        assert all(not e.lost and e.cause == "Stopped" for e in stops), stops
    else:
        assert stops == [], stops  # killed: not a word more


# -- a paused holder -----------------------------------------------------------------------


def test_paused_holder_stops_on_waking_and_another_has_taken_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGSTOP the holder past its TTL: another process takes over; on SIGCONT the old
    holder cancels its task (LeaseLost) without another tick under the old lease."""
    with Cluster(tmp_path, redis_server.url) as cluster:
        cluster.start("a", 3)
        log = cluster.log
        holder = log.wait_holder("a")
        t_stop = cluster.signal(holder.pid, signal.SIGSTOP)
        new = log.wait_holder("a", holder.fence)
        takeover = new.t - t_stop
        t_cont = cluster.signal(holder.pid, signal.SIGCONT)
        stop = wait_stop(log, holder)
        cluster.stop(*cluster.alive())
        events = log.refresh()

    report("redis: takeover after SIGSTOP of the holder", [takeover])
    report("redis: woken holder stopped after SIGCONT", [stop.t - t_cont])
    assert new.pid != holder.pid
    assert takeover < takeover_bound("redis", signal.SIGSTOP), takeover
    assert stop.pid == holder.pid
    assert stop.lost, stop
    assert stop.cause == "LeaseLost", stop
    assert stop.deadline_left is not None
    assert stop.deadline_left <= 0, stop
    old_ticks = [e for e in events if e.ev == "tick" and e.fence == holder.fence]
    assert old_ticks
    assert all(e.t < t_cont for e in old_ticks), "ticked under the old lease after waking"
    assert stop.t - t_cont < SLACK, "the woken holder did not stop promptly"
    check_one_holder_at_a_time(events, "a")


# -- Redis loses its state -----------------------------------------------------------------


def test_redis_restart_without_persistence_keeps_one_holder_and_rising_fences(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis is killed and restarted empty under a holder: every fence acquired
    afterwards is above every fence before (the TIME floor), and never two holders at
    once. The restart comes right after the holder of a renewed its lease (the key's
    PTTL is back near the TTL): the worst moment, as its next renewal, the one that finds
    the lease gone, is then a whole renew interval away while the others poll faster."""
    with Cluster(tmp_path, redis_server.url) as cluster:
        cluster.start("a,b", 4)
        log = cluster.log
        holders = {n: log.wait_holder(n) for n in ("a", "b")}
        observer = corral.RedisCoordinator(redis_server.url, prefix=cluster.prefix, ttl=TTL)
        try:
            log.wait_for("a renewal of a's lease", lambda: just_renewed(observer, "a"))
        finally:
            observer.close()
        t_restart = time.monotonic()
        redis_server.restart()
        after = {n: log.wait_holder(n, holders[n].fence) for n in ("a", "b")}
        # The old holders find out (their renewal is refused, or their deadline passes):
        # wait for that before stopping anyone, or an overlap would go unseen.
        stops = {n: wait_stop(log, holders[n]) for n in ("a", "b")}
        cluster.stop(*cluster.alive())
        events = log.refresh()

    report("redis: re-acquired after a restart", [after[n].t - t_restart for n in ("a", "b")])
    report("redis: old holders stopped after a restart", [stops[n].t - t_restart for n in ("a", "b")])
    for n in ("a", "b"):
        assert stops[n].lost, stops[n]
        assert stops[n].cause == "LeaseLost", stops[n]
        fences = check_fences_and_deadlines(events, n)
        before = [e.fence for e in events if e.name == n and e.ev == "acquired" and e.t < t_restart]
        later = [f for f in fences if f not in before]
        assert later, "no acquisition after the restart"
        assert min(later) > max(before), (before, later)
    # Last, so that the fence checks above are seen to pass whatever this finds.
    found = overlaps(events, "a") + overlaps(events, "b")
    assert not found, "two holders at once after the restart:\n" + "\n".join(found)


def just_renewed(observer: corral.RedisCoordinator, name: str) -> bool | None:
    lease = observer.observe(name)
    return True if lease is not None and lease.remaining() > TTL - 0.05 else None


# -- Redis cut off -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["pause", "drop"])
def test_redis_unreachable_nobody_runs_until_it_is_back(
    redis_server: RedisServer, tmp_path: Path, fault: str
) -> None:
    """Every worker reaches Redis through a proxy that stalls (pause) or closes every
    connection (drop): the holders stop by their own deadlines, nobody runs while
    nobody can hold the lease, and service resumes with higher fences once Redis is
    reachable again."""
    names = ("a", "b")
    with TcpProxy(redis_server.port) as proxy, Cluster(tmp_path, proxy.url) as cluster:
        observer = corral.RedisCoordinator(redis_server.url, prefix=cluster.prefix, ttl=TTL)
        try:
            cluster.start("a,b", 3)
            log = cluster.log
            holders = {n: log.wait_holder(n) for n in names}
            t_cut = time.monotonic()
            if fault == "pause":
                proxy.pause()
            else:
                proxy.drop()
            stops = {n: wait_stop(log, holders[n]) for n in names}
            # Past the holders' deadlines, and past the keys' own expiry in Redis: the
            # point where a worker that could reach Redis would take the lease.
            log.wait_for(
                "the leases to expire in Redis",
                lambda: True if all(observer.observe(n) is None for n in names) else None,
            )
            t_resume = time.monotonic()
            proxy.resume()
            after = {n: log.wait_holder(n, holders[n].fence) for n in names}
            cluster.stop(*cluster.alive())
            events = log.refresh()
        finally:
            observer.close()

    report(f"redis {fault}: holders stopped after the cut", [stops[n].t - t_cut for n in names])
    report(f"redis {fault}: re-acquired after the resume", [after[n].t - t_resume for n in names])
    for n in names:
        stop = stops[n]
        assert stop.lost, stop
        assert stop.cause == "LeaseLost", stop
        # By its own deadline: at most VALIDITY after the last renewal (before the cut).
        assert stop.t - t_cut < VALIDITY + SLACK, (stop, t_cut)
        # The holder may tick until its deadline (nobody else can take the lease before
        # the key expires); from its stop to the resume, nobody held n.
        during = [e for e in events if e.name == n and stop.t < e.t < t_resume and e.ev != "stop"]
        assert not during, during
        # And nobody acquired anything without Redis (no fail-open).
        acquired = [e for e in events if e.ev == "acquired" and t_cut < e.t < t_resume]
        assert not acquired, acquired
        assert after[n].fence > holders[n].fence
        # The campaign backs off to at most max(ttl, 1 s) between tries while Redis fails.
        assert after[n].t - t_resume < max(TTL, 1.0) + REDIS_POLL * 1.2 + SLACK
        check_one_holder_at_a_time(events, n)


def test_deadline_math_matches_the_coordinator() -> None:
    """The bounds above assume RedisCoordinator's defaults for a 1 s TTL."""
    c = corral.RedisCoordinator("redis://127.0.0.1:1/0", ttl=TTL, check=False)
    try:
        assert math.isclose(c.validity, VALIDITY)
        assert math.isclose(c.poll_interval, REDIS_POLL)
    finally:
        c.close()
