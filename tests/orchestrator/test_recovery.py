"""Crash recovery: what a killed service left behind is recorded as failed, its groups reaped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest_twisted
from tests.orchestrator.conftest import start_harness, stop_harness
from tests.polling import poll_until_async
from twisted.internet import reactor

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    JobEvent,
    JobStatus,
    PartitionEvent,
    PartitionStatus,
    open_event_log,
)
from databuild.executor.running import RunningJournal, RunningRecord
from databuild.proc.info import alive, start_ticks
from databuild.proc.process import spawn


@pytest_twisted.ensureDeferred
async def test_a_new_orchestrator_fails_the_dead_services_builds_and_reaps_its_jobs(
    tmp_path: Path,
) -> None:
    # The "dead service": a build in flight, recorded straight into the log...
    first = await start_harness(tmp_path / "ws")
    await stop_harness(first)
    root = first.root
    log = open_event_log(str(root / ".databuild" / "bel.sqlite"), root, reactor)
    await log.open()
    build_id, run_id, queued_id = "b-dead", "run-dead", "run-queued"
    refs = ("work/a",)
    for event in [
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, refs),
        PartitionEvent("work/a", PartitionStatus.PARTITION_REQUESTED),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_PLANNING, refs),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_ANALYSIS_COMPLETED, refs),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_EXECUTING, refs),
        JobEvent(run_id, "work", JobStatus.JOB_SCHEDULED, ("work/up",)),
        JobEvent(queued_id, "work", JobStatus.JOB_SCHEDULED, refs),
        PartitionEvent("work/up", PartitionStatus.PARTITION_SCHEDULED, "", run_id),
        PartitionEvent("work/a", PartitionStatus.PARTITION_SCHEDULED, "", queued_id),
        JobEvent(run_id, "work", JobStatus.JOB_RUNNING, ("work/up",)),
        PartitionEvent("work/up", PartitionStatus.PARTITION_BUILDING, "", run_id),
    ]:
        await log.append(Event(build_id, event))
    finished = await log.append(
        Event("b-done", BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, refs))
    )
    await log.append(Event("b-done", BuildRequestEvent(BuildStatus.BUILD_REQUEST_CANCELLED, refs)))
    await log.close()
    # ... and its job's process group, still running, with its record.
    pidfile = tmp_path / "grandchild.pid"
    orphan = spawn(
        reactor,
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "c = subprocess.Popen(['sleep', '300'])\n"
         "open(sys.argv[1], 'w').write(str(c.pid))\n"
         "time.sleep(300)\n", str(pidfile)],
        cwd=tmp_path,
        env=os.environ,
    )
    await poll_until_async(lambda: pidfile.exists() and pidfile.read_text(), "the orphan")
    grandchild = int(pidfile.read_text())
    RunningJournal(root / ".databuild" / "running", "dead-service", "").started(
        RunningRecord(run_id, build_id, orphan.pid, start_ticks(orphan.pid))
    )

    harness = await start_harness(root)
    try:
        await harness.orchestrator.when_ready()
        result = await orphan.result
        assert result.signal is not None
        assert not alive(grandchild)
        assert list((root / ".databuild" / "running").iterdir()) == []

        build = await harness.log.get_build(build_id)
        assert build["status"] == "BUILD_REQUEST_FAILED"
        assert "service stopped" in build["message"]
        assert {t["job_run_id"]: t["status"] for t in build["tasks"]} == {
            run_id: "JOB_FAILED",
            queued_id: "JOB_FAILED",
        }
        assert {p["partition_ref"]: p["status"] for p in build["partitions"]} == {
            "work/a": "PARTITION_FAILED",
            "work/up": "PARTITION_FAILED",
        }
        done = await harness.log.get_build("b-done")
        assert done["status"] == "BUILD_REQUEST_CANCELLED"
        old = await harness.events()
        assert old[finished.idx - 1]["event_id"] == finished.event_id  # nothing rewritten

        fresh = await harness.build(["work/a"])
        assert fresh["status"] == "BUILD_REQUEST_COMPLETED"
    finally:
        await stop_harness(harness)


@pytest_twisted.ensureDeferred
async def test_recovery_closes_the_open_runs_and_partitions_of_builds_already_final(
    tmp_path: Path,
) -> None:
    # A service that recorded a build's end but lost the ends of one of its runs.
    first = await start_harness(tmp_path / "ws")
    await stop_harness(first)
    root = first.root
    log = open_event_log(str(root / ".databuild" / "bel.sqlite"), root, reactor)
    await log.open()
    refs = ("work/a",)
    for event in [
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, refs),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_PLANNING, refs),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_ANALYSIS_COMPLETED, refs),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_EXECUTING, refs),
        JobEvent("run-open", "work", JobStatus.JOB_SCHEDULED, refs),
        PartitionEvent("work/a", PartitionStatus.PARTITION_SCHEDULED, "", "run-open"),
        JobEvent("run-open", "work", JobStatus.JOB_RUNNING, refs),
        PartitionEvent("work/a", PartitionStatus.PARTITION_BUILDING, "", "run-open"),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_FAILED, refs, "it failed"),
    ]:
        await log.append(Event("b-final", event))
    await log.close()

    harness = await start_harness(root)
    try:
        await harness.orchestrator.when_ready()
        build = await harness.log.get_build("b-final")
        assert (build["status"], build["message"]) == ("BUILD_REQUEST_FAILED", "it failed")
        [task] = build["tasks"]
        assert task["status"] == "JOB_FAILED" and "service stopped" in task["message"]
        assert [p["status"] for p in build["partitions"]] == ["PARTITION_FAILED"]
        assert await harness.log.builds_with_open_work() == []
    finally:
        await stop_harness(harness)
