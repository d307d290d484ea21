"""Records of running job process groups, and reaping the ones a dead service left (SPEC §5.3).

Each executor keeps a journal in ``.databuild/running/``: one file, named for its service,
that starts with a line naming the service and its host, then gets a line when a run's
process group starts (its leader's pid and start time) and a line when it ends. A service
that starts after a crash reads these files; it touches only the journals of this host whose
service is dead (several services may share one workspace directory), and a group is
signalled only if its leader still has the recorded start time, so a reused pid is never hit.

One open file and one ``write`` per start and end: a file per run, created and removed, cost
each run four system calls and two directory updates (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from attrs import asdict, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from databuild.jsontext import compact_utf8
from databuild.proc.info import alive, start_ticks, stat_fields
from databuild.proc.process import DEFAULT_GRACE_S, kill_group

RUNNING_DIR = "running"
JOURNAL_SUFFIX = ".jsonl"
COMPACT_LINES = 1024
"""Lines written to a journal before it is rewritten with only the runs still running."""
_POLL_S = 0.05
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

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


@frozen
class RecordFile:
    """One file of the running directory and the groups it says still run.

    ``owner`` is the ``(service_id, host)`` that wrote it, or None for a file that is not a
    journal or a record (which nobody owns, so it is removed like a dead service's).
    """

    path: Path
    owner: tuple[str, str] | None
    records: tuple[RunningRecord, ...]


class RunningJournal:
    """One executor's journal of running groups, written on the reactor thread.

    Writes are appends of one line each, with no fsync: the journal only has to outlive the
    service, not the machine. A service killed in the middle of a line leaves a torn last
    line, which readers ignore like a run killed just before its start was recorded.
    """

    def __init__(self, running_dir: Path, service_id: str, host: str) -> None:
        name = f"{service_id or 'executor'}-{secrets.token_hex(4)}{JOURNAL_SUFFIX}"
        self.path = running_dir / name
        self._header = _line({"service_id": service_id, "host": host})
        self._fd: int | None = None
        self._lines = 0
        self.live: dict[str, RunningRecord] = {}
        """The runs started and not yet ended, by job run id."""

    def started(self, record: RunningRecord) -> None:
        """Record a group that has started (raises OSError if it cannot be written)."""
        if self._fd is None:
            self._fd = self._open(self.path)
        self._write(_started(record))
        self.live[record.job_run_id] = record

    def ended(self, job_run_id: str) -> None:
        """Record that a run's group has ended (raises OSError if it cannot be written)."""
        if self.live.pop(job_run_id, None) is None or self._fd is None:
            return
        self._write(_line({"ended": job_run_id}))
        if self._lines >= COMPACT_LINES:
            self._compact()

    def close(self) -> None:
        """Close the journal; remove it if no run is left in it."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if not self.live:
            self.path.unlink(missing_ok=True)

    def _open(self, path: Path) -> int:
        """A new file at ``path`` holding the header and the live runs."""
        try:
            fd = os.open(path, _FLAGS, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _FLAGS, 0o644)
        try:
            os.write(fd, b"".join([self._header, *map(_started, self.live.values())]))
        except OSError:
            os.close(fd)
            raise
        self._lines = 1 + len(self.live)
        return fd

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        os.write(self._fd, data)
        self._lines += 1

    def _compact(self) -> None:
        """Rewrite the journal with only the live runs; ``os.replace`` makes it atomic."""
        assert self._fd is not None
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = self._open(temporary)
        try:
            os.replace(temporary, self.path)
        except OSError:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd


def _started(record: RunningRecord) -> bytes:
    return _line({"started": asdict(record, recurse=False)})


def _line(data: object) -> bytes:
    return compact_utf8(data) + b"\n"


def _record(data: dict[str, object]) -> RunningRecord:
    return RunningRecord(
        job_run_id=str(data["job_run_id"]),
        build_request_id=str(data["build_request_id"]),
        pid=int(data["pid"]),  # type: ignore[call-overload]
        start_time=int(data["start_time"]),  # type: ignore[call-overload]
        service_id=str(data.get("service_id", "")),
        host=str(data.get("host", "")),
    )


def _read_journal(path: Path) -> RecordFile:
    lines = path.read_bytes().split(b"\n")
    try:
        header = json.loads(lines[0])
        owner = (str(header["service_id"]), str(header["host"]))
    except (ValueError, KeyError, TypeError):
        return RecordFile(path, None, ())
    live: dict[str, RunningRecord] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            if "started" in entry:
                record = _record(entry["started"])
                live[record.job_run_id] = record
            else:
                live.pop(str(entry["ended"]), None)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line, or an empty one
    return RecordFile(path, owner, tuple(live.values()))


def _read_single(path: Path) -> RecordFile:
    """A record of one run, as services before the journal wrote them."""
    try:
        record = _record(json.loads(path.read_bytes()))
    except (ValueError, KeyError, TypeError):
        return RecordFile(path, None, ())
    return RecordFile(path, (record.service_id, record.host), (record,))


def read_records(running_dir: Path) -> list[RecordFile]:
    """Every file of the running directory, with the groups it says still run."""
    found: list[RecordFile] = []
    paths = [*running_dir.glob("*.json"), *running_dir.glob(f"*{JOURNAL_SUFFIX}")]
    for path in sorted(paths):
        reader = _read_journal if path.suffix == JOURNAL_SUFFIX else _read_single
        try:
            found.append(reader(path))
        except OSError:
            continue  # removed meanwhile by its service
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


def orphaned(found: RecordFile, owner_dead: Callable[[str], bool]) -> bool:
    """Whether a file is this host's and its service is dead (or nobody's: unreadable)."""
    if found.owner is None:
        return True
    service_id, host = found.owner
    return host in ("", socket.gethostname()) and owner_dead(service_id)


async def _groups_gone(
    reactor: IReactorTime, records: list[RunningRecord], timeout_s: float
) -> bool:
    """Wait until no process is left in the records' groups, ``timeout_s`` at most."""
    waited = 0.0
    while any(group_has_members(r.pid) for r in records):
        if waited >= timeout_s:
            return False
        await deferLater(reactor, _POLL_S, lambda: None)
        waited += _POLL_S
    return True


