"""The workspace and its service's files: finding, judging and cleaning them, and launching
twistd (SPEC §6). Plain blocking code with no Twisted in it, so that ``main`` can launch the
service before it loads Twisted (the service boots while the client loads).

Service state lives in ``<workspace>/.databuild/``: ``server.json`` (written by a listening
service), ``twistd.pid`` (written by twistd), ``service.log`` and ``start.lock``.

Staleness. Both files carry a pid, and a pid alone proves nothing: after a crash or a reboot
the number may belong to any other process. A process is taken for the one that wrote a file
only if it is alive, runs ``twistd ... databuild``, and started at a time that fits the file:

- twistd writes ``twistd.pid`` right after forking the daemon, so the daemon started at most a
  few seconds before the file's mtime and never after it (``PIDFILE_WINDOW_S``);
- the service writes ``server.json`` once listening, so it started before ``started_at``;
- it serves this workspace (``server.json`` names it; the process was given it with
  ``--workspace``, or works in it): a copied workspace's files name another's service.

Start times come from ``/proc/<pid>/stat`` (clock ticks since boot plus ``btime``), which is
exact to about a second, hence ``CLOCK_SLACK_S``. A file whose process fails these tests is
stale and removed before a new service starts (twistd itself would refuse to start over a
pidfile naming a live process).

Concurrency. Starting happens under an exclusive ``flock`` on ``start.lock``; whoever gets it
looks again for a live service before starting one, so concurrent CLIs start one service.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from databuild.cli.exits import UNAVAILABLE, USAGE, CliError
from databuild.proc.info import command_line, started_at, working_directory
from databuild.startup import CLIENT_SECRETS, GRAPH_FILE, without

STATE_DIR = ".databuild"
SERVER_JSON = "server.json"
PIDFILE = "twistd.pid"
LOGFILE = "service.log"
LOCKFILE = "start.lock"

PIDFILE_WINDOW_S = 10.0
CLOCK_SLACK_S = 2.0
POLL_S = 0.02
START_DEADLINE_S = 30.0
LOCK_DEADLINE_S = 60.0
LOG_TAIL_LINES = 20

Say = Callable[[str], None]


def resolve_workspace(flag: str | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """``--workspace``, else ``DATABUILD_WORKSPACE``, else the nearest ancestor holding
    ``databuild.toml`` (SPEC §2). The service is always told its workspace, so only the
    CLI searches for one.
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
    """The workspace's ``.databuild`` directory."""
    return workspace / STATE_DIR


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_pid(path: Path) -> int | None:
    """The pid a pidfile names, or None if it is missing or names none."""
    try:
        text = path.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def runs_service(pid: int, workspace: Path) -> bool:
    """Does ``pid`` run ``twistd ... databuild`` for ``workspace`` (its ``--workspace``, else
    the directory it works in)? A copy of a workspace holds its original's files naming the
    original's live service, which serves the copy no more than a stranger would. (A process
    whose directory cannot be read, another user's, is taken at its word, as before.)"""
    argv = command_line(pid)
    if not (any(Path(a).name == "twistd" for a in argv) and "databuild" in argv):
        return False
    served = ""
    options = argv[argv.index("databuild") + 1 :]
    for i, option in enumerate(options):
        if option == "--workspace" and i + 1 < len(options):
            served = options[i + 1]
        elif option.startswith("--workspace="):
            served = option.partition("=")[2]
    if not os.path.isabs(served):
        cwd = working_directory(pid)
        if cwd is None:
            return True
        served = os.path.join(cwd, served)
    return same_dir(served, workspace)


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
    return pid if runs_service(pid, pidfile.parent.parent) else None


def server_json_owner(info: Mapping[str, Any], workspace: Path) -> int | None:
    """The pid in ``server.json`` if that process is still the service that wrote it, and
    serves ``workspace`` (the file names it: a copied workspace's names the original)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not same_dir(info.get("workspace"), workspace):
        return None
    start = started_at(pid)
    listening = to_seconds(info.get("started_at"))
    if start is None or (listening is not None and start > listening + CLOCK_SLACK_S):
        return None
    return pid if runs_service(pid, workspace) else None


def clean_stale(state: Path) -> list[str]:
    """Remove ``server.json`` and ``twistd.pid`` if the processes they name are gone or are
    someone else; returns the names of the files removed."""
    removed = []
    info = read_json_file(state / SERVER_JSON)
    if (state / SERVER_JSON).exists() and (
        info is None or server_json_owner(info, state.parent) is None
    ):
        removed.append(SERVER_JSON)
    if (state / PIDFILE).exists() and pidfile_owner(state / PIDFILE) is None:
        removed.append(PIDFILE)
    for name in removed:
        (state / name).unlink(missing_ok=True)
    return removed


def log_tail(path: Path, offset: int = 0) -> str:
    """The last LOG_TAIL_LINES lines of ``path`` written after byte ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def same_dir(a: object, b: Path) -> bool:
    """Whether ``a`` is a path string naming the directory ``b``."""
    return isinstance(a, str) and os.path.realpath(a) == os.path.realpath(b)


