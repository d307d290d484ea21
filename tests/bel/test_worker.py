"""A log's own thread: calls run on it in order, and their results come back on the reactor."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from databuild.bel.backend import EventLogError
from databuild.bel.worker import Worker


@pytest_twisted.ensureDeferred
async def test_calls_run_one_after_another_on_the_workers_own_thread() -> None:
    worker = Worker(reactor, "test-worker")
    worker.start()
    ran: list[tuple[int, str]] = []
    delivered: list[str] = []

    def call(n: int) -> int:
        ran.append((n, threading.current_thread().name))
        return n * n

    def record(result: int) -> int:
        delivered.append(threading.current_thread().name)
        return result

    try:
        results = await gatherResults([worker.run(call, n).addCallback(record) for n in range(20)])
    finally:
        worker.stop()
    assert results == [n * n for n in range(20)]
    assert ran == [(n, "test-worker") for n in range(20)]
    assert set(delivered) == {threading.current_thread().name} != {"test-worker"}


@pytest_twisted.ensureDeferred
async def test_a_call_that_raises_fails_its_deferred_and_the_next_call_still_runs() -> None:
    worker = Worker(reactor, "test-worker")
    worker.start()

    def broken() -> None:
        raise ValueError("no such table")

    try:
        failed = worker.run(broken)
        after = worker.run(lambda: "still here")
        with pytest.raises(ValueError, match="no such table"):
            await failed
        assert await after == "still here"
    finally:
        worker.stop()


@pytest_twisted.ensureDeferred
async def test_stop_lets_the_calls_given_first_finish_and_later_calls_fail() -> None:
    worker = Worker(reactor, "test-worker")
    worker.start()
    started, release = threading.Event(), threading.Event()
    done: list[int] = []

    def slow(n: int) -> None:
        started.set()
        release.wait()
        done.append(n)

    first = worker.run(slow, 1)
    second = worker.run(done.append, 2)
    assert started.wait(30), "the first call never started"
    release.set()
    worker.stop()
    assert done == [1, 2]
    await gatherResults([first, second])
    with pytest.raises(EventLogError, match="thread test-worker has stopped"):
        await worker.run(done.append, 3)
    worker.stop()
    assert done == [1, 2]


@pytest_twisted.ensureDeferred
async def test_a_worker_never_started_stops_at_once_and_refuses_calls() -> None:
    worker = Worker(reactor, "test-worker")
    worker.stop()
    with pytest.raises(EventLogError, match="has stopped"):
        await worker.run(lambda: None)
