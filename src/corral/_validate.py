"""Checks of what users pass to groups and spawns: a clear TypeError or ValueError at
the call site, never a late failure in a worker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import CoroutineType

from ._callables import check_hook, is_coroutine_function, qualname
from ._errors import safe_repr
from ._policy import DEFAULT_BACKOFF, NO_HOOKS, Backoff, Hooks, Restart, check_max_restarts

TYPE_CHECKING = False  # (what typing.TYPE_CHECKING is: typing is not imported at run time)

if TYPE_CHECKING:
    from typing import Any

    from ._task import Task

__all__ = [
    "MAX_NAME",
    "check_bool",
    "check_callable",
    "check_count",
    "check_hooks",
    "check_name",
    "check_needs",
    "check_spawn",
    "is_coroutine_function",
    "name_stem",
    "not_callable",
    "qualname",
    "unknown_options",
]

MAX_NAME = 200  # characters: names go into logs, thread names and snapshots


def check_count(what: str, value: object, *, none: bool = True) -> int | None:
    """An int >= 1, or None where ``none`` allows it (``limit``, ``window``;
    ``max_failures`` takes no None)."""
    if value is None and none:
        return None
    allowed = "an int >= 1 or None" if none else "an int >= 1"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be {allowed}, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be {allowed}, not {value!r}")
    return value


def check_name(name: object) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} characters, not {len(name)}")
    if not name.isprintable():
        # Names reach log lines: a newline or an escape sequence in one could forge them.
        raise ValueError(f"name must be printable (no control characters), not {name!r}")


def check_bool(what: str, value: object) -> bool:
    """A flag option: True or False (``fail_fast='no'`` would be truthy)."""
    if value is not True and value is not False:
        raise TypeError(f"{what} must be True or False, not {safe_repr(value)}")
    return value


def check_hooks(hooks: object, on_finish: object) -> Hooks:
    """A group's ``hooks=`` and ``on_finish=`` (the latter is ``hooks.on_finished``)."""
    if hooks is not None and not isinstance(hooks, Hooks):
        raise TypeError(f"hooks must be a corral.Hooks or None, not {type(hooks).__name__}")
    if on_finish is None:
        return hooks or NO_HOOKS
    if not callable(on_finish):
        raise TypeError(f"on_finish must be callable, not {type(on_finish).__name__}")
    check_hook("on_finish", on_finish)
    if hooks is not None and hooks.on_finished is not None:
        raise TypeError("give either on_finish= or hooks=Hooks(on_finished=...), not both")
    return (hooks or NO_HOOKS).__replace__(on_finished=on_finish)


def name_stem(fn: Callable[..., Any], cache: dict[Callable[..., Any], str]) -> str:
    """The stem of the automatic name of ``fn``'s tasks (``module.qualname``), kept in
    ``cache`` (a group's: bounded, as a group may be fed fresh lambdas forever)."""
    try:
        stem = cache.get(fn)
    except TypeError:  # an unhashable callable (e.g. a callable dataclass)
        return qualname(fn)
    if stem is None:
        stem = qualname(fn)
        if len(cache) >= 256:
            cache.clear()
        cache[fn] = stem
    return stem


def check_callable(fn: Callable[..., Any]) -> bool:
    """What a task runs: callable, and not a generator function. True if it is a
    coroutine function (``inspect.iscoroutinefunction`` after unwrapping
    ``functools.partial``, ``__wrapped__`` and a callable object's ``__call__``): its
    task runs on an event loop."""
    if not callable(fn):
        raise not_callable(fn)
    return is_coroutine_function(fn)


def not_callable(fn: object) -> TypeError:
    """The error for a ``fn`` that is not callable. A coroutine object (``spawn(f(x))``
    instead of ``spawn(f, x)``) is closed, so that no "never awaited" warning follows
    the error, and the message says how to spawn it."""
    if isinstance(fn, CoroutineType):
        name = fn.__name__
        fn.close()
        return TypeError(
            f"fn must be a function, not a coroutine object: pass the coroutine function "
            f"and its arguments, spawn({name}, *args), not spawn({name}(*args)) (each run "
            "of a task, a restart's too, needs a fresh coroutine)"
        )
    return TypeError(f"fn must be callable, not {type(fn).__name__}")


