"""Claims (SPEC §5.8): at most one run per ref at a time, over every service sharing the log.

A job run claims all its outputs in one transaction before its exec starts. The claim goes in
the transaction that stores the run's final event (``release``, called by the writer). A claim
of a service that is no longer live counts for nothing: the next claimer replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import evolve, field, frozen

from databuild.bel.backend import Database
from databuild.bel.services import fence, live_sql, now_ns
from databuild.bel.status import JobStatus


@frozen
class Holder:
    """The live run holding a ref's claim."""

    job_run_id: str
    build_request_id: str
    service_id: str


@frozen
class DeadService:
    """A service of this host that is not live and did not stop cleanly: frozen past its
    lease, or killed. Its jobs may still run; its journal of running process groups is in
    its workspace (``.databuild/running/``)."""

    service_id: str
    workspace: str


@frozen
class ClaimResult:
    """How a claim went: ``granted``; or the outputs are all ``available`` (nothing claimed);
    or some are ``held`` by other live runs (nothing claimed)."""

    granted: bool = False
    available: bool = False
    held: dict[str, Holder] = field(factory=dict)
    dead_here: tuple[DeadService, ...] = ()
    """With a grant on a shared log: the dead services of this host when it was granted,
    whose claims count for nothing though their jobs may run yet (SPEC §5.8: on the same
    host a run starts only once the old producer's processes are gone)."""


@frozen
class RunState:
    """A claimed run as another service sees it while waiting for it."""

    status: JobStatus
    message: str
    build_request_id: str
    owner_live: bool
    """Whether the service owning the run's build still holds its lease."""


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


@frozen
class ClaimRequest:
    """A run asking for all its outputs (``claim_many``)."""

    job_run_id: str
    build_request_id: str
    refs: tuple[str, ...]
    skip_available: bool
    """Claim nothing if every ref's data is AVAILABLE already (a claim released just before
    this one was taken, or a run this build's planning missed)."""


MAX_CLAIMS = 200
"""At most this many requests share one transaction (each holds a few parameters)."""


def claim_many(db: Database, requests: Sequence[ClaimRequest]) -> list[ClaimResult]:
    """Claim each request's refs, all or none per request, in one transaction.

    Every ref of every request is inserted first, in sorted order, so concurrent claimers
    (other services' batches) wait for one another instead of deadlocking. Then, in order,
    each request is granted, or refused and its claims deleted again: some ref is held by
    another live run or by an earlier request of the batch that was granted, or all are
    AVAILABLE. That is read after the claims are inserted, so a holder whose final event
    commits meanwhile is seen.
    One transaction for a batch, where a transaction per run cost as much of the log's
    thread as the run's events did (docs/performance.md).
    """
    wanted = sorted({(ref, r.job_run_id, r.build_request_id) for r in requests for ref in r.refs})
    refs = sorted({ref for ref, _, _ in wanted})
    service_id = db.service_id or ""
    results: list[ClaimResult] = []
    with db.transaction():
        fence(db)
        condition, params = db.in_condition("partition_ref", refs)
        db.execute(
            f"DELETE FROM claims WHERE {condition} AND service_id NOT IN"
            f" (SELECT service_id FROM services WHERE {live_sql(db)})",
            params,
        )
        for ref, job_run_id, build_request_id in wanted:
            db.execute(
                "INSERT INTO claims (partition_ref, job_run_id, build_request_id,"
                f" service_id, claimed_at) VALUES (?, ?, ?, ?, {now_ns(db)})"
                " ON CONFLICT (partition_ref) DO NOTHING",
                (ref, job_run_id, build_request_id, service_id),
            )
        holders = {
            ref: Holder(run, build, service)
            for ref, run, build, service in db.all(
                "SELECT partition_ref, job_run_id, build_request_id, service_id FROM claims"
                f" WHERE {condition}",
                params,
            )
        }
        # Rows of this batch's runs are only inserted yet: each request in turn takes the refs
        # no other live run holds and no earlier request of the batch was granted.
        batch = {request.job_run_id for request in requests}
        taken = {ref: h for ref, h in holders.items() if h.job_run_id not in batch}
        refused: list[str] = []
        moved: list[tuple[str, ClaimRequest]] = []
        available = _available(
            db, sorted({ref for r in requests if r.skip_available for ref in r.refs})
        )
        for request in requests:
            mine = sorted(set(request.refs))
            held = {ref: taken[ref] for ref in mine if ref in taken}
            if held:
                result = ClaimResult(held=held)
            elif request.skip_available and set(mine) <= available:
                result = ClaimResult(available=True)
            else:
                result = ClaimResult(granted=True)
                holder = Holder(request.job_run_id, request.build_request_id, service_id)
                for ref in mine:
                    taken[ref] = holder
                    inserted = holders.get(ref)
                    if inserted is not None and inserted.job_run_id != request.job_run_id:
                        moved.append((ref, request))
            if not result.granted:
                refused.append(request.job_run_id)
            results.append(result)
        for ref, request in moved:
            db.execute(
                "UPDATE claims SET job_run_id = ?, build_request_id = ? WHERE partition_ref = ?",
                (request.job_run_id, request.build_request_id, ref),
            )
        release(db, refused)
        if len(refused) < len(requests) and db.dialect == "postgresql":
            dead = _dead_here(db)
            if dead:
                results = [evolve(r, dead_here=dead) if r.granted else r for r in results]
    return results


