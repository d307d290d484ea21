"""The progress stream of a build as Server-Sent Events (SPEC §5.6)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from databuild.service.responses import json_bytes

KEEPALIVE = b": keepalive\n\n"
FINISHED_EVENT = "build_finished"


def frame(event: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    """One SSE frame; the JSON of ``data`` is one line, so it needs one ``data:`` field."""
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode("utf-8") + b"\ndata: " + json_bytes(data) + b"\n\n"


class Subscription(Protocol):
    """One reader's watch on a build: ``finished`` fires with its ``build_finished`` object."""

    finished: Deferred[dict[str, Any]]

    def close(self) -> None: ...


Subscribe = Callable[[Callable[[Mapping[str, Any]], None]], Deferred[Subscription]]
"""Starts watching one build: called with the per-event callback (see ``ProgressHub``)."""


class ProgressStream:
    """Streams one build's events to one reader until the build finishes or the reader leaves.

    The reader leaving only closes the subscription: nothing here can cancel the build, and
    the Deferred of :meth:`run` is independent of the hub's Deferreds.
    """

    log = Logger()

    def __init__(self, request: IRequest, clock: IReactorTime, keepalive_s: float) -> None:
        self._request = request
        self._keepalive = LoopingCall(self._write, KEEPALIVE)
        self._keepalive.clock = clock
        self._keepalive_s = keepalive_s
        self._subscription: Subscription | None = None
        self._done: Deferred[None] = Deferred()
        self._opened = False

    def run(self, subscribe: Subscribe) -> Deferred[None]:
        """Stream the build; fires when the stream is over.

        Errbacks only if subscribing fails before anything was sent (an unknown build), so
        the caller can still answer with an error status.
        """
        self._request.notifyFinish().addBoth(self._reader_left)
        subscribe(self._on_event).addCallbacks(self._subscribed, self._failed)
        return self._done

    def _open(self) -> None:
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        self._opened = True

    def _on_event(self, event: Mapping[str, Any]) -> None:
        self._write(frame(event["event_type"], event, event["idx"]))

    def _subscribed(self, subscription: Subscription) -> None:
        if self._done.called:  # the reader left while we subscribed
            subscription.close()
            return
        self._subscription = subscription
        # Send the headers now even if there was nothing to replay: the stream is open.
        self._write(b": stream open\n\n")
        self._keepalive.start(self._keepalive_s, now=False)
        subscription.finished.addCallbacks(self._build_finished, self._failed)

    def _build_finished(self, finished: dict[str, Any]) -> None:
        self._write(frame(FINISHED_EVENT, finished))
        self._end()

    def _failed(self, failure: Failure) -> None:
        if not self._opened and not self._done.called:
            self._end(failure)
            return
        if not self._done.called:
            self.log.failure("progress stream failed", failure)
        self._end()

    def _reader_left(self, _: object) -> None:
        if not self._done.called:
            self.log.debug("progress reader disconnected")
        self._end()

    def _end(self, failure: Failure | None = None) -> None:
        if self._keepalive.running:
            self._keepalive.stop()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            subscription.close()
        if not self._done.called:
            if failure is None:
                self._done.callback(None)
            else:
                self._done.errback(failure)

    def _write(self, data: bytes) -> None:
        if not self._done.called:
            if not self._opened:
                self._open()
            self._request.write(data)
