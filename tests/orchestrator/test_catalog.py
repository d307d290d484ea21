"""The catalog is the data's truth (SPEC §4.2): builds that never ran a ref's job leave it alone.

Every test runs on SQLite and on PostgreSQL. Each first makes ``work/a`` AVAILABLE, then ends a
build that requested it without running its job (failed analysis, cancellation, crash
recovery): the ref stays AVAILABLE in the catalog and the next build does not run it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from tests.orchestrator.conftest import Harness, start_harness, stop_harness
from tests.polling import poll_until_async
from twisted.internet import reactor

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    PartitionEvent,
    PartitionStatus,
    open_event_log,
)

AVAILABLE = PartitionStatus.PARTITION_AVAILABLE


@pytest.fixture(params=["sqlite", "postgresql"])
def log_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ws" / ".databuild" / "bel.sqlite")
    return str(request.getfixturevalue("pg_schema"))


@pytest_twisted.async_yield_fixture
async def built(tmp_path: Path, log_uri: str) -> AsyncIterator[Harness]:
    """A harness whose log already holds ``work/a`` AVAILABLE, made by one run."""
    harness = await start_harness(tmp_path / "ws", log_uri=log_uri)
    try:
        assert (await harness.build(["work/a"]))["status"] == "BUILD_REQUEST_COMPLETED"
        yield harness
    finally:
        await stop_harness(harness)


async def assert_still_available(harness: Harness) -> None:
    """``work/a`` is AVAILABLE in the catalog, and a new build takes it without running it."""
    partition = await harness.log.get_partition("work/a")
    assert partition is not None
    assert partition["status"] == AVAILABLE.value
    assert await harness.log.partition_statuses(["work/a"]) == {"work/a": AVAILABLE}
    assert (await harness.build(["work/a"]))["status"] == "BUILD_REQUEST_COMPLETED"
    assert len(harness.starts("work/a")) == 1


@pytest_twisted.ensureDeferred
async def test_a_failed_analysis_leaves_an_available_ref_available(built: Harness) -> None:
    build = await built.build(["work/a", "no_such/1"])
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert {p["partition_ref"]: p["status"] for p in build["partitions"]} == {
        "work/a": "PARTITION_FAILED",
        "no_such/1": "PARTITION_FAILED",
    }
    await assert_still_available(built)
    history = (await built.log.get_partition("work/a"))["history"]  # type: ignore[index]
    assert [e["status"] for e in history if e["build_request_id"] == build["build_request_id"]
            and e["event_type"] == "partition"] == ["PARTITION_REQUESTED", "PARTITION_FAILED"]


@pytest_twisted.ensureDeferred
async def test_a_build_cancelled_before_it_ran_the_job_leaves_the_ref_available(
    built: Harness,
) -> None:
    gate = built.root / "config-go"
    built.plan({"work/b": {"config_until": str(gate)}})
    try:
        build_id = await built.orchestrator.submit(["work/a", "work/b"])
        await poll_until_async((built.root / "config-started").exists, "analysis to start")
        await built.orchestrator.cancel_build(build_id)
    finally:
        gate.touch()
    build = await built.finished(build_id)
    assert build["status"] == "BUILD_REQUEST_CANCELLED"
    assert {p["partition_ref"]: p["status"] for p in build["partitions"]}["work/a"] == (
        "PARTITION_FAILED"
    )
    await assert_still_available(built)


@pytest_twisted.ensureDeferred
async def test_crash_recovery_of_a_build_that_requested_an_available_ref_leaves_it(
    built: Harness, log_uri: str
) -> None:
    await stop_harness(built)
    log = open_event_log(log_uri, built.root, reactor)
    await log.open()
    refs = ("work/a",)
    for payload in [
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, refs),
        PartitionEvent("work/a", PartitionStatus.PARTITION_REQUESTED),
        BuildRequestEvent(BuildStatus.BUILD_REQUEST_PLANNING, refs),
    ]:
        await log.append(Event("b-dead", payload))
    await log.close()

    harness = await start_harness(built.root, log_uri=log_uri)
    try:
        await harness.orchestrator.when_ready()
        dead = await harness.log.get_build("b-dead")
        assert dead is not None
        assert dead["status"] == "BUILD_REQUEST_FAILED"
        assert dead["partitions"] == [{"partition_ref": "work/a", "status": "PARTITION_FAILED"}]
        await assert_still_available(harness)
    finally:
        await stop_harness(harness)
