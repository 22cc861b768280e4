"""corral benchmarks: one command, one table, corral beside the standard library.

    python benchmarks/run.py            # full run (a few minutes: map over 1,000,000 items)
    python benchmarks/run.py --quick    # smaller sizes, for a smoke run
    python benchmarks/run.py --leases   # the lease benchmarks instead (benchmarks/leases.py)

Each timing is the median of ``--rounds`` interleaved rounds, per task. Memory is the peak RSS of
a fresh subprocess (``VmHWM``), so each figure stands alone. These are benchmarks,
not tests: nothing here asserts; the table says whether each goal was met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

import corral


def noop() -> None:
    return None


def noop1(x: int) -> int:
    return x


def medians_us(fns: list[Callable[[], None]], n: int, rounds: int) -> list[float]:
    """Median µs per task of each contender. Rounds are interleaved (each round runs
    every contender once, in turn), so drifts of the machine hit all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) / n * 1e6 for t in times]


# -- 1. short tasks through a limit of 8 -----------------------------------------------


def corral_limit8(n: int) -> None:
    with corral.Group(limit=8) as g:
        for _ in range(n):
            g.spawn(noop)


def executor8(n: int) -> None:
    with ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(noop) for _ in range(n)]
        for f in futures:
            f.result()


def threadpool8(n: int) -> None:
    with ThreadPool(8) as pool:
        results = [pool.apply_async(noop) for _ in range(n)]
        for r in results:
            r.get()


# -- 2. short tasks, no limit ------------------------------------------------------------


def corral_unlimited(n: int) -> None:
    with corral.Group() as g:
        for _ in range(n):
            g.spawn(noop)


