"""What ``/proc`` says about a process: is it alive, when did it start, what does it run.

A pid names a process only for its lifetime; the kernel reuses numbers. A pid together with
the process's start time names it for good, which is how the service tells its own orphaned
job processes, and the CLI its live service, from strangers that inherited their numbers.
Standard library only: the CLI imports this before Twisted.
"""

from __future__ import annotations

import os
import time

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_CHUNK = 4096


def _read(path: str, *, whole: bool = False) -> bytes | None:
    """A small file such as ``/proc``'s (its first 4 KiB unless ``whole``), or None if it
    cannot be read.

    ``os.open`` and ``os.read``: a few system calls, where a Python file object makes several
    more (the service reads these on the reactor thread for every job)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _CHUNK)
        if whole and data:
            chunks = [data]
            while chunk := os.read(fd, _CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after it do not.
    end = stat.rfind(b")")
    return None if end == -1 else stat[end + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if there is no such process.

    Together with the pid it names a process for good: a reused pid has a later start time.
    """
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


def boot_ticks() -> int:
    """Now, in clock ticks since boot: the clock of a process's start time in ``/proc``."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * _CLOCK_TICKS // 1_000_000_000


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie waiting to be reaped runs nothing and counts as gone."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def boot_time() -> float:
    """The machine's boot time, Unix seconds (``btime`` in ``/proc/stat``)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def started_at(pid: int) -> float | None:
    """When a live (not zombie) process ``pid`` started, Unix seconds (±1 s), else None."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None
    return boot_time() + int(fields[19]) / _CLOCK_TICKS


def command_line(pid: int) -> list[str]:
    """The arguments process ``pid`` runs with (empty if unknown)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def working_directory(pid: int) -> str | None:
    """The directory process ``pid`` works in (None if unknown)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """The children of ``pid``'s main thread (a process's children started by other threads,
    or reparented to another, are not listed); empty if unknown."""
    listed = _read(f"/proc/{pid}/task/{pid}/children", whole=True)
    return [int(child) for child in listed.split()] if listed else []


def environment_holds(pid: int, entry: bytes) -> bool | None:
    """Whether ``pid``'s environment holds ``entry`` (``NAME=value``); None if that cannot be
    told now: the environment cannot be read (another user's process, gone) or is empty, as
    it is for a moment while the process runs ``execve``."""
    environ = _read(f"/proc/{pid}/environ", whole=True)
    return entry in environ.split(b"\0") if environ else None
