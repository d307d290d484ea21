"""Storing events: the transition check, the log row and the summary tables, in one go.

Everything here runs on the log's own thread. A batch reads, in a few queries, what the log
holds about everything its events name; each event is then checked against that state as the
batch's earlier events changed it, in memory, so a refused event changes nothing. The rows
come last: one ``executemany`` per statement, and the summary tables once per batch.
``idx`` is the previous largest ``idx`` plus one, read under the write lock: it is gapless and
in commit order.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from attrs import define, field

from databuild.bel.backend import Database, EventLogError
from databuild.bel.events import (
    BuildRequestEvent,
    DelegationEvent,
    Event,
    JobEvent,
    JobGraphEvent,
    PartitionEvent,
)
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.bel.transitions import IllegalTransition, check_transition
from databuild.errors import DataBuildError

_RAN = (JobStatus.JOB_COMPLETED, JobStatus.JOB_FAILED)


def append_batch(db: Database, events: Sequence[Event]) -> list[Event | DataBuildError]:
    """Store ``events`` in one transaction; each comes back stored, or as the error refusing it.

    A refused event writes nothing and does not affect the others. If the transaction
    itself fails, the exception propagates and none of the events is stored.
    """
    results: list[Event | DataBuildError] = []
    with db.write_transaction():
        row = db.one("SELECT COALESCE(MAX(idx), 0) FROM events")
        assert row is not None
        batch = _Batch.read(db, events, int(row[0]) + 1)
        for event in events:
            try:
                results.append(batch.add(event))
            except DataBuildError as e:
                results.append(e)
        batch.write(db)
    return results


@define
class _Build:
    """A build request's row as the batch leaves it."""

    status: BuildStatus
    is_new: bool
    created_idx: int = 0
    requested_partitions: str = "[]"
    created_at: int = 0
    updated_at: int = 0
    message: str = ""
    changed: bool = False


@define
class _Run:
    """A job run's row as the batch leaves it."""

    job_run_id: str
    build_request_id: str
    job_label: str
    status: JobStatus
    started_at: int | None
    ended_at: int | None
    exit_code: int | None
    is_new: bool
    outputs: tuple[str, ...] = ()
    created_idx: int = 0
    updated_idx: int = 0
    scheduled_at: int = 0
    message: str = ""
    changed: bool = False


