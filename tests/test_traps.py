"""The traps a service met in its first week: waits that could not end, hangs under
load, exceptions that cannot be formatted, timeouts that were not numbers, bad input,
causes that said the wrong thing, closed groups that stayed referenced. Each test here
hung or failed before its fix."""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import random
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

import corral
from corral import TaskState
from corral._pool import get_pool
from helpers import TIMEOUT, in_thread, released, wait

# Every test runs over each runner (the pool, and a thread per attempt): see conftest.
pytestmark = pytest.mark.usefixtures("runner")

LONG = 3600.0  # a timeout that, if waited out, fails the test through pytest-timeout


def _forever() -> None:
    corral.current_token().wait()


def _fail(exc: BaseException) -> NoReturn:
    raise exc


# -- waits that cannot end must not wait -----------------------------------------------


def test_wait_until_returns_false_once_fail_fast_cancelled_the_group() -> None:
    g = corral.Group("batch")
    g.spawn(_forever)
    g.spawn(_fail, ValueError("boom"))
    assert g.wait_until(lambda: False, timeout=LONG) is False
    assert g.token.cancelled
    with pytest.raises(ExceptionGroup):
        g.join(TIMEOUT)


def test_wait_until_returns_false_after_cancel() -> None:
    with corral.Group("batch") as g:
        g.spawn(_forever)
        g.cancel()
        assert g.wait_until(lambda: False, timeout=LONG) is False


def test_wait_until_returns_false_once_every_task_ended_after_a_last_check() -> None:
    results: list[int] = []
    with corral.Group("batch") as g:
        for i in range(3):
            g.spawn(results.append, i)
        assert g.wait_until(lambda: len(results) > 5, timeout=LONG) is False
        # ...but the predicate is checked once more at the end: true then is True.
        assert g.wait_until(lambda: len(results) == 3, timeout=LONG) is True


@pytest.mark.parametrize("how", ["join", "result", "exception", "wait_ready"])
def test_a_task_waiting_on_itself_raises_runtime_error(how: str) -> None:
    def me() -> str:
        task = corral.current_task()
        assert task is not None
        with pytest.raises(RuntimeError, match=f"called {how}\\(\\) on itself"):
            getattr(task, how)()
        return "ok"

    with corral.Group() as g:
        t = g.spawn(me, signals_ready=True)
    assert t.result() == "ok"


@pytest.mark.parametrize("how", ["join", "result", "exception", "wait_ready"])
def test_a_task_waiting_on_the_task_that_made_its_group_raises_runtime_error(how: str) -> None:
    # The outer task does not end before the group it made, which waits for the inner
    # task: a wait for the outer task from there hung forever (or to its timeout).
    def inner(outer: corral.Task[Any]) -> str:
        with pytest.raises(
            RuntimeError, match=f"runs inside a group that task 'outer' made: {how}\\(\\) on it"
        ):
            getattr(outer, how)()
        return "refused"

    def outer() -> str:
        me = corral.current_task()
        assert me is not None
        with corral.Group("made by outer") as mine, corral.Group("deeper") as deeper:
            t = deeper.spawn(inner, me)
            mine.spawn(lambda: None)
        return t.result()

    with corral.Group() as g:
        t = g.spawn(outer, name="outer", signals_ready=True)
    assert t.result() == "refused"


def test_a_task_joining_a_group_it_runs_inside_raises_runtime_error() -> None:
    # A task of a group made by a task of `top` joining `top`: top waits for that task,
    # which waits for its group, which waits for the caller.
    def inner() -> str:
        with pytest.raises(RuntimeError, match=r"runs inside group 'top' \(in a group that one"):
            top.join()
        return "refused"

    def outer() -> str:
        with corral.Group("made") as made:
            t = made.spawn(inner)
        return t.result()

    with corral.Group("top") as top:
        o = top.spawn(outer)
    assert o.result() == "refused"


@pytest.mark.parametrize("how", ["wait", "join"])
def test_a_supervisors_task_waiting_for_it_to_stop_raises_runtime_error(how: str) -> None:
    # It waited for itself: the stop waits for that task, which waits for the stop
    # (to its timeout, or forever; and stop() with it). stop() from inside does not
    # wait; a task that wants to block until the stop waits on its token.
    outcome: list[str] = []

    def waiter() -> None:
        try:
            getattr(sup, how)()
        except RuntimeError as e:
            outcome.append(str(e))
        corral.current_token().wait()  # (what it should do)

    sup = corral.Supervisor("s", handle_signals=False)
    with sup:
        t = sup.spawn(waiter)
        t.wait_ready(TIMEOUT)
    assert len(outcome) == 1
    assert outcome[0].startswith(f"{how}() of supervisor 's' was called from inside it")
    assert t.state is TaskState.CANCELLED


