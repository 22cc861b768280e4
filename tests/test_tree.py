"""The tree of groups: groups made inside tasks are children, detached groups and groups
made outside any task are roots, cancellation reaches every descendant, and a task is not
finished before the groups it made (DESIGN.md, "The tree" and "Top-level groups").

Tests whose docstring starts with "Seed: <library>" port a case of one of the seed
libraries; where the Go library's behaviour is a bug (marked **BUG?**), they
assert corral's fixed behaviour.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

import pytest

import corral
from corral import TaskState
from helpers import REQUEST_ID, TIMEOUT, released, wait, wait_token

# Every test runs over each runner (the pool, and a thread per attempt): see conftest.
pytestmark = pytest.mark.usefixtures("runner")


def gated(gate: threading.Event, value: object = None) -> object:
    assert gate.wait(TIMEOUT)
    return value


def raise_(exc: BaseException) -> NoReturn:
    raise exc


def state(t: corral.Task[Any]) -> TaskState:
    return t.state


def closed(g: corral.Group) -> bool:
    return g.closed


def test_a_group_made_inside_a_task_is_its_groups_child() -> None:
    made = threading.Event()
    checked = threading.Event()
    leaf_gate = threading.Event()
    box: dict[str, Any] = {}

    def parent() -> str:
        g2 = corral.Group("g2")
        box["g2"] = g2
        box["leaf"] = g2.spawn(gated, leaf_gate, "leaf")
        made.set()
        assert checked.wait(TIMEOUT)
        return "parent"  # without joining g2: the task waits for it anyway

    g1 = corral.Group("g1")
    with released(checked, leaf_gate):
        p = g1.spawn(parent, name="p")
        wait(made)
        g2: corral.Group = box["g2"]
        assert g2.parent is g1
        assert g1.parent is None
        assert g1.children == [g2]
        assert g2.children == []
        roots = corral.roots()
        assert g1 in roots
        assert g2 not in roots
        assert not g2.token.cancelled
        checked.set()
        # the task's function returned, but its group still runs: the task is not finished
        with pytest.raises(TimeoutError):
            p.join(timeout=0.05)
        assert state(p) is TaskState.RUNNING
        assert not p.done
        leaf_gate.set()
        p.join(TIMEOUT)
    assert p.result() == "parent"
    assert closed(g2)  # closed by the task that made it
    assert box["leaf"].result() == "leaf"
    assert g1.children == []
    g1.join(TIMEOUT)
    assert g1 not in corral.roots()


def test_children_and_snapshot_still_show_a_child_group_while_its_task_waits_for_it() -> None:
    # A task that spawns into a group it made and returns (relying on "no orphans") is
    # still running while that group runs: the group is alive and must stay visible.
    returning = threading.Event()
    leaf_gate = threading.Event()
    box: dict[str, corral.Group] = {}

    def parent() -> None:
        g2 = box["g2"] = corral.Group("g2")
        g2.spawn(gated, leaf_gate, name="leaf")
        returning.set()

    g1 = corral.Group("g1")
    with released(leaf_gate):
        p = g1.spawn(parent, name="p")
        wait(returning)
        with pytest.raises(TimeoutError):
            p.join(timeout=0.2)  # the function has returned; the task waits for g2
        g2 = box["g2"]
        assert not g2.closed
        children = g1.children
        snap = g1.snapshot()
        leaf_gate.set()
    g1.join(TIMEOUT)
    assert children == [g2]
    assert [g["name"] for g in snap["tasks"][0]["children"]] == ["g2"]


def test_cancel_reaches_every_descendant_group_and_task() -> None:
    # g1 -> t1 -> g2 (limit 1) -> [t2 -> g3 -> t3, q (queued)]
    t1_ready = threading.Event()
    t3_ready = threading.Event()
    causes: dict[str, BaseException | None] = {}
    box: dict[str, Any] = {}
    called: list[str] = []

    def t3() -> None:
        tok = corral.current_token()
        t3_ready.set()
        assert wait_token(tok)
        causes["t3"] = tok.cause

    def t2() -> None:
        g3 = box["g3"] = corral.Group("g3")
        box["t3"] = g3.spawn(t3, name="t3")
        tok = corral.current_token()
        assert wait_token(tok)
        causes["t2"] = tok.cause

    def t1() -> None:
        g2 = box["g2"] = corral.Group("g2", limit=1)
        box["t2"] = g2.spawn(t2, name="t2")
        box["q"] = g2.spawn(lambda: called.append("q"), name="q")
        t1_ready.set()
        tok = corral.current_token()
        assert wait_token(tok)
        causes["t1"] = tok.cause

    g1 = corral.Group("g1")
    try:
        p = g1.spawn(t1, name="t1")
        wait(t1_ready)
        wait(t3_ready)
        assert state(box["q"]) is TaskState.PENDING
        assert [g.name for g in g1.children] == ["g2"]
        assert [g.name for g in box["g2"].children] == ["g3"]
    finally:
        g1.cancel("shutdown")
    g1.join(TIMEOUT)
    cause = g1.token.cause
    assert isinstance(cause, corral.Cancelled)
    assert cause.args == ("shutdown",)
    assert causes == {"t1": cause, "t2": cause, "t3": cause}
    for name in ("t1", "t2", "t3"):
        assert causes[name] is cause
    for g in (box["g2"], box["g3"]):
        assert g.token.cause is cause
        assert g.closed
    for t in (p, box["t2"], box["t3"]):
        assert t.state is TaskState.CANCELLED
    # the queued task in a descendant group ended without running
    assert box["q"].state is TaskState.CANCELLED
    assert box["q"].attempts == 0
    assert called == []
    assert g1.failures == []


def test_cancelling_a_task_cancels_the_groups_it_made() -> None:
    leaf_up = threading.Event()
    box: dict[str, Any] = {}

    def parent() -> None:
        g2 = box["g2"] = corral.Group("g2")
        box["leaf"] = g2.spawn(leaf_fn)
        assert wait_token()

    def leaf_fn() -> None:
        leaf_up.set()
        assert wait_token()

    with corral.Group("g1") as g1:
        p = g1.spawn(parent)
        other = g1.spawn(lambda: wait_token(), name="other")
        wait(leaf_up)
        p.cancel("just this one")
        p.join(TIMEOUT)
        assert not other.token.cancelled  # a sibling of the cancelled task is untouched
        other.cancel()
    assert p.state is TaskState.CANCELLED
    leaf = box["leaf"]
    assert leaf.state is TaskState.CANCELLED
    assert isinstance(leaf.token.cause, corral.Cancelled)
    assert leaf.token.cause.args == ("just this one",)
    assert box["g2"].closed


def test_a_failure_in_a_child_group_fails_the_task_that_made_it() -> None:
    err = ValueError("deep")

    def parent() -> None:
        g2 = corral.Group("g2")
        g2.spawn(raise_, err, name="deep")
        # returns without joining g2

    g1 = corral.Group("g1")
    p = g1.spawn(parent, name="p")
    with pytest.raises(ExceptionGroup) as info:
        g1.join(TIMEOUT)
    assert len(info.value.exceptions) == 1
    inner = info.value.exceptions[0]
    assert isinstance(inner, ExceptionGroup)
    assert inner.exceptions == (err,)
    assert p.state is TaskState.FAILED
    assert p.exception() is inner


def test_keyboard_interrupt_in_a_child_groups_task_reaches_the_root_join() -> None:
    kbi = KeyboardInterrupt()

    def parent() -> None:
        g2 = corral.Group("g2")
        g2.spawn(raise_, kbi)

    g1 = corral.Group("g1")
    p = g1.spawn(parent)
    with pytest.raises(KeyboardInterrupt) as info:
        g1.join(TIMEOUT)
    assert info.value is kbi
    assert p.state is TaskState.FAILED


def test_a_detached_group_inside_a_task_is_a_root() -> None:
    made = threading.Event()
    gate = threading.Event()
    box: dict[str, Any] = {}

    def parent() -> None:
        gd = box["gd"] = corral.Group("detached", detached=True)
        box["dt"] = gd.spawn(gated, gate, "detached work")
        made.set()
        assert wait_token()

    g1 = corral.Group("g1")
    with released(gate):
        p = g1.spawn(parent)
        wait(made)
        gd: corral.Group = box["gd"]
        assert gd.parent is None
        assert gd in corral.roots()
        assert gd not in g1.children
        assert g1.snapshot()["tasks"][0]["children"] == []
        g1.cancel()
        g1.join(TIMEOUT)  # returns although the detached group's task still runs
        assert p.state is TaskState.CANCELLED
        assert not gd.token.cancelled  # not cancelled with the task
        assert box["dt"].state is TaskState.RUNNING
        assert not gd.closed
        assert gd in corral.roots()
        gate.set()
    gd.join(TIMEOUT)
    assert box["dt"].result() == "detached work"
    assert gd not in corral.roots()


def test_detached_at_top_level_is_just_a_root() -> None:
    g = corral.Group("top", detached=True)
    assert g.parent is None
    assert g in corral.roots()
    g.join(TIMEOUT)
    assert g not in corral.roots()


def test_roots_lists_every_root_alive_and_no_closed_one() -> None:
    a = corral.Group("a")
    b = corral.Group("b")
    try:
        roots = corral.roots()
        assert a in roots
        assert b in roots
        a.join(TIMEOUT)
        roots = corral.roots()
        assert a not in roots
        assert b in roots
        with corral.Group("c") as c:
            assert c in corral.roots()
        assert c not in corral.roots()
    finally:
        a.join(TIMEOUT)
        b.join(TIMEOUT)
    assert b not in corral.roots()


def test_a_group_given_a_token_outside_any_task_is_a_root_cancelled_with_it() -> None:
    tok = corral.Token()
    with corral.Group("tokened", token=tok) as g:
        assert g.parent is None
        assert g in corral.roots()
        t = g.spawn(lambda: wait_token())
        tok.cancel("from outside")
    assert t.state is TaskState.CANCELLED
    assert isinstance(g.token.cause, corral.Cancelled)
    assert g.token.cause.args == ("from outside",)


def test_tg_tree_of_groups_and_cancel_of_the_subtree() -> None:
    """Seed: ThreadGroup — seeds/002: two groups made in the main thread are roots; groups
    made by a task of ThreadGroup2 are its children (2.1, 2.2, 2.3);
    set_event_for_child_tasks on ThreadGroup2 (cancel) sets the event of every child group,
    and not ThreadGroup1's."""
    made: list[corral.Group] = []
    made_event = threading.Event()

    def worker_method() -> None:
        made.extend(corral.Group(f"ThreadGroup2.{i}") for i in (1, 2, 3))
        for sub in made:
            sub.spawn(wait_token)
        made_event.set()
        corral.current_token().wait(TIMEOUT)

    g1 = corral.Group("ThreadGroup1")
    g2 = corral.Group("ThreadGroup2")
    g1_task = g1.spawn(wait_token)
    assert g1.parent is None
    assert g2.parent is None
    assert {g1, g2} <= set(corral.roots())
    g2.spawn(worker_method)
    assert made_event.wait(TIMEOUT)
    assert g2.children == made
    assert all(sub.parent is g2 for sub in made)
    assert not set(made) & set(corral.roots())

    g2.cancel()  # set_event_for_child_tasks
    assert all(sub.token.cancelled for sub in made)
    assert not g1.token.cancelled
    g2.join(TIMEOUT)
    assert all(sub.closed for sub in made)
    assert g1_task.state is TaskState.RUNNING
    g1.cancel()
    g1.join(TIMEOUT)


