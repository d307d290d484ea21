"""The pieces of the service tree: ordered start and stop, the event log, the HTTP listener."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from databuild.bel import EventLog
from databuild.errors import DataBuildError
from databuild.service.listening import listen_first_free, port_number
from databuild.service.serverinfo import (
    SERVER_FILE,
    ServerInfo,
    remove_server_info,
    server_url,
    write_server_info,
)
from databuild.service.settings import ServiceConfig
from databuild.service.startreport import StartReport


class InOrder(MultiService):
    """Starts its children one after another and stops them in reverse order.

    A child's ``startService``/``stopService`` may return a Deferred; the next child waits for
    it. If a child fails to start, the rest are not started and ``on_failure`` is called.
    ``report`` tells twistd how the start went once it is known.
    """

    log = Logger()

    def __init__(
        self, on_failure: Callable[[Failure], object], report: StartReport | None = None
    ) -> None:
        super().__init__()
        self._on_failure = on_failure
        self._report = report or StartReport(None)
        self.started: Deferred[None] = succeed(None)

    def startService(self) -> None:
        Service.startService(self)
        self._report.begin()
        self.started = ensureDeferred(self._start())
        self.started.addCallbacks(lambda _: self._report.succeeded(), self._failed)

    async def _start(self) -> None:
        for child in list(self):
            if not self.running:
                return
            await maybeDeferred(child.startService)

    def _failed(self, failure: Failure) -> None:
        if failure.check(DataBuildError, CannotListenError):  # said in a sentence; no bug
            self.log.error("the DataBuild service could not start: {reason}",
                           reason=failure.getErrorMessage())
        else:
            self.log.failure("the DataBuild service could not start", failure)
        self._report.failed(failure.getErrorMessage())
        self._on_failure(failure)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await self.started
        for child in reversed(list(self)):
            if child.running:
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    self.log.failure("stopping {service} failed", service=child)


class EventLogService(Service):
    """Opens the Build Event Log at start and closes it at stop."""

    log = Logger()

    def __init__(self, event_log: EventLog) -> None:
        self._event_log = event_log

    def startService(self) -> Deferred[None]:
        super().startService()
        return maybeDeferred(self._event_log.open)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return maybeDeferred(self._event_log.close)


class ApiListener(Service):
    """Listens for the API on the first free port, then writes ``server.json``; undoes both."""

    log = Logger()

    def __init__(self, reactor: Any, config: ServiceConfig, site: Site, event_log: str) -> None:
        self._reactor = reactor
        self._config = config
        self._site = site
        self._event_log = event_log
        self._port: IListeningPort | None = None
        self.info: ServerInfo | None = None

    @property
    def _server_file(self) -> Path:
        return self._config.workspace.state_dir / SERVER_FILE

    def startService(self) -> Deferred[None]:
        super().startService()
        return ensureDeferred(self._listen())

    async def _listen(self) -> None:
        config = self._config
        self._port = await listen_first_free(
            self._reactor, config.interface, config.port, config.port_range, self._site
        )
        port = port_number(self._port)
        self.info = ServerInfo(
            pid=os.getpid(),
            port=port,
            url=server_url(config.interface, port),
            token=config.token,
            started_at=time.time_ns(),
            version=config.version,
            workspace=str(config.root),
            event_log=self._event_log,
            event_log_setting=config.event_log,
        )
        write_server_info(self._server_file, self.info)
        self.log.info(
            "DataBuild {version} serving {workspace} at {url} (port {port}, preferred "
            "{preferred_port}); idle timeout {idle_timeout_s} s",
            version=config.version,
            workspace=str(config.root),
            url=self.info.url,
            port=port,
            preferred_port=config.port,
            idle_timeout_s=config.idle_timeout_s,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._close())

    async def _close(self) -> None:
        if self._port is not None:
            port = port_number(self._port)
            await maybeDeferred(self._port.stopListening)
            self.log.info("stopped listening on port {port}", port=port)
        if self.info is not None:
            remove_server_info(self._server_file, self.info)

