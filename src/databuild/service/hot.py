"""Hot reads: the list clients poll most, answered without Klein's routing and, while the
event log has not changed, without asking it again.

An answer is kept, already encoded, for the request's whole URI and the log's ``version``
when the read was sent; any commit changes the version, so a kept answer is never older than
what a fresh read would return. A log other services write to too has no version: every
request then reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from databuild.bel import EventLog
from databuild.service.responses import json_bytes, json_headers

MAX_KEPT = 64
"""At most this many answers are kept (distinct query strings); then all are dropped."""

Read = Callable[[Request], Deferred[dict[str, Any]]]
ErrorBody = Callable[[Request, Failure], bytes]


class HotRead:
    """Answers ``GET`` requests with ``read(request)``, encoded, kept per URI and version."""

    log = Logger()

    def __init__(self, event_log: EventLog, read: Read, error_body: ErrorBody) -> None:
        self._event_log = event_log
        self._read = read
        self._error_body = error_body
        self._kept: dict[bytes, tuple[int, bytes]] = {}

    def __call__(self, request: Request) -> bytes | int:
        version = self._event_log.version
        kept = self._kept.get(request.uri)
        if kept is not None and kept[0] == version:
            json_headers(request, 200)
            return kept[1]
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        try:
            d = self._read(request)
        except Exception:
            return self._error_body(request, Failure())

        def deliver(document: dict[str, Any]) -> None:
            body = json_bytes(document)
            if version is not None:
                if len(self._kept) >= MAX_KEPT:
                    self._kept.clear()
                self._kept[request.uri] = (version, body)
            if not gone:
                json_headers(request, 200)
                request.write(body)
                request.finish()

        def fail(failure: Failure) -> None:
            if not gone:
                request.write(self._error_body(request, failure))
                request.finish()

        d.addCallbacks(deliver, fail).addErrback(
            lambda failure: self.log.failure(
                "could not answer {path}", failure, path=request.path.decode("ascii", "replace")
            )
        )
        return NOT_DONE_YET

