"""The status policy: what a run, its outputs and its build become when something happens.

``bel/transitions.py`` says which next status is *legal*; this table says which one is
*chosen*. A build's course from its receipt to its end (``course.py``), execution,
cancellation, failure propagation, crash recovery and the handling of an event-log outage all
ask it, and nothing else decides a status.

Each ``Happening`` maps to a ``Next``: the status of the run it concerns (if any), the status
of that run's outputs or of the refs it concerns (if any; ``via``, a status they pass through
first), the build's status while it goes on (``progress``), and the final status of the build
when the happening ends the build (None: the build goes on, and ends COMPLETED if every
requested ref is AVAILABLE, else FAILED).

One rule lives beside the event log instead, because the log's writer applies it to every
event it stores: which partition events change a ref's *catalog* status (the state of its
data) — ``databuild.bel.catalog.changes_data``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from attrs import frozen

from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.proc.process import ProcessResult

B, J, P = BuildStatus, JobStatus, PartitionStatus


class Happening(enum.Enum):
    """Something that moves a run, a partition or a build on."""

    BUILD_RECEIVED = "a build request was received"
    PLANNING_BEGAN = "the build's analysis began"
    GRAPH_ANALYZED = "the build's job graph is known"
    EXECUTION_BEGAN = "the build's runs were decided and scheduled"
    RUN_SCHEDULED = "a run of the build's graph was planned"
    RUN_STARTED = "a run got its slot and started"
    RUN_SUCCEEDED = "a run exited 0"
    RUN_FAILED = "a run exited non-zero or was killed by a signal"
    RUN_TIMED_OUT = "a run outlived its job's timeout"
    RUN_CANCELLED = "a run was cancelled"
    ALREADY_AVAILABLE = "a run's outputs were AVAILABLE already"
    AVAILABILITY_LOST = "a ref AVAILABLE when analysed was not when planned, and was kept"
    DELEGATED = "a run's outputs are being built by another build"
    DELEGATION_SUCCEEDED = "the build producing a delegated ref made it AVAILABLE"
    DELEGATION_FAILED = "the build producing a delegated ref did not make it"
    UPSTREAM_FAILED = "an input of a pending run failed"
    BUILD_CANCELLED = "the build was cancelled (by request, or the service stops)"
    ANALYSIS_FAILED = "the build's analysis failed"
    INTERNAL_ERROR = "an unexpected exception broke the build"
    STORE_OUTAGE = "the event log could not store events for too long"
    CRASH_RECOVERY = "the service that ran the build stopped before it finished"


@frozen
class Next:
    """What a happening makes of the things it concerns."""

    run: JobStatus | None
    outputs: PartitionStatus | None
    build: BuildStatus | None = None
    progress: BuildStatus | None = None
    via: PartitionStatus | None = None


POLICY: Mapping[Happening, Next] = {
    # The requested refs become REQUESTED.
    Happening.BUILD_RECEIVED: Next(None, P.PARTITION_REQUESTED, progress=B.BUILD_REQUEST_RECEIVED),
    Happening.PLANNING_BEGAN: Next(None, None, progress=B.BUILD_REQUEST_PLANNING),
    Happening.GRAPH_ANALYZED: Next(None, None, progress=B.BUILD_REQUEST_ANALYSIS_COMPLETED),
    Happening.EXECUTION_BEGAN: Next(None, None, progress=B.BUILD_REQUEST_EXECUTING),
    Happening.RUN_SCHEDULED: Next(J.JOB_SCHEDULED, P.PARTITION_SCHEDULED),
    Happening.RUN_STARTED: Next(J.JOB_RUNNING, P.PARTITION_BUILDING),
    Happening.RUN_SUCCEEDED: Next(J.JOB_COMPLETED, P.PARTITION_AVAILABLE),
    Happening.RUN_FAILED: Next(J.JOB_FAILED, P.PARTITION_FAILED),
    Happening.RUN_TIMED_OUT: Next(J.JOB_FAILED, P.PARTITION_FAILED),
    Happening.RUN_CANCELLED: Next(J.JOB_CANCELLED, P.PARTITION_FAILED),
    # SPEC §4.2 has no way from SCHEDULED to AVAILABLE but through DELEGATED.
    Happening.ALREADY_AVAILABLE: Next(
        J.JOB_SKIPPED, P.PARTITION_AVAILABLE, via=P.PARTITION_DELEGATED
    ),
    Happening.AVAILABILITY_LOST: Next(J.JOB_SKIPPED, P.PARTITION_FAILED),
    Happening.DELEGATED: Next(J.JOB_SKIPPED, P.PARTITION_DELEGATED),
    Happening.DELEGATION_SUCCEEDED: Next(None, P.PARTITION_AVAILABLE),
    Happening.DELEGATION_FAILED: Next(None, P.PARTITION_FAILED),
    Happening.UPSTREAM_FAILED: Next(J.JOB_FAILED, P.PARTITION_FAILED),
    Happening.BUILD_CANCELLED: Next(J.JOB_CANCELLED, P.PARTITION_FAILED, B.BUILD_REQUEST_CANCELLED),
    Happening.ANALYSIS_FAILED: Next(None, P.PARTITION_FAILED, B.BUILD_REQUEST_FAILED),
    Happening.INTERNAL_ERROR: Next(J.JOB_FAILED, P.PARTITION_FAILED, B.BUILD_REQUEST_FAILED),
    Happening.STORE_OUTAGE: Next(J.JOB_FAILED, P.PARTITION_FAILED, B.BUILD_REQUEST_FAILED),
    Happening.CRASH_RECOVERY: Next(J.JOB_FAILED, P.PARTITION_FAILED, B.BUILD_REQUEST_FAILED),
}

def run_ended(result: ProcessResult) -> Happening:
    """How a run that the executor gave back ended."""
    if result.succeeded:
        return Happening.RUN_SUCCEEDED
    if result.cancelled:
        return Happening.RUN_CANCELLED
    if result.timed_out:
        return Happening.RUN_TIMED_OUT
    return Happening.RUN_FAILED


def delegation_settled(outcome: PartitionStatus) -> Happening:
    """How a ref this build waited for ended in the build producing it."""
    if outcome is P.PARTITION_AVAILABLE:
        return Happening.DELEGATION_SUCCEEDED
    return Happening.DELEGATION_FAILED


def downstream_of_failure(ended_by: Happening | None) -> Happening:
    """What ends a pending run whose input failed: the build's own end, if it is ending."""
    if ended_by is not None and POLICY[ended_by].run is not None:
        return ended_by
    return Happening.UPSTREAM_FAILED


def progress(happening: Happening) -> BuildStatus:
    """The status of a build that goes on after ``happening``."""
    status = POLICY[happening].progress
    assert status is not None, f"{happening} does not move a build on"
    return status


def build_end(
    ended_by: Happening | None, requested: Mapping[str, PartitionStatus | None]
) -> BuildStatus:
    """A build's final status: the one its ending happening forces, else what its requested
    refs became (COMPLETED only if every one is AVAILABLE)."""
    if ended_by is not None and (forced := POLICY[ended_by].build) is not None:
        return forced
    if all(status is P.PARTITION_AVAILABLE for status in requested.values()):
        return B.BUILD_REQUEST_COMPLETED
    return B.BUILD_REQUEST_FAILED