def test_wait_ready_on_itself_once_ready_returns_the_value() -> None:
    def me() -> object:
        corral.ready("up")
        task = corral.current_task()
        assert task is not None
        return task.wait_ready()

    with corral.Group() as g:
        t = g.spawn(me, signals_ready=True)
    assert t.result() == "up"


# -- needs: chains, background links, cycles -----------------------------------------


def _never_ready(gate: threading.Event) -> None:
    """Returns without calling corral.ready() (once ``gate`` is set: what needs it is
    spawned by then): what needs it can never start."""
    assert gate.wait(TIMEOUT)


def test_a_needs_chain_whose_root_ended_does_not_hang_join() -> None:
    gate = threading.Event()
    with corral.Group("chain") as g, released(gate):
        x = g.spawn(_never_ready, gate, name="x", signals_ready=True)
        e = g.spawn(_forever, name="e", needs="x")
        s = g.spawn(_forever, name="s", needs="e")
        gate.set()
    assert x.state is TaskState.SUCCEEDED
    assert [e.state, s.state] == [TaskState.CANCELLED, TaskState.CANCELLED]
    assert e.attempts == s.attempts == 0
    assert "needs 'x'" in str(e.cause)
    assert "needs 'e'" in str(s.cause)


def test_a_needs_chain_in_any_spawn_order_of_the_waiting_list() -> None:
    # s parks before e does (e re-parks after losing x): the check must be a fixpoint.
    x_gate = threading.Event()
    e_running = threading.Event()

    def x() -> None:
        corral.ready()
        assert x_gate.wait(TIMEOUT)

    def e() -> None:
        e_running.set()
        corral.current_token().wait()

    with corral.Group("chain2") as g, released(x_gate):
        g.spawn(x, name="x", signals_ready=True)
        et = g.spawn(e, name="e", needs="x", signals_ready=True)
        st = g.spawn(_forever, name="s", needs="e")
        wait(e_running)
        x_gate.set()  # x ends: e is cancelled and parks again, after s
    assert [et.state, st.state] == [TaskState.CANCELLED, TaskState.CANCELLED]


def test_a_foreground_task_needing_a_background_task_that_ended() -> None:
    gate = threading.Event()
    with corral.Group("bg link") as g, released(gate):
        g.spawn(_never_ready, gate, name="b", background=True, signals_ready=True)
        s = g.spawn(_forever, name="s", needs="b")
        gate.set()
    assert s.state is TaskState.CANCELLED


def test_a_replace_that_would_make_a_needs_cycle_is_refused() -> None:
    with corral.Group("cycle") as g:
        g.spawn(_forever, name="a")
        g.spawn(_forever, name="b", needs="a")
        with pytest.raises(ValueError, match="dependency cycle") as info:
            g.spawn(_forever, name="a", needs="b", replace=True)
        assert "'a' -> 'b' -> 'a'" in str(info.value)
        assert [t.name for t in g.tasks] == ["a", "b"]
        assert all(t.state is not TaskState.CANCELLED for t in g.tasks)  # nothing replaced
        g.cancel()


def test_random_needs_stress_leaves_nothing_pending() -> None:
    """Random groups with needs=, failures and tasks that never get ready: join always
    returns, every task ends, and on_finished runs once for each (31-57 violations per
    run before)."""
    rng = random.Random(1234)
    for _ in range(30):
        _stress_round(rng)


def _stress_round(rng: random.Random) -> None:
    finished: list[str] = []
    lock = threading.Lock()

    def on_finished(task: corral.Task[Any]) -> None:
        with lock:
            finished.append(task.name)

    g = corral.Group("stress", fail_fast=False, on_finish=on_finished)
    kinds: dict[str, Callable[[], None]] = {
        "ok": lambda: None,
        "fail": functools.partial(_fail, ValueError("x")),
        "never_ready": lambda: None,  # (signals_ready, and never ready)
    }
    names: list[str] = []
    tasks: list[corral.Task[None]] = []
    for i in range(12):
        live = [n for n in names if g.get(n) is not None]
        needs = tuple(rng.sample(live, k=min(len(live), rng.randint(0, 2))))
        kind = rng.choice(sorted(kinds))
        name = f"t{i}"
        try:
            tasks.append(g.spawn(
                kinds[kind], name=name, needs=needs, signals_ready=kind == "never_ready",
                background=rng.random() < 0.2,
            ))
        except ValueError:  # what it needs ended in between: no longer live
            continue
        names.append(name)
    errors: tuple[BaseException, ...] = ()
    try:
        g.join(TIMEOUT)  # hung before (tasks left PENDING behind needs)
    except ExceptionGroup as eg:
        errors = eg.exceptions
    assert all(isinstance(e, ValueError) for e in errors)
    assert all(t.done for t in tasks), [t for t in tasks if not t.done]
    assert sorted(finished) == sorted(t.name for t in tasks)


