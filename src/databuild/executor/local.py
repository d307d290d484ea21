"""The local launcher: job runs as child process groups of the service (``runner.Executor``)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from databuild.executor.launcher import Recovered
from databuild.executor.runner import Executor, RunHandle
from databuild.executor.running import reap_orphans
from databuild.graph.workspace import JobSpec
from databuild.model import JobRun
from databuild.proc.info import start_ticks
from databuild.proc.process import kill_group

WINDOW_PER_SLOT, WINDOW_LEAST = 4, 32
"""A build hands the executor at most this many runs per slot, and at least the second."""


class LocalLauncher:
    """A :class:`databuild.executor.launcher.Launcher` over the service's own Executor."""

    def __init__(self, reactor: IReactorTime, executor: Executor) -> None:
        self._reactor = reactor
        self.executor = executor
        # Enough queued behind the slots that none waits while a build's next runs are
        # claimed (a claim waits for the log's next transaction).
        self.window: int | None = max(WINDOW_PER_SLOT * executor.max_parallel_jobs, WINDOW_LEAST)

    def run(
        self, job_run: JobRun, build_request_id: str, argv_prefix: Sequence[str], job: JobSpec
    ) -> RunHandle:
        return self.executor.run(
            job_run, build_request_id, argv_prefix, job.timeout, retries=job.retries
        )

    def recover(self, owner_dead: Callable[[str], bool]) -> Deferred[Recovered]:
        """Terminate this host's process groups of dead services (SPEC §5.3)."""
        return ensureDeferred(self._recover(owner_dead))

    async def _recover(self, owner_dead: Callable[[str], bool]) -> Recovered:
        reaped = await reap_orphans(self._reactor, self.executor.running_dir, owner_dead)
        return Recovered(terminated=len(reaped))

    def kill_all(self) -> None:
        for record in self.executor.running_records():
            # The start time tells a live run's leader from a process that reused its pid.
            if start_ticks(record.pid) == record.start_time:
                kill_group(record.pid, signal.SIGKILL)

    def close(self) -> None:
        self.executor.close()
