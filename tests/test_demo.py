"""``python -m corral demo`` (run in subprocesses), the command line, and format_tree."""

from __future__ import annotations

import io
import itertools
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from types import TracebackType

import pytest

import corral
from corral.__main__ import main
from corral._demo import REDIS_TTL, WIDTH, Narrator, demo_coordinator, run_demo, short_fence
from corral._tree import format_tree
from redis_server import RedisServer

SRC = Path(corral.__file__).resolve().parent.parent
DEMO = [sys.executable, "-W", "error", "-m", "corral", "demo"]
TASKS = {"printer", "flaky", "batch", "db", "web", "worker", "deploy", "demo-leader", "timer"}
NARRATED = re.compile(r"^ *(\d+\.\d\d)s  (\S+) +(.*)$")  # "  1.02s  worker      v2 started"


def _env(leases: Path | str | None = None) -> dict[str, str]:
    """The demo's environment; ``leases``: its own lease directory (the leader's lock
    file) or Redis URL, so that no other demo on the machine holds the lease."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.pop("CORRAL_COORDINATOR", None)
    if leases is not None:
        env["CORRAL_COORDINATOR"] = str(leases)
    return env


def _index(lines: list[str], pattern: str) -> int:
    """Index of the first line matching ``pattern`` (fails the test if none does)."""
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(lines))


def _check_fits(lines: list[str]) -> None:
    """Every line the demo printed fits 80 columns."""
    wide = [line for line in lines if len(line) > WIDTH]
    assert not wide, "lines wider than 80 columns:\n" + "\n".join(wide)


def _narration(lines: list[str]) -> list[tuple[float, str, str]]:
    """(seconds, name, text) of each narrated line."""
    return [(float(m[1]), m[2], m[3]) for m in map(NARRATED.match, lines) if m]


class Demo:
    """A demo subprocess whose output a thread reads, line by line, as it comes."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*DEMO, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # ends with the process
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, start: int = 0, timeout: float = 30) -> int:
        """Index of the first line from ``start`` on that matches ``pattern``, once
        printed; fails if the demo ends first (``timeout``: a backstop)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if re.search(pattern, self.lines[i]):
                        return i
                start = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(
                        f"the demo never printed {pattern!r}:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(left)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait for the demo to exit: (status, stdout, stderr)."""
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        assert self.proc.stderr is not None
        return status, "\n".join(self.lines), self.proc.stderr.read()

    def __enter__(self) -> Demo:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- the demo, start to end ------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_for_its_duration_and_shows_what_corral_does(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*DEMO, "--duration", "4"], cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n--- stderr ---\n{proc.stderr}"
    assert proc.stderr == ""
    lines = out.splitlines()
    _check_fits(lines)

    # A flaky task restarted with backoff: three failed attempts, then it stays up.
    assert len([x for x in lines if re.search(r"flaky +failed: ConnectionError", x)]) == 3
    assert len([x for x in lines if re.search(r"flaky +restarting in \d+\.\d\ds", x)]) == 3
    assert _index(lines, r"flaky +restarting in") < _index(lines, r"flaky +started \(attempt 2\)")
    _index(lines, r"flaky +connected")

    # A bounded group working through the batch, with progress.
    assert _index(lines, r"batch +processed 6/30") < _index(lines, r"batch +processed 30/30")
    _index(lines, r"batch +ended: succeeded")

    # web needs db: it starts only once db said it was ready. web is a coroutine, on
    # corral's loop thread.
    assert _index(lines, r"\bdb +ready") < _index(lines, r"\bweb +started")
    _index(lines, r"\bweb +coroutine on corral-loop: serving postgres://db.demo/app$")

    # The replaced worker ends with Replaced, before its replacement starts.
    replaced = _index(lines, r"worker +v1 stopping after \d+ jobs: cancelled by Replaced$")
    assert replaced < _index(lines, r"worker +v2 started")
    _index(lines, r"worker +v1 ended: cancelled \(Replaced\)")
    _index(lines, r"worker +v2 handled 10 jobs")

    # The tree, printed as it changes.
    _index(lines, r"^supervisor 'demo' \(running\)$")
    _index(lines, r"^\|-- flaky ")

    # The timer stops it; on stop, web has ended before db is cancelled.
    stop = _index(lines, r"timer +4s elapsed: sup.stop\(\)")
    assert stop < _index(lines, r"\bweb +ended: cancelled \(Stopped") < _index(
        lines, r"\bdb +ended: cancelled \(Stopped"
    )

    # Each task is narrated under one name, the one the tree shows (the two versions of
    # the worker share theirs, and say which they are).
    narrated = _narration(lines)
    assert {name for _, name, _ in narrated} == TASKS
    assert {m[1] for m in map(re.compile(r"^[|`]-- (\S+) ").match, lines) if m} == TASKS

    # Fences are shown short; the full number once, where the lease is taken.
    long_numbers = [line for line in lines if re.search(r"\d{10}", line)]
    [holding] = long_numbers
    m = re.search(r"demo-leader +holding the lease: fence (\d+) \(shown as \.\.(\d{4})\)$", holding)
    assert m, holding
    assert m[1].endswith(m[2])
    assert f"lease=holding(fence ..{m[2]})" in out  # in the tree
    _index(lines, rf"demo-leader +leading \(fence \.\.{m[2]}\), beat 1$")
    _index(lines, rf"demo-leader +lease released \(fence \.\.{m[2]}\)$")
    _index(lines, r"^fences are shown by their last 4 digits")

    # Something happens to the end: no silent stretch (beats every second, the worker
    # every two), until the timer's stop.
    times = [t for t, _, _ in narrated[: [text for _, _, text in narrated].index(
        "4s elapsed: sup.stop()"
    ) + 1]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 2.0, narrated

    summary = "\n".join(lines[_index(lines, r"^summary$"):])
    # The singleton leader: this demo is alone with its lease directory, so it leads.
    assert _index(lines, r"demo-leader +campaigning") < _index(
        lines, r"demo-leader +holding the lease"
    ) < _index(lines, r"demo-leader +started$")
    assert re.search(rf"leader: +led with fence \.\.{m[2]}\n", summary), summary
    assert re.search(r"tasks run: +10 \(13 attempts\), and 30 batch items", summary), summary
    assert re.search(r"restarts: +3\n", summary), summary
    assert re.search(r"failures seen: +3 failed attempts, 0 tasks failed for good", summary)
    assert re.search(r"stopped by: +--duration 4s elapsed$", summary), summary


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_cleanly_on_a_signal(signum: signal.Signals, tmp_path: Path) -> None:
    with Demo("--duration", "30", cwd=tmp_path, env=_env(tmp_path)) as demo:
        demo.wait_for(r"^supervisor 'demo'")  # the demo ends by itself after 30 s
        demo.proc.send_signal(signum)
        status, out, err = demo.finish()
    assert status == 0, f"{out}\n--- stderr ---\n{err}"
    assert err == ""
    lines = out.splitlines()
    _check_fits(lines)
    assert re.search(rf"stopped by: +received {signum.name}$", out), out
    assert re.search(rf"\bprinter +ended: cancelled \(Stopped: received {signum.name}\)", out), out
    # Every task that was cancelled says why: the signal.
    ended = [text for _, _, text in _narration(lines) if text.startswith("ended: cancelled")]
    assert ended
    assert all(text.endswith(f"(Stopped: received {signum.name})") for text in ended), ended
    assert "elapsed: sup.stop()" not in out  # the signal stopped it, not the timer


@pytest.mark.slow
def test_a_second_signal_gives_up_in_one_line_not_a_traceback(tmp_path: Path) -> None:
    # `timeout -s INT 3 python -m corral demo` signals the demo twice (the process, and
    # its process group): the second one, while stopping, makes serve() give up.
    with Demo("--duration", "30", cwd=tmp_path, env=_env(tmp_path)) as demo:
        demo.wait_for(r"^supervisor 'demo'")
        demo.proc.send_signal(signal.SIGINT)
        demo.proc.send_signal(signal.SIGINT)
        status, out, err = demo.finish()
    assert err == "", err
    lines = out.splitlines()
    _check_fits(lines)
    summary = "\n".join(lines[_index(lines, r"^summary$"):])
    if re.search(r"demo +gave up waiting \(second signal\) for: ", out):
        assert status == 1, out
        assert re.search(r"stopped by: +received SIGINT, then gave up waiting$", summary), out
    else:  # the stop was over before the second signal came
        assert status == 0, out
        assert re.search(r"stopped by: +received SIGINT$", summary), out


@pytest.mark.slow
def test_ctrl_c_while_a_task_waits_to_restart_says_why_and_counts_restarts(
    tmp_path: Path,
) -> None:
    # flaky's third restart waits about 0.4 s: Ctrl-C then cancels it in BACKOFF. It
    # ends with the stop's cause (not "the attempt ended"), and the summary counts the
    # restarts that happened.
    with Demo("--duration", "30", cwd=tmp_path, env=_env(tmp_path)) as demo:
        third = demo.wait_for(r"flaky +started \(attempt 3\)$")
        demo.wait_for(r"flaky +restarting in", start=third)
        demo.proc.send_signal(signal.SIGINT)
        status, out, err = demo.finish()
    assert status == 0, f"{out}\n--- stderr ---\n{err}"
    assert err == ""
    lines = out.splitlines()
    _check_fits(lines)
    _index(lines, r"flaky +ended: cancelled \(Stopped: received SIGINT\)$")
    assert "attempt ended" not in out
    ran = len([x for x in lines if re.search(r"flaky +started \(attempt \d\)$", x)])
    summary = "\n".join(lines[_index(lines, r"^summary$"):])
    if ran == 2:  # (as good as always: the signal came during the backoff)
        assert re.search(r"restarts: +2 \(and 1 cancelled in its backoff\)\n", summary), summary
    else:  # the machine was slow enough for the fourth attempt to start first
        assert re.search(rf"restarts: +{ran}\n", summary), summary
    assert re.search(r"stopped by: +received SIGINT$", summary), summary


@pytest.mark.slow
def test_two_demos_one_leads_the_other_says_who_and_takes_over(tmp_path: Path) -> None:
    # The README's "start two demos": both campaign for the leader's lease; one leads,
    # the other says who leads while it waits, and when the leader stops (SIGTERM: it
    # releases the lease) the other takes over with a higher fence.
    env = _env(tmp_path / "leases")
    with Demo("--duration", "30", cwd=tmp_path, env=env) as first:
        held = first.wait_for(r"demo-leader +holding the lease: fence (\d+)")
        fence = re.search(r"fence (\d+)", first.lines[held])
        assert fence
        with Demo("--duration", "30", cwd=tmp_path, env=env) as other:
            campaign = other.wait_for(r"demo-leader +campaigning for its lease")
            waiting = other.wait_for(r"demo-leader +waiting: ", start=campaign)
            who = f"{platform.node()}:{first.proc.pid}"
            assert other.lines[waiting].endswith(
                f"waiting: {who} leads (fence {short_fence(int(fence[1]))})"
            ), other.lines[waiting]
            first.proc.send_signal(signal.SIGTERM)
            took = other.wait_for(r"demo-leader +holding the lease: fence (\d+)", start=waiting)
            second = re.search(r"fence (\d+)", other.lines[took])
            assert second
            assert int(second[1]) > int(fence[1])
            other.proc.send_signal(signal.SIGTERM)
            results = [first.finish(), other.finish()]
    for status, out, err in results:
        assert status == 0, f"{out}\n--- stderr ---\n{err}"
        assert err == ""
        _check_fits(out.splitlines())
    led, took_over = (out for _, out, _ in results)
    assert re.search(rf"leader: +led with fence \.\.{fence[1][-4:]}$", led, re.M), led
    assert re.search(rf"leader: +led with fence \.\.{second[1][-4:]}$", took_over, re.M)


@pytest.mark.slow
def test_demo_on_redis_leads_within_its_duration(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A new lease name on Redis is first granted after one ttl: with the default ttl
    # (10 s) a demo of the default duration (8 s) would never lead. The demo uses 2 s.
    with Demo("--coordinator", redis_server.url, cwd=tmp_path, env=_env()) as demo:
        demo.wait_for(rf"^demo-leader's lease: RedisCoordinator\(.*\), ttl {REDIS_TTL:g}s$")
        held = demo.wait_for(r"demo-leader +holding the lease")  # before the 8 s are up
        demo.wait_for(r"demo-leader +leading \(fence \.\.\d{4}\), beat 1$", start=held)
        demo.proc.send_signal(signal.SIGTERM)
        status, out, err = demo.finish()
    assert status == 0, f"{out}\n--- stderr ---\n{err}"
    assert err == ""
    lines = out.splitlines()
    _check_fits(lines)
    [(seconds, _, _)] = [n for n in _narration(lines) if n[2].startswith("holding the lease")]
    assert seconds < 8
    _index(lines, r"leader: +led with fence \.\.\d{4}$")


def test_demo_coordinator_takes_a_directory_or_a_redis_url_with_a_short_ttl(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 2 * REDIS_TTL < 8  # leads, and can take over, within the default duration
    monkeypatch.delenv("CORRAL_COORDINATOR", raising=False)
    for spec in (redis_server.url, None):
        if spec is None:
            monkeypatch.setenv("CORRAL_COORDINATOR", redis_server.url)
        leases = demo_coordinator(spec)
        try:
            assert isinstance(leases, corral.RedisCoordinator)
            assert leases.ttl == REDIS_TTL
        finally:
            leases.close()
    files = demo_coordinator(str(tmp_path))
    assert isinstance(files, corral.FileCoordinator)
    assert files.directory == tmp_path
    with pytest.raises(ValueError, match="unknown coordinator URL scheme 'foo'"):
        demo_coordinator("foo://x")


def test_a_bad_coordinator_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("corral")
    level = logger.level
    try:
        assert main(["demo", "--coordinator", "foo://x"]) == 2
    finally:
        logger.setLevel(level)
    err = capsys.readouterr().err
    assert err.startswith("corral demo: unknown coordinator URL scheme 'foo'")
    assert err.count("\n") == 1


def test_main_runs_the_demo_in_process(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # In a thread other than the main one, its supervisor leaves the signals alone.
    logger = logging.getLogger("corral")
    level = logger.level
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(main(
        ["demo", "--duration", "1.5", "--coordinator", str(tmp_path)]
    )))
    try:
        runner.start()
        runner.join(30)
    finally:
        logger.setLevel(level)  # the demo keeps only corral's errors
    assert not runner.is_alive()
    text = capsys.readouterr().out
    assert status == [0], text
    _check_fits(text.splitlines())
    assert re.search(r"\bdb +ready", text), text
    assert re.search(r"stopped by: +--duration 1.5s elapsed$", text), text
    assert not any(isinstance(g, corral.Supervisor) for g in corral.roots())


def test_run_demo_writes_to_the_output_it_is_given(tmp_path: Path) -> None:
    out = io.StringIO()
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(run_demo(0.2, out, str(tmp_path))))
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    assert status == [0]
    assert out.getvalue().startswith("corral demo: a supervisor for 0.2s")
    assert re.search(r"stopped by: +--duration 0.2s elapsed$", out.getvalue())


def test_narrator_cuts_a_line_to_80_columns() -> None:
    out = io.StringIO()
    narrator = Narrator(out)
    narrator.say("web", "x" * 200)
    narrator.write("short\n" + "y" * 81)
    first, short, last = out.getvalue().splitlines()
    assert len(first) == WIDTH
    assert first.endswith("x...")
    assert re.match(r"^ +\d+\.\d\ds  web {9}xxx", first), first
    assert short == "short"
    assert last == "y" * 77 + "..."


def test_short_fences_keep_the_last_four_digits() -> None:
    assert short_fence(1796153546637312) == "..7312"
    assert short_fence(1234) == "1234"
    assert short_fence(7) == "7"


@pytest.mark.slow
def test_demo_stops_quietly_when_its_output_is_closed(tmp_path: Path) -> None:
    # `python -m corral demo | head -3`: no traceback, and no waiting out the duration.
    proc = subprocess.Popen(
        [*DEMO, "--duration", "30"], cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("corral demo:")
        proc.stdout.close()
        _, err = proc.communicate(timeout=20)  # well before the 30 s duration
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""


# -- the command line ------------------------------------------------------------------


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: corral")
    assert re.search(r"^ +demo +run a small supervised service", out, re.MULTILINE), out
    assert "--version" in out


def test_version_prints_corral_and_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"corral {corral.__version__}\n"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "inf", "nan"])
def test_demo_duration_must_be_a_positive_number(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--duration", bad])
    assert exc.value.code == 2
    assert "--duration" in capsys.readouterr().err


def test_the_corral_script_is_main() -> None:
    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"] == {"corral": "corral.__main__:main"}


@pytest.mark.slow
def test_python_m_corral_help_and_version_run(tmp_path: Path) -> None:
    for flag, expected in (("--help", "demo"), ("--version", f"corral {corral.__version__}\n")):
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-m", "corral", flag], cwd=tmp_path, env=_env(),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stdout
        assert proc.stderr == ""
    assert proc.stdout == expected  # --version prints exactly "corral <version>"


# -- format_tree -----------------------------------------------------------------------


def _task(name: str, state: str = "running", **extra: object) -> dict[str, object]:
    task: dict[str, object] = {
        "name": name, "state": state, "attempts": 1, "last_error": None, "meta": {},
        "background": False, "children": [],
    }
    task.update(extra)
    return task


def test_format_tree_draws_groups_tasks_and_details() -> None:
    snapshot = {
        "name": "svc", "kind": "supervisor", "state": "running", "limit": None,
        "tasks": [
            _task("flaky", "backoff", attempts=2, last_error=ConnectionError("refused")),
            _task("batch", children=[
                {"name": "items", "kind": "group", "state": "running", "limit": 3, "tasks": [
                    _task("item-1"),
                    _task("item-22", "pending", attempts=0),
                ]},
            ]),
            _task("tick", background=True, meta={"shard": 3, "zone": "eu"}),
        ],
    }
    assert format_tree(snapshot) == "\n".join([
        "supervisor 'svc' (running)",
        "|-- flaky  backoff    attempts=2  last_error=ConnectionError('refused')",
        "|-- batch  running    attempts=1",
        "|   `-- group 'items' (running, limit=3)",
        "|       |-- item-1   running    attempts=1",
        "|       `-- item-22  pending",
        "`-- tick   running    attempts=1  shard=3  zone=eu  background",
    ])


def test_format_tree_of_a_group_without_tasks() -> None:
    snapshot = {"name": "g", "kind": "group", "state": "closed", "limit": 2, "tasks": []}
    assert format_tree(snapshot) == "group 'g' (closed, limit=2)"


def test_format_tree_nests_children_of_a_task_that_is_not_last() -> None:
    inner = {"name": "in", "kind": "group", "state": "running", "limit": None,
             "tasks": [_task("a"), _task("b")]}
    snapshot = {"name": "out", "kind": "group", "state": "running", "limit": None,
                "tasks": [_task("p", children=[inner, dict(inner, name="in2", tasks=[])]),
                          _task("q")]}
    assert format_tree(snapshot).splitlines() == [
        "group 'out' (running)",
        "|-- p  running    attempts=1",
        "|   |-- group 'in' (running)",
        "|   |   |-- a  running    attempts=1",
        "|   |   `-- b  running    attempts=1",
        "|   `-- group 'in2' (running)",
        "`-- q  running    attempts=1",
    ]


def test_format_tree_max_tasks_sums_up_the_rest() -> None:
    states = ["running", "running", "pending", "running", "pending", "pending"]
    snapshot = {"name": "g", "kind": "group", "state": "running", "limit": 3,
                "tasks": [_task(f"t{i}", s) for i, s in enumerate(states)]}
    assert format_tree(snapshot, max_tasks=2).splitlines() == [
        "group 'g' (running, limit=3)",
        "|-- t0  running    attempts=1",
        "|-- t1  running    attempts=1",
        "`-- ... 4 more: 3 pending, 1 running",
    ]
    assert format_tree(snapshot, max_tasks=0).splitlines()[1:] == [
        "`-- ... 6 more: 3 running, 3 pending",
    ]
    assert len(format_tree(snapshot, max_tasks=6).splitlines()) == 7
    with pytest.raises(ValueError, match="max_tasks"):
        format_tree(snapshot, max_tasks=-1)


def test_format_tree_cuts_long_errors_and_pads_names_up_to_a_width() -> None:
    long_name = "n" * 50
    snapshot = {"name": "g", "kind": "group", "state": "running", "limit": None,
                "tasks": [_task("a", last_error=ValueError("x" * 200)), _task(long_name)]}
    first, second = format_tree(snapshot).splitlines()[1:]
    error = first.split("last_error=", 1)[1]
    assert len(error) == 80
    assert error.startswith("ValueError('xxx")
    assert error.endswith("...")
    assert first.startswith("|-- a" + " " * 31 + "  running")  # padded to 32, not 50
    assert second.startswith(f"`-- {long_name}  running")


def test_format_tree_of_live_groups() -> None:
    gate = threading.Event()
    leaf_runs = threading.Event()

    def leaf() -> None:
        leaf_runs.set()
        gate.wait(10)

    def parent() -> None:
        with corral.Group("inner", limit=2) as inner:
            inner.spawn(leaf, name="leaf")

    with corral.Group("outer") as outer:
        try:
            outer.spawn(parent, name="parent", meta={"k": 1})
            assert leaf_runs.wait(10)
            text = format_tree(outer.snapshot())
        finally:
            gate.set()
    assert text == "\n".join([
        "group 'outer' (running)",
        "`-- parent  running    attempts=1  k=1",
        "    `-- group 'inner' (running, limit=2)",
        "        `-- leaf  running    attempts=1",
    ])


def test_format_tree_of_a_supervisor_not_started() -> None:
    sup = corral.Supervisor("queued", handle_signals=False)
    try:
        sup.spawn(print, name="job")
        assert format_tree(sup.snapshot()) == "supervisor 'queued' (not started)\n`-- job  pending"
    finally:
        sup.stop()
