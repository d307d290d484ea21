"""Overlapping builds sent to several services at once run every job once (SPEC §5.8)."""

from __future__ import annotations

import pytest
from tests.multi.conftest import Cluster


@pytest.mark.parametrize("services", [2, 3])
def test_overlapping_builds_on_several_services_run_each_job_once(
    cluster: Cluster, services: int
) -> None:
    cluster.env["TEAM_SLEEP"] = "0.05"
    teams = [cluster.start(f"s{i}") for i in range(services)]
    # Every service gets overlapping requests: each top shares mids and leaves with its
    # neighbours, and every service asks for most of the same tops.
    builds = [
        (team, team.submit(*(f"top/{k}" for k in range(start, start + 6))))
        for start in range(3)
        for team in teams
    ]

    finished = [team.finished(build_id) for team, build_id in builds]

    assert [b["status"] for b in finished] == ["BUILD_REQUEST_COMPLETED"] * len(builds)
    starts = cluster.starts()
    assert starts, "no job ran"
    assert {ref: n for ref, n in starts.items() if n > 1} == {}
    expected = {f"{kind}/{k}" for kind, top in (("top", 8), ("mid", 9), ("leaf", 10))
                for k in range(top)}
    assert set(starts) == expected
