"""databuild.proc.tether: the jobs of a service killed with kill -9 die with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.polling import poll_until

from databuild.proc.info import alive, command_line
from databuild.proc.process import kill_group
from databuild.proc.watchdog import held_groups

TETHERED = Path(__file__).with_name("tethered.py")


def test_the_groups_held_are_those_added_and_not_released() -> None:
    lines = [b"+10\n", b"+11\n", b"-10\n", b"+12\n", b"-13\n", b"-9\n"]
    assert held_groups({9, 13, 14}, lines) == {11, 12, 14}


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
