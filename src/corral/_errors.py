"""corral's exceptions.

The hierarchy::

    BaseException
     └── Cancelled                 raised by Token.check(); never caught by ``except Exception``
    Exception
     ├── CorralError
     │    ├── DuplicateTaskName     spawn(name=...) of a live name without replace=True
     │    ├── GroupClosed           spawn on a group whose join/with-block has finished
     │    ├── SupervisorStopped     start()/spawn() on a supervisor that was stopped
     │    ├── StopTimeout           stop(timeout) passed its deadline (names + stacks of what still runs)
     │    ├── RestartLimitExceeded  more than n restarts within the max_restarts period
     │    ├── NotReady              wait_ready() on a task that ended before it was ready
     │    ├── LeaseLost             a singleton's lease was lost (cause of the cancellation)
     │    └── CoordinatorError      a lease backend cannot be reached or used
     ├── Stopped                    graceful cause: a stop was asked for (never a failure)
     └── Replaced                   graceful cause: a task was replaced by one of the same name
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "CoordinatorError",
    "CorralError",
    "DuplicateTaskName",
    "GroupClosed",
    "LeaseLost",
    "NotReady",
    "Replaced",
    "RestartLimitExceeded",
    "StopTimeout",
    "Stopped",
    "SupervisorStopped",
]


class Cancelled(BaseException):
    """Raised by :meth:`Token.check` once the token is cancelled.

    It derives from :class:`BaseException` so that ``except Exception`` in user code
    cannot swallow a shutdown. ``cause`` is the token's cause (also chained as
    ``__cause__``).
    """

    cause: BaseException | None = None


class CorralError(Exception):
    """Base class of corral's own errors."""


class DuplicateTaskName(CorralError):
    """A task with this name is already live in the group (use ``replace=True``)."""


class GroupClosed(CorralError):
    """The group has finished: nothing more can be spawned in it."""


class SupervisorStopped(CorralError):
    """The supervisor was stopped: it cannot be started again or given new tasks."""


class StopTimeout(CorralError):
    """``stop()``/``wait()`` gave up waiting while tasks were still running.

    ``running`` maps each such task's name to its current stack (a string).
    """

    def __init__(self, message: str, running: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.running: dict[str, str] = dict(running or {})

    def __str__(self) -> str:
        text = super().__str__()
        if not self.running:
            return text
        parts = [text]
        for name, stack in list(self.running.items())[:SHOWN]:
            parts.append(f"--- {name} ---\n{stack.rstrip()}")
        more = len(self.running) - SHOWN
        if more > 0:
            parts.append(f"--- and {more:,} more (every one in StopTimeout.running) ---")
        return "\n".join(parts)


class RestartLimitExceeded(CorralError):
    """A task restarted more than ``n`` times within ``period`` seconds."""


class NotReady(CorralError):
    """The task ended before it said it was ready (its error is the ``__cause__``)."""


class LeaseLost(CorralError):
    """A singleton task's lease was lost, so its run was cancelled."""


class CoordinatorError(CorralError):
    """A lease backend (a lock directory, Redis) cannot be reached or used."""


class Stopped(Exception):
    """Graceful cause: a stop was asked for. Never reported as a failure."""


class Replaced(Exception):
    """Graceful cause: the task was replaced by a new task of the same name."""


GRACEFUL = (Stopped, Replaced)


# How many tasks a report names in its text (a stop report's message and stacks, the
# at-exit warning): a stop that 20,000 tasks outlive must not make a log line of
# megabytes. The rest are counted; StopTimeout.running still has every one.
SHOWN = 10


def listed(items: list[str]) -> str:
    """``a, b, c``: the first ``SHOWN`` items, then how many more there are."""
    text = ", ".join(items[:SHOWN])
    more = len(items) - SHOWN
    return f"{text} and {more:,} more" if more > 0 else text


def safe_repr(obj: object) -> str:
    """``repr(obj)``, or a stand-in if that raises.

    User exceptions are formatted by corral's own bookkeeping (logs, causes, stop
    reports); a third-party exception whose ``__repr__`` raises must not break it.
    """
    try:
        return repr(obj)
    except BaseException as e:
        return f"<{type(obj).__qualname__} (its repr raised {type(e).__qualname__})>"


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` for one log line, formatted defensively."""
    name = type(exc).__qualname__
    try:
        text = str(exc)
    except BaseException as e:
        text = f"(its str raised {type(e).__qualname__})"
    return f"{name}: {text}" if text else name

for _cls in (
    Cancelled,
    CorralError,
    DuplicateTaskName,
    GroupClosed,
    SupervisorStopped,
    StopTimeout,
    RestartLimitExceeded,
    NotReady,
    LeaseLost,
    CoordinatorError,
    Stopped,
    Replaced,
):
    _cls.__module__ = "corral"