def check_spawn(
    fn: Callable[..., Any],
    name: str | None,
    meta: Mapping[str, Any] | None,
    background: object,
    restart: Restart | str,
    backoff: Backoff | None,
    max_restarts: tuple[int, float] | None,
    replace: object,
    needs: Iterable[str] | str,
    on_finish: object,
    signals_ready: object,
    singleton: object,
    drain: object,
) -> tuple[Restart, Backoff | None, tuple[int, float] | None, tuple[str, ...]]:
    """Check ``spawn``'s arguments; return the restart policy, the backoff, the
    restart limit and the needs, normalised (``fn`` is checked by the caller)."""
    if (
        background.__class__ is not bool or replace.__class__ is not bool
        or signals_ready.__class__ is not bool or singleton.__class__ is not bool
        or drain.__class__ is not bool
    ):
        for what, value in (
            ("background", background), ("replace", replace), ("signals_ready", signals_ready),
            ("singleton", singleton), ("drain", drain),
        ):
            check_bool(what, value)
    if name is not None:
        check_name(name)
    elif replace:
        raise TypeError("replace=True needs a name= (it replaces the live task of that name)")
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping or None, not {type(meta).__name__}")
    policy = restart if restart is Restart.NEVER else Restart.coerce(restart)
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be a corral.Backoff or None, not {type(backoff).__name__}")
    mr = None if max_restarts is None else check_max_restarts(max_restarts)
    if not needs:
        needs_t: tuple[str, ...] = ()
    elif isinstance(needs, str):
        needs_t = (needs,)
    else:
        try:
            needs_t = tuple(needs)
        except TypeError:
            raise TypeError(
                f"needs must be a task name or an iterable of names, not {type(needs).__name__}"
            ) from None
    for n in needs_t:
        if not isinstance(n, str):
            raise TypeError(f"needs must name tasks by str, not {type(n).__name__}")
    if on_finish is not None:
        if not callable(on_finish):
            raise TypeError(f"on_finish must be callable, not {type(on_finish).__name__}")
        check_hook("on_finish", on_finish)
    if singleton and name is None:
        raise TypeError(
            "a singleton task needs a name= (its lease is named after it, and every "
            "process that runs it must use the same name)"
        )
    if policy is not Restart.NEVER and backoff is None:
        backoff = DEFAULT_BACKOFF
    return policy, backoff, mr, needs_t


def check_needs(
    live: Mapping[str, Task[Any]], name: str, needs: tuple[str, ...], group: str
) -> None:
    """``needs`` names live tasks, and the new task ``name`` would close no cycle."""
    for n in needs:
        if n == name or (n not in live):
            known = ", ".join(repr(k) for k in list(live)[:20]) or "none"
            raise ValueError(
                f"needs names {n!r}, which is not a live task of group {group!r} "
                f"(spawn what a task needs first; live tasks: {known})"
            )
    # A cycle: what it needs (directly or not) needs a task of this name. Possible
    # when a task of this name ended (or is replaced) while a task needing it waits.
    seen: set[str] = set()
    path: list[str] = []
    stack = [(n, 0) for n in needs]
    while stack:
        n, depth = stack.pop()
        del path[depth:]
        path.append(n)
        if n == name:
            chain = " -> ".join(repr(x) for x in [name, *path])
            raise ValueError(
                f"spawning {name!r} with needs={needs!r} would make a dependency cycle "
                f"({chain}): neither could ever start"
            )
        if n in seen:
            continue
        seen.add(n)
        dep = live.get(n)
        if dep is not None:
            stack.extend((m, depth + 1) for m in dep.needs)


def unknown_options(
    fn: object, unknown: Mapping[str, Any], options: Iterable[str]
) -> TypeError:
    """The error for keyword arguments ``spawn`` does not know (``options`` are the ones
    it knows): they were probably meant for ``fn``, which is called with positional
    arguments only."""
    names = ", ".join(repr(k) for k in unknown)
    given = ", ".join(f"{k}=..." for k in unknown)
    return TypeError(
        f"spawn() got unknown option(s) {names} (its options: {', '.join(options)}). "
        f"fn is called with the positional arguments only: for keyword arguments, spawn "
        f"functools.partial({getattr(fn, '__name__', 'fn')}, {given})"
    )
