"""The color_votes example built end to end; the log read back obeys every transition."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest_twisted
from tests.orchestrator.conftest import start_harness, stop_harness

from databuild.bel import BuildStatus, JobStatus, PartitionStatus
from databuild.bel.transitions import check_transition

REPORT = "color_vote_report/2026-01-31/red"


@pytest_twisted.ensureDeferred
async def test_report_build_records_legal_transitions_for_everything(color_votes: Path) -> None:
    toml = color_votes / "databuild.toml"
    toml.write_text(toml.read_text().replace('"python3"', f'"{sys.executable}"'))
    harness = await start_harness(color_votes)
    try:
        build = await harness.build([REPORT])
        build_id = build["build_request_id"]
        assert build["status"] == "BUILD_REQUEST_COMPLETED", build["message"]
        assert (color_votes / "data" / f"{REPORT}.json").exists()

        events = await harness.events(build_id)
        assert [e["idx"] for e in events] == sorted(e["idx"] for e in events)
        builds: list[BuildStatus] = []
        jobs: dict[str, list[JobStatus]] = {}
        parts: dict[str, list[PartitionStatus]] = {}
        for e in events:
            if e["event_type"] == "build_request":
                new = BuildStatus.parse(e["status"])
                check_transition(builds[-1] if builds else None, new, "build")
                builds.append(new)
            elif e["event_type"] == "job":
                seq = jobs.setdefault(e["job_run_id"], [])
                new = JobStatus.parse(e["status"])
                check_transition(seq[-1] if seq else None, new, e["job_run_id"])
                seq.append(new)
            elif e["event_type"] == "partition":
                seq = parts.setdefault(e["partition_ref"], [])
                new = PartitionStatus.parse(e["status"])
                check_transition(seq[-1] if seq else None, new, e["partition_ref"])
                seq.append(new)
        assert builds == [
            BuildStatus.BUILD_REQUEST_RECEIVED,
            BuildStatus.BUILD_REQUEST_PLANNING,
            BuildStatus.BUILD_REQUEST_ANALYSIS_COMPLETED,
            BuildStatus.BUILD_REQUEST_EXECUTING,
            BuildStatus.BUILD_REQUEST_COMPLETED,
        ]
        assert [e["event_type"] for e in events[:4]] == [
            "build_request", "partition", "build_request", "job_graph",
        ]
        graph = next(e["job_graph"] for e in events if e["event_type"] == "job_graph")
        assert set(jobs) == {run["job_run_id"] for run in graph["job_runs"]}
        assert all(
            seq == [JobStatus.JOB_SCHEDULED, JobStatus.JOB_RUNNING, JobStatus.JOB_COMPLETED]
            for seq in jobs.values()
        )
        outputs = {ref for run in graph["job_runs"] for ref in run["outputs"]}
        assert set(parts) == outputs
        assert parts[REPORT][0] is PartitionStatus.PARTITION_REQUESTED
        assert all(seq[-1] is PartitionStatus.PARTITION_AVAILABLE for seq in parts.values())
        # Every run started only once its materialize inputs were AVAILABLE.
        available_at = {
            e["partition_ref"]: e["idx"] for e in events
            if e["event_type"] == "partition" and e["status"] == "PARTITION_AVAILABLE"
        }
        running_at = {
            e["job_run_id"]: e["idx"] for e in events
            if e["event_type"] == "job" and e["status"] == "JOB_RUNNING"
        }
        for run in graph["job_runs"]:
            for dep in run["inputs"]:
                ref = dep["partition_ref"]["str"]
                if dep["dep_type_code"] == 1 and ref in available_at:
                    assert available_at[ref] < running_at[run["job_run_id"]]
    finally:
        await stop_harness(harness)