@define
class _Stats:
    """What a batch adds to one job's ``job_stats`` row."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_runs: int = 0
    total_duration_ns: int = 0
    last_run_at: int | None = None
    updated_idx: int = 0


@define
class _Batch:
    """One transaction's events: the state they are checked against, and the rows they make."""

    idx: int
    event_ids: set[str]
    """Event ids already in the log, and those of this batch so far."""
    builds: dict[str, _Build]
    partitions: dict[tuple[str, str], PartitionStatus]
    """Each (build request, ref)'s status within its build."""
    runs: dict[str, _Run]
    event_rows: list[tuple[Any, ...]] = field(factory=list)
    catalog_rows: list[tuple[Any, ...]] = field(factory=list)
    touched_partitions: dict[tuple[str, str], None] = field(factory=dict)
    job_counts: defaultdict[tuple[str, str], int] = field(factory=lambda: defaultdict(int))
    stats: defaultdict[str, _Stats] = field(factory=lambda: defaultdict(_Stats))

    @classmethod
    def read(cls, db: Database, events: Sequence[Event], idx: int) -> _Batch:
        """What the log holds about everything ``events`` name, in four queries."""
        build_ids = list(dict.fromkeys(e.build_request_id for e in events))
        refs = list(
            dict.fromkeys(
                e.payload.partition_ref for e in events if isinstance(e.payload, PartitionEvent)
            )
        )
        run_ids = list(
            dict.fromkeys(
                e.payload.job_run_id
                for e in events
                if isinstance(e.payload, PartitionEvent | JobEvent)
            )
        )
        ids = [e.event_id for e in events]
        event_ids = {row[0] for row in _select(db, "event_id FROM events", ("event_id", ids))}
        builds = {
            build_id: _Build(BuildStatus(status), is_new=False)
            for build_id, status in _select(
                db, "build_request_id, status FROM builds", ("build_request_id", build_ids)
            )
        }
        partitions = {
            (build_id, ref): PartitionStatus(status)
            for build_id, ref, status in _select(
                db,
                "build_request_id, partition_ref, status FROM build_partitions",
                ("build_request_id", build_ids),
                ("partition_ref", refs),
            )
        }
        runs = {
            run_id: _Run(run_id, build_id, label, JobStatus(status), started, ended, code,
                         is_new=False)
            for run_id, build_id, label, status, started, ended, code in _select(
                db,
                "job_run_id, build_request_id, job_label, status, started_at, ended_at,"
                " exit_code FROM job_runs",
                ("job_run_id", run_ids),
            )
        }
        return cls(idx, event_ids, builds, partitions, runs)

    def add(self, event: Event) -> Event:
        """Check ``event`` against the state so far and stage its rows; raises if refused."""
        if event.idx is not None:
            raise EventLogError(f"event {event.event_id} already has idx {event.idx}")
        if event.event_id in self.event_ids:
            raise EventLogError(f"event {event.event_id} is already in the log")
        payload = event.payload
        build = self.builds.get(event.build_request_id)
        subject = f"build request {event.build_request_id}"
        if isinstance(payload, BuildRequestEvent):
            check_transition(None if build is None else build.status, payload.status, subject)
        elif build is None:
            first = BuildStatus.BUILD_REQUEST_RECEIVED
            raise IllegalTransition(f"{subject} is unknown: its first event must be {first}")

        run = None
        if isinstance(payload, PartitionEvent | JobEvent):
            run = self.runs.get(payload.job_run_id)
        job_label = None if run is None else run.job_label
        match payload:
            case PartitionEvent():
                check_transition(
                    self.partitions.get((event.build_request_id, payload.partition_ref)),
                    payload.status,
                    f"partition {payload.partition_ref} in {subject}",
                )
            case JobEvent():
                job_label = payload.job_label
                if run is not None and run.build_request_id != event.build_request_id:
                    raise IllegalTransition(
                        f"job run {payload.job_run_id} belongs to build request "
                        f"{run.build_request_id}, not {event.build_request_id}"
                    )
                check_transition(
                    None if run is None else run.status,
                    payload.status,
                    f"job run {payload.job_run_id}",
                )

        idx = self.idx
        self.idx += 1
        self.event_ids.add(event.event_id)
        self._event_row(event, idx, job_label)
        match payload:
            case BuildRequestEvent():
                self._build(event, payload, idx, build)
            case PartitionEvent():
                self._partition(event, payload, idx, job_label)
            case JobEvent():
                self._job_run(event, payload, idx, run)
            case DelegationEvent() | JobGraphEvent():
                pass
        return event.stored_at(idx)

    def _event_row(self, event: Event, idx: int, job_label: str | None) -> None:
        body = event.to_json()
        del body["idx"]
        self.event_rows.append((
            idx,
            event.event_id,
            event.timestamp,
            event.build_request_id,
            event.event_type,
            getattr(event.payload, "partition_ref", None),
            getattr(event.payload, "job_run_id", None),
            job_label,
            json.dumps(body, separators=(",", ":")),
        ))

    def _build(
        self, event: Event, payload: BuildRequestEvent, idx: int, build: _Build | None
    ) -> None:
        if build is None:
            build = self.builds[event.build_request_id] = _Build(
                payload.status,
                is_new=True,
                created_idx=idx,
                requested_partitions=json.dumps(list(payload.requested_partitions)),
                created_at=event.timestamp,
            )
        build.status = payload.status
        build.updated_at = event.timestamp
        build.message = payload.message
        build.changed = True

    def _partition(
        self, event: Event, payload: PartitionEvent, idx: int, job_label: str | None
    ) -> None:
        key = (event.build_request_id, payload.partition_ref)
        self.partitions[key] = payload.status
        self.touched_partitions[key] = None
        self.catalog_rows.append((
            payload.partition_ref,
            payload.status.value,
            event.timestamp,
            idx,
            event.build_request_id,
            payload.job_run_id,
            job_label,
            payload.partition_ref[::-1],
        ))

    def _job_run(self, event: Event, payload: JobEvent, idx: int, run: _Run | None) -> None:
        status, ts = payload.status, event.timestamp
        if run is None:
            run = self.runs[payload.job_run_id] = _Run(
                payload.job_run_id,
                event.build_request_id,
                payload.job_label,
                status,
                started_at=None,
                ended_at=None,
                exit_code=payload.exit_code,
                is_new=True,
                outputs=payload.outputs,
                created_idx=idx,
                scheduled_at=ts,
            )
            stats = self.stats[payload.job_label]
            stats.runs += 1
        else:
            self.job_counts[event.build_request_id, run.status.value] -= 1
            run.status = status
            if payload.exit_code is not None:
                run.exit_code = payload.exit_code
            if status is JobStatus.JOB_RUNNING:
                run.started_at = ts
            if status.final:
                run.ended_at = ts
            ran = status in _RAN and run.started_at is not None
            stats = self.stats[run.job_label]
            stats.succeeded += status is JobStatus.JOB_COMPLETED
            stats.failed += status is JobStatus.JOB_FAILED
            if ran:
                assert run.started_at is not None
                stats.timed_runs += 1
                stats.total_duration_ns += ts - run.started_at
            if status is JobStatus.JOB_RUNNING:
                stats.last_run_at = ts
        stats.updated_idx = idx
        run.updated_idx = idx
        run.message = payload.message
        run.changed = True
        self.job_counts[event.build_request_id, status.value] += 1

    def write(self, db: Database) -> None:
        """Store the staged rows: the events, then each summary table once."""
        db.execute_many(
            "INSERT INTO events (idx, event_id, timestamp, build_request_id, event_type,"
            " partition_ref, job_run_id, job_label, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.event_rows,
        )
        self._write_builds(db)
        self._write_partitions(db)
        self._write_job_runs(db)

    def _write_builds(self, db: Database) -> None:
        changed = [(i, b) for i, b in self.builds.items() if b.changed]
        db.execute_many(
            "INSERT INTO builds (build_request_id, created_idx, status, requested_partitions,"
            " created_at, updated_at, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (i, b.created_idx, b.status.value, b.requested_partitions, b.created_at,
                 b.updated_at, b.message)
                for i, b in changed
                if b.is_new
            ],
        )
        db.execute_many(
            "UPDATE builds SET status = ?, updated_at = ?, message = ?"
            " WHERE build_request_id = ?",
            [(b.status.value, b.updated_at, b.message, i) for i, b in changed if not b.is_new],
        )

    def _write_partitions(self, db: Database) -> None:
        db.execute_many(
            "INSERT INTO build_partitions (build_request_id, partition_ref, status)"
            " VALUES (?, ?, ?) ON CONFLICT (build_request_id, partition_ref)"
            " DO UPDATE SET status = excluded.status",
            [(*key, self.partitions[key].value) for key in self.touched_partitions],
        )
        db.execute_many(
            "INSERT INTO partitions (partition_ref, status, updated_at, updated_idx,"
            " build_request_id, job_run_id, job_label, reversed_ref)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (partition_ref) DO UPDATE SET status = excluded.status,"
            " updated_at = excluded.updated_at, updated_idx = excluded.updated_idx,"
            " build_request_id = excluded.build_request_id, job_run_id = excluded.job_run_id,"
            " job_label = excluded.job_label",
            self.catalog_rows,
        )

    def _write_job_runs(self, db: Database) -> None:
        changed = [r for r in self.runs.values() if r.changed]
        new = [r for r in changed if r.is_new]
        db.execute_many(
            "INSERT INTO job_runs (job_run_id, build_request_id, job_label, outputs, status,"
            " created_idx, updated_idx, scheduled_at, started_at, ended_at, exit_code, message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.job_run_id, r.build_request_id, r.job_label, json.dumps(list(r.outputs)),
                 r.status.value, r.created_idx, r.updated_idx, r.scheduled_at, r.started_at,
                 r.ended_at, r.exit_code, r.message)
                for r in new
            ],
        )
        db.execute_many(
            "UPDATE job_runs SET status = ?, updated_idx = ?, message = ?, exit_code = ?,"
            " started_at = ?, ended_at = ? WHERE job_run_id = ?",
            [
                (r.status.value, r.updated_idx, r.message, r.exit_code, r.started_at,
                 r.ended_at, r.job_run_id)
                for r in changed
                if not r.is_new
            ],
        )
        db.execute_many(
            "INSERT INTO job_run_outputs (partition_ref, job_run_id) VALUES (?, ?)",
            [(ref, r.job_run_id) for r in new for ref in dict.fromkeys(r.outputs)],
        )
        db.execute_many(
            "INSERT INTO build_job_counts (build_request_id, status, count) VALUES (?, ?, ?)"
            " ON CONFLICT (build_request_id, status) DO UPDATE"
            " SET count = build_job_counts.count + excluded.count",
            [(*key, delta) for key, delta in self.job_counts.items()],
        )
        db.execute_many(
            "INSERT INTO job_stats (job_label, runs, succeeded, failed, timed_runs,"
            " total_duration_ns, last_run_at, updated_idx) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_label) DO UPDATE SET runs = job_stats.runs + excluded.runs,"
            " succeeded = job_stats.succeeded + excluded.succeeded,"
            " failed = job_stats.failed + excluded.failed,"
            " timed_runs = job_stats.timed_runs + excluded.timed_runs,"
            " total_duration_ns = job_stats.total_duration_ns + excluded.total_duration_ns,"
            " last_run_at = COALESCE(excluded.last_run_at, job_stats.last_run_at),"
            " updated_idx = excluded.updated_idx",
            [
                (label, s.runs, s.succeeded, s.failed, s.timed_runs, s.total_duration_ns,
                 s.last_run_at, s.updated_idx)
                for label, s in self.stats.items()
            ],
        )


def _select(db: Database, what: str, *where: tuple[str, list[str]]) -> list[tuple[Any, ...]]:
    """``SELECT what`` of the rows whose every named column holds one of its values."""
    if not all(values for _, values in where):
        return []
    conditions, params = [], []
    for column, values in where:
        condition, more = db.in_condition(column, values)
        conditions.append(condition)
        params += more
    return db.all(f"SELECT {what} WHERE {' AND '.join(conditions)}", params)
