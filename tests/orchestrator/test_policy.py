"""The status policy as pure logic: every happening's statuses are legal and read like SPEC."""

from __future__ import annotations

import pytest

from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.bel.transitions import (
    BUILD_TRANSITIONS,
    JOB_TRANSITIONS,
    PARTITION_TRANSITIONS,
)
from databuild.orchestrator.policy import (
    POLICY,
    Happening,
    build_end,
    delegation_settled,
    downstream_of_failure,
    progress,
    run_ended,
)
from databuild.proc.process import ProcessResult

B, J, P, H = BuildStatus, JobStatus, PartitionStatus, Happening

# Where the run and its outputs stand when each happening comes.
BEFORE = {
    H.BUILD_RECEIVED: (None, None),
    H.PLANNING_BEGAN: (None, None),
    H.GRAPH_ANALYZED: (None, None),
    H.EXECUTION_BEGAN: (None, None),
    H.RUN_SCHEDULED: (None, P.PARTITION_REQUESTED),
    H.RUN_STARTED: (J.JOB_SCHEDULED, P.PARTITION_SCHEDULED),
    H.RUN_SUCCEEDED: (J.JOB_RUNNING, P.PARTITION_BUILDING),
    H.RUN_FAILED: (J.JOB_RUNNING, P.PARTITION_BUILDING),
    H.RUN_TIMED_OUT: (J.JOB_RUNNING, P.PARTITION_BUILDING),
    H.RUN_CANCELLED: (J.JOB_RUNNING, P.PARTITION_BUILDING),
    H.ALREADY_AVAILABLE: (J.JOB_SCHEDULED, P.PARTITION_SCHEDULED),
    H.AVAILABILITY_LOST: (J.JOB_SCHEDULED, P.PARTITION_REQUESTED),
    H.DELEGATED: (J.JOB_SCHEDULED, P.PARTITION_SCHEDULED),
    H.DELEGATION_SUCCEEDED: (None, P.PARTITION_DELEGATED),
    H.DELEGATION_FAILED: (None, P.PARTITION_DELEGATED),
    H.UPSTREAM_FAILED: (J.JOB_SCHEDULED, P.PARTITION_SCHEDULED),
    H.BUILD_CANCELLED: (J.JOB_RUNNING, P.PARTITION_BUILDING),
    H.ANALYSIS_FAILED: (None, P.PARTITION_REQUESTED),
    H.INTERNAL_ERROR: (J.JOB_RUNNING, P.PARTITION_BUILDING),
    H.STORE_OUTAGE: (J.JOB_SCHEDULED, P.PARTITION_SCHEDULED),
    H.CRASH_RECOVERY: (J.JOB_RUNNING, P.PARTITION_BUILDING),
}


# Where a build that goes on stands when each happening that moves it on comes.
BUILD_BEFORE = {
    H.BUILD_RECEIVED: None,
    H.PLANNING_BEGAN: B.BUILD_REQUEST_RECEIVED,
    H.GRAPH_ANALYZED: B.BUILD_REQUEST_PLANNING,
    H.EXECUTION_BEGAN: B.BUILD_REQUEST_ANALYSIS_COMPLETED,
}


def test_every_happening_has_a_rule() -> None:
    assert set(POLICY) == set(Happening) == set(BEFORE)


@pytest.mark.parametrize("happening", list(Happening))
def test_each_rule_is_a_legal_next_status(happening: Happening) -> None:
    run_before, partition_before = BEFORE[happening]
    rule = POLICY[happening]
    if rule.run is not None:
        assert rule.run in JOB_TRANSITIONS[run_before]
    if rule.via is not None:
        assert rule.via in PARTITION_TRANSITIONS[partition_before]
        partition_before = rule.via
    if rule.outputs is not None:
        assert rule.outputs in PARTITION_TRANSITIONS[partition_before]
    if rule.progress is not None:
        assert not rule.progress.final
        assert rule.progress in BUILD_TRANSITIONS[BUILD_BEFORE[happening]]
    else:
        assert happening not in BUILD_BEFORE
    if rule.build is not None:
        assert rule.build.final
        assert rule.build in BUILD_TRANSITIONS[B.BUILD_REQUEST_EXECUTING]


def test_a_build_goes_through_its_steps_in_order() -> None:
    steps = [H.BUILD_RECEIVED, H.PLANNING_BEGAN, H.GRAPH_ANALYZED, H.EXECUTION_BEGAN]
    assert [progress(h) for h in steps] == [
        B.BUILD_REQUEST_RECEIVED,
        B.BUILD_REQUEST_PLANNING,
        B.BUILD_REQUEST_ANALYSIS_COMPLETED,
        B.BUILD_REQUEST_EXECUTING,
    ]


def test_a_run_that_failed_or_was_cancelled_fails_its_outputs() -> None:
    for rule in POLICY.values():
        if rule.run in (J.JOB_FAILED, J.JOB_CANCELLED):
            assert rule.outputs is P.PARTITION_FAILED
        if rule.run is J.JOB_COMPLETED:
            assert rule.outputs is P.PARTITION_AVAILABLE


@pytest.mark.parametrize(
    ("result", "happening"),
    [
        (ProcessResult(0, None), H.RUN_SUCCEEDED),
        (ProcessResult(3, None), H.RUN_FAILED),
        (ProcessResult(None, 9), H.RUN_FAILED),
        (ProcessResult(None, 15, timed_out=True), H.RUN_TIMED_OUT),
        (ProcessResult(None, 15, cancelled=True), H.RUN_CANCELLED),
        (ProcessResult(0, None, cancelled=True), H.RUN_CANCELLED),
    ],
)
def test_how_a_run_ended(result: ProcessResult, happening: Happening) -> None:
    assert run_ended(result) is happening


def test_a_delegated_ref_follows_its_producer() -> None:
    assert delegation_settled(P.PARTITION_AVAILABLE) is H.DELEGATION_SUCCEEDED
    assert delegation_settled(P.PARTITION_FAILED) is H.DELEGATION_FAILED


def test_pending_runs_below_a_failure_share_the_builds_end_if_it_is_ending() -> None:
    assert downstream_of_failure(None) is H.UPSTREAM_FAILED
    assert downstream_of_failure(H.BUILD_CANCELLED) is H.BUILD_CANCELLED
    assert POLICY[downstream_of_failure(H.BUILD_CANCELLED)].run is J.JOB_CANCELLED
    assert downstream_of_failure(H.STORE_OUTAGE) is H.STORE_OUTAGE
    assert downstream_of_failure(H.ANALYSIS_FAILED) is H.UPSTREAM_FAILED  # it has no runs


def test_a_build_completes_only_if_every_requested_ref_is_available_and_nothing_ended_it() -> None:
    ok = {"a": P.PARTITION_AVAILABLE, "b": P.PARTITION_AVAILABLE}
    assert build_end(None, ok) is B.BUILD_REQUEST_COMPLETED
    assert build_end(None, {**ok, "b": P.PARTITION_FAILED}) is B.BUILD_REQUEST_FAILED
    assert build_end(None, {**ok, "b": None}) is B.BUILD_REQUEST_FAILED
    assert build_end(H.BUILD_CANCELLED, ok) is B.BUILD_REQUEST_CANCELLED
    for ending in (H.ANALYSIS_FAILED, H.INTERNAL_ERROR, H.STORE_OUTAGE, H.CRASH_RECOVERY):
        assert build_end(ending, ok) is B.BUILD_REQUEST_FAILED
