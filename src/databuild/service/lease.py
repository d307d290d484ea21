"""This service's place in the log (SPEC §5.8): registering, renewing its lease, taking over.

At start the service registers; on SQLite it first takes the log's lock file, so a second
service is refused and every other service recorded in that log is dead. On PostgreSQL it
renews its lease every heartbeat and sweeps for dead services: those whose lease expired, and
those of this host whose process is gone (they need not wait for their lease). The renewals
run on the lease line's own thread (``bel/leaseline.py``), so a reactor busy with a big request
delays the sweeps but never the lease.

A service that cannot renew is fenced before the database lets its lease go: if no renewal
succeeded for ``lease_timeout - heartbeat`` seconds (counted from the moment the last good one
was sent, which is before the database stamped it), the event log refuses every further write,
and the service stops, terminating its jobs. The deadline is a reactor timer, which a busy
reactor may fire late and before it hears of renewals made meanwhile: so it asks the line when
the last renewal succeeded before giving the lease up.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from databuild.bel import EventLog
from databuild.bel.leaseline import LeaseLine
from databuild.bel.services import Identity
from databuild.proc.info import alive, start_ticks
from databuild.service.sololock import SoloLock

TakeOver = Callable[[list[dict[str, Any]]], Awaitable[object]]
"""Recovers the builds and job processes of the services just taken over."""


def this_host() -> str:
    return socket.gethostname()


def process_gone(service: dict[str, Any]) -> bool:
    """Whether a service of this host no longer runs (its pid is gone or was reused)."""
    pid = int(service["pid"])
    return not (alive(pid) and start_ticks(pid) == service["process_start"])


class LeaseKeeper(Service):
    """Registers this service in the log and keeps its lease; sweeps for dead services."""

    log = Logger()
    me: Identity
    """This service, known once it has started (after twistd forked)."""

    def __init__(
        self,
        clock: IReactorTime,
        event_log: EventLog,
        identify: Callable[[], Identity],
        *,
        heartbeat_s: float,
        lease_timeout_s: float,
        take_over: TakeOver,
        on_lost: Callable[[str], object],
        lease_state: Callable[[str], object] = lambda _: None,
    ) -> None:
        self._clock = clock
        self._event_log = event_log
        self._identify = identify
        self.heartbeat_s = heartbeat_s
        self.lease_timeout_s = lease_timeout_s
        self._take_over = take_over
        self._on_lost = on_lost
        self._lease_state = lease_state
        """Told ``held`` once a shared log's lease is taken, ``lost`` when it goes (metrics)."""
        self.shared = event_log.location.dialect == "postgresql"
        self._lock = None if self.shared else SoloLock(Path(event_log.location.target))
        self._line = (
            LeaseLine(clock, event_log.location, lambda: clock.seconds())  # type: ignore[arg-type]
            if self.shared else None
        )
        self._sweeping: Deferred[None] | None = None
        self._stopping = False
        self._deadline: IDelayedCall | None = None
        self.lost: str | None = None
        """Why the lease was lost, once it was."""

    def startService(self) -> Deferred[None]:
        super().startService()
        self.me = self._identify()
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        if self._lock is not None:
            self._lock.acquire()
        sent = self._clock.seconds()
        await self._event_log.register(self.me, self.lease_timeout_s if self.shared else None)
        self.log.info(
            "registered as {service} on the event log{lease}",
            service=self.me.describe(),
            lease=f" (lease {self.lease_timeout_s:g} s, heartbeat {self.heartbeat_s:g} s)"
            if self.shared else " (SQLite: this service alone)",
        )
        await self._sweep()
        if self._line is not None:
            self._lease_state("held")
            self._line.start()
            self._renewed(sent)
            self._line.beat(
                self.me.service_id, self.lease_timeout_s, self.heartbeat_s, self._beaten
            )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        if self._line is not None:
            await self._line.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if self._sweeping is not None:
            await self._sweeping
        if self.lost is None:
            try:
                await self._event_log.deregister(self.me.service_id)
            except Exception:
                self.log.failure("could not give the lease up")
        if self._lock is not None:
            self._lock.release()

    def _renewed(self, sent: float) -> None:
        delay = max(sent + self.lease_timeout_s - self.heartbeat_s - self._clock.seconds(), 0)
        if self._deadline is not None and self._deadline.active():
            self._deadline.reset(delay)
        else:
            self._deadline = self._clock.callLater(delay, self._overdue)

    def _overdue(self) -> None:
        """The deadline fired: lose the lease unless the line renewed it meanwhile."""
        assert self._line is not None
        window = self.lease_timeout_s - self.heartbeat_s
        renewed_at = self._line.renewed_at
        if renewed_at is not None and renewed_at + window > self._clock.seconds():
            self._deadline = None
            self._renewed(renewed_at)
            return
        self._lose(f"no renewal succeeded for {window:g} s")

    def _beaten(self, sent: float, outcome: bool | Exception) -> None:
        """A renewal's outcome, from the line's thread. After a good one, start a sweep unless
        one still runs (it may wait for locks a frozen peer holds)."""
        if self.lost is not None or self._stopping:
            return
        if isinstance(outcome, Exception):
            self.log.warn("could not renew the lease: {error}", error=str(outcome))
            return
        if not outcome:
            self._lose("the lease expired before it was renewed")
            return
        self._renewed(sent)
        if self._sweeping is None:
            self._sweeping = ensureDeferred(self._sweep())
            self._sweeping.addErrback(
                lambda f: self.log.failure("the sweep for dead services failed", f)
            )
            self._sweeping.addBoth(self._swept)

    def _swept(self, _: object) -> None:
        self._sweeping = None

    async def _sweep(self) -> None:
        gone: list[str] = []
        if self.shared:
            here = await self._event_log.live_here(this_host())
            gone = [s["service_id"] for s in here
                    if s["service_id"] != self.me.service_id and process_gone(s)]
        else:
            gone = [s["service_id"] for s in await self._event_log.services()
                    if s["lease"] == "live" and s["service_id"] != self.me.service_id]
        taken = await self._event_log.take_over(self.me.service_id, gone)
        for service in taken:
            self.log.info(
                "took over the dead service {service_id} (host {host}, pid {pid})",
                service_id=service["service_id"],
                host=service["host"],
                pid=service["pid"],
            )
        if taken:
            await self._take_over(taken)

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        self.log.error("{service} lost its lease: {reason}; stopping",
                       service=self.me.describe(), reason=reason)
        self._event_log.fence(reason)
        self._lease_state("lost")
        if self._line is not None:
            self._line.sever()
        self._on_lost(f"lost the lease on the event log: {reason}")
