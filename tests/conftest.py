"""Shared fixtures: every test must leave nothing running behind it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import suppress

import pytest

import corral
from corral._pool import get_pool
from corral._runner import using
from corral.testing import MockClock
from redis_server import RedisServer
from runners import LoopRunner, ThreadPerAttemptRunner


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Iterator[None]:
    """After each test: no root group alive, no pool worker busy, no stray thread."""
    before = set(threading.enumerate())
    yield
    leftover = corral.roots()
    for g in leftover:  # clean up so one failure does not cascade into the next tests
        with suppress(BaseException):
            if isinstance(g, corral.AsyncSupervisor):  # (its stop is awaited)
                asyncio.run(g.stop(timeout=5))
            elif isinstance(g, corral.Supervisor):
                g.stop(timeout=5)
            elif isinstance(g, corral.AsyncGroup):  # (its join is awaited)
                g.cancel()
                asyncio.run(g.join(timeout=5))
            else:
                g.cancel()
                g.join(timeout=5)
    assert not leftover, f"root groups left alive by the test: {leftover}"
    assert get_pool().wait_idle(timeout=10), "a pool worker is still busy after the test"
    stray = [
        t for t in set(threading.enumerate()) - before
        if t.is_alive() and not t.daemon
    ]
    assert not stray, f"non-daemon threads left running: {stray}"


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
def corral_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="corral")
    return caplog


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port (function scope: tests kill it)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_default_coordinator_leaks() -> Iterator[None]:
    """A test that made the process-wide coordinator (CORRAL_COORDINATOR, go()) must
    not hand it to the next test."""
    yield
    from corral._choose_coordinator import _reset_default

    _reset_default()


@pytest.fixture
def fresh_default() -> Iterator[None]:
    """corral.go()'s default supervisor, made fresh for the test and stopped after it."""
    corral._supervisor._reset_default_for_tests()
    try:
        yield
    finally:
        corral._supervisor._reset_default_for_tests()


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Reference counting alone must free what the test drops: no gc pass runs (one
    runs first, so that garbage from earlier tests is not counted)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# The runners the semantics suites run over; CORRAL_RUNNERS (comma-separated) picks
# some: "asyncio-eager" (3.12+, a loop with asyncio.eager_task_factory) is not in the
# default set (scripts/check.sh runs it on 3.12).
RUNNERS = os.environ.get("CORRAL_RUNNERS", "pool,thread-per-attempt,asyncio").split(",")


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> Iterator[ThreadPerAttemptRunner | LoopRunner | None]:
    """The groups a test makes run their attempts on the pool (the default runner), on
    a thread per attempt (``runners.ThreadPerAttemptRunner``), or as asyncio tasks
    (``runners.LoopRunner``: the asyncio runner, plain functions awaited on threads):
    the semantics suites use it (``pytestmark``) to run over all three."""
    if request.param == "pool":
        yield None
        return
    if request.param in ("asyncio", "asyncio-eager"):
        if request.param == "asyncio-eager" and sys.version_info < (3, 12):
            pytest.skip("eager task factories are new in 3.12")
        on_a_loop = LoopRunner(eager=request.param == "asyncio-eager")
        try:
            with using(on_a_loop):
                yield on_a_loop
        finally:
            assert on_a_loop.close(10), "the test's loop did not stop"
        return
    per_attempt = ThreadPerAttemptRunner()
    with using(per_attempt):
        yield per_attempt
    assert per_attempt.join_all(10), "an attempt thread of the test is still running"
