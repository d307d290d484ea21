"""The living service, end to end through the installed CLI: it follows databuild.toml while it
runs (SPEC §5.7), and the CLI restarts it when it no longer fits (SPEC §6)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.polling import poll_until

from databuild.proc.info import alive

from .conftest import Run, server_info, service_pid

Spawn = Callable[..., subprocess.Popen[str]]

STEP_JOB = '''\
"""`step.py TAG config REF...` / `step.py TAG exec REF`: a ref after/N needs gated/N, and the
run of gated/N waits until the file `gate` exists. Every exec appends `TAG REF` to runs.txt."""
import json, sys, time
from pathlib import Path

tag, entry, *refs = sys.argv[1:]
if entry == "config":
    configs = []
    for ref in refs:
        kind, name = ref.split("/", 1)
        inputs = [{"partition_ref": f"gated/{name}"}] if kind == "after" else []
        configs.append({"outputs": [ref], "inputs": inputs, "args": [ref]})
    print(json.dumps({"configs": configs}))
    sys.exit(0)
ref = refs[0]
if ref.startswith("gated/"):
    Path("started").write_text(ref)
    while not Path("gate").exists():
        time.sleep(0.05)
with open("runs.txt", "a") as f:
    f.write(f"{tag} {ref}\\n")
'''


def step_jobs(tag: str = "v1", *labels: str) -> str:
    """``[[jobs]]`` tables for ``labels`` (each producing ``<label>/...``), run by step.py."""
    return "".join(
        f'\n[[jobs]]\nlabel = "{label}"\noutputs = [\'{label}/[a-z0-9]+\']\n'
        f'command = ["python3", "step.py", "{tag}"]\n'
        for label in labels
    )


@pytest.fixture
def graph(workspace: Path) -> Callable[[str], None]:
    """Sets the graph file to the workspace's original one plus ``extra``, as an editor
    would (its size or mtime change)."""
    (workspace / "step.py").write_text(STEP_JOB)
    original = (workspace / "databuild.toml").read_text()

    def write(extra: str) -> None:
        (workspace / "databuild.toml").write_text(original + extra)

    return write


def runs(workspace: Path) -> list[str]:
    path = workspace / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def api(workspace: Path, path: str) -> dict:
    """GET ``path`` from the workspace's service with its token (what the CLI does not show)."""
    info = server_info(workspace)
    assert info is not None
    request = urllib.request.Request(
        info["url"] + path, headers={"Authorization": f"Bearer {info['token']}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def json_of(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- following the workspace ---------------------------------------------------------------


def test_a_job_added_while_the_service_runs_is_built_by_the_same_service(
    workspace: Path, databuild: Run, graph: Callable[[str], None]
) -> None:
    assert databuild("builds", "list").returncode == 0
    pid = service_pid(workspace)
    before = api(workspace, "/api/v1/health")["graph"]
    graph(step_jobs("v1", "tagged"))

    built = databuild("build", "tagged/a")
    assert built.returncode == 0, built.stderr
    assert runs(workspace) == ["v1 tagged/a"]
    assert service_pid(workspace) == pid and alive(pid)  # type: ignore[arg-type]

    after = api(workspace, "/api/v1/health")["graph"]
    assert after["label"] == before["label"] == "color_votes"
    assert after["fingerprint"] != before["fingerprint"]
    assert after["loaded_at"] > before["loaded_at"]
    log = (workspace / ".databuild" / "service.log").read_text()
    assert "jobs added: tagged" in log
    build_id = json_of(databuild("builds", "list", "--format", "json"))["builds"][0][
        "build_request_id"
    ]
    events = api(workspace, f"/api/v1/events?build_request_id={build_id}&limit=1000")["events"]
    (planned,) = [e for e in events if e["event_type"] == "job_graph"]
    assert planned["graph_fingerprint"] == after["fingerprint"]
    analyzed = json_of(databuild("analyze", "tagged/b", "--format", "json"))
    assert analyzed["graph_fingerprint"] == after["fingerprint"]


def test_a_changed_command_runs_on_force(
    workspace: Path, databuild: Run, graph: Callable[[str], None]
) -> None:
    graph(step_jobs("v1", "tagged"))
    assert databuild("build", "tagged/a").returncode == 0
    pid = service_pid(workspace)
    graph(step_jobs("v2", "tagged"))

    forced = databuild("build", "--force", "tagged/a")
    assert forced.returncode == 0, forced.stderr
    assert runs(workspace) == ["v1 tagged/a", "v2 tagged/a"]
    assert service_pid(workspace) == pid
    assert "jobs changed: tagged" in (workspace / ".databuild" / "service.log").read_text()


def test_a_broken_graph_file_is_refused_naming_the_line_and_the_service_stays_up(
    workspace: Path, databuild: Run, graph: Callable[[str], None]
) -> None:
    graph(step_jobs("v1", "tagged"))
    assert databuild("build", "tagged/a").returncode == 0
    pid = service_pid(workspace)
    graph(step_jobs("v1", "tagged") + "\n[[jobs]\nlabel = 'broken'\n")

    for command in (("build", "tagged/b"), ("analyze", "tagged/b")):
        refused = databuild(*command)
        assert refused.returncode == 2, refused.stderr
        assert "databuild.toml" in refused.stderr and "line" in refused.stderr, refused.stderr
    assert alive(pid) and service_pid(workspace) == pid  # type: ignore[arg-type]
    builds = json_of(databuild("builds", "list", "--format", "json"))["builds"]
    assert len(builds) == 1  # nothing was recorded for the refused requests

    graph(step_jobs("v1", "tagged"))
    built = databuild("build", "tagged/b")
    assert built.returncode == 0, built.stderr
    assert runs(workspace) == ["v1 tagged/a", "v1 tagged/b"]
    assert service_pid(workspace) == pid


def test_a_build_running_across_an_edit_completes_with_its_own_graph(
    workspace: Path, databuild: Run, graph: Callable[[str], None], spawn_databuild: Spawn
) -> None:
    graph(step_jobs("v1", "gated", "after"))
    running = spawn_databuild("build", "after/x")
    poll_until(lambda: (workspace / "started").exists(), "the gated run to start")
    # The edit changes the downstream job's command and drops the running job from the graph.
    graph(step_jobs("v2", "after"))
    assert databuild("analyze", "after/y").returncode != 0  # the new graph has no gated job
    (workspace / "gate").touch()
    _, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    assert runs(workspace) == ["v1 gated/x", "v1 after/x"]

    graph(step_jobs("v2", "gated", "after"))
    assert databuild("build", "--force", "after/x").returncode == 0
    assert runs(workspace)[-1] == "v2 after/x"


# --- restart rules -------------------------------------------------------------------------


def test_another_event_log_restarts_an_idle_service_naming_both_values(
    workspace: Path, databuild: Run
) -> None:
    assert databuild("builds", "list").returncode == 0
    old = service_pid(workspace)
    other = workspace / "other.sqlite"
    moved = databuild("builds", "list", env={"DATABUILD_BUILD_EVENT_LOG": str(other)})
    assert moved.returncode == 0, moved.stderr
    default = workspace.resolve() / ".databuild" / "bel.sqlite"
    assert f"databuild: restarting the service: event log {default} -> {other}\n" in moved.stderr
    new = service_pid(workspace)
    assert new != old and not alive(old)  # type: ignore[arg-type]
    assert server_info(workspace)["event_log"] == str(other)  # type: ignore[index]
    # Spelled otherwise but the same file: no restart.
    same = databuild("builds", "list", env={"DATABUILD_BUILD_EVENT_LOG": "other.sqlite"})
    assert same.returncode == 0 and "restarting" not in same.stderr
    assert service_pid(workspace) == new


def test_another_event_log_while_builds_run_exits_2_and_leaves_the_service_alone(
    workspace: Path, databuild: Run
) -> None:
    started = databuild("build", "--background", "slow/busy")
    assert started.returncode == 0, started.stderr
    build_id = started.stdout.strip()
    poll_until(lambda: (workspace / "slow_pids" / "slow_busy").exists(), "the slow job to start")
    pid = service_pid(workspace)
    other = workspace / "other.sqlite"

    refused = databuild("builds", "list", env={"DATABUILD_BUILD_EVENT_LOG": str(other)})
    assert refused.returncode == 2
    default = workspace.resolve() / ".databuild" / "bel.sqlite"
    assert f"event log {default} -> {other}" in refused.stderr
    assert "databuild service restart" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert service_pid(workspace) == pid and alive(pid)  # type: ignore[arg-type]
    shown = json_of(databuild("builds", "show", build_id, "--format", "json"))
    assert shown["status"] == "BUILD_REQUEST_EXECUTING"
    assert not other.exists()


def test_another_idle_timeout_is_no_reason_to_restart(workspace: Path, databuild: Run) -> None:
    assert databuild("builds", "list").returncode == 0
    pid = service_pid(workspace)
    listed = databuild("builds", "list", env={"DATABUILD_SERVICE_TIMEOUT": "45"})
    assert listed.returncode == 0 and "restarting" not in listed.stderr
    assert service_pid(workspace) == pid


def test_a_service_of_another_version_is_restarted(workspace: Path, databuild: Run) -> None:
    old_version = {"DATABUILD_TEST_SERVICE_VERSION": "0.0.1"}
    assert databuild("builds", "list", env=old_version).returncode == 0
    old = service_pid(workspace)
    both = databuild("--version")
    assert both.stdout.splitlines()[1].startswith("service 0.0.1 at http://")

    listed = databuild("builds", "list")
    assert listed.returncode == 0, listed.stderr
    current = databuild("--version").stdout.splitlines()
    version = current[0].split()[1]
    assert f"databuild: restarting the service: version 0.0.1 -> {version}\n" in listed.stderr
    assert service_pid(workspace) != old and not alive(old)  # type: ignore[arg-type]
    assert current[1].startswith(f"service {version} at http://")


def test_with_a_service_url_nothing_is_restarted_and_a_version_difference_is_one_warning(
    workspace: Path, databuild: Run
) -> None:
    old_version = {"DATABUILD_TEST_SERVICE_VERSION": "0.0.1"}
    assert databuild("builds", "list", env=old_version).returncode == 0
    pid = service_pid(workspace)
    info = server_info(workspace)
    assert info is not None
    remote = {"DATABUILD_SERVICE_URL": info["url"], "DATABUILD_SERVICE_TOKEN": info["token"]}
    listed = databuild("builds", "list", env=remote)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.count("runs version 0.0.1") == 1, listed.stderr
    assert service_pid(workspace) == pid


def test_service_restart_starts_a_new_service_and_force_cancels_running_builds(
    workspace: Path, databuild: Run
) -> None:
    assert databuild("builds", "list").returncode == 0
    first = service_pid(workspace)
    restarted = databuild("service", "restart")
    assert restarted.returncode == 0, restarted.stderr
    second = service_pid(workspace)
    assert second != first and not alive(first)  # type: ignore[arg-type]

    build_id = databuild("build", "--background", "slow/r").stdout.strip()
    poll_until(lambda: (workspace / "slow_pids" / "slow_r").exists(), "the slow job to start")
    forced = databuild("service", "restart", "--force")
    assert forced.returncode == 0, forced.stderr
    assert service_pid(workspace) not in (first, second)
    shown = json_of(databuild("builds", "show", build_id, "--format", "json"))
    assert shown["status"] == "BUILD_REQUEST_CANCELLED"


def test_service_restart_waits_for_running_builds(
    workspace: Path, databuild: Run, graph: Callable[[str], None], spawn_databuild: Spawn
) -> None:
    graph(step_jobs("v1", "gated"))
    build_id = databuild("build", "--background", "gated/w").stdout.strip()
    poll_until(lambda: (workspace / "started").exists(), "the gated run to start")
    first = service_pid(workspace)
    restart = spawn_databuild("service", "restart")
    assert restart.stderr is not None
    assert "waiting for the running builds to end" in restart.stderr.readline()
    assert alive(first)  # type: ignore[arg-type]
    (workspace / "gate").touch()
    _, err = restart.communicate(timeout=120)
    assert restart.returncode == 0, err
    assert service_pid(workspace) != first
    shown = json_of(databuild("builds", "show", build_id, "--format", "json"))
    assert shown["status"] == "BUILD_REQUEST_COMPLETED"


def test_service_status_shows_url_version_graph_uptime_and_active_builds(
    workspace: Path, databuild: Run
) -> None:
    assert databuild("builds", "list").returncode == 0
    status = databuild("service", "status")
    assert status.returncode == 0, status.stderr
    info = server_info(workspace)
    health = api(workspace, "/api/v1/health")
    for expected in (info["url"], f"version:       {health['version']}",  # type: ignore[index]
                     health["graph"]["fingerprint"], "uptime:", "active builds: 0"):
        assert expected in status.stdout, status.stdout


# --- cut lists and id prefixes -------------------------------------------------------------

SEED = """\
import sys
from pathlib import Path
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from databuild.bel import BuildRequestEvent, Event, open_event_log

async def seed(reactor, path, ids):
    log = open_event_log(path, Path.cwd(), reactor)
    await log.open()
    for build_id in ids:
        await log.append(Event(build_id, BuildRequestEvent("received", ("seed/1",))))
        await log.append(Event(build_id, BuildRequestEvent("cancelled", (), "seeded")))
    await log.close()

task.react(lambda reactor: ensureDeferred(seed(reactor, sys.argv[1], sys.argv[2:])))
"""
TWINS = ("abcdef01" + "0" * 24, "abcdef02" + "0" * 24)
LONER = "123456789" + "0" * 23


def test_lists_say_when_they_are_cut_and_ids_resolve_by_unique_prefix(
    workspace: Path, databuild: Run
) -> None:
    state = workspace / ".databuild"
    state.mkdir()
    subprocess.run(
        [sys.executable, "-c", SEED, str(state / "bel.sqlite"), *TWINS, LONER], check=True
    )
    cut = databuild("builds", "list", "--limit", "2")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout.splitlines()[-1] == "(showing 2 of 3; --limit/--offset for more)"
    listed = json_of(databuild("builds", "list", "--limit", "2", "--format", "json"))
    assert (len(listed["builds"]), listed["total"], listed["has_more"]) == (2, 3, True)
    whole = databuild("builds", "list")
    assert "showing" not in whole.stdout

    assert json_of(databuild("builds", "show", "1234567", "--format", "json"))[
        "build_request_id"
    ] == LONER
    assert json_of(databuild("builds", "show", "abcdef02", "--format", "json"))[
        "build_request_id"
    ] == TWINS[1]
    ambiguous = databuild("builds", "show", "abcdef")
    assert ambiguous.returncode == 2
    assert all(twin in ambiguous.stderr for twin in TWINS), ambiguous.stderr
    assert databuild("builds", "show", "abcde").returncode == 4  # under 6 characters: as typed

    built = databuild("build", "--format", "json", "daily_color_votes/2026-03-01/red")
    assert built.returncode == 0, built.stderr
    build_id = json.loads(built.stdout.splitlines()[-1])["build_request_id"]
    tasks = json_of(databuild("tasks", "list", "--build", build_id[:8], "--format", "json"))
    (task,) = tasks["tasks"]
    shown = json_of(databuild("tasks", "show", task["job_run_id"][:7], "--format", "json"))
    assert shown["job_run_id"] == task["job_run_id"]
    assert databuild("tasks", "logs", task["job_run_id"][:7]).returncode == 0
    tailed = databuild("tail", build_id[:6])
    assert tailed.returncode == 0, tailed.stderr


def test_jobs_list_shows_skipped_runs_in_a_column_of_their_own(
    workspace: Path, databuild: Run
) -> None:
    ref = "daily_color_votes/2026-03-02/red"
    for _ in range(2):  # the second build finds the partition AVAILABLE and skips the run
        assert databuild("build", ref).returncode == 0
    (job,) = [
        j for j in json_of(databuild("jobs", "list", "--format", "json"))["jobs"]
        if j["job_label"] == "ingest_color_votes"
    ]  # fmt: skip
    assert (job["runs"], job["skipped"], job["succeeded"]) == (1, 1, 1)
    table = databuild("jobs", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["JOB", "RUNS", "SKIPPED", "SUCCEEDED"]
    (row,) = [line.split() for line in table if line.startswith("ingest_color_votes")]
    assert row[1:4] == ["1", "1", "1"]
    # One meaning of "runs": `jobs show` says what `jobs list` says.
    shown = databuild("jobs", "show", "ingest_color_votes").stdout.splitlines()
    assert [line.split() for line in shown if line.startswith(("runs:", "skipped:"))] == [
        ["runs:", "1"], ["skipped:", "1"],
    ]
