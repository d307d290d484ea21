"""A service frozen past its lease (SIGSTOP) while its job runs: the service of the same host
that runs the job again starts its exec only once the frozen one's job is gone (SPEC §5.8)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
from tests.multi.conftest import HEARTBEAT_S, LEASE_S, Cluster, Team
from tests.polling import poll_until

from databuild.proc.info import alive

TAKE_OVER_DEADLINE_S = 10 * (LEASE_S + HEARTBEAT_S)


@pytest.fixture
def frozen() -> Iterator[list[Team]]:
    """Services the test stopped with SIGSTOP; resumed at the end whatever happened."""
    teams: list[Team] = []
    yield teams
    for team in teams:
        if team.process.poll() is None:
            team.process.send_signal(signal.SIGCONT)


def overlapping(execs: list[dict[str, Any]], ref: str) -> list[str]:
    """The job runs of ``ref`` whose exec started while another one's had not ended."""
    running: set[str] = set()
    overlaps = []
    for line in execs:
        if line["ref"] != ref:
            continue
        if line["phase"] == "start":
            if running:
                overlaps.append(line["job_run_id"])
            running.add(line["job_run_id"])
        else:
            running.discard(line["job_run_id"])
    return overlaps


def test_a_take_overs_rerun_waits_for_the_frozen_services_job(
    cluster: Cluster, frozen: list[Team]
) -> None:
    cluster.env["TEAM_MARK_TERM"] = "1"  # a terminated job writes its end line too
    a = cluster.start("a")
    b = cluster.start("b")
    a.submit("slow/x")
    a_job = cluster.started_pid("x")
    waiting = b.submit("after/x")
    poll_until(lambda: "waits for job runs" in b.log_text(), "b to wait for a's run", 60)

    a.process.send_signal(signal.SIGSTOP)
    frozen.append(a)

    # b runs slow/x itself once a's lease has expired; a, frozen, cannot end its job.
    poll_until(lambda: cluster.starts()["slow/x"] == 2, "b to run slow/x again",
               TAKE_OVER_DEADLINE_S)
    a.process.send_signal(signal.SIGCONT)
    poll_until(lambda: a.process.poll() is not None, "a to notice its lost lease and stop", 60)
    cluster.release("x")
    assert b.finished(waiting)["status"] == "BUILD_REQUEST_COMPLETED"
    execs = cluster.execs()
    assert overlapping(execs, "slow/x") == [], execs
    assert [e["phase"] for e in execs if e["ref"] == "slow/x"] == ["start", "end"] * 2
    ends = [e for e in execs if e["ref"] == "slow/x" and e["phase"] == "end"]
    assert [e.get("terminated", False) for e in ends] == [True, False]
    assert not alive(a_job)
