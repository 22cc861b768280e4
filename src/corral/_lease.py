"""Leases: a singleton task runs only in the process that holds the lease named after it.

A :class:`Coordinator` hands out leases (try-acquire with a fencing token, renew,
release, observe). Two backends:

- :class:`FileCoordinator` (the default): ``flock`` on a per-name lock file, one host.
  The kernel releases the lock when the holder dies; the file is never unlinked; the
  fence counter lives in the file.
- :class:`RedisCoordinator`: a lease with a server-side TTL on one Redis (or a primary
  with replicas), Lua compare-and-renew / compare-and-release, a fence from ``INCR``
  floored by the server's clock so it never goes backwards.

The runner side (campaign, renewal, loss) is :func:`campaign` and :class:`Keeper`; the
group calls them around a singleton's attempt. See ``notes/leases.md`` for the protocol.
"""

from __future__ import annotations

import abc
import errno
import functools
import logging
import math
import os
import random
import re
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import CoordinatorError, LeaseLost
from ._task import _current
from ._token import _cancelled_from, _check_seconds

if TYPE_CHECKING:
    from ._token import Token

if sys.platform != "win32":  # (corral itself imports anywhere; file leases need flock)
    import fcntl

__all__ = [
    "Coordinator",
    "FileCoordinator",
    "Lease",
    "RedisCoordinator",
    "current_lease",
    "default_coordinator",
    "lease_clock",
]

log = logging.getLogger("corral")

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
_DRIFT = 0.01  # clock-rate allowance: 1% of the TTL (Redlock, pottery)


def _hostname() -> str:
    # (os.uname rather than socket: importing corral stays cheap)
    return os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "?")


_OWNER = f"{_hostname()}:{os.getpid()}"


def check_lease_name(name: str) -> str:
    """A lease name becomes a Redis key and a file name: keep it to a safe alphabet."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"singleton task name {name!r} cannot name a lease (it becomes a Redis key and a "
            f"file name); use {_NAME_RULE}"
        )
    return name


def _owner() -> str:
    # Recomputed after fork (a child is another owner).
    return _OWNER


# -- the lease -----------------------------------------------------------------------------


class Lease:
    """A lease on a name: the fencing token, the owner, and a deadline.

    A holder's lease is valid until ``deadline`` (on :func:`lease_clock`, computed by
    the holder from its last successful renewal) unless it was lost before. The
    ``fence`` rises with every acquisition of the name: pass it to the resources you
    write, and have them reject a fence lower than the highest they have seen.
    """

    __slots__ = (
        "__weakref__",
        "_coordinator",
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
        coordinator: Coordinator | None = None,
        handle: Any = None,
    ) -> None:
        self.name = name
        self.fence = fence
        self.owner = owner
        self.deadline = deadline
        self._secret = secret
        self._coordinator = coordinator
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
    if task is None or task._single is None:
        return None
    return task._single.lease


# -- coordinators --------------------------------------------------------------------------


class Coordinator(abc.ABC):
    """Hands out leases on names. One process (or thread) holds a name at a time.

    ``ttl`` is how long a lease lives without renewal (None: until released, as with a
    file lock); ``validity`` is how long a holder may trust it after sending a renewal
    (``ttl`` minus a 1% drift allowance and ``stop_margin``); ``renew_interval`` is how
    often the holder renews; ``poll_interval`` how often a campaigner tries again.
    """

    ttl: float | None = None
    validity: float = math.inf
    renew_interval: float = 1.0
    poll_interval: float = 0.1
    _seen_holders: dict[str, Lease]  # (made on first use: see seen())

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
        your own can report what its ``try_acquire`` saw with ``self._saw(name, lease)``.)"""
        seen: dict[str, Lease] | None = getattr(self, "_seen_holders", None)
        return None if seen is None else seen.get(name)

    def _saw(self, name: str, holder: Lease | None) -> None:
        """Remember who holds ``name`` (None: forget), for :meth:`seen`."""
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
        return type(self).__name__

    # Why a renewal that returned False means the lease is gone (the Keeper's message).
    _gone = "the coordinator refused its renewal (it expired or was taken over)"


# Leases held by this process, so that a forked child can drop what it inherited.
_held: weakref.WeakSet[Lease] = weakref.WeakSet()
_held_lock = threading.Lock()

# Lease names this process is asking for or running under, whatever the coordinator or
# supervisor: one run of a name at a time in a process, even if an earlier run lost its
# lease and has not returned yet (threads cannot be killed), and only one campaigner
# of a process asks the backend at a time.
_local: set[str] = set()
_local_lock = threading.Lock()


def _reserve(name: str) -> bool:
    with _local_lock:
        if name in _local:
            return False
        _local.add(name)
        return True


def _unreserve(name: str) -> None:
    with _local_lock:
        _local.discard(name)


def _after_fork_in_child() -> None:
    global _OWNER, _held_lock, _local_lock
    _OWNER = f"{_hostname()}:{os.getpid()}"
    _held_lock = threading.Lock()
    _local_lock = threading.Lock()
    _local.clear()
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


