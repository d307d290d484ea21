"""The read side of the log: JSON-ready dicts shaped as SPEC §5.5, read from summary tables.

Every list is newest first and paged; no query scans the log itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from databuild.bel.backend import Database
from databuild.bel.events import EventJSON
from databuild.bel.services import live_sql
from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import DataBuildError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_POSITION = 2**63 - 1
"""The largest offset or event index a query takes (a 64-bit database integer)."""
HISTORY_LIMIT = 1000
"""At most this many of a partition's latest events (and producing runs) in ``get_partition``."""
LINEAGE_LIMIT = 100
"""At most this many upstream and downstream refs in a partition's ``lineage``."""
STRIP_SEGMENTS = 60
"""A dataset's status strip has at most this many segments."""
RUNNING_LIMIT = 1000
"""At most this many running runs are named in ``build_jobs``."""
_IN_CHUNK = 500
TOTAL_CAP = 10_000
"""A list's ``total`` is counted only up to this many matches; beyond, it is null."""
MIN_PREFIX = 6
"""Ids may be given by a unique prefix of at least this many characters."""
MAX_MATCHES = 10
NARROW = 2000
"""A glob's index range is used when it holds fewer catalog entries than this."""


class InvalidQuery(DataBuildError, ValueError):
    """A filter or paging parameter that is out of range or malformed."""

    code = "invalid_query"


