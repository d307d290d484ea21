"""Storing events: the transition check, the log row and the summary tables, in one go.

Everything here runs on the log's own thread. A batch reads, in a few queries, what the log
holds about everything its events name; each event is then checked against that state as the
batch's earlier events changed it, in memory, so a refused event changes nothing. The rows
come last: one statement per table, each row as the batch leaves it.
``idx`` is the previous largest ``idx`` plus one, read under the write lock: it is gapless and
in commit order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from attrs import define, field

from databuild.bel.backend import Database, DuplicateEvent, EventLogError
from databuild.bel.catalog import changes_data
from databuild.bel.claims import release
from databuild.bel.events import (
    BuildRequestEvent,
    DelegationEvent,
    Event,
    JobEvent,
    JobGraphEvent,
    PartitionEvent,
)
from databuild.bel.services import ask_fence
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.bel.transitions import IllegalTransition, illegal, legal
from databuild.errors import DataBuildError
from databuild.jsontext import compact

_RAN = (JobStatus.JOB_COMPLETED, JobStatus.JOB_FAILED)


def append_batch(db: Database, events: Sequence[Event]) -> list[Event | DataBuildError]:
    """Store ``events`` in one transaction; each comes back stored, or as the error refusing it.

    A refused event writes nothing and does not affect the others. If the transaction
    itself fails, or the writing service has lost its lease (LeaseLost), the exception
    propagates and none of the events is stored.
    """
    results: list[Event | DataBuildError] = []
    with db.write_transaction():
        # The fence: a service whose lease is gone stores nothing (SPEC §5.8).
        fence = ask_fence(db)
        batch = _Batch.read(db, events)
        fence()
        for event in events:
            try:
                results.append(batch.add(event))
            except DataBuildError as e:
                results.append(e)
        batch.write(db)
    return results


@define
class _Build:
    """A build request's ``builds`` row as the batch leaves it."""

    status: BuildStatus
    created_idx: int
    requested_partitions: str
    created_at: int
    message: str
    updated_at: int = 0
    changed: bool = False
    retry_of: str | None = None
    """Set from a build's first event only (an update of the row leaves it)."""

    def row(self, build_request_id: str) -> tuple[Any, ...]:
        return (build_request_id, self.created_idx, self.status.value,
                self.requested_partitions, self.created_at, self.updated_at, self.message,
                self.retry_of)


_EVENT_COLUMNS = (
    "idx", "event_id", "timestamp", "build_request_id", "event_type", "partition_ref",
    "job_run_id", "job_label", "body",
)
_BUILD_COLUMNS = (
    "build_request_id", "created_idx", "status", "requested_partitions", "created_at",
    "updated_at", "message", "retry_of", "service_id",
)
_RUN_COLUMNS = (
    "job_run_id", "build_request_id", "job_label", "outputs", "status", "created_idx",
    "updated_idx", "scheduled_at", "started_at", "ended_at", "exit_code", "message",
)


