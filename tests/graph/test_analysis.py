"""Analysis: rounds, batching, deduplication, AVAILABLE pruning, cycles and failures."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import pytest_twisted
from tests.polling import poll_until_async
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed

from databuild.errors import AnalysisError, InvalidRefError, LookupFailed
from databuild.graph import analysis, analyze, load_workspace
from databuild.graph.workspace import JobSpec, Workspace
from databuild.model import JobGraph
from databuild.proc.info import alive

from .conftest import WriteWorkspace, nothing_available

# One script serves every job: it logs each call and answers from plan.json, which maps a ref
# to {"inputs": [...], "query": [...], "outputs": [...]} (outputs default to the ref itself).
PLANNED_JOB = """
import json, os, sys
label = os.path.basename(sys.argv[0])[:-3]
with open("calls.log", "a") as log:
    log.write(label + " " + " ".join(sys.argv[2:]) + "\\n")
plan = json.load(open("plan.json"))
configs = []
for ref in sys.argv[2:]:
    entry = plan.get(ref, {})
    inputs = [{"dep_type_code": 1, "partition_ref": r} for r in entry.get("inputs", [])]
    inputs += [{"dep_type_code": 0, "partition_ref": r} for r in entry.get("query", [])]
    configs.append({"outputs": entry.get("outputs", [ref]), "inputs": inputs})
