"""Redis leases: one Redis (or a primary with replicas) for the processes of many hosts.

:class:`RedisCoordinator` keeps each lease in a hash with a server-side TTL, set,
renewed and released by Lua compare-and-set scripts (below) so that only the holder's
secret touches it, and takes each fence from ``INCR`` floored by the server's clock so
that it never goes backwards, even after Redis lost its data. Here too: the checks of
a Redis URL (it must parse whole), and the messages that say what is wrong with a
server, a password or an ACL. The ``redis`` package is imported when a coordinator is
made, not with this module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from ._coordinator import Coordinator, Lease, check_positive, clean_owner, lease_clock
from ._errors import CoordinatorError

__all__ = ["RedisCoordinator"]

log = logging.getLogger("corral")

_DRIFT = 0.01  # clock-rate allowance: 1% of the TTL (Redlock, pottery)

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
REDIS_SCHEMES = ("redis", "rediss", "unix")  # (what coordinator_from sends here)
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


def redact(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    return _URL_QUERY_PASSWORD_RE.sub(r"\1***", _URL_PASSWORD_RE.sub(":***@", url, count=1))


def _check_redis_url(url: str) -> None:
    """Refuse a URL that does not parse whole: redis-py takes ``/notadb`` for db 0 and
    lets a query override the lease connections' timeouts. (Its own checks follow.)"""
    from urllib.parse import parse_qsl, urlsplit

    shown = redact(url)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in REDIS_SCHEMES:
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
        ttl = check_positive("ttl", ttl)
        if ttl < 0.5:
            raise ValueError(f"ttl must be >= 0.5 seconds, not {ttl!r}")
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(
                f"prefix must be 1 to 100 letters, digits or _ . : @ + = -, not {prefix!r}"
            )
        stop_margin = ttl / 5 if stop_margin is None else check_positive("stop_margin", stop_margin)
        if stop_margin >= ttl / 2:
            raise ValueError(f"stop_margin ({stop_margin:g}s) must be less than ttl/2 ({ttl / 2:g}s)")
        renew_interval = (
            ttl / 3 if renew_interval is None else check_positive("renew_interval", renew_interval)
        )
        if renew_interval > (ttl - stop_margin) / 2:
            raise ValueError(
                f"renew_interval ({renew_interval:g}s) is too long for ttl {ttl:g}s: at most "
                f"(ttl - stop_margin)/2 = {(ttl - stop_margin) / 2:g}s, so that two renewals fit "
                "before the holder must stop"
            )
        op_timeout = (
            min(1.0, renew_interval / 2) if op_timeout is None
            else check_positive("op_timeout", op_timeout)
        )
        if op_timeout > renew_interval / 2:
            raise ValueError(
                f"op_timeout ({op_timeout:g}s) must be at most renew_interval/2 "
                f"({renew_interval / 2:g}s)"
            )
        poll_interval = ttl / 5 if poll_interval is None else check_positive("poll_interval", poll_interval)
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
            shown = redact(url_or_client)
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
        owner = clean_owner(owner)
        sent = lease_clock()
        reply = self._call("acquire", name, lambda: self._acquire(
            keys=[lock, fence_key], args=[secret, self._ttl_ms, owner]
        ))
        code = int(reply[0])
        if code == 2:  # nobody may hold it yet: the wait of one ttl (no fence record)
            self.note_holder(name, None)
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
                self.note_holder(name, Lease(
                    name, int(reply[3]), clean_owner(reply[2].decode(errors="replace")),
                    lease_clock() + held_for,
                ))
            return None
        return Lease(
            name, int(reply[1]), owner, sent + self.validity, secret=secret
        )

    def renew(self, lease: Lease) -> bool:
        secret = lease.secret
        if not secret:
            return False  # not a lease this process acquired
        lock, _ = self.keys(lease.name)
        reply = self._call("renewal", lease.name, lambda: self._renew(
            keys=[lock], args=[secret, self._ttl_ms]
        ))
        return int(reply) == 1

    def release(self, lease: Lease) -> None:
        secret = lease.secret
        if not secret:
            return
        lock, _ = self.keys(lease.name)
        self._call("release", lease.name, lambda: self._release(keys=[lock], args=[secret]))

    def observe(self, name: str) -> Lease | None:
        lock, _ = self.keys(name)
        try:
            reply = self._observe(keys=[lock])
            if int(reply[0]) != 1 or int(reply[1]) < 0:
                return None
            return Lease(
                name, int(reply[3]), clean_owner(reply[2].decode(errors="replace")),
                lease_clock() + int(reply[1]) / 1000,
            )
        except Exception:  # never raises: None when Redis cannot be asked
            return None

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()


RedisCoordinator.__module__ = "corral"  # (it loads on first use: see _coordinator's end)
