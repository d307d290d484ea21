"""Analysis (SPEC §3.4): turning requested refs into a job graph.

Analysis goes in rounds. Each round looks up the jobs of the refs not yet covered, calls each
job's ``config`` once for its batch of refs (batches of different jobs concurrently), and adds
one job run per config. The next round takes every ``materialize`` input that no run covers
and that is not AVAILABLE already. When no such input is left, the runs are checked for
cycles and put in dependency order, upstream first.

Everything that grows with the request (lookup, making runs of configs, the dependency order)
is done a slice at a time (``databuild.slices``), so a request of 100,000 refs never holds the
reactor for long. Requested refs a build keeps as they are (AVAILABLE, not forced) are looked
up but never configured: they go into the graph's ``kept`` runs, which the build only skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence

from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    FirstError,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import Cooperator
from twisted.logger import Logger

from databuild.errors import AnalysisError
from databuild.graph.commands import CommandResolver, plain_commands
from databuild.graph.config import run_config
from databuild.graph.lookup import Assignment, lookup
from databuild.graph.workspace import Workspace
from databuild.ids import new_id
from databuild.model import JobConfig, JobGraph, JobRun, describe_refs, validate_refs
from databuild.slices import collect_in_slices, in_slices

AvailableQuery = Callable[[Sequence[str]], Deferred[set[str]]]
"""Answers which of some refs are AVAILABLE now."""

MAX_JOB_RUNS = 100_000
"""A graph growing past this many runs is taken for a job whose inputs never end."""
KEPT_BATCH = 250
"""Requested refs kept as they are go into runs of at most this many outputs each: a build
records a kept run's skip (two events per ref) in one turn of the reactor."""


def analyze(
    reactor: IReactorProcess,
    workspace: Workspace,
    refs: Sequence[str],
    *,
    available: AvailableQuery,
    resolve: CommandResolver = plain_commands,
    keep: Collection[str] = (),
    max_concurrent_configs: int | None = None,
    cooperator: Cooperator | None = None,
) -> Deferred[JobGraph]:
    """Analyse a build of ``refs`` into a JobGraph.

    Every requested ref gets a run, AVAILABLE or not (the orchestrator records the skip, or
    rebuilds it for a forced build). Requested refs in ``keep`` (AVAILABLE, a build that will
    not rebuild them) are looked up but not configured: they go into the graph's ``kept`` runs,
    a batch of each job's refs per run, unless a configured run makes them anyway. A
    ``materialize`` input that is AVAILABLE is not expanded. Errbacks with InvalidRefError,
    LookupFailed or AnalysisError (a job's config failed, a dependency cycle, a graph without
    end). ``cooperator`` runs the slices (Twisted's own by default).
    """
    analysis = _Analysis(
        reactor,
        workspace,
        available,
        resolve,
        DeferredSemaphore(max_concurrent_configs or os.cpu_count() or 2),
        cooperator,
    )
    return ensureDeferred(analysis.run(refs, keep))


