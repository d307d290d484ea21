"""Job runs on Celery workers for real: ``twistd databuild --executor celery``, ``databuild
worker`` processes, RabbitMQ and a PostgreSQL event log (SPEC §10).

Every test has a queue of its own (a uuid), so parallel runs never share messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from attrs import define, field
from tests.conftest import BIN, installed
from tests.multi.conftest import Cluster, Team
from tests.polling import poll_until

HERE = Path(__file__).parent
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
WORKER_LEASE_S = 5.0


def graph(queue: str, retries: int = 0) -> str:
    return f"""\
[graph]
label = "workers"

[executor]
kind = "celery"
queue = "{queue}"

[[jobs]]
label = "work"
outputs = ['(leaf|top|slow)/[a-z0-9]+']
command = ["python3", "workerjob.py"]
retries = {retries}

[[jobs]]
label = "big"
outputs = ['big/[a-z0-9]+']
command = ["python3", "workerjob.py"]
queue = "{queue}-big"
"""


@define
class Worker:
    """A running ``databuild worker``."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@define
class Farm(Cluster):
    """Services and workers of one workspace graph on one queue."""

    queue: str = field(factory=lambda: f"q-{uuid.uuid4().hex[:12]}")
    retries: int = 0
    workers: list[Worker] = field(factory=list)

    def workspace(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            path.mkdir(parents=True)
            (path / "databuild.toml").write_text(graph(self.queue, self.retries))
            shutil.copy(HERE / "workerjob.py", path / "workerjob.py")
        return path

    def worker(
        self,
        name: str,
        *args: str,
        concurrency: int = 2,
        prefix: Sequence[str] = (),
        event_log: str | None = None,
        broker: str = BROKER,
        queues: Sequence[str] = (),
    ) -> Worker:
        """Start ``databuild worker`` as ``name`` (in front of it: ``prefix``, such as
        ``ip netns exec NS``) and wait until it registered and consumes its queue."""
        root = self.workspace(f"worker-{name}")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
        environ["PATH"] = f"{BIN}{os.pathsep}{environ.get('PATH', '')}"
        environ["TEAM_DATA"] = str(self.data)
        environ.update(self.env)
        log_file = root / f"{name}.log"
        command = [
            *prefix, installed("databuild"), "worker", "--workspace", str(root),
            "--broker", broker, "--event-log", event_log or self.event_log,
            *(f"--queue={q}" for q in queues or [self.queue]),
            "--concurrency", str(concurrency), "--name", name,
            "--lease-timeout", str(int(WORKER_LEASE_S)), *args,
        ]
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                command, env=environ, stdout=out, stderr=subprocess.STDOUT, cwd=root,
                start_new_session=True,
            )
        worker = Worker(name, process, log_file)
        self.workers.append(worker)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"worker {name} exited with {process.returncode}:\n"
                                     f"{worker.log_text()[-3000:]}")
            return "ready." in worker.log_text() and self.worker_row(name) is not None

        poll_until(ready, f"worker {name} to be ready", 60.0)
        return worker

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.event_log, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def worker_row(self, name: str) -> tuple[Any, ...] | None:
        try:
            rows = self.sql("SELECT name, heartbeat_at FROM workers WHERE name = %s", name)
        except psycopg.errors.UndefinedTable:
            return None
        return rows[0] if rows else None

    def attempts(self, job_run_id: str) -> list[tuple[Any, ...]]:
        """``(attempt, state, worker)`` of each attempt of a run."""
        return self.sql(
            "SELECT attempt, state, worker FROM remote_attempts WHERE job_run_id = %s"
            " ORDER BY attempt", job_run_id,
        )

    def started_slow(self, name: str, timeout_s: float = 60.0) -> list[tuple[int, str]]:
        """``(pid, worker)`` of the execs of ``slow/NAME`` that started, once one has."""
        def found() -> list[tuple[int, str]]:
            return [
                (int(pid), worker)
                for path in sorted(self.data.glob(f"started-{name}-*[0-9]"))
                for pid, worker in [path.read_text().split()]
            ]

        return poll_until(found, f"slow/{name} to start", timeout_s)

    def service(self, name: str, *args: str) -> Team:
        return self.start(name, *args)


@pytest.fixture
def farm(tmp_path: Path, pg_schema: str) -> Iterator[Farm]:
    data = tmp_path / "data"
    data.mkdir()
    farm = Farm(tmp_path, pg_schema, data)
    yield farm
    for worker in farm.workers:
        worker.stop()
    for service in farm.started:
        service.stop()
