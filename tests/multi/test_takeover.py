"""Services starting beside live ones, dying, and coming back (SPEC §5.3, §5.8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.multi.conftest import HEARTBEAT_S, LEASE_S, Cluster
from tests.polling import poll_until

from databuild.proc.info import alive

# Take-over is due within lease + heartbeat of the kill; the deadline leaves room for a
# loaded machine, and the benchmark measures the real figure.
TAKE_OVER_DEADLINE_S = 10 * (LEASE_S + HEARTBEAT_S)


@pytest.mark.parametrize("shared_directory", [False, True])
def test_a_service_starting_beside_a_live_one_fails_nothing_and_signals_nothing(
    cluster: Cluster, shared_directory: bool
) -> None:
    a = cluster.start("a")
    build_id = a.submit("slow/x")
    pid = cluster.started_pid("x")

    b = cluster.start("b", workspace=a.workspace if shared_directory else None)

    assert b.finished(b.submit("leaf/1"))["status"] == "BUILD_REQUEST_COMPLETED"
    assert alive(pid)
    assert a.build(build_id)["status"] == "BUILD_REQUEST_EXECUTING"
    cluster.release("x")
    assert a.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED"
    assert [e["phase"] for e in cluster.execs() if e["ref"] == "slow/x"] == ["start", "end"]
    assert "terminating orphaned" not in b.log_text()


def test_a_killed_services_builds_are_taken_over_and_its_runs_run_again(
    cluster: Cluster,
) -> None:
    a = cluster.start("a")
    b = cluster.start("b")
    a_id = a.service_id
    owned = a.submit("slow/x")
    orphan = cluster.started_pid("x")
    waiting = b.submit("after/x")
    poll_until(lambda: "waits for job runs" in b.log_text(), "b to wait for a's run", 60)

    a.kill()

    taken = b.finished(owned, TAKE_OVER_DEADLINE_S)
    assert taken["status"] == "BUILD_REQUEST_FAILED"
    assert a_id in taken["message"]
    assert {t["status"] for t in taken["tasks"]} == {"JOB_FAILED"}
    # The dead service's job died with it (a re-run never overlaps it) ...
    poll_until(lambda: not alive(orphan), "a's job to die with a", 30)
    # ... and the build that waited for its run runs the job itself.
    poll_until(lambda: cluster.starts()["slow/x"] == 2, "b to run slow/x again", 60)
    cluster.release("x")
    assert b.finished(waiting)["status"] == "BUILD_REQUEST_COMPLETED"
    lease = {s["service_id"]: s["lease"] for s in b.services()}
    assert lease[a_id] == "dead"

    # A restarted a fails nothing of b's live builds.
    live = b.submit("slow/y")
    cluster.started_pid("y")
    restarted = cluster.start("a")
    assert restarted.finished(restarted.submit("leaf/3"))["status"] == (
        "BUILD_REQUEST_COMPLETED"
    )
    assert b.build(live)["status"] == "BUILD_REQUEST_EXECUTING"
    cluster.release("y")
    assert b.finished(live)["status"] == "BUILD_REQUEST_COMPLETED"


def test_a_second_service_on_one_sqlite_log_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    cluster.event_log = str(tmp_path / "one.sqlite")
    cluster.start("a")
    with pytest.raises(AssertionError, match="in use by another service"):
        cluster.start("b")


def test_services_lists_every_service_with_its_lease(cluster: Cluster) -> None:
    a = cluster.start("a")
    b = cluster.start("b")
    a_id, b_id = a.service_id, b.service_id
    services = {s["service_id"]: s for s in a.services()}
    assert {services[a_id]["lease"], services[b_id]["lease"]} == {"live"}
    assert services[b_id]["pid"] == b.process.pid
    assert {"host", "version", "started_at", "renewed_at", "expires_at"} <= set(services[b_id])
    b.stop()
    assert {s["service_id"]: s["lease"] for s in a.services()}[b_id] == "stopped"
