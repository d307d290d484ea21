"""The orchestrator service: its lifecycle, the request API and the barrier around each build.

Each build's course (``course.py``) runs inside a barrier: whatever escapes it ends that build
and nothing else — logged with its traceback, the build dropped from the live ones, its readers
told. Claims on refs (``claims.py``), what live builds know of the refs they hold
(``holdings.py``) and the recorder of events (``recorder.py``) are shared by all builds.

``stopService`` cancels every live build and waits for each to record its end, at most
``stop_deadline_s``; then it kills the job process groups still recorded as running and drops
the events the log could not store (the next start fails those builds).
"""

from __future__ import annotations

import gc
from collections.abc import Collection, Sequence
from typing import Any, Protocol, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.backend import StoreUnavailable
from databuild.bel.events import BuildRequestEvent, Event
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import Conflict, NotFound
from databuild.executor.launcher import AdoptedRun, Launcher
from databuild.graph.analysis import analyze
from databuild.graph.commands import CommandResolver, plain_commands
from databuild.graph.workspace import Workspace
from databuild.ids import new_id
from databuild.model import JobGraph, describe_refs, validate_refs
from databuild.orchestrator.claims import Claims, LocalClaims
from databuild.orchestrator.course import CANCELLED_MESSAGE, Course, Parts
from databuild.orchestrator.holdings import Holdings, PartitionSource
from databuild.orchestrator.hub import EventSource, ProgressHub
from databuild.orchestrator.leftovers import HostClaims, Leftovers, dead_here
from databuild.orchestrator.policy import Happening, build_end, progress
from databuild.orchestrator.recorder import OUTAGE_LIMIT_S, EventSink, NotYetStored, Recorder
from databuild.orchestrator.recovery import (
    RecoverySource,
    fail_orphaned_builds,
    record_adopted_end,
)
from databuild.orchestrator.remote import RemoteRuns, RunClaims
from databuild.orchestrator.state import Build, TaskState
from databuild.proc.process import ProcessResult

STOPPING_MESSAGE = "cancelled: the service is stopping"
STOP_DEADLINE_S = 30.0
YOUNG_COLLECTION_THRESHOLD = 50_000
"""Allocations between two collections of the garbage collector's youngest generation."""


class EventLog(EventSink, EventSource, RecoverySource, PartitionSource, RunClaims, Protocol):
    """What the orchestrator uses of ``databuild.bel.EventLog``."""

    def get_task(self, job_run_id: str) -> Deferred[dict[str, Any] | None]: ...

    def build_summary(self, build_request_id: str) -> Deferred[dict[str, Any] | None]: ...

    def live_service_ids(self) -> Deferred[set[str]]: ...


