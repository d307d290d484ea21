"""Progress streams in-process: the real hub over a real SQLite log, a fake clock for keepalives."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.polling import poll_until_async
from twisted.internet import reactor, task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    EventLog,
    PartitionEvent,
    PartitionStatus,
    open_event_log,
)
from databuild.errors import NotFound
from databuild.ids import new_id
from databuild.jsontext import compact
from databuild.orchestrator import ProgressHub
from databuild.orchestrator import hub as hub_module
from databuild.service.sse import (
    KEEPALIVE,
    PIECE,
    STALL_S,
    EventStream,
    ProgressStream,
    event_frame,
    frame,
)

KEEPALIVE_S = 15.0


class Clock(task.Clock):
    """A fake clock for keepalives and stalls; a call for the end of this turn (a stream's
    flush) runs at the end of the real reactor's turn, as it would in the service."""

    def callLater(self, delay: float, what: Any, *args: Any, **kw: Any) -> IDelayedCall:
        if delay == 0:
            return reactor.callLater(0, what, *args, **kw)
        return super().callLater(delay, what, *args, **kw)


@pytest_twisted.async_yield_fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = open_event_log(str(tmp_path / "bel.sqlite"), tmp_path, reactor)
    await log.open()
    yield log
    await log.close()


class Build:
    """One build whose statuses are appended to the log and published to the hub."""

    def __init__(self, event_log: EventLog, hub: ProgressHub) -> None:
        self.id = new_id()
        self._log = event_log
        self._hub = hub

    async def record(self, status: BuildStatus) -> None:
        stored = await self._log.append(
            Event(self.id, BuildRequestEvent(status, ("out/1",), message=status.short))
        )
        self._hub.publish(stored)


class Transport:
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class StreamingRequest(DummyRequest):
    """A DummyRequest that keeps its push producer, for the test to pause and resume."""

    producer = None

    def __init__(self) -> None:
        super().__init__([b""])
        self.transport = Transport()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


def frames(request: DummyRequest) -> list[dict[str, str]]:
    """The SSE frames written to ``request`` (comments left out)."""
    parsed = []
    for block in b"".join(request.written).decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":")
        )
        if fields:
            parsed.append(fields)
    return parsed


def open_stream(hub: ProgressHub, build: Build, clock: Clock) -> tuple[DummyRequest, object]:
    request = StreamingRequest()
    done = ProgressStream(request, clock, KEEPALIVE_S).run(
        lambda on_event, ready: hub.subscribe(build.id, 0, on_event, ready)
    )
    return request, done


def test_an_event_stored_with_its_text_has_the_frame_of_its_fields() -> None:
    event = Event("b1", PartitionEvent("p/1", PartitionStatus.PARTITION_REQUESTED, "a\nb"))
    doc = event.stored_at(3, compact(event.body_json())).to_json()
    assert doc.text is not None
    assert event_frame(doc) == event_frame(dict(doc)) == frame("partition", dict(doc), 3)


def test_frame_is_id_event_and_one_line_of_json() -> None:
    data = {"idx": 7, "message": "two\nlines"}
    assert frame("job", data, 7) == (
        b'id: 7\nevent: job\ndata: {"idx":7,"message":"two\\nlines"}\n\n'
    )
    assert frame("build_finished", {"a": 1}) == b'event: build_finished\ndata: {"a":1}\n\n'


@pytest_twisted.ensureDeferred
async def test_replays_then_follows_live_events_and_ends_with_build_finished(
    event_log: EventLog,
) -> None:
    hub = ProgressHub(event_log)
    build = Build(event_log, hub)
    await build.record(BuildStatus.BUILD_REQUEST_RECEIVED)
    request, done = open_stream(hub, build, Clock())
    await build.record(BuildStatus.BUILD_REQUEST_PLANNING)
    await build.record(BuildStatus.BUILD_REQUEST_FAILED)
    await done
    sent = frames(request)
    assert [(f.get("id"), f["event"]) for f in sent] == [
        ("1", "build_request"), ("2", "build_request"), ("3", "build_request"),
        (None, "build_finished"),
    ]
    assert json.loads(sent[-1]["data"]) == {
        "build_request_id": build.id, "status": "BUILD_REQUEST_FAILED", "message": "failed"}
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/event-stream; charset=utf-8"]
    assert hub.subscribers(build.id) == 0


