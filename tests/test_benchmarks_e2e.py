"""Every benchmark runs to its table at a tiny size (docs/development.md, "Benchmarks").

The figures are not checked: a timed assertion would pass only on an idle machine. What is
checked is that each script still reaches its service, its log and its jobs, and prints the
rows its targets are read from: a script that broke (the readers bench's refused ``Host``
header went unseen for several rounds) fails here, in CI, instead of waiting out its own
deadline when someone next measures.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import PG_ADMIN_DSN, installed

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RUN_TIMEOUT_S = 240
"""A hang guard only: each of these runs in 1 to 20 s here."""

CASES = {
    "orchestration, 500-job cases": (
        "orchestration_bench.py", ["--jobs", "20", "--repeat", "1", "--cases", "sh:0"],
        r"^\s+sh\s+0ms\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+",
    ),
    "orchestration at scale": (
        "orchestration_bench.py", ["--scale", "50"],
        r"^\s+50\s+\d+\.\d+\s+\d+\.\d+.*vs bare <= 1\.3",
    ),
    "stalled readers": (
        "readers_bench.py", ["--readers", "5", "--rounds", "1"],
        r"^\s+1\s+\d+\s+\d+\s+\d+\s+\d+\s+-?\d+\s+100\s",
    ),
    "big request and no-op": (
        "scale_bench.py",
        ["--jobs", "50", "--refs", "500", "--run-s", "1", "--noop-refs", "100", "--runs", "1",
         "--dsn", PG_ADMIN_DSN],
        r"events written by one no-op request: \d+(?s:.*)health during execution: n=\d+",
    ),
    "event log": (
        "bel_bench.py", ["--events", "5000", "--appends", "500", "--pg", PG_ADMIN_DSN],
        r"^\| sqlite +\| [\d,]+ (?s:.*)^\| postgresql +\| [\d,]+ ",
    ),
    "dashboard": ("dashboard_bench.py", ["--runs", "100", "--repeat", "1"], r"^\s+100\s+\d"),
    "team hosts": (
        "multi_bench.py", ["--tops", "5", "--services", "1", "2", "--dsn", PG_ADMIN_DSN],
        r"^\s+2\s+\d+\s+\d+\s+\d+\s+0\s(?s:.*)take-over after kill -9: \d",
    ),
    "a spawn's cost to the reactor": (
        "spawn_bench.py", ["--spawns", "20", "--repeat", "1", "--pairs", "100"],
        r"^databuild spawn\(\), tethered +\d+\.\d +\d+\.\d +\d+\.\d\d(?s:.*)"
        r"^tether hold \+ release: -?\d+\.\d us",
    ),
    "ending a run": ("run_end_bench.py", ["--runs", "10", "--host", "0", "100"],
                     r"^\s+100\s+\d+\s+\d"),
    "Celery workers": (
        "workers_bench.py", ["--runs", "1", "--jobs", "4", "--sleep", "0.1", "--dsn", PG_ADMIN_DSN],
        r"overhead per remote run \(median\): [+-]?\d+ ms",
    ),
    # Without Bazel's row, which is only a comparison: its server's start is most of the
    # case's time on a loaded machine.
    "CLI": ("cli_bench.py", ["--runs", "1", "--cold-runs", "1", "--bazel-runs", "0"],
            r"^warm: databuild builds list +1 +\d"),
    "service": (
        "service_bench.py",
        ["--clients", "2", "--requests", "20", "--streams", "3", "--rounds", "1"],
        r"^GET /api/v1/builds +\d+(?s:.*)^ +3 +\d+ +3 ",
    ),
}


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("script, args, row", CASES.values(), ids=list(CASES))
def test_the_benchmark_runs_to_its_table(script: str, args: list[str], row: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env["PATH"] = f"{Path(installed('databuild')).parent}{os.pathsep}{env.get('PATH', '')}"
    # A session of its own: on a hang, the script and the services it started go together.
    bench = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / script), *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        stdout, stderr = bench.communicate()
    output = f"--- stdout\n{stdout[-4000:]}\n--- stderr\n{stderr[-4000:]}"
    assert bench.returncode == 0, output
    assert re.search(row, stdout, re.MULTILINE), output
