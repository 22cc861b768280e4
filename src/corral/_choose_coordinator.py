"""Which coordinator a group's singletons use: the one given (an object, a Redis URL, a
directory), else the process's (``CORRAL_COORDINATOR``, else file locks in the
per-user runtime directory). The backends load when a spec first names one."""

from __future__ import annotations

import os
import re
import threading

from ._coordinator import Coordinator
from ._errors import CoordinatorError

__all__ = ["check_coordinator", "coordinator_from", "default_coordinator"]


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
        from ._redis_coordinator import REDIS_SCHEMES, RedisCoordinator, redact

        scheme = m[1].lower()
        if scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"unknown coordinator URL scheme {m[1]!r} in {redact(spec)!r}: use redis://, "
                "rediss:// or unix:// (Redis), or a directory path (file locks; write a "
                f"relative one with a colon as ./{spec})"
            )
        rest = spec[m.end():]
        if not rest.startswith("//"):
            example = "unix:///path/to/redis.sock" if scheme == "unix" else f"{scheme}://host:port/db"
            raise ValueError(f"{redact(spec)!r} is not a Redis URL: write {example}")
        return RedisCoordinator(f"{scheme}:{rest}")
    if from_env and not os.path.isabs(spec):
        raise ValueError(
            "a lock directory here must be an absolute path (a relative one would depend "
            "on each process's working directory); or give a redis://, rediss:// or "
            "unix:// URL"
        )
    from ._file_coordinator import FileCoordinator

    return FileCoordinator(spec)


def check_coordinator(value: object) -> Coordinator | None:
    """A group's ``coordinator=``: a Coordinator, a spec for :func:`coordinator_from`,
    a path object (a directory, never a URL), or None."""
    if value is None or isinstance(value, Coordinator):
        return value
    if isinstance(value, str):
        return coordinator_from(value)
    if isinstance(value, os.PathLike):
        from ._file_coordinator import FileCoordinator

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
                from ._file_coordinator import FileCoordinator

                _default = FileCoordinator()
                return _default
            try:
                _default = coordinator_from(spec, from_env=True)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{_ENV}={_shown(spec)!r}: {e}") from None
            except CoordinatorError as e:
                raise CoordinatorError(f"{_ENV}={_shown(spec)!r}: {e}") from e
        return _default


def _shown(spec: str) -> str:
    """``spec`` as a message may show it (a URL's password hidden)."""
    from ._redis_coordinator import redact

    return redact(spec)


def _reset_default() -> None:
    """Forget the process-wide coordinator (tests; after changing the environment)."""
    global _default
    with _default_lock:
        old, _default = _default, None
    if old is not None:
        old.close()