def _default_lock_dir() -> Path:
    """``$XDG_RUNTIME_DIR/corral`` if that runtime directory is this user's (as the XDG
    spec requires: a ``sudo`` may pass on another user's), else ``<tmp>/corral-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.lstat(runtime)
        except OSError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022:
                return Path(runtime) / "corral"
    import tempfile  # (here: it imports shutil, bz2 and lzma, which corral needs nowhere else)

    return Path(tempfile.gettempdir()) / f"corral-{os.getuid()}"


# Fences fit a signed 64-bit integer (a BIGINT column): a record whose fence is not a
# decimal number below this (a damaged or planted file) is ignored, and the next fence
# comes from the wall clock.
_FENCE_MAX = 2**63 - 1
_FENCE_RE = re.compile(rb"[0-9]{1,19}")
# "<fence> <owner> ino=<inode>\n": the inode says which file the record was written in.
_RECORD_RE = re.compile(rb"([0-9]{1,19}) (\S{1,200}) ino=([0-9]{1,20})\n")
_OWNER_CLEAN = re.compile(r"[^\x21-\x7e]")  # shown in logs and snapshots: printable ASCII


def _clean_owner(owner: str) -> str:
    return _OWNER_CLEAN.sub("?", owner)[:200] or "?"


def _read_record(data: bytes) -> tuple[int | None, str | None, int | None]:
    """(fence, owner, inode) from a lock file's bytes; None for what is not there."""
    m = _RECORD_RE.fullmatch(data)
    if m is not None:
        fence = int(m[1])
        if fence >= _FENCE_MAX:
            return None, None, None
        return fence, _clean_owner(m[2].decode("ascii", "replace")), int(m[3])
    # An older record ("<fence> <owner>"), or a damaged one: its fence, if it has one.
    head = data.split(maxsplit=1)
    if head and _FENCE_RE.fullmatch(head[0]) and int(head[0]) < _FENCE_MAX:
        return int(head[0]), None, None
    return None, None, None


