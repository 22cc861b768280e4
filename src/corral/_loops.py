"""Reaching an event loop from any thread: what corral's awaited waits and the asyncio
runner share. This module imports asyncio, and nothing of corral's but ``_context``:
the waits load it on their first use by a coroutine."""

from __future__ import annotations

from asyncio import get_running_loop

from ._context import running_loop

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import Any

__all__ = ["call_on", "get_running_loop", "wake", "wake_soon"]


def call_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> None:
    """Call ``fn(*args)`` on ``loop``'s thread: now if this is it, else soon. Dropped if
    the loop has closed (nothing there waits any more)."""
    if running_loop() is loop:
        fn(*args)
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


def wake(fut: asyncio.Future[Any]) -> None:
    """Resolve a waiter's future (on its loop's thread), unless it is done already."""
    if not fut.done():
        fut.set_result(None)


def wake_soon(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
    """``wake`` from any thread (the future's callbacks are scheduled, not run, here)."""
    call_on(loop, wake, fut)
