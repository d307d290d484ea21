"""Checkpoints of a SQLite log's WAL, off the writer's thread, and a bound on the WAL's size.

SQLite's own automatic checkpoint runs inside the ``COMMIT`` that crosses 1,000 WAL pages: it
copies pages into the database file and fsyncs both files while the writer (and every append
queued behind it) waits. The log's writer connection has it turned off; instead, every
``EVERY`` commits, this checkpointer runs a passive checkpoint (one that never blocks the
writer or readers) on its own connection and thread. A commit is durable once it is in the
WAL (docs/event-log.md, "Durability"); checkpoints only keep the WAL short.

A passive checkpoint beside a writer that keeps appending never copies the very last frames,
and SQLite writes the WAL from its start again only when a write begins with every frame
copied: under continuous appends the WAL would grow without end. So the log's thread reads the
WAL's size after each commit, and once it is past ``limit`` it runs a ``RESTART`` checkpoint
itself, between two transactions (appends queue meanwhile and go into the next group commit):
that copies what the passive checkpoints left and waits for readers of older snapshots, so the
next transaction writes the WAL from its start, and ``journal_size_limit`` (the same ``limit``,
set on the writer's connection) cuts the file back to ``limit`` at that commit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel.backend import BUSY_TIMEOUT_MS, Database, Location
from databuild.bel.worker import Worker

EVERY = 8
"""Commits between two checkpoints (a commit of 50 events adds about 200 WAL pages)."""
WAL_LIMIT = 64 * 2**20
"""Bytes of WAL past which the writer brings it back to its start (about 16,000 frames)."""
READER_WAIT_MS = 50
"""How long a restart waits for a reader of an older snapshot (another process: the log's own
reads run on the writer's thread) before it gives way and the WAL grows on."""

OnWriter = Callable[[Callable[[Database], Any]], Deferred[Any]]
"""Runs ``fn(db)`` on the log's thread with its connection, between two transactions."""


@frozen
class Restart:
    """What a forced restart did, measured on the writer's thread."""

    busy: bool
    """A reader held an older snapshot past ``READER_WAIT_MS``: the WAL did not restart."""
    frames: int
    """Frames in the WAL when it ran."""
    seconds: float
    """How long the writer waited for it."""


class Checkpointer:
    """Passive checkpoints of one SQLite log off the writer's thread, one at a time, and a
    forced restart on the writer's thread when the WAL passes ``limit`` bytes."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        location: Location,
        on_writer: OnWriter,
        limit: int = WAL_LIMIT,
    ) -> None:
        self.limit = limit
        self._reactor = reactor
        self._db = Database(location)
        self._wal = location.target + "-wal"
        self._thread = Worker(
            cast(IReactorFromThreads, reactor), f"bel-checkpoint:{location.describe()}"
        )
        self._on_writer = on_writer
        # Held through every checkpoint, so that the writer's restart waits for a passive one
        # to end exactly (SQLite's busy handler would poll for it in sleeps of up to 100 ms).
        self._lock = threading.Lock()
        self._commits = 0
        self._restart_above = limit
        self._passive: Deferred[Any] | None = None
        self._restart: Deferred[Any] | None = None
        self._shutdown_trigger: Any = None

    def start(self) -> Deferred[None]:
        """Start the thread and connect (a second connection to the log)."""
        self._thread.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._thread.stop
        )
        return self._thread.run(self._db.connect)

    def wal_bytes(self) -> int:
        """The WAL file's size; safe from any thread (the writer's reads it after commits)."""
        try:
            return os.stat(self._wal).st_size
        except FileNotFoundError:
            return 0

    def committed(self, wal_bytes: int) -> None:
        """Count a commit of the writer, which left ``wal_bytes`` of WAL: restart the WAL if it
        is past the limit, else start a passive checkpoint if one is due and none runs.

        Called before the log hands its thread the next transaction, so that a restart runs
        before it.
        """
        self._commits += 1
        if self._restart is not None:
            return
        if wal_bytes > self._restart_above:
            self._commits = 0
            self._restart = self._on_writer(self._restart_wal)
            self._restart.addCallbacks(
                self._restarted,
                self._restart_failed,
                callbackArgs=(wal_bytes,),
                errbackArgs=(wal_bytes,),
            )
            self._restart.addBoth(self._restart_done)
        elif self._commits >= EVERY and self._passive is None:
            self._commits = 0
            self._passive = self._thread.run(self._checkpoint)
            self._passive.addErrback(self._failed, "checkpoint")
            self._passive.addBoth(self._passive_done)

    def stop(self) -> Deferred[None]:
        """Wait for the running checkpoints, then disconnect and end the thread."""
        if self._shutdown_trigger is None:
            return succeed(None)  # never started
        running = [d for d in (self._passive, self._restart) if d is not None]
        d = DeferredList(running).addCallback(lambda _: self._thread.run(self._db.close))
        d.addBoth(self._stopped)
        return d

    def _checkpoint(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _restart_wal(self, db: Database) -> Restart:
        """On the writer's thread and connection, outside any transaction."""
        start = time.perf_counter()
        with self._lock:
            db.execute(f"PRAGMA busy_timeout = {READER_WAIT_MS}")
            try:
                row = db.one("PRAGMA wal_checkpoint(RESTART)")
            finally:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        assert row is not None  # the pragma answers with one row, (busy, frames, copied)
        return Restart(bool(row[0]), row[1], time.perf_counter() - start)

    def _restarted(self, restart: Restart, wal_bytes: int) -> None:
        fields = {
            "location": self._db.location.describe(),
            "wal_mib": round(wal_bytes / 2**20, 1),
            "limit_mib": round(self.limit / 2**20, 1),
            "frames": restart.frames,
            "took_ms": round(restart.seconds * 1000, 1),
        }
        if not restart.busy:
            self._restart_above = self.limit
            self.log.info(
                "event log {location}: WAL of {wal_mib} MiB ({frames} frames) past its limit"
                " of {limit_mib} MiB restarted by the writer in {took_ms} ms",
                **fields,
            )
            return
        self._back_off(wal_bytes)
        self.log.info(
            "event log {location}: WAL of {wal_mib} MiB ({frames} frames) not restarted, a"
            " reader holds an older snapshot (gave way after {took_ms} ms); next try at"
            " {next_mib} MiB",
            next_mib=round(self._restart_above / 2**20, 1),
            **fields,
        )

    def _restart_failed(self, failure: Failure, wal_bytes: int) -> None:
        self._failed(failure, "restart of the WAL")
        self._back_off(wal_bytes)

    def _back_off(self, wal_bytes: int) -> None:
        # Try again once the WAL grew by another limit: a reader that keeps its snapshot
        # (or a failing disk) must not make every commit wait for it.
        self._restart_above = wal_bytes + self.limit

    def _failed(self, failure: Failure, what: str) -> None:
        self.log.failure(
            "{what} of event log {location} failed (a later one will retry)",
            failure,
            what=what,
            location=self._db.location.describe(),
        )

    def _passive_done(self, _: object) -> None:
        self._passive = None

    def _restart_done(self, _: object) -> None:
        self._restart = None

    def _stopped(self, result: object) -> object:
        self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
        self._shutdown_trigger = None
        self._thread.stop()
        return result
