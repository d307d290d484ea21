"""Services on one log (SPEC §5.8): leases fence every append; claims; take-over."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    EventLog,
    JobEvent,
    JobStatus,
    open_event_log,
)
from databuild.bel.backend import Database, EventLogError, parse_uri
from databuild.bel.claims import ClaimRequest, ClaimResult, claim_many, run_states
from databuild.bel.queries import orphaned_builds
from databuild.bel.services import Identity, LeaseLost, list_services, register, take_over

RECEIVED = BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, ("a/1",))


def identity(name: str) -> Identity:
    return Identity(name, "host-1", os.getpid(), 1, "0", "/ws")


@pytest.fixture
def db_of(log_uri: str, tmp_path: Path) -> Iterator[object]:
    """Bare connections to one log (its schema made by an EventLog first)."""
    opened: list[Database] = []

    def connect() -> Database:
        db = Database(parse_uri(log_uri, tmp_path))
        db.connect()
        opened.append(db)
        return db

    yield connect
    for db in opened:
        db.close()


def claim(
    db: Database, job_run_id: str, build_request_id: str, refs: list[str], *, skip_available: bool
) -> ClaimResult:
    """One run's claim, alone in its batch."""
    [result] = claim_many(db, [ClaimRequest(job_run_id, build_request_id, tuple(refs),
                                            skip_available)])
    return result


def expire(db: Database, service_id: str) -> None:
    db.execute("UPDATE services SET expires_at = 0 WHERE service_id = ?", (service_id,))


@pytest_twisted.ensureDeferred
async def test_an_append_after_the_lease_expired_stores_nothing(
    event_log: EventLog, db_of: object
) -> None:
    await event_log.register(identity("s1"), 30.0)
    stored = await event_log.append(Event("b1", RECEIVED))
    assert (await event_log.get_build("b1"))["service_id"] == "s1"

    expire(db_of(), "s1")  # type: ignore[operator]

    with pytest.raises(LeaseLost, match="s1 has lost its lease"):
        await event_log.append(Event("b2", RECEIVED))
    assert await event_log.get_build("b2") is None
    assert (await event_log.events())["events"][-1]["event_id"] == stored.event_id


@pytest_twisted.ensureDeferred
async def test_a_fenced_log_refuses_appends_at_once(event_log: EventLog) -> None:
    await event_log.register(identity("s1"), 30.0)
    event_log.fence("lost it")
    with pytest.raises(LeaseLost, match="fenced: lost it"):
        await event_log.append(Event("b1", RECEIVED))


@pytest_twisted.ensureDeferred
async def test_a_claim_is_all_or_nothing_and_goes_with_its_runs_final_event(
    event_log: EventLog, db_of: object
) -> None:
    await event_log.register(identity("s1"), 30.0)
    await event_log.append(Event("b1", RECEIVED))
    await event_log.append(Event("b1", JobEvent("r1", "j", JobStatus.JOB_SCHEDULED, ("a/1",))))
    other = db_of()  # type: ignore[operator]
    register(other, identity("s2"), 30.0)

    assert (await event_log.claim("r1", "b1", ["a/1", "a/2"], skip_available=True)).granted
    refused = claim(other, "r2", "b2", ["a/0", "a/2"], skip_available=True)
    assert not refused.granted
    assert {ref: h.job_run_id for ref, h in refused.held.items()} == {"a/2": "r1"}
    assert claim(other, "r3", "b2", ["a/0"], skip_available=True).granted  # a/0 was not kept

    await event_log.append(Event("b1", JobEvent("r1", "j", JobStatus.JOB_RUNNING, ("a/1",))))
    await event_log.append(Event("b1", JobEvent("r1", "j", JobStatus.JOB_COMPLETED, ("a/1",))))
    assert claim(other, "r2", "b2", ["a/2"], skip_available=True).granted
    assert run_states(other, ["r1"])["r1"].status is JobStatus.JOB_COMPLETED


