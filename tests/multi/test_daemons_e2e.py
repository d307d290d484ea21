"""Daemonized services (``twistd databuild`` without ``-n``) on one log register the process
they run as, not the one twistd was before it forked, so they never take each other over."""

from __future__ import annotations

import json

from tests.multi.conftest import Cluster

from databuild.proc.info import start_ticks


def test_two_daemons_on_one_log_register_their_own_pids_and_both_build(
    cluster: Cluster,
) -> None:
    a = cluster.start("a", daemon=True)
    # b sweeps this host's services at its start: one registered under the launching
    # twistd's pid, gone by now, would be declared dead and taken over.
    b = cluster.start("b", daemon=True)
    for team in (a, b):
        assert team.pid != team.process.pid  # twistd forked: the daemon is another process
        server = json.loads((team.workspace / ".databuild" / "server.json").read_text())
        assert server["pid"] == team.pid

    builds = [(a, a.submit("leaf/1", "mid/1")), (b, b.submit("leaf/3", "mid/3"))]
    for team, build_id in builds:
        assert team.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED", team.log_text()

    services = {s["pid"]: s for s in b.services()}
    assert set(services) == {a.pid, b.pid}
    for team in (a, b):
        assert services[team.pid]["lease"] == "live"
        assert services[team.pid]["process_start"] == start_ticks(team.pid)
    assert "took over" not in a.log_text() + b.log_text()