@pytest_twisted.ensureDeferred
async def test_quiet_stream_sends_a_keepalive_every_interval(event_log: EventLog) -> None:
    hub = ProgressHub(event_log)
    build = Build(event_log, hub)
    await build.record(BuildStatus.BUILD_REQUEST_RECEIVED)
    clock = Clock()
    request, _ = await _opened(hub, build, clock)
    clock.advance(KEEPALIVE_S - 0.1)
    await task.deferLater(reactor, 0, lambda: None)
    assert request.written.count(KEEPALIVE) == 0
    for count in (1, 2):
        clock.advance(0.1 if count == 1 else KEEPALIVE_S)
        await poll_until_async(
            lambda n=count: request.written.count(KEEPALIVE) == n, f"keepalive {count}"
        )


@pytest_twisted.ensureDeferred
async def test_reader_leaving_only_unsubscribes(event_log: EventLog) -> None:
    hub = ProgressHub(event_log)
    build = Build(event_log, hub)
    await build.record(BuildStatus.BUILD_REQUEST_RECEIVED)
    clock = Clock()
    request, done = await _opened(hub, build, clock)
    assert hub.subscribers(build.id) == 1
    request.processingFailed(Failure(ConnectionDone()))
    assert await done is None
    assert hub.subscribers(build.id) == 0
    written = len(request.written)
    clock.advance(10 * KEEPALIVE_S)
    await build.record(BuildStatus.BUILD_REQUEST_PLANNING)
    assert len(request.written) == written
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_unknown_build_fails_before_anything_is_sent(event_log: EventLog) -> None:
    hub = ProgressHub(event_log)
    request, done = open_stream(hub, Build(event_log, hub), Clock())
    with pytest.raises(NotFound):
        await done
    assert request.written == []


async def _opened(hub: ProgressHub, build: Build, clock: Clock) -> tuple[DummyRequest, object]:
    """A stream whose subscription is established (its ``stream open`` comment sent)."""
    request, done = open_stream(hub, build, clock)
    await poll_until_async(
        lambda: b": stream open\n\n" in b"".join(request.written), "the stream to open"
    )
    return request, done


async def _paused_after_one_event(
    event_log: EventLog,
) -> tuple[ProgressHub, Build, Clock, DummyRequest, object]:
    """An open stream of a RECEIVED build whose reader pauses; then PLANNING is recorded."""
    hub = ProgressHub(event_log)
    build = Build(event_log, hub)
    await build.record(BuildStatus.BUILD_REQUEST_RECEIVED)
    clock = Clock()
    request, done = await _opened(hub, build, clock)
    request.producer.pauseProducing()
    await build.record(BuildStatus.BUILD_REQUEST_PLANNING)
    return hub, build, clock, request, done


@pytest_twisted.ensureDeferred
async def test_frames_wait_while_the_connection_is_full_and_follow_in_order(
    event_log: EventLog,
) -> None:
    _hub, build, _clock, request, done = await _paused_after_one_event(event_log)
    await build.record(BuildStatus.BUILD_REQUEST_FAILED)
    assert [f["event"] for f in frames(request)] == ["build_request"]
    assert not done.called  # the end waits for the queue
    request.producer.resumeProducing()
    assert await done is None
    assert [f.get("id") for f in frames(request)] == ["1", "2", "3", None]
    assert request.producer is None
    assert not request.transport.aborted


@pytest_twisted.ensureDeferred
async def test_a_reader_that_takes_nothing_is_dropped_after_the_stall_time(
    event_log: EventLog,
) -> None:
    hub, build, clock, request, done = await _paused_after_one_event(event_log)
    connection = request.transport
    clock.advance(STALL_S - 0.1)
    assert not connection.aborted
    clock.advance(0.1)
    assert connection.aborted
    # The request may outlive the connection (in a reference cycle): it lets go of it.
    assert request.transport is None
    assert await done is None
    assert hub.subscribers(build.id) == 0
    assert request.producer is None
    assert clock.getDelayedCalls() == []


