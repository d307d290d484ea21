"""The recorder: the one place that turns the orchestrator's decisions into stored events.

Events are appended in the order they are decided without waiting for one another (the log
keeps call order and commits them in groups); each stored event is handed to the progress hub.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.events import (
    BuildRequestEvent,
    Event,
    JobEvent,
    PartitionEvent,
    Payload,
)
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.model import JobRun
from databuild.orchestrator.hub import ProgressHub


class EventSink(Protocol):
    """What the recorder uses of ``databuild.bel.EventLog``."""

    def append(self, event: Event) -> Deferred[Event]: ...


class Recorder:
    """Appends the events of live builds and of recovery, and publishes them once stored."""

    log = Logger()

    def __init__(self, sink: EventSink, hub: ProgressHub) -> None:
        self._sink = sink
        self._hub = hub

    def append(self, event: Event) -> Deferred[Event]:
        """Store ``event``; fires with it once stored, errbacks (logged) if it was not."""
        d = self._sink.append(event)
        d.addCallback(self._stored)
        d.addErrback(self._not_stored, event)
        return d

    def _stored(self, event: Event) -> Event:
        self._hub.publish(event)
        return event

    def _not_stored(self, failure: Failure, event: Event) -> Failure:
        self.log.failure(
            "could not record {event_type} event of build {build_request_id}",
            failure,
            event_type=event.event_type,
            build_request_id=event.build_request_id,
        )
        return failure

    def record(self, build_request_id: str, payload: Payload) -> Deferred[Event | None]:
        """Append ``payload`` for a build; fires with None if the log refused it (logged)."""
        d: Deferred[Event | None] = self.append(Event(build_request_id, payload))
        d.addErrback(lambda _: None)
        return d

    def build(
        self,
        build_request_id: str,
        requested: tuple[str, ...],
        status: BuildStatus,
        message: str = "",
    ) -> Deferred[Event | None]:
        return self.record(build_request_id, BuildRequestEvent(status, requested, message))

    def job(
        self,
        build_request_id: str,
        run: JobRun,
        status: JobStatus,
        message: str = "",
        exit_code: int | None = None,
    ) -> Deferred[Event | None]:
        return self.record(
            build_request_id,
            JobEvent(run.job_run_id, run.job_label, status, run.outputs, message, exit_code),
        )

    def partition(
        self,
        build_request_id: str,
        ref: str,
        status: PartitionStatus,
        message: str,
        job_run_id: str | None = None,
    ) -> Deferred[Event | None]:
        return self.record(build_request_id, PartitionEvent(ref, status, message, job_run_id))