# -- exceptions whose repr/str raise ----------------------------------------------------


class BadRepr(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


def test_a_restarted_task_raising_an_unformattable_exception_does_not_hang() -> None:
    sup = corral.Supervisor("bad repr", handle_signals=False)
    sup.start()
    t = sup.spawn(
        _fail, BadRepr(), name="flaky", restart="on_failure",
        backoff=corral.Backoff(initial=0, maximum=0, jitter=0), max_restarts=(3, 60),
    )
    t.join(TIMEOUT)
    sup.stop(timeout=TIMEOUT)
    assert t.state is TaskState.FAILED
    assert t.attempts == 4
    assert "BadRepr" in repr(t)
    assert json.dumps(sup.snapshot(), allow_nan=False)


def test_a_sibling_cancelled_by_an_unformattable_failure_can_check_and_report() -> None:
    checked: list[str] = []

    def sibling() -> None:
        corral.current_token().wait()
        try:
            corral.check()
        except corral.Cancelled as e:
            checked.append(str(e))
            raise

    g = corral.Group("bad sibling")
    s = g.spawn(sibling)
    g.spawn(_fail, BadRepr())
    with pytest.raises(ExceptionGroup):
        g.join(TIMEOUT)
    assert checked
    assert "BadRepr" in checked[0]
    with pytest.raises(corral.Cancelled):
        s.result()
    assert isinstance(s.cause, BadRepr)


# -- timeouts: one rule -------------------------------------------------------------------


def _timeout_calls(g: corral.Group, t: corral.Task[Any], sup: corral.Supervisor) -> dict[str, Any]:
    return {
        "Task.join": t.join, "Task.result": t.result, "Task.exception": t.exception,
        "Task.wait_ready": t.wait_ready, "Group.join": g.join,
        "Group.wait_until": lambda timeout: g.wait_until(lambda: True, timeout),
        "Supervisor.stop": sup.stop, "Supervisor.wait": sup.wait,
        "Token.wait": corral.Token().wait, "Token.child": lambda timeout: corral.Token().child(timeout=timeout),
    }


@pytest.fixture
def timed() -> Iterator[dict[str, Any]]:
    g = corral.Group("timed")
    t = g.spawn(lambda: 1)
    t.join(TIMEOUT)
    sup = corral.Supervisor("timed sup", handle_signals=False)
    try:
        yield _timeout_calls(g, t, sup)
    finally:
        g.join(TIMEOUT)
        sup.stop(TIMEOUT)


@pytest.mark.parametrize("bad", [float("nan"), -1, -0.5])
def test_nan_and_negative_timeouts_are_value_errors_everywhere(
    timed: dict[str, Any], bad: float
) -> None:
    for what, call in timed.items():
        with pytest.raises(ValueError, match="timeout") as info:
            call(bad)
        assert ">= 0" in str(info.value), what


@pytest.mark.parametrize("big", [math.inf, 1e10, 1e300])
def test_infinite_and_huge_timeouts_mean_no_timeout(timed: dict[str, Any], big: float) -> None:
    for name in ("Task.join", "Task.result", "Task.exception", "Task.wait_ready", "Group.join"):
        timed[name](big)  # done already: returns at once, no OverflowError
    assert timed["Group.wait_until"](big) is True
    assert timed["Token.child"](big).deadline is None


@pytest.mark.parametrize("bad", ["1", True, None])
def test_timeouts_of_the_wrong_type(bad: object) -> None:
    with corral.Group() as g:
        t = g.spawn(lambda: 1)
    if bad is None:
        t.join(bad)  # None is "no timeout"
        return
    with pytest.raises(TypeError, match="timeout must be a number"):
        t.join(bad)  # type: ignore[arg-type]


# -- bad input gets a clear error -------------------------------------------------------


@pytest.mark.parametrize("option", ["background", "replace", "signals_ready", "singleton", "drain"])
@pytest.mark.parametrize("bad", ["yes", 1, None, "no"])
def test_spawn_flags_must_be_bools(option: str, bad: object) -> None:
    options: dict[str, Any] = {option: bad}
    with corral.Group() as g, pytest.raises(TypeError, match=f"{option} must be True or False"):
        g.spawn(lambda: None, name="x", **options)


@pytest.mark.parametrize("option", ["fail_fast", "detached"])
def test_group_flags_must_be_bools(option: str) -> None:
    options: dict[str, Any] = {option: "no"}
    with pytest.raises(TypeError, match=f"{option} must be True or False"):
        corral.Group(**options)


def test_supervisor_flags_must_be_bools() -> None:
    with pytest.raises(TypeError, match="handle_signals must be True or False"):
        corral.Supervisor(handle_signals="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fail_fast must be True or False"):
        corral.Supervisor(fail_fast="no", handle_signals=False)  # type: ignore[arg-type]


def test_handle_signals_off_the_main_thread_is_a_value_error() -> None:
    def make() -> None:
        corral.Supervisor(handle_signals=True)

    with pytest.raises(ValueError, match="main thread"):
        in_thread(make)


def _gen() -> Iterator[int]:
    yield 1


async def _coro() -> None:
    return None


async def _agen() -> Any:
    yield 1


class _Holder:
    def gen(self) -> Iterator[int]:
        yield 1


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (_gen, "a generator function"),
        (functools.partial(_gen), "a generator function"),
        (_Holder().gen, "a generator function"),
        (_agen, "an async generator function"),
    ],
)
def test_generator_functions_are_refused_at_spawn(fn: Any, kind: str) -> None:
    # (Coroutine functions run on an event loop: see test_async.py.)
    with corral.Group() as g, pytest.raises(TypeError, match=f"fn is {kind}"):
        g.spawn(fn)


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("x" * 201, ValueError, "at most 200 characters"),
        ("evil\nINFO forged line", ValueError, "printable"),
        ("bell\x07", ValueError, "printable"),
        ("\x1b[31mred", ValueError, "printable"),
        ("", ValueError, "must not be empty"),
        (3, TypeError, "name must be a str"),
    ],
)
def test_task_and_group_names_are_checked(name: Any, error: type[Exception], match: str) -> None:
    with corral.Group() as g, pytest.raises(error, match=match):
        g.spawn(lambda: None, name=name)
    with pytest.raises(error, match=match):
        corral.Group(name)


