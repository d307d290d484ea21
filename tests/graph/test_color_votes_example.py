"""The color_votes example: its job graph, and its jobs really producing data."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from databuild.graph import analyze, load_workspace
from databuild.model import JobGraph, JobRun

from .conftest import nothing_available

DAY = datetime.date(2026, 1, 31)
COLORS = ("red", "green", "blue")
REQUESTED = f"color_vote_report/{DAY}/red"


def days(count: int) -> list[str]:
    """The ``count`` days up to and including DAY."""
    return [(DAY - datetime.timedelta(days=n)).isoformat() for n in range(count)]


@pytest.fixture
def venv_python_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the example's ``python3`` the test's interpreter rather than a slow shim."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def expected_runs() -> dict[frozenset[str], str]:
    report = {frozenset([REQUESTED]): "color_vote_report"}
    totals = {
        frozenset([f"{kind}/{DAY}"]): "aggregate_color_votes"
        for kind in ("daily_votes", "votes_1w", "votes_1m")
    }
    trailing = {
        frozenset([f"color_votes_1w/{DAY}/{c}", f"color_votes_1m/{DAY}/{c}"]): (
            "trailing_color_votes"
        )
        for c in COLORS
    }
    ingest = {
        frozenset([f"daily_color_votes/{d}/{c}"]): "ingest_color_votes"
        for c in COLORS
        for d in days(28)
    }
    return report | totals | trailing | ingest


def expected_edges() -> set[tuple[str, str]]:
    """(a run's first output, the first output of a run it needs), as the example defines."""
    daily = [(f"daily_votes/{DAY}", f"daily_color_votes/{DAY}/{c}") for c in COLORS]
    windows = [
        (f"{total}/{DAY}", f"color_votes_1w/{DAY}/{c}")
        for total in ("votes_1w", "votes_1m")
        for c in COLORS
    ]
    trailing = [
        (f"color_votes_1w/{DAY}/{c}", f"daily_color_votes/{d}/{c}")
        for c in COLORS
        for d in days(28)
    ]
    report = [
        (REQUESTED, up)
        for up in (
            f"daily_color_votes/{DAY}/red",
            f"color_votes_1w/{DAY}/red",
            f"daily_votes/{DAY}",
            f"votes_1w/{DAY}",
            f"votes_1m/{DAY}",
        )
    ]
    return set(daily + windows + trailing + report)


def edges(graph: JobGraph) -> set[tuple[str, str]]:
    return {(run.outputs[0], up.outputs[0]) for run in graph.job_runs for up in graph.upstream(run)}


@pytest_twisted.ensureDeferred
async def test_report_analysis_has_fan_in_fan_out_windows_and_multi_output_runs(
    color_votes: Path, venv_python_first: None
) -> None:
    ws = load_workspace(color_votes)
    graph = await analyze(reactor, ws, [REQUESTED], available=nothing_available)

    runs = {frozenset(run.outputs): run.job_label for run in graph.job_runs}
    assert len(runs) == len(graph.job_runs) == 1 + 3 + 3 + 28 * 3
    assert runs == expected_runs()
    assert edges(graph) == expected_edges()
    trailing_red = graph.producer_of(f"color_votes_1m/{DAY}/red")
    assert trailing_red is not None
    assert trailing_red.outputs == (f"color_votes_1w/{DAY}/red", f"color_votes_1m/{DAY}/red")
    # Fan-out: one day's red votes feed the report, the daily total and the red windows.
    consumers = {
        run.outputs[0]
        for run in graph.job_runs
        if f"daily_color_votes/{DAY}/red" in run.config.materialize_inputs
    }
    assert consumers == {REQUESTED, f"daily_votes/{DAY}", f"color_votes_1w/{DAY}/red"}
    assert graph.job_runs[-1].outputs == (REQUESTED,)


def execute(ws_root: Path, run: JobRun) -> subprocess.CompletedProcess[str]:
    """Run a job's exec as SPEC §3.2 describes (the executor's job, done by hand here)."""
    env = {
        **os.environ,
        **run.config.env,
        "DATABUILD_JOB_RUN_ID": run.job_run_id,
        "DATABUILD_BUILD_REQUEST_ID": "test-build",
        "DATABUILD_JOB_LABEL": run.job_label,
        "DATABUILD_OUTPUTS": json.dumps(list(run.outputs)),
        "DATABUILD_WORKSPACE": str(ws_root),
    }
    script = f"jobs/{run.job_label}.py"
    return subprocess.run(
        [sys.executable, script, "exec", *run.config.args],
        input=json.dumps(run.config.to_json()),
        cwd=ws_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest_twisted.ensureDeferred
async def test_example_jobs_write_the_partitions_they_promise(
    color_votes: Path, venv_python_first: None
) -> None:
    ws = load_workspace(color_votes)
    graph = await analyze(reactor, ws, [REQUESTED], available=nothing_available)
    for run in graph.job_runs:
        done = execute(color_votes, run)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert json.loads(lines[-1])["partition"] == run.outputs[-1]

    def read(ref: str) -> dict[str, float]:
        return json.loads((color_votes / "data" / f"{ref}.json").read_text())

    for run in graph.job_runs:
        for ref in run.outputs:
            assert (color_votes / "data" / f"{ref}.json").is_file(), ref
    red_week = sum(read(f"daily_color_votes/{d}/red")["votes"] for d in days(7))
    assert read(f"color_votes_1w/{DAY}/red") == {"votes": red_week, "days": 7}
    month = sum(read(f"daily_color_votes/{d}/{c}")["votes"] for d in days(28) for c in COLORS)
    assert read(f"votes_1m/{DAY}")["votes"] == month
    report = read(REQUESTED)
    daily_share = (
        read(f"daily_color_votes/{DAY}/red")["votes"] / read(f"daily_votes/{DAY}")["votes"]
    )
    assert report["daily_share"] == round(daily_share, 4)
    assert 0 < report["monthly_share"] < 1


def test_exec_with_a_missing_input_fails_with_a_message(color_votes: Path) -> None:
    ref = f"daily_votes/{DAY}"
    done = subprocess.run(
        [sys.executable, "jobs/aggregate_color_votes.py", "exec", ref],
        input=json.dumps({"outputs": [ref]}),
        cwd=color_votes,
        env={**os.environ, "DATABUILD_OUTPUTS": json.dumps([ref])},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert f"input daily_color_votes/{DAY}/red is missing" in done.stderr
    assert not (color_votes / "data" / f"{ref}.json").exists()


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("daily_color_votes/2026-02-30/red", "bad date"),
        ("daily_color_votes/2026-02-03/pink", "unknown colour 'pink'"),
    ],
)
def test_config_for_a_bad_ref_exits_non_zero_naming_it(
    color_votes: Path, ref: str, problem: str
) -> None:
    done = subprocess.run(
        [sys.executable, "jobs/ingest_color_votes.py", "config", ref],
        cwd=color_votes,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert ref in done.stderr
    assert problem in done.stderr
