"""The tether's watchdog process: ``python -m databuild.proc.watchdog``.

Holds the process groups given as arguments, then reads ``+PGID`` and ``-PGID`` lines on
stdin, the groups its service holds and releases; when stdin ends, which happens whenever
the service's process ends, however it ends, it sends SIGKILL to every group it still holds,
and exits. It ignores the signals a terminal or a group kill sends, so that it outlives its
service long enough to do so.

A line need not wake it: what the service wrote stays in the pipe after the service is gone.
It sleeps until the pipe's last writer is gone (``poll`` for no event wakes on hang-up alone)
or ``DRAIN_S`` have passed, then reads what came, so the pipe never fills. A service that
starts hundreds of jobs a second so wakes it ten times a second, not twice a job.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Iterable, Iterator

DRAIN_S = 0.1
"""How long the watchdog sleeps between reads of its pipe while the service lives."""
_CHUNK = 65536


def held_groups(held: set[int], lines: Iterable[bytes]) -> set[int]:
    """The groups ``held`` and ``lines`` leave held."""
    for line in lines:
        sign, pgid = line[:1], int(line[1:])
        if sign == b"+":
            held.add(pgid)
        else:
            held.discard(pgid)
    return held


def lines_until_hang_up(fd: int) -> Iterator[bytes]:
    """The lines written to the pipe ``fd`` until its last writer closes it, read every
    ``DRAIN_S`` and once that writer is gone."""
    os.set_blocking(fd, False)
    hang_up = select.poll()
    hang_up.register(fd, 0)
    rest = b""
    while True:
        hang_up.poll(DRAIN_S * 1000)
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                return  # a torn last line is no line: the service died writing it
            *lines, rest = (rest + chunk).split(b"\n")
            yield from lines


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    held = held_groups(set(map(int, sys.argv[1:])), lines_until_hang_up(sys.stdin.fileno()))
    for pgid in held:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
