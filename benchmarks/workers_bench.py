"""Runs on Celery workers (SPEC §10) against runs on the service's own host.

    .venv/bin/python benchmarks/workers_bench.py [--runs 20] [--jobs 200] [--sleep 1.0]
        [--workers 2] [--slots 4] [--broker amqp://guest:guest@127.0.0.1:5672//]
        [--dsn postgresql://postgres@127.0.0.1:5432/test]

Needs RabbitMQ and PostgreSQL. Every case has a fresh schema and a queue of its own, real
``twistd databuild`` services and real ``databuild worker`` processes on this host, and the
job of ``tests/workers/workerjob.py``.

1. Overhead per run: ``--runs`` builds of one job that exits at once, one after another,
   from the request to the build's end: a local service (``--executor local``) against a
   Celery one with one worker.
2. Throughput: one build of ``--jobs`` independent jobs of ``--sleep`` seconds each, on one
   local service with ``--slots`` slots against a Celery service with ``--workers`` workers
   of ``--slots`` slots each (the target: the Celery wall time at most 0.6x the local one
   with 2 workers x 4 slots).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multi_bench import FINAL, TWISTD, Schema, Service, until

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "tests" / "workers" / "workerjob.py"


def graph(queue: str) -> str:
    return f"""\
[graph]
label = "workers"

[executor]
queue = "{queue}"

[[jobs]]
label = "work"
outputs = ['(leaf|top|slow)/[a-z0-9]+']
command = ["python3", "workerjob.py"]
"""


class BenchService(Service):
    """A ``twistd databuild`` of the bench with the local or the celery executor."""

    def __init__(self, case: Case, root: Path, executor: str, slots: int) -> None:
        self.root = root
        state = root / ".databuild"
        state.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile", str(state / "twistd.pid"),
             "--logfile", str(state / "service.log"), "databuild", "--workspace", str(root),
             "--port", str(port), "--event-log", case.schema.uri, "--idle-timeout", "0",
             "--max-parallel-jobs", str(slots), "--executor", executor,
             "--broker", case.args.broker],
            env=case.environ(), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.info = until(self._serving, 60)


class Case:
    """A fresh schema, data directory and queue; services and workers started in it."""

    def __init__(self, args: argparse.Namespace, sleep: float) -> None:
        self.args = args
        self.schema = Schema(args.dsn)
        self.work = Path(tempfile.mkdtemp(prefix="workers-bench-"))
        self.data = self.work / "data"
        self.data.mkdir()
        self.queue = f"bench-{uuid.uuid4().hex[:10]}"
        self.sleep = sleep
        self.workers: list[subprocess.Popen[bytes]] = []
        self.services: list[Service] = []

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
        env.update(TEAM_SLEEP=str(self.sleep), TEAM_DATA=str(self.data),
                   PATH=f"{TWISTD.parent}{os.pathsep}{env.get('PATH', '')}")
        return env

    def workspace(self, name: str) -> Path:
        root = self.work / name
        root.mkdir(parents=True)
        (root / "databuild.toml").write_text(graph(self.queue))
        shutil.copy(JOB, root / "workerjob.py")
        return root

    def service(self, executor: str, slots: int) -> Service:
        service = BenchService(self, self.workspace(f"s{len(self.services)}"), executor, slots)
        self.services.append(service)
        return service

    def worker(self, slots: int) -> None:
        name = f"w{len(self.workers)}"
        root = self.workspace(f"worker-{name}")
        log = root / "worker.log"
        with log.open("wb") as out:
            self.workers.append(subprocess.Popen(
                [str(TWISTD.parent / "databuild"), "worker", "--workspace", str(root),
                 "--broker", self.args.broker, "--event-log", self.schema.uri,
                 "--queue", self.queue, "--concurrency", str(slots), "--name", name],
                env=self.environ(), cwd=root, stdout=out, stderr=subprocess.STDOUT,
            ))
        until(lambda: "ready." in log.read_text(errors="replace") or None, 60)

    def close(self) -> None:
        for service in self.services:
            service.stop()
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.schema.drop()
        shutil.rmtree(self.work, ignore_errors=True)


def build_wall(service: Service, refs: list[str]) -> float:
    start = time.monotonic()
    build_id = service.submit(refs)
    status = until(lambda: _final(service.status(build_id)), 3600, 0.02)
    if status != "BUILD_REQUEST_COMPLETED":
        raise SystemExit(f"build {build_id} ended {status}")
    return time.monotonic() - start


def _final(status: str) -> str | None:
    return status if status in FINAL else None


def overhead(args: argparse.Namespace, executor: str) -> list[float]:
    case = Case(args, 0.0)
    try:
        if executor == "celery":
            case.worker(1)
        service = case.service(executor, 1)
        return [build_wall(service, [f"leaf/{i}"]) for i in range(args.runs)]
    finally:
        case.close()


def throughput(args: argparse.Namespace, executor: str) -> float:
    case = Case(args, args.sleep)
    try:
        if executor == "celery":
            for _ in range(args.workers):
                case.worker(args.slots)
        service = case.service(executor, args.slots)
        return build_wall(service, [f"leaf/{i}" for i in range(args.jobs)])
    finally:
        case.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    local, remote = overhead(args, "local"), overhead(args, "celery")
    print(f"one-job builds, {args.runs} each, request to end (ms):")
    print(f"{'executor':>8} {'median':>7} {'mean':>7} {'max':>7}")
    for name, walls in (("local", local), ("celery", remote)):
        print(f"{name:>8} {statistics.median(walls) * 1e3:>7.0f} "
              f"{statistics.mean(walls) * 1e3:>7.0f} {max(walls) * 1e3:>7.0f}")
    extra = (statistics.median(remote) - statistics.median(local)) * 1e3
    print(f"overhead per remote run (median): {extra:+.0f} ms")

    print(f"\n{args.jobs} jobs of {args.sleep:g} s:")
    base = throughput(args, "local")
    celery = throughput(args, "celery")
    print(f"{'case':>26} {'wall s':>7} {'ratio':>6}")
    print(f"{f'local, {args.slots} slots':>26} {base:>7.1f} {1.0:>6.2f}")
    label = f"celery, {args.workers} x {args.slots} slots"
    print(f"{label:>26} {celery:>7.1f} {celery / base:>6.2f}  (target <= 0.60)")


if __name__ == "__main__":
    main()
