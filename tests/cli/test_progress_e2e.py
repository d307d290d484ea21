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

from tests.polling import poll_until

from databuild.proc.info import alive

from .conftest import DATABUILD, Output, Run, release, slow_pid

TOTAL = "daily_votes/2026-01-01"
Spawn = Callable[..., subprocess.Popen[str]]


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
    """Four slow runs, each ending only when the test releases it: every step is drawn."""
    refs = [f"slow/live{i}" for i in range(4)]
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [DATABUILD, "build", *refs], cwd=workspace, env=cli_env,
        stdin=terminal, stdout=terminal, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    screen = Output(controller)
    try:
        screen.until(r"\r\x1b\[K\[0 / 4\] 0% \d+s  2 running: slow/live0, slow/live1")
        for done, ref in enumerate(refs, start=1):
            slow_pid(workspace, ref)
            release(workspace, ref)
            screen.until(rf"\r\x1b\[Kcompleted slow +{ref}\b")
            if done < len(refs):
                screen.until(rf"\r\x1b\[K\[{done} / 4\] {done * 25}% \d+s ETA \d+s")
        text = screen.rest()
    finally:
        os.close(controller)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    proc.stderr.close()
    assert "started " not in text  # the live line shows running jobs instead
    assert "[0 / 0]" not in screen.text  # "analysing 4 refs…" until the plan is known
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


def one_job_at_a_time(workspace: Path) -> None:
    """The service runs one job at a time ([service] is the last table of databuild.toml)."""
    with (workspace / "databuild.toml").open("a") as f:
        f.write("max_parallel_jobs = 1\n")


def test_ctrl_c_cancels_the_build_waits_for_it_and_exits_8_saying_only_true_things(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    """One run runs, three wait for it; Ctrl-C cancels all four, the waiting in one line."""
    one_job_at_a_time(workspace)
    proc = spawn_databuild("build", *(f"slow/c{i}" for i in range(4)))
    out, err = Output(proc.stdout.fileno()), Output(proc.stderr.fileno())
    build_id = out.until(r"build (\w+): ").group(1)
    out.until(r"started +slow")
    running = poll_until(
        lambda: list((workspace / "slow_pids").glob("slow_c?")), "the first run to start"
    )
    job = int(running[0].read_text())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = out.rest(), err.rest()
    assert proc.wait(timeout=60) == 8, stderr
    assert stderr.splitlines()[-1] == (
        f"databuild: cancelling build {build_id} (Ctrl-C again to stop waiting)"
    )
    assert "could not cancel" not in stderr
    lines = stdout.splitlines()
    assert "3 job runs cancelled before they started" in lines
    assert sum(line.startswith("cancelled ") for line in lines) == 1  # the one that ran
    assert re.fullmatch(rf"build {build_id} cancelled in [0-9.]+s \(4 cancelled\): .*", lines[-1])
    poll_until(lambda: not alive(job), "the cancelled job's process to end")
    shown = json.loads(databuild("builds", "show", build_id, "--format", "json").stdout)
    assert shown["status"] == "BUILD_REQUEST_CANCELLED"


def test_second_ctrl_c_returns_without_waiting(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    """The stubborn job ignores SIGTERM, so the cancellation takes the executor's grace period;
    the second Ctrl-C does not wait for it: the CLI is gone before the build ends."""
    proc = spawn_databuild("build", "slow/stubborn")
    out, err = Output(proc.stdout.fileno()), Output(proc.stderr.fileno())
    build_id = out.until(r"build (\w+): ").group(1)
    out.until(r"started +slow")
    slow_pid(workspace, "slow/stubborn")
    proc.send_signal(signal.SIGINT)
    err.until("cancelling build")
    proc.send_signal(signal.SIGINT)
    out.rest()
    stderr = err.rest()
    assert proc.wait(timeout=60) == 8, stderr
    cli_gone_ns = time.time_ns()
    assert "stopped waiting for build" in stderr
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
    out, err = Output(proc.stdout.fileno()), Output(proc.stderr.fileno())
    out.until(r"started +slow")
    proc.send_signal(signal.SIGINT)
    out.rest()
    stderr = err.rest()
    assert proc.wait(timeout=60) == 0
    assert f"detached from build {build_id}; it goes on" in stderr
    shown = json.loads(databuild("builds", "show", build_id, "--format", "json").stdout)
    assert shown["status"] == "BUILD_REQUEST_EXECUTING"
    assert databuild("builds", "cancel", build_id).returncode == 0
    assert databuild("tail", build_id).returncode == 8
