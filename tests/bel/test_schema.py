"""Schema versions (create, upgrade in place, refuse newer) and event-log URIs (SPEC §4.3)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from databuild.bel import (
    Event,
    EventLogError,
    PartitionEvent,
    PartitionStatus,
    open_event_log,
)
from databuild.bel.backend import (
    Database,
    Location,
    glob_to_like,
    glob_to_regex,
    literal_prefix,
    literal_suffix,
    longest_literal,
    parse_uri,
)
from databuild.bel.schema import (
    create_or_upgrade,
    current_version,
    has_ref_trigrams,
    latest_version,
    migrations,
)

LATEST = 8
"""The schema version this DataBuild writes."""


@pytest.fixture
def database(log_uri: str, tmp_path: Path) -> Iterator[Database]:
    """A bare connection to an empty log, for driving the schema directly."""
    db = Database(parse_uri(log_uri, tmp_path))
    db.connect()
    yield db
    db.close()


def table_names(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        rows = db.all("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = db.all(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()"
        )
    return {row[0] for row in rows}


def test_migrations_are_numbered_alike_for_both_dialects() -> None:
    assert list(migrations("sqlite")) == list(migrations("postgresql")) == list(range(1, 9))
    assert latest_version("sqlite") == latest_version("postgresql") == LATEST


def test_an_empty_database_gets_the_latest_schema(database: Database) -> None:
    assert current_version(database) == 0
    assert create_or_upgrade(database) == LATEST
    assert current_version(database) == LATEST
    assert {"events", "builds", "partitions", "job_runs", "job_stats", "services", "claims"} <= (
        table_names(database)
    )
    assert has_ref_trigrams(database)
    assert create_or_upgrade(database) == LATEST


def test_an_old_log_is_upgraded_in_place_keeping_its_data(database: Database) -> None:
    assert create_or_upgrade(database, target=1) == 1
    assert "job_stats" not in table_names(database)
    rows = [
        ("r1", "ingest", "JOB_COMPLETED", 10, 12, 1),
        ("r2", "ingest", "JOB_FAILED", 20, 26, 2),
        ("r3", "ingest", "JOB_SKIPPED", None, 30, 3),
        ("r4", "agg", "JOB_RUNNING", 40, None, 4),
    ]
    for run_id, label, status, started, ended, idx in rows:
        database.execute(
            "INSERT INTO job_runs (job_run_id, build_request_id, job_label, outputs, status,"
            " created_idx, updated_idx, scheduled_at, started_at, ended_at, message)"
            " VALUES (?, 'b1', ?, '[]', ?, ?, ?, 0, ?, ?, '')",
            (run_id, label, status, idx, idx, started, ended),
        )
    assert create_or_upgrade(database) == LATEST
    stats = database.all(
        "SELECT job_label, runs, succeeded, failed, timed_runs, total_duration_ns, last_run_at,"
        " updated_idx FROM job_stats ORDER BY job_label"
    )
    assert [tuple(row) for row in stats] == [
        ("agg", 1, 0, 0, 0, 0, 40, 4),
        ("ingest", 3, 1, 1, 2, 8, 20, 3),
    ]
    assert len(database.all("SELECT * FROM job_runs")) == 4


def test_upgrading_to_version_3_indexes_the_refs_already_in_the_catalog(
    database: Database,
) -> None:
    assert create_or_upgrade(database, target=2) == 2
    assert not has_ref_trigrams(database)
    for idx, ref in enumerate(["daily/1999-01-01/teal", "daily/1999-01-02/teal", "raw/x"]):
        database.execute(
            "INSERT INTO partitions (partition_ref, status, updated_at, updated_idx,"
            " reversed_ref) VALUES (?, 'PARTITION_AVAILABLE', 0, ?, ?)",
            (ref, idx, ref[::-1]),
        )
    assert create_or_upgrade(database) == LATEST
    database.ref_trigrams = has_ref_trigrams(database)
    assert database.ref_trigrams
    table, condition, params = database.glob_trigrams("*1999-01-01*")  # type: ignore[misc]
    found = database.all(f"SELECT partition_ref FROM {table} WHERE {condition}", params)
    assert [row[0] for row in found] == ["daily/1999-01-01/teal"]


def _write_as_version_3(db: Database, events: list[tuple[str, PartitionEvent]]) -> None:
    """Store partition events as a version 3 log did: the catalog took every event's status."""
    for idx, (build_id, payload) in enumerate(events, start=1):
        event = Event(build_id, payload, timestamp=idx)
        body = event.to_json()
        del body["idx"]
        db.execute(
            "INSERT INTO events (idx, event_id, timestamp, build_request_id, event_type,"
            " partition_ref, job_run_id, body) VALUES (?, ?, ?, ?, 'partition', ?, ?, ?)",
            (idx, event.event_id, idx, build_id, payload.partition_ref, payload.job_run_id,
             json.dumps(body)),
        )
        db.execute(
            "INSERT INTO partitions (partition_ref, status, updated_at, updated_idx,"
            " build_request_id, job_run_id, reversed_ref) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (partition_ref) DO UPDATE SET status = excluded.status,"
            " updated_at = excluded.updated_at, updated_idx = excluded.updated_idx,"
            " build_request_id = excluded.build_request_id, job_run_id = excluded.job_run_id",
            (payload.partition_ref, payload.status.value, idx, idx, build_id,
             payload.job_run_id, payload.partition_ref[::-1]),
        )


