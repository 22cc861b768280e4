"""Where the time of a coroutine task goes: corral's spawn and run split into parts,
beside asyncio.TaskGroup and beside a floor (what any supervised coroutine task with
corral's handle would cost).

    python benchmarks/aio_parts.py            # 20,000 no-op coroutines, 5 rounds
    python benchmarks/aio_parts.py --quick
    python benchmarks/aio_parts.py --uvloop   # on uvloop's loop

A diagnostic, not a benchmark with goals (``aio.py`` has those): it swaps corral's
internals for cut-down ones to time the parts, so its figures describe this version of
corral only. The cyclic collector is off while it measures (its share depends on how
many objects are alive, and would blur the split); medians of interleaved rounds, µs
per task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import itertools
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import corral
from corral import _aio, _driver
from corral._record import TaskState


async def noop() -> None:
    pass


# -- corral, whole and cut down ------------------------------------------------------------


async def _attempt_without_start(runner: Any, task: Any) -> None:
    """An attempt without its start (no RUNNING bookkeeping, token hook, current task or
    on_started) and without cancel delivery: the user's coroutine, then the real end."""
    value = await task.fn(*task.args)
    released = _driver.end_attempt(task._life, task, TaskState.SUCCEEDED, value, None)
    if released:
        _driver.start(task._life, released)


async def _attempt_bare(runner: Any, task: Any) -> None:
    """The user's coroutine and the least end a group's join can see."""
    await task.fn(*task.args)
    life = task._life
    with life.lock:
        del life.unfinished[task]
        life.live.pop(task.name, None)
        life.foreground -= 1
        life.notify()


ATTEMPTS: dict[str, Callable[..., Awaitable[None]]] = {
    "whole": _aio._attempt,
    "without start": _attempt_without_start,
    "bare": _attempt_bare,
}


async def _spawned(n: int) -> tuple[corral.AsyncGroup, float]:
    """An entered group with ``n`` no-op coroutines spawned, and µs per spawn."""
    g = corral.AsyncGroup()
    await g.__aenter__()
    t0 = time.perf_counter()
    for _ in range(n):
        g.spawn(noop)
    return g, (time.perf_counter() - t0) / n * 1e6


async def corral_parts(n: int, attempt: str) -> tuple[float, float]:
    """(spawn, run and join) of ``n`` no-op coroutines, with ``attempt`` as the attempt."""
    _aio._attempt = ATTEMPTS[attempt]  # type: ignore[assignment]
    try:
        g, spawn = await _spawned(n)
        t0 = time.perf_counter()
        await g.__aexit__(None, None, None)
        run = (time.perf_counter() - t0) / n * 1e6
    finally:
        _aio._attempt = ATTEMPTS["whole"]  # type: ignore[assignment]
    return spawn, run


async def corral_bookkeeping(n: int) -> float:
    """A spawn up to the runner: checks, name, handle and token, the add under the lock
    (the runner's start is replaced by one that starts nothing; the tasks then end
    without running)."""
    start = _aio.AsyncioRunner.start
    _aio.AsyncioRunner.start = lambda self, life, tasks: None  # type: ignore[method-assign]
    try:
        g, took = await _spawned(n)
    finally:
        _aio.AsyncioRunner.start = start  # type: ignore[method-assign]
    runner = g._coroutine_runner()
    assert isinstance(runner, _aio.AsyncioRunner)
    for task in g.tasks:
        runner._cannot_run(g._life, task, corral.Cancelled("not run: a benchmark"))
    await g.__aexit__(None, None, None)
    return took


async def taskgroup_parts(n: int) -> tuple[float, float]:
    tg = asyncio.TaskGroup()
    await tg.__aenter__()
    t0 = time.perf_counter()
    for _ in range(n):
        tg.create_task(noop())
    t1 = time.perf_counter()
    await tg.__aexit__(None, None, None)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


# -- a floor --------------------------------------------------------------------------------


def _record_class(slots: int) -> type:
    """A class with ``slots`` slots and an __init__ that sets them all (as the handle's
    does), the last three to the function, its arguments and the name."""
    names = [f"s{i}" for i in range(slots)]
    body = "".join(f"    self.{name} = None\n" for name in names[:-3])
    src = (
        f"def __init__(self, fn, args, name):\n{body}"
        f"    self.{names[-3]} = fn\n    self.{names[-2]} = args\n    self.{names[-1]} = name\n"
    )
    namespace: dict[str, Any] = {}
    exec(src, namespace)
    return type(f"Record{slots}", (), {"__slots__": tuple(names), "__init__": namespace["__init__"]})


_current: contextvars.ContextVar[Any] = contextvars.ContextVar("current")


