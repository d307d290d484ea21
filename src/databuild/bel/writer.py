"""Storing events: the transition check, the log row and the summary tables, in one go.

Everything here runs on the log's own thread. Each event's checks all come before its first
write, so a refused event writes nothing without needing a savepoint. ``idx`` is the previous
largest ``idx`` plus one, read under the write lock: it is gapless and in commit order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from attrs import frozen

from databuild.bel.backend import Database, DuplicateEvent, EventLogError
from databuild.bel.catalog import changes_data
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
        idx = int(row[0]) + 1
        for event in events:
            try:
                results.append(append_one(db, event, idx))
            except DataBuildError as e:
                results.append(e)
            else:
                idx += 1
    return results


# Everything the checks of one event need, in one query (one round trip on PostgreSQL).
# The job run columns describe the run the event names: a job event's own run, or the run
# that a partition event says produces it.
_CURRENT_STATE = (
    "SELECT"
    " (SELECT idx FROM events WHERE event_id = ?),"
    " (SELECT status FROM builds WHERE build_request_id = ?),"
    " (SELECT status FROM build_partitions WHERE build_request_id = ? AND partition_ref = ?),"
    " (SELECT status FROM job_runs WHERE job_run_id = ?),"
    " (SELECT build_request_id FROM job_runs WHERE job_run_id = ?),"
    " (SELECT job_label FROM job_runs WHERE job_run_id = ?),"
    " (SELECT started_at FROM job_runs WHERE job_run_id = ?)"
)


@frozen
class _Current:
    """What the log holds, before an event, about the things the event names."""

    stored_idx: int | None
    """Where the log holds this very event already, if it does."""
    build: BuildStatus | None
    partition: PartitionStatus | None
    run: JobStatus | None
    run_build: str | None
    run_label: str | None
    run_started_at: int | None

    @classmethod
    def read(cls, db: Database, event: Event) -> _Current:
        payload = event.payload
        ref = payload.partition_ref if isinstance(payload, PartitionEvent) else None
        run_id = payload.job_run_id if isinstance(payload, PartitionEvent | JobEvent) else None
        row = db.one(
            _CURRENT_STATE,
            (event.event_id, event.build_request_id, event.build_request_id, ref)
            + (run_id,) * 4,
        )
        assert row is not None
        stored_idx, build, partition, run, run_build, run_label, run_started_at = row
        return cls(
            None if stored_idx is None else int(stored_idx),
            None if build is None else BuildStatus(build),
            None if partition is None else PartitionStatus(partition),
            None if run is None else JobStatus(run),
            run_build,
            run_label,
            run_started_at,
        )


def append_one(db: Database, event: Event, idx: int) -> Event:
    """Check ``event`` and store it at ``idx``; raises before writing anything if refused."""
    if event.idx is not None:
        raise EventLogError(f"event {event.event_id} already has idx {event.idx}")
    now = _Current.read(db, event)
    if now.stored_idx is not None:
        raise DuplicateEvent(
            f"event {event.event_id} is already in the log (idx {now.stored_idx})", now.stored_idx
        )
    payload = event.payload
    subject = f"build request {event.build_request_id}"
    if isinstance(payload, BuildRequestEvent):
        check_transition(now.build, payload.status, subject)
    elif now.build is None:
        raise IllegalTransition(
            f"{subject} is unknown: its first event must be {BuildStatus.BUILD_REQUEST_RECEIVED}"
        )

    job_label = now.run_label
    match payload:
        case PartitionEvent():
            check_transition(
                now.partition, payload.status, f"partition {payload.partition_ref} in {subject}"
            )
        case JobEvent():
            job_label = payload.job_label
            if now.run is not None and now.run_build != event.build_request_id:
                raise IllegalTransition(
                    f"job run {payload.job_run_id} belongs to build request {now.run_build}, "
                    f"not {event.build_request_id}"
                )
            check_transition(now.run, payload.status, f"job run {payload.job_run_id}")

    _insert_event(db, event, idx, job_label)
    match payload:
        case BuildRequestEvent():
            _update_build(db, event, payload, idx, is_new=now.build is None)
        case PartitionEvent():
            _update_partition(db, event, payload, idx, job_label, now.partition)
        case JobEvent():
            _update_job_run(db, event, payload, idx, now)
        case DelegationEvent() | JobGraphEvent():
            pass
    return event.stored_at(idx)


def _insert_event(db: Database, event: Event, idx: int, job_label: str | None) -> None:
    body = event.to_json()
    del body["idx"]
    db.execute(
        "INSERT INTO events (idx, event_id, timestamp, build_request_id, event_type,"
        " partition_ref, job_run_id, job_label, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            idx,
            event.event_id,
            event.timestamp,
            event.build_request_id,
            event.event_type,
            getattr(event.payload, "partition_ref", None),
            getattr(event.payload, "job_run_id", None),
            job_label,
            json.dumps(body, separators=(",", ":")),
        ),
    )


def _update_build(
    db: Database, event: Event, payload: BuildRequestEvent, idx: int, *, is_new: bool
) -> None:
    if is_new:
        db.execute(
            "INSERT INTO builds (build_request_id, created_idx, status, requested_partitions,"
            " created_at, updated_at, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.build_request_id,
                idx,
                payload.status.value,
                json.dumps(list(payload.requested_partitions)),
                event.timestamp,
                event.timestamp,
                payload.message,
            ),
        )
    else:
        db.execute(
            "UPDATE builds SET status = ?, updated_at = ?, message = ?"
            " WHERE build_request_id = ?",
            (payload.status.value, event.timestamp, payload.message, event.build_request_id),
        )


def _update_partition(
    db: Database,
    event: Event,
    payload: PartitionEvent,
    idx: int,
    job_label: str | None,
    previous: PartitionStatus | None,
) -> None:
    db.execute(
        "INSERT INTO build_partitions (build_request_id, partition_ref, status) VALUES (?, ?, ?)"
        " ON CONFLICT (build_request_id, partition_ref) DO UPDATE SET status = excluded.status",
        (event.build_request_id, payload.partition_ref, payload.status.value),
    )
    # The catalog takes a data event always, a bookkeeping one only while no run touched the ref.
    data_idx = idx if changes_data(previous, payload.status) else None
    db.execute(
        "INSERT INTO partitions (partition_ref, status, updated_at, updated_idx,"
        " build_request_id, job_run_id, job_label, reversed_ref, data_idx)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (partition_ref) DO UPDATE SET status = excluded.status,"
        " updated_at = excluded.updated_at, updated_idx = excluded.updated_idx,"
        " build_request_id = excluded.build_request_id, job_run_id = excluded.job_run_id,"
        " job_label = excluded.job_label, data_idx = excluded.data_idx"
        " WHERE excluded.data_idx IS NOT NULL OR partitions.data_idx IS NULL",
        (
            payload.partition_ref,
            payload.status.value,
            event.timestamp,
            idx,
            event.build_request_id,
            payload.job_run_id,
            job_label,
            payload.partition_ref[::-1],
            data_idx,
        ),
    )


def _update_job_run(
    db: Database,
    event: Event,
    payload: JobEvent,
    idx: int,
    now: _Current,
) -> None:
    status, ts = payload.status, event.timestamp
    if now.run is None:
        db.execute(
            "INSERT INTO job_runs (job_run_id, build_request_id, job_label, outputs, status,"
            " created_idx, updated_idx, scheduled_at, exit_code, message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                payload.job_run_id,
                event.build_request_id,
                payload.job_label,
                json.dumps(list(payload.outputs)),
                status.value,
                idx,
                idx,
                ts,
                payload.exit_code,
                payload.message,
            ),
        )
        for ref in dict.fromkeys(payload.outputs):
            db.execute(
                "INSERT INTO job_run_outputs (partition_ref, job_run_id) VALUES (?, ?)",
                (ref, payload.job_run_id),
            )
        db.execute(
            "INSERT INTO job_stats (job_label, runs, succeeded, failed, timed_runs,"
            " total_duration_ns, updated_idx) VALUES (?, 1, 0, 0, 0, 0, ?)"
            " ON CONFLICT (job_label) DO UPDATE SET runs = job_stats.runs + 1,"
            " updated_idx = excluded.updated_idx",
            (payload.job_label, idx),
        )
    else:
        label = now.run_label
        started_at = ts if status is JobStatus.JOB_RUNNING else now.run_started_at
        db.execute(
            "UPDATE job_runs SET status = ?, updated_idx = ?, message = ?,"
            " exit_code = COALESCE(?, exit_code), started_at = ?,"
            " ended_at = CASE WHEN ? THEN ? ELSE ended_at END"
            " WHERE job_run_id = ?",
            (
                status.value,
                idx,
                payload.message,
                payload.exit_code,
                started_at,
                status.final,
                ts,
                payload.job_run_id,
            ),
        )
        ran = status in _RAN and started_at is not None
        db.execute(
            "UPDATE build_job_counts SET count = count - 1"
            " WHERE build_request_id = ? AND status = ?",
            (event.build_request_id, now.run.value),
        )
        db.execute(
            "UPDATE job_stats SET updated_idx = ?,"
            " succeeded = succeeded + ?, failed = failed + ?,"
            " timed_runs = timed_runs + ?, total_duration_ns = total_duration_ns + ?,"
            " last_run_at = CASE WHEN ? THEN ? ELSE last_run_at END"
            " WHERE job_label = ?",
            (
                idx,
                int(status is JobStatus.JOB_COMPLETED),
                int(status is JobStatus.JOB_FAILED),
                int(ran),
                ts - started_at if ran else 0,
                status is JobStatus.JOB_RUNNING,
                ts,
                label,
            ),
        )
    db.execute(
        "INSERT INTO build_job_counts (build_request_id, status, count) VALUES (?, ?, 1)"
        " ON CONFLICT (build_request_id, status) DO UPDATE"
        " SET count = build_job_counts.count + 1",
        (event.build_request_id, status.value),
    )