print(json.dumps({"configs": configs}))
"""


def planned(
    write_workspace: WriteWorkspace, plan: Mapping[str, object], labels: Sequence[str]
) -> Workspace:
    """A workspace whose jobs (one per label, producing ``<label>/...``) follow ``plan``."""
    return write_workspace(
        {label: (rf"{label}/.*", PLANNED_JOB) for label in labels},
        files={"plan.json": json.dumps(plan)},
    )


def calls(ws: Workspace) -> list[str]:
    return (ws.root / "calls.log").read_text().splitlines()


def runs_by_outputs(graph: JobGraph) -> dict[tuple[str, ...], str]:
    return {run.outputs: run.job_label for run in graph.job_runs}


def edges(graph: JobGraph) -> set[tuple[str, str]]:
    """(run's first output, upstream run's first output) for every dependency."""
    return {(run.outputs[0], up.outputs[0]) for run in graph.job_runs for up in graph.upstream(run)}


def assert_upstream_first(graph: JobGraph) -> None:
    seen: set[str] = set()
    for run in graph.job_runs:
        assert all(up.job_run_id in seen for up in graph.upstream(run)), run
        seen.add(run.job_run_id)


class Available:
    """An ``available`` query answering from a fixed set and remembering what it was asked."""

    def __init__(self, refs: set[str]) -> None:
        self.refs = refs
        self.asked: list[list[str]] = []

    def __call__(self, refs: Sequence[str]) -> Deferred[set[str]]:
        self.asked.append(list(refs))
        return succeed(self.refs & set(refs))


@pytest_twisted.ensureDeferred
async def test_each_job_is_configured_once_per_round_and_shared_inputs_once(
    write_workspace: WriteWorkspace,
) -> None:
    ws = planned(
        write_workspace,
        {
            "top/1": {"inputs": ["mid/1", "mid/2", "mid/3"]},
            "mid/1": {"inputs": ["leaf/1", "leaf/2"]},
            "mid/2": {"inputs": ["leaf/2", "leaf/3"]},
            "mid/3": {"inputs": ["leaf/3", "leaf/4", "mid/1"]},
        },
        ["top", "mid", "leaf"],
    )
    graph = await analyze(reactor, ws, ["top/1"], available=nothing_available)
    assert calls(ws) == ["top top/1", "mid mid/1 mid/2 mid/3", "leaf leaf/1 leaf/2 leaf/3 leaf/4"]
    assert sorted(runs_by_outputs(graph)) == sorted(
        [("top/1",), ("mid/1",), ("mid/2",), ("mid/3",)] + [(f"leaf/{i}",) for i in range(1, 5)]
    )
    assert ("mid/3", "mid/1") in edges(graph)
    assert_upstream_first(graph)
    assert graph.outputs == ("top/1",)


@pytest_twisted.ensureDeferred
async def test_jobs_of_one_round_each_get_one_batch(write_workspace: WriteWorkspace) -> None:
    ws = planned(
        write_workspace,
        {"top/1": {"inputs": ["a/1", "b/1", "a/2", "b/2"]}},
        ["top", "a", "b"],
    )
    await analyze(reactor, ws, ["top/1"], available=nothing_available)
    assert sorted(calls(ws)) == ["a a/1 a/2", "b b/1 b/2", "top top/1"]


@pytest_twisted.ensureDeferred
async def test_ref_covered_by_a_multi_output_run_is_not_configured_again(
    write_workspace: WriteWorkspace,
) -> None:
    ws = planned(
        write_workspace,
        {
            "top/1": {"inputs": ["pair/a", "mid/1"]},
            "mid/1": {"inputs": ["pair/b"]},
            "pair/a": {"outputs": ["pair/a", "pair/b"]},
        },
        ["top", "mid", "pair"],
    )
    graph = await analyze(reactor, ws, ["top/1"], available=nothing_available)
    assert sorted(calls(ws)) == ["mid mid/1", "pair pair/a", "top top/1"]
    assert runs_by_outputs(graph) == {
        ("top/1",): "top",
        ("mid/1",): "mid",
        ("pair/a", "pair/b"): "pair",
    }
    assert edges(graph) == {("top/1", "pair/a"), ("top/1", "mid/1"), ("mid/1", "pair/a")}


@pytest_twisted.ensureDeferred
async def test_available_inputs_are_not_expanded_but_requested_refs_always_run(
    write_workspace: WriteWorkspace,
) -> None:
    ws = planned(
        write_workspace,
        {
            "top/1": {"inputs": ["mid/1", "mid/2"]},
            "mid/1": {"inputs": ["leaf/1"]},
            "mid/2": {"inputs": ["leaf/2"]},
        },
        ["top", "mid", "leaf"],
    )
    available = Available({"top/1", "mid/1", "leaf/1"})
    graph = await analyze(reactor, ws, ["top/1"], available=available)
    assert calls(ws) == ["top top/1", "mid mid/2", "leaf leaf/2"]
    assert set(runs_by_outputs(graph)) == {("top/1",), ("mid/2",), ("leaf/2",)}
    # The requested ref is never asked about: it gets a run whatever its status.
    assert available.asked == [["mid/1", "mid/2"], ["leaf/2"]]
    assert edges(graph) == {("top/1", "mid/2"), ("mid/2", "leaf/2")}


@pytest_twisted.ensureDeferred
async def test_kept_refs_are_not_configured_and_go_into_batched_runs_of_their_job(
    write_workspace: WriteWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analysis, "KEPT_BATCH", 2)
    ws = planned(
        write_workspace,
        {"top/1": {"inputs": ["mid/1"]}, "top/2": {"outputs": ["top/2", "top/3"]}},
        ["top", "mid"],
    )
    keep = {"top/3", "top/4", "top/5", "top/6", "mid/9"}
    requested = ["top/1", "top/2", "top/3", "top/4", "top/5", "top/6", "mid/9"]
    graph = await analyze(reactor, ws, requested, available=nothing_available, keep=keep)
    assert sorted(calls(ws)) == ["mid mid/1", "top top/1 top/2"]
    kept = [run for run in graph.job_runs if run.job_run_id in graph.kept]
    # top/3 is made by top/2's run anyway; the rest, two refs a run at most, one job's each.
    assert [(run.job_label, run.outputs) for run in kept] == [
        ("top", ("top/4", "top/5")), ("top", ("top/6",)), ("mid", ("mid/9",))
    ]
    assert all(run.config.inputs == () and run.config.args == () for run in kept)
    assert set(runs_by_outputs(graph)) == {
        ("top/1",), ("top/2", "top/3"), ("mid/1",), *(run.outputs for run in kept)
    }
    assert_upstream_first(graph)


@pytest_twisted.ensureDeferred
async def test_a_kept_ref_no_job_produces_still_fails_the_lookup(
    write_workspace: WriteWorkspace,
) -> None:
    ws = planned(write_workspace, {}, ["top"])
    with pytest.raises(LookupFailed, match="nope/1"):
        await analyze(reactor, ws, ["nope/1"], available=nothing_available, keep={"nope/1"})


@pytest_twisted.ensureDeferred
async def test_query_inputs_are_recorded_but_not_expanded(
    write_workspace: WriteWorkspace,
) -> None:
    ws = planned(write_workspace, {"top/1": {"query": ["leaf/1"]}}, ["top", "leaf"])
    graph = await analyze(reactor, ws, ["top/1"], available=nothing_available)
    assert calls(ws) == ["top top/1"]
    (run,) = graph.job_runs
    assert run.to_json()["inputs"] == [
        {"dep_type_code": 0, "dep_type_name": "query", "partition_ref": {"str": "leaf/1"}}
    ]


@pytest.mark.parametrize(
    ("plan", "cycle"),
    [
        ({"a/1": {"inputs": ["a/1"]}}, "a/1 needs a/1"),
        ({"a/1": {"inputs": ["b/1"]}, "b/1": {"inputs": ["a/1"]}}, "a/1 needs b/1 needs a/1"),
        (
            {
                "a/1": {"inputs": ["b/1"]},
                "b/1": {"inputs": ["c/1"]},
                "c/1": {"inputs": ["b/1"]},
            },
            "b/1 needs c/1 needs b/1",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_cycles_are_refused_naming_their_refs(
    write_workspace: WriteWorkspace, plan: dict[str, object], cycle: str
) -> None:
    ws = planned(write_workspace, plan, ["a", "b", "c"])
    with pytest.raises(AnalysisError) as caught:
        await analyze(reactor, ws, ["a/1"], available=nothing_available)
    assert str(caught.value) == f"dependency cycle: {cycle}"


@pytest_twisted.ensureDeferred
async def test_config_failure_upstream_fails_the_analysis(
    write_workspace: WriteWorkspace,
) -> None:
    ws = write_workspace(
        {
            "top": (r"top/.*", PLANNED_JOB),
            "leaf": (r"leaf/.*", 'import sys; sys.exit("leaf/1 is not ready")'),
        },
        files={"plan.json": json.dumps({"top/1": {"inputs": ["leaf/1"]}})},
    )
    with pytest.raises(AnalysisError) as caught:
        await analyze(reactor, ws, ["top/1"], available=nothing_available)
    assert str(caught.value) == (
        "job 'leaf': config for leaf/1 exited with code 1; stderr:\nleaf/1 is not ready"
    )


@pytest_twisted.ensureDeferred
async def test_input_no_job_produces_fails_with_lookup_error(
    write_workspace: WriteWorkspace,
) -> None:
    ws = planned(write_workspace, {"top/1": {"inputs": ["nowhere/1"]}}, ["top"])
    with pytest.raises(LookupFailed, match="'nowhere/1'"):
        await analyze(reactor, ws, ["top/1"], available=nothing_available)


@pytest_twisted.ensureDeferred
async def test_bad_requested_ref_is_refused(write_workspace: WriteWorkspace) -> None:
    ws = planned(write_workspace, {}, ["top"])
    with pytest.raises(InvalidRefError, match="whitespace"):
        await analyze(reactor, ws, ["top/1 2"], available=nothing_available)


@pytest_twisted.ensureDeferred
async def test_target_job_needs_a_resolver_that_can_build_it(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_text(
        '[graph]\nlabel = "g"\n[[jobs]]\nlabel = "//j:j"\noutputs = ["j/.*"]\ntarget = "//j:j"\n'
    )
    ws = load_workspace(tmp_path)
    with pytest.raises(AnalysisError, match="job '//j:j' is the Bazel target '//j:j'"):
        await analyze(reactor, ws, ["j/1"], available=nothing_available)

    (tmp_path / "j.py").write_text(PLANNED_JOB)
    (tmp_path / "plan.json").write_text("{}")
    asked: list[list[str]] = []

    def resolve(jobs: Sequence[JobSpec]) -> Deferred[dict[str, tuple[str, ...]]]:
        asked.append([job.label for job in jobs])
        return succeed({job.label: (sys.executable, "j.py") for job in jobs})

    graph = await analyze(reactor, ws, ["j/1", "j/2"], available=nothing_available, resolve=resolve)
    assert asked == [["//j:j"]]
    assert [(run.job_label, run.outputs) for run in graph.job_runs] == [
        ("//j:j", ("j/1",)),
        ("//j:j", ("j/2",)),
    ]


# Each of these jobs' config waits for the other's to have started, so the analysis only
# finishes if both run at the same time.
RENDEZVOUS_JOB = """
import json, os, sys, time
label = os.path.basename(sys.argv[0])[:-3]
other = {"a": "b", "b": "a"}[label]
open(label + ".started", "w").close()
deadline = time.monotonic() + 20
while not os.path.exists(other + ".started"):
    if time.monotonic() > deadline:
        sys.exit(label + " never met " + other)
    time.sleep(0.01)
