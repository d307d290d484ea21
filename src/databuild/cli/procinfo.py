"""What ``/proc`` says about a process: is it alive, when did it start, what does it run.

A pid names a process only for its lifetime; the kernel reuses numbers. A pid together with
the process's start time names it for good, which is how the CLI tells a live service from a
stranger that inherited its number.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def boot_time() -> float:
    """The machine's boot time, Unix seconds (``btime`` in ``/proc/stat``)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def started_at(pid: int) -> float | None:
    """When process ``pid`` started, Unix seconds (±1 s), or None if there is no such process.

    Zombies count as gone: they run nothing and only wait to be reaped.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return boot_time() + int(fields[19]) / _CLOCK_TICKS


def command_line(pid: int) -> list[str]:
    """The arguments process ``pid`` runs with (empty if unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def alive(pid: int) -> bool:
    return started_at(pid) is not None