class _Analysis:
    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        workspace: Workspace,
        available: AvailableQuery,
        resolve: CommandResolver,
        configs_at_once: DeferredSemaphore,
        cooperator: Cooperator | None,
    ) -> None:
        self._reactor = reactor
        self._workspace = workspace
        self._available = available
        self._resolve = resolve
        self._configs_at_once = configs_at_once
        self._cooperator = cooperator
        self._commands: dict[str, tuple[str, ...]] = {}
        self._runs: list[JobRun] = []
        self._producers: dict[str, JobRun] = {}
        self._known_available: set[str] = set()

    async def run(self, refs: Sequence[str], keep: Collection[str]) -> JobGraph:
        requested = validate_refs(refs)
        assignment = await self._lookup(requested)
        kept: dict[str, list[str]] = {}
        if keep:
            kept, assignment = await self._split(assignment, keep)
        new_runs = await self._round(assignment)
        while pending := await self._unbuilt_inputs(new_runs):
            new_runs = await self._round(await self._lookup(pending))
        ordered = await collect_in_slices(_upstream_first(self._runs), self._cooperator)
        kept_runs = await collect_in_slices(self._kept_runs(kept), self._cooperator)
        graph = JobGraph(
            outputs=requested,
            job_runs=(*kept_runs, *ordered),
            kept=frozenset(run.job_run_id for run in kept_runs),
        )
        self.log.debug(
            "analysed {refs} into {count} job runs, {kept} of them kept refs",
            refs=describe_refs(requested),
            count=len(graph.job_runs),
            kept=len(kept_runs),
        )
        return graph

    async def _split(
        self, assignment: Assignment, keep: Collection[str]
    ) -> tuple[dict[str, list[str]], Assignment]:
        """``assignment``'s refs in ``keep``, and the others, each by job."""
        kept: dict[str, list[str]] = {}
        rest: dict[str, list[str]] = {}

        def place(labelled: tuple[str, str]) -> None:
            label, ref = labelled
            (kept if ref in keep else rest).setdefault(label, []).append(ref)

        pairs = ((label, ref) for label, refs in assignment.items() for ref in refs)
        await in_slices(pairs, place, self._cooperator)
        return kept, {label: tuple(refs) for label, refs in rest.items()}

    def _kept_runs(self, kept: dict[str, list[str]]) -> Iterator[JobRun]:
        """Runs of at most KEPT_BATCH kept refs, one job's each; a ref a configured run makes
        is left to that run."""
        for label, refs in kept.items():
            batch: list[str] = []
            for ref in refs:
                if ref not in self._producers:
                    batch.append(ref)
                if len(batch) == KEPT_BATCH:
                    yield JobRun(new_id(), label, JobConfig(outputs=tuple(batch)))
                    batch = []
            if batch:
                yield JobRun(new_id(), label, JobConfig(outputs=tuple(batch)))

    def _lookup(self, refs: Sequence[str]) -> Deferred[Assignment]:
        return lookup(self._reactor, self._workspace, refs, cooperator=self._cooperator)

    async def _round(self, assignment: Assignment) -> list[JobRun]:
        """Configure the refs of ``assignment`` (none covered yet); return the runs added."""
        if not assignment:
            return []
        await self._resolve_commands(assignment)
        calls = [
            self._configs_at_once.run(
                run_config,
                self._reactor,
                self._workspace,
                self._workspace.job(label),
                self._commands[label],
                batch,
            )
            for label, batch in assignment.items()
        ]
        try:
            replies: list[tuple[JobConfig, ...]] = await gatherResults(calls, consumeErrors=True)
        except FirstError as e:
            e.subFailure.raiseException()
        new_runs: list[JobRun] = []

        def add(labelled: tuple[str, JobConfig]) -> None:
            label, config = labelled
            if all(ref in self._producers for ref in config.outputs):
                return
            run = JobRun(new_id(), label, config)
            for ref in config.outputs:
                self._producers.setdefault(ref, run)
            new_runs.append(run)

        labelled = [
            (label, config)
            for label, configs in zip(assignment, replies, strict=True)
            for config in configs
        ]
        await in_slices(labelled, add, self._cooperator)
        self._runs.extend(new_runs)
        if len(self._runs) > MAX_JOB_RUNS:
            raise AnalysisError(
                f"the job graph grew past {MAX_JOB_RUNS} job runs; does a job's config keep "
                f"asking for new inputs? The last round added runs of "
                f"{', '.join(sorted({r.job_label for r in new_runs}))}"
            )
        return new_runs

    async def _resolve_commands(self, assignment: dict[str, tuple[str, ...]]) -> None:
        jobs = [self._workspace.job(label) for label in assignment if label not in self._commands]
        if not jobs:
            return
        commands = await self._resolve(jobs)
        missing = [job.label for job in jobs if job.label not in commands]
        if missing:
            raise AnalysisError(f"no command to run job(s) {', '.join(map(repr, missing))}")
        self._commands.update(commands)

    async def _unbuilt_inputs(self, runs: Sequence[JobRun]) -> list[str]:
        """The materialize inputs of ``runs`` that no run covers and that are not AVAILABLE."""
        inputs: dict[str, None] = {}

        def gather(run: JobRun) -> None:
            inputs.update(dict.fromkeys(run.config.materialize_inputs))

        # In slices: the inputs of 100,000 runs, gathered in one go, held the reactor 130 ms.
        await in_slices(runs, gather, self._cooperator)
        candidates: list[str] = []

        def keep(ref: str) -> None:
            if ref not in self._producers and ref not in self._known_available:
                candidates.append(ref)

        await in_slices(list(inputs), keep, self._cooperator)
        if not candidates:
            return []
        self._known_available |= set(await self._available(candidates))
        return [ref for ref in candidates if ref not in self._known_available]


def _upstream_first(runs: Sequence[JobRun]) -> Iterator[JobRun]:
    """``runs`` in dependency order, upstream first; AnalysisError naming the refs of a cycle."""
    producers: dict[str, JobRun] = {}
    for run in runs:
        for ref in run.outputs:
            producers.setdefault(ref, run)

    def needs(run: JobRun) -> Iterator[tuple[str, JobRun]]:
        for ref in run.config.materialize_inputs:
            upstream = producers.get(ref)
            if upstream is not None:
                yield ref, upstream

    done: set[str] = set()
    for root in runs:
        if root.job_run_id in done:
            continue
        # An iterative depth-first walk: graphs can be far deeper than Python's recursion limit.
        stack = [(root, needs(root))]
        on_stack = {root.job_run_id: 0}
        entered_by: list[str] = []  # entered_by[i]: the ref by which stack[i + 1] was reached
        while stack:
            run, edges = stack[-1]
            for ref, upstream in edges:
                if upstream.job_run_id in done:
                    continue
                position = on_stack.get(upstream.job_run_id)
                if position is not None:
                    cycle = [ref, *entered_by[position:], ref]
                    raise AnalysisError(f"dependency cycle: {' needs '.join(cycle)}")
                on_stack[upstream.job_run_id] = len(stack)
                stack.append((upstream, needs(upstream)))
                entered_by.append(ref)
                break
            else:
                stack.pop()
                del on_stack[run.job_run_id]
                if entered_by:
                    entered_by.pop()
                done.add(run.job_run_id)
                yield run
