"""Ending N tasks that all ``need`` one name: linear, as without ``needs``.

    python benchmarks/needs.py            # 1k, 10k, 100k dependents
    python benchmarks/needs.py --quick    # 1k, 10k

The dependents are queued in a supervisor that is then stopped before it started: each
ends without running and leaves the dependents index, so the figure is corral's own
bookkeeping. Before the fix dependents
were removed from a list one by one: 1k -> 10k -> 100k took 2 -> 27 -> 950 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import corral


def _noop() -> None:
    return None


def end_dependents(n: int, with_needs: bool) -> float:
    """Seconds to end ``n`` queued tasks (each needing one task named "db" when
    ``with_needs``): a supervisor stopped before it started ends them all without
    running them, so the figure is corral's bookkeeping alone, not threads."""
    sup = corral.Supervisor("needs bench", handle_signals=False)
    sup.spawn(_noop, name="db")
    needs = ("db",) if with_needs else ()
    for _ in range(n):
        sup.spawn(_noop, needs=needs)
    t0 = time.perf_counter()
    sup.stop()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    print(f"{'dependents':>10}  {'with needs (ms)':>16}  {'without (ms)':>13}  {'ratio':>6}")
    for n in sizes:
        rounds = 1 if n >= 100_000 else args.rounds
        with_needs = statistics.median(end_dependents(n, True) for _ in range(rounds))
        without = statistics.median(end_dependents(n, False) for _ in range(rounds))
        print(f"{n:>10,}  {with_needs * 1e3:>16.1f}  {without * 1e3:>13.1f}  {with_needs / without:>5.2f}x")


if __name__ == "__main__":
    main()
