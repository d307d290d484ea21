"""The Celery launcher: job runs on ``databuild worker`` processes over a broker (SPEC §10).

For each attempt of a run the launcher records the attempt as queued in the event log, then
publishes one message whose Celery task id is the run id (the run's claim is committed by
then: the orchestrator claims before it launches). Nothing here blocks the reactor: the log is
read and written on one thread, messages go out on another. One poll every ``poll_s`` follows
every open attempt: it fires ``started`` when a worker took one, ``result`` when its exit
status is recorded, fails one whose heartbeat is older than the lease timeout (naming its
worker), and copies the lines workers stored into this service's run logs, so that
``tasks logs --follow`` and the dashboard follow remote runs as they follow local ones.

Retries are new attempts, decided here, never by the broker. ``cancel`` sets the attempts'
cancel flag in the log (a queued attempt then never starts; a running one's worker terminates
its process group within a heartbeat) and revokes the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from databuild.bel.backend import Database, parse_uri
from databuild.bel.worker import Worker
from databuild.executor import attempts
from databuild.executor.attempts import AttemptState
from databuild.executor.celeryapp import TASK_NAME, attempt_message, make_app
from databuild.executor.launcher import AdoptedRun, Recovered
from databuild.executor.runlog import RunLogWriter, run_log_path
from databuild.graph.workspace import STATE_DIR, JobSpec
from databuild.model import JobRun
from databuild.proc.process import ProcessResult

POLL_S = 0.1


@define(eq=False)
class RemoteRun:
    """A run handed to Celery workers (a ``launcher.RunHandle``)."""

    job_run_id: str
    launcher: CeleryLauncher
    started: Deferred[None] = field(factory=Deferred)
    result: Deferred[ProcessResult] = field(factory=Deferred)
    attempts: int = 0
    cancelled: bool = False
    attempt_ended: Deferred[ProcessResult] | None = None
    """Fires when the current attempt ends (set while one is followed)."""
    writer: RunLogWriter | None = None
    last_chunk: int = 0
    """The last of its log chunks copied into ``writer``."""

    def cancel(self) -> None:
        if self.cancelled or self.result.called:
            return
        self.cancelled = True
        self.launcher.cancel(self)


class CeleryLauncher:
    """A :class:`databuild.executor.launcher.Launcher` over Celery workers."""

    log = Logger()
    window: int | None = None
    """Every run goes to the broker at once: its queue, not the service, holds them."""

    def __init__(
        self,
        reactor: Any,
        workspace_root: Path,
        event_log: str,
        broker: str,
        default_queue: str,
        service_id: str,
        lease_timeout_s: float,
        poll_s: float = POLL_S,
    ) -> None:
        self._reactor = reactor
        self._state_dir = workspace_root / STATE_DIR
        self._location = parse_uri(event_log, workspace_root)
        self._broker = broker
        self._default_queue = default_queue
        self.service_id = service_id
        self._lease_timeout_s = lease_timeout_s
        self._poll_s = poll_s
        self._db: Database | None = None
        self._db_thread = Worker(reactor, "celery-launcher-log")
        self._publisher = Worker(reactor, "celery-launcher-publish")
        self._app: Any = None
        self._followed: dict[str, RemoteRun] = {}
        self._loop: LoopingCall | None = None
        self._started = False

    # -- threads -----------------------------------------------------------------------------

    def _start_threads(self) -> None:
        if not self._started:
            self._started = True
            self._db_thread.start()
            self._publisher.start()

    def _on_log(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self._start_threads()
        return self._db_thread.run(self._with_db, fn, *args)

    def _with_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._db is None:
            db = Database(self._location)
            db.connect()
            self._db = db
        else:
            self._db.reconnect_if_lost()
        return fn(self._db, *args)

    def _send(self, run_id: str, queue: str, message: dict[str, Any]) -> None:
        if self._app is None:
            self._app = make_app(self._broker)
        self._app.send_task(TASK_NAME, kwargs=message, task_id=run_id, queue=queue)

    def _revoke(self, run_id: str) -> None:
        if self._app is not None:
            self._app.control.revoke(run_id)

    # -- the seam ----------------------------------------------------------------------------

    def run(
        self, job_run: JobRun, build_request_id: str, argv_prefix: Sequence[str], job: JobSpec
    ) -> RemoteRun:
        handle = RemoteRun(job_run.job_run_id, self)
        handle.writer = RunLogWriter(
            self._reactor, run_log_path(self._state_dir, job_run.job_run_id, time.time_ns())
        )
        d = ensureDeferred(self._run(handle, job_run, build_request_id, list(argv_prefix), job))
        d.addErrback(self._broke, handle)
        return handle

    async def _run(
        self,
        handle: RemoteRun,
        job_run: JobRun,
        build_request_id: str,
        argv_prefix: list[str],
        job: JobSpec,
    ) -> None:
        queue = job.queue or self._default_queue
        while True:
            handle.attempts += 1
            attempt = handle.attempts
            if handle.cancelled:
                self._finish(handle, ProcessResult(None, None, cancelled=True))
                return
            await self._on_log(
                attempts.publish, job_run.job_run_id, attempt, build_request_id,
                self.service_id, queue,
            )
            ended = self._follow(handle)
            message = attempt_message(
                job_run.to_json(), build_request_id, argv_prefix, job.timeout, attempt,
                self.service_id,
            )
            await self._publisher.run(self._send, job_run.job_run_id, queue, message)
            result = await ended
            if result.succeeded or result.cancelled or handle.cancelled or attempt > job.retries:
                self._finish(handle, result)
                return
            self.log.info(
                "job run {job_run_id} ({job_label}) {outcome}; retry {attempt} of {retries}",
                job_run_id=job_run.job_run_id, job_label=job_run.job_label,
                outcome=result.describe(), attempt=attempt, retries=job.retries,
            )

    def _broke(self, failure: Any, handle: RemoteRun) -> None:
        """The log or the broker failed the launch: the run ends failed, its build goes on."""
        self.log.failure("job run {job_run_id} broke", failure, job_run_id=handle.job_run_id)
        self._followed.pop(handle.job_run_id, None)
        # An attempt recorded but never published must not wait in the queue's count.
        self._on_log(attempts.cancel, handle.job_run_id).addErrback(
            lambda f: self.log.warn("could not close job run {job_run_id}'s attempt: {error}",
                                    job_run_id=handle.job_run_id, error=f.getErrorMessage())
        )
        self._finish(
            handle,
            ProcessResult(None, None, stderr_tail=f"databuild: {failure.getErrorMessage()}"),
        )

    def _finish(self, handle: RemoteRun, result: ProcessResult) -> None:
        if handle.writer is not None:
            handle.writer.close()
        if not handle.result.called:
            handle.result.callback(result)

    def _follow(self, handle: RemoteRun) -> Deferred[ProcessResult]:
        handle.attempt_ended = Deferred()
        self._followed[handle.job_run_id] = handle
        if self._loop is None:
            self._loop = LoopingCall(self._poll)
            self._loop.clock = self._reactor
            self._loop.start(self._poll_s, now=False).addErrback(
                lambda f: self.log.failure("following remote runs broke", f)
            )
        return handle.attempt_ended

    def cancel(self, handle: RemoteRun) -> None:
        d = self._on_log(attempts.cancel, handle.job_run_id)
        d.addCallback(lambda _: self._publisher.run(self._revoke, handle.job_run_id))
        d.addErrback(
            lambda f: self.log.warn(
                "could not cancel job run {job_run_id}: {error}",
                job_run_id=handle.job_run_id, error=f.getErrorMessage(),
            )
        )

    # -- following ---------------------------------------------------------------------------

    def _poll(self) -> Deferred[None] | None:
        if not self._followed:
            if self._loop is not None:
                self._loop.stop()
                self._loop = None
            return None
        keys = [(run_id, h.attempts) for run_id, h in self._followed.items()]
        logs = [(run_id, h.last_chunk) for run_id, h in self._followed.items()]
        d = self._on_log(self._read, keys, logs)
        d.addCallback(self._update)
        d.addErrback(
            lambda f: self.log.warn("could not read remote runs: {error}",
                                    error=f.getErrorMessage())
        )
        return d

    def _read(
        self, db: Database, keys: list[tuple[str, int]], logs: list[tuple[str, int]]
    ) -> tuple[dict[str, AttemptState], list[tuple[int, str, str]], set[str]]:
        found = attempts.states(db, keys, self._lease_timeout_s)
        lost = {
            state.job_run_id
            for state in found.values()
            if state.stale and attempts.lose(db, state.job_run_id, state.attempt,
                                             self._lease_timeout_s)
        }
        chunks = attempts.chunks_after(db, logs)
        return found, chunks, lost

    def _update(
        self, read: tuple[dict[str, AttemptState], list[tuple[int, str, str]], set[str]]
    ) -> None:
        found, chunks, lost = read
        for seq, run_id, lines in chunks:
            handle = self._followed.get(run_id)
            if handle is not None and handle.writer is not None and seq > handle.last_chunk:
                handle.last_chunk = seq
                handle.writer.records(lines.split("\n"))
        for run_id, state in found.items():
            handle = self._followed.get(run_id)
            if handle is None or handle.attempt_ended is None:
                continue
            if state.worker is not None and not handle.started.called:  # a worker took it
                handle.started.callback(None)
            result = state.result
            if run_id in lost:
                result = ProcessResult(
                    None, None,
                    stderr_tail=f"databuild: worker {state.worker} stopped heartbeating for "
                    f"{self._lease_timeout_s:g} s; attempt {state.attempt} is lost",
                )
                self.log.warn(
                    "job run {job_run_id} attempt {attempt} on worker {worker} is lost: "
                    "no heartbeat for {seconds:g} s",
                    job_run_id=run_id, attempt=state.attempt, worker=state.worker,
                    seconds=self._lease_timeout_s,
                )
            if result is not None:
                del self._followed[run_id]
                ended, handle.attempt_ended = handle.attempt_ended, None
                ended.callback(result)

    # -- recovery and the rest of the seam ---------------------------------------------------

    def recover(self, owner_dead: Callable[[str], bool]) -> Deferred[Recovered]:
        """Adopt the running attempts of dead services whose heartbeats are fresh; the others
        are lost, and their queued ones never start (``attempts.adopt``)."""
        return ensureDeferred(self._recover(owner_dead))

    async def _recover(self, owner_dead: Callable[[str], bool]) -> Recovered:
        adopted = await self._on_log(self._adopt, owner_dead)
        runs = []
        for run_id, attempt, build_request_id in adopted:
            handle = RemoteRun(run_id, self, attempts=attempt)
            handle.started.callback(None)
            handle.writer = RunLogWriter(
                self._reactor, run_log_path(self._state_dir, run_id, time.time_ns())
            )
            self._follow(handle).addCallback(self._adopted_ended, handle)
            runs.append(AdoptedRun(run_id, build_request_id, handle))
            self.log.info(
                "adopted job run {job_run_id} attempt {attempt} of build {build_request_id}",
                job_run_id=run_id, attempt=attempt, build_request_id=build_request_id,
            )
        return Recovered(terminated=0, adopted=tuple(runs))

    def _adopted_ended(self, result: ProcessResult, handle: RemoteRun) -> None:
        self._finish(handle, result)

    def _adopt(
        self, db: Database, owner_dead: Callable[[str], bool]
    ) -> list[tuple[str, int, str]]:
        epochs = [
            str(row[0])
            for row in db.all(
                "SELECT DISTINCT epoch FROM remote_attempts WHERE state IN (?, ?)",
                (attempts.QUEUED, attempts.RUNNING),
            )
        ]
        dead = [e for e in epochs if e != self.service_id and owner_dead(e)]
        return attempts.adopt(db, dead, self.service_id, self._lease_timeout_s)

    def kill_all(self) -> None:
        """Ask every followed run to stop; its worker ends the process group."""
        for handle in list(self._followed.values()):
            handle.cancel()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self._publisher.stop()
        self._db_thread.stop()
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- what the API and metrics read -------------------------------------------------------

    def workers(self) -> Deferred[list[dict[str, Any]]]:
        """Every worker of the log (``GET /api/v1/workers``)."""
        return self._on_log(attempts.workers, self._lease_timeout_s)

    def worker_of(self, job_run_id: str) -> Deferred[str | None]:
        """The worker of the run's last attempt (None before a worker took one)."""
        return self._on_log(attempts.worker_of, job_run_id)

    def queue_depth(self) -> Deferred[dict[str, int]]:
        """Attempts waiting for a worker, by queue."""
        return self._on_log(attempts.queued)
