"""The ``exec`` side of the job protocol (SPEC §3.2): job runs as process groups.

One Executor serves every build of the service; its slots are the one limit on parallel
exec processes. Each attempt of a run is recorded in the executor's journal in
``.databuild/running/`` while it runs, and its lines go to the run's log.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger

from databuild.executor.runlog import MAX_LINE_BYTES, RunLogWriter, run_log_path
from databuild.executor.running import RUNNING_DIR, RunningJournal, RunningRecord
from databuild.graph.workspace import STATE_DIR
from databuild.model import JobRun
from databuild.proc.process import (
    DEFAULT_GRACE_S,
    ChildProcess,
    ProcessResult,
    spawn,
)
from databuild.proc.tether import Tether

NOT_FOUND_EXIT_CODE = 127
CANNOT_RUN_EXIT_CODE = 126
"""A run whose program cannot be started ends with a shell's exit codes for the same case."""


def exec_env(
    base: Mapping[str, str],
    job_run: JobRun,
    build_request_id: str,
    workspace_root: Path,
) -> dict[str, str]:
    """The environment of a run's ``exec``: ``base``, the config's env, then DataBuild's own."""
    env = dict(base)
    env.update(job_run.config.env)
    env.update(
        DATABUILD_JOB_RUN_ID=job_run.job_run_id,
        DATABUILD_BUILD_REQUEST_ID=build_request_id,
        DATABUILD_JOB_LABEL=job_run.job_label,
        DATABUILD_OUTPUTS=json.dumps(list(job_run.outputs)),
        DATABUILD_WORKSPACE=str(workspace_root),
    )
    return env


@define(eq=False)
class RunHandle:
    """A job run handed to the Executor.

    ``started`` fires when the run got a slot and its first attempt begins; ``result`` fires
    with the ProcessResult of its last attempt and never errbacks. A run cancelled before it
    got a slot ends with ``cancelled=True`` and ``started`` never fires.
    """

    job_run_id: str
    started: Deferred[None] = field(factory=Deferred)
    result: Deferred[ProcessResult] = field(factory=Deferred)
    attempts: int = 0
    _cancelled: bool = False
    _waiting: Deferred[None] | None = None
    _child: ChildProcess | None = None

    def cancel(self) -> None:
        """Stop the run: drop it from the queue, or terminate its process group."""
        if self._cancelled or self.result.called:
            return
        self._cancelled = True
        if self._waiting is not None:
            self._waiting.cancel()
        elif self._child is not None:
            self._child.terminate()