async def reap_orphans(
    reactor: IReactorTime,
    running_dir: Path,
    owner_dead: Callable[[str], bool] = lambda _: True,
    grace_s: float = DEFAULT_GRACE_S,
) -> list[RunningRecord]:
    """Terminate the groups of dead services whose recorded leader still runs; clear their files.

    ``owner_dead(service_id)`` says whether a file's service is dead; files of live services,
    and of other hosts, are left alone. SIGTERM first; a group whose leader is still there
    after ``grace_s`` gets SIGKILL, and is waited for (``grace_s`` more at most). Returns the
    records of the groups that were signalled.
    """
    reaped: list[RunningRecord] = []
    mine = [found for found in read_records(running_dir) if orphaned(found, owner_dead)]
    for found in mine:
        if found.owner is None:
            log.warn("ignoring unreadable running-process record {path}", path=str(found.path))
        for record in found.records:
            if _leader_alive(record):
                log.info(
                    "terminating orphaned job run {job_run_id} (process group {pid})",
                    job_run_id=record.job_run_id,
                    pid=record.pid,
                )
                kill_group(record.pid, signal.SIGTERM)
                reaped.append(record)
    await _groups_gone(reactor, reaped, grace_s)
    for record in reaped:
        # The leader was verified above; the kernel does not hand out a pid that is still some
        # group's id, so members left in the group are still that job's processes.
        if group_has_members(record.pid):
            kill_group(record.pid, signal.SIGKILL)
    if not await _groups_gone(reactor, reaped, grace_s):
        log.error("job process groups {pids} outlived SIGKILL", pids=[r.pid for r in reaped])
    for found in mine:
        found.path.unlink(missing_ok=True)
        found.path.with_name(found.path.name + ".tmp").unlink(missing_ok=True)
    return reaped
