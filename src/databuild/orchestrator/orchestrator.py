"""Build requests from submission to their final status (SPEC §3.5, §4, §5.3).

A build goes RECEIVED → PLANNING → ANALYSIS_COMPLETED → EXECUTING → COMPLETED | FAILED, or
CANCELLED from any of these. After analysis, one synchronous step decides for every run whether
this build runs it, takes its outputs as already AVAILABLE, or waits for another live build
producing them (delegation), and claims the refs it will produce. Execution is event-driven:
a run starts when its last pending input becomes AVAILABLE; a failure fails everything
downstream of it and nothing else. Events are appended in the order they happen without
waiting for one another (the log keeps call order and commits them in groups); each stored
event is handed to the progress hub.

Every live build holds the refs it requested and its graph's outputs. While any build holds a
ref, the service's own record of it (a ``Ref``: AVAILABLE or not, which build claims it) is the
truth, not the log: the log may not have stored the latest events yet, and live builds'
bookkeeping events hide a ref's real status in its catalog. A build reads from the log only
refs no live build knows, one build at a time, and lets go of its refs once its final event
is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    ensureDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.events import (
    BuildRequestEvent,
    DelegationEvent,
    Event,
    JobEvent,
    JobGraphEvent,
    PartitionEvent,
    Payload,
)
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import Conflict, DataBuildError, NotFound
from databuild.executor.runner import Executor
from databuild.executor.running import reap_orphans
from databuild.graph.analysis import analyze
from databuild.graph.commands import CommandResolver, plain_commands
from databuild.graph.workspace import Workspace
from databuild.model import JobGraph, new_id, validate_refs
from databuild.orchestrator.hub import EventSource, ProgressHub
from databuild.orchestrator.planning import Decision, RunPlan, plan_runs
from databuild.orchestrator.recovery import RecoverySource, fail_unfinished_builds
from databuild.orchestrator.state import Build, Outcome, Ref, Task, TaskState
from databuild.proc.process import ProcessResult

B, J, P = BuildStatus, JobStatus, PartitionStatus

CANCELLED_MESSAGE = "cancelled"
STOPPING_MESSAGE = "cancelled: the service is stopping"


class EventLog(EventSource, RecoverySource, Protocol):
    """What the orchestrator uses of ``databuild.bel.EventLog``, besides the hub and recovery."""

    def append(self, event: Event) -> Deferred[Event]: ...

    def partition_statuses(self, refs: Sequence[str]) -> Deferred[dict[str, PartitionStatus]]: ...

    def get_partition(self, ref: str) -> Deferred[dict[str, Any] | None]: ...

    def get_task(self, job_run_id: str) -> Deferred[dict[str, Any] | None]: ...


class Orchestrator(Service):
    """Plans, schedules and records the builds of one workspace."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        workspace: Workspace,
        event_log: EventLog,
        executor: Executor,
        resolve: CommandResolver = plain_commands,
    ) -> None:
        self._reactor = reactor
        self._workspace = workspace
        self._log = event_log
        self._executor = executor
        self._resolve = resolve
        self.hub = ProgressHub(event_log)
        self._builds: dict[str, Build] = {}
        self._tasks: dict[str, tuple[Build, Task]] = {}
        self._refs: dict[str, Ref] = {}
        self._learning = DeferredLock()
        self._ready = False
        self._ready_waiters: list[Deferred[None]] = []

    # -- the service ---------------------------------------------------------------------

    @property
    def active_builds(self) -> int:
        """How many builds are live (not yet final) in this service."""
        return len(self._builds)

    def startService(self) -> Deferred[None]:  # type: ignore[override]
        """Reap orphaned job processes and fail unfinished builds, then take new builds.

        Returns a Deferred that fires once that is done (a parent may wait for it); builds
        submitted before then wait too. A failing recovery is logged, not fatal.
        """
        super().startService()
        recovered = ensureDeferred(self._recover())
        recovered.addErrback(lambda f: self.log.failure("crash recovery failed", f))
        recovered.addBoth(lambda _: self._now_ready())
        return self.when_ready()

    async def _recover(self) -> None:
        reaped = await reap_orphans(self._reactor, self._executor.running_dir)  # type: ignore[arg-type]
        failed = await fail_unfinished_builds(self._log, self._append)
        if reaped or failed:
            self.log.info(
                "recovered from an earlier stop: {groups} job process groups terminated, "
                "{builds} unfinished builds recorded as failed",
                groups=len(reaped),
                builds=len(failed),
            )

    def _now_ready(self) -> None:
        self._ready = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def when_ready(self) -> Deferred[None]:
        """Fires once crash recovery is over (at once if it is)."""
        if self._ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ready_waiters.append(d)
        return d

    def stopService(self) -> Deferred[object]:
        """Cancel every live build and fire once each has recorded its end."""
        super().stopService()
        builds = list(self._builds.values())
        for build in builds:
            self._cancel(build, STOPPING_MESSAGE)
        return DeferredList([_copy(b.done) for b in builds])

    # -- requests ------------------------------------------------------------------------

    def analyze(self, refs: Sequence[str]) -> Deferred[JobGraph]:
        """The job graph a build of ``refs`` would run; nothing is run or recorded."""
        return analyze(
            self._reactor,
            self._workspace,
            refs,
            available=self._available,
            resolve=self._resolve,
        )

    def submit(self, refs: Sequence[str], force: bool = False) -> Deferred[str]:
        """Record a build request and start it; fires with its id once RECEIVED is stored.

        Errbacks with InvalidRefError for bad refs, Conflict while the service is stopping.
        """
        return ensureDeferred(self._submit(refs, force))

    async def _submit(self, refs: Sequence[str], force: bool) -> str:
        requested = validate_refs(refs)
        await self.when_ready()
        if not self.running:
            raise Conflict("the service is stopping; no new builds are taken")
        build = Build(new_id(), requested, bool(force))
        self._builds[build.build_request_id] = build
        try:
            await self._hold(build, requested)
            await self._append(
                Event(
                    build.build_request_id,
                    BuildRequestEvent(B.BUILD_REQUEST_RECEIVED, requested),
                )
            )
        except BaseException:
            self._release(build)
            del self._builds[build.build_request_id]
            raise
        for ref in requested:
            self._set_partition(build, ref, P.PARTITION_REQUESTED, "requested")
        self.log.info(
            "build {build_request_id} received: {refs} (force={force})",
            build_request_id=build.build_request_id,
            refs=list(requested),
            force=build.force,
        )
        ensureDeferred(self._drive(build))
        return build.build_request_id

    def cancel_build(self, build_request_id: str) -> Deferred[None]:
        """Cancel a live build; fires once its cancellation is recorded.

        Errbacks with NotFound for an unknown build, Conflict for one already final.
        """
        return ensureDeferred(self._cancel_build(build_request_id))

    async def _cancel_build(self, build_request_id: str) -> None:
        build = self._builds.get(build_request_id)
        if build is None:
            found = await self._log.get_build(build_request_id)
            if found is None:
                raise NotFound(f"no build request {build_request_id!r}")
            raise Conflict(
                f"build {build_request_id} is already {BuildStatus.parse(found['status']).short}"
                if BuildStatus.parse(found["status"]).final
                else f"build {build_request_id} is not running in this service"
            )
        self._cancel(build, f"{CANCELLED_MESSAGE} by request")
        await _copy(build.done)

    def cancel_task(self, job_run_id: str) -> Deferred[None]:
        """Cancel one job run; its downstream fails. Fires once the run is final.

        Errbacks with NotFound for an unknown run, Conflict for one already final.
        """
        return ensureDeferred(self._cancel_task(job_run_id))

    async def _cancel_task(self, job_run_id: str) -> None:
        entry = self._tasks.get(job_run_id)
        if entry is None or entry[1].state is TaskState.DONE:
            found = await self._log.get_task(job_run_id)
            if found is None:
                raise NotFound(f"no job run {job_run_id!r}")
            raise Conflict(
                f"job run {job_run_id} is already {JobStatus.parse(found['status']).short}"
            )
        build, task = entry
        self._cancel_run(build, task, f"{CANCELLED_MESSAGE} by request")
        await _copy(task.done)

    # -- a build's course ----------------------------------------------------------------

    async def _drive(self, build: Build) -> None:
        try:
            graph = await self._plan(build)
            if graph is not None:
                await self._execute(build, graph)
        except Exception as e:
            self.log.failure(
                "build {build_request_id} broke", build_request_id=build.build_request_id
            )
            build.message = build.message or f"internal error: {e}"
            self._close_open_work(build)
        await self._finish(build)

    async def _plan(self, build: Build) -> JobGraph | None:
        if build.cancelled:
            return None
        self._emit_build(build, B.BUILD_REQUEST_PLANNING)
        build.analysis = self.analyze(build.requested)
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
        self._emit(build, JobGraphEvent(graph))
        self._emit_build(build, B.BUILD_REQUEST_ANALYSIS_COMPLETED)
        return graph

    async def _execute(self, build: Build, graph: JobGraph) -> None:
        outputs = list(dict.fromkeys(ref for run in graph.job_runs for ref in run.outputs))
        await self._hold(build, outputs)
        await self._learn_builders([ref for ref in outputs if self._refs[ref].available])
        if build.cancelled:
            return

        # One synchronous step: decide every run and claim refs, so no other build can
        # decide to produce the same ref in between.
        plans = plan_runs(
            graph,
            requested=build.requested,
            force=build.force,
            available={ref for ref in outputs if self._refs[ref].available},
            producing=lambda ref: self._refs[ref].producer,
        )
        waits: dict[str, Deferred[Outcome]] = {}
        for plan in plans:
            for ref in plan.claims:
                self._refs[ref].producer = build.build_request_id
            for ref in plan.delegated:
                waits[ref] = self._refs[ref].wait()
        build.executing = True
        self.log.info(
            "build {build_request_id} executing: {runs} runs to run, {skipped} skipped, "
            "{delegated} partitions awaited from other builds",
            build_request_id=build.build_request_id,
            runs=sum(1 for p in plans if p.decision is Decision.RUN),
            skipped=sum(1 for p in plans if p.decision is Decision.SKIP),
            delegated=len(waits),
        )
        self._emit_build(build, B.BUILD_REQUEST_EXECUTING)
        self._schedule(build, plans, waits)
        if any(t.state is TaskState.PENDING for t in build.tasks.values()):
            await self._resolve_commands(build)
        build.check_settled()
        await build.settled

    async def _learn_builders(self, refs: list[str]) -> None:
        """For AVAILABLE refs, learn from the log the build whose run last made each."""
        for ref in refs:
            if self._refs[ref].built_by:
                continue
            partition = await self._log.get_partition(ref) or {}
            self._refs[ref].built_by = next(
                (
                    run["build_request_id"]
                    for run in partition.get("job_runs", ())
                    if run["status"] == J.JOB_COMPLETED.value
                ),
                partition.get("build_request_id") or "unknown",
            )

    def _schedule(
        self,
        build: Build,
        plans: list[RunPlan],
        waits: dict[str, Deferred[Outcome]],
    ) -> None:
        """Record every run as scheduled, record skips and delegations, queue ready runs."""
        pending: set[str] = set(waits)
        for plan in plans:
            if plan.decision is Decision.RUN:
                pending.update(plan.job_run.outputs)
        for plan in plans:
            run = plan.job_run
            task = Task(run)
            build.tasks[run.job_run_id] = task
            self._tasks[run.job_run_id] = (build, task)
            self._emit_job(build, task, J.JOB_SCHEDULED)
            for ref in run.outputs:
                self._set_partition(build, ref, P.PARTITION_SCHEDULED, "", run.job_run_id)
            if plan.decision is Decision.SKIP:
                self._skip(build, task, plan)
                continue
            build.open += 1
            task.waiting_on = {ref for ref in run.config.materialize_inputs if ref in pending}
            for ref in task.waiting_on:
                build.dependents[ref].append(task)
            if not task.waiting_on:
                build.ready.append(task)
        for ref, wait in waits.items():
            build.open += 1
            wait.addCallback(self._delegation_settled, build, ref)

    def _skip(self, build: Build, task: Task, plan: RunPlan) -> None:
        run_id = task.job_run_id
        for ref in plan.available:
            # SPEC §4.2 has no way from SCHEDULED to AVAILABLE but through DELEGATED: the
            # build that made the ref is the one this build relies on.
            other = self._refs[ref].built_by or "unknown"
            self._emit(build, DelegationEvent(ref, other, "already available; not built again"))
            message = f"already available, built by build {other}"
            self._set_partition(build, ref, P.PARTITION_DELEGATED, message, run_id)
            self._set_partition(build, ref, P.PARTITION_AVAILABLE, "already available", run_id)
        for ref, other in plan.delegated.items():
            self._emit(build, DelegationEvent(ref, other, f"being built by build {other}"))
            self._set_partition(
                build, ref, P.PARTITION_DELEGATED, f"waiting for build {other}", run_id
            )
        reason = (
            f"delegated to build {', '.join(sorted(set(plan.delegated.values())))}"
            if plan.delegated
            else "outputs already available"
        )
        task.state = TaskState.DONE
        self._emit_job(build, task, J.JOB_SKIPPED, reason)
        task.done.callback(None)

    async def _resolve_commands(self, build: Build) -> None:
        labels = {t.job_run.job_label for t in build.tasks.values() if t.state is TaskState.PENDING}
        try:
            build.prefixes = await self._resolve([self._workspace.job(lb) for lb in sorted(labels)])
        except DataBuildError as e:
            message = f"could not resolve the job's command: {e}"
            for task in list(build.tasks.values()):
                if task.state is TaskState.PENDING:
                    self._end_run(build, task, J.JOB_FAILED, message, None)
            return
        self._start_ready(build)

    def _delegation_settled(self, outcome: Outcome, build: Build, ref: str) -> None:
        if build.partitions.get(ref) is not P.PARTITION_DELEGATED:
            return  # this build stopped waiting (it was cancelled)
        build.open -= 1
        message = f"built by build {outcome.build_request_id}"
        if outcome.status is P.PARTITION_FAILED:
            message = f"failed in build {outcome.build_request_id}: {outcome.message}"
        self._settle_ref(build, ref, outcome.status, message)
        self._start_ready(build)
        build.check_settled()

    # -- runs ----------------------------------------------------------------------------

    def _start_ready(self, build: Build) -> None:
        if build.prefixes is None:
            return
        while build.ready:
            task = build.ready.popleft()
            if task.state is TaskState.PENDING and not build.cancelled:
                self._start(build, task, build.prefixes)

    def _start(self, build: Build, task: Task, prefixes: dict[str, tuple[str, ...]]) -> None:
        run = task.job_run
        spec = self._workspace.job(run.job_label)
        task.state = TaskState.STARTED
        task.handle = self._executor.run(
            run, build.build_request_id, prefixes[run.job_label], spec.timeout,
            retries=spec.retries,
        )
        task.handle.started.addCallback(lambda _: self._run_started(build, task))
        task.handle.result.addCallback(self._run_ended, build, task)

    def _run_started(self, build: Build, task: Task) -> None:
        self._emit_job(build, task, J.JOB_RUNNING)
        for ref in task.job_run.outputs:
            if not build.is_final(ref):
                self._set_partition(build, ref, P.PARTITION_BUILDING, "", task.job_run_id)
        self.log.info(
            "job run {job_run_id} ({job_label}) of build {build_request_id} started",
            job_run_id=task.job_run_id,
            job_label=task.job_run.job_label,
            build_request_id=build.build_request_id,
        )

    def _run_ended(self, result: ProcessResult, build: Build, task: Task) -> None:
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
            build_request_id=build.build_request_id,
            status=status.short,
            outcome=result.describe(),
        )
        self._end_run(build, task, status, message, result.exit_code)

    def _end_run(
        self, build: Build, task: Task, status: JobStatus, message: str, exit_code: int | None
    ) -> None:
        """Record a run's end, then its outputs' (and everything downstream of a failure)."""
        work: list[tuple[Task, JobStatus, str, int | None]] = [(task, status, message, exit_code)]
        while work:
            task, status, message, exit_code = work.pop()
            if task.state is TaskState.DONE:
                continue
            task.state = TaskState.DONE
            build.open -= 1
            self._emit_job(build, task, status, message, exit_code)
            if status is J.JOB_COMPLETED:
                for ref in task.job_run.outputs:
                    self._ref_ended(build, ref, P.PARTITION_AVAILABLE, "", task.job_run_id)
            else:
                cause = f"{message} (job run {task.job_run_id})"
                for ref in task.job_run.outputs:
                    for failed, reason_status, reason in self._ref_ended(
                        build, ref, P.PARTITION_FAILED, cause, task.job_run_id
                    ):
                        work.append((failed, reason_status, reason, None))
            task.done.callback(None)
        self._start_ready(build)
        build.check_settled()

    def _ref_ended(
        self,
        build: Build,
        ref: str,
        status: PartitionStatus,
        message: str,
        job_run_id: str | None,
    ) -> list[tuple[Task, JobStatus, str]]:
        """Record a ref's end in this build; returns the runs that end with it, and how."""
        if build.is_final(ref):
            return []
        root = build.root_causes.get(ref, f"{ref}: {message}")
        self._set_partition(build, ref, status, message, job_run_id)
        entry = self._refs[ref]
        if status is P.PARTITION_AVAILABLE and job_run_id is not None:
            entry.built_by = build.build_request_id
        if entry.producer == build.build_request_id:
            entry.settle(Outcome(status, message, build.build_request_id))
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

    def _settle_ref(self, build: Build, ref: str, status: PartitionStatus, message: str) -> None:
        """Record the end of a ref no run of this build made, and end the runs it fails."""
        for task, job_status, reason in self._ref_ended(build, ref, status, message, None):
            self._end_run(build, task, job_status, reason, None)

    def _cancel_run(self, build: Build, task: Task, message: str) -> None:
        task.cancel_message = message
        if task.state is TaskState.PENDING:
            self._end_run(build, task, J.JOB_CANCELLED, message, None)
        elif task.state is TaskState.STARTED and task.handle is not None:
            task.handle.cancel()

    def _cancel(self, build: Build, message: str) -> None:
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
            self._cancel_run(build, task, message)
        self._close_open_work(build)

    def _close_open_work(self, build: Build) -> None:
        """Stop waiting for other builds; the refs awaited fail with the build's message."""
        for ref, status in list(build.partitions.items()):
            if status is P.PARTITION_DELEGATED:
                build.open -= 1
                self._settle_ref(build, ref, P.PARTITION_FAILED, build.message)
        build.check_settled()

    async def _finish(self, build: Build) -> None:
        for task in build.tasks.values():
            if task.state is not TaskState.DONE:
                # Only after an internal error: nothing may stay open or running.
                if task.handle is not None:
                    task.handle.cancel()
                self._end_run(build, task, J.JOB_FAILED, build.message, None)
        for ref in list(build.partitions):
            if not build.is_final(ref):
                self._ref_ended(build, ref, P.PARTITION_FAILED, build.message or "not built", None)
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
        if await self._emit_build(build, status, message) is None:
            self.hub.abandon(
                build.build_request_id,
                {
                    "build_request_id": build.build_request_id,
                    "status": status.value,
                    "message": f"{message} (the event log could not record this end)".lstrip(),
                },
            )
        for run_id in build.tasks:
            self._tasks.pop(run_id, None)
        # Every event of this build is stored now (the log keeps call order).
        self._release(build)
        del self._builds[build.build_request_id]
        self.log.info(
            "build {build_request_id} ended: {status} {message}",
            build_request_id=build.build_request_id,
            status=status.short,
            message=message,
        )
        build.done.callback(None)

    # -- recording -----------------------------------------------------------------------

    def _hold(self, build: Build, refs: Sequence[str]) -> Deferred[None]:
        """Make ``build`` a holder of ``refs``; learn from the log those no live build knows.

        Builds take their holds one at a time, and a build writes about a ref only once it
        holds it; so a ref read from the log is one no live build has written about yet.
        """
        return self._learning.run(lambda: ensureDeferred(self._take(build, refs)))

    async def _take(self, build: Build, refs: Sequence[str]) -> None:
        unknown = []
        for ref in refs:
            entry = self._refs.setdefault(ref, Ref())
            entry.holders.add(build.build_request_id)
            build.held.add(ref)
            if entry.available is None:
                unknown.append(ref)
        if unknown:
            statuses = await self._log.partition_statuses(unknown)
            for ref in unknown:
                entry = self._refs[ref]
                if entry.available is None:
                    entry.available = statuses.get(ref) is P.PARTITION_AVAILABLE

    def _release(self, build: Build) -> None:
        for ref in build.held:
            entry = self._refs[ref]
            entry.holders.discard(build.build_request_id)
            if not entry.holders:
                del self._refs[ref]
        build.held.clear()

    def _available(self, refs: Sequence[str]) -> Deferred[set[str]]:
        """Which of ``refs`` are AVAILABLE, for analysis: this service's word, else the log's."""
        known = {ref: entry.available for ref in refs if (entry := self._refs.get(ref))}
        found = {ref for ref, available in known.items() if available}
        unknown = [ref for ref, available in known.items() if available is None] + [
            ref for ref in refs if ref not in known
        ]
        if not unknown:
            return succeed(found)
        return self._log.partition_statuses(unknown).addCallback(
            lambda statuses: found | {r for r, s in statuses.items() if s is P.PARTITION_AVAILABLE}
        )

    def _append(self, event: Event) -> Deferred[Event]:
        d = self._log.append(event)
        d.addCallback(self._stored)
        d.addErrback(self._not_stored, event)
        return d

    def _stored(self, event: Event) -> Event:
        self.hub.publish(event)
        return event

    def _not_stored(self, failure: Failure, event: Event) -> Failure:
        self.log.failure(
            "could not record {event_type} event of build {build_request_id}",
            failure,
            event_type=event.event_type,
            build_request_id=event.build_request_id,
        )
        return failure

    def _emit(self, build: Build, payload: Payload) -> Deferred[Event | None]:
        """Append ``payload`` for ``build``; fires with None if the log refused it (logged)."""
        d: Deferred[Event | None] = self._append(Event(build.build_request_id, payload))
        d.addErrback(lambda _: None)
        return d

    def _emit_build(
        self, build: Build, status: BuildStatus, message: str = ""
    ) -> Deferred[Event | None]:
        return self._emit(build, BuildRequestEvent(status, build.requested, message))

    def _emit_job(
        self,
        build: Build,
        task: Task,
        status: JobStatus,
        message: str = "",
        exit_code: int | None = None,
    ) -> None:
        run = task.job_run
        self._emit(
            build, JobEvent(run.job_run_id, run.job_label, status, run.outputs, message, exit_code)
        )

    def _set_partition(
        self,
        build: Build,
        ref: str,
        status: PartitionStatus,
        message: str,
        job_run_id: str | None = None,
    ) -> None:
        build.partitions[ref] = status
        if status in (P.PARTITION_BUILDING, P.PARTITION_AVAILABLE, P.PARTITION_FAILED):
            # The others are bookkeeping: they say nothing of the ref's data.
            self._refs[ref].available = status is P.PARTITION_AVAILABLE
        self._emit(build, PartitionEvent(ref, status, message, job_run_id))


def _copy(d: Deferred[Any]) -> Deferred[Any]:
    """A new Deferred firing with ``d``'s result, leaving ``d``'s own chain alone."""
    copy: Deferred[Any] = Deferred()

    def fire(result: object) -> object:
        copy.callback(result)
        return result

    d.addCallback(fire)
    return copy
