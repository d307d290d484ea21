"""``databuild tasks logs`` for real: pages, ``--tail``, ``--follow``, in both formats."""

from __future__ import annotations

import json

from .conftest import Run

REF = "daily_color_votes/2026-01-01/red"


def test_logs_print_whole_tailed_and_followed(databuild: Run) -> None:
    built = databuild("build", REF)
    assert built.returncode == 0, built.stderr
    listed = json.loads(databuild("tasks", "list", "--format", "json").stdout)
    task_id = listed["tasks"][0]["job_run_id"]

    whole = databuild("tasks", "logs", task_id, "--format", "json")
    assert whole.returncode == 0, whole.stderr
    records = [json.loads(line) for line in whole.stdout.splitlines()]
    assert len(records) >= 2 and all({"time", "stream", "text"} <= set(r) for r in records)

    tailed = databuild("tasks", "logs", task_id, "--tail", "1", "--format", "json")
    assert [json.loads(line) for line in tailed.stdout.splitlines()] == records[-1:]

    followed = databuild("tasks", "logs", task_id, "--follow", "--format", "json")
    assert followed.returncode == 0, followed.stderr
    assert [json.loads(line) for line in followed.stdout.splitlines()] == records

    table = databuild("tasks", "logs", task_id, "--follow", "--tail", "1")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 1
    assert records[-1]["stream"] in table.stdout
