"""One build's course: planning, scheduling, its runs, failure propagation and its end.

A build goes RECEIVED → PLANNING → ANALYSIS_COMPLETED → EXECUTING → COMPLETED | FAILED, or
CANCELLED from any of these. After analysis, one step decides for every run whether this build
runs it, takes its outputs as already AVAILABLE, or waits for another live build producing them
(delegation), and claims the refs it will produce. Execution is event-driven: a run starts when
its last pending input becomes AVAILABLE; a failure fails everything downstream of it and
nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attrs import define
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from databuild.bel.events import DelegationEvent, JobGraphEvent
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import DataBuildError
from databuild.executor.runner import Executor
from databuild.graph.commands import CommandResolver
from databuild.graph.workspace import Workspace
from databuild.model import JobGraph
from databuild.orchestrator.claims import Claims
from databuild.orchestrator.holdings import Holdings
from databuild.orchestrator.planning import Decision, RunPlan, plan_runs
from databuild.orchestrator.recorder import Recorder
from databuild.orchestrator.state import Build, Outcome, Task, TaskState
from databuild.proc.process import ProcessResult

B, J, P = BuildStatus, JobStatus, PartitionStatus

CANCELLED_MESSAGE = "cancelled"


@define(eq=False)
class Parts:
    """What every build's course works with; one set per service."""

    workspace: Workspace
    executor: Executor
    resolve: CommandResolver
    analyze: Callable[[Sequence[str]], Deferred[JobGraph]]
    recorder: Recorder
    holdings: Holdings
    claims: Claims


