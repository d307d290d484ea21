"""The launcher seam: how the orchestrator hands a job run to whatever runs its ``exec``.

A launcher takes a run and gives back a :class:`RunHandle`: ``started``, ``result`` and
``cancel`` mean the same whether the run is a child process of the service
(``executor.local.LocalLauncher``) or a process on a Celery worker
(``executor.celery_launcher.CeleryLauncher``); the orchestrator cannot tell them apart. Another
kind (Kubernetes Jobs, Slurm) is one more module implementing :class:`Launcher`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import frozen
from twisted.internet.defer import Deferred

from databuild.graph.workspace import JobSpec
from databuild.model import JobRun
from databuild.proc.process import ProcessResult


class RunHandle(Protocol):
    """A run handed to a launcher.

    ``started`` fires when its first attempt begins (never, for a run cancelled before);
    ``result`` fires with the ProcessResult of its last attempt and never errbacks;
    ``attempts`` counts the attempts begun.
    """

    job_run_id: str
    started: Deferred[None]
    result: Deferred[ProcessResult]
    attempts: int

    def cancel(self) -> None:
        """Stop the run: it never starts if it has not, or its whole process group ends."""


@frozen
class AdoptedRun:
    """A run a dead service left that goes on elsewhere and is now followed by this one."""

    job_run_id: str
    build_request_id: str
    handle: RunHandle


@frozen
class Recovered:
    """What a launcher did with the runs of dead services."""

    terminated: int
    """Process groups it ended."""
    adopted: tuple[AdoptedRun, ...] = ()
    """Runs it follows to their end instead."""


class Launcher(Protocol):
    """Runs job runs' ``exec`` (SPEC §3.2), at most ``1 + job.retries`` attempts each."""

    window: int | None
    """How many runs of one build it usefully holds at once (running or queued for a slot),
    or None for no limit. A build hands it no more, so a build of 100,000 runs keeps the
    state of a started run (its claim, its handle) for a few runs only (docs/execution.md)."""

    def run(
        self, job_run: JobRun, build_request_id: str, argv_prefix: Sequence[str], job: JobSpec
    ) -> RunHandle:
        """Start (or queue) ``PREFIX exec ARGS`` for ``job_run``; its outputs are claimed."""

    def recover(self, owner_dead: Callable[[str], bool]) -> Deferred[Recovered]:
        """Deal with the runs left by the services for which ``owner_dead`` is true."""

    def kill_all(self) -> None:
        """The stop deadline passed: end every run's processes that this launcher can reach."""

    def close(self) -> None:
        """Release what the launcher holds; called once every build has ended."""
