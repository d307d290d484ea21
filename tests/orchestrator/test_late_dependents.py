"""A run scheduled after its input ended (the input's run was quick, or the build it was
delegated to finished, while the runs before it were scheduled) does not wait for it forever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.orchestrator.conftest import start_harness, stop_harness
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from databuild.orchestrator import course, recorder
from databuild.orchestrator.state import Task, TaskState


@pytest.mark.parametrize(("leaf_exit", "status"), [
    (0, "BUILD_REQUEST_COMPLETED"),
    (1, "BUILD_REQUEST_FAILED"),
])
@pytest_twisted.ensureDeferred
async def test_a_run_scheduled_after_its_input_ended_is_not_left_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaf_exit: int, status: str
) -> None:
    # Scheduling waits, after each run, until every run ready so far has ended: the leaf
    # runs to its end before the run that reads it is scheduled.
    ready: list[Task] = []
    make_ready = course.Course._ready

    def noted(self: course.Course, t: Task) -> None:
        ready.append(t)
        make_ready(self, t)

    def all_ended() -> Deferred[None] | None:
        if all(t.state is TaskState.DONE for t in ready):
            return None
        return task.deferLater(reactor, 0.01, all_ended)  # type: ignore[return-value]

    pace = recorder.Recorder.pace

    def paced(self: recorder.Recorder) -> Any:
        return pace(self) or all_ended()

    monkeypatch.setattr(course.Course, "_ready", noted)
    monkeypatch.setattr(recorder.Recorder, "pace", paced)
    harness = await start_harness(tmp_path / "ws")
    try:
        harness.plan({"work/leaf": {"exit": leaf_exit}, "work/top": {"inputs": ["work/leaf"]}})
        build = await harness.build(["work/top"])
        assert build["status"] == status
        assert [r["ref"] for r in harness.starts()][:1] == ["work/leaf"]
        assert len(harness.starts("work/top")) == (1 - leaf_exit)
        assert harness.errors == []
    finally:
        await stop_harness(harness)
