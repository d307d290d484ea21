"""The in-memory state of live builds: their runs and partitions."""

from __future__ import annotations

import enum
from collections import defaultdict, deque

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed

from databuild.bel.claims import RunState
from databuild.bel.status import BuildStatus, PartitionStatus
from databuild.executor.launcher import RunHandle
from databuild.graph.workspace import Workspace
from databuild.model import JobGraph, JobRun
from databuild.orchestrator.policy import Happening


class TaskState(enum.Enum):
    """Where a task of a live build stands."""

    PENDING = "pending"
    """Waiting for its inputs (or for its command to be resolved)."""
    STARTED = "started"
    """Handed to the launcher: queued for a slot, or running."""
    DONE = "done"
    """Final: completed, failed, cancelled or skipped."""


@frozen
class Outcome:
    """How a partition ended within the build producing it."""

    status: PartitionStatus
    message: str
    build_request_id: str

    @classmethod
    def failed(cls, build_request_id: str, message: str) -> Outcome:
        return cls(PartitionStatus.PARTITION_FAILED, message, build_request_id)


@define(eq=False)
class Task:
    """A job run of a live build."""

    job_run: JobRun
    state: TaskState = TaskState.PENDING
    waiting_on: set[str] | None = None
    """The inputs it still waits for; None if none (a build of 100,000 runs that wait for
    nothing keeps no empty set per run)."""
    handle: RunHandle | None = None
    stopped_by: Happening | None = None
    """Why this service terminated the run, if it did."""
    stop_message: str = ""
    awaiting: Deferred[dict[str, RunState]] | None = None
    """While STARTED without a handle: waiting for other services' runs that claimed its
    outputs (cancelling it stops the run)."""
    after: int = 0
    """Once ready: the recorder's position (``Recorder.last``) when it became ready."""
    _waiters: list[Deferred[None]] | None = None

    @property
    def job_run_id(self) -> str:
        return self.job_run.job_run_id

    def finish(self) -> None:
        """The task is DONE: tell whoever waits for it, and let go of its run's handle (with
        its two fired Deferreds and their callbacks' closures, about 360 bytes a run, which
        a build kept to its end)."""
        self.state = TaskState.DONE
        self.handle = None
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            if not waiter.called:  # a waiter may have been cancelled
                waiter.callback(None)

    def when_done(self) -> Deferred[None]:
        """Fires once the task is DONE (cancelling it leaves the task alone)."""
        if self.state is TaskState.DONE and self._waiters is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter


@define(eq=False)
class Build:
    """A live build request."""

    build_request_id: str
    requested: tuple[str, ...]
    force: bool
    workspace: Workspace
    """The graph this build is planned and run with, whatever the file says later."""
    requested_keys: dict[str, None] = field(init=False)
    """``requested`` for lookups: a large forced build asks of each run's outputs. (Refs are
    kept as dict keys, here and wherever a build keeps thousands: a dict of 5,000 strings
    takes a fifth of a set's memory.)"""
    tasks: dict[str, Task] = field(factory=dict)
    partitions: dict[str, PartitionStatus] = field(factory=dict)
    """The latest status this build recorded for each ref."""
    root_causes: dict[str, str] = field(factory=dict)
    """For a FAILED ref, the first failure that caused it, for downstream messages."""
    dependents: defaultdict[str, list[Task]] = field(factory=lambda: defaultdict(list))
    ready: deque[Task] = field(factory=deque)
    started: int = 0
    """Runs handed to the launcher (claiming, queued or running) and not yet ended."""
    open: int = 0
    """Own runs not yet final plus delegated refs not yet settled."""
    prefixes: dict[str, tuple[str, ...]] | None = None
    resolved: dict[str, tuple[str, ...]] = field(factory=dict)
    """Commands resolved by the build's analysis, by job label: its runs use them as they are
    (a Bazel target is built once per build, within the analysis, which a cancellation stops)."""
    analysis: Deferred[JobGraph] | None = None
    executing: bool = False
    ended_by: Happening | None = None
    """What ends the build before its runs are done: cancellation, a failed analysis..."""
    message: str = ""
    final_status: BuildStatus | None = None
    """The status its course ended with, once it ended."""
    settled: Deferred[None] = field(factory=Deferred)
    done: Deferred[None] = field(factory=Deferred)
    """Fires once the build's final status is recorded."""

    @requested_keys.default
    def _requested_keys(self) -> dict[str, None]:
        return dict.fromkeys(self.requested)

    def forces(self, run: JobRun) -> bool:
        """Whether ``force`` applies to ``run``: the build is forced and the run outputs a
        requested ref."""
        return self.force and any(ref in self.requested_keys for ref in run.outputs)

    @property
    def ending(self) -> bool:
        """Whether the build is ending early: it starts nothing new."""
        return self.ended_by is not None

    def is_final(self, ref: str) -> bool:
        """Whether this build recorded a final status for ``ref``."""
        status = self.partitions.get(ref)
        return status is not None and status.final

    def check_settled(self) -> None:
        """Fire ``settled`` once the build executes and nothing of it is open any more."""
        if self.executing and self.open == 0 and not self.settled.called:
            self.settled.callback(None)
