"""The event log's schema: numbered ``.sql`` migrations per dialect, applied in order.

``sql/<dialect>-<NNN>-<what>.sql`` takes a log from version NNN - 1 to NNN; version 1 creates it.
The version lives in the ``schema_version`` table. ``create_or_upgrade`` is the one entry point.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from databuild.bel.backend import Database, EventLogError

_NAME = re.compile(r"^(sqlite|postgresql)-(\d{3})-[a-z0-9-]+\.sql$")


def migrations(dialect: str) -> dict[int, str]:
    """The migration scripts of ``dialect``, by the version each one produces."""
    found: dict[int, str] = {}
    for entry in resources.files("databuild.bel").joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match and match.group(1) == dialect:
            found[int(match.group(2))] = entry.read_text(encoding="utf-8")
    return dict(sorted(found.items()))


def latest_version(dialect: str) -> int:
    return max(migrations(dialect))


def current_version(db: Database) -> int:
    """The log's schema version; 0 for an empty database."""
    if db.dialect == "sqlite":
        exists = db.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        ("schema_version",))
    else:
        exists = db.one("SELECT to_regclass('schema_version')")
        exists = exists if exists and exists[0] is not None else None
    if not exists:
        return 0
    row = db.one("SELECT version FROM schema_version")
    return int(row[0]) if row else 0


def back_up_before_upgrade(db: Database) -> tuple[int, Path | None] | None:
    """Before an existing log is upgraded, copy it beside itself (SQLite) as
    ``<file>.v<version>.backup``; returns the version found and the copy (None on PostgreSQL,
    where the operator backs up with ``pg_dump``, docs/event-log.md), or None when no upgrade
    is due (an empty, a current or a newer log)."""
    version = current_version(db)
    if not 0 < version < latest_version(db.dialect):
        return None
    if db.dialect != "sqlite":
        return version, None
    copy = Path(f"{db.location.target}.v{version}.backup")
    db.back_up(copy)
    return version, copy


def create_or_upgrade(db: Database, target: int | None = None) -> int:
    """Bring the log to schema version ``target`` (the latest by default); return it.

    Each step runs in its own transaction, so a failed upgrade leaves the previous version.
    A log written by a newer DataBuild is refused, never touched.
    """
    scripts = migrations(db.dialect)
    target = max(scripts) if target is None else target
    while True:
        with db.write_transaction(schema_change=True):
            version = current_version(db)
            if version > max(scripts):
                raise EventLogError(
                    f"the event log at {db.location.describe()} has schema version {version}, "
                    f"newer than this DataBuild understands (up to {max(scripts)}); "
                    "upgrade DataBuild or use another event log"
                )
            if version >= target:
                return version
            db.execute_script(scripts[version + 1])

def has_ref_trigrams(db: Database) -> bool:
    """Whether the catalog's trigram index exists (on PostgreSQL it needs ``pg_trgm``)."""
    if db.dialect == "sqlite":
        return current_version(db) >= 3
    row = db.one("SELECT to_regclass('partitions_by_ref_trigrams')")
    return row is not None and row[0] is not None
