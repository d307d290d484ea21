"""A big build hands its launcher a window of runs at a time, not all of them (SPEC §9): the
state of a started run (its claim, its handle, its queued slot) exists for a few runs only."""

from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.orchestrator.conftest import start_harness, stop_harness
from twisted.internet import reactor

from databuild.bel import claims
from databuild.executor.local import WINDOW_LEAST, LocalLauncher
from databuild.executor.runner import Executor, RunHandle
from databuild.model import JobRun
from databuild.proc.process import ProcessResult


class CountingExecutor(Executor):
    """The real executor, counting the runs it holds (queued or running) at once, and the
    handles of its runs anyone still holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding = 0
        self.most = 0
        self.handles: weakref.WeakSet[RunHandle] = weakref.WeakSet()
        self.most_handles = 0

    def run(self, job_run: JobRun, *args: Any, **kwargs: Any) -> RunHandle:
        handle = super().run(job_run, *args, **kwargs)
        self.holding += 1
        self.most = max(self.most, self.holding)
        self.handles.add(handle)
        self.most_handles = max(self.most_handles, len(self.handles))
        handle.result.addCallback(self._ended)
        return handle

    def _ended(self, result: ProcessResult) -> ProcessResult:
        self.holding -= 1
        return result


@pytest_twisted.ensureDeferred
async def test_a_build_of_more_runs_than_its_window_hands_them_over_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[int] = []
    claim_many = claims.claim_many

    def counted(db: Any, requests: list[Any]) -> Any:
        transactions.append(len(requests))
        return claim_many(db, requests)

    monkeypatch.setattr(claims, "claim_many", counted)
    runs = 3 * WINDOW_LEAST
    harness = await start_harness(
        tmp_path / "ws", max_parallel_jobs=2, executor_type=CountingExecutor
    )
    try:
        executor = harness.executor
        assert isinstance(executor, CountingExecutor)
        window = LocalLauncher(reactor, executor).window  # the harness's launcher's
        assert window is not None and window < runs

        build = await harness.build([f"work/r{i}" for i in range(runs)])

        assert build["status"] == "BUILD_REQUEST_COMPLETED"
        assert len(harness.starts()) == runs
        # Never more than the window at once, and more than the slots: runs wait queued,
        # so a slot that frees starts the next run at once.
        assert executor.most <= window
        assert executor.most > executor.max_parallel_jobs
        # A finished run's handle is let go of (the build keeps its task to its end).
        assert executor.most_handles <= window + window // 2
        # Runs are handed over half a window at a time, their claims in one transaction:
        # not a transaction per run as each run ends.
        assert sum(transactions) == runs
        assert len(transactions) <= 1 + math.ceil((runs - window) / (window // 2))
    finally:
        await stop_harness(harness)
