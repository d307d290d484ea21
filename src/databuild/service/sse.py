"""Server-Sent Events: the progress stream of a build (SPEC §5.6), with flow control.

Every stream is an :class:`EventStream`, registered as the push producer of its request: while
the reader's connection takes nothing more, frames wait in the stream's own queue, and the
connection is handed at most ``PIECE`` bytes past what it asked for. A reader that takes
nothing for ``stall_s`` while frames wait, or falls ``max_behind`` bytes behind, is dropped
(its connection aborted), so a reader that does not read costs bounded memory for a bounded
time; it can come back with ``Last-Event-ID``.

A progress stream reads the build's replay a page at a time, each once the reader took the
previous one, and its frames are the hub's shared copies (``ProgressHub.rendered``): what a
stalled reader holds is its connection's buffer and references to frames other readers share.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from databuild.bel.events import EventJSON
from databuild.orchestrator import Subscription
from databuild.service.responses import json_bytes
from databuild.service.trim import Trimmer

KEEPALIVE = b": keepalive\n\n"
FINISHED_EVENT = "build_finished"
STALL_S = 10.0
"""A reader that takes nothing for this long while frames wait for it is dropped."""
MAX_BEHIND_BYTES = 16 * 1024 * 1024
"""A reader with this much waiting for it is dropped at once."""
PIECE = 16 * 1024
"""Frames go to the connection in pieces of at most this much, so a big frame is not copied
whole into every stalled reader's connection buffer."""


