"""Backfills at scale (SPEC §7, §9): a service that stays responsive, and cheap no-ops.

    .venv/bin/python benchmarks/scale_bench.py [--jobs 5000] [--refs 100000]
        [--run-s 30] [--run-to-end] [--noop-refs 5000] [--runs 5]
        [--dsn postgresql://postgres@127.0.0.1:5432/test] [--only big|noop]

Two parts, each with real ``twistd databuild`` services and ``sh`` no-op jobs (``config``
answers every ref with one config, ``exec`` exits 0):

1. **Big request.** A graph of ``--jobs`` jobs (``ds<i>/<n>``), two services on one fresh
   PostgreSQL schema with the default lease settings (heartbeat 5 s, lease 30 s), each with its
   own copy of the workspace. One POST of ``--refs`` refs to the first; a thread asks
   ``GET /api/v1/health`` every 20 ms (one request at a time, a fresh connection each) from the
   POST until ``--run-s`` seconds after the first run started (or the build's end with
   ``--run-to-end``); the build is then cancelled. Reported: health p50 / p99 / max by phase
   (analysis and planning; execution), the time to the first run, runs done, the cancel (from
   the request to no job process left, and to the build recorded CANCELLED), whether the
   first service still holds its lease (the second's ``/api/v1/services``) and whether the
   second took anything over.
2. **No-op requests** (SQLite, one service). ``--noop-refs`` refs ``n/<k>`` are built once,
   then ``all``, whose one run needs them all. Then, interleaved, ``--runs`` times each: a warm
   ``databuild builds list``; ``databuild build`` of the ``--noop-refs`` refs, all AVAILABLE;
   ``databuild build all`` (AVAILABLE, downstream of them all). Reported: medians and the
   ratios to ``builds list`` (targets 3x and 2x), and the events one no-op request writes.

The machine is shared by everyone working on it: read the figures beside their baselines.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from multi_bench import Schema, until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.shell_jobs import one_run_per_ref

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
DATABUILD = str(BIN / "databuild")
HEALTH_EVERY_S = 0.02
NOOP_TARGET, DOWNSTREAM_TARGET = 3.0, 2.0
FINAL = {"BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}

JOB_SH = one_run_per_ref()

ALL_SH = """\
# The one run of "all" needs every n/<k>, k < @REFS@.
if [ "$1" = config ]; then
  printf '{"configs": [{"outputs": ["all"], "inputs": ['
  k=0
  while [ $k -lt @REFS@ ]; do
    [ $k -gt 0 ] && printf ','
    printf '{"dep_type_code": 1, "dep_type_name": "materialize", "partition_ref": "n/%s"}' $k
    k=$((k + 1))
  done
  printf ']}]}\\n'
fi
exit 0
"""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


class Service:
    """One ``twistd databuild`` in its own workspace."""

    def __init__(self, root: Path, graph: str, files: dict[str, str], *options: str) -> None:
        self.root = root
        root.mkdir(parents=True)
        (root / "databuild.toml").write_text(graph)
        for name, text in files.items():
            (root / name).write_text(text)
        state = root / ".databuild"
        state.mkdir()
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile", str(state / "twistd.pid"),
             "--logfile", str(state / "service.log"), "databuild", "--workspace", str(root),
             "--port", "0", "--idle-timeout", "0", *options],
            env=clean_env(), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.info: dict[str, Any] = until(self._serving, 120)

    def _serving(self) -> dict[str, Any] | None:
        if self.process.poll() is not None:
            raise SystemExit(f"a service exited with {self.process.returncode}; see {self.root}")
        try:
            info = json.loads((self.root / ".databuild" / "server.json").read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.process.pid else None

    def call(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        request = urllib.request.Request(
            self.info["url"] + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.info['token']}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.load(answer)

    def build_row(self, build_id: str) -> dict[str, Any]:
        """The build as listed (counts by status; not the show, which lists every run)."""
        for build in self.call("GET", "/api/v1/builds?limit=20")["builds"]:
            if build["build_request_id"] == build_id:
                return build
        raise SystemExit(f"build {build_id} is not listed")

    def log_has(self, text: str) -> bool:
        return text in (self.root / ".databuild" / "service.log").read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(120)


class HealthProbe(threading.Thread):
    """Asks health every HEALTH_EVERY_S, one request at a time; keeps (phase, seconds)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/api/v1/health"
        self.phase = "analysis"
        self.samples: list[tuple[str, float]] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            phase, start = self.phase, time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=60) as answer:
                    answer.read()
                self.samples.append((phase, time.perf_counter() - start))
            except OSError:
                self.failures += 1
            self._halt.wait(HEALTH_EVERY_S)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def table(self, phase: str) -> str:
        times = sorted(t for p, t in self.samples if p == phase)
        if not times:
            return f"  health during {phase:<9}: no samples"
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        p50 = statistics.median(times)
        return (
            f"  health during {phase:<9}: n={len(times):<6} p50 {p50 * 1e3:7.1f} ms   "
            f"p99 {p99 * 1e3:7.1f} ms   max {times[-1] * 1e3:7.1f} ms   "
            "(targets: p99 <= 100, max <= 250)"
        )


