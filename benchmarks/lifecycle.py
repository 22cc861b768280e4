"""Benchmarks of a service's life (part of ``benchmarks/run.py``'s table):

- stopping thousands of running tasks at once: ``sup.stop()`` with 2,000 / 5,000 /
  10,000 tasks that each wait on their token, beside as many plain threads waiting on
  one ``threading.Event`` (set it, join them all);
- a long run: a supervisor that runs 200,000 short tasks spawned one after another
  (beside ``ThreadPoolExecutor(8)`` given the same), and one task restarted 100,000
  times (``restart="always"``, no delay): RSS and thread count must stay flat.

Each measurement runs in a fresh interpreter (so thread stacks and the allocator of one
run do not carry into the next); rounds are interleaved.

    python benchmarks/lifecycle.py            # these rows alone
    python benchmarks/lifecycle.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

Row = tuple[str, str, str, str, str]
_HERE = os.path.dirname(os.path.abspath(__file__))  # (the scripts import run.py from here)

STOP_SCRIPT = r"""
import json, sys, threading, time
kind, n = sys.argv[1], int(sys.argv[2])
running = threading.Semaphore(0)
if kind == "corral":
    import corral

    def waiter():
        token = corral.current_token()
        running.release()
        token.wait()

    sup = corral.Supervisor("stop-bench", handle_signals=False)
    for _ in range(n):
        sup.spawn(waiter)
    sup.start()
    for _ in range(n):
        running.acquire()
    t0 = time.perf_counter()
    sup.stop()
    seconds = time.perf_counter() - t0
else:  # (the same as run.py's row for a tree's cancel: the stdlib way)
    sys.path.insert(0, sys.argv[3])
    from run import threads_event_cancel

    seconds = threads_event_cancel(n)
print(json.dumps({"seconds": seconds}))
"""

CHURN_SCRIPT = r"""
import json, sys, threading, time
kind, n = sys.argv[1], int(sys.argv[2])
WARM = 2_000  # tasks (or attempts) before the first reading: imports, pool, allocator


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def noop():
    return None


out = {"threads_peak": 0}


def reading(when):
    out[f"rss_{when}_kib"] = rss_kib()
    out[f"threads_{when}"] = threading.active_count()


def sample():
    out["threads_peak"] = max(out["threads_peak"], threading.active_count())


def feed(submit):  # n no-op tasks, one after another, with a reading halfway
    for i in range(n):
        submit(noop)
        if i % 1000 == 0:
            sample()
            if i == n // 2:
                out["rss_half_kib"] = rss_kib()


if kind == "tasks":
    import corral
    from corral._pool import get_pool

    sup = corral.Supervisor("churn", handle_signals=False)
    sup.start()
    for _ in range(WARM):
        sup.spawn(noop)
    get_pool().wait_idle()
    reading("before")
    t0 = time.perf_counter()
    feed(sup.spawn)
    get_pool().wait_idle()
    out["seconds"] = time.perf_counter() - t0
    reading("after")
    sup.stop()
elif kind == "executor":
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as ex:
        for _ in range(WARM):
            ex.submit(noop)
        ex.submit(noop).result()
        reading("before")
        t0 = time.perf_counter()
        feed(ex.submit)
        ex.submit(noop).result()
        out["seconds"] = time.perf_counter() - t0
        reading("after")
elif kind == "restarts":
    import corral

    count = 0
    done = threading.Event()
    t0 = 0.0

    def again():
        global count, t0
        count += 1
        if count == WARM:
            reading("before")
            t0 = time.perf_counter()
        elif count % 1000 == 0:
            sample()
            if count == WARM + n // 2:
                out["rss_half_kib"] = rss_kib()
        if count == WARM + n:
            out["seconds"] = time.perf_counter() - t0
            reading("after")
            done.set()
            corral.current_token().wait()

    sup = corral.Supervisor("churn", handle_signals=False)
    sup.spawn(again, name="again", restart="always", backoff=corral.Backoff(initial=0, maximum=0))
    sup.start()
    done.wait()
    sup.stop()
print(json.dumps(out))
"""


def _run(script: str, *args: object) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def stop_rows(sizes: tuple[int, ...], rounds: int) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(rounds):
            ours.append(_run(STOP_SCRIPT, "corral", n)["seconds"])
            theirs.append(_run(STOP_SCRIPT, "threads", n, _HERE)["seconds"])
        c, t = statistics.median(ours), statistics.median(theirs)
        met = c <= t and max(ours) < 5.0
        rows.append((
            f"stop {n:,} running tasks (s)", f"{c:.2f} (max {max(ours):.2f})",
            f"{n:,} threads on one Event {t:.2f} (max {max(theirs):.2f})", f"{c / t:.2f}x",
            "<= 1.0x, max < 5 s" + (" MET" if met else " NOT MET"),
        ))
    return rows


def _churn(d: dict[str, float]) -> str:
    before, half, after = (d[f"rss_{k}_kib"] / 1024 for k in ("before", "half", "after"))
    return (
        f"RSS {before:.1f} -> {half:.1f} -> {after:.1f} MiB (second half {after - half:+.1f}), "
        f"threads {d['threads_before']:.0f} -> {d['threads_after']:.0f} "
        f"(peak {d['threads_peak']:.0f}) in {d['seconds']:.1f}s"
    )


def _flat(d: dict[str, float]) -> bool:
    # Flat: the second half of the run adds (next to) nothing (the first may raise the
    # high-water mark: a spawner that outruns its workers queues a few thousand tasks,
    # as the executor's queue does), and a handful of threads remain.
    return d["rss_after_kib"] - d["rss_half_kib"] < 1024 and d["threads_after"] <= 20


def churn_rows(n_tasks: int, n_restarts: int) -> list[Row]:
    tasks = _run(CHURN_SCRIPT, "tasks", n_tasks)
    executor = _run(CHURN_SCRIPT, "executor", n_tasks)
    restarts = _run(CHURN_SCRIPT, "restarts", n_restarts)
    return [
        (
            f"supervisor runs {n_tasks:,} short tasks, one after another", _churn(tasks),
            f"ThreadPoolExecutor(8) {_churn(executor)}", "",
            "flat" + (" MET" if _flat(tasks) else " NOT MET"),
        ),
        (
            f"one task restarted {n_restarts:,} times", _churn(restarts), "", "",
            "flat" + (" MET" if _flat(restarts) else " NOT MET"),
        ),
    ]


def lifecycle_rows(*, quick: bool, rounds: int) -> list[Row]:
    sizes = (2_000,) if quick else (2_000, 5_000, 10_000)
    rows = stop_rows(sizes, 1 if quick else min(rounds, 3))
    rows += churn_rows(20_000 if quick else 200_000, 10_000 if quick else 100_000)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from run import print_table  # (here: run.py imports this module in its main)

    print_table(lifecycle_rows(quick=args.quick, rounds=args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
