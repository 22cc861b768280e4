"""File leases: ``flock`` on a lock file per name, for the processes of one host.

:class:`FileCoordinator` is the default coordinator. The kernel releases the lock
when its holder dies; the lock file is never unlinked (that would let two processes
hold "the" lock); the fence counter lives in the file, in a record that also names the
file's inode, so that a lock file removed or replaced under its holder is told from
the one the holder locked.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
import sys
import time
from pathlib import Path

from ._coordinator import (
    Coordinator,
    Lease,
    check_positive,
    clean_owner,
    lease_clock,
    register_held,
    take_handle,
)
from ._errors import CoordinatorError

if sys.platform != "win32":  # (corral itself imports anywhere; file leases need flock)
    import fcntl

__all__ = ["FileCoordinator"]

log = logging.getLogger("corral")


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


def _read_record(data: bytes) -> tuple[int | None, str | None, int | None]:
    """(fence, owner, inode) from a lock file's bytes; None for what is not there."""
    m = _RECORD_RE.fullmatch(data)
    if m is not None:
        fence = int(m[1])
        if fence >= _FENCE_MAX:
            return None, None, None
        return fence, clean_owner(m[2].decode("ascii", "replace")), int(m[3])
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
        check_positive("poll_interval", poll_interval)
        check_positive("check_interval", check_interval)
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
        # (here, not at the top: it loads OpenSSL, a few MiB, and corral.FileCoordinator
        # may be looked up without making one)
        import hashlib

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
                self.note_holder(name, _holder_in(fd, name))
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
            owner = clean_owner(owner)
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
        self.note_holder(name, None)
        lease = Lease(name, fence, owner, math.inf, secret=secret, handle=fd)
        register_held(lease)
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
            self.note_holder(name, None)
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
        fd = take_handle(lease)
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


FileCoordinator.__module__ = "corral"  # (it loads on first use: see _coordinator's end)