def quietly(call: Any, *args: Any) -> None:
    """``call(*args)``, its answer and any error dropped (the cancel's answer is not timed)."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        call(*args)


def job_processes(root: Path) -> int:
    """How many job processes (``sh job.sh exec``) of the workspace run now."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cmd[:3] == [b"/bin/sh", b"job.sh", b"exec"] and cwd == str(root):
            count += 1
    return count


def big_graph(jobs: int) -> str:
    tables = ['[graph]\nlabel = "scale"\n']
    tables += [
        f'[[jobs]]\nlabel = "ds{i}"\noutputs = [\'ds{i}/\\d+\']\ncommand = ["/bin/sh", "job.sh"]\n'
        for i in range(jobs)
    ]
    return "\n".join(tables)


def big_request(args: argparse.Namespace, tmp: Path) -> None:
    schema = Schema(args.dsn)
    graph, files = big_graph(args.jobs), {"job.sh": JOB_SH}
    services: list[Service] = []
    try:
        busy = Service(tmp / "busy", graph, files, "--event-log", schema.uri)
        services.append(busy)
        other = Service(tmp / "other", graph, files, "--event-log", schema.uri)
        services.append(other)
        refs = [f"ds{k % args.jobs}/{k}" for k in range(args.refs)]
        probe = HealthProbe(busy.info["url"])
        probe.start()
        posted = time.perf_counter()
        build_id = busy.call("POST", "/api/v1/builds", {"partitions": refs})["build_request_id"]
        accepted = time.perf_counter() - posted

        def first_run() -> bool:
            row = busy.build_row(build_id)
            return row["status"] in FINAL or sum(
                n for s, n in row["job_runs"].items() if s != "JOB_SCHEDULED"
            ) > 0

        until(first_run, 3600, 0.5)
        first = time.perf_counter() - posted
        probe.phase = "execution"
        if args.run_to_end:
            until(lambda: busy.build_row(build_id)["status"] in FINAL, 36000, 1.0)
        else:
            time.sleep(args.run_s)
        row = busy.build_row(build_id)
        done = row["job_runs"].get("JOB_COMPLETED", 0) + row["job_runs"].get("JOB_SKIPPED", 0)
        executed_s = time.perf_counter() - posted - first
        cancel: tuple[float, float] | None = None
        if row["status"] not in FINAL:
            probe.phase = "cancel"
            asked = time.perf_counter()
            threading.Thread(target=quietly, args=(busy.call, "POST",
                             f"/api/v1/builds/{build_id}/cancel"), daemon=True).start()
            until(lambda: job_processes(busy.root) == 0 and busy.log_has("ending build"), 600)
            stopped = time.perf_counter() - asked
            until(lambda: busy.build_row(build_id)["status"] in FINAL, 3600, 0.2)
            cancel = (stopped, time.perf_counter() - asked)
        probe.stop()
        leases = [s["lease"] for s in other.call("GET", "/api/v1/services")["services"]]
        took_over = other.log_has("took over")
        print(f"\n1. Big request: {args.refs} refs on a graph of {args.jobs} jobs "
              f"(PostgreSQL, two services, default lease)")
        print(f"  POST answered in {accepted:.2f} s; first run started after {first:.1f} s; "
              f"{done} runs done in the {executed_s:.0f} s of execution measured")
        for phase in ("analysis", "execution", "cancel"):
            print(probe.table(phase))
        print(f"  health requests that failed: {probe.failures}")
        if cancel is not None:
            print(f"  cancel of the build ({args.refs - done} runs left): no job process and "
                  f"the summary line after {cancel[0]:.2f} s; CANCELLED recorded after "
                  f"{cancel[1]:.1f} s")
        print(f"  busy service alive: {busy.process.poll() is None}; leases seen by the other: "
              f"{sorted(leases)}; the other took over anything: {took_over}")
    finally:
        for service in services:
            service.stop()
        schema.drop()


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


