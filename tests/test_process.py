"""databuild.proc.process: children in their own process group, lines, timeout, group kill."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from databuild.proc.info import alive, start_ticks
from databuild.proc.process import spawn


async def _wait_gone(pid: int, deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not alive(pid):
            return True
        d: Deferred[None] = Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d
    return False


@pytest_twisted.ensureDeferred
async def test_lines_of_both_streams_arrive_in_order_with_exit_code(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    child = spawn(
        reactor,
        [sys.executable, "-c", "import sys; print('a'); print('b', file=sys.stderr); "
         "sys.stdout.write('no newline'); sys.exit(3)"],
        cwd=tmp_path,
        env=os.environ,
        on_line=lambda stream, text: lines.append((stream, text)),
    )
    result = await child.result
    assert result.exit_code == 3
    assert not result.succeeded
    assert result.stderr_tail == "b"
    assert [t for s, t in lines if s == "stdout"] == ["a", "no newline"]
    assert ("stderr", "b") in lines


@pytest_twisted.ensureDeferred
async def test_stdin_is_delivered_and_closed(tmp_path: Path) -> None:
    out: list[str] = []
    child = spawn(
        reactor,
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
        cwd=tmp_path,
        env=os.environ,
        stdin=b"hello",
        on_line=lambda stream, text: out.append(text),
    )
    assert (await child.result).succeeded
    assert out == ["HELLO"]


@pytest_twisted.ensureDeferred
async def test_child_leads_its_own_process_group(tmp_path: Path) -> None:
    out: list[str] = []
    child = spawn(
        reactor,
        [sys.executable, "-c", "import os; print(os.getpgid(0), os.getpid())"],
        cwd=tmp_path,
        env=os.environ,
        on_line=lambda stream, text: out.append(text),
    )
    await child.result
    pgid, pid = out[0].split()
    assert pgid == pid == str(child.pid)
    assert int(pgid) != os.getpgid(0)


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_whole_group_including_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    child = spawn(
        reactor,
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"],
        cwd=tmp_path,
        env=os.environ,
        timeout_s=0.5,
        grace_s=1.0,
    )
    result = await child.result
    assert result.timed_out
    assert result.describe() == "timed out"
    assert await _wait_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_terminate_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    started = tmp_path / "started"
    child = spawn(
        reactor,
        ["sh", "-c", f"trap '' TERM; touch {started}; while true; do sleep 0.05; done"],
        cwd=tmp_path,
        env=os.environ,
        grace_s=0.3,
    )
    end = time.monotonic() + 10
    while not started.exists() and time.monotonic() < end:
        d: Deferred[None] = Deferred()
        reactor.callLater(0.02, d.callback, None)
        await d
    result = await child.terminate()
    assert result.cancelled
    assert result.signal == 9


@pytest_twisted.ensureDeferred
async def test_leftover_grandchild_is_killed_when_the_leader_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    child = spawn(
        reactor,
        ["sh", "-c", f"sleep 300 > /dev/null 2>&1 & echo $! > {pidfile}"],
        cwd=tmp_path,
        env=os.environ,
    )
    assert (await child.result).succeeded
    assert await _wait_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_missing_program_reports_why_on_stderr(tmp_path: Path) -> None:
    child = spawn(reactor, ["no-such-program-xyz"], cwd=tmp_path, env=os.environ)
    result = await child.result
    assert result.exit_code == 127
    assert "no-such-program-xyz" in result.stderr_tail


def test_start_time_distinguishes_processes() -> None:
    assert start_ticks(os.getpid()) is not None
    assert start_ticks(2**22 + 12345) is None
