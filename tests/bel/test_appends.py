"""Appending: serialised, group-committed, each refusal isolated, nothing lost on close."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import psycopg
import pytest
import pytest_twisted
from tests.conftest import PG_ADMIN_DSN
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    EventLog,
    EventLogError,
    IllegalTransition,
    open_event_log,
)

RECEIVED = BuildStatus.BUILD_REQUEST_RECEIVED


def received(build_id: str) -> Event:
    return Event(build_id, BuildRequestEvent(RECEIVED, ("out/1",)))


@pytest_twisted.ensureDeferred
async def test_concurrent_appends_are_stored_in_call_order_in_few_transactions(
    event_log: EventLog,
) -> None:
    events = [received(f"b{i}") for i in range(300)]
    stored = await gatherResults([event_log.append(e) for e in events])
    assert [s.idx for s in stored] == list(range(1, 301))
    assert [s.event_id for s in stored] == [e.event_id for e in events]
    # The first append commits alone; the 299 that queued behind it share the next transaction.
    assert event_log.commits == 2
    assert len((await event_log.list_builds(limit=1000))["builds"]) == 300


@pytest_twisted.ensureDeferred
async def test_appends_made_while_committing_join_the_next_transaction(
    event_log: EventLog,
) -> None:
    chained = []

    async def chain(i: int) -> None:
        for status in (RECEIVED, BuildStatus.BUILD_REQUEST_PLANNING,
                       BuildStatus.BUILD_REQUEST_CANCELLED):
            chained.append(await event_log.append(Event(f"c{i}", BuildRequestEvent(status))))

    from twisted.internet.defer import ensureDeferred

    await gatherResults([ensureDeferred(chain(i)) for i in range(50)])
    assert len(chained) == 150
    assert event_log.commits <= 4
    builds = (await event_log.list_builds(status="cancelled", limit=1000))["builds"]
    assert len(builds) == 50


@pytest_twisted.ensureDeferred
async def test_a_refused_event_does_not_affect_its_batch(event_log: EventLog) -> None:
    results = await DeferredList(
        [
            event_log.append(received("b1")),
            event_log.append(Event("b1", BuildRequestEvent(BuildStatus.BUILD_REQUEST_EXECUTING))),
            event_log.append(received("b2")),
        ],
        consumeErrors=True,
    )
    (ok1, first), (ok2, refused), (ok3, third) = results
    assert ok1 and ok3 and not ok2
    refused.trap(IllegalTransition)
    assert first.idx < third.idx
    events = (await event_log.events())["events"]
    assert [e["build_request_id"] for e in events] == ["b1", "b2"]


@pytest_twisted.ensureDeferred
async def test_an_event_is_stored_once(event_log: EventLog) -> None:
    event = received("b1")
    await event_log.append(event)
    with pytest.raises(EventLogError, match=f"event {event.event_id} is already in the log"):
        await event_log.append(event)
    stored = await event_log.append(received("b2"))
    assert [e["build_request_id"] for e in (await event_log.events())["events"]] == ["b1", "b2"]
    assert stored.idx is not None


@pytest_twisted.ensureDeferred
async def test_close_waits_for_queued_appends(log_uri: str, tmp_path: Path) -> None:
    log = open_event_log(log_uri, tmp_path, reactor)
    await log.open()
    pending = [log.append(received(f"b{i}")) for i in range(100)]
    await log.close()
    assert all(d.called for d in pending)
    with pytest.raises(EventLogError, match="is not open"):
        await log.append(received("late"))
    with pytest.raises(EventLogError, match="is not open"):
        await log.list_builds()
    await log.close()

    again = open_event_log(log_uri, tmp_path, reactor)
    await again.open()
    try:
        assert len((await again.list_builds(limit=1000))["builds"]) == 100
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_a_log_opens_once(event_log: EventLog) -> None:
    with pytest.raises(EventLogError, match="was opened before"):
        await event_log.open()


@pytest_twisted.ensureDeferred
async def test_unreachable_postgresql_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open_event_log(f"postgresql://someone:secret@127.0.0.1:{port}/db", tmp_path, reactor)
    with pytest.raises(EventLogError) as info:
        await log.open()
    message = str(info.value)
    assert message.startswith(f"cannot open the event log at postgresql://someone@127.0.0.1:{port}/db")
    assert "secret" not in message
    with pytest.raises(EventLogError, match="is not open"):
        await log.append(received("b1"))


@pytest_twisted.ensureDeferred
async def test_lost_database_connection_fails_one_batch_then_reconnects(pg_schema: str) -> None:
    name = f"victim_{uuid.uuid4().hex[:8]}"
    log = open_event_log(f"{pg_schema}&application_name={name}", Path("/"), reactor)
    await log.open()
    try:
        await log.append(received("b1"))
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert killed == [(True,)]
        with pytest.raises(EventLogError, match="could not store the event"):
            await log.append(received("b2"))
        await log.append(received("b3"))
        builds = (await log.list_builds())["builds"]
        assert [b["build_request_id"] for b in builds] == ["b3", "b1"]
    finally:
        await log.close()