class FileCoordinator(Coordinator):
    """Leases on one host: ``flock`` on a lock file per name in ``directory``.

    The default directory is ``$XDG_RUNTIME_DIR/corral`` (or ``<tmp>/corral-<uid>``),
    made with mode 0700; it must be this user's and writable by nobody else (one that
    another user made first is refused). A directory you name is made too (not its
    parents), and must not be writable by every user; neither may be a symbolic link.

    The kernel releases a dead holder's lock at once, so another process takes over
    within one ``poll_interval``. Lock files are never unlinked (that would let two
    processes hold "the" lock); each holds ``<fence> <owner> ino=<inode>``. Fences rise
    with every acquisition and are floored by the wall clock in microseconds, so they
    keep rising across reboots (a tmpfs forgets the file).

    A lock file that is removed or replaced under its holder breaks the lock: the
    holder finds out within ``check_interval`` and is cancelled. So a lock file that
    is new (no record of its own inode: the first use of a name, or a file that was
    removed or replaced) is granted only ``settle`` = 2 x ``check_interval`` after this
    process first saw it: by then any holder of the old file has stopped. Processes
    sharing a directory should use the same ``check_interval``.

    There is no TTL: a paused but live holder keeps its lease. Local filesystems only
    (``flock`` over NFS is emulated and unreliable).
    """

    _gone = "its lock file was removed or replaced"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        poll_interval: float = 0.1,
        check_interval: float = 0.5,
    ) -> None:
        if sys.platform == "win32":  # pragma: no cover
            raise CoordinatorError("FileCoordinator needs flock (POSIX); use RedisCoordinator")
        _check_positive("poll_interval", poll_interval)
        _check_positive("check_interval", check_interval)
        private = directory is None
        if directory is None:
            self.directory = _default_lock_dir()
        else:
            if not isinstance(directory, str | os.PathLike):
                raise TypeError(f"directory must be a path or None, not {type(directory).__name__}")
            raw = os.fspath(directory)
            if not isinstance(raw, str):
                raise TypeError(f"directory must be a str path, not {type(raw).__name__}")
            if not raw:
                raise ValueError(
                    "FileCoordinator(directory='') names no directory: give a path "
                    "(or None for the per-user default)"
                )
            # Absolute now: a later chdir must not move the locks (two holders).
            self.directory = Path(os.path.abspath(raw))
        self.poll_interval = float(poll_interval)
        self.renew_interval = float(check_interval)
        self.settle = 2 * self.renew_interval
        import hashlib  # (here: it loads OpenSSL, a few MiB that only file leases need)

        self._sha256 = hashlib.sha256
        # name -> (device, inode) of a new lock file, and when this process first saw it
        self._new: dict[str, tuple[tuple[int, int], float]] = {}
        self._make_directory(private)

    def _make_directory(self, private: bool) -> None:
        d = self.directory
        hint = "give FileCoordinator(directory=...) (or CORRAL_COORDINATOR) a writable directory"
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError as e:
            raise CoordinatorError(
                f"cannot create the lease directory {str(d)!r}: its parent {str(d.parent)!r} "
                "does not exist (corral makes only the last component: check the path)"
            ) from e
        except OSError as e:
            raise CoordinatorError(
                f"cannot create the lease directory {str(d)!r}: {e.strerror or e}; {hint}"
            ) from e
        try:
            st = os.lstat(d)
        except OSError as e:
            raise CoordinatorError(f"lease directory {str(d)!r}: {e.strerror or e}") from e
        if stat.S_ISLNK(st.st_mode):
            raise CoordinatorError(
                f"lease directory {str(d)!r} is a symbolic link (to {os.readlink(d)!r}): "
                "corral does not follow links there; give the directory itself"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise CoordinatorError(f"lease directory {str(d)!r} is not a directory")
        mode = stat.S_IMODE(st.st_mode)
        if private:
            if st.st_uid != os.getuid():
                raise CoordinatorError(
                    f"the default lease directory {str(d)!r} belongs to uid {st.st_uid}, not "
                    f"to this user (uid {os.getuid()}): someone else made it and could tamper "
                    "with the leases in it. Remove it (corral makes it again, private), or "
                    "give FileCoordinator(directory=...) (or CORRAL_COORDINATOR) a directory "
                    "of your own"
                )
            if mode & 0o022:
                raise CoordinatorError(
                    f"the default lease directory {str(d)!r} is writable by "
                    f"{'others' if mode & 0o002 else 'its group'} (mode {mode:04o}): it must "
                    f"be private to this user (chmod 700 {d}), or give "
                    "FileCoordinator(directory=...) (or CORRAL_COORDINATOR) another directory"
                )
        elif mode & 0o002:
            raise CoordinatorError(
                f"lease directory {str(d)!r} is writable by every user (mode {mode:04o}): "
                "anyone could plant or remove its lock files; use a directory that only "
                "this user (or a group of trusted users) can write, such as a new one inside it"
            )
        if not os.access(d, os.W_OK | os.X_OK):
            raise CoordinatorError(
                f"lease directory {str(d)!r} is not writable by this user; {hint}"
            )

    def __repr__(self) -> str:
        return f"<corral.FileCoordinator {str(self.directory)!r}>"

    def describe(self) -> str:
        return f"FileCoordinator({str(self.directory)!r})"

    def path(self, name: str) -> Path:
        """The lock file of ``name`` (the hash keeps names apart on case-insensitive
        filesystems)."""
        digest = self._sha256(name.encode()).hexdigest()[:12]
        return self.directory / f"{name}-{digest}.lock"

    def _open(self, path: Path) -> int:
        # No O_TRUNC: a hard link planted at the path must not truncate the file it
        # names; the record is written in place once the lock is held and checked.
        # O_NONBLOCK: opening a FIFO planted there must not hang.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            return os.open(path, flags, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CoordinatorError(
                    f"lock file {str(path)!r} is a symbolic link: corral does not follow "
                    "links there (remove it)"
                ) from e
            raise CoordinatorError(f"cannot open lock file {str(path)!r}: {e.strerror or e}") from e

    def try_acquire(self, name: str, *, owner: str, secret: str) -> Lease | None:
        path = self.path(name)
        fd = self._open(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._saw(name, _holder_in(fd, name))
                os.close(fd)
                return None
            except OSError as e:
                raise CoordinatorError(f"cannot lock {str(path)!r}: {e.strerror or e}") from e
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CoordinatorError(f"lock file {str(path)!r} is not a regular file (remove it)")
            if st.st_nlink > 1:
                raise CoordinatorError(
                    f"lock file {str(path)!r} has {st.st_nlink} links: another path names the "
                    "same file (a planted hard link?); corral writes only to a lock file of "
                    "its own (remove it)"
                )
            if st.st_nlink == 0 or not _names(path, st):
                # Removed or replaced between our open and our lock: this lock guards
                # nothing. (The next poll opens whatever the path names now.)
                os.close(fd)
                return None
            data = os.pread(fd, 512, 0)
            last, _, ino = _read_record(data)
            damaged = last is None and bool(data.strip())
            if ino != st.st_ino and not self._settled(name, path, st, damaged):
                os.close(fd)
                return None
            self._new.pop(name, None)
            # Floored by the wall clock in microseconds, as on Redis: the default
            # directory is usually a tmpfs, and a counter that starts again at 1 after a
            # reboot would make every fenced write look stale.
            fence = max((last or 0) + 1, time.time_ns() // 1000)
            owner = _clean_owner(owner)
            record = f"{fence} {owner} ino={st.st_ino}\n".encode()
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
            os.fsync(fd)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
        self._saw(name, None)
        lease = Lease(name, fence, owner, math.inf, secret=secret, coordinator=self, handle=fd)
        with _held_lock:
            _held.add(lease)
        return lease

    def _settled(self, name: str, path: Path, st: os.stat_result, damaged: bool) -> bool:
        """Whether a new lock file (no record of its own inode) may be granted: only
        ``settle`` after this process first saw it, so that a holder of a file that was
        removed or replaced (which new contenders cannot see) has noticed by its next
        check (every ``check_interval``) and stopped. On the process's own clock."""
        key, now = (st.st_dev, st.st_ino), lease_clock()
        first = self._new.get(name)
        if first is None or first[0] != key:
            self._new[name] = (key, now)
            self._saw(name, None)
            if damaged:
                log.warning(
                    "lease %r: lock file %s holds no valid fence record (damaged, or not "
                    "written by corral): the next fence comes from the wall clock", name,
                    str(path),
                )
            log.info(
                "lease %r: lock file %s is new (the name's first use here, or the file was "
                "removed or replaced); waiting %.3gs (2 x check_interval) before the first "
                "grant, so that a holder of a removed file has stopped", name, str(path),
                self.settle,
            )
            return False
        return now - first[1] >= self.settle

    def renew(self, lease: Lease) -> bool:
        fd = lease._handle
        if fd is None:
            return False
        # There is nothing to extend; check that the lock still guards the named file.
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        return st.st_nlink > 0 and _names(self.path(lease.name), st)

    def release(self, lease: Lease) -> None:
        with _held_lock:
            _held.discard(lease)
            fd, lease._handle = lease._handle, None
        if fd is not None:
            os.close(fd)  # closing drops the flock; the file stays (never unlinked)

    def observe(self, name: str) -> Lease | None:
        try:
            fd = os.open(
                self.path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            )
        except OSError:
            return None  # no file (nobody ever held it), or it cannot be read
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder_in(fd, name)
            except OSError:
                return None
            return None  # nobody holds it (closing our fd drops the shared lock)
        finally:
            os.close(fd)


def _holder_in(fd: int, name: str) -> Lease | None:
    """The holder recorded in a locked lock file; None unless the record was written
    in this very file (a contender checking a new file holds the lock for a moment)."""
    try:
        st = os.fstat(fd)
        fence, owner, ino = _read_record(os.pread(fd, 512, 0))
    except OSError:
        return None
    if fence is None or owner is None or ino != st.st_ino:
        return None
    return Lease(name, fence, owner, math.inf)


def _names(path: Path, st: os.stat_result) -> bool:
    """Whether ``path`` (not following a link) names the file whose status is ``st``."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _check_positive(what: str, value: float) -> float:
    _check_seconds(what, value)
    if not 0 < value < math.inf:
        raise ValueError(f"{what} must be a finite number of seconds > 0, not {value!r}")
    return float(value)


# -- Redis ---------------------------------------------------------------------------------

_ACQUIRE = """
local ttl = tonumber(ARGV[2])
if not ttl or ttl <= 0 then return redis.error_reply('ttl must be > 0') end
local cur = redis.call('HGET', KEYS[1], 'token')
if cur then
  if cur == '' then
    -- the wait of one ttl below (no fence record): nobody holds the name
    return {2, redis.call('PTTL', KEYS[1])}
  end
  if cur == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ttl)
    return {1, tonumber(redis.call('HGET', KEYS[1], 'fence'))}
  end
  return {0, redis.call('PTTL', KEYS[1]), redis.call('HGET', KEYS[1], 'owner') or '',
          redis.call('HGET', KEYS[1], 'fence') or '0'}
end
local t = redis.call('TIME')
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- No fence counter: this Redis never saw the name, or lost its data (a restart
  -- without persistence, FLUSHALL, eviction). A holder from before the loss may still
  -- believe it holds the lease until its own deadline, less than one ttl after its last
  -- renewal: grant nothing for one ttl (a placeholder with an empty token).
  local floor0 = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', floor0))
  redis.call('HSET', KEYS[1], 'token', '', 'fence', '0', 'owner', '')
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {2, ttl}
end
local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = redis.call('INCR', KEYS[2])
if fence < floor then
  redis.call('SET', KEYS[2], string.format('%.0f', floor))
  fence = floor
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fence', string.format('%.0f', fence), 'owner', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, fence}
"""

_RENEW = """
local ttl = tonumber(ARGV[2])
if not ttl or ttl <= 0 then return redis.error_reply('ttl must be > 0') end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
"""

_RELEASE = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# One script rather than MULTI/HGETALL/PTTL/EXEC: the user needs no more commands.
_OBSERVE = """
local tok = redis.call('HGET', KEYS[1], 'token')
if not tok or tok == '' then return {0} end
return {1, redis.call('PTTL', KEYS[1]), redis.call('HGET', KEYS[1], 'owner') or '',
        redis.call('HGET', KEYS[1], 'fence') or '0'}
"""

# Run at construction on a name no task can have (it starts with "."): every command
# the scripts above use, checked first where Redis can say which one is refused (7.0+:
# redis.acl_check_cmd), then run once, so a refused permission, a read-only replica or
# a server that cannot run the scripts shows now and not as a campaign that never
# ends. It leaves nothing behind (what it makes expires even if the DEL is refused).
_PROBE = """
local used = {
  {'time'}, {'exists', KEYS[2]}, {'hget', KEYS[1], 'token'}, {'pttl', KEYS[1]},
  {'pexpire', KEYS[1], '10000'}, {'set', KEYS[2], '1'}, {'incr', KEYS[2]},
  {'hset', KEYS[1], 'token', ''}, {'del', KEYS[1]},
}
if redis.acl_check_cmd then
  for _, c in ipairs(used) do
    if not redis.acl_check_cmd(unpack(c)) then return {0, c[1]} end
  end
end
redis.call('TIME')
redis.call('EXISTS', KEYS[2])
redis.call('HGET', KEYS[1], 'token')
redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 10000)
redis.call('SET', KEYS[2], '1', 'PX', 10000)
redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'token', '', 'fence', '0', 'owner', '')
redis.call('PEXPIRE', KEYS[1], 10000)
redis.call('DEL', KEYS[1], KEYS[2])
return {1}
"""
_PROBE_NAME = ".probe"  # not a valid task name: no lease of a task is ever touched

# What a Redis user needs (ACL): the scripts, and the commands they run, on the keys
# under the prefix. (INFO, for the version check, is optional.)
_ACL_COMMANDS = "+evalsha +script|load +time +exists +hget +hset +pttl +pexpire +set +incr +del"

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:@+=-]{1,100}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_URL_DB_RE = re.compile(r"/?|/[0-9]{1,5}/?")
# Connection settings that lease traffic sets itself (op_timeout, no hidden retries,
# bytes): a URL must not change them.
_URL_FIXED = frozenset({
    "socket_timeout", "socket_connect_timeout", "timeout", "retry_on_timeout",
    "retry_on_error", "health_check_interval", "decode_responses", "encoding",
    "encoding_errors",
})
_URL_PASSWORD_RE = re.compile(r":[^@/?#]*@")
_URL_QUERY_PASSWORD_RE = re.compile(r"(password=)[^&#]*")


def _redact(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    return _URL_QUERY_PASSWORD_RE.sub(r"\1***", _URL_PASSWORD_RE.sub(":***@", url, count=1))


def _check_redis_url(url: str) -> None:
    """Refuse a URL that does not parse whole: redis-py takes ``/notadb`` for db 0 and
    lets a query override the lease connections' timeouts. (Its own checks follow.)"""
    from urllib.parse import parse_qsl, urlsplit

    shown = _redact(url)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"not a Redis URL: {shown!r} (use redis://host:port/db, rediss://host:port/db "
            "or unix:///path/to/redis.sock)"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as e:
        raise ValueError(f"not a Redis URL: {shown!r} ({e})") from None
    if parts.fragment:
        raise ValueError(f"Redis URL {shown!r} has a fragment ('#{parts.fragment}'): remove it")
    db: str | None = None
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"Redis URL {shown!r} names no socket: unix:///path/to/redis.sock")
    else:
        if not parts.hostname:
            raise ValueError(f"Redis URL {shown!r} names no host: {scheme}://host:port/db")
        if not _URL_DB_RE.fullmatch(parts.path):
            raise ValueError(
                f"Redis URL {shown!r}: {parts.path.lstrip('/')!r} is not a database number "
                f"(the path after host:port is one: {scheme}://host:port/0)"
            )
        db = parts.path.strip("/") or None
    keys: set[str] = set()
    for key, value in query:
        if key in keys:
            raise ValueError(f"Redis URL {shown!r} gives {key}= twice")
        keys.add(key)
        if key in _URL_FIXED:
            raise ValueError(
                f"Redis URL {shown!r} sets {key}=: lease connections set their own timeouts "
                "and retries (give RedisCoordinator(op_timeout=...) instead)"
            )
        if key == "db":
            if not re.fullmatch(r"[0-9]{1,5}", value):
                raise ValueError(f"Redis URL {shown!r}: db={value!r} is not a database number")
            if db is not None and int(db) != int(value):
                raise ValueError(f"Redis URL {shown!r} names two databases: /{db} and db={value}")


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.connection
        import redis.retry
    except ImportError as e:
        if e.name not in (None, "redis") and not (e.name or "").startswith("redis."):
            raise ImportError(
                f"corral.RedisCoordinator needs the redis package, which failed to import "
                f"({e}): pip install 'corral[redis]'"
            ) from None
        raise ImportError(
            "corral.RedisCoordinator needs the redis package: pip install 'corral[redis]'"
        ) from None
    return redis


