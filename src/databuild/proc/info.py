"""What ``/proc`` says about a process: is it alive, when did it start, what does it run.

A pid names a process only for its lifetime; the kernel reuses numbers. A pid together with
the process's start time names it for good, which is how the service tells its own orphaned
job processes, and the CLI its live service, from strangers that inherited their numbers.
Standard library only: the CLI imports this before Twisted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    # os.open and one read: a few syscalls, where a Python file object makes several more
    # (the service runs this on the reactor thread for every job).
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name (field 2) may hold spaces and parentheses; fields after it do not.
    end = stat.rfind(b")")
    return None if end == -1 else stat[end + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if there is no such process.

    Together with the pid it names a process for good: a reused pid has a later start time.
    """
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


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


def processes_with_env(
    entries: Collection[str], since: Collection[int] | None = None
) -> dict[str, list[int]]:
    """The live processes of this user whose environment holds each of ``entries``
    (``NAME=value``), in one pass over ``/proc``; entries no process holds are left out.

    With ``since``, only processes whose pid was handed out after one of those pids are read:
    the caller knows that what it looks for started after that pid's process did, less than
    a cycle of pid numbers ago. Only this user's processes can be read; the caller's own
    process is never named.
    """
    wanted = {entry.encode(): entry for entry in entries}
    uid, me = os.getuid(), os.getpid()
    last = last_pid() if since else None
    newer = None if since is None or last is None else handed_out_after(since, last)
    found: dict[str, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me or (newer is not None and not newer(pid)):
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        held = [wanted[e] for e in environ.split(b"\0") if e in wanted]
        if held and alive(pid):
            for entry in held:
                found.setdefault(entry, []).append(pid)
    return found


def last_pid() -> int | None:
    """The pid the kernel handed out last, or None if it does not say."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def handed_out_after(pids: Collection[int], last: int) -> Callable[[int], bool]:
    """Whether a pid was handed out after one of ``pids``, ``last`` being the last one handed
    out: pids go up, then wrap around (less than a whole cycle is assumed to have passed)."""

    def after(pid: int, since: int) -> bool:
        if since <= last:
            return since < pid <= last
        return pid > since or pid <= last  # the numbers wrapped since

    return lambda pid: any(after(pid, since) for since in pids)