class Orchestrator(Service):
    """Plans, schedules and records the builds of one workspace."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        workspace: Workspace,
        event_log: EventLog,
        launcher: Launcher,
        resolve: CommandResolver = plain_commands,
        claims: Claims | None = None,
        *,
        outage_limit_s: float = OUTAGE_LIMIT_S,
        stop_deadline_s: float = STOP_DEADLINE_S,
    ) -> None:
        self._reactor = reactor
        self._stop_deadline_s = stop_deadline_s
        self._workspace = workspace
        self._event_log = event_log
        self._launcher = launcher
        self._resolve = resolve
        self.hub = ProgressHub(event_log, cast(IReactorTime, reactor), self.runs)
        self._recorder = Recorder(reactor, event_log, self.hub, outage_limit_s)  # type: ignore[arg-type]
        self._recorder.listener = self
        self._holdings = Holdings(event_log)
        self._leftovers = Leftovers(reactor)  # type: ignore[arg-type]
        self._parts = Parts(
            launcher,
            resolve,
            self.analyze,
            self._recorder,
            self._holdings,
            LocalClaims() if claims is None else claims,
            HostClaims(event_log, self._leftovers),
            RemoteRuns(reactor, event_log),  # type: ignore[arg-type]
        )
        self._courses: dict[str, Course] = {}
        self._ready = False
        self._ready_waiters: list[Deferred[None]] = []

    # -- the service -----------------------------------------------------------------------

    @property
    def active_builds(self) -> int:
        """How many builds are live (not yet final) in this service."""
        return len(self._courses)

    def runs(self, build_request_id: str) -> bool:
        """Whether this service drives the build now (it is live here)."""
        return build_request_id in self._courses

    @property
    def event_log_healthy(self) -> bool:
        """Whether the event log stores events now (False during an outage)."""
        return self._recorder.healthy

    def startService(self) -> Deferred[None]:
        """Reap orphaned job processes and fail unfinished builds, then take new builds.

        Returns a Deferred that fires once that is done (a parent may wait for it); builds
        submitted before then wait too. A failing recovery is logged, not fatal.
        """
        super().startService()
        tune_collector()
        recovered = ensureDeferred(self._recover())
        recovered.addErrback(lambda f: self.log.failure("crash recovery failed", f))
        recovered.addBoth(lambda _: self._now_ready())
        return self.when_ready()

    async def _recover(self) -> None:
        live = await self._event_log.live_service_ids()
        recovered = await self._launcher.recover(lambda service_id: service_id not in live)
        failed = await fail_orphaned_builds(
            self._event_log, self._recorder.append, keep=self._adopt(recovered.adopted)
        )
        if recovered.terminated or recovered.adopted or failed:
            self.log.info(
                "recovered from an earlier stop: {groups} job process groups terminated, "
                "{adopted} remote runs adopted, {builds} builds failed or closed",
                groups=recovered.terminated,
                adopted=len(recovered.adopted),
                builds=len(failed),
            )

    async def take_over(self, services: list[dict[str, Any]]) -> None:
        """Recover the builds and this host's job processes of services just declared dead."""
        dead = {service["service_id"] for service in services}
        # This host's job groups of the dead services (in whatever workspace they ran), then
        # what the launcher left elsewhere: a remote run may be adopted rather than failed.
        reaped = await self._leftovers.clear(dead_here(services))
        recovered = await self._launcher.recover(dead.__contains__)
        failed = await fail_orphaned_builds(
            self._event_log, self._recorder.append, sorted(dead),
            keep=self._adopt(recovered.adopted),
        )
        self.log.info(
            "took over {services}: {groups} job process groups terminated, "
            "{adopted} remote runs adopted, {builds} builds recorded as failed",
            services=sorted(dead),
            groups=len(reaped) + recovered.terminated,
            adopted=len(recovered.adopted),
            builds=len(failed),
        )

    def _adopt(self, adopted: Sequence[AdoptedRun]) -> set[str]:
        """Follow runs of dead services that go on elsewhere; record each one's end as it
        comes. Returns their ids, which recovery leaves open."""
        for run in adopted:
            run.handle.result.addCallback(self._adopted_ended, run).addErrback(
                self._adopted_unrecorded, run
            )
        return {run.job_run_id for run in adopted}

    def _adopted_ended(self, result: ProcessResult, run: AdoptedRun) -> Deferred[None]:
        return ensureDeferred(
            record_adopted_end(self._event_log, self._recorder.append_all, run, result)
        )

    def _adopted_unrecorded(self, failure: Failure, run: AdoptedRun) -> None:
        self.log.failure(
            "could not record the end of adopted job run {job_run_id}", failure,
            job_run_id=run.job_run_id,
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

    def stopService(self) -> Deferred[None]:
        """Cancel every live build; fire once each has recorded its end, or at the deadline."""
        super().stopService()
        stopped = ensureDeferred(self._stop())
        stopped.addBoth(self._close_launcher)
        return stopped

    def _close_launcher(self, result: object) -> object:
        self._launcher.close()
        return result

    async def _stop(self) -> None:
        # Recovery is not cut off halfway, unless it outlasts the deadline (the log is down).
        if not await self._in_time([self.when_ready()]):
            self._recorder.give_up("the service stopped during crash recovery")
            await self.when_ready()
        for course in list(self._courses.values()):
            course.cancel(STOPPING_MESSAGE)
        if await self._in_time(self._ends()):
            return
        still = list(self._courses)
        self.log.error(
            "{count} builds had not recorded their end {seconds:g} s after the stop began: "
            "{builds}; killing their job process groups",
            count=len(still),
            seconds=self._stop_deadline_s,
            builds=still,
        )
        self._launcher.kill_all()
        if not self._recorder.healthy or not await self._in_time(self._ends()):
            reason = "the service stopped before the event log stored them"
            self._recorder.give_up(reason)
            for course in list(self._courses.values()):
                self._end(course, Failure(StoreUnavailable(reason)))

    def _ends(self) -> list[Deferred[None]]:
        return [_copy(c.build.done) for c in self._courses.values()]

    def _in_time(self, waits: list[Deferred[Any]]) -> Deferred[bool]:
        """Fires with whether all of ``waits`` fired within the stop deadline."""
        answer: Deferred[bool] = Deferred()
        deadline = self._reactor.callLater(  # type: ignore[attr-defined]
            self._stop_deadline_s, answer.callback, False
        )

        def fired(_: object) -> None:
            if deadline.active():
                deadline.cancel()
                answer.callback(True)

        DeferredList(waits).addCallback(fired)
        return answer

    # -- outages of the event log (the recorder tells) --------------------------------------

    def outage_too_long(self, reason: str) -> None:
        """Fail every live build: it cannot be completed honestly."""
        for course in list(self._courses.values()):
            course.fail(Happening.STORE_OUTAGE, reason)

    # -- requests --------------------------------------------------------------------------

    def analyze(
        self,
        refs: Sequence[str],
        workspace: Workspace | None = None,
        resolve: CommandResolver | None = None,
        keep: Collection[str] = (),
    ) -> Deferred[JobGraph]:
        """The job graph a build of ``refs`` would run with ``workspace`` (by default the one
        the orchestrator was made with), its commands resolved by ``resolve`` (by default the
        orchestrator's), the requested refs in ``keep`` kept as they are
        (``JobGraph.kept``); nothing is run or recorded."""
        return analyze(
            self._reactor,
            workspace or self._workspace,
            refs,
            available=self._holdings.available,
            resolve=resolve or self._resolve,
            keep=keep,
        )

    def submit(
        self,
        refs: Sequence[str],
        force: bool = False,
        workspace: Workspace | None = None,
        retry_of: str | None = None,
    ) -> Deferred[str]:
        """Record a build request and start it; fires with its id once RECEIVED is stored.

        The build is planned and run with ``workspace`` (by default the one the orchestrator
        was made with) to its end; ``retry_of`` names the build it retries (SPEC §9).
        Errbacks with InvalidRefError for bad refs, Conflict while the service is stopping,
        StoreUnavailable while the event log cannot store events.
        """
        return ensureDeferred(self._submit(refs, force, workspace or self._workspace, retry_of))

    def retry(
        self, build_request_id: str, workspace: Workspace | None = None
    ) -> Deferred[tuple[str | None, tuple[str, ...]]]:
        """Build again the refs a final build requested that are not AVAILABLE now (SPEC §9).

        Fires with the new build's id and its refs, or ``(None, ())`` when every ref is
        AVAILABLE. Errbacks with NotFound for an unknown build, Conflict for one not final.
        """
        return ensureDeferred(self._retry(build_request_id, workspace or self._workspace))

    async def _retry(
        self, build_request_id: str, workspace: Workspace
    ) -> tuple[str | None, tuple[str, ...]]:
        found = await self._event_log.build_summary(build_request_id)
        if found is None:
            raise NotFound(f"no build request {build_request_id!r}")
        status = BuildStatus.parse(found["status"])
        if not status.final:
            raise Conflict(
                f"build {build_request_id} is still {status.short}; retry it once it ends "
                "(or cancel it first)"
            )
        requested = found["requested_partitions"]
        statuses = await self._event_log.partition_statuses(requested)
        available = PartitionStatus.PARTITION_AVAILABLE
        missing = tuple(ref for ref in requested if statuses.get(ref) is not available)
        if not missing:
            return None, ()
        new_id = await self._submit(missing, False, workspace, build_request_id)
        return new_id, missing

    async def _submit(
        self, refs: Sequence[str], force: bool, workspace: Workspace, retry_of: str | None
    ) -> str:
        requested = validate_refs(refs)
        await self.when_ready()
        if not self.running:
            raise Conflict("the service is stopping; no new builds are taken")
        build = Build(new_id(), requested, bool(force), workspace)
        build_id = build.build_request_id
        course = Course(build, self._parts)
        self._courses[build_id] = course
        try:
            await self._holdings.hold(build_id, requested)
            await self._recorder.admit(
                Event(build_id, BuildRequestEvent(
                    progress(Happening.BUILD_RECEIVED), requested, retry_of=retry_of
                ))
            )
        except NotYetStored as e:
            self._not_yet_received(course, e)
            raise StoreUnavailable(
                f"{e}; build {build_id} will be recorded as failed once the log takes events"
            ) from None
        except BaseException:
            self._release_holdings(build_id)
            del self._courses[build_id]
            raise
        self.log.info(
            "build {build_request_id} received: {refs} (force={force})",
            build_request_id=build_id,
            refs=describe_refs(requested),
            force=build.force,
        )
        driven = ensureDeferred(self._drive(course))
        driven.addErrback(self._broke, course)
        return build_id

    def _not_yet_received(self, course: Course, error: NotYetStored) -> None:
        """The store failed as a build's RECEIVED was first tried (the disk just filled up):
        its client is told so, and the build ends FAILED for the outage, recorded after its
        RECEIVED once the log takes events again, so that none is left open."""
        course.fail(Happening.STORE_OUTAGE, str(error))

        def received(_: object) -> None:
            driven = ensureDeferred(self._drive(course))
            driven.addErrback(self._broke, course)

        error.stored.addCallbacks(received, lambda failure: self._end(course, failure))

    def cancel_build(self, build_request_id: str) -> Deferred[None]:
        """Cancel a live build; fires once its cancellation is recorded.

        Errbacks with NotFound for an unknown build, Conflict for one already final.
        """
        return ensureDeferred(self._cancel_build(build_request_id))

    async def _cancel_build(self, build_request_id: str) -> None:
        course = self._courses.get(build_request_id)
        if course is None:
            found = await self._event_log.build_summary(build_request_id)
            if found is None:
                raise NotFound(f"no build request {build_request_id!r}")
            status = BuildStatus.parse(found["status"])
            raise Conflict(
                f"build {build_request_id} is already {status.short}"
                if status.final
                else f"build {build_request_id} is not running in this service"
            )
        course.cancel(f"{CANCELLED_MESSAGE} by request")
        await _copy(course.build.done)

    def ended(self, build_request_id: str) -> Deferred[None]:
        """Fires once a build this service runs is over (at once for any other build)."""
        course = self._courses.get(build_request_id)
        return succeed(None) if course is None else _copy(course.build.done)

    def cancel_task(self, job_run_id: str) -> Deferred[None]:
        """Cancel one job run; its downstream fails. Fires once the run is final.

        Errbacks with NotFound for an unknown run, Conflict for one already final.
        """
        return ensureDeferred(self._cancel_task(job_run_id))

    async def _cancel_task(self, job_run_id: str) -> None:
        found = next(
            (
                (course, task)
                for course in self._courses.values()
                if (task := course.build.tasks.get(job_run_id)) is not None
            ),
            None,
        )
        if found is None or found[1].state is TaskState.DONE:
            stored = await self._event_log.get_task(job_run_id)
            if stored is None:
                raise NotFound(f"no job run {job_run_id!r}")
            raise Conflict(
                f"job run {job_run_id} is already {JobStatus.parse(stored['status']).short}"
            )
        course, task = found
        course.cancel_run(task, f"{CANCELLED_MESSAGE} by request")
        await task.when_done()

    # -- the barrier around a build ----------------------------------------------------------

    async def _drive(self, course: Course) -> None:
        build = course.build
        try:
            await course.run()
        except StoreUnavailable:
            self.log.error(
                "build {build_request_id} ended {status} but the event log did not store it",
                build_request_id=build.build_request_id,
                status=build.final_status,
            )
            self._end(course, Failure())
            return
        self.log.info(
            "build {build_request_id} ended: {status} {message}",
            build_request_id=build.build_request_id,
            status=build.final_status.short if build.final_status else "?",
            message=build.message,
        )
        self._end(course, None)

    def _broke(self, failure: Failure, course: Course) -> None:
        """The barrier: the course itself failed before its end was stored. Record the build
        FAILED with the error if the log takes it, then drop it."""
        build = course.build
        self.log.failure(
            "build {build_request_id} broke past its own barrier",
            failure,
            build_request_id=build.build_request_id,
        )
        if build.build_request_id not in self._courses:
            return
        build.final_status = build_end(Happening.INTERNAL_ERROR, {})
        build.message = f"internal error: {failure.getErrorMessage()}"
        recorded = self._recorder.build(
            build.build_request_id, build.requested, build.final_status, build.message
        )
        recorded.addCallbacks(lambda _: self._end(course, None), lambda f: self._end(course, f))

    def _release_holdings(self, build_id: str) -> None:
        self._holdings.release(build_id).addErrback(
            lambda f: self.log.failure(
                "releasing the refs of build {build_request_id} broke", f,
                build_request_id=build_id,
            )
        )

    def _end(self, course: Course, lost: Failure | None) -> None:
        """The build is over: drop it and its claims; readers learn it if the log cannot."""
        build_id = course.build_request_id
        if build_id not in self._courses:
            return  # ended already (by the stop deadline)
        if lost is not None:
            self.hub.abandon(build_id, lost)
        # Every event of this build is stored now (the log keeps call order).
        self._parts.claims.release(build_id)
        self._release_holdings(build_id)
        del self._courses[build_id]
        course.build.done.callback(None)


def _copy(d: Deferred[Any]) -> Deferred[Any]:
    """A new Deferred firing with ``d``'s result, leaving ``d``'s own chain alone."""
    copy: Deferred[Any] = Deferred()

    def fire(result: object) -> object:
        copy.callback(result)
        return result

    d.addCallback(fire)
    return copy


def tune_collector() -> None:
    """Collect the youngest generation less often (never more often than now).

    A large build keeps tens of objects per run alive for its whole course, and each event
    allocates a few that die within milliseconds. With Python's default threshold (700) those
    few live just long enough to be promoted, and the full collections they trigger walk the
    whole build, again and again: a fifth to a third of the service's own CPU per job in a
    5,000-job build (docs/performance.md). Objects that die young are freed by reference
    counting; cycles are still collected, only in larger steps.
    """
    young, *older = gc.get_threshold()
    if young and young < YOUNG_COLLECTION_THRESHOLD:
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *older)
