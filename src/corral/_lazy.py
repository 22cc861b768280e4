"""The lease modules (coordinators, file locks, Redis, the campaign), loaded when first needed.

A plain group never needs them, and loading them (``re`` patterns, ``pathlib``,
``urllib.parse``, ``random``...) was a good part of ``import corral``. Groups call the
functions below (each imports its module on its first call); ``corral.FileCoordinator``
and the other public lease names load their module through the package's
``__getattr__`` and :func:`lease_export`. ``tests/test_imports.py`` pins what
``import corral`` loads.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any


__all__ = ["LEASE_EXPORTS", "SNAPSHOT_EXPORTS", "lease_export", "snapshots"]

# The public lease names, exported by corral (on first access), and their modules.
LEASE_EXPORTS = {
    "Coordinator": "_coordinator",
    "FileCoordinator": "_file_coordinator",
    "Lease": "_coordinator",
    "RedisCoordinator": "_redis_coordinator",
    "current_lease": "_coordinator",
}


# The snapshot shapes (TypedDicts: a few milliseconds to build, so built on first use).
SNAPSHOT_EXPORTS = ("GroupSnapshot", "LeaseSnapshot", "TaskSnapshot")


def snapshots() -> ModuleType:
    from . import _snapshot

    for name in SNAPSHOT_EXPORTS:
        getattr(_snapshot, name).__module__ = "corral"
    return _snapshot


def lease_export(name: str) -> Any:
    """The public lease name ``name``, its module imported now if it was not (each
    module sets ``__module__ = "corral"`` on its public names itself)."""
    return getattr(importlib.import_module(f".{LEASE_EXPORTS[name]}", __package__), name)


# What groups use of the lease modules (typed where they import them, see _group).


def check_coordinator(value: object) -> Any:
    if value is None:  # the common case: nothing to load
        return None
    from ._choose_coordinator import check_coordinator

    return check_coordinator(value)


def check_lease_name(name: str) -> Any:
    from ._coordinator import check_lease_name

    return check_lease_name(name)


def default_coordinator() -> Any:
    from ._choose_coordinator import default_coordinator

    return default_coordinator()


def lease_clock() -> Any:
    from ._coordinator import lease_clock

    return lease_clock()


def campaign(*args: Any) -> Any:
    from ._campaign import campaign

    return campaign(*args)


def LeaseRenewer(*args: Any) -> Any:  # a class there
    from ._campaign import LeaseRenewer

    return LeaseRenewer(*args)


def release_after_run(*args: Any) -> Any:
    from ._campaign import release_after_run

    return release_after_run(*args)
