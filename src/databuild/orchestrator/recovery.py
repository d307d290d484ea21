"""Crash recovery (SPEC §5.3, §5.8): closing what a dead service left open.

Only builds whose owner is dead are touched: a killed earlier service of this workspace, or,
on a shared log, a service whose lease expired or whose process is gone. A live service's
builds are never touched. A build that was not final when its owner died is recorded FAILED,
with its open job runs and partitions, and a message naming that owner. A build that is final
but still has open runs or partitions (its service lost events, or died between its runs' ends
and its own) has those closed too; its own status stays. What each becomes is the status
policy's ``CRASH_RECOVERY``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from databuild.bel.events import BuildRequestEvent, Event, JobEvent, PartitionEvent, Payload
from databuild.bel.services import describe
from databuild.bel.status import JobStatus, PartitionStatus
from databuild.executor.launcher import AdoptedRun
from databuild.orchestrator.policy import POLICY, Happening, run_ended
from databuild.proc.process import ProcessResult

STOPPED_MESSAGE = "the service stopped before this build finished"
OPEN_MESSAGE = "the service stopped before this was recorded as finished"

log = Logger()

_RECOVERED = POLICY[Happening.CRASH_RECOVERY]


def owned_message(message: str, orphan: dict[str, Any]) -> str:
    """``message``, naming the build's dead owner when it is known."""
    if orphan.get("service_id") is None:
        return message
    owner = describe(orphan["service_id"], orphan["host"] or "?", orphan["pid"] or 0)
    return f"{message}: its owner, {owner}, is dead"


class RecoverySource(Protocol):
    """What recovery reads from the event log."""

    def orphaned_builds(
        self, owners: list[str] | None = None
    ) -> Deferred[list[dict[str, Any]]]: ...

    def builds_with_open_work(
        self, owners: list[str] | None = None
    ) -> Deferred[list[dict[str, Any]]]: ...

    def get_build(self, build_request_id: str) -> Deferred[dict[str, Any] | None]: ...


Record = Callable[[Event], Deferred[Event]]
RecordAll = Callable[[Sequence[Event]], Deferred[list[Event]]]
"""Appends events to be stored in one transaction (``Recorder.append_all``)."""


async def fail_orphaned_builds(
    event_log: RecoverySource,
    record: Record,
    owners: list[str] | None = None,
    *,
    keep: Collection[str] = (),
) -> list[str]:
    """Fail every unfinished build of a dead owner and close the open work of its final ones.

    ``owners`` limits this to the builds of those (dead) services. ``record`` appends one
    event. ``keep`` names runs that go on elsewhere (adopted remote runs): they and their
    outputs stay open until ``record_adopted_end``. Returns the ids of the builds failed or
    closed.
    """
    recovered = []
    unfinished = await event_log.orphaned_builds(owners)
    closed = await event_log.builds_with_open_work(owners)
    failing = {orphan["build_request_id"] for orphan in unfinished}
    for orphan in [*unfinished, *closed]:
        build_request_id = orphan["build_request_id"]
        fail = build_request_id in failing
        message = owned_message(STOPPED_MESSAGE if fail else OPEN_MESSAGE, orphan)
        try:
            await _close_build(event_log, record, build_request_id, message, fail=fail, keep=keep)
        except Exception:
            log.failure("could not recover build {build_request_id}",
                        build_request_id=build_request_id)
        else:
            recovered.append(build_request_id)
    return recovered


async def _close_build(
    event_log: RecoverySource,
    record: Record,
    build_request_id: str,
    message: str,
    *,
    fail: bool,
    keep: Collection[str],
) -> None:
    build = await event_log.get_build(build_request_id)
    if build is None:
        return
    assert _RECOVERED.run is not None and _RECOVERED.outputs is not None
    open_tasks = [t for t in build["tasks"] if not JobStatus.parse(t["status"]).final]
    kept = {ref for t in open_tasks if t["job_run_id"] in keep for ref in t["outputs"]}
    events: Sequence[Payload] = [
        JobEvent(task["job_run_id"], task["job_label"], _RECOVERED.run, task["outputs"], message)
        for task in open_tasks
        if task["job_run_id"] not in keep
    ] + [
        PartitionEvent(p["partition_ref"], _RECOVERED.outputs, message)
        for p in build["partitions"]
        if not PartitionStatus.parse(p["status"]).final and p["partition_ref"] not in kept
    ]
    # Appends keep their order; the build's own event goes last.
    await gatherResults(
        [record(Event(build_request_id, payload)) for payload in events], consumeErrors=True
    )
    if fail:
        assert _RECOVERED.build is not None
        await record(
            Event(
                build_request_id,
                BuildRequestEvent(_RECOVERED.build, build["requested_partitions"], message),
            )
        )
    log.info(
        "recovered build {build_request_id}: {what} ({message})",
        build_request_id=build_request_id,
        what="recorded as failed" if fail else f"{len(events)} open runs and partitions closed",
        message=message,
    )


class TaskSource(Protocol):
    """What recording an adopted run's end reads from the event log."""

    def get_task(self, job_run_id: str) -> Deferred[dict[str, Any] | None]: ...


async def record_adopted_end(
    event_log: TaskSource, record_all: RecordAll, run: AdoptedRun, result: ProcessResult
) -> None:
    """Record how an adopted run ended, and its outputs, as its own service would have: in
    one transaction (``record_all``), as that service records a run's end."""
    task = await event_log.get_task(run.job_run_id)
    if task is None or JobStatus.parse(task["status"]).final:
        return
    events: list[Payload] = []
    started = POLICY[Happening.RUN_STARTED]
    assert started.run is not None and started.outputs is not None
    if JobStatus.parse(task["status"]) is not started.run:
        # Its service died before it recorded the start it saw.
        events.append(JobEvent(run.job_run_id, task["job_label"], started.run, task["outputs"]))
        events += [PartitionEvent(ref, started.outputs, "", run.job_run_id)
                   for ref in task["outputs"]]
    outcome = POLICY[run_ended(result)]
    assert outcome.run is not None and outcome.outputs is not None
    message = "" if result.succeeded else f"job {task['job_label']} {result.describe()}"
    if result.stderr_tail and not result.succeeded:
        message += f"; stderr ends: {result.stderr_tail.splitlines()[-1]}"
    events.append(JobEvent(run.job_run_id, task["job_label"], outcome.run, task["outputs"],
                           message, result.exit_code))
    events += [PartitionEvent(ref, outcome.outputs, message, run.job_run_id)
               for ref in task["outputs"]]
    await record_all([Event(run.build_request_id, payload) for payload in events])
    log.info(
        "adopted job run {job_run_id} of build {build_request_id} ended: {outcome}",
        job_run_id=run.job_run_id,
        build_request_id=run.build_request_id,
        outcome=result.describe(),
    )
