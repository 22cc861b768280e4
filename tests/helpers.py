"""Helpers shared by the test modules (imported as ``helpers``: pytest puts tests/ first
on sys.path)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import corral

TIMEOUT = 10.0  # a backstop only: every wait is on an event that the test sets


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
