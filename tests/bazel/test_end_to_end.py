"""Bazel jobs through the installed CLI and the service it starts, with the real (offline) Bazel.

Every job process records how it was started (``probe/sitecustomize.py``), so the tests can
tell a job run from ``bazel-bin`` from one run as a plain command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from .conftest import BAZEL, HERE, OFFLINE_FLAGS, job_env, toml_array

DATABUILD = str(Path(sys.executable).parent / "databuild")
CLI_TIMEOUT_S = 600
EXAMPLE_JOBS = {
    "ingest_color_votes",
    "trailing_color_votes",
    "aggregate_color_votes",
    "color_vote_report",
}
BAZEL_TABLE = f"""
[bazel]
command = {toml_array(BAZEL)}
build_flags = {toml_array(OFFLINE_FLAGS)}
"""
BROKEN_GRAPH = (
    """
[graph]
label = "broken"

[[jobs]]
label = "missing_source"
outputs = ['broken/.+']
target = "//broken:missing_source"
"""
    + BAZEL_TABLE
)
MIXED_GRAPH = (
    r"""
[graph]
label = "mixed"

[[jobs]]
label = "ingest_color_votes"
outputs = ['daily_color_votes/(?P<date>\d{4}-\d{2}-\d{2})/(?P<color>[a-z]+)']
target = "//jobs:ingest_color_votes"

[[jobs]]
label = "aggregate_color_votes"
outputs = ['(daily_votes|votes_1w|votes_1m)/(?P<date>\d{4}-\d{2}-\d{2})']
command = ["python3", "../jobs/src/aggregate_color_votes.py"]
"""
    + BAZEL_TABLE
)


@frozen
class Build:
    """What ``databuild --format json build`` printed: BEL events, then ``build_finished``."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    @property
    def finished(self) -> dict[str, Any]:
        return self.lines[-1]

    def completed_runs(self) -> set[str]:
        return {
            e["job_run_id"]
            for e in self.lines
            if e.get("event_type") == "job" and e["status"] == "JOB_COMPLETED"
        }


