"""databuild.proc.tether: the jobs of a service killed with kill -9 die with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from tests.polling import poll_until, poll_until_async
from twisted.internet import reactor

from databuild.proc.info import alive, command_line
from databuild.proc.process import kill_group, spawn
from databuild.proc.tether import Tether
from databuild.proc.watchdog import held_groups, lines_until_hang_up

TETHERED = Path(__file__).with_name("tethered.py")


def test_the_groups_held_are_those_added_and_not_released() -> None:
    lines = [b"+10\n", b"+11\n", b"-10\n", b"+12\n", b"-13\n", b"-9\n"]
    assert held_groups({9, 13, 14}, lines) == {11, 12, 14}


def test_the_watchdog_reads_every_whole_line_written_before_its_service_hung_up() -> None:
    read_end, write_end = os.pipe()
    lines = [b"+%d" % pgid for pgid in range(5000)]
    os.write(write_end, b"\n".join(lines) + b"\n-12")  # the last line torn by a death
    os.close(write_end)
    try:
        assert list(lines_until_hang_up(read_end)) == lines
    finally:
        os.close(read_end)


def _watchdogs(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if "databuild.proc.watchdog" in command_line(int(pid))]


def test_a_killed_service_takes_its_held_jobs_down_even_after_its_watchdog_was_killed() -> None:
    service = subprocess.Popen(
        [sys.executable, str(TETHERED)], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
    )
    started: dict[str, Any] = {}
    try:
        assert service.stdout is not None
        started = json.loads(service.stdout.readline())
        [first] = poll_until(lambda: _watchdogs(service.pid), "the watchdog to run")
        os.kill(first, signal.SIGKILL)
        # The service starts another watchdog and tells it what it holds.
        poll_until(lambda: [p for p in _watchdogs(service.pid) if p != first],
                   "a second watchdog to run")
        assert all(alive(pid) for pid in started["held"])

        service.kill()
        service.wait()
        for pid in started["held"]:
            poll_until(lambda pid=pid: not alive(pid), f"held process {pid} to die")
        assert alive(started["released"])
    finally:
        service.kill()
        service.wait()
        if started:
            kill_group(started["released"], signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_lines_a_stalled_watchdog_cannot_take_wait_in_order(tmp_path: Path) -> None:
    # A stopped watchdog reads nothing: its pipe fills, and the lines after wait, without
    # holding up the reactor, and reach it in their order once it reads again.
    groups = [spawn(reactor, ["sleep", "300"], cwd=tmp_path, env=os.environ) for _ in range(3)]
    kept, churned, released = (child.pgid for child in groups)
    others = set(_watchdogs(os.getpid()))
    tether = Tether(reactor)
    tether.startService()
    watchdog = None
    try:
        [watchdog] = poll_until(lambda: set(_watchdogs(os.getpid())) - others,
                                "the watchdog to run")
        os.kill(watchdog, signal.SIGSTOP)
        tether.hold(kept)
        tether.hold(released)
        for _ in range(20_000):  # some 200 KiB: more than a pipe holds
            tether.hold(churned)
            tether.release(churned)
        tether.release(released)
        assert tether.unwritten > 0
        os.kill(watchdog, signal.SIGCONT)
        await poll_until_async(lambda: not tether.unwritten, "the watchdog to take every line")
    finally:
        if watchdog is not None:
            os.kill(watchdog, signal.SIGCONT)
        await tether.stopService()  # as if the service died: the watchdog kills what it holds
    try:
        await poll_until_async(lambda: not alive(groups[0].pid), "the held group to die")
        assert alive(groups[1].pid) and alive(groups[2].pid)
    finally:
        for child in groups:
            kill_group(child.pgid, signal.SIGKILL)
