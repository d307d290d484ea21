"""CLI benchmark: warm ``builds list`` against its floor, cold ``build``, ``bazel info``.

    .venv/bin/python benchmarks/cli_bench.py [--runs N] [--cold-runs N] [--bazel-runs N]

All in one run, on a fresh copy of ``examples/color_votes`` in a temporary directory:

1. Floor: ``python -c "import treq; from twisted.internet import reactor"`` with the venv's
   python, the stack the client cannot do without (SPEC §7).
2. Warm: ``databuild builds list`` against a running service, runs interleaved with the floor's
   so both see the same machine load. Target: median <= 1.15x the floor's median.
3. Cold: ``databuild build REF`` with no service running, from spawn to the first line on
   stdout (the service starts in between). Target: <= 2 s. Each run stops the service first
   and builds a new ref.
4. ``bazel info`` (warm server, in a tiny temporary workspace, offline) if bazel is installed,
   for comparison with a C++ client, ``--bazel-runs`` times (10 by default; 0 leaves it out);
   its server is shut down afterwards.

Every command runs with bytecode caching on, as an installed CLI has it: the environment's
``PYTHONDONTWRITEBYTECODE`` is dropped and ``PYTHONPYCACHEPREFIX`` points into the temporary
directory (so the source tree stays clean); the first runs fill that cache for the floor and
the CLI alike.

Prints a table: median, p95, ratio to the floor, target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATABUILD = str(BIN / "databuild")
FLOOR = [sys.executable, "-c", "import treq; from twisted.internet import reactor"]
WARM_TARGET = 1.15
COLD_TARGET_S = 2.0


@dataclass
class Sample:
    wall: float
    cpu: float | None = None
    """User plus system CPU seconds of the process itself (not of the service it asks)."""


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {errors.decode()}")
    return Sample(elapsed, usage.ru_utime + usage.ru_stime)


def first_line(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Sample:
    """Seconds from spawning ``argv`` to its first line on stdout; lets it finish."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.communicate()
    if not line or proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode})")
    return Sample(elapsed)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def interleaved(runs: int, *measures: Callable[[], Sample]) -> list[list[Sample]]:
    results: list[list[Sample]] = [[] for _ in measures]
    for _ in range(runs):
        for result, measure in zip(results, measures, strict=True):
            result.append(measure())
    return results


def bazel_info(runs: int) -> list[Sample] | None:
    bazel = shutil.which("bazel")
    if bazel is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bazel-bench-") as tmp:
        ws = Path(tmp)
        (ws / "WORKSPACE").touch()
        env = dict(os.environ)
        try:
            timed([bazel, "info"], ws, env)  # starts the server
            return [timed([bazel, "info"], ws, env) for _ in range(runs)]
        finally:
            subprocess.run([bazel, "shutdown"], cwd=ws, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="warm runs of each command")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold builds")
    parser.add_argument("--bazel-runs", type=int, default=10,
                        help="warm `bazel info` runs, for comparison (0: none)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        ws = Path(tmp) / "color_votes"
        shutil.copytree(REPO / "examples" / "color_votes", ws,
                        ignore=shutil.ignore_patterns(".databuild", "data"))
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("DATABUILD_") and k != "PYTHONDONTWRITEBYTECODE"
        }  # fmt: skip
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
        env["DATABUILD_SERVICE_TIMEOUT"] = "600"
        try:
            timed(FLOOR, ws, env)  # fill the bytecode cache of the stack,
            timed([DATABUILD, "builds", "list"], ws, env)  # the CLI's and the service's
            cold = []
            for n in range(options.cold_runs):
                timed([DATABUILD, "service", "stop"], ws, env)
                ref = f"daily_color_votes/2026-03-{n + 1:02d}/red"
                cold.append(first_line([DATABUILD, "build", ref], ws, env))
            timed([DATABUILD, "builds", "list"], ws, env)  # a running service again
            floor, warm = interleaved(
                options.runs,
                lambda: timed(FLOOR, ws, env),
                lambda: timed([DATABUILD, "builds", "list"], ws, env),
            )
        finally:
            subprocess.run([DATABUILD, "service", "stop", "--force"], cwd=ws, env=env,
                           capture_output=True)
    bazel = bazel_info(options.bazel_runs) if options.bazel_runs > 0 else None

    base = statistics.median(s.wall for s in floor)
    base_cpu = statistics.median(s.cpu for s in floor if s.cpu is not None)
    rows = [
        ("floor: python -c 'import treq; reactor'", floor, "baseline"),
        ("warm: databuild builds list", warm, f"median <= {WARM_TARGET:.2f}x floor"),
        ("cold: databuild build, to 1st line", cold, f"median <= {COLD_TARGET_S:.1f} s"),
    ]
    if bazel is not None:
        rows.append(("bazel info (warm server)", bazel, "for comparison"))
    print(f"{'measurement':<40} {'runs':>4} {'median s':>9} {'p95 s':>7} {'x floor':>8} "
          f"{'cpu s':>7} {'cpu x':>6}  target")
    for name, samples, target in rows:
        walls = [s.wall for s in samples]
        cpus = [s.cpu for s in samples if s.cpu is not None]
        median = statistics.median(walls)
        cpu = statistics.median(cpus) if cpus else None
        cpu_cells = f"{'-':>7} {'-':>6}"
        if cpu is not None:
            cpu_cells = f"{cpu:>7.3f} {cpu / base_cpu:>6.2f}"
        print(f"{name:<40} {len(walls):>4} {median:>9.3f} {p95(walls):>7.3f} "
              f"{median / base:>8.2f} {cpu_cells}  {target}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs; cpu = the client process's own user+sys time")

if __name__ == "__main__":
    main()
