"""Putting the service together: event log, executor, orchestrator, API, dashboard, idle timer.

The tree starts in this order and stops in the reverse one: the event log is open before
anything records and closed after the last build was cancelled; the tether's watchdog runs
before the first job starts and after the last one ended; the service registers (and
takes over dead services) before it records anything and gives its lease up last; orphans
are reaped and unfinished builds recovered before the port opens; the idle timer runs only
while listening.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from twisted.application.service import IService
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from databuild.bel import open_event_log
from databuild.bel.services import Identity
from databuild.executor.launcher import Launcher
from databuild.executor.runner import Executor
from databuild.graph.source import GraphSource
from databuild.model import new_id
from databuild.orchestrator import Orchestrator
from databuild.proc.info import start_ticks
from databuild.proc.tether import Tether
from databuild.service.api import Api
from databuild.service.dashboard.access import DashboardAccess
from databuild.service.dashboard.pages import Dashboard
from databuild.service.edge import api_site
from databuild.service.idle import IdleTimer
from databuild.service.lease import LeaseKeeper, this_host
from databuild.service.metrics import ServiceMetrics
from databuild.service.settings import ServiceConfig
from databuild.service.startup import StartReport
from databuild.service.tree import ApiListener, EventLogService, InOrder

log = Logger()


class Stopper:
    """Stops the reactor once (twistd then stops the service tree), saying why in the log."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        log.info("shutting down: {shutdown_reason}", shutdown_reason=reason)
        # Let the current request's answer go out before the shutdown begins.
        self._reactor.callLater(0, self._stop)

    def _stop(self) -> None:
        with contextlib.suppress(ReactorNotRunning):
            self._reactor.stop()


def identity(config: ServiceConfig) -> Identity:
    """This process as a service of the log."""
    pid = os.getpid()
    return Identity(
        service_id=new_id(),
        host=this_host(),
        pid=pid,
        process_start=start_ticks(pid) or 0,
        version=config.version,
        workspace=str(config.root),
    )


def build_service(
    config: ServiceConfig, reactor: Any, report: StartReport | None = None
) -> IService:
    """The whole service for ``config``, as one service tree; ``report`` tells twistd how its
    start went."""
    stop = Stopper(reactor)
    me = identity(config)
    event_log = open_event_log(config.event_log, config.root, reactor)
    tether = Tether(reactor)
    executor = Executor(
        reactor, config.root, config.max_parallel_jobs, service_id=me.service_id, tether=tether
    )
    graph = GraphSource.load(config.root)
    resolve = Launcher(reactor, graph.workspace).resolve
    orchestrator = Orchestrator(reactor, graph.workspace, event_log, executor, resolve)
    metrics = ServiceMetrics(lambda: orchestrator.active_builds)
    orchestrator.hub.observers.append(metrics.observe)
    access = DashboardAccess(reactor)
    lease = LeaseKeeper(
        reactor,
        event_log,
        me,
        heartbeat_s=config.heartbeat_s,
        lease_timeout_s=config.lease_timeout_s,
        take_over=orchestrator.take_over,
        on_lost=stop,
        lease_state=metrics.set_lease_state,
    )
    idle = IdleTimer(
        reactor, config.idle_timeout_s, lambda: stop(f"idle for {config.idle_timeout_s:g} s")
    )
    api = Api(
        clock=reactor,
        config=config,
        event_log=event_log,
        orchestrator=orchestrator,
        graph=graph,
        idle=idle,
        shutdown=stop,
        metrics=metrics,
        access=access,
    )
    dashboard = Dashboard(
        clock=reactor,
        config=config,
        event_log=event_log,
        orchestrator=orchestrator,
        access=access,
        metrics=metrics,
        graph=graph,
    )
    top = InOrder(
        on_failure=lambda failure: stop(f"could not start: {failure.value}"), report=report
    )
    EventLogService(event_log).setServiceParent(top)
    tether.setServiceParent(top)
    lease.setServiceParent(top)
    orchestrator.setServiceParent(top)
    site = api_site(
        api.app.resource(), dashboard.app.resource(), config.token, idle, access,
        api.hot_routes(),
    )
    ApiListener(reactor, config, site, event_log.location.describe()).setServiceParent(top)
    idle.setServiceParent(top)
    return top
