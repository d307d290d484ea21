"""Orchestrator: builds of real job processes recorded in a real SQLite event log."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.orchestrator.conftest import Harness, start_harness, stop_harness
from tests.polling import poll_until_async
from tests.shell_jobs import one_run_per_ref
from twisted.internet.defer import Deferred, ensureDeferred

from databuild.bel.events import Event
from databuild.bel.status import PartitionStatus
from databuild.errors import InvalidRefError
from databuild.graph import JobSpec
from databuild.graph.commands import plain_commands
from databuild.orchestrator.recorder import PACE_HIGH


def statuses(events: list[dict[str, Any]], event_type: str, key: str) -> dict[str, list[str]]:
    """For each subject (job run id or partition ref), its statuses in log order."""
    found: dict[str, list[str]] = {}
    for e in events:
        if e["event_type"] == event_type:
            found.setdefault(e[key], []).append(e["status"])
    return found


@pytest_twisted.ensureDeferred
async def test_runs_start_in_dependency_order_and_the_build_completes(harness: Harness) -> None:
    harness.plan(
        {
            "work/c": {"inputs": ["work/a", "work/b"]},
            "work/b": {"inputs": ["work/a"]},
        }
    )
    build = await harness.build(["work/c"])
    assert build["status"] == "BUILD_REQUEST_COMPLETED"
    runs = {r["ref"]: r for r in harness.runs() if r["phase"] == "end"}
    starts = {r["ref"]: r["start"] for r in harness.starts()}
    assert runs["work/a"]["end"] <= starts["work/b"]
    assert runs["work/b"]["end"] <= starts["work/c"]
    events = await harness.events(build["build_request_id"])
    assert [e["status"] for e in events if e["event_type"] == "build_request"] == [
        "BUILD_REQUEST_RECEIVED",
        "BUILD_REQUEST_PLANNING",
        "BUILD_REQUEST_ANALYSIS_COMPLETED",
        "BUILD_REQUEST_EXECUTING",
        "BUILD_REQUEST_COMPLETED",
    ]
    jobs = statuses(events, "job", "job_run_id")
    assert list(jobs.values()) == [["JOB_SCHEDULED", "JOB_RUNNING", "JOB_COMPLETED"]] * 3
    parts = statuses(events, "partition", "partition_ref")
    assert parts["work/c"] == [
        "PARTITION_REQUESTED",
        "PARTITION_SCHEDULED",
        "PARTITION_BUILDING",
        "PARTITION_AVAILABLE",
    ]
    assert parts["work/a"] == ["PARTITION_SCHEDULED", "PARTITION_BUILDING", "PARTITION_AVAILABLE"]


@pytest_twisted.ensureDeferred
async def test_parallel_runs_of_all_builds_stay_within_the_shared_limit(tmp_path: Path) -> None:
    harness = await start_harness(tmp_path / "ws", max_parallel_jobs=2)
    try:
        gate = harness.root / "go"
        harness.plan({f"work/{i}": {"until": str(gate)} for i in range(6)})
        ids = [
            await harness.orchestrator.submit([f"work/{i}" for i in range(k, 6, 2)])
            for k in range(2)
        ]
        # The runs wait for the gate: two start, and the limit keeps the others queued.
        await poll_until_async(lambda: len(harness.starts()) == 2, "two runs to start")
        gate.touch()
        builds = [await harness.finished(i) for i in ids]
        assert {b["status"] for b in builds} == {"BUILD_REQUEST_COMPLETED"}
        ends = {r["job_run_id"]: r["end"] for r in harness.runs() if r["phase"] == "end"}
        spans = [(r["start"], ends[r["job_run_id"]]) for r in harness.starts()]
        assert len(spans) == 6
        assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2
    finally:
        await stop_harness(harness)


@pytest_twisted.ensureDeferred
async def test_a_failure_fails_everything_downstream_and_siblings_go_on(harness: Harness) -> None:
    harness.plan(
        {
            "work/a": {"exit": 3},
            "work/b": {"inputs": ["work/a"]},
            "work/c": {"inputs": ["work/b"]},
            "work/d": {"sleep": 0.3},
        }
    )
    build = await harness.build(["work/c", "work/d"])
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert "work/c" in build["message"] and "work/d" not in build["message"]
    assert {r["ref"] for r in harness.starts()} == {"work/a", "work/d"}
    tasks = {t["outputs"][0]: t for t in build["tasks"]}
    assert tasks["work/a"]["status"] == "JOB_FAILED"
    assert tasks["work/a"]["exit_code"] == 3
    assert "exited with code 3" in tasks["work/a"]["message"]
    for ref in ("work/b", "work/c"):
        assert tasks[ref]["status"] == "JOB_FAILED"
        assert "upstream failed: work/a" in tasks[ref]["message"]
    assert tasks["work/d"]["status"] == "JOB_COMPLETED"
    parts = {p["partition_ref"]: p["status"] for p in build["partitions"]}
    assert parts == {
        "work/a": "PARTITION_FAILED",
        "work/b": "PARTITION_FAILED",
        "work/c": "PARTITION_FAILED",
        "work/d": "PARTITION_AVAILABLE",
    }


@pytest_twisted.ensureDeferred
async def test_a_run_past_its_timeout_fails(harness: Harness) -> None:
    harness.plan({"slow/a": {"block": True}})
    build = await harness.build(["slow/a"])
    assert build["status"] == "BUILD_REQUEST_FAILED"
    [task] = build["tasks"]
    assert task["status"] == "JOB_FAILED"
    assert "timed out" in task["message"]
    assert [r["ref"] for r in harness.runs() if r["phase"] == "end"] == []


@pytest_twisted.ensureDeferred
async def test_a_failing_run_is_retried(harness: Harness) -> None:
    harness.plan({"flaky/a": {"fail_attempts": 2}, "flaky/b": {"fail_attempts": 5}})
    build = await harness.build(["flaky/a", "flaky/b"])
    assert len(harness.starts("flaky/a")) == 3
    assert len(harness.starts("flaky/b")) == 3
    tasks = {t["outputs"][0]: t for t in build["tasks"]}
    assert tasks["flaky/a"]["status"] == "JOB_COMPLETED"
    assert tasks["flaky/b"]["status"] == "JOB_FAILED"
    assert "after 3 attempts" in tasks["flaky/b"]["message"]


@pytest_twisted.ensureDeferred
async def test_analysis_failure_fails_the_build_from_planning(harness: Harness) -> None:
    build = await harness.build(["nothing/matches"])
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert build["message"].startswith("analysis failed:")
    assert "nothing/matches" in build["message"]
    events = await harness.events(build["build_request_id"])
    assert [e["status"] for e in events if e["event_type"] == "build_request"] == [
        "BUILD_REQUEST_RECEIVED",
        "BUILD_REQUEST_PLANNING",
        "BUILD_REQUEST_FAILED",
    ]
    assert build["partitions"] == [
        {"partition_ref": "nothing/matches", "status": "PARTITION_FAILED"}
    ]


@pytest_twisted.ensureDeferred
async def test_invalid_refs_are_refused_before_anything_is_recorded(harness: Harness) -> None:
    with pytest.raises(InvalidRefError):
        await harness.orchestrator.submit(["has space"])
    with pytest.raises(InvalidRefError):
        await harness.orchestrator.submit([])
    assert await harness.events() == []


@pytest_twisted.ensureDeferred
async def test_each_jobs_command_is_resolved_once_per_build(tmp_path: Path) -> None:
    """The analysis resolves the commands (for Bazel: builds the targets); the runs use what it
    resolved instead of resolving again, in a step a cancellation could not stop."""
    resolved: list[str] = []

    def counting(jobs: Sequence[JobSpec]) -> Deferred[dict[str, tuple[str, ...]]]:
        resolved.extend(job.label for job in jobs)
        return plain_commands(jobs)

    harness = await start_harness(tmp_path / "ws", resolve=counting)
    try:
        harness.plan({"work/c": {"inputs": ["work/a", "work/b"]}, "work/b": {"inputs": ["work/a"]}})
        build = await harness.build(["work/c"])
        assert build["status"] == "BUILD_REQUEST_COMPLETED"
        assert len(harness.starts()) == 3
        assert sorted(resolved) == sorted(set(resolved))
    finally:
        await stop_harness(harness)


class HeldRequests:
    """The event log, its appends of batches that record a PARTITION_REQUESTED held until
    ``release``."""

    def __init__(self) -> None:
        self._log: Any = None
        self._held: list[Deferred[None]] = []
        self._released = False

    def wrap(self, log: Any) -> HeldRequests:
        self._log = log
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append_many(self, events: list[Event]) -> Deferred[list[Any]]:
        requested = PartitionStatus.PARTITION_REQUESTED
        if self._released or all(getattr(e.payload, "status", None) is not requested
                                 for e in events):
            return self._log.append_many(events)  # type: ignore[no-any-return]
        return ensureDeferred(self._after_release(events))

    async def _after_release(self, events: list[Event]) -> list[Any]:
        held: Deferred[None] = Deferred()
        self._held.append(held)
        await held
        return await self._log.append_many(events)  # type: ignore[no-any-return]

    def release(self) -> None:
        self._released = True
        for held in self._held:
            held.callback(None)


@pytest_twisted.ensureDeferred
async def test_runs_start_while_the_requested_refs_are_still_recorded(tmp_path: Path) -> None:
    """The first runs of a big request need not wait for the log to store every requested
    ref's REQUESTED; each ref's REQUESTED still comes before anything else of it."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "databuild.toml").write_text(
        '[graph]\nlabel = "test"\n\n[[jobs]]\nlabel = "noop"\n'
        "outputs = ['n/\\d+']\ncommand = ['sh', 'noop.sh']\n"
    )
    (root / "noop.sh").write_text(one_run_per_ref())
    # More than the recorder keeps unstored (PACE_HIGH) past the first run's events.
    refs = [f"n/{i}" for i in range(3 * PACE_HIGH)]
    log = HeldRequests()
    harness = await start_harness(root, wrap_log=log.wrap)
    try:
        build_id = await harness.orchestrator.submit(refs)
        build = harness.orchestrator._courses[build_id].build
        # Nothing REQUESTED is stored, yet the build is analysed and its runs scheduled.
        await poll_until_async(lambda: build.tasks, "the first run to be scheduled")
        log.release()
        assert (await harness.finished(build_id))["status"] == "BUILD_REQUEST_COMPLETED"
        events = await harness.events(build_id)
        first: dict[str, str] = {}
        for e in events:
            if e["event_type"] == "partition":
                first.setdefault(e["partition_ref"], e["status"])
        assert first == dict.fromkeys(refs, "PARTITION_REQUESTED")
        requested = [e["idx"] for e in events if e.get("status") == "PARTITION_REQUESTED"]
        running = [e["idx"] for e in events if e.get("status") == "JOB_RUNNING"]
        assert min(running) < max(requested)
    finally:
        await stop_harness(harness)