@pytest_twisted.ensureDeferred
async def test_claims_of_one_batch_are_granted_all_or_none_per_run(
    event_log: EventLog, db_of: object
) -> None:
    await event_log.register(identity("s1"), 30.0)
    await event_log.append(Event("b1", RECEIVED))
    for run, ref in [("r0", "a/0"), ("r1", "a/1")]:
        await event_log.append(Event("b1", JobEvent(run, "j", JobStatus.JOB_SCHEDULED, (ref,))))
    await event_log.append(Event("b1", JobEvent("r0", "j", JobStatus.JOB_RUNNING, ("a/0",))))
    await event_log.append(Event("b1", JobEvent("r0", "j", JobStatus.JOB_COMPLETED, ("a/0",))))
    other = db_of()  # type: ignore[operator]
    register(other, identity("s2"), 30.0)
    assert claim(other, "held", "b9", ["a/9"], skip_available=True).granted

    asked = [  # all in one reactor turn: they share batches
        event_log.claim("r1", "b1", ["a/1", "a/2"], skip_available=True),
        event_log.claim("r2", "b2", ["a/2"], skip_available=True),  # r1 has it
        event_log.claim("r3", "b3", ["a/3", "a/9"], skip_available=True),  # a/9 is held
        event_log.claim("r4", "b4", ["a/0"], skip_available=True),  # AVAILABLE
        event_log.claim("r5", "b5", ["a/0"], skip_available=False),  # forced
    ]
    granted, r2, r3, r4, forced = [await d for d in asked]

    assert granted.granted and forced.granted
    assert {ref: h.job_run_id for ref, h in r2.held.items()} == {"a/2": "r1"}
    assert {ref: h.service_id for ref, h in r3.held.items()} == {"a/9": "s2"}
    assert r4.available and not r4.granted
    # A refused run keeps none of its claims: a/3 is free for the next claimer.
    assert claim(other, "r6", "b6", ["a/3"], skip_available=True).granted
    assert not claim(other, "r7", "b7", ["a/1"], skip_available=True).granted


@pytest_twisted.ensureDeferred
async def test_claims_asked_of_a_closed_log_fail(event_log: EventLog) -> None:
    await event_log.close()
    with pytest.raises(EventLogError, match="not open"):
        await event_log.claim("r1", "b1", ["a/1"], skip_available=True)


@pytest_twisted.ensureDeferred
async def test_a_dead_services_claims_count_for_nothing_and_one_sweeper_takes_it_over(
    event_log: EventLog, db_of: object
) -> None:
    await event_log.register(identity("s1"), 30.0)
    await event_log.append(Event("b1", RECEIVED))
    await event_log.append(Event("b1", JobEvent("r1", "j", JobStatus.JOB_SCHEDULED, ("a/1",))))
    assert (await event_log.claim("r1", "b1", ["a/1"], skip_available=True)).granted
    sweepers = [db_of(), db_of()]  # type: ignore[operator]
    register(sweepers[0], identity("s2"), 30.0)
    register(sweepers[1], identity("s3"), 30.0)
    expire(sweepers[0], "s1")

    assert claim(sweepers[0], "r2", "b2", ["a/1"], skip_available=True).granted
    assert not run_states(sweepers[0], ["r1"])["r1"].owner_live
    taken = take_over(sweepers[0], "s2", [])
    assert [s["service_id"] for s in taken] == ["s1"]
    assert take_over(sweepers[1], "s3", []) == []
    lease = {s["service_id"]: (s["lease"], s["taken_over_by"]) for s in list_services(sweepers[1])}
    assert lease == {"s1": ("dead", "s2"), "s2": ("live", None), "s3": ("live", None)}
    # The sweeper ended s1's sessions: s1's own log can no longer even read.
    assert [b["build_request_id"] for b in orphaned_builds(sweepers[1], ["s1"])] == ["b1"]


@pytest_twisted.ensureDeferred
async def test_a_service_named_dead_is_taken_over_before_its_lease_expires(
    event_log: EventLog, db_of: object
) -> None:
    await event_log.register(identity("s1"), 30.0)
    db = db_of()  # type: ignore[operator]
    register(db, identity("s2"), 30.0)
    assert take_over(db, "s2", []) == []
    assert [s["service_id"] for s in take_over(db, "s2", ["s1"])] == ["s1"]
    assert {s["service_id"]: s["lease"] for s in list_services(db)}["s1"] == "dead"


@pytest_twisted.ensureDeferred
async def test_builds_of_live_services_are_never_orphaned(
    log_uri: str, tmp_path: Path, event_log: EventLog
) -> None:
    await event_log.register(identity("s1"), 30.0)
    await event_log.append(Event("b1", RECEIVED))
    other = open_event_log(log_uri, tmp_path, reactor)
    await other.open()
    try:
        await other.register(identity("s2"), 30.0)
        assert await other.orphaned_builds() == []
        await other.deregister("s2")
        await event_log.deregister("s1")
        assert [b["build_request_id"] for b in await other.orphaned_builds()] == ["b1"]
    finally:
        await other.close()
