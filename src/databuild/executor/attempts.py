"""Attempts of runs on Celery workers, as the event log holds them (SPEC §10).

The service and its workers share these tables (``bel/sql/postgresql-008-workers.sql``) and
nothing else: the service inserts an attempt before it publishes its message, a worker takes
it with a compare-and-set, heartbeats it, writes its lines and its exit status; the service
reads them back. Plain blocking functions over one ``bel.backend.Database``: the worker calls
them on its task threads, the service on a thread of its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import frozen

from databuild.bel.backend import Database
from databuild.bel.services import now_ns
from databuild.proc.process import ProcessResult

QUEUED, RUNNING, ENDED, LOST, CANCELLED = "queued", "running", "ended", "lost", "cancelled"


@frozen
class AttemptState:
    """What the log says of one attempt."""

    job_run_id: str
    attempt: int
    state: str
    worker: str | None
    result: ProcessResult | None
    """How it ended (state ``ended``, ``lost`` or ``cancelled``)."""
    stale: bool
    """Running, and its heartbeat is older than the lease timeout asked about."""


def publish(
    db: Database, job_run_id: str, attempt: int, build_request_id: str, epoch: str, queue: str
) -> None:
    """Record an attempt as queued, before its message goes out."""
    db.execute(
        "INSERT INTO remote_attempts (job_run_id, attempt, build_request_id, epoch, queue,"
        f" state, published_at) VALUES (?, ?, ?, ?, ?, '{QUEUED}', {now_ns(db)})",
        (job_run_id, attempt, build_request_id, epoch, queue),
    )


def take(db: Database, job_run_id: str, attempt: int, epoch: str, worker: str) -> bool:
    """The compare-and-set a worker makes before it starts anything: True for one caller."""
    now = now_ns(db)
    row = db.one(
        f"UPDATE remote_attempts SET state = '{RUNNING}', worker = ?, started_at = {now},"
        f" heartbeat_at = {now} WHERE job_run_id = ? AND attempt = ? AND epoch = ?"
        f" AND state = '{QUEUED}' AND NOT cancel_requested RETURNING 1",
        (worker, job_run_id, attempt, epoch),
    )
    return row is not None


def heartbeat(
    db: Database, job_run_id: str, attempt: int, pid: int | None, lines: Sequence[str]
) -> bool | None:
    """Store ``lines`` (JSON log records), renew the attempt; whether cancel is asked.

    None when the attempt is no longer this worker's to run (the service declared it lost).
    """
    with db.transaction():
        if lines:
            db.execute(
                "INSERT INTO run_log_chunks (job_run_id, attempt, lines) VALUES (?, ?, ?)",
                (job_run_id, attempt, "\n".join(lines)),
            )
        row = db.one(
            f"UPDATE remote_attempts SET heartbeat_at = {now_ns(db)}, pid = COALESCE(?, pid)"
            f" WHERE job_run_id = ? AND attempt = ? AND state = '{RUNNING}'"
            " RETURNING cancel_requested",
            (pid, job_run_id, attempt),
        )
    return None if row is None else bool(row[0])


def end(db: Database, job_run_id: str, attempt: int, result: ProcessResult) -> None:
    """Record how the attempt's process ended."""
    db.execute(
        f"UPDATE remote_attempts SET state = '{ENDED}', exit_code = ?, signal = ?,"
        f" timed_out = ?, cancelled = ?, stderr_tail = ?, ended_at = {now_ns(db)}"
        f" WHERE job_run_id = ? AND attempt = ? AND state = '{RUNNING}'",
        (result.exit_code, result.signal, result.timed_out, result.cancelled,
         result.stderr_tail, job_run_id, attempt),
    )


def cancel(db: Database, job_run_id: str) -> None:
    """Ask the run's attempts to stop; one still queued never starts."""
    with db.transaction():
        db.execute(
            "UPDATE remote_attempts SET cancel_requested = TRUE WHERE job_run_id = ?",
            (job_run_id,),
        )
        db.execute(
            f"UPDATE remote_attempts SET state = '{CANCELLED}', cancelled = TRUE,"
            f" ended_at = {now_ns(db)} WHERE job_run_id = ? AND state = '{QUEUED}'",
            (job_run_id,),
        )


def states(
    db: Database, keys: Sequence[tuple[str, int]], lease_s: float
) -> dict[str, AttemptState]:
    """The state of each ``(job_run_id, attempt)``, by run id."""
    if not keys:
        return {}
    wanted = dict(keys)
    rows = db.all(
        "SELECT job_run_id, attempt, state, worker, exit_code, signal, timed_out, cancelled,"
        f" stderr_tail, heartbeat_at < {now_ns(db)} - ? FROM remote_attempts"
        " WHERE job_run_id = ANY(?)",
        (int(lease_s * 1e9), list(wanted)),
    )
    found = {}
    for run_id, attempt, state, worker, code, sig, timed_out, cancelled, tail, stale in rows:
        if wanted[run_id] != attempt:
            continue
        result = None
        if state in (ENDED, CANCELLED):
            result = ProcessResult(code, sig, timed_out, cancelled, tail)
        found[run_id] = AttemptState(
            run_id, attempt, state, worker, result, state == RUNNING and bool(stale)
        )
    return found


def lose(db: Database, job_run_id: str, attempt: int, lease_s: float) -> bool:
    """Declare a running attempt whose heartbeat stopped lost; True if it was."""
    row = db.one(
        f"UPDATE remote_attempts SET state = '{LOST}', ended_at = {now_ns(db)}"
        f" WHERE job_run_id = ? AND attempt = ? AND state = '{RUNNING}'"
        f" AND heartbeat_at < {now_ns(db)} - ? RETURNING 1",
        (job_run_id, attempt, int(lease_s * 1e9)),
    )
    return row is not None


