"""Memory of a long-running service: what tokens and their deadlines leave behind.

Resident memory is read from /proc/self/statm, before and after work that, before
the fix, kept every token (or its timer entry): the bounds are generous (the
allocator keeps some freed memory), the leaks they catch are tens of megabytes. No gc
pass runs: reference counting alone must free what a request drops. (Nothing
long-lived is allocated between the two readings: one small object made while the
allocator's arenas are nearly empty pins a whole 1 MiB arena.)
"""

from __future__ import annotations

import os

import pytest

import corral
from corral._clock import SystemClock

MIB = 1 << 20

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc/self/statm"
    ),
    pytest.mark.usefixtures("no_gc"),
]


def rss() -> int:
    """Resident memory of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(300)  # a few seconds, but the whole suite may share the machine
def test_a_million_children_made_and_dropped_keep_rss_flat() -> None:
    # Regression: a parent held each child until it was cancelled, and a deadline timer
    # held its token until it fired: 200,000 per-request root.child(timeout=...) tokens
    # dropped uncancelled took RSS from 15 to 71 MB.
    clock = SystemClock()  # private: its heap holds only this test's timers
    root = corral.Token(clock=clock)

    def requests(n: int) -> None:
        for i in range(n):
            if i % 4 == 0:
                root.child(timeout=3600)  # a request with a deadline, never cancelled
            else:
                root.child()

    requests(100_000)  # the allocator's pools reach their working size
    before = rss()
    requests(900_000)
    grown = rss() - before
    assert grown < 10 * MIB, f"RSS grew {grown / MIB:.1f} MiB over 900,000 dropped children"
    assert not root._children
    assert len(clock._heap) <= 64  # the few dead entries a small heap may keep
    assert not root.cancelled


@pytest.mark.timeout(300)
def test_deadlines_cancelled_early_leave_the_clock_and_their_memory_is_reused() -> None:
    # Regression: 300,000 per-request child(timeout=3600) tokens cancelled at once kept
    # 296,555 timer entries (+48 MB) in the clock's heap for an hour.
    clock = SystemClock()
    root = corral.Token(clock=clock)
    n = 100_000

    def burst() -> None:
        tokens = [root.child(timeout=3600) for _ in range(n)]
        assert n <= len(clock._heap) <= n + 64  # (+ dead ones left from the last burst)
        for tok in tokens:
            tok.cancel()
        # Gone as they were cancelled, not an hour later.
        assert len(clock._heap) <= 64
        assert not root._children

    burst()
    burst()  # (the allocator settles over the first two)
    before = rss()
    for _ in range(3):
        burst()
    grown = rss() - before
    # Before the fix each burst kept its n entries (about 17 MiB) for an hour.
    assert grown < 16 * MIB, f"RSS grew {grown / MIB:.1f} MiB over 3 bursts of {n:,}"


def test_a_burst_cancelled_through_the_parent_leaves_the_clock() -> None:
    clock = SystemClock()
    request_scope = corral.Token(clock=clock)
    tokens = [request_scope.child(timeout=3600) for _ in range(100_000)]
    request_scope.cancel("shutting down")
    assert all(tok.cancelled for tok in tokens)
    assert len(clock._heap) <= 64
