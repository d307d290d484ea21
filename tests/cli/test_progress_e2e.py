"""Build progress for real: a terminal, a pipe, JSON lines, background builds, Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from databuild.proc.info import alive

from .conftest import DATABUILD, Run, wait_for

TOTAL = "daily_votes/2026-01-01"
Spawn = Callable[..., subprocess.Popen[str]]


def read_until(stream: IO[str], text: str) -> str:
    """Read lines from ``stream`` until one holds ``text``; returns what was read."""
    seen = ""
    while text not in seen:
        line = stream.readline()
        assert line, f"{text!r} never came; got {seen!r}"
        seen += line
    return seen


def slow_pid(workspace: Path, ref: str) -> int:
    path = workspace / "slow_pids" / ref.replace("/", "_")
    return int(wait_for(lambda: path.exists() and path.read_text(), f"{ref} to start"))


def test_on_a_pipe_progress_is_plain_lines(databuild: Run) -> None:
    built = databuild("build", TOTAL)
    assert built.returncode == 0, built.stderr
    lines = built.stdout.splitlines()
    assert "\x1b" not in built.stdout and "\r" not in built.stdout
    assert lines[0].startswith("build ") and lines[0].endswith(TOTAL)
    assert "analysed: 4 job runs" in lines
    assert sum(line.startswith("completed ingest_color_votes ") for line in lines) == 3
    assert any(line.startswith(f"completed aggregate_color_votes  {TOTAL}") for line in lines)
    assert re.fullmatch(r"build \w+ completed in [0-9.]+s \(4 completed\)", lines[-1])


def test_on_a_terminal_a_live_line_is_redrawn_under_the_finished_jobs(
    workspace: Path, cli_env: dict[str, str]
) -> None:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [DATABUILD, "build", TOTAL], cwd=workspace, env=cli_env,
        stdin=terminal, stdout=terminal, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    proc.stderr.close()
    text = screen.decode()
    assert "\r\x1b[K[0 / " in text
    assert re.search(r"\r\x1b\[K\[\d / 4\] \d+s", text)
    assert "\r\x1b[Kcompleted aggregate_color_votes" in text
    assert "started " not in text  # the live line shows running jobs instead
    assert re.search(r"\r\x1b\[Kbuild \w+ completed in [0-9.]+s \(4 completed\)\r?\n$", text)


def test_background_build_then_tail_in_both_formats(databuild: Run) -> None:
    started = databuild("build", TOTAL, "--background")
    assert started.returncode == 0, started.stderr
    build_id = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", build_id)

    tailed = databuild("tail", build_id)
    assert tailed.returncode == 0, tailed.stderr
    assert tailed.stdout.splitlines()[-1].startswith(f"build {build_id} completed in ")

    as_json = databuild("tail", build_id, "--format", "json")
    assert as_json.returncode == 0
    *events, finished = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert finished == {"build_request_id": build_id, "status": "BUILD_REQUEST_COMPLETED",
                        "message": finished["message"]}
    assert events[0]["event_type"] == "build_request"
    assert events[0]["status"] == "BUILD_REQUEST_RECEIVED"
    assert [e["idx"] for e in events] == sorted(e["idx"] for e in events)
    assert {"idx", "event_id", "timestamp", "build_request_id", "event_type"} <= set(events[0])

    background_json = databuild("build", TOTAL, "--background", "--format", "json")
    assert set(json.loads(background_json.stdout)) >= {"build_request_id", "progress_url"}


def test_ctrl_c_cancels_the_build_waits_for_it_and_exits_8(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    proc = spawn_databuild("build", "slow/one")
    head = read_until(proc.stdout, "started   slow")
    job = slow_pid(workspace, "slow/one")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 8, err
    assert "cancelling build" in err
    build_id = head.split()[1].rstrip(":")
    assert " cancelled in " in out.splitlines()[-1]
    wait_for(lambda: not alive(job), "the cancelled job's process to end")
    shown = json.loads(databuild("builds", "show", build_id, "--format", "json").stdout)
    assert shown["status"] == "BUILD_REQUEST_CANCELLED"


def test_second_ctrl_c_returns_without_waiting(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    """The stubborn job ignores SIGTERM, so the cancellation takes the executor's grace period;
    the second Ctrl-C does not wait for it: the CLI is gone before the build ends."""
    proc = spawn_databuild("build", "slow/stubborn")
    head = read_until(proc.stdout, "started   slow")
    slow_pid(workspace, "slow/stubborn")
    proc.send_signal(signal.SIGINT)
    read_until(proc.stderr, "cancelling build")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    cli_gone_ns = time.time_ns()
    assert proc.returncode == 8, err
    assert "stopped waiting for build" in err
    build_id = head.split()[1].rstrip(":")
    assert databuild("tail", build_id).returncode == 8
    shown = json.loads(databuild("builds", "show", build_id, "--format", "json").stdout)
    assert shown["status"] == "BUILD_REQUEST_CANCELLED"
    assert shown["updated_at"] > cli_gone_ns


def test_ctrl_c_during_tail_only_detaches(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    build_id = databuild("build", "slow/tailed", "--background").stdout.strip()
    slow_pid(workspace, "slow/tailed")
    proc = spawn_databuild("tail", build_id)
    read_until(proc.stdout, "started   slow")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert f"detached from build {build_id}; it goes on" in err
    shown = json.loads(databuild("builds", "show", build_id, "--format", "json").stdout)
    assert shown["status"] == "BUILD_REQUEST_EXECUTING"
    assert databuild("builds", "cancel", build_id).returncode == 0
    assert databuild("tail", build_id).returncode == 8
