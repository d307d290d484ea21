"""The tether: jobs die with their service, whatever kills it.

``PR_SET_PDEATHSIG`` can only be asked for by the child itself, which cost every job an exec
of ``setpriv`` in front of it. Instead one watchdog process per service
(``databuild.proc.watchdog``) holds the process groups of the service's running jobs, told
over a pipe; the service's end of that pipe closes when its process ends, kill -9 included,
and the watchdog then kills every group it still holds, grandchildren included.

The service writes its lines to that pipe itself, at once, with one ``write`` each (through a
Twisted transport a line cost a writer registered and removed, and a turn of the reactor);
the watchdog reads them ten times a second, not as each comes, so a line wakes nobody
(``databuild.proc.watchdog``). Should the watchdog stall and the pipe fill, the lines wait, in
order, and are tried again. ``benchmarks/spawn_bench.py`` measures what a run's hold and
release cost the reactor.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

WATCHDOG = (sys.executable, "-m", "databuild.proc.watchdog")
RETRY_WRITE_S = 0.1
"""Lines the watchdog's full pipe did not take are tried again after this long."""
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
        self._pipe: int | None = None
        """The service's end of the watchdog's stdin (non-blocking)."""
        self._unwritten = bytearray()
        """Lines the pipe had no room for yet, in order."""
        self._retry: IDelayedCall | None = None
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
        read_end, write_end = os.pipe()
        try:
            self._reactor.spawnProcess(
                self._watchdog, argv[0], argv, env=None, childFDs={0: read_end, 1: "r", 2: "r"}
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self._pipe = write_end

    def hold(self, pgid: int) -> None:
        """Kill group ``pgid`` if this service dies while it is held."""
        self._held.add(pgid)
        self._write(b"+%d\n" % pgid)

    def release(self, pgid: int) -> None:
        """Group ``pgid`` is done: the watchdog forgets it."""
        self._held.discard(pgid)
        self._write(b"-%d\n" % pgid)

    @property
    def unwritten(self) -> int:
        """How many bytes of lines wait for room in the watchdog's pipe."""
        return len(self._unwritten)

    def _write(self, line: bytes) -> None:
        if self._pipe is None:
            return  # the next watchdog gets what is held in its arguments
        self._unwritten += line
        if self._retry is None:
            self._flush()

    def _flush(self) -> None:
        self._retry = None
        assert self._pipe is not None
        try:
            written = os.write(self._pipe, self._unwritten)
        except BlockingIOError:
            written = 0
        except OSError:
            # The watchdog is gone (EPIPE); its end is on its way (watchdog_ended).
            self._unwritten.clear()
            return
        del self._unwritten[:written]
        if self._unwritten:
            self._retry = self._reactor.callLater(RETRY_WRITE_S, self._flush)

    def _close_pipe(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._unwritten.clear()
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None

    def watchdog_ended(self, watchdog: _Watchdog, reason: Failure) -> None:
        if watchdog is not self._watchdog:
            return
        self._watchdog = None
        self._close_pipe()
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
        watchdog = self._watchdog
        if watchdog is None or self._pipe is None:
            return None
        if self._unwritten:
            self._flush()  # a last try: what the watchdog does not take, it holds at its end
        self._close_pipe()
        return watchdog.ended
