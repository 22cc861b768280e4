"""Restart policies, backoff, and lifecycle hooks."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable

from ._callables import check_hook

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any, ClassVar, Final, Self

    from ._coordinator import Lease
    from ._task import Task

__all__ = ["Backoff", "Hooks", "Restart"]

log = logging.getLogger("corral")


class _Record:
    """A frozen record with slots: what ``@dataclass(frozen=True, slots=True)`` would
    make (init, repr, eq, hash, no assignment, pickling, ``__replace__``), written out
    because importing ``dataclasses`` loads ``inspect``, ``ast`` and ``dis`` (11 of the
    25 ms that ``import corral`` took)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _astuple(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    if not TYPE_CHECKING:  # (type checkers see the fields as Final instead)

        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

        def __delattr__(self, name: str) -> None:
            raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            assert isinstance(other, _Record)
            return self._astuple() == other._astuple()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __getstate__(self) -> tuple[object, ...]:
        return self._astuple()

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for f, value in zip(self._fields, state, strict=True):
            object.__setattr__(self, f, value)

    def __replace__(self, **changes: Any) -> Self:
        """A copy with some fields changed (``copy.replace`` on Python 3.13+)."""
        values = {f: getattr(self, f) for f in self._fields}
        for f in changes:
            if f not in values:
                raise TypeError(f"{type(self).__name__} has no field {f!r}")
        values.update(changes)
        return type(self)(**values)


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
            # (Docker's and systemd's spelling, "on-failure", means the same)
            return cls(value.lower().replace("-", "_"))
        except ValueError:
            values = ", ".join(repr(m.value) for m in cls)
            raise ValueError(
                f"restart must be one of {allowed}, or their values {values}; not {value!r}"
            ) from None


class Backoff(_Record):
    """How long to wait before restart number ``n`` (0-based) since the last healthy run.

    ``initial * multiplier**n``, capped at ``maximum``, then moved by up to ``±jitter``
    of itself at random. A run that lasted ``reset_after`` seconds or more counts as
    healthy and sets ``n`` back to 0.
    """

    __slots__ = ("initial", "jitter", "maximum", "multiplier", "reset_after")
    __match_args__ = ("initial", "maximum", "multiplier", "jitter", "reset_after")
    _fields = __match_args__

    if TYPE_CHECKING:  # (fields: read-only for type checkers too, as a frozen dataclass's)
        initial: Final[float] = 0.1
        maximum: Final[float] = 30.0
        multiplier: Final[float] = 2.0
        jitter: Final[float] = 0.1
        reset_after: Final[float | None] = 60.0

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.1,
        reset_after: float | None = 60.0,
    ) -> None:
        for f, value in zip(
            self._fields, (initial, maximum, multiplier, jitter, reset_after), strict=True
        ):
            object.__setattr__(self, f, value)
        self.__post_init__()

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

    def delay(self, n: int, rand: Callable[[], float] | None = None) -> float:
        """The delay before restart ``n`` (0-based), jitter included (``rand()`` gives a
        number in [0, 1): ``random.random`` by default)."""
        try:
            base = self.initial * self.multiplier**n
        except OverflowError:
            base = self.maximum
        base = min(base, self.maximum)
        if self.jitter:
            if rand is None:
                from random import random  # (here: `import corral` needs no random)

                rand = random
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


class Hooks(_Record):
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

    __slots__ = _HOOK_NAMES
    __match_args__ = (
        "on_added", "on_started", "on_succeeded", "on_failed", "on_restart", "on_finished",
        "on_lease",
    )
    _fields = _HOOK_NAMES

    if TYPE_CHECKING:  # (fields: read-only for type checkers too, as a frozen dataclass's)
        on_added: Final[Callable[[Task[Any]], object] | None] = None
        on_started: Final[Callable[[Task[Any]], object] | None] = None
        on_succeeded: Final[Callable[[Task[Any], Any], object] | None] = None
        on_failed: Final[Callable[[Task[Any], BaseException], object] | None] = None
        on_restart: Final[Callable[[Task[Any], float], object] | None] = None
        on_finished: Final[Callable[[Task[Any]], object] | None] = None
        on_lease: Final[Callable[[Task[Any], str, Lease | None], object] | None] = None

    def __init__(
        self,
        on_added: Callable[[Task[Any]], object] | None = None,
        on_started: Callable[[Task[Any]], object] | None = None,
        on_succeeded: Callable[[Task[Any], Any], object] | None = None,
        on_failed: Callable[[Task[Any], BaseException], object] | None = None,
        on_restart: Callable[[Task[Any], float], object] | None = None,
        on_finished: Callable[[Task[Any]], object] | None = None,
        on_lease: Callable[[Task[Any], str, Lease | None], object] | None = None,
    ) -> None:
        values = (on_added, on_started, on_succeeded, on_failed, on_restart, on_finished, on_lease)
        for f, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, f, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in _HOOK_NAMES:
            value = getattr(self, name)
            if value is not None:
                if not callable(value):
                    raise TypeError(f"Hooks.{name} must be callable or None, not {value!r}")
                check_hook(f"Hooks.{name}", value)


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

# The backoff of a restarted task spawned without one.
DEFAULT_BACKOFF = Backoff()