def plain_threads(n: int) -> None:
    threads = [threading.Thread(target=noop) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- 3. cancel a tree of sleeping tasks ------------------------------------------------


def corral_cancel_tree(n: int, fanout: int = 10) -> float:
    """Seconds from cancel() to join() returning, for n tasks in a two-level tree."""
    running = threading.Semaphore(0)

    def sleeper() -> None:
        running.release()
        corral.sleep(3600)

    def branch(k: int) -> None:
        with corral.Group("branch") as g:
            for _ in range(k):
                g.spawn(sleeper)
        # the branch task itself waits in its with-block

    root = corral.Group("root")
    per = n // fanout
    for _ in range(fanout):
        root.spawn(branch, per)
    for _ in range(per * fanout):
        running.acquire()
    t0 = time.perf_counter()
    root.cancel()
    root.join()
    return time.perf_counter() - t0


def threads_event_cancel(n: int) -> float:
    """The stdlib way: n threads waiting on one Event; set it and join them all."""
    stop = threading.Event()
    running = threading.Semaphore(0)

    def sleeper() -> None:
        running.release()
        stop.wait(3600)

    threads = [threading.Thread(target=sleeper) for _ in range(n)]
    for t in threads:
        t.start()
    for _ in range(n):
        running.acquire()
    t0 = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


# -- 4. map over a huge input: peak memory -------------------------------------------

MAP_SCRIPT = r"""
import resource, sys, time
kind, n = sys.argv[1], int(sys.argv[2])
def noop1(x):
    return x
def hwm_kib():
    # VmHWM (peak RSS) of this process image: unlike ru_maxrss it does not carry the
    # forked parent's high-water mark across exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = hwm_kib()
t0 = time.perf_counter()
total = 0
if kind == "corral":
    import corral
    with corral.Group(limit=8) as g:
        for r in g.map(noop1, range(n)):
            total += 1
elif kind == "corral-chunked":
    import corral
    with corral.Group(limit=8) as g:
        for r in g.map(noop1, range(n), chunksize=64):
            total += 1
elif kind == "executor":
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as ex:
        for r in ex.map(noop1, range(n)):
            total += 1
elif kind == "threadpool-imap":
    from multiprocessing.pool import ThreadPool
    with ThreadPool(8) as pool:
        for r in pool.imap(noop1, range(n), chunksize=1):
            total += 1
elif kind == "threadpool-imap-chunked":
    from multiprocessing.pool import ThreadPool
    with ThreadPool(8) as pool:
        for r in pool.imap(noop1, range(n), chunksize=64):
            total += 1
elapsed = time.perf_counter() - t0
peak = hwm_kib()
assert total == n
print(json.dumps({"peak_kib": peak, "base_kib": base, "seconds": elapsed}))
""".replace("import resource, sys, time", "import json, resource, sys, time")


def map_memory(kind: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MAP_SCRIPT, kind, str(n)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


# -- map: throughput beside the executor's map and the pool's imap ------------------------


def tiny(x: int) -> int:
    """A little work per item (about a microsecond)."""
    return sum(range(x & 63))


def sleep_1ms(x: int) -> int:
    time.sleep(0.001)
    return x


def corral_map(fn: Callable[[int], int], n: int, chunksize: int) -> None:
    with corral.Group(limit=8) as g:
        for _ in g.map(fn, range(n), chunksize=chunksize):
            pass


def executor_map(fn: Callable[[int], int], n: int) -> None:
    with ThreadPoolExecutor(8) as ex:
        for _ in ex.map(fn, range(n)):
            pass


def threadpool_imap(fn: Callable[[int], int], n: int, chunksize: int) -> None:
    with ThreadPool(8) as pool:
        for _ in pool.imap(fn, range(n), chunksize=chunksize):
            pass


# -- import time: `import corral` beside `import concurrent.futures` ----------------------

IMPORT_CODE = "import time; t0 = time.perf_counter(); import {0}; print(time.perf_counter() - t0)"


def import_ms(module: str, cache: str, bytecode: bool = True) -> float:
    """Milliseconds that ``import module`` takes in a fresh interpreter (the interpreter's
    own start is not counted), with ``.pyc`` files kept under ``cache`` (for the
    standard library too, so both sides are alike). Without bytecode, none is read or
    written: every module not frozen into the interpreter is compiled."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    flags = [] if bytecode else ["-B"]
    out = subprocess.run(
        [sys.executable, *flags, "-c", IMPORT_CODE.format(module)],
        check=True, capture_output=True, text=True, env=env,
    )
    return float(out.stdout) * 1e3


def import_medians(rounds: int, bytecode: bool = True) -> tuple[float, float]:
    """Medians (ms) of ``import corral`` and ``import concurrent.futures``, interleaved."""
    with tempfile.TemporaryDirectory() as cache:
        for module in ("corral", "concurrent.futures"):  # writes the bytecode first
            import_ms(module, cache, bytecode)
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            times[0].append(import_ms("corral", cache, bytecode))
            times[1].append(import_ms("concurrent.futures", cache, bytecode))
    return statistics.median(times[0]), statistics.median(times[1])


# -- the table ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--leases", action="store_true",
                        help="run the lease benchmarks (benchmarks/leases.py) instead")
    args = parser.parse_args(argv)
    if args.leases:
        # benchmarks/ is on sys.path when this file runs as a script
        from leases import main as leases_main

        return leases_main(["--rounds", str(3 if args.quick else args.rounds)])
    n1 = 2_000 if args.quick else 20_000
    n2 = 1_000 if args.quick else 5_000
    n3 = 1_000
    n4 = 50_000 if args.quick else 1_000_000
    rounds = 3 if args.quick else args.rounds

    rows: list[tuple[str, str, str, str, str]] = []

    def row(what: str, ours: str, theirs: str, ratio: str, goal: str) -> None:
        rows.append((what, ours, theirs, ratio, goal))
        print(f"  measured: {what}: corral {ours} vs {theirs} ({ratio}; goal {goal})", flush=True)

    print(f"corral {corral.__version__} on Python {platform.python_version()} "
          f"({platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores), "
          f"median of {rounds} rounds", flush=True)

    # warm the pool and the interpreter once
    corral_limit8(1000)
    executor8(1000)

    c, e, p = medians_us(
        [lambda: corral_limit8(n1), lambda: executor8(n1), lambda: threadpool8(n1)], n1, rounds
    )
    row(f"{n1:,} no-op tasks, limit 8 (µs/task)", f"{c:.1f}",
        f"ThreadPoolExecutor(8) {e:.1f}; ThreadPool(8) {p:.1f}",
        f"{c / e:.2f}x executor", "<= 1.0x" + (" MET" if c <= e else " NOT MET"))

    c, t = medians_us([lambda: corral_unlimited(n2), lambda: plain_threads(n2)], n2, rounds)
    row(f"{n2:,} no-op tasks, no limit (µs/task)", f"{c:.1f}", f"threading.Thread {t:.1f}",
        f"{c / t:.2f}x threads", "<= 0.5x" + (" MET" if c <= 0.5 * t else " NOT MET"))

    pairs = [(corral_cancel_tree(n3), threads_event_cancel(n3)) for _ in range(rounds)]
    cs = statistics.median(p[0] for p in pairs)
    ts = statistics.median(p[1] for p in pairs)
    row(f"cancel a tree of {n3:,} sleeping tasks + join (s)", f"{cs:.3f}",
        f"{n3:,} threads on one Event {ts:.3f}", f"{cs / ts:.2f}x",
        "< 0.5 s" + (" MET" if cs < 0.5 else " NOT MET"))

    mc = map_memory("corral", n4)
    me = map_memory("executor", n4)
    mi = map_memory("threadpool-imap", n4)

    def mib(d: dict[str, float]) -> str:
        return f"{d['peak_kib'] / 1024:.0f} MiB peak ({(d['peak_kib'] - d['base_kib']) / 1024:+.0f}) in {d['seconds']:.1f}s"

    row(f"map over {n4:,} items, limit 8 (peak RSS)", mib(mc),
        f"ThreadPoolExecutor.map {mib(me)}; ThreadPool.imap {mib(mi)}",
        f"{mc['peak_kib'] / me['peak_kib']:.2f}x executor",
        "flat" + (" MET" if mc["peak_kib"] - mc["base_kib"] < 64 * 1024 else " NOT MET"))

    # map throughput: one item per task, and chunks of 64 items per task
    n5 = 5_000 if args.quick else 20_000
    n6 = 50_000 if args.quick else 200_000
    for label, fn in (("no-op", noop1), ("tiny", tiny)):
        c, e, p = medians_us([
            lambda fn=fn: corral_map(fn, n5, 1),  # type: ignore[misc]
            lambda fn=fn: executor_map(fn, n5),  # type: ignore[misc]
            lambda fn=fn: threadpool_imap(fn, n5, 1),  # type: ignore[misc]
        ], n5, rounds)
        row(f"map over {n5:,} {label} items, limit 8 (µs/item)", f"{c:.2f}",
            f"ThreadPoolExecutor(8).map {e:.2f}; ThreadPool(8).imap {p:.2f}",
            f"{c / e:.2f}x executor", "<= 1.0x" + (" MET" if c <= e else " NOT MET"))
        c, p = medians_us([
            lambda fn=fn: corral_map(fn, n6, 64),  # type: ignore[misc]
            lambda fn=fn: threadpool_imap(fn, n6, 64),  # type: ignore[misc]
        ], n6, rounds)
        row(f"map over {n6:,} {label} items, chunksize 64 (µs/item)", f"{c:.3f}",
            f"ThreadPool(8).imap(chunksize=64) {p:.3f}",
            f"{c / p:.2f}x imap", "<= 1.0x" + (" MET" if c <= p else " NOT MET"))

    # slow items (1 ms of sleep each): the map must run them side by side, limit at once
    n7 = 400
    c, e = medians_us([
        lambda: corral_map(sleep_1ms, n7, 1), lambda: executor_map(sleep_1ms, n7),
    ], n7, rounds)
    row(f"map over {n7} items sleeping 1 ms, limit 8 (µs/item; 125 = 8 at once)", f"{c:.0f}",
        f"ThreadPoolExecutor(8).map {e:.0f}", f"{c / e:.2f}x executor",
        "<= 1.1x" + (" MET" if c <= 1.1 * e else " NOT MET"))

    mc = map_memory("corral-chunked", n4)
    mi = map_memory("threadpool-imap-chunked", n4)
    row(f"map over {n4:,} items, chunksize 64 (peak RSS)", mib(mc),
        f"ThreadPool.imap(chunksize=64) {mib(mi)}", f"{mc['peak_kib'] / mi['peak_kib']:.2f}x imap",
        "flat" + (" MET" if mc["peak_kib"] - mc["base_kib"] < 64 * 1024 else " NOT MET"))

    # import time, in fresh interpreters (medians of interleaved rounds)
    ci, cf = import_medians(7 if args.quick else 21)
    cib, cfb = import_medians(3 if args.quick else 7, bytecode=False)
    row("import corral, fresh interpreter (ms)", f"{ci:.1f} ({cib:.1f} without bytecode)",
        f"import concurrent.futures {cf:.1f} ({cfb:.1f})", f"{ci / cf:.2f}x ({cib / cfb:.2f}x)",
        "< 1.5x" + (" MET" if ci < 1.5 * cf else " NOT MET"))

    # stopping thousands of running tasks; a long run's RSS and threads (benchmarks/lifecycle.py)
    from lifecycle import lifecycle_rows  # (benchmarks/ is on sys.path: this file runs as a script)

    for lifecycle_row in lifecycle_rows(quick=args.quick, rounds=rounds):
        row(*lifecycle_row)

    # coroutines: AsyncGroup beside asyncio.TaskGroup, anyio and aiojobs (benchmarks/aio.py)
    from aio import aio_rows

    for aio_row in aio_rows(quick=args.quick, rounds=rounds):
        row(*aio_row)

    print()
    print_table(rows)
    return 0


def print_table(rows: list[tuple[str, str, str, str, str]]) -> None:
    """The rows under the header, each column as wide as its widest cell."""
    header = ("benchmark", "corral", "peers", "ratio", "goal")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    raise SystemExit(main())