class FloorGroup:
    """A minimal supervised group: a record per task in two dicts, a lock section at the
    add and one at the end, a context copy per task, a wrapper coroutine that sets the
    current task, awaits the user's and notes its end."""

    def __init__(self, record: type) -> None:
        self.record = record
        self.lock = threading.Lock()
        self.live: dict[str, Any] = {}
        self.unfinished: dict[Any, None] = {}
        self.seq = itertools.count(1)
        self.done: asyncio.Future[None] | None = None

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> Any:
        name = f"noop#{next(self.seq)}"
        rec = self.record(fn, (), name)
        self.add(name, rec)
        ctx = contextvars.copy_context()
        asyncio.get_running_loop().create_task(self._run(rec, fn, name), name=name, context=ctx)
        return rec

    async def _run(self, rec: Any, fn: Callable[[], Awaitable[None]], name: str) -> None:
        _current.set(rec)
        await fn()
        self.end(name, rec)

    def add(self, name: str, rec: Any) -> None:
        with self.lock:
            self._added(name, rec)

    def end(self, name: str, rec: Any) -> None:
        with self.lock:
            self._ended(name, rec)

    def _added(self, name: str, rec: Any) -> None:
        self.live[name] = rec
        self.unfinished[rec] = None

    def _ended(self, name: str, rec: Any) -> None:
        del self.live[name]
        del self.unfinished[rec]
        if not self.unfinished and self.done is not None:
            self.done.set_result(None)

    async def join(self) -> None:
        if self.unfinished:
            self.done = asyncio.get_running_loop().create_future()
            await self.done


class LoopFloorGroup(FloorGroup):
    """The floor without its lock: a group whose state only its loop's thread touches
    (what a loop-confined lifecycle would cost; corral's is shared with threads)."""

    add = FloorGroup._added
    end = FloorGroup._ended


async def wrapped_taskgroup(n: int) -> float:
    """``TaskGroup`` with a wrapper coroutine around each task's (as corral's attempt)."""

    async def wrapper(fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except BaseException:
            raise

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(wrapper(noop))
    return (time.perf_counter() - t0) / n * 1e6


async def floor(n: int, slots: int, group: type[FloorGroup] = FloorGroup) -> float:
    g = group(_record_class(slots))
    t0 = time.perf_counter()
    for _ in range(n):
        g.spawn(noop)
    await g.join()
    return (time.perf_counter() - t0) / n * 1e6


# -- the table ------------------------------------------------------------------------------


async def measure(n: int, rounds: int) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    await corral_parts(100, "whole")  # (warm: imports, the loop's first task)
    for _ in range(rounds):
        for attempt in ATTEMPTS:
            spawn, run = await corral_parts(n, attempt)
            if attempt == "whole":
                note("corral: spawn", spawn)
                note("corral: spawn + run + join", spawn + run)
            note(f"corral: run + join, attempt {attempt}", run)
            gc.collect()
        note("corral: spawn up to the runner", await corral_bookkeeping(n))
        gc.collect()
        spawn, run = await taskgroup_parts(n)
        note("TaskGroup: spawn (create_task)", spawn)
        note("TaskGroup: run + join", run)
        note("TaskGroup: spawn + run + join", spawn + run)
        gc.collect()
        note("TaskGroup + a wrapper coroutine: spawn + run + join", await wrapped_taskgroup(n))
        gc.collect()
        for slots in (6, 56):
            note(f"floor, {slots}-slot record: spawn + run + join", await floor(n, slots))
            gc.collect()
            note(
                f"floor, {slots}-slot record, no lock: spawn + run + join",
                await floor(n, slots, LoopFloorGroup),
            )
            gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 coroutines, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--uvloop", action="store_true", help="on uvloop's loop")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    rounds = args.rounds or (3 if args.quick else 5)
    gc.disable()
    try:
        if args.uvloop:
            import uvloop

            rows = uvloop.run(measure(n, rounds))
        else:
            rows = asyncio.run(measure(n, rounds))
    finally:
        gc.enable()
    tg = statistics.median(rows["TaskGroup: spawn + run + join"])
    loop = "uvloop" if args.uvloop else "the default loop"
    print(f"corral {corral.__version__} on Python {sys.version.split()[0]}, {loop}: {n:,} no-op "
          f"coroutines, median of {rounds} rounds, collector off (µs per task)")
    for key, values in rows.items():
        value = statistics.median(values)
        ratio = f"  {value / tg:.2f}x TaskGroup" if key.endswith("spawn + run + join") else ""
        print(f"  {key:58} {value:7.2f}{ratio}")


if __name__ == "__main__":
    main()
