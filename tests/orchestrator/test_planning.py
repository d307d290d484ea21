"""plan_runs: which runs a build runs, skips, or waits for (pure logic)."""

from __future__ import annotations

from databuild.model import JobConfig, JobGraph, JobRun
from databuild.orchestrator.planning import Decision, plan_runs


def run(run_id: str, *outputs: str) -> JobRun:
    return JobRun(run_id, "job", JobConfig(outputs=outputs))


def plan(runs: list[JobRun], requested=(), force=False, available=(), producing=None, kept=()):
    graph = JobGraph(outputs=tuple(requested), job_runs=tuple(runs), kept=frozenset(kept))
    others = producing or {}
    return {
        p.job_run.job_run_id: p
        for p in plan_runs(
            graph,
            requested=requested,
            force=force,
            available=available,
            producing=others.get,
        )
    }


def test_outputs_not_available_are_run_and_claimed() -> None:
    plans = plan([run("r1", "a"), run("r2", "b", "c")], available={"c"})
    assert plans["r1"].decision is Decision.RUN and plans["r1"].claims == ("a",)
    assert plans["r2"].decision is Decision.RUN and plans["r2"].claims == ("b", "c")


def test_a_run_whose_outputs_are_all_available_is_skipped() -> None:
    plans = plan([run("r1", "a", "b")], available={"a", "b"})
    assert plans["r1"].decision is Decision.SKIP
    assert plans["r1"].available == ("a", "b")
    assert plans["r1"].claims == ()


def test_force_reruns_requested_refs_but_not_their_inputs() -> None:
    plans = plan(
        [run("up", "a"), run("req", "b")],
        requested=("b",),
        force=True,
        available={"a", "b"},
    )
    assert plans["req"].decision is Decision.RUN
    assert plans["up"].decision is Decision.SKIP


def test_refs_another_build_produces_are_waited_for() -> None:
    plans = plan([run("r1", "a")], producing={"a": "other"})
    assert plans["r1"].decision is Decision.SKIP
    assert dict(plans["r1"].delegated) == {"a": "other"}


def test_force_waits_for_a_build_already_producing_the_ref() -> None:
    plans = plan([run("r1", "a")], requested=("a",), force=True, producing={"a": "other"})
    assert plans["r1"].decision is Decision.SKIP
    assert dict(plans["r1"].delegated) == {"a": "other"}


def test_a_run_partly_produced_elsewhere_runs_and_claims_only_the_rest() -> None:
    plans = plan([run("r1", "a", "b")], producing={"a": "other"})
    assert plans["r1"].decision is Decision.RUN
    assert plans["r1"].claims == ("b",)


def test_available_plus_produced_elsewhere_is_skipped_with_both_recorded() -> None:
    plans = plan([run("r1", "a", "b")], available={"b"}, producing={"a": "other"})
    assert plans["r1"].decision is Decision.SKIP
    assert plans["r1"].available == ("b",)
    assert dict(plans["r1"].delegated) == {"a": "other"}


def test_a_kept_run_is_never_run_and_what_it_lost_fails() -> None:
    plans = plan(
        [run("k", "a", "b", "c")],
        requested=("a", "b", "c"),
        available={"a"},
        producing={"c": "other"},
        kept={"k"},
    )
    kept = plans["k"]
    assert kept.decision is Decision.SKIP and kept.claims == ()
    assert (kept.available, kept.lost, dict(kept.delegated)) == (("a",), ("b",), {"c": "other"})
