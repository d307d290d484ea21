"""Every legal and every illegal next state, as the log accepts or refuses them (SPEC §4.2)."""

from __future__ import annotations

from itertools import product

import pytest
import pytest_twisted

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    Event,
    EventLog,
    IllegalTransition,
    JobEvent,
    JobStatus,
    PartitionEvent,
    PartitionStatus,
)
from databuild.bel.transitions import check_transition
from databuild.errors import DataBuildError
from databuild.ids import new_id

from .conftest import Recorder

B, J, P = BuildStatus, JobStatus, PartitionStatus

# Written out from SPEC §4.2 (plus the additions docs/event-log.md lists), independently of
# databuild.bel.transitions, so a slip in the table shows up here.
LEGAL_BUILD = {
    None: {B.BUILD_REQUEST_RECEIVED},
    B.BUILD_REQUEST_RECEIVED: {
        B.BUILD_REQUEST_PLANNING, B.BUILD_REQUEST_CANCELLED, B.BUILD_REQUEST_FAILED,
    },
    B.BUILD_REQUEST_PLANNING: {
        B.BUILD_REQUEST_ANALYSIS_COMPLETED, B.BUILD_REQUEST_FAILED, B.BUILD_REQUEST_CANCELLED,
    },
    B.BUILD_REQUEST_ANALYSIS_COMPLETED: {
        B.BUILD_REQUEST_EXECUTING, B.BUILD_REQUEST_CANCELLED, B.BUILD_REQUEST_FAILED,
    },
    B.BUILD_REQUEST_EXECUTING: {
        B.BUILD_REQUEST_COMPLETED, B.BUILD_REQUEST_FAILED, B.BUILD_REQUEST_CANCELLED,
    },
    B.BUILD_REQUEST_COMPLETED: set(),
    B.BUILD_REQUEST_FAILED: set(),
    B.BUILD_REQUEST_CANCELLED: set(),
}
LEGAL_JOB = {
    None: {J.JOB_SCHEDULED},
    J.JOB_SCHEDULED: {J.JOB_RUNNING, J.JOB_CANCELLED, J.JOB_SKIPPED, J.JOB_FAILED},
    J.JOB_RUNNING: {J.JOB_COMPLETED, J.JOB_FAILED, J.JOB_CANCELLED},
    J.JOB_COMPLETED: set(),
    J.JOB_FAILED: set(),
    J.JOB_CANCELLED: set(),
    J.JOB_SKIPPED: set(),
}
LEGAL_PARTITION = {
    None: {P.PARTITION_REQUESTED, P.PARTITION_SCHEDULED},
    P.PARTITION_REQUESTED: {P.PARTITION_SCHEDULED, P.PARTITION_DELEGATED, P.PARTITION_FAILED},
    P.PARTITION_SCHEDULED: {P.PARTITION_BUILDING, P.PARTITION_DELEGATED, P.PARTITION_FAILED},
    P.PARTITION_BUILDING: {P.PARTITION_AVAILABLE, P.PARTITION_FAILED},
    P.PARTITION_DELEGATED: {P.PARTITION_AVAILABLE, P.PARTITION_FAILED},
    P.PARTITION_AVAILABLE: set(),
    P.PARTITION_FAILED: set(),
}

# A legal way to reach each state.
BUILD_PATH = {
    None: (),
    B.BUILD_REQUEST_RECEIVED: (B.BUILD_REQUEST_RECEIVED,),
    B.BUILD_REQUEST_PLANNING: (B.BUILD_REQUEST_RECEIVED, B.BUILD_REQUEST_PLANNING),
    B.BUILD_REQUEST_ANALYSIS_COMPLETED: (
        B.BUILD_REQUEST_RECEIVED, B.BUILD_REQUEST_PLANNING, B.BUILD_REQUEST_ANALYSIS_COMPLETED,
    ),
    B.BUILD_REQUEST_EXECUTING: (
        B.BUILD_REQUEST_RECEIVED, B.BUILD_REQUEST_PLANNING, B.BUILD_REQUEST_ANALYSIS_COMPLETED,
        B.BUILD_REQUEST_EXECUTING,
    ),
    B.BUILD_REQUEST_COMPLETED: (
        B.BUILD_REQUEST_RECEIVED, B.BUILD_REQUEST_PLANNING, B.BUILD_REQUEST_ANALYSIS_COMPLETED,
        B.BUILD_REQUEST_EXECUTING, B.BUILD_REQUEST_COMPLETED,
    ),
    B.BUILD_REQUEST_FAILED: (
        B.BUILD_REQUEST_RECEIVED, B.BUILD_REQUEST_PLANNING, B.BUILD_REQUEST_FAILED,
    ),
    B.BUILD_REQUEST_CANCELLED: (B.BUILD_REQUEST_RECEIVED, B.BUILD_REQUEST_CANCELLED),
}
JOB_PATH = {
    None: (),
    J.JOB_SCHEDULED: (J.JOB_SCHEDULED,),
    J.JOB_RUNNING: (J.JOB_SCHEDULED, J.JOB_RUNNING),
    J.JOB_COMPLETED: (J.JOB_SCHEDULED, J.JOB_RUNNING, J.JOB_COMPLETED),
    J.JOB_FAILED: (J.JOB_SCHEDULED, J.JOB_RUNNING, J.JOB_FAILED),
    J.JOB_CANCELLED: (J.JOB_SCHEDULED, J.JOB_CANCELLED),
    J.JOB_SKIPPED: (J.JOB_SCHEDULED, J.JOB_SKIPPED),
}
PARTITION_PATH = {
    None: (),
    P.PARTITION_REQUESTED: (P.PARTITION_REQUESTED,),
    P.PARTITION_SCHEDULED: (P.PARTITION_REQUESTED, P.PARTITION_SCHEDULED),
    P.PARTITION_BUILDING: (P.PARTITION_REQUESTED, P.PARTITION_SCHEDULED, P.PARTITION_BUILDING),
    P.PARTITION_AVAILABLE: (
        P.PARTITION_REQUESTED, P.PARTITION_SCHEDULED, P.PARTITION_BUILDING,
        P.PARTITION_AVAILABLE,
    ),
    P.PARTITION_FAILED: (P.PARTITION_REQUESTED, P.PARTITION_FAILED),
    P.PARTITION_DELEGATED: (P.PARTITION_REQUESTED, P.PARTITION_DELEGATED),
}


