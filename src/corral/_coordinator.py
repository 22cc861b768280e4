"""Leases and the coordinators that hand them out, and which coordinator a group uses.

A singleton task runs only in the process that holds the lease named after it. This
module holds what every backend shares:

- :class:`Lease` (name, fence, owner, deadline; lost or released) and
  :func:`current_lease`;
- :class:`Coordinator`, the interface a backend implements (try-acquire with a
  fencing token, renew, release, observe), and :func:`check_lease_name`;
- the process-wide state: the lease names this process is asking for or running
  under (one run of a name at a time), the leases it holds through a file descriptor,
  and the fork handler that drops both in a child.

The backends are :class:`corral.FileCoordinator` (``_file_coordinator``) and
:class:`corral.RedisCoordinator` (``_redis_coordinator``); they import this module.
Choosing one (a URL, a directory, ``CORRAL_COORDINATOR``) is ``_choose_coordinator``;
the runner side (campaign, renewal, release) is ``_campaign``.
"""

from __future__ import annotations

import abc
import functools
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._context import current as _current
from ._errors import LeaseLost
from ._token import _cancelled_from, _check_seconds

__all__ = [
    "Coordinator",
    "Lease",
    "check_lease_name",
    "current_lease",
    "lease_clock",
]

if hasattr(time, "CLOCK_BOOTTIME"):
    # CLOCK_MONOTONIC stops while the machine is suspended: after a laptop or VM
    # resumes, a holder would believe little time had passed. BOOTTIME counts it.
    lease_clock: Callable[[], float] = functools.partial(time.clock_gettime, time.CLOCK_BOOTTIME)
else:  # pragma: no cover - not Linux
    lease_clock = time.monotonic

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,199}")
_NAME_RULE = (
    "1 to 200 characters: letters, digits and _ . : @ + = - (not starting with . : @ + = -)"
)
_OWNER_CLEAN = re.compile(r"[^\x21-\x7e]")  # shown in logs and snapshots: printable ASCII


def check_lease_name(name: str) -> str:
    """A lease name becomes a Redis key and a file name: keep it to a safe alphabet."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"singleton task name {name!r} cannot name a lease (it becomes a Redis key and a "
            f"file name); use {_NAME_RULE}"
        )
    return name


def check_positive(what: str, value: float) -> float:
    """A backend's setting in seconds: a finite number > 0."""
    _check_seconds(what, value)
    if not 0 < value < math.inf:
        raise ValueError(f"{what} must be a finite number of seconds > 0, not {value!r}")
    return float(value)


def clean_owner(owner: str) -> str:
    """An owner as a backend stores and shows it: printable ASCII, at most 200 characters."""
    return _OWNER_CLEAN.sub("?", owner)[:200] or "?"


def _hostname() -> str:
    # (os.uname rather than socket: importing corral stays cheap)
    return os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "?")


_OWNER = f"{_hostname()}:{os.getpid()}"


def process_owner() -> str:
    """This process as a lease's owner: ``"host:pid"`` (another one in a forked child)."""
    return _OWNER


# -- the lease -----------------------------------------------------------------------------


