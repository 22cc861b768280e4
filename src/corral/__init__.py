"""corral: supervise the concurrent work of a service.

Tokens (cooperative cancellation in a tree), groups (structured, limited, with an
error policy), tasks (named handles with restarts, dependencies and readiness) and
supervisors (a lifecycle, signals, a failure record) for threads, and singleton
tasks that run in exactly one process of a cluster (leases on a file lock or Redis).
"""


from . import _fork, _lazy  # noqa: F401 (_fork resets corral's state in a forked child)
from ._errors import Cancelled as Cancelled
from ._errors import CoordinatorError as CoordinatorError
from ._errors import CorralError as CorralError
from ._errors import DuplicateTaskName as DuplicateTaskName
from ._errors import GroupClosed as GroupClosed
from ._errors import LeaseLost as LeaseLost
from ._errors import NotReady as NotReady
from ._errors import Replaced as Replaced
from ._errors import RestartLimitExceeded as RestartLimitExceeded
from ._errors import Stopped as Stopped
from ._errors import StopTimeout as StopTimeout
from ._errors import SupervisorStopped as SupervisorStopped
from ._group import Group as Group
from ._links import roots as roots
from ._policy import Backoff as Backoff
from ._policy import Hooks as Hooks
from ._policy import Restart as Restart
from ._supervisor import Supervisor as Supervisor
from ._supervisor import go as go
from ._task import Task as Task
from ._task import TaskState as TaskState
from ._task import cancelled as cancelled
from ._task import check as check
from ._task import current_task as current_task
from ._task import current_token as current_token
from ._task import ready as ready
from ._task import sleep as sleep
from ._token import Token as Token

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)


if TYPE_CHECKING:  # at run time, loaded on first use: see __getattr__ below
    from ._async import AsyncGroup as AsyncGroup
    from ._async import AsyncSupervisor as AsyncSupervisor
    from ._async import AsyncTask as AsyncTask
    from ._coordinator import Coordinator as Coordinator
    from ._coordinator import Lease as Lease
    from ._coordinator import current_lease as current_lease
    from ._file_coordinator import FileCoordinator as FileCoordinator
    from ._redis_coordinator import RedisCoordinator as RedisCoordinator
    from ._snapshot import GroupSnapshot as GroupSnapshot
    from ._snapshot import LeaseSnapshot as LeaseSnapshot
    from ._snapshot import TaskSnapshot as TaskSnapshot

__all__ = [
    "AsyncGroup",
    "AsyncSupervisor",
    "AsyncTask",
    "Backoff",
    "Cancelled",
    "Coordinator",
    "CoordinatorError",
    "CorralError",
    "DuplicateTaskName",
    "FileCoordinator",
    "Group",
    "GroupClosed",
    "GroupSnapshot",
    "Hooks",
    "Lease",
    "LeaseLost",
    "LeaseSnapshot",
    "NotReady",
    "RedisCoordinator",
    "Replaced",
    "Restart",
    "RestartLimitExceeded",
    "StopTimeout",
    "Stopped",
    "Supervisor",
    "SupervisorStopped",
    "Task",
    "TaskSnapshot",
    "TaskState",
    "Token",
    "cancelled",
    "check",
    "current_lease",
    "current_task",
    "current_token",
    "go",
    "ready",
    "roots",
    "sleep",
]

__version__ = "0.1.0"

Token.__module__ = "corral"
for _fn in (cancelled, check, current_task, current_token, go, ready, roots, sleep):
    _fn.__module__ = "corral"
del _fn


_ASYNC_EXPORTS = ("AsyncGroup", "AsyncSupervisor", "AsyncTask")


def __getattr__(name: str) -> object:
    # The lease names load their module on first use (PEP 562): a program without
    # singletons or coordinators never imports one, and `import corral` stays light.
    if name in _lazy.LEASE_EXPORTS:
        value = _lazy.lease_export(name)
        globals()[name] = value
        return value
    if name in _ASYNC_EXPORTS:  # (they import asyncio: loaded on first use)
        from . import _async

        value = getattr(_async, name)
        globals()[name] = value
        return value
    if name in _lazy.SNAPSHOT_EXPORTS:
        value = getattr(_lazy.snapshots(), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