@pytest.mark.parametrize(
    ("legal", "kind"),
    [(LEGAL_BUILD, BuildStatus), (LEGAL_JOB, JobStatus), (LEGAL_PARTITION, PartitionStatus)],
)
def test_table_allows_exactly_the_listed_next_states(legal: dict, kind: type) -> None:
    for current, new in product([None, *kind], kind):
        if new in legal[current]:
            check_transition(current, new, "subject")
        else:
            with pytest.raises(IllegalTransition, match=f"subject: {new.value} may not follow"):
                check_transition(current, new, "subject")


def test_illegal_transition_is_a_databuild_error() -> None:
    assert issubclass(IllegalTransition, DataBuildError)


async def _last_idx(log: EventLog) -> int:
    since = 0
    while (page := await log.events(since=since, limit=1000))["events"]:
        since = page["next_since"]
    return since


async def _refused(log: EventLog, event: Event) -> None:
    """Append ``event``, expect IllegalTransition, and check that nothing was written."""
    last = await _last_idx(log)
    with pytest.raises(IllegalTransition):
        await log.append(event)
    assert (await log.events(since=last))["events"] == []


@pytest_twisted.ensureDeferred
async def test_build_request_transitions(event_log: EventLog, recorder: Recorder) -> None:
    for current, new in product(BUILD_PATH, BuildStatus):
        build_id = new_id()
        for status in BUILD_PATH[current]:
            await event_log.append(Event(build_id, BuildRequestEvent(status, ("out/1",))))
        event = Event(build_id, BuildRequestEvent(new, ("out/1",)))
        if new in LEGAL_BUILD[current]:
            stored = await event_log.append(event)
            assert stored.idx is not None
            assert (await event_log.get_build(build_id))["status"] == new.value
        else:
            await _refused(event_log, event)
            build = await event_log.get_build(build_id)
            assert (build and build["status"]) == (current and current.value)


@pytest_twisted.ensureDeferred
async def test_job_run_transitions(event_log: EventLog, recorder: Recorder) -> None:
    build_id = await recorder.build()
    for current, new in product(JOB_PATH, JobStatus):
        run_id = await recorder.job(build_id, "job", ("out/1",), JOB_PATH[current])
        event = Event(build_id, JobEvent(run_id, "job", new, ("out/1",)))
        if new in LEGAL_JOB[current]:
            await event_log.append(event)
            assert (await event_log.get_task(run_id))["status"] == new.value
        else:
            await _refused(event_log, event)
            task = await event_log.get_task(run_id)
            assert (task and task["status"]) == (current and current.value)


@pytest_twisted.ensureDeferred
async def test_partition_transitions_are_per_build(
    event_log: EventLog, recorder: Recorder
) -> None:
    for current, new in product(PARTITION_PATH, PartitionStatus):
        build_id = await recorder.build()
        ref = f"p/{new_id()}"
        await recorder.partition(build_id, ref, PARTITION_PATH[current])
        event = Event(build_id, PartitionEvent(ref, new))
        if new in LEGAL_PARTITION[current]:
            await event_log.append(event)
            assert (await event_log.partition_statuses([ref]))[ref] is new
        else:
            await _refused(event_log, event)
            build = await event_log.get_build(build_id)
            expected = [{"partition_ref": ref, "status": current.value}] if current else []
            assert build["partitions"] == expected
        # Whatever happened in that build, the ref starts afresh in another build.
        await recorder.partition(await recorder.build(), ref, (P.PARTITION_REQUESTED,))


@pytest_twisted.ensureDeferred
async def test_events_of_an_unknown_build_are_refused(event_log: EventLog) -> None:
    for payload in (
        PartitionEvent("out/1", P.PARTITION_REQUESTED),
        JobEvent("run", "job", J.JOB_SCHEDULED, ("out/1",)),
    ):
        with pytest.raises(IllegalTransition, match="is unknown"):
            await event_log.append(Event("nobody", payload))
    assert await _last_idx(event_log) == 0


@pytest_twisted.ensureDeferred
async def test_job_run_stays_in_its_build(event_log: EventLog, recorder: Recorder) -> None:
    first, second = await recorder.build(), await recorder.build()
    run_id = await recorder.job(first, "job", ("out/1",), (J.JOB_SCHEDULED,))
    with pytest.raises(IllegalTransition, match=f"belongs to build request {first}"):
        await event_log.append(Event(second, JobEvent(run_id, "job", J.JOB_RUNNING)))
    assert (await event_log.get_task(run_id))["status"] == "JOB_SCHEDULED"
