"""Running the real service: ``twistd -n ... databuild`` as a child process, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import treq
from attrs import define, field
from tests.conftest import BIN, installed
from tests.polling import poll_until
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

SLOW_JOB = '''\
"""Job ``slow``: the run for ``slow/NAME`` writes pids/NAME, then waits for release-NAME."""
import json, os, sys, time
if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r]} for r in sys.argv[2:]]}))
    sys.exit(0)
name = sys.argv[2].split("/")[1]
workspace = os.environ["DATABUILD_WORKSPACE"]
with open(os.path.join(workspace, "pids", name), "w") as f:
    f.write(str(os.getpid()))
while not os.path.exists(os.path.join(workspace, f"release-{name}")):
    time.sleep(0.05)
print("released", flush=True)
'''

LASTING_JOB = '''\
"""Job ``lasting``: the run for ``lasting/NAME`` takes SECONDS s, then writes done-NAME."""
import json, os, sys, time
if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r]} for r in sys.argv[2:]]}))
    sys.exit(0)
name = sys.argv[2].split("/")[1]
time.sleep(SECONDS)
open(os.path.join(os.environ["DATABUILD_WORKSPACE"], f"done-{name}"), "w").close()
'''


def free_port() -> int:
    """A port nobody listens on now (for a test that names the service's port itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_slow_job(workspace: Path) -> Path:
    """Add the job ``slow``: its run for ``slow/NAME`` waits for ``<workspace>/release-NAME``."""
    (workspace / "jobs" / "slow.py").write_text(SLOW_JOB)
    (workspace / "pids").mkdir()
    with (workspace / "databuild.toml").open("a") as f:
        f.write(
            '\n[[jobs]]\nlabel = "slow"\noutputs = [\'slow/[a-z0-9]+\']\n'
            'command = ["python3", "jobs/slow.py"]\n'
        )
    return workspace


def with_lasting_job(workspace: Path, seconds: float) -> Path:
    """Add the job ``lasting``: its run for ``lasting/NAME`` takes ``seconds``, then writes
    ``<workspace>/done-NAME``. For a test that needs a run to outlast some timeout of the
    service while the test leaves the service alone (any request would reset its idle timer)."""
    (workspace / "jobs" / "lasting.py").write_text(LASTING_JOB.replace("SECONDS", repr(seconds)))
    with (workspace / "databuild.toml").open("a") as f:
        f.write(
            '\n[[jobs]]\nlabel = "lasting"\noutputs = [\'lasting/[a-z0-9]+\']\n'
            'command = ["python3", "jobs/lasting.py"]\n'
        )
    return workspace


@define
class Service:
    """A running ``twistd databuild`` and what it wrote."""

    workspace: Path
    process: subprocess.Popen[bytes]
    info: dict[str, Any] = field(factory=dict)

    @property
    def state(self) -> Path:
        return self.workspace / ".databuild"

    @property
    def server_file(self) -> Path:
        return self.state / "server.json"

    @property
    def pid_file(self) -> Path:
        return self.state / "twistd.pid"

    @property
    def log_file(self) -> Path:
        return self.state / "service.log"

    @property
    def url(self) -> str:
        return self.info["url"]

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.info['token']}"}

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def wait_started(self) -> None:
        def started() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
                    f"\n{self.process.stdout.read().decode() if self.process.stdout else ''}"
                )
            try:
                info = json.loads(self.server_file.read_text())
            except (OSError, ValueError):
                return None
            return info if info.get("pid") == self.process.pid else None

        self.info = poll_until(started, "server.json", START_TIMEOUT_S)

    def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"service did not exit:\n{self.log_text()[-3000:]}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(workspace: Path, *args: str, env: dict[str, str] | None = None) -> Service:
    """Start ``twistd -n databuild`` on ``workspace`` and wait until it wrote server.json.

    Unless ``args`` name a port, the service takes any free one (``--port 0``).
    """
    state = workspace / ".databuild"
    state.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    # Jobs run "python3": make that the venv's interpreter rather than a slow shim.
    environ["PATH"] = f"{BIN}{os.pathsep}{environ.get('PATH', '')}"
    environ.update(env or {})
    if "--port" not in args:
        args = ("--port", "0", *args)
    command = [
        installed("twistd"), "-n",
        "--pidfile", str(state / "twistd.pid"),
        "--logfile", str(state / "service.log"),
        "databuild", "--workspace", str(workspace), *args,
    ]
    process = subprocess.Popen(
        command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workspace
    )
    service = Service(workspace, process)
    try:
        service.wait_started()
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture
def service_factory() -> Iterator[Any]:
    """Starts services; every one still running at the end is stopped."""
    started: list[Service] = []

    def start(workspace: Path, *args: str, env: dict[str, str] | None = None) -> Service:
        service = start_service(workspace, *args, env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def slow_workspace(color_votes: Path) -> Path:
    return with_slow_job(color_votes)


# --- talking to it (inside the reactor) -------------------------------------------------------


async def call(
    service: Service,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    auth: bool = True,
    data: bytes | None = None,
) -> tuple[int, Any]:
    """One API call; the status and the decoded JSON answer."""
    headers = service.headers(token) if auth else {}
    if body is not None:
        data = json.dumps(body).encode()
    response = await treq.request(method, service.url + path, headers=headers, data=data)
    content = await response.content()
    assert response.headers.getRawHeaders("content-type") == ["application/json; charset=utf-8"]
    return response.code, json.loads(content)


@define
class Frame:
    id: int | None
    event: str | None
    data: Any


class StreamReader(Protocol):
    """Reads a progress stream frame by frame; can disconnect after ``stop_after`` frames."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.frames: list[Frame] = []
        self.comments: list[str] = []
        self.done: Deferred[list[Frame]] = Deferred()
        self._buffer = b""
        self._stop_after = stop_after
        self.first_frame: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            self._block(block.decode("utf-8"))
        if self._stop_after is not None and len(self.frames) >= self._stop_after:
            self._stop_after = None
            self.transport.stopProducing()

    def _block(self, block: str) -> None:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            self.frames.append(
                Frame(
                    int(fields["id"]) if "id" in fields else None,
                    fields.get("event"),
                    json.loads(fields["data"]),
                )
            )
            if not self.first_frame.called:
                self.first_frame.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(self.frames)


async def open_stream(
    service: Service,
    build_id: str,
    *,
    stop_after: int | None = None,
    last_event_id: int | None = None,
    query: str = "",
) -> tuple[Any, StreamReader]:
    headers = service.headers()
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await treq.get(
        f"{service.url}/api/v1/cli/builds/{build_id}/progress{query}",
        headers=headers,
        unbuffered=True,
    )
    reader = StreamReader(stop_after)
    response.deliverBody(reader)
    return response, reader


async def read_stream(service: Service, build_id: str, **kwargs: Any) -> list[Frame]:
    response, reader = await open_stream(service, build_id, **kwargs)
    assert response.code == 200
    return await reader.done


def python() -> str:
    return sys.executable
