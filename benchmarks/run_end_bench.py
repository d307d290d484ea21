"""What ending a run costs the service, against how many processes the host runs (issue 23).

    .venv/bin/python benchmarks/run_end_bench.py [--host 0 1000 4000] [--runs 200]

For each ``--host`` count, that many idle ``sleep`` processes are started beside the
benchmark (as a team host runs other people's work), then ``--runs`` jobs that live 0.2 s
(``sh -c 'sleep 0.2'``, past the 0.1 s under which the earlier sweep read only recent pids)
are run through ``proc.process.spawn``, four at a time. Timed per run, on the reactor
thread: the leftover sweep at the leader's exit (``ChildProcess._sweep``: the group kill and
the look among the service's own children). Baseline, same run, same host: one pass over
all of ``/proc`` reading each process's environment for a marker, which is what a leader
living over 0.1 s cost before (its sweep read the environment of every pid).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import react

from databuild.proc.process import ChildProcess, spawn

PARALLEL = 4
OTHERS = """
import subprocess, sys
sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(int(sys.argv[1]))]
print("up", flush=True)
sys.stdin.read()
for sleeper in sleepers:
    sleeper.kill()
for sleeper in sleepers:
    sleeper.wait()
"""


def proc_pass(marker: bytes) -> int:
    """The earlier sweep of a long-lived leader: every process's environment, read."""
    found = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found += 1
        except OSError:
            continue
    return found


async def runs(reactor: Any, count: int) -> list[float]:
    """Seconds each run's sweep at its leader's exit took."""
    spent: list[float] = []
    original = ChildProcess._sweep

    def timed(self: ChildProcess, sig: int) -> bool:
        start = time.perf_counter()
        try:
            return original(self, sig)
        finally:
            spent.append(time.perf_counter() - start)

    ChildProcess._sweep = timed  # type: ignore[method-assign]
    try:
        todo = iter(range(count))

        async def slot() -> None:
            for _ in todo:
                child = spawn(reactor, ["sh", "-c", "sleep 0.2"], cwd=Path.cwd(), env=os.environ)
                await child.result

        await gatherResults([ensureDeferred(slot()) for _ in range(PARALLEL)])
    finally:
        ChildProcess._sweep = original  # type: ignore[method-assign]
    return spent


async def main(reactor: Any, options: argparse.Namespace) -> None:
    rows = []
    for host in options.host:
        # Other people's processes: children of a process of their own, which reaps them.
        others = subprocess.Popen(
            [sys.executable, "-c", OTHERS, str(host)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True,
        )
        assert others.stdout is not None and others.stdout.readline() == b"up\n"
        try:
            total = sum(1 for name in os.listdir("/proc") if name.isdigit())
            passes = []
            for _ in range(20):
                start = time.perf_counter()
                proc_pass(b"DATABUILD_SPAWN_ID=none")
                passes.append(time.perf_counter() - start)
            sweeps = await runs(reactor, options.runs)
        finally:
            assert others.stdin is not None
            others.stdin.close()
            others.wait()
        rows.append((host, total, statistics.median(passes), statistics.median(sweeps),
                     max(sweeps)))
    print(f"runs of 0.2 s, {options.runs} per row, {PARALLEL} at a time; ms per run end")
    print(f"{'extra':>6} {'host procs':>10} {'/proc pass (before)':>20} "
          f"{'sweep now, median':>18} {'sweep now, max':>15} {'before/now':>11}")
    for host, total, passed, median, worst in rows:
        print(f"{host:>6} {total:>10} {passed * 1000:>20.2f} {median * 1000:>18.3f} "
              f"{worst * 1000:>15.3f} {passed / median:>11.0f}")
    print(f"load average (1 min) {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", type=int, nargs="+", default=[0, 1000, 4000])
    parser.add_argument("--runs", type=int, default=200)
    arguments = parser.parse_args()
    react(main, [arguments])
