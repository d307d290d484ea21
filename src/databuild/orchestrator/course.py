"""One build's course: planning, scheduling, its runs, failure propagation and its end.

A build goes RECEIVED → PLANNING → ANALYSIS_COMPLETED → EXECUTING → COMPLETED | FAILED, or
CANCELLED from any of these. After analysis, one step decides for every run whether this build
runs it, takes its outputs as already AVAILABLE, or waits for another live build producing them
(delegation), and claims the refs it will produce. Execution is event-driven: a run starts when
its last pending input becomes AVAILABLE; a failure fails everything downstream of it and
nothing else. Every status comes from the status policy (``policy.py``).

Whatever goes wrong inside the course — in its own code, or in a callback the launcher, the
claims or the recorder make into it — breaks this build only (``break_``): its runs stop, it
is recorded FAILED with the error, and the traceback goes to the service log.

Steps whose work grows with the build (planning, scheduling, ending early) go a slice at a
time (``databuild.slices``): a build of 100,000 runs never holds the reactor for long.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.backend import EventLogError, StoreUnavailable
from databuild.bel.events import (
    BuildRequestEvent,
    DelegationEvent,
    Event,
    JobEvent,
    PartitionEvent,
    Payload,
    graph_pieces,
)
from databuild.bel.services import LeaseLost
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import DataBuildError
from databuild.executor.launcher import Launcher
from databuild.graph.commands import CommandResolver
from databuild.graph.workspace import JobSpec, Workspace
from databuild.model import JobGraph, JobRun
from databuild.orchestrator.claims import Claims
from databuild.orchestrator.holdings import Holdings
from databuild.orchestrator.planning import Decision, RunPlan, plan_run
from databuild.orchestrator.policy import (
    POLICY,
    Happening,
    build_end,
    delegation_settled,
    downstream_of_failure,
    progress,
    run_ended,
)
from databuild.orchestrator.recorder import Recorder
from databuild.orchestrator.remote import RemoteRuns, RunClaims
from databuild.orchestrator.state import Build, Outcome, Task, TaskState
from databuild.proc.process import ProcessResult
from databuild.slices import in_slices

B, J, P, H = BuildStatus, JobStatus, PartitionStatus, Happening

CANCELLED_MESSAGE = "cancelled"


@define(eq=False)
class Parts:
    """What every build's course works with; one set per service."""

    launcher: Launcher
    resolve: CommandResolver
    analyze: Callable[
        [Sequence[str], Workspace, CommandResolver, Collection[str]], Deferred[JobGraph]
    ]
    recorder: Recorder
    holdings: Holdings
    claims: Claims
    run_claims: RunClaims
    """Claims of runs on their outputs in the log, shared by every service on it (SPEC §5.8)."""
    remote: RemoteRuns


@define(eq=False)
class _Plan:
    """A build's plan: a decision per run, and what scheduling needs of it as a whole."""

    runs: list[RunPlan] = field(factory=list)
    to_run: int = 0
    """How many of the runs are RUN (the others SKIP)."""
    waits: dict[str, Deferred[Outcome]] = field(factory=dict)
    """The refs it awaits from other builds, and the waits for them."""
    pending: dict[str, None] = field(factory=dict)
    """Refs not AVAILABLE yet that will be: its runs' outputs and the refs it awaits."""


