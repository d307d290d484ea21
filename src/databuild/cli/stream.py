"""Following a build's progress stream (SPEC §5.6), or a job run's log, to its end,
reconnecting if it drops.

The body is read incrementally: each chunk goes through the SSE parser as it arrives. A stream
that drops before its end frame (``build_finished``, ``log_end``) is resumed with
``Last-Event-ID`` from whichever service of the workspace answers then; if none does, the CLI
gives up with exit 3.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from databuild.cli.client import ApiClient, segment
from databuild.cli.exits import UNAVAILABLE, CliError
from databuild.cli.progress import parse_event
from databuild.cli.sse import Frame, SSEParser

SILENCE_S = 45.0
"""No byte (not even the 15 s keepalive) for this long means the stream is dead."""
RECONNECT_DEADLINE_S = 10.0
RECONNECT_POLL_S = 0.5

OnFrame = Callable[[Frame], None]
Reconnect = Callable[[], Awaitable[ApiClient | None]]


class _StreamReader(Protocol):
    """Feeds a response body to an SSE parser as it comes; aborts on long silence."""

    def __init__(self, reactor: Any, on_frame: OnFrame) -> None:
        self.reactor = reactor
        self.on_frame = on_frame
        self.parser = SSEParser()
        self.done: Deferred[None] = Deferred()
        """Fires (never fails) when the body ends, cleanly or not."""
        self._watchdog: Any = None

    def connectionMade(self) -> None:
        self._watchdog = self.reactor.callLater(SILENCE_S, self.abort)

    def dataReceived(self, data: bytes) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(SILENCE_S)
        for frame in self.parser.feed(data):
            self.on_frame(frame)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self.done.callback(None)

    def abort(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()


class Follower:
    """Reads one build's events to the end; ``detach()`` stops reading at once.

    ``wants(event_type, data)`` says which frames ``on_event`` gets: the others are not
    parsed (a no-op of 5,000 refs streams 15,050 events, 10,000 of which no display shows;
    ``omit`` asks the service to leave such events out, ``wants`` drops what it sends anyway).
    """

    end_event = "build_finished"

    def __init__(
        self,
        reactor: Any,
        client: ApiClient,
        build_request_id: str,
        on_event: Callable[[str, dict[str, Any]], None],
        reconnect: Reconnect,
        wants: Callable[[str, str], bool] = lambda event_type, data: True,
        omit: Sequence[str] = (),
    ) -> None:
        self.reactor = reactor
        self.client = client
        self.build_request_id = build_request_id
        self.on_event = on_event
        self.wants = wants
        self.omit = omit
        self.reconnect = reconnect
        self.last_event_id: str | None = None
        self.finished: tuple[str, dict[str, Any]] | None = None
        self.detached = False
        self.failed: Failure | None = None
        """What ``on_event`` raised; ``follow`` raises it again."""
        self._reader: _StreamReader | None = None

    @property
    def path(self) -> str:
        """The API path of the build's progress stream, without the events of ``omit``."""
        path = f"/api/v1/cli/builds/{segment(self.build_request_id)}/progress"
        return f"{path}?omit={','.join(self.omit)}" if self.omit else path

    def _frame(self, frame: Frame) -> None:
        if self.finished is not None or self.detached:
            return
        if frame.event == self.end_event:
            self.finished = (frame.data, parse_event(frame.data))
            if self._reader is not None:  # the service closes the stream next; no need to wait
                self._reader.abort()
            return
        self.last_event_id = frame.id
        if not self.wants(frame.event, frame.data):
            return
        try:
            self.on_event(frame.data, parse_event(frame.data))
        except Exception:  # printing failed (``| head`` closed stdout): no reconnecting
            self.failed = Failure()
            self.detach()

    async def follow(self) -> tuple[str, dict[str, Any]] | None:
        """The raw and parsed end object (``build_finished``), or None once detached; what
        ``on_event`` raised (BrokenPipeError when stdout closed), if it raised."""
        while True:
            response = await self.client.open_stream(self.path, self.last_event_id)
            self._reader = _StreamReader(self.reactor, self._frame)
            response.deliverBody(self._reader)
            if self.detached:
                self._reader.abort()
            await self._reader.done
            self._reader = None
            if self.failed is not None:
                self.failed.raiseException()
            if self.detached or self.finished is not None:
                return self.finished
            client = await self._find_service()
            if self.detached:
                return None
            if client is None:
                raise self.lost()
            self.client = client

    def lost(self) -> CliError:
        """The error when no service answers after the stream dropped."""
        return CliError(
            f"lost the DataBuild service while following build {self.build_request_id}; "
            f"`databuild builds show {self.build_request_id}` tells how it ends",
            UNAVAILABLE,
        )

    async def _find_service(self) -> ApiClient | None:
        deadline = self.reactor.seconds() + RECONNECT_DEADLINE_S
        while not self.detached:
            client = await self.reconnect()
            if client is not None or self.reactor.seconds() > deadline:
                return client
            await deferLater(self.reactor, RECONNECT_POLL_S)
        return None

    def detach(self) -> None:
        """Stop reading at once; the build goes on."""
        self.detached = True
        if self._reader is not None:
            self._reader.abort()


class LogFollower(Follower):
    """Reads a job run's log lines (``log_line`` frames) until ``log_end``; ``tail`` lines
    before the end first, or the whole log."""

    end_event = "log_end"

    def __init__(
        self,
        reactor: Any,
        client: ApiClient,
        job_run_id: str,
        on_line: Callable[[str, dict[str, Any]], None],
        reconnect: Reconnect,
        tail: int | None,
    ) -> None:
        super().__init__(reactor, client, job_run_id, on_line, reconnect)
        self.tail = tail

    @property
    def path(self) -> str:
        """The API path of the log stream (the tail counts only at the first connection)."""
        path = f"/api/v1/tasks/{segment(self.build_request_id)}/logs?follow=true"
        if self.tail is not None and self.last_event_id is None:
            path += f"&tail={self.tail}"
        return path

    def lost(self) -> CliError:
        return CliError(
            f"lost the DataBuild service while following the log of {self.build_request_id}",
            UNAVAILABLE,
        )
