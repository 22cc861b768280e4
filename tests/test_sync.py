"""YieldingLock: the group's and the pool's lock (see corral._sync)."""

from __future__ import annotations

import threading

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
