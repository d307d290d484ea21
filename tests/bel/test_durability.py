"""An acknowledged append survives kill -9 of the writer; nothing is ever half-written."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from databuild.bel import EventLog, open_event_log
from databuild.proc.process import ProcessResult, kill_group, spawn

APPENDER = Path(__file__).with_name("appender.py")
ACK = re.compile(r"^(\d+) ([0-9a-f]{32})$")
WANTED_ACKS = 400
DEADLINE_S = 60.0


async def all_events(log: EventLog) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    while page := (await log.events(since=since, limit=1000))["events"]:
        events += page
        since = page[-1]["idx"]
    return events


async def all_pages(query: Any, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while page := (await query(limit=1000, offset=len(items)))[key]:
        items += page
    return items


@pytest_twisted.ensureDeferred
async def test_acknowledged_events_survive_kill_9(log_uri: str, tmp_path: Path) -> None:
    acked: dict[int, str] = {}
    enough: Deferred[None] = Deferred()

    def on_line(stream: str, text: str) -> None:
        match = ACK.match(text)
        if stream == "stdout" and match:
            acked[int(match.group(1))] = match.group(2)
            if len(acked) >= WANTED_ACKS and not enough.called:
                enough.callback(None)

    child = spawn(
        reactor,
        [sys.executable, str(APPENDER), log_uri, str(tmp_path)],
        cwd=tmp_path,
        env=os.environ,
        on_line=on_line,
    )

    def ended(result: ProcessResult) -> ProcessResult:
        if not enough.called:
            enough.errback(
                AssertionError(f"appender ended early, {result.describe()}: {result.stderr_tail}")
            )
        return result

    child.result.addCallback(ended)
    enough.addTimeout(DEADLINE_S, reactor)
    await enough
    kill_group(child.pgid, signal.SIGKILL)
    result = await child.result
    assert result.signal == signal.SIGKILL

    log = open_event_log(log_uri, tmp_path, reactor)
    await log.open()
    try:
        events = await all_events(log)
        stored = {e["idx"]: e["event_id"] for e in events}
        assert len(acked) >= WANTED_ACKS
        missing = {idx: eid for idx, eid in acked.items() if stored.get(idx) != eid}
        assert missing == {}

        # The summary tables agree with the log: every transaction was whole or absent.
        latest_build: dict[str, str] = {}
        latest_run: dict[str, str] = {}
        for e in events:
            if e["event_type"] == "build_request":
                latest_build[e["build_request_id"]] = e["status"]
            elif e["event_type"] == "job":
                latest_run[e["job_run_id"]] = e["status"]
        builds = await all_pages(log.list_builds, "builds")
        assert {b["build_request_id"]: b["status"] for b in builds} == latest_build
        tasks = await all_pages(log.list_tasks, "tasks")
        assert {t["job_run_id"]: t["status"] for t in tasks} == latest_run
        counted: Counter[str] = Counter()
        for b in builds:
            counted.update({k: v for k, v in b["job_runs"].items() if v})
        assert counted == Counter(latest_run.values())
        job = await log.get_job("job")
        skipped = list(latest_run.values()).count("JOB_SKIPPED")
        assert (job["runs"], job["skipped"]) == (len(latest_run) - skipped, skipped)
        assert job["succeeded"] == list(latest_run.values()).count("JOB_COMPLETED")
    finally:
        await log.close()