def test_upgrading_to_version_4_derives_each_catalog_status_from_history(
    database: Database,
) -> None:
    assert create_or_upgrade(database, target=3) == 3
    P = PartitionStatus
    _write_as_version_3(database, [
        # b1 built good/1; b2 asked for it again and failed analysis; b3 was cancelled.
        ("b1", PartitionEvent("good/1", P.PARTITION_SCHEDULED, job_run_id="r1")),
        ("b1", PartitionEvent("good/1", P.PARTITION_BUILDING, job_run_id="r1")),
        ("b1", PartitionEvent("good/1", P.PARTITION_AVAILABLE, job_run_id="r1")),
        ("b2", PartitionEvent("good/1", P.PARTITION_REQUESTED)),
        ("b2", PartitionEvent("good/1", P.PARTITION_FAILED, "analysis failed")),
        ("b3", PartitionEvent("good/1", P.PARTITION_SCHEDULED, job_run_id="r3")),
        ("b3", PartitionEvent("good/1", P.PARTITION_FAILED, "cancelled", job_run_id="r3")),
        # A run that ran and failed is the data's truth.
        ("b1", PartitionEvent("bad/1", P.PARTITION_BUILDING, job_run_id="r4")),
        ("b1", PartitionEvent("bad/1", P.PARTITION_FAILED, "exit 1", job_run_id="r4")),
        # No run ever touched it: its latest bookkeeping status stays.
        ("b2", PartitionEvent("new/1", P.PARTITION_REQUESTED)),
        ("b2", PartitionEvent("new/1", P.PARTITION_FAILED, "analysis failed")),
    ])
    assert create_or_upgrade(database) == LATEST
    catalog = database.all(
        "SELECT partition_ref, status, updated_idx, build_request_id, job_run_id, data_idx"
        " FROM partitions ORDER BY partition_ref"
    )
    assert [tuple(row) for row in catalog] == [
        ("bad/1", "PARTITION_FAILED", 9, "b1", "r4", 9),
        ("good/1", "PARTITION_AVAILABLE", 3, "b1", "r1", 3),
        ("new/1", "PARTITION_FAILED", 11, "b2", None, None),
    ]
    assert database.one("SELECT COUNT(*) FROM events") == (11,)


