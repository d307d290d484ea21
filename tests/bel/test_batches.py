"""A batch of events stores exactly what the same events store one transaction each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.bel.conftest import connected

from databuild.bel import BuildRequestEvent, Event, JobEvent, PartitionEvent
from databuild.bel.backend import Database
from databuild.bel.writer import append_batch

TABLES = {
    "events": "idx",
    "builds": "build_request_id",
    "build_job_counts": "build_request_id, status",
    "partitions": "partition_ref",
    "build_partitions": "build_request_id, partition_ref",
    "job_runs": "job_run_id",
    "job_run_outputs": "partition_ref, job_run_id",
    "job_stats": "job_label",
}


def two_builds() -> list[Event]:
    """Two builds' events, interleaved, with refused ones among them; then a third build's."""
    clock = iter(range(1_000_000_000, 2_000_000_000, 1_000))
    events: list[Event] = []

    def add(build: str, payload: Any) -> Event:
        event = Event(build, payload, timestamp=next(clock))
        events.append(event)
        return event

    for build in ("b1", "b2"):
        add(build, BuildRequestEvent("received", ("out/a", "out/b")))
    add("nobody", JobEvent("r0", "//j:a", "scheduled", ("out/a",)))  # unknown build
    for status in ("planning", "analysis_completed", "executing"):
        for build in ("b1", "b2"):
            add(build, BuildRequestEvent(status))
    add("b1", BuildRequestEvent("planning"))  # not after executing
    for build in ("b1", "b2"):
        for ref in ("out/a", "out/b"):
            add(build, PartitionEvent(ref, "requested"))
    for build, run, ok in (("b1", "b1-a", True), ("b2", "b2-a", False)):
        add(build, JobEvent(run, "//j:a", "scheduled", ("out/a", "out/b", "out/a")))
        add(build, PartitionEvent("out/a", "scheduled", job_run_id=run))
        add("b2" if build == "b1" else "b1", JobEvent(run, "//j:a", "running", ("out/a",)))
        add(build, JobEvent(run, "//j:a", "running", ("out/a",)))
        add(build, PartitionEvent("out/a", "building", job_run_id=run))
        add(build, PartitionEvent("out/a", "available", job_run_id=run))
        if ok:
            add(build, JobEvent(run, "//j:a", "completed", ("out/a",), exit_code=0))
            add(build, PartitionEvent("out/a", "available", job_run_id=run))  # again
        else:
            add(build, JobEvent(run, "//j:a", "failed", ("out/a",), "exit 3", exit_code=3))
            add(build, PartitionEvent("out/a", "failed", job_run_id=run))  # after available
    add("b1", JobEvent("b1-b", "//j:b", "scheduled", ("out/b",)))
    add("b1", JobEvent("b1-b", "//j:b", "skipped", ("out/b",), "up to date"))
    add("b1", JobEvent("b1-b", "//j:b", "running", ("out/b",)))  # after a final status
    events.append(events[0])  # already stored
    add("b1", BuildRequestEvent("completed"))
    add("b2", BuildRequestEvent("failed", message="a job failed"))
    # Bookkeeping after data: the catalog keeps out/a's data status, takes out/c's.
    add("b3", BuildRequestEvent("received", ("out/a", "out/c")))
    add("b3", PartitionEvent("out/a", "requested"))
    add("b3", PartitionEvent("out/c", "requested"))
    return events


def contents(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(row) for row in db.all(f"SELECT * FROM {table} ORDER BY {key}")]
        for table, key in TABLES.items()
    }


@pytest.fixture
def database(log_uri: str, tmp_path: Path) -> Iterator[Database]:
    with connected(log_uri, tmp_path) as db:
        yield db


@pytest.fixture
def one_each(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite log, for the same events stored one transaction each."""
    with connected(str(tmp_path / "one-each.sqlite"), tmp_path) as db:
        yield db


def _described(results: list[Any]) -> list[Any]:
    """Stored events as they are, refusals as their type and message."""
    return [r if isinstance(r, Event) else (type(r), str(r)) for r in results]


def test_one_batch_stores_what_one_transaction_per_event_stores(
    database: Database, one_each: Database
) -> None:
    events = two_builds()
    expected = [append_batch(one_each, [event])[0] for event in events]

    batched = append_batch(database, events)

    assert _described(batched) == _described(expected)
    assert sum(not isinstance(r, Event) for r in batched) == 8
    assert contents(database) == contents(one_each)


@pytest.mark.parametrize("size", [3, 7])
def test_batches_of_any_size_store_what_one_transaction_per_event_stores(
    database: Database, one_each: Database, size: int
) -> None:
    """Batch boundaries fall inside each ref's, run's and build's sequence of changes."""
    events = two_builds()
    expected = [append_batch(one_each, [event])[0] for event in events]

    batched = [
        result
        for first in range(0, len(events), size)
        for result in append_batch(database, events[first:first + size])
    ]

    assert _described(batched) == _described(expected)
    assert contents(database) == contents(one_each)
