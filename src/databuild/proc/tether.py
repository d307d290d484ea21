"""The tether: jobs die with their service, whatever kills it.

``PR_SET_PDEATHSIG`` can only be asked for by the child itself, which cost every job an exec
of ``setpriv`` in front of it. Instead one watchdog process per service
(``databuild.proc.watchdog``) holds the process groups of the service's running jobs, told
over a pipe; the service's end of that pipe closes when its process ends, kill -9 included,
and the watchdog then kills every group it still holds, grandchildren included.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

WATCHDOG = (sys.executable, "-m", "databuild.proc.watchdog")
RESTART_DELAY_S = 1.0
"""A watchdog that died is started again after this long: one that cannot run at all
costs a line in the log a second, not a loop."""


class _Watchdog(ProcessProtocol):
    def __init__(self, tether: Tether) -> None:
        self._tether = tether
        self.ended: Deferred[None] = Deferred()

    def errReceived(self, data: bytes) -> None:
        self._tether.log.warn("tether watchdog: {text}", text=data.decode(errors="replace"))

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self._tether.watchdog_ended(self, reason)


class Tether(Service):
    """Holds the process groups of running jobs in a watchdog process (see the module)."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._held: set[int] = set()
        self._watchdog: _Watchdog | None = None
        self._transport: IProcessTransport | None = None
        self._restart: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        self._watchdog = _Watchdog(self)
        # The watchdog keeps the service's working directory and environment; setsid keeps a
        # signal to the service's process group (a terminal's ^C) from reaching it; what is
        # held already (after a watchdog died) goes in its arguments, held from its start.
        argv = ["/usr/bin/setsid", *WATCHDOG, *map(str, self._held)]
        self._transport = self._reactor.spawnProcess(
            self._watchdog, argv[0], argv, env=None, childFDs={0: "w", 1: "r", 2: "r"}
        )

    def hold(self, pgid: int) -> None:
        """Kill group ``pgid`` if this service dies while it is held."""
        self._held.add(pgid)
        if self._transport is not None:
            self._transport.write(b"+%d\n" % pgid)

    def release(self, pgid: int) -> None:
        """Group ``pgid`` is done: the watchdog forgets it."""
        self._held.discard(pgid)
        if self._transport is not None:
            self._transport.write(b"-%d\n" % pgid)

    def watchdog_ended(self, watchdog: _Watchdog, reason: Failure) -> None:
        if watchdog is not self._watchdog:
            return
        self._watchdog = self._transport = None
        if not self.running:
            return
        self.log.error(
            "the tether's watchdog ended ({why}): starting another in {delay:g} s; until it"
            " runs, the jobs of {held} process groups would outlive a crash of this service",
            why="it exited" if reason.check(ProcessDone) else reason.getErrorMessage(),
            delay=RESTART_DELAY_S,
            held=len(self._held),
        )
        self._restart = self._reactor.callLater(RESTART_DELAY_S, self._start_watchdog)

    def stopService(self) -> Deferred[None] | None:
        """Close the watchdog's pipe; it kills what is still held (a clean stop has ended
        its jobs by now) and exits."""
        super().stopService()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        watchdog, transport = self._watchdog, self._transport
        if watchdog is None or transport is None:
            return None
        transport.closeStdin()
        return watchdog.ended