class Course:
    """Drives one build from RECEIVED to its final status."""

    log = Logger()

    def __init__(self, build: Build, parts: Parts) -> None:
        self.build = build
        self._parts = parts
        self._record = parts.recorder
        self._holdings = parts.holdings
        self._claims = parts.claims

    @property
    def build_request_id(self) -> str:
        return self.build.build_request_id

    # -- the course ------------------------------------------------------------------------

    async def run(self) -> bool:
        """Plan and execute the build, then record its end; whether the log stored that end."""
        build = self.build
        try:
            graph = await self._plan()
            if graph is not None:
                await self._execute(graph)
        except Exception as e:
            self.log.failure(
                "build {build_request_id} broke", build_request_id=build.build_request_id
            )
            build.message = build.message or f"internal error: {e}"
            self._close_open_work()
        return await self._finish()

    async def _plan(self) -> JobGraph | None:
        build = self.build
        if build.cancelled:
            return None
        self._record_build(B.BUILD_REQUEST_PLANNING)
        build.analysis = self._parts.analyze(build.requested)
        try:
            graph = await build.analysis
        except CancelledError:
            return None
        except DataBuildError as e:
            build.message = f"analysis failed: {e}"
            return None
        finally:
            build.analysis = None
        if build.cancelled:
            return None
        self._record.record(build.build_request_id, JobGraphEvent(graph))
        self._record_build(B.BUILD_REQUEST_ANALYSIS_COMPLETED)
        return graph

    async def _execute(self, graph: JobGraph) -> None:
        build = self.build
        outputs = list(dict.fromkeys(ref for run in graph.job_runs for ref in run.outputs))
        await self._holdings.hold(build.build_request_id, outputs)
        available = {ref for ref in outputs if self._holdings.is_available(ref)}
        await self._holdings.learn_builders(sorted(available))
        if build.cancelled:
            return
        plans = await self._claim_and_plan(graph, available)
        waits: dict[str, Deferred[Outcome]] = {}
        for plan in plans:
            for ref in plan.delegated:
                waits[ref] = self._claims.wait_for(ref)
        build.executing = True
        self.log.info(
            "build {build_request_id} executing: {runs} runs to run, {skipped} skipped, "
            "{delegated} partitions awaited from other builds",
            build_request_id=build.build_request_id,
            runs=sum(1 for p in plans if p.decision is Decision.RUN),
            skipped=sum(1 for p in plans if p.decision is Decision.SKIP),
            delegated=len(waits),
        )
        self._record_build(B.BUILD_REQUEST_EXECUTING)
        self._schedule(plans, waits)
        if any(t.state is TaskState.PENDING for t in build.tasks.values()):
            await self._resolve_commands()
        build.check_settled()
        await build.settled

    async def _claim_and_plan(self, graph: JobGraph, available: set[str]) -> list[RunPlan]:
        """Claim the refs this build may produce, then decide every run with the claims known.

        A run may be RUN only if one of its outputs is not AVAILABLE or force applies to it;
        this build claims all outputs of such runs at once, and gives back those its plan does
        not run, so no other build can decide to produce the same ref in between.
        """
        build = self.build
        me = build.build_request_id
        candidates = [
            ref
            for run in graph.job_runs
            if any(ref not in available for ref in run.outputs)
            or (build.force and any(ref in build.requested for ref in run.outputs))
            for ref in run.outputs
        ]
        claimants = await self._claims.claim(me, list(dict.fromkeys(candidates)))
        plans = plan_runs(
            graph,
            requested=build.requested,
            force=build.force,
            available=available,
            producing=lambda ref: None if (c := claimants.get(ref, me)) == me else c,
        )
        claimed = {ref for plan in plans for ref in plan.claims}
        self._claims.release(
            me, [ref for ref, c in claimants.items() if c == me and ref not in claimed]
        )
        return plans

    def _schedule(self, plans: list[RunPlan], waits: dict[str, Deferred[Outcome]]) -> None:
        """Record every run as scheduled, record skips and delegations, queue ready runs."""
        build = self.build
        pending: set[str] = set(waits)
        for plan in plans:
            if plan.decision is Decision.RUN:
                pending.update(plan.job_run.outputs)
        for plan in plans:
            run = plan.job_run
            task = Task(run)
            build.tasks[run.job_run_id] = task
            self._record_job(task, J.JOB_SCHEDULED)
            for ref in run.outputs:
                self._set_partition(ref, P.PARTITION_SCHEDULED, "", run.job_run_id)
            if plan.decision is Decision.SKIP:
                self._skip(task, plan)
                continue
            build.open += 1
            task.waiting_on = {ref for ref in run.config.materialize_inputs if ref in pending}
            for ref in task.waiting_on:
                build.dependents[ref].append(task)
            if not task.waiting_on:
                build.ready.append(task)
        for ref, wait in waits.items():
            build.open += 1
            wait.addCallback(self._delegation_settled, ref)

    def _skip(self, task: Task, plan: RunPlan) -> None:
        build = self.build
        run_id = task.job_run_id
        for ref in plan.available:
            # SPEC §4.2 has no way from SCHEDULED to AVAILABLE but through DELEGATED: the
            # build that made the ref is the one this build relies on.
            other = self._holdings.built_by(ref)
            self._record.record(
                build.build_request_id,
                DelegationEvent(ref, other, "already available; not built again"),
            )
            message = f"already available, built by build {other}"
            self._set_partition(ref, P.PARTITION_DELEGATED, message, run_id)
            self._set_partition(ref, P.PARTITION_AVAILABLE, "already available", run_id)
        for ref, other in plan.delegated.items():
            self._record.record(
                build.build_request_id, DelegationEvent(ref, other, f"being built by build {other}")
            )
            self._set_partition(ref, P.PARTITION_DELEGATED, f"waiting for build {other}", run_id)
        reason = (
            f"delegated to build {', '.join(sorted(set(plan.delegated.values())))}"
            if plan.delegated
            else "outputs already available"
        )
        task.state = TaskState.DONE
        self._record_job(task, J.JOB_SKIPPED, reason)
        task.done.callback(None)

    async def _resolve_commands(self) -> None:
        build = self.build
        labels = {t.job_run.job_label for t in build.tasks.values() if t.state is TaskState.PENDING}
        workspace = self._parts.workspace
        try:
            build.prefixes = await self._parts.resolve(
                [workspace.job(label) for label in sorted(labels)]
            )
        except DataBuildError as e:
            message = f"could not resolve the job's command: {e}"
            for task in list(build.tasks.values()):
                if task.state is TaskState.PENDING:
                    self._end_run(task, J.JOB_FAILED, message, None)
            return
        self._start_ready()

    def _delegation_settled(self, outcome: Outcome, ref: str) -> None:
        build = self.build
        if build.partitions.get(ref) is not P.PARTITION_DELEGATED:
            return  # this build stopped waiting (it was cancelled)
        build.open -= 1
        message = f"built by build {outcome.build_request_id}"
        if outcome.status is P.PARTITION_FAILED:
            message = f"failed in build {outcome.build_request_id}: {outcome.message}"
        self._settle_ref(ref, outcome.status, message)
        self._start_ready()
        build.check_settled()

    # -- runs ------------------------------------------------------------------------------

    def _start_ready(self) -> None:
        build = self.build
        if build.prefixes is None:
            return
        while build.ready:
            task = build.ready.popleft()
            if task.state is TaskState.PENDING and not build.cancelled:
                self._start(task, build.prefixes)

    def _start(self, task: Task, prefixes: dict[str, tuple[str, ...]]) -> None:
        run = task.job_run
        spec = self._parts.workspace.job(run.job_label)
        task.state = TaskState.STARTED
        task.handle = self._parts.executor.run(
            run, self.build_request_id, prefixes[run.job_label], spec.timeout,
            retries=spec.retries,
        )
        task.handle.started.addCallback(lambda _: self._run_started(task))
        task.handle.result.addCallback(self._run_ended, task)

    def _run_started(self, task: Task) -> None:
        build = self.build
        self._record_job(task, J.JOB_RUNNING)
        for ref in task.job_run.outputs:
            if not build.is_final(ref):
                self._set_partition(ref, P.PARTITION_BUILDING, "", task.job_run_id)
        self.log.info(
            "job run {job_run_id} ({job_label}) of build {build_request_id} started",
            job_run_id=task.job_run_id,
            job_label=task.job_run.job_label,
            build_request_id=build.build_request_id,
        )

    def _run_ended(self, result: ProcessResult, task: Task) -> None:
        label = task.job_run.job_label
        if result.succeeded:
            status, message = J.JOB_COMPLETED, ""
        elif result.cancelled:
            status, message = J.JOB_CANCELLED, task.cancel_message or CANCELLED_MESSAGE
        else:
            status = J.JOB_FAILED
            message = f"job {label} {result.describe()}"
            if task.handle is not None and task.handle.attempts > 1:
                message += f" (after {task.handle.attempts} attempts)"
            if result.stderr_tail:
                message += f"; stderr ends: {result.stderr_tail.splitlines()[-1]}"
        self.log.info(
            "job run {job_run_id} ({job_label}) of build {build_request_id} ended: "
            "{status} {outcome}",
            job_run_id=task.job_run_id,
            job_label=label,
            build_request_id=self.build_request_id,
            status=status.short,
            outcome=result.describe(),
        )
        self._end_run(task, status, message, result.exit_code)

    def _end_run(
        self, task: Task, status: JobStatus, message: str, exit_code: int | None
    ) -> None:
        """Record a run's end, then its outputs' (and everything downstream of a failure)."""
        build = self.build
        work: list[tuple[Task, JobStatus, str, int | None]] = [(task, status, message, exit_code)]
        while work:
            task, status, message, exit_code = work.pop()
            if task.state is TaskState.DONE:
                continue
            task.state = TaskState.DONE
            build.open -= 1
            self._record_job(task, status, message, exit_code)
            if status is J.JOB_COMPLETED:
                for ref in task.job_run.outputs:
                    self._ref_ended(ref, P.PARTITION_AVAILABLE, "", task.job_run_id)
            else:
                cause = f"{message} (job run {task.job_run_id})"
                for ref in task.job_run.outputs:
                    for failed, reason_status, reason in self._ref_ended(
                        ref, P.PARTITION_FAILED, cause, task.job_run_id
                    ):
                        work.append((failed, reason_status, reason, None))
            task.done.callback(None)
        self._start_ready()
        build.check_settled()

    def _ref_ended(
        self, ref: str, status: PartitionStatus, message: str, job_run_id: str | None
    ) -> list[tuple[Task, JobStatus, str]]:
        """Record a ref's end in this build; returns the runs that end with it, and how."""
        build = self.build
        if build.is_final(ref):
            return []
        root = build.root_causes.get(ref, f"{ref}: {message}")
        self._set_partition(ref, status, message, job_run_id)
        if status is P.PARTITION_AVAILABLE and job_run_id is not None:
            self._holdings.made(ref, build.build_request_id)
        self._claims.settle(ref, Outcome(status, message, build.build_request_id))
        downstream = build.dependents.pop(ref, [])
        if status is P.PARTITION_AVAILABLE:
            for task in downstream:
                task.waiting_on.discard(ref)
                if not task.waiting_on and task.state is TaskState.PENDING:
                    build.ready.append(task)
            return []
        failed = []
        for task in downstream:
            if task.state is TaskState.PENDING:
                for out in task.job_run.outputs:
                    build.root_causes.setdefault(out, root)
                if build.cancelled:
                    failed.append((task, J.JOB_CANCELLED, build.message))
                else:
                    failed.append((task, J.JOB_FAILED, f"upstream failed: {root}"))
        return failed

    def _settle_ref(self, ref: str, status: PartitionStatus, message: str) -> None:
        """Record the end of a ref no run of this build made, and end the runs it fails."""
        for task, job_status, reason in self._ref_ended(ref, status, message, None):
            self._end_run(task, job_status, reason, None)

    # -- cancellation and the end ----------------------------------------------------------

    def cancel_run(self, task: Task, message: str) -> None:
        """Cancel one run of this build; its downstream fails."""
        task.cancel_message = message
        if task.state is TaskState.PENDING:
            self._end_run(task, J.JOB_CANCELLED, message, None)
        elif task.state is TaskState.STARTED and task.handle is not None:
            task.handle.cancel()

    def cancel(self, message: str) -> None:
        """Cancel the build: its analysis, its runs, its waits for other builds."""
        build = self.build
        if build.cancelled:
            return
        build.cancelled = True
        build.message = message
        self.log.info(
            "cancelling build {build_request_id}: {message}",
            build_request_id=build.build_request_id,
            message=message,
        )
        if build.analysis is not None:
            build.analysis.cancel()
        for task in list(build.tasks.values()):
            self.cancel_run(task, message)
        self._close_open_work()

    def _close_open_work(self) -> None:
        """Stop waiting for other builds; the refs awaited fail with the build's message."""
        build = self.build
        for ref, status in list(build.partitions.items()):
            if status is P.PARTITION_DELEGATED:
                build.open -= 1
                self._settle_ref(ref, P.PARTITION_FAILED, build.message)
        build.check_settled()

    async def _finish(self) -> bool:
        build = self.build
        for task in build.tasks.values():
            if task.state is not TaskState.DONE:
                # Only after an internal error: nothing may stay open or running.
                if task.handle is not None:
                    task.handle.cancel()
                self._end_run(task, J.JOB_FAILED, build.message, None)
        for ref in list(build.partitions):
            if not build.is_final(ref):
                self._ref_ended(ref, P.PARTITION_FAILED, build.message or "not built", None)
        failed = [
            r for r in build.requested if build.partitions.get(r) is not P.PARTITION_AVAILABLE
        ]
        if build.cancelled:
            status, message = B.BUILD_REQUEST_CANCELLED, build.message
        elif not failed:
            status, message = B.BUILD_REQUEST_COMPLETED, ""
        else:
            status = B.BUILD_REQUEST_FAILED
            message = build.message or (
                f"{len(failed)} of {len(build.requested)} requested partitions failed: "
                + ", ".join(failed[:5])
                + (", ..." if len(failed) > 5 else "")
            )
        build.final_status, build.message = status, message
        return await self._record_build(status, message) is not None

    # -- recording -------------------------------------------------------------------------

    def _record_build(self, status: BuildStatus, message: str = "") -> Deferred:
        return self._record.build(self.build_request_id, self.build.requested, status, message)

    def _record_job(
        self, task: Task, status: JobStatus, message: str = "", exit_code: int | None = None
    ) -> None:
        self._record.job(self.build_request_id, task.job_run, status, message, exit_code)

    def _set_partition(
        self, ref: str, status: PartitionStatus, message: str, job_run_id: str | None = None
    ) -> None:
        self._holdings.note(ref, self.build.partitions.get(ref), status)
        self.build.partitions[ref] = status
        self._record.partition(self.build_request_id, ref, status, message, job_run_id)

    def requested(self) -> None:
        """Record the requested refs as REQUESTED (after RECEIVED is stored)."""
        for ref in self.build.requested:
            self._set_partition(ref, P.PARTITION_REQUESTED, "requested")