def test_unicode_names_are_fine() -> None:
    with corral.Group("grüße") as g:
        t = g.spawn(lambda: 1, name="tâche: 東京 #1")
    assert t.result() == 1


def test_replace_without_a_name_is_a_type_error() -> None:
    with corral.Group() as g, pytest.raises(TypeError, match="replace=True needs a name"):
        g.spawn(lambda: None, replace=True)


def test_entering_a_group_twice_raises() -> None:
    g = corral.Group("once")
    with g, pytest.raises(RuntimeError, match="entered once"):
        g.__enter__()
    sup = corral.Supervisor("once", handle_signals=False)
    with sup, pytest.raises(RuntimeError, match="entered once"):
        sup.__enter__()


def test_a_clock_must_be_a_clock() -> None:
    with pytest.raises(TypeError, match="monotonic"):
        corral.Group(clock="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="monotonic"):
        corral.Supervisor(clock=object(), handle_signals=False)  # type: ignore[arg-type]


def test_backoff_reset_after_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="reset_after"):
        corral.Backoff(reset_after=float("nan"))


def test_a_plain_function_returning_a_coroutine_is_not_silently_a_result() -> None:
    # (A lambda hides the coroutine function from the spawn-time check.)
    with pytest.raises(ExceptionGroup) as info, corral.Group() as g:
        g.spawn(lambda: _coro())
    [err] = info.value.exceptions
    assert isinstance(err, TypeError)
    assert "returned a coroutine" in str(err)
    assert "spawn the coroutine function itself" in str(err)


# -- Task.cause ---------------------------------------------------------------------------


def test_cause_says_why_in_every_state() -> None:
    sup = corral.Supervisor("causes", handle_signals=False, limit=1)
    sup.start()
    gate = threading.Event()
    with released(gate):
        running = sup.spawn(lambda: gate.wait(TIMEOUT), name="running")
        pending = sup.spawn(lambda: None, name="pending")  # behind the limit
        backing_off = sup.spawn(
            _fail, ValueError("flap"), name="flapping", restart="on_failure",
            backoff=corral.Backoff(initial=LONG, maximum=LONG),
        )
        assert running.cause is None
        assert pending.state is TaskState.PENDING
        assert pending.cause is None
        pending.cancel("removed by the operator")
        assert str(pending.cause) == "removed by the operator"
        assert pending.token.cause is pending.cause  # its token says so too
        # The flapping task failed once and backs off; cancelling it then says why.
        gate.set()
        running.join(TIMEOUT)
        assert running.cause is None  # it succeeded: it was not cancelled
        backing_off_state = _until_state(backing_off, TaskState.BACKOFF)
        assert backing_off_state
        assert backing_off.cause is None
        replacement = sup.spawn(lambda: None, name="flapping", replace=True)
        assert isinstance(_cause(backing_off), corral.Replaced)
        backing_off.join(TIMEOUT)  # (it may be between two steps of its restart: it ends then)
        assert backing_off.state is TaskState.CANCELLED
        assert isinstance(backing_off.token.cause, corral.Replaced)
        replacement.join(TIMEOUT)
        last = sup.spawn(_forever, name="last")
    sup.stop(TIMEOUT)
    assert isinstance(last.cause, corral.Stopped)