def test_a_stream_keeps_one_piece_in_its_connection_and_gives_the_connection_back() -> None:
    request = StreamingRequest()
    connection = FileDescriptor()  # what a TCP connection's transport is
    request.transport = connection  # type: ignore[assignment]
    stream = EventStream(request, Clock(), KEEPALIVE_S)
    stream.open()
    assert connection.bufferSize == PIECE  # Twisted pauses the stream past one piece
    stream.stopProducing()  # its end: the connection may answer more requests
    assert connection.bufferSize == FileDescriptor.bufferSize
    assert request.transport is connection


def test_a_reader_whose_connection_is_lost_lets_go_of_it() -> None:
    request = StreamingRequest()
    stream = EventStream(request, Clock(), KEEPALIVE_S)
    stream.open()
    request.processingFailed(Failure(ConnectionDone()))
    assert stream.closed and request.transport is None


def test_a_reader_too_far_behind_is_dropped_at_once() -> None:
    request = StreamingRequest()
    stream = EventStream(request, Clock(), KEEPALIVE_S, max_behind=100)
    stream.open()
    request.producer.pauseProducing()
    connection = request.transport
    stream.write(b"x" * 60)
    assert not connection.aborted
    stream.write(b"x" * 60)
    assert connection.aborted and request.transport is None
    assert stream.closed and stream.gone.called
    stream.write(b"more")  # after the drop: nothing, no error


class FullConnection(StreamingRequest):
    """A connection whose buffer takes ``room`` bytes, then pauses its producer (as a TCP
    transport does past its buffer size) and takes nothing more."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: bytes) -> None:
        assert len(data) <= max(PIECE, len(KEEPALIVE)), "a piece bigger than PIECE"
        super().write(data)
        self.room -= len(data)
        if self.room <= 0 and self.producer is not None:
            self.producer.pauseProducing()


class CountingLog:
    """The real log, counting the replay's page reads."""

    def __init__(self, event_log: EventLog) -> None:
        self._event_log = event_log
        self.pages = 0
        self.summaries = 0

    def events(self, **query: Any) -> Any:
        self.pages += 1
        return self._event_log.events(**query)

    def build_summary(self, build_request_id: str) -> Any:
        self.summaries += 1
        return self._event_log.build_summary(build_request_id)


async def partitions_requested(event_log: EventLog, build_id: str, count: int) -> None:
    await event_log.append(
        Event(build_id, BuildRequestEvent(BuildStatus.BUILD_REQUEST_RECEIVED, ("p/0",)))
    )
    for i in range(count):
        await event_log.append(Event(
            build_id, PartitionEvent(f"p/{i}", PartitionStatus.PARTITION_REQUESTED, "x" * 5000)
        ))


@pytest_twisted.ensureDeferred
async def test_a_stalled_reader_holds_one_page_and_lets_go_of_everything_when_dropped(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "REPLAY_PAGE", 5)
    counting = CountingLog(event_log)
    progress = ProgressHub(counting)  # type: ignore[arg-type]
    build_id = new_id()
    await partitions_requested(event_log, build_id, 30)
    rendered: list[int] = []

    def render(event: dict[str, Any]) -> bytes:
        rendered.append(event["idx"])
        return event_frame(event)

    clock = Clock()
    request = FullConnection(room=8000)
    stream = ProgressStream(request, clock, KEEPALIVE_S, lambda e: progress.rendered(e, render))
    done = stream.run(lambda on_event, ready: progress.subscribe(build_id, 0, on_event, ready))
    await poll_until_async(lambda: request.producer is not None and rendered, "the first page")
    # The connection is full: the replay waits, holding its first page and nothing more.
    assert counting.pages == 1 and rendered == [1, 2, 3, 4, 5]
    assert sum(map(len, request.written)) < 8000 + PIECE
    gone = weakref.ref(stream)
    del stream
    connection = request.transport
    clock.advance(STALL_S)
    assert connection.aborted and request.transport is None
    assert await done is None
    await poll_until_async(lambda: progress.subscribers() == 0, "the subscription to close")
    assert counting.pages == 1  # the replay stopped with the reader
    gc.collect()
    assert gone() is None
    assert clock.getDelayedCalls() == []
    # The build's frames were let go with its last reader: a new one renders afresh.
    progress.rendered({"build_request_id": build_id, "idx": 1, "event_type": "x"}, render)
    assert rendered[-1] == 1 and len(rendered) == 6


