"""A test workspace driven by plan.json, a real SQLite event log and a running Orchestrator."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_twisted
from attrs import define, field
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from databuild.bel import EventLog, open_event_log
from databuild.executor.local import LocalLauncher
from databuild.executor.runner import Executor
from databuild.graph.workspace import Workspace, load_workspace
from databuild.orchestrator import Orchestrator

HERE = Path(__file__).parent
BUILD_DEADLINE_S = 120


def workspace_toml(python: str, jobs: list[dict[str, Any]]) -> str:
    lines = ['[graph]\nlabel = "test"\n']
    for job in jobs:
        lines.append("[[jobs]]")
        lines.append(f"label = {json.dumps(job['label'])}")
        lines.append(f"outputs = [{json.dumps(job['pattern'])}]")
        lines.append(f"command = {json.dumps([python, 'testjob.py'])}")
        for key in ("timeout", "retries"):
            if key in job:
                lines.append(f"{key} = {job[key]}")
        lines.append("")
    return "\n".join(lines)


DEFAULT_JOBS = [
    {"label": "work", "pattern": r"work/[a-z0-9_]+"},
    {"label": "slow", "pattern": r"slow/[a-z0-9_]+", "timeout": 0.5},
    {"label": "flaky", "pattern": r"flaky/[a-z0-9_]+", "retries": 2},
]


@define
class Harness:
    root: Path
    workspace: Workspace
    log: EventLog
    executor: Executor
    orchestrator: Orchestrator
    errors: list[dict[str, Any]] = field(factory=list)
    """Failures the orchestrator logged (a refused event, a broken build): none expected."""

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None and str(
            event.get("log_namespace", "")
        ).startswith("databuild.orchestrator"):
            self.errors.append(event)

    def plan(self, plan: dict[str, dict[str, Any]]) -> None:
        (self.root / "plan.json").write_text(json.dumps(plan))

    def runs(self) -> list[dict[str, Any]]:
        path = self.root / "runs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def starts(self, ref: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.runs() if r["phase"] == "start" and ref in (None, r["ref"])]

    async def events(self, build_request_id: str | None = None) -> list[dict[str, Any]]:
        found, since = [], 0
        while True:
            page = await self.log.events(
                since=since, limit=1000, build_request_id=build_request_id
            )
            found += page["events"]
            if len(page["events"]) < 1000:
                return found
            since = page["next_since"]

    async def build(self, refs: list[str], force: bool = False) -> dict[str, Any]:
        """Submit a build, wait for its end, return the build as the log has it."""
        build_id = await self.orchestrator.submit(refs, force)
        return await self.finished(build_id)

    async def finished(self, build_id: str) -> dict[str, Any]:
        subscription = await self.orchestrator.hub.subscribe(build_id, 0, lambda e: None)
        # A build that never ends fails the test instead of hanging the suite.
        await subscription.finished.addTimeout(BUILD_DEADLINE_S, reactor)
        build = await self.log.get_build(build_id)
        assert build is not None
        return build


async def start_harness(
    root: Path,
    max_parallel_jobs: int = 4,
    jobs: list[dict[str, Any]] | None = None,
    *,
    executor_type: type[Executor] = Executor,
    wrap_log: Callable[[EventLog], Any] = lambda log: log,
    log_uri: str | None = None,
    **orchestrator_options: Any,
) -> Harness:
    """A harness on ``root``, its log at ``log_uri`` (default: SQLite in the workspace);
    ``executor_type``, ``wrap_log`` and ``orchestrator_options`` let a test put faults into
    the orchestrator's parts."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "databuild.toml").exists():
        (root / "databuild.toml").write_text(workspace_toml(sys.executable, jobs or DEFAULT_JOBS))
        shutil.copy(HERE / "testjob.py", root / "testjob.py")
        (root / "plan.json").write_text("{}")
    workspace = load_workspace(root)
    log = open_event_log(log_uri or str(root / ".databuild" / "bel.sqlite"), root, reactor)
    await log.open()
    executor = executor_type(reactor, root, max_parallel_jobs, grace_s=2)
    orchestrator = Orchestrator(
        reactor, workspace, wrap_log(log), LocalLauncher(reactor, executor),
        **orchestrator_options,
    )
    harness = Harness(root, workspace, log, executor, orchestrator)
    globalLogPublisher.addObserver(harness.observe)
    await orchestrator.startService()
    return harness


async def stop_harness(harness: Harness) -> None:
    if harness.orchestrator.running:
        await harness.orchestrator.stopService()
    await harness.log.close()
    globalLogPublisher.removeObserver(harness.observe)
    assert [e["log_failure"].getErrorMessage() for e in harness.errors] == []


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_harness(tmp_path / "ws")
    yield h
    await stop_harness(h)