def _dead_here(db: Database) -> tuple[DeadService, ...]:
    """The services of this service's host that are neither live nor stopped cleanly."""
    return tuple(
        DeadService(service_id, workspace)
        for service_id, workspace in db.all(
            "SELECT service_id, workspace FROM services WHERE host = ? AND state <> 'stopped'"
            f" AND workspace <> '' AND NOT ({live_sql(db)})",
            (db.host,),
        )
    )


_RAN_AND_ENDED = frozenset({JobStatus.JOB_COMPLETED.value, JobStatus.JOB_FAILED.value})


def _available(db: Database, refs: Sequence[str]) -> set[str]:
    """Those of ``refs`` whose data is AVAILABLE: the latest run that ran for each completed.

    The catalog's rule (``bel/catalog.py``), read from the job runs rather than from the
    catalog: a claim goes in the transaction of its run's final event, while the run's
    PARTITION_AVAILABLE may be stored in the next one; the run's status is never behind.
    """
    if not refs:
        return set()
    # Two lookups by key, not a join: PostgreSQL planned the join as a scan of every job run
    # (or of every ended one) per claim, so claims slowed as a build ran.
    condition, params = db.in_condition("partition_ref", refs)
    outputs = db.execute(
        f"SELECT partition_ref, job_run_id FROM job_run_outputs WHERE {condition}",
        params, replan=True,
    ).fetchall()
    if not outputs:
        return set()
    condition, params = db.in_condition("job_run_id", sorted({run for _, run in outputs}))
    # The runs that ran and ended are picked here, not in SQL: SQLite answered ``status IN
    # (...)`` from the index on status, reading every ended run of the log for each batch of
    # claims (6 ms a batch at 20,000 runs, so a build's claims cost the square of its size).
    runs = {
        run: (status, idx)
        for run, status, idx, started_at in db.execute(
            f"SELECT job_run_id, status, updated_idx, started_at FROM job_runs WHERE {condition}",
            params,
            replan=True,
        ).fetchall()
        if started_at is not None and status in _RAN_AND_ENDED
    }
    latest: dict[str, tuple[int, str]] = {}
    for ref, run in outputs:
        if run in runs:
            status, idx = runs[run]
            if ref not in latest or idx > latest[ref][0]:
                latest[ref] = (idx, status)
    return {ref for ref, (_, status) in latest.items() if status == JobStatus.JOB_COMPLETED.value}


def release(db: Database, job_run_ids: Sequence[str]) -> None:
    """Let go of the runs' claims (in the transaction storing their final events)."""
    if job_run_ids:
        condition, params = db.in_condition("job_run_id", job_run_ids)
        db.execute(f"DELETE FROM claims WHERE {condition}", params)


def run_states(db: Database, job_run_ids: Sequence[str]) -> dict[str, RunState]:
    """How each of ``job_run_ids`` stands, and whether its owner is live (unknown runs left out)."""
    if not job_run_ids:
        return {}
    rows = db.all(
        "SELECT r.job_run_id, r.status, r.message, r.build_request_id,"
        f" CASE WHEN {live_sql(db, 's')} THEN 1 ELSE 0 END"
        " FROM job_runs r JOIN builds b ON b.build_request_id = r.build_request_id"
        " LEFT JOIN services s ON s.service_id = b.service_id"
        f" WHERE r.job_run_id IN ({_marks(job_run_ids)})",
        list(job_run_ids),
    )
    return {
        run: RunState(JobStatus(status), message, build, bool(live))
        for run, status, message, build, live in rows
    }