class _Slots:
    """The parallelism limit: runs wait for a slot in the order they asked, at a constant cost
    per run however many wait (Twisted's DeferredSemaphore takes each waiter off the front of
    a list, which costs a large build time quadratic in its runs)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiting: deque[Deferred[None]] = deque()

    def acquire(self) -> Deferred[None]:
        """Fires once the caller holds a slot; cancelling it gives up the wait."""
        if self.free:
            self.free -= 1
            return succeed(None)
        wait: Deferred[None] = Deferred()
        self._waiting.append(wait)
        return wait

    def release(self) -> None:
        """Hand the slot to the oldest wait not given up, or free it."""
        while self._waiting:
            wait = self._waiting.popleft()
            if not wait.called:  # a cancelled wait has fired with CancelledError
                wait.callback(None)
                return
        self.free += 1


class Executor:
    """Runs job runs' ``exec`` entrypoints under one shared parallelism limit."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        workspace_root: Path,
        max_parallel_jobs: int,
        *,
        base_env: Mapping[str, str] | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        service_id: str = "",
        tether: Tether | None = None,
    ) -> None:
        if max_parallel_jobs < 1:
            raise ValueError(f"max_parallel_jobs must be at least 1, not {max_parallel_jobs}")
        self._reactor = reactor
        self.workspace_root = workspace_root
        self.state_dir = workspace_root / STATE_DIR
        self.running_dir = self.state_dir / RUNNING_DIR
        self.max_parallel_jobs = max_parallel_jobs
        self._slots = _Slots(max_parallel_jobs)
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._grace_s = grace_s
        self._host = socket.gethostname()
        self.service_id = service_id
        """The service whose runs these are, written in each running record."""
        self._journal = RunningJournal(self.running_dir, service_id, self._host)
        self._tether = tether
        """Where each run's process group is held, so that it dies with the service."""

    @property
    def running(self) -> int:
        """How many exec processes hold a slot now."""
        return self.max_parallel_jobs - self._slots.free

    def running_records(self) -> list[RunningRecord]:
        """The process groups of this executor's runs that have started and not ended."""
        return list(self._journal.live.values())

    def close(self) -> None:
        """Close the journal of running groups (removing it if none is left in it)."""
        try:
            self._journal.close()
        except OSError:
            self.log.failure("cannot remove the running-process journal {path}",
                             path=str(self._journal.path))

    def run(
        self,
        job_run: JobRun,
        build_request_id: str,
        argv_prefix: Sequence[str],
        timeout_s: float | None,
        *,
        retries: int = 0,
    ) -> RunHandle:
        """Queue ``job_run`` for a slot, then run ``PREFIX exec ARGS``, at most 1+retries times."""
        handle = RunHandle(job_run.job_run_id)
        ensureDeferred(
            self._run(handle, job_run, build_request_id, tuple(argv_prefix), timeout_s, retries)
        )
        return handle

    async def _run(
        self,
        handle: RunHandle,
        job_run: JobRun,
        build_request_id: str,
        argv_prefix: tuple[str, ...],
        timeout_s: float | None,
        retries: int,
    ) -> None:
        handle._waiting = self._slots.acquire()
        try:
            await handle._waiting
        except CancelledError:
            handle.result.callback(ProcessResult(exit_code=None, signal=None, cancelled=True))
            return
        finally:
            handle._waiting = None
        try:
            result = await self._attempts(
                handle, job_run, build_request_id, argv_prefix, timeout_s, retries
            )
        except Exception as e:
            # Whatever broke (a full disk, ...), the run ends and its build goes on.
            self.log.failure("job run {job_run_id} broke", job_run_id=job_run.job_run_id)
            result = ProcessResult(exit_code=None, signal=None, stderr_tail=f"databuild: {e}")
        finally:
            self._slots.release()
        handle.result.callback(result)

    async def _attempts(
        self,
        handle: RunHandle,
        job_run: JobRun,
        build_request_id: str,
        argv_prefix: tuple[str, ...],
        timeout_s: float | None,
        retries: int,
    ) -> ProcessResult:
        started_ns = time.time_ns()
        writer = RunLogWriter(
            self._reactor, run_log_path(self.state_dir, job_run.job_run_id, started_ns)  # type: ignore[arg-type]
        )
        argv = [*argv_prefix, "exec", *job_run.config.args]
        stdin = json.dumps(job_run.config.to_json()).encode()
        env = exec_env(self._base_env, job_run, build_request_id, self.workspace_root)
        handle.started.callback(None)
        try:
            while True:
                handle.attempts += 1
                result = await self._attempt(
                    handle, job_run, build_request_id, argv, stdin, env, writer, timeout_s
                )
                if result.succeeded or result.cancelled or handle.attempts > retries:
                    return result
                self.log.info(
                    "job run {job_run_id} ({job_label}) {outcome}; retry {attempt} of {retries}",
                    job_run_id=job_run.job_run_id,
                    job_label=job_run.job_label,
                    outcome=result.describe(),
                    attempt=handle.attempts,
                    retries=retries,
                )
        finally:
            writer.close()

    async def _attempt(
        self,
        handle: RunHandle,
        job_run: JobRun,
        build_request_id: str,
        argv: list[str],
        stdin: bytes,
        env: dict[str, str],
        writer: RunLogWriter,
        timeout_s: float | None,
    ) -> ProcessResult:
        try:
            child = spawn(
                self._reactor,
                argv,
                cwd=self.workspace_root,
                env=env,
                stdin=stdin,
                on_line=writer.line,
                timeout_s=timeout_s,
                grace_s=self._grace_s,
                max_line_bytes=MAX_LINE_BYTES,
            )
        except OSError as e:
            writer.line("stderr", f"databuild: could not start {argv[0]}: {e}")
            code = NOT_FOUND_EXIT_CODE if isinstance(e, FileNotFoundError) else CANNOT_RUN_EXIT_CODE
            return ProcessResult(exit_code=code, signal=None, stderr_tail=str(e))
        handle._child = child
        if self._tether is not None:
            self._tether.hold(child.pgid)
        record = RunningRecord(
            job_run_id=job_run.job_run_id,
            build_request_id=build_request_id,
            pid=child.pid,
            start_time=child.start_time or 0,
            service_id=self.service_id,
            host=self._host,
        )
        try:
            self._journal.started(record)
        except OSError:
            self.log.failure(
                "cannot record running job run {job_run_id}; a crash would leave it running",
                job_run_id=job_run.job_run_id,
            )
        if handle._cancelled:
            child.terminate()
        try:
            return await child.result
        finally:
            handle._child = None
            if self._tether is not None:
                self._tether.release(child.pgid)
            self._ended(record.job_run_id)

    def _ended(self, job_run_id: str) -> None:
        try:
            self._journal.ended(job_run_id)
        except OSError:
            self.log.failure(
                "cannot record the end of job run {job_run_id} in {path}",
                job_run_id=job_run_id,
                path=str(self._journal.path),
            )
