"""Records of running job process groups, and reaping the ones a dead service left (SPEC §5.3).

While a job run's process group runs, ``.databuild/running/<job_run_id>.json`` holds its leader's
pid and start time, and the host and service that started it. A service that starts after a
crash finds these records; it touches only those of this host whose service is dead (several
services may share one workspace directory), and a group is signalled only if its leader still
has the recorded start time, so a reused pid is never hit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from attrs import asdict, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from databuild.proc.info import alive, start_ticks, stat_fields
from databuild.proc.process import DEFAULT_GRACE_S, kill_group

RUNNING_DIR = "running"
_POLL_S = 0.05

log = Logger()


@frozen
class RunningRecord:
    """A job run's process group as recorded while it runs."""

    job_run_id: str
    build_request_id: str
    pid: int
    start_time: int
    service_id: str = ""
    """The service that started it; empty in records of services older than schema 5."""
    host: str = ""


def write_record(running_dir: Path, record: RunningRecord) -> Path:
    """Record a running group, in one write to a new file.

    No temporary file and no fsync: the record only has to outlive the service, not the
    machine, and a killed service leaves a whole record or, if killed between creating the
    file and writing it, an empty one, which ``reap_orphans`` ignores like a run killed just
    before its record was written.
    """
    path = running_dir / f"{record.job_run_id}.json"
    data = json.dumps(asdict(record, recurse=False)).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        running_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def read_records(running_dir: Path) -> list[tuple[Path, RunningRecord | None]]:
    """Every record file with its record, or None for a file that is not a valid record."""
    found: list[tuple[Path, RunningRecord | None]] = []
    for path in sorted(running_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            record = RunningRecord(
                job_run_id=str(data["job_run_id"]),
                build_request_id=str(data["build_request_id"]),
                pid=int(data["pid"]),
                start_time=int(data["start_time"]),
                service_id=str(data.get("service_id", "")),
                host=str(data.get("host", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            record = None
        found.append((path, record))
    return found


def _leader_alive(record: RunningRecord) -> bool:
    """Whether the recorded leader still runs (same pid, same start time, not a zombie)."""
    return start_ticks(record.pid) == record.start_time and alive(record.pid)


def group_has_members(pgid: int) -> bool:
    """Whether some live process (not a zombie) belongs to process group ``pgid``."""
    group = str(pgid).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and fields[0] != b"Z" and fields[2] == group:
                return True
    return False


def orphaned(record: RunningRecord | None, owner_dead: Callable[[str], bool]) -> bool:
    """Whether a record (None: unreadable) is this host's and its service is dead."""
    if record is None:
        return True
    return record.host in ("", socket.gethostname()) and owner_dead(record.service_id)


async def reap_orphans(
    reactor: IReactorTime,
    running_dir: Path,
    owner_dead: Callable[[str], bool] = lambda _: True,
    grace_s: float = DEFAULT_GRACE_S,
) -> list[RunningRecord]:
    """Terminate the groups of dead services whose recorded leader still runs; clear their records.

    ``owner_dead(service_id)`` says whether a record's service is dead; records of live
    services, and of other hosts, are left alone. SIGTERM first; a group whose leader is still
    there after ``grace_s`` gets SIGKILL. Returns the records of the groups that were signalled.
    """
    reaped: list[RunningRecord] = []
    mine = [(p, r) for p, r in read_records(running_dir) if orphaned(r, owner_dead)]
    for path, record in mine:
        if record is not None and _leader_alive(record):
            log.info(
                "terminating orphaned job run {job_run_id} (process group {pid})",
                job_run_id=record.job_run_id,
                pid=record.pid,
            )
            kill_group(record.pid, signal.SIGTERM)
            reaped.append(record)
        elif record is None:
            log.warn("ignoring unreadable running-process record {path}", path=str(path))
    waited = 0.0
    while any(group_has_members(r.pid) for r in reaped) and waited < grace_s:
        await deferLater(reactor, _POLL_S, lambda: None)
        waited += _POLL_S
    for record in reaped:
        # The leader was verified above; the kernel does not hand out a pid that is still some
        # group's id, so members left in the group are still that job's processes.
        if group_has_members(record.pid):
            kill_group(record.pid, signal.SIGKILL)
    for path, _ in mine:
        path.unlink(missing_ok=True)
    return reaped


def remove_record(path: Path) -> None:
    """Forget a group that has ended."""
    path.unlink(missing_ok=True)