class Lease:
    """A lease on a name: the fencing token, the owner, and a deadline.

    A holder's lease is valid until ``deadline`` (on :func:`lease_clock`, computed by
    the holder from its last successful renewal) unless it was lost before. The
    ``fence`` rises with every acquisition of the name: pass it to the resources you
    write, and have them reject a fence lower than the highest they have seen.

    ``secret`` (read-only) is what proves the lease is ours: the value the campaign
    gave the coordinator's ``try_acquire``, which a backend compares when it renews or
    releases the lease. It is None on a lease that describes another holder (what
    ``observe`` and ``seen`` return).
    """

    __slots__ = (
        "__weakref__",
        "_handle",
        "_lock",
        "_lost",
        "_on_lost",
        "_released",
        "_secret",
        "deadline",
        "fence",
        "name",
        "owner",
    )

    def __init__(
        self,
        name: str,
        fence: int,
        owner: str,
        deadline: float,
        *,
        secret: str | None = None,
        handle: Any = None,
    ) -> None:
        self.name = name
        self.fence = fence
        self.owner = owner
        self.deadline = deadline
        self._secret = secret
        # The backend's hold on the lease (FileCoordinator: the locked file's descriptor).
        self._handle = handle
        self._lock = threading.Lock()
        # Set when the lease stops being valid: lost, or released (then _released too).
        self._lost: LeaseLost | None = None
        self._released = False
        self._on_lost: Callable[[LeaseLost], object] | None = None

    def __repr__(self) -> str:
        left = self.remaining()
        until = "no expiry" if left == math.inf else f"{left:.3g}s left"
        state = " released" if self._released else " lost" if self._lost is not None else ""
        return f"<corral.Lease {self.name!r} fence={self.fence} owner={self.owner!r} {until}{state}>"

    @property
    def secret(self) -> str | None:
        """What proves the lease is ours (see the class docstring); None for another
        holder's."""
        return self._secret

    @property
    def lost(self) -> LeaseLost | None:
        """Why the lease was lost (a :class:`corral.LeaseLost`), or None (also once it
        was released: a graceful release is not a loss)."""
        return None if self._released else self._lost

    def remaining(self) -> float:
        """Seconds until the deadline (``math.inf`` for a lease with no expiry; 0 if lost)."""
        if self._lost is not None:
            return 0.0
        if self.deadline == math.inf:
            return math.inf
        return max(0.0, self.deadline - lease_clock())

    def valid(self) -> bool:
        """True while the lease is held: not lost, and its deadline not passed."""
        if self._lost is not None:
            return False
        if self.deadline != math.inf and lease_clock() >= self.deadline:
            self._lose(LeaseLost(
                f"lease {self.name!r} (fence {self.fence}) expired: no successful renewal in time"
            ))
            return False
        return True

    def check(self) -> None:
        """Raise ``corral.Cancelled`` (cause :class:`corral.LeaseLost`) unless valid.

        Call it right before each side effect the lease guards; a paused process
        (GC, ``SIGSTOP``, a suspended VM) finds out here before it acts."""
        if not self.valid():
            assert self._lost is not None
            raise _cancelled_from(self._lost)

    def _end_of_run(self) -> None:
        """The guarded work returned: from here on the lease is not valid (released, not
        "lost", unless it was lost before), and nobody is told of a loss any more."""
        with self._lock:
            if self._lost is None:
                self._lost = LeaseLost(
                    f"lease {self.name!r} (fence {self.fence}) was released: its task "
                    "ended, so it is no longer held"
                )
                self._released = True
                self._on_lost = None

    def _watch(self, on_lost: Callable[[LeaseLost], object]) -> None:
        """Call ``on_lost(cause)`` once, when the lease is lost (the task that holds it)."""
        self._on_lost = on_lost

    def _lose(self, cause: LeaseLost) -> bool:
        """Mark the lease lost (the first cause wins) and tell the runner once."""
        with self._lock:
            if self._lost is not None:
                return False
            self._lost = cause
            callback = self._on_lost
        if callback is not None:
            callback(cause)
        return True


def current_lease() -> Lease | None:
    """The lease of the running singleton task (name, fence, owner, deadline), or None
    outside a singleton task."""
    task = _current.get()
    if task is None or task._lease_state is None:
        return None
    return task._lease_state.lease


# -- coordinators --------------------------------------------------------------------------