def chunks_after(db: Database, runs: Sequence[tuple[str, int]]) -> list[tuple[int, str, str]]:
    """``(seq, job_run_id, lines)`` of the chunks of each ``(job_run_id, after)`` whose
    ``seq`` is above ``after``, in order."""
    if not runs:
        return []
    return [
        (int(seq), run_id, lines)
        for seq, run_id, lines in db.all(
            "SELECT c.seq, c.job_run_id, c.lines FROM run_log_chunks c"
            " JOIN unnest(CAST(? AS TEXT[]), CAST(? AS BIGINT[])) AS f(job_run_id, after)"
            " ON c.job_run_id = f.job_run_id AND c.seq > f.after ORDER BY c.seq",
            ([run_id for run_id, _ in runs], [after for _, after in runs]),
        )
    ]


def adopt(
    db: Database, dead: Sequence[str], me: str, lease_s: float
) -> list[tuple[str, int, str]]:
    """Take over the attempts of ``dead`` services: this service (``me``) follows the running
    ones whose heartbeats are fresh; running ones with stale heartbeats are lost, queued
    ones never start. Returns ``(job_run_id, attempt, build_request_id)`` of those followed."""
    if not dead:
        return []
    now, lease_ns = now_ns(db), int(lease_s * 1e9)
    with db.transaction():
        rows = db.all(
            f"UPDATE remote_attempts SET epoch = ? WHERE epoch = ANY(?) AND state = '{RUNNING}'"
            f" AND heartbeat_at >= {now} - ? RETURNING job_run_id, attempt, build_request_id",
            (me, list(dead), lease_ns),
        )
        db.execute(
            f"UPDATE remote_attempts SET state = '{LOST}', ended_at = {now}"
            f" WHERE epoch = ANY(?) AND state = '{RUNNING}'",
            (list(dead),),
        )
        db.execute(
            f"UPDATE remote_attempts SET state = '{CANCELLED}', cancelled = TRUE,"
            f" ended_at = {now} WHERE epoch = ANY(?) AND state = '{QUEUED}'",
            (list(dead),),
        )
        # Their claims went with their dead service (``bel.services.take_over``): they are
        # this service's now, until each run's final event releases them.
        for run_id, _, build_request_id in rows:
            db.execute(
                "INSERT INTO claims (partition_ref, job_run_id, build_request_id, service_id,"
                f" claimed_at) SELECT partition_ref, job_run_id, ?, ?, {now}"
                " FROM job_run_outputs WHERE job_run_id = ? ON CONFLICT DO NOTHING",
                (build_request_id, me, run_id),
            )
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def worker_started(
    db: Database, name: str, host: str, pid: int, queues: Sequence[str], concurrency: int
) -> None:
    now = now_ns(db)
    db.execute(
        "INSERT INTO workers (name, host, pid, queues, concurrency, started_at, heartbeat_at)"
        f" VALUES (?, ?, ?, ?, ?, {now}, {now}) ON CONFLICT (name) DO UPDATE SET"
        " host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,"
        " concurrency = EXCLUDED.concurrency, started_at = EXCLUDED.started_at,"
        " heartbeat_at = EXCLUDED.heartbeat_at, stopped_at = NULL",
        (name, host, pid, json.dumps(list(queues)), concurrency),
    )


def worker_heartbeat(db: Database, name: str) -> None:
    db.execute(f"UPDATE workers SET heartbeat_at = {now_ns(db)} WHERE name = ?", (name,))


def worker_stopped(db: Database, name: str) -> None:
    db.execute(f"UPDATE workers SET stopped_at = {now_ns(db)} WHERE name = ?", (name,))


def workers(db: Database, lease_s: float) -> list[dict[str, Any]]:
    """Every worker (SPEC §10): name, host, queues, concurrency, last heartbeat, runs now."""
    rows = db.all(
        "SELECT w.name, w.host, w.pid, w.queues, w.concurrency, w.started_at, w.heartbeat_at,"
        f" w.stopped_at IS NULL AND w.heartbeat_at >= {now_ns(db)} - ?,"
        f" (SELECT count(*) FROM remote_attempts a WHERE a.worker = w.name"
        f" AND a.state = '{RUNNING}'),"
        f" (SELECT count(*) FROM remote_attempts a WHERE a.worker = w.name)"
        " FROM workers w ORDER BY w.name",
        (int(lease_s * 1e9),),
    )
    return [
        {
            "name": name,
            "host": host,
            "pid": pid,
            "queues": json.loads(queues),
            "concurrency": concurrency,
            "started_at": started,
            "last_heartbeat": beat,
            "live": bool(live),
            "running": int(running),
            "runs_total": int(total),
        }
        for name, host, pid, queues, concurrency, started, beat, live, running, total in rows
    ]


def worker_of(db: Database, job_run_id: str) -> str | None:
    """The worker of the run's last attempt that a worker took."""
    row = db.one(
        "SELECT worker FROM remote_attempts WHERE job_run_id = ? AND worker IS NOT NULL"
        " ORDER BY attempt DESC LIMIT 1",
        (job_run_id,),
    )
    return None if row is None else str(row[0])


def queued(db: Database) -> dict[str, int]:
    """Attempts published and not yet taken, by queue."""
    return {
        str(queue): int(n)
        for queue, n in db.all(
            f"SELECT queue, count(*) FROM remote_attempts WHERE state = '{QUEUED}'"
            " GROUP BY queue"
        )
    }
