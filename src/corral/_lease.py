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
import functools
import logging
import math
import os
import random
import re
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
        self._lost: LeaseLost | None = None
        self._on_lost: Callable[[LeaseLost], object] | None = None

    def __repr__(self) -> str:
        left = self.remaining()
        until = "no expiry" if left == math.inf else f"{left:.3g}s left"
        state = " lost" if self._lost is not None else ""
        return f"<corral.Lease {self.name!r} fence={self.fence} owner={self.owner!r} {until}{state}>"

    @property
    def lost(self) -> LeaseLost | None:
        """Why the lease was lost (a :class:`corral.LeaseLost`), or None."""
        return self._lost

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
        """Who holds ``name`` now (a :class:`Lease` without its secret), or None."""

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release the backend's resources (connections)."""

    def describe(self) -> str:
        return type(self).__name__


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
    import tempfile  # (here: it imports shutil, bz2 and lzma, which corral needs nowhere else)

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "corral"
    return Path(tempfile.gettempdir()) / f"corral-{os.getuid()}"


class FileCoordinator(Coordinator):
    """Leases on one host: ``flock`` on a lock file per name in ``directory``.

    The default directory is ``$XDG_RUNTIME_DIR/corral`` (or ``<tmp>/corral-<uid>``),
    made with mode 0700. The kernel releases a dead holder's lock at once, so another
    process takes over within one ``poll_interval``. Lock files are never unlinked
    (that would let two processes hold "the" lock); each holds ``<fence> <owner>``.
    Fences rise with every acquisition and are floored by the wall clock in
    microseconds, so they keep rising across reboots (a tmpfs forgets the file).

    There is no TTL: a paused but live holder keeps its lease. Local filesystems only
    (``flock`` over NFS is emulated and unreliable).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        poll_interval: float = 0.1,
        check_interval: float = 1.0,
    ) -> None:
        if sys.platform == "win32":  # pragma: no cover
            raise CoordinatorError("FileCoordinator needs flock (POSIX); use RedisCoordinator")
        _check_positive("poll_interval", poll_interval)
        _check_positive("check_interval", check_interval)
        if directory is not None and not isinstance(directory, str | os.PathLike):
            raise TypeError(f"directory must be a path or None, not {type(directory).__name__}")
        self.directory = Path(directory) if directory is not None else _default_lock_dir()
        self.poll_interval = float(poll_interval)
        self.renew_interval = float(check_interval)
        import hashlib  # (here: it loads OpenSSL, a few MiB that only file leases need)

        self._sha256 = hashlib.sha256
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CoordinatorError(
                f"cannot create the lease directory {str(self.directory)!r}: {e.strerror or e}; "
                "give FileCoordinator(directory=...) (or CORRAL_COORDINATOR) a writable directory"
            ) from e
        if not self.directory.is_dir():
            raise CoordinatorError(f"lease directory {str(self.directory)!r} is not a directory")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise CoordinatorError(
                f"lease directory {str(self.directory)!r} is not writable by this user; "
                "give FileCoordinator(directory=...) (or CORRAL_COORDINATOR) a writable directory"
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

    def _open(self, name: str) -> tuple[int, Path]:
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise CoordinatorError(f"cannot open lock file {str(path)!r}: {e.strerror or e}") from e
        return fd, path

    def try_acquire(self, name: str, *, owner: str, secret: str) -> Lease | None:
        fd, path = self._open(name)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as e:
                raise CoordinatorError(f"cannot lock {str(path)!r}: {e.strerror or e}") from e
            if not _same_file(fd, path):
                # The file was unlinked or replaced under us: this lock guards nothing.
                os.close(fd)
                return None
            data = os.pread(fd, 256, 0).split()
            try:
                last = int(data[0]) if data else 0
            except ValueError:
                last = 0
            # Floored by the wall clock in microseconds, as on Redis: the default
            # directory is usually a tmpfs, and a counter that starts again at 1 after a
            # reboot would make every fenced write look stale.
            fence = max(last + 1, time.time_ns() // 1000)
            record = f"{fence} {owner}\n".encode()
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
            os.fsync(fd)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
        lease = Lease(name, fence, owner, math.inf, secret=secret, coordinator=self, handle=fd)
        with _held_lock:
            _held.add(lease)
        return lease

    def renew(self, lease: Lease) -> bool:
        fd = lease._handle
        if fd is None:
            return False
        # There is nothing to extend; check that the lock still guards the named file.
        return _same_file(fd, self.path(lease.name))

    def release(self, lease: Lease) -> None:
        with _held_lock:
            _held.discard(lease)
            fd, lease._handle = lease._handle, None
        if fd is not None:
            os.close(fd)  # closing drops the flock; the file stays (never unlinked)

    def observe(self, name: str) -> Lease | None:
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CoordinatorError(f"cannot open lock file {str(path)!r}: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                data = os.pread(fd, 256, 0).decode(errors="replace").split(maxsplit=1)
                fence = int(data[0]) if data and data[0].isdigit() else 0
                owner = data[1].strip() if len(data) > 1 else "?"
                return Lease(name, fence, owner, math.inf)
            return None  # nobody holds it (closing our fd drops the shared lock)
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.fstat(fd)
        if st.st_nlink == 0:
            return False
        return os.stat(path).st_ino == st.st_ino
    except OSError:
        return False


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
  if cur == ARGV[1] and cur ~= '' then
    redis.call('PEXPIRE', KEYS[1], ttl)
    return {1, tonumber(redis.call('HGET', KEYS[1], 'fence'))}
  end
  return {0, redis.call('PTTL', KEYS[1])}
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
  return {0, ttl}
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

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:@+=-]{1,100}")


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "corral.RedisCoordinator needs the redis package: pip install 'corral[redis]'"
        ) from None
    return redis


class RedisCoordinator(Coordinator):
    """Leases across hosts on one Redis (or a primary with replicas).

    ``url_or_client`` is a ``redis://`` URL or a ``redis.Redis`` whose connection
    settings are copied: lease traffic always gets its own connections, with
    ``op_timeout`` as socket timeouts and no hidden retries. Keys:
    ``<prefix>:{<name>}:lock`` (a hash: token, fence, owner; with a TTL) and
    ``<prefix>:{<name>}:fence`` (a counter, never deleted).

    The first acquisition of a name on a Redis without its fence counter (a name it
    never saw, or data lost in a restart without persistence) waits one ``ttl``: a
    holder from before the loss may believe it holds the lease until then. So every
    process that campaigns for a name must use the same ``ttl``.

    Defaults follow ``ttl``: renew every ``ttl/3``, stop ``ttl/5`` (``stop_margin``)
    before the lease could expire, poll every ``ttl/5``, ``op_timeout`` 1 s (at most
    half the renew interval). The server is pinged at construction: an unreachable
    Redis is a :class:`corral.CoordinatorError` here, not a task that runs anyway.
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
        redis = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        settings = {
            "socket_timeout": op_timeout,
            "socket_connect_timeout": op_timeout,
            "retry": Retry(NoBackoff(), 0),
            "retry_on_timeout": False,
            "health_check_interval": 0,
            "decode_responses": False,
        }
        if isinstance(url_or_client, str):
            try:
                pool = redis.ConnectionPool.from_url(url_or_client, **settings)
            except ValueError as e:
                raise ValueError(f"not a Redis URL: {url_or_client!r} ({e})") from None
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
        kw = pool.connection_kwargs
        self._where = (
            f"unix://{kw['path']}" if "path" in kw
            else f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
        )
        if check:
            self.ping()

    def __repr__(self) -> str:
        return f"<corral.RedisCoordinator {self._where} prefix={self.prefix!r} ttl={self.ttl:g}>"

    def describe(self) -> str:
        return f"RedisCoordinator({self._where})"

    def ping(self) -> None:
        """Raise :class:`corral.CoordinatorError` unless the server answers (Redis >= 5)."""
        try:
            info = self._client.info("server")
        except self._redis.RedisError as e:
            raise CoordinatorError(f"cannot reach Redis at {self._where}: {e}") from e
        version = str(info.get("redis_version", "0"))
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
        if major < 5:
            raise CoordinatorError(
                f"Redis at {self._where} is version {version}; leases need Redis >= 5"
            )

    def keys(self, name: str) -> tuple[str, str]:
        """The lock and fence keys of ``name`` (one hash tag: one cluster slot)."""
        return f"{self.prefix}:{{{name}}}:lock", f"{self.prefix}:{{{name}}}:fence"

    def _call(self, what: str, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._redis.RedisError as e:
            raise CoordinatorError(f"Redis at {self._where}: {what} of lease {name!r} failed: {e!r}") from e

    def try_acquire(self, name: str, *, owner: str, secret: str) -> Lease | None:
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty str (an empty one marks no holder)")
        lock, fence_key = self.keys(name)
        sent = lease_clock()
        reply = self._call("acquire", name, lambda: self._acquire(
            keys=[lock, fence_key], args=[secret, self._ttl_ms, owner]
        ))
        if int(reply[0]) != 1:
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

        def read() -> Any:
            pipe = self._client.pipeline(transaction=True)
            pipe.hgetall(lock)
            pipe.pttl(lock)
            return pipe.execute()

        fields, pttl = self._call("observe", name, read)
        if not fields or pttl is None or int(pttl) < 0 or not fields.get(b"token"):
            return None  # (an empty token: the wait of one ttl after data loss; no holder)
        return Lease(
            name, int(fields.get(b"fence", b"0")), fields.get(b"owner", b"?").decode(errors="replace"),
            lease_clock() + int(pttl) / 1000,
        )

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()


# -- choosing a coordinator ----------------------------------------------------------------

_default: Coordinator | None = None
_default_lock = threading.Lock()
_ENV = "CORRAL_COORDINATOR"


def coordinator_from(spec: str) -> Coordinator:
    """A coordinator from a ``redis://``/``rediss://``/``unix://`` URL or a directory."""
    scheme, sep, rest = spec.partition("://")
    if sep:
        if scheme.lower() in ("redis", "rediss", "unix"):
            return RedisCoordinator(f"{scheme.lower()}://{rest}")
        raise ValueError(
            f"unknown coordinator URL scheme {scheme!r} in {spec!r}: use redis://, rediss:// "
            "or unix:// (Redis), or a directory path (file locks)"
        )
    return FileCoordinator(spec)


def check_coordinator(value: object) -> Coordinator | None:
    if value is None or isinstance(value, Coordinator):
        return value
    if isinstance(value, str | os.PathLike):
        return coordinator_from(os.fspath(value))
    raise TypeError(
        "coordinator must be a corral.Coordinator, a redis:// URL, a directory or None, "
        f"not {type(value).__name__}"
    )


def default_coordinator() -> Coordinator:
    """The process-wide coordinator: from ``CORRAL_COORDINATOR`` (a ``redis://`` URL or
    a directory), else a :class:`FileCoordinator` in the per-user runtime directory."""
    global _default
    with _default_lock:
        if _default is None:
            spec = os.environ.get(_ENV, "").strip()
            try:
                _default = coordinator_from(spec) if spec else FileCoordinator()
            except (ValueError, TypeError) as e:
                raise ValueError(f"{_ENV}={spec!r}: {e}") from None
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
                    f"lease {lease.name!r} (fence {lease.fence}) is gone: the coordinator "
                    "refused its renewal (it expired or was taken over)"
                ))
                return


def release_after_run(coordinator: Coordinator, lease: Lease) -> None:
    """Release once the guarded work has returned (with a fresh timeout, never with the
    cancelled context of the work: bricks' AcquireAndKeepUp lost its release that way).

    A lost lease is released too: compare-and-delete is a harmless no-op on a lease
    that is someone else's, and a file lease's descriptor must be closed either way."""
    try:
        with lease._lock:
            if lease._lost is None:  # from here on, the lease is not valid
                lease._lost = LeaseLost(f"lease {lease.name!r} released")
                lease._on_lost = None
        _release_quietly(coordinator, lease)
    finally:
        _unreserve(lease.name)

