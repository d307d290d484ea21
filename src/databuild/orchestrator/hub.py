"""Progress fan-out: each build's events, replayed from the log and then live (SPEC §5.6).

The orchestrator publishes every event it has stored. A subscriber is registered before its
replay starts, so live events that arrive while the log is being read are held back and then
delivered after the replay, with anything the replay already delivered dropped by ``idx``:
every event reaches a subscriber exactly once, in ``idx`` order.

A build this service does not run (another service's, on a shared log) publishes nothing here:
its subscribers are fed by polling the log every ``POLL_S`` seconds until it finishes.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.events import Event
from databuild.bel.status import BuildStatus
from databuild.errors import NotFound

REPLAY_PAGE = 1000
POLL_S = 0.5
RENDERED_BYTES = 16 * 1024 * 1024
"""At most this much of what subscribers made of events is kept for the others to share."""

EventCallback = Callable[[dict[str, Any]], None]
"""Called with each event's JSON form (SPEC §4.1); it should return quickly."""
Ready = Callable[[], Deferred[bool]]
"""Fires True once a subscriber has taken in what it was given (the replay reads its next
page only then, so a reader that takes nothing holds at most one page), False if it is gone
(the replay stops and the subscription closes)."""


class EventSource(Protocol):
    """What the hub reads from the event log."""

    def events(
        self,
        since: int | None = None,
        limit: int = 100,
        build_request_id: str | None = None,
        partition_ref: str | None = None,
        job_label: str | None = None,
    ) -> Deferred[dict[str, Any]]: ...

    def build_summary(self, build_request_id: str) -> Deferred[dict[str, Any] | None]: ...


def finish_of(event: dict[str, Any]) -> dict[str, Any] | None:
    """The ``build_finished`` object if ``event`` ends its build, else None."""
    if event["event_type"] != "build_request" or not BuildStatus.parse(event["status"]).final:
        return None
    return {
        "build_request_id": event["build_request_id"],
        "status": event["status"],
        "message": event["message"],
    }