@pytest_twisted.ensureDeferred
async def test_a_log_from_a_newer_databuild_is_refused_untouched(
    database: Database, log_uri: str, tmp_path: Path
) -> None:
    create_or_upgrade(database)
    database.execute("UPDATE schema_version SET version = 99")
    log = open_event_log(log_uri, tmp_path, reactor)
    with pytest.raises(EventLogError, match=r"has schema version 99, newer than this DataBuild "
                       rf"understands \(up to {LATEST}\); upgrade DataBuild or use another "
                       "event log"):
        await log.open()
    assert current_version(database) == 99


@pytest_twisted.ensureDeferred
async def test_opening_creates_the_schema_and_reopening_keeps_it(
    log_uri: str, tmp_path: Path
) -> None:
    for _ in range(2):
        log = open_event_log(log_uri, tmp_path, reactor)
        await log.open()
        assert await log.list_builds() == {"builds": [], "total": 0, "has_more": False}
        await log.close()


def test_relative_paths_are_taken_from_the_workspace_root(tmp_path: Path) -> None:
    assert parse_uri(".databuild/bel.sqlite", tmp_path) == Location(
        "sqlite", str(tmp_path / ".databuild" / "bel.sqlite")
    )
    assert parse_uri("/abs/bel.db", tmp_path) == Location("sqlite", "/abs/bel.db")
    assert parse_uri("sqlite:///abs/my%20bel.db", tmp_path) == Location(
        "sqlite", "/abs/my bel.db"
    )


