"""The lease's own connection and thread: renewals never wait for the reactor nor for appends.

A write of this service may wait (up to the server's ``idle_in_transaction_session_timeout``)
for a lock that a frozen peer holds, and the reactor may be busy with a big request for a
while; the lease must be renewed all the same. So the heartbeat itself runs on a thread of its
own, over a second connection: it renews every ``heartbeat_s`` whatever the reactor does, and
tells the reactor each outcome (``on_beat``). ``renewed_at`` is the send time of the latest
renewal that succeeded, readable from any thread: a deadline that fires late on a busy reactor
asks it before declaring the lease lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from databuild.bel import services
from databuild.bel.backend import Database, Location
from databuild.bel.worker import Worker

OnBeat = Callable[[float, "bool | Exception"], object]
"""Told on the reactor's thread, for each renewal: when it was sent, and True (renewed), False
(the lease was lost) or the error that kept it from being renewed."""


class LeaseLine:
    """One connection, one thread, for renewing one service's lease."""

    def __init__(
        self, reactor: IReactorFromThreads, location: Location, now: Callable[[], float]
    ) -> None:
        self._reactor = reactor
        self._now = now
        self._db = Database(location)
        self._thread = Worker(reactor, f"lease:{location.describe()}")
        self._severed = False
        self._halt = threading.Event()
        self.renewed_at: float | None = None
        """When the latest successful renewal was sent (by ``now``), or None."""

    def start(self) -> None:
        self._thread.start()

    def beat(self, service_id: str, lease_s: float, heartbeat_s: float, on_beat: OnBeat) -> None:
        """Renew the lease every ``heartbeat_s`` on the line's thread until the line stops, is
        severed, or a renewal finds the lease lost."""
        self._thread.run(self._beats, service_id, lease_s, heartbeat_s, on_beat)

    def _beats(self, service_id: str, lease_s: float, heartbeat_s: float, on_beat: OnBeat) -> None:
        while not self._halt.wait(heartbeat_s):
            sent = self._now()
            outcome: bool | Exception
            try:
                outcome = self._renew(service_id, lease_s)
            except Exception as e:
                outcome = e
            if outcome is True:
                self.renewed_at = sent
            self._reactor.callFromThread(on_beat, sent, outcome)
            if outcome is False:
                return

    def _renew(self, service_id: str, lease_s: float) -> bool:
        """Push the lease ahead (connecting first if need be); False if it was lost."""
        if self._severed:
            return False
        self._db.service_id = service_id
        if self._db.connected:
            self._db.reconnect_if_lost()
        else:
            self._db.connect()
        return services.renew(self._db, service_id, lease_s)

    def sever(self) -> None:
        """Cut the connection, from the reactor thread: a renewal stuck on it fails, and the
        heartbeat stops."""
        self._severed = True
        self._halt.set()
        self._db.sever()

    def stop(self) -> Deferred[None]:
        """Stop the heartbeat, close the connection and stop the thread."""
        self._halt.set()
        d = self._thread.run(self._db.close)
        d.addBoth(self._stop_thread)
        return d

    def _stop_thread(self, result: object) -> object:
        self._thread.stop()
        return result