@define(eq=False)
class Subscription:
    """One watcher of one build. ``finished`` fires after the build's last event."""

    build_request_id: str
    _on_event: EventCallback
    _hub: ProgressHub
    finished: Deferred[dict[str, Any]] = field(factory=Deferred)
    _last_idx: int = 0
    _held: list[dict[str, Any]] | None = field(factory=list)
    """Live events that arrived during the replay; None once the replay is over."""
    closed: bool = False
    """Whether it stopped watching (closed, or the build finished)."""
    omit: frozenset[str] = frozenset()
    """Job and partition statuses whose events this subscriber is not given."""

    def takes(self, status: str | None) -> bool:
        """Whether this subscriber is given events of ``status`` (None: an event without one)."""
        return status not in self.omit

    def _offer(self, event: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        if self.closed or event["idx"] <= self._last_idx:
            return
        self._last_idx = event["idx"]
        if self.takes(event.get("status")):
            try:
                self._on_event(event)
            except Exception:
                self._hub.log.failure("progress subscriber of {build_request_id} failed",
                                      build_request_id=self.build_request_id)
        done = finish_of(event)
        if done is not None:
            self.close()
            self.finished.callback(done)

    def _replay_caught_up(self, after: int) -> bool:
        """Whether the replay, having read to ``after``, reached the live events held: the
        build's later events all came live (it is this service's), so the log need not be
        read for them."""
        held = self._held
        return held is not None and len(held) > 0 and held[0]["idx"] <= after + 1

    def _replayed(self) -> None:
        if self.closed:
            return
        held, self._held = self._held or [], None
        for event in sorted(held, key=lambda e: e["idx"]):
            self._deliver(event)

    def close(self) -> None:
        """Stop watching; the build goes on. Nothing of the subscriber is kept afterwards."""
        self.closed = True
        self._held = None
        self._hub._remove(self)


class Renders:
    """What subscribers make of events (an SSE frame), made once per event and shared.

    Kept per build, at most ``max_bytes`` in all (a build's oldest first out), and forgotten
    with the build's last subscriber.
    """

    def __init__(self, max_bytes: int = RENDERED_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._kept: dict[str, OrderedDict[int, bytes]] = {}

    def get(
        self, event: Mapping[str, Any], render: Callable[[Mapping[str, Any]], bytes]
    ) -> bytes:
        """``render(event)``, made once while the event's build has subscribers."""
        build = self._kept.setdefault(event["build_request_id"], OrderedDict())
        idx = event["idx"]
        made = build.get(idx)
        if made is None:
            made = build[idx] = render(event)
            self._bytes += len(made)
            self._shrink(build)
        return made

    def forget(self, build_request_id: str) -> None:
        for made in self._kept.pop(build_request_id, {}).values():
            self._bytes -= len(made)

    def _shrink(self, newest: OrderedDict[int, bytes]) -> None:
        while self._bytes > self._max_bytes:
            build = newest if len(newest) > 1 else next(
                (kept for kept in self._kept.values() if kept and kept is not newest), newest
            )
            if not build:
                return
            self._bytes -= len(build.popitem(last=False)[1])


class ProgressHub:
    """Fans each build's events out to its subscribers.

    ``is_local(build_request_id)`` says whether this service drives the build (its events are
    published here); other builds' subscribers are fed by polling the log, every ``POLL_S``
    with ``clock``, and only once the replay found them.
    """

    log = Logger()

    def __init__(
        self,
        event_log: EventSource,
        clock: IReactorTime | None = None,
        is_local: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self._event_log = event_log
        self._clock = clock
        self._is_local = is_local
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        self.observers: list[Callable[[Event], None]] = []
        """Called with every published event, whichever build it is of (e.g. metrics)."""
        self._polled: set[Subscription] = set()
        self._poll: LoopingCall | None = None
        self._renders = Renders()

    def rendered(
        self, event: Mapping[str, Any], render: Callable[[Mapping[str, Any]], bytes]
    ) -> bytes:
        """``render(event)`` for a subscriber, shared with the build's other subscribers:
        500 readers of one build hold one copy of each frame, not 500. Kept only while the
        build has subscribers."""
        if event["build_request_id"] not in self._subscribers:
            return render(event)
        return self._renders.get(event, render)

    def subscribers(self, build_request_id: str | None = None) -> int:
        """How many subscriptions are open (on one build, or on all)."""
        if build_request_id is not None:
            return len(self._subscribers.get(build_request_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    def publish(self, event: Event) -> None:
        """Hand a stored event (``idx`` set) to the observers and its build's subscribers."""
        for observe in self.observers:
            try:
                observe(event)
            except Exception:
                self.log.failure("event observer {observer!r} failed", observer=observe)
        subscriptions = self._subscribers.get(event.build_request_id)
        if subscriptions:
            status = getattr(event.payload, "status", None)
            value = None if status is None else status.value
            takers = [s for s in subscriptions if s.takes(value)]
            if takers:
                data = event.to_json()
                for subscription in takers:
                    subscription._offer(data)

    def abandon(self, build_request_id: str, reason: Failure) -> None:
        """End a build's subscriptions with ``reason`` (they errback) when its last event
        will never be stored, so that no reader waits for it; no ``build_finished`` is sent."""
        for subscription in list(self._subscribers.get(build_request_id, ())):
            subscription.close()
            if not subscription.finished.called:
                subscription.finished.errback(reason)

    def subscribe(
        self,
        build_request_id: str,
        since: int | None,
        on_event: EventCallback,
        ready: Ready | None = None,
        omit: frozenset[str] = frozenset(),
    ) -> Deferred[Subscription]:
        """Watch a build: its events after ``since`` from the log, then live ones, but those
        of a job or partition status in ``omit``. With ``ready``, each page of the replay
        waits for it.

        Errbacks with NotFound for an unknown build.
        """
        return ensureDeferred(
            self._subscribe(build_request_id, since or 0, on_event, ready, omit)
        )

    async def _subscribe(
        self,
        build_request_id: str,
        since: int,
        on_event: EventCallback,
        ready: Ready | None,
        omit: frozenset[str],
    ) -> Subscription:
        subscription = Subscription(build_request_id, on_event, self, last_idx=since, omit=omit)
        self._subscribers[build_request_id].add(subscription)
        try:
            # A build this service drives exists: the log is not asked (it is busy storing
            # that build's events, and every read waits for the batch being stored).
            if (
                not self._is_local(build_request_id)
                and await self._event_log.build_summary(build_request_id) is None
            ):
                raise NotFound(f"no build request {build_request_id!r}")
            after: int | None = since
            while after is not None and not subscription.closed:
                if subscription._replay_caught_up(after):
                    break
                if ready is not None and not await ready():
                    subscription.close()
                if not subscription.closed:
                    after = self._replay_page(
                        subscription,
                        await self._event_log.events(
                            since=after, limit=REPLAY_PAGE, build_request_id=build_request_id
                        ),
                    )
        except BaseException:
            subscription.close()
            raise
        subscription._replayed()
        if not subscription.closed and not self._is_local(build_request_id):
            self._follow(subscription)
        return subscription

    @staticmethod
    def _replay_page(subscription: Subscription, page: dict[str, Any]) -> int | None:
        """Deliver one page of the replay; where the next starts, None after the last.
        (A function of its own, so no page stays referenced while the replay waits.)"""
        events = sorted(page["events"], key=lambda e: e["idx"])
        for event in events:
            subscription._deliver(event)
        return events[-1]["idx"] if len(events) == REPLAY_PAGE else None

    def _follow(self, subscription: Subscription) -> None:
        """Feed a subscription of a build another service runs from the log, by polling."""
        if self._clock is None:
            return
        self._polled.add(subscription)
        if self._poll is None:
            self._poll = LoopingCall(lambda: ensureDeferred(self._read_followed()))
            self._poll.clock = self._clock
            self._poll.start(POLL_S, now=False).addErrback(
                lambda f: self.log.failure("following other services' builds broke", f)
            )

    async def _read_followed(self) -> None:
        for subscription in list(self._polled):
            try:
                page = await self._event_log.events(
                    since=subscription._last_idx,
                    limit=REPLAY_PAGE,
                    build_request_id=subscription.build_request_id,
                )
            except Exception as e:
                self.log.warn("could not follow build {build_request_id}: {error}",
                              build_request_id=subscription.build_request_id, error=str(e))
                continue
            for event in sorted(page["events"], key=lambda e: e["idx"]):
                subscription._deliver(event)

    def _remove(self, subscription: Subscription) -> None:
        self._polled.discard(subscription)
        if not self._polled and self._poll is not None:
            self._poll.stop()
            self._poll = None
        subs = self._subscribers.get(subscription.build_request_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscribers[subscription.build_request_id]
                self._renders.forget(subscription.build_request_id)
