"""databuild.proc.process: children in their own process group, lines, timeout, group kill."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest_twisted
from tests.polling import poll_until_async
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


def _holding_pipes(pidfile: Path, then: str) -> list[str]:
    """A leader whose ``setsid`` background process (a new session) keeps stdout and stderr."""
    return ["sh", "-c", f"setsid sleep 300 & echo $! > {pidfile}; {then}"]


@pytest_twisted.ensureDeferred
async def test_the_leader_exiting_ends_the_child_though_a_setsid_process_holds_the_pipes(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "daemon.pid"
    lines: list[str] = []
    child = spawn(
        reactor,
        _holding_pipes(pidfile, "echo started"),
        cwd=tmp_path,
        env=os.environ,
        on_line=lambda stream, text: lines.append(text),
    )
    result = await child.result
    daemon = int(pidfile.read_text())
    assert result.succeeded
    assert lines == ["started"]
    # The result came while the daemon could still have slept for minutes; it goes too.
    assert await _wait_gone(daemon)


@pytest_twisted.ensureDeferred
async def test_cancel_and_timeout_take_effect_whatever_a_setsid_process_does(
    tmp_path: Path,
) -> None:
    cancelled_pid, timed_out_pid = tmp_path / "cancelled.pid", tmp_path / "timed_out.pid"
    cancelled = spawn(
        reactor, _holding_pipes(cancelled_pid, "sleep 300"), cwd=tmp_path, env=os.environ,
        grace_s=0.5,
    )
    timed_out = spawn(
        reactor, _holding_pipes(timed_out_pid, "trap '' TERM; while true; do sleep 0.1; done"),
        cwd=tmp_path, env=os.environ, timeout_s=0.5, grace_s=0.5,
    )
    await poll_until_async(lambda: cancelled_pid.exists() and cancelled_pid.read_text().strip(),
                           "the daemon to start")
    assert (await cancelled.terminate()).cancelled
    result = await timed_out.result
    assert result.timed_out
    assert result.signal == 9
    assert await _wait_gone(int(cancelled_pid.read_text()))
    assert await _wait_gone(int(timed_out_pid.read_text()))


@pytest_twisted.ensureDeferred
async def test_a_daemon_that_left_the_session_and_closed_its_descriptors_is_ended(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "daemon.pid"
    child = spawn(
        reactor,
        ["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' "
         f"< /dev/null > /dev/null 2>&1 & while [ ! -s {pidfile} ]; do sleep 0.01; done"],
        cwd=tmp_path,
        env=os.environ,
    )
    assert (await child.result).succeeded
    assert await _wait_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_a_50_mb_line_without_newline_arrives_in_capped_pieces(tmp_path: Path) -> None:
    cap = 1024 * 1024
    pieces: list[tuple[str, bool]] = []
    child = spawn(
        reactor,
        [sys.executable, "-c",
         "import sys\nfor _ in range(50): sys.stdout.write('é' * (512 * 1024))"],
        cwd=tmp_path,
        env=os.environ,
        max_line_bytes=cap,
        on_line=lambda stream, text, continued=False: pieces.append((text, continued)),
    )
    assert (await child.result).succeeded
    assert "".join(text for text, _ in pieces) == "é" * (50 * 512 * 1024)
    assert all(len(text.encode()) <= cap for text, _ in pieces)
    assert [continued for _, continued in pieces] == [True] * (len(pieces) - 1) + [False]
