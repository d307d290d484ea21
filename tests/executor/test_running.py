"""databuild.executor.running: records of running groups and reaping a dead service's orphans."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from databuild.executor.running import RunningRecord, read_records, reap_orphans, write_record
from databuild.proc.info import alive, start_ticks
from databuild.proc.process import spawn

SLEEPER = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '300'])\n"
    "open(sys.argv[1], 'w').write(str(child.pid))\n"
    "time.sleep(300)\n"
)


async def started_sleeper(tmp_path: Path, name: str):
    pidfile = tmp_path / f"{name}.pid"
    child = spawn(
        reactor, [sys.executable, "-c", SLEEPER, str(pidfile)], cwd=tmp_path, env=os.environ
    )
    end = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text()):
        assert time.monotonic() < end
        await deferLater(reactor, 0.02, lambda: None)
    return child, int(pidfile.read_text())


@pytest_twisted.ensureDeferred
async def test_reaping_terminates_recorded_groups_but_never_a_reused_pid(tmp_path: Path) -> None:
    running = tmp_path / "running"
    orphan, orphan_grandchild = await started_sleeper(tmp_path, "orphan")
    stranger, _ = await started_sleeper(tmp_path, "stranger")
    try:
        write_record(
            running, RunningRecord("run-1", "build-1", orphan.pid, start_ticks(orphan.pid))
        )
        # Same pid, other start time: what a pid reused by an unrelated process looks like.
        write_record(
            running,
            RunningRecord("run-2", "build-1", stranger.pid, start_ticks(stranger.pid) + 1),
        )
        (running / "junk.json").write_text("not json")

        reaped = await ensureDeferred(reap_orphans(reactor, running, grace_s=2))

        assert [r.job_run_id for r in reaped] == ["run-1"]
        result = await orphan.result
        assert result.signal is not None
        assert not alive(orphan_grandchild)
        assert alive(stranger.pid)
        assert read_records(running) == []
    finally:
        await stranger.terminate()


@pytest_twisted.ensureDeferred
async def test_reaping_an_empty_or_missing_directory_does_nothing(tmp_path: Path) -> None:
    assert await ensureDeferred(reap_orphans(reactor, tmp_path / "nothing")) == []


def test_records_round_trip(tmp_path: Path) -> None:
    record = RunningRecord("run", "build", 123, 456)
    path = write_record(tmp_path, record)
    assert path.name == "run.json"
    assert read_records(tmp_path) == [(path, record)]


def test_a_record_goes_into_a_directory_made_on_first_use(tmp_path: Path) -> None:
    running = tmp_path / "state" / "running"
    path = write_record(running, RunningRecord("run", "build", 123, 456))
    assert path.parent == running
    assert not list(running.glob("*.tmp"))


@pytest_twisted.ensureDeferred
async def test_an_empty_record_left_by_a_killed_service_is_ignored_and_removed(
    tmp_path: Path,
) -> None:
    # A service killed between creating a record file and writing it leaves it empty.
    (tmp_path / "run-1.json").write_bytes(b"")
    assert read_records(tmp_path) == [(tmp_path / "run-1.json", None)]
    assert await ensureDeferred(reap_orphans(reactor, tmp_path)) == []
    assert read_records(tmp_path) == []
