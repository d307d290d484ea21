"""A service cut off from the database past its lease fences itself (SPEC §5.8)."""

from __future__ import annotations

import pytest
from tests.multi.conftest import HEARTBEAT_S, LEASE_S, Cluster
from tests.multi.proxy import Proxy
from tests.polling import poll_until

from databuild.proc.info import alive

DEADLINE_S = 10 * (LEASE_S + HEARTBEAT_S)


@pytest.mark.parametrize("how", ["freeze", "cut"])
def test_a_service_cut_off_past_its_lease_fences_itself(
    cluster: Cluster, proxy: Proxy, how: str
) -> None:
    b = cluster.start("b")
    direct = cluster.event_log
    cluster.event_log = proxy.uri(direct)
    a = cluster.start("a")
    cluster.event_log = direct
    a_id = a.service_id
    build_id = a.submit("slow/x")
    job = cluster.started_pid("x")

    getattr(proxy, how)()

    poll_until(lambda: a.process.poll() is not None, "a to stop", DEADLINE_S)
    assert "lost its lease" in a.log_text()
    assert not alive(job)
    taken = b.finished(build_id, DEADLINE_S)
    # Had a written anything after losing its lease, its build would read CANCELLED.
    assert taken["status"] == "BUILD_REQUEST_FAILED"
    assert a_id in taken["message"]
    assert [e["phase"] for e in cluster.execs() if e["ref"] == "slow/x"] == ["start"]
    assert {s["service_id"]: s["lease"] for s in b.services()}[a_id] == "dead"