def test_tg_forest_detached_group_is_a_root_of_its_own() -> None:
    """Seed: ThreadGroup — seeds/002: the tree can become a forest (daemon threads spawned
    from a group) -> Group(detached=True) inside a task is a root, not the task's child, and
    is not cancelled with it."""
    made: list[corral.Group] = []
    made_event = threading.Event()
    daemon_started = threading.Event()

    def daemon() -> None:
        daemon_started.set()
        corral.current_token().wait(TIMEOUT)

    def spawner() -> None:
        d = corral.Group("daemons", detached=True)
        made.append(d)
        d.spawn(daemon)
        made_event.set()

    g = corral.Group("owner")
    g.spawn(spawner)
    assert made_event.wait(TIMEOUT)
    d = made[0]
    g.join(TIMEOUT)  # the task did not wait for its detached group
    g.cancel()
    assert d.parent is None
    assert d in corral.roots()
    assert daemon_started.wait(TIMEOUT)
    assert not d.token.cancelled
    d.cancel()
    d.join(TIMEOUT)


def test_bg_v1_4_head_4_head_14_parent_cancel_does_not_reach_the_task() -> None:
    """Seed: background — v1 #4, HEAD #4 and HEAD #14: the task context
    keeps the parent's values but is never cancelled by the parent (WithoutCancel). corral:
    work started by a request handler in a detached group keeps the handler's contextvars
    and is not cancelled when the request's group is."""
    proceed = threading.Event()
    work_started = threading.Event()
    seen: list[tuple[str, bool]] = []
    detached: list[corral.Group] = []

    def work() -> None:
        work_started.set()
        proceed.wait(TIMEOUT)
        seen.append((REQUEST_ID.get(), corral.cancelled()))

    def handler() -> None:
        REQUEST_ID.set("req-7")
        d = corral.Group("background work", detached=True)
        detached.append(d)
        d.spawn(work)

    request = corral.Group("request")
    try:
        request.spawn(handler)
        request.join(TIMEOUT)
        assert work_started.wait(TIMEOUT)
        request.cancel("the request is over")
    finally:
        proceed.set()
    d = detached[0]
    d.join(TIMEOUT)
    assert seen == [("req-7", False)]
