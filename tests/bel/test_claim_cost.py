"""What a claim reads does not grow with the runs the log holds (SQLite's own count of the
virtual-machine steps it takes, not a timing)."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from databuild.bel import BuildRequestEvent, BuildStatus, Event, JobEvent, JobStatus, open_event_log
from databuild.bel.backend import Database, parse_uri
from databuild.bel.claims import ClaimRequest, claim_many

RAN = (JobStatus.JOB_SCHEDULED, JobStatus.JOB_RUNNING, JobStatus.JOB_COMPLETED)


def steps_to_claim(db: Database, refs: list[str]) -> int:
    """SQLite steps one batch of claims takes, of runs whose outputs are all AVAILABLE."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    requests = [ClaimRequest(f"new-{ref}", "b2", (ref,), True) for ref in refs]
    db._conn.set_progress_handler(count, 1)
    try:
        results = claim_many(db, requests)
    finally:
        db._conn.set_progress_handler(None, 1)
    assert all(r.available for r in results)
    return steps


@pytest_twisted.ensureDeferred
async def test_claiming_reads_the_same_whatever_the_number_of_ended_runs(
    tmp_path: Path,
) -> None:
    uri = str(tmp_path / "bel.sqlite")
    log = open_event_log(uri, tmp_path, reactor)
    await log.open()
    db = Database(parse_uri(uri, tmp_path))
    db.connect()
    try:
        await log.append(Event("b1", BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED)))
        asked = [f"p/{n}" for n in range(16)]

        async def ran(first: int, last: int) -> None:
            await log.append_many([
                Event("b1", JobEvent(f"r{n}", "j", status, (f"p/{n}",)))
                for n in range(first, last)
                for status in RAN
            ])

        await ran(0, 100)
        few = steps_to_claim(db, asked)
        await ran(100, 3000)
        many = steps_to_claim(db, asked)
        # Reading every ended run (SQLite took the index on status) took 11x: 31,814 steps.
        assert many < 2 * few
    finally:
        db.close()
        await log.close()
