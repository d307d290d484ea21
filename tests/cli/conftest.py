"""End-to-end helpers: the installed ``databuild`` run as a subprocess in a workspace copy."""

from __future__ import annotations

import codecs
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.polling import DEADLINE_S, poll_until

from databuild.proc.info import alive

BIN = Path(sys.executable).parent
DATABUILD = str(BIN / "databuild")
SERVICE_TIMEOUT_S = "30"
"""Idle timeout of the services the tests start, so that a forgotten one goes away."""

SLOW_JOB = '''\
"""A job that takes its time: it records its pid, then waits (at most 120 s) until the test
creates slow_release/<ref with _ for />. A "stubborn" one ignores SIGTERM."""
import json, os, signal, sys, time
from pathlib import Path

if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r]} for r in sys.argv[2:]]}))
    sys.exit(0)
ref = sys.argv[2]
if "stubborn" in ref:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
name = ref.replace("/", "_")
pids = Path("slow_pids")
pids.mkdir(exist_ok=True)
(pids / f"{name}.tmp").write_text(str(os.getpid()))
(pids / f"{name}.tmp").rename(pids / name)
end = time.monotonic() + 120
while not Path("slow_release", name).exists() and time.monotonic() < end:
    time.sleep(0.05)
'''

SLOW_JOB_TOML = '''
[[jobs]]
label = "slow"
outputs = ['slow/[a-z0-9_]+']
command = ["python3", "slow_job.py"]

# Any free port: the tests never depend on 8080 (or any one port) being free.
[service]
port = 0
'''

Run = Callable[..., subprocess.CompletedProcess[str]]


def release(workspace: Path, ref: str) -> None:
    """Let the slow job's run for ``ref`` end."""
    (workspace / "slow_release").mkdir(exist_ok=True)
    (workspace / "slow_release" / ref.replace("/", "_")).touch()


def slow_pid(workspace: Path, ref: str) -> int:
    """The pid of the slow job's run for ``ref``, once it runs."""
    path = workspace / "slow_pids" / ref.replace("/", "_")
    return int(poll_until(lambda: path.exists() and path.read_text(), f"{ref} to start"))


class Output:
    """What a child writes to one pipe or terminal, read as it comes, each wait with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.ended = False
        self._seen = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def until(self, pattern: str, timeout_s: float = DEADLINE_S) -> re.Match[str]:
        """Read until ``pattern`` (a regex) matches what came after the previous match."""
        deadline = time.monotonic() + timeout_s
        while not (found := re.compile(pattern).search(self.text, self._seen)):
            assert not self.ended, f"{pattern!r} never came; got {self.text[self._seen:]!r}"
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} did not come in {timeout_s:g}s; got {self.text!r}"
            self._read(left)
        self._seen = found.end()
        return found

    def rest(self, timeout_s: float = DEADLINE_S) -> str:
        """Read to the end (the writer closed it); returns everything read."""
        deadline = time.monotonic() + timeout_s
        while not self.ended:
            left = deadline - time.monotonic()
            assert left > 0, f"the output did not end in {timeout_s:g}s; got {self.text!r}"
            self._read(left)
        return self.text

    def _read(self, timeout_s: float) -> None:
        if not select.select([self.fd], [], [], timeout_s)[0]:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: a terminal's last writer is gone
            chunk = b""
        self.ended = not chunk
        self.text += self._decoder.decode(chunk, final=self.ended)


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
    for pid in pids:
        try:
            poll_until(lambda pid=pid: not alive(pid), f"pid {pid} to end", timeout_s=20)
        except AssertionError:
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
