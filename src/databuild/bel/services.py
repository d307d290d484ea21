"""Services sharing one log (SPEC §5.8): identity, lease, fence and take-over, on the log's thread.

A lease is a row of ``services`` whose ``expires_at`` the service pushes ahead every heartbeat,
on the database's clock. ``fence`` is the check every write transaction makes first: the
writing service's lease is live at that instant, or the transaction writes nothing. A lease
that has expired is never renewed again, so a service that paused past its lease (a frozen
process, a partition from the database) can never write after a sweeper took its builds over.

On SQLite a lock file, not a lease, keeps the log to one service (``expires_at`` stays NULL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from attrs import frozen

from databuild.bel.backend import Database, EventLogError, session_name

LIVE, STOPPED, DEAD = "live", "stopped", "dead"

_COLUMNS = (
    "service_id, host, pid, process_start, version, workspace, started_at, renewed_at,"
    " expires_at, state, taken_over_by, ended_at"
)
_KEYS = tuple(c.strip() for c in _COLUMNS.split(","))


class LeaseLost(EventLogError):
    """This service's lease has expired or was taken over: it may not write any more."""

    code = "lease_lost"


@frozen
class Identity:
    """Who a service is: what it registers, and what names it in messages."""

    service_id: str
    host: str
    pid: int
    process_start: int
    """The process's start time in clock ticks since boot (``/proc/PID/stat``)."""
    version: str
    workspace: str

    def describe(self) -> str:
        return describe(self.service_id, self.host, self.pid)


def describe(service_id: str, host: str, pid: int) -> str:
    """``service ID (host HOST, pid PID)``, the form every message uses."""
    return f"service {service_id} (host {host}, pid {pid})"


def now_ns(db: Database) -> str:
    """SQL for the database clock's current time in Unix nanoseconds (not the transaction's)."""
    if db.dialect == "sqlite":
        return "CAST((julianday('now') - 2440587.5) * 86400000000000.0 AS INTEGER)"
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000000 AS BIGINT)"


def live_sql(db: Database, alias: str = "") -> str:
    """SQL true for a ``services`` row whose lease holds now."""
    p = f"{alias}." if alias else ""
    return f"{p}state = 'live' AND ({p}expires_at IS NULL OR {p}expires_at > {now_ns(db)})"


def register(db: Database, me: Identity, lease_s: float | None) -> None:
    """Add ``me`` with a fresh lease of ``lease_s`` seconds (None: held by a lock file)."""
    now = now_ns(db)
    expires = "NULL" if lease_s is None else f"{now} + ?"
    with db.transaction():
        db.execute(
            f"INSERT INTO services ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, {now}, {now},"
            f" {expires}, 'live', NULL, NULL)",
            (me.service_id, me.host, me.pid, me.process_start, me.version, me.workspace)
            + (() if lease_s is None else (int(lease_s * 1e9),)),
        )
    db.service_id, db.host = me.service_id, me.host
    db.name_session()


def renew(db: Database, service_id: str, lease_s: float) -> bool:
    """Push the lease ``lease_s`` seconds ahead; False if it had already expired (lost)."""
    now = now_ns(db)
    cursor = db.execute(
        f"UPDATE services SET renewed_at = {now}, expires_at = {now} + ?"
        f" WHERE service_id = ? AND {live_sql(db)}",
        (int(lease_s * 1e9), service_id),
    )
    return bool(cursor.rowcount)


def fence(db: Database) -> None:
    """Within a write transaction: raise LeaseLost unless this service's lease holds now."""
    ask_fence(db)()


def ask_fence(db: Database) -> Callable[[], None]:
    """Send ``fence``'s query now; the function returned raises LeaseLost unless the lease
    held. Queries sent in between share its round trip on PostgreSQL (pipeline mode)."""
    if db.service_id is None:
        return _no_fence
    service_id = db.service_id
    cursor = db.execute(
        f"SELECT 1 FROM services WHERE service_id = ? AND {live_sql(db)}", (service_id,)
    )

    def check() -> None:
        if cursor.fetchone() is None:
            raise LeaseLost(
                f"service {service_id} has lost its lease on the event log; it may not write"
            )

    return check


def _no_fence() -> None:
    pass


def stop(db: Database, service_id: str) -> None:
    """Mark a service that stops cleanly as stopped (its lease is given up)."""
    db.execute(
        f"UPDATE services SET state = 'stopped', ended_at = {now_ns(db)}"
        " WHERE service_id = ? AND state = 'live'",
        (service_id,),
    )


def live_here(db: Database, host: str) -> list[dict[str, Any]]:
    """The services on ``host`` whose lease holds (their processes may have died)."""
    return [
        dict(zip(_KEYS, row, strict=True))
        for row in db.all(f"SELECT {_COLUMNS} FROM services WHERE host = ? AND {live_sql(db)}",
                          (host,))
    ]


def take_over(db: Database, me: str, also: list[str]) -> list[dict[str, Any]]:
    """Declare dead, for ``me``, every service whose lease expired and those in ``also``.

    Also takes over a dead service whose taker is no longer live (it died mid-recovery).
    ``SKIP LOCKED`` makes exactly one of several concurrent sweepers win each service.
    Returns the rows of the services taken over; the caller recovers their builds.
    """
    now = now_ns(db)
    marks = ", ".join("?" * len(also)) or "NULL"
    due = (
        f"s.service_id <> ? AND ((s.state = 'live' AND (s.expires_at <= {now}"
        f" OR s.service_id IN ({marks}))) OR (s.state = 'dead' AND NOT EXISTS (SELECT 1"
        f" FROM services t WHERE t.service_id = s.taken_over_by AND {live_sql(db, 't')})))"
    )
    if db.dialect == "postgresql":
        _end_sessions(db, due, [me, *also])
    lock = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
    with db.transaction():
        rows = db.all(f"SELECT {_COLUMNS} FROM services s WHERE {due}{lock}", (me, *also))
        taken = [dict(zip(_KEYS, row, strict=True)) for row in rows]
        for service in taken:
            db.execute(
                f"UPDATE services SET state = 'dead', taken_over_by = ?,"
                f" ended_at = COALESCE(ended_at, {now}) WHERE service_id = ?",
                (me, service["service_id"]),
            )
            db.execute("DELETE FROM claims WHERE service_id = ?", (service["service_id"],))
    return taken


def _end_sessions(db: Database, due: str, params: list[str]) -> None:
    """End the PostgreSQL sessions of the services ``due`` selects: a frozen one's open
    transaction may hold the log's locks. Where this role may not, its locks go when the
    server's ``idle_in_transaction_session_timeout`` or the network gives up on them."""
    import psycopg

    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        db.all(
            "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a JOIN services s"
            f" ON a.application_name = ? || s.service_id WHERE {due}",
            [session_name(""), *params],
        )


def list_services(db: Database) -> list[dict[str, Any]]:
    """Every service with its lease state (``live``, ``expired``, ``stopped``, ``dead``)."""
    rows = db.all(
        f"SELECT {_COLUMNS}, CASE WHEN {live_sql(db)} THEN 'live'"
        " WHEN state = 'live' THEN 'expired' ELSE state END"
        " FROM services ORDER BY started_at DESC"
    )
    out = []
    for row in rows:
        service = dict(zip(_KEYS, row[:-1], strict=True))
        service["lease"] = row[-1]
        out.append(service)
    return out


def live_ids(db: Database) -> set[str]:
    """Ids of the services whose lease holds now."""
    return {row[0] for row in db.all(f"SELECT service_id FROM services WHERE {live_sql(db)}")}
