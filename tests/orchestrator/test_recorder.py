"""The recorder through an outage, on a controlled clock: order kept, retries paced, the limit
told, nothing dropped unless it gives up."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    DuplicateEvent,
    Event,
    IllegalTransition,
    StoreUnavailable,
)
from databuild.orchestrator.hub import ProgressHub
from databuild.orchestrator.recorder import (
    BATCH,
    GATHER_EVENTS,
    GATHER_S,
    PACE_HIGH,
    PACE_LOW,
    RETRY_FIRST_S,
    RETRY_MAX_S,
    NotYetStored,
    Recorder,
)


class Store:
    """An event sink that is up or down; it remembers what it stored, in order.

    ``lose_answers``: it stores while down but answers StoreUnavailable (the commit's answer
    was lost), and then refuses the same event again as a duplicate, like the real log.
    ``hold``: answers wait in ``held`` until the test fires them.
    """

    def __init__(self) -> None:
        self.up = True
        self.lose_answers = False
        self.hold = False
        self.held: list[Deferred[list[Any]]] = []
        self.stored: list[Event] = []
        self.tries = 0
        self.calls: list[int] = []
        """How many events each call brought."""

    def append_many(self, events: list[Event]) -> Deferred[list[Any]]:
        self.tries += 1
        self.calls.append(len(events))
        if not self.up:
            if self.lose_answers:
                for event in events:
                    self.stored.append(event.stored_at(len(self.stored) + 1))
            return fail(StoreUnavailable("the database is gone"))
        results = [self._one(event) for event in events]
        if self.hold:
            self.held.append(Deferred())
            self.held[-1].addCallback(lambda _: results)
            return self.held[-1]
        return succeed(results)

    def _one(self, event: Event) -> Any:
        if held := [e for e in self.stored if e.event_id == event.event_id]:
            return DuplicateEvent("already in the log", held[0].idx or 0)
        if event.payload.message == "refuse me":  # type: ignore[union-attr]
            return IllegalTransition("refused")
        stored = event.stored_at(len(self.stored) + 1)
        self.stored.append(stored)
        return stored

    def answer(self) -> None:
        """Answer the oldest held call."""
        self.held.pop(0).callback(None)


class Listener:
    def __init__(self) -> None:
        self.told: list[str] = []

    def outage_too_long(self, reason: str) -> None:
        self.told.append(reason)


def event(message: str = "") -> Event:
    return Event("b1", BuildRequestEvent(BuildStatus.BUILD_REQUEST_FAILED, ("a/1",), message))


def failure_of(d: Deferred[Any]) -> Failure:
    """The failure ``d`` fired with (consumed)."""
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "it did not fail"
    return failures[0]


def make(limit: float = 60.0) -> tuple[Recorder, Store, Clock, Listener]:
    clock, store, listener = Clock(), Store(), Listener()
    hub: Any = ProgressHub(None)  # type: ignore[arg-type]
    recorder = Recorder(clock, store, hub, outage_limit_s=limit)
    recorder.listener = listener
    return recorder, store, clock, listener


def test_events_that_waited_out_an_outage_are_stored_in_order() -> None:
    recorder, store, clock, _ = make()
    store.up = False
    sent = [event(str(i)) for i in range(5)]
    results = [recorder.append(e) for e in sent]
    assert not recorder.healthy and recorder.unstored == 5
    flushed = recorder.through(recorder.last)

    clock.advance(RETRY_FIRST_S)  # still down: tried once more, the oldest only
    assert store.tries == 2 and not flushed.called
    store.up = True
    clock.advance(2 * RETRY_FIRST_S)

    assert recorder.healthy and recorder.unstored == 0 and flushed.called
    assert [e.event_id for e in store.stored] == [e.event_id for e in sent]
    assert [r.result.idx for r in results] == [1, 2, 3, 4, 5]


def test_retries_back_off_to_a_ceiling() -> None:
    recorder, store, clock, _ = make(limit=10_000)
    store.up = False
    recorder.append(event())
    pauses = []
    for _ in range(12):
        retry = min(clock.getDelayedCalls(), key=lambda call: call.getTime())  # not the limit
        pauses.append(round(retry.getTime() - clock.seconds(), 3))
        clock.advance(pauses[-1])
    assert pauses[:3] == [RETRY_FIRST_S, 2 * RETRY_FIRST_S, 4 * RETRY_FIRST_S]
    assert max(pauses) == RETRY_MAX_S and pauses[-1] == RETRY_MAX_S


def test_the_listener_hears_once_the_outage_outlasts_its_limit() -> None:
    recorder, store, clock, listener = make(limit=3)
    store.up = False
    recorder.append(event())
    clock.advance(2.9)
    assert listener.told == []
    clock.advance(0.2)
    assert len(listener.told) == 1 and "3 s" in listener.told[0]
    assert "the database is gone" in listener.told[0]


def test_new_things_are_refused_at_once_during_an_outage() -> None:
    recorder, store, _, _ = make()
    store.up = False
    recorder.append(event())
    assert failure_of(recorder.admit(event())).check(StoreUnavailable)


def test_a_refused_event_errbacks_and_the_others_go_on() -> None:
    recorder, _, _, _ = make()
    refused = recorder.append(event("refuse me"))
    after = recorder.append(event("fine"))
    assert failure_of(refused).check(IllegalTransition)
    assert after.result.idx == 1 and recorder.healthy


def test_giving_up_fails_what_waits_and_everything_after() -> None:
    recorder, store, _, _ = make()
    store.up = False
    waiting = recorder.append(event())
    recorder.give_up("stopping")
    for d in (waiting, recorder.append(event())):
        failure = failure_of(d)
        assert failure.check(StoreUnavailable) and "stopping" in failure.getErrorMessage()
    assert store.stored == []


def test_an_event_stored_although_its_answer_was_lost_counts_as_stored() -> None:
    recorder, store, clock, _ = make()
    store.up, store.lose_answers = False, True
    first, second = recorder.append(event("1")), recorder.append(event("2"))
    store.up = True
    clock.advance(RETRY_FIRST_S)
    assert (first.result.idx, second.result.idx) == (1, 2)
    assert [e.payload.message for e in store.stored] == ["1", "2"]  # type: ignore[union-attr]
    assert recorder.healthy and recorder.unstored == 0


def test_an_admit_during_an_outage_tries_the_store_at_once() -> None:
    recorder, store, clock, _ = make()
    store.up = False
    recorder.append(event("waits"))
    assert not recorder.healthy
    clock.advance(RETRY_FIRST_S)  # the retries now come further apart
    refused = recorder.admit(event("still down"))
    assert "cannot store events" in str(failure_of(refused).value)

    store.up = True  # the disk was freed: the next admit need not wait for the next retry
    admitted = recorder.admit(event("new"))
    assert admitted.called and recorder.healthy
    assert [e.payload.message for e in store.stored] == ["waits", "new"]  # type: ignore[union-attr]


def test_an_admit_whose_own_try_fails_is_told_at_once_and_the_event_kept() -> None:
    recorder, store, clock, _ = make()
    store.up = False
    admitted = recorder.admit(event("received"))
    error = failure_of(admitted).value
    assert isinstance(error, NotYetStored)
    assert not error.stored.called

    store.up = True
    clock.advance(RETRY_FIRST_S)
    assert error.stored.called
    assert [e.payload.message for e in store.stored] == ["received"]  # type: ignore[union-attr]


def test_events_decided_while_the_log_stores_a_batch_go_together_as_the_next() -> None:
    recorder, store, _, _ = make()
    store.hold = True
    first = recorder.append(event("0"))
    rest = [recorder.append(event(str(i))) for i in range(1, BATCH + 6)]
    assert store.calls == [1]  # the rest wait for the log's answer
    store.answer()
    assert first.called and store.calls == [1, BATCH]
    store.answer()
    assert store.calls == [1, BATCH, 5]
    store.answer()
    assert [d.result.idx for d in rest] == list(range(2, BATCH + 7))
    assert recorder.unstored == 0


def test_the_next_batch_goes_to_the_log_before_the_answered_one_is_published() -> None:
    store = Store()
    store.hold = True
    published: list[int] = []
    hub: Any = ProgressHub(None)  # type: ignore[arg-type]
    hub.publish = lambda stored: published.append(len(store.calls))
    recorder = Recorder(Clock(), store, hub)
    for i in range(2 * GATHER_EVENTS):
        recorder.emit(event(str(i)), lambda f: None)
    store.answer()
    # The log holds the next batch while the first one's events are handed to the hub.
    assert store.calls == [GATHER_EVENTS, GATHER_EVENTS]
    assert published == [2] * GATHER_EVENTS
    store.answer()
    assert published == [2] * 2 * GATHER_EVENTS and recorder.unstored == 0


def test_an_emitted_event_that_is_refused_tells_its_callback() -> None:
    recorder, _, clock, _ = make()
    told: list[Failure] = []
    recorder.emit(event("refuse me"), told.append)
    recorder.emit(event("fine"), told.append)
    clock.advance(0)
    assert len(told) == 1 and told[0].check(IllegalTransition)
    assert recorder.unstored == 0


def test_pace_holds_bulk_work_back_until_the_log_catches_up() -> None:
    recorder, store, _, _ = make()
    store.hold = True
    for i in range(PACE_HIGH):
        recorder.emit(event(str(i)), lambda f: None)
    assert recorder.pace() is None  # at the mark, not past it
    recorder.emit(event("one more"), lambda f: None)
    paced = recorder.pace()
    assert paced is not None
    while recorder.unstored > PACE_LOW:
        assert not paced.called
        store.answer()
    assert paced.called


def test_pace_never_waits_through_an_outage() -> None:
    recorder, store, _, _ = make()
    store.hold = True
    for i in range(PACE_HIGH + 1):
        recorder.emit(event(str(i)), lambda f: None)
    paced = recorder.pace()
    assert paced is not None
    store.up = False
    held = store.held.pop(0)
    held.errback(StoreUnavailable("the disk is full"))
    assert paced.called and not recorder.healthy
    assert recorder.pace() is None


def test_through_fires_once_everything_up_to_its_position_is_stored() -> None:
    recorder, store, _, _ = make()
    store.hold = True
    recorder.append(event("0"))
    recorder.append(event("1"))
    flushed = recorder.through(recorder.last)
    recorder.append(event("2"))
    store.answer()
    assert not flushed.called
    store.answer()  # "1" and "2" went together
    assert flushed.called


def test_events_recorded_together_go_in_one_call_and_a_batch_never_cuts_them() -> None:
    recorder, store, clock, _ = make()
    store.hold = True
    with recorder.together():
        recorder.append(event("run"))
        assert store.calls == []  # nothing goes before the group is whole
        recorder.append(event("its output"))
    assert store.calls == [2]
    for i in range(BATCH - 1):
        recorder.emit(event(str(i)), lambda f: None)
    with recorder.together():
        for i in range(5):
            recorder.emit(event(f"group {i}"), lambda f: None)
    recorder.emit(event("after"), lambda f: None)
    store.answer()
    assert store.calls == [2, BATCH - 1 + 5]  # past BATCH rather than split the group
    store.answer()
    clock.advance(GATHER_S)  # nobody waits for the last one: it gathered first
    assert store.calls == [2, BATCH + 4, 1]


def test_a_few_events_nobody_waits_for_gather_before_they_go() -> None:
    recorder, store, clock, _ = make()
    store.hold = True
    recorder.emit(event("first"), lambda f: None)
    recorder.emit(event("second"), lambda f: None)
    assert store.calls == []  # the log is idle: what this turn decides goes at its end
    clock.advance(0)
    assert store.calls == [2]
    for i in range(3):
        recorder.emit(event(str(i)), lambda f: None)
    store.answer()
    assert store.calls == [2]  # few, and nobody waits: they linger
    recorder.emit(event("meanwhile"), lambda f: None)
    clock.advance(GATHER_S / 2)
    assert store.calls == [2]
    clock.advance(GATHER_S / 2)
    assert store.calls == [2, 4]
    assert recorder.unstored == 4  # the call is held: in flight


def test_enough_events_go_without_gathering() -> None:
    recorder, store, clock, _ = make()
    store.hold = True
    for i in range(GATHER_EVENTS):
        recorder.emit(event(str(i)), lambda f: None)
    assert store.calls == [GATHER_EVENTS]  # not waiting for the turn's end
    for i in range(GATHER_EVENTS - 1):
        recorder.emit(event(str(i)), lambda f: None)
    store.answer()
    assert store.calls == [GATHER_EVENTS]  # lingering
    recorder.emit(event("the last of a full batch"), lambda f: None)
    assert store.calls == [GATHER_EVENTS, GATHER_EVENTS]
    assert clock.getDelayedCalls() == []


def test_whoever_waits_for_a_gathering_event_sends_it_at_once() -> None:
    recorder, store, clock, _ = make()
    store.hold = True
    recorder.emit(event("first"), lambda f: None)
    clock.advance(0)
    recorder.emit(event("lingers"), lambda f: None)
    store.answer()
    assert store.calls == [1]
    flushed = recorder.through(recorder.last)  # a run waits for it to start
    assert store.calls == [1, 1]
    store.answer()
    assert flushed.called

    recorder.emit(event("lingers"), lambda f: None)
    clock.advance(0)
    recorder.emit(event("lingers too"), lambda f: None)
    store.answer()
    assert store.calls == [1, 1, 1]
    stored = recorder.append(event("awaited"))  # its caller awaits it
    assert store.calls == [1, 1, 1, 2]
    store.answer()
    assert stored.called and stored.result.payload.message == "awaited"

    # While the log is idle, an awaited event goes at once; a run about to start waits for
    # the end of the turn, with whatever else the turn decides.
    assert recorder.unstored == 0
    recorder.append(event("awaited, idle"))
    assert store.calls == [1, 1, 1, 2, 1]
    store.answer()
    recorder.emit(event("decided"), lambda f: None)
    flushed = recorder.through(recorder.last)
    recorder.emit(event("decided in the same turn"), lambda f: None)
    assert store.calls == [1, 1, 1, 2, 1]
    clock.advance(0)
    assert store.calls == [1, 1, 1, 2, 1, 2]
    store.answer()
    assert flushed.called


def test_a_batch_answered_while_someone_waits_is_followed_at_once() -> None:
    recorder, store, clock, _ = make()
    store.hold = True
    recorder.emit(event("first"), lambda f: None)
    clock.advance(0)
    recorder.emit(event("second"), lambda f: None)
    flushed = recorder.through(recorder.last)
    store.answer()
    assert store.calls == [1, 1]  # not gathered: a through waits for it
    store.answer()
    assert flushed.called


def test_giving_up_ends_the_gathering() -> None:
    recorder, store, clock, _ = make()
    store.hold = True
    recorder.emit(event("first"), lambda f: None)
    clock.advance(0)
    refused: list[Failure] = []
    recorder.emit(event("lingers"), refused.append)
    store.answer()
    recorder.give_up("stopping")
    assert clock.getDelayedCalls() == [] and len(refused) == 1
    assert store.calls == [1]

    recorder, store, clock, _ = make()
    recorder.emit(event("waits for the turn's end"), refused.append)
    recorder.give_up("stopping")
    assert clock.getDelayedCalls() == [] and len(refused) == 2
    assert store.calls == []


def test_append_all_stores_its_events_together_and_fires_with_them() -> None:
    recorder, store, _, _ = make()
    stored = recorder.append_all([event("a"), event("b"), event("c")])
    assert store.calls == [3]
    assert [e.idx for e in stored.result] == [1, 2, 3]


def test_after_an_outage_a_group_is_tried_again_whole() -> None:
    recorder, store, clock, _ = make()
    store.up = False
    recorder.append_all([event("run"), event("output 1"), event("output 2")])
    recorder.append(event("alone"))
    store.up = True
    clock.advance(RETRY_FIRST_S)
    assert store.calls == [3, 3, 1]  # failed whole, tried again whole, then the rest
    assert recorder.unstored == 0
