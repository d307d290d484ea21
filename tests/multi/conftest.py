"""Team hosts for real: several ``twistd databuild`` processes on one PostgreSQL event log.

Each service has its own copy of one workspace (or, where a test says so, shares one
directory); every job appends to one shared data directory, so duplicate execs show.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from attrs import define, field
from tests.conftest import BIN, installed
from tests.multi.proxy import Proxy
from tests.polling import poll_until
from tests.service.conftest import free_port

from databuild.proc.info import alive

HERE = Path(__file__).parent
START_TIMEOUT_S = 60.0
HEARTBEAT_S = 0.5
LEASE_S = 5.0  # lease minus heartbeat must outlast a loaded machine's pauses
LEASE_ARGS = ("--heartbeat", str(HEARTBEAT_S), "--lease-timeout", str(LEASE_S))

GRAPH = """\
[graph]
label = "team"

[[jobs]]
label = "team"
outputs = ['(leaf|mid|top|slow|after)/[a-z0-9]+']
command = ["python3", "teamjob.py"]
"""


@define
class Team:
    """A running ``twistd databuild`` of the team."""

    name: str
    workspace: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    info: dict[str, Any] = field(factory=dict)
    daemon: bool = False
    """Started without ``-n``: ``process`` is the launching twistd, gone once it served."""

    @property
    def pid(self) -> int:
        """The service's own process (the daemon's, read from its pidfile, if daemonized)."""
        if not self.daemon:
            return self.process.pid
        return int((self.workspace / ".databuild" / f"{self.name}.pid").read_text())

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call (blocking); the status and the decoded JSON answer."""
        parts = urlsplit(self.info["url"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.info['token']}"}
            data = None if body is None else json.dumps(body).encode()
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def submit(self, *refs: str) -> str:
        status, body = self.call("POST", "/api/v1/builds", {"partitions": list(refs)})
        assert status == 202, body
        return body["build_request_id"]

    def build(self, build_id: str) -> dict[str, Any]:
        status, body = self.call("GET", f"/api/v1/builds/{build_id}")
        assert status == 200, body
        return body

    def finished(self, build_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            build = self.build(build_id)
            return build if build["status"] in FINAL else None

        return poll_until(final, f"build {build_id} to finish on {self.name}", timeout_s)

    def services(self) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/api/v1/services")
        assert status == 200, body
        return body["services"]

    @property
    def service_id(self) -> str:
        return next(s["service_id"] for s in self.services() if s["pid"] == self.pid)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.daemon:
            with contextlib.suppress(OSError, ValueError):
                pid = self.pid
                os.kill(pid, signal.SIGTERM)
                poll_until(lambda: not alive(pid), f"{self.name} to stop", 30)
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


FINAL = {"BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}


@define
class Cluster:
    """Services sharing one PostgreSQL event log and one data directory."""

    root: Path
    event_log: str
    data: Path
    env: dict[str, str] = field(factory=dict)
    started: list[Team] = field(factory=list)

    def workspace(self, name: str) -> Path:
        """A workspace copy of the team graph (made once per name)."""
        path = self.root / name
        if not path.exists():
            path.mkdir(parents=True)
            (path / "databuild.toml").write_text(GRAPH)
            shutil.copy(HERE / "teamjob.py", path / "teamjob.py")
        return path

    def start(
        self, name: str, *args: str, workspace: Path | None = None, daemon: bool = False
    ) -> Team:
        """Start ``twistd -n databuild`` as ``name`` (``twistd databuild``, which forks, if
        ``daemon``) and wait until it serves."""
        root = workspace or self.workspace(name)
        state = root / ".databuild"
        state.mkdir(exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
        environ["PATH"] = f"{BIN}{os.pathsep}{environ.get('PATH', '')}"
        environ["TEAM_DATA"] = str(self.data)
        environ.update(self.env)
        log_file = state / f"{name}.log"
        server = state / "server.json"
        command = [
            installed("twistd"), *(() if daemon else ("-n",)),
            "--pidfile", str(state / f"{name}.pid"),
            "--logfile", str(log_file),
            "databuild", "--workspace", str(root), "--port", str(free_port()),
            "--event-log", self.event_log, "--idle-timeout", "0", *LEASE_ARGS, *args,
        ]
        process = subprocess.Popen(
            command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root
        )
        team = Team(name, root, process, log_file, daemon=daemon)
        self.started.append(team)
        if daemon:
            assert process.wait(START_TIMEOUT_S) == 0, team.log_text()[-3000:]

        def serving() -> dict[str, Any] | None:
            if not daemon and process.poll() is not None:
                out = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"{name} exited with {process.returncode}:\n"
                                     f"{team.log_text()[-3000:]}\n{out}")
            try:
                info = json.loads(server.read_text())
            except (OSError, ValueError):
                return None
            return info if info.get("pid") == team.pid else None

        team.info = poll_until(serving, f"{name} to serve", START_TIMEOUT_S)
        return team

    def execs(self) -> list[dict[str, Any]]:
        path = self.data / "execs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def starts(self) -> Counter[str]:
        """How many execs started, per ref."""
        return Counter(e["ref"] for e in self.execs() if e["phase"] == "start")

    def release(self, name: str) -> None:
        (self.data / f"release-{name}").write_text("")

    def started_pid(self, name: str, timeout_s: float = 60.0) -> int:
        path = self.data / f"started-{name}"
        started = poll_until(
            lambda: path.exists() and path.read_text(), f"slow/{name} to start", timeout_s
        )
        return int(started)


@pytest.fixture
def cluster(tmp_path: Path, pg_schema: str) -> Iterator[Cluster]:
    data = tmp_path / "data"
    data.mkdir()
    team = Cluster(tmp_path, pg_schema, data)
    yield team
    for service in team.started:
        service.stop()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """A proxy in front of PostgreSQL (``proxy.uri(cluster.event_log)`` goes through it)."""
    proxy = Proxy(("127.0.0.1", 5432))
    yield proxy
    if not proxy.closed:
        proxy.cut()
