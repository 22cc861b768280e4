"""Coroutine tasks: corral's AsyncGroup beside asyncio.TaskGroup and its peers.

    python benchmarks/aio.py            # 20,000 coroutines, 5 interleaved rounds
    python benchmarks/aio.py --quick    # smaller, for a smoke run

Per task, medians of interleaved rounds, on the default loop and on uvloop (if
installed): spawn + join of no-op coroutines through ``corral.AsyncGroup`` against
``asyncio.TaskGroup``, anyio's task group and aiojobs (when installed: ``pip install
'corral[bench]'``), unlimited and at a limit of 8. Not a test: nothing asserts; the
table says whether each goal was met.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import corral

# The peers are optional (`pip install 'corral[bench]'`): the ignores hold whether or not
# they are installed where mypy runs.
try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None  # type: ignore[assignment, unused-ignore]
try:
    import anyio  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional
    anyio = None  # type: ignore[assignment, unused-ignore]
try:
    import aiojobs  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional
    aiojobs = None  # type: ignore[assignment, unused-ignore]


async def noop() -> None:
    pass


async def corral_group(n: int, limit: int | None) -> None:
    async with corral.AsyncGroup(limit=limit) as g:
        for _ in range(n):
            g.spawn(noop)


async def taskgroup(n: int, limit: int | None) -> None:
    if limit is None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(noop())
        return
    sem = asyncio.Semaphore(limit)

    async def bounded() -> None:
        async with sem:
            await noop()

    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(bounded())


async def anyio_group(n: int, limit: int | None) -> None:
    assert anyio is not None
    if limit is None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(noop)
        return
    lim = anyio.CapacityLimiter(limit)

    async def bounded() -> None:
        async with lim:
            await noop()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(bounded)


async def aiojobs_scheduler(n: int, limit: int | None) -> None:
    assert aiojobs is not None
    scheduler = aiojobs.Scheduler(limit=limit, pending_limit=n)
    jobs = [await scheduler.spawn(noop()) for _ in range(n)]
    for job in jobs:
        await job.wait()
    await scheduler.close()


Bench = Callable[[int, "int | None"], Coroutine[Any, Any, None]]


def per_task_us(
    benches: dict[str, Bench], n: int, limit: int | None, rounds: int, loop_factory: Any
) -> dict[str, float]:
    """Medians of interleaved rounds, µs per task, each round in a fresh loop."""
    times: dict[str, list[float]] = {name: [] for name in benches}
    for _ in range(rounds):
        for name, bench in benches.items():
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(bench(100, limit))  # (warm: imports, first task)
                t0 = time.perf_counter()
                runner.run(bench(n, limit))
                times[name].append((time.perf_counter() - t0) / n * 1e6)
    return {name: statistics.median(ts) for name, ts in times.items()}


# -- memory per live task, in a fresh interpreter each --------------------------------------

MEMORY_SCRIPT = """
import asyncio, json, sys
import corral

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

async def main(kind, n):
    gate = asyncio.Event()
    started = asyncio.Event()
    count = 0

    async def waits():
        nonlocal count
        count += 1
        if count == n:
            started.set()
        await gate.wait()

    base = rss_kib()
    if kind == "corral":
        async with corral.AsyncSupervisor("mem", handle_signals=False) as sup:
            for _ in range(n):
                sup.spawn(waits)
            await started.wait()
            peak = rss_kib()
            gate.set()
    else:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(waits())
            await started.wait()
            peak = rss_kib()
            gate.set()
    print(json.dumps({"per_task_bytes": (peak - base) * 1024 / n}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def memory_per_task(kind: str, n: int) -> float:
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, kind, str(n)],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout)["per_task_bytes"])


