"""The tether's watchdog process: ``python -m databuild.proc.watchdog``.

Holds the process groups given as arguments, then reads ``+PGID`` and ``-PGID`` lines on
stdin, the groups its service holds and releases; when stdin ends, which happens whenever
the service's process ends, however it ends, it sends SIGKILL to every group it still holds,
and exits. It ignores the signals a terminal or a group kill sends, so that it outlives its
service long enough to do so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterable


def held_groups(held: set[int], lines: Iterable[bytes]) -> set[int]:
    """The groups ``held`` and ``lines`` leave held."""
    for line in lines:
        sign, pgid = line[:1], int(line[1:])
        if sign == b"+":
            held.add(pgid)
        else:
            held.discard(pgid)
    return held


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for pgid in held_groups(set(map(int, sys.argv[1:])), sys.stdin.buffer):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
