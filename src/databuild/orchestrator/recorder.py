"""The recorder: the one place that turns the orchestrator's decisions into stored events.

Events are appended in the order they are decided without waiting for one another: whatever
was decided while the log stored the previous batch goes to it as the next batch
(``append_many``; sent before the answered batch is published, so the log stores it
meanwhile), so a build with 100,000 events in flight keeps one Deferred per batch, not
several per event. Each stored event is handed to the progress hub, so a reader sees an event,
a build's end included, only once the log holds it.

A transaction costs the log far more than an event in it (docs/performance.md). While the
log is idle, what the reactor decides in one turn goes to it at the turn's end as one batch
(at once past ``GATHER_EVENTS``): a slice that decides hundreds of events sends them
together, not its first event alone. When a batch comes back and what gathered meanwhile is
small (under ``GATHER_EVENTS``) and nobody waits for it, the recorder gathers for
``GATHER_S`` more before sending it; whoever waits sends it at once: a ``through`` (a run
about to start), an ``append`` or ``admit`` (a caller awaiting its event). So a build of
5,000 no-op runs commits in about 200 transactions, not 800 (gathering 2 ms for 64), and a
chain of runs, each waiting for its input's event, loses no time.

Events that must be seen together — a run's status and its outputs' — are enqueued in one
``together()`` (or ``append_all``): a batch is never cut inside such a group, so the log
stores them in one transaction, and a reader (or a service that takes the run over after a
crash) never finds a run RUNNING whose outputs are not BUILDING, or COMPLETED whose outputs
are not AVAILABLE.

Work that decides events in bulk (a big build's requested refs, its schedule, a cancel) asks
``pace`` between slices: past ``PACE_HIGH`` unstored events it waits until the log is back
under ``PACE_LOW``, so a build never has all its events in memory at once (SPEC §7, §9).

No event is dropped. When the store cannot take events (``StoreUnavailable``: the database is
gone, the disk is full) the recorder keeps every event not yet stored, in order, and tries the
oldest again with a growing pause (``RETRY_FIRST_S`` doubling up to ``RETRY_MAX_S``), logging
each try; once it is stored, the rest follow in order. Builds start a run only once
``through`` says every event decided before it became ready is stored, so no run starts
during an outage, nor on an input the log does not yet hold as AVAILABLE. Its ``listener``
hears when an outage has lasted ``outage_limit_s`` (the service then fails its builds). Only
``give_up`` — the service stopping past its deadline — drops unstored events, loudly.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import count
from typing import Protocol

from attrs import define
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.backend import DuplicateEvent, StoreUnavailable
from databuild.bel.events import BuildRequestEvent, Event, JobGraphEvent
from databuild.bel.status import BuildStatus
from databuild.errors import DataBuildError
from databuild.orchestrator.hub import ProgressHub

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
OUTAGE_LIMIT_S = 60.0
BATCH = 500
"""At most this many events go to the log in one call (the log's transactions are as big)."""
GATHER_EVENTS = 500
GATHER_S = 0.02
"""Fewer unsent events than this, awaited by nobody, wait this long for more (see above)."""
PACE_HIGH, PACE_LOW = 2 * BATCH, BATCH
"""Unstored events past which ``pace`` holds bulk work back, and down to which it waits: a
batch with the log and the next one being decided meanwhile, while SQLite stores the first
without the GIL (an unstored event holds about 400 bytes; docs/performance.md)."""

Refused = Callable[[Failure], None]
"""Told why an emitted event was not stored (refused by the log, or never stored)."""


class EventSink(Protocol):
    """What the recorder uses of ``databuild.bel.EventLog``."""

    def append_many(self, events: Sequence[Event]) -> Deferred[list[Event | DataBuildError]]: ...


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
    seq: int
    stored: Deferred[Event] | None = None
    """For an ``append``: fires with the stored event."""
    refused: Refused | None = None
    """For an ``emit``: told if it is not stored."""
    uncertain: bool = False
    """A try failed with StoreUnavailable: the log may hold it all the same."""
    admitted: Deferred[Event] | None = None
    """For an ``admit``: told at the first try's answer, whatever it is."""
    group: int = 0
    """The ``together`` it was enqueued in (0: none): a batch holds all of a group or none."""


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
        self._seq = count(1)
        self._groups = count(1)
        self._group = 0
        """The ``together`` open now (0: none)."""
        self._asked = count()
        self._newest = 0
        """The position of the newest event appended."""
        self._in_flight = False
        """Whether a batch is with the log (one at a time: the rest gather for the next)."""
        self._unsent = 0
        """Entries of ``_unstored`` not with the log: always the newest ones."""
        self._hurry = False
        """Somebody waits for an unsent entry: it goes at once, without gathering."""
        self._gathering: IDelayedCall | None = None
        """Set while unsent entries wait for the end of this turn, or for more (``GATHER_S``,
        ``_lingering``)."""
        self._lingering = False
        self._throughs: list[tuple[int, int, Deferred[None]]] = []
        """Heap of ``through`` waiters: (position, order asked, Deferred)."""
        self._paces: list[Deferred[None]] = []
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

    @property
    def last(self) -> int:
        """The position of the newest event appended so far (0 before the first)."""
        return self._newest

    def holds(self, position: int) -> bool:
        """Whether every event up to ``position`` is stored (or refused, or given up), and
        the log takes events (no outage is going on)."""
        return self.healthy and (not self._unstored or self._unstored[0].seq > position)

    def through(self, position: int) -> Deferred[None]:
        """Fires once ``holds(position)``."""
        if self.holds(position) or self._gave_up is not None:
            return succeed(None)
        fired: Deferred[None] = Deferred()
        heapq.heappush(self._throughs, (position, next(self._asked), fired))
        self._offer()
        return fired

    def pace(self) -> Deferred[None] | None:
        """None, or, past ``PACE_HIGH`` unstored events while the log takes them, a Deferred
        firing once it is back under ``PACE_LOW``. During an outage nothing waits on it: a
        cancel must still stop processes, and events are kept whatever their number."""
        if len(self._unstored) <= PACE_HIGH or self._outage is not None or self._gave_up:
            return None
        paced: Deferred[None] = Deferred()
        self._paces.append(paced)
        return paced

    @contextmanager
    def together(self) -> Iterator[None]:
        """Events appended or emitted inside go to the log in one transaction."""
        if self._group:  # already inside one: it takes these too
            yield
            return
        self._group = next(self._groups)
        try:
            yield
        finally:
            self._group = 0
            if self._unsent:
                self._offer()

    def append_all(self, events: Sequence[Event]) -> Deferred[list[Event]]:
        """``append`` each of ``events``, ``together``; fires with them once stored."""
        with self.together():
            stored = [self.append(event) for event in events]
        return gatherResults(stored, consumeErrors=True)

    def append(self, event: Event) -> Deferred[Event]:
        """Store ``event`` after every event appended before it; fires with it once stored.

        Errbacks only if the log refused it (logged), or if the recorder gave up.
        """
        if self._gave_up is not None:
            return fail(StoreUnavailable(f"the event log takes no more events: {self._gave_up}"))
        stored: Deferred[Event] = Deferred()
        self._enqueue(event, stored=stored)
        return stored

    def emit(self, event: Event, refused: Refused) -> None:
        """``append`` without a Deferred: ``refused`` is told if the event is not stored."""
        if self._gave_up is not None:
            refused(Failure(StoreUnavailable(
                f"the event log takes no more events: {self._gave_up}"
            )))
            return
        self._enqueue(event, refused=refused)

    def _enqueue(
        self,
        event: Event,
        stored: Deferred[Event] | None = None,
        refused: Refused | None = None,
        admitted: Deferred[Event] | None = None,
    ) -> None:
        self._newest = seq = next(self._seq)
        self._unstored.append(
            _Entry(event, seq, stored, refused, admitted=admitted, group=self._group)
        )
        self._unsent += 1
        if stored is not None or admitted is not None:
            self._hurry = True
        self._offer()

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
        self._enqueue(event, stored=Deferred(), admitted=admitted)
        return admitted

    # -- batches ---------------------------------------------------------------------------

    def _offer(self) -> None:
        """Send the unsent entries once this turn of the reactor ends, unless a batch is with
        the log or a group is open: what the turn decides goes as one batch (a slice that
        decides hundreds of events sends them together, not its first event alone; a run
        about to start, ``through``, waits for the turn's end too). They go at once when a
        caller awaits one (``append``, ``admit``) or enough gathered (``GATHER_EVENTS``), and
        so do those lingering after a batch came back (``GATHER_S``) once anyone waits."""
        if not self.healthy or self._in_flight or self._group or not self._unsent:
            return
        if self._hurry or self._unsent >= GATHER_EVENTS or (self._lingering and self._throughs):
            self._stop_gathering()
            self._send()
        elif self._gathering is None:
            self._gathering = self._reactor.callLater(0, self._gathered)

    def _gathered(self) -> None:
        self._gathering, self._lingering = None, False
        if self.healthy and not self._in_flight and not self._group and self._unsent:
            self._send()

    def _stop_gathering(self) -> None:
        if self._gathering is not None and self._gathering.active():
            self._gathering.cancel()
        self._gathering, self._lingering = None, False

    def _send(self) -> None:
        """Hand the oldest unsent entries to the log as one call: ``BATCH`` events' worth (a
        piece of a job graph weighs a row per run), and the rest of a group it began."""
        batch: list[_Entry] = []
        weight = 0
        for i in range(len(self._unstored) - self._unsent, len(self._unstored)):
            entry = self._unstored[i]
            if weight >= BATCH and not (entry.group and entry.group == batch[-1].group):
                break
            batch.append(entry)
            weight += _weight(entry.event)
        self._unsent -= len(batch)
        self._hurry = self._hurry and self._unsent > 0
        self._in_flight = True
        d = maybeDeferred(self._sink.append_many, [entry.event for entry in batch])
        d.addCallbacks(
            self._answered, self._batch_failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )
        d.addErrback(self._broke, "recording events broke")

    def _broke(self, failure: Failure, what: str) -> None:
        self.log.failure(what, failure)

    def _answered(self, results: list[Event | DataBuildError], batch: list[_Entry]) -> None:
        self._in_flight = False
        # What is ready goes before the answered events are published: SQLite stores it,
        # without the GIL, while the reactor hands those to the progress hub.
        if self._unsent and self.healthy and self._urgent():
            self._send()
        self._settle(results, batch)
        self._caught_up()
        if self._in_flight or not (self._unsent and self.healthy):
            return
        if self._urgent():
            self._send()
        else:
            self._gathering = self._reactor.callLater(GATHER_S, self._gathered)
            self._lingering = True

    def _urgent(self) -> bool:
        """Whether the unsent entries go at once rather than gather: someone waits for them,
        or enough gathered."""
        return self._hurry or bool(self._throughs) or self._unsent >= GATHER_EVENTS

    def _batch_failed(self, failure: Failure, batch: list[_Entry]) -> None:
        self._in_flight = False
        if failure.check(StoreUnavailable):
            for entry in batch:
                entry.uncertain = True
            self._unsent += len(batch)
            if self._outage is None:
                self._begin_outage(failure.getErrorMessage())
            for entry in batch:
                if entry.admitted is not None and not entry.admitted.called:
                    assert entry.stored is not None
                    entry.admitted.errback(NotYetStored(
                        f"the event log cannot store events: {failure.getErrorMessage()}",
                        entry.stored,
                    ))
            return
        # Fenced, or not open: nothing of the batch will be stored. Said once, not per event.
        self.log.warn(
            "the event log refused {count} events: {error}",
            count=len(batch), error=failure.getErrorMessage(),
        )
        for entry in batch:
            self._forget(entry)
            self._tell(entry, failure)
        self._caught_up()
        if self._unsent and self.healthy:
            self._send()

    def _settle(self, results: list[Event | DataBuildError], entries: list[_Entry]) -> None:
        """The log's answer for each of ``entries``: stored, or refused."""
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, Event):
                self._stored(result, entry)
            else:
                self._not_stored(Failure(result), entry)

    def _stored(self, event: Event, entry: _Entry) -> None:
        self._forget(entry)
        self._hub.publish(event)
        if entry.stored is not None:
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
        """The log refused one event of a batch it stored."""
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
        self._tell(entry, failure)

    @staticmethod
    def _tell(entry: _Entry, failure: Failure) -> None:
        """Whoever waits for ``entry`` learns that it was not stored."""
        if entry.admitted is not None and not entry.admitted.called:
            entry.admitted.errback(failure)
            if entry.stored is not None:
                entry.stored.addErrback(lambda _: None)  # told through ``admitted``
        if entry.stored is not None and not entry.stored.called:
            entry.stored.errback(failure)
        if entry.refused is not None:
            entry.refused(failure)

    def _caught_up(self) -> None:
        """Fire the waiters the stored and refused entries let go on."""
        while self._throughs and (self.holds(self._throughs[0][0]) or self._gave_up):
            heapq.heappop(self._throughs)[2].callback(None)
        if self._paces and len(self._unstored) <= PACE_LOW:
            self._release_paces()

    def _release_paces(self) -> None:
        paces, self._paces = self._paces, []
        for paced in paces:
            paced.callback(None)

    # -- outages ---------------------------------------------------------------------------

    def _begin_outage(self, reason: str) -> None:
        self._outage, self._outage_began, self._attempts = reason, self._reactor.seconds(), 0
        self.log.warn(
            "the event log cannot store events ({reason}); {count} events wait, new runs "
            "are held back, retrying",
            reason=reason,
            count=len(self._unstored),
        )
        self._release_paces()
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
        oldest = [self._unstored[0]]  # and the rest of its group
        while (
            oldest[-1].group
            and len(oldest) < len(self._unstored)
            and self._unstored[len(oldest)].group == oldest[-1].group
        ):
            oldest.append(self._unstored[len(oldest)])
        self.log.info(
            "trying the event log again (attempt {attempt}, {count} events wait)",
            attempt=self._attempts,
            count=len(self._unstored),
        )
        self._unsent -= len(oldest)
        d = maybeDeferred(self._sink.append_many, [entry.event for entry in oldest])
        d.addCallbacks(
            self._retried, self._still_down, callbackArgs=(oldest,), errbackArgs=(oldest,)
        )
        d.addErrback(self._broke, "retrying the event log broke")

    def _retried(self, results: list[Event | DataBuildError], entries: list[_Entry]) -> None:
        self._settle(results, entries)
        self._end_outage()
        self._tried()
        self._caught_up()

    def _still_down(self, failure: Failure, entries: list[_Entry]) -> None:
        if not failure.check(StoreUnavailable):
            self.log.failure("the event log refused events it was asked again", failure)
            for entry in entries:
                self._forget(entry)
                self._tell(entry, failure)
            self._end_outage()
            self._tried()
            self._caught_up()
            return
        for entry in entries:
            entry.uncertain = True
        self._unsent += len(entries)
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
        if self._unsent and not self._in_flight:
            self._send()
        self._caught_up()

    def give_up(self, reason: str) -> None:
        """Drop every unstored event (logged with their count) and take no more; whoever
        waits for them is told StoreUnavailable."""
        self._gave_up = reason
        for call in (self._retry, self._limit):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._limit = None
        self._stop_gathering()
        self._tried()
        entries, self._unstored, self._unsent = list(self._unstored), deque(), 0
        if entries:
            self.log.error(
                "{count} events were never stored ({reason}); the builds they belong to are "
                "recorded as failed at the next start",
                count=len(entries),
                reason=reason,
            )
        error = StoreUnavailable(f"the event log did not store this event: {reason}")
        for entry in entries:
            self._tell(entry, Failure(error))
        self._caught_up()
        self._release_paces()

    def build(
        self,
        build_request_id: str,
        requested: tuple[str, ...],
        status: BuildStatus,
        message: str = "",
    ) -> Deferred[Event]:
        """Append a build's ``build_request`` event."""
        return self.append(Event(build_request_id, BuildRequestEvent(status, requested, message)))


def _weight(event: Event) -> int:
    """What storing ``event`` costs the log, in plain events."""
    payload = event.payload
    return len(payload.job_graph.job_runs) or 1 if isinstance(payload, JobGraphEvent) else 1
