"""Cancelling builds and job runs: nothing of a process group is left, the log says why."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from tests.orchestrator.conftest import Harness, start_harness, stop_harness
from tests.polling import poll_until_async

from databuild.errors import Conflict, NotFound
from databuild.executor.runner import Executor
from databuild.executor.running import read_records
from databuild.proc.info import alive


async def running_pids(harness: Harness, ref: str) -> tuple[int, int]:
    """The leader and grandchild pids of the (first) run of ``ref`` once both exist."""
    await poll_until_async(lambda: harness.starts(ref), f"{ref} to start")
    start = harness.starts(ref)[0]
    pidfile = harness.root / f"grandchild-{start['job_run_id']}.pid"
    await poll_until_async(lambda: pidfile.exists() and pidfile.read_text(), "the grandchild")
    return start["pid"], int(pidfile.read_text())


@pytest_twisted.ensureDeferred
async def test_cancelling_a_build_stops_its_groups_and_pending_runs(harness: Harness) -> None:
    harness.plan(
        {
            "work/a": {"block": True, "grandchild": True},
            "work/b": {"inputs": ["work/a"]},
        }
    )
    build_id = await harness.orchestrator.submit(["work/b"])
    leader, grandchild = await running_pids(harness, "work/a")

    await harness.orchestrator.cancel_build(build_id)

    assert not alive(leader)
    await poll_until_async(lambda: not alive(grandchild), "the job's grandchild to be killed")
    assert [r["ref"] for r in harness.starts()] == ["work/a"]
    build = await harness.log.get_build(build_id)
    assert build["status"] == "BUILD_REQUEST_CANCELLED"
    assert {t["outputs"][0]: t["status"] for t in build["tasks"]} == {
        "work/a": "JOB_CANCELLED",
        "work/b": "JOB_CANCELLED",
    }
    assert {p["status"] for p in build["partitions"]} == {"PARTITION_FAILED"}
    events = await harness.events(build_id)
    failed = [e for e in events if e["event_type"] == "partition"
              and e["status"] == "PARTITION_FAILED"]
    assert all("cancelled" in e["message"] for e in failed)
    assert harness.executor.running_records() == []
    running = harness.root / ".databuild" / "running"
    assert [found.records for found in read_records(running)] == [()]
    with pytest.raises(Conflict, match="already cancelled"):
        await harness.orchestrator.cancel_build(build_id)


@pytest_twisted.ensureDeferred
async def test_cancelling_an_unknown_build_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.orchestrator.cancel_build("no-such-build")
    with pytest.raises(NotFound):
        await harness.orchestrator.cancel_task("no-such-run")


@pytest_twisted.ensureDeferred
async def test_cancelling_a_task_fails_its_downstream_only(harness: Harness) -> None:
    harness.plan(
        {
            "work/a": {"block": True, "grandchild": True},
            "work/b": {"inputs": ["work/a"]},
            "work/c": {"sleep": 0.2},
        }
    )
    build_id = await harness.orchestrator.submit(["work/b", "work/c"])
    leader, grandchild = await running_pids(harness, "work/a")
    run_a = harness.starts("work/a")[0]["job_run_id"]

    await harness.orchestrator.cancel_task(run_a)

    assert not alive(leader)
    await poll_until_async(lambda: not alive(grandchild), "the job's grandchild to be killed")
    build = await harness.finished(build_id)
    assert build["status"] == "BUILD_REQUEST_FAILED"
    tasks = {t["outputs"][0]: t for t in build["tasks"]}
    assert tasks["work/a"]["status"] == "JOB_CANCELLED"
    assert tasks["work/b"]["status"] == "JOB_FAILED"
    assert "upstream failed: work/a" in tasks["work/b"]["message"]
    assert tasks["work/c"]["status"] == "JOB_COMPLETED"
    with pytest.raises(Conflict, match="already cancelled"):
        await harness.orchestrator.cancel_task(run_a)


@pytest_twisted.ensureDeferred
async def test_cancelling_a_task_still_waiting_for_inputs(harness: Harness) -> None:
    gate = harness.root / "release-a"
    harness.plan({"work/a": {"until": str(gate)}, "work/b": {"inputs": ["work/a"]}})
    build_id = await harness.orchestrator.submit(["work/b"])
    await poll_until_async(lambda: harness.starts("work/a"), "work/a to start")
    build = await harness.log.get_build(build_id)
    run_b = next(t["job_run_id"] for t in build["tasks"] if t["outputs"] == ["work/b"])

    await harness.orchestrator.cancel_task(run_b)
    gate.touch()

    build = await harness.finished(build_id)
    tasks = {t["outputs"][0]: t["status"] for t in build["tasks"]}
    assert tasks == {"work/a": "JOB_COMPLETED", "work/b": "JOB_CANCELLED"}
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert [r["ref"] for r in harness.starts()] == ["work/a"]


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_cancels_running_builds_and_records_it(tmp_path) -> None:
    harness = await start_harness(tmp_path / "ws")
    harness.plan({"work/a": {"block": True, "grandchild": True}})
    build_id = await harness.orchestrator.submit(["work/a"])
    leader, grandchild = await running_pids(harness, "work/a")

    await harness.orchestrator.stopService()

    assert not alive(leader)
    await poll_until_async(lambda: not alive(grandchild), "the job's grandchild to be killed")
    build = await harness.log.get_build(build_id)
    assert build["status"] == "BUILD_REQUEST_CANCELLED"
    assert "service is stopping" in build["message"]
    with pytest.raises(Conflict):
        await harness.orchestrator.submit(["work/a"])
    await stop_harness(harness)


class PatientExecutor(Executor):
    """An executor that waits five minutes between SIGTERM and SIGKILL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "grace_s": 300})


@pytest_twisted.ensureDeferred
async def test_stopping_kills_the_job_groups_that_outlive_the_stop_deadline(tmp_path) -> None:
    harness = await start_harness(
        tmp_path / "ws", executor_type=PatientExecutor, stop_deadline_s=0.5
    )
    harness.plan({"work/a": {"block": True, "ignore_term": True, "grandchild": True}})
    build_id = await harness.orchestrator.submit(["work/a"])
    leader, grandchild = await running_pids(harness, "work/a")

    await harness.orchestrator.stopService()  # SIGTERM is ignored: the deadline kills

    assert not alive(leader)
    await poll_until_async(lambda: not alive(grandchild), "not alive(grandchild)")
    build = await harness.log.get_build(build_id)
    assert build["status"] == "BUILD_REQUEST_CANCELLED"
    assert {t["status"] for t in build["tasks"]} == {"JOB_CANCELLED"}
    await stop_harness(harness)
