"""YieldingLock: the group's and the pool's lock (see corral._sync)."""

from __future__ import annotations

import threading
import time

import pytest

from corral import _sync
from corral._sync import YieldingLock
from helpers import TIMEOUT


def test_mutual_exclusion_under_contention() -> None:
    lock = YieldingLock()
    count = [0]
    go = threading.Event()

    def bump() -> None:
        assert go.wait(TIMEOUT)
        for _ in range(5000):
            with lock:
                value = count[0]
                # a GIL switch here would lose updates without mutual exclusion
                count[0] = value + 1

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert count[0] == 8 * 5000
    assert not lock.locked()


def test_it_serves_a_condition() -> None:
    lock = YieldingLock()
    cond = threading.Condition(lock)  # type: ignore[arg-type]
    ready: list[int] = []

    def producer() -> None:
        with cond:
            ready.append(1)
            cond.notify_all()

    t = threading.Thread(target=producer)
    with cond:
        t.start()
        assert cond.wait_for(lambda: bool(ready), TIMEOUT)
        assert lock.locked()  # wait_for returns with the lock held again
    t.join(TIMEOUT)
    assert not lock.locked()


def test_released_when_the_block_raises() -> None:
    lock = YieldingLock()
    try:
        with lock:
            raise ValueError("boom")
    except ValueError:
        pass
    assert not lock.locked()
    assert lock.acquire(False)
    lock.release()


class CountingSleep:
    """Stands in for ``time`` in corral._sync: counts the GIL yields (``sleep(0)``)."""

    def __init__(self, lock: YieldingLock, after: int) -> None:
        self._lock = lock
        self._after = after
        self._count = threading.Lock()
        self.calls = 0
        self.most_spinning = 0
        self.reached = threading.Event()  # `after` yields happened
        self.beyond = threading.Event()  # ...and then one more

    def sleep(self, seconds: float) -> None:
        with self._count:
            self.calls += 1
            self.most_spinning = max(self.most_spinning, len(self._lock._spinners))
            if self.calls == self._after:
                self.reached.set()
            elif self.calls > self._after:
                self.beyond.set()
        time.sleep(seconds)


def test_a_contender_yields_a_bounded_number_of_times_then_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regression: a contender yielded the GIL (sleep(0)) for as long as the lock was
    # taken. Thousands of contenders (a stop that wakes every task) then handed the GIL
    # to each other instead of to the holder: stopping 10,000 tasks took a minute.
    lock = YieldingLock()
    clock = CountingSleep(lock, _sync._SPINS)
    monkeypatch.setattr(_sync, "time", clock)
    entered = threading.Event()

    def contend() -> None:
        with lock:
            entered.set()

    t = threading.Thread(target=contend)
    with lock:
        t.start()
        assert clock.reached.wait(TIMEOUT)
        # It blocks on the lock now: no more yields while we hold it.
        assert not clock.beyond.wait(0.2), f"{clock.calls} yields: it spins on"
        assert not entered.is_set()
    t.join(TIMEOUT)
    assert entered.is_set()
    assert clock.calls == _sync._SPINS


def test_only_a_few_contenders_yield_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The others block on the lock at once, off the GIL's queue.
    lock = YieldingLock()
    n = 4 * _sync._SPINNERS
    clock = CountingSleep(lock, _sync._SPINS)
    monkeypatch.setattr(_sync, "time", clock)
    counted = [0]
    arriving = threading.Semaphore(0)

    def contend() -> None:
        arriving.release()
        with lock:
            counted[0] += 1

    threads = [threading.Thread(target=contend) for _ in range(n)]
    with lock:
        for t in threads:
            t.start()
        for _ in threads:
            assert arriving.acquire(timeout=TIMEOUT)
        assert clock.reached.wait(TIMEOUT)  # one has yielded all it may
    for t in threads:
        t.join(TIMEOUT)
    assert counted[0] == n
    assert 1 <= clock.most_spinning <= _sync._SPINNERS
    assert clock.calls <= n * _sync._SPINS
