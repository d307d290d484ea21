"""Event-log outages: no event is lost, no run starts while the log cannot record it, and the
log ends up telling what happened, every run closed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.conftest import fill
from tests.orchestrator.conftest import Harness, start_harness, stop_harness
from tests.orchestrator.private_pg import PrivateCluster, available
from tests.polling import poll_until_async
from twisted.internet.threads import deferToThread

from databuild.bel import JobStatus, StoreUnavailable


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    cluster = PrivateCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def stored_status(harness: Harness, build_id: str, ref: str) -> str | None:
    """The status of the run of ``ref``, once its output's status has caught up with it."""
    build = await harness.log.get_build(build_id) or {}
    partition = {p["partition_ref"]: p["status"] for p in build.get("partitions", ())}
    status = next((t["status"] for t in build.get("tasks", ()) if t["outputs"] == [ref]), None)
    caught_up = status != "JOB_RUNNING" or partition.get(ref) == "PARTITION_BUILDING"
    return status if caught_up else None


async def wait_until_stored(harness: Harness, build_id: str, ref: str, status: str) -> None:
    async def stored() -> bool:
        return await stored_status(harness, build_id, ref) == status

    await poll_until_async(stored, f"{ref} to be {status} in the log")


def assert_all_closed(build: dict[str, Any]) -> None:
    assert all(JobStatus.parse(t["status"]).final for t in build["tasks"]), build["tasks"]
    assert all(
        p["status"] in ("PARTITION_AVAILABLE", "PARTITION_FAILED") for p in build["partitions"]
    ), build["partitions"]


@pytest_twisted.async_yield_fixture
async def pg_harness(tmp_path: Path, private_pg: PrivateCluster) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path / "ws", log_uri=private_pg.uri)
    yield harness
    await stop_harness(harness)


@pytest_twisted.ensureDeferred
async def test_postgresql_stopped_mid_build_loses_nothing_and_the_build_completes(
    pg_harness: Harness, private_pg: PrivateCluster
) -> None:
    harness, go = pg_harness, pg_harness.root / "go"
    harness.plan({"work/a": {"until": str(go)}, "work/b": {"inputs": ["work/a"]},
                  "work/c": {"inputs": ["work/b"]}})
    build_id = await harness.orchestrator.submit(["work/c"])
    frames: list[dict[str, Any]] = []
    subscription = await harness.orchestrator.hub.subscribe(build_id, 0, frames.append)
    await wait_until_stored(harness, build_id, "work/a", "JOB_RUNNING")

    await deferToThread(private_pg.stop)
    go.touch()  # work/a ends while the log is down
    await poll_until_async(
        lambda: any(r["phase"] == "end" for r in harness.runs()), "work/a to end"
    )
    await poll_until_async(
        lambda: not harness.orchestrator.event_log_healthy, "the log to be seen unhealthy"
    )
    restarted_at = time.time()
    await deferToThread(private_pg.start)

    finished = await subscription.finished
    build = await harness.log.get_build(build_id)
    assert finished["status"] == build["status"] == "BUILD_REQUEST_COMPLETED"
    assert frames[-1]["event_type"] == "build_request"  # the end came last, once stored
    assert_all_closed(build)
    assert {t["status"] for t in build["tasks"]} == {"JOB_COMPLETED"}
    # No run started while the log was down.
    assert all(r["start"] > restarted_at for r in harness.starts() if r["ref"] != "work/a")
    # Nothing was lost: every run went SCHEDULED, RUNNING, COMPLETED in the log.
    events = await harness.events(build_id)
    for task in build["tasks"]:
        assert [
            e["status"] for e in events
            if e["event_type"] == "job" and e["job_run_id"] == task["job_run_id"]
        ] == ["JOB_SCHEDULED", "JOB_RUNNING", "JOB_COMPLETED"]
    assert harness.orchestrator.event_log_healthy


@pytest_twisted.ensureDeferred
async def test_a_full_disk_past_the_outage_limit_fails_the_build_and_says_why(
    tmp_path: Path, small_disk: Path
) -> None:
    harness = await start_harness(
        tmp_path / "ws", log_uri=str(small_disk / "bel.sqlite"), outage_limit_s=0
    )
    try:
        go = harness.root / "go"
        harness.plan({"work/a": {"until": str(go)}, "work/b": {"inputs": ["work/a"]}})
        build_id = await harness.orchestrator.submit(["work/b"])
        await wait_until_stored(harness, build_id, "work/a", "JOB_RUNNING")

        filler = fill(small_disk)
        go.touch()  # work/a ends while the disk is full
        await poll_until_async(
            lambda: not harness.orchestrator.event_log_healthy, "the log to be seen unhealthy"
        )
        with pytest.raises(StoreUnavailable, match="cannot store events"):
            await harness.orchestrator.submit(["work/c"])  # nothing new is taken on
        filler.unlink()

        build = await harness.finished(build_id)
        assert build["status"] == "BUILD_REQUEST_FAILED"
        assert "could not store events" in build["message"]
        assert_all_closed(build)
        tasks = {t["outputs"][0]: t for t in build["tasks"]}
        assert tasks["work/a"]["status"] == "JOB_COMPLETED"  # it did: the log says so
        assert tasks["work/b"]["status"] == "JOB_FAILED"
        assert "could not store events" in tasks["work/b"]["message"]
        assert [r["ref"] for r in harness.starts()] == ["work/a"]
        assert harness.orchestrator.active_builds == 0
    finally:
        await stop_harness(harness)
