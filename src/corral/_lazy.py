"""The lease module (file locks, Redis: ``_lease``), loaded when it is first needed.

A plain group never needs it, and loading it (``re`` patterns, ``pathlib``,
``urllib.parse``, ``random``...) was a good part of ``import corral``. Groups call the
functions below (each loads ``_lease`` on its first call); ``corral.FileCoordinator``
and the other public lease names load it through the package's ``__getattr__``.
``tests/test_imports.py`` pins what ``import corral`` loads.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["LEASE_EXPORTS", "SNAPSHOT_EXPORTS", "leases", "snapshots"]

# The lease module's public names, exported by corral (on first access).
LEASE_EXPORTS = ("Coordinator", "FileCoordinator", "Lease", "RedisCoordinator", "current_lease")


# The snapshot shapes (TypedDicts: a few milliseconds to build, so built on first use).
SNAPSHOT_EXPORTS = ("GroupSnapshot", "LeaseSnapshot", "TaskSnapshot")


def snapshots() -> ModuleType:
    from . import _snapshot

    for name in SNAPSHOT_EXPORTS:
        getattr(_snapshot, name).__module__ = "corral"
    return _snapshot


def leases() -> ModuleType:
    """The lease module, imported now if it was not; its public names report module
    ``corral`` (as every public name does)."""
    from . import _lease

    if _lease.current_lease.__module__ != "corral":
        for name in LEASE_EXPORTS:
            getattr(_lease, name).__module__ = "corral"
    return _lease


# What groups use of the lease module (typed where they import them, see _group).


def check_coordinator(value: object) -> Any:
    if value is None:  # the common case: nothing to load
        return None
    return leases().check_coordinator(value)


def check_lease_name(name: str) -> Any:
    return leases().check_lease_name(name)


def default_coordinator() -> Any:
    return leases().default_coordinator()


def campaign(*args: Any) -> Any:
    return leases().campaign(*args)


def Keeper(*args: Any) -> Any:  # a class there
    return leases().Keeper(*args)


def lease_clock() -> Any:
    return leases().lease_clock()


def release_after_run(*args: Any) -> Any:
    return leases().release_after_run(*args)
