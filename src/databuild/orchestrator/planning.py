"""Deciding, for each run of an analysed graph, whether this build runs, skips or delegates it.

This is the synchronous heart of delegation (SPEC §1): given which refs are AVAILABLE
and which refs other live builds of this service are producing right now, every run of the
graph gets one decision. The caller claims the refs of the runs it will run in the same
synchronous step, so that two builds planning at once never both produce one ref.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping

from attrs import frozen

from databuild.model import EMPTY, JobGraph, JobRun


class Decision(enum.Enum):
    """Whether a build runs one run of its graph."""

    RUN = "run"
    """This build runs the job."""
    SKIP = "skip"
    """No output needs building: each is AVAILABLE already or being built by another build."""


@frozen
class RunPlan:
    """What a build does with one run of its graph."""

    job_run: JobRun
    decision: Decision
    available: tuple[str, ...] = ()
    """Outputs taken as they are, AVAILABLE already (SKIP only)."""
    delegated: Mapping[str, str] = EMPTY
    """Output ref -> id of the live build producing it now, which this build waits for."""
    claims: tuple[str, ...] = ()
    """Outputs this build produces and claims (RUN only)."""
    lost: tuple[str, ...] = ()
    """Outputs of a kept run that are no longer AVAILABLE (SKIP only): a build rebuilt them
    and failed since the analysis, which did not configure them, so they fail."""


def plan_runs(
    graph: JobGraph,
    *,
    requested: Collection[str],
    force: bool,
    available: Collection[str],
    producing: Callable[[str], str | None],
) -> list[RunPlan]:
    """One RunPlan per run of ``graph``, in the graph's order (``plan_run`` for each)."""
    return [
        plan_run(
            run,
            requested=requested,
            force=force,
            available=available,
            producing=producing,
            kept=run.job_run_id in graph.kept,
        )
        for run in graph.job_runs
    ]


def plan_run(
    run: JobRun,
    *,
    requested: Collection[str],
    force: bool,
    available: Collection[str],
    producing: Callable[[str], str | None],
    kept: bool = False,
) -> RunPlan:
    """What a build does with ``run``.

    ``available`` are the refs whose data is AVAILABLE; ``producing(ref)`` names the other live
    build producing ``ref`` now, or None. A run is RUN when one of its outputs is neither
    AVAILABLE nor being produced elsewhere, or when ``force`` applies to it (it outputs a
    requested ref) and some of its outputs are not being produced elsewhere. Any other run is
    SKIP: its outputs are taken as AVAILABLE or awaited from the builds producing them. A RUN
    claims the outputs no other build is producing; those another build produces are built again
    by this run too, since a job run makes all its outputs together. A ``kept`` run (see
    ``JobGraph.kept``) is never RUN: its outputs not AVAILABLE any more are ``lost``.
    """
    elsewhere = {ref: b for ref in run.outputs if (b := producing(ref)) is not None} or EMPTY
    unclaimed = (
        tuple(ref for ref in run.outputs if ref not in elsewhere) if elsewhere else run.outputs
    )
    if kept:
        return RunPlan(
            run,
            Decision.SKIP,
            available=tuple(ref for ref in unclaimed if ref in available),
            delegated=elsewhere,
            lost=tuple(ref for ref in unclaimed if ref not in available),
        )
    forced = force and any(ref in requested for ref in run.outputs)
    needed = [ref for ref in unclaimed if ref not in available]
    if needed or (forced and unclaimed):
        return RunPlan(run, Decision.RUN, claims=unclaimed)
    return RunPlan(run, Decision.SKIP, available=unclaimed, delegated=elsewhere)
