"""The reads behind the dashboard at scale: a build by job, a run's plan, a partition's
lineage, the catalog by dataset, and what counts as failed (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest_twisted
from tests.bel.conftest import Recorder

from databuild.bel import BuildRequestEvent, BuildStatus, Event, EventLog, JobGraphEvent, JobStatus
from databuild.bel import PartitionStatus as P
from databuild.bel.events import GRAPH_PIECE_RUNS, graph_pieces
from databuild.model import DepType, JobConfig, JobGraph, JobRun, PartitionInput

B = BuildStatus
J = JobStatus
RAN_OK = (J.JOB_SCHEDULED, J.JOB_RUNNING, J.JOB_COMPLETED)


def _run(run_id: str, label: str, outputs: tuple[str, ...], inputs: tuple[str, ...] = (),
         args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> JobRun:
    config = JobConfig(outputs=outputs, args=args, env=env or {},
                       inputs=tuple(PartitionInput(ref, DepType.MATERIALIZE) for ref in inputs))
    return JobRun(job_run_id=run_id, job_label=label, config=config)


async def _planned(recorder: Recorder, runs: tuple[JobRun, ...]) -> str:
    build_id = await recorder.build((B.BUILD_REQUEST_PLANNING,), refs=("agg/1",))
    graph = JobGraph(outputs=("agg/1",), job_runs=runs)
    await recorder.log.append(Event(build_id, JobGraphEvent(graph)))
    await recorder.log.append(
        Event(build_id, BuildRequestEvent(B.BUILD_REQUEST_ANALYSIS_COMPLETED))
    )
    return build_id


GRAPH = (
    _run("r1", "ingest", ("raw/1",), args=("raw/1",), env={"COLOR": "teal"}),
    _run("r2", "ingest", ("raw/2",)),
    _run("r3", "agg", ("agg/1",), inputs=("raw/1", "raw/2")),
)


@pytest_twisted.ensureDeferred
async def test_a_build_by_job_counts_runs_per_status_with_the_job_edges(
    event_log: EventLog, recorder: Recorder
) -> None:
    build_id = await _planned(recorder, GRAPH)
    await recorder.job(build_id, "ingest", ("raw/1",), RAN_OK, run_id="r1")
    await recorder.job(build_id, "ingest", ("raw/2",), (J.JOB_SCHEDULED, J.JOB_RUNNING),
                       run_id="r2")
    last = (await event_log.events(0, 1000, build_id))["events"][-1]["idx"]
    jobs = await event_log.build_jobs(build_id)
    assert jobs is not None
    assert jobs["as_of_idx"] == last
    assert jobs["runs"] == 3
    by_label = {job["job_label"]: job for job in jobs["jobs"]}
    assert by_label["ingest"]["runs"] == 2
    assert by_label["ingest"]["job_runs"]["JOB_COMPLETED"] == 1
    assert by_label["ingest"]["job_runs"]["JOB_RUNNING"] == 1
    assert by_label["agg"]["runs"] == 1
    assert sum(by_label["agg"]["job_runs"].values()) == 0  # planned, not scheduled yet
    assert jobs["edges"] == [{"upstream": "ingest", "downstream": "agg"}]
    assert jobs["running"] == [{"job_run_id": "r2", "job_label": "ingest"}]
    assert await event_log.build_jobs("nope") is None


@pytest_twisted.ensureDeferred
async def test_a_run_shows_its_plan_and_a_partition_its_lineage(
    event_log: EventLog, recorder: Recorder
) -> None:
    build_id = await _planned(recorder, GRAPH)
    for run in GRAPH:
        await recorder.job(build_id, run.job_label, run.outputs, RAN_OK, run_id=run.job_run_id)
        for ref in run.outputs:
            await recorder.partition(
                build_id, ref, (P.PARTITION_SCHEDULED, P.PARTITION_BUILDING,
                                P.PARTITION_AVAILABLE), run_id=run.job_run_id,
            )
    task = await event_log.get_task("r1")
    assert task is not None
    assert (task["inputs"], task["args"], task["env"]) == ([], ["raw/1"], {"COLOR": "teal"})
    agg = await event_log.get_task("r3")
    assert agg is not None
    assert agg["inputs"] == [
        {"partition_ref": "raw/1", "dep_type": "materialize"},
        {"partition_ref": "raw/2", "dep_type": "materialize"},
    ]
    raw = await event_log.get_partition("raw/1")
    assert raw is not None
    assert raw["lineage"] == {
        "upstream": [],
        "downstream": [{"partition_ref": "agg/1", "status": "PARTITION_AVAILABLE"}],
    }
    top = await event_log.get_partition("agg/1")
    assert top is not None
    assert [p["partition_ref"] for p in top["lineage"]["upstream"]] == ["raw/1", "raw/2"]
    assert top["lineage"]["downstream"] == []


@pytest_twisted.ensureDeferred
async def test_datasets_strip_their_partitions_in_ref_order_and_cancelled_is_not_failed(
    event_log: EventLog, recorder: Recorder
) -> None:
    build_id = await recorder.build((B.BUILD_REQUEST_PLANNING,
                                     B.BUILD_REQUEST_ANALYSIS_COMPLETED,
                                     B.BUILD_REQUEST_EXECUTING))
    built = (P.PARTITION_SCHEDULED, P.PARTITION_BUILDING)
    outcomes = {"day/01": (J.JOB_COMPLETED, P.PARTITION_AVAILABLE),
                "day/02": (J.JOB_FAILED, P.PARTITION_FAILED),
                "day/03": (J.JOB_CANCELLED, P.PARTITION_FAILED)}
    for ref, (run_status, partition_status) in outcomes.items():
        run_id = await recorder.job(build_id, "daily", (ref,),
                                    (J.JOB_SCHEDULED, J.JOB_RUNNING, run_status))
        await recorder.partition(build_id, ref, (*built, partition_status), run_id=run_id)
    found = await event_log.list_datasets()
    [daily] = found["datasets"]
    assert daily["job_label"] == "daily"
    assert daily["partitions"] == 3
    assert daily["statuses"]["PARTITION_FAILED"] == 2
    assert [(s["first_ref"], s["last_ref"], s["statuses"]) for s in daily["strip"]] == [
        ("day/01", "day/01", {"PARTITION_AVAILABLE": 1}),
        ("day/02", "day/02", {"PARTITION_FAILED": 1}),
        ("day/03", "day/03", {"PARTITION_FAILED": 1}),
    ]
    failed = await event_log.failed_partitions(10, 0)
    assert [p["partition_ref"] for p in failed["partitions"]] == ["day/02"]


@pytest_twisted.ensureDeferred
async def test_the_job_edges_join_runs_stored_in_different_pieces_of_a_graph(
    event_log: EventLog, recorder: Recorder
) -> None:
    fillers = tuple(_run(f"f{i}", "filler", (f"f/{i}",)) for i in range(GRAPH_PIECE_RUNS - 2))
    runs = (
        _run("c1", "late-reader", ("agg/1",), inputs=("x/1",)),  # its producer is in piece 1
        _run("p1", "early-maker", ("y/1",)),  # its reader is in piece 1
        *fillers,
        _run("p2", "late-maker", ("x/1",)),
        _run("c2", "early-reader", ("z/1",), inputs=("y/1",)),
    )
    build_id = await recorder.build((B.BUILD_REQUEST_PLANNING,), refs=("agg/1",))
    pieces = graph_pieces(JobGraph(outputs=("agg/1",), job_runs=runs), None)
    assert len(pieces) == 2
    for piece in pieces:
        await recorder.log.append(Event(build_id, piece))
    jobs = await event_log.build_jobs(build_id)
    assert jobs is not None
    assert jobs["runs"] == len(runs)
    assert sorted((e["upstream"], e["downstream"]) for e in jobs["edges"]) == [
        ("early-maker", "early-reader"), ("late-maker", "late-reader"),
    ]
