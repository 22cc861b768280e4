"""The public surface is a contract: exactly these names, all reporting module corral."""

from __future__ import annotations

import corral

EXPECTED = {
    "Backoff", "Cancelled", "CorralError", "DuplicateTaskName", "Group", "GroupClosed",
    "Hooks", "LeaseLost", "NotReady", "Replaced", "Restart", "RestartLimitExceeded",
    "StopTimeout", "Stopped", "Supervisor", "SupervisorStopped", "Task", "TaskState",
    "Token", "cancelled", "check", "current_task", "current_token", "go", "ready",
    "roots", "sleep",
    # leases (issue 3)
    "Coordinator", "CoordinatorError", "FileCoordinator", "Lease", "RedisCoordinator",
    "current_lease",
    # snapshot shapes (issue 7)
    "GroupSnapshot", "LeaseSnapshot", "TaskSnapshot",
    # coroutines (issue 9)
    "AsyncGroup", "AsyncSupervisor", "AsyncTask",
}


def test_all_is_the_expected_surface() -> None:
    assert set(corral.__all__) == EXPECTED


def test_every_public_name_reports_module_corral() -> None:
    for name in corral.__all__:
        obj = getattr(corral, name)
        assert obj.__module__ == "corral", f"corral.{name} says {obj.__module__}"


def test_error_hierarchy() -> None:
    assert issubclass(corral.Cancelled, BaseException)
    assert not issubclass(corral.Cancelled, Exception)
    for name in ("DuplicateTaskName", "GroupClosed", "SupervisorStopped", "StopTimeout",
                 "RestartLimitExceeded", "NotReady", "LeaseLost", "CoordinatorError"):
        assert issubclass(getattr(corral, name), corral.CorralError), name
    assert issubclass(corral.CorralError, Exception)
    assert issubclass(corral.Stopped, Exception)
    assert issubclass(corral.Replaced, Exception)
    assert not issubclass(corral.Stopped, corral.CorralError)
