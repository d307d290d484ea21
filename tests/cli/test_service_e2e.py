"""Finding, starting and replacing the service: concurrency, stale files, crashes, idling."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.polling import poll_until

from databuild import __version__
from databuild.proc.info import alive, command_line

from .conftest import Run, server_info, service_pid, slow_pid

Spawn = Callable[..., subprocess.Popen[str]]


def test_ten_concurrent_builds_share_one_service_and_run_each_job_once(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    days = [f"2026-02-0{d}" for d in range(1, 6)]
    procs = [
        spawn_databuild("build", f"daily_votes/{days[i % 5]}", f"daily_votes/{days[(i + 1) % 5]}")
        for i in range(10)
    ]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * 10, [err for _, _, err in results]
    starters = [err for _, _, err in results if "starting the DataBuild service" in err]
    assert len(starters) == 1

    tasks = json.loads(
        databuild("tasks", "list", "--status", "completed", "--limit", "1000", "--format",
                  "json").stdout
    )["tasks"]  # fmt: skip
    runs_per_output = Counter(ref for t in tasks for ref in t["outputs"])
    assert set(runs_per_output) == {f"daily_votes/{d}" for d in days} | {
        f"daily_color_votes/{d}/{c}" for d in days for c in ("red", "green", "blue")
    }
    assert set(runs_per_output.values()) == {1}
    twistds = [
        int(pid) for pid in os.listdir("/proc")
        if pid.isdigit() and any(str(workspace) in arg for arg in command_line(int(pid)))
    ]  # fmt: skip
    assert twistds == [service_pid(workspace)]


def test_stale_files_naming_a_reused_pid_are_cleaned_and_a_service_started(
    workspace: Path, databuild: Run
) -> None:
    """Both files name a live process that is not a service (as after a reboot)."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = workspace / ".databuild"
        state.mkdir()
        (state / "twistd.pid").write_text(str(stranger.pid))
        (state / "server.json").write_text(json.dumps({
            "pid": stranger.pid, "port": 1, "url": "http://127.0.0.1:1", "token": "x",
            "started_at": time.time_ns(), "version": __version__, "workspace": str(workspace),
        }))  # fmt: skip
        listed = databuild("builds", "list")
        assert listed.returncode == 0, listed.stderr
        assert "removed stale .databuild/server.json" in listed.stderr
        assert "removed stale .databuild/twistd.pid" in listed.stderr
        assert "starting the DataBuild service" in listed.stderr
        new = server_info(workspace)["pid"]
        assert new != stranger.pid and service_pid(workspace) == new
        assert stranger.poll() is None  # the stranger was never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_after_kill_9_of_the_service_the_next_call_starts_one_and_the_build_shows_failed(
    workspace: Path, databuild: Run
) -> None:
    build_id = databuild("build", "slow/crashed", "--background").stdout.strip()
    slow_pid(workspace, "slow/crashed")
    old = server_info(workspace)["pid"]
    os.kill(old, signal.SIGKILL)
    poll_until(lambda: not alive(old), "the service to die")

    shown = databuild("builds", "show", build_id, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert "starting the DataBuild service" in shown.stderr
    assert server_info(workspace)["pid"] != old
    build = json.loads(shown.stdout)
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert "service" in build["message"]

    table = databuild("builds", "show", build_id)
    assert "failed" in table.stdout and build["message"].splitlines()[0] in table.stdout
    assert databuild("tail", build_id).returncode == 1


def test_a_build_following_a_service_that_dies_exits_3_saying_so(
    workspace: Path, spawn_databuild: Spawn
) -> None:
    proc = spawn_databuild("build", "slow/orphaned")
    slow_pid(workspace, "slow/orphaned")
    os.kill(server_info(workspace)["pid"], signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "lost the DataBuild service while following build" in err
    assert "Traceback" not in err


def test_an_idle_service_exits_and_the_next_call_starts_a_new_one(
    workspace: Path, databuild: Run
) -> None:
    log = workspace / ".databuild" / "service.log"
    first = databuild("builds", "list", env={"DATABUILD_SERVICE_TIMEOUT": "1"})
    assert first.returncode == 0, first.stderr
    # The service may be gone before this line runs, so its end is read from its log (twistd
    # appends to it), not from its pid in server.json.
    poll_until(lambda: "Server Shut Down." in log.read_text(), "the idle service to exit")
    assert "idle" in log.read_text()
    assert not (workspace / ".databuild" / "server.json").exists()

    second = databuild("builds", "list")
    assert second.returncode == 0, second.stderr
    assert "starting the DataBuild service" in second.stderr
    assert alive(server_info(workspace)["pid"])
    assert log.read_text().count("starting up.") == 2


def test_an_explicit_service_url_is_used_with_its_token_and_never_started(
    workspace: Path, databuild: Run, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = databuild("service", "start", "--workspace", str(workspace), cwd=elsewhere)
    assert started.returncode == 0, started.stderr
    info = server_info(workspace)
    remote = {"DATABUILD_SERVICE_URL": info["url"], "DATABUILD_SERVICE_TOKEN": info["token"]}

    listed = databuild("builds", "list", "--format", "json", env=remote, cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"builds": [], "total": 0, "has_more": False}

    wrong = databuild("builds", "list", env={**remote, "DATABUILD_SERVICE_TOKEN": "nope"},
                      cwd=elsewhere)
    assert wrong.returncode == 3
    assert wrong.stderr.startswith("databuild: ") and "Traceback" not in wrong.stderr
    assert "DATABUILD_SERVICE_TOKEN" in wrong.stderr
    unset = {k: v for k, v in remote.items() if k != "DATABUILD_SERVICE_TOKEN"}
    missing = databuild("builds", "list", env=unset, cwd=elsewhere)
    assert missing.returncode == 3
    assert "set DATABUILD_SERVICE_TOKEN to the service's token" in missing.stderr

    stopped = databuild("service", "stop", env=remote, cwd=elsewhere)
    assert stopped.returncode == 0, stopped.stderr
    # The service stops answering before its process has exited.
    poll_until(lambda: not alive(info["pid"]), "the stopped service to exit")
    gone = databuild("builds", "list", env=remote, cwd=elsewhere)
    assert gone.returncode == 3
    assert "connection refused" in gone.stderr
    assert not (workspace / ".databuild" / "server.json").exists()


def test_a_service_dying_at_start_is_exit_3_with_the_end_of_service_log(
    workspace: Path, databuild: Run
) -> None:
    """DATABUILD_BUILD_EVENT_LOG reaches the service, which cannot open that log and stops."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"postgresql://postgres@127.0.0.1:{port}/test"
    died = databuild("builds", "list", env={"DATABUILD_BUILD_EVENT_LOG": uri})
    assert died.returncode == 3
    first, *rest = died.stderr.splitlines()[1:]
    assert first.startswith(
        f"databuild: the DataBuild service could not start: cannot open the event log at {uri}: "
    )
    assert rest[0] == f"--- end of {workspace}/.databuild/service.log ---"
    assert "Traceback" not in died.stderr
    assert len(rest) <= 21
