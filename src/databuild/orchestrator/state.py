"""The in-memory state of live builds: their runs, partitions and the refs they hold."""

from __future__ import annotations

import enum
from collections import defaultdict, deque

from attrs import define, field, frozen
from twisted.internet.defer import Deferred

from databuild.bel.status import PartitionStatus
from databuild.executor.runner import RunHandle
from databuild.model import JobRun


class TaskState(enum.Enum):
    """Where a task of a live build stands."""

    PENDING = "pending"
    """Waiting for its inputs (or for its command to be resolved)."""
    STARTED = "started"
    """Handed to the executor: queued for a slot, or running."""
    DONE = "done"
    """Final: completed, failed, cancelled or skipped."""


@frozen
class Outcome:
    """How a partition ended within the build producing it."""

    status: PartitionStatus
    message: str
    build_request_id: str


@define(eq=False)
class Task:
    """A job run of a live build."""

    job_run: JobRun
    state: TaskState = TaskState.PENDING
    waiting_on: set[str] = field(factory=set)
    handle: RunHandle | None = None
    cancel_message: str = ""
    done: Deferred[None] = field(factory=Deferred)

    @property
    def job_run_id(self) -> str:
        return self.job_run.job_run_id


@define(eq=False)
class Ref:
    """What this service knows of a ref that live builds hold.

    While a live build holds a ref, this record, not the log, is the truth about it: the log
    may not have stored the latest events yet, and live builds' REQUESTED, SCHEDULED and
    DELEGATED events hide its real status in the catalog. Once no live build holds it, every
    event about it is stored and the log is the truth again.
    """

    holders: set[str] = field(factory=set)
    """Ids of the live builds holding the ref."""
    available: bool | None = None
    """Whether its data is AVAILABLE; None until learned from the log."""
    built_by: str = ""
    """The build whose run made it AVAILABLE, once known."""
    producer: str | None = None
    """The live build producing it now: its claim."""
    waiters: list[Deferred[Outcome]] = field(factory=list)
    """Builds waiting for the producer's outcome."""

    def wait(self) -> Deferred[Outcome]:
        """Fires with the producer's outcome once it settles."""
        d: Deferred[Outcome] = Deferred()
        self.waiters.append(d)
        return d

    def settle(self, outcome: Outcome) -> None:
        """The producer is done: drop its claim and tell the waiters how it went."""
        self.producer = None
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(outcome)


@define(eq=False)
class Build:
    """A live build request."""

    build_request_id: str
    requested: tuple[str, ...]
    force: bool
    tasks: dict[str, Task] = field(factory=dict)
    partitions: dict[str, PartitionStatus] = field(factory=dict)
    """The latest status this build recorded for each ref."""
    held: set[str] = field(factory=set)
    """The refs this build holds (see Ref): those it requested and its graph's outputs."""
    root_causes: dict[str, str] = field(factory=dict)
    """For a FAILED ref, the first failure that caused it, for downstream messages."""
    dependents: defaultdict[str, list[Task]] = field(factory=lambda: defaultdict(list))
    ready: deque[Task] = field(factory=deque)
    open: int = 0
    """Own runs not yet final plus delegated refs not yet settled."""
    prefixes: dict[str, tuple[str, ...]] | None = None
    analysis: Deferred[object] | None = None
    executing: bool = False
    cancelled: bool = False
    message: str = ""
    settled: Deferred[None] = field(factory=Deferred)
    done: Deferred[None] = field(factory=Deferred)
    """Fires once the build's final status is recorded."""

    def is_final(self, ref: str) -> bool:
        """Whether this build recorded a final status for ``ref``."""
        status = self.partitions.get(ref)
        return status is not None and status.final

    def check_settled(self) -> None:
        """Fire ``settled`` once the build executes and nothing of it is open any more."""
        if self.executing and self.open == 0 and not self.settled.called:
            self.settled.callback(None)