def _is_denied(text: str) -> bool:
    # NOPERM from a command, and the wording Redis 7 uses for a command inside a script
    return "no permissions" in text or "The user executing the script can't" in text


class RedisCoordinator(Coordinator):
    """Leases across hosts on one Redis (or a primary with replicas).

    ``url_or_client`` is a ``redis://`` (``rediss://``, ``unix://``) URL or a
    ``redis.Redis`` whose connection settings are copied: lease traffic always gets its
    own connections, with ``op_timeout`` as socket timeouts and no hidden retries. A URL
    must parse whole (a path that is not a database number, or a timeout in the query,
    is a ``ValueError``). Keys: ``<prefix>:{<name>}:lock`` (a hash: token, fence, owner;
    with a TTL) and ``<prefix>:{<name>}:fence`` (a counter, never deleted).

    The first acquisition of a name on a Redis without its fence counter (a name it
    never saw, or data lost in a restart without persistence) waits one ``ttl``: a
    holder from before the loss may believe it holds the lease until then. So every
    process that campaigns for a name must use the same ``ttl``.

    Defaults follow ``ttl``: renew every ``ttl/3``, stop ``ttl/5`` (``stop_margin``)
    before the lease could expire, poll every ``ttl/5``, ``op_timeout`` 1 s (at most
    half the renew interval). The server is checked at construction (``check=False``
    skips it): an unreachable Redis, a failed authentication, a user whose ACL does
    not allow the lease scripts (it needs ``+evalsha +script|load`` and the commands
    the scripts run, on ``~<prefix>:*``), a TLS URL against a plain port: each is a
    :class:`corral.CoordinatorError` here, worded for what it is, not a task that
    never runs.
    """

    def __init__(
        self,
        url_or_client: Any,
        *,
        prefix: str = "corral",
        ttl: float = 10.0,
        renew_interval: float | None = None,
        stop_margin: float | None = None,
        op_timeout: float | None = None,
        poll_interval: float | None = None,
        check: bool = True,
    ) -> None:
        ttl = _check_positive("ttl", ttl)
        if ttl < 0.5:
            raise ValueError(f"ttl must be >= 0.5 seconds, not {ttl!r}")
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(
                f"prefix must be 1 to 100 letters, digits or _ . : @ + = -, not {prefix!r}"
            )
        stop_margin = ttl / 5 if stop_margin is None else _check_positive("stop_margin", stop_margin)
        if stop_margin >= ttl / 2:
            raise ValueError(f"stop_margin ({stop_margin:g}s) must be less than ttl/2 ({ttl / 2:g}s)")
        renew_interval = (
            ttl / 3 if renew_interval is None else _check_positive("renew_interval", renew_interval)
        )
        if renew_interval > (ttl - stop_margin) / 2:
            raise ValueError(
                f"renew_interval ({renew_interval:g}s) is too long for ttl {ttl:g}s: at most "
                f"(ttl - stop_margin)/2 = {(ttl - stop_margin) / 2:g}s, so that two renewals fit "
                "before the holder must stop"
            )
        op_timeout = (
            min(1.0, renew_interval / 2) if op_timeout is None
            else _check_positive("op_timeout", op_timeout)
        )
        if op_timeout > renew_interval / 2:
            raise ValueError(
                f"op_timeout ({op_timeout:g}s) must be at most renew_interval/2 "
                f"({renew_interval / 2:g}s)"
            )
        poll_interval = ttl / 5 if poll_interval is None else _check_positive("poll_interval", poll_interval)
        if not isinstance(url_or_client, str) and not hasattr(url_or_client, "connection_pool"):
            raise TypeError(
                "url_or_client must be a redis:// URL or a redis.Redis, "
                f"not {type(url_or_client).__name__}"
            )
        if isinstance(url_or_client, str):
            _check_redis_url(url_or_client)  # (before the import: no redis needed to say so)
        redis = _import_redis()

        settings = {
            "socket_timeout": op_timeout,
            "socket_connect_timeout": op_timeout,
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            "retry_on_timeout": False,
            "health_check_interval": 0,
            "decode_responses": False,
        }
        if isinstance(url_or_client, str):
            shown = _redact(url_or_client)
            try:
                pool = redis.ConnectionPool.from_url(url_or_client, **settings)
            except ValueError as e:
                raise ValueError(f"not a Redis URL: {shown!r} ({e})") from None
            try:  # an option the connection does not take fails now, not at the first call
                pool.connection_class(**pool.connection_kwargs)
            except (TypeError, ValueError, redis.RedisError) as e:
                raise ValueError(f"Redis URL {shown!r}: {e}") from None
        elif isinstance(url_or_client, redis.Redis):
            source = url_or_client.connection_pool
            kwargs = dict(source.connection_kwargs)
            kwargs.pop("retry_on_error", None)
            kwargs.update(settings)
            pool = redis.ConnectionPool(connection_class=source.connection_class, **kwargs)
        else:
            raise TypeError(
                "url_or_client must be a redis:// URL or a redis.Redis, "
                f"not {type(url_or_client).__name__}"
            )
        self._redis = redis
        self._client = redis.Redis(connection_pool=pool)
        self.prefix = prefix
        self.ttl = ttl
        self.stop_margin = stop_margin
        self.validity = ttl * (1 - _DRIFT) - stop_margin
        self.renew_interval = renew_interval
        self.op_timeout = op_timeout
        self.poll_interval = poll_interval
        self._ttl_ms = max(1, round(ttl * 1000))
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._observe = self._client.register_script(_OBSERVE)
        self._waiting: set[str] = set()  # names whose wait of one ttl was logged
        kw = pool.connection_kwargs
        self._tls = issubclass(pool.connection_class, redis.connection.SSLConnection)
        self._user = str(kw.get("username") or "default")
        self._db = int(kw.get("db", 0) or 0)
        self._where = (
            f"unix://{kw['path']}" if "path" in kw
            else f"{'rediss' if self._tls else 'redis'}://{kw.get('host', 'localhost')}:"
            f"{kw.get('port', 6379)}/{self._db}"
        )
        if check:
            self.ping()

    def __repr__(self) -> str:
        return f"<corral.RedisCoordinator {self._where} prefix={self.prefix!r} ttl={self.ttl:g}>"

    def describe(self) -> str:
        return f"RedisCoordinator({self._where})"

    def ping(self) -> None:
        """Check that the server answers (Redis >= 5) and lets this coordinator do its
        work: authentication, and the ACL permissions the lease scripts need (run once
        on a probe name). Raise :class:`corral.CoordinatorError` saying what is wrong.

        It uses a connection of its own, with a timeout of at least 1 s: a check made
        once need not fit lease traffic's ``op_timeout``, and a loaded machine must not
        fail it."""
        source = self._client.connection_pool
        kwargs = dict(source.connection_kwargs)
        patience = max(1.0, self.op_timeout)
        kwargs.update(socket_timeout=patience, socket_connect_timeout=patience)
        client = self._redis.Redis(connection_pool=self._redis.ConnectionPool(
            connection_class=source.connection_class, **kwargs
        ))
        try:
            self._check(client)
        finally:
            client.close()
            client.connection_pool.disconnect()

    def _check(self, client: Any) -> None:
        try:
            info: dict[str, Any] | None = client.info("server")
        except self._redis.exceptions.NoPermissionError:
            info = None  # (an ACL, so Redis >= 6) the probe below says what matters
        except self._redis.RedisError as e:
            raise CoordinatorError(self._explain(e, patience=True)) from e
        if info is not None:
            version = str(info.get("redis_version", "0"))
            major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
            if major < 5:
                raise CoordinatorError(
                    f"Redis at {self._where} is version {version}; leases need Redis >= 5"
                )
        try:
            reply = client.register_script(_PROBE)(keys=list(self.keys(_PROBE_NAME)))
        except self._redis.RedisError as e:
            raise CoordinatorError(self._explain(e, patience=True)) from e
        if int(reply[0]) != 1:
            command = reply[1].decode(errors="replace") if isinstance(reply[1], bytes) else reply[1]
            raise CoordinatorError(self._denied(
                f"the lease scripts run {command.upper()}, which this user may not run"
            ))

    def _denied(self, text: str) -> str:
        select = " +select" if self._db else ""
        return (
            f"permission denied at Redis {self._where} for user {self._user!r}: {text}. "
            "A misconfiguration, not an outage: no lease is granted until it is fixed. "
            f"The user needs: ACL SETUSER {self._user} ~{self.prefix}:* {_ACL_COMMANDS}{select}"
        )

    def _explain(self, e: BaseException, *, patience: bool = False) -> str:
        """One sentence for what went wrong, with where (never the password)."""
        exc = self._redis.exceptions
        text = str(e) or type(e).__name__
        if isinstance(e, exc.AuthenticationError):
            return (
                f"authentication failed at Redis {self._where} as user {self._user!r}: {text} "
                "(check the user name and password: redis://user:password@host:port/db)"
            )
        if isinstance(e, exc.ResponseError) and _is_denied(text):
            return self._denied(text)
        cause = e.__cause__ or e.__context__
        if (
            self._tls and isinstance(e, exc.ConnectionError | exc.TimeoutError)
            and cause is not None
            and ("handshake" in str(cause).lower() or type(cause).__module__ == "ssl")
        ):
            return (
                f"TLS handshake with {self._where} failed ({cause or type(cause).__name__}): "
                "does that port speak TLS? rediss:// needs a TLS port; use redis:// for a "
                "plain one"
            )
        if isinstance(e, exc.TimeoutError):
            return (
                f"cannot reach Redis at {self._where}: no answer within "
                f"{max(1.0, self.op_timeout) if patience else self.op_timeout:g}s "
                f"({text})"
            )
        if isinstance(e, exc.ConnectionError):
            return f"cannot reach Redis at {self._where}: {text}"
        if isinstance(e, exc.ReadOnlyError):
            return f"Redis at {self._where} is a read-only replica: leases need the primary ({text})"
        return f"Redis at {self._where}: {type(e).__name__}: {text}"

    def keys(self, name: str) -> tuple[str, str]:
        """The lock and fence keys of ``name`` (one hash tag: one cluster slot)."""
        return f"{self.prefix}:{{{name}}}:lock", f"{self.prefix}:{{{name}}}:fence"

    def _call(self, what: str, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._redis.RedisError as e:
            raise CoordinatorError(f"{what} of lease {name!r} failed: {self._explain(e)}") from e

    def try_acquire(self, name: str, *, owner: str, secret: str) -> Lease | None:
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty str (an empty one marks no holder)")
        lock, fence_key = self.keys(name)
        owner = _clean_owner(owner)
        sent = lease_clock()
        reply = self._call("acquire", name, lambda: self._acquire(
            keys=[lock, fence_key], args=[secret, self._ttl_ms, owner]
        ))
        code = int(reply[0])
        if code == 2:  # nobody may hold it yet: the wait of one ttl (no fence record)
            self._saw(name, None)
            if name not in self._waiting:
                self._waiting.add(name)
                log.warning(
                    "lease %r: no fence record on %s (a new name, or its data was lost); "
                    "waiting one ttl (%gs) before the first grant, so that no earlier holder "
                    "overlaps", name, self.describe(), self.ttl,
                )
            return None
        self._waiting.discard(name)
        if code != 1:
            if len(reply) >= 4:
                held_for = max(0, int(reply[1])) / 1000
                self._saw(name, Lease(
                    name, int(reply[3]), _clean_owner(reply[2].decode(errors="replace")),
                    lease_clock() + held_for,
                ))
            return None
        return Lease(
            name, int(reply[1]), owner, sent + self.validity, secret=secret, coordinator=self
        )

    def renew(self, lease: Lease) -> bool:
        if not lease._secret:
            return False  # not a lease this process acquired
        lock, _ = self.keys(lease.name)
        reply = self._call("renewal", lease.name, lambda: self._renew(
            keys=[lock], args=[lease._secret, self._ttl_ms]
        ))
        return int(reply) == 1

    def release(self, lease: Lease) -> None:
        if not lease._secret:
            return
        lock, _ = self.keys(lease.name)
        self._call("release", lease.name, lambda: self._release(keys=[lock], args=[lease._secret]))

    def observe(self, name: str) -> Lease | None:
        lock, _ = self.keys(name)
        try:
            reply = self._observe(keys=[lock])
            if int(reply[0]) != 1 or int(reply[1]) < 0:
                return None
            return Lease(
                name, int(reply[3]), _clean_owner(reply[2].decode(errors="replace")),
                lease_clock() + int(reply[1]) / 1000,
            )
        except Exception:  # never raises: None when Redis cannot be asked
            return None

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()


# -- choosing a coordinator ----------------------------------------------------------------

_default: Coordinator | None = None
_default_lock = threading.Lock()
_ENV = "CORRAL_COORDINATOR"
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def coordinator_from(spec: str, *, from_env: bool = False) -> Coordinator:
    """A coordinator from a ``redis://``/``rediss://``/``unix://`` URL or a directory.

    Anything that starts like a URL (``word:``) must be a Redis URL that parses: a
    mistyped one must not become a lock directory, one per host. ``from_env``: a
    directory must be an absolute path (a relative one depends on each process's
    working directory)."""
    m = _SCHEME_RE.match(spec)
    if m is not None:
        scheme = m[1].lower()
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"unknown coordinator URL scheme {m[1]!r} in {_redact(spec)!r}: use redis://, "
                "rediss:// or unix:// (Redis), or a directory path (file locks; write a "
                f"relative one with a colon as ./{spec})"
            )
        rest = spec[m.end():]
        if not rest.startswith("//"):
            example = "unix:///path/to/redis.sock" if scheme == "unix" else f"{scheme}://host:port/db"
            raise ValueError(f"{_redact(spec)!r} is not a Redis URL: write {example}")
        return RedisCoordinator(f"{scheme}:{rest}")
    if from_env and not os.path.isabs(spec):
        raise ValueError(
            "a lock directory here must be an absolute path (a relative one would depend "
            "on each process's working directory); or give a redis://, rediss:// or "
            "unix:// URL"
        )
    return FileCoordinator(spec)


