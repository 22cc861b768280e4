"""``python -m corral demo`` (run in subprocesses), the command line, and format_tree."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

import corral
from corral.__main__ import main
from corral._demo import run_demo
from corral._tree import format_tree

SRC = Path(corral.__file__).resolve().parent.parent
DEMO = [sys.executable, "-W", "error", "-m", "corral", "demo"]


def _env(leases: Path | None = None) -> dict[str, str]:
    """The demo's environment; ``leases``: its own lease directory (the leader's lock
    file), so that no other demo on the machine holds the lease."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    if leases is not None:
        env["CORRAL_COORDINATOR"] = str(leases)
    return env


def _index(lines: list[str], pattern: str) -> int:
    """Index of the first line matching ``pattern`` (fails the test if none does)."""
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(lines))


# -- the demo, start to end ------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_for_its_duration_and_shows_what_corral_does(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*DEMO, "--duration", "3"], cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n--- stderr ---\n{proc.stderr}"
    assert proc.stderr == ""
    lines = out.splitlines()

    # A flaky task restarted with backoff: three failed attempts, then it stays up.
    assert len([x for x in lines if re.search(r"flaky +failed: ConnectionError", x)]) == 3
    assert len([x for x in lines if re.search(r"flaky +restarting in \d+\.\d\ds", x)]) == 3
    assert _index(lines, r"flaky +restarting in") < _index(lines, r"flaky +started \(attempt 2\)")
    _index(lines, r"flaky +connected")

    # A bounded group working through the batch, with progress.
    assert _index(lines, r"batch +processed 6/30") < _index(lines, r"batch +processed 30/30")
    _index(lines, r"batch +ended: succeeded")

    # web needs db: it starts only once db said it was ready.
    assert _index(lines, r"\bdb +ready") < _index(lines, r"\bweb +started")

    # The replaced worker ends with Replaced, before its replacement starts.
    replaced = _index(lines, r"worker v1 +stopping, cancelled by Replaced\(")
    assert replaced < _index(lines, r"worker v2 +started")
    _index(lines, r"worker v1 +ended: cancelled \(Replaced: ")

    # The tree, printed as it changes.
    _index(lines, r"^supervisor 'demo' \(running\)$")
    _index(lines, r"^\|-- flaky ")

    # The timer stops it; on stop, web has ended before db is cancelled.
    stop = _index(lines, r"timer +3s elapsed: sup.stop\(\)")
    assert stop < _index(lines, r"\bweb +ended: cancelled \(Stopped") < _index(
        lines, r"\bdb +ended: cancelled \(Stopped"
    )

    summary = "\n".join(lines[_index(lines, r"^summary$"):])
    # The singleton leader: this demo is alone with its lease directory, so it leads.
    assert _index(lines, r"corral-demo-leader campaigning") < _index(
        lines, r"corral-demo-leader holding the lease: fence \d+, owner "
    ) < _index(lines, r"leader +leading \(fence \d+\), beat 1")
    _index(lines, r"corral-demo-leader lease released \(fence \d+\)")
    assert re.search(r"leader: +led with fence \d+\n", summary), summary
    assert re.search(r"tasks run: +10 \(13 attempts\), and 30 batch items", summary), summary
    assert re.search(r"restarts: +3\n", summary), summary
    assert re.search(r"failures seen: +3 failed attempts, 0 tasks failed for good", summary)
    assert re.search(r"stopped by: +--duration 3s elapsed$", summary), summary


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_cleanly_on_a_signal(signum: signal.Signals, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*DEMO, "--duration", "30"], cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:  # the demo ends by itself after 30 s: this cannot hang
            seen.append(line)
            if line.startswith("supervisor 'demo'"):
                break
        else:
            raise AssertionError("the demo never printed its tree:\n" + "".join(seen))
        proc.send_signal(signum)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = "".join(seen) + rest
    assert proc.returncode == 0, f"{out}\n--- stderr ---\n{err}"
    assert err == ""
    assert re.search(rf"stopped by: +received {signum.name}$", out), out
    assert re.search(rf"\bprinter +ended: cancelled \(Stopped: received {signum.name}\)", out), out
    assert "elapsed: sup.stop()" not in out  # the signal stopped it, not the timer


@pytest.mark.slow
def test_two_demos_one_leads_and_the_other_takes_over_when_it_stops(tmp_path: Path) -> None:
    # The README's "start two demos": both campaign for the leader's lease; one leads,
    # and when it stops (SIGTERM: it releases the lease) the other takes over.
    procs = [
        subprocess.Popen(
            [*DEMO, "--duration", "30"], cwd=tmp_path, env=_env(tmp_path / "leases"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    try:
        lines: list[list[str]] = [[], []]
        leads: list[int] = []
        done = threading.Event()

        def read(i: int) -> None:
            out = procs[i].stdout
            assert out is not None
            for line in out:  # ends with the process (at most 30 s)
                lines[i].append(line)
                if "holding the lease" in line:
                    leads.append(i)
                    done.set()

        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in (0, 1)]
        for r in readers:
            r.start()
        assert done.wait(20), "no demo took the lease"
        first = leads[0]
        other = 1 - first
        done.clear()
        procs[first].send_signal(signal.SIGTERM)
        assert done.wait(20), "the other demo did not take over:\n" + "".join(lines[other])
        assert leads == [first, other]
        procs[other].send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        for r in readers:
            r.join(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
    assert [p.returncode for p in procs] == [0, 0]
    led = "".join(lines[first])
    took_over = "".join(lines[other])
    first_fence = re.search(r"leader: +led with fence (\d+)$", led, re.M)
    assert first_fence, led
    assert f"holding the lease: fence {first_fence[1]}, " in led
    # The other one waited (campaigning), then took over with a higher fence.
    second_fence = re.search(r"leader: +led with fence (\d+)$", took_over, re.M)
    assert second_fence, took_over
    assert int(second_fence[1]) > int(first_fence[1])
    assert took_over.index("campaigning for its lease") < took_over.index(
        f"holding the lease: fence {second_fence[1]}"
    )


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
    assert re.search(r"\bdb +ready", text), text
    assert re.search(r"stopped by: +--duration 1.5s elapsed$", text), text
    assert not any(isinstance(g, corral.Supervisor) for g in corral.roots())


def test_run_demo_writes_to_the_output_it_is_given() -> None:
    out = io.StringIO()
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(run_demo(0.2, out)))
    runner.start()
    runner.join(30)
    assert not runner.is_alive()
    assert status == [0]
    assert out.getvalue().startswith("corral demo: a supervisor for 0.2s")
    assert re.search(r"stopped by: +--duration 0.2s elapsed$", out.getvalue())


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
def test_python_m_corral_help_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "corral", "--help"], cwd=tmp_path, env=_env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout


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
