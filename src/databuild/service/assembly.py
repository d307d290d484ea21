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

from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from databuild.bel import open_event_log
from databuild.bel.services import Identity
from databuild.executor.celery_launcher import CeleryLauncher
from databuild.executor.commands import JobCommands
from databuild.executor.launcher import Launcher
from databuild.executor.local import LocalLauncher
from databuild.executor.runner import Executor
from databuild.graph.source import GraphSource
from databuild.ids import new_id
from databuild.orchestrator import Orchestrator
from databuild.proc.info import start_ticks
from databuild.proc.process import reap_strays
from databuild.proc.tether import Tether
from databuild.service.actions import Actions
from databuild.service.api import Api
from databuild.service.dashboard.access import DashboardAccess
from databuild.service.dashboard.pages import Dashboard
from databuild.service.edge import api_site
from databuild.service.hosts import AllowedHosts, own_names
from databuild.service.idle import IdleTimer
from databuild.service.lease import LeaseKeeper, this_host
from databuild.service.metrics import ServiceMetrics
from databuild.service.settings import ServiceConfig
from databuild.service.startreport import StartReport
from databuild.service.tree import ApiListener, EventLogService, InOrder
from databuild.service.trim import Trimmer

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


def identity(config: ServiceConfig, service_id: str) -> Identity:
    """This process as a service of the log. Called when the service starts: twistd forks
    to daemonize after the service tree is made, and the pid is the daemon's only then."""
    pid = os.getpid()
    return Identity(
        service_id=service_id,
        host=this_host(),
        pid=pid,
        process_start=start_ticks(pid) or 0,
        version=config.version,
        workspace=str(config.root),
    )


WORKER_METRICS_S = 5.0


def worker_metrics(celery: CeleryLauncher, metrics: ServiceMetrics) -> TimerService:
    """Reads queue depth and runs per worker into ``metrics`` every WORKER_METRICS_S."""

    async def refresh() -> None:
        metrics.set_workers(await celery.queue_depth(), await celery.workers())

    def tick() -> None:
        ensureDeferred(refresh()).addErrback(
            lambda f: log.warn("cannot read the workers' metrics: {error}",
                               error=f.getErrorMessage())
        )

    return TimerService(WORKER_METRICS_S, tick)


def build_service(
    config: ServiceConfig, reactor: Any, report: StartReport | None = None
) -> IService:
    """The whole service for ``config``, as one service tree; ``report`` tells twistd how its
    start went."""
    stop = Stopper(reactor)
    reap_strays()  # no subprocess here: orphans reparented to the service are all its to reap
    service_id = new_id()
    event_log = open_event_log(config.event_log, config.root, reactor)
    tether = Tether(reactor)
    launcher: Launcher
    celery: CeleryLauncher | None = None
    if config.executor == "celery":
        launcher = celery = CeleryLauncher(
            reactor, config.root, config.event_log, config.broker, config.queue,
            service_id, config.lease_timeout_s,
        )
    else:
        launcher = LocalLauncher(reactor, Executor(
            reactor, config.root, config.max_parallel_jobs, service_id=service_id,
            tether=tether,
        ))
    graph = GraphSource.load(config.root)
    resolve = JobCommands(reactor, graph.workspace).resolve
    orchestrator = Orchestrator(reactor, graph.workspace, event_log, launcher, resolve)
    metrics = ServiceMetrics(
        lambda: orchestrator.active_builds, orchestrator.hub.subscribers
    )
    orchestrator.hub.observers.append(metrics.observe)
    access = DashboardAccess(reactor)
    trimmer = Trimmer(reactor)
    lease = LeaseKeeper(
        reactor,
        event_log,
        lambda: identity(config, service_id),
        heartbeat_s=config.heartbeat_s,
        lease_timeout_s=config.lease_timeout_s,
        take_over=orchestrator.take_over,
        on_lost=stop,
        lease_state=metrics.set_lease_state,
    )
    idle = IdleTimer(
        reactor, config.idle_timeout_s, lambda: stop(f"idle for {config.idle_timeout_s:g} s")
    )
    actions = Actions(orchestrator, graph, idle)
    api = Api(
        clock=reactor,
        config=config,
        event_log=event_log,
        orchestrator=orchestrator,
        actions=actions,
        shutdown=stop,
        metrics=metrics,
        access=access,
        trimmer=trimmer,
        workers=celery,
    )
    dashboard = Dashboard(
        clock=reactor,
        trimmer=trimmer,
        config=config,
        event_log=event_log,
        orchestrator=orchestrator,
        actions=actions,
        access=access,
        metrics=metrics,
    )
    top = InOrder(
        on_failure=lambda failure: stop(f"could not start: {failure.value}"), report=report
    )
    EventLogService(event_log).setServiceParent(top)
    if celery is not None:
        worker_metrics(celery, metrics).setServiceParent(top)
    tether.setServiceParent(top)
    lease.setServiceParent(top)
    orchestrator.setServiceParent(top)
    hosts = AllowedHosts.of(own_names(), config.allowed_hosts, [access.host])
    site = api_site(
        api.app.resource(), dashboard.app.resource(), config.token, idle, access, hosts,
        api.hot_routes(),
    )
    ApiListener(reactor, config, site, event_log.location.describe()).setServiceParent(top)
    idle.setServiceParent(top)
    return top
