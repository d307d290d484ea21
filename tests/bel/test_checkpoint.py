"""A SQLite log's WAL is copied into the database file by the checkpointer's own thread."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from databuild.bel.backend import Location
from databuild.bel.checkpoint import EVERY, Checkpointer


def rows_in_database_file(path: Path, copy: Path) -> int:
    """Rows of ``t`` in the database file alone, without its WAL."""
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as conn:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]


@pytest_twisted.ensureDeferred
async def test_every_few_commits_a_checkpoint_moves_the_wal_into_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (n INTEGER)")
    writer.execute("PRAGMA wal_checkpoint")
    checkpointer = Checkpointer(reactor, Location("sqlite", str(path)))
    await checkpointer.start()
    for n in range(EVERY - 1):
        writer.execute("INSERT INTO t VALUES (?)", (n,))
        checkpointer.committed()
    await checkpointer.stop()
    assert rows_in_database_file(path, tmp_path / "copy-1.sqlite") == 0

    checkpointer = Checkpointer(reactor, Location("sqlite", str(path)))
    await checkpointer.start()
    for n in range(EVERY):
        writer.execute("INSERT INTO t VALUES (?)", (n,))
        checkpointer.committed()
    await checkpointer.stop()  # waits for the checkpoint the last commit started
    assert rows_in_database_file(path, tmp_path / "copy-2.sqlite") == 2 * EVERY - 1
    writer.close()


@pytest_twisted.ensureDeferred
async def test_a_checkpointer_never_started_stops_at_once(tmp_path: Path) -> None:
    await Checkpointer(reactor, Location("sqlite", str(tmp_path / "log.sqlite"))).stop()
