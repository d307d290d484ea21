"""One service per SQLite event log (SPEC §5.8): a lock file beside the database.

The lock is an ``flock`` on ``<database>.lock`` held for the service's life; the kernel drops it
when the process dies, however it dies, so a stale lock never outlives its holder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from attrs import define

from databuild.bel import EventLogError


@define
class SoloLock:
    """The lock of one SQLite event log."""

    database: Path
    _fd: int | None = None

    @property
    def path(self) -> Path:
        return self.database.with_name(self.database.name + ".lock")

    def acquire(self) -> None:
        """Take the lock; EventLogError naming the holder if another service has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EventLogError(
                f"the SQLite event log {self.database} is in use by another service "
                f"(pid {holder}); a SQLite log serves one service only: stop that one, "
                "or share a PostgreSQL event log (--event-log postgresql://...)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
