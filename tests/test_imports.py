"""What `import corral` loads: only what a plain group needs.

`dataclasses` pulled in `inspect`, `ast` and `dis` (11 ms of 25); the lease modules
(coordinators, file locks, Redis, the campaign) load on first use, each when it is
needed. Times are measured in benchmarks/run.py; these tests pin the modules, which do
not flake.
"""

from __future__ import annotations

import ast
import copy
import json
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import corral


def modules_after(code: str) -> set[str]:
    """The modules loaded by ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


LEASE_MODULES = {
    "corral._coordinator", "corral._file_coordinator", "corral._redis_coordinator",
    "corral._campaign",
}


def test_import_corral_loads_no_dataclasses_inspect_ast_or_hashlib() -> None:
    loaded = modules_after("import corral")
    assert "corral._group" in loaded
    assert not loaded & {"dataclasses", "inspect", "ast", "dis", "hashlib", "tempfile", "socket"}


def test_import_corral_loads_no_typing_and_a_task_is_still_generic() -> None:
    # typing (with contextlib, re's helpers...) is a tenth of the import: corral's
    # modules name it for type checkers only.
    loaded = modules_after("import corral")
    assert "typing" not in loaded
    assert str(corral.Task[int]) == "corral.Task[int]"
    assert typing.get_origin(corral.Task[int]) is corral.Task


def test_what_only_a_stop_a_map_or_a_singleton_needs_loads_on_first_use() -> None:
    loaded = modules_after("import corral")
    assert not loaded & {
        "corral._stopping", "corral._stacks", "corral._collect", "corral._map",
        "corral._singleton", "corral._snapshot",
    }


def test_asyncio_loads_with_the_first_coroutine_task_or_async_name() -> None:
    loaded = modules_after(
        "import corral\nwith corral.Group() as g: g.spawn(print, 'a thread task')"
    )
    assert not loaded & {"asyncio", "corral._aio", "corral._async"}
    loaded = modules_after(
        "import corral\nasync def job(): pass\nwith corral.Group() as g: g.spawn(job)"
    )
    assert {"asyncio", "corral._aio"} <= loaded
    assert "corral._async" in modules_after("import corral\ncorral.AsyncGroup")


def test_signal_handling_loads_with_the_first_supervisor_that_handles_signals() -> None:
    loaded = modules_after("import corral")
    assert not loaded & {"corral._signals", "signal", "queue", "heapq"}
    loaded = modules_after(
        "import corral\nwith corral.Supervisor(handle_signals=False) as s: s.spawn(print)"
    )
    assert "corral._signals" not in loaded
    loaded = modules_after("import corral\nwith corral.Supervisor() as s: s.spawn(print)")
    assert {"corral._signals", "signal"} <= loaded


def test_a_plain_group_does_not_load_the_lease_modules() -> None:
    loaded = modules_after(
        "import corral\n"
        "with corral.Group(limit=2) as g:\n"
        "    g.spawn(print, 'ok')\n"
        "    assert list(g.map(abs, [-1, 2])) == [1, 2]\n"
    )
    assert not loaded & LEASE_MODULES
    assert not loaded & {"dataclasses", "inspect", "pathlib", "urllib.parse", "random"}


def test_the_lease_names_load_on_first_use_and_report_module_corral() -> None:
    loaded = modules_after(
        "from corral import FileCoordinator\n"
        "import corral\n"
        "assert FileCoordinator is corral.FileCoordinator\n"
        "for name in ('Coordinator', 'FileCoordinator', 'Lease', 'RedisCoordinator',"
        " 'current_lease'):\n"
        "    assert getattr(corral, name).__module__ == 'corral', name\n"
        "    assert name in dir(corral)\n"
    )
    assert loaded & LEASE_MODULES == {
        "corral._coordinator", "corral._file_coordinator", "corral._redis_coordinator"
    }
    assert "redis" not in loaded  # (imported when a RedisCoordinator is made)
    with pytest.raises(AttributeError, match="no_such_name"):
        corral.no_such_name  # noqa: B018


def test_a_lease_name_loads_only_the_module_it_needs() -> None:
    loaded = modules_after("from corral import Lease, current_lease")
    assert loaded & LEASE_MODULES == {"corral._coordinator"}


def test_a_singleton_loads_the_lease_modules_by_itself(tmp_path: object) -> None:
    # No lease name touched first: the group loads the modules when a singleton needs them
    # (a file lease: not the Redis backend).
    loaded = modules_after(
        "import corral, sys, tempfile\n"
        "d = tempfile.mkdtemp()\n"
        "with corral.Group(coordinator=d) as g:\n"
        "    t = g.spawn(corral.current_lease, name='one', singleton=True)\n"
        "lease = t.result()\n"
        "assert lease is not None and lease.name == 'one', lease\n"
        "assert type(lease).__module__ == 'corral'\n"
    )
    assert loaded & LEASE_MODULES == {
        "corral._coordinator", "corral._file_coordinator", "corral._campaign"
    }


# -- Backoff and Hooks: frozen records as the dataclasses were ------------------------------


def test_backoff_is_a_frozen_value() -> None:
    b = corral.Backoff(initial=1, jitter=0)
    assert b == corral.Backoff(1, 30.0, 2.0, 0, 60.0)  # positional, in field order
    assert b != corral.Backoff(initial=2, jitter=0)
    assert b != (1, 30.0, 2.0, 0, 60.0)
    assert hash(b) == hash(corral.Backoff(initial=1, jitter=0))
    assert repr(b) == "Backoff(initial=1, maximum=30.0, multiplier=2.0, jitter=0, reset_after=60.0)"
    with pytest.raises(AttributeError, match="initial"):
        b.initial = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="jitter"):
        del b.jitter
    with pytest.raises(AttributeError):
        b.other = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(b)) == b
    assert copy.copy(b) == b
    assert copy.deepcopy(b) == b
    assert b.__replace__(maximum=5) == corral.Backoff(initial=1, maximum=5, jitter=0)
    with pytest.raises(TypeError, match="nope"):
        b.__replace__(nope=1)
    with pytest.raises(ValueError, match="multiplier"):
        b.__replace__(multiplier=0.5)  # checked like a new one
    match b:
        case corral.Backoff(initial, maximum):
            assert (initial, maximum) == (1, 30.0)
        case _:  # pragma: no cover
            pytest.fail("no match")


def finished(task: corral.Task[object]) -> None:
    pass


def test_hooks_is_a_frozen_value() -> None:
    h = corral.Hooks(on_added=print)
    assert h == corral.Hooks(print)
    assert h.on_finished is None
    assert hash(h) == hash(corral.Hooks(on_added=print))
    assert repr(h).startswith("Hooks(on_added=<built-in function print>, on_started=None")
    with pytest.raises(AttributeError):
        h.on_added = None  # type: ignore[misc]
    both = h.__replace__(on_finished=finished)
    assert both.on_added is print
    assert both.on_finished is finished
    assert pickle.loads(pickle.dumps(both)) == both
    with pytest.raises(TypeError, match="on_started"):
        corral.Hooks(on_started=42)  # type: ignore[arg-type]


def test_on_finish_joins_the_given_hooks() -> None:
    seen: list[str] = []

    def added(t: corral.Task[object]) -> None:
        seen.append(f"added {t.name}")

    def finished(t: corral.Task[object]) -> None:
        seen.append(f"finished {t.name}")

    with corral.Group(hooks=corral.Hooks(on_added=added), on_finish=finished) as g:
        g.spawn(lambda: None, name="t")
    assert seen == ["added t", "finished t"]
    assert g.hooks == corral.Hooks(on_added=added, on_finished=finished)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="copy.replace is new in 3.13")
def test_copy_replace_works_on_backoff_and_hooks() -> None:
    replace = getattr(copy, "replace")  # noqa: B009 - (3.13+; typeshed of 3.11 lacks it)
    assert replace(corral.Backoff(), initial=2).initial == 2
    assert replace(corral.Hooks(), on_added=print).on_added is print


def _imports_of(path: Path) -> set[str]:
    """corral's modules that ``path`` imports at run time: at the top or inside a
    function, not under ``if TYPE_CHECKING:`` (only type checkers read those)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:  # (the else branch runs)
                visit(other)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_the_modules_import_one_another_without_a_cycle() -> None:
    # Function-level imports count: a lazy import that closes a cycle still ties the
    # two modules together. (The asyncio support once did: _token -> _aio -> _threads
    # -> _singleton -> _lazy -> _campaign -> _coordinator -> _token.)
    src = Path(corral.__file__).parent
    graph = {p.stem: _imports_of(p) - {p.stem} for p in src.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        for other in sorted(graph.get(module, ())):
            visit(other, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
