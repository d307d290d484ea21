"""The legal next states of build requests, job runs and partitions (SPEC §4.2), in one table.

``None`` stands for "nothing recorded yet". Where SPEC §4.2 is too narrow for SPEC §3.5 and
§5.3 this table is wider; docs/event-log.md lists those additions:

- a build request may fail from any non-final state (crash recovery fails builds that were
  still RECEIVED or ANALYSIS_COMPLETED when the service died);
- a scheduled job run may fail (its upstream failed, or the service died before it ran);
- within a build, a partition's first event may be SCHEDULED (an upstream partition that
  analysis added was never requested).

A partition that is already AVAILABLE goes SCHEDULED → DELEGATED → AVAILABLE: the build that
made it is the one relied on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.errors import DataBuildError

B, J, P = BuildStatus, JobStatus, PartitionStatus

_S = TypeVar("_S", bound=BuildStatus | JobStatus | PartitionStatus)


class IllegalTransition(DataBuildError):
    """An event whose status is not a legal next state; the log refused it."""

    code = "illegal_transition"


def _table(
    explicit: Mapping[_S | None, frozenset[_S]], every_non_final: frozenset[_S], kind: Iterable[_S]
) -> Mapping[_S | None, frozenset[_S]]:
    """``explicit`` plus, from every non-final state, ``every_non_final``."""
    table: dict[_S | None, frozenset[_S]] = {}
    for state in (None, *kind):
        if state is not None and state.final:
            table[state] = frozenset()
        else:
            extra = every_non_final if state is not None else frozenset()
            table[state] = explicit.get(state, frozenset()) | extra
    return table


BUILD_TRANSITIONS = _table(
    {
        None: frozenset({B.BUILD_REQUEST_RECEIVED}),
        B.BUILD_REQUEST_RECEIVED: frozenset({B.BUILD_REQUEST_PLANNING}),
        B.BUILD_REQUEST_PLANNING: frozenset({B.BUILD_REQUEST_ANALYSIS_COMPLETED}),
        B.BUILD_REQUEST_ANALYSIS_COMPLETED: frozenset({B.BUILD_REQUEST_EXECUTING}),
        B.BUILD_REQUEST_EXECUTING: frozenset({B.BUILD_REQUEST_COMPLETED}),
    },
    frozenset({B.BUILD_REQUEST_FAILED, B.BUILD_REQUEST_CANCELLED}),
    BuildStatus,
)

JOB_TRANSITIONS = _table(
    {
        None: frozenset({J.JOB_SCHEDULED}),
        J.JOB_SCHEDULED: frozenset({J.JOB_RUNNING, J.JOB_CANCELLED, J.JOB_SKIPPED, J.JOB_FAILED}),
        J.JOB_RUNNING: frozenset({J.JOB_COMPLETED, J.JOB_FAILED, J.JOB_CANCELLED}),
    },
    frozenset(),
    JobStatus,
)

PARTITION_TRANSITIONS = _table(
    {
        None: frozenset({P.PARTITION_REQUESTED, P.PARTITION_SCHEDULED}),
        P.PARTITION_REQUESTED: frozenset({P.PARTITION_SCHEDULED, P.PARTITION_DELEGATED}),
        P.PARTITION_SCHEDULED: frozenset({P.PARTITION_BUILDING, P.PARTITION_DELEGATED}),
        P.PARTITION_BUILDING: frozenset({P.PARTITION_AVAILABLE}),
        P.PARTITION_DELEGATED: frozenset({P.PARTITION_AVAILABLE}),
    },
    frozenset({P.PARTITION_FAILED}),
    PartitionStatus,
)

_TABLES: Mapping[type, Mapping] = {
    BuildStatus: BUILD_TRANSITIONS,
    JobStatus: JOB_TRANSITIONS,
    PartitionStatus: PARTITION_TRANSITIONS,
}


def legal(current: _S | None, new: _S) -> bool:
    """Whether ``new`` may follow ``current``."""
    return new in _TABLES[type(new)][current]


def illegal(current: _S | None, new: _S, subject: str) -> IllegalTransition:
    """The refusal of ``new`` after ``current`` for ``subject``."""
    was = "nothing" if current is None else current.value
    return IllegalTransition(f"{subject}: {new.value} may not follow {was}")


def check_transition(current: _S | None, new: _S, subject: str) -> None:
    """Raise IllegalTransition unless ``new`` may follow ``current`` for ``subject``."""
    if not legal(current, new):
        raise illegal(current, new, subject)
