"""Every command against a real service, in both formats, and every exit code provoked."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from databuild.proc.info import alive

from .conftest import Run, server_info, slow_pid

DAY = "2026-01-01"
TOTAL = f"daily_votes/{DAY}"
INGESTS = [f"daily_color_votes/{DAY}/{c}" for c in ("red", "green", "blue")]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_call_starts_the_service_and_the_second_reuses_it(
    databuild: Run, workspace: Path
) -> None:
    first = databuild("builds", "list")
    assert first.returncode == 0, first.stderr
    assert "starting the DataBuild service" in first.stderr
    assert first.stdout == "no builds\n"
    pid = server_info(workspace)["pid"]
    second = databuild("builds", "list", "--format", "json")
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    assert json.loads(second.stdout) == {"builds": [], "total": 0, "has_more": False}
    assert server_info(workspace)["pid"] == pid


def test_every_command_in_both_formats_against_a_known_build(databuild: Run) -> None:
    built = databuild("build", TOTAL, "--format", "json")
    assert built.returncode == 0, built.stderr
    events = [json.loads(line) for line in built.stdout.splitlines()]
    finished = events.pop()
    assert finished["status"] == "BUILD_REQUEST_COMPLETED"
    build_id = finished["build_request_id"]
    assert [e["idx"] for e in events] == sorted({e["idx"] for e in events})
    assert {e["build_request_id"] for e in events} == {build_id}
    completed = {(e["job_label"], tuple(e["outputs"])) for e in events
                 if e["event_type"] == "job" and e["status"] == "JOB_COMPLETED"}
    assert completed == {("aggregate_color_votes", (TOTAL,))} | {
        ("ingest_color_votes", (ref,)) for ref in INGESTS
    }

    def both(*args: str) -> tuple[str, object]:
        table = databuild(*args)
        as_json = databuild(*args, "--format", "json")
        assert table.returncode == as_json.returncode == 0, (table.stderr, as_json.stderr)
        return table.stdout, json.loads(as_json.stdout)

    table, doc = both("builds", "list")
    assert [b["build_request_id"] for b in doc["builds"]] == [build_id]
    assert table.splitlines()[0].split()[:2] == ["BUILD", "STATUS"]
    assert table.splitlines()[1].split()[:2] == [build_id, "completed"]

    table, doc = both("builds", "show", build_id)
    assert doc["status"] == "BUILD_REQUEST_COMPLETED"
    assert doc["requested_partitions"] == [TOTAL]
    assert "status:" in table and "completed" in table and TOTAL in table

    table, doc = both("partitions", "list", "--status", "available")
    assert {p["partition_ref"] for p in doc["partitions"]} == {TOTAL, *INGESTS}
    assert all(line.split()[1] == "available" for line in table.splitlines()[1:])

    table, doc = both("partitions", "list", "--pattern", "daily_votes/*", "--limit", "5")
    assert [p["partition_ref"] for p in doc["partitions"]] == [TOTAL]

    table, doc = both("partitions", "show", TOTAL)
    assert doc["partition_ref"] == TOTAL and doc["status"] == "PARTITION_AVAILABLE"
    assert "available" in table

    table, doc = both("jobs", "list")
    runs = {j["job_label"]: (j["runs"], j["succeeded"], j["failed"]) for j in doc["jobs"]}
    assert runs["ingest_color_votes"] == (3, 3, 0)
    assert runs["aggregate_color_votes"] == (1, 1, 0)
    assert "ingest_color_votes" in table

    table, doc = both("jobs", "show", "aggregate_color_votes")
    assert doc["job_label"] == "aggregate_color_votes" and doc["runs"] == 1

    table, doc = both("tasks", "list", "--build", build_id, "--job", "ingest_color_votes")
    tasks = doc["tasks"]
    assert sorted(t["outputs"][0] for t in tasks) == sorted(INGESTS)
    assert len(table.splitlines()) == 4
    task_id = tasks[0]["job_run_id"]

    table, doc = both("tasks", "show", task_id)
    assert doc["job_run_id"] == task_id and doc["status"] == "JOB_COMPLETED"
    assert "completed" in table

    table = databuild("tasks", "logs", task_id)
    as_json = databuild("tasks", "logs", task_id, "--format", "json")  # one record a line
    assert table.returncode == as_json.returncode == 0, (table.stderr, as_json.stderr)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert all({"time", "stream", "text"} <= set(r) for r in records)
    assert len(table.stdout.splitlines()) == max(1, len(records))

    table, doc = both("analyze", f"daily_votes/{DAY[:-1]}2")
    assert len(doc["job_graph"]["job_runs"]) == 4
    assert table.startswith("4 job runs for daily_votes/2026-01-02")

    table, doc = both("service", "status")
    assert doc["status"] == "ok" and isinstance(doc["pid"], int)
    assert "url:" in table


def test_a_failed_build_that_requested_an_available_partition_leaves_it_available(
    databuild: Run,
) -> None:
    """The catalog is the data's truth (SPEC §4.2): analysis fails for ``no_such/1``, so no
    run touches ``TOTAL``; it stays AVAILABLE, and the next build runs nothing for it."""
    assert databuild("build", TOTAL).returncode == 0
    failed = databuild("build", TOTAL, "no_such/1", "--format", "json")
    assert failed.returncode == 1, failed.stderr
    build_id = json.loads(failed.stdout.splitlines()[-1])["build_request_id"]
    build = json.loads(databuild("builds", "show", build_id, "--format", "json").stdout)
    assert {p["partition_ref"]: p["status"] for p in build["partitions"]}[TOTAL] == (
        "PARTITION_FAILED"
    )

    shown = json.loads(databuild("partitions", "show", TOTAL, "--format", "json").stdout)
    assert shown["status"] == "PARTITION_AVAILABLE"
    assert [e["status"] for e in shown["history"] if e["build_request_id"] == build_id
            and e["event_type"] == "partition"] == ["PARTITION_REQUESTED", "PARTITION_FAILED"]
    listed = json.loads(databuild("partitions", "list", "--status", "failed", "--format",
                                  "json").stdout)
    assert [p["partition_ref"] for p in listed["partitions"]] == ["no_such/1"]

    again = databuild("build", TOTAL, "--format", "json")
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()[:-1]]
    assert [e["status"] for e in events if e["event_type"] == "job"] == [
        "JOB_SCHEDULED", "JOB_SKIPPED",
    ]


def test_cancelling_what_has_finished_is_refused_with_exit_2(databuild: Run) -> None:
    built = databuild("build", INGESTS[0], "--background")
    assert built.returncode == 0, built.stderr
    build_id = built.stdout.strip()
    assert databuild("tail", build_id).returncode == 0
    refused = databuild("builds", "cancel", build_id)
    assert refused.returncode == 2
    assert refused.stderr.startswith("databuild: ") and "Traceback" not in refused.stderr


def test_exit_codes_0_1_2_3_4_each_for_real(databuild: Run, workspace: Path) -> None:
    ok = databuild("build", INGESTS[0])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("build ")
    assert " completed in " in ok.stdout.splitlines()[-1]

    failed = databuild("build", f"daily_color_votes/{DAY}/purple")
    assert failed.returncode == 1, failed.stderr
    summary = failed.stdout.split("\nbuild ")[-1]
    assert " failed in " in summary and "unknown colour 'purple'" in summary

    usage = databuild("builds", "list", "--limit", "0")
    assert usage.returncode == 2
    refused = databuild("build", "bad\tref")
    assert refused.returncode == 2
    assert "databuild: " in refused.stderr and "Traceback" not in refused.stderr

    missing = databuild("builds", "show", "no-such-build")
    assert missing.returncode == 4
    assert "no-such-build" in missing.stderr
    assert databuild("tail", "no-such-build").returncode == 4
    assert databuild("partitions", "show", "never/built").returncode == 4

    port = closed_port()
    unreachable = databuild(
        "builds", "list", env={"DATABUILD_SERVICE_URL": f"http://127.0.0.1:{port}"}
    )
    assert unreachable.returncode == 3
    assert unreachable.stderr == (
        f"databuild: cannot reach the DataBuild service at http://127.0.0.1:{port}/: "
        "connection refused\n"
    )


def test_a_broken_graph_file_at_auto_start_says_so_first(
    databuild: Run, workspace: Path
) -> None:
    toml = workspace / "databuild.toml"
    toml.write_text(toml.read_text() + "\nmax_parallel_jobs = = 2\n")
    broken = databuild("builds", "list")
    assert broken.returncode == 3
    lines = broken.stderr.splitlines()
    assert any(
        line.startswith(f"databuild: the DataBuild service could not start: {toml}: invalid "
                        "TOML: ") and "(at line " in line
        for line in lines[:3]
    ), broken.stderr
    assert "Usage:" not in broken.stderr and "--help" not in broken.stderr


def test_a_service_that_cannot_start_is_exit_3_with_the_end_of_its_log(
    databuild: Run, workspace: Path
) -> None:
    toml = workspace / "databuild.toml"
    toml.write_text(toml.read_text() + 'max_parallel_jobs = "many"\n')  # in [service]
    broken = databuild("builds", "list")
    assert broken.returncode == 3
    second = broken.stderr.splitlines()[1]
    assert second.startswith("databuild: the DataBuild service could not start: ")
    assert "max_parallel_jobs" in second
    assert "Usage:" not in broken.stderr and "Traceback" not in broken.stderr


def test_service_status_and_stop_never_start_one(databuild: Run, workspace: Path) -> None:
    status = databuild("service", "status")
    assert status.returncode == 3
    assert "no service is running" in status.stdout
    stop = databuild("service", "stop")
    assert stop.returncode == 0
    assert not (workspace / ".databuild" / "server.json").exists()

    started = databuild("service", "start")
    assert started.returncode == 0, started.stderr
    pid = server_info(workspace)["pid"]
    again = databuild("service", "start", "--format", "json")
    assert "already running" in again.stderr
    assert json.loads(again.stdout)["pid"] == pid

    stopped = databuild("service", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"service (pid {pid}) stopped\n"
    assert not alive(pid)
    assert databuild("service", "status").returncode == 3


def test_cancelling_a_running_task_and_stopping_a_busy_service(
    databuild: Run, workspace: Path
) -> None:
    build_id = databuild("build", "slow/task", "--background").stdout.strip()
    slow_pid(workspace, "slow/task")
    tasks = json.loads(databuild("tasks", "list", "--build", build_id, "--format", "json").stdout)
    (task,) = tasks["tasks"]
    assert task["status"] == "JOB_RUNNING"

    busy = databuild("service", "stop")
    assert busy.returncode == 2
    assert "`databuild service stop --force`" in busy.stderr

    cancelled = databuild("tasks", "cancel", task["job_run_id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"cancel requested for task {task['job_run_id']}")
    # The cancelled run's output failed, so the build failed (SPEC §4.2): it was not cancelled.
    assert databuild("tail", build_id).returncode == 1
    shown = json.loads(databuild("tasks", "show", task["job_run_id"], "--format", "json").stdout)
    assert shown["status"] == "JOB_CANCELLED"

    pid = server_info(workspace)["pid"]
    stopped = databuild("service", "stop", "--force", "--format", "json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["status"] == "stopping"
    assert not alive(pid)
