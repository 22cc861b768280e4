"""Restart policies, backoff, and lifecycle hooks."""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._lease import Lease
    from ._task import Task

__all__ = ["Backoff", "Hooks", "Restart"]

log = logging.getLogger("corral")


class Restart(enum.StrEnum):
    """When a task that ended is run again."""

    NEVER = "never"
    ALWAYS = "always"
    ON_FAILURE = "on_failure"
    ON_SUCCESS = "on_success"

    @classmethod
    def coerce(cls, value: object) -> Restart:
        if isinstance(value, Restart):
            return value
        allowed = ", ".join(f"Restart.{m.name}" for m in cls)
        if not isinstance(value, str):
            raise TypeError(
                f"restart must be a corral.Restart ({allowed}) or its value, "
                f"not {type(value).__name__}"
            )
        try:
            return cls(value.lower())
        except ValueError:
            raise ValueError(
                f"restart must be one of {allowed} (or their values), not {value!r}"
            ) from None


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before restart number ``n`` (0-based) since the last healthy run.

    ``initial * multiplier**n``, capped at ``maximum``, then moved by up to ``±jitter``
    of itself at random. A run that lasted ``reset_after`` seconds or more counts as
    healthy and sets ``n`` back to 0.
    """

    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1
    reset_after: float | None = 60.0

    def __post_init__(self) -> None:
        for field in ("initial", "maximum", "multiplier", "jitter"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Backoff.{field} must be a number, not {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Backoff.{field} must be a finite number >= 0, not {value!r}")
        if self.multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, not {self.multiplier!r}")
        if self.jitter > 1:
            raise ValueError(f"Backoff.jitter must be between 0 and 1, not {self.jitter!r}")
        if self.maximum < self.initial:
            raise ValueError(
                f"Backoff.maximum ({self.maximum!r}) must be >= initial ({self.initial!r})"
            )
        if self.reset_after is not None:
            if isinstance(self.reset_after, bool) or not isinstance(self.reset_after, int | float):
                raise TypeError("Backoff.reset_after must be a number of seconds or None")
            if not self.reset_after >= 0:  # (NaN too: it would compare false for ever)
                raise ValueError(
                    f"Backoff.reset_after must be a number >= 0 or None, not {self.reset_after!r}"
                )

    def delay(self, n: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before restart ``n`` (0-based), jitter included."""
        try:
            base = self.initial * self.multiplier**n
        except OverflowError:
            base = self.maximum
        base = min(base, self.maximum)
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * rand() - 1.0)
        return max(0.0, min(base, self.maximum))


def check_max_restarts(value: object) -> tuple[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise TypeError(
            f"max_restarts must be a tuple (n, period_seconds) or None, not {value!r}"
        )
    n, period = value
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"max_restarts n must be an int, not {type(n).__name__}")
    if isinstance(period, bool) or not isinstance(period, int | float):
        raise TypeError(f"max_restarts period must be a number, not {type(period).__name__}")
    if n < 0:
        raise ValueError(f"max_restarts n must be >= 0, not {n!r}")
    if not period > 0 or not math.isfinite(period):
        raise ValueError(f"max_restarts period must be a finite number > 0, not {period!r}")
    return (n, float(period))


_HOOK_NAMES = (
    "on_added",
    "on_started",
    "on_succeeded",
    "on_failed",
    "on_restart",
    "on_finished",
    "on_lease",
)


@dataclass(frozen=True, slots=True)
class Hooks:
    """Lifecycle callbacks of a group's tasks. Each gets the :class:`Task`, plus:

    - ``on_added(task)``: right after spawn, in the spawning thread;
    - ``on_started(task)``: before each attempt runs, in its thread;
    - ``on_succeeded(task, result)`` / ``on_failed(task, exception)``: after each attempt
      (``on_failed`` runs for every failed attempt, restarted or not);
    - ``on_restart(task, delay)``: when a restart is scheduled, ``delay`` seconds ahead;
    - ``on_finished(task)``: once, when the task has ended for good (after the task's
      own ``on_finish``);
    - ``on_lease(task, state, lease)``: a singleton's lease changed: ``state`` is
      ``"campaigning"`` (``lease`` None), ``"holding"``, ``"lost"`` or ``"released"``
      (with the :class:`corral.Lease`).

    A hook that raises is logged and never breaks the group.
    """

    on_added: Callable[[Task[Any]], object] | None = None
    on_started: Callable[[Task[Any]], object] | None = None
    on_succeeded: Callable[[Task[Any], Any], object] | None = None
    on_failed: Callable[[Task[Any], BaseException], object] | None = None
    on_restart: Callable[[Task[Any], float], object] | None = None
    on_finished: Callable[[Task[Any]], object] | None = None
    on_lease: Callable[[Task[Any], str, Lease | None], object] | None = None

    def __post_init__(self) -> None:
        for name in _HOOK_NAMES:
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"Hooks.{name} must be callable or None, not {value!r}")


NO_HOOKS = Hooks()


def call_hook(hook: Callable[..., object] | None, *args: Any) -> None:
    """Call a hook; one that raises is logged (naming the task it was called for)."""
    if hook is None:
        return
    try:
        hook(*args)
    except BaseException:
        name = getattr(args[0], "name", None) if args else None
        group = getattr(getattr(args[0], "group", None), "name", None) if args else None
        log.exception(
            "hook %r raised (task %r)", hook, name,
            extra={"corral_task": name, "corral_group": group},
        )


for _cls in (Restart, Backoff, Hooks):
    _cls.__module__ = "corral"
