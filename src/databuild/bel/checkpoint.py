"""Checkpoints of a SQLite log's WAL on a thread of their own, so that no commit waits for one.

SQLite's own automatic checkpoint runs inside the ``COMMIT`` that crosses 1,000 WAL pages: it
copies pages into the database file and fsyncs both files while the writer (and every append
queued behind it) waits. The log's writer connection has it turned off; instead, every
``EVERY`` commits, this checkpointer runs a passive checkpoint (one that never blocks the
writer or readers) on its own connection and thread. A commit is durable once it is in the
WAL (docs/event-log.md, "Durability"); checkpoints only keep the WAL short.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.backend import Database, Location
from databuild.bel.worker import Worker

EVERY = 8
"""Commits between two checkpoints (a commit of 50 events adds about 200 WAL pages)."""


class Checkpointer:
    """Passive checkpoints of one SQLite log, one at a time, off the writer's thread."""

    log = Logger()

    def __init__(self, reactor: IReactorCore, location: Location) -> None:
        self._reactor = reactor
        self._db = Database(location)
        self._thread = Worker(reactor, f"bel-checkpoint:{location.describe()}")
        self._commits = 0
        self._running: Deferred[Any] | None = None
        self._shutdown_trigger: Any = None

    def start(self) -> Deferred[None]:
        """Start the thread and connect (a second connection to the log)."""
        self._thread.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._thread.stop
        )
        return self._run(self._db.connect)

    def committed(self) -> None:
        """Count a commit of the writer; start a checkpoint if one is due and none runs."""
        self._commits += 1
        if self._commits < EVERY or self._running is not None:
            return
        self._commits = 0
        running = self._running = self._run(self._db.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        running.addErrback(self._failed)
        running.addBoth(self._done)

    def stop(self) -> Deferred[None]:
        """Wait for the running checkpoint, then disconnect and end the thread."""
        if self._shutdown_trigger is None:
            return succeed(None)  # never started
        idle: Deferred[None] = Deferred()
        if self._running is None:
            idle.callback(None)
        else:
            self._running.addBoth(lambda _: idle.callback(None))
        d = idle.addCallback(lambda _: self._run(self._db.close))
        d.addBoth(self._stopped)
        return d

    def _run(self, fn: Any, *args: Any) -> Deferred[Any]:
        return self._thread.run(fn, *args)

    def _failed(self, failure: Failure) -> None:
        self.log.failure(
            "checkpoint of event log {location} failed (the next one will retry)",
            failure,
            location=self._db.location.describe(),
        )

    def _done(self, _: object) -> None:
        self._running = None

    def _stopped(self, result: object) -> object:
        self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
        self._shutdown_trigger = None
        self._thread.stop()
        return result

