"""Fixtures for the event-log tests: every log test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
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
    PartitionEvent,
    PartitionStatus,
    open_event_log,
)
from databuild.bel.backend import Database, parse_uri
from databuild.bel.schema import create_or_upgrade
from databuild.ids import new_id


@contextmanager
def connected(uri: str, tmp_path: Path) -> Iterator[Database]:
    """A connection of its own to the log at ``uri``, its schema made; closed after."""
    db = Database(parse_uri(uri, tmp_path))
    db.connect()
    create_or_upgrade(db)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An event-log URI for an empty log: a SQLite file, or a fresh PostgreSQL schema.

    PostgreSQL must be running: without it these tests error, they are never skipped.
    """
    if request.param == "sqlite":
        return str(tmp_path / "state" / "bel.sqlite")
    return str(request.getfixturevalue("pg_schema"))


@pytest_twisted.async_yield_fixture
async def event_log(log_uri: str, tmp_path: Path) -> AsyncIterator[EventLog]:
    """An open event log, closed after the test."""
    log = open_event_log(log_uri, tmp_path, reactor)
    await log.open()
    yield log
    await log.close()


class Recorder:
    """Appends the events of plausible builds to a log, in legal order."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    async def build(
        self,
        statuses: tuple[BuildStatus, ...] = (),
        refs: tuple[str, ...] = ("out/1",),
        build_id: str | None = None,
    ) -> str:
        build_id = build_id or new_id()
        await self.log.append(
            Event(build_id, BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, refs))
        )
        for status in statuses:
            await self.log.append(Event(build_id, BuildRequestEvent(status)))
        return build_id

    async def job(
        self,
        build_id: str,
        label: str,
        outputs: tuple[str, ...],
        statuses: tuple[JobStatus, ...],
        run_id: str | None = None,
        exit_code: int | None = None,
    ) -> str:
        run_id = run_id or new_id()
        for status in statuses:
            code = exit_code if status.final else None
            await self.log.append(
                Event(build_id, JobEvent(run_id, label, status, outputs, exit_code=code))
            )
        return run_id

    async def partition(
        self,
        build_id: str,
        ref: str,
        statuses: tuple[PartitionStatus, ...],
        run_id: str | None = None,
    ) -> None:
        for status in statuses:
            await self.log.append(Event(build_id, PartitionEvent(ref, status, job_run_id=run_id)))


@pytest.fixture
def recorder(event_log: EventLog) -> Recorder:
    return Recorder(event_log)
