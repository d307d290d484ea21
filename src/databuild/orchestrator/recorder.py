"""The recorder: the one place that turns the orchestrator's decisions into stored events.

Events are appended in the order they are decided without waiting for one another (the log
keeps call order and commits them in groups); each stored event is handed to the progress hub,
so a reader sees an event, a build's end included, only once the log holds it.

No event is dropped. When the store cannot take events (``StoreUnavailable``: the database is
gone, the disk is full) the recorder keeps every event not yet stored, in order, and tries the
oldest again with a growing pause (``RETRY_FIRST_S`` doubling up to ``RETRY_MAX_S``), logging
each try; once it is stored, the rest follow in order. Builds start a run only once
``flushed`` says every event decided before is stored, so no run starts during an outage, nor
on an input the log does not yet hold as AVAILABLE. Its ``listener`` hears when an outage has
lasted ``outage_limit_s`` (the service then fails its builds). Only ``give_up`` — the service
stopping past its deadline — drops unstored events, loudly.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from attrs import define
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.backend import DuplicateEvent, StoreUnavailable
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

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
OUTAGE_LIMIT_S = 60.0


class EventSink(Protocol):
    """What the recorder uses of ``databuild.bel.EventLog``."""

    def append(self, event: Event) -> Deferred[Event]: ...


class OutageListener(Protocol):
    """Told about outages of the store."""

    def outage_too_long(self, reason: str) -> None: ...


class NotYetStored(StoreUnavailable):
    """An admitted event's first try failed: it is kept, and ``stored`` fires once the log
    holds it (or errbacks if the recorder gives up)."""

    def __init__(self, message: str, stored: Deferred[Event]) -> None:
        super().__init__(message)
        self.stored = stored


@define(eq=False)
class _Entry:
    event: Event
    stored: Deferred[Event]
    sent: bool = False
    uncertain: bool = False
    """A try failed with StoreUnavailable: the log may hold it all the same."""
    admitted: Deferred[Event] | None = None
    """For an ``admit``: told at the first try's answer, whatever it is."""