print(json.dumps({"configs": [{"outputs": [r]} for r in sys.argv[2:]]}))
"""


@pytest_twisted.ensureDeferred
async def test_configs_of_different_jobs_in_one_round_run_concurrently(
    write_workspace: WriteWorkspace,
) -> None:
    ws = write_workspace({"a": (r"a/.*", RENDEZVOUS_JOB), "b": (r"b/.*", RENDEZVOUS_JOB)})
    graph = await analyze(
        reactor, ws, ["a/1", "b/1"], available=nothing_available, max_concurrent_configs=2
    )
    assert {run.outputs for run in graph.job_runs} == {("a/1",), ("b/1",)}


@pytest_twisted.ensureDeferred
async def test_custom_lookup_is_asked_once_per_round(write_workspace: WriteWorkspace) -> None:
    ws = write_workspace(
        {"top": (r"top/.*", PLANNED_JOB), "leaf": (r"leaf/.*", PLANNED_JOB)},
        extra=f"lookup = {json.dumps([sys.executable, 'lookup.py'])}\n",
        files={
            "plan.json": json.dumps({"top/1": {"inputs": ["leaf/1", "leaf/2"]}}),
            "lookup.py": """
                import json, sys
                open("lookups.log", "a").write(" ".join(sys.argv[1:]) + "\\n")
                owner = {}
                for ref in sys.argv[1:]:
                    owner.setdefault(ref.split("/")[0], []).append(ref)
                print(json.dumps(owner))
            """,
        },
    )
    graph = await analyze(reactor, ws, ["top/1"], available=nothing_available)
    assert (ws.root / "lookups.log").read_text().splitlines() == ["top/1", "leaf/1 leaf/2"]
    assert len(graph.job_runs) == 3


@pytest_twisted.ensureDeferred
async def test_graph_that_never_ends_is_refused(
    write_workspace: WriteWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analysis, "MAX_JOB_RUNS", 5)
    ws = write_workspace(
        {
            "chain": (
                r"chain/\d+",
                """
                import json, sys
                print(json.dumps({"configs": [
                    {"outputs": [r], "inputs": [
                        {"partition_ref": "chain/%d" % (int(r.split("/")[1]) + 1)}]}
                    for r in sys.argv[2:]]}))
                """,
            )
        }
    )
    with pytest.raises(AnalysisError, match=r"grew past 5 job runs.*runs of chain"):
        await analyze(reactor, ws, ["chain/1"], available=nothing_available)


@pytest_twisted.ensureDeferred
async def test_cancelling_analysis_kills_the_config_processes(
    write_workspace: WriteWorkspace,
) -> None:
    ws = write_workspace(
        {
            "slow": (
                r"slow/.*",
                'import os, time; open("config.pid", "w").write(str(os.getpid())); time.sleep(60)',
            )
        }
    )
    analysing = analyze(reactor, ws, ["slow/1"], available=nothing_available)
    pid_file = ws.root / "config.pid"
    await poll_until_async(
        lambda: pid_file.exists() and pid_file.read_text() != "", "the config's pid file"
    )
    pid = int(pid_file.read_text())
    analysing.cancel()
    with pytest.raises(CancelledError):
        await analysing
    await poll_until_async(lambda: not alive(pid), "the config process to be gone")