def noop_requests(args: argparse.Namespace, tmp: Path) -> None:
    graph = (
        '[graph]\nlabel = "noop"\n\n'
        "[[jobs]]\nlabel = \"n\"\noutputs = ['n/\\d+']\ncommand = [\"/bin/sh\", \"job.sh\"]\n\n"
        "[[jobs]]\nlabel = \"all\"\noutputs = ['all']\ncommand = [\"/bin/sh\", \"all.sh\"]\n"
    )
    files = {"job.sh": JOB_SH, "all.sh": ALL_SH.replace("@REFS@", str(args.noop_refs))}
    service = Service(tmp / "noop", graph, files)
    root = service.root
    try:
        refs = [f"n/{k}" for k in range(args.noop_refs)]
        timed([DATABUILD, "build", *refs], root)
        timed([DATABUILD, "build", "all"], root)
        listed, noop, downstream = [], [], []
        for _ in range(args.runs):
            listed.append(timed([DATABUILD, "builds", "list"], root))
            noop.append(timed([DATABUILD, "build", *refs], root))
            downstream.append(timed([DATABUILD, "build", "all"], root))
        last = service.call("GET", "/api/v1/builds?limit=3")["builds"]
        noop_id = last[1]["build_request_id"]
        events = service.call("GET", f"/api/v1/events?build_request_id={noop_id}&limit=1000")
        count = len(events["events"])
        since = events["next_since"]
        while True:
            more = service.call(
                "GET", f"/api/v1/events?build_request_id={noop_id}&limit=1000&since={since}"
            )
            if not more["events"]:
                break
            count += len(more["events"])
            since = more["next_since"]
        base = statistics.median(listed)
        print(f"\n2. No-op requests ({args.noop_refs} refs AVAILABLE; SQLite; medians of "
              f"{args.runs})")
        print(f"  warm `databuild builds list`          {base:6.3f} s   1.00x")
        for name, times, target in (
            (f"build of the {args.noop_refs} AVAILABLE refs", noop, NOOP_TARGET),
            ("build of `all`, downstream of them all", downstream, DOWNSTREAM_TARGET),
        ):
            median = statistics.median(times)
            print(f"  {name:<38} {median:6.3f} s   {median / base:4.2f}x   (target <= "
                  f"{target:g}x)")
        print(f"  events written by one no-op request: {count} "
              f"({count / args.noop_refs:.2f} per ref)")
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--run-s", type=float, default=30.0,
                        help="seconds of execution measured before the cancel")
    parser.add_argument("--run-to-end", action="store_true")
    parser.add_argument("--noop-refs", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", choices=["big", "noop"])
    args = parser.parse_args()
    print(f"scale_bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the start "
          "(a shared machine)")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        if args.only in (None, "noop"):
            noop_requests(args, Path(tmp))
        if args.only in (None, "big"):
            big_request(args, Path(tmp))


if __name__ == "__main__":
    main()
