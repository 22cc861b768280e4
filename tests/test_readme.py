"""The README's examples run: each ```python block, alone, in a fresh interpreter.

A block that is not meant to run alone is marked by a ``<!-- no-test -->`` line just
before it (keep those few).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import corral

README = Path(__file__).resolve().parent.parent / "README.md"
SRC = Path(corral.__file__).resolve().parent.parent
NO_TEST = "<!-- no-test -->"


def _blocks(language: str) -> list[tuple[int, str, bool]]:
    """(first line number, code, marked no-test) of each fenced block in ``language``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[tuple[int, str, bool]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            end = lines.index("```", i + 1)
            before = [line.strip() for line in lines[:i] if line.strip()]
            marked = bool(before) and before[-1] == NO_TEST
            blocks.append((i + 2, "\n".join(lines[i + 1 : end]) + "\n", marked))
            i = end
        i += 1
    return blocks


PYTHON_BLOCKS = [(line, code) for line, code, marked in _blocks("python") if not marked]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize(
    ("line", "code"), PYTHON_BLOCKS, ids=[f"README.md:{line}" for line, _ in PYTHON_BLOCKS]
)
def test_example_runs(line: int, code: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, (
        f"README.md block at line {line} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def test_the_tour_is_tested() -> None:
    # Most examples run; only a few may opt out.
    all_python = _blocks("python")
    assert len(PYTHON_BLOCKS) >= 15
    assert sum(marked for _, _, marked in all_python) <= 3


def test_quick_start_begins_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1]
    first_block = quick_start.split("```sh\n", 1)[1].split("```", 1)[0]
    # The first command works as written on a fresh machine, Debian's system Python
    # included (it refuses `pip install` outside a virtual environment).
    assert first_block == (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/python -m corral demo\n"
        "./scripts/check.sh\n"
    )
    assert (README.parent / "scripts" / "check.sh").exists()