def _cause(task: corral.Task[Any]) -> BaseException | None:
    return task.cause  # (a call: mypy does not keep an earlier narrowing)


def _until_state(task: corral.Task[Any], state: TaskState) -> bool:
    pause = threading.Event()
    for _ in range(2000):
        if task.state is state:
            return True
        pause.wait(0.005)
    return False


# -- the default supervisor and fatal exceptions ---------------------------------------


@pytest.mark.usefixtures("fresh_default")
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()])
def test_go_task_raising_a_fatal_exception_keeps_go_usable(
    exc: BaseException, corral_log: pytest.LogCaptureFixture
) -> None:
    t = in_thread(lambda: corral.go(_fail, exc, name="fatal"))
    t.join(TIMEOUT)
    assert t.state is TaskState.FAILED
    assert t.exception() is exc
    after = in_thread(lambda: corral.go(lambda: "still here"))
    assert after.result(TIMEOUT) == "still here"
    errors = [r for r in corral_log.records if r.levelno == logging.ERROR and "fatal" in r.getMessage()]
    assert len(errors) == 1


# -- closed groups let go of what outlives them ---------------------------------------


def test_a_group_per_request_in_a_long_task_is_not_kept() -> None:
    refs: list[weakref.ref[corral.Group]] = []
    done = threading.Event()

    def server() -> int:
        task = corral.current_task()
        assert task is not None
        for _ in range(200):
            with corral.Group("request") as g:
                g.spawn(lambda: None)
            refs.append(weakref.ref(g))
        del g
        kept = len(task._child_groups or ())
        done.set()
        return kept

    with corral.Group() as outer:
        t = outer.spawn(server)
    assert t.result() == 0
    assert get_pool().wait_idle(TIMEOUT)  # (a worker lets go of its last attempt)
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_a_group_on_a_long_lived_token_is_not_kept() -> None:
    long_lived = corral.Token()
    refs = []
    for _ in range(100):
        with corral.Group("request", token=long_lived) as g:
            g.spawn(lambda: None)
        refs.append(weakref.ref(g))
    del g
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    assert not long_lived._callbacks
    assert not long_lived._children


def test_a_supervisor_on_a_long_lived_token_is_not_kept() -> None:
    long_lived = corral.Token()
    refs = []
    for _ in range(50):
        sup = corral.Supervisor("sup", token=long_lived, handle_signals=False)
        sup.start()
        sup.stop(TIMEOUT)
        refs.append(weakref.ref(sup))
    del sup
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    assert not long_lived._callbacks


# -- stop reports -------------------------------------------------------------------------


def test_stop_timeout_names_the_grandchild_that_ignores_its_token() -> None:
    up = threading.Event()
    gate = threading.Event()

    def stubborn_leaf() -> None:
        up.set()
        gate.wait(TIMEOUT)  # ignores its token

    def parent() -> None:
        with corral.Group("inner") as inner:
            inner.spawn(stubborn_leaf, name="leaf")

    sup = corral.Supervisor("nested", handle_signals=False)
    sup.start()
    with released(gate):
        sup.spawn(parent, name="parent")
        wait(up)
        with pytest.raises(corral.StopTimeout) as info:
            sup.stop(timeout=0.05)
        running = info.value.running
        assert set(running) == {"parent", "parent/leaf"}
        leaf_stack = running["parent/leaf"]
        # The stack starts at the user's frame: none of corral's machinery above it.
        first = leaf_stack.splitlines()[0]
        assert "stubborn_leaf" in first, leaf_stack
        assert "corral/_pool.py" not in leaf_stack
        assert "corral/_group.py" not in leaf_stack.split("stubborn_leaf")[0]
        assert re.search(r"gate\.wait", leaf_stack)
        gate.set()
        sup.wait(TIMEOUT)