def check_coordinator(value: object) -> Coordinator | None:
    if value is None or isinstance(value, Coordinator):
        return value
    if isinstance(value, str):
        return coordinator_from(value)
    if isinstance(value, os.PathLike):  # a path object is a directory, never a URL
        return FileCoordinator(value)
    raise TypeError(
        "coordinator must be a corral.Coordinator, a redis:// URL, a directory or None, "
        f"not {type(value).__name__}"
    )


def default_coordinator() -> Coordinator:
    """The process-wide coordinator: from ``CORRAL_COORDINATOR`` (a ``redis://`` URL or
    an absolute directory), else a :class:`FileCoordinator` in the per-user runtime
    directory."""
    global _default
    with _default_lock:
        if _default is None:
            spec = os.environ.get(_ENV, "").strip()
            if not spec:
                _default = FileCoordinator()
                return _default
            try:
                _default = coordinator_from(spec, from_env=True)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{_ENV}={_redact(spec)!r}: {e}") from None
            except CoordinatorError as e:
                raise CoordinatorError(f"{_ENV}={_redact(spec)!r}: {e}") from e
        return _default


def _reset_default() -> None:
    """Forget the process-wide coordinator (tests; after changing the environment)."""
    global _default
    with _default_lock:
        old, _default = _default, None
    if old is not None:
        old.close()