def _int(value: object, name: str, default: int, low: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidQuery(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, float | bool) or number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidQuery(f"{name} must be an integer {bounds}, got {value!r}")
    return number


def paging(limit: object, offset: object) -> tuple[int, int]:
    """Validated ``(limit, offset)``: limit 1..1000 (default 100), offset ≥ 0 (default 0)."""
    return (
        _int(limit, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        _int(offset, "offset", 0, 0, MAX_POSITION),
    )


class _Where:
    """A conjunction of SQL conditions and their parameters."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[Any] = []

    def add(self, term: str, *params: Any) -> None:
        self.terms.append(term)
        self.params.extend(params)

    def __str__(self) -> str:
        return f" WHERE {' AND '.join(self.terms)}" if self.terms else ""


def _page(
    db: Database,
    select: str,
    table: str,
    where: _Where,
    order: str,
    limit: int,
    offset: int,
    *,
    countable: bool = True,
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """One page of rows, newest first, and what the list document says of the rest: ``total``
    (null when counting would walk more than TOTAL_CAP rows, or is not index-backed) and
    ``has_more``. A page that is not full gives the total without a second query."""
    rows = db.all(
        f"SELECT {select} FROM {table}{where} ORDER BY {order} DESC LIMIT ? OFFSET ?",
        [*where.params, limit + 1, offset],
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    total: int | None = None
    if not has_more and (rows or offset == 0):
        total = offset + len(rows)
    elif countable:
        row = db.one(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {table}{where} LIMIT ?) AS capped",
            [*where.params, TOTAL_CAP + 1],
        )
        count = row[0] if row else 0
        total = count if count <= TOTAL_CAP else None
    return rows, {"total": total, "has_more": has_more}


_ID_COLUMNS = {"build": ("builds", "build_request_id"), "task": ("job_runs", "job_run_id")}


def resolve_id(db: Database, kind: str, given: str) -> list[str]:
    """The ids of ``kind`` (``build`` or ``task``) that ``given`` names: itself if it is one,
    else those it is a prefix of (at most MAX_MATCHES + 1), when it is at least MIN_PREFIX
    characters long; an index range on the primary key, never a scan."""
    table, column = _ID_COLUMNS[kind]
    if len(given) < MIN_PREFIX:
        return [given]
    upper = given[:-1] + chr(ord(given[-1]) + 1)
    found = [
        row[0]
        for row in db.all(
            f"SELECT {column} FROM {table} WHERE {column} >= ? AND {column} < ?"
            f" ORDER BY {column} LIMIT ?",
            (given, upper, MAX_MATCHES + 1),
        )
    ]
    return [given] if given in found or not found else found


def _duration_s(start: int | None, end: int | None) -> float | None:
    return None if start is None or end is None else (end - start) / 1e9


# --- builds ---------------------------------------------------------------------------

_BUILD_COLUMNS = (
    "build_request_id, status, requested_partitions, created_at, updated_at, message,"
    " service_id, retry_of"
)
RETRIES_SHOWN = 100
"""How many of a build's retries its show lists (newest first)."""


def _builds(db: Database, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    counts: dict[str, dict[str, int]] = {
        row[0]: {s.value: 0 for s in JobStatus} for row in rows
    }
    ids = list(counts)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for build_id, status, count in db.all(
            "SELECT build_request_id, status, count FROM build_job_counts"
            f" WHERE build_request_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            counts[build_id][status] = count
    return [
        {
            "build_request_id": build_id,
            "status": status,
            "requested_partitions": json.loads(requested),
            "created_at": created_at,
            "updated_at": updated_at,
            "message": message,
            "job_runs": counts[build_id],
            "service_id": service_id,
            "retry_of": retry_of,
            **_build_times(status, created_at, updated_at),
        }
        for build_id, status, requested, created_at, updated_at, message, service_id, retry_of
        in rows
    ]


def _build_times(status: str, created_at: int, updated_at: int) -> dict[str, Any]:
    """``ended_at`` and ``duration_s`` (from its request to its end): null while it runs."""
    ended_at = updated_at if BuildStatus(status).final else None
    return {"ended_at": ended_at, "duration_s": _duration_s(created_at, ended_at)}


def list_builds(db: Database, status: object, limit: object, offset: object) -> dict[str, Any]:
    limit, offset = paging(limit, offset)
    where = _Where()
    if status is not None and status != "":
        where.add("status = ?", BuildStatus.parse(status).value)
    rows, rest = _page(db, _BUILD_COLUMNS, "builds", where, "created_idx", limit, offset)
    return {"builds": _builds(db, rows), **rest}


def build_summary(db: Database, build_request_id: str) -> dict[str, Any] | None:
    """A build as lists show it (without its tasks and partitions), or None."""
    rows = db.all(
        f"SELECT {_BUILD_COLUMNS} FROM builds WHERE build_request_id = ?", (build_request_id,)
    )
    return _builds(db, rows)[0] if rows else None


def build_with_retries(db: Database, build_request_id: str) -> dict[str, Any] | None:
    """A build as lists show it, with ``retried_by`` (its retries, newest first), or None."""
    build = build_summary(db, build_request_id)
    if build is None:
        return None
    # Spelled as the partial index builds_by_retry_of is, so that it is used.
    build["retried_by"] = [
        row[0]
        for row in db.all(
            "SELECT build_request_id FROM builds WHERE retry_of = ? AND retry_of IS NOT NULL"
            " ORDER BY created_idx DESC LIMIT ?",
            (build_request_id, RETRIES_SHOWN),
        )
    ]
    return build


def get_build(db: Database, build_request_id: str) -> dict[str, Any] | None:
    build = build_with_retries(db, build_request_id)
    if build is None:
        return None
    build["tasks"] = _tasks(
        db.all(
            f"SELECT {_TASK_COLUMNS} FROM job_runs WHERE build_request_id = ?"
            " ORDER BY created_idx DESC",
            (build_request_id,),
        )
    )
    build["partitions"] = [
        {"partition_ref": ref, "status": status}
        for ref, status in db.all(
            "SELECT partition_ref, status FROM build_partitions WHERE build_request_id = ?"
            " ORDER BY partition_ref",
            (build_request_id,),
        )
    ]
    return build


_FINAL_BUILD_STATUSES = ", ".join(f"'{s.value}'" for s in BuildStatus if s.final)


def unfinished_builds(db: Database) -> list[str]:
    """Builds not in a final status, oldest first."""
    # Spelled exactly as the partial index builds_unfinished is, so that it is used.
    rows = db.all(
        "SELECT build_request_id FROM builds"
        f" WHERE status NOT IN ({_FINAL_BUILD_STATUSES}) ORDER BY created_idx"
    )
    return [row[0] for row in rows]


_OPEN_JOB_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus if not s.final)
_OPEN_PARTITION_STATUSES = ", ".join(f"'{s.value}'" for s in PartitionStatus if not s.final)
_OWNER_KEYS = ("build_request_id", "service_id", "host", "pid")


def _of_dead_owners(
    db: Database, where: str, owners: Sequence[str] | None
) -> list[dict[str, Any]]:
    """Builds ``b`` meeting ``where`` whose owner is dead, oldest first, with their owner.

    ``owners`` limits them to builds of those services; None means every owner that is not
    live (with builds whose owner is unknown, recorded before services were).
    """
    if owners is not None and not owners:
        return []
    owned = (
        f"b.service_id IN ({', '.join('?' * len(owners))})"
        if owners is not None
        else f"(s.service_id IS NULL OR NOT ({live_sql(db, 's')}))"
    )
    rows = db.all(
        "SELECT b.build_request_id, b.service_id, s.host, s.pid FROM builds b"
        " LEFT JOIN services s ON s.service_id = b.service_id"
        f" WHERE {where} AND {owned} ORDER BY b.created_idx",
        list(owners or ()),
    )
    return [dict(zip(_OWNER_KEYS, row, strict=True)) for row in rows]


def orphaned_builds(db: Database, owners: Sequence[str] | None) -> list[dict[str, Any]]:
    """Unfinished builds whose owner is dead (see ``_of_dead_owners``)."""
    return _of_dead_owners(db, f"b.status NOT IN ({_FINAL_BUILD_STATUSES})", owners)


def builds_with_open_work(db: Database, owners: Sequence[str] | None) -> list[dict[str, Any]]:
    """Builds of dead owners in a final status that still have a job run or a partition not
    final (see ``_of_dead_owners``)."""
    # Open job runs are found by index; build_partitions has none by status (a scan, at start).
    return _of_dead_owners(
        db,
        f"b.status IN ({_FINAL_BUILD_STATUSES}) AND b.build_request_id IN ("
        f" SELECT build_request_id FROM job_runs WHERE status IN ({_OPEN_JOB_STATUSES})"
        " UNION SELECT build_request_id FROM build_partitions"
        f" WHERE status IN ({_OPEN_PARTITION_STATUSES}))",
        owners,
    )




# --- partitions -----------------------------------------------------------------------

_PARTITION_COLUMNS = "partition_ref, status, updated_at, build_request_id, job_run_id, job_label"
_PARTITION_KEYS = tuple(c.strip() for c in _PARTITION_COLUMNS.split(","))


def list_partitions(
    db: Database, status: object, pattern: str | None, limit: object, offset: object
) -> dict[str, Any]:
    limit, offset = paging(limit, offset)
    where = _Where()
    if status is not None and status != "":
        where.add("status = ?", PartitionStatus.parse(status).value)
    if pattern:
        if not isinstance(pattern, str):
            raise InvalidQuery(f"pattern must be a string, got {pattern!r}")
        term, params = db.glob_condition("partition_ref", pattern)
        where.add(term, *params)
        narrowed = db.glob_range("partition_ref", "reversed_ref", pattern)
        trigrams = db.glob_trigrams(pattern)
        if narrowed is not None and _is_narrow(db, "partitions", *narrowed):
            where.add(narrowed[0], *narrowed[1])
        elif trigrams is not None and _is_narrow(db, *trigrams):
            table, condition, params = trigrams
            if table != "partitions":  # SQLite's trigram index is a table of its own
                subquery = f"SELECT partition_ref FROM {table} WHERE {condition}"
                condition = f"partition_ref IN ({subquery})"
            where.add(condition, *params)
    rows, rest = _page(
        db, _PARTITION_COLUMNS, "partitions", where, "updated_idx", limit, offset,
        countable=not pattern,
    )  # fmt: skip
    partitions = [dict(zip(_PARTITION_KEYS, row, strict=True)) for row in rows]
    return {"partitions": partitions, **rest}


def _is_narrow(db: Database, table: str, condition: str, params: list[Any]) -> bool:
    """Whether ``condition`` holds for fewer than NARROW rows of ``table``.

    Sorting a narrow range is quick; for a wide one, walking the newest-first index and
    testing each row finds a page of matches sooner.
    """
    row = db.one(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {condition} LIMIT ?) AS within",
        [*params, NARROW],
    )
    return row is not None and row[0] < NARROW


def get_partition(db: Database, ref: str) -> dict[str, Any] | None:
    row = db.one(f"SELECT {_PARTITION_COLUMNS} FROM partitions WHERE partition_ref = ?", (ref,))
    if row is None:
        return None
    partition = dict(zip(_PARTITION_KEYS, row, strict=True))
    history = db.all(
        "SELECT idx, body FROM events WHERE partition_ref = ? ORDER BY idx DESC LIMIT ?",
        (ref, HISTORY_LIMIT),
    )
    partition["history"] = [_event(idx, body) for idx, body in reversed(history)]
    partition["job_runs"] = _tasks(
        db.all(
            f"SELECT {_TASK_COLUMNS} FROM job_runs WHERE job_run_id IN"
            " (SELECT job_run_id FROM job_run_outputs WHERE partition_ref = ?)"
            " ORDER BY created_idx DESC LIMIT ?",
            (ref, HISTORY_LIMIT),
        )
    )
    partition["lineage"] = _lineage(db, partition)
    return partition


def _lineage(db: Database, partition: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What the partition's producing run read (upstream), and what the runs that read it
    make (downstream), at most LINEAGE_LIMIT refs each, with their catalog status."""
    producer = partition["job_run_id"] or next(
        (run["job_run_id"] for run in partition["job_runs"]), None
    )
    plan = (db.one("SELECT inputs FROM job_run_plans WHERE job_run_id = ?", (producer,))
            if producer else None)
    upstream = [i["partition_ref"] for i in json.loads(plan[0])] if plan else []
    downstream: dict[str, None] = {}
    for (outputs,) in db.all(
        "SELECT j.outputs FROM job_run_inputs i JOIN job_runs j ON j.job_run_id = i.job_run_id"
        " WHERE i.partition_ref = ? ORDER BY j.created_idx DESC LIMIT ?",
        (partition["partition_ref"], HISTORY_LIMIT),
    ):
        downstream.update(dict.fromkeys(json.loads(outputs)))
    refs = list(dict.fromkeys(upstream))[:LINEAGE_LIMIT]
    later = list(downstream)[:LINEAGE_LIMIT]
    statuses = partition_statuses(db, refs + later)

    def shown(found: list[str]) -> list[dict[str, Any]]:
        return [{"partition_ref": ref, "status": s.value if (s := statuses.get(ref)) else None}
                for ref in found]

    return {"upstream": shown(refs), "downstream": shown(later)}


def partition_statuses(db: Database, refs: Iterable[str]) -> dict[str, PartitionStatus]:
    """The catalog status of each of ``refs`` the log knows."""
    wanted = list(dict.fromkeys(refs))
    found: dict[str, PartitionStatus] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        for ref, status in db.all(
            "SELECT partition_ref, status FROM partitions"
            f" WHERE partition_ref IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            found[ref] = PartitionStatus(status)
    return found


def partition_builders(db: Database, refs: Iterable[str]) -> dict[str, str]:
    """For each of ``refs``, the build whose job run last made it (completed); without one,
    the build of its catalog row's latest event. Refs the log does not know are left out.

    A catalog row that says AVAILABLE from a run's own event names that run's build: only the
    other refs are looked for among the runs that made them (a ref kept by many no-op builds
    is an output of each one's skipped run).
    """
    wanted = list(dict.fromkeys(refs))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        whole = wanted[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(whole))
        chunk = []
        for ref, build_request_id, status, data_idx in db.all(
            "SELECT partition_ref, build_request_id, status, data_idx FROM partitions"
            f" WHERE partition_ref IN ({marks}) AND build_request_id IS NOT NULL",
            whole,
        ):
            found[ref] = build_request_id
            if status != PartitionStatus.PARTITION_AVAILABLE.value or data_idx is None:
                chunk.append(ref)
        if not chunk:
            continue
        marks = ", ".join("?" * len(chunk))
        # CROSS JOIN keeps SQLite from walking every completed run by its status index.
        latest: dict[str, int] = {}
        for ref, build_request_id, created_idx in db.all(
            "SELECT o.partition_ref, r.build_request_id, r.created_idx FROM job_run_outputs o"
            " CROSS JOIN job_runs r WHERE r.job_run_id = o.job_run_id"
            f" AND o.partition_ref IN ({marks}) AND r.status = ?",
            [*chunk, JobStatus.JOB_COMPLETED.value],
        ):
            if created_idx > latest.get(ref, -1):
                latest[ref] = created_idx
                found[ref] = build_request_id
    return found


# --- jobs -----------------------------------------------------------------------------

_JOB_COLUMNS = "job_label, runs, succeeded, failed, timed_runs, total_duration_ns, last_run_at"


def _job(row: tuple[Any, ...]) -> dict[str, Any]:
    label, runs, succeeded, failed, timed_runs, total_ns, last_run_at = row
    return {
        "job_label": label,
        "runs": runs,
        "succeeded": succeeded,
        "failed": failed,
        "mean_duration_s": total_ns / timed_runs / 1e9 if timed_runs else None,
        "last_run_at": last_run_at,
    }


def _with_skipped(db: Database, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each job's ``skipped`` runs (outputs already available, or delegated to another
    build), counted on the ``(job_label, status)`` index of ``job_runs``, and leave them out
    of its ``runs``: the one meaning of "runs" (docs/cli.md), for lists and shows alike."""
    labels = [job["job_label"] for job in jobs]
    skipped: dict[str, int] = {}
    for start in range(0, len(labels), _IN_CHUNK):
        chunk = labels[start : start + _IN_CHUNK]
        skipped.update(
            db.all(
                "SELECT job_label, COUNT(*) FROM job_runs WHERE status = ?"
                f" AND job_label IN ({', '.join('?' * len(chunk))}) GROUP BY job_label",
                [JobStatus.JOB_SKIPPED.value, *chunk],
            )
        )
    for job in jobs:
        job["skipped"] = skipped.get(job["job_label"], 0)
        job["runs"] -= job["skipped"]
    return jobs


def list_jobs(db: Database, limit: object, offset: object) -> dict[str, Any]:
    limit, offset = paging(limit, offset)
    rows, rest = _page(db, _JOB_COLUMNS, "job_stats", _Where(), "updated_idx", limit, offset)
    return {"jobs": _with_skipped(db, [_job(row) for row in rows]), **rest}


def get_job(db: Database, job_label: str) -> dict[str, Any] | None:
    row = db.one(f"SELECT {_JOB_COLUMNS} FROM job_stats WHERE job_label = ?", (job_label,))
    return None if row is None else _with_skipped(db, [_job(row)])[0]


# --- the dashboard at scale: a build by job, the catalog by dataset ---------------------


def build_jobs(db: Database, build_request_id: str) -> dict[str, Any] | None:
    """A build drawn at the job level: per job label its planned runs and their count per
    status, the edges between its jobs, its running runs, and ``as_of_idx``, the build's
    last event these counts include (a progress stream resumed there continues them)."""
    if db.one("SELECT 1 FROM builds WHERE build_request_id = ?", (build_request_id,)) is None:
        return None
    as_of = db.one("SELECT MAX(idx) FROM events WHERE build_request_id = ?",
                   (build_request_id,))
    planned = dict(db.all(
        "SELECT job_label, COUNT(*) FROM job_run_plans WHERE build_request_id = ?"
        " GROUP BY job_label",
        (build_request_id,),
    ))
    counts: dict[str, dict[str, int]] = {}
    for label, status, count in db.all(
        "SELECT job_label, status, COUNT(*) FROM job_runs WHERE build_request_id = ?"
        " GROUP BY job_label, status",
        (build_request_id,),
    ):
        counts.setdefault(label, {s.value: 0 for s in JobStatus})[status] = count
    jobs = []
    for label in sorted({*planned, *counts}):
        by_status = counts.get(label) or {s.value: 0 for s in JobStatus}
        runs = max(planned.get(label, 0), sum(by_status.values()))
        jobs.append({"job_label": label, "runs": runs, "job_runs": by_status})
    running = db.all(
        "SELECT job_run_id, job_label FROM job_runs WHERE status = ? AND build_request_id = ?"
        " LIMIT ?",
        (JobStatus.JOB_RUNNING.value, build_request_id, RUNNING_LIMIT),
    )
    edges = db.all(
        "SELECT upstream, downstream FROM build_job_edges WHERE build_request_id = ?"
        " ORDER BY upstream, downstream",
        (build_request_id,),
    )
    return {
        "build_request_id": build_request_id,
        "as_of_idx": (as_of[0] if as_of else None) or 0,
        "runs": sum(job["runs"] for job in jobs),
        "jobs": jobs,
        "edges": [{"upstream": up, "downstream": down} for up, down in edges],
        "running": [{"job_run_id": run_id, "job_label": label} for run_id, label in running],
    }


def list_datasets(db: Database, limit: object, offset: object) -> dict[str, Any]:
    """The catalog grouped by the job that makes each partition, by job label: each one's
    partition count per status, and a status strip (the refs in order, cut in at most
    STRIP_SEGMENTS segments, each with its first and last ref and its count per status)."""
    limit, offset = paging(limit, offset)
    rows = db.all(
        "SELECT job_label FROM job_stats ORDER BY job_label LIMIT ? OFFSET ?",
        (limit + 1, offset),
    )
    has_more = len(rows) > limit
    datasets = [_dataset(db, label) for (label,) in rows[:limit]]
    total = offset + len(datasets) if not has_more else None
    return {"datasets": datasets, "total": total, "has_more": has_more}


def _dataset(db: Database, job_label: str) -> dict[str, Any]:
    statuses = {s.value: 0 for s in PartitionStatus}
    statuses.update(db.all(
        "SELECT status, COUNT(*) FROM partitions WHERE job_label = ? GROUP BY status",
        (job_label,),
    ))
    size = sum(statuses.values())
    segments = min(size, STRIP_SEGMENTS)
    strip: dict[int, dict[str, Any]] = {}
    if segments:
        for segment, first, last, status, count in db.all(
            "SELECT segment, MIN(partition_ref), MAX(partition_ref), status, COUNT(*) FROM ("
            " SELECT partition_ref, status,"
            " (ROW_NUMBER() OVER (ORDER BY partition_ref) - 1) * ? / ? AS segment"
            " FROM partitions WHERE job_label = ?) AS numbered"
            " GROUP BY segment, status ORDER BY segment",
            (segments, size, job_label),
        ):
            part = strip.setdefault(segment, {"first_ref": first, "last_ref": last,
                                              "partitions": 0, "statuses": {}})
            part["first_ref"] = min(part["first_ref"], first)
            part["last_ref"] = max(part["last_ref"], last)
            part["partitions"] += count
            part["statuses"][status] = count
    return {
        "job_label": job_label,
        "partitions": size,
        "statuses": statuses,
        "strip": [strip[k] for k in sorted(strip)],
    }


def failed_partitions(db: Database, limit: object, offset: object) -> dict[str, Any]:
    """Catalog entries FAILED because their run failed, newest first: a ref whose run was
    cancelled (or never ran for it) is not counted as failed here."""
    limit, offset = paging(limit, offset)
    columns = ", ".join(f"p.{c}" for c in _PARTITION_KEYS)
    rows = db.all(
        f"SELECT {columns} FROM partitions p JOIN job_runs j ON j.job_run_id = p.job_run_id"
        " WHERE p.status = ? AND j.status = ? ORDER BY p.updated_idx DESC LIMIT ? OFFSET ?",
        (PartitionStatus.PARTITION_FAILED.value, JobStatus.JOB_FAILED.value, limit + 1, offset),
    )
    has_more = len(rows) > limit
    partitions = [dict(zip(_PARTITION_KEYS, row, strict=True)) for row in rows[:limit]]
    return {"partitions": partitions, "total": None if has_more else offset + len(partitions),
            "has_more": has_more}


# --- tasks (job runs) -----------------------------------------------------------------

_TASK_COLUMNS = (
    "job_run_id, job_label, build_request_id, status, outputs, scheduled_at, started_at,"
    " ended_at, exit_code, message"
)


def _tasks(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {
            "job_run_id": run_id,
            "job_label": label,
            "build_request_id": build_id,
            "status": status,
            "outputs": json.loads(outputs),
            "scheduled_at": scheduled_at,
            "started_at": started_at,
            "ended_at": ended_at,
            "duration_s": _duration_s(started_at, ended_at),
            "exit_code": exit_code,
            "message": message,
        }
        for (
            run_id,
            label,
            build_id,
            status,
            outputs,
            scheduled_at,
            started_at,
            ended_at,
            exit_code,
            message,
        ) in rows
    ]


def list_tasks(
    db: Database,
    build_request_id: str | None,
    job_label: str | None,
    status: object,
    limit: object,
    offset: object,
) -> dict[str, Any]:
    limit, offset = paging(limit, offset)
    where = _Where()
    if build_request_id:
        where.add("build_request_id = ?", build_request_id)
    if job_label:
        where.add("job_label = ?", job_label)
    if status is not None and status != "":
        where.add("status = ?", JobStatus.parse(status).value)
    rows, rest = _page(db, _TASK_COLUMNS, "job_runs", where, "created_idx", limit, offset)
    return {"tasks": _tasks(rows), **rest}


def get_task(db: Database, job_run_id: str) -> dict[str, Any] | None:
    """One run, with its config from the plan (``inputs``, ``args``, ``env``; null for a
    run planned before the log kept plans)."""
    rows = db.all(f"SELECT {_TASK_COLUMNS} FROM job_runs WHERE job_run_id = ?", (job_run_id,))
    if not rows:
        return None
    task = _tasks(rows)[0]
    plan = db.one("SELECT inputs, args, env FROM job_run_plans WHERE job_run_id = ?",
                  (job_run_id,))
    for key, value in zip(("inputs", "args", "env"), plan or (None,) * 3, strict=True):
        task[key] = None if value is None else json.loads(value)
    return task


# --- events ---------------------------------------------------------------------------


def _event(idx: int, body: str) -> EventJSON:
    return EventJSON.stored(idx, body, json.loads(body))


def events(
    db: Database,
    since: object,
    limit: object,
    build_request_id: str | None,
    partition_ref: str | None,
    job_label: str | None,
) -> dict[str, Any]:
    """Events after ``since`` (exclusive), oldest first; ``next_since`` continues from there."""
    since = _int(since, "since", 0, 0, MAX_POSITION)
    limit = _int(limit, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    where = _Where()
    where.add("idx > ?", since)
    for column, value in (
        ("build_request_id", build_request_id),
        ("partition_ref", partition_ref),
        ("job_label", job_label),
    ):
        if value:
            where.add(f"{column} = ?", value)
    rows = db.all(
        f"SELECT idx, body FROM events{where} ORDER BY idx LIMIT ?", [*where.params, limit]
    )
    return {
        "events": [_event(idx, body) for idx, body in rows],
        "next_since": rows[-1][0] if rows else since,
    }
