"""A request of 20,000 refs on a graph of many jobs, through the installed CLI and twistd:
the service keeps answering health while it analyses, plans and starts the build, and a cancel
ends the build with one summary line in the service log (SPEC §9)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.polling import poll_until
from tests.shell_jobs import one_run_per_ref

from .conftest import Run, server_info, service_pid, stop_processes

JOBS = 300
REFS = 20_000

JOB_SH = one_run_per_ref("exec sleep 60")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A graph of JOBS jobs (``ds<i>/<n>``), each a shell script whose runs sleep."""
    root = tmp_path / "many"
    root.mkdir()
    (root / "job.sh").write_text(JOB_SH)
    tables = ['[graph]\nlabel = "many"\n\n[service]\nport = 0\n']
    for i in range(JOBS):
        tables.append(
            f'[[jobs]]\nlabel = "ds{i}"\noutputs = [\'ds{i}/\\d+\']\n'
            'command = ["/bin/sh", "job.sh"]\n'
        )
    (root / "databuild.toml").write_text("\n".join(tables))
    yield root
    pid = service_pid(root) or (server_info(root) or {}).get("pid")
    if isinstance(pid, int):
        stop_processes([pid])


def get(info: dict[str, Any], path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        info["url"] + path, headers={"Authorization": f"Bearer {info['token']}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.load(answer)


def test_health_answers_while_a_request_of_20000_refs_is_analysed_and_started(
    workspace: Path, databuild: Run
) -> None:
    refs = [f"ds{n % JOBS}/{n}" for n in range(REFS)]
    started = databuild("--format", "json", "build", "--background", *refs, timeout=120)
    assert started.returncode == 0, started.stderr
    build_id = json.loads(started.stdout)["build_request_id"]
    info = server_info(workspace)
    assert info is not None

    answers = 0

    def running() -> bool:
        nonlocal answers
        status, health = get(info, "/api/v1/health")
        assert (status, health["status"]) == (200, "ok")
        answers += 1
        _, listed = get(info, "/api/v1/builds?limit=1")
        return listed["builds"][0]["job_runs"].get("JOB_RUNNING", 0) > 0

    poll_until(running, "the build's first runs to start", timeout_s=240)
    assert answers > 1

    cancelled = databuild("builds", "cancel", build_id, timeout=120)
    assert cancelled.returncode == 0, cancelled.stderr
    _, listed = get(info, "/api/v1/builds?limit=1")
    build = listed["builds"][0]
    assert (build["build_request_id"], build["status"]) == (build_id, "BUILD_REQUEST_CANCELLED")
    counts = build["job_runs"]
    assert sum(counts.values()) == REFS
    assert counts.get("JOB_RUNNING", 0) == counts.get("JOB_SCHEDULED", 0) == 0

    log = (workspace / ".databuild" / "service.log").read_text()
    assert len(re.findall(rf"ending build {build_id} early", log)) == 1
    assert len(re.findall(r"ended: cancelled", log)) < 10
