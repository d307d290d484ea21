"""Finding the workspace and its service, and starting the service when none answers (SPEC §6).

Service state lives in ``<workspace>/.databuild/``: ``server.json`` (written by a listening
service), ``twistd.pid`` (written by twistd), ``service.log`` and ``start.lock``.

Staleness. Both files carry a pid, and a pid alone proves nothing: after a crash or a reboot
the number may belong to any other process. A process is taken for the one that wrote a file
only if it is alive, runs ``twistd ... databuild``, and started at a time that fits the file:

- twistd writes ``twistd.pid`` right after forking the daemon, so the daemon started at most a
  few seconds before the file's mtime and never after it (``PIDFILE_WINDOW_S``);
- the service writes ``server.json`` once listening, so it started before ``started_at``.

Start times come from ``/proc/<pid>/stat`` (clock ticks since boot plus ``btime``), which is
exact to about a second, hence ``CLOCK_SLACK_S``. A file whose process fails these tests is
stale and removed before a new service starts (twistd itself would refuse to start over a
pidfile naming a live process).

Concurrency. Starting happens under an exclusive ``flock`` on ``start.lock``; whoever gets it
looks again for a live service before starting one, so concurrent CLIs start one service.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from attrs import frozen
from twisted.internet.task import deferLater

from databuild.cli.client import HEALTH_TIMEOUT_S, ApiClient
from databuild.cli.exits import UNAVAILABLE, USAGE, CliError
from databuild.cli.procinfo import command_line, started_at

GRAPH_FILE = "databuild.toml"
STATE_DIR = ".databuild"
SERVER_JSON = "server.json"
PIDFILE = "twistd.pid"
LOGFILE = "service.log"
LOCKFILE = "start.lock"

PIDFILE_WINDOW_S = 10.0
CLOCK_SLACK_S = 2.0
POLL_S = 0.05
START_DEADLINE_S = 30.0
LOCK_DEADLINE_S = 60.0
LOG_TAIL_LINES = 20

Say = Callable[[str], None]


def resolve_workspace(flag: str | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """``--workspace``, else ``DATABUILD_WORKSPACE``, else the nearest ancestor holding
    ``databuild.toml`` (SPEC §2).

    This is ``databuild.graph.workspace.find_workspace``'s walk, kept here because importing
    ``databuild.graph`` loads the whole analysis machinery, which the CLI's start-up cannot
    afford (SPEC §7).
    """
    chosen = flag or environ.get("DATABUILD_WORKSPACE")
    if chosen:
        root = (cwd / chosen).resolve()
        if not (root / GRAPH_FILE).is_file():
            raise CliError(f"{root} is not a workspace: it holds no {GRAPH_FILE}", USAGE)
        return root
    start = cwd.resolve()
    for directory in (start, *start.parents):
        if (directory / GRAPH_FILE).is_file():
            return directory
    raise CliError(
        f"no {GRAPH_FILE} found in {start} or any directory above it; use --workspace DIR", USAGE
    )


def state_dir(workspace: Path) -> Path:
    return workspace / STATE_DIR


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def runs_service(pid: int) -> bool:
    """Does ``pid`` run ``twistd ... databuild``?"""
    argv = command_line(pid)
    return any(Path(a).name == "twistd" for a in argv) and "databuild" in argv


def to_seconds(timestamp: object) -> float | None:
    """A Unix time given in nanoseconds, milliseconds or seconds, as seconds."""
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        return None
    for scale in (1e9, 1e6, 1e3):
        if timestamp > scale * 1e8:
            return timestamp / scale
    return float(timestamp)


def pidfile_owner(pidfile: Path) -> int | None:
    """The pid in ``twistd.pid`` if that process is still the twistd that wrote it."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    start = started_at(pid)
    try:
        written = pidfile.stat().st_mtime
    except OSError:
        return None
    if start is None or not written - PIDFILE_WINDOW_S <= start <= written + CLOCK_SLACK_S:
        return None
    return pid if runs_service(pid) else None


