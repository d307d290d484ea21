"""Crash recovery (SPEC §5.3): failing what a killed service left unfinished."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from databuild.bel.events import BuildRequestEvent, Event, JobEvent, PartitionEvent
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus

STOPPED_MESSAGE = "the service stopped before this build finished"

log = Logger()


class RecoverySource(Protocol):
    """What recovery reads from the event log."""

    def unfinished_builds(self) -> Deferred[list[str]]: ...

    def get_build(self, build_request_id: str) -> Deferred[dict[str, Any] | None]: ...


async def fail_unfinished_builds(
    event_log: RecoverySource, record: Callable[[Event], Deferred[Event]]
) -> list[str]:
    """Record every unfinished build as FAILED, with its open job runs and partitions.

    ``record`` appends one event. Returns the ids of the builds failed.
    """
    failed = []
    for build_request_id in await event_log.unfinished_builds():
        try:
            await _fail_build(event_log, record, build_request_id)
        except Exception:
            log.failure("could not recover build {build_request_id}",
                        build_request_id=build_request_id)
        else:
            failed.append(build_request_id)
    return failed


async def _fail_build(
    event_log: RecoverySource, record: Callable[[Event], Deferred[Event]], build_request_id: str
) -> None:
    build = await event_log.get_build(build_request_id)
    if build is None:
        return
    events = [
        JobEvent(
            task["job_run_id"],
            task["job_label"],
            JobStatus.JOB_FAILED,
            task["outputs"],
            STOPPED_MESSAGE,
        )
        for task in build["tasks"]
        if not JobStatus.parse(task["status"]).final
    ] + [
        PartitionEvent(p["partition_ref"], PartitionStatus.PARTITION_FAILED, STOPPED_MESSAGE)
        for p in build["partitions"]
        if not PartitionStatus.parse(p["status"]).final
    ]
    # Appends keep their order; the build's own event goes last.
    await gatherResults(
        [record(Event(build_request_id, payload)) for payload in events], consumeErrors=True
    )
    await record(
        Event(
            build_request_id,
            BuildRequestEvent(
                BuildStatus.BUILD_REQUEST_FAILED, build["requested_partitions"], STOPPED_MESSAGE
            ),
        )
    )
    log.info(
        "recovered build {build_request_id}: recorded as failed ({message})",
        build_request_id=build_request_id,
        message=STOPPED_MESSAGE,
    )