@pytest_twisted.ensureDeferred
async def test_readers_of_one_build_share_each_frame(event_log: EventLog) -> None:
    progress = ProgressHub(event_log)
    build_id = new_id()
    await partitions_requested(event_log, build_id, 10)
    rendered: list[int] = []

    def render(event: dict[str, Any]) -> bytes:
        rendered.append(event["idx"])
        return event_frame(event)

    requests = [StreamingRequest() for _ in range(3)]
    for request in requests:
        ProgressStream(request, Clock(), KEEPALIVE_S, lambda e: progress.rendered(e, render)).run(
            lambda on_event, ready: progress.subscribe(build_id, 0, on_event, ready)
        )
    await poll_until_async(
        lambda: all(len(frames(r)) == 11 for r in requests), "every reader to get 11 events"
    )
    assert sorted(rendered) == list(range(1, 12))  # once for all three readers


def test_a_big_frame_goes_to_the_connection_a_piece_at_a_time() -> None:
    request = FullConnection(room=3 * PIECE)
    stream = EventStream(request, Clock(), KEEPALIVE_S)
    stream.open()
    big = b"y" * (10 * PIECE + 7)
    stream.write(big)
    assert sum(map(len, request.written)) <= 4 * PIECE
    request.room = 100 * PIECE
    request.producer.resumeProducing()
    assert b"".join(request.written).endswith(big)


@pytest_twisted.ensureDeferred
async def test_frames_written_in_one_turn_go_out_together_in_pieces() -> None:
    request = StreamingRequest()
    stream = EventStream(request, Clock(), KEEPALIVE_S)
    stream.open()
    sent = [b"data: %d\n\n" % i for i in range(5000)]
    for each in sent:
        stream.write(each)
    assert request.written == []  # at the end of the turn
    expected = b": stream open\n\n" + b"".join(sent)
    await poll_until_async(lambda: b"".join(request.written) == expected, "every frame")
    assert all(len(piece) <= PIECE for piece in request.written)
    assert len(request.written) <= len(expected) // (PIECE - 16) + 1


@pytest_twisted.ensureDeferred
async def test_a_replay_reads_the_log_only_up_to_the_events_that_came_live(
    event_log: EventLog,
) -> None:
    counting = CountingLog(event_log)
    progress = ProgressHub(counting)  # type: ignore[arg-type]
    build_id = new_id()
    await partitions_requested(event_log, build_id, 499)  # idx 1..500, stored before
    more = [
        Event(build_id, PartitionEvent(f"q/{i}", PartitionStatus.PARTITION_REQUESTED, "x"))
        for i in range(2500)
    ]
    got: list[int] = []

    async def stored_and_published_meanwhile() -> bool:
        if not got and counting.pages == 0:  # before the first page: the build goes on
            for stored in await event_log.append_many(more):
                progress.publish(stored)  # type: ignore[arg-type]
        return True

    subscription = await progress.subscribe(
        build_id, 0, lambda e: got.append(e["idx"]),
        lambda: ensureDeferred(stored_and_published_meanwhile()),
    )
    assert got == list(range(1, 3001))  # each once, in order
    assert counting.pages == 1  # 1..1000 from the log; from 501 on they came live
    subscription.close()


@pytest_twisted.ensureDeferred
async def test_a_build_this_service_drives_is_not_looked_up_before_its_replay(
    event_log: EventLog,
) -> None:
    counting = CountingLog(event_log)
    build_id = new_id()
    await partitions_requested(event_log, build_id, 2)
    for is_local, summaries in ((lambda _: True, 0), (lambda _: False, 1)):
        progress = ProgressHub(counting, is_local=is_local)  # type: ignore[arg-type]
        counting.summaries = 0
        got: list[int] = []
        subscription = await progress.subscribe(
            build_id, 0, lambda e, got=got: got.append(e["idx"])
        )
        assert got == [1, 2, 3] and counting.summaries == summaries
        subscription.close()