def server_json_owner(info: Mapping[str, Any]) -> int | None:
    """The pid in ``server.json`` if that process is still the service that wrote it."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    start = started_at(pid)
    listening = to_seconds(info.get("started_at"))
    if start is None or (listening is not None and start > listening + CLOCK_SLACK_S):
        return None
    return pid if runs_service(pid) else None


def clean_stale(state: Path) -> list[str]:
    """Remove ``server.json`` and ``twistd.pid`` if the processes they name are gone or are
    someone else; returns the names of the files removed."""
    removed = []
    info = read_json_file(state / SERVER_JSON)
    if (state / SERVER_JSON).exists() and (info is None or server_json_owner(info) is None):
        removed.append(SERVER_JSON)
    if (state / PIDFILE).exists() and pidfile_owner(state / PIDFILE) is None:
        removed.append(PIDFILE)
    for name in removed:
        (state / name).unlink(missing_ok=True)
    return removed


def log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def same_dir(a: object, b: Path) -> bool:
    return isinstance(a, str) and os.path.realpath(a) == os.path.realpath(b)


@frozen
class Service:
    """A service that answered: its client, and its pid when it is a local one."""

    client: ApiClient
    pid: int | None
    health: Mapping[str, Any]
    started: bool = False


class Discovery:
    """Locates (and if asked, starts) the service of one workspace."""

    def __init__(
        self, reactor: Any, workspace: Path | None, environ: Mapping[str, str], say: Say
    ) -> None:
        self.reactor = reactor
        self.workspace = workspace
        self.environ = environ
        self.say = say

    @property
    def state(self) -> Path:
        assert self.workspace is not None
        return state_dir(self.workspace)

    async def locate(self, *, start: bool) -> Service | None:
        """The live service; with ``start``, one is started if none answers."""
        url = self.environ.get("DATABUILD_SERVICE_URL")
        if url:
            client = ApiClient(self.reactor, url, self.environ.get("DATABUILD_SERVICE_TOKEN"))
            health = (await client.get("/api/v1/health", timeout=HEALTH_TIMEOUT_S)).doc
            return Service(client, None, health)
        service = await self.running()
        if service is not None or not start:
            return service
        self.state.mkdir(parents=True, exist_ok=True)
        lock = await self._lock()
        try:
            return await self.running() or await self._start()
        finally:
            os.close(lock)

    async def running(self) -> Service | None:
        """The service ``server.json`` names, if it answers as this workspace's service."""
        info = read_json_file(self.state / SERVER_JSON)
        if info is None or not isinstance(info.get("url"), str):
            return None
        client = ApiClient(self.reactor, info["url"], info.get("token"))
        try:
            health = (await client.get("/api/v1/health", timeout=HEALTH_TIMEOUT_S)).doc
        except CliError:
            return None
        if (
            not isinstance(health, Mapping)
            or health.get("pid") != info.get("pid")
            or not same_dir(health.get("workspace"), self.state.parent)
        ):
            return None
        return Service(client, info["pid"], health)

    async def _lock(self) -> int:
        fd = os.open(self.state / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = self.reactor.seconds() + LOCK_DEADLINE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if self.reactor.seconds() > deadline:
                    os.close(fd)
                    raise CliError(
                        f"another databuild has been starting the service of "
                        f"{self.workspace} for {LOCK_DEADLINE_S:.0f}s; giving up",
                        UNAVAILABLE,
                    ) from None
                await deferLater(self.reactor, POLL_S)

    async def _start(self) -> Service:
        silent = await self._outlive_silent_service()
        if silent is not None:
            return silent
        for name in clean_stale(self.state):
            self.say(f"removed stale {STATE_DIR}/{name}")
        log = self.state / LOGFILE
        offset = log.stat().st_size if log.exists() else 0
        twistd = Path(sys.executable).parent / "twistd"
        argv = [
            str(twistd), "--pidfile", str(self.state / PIDFILE), "--logfile", str(log),
            "databuild", "--workspace", str(self.workspace),
        ]  # fmt: skip
        self.say(f"starting the DataBuild service for {self.workspace}")
        with tempfile.TemporaryFile() as output:
            try:
                launcher = subprocess.Popen(
                    argv, cwd=self.workspace, env=dict(self.environ), stdin=subprocess.DEVNULL,
                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            except OSError as e:
                raise CliError(f"cannot run {twistd}: {e.strerror}", UNAVAILABLE) from None
            return await self._wait_for_start(launcher, output, offset)

    async def _wait_for_start(
        self, launcher: subprocess.Popen[bytes], output: IO[bytes], offset: int
    ) -> Service:
        """Poll until the new service answers; twistd exits once the daemon has started."""
        deadline = self.reactor.seconds() + START_DEADLINE_S
        while self.reactor.seconds() < deadline:
            code = launcher.poll()
            if code:
                output.seek(0)
                said = output.read().decode(errors="replace").strip()
                raise self._failed(f"twistd exited with code {code}", said, offset)
            if (self.state / SERVER_JSON).exists():
                service = await self.running()
                if service is not None:
                    return Service(service.client, service.pid, service.health, started=True)
            if code == 0 and pidfile_owner(self.state / PIDFILE) is None:
                raise self._failed("the service stopped right after starting", "", offset)
            await deferLater(self.reactor, POLL_S)
        raise self._failed(f"it did not answer within {START_DEADLINE_S:.0f}s", "", offset)

    async def _outlive_silent_service(self) -> Service | None:
        """A service process that does not answer (yet) is either starting or stopping: wait
        until it answers or is gone; twistd would refuse to start beside it anyway."""
        pid = pidfile_owner(self.state / PIDFILE)
        deadline = self.reactor.seconds() + START_DEADLINE_S
        while pid is not None and started_at(pid) is not None:
            service = await self.running()
            if service is not None:
                return service
            if self.reactor.seconds() > deadline:
                raise CliError(
                    f"the service (pid {pid}) of {self.workspace} runs but does not answer; "
                    f"see {self.state / LOGFILE}",
                    UNAVAILABLE,
                )
            await deferLater(self.reactor, POLL_S)
        return None

    def _failed(self, why: str, output: str, offset: int) -> CliError:
        parts = [f"the DataBuild service could not start: {why}"]
        if output:
            parts.append(output)
        tail = log_tail(self.state / LOGFILE, offset)
        if tail:
            parts.append(f"--- end of {self.state / LOGFILE} ---\n{tail}")
        return CliError("\n".join(parts), UNAVAILABLE)
