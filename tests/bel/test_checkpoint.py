"""A SQLite log's WAL: copied into the database file by the checkpointer's own thread, and
kept under its limit by the writer while appends keep coming."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest_twisted
from tests.bel.test_durability import all_events
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.logger import globalLogPublisher

from databuild.bel import BuildRequestEvent, Event, EventLog, JobEvent
from databuild.bel.backend import Location
from databuild.bel.checkpoint import EVERY, Checkpointer

LIMIT = 2**20
"""The tests' WAL limit: a few dozen commits of the appenders below."""
BUILDS = 20
"""Builds appending at once, each awaiting its own appends: at most 20 events per commit."""
SLACK = 2**20
"""More than one commit of ``BUILDS`` events writes (~70 frames, 0.3 MiB, in these tests):
the WAL passes its limit by at most the commit that crossed it."""


def rows_in_database_file(path: Path, copy: Path) -> int:
    """Rows of ``t`` in the database file alone, without its WAL."""
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as conn:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]


def never_on_writer(fn: Any) -> Any:
    raise AssertionError("no restart was due")


@pytest_twisted.ensureDeferred
async def test_every_few_commits_a_checkpoint_moves_the_wal_into_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (n INTEGER)")
    writer.execute("PRAGMA wal_checkpoint")
    checkpointer = Checkpointer(reactor, Location("sqlite", str(path)), never_on_writer)
    await checkpointer.start()
    for n in range(EVERY - 1):
        writer.execute("INSERT INTO t VALUES (?)", (n,))
        checkpointer.committed(checkpointer.wal_bytes())
    await checkpointer.stop()
    assert rows_in_database_file(path, tmp_path / "copy-1.sqlite") == 0

    checkpointer = Checkpointer(reactor, Location("sqlite", str(path)), never_on_writer)
    await checkpointer.start()
    for n in range(EVERY):
        writer.execute("INSERT INTO t VALUES (?)", (n,))
        checkpointer.committed(checkpointer.wal_bytes())
    await checkpointer.stop()  # waits for the checkpoint the last commit started
    assert rows_in_database_file(path, tmp_path / "copy-2.sqlite") == 2 * EVERY - 1
    writer.close()


def test_a_checkpointer_never_started_stops_at_once(tmp_path: Path) -> None:
    location = Location("sqlite", str(tmp_path / "log.sqlite"))
    stopped = Checkpointer(reactor, location, never_on_writer).stop()
    assert stopped.called  # nothing to wait for; not a Deferred that might never fire


class Appenders:
    """``BUILDS`` builds appending job-run events without a pause, each awaiting its own,
    noting every acknowledged event and the WAL's size when it was acknowledged."""

    def __init__(self, log: EventLog, wal: Path) -> None:
        self.log = log
        self.wal = wal
        self.acked: dict[int, str] = {}
        self.largest_wal = 0
        self.rounds = 0

    async def run(self, appends_per_build: int) -> None:
        self.rounds += 1
        await gatherResults([
            ensureDeferred(self._build(f"r{self.rounds}-b{i}", appends_per_build))
            for i in range(BUILDS)
        ])

    async def _build(self, build_id: str, appends: int) -> None:
        self._ack(await self.log.append(
            Event(build_id, BuildRequestEvent("received", ("out/1",)))
        ))
        for n in range(appends - 1):
            status = "scheduled" if n % 2 == 0 else "skipped"
            run_id = f"{build_id}-{n // 2}"
            self._ack(await self.log.append(
                Event(build_id, JobEvent(run_id, "job", status, ("out/1",)))
            ))

    def _ack(self, event: Event) -> None:
        assert event.idx is not None
        self.acked[event.idx] = event.event_id
        self.largest_wal = max(self.largest_wal, self.wal_bytes())

    def wal_bytes(self) -> int:
        return self.wal.stat().st_size if self.wal.exists() else 0


@contextmanager
def restarts_logged() -> Iterator[list[dict[str, Any]]]:
    """The log's messages about restarts of the WAL, and a check that nothing failed."""
    seen: list[dict[str, Any]] = []
    failures: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "took_ms" in event and event.get("log_namespace", "").startswith("databuild.bel"):
            seen.append(event)
        if "log_failure" in event:
            failures.append(event["log_failure"].getErrorMessage())

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []


def gave_way(restart: dict[str, Any]) -> bool:
    """Whether a logged restart gave way to a reader (the WAL did not restart)."""
    return "not restarted" in restart["log_format"]


async def assert_all_stored(path: Path, acked: dict[int, str]) -> None:
    log = EventLog(reactor, Location("sqlite", str(path)))
    await log.open()
    try:
        stored = {e["idx"]: e["event_id"] for e in await all_events(log)}
    finally:
        await log.close()
    assert stored == acked


@pytest_twisted.ensureDeferred
async def test_continuous_appends_keep_the_wal_under_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "bel.sqlite"
    log = EventLog(reactor, Location("sqlite", str(path)), wal_limit=LIMIT)
    await log.open()
    appenders = Appenders(log, Path(f"{path}-wal"))
    with restarts_logged() as restarts:
        try:
            await appenders.run(appends_per_build=300)  # 6,000 appends, ~20 MiB of WAL
        finally:
            await log.close()
    assert len(appenders.acked) == BUILDS * 300
    assert appenders.largest_wal <= LIMIT + SLACK
    assert len(restarts) >= 2
    assert not any(gave_way(r) for r in restarts)
    await assert_all_stored(path, appenders.acked)


@pytest_twisted.ensureDeferred
async def test_a_reader_of_an_old_snapshot_delays_the_restart_and_nothing_fails(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bel.sqlite"
    log = EventLog(reactor, Location("sqlite", str(path)), wal_limit=LIMIT)
    await log.open()
    appenders = Appenders(log, Path(f"{path}-wal"))
    reader = sqlite3.connect(path, isolation_level=None)
    with restarts_logged() as restarts:
        try:
            await appenders.run(appends_per_build=10)
            reader.execute("BEGIN")
            seen = reader.execute("SELECT count(*) FROM events").fetchone()[0]
            before = len(restarts)
            await appenders.run(appends_per_build=300)
            # The reader kept its snapshot, and the WAL could not restart under it.
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == seen
            held = restarts[before:]
            assert held and all(gave_way(r) for r in held)
            assert appenders.wal_bytes() > 3 * LIMIT
            reader.execute("COMMIT")
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == len(
                appenders.acked
            )

            given_way = len(restarts)
            while len(restarts) == given_way:  # the WAL grows by another limit at most
                assert appenders.rounds < 20
                await appenders.run(appends_per_build=30)
            assert not gave_way(restarts[-1])
            await appenders.run(appends_per_build=30)
            assert appenders.wal_bytes() <= LIMIT + SLACK
        finally:
            reader.close()
            await log.close()
    await assert_all_stored(path, appenders.acked)