class Course:
    """Drives one build from RECEIVED to its final status."""

    log = Logger()

    def __init__(self, build: Build, parts: Parts) -> None:
        self.build = build
        self._parts = parts
        self._record = parts.recorder
        self._holdings = parts.holdings
        self._claims = parts.claims
        self._starting = False
        """Whether ready runs are being started (a slice at a time)."""
        self._armed = False
        """Whether a start waits for the recorder (``_start_ready``)."""

    @property
    def build_request_id(self) -> str:
        return self.build.build_request_id

    # -- the course ------------------------------------------------------------------------

    async def run(self) -> Event:
        """Plan and execute the build, then record its end; fires with the stored end.

        Errbacks only if the log refused or lost that final event.
        """
        # The requested refs are recorded REQUESTED at the log's pace (100,000 of them take
        # seconds) while the graph is analysed and the runs are scheduled and start: a ref
        # whose run is scheduled before the slices reach it is recorded REQUESTED then
        # (_set_partition), so its REQUESTED still comes first. The end waits for them all.
        requesting = in_slices(self.build.requested, self._request, pace=self._record.pace)
        try:
            try:
                graph = await self._plan()
                if graph is not None:
                    await self._execute(graph)
                    del graph  # its runs go with their tasks, a slice at a time (_finish)
            finally:
                await requesting
        except Exception:
            self.break_(Failure())
        return await self._finish()

    async def _plan(self) -> JobGraph | None:
        build = self.build
        if build.ending:
            return None
        self._record_build(progress(H.PLANNING_BEGAN))
        keep = await self._keep()
        if build.ending:
            return None
        build.analysis = self._parts.analyze(
            build.requested, build.workspace, self._remember, keep
        )
        try:
            graph = await build.analysis
        except CancelledError:
            return None
        except DataBuildError as e:
            self._end_early(H.ANALYSIS_FAILED, f"analysis failed: {e}")
            return None
        finally:
            build.analysis = None
        if build.ending:
            return None
        for piece in graph_pieces(graph, build.workspace.fingerprint or None):
            self._emit(piece)
        self._record_build(progress(H.GRAPH_ANALYZED))
        return graph

    async def _keep(self) -> dict[str, None]:
        """The requested refs the build keeps as they are: AVAILABLE now, and not forced.

        The build holds its requested refs from here on, so what the holdings say of them
        stays true while it is analysed and planned.
        """
        build, holdings = self.build, self._holdings
        keep: dict[str, None] = {}
        if build.force:
            return keep
        await holdings.hold(build.build_request_id, build.requested)

        def note(ref: str) -> None:
            if holdings.is_available(ref):
                keep[ref] = None

        await in_slices(build.requested, note)
        return keep

    async def _execute(self, graph: JobGraph) -> None:
        build = self.build
        available = await self._hold_outputs(graph)
        if build.ending:
            return
        plan = await self._claim_and_plan(graph, available)
        if build.ending:
            return  # its claims go when the build ends
        self.log.info(
            "build {build_request_id} executing: {runs} runs to run, {skipped} skipped, "
            "{delegated} partitions awaited from other builds",
            build_request_id=build.build_request_id,
            runs=plan.to_run,
            skipped=len(plan.runs) - plan.to_run,
            delegated=len(plan.waits),
        )
        self._record_build(progress(H.EXECUTION_BEGAN))
        # The analysis resolved every job's command (built its Bazel targets): once. Runs
        # start while the rest are scheduled, each once its SCHEDULED is stored.
        build.prefixes = build.resolved
        await self._schedule(plan)
        # Tasks hold what the build needs from here on: a build of 100,000 runs keeps no plan
        # per run through its execution (nor does the collector walk them).
        del plan, available
        # Only now: a delegation settling while the runs were being scheduled must not find
        # the build with nothing open and end it.
        build.executing = True
        self._start_ready()
        build.check_settled()
        await build.settled

    async def _hold_outputs(self, graph: JobGraph) -> dict[str, None]:
        """Hold the graph's outputs; those AVAILABLE, with who built them learned."""
        outputs: dict[str, None] = {}
        await in_slices(graph.job_runs, lambda run: outputs.update(dict.fromkeys(run.outputs)))
        await self._holdings.hold(self.build.build_request_id, list(outputs))
        available: dict[str, None] = {}

        def note(ref: str) -> None:
            if self._holdings.is_available(ref):
                available[ref] = None

        await in_slices(list(outputs), note)
        await self._holdings.learn_builders(sorted(available))
        return available

    async def _claim_and_plan(self, graph: JobGraph, available: dict[str, None]) -> _Plan:
        """Claim the refs this build may produce, then decide every run with the claims known.

        A run may be RUN only if one of its outputs is not AVAILABLE or force applies to it;
        this build claims all outputs of such runs at once, and gives back those its plan does
        not run, so no other build can decide to produce the same ref in between.

        ``available`` was read before the claim, and a claimant may have made a ref since and
        let go of its claim: so the plan reads again, from the holdings, whether the refs just
        claimed are AVAILABLE. That answer is fresh because a producer notes a ref AVAILABLE
        (``_ref_ended``) before it settles the ref's claim.

        The plan is made a slice at a time, so a claimant may settle a ref meanwhile: this build
        starts waiting for every ref claimed by another at once, with the claim's answer, and
        keeps the waits for the refs its plan delegates.
        """
        build = self.build
        me = build.build_request_id
        candidates: dict[str, None] = {}

        def candidate(run: JobRun) -> None:
            if run.job_run_id in graph.kept:
                return  # never run
            if any(ref not in available for ref in run.outputs) or build.forces(run):
                candidates.update(dict.fromkeys(run.outputs))

        await in_slices(graph.job_runs, candidate)
        claimants = await self._claims.claim(me, list(candidates))
        waits = {ref: self._claims.wait_for(ref) for ref, c in claimants.items() if c != me}

        def recheck(ref: str) -> None:
            if self._holdings.is_available(ref):
                available[ref] = None

        await in_slices(list(claimants), recheck)
        plan = _Plan()
        claimed: dict[str, None] = {}

        def decide(run: JobRun) -> None:
            decided = plan_run(
                run,
                requested=build.requested_keys,
                force=build.force,
                available=available,
                producing=lambda ref: None if (c := claimants.get(ref, me)) == me else c,
                kept=run.job_run_id in graph.kept,
            )
            plan.runs.append(decided)
            if decided.decision is Decision.RUN:
                plan.to_run += 1
                plan.pending.update(dict.fromkeys(run.outputs))
                claimed.update(dict.fromkeys(decided.claims))
            for ref in decided.delegated:
                plan.waits[ref] = waits[ref]
                plan.pending[ref] = None

        await in_slices(graph.job_runs, decide)
        unused: list[str] = []

        def keep_unused(ref: str) -> None:
            if claimants[ref] == me and ref not in claimed:
                unused.append(ref)

        await in_slices(list(claimants), keep_unused)
        self._claims.release(me, unused)
        return plan

    async def _schedule(self, plan: _Plan) -> None:
        """Record every run as scheduled, record skips and delegations, queue ready runs.

        A skipped run's requested outputs go from REQUESTED straight to DELEGATED (SPEC §4.2
        allows it): a run that never starts needs no SCHEDULED for them.
        """
        build = self.build

        def schedule(decided: RunPlan) -> None:
            run = decided.job_run
            task = Task(run)
            build.tasks[run.job_run_id] = task
            self._record_job(task, _run_status(H.RUN_SCHEDULED))
            if build.ending:
                # Ended (cancelled) while runs started and the rest were scheduled: the rest
                # end at once, so the build's runs are still its plan's. Their requested
                # outputs fail with the build (_finish).
                task.finish()
                ended = _run_status(downstream_of_failure(build.ended_by))
                self._record_job(task, ended, build.message)
                return
            skip = decided.decision is Decision.SKIP
            for ref in run.outputs:
                if not (skip and self._only_requested(ref)):
                    self._set_partition(ref, _outputs_status(H.RUN_SCHEDULED), "", run.job_run_id)
            if skip:
                self._skip(task, decided, plan.waits)
                return
            build.open += 1
            # An input may have ended already, while the runs before this one were scheduled
            # (its run was quick, or the build it was delegated to finished): its dependents
            # were released then, and this run was not yet among them.
            waiting_on = set()
            for ref in run.config.materialize_inputs:
                if ref in plan.pending and not build.is_final(ref):
                    waiting_on.add(ref)
                elif ref in build.root_causes:  # ended without becoming AVAILABLE
                    for out in run.outputs:
                        build.root_causes.setdefault(out, build.root_causes[ref])
                    self._end_run(task, *self._after_failure(build.root_causes[ref]), None)
                    return
            for ref in waiting_on:
                build.dependents[ref].append(task)
            if waiting_on:
                task.waiting_on = waiting_on
            else:
                self._ready(task)
                self._start_ready()

        # A run a step: a kept run records two events for each of its hundreds of refs.
        await in_slices(plan.runs, schedule, pace=self._record.pace, step=1)

    def _skip(self, task: Task, plan: RunPlan, waits: dict[str, Deferred[Outcome]]) -> None:
        run_id = task.job_run_id
        for ref in plan.available:
            # SPEC §4.2 has no way to AVAILABLE but through DELEGATED for a ref this build
            # does not make: the build that made it is the one relied on, and the message
            # names it (no ``delegation`` event: nothing is awaited).
            message = (
                f"already available; not built again (built by build "
                f"{self._holdings.built_by(ref)})"
            )
            self._set_partition(ref, _via_status(H.ALREADY_AVAILABLE), message, run_id)
            self._set_partition(
                ref, _outputs_status(H.ALREADY_AVAILABLE), "already available", run_id
            )
        for ref in plan.lost:
            self._set_partition(
                ref,
                _outputs_status(H.AVAILABILITY_LOST),
                "no longer available: another build rebuilt it without success after this "
                "build's analysis; ask for it again",
                run_id,
            )
        for ref, other in plan.delegated.items():
            self._request(ref)  # before the delegation, as before any event of the ref
            self._emit(DelegationEvent(ref, other, f"being built by build {other}"))
            self._set_partition(
                ref, _outputs_status(H.DELEGATED), f"waiting for build {other}", run_id
            )
            self.build.open += 1
            waits[ref].addCallback(self._settle_delegation, ref).addErrback(self.break_)
        happening = H.DELEGATED if plan.delegated else H.ALREADY_AVAILABLE
        reason = (
            f"delegated to build {', '.join(sorted(set(plan.delegated.values())))}"
            if plan.delegated
            else "outputs already available"
        )
        task.state = TaskState.DONE
        self._record_job(task, _run_status(happening), reason)
        task.finish()

    def _remember(self, jobs: Sequence[JobSpec]) -> Deferred[dict[str, tuple[str, ...]]]:
        """The build's analysis resolves commands through this: its runs use them too."""

        def keep(commands: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
            self.build.resolved.update(commands)
            return commands

        return self._parts.resolve(jobs).addCallback(keep)

    def _settle_delegation(self, outcome: Outcome, ref: str) -> None:
        self._guarded(self._delegation_settled, outcome, ref)

    def _delegation_settled(self, outcome: Outcome, ref: str) -> None:
        build = self.build
        if build.partitions.get(ref) is not P.PARTITION_DELEGATED:
            return  # this build stopped waiting (it was cancelled)
        build.open -= 1
        happening = delegation_settled(outcome.status)
        message = f"built by build {outcome.build_request_id}"
        if happening is H.DELEGATION_FAILED:
            message = f"failed in build {outcome.build_request_id}: {outcome.message}"
        self._settle_ref(ref, happening, message)
        self._start_ready()
        build.check_settled()

    # -- runs ------------------------------------------------------------------------------

    def _start_ready(self) -> None:
        """Start the ready runs, each once the events decided before it became ready are
        stored (see Recorder): so no run starts during an outage, nor on an input the log
        does not yet hold as AVAILABLE. Runs that were ready from the start need not wait
        for the events of the runs before them."""
        build = self.build
        if self._starting or self._armed or build.prefixes is None or build.ending:
            return
        if build.ready and self._room(refill=True):
            self._armed = True
            self._record.through(build.ready[0].after).addCallback(
                lambda _: self._guarded(self._start_now)
            )

    def _room(self, *, refill: bool = False) -> bool:
        """Whether the launcher's window has room for another run (``Launcher.window``).

        With ``refill``: for half a window. Runs are started that many at a time, so their
        claims go to the log in one transaction, not one each as runs end (a claim costs the
        log a transaction whatever its size); the other half keeps the launcher busy."""
        window = self._parts.launcher.window
        if window is None:
            return True
        return self.build.started <= window // 2 if refill else self.build.started < window

    def _start_now(self) -> None:
        """Start the ready runs a slice at a time; runs that become ready meanwhile join."""
        self._armed = False
        if self._starting:
            return
        self._starting = True
        started = in_slices(self._ready_runs(), self._start)
        started.addBoth(self._started_all)
        started.addErrback(self.break_)

    def _ready_runs(self) -> Iterator[Task]:
        build = self.build
        while build.ready and self._room():
            task = build.ready[0]
            startable = task.state is TaskState.PENDING and not build.ending
            if startable and not self._record.holds(task.after):
                return  # until what it became ready on is stored: _started_all waits for it
            build.ready.popleft()
            if startable:
                yield task

    def _started_all(self, result: object) -> object:
        self._starting = False
        self._guarded(self._start_ready)
        return result

    def _ready(self, task: Task) -> None:
        """``task`` waits for nothing more: it may start once what was decided so far is
        stored."""
        task.after = self._record.last
        self.build.ready.append(task)

    def _start(self, task: Task) -> None:
        """Claim the run's outputs in the log, then run it (or take another run's outcome)."""
        prefixes = self.build.prefixes
        assert prefixes is not None
        task.state = TaskState.STARTED
        self.build.started += 1
        d = ensureDeferred(self._claim_and_run(task, prefixes))
        d.addErrback(self._claim_broke, task)

    async def _claim_and_run(self, task: Task, prefixes: dict[str, tuple[str, ...]]) -> None:
        """Claim all outputs at once (SPEC §5.8); while other live runs hold some, wait for them.

        A holder that completed leaves its outputs AVAILABLE, and the next claim says so; one
        whose service died no longer counts, and the next claim is granted.
        """
        build, run = self.build, task.job_run
        forced = build.forces(run)
        while True:
            claimed = await self._parts.run_claims.claim(
                run.job_run_id, self.build_request_id, list(run.outputs),
                skip_available=not forced,
            )
            if task.stopped_by is not None:
                self._end_run(task, task.stopped_by, task.stop_message, None)
                return
            if claimed.granted:
                self._exec(task, prefixes)
                return
            if claimed.available:
                await self._taken_elsewhere(task, H.DELEGATION_SUCCEEDED, "")
                return
            holders = {h.job_run_id: h for h in claimed.held.values()}
            for ref, holder in claimed.held.items():
                self._emit(DelegationEvent(
                    ref, holder.build_request_id,
                    f"claimed by job run {holder.job_run_id} of service {holder.service_id}",
                ))
            self.log.info(
                "job run {job_run_id} of build {build_request_id} waits for job runs "
                "{holders}, which claimed its outputs",
                job_run_id=run.job_run_id,
                build_request_id=self.build_request_id,
                holders=sorted(holders),
            )
            task.awaiting = self._parts.remote.wait(sorted(holders))
            try:
                states = await task.awaiting
            except CancelledError:
                assert task.stopped_by is not None
                self._end_run(task, task.stopped_by, task.stop_message, None)
                return
            finally:
                task.awaiting = None
            failed = [s for s in states.values() if s.status is J.JOB_FAILED and s.owner_live]
            if failed:
                message = f"failed in build {failed[0].build_request_id}: {failed[0].message}"
                await self._taken_elsewhere(task, H.DELEGATION_FAILED, message)
                return

    async def _taken_elsewhere(self, task: Task, happening: Happening, message: str) -> None:
        """Another service's run made (or failed) this run's outputs: this run is recorded as
        delegated to it, and its outputs settle as ``happening`` says."""
        outputs = list(task.job_run.outputs)
        await self._holdings.learn_builders(outputs)
        if happening is H.DELEGATION_SUCCEEDED:
            builders = sorted({self._holdings.built_by(ref) for ref in outputs})
            message = f"built by build {', '.join(builders)}"
            for ref in outputs:
                self._emit(DelegationEvent(ref, self._holdings.built_by(ref), message))
        for ref in outputs:
            self._set_partition(ref, _outputs_status(H.DELEGATED), message, task.job_run_id)
        task.state = TaskState.DONE
        self.build.open -= 1
        self.build.started -= 1
        self._record_job(task, _run_status(H.DELEGATED), f"outputs {message}")
        task.finish()
        for ref in outputs:
            self._settle_ref(ref, happening, message)
        self._start_ready()
        self.build.check_settled()

    def _claim_broke(self, failure: Failure, task: Task) -> None:
        """The log could not take the claim: the run fails. Anything else breaks the build."""
        if not failure.check(EventLogError):
            self._guarded(self.break_, failure)
            return
        self.log.warn(
            "job run {job_run_id} of build {build_request_id} could not claim its outputs: "
            "{error}",
            job_run_id=task.job_run_id,
            build_request_id=self.build_request_id,
            error=failure.getErrorMessage(),
        )
        message = f"could not claim its outputs: {failure.getErrorMessage()}"
        self._guarded(self._end_run, task, H.RUN_FAILED, message, None)

    def _exec(self, task: Task, prefixes: dict[str, tuple[str, ...]]) -> None:
        run = task.job_run
        spec = self.build.workspace.job(run.job_label)
        task.handle = self._parts.launcher.run(
            run, self.build_request_id, prefixes[run.job_label], spec
        )
        task.handle.started.addCallback(lambda _: self._guarded(self._run_started, task))
        task.handle.result.addCallback(
            lambda result: self._guarded(self._run_ended, result, task)
        )

    def _run_started(self, task: Task) -> None:
        build = self.build
        happening = H.RUN_STARTED
        with self._record.together():
            self._record_job(task, _run_status(happening))
            for ref in task.job_run.outputs:
                if not build.is_final(ref):
                    self._set_partition(ref, _outputs_status(happening), "", task.job_run_id)

    def _run_ended(self, result: ProcessResult, task: Task) -> None:
        label = task.job_run.job_label
        happening = run_ended(result)
        message = ""
        if happening is H.RUN_CANCELLED:
            happening = task.stopped_by or happening
            message = task.stop_message or CANCELLED_MESSAGE
        elif happening is not H.RUN_SUCCEEDED:
            message = f"job {label} {result.describe()}"
            if task.handle is not None and task.handle.attempts > 1:
                message += f" (after {task.handle.attempts} attempts)"
            if result.stderr_tail:
                message += f"; stderr ends: {result.stderr_tail.splitlines()[-1]}"
        if happening is not H.RUN_SUCCEEDED and not (self.build.ending and task.stopped_by):
            # Only runs that did not succeed, nor were stopped (ending a build early logs one
            # line for all): the event log holds every run's course, and a line per run costs
            # a large build more than its events do.
            self.log.info(
                "job run {job_run_id} ({job_label}) of build {build_request_id} ended: "
                "{status} {outcome}",
                job_run_id=task.job_run_id,
                job_label=label,
                build_request_id=self.build_request_id,
                status=_run_status(happening).short,
                outcome=result.describe(),
            )
        self._end_run(task, happening, message, result.exit_code)

    def _end_run(
        self, task: Task, happening: Happening, message: str, exit_code: int | None
    ) -> None:
        """Record a run's end, then its outputs' (and everything downstream of a failure)."""
        build = self.build
        work: list[tuple[Task, Happening, str, int | None]] = [
            (task, happening, message, exit_code)
        ]
        while work:
            task, happening, message, exit_code = work.pop()
            if task.state is TaskState.DONE:
                continue
            if task.state is TaskState.STARTED:
                build.started -= 1
            task.state = TaskState.DONE
            build.open -= 1
            cause = "" if happening is H.RUN_SUCCEEDED else f"{message} (job run {task.job_run_id})"
            with self._record.together():
                self._record_job(task, _run_status(happening), message, exit_code)
                for ref in task.job_run.outputs:
                    for failed, reason_happening, reason in self._ref_ended(
                        ref, happening, cause, task.job_run_id
                    ):
                        work.append((failed, reason_happening, reason, None))
            task.finish()
        self._start_ready()
        build.check_settled()

    def _ref_ended(
        self, ref: str, happening: Happening, message: str, job_run_id: str | None
    ) -> list[tuple[Task, Happening, str]]:
        """Record a ref's end in this build; returns the runs that end with it, and how."""
        build = self.build
        if build.is_final(ref):
            return []
        status = _outputs_status(happening)
        root = build.root_causes.get(ref, f"{ref}: {message}")
        if status is not P.PARTITION_AVAILABLE:
            build.root_causes.setdefault(ref, root)  # for a run scheduled after this
        self._set_partition(ref, status, message, job_run_id)
        if status is P.PARTITION_AVAILABLE and job_run_id is not None:
            self._holdings.made(ref, build.build_request_id)
        self._claims.settle(ref, Outcome(status, message, build.build_request_id))
        downstream = build.dependents.pop(ref, [])
        if status is P.PARTITION_AVAILABLE:
            for task in downstream:
                assert task.waiting_on is not None  # it is among the ref's dependents
                task.waiting_on.discard(ref)
                if not task.waiting_on and task.state is TaskState.PENDING:
                    task.waiting_on = None
                    self._ready(task)
            return []
        failed = []
        follows, reason = self._after_failure(root)
        for task in downstream:
            if task.state is TaskState.PENDING:
                for out in task.job_run.outputs:
                    build.root_causes.setdefault(out, root)
                failed.append((task, follows, reason))
        return failed

    def _after_failure(self, root: str) -> tuple[Happening, str]:
        """How a run downstream of a ref that did not become AVAILABLE ends, and why;
        ``root`` is what failed first."""
        build = self.build
        follows = downstream_of_failure(build.ended_by)
        reason = f"upstream failed: {root}" if follows is H.UPSTREAM_FAILED else build.message
        return follows, reason

    def _settle_ref(self, ref: str, happening: Happening, message: str) -> None:
        """Record the end of a ref no run of this build made, and end the runs it fails."""
        for task, follows, reason in self._ref_ended(ref, happening, message, None):
            self._end_run(task, follows, reason, None)

    # -- ending early ----------------------------------------------------------------------

    def cancel_run(self, task: Task, message: str) -> None:
        """Cancel one run of this build; its downstream fails."""
        self._guarded(self._stop_run, task, H.RUN_CANCELLED, message)

    def _stop_run(self, task: Task, happening: Happening, message: str) -> None:
        task.stopped_by, task.stop_message = happening, message
        if task.state is TaskState.PENDING:
            self._end_run(task, happening, message, None)
        elif task.state is TaskState.STARTED and task.handle is not None:
            task.handle.cancel()
        elif task.state is TaskState.STARTED and task.awaiting is not None:
            task.awaiting.cancel()

    def cancel(self, message: str) -> None:
        """Cancel the build: its analysis, its runs, its waits for other builds."""
        self._guarded(self._end_early, H.BUILD_CANCELLED, message)

    def fail(self, happening: Happening, message: str) -> None:
        """End the build FAILED for ``happening`` (an event-log outage, say), runs and all."""
        self._guarded(self._end_early, happening, message)

    def break_(self, failure: Failure) -> None:
        """An unexpected exception broke the build: log it, stop everything, fail the build."""
        self.log.failure(
            "build {build_request_id} broke", failure, build_request_id=self.build_request_id
        )
        build = self.build
        if build.ended_by is H.INTERNAL_ERROR:
            return
        build.ended_by = None  # an internal error outranks any earlier end
        try:
            self._end_early(H.INTERNAL_ERROR, f"internal error: {failure.getErrorMessage()}")
        except Exception:
            self.log.failure(
                "build {build_request_id} broke while stopping",
                build_request_id=self.build_request_id,
            )
        # Whatever is still open is closed by _finish; let the course get there.
        if build.executing and not build.settled.called:
            build.settled.callback(None)

    def _end_early(self, happening: Happening, message: str) -> None:
        build = self.build
        if build.ending:
            return
        build.ended_by, build.message = happening, message
        if build.analysis is not None:
            build.analysis.cancel()
        run_happening = downstream_of_failure(happening)
        started: list[Task] = []
        pending: list[Task] = []
        for task in build.tasks.values():
            if task.state is TaskState.STARTED:
                started.append(task)
            elif task.state is TaskState.PENDING:
                pending.append(task)
        waiting = [ref for ref, s in build.partitions.items() if s is P.PARTITION_DELEGATED]
        self.log.info(
            "ending build {build_request_id} early: {message}; stopping {runs} unfinished "
            "runs ({pending} still waiting for inputs), dropping {waiting} waits for other "
            "builds",
            build_request_id=build.build_request_id,
            message=message,
            runs=len(started) + len(pending),
            pending=len(pending),
            waiting=len(waiting),
        )
        # Running runs first: their processes are what must stop at once.
        stopped = in_slices(
            itertools.chain(started, pending),
            lambda task: self._stop_run(task, run_happening, message),
            pace=self._record.pace,
        )
        stopped.addCallback(lambda _: self._close_open_work(waiting))
        stopped.addErrback(self.break_)

    def _close_open_work(self, waiting: list[str]) -> Deferred[None]:
        """Stop waiting for other builds; the refs awaited fail with the build's message."""
        build = self.build

        def drop(ref: str) -> None:
            if build.partitions.get(ref) is P.PARTITION_DELEGATED:
                build.open -= 1
                self._settle_ref(ref, H.DELEGATION_FAILED, build.message)

        return in_slices(waiting, drop, pace=self._record.pace).addCallback(
            lambda _: build.check_settled()
        )

    async def _finish(self) -> Event:
        build = self.build
        # Only after an internal error may runs still be open: stop them and wait for them,
        # so that no process of this build outlives its end.
        stopping = []
        for task in build.tasks.values():
            if task.state is TaskState.STARTED and task.handle is not None:
                task.handle.cancel()
                stopping.append(_ended(task.handle.result))
        await DeferredList(stopping)
        leftover = build.ended_by or H.INTERNAL_ERROR

        def close_run(task: Task) -> None:
            if task.state is not TaskState.DONE:
                task.state = TaskState.DONE
                self._record_job(task, _run_status(H.INTERNAL_ERROR), build.message or "broken")
                task.finish()

        def close_ref(ref: str) -> None:
            # A build cancelled while it was scheduled has refs no task was made for.
            if not build.is_final(ref):
                self._ref_ended(ref, leftover, build.message or "not built", None)

        await in_slices(list(build.tasks.values()), close_run, pace=self._record.pace)
        await in_slices(list(build.partitions), close_ref, pace=self._record.pace)
        status = build_end(build.ended_by, {r: build.partitions.get(r) for r in build.requested})
        message = build.message
        if status is B.BUILD_REQUEST_COMPLETED:
            message = ""
        elif not message:
            failed = [
                r for r in build.requested if build.partitions.get(r) is not P.PARTITION_AVAILABLE
            ]
            message = (
                f"{len(failed)} of {len(build.requested)} requested partitions failed: "
                + ", ".join(failed[:5])
                + (", ..." if len(failed) > 5 else "")
            )
        build.final_status, build.message = status, message
        end = await self._record.build(self.build_request_id, build.requested, status, message)
        # Let go of the runs a slice at a time: the tasks, runs and configs of 100,000 runs
        # are half a million objects to free, too many for one turn of the reactor.
        await in_slices(list(build.tasks), build.tasks.pop)
        return end

    # -- recording -------------------------------------------------------------------------

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` (a callback into this course); what it raises breaks the build."""
        try:
            fn(*args)
        except Exception:
            self.break_(Failure())

    def _emit(self, payload: Payload) -> None:
        self._record.emit(Event(self.build_request_id, payload), self._not_recorded)

    def _not_recorded(self, failure: Failure) -> None:
        """The log refused an event of this build: the course and the log disagree."""
        if failure.check(StoreUnavailable, LeaseLost):
            return  # the recorder gave up, or the lease is lost (the service stops): logged
        self._guarded(self.break_, failure)

    def _record_build(self, status: BuildStatus) -> None:
        self._emit(BuildRequestEvent(status, self.build.requested))

    def _record_job(
        self, task: Task, status: JobStatus, message: str = "", exit_code: int | None = None
    ) -> None:
        run = task.job_run
        self._emit(
            JobEvent(run.job_run_id, run.job_label, status, run.outputs, message, exit_code)
        )

    def _set_partition(
        self, ref: str, status: PartitionStatus, message: str, job_run_id: str | None = None
    ) -> None:
        build = self.build
        if ref not in build.partitions and status is not _outputs_status(H.BUILD_RECEIVED):
            self._request(ref)  # reached before the requesting slices: REQUESTED goes first
        self._holdings.note(ref, build.partitions.get(ref), status)
        build.partitions[ref] = status
        self._emit(PartitionEvent(ref, status, message, job_run_id))

    def _request(self, ref: str) -> None:
        """Record ``ref`` as REQUESTED (RECEIVED is stored: the course runs) if it is a
        requested ref this build has recorded nothing of yet."""
        if ref not in self.build.partitions and ref in self.build.requested_keys:
            self._set_partition(ref, _outputs_status(H.BUILD_RECEIVED), "requested")

    def _only_requested(self, ref: str) -> bool:
        """Whether ``ref`` is requested and this build recorded nothing of it but that (or
        not even that yet)."""
        status = self.build.partitions.get(ref)
        requested = _outputs_status(H.BUILD_RECEIVED)
        return status is requested or (status is None and ref in self.build.requested_keys)


def _run_status(happening: Happening) -> JobStatus:
    status = POLICY[happening].run
    assert status is not None, f"{happening} concerns no run"
    return status


def _outputs_status(happening: Happening) -> PartitionStatus:
    status = POLICY[happening].outputs
    assert status is not None, f"{happening} concerns no partition"
    return status


def _via_status(happening: Happening) -> PartitionStatus:
    status = POLICY[happening].via
    assert status is not None, f"{happening} takes no partition through another status"
    return status


def _ended(result: Deferred[Any]) -> Deferred[None]:
    """A Deferred firing once ``result`` has, leaving ``result``'s own chain alone."""
    d: Deferred[None] = Deferred()

    def fire(value: object) -> object:
        d.callback(None)
        return value

    result.addBoth(fire)
    return d
