"""``EventLog``: the asynchronous face of one event log, with one connection on one thread.

Every database call runs on the log's own thread (``worker.Worker``), so the reactor never
blocks and the connection is never shared between threads. Appends queue up while a
transaction commits and go into the next transaction together (group commit); each append's
Deferred fires once its transaction has committed, so an acknowledged event is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.bel import claims, queries, schema, services
from databuild.bel.backend import (
    Database,
    EventLogError,
    Location,
    LogFileGone,
    StoreUnavailable,
    parse_uri,
)
from databuild.bel.checkpoint import WAL_LIMIT, Checkpointer
from databuild.bel.claims import ClaimRequest, ClaimResult, RunState
from databuild.bel.events import Event
from databuild.bel.services import Identity, LeaseLost
from databuild.bel.status import PartitionStatus
from databuild.bel.worker import Worker
from databuild.bel.writer import append_batch
from databuild.errors import DataBuildError

MAX_BATCH = 1000
"""At most this many appends share one transaction, which bounds each one's latency."""

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Call = tuple[list[Event], "Deferred[list[Event | DataBuildError]]"]
"""One ``append_many`` call waiting for its transaction."""


def open_event_log(uri: str, workspace_root: Path, reactor: IReactorCore) -> EventLog:
    """An EventLog for ``uri`` (SPEC §4.3); call ``open()`` before using it."""
    return EventLog(reactor, parse_uri(uri, workspace_root))