def test_postgresql_uris_in_both_spellings(tmp_path: Path) -> None:
    for uri in ("postgresql://u:pw@db.example:5433/bel", "postgres://u:pw@db.example:5433/bel"):
        location = parse_uri(uri, tmp_path)
        assert location == Location("postgresql", uri)
        assert location.describe() == "postgresql://u@db.example:5433/bel"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "the event log URI is empty"),
        ("mysql://x/y", "unknown scheme 'mysql'"),
        ("sqlite://relative/bel.db", "write SQLite URIs as sqlite:///ABSOLUTE/PATH"),
        ("sqlite:///", "write SQLite URIs as sqlite:///ABSOLUTE/PATH"),
    ],
)
def test_bad_uris_are_refused_with_a_reason(uri: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(EventLogError, match=message):
        parse_uri(uri, tmp_path)


@pytest_twisted.ensureDeferred
async def test_sqlite_parent_directories_are_created(tmp_path: Path) -> None:
    log = open_event_log("deep/er/bel.sqlite", tmp_path, reactor)
    await log.open()
    await log.close()
    assert (tmp_path / "deep" / "er" / "bel.sqlite").is_file()


@pytest_twisted.ensureDeferred
async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bel.sqlite").write_bytes(b"not a database at all" * 100)
    log = open_event_log("bel.sqlite", tmp_path, reactor)
    with pytest.raises(EventLogError, match=r"cannot open the event log at .*bel\.sqlite"):
        await log.open()


def test_glob_translation() -> None:
    assert glob_to_regex("a.b/*/[!x]?[ab]") == r"^a\.b/.*/[^x].[ab]$"
    assert glob_to_regex("[unclosed") == r"^\[unclosed$"
    assert literal_prefix("daily/2026-*") == "daily/2026-"
    assert literal_prefix("*x") == ""
    assert literal_prefix("plain") == "plain"
    assert literal_suffix("*-01-01/teal") == "-01-01/teal"
    assert literal_suffix("a/[xy]z") == "z"
    assert literal_suffix("a*") == ""
    assert literal_suffix("plain") == "plain"


def test_globs_become_like_patterns_escaping_like_wildcards() -> None:
    assert glob_to_like("*1999-01-0?/[!x]*") == "%1999-01-0_/_%"
    assert glob_to_like("*50%_off\\b*") == "%50\\%\\_off\\\\b%"
    assert glob_to_like("[unclosed") == "[unclosed"


def test_the_trigram_index_is_only_asked_about_literal_runs_of_three() -> None:
    assert longest_literal("*1999-01-01*") == 10
    assert longest_literal("*a[bcd]ef?g*") == 2
    assert longest_literal("[ab") == 3
    db = Database(Location("postgresql", "postgresql://unused/x"))
    assert db.glob_trigrams("*abc*") is None  # no index known: the scan it is
    db.ref_trigrams = True
    assert db.glob_trigrams("*ab*c*") is None
    assert db.glob_trigrams("*a[bcd]ef?g*") is None
    assert db.glob_trigrams("*x_y*") == ("partitions", "partition_ref LIKE ?", ["%x\\_y%"])
    assert db.glob_trigrams("*/teal") is None  # the suffix range holds all it would find
    assert db.glob_trigrams("2026*") is None
    assert db.glob_trigrams("daily/*1999-01-01*") is not None
    sqlite = Database(Location("sqlite", "/unused"))
    sqlite.ref_trigrams = True
    assert sqlite.glob_trigrams("*1999[!x]*") == (
        "partition_ref_trigrams", "partition_ref GLOB ?", ["*1999[^x]*"]
    )


@pytest_twisted.ensureDeferred
async def test_an_old_sqlite_log_is_copied_before_its_upgrade(tmp_path: Path) -> None:
    """(A PostgreSQL log is backed up with pg_dump, docs/event-log.md.)"""
    log_uri = str(tmp_path / "bel.sqlite")
    old = Database(parse_uri(log_uri, tmp_path))
    old.connect()
    create_or_upgrade(old, target=2)
    old.execute(
        "INSERT INTO events (event_id, timestamp, build_request_id, event_type, body)"
        " VALUES ('e1', 1, 'b1', 'build_request', '{}')"
    )
    old.close()
    log = open_event_log(log_uri, tmp_path, reactor)
    await log.open()
    await log.close()
    backup = Path(f"{log_uri}.v2.backup")
    copy = sqlite3.connect(backup)
    try:
        assert copy.execute("SELECT version FROM schema_version").fetchone() == (2,)
        assert copy.execute("SELECT event_id FROM events").fetchall() == [("e1",)]
    finally:
        copy.close()
    reopened = open_event_log(log_uri, tmp_path, reactor)
    await reopened.open()  # current now: nothing more is copied
    await reopened.close()
    assert sorted(p.name for p in backup.parent.glob("*.backup")) == [backup.name]


def test_upgrading_to_version_7_keeps_each_planned_run_and_the_job_edges(
    database: Database,
) -> None:
    assert create_or_upgrade(database, target=5) == 5
    graph = {"job_graph": {"outputs": ["agg/1"], "job_runs": [
        {"job_run_id": "r1", "job_label": "ingest", "outputs": ["raw/1"], "inputs": [],
         "args": ["raw/1"], "env": {"A": "1"}},
        {"job_run_id": "r2", "job_label": "agg", "outputs": ["agg/1"], "args": [], "env": {},
         "inputs": [{"dep_type_code": 1, "dep_type_name": "materialize",
                     "partition_ref": {"str": "raw/1"}}]},
    ]}, "event_type": "job_graph"}
    database.execute(
        "INSERT INTO events (idx, event_id, timestamp, build_request_id, event_type, body)"
        " VALUES (1, 'e1', 1, 'b1', 'job_graph', ?)", (json.dumps(graph),),
    )
    assert create_or_upgrade(database) == LATEST
    plans = database.all(
        "SELECT job_run_id, build_request_id, job_label, inputs, args, env FROM job_run_plans"
        " ORDER BY job_run_id"
    )
    assert [(*row[:3], *map(json.loads, row[3:])) for row in plans] == [
        ("r1", "b1", "ingest", [], ["raw/1"], {"A": "1"}),
        ("r2", "b1", "agg", [{"partition_ref": "raw/1", "dep_type": "materialize"}], [], {}),
    ]
    assert database.all("SELECT partition_ref, job_run_id FROM job_run_inputs") == [
        ("raw/1", "r2")
    ]
    assert database.all("SELECT * FROM build_job_edges") == [("b1", "ingest", "agg")]