class Coordinator(abc.ABC):
    """Hands out leases on names. One process (or thread) holds a name at a time.

    ``ttl`` is how long a lease lives without renewal (None: until released, as with a
    file lock); ``validity`` is how long a holder may trust it after sending a renewal
    (``ttl`` minus a 1% drift allowance and ``stop_margin``); ``renew_interval`` is how
    often the holder renews; ``poll_interval`` how often a campaigner tries again.

    A backend of your own implements the four abstract methods, sets those four
    attributes, and builds each :class:`Lease` it grants with the ``secret`` it was
    given (``renew`` and ``release`` compare ``lease.secret``).
    """

    ttl: float | None = None
    validity: float = math.inf
    renew_interval: float = 1.0
    poll_interval: float = 0.1
    _seen_holders: dict[str, Lease]  # (made on first use: a subclass need not call __init__)

    @abc.abstractmethod
    def try_acquire(self, name: str, *, owner: str, secret: str) -> Lease | None:
        """Take the lease on ``name`` if nobody holds it; None if somebody does.

        Idempotent for the same ``secret``: a retry after a lost reply gets the same
        lease back. Raises :class:`corral.CoordinatorError` if the backend cannot be
        asked (the caller must then assume nothing: not held)."""

    @abc.abstractmethod
    def renew(self, lease: Lease) -> bool:
        """Extend a held lease to a full ``ttl`` from now: True if it is still ours,
        False if it is gone or someone else's (definitive). Raises
        :class:`corral.CoordinatorError` on a transient failure."""

    @abc.abstractmethod
    def release(self, lease: Lease) -> None:
        """Give the lease up if it is still ours (a no-op otherwise)."""

    @abc.abstractmethod
    def observe(self, name: str) -> Lease | None:
        """Who holds ``name`` now (a :class:`Lease` without its secret, ``owner`` is
        ``"host:pid"``), or None. Asks the backend (FileCoordinator: a few system calls;
        RedisCoordinator: one round trip, at most ``op_timeout``). The built-in
        coordinators never raise here: None also when the backend cannot be asked."""

    def seen(self, name: str) -> Lease | None:
        """Who held ``name`` when this process's campaign for it last asked (a
        :class:`Lease` without its secret: ``owner`` is ``"host:pid"``, and ``fence``),
        or None: nobody, no campaign of this process is asking, or the backend does not
        say. No I/O, never raises: for snapshots and status pages. (A coordinator of
        your own can report what its ``try_acquire`` saw with :meth:`note_holder`.)"""
        seen: dict[str, Lease] | None = getattr(self, "_seen_holders", None)
        return None if seen is None else seen.get(name)

    def note_holder(self, name: str, holder: Lease | None) -> None:
        """Remember who holds ``name`` (None: forget it), for :meth:`seen`."""
        seen: dict[str, Lease] | None = getattr(self, "_seen_holders", None)
        if seen is None:
            if holder is None:
                return
            seen = self._seen_holders = {}
        if holder is None:
            seen.pop(name, None)
        else:
            seen[name] = holder

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release the backend's resources (connections)."""

    def describe(self) -> str:
        """The backend and where it keeps its leases, for messages."""
        return type(self).__name__

    # Why a renewal that returned False means the lease is gone (the renewer's message).
    _gone = "the coordinator refused its renewal (it expired or was taken over)"


# -- process-wide state --------------------------------------------------------------------

# Leases this process holds through a file descriptor, so that a forked child can drop
# what it inherited.
_held: weakref.WeakSet[Lease] = weakref.WeakSet()
_held_lock = threading.Lock()

# Lease names this process is asking for or running under, whatever the coordinator or
# supervisor: one run of a name at a time in a process, even if an earlier run lost its
# lease and has not returned yet (threads cannot be killed), and only one campaigner
# of a process asks the backend at a time.
_asking: set[str] = set()
_asking_lock = threading.Lock()


def register_held(lease: Lease) -> None:
    """Note a lease whose handle is a file descriptor (closed in a forked child)."""
    with _held_lock:
        _held.add(lease)


def take_handle(lease: Lease) -> Any:
    """Forget a held lease and take its handle (None once taken): the caller, the only
    one that gets it, closes it."""
    with _held_lock:
        _held.discard(lease)
        handle, lease._handle = lease._handle, None
    return handle


def reserve(name: str) -> bool:
    """Claim ``name`` for one campaign or run of this process; False if it is taken."""
    with _asking_lock:
        if name in _asking:
            return False
        _asking.add(name)
        return True


def unreserve(name: str) -> None:
    with _asking_lock:
        _asking.discard(name)


def _after_fork_in_child() -> None:
    global _OWNER, _held_lock, _asking_lock
    _OWNER = f"{_hostname()}:{os.getpid()}"
    # (new locks: a thread of the parent may have held one at the fork, and is gone)
    _held_lock = threading.Lock()
    _asking_lock = threading.Lock()
    _asking.clear()
    for lease in list(_held):
        # The child is not the holder: its copy of the lease is lost from the start.
        # A file lock is dropped by closing the inherited descriptor, never by LOCK_UN
        # (that would release the parent's lock too).
        lease._lost = LeaseLost(f"lease {lease.name!r} was inherited across fork")
        lease._on_lost = None
        if isinstance(lease._handle, int):
            try:
                os.close(lease._handle)
            except OSError:
                pass
            lease._handle = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Tracebacks and reprs say corral.Lease, not corral._coordinator.Lease (this module
# loads on first use, so it fixes its own names rather than the package's __init__).
for _public in (Coordinator, Lease, current_lease):
    _public.__module__ = "corral"
del _public