class EventLog:
    """The Build Event Log: serialised, group-committed appends and indexed reads."""

    log = Logger()

    def __init__(
        self, reactor: IReactorCore, location: Location, *, wal_limit: int = WAL_LIMIT
    ) -> None:
        """``wal_limit``: bytes of WAL past which a SQLite log restarts it (bel/checkpoint.py)."""
        self._reactor = reactor
        self.location = location
        self._db = Database(location)
        self._thread = Worker(cast(IReactorFromThreads, reactor), f"bel:{location.describe()}")
        self._checkpointer = (
            Checkpointer(reactor, location, self._on_writer, wal_limit)
            if location.dialect == "sqlite"
            else None
        )
        self._pending: list[_Call] = []
        self._committing = False
        self._claims: list[tuple[ClaimRequest, Deferred[ClaimResult]]] = []
        self._claiming = False
        self._drained: list[Deferred[None]] = []
        self._state = "new"
        self._lost: LeaseLost | None = None
        self._gone: LogFileGone | None = None
        self._shutdown_trigger: Any = None
        self.commits = 0
        """Write transactions committed so far (tests and benchmarks read it)."""
        self._transactions = 0
        """Write transactions ended so far, committed or not (a failed one may have committed)."""

    @property
    def version(self) -> int | None:
        """Changes whenever a write transaction ends (committed or failed); reads answered
        under one version may be kept and answered again while it holds. None on PostgreSQL,
        where other services may write too (SPEC §5.8): nothing read may be kept."""
        return self._transactions if self.location.dialect == "sqlite" else None

    def __repr__(self) -> str:
        return f"<EventLog {self.location.describe()} {self._state}>"

    def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return self._thread.run(fn, *args, **kwargs)

    def _on_writer(self, fn: Callable[[Database], _T]) -> Deferred[_T]:
        """Run ``fn(db)`` on the log's thread, after the transaction running if any."""
        return self._run(fn, self._db)

    def _read(self, fn: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._state != "open":
            return self._not_open()
        return self._run(self._work, fn, *args)

    def _work(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(db, *args)`` on the log's thread, reconnecting first if need be.

        A fenced log never reconnects: what is still queued fails at once.
        """
        if self._lost is not None:
            raise self._lost
        self._check_file()
        self._db.reconnect_if_lost()
        return fn(self._db, *args)

    def _check_file(self) -> None:
        """On the log's thread: raise LogFileGone, for good, once the SQLite file was
        deleted or replaced under the service (a ``stat`` per call)."""
        if self._gone is None and (why := self._db.file_gone()) is not None:
            self._gone = LogFileGone(
                f"{why}; it stores nothing more: stop the service, put the file back and "
                "start it again"
            )
            cast(IReactorFromThreads, self._reactor).callFromThread(
                self.log.error, "event log {location}: {problem}",
                location=self.location.describe(), problem=str(self._gone),
            )
        if self._gone is not None:
            raise self._gone

    def problem(self) -> Deferred[str | None]:
        """Why the log cannot be used for good (its SQLite file is gone), checked now; or None."""
        if self._state != "open" or self.location.dialect != "sqlite":
            return succeed(None if self._gone is None else str(self._gone))

        def check() -> str | None:
            try:
                self._check_file()
            except LogFileGone as e:
                return str(e)
            return None

        return self._run(check)

    def _not_open(self) -> Deferred[Any]:
        if self._lost is not None:
            return fail(self._lost)
        return fail(EventLogError(f"the event log at {self.location.describe()} is not open"))

    async def open(self) -> None:
        """Connect, and create or upgrade the schema."""
        if self._state != "new":
            raise EventLogError(f"the event log at {self.location.describe()} was opened before")
        self._thread.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._thread.stop
        )
        self._state = "opening"
        try:
            version = await self._run(self._connect)
            if self._checkpointer is not None:
                await self._checkpointer.start()
        except BaseException:
            await self._stop_checkpoints()
            self._stop_thread()
            self._state = "closed"
            raise
        self._state = "open"
        self.log.info(
            "opened event log {location} (schema version {version})",
            location=self.location.describe(),
            version=version,
        )

    def _back_up_before_upgrade(self) -> None:
        found = schema.back_up_before_upgrade(self._db)
        if found is None:
            return
        version, copy = found
        latest = schema.latest_version(self._db.dialect)
        if copy is not None:
            self.log.info(
                "event log {location}: copied to {backup} before upgrading its schema from "
                "version {version} to {latest}",
                location=self.location.describe(), backup=str(copy), version=version,
                latest=latest,
            )
        else:
            self.log.warn(
                "event log {location}: upgrading its schema from version {version} to "
                "{latest}; back a PostgreSQL log up with pg_dump before upgrading DataBuild",
                location=self.location.describe(), version=version, latest=latest,
            )

    def _connect(self) -> int:
        self._db.connect()
        try:
            self._back_up_before_upgrade()
            version = schema.create_or_upgrade(self._db)
            self._db.ref_trigrams = schema.has_ref_trigrams(self._db)
        except BaseException:
            self._db.close()
            raise
        if self._checkpointer is not None:
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
            # The first commit after the WAL restarts cuts the file back to this size.
            self._db.execute(f"PRAGMA journal_size_limit = {self._checkpointer.limit}")
        if not self._db.ref_trigrams:
            self.log.warn(
                "event log {location} has no trigram index of partition refs (PostgreSQL"
                " needs the pg_trgm extension): patterns like '*text*' test every partition",
                location=self.location.describe(),
            )
        return version

    async def close(self) -> None:
        """Wait for queued appends to commit, then disconnect. Closing twice is harmless."""
        if self._state == "fenced":
            self._state = "closing"
            try:
                await self._run(self._db.close)
            finally:
                self._stop_thread()
                self._state = "closed"
            return
        if self._state != "open":
            return
        self._state = "closing"
        if self._committing or self._pending:
            drained: Deferred[None] = Deferred()
            self._drained.append(drained)
            await drained
        try:
            await self._stop_checkpoints()
            await self._run(self._db.close)
        finally:
            self._stop_thread()
            self._state = "closed"
            self.log.info("closed event log {location}", location=self.location.describe())

    async def _stop_checkpoints(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()

    def _stop_thread(self) -> None:
        self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
        self._thread.stop()

    # --- writing ------------------------------------------------------------------------

    def append(self, event: Event) -> Deferred[Event]:
        """Store ``event``; fires with it, ``idx`` set, once durable.

        Errbacks with IllegalTransition (nothing written) if its status may not follow the
        current one, and otherwise as ``append_many`` does.
        """
        return self.append_many([event]).addCallback(_only)

    def append_many(self, events: Sequence[Event]) -> Deferred[list[Event | DataBuildError]]:
        """Store ``events``, in order; fires once they are durable with each one's outcome:
        the event stored (``idx`` set), or the DataBuildError refusing it (IllegalTransition,
        DuplicateEvent; a refused event writes nothing and does not affect the others).

        Errbacks with StoreUnavailable if the database failed to store them (then every call
        queued behind it fails too, so nothing is stored out of order), with LeaseLost once
        the log is fenced, or with EventLogError if the log is not open. One Deferred for the
        lot: a recorder with thousands of events in flight keeps one per batch, not per event.
        """
        if self._state != "open":
            return self._not_open()
        waiting: Deferred[list[Event | DataBuildError]] = Deferred()
        self._pending.append((list(events), waiting))
        if not self._committing:
            self._commit_next()
        return waiting

    def fence(self, reason: str) -> None:
        """This service lost its lease: refuse every append from now on, queued ones too.

        Cuts the connection, so that a call stuck on a frozen network fails and frees the
        log's thread; the database's own fence refuses anything that still reaches it.
        """
        if self._state != "open":
            return
        self._state = "fenced"
        self._lost = LeaseLost(f"the event log at {self.location.describe()} is fenced: {reason}")
        pending, self._pending = self._pending, []
        for _, waiting in pending:
            waiting.errback(Failure(self._lost))
        self._db.sever()
        self.log.warn("event log {location} fenced: {reason}",
                      location=self.location.describe(), reason=reason)

    def _commit_next(self) -> None:
        """Commit the calls queued so far, whole, up to about ``MAX_BATCH`` events."""
        taken = _calls_within(self._pending, MAX_BATCH)
        batch = self._pending[:taken]
        del self._pending[:taken]
        self._committing = True
        events = [event for call_events, _ in batch for event in call_events]
        d = self._run(self._work, self._append_batch, events)
        d.addCallbacks(
            lambda stored: self._deliver(stored[0], stored[1], batch),
            lambda failure: self._fail_batch(failure, batch),
        )
        d.addBoth(self._committed)

    def _append_batch(
        self, db: Database, events: list[Event]
    ) -> tuple[list[Event | DataBuildError], int]:
        """On the log's thread: store ``events``, then read the size of the WAL (SQLite)."""
        results = append_batch(db, events)
        return results, 0 if self._checkpointer is None else self._checkpointer.wal_bytes()

    def _deliver(
        self, results: list[Event | DataBuildError], wal_bytes: int, batch: list[_Call]
    ) -> None:
        self.commits += 1
        if self._checkpointer is not None:
            self._checkpointer.committed(wal_bytes)
        start = 0
        for events, waiting in batch:
            end = start + len(events)
            waiting.callback(results[start:end])
            start = end

    def _fail_batch(self, failure: Failure, batch: list[_Call]) -> None:
        self.log.failure(
            "event log {location}: a transaction of {count} appends failed",
            failure,
            location=self.location.describe(),
            count=sum(len(events) for events, _ in batch),
        )
        error = failure.value if failure.check(LeaseLost) else StoreUnavailable(
            f"the event log at {self.location.describe()} could not store the event: "
            f"{failure.getErrorMessage()}"
        )
        # Appends queued behind the failed ones fail too: none is stored before an earlier one.
        batch, self._pending = batch + self._pending, []
        for _, waiting in batch:
            waiting.errback(Failure(error))

    def _committed(self, _: object) -> None:
        self._transactions += 1
        self._committing = False
        if self._pending and self._state != "fenced":
            self._commit_next()
            return
        drained, self._drained = self._drained, []
        for d in drained:
            d.callback(None)

    # --- reading ------------------------------------------------------------------------

    def resolve_id(self, kind: str, given: str) -> Deferred[list[str]]:
        """The ``build`` or ``task`` ids ``given`` names (itself, or those it prefixes)."""
        return self._read(queries.resolve_id, kind, given)

    def list_builds(
        self, status: object = None, limit: object = None, offset: object = None
    ) -> Deferred[dict[str, Any]]:
        """``{"builds": [...]}``, newest first; ``status`` in SPEC or short form."""
        return self._read(queries.list_builds, status, limit, offset)

    def get_build(self, build_request_id: str) -> Deferred[dict[str, Any] | None]:
        """One build with its ``tasks`` and per-build ``partitions``, or None."""
        return self._read(queries.get_build, build_request_id)

    def build_summary(self, build_request_id: str) -> Deferred[dict[str, Any] | None]:
        """One build as lists show it (no ``tasks``, no ``partitions``), or None."""
        return self._read(queries.build_summary, build_request_id)

    def build_with_retries(self, build_request_id: str) -> Deferred[dict[str, Any] | None]:
        """One build as lists show it, with ``retried_by``; or None."""
        return self._read(queries.build_with_retries, build_request_id)

    def build_jobs(self, build_request_id: str) -> Deferred[dict[str, Any] | None]:
        """The build at the job level: runs per job and status, job edges; or None."""
        return self._read(queries.build_jobs, build_request_id)

    def list_datasets(self, limit: object = None, offset: object = None
                      ) -> Deferred[dict[str, Any]]:
        """``{"datasets": [...]}``: the catalog by producing job, with status strips."""
        return self._read(queries.list_datasets, limit, offset)

    def failed_partitions(self, limit: object = None, offset: object = None
                          ) -> Deferred[dict[str, Any]]:
        """``{"partitions": [...]}``: FAILED because their run failed, newest first."""
        return self._read(queries.failed_partitions, limit, offset)

    def unfinished_builds(self) -> Deferred[list[str]]:
        """Ids of builds not in a final status, oldest first."""
        return self._read(queries.unfinished_builds)

    def builds_with_open_work(
        self, owners: list[str] | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Final builds of dead owners (or of ``owners``) that still have open job runs or
        partitions, oldest first, with the owner."""
        return self._read(queries.builds_with_open_work, owners)

    def list_partitions(
        self,
        status: object = None,
        pattern: str | None = None,
        limit: object = None,
        offset: object = None,
    ) -> Deferred[dict[str, Any]]:
        """``{"partitions": [...]}`` from the catalog, most recently changed first."""
        return self._read(queries.list_partitions, status, pattern, limit, offset)

    def get_partition(self, ref: str) -> Deferred[dict[str, Any] | None]:
        """One partition with its ``history`` and producing ``job_runs``, or None."""
        return self._read(queries.get_partition, ref)

    def partition_statuses(self, refs: Iterable[str]) -> Deferred[dict[str, PartitionStatus]]:
        """The catalog status of each of ``refs`` the log knows (unknown refs are left out)."""
        return self._read(queries.partition_statuses, list(refs))

    def partition_builders(self, refs: Iterable[str]) -> Deferred[dict[str, str]]:
        """The build that made each of ``refs`` (the log's word; unknown refs are left out)."""
        return self._read(queries.partition_builders, list(refs))

    def list_jobs(self, limit: object = None, offset: object = None) -> Deferred[dict[str, Any]]:
        """``{"jobs": [...]}``, most recently active first."""
        return self._read(queries.list_jobs, limit, offset)

    def get_job(self, job_label: str) -> Deferred[dict[str, Any] | None]:
        return self._read(queries.get_job, job_label)

    def list_tasks(
        self,
        build_request_id: str | None = None,
        job_label: str | None = None,
        status: object = None,
        limit: object = None,
        offset: object = None,
    ) -> Deferred[dict[str, Any]]:
        """``{"tasks": [...]}``, newest first."""
        return self._read(queries.list_tasks, build_request_id, job_label, status, limit, offset)

    def get_task(self, job_run_id: str) -> Deferred[dict[str, Any] | None]:
        return self._read(queries.get_task, job_run_id)

    def events(
        self,
        since: object = 0,
        limit: object = None,
        build_request_id: str | None = None,
        partition_ref: str | None = None,
        job_label: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """``{"events": [...], "next_since": N}``: events after ``since``, oldest first."""
        return self._read(
            queries.events, since, limit, build_request_id, partition_ref, job_label
        )

    def orphaned_builds(self, owners: list[str] | None = None) -> Deferred[list[dict[str, Any]]]:
        """Unfinished builds whose owner is not live (or one of ``owners``), with the owner."""
        return self._read(queries.orphaned_builds, owners)

    # --- services sharing the log (SPEC §5.8) ------------------------------------------

    def register(self, me: Identity, lease_s: float | None) -> Deferred[None]:
        """Add this service with a fresh lease; from then on every write is fenced by it."""
        return self._read(services.register, me, lease_s)

    def deregister(self, service_id: str) -> Deferred[None]:
        """Give the lease up at a clean stop."""
        return self._read(services.stop, service_id)

    def live_here(self, host: str) -> Deferred[list[dict[str, Any]]]:
        """The services on ``host`` whose lease holds."""
        return self._read(services.live_here, host)

    def take_over(self, me: str, also: list[str]) -> Deferred[list[dict[str, Any]]]:
        """Declare dead the services whose lease expired (and ``also``); their rows."""
        return self._read(services.take_over, me, also)

    def services(self) -> Deferred[list[dict[str, Any]]]:
        """Every service that opened the log, with its lease state."""
        return self._read(services.list_services)

    def live_service_ids(self) -> Deferred[set[str]]:
        return self._read(services.live_ids)

    def claim(
        self, job_run_id: str, build_request_id: str, refs: list[str], *, skip_available: bool
    ) -> Deferred[ClaimResult]:
        """Claim a run's outputs, all or none, before its exec starts (``claims.claim_many``).

        Claims asked for in one turn of the reactor, or while a batch of them is being
        claimed, go to the log together, in one transaction.
        """
        if self._state != "open":
            return self._not_open()
        waiting: Deferred[ClaimResult] = Deferred()
        request = ClaimRequest(job_run_id, build_request_id, tuple(refs), skip_available)
        self._claims.append((request, waiting))
        if not self._claiming:
            self._claiming = True
            cast(IReactorTime, self._reactor).callLater(0, self._claim_next)
        return waiting

    def _claim_next(self) -> None:
        batch = self._claims[: claims.MAX_CLAIMS]
        self._claims = self._claims[claims.MAX_CLAIMS :]
        self._claiming = True
        d = self._read(self._claim_batch, [request for request, _ in batch])

        def claimed(results: list[ClaimResult]) -> None:
            for (_, waiting), result in zip(batch, results, strict=True):
                waiting.callback(result)

        def failed(failure: Failure) -> None:
            self.log.warn(
                "event log {location}: a transaction of {count} claims failed: {error}",
                location=self.location.describe(),
                count=len(batch),
                error=failure.getErrorMessage(),
            )
            if not failure.check(EventLogError):
                failure = Failure(StoreUnavailable(
                    f"the event log at {self.location.describe()} could not store the claim: "
                    f"{failure.getErrorMessage()}"
                ))
            for _, waiting in batch:
                waiting.errback(failure)

        d.addCallbacks(claimed, failed)
        d.addBoth(self._claimed)

    def _claim_batch(self, db: Database, requests: list[ClaimRequest]) -> list[ClaimResult]:
        """On the log's thread: ``claims.claim_many``, once more on a new connection if the
        server dropped this one meanwhile. Claiming again re-reads what the first attempt
        committed, if its COMMIT went through and only the answer was lost: its rows name
        these runs, so they are granted again, never taken for another run's claims."""
        try:
            return claims.claim_many(db, requests)
        except Exception:
            if self._lost is not None or not db.lost:
                raise
        db.reconnect_if_lost()
        return claims.claim_many(db, requests)

    def _claimed(self, _: object) -> None:
        self._claiming = False
        if self._claims:
            self._claim_next()

    def run_states(self, job_run_ids: list[str]) -> Deferred[dict[str, RunState]]:
        """How each run stands, and whether its owner is live."""
        return self._read(claims.run_states, job_run_ids)


def _only(results: list[Event | DataBuildError]) -> Event:
    """The one outcome of a single append: the event stored, or its refusal raised."""
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result


def _calls_within(calls: list[_Call], room: int) -> int:
    """How many of ``calls``, from the first, hold at most ``room`` events (at least one)."""
    taken = total = 0
    for events, _ in calls:
        total += len(events)
        if taken and total > room:
            break
        taken += 1
    return taken
