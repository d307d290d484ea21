"""The lease's own connection: renewals never queue behind appends waiting for a lock.

A write of this service may wait (up to the server's ``idle_in_transaction_session_timeout``)
for a lock that a frozen peer holds; the lease must be renewed all the same, so renewals go
over a second connection on a thread of their own.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads

from databuild.bel import services
from databuild.bel.backend import Database, Location
from databuild.bel.worker import Worker


class LeaseLine:
    """One connection, one thread, for renewing one service's lease."""

    def __init__(self, reactor: IReactorCore, location: Location) -> None:
        self._reactor = reactor
        self._db = Database(location)
        self._thread = Worker(cast(IReactorFromThreads, reactor), f"lease:{location.describe()}")
        self._severed = False

    def start(self) -> None:
        self._thread.start()

    def renew(self, service_id: str, lease_s: float) -> Deferred[bool]:
        """Push the lease ahead (connecting first if need be); False if it was lost."""
        return self._thread.run(self._renew, service_id, lease_s)

    def _renew(self, service_id: str, lease_s: float) -> bool:
        if self._severed:
            return False
        self._db.service_id = service_id
        if self._db.connected:
            self._db.reconnect_if_lost()
        else:
            self._db.connect()
        return services.renew(self._db, service_id, lease_s)

    def sever(self) -> None:
        """Cut the connection, from the reactor thread: a renewal stuck on it fails."""
        self._severed = True
        self._db.sever()

    def stop(self) -> Deferred[None]:
        """Close the connection and stop the thread."""
        d = self._thread.run(self._db.close)
        d.addBoth(self._stop_thread)
        return d

    def _stop_thread(self, result: object) -> object:
        self._thread.stop()
        return result
