"""Big finished builds written straight into a workspace's SQLite event log through the real
writer, for the dashboard's tests and benchmark: a build of 100,000 runs costs seconds to
write rather than the hours its jobs would take, and the service then serves it as any other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    JobEvent,
    JobStatus,
    PartitionEvent,
    PartitionStatus,
)
from databuild.bel.backend import Database, Location
from databuild.bel.events import graph_pieces
from databuild.bel.schema import create_or_upgrade
from databuild.bel.writer import append_batch
from databuild.ids import new_id
from databuild.model import DepType, JobConfig, JobGraph, JobRun, PartitionInput

LABELS = ("ingest_clicks", "daily_clicks", "clicks_report")
"""Three jobs in a chain: most runs ingest, fewer aggregate, a few report."""
SHARES = (0.6, 0.3, 0.1)
BAD_DAYS = range(10, 13)
"""The runs of March 10 to 12 failed: a bad few days, as backfills meet them."""
BATCH = 10_000


def _failed(ref: str) -> bool:
    """Whether the run making ``ref`` failed (those of BAD_DAYS in March)."""
    _, month, day = ref.split("/")[1].split("-")
    return int(month) == 3 and int(day) in BAD_DAYS


def _plan(runs: int) -> JobGraph:
    """``runs`` runs over LABELS: each run of a later job reads two refs of the one before."""
    counts = [max(1, int(runs * share)) for share in SHARES]
    counts[0] += runs - sum(counts)
    planned: list[JobRun] = []
    previous: list[str] = []
    for label, count in zip(LABELS, counts, strict=True):
        made = []
        for n in range(count):
            ref = f"{label}/2026-{1 + n % 12:02d}-{1 + n // 12 % 28:02d}/part-{n:06d}"
            inputs = tuple(
                PartitionInput(previous[(2 * n + k) % len(previous)], DepType.MATERIALIZE)
                for k in range(2) if previous
            )
            config = JobConfig(outputs=(ref,), inputs=inputs, args=(ref,),
                               env={"COLOR_SET": "default"})
            planned.append(JobRun(job_run_id=new_id(), job_label=label, config=config))
            made.append(ref)
        previous = made
    return JobGraph(outputs=tuple(previous), job_runs=tuple(planned))


def _events(build_id: str, graph: JobGraph) -> Iterator[Event]:
    clock = time.time_ns() - len(graph.job_runs) * 7_000_000
    B, J, P = BuildStatus, JobStatus, PartitionStatus

    def at(payload: object) -> Event:
        nonlocal clock
        clock += 1_000_000
        return Event(build_id, payload, timestamp=clock)  # type: ignore[arg-type]

    yield at(BuildRequestEvent(B.BUILD_REQUEST_RECEIVED, graph.outputs))
    yield at(BuildRequestEvent(B.BUILD_REQUEST_PLANNING))
    for piece in graph_pieces(graph, None):  # as the service stores a big graph
        yield at(piece)
    yield at(BuildRequestEvent(B.BUILD_REQUEST_ANALYSIS_COMPLETED))
    yield at(BuildRequestEvent(B.BUILD_REQUEST_EXECUTING))
    for run in graph.job_runs:
        [ref] = run.outputs
        ok = not _failed(ref)
        yield at(JobEvent(run.job_run_id, run.job_label, J.JOB_SCHEDULED, run.outputs))
        yield at(PartitionEvent(ref, P.PARTITION_SCHEDULED, job_run_id=run.job_run_id))
        yield at(JobEvent(run.job_run_id, run.job_label, J.JOB_RUNNING, run.outputs))
        yield at(PartitionEvent(ref, P.PARTITION_BUILDING, job_run_id=run.job_run_id))
        yield at(JobEvent(run.job_run_id, run.job_label,
                          J.JOB_COMPLETED if ok else J.JOB_FAILED, run.outputs,
                          exit_code=0 if ok else 1))
        yield at(PartitionEvent(ref, P.PARTITION_AVAILABLE if ok else P.PARTITION_FAILED,
                                job_run_id=run.job_run_id))
    yield at(BuildRequestEvent(B.BUILD_REQUEST_FAILED, (), "some job runs failed"))


def write_build(workspace: Path, runs: int) -> str:
    """Record a finished (FAILED) build of ``runs`` runs in the workspace's default event log
    (the service must not be running); returns its id."""
    state = workspace / ".databuild"
    state.mkdir(exist_ok=True)
    db = Database(Location("sqlite", str(state / "bel.sqlite")))
    db.connect()
    try:
        create_or_upgrade(db)
        db.execute("PRAGMA synchronous = OFF")  # a fixture: no crash to survive
        build_id = new_id()
        batch: list[Event] = []
        for event in _events(build_id, _plan(runs)):
            batch.append(event)
            if len(batch) >= BATCH:
                _store(db, batch)
        _store(db, batch)
        db.execute("ANALYZE")
    finally:
        db.close()
    return build_id


def _store(db: Database, batch: list[Event]) -> None:
    stored = append_batch(db, batch)
    refused = [e for e in stored if not isinstance(e, Event)]
    assert not refused, refused[:3]
    batch.clear()
