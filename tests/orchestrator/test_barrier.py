"""The crash barrier: a fault at any seam of the orchestrator fails that build and no other."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.orchestrator.conftest import (
    DEFAULT_JOBS,
    Harness,
    start_harness,
    stop_harness,
)
from tests.orchestrator.test_delegation import wait_for_delegation
from tests.polling import poll_until_async
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from databuild.bel import Event, EventLog, IllegalTransition, JobEvent, JobStatus
from databuild.executor.runner import Executor, RunHandle
from databuild.graph.commands import plain_commands
from databuild.graph.workspace import JobSpec
from databuild.model import JobRun
from databuild.orchestrator import course
from databuild.orchestrator.claims import LocalClaims
from databuild.orchestrator.state import Outcome

JOBS = [*DEFAULT_JOBS, {"label": "boom", "pattern": r"boom/[a-z0-9_]+"}]


class Fault(Exception):
    """The injected fault."""


def faulty_resolve(fail_on_call: int) -> Any:
    """A command resolver that raises on its ``fail_on_call``-th call for the boom job."""
    calls: Counter[str] = Counter()

    def resolve(jobs: Sequence[JobSpec]) -> Deferred[dict[str, tuple[str, ...]]]:
        if any(job.label == "boom" for job in jobs):
            calls["boom"] += 1
            if calls["boom"] == fail_on_call:
                raise Fault("the resolver broke")
        return plain_commands(jobs)

    return resolve


class StartFault(Executor):
    def run(self, job_run: JobRun, *args: Any, **kwargs: Any) -> RunHandle:
        if job_run.job_label == "boom":
            raise Fault("the executor broke")
        return super().run(job_run, *args, **kwargs)


class EndFault(Executor):
    def run(self, job_run: JobRun, *args: Any, **kwargs: Any) -> RunHandle:
        handle = super().run(job_run, *args, **kwargs)
        if job_run.job_label == "boom":
            handle.result.addCallback(lambda _: "not a ProcessResult")
        return handle


class RecordingFault:
    """The event log, except that the boom job's RUNNING event raises or is refused."""

    def __init__(self, log: EventLog, how: str) -> None:
        self._log = log
        self._how = how

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append_many(self, events: list[Event]) -> Deferred[list[Any]]:
        kept = [e for e in events if not self._faulty(e)]

        def splice(results: list[Any]) -> list[Any]:
            stored = iter(results)
            return [self._fault() if self._faulty(e) else next(stored) for e in events]

        return self._log.append_many(kept).addCallback(splice)

    @staticmethod
    def _faulty(event: Event) -> bool:
        payload = event.payload
        return (
            isinstance(payload, JobEvent)
            and payload.job_label == "boom"
            and payload.status is JobStatus.JOB_RUNNING
        )

    def _fault(self) -> Exception:
        """What the log answers for the boom job's RUNNING event: an error of its own (a bug
        in the log), or a refusal."""
        if self._how == "raise":
            return Fault("the log broke")
        return IllegalTransition("the log refused it")


class DelegationFault(LocalClaims):
    """Claims whose waiters on boom refs are told nonsense."""

    def wait_for(self, ref: str) -> Deferred[Outcome]:
        d = super().wait_for(ref)
        if ref.startswith("boom/"):
            d.addCallback(lambda _: None)
        return d


async def only_the_faulty_build_fails(harness: Harness, message: str) -> None:
    harness.plan({"work/a": {"sleep": 0.2}})
    bad, good = await gatherResults(
        [ensureDeferred(harness.build(["boom/a"])), ensureDeferred(harness.build(["work/a"]))]
    )
    assert good["status"] == "BUILD_REQUEST_COMPLETED"
    assert bad["status"] == "BUILD_REQUEST_FAILED"
    assert bad["message"].startswith("internal error: ") and message in bad["message"]
    assert_closed(bad)
    # The traceback is in the service log, naming the build.
    assert any(
        e.get("build_request_id") == bad["build_request_id"] for e in harness.errors
    ), harness.errors
    harness.errors.clear()
    # The service goes on: nothing is live, and the next build runs.
    assert harness.orchestrator.active_builds == 0
    again = await harness.build(["work/b"])
    assert again["status"] == "BUILD_REQUEST_COMPLETED"


def assert_closed(build: dict[str, Any]) -> None:
    assert all(JobStatus.parse(t["status"]).final for t in build["tasks"]), build["tasks"]
    assert all(p["status"] in ("PARTITION_AVAILABLE", "PARTITION_FAILED")
               for p in build["partitions"]), build["partitions"]


@pytest.mark.parametrize(
    ("seam", "options", "message"),
    [
        ("analysis", {"resolve": faulty_resolve(1)}, "the resolver broke"),
        ("executor start", {"executor_type": StartFault}, "the executor broke"),
        ("run end handling", {"executor_type": EndFault}, "'str' object"),
        (
            "recording (raises)",
            {"wrap_log": lambda log: RecordingFault(log, "raise")},
            "the log broke",
        ),
        (
            "recording (refused)",
            {"wrap_log": lambda log: RecordingFault(log, "refuse")},
            "the log refused it",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_fault_fails_only_its_build(
    tmp_path: Path, seam: str, options: dict[str, Any], message: str
) -> None:
    harness = await start_harness(tmp_path / "ws", jobs=JOBS, **options)
    try:
        await only_the_faulty_build_fails(harness, message)
    finally:
        await stop_harness(harness)


@pytest_twisted.ensureDeferred
async def test_a_fault_in_delegation_fails_only_the_waiting_build(tmp_path: Path) -> None:
    harness = await start_harness(tmp_path / "ws", jobs=JOBS, claims=DelegationFault())
    try:
        go = harness.root / "go"
        harness.plan({"boom/a": {"until": str(go)}})
        producer = await harness.orchestrator.submit(["boom/a"])
        await poll_until_async(lambda: harness.starts("boom/a"), "harness.starts('boom/a')")
        waiter = await harness.orchestrator.submit(["boom/a"])
        await wait_for_delegation(harness, [waiter])
        go.touch()
        made = await harness.finished(producer)
        waited = await harness.finished(waiter)
        assert made["status"] == "BUILD_REQUEST_COMPLETED"
        assert waited["status"] == "BUILD_REQUEST_FAILED"
        assert waited["message"].startswith("internal error: ")
        assert_closed(waited)
        assert any(e.get("build_request_id") == waiter for e in harness.errors)
        harness.errors.clear()
        assert harness.orchestrator.active_builds == 0
    finally:
        await stop_harness(harness)



@pytest_twisted.ensureDeferred
async def test_a_fault_while_a_build_ends_still_records_it_failed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = course.build_end
    calls: list[object] = []

    def breaks_once(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise Fault("ending broke")
        return real(*args)

    monkeypatch.setattr(course, "build_end", breaks_once)
    broken = await harness.build(["work/a"])
    assert broken["status"] == "BUILD_REQUEST_FAILED"
    assert broken["message"] == "internal error: ending broke"
    assert any(e.get("build_request_id") == broken["build_request_id"] for e in harness.errors)
    harness.errors.clear()
    assert harness.orchestrator.active_builds == 0
    assert (await harness.build(["work/b"]))["status"] == "BUILD_REQUEST_COMPLETED"
