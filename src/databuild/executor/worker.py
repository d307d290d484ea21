"""``databuild worker``: a Celery worker that runs job runs' ``exec`` on its host (SPEC §10).

One process: Celery's consumer in the main thread, one Celery thread per slot running
:meth:`AttemptRunner.run`, and a Twisted reactor in a thread of its own that starts each exec
with the service's own process-group spawning (``databuild.proc.process.spawn``) and holds the
groups in a tether, so that they die with the worker, kill -9 included. The task body talks to
the event log with blocking calls: this process is not the reactor's.

A task body takes its attempt in the log with a compare-and-set before it starts anything (a
second delivery of the message finds it taken and returns), then, every ``BEAT_S`` seconds,
stores the lines printed since, renews the attempt's heartbeat and reads whether a cancel is
asked. A cancel, a lost attempt (the service declared its heartbeat stale) or a log
unreachable for the lease timeout terminates the run's whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import process
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from databuild.bel.backend import Database, EventLogError, parse_uri
from databuild.bel.schema import create_or_upgrade
from databuild.executor import attempts
from databuild.executor.celeryapp import TASK_NAME, make_app
from databuild.executor.runlog import MAX_LINE_BYTES, log_record
from databuild.executor.runner import CANNOT_RUN_EXIT_CODE, NOT_FOUND_EXIT_CODE, exec_env
from databuild.model import JobRun
from databuild.proc.process import DEFAULT_GRACE_S, ChildProcess, ProcessResult, spawn
from databuild.proc.tether import Tether

BEAT_S = 0.5
"""Between two heartbeats of a running attempt (each also stores its new lines and reads
the cancel flag, so a cancel reaches the process within about this long)."""
WORKER_BEAT_S = 2.0
REAP_S = 0.02
ENV_WORKER = "DATABUILD_WORKER"
USAGE_EXIT_CODE = 2
"""A bad setting, as the CLI's usage errors (docs/cli.md)."""

log = Logger()


class AttemptRunner:
    """Runs attempts for one worker; ``run`` is the Celery task's body."""

    def __init__(
        self,
        reactor: Any,
        workspace: Path,
        event_log: str,
        name: str,
        tether: Tether,
        lease_timeout_s: float,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self._reactor = reactor
        self._workspace = workspace
        self._location = parse_uri(event_log, workspace)
        self.name = name
        self._tether = tether
        self._lease_timeout_s = lease_timeout_s
        self._grace_s = grace_s
        self._base_env = dict(os.environ)

    def connect(self) -> Database:
        db = Database(self._location)
        db.connect()
        return db

    def run(
        self,
        job_run: dict[str, Any],
        build_request_id: str,
        argv_prefix: Sequence[str],
        timeout_s: float | None,
        attempt: int,
        epoch: str,
    ) -> None:
        """Take the attempt, run it to its end and record how it ended."""
        run = JobRun.from_json(job_run)
        db = self.connect()
        try:
            if not attempts.take(db, run.job_run_id, attempt, epoch, self.name):
                log.info(
                    "job run {job_run_id} attempt {attempt}: taken or cancelled already; "
                    "not run again",
                    job_run_id=run.job_run_id,
                    attempt=attempt,
                )
                return
            result = self._attempt(db, run, build_request_id, argv_prefix, timeout_s, attempt)
            attempts.end(db, run.job_run_id, attempt, result)
        finally:
            db.close()

    def _attempt(
        self,
        db: Database,
        run: JobRun,
        build_request_id: str,
        argv_prefix: Sequence[str],
        timeout_s: float | None,
        attempt: int,
    ) -> ProcessResult:
        lines: deque[str] = deque()
        ended = threading.Event()
        outcome: list[ProcessResult] = []
        env = exec_env(self._base_env, run, build_request_id, self._workspace)
        env[ENV_WORKER] = self.name

        def on_line(stream: str, text: str, continued: bool = False) -> None:
            record = log_record(stream, text, time.time_ns(), continued=continued)
            lines.append(json.dumps(record, ensure_ascii=False))

        def start() -> ChildProcess:
            child = spawn(
                self._reactor,
                [*argv_prefix, "exec", *run.config.args],
                cwd=self._workspace,
                env=env,
                stdin=json.dumps(run.config.to_json()).encode(),
                on_line=on_line,
                timeout_s=timeout_s,
                grace_s=self._grace_s,
                max_line_bytes=MAX_LINE_BYTES,
            )
            self._tether.hold(child.pgid)

            def done(result: ProcessResult) -> None:
                self._tether.release(child.pgid)
                outcome.append(result)
                ended.set()

            child.result.addCallback(done)
            return child

        try:
            child: ChildProcess = blockingCallFromThread(self._reactor, start)
        except OSError as e:
            on_line("stderr", f"databuild: could not start {argv_prefix[0]}: {e}")
            attempts.heartbeat(db, run.job_run_id, attempt, None, _drain(lines))
            code = NOT_FOUND_EXIT_CODE if isinstance(e, FileNotFoundError) else CANNOT_RUN_EXIT_CODE
            return ProcessResult(exit_code=code, signal=None, stderr_tail=str(e))
        log.info(
            "job run {job_run_id} ({job_label}) attempt {attempt} started: pid {pid}",
            job_run_id=run.job_run_id, job_label=run.job_label, attempt=attempt, pid=child.pid,
        )
        unreachable_since: float | None = None
        stop_why: str | None = None
        terminating = False
        pid: int | None = child.pid
        while True:
            finished = ended.wait(BEAT_S)
            pending = _drain(lines)
            try:
                cancel = attempts.heartbeat(db, run.job_run_id, attempt, pid, pending)
            except Exception as e:
                lines.extendleft(reversed(pending))  # kept for the next heartbeat
                unreachable_since = unreachable_since or time.monotonic()
                log.warn("job run {job_run_id}: cannot reach the event log: {error}",
                         job_run_id=run.job_run_id, error=str(e))
                _reconnect(db)
                if time.monotonic() - unreachable_since >= self._lease_timeout_s:
                    # Unfenced now: the service fails it, and it may run elsewhere.
                    stop_why = stop_why or "the event log is out of reach"
            else:
                pid, unreachable_since = None, None
                if cancel is None:
                    stop_why = stop_why or "the attempt is no longer this worker's"
                elif cancel:
                    stop_why = stop_why or "cancel asked"
            if finished:
                return outcome[0]
            if stop_why is not None and not terminating:
                terminating = True
                log.info(
                    "job run {job_run_id} attempt {attempt}: {why}; terminating its group",
                    job_run_id=run.job_run_id, attempt=attempt, why=stop_why,
                )
                self._reactor.callFromThread(child.terminate)


def _drain(lines: deque[str]) -> list[str]:
    taken = []
    while lines:
        taken.append(lines.popleft())
    return taken


def _reconnect(db: Database) -> None:
    try:
        db.close()
        db.connect()
    except Exception as e:
        log.warn("cannot reconnect to the event log: {error}", error=str(e))


class WorkerBeat:
    """Registers the worker in the log and renews its heartbeat on a thread of its own."""

    def __init__(self, runner: AttemptRunner, queues: Sequence[str], concurrency: int) -> None:
        self._runner = runner
        self._queues = list(queues)
        self._concurrency = concurrency
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="worker-heartbeat", daemon=True)

    def start(self) -> None:
        db = self._runner.connect()
        try:
            create_or_upgrade(db)  # a worker may start before any service has opened the log
            attempts.worker_started(
                db, self._runner.name, socket.gethostname(), os.getpid(), self._queues,
                self._concurrency,
            )
        finally:
            db.close()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        db = self._runner.connect()
        try:
            attempts.worker_stopped(db, self._runner.name)
        finally:
            db.close()

    def _beat(self) -> None:
        db = self._runner.connect()
        while not self._stop.wait(WORKER_BEAT_S):
            try:
                attempts.worker_heartbeat(db, self._runner.name)
            except Exception as e:
                log.warn("worker heartbeat failed: {error}", error=str(e))
                _reconnect(db)
        db.close()