async def cancel_tree(n: int) -> float:
    """Seconds to cancel and join ``n`` waiting coroutines in a two-level tree."""
    started = asyncio.Event()
    count = 0

    async def waits() -> None:
        nonlocal count
        count += 1
        if count == n:
            started.set()
        await asyncio.Event().wait()

    async def leaf(k: int) -> None:
        async with corral.AsyncGroup("leaf") as g:
            for _ in range(k):
                g.spawn(waits)

    outer = corral.AsyncGroup("tree")
    async with outer:
        for _ in range(10):
            outer.spawn(leaf, n // 10)
        await started.wait()
        t0 = time.perf_counter()
        outer.cancel()
    return time.perf_counter() - t0


def from_threads(n: int, kind: str) -> float:
    """µs per coroutine spawned from a worker thread into a running loop: corral (a
    blocking group's spawn, which schedules with call_soon_threadsafe) against
    ``asyncio.run_coroutine_threadsafe`` (one future per call)."""
    import threading

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        left = n

        async def one() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done.set()

        async with corral.AsyncGroup("from a thread") as g:  # (bound to this loop)

            def spawner() -> None:
                if kind == "corral":
                    for _ in range(n):
                        g.spawn(one)
                else:
                    for _ in range(n):
                        asyncio.run_coroutine_threadsafe(one(), loop)

            t0 = time.perf_counter()
            th = threading.Thread(target=spawner)
            th.start()
            await done.wait()
            elapsed = time.perf_counter() - t0
            await asyncio.to_thread(th.join)
        return elapsed / n * 1e6

    return asyncio.run(main())


def aio_rows(quick: bool, rounds: int) -> list[tuple[str, str, str, str, str]]:
    """The coroutine rows of ``run.py``'s table: (what, corral, peers, ratio, goal)."""
    n = 2_000 if quick else 20_000
    benches: dict[str, Bench] = {"corral.AsyncGroup": corral_group, "asyncio.TaskGroup": taskgroup}
    if anyio is not None:
        benches["anyio"] = anyio_group
    if aiojobs is not None:
        benches["aiojobs"] = aiojobs_scheduler
    loops: list[tuple[str, Any]] = [("asyncio", None)]
    if uvloop is not None:
        loops.append(("uvloop", uvloop.new_event_loop))
    rows = []
    for loop_name, factory in loops:
        for limit in (None, 8):
            r = per_task_us(benches, n, limit, rounds, factory)
            ratio = r["corral.AsyncGroup"] / r["asyncio.TaskGroup"]
            peers = "; ".join(f"{name} {r[name]:.1f}" for name in benches if name != "corral.AsyncGroup")
            what = f"{n:,} no-op coroutines, {'limit 8' if limit else 'no limit'}, {loop_name} (µs/task)"
            rows.append((what, f"{r['corral.AsyncGroup']:.1f}", peers, f"{ratio:.2f}x TaskGroup",
                         "<= 1.5x" + (" MET" if ratio <= 1.5 else " NOT MET")))
    m = 10_000 if quick else 100_000
    mc = statistics.median(memory_per_task("corral", m) for _ in range(3))
    mt = statistics.median(memory_per_task("taskgroup", m) for _ in range(3))
    rows.append((f"memory per live coroutine, {m:,} waiting (bytes)", f"{mc:.0f}",
                 f"asyncio.TaskGroup {mt:.0f}", f"{mc / mt:.2f}x TaskGroup",
                 "<= 2x" + (" MET" if mc <= 2 * mt else " NOT MET")))
    k = 10_000
    cs = statistics.median(asyncio.run(cancel_tree(k)) for _ in range(rounds))
    rows.append((f"cancel a tree of {k:,} waiting coroutines + join (s)", f"{cs:.3f}", "", "",
                 "< 0.5 s" + (" MET" if cs < 0.5 else " NOT MET")))
    f = 2_000 if quick else 20_000
    fc = statistics.median(from_threads(f, "corral") for _ in range(rounds))
    ft = statistics.median(from_threads(f, "threadsafe") for _ in range(rounds))
    rows.append((f"{f:,} coroutines spawned from a thread into a loop (µs each)", f"{fc:.1f}",
                 f"asyncio.run_coroutine_threadsafe {ft:.1f}", f"{fc / ft:.2f}x", "(reported)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    rounds = 3 if args.quick else args.rounds
    benches: dict[str, Bench] = {"corral.AsyncGroup": corral_group, "asyncio.TaskGroup": taskgroup}
    if anyio is not None:
        benches["anyio task group"] = anyio_group
    if aiojobs is not None:
        benches["aiojobs"] = aiojobs_scheduler
    loops: list[tuple[str, Any]] = [("asyncio", None)]
    if uvloop is not None:
        loops.append(("uvloop", uvloop.new_event_loop))
    print(f"corral {corral.__version__} on Python {sys.version.split()[0]}, {n:,} no-op "
          f"coroutines, median of {rounds} rounds, µs per task")
    print()
    print(f"{'loop':8} {'limit':6} " + " ".join(f"{name:>18}" for name in benches)
          + "  ratio to TaskGroup (goal <= 1.5x)")
    for loop_name, factory in loops:
        for limit in (None, 8):
            r = per_task_us(benches, n, limit, rounds, factory)
            ratio = r["corral.AsyncGroup"] / r["asyncio.TaskGroup"]
            print(f"{loop_name:8} {limit or '-':<6} "
                  + " ".join(f"{r[name]:>18.2f}" for name in benches)
                  + f"  {ratio:.2f}x {'MET' if ratio <= 1.5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
