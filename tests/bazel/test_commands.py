"""The command resolver (JobCommands) against a real (offline) Bazel: builds, failures and
one command at a time."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import evolve
from tests.polling import poll_until_async
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher

from databuild.errors import AnalysisError
from databuild.executor.bazel import Bazel
from databuild.executor.commands import JobCommands
from databuild.graph.workspace import JobSpec, Workspace, load_workspace
from databuild.proc.info import alive

from .conftest import BAZEL, job_env

# Records each call's start and end around the real command. Terminated, it records that it is
# stopping, and its end only a moment later: a lock released before the command has ended would
# let the next call start before that "end".
RECORDING_BAZEL = """#!/bin/sh
trap 'echo "stopping $$" >> "{record}"; sleep 0.5; echo "end $$" >> "{record}"; exit 143' TERM
echo "start $$" >> "{record}"
"$@"
status=$?
echo "end $$" >> "{record}"
exit $status
"""


def target_job(label: str, target: str) -> JobSpec:
    return JobSpec(label=label, outputs=(re.compile(f"{label}/.*"),), target=target)


def with_bazel_command(workspace: Workspace, command: tuple[str, ...]) -> Workspace:
    return evolve(workspace, bazel=evolve(workspace.bazel, command=command))


def commands(workspace: Workspace) -> JobCommands:
    return JobCommands(reactor, workspace, env=job_env())


class LogLines:
    """Collects the messages of events logged from one module while active."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith(self.namespace):
            self.events.append(event)

    def __enter__(self) -> LogLines:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def formats(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["log_format"].startswith(prefix)]


@pytest.fixture(scope="module")
def workspace(bazel_workspace: Path) -> Workspace:
    return load_workspace(bazel_workspace)


@pytest_twisted.ensureDeferred
async def test_target_jobs_resolve_to_executables_built_under_bazel_bin(
    workspace: Workspace,
) -> None:
    targets = [job for job in workspace.jobs if job.target is not None]
    assert targets, "the example declares its jobs as Bazel targets"

    with LogLines("databuild.executor.bazel") as log:
        argv = await commands(workspace).resolve(workspace.jobs)

    assert set(argv) == {job.label for job in workspace.jobs}
    (started,) = log.formats("bazel build started")
    assert started["workspace"] == str(workspace.root)
    assert set(started["targets"]) == {job.target for job in targets}
    assert any("Build completed successfully" in e.get("line", "") for e in log.events)
    for job in targets:
        (executable,) = argv[job.label]
        package, _, name = job.target.removeprefix("//").partition(":")
        assert Path(executable).parts[-2:] == (package.split("/")[-1], name)
        assert "bazel-out" in Path(executable).parts
        assert os.access(executable, os.X_OK)


@pytest_twisted.ensureDeferred
async def test_built_job_answers_the_job_protocol_when_run_directly(workspace: Workspace) -> None:
    job = next(job for job in workspace.jobs if job.target is not None)
    argv = await commands(workspace).resolve([job])
    ref = _example_ref(job)

    out, err, code = await getProcessOutputAndValue(
        argv[job.label][0], ("config", ref), env=job_env(), path=str(workspace.root)
    )

    assert code == 0, err.decode()
    configs = json.loads(out)["configs"]
    assert ref in json.dumps(configs)


@pytest_twisted.ensureDeferred
async def test_mixed_jobs_keep_commands_and_build_only_targets(workspace: Workspace) -> None:
    command = JobSpec(label="plain", outputs=(re.compile("plain/.*"),), command=("echo", "hi"))
    target = next(job for job in workspace.jobs if job.target is not None)

    with LogLines("databuild.executor.bazel") as log:
        argv = await commands(workspace).resolve([command, target])

    assert argv["plain"] == ("echo", "hi")
    assert argv[target.label][0].endswith(target.target.rpartition(":")[2])
    (started,) = log.formats("bazel build started")
    assert started["targets"] == (target.target,)


@pytest_twisted.ensureDeferred
async def test_only_commands_never_run_bazel(workspace: Workspace) -> None:
    command = JobSpec(label="plain", outputs=(re.compile("plain/.*"),), command=("true",))
    broken = with_bazel_command(workspace, ("/nonexistent/bazel",))

    with LogLines("databuild.executor.bazel") as log:
        argv = await commands(broken).resolve([command])

    assert argv == {"plain": ("true",)}
    assert log.events == []


@pytest_twisted.ensureDeferred
async def test_target_that_fails_to_build_raises_analysis_error_with_bazels_error(
    workspace: Workspace,
) -> None:
    job = target_job("broken", "//broken:missing_source")

    with pytest.raises(AnalysisError) as caught:
        await commands(workspace).resolve([job])

    message = str(caught.value)
    assert "//broken:missing_source" in message
    assert "ERROR:" in message
    assert "missing_source.py" in message


