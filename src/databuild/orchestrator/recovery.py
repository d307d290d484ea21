"""Crash recovery (SPEC §5.3): closing what a killed service left open.

A build that was not final when its service died is recorded FAILED, with its open job runs and
partitions. A build that is final but still has open runs or partitions (its service lost
events, or died between its runs' ends and its own) has those closed too; its own status stays.
What each becomes is the status policy's ``CRASH_RECOVERY``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from databuild.bel.events import BuildRequestEvent, Event, JobEvent, PartitionEvent, Payload
from databuild.bel.status import JobStatus, PartitionStatus
from databuild.orchestrator.policy import POLICY, Happening

STOPPED_MESSAGE = "the service stopped before this build finished"
OPEN_MESSAGE = "the service stopped before this was recorded as finished"

log = Logger()

_RECOVERED = POLICY[Happening.CRASH_RECOVERY]


class RecoverySource(Protocol):
    """What recovery reads from the event log."""

    def unfinished_builds(self) -> Deferred[list[str]]: ...

    def builds_with_open_work(self) -> Deferred[list[str]]: ...

    def get_build(self, build_request_id: str) -> Deferred[dict[str, Any] | None]: ...


Record = Callable[[Event], Deferred[Event]]


async def fail_unfinished_builds(event_log: RecoverySource, record: Record) -> list[str]:
    """Fail every unfinished build and close the open work of final ones.

    ``record`` appends one event. Returns the ids of the builds failed or closed.
    """
    recovered = []
    unfinished = await event_log.unfinished_builds()
    closed = await event_log.builds_with_open_work()
    for build_request_id in [*unfinished, *closed]:
        try:
            await _close_build(
                event_log, record, build_request_id, fail=build_request_id in unfinished
            )
        except Exception:
            log.failure("could not recover build {build_request_id}",
                        build_request_id=build_request_id)
        else:
            recovered.append(build_request_id)
    return recovered


async def _close_build(
    event_log: RecoverySource, record: Record, build_request_id: str, *, fail: bool
) -> None:
    build = await event_log.get_build(build_request_id)
    if build is None:
        return
    message = STOPPED_MESSAGE if fail else OPEN_MESSAGE
    assert _RECOVERED.run is not None and _RECOVERED.outputs is not None
    events: list[Payload] = [
        JobEvent(task["job_run_id"], task["job_label"], _RECOVERED.run, task["outputs"], message)
        for task in build["tasks"]
        if not JobStatus.parse(task["status"]).final
    ] + [
        PartitionEvent(p["partition_ref"], _RECOVERED.outputs, message)
        for p in build["partitions"]
        if not PartitionStatus.parse(p["status"]).final
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