# -- the runner side -----------------------------------------------------------------------


def campaign(
    name: str,
    coordinator: Coordinator,
    token: Token,
    on_error: Callable[[CoordinatorError, bool], object],
    rand: Callable[[], float] = random.random,
) -> Lease | None:
    """Try for the lease until it is ours (returned) or ``token`` is cancelled (None).

    Polls every ``poll_interval`` x U(0.8, 1.2); after a backend error, backs off
    exponentially (full jitter) up to ``max(ttl, 1s)``, calling ``on_error(error,
    first)`` (``first``: the first error of its kind since the last success). Never
    runs without a lease: an error is "not held".
    """
    try:
        return _campaign(name, coordinator, token, on_error, rand)
    finally:
        coordinator._saw(name, None)  # seen() is about a campaign that is asking


def _campaign(
    name: str,
    coordinator: Coordinator,
    token: Token,
    on_error: Callable[[CoordinatorError, bool], object],
    rand: Callable[[], float],
) -> Lease | None:
    secret = os.urandom(16).hex()
    errors = 0
    last_kind: tuple[object, ...] = ()
    maybe_applied = False
    while True:
        if token.cancelled:
            break
        if not _reserve(name):  # this process runs (or asks for) the name already
            if not token.sleep(coordinator.poll_interval * (0.8 + 0.4 * rand())):
                break
            continue
        try:
            lease = coordinator.try_acquire(name, owner=_owner(), secret=secret)
        except Exception as e:  # a backend (or a Coordinator subclass) failed: not held
            _unreserve(name)
            maybe_applied = True  # a timed-out acquire may have happened: forget it later
            error = e if isinstance(e, CoordinatorError) else _wrap(coordinator, "acquire", name, e)
            kind = (type(e), type(e.__cause__)) if isinstance(e, CoordinatorError) else (type(e),)
            on_error(error, kind != last_kind)
            last_kind = kind
            errors += 1
            cap = max(coordinator.ttl or 1.0, 1.0)
            delay = min(cap, coordinator.poll_interval * 2 ** min(errors, 16)) * rand()
            delay = max(delay, coordinator.poll_interval / 2)
        else:
            if errors:
                log.info("lease %r: %s answers again", name, coordinator.describe())
                errors = 0
                last_kind = ()
            if lease is not None:
                if token._cause is not None:  # stopped while we asked: do not hold it
                    _release_quietly(coordinator, lease)
                    _unreserve(name)
                    return None
                return lease  # (the name stays reserved until release_after_run)
            _unreserve(name)
            delay = coordinator.poll_interval * (0.8 + 0.4 * rand())
        if not token.sleep(delay):
            break
    if maybe_applied:
        # Same secret: releases an acquire that the backend applied but whose reply
        # we never saw, so nobody waits a whole TTL for a lease no one knows it holds.
        _release_quietly(coordinator, Lease(name, 0, _owner(), 0.0, secret=secret))
    return None


