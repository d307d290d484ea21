"""databuild.executor.running: journals of running groups and reaping a dead service's orphans."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from databuild.executor.running import (
    COMPACT_LINES,
    RecordFile,
    RunningJournal,
    RunningRecord,
    read_records,
    reap_orphans,
)
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


def live(running: Path) -> list[RunningRecord]:
    return [record for found in read_records(running) for record in found.records]


@pytest_twisted.ensureDeferred
async def test_reaping_terminates_recorded_groups_but_never_a_reused_pid(tmp_path: Path) -> None:
    running = tmp_path / "running"
    orphan, orphan_grandchild = await started_sleeper(tmp_path, "orphan")
    stranger, _ = await started_sleeper(tmp_path, "stranger")
    try:
        journal = RunningJournal(running, "dead-service", "")
        journal.started(RunningRecord("run-1", "build-1", orphan.pid, start_ticks(orphan.pid)))
        # Same pid, other start time: what a pid reused by an unrelated process looks like.
        journal.started(
            RunningRecord("run-2", "build-1", stranger.pid, start_ticks(stranger.pid) + 1)
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
async def test_a_live_services_journal_is_left_alone(tmp_path: Path) -> None:
    journal = RunningJournal(tmp_path, "live-service", "")
    record = RunningRecord("run", "build", os.getpid(), start_ticks(os.getpid()))
    journal.started(record)
    reaped = await ensureDeferred(
        reap_orphans(reactor, tmp_path, lambda service: service != "live-service")
    )
    assert reaped == []
    assert read_records(tmp_path) == [RecordFile(journal.path, ("live-service", ""), (record,))]


@pytest_twisted.ensureDeferred
async def test_reaping_an_empty_or_missing_directory_does_nothing(tmp_path: Path) -> None:
    assert await ensureDeferred(reap_orphans(reactor, tmp_path / "nothing")) == []


def test_a_journal_holds_the_runs_started_and_not_ended(tmp_path: Path) -> None:
    journal = RunningJournal(tmp_path, "s1", "h1")
    first, second = RunningRecord("r1", "b", 123, 456), RunningRecord("r2", "b", 124, 457)
    journal.started(first)
    journal.started(second)
    journal.ended("r1")
    assert read_records(tmp_path) == [RecordFile(journal.path, ("s1", "h1"), (second,))]
    assert list(journal.live.values()) == [second]
    journal.ended("r2")
    journal.close()
    assert read_records(tmp_path) == []


def test_a_journal_is_compacted_to_its_live_runs(tmp_path: Path) -> None:
    journal = RunningJournal(tmp_path, "s1", "h1")
    kept = RunningRecord("kept", "b", 1, 1)
    journal.started(kept)
    for n in range(COMPACT_LINES):
        journal.started(RunningRecord(f"r{n}", "b", 2, 2))
        journal.ended(f"r{n}")
    lines = journal.path.read_bytes().splitlines()
    assert len(lines) < COMPACT_LINES
    assert read_records(tmp_path) == [RecordFile(journal.path, ("s1", "h1"), (kept,))]
    assert not list(tmp_path.glob("*.tmp"))
    journal.started(RunningRecord("after", "b", 3, 3))  # still writes to the rewritten file
    assert [r.job_run_id for r in live(tmp_path)] == ["kept", "after"]


def test_a_closed_journal_with_live_runs_stays(tmp_path: Path) -> None:
    journal = RunningJournal(tmp_path, "s1", "h1")
    journal.started(RunningRecord("r1", "b", 123, 456))
    journal.close()
    assert [r.job_run_id for r in live(tmp_path)] == ["r1"]


def test_a_journal_goes_into_a_directory_made_on_first_use(tmp_path: Path) -> None:
    running = tmp_path / "state" / "running"
    journal = RunningJournal(running, "s1", "h1")
    journal.started(RunningRecord("run", "build", 123, 456))
    assert journal.path.parent == running


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    # A service killed in the middle of writing a start leaves half a line.
    journal = RunningJournal(tmp_path, "s1", "h1")
    record = RunningRecord("r1", "b", 123, 456)
    journal.started(record)
    with journal.path.open("ab") as f:
        f.write(b'{"started": {"job_run_id": "r2", "bui')
    assert live(tmp_path) == [record]


def test_a_record_of_one_run_from_an_older_service_is_read(tmp_path: Path) -> None:
    # Services before the journal wrote running/<job_run_id>.json, one file per run.
    record = RunningRecord("run", "build", 123, 456, "old-service", "h1")
    path = tmp_path / "run.json"
    path.write_text(json.dumps({
        "job_run_id": "run", "build_request_id": "build", "pid": 123, "start_time": 456,
        "service_id": "old-service", "host": "h1",
    }))
    assert read_records(tmp_path) == [RecordFile(path, ("old-service", "h1"), (record,))]


@pytest_twisted.ensureDeferred
async def test_an_empty_file_left_by_a_killed_service_is_ignored_and_removed(
    tmp_path: Path,
) -> None:
    # A service killed between creating its journal and writing its first line leaves it empty.
    (tmp_path / "s1-0000.jsonl").write_bytes(b"")
    (tmp_path / "run-1.json").write_bytes(b"")
    assert [found.owner for found in read_records(tmp_path)] == [None, None]
    assert await ensureDeferred(reap_orphans(reactor, tmp_path)) == []
    assert read_records(tmp_path) == []


def test_a_journal_reopened_after_close_keeps_its_live_runs(tmp_path: Path) -> None:
    journal = RunningJournal(tmp_path, "s1", "h1")
    first = RunningRecord("r1", "b", 123, 456)
    journal.started(first)
    journal.close()
    second = RunningRecord("r2", "b", 124, 457)
    journal.started(second)
    assert live(tmp_path) == [first, second]
