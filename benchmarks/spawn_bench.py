"""What starting one job costs the reactor: DataBuild's ``spawn`` against Twisted's own.

    .venv/bin/python benchmarks/spawn_bench.py [--spawns 3000] [--repeat 3] [--pairs 10000]

A build's time on two cores follows the reactor thread's work per job (docs/performance.md,
"Issue 23, fifteenth round"); this measures the part of it that starts and ends the process,
apart from the orchestration and the event log, so that a change of a few microseconds
shows above the noise of a whole build.

Spawns, one at a time, of ``sh -c :`` with a job's config (72 bytes) on stdin, its stdout and
stderr on pipes; printed per case: the reactor thread's CPU per spawn (``time.thread_time``,
its own CPU only: not the child's, nor the wait in ``posix_spawn`` while the child execs)
and the wall time per spawn, the median of ``--repeat`` interleaved runs, and the ratio of
the CPU to the baseline's, measured in the same run:

- baseline: Twisted's ``reactor.spawnProcess``, stdin written through the transport, as the
  bare reactor of ``orchestration_bench.py --scale`` starts its processes;
- databuild: ``databuild.proc.process.spawn`` (a new session, the stdin pipe filled before
  the spawn, the leftover sweep at the end);
- databuild, tethered: the same, each group held by a ``Tether`` while it runs (the
  service's case).

Then the tether alone: ``--pairs`` holds and releases, each in a turn of its own, against the
same turns without them: the reactor's CPU per hold and release.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol

from databuild.proc.process import spawn
from databuild.proc.tether import Tether

ENV = {"PATH": "/usr/bin:/bin"}
ARGV = ["sh", "-c", ":"]
STDIN = b'{"outputs": ["bench/1"], "args": ["bench/1"], "inputs": [], "env": {}}'
WARM_UP = 200


class _Bare(ProcessProtocol):
    def __init__(self, ended: Deferred[None]) -> None:
        self._ended = ended

    def connectionMade(self) -> None:
        self.transport.write(STDIN)
        self.transport.closeStdin()

    def processEnded(self, reason: Any) -> None:
        self._ended.callback(None)


def bare(reactor: Any) -> Deferred[None]:
    ended: Deferred[None] = Deferred()
    reactor.spawnProcess(_Bare(ended), "/bin/sh", ARGV, env=ENV,
                         childFDs={0: "w", 1: "r", 2: "r"})
    return ended


async def ours(reactor: Any, tether: Tether | None = None) -> None:
    child = spawn(reactor, ARGV, cwd=os.getcwd(), env=ENV, stdin=STDIN)
    if tether is not None:
        tether.hold(child.pgid)
    result = await child.result
    if tether is not None:
        tether.release(child.pgid)
    if result.exit_code != 0:
        raise SystemExit(f"a spawned child failed: {result.describe()}")


async def per_spawn(one: Callable[[], Awaitable[None]], spawns: int) -> tuple[float, float]:
    """Microseconds of the reactor thread's CPU, and of wall time, per spawn."""
    for _ in range(WARM_UP):
        await one()
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(spawns):
        await one()
    return ((time.thread_time() - cpu) / spawns * 1e6,
            (time.perf_counter() - wall) / spawns * 1e6)


def turn(reactor: Any) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(0, d.callback, None)
    return d


async def tether_cost(reactor: Any, tether: Tether, pairs: int) -> float:
    """The reactor's CPU per hold and release, in microseconds, over that of the bare turns."""
    pgid = 1 << 22  # above any pid: the watchdog holds it, and kills nothing at the end
    cpu = time.thread_time()
    for _ in range(pairs):
        tether.hold(pgid)
        await turn(reactor)
        tether.release(pgid)
        await turn(reactor)
    held = time.thread_time() - cpu
    cpu = time.thread_time()
    for _ in range(pairs):
        await turn(reactor)
        await turn(reactor)
    return (held - (time.thread_time() - cpu)) / pairs * 1e6


async def main(reactor: Any, args: argparse.Namespace) -> None:
    tether = Tether(reactor)
    tether.startService()
    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "Twisted spawnProcess (baseline)": lambda: bare(reactor),
        "databuild spawn()": lambda: ensureDeferred(ours(reactor)),
        "databuild spawn(), tethered": lambda: ensureDeferred(ours(reactor, tether)),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    try:
        for _ in range(args.repeat):
            for name, one in cases.items():
                results[name].append(await per_spawn(one, args.spawns))
        pair_us = [await tether_cost(reactor, tether, args.pairs) for _ in range(args.repeat)]
    finally:
        await tether.stopService()
    print(f"{args.spawns} spawns of {' '.join(ARGV)!r} one at a time, median of {args.repeat}"
          f" interleaved runs; load average {os.getloadavg()[0]:.1f}")
    print()
    header = (f"{'case':<32}  {'reactor CPU (us/spawn)':>22}  {'wall (us/spawn)':>15}  "
              f"{'CPU ratio':>9}")
    print(header)
    print("-" * len(header))
    base = statistics.median(cpu for cpu, _ in results["Twisted spawnProcess (baseline)"])
    for name, runs in results.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(f"{name:<32}  {cpu:>22.1f}  {wall:>15.1f}  {cpu / base:>9.2f}")
    print()
    print(f"tether hold + release: {statistics.median(pair_us):.1f} us of reactor CPU a run "
          f"({', '.join(f'{us:.1f}' for us in pair_us)}; {args.pairs} pairs each)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=10_000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    task.react(lambda reactor: ensureDeferred(main(reactor, arguments)))
