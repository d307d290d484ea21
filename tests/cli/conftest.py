"""End-to-end helpers: the installed ``databuild`` run as a subprocess in a workspace copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from databuild.proc.info import alive

BIN = Path(sys.executable).parent
DATABUILD = str(BIN / "databuild")
SERVICE_TIMEOUT_S = "30"
"""Idle timeout of the services the tests start, so that a forgotten one goes away."""

SLOW_JOB = '''\
"""A job that takes its time: it records its pid, then sleeps (a "stubborn" one ignores
SIGTERM)."""
import json, os, signal, sys, time
from pathlib import Path

if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r]} for r in sys.argv[2:]]}))
    sys.exit(0)
ref = sys.argv[2]
if "stubborn" in ref:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = Path("slow_pids")
pids.mkdir(exist_ok=True)
(pids / ref.replace("/", "_")).write_text(str(os.getpid()))
time.sleep(120)
'''

SLOW_JOB_TOML = '''
[[jobs]]
label = "slow"
outputs = ['slow/[a-z0-9_]+']
command = ["python3", "slow_job.py"]
'''

Run = Callable[..., subprocess.CompletedProcess[str]]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def service_pid(workspace: Path) -> int | None:
    try:
        return int((workspace / ".databuild" / "twistd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_info(workspace: Path) -> dict | None:
    try:
        return json.loads((workspace / ".databuild" / "server.json").read_text())
    except (OSError, ValueError):
        return None


def stop_processes(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cli_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABUILD_SERVICE_URL", "DATABUILD_SERVICE_TOKEN", "DATABUILD_WORKSPACE",
                     "DATABUILD_BUILD_EVENT_LOG")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DATABUILD_SERVICE_TIMEOUT"] = SERVICE_TIMEOUT_S
    env["TZ"] = "UTC"
    return env


@pytest.fixture
def workspace(color_votes: Path) -> Iterator[Path]:
    """The color_votes copy plus a slow job; every service and job started in it is stopped
    afterwards."""
    (color_votes / "slow_job.py").write_text(SLOW_JOB)
    with (color_votes / "databuild.toml").open("a") as f:
        f.write(SLOW_JOB_TOML)
    services: list[int] = []
    yield color_votes
    for pid in (service_pid(color_votes), (server_info(color_votes) or {}).get("pid")):
        if isinstance(pid, int):
            services.append(pid)
    stop_processes(services)
    pids = color_votes / "slow_pids"
    if pids.exists():
        stop_processes([int(p.read_text()) for p in pids.iterdir()])


@pytest.fixture
def databuild(workspace: Path, cli_env: dict[str, str]) -> Run:
    """Run the installed ``databuild`` in the workspace; returns the finished process."""
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DATABUILD, *args], cwd=cwd or workspace, env={**cli_env, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    return run


@pytest.fixture
def spawn_databuild(
    workspace: Path, cli_env: dict[str, str]
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start the installed ``databuild`` without waiting; killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str, **kwargs: object) -> subprocess.Popen[str]:
        options: dict = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        options.update(kwargs)
        proc = subprocess.Popen(
            [DATABUILD, *args], cwd=workspace, env=cli_env, **options
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
