"""Team hosts (SPEC §5.8): 1, 2 and 3 services on one PostgreSQL log, overlapping builds.

    .venv/bin/python benchmarks/multi_bench.py [--tops 170] [--services 1 2 3]
        [--dsn postgresql://postgres@127.0.0.1:5432/test] [--parallel 4]

Each case starts that many real ``twistd databuild`` services, each with its own copy of one
workspace (the graph of ``tests/multi/teamjob.py``: ``top/K`` needs ``mid/K``, ``mid/K+1``,
each ``mid/K`` needs ``leaf/K``, ``leaf/K+1``; ``--tops 170`` is 513 jobs), on a fresh schema
of one PostgreSQL database, and a shared data directory where every exec appends a line. Every
service is sent the whole graph as ten overlapping builds at once (each chunk of tops shares
its edge mids and leaves with the next), so every job is wanted by every service.

Reported per case: wall time from the first request to the last build's end, job execs and
duplicate execs (must be 0), and event-log appends per second over that time. Then, with two
services, the take-over time: from ``kill -9`` of the service running a build (its process
is gone: a service on the same host sees that at its next heartbeat) and from ``SIGSTOP`` of it
(a host that vanished: only its lease says so), to the other service having recorded that
build FAILED; both with ``--heartbeat 0.5 --lease-timeout 3``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "tests" / "multi" / "teamjob.py"
TWISTD = Path(sys.executable).parent / "twistd"
GRAPH = """\
[graph]
label = "team"

[[jobs]]
label = "team"
outputs = ['(leaf|mid|top|slow|after)/[a-z0-9]+']
command = ["python3", "teamjob.py"]
"""
FINAL = {"BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}
HEARTBEAT_S, LEASE_S = 0.5, 3.0


class Service:
    """One ``twistd databuild`` of the bench."""

    def __init__(self, root: Path, uri: str, data: Path, parallel: int) -> None:
        self.root = root
        root.mkdir(parents=True)
        (root / "databuild.toml").write_text(GRAPH)
        shutil.copy(JOB, root / "teamjob.py")
        state = root / ".databuild"
        state.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
        env["PATH"] = f"{TWISTD.parent}{os.pathsep}{env.get('PATH', '')}"
        env["TEAM_DATA"] = str(data)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile", str(state / "twistd.pid"),
             "--logfile", str(state / "service.log"), "databuild", "--workspace", str(root),
             "--port", str(port), "--event-log", uri, "--idle-timeout", "0",
             "--max-parallel-jobs", str(parallel),
             "--heartbeat", str(HEARTBEAT_S), "--lease-timeout", str(LEASE_S)],
            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.info = until(self._serving, 60)

    def _serving(self) -> dict[str, Any] | None:
        if self.process.poll() is not None:
            raise SystemExit(f"a service exited with {self.process.returncode}; see {self.root}")
        try:
            info = json.loads((self.root / ".databuild" / "server.json").read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.process.pid else None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        parts = urlsplit(self.info["url"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        headers = {"Authorization": f"Bearer {self.info['token']}",
                   "Content-Type": "application/json"}
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        answer = json.loads(conn.getresponse().read() or b"null")
        conn.close()
        return answer

    def submit(self, refs: list[str]) -> str:
        return self.call("POST", "/api/v1/builds", {"partitions": refs})["build_request_id"]

    def status(self, build_id: str) -> str:
        return self.call("GET", f"/api/v1/builds/{build_id}")["status"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


def until(predicate: Any, timeout_s: float, poll_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while (value := predicate()) is None or value is False:
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(poll_s)
    return value


class Schema:
    """A fresh schema of the database, dropped at the end."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.dsn = dsn
        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        self.uri = f"{dsn}?options=-csearch_path%3D{self.name}"

    def count(self, table: str) -> int:
        import psycopg

        with psycopg.connect(self.uri) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.name}" CASCADE')


def chunks(tops: int, n: int = 10) -> list[list[str]]:
    size = -(-tops // n)
    return [[f"top/{k}" for k in range(i, min(i + size, tops))] for i in range(0, tops, size)]


def overlapping(args: argparse.Namespace, services: int) -> dict[str, Any]:
    schema = Schema(args.dsn)
    work = Path(tempfile.mkdtemp(prefix="multi-bench-"))
    data = work / "data"
    data.mkdir()
    team = [Service(work / f"s{i}", schema.uri, data, args.parallel) for i in range(services)]
    try:
        parts = chunks(args.tops)
        start = time.monotonic()
        builds = [(s, s.submit(parts[(i + k) % len(parts)]))
                  for k in range(len(parts)) for i, s in enumerate(team)]
        for service, build_id in builds:
            until(lambda s=service, b=build_id: s.status(b) in FINAL or None, 1800, 0.1)
        wall = time.monotonic() - start
        statuses = Counter(s.status(b) for s, b in builds)
        starts = Counter(json.loads(line)["ref"]
                         for line in (data / "execs.jsonl").read_text().splitlines()
                         if json.loads(line)["phase"] == "start")
        events = schema.count("events")
    finally:
        for service in team:
            service.stop()
        schema.drop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "services": services,
        "builds": len(builds),
        "completed": statuses["BUILD_REQUEST_COMPLETED"],
        "jobs": len(starts),
        "execs": sum(starts.values()),
        "duplicates": sum(n - 1 for n in starts.values()),
        "wall_s": wall,
        "events": events,
        "appends_per_s": events / wall,
    }


def take_over(args: argparse.Namespace, how: signal.Signals) -> float:
    schema = Schema(args.dsn)
    work = Path(tempfile.mkdtemp(prefix="multi-bench-"))
    data = work / "data"
    data.mkdir()
    a = Service(work / "a", schema.uri, data, args.parallel)
    b = Service(work / "b", schema.uri, data, args.parallel)
    try:
        build_id = a.submit(["slow/x"])
        until(lambda: (data / "started-x").exists() or None, 60)
        start = time.monotonic()
        a.process.send_signal(how)
        until(lambda: b.status(build_id) == "BUILD_REQUEST_FAILED" or None, 120, 0.01)
        return time.monotonic() - start
    finally:
        (data / "release-x").write_text("")
        for service in (a, b):
            service.stop()
        schema.drop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tops", type=int, default=170)
    parser.add_argument("--services", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"{'services':>8} {'builds':>6} {'jobs':>5} {'execs':>5} {'dups':>4} "
          f"{'wall s':>7} {'events':>6} {'appends/s':>9}")
    for n in args.services:
        r = overlapping(args, n)
        print(f"{r['services']:>8} {r['builds']:>6} {r['jobs']:>5} {r['execs']:>5} "
              f"{r['duplicates']:>4} {r['wall_s']:>7.1f} {r['events']:>6} "
              f"{r['appends_per_s']:>9.0f}"
              + ("" if r["completed"] == r["builds"] else f"  ({r['completed']} completed!)"))
    for name, how in (("kill -9", signal.SIGKILL), ("SIGSTOP (lease expiry)", signal.SIGSTOP)):
        print(f"take-over after {name}: {take_over(args, how):.2f} s "
              f"(heartbeat {HEARTBEAT_S:g} s, lease {LEASE_S:g} s)")


if __name__ == "__main__":
    main()
