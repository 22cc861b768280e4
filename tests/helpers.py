"""Helpers shared by the test modules (imported as ``helpers``: pytest puts tests/ first
on sys.path)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

import corral

TIMEOUT = 10.0  # a backstop only: every wait is on an event that the test sets
BLOCKED = 0.05  # how long a "still blocked" probe waits (a probe, never a synchronisation)
NO_DELAY = corral.Backoff(initial=0, maximum=0, jitter=0)  # restart at once

# Set by the seed (routine) cases and never reset: no test reads its default.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def wait(event: threading.Event) -> None:
    assert event.wait(TIMEOUT), "timed out waiting for an event"


@contextmanager
def released(*events: threading.Event) -> Iterator[None]:
    """Set the gates on the way out, so a failing assertion cannot hang the group's exit."""
    try:
        yield
    finally:
        for e in events:
            e.set()


def wait_token(token: corral.Token | None = None) -> bool:
    """Wait (real time, backstopped) until the token is cancelled, on any clock."""
    tok = token if token is not None else corral.current_token()
    ev = threading.Event()
    remove = tok.on_cancel(ev.set)
    try:
        return ev.wait(TIMEOUT)
    finally:
        remove()


def is_cancelled(token: corral.Token) -> bool:
    """``token.cancelled``, read afresh (mypy would narrow the property across statements)."""
    return token.cancelled


def supervisor(name: str, **options: Any) -> corral.Supervisor:
    """An in-process supervisor for a test: never touches the process's signal handlers."""
    return corral.Supervisor(name, handle_signals=False, **options)


def group_errors(call: Callable[[], object]) -> tuple[BaseException, ...]:
    """Run ``call``, which must raise an ExceptionGroup; return its exceptions."""
    with pytest.raises(ExceptionGroup) as info:
        call()
    return info.value.exceptions


class AtomicCounter:
    """A thread-safe integer (the Go seed tests' atomic counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> int:
        with self._lock:
            self.value += n
            return self.value


class Concurrency:
    """``with conc:`` around a task's work counts the tasks inside it now (``running``)
    and at most (``peak``). ``__enter__`` returns the count including the caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __enter__(self) -> int:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            return self.running

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.running -= 1


T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh non-main thread (so that a supervisor made there, such as
    ``corral.go``'s default one, installs no signal handler); return its result or
    raise its exception."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "timed out waiting for the thread"
    if errors:
        raise errors[0]
    return out[0]