@define
class _Run:
    """A job run's ``job_runs`` row as the batch leaves it."""

    job_run_id: str
    build_request_id: str
    job_label: str
    outputs: str
    status: JobStatus
    created_idx: int
    updated_idx: int
    scheduled_at: int
    started_at: int | None
    ended_at: int | None
    exit_code: int | None
    message: str
    changed: bool = False

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> _Run:
        """A run from its row's ``_RUN_COLUMNS``."""
        return cls(*row[:4], JobStatus(row[4]), *row[5:])  # type: ignore[call-arg]

    def row(self) -> tuple[Any, ...]:
        return (self.job_run_id, self.build_request_id, self.job_label, self.outputs,
                self.status.value, self.created_idx, self.updated_idx, self.scheduled_at,
                self.started_at, self.ended_at, self.exit_code, self.message)


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
    stored: dict[str, int]
    """The ``idx`` of each of the batch's event ids the log holds, or the batch so far."""
    builds: dict[str, _Build]
    partitions: dict[tuple[str, str], PartitionStatus]
    """Each (build request, ref)'s status within its build."""
    runs: dict[str, _Run]
    with_data: set[str]
    """The batch's refs whose catalog row holds data already: no bookkeeping event changes it
    (read on SQLite only, see ``read``)."""
    event_rows: list[tuple[Any, ...]] = field(factory=list)
    catalog: dict[str, tuple[Any, ...]] = field(factory=dict)
    """Each ref's ``partitions`` row: the batch's last data event's, else its last event's."""
    touched_partitions: dict[tuple[str, str], None] = field(factory=dict)
    outputs: list[tuple[str, str]] = field(factory=list)
    """The ``job_run_outputs`` rows of the batch's new runs."""
    plans: list[tuple[str, ...]] = field(factory=list)
    """The ``job_run_plans`` rows of the batch's job graphs."""
    inputs: dict[tuple[str, str], None] = field(factory=dict)
    """The ``job_run_inputs`` rows of those plans."""
    planned_outputs: dict[tuple[str, str, str], None] = field(factory=dict)
    """The ``build_planned_outputs`` rows of those plans."""
    job_edges: dict[tuple[str, str, str], None] = field(factory=dict)
    """The ``build_job_edges`` found within one ``job_graph`` event."""
    graphs_completed: list[str] = field(factory=list)
    """Builds whose graph of several pieces the batch completes: their edges across pieces."""
    job_counts: defaultdict[tuple[str, str], int] = field(factory=lambda: defaultdict(int))
    stats: defaultdict[str, _Stats] = field(factory=lambda: defaultdict(_Stats))

    @classmethod
    def read(cls, db: Database, events: Sequence[Event]) -> _Batch:
        """The next ``idx``, and what the log holds about everything ``events`` name.

        The queries are sent before any result is read: one round trip on PostgreSQL.
        """
        build_set: dict[str, None] = {}
        key_set: dict[tuple[str, str], None] = {}
        run_set: dict[str, None] = {}
        for e in events:  # one pass: the log's thread holds the GIL for it
            build_set[e.build_request_id] = None
            payload = e.payload
            if isinstance(payload, PartitionEvent):
                key_set[e.build_request_id, payload.partition_ref] = None
                if payload.job_run_id is not None:
                    run_set[payload.job_run_id] = None
            elif isinstance(payload, JobEvent):
                run_set[payload.job_run_id] = None
        build_ids, keys, run_ids = list(build_set), list(key_set), list(run_set)
        last = db.execute("SELECT COALESCE(MAX(idx), 0) FROM events")
        known = _select(
            db, "event_id, idx FROM events", ("event_id", [e.event_id for e in events])
        )
        builds = _select(
            db,
            "build_request_id, status, created_idx, requested_partitions, created_at, message"
            " FROM builds",
            ("build_request_id", build_ids),
        )
        condition, params = db.in_pairs(("build_request_id", "partition_ref"), keys)
        partitions = db.execute(
            f"SELECT build_request_id, partition_ref, status FROM build_partitions"
            f" WHERE {condition}",
            params,
            replan=True,
        )
        runs = _select(db, f"{', '.join(_RUN_COLUMNS)} FROM job_runs", ("job_run_id", run_ids))
        with_data = None
        # Not on PostgreSQL: its planner answered this lookup from the refs' trigram index
        # (which serves equality too) while the table was young, at up to seconds a batch;
        # there the upsert's WHERE alone refuses those rows (docs/performance.md).
        if keys and db.dialect == "sqlite":
            condition, params = db.in_condition("partition_ref", list({r for _, r in keys}))
            with_data = db.execute(
                f"SELECT partition_ref FROM partitions WHERE data_idx IS NOT NULL"
                f" AND {condition}",
                params,
                replan=True,
            )
        return cls(
            int(last.fetchone()[0]) + 1,
            {event_id: int(idx) for event_id, idx in known.fetchall()},
            {
                build_id: _Build(BuildStatus(status), created, requested, created_at, message)
                for build_id, status, created, requested, created_at, message in builds.fetchall()
            },
            {
                (build_id, ref): PartitionStatus(status)
                for build_id, ref, status in partitions.fetchall()
            },
            {row[0]: _Run.from_row(row) for row in runs.fetchall()},
            set() if with_data is None else {ref for (ref,) in with_data.fetchall()},
        )

    def add(self, event: Event) -> Event:
        """Check ``event`` against the state so far and stage its rows; raises if refused.

        The subject of a refusal is named only once there is one: the writer's thread holds
        the GIL for this about 4 µs an event, and bulk work waits on it (docs/performance.md).
        """
        if event.idx is not None:
            raise EventLogError(f"event {event.event_id} already has idx {event.idx}")
        stored_idx = self.stored.get(event.event_id)
        if stored_idx is not None:
            raise DuplicateEvent(
                f"event {event.event_id} is already in the log (idx {stored_idx})", stored_idx
            )
        payload = event.payload
        build_id = event.build_request_id
        build = self.builds.get(build_id)
        if isinstance(payload, BuildRequestEvent):
            current = None if build is None else build.status
            if not legal(current, payload.status):
                raise illegal(current, payload.status, f"build request {build_id}")
        elif build is None:
            first = BuildStatus.BUILD_REQUEST_RECEIVED
            raise IllegalTransition(
                f"build request {build_id} is unknown: its first event must be {first}"
            )

        run = None
        job_label = None
        previous: PartitionStatus | None = None
        if isinstance(payload, PartitionEvent):
            previous = self.partitions.get((build_id, payload.partition_ref))
            if not legal(previous, payload.status):
                raise illegal(
                    previous,
                    payload.status,
                    f"partition {payload.partition_ref} in build request {build_id}",
                )
            if payload.job_run_id is not None:
                run = self.runs.get(payload.job_run_id)
                job_label = None if run is None else run.job_label
        elif isinstance(payload, JobEvent):
            run = self.runs.get(payload.job_run_id)
            if run is not None and run.build_request_id != build_id:
                raise IllegalTransition(
                    f"job run {payload.job_run_id} belongs to build request "
                    f"{run.build_request_id}, not {build_id}"
                )
            current_run = None if run is None else run.status
            if not legal(current_run, payload.status):
                raise illegal(current_run, payload.status, f"job run {payload.job_run_id}")
            job_label = payload.job_label

        idx = self.idx
        self.idx = idx + 1
        self.stored[event.event_id] = idx
        body = self._event_row(event, idx, job_label)
        match payload:
            case PartitionEvent():
                self._partition(event, payload, idx, job_label, previous)
            case JobEvent():
                self._job_run(event, payload, idx, run)
            case BuildRequestEvent():
                self._build(event, payload, idx, build)
            case JobGraphEvent():
                self._plan(build_id, payload)
                if payload.pieces > 1 and payload.piece == payload.pieces - 1:
                    self.graphs_completed.append(build_id)
            case DelegationEvent():
                pass
        return event.stored_at(idx, body)

    def _event_row(self, event: Event, idx: int, job_label: str | None) -> str:
        """Stage the event's row; its body's compact JSON."""
        payload = event.payload
        body = compact(event.body_json())
        self.event_rows.append((
            idx,
            event.event_id,
            event.timestamp,
            event.build_request_id,
            payload.event_type,
            getattr(payload, "partition_ref", None),
            getattr(payload, "job_run_id", None),
            job_label,
            body,
        ))
        return body

    def _build(
        self, event: Event, payload: BuildRequestEvent, idx: int, build: _Build | None
    ) -> None:
        if build is None:
            build = self.builds[event.build_request_id] = _Build(
                payload.status,
                created_idx=idx,
                requested_partitions=compact(payload.requested_partitions),
                created_at=event.timestamp,
                message=payload.message,
                retry_of=payload.retry_of,
            )
        build.status = payload.status
        build.updated_at = event.timestamp
        build.message = payload.message
        build.changed = True

    def _partition(
        self,
        event: Event,
        payload: PartitionEvent,
        idx: int,
        job_label: str | None,
        previous: PartitionStatus | None,
    ) -> None:
        """Stage a partition event that moves its ref from ``previous`` within its build."""
        key = (event.build_request_id, payload.partition_ref)
        # The catalog takes a data event always, a bookkeeping one only while no run touched
        # the ref (bel/catalog.py).
        data_idx = idx if changes_data(previous, payload.status) else None
        self.partitions[key] = payload.status
        self.touched_partitions[key] = None
        # The rows of one ref, applied in turn under the catalog's rule (bel/catalog.py), leave
        # the last that carries a data_idx, or else the last of all: only that one is stored.
        # A row holding data takes no bookkeeping: the upsert's WHERE (write) is the rule, and
        # holds against another service's commit in between; this spares the rows it refuses.
        if data_idx is None and payload.partition_ref in self.with_data:
            return
        prior = self.catalog.get(payload.partition_ref)
        if data_idx is None and prior is not None and prior[-1] is not None:
            return
        self.catalog[payload.partition_ref] = (
            payload.partition_ref,
            payload.status.value,
            event.timestamp,
            idx,
            event.build_request_id,
            payload.job_run_id,
            job_label,
            payload.partition_ref[::-1],
            data_idx,
        )

    def _plan(self, build_request_id: str, payload: JobGraphEvent) -> None:
        """Stage each planned run's config, what it reads and makes, and the job-level edges
        within this piece of the graph (those across pieces wait for its last piece)."""
        runs = payload.job_graph.job_runs
        producer = {ref: run.job_label for run in runs for ref in run.outputs}
        for ref, label in producer.items():
            self.planned_outputs[build_request_id, ref, label] = None
        for run in runs:
            config = run.config
            self.plans.append((
                run.job_run_id,
                build_request_id,
                run.job_label,
                compact([
                    {"partition_ref": i.partition_ref, "dep_type": i.dep_type.type_name}
                    for i in config.inputs
                ]),
                compact(list(config.args)),
                compact(dict(config.env)),
            ))
            for i in config.inputs:
                self.inputs[i.partition_ref, run.job_run_id] = None
                upstream = producer.get(i.partition_ref)
                if upstream is not None and upstream != run.job_label:
                    self.job_edges[build_request_id, upstream, run.job_label] = None

    def _job_run(self, event: Event, payload: JobEvent, idx: int, run: _Run | None) -> None:
        status, ts = payload.status, event.timestamp
        if run is None:
            run = self.runs[payload.job_run_id] = _Run(
                payload.job_run_id,
                event.build_request_id,
                payload.job_label,
                compact(payload.outputs),
                status,
                created_idx=idx,
                updated_idx=idx,
                scheduled_at=ts,
                started_at=None,
                ended_at=None,
                exit_code=payload.exit_code,
                message=payload.message,
            )
            self.outputs.extend((ref, run.job_run_id) for ref in dict.fromkeys(payload.outputs))
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
        db.insert_many("events", _EVENT_COLUMNS, self.event_rows)
        db.insert_many(
            "builds",
            _BUILD_COLUMNS,
            # The owner is the service storing a build's first event (an update keeps it).
            [(*b.row(i), db.service_id) for i, b in self.builds.items() if b.changed],
            "ON CONFLICT (build_request_id) DO UPDATE SET status = excluded.status,"
            " updated_at = excluded.updated_at, message = excluded.message",
        )
        db.insert_many(
            "build_partitions",
            ("build_request_id", "partition_ref", "status"),
            [(*key, self.partitions[key].value) for key in self.touched_partitions],
            "ON CONFLICT (build_request_id, partition_ref) DO UPDATE SET status = excluded.status",
        )
        db.insert_many(
            "partitions",
            ("partition_ref", "status", "updated_at", "updated_idx", "build_request_id",
             "job_run_id", "job_label", "reversed_ref", "data_idx"),
            list(self.catalog.values()),
            "ON CONFLICT (partition_ref) DO UPDATE SET status = excluded.status,"
            " updated_at = excluded.updated_at, updated_idx = excluded.updated_idx,"
            " build_request_id = excluded.build_request_id, job_run_id = excluded.job_run_id,"
            " job_label = excluded.job_label, data_idx = excluded.data_idx"
            " WHERE excluded.data_idx IS NOT NULL OR partitions.data_idx IS NULL",
        )
        db.insert_many(
            "job_runs",
            _RUN_COLUMNS,
            [r.row() for r in self.runs.values() if r.changed],
            "ON CONFLICT (job_run_id) DO UPDATE SET status = excluded.status,"
            " updated_idx = excluded.updated_idx, started_at = excluded.started_at,"
            " ended_at = excluded.ended_at, exit_code = excluded.exit_code,"
            " message = excluded.message",
        )
        db.insert_many("job_run_outputs", ("partition_ref", "job_run_id"), self.outputs)
        db.insert_many(
            "job_run_plans",
            ("job_run_id", "build_request_id", "job_label", "inputs", "args", "env"),
            self.plans,
            "ON CONFLICT (job_run_id) DO NOTHING",
        )
        db.insert_many("job_run_inputs", ("partition_ref", "job_run_id"), list(self.inputs),
                       "ON CONFLICT (partition_ref, job_run_id) DO NOTHING")
        db.insert_many("build_planned_outputs", ("build_request_id", "partition_ref", "job_label"),
                       list(self.planned_outputs), "ON CONFLICT DO NOTHING")
        db.insert_many("build_job_edges", ("build_request_id", "upstream", "downstream"),
                       list(self.job_edges), "ON CONFLICT DO NOTHING")
        for build_request_id in self.graphs_completed:
            # The pieces were stored in order: with the last, every run of the plan is known.
            # From what the build makes to who reads it: each step an index's prefix.
            db.execute(
                "INSERT INTO build_job_edges (build_request_id, upstream, downstream)"
                " SELECT DISTINCT o.build_request_id, o.job_label, p.job_label"
                " FROM build_planned_outputs o"
                " JOIN job_run_inputs i ON i.partition_ref = o.partition_ref"
                " JOIN job_run_plans p ON p.job_run_id = i.job_run_id"
                " WHERE o.build_request_id = ? AND p.build_request_id = o.build_request_id"
                " AND o.job_label <> p.job_label"
                " ON CONFLICT DO NOTHING",
                (build_request_id,),
            )
        # A run's claims go with its final event (SPEC §5.8).
        release(db, [r.job_run_id for r in self.runs.values() if r.changed and r.status.final])
        db.insert_many(
            "build_job_counts",
            ("build_request_id", "status", "count"),
            [(*key, delta) for key, delta in self.job_counts.items()],
            "ON CONFLICT (build_request_id, status) DO UPDATE"
            " SET count = build_job_counts.count + excluded.count",
        )
        db.insert_many(
            "job_stats",
            ("job_label", "runs", "succeeded", "failed", "timed_runs", "total_duration_ns",
             "last_run_at", "updated_idx"),
            [
                (label, s.runs, s.succeeded, s.failed, s.timed_runs, s.total_duration_ns,
                 s.last_run_at, s.updated_idx)
                for label, s in self.stats.items()
            ],
            "ON CONFLICT (job_label) DO UPDATE SET runs = job_stats.runs + excluded.runs,"
            " succeeded = job_stats.succeeded + excluded.succeeded,"
            " failed = job_stats.failed + excluded.failed,"
            " timed_runs = job_stats.timed_runs + excluded.timed_runs,"
            " total_duration_ns = job_stats.total_duration_ns + excluded.total_duration_ns,"
            " last_run_at = COALESCE(excluded.last_run_at, job_stats.last_run_at),"
            " updated_idx = excluded.updated_idx",
        )


def _select(db: Database, what: str, *where: tuple[str, Sequence[str | None]]) -> Any:
    """A cursor over ``SELECT what`` of the rows whose every named column holds one of its
    values; its rows are read later, so that several queries share one round trip."""
    conditions, params = [], []
    for column, values in where:
        condition, more = db.in_condition(column, values)
        conditions.append(condition)
        params += more
    return db.execute(f"SELECT {what} WHERE {' AND '.join(conditions)}", params, replan=True)