def _wrap(coordinator: Coordinator, what: str, name: str, e: Exception) -> CoordinatorError:
    error = CoordinatorError(f"{coordinator.describe()}: {what} of lease {name!r} failed: {e!r}")
    error.__cause__ = e
    return error


def _release_quietly(coordinator: Coordinator, lease: Lease) -> None:
    try:
        coordinator.release(lease)
    except Exception as e:
        log.warning("lease %r: release failed (it will expire by itself): %s", lease.name, e)


class Keeper:
    """Renews a held lease on its own thread, and loses it when the coordinator refuses
    a renewal or the holder's deadline passes without a successful one."""

    _WAIT_CAP = 1.0  # seconds: re-read the clock at least this often (suspend/resume)

    def __init__(self, lease: Lease, coordinator: Coordinator, acquired_at: float) -> None:
        self.lease = lease
        self.coordinator = coordinator
        self._next = acquired_at + coordinator.renew_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"corral-lease:{lease.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        lease, coordinator = self.lease, self.coordinator
        interval = coordinator.renew_interval
        failing = False
        while lease._lost is None:
            now = lease_clock()
            wake = min(self._next, lease.deadline)
            if self._stop.wait(min(max(0.0, wake - now), self._WAIT_CAP)):
                return
            now = lease_clock()
            if now >= lease.deadline:
                lease._lose(LeaseLost(
                    f"lease {lease.name!r} (fence {lease.fence}) expired: no successful renewal "
                    f"since {now - (lease.deadline - coordinator.validity):.3g}s ago"
                ))
                return
            if now < self._next:
                continue
            sent = now
            try:
                ok = coordinator.renew(lease)
            except Exception as e:  # transient (or unknown): retry until the deadline
                if not failing:
                    log.warning(
                        "lease %r: renewal failed, retrying until its deadline (%.3gs left): %s",
                        lease.name, max(0.0, lease.deadline - lease_clock()), e,
                    )
                failing = True
                self._next = lease_clock() + min(0.5, interval / 4) * (0.5 + random.random())
                continue
            if ok:
                if failing:
                    log.info("lease %r: renewed again", lease.name)
                failing = False
                if lease.deadline != math.inf:
                    lease.deadline = sent + coordinator.validity
                self._next = sent + interval
            else:
                lease._lose(LeaseLost(
                    f"lease {lease.name!r} (fence {lease.fence}) is gone: "
                    f"{getattr(coordinator, '_gone', Coordinator._gone)}"
                ))
                return


def release_after_run(coordinator: Coordinator, lease: Lease) -> None:
    """Release once the guarded work has returned (with a fresh timeout, never with the
    cancelled context of the work: bricks' AcquireAndKeepUp lost its release that way).

    A lost lease is released too: compare-and-delete is a harmless no-op on a lease
    that is someone else's, and a file lease's descriptor must be closed either way."""
    try:
        with lease._lock:
            if lease._lost is None:  # from here on, the lease is not valid (not "lost")
                lease._lost = LeaseLost(
                    f"lease {lease.name!r} (fence {lease.fence}) was released: its task "
                    "ended, so it is no longer held"
                )
                lease._released = True
                lease._on_lost = None
        _release_quietly(coordinator, lease)
    finally:
        _unreserve(lease.name)