def frame(event: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    """One SSE frame; the JSON of ``data`` is one line, so it needs one ``data:`` field."""
    return _frame(event, json_bytes(data), event_id)


def _frame(event: str, data: bytes, event_id: int | None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode("utf-8") + b"\ndata: " + data + b"\n\n"


@implementer(IPushProducer)
class EventStream:
    """One reader's ``text/event-stream`` answer: headers, keepalives, a bounded queue.

    ``gone`` fires (with None) when the reader left, was dropped, or the stream ended.
    """

    log = Logger()

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        keepalive_s: float,
        *,
        stall_s: float = STALL_S,
        max_behind: int = MAX_BEHIND_BYTES,
        trimmer: Trimmer | None = None,
    ) -> None:
        self._request = request
        self._clock = clock
        self._keepalive = LoopingCall(self.write, KEEPALIVE)
        self._keepalive.clock = clock
        self._keepalive_s = keepalive_s
        self._stall_s = stall_s
        self._max_behind = max_behind
        self._trimmer = trimmer
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._sent = 0
        """How much of the queue's first frame is already sent."""
        self._paused = False
        self._flush_call: IDelayedCall | None = None
        self._stall_call: IDelayedCall | None = None
        self._waiters: list[Deferred[None]] = []
        self._connection_buffer: int | None = None
        """The connection's own ``bufferSize``, given back when the stream ends (the
        connection may answer more requests)."""
        self.opened = False
        self._unregistered = False
        self.gone: Deferred[None] = Deferred()
        request.notifyFinish().addBoth(self._left)

    @property
    def closed(self) -> bool:
        """Whether nothing more can be written: the reader left, was dropped, or it ended."""
        return self.gone.called

    def open(self) -> None:
        """Send the headers and a first comment, and start the keepalives."""
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        if isinstance(request.transport, FileDescriptor):
            # Twisted pauses the stream once this much waits in the connection: a piece, not
            # its default 64 KiB. Frames waiting in the stream's queue are shared with other
            # readers; what the connection holds is this reader's own copy.
            self._connection_buffer = request.transport.bufferSize
            request.transport.bufferSize = PIECE
        self.opened = True
        self.write(b": stream open\n\n")
        self._keepalive.start(self._keepalive_s, now=False)

    def write(self, data: bytes) -> None:
        """Send ``data`` at the end of this reactor turn, or queue it while the reader's
        connection takes nothing.

        What is written in one turn (a batch of stored events, a page of the replay) goes
        out together, in pieces of up to ``PIECE`` bytes: a reader parses a few large
        chunks rather than one per frame.
        """
        if self.closed:
            return
        self._queue.append(data)
        self._queued += len(data)
        if self._paused:
            if self._queued > self._max_behind:
                self._drop(f"it fell over {self._max_behind} bytes behind")
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def writable(self) -> Deferred[None]:
        """Fires once the queue is empty and the connection takes more (or the stream is
        closed): a writer that awaits it before each batch keeps the queue short."""
        if self.closed or not (self._paused or self._queue):
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    async def end(self) -> None:
        """Hand what is queued to the connection, then stop; the request is not finished."""
        await self.writable()
        self._close()

    def pauseProducing(self) -> None:
        self._paused = True
        if self._stall_call is None and not self.closed:
            self._stall_call = self._clock.callLater(
                self._stall_s, self._drop, f"it took nothing for {self._stall_s:g} s"
            )

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_stall()
        self._flush()

    def _flush(self) -> None:
        """Write queued frames, a piece at a time, until the connection pauses us."""
        self._cancel_flush()
        queue = self._queue
        while queue and not self._paused and not self.closed:
            head = queue[0]
            if self._sent == 0 and len(head) <= PIECE:
                parts = [queue.popleft()]
                size = len(head)
                while queue and size + len(queue[0]) <= PIECE:
                    size += len(queue[0])
                    parts.append(queue.popleft())
                piece = b"".join(parts)
            else:
                piece = head[self._sent:self._sent + PIECE]
                self._sent += len(piece)
                if self._sent >= len(head):
                    queue.popleft()
                    self._sent = 0
            self._queued -= len(piece)
            self._request.write(piece)
        if not (self._paused or queue):
            self._wake()

    def stopProducing(self) -> None:
        self._close()

    def _drop(self, why: str) -> None:
        self._stall_call = None
        if self.closed:
            return
        self.log.info(
            "dropping a stream reader: {why}; it can resume with Last-Event-ID",
            why=why, peer=str(self._request.getClientAddress()),
        )
        transport = self._request.transport
        if self._trimmer is not None:
            self._trimmer.soon()  # its connection's buffer too
        self._close()
        if transport is not None:  # a TCP connection's (HTTP/1.1)
            cast(ITCPTransport, transport).abortConnection()
        self._let_go_of_connection()

    def _left(self, reason: object) -> None:
        if not self.closed:
            self.log.debug("stream reader disconnected")
        self._close()
        if isinstance(reason, Failure):  # the connection was lost, not the answer finished
            self._let_go_of_connection()

    def _let_go_of_connection(self) -> None:
        """The connection is gone, but its request lives on in a reference cycle (Klein's
        adapters of it) until a full collection, and through it the connection's transport
        with what it still buffered for the reader: about 64 KiB for one that stalled (54-86
        MiB for 500 dropped readers, docs/performance.md). Nothing writes to the request any
        more."""
        self._request.transport = None

    def _close(self) -> None:
        self._cancel_flush()
        self._cancel_stall()
        if self._keepalive.running:
            self._keepalive.stop()
        if self._trimmer is not None and self._queued >= PIECE:
            self._trimmer.soon()
        self._queue.clear()
        self._queued = self._sent = 0
        if self.opened and not self._unregistered:
            self._unregistered = True
            self._request.unregisterProducer()
            transport = self._request.transport
            if isinstance(transport, FileDescriptor) and self._connection_buffer is not None:
                transport.bufferSize = self._connection_buffer
        if not self.gone.called:
            self.gone.callback(None)
        self._wake()

    def _cancel_flush(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def _cancel_stall(self) -> None:
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


Subscribe = Callable[
    [Callable[[Mapping[str, Any]], None], Callable[[], Deferred[bool]]], Deferred[Subscription]
]
"""Starts watching one build: called with the per-event callback and the readiness the replay
waits for between pages (see ``ProgressHub.subscribe``)."""
Render = Callable[[Mapping[str, Any]], bytes]
"""Makes an event's frame (``event_frame``, or the hub's shared copy of it)."""


def event_frame(event: Mapping[str, Any]) -> bytes:
    """The frame of one BEL event: ``id`` its ``idx``, ``event`` its type; its data the text
    the log stored, where the event came with it (``EventJSON``)."""
    text = event.text if isinstance(event, EventJSON) else None
    data = json_bytes(event) if text is None else text.encode("utf-8")
    return _frame(event["event_type"], data, event["idx"])


class ProgressStream:
    """Streams one build's events to one reader until the build finishes or the reader leaves.

    The reader leaving only closes the subscription: nothing here can cancel the build, and
    the Deferred of :meth:`run` is independent of the hub's Deferreds.
    """

    log = Logger()

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        keepalive_s: float,
        render: Render = event_frame,
        trimmer: Trimmer | None = None,
    ) -> None:
        self._stream = EventStream(request, clock, keepalive_s, trimmer=trimmer)
        self._render = render
        self._subscription: Subscription | None = None
        self._done: Deferred[None] = Deferred()

    def run(self, subscribe: Subscribe) -> Deferred[None]:
        """Stream the build; fires when the stream is over.

        Errbacks only if subscribing fails before anything was sent (an unknown build), so
        the caller can still answer with an error status.
        """
        self._stream.gone.addCallback(lambda _: self._end())
        subscribe(self._on_event, self._ready).addCallbacks(self._subscribed, self._failed)
        return self._done

    def _ready(self) -> Deferred[bool]:
        stream = self._stream
        return stream.writable().addCallback(lambda _: not stream.closed)

    def _on_event(self, event: Mapping[str, Any]) -> None:
        self._write(self._render(event))

    def _subscribed(self, subscription: Subscription) -> None:
        if self._done.called:  # the reader left while we subscribed
            subscription.close()
            return
        self._subscription = subscription
        self._open()  # even if there was nothing to replay: the stream is open
        subscription.finished.addCallbacks(self._build_finished, self._failed)

    def _build_finished(self, finished: dict[str, Any]) -> None:
        self._write(frame(FINISHED_EVENT, finished))
        ensureDeferred(self._stream.end()).addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        if not self._stream.opened and not self._done.called:
            self._end(failure)
            return
        if not self._done.called:
            self.log.failure("progress stream failed", failure)
        self._end()

    def _end(self, failure: Failure | None = None) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            subscription.close()
        if not self._done.called:
            if failure is None:
                self._done.callback(None)
            else:
                self._done.errback(failure)

    def _open(self) -> None:
        if not (self._stream.opened or self._done.called):
            self._stream.open()

    def _write(self, data: bytes) -> None:
        self._open()
        if not self._done.called:
            self._stream.write(data)