def nothing_runs(state: Path) -> bool:
    """Neither file names a live service process (no network involved)."""
    info = read_json_file(state / SERVER_JSON)
    return (info is None or server_json_owner(info, state.parent) is None) and (
        pidfile_owner(state / PIDFILE) is None
    )


def try_lock(state: Path) -> int | None:
    """The exclusive start lock as an open descriptor, or None while another process holds it."""
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / LOCKFILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Launch:
    """A twistd launcher on its way: it exits once the daemon it forked has started."""

    def __init__(self, process: subprocess.Popen[bytes], output: IO[bytes], offset: int) -> None:
        self.process = process
        self.output = output
        self.log_offset = offset
        """Where ``service.log`` ended before this start."""

    def said(self) -> str:
        """What twistd printed (usage errors, start failures)."""
        self.output.seek(0)
        return self.output.read().decode(errors="replace").strip()

    def close(self) -> None:
        """Close the file holding twistd's output."""
        self.output.close()


_DAEMON_REPORT = re.compile(r"An error has occurred: (b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")")
"""How twistd's launcher reports a daemon that did not start: the first bytes of its reason."""


def start_failure(said: str, log: str) -> tuple[str | None, str]:
    """Why a service did not start, from what twistd ``said`` and the end of its ``log``: the
    one sentence naming the problem (None if twistd said nothing), and what else twistd said.

    A setting's error is twistd's last line. A daemon's start failure comes through twistd's
    status pipe, cut after 98 bytes; the line of the log holding it gives it whole.
    """
    lines = [line for line in said.splitlines() if line.strip()]
    if not lines:
        return None, ""
    report = _DAEMON_REPORT.search(said)
    if report is None:
        return lines[-1].removeprefix("twistd databuild: "), "\n".join(lines[:-1])
    cut = ast.literal_eval(report.group(1)).decode("utf-8", "replace")
    whole = next((line[line.index(cut):] for line in log.splitlines() if cut in line), cut)
    return whole, ""


def launch(workspace: Path, environ: Mapping[str, str], say: Say) -> Launch:
    """Remove stale files, then run twistd for ``workspace`` in a session of its own (with this
    environment less the client's secrets); call with the start lock held."""
    state = state_dir(workspace)
    for name in clean_stale(state):
        say(f"removed stale {STATE_DIR}/{name}")
    log = state / LOGFILE
    offset = log.stat().st_size if log.exists() else 0
    twistd = Path(sys.executable).parent / "twistd"
    argv = [
        str(twistd), "--pidfile", str(state / PIDFILE), "--logfile", str(log),
        "databuild", "--workspace", str(workspace),
    ]  # fmt: skip
    say(f"starting the DataBuild service for {workspace}")
    output = tempfile.TemporaryFile()  # noqa: SIM115 - Launch.close() closes it
    try:
        process = subprocess.Popen(
            argv, cwd=workspace, env=without(environ, CLIENT_SECRETS), stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        output.close()
        raise CliError(f"cannot run {twistd}: {e.strerror}", UNAVAILABLE) from None
    return Launch(process, output, offset)


def prestart(workspace: Path, environ: Mapping[str, str], say: Say) -> tuple[int, Launch] | None:
    """If plainly no service runs and no other CLI is starting one, take the start lock and
    launch twistd now; returns the lock and the launch. Otherwise None, and the asynchronous
    path (health checks, waiting for the lock) decides."""
    state = state_dir(workspace)
    if not nothing_runs(state):
        return None
    lock = try_lock(state)
    if lock is None:
        return None
    try:
        if nothing_runs(state):
            return lock, launch(workspace, environ, say)
    except BaseException:
        os.close(lock)
        raise
    os.close(lock)
    return None