@frozen
class Cli:
    """The installed ``databuild`` command for one workspace, in the tests' environment."""

    workspace: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [DATABUILD, "--workspace", str(self.workspace), "--format", "json", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    def start_build(self, *refs: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv("build", *refs),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def build(self, *refs: str) -> Build:
        return finished_build(self.start_build(*refs))

    def service_log(self) -> str:
        path = self.workspace / ".databuild" / "service.log"
        return path.read_text() if path.exists() else ""


def finished_build(process: subprocess.Popen[str]) -> Build:
    out, err = process.communicate(timeout=CLI_TIMEOUT_S)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines, f"the CLI printed nothing (exit {process.returncode}): {err}"
    return Build(process.returncode, lines, err)


@frozen
class ExecRecord:
    """The lines the probe wrote, grouped by job run."""

    path: Path

    def runs(self) -> dict[str, list[dict[str, Any]]]:
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                runs[record["job_run_id"]].append(record)
        return runs


@pytest.fixture(scope="module")
def exec_record(tmp_path_factory: pytest.TempPathFactory) -> ExecRecord:
    return ExecRecord(tmp_path_factory.mktemp("probe") / "exec.jsonl")


@pytest.fixture(scope="module")
def cli_env(exec_record: ExecRecord) -> dict[str, str]:
    env = job_env()
    env["PYTHONPATH"] = str(HERE / "probe")
    env["DATABUILD_TEST_EXEC_RECORD"] = str(exec_record.path)
    env["DATABUILD_SERVICE_TIMEOUT"] = "300"  # a service the teardown misses goes by itself
    return env


@pytest.fixture(scope="module")
def services() -> Iterator[list[Cli]]:
    """Workspaces whose services (started by the CLI) are stopped at the end of this module."""
    started: list[Cli] = []
    yield started
    for cli in started:
        cli.run("service", "stop")


@pytest.fixture(scope="module")
def example(bazel_workspace: Path, cli_env: dict[str, str], services: list[Cli]) -> Cli:
    cli = Cli(bazel_workspace, cli_env)
    services.append(cli)
    return cli


@pytest.fixture(scope="module")
def bazel_bin(bazel_workspace: Path) -> Path:
    """Where this workspace's Bazel puts executables, asked the way a user would."""
    out = subprocess.run(
        [*BAZEL, "info", *OFFLINE_FLAGS, "bazel-bin"],
        cwd=bazel_workspace,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return Path(out.stdout.strip())


def sub_workspace(root: Path, name: str, graph: str, env: dict[str, str]) -> Cli:
    """A DataBuild workspace inside the Bazel workspace: its own graph, the same Bazel."""
    directory = root / name
    directory.mkdir()
    (directory / "databuild.toml").write_text(graph)
    return Cli(directory, env)


def assert_ran_from_bazel_bin(records: list[dict[str, Any]], bazel_bin: Path) -> None:
    launcher, job = records
    label = launcher["job_label"]
    assert launcher["argv"][:2] == [str(bazel_bin / "jobs" / label), "exec"]
    runfiles = bazel_bin / "jobs" / f"{label}.runfiles"
    assert Path(job["argv"][0]).is_relative_to(runfiles)
    assert job["argv"][1] == "exec"


def bazel_build_markers(log: str) -> list[str]:
    return re.findall(r"\] bazel build (started|finished):", log)


def test_report_build_runs_every_job_from_bazel_bin(
    example: Cli, exec_record: ExecRecord, bazel_bin: Path
) -> None:
    build = example.build("color_vote_report/2026-01-31/red")

    assert build.returncode == 0, build.stderr
    assert build.finished["status"] == "BUILD_REQUEST_COMPLETED"
    runs = exec_record.runs()
    completed = build.completed_runs()
    assert {runs[run][0]["job_label"] for run in completed} == EXAMPLE_JOBS
    for run in completed:
        assert_ran_from_bazel_bin(runs[run], bazel_bin)
    report = json.loads(
        (example.workspace / "data" / "color_vote_report" / "2026-01-31" / "red.json").read_text()
    )
    assert set(report) == {"daily_share", "weekly_share", "monthly_share"}


def test_concurrent_builds_run_bazel_one_at_a_time_and_each_job_once(
    example: Cli, exec_record: ExecRecord, bazel_bin: Path
) -> None:
    log_before = len(example.service_log())
    ref = "color_vote_report/2026-02-01/green"

    builds = [finished_build(p) for p in [example.start_build(ref) for _ in range(3)]]

    for build in builds:
        assert build.returncode == 0, build.stderr
        assert build.finished["status"] == "BUILD_REQUEST_COMPLETED"
    markers = bazel_build_markers(example.service_log()[log_before:])
    assert len(markers) >= 2 * len(builds)
    assert markers == ["started", "finished"] * (len(markers) // 2)
    runs = exec_record.runs()
    producers: dict[str, set[str]] = defaultdict(set)
    for run in set().union(*(b.completed_runs() for b in builds)):
        assert_ran_from_bazel_bin(runs[run], bazel_bin)
        for output in runs[run][0]["outputs"]:
            producers[output].add(run)
    assert ref in producers
    assert {output: len(by) for output, by in producers.items() if len(by) != 1} == {}


def test_target_that_fails_to_compile_fails_the_build_with_bazels_error(
    bazel_workspace: Path, cli_env: dict[str, str], services: list[Cli]
) -> None:
    cli = sub_workspace(bazel_workspace, "broken_graph", BROKEN_GRAPH, cli_env)
    services.append(cli)

    build = cli.build("broken/anything")

    assert build.returncode == 1, build.stderr
    assert build.finished["status"] == "BUILD_REQUEST_FAILED"
    message = build.finished["message"]
    assert "bazel build of //broken:missing_source failed" in message
    assert "ERROR:" in message
    assert "missing input file '//broken:missing_source.py'" in message


def test_mixed_graph_runs_the_target_from_bazel_bin_and_the_command_as_is(
    bazel_workspace: Path,
    cli_env: dict[str, str],
    services: list[Cli],
    exec_record: ExecRecord,
    bazel_bin: Path,
) -> None:
    cli = sub_workspace(bazel_workspace, "mixed", MIXED_GRAPH, cli_env)
    services.append(cli)

    build = cli.build("daily_votes/2026-03-01")

    assert build.returncode == 0, build.stderr
    assert build.finished["status"] == "BUILD_REQUEST_COMPLETED"
    runs = exec_record.runs()
    by_label: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for run in build.completed_runs():
        by_label[runs[run][0]["job_label"]].append(runs[run])
    assert sorted((label, len(r)) for label, r in by_label.items()) == [
        ("aggregate_color_votes", 1),
        ("ingest_color_votes", 3),
    ]
    for records in by_label["ingest_color_votes"]:
        assert_ran_from_bazel_bin(records, bazel_bin)
    ((command,),) = by_label["aggregate_color_votes"]
    assert command["argv"][:2] == ["../jobs/src/aggregate_color_votes.py", "exec"]
    total = json.loads((cli.workspace / "data" / "daily_votes" / "2026-03-01.json").read_text())
    assert total["votes"] > 0
