"""Job processes that dead services of this host may have left running (SPEC §5.3, §5.8).

A service frozen past its lease (SIGSTOP, a stalled machine) is dead to the log at once: its
claims count for nothing and its builds are taken over. Its jobs run on all the same, and its
tether's watchdog does not kill them, as the service's process has not ended. So before a run
whose claim was granted on this host starts, the jobs of every dead service of this host are
terminated and waited for, from that service's journal of running groups (in its own
workspace, which may not be this one); the same happens at each take-over of a service of
this host. Each dead service is cleared once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from databuild.bel.claims import ClaimResult, DeadService, RunState
from databuild.executor.running import RUNNING_DIR, RunningRecord, reap_orphans
from databuild.graph.workspace import STATE_DIR
from databuild.orchestrator.remote import RunClaims

log = Logger()


def dead_here(services: Iterable[dict[str, object]]) -> list[DeadService]:
    """Those of ``services`` (rows of the log's ``services``) that ran on this host."""
    host = socket.gethostname()
    return [
        DeadService(str(s["service_id"]), str(s["workspace"]))
        for s in services
        if s["host"] == host and s["workspace"]
    ]


@define(eq=False)
class Leftovers:
    """Terminates the jobs dead services of this host left, once per service."""

    reactor: IReactorTime
    _cleared: set[str] = field(factory=set)
    _clearing: dict[str, list[Deferred[None]]] = field(factory=dict)
    """The services being cleared, each with the calls waiting for it."""

    async def clear(self, services: Iterable[DeadService]) -> list[RunningRecord]:
        """Terminate the job groups ``services`` left and wait until they are gone (or for
        the call clearing them already); returns the groups this call signalled."""
        reaped: list[RunningRecord] = []
        for service in services:
            waiters = self._clearing.get(service.service_id)
            if waiters is not None:
                waiter: Deferred[None] = Deferred()
                waiters.append(waiter)
                await waiter
            elif service.service_id not in self._cleared:
                reaped += await self._clear(service)
        return reaped

    async def _clear(self, service: DeadService) -> list[RunningRecord]:
        """Never fails: a service that could not be cleared is tried again next time."""
        self._clearing[service.service_id] = []
        try:
            reaped = await reap_orphans(
                self.reactor,
                Path(service.workspace) / STATE_DIR / RUNNING_DIR,
                service.service_id.__eq__,
            )
        except Exception:
            log.failure("could not terminate the jobs of the dead service {service_id}",
                        service_id=service.service_id)
            return []
        else:
            self._cleared.add(service.service_id)
            return reaped
        finally:
            for waiter in self._clearing.pop(service.service_id):
                waiter.callback(None)


@define(eq=False)
class HostClaims:
    """The log's run claims, whose grants wait for the jobs of this host's dead services to
    be gone (see the module)."""

    log: RunClaims
    leftovers: Leftovers

    async def _claim(
        self, job_run_id: str, build_request_id: str, refs: list[str], *, skip_available: bool
    ) -> ClaimResult:
        result = await self.log.claim(
            job_run_id, build_request_id, refs, skip_available=skip_available
        )
        if result.granted and result.dead_here:
            await self.leftovers.clear(result.dead_here)
        return result

    def claim(
        self, job_run_id: str, build_request_id: str, refs: list[str], *, skip_available: bool
    ) -> Deferred[ClaimResult]:
        return ensureDeferred(
            self._claim(job_run_id, build_request_id, refs, skip_available=skip_available)
        )

    def run_states(self, job_run_ids: list[str]) -> Deferred[dict[str, RunState]]:
        return self.log.run_states(job_run_ids)