def serve(
    workspace: Path,
    broker: str,
    event_log: str,
    queues: Sequence[str],
    concurrency: int,
    name: str,
    lease_timeout_s: float,
) -> None:
    """Run the worker until it is stopped (SIGTERM, SIGINT)."""
    from twisted.internet import reactor as installed

    reactor: Any = installed
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    # The reactor runs in a thread, where it cannot install its SIGCHLD handler; Python runs
    # the main thread's handlers only when Celery's loop wakes up, which may be a second
    # later: so the reactor also looks for ended children every REAP_S.
    signal.signal(
        signal.SIGCHLD, lambda *_: reactor.callFromThread(process.reapAllProcesses)
    )
    reaper = LoopingCall(process.reapAllProcesses)
    reaper.clock = reactor
    reactor.callWhenRunning(reaper.start, REAP_S)
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, name="reactor",
        daemon=True,
    )
    thread.start()
    tether = Tether(reactor)
    blockingCallFromThread(reactor, tether.startService)
    runner = AttemptRunner(reactor, workspace, event_log, name, tether, lease_timeout_s)
    beat = WorkerBeat(runner, queues, concurrency)
    beat.start()
    app = make_app(broker)

    @app.task(name=TASK_NAME, ignore_result=True, acks_late=False)
    def run_attempt(**kwargs: Any) -> None:
        runner.run(**kwargs)

    try:
        worker = app.Worker(
            hostname=f"databuild@{name}",
            pool="threads",
            concurrency=concurrency,
            queues=list(queues),
            without_gossip=True,
            without_mingle=True,
            loglevel="INFO",
            quiet=True,
        )
        worker.start()
    finally:
        beat.stop()
        blockingCallFromThread(reactor, tether.stopService)
        reactor.callFromThread(reactor.stop)
        thread.join(timeout=5)


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``databuild worker`` after the CLI handed over (``databuild.cli.worker``): ``argv`` is
    one JSON document of its options. Checks the settings (a bad one: one sentence on stderr,
    exit 2), then runs the worker until it is stopped."""
    from databuild.errors import GraphFileError
    from databuild.graph import load_workspace
    from databuild.service.settings import DEFAULT_BROKER, DEFAULT_QUEUE, ENV_BROKER
    from databuild.startup import ENV_EVENT_LOG

    options = json.loads(argv[0])
    root = Path(options["workspace"])
    try:
        workspace = load_workspace(root)
        event_log = (
            options["event_log"] or environ.get(ENV_EVENT_LOG) or workspace.service.event_log
        )
        if not event_log or parse_uri(event_log, root).dialect != "postgresql":
            raise ValueError(
                "a worker needs the PostgreSQL event log its services use: give --event-log "
                f"postgresql://... (or ${ENV_EVENT_LOG}, [service] event_log)"
            )
    except (GraphFileError, EventLogError, ValueError) as e:
        sys.stderr.write(f"databuild: {e}\n")
        return USAGE_EXIT_CODE
    serve(
        workspace=root,
        broker=options["broker"] or environ.get(ENV_BROKER) or workspace.executor.broker
        or DEFAULT_BROKER,
        event_log=event_log,
        queues=options["queues"] or [workspace.executor.queue or DEFAULT_QUEUE],
        concurrency=options["concurrency"] or os.cpu_count() or 1,
        name=options["name"] or socket.gethostname(),
        lease_timeout_s=options["lease_timeout_s"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
