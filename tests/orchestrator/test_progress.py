"""ProgressHub: each build's events from the log, then live, exactly once, in idx order."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from tests.orchestrator.conftest import Harness
from tests.polling import poll_until_async
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater

from databuild.bel import EventLogError
from databuild.errors import NotFound


@pytest_twisted.ensureDeferred
async def test_a_finished_build_is_replayed_whole_then_finished(harness: Harness) -> None:
    harness.plan({"work/b": {"inputs": ["work/a"]}})
    build = await harness.build(["work/b"])
    seen: list[dict[str, Any]] = []
    subscription = await harness.orchestrator.hub.subscribe(
        build["build_request_id"], None, seen.append
    )
    finished = await subscription.finished
    assert seen == await harness.events(build["build_request_id"])
    assert finished == {
        "build_request_id": build["build_request_id"],
        "status": "BUILD_REQUEST_COMPLETED",
        "message": "",
    }
    assert harness.orchestrator.hub.subscribers() == 0


@pytest_twisted.ensureDeferred
async def test_since_skips_what_the_reader_already_has(harness: Harness) -> None:
    build = await harness.build(["work/a"])
    events = await harness.events(build["build_request_id"])
    seen: list[dict[str, Any]] = []
    since = events[4]["idx"]
    subscription = await harness.orchestrator.hub.subscribe(
        build["build_request_id"], since, seen.append
    )
    await subscription.finished
    assert seen == events[5:]


@pytest_twisted.ensureDeferred
async def test_subscribers_joining_at_any_moment_see_each_event_once_in_order(
    harness: Harness,
) -> None:
    harness.plan({f"work/{i}": {"inputs": [f"work/{i - 1}"] if i else []} for i in range(8)})
    build_id = await harness.orchestrator.submit(["work/7"])
    seen: list[list[dict[str, Any]]] = []
    done: list[Deferred[dict[str, Any]]] = []

    async def join(delay: float) -> None:
        await deferLater(reactor, delay, lambda: None)
        mine: list[dict[str, Any]] = []
        seen.append(mine)
        subscription = await harness.orchestrator.hub.subscribe(build_id, 0, mine.append)
        done.append(subscription.finished)

    await gatherResults([ensureDeferred(join(i * 0.03)) for i in range(30)])
    await gatherResults(done)
    events = await harness.events(build_id)
    assert len(events) > 40
    for mine in seen:
        assert mine == events


@pytest_twisted.ensureDeferred
async def test_a_subscriber_is_not_given_the_statuses_it_omits_live_or_replayed(
    harness: Harness,
) -> None:
    harness.plan({f"work/{i}": {"inputs": [f"work/{i - 1}"] if i else []} for i in range(4)})
    build_id = await harness.orchestrator.submit(["work/3"])
    omit = frozenset({"PARTITION_REQUESTED", "PARTITION_BUILDING", "JOB_RUNNING"})
    live: list[dict[str, Any]] = []
    following = await harness.orchestrator.hub.subscribe(build_id, 0, live.append, omit=omit)
    finished = await following.finished
    replayed: list[dict[str, Any]] = []
    again = await harness.orchestrator.hub.subscribe(build_id, 0, replayed.append, omit=omit)
    assert await again.finished == finished == {
        "build_request_id": build_id, "status": "BUILD_REQUEST_COMPLETED", "message": "",
    }
    events = await harness.events(build_id)
    assert omit <= {e.get("status") for e in events}
    assert live == replayed == [e for e in events if e.get("status") not in omit]


@pytest_twisted.ensureDeferred
async def test_closing_a_subscription_stops_delivery_but_not_the_build(harness: Harness) -> None:
    harness.plan({"work/a": {"sleep": 0.3}})
    build_id = await harness.orchestrator.submit(["work/a"])
    seen: list[dict[str, Any]] = []
    subscription = await harness.orchestrator.hub.subscribe(build_id, 0, seen.append)
    subscription.close()
    count = len(seen)
    build = await harness.finished(build_id)
    assert build["status"] == "BUILD_REQUEST_COMPLETED"
    assert len(seen) == count
    assert not subscription.finished.called


@pytest_twisted.ensureDeferred
async def test_a_failing_subscriber_does_not_disturb_the_build_or_others(harness: Harness) -> None:
    harness.plan({"work/a": {"sleep": 0.2}})
    build_id = await harness.orchestrator.submit(["work/a"])
    calls: list[int] = []

    def broken(event: dict[str, Any]) -> None:
        calls.append(event["idx"])
        raise RuntimeError("subscriber bug")

    bad = await harness.orchestrator.hub.subscribe(build_id, 0, broken)
    good: list[dict[str, Any]] = []
    fine = await harness.orchestrator.hub.subscribe(build_id, 0, good.append)
    await fine.finished
    await bad.finished
    assert calls == [e["idx"] for e in good]
    assert (await harness.log.get_build(build_id))["status"] == "BUILD_REQUEST_COMPLETED"
    await poll_until_async(lambda: harness.orchestrator.active_builds == 0, "no live build")
    # The hub logged each of the subscriber's failures; nothing else went wrong.
    assert {e["log_failure"].getErrorMessage() for e in harness.errors} == {"subscriber bug"}
    harness.errors.clear()


@pytest_twisted.ensureDeferred
async def test_subscribing_to_an_unknown_build_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.orchestrator.hub.subscribe("nope", 0, lambda e: None)
    assert harness.orchestrator.hub.subscribers() == 0


@pytest_twisted.ensureDeferred
async def test_readers_are_told_when_the_log_cannot_record_a_builds_end(harness: Harness) -> None:
    harness.plan({"work/a": {"block": True}})
    build_id = await harness.orchestrator.submit(["work/a"])
    await poll_until_async(lambda: harness.starts("work/a"), "work/a to start")
    subscription = await harness.orchestrator.hub.subscribe(build_id, 0, lambda e: None)
    await harness.log.close()  # the log goes away under a running build

    await harness.orchestrator.cancel_build(build_id)

    # No build_finished: the log does not hold the build's end. The reader is told why.
    with pytest.raises(EventLogError, match="not open"):
        await subscription.finished
    assert harness.orchestrator.active_builds == 0
    assert harness.errors  # each refused append was logged
    harness.errors.clear()