class Recorder:
    """Appends the events of live builds and of recovery, and publishes them once stored."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        sink: EventSink,
        hub: ProgressHub,
        outage_limit_s: float = OUTAGE_LIMIT_S,
    ) -> None:
        self._reactor = reactor
        self._sink = sink
        self._hub = hub
        self._outage_limit_s = outage_limit_s
        self._unstored: deque[_Entry] = deque()
        self._outage: str | None = None
        self._gave_up: str | None = None
        self._outage_began = 0.0
        self._attempts = 0
        self._retry: IDelayedCall | None = None
        self._limit: IDelayedCall | None = None
        self._probes: list[Deferred[None]] = []
        """Admits waiting for the answer of a try made for them during an outage."""
        self.listener: OutageListener | None = None

    @property
    def healthy(self) -> bool:
        """Whether the store takes events (no outage is going on)."""
        return self._outage is None

    @property
    def unstored(self) -> int:
        """How many events wait to be stored."""
        return len(self._unstored)

    def flushed(self) -> Deferred[None]:
        """Fires once every event appended so far is stored (or refused, or given up)."""
        if not self._unstored:
            return succeed(None)
        flushed: Deferred[None] = Deferred()

        def fire(result: object) -> object:
            flushed.callback(None)
            return result

        self._unstored[-1].stored.addBoth(fire)
        return flushed

    def append(self, event: Event) -> Deferred[Event]:
        """Store ``event`` after every event appended before it; fires with it once stored.

        Errbacks only if the log refused it (logged), or if the recorder gave up.
        """
        if self._gave_up is not None:
            return fail(StoreUnavailable(f"the event log takes no more events: {self._gave_up}"))
        return self._enqueue(event).stored

    def _enqueue(self, event: Event, admitted: Deferred[Event] | None = None) -> _Entry:
        entry = _Entry(event, Deferred(), admitted=admitted)
        self._unstored.append(entry)
        if self.healthy:
            self._send(entry)
        return entry

    def admit(self, event: Event) -> Deferred[Event]:
        """Like ``append``, but never waits through an outage; for events that begin
        something new (a build's RECEIVED): nothing is taken on while the store cannot record
        it, and whoever asked learns it at once.

        During an outage the store is tried again at once (the disk may have been freed):
        fails with StoreUnavailable if it is still down. If the event's own first try fails,
        fails with NotYetStored: the event is kept like any other.
        """
        if self._outage is None:
            return self._admit(event)
        probe: Deferred[None] = Deferred()
        self._probes.append(probe)
        if self._retry is not None and self._retry.active():  # else a try is under way
            self._retry.cancel()
            self._try_again()
        return probe.addCallback(lambda _: self._admit_after_probe(event))

    def _admit_after_probe(self, event: Event) -> Deferred[Event]:
        if self._outage is not None:
            return fail(StoreUnavailable(f"the event log cannot store events: {self._outage}"))
        return self._admit(event)

    def _admit(self, event: Event) -> Deferred[Event]:
        if self._gave_up is not None:
            return self.append(event)
        admitted: Deferred[Event] = Deferred()
        self._enqueue(event, admitted)
        return admitted

    def _send(self, entry: _Entry) -> None:
        entry.sent = True
        d = maybeDeferred(self._sink.append, entry.event)
        d.addCallbacks(self._stored, self._not_stored, callbackArgs=(entry,), errbackArgs=(entry,))
        d.addErrback(self._broke, "recording an event broke")

    def _broke(self, failure: Failure, what: str) -> None:
        # A bound method, not a closure per event: a large build has many events in flight.
        self.log.failure(what, failure)

    def _stored(self, event: Event, entry: _Entry) -> None:
        self._forget(entry)
        self._hub.publish(event)
        entry.stored.callback(event)
        if entry.admitted is not None and not entry.admitted.called:
            entry.admitted.callback(event)

    def _forget(self, entry: _Entry) -> None:
        # The log keeps call order: the entry is almost always the oldest.
        if self._unstored[0] is entry:
            self._unstored.popleft()
        else:
            self._unstored.remove(entry)

    def _not_stored(self, failure: Failure, entry: _Entry) -> None:
        entry.sent = False
        if failure.check(StoreUnavailable):
            entry.uncertain = True
            if self._outage is None:
                self._begin_outage(failure.getErrorMessage())
            if entry.admitted is not None and not entry.admitted.called:
                entry.admitted.errback(NotYetStored(
                    f"the event log cannot store events: {failure.getErrorMessage()}",
                    entry.stored,
                ))
            return
        if entry.uncertain and isinstance(failure.value, DuplicateEvent):
            # The failed try had committed after all: the event is stored, at this idx.
            self._stored(entry.event.stored_at(failure.value.idx), entry)
            return
        self._forget(entry)
        self.log.failure(
            "the event log refused the {event_type} event of build {build_request_id}",
            failure,
            event_type=entry.event.event_type,
            build_request_id=entry.event.build_request_id,
        )
        if entry.admitted is not None and not entry.admitted.called:
            entry.admitted.errback(failure)
            entry.stored.addErrback(lambda _: None)  # told through ``admitted``
        entry.stored.errback(failure)

    # -- outages ---------------------------------------------------------------------------

    def _begin_outage(self, reason: str) -> None:
        self._outage, self._outage_began, self._attempts = reason, self._reactor.seconds(), 0
        self.log.warn(
            "the event log cannot store events ({reason}); {count} events wait, new runs "
            "are held back, retrying",
            reason=reason,
            count=len(self._unstored),
        )
        self._limit = self._reactor.callLater(self._outage_limit_s, self._too_long)
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        delay = min(RETRY_FIRST_S * 2**self._attempts, RETRY_MAX_S)
        self._retry = self._reactor.callLater(delay, self._try_again)

    def _try_again(self) -> None:
        self._retry = None
        self._attempts += 1
        if not self._unstored:
            self._end_outage()
            self._tried()
            return
        oldest = self._unstored[0]
        self.log.info(
            "trying the event log again (attempt {attempt}, {count} events wait)",
            attempt=self._attempts,
            count=len(self._unstored),
        )
        d = maybeDeferred(self._sink.append, oldest.event)
        d.addCallbacks(
            self._answered, self._still_down, callbackArgs=(oldest,), errbackArgs=(oldest,)
        )
        d.addErrback(self._broke, "retrying the event log broke")

    def _answered(self, event: Event, entry: _Entry) -> None:
        self._stored(event, entry)
        self._end_outage()
        self._tried()

    def _still_down(self, failure: Failure, entry: _Entry) -> None:
        if not failure.check(StoreUnavailable):
            self._not_stored(failure, entry)
            self._end_outage()
            self._tried()
            return
        entry.uncertain = True
        self._outage = failure.getErrorMessage()
        self._schedule_retry()
        self._tried()

    def _tried(self) -> None:
        """A try of the store has been answered: the admits waiting for one go on."""
        probes, self._probes = self._probes, []
        for probe in probes:
            probe.callback(None)

    def _too_long(self) -> None:
        self._limit = None
        if self._outage is not None and self.listener is not None:
            self.listener.outage_too_long(
                f"the event log could not store events for {self._outage_limit_s:g} s: "
                f"{self._outage}"
            )

    def _end_outage(self) -> None:
        if self._outage is None:
            return
        self.log.info(
            "the event log stores events again after {seconds:.1f} s; {count} events that "
            "waited follow in order",
            seconds=self._reactor.seconds() - self._outage_began,
            count=len(self._unstored),
        )
        self._outage = None
        if self._limit is not None and self._limit.active():
            self._limit.cancel()
        self._limit = None
        for entry in list(self._unstored):
            if not entry.sent:
                self._send(entry)

    def give_up(self, reason: str) -> None:
        """Drop every unstored event (logged with their count) and take no more; their
        Deferreds errback with StoreUnavailable."""
        self._gave_up = reason
        for call in (self._retry, self._limit):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._limit = None
        self._tried()
        entries, self._unstored = list(self._unstored), deque()
        if entries:
            self.log.error(
                "{count} events were never stored ({reason}); the builds they belong to are "
                "recorded as failed at the next start",
                count=len(entries),
                reason=reason,
            )
        error = StoreUnavailable(f"the event log did not store this event: {reason}")
        for entry in entries:
            if entry.admitted is not None and not entry.admitted.called:
                entry.admitted.errback(Failure(error))
                entry.stored.addErrback(lambda _: None)  # told through ``admitted``
            if not entry.stored.called:
                entry.stored.errback(Failure(error))

    # -- what the course records -----------------------------------------------------------

    def record(self, build_request_id: str, payload: Payload) -> Deferred[Event]:
        """Append ``payload`` for a build."""
        return self.append(Event(build_request_id, payload))

    def build(
        self,
        build_request_id: str,
        requested: tuple[str, ...],
        status: BuildStatus,
        message: str = "",
    ) -> Deferred[Event]:
        return self.record(build_request_id, BuildRequestEvent(status, requested, message))

    def job(
        self,
        build_request_id: str,
        run: JobRun,
        status: JobStatus,
        message: str = "",
        exit_code: int | None = None,
    ) -> Deferred[Event]:
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
    ) -> Deferred[Event]:
        return self.record(build_request_id, PartitionEvent(ref, status, message, job_run_id))