@pytest_twisted.ensureDeferred
async def test_target_that_builds_no_executable_is_refused(workspace: Workspace) -> None:
    job = target_job("library", "//jobs:shared")

    with pytest.raises(AnalysisError) as caught:
        await commands(workspace).resolve([job])

    assert "job library: bazel built //jobs:shared but there is no executable" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_a_target_that_is_no_label_fails_without_running_bazel(workspace: Workspace) -> None:
    job = target_job("odd", "jobs:ingest")

    with LogLines("databuild.executor.bazel") as log, pytest.raises(AnalysisError) as caught:
        await commands(workspace).resolve([job])

    assert "job odd" in str(caught.value)
    assert "'jobs:ingest' is not an absolute Bazel label" in str(caught.value)
    assert log.events == []


@pytest_twisted.ensureDeferred
async def test_missing_bazel_command_is_named_in_the_error(workspace: Workspace) -> None:
    job = next(job for job in workspace.jobs if job.target is not None)
    missing = with_bazel_command(workspace, ("/nonexistent/bazel",))

    with pytest.raises(AnalysisError) as caught:
        await commands(missing).resolve([job])

    assert "'/nonexistent/bazel' was not found" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_concurrent_resolves_run_bazel_strictly_one_at_a_time(
    workspace: Workspace, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    shared = commands(with_bazel_command(workspace, (wrapper(tmp_path, RECORDING_BAZEL), *BAZEL)))
    jobs = [job for job in workspace.jobs if job.target is not None]

    with LogLines("databuild.executor.bazel") as log:
        results = await defer.gatherResults(
            [shared.resolve(jobs), shared.resolve(jobs[:1]), shared.resolve(jobs)],
            consumeErrors=True,
        )

    assert [set(r) for r in results] == [
        {j.label for j in jobs},
        {jobs[0].label},
        {j.label for j in jobs},
    ]
    lines = [line.split() for line in record.read_text().splitlines()]
    # Three builds and the one `bazel info bazel-bin`, each ended before the next started.
    assert [kind for kind, _ in lines] == ["start", "end"] * 4
    assert all(lines[i][1] == lines[i + 1][1] for i in range(0, 8, 2))
    build_lines = [
        e["log_format"].split(":")[0]
        for e in log.events
        if e["log_format"].startswith("bazel build")
    ]
    assert build_lines == ["bazel build started", "bazel build finished"] * 3


@pytest_twisted.ensureDeferred
async def test_cancelled_resolve_stops_bazel_and_frees_the_lock_only_after_it_ended(
    workspace: Workspace, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    shared = commands(with_bazel_command(workspace, (wrapper(tmp_path, RECORDING_BAZEL), *BAZEL)))
    job = next(job for job in workspace.jobs if job.target is not None)

    with LogLines("databuild.executor.bazel") as log:
        endless = shared.resolve([target_job("slow", "//slow:slow")])
        await poll_until_async(
            lambda: any("genrule //slow:forever" in e.get("line", "") for e in log.events),
            "bazel to run the slow genrule", timeout_s=60,
        )
        queued = shared.resolve([job])
        endless.cancel()

        with pytest.raises(defer.CancelledError):
            await endless
        argv = await queued

    assert job.label in argv
    kinds = [line.split()[0] for line in record.read_text().splitlines()]
    # The endless build, stopped; then the queued one's build and its `bazel info`.
    assert kinds == ["start", "stopping", "end", "start", "end", "start", "end"]
    finished = [e for e in log.events if e["log_format"].startswith("bazel build finished")]
    assert [e["outcome"] for e in finished] == ["cancelled", "exited with code 0"]


@pytest_twisted.ensureDeferred
async def test_bazel_s_server_outlives_each_command_and_serves_the_next(
    workspace: Workspace,
) -> None:
    # The service ends what a program leaves behind; Bazel's server is the exception
    # (docs/bazel.md): ended after each command, every build would start a new one.
    bazel = Bazel(reactor, workspace.root, BAZEL, workspace.bazel.build_flags, job_env())

    first = int(await bazel.info("server_pid"))
    second = int(await bazel.info("server_pid"))

    assert second == first
    assert alive(first)


def wrapper(directory: Path, script: str) -> str:
    """A Bazel command that records its calls in ``directory/record`` around ``"$@"``."""
    path = directory / "bazel-wrapper"
    path.write_text(script.format(record=directory / "record"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _example_ref(job: JobSpec) -> str:
    """A ref the job's first output pattern matches, for the example's date/colour groups."""
    pattern = job.outputs[0].pattern
    values = {"date": "2026-01-02", "color": "red"}
    ref = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values.get(m[1], "x"), pattern)
    assert job.outputs[0].fullmatch(ref), (pattern, ref)
    return ref


@pytest_twisted.ensureDeferred
async def test_workspace_outside_any_bazel_workspace_gets_bazels_explanation(
    tmp_path: Path,
) -> None:
    (tmp_path / "databuild.toml").write_text(
        '[graph]\nlabel = "lonely"\n\n'
        '[[jobs]]\nlabel = "tool"\noutputs = ["tool/.+"]\ntarget = "//tools:tool"\n'
    )
    workspace = with_bazel_command(load_workspace(tmp_path), BAZEL)

    with pytest.raises(AnalysisError) as caught:
        await commands(workspace).resolve(workspace.jobs)

    assert "bazel build of //tools:tool failed" in str(caught.value)
    assert "only supported from within a workspace" in str(caught.value)
